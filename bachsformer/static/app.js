// bachsformer's page: a tune editor, the calls to the local API, a Web Audio player, the result's roll and score.
// Times are in steps of the codec's grid, 32 to a quarter note; the editor's cells are sixteenths (8 steps).
"use strict";

const STEPS = 32;
const CELL_STEPS = 8; // a sixteenth
const LOWEST = 21; // A0 ... C8: the 88 keys the models know
const HIGHEST = 108;
let lowestRow = 55; // the editor's lowest row: G3, or lower for an opened tune that goes lower
let highestRow = 84; // its highest: C6, or higher
const ROW = 15; // pixels per row
const COLUMN = 17; // pixels per sixteenth
const GUTTER = 38; // pitch names, left of the grid
const HEADER = 16; // bar numbers, above it
const NAMES = ["C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B"];
const LETTERS = { c: 0, d: 2, e: 4, f: 5, g: 7, a: 9, b: 11 };
const SHOW_PROGRESS_AFTER_MS = 500;
const NDJSON = "application/x-ndjson"; // a job's answer as JSON lines: its queue and progress, then the piece

const $ = (id) => document.getElementById(id);
const tune = {
  notes: [], // {start, end, pitch} in steps, one line: no two overlap
  meter: { time_signatures: [[0, 4, 4]], tempos: [[0, 90]] },
  bars: 4,
  cursor: { step: 0, pitch: 67 },
  file: "", // the name of the file opened, which the downloads are named after
  trackName: "Soprano", // the name the tune's track keeps in the MIDI file (its own, from the file opened)
};
let piece = null; // the last result from the server
let chosenBar = null;

// ---------------------------------------------------------------- meter

function barLength(signature) {
  return (signature[1] * 4) / signature[2]; // quarters
}

// [start, end] in quarters of every bar before `quarters` (as bachsformer.midi.Meter.bars)
function barsOf(meter, quarters) {
  const bars = [];
  const signatures = meter.time_signatures;
  signatures.forEach((signature, n) => {
    const change = n + 1 < signatures.length ? signatures[n + 1][0] : Infinity;
    for (let start = signature[0]; start < Math.min(change, quarters); start += barLength(signature)) {
      bars.push([start, Math.min(start + barLength(signature), change)]);
    }
  });
  return bars;
}

function editorQuarters() {
  // the editor shows `tune.bars` bars of the meter, and every note
  let quarters = 0;
  const last = tune.meter.time_signatures[tune.meter.time_signatures.length - 1];
  for (let n = 0; n < tune.bars; n++) {
    const bars = barsOf(tune.meter, quarters + 64);
    quarters = n < bars.length ? bars[n][1] : quarters + barLength(last);
  }
  const lastNote = Math.max(0, ...tune.notes.map((note) => note.end)) / STEPS;
  while (quarters < lastNote) quarters += barLength(last);
  return quarters;
}

function tempoAt(meter, quarter) {
  let bpm = meter.tempos[0][1];
  for (const [at, value] of meter.tempos) if (at <= quarter) bpm = value;
  return bpm;
}

// seconds from the start to `quarter`, through the meter's tempo changes
function secondsAt(meter, quarter) {
  let seconds = 0;
  const tempos = meter.tempos;
  for (let n = 0; n < tempos.length; n++) {
    const start = tempos[n][0];
    if (start >= quarter) break;
    const end = Math.min(quarter, n + 1 < tempos.length ? tempos[n + 1][0] : Infinity);
    seconds += ((end - start) * 60) / tempos[n][1];
  }
  return seconds;
}

function quarterAt(meter, seconds) {
  let low = 0;
  let high = 1;
  while (secondsAt(meter, high) < seconds && high < 1e6) high *= 2;
  for (let i = 0; i < 40; i++) {
    const middle = (low + high) / 2;
    if (secondsAt(meter, middle) < seconds) low = middle;
    else high = middle;
  }
  return low;
}

// ---------------------------------------------------------------- the tune editor

function noteLength() {
  return Number(document.querySelector('input[name="length"]:checked').value) * CELL_STEPS;
}

function noteAt(step, pitch) {
  return tune.notes.find((note) => note.pitch === pitch && note.start <= step && step < note.end);
}

// add a note, keeping the tune one line: notes under it are cut short or removed
function addNote(start, end, pitch) {
  tune.notes = tune.notes
    .map((note) => (note.start < start && note.end > start ? { ...note, end: start } : note))
    .filter((note) => note.end <= start || note.start >= end);
  const note = { start, end, pitch };
  tune.notes.push(note);
  tune.notes.sort((a, b) => a.start - b.start);
  return note;
}

function lengthen(note, end) {
  const next = tune.notes.find((other) => other !== note && other.start >= note.start && other.start < end);
  note.end = Math.max(note.start + CELL_STEPS, next ? Math.min(end, next.start) : end);
}

function element(name, attributes, parent) {
  const node = document.createElementNS($("grid").namespaceURI, name); // the namespace of SVG
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function drawEditor() {
  const grid = $("grid");
  const pitches = tune.notes.map((note) => note.pitch);
  lowestRow = Math.max(LOWEST, Math.min(55, ...pitches)); // a note inside G3-C6 never moves the rows
  highestRow = Math.min(HIGHEST, Math.max(84, ...pitches));
  const quarters = editorQuarters();
  const columns = Math.round((quarters * STEPS) / CELL_STEPS);
  const width = GUTTER + columns * COLUMN + 1;
  const height = HEADER + (highestRow - lowestRow + 1) * ROW + 1;
  grid.replaceChildren();
  Object.entries({
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    "data-gutter": GUTTER,
    "data-header": HEADER,
    "data-column": COLUMN,
    "data-row": ROW,
    "data-high": highestRow,
    "data-cell-steps": CELL_STEPS,
  }).forEach(([key, value]) => grid.setAttribute(key, value));
  const y = (pitch) => HEADER + (highestRow - pitch) * ROW;
  const x = (step) => GUTTER + (step / CELL_STEPS) * COLUMN;
  element("rect", { class: "gutter", x: 0, y: 0, width: GUTTER, height }, grid);
  for (let pitch = lowestRow; pitch <= highestRow; pitch++) {
    const black = [1, 3, 6, 8, 10].includes(pitch % 12);
    element("rect", { class: black ? "row-black" : "row-white", x: GUTTER, y: y(pitch), width: width - GUTTER, height: ROW }, grid);
    if (pitch % 12 === 0 || pitch % 12 === 7 || pitch === tune.cursor.pitch) {
      const label = element("text", { class: "label", x: 4, y: y(pitch) + ROW - 4 }, grid);
      label.textContent = NAMES[pitch % 12] + (Math.floor(pitch / 12) - 1);
    }
  }
  const bars = barsOf(tune.meter, quarters);
  const barSteps = new Set(bars.map(([start]) => Math.round(start * STEPS)).concat([Math.round(quarters * STEPS)]));
  const beatSteps = new Set();
  for (const [start, end] of bars) {
    const signature = tune.meter.time_signatures.filter(([at]) => at <= start).pop();
    const beat = signature[2] === 8 && signature[1] % 3 === 0 ? 1.5 : 4 / signature[2];
    for (let q = start; q < end; q += beat) beatSteps.add(Math.round(q * STEPS));
  }
  for (let column = 0; column <= columns; column++) {
    const step = column * CELL_STEPS;
    const kind = barSteps.has(step) ? "line-bar" : beatSteps.has(step) ? "line-beat" : "line-step";
    element("line", { class: kind, x1: x(step), x2: x(step), y1: kind === "line-bar" ? 0 : HEADER, y2: height }, grid);
  }
  bars.forEach(([start], n) => {
    const label = element("text", { class: "bar-number", x: x(start * STEPS) + 3, y: HEADER - 4 }, grid);
    label.textContent = n + 1;
  });
  for (const note of tune.notes) {
    element("rect", {
      class: "note",
      x: x(note.start) + 1,
      y: y(note.pitch) + 1,
      width: Math.max(3, x(note.end) - x(note.start) - 2),
      height: ROW - 2,
      "data-pitch": note.pitch,
      "data-start": note.start,
      "data-end": note.end,
    }, grid);
  }
  const cursor = tune.cursor;
  element("rect", { class: "cursor", x: x(cursor.step), y: y(cursor.pitch), width: (noteLength() / CELL_STEPS) * COLUMN, height: ROW }, grid);
  element("line", { class: "playhead", id: "tune-playhead", x1: -10, x2: -10, y1: HEADER, y2: height }, grid);
  $("bars").value = tune.bars;
  $("bars").textContent = tune.bars;
}

function cellAt(event) {
  const box = $("grid").getBoundingClientRect();
  const column = Math.floor((event.clientX - box.left - GUTTER) / COLUMN);
  const pitch = highestRow - Math.floor((event.clientY - box.top - HEADER) / ROW);
  if (column < 0 || pitch < lowestRow || pitch > highestRow) return null;
  return { step: column * CELL_STEPS, pitch };
}

function setUpEditor() {
  const grid = $("grid");
  let drag = null; // {note, created, moved}
  grid.addEventListener("mousedown", (event) => {
    const cell = cellAt(event);
    if (!cell || event.button !== 0) return;
    grid.focus();
    tune.cursor = { ...cell };
    const existing = noteAt(cell.step, cell.pitch);
    const column = cell.step / CELL_STEPS;
    if (existing) drag = { note: existing, created: false, moved: false, column };
    else drag = { note: addNote(cell.step, cell.step + noteLength(), cell.pitch), created: true, moved: false, column };
    drawEditor();
    event.preventDefault();
  });
  window.addEventListener("mousemove", (event) => {
    if (!drag) return;
    const box = grid.getBoundingClientRect();
    const column = Math.max(0, Math.floor((event.clientX - box.left - GUTTER) / COLUMN));
    if (column === drag.column && !drag.moved) return; // still on the cell pressed: a click
    drag.moved = true; // from here on the note ends where the mouse is (a cell at least)
    const end = Math.max(column + 1, drag.note.start / CELL_STEPS + 1) * CELL_STEPS;
    if (end !== drag.note.end) {
      lengthen(drag.note, end);
      drawEditor();
    }
  });
  window.addEventListener("mouseup", () => {
    if (drag && !drag.created && !drag.moved) {
      tune.notes = tune.notes.filter((note) => note !== drag.note); // a click on a note removes it
      drawEditor();
    } else if (drag) {
      // a note placed or lengthened: the cursor moves past it, so the next letter typed follows it
      tune.cursor = { step: drag.note.end, pitch: drag.note.pitch };
      drawEditor();
    }
    drag = null;
  });
  grid.addEventListener("keydown", onEditorKey);
}

function onEditorKey(event) {
  const cursor = tune.cursor;
  const key = event.key;
  const last = editorQuarters() * STEPS;
  let handled = true;
  if (key === "ArrowUp") cursor.pitch = Math.min(highestRow, cursor.pitch + (event.shiftKey ? 12 : 1));
  else if (key === "ArrowDown") cursor.pitch = Math.max(lowestRow, cursor.pitch - (event.shiftKey ? 12 : 1));
  else if (key === "ArrowRight") cursor.step = Math.min(last - CELL_STEPS, cursor.step + CELL_STEPS);
  else if (key === "ArrowLeft") cursor.step = Math.max(0, cursor.step - CELL_STEPS);
  else if (key === "Enter" || key === " ") writeAtCursor(cursor.pitch);
  else if (key.length === 1 && key.toLowerCase() in LETTERS && !event.ctrlKey && !event.metaKey) {
    // the nearest pitch of that letter to the cursor's (a sharp with Shift)
    const pitchClass = (LETTERS[key.toLowerCase()] + (event.shiftKey ? 1 : 0)) % 12;
    let pitch = cursor.pitch - ((cursor.pitch - pitchClass + 120) % 12);
    if (cursor.pitch - pitch > 6) pitch += 12;
    writeAtCursor(Math.max(lowestRow, Math.min(highestRow, pitch)));
  } else if (key === "Backspace" || key === "Delete") {
    const here = tune.notes.find((note) => note.start <= cursor.step && cursor.step < note.end);
    const before = [...tune.notes].reverse().find((note) => note.start < cursor.step);
    const gone = key === "Delete" ? here : here || before;
    if (gone) {
      tune.notes = tune.notes.filter((note) => note !== gone);
      if (key === "Backspace") cursor.step = gone.start;
    }
  } else if (["1", "2", "3", "4"].includes(key)) {
    document.querySelectorAll('input[name="length"]')[Number(key) - 1].checked = true;
  } else handled = false;
  if (handled) {
    event.preventDefault();
    drawEditor();
  }
}

function writeAtCursor(pitch) {
  const cursor = tune.cursor;
  const note = addNote(cursor.step, cursor.step + noteLength(), pitch);
  cursor.pitch = pitch;
  cursor.step = note.end;
  const needed = note.end / STEPS + 0.001;
  while (editorQuarters() < needed) tune.bars += 1;
}

function setMetre(text) {
  const [numerator, denominator] = text.split("/").map(Number);
  tune.meter = { ...tune.meter, time_signatures: [[0, numerator, denominator]] };
}

// ---------------------------------------------------------------- talking to the server

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind === "error" ? "" : "note"}`;
  box.hidden = !text;
  clearTimeout(showMessage.timer);
  if (text) showMessage.timer = setTimeout(() => (box.hidden = true), kind === "error" ? 12000 : 8000);
}

// a request to the API. A job (harmonize, regenerate, compose) answers as JSON lines: {"queued": n} while n
// requests are ahead of it, {"done": k, "total": Q} as its quarters are written, then its JSON. The progress
// bar shows once a request is queued or has taken half a second; the server's figures fill it.
async function call(path, body, what) {
  const panel = $("progress");
  const bar = $("progress-bar");
  bar.removeAttribute("value"); // no figures yet: a bar that only says it is busy
  $("progress-text").textContent = what;
  const timer = setTimeout(() => (panel.hidden = false), SHOW_PROGRESS_AFTER_MS);
  const onMessage = (message) => {
    if ("queued" in message) {
      panel.hidden = false;
      bar.removeAttribute("value");
      $("progress-text").textContent = `Waiting for ${message.queued} request${message.queued === 1 ? "" : "s"} ahead…`;
    } else {
      bar.max = message.total;
      bar.value = message.done;
      $("progress-text").textContent = `${what.replace(/…$/, "")}: quarter ${message.done} of ${message.total}`;
    }
  };
  setBusy(true);
  try {
    const options = body instanceof FormData ? { method: "POST", body } : {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: `${NDJSON}, application/json` },
      body: JSON.stringify(body),
    };
    const response = await fetch(path, options);
    if (response.ok && (response.headers.get("Content-Type") || "").startsWith(NDJSON)) {
      return await readLines(response, onMessage);
    }
    const answer = await response.json().catch(() => ({ detail: `the server answered ${response.status}` }));
    if (!response.ok) throw new Error(answer.detail || `the server answered ${response.status}`);
    return answer;
  } finally {
    clearTimeout(timer);
    panel.hidden = true;
    setBusy(false);
  }
}

// the lines of a streamed answer, each message passed to onMessage as it comes: the last line's JSON
async function readLines(response, onMessage) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    const chunk = decoder.decode(value, { stream: !done });
    text += chunk;
    let end = text.indexOf("\n", text.length - chunk.length); // the piece's line is long: only the new part is searched
    while (end >= 0) {
      const message = JSON.parse(text.slice(0, end));
      text = text.slice(end + 1);
      end = text.indexOf("\n");
      if ("detail" in message) throw new Error(message.detail);
      if ("queued" in message || ("done" in message && "total" in message)) onMessage(message);
      else return message;
    }
    if (done) throw new Error("the server's answer ended before the piece came");
  }
}

function setBusy(busy) {
  for (const id of ["harmonize", "compose", "regenerate"]) {
    const button = $(id);
    if (busy) {
      button.dataset.before = button.disabled ? "1" : "";
      button.disabled = true;
    } else button.disabled = button.dataset.before === "1" || (id === "regenerate" && chosenBar === null);
  }
}

function numberOf(id) {
  const value = Number($(id).value);
  return Number.isFinite(value) ? value : undefined;
}

async function harmonizeTune() {
  if (!tune.notes.length) {
    showMessage("Write a tune first: click the grid to place its notes.");
    return;
  }
  stop();
  try {
    const answer = await call("/api/harmonization", {
      notes: tune.notes.map((note) => [note.start, note.end, note.pitch]),
      meter: tune.meter,
      key: $("key").value,
      seed: numberOf("seed"),
      candidates: numberOf("candidates"),
      guidance: numberOf("guidance"),
      tune_name: tune.trackName,
    }, "Harmonizing…");
    chosenBar = null;
    showPiece(answer, tune.file ? `${stemOf(tune.file)}-harmonized` : "harmonization");
    if (answer.warnings.length) showMessage(answer.warnings.join(" "), "note");
  } catch (error) {
    showMessage(error.message);
  }
}

async function composeChorale() {
  stop();
  try {
    const answer = await call("/api/composition", {
      quarters: numberOf("compose-quarters"),
      seed: numberOf("compose-seed"),
      key: $("key").value,
      tempo: numberOf("tempo"),
    }, "Composing…");
    chosenBar = null;
    showPiece(answer, "chorale");
  } catch (error) {
    showMessage(error.message);
  }
}

async function regenerateBar() {
  if (!piece || chosenBar === null) return;
  stop();
  const seed = Math.floor(Math.random() * 2 ** 31);
  try {
    const answer = await call("/api/regeneration", {
      notes: piece.notes,
      quarters: piece.quarters,
      meter: piece.meter,
      bar: chosenBar,
      seed,
      candidates: numberOf("candidates"),
      tune_name: piece.tune_name,
    }, `Rewriting bar ${chosenBar + 1}…`);
    showPiece(answer, piece.fileName, piece.title); // still the harmonization, or the chorale, it was
  } catch (error) {
    showMessage(error.message);
  }
}

async function openFile(file) {
  const form = new FormData();
  form.append("file", file);
  try {
    const answer = await call("/api/tune", form, `Reading ${file.name}…`);
    tune.notes = answer.notes.map(([start, end, pitch]) => ({ start, end, pitch })); // a pickup's rests included
    tune.meter = answer.meter;
    tune.file = file.name;
    tune.trackName = answer.tune_name;
    const first = answer.meter.time_signatures[answer.meter.time_signatures.length - 1];
    const metre = `${first[1]}/${first[2]}`;
    if ([...$("metre").options].some((option) => option.value === metre)) $("metre").value = metre;
    $("tempo").value = Math.round(answer.meter.tempos[0][1]);
    tune.bars = barsOf(tune.meter, answer.quarters).length;
    tune.cursor = { step: 0, pitch: tune.notes.length ? tune.notes[0].pitch : 67 };
    drawEditor();
    const notes = answer.warnings.length ? answer.warnings : [`${answer.name}: ${tune.notes.length} notes.`];
    showMessage(notes.join(" "), "note");
  } catch (error) {
    showMessage(error.message);
  } finally {
    $("upload").value = "";
  }
}

// ---------------------------------------------------------------- the result: roll, score, files

// the name a file name has without its extension
function stemOf(name) {
  return name.replace(/\.[^.]*$/, "") || name;
}

// the result; fileName: what its downloads are called (no extension); title: "Harmonization" or "Chorale"
function showPiece(answer, fileName, title = answer.title) {
  piece = { ...answer, fileName, title };
  $("result-panel").hidden = false;
  const harmonized = answer.notes.some((note) => note[3]); // a tune on top: a harmonization, or a chorale's tune
  $("result-title").textContent = title === "Chorale" ? "The chorale" : "The harmonization";
  document.querySelectorAll(".with-tune").forEach((item) => (item.hidden = !harmonized));
  $("harmony-name").textContent = harmonized ? "the harmony" : "the voices";
  const seconds = secondsAt(answer.meter, answer.quarters);
  const facts = [
    answer.key,
    answer.bars.length === 1 ? "1 bar" : `${answer.bars.length} bars`,
    `${Math.floor(seconds / 60)}:${String(Math.round(seconds % 60)).padStart(2, "0")}`,
    `written in ${answer.seconds.toFixed(1)} s`,
  ];
  if (answer.passage) facts.push(`quarters ${answer.passage[0]}–${answer.passage[1]} rewritten`);
  $("result-facts").textContent = facts.join(" · ");
  const name = fileName;
  const midi = Uint8Array.from(atob(answer.midi), (c) => c.charCodeAt(0));
  setDownload($("download-midi"), new Blob([midi], { type: "audio/midi" }), `${name}.mid`);
  if (answer.musicxml) {
    setDownload($("download-musicxml"), new Blob([answer.musicxml], { type: "application/vnd.recordare.musicxml+xml" }), `${name}.musicxml`);
  } else $("download-musicxml").classList.add("disabled");
  const score = $("score");
  if (answer.svg) {
    score.innerHTML = answer.svg; // drawn by verovio on this computer's server
    score.querySelectorAll("g.measure").forEach((measure, n) => {
      measure.addEventListener("click", () => chooseBar(n));
    });
  } else {
    score.innerHTML = "";
    const note = document.createElement("p");
    note.className = "note-to-self";
    note.textContent = answer.score_note ? `No score: ${answer.score_note}.` : "No score: verovio could not draw this one.";
    score.appendChild(note);
  }
  chooseBar(chosenBar !== null && chosenBar < answer.bars.length ? chosenBar : null);
  showAnalysis();
  $("result-panel").scrollIntoView({ behavior: "smooth", block: "start" });
}

function setDownload(link, blob, name) {
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.classList.remove("disabled");
}

function chooseBar(bar) {
  chosenBar = bar;
  $("regenerate").disabled = bar === null;
  $("regenerate").textContent = bar === null ? "Regenerate a bar" : `Regenerate bar ${bar + 1}`;
  document.querySelectorAll("#score g.measure").forEach((measure, n) => measure.classList.toggle("chosen", n === bar));
  drawRoll();
}

// ---------------------------------------------------------------- the analysis: numerals, cadences, faults

function analysisShown() {
  return Boolean($("show-analysis").checked && piece && piece.analysis);
}

function analysisAsked() {
  return Boolean($("show-analysis").checked && piece);
}

// the numerals under the roll where the chord or key changes, the cadences, the faults in the roll and the score
function showAnalysis() {
  const shown = analysisShown();
  $("analysis").hidden = !analysisAsked();
  $("score").classList.toggle("no-analysis", !shown);
  $("numerals").replaceChildren();
  $("cadences").replaceChildren();
  $("faults").textContent = "";
  document.querySelectorAll("#score g.measure.fault").forEach((measure) => measure.classList.remove("fault"));
  if (shown) {
    const analysis = piece.analysis;
    let before = null;
    analysis.chords.forEach((chord) => {
      if (before && before.key === chord.key && before.figure === chord.figure && before.uncertain === chord.uncertain) return;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "numeral" + (chord.uncertain ? " uncertain" : "");
      button.style.left = `${(chord.offset / piece.quarters) * 100}%`;
      button.style.top = `${($("numerals").children.length % 2) * 18}px`; // every other one lower: long ones fit
      button.dataset.offset = chord.offset;
      if (!before || before.key !== chord.key) {
        const key = document.createElement("span");
        key.className = "key";
        key.textContent = `${chord.key}:`;
        button.appendChild(key);
      }
      button.appendChild(document.createTextNode(chord.figure + (chord.uncertain ? "?" : "")));
      button.title = `${chord.key}: ${chord.figure}${chord.uncertain ? " (uncertain)" : ""}, beat ${chord.offset + 1}: click to hear it`;
      button.addEventListener("click", () => playChord(chord.offset, button));
      $("numerals").appendChild(button);
      before = chord;
    });
    for (const cadence of analysis.cadences) {
      const label = document.createElement("span");
      label.style.left = `${(Math.min(cadence.offset + 1, piece.quarters) / piece.quarters) * 100}%`;
      label.textContent = `${cadence.cadence} cadence`;
      $("cadences").appendChild(label);
    }
    const measures = document.querySelectorAll("#score g.measure");
    const lines = analysis.faults.map((fault) => {
      const bar = piece.bars.findIndex(([start, end]) => start <= fault.offset && fault.offset < end);
      if (bar >= 0 && measures[bar]) measures[bar].classList.add("fault");
      return `${fault.fault} (${fault.voices.join(", ")}) at beat ${fault.offset + 1}`;
    });
    const text = lines.length ? `Faults: ${lines.join("; ")}.` : "No four-part faults.";
    $("faults").textContent = analysis.notes.length ? `${text} ${analysis.notes.join(" ")}` : text;
  } else if (analysisAsked()) {
    $("faults").textContent = "No harmony to analyse: the music is one line.";
  }
  drawRoll();
}

// the notes sounding at a beat, played for a beat at the piece's tempo there
function playChord(offset, button) {
  const step = offset * STEPS;
  const notes = piece.notes
    .filter(([start, end]) => start <= step && step < end)
    .map(([, , pitch, isMelody]) => [0, STEPS, pitch, isMelody]);
  const meter = { time_signatures: [[0, 4, 4]], tempos: [[0, tempoAt(piece.meter, offset)]] };
  play(notes, meter, 1, (quarter) => button.classList.toggle("playing", quarter !== null));
  $("numerals").dataset.played = offset;
}

function rollGeometry() {
  const canvas = $("roll");
  const pitches = piece.notes.map((note) => note[2]);
  const low = Math.min(...pitches) - 2;
  const high = Math.max(...pitches) + 2;
  const width = canvas.clientWidth;
  return { canvas, low, high, width, height: canvas.height, perQuarter: width / piece.quarters };
}

function drawRoll(playQuarter = null) {
  if (!piece || !piece.notes.length) return;
  const g = rollGeometry();
  const ratio = window.devicePixelRatio || 1;
  if (g.canvas.width !== Math.round(g.width * ratio)) {
    g.canvas.width = Math.round(g.width * ratio);
    g.canvas.height = Math.round(260 * ratio);
    g.canvas.style.height = "260px";
  }
  const context = g.canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  const height = 260;
  const row = height / (g.high - g.low + 1);
  const style = getComputedStyle(document.documentElement);
  context.clearRect(0, 0, g.width, height);
  for (let pitch = g.low; pitch <= g.high; pitch++) {
    if ([1, 3, 6, 8, 10].includes(pitch % 12)) {
      context.fillStyle = "#f5f0e6";
      context.fillRect(0, (g.high - pitch) * row, g.width, row);
    }
  }
  piece.bars.forEach(([start, end], n) => {
    if (n === chosenBar) {
      context.fillStyle = "rgba(214, 160, 40, 0.22)";
      context.fillRect(start * g.perQuarter, 0, (end - start) * g.perQuarter, height);
    }
    context.fillStyle = "#8d8170";
    context.fillRect(Math.round(start * g.perQuarter), 0, 1, height);
    context.font = "10px system-ui, sans-serif";
    context.fillText(String(n + 1), Math.max(0, start) * g.perQuarter + 3, 11); // a pickup's bar starts before 0
  });
  for (const melody of [false, true]) {
    context.fillStyle = style.getPropertyValue(melody ? "--tune" : "--harmony").trim();
    for (const [start, end, pitch, isMelody] of piece.notes) {
      if (isMelody !== melody) continue;
      const x = (start / STEPS) * g.perQuarter;
      const w = Math.max(1.5, ((end - start) / STEPS) * g.perQuarter - 1);
      context.fillRect(x, (g.high - pitch) * row + (melody ? 0 : 0.5), w, Math.max(2, row - (melody ? 0 : 1)));
    }
  }
  if (analysisShown()) {
    // each fault ringed on the notes of its voices
    context.strokeStyle = style.getPropertyValue("--tune").trim();
    context.lineWidth = 2;
    for (const fault of piece.analysis.faults) {
      for (const pitch of fault.pitches) {
        context.beginPath();
        context.arc(fault.offset * g.perQuarter + 3, (g.high - pitch + 0.5) * row, Math.max(5, row), 0, 2 * Math.PI);
        context.stroke();
      }
    }
  }
  if (playQuarter !== null) {
    context.fillStyle = "#d08a1f";
    context.fillRect(playQuarter * g.perQuarter - 1, 0, 2, height);
  }
}

// ---------------------------------------------------------------- sound

let audio = null; // the AudioContext, made on the first press of Play
let playing = null; // {sources, started, meter, quarters, onFrame}

function organWave(context) {
  // a soft reed-organ tone: the fundamental and a few quieter partials
  const real = new Float32Array([0, 0, 0, 0, 0, 0, 0]);
  const imag = new Float32Array([0, 1, 0.42, 0.22, 0.12, 0.06, 0.03]);
  return context.createPeriodicWave(real, imag);
}

function play(notes, meter, quarters, onFrame) {
  stop();
  audio = audio || new AudioContext();
  audio.resume();
  const wave = organWave(audio);
  const master = audio.createGain();
  master.gain.value = 0.8;
  const compressor = audio.createDynamicsCompressor();
  master.connect(compressor).connect(audio.destination);
  const balance = Number($("balance").value) / 100; // the tune's share of the loudness
  const tuneNotes = notes.filter((note) => note[3]).length;
  // harmony notes sounding per tune note; with no tune (a chorale) the slider does not apply
  const harmonyVoices = tuneNotes ? Math.max(1, (notes.length - tuneNotes) / tuneNotes) : 4;
  const harmonyShare = tuneNotes ? 1 - balance : 0.5;
  const start = audio.currentTime + 0.08;
  const sources = [];
  for (const [onset, offset, pitch, isMelody] of notes) {
    const begin = start + secondsAt(meter, onset / STEPS);
    const end = start + secondsAt(meter, offset / STEPS);
    const peak = isMelody ? 0.64 * balance : (0.52 * harmonyShare) / Math.sqrt(Math.min(harmonyVoices, 6));
    const oscillator = audio.createOscillator();
    oscillator.setPeriodicWave(wave);
    oscillator.frequency.value = 440 * 2 ** ((pitch - 69) / 12);
    const envelope = audio.createGain();
    const attack = 0.02;
    const release = 0.09;
    envelope.gain.setValueAtTime(0, begin);
    envelope.gain.linearRampToValueAtTime(peak, begin + attack);
    envelope.gain.setTargetAtTime(peak * 0.72, begin + attack, 0.12); // decay to the sustain level
    envelope.gain.setValueAtTime(peak * 0.72, Math.max(begin + attack, end - 0.005));
    envelope.gain.setTargetAtTime(0, Math.max(begin + attack, end - 0.005), release / 3);
    oscillator.connect(envelope).connect(master);
    oscillator.start(begin);
    oscillator.stop(end + release + 0.05);
    sources.push(oscillator);
  }
  const total = secondsAt(meter, quarters);
  playing = { sources, started: start, meter, total, onFrame, master };
  const frame = () => {
    if (!playing) return;
    const elapsed = audio.currentTime - playing.started;
    if (elapsed > playing.total + 0.2) {
      stop();
      return;
    }
    playing.onFrame(quarterAt(playing.meter, Math.max(0, elapsed)));
    playing.frame = requestAnimationFrame(frame);
  };
  frame();
}

function stop() {
  if (!playing) return;
  const now = audio.currentTime;
  playing.master.gain.setTargetAtTime(0, now, 0.02);
  for (const source of playing.sources) {
    try {
      source.stop(now + 0.1);
    } catch (error) {
      // a source that has not started yet is cancelled by stop(); one already stopped throws: nothing to do
    }
  }
  cancelAnimationFrame(playing.frame);
  const onFrame = playing.onFrame;
  playing = null;
  onFrame(null);
  $("play").textContent = "▶ Play";
  $("play").dataset.state = "stopped";
  $("play-tune").textContent = "▶ Tune";
}

function playPiece() {
  if (playing && $("play").dataset.state === "playing") {
    stop();
    return;
  }
  play(piece.notes, piece.meter, piece.quarters, drawRoll);
  $("play").textContent = "■ Stop";
  $("play").dataset.state = "playing";
  $("play").dataset.audio = audio.state;
  audio.onstatechange = () => ($("play").dataset.audio = audio.state);
}

function playTune() {
  if (playing && $("play-tune").textContent.startsWith("■")) {
    stop();
    return;
  }
  if (!tune.notes.length) return;
  const notes = tune.notes.map((note) => [note.start, note.end, note.pitch, true]);
  const quarters = Math.max(...tune.notes.map((note) => note.end)) / STEPS;
  play(notes, tune.meter, quarters, (quarter) => {
    const line = $("tune-playhead");
    const x = quarter === null ? -10 : GUTTER + ((quarter * STEPS) / CELL_STEPS) * COLUMN;
    line.setAttribute("x1", x);
    line.setAttribute("x2", x);
  });
  $("play-tune").textContent = "■ Tune";
}

// ---------------------------------------------------------------- start

function start() {
  setUpEditor();
  $("metre").addEventListener("change", (event) => {
    setMetre(event.target.value);
    drawEditor();
  });
  $("tempo").addEventListener("change", (event) => {
    const bpm = Math.min(240, Math.max(30, Number(event.target.value) || 90));
    event.target.value = bpm;
    tune.meter = { ...tune.meter, tempos: [[0, bpm]] };
  });
  $("bars-more").addEventListener("click", () => {
    tune.bars = Math.min(64, tune.bars + 1);
    drawEditor();
  });
  $("bars-less").addEventListener("click", () => {
    tune.bars = Math.max(1, tune.bars - 1);
    drawEditor();
  });
  document.querySelectorAll('input[name="length"]').forEach((input) => input.addEventListener("change", drawEditor));
  $("clear").addEventListener("click", () => {
    tune.notes = [];
    tune.cursor.step = 0;
    tune.file = "";
    tune.trackName = "Soprano";
    drawEditor();
  });
  $("upload").addEventListener("change", (event) => event.target.files[0] && openFile(event.target.files[0]));
  $("harmonize").addEventListener("click", harmonizeTune);
  $("compose").addEventListener("click", composeChorale);
  $("regenerate").addEventListener("click", regenerateBar);
  $("play").addEventListener("click", playPiece);
  $("play-tune").addEventListener("click", playTune);
  $("show-analysis").addEventListener("change", showAnalysis);
  $("roll").addEventListener("click", (event) => {
    if (!piece) return;
    const g = rollGeometry();
    const quarter = (event.clientX - g.canvas.getBoundingClientRect().left) / g.perQuarter;
    const bar = piece.bars.findIndex(([begin, end]) => begin <= quarter && quarter < end);
    chooseBar(bar < 0 || bar === chosenBar ? null : bar);
  });
  window.addEventListener("resize", () => drawRoll());
  fetch("/api/info")
    .then((response) => response.json())
    .then((info) => {
      $("seed").value = info.defaults.seed;
      $("candidates").value = info.defaults.candidates;
      $("candidates").max = info.max_candidates;
      $("guidance").value = info.defaults.guidance;
      $("guidance").max = info.max_guidance;
      $("compose-quarters").max = info.max_quarters;
    })
    .catch(() => showMessage("The server does not answer: is python serve.py running?"));
  tune.meter = { time_signatures: [[0, 4, 4]], tempos: [[0, Number($("tempo").value)]] };
  drawEditor();
}

start();
