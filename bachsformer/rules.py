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
from bachsformer.voices import SILENCE, VOICE_NAMES, Voices
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
    return {name: int(count[0]) for name, count in count_rules_batch(np.asarray(voice_lines)[None]).items()}


def count_rules_batch(voice_lines: np.ndarray, hidden_by_step: bool = True) -> dict:
    """`count_rules` for many pieces at once: lines int [M, V, E] (-1 silent) -> each rule's counts, int [M].

    hidden_by_step False leaves out the hidden fifths and octaves that the upper voice reaches by step,
    as the textbook rule does (the V-I of a cadence, Soprano 2-1 over a Bass rising a fourth, has one).
    """
    counts = {name: np.zeros(len(voice_lines), dtype=np.int64) for name in RULE_NAMES}
    num_voices = voice_lines.shape[1]
    for upper in range(num_voices):
        for lower in range(upper + 1, num_voices):
            high, low = voice_lines[:, upper], voice_lines[:, lower]  # [M, E]
            both = (high >= 0) & (low >= 0)
            pair = both[:, 1:] & both[:, :-1]
            interval = (high - low) % 12
            similar = pair & (np.sign(np.diff(high, axis=1)) * np.sign(np.diff(low, axis=1)) > 0)
            hidden = similar if hidden_by_step else similar & (np.abs(np.diff(high, axis=1)) > 2)
            for name, perfect in (("fifths", FIFTH), ("octaves", OCTAVE)):
                arrive = interval[:, 1:] == perfect
                counts[f"parallel_{name}"] += (similar & arrive & (interval[:, :-1] == perfect)).sum(axis=1)
                counts[f"hidden_{name}"] += (hidden & arrive & (interval[:, :-1] != perfect)).sum(axis=1)
            counts["crossings"] += (both & (low > high)).sum(axis=1)
            if num_voices == 4 and upper < 2 and lower == upper + 1:
                counts["spacing"] += (both & (high - low > 12)).sum(axis=1)
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


def voice_figures(pieces: list[Voices]) -> dict:
    """The four-part figures of pieces of four voices (S, A, T, B), over all of them (docs/design.md, Voices).

    - parallels: parallel fifths and octaves between all six pairs of voices, per 100 quarters;
    - crossings: eighths where a lower voice sounds above a higher one, per 100 quarters;
    - inner_rests: of the sixteenth steps where Soprano and Bass sound, the share where Alto or Tenor rests;
    - unisons: of the sixteenth steps where all four sound, the share where two neighbouring voices share a key;
    - leaps: each voice's mean interval between successive notes, in semitones;
    - notes_per_quarter: notes of all voices per quarter.
    """
    counts = dict.fromkeys(RULE_NAMES, 0)
    quarters = notes = outer_steps = inner_rest_steps = four_steps = unison_steps = 0
    intervals: list[list[np.ndarray]] = [[] for _ in range(4)]
    for voices in pieces:
        keys, _ = voices.lines()  # [Q, 4, S]
        flat = keys.transpose(1, 0, 2).reshape(voices.num_voices, -1)  # [4, T]
        pitches = np.where(flat == SILENCE, -1, flat + LOWEST_PITCH)
        for name, count in count_rules(pitches[:, :: voices.steps_per_quarter // EIGHTHS_PER_QUARTER]).items():
            counts[name] += count
        sixteenths = pitches[:, :: voices.steps_per_quarter // 4] >= 0  # [4, T / 8]
        outer = sixteenths[0] & sixteenths[3]
        outer_steps += int(outer.sum())
        inner_rest_steps += int((outer & ~(sixteenths[1] & sixteenths[2])).sum())
        all_four = sixteenths.all(axis=0)
        same = (pitches[:-1, :: voices.steps_per_quarter // 4] == pitches[1:, :: voices.steps_per_quarter // 4]).any(
            axis=0
        )
        four_steps += int(all_four.sum())
        unison_steps += int((all_four & same).sum())
        for voice, voice_notes in enumerate(voices.notes):
            intervals[voice].append(np.abs(np.diff(voice_notes[:, 2])))
        quarters += voices.num_quarters
        notes += sum(len(voice_notes) for voice_notes in voices.notes)
    per_hundred = 100.0 / max(quarters, 1)
    leaps = [np.concatenate(parts) if parts else np.zeros(0) for parts in intervals]
    return {
        "parallels": (counts["parallel_fifths"] + counts["parallel_octaves"]) * per_hundred,
        "parallel_fifths": counts["parallel_fifths"] * per_hundred,
        "parallel_octaves": counts["parallel_octaves"] * per_hundred,
        "crossings": counts["crossings"] * per_hundred,
        "inner_rests": inner_rest_steps / max(outer_steps, 1),
        "unisons": unison_steps / max(four_steps, 1),
        "leaps": {name: float(leap.mean()) if len(leap) else 0.0 for name, leap in zip(VOICE_NAMES, leaps)},
        "notes_per_quarter": notes / max(quarters, 1),
        "quarters": quarters,
    }
