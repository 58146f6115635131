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

import numpy as np
import pytest
import tiny
from midi_files import roll

from bachsformer.checkpoint import load_checkpoint, save_checkpoint
from bachsformer.compose import compose, load_models
from bachsformer.config import GenerateConfig
from bachsformer.gpt import GPT, GPTConfig
from bachsformer.keys import Key, estimate_key, move_to_key, normalizing_shift, parse_key, transpose_quarters
from bachsformer.midi import MidiError, parse_midi_bytes, quarters_to_midi_bytes, read_midi, write_midi

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


@pytest.fixture
def run(root, monkeypatch, capsys):
    """run(*args) -> (exit status, stdout, stderr) of generate.py with the tiny config, in-process."""
    config = ("--config", str(root / "config.yaml"))
    return lambda *args: tiny.run_script("generate.py", *config, *args, monkeypatch=monkeypatch, capsys=capsys)


def composed(models, quarters: int, seeds: list[int], primer=None, continuation_only=False, **options) -> list:
    """compose() with the tiny config's options: the quarters of each piece."""
    options = dataclasses.replace(OPTIONS, quarters=quarters, **options)
    return [piece.quarters for piece in compose(*models, options, seeds, primer, continuation_only)]


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


def test_compose_with_a_primer_keeps_it_unless_continuation_only(models, primer):
    (full,) = composed(models, 2, [3], primer)
    (only,) = composed(models, 2, [3], primer, continuation_only=True)
    assert full.shape == (PRIMER_QUARTERS + 2, 88, 32) and only.shape == (2, 88, 32)
    assert np.array_equal(full[:PRIMER_QUARTERS], primer)
    assert np.array_equal(full[PRIMER_QUARTERS:], only)


def test_cli_writes_the_quarters_compose_makes_and_prints_the_path(run, models, tmp_path):
    out = tmp_path / "out"
    status, stdout, err = run("--out", str(out), "--quarters", "3", "--seed", "4")
    assert status == 0, err
    path, summary = stdout.strip().splitlines()
    path = Path(path)
    assert sorted(out.iterdir()) == [path]  # the write probe is gone too
    (expected,) = composed(models, 3, [4])
    assert path.name == f"bachsformer_seed4_t1_k0_p1_q3_{key_name(expected)}.mid"
    assert summary.startswith("1 piece(s) of 3 quarters in ")
    assert path.read_bytes() == quarters_to_midi_bytes(expected, TEMPO)
    assert 1 <= len(read_midi(path).quarters) <= 3  # silent edge quarters are trimmed on reading


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


def test_primer_continuation_starts_with_the_primer_and_is_named_after_it(run, root, models, primer, tmp_path):
    args = ("--file", str(root / PRIMER_NAME), "--quarters", "2", "--seed", "1")
    (path,) = written(run("--out", str(tmp_path / "full"), *args))
    assert path.name == f"bachsformer_seed1_t1_k0_p1_q2_primer-My_Primer_v2_{key_name(primer)}.mid"
    quarters = read_midi(path).quarters
    assert np.array_equal(quarters[:PRIMER_QUARTERS], primer)
    (expected,) = composed(models, 2, [1], primer)
    assert path.read_bytes() == quarters_to_midi_bytes(expected, TEMPO)

    (only,) = written(run("--out", str(tmp_path / "only"), *args, "--continuation-only"))
    assert only.name == f"bachsformer_seed1_t1_k0_p1_q2_primer-My_Primer_v2_continuation_{key_name(primer)}.mid"
    assert only.read_bytes() == quarters_to_midi_bytes(expected[PRIMER_QUARTERS:], TEMPO)
    assert len(read_midi(only).quarters) <= 2


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
        run("--out", str(tmp_path), "--quarters", "3", "--seed", "4", "--set", "generate.min_note_steps=6")
    )
    (expected,) = composed(models, 3, [4], min_note_steps=6)
    (unfiltered,) = composed(models, 3, [4])
    assert path.read_bytes() == quarters_to_midi_bytes(expected, TEMPO)
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
    midi, wav, png = written(run("--out", str(tmp_path / "out"), "--quarters", "2", "--wav", "--png", *models))
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
        (path,) = written(run("--out", str(tmp_path / asked), "--quarters", "3", "--seed", "4", "--key", asked))
        expected, key = move_to_key(as_written, parse_key(asked))
        assert path.read_bytes() == quarters_to_midi_bytes(expected, TEMPO)
        assert path.name == f"bachsformer_seed4_t1_k0_p1_q3_{str(key).replace(' ', '-')}.mid"
        assert key.tonic == parse_key(asked).tonic and (name is None or path.name.endswith(f"_{name}.mid"))
        if name is None:  # the piece keeps its own mode
            assert key.mode == estimate_key(as_written).mode


def test_a_primer_in_d_comes_back_in_d_with_its_own_quarters_unchanged(run, models, tmp_path):
    chords = ((50, 62, 66, 69), (43, 59, 62, 67), (45, 61, 64, 69))  # I, IV, V in D major, a quarter each
    notes = [(pitch, 32 * quarter, 32 * quarter + 28) for quarter, chord in enumerate(chords) for pitch in chord]
    write_midi(roll(PRIMER_QUARTERS, *notes), tmp_path / "in_d.mid")
    primer_in_d = read_midi(tmp_path / "in_d.mid").quarters
    assert estimate_key(primer_in_d) == Key(2, "major")
    shift = normalizing_shift(primer_in_d)
    assert shift == -2  # the models hear it in C major

    (path,) = written(run("--out", str(tmp_path / "out"), "--file", str(tmp_path / "in_d.mid"), "--quarters", "2"))
    assert path.name.endswith("_primer-in_d_D-major.mid")
    quarters = read_midi(path).quarters
    assert np.array_equal(quarters[:PRIMER_QUARTERS], primer_in_d)
    # the continuation: what the models write after the primer moved to C major, moved back up to D
    normalized_primer = transpose_quarters(primer_in_d, shift)
    (in_c,) = composed(models, 2, [0], normalized_primer, continuation_only=True)
    expected = np.concatenate([primer_in_d, transpose_quarters(in_c, -shift)])
    assert path.read_bytes() == quarters_to_midi_bytes(expected, TEMPO)


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
    args = ("--file", str(tmp_path / "in_d.mid"), "--quarters", "2", "--set", "data.normalize_key=false")
    (path,) = written(run("--out", str(tmp_path / "out"), *args))
    options = dataclasses.replace(OPTIONS, quarters=2)
    (expected,) = compose(*models, options, [0], primer_in_d, normalize_key=False)
    assert path.read_bytes() == quarters_to_midi_bytes(expected.quarters, TEMPO)
    (normalized,) = compose(*models, options, [0], primer_in_d)
    assert not np.array_equal(expected.quarters, normalized.quarters)
