"""Uploads that expand or nest: refused before they are read, in one line, and the server stops at once on SIGTERM.

The archives are built here with zipfile, streamed, so that none is ever held unpacked; the bounds
are those of bachsformer/musicxml.py. The figures for the full-size zip bomb (600 MB of spaces) and
5 MB of nested elements come from `python -m benchmarks.uploads`.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import tiny
from fastapi.testclient import TestClient

from bachsformer import musicxml
from bachsformer.config import load_config
from bachsformer.server import create_app

REPO = Path(__file__).resolve().parents[1]
TUNE_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?><score-partwise version="3.1"><part-list><score-part id="P1">'
    b'<part-name>Flute</part-name></score-part></part-list><part id="P1"><measure number="1"><attributes>'
    b"<divisions>1</divisions><time><beats>4</beats><beat-type>4</beat-type></time></attributes>"
    + b"".join(
        b"<note><pitch><step>%s</step><octave>5</octave></pitch><duration>1</duration><type>quarter</type></note>" % s
        for s in (b"G", b"A", b"B", b"C")
    )
    + b"</measure></part></score-partwise>"
)


def mxl(chunks, name: str = "score.xml") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name, "w", force_zip64=True) as member:
            for chunk in chunks:
                member.write(chunk)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("uploads")
    path = tiny.write_config(root)
    tiny.write_model_pair(root, melody_quarters=2, decoder_context=True)
    with TestClient(create_app(load_config(path, ["generate.candidates=2", "generate.rules=0"]))) as client:
        yield client


def upload(client, data: bytes, name: str):
    return client.post("/api/harmonize", files={"file": (name, data)})


def test_an_mxl_that_unpacks_past_the_limit_is_refused_before_it_is_read(client):
    bomb = mxl(b" " * 1_000_000 for _ in range(musicxml.MAX_XML_BYTES // 1_000_000 + 5))
    assert len(bomb) < 100_000
    started = time.perf_counter()
    answer = upload(client, bomb, "bomb.mxl")
    assert time.perf_counter() - started < 2
    assert answer.status_code == 413
    assert answer.json()["detail"] == (
        f"bomb.mxl: unpacks to {musicxml.MAX_XML_BYTES + 5_000_000:,} bytes, over the limit of"
        f" {musicxml.MAX_XML_BYTES:,}; send a smaller score"
    )


@pytest.mark.parametrize(
    "data, name, message",
    [
        (mxl([b"<a>" * 100_000 + b"</a>" * 100_000]), "nested.mxl", "elements nested over 64 deep"),
        (b"<?xml version='1.0'?><!DOCTYPE s [<!ENTITY a 'ha'>]><s>&a;</s>", "laughs.xml", "declares XML entities"),
    ],
)
def test_nested_elements_and_entities_are_refused_in_one_line(client, data, name, message):
    started = time.perf_counter()
    answer = upload(client, data, name)
    assert time.perf_counter() - started < 2
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith(f"{name}: not a MusicXML score (") and message in answer.json()["detail"]


def test_a_score_is_read_in_a_child_with_a_time_limit_and_nothing_left_on_disk(client, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    answer = upload(client, mxl([TUNE_XML]), "tune.mxl")
    assert answer.status_code == 200
    monkeypatch.setattr(musicxml, "PARSE_SECONDS", 0.01)
    answer = upload(client, mxl([TUNE_XML]), "slow.mxl")
    assert answer.status_code == 400
    assert answer.json()["detail"] == "slow.mxl: took over 0.01 s to read; not a score this reads"
    assert list(tmp_path.iterdir()) == []


def test_sigterm_stops_the_server_at_once_with_a_request_in_flight(tmp_path):
    path = tiny.write_config(tmp_path)
    tiny.write_model_pair(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "serve.py", "--config", str(path), "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        # a score of 10,000 notes under 1 MB: music21 reads it for half a minute
        reading = threading.Thread(target=upload_to, args=(port, "long.musicxml", long_score(2500)), daemon=True)
        reading.start()
        time.sleep(1.5)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert time.monotonic() - started < 5
    finally:
        server.kill()


def long_score(measures: int) -> bytes:
    """A score of `measures` bars of four quarter notes."""
    note = b"<note><pitch><step>G</step><octave>5</octave></pitch><duration>1</duration></note>"
    bars = b"".join(b'<measure number="%d">' % (m + 1) + note * 4 + b"</measure>" for m in range(measures))
    return TUNE_XML.replace(TUNE_XML[TUNE_XML.index(b"<measure") : TUNE_XML.index(b"</part>")], bars)


def upload_to(port: int, name: str, data: bytes) -> None:
    body = b'--x\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n\r\n%s\r\n--x--\r\n' % (
        name.encode(),
        data,
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/tune", body, {"Content-Type": "multipart/form-data; boundary=x"}
    )
    with contextlib.suppress(OSError):
        urllib.request.urlopen(request, timeout=120).read()
