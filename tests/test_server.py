"""The page's API, through FastAPI's test client, on tiny untrained models.

What is tested holds whatever the models write: the tune is the exact top line of every answer, a
regenerated bar leaves the rest as it was, bad input is a 4xx with one line and the server goes on
serving, requests that arrive together get the answers they would get alone (one at a time, in the
order they came, a job that waits saying how many are ahead of it), a job streamed as JSON lines
reports each quarter written and answers what a plain request gets, and the page's files name no
outside host.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
import tiny
from fastapi.testclient import TestClient
from midi_files import make_midi

from bachsformer.config import load_config
from bachsformer.harmonize import GuideError
from bachsformer.keys import Key
from bachsformer.midi import Meter, quarters_to_notes, read_midi_bytes, read_midi_tracks_bytes
from bachsformer.score import musicxml_bytes
from bachsformer.server import MAX_QUARTERS, MAX_UPLOAD_BYTES, NDJSON, STATIC, create_app

# a tune in G major, in beats: (pitch, start, duration)
TUNE = [(67, 0, 1), (71, 1, 1.5), (74, 2.5, 0.5), (72, 3, 1), (71, 4, 1), (69, 5, 1), (67, 6, 2)]
CHORDS = TUNE + [(pitch - 5, start, duration) for pitch, start, duration in TUNE]  # a lower line under it


@pytest.fixture(scope="module")
def app_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    path = tiny.write_config(root)
    tiny.write_model_pair(root, melody_quarters=2, decoder_context=True)
    # rules 0: an untrained model's candidates all break the four-part rules, and the penalty would pick silence;
    # min_note_steps 0: an untrained decoder's voices change key at almost every step, and would all be dropped
    return load_config(path, ["generate.candidates=4", "generate.min_note_steps=0", "generate.rules=0"])


@pytest.fixture(scope="module")
def client(app_config):
    with TestClient(create_app(app_config)) as client:
        yield client


def upload(client, data: bytes, name: str = "tune.mid", **fields):
    return client.post("/api/harmonize", files={"file": (name, data)}, data={k: str(v) for k, v in fields.items()})


def top_line(midi: bytes) -> np.ndarray:
    """The tune of an answer: its first track, the Soprano, checked to have nothing sounding above it."""
    soprano = read_midi_tracks_bytes(midi)[0].quarters
    music = read_midi_bytes(midi).quarters
    tune_key = np.where(soprano.any(axis=1), 87 - np.argmax(soprano[:, ::-1], axis=1), -1)  # [Q, 32]
    music_key = np.where(music.any(axis=1), 87 - np.argmax(music[:, ::-1], axis=1), -1)
    assert (music_key[tune_key >= 0] <= tune_key[tune_key >= 0]).all()
    return soprano


def test_harmonize_answers_a_midi_file_whose_top_line_is_the_tune(client):
    tune = make_midi(TUNE)
    answer = upload(client, tune, seed=3)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "audio/midi"
    assert "tune-harmonized.mid" in answer.headers["content-disposition"]
    assert (top_line(answer.content) == read_midi_bytes(tune).quarters).all()  # the tune, exactly, on top
    assert all(track.quarters.any() for track in read_midi_tracks_bytes(answer.content)[1:])  # voices below it
    assert upload(client, tune, seed=3).content == answer.content  # same seed, same bytes
    assert upload(client, tune, seed=4).content != answer.content


def test_a_musicxml_score_is_harmonized_as_the_same_tune_in_midi(client):
    quarters = read_midi_bytes(make_midi(TUNE)).quarters
    score = musicxml_bytes(quarters, Key(7, "major"), Meter.free(120), quarters)
    from_score = upload(client, score, "tune.musicxml", seed=1)
    assert from_score.status_code == 200
    assert (top_line(from_score.content) == quarters).all()
    assert from_score.content == upload(client, make_midi(TUNE), seed=1).content


def test_a_piece_with_chords_is_harmonized_by_its_top_line_with_a_warning(client):
    answer = upload(client, make_midi(CHORDS), "chords.mid")
    assert answer.status_code == 200
    assert "chords.mid: has chords (up to 2 notes at once)" in answer.headers["x-bachsformer-warning"]
    assert (top_line(answer.content) == read_midi_bytes(make_midi(TUNE)).quarters).all()
    tune = client.post("/api/tune", files={"file": ("chords.mid", make_midi(CHORDS))}).json()
    assert [pitch for _, _, pitch in tune["notes"]] == [pitch for pitch, _, _ in TUNE]
    assert tune["warnings"] and tune["meter"]["time_signatures"] == [[0.0, 4, 4]]


LONG = make_midi([(60 + n % 12, n, 1) for n in range(MAX_QUARTERS + 4)])
BAD_UPLOADS = [
    (b"", {}, 400, "tune.mid: empty file"),
    (b"hello, world", {}, 400, "tune.mid: not a MIDI file"),
    (make_midi([])[:30], {}, 400, "tune.mid: "),
    (make_midi([]), {}, 400, "tune.mid: no notes"),
    (make_midi([(10, 0, 1), (67, 1, 1)]), {}, 400, "outside the 88 keys"),
    (LONG, {}, 400, f"{MAX_QUARTERS + 4} quarters long, over the limit of {MAX_QUARTERS}"),
    (b"MThd" + bytes(MAX_UPLOAD_BYTES), {}, 413, "over the upload limit of 1000 kB"),
    (make_midi(TUNE), {"key": "H"}, 400, "key: 'H' is not a key"),
    (make_midi(TUNE), {"key": "E minor"}, 400, "key E minor: tune.mid is in G major"),
    (make_midi(TUNE), {"seed": -1}, 422, "seed: Input should be greater than or equal to 0"),
    (make_midi(TUNE), {"seed": "seven"}, 422, "seed: "),
    (make_midi(TUNE), {"candidates": 0}, 422, "candidates: "),
    (make_midi(TUNE), {"candidates": 1000}, 422, "candidates: "),
    (make_midi(TUNE), {"guidance": 11}, 422, "guidance: "),
    (b"<?xml version='1.0'?><score-partwise><part", {}, 400, "tune.mid: not a MusicXML score"),
]


@pytest.mark.parametrize("data, fields, status, message", BAD_UPLOADS)
def test_bad_uploads_get_a_4xx_with_one_line_and_the_server_goes_on(client, data, fields, status, message):
    answer = upload(client, data, **fields)
    assert answer.status_code == status
    detail = answer.json()["detail"]
    assert message in detail and "\n" not in detail and "Traceback" not in detail
    assert upload(client, make_midi(TUNE)).status_code == 200


def test_an_upload_without_a_file_or_over_the_limit_in_chunks_is_refused(client):
    assert client.post("/api/harmonize", data={"seed": "1"}).json()["detail"] == "file: Field required"
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.mid"\r\n\r\n'
    chunks = (head if n == 0 else bytes(100_000) for n in range(13))  # no Content-Length: counted as it arrives
    answer = client.post("/api/tune", content=chunks, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert answer.status_code == 413 and "upload limit" in answer.json()["detail"]


def entered(notes=TUNE, **more) -> dict:
    """A tune as the page sends it: notes in steps of 32 to a quarter."""
    steps = [[round(start * 32), round((start + length) * 32), pitch] for pitch, start, length in notes]
    return {"notes": steps, "meter": {"time_signatures": [[0, 3, 4]], "tempos": [[0, 72]]}, **more}


def test_a_tune_entered_on_the_page_comes_back_harmonized_with_its_score(client):
    piece = client.post("/api/harmonization", json=entered(seed=2)).json()
    melody = [note[:3] for note in piece["notes"] if note[3]]
    assert melody == entered()["notes"]
    assert piece["quarters"] == 8 and piece["bars"] == [[0.0, 3.0], [3.0, 6.0], [6.0, 9.0]]
    assert piece["meter"]["time_signatures"] == [[0.0, 3, 4]]
    assert piece["meter"]["tempos"] == [[0.0, pytest.approx(72.0, abs=1e-3)]]  # as the MIDI tempo holds it
    midi = base64.b64decode(piece["midi"])
    assert [n[:3] for n in quarters_to_notes(top_line(midi)).tolist()] == entered()["notes"]
    assert piece["musicxml"].startswith("<?xml") and "<svg" in piece["svg"] and piece["key"] == "G major"
    moved = client.post("/api/harmonization", json=entered(seed=2, key="A")).json()
    assert [note[2] for note in moved["notes"] if note[3]] == [pitch + 2 for pitch, _, _ in TUNE]


def test_a_harmonization_comes_with_its_analysis_in_the_json_and_the_musicxml(client):
    piece = client.post("/api/harmonization", json=entered(seed=2)).json()
    analysis = piece["analysis"]
    assert [chord["offset"] for chord in analysis["chords"]] == [float(beat) for beat in range(8)]
    assert {"key", "figure", "uncertain"} <= set(analysis["chords"][0])
    assert analysis["cadences"] == [] or analysis["cadences"][-1]["offset"] == 7.0
    assert all({"offset", "fault", "voices", "pitches"} == set(fault) for fault in analysis["faults"])
    first = analysis["chords"][0]
    assert f"<words>{first['key']}: {first['figure']}" in piece["musicxml"]  # under the bass


@pytest.mark.parametrize(
    "request_json, status, message",
    [
        (entered([]), 400, "notes: the tune has no notes"),
        (entered([(120, 0, 1)]), 400, "notes: pitch 120 lies outside the 88 keys"),
        (entered([(60, MAX_QUARTERS, 1)]), 400, f"over the limit of {MAX_QUARTERS}"),
        ({**entered(), "meter": {"time_signatures": [[0, 0, 4]], "tempos": [[0, 90]]}}, 400, "time signature 0/4"),
        ({**entered(), "meter": {"time_signatures": [[0, 4, 4]], "tempos": [[0, 0]]}}, 400, "tempo 0 lies outside"),
        ({**entered(), "meter": {"time_signatures": [[2, 4, 4]], "tempos": [[0, 90]]}}, 400, "the first at quarter 0"),
        (entered(seed=2**40), 422, "seed: "),
        (entered(key="Q minor"), 400, "key: 'Q minor' is not a key"),
        ({"notes": "C D E"}, 422, "notes: "),
    ],
)
def test_bad_tunes_from_the_page_get_a_4xx_with_one_line(client, request_json, status, message):
    answer = client.post("/api/harmonization", json=request_json)
    assert answer.status_code == status
    assert message in answer.json()["detail"] and "\n" not in answer.json()["detail"]


def notes_by_quarter(notes, first, last):
    """The notes [onset, offset, pitch, melody] that lie outside quarters first ... last (from 1)."""
    return sorted(note for note in notes if note[1] <= (first - 1) * 32 or note[0] >= last * 32)


def sounding(notes, num_quarters):
    """The keys sounding at each step of notes [onset, offset, pitch, melody]: bool [88, quarters * 32]."""
    roll = np.zeros((88, num_quarters * 32), dtype=bool)
    for onset, offset, pitch, _ in notes:
        roll[pitch - 21, onset:offset] = True
    return roll


# a harmonization as the page holds it, in 3/4: the tune, an Alto a fourth below it, a Tenor and a Bass per bar
HARMONIZED = sorted(
    [[on, off, pitch, True] for on, off, pitch in entered()["notes"]]
    + [[on, off, pitch - 5, False] for on, off, pitch in entered()["notes"]]
    + [[0, 96, 59, False], [96, 192, 57, False], [192, 256, 55, False]]
    + [[0, 96, 43, False], [96, 192, 50, False], [192, 256, 43, False]]
)


def test_regenerating_a_bar_keeps_the_tune_and_every_other_bar(client):
    request = {"notes": HARMONIZED, "quarters": 8, "meter": entered()["meter"]}
    again = client.post("/api/regeneration", json={**request, "bar": 1, "seed": 9}).json()
    assert again["passage"] == [4, 6]
    assert [n for n in again["notes"] if n[3]] == [n for n in HARMONIZED if n[3]]  # the tune, exactly
    assert notes_by_quarter(again["notes"], 4, 6) == notes_by_quarter(HARMONIZED, 4, 6)  # four voices on the grid
    assert again["notes"] != HARMONIZED
    untuned = [note[:3] + [False] for note in HARMONIZED]  # a chorale without a tune: its first bar rewritten
    free = client.post("/api/regeneration", json={**request, "notes": untuned, "bar": 0, "seed": 1}).json()
    assert notes_by_quarter(free["notes"], 1, 3) == notes_by_quarter(untuned, 1, 3)
    assert (sounding(free["notes"], 8)[:, 3 * 32 :] == sounding(untuned, 8)[:, 3 * 32 :]).all()
    out_of_range = client.post("/api/regeneration", json={**request, "bar": 3})
    assert out_of_range.status_code == 400 and out_of_range.json()["detail"] == "bar: the piece has bars 0 ... 2, got 3"


def test_composing_writes_a_chorale_of_the_length_asked(client):
    piece = client.post("/api/composition", json={"quarters": 8, "seed": 7, "tempo": 100}).json()
    assert piece["quarters"] == 8 and piece["notes"] and not any(note[3] for note in piece["notes"])
    assert piece["meter"]["tempos"] == [[0.0, 100.0]]
    same = client.post("/api/composition", json={"quarters": 8, "seed": 7, "tempo": 100}).json()
    assert same["midi"] == piece["midi"]
    other = client.post("/api/composition", json={"quarters": 8, "seed": 8, "tempo": 100}).json()
    assert other["midi"] != piece["midi"]
    for bad, message in (({"quarters": 0}, "quarters: "), ({"quarters": 8, "tempo": 2000}, "tempo: ")):
        answer = client.post("/api/composition", json=bad)
        assert answer.status_code == 422 and answer.json()["detail"].startswith(message)


def test_four_requests_that_arrive_together_get_what_each_gets_alone(client):
    tune = make_midi(TUNE)
    alone = [upload(client, tune, seed=seed).content for seed in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda seed: upload(client, tune, seed=seed), range(4)))
    assert [answer.status_code for answer in together] == [200] * 4
    assert [answer.content for answer in together] == alone
    assert len(set(alone)) == 4


def streamed(client, path: str, body: dict) -> list[dict]:
    """The messages of a job asked for as JSON lines, read as they come."""
    with client.stream("POST", path, json=body, headers={"Accept": NDJSON}) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"] == NDJSON
        return [json.loads(line) for line in answer.iter_lines()]


def counted(total: int) -> list[dict]:
    return [{"done": done, "total": total} for done in range(total + 1)]


def same_parts(piece: dict) -> dict:
    """A piece as JSON less what differs between two answers of the same piece: the seconds it took, and the
    part ids that music21 draws at random in the MusicXML (and verovio's SVG of it)."""
    return {name: value for name, value in piece.items() if name not in ("seconds", "musicxml", "svg")}


def test_every_job_asked_for_as_json_lines_counts_its_quarters_then_answers_what_a_plain_request_gets(client):
    regeneration = {"notes": HARMONIZED, "quarters": 8, "meter": entered()["meter"], "bar": 1, "seed": 9}
    for path, body, total in [
        ("/api/harmonization", entered(seed=2), 8),  # the tune's quarters
        ("/api/regeneration", regeneration, 3),  # bar 2 of 3/4: quarters 4-6
        ("/api/composition", {"quarters": 8, "seed": 7, "tempo": 100}, 8),
    ]:
        *progress, piece = streamed(client, path, body)
        assert progress == counted(total), path
        assert same_parts(piece) == same_parts(client.post(path, json=body).json()), path
        assert piece["musicxml"].startswith("<?xml") and "<svg" in piece["svg"]


def test_a_streamed_job_refuses_bad_input_with_a_4xx_and_a_failure_midway_ends_its_stream(client, monkeypatch):
    answer = client.post("/api/harmonization", json=entered([]), headers={"Accept": NDJSON})
    assert (answer.status_code, answer.json()) == (400, {"detail": "notes: the tune has no notes"})
    bar = {"notes": HARMONIZED, "quarters": 8, "meter": entered()["meter"], "bar": 3}
    answer = client.post("/api/regeneration", json=bar, headers={"Accept": NDJSON})
    assert answer.status_code == 400 and answer.json()["detail"].startswith("bar: the piece has bars 0 ... 2")

    def fails_after_a_quarter(*args, progress, **options):
        if progress is not None:  # streamed
            progress(1)
        raise GuideError("the tune: could not be harmonized\nmore")

    monkeypatch.setattr("bachsformer.server.harmonize", fails_after_a_quarter)
    assert streamed(client, "/api/harmonization", entered()) == [
        *counted(8)[:2],
        {"detail": "the tune: could not be harmonized", "status": 400},
    ]
    assert client.post("/api/harmonization", json=entered()).status_code == 400  # plain: as before


@contextmanager
def models_held(client):
    """The models held as by a request running, in a thread of its own, until the block calls what it is given
    (or 10 s have passed: a test that waits for a line that never comes then fails instead of hanging)."""
    let_go, held = threading.Event(), threading.Event()

    def hold():
        with client.app.state.harmonizer.turns.turn():
            held.set()
            let_go.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    try:
        yield let_go.set
    finally:
        let_go.set()
        holder.join()


def test_a_job_that_comes_while_others_run_waits_its_turn_saying_how_many_are_ahead(client):
    alone = [client.post("/api/harmonization", json=entered(seed=seed)).json() for seed in (2, 3)]
    with (
        models_held(client) as let_go,
        client.stream("POST", "/api/harmonization", json=entered(seed=2), headers={"Accept": NDJSON}) as first,
        client.stream("POST", "/api/harmonization", json=entered(seed=3), headers={"Accept": NDJSON}) as second,
    ):
        first_lines, second_lines = first.iter_lines(), second.iter_lines()
        assert json.loads(next(first_lines)) == {"queued": 1}
        assert json.loads(next(second_lines)) == {"queued": 2}
        let_go()
        *first_progress, first_piece = [json.loads(line) for line in first_lines]
        *second_progress, second_piece = [json.loads(line) for line in second_lines]
    assert first_progress == counted(8)
    assert second_progress == [{"queued": 1}, *counted(8)]  # its turn after the first's
    assert [first_piece["midi"], second_piece["midi"]] == [piece["midi"] for piece in alone]


def test_the_server_writes_no_file(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    upload(client, make_midi(TUNE))
    client.post("/api/harmonization", json=entered())
    client.post("/api/composition", json={"quarters": 4})
    assert list(tmp_path.iterdir()) == []


def test_the_page_is_served_and_nothing_outside_its_folder(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="grid"' in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py", "/server.py"):
        assert client.get(path).status_code == 404
    assert client.get("/api/info").json()["max_quarters"] == MAX_QUARTERS


def test_the_page_names_no_outside_host_and_loads_under_a_megabyte():
    files = [path for path in STATIC.rglob("*") if path.is_file()]
    assert {path.name for path in files} >= {"index.html", "app.js", "style.css"}
    assert sum(path.stat().st_size for path in files) < 1_000_000
    for path in files:
        text = path.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), path.name
        assert "@import" not in text and "url(" not in text.replace('url("data:', ""), path.name


def test_serve_warns_when_it_listens_beyond_this_machine(app_config, tmp_path, monkeypatch, capsys):
    started, exits = [], []
    monkeypatch.setattr("uvicorn.run", lambda app, host, port, **options: started.append((host, port)))
    # serve.py leaves with os._exit once the server stops (threads still running are not waited for): here that
    # would end the test process, so it raises SystemExit instead
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code) or sys.exit(code))
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(app_config.to_dict()))
    status, out, err = tiny.run_script("serve.py", "--config", str(config), monkeypatch=monkeypatch, capsys=capsys)
    assert (status, started[-1], err) == (0, ("127.0.0.1", 8000), "")
    assert "http://127.0.0.1:8000/" in out
    status, _, err = tiny.run_script(
        "serve.py",
        "--config",
        str(config),
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert (status, started[-1]) == (0, ("0.0.0.0", 8080))
    assert err == "warning: listening on 0.0.0.0: anyone on the network can use this page\n"
    status, _, err = tiny.run_script(
        "serve.py", "--config", str(config), "--set", "models.vq_vae=nowhere.pt", monkeypatch=monkeypatch, capsys=capsys
    )
    assert status == 2 and err.startswith("error: nowhere.pt: model not found")
    assert exits == [0, 0]  # the two that served


def test_composing_with_a_tune_model_writes_its_tune_as_the_marked_soprano(tmp_path):
    """As generate.py does: with the tune model there, a chorale from nothing is a tune, harmonized."""
    path = tiny.write_config(tmp_path)
    tiny.write_model_pair(tmp_path, melody_quarters=2, decoder_context=True)
    tiny.write_tune_model(tmp_path)
    config = load_config(path, ["generate.candidates=2", "generate.min_note_steps=4", "generate.tune_first=true"])
    with TestClient(create_app(config)) as client:
        piece = client.post("/api/composition", json={"quarters": 8, "seed": 7, "tempo": 100}).json()
        *progress, again = streamed(client, "/api/composition", {"quarters": 8, "seed": 7, "tempo": 100})
    assert progress == counted(8) and again["midi"] == piece["midi"]  # each quarter of the tune harmonized
    tune = [note for note in piece["notes"] if note[3]]
    assert tune  # the tune is marked as the melody, and it is the top line wherever it sounds
    for onset, offset, pitch, _ in tune:
        assert not any(n[2] > pitch and n[0] < offset and n[1] > onset for n in piece["notes"])


def test_the_api_is_listed_offline_at_api_and_no_page_loads_a_cdn(client):
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    listing = client.get("/api")
    assert listing.status_code == 200 and 'src="/static/api.js"' in listing.text
    assert 'href="/api"' in client.get("/").text
    for page in ("/api", "/static/api.js", "/"):
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", client.get(page).text), page
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/harmonize" in paths and "/docs" not in paths
