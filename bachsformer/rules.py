"""The rules of four-part writing, counted between the voices of a chorale (docs/design.md, Four-part rules).

Voices are read as lines: the pitch each sounds at every eighth note (the step an eighth starts on;
-1 where it is silent). Between every pair of voices, upper over lower, at successive eighths where
both sound and at least one moves:
- parallel fifths / octaves: both move the same way and the interval (modulo the octave) is a fifth
  both times, or an octave or unison both times;
- hidden fifths / octaves: both move the same way into a fifth or octave from another interval;
- crossing: an eighth where the lower voice sounds above the upper one;
- spacing: an eighth where Soprano and Alto, or Alto and Tenor, lie more than an octave apart;
- out of range: notes of a voice outside its range (`voicing.VOICE_RANGES`).
`bass_leap` is the mean interval between successive Bass notes.
"""

from __future__ import annotations

import numpy as np

from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, quarters_to_notes
from bachsformer.voicing import VOICE_RANGES

EIGHTHS_PER_QUARTER = 2
FIFTH, OCTAVE = 7, 0  # interval classes
RULE_NAMES = (
    "parallel_fifths",
    "parallel_octaves",
    "hidden_fifths",
    "hidden_octaves",
    "crossings",
    "spacing",
    "out_of_range",
)


def lines(voice_rolls: list[np.ndarray]) -> np.ndarray:
    """Four voices' rolls [Q, 88, S] (S, A, T, B) as their highest key's MIDI pitch at every eighth: int [4, E]."""
    result = []
    for quarters in voice_rolls:
        quarters = np.asarray(quarters, dtype=bool)
        steps = quarters.shape[2]
        roll = quarters.transpose(1, 0, 2).reshape(NUM_KEYS, -1)[:, :: steps // EIGHTHS_PER_QUARTER]  # [88, E]
        top = NUM_KEYS - 1 - np.argmax(roll[::-1], axis=0)
        result.append(np.where(roll.any(axis=0), top + LOWEST_PITCH, -1))
    return np.array(result)


def count_rules(voice_lines: np.ndarray) -> dict:
    """Counts of the module's rules in lines int [V, E] (-1 silent), highest voice first; out_of_range is left
    to `range_faults`, and spacing is counted for four voices (S, A, T, B) only."""
    counts = dict.fromkeys(RULE_NAMES, 0)
    num_voices = len(voice_lines)
    for upper in range(num_voices):
        for lower in range(upper + 1, num_voices):
            high, low = voice_lines[upper], voice_lines[lower]
            both = (high >= 0) & (low >= 0)
            pair = both[1:] & both[:-1]
            interval = (high - low) % 12
            similar = pair & (np.sign(np.diff(high)) * np.sign(np.diff(low)) > 0)  # both move, the same way
            for name, perfect in (("fifths", FIFTH), ("octaves", OCTAVE)):
                arrive = similar & (interval[1:] == perfect)
                counts[f"parallel_{name}"] += int((arrive & (interval[:-1] == perfect)).sum())
                counts[f"hidden_{name}"] += int((arrive & (interval[:-1] != perfect)).sum())
            counts["crossings"] += int((both & (low > high)).sum())
            if num_voices == 4 and upper < 2 and lower == upper + 1:
                counts["spacing"] += int((both & (high - low > 12)).sum())
    return counts


def range_faults(voice_rolls: list[np.ndarray]) -> int:
    """Notes of the four voices' rolls (S, A, T, B) outside their voice's range."""
    faults = 0
    for quarters, (low, high) in zip(voice_rolls, VOICE_RANGES):
        pitches = quarters_to_notes(quarters)[:, 2]
        faults += int(((pitches < low) | (pitches > high)).sum())
    return faults


def bass_leap(bass_roll: np.ndarray) -> float:
    """Mean absolute interval (semitones) between successive notes of a Bass roll [Q, 88, S]; 0 with fewer than two."""
    pitches = quarters_to_notes(bass_roll)
    if len(pitches) < 2:
        return 0.0
    order = np.lexsort((-pitches[:, 2], pitches[:, 0]))  # in time; of two at once the higher first
    return float(np.abs(np.diff(pitches[order, 2])).mean())


def four_part_scores(voice_rolls: list[np.ndarray]) -> dict:
    """The rule counts of one chorale's four voice rolls [Q, 88, S] (S, A, T, B), with its eighths and notes."""
    voice_lines = lines(voice_rolls)
    return {
        **count_rules(voice_lines),
        "out_of_range": range_faults(voice_rolls),
        "eighths": int(voice_lines.shape[1]),
        "notes": int(sum(len(quarters_to_notes(quarters)) for quarters in voice_rolls)),
    }
