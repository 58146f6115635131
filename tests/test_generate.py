"""generate.py and compose(): lengths, determinism, batches, primers, model pairs and previews.

The models are tiny and untrained (tiny.write_model_pair): what is tested is that the right codes
become the right files. Most runs go through generate.py's `__main__` in-process; the determinism
test starts real processes, so that nothing carried over from an earlier run can explain it.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import wave
from pathlib import Path

import mido
import numpy as np
import pytest
import tiny
import torch
from midi_files import midi_bytes, roll

from bachsformer.checkpoint import load_checkpoint, save_checkpoint
from bachsformer.compose import compose, load_models
from bachsformer.config import GenerateConfig
from bachsformer.gpt import GPT, GPTConfig
from bachsformer.keys import Key, estimate_key, move_to_key, normalizing_shift, parse_key
from bachsformer.midi import (
    Meter,
    MidiError,
    Tempo,
    TimeSignature,
    parse_midi_bytes,
    quarters_to_midi_bytes,
    quarters_to_notes,
    read_meter,
    read_midi,
    read_midi_tracks,
    write_midi,
)
from bachsformer.voices import READ_BY_RULE, Voices, concatenate, read_voices

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
OPTIONS = GenerateConfig(min_note_steps=0)  # as the tiny config has it
TEMPO = GenerateConfig().tempo  # the tiny config leaves the generate section at its defaults
PRIMER_QUARTERS = 3  # 48 codes: more than the tiny transformer's window of 47 holds
PRIMER_NAME = "My Primer (v2).mid"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A tiny config, its model pair at the configured paths, and a primer file."""
    root = tmp_path_factory.mktemp("generate")
    tiny.write_config(root)
    tiny.write_model_pair(root)
    write_midi(tiny.tiny_rolls(1, PRIMER_QUARTERS)[0], root / PRIMER_NAME)
    return root


@pytest.fixture(scope="module")
def models(root):
    return load_models(root / "vq_vae.pt", root / "transformer.pt")


@pytest.fixture(scope="module")
def primer(root) -> np.ndarray:
    quarters = read_midi(root / PRIMER_NAME).quarters
    assert quarters.shape == (PRIMER_QUARTERS, 88, 32)  # it sounds from its first step to its last
    return quarters


@pytest.fixture(scope="module")
def primer_voices(root) -> Voices:
    """The voices the primer file enters as: one track of chords, split by the voicing rule."""
    voices, read_as = read_voices(root / PRIMER_NAME)
    assert read_as == READ_BY_RULE and voices.num_quarters == PRIMER_QUARTERS
    return voices


@pytest.fixture
def run(root, monkeypatch, capsys):
    """run(*args) -> (exit status, stdout, stderr) of generate.py with the tiny config, in-process."""
    config = ("--config", str(root / "config.yaml"))
    return lambda *args: tiny.run_script("generate.py", *config, *args, monkeypatch=monkeypatch, capsys=capsys)


def composed(models, quarters: int, seeds: list[int], primer=None, continuation_only=False, **options) -> list:
    """compose() with the tiny config's options: the quarters of each piece."""
    options = dataclasses.replace(OPTIONS, quarters=quarters, **options)
    return [piece.quarters for piece in compose(*models, options, seeds, primer, continuation_only)]


def unsigned(path: Path) -> bytes:
    """The MIDI file at `path` without its key signature (delta 0, FF 59 02 sf mi): what quarters_to_midi_bytes
    writes."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\x00\xff\x59\x02")
    chunk = 14  # the track chunk holding it: its length shrinks by the 6 bytes
    while chunk + 8 + int.from_bytes(data[chunk + 4 : chunk + 8], "big") < at:
        chunk += 8 + int.from_bytes(data[chunk + 4 : chunk + 8], "big")
    data[chunk + 4 : chunk + 8] = (int.from_bytes(data[chunk + 4 : chunk + 8], "big") - 6).to_bytes(4, "big")
    del data[at : at + 6]
    return bytes(data)


def key_name(quarters: np.ndarray) -> str:
    """How a file name spells the key of `quarters`: C-major, F#-minor."""
    return str(estimate_key(quarters)).replace(" ", "-")


def written(result: tuple[int, str, str]) -> list[Path]:
    """The paths a successful run printed, in order (its last line is the summary)."""
    status, out, err = result
    assert status == 0, err
    *paths, summary = out.strip().splitlines()
    assert " piece(s) of " in summary
    return [Path(path) for path in paths]


def test_compose_gives_the_asked_quarters_per_seed_even_past_the_window(models):
    pieces = composed(models, 5, [0, 1, 2])  # 80 codes; the window holds 47
    assert len(pieces) == 3
    for piece in pieces:
        assert piece.shape == (5, 88, 32) and piece.dtype == bool and piece.any()
    assert not np.array_equal(pieces[0], pieces[1])


def test_compose_with_a_primer_keeps_it_unless_continuation_only(models, primer, primer_voices):
    options = dataclasses.replace(OPTIONS, quarters=2)
    (full,) = compose(*models, options, [3], primer_voices)
    (only,) = compose(*models, options, [3], primer_voices, continuation_only=True)
    assert full.quarters.shape == (PRIMER_QUARTERS + 2, 88, 32) and only.quarters.shape == (2, 88, 32)
    kept = full.voices.sliced(0, PRIMER_QUARTERS)
    assert [n.tolist() for n in kept.notes] == [n.tolist() for n in primer_voices.notes]  # the primer's voices, whole
    continued = full.voices.sliced(PRIMER_QUARTERS, PRIMER_QUARTERS + 2)
    assert [n.tolist() for n in continued.notes] == [n.tolist() for n in only.voices.notes]
    (from_roll,) = compose(*models, options, [3], primer)  # a roll enters as the voicing rule's voices
    assert np.array_equal(from_roll.quarters, full.quarters)


def test_cli_writes_the_quarters_compose_makes_and_prints_the_path(run, models, tmp_path):
    out = tmp_path / "out"
    status, stdout, err = run("--out", str(out), "--quarters", "3", "--seed", "4", "--raw")
    assert status == 0, err
    path, summary = stdout.strip().splitlines()
    path = Path(path)
    assert sorted(out.iterdir()) == [path]  # the write probe is gone too
    (expected,) = composed(models, 3, [4])
    assert path.name == f"bachsformer_seed4_t1_k0_p1_q3_{key_name(expected)}.mid"
    assert summary.startswith("1 piece(s) of 3 quarters in ")
    assert unsigned(path) == quarters_to_midi_bytes(expected, TEMPO)
    assert 1 <= len(read_midi(path).quarters) <= 3  # silent edge quarters are trimmed on reading


def test_cli_samples_on_the_threads_it_chooses(run, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # torch's default on a 2-core machine
        status, stdout, err = run("--out", str(tmp_path), "--quarters", "2")
        assert status == 0, err
        assert torch.get_num_threads() == 1 and stdout.rstrip().endswith("(1 thread(s))")
        status, stdout, err = run("--out", str(tmp_path), "--quarters", "2", "--threads", "2")
        assert status == 0, err
        assert torch.get_num_threads() == 2 and stdout.rstrip().endswith("(2 thread(s))")
        status, _, err = run("--out", str(tmp_path), "--threads", "-1")
        assert status == 2 and err.startswith("error: --threads: must be at least 0")
    finally:
        torch.set_num_threads(before)


def test_same_seed_and_options_give_identical_files_and_never_overwrite(root, tmp_path):
    out = tmp_path / "out"
    options = ["--quarters", "4", "--seed", "11", "--temperature", "0.8", "--top-k", "8", "--top-p", "0.9"]
    command = [sys.executable, "generate.py", "--config", str(root / "config.yaml"), "--out", str(out), *options]

    def generate_once() -> Path:
        result = subprocess.run(command, cwd=tiny.REPO, env=ENV, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return Path(result.stdout.splitlines()[0])

    first = generate_once()
    first_bytes, first_stat = first.read_bytes(), first.stat()
    second = generate_once()
    assert first.name.startswith("bachsformer_seed11_t0.8_k8_p0.9_q4_")
    assert second.name == first.name.replace(".mid", "-2.mid")
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == (first_stat.st_ino, first_stat.st_mtime_ns)
    assert first.read_bytes() == first_bytes == second.read_bytes()


def test_piece_i_of_a_batch_equals_its_seed_alone(run, tmp_path):
    batch = written(run("--out", str(tmp_path / "batch"), "--quarters", "4", "--seed", "5", "--num", "3"))
    alone = [
        written(run("--out", str(tmp_path / "alone"), "--quarters", "4", "--seed", str(seed)))[0] for seed in (5, 6, 7)
    ]
    assert [path.name for path in batch] == [path.name for path in alone]
    assert [path.read_bytes() for path in batch] == [path.read_bytes() for path in alone]
    assert len({path.read_bytes() for path in batch}) == 3


def test_primer_continuation_starts_with_the_primer_and_is_named_after_it(
    run, root, models, primer, primer_voices, tmp_path
):
    args = ("--file", str(root / PRIMER_NAME), "--quarters", "2", "--seed", "1", "--raw")
    (path,) = written(run("--out", str(tmp_path / "full"), *args))
    assert path.name == f"bachsformer_seed1_t1_k0_p1_q2_primer-My_Primer_v2_{key_name(primer)}.mid"
    quarters = read_midi(path).quarters
    assert np.array_equal(quarters[:PRIMER_QUARTERS], primer_voices.quarters())  # --raw: the union of its voices
    (expected,) = composed(models, 2, [1], primer_voices)
    primer_meter = read_meter(root / PRIMER_NAME)  # 4/4 at the 100 beats per minute write_midi wrote
    assert primer_meter == Meter.free(100)
    assert unsigned(path) == quarters_to_midi_bytes(expected, meter=primer_meter)

    (only,) = written(run("--out", str(tmp_path / "only"), *args, "--continuation-only"))
    assert only.name == f"bachsformer_seed1_t1_k0_p1_q2_primer-My_Primer_v2_continuation_{key_name(primer)}.mid"
    # the bar the primer ended in goes on: the continuation starts on its last beat, after three quarters' rest
    only_meter = Meter((TimeSignature(0.0, 4, 4),), (Tempo(0.0, 100.0),), lead=3)
    assert primer_meter.after(PRIMER_QUARTERS) == only_meter
    assert unsigned(only) == quarters_to_midi_bytes(expected[PRIMER_QUARTERS:], meter=only_meter)
    assert len(read_midi(only).quarters) <= 2

    (voiced_file,) = written(run("--out", str(tmp_path / "voiced"), *args[:-1]))  # four voices: the file's track kept
    assert np.array_equal(read_midi(voiced_file).quarters[:PRIMER_QUARTERS], primer)


@pytest.fixture(scope="module")
def mismatched(root) -> dict[str, Path]:
    """Transformers that do not belong with the tiny VQ-VAE: another VQ-VAE's, another vocabulary, no room."""
    checkpoint = load_checkpoint(root / "transformer.pt", "transformer")
    config = GPTConfig(**checkpoint["config"])
    fingerprint = checkpoint["vq_vae_fingerprint"]
    variants = {
        "fingerprint": (config, "0" * 16),
        "vocabulary": (dataclasses.replace(config, vocab_size=8), fingerprint),
        "window": (dataclasses.replace(config, block_size=16), fingerprint),
    }
    paths = {}
    for name, (variant, trained_on) in variants.items():
        paths[name] = root / f"transformer-{name}.pt"
        save_checkpoint(paths[name], "transformer", variant, GPT(variant), vq_vae_fingerprint=trained_on)
    return paths


@pytest.mark.parametrize("mismatch", ["fingerprint", "vocabulary", "window"])
def test_a_transformer_of_another_vq_vae_is_refused_in_one_line(mismatch, mismatched, run, root, tmp_path):
    transformer = mismatched[mismatch]
    status, _, err = run("--out", str(tmp_path / "out"), "--set", f"models.transformer={transformer}")
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert str(transformer) in err and "train_transformer.py" in err
    if mismatch == "fingerprint":
        assert str(root / "vq_vae.pt") in err and "retrain" in err
    assert not list((tmp_path / "out").glob("*.mid"))


@pytest.mark.parametrize("model, script", [("vq_vae", "train_vq_vae.py"), ("transformer", "train_transformer.py")])
def test_a_missing_model_file_says_which_script_trains_it(model, script, run, tmp_path):
    missing = tmp_path / "missing.pt"
    status, _, err = run("--out", str(tmp_path / "out"), "--set", f"models.{model}={missing}")
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert str(missing) in err and f"python {script}" in err


def test_the_cli_drops_notes_shorter_than_min_note_steps(run, models, tmp_path):
    (path,) = written(
        run("--out", str(tmp_path), "--quarters", "3", "--seed", "4", "--set", "generate.min_note_steps=6", "--raw")
    )
    (expected,) = composed(models, 3, [4], min_note_steps=6)
    (unfiltered,) = composed(models, 3, [4])
    assert unsigned(path) == quarters_to_midi_bytes(expected, TEMPO)
    assert expected.sum() < unfiltered.sum()  # the tiny models do make notes that short


def test_png_and_wav_previews_are_named_after_the_midi(run, tmp_path):
    midi, wav, png = written(run("--out", str(tmp_path / "out"), "--quarters", "2", "--wav", "--png"))
    assert midi.suffix == ".mid" and wav == midi.with_suffix(".wav") and png == midi.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = wav.read_bytes()[:12]
    assert header[:4] == b"RIFF" and header[8:] == b"WAVE"
    with wave.open(str(wav)) as audio:
        assert audio.getnchannels() == 1 and audio.getsampwidth() == 2 and audio.getnframes() > 0


def test_an_all_silent_piece_is_written_as_an_empty_midi_wav_and_png(run, tmp_path):
    vq_vae, transformer = tiny.write_model_pair(tmp_path / "silent", silent=True)
    (piece,) = composed(load_models(vq_vae, transformer), 2, [0])
    assert not piece.any()

    models = ("--set", f"models.vq_vae={vq_vae}", "--set", f"models.transformer={transformer}")
    result = run("--out", str(tmp_path / "out"), "--quarters", "2", "--wav", "--png", *models)
    midi, wav, png = written(result)
    warnings = [line for line in result[2].splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {midi}: the models wrote no notes (a model pair that collapsed?)"]
    _, notes = parse_midi_bytes(midi.read_bytes())
    assert len(notes) == 0
    with pytest.raises(MidiError, match="no notes"):  # refused, in one line, if given back as a primer
        read_midi(midi)
    with wave.open(str(wav)) as audio:
        assert audio.getnchannels() == 1 and audio.getnframes() == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# keys


def test_key_moves_each_piece_to_the_asked_tonic_and_names_it(run, models, tmp_path):
    (as_written,) = composed(models, 3, [4])
    for asked, name in (("D", None), ("G minor", "G-minor"), ("bb", None)):
        args = ("--quarters", "3", "--seed", "4", "--key", asked, "--raw")
        (path,) = written(run("--out", str(tmp_path / asked), *args))
        expected, key = move_to_key(as_written, parse_key(asked))
        assert unsigned(path) == quarters_to_midi_bytes(expected, TEMPO)
        assert path.name == f"bachsformer_seed4_t1_k0_p1_q3_{str(key).replace(' ', '-')}.mid"
        assert key.tonic == parse_key(asked).tonic and (name is None or path.name.endswith(f"_{name}.mid"))
        if name is None:  # the piece keeps its own mode
            assert key.mode == estimate_key(as_written).mode


def test_a_primer_in_d_comes_back_in_d_with_its_own_quarters_unchanged(run, models, tmp_path):
    chords = ((50, 62, 66, 69), (43, 59, 62, 67), (45, 61, 64, 69))  # I, IV, V in D major, a quarter each
    notes = [(pitch, 32 * quarter, 32 * quarter + 28) for quarter, chord in enumerate(chords) for pitch in chord]
    write_midi(roll(PRIMER_QUARTERS, *notes), tmp_path / "in_d.mid")
    primer_in_d = read_midi(tmp_path / "in_d.mid").quarters
    voices_in_d, _ = read_voices(tmp_path / "in_d.mid")  # the chords split by the voicing rule
    assert estimate_key(primer_in_d) == estimate_key(voices_in_d.quarters()) == Key(2, "major")
    shift = normalizing_shift(voices_in_d.quarters())
    assert shift == -2  # the models hear it in C major

    args = ("--file", str(tmp_path / "in_d.mid"), "--quarters", "2", "--raw")
    (path,) = written(run("--out", str(tmp_path / "out"), *args))
    assert path.name.endswith("_primer-in_d_D-major.mid")
    quarters = read_midi(path).quarters
    assert np.array_equal(quarters[:PRIMER_QUARTERS], voices_in_d.quarters())
    # the continuation: what the models write after the primer moved to C major, moved back up to D
    options = dataclasses.replace(OPTIONS, quarters=2)
    (in_c,) = compose(*models, options, [0], voices_in_d.transposed(shift), continuation_only=True)
    expected = concatenate([voices_in_d, in_c.voices.transposed(-shift)]).quarters()
    assert not np.array_equal(expected[PRIMER_QUARTERS:], in_c.quarters)  # moved back up to D
    assert unsigned(path) == quarters_to_midi_bytes(expected, meter=Meter.free(100))


@pytest.mark.parametrize("option", [("--key", "H"), ("--key", "C dorian"), ("--set", "generate.key=X#")])
def test_a_bad_key_is_refused_in_one_line_naming_it(option, run, tmp_path):
    status, _, err = run("--out", str(tmp_path / "out"), *option)
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert ("--key" in err or "generate.key" in err) and "is not a key" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_without_key_normalization_a_primer_is_continued_in_its_own_key(run, models, tmp_path):
    chords = ((50, 62, 66, 69), (43, 59, 62, 67), (45, 61, 64, 69))  # D major
    notes = [(pitch, 32 * quarter, 32 * quarter + 28) for quarter, chord in enumerate(chords) for pitch in chord]
    write_midi(roll(PRIMER_QUARTERS, *notes), tmp_path / "in_d.mid")
    primer_in_d = read_midi(tmp_path / "in_d.mid").quarters
    args = ("--file", str(tmp_path / "in_d.mid"), "--quarters", "2", "--set", "data.normalize_key=false", "--raw")
    (path,) = written(run("--out", str(tmp_path / "out"), *args))
    options = dataclasses.replace(OPTIONS, quarters=2)
    (expected,) = compose(*models, options, [0], primer_in_d, normalize_key=False)
    assert unsigned(path) == quarters_to_midi_bytes(expected.quarters, meter=Meter.free(100))
    (normalized,) = compose(*models, options, [0], primer_in_d)
    assert not np.array_equal(expected.quarters, normalized.quarters)


# --------------------------------------------------------------------------------------------
# what the files keep: the input's meter, the melody as a track of its own, a score


def track_events(name: str, notes: list[tuple[int, float, float]]) -> list:
    """A named track of notes (pitch, start beat, beats) at 480 ticks per beat, for midi_bytes."""
    events = [(0, 0, mido.MetaMessage("track_name", name=name))]
    for pitch, start, beats in notes:
        events.append((round(start * 480), 1, mido.Message("note_on", note=pitch, velocity=80)))
        events.append((round((start + beats) * 480), 0, mido.Message("note_off", note=pitch)))
    return [(tick, message) for tick, _, message in sorted(events, key=lambda event: event[:2])]


# a tune in G major in 3/4 at 72 beats per minute, starting on the third beat of its first bar
WALTZ_METER = [
    (0, mido.MetaMessage("time_signature", numerator=3, denominator=4)),
    (0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(72))),
]
WALTZ_SOPRANO = [(67, 2, 1), (71, 3, 1), (74, 4, 1), (72, 5, 1), (71, 6, 2), (66, 8, 1), (67, 9, 3)]
WALTZ_BASS = [(43, 2, 3), (50, 5, 3), (43, 8, 4)]
# read: two silent quarters trimmed, and kept as the lead of a pickup under 3/4
WALTZ = Meter((TimeSignature(0.0, 3, 4),), (Tempo(0.0, 60e6 / mido.bpm2tempo(72)),), lead=2)


@pytest.fixture(scope="module")
def waltz(root) -> Path:
    path = root / "waltz.mid"
    path.write_bytes(
        midi_bytes([WALTZ_METER, track_events("Soprano", WALTZ_SOPRANO), track_events("Bass", WALTZ_BASS)])
    )
    return path


def meta(path: Path) -> tuple[list, list, list[str], list[int]]:
    """A written file's (time signatures as (tick, n, d), tempos as (tick, microseconds), track names, programs)."""
    midi = mido.MidiFile(path)
    messages = [(tick, message) for track in midi.tracks for tick, message in zip(absolute_ticks(track), track)]
    signatures = [(tick, m.numerator, m.denominator) for tick, m in messages if m.type == "time_signature"]
    tempos = [(tick, m.tempo) for tick, m in messages if m.type == "set_tempo"]
    names = [m.name for _, m in messages if m.type == "track_name"]
    programs = [m.program for _, m in messages if m.type == "program_change"]
    return signatures, tempos, names, programs


def absolute_ticks(track) -> list[int]:
    return np.cumsum([message.time for message in track]).tolist()


def test_a_harmonized_3_4_tune_keeps_its_meter_and_tempo_and_is_melody_and_harmony(run, waltz, tmp_path):
    soprano = read_midi_tracks(waltz)[0].quarters
    assert read_meter(waltz) == WALTZ
    (path,) = written(run("--out", str(tmp_path), "--melody", str(waltz), "--melody-track", "soprano"))
    signatures, tempos, names, programs = meta(path)
    assert signatures == [(0, 3, 4)] and tempos == [(0, mido.bpm2tempo(72))]  # a pickup under the tune's 3/4
    assert names == ["Soprano", "Alto", "Tenor", "Bass"] and programs == [19] * 4  # all on the organ
    melody_track, *lower = read_midi_tracks(path)
    assert np.array_equal(melody_track.quarters, soprano)  # exactly the input's melody
    top = np.where(soprano.any(axis=1), 87 - np.argmax(soprano[:, ::-1], axis=1), 87)  # [Q, 32]: the tune's key
    for track in lower:  # each one line, nothing above the tune where it sounds
        assert track.quarters.sum(axis=1).max() <= 1
        highest = np.where(track.quarters.any(axis=1), 87 - np.argmax(track.quarters[:, ::-1], axis=1), -1)
        assert (highest <= top).all()
    assert read_meter(path) == WALTZ


def test_a_tune_harmonized_in_another_tonic_is_moved_whole_and_played_by_program(run, waltz, tmp_path):
    tune = read_midi(waltz).quarters  # the highest line of the file is the soprano
    args = ("--out", str(tmp_path), "--melody", str(waltz), "--key", "A", "--program", "52")
    (path,) = written(run(*args))
    assert path.name.endswith("_A-major.mid")
    _, _, names, programs = meta(path)
    assert names == ["Soprano", "Alto", "Tenor", "Bass"] and programs == [52] * 4
    soprano = read_midi_tracks(waltz)[0].quarters
    assert np.array_equal(read_midi_tracks(path)[0].quarters, np.roll(soprano, 2, axis=1))  # G major -> A major
    assert tune.any()


def test_continuing_or_regenerating_a_3_4_file_keeps_its_meter(run, waltz, tmp_path):
    length = len(read_midi(waltz).quarters)  # 10 quarters: a 1/4 bar and three of 3/4
    (continued,) = written(run("--out", str(tmp_path / "a"), "--file", str(waltz), "--quarters", "2"))
    assert read_meter(continued) == WALTZ
    # the file's tracks, the continuation's Soprano and Bass in them, its Alto and Tenor after them
    assert meta(continued)[2] == ["Soprano", "Bass", "Alto", "Tenor"]
    (only,) = written(run("--out", str(tmp_path / "b"), "--file", str(waltz), "--quarters", "5", "--continuation-only"))
    signatures, tempos, _, _ = meta(only)
    assert signatures == [(0, 3, 4)] and tempos == [(0, mido.bpm2tempo(72))]  # it starts on a bar line
    assert WALTZ.after(length).time_signatures == (TimeSignature(0.0, 3, 4),)
    (rewritten,) = written(run("--out", str(tmp_path / "c"), "--file", str(waltz), "--regenerate", "2-4"))
    assert read_meter(rewritten) == WALTZ


def test_free_music_is_in_4_4_at_the_configured_tempo(run, tmp_path):
    (path,) = written(run("--out", str(tmp_path), "--quarters", "2", "--tempo", "66"))
    signatures, tempos, names, _ = meta(path)
    assert signatures == [(0, 4, 4)] and tempos == [(0, mido.bpm2tempo(66))]
    assert names == ["Soprano", "Alto", "Tenor", "Bass"]


def test_musicxml_scores_hold_the_notes_of_the_midi(run, waltz, tmp_path):
    music21 = pytest.importorskip("music21")
    from test_score import score_notes, voice_notes

    runs = (("--melody", str(waltz), "--melody-track", "Soprano"), ("--quarters", "3"), ("--quarters", "3", "--raw"))
    for number, args in enumerate(runs):
        midi, xml = written(run("--out", str(tmp_path / str(number)), *args, "--musicxml"))
        assert xml == midi.with_suffix(".musicxml")
        ticks_per_beat, notes = parse_midi_bytes(midi.read_bytes())
        steps = [(on * 32 // ticks_per_beat, off * 32 // ticks_per_beat, pitch) for on, off, pitch in notes.tolist()]
        if "--raw" in args:
            assert score_notes(xml) == set(steps)
        else:  # four voices: every note of the MIDI, voice by voice, ties well formed, nothing under a sixteenth
            names, voices, shortest, _ = voice_notes(xml)
            assert sorted(note for voice in voices for note in voice) == sorted(steps)
            assert names[1] == "Tenor, Bass" and shortest > 0
        score = music21.converter.parse(str(xml))
        signatures = [ts.ratioString for ts in score.parts[0].recurse().getElementsByClass("TimeSignature")]
        assert signatures == (["3/4"] if "--melody" in args else ["4/4"])
        (key_signature,) = score.parts[0].recurse().getElementsByClass("KeySignature")
        tonic, mode = midi.stem.rsplit("_", 1)[1].split("-")  # the key the file is named after
        assert key_signature.sharps == music21.key.Key(tonic.replace("b", "-"), mode).sharps


# --------------------------------------------------------------------------------------------
# rough edges: refused in one line, or warned about


def assert_refused(result: tuple[int, str, str], *words: str) -> None:
    status, out, err = result
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not out
    for word in words:
        assert word in err, err


def test_a_melody_may_change_its_tonic_but_not_its_mode(run, waltz, tmp_path):
    assert estimate_key(read_midi(waltz).quarters) == Key(7, "major")
    result = run("--out", str(tmp_path / "out"), "--melody", str(waltz), "--key", "D minor")
    assert_refused(result, "--key D minor", "G major", "not change its mode", "--key D")
    assert not (tmp_path / "out").exists()
    written(run("--out", str(tmp_path / "out"), "--melody", str(waltz), "--key", "D major"))  # the same mode


@pytest.mark.parametrize(
    "args, words",
    [
        (("--melody", "{waltz}", "--quarters", "8"), ("--quarters does not go with --melody",)),
        (
            ("--file", "{waltz}", "--regenerate", "2-3", "--quarters", "8"),
            ("--quarters does not go with --regenerate",),
        ),
        (("--continuation-only",), ("--continuation-only goes with a primer (--file)",)),
        (("--file", "{waltz}", "--regenerate", "2-3", "--continuation-only"), ("--continuation-only",)),
        (("--file", "{waltz}", "--tempo", "80"), ("--tempo is for music written from nothing",)),
        (("--melody", "{waltz}", "--tempo", "80"), ("--tempo",)),
        (("--file", "{folder}"), ("--file", "is a folder")),
        (("--melody", "{folder}"), ("--melody", "is a folder")),
        (("--tempo", "3"), ("--tempo must lie in 4 ... 1000",)),
    ],
)
def test_options_that_would_do_nothing_or_cannot_work_are_refused(run, waltz, tmp_path, args, words):
    args = [arg.format(waltz=waltz, folder=tmp_path) for arg in args]
    assert_refused(run("--out", str(tmp_path / "out"), *args), *words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, module", [("--png", "matplotlib"), ("--musicxml", "music21")])
def test_a_missing_optional_package_is_named_before_anything_is_written(run, monkeypatch, tmp_path, option, module):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    assert_refused(run("--out", str(tmp_path / "out"), "--quarters", "2", option), f"{option} needs {module}")
    assert not (tmp_path / "out").exists()


def test_a_melody_track_is_found_by_its_exact_name_first_then_in_any_case(run, tmp_path, models):
    tracks = [track_events("SOPRANO", [(72, 0, 2)]), track_events("Soprano", [(67, 0, 2)])]
    path = tmp_path / "two sopranos.mid"
    path.write_bytes(midi_bytes(tracks))
    for asked, name, pitch in (("Soprano", "Soprano", 67), ("soprano", "SOPRANO", 72), ("SOPRANO", "SOPRANO", 72)):
        (out,) = written(run("--out", str(tmp_path / asked), "--melody", str(path), "--melody-track", asked))
        melody_track = read_midi_tracks(out)[0]
        assert melody_track.name == name and set(quarters_to_notes(melody_track.quarters)[:, 2]) == {pitch}


# --------------------------------------------------------------------------------------------
# four voices in the files (issue 23's defects, each once)


def track_notes(path: Path) -> dict[str, list[tuple[int, int, int]]]:
    """Each track's notes (onset tick, offset tick, pitch) as written, by track name."""
    midi = mido.MidiFile(path)
    found = {}
    for track in midi.tracks:
        name, ticks, started, notes = None, 0, {}, []
        for message in track:
            ticks += message.time
            if message.type == "track_name":
                name = message.name
            elif message.type == "note_on" and message.velocity:
                started[message.note] = ticks
            elif message.type in ("note_off", "note_on"):
                notes.append((started.pop(message.note), ticks, message.note))
        if name is not None:
            found[name] = sorted(notes)
    return found


def test_free_music_is_the_decoders_four_lines(run, models, tmp_path):
    (path,) = written(run("--out", str(tmp_path), "--quarters", "6", "--seed", "3"))
    tracks = track_notes(path)
    assert list(tracks) == ["Soprano", "Alto", "Tenor", "Bass"]
    (piece,) = compose(*models, dataclasses.replace(OPTIONS, quarters=6, seed=3), [3])
    for notes, voice in zip(tracks.values(), piece.voices.notes, strict=True):
        assert all(later[0] >= earlier[1] for earlier, later in zip(notes, notes[1:]))  # one key at a time
        assert notes == [(onset * 15, offset * 15, pitch) for onset, offset, pitch in voice.tolist()]  # 480 ticks
    assert read_midi(path).quarters.sum(axis=1).max() <= 4


def test_a_pickup_keeps_its_rests_and_a_repeated_melody_note_its_full_length(run, tmp_path):
    tune = tmp_path / "tune.mid"  # 2/4, a pickup of one quarter after a quarter's rest, repeated notes
    notes = [(67, 1, 1), (67, 2, 1), (67, 3, 0.5), (69, 3.5, 0.5), (71, 4, 1), (71, 5, 1)]
    meter = [(0, mido.MetaMessage("time_signature", numerator=2, denominator=4))]
    tune.write_bytes(midi_bytes([meter, track_events("Tune", notes)]))
    (path,) = written(run("--out", str(tmp_path / "out"), "--melody", str(tune), "--melody-track", "Tune"))
    signatures, _, names, _ = meta(path)
    assert signatures == [(0, 2, 4)] and names[0] == "Tune"
    expected = [(round(start * 480), round((start + beats) * 480), pitch) for pitch, start, beats in notes]
    assert track_notes(path)["Tune"] == expected  # from the quarter's rest on, every note whole


def test_regenerating_keeps_the_files_tracks_and_every_note_outside_the_passage(run, tmp_path):
    parts = {  # five tracks; quarter 5, after the passage 2-4, strikes again the keys that sound in quarter 4
        "Soprano": [(72, 0, 4), (72, 4, 2)],
        "Alto": [(67, 0, 4), (67, 4, 2)],
        "Tenor": [(64, 0, 2), (62, 2, 2), (64, 4, 2)],
        "Bass": [(48, 0, 4), (48, 4, 2)],
        "Horn": [(60, 0, 6)],
    }
    source = tmp_path / "five.mid"
    source.write_bytes(midi_bytes([track_events(name, notes) for name, notes in parts.items()]))
    (path,) = written(run("--out", str(tmp_path / "out"), "--file", str(source), "--regenerate", "2-4"))
    written_tracks = track_notes(path)
    assert list(written_tracks)[:5] == list(parts)
    for name, notes in parts.items():
        expected = [(round(start * 480), round((start + beats) * 480), pitch) for pitch, start, beats in notes]
        # outside quarters 2-4 (ticks 480-1920), every note as it was, cut where it crosses into the passage
        kept = [(on, off, pitch) for on, off, pitch in written_tracks[name] if off <= 480 or on >= 1920]
        outside = [(on, min(off, 480), p) for on, off, p in expected if on < 480] + [
            (max(on, 1920), off, p) for on, off, p in expected if off > 1920
        ]
        assert kept == sorted(outside), name
