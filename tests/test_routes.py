"""One job, one file, whatever the route: generate.py, the API's upload and the page's own calls.

A tune in 3/4 with a pickup (two quarters of rests before it), on a track named "Flute", goes
through each route on tiny untrained models; the files must be the same bytes, with the pickup, the
tune's track name, the key signature and the tempo. The edges around them: tempos a MIDI file can
hold but a piece is not written at, a passage of a harmonization rewritten on the command line,
MusicXML on the command line, a harmonization that leaves its tune bare.
"""

from __future__ import annotations

import base64
import io
import zipfile

import mido
import numpy as np
import pytest
import symusic
import tiny
from fastapi.testclient import TestClient
from midi_files import midi_bytes

from bachsformer.config import load_config
from bachsformer.harmonize import harmony_under_tune, thin_harmony_warning
from bachsformer.keys import Key
from bachsformer.metrics import highest_line
from bachsformer.midi import (
    MIN_TEMPO_BPM,
    Meter,
    Tempo,
    TimeSignature,
    read_meter_bytes,
    read_midi_bytes,
    read_midi_tracks_bytes,
    read_tune_track,
)
from bachsformer.score import musicxml_bytes
from bachsformer.server import create_app

SETTINGS = ["generate.candidates=3", "generate.min_note_steps=4", "generate.rules=0"]
# (pitch, beat, beats): the pickup starts on the third beat of a 3/4 bar
TUNE = [(67, 2, 1), (71, 3, 1), (74, 4, 1), (72, 5, 1), (71, 6, 2), (69, 8, 1), (67, 9, 2), (66, 11, 1), (67, 12, 3)]
PICKUP_METER = Meter((TimeSignature(0.0, 3, 4),), (Tempo(0.0, 60.0),), lead=2.0)


def tune_file(tempo: int = 1_000_000, name: str = "Flute") -> bytes:
    """The tune as a type-1 file: a conductor track (3/4, `tempo` microseconds per quarter), then its own track."""
    conductor = [
        (0, mido.MetaMessage("time_signature", numerator=3, denominator=4)),
        (0, mido.MetaMessage("set_tempo", tempo=tempo)),
    ]
    events = [(0, mido.MetaMessage("track_name", name=name))]
    for pitch, beat, beats in TUNE:
        events.append((beat * 480, mido.Message("note_on", note=pitch, velocity=80)))
        events.append(((beat + beats) * 480 - 1, mido.Message("note_off", note=pitch)))
    return midi_bytes([conductor, events])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("routes")
    tiny.write_config(root)
    tiny.write_model_pair(root, melody_quarters=2, decoder_context=True)
    (root / "flute.mid").write_bytes(tune_file())
    return root


@pytest.fixture(scope="module")
def client(root):
    with TestClient(create_app(load_config(root / "config.yaml", SETTINGS))) as client:
        yield client


@pytest.fixture
def run(root, monkeypatch, capsys):
    settings = [item for setting in SETTINGS for item in ("--set", setting)]
    config = ("--config", str(root / "config.yaml"), *settings)
    return lambda *args: tiny.run_script("generate.py", *config, *args, monkeypatch=monkeypatch, capsys=capsys)


def written(result) -> list:
    status, out, err = result
    assert status == 0, err
    return [line for line in out.strip().splitlines()[:-1]]


def score_of(data: bytes) -> symusic.Score:
    return symusic.Score.from_midi(data)


def track_names(data: bytes) -> list[str]:
    """The names of a file's tracks, those without notes too."""
    midi = mido.MidiFile(file=io.BytesIO(data))
    return [message.name for track in midi.tracks for message in track if message.type == "track_name"]


def test_the_command_line_the_api_and_the_page_write_the_same_file(root, client, run, tmp_path):
    (cli,) = written(run("--melody", str(root / "flute.mid"), "--seed", "5", "--out", str(tmp_path)))
    from_cli = open(cli, "rb").read()
    uploaded = client.post("/api/harmonize", files={"file": ("flute.mid", tune_file())}, data={"seed": "5"})
    assert uploaded.status_code == 200
    tune = client.post("/api/tune", files={"file": ("flute.mid", tune_file())}).json()
    page = client.post(
        "/api/harmonization",
        json={"notes": tune["notes"], "meter": tune["meter"], "seed": 5, "tune_name": tune["tune_name"]},
    ).json()
    from_page = base64.b64decode(page["midi"])
    assert from_cli == uploaded.content == from_page
    score = score_of(from_cli)
    assert track_names(from_cli) == ["Flute", "Alto", "Tenor", "Bass"]  # the tune keeps its name
    assert [(k.key, k.tonality) for k in score.key_signatures] == [(1, 0)]  # G major: one sharp
    assert read_meter_bytes(from_cli) == PICKUP_METER  # 3/4 at 60, the pickup's two quarters of rests kept
    assert read_tune_track(cli) == "Flute"


def test_the_page_keeps_a_pickup_its_bar_lines_where_the_file_has_them(client):
    tune = client.post("/api/tune", files={"file": ("flute.mid", tune_file())}).json()
    assert tune["notes"][0][:2] == [64, 96]  # the pickup's rests written out: the tune starts on the third beat
    assert tune["meter"] == {"time_signatures": [[0.0, 3, 4]], "tempos": [[0.0, 60.0]], "lead": 0.0}
    piece = client.post("/api/harmonization", json={"notes": tune["notes"], "meter": tune["meter"]}).json()
    assert piece["meter"]["lead"] == 2.0 and piece["bars"][:2] == [[-2.0, 1.0], [1.0, 4.0]]
    assert read_meter_bytes(base64.b64decode(piece["midi"])).lead == 2.0
    again = client.post("/api/regeneration", json={**piece, "bar": 0, "seed": 1}).json()  # the pickup's bar
    assert again["passage"] == [1, 1] and again["meter"] == piece["meter"]
    assert read_meter_bytes(base64.b64decode(again["midi"])) == PICKUP_METER


def test_a_tempo_a_midi_file_holds_but_a_piece_is_not_written_at_is_clamped_with_a_warning(client, run, tmp_path):
    slowest = tune_file(tempo=0xFFFFFF)  # 3.58 beats per minute: the slowest a MIDI file can hold
    answer = client.post("/api/harmonize", files={"file": ("slow.mid", slowest)})
    assert answer.status_code == 200
    assert answer.headers["x-bachsformer-warning"].startswith(
        f"slow.mid: a tempo of 3.58 beats per minute (quarter 0) lies outside {MIN_TEMPO_BPM} ... 1000;"
        f" written at {MIN_TEMPO_BPM}"
    )
    assert read_meter_bytes(answer.content).tempos == (Tempo(0.0, MIN_TEMPO_BPM),)
    fastest = client.post("/api/tune", files={"file": ("fast.mid", tune_file(tempo=1))}).json()
    assert (
        fastest["meter"]["tempos"] == [[0.0, 1000.0]]
        and "a tempo of 60,000,000 beats per minute" in fastest["warnings"][0]
    )
    (tmp_path / "slow.mid").write_bytes(slowest)
    status, out, err = run("--melody", str(tmp_path / "slow.mid"), "--out", str(tmp_path))
    assert status == 0 and "Traceback" not in err
    assert f"warning: {tmp_path / 'slow.mid'}: a tempo of 3.58 beats per minute" in err
    (path,) = out.strip().splitlines()[:-1]
    assert read_meter_bytes(open(path, "rb").read()).tempos == (Tempo(0.0, MIN_TEMPO_BPM),)


def test_regenerating_a_passage_of_a_harmonization_keeps_the_tune_and_its_track(root, run, tmp_path):
    (harmonization,) = written(run("--melody", str(root / "flute.mid"), "--seed", "2", "--out", str(tmp_path)))
    before = read_midi_tracks_bytes(open(harmonization, "rb").read())  # the tracks holding notes
    (rewritten,) = written(run("--file", harmonization, "--regenerate", "2-4", "--seed", "9", "--out", str(tmp_path)))
    after = read_midi_tracks_bytes(open(rewritten, "rb").read())
    names = track_names(open(rewritten, "rb").read())  # voices the tiny models left empty follow the others
    assert names[0] == "Flute" and sorted(names) == ["Alto", "Bass", "Flute", "Tenor"]  # no second tune
    assert after[0].name == before[0].name == "Flute"
    assert np.array_equal(after[0].quarters, before[0].quarters)  # the tune, note for note
    assert np.array_equal(highest_line(read_midi_bytes(open(rewritten, "rb").read()).quarters), before[0].quarters)
    old, new = read_midi_bytes(open(harmonization, "rb").read()), read_midi_bytes(open(rewritten, "rb").read())
    assert np.array_equal(old.quarters[:1], new.quarters[:1]) and np.array_equal(old.quarters[4:], new.quarters[4:])


def test_melody_and_file_take_musicxml_and_mxl_through_the_page_s_reader(root, client, run, tmp_path):
    quarters = read_midi_bytes(tune_file()).quarters
    score = musicxml_bytes(quarters, Key(7, "major"), Meter((TimeSignature(0.0, 3, 4),), (Tempo(0.0, 72.0),)))
    (tmp_path / "tune.musicxml").write_bytes(score)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("tune.xml", score)
    (tmp_path / "tune.mxl").write_bytes(packed.getvalue())
    (from_score,) = written(run("--melody", str(tmp_path / "tune.musicxml"), "--seed", "5", "--out", str(tmp_path)))
    uploaded = client.post("/api/harmonize", files={"file": ("tune.musicxml", score)}, data={"seed": "5"})
    assert open(from_score, "rb").read() == uploaded.content
    assert np.array_equal(highest_line(read_midi_bytes(uploaded.content).quarters), quarters)
    (continued,) = written(
        run("--file", str(tmp_path / "tune.mxl"), "--quarters", "4", "--no-tune", "--out", str(tmp_path))
    )
    assert np.array_equal(read_midi_bytes(open(continued, "rb").read()).quarters[: len(quarters)].any(), True)
    bad = tmp_path / "bad.mxl"
    bad.write_bytes(b"PK\x03\x04 not an archive")
    status, _, err = run("--melody", str(bad), "--out", str(tmp_path))
    assert (
        status == 2
        and err.strip() == f"error: {bad}: not a MusicXML score (not a readable .mxl archive: File is not a zip file)"
    )


def test_a_harmonization_that_leaves_its_tune_bare_says_so(tmp_path, monkeypatch, capsys):
    tiny.write_config(tmp_path)
    tiny.write_model_pair(tmp_path, silent=True)  # every code decodes to silence: nothing under the tune
    (tmp_path / "flute.mid").write_bytes(tune_file())
    status, out, err = tiny.run_script(
        "generate.py", "--config", str(tmp_path / "config.yaml"), "--melody", str(tmp_path / "flute.mid"),
        "--out", str(tmp_path / "out"), monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert status == 0
    (path,) = out.strip().splitlines()[:-1]
    assert err.strip() == (
        f"warning: {path}: harmony sounds under only 0% of the tune, which is left mostly bare (try another --seed,"
        " more --candidates or a higher --guidance)"
    )
    with TestClient(create_app(load_config(tmp_path / "config.yaml"))) as client:
        answer = client.post("/api/harmonize", files={"file": ("flute.mid", tune_file())})
        assert "flute.mid: harmony sounds under only 0% of the tune" in answer.headers["x-bachsformer-warning"]


def test_the_share_of_a_tune_with_harmony_under_it():
    melody = np.zeros((4, 88, 32), dtype=bool)
    melody[:, 50, :] = True
    music = melody.copy()
    music[0, 30, :] = True  # a bass note under the first quarter of four
    assert harmony_under_tune(music, melody) == 0.25
    assert thin_harmony_warning(music, melody, "t.mid", "x") == (
        "t.mid: harmony sounds under only 25% of the tune, which is left mostly bare (try x)"
    )
    music[1:3, 40, :] = True
    assert harmony_under_tune(music, melody) == 0.75 and thin_harmony_warning(music, melody, "t.mid", "x") == ""


def test_an_upload_s_name_comes_back_whole_in_the_download_s_name(client):
    answer = client.post("/api/harmonize", files={"file": ("Chorał für Anna.mid", tune_file())})
    assert answer.headers["content-disposition"] == (
        'attachment; filename="Chora_ f_r Anna-harmonized.mid";'
        " filename*=UTF-8''Chora%C5%82%20f%C3%BCr%20Anna-harmonized.mid"
    )
