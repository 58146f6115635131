"""Keys: estimation on hand-made scales and cadences, normalization, names, moving to a key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from midi_files import roll

from bachsformer.codes import encode_pieces
from bachsformer.data import corpus_fingerprint, load_corpus
from bachsformer.keys import (
    Key,
    KeyNameError,
    KeyRequest,
    change_mode,
    estimate_key,
    move_to_key,
    normalizing_shift,
    parse_key,
    piece_key,
    pitch_class_profile,
    transpose_quarters,
)
from bachsformer.midi import LOWEST_PITCH, write_midi
from bachsformer.vqvae import VQVAE, VQVAEConfig

MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11, 12)
HARMONIC_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 11, 12)  # the leading tone raised, as in Bach's cadences


def scale_and_cadence(tonic_pitch: int, mode: str) -> np.ndarray:
    """A scale from `tonic_pitch` up an octave in quarters, then I-IV-V-I (i-iv-V-i in minor) as chords."""
    scale = MAJOR_STEPS if mode == "major" else HARMONIC_MINOR_STEPS
    third = 4 if mode == "major" else 3
    chords = [(0, third, 7), (5, 5 + third, 12), (7, 11, 14), (0, third, 7)]  # root-position triads
    notes = [(tonic_pitch + step, 32 * i, 32 * i + 24) for i, step in enumerate(scale)]
    for number, chord in enumerate(chords):
        start = 32 * (len(scale) + 2 * number)
        notes += [(tonic_pitch - 12 + step, start, start + 56) for step in chord]
    return roll(len(scale) + 2 * len(chords), *notes)


@pytest.mark.parametrize("mode", ["major", "minor"])
@pytest.mark.parametrize("tonic", range(12))
def test_each_of_the_24_keys_is_found_on_its_scale_and_cadence(tonic, mode):
    assert estimate_key(scale_and_cadence(60 + tonic, mode)) == Key(tonic, mode)


def test_the_profile_counts_sounding_steps_of_each_pitch_class():
    quarters = roll(2, (60, 0, 32), (72, 0, 8), (67, 32, 40), (21, 0, 1))  # C4 32 + C5 8, G4 8, A0 1
    profile = pitch_class_profile(quarters)
    assert profile[0] == 40 and profile[7] == 8 and profile[9] == 1 and profile.sum() == 49


def test_key_names_read_and_print_as_musicians_write_them():
    assert parse_key("D") == KeyRequest(2, None)
    assert parse_key("F#") == KeyRequest(6, None)
    assert parse_key("Bb") == KeyRequest(10, None)
    assert parse_key("G minor") == KeyRequest(7, "minor")
    assert parse_key("c# min") == KeyRequest(1, "minor")
    assert parse_key("Am") == KeyRequest(9, "minor")
    assert parse_key("eb major") == KeyRequest(3, "major")
    assert parse_key("G-minor") == KeyRequest(7, "minor")  # as file names spell it
    assert parse_key("Cb") == KeyRequest(11, None) and parse_key("B#") == KeyRequest(0, None)
    assert (
        str(Key(10, "major")) == "Bb major"
        and str(Key(1, "minor")) == "C# minor"
        and str(Key(6, "major")) == "F# major"
    )
    assert str(KeyRequest(7, "minor")) == "G minor" and str(KeyRequest(3, None)) == "Eb"


@pytest.mark.parametrize("text", ["H", "", "minor", "C##", "Dbb major", "G dorian", "7", "C major minor"])
def test_a_bad_key_name_is_refused_in_one_line_naming_it(text):
    with pytest.raises(KeyNameError) as error:
        parse_key(text)
    message = str(error.value)
    assert repr(text) in message and "\n" not in message and "G minor" in message


@pytest.mark.parametrize("mode, normal", [("major", Key(0, "major")), ("minor", Key(9, "minor"))])
@pytest.mark.parametrize("tonic", range(12))
def test_normalization_moves_every_key_to_c_major_or_a_minor_by_at_most_six_semitones(tonic, mode, normal):
    piece = scale_and_cadence(60 + tonic, mode)
    shift = normalizing_shift(piece)
    assert -6 <= shift <= 5
    moved = transpose_quarters(piece, shift)
    assert moved.sum() == piece.sum() and estimate_key(moved) == normal


@pytest.mark.parametrize(
    "tonic_pitch, edge_pitch, nearest",
    [(50, 21, -2), (91, 107, 5)],  # D major with its dominant on A0; G major with its third on B7
)
def test_normalization_keeps_every_note_inside_the_keys_at_both_ends_of_the_keyboard(tonic_pitch, edge_pitch, nearest):
    piece = scale_and_cadence(tonic_pitch, "major")
    piece[0, edge_pitch - LOWEST_PITCH, 24:32] = True  # the nearest shift would push this off the keyboard
    assert normalizing_shift(piece) == nearest - 12 * np.sign(nearest)  # so it goes an octave the other way
    moved = transpose_quarters(piece, normalizing_shift(piece))
    assert moved.sum() == piece.sum()  # nothing fell off the keyboard
    assert estimate_key(moved) == Key(0, "major")


def test_transpose_quarters_moves_rows_and_drops_what_falls_off():
    piece = roll(1, (21, 0, 4), (60, 0, 32), (108, 8, 16))
    up = transpose_quarters(piece, 2)
    assert up[0, 60 + 2 - LOWEST_PITCH].all() and up[0, 21 + 2 - LOWEST_PITCH, :4].all()
    assert up.sum() == piece.sum() - 8  # C8 went past the top key
    assert np.array_equal(transpose_quarters(up, -2)[:, :-2], piece[:, :-2])
    assert not transpose_quarters(piece, 100).any()


def test_move_to_key_reaches_the_asked_tonic_in_the_piece_own_mode_or_the_named_one():
    piece = scale_and_cadence(60, "major")  # C major
    in_d, key = move_to_key(piece, parse_key("D"))
    assert key == Key(2, "major") and estimate_key(in_d) == key and in_d.sum() == piece.sum()
    in_g_minor, key = move_to_key(piece, parse_key("G minor"))
    assert key == Key(7, "minor") and estimate_key(in_g_minor) == key
    minor = scale_and_cadence(57, "minor")  # A minor
    in_e_major, key = move_to_key(minor, parse_key("E major"))
    assert key == Key(4, "major") and estimate_key(in_e_major) == key
    in_f_sharp, key = move_to_key(minor, parse_key("F#"))
    assert key == Key(6, "minor") and estimate_key(in_f_sharp) == key


def test_change_mode_moves_the_third_and_sixth_and_keeps_the_rest():
    c_major_scale = roll(1, *[(60 + step, 4 * i, 4 * i + 4) for i, step in enumerate(MAJOR_STEPS)])
    c_minor = change_mode(c_major_scale, 0, "major", "minor")
    pitches = sorted(set((np.nonzero(c_minor.any(axis=(0, 2)))[0] + LOWEST_PITCH).tolist()))
    assert pitches == [60, 62, 63, 65, 67, 68, 71, 72]  # harmonic minor: E -> Eb, A -> Ab, B kept
    back = change_mode(c_minor, 0, "minor", "major")
    assert np.array_equal(back, c_major_scale)
    assert np.array_equal(change_mode(c_major_scale, 0, "major", "major"), c_major_scale)


# --------------------------------------------------------------------------------------------
# the corpus


@pytest.fixture
def corpus_in_d(tmp_path):
    folder = tmp_path / "midi"
    folder.mkdir()
    write_midi(scale_and_cadence(62, "major"), folder / "d_major.mid")
    write_midi(scale_and_cadence(64, "minor"), folder / "e_minor.mid")
    write_midi(scale_and_cadence(60, "major"), folder / "c_major.mid")
    return folder


def test_load_corpus_normalizes_each_piece_and_remembers_its_key(corpus_in_d):
    as_written = load_corpus(corpus_in_d)
    normalized = load_corpus(corpus_in_d, normalize_key=True)
    assert [(p.name, p.key, p.shift) for p in as_written] == [
        ("c_major.mid", "C major", 0),
        ("d_major.mid", "D major", 0),
        ("e_minor.mid", "E minor", 0),
    ]
    assert [(p.key, p.shift) for p in normalized] == [("C major", 0), ("D major", -2), ("E minor", 5)]
    for original, moved in zip(as_written, normalized, strict=True):
        assert np.array_equal(moved.quarters, transpose_quarters(original.quarters, moved.shift))
        assert str(estimate_key(moved.quarters)) in ("C major", "A minor")


# G B D C B F#, then B over a short bass note: the line alone fits B minor best, G major second
G_TUNE = [(67, 0, 32), (71, 32, 64), (74, 64, 96), (72, 96, 128), (71, 128, 192), (66, 192, 224), (71, 224, 232)]


def test_a_piece_key_is_the_one_of_its_two_best_that_its_last_bass_note_is_the_tonic_of():
    closing_on_g = roll(8, *G_TUNE, (43, 224, 232))
    assert estimate_key(closing_on_g) == Key(11, "minor") and piece_key(closing_on_g) == Key(7, "major")
    assert piece_key(roll(8, *G_TUNE, (47, 224, 232))) == Key(11, "minor")  # closing on B
    assert piece_key(roll(8, *G_TUNE, (38, 224, 232))) == Key(11, "minor")  # D: the tonic of neither
    assert piece_key(np.zeros((2, 88, 32), dtype=bool)) == Key(0, "major")


def test_load_corpus_moves_a_piece_by_the_key_it_closes_in(tmp_path):
    folder = tmp_path / "midi"
    folder.mkdir()
    write_midi(roll(8, *G_TUNE, (43, 224, 232)), folder / "g_major.mid")
    (piece,) = load_corpus(folder, normalize_key=True)
    assert (piece.key, piece.shift) == ("G major", 5)  # G up a fourth to C, not B down to A


def test_the_code_cache_tells_normalized_from_unnormalized_corpora(corpus_in_d, tmp_path):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(num_embeddings=8, embedding_dim=4, hidden_channels=4, residual_channels=4)).eval()
    model.fingerprint = "f" * 16
    cache = tmp_path / "cache"
    as_written, normalized = load_corpus(corpus_in_d), load_corpus(corpus_in_d, normalize_key=True)
    assert corpus_fingerprint(as_written) != corpus_fingerprint(normalized)
    first = encode_pieces(model, as_written, 0, cache)
    second = encode_pieces(model, normalized, 0, cache)
    assert len(list((cache / "codes").iterdir())) == 2  # one file each, neither read for the other
    expected = model.encode(*(torch.from_numpy(lines) for lines in normalized[1].voices.lines()))
    assert torch.equal(second[1].codes[0], expected.flatten())
    assert torch.equal(encode_pieces(model, as_written, 0, cache)[1].codes, first[1].codes)  # and read back
