// The API listed from /openapi.json, which FastAPI writes from the server's code: each call, what it
// takes and what it answers. Written here, not by Swagger UI, whose scripts come from a CDN.
"use strict";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// A schema's fields, following one $ref into the components: [[name, type, required, description]].
function fields(schema, spec) {
  if (!schema) return [];
  if (schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()];
  const required = new Set(schema.required || []);
  return Object.entries(schema.properties || {}).map(([name, property]) => {
    const type = property.type || (property.anyOf || []).map((option) => option.type || "object").join(" or ")
      || (property.$ref ? property.$ref.split("/").pop() : "");
    return [name, type, required.has(name), property.description || ""];
  });
}

function table(rows) {
  const node = element("table", undefined, "api-fields");
  for (const [name, type, required, description] of rows) {
    const row = node.insertRow();
    row.insertCell().append(element("code", name));
    row.insertCell().textContent = type + (required ? "" : ", optional");
    row.insertCell().textContent = description;
  }
  return node;
}

function call(method, path, operation, spec) {
  const section = element("section", undefined, "panel");
  section.append(element("h2", `${method.toUpperCase()} ${path}`));
  if (operation.description || operation.summary) {
    section.append(element("p", operation.description || operation.summary, "hint"));
  }
  const parameters = (operation.parameters || []).map((p) => [p.name, p.schema?.type || "", p.required, p.in]);
  const body = Object.entries(operation.requestBody?.content || {});
  const inputs = parameters.concat(...body.map(([, content]) => fields(content.schema, spec)));
  if (inputs.length) section.append(element("h3", body.length ? `takes (${body[0][0]})` : "takes"), table(inputs));
  const answers = Object.entries(operation.responses || {}).map(([status, answer]) =>
    `${status}: ${Object.keys(answer.content || {}).join(", ") || answer.description}`);
  section.append(element("p", `answers ${answers.join("; ")}`, "hint"));
  return section;
}

fetch("/openapi.json")
  .then((response) => response.json())
  .then((spec) => {
    const main = document.getElementById("api");
    main.replaceChildren(element("p", spec.info.description || "", "hint"));
    for (const [path, methods] of Object.entries(spec.paths)) {
      for (const [method, operation] of Object.entries(methods)) main.append(call(method, path, operation, spec));
    }
  })
  .catch((error) => {
    document.getElementById("api").replaceChildren(element("p", `could not read /openapi.json: ${error}`, "hint"));
  });
