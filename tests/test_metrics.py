"""Metrics on small hand-made rolls whose answers are known by hand."""

import itertools
import json

import numpy as np
import pytest

from bachsformer.metrics import (
    FEATURE_NAMES,
    best_scale,
    compare,
    longest_verbatim_run,
    longest_verbatim_runs,
    mean_pitch_class_histogram,
    onsets_in_scale,
    overlapping_area,
    piece_features,
    pitch_class_distance,
    pitch_class_histogram,
    scale_consistency,
    top_line,
    top_voice_interval,
    top_voice_leap,
)
from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, STEPS_PER_QUARTER

C_MAJOR = (60, 62, 64, 65, 67, 69, 71)


def silence(num_quarters: int) -> np.ndarray:
    return np.zeros((num_quarters, NUM_KEYS, STEPS_PER_QUARTER), dtype=bool)


def add_note(roll: np.ndarray, pitch: int, onset: int, offset: int) -> np.ndarray:
    """Set MIDI `pitch` over piece steps [onset, offset), across quarter boundaries if need be."""
    flat = roll.transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # a copy: [88, Q * steps]
    flat[pitch - LOWEST_PITCH, onset:offset] = True
    roll[:] = flat.reshape(NUM_KEYS, len(roll), STEPS_PER_QUARTER).transpose(1, 0, 2)
    return roll


def melody(pitches: list[int], steps_per_note: int = 8) -> np.ndarray:
    """One note after another, each `steps_per_note` long with a one-step gap before the next."""
    num_steps = len(pitches) * steps_per_note
    roll = silence(-(-num_steps // STEPS_PER_QUARTER))
    for i, pitch in enumerate(pitches):
        add_note(roll, pitch, i * steps_per_note, (i + 1) * steps_per_note - 1)
    return roll


def add_note_all(roll: np.ndarray, pitches: tuple[int, ...], onset: int, offset: int) -> np.ndarray:
    for pitch in pitches:
        add_note(roll, pitch, onset, offset)
    return roll


def quarter_with(*pitches: int, onset: int = 0, offset: int = 16) -> np.ndarray:
    """A single quarter [88, 32] sounding `pitches` over steps [onset, offset)."""
    return add_note_all(silence(1), pitches, onset, offset)[0]


# --------------------------------------------------------------------------------------------
# Per-piece features


def test_notes_per_quarter_counts_a_note_across_a_boundary_once():
    roll = silence(2)
    add_note(roll, 60, 0, 8)
    add_note(roll, 64, 24, 40)  # crosses into quarter 1: one note
    add_note(roll, 67, 40, 48)
    assert piece_features(roll)["notes_per_quarter"] == 1.5


def test_polyphony_averages_only_over_sounding_steps():
    roll = silence(2)
    add_note_all(roll, (60, 64, 67), 0, 16)  # three keys for 16 steps
    add_note(roll, 72, 16, 32)  # one key for 16 steps; quarter 1 silent
    assert piece_features(roll)["polyphony"] == 2.0


def test_pitch_range_is_highest_minus_lowest():
    roll = melody([67, 60, 72, 64])
    assert piece_features(roll)["pitch_range"] == 12.0


def test_pitch_class_histogram_counts_onsets():
    roll = silence(2)
    add_note(roll, 48, 0, 64)  # one long C: one onset however long it sounds
    add_note(roll, 60, 0, 4)
    add_note(roll, 64, 8, 12)
    add_note(roll, 79, 16, 20)  # G two octaves up
    expected = np.zeros(12)
    expected[[0, 4, 7]] = [0.5, 0.25, 0.25]
    np.testing.assert_allclose(pitch_class_histogram(roll), expected)


def test_scale_consistency():
    assert scale_consistency(melody(list(C_MAJOR))) == 1.0
    # C major plus F# and C#: no major scale holds more than 7 of the 9 pitch classes
    assert scale_consistency(melody([*C_MAJOR, 66, 61])) == pytest.approx(7 / 9)
    assert scale_consistency(melody(list(range(60, 72)))) == pytest.approx(7 / 12)
    # a transposed scale is just as consistent: all 12 tonics are tried
    assert scale_consistency(melody([p + 5 for p in C_MAJOR])) == 1.0


def test_best_scale_names_the_tonic_holding_most_onsets():
    assert best_scale(melody(list(C_MAJOR))) == 0
    assert best_scale(melody([p + 7 for p in C_MAJOR])) == 7  # G major
    # D E F# G A B: both G major and D major hold all six; the lower tonic wins the tie
    assert best_scale(melody([62, 64, 66, 67, 69, 71])) == 2
    assert best_scale(melody([62, 64, 66, 67, 69, 71, 72])) == 7  # ... and C natural decides for G


def test_onsets_in_scale_counts_pitch_classes_in_any_octave():
    piece = melody([60, 61, 66, 67, 84, 37])  # C, C#, F#, G, C, C#
    assert onsets_in_scale(piece, 0) == (3, 6)  # C major: C, G, C
    assert onsets_in_scale(piece, 2) == (4, 6)  # D major: C#, F#, G, C#
    assert onsets_in_scale(piece, 14) == (4, 6)  # tonics count modulo 12
    assert onsets_in_scale(silence(2), 0) == (0, 0)


def test_top_voice_interval_follows_highest_onset():
    roll = silence(1)
    add_note_all(roll, (60, 72), 0, 8)  # top 72
    add_note(roll, 48, 0, 32)  # held bass under everything
    add_note(roll, 76, 8, 16)  # top 76
    add_note_all(roll, (55, 71), 16, 24)  # top 71
    add_note(roll, 74, 24, 32)  # top 74
    assert top_voice_interval(roll) == pytest.approx((4 + 5 + 3) / 3)
    assert top_voice_interval(melody([60])) == 0.0


def test_top_voice_leap_follows_the_highest_sounding_key_note_by_note():
    roll = silence(2)
    add_note(roll, 72, 0, 24)  # the soprano holds C5 while a lower voice moves: one top-line note
    add_note(roll, 60, 0, 8)
    add_note(roll, 67, 8, 24)
    add_note(roll, 74, 24, 31)  # D5, then D5 again after the codec's one-step gap: two notes, leap 0
    add_note(roll, 74, 32, 40)
    add_note(roll, 55, 40, 48)  # the top line drops to the only sounding key
    add_note(roll, 76, 52, 64)  # after a rest, E5
    assert top_line(roll).tolist() == [72, 74, 74, 55, 76]
    assert top_voice_leap(roll) == pytest.approx((2 + 0 + 19 + 21) / 4)
    assert top_voice_leap(melody([60])) == 0.0 and top_voice_leap(silence(1)) == 0.0
    held = silence(2)
    add_note(held, 65, 16, 48)  # across the quarter boundary: one note
    assert top_line(held).tolist() == [65]
    repeated = silence(1)
    add_note(repeated, 72, 0, 15)  # a repeated C5: the alto below must not show through its one-step gap
    add_note(repeated, 72, 16, 32)
    add_note(repeated, 64, 0, 32)
    assert top_line(repeated).tolist() == [72, 72]


def test_max_polyphony_is_the_most_keys_sounding_at_one_step():
    roll = silence(2)
    add_note_all(roll, (48, 55, 64, 72), 0, 16)
    add_note_all(roll, (50, 53, 57, 62, 65), 30, 34)  # five keys at once, across the boundary
    assert piece_features(roll)["max_polyphony"] == 5.0
    assert piece_features(silence(1))["max_polyphony"] == 0.0


def test_silent_quarters_fraction():
    roll = silence(4)
    add_note(roll, 60, 0, 8)
    add_note(roll, 62, 64, 72)
    assert piece_features(roll)["silent_quarters"] == 0.5


def test_repetition_counts_identical_neighbours():
    a = quarter_with(60, 64)
    b = quarter_with(62)
    roll = np.stack([a, a, b, b, a])  # pairs: same, differ, same, differ
    assert piece_features(roll)["repetition"] == 0.5
    assert piece_features(np.stack([a]))["repetition"] == 0.0


def test_piece_features_of_silence_and_bad_shapes():
    features = piece_features(silence(3))
    assert tuple(features) == FEATURE_NAMES
    assert features["silent_quarters"] == 1.0
    assert features["repetition"] == 1.0  # silent neighbours are identical
    sound_features = set(FEATURE_NAMES) - {"silent_quarters", "repetition"}
    assert all(features[name] == 0.0 for name in sound_features)
    with pytest.raises(ValueError):
        piece_features(np.zeros((2, 80, 32), dtype=bool))
    with pytest.raises(ValueError):
        piece_features(silence(0))


# --------------------------------------------------------------------------------------------
# Overlapping area and histogram distance


def test_overlapping_area_identical_far_and_symmetric():
    x = np.array([1.0, 2.0, 2.5, 3.0, 4.0, 4.2, 5.5])
    assert overlapping_area(x, x) == pytest.approx(1.0, abs=1e-3)
    assert overlapping_area(x, x + 1000.0) == pytest.approx(0.0, abs=1e-6)
    y = x * 1.5 + 1.0
    assert 0.05 < overlapping_area(x, y) < 0.95
    assert overlapping_area(x, y) == pytest.approx(overlapping_area(y, x), rel=1e-9)


def test_overlapping_area_shrinks_as_samples_move_apart():
    x = np.linspace(-1.0, 1.0, 21)
    areas = [overlapping_area(x, x + shift) for shift in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(later < earlier for earlier, later in itertools.pairwise(areas))


def test_overlapping_area_of_constant_samples():
    assert overlapping_area([3.0, 3.0], [3.0, 3.0, 3.0]) == pytest.approx(1.0, abs=1e-3)
    assert overlapping_area([0.0] * 4, [1.0] * 4) == pytest.approx(0.0, abs=1e-6)
    # a constant sample gets a kernel 1 % of the pooled std wide: a narrow peak, not a spike the
    # grid misses; under it lies about kde_b(0) * 0.04 = 0.013 of shared area
    assert 0.008 < overlapping_area([0.0] * 3, [-1.0, 0.0, 1.0]) < 0.02
    with pytest.raises(ValueError):
        overlapping_area([], [1.0])


def test_pitch_class_distance_is_total_variation():
    c = np.eye(12)[0]
    g = np.eye(12)[7]
    assert pitch_class_distance(c, c) == 0.0
    assert pitch_class_distance(c, g) == 1.0
    assert pitch_class_distance(c, (c + g) / 2) == pytest.approx(0.5)
    assert pitch_class_distance(np.zeros(12), c) == 1.0
    assert pitch_class_distance(np.zeros(12), np.zeros(12)) == 0.0


def test_mean_pitch_class_histogram_skips_silent_pieces():
    pieces = [melody([60, 72]), melody([67]), silence(2)]
    expected = np.zeros(12)
    expected[[0, 7]] = 0.5
    np.testing.assert_allclose(mean_pitch_class_histogram(pieces), expected)


def test_compare_a_set_with_itself_and_with_another():
    pieces = [melody(list(C_MAJOR)), melody([60, 64, 67, 72, 67]), melody([62, 65, 69, 74])]
    same = compare(pieces, pieces)
    json.dumps(same)  # plain types only
    assert same["num_generated"] == same["num_reference"] == 3
    assert set(same["overlapping_area"]) == set(FEATURE_NAMES)
    assert all(area == pytest.approx(1.0, abs=1e-3) for area in same["overlapping_area"].values())
    assert same["mean_overlapping_area"] == pytest.approx(1.0, abs=1e-3)
    assert same["pitch_class_distance"] == 0.0
    assert same["generated_mean"] == same["reference_mean"]
    assert same["generated_mean"]["pitch_range"] == pytest.approx((11 + 12 + 12) / 3)

    drones = [melody([61] * 16), melody([66] * 12)]  # dense repeated notes, out of the C set
    other = compare(drones, pieces)
    assert other["pitch_class_distance"] == 1.0
    assert other["overlapping_area"]["pitch_range"] < 0.05
    assert other["mean_overlapping_area"] < same["mean_overlapping_area"]


# --------------------------------------------------------------------------------------------
# Copying


def distinct_quarters(num_quarters: int, lowest: int = 48) -> np.ndarray:
    """Quarters no two of which are equal up to transposition: quarter i holds an interval of
    4 + i semitones above `lowest + i`."""
    return np.stack([quarter_with(lowest + i, lowest + 2 * i + 4) for i in range(num_quarters)])


def transpose(roll: np.ndarray, semitones: int) -> np.ndarray:
    return np.roll(roll, semitones, axis=1)  # test inputs stay well inside the keys


def test_transposed_copy_embedded_in_a_piece_is_found():
    training = [distinct_quarters(6, lowest=40), distinct_quarters(8, lowest=50)]
    unrelated = np.stack([quarter_with(90, onset=3, offset=5), quarter_with(30, 31, offset=9)])
    copied = transpose(training[1][2:6], 3)  # 4 quarters, up a minor third
    piece = np.concatenate([unrelated, copied, unrelated[::-1]])
    assert longest_verbatim_run(piece, training) == 4
    assert longest_verbatim_run(piece, training, max_shift=2) == 0
    assert longest_verbatim_run(transpose(copied, -3), training, max_shift=0) == 4
    assert longest_verbatim_runs([piece, unrelated, training[0]], training) == [4, 0, 6]


def test_a_run_keeps_one_shift_and_one_training_piece():
    training = [distinct_quarters(4, lowest=40), distinct_quarters(4, lowest=60)]
    mixed_shift = np.concatenate([transpose(training[0][1:2], 2), transpose(training[0][2:3], 5)])
    assert longest_verbatim_run(mixed_shift, training) == 1
    across_pieces = np.stack([training[0][3], training[1][0]])
    assert longest_verbatim_run(across_pieces, training) == 1
    with_a_gap = np.stack([training[0][0], quarter_with(100), training[0][1], training[0][2]])
    assert longest_verbatim_run(with_a_gap, training) == 2


def test_notes_may_not_leave_the_keyboard_when_shifted():
    generated = silence(1)
    add_note(generated, LOWEST_PITCH + NUM_KEYS - 2, 0, 8)  # second-highest key
    add_note(generated, 60, 0, 8)
    training = [np.roll(generated, 3, axis=1)]  # the top note wraps around to the bottom keys
    assert longest_verbatim_run(generated, training) == 0
    assert longest_verbatim_run(generated, [generated]) == 1


def test_silent_quarters_count_only_beside_sound():
    sounding = distinct_quarters(2)
    training = [np.stack([sounding[0], silence(1)[0], silence(1)[0], sounding[1]])]
    assert longest_verbatim_run(silence(3), training) == 0
    assert longest_verbatim_run(np.concatenate([silence(2), sounding[1:]]), training) == 3
    assert longest_verbatim_run(training[0], training) == 4


def test_note_lengths_count_half_notes_and_notes_held_across_a_quarter_boundary():
    roll = np.zeros((88, 4 * 32), dtype=bool)
    roll[40, 0:64] = True  # a half note: long, and held across step 32
    roll[42, 40:60] = True  # inside quarter 1
    roll[44, 70:100] = True  # held across step 96
    roll[46, 96:128] = True  # ends on the last boundary: not held across one
    quarters = roll.reshape(88, 4, 32).transpose(1, 0, 2)
    features = piece_features(quarters)
    assert (features["long_notes"], features["tied_notes"]) == (0.25, 0.5)
    assert piece_features(np.zeros((2, 88, 32), dtype=bool))["tied_notes"] == 0.0


def test_top_line_features_and_endings():
    from bachsformer.metrics import ending, top_line_features

    roll = np.zeros((88, 8 * 32), dtype=bool)  # C4 D4 E4 (quarters), G4 (half), then a C major chord held a whole note
    for pitch, onset, length in ((60, 0, 32), (62, 32, 32), (64, 64, 32), (67, 96, 64), (72, 160, 96)):
        roll[pitch - 21, onset : onset + length] = True
    for pitch in (48, 64, 67):
        roll[pitch - 21, 160:256] = True
    quarters = roll.reshape(88, 8, 32).transpose(1, 0, 2)
    line = top_line_features(quarters)
    assert line["leap"] == pytest.approx((2 + 2 + 3 + 5) / 4)
    assert line["range"] == 12 and line["steps"] == 0.5
    assert line["phrase_quarters"] == 8 / 2  # the half note ends a phrase, the last note another
    assert ending(quarters, tonic=0) == {"final_chord_quarters": 3.0, "bass_on_tonic": True}
    assert ending(quarters, tonic=7)["bass_on_tonic"] is False
