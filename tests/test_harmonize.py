"""Guided generation: harmonizing a melody and regenerating a passage, on tiny untrained models.

What is tested is the contract, which holds whatever the models write: the melody is the exact top
voice, the quarters outside a regenerated passage are kept, the same seed gives the same file, and
bad input is one line. Candidates drawn with a shared cache equal plain sampling.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import mido
import numpy as np
import pytest
import tiny
import torch
from midi_files import midi_bytes, roll

from bachsformer.compose import as_voices, decode_quarters, load_models, piece_midi_bytes, voiced
from bachsformer.config import GenerateConfig
from bachsformer.data import is_validation
from bachsformer.errors import exit_on_user_error
from bachsformer.evaluate import main as evaluate_main
from bachsformer.evaluate_harmonization import (
    bass_leap,
    harmony_scores,
    melody_kept,
    triad_harmonization,
    voice_leading,
)
from bachsformer.gpt import GPT, GPTConfig
from bachsformer.harmonize import (
    APPROACH_WEIGHT,
    CADENCE_CANDIDATES,
    CADENCE_WEIGHT,
    FINAL_WEIGHT,
    CadenceTarget,
    below_ceiling,
    cadence_scores,
    cadence_targets,
    candidates_per_quarter,
    dominant_chord,
    final_cadence_quarters,
    final_chord_end,
    final_close_step,
    harmonize,
    held_last_note,
    impose_melody,
    melody_ceiling,
    melody_line,
    melody_scores,
    on_the_dominant,
    piece_roll,
    regenerate,
    tonic_chord,
)
from bachsformer.keys import Key, estimate_key, normalizing_shift, transpose_quarters, tune_key
from bachsformer.melody import melody_tokens
from bachsformer.metrics import highest_line
from bachsformer.midi import (
    DEFAULT_PROGRAM,
    LOWEST_PITCH,
    Meter,
    Tempo,
    TimeSignature,
    quarters_to_notes,
    read_midi,
    read_midi_tracks,
    write_midi,
)
from bachsformer.sampling import draw, gumbel
from bachsformer.voices import SILENCE, Voices
from bachsformer.voicing import grid_steps

OPTIONS = GenerateConfig(min_note_steps=0, candidates=4)
# a tune in G major: a held note across the boundary of quarters 1 and 2, a repeated note, a rest
TUNE = roll(
    5,
    (67, 0, 16),
    (71, 16, 40),  # B4 held into quarter 1
    (74, 40, 63),  # D5, then D5 again right after the codec's one-step gap
    (74, 64, 80),
    (72, 80, 96),
    (71, 104, 128),  # after a rest
    (67, 128, 160),
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("guided")
    tiny.write_config(root)
    tiny.write_model_pair(root)
    write_midi(TUNE, root / "tune.mid")
    return root


@pytest.fixture(scope="module")
def models(root):
    return load_models(root / "vq_vae.pt", root / "transformer.pt")


@pytest.fixture
def run(root, monkeypatch, capsys):
    config = ("--config", str(root / "config.yaml"))
    return lambda *args: tiny.run_script("generate.py", *config, *args, monkeypatch=monkeypatch, capsys=capsys)


def named_tracks(tracks: dict[str, list[tuple[int, float, float]]]) -> bytes:
    """A type-1 MIDI file at 480 ticks per beat: one named track per entry, notes as (pitch, start, beats)."""
    chunks = []
    for name, track_notes in tracks.items():
        events = [(0, mido.MetaMessage("track_name", name=name))]
        for pitch, start, beats in track_notes:
            events.append((round(start * 480), mido.Message("note_on", note=pitch, velocity=80)))
            events.append((round((start + beats) * 480), mido.Message("note_off", note=pitch)))
        chunks.append(sorted(events, key=lambda event: (event[0], event[1].type == "note_on")))
    return midi_bytes(chunks)


def notes(quarters: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(note) for note in quarters_to_notes(quarters).tolist()}


def assert_melody_is_the_top_voice(voices: Voices, melody: np.ndarray):
    """The melody quarters [Q, 88, 32] are the Soprano, note for note, and no voice sounds above it (in its rests,
    above its note before)."""
    expected = [[0, 16, 67], [16, 40, 71], [40, 64, 74], [64, 80, 74], [80, 96, 72], [104, 128, 71], [128, 160, 67]]
    shift = int(quarters_to_notes(melody)[0, 2]) - 67  # TUNE moved
    assert voices.notes[0].tolist() == [[on, off, pitch + shift] for on, off, pitch in expected]  # repeats whole
    ceiling = melody_ceiling(piece_roll(melody))  # [T]
    keys, _ = voices.lines()
    lower = keys[:, 1:].transpose(1, 0, 2).reshape(3, -1)  # [3, T]
    assert ((lower == SILENCE) | (lower <= ceiling)).all()
    music_roll = piece_roll(voices.quarters())
    sounding = music_roll.any(axis=0)
    highest = 87 - np.argmax(music_roll[::-1], axis=0)
    assert (highest[sounding] <= ceiling[sounding]).all()  # and the file's union of them


# --------------------------------------------------------------------------------------------
# the pieces


def test_the_melody_ceiling_holds_the_last_melody_key_through_rests():
    melody = piece_roll(roll(1, (60, 4, 8), (64, 12, 16)))
    ceiling = melody_ceiling(melody)
    c4, e4 = 60 - LOWEST_PITCH, 64 - LOWEST_PITCH
    assert ceiling[:12].tolist() == [c4] * 12 and ceiling[12:].tolist() == [e4] * 20


def candidate_lines(*voices: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """One quarter of four voices given as notes (onset step, offset step, MIDI pitch): lines [1, 4, 32]."""
    parts = tuple(np.array(notes, dtype=np.int64).reshape(-1, 3) for notes in voices)
    return Voices(parts, 1, 32).lines()


def test_below_ceiling_moves_keys_down_by_octaves_and_rests_off_the_keyboard():
    keys = np.array([5, 30, SILENCE, 10, 22])
    ceiling = np.array([2, 10, 0, 10, 10])
    assert below_ceiling(keys, ceiling).tolist() == [SILENCE, 6, SILENCE, 10, 10]


def test_impose_melody_makes_the_melody_the_soprano_and_moves_what_lies_above_it_down():
    e4, g4, c4, c5, c3 = (p - LOWEST_PITCH for p in (64, 67, 60, 72, 48))
    keys, onsets = candidate_lines([(0, 32, 79)], [(0, 32, 72)], [(0, 32, 64)], [(0, 16, 48), (16, 32, 48)])
    onsets[0, 2, 0] = False  # the Tenor's E4 goes on from the quarter before, if that quarter ended on it
    melody = roll(1, (64, 8, 16), (67, 20, 28))  # E4, then G4
    melody_keys, melody_onsets = melody_line(melody)
    ceiling = melody_ceiling(piece_roll(melody))
    after = np.array([SILENCE, SILENCE, e4, c3])
    result_keys, result_onsets = impose_melody(keys, onsets, melody_keys[0], melody_onsets[0], ceiling, after)
    assert result_keys.shape == (1, 4, 32)
    assert np.array_equal(result_keys[0, 0], melody_keys[0]) and np.array_equal(result_onsets[0, 0], melody_onsets[0])
    assert result_onsets[0, 0].nonzero()[0].tolist() == [8, 20]
    assert (result_keys[0, 1] == c4).all() and c5 > ceiling.max()  # the Alto's C5 an octave down, all along
    assert result_onsets[0, 1].nonzero()[0].tolist() == [0]
    assert (result_keys[0, 2] == e4).all() and not result_onsets[0, 2].any()  # held on from the quarter before
    assert (result_keys[0, 3] == c3).all() and result_onsets[0, 3].nonzero()[0].tolist() == [0, 16]  # untouched
    fresh_keys, fresh_onsets = impose_melody(keys, onsets, melody_keys[0], melody_onsets[0], ceiling, SILENCE)
    assert np.array_equal(fresh_keys, result_keys) and fresh_onsets[0, 2].nonzero()[0].tolist() == [0]  # struck
    assert g4 == ceiling[20]


def test_melody_scores_reward_carrying_the_melody_and_punish_what_lies_above():
    melody_keys, _ = melody_line(roll(1, (64, 0, 16)))  # E4, then a rest
    ceiling = melody_ceiling(piece_roll(roll(1, (64, 0, 16))))
    candidates = [
        candidate_lines([(0, 16, 64)], [], [], [(0, 32, 48)]),  # carries it
        candidate_lines([(0, 16, 64)], [(0, 8, 76)], [], []),  # carries it, an Alto above it for half of it
        candidate_lines([], [], [], [(0, 8, 48)]),  # neither
        candidate_lines([(16, 32, 60)], [(0, 16, 64)], [], []),  # the tune in the Alto: a doubling earns nothing
    ]
    keys = np.concatenate([keys for keys, _ in candidates])  # [4, 4, 32]
    assert melody_scores(keys, melody_keys[0], ceiling).tolist() == [1.0, 0.5, 0.0, 0.0]


def test_highest_line_keeps_the_highest_sounding_key_only():
    chords = roll(1, (60, 0, 16), (64, 0, 16), (55, 8, 24))
    assert notes(highest_line(chords)) == {(0, 16, 64), (16, 24, 55)}
    repeated = roll(1, (72, 0, 15), (72, 16, 32), (64, 0, 32))  # a repeated C5 over a held E4
    assert notes(highest_line(repeated)) == {(0, 15, 72), (16, 32, 72)}  # the E4 does not show through the gap


def test_candidates_with_a_shared_cache_are_the_codes_plain_sampling_draws():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=8, block_size=24, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()
    context = torch.randint(8, (9,))
    candidates = model.sample_candidates(context, 3, 6, torch.Generator().manual_seed(5), temperature=0.9)
    noise = gumbel((3, 6, 8), torch.Generator().manual_seed(5))
    sequences = context.expand(3, -1)
    for n in range(6):
        logits = model(sequences)[0][:, -1] / 0.9
        sequences = torch.cat([sequences, draw(logits, noise[:, n])[:, None]], dim=1)
    assert torch.equal(candidates, sequences[:, 9:])
    with pytest.raises(ValueError, match="do not fit"):
        model.sample_candidates(torch.zeros(20, dtype=torch.long), 2, 6, torch.Generator())


def test_log_likelihood_sums_the_scored_codes_log_probabilities():
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=8, block_size=24, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()
    sequences = torch.randint(8, (2, 10))
    log_probs = torch.log_softmax(model(sequences[:, :-1])[0], dim=-1)
    expected = sum(log_probs[:, t - 1].gather(-1, sequences[:, t : t + 1])[:, 0] for t in range(4, 10))
    assert torch.allclose(model.log_likelihood(sequences, 4), expected, atol=1e-5)


# --------------------------------------------------------------------------------------------
# harmonize


@pytest.mark.parametrize("candidates", [1, 4])
def test_harmonizing_keeps_the_melody_as_the_exact_top_voice(models, candidates):
    options = dataclasses.replace(OPTIONS, candidates=candidates)
    for seed in (0, 1):
        piece = harmonize(*models, TUNE, options, seed)
        assert piece.quarters.shape == TUNE.shape and str(piece.key) == "G major"
        assert piece.voices.num_voices == 4 and np.array_equal(piece.melody, TUNE)
        assert_melody_is_the_top_voice(piece.voices, TUNE)
        assert sum(len(notes) for notes in piece.voices.notes[1:]) > 0  # and voices below it


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_a_transformer_that_hears_the_melody_and_a_decoder_with_context_keep_the_melody_exact(tmp_path, guidance):
    tiny.write_config(tmp_path)
    pair = load_models(*tiny.write_model_pair(tmp_path, melody_quarters=2, decoder_context=True), "cpu")
    with torch.no_grad():
        pair[1].melody_projection.weight.mul_(300)  # untrained, the melody would barely move the logits
    options = dataclasses.replace(OPTIONS, candidates=4, guidance=guidance)
    piece = harmonize(*pair, TUNE, options, seed=0)
    assert_melody_is_the_top_voice(piece.voices, TUNE)
    assert sum(len(notes) for notes in piece.voices.notes[1:]) > 0
    assert np.array_equal(piece.quarters, harmonize(*pair, TUNE, options, seed=0).quarters)  # the same seed
    not_heard = harmonize(*pair, TUNE, options, seed=0, hear_melody=False)
    assert not np.array_equal(piece.quarters, not_heard.quarters)  # hearing the melody changes the draw


def test_a_transformer_that_hears_the_mode_hears_the_closing_keys(tmp_path):
    tiny.write_config(tmp_path)
    pair = load_models(*tiny.write_model_pair(tmp_path, melody_quarters=2, hears_mode=True), "cpu")
    with torch.no_grad():
        pair[1].mode_embedding.weight.mul_(300)  # untrained, the mode would barely move the logits
    options = dataclasses.replace(OPTIONS, candidates=4, guidance=2.0)
    major, minor = (  # in TUNE's own key (not normalized): the same tonic and cadences, another mode heard
        harmonize(*pair, TUNE, options, 0, normalize_key=False, closing_key=Key(7, mode)) for mode in ("major", "minor")
    )
    assert not np.array_equal(major.quarters, minor.quarters)
    default = harmonize(*pair, TUNE, options, 0, normalize_key=False)  # TUNE is heard in G major
    assert np.array_equal(default.quarters, major.quarters) and default.key == Key(7, "major")
    assert_melody_is_the_top_voice(minor.voices, TUNE)


def test_harmonizing_keeps_the_melody_exact_after_short_notes_are_dropped(models):
    piece = harmonize(*models, TUNE, dataclasses.replace(OPTIONS, min_note_steps=12), 3)
    assert_melody_is_the_top_voice(piece.voices, TUNE)
    assert all((notes[:, 1] - notes[:, 0] >= 12).all() for notes in piece.voices.notes[1:-1])  # the Bass holds the end


def test_harmonizing_in_another_key_moves_the_melody_with_it(models):
    piece = harmonize(*models, TUNE, dataclasses.replace(OPTIONS, key="A"), 0)
    assert str(piece.key) == "A major"
    assert np.array_equal(piece.melody, np.roll(TUNE, 2, axis=1))
    assert_melody_is_the_top_voice(piece.voices, np.roll(TUNE, 2, axis=1))


def test_the_cli_harmonizes_a_track_and_the_same_seed_gives_the_same_bytes(run, root, tmp_path, models):
    chorale = named_tracks({"Soprano": [(67, 0.0, 1.0), (69, 1.0, 1.0)], "Bass": [(55, 0.0, 2.0), (50, 2.0, 1.0)]})
    (root / "chorale.mid").write_bytes(chorale)
    soprano = roll(3, (67, 0, 32), (69, 32, 64))  # on the whole file's grid: three quarters, the last silent
    command = ["--melody", str(root / "chorale.mid"), "--melody-track", "Soprano", "--seed", "2"]
    status, out, err = run("--out", str(tmp_path / "a"), *command, "--candidates", "3")
    assert status == 0, err
    path, summary = out.strip().splitlines()
    assert path.endswith("_m3_harmony-chorale_G-major.mid") and summary.startswith("1 piece(s) of 3 quarters")
    expected = harmonize(*models, soprano, dataclasses.replace(OPTIONS, candidates=3), 2)
    assert np.array_equal(expected.melody, soprano)
    written = open(path, "rb").read()
    # the file's own meter (none: 4/4 at 120), the melody as a track named as its source
    meter = Meter((TimeSignature(0.0, 4, 4),), (Tempo(0.0, 120.0),))
    four = voiced(expected, OPTIONS, "Soprano")  # the melody the Soprano, three voices below it
    assert written == piece_midi_bytes(four, meter, DEFAULT_PROGRAM)  # with its key signature, the tune marked
    assert [name for name, _ in four.tracks] == ["Soprano", "Alto", "Tenor", "Bass"]
    read_back = read_midi(path).quarters  # nothing sounds after the tune: its silent third quarter is trimmed
    assert np.array_equal(read_back, four.quarters[: len(read_back)]) and not four.quarters[len(read_back) :].any()
    by_number = run(
        "--out", str(tmp_path / "b"), *command[:2], "--melody-track", "0", "--seed", "2", "--candidates", "3"
    )
    assert open(by_number[1].splitlines()[0], "rb").read() == written


def test_harmonizing_is_the_same_file_in_a_fresh_process(root, tmp_path):
    command = [sys.executable, "generate.py", "--config", str(root / "config.yaml"), "--melody", str(root / "tune.mid")]
    outputs = []
    for name in ("one", "two"):
        result = subprocess.run(
            [*command, "--out", str(tmp_path / name), "--seed", "9"],
            cwd=tiny.REPO,
            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(open(result.stdout.splitlines()[0], "rb").read())
    assert outputs[0] == outputs[1]


BASS = [(50, 0.0, 1.0)]


@pytest.mark.parametrize(
    "tracks, track, message",
    [
        ({"Soprano": [(60, 0.0, 1.0)], "Bass": BASS}, "Alto", "no track 'Alto'"),
        ({"Soprano": [(60, 0.0, 1.0)], "Bass": BASS}, "7", "no track '7'"),
        ({"Soprano": [], "Bass": BASS}, "Soprano", "no track 'Soprano' with notes"),
        ({"Soprano": [(110, 0.0, 1.0), (72, 1.0, 1.0)], "Bass": BASS}, "0", "outside the 88 keys"),
        ({"Soprano": [(110, 0.0, 1.0), (72, 1.0, 1.0)], "Bass": BASS}, None, "outside the 88 keys"),
    ],
)
def test_a_bad_melody_is_refused_in_one_line_naming_the_file(run, tmp_path, tracks, track, message):
    path = tmp_path / "bad tune.mid"
    path.write_bytes(named_tracks(tracks))
    status, _, err = run(
        "--out", str(tmp_path / "out"), "--melody", str(path), *(["--melody-track", track] * bool(track))
    )
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert str(path) in err and message in err


@pytest.mark.parametrize("track", ["Soprano", None])
def test_a_melody_with_chords_is_harmonized_from_its_top_line_with_a_warning(run, tmp_path, track):
    path = tmp_path / "piano piece.mid"
    tracks = {"Soprano": [(60, 0.0, 1.0), (64, 0.5, 1.0), (62, 1.5, 0.5)]} | ({"Bass": BASS} if track else {})
    path.write_bytes(named_tracks(tracks))
    args = ["--melody-track", track] if track else []
    status, out, err = run("--out", str(tmp_path / "out"), "--melody", str(path), *args, "--candidates", "2")
    assert status == 0, err
    (warning,) = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert str(path) in warning and "chords" in warning and "top line" in warning
    soprano = read_midi_tracks(out.splitlines()[0])[0]
    # the top line: C4 until E4 comes in, E4, then D4
    assert quarters_to_notes(soprano.quarters).tolist() == [[0, 16, 60], [16, 48, 64], [48, 64, 62]]


@pytest.mark.parametrize("option, value", [("--guidance", "1e9"), ("--guidance", "-1"), ("--candidates", "1000000")])
def test_guidance_and_candidates_outside_a_sane_range_are_refused_in_one_line(run, tmp_path, option, value):
    status, out, err = run("--out", str(tmp_path / "out"), "--quarters", "2", option, value)
    assert status == 2 and not out and err.startswith(f"error: {option}: must") and len(err.strip().splitlines()) == 1


def test_a_long_melody_says_how_long_it_is_and_shows_progress(run, tmp_path):
    path = tmp_path / "long.mid"
    write_midi(roll(257, *[(60 + 2 * (n % 4), 32 * n, 32 * n + 31) for n in range(257)]), path)
    args = ("--melody", str(path), "--candidates", "1", "--set", "generate.rules=0", "--raw")
    status, _, err = run("--out", str(tmp_path / "out"), *args)
    assert status == 0, err
    assert f"note: {path}: a melody of 257 quarters" in err and "257/257" in err


# --------------------------------------------------------------------------------------------
# regenerate


def tiny_voices(num_quarters: int, seed: int) -> Voices:
    """Four voices in their registers (tiny.VOICE_RANGES, highest first), notes of 4-16 steps held across quarters."""
    rng = np.random.default_rng(seed)
    parts = []
    for low, high in tiny.VOICE_RANGES[::-1]:
        notes, step = [], 0
        while step < num_quarters * 32:
            length = int(rng.integers(4, 17))
            notes.append([step, min(step + length, num_quarters * 32), int(rng.integers(low, high + 1))])
            step += length
        parts.append(np.array(notes, dtype=np.int64))
    return Voices(tuple(parts), num_quarters, 32)


def test_regenerating_keeps_every_quarter_outside_the_passage(models):
    piece = tiny_voices(6, seed=4)
    piece_keys, _ = piece.lines()
    for first, last in ((1, 2), (3, 4), (6, 6), (1, 6)):
        result = regenerate(*models, piece, first, last, OPTIONS, seed=first)
        assert result.voices.num_quarters == 6 and result.quarters.shape == (6, 88, 32)
        for start, end in ((0, first - 1), (last, 6)):  # the notes before and after, cut at the passage's edges
            kept, outside = result.voices.sliced(start, end), piece.sliced(start, end)
            assert [n.tolist() for n in kept.notes] == [n.tolist() for n in outside.notes]
        result_keys, _ = result.voices.lines()
        assert np.array_equal(result_keys[: first - 1], piece_keys[: first - 1])
        assert np.array_equal(result_keys[last:], piece_keys[last:])
    rewritten = regenerate(*models, piece, 3, 4, OPTIONS, seed=0).voices.lines()[0]
    assert not np.array_equal(rewritten[2:4], piece_keys[2:4])
    rolled = tiny.tiny_rolls(1, 6, seed=4)[0]  # music without parts: the voicing rule's voices, kept outside
    voiced_roll = as_voices(rolled, grid_steps(OPTIONS.grid, 32)).lines()[0]
    result_keys = regenerate(*models, rolled, 3, 4, OPTIONS, seed=0).voices.lines()[0]
    assert np.array_equal(result_keys[:2], voiced_roll[:2]) and np.array_equal(result_keys[4:], voiced_roll[4:])


def test_the_cli_regenerates_a_passage_the_same_way_twice(run, root, tmp_path, models):
    write_midi(tiny.tiny_rolls(1, 6, seed=4)[0], tmp_path / "piece.mid")
    original = read_midi(tmp_path / "piece.mid").quarters
    args = ("--file", str(tmp_path / "piece.mid"), "--regenerate", "2-3", "--seed", "5", "--candidates", "3")
    paths = [run("--out", str(tmp_path / name), *args)[1].splitlines()[0] for name in ("a", "b")]
    assert "_m3_regenerate2-3-piece_" in paths[0]
    first, second = (open(path, "rb").read() for path in paths)
    assert first == second
    rewritten = read_midi(paths[0]).quarters
    assert np.array_equal(rewritten[:1], original[:1]) and np.array_equal(rewritten[3:], original[3:])


@pytest.mark.parametrize(
    "args, message",
    [
        (("--regenerate", "4-2"), "has quarters 1-6"),
        (("--regenerate", "0-2"), "has quarters 1-6"),
        (("--regenerate", "2-9"), "has quarters 1-6"),
        (("--regenerate", "two"), "expected quarters A-B"),
    ],
)
def test_a_bad_passage_is_refused_in_one_line(run, tmp_path, args, message):
    write_midi(tiny.tiny_rolls(1, 6, seed=4)[0], tmp_path / "piece.mid")
    status, _, err = run("--out", str(tmp_path / "out"), "--file", str(tmp_path / "piece.mid"), *args)
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err


@pytest.mark.parametrize(
    "args, message",
    [
        (("--regenerate", "1-2"), "--regenerate needs --file"),
        (("--melody-track", "Soprano"), "--melody-track needs --melody"),
        (("--candidates", "0"), "candidates: must be at least 1"),
        (("--guidance", "-1"), "guidance: must be at least 0"),
    ],
)
def test_options_that_do_not_go_together_are_refused(run, tmp_path, args, message):
    status, _, err = run("--out", str(tmp_path / "out"), *args)
    assert status == 2 and err.startswith("error: ") and message in err


# --------------------------------------------------------------------------------------------
# the harmonization evaluation


def test_the_triad_rule_puts_three_chord_tones_below_each_melody_note():
    melody = roll(2, (64, 0, 32), (67, 32, 64))  # E4 (degree 3 of C major), G4 (degree 5)
    voices = triad_harmonization(melody, Key(0, "major"))
    assert melody_kept(voices.quarters(), melody)
    # E minor on E4: B3 G3 (alto, tenor), E3 (bass); G major on G4: D4 B3, G3
    assert [notes.tolist() for notes in voices.notes] == [
        [[0, 32, 64], [32, 64, 67]],
        [[0, 32, 59], [32, 64, 62]],
        [[0, 32, 55], [32, 64, 59]],
        [[0, 32, 52], [32, 64, 55]],
    ]
    below = {tuple(n) for n in quarters_to_notes(voices.quarters() & ~melody).tolist()}
    assert below >= {(0, 31, 59), (0, 31, 55)}  # in the file's union, B3 and G3 struck again by the next voice


def test_harmony_scores_on_a_known_harmonization():
    melody = roll(2, (72, 0, 32), (74, 32, 64))
    bach = roll(2, (48, 0, 32), (64, 0, 32), (67, 0, 32), (43, 32, 64), (59, 32, 64))  # C E G, then G B
    ours = melody | roll(2, (48, 0, 32), (64, 0, 32), (45, 32, 64), (59, 32, 64))  # C E, then A B
    scores = harmony_scores(ours, melody, bach)
    assert scores["overlap_quarters"] == 2 and scores["overlap_sum"] == pytest.approx(2 / 3 + 1 / 3)
    assert scores["voices_per_quarter"] == 3.0 and scores["melody_kept"]
    assert scores["bass_leap"] == 3.0  # C3 -> A2
    assert bass_leap(roll(1, (50, 0, 8), (55, 8, 16), (48, 16, 24))) == pytest.approx((5 + 7) / 2)


def test_voice_leading_counts_parallel_fifths_and_consonant_beats_between_melody_and_bass():
    melody = roll(1, (72, 0, 16), (74, 16, 32))  # C5 D5
    parallel = melody | roll(1, (53, 0, 16), (55, 16, 32)), melody  # F3 G3: fifths, both rising
    contrary = melody | roll(1, (55, 0, 16), (53, 16, 32)), melody  # G3 F3: a fourth, then a sixth
    held = melody | roll(1, (60, 0, 32)), melody  # C4 held: octave, then ninth; the bass does not move
    assert voice_leading(*parallel) == {
        "eighths_together": 2,
        "parallels": 1,
        "beats_together": 1,
        "consonant_beats": 1,
    }
    assert voice_leading(*contrary) == {
        "eighths_together": 2,
        "parallels": 0,
        "beats_together": 1,
        "consonant_beats": 0,
    }
    assert voice_leading(*held)["parallels"] == 0 and voice_leading(*held)["consonant_beats"] == 1
    assert voice_leading(melody, melody)["eighths_together"] == 0  # no voice below the melody


def test_melody_kept_fails_when_a_note_is_merged_or_covered():
    melody = roll(1, (67, 0, 15), (67, 16, 32))  # a repeated note
    assert melody_kept(melody | roll(1, (60, 0, 32)), melody)
    assert not melody_kept(roll(1, (67, 0, 32)), melody)  # the two notes merged
    assert not melody_kept(melody | roll(1, (72, 8, 12)), melody)  # something above it


@pytest.mark.parametrize("melody_quarters", [0, 2])
def test_evaluate_harmonize_scores_every_held_out_chorale_and_draws_one(tmp_path, monkeypatch, capsys, melody_quarters):
    root = tmp_path / "models"
    tiny.write_config(root)
    tiny.write_model_pair(root, melody_quarters=melody_quarters)
    folder = tmp_path / "chorales"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for number in range(8):
        voices = {}
        for name, low in (("Soprano", 67), ("Alto", 60), ("Tenor", 53), ("Bass", 43)):
            voices[name] = [(int(low + rng.integers(0, 5)), float(beat), 1.0) for beat in range(6)]
        (folder / f"chorale{number}.mid").write_bytes(named_tracks(voices))
    (folder / "no_voices.mid").write_bytes(named_tracks({"Piano": [(60, 0.0, 2.0)]}))
    png, out = tmp_path / "harmonized.png", tmp_path / "harmonize.json"
    args = ["--config", str(root / "config.yaml"), "--set", f"data.midi_dir={folder}"]
    args += ["--set", "data.validation_fraction=0.6", "--set", "generate.candidates=3"]
    monkeypatch.setattr(sys, "argv", ["evaluate", *args, "--harmonize", "--png", str(png), "--json", str(out)])
    exit_on_user_error(evaluate_main)
    stdout = capsys.readouterr().out
    results = json.loads(out.read_text())
    table = results["table"]
    held_out = [name for name in sorted(p.name for p in folder.iterdir()) if is_validation(name, 0.6)]
    chorales = [name for name in held_out if name != "no_voices.mid"]
    # without the melody condition, the rows that differ only in hearing the melody are left out
    systems = {"model", "one candidate", "triad rule", "VQ-VAE oracle"}
    if melody_quarters:
        systems |= {"melody not heard", "one candidate, melody not heard"}
    assert len(chorales) >= 2 and set(table) == systems | {"Bach"}
    for system in systems:
        assert table[system]["files"] == len(chorales) and table[system]["melody_kept"] == len(chorales)
        assert 0 <= table[system]["lower_voice_overlap"] <= 1
        assert 0 <= table[system]["consonance_on_the_beat"] <= 1 and table[system]["parallels_per_100_eighths"] >= 0
    assert table["Bach"]["lower_voice_overlap"] == 1.0
    for system in (*systems, "Bach"):  # every row's endings, read from its four voices
        assert table[system]["endings"]["pieces"] == len(chorales)
    assert "| ending | model |" in stdout and "| bass on tonic |" in stdout
    assert set(results["targets"]) >= {"lower_voice_overlap_at_least_0.52", "melody_kept_in_every_file"}
    assert ("no_voices.mid" in held_out) == any("no_voices.mid" in line for line in results["skipped"])
    assert "| model |" in stdout and "model against triad rule:" in stdout and "| VQ-VAE oracle |" in stdout
    harmony = results["harmony"]  # every system's harmony and Bach's, read by bachsformer.analyze
    assert set(harmony) == systems | {"Bach"}
    assert harmony["Bach"]["pieces"] + harmony["Bach"]["skipped"] == len(chorales)
    assert "chord changes per bar" in stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_continuation_log_likelihood_equals_the_full_forward_pass():
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=8, block_size=24, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()
    context, continuations = torch.randint(8, (7,)), torch.randint(8, (3, 5))
    sequences = torch.cat([context.expand(3, -1), continuations], dim=1)
    expected = model.log_likelihood(sequences, 7)
    assert torch.allclose(model.continuation_log_likelihood(context, continuations), expected, atol=1e-5)
    opening = torch.log(model.first_code_probs)[continuations[:, 0]] + model.log_likelihood(continuations, 1)
    assert torch.allclose(model.continuation_log_likelihood(context[:0], continuations), opening, atol=1e-5)


def test_regenerating_writes_the_candidate_the_following_quarters_favour(models, monkeypatch):
    import bachsformer.harmonize as harmonize_module

    vq_vae, transformer = models
    piece = tiny.tiny_rolls(1, 6, seed=4)[0]
    drawn = []
    sample_codes = harmonize_module.sample_codes
    monkeypatch.setattr(harmonize_module, "sample_codes", lambda *args: drawn.append(sample_codes(*args)) or drawn[-1])
    for favoured in (0, 2):
        boost = torch.zeros(OPTIONS.candidates)
        boost[favoured] = 1e9  # as if only this candidate led into the following quarters

        class Favouring:
            config, first_code_probs = transformer.config, transformer.first_code_probs
            generate = transformer.generate

            @staticmethod
            def log_likelihood(sequences, first_scored, boost=boost):
                return transformer.log_likelihood(sequences, first_scored) + boost

        result = regenerate(vq_vae, Favouring(), piece, 2, 3, OPTIONS, seed=0)
        candidate = drawn[-1][favoured]
        expected = transpose_quarters(decode_quarters(vq_vae, candidate), -normalizing_shift(piece))
        assert np.array_equal(result.quarters[1:3], expected)
    assert not torch.equal(drawn[0][0], drawn[0][2])


def test_evaluate_harmonize_refuses_an_unknown_system_by_name(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["evaluate", "--harmonize", "--systems", "model,triad rules"])
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main()
    assert exit_info.value.code == 2 and "--systems: unknown triad rules" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# cadences


def chords(*columns: tuple[int, ...]) -> np.ndarray:
    """Candidates' lines keys [M, 4, 2]: each column a chord (Soprano ... Bass, MIDI pitches; 0 a rest), held
    two steps; candidate m is columns[m]."""
    keys = np.array([[SILENCE if p == 0 else p - 21 for p in chord] for chord in columns])  # [M, 4]
    return np.repeat(keys[:, :, None], 2, axis=2)


def starts(length: int, *steps: int) -> np.ndarray:
    """Onsets bool [length], True at the given steps."""
    onsets = np.zeros(length, dtype=bool)
    onsets[list(steps)] = True
    return onsets


def test_the_final_cadence_asks_for_the_dominant_then_the_root_position_tonic():
    melody_keys = np.full(8, SILENCE)
    melody_keys[0:4], melody_keys[4:8] = 74 - 21, 72 - 21  # D5 then C5 in C major: the last note's onset is step 4
    targets = cadence_targets(melody_keys, starts(8, 0, 4), [], 4, tonic=0)  # no phrase ends: the final cadence still
    assert targets == [
        CadenceTarget(4, (tonic_chord,), FINAL_WEIGHT),
        CadenceTarget(3, (on_the_dominant,), APPROACH_WEIGHT),
    ]
    before = chords(
        (74, 67, 59, 43), (74, 65, 59, 55), (72, 71, 62, 43), (72, 67, 64, 43), (74, 65, 57, 50), (74, 67, 62, 47)
    )
    # V, V7, and V under a tonic held over it score; a 6/4 over G not yet V, ii, V6 (bass B) do not
    assert cadence_scores(before, 2, targets, 0).tolist() == [APPROACH_WEIGHT] * 3 + [0, 0, 0]
    assert cadence_scores(chords((74, 0, 0, 0)), 2, targets, 0).tolist() == [0]  # the tune alone, no Bass
    after = chords((72, 67, 64, 48), (72, 64, 60, 36), (72, 64, 57, 45), (72, 67, 60, 52), (72, 65, 57, 48))
    # I, and I without its fifth, score; vi (deceptive), I6 and IV 6/4 over the tonic do not
    assert cadence_scores(after, 4, targets, 0).tolist() == [FINAL_WEIGHT, FINAL_WEIGHT, 0, 0, 0]


def test_a_minor_close_may_end_major_and_a_tune_ending_on_the_dominant_gets_a_half_close():
    melody_keys = np.full(8, SILENCE)
    melody_keys[4:] = 69 - 21  # A: the tonic of A minor (tonic 9)
    targets = cadence_targets(melody_keys, starts(8, 4), [], 4, tonic=9)
    picardy, minor, v = chords((69, 64, 61, 45)), chords((69, 64, 60, 45)), chords((71, 68, 64, 52))
    assert [cadence_scores(c, 4, targets, 9)[0] for c in (picardy, minor)] == [FINAL_WEIGHT] * 2
    assert cadence_scores(chords((71, 68, 64, 52), (72, 65, 62, 53)), 2, targets, 9).tolist() == [
        APPROACH_WEIGHT,
        0,
    ]  # V, iv6
    melody_keys[4:] = 71 - 21  # B: the dominant's fifth
    targets = cadence_targets(melody_keys, starts(8, 4), [], 4, tonic=9)
    assert targets == [CadenceTarget(4, (dominant_chord,), FINAL_WEIGHT)]  # a half close, nothing asked before it
    assert cadence_scores(np.concatenate([v, minor]), 4, targets, 9).tolist() == [FINAL_WEIGHT, 0]


@pytest.mark.parametrize(
    "onset, end, chord_end",
    [(64, 80, 96), (64, 96, 96), (64, 112, 128), (72, 80, 128), (80, 96, 128), (64, 128, 128)],
)  # an eighth, a quarter, a dotted quarter on the beat; an off-beat sixteenth and eighth; a half note
def test_the_final_chord_ends_on_the_first_beat_after_the_last_note_and_a_quarter_after_its_onset(
    onset, end, chord_end
):
    assert final_chord_end(onset, end, 32) == chord_end


def test_the_transformer_hears_a_last_note_held_as_long_as_the_final_chord():
    tune = roll(4, (67, 0, 32), (71, 32, 60), (72, 72, 80))  # an off-beat sixteenth, then a rest
    heard = held_last_note(tune, 72, 128)
    assert np.array_equal(heard, roll(4, (67, 0, 32), (71, 32, 60), (72, 72, 128)))


def test_harmonizing_a_tune_that_ends_on_an_eighth_lets_the_transformer_hear_it_held(tmp_path, monkeypatch):
    tiny.write_config(tmp_path)
    vq_vae, transformer = load_models(*tiny.write_model_pair(tmp_path, melody_quarters=2), "cpu")
    heard = []
    shared_context = transformer.shared_context
    monkeypatch.setattr(
        transformer,
        "shared_context",
        lambda context, melody, *a, **k: heard.append(melody) or shared_context(context, melody, *a, **k),
    )
    tune = roll(4, (67, 0, 32), (71, 32, 64), (72, 64, 96), (67, 96, 112))  # the last note an eighth, then a rest
    piece = harmonize(vq_vae, transformer, tune, OPTIONS, 0, normalize_key=False)  # heard in the key it is in
    held = melody_tokens(roll(4, (67, 0, 32), (71, 32, 64), (72, 64, 96), (67, 96, 128)))  # [Q, slots]
    assert np.array_equal(heard[-1][-2].numpy(), held[3])  # the last window: its last quarter, then REST after
    assert piece.voices.notes[0][-1].tolist() == [96, 112, 67]  # the tune itself still ends on its eighth


def test_a_last_note_struck_again_closes_where_the_first_of_them_starts():
    melody_keys = np.full(16, 67 - 21)  # G4 held, then struck again at step 12, in G major (tonic 7)
    melody_keys[:4] = 66 - 21  # after F#4
    targets = cadence_targets(melody_keys, starts(16, 0, 4, 12), [4], 12, tonic=7)  # step 4: a phrase end too
    assert targets == [
        CadenceTarget(4, (tonic_chord,), FINAL_WEIGHT),
        CadenceTarget(12, (tonic_chord,), FINAL_WEIGHT),
        CadenceTarget(3, (on_the_dominant,), APPROACH_WEIGHT),
    ]


def test_the_final_close_is_searched_from_the_chord_before_the_dominant_through_the_last_note():
    melody_keys = np.full(16, 67 - 21)  # G4 held, then struck again at step 12 (quarters of 4 steps)
    melody_keys[:4] = 66 - 21  # after F#4
    melody_onsets = starts(16, 0, 4, 12)
    assert final_close_step(melody_keys, melody_onsets, 12) == 4  # the close arrives on the first G
    # the dominant sounds at step 3, in quarter 0: the search starts there (nothing before it) and runs to quarter 3
    assert final_cadence_quarters(4, 12, 4, first_free=0) == range(0, 4)
    assert final_cadence_quarters(9, 12, 4, first_free=0) == range(1, 4)  # V in quarter 2, the chord before in 1
    assert final_cadence_quarters(8, 12, 4, first_free=0) == range(0, 4)  # a close on a beat: V ends quarter 1
    assert final_cadence_quarters(9, 12, 4, first_free=2) == range(2, 4)  # a primer's quarters are kept
    changed = melody_keys.copy()
    changed[4:12] = 69 - 21  # A4, then G4: not struck again on the note before
    assert final_close_step(changed, melody_onsets, 12) == 12


def test_a_phrase_end_inside_the_tune_takes_an_authentic_or_a_half_close():
    melody_keys = np.full(16, SILENCE)
    melody_keys[:4], melody_keys[4:8], melody_keys[8:12], melody_keys[12:] = 62 - 21, 64 - 21, 67 - 21, 60 - 21
    targets = cadence_targets(melody_keys, starts(16, 0, 4, 8, 12), [4, 8], 12, tonic=0)
    # E5 at step 4 (in I, not in V): the dominant is asked before it; G at step 8 may close on I or V
    assert targets[:3] == [
        CadenceTarget(4, (tonic_chord, dominant_chord), CADENCE_WEIGHT),
        CadenceTarget(3, (on_the_dominant,), APPROACH_WEIGHT),
        CadenceTarget(8, (tonic_chord, dominant_chord), CADENCE_WEIGHT),
    ]
    arrivals = chords((67, 64, 60, 48), (67, 62, 59, 43), (67, 64, 60, 52))
    assert cadence_scores(arrivals, 8, targets, 0).tolist() == [CADENCE_WEIGHT, CADENCE_WEIGHT, 0]  # I, V, I6
    # a small search: more candidates in the quarters (of 4 steps here) where a cadence asks for a chord
    assert candidates_per_quarter(16, 5, 4, targets) == [16 * CADENCE_CANDIDATES] * 4 + [16]


def test_a_tune_key_is_the_one_of_its_two_best_that_its_last_note_is_the_tonic_of():
    notes = [(67, 0, 32), (71, 32, 64), (74, 64, 96), (72, 96, 128), (71, 128, 192), (66, 192, 224)]
    assert tune_key(roll(8, *notes, (67, 224, 256))) == Key(7, "major")  # G B D C B F# G: B minor fits best
    assert tune_key(roll(8, *notes)) == estimate_key(roll(8, *notes)) == Key(11, "minor")  # ending on F#


@pytest.mark.parametrize("num_quarters, tune_end", [(3, 72), (2, 64)])  # a rest after it, or the file's end
def test_a_tune_ending_inside_a_quarter_without_phrase_ends_gets_its_cadence_and_a_chord_held_a_quarter(
    models, num_quarters, tune_end
):
    vq_vae, transformer = models
    melody = roll(num_quarters, (74, 0, 16), (71, 16, 48), (72, 48, tune_end))  # the last note starts off the beat
    melody_keys, melody_onsets = melody_line(melody)
    melody_keys, melody_onsets = melody_keys.reshape(-1), melody_onsets.reshape(-1)
    targets = cadence_targets(melody_keys, melody_onsets, [], 48, tonic=0)  # no long note before it: no phrase end
    assert [(t.step, t.chords) for t in targets] == [
        (48, (tonic_chord,)),
        (47, (on_the_dominant,)),
    ]  # both in quarter 1
    piece = harmonize(vq_vae, transformer, melody, OPTIONS, seed=1)
    assert piece.voices.num_quarters == len(piece.melody) == 3  # room for the chord where the file ends with the note
    assert piece.voices.notes[0][-1].tolist() == [48, tune_end, 72]  # the tune as it is
    keys, onsets = piece.voices.lines()
    lower = keys[:, 1:].transpose(1, 0, 2).reshape(3, -1)  # [3, T]
    struck = onsets[:, 1:].transpose(1, 0, 2).reshape(3, -1)
    assert (lower[:, 95] != SILENCE).any()  # held to the first beat a quarter after the last note's onset
    assert (lower[:, 49:96] == lower[:, 49:50]).all() and not struck[:, 49:96].any()
