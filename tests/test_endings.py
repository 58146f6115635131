"""Endings read from four voices: cadence types, the tonic, the final chord, the fermatas."""

import numpy as np
import pytest

from bachsformer.endings import cadence, piece_ending, summarize_endings, voices_key
from bachsformer.keys import Key

Q = 4  # steps per quarter in these tests
C_MAJOR, A_MINOR = Key(0, "major"), Key(9, "minor")


def four_voices(*chords, lengths=None):
    """Voices S, A, T, B of chords given as (soprano, alto, tenor, bass) MIDI pitches, a quarter each
    (or `lengths` quarters): four int [N, 3] note lists."""
    lengths = lengths or [1] * len(chords)
    starts = np.concatenate([[0], np.cumsum(lengths)]) * Q
    return [
        np.array([[starts[i], starts[i + 1], chord[v]] for i, chord in enumerate(chords)], dtype=np.int64)
        for v in range(4)
    ]


ONE = (72, 67, 64, 48)  # C major: C E G over C
FOUR = (72, 69, 65, 53)
FIVE = (71, 67, 62, 55)
FIVE7 = (71, 65, 62, 55)
SIX = (72, 69, 64, 57)
ONE6 = (72, 67, 60, 52)


@pytest.mark.parametrize(
    "chords, expected",
    [
        ((ONE, FOUR, FIVE, ONE), "authentic"),
        ((ONE, FIVE7, ONE), "authentic"),
        ((ONE, FIVE, FIVE, ONE), "authentic"),  # the bass repeats its dominant: the last two *different* notes
        ((ONE, FOUR, ONE), "plagal"),
        ((ONE, FOUR, FIVE), "half"),
        ((ONE, FIVE, SIX), "deceptive"),
        ((ONE, FIVE, ONE6), "other"),  # ends on ONE6
        ((ONE, ONE, ONE), "other"),  # one bass note only
    ],
)
def test_the_final_cadence_is_read_from_the_last_two_bass_notes(chords, expected):
    assert cadence(four_voices(*chords), 0) == expected


def test_a_suspension_over_the_dominant_and_a_picardy_third_still_close_authentically():
    # A minor: i, FIVE with a 4-3 suspension (A over E, then G#), ONE with a major third (C#)
    chords = [(72, 69, 64, 57), (69, 64, 59, 52), (68, 64, 59, 52), (69, 64, 61, 45)]
    voices = four_voices(*chords, lengths=[1, 1, 1, 2])
    assert cadence(voices, A_MINOR.tonic) == "authentic"
    ending = piece_ending(voices, A_MINOR, Q)
    assert ending["bass_on_tonic"] and ending["tune_on_tonic"] and ending["final_chord_quarters"] == 2


def test_piece_ending_reads_the_tonic_the_held_chord_and_the_fermatas():
    voices = four_voices(ONE, FIVE, ONE, FOUR, FIVE, ONE, lengths=[1, 1, 2, 1, 1, 1])
    ending = piece_ending(voices, C_MAJOR, Q, fermatas=[2 * Q, 6 * Q, 99 * Q])  # the last two: the end, past it
    assert ending["cadence"] == "authentic"
    assert ending["fermata_cadences"] == {"authentic": 1, "half": 0, "plagal": 0, "deceptive": 0, "other": 0}
    assert ending["final_chord_quarters"] == 1 and ending["final_chord_held"]
    # a chord struck again in its last eighth is not held
    voices[1] = np.concatenate([voices[1][:-1], [[6 * Q, 6 * Q + 2, 67], [6 * Q + 2, 7 * Q, 64]]])
    assert piece_ending(voices, C_MAJOR, Q)["final_chord_quarters"] == 0.5
    assert not piece_ending(voices, C_MAJOR, Q)["final_chord_held"]
    # the tune ends on the third: not on the tonic, though the bass is
    voices[0][-1, 2] = 76
    assert not piece_ending(voices, C_MAJOR, Q)["tune_on_tonic"]
    assert piece_ending(voices, C_MAJOR, Q)["bass_on_tonic"]


def test_silence_and_a_missing_bass_end_as_other():
    silent = [np.zeros((0, 3), dtype=np.int64)] * 4
    assert piece_ending(silent, C_MAJOR, Q)["cadence"] == "other"
    assert voices_key(silent, Q) == C_MAJOR
    no_bass = four_voices(ONE, FIVE, ONE)
    no_bass[3] = np.zeros((0, 3), dtype=np.int64)
    ending = piece_ending(no_bass, C_MAJOR, Q)
    assert ending["cadence"] == "other" and not ending["bass_on_tonic"] and ending["tune_on_tonic"]


def test_the_key_is_heard_from_the_four_voices_and_the_summary_counts_shares():
    voices = four_voices(ONE, FOUR, FIVE, ONE, SIX, FOUR, FIVE7, ONE)
    assert voices_key(voices, Q) == C_MAJOR
    endings = [piece_ending(voices, C_MAJOR, Q, [3 * Q]), piece_ending(four_voices(ONE, FOUR, FIVE), C_MAJOR, Q)]
    summary = summarize_endings(endings)
    assert summary["final_authentic"] == 0.5 and summary["final_half"] == 0.5
    assert summary["bass_on_tonic"] == 0.5 and summary["fermatas"] == 1 and summary["fermatas_authentic"] == 1
