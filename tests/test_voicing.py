"""Voicing: four voices, each one line on the grid, from keys that sounded; a melody kept as the Soprano."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, notes_to_roll, quarters_to_notes
from bachsformer.voices import restore_repeats
from bachsformer.voicing import VOICE_RANGES, grid_steps, voice

STEPS = 32
GRID = 8


def roll_of(notes, quarters: int) -> np.ndarray:
    """Quarters [Q, 88, 32] of (onset, offset, pitch) notes, repeats as the codec writes them."""
    return notes_to_roll(np.array(notes, dtype=np.int64).reshape(-1, 3), quarters, STEPS)


notes_strategy = st.lists(
    st.tuples(st.integers(0, 4 * STEPS - 1), st.integers(1, 40), st.integers(36, 84)), min_size=0, max_size=24
)


def check_lines(voices, grid: int, skip_soprano: bool = False) -> None:
    """Each voice one line (never two keys at once), its notes on the grid."""
    for number, notes in enumerate(voices.notes):
        assert (notes[:, 1] > notes[:, 0]).all()
        assert (notes[1:, 0] >= notes[:-1, 1]).all(), f"voice {number} overlaps itself"
        if not (skip_soprano and number == 0):
            assert (notes[:, :2] % grid == 0).all(), f"voice {number} off the grid"


def check_from_input(voices, quarters: np.ndarray, grid: int, first_voice: int = 0) -> None:
    """Every output note is a key that sounded in the input for at least half of each of its cells, but for
    the cells of a rest shorter than a quarter that it holds over."""
    roll = quarters.transpose(1, 0, 2).reshape(NUM_KEYS, -1)
    for notes in voices.notes[first_voice:]:
        for onset, offset, pitch in notes.tolist():
            cells = roll[pitch - LOWEST_PITCH, onset:offset].reshape(-1, grid).sum(axis=1)
            sounded = 2 * cells >= grid
            assert sounded[0], (onset, offset, pitch)
            held_over = np.diff(np.flatnonzero(np.concatenate([[True], sounded, [True]]))) - 1  # silent runs
            assert (held_over < STEPS // grid).all(), (onset, offset, pitch)


@settings(max_examples=60, deadline=None)
@given(notes_strategy, st.sampled_from([4, 8, 16]))
def test_voices_are_lines_on_the_grid_from_the_input(notes, grid):
    notes = [(onset, min(onset + length, 4 * STEPS), pitch) for onset, length, pitch in notes]
    quarters = roll_of(notes, 4)
    voices = voice(quarters, grid)
    check_lines(voices, grid)
    check_from_input(voices, quarters, grid)
    union = voices.quarters()
    assert union.sum(axis=1).max() <= 4  # at most four keys at once: doubled keys merged
    # voices never cross: at every step the Soprano is highest, the Bass lowest
    pitches = np.full((4, 4 * STEPS), -1)
    for number, voice_notes in enumerate(voices.notes):
        for onset, offset, pitch in voice_notes.tolist():
            pitches[number, onset:offset] = pitch
    for upper, lower in zip(pitches[:-1], pitches[1:]):
        both = (upper >= 0) & (lower >= 0)
        assert (upper[both] >= lower[both]).all()


@settings(max_examples=60, deadline=None)
@given(notes_strategy, st.lists(st.tuples(st.integers(1, 12), st.integers(72, 84)), min_size=1, max_size=10))
def test_a_melody_is_the_soprano_unchanged(notes, tune):
    melody_notes, step = [], 0
    for length, pitch in tune:  # a line in eighths, repeats included
        melody_notes.append((step, step + 4 * length, pitch))
        step += 4 * length
    quarters_count = -(-step // STEPS) + 1
    melody = roll_of(melody_notes, quarters_count)
    lower = roll_of([(o, min(o + n, quarters_count * STEPS), p - 12) for o, n, p in notes], quarters_count)
    quarters = melody | lower
    voices = voice(quarters, GRID, melody)
    assert voices.notes[0].tolist() == [list(note) for note in melody_notes]
    check_lines(voices, GRID, skip_soprano=True)
    check_from_input(voices, quarters & ~melody, GRID, first_voice=1)
    union = voices.quarters()
    assert (union & melody).sum() == melody.sum()
    # nothing below touches the melody: the roll read back still holds the melody's notes exactly
    assert {tuple(n) for n in quarters_to_notes(melody).tolist()} <= {tuple(n) for n in quarters_to_notes(union)}


def test_more_than_four_keys_keep_the_outer_voices_and_the_chord():
    # C major with two doublings, C3 E3 G3 C4 E4 G4 C5 for a half note: seven keys, three pitch classes
    quarters = roll_of([(0, 64, pitch) for pitch in (48, 52, 55, 60, 64, 67, 72)], 2)
    voices = voice(quarters, GRID)
    top = [int(notes[0, 2]) for notes in voices.notes]
    assert top[0] == 72 and top[3] == 48
    assert {pitch % 12 for pitch in top} == {0, 4, 7}
    assert all(len(notes) == 1 and notes[0, :2].tolist() == [0, 64] for notes in voices.notes)


def test_fragments_shorter_than_the_grid_are_absorbed_and_notes_snap_to_it():
    # the decoder's kind of output: a note a step late, a 3-step fragment, a note ending 2 steps early
    quarters = roll_of([(1, 32, 60), (32, 35, 62), (35, 62, 64), (0, 64, 48)], 2)
    voices = voice(quarters, GRID)
    sounding = {tuple(n) for notes in voices.notes for n in notes.tolist()}
    assert sounding == {(0, 32, 60), (32, 64, 64), (0, 64, 48)}


def test_a_held_note_stays_in_its_voice():
    # the Alto holds E4 while the Soprano moves G4 -> A4 -> G4 and the Bass C3 -> F3
    quarters = roll_of([(0, 96, 64), (0, 32, 67), (32, 64, 69), (64, 96, 67), (0, 48, 48), (48, 96, 53)], 3)
    voices = voice(quarters, GRID)
    assert voices.notes[1].tolist() == [[0, 96, 64]] or voices.notes[2].tolist() == [[0, 96, 64]]


def test_a_rest_shorter_than_a_quarter_is_held_over_and_a_longer_one_kept():
    # the Soprano rests an eighth (held over by the note before), the Bass a quarter (kept)
    quarters = roll_of([(0, 32, 72), (48, 96, 74), (0, 32, 48), (64, 96, 50)], 3)
    soprano, _, _, bass = voice(quarters, GRID).notes
    assert soprano.tolist() == [[0, 48, 72], [48, 96, 74]]
    assert bass.tolist() == [[0, 32, 48], [64, 96, 50]]


def test_repeated_notes_stay_repeated_at_full_length():
    quarters = roll_of([(0, 32, 60), (32, 64, 60), (0, 64, 48)], 2)
    voices = voice(quarters, GRID)
    assert [[0, 32, 60], [32, 64, 60]] in [notes.tolist() for notes in voices.notes]
    assert restore_repeats(np.array([[0, 31, 60], [32, 64, 60], [0, 31, 62]])).tolist() == [
        [0, 32, 60],
        [32, 64, 60],
        [0, 31, 62],
    ]


def test_voices_lie_in_their_ranges_when_the_keys_allow():
    # six keys: the inner pair chosen keeps the Alto and Tenor in range (not the Alto on C6)
    quarters = roll_of([(0, 32, pitch) for pitch in (84, 76, 67, 64, 55, 43)], 1)
    alto, tenor = (int(voice(quarters, GRID).notes[n][0, 2]) for n in (1, 2))
    assert VOICE_RANGES[1][0] <= alto <= VOICE_RANGES[1][1] and VOICE_RANGES[2][0] <= tenor <= VOICE_RANGES[2][1]


def test_grid_steps_from_the_note_value():
    assert grid_steps(16, 32) == 8 and grid_steps(8, 32) == 16
    with pytest.raises(ValueError, match="grid"):
        grid_steps(12, 32)
