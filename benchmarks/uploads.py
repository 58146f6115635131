"""Hostile uploads against a running server: status, time and memory of each, and whether the page still answers.

    python -m benchmarks.uploads [--config config.yaml] [--set section.key=value ...]

starts `python serve.py` on a free port, then posts each upload to /api/harmonize: an .mxl zip bomb
(a score.xml of 600 MB of spaces, some 600 kB packed), 5 MB of nested elements packed as .mxl and
sent as plain XML, entity declarations (the "billion laughs"), a garbled .mxl, a score of 10,000
notes that music21 reads for longer than its child may take, and a tune as MusicXML for comparison.
While each is answered, `GET /` is asked every 0.2 s. It prints a markdown table: the status, the
seconds to the answer, the growth of the server's peak resident memory (VmHWM over its resident
memory before), the slowest `GET /` meanwhile, and the answer's first line. Then it sends the
server SIGTERM and prints how long it took to stop. Exit status 1 when an upload is not a 4xx (the
tune: a 200), takes 2 s or more (the long score: the child's time limit), grows the server by 200 MB
or more, or `GET /` takes 2 s or more.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

from bachsformer.musicxml import PARSE_SECONDS

REPO = Path(__file__).resolve().parents[1]
MB = 10**6
MAX_SECONDS = 2.0
MAX_GROWTH = 200 * MB
TUNE_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?><score-partwise version="3.1"><part-list><score-part id="P1">'
    b'<part-name>Tune</part-name></score-part></part-list><part id="P1"><measure number="1"><attributes>'
    b"<divisions>1</divisions><time><beats>4</beats><beat-type>4</beat-type></time><clef><sign>G</sign>"
    b"<line>2</line></clef></attributes>"
    + b"".join(
        b"<note><pitch><step>%s</step><octave>4</octave></pitch><duration>1</duration><type>quarter</type></note>"
        % step
        for step in (b"G", b"A", b"B", b"C")
    )
    + b"</measure></part></score-partwise>"
)


def mxl(xml_chunks, total: int | None = None) -> bytes:
    """An .mxl archive of score.xml written from byte chunks (streamed: the archive never holds it unpacked)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("score.xml", "w", force_zip64=True) as member:
            for chunk in xml_chunks:
                member.write(chunk)
    return buffer.getvalue()


def zip_bomb(megabytes: int = 600) -> bytes:
    """score.xml of `megabytes` MB of spaces, packed: about 1 kB per MB."""
    return mxl(b" " * MB for _ in range(megabytes))


def nested_xml(size: int = 5 * MB) -> bytes:
    """`size` bytes of elements, each inside the one before."""
    depth = size // 7
    return b"<a>" * depth + b"</a>" * depth


def billion_laughs() -> bytes:
    entities = [b'<!ENTITY l0 "ha">'] + [b'<!ENTITY l%d "%s">' % (n, b"&l%d;" % (n - 1) * 10) for n in range(1, 10)]
    return b"<?xml version='1.0'?><!DOCTYPE s [" + b"".join(entities) + b"]><s>&l9;</s>"


def long_score(measures: int) -> bytes:
    """A score of `measures` bars of four quarter notes."""
    note = b"<note><pitch><step>G</step><octave>5</octave></pitch><duration>1</duration></note>"
    bars = b"".join(b'<measure number="%d">' % (m + 1) + note * 4 + b"</measure>" for m in range(measures))
    return TUNE_XML.replace(TUNE_XML[TUNE_XML.index(b"<measure") : TUNE_XML.index(b"</part>")], bars)


def uploads() -> list[tuple[str, str, bytes, int, float]]:
    """(what, file name, bytes, the status wanted (0: any 4xx), the seconds it may take)."""
    return [
        ("zip bomb: 600 MB of spaces as .mxl", "bomb.mxl", zip_bomb(), 0, MAX_SECONDS),
        ("5 MB of nested elements as .mxl", "nested.mxl", mxl([nested_xml()]), 0, MAX_SECONDS),
        ("5 MB of nested elements as XML", "nested.musicxml", nested_xml(), 0, MAX_SECONDS),
        ("entity declarations (billion laughs)", "laughs.musicxml", billion_laughs(), 0, MAX_SECONDS),
        ("a garbled .mxl", "garbled.mxl", b"PK\x03\x04" + bytes(range(256)) * 4, 0, MAX_SECONDS),
        (
            "10,000 notes in 0.9 MB of MusicXML (music21: ~40 s)",
            "long.musicxml",
            long_score(2500),
            0,
            PARSE_SECONDS + 5,
        ),
        ("a tune of 4 quarters as .mxl (for comparison)", "tune.mxl", mxl([TUNE_XML]), 200, 10.0),
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def post(port: int, name: str, data: bytes) -> tuple[int, str]:
    """POST the file to /api/harmonize; (status, the answer's first line). A server that answers before
    the body is sent (the upload limit) is read all the same."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.putrequest("POST", "/api/harmonize")
        connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        try:
            for start in range(0, len(body), 65536):
                connection.send(body[start : start + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered early: the answer is waiting
        answer = connection.getresponse()
        text = answer.read().decode("utf-8", errors="replace")
    finally:
        connection.close()
    if answer.status == 200:
        return 200, f"{len(text)} bytes of MIDI"
    try:
        text = json.loads(text)["detail"]
    except (ValueError, KeyError, TypeError):
        pass
    return answer.status, text.splitlines()[0] if text else ""


def slowest_page_get(base: str, done: threading.Event) -> float:
    """Ask for GET / every 0.2 s until `done`; the longest answer (60 s: no answer)."""
    slowest = 0.0
    while not done.is_set():
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(base + "/", timeout=60) as answer:
                answer.read()
            slowest = max(slowest, time.perf_counter() - started)
        except OSError:
            slowest = 60.0
        done.wait(0.2)
    return slowest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.uploads", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    port = free_port()
    command = [sys.executable, "serve.py", "--port", str(port), "--config", args.config]
    command += [item for pair in args.set for item in ("--set", pair)]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/api/info", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None:
                    print(f"serve.py ended with status {server.returncode}", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        failed = False
        rows = []
        for what, name, data, wanted, allowed in uploads():
            before = memory(server.pid)["VmRSS"]
            done = threading.Event()
            page = {}
            watcher = threading.Thread(
                target=lambda page=page, done=done: page.update(slowest=slowest_page_get(base, done)), daemon=True
            )
            watcher.start()
            started = time.perf_counter()
            status, detail = post(port, name, data)
            seconds = time.perf_counter() - started
            done.set()
            watcher.join()
            growth = memory(server.pid)["VmHWM"] - before
            ok = (status == wanted if wanted else 400 <= status < 500) and page["slowest"] < MAX_SECONDS
            ok = ok and growth < MAX_GROWTH and seconds < allowed
            failed |= not ok
            rows.append(
                f"| {what} | {len(data) / 1000:,.0f} kB | {status} | {seconds:.2f} | {max(growth, 0) / MB:.1f} |"
                f" {page['slowest']:.2f} | {detail[:110]} |"
            )
        stopped = time.perf_counter()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        stop_seconds = time.perf_counter() - stopped
    finally:
        if server.poll() is None:
            server.kill()
    print("| upload | size | status | seconds | server peak growth MB | slowest GET / (s) | answer |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nSIGTERM: the server stopped in {stop_seconds:.2f} s (exit status {server.returncode})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
