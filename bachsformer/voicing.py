"""Four voices from a roll: Soprano, Alto, Tenor and Bass, each one line on a grid (docs/design.md, Voicing).

`voice(quarters, grid_steps, melody)` is a pure function run after decoding. The roll is read on a
grid of `grid_steps` steps (8: sixteenth notes at 32 steps per quarter):
- A key sounds in a grid cell when it sounds for at least half of the cell's steps, so a fragment
  shorter than half a cell disappears into its neighbours and a longer one fills its cell; a key
  is struck in a cell when a note of it starts nearest that cell's start, or when it did not sound
  in the cell before.
- Each cell's keys go to the voices, which never cross (S >= A >= T >= B); the highest key is the
  Soprano's and the lowest the Bass's. With four keys or fewer every key is kept; a voice left over
  rests or doubles another (a unison: the two voices share the key, which sounds once). With more
  than four, the inner voices take the two keys between the outer ones that, over the whole piece (a
  Viterbi path), cost least: semitones moved by every voice, parallel fifths or octaves between
  two voices (or a voice and the melody), a pitch class of the chord left out, a held note passed
  from one voice to another, a voice outside its range, upper voices more than an octave apart, a
  voice resting or doubling. A voice's rest shorter than a quarter is then held over by the note
  before it, where that keeps the voices from crossing (Bach's voices almost never rest so briefly).
- A harmonization's melody is the Soprano, note for note as given (its repeated notes keep their
  full length); the three lower voices are voiced below it, from the keys that stay clear of it.
Every output note is a key that sounded in its cells in the input, but for the rests held over;
nothing else is added.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np

from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, quarters_to_notes
from bachsformer.voices import Voices, restore_repeats

# MIDI pitches: the 1st to the 99th percentile of each voice's notes in the chorales of data/midi
# (python -m benchmarks.voice_ranges)
VOICE_RANGES = ((62, 78), (57, 72), (52, 67), (40, 60))
NOTE_VALUES = (4, 8, 16, 32)  # generate.grid: quarter, eighth, sixteenth or 32nd notes

# Costs of the assignment, in semitones of movement
RANGE_COST = 1.0  # per semitone a voice sounds outside its range
SPACING_COST = 0.5  # per semitone two upper neighbours (S-A, A-T) lie more than an octave apart
DROPPED_CLASS_COST = 6.0  # a pitch class of the chord that no voice keeps
DROPPED_KEY_COST = 1.0  # a key left out whose pitch class another voice keeps
REST_COST = 2.0  # a voice silent in a cell where keys sound
DOUBLE_COST = 3.0  # a voice on the key of another
HOLD_BREAK_COST = 6.0  # a voice leaves a key that is held on (not struck again)
HOLD_TAKE_COST = 3.0  # a voice takes over a key held on from another voice
PARALLEL_COST = 6.0  # two voices (or a voice and the melody) move in parallel fifths or octaves


def grid_steps(note_value: int, steps_per_quarter: int) -> int:
    """Steps of one grid cell: note value 16 (a sixteenth) at 32 steps per quarter is 8."""
    if note_value not in NOTE_VALUES:
        raise ValueError(f"grid: must be one of {', '.join(map(str, NOTE_VALUES))} (a note value), got {note_value}")
    return steps_per_quarter * 4 // note_value


def _cells(roll: np.ndarray, notes: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """What sounds and what is struck in each grid cell of roll [88, T]: two bool [88, C]."""
    cells = roll.shape[1] // grid
    sounding = roll.reshape(NUM_KEYS, cells, grid).sum(axis=2) * 2 >= grid  # [88, C]
    struck = np.zeros_like(sounding)
    onset_cells = np.minimum((2 * notes[:, 0] + grid) // (2 * grid), cells - 1)  # the nearest cell start
    struck[notes[:, 2] - LOWEST_PITCH, onset_cells] = True
    struck[:, 1:] |= ~sounding[:, :-1]
    struck[:, 0] = True
    return sounding, struck & sounding


@cache
def _patterns(num_keys: int, num_voices: int, keep_outer: bool) -> np.ndarray:
    """Ways num_voices voices take num_keys keys (0 the highest): int [M, num_voices], -1 a rest.

    Voices never cross, and the lowest key is the last voice's (the Bass); keep_outer (the voices
    include the Soprano): the highest key is the first voice's. With num_keys <= num_voices every key
    is taken, a voice left over resting or doubling; with more keys each voice takes a key of its own.
    """
    if num_keys == 0:
        return np.full((1, num_voices), -1)
    if num_keys > num_voices:
        inner = range(1, num_keys - 1) if keep_outer else range(num_keys - 1)
        chosen = num_voices - 2 if keep_outer else num_voices - 1
        rows = [
            (0, *middle, num_keys - 1) if keep_outer else (*middle, num_keys - 1)
            for middle in itertools.combinations(inner, chosen)
        ]
        return np.array(rows).reshape(-1, num_voices)
    rows = []
    for row in itertools.product(range(-1, num_keys), repeat=num_voices):
        taken = [key for key in row if key >= 0]
        # the highest key is the Soprano's, the lowest the Bass's (when there are two or more)
        outer = (row[0] == 0 and (num_keys == 1 or row[-1] == num_keys - 1)) if keep_outer else row[-1] == num_keys - 1
        if taken == sorted(taken) and set(taken) == set(range(num_keys)) and outer:
            rows.append(row)
    return np.array(rows)


def _unary_costs(states: np.ndarray, voices: tuple[int, ...], above: int | None) -> np.ndarray:
    """Costs of each state [M, V] (MIDI pitches, -1 rests) of a cell on its own: float [M]."""
    sounds = states >= 0
    cost = np.zeros(len(states))
    for column, voice in enumerate(voices):
        low, high = VOICE_RANGES[voice]
        pitch = states[:, column]
        cost += RANGE_COST * np.where(sounds[:, column], np.maximum(low - pitch, 0) + np.maximum(pitch - high, 0), 0)
    cost += REST_COST * (~sounds).sum(axis=1)
    ordered = np.sort(states, axis=1)
    doubled = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)  # voices sharing a key
    cost += DOUBLE_COST * doubled.sum(axis=1)
    # upper neighbours (the melody and the Alto; Soprano-Alto and Alto-Tenor) at most an octave apart
    columns = [states[:, n] for n in range(states.shape[1])]
    uppers = [(above, columns[0])] if above is not None else []
    uppers += [(columns[n], columns[n + 1]) for n, voice in enumerate(voices[:-1]) if voice < 2]
    for upper, lower in uppers:
        upper = np.full(len(states), upper) if np.isscalar(upper) else upper
        both = (upper >= 0) & (lower >= 0)
        cost += SPACING_COST * np.where(both, np.maximum(upper - lower - 12, 0), 0)
    return cost


def _chord_costs(states: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Costs of the keys [n] a state [M, V] leaves out: float [M]."""
    if len(keys) <= states.shape[1]:
        return np.zeros(len(states))
    kept = np.zeros((len(states), 12), dtype=bool)
    for column in range(states.shape[1]):
        kept[np.arange(len(states)), states[:, column] % 12] = True
    classes = np.zeros((len(states), 12), dtype=bool)
    classes[:, np.unique(keys % 12)] = True
    lost_classes = (classes & ~kept).sum(axis=1)
    return DROPPED_CLASS_COST * lost_classes + DROPPED_KEY_COST * (len(keys) - states.shape[1])


@cache
def _pairs(num_voices: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of voices, upper over lower: two int arrays [pairs]."""
    return np.triu_indices(num_voices, 1)


def _parallels(before: np.ndarray, now: np.ndarray, melody_before: int | None, melody_now: int | None) -> np.ndarray:
    """Parallel fifths and octaves between every pair of voices from states before [Ma, 1, V] to now [1, Mb, V]
    (MIDI pitches, -1 a rest), the melody over them included when given: int [Ma, Mb]."""
    if melody_before is not None:
        before = np.concatenate([np.full((*before.shape[:2], 1), melody_before), before], axis=2)
        now = np.concatenate([np.full((*now.shape[:2], 1), melody_now), now], axis=2)
    upper, lower = _pairs(before.shape[2])
    high_before, low_before = before[..., upper], before[..., lower]  # [Ma, 1, pairs]
    high_now, low_now = now[..., upper], now[..., lower]  # [1, Mb, pairs]
    sounding = (high_before >= 0) & (low_before >= 0) & (high_now >= 0) & (low_now >= 0)
    interval_before, interval_now = (high_before - low_before) % 12, (high_now - low_now) % 12
    similar = np.sign(high_now - high_before) * np.sign(low_now - low_before) > 0
    perfect = (interval_before == interval_now) & ((interval_now == 0) | (interval_now == 7))
    return (sounding & similar & perfect).sum(axis=2)


def _assign(sounding: np.ndarray, struck: np.ndarray, allowed: np.ndarray, voices: tuple, above: np.ndarray | None):
    """The Viterbi path of voice states through the cells: int [C, V] of MIDI pitches, -1 a rest.

    sounding, struck: bool [88, C]; allowed: bool [88, C], the keys the voices may take; above: int [C],
    the melody's pitch over the voices (-1: none), or None when the voices include the Soprano.
    """
    cells = sounding.shape[1]
    held = np.zeros((NUM_KEYS + 1, cells), dtype=bool)  # row 88: a rest, never held
    held[:NUM_KEYS, 1:] = sounding[:, :-1] & sounding[:, 1:] & ~struck[:, 1:]
    paths, totals, previous, above_before = [], None, None, None
    for cell in range(cells):
        keys = np.nonzero(sounding[:, cell] & allowed[:, cell])[0][::-1] + LOWEST_PITCH  # highest first
        pattern = _patterns(len(keys), len(voices), above is None)
        states = np.where(pattern >= 0, np.append(keys, -1)[pattern], -1)  # [M, V] pitches
        cost = _unary_costs(states, voices, None if above is None else int(above[cell]))
        cost += _chord_costs(states, keys)
        if previous is None:
            totals, back = cost, np.zeros(len(states), dtype=np.int64)
        else:
            before, now = previous[:, None, :], states[None, :, :]  # [Ma, 1, V], [1, Mb, V]
            both = (before >= 0) & (now >= 0)
            moved = np.where(both, np.abs(before - now), 0).sum(axis=2)
            changed = before != now
            rows_before = np.where(before >= 0, before - LOWEST_PITCH, NUM_KEYS)
            rows_now = np.where(now >= 0, now - LOWEST_PITCH, NUM_KEYS)
            left = (changed & held[rows_before, cell]).sum(axis=2)
            taken = (changed & held[rows_now, cell]).sum(axis=2)
            step = totals[:, None] + moved + HOLD_BREAK_COST * left + HOLD_TAKE_COST * taken  # [Ma, Mb]
            step += PARALLEL_COST * _parallels(before, now, above_before, None if above is None else above[cell])
            back = step.argmin(axis=0)
            totals = step[back, np.arange(len(states))] + cost
        paths.append((states, back))
        previous = states
        above_before = None if above is None else above[cell]
    chosen = np.empty((cells, len(voices)), dtype=np.int64)
    index = int(np.argmin(totals))
    for cell in range(cells - 1, -1, -1):
        states, back = paths[cell]
        chosen[cell] = states[index]
        index = int(back[index])
    return chosen


def _hold_over_short_rests(chosen: np.ndarray, allowed: np.ndarray, longest: int, above: np.ndarray | None) -> None:
    """Fill, in place, every rest of a voice in chosen [C, V] (MIDI pitches, -1 a rest) shorter than `longest`
    cells between two of its notes with the note before it, where that key is allowed [88, C] and stays
    between the voices around it (and under the melody `above` [C])."""
    cells, num_voices = chosen.shape
    for column in range(num_voices):
        cell = 1
        while cell < cells:
            if chosen[cell, column] >= 0 or chosen[cell - 1, column] < 0:
                cell += 1
                continue
            end = cell
            while end < cells and chosen[end, column] < 0:
                end += 1
            pitch = chosen[cell - 1, column]
            span = slice(cell, end)
            higher = chosen[span, :column] if above is None else np.column_stack([above[span], chosen[span, :column]])
            lower = chosen[span, column + 1 :]
            fits = (
                end < cells
                and end - cell < longest
                and allowed[pitch - LOWEST_PITCH, span].all()
                and ((higher < 0) | (higher >= pitch)).all()
                and ((lower < 0) | (lower <= pitch)).all()
            )
            if fits:
                chosen[span, column] = pitch
            cell = end


def _voice_notes(pitches: np.ndarray, struck: np.ndarray, grid: int) -> np.ndarray:
    """One voice's pitch per cell [C] (-1 a rest) as notes [N, 3]: a new note where the pitch changes or is struck."""
    notes = []
    for cell, pitch in enumerate(pitches.tolist()):
        if pitch < 0:
            continue
        if notes and notes[-1][1] == cell * grid and notes[-1][2] == pitch and not struck[pitch - LOWEST_PITCH, cell]:
            notes[-1][1] += grid
        else:
            notes.append([cell * grid, (cell + 1) * grid, pitch])
    return np.array(notes, dtype=np.int64).reshape(-1, 3)


def voice(quarters: np.ndarray, grid: int = 8, melody: np.ndarray | None = None) -> Voices:
    """Quarters [Q, 88, S] as four voices S, A, T, B on a grid of `grid` steps (see the module doc).

    melody: quarters [Q, 88, S] inside `quarters`, one line of notes: the Soprano, kept exactly.
    """
    quarters = np.asarray(quarters, dtype=bool)
    num_quarters, _, steps = quarters.shape
    if grid < 1 or steps % grid:
        raise ValueError(f"a grid of {grid} steps does not divide a quarter of {steps} steps")
    roll = quarters.transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, T]
    allowed = np.ones((NUM_KEYS, roll.shape[1] // grid), dtype=bool)
    if melody is None:
        notes = quarters_to_notes(quarters)
        sounding, struck = _cells(roll, notes, grid)
        chosen = _assign(sounding, struck, allowed, (0, 1, 2, 3), None)
        _hold_over_short_rests(chosen, allowed, steps // grid, None)
        return Voices(tuple(_voice_notes(chosen[:, v], struck, grid) for v in range(4)), num_quarters, steps)
    melody = np.asarray(melody, dtype=bool)
    melody_roll = melody.transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, T]
    below = roll & ~melody_roll
    notes = quarters_to_notes(below.reshape(NUM_KEYS, num_quarters, steps).transpose(1, 0, 2))
    sounding, struck = _cells(below, notes, grid)
    # the lower voices stay below every melody key sounding in their cell or a step either side of it
    melody_keys = np.where(melody_roll.any(axis=0), np.argmax(melody_roll, axis=0), NUM_KEYS)  # [T]
    near = np.minimum(melody_keys, np.minimum(np.roll(melody_keys, 1), np.roll(melody_keys, -1)))
    near[0], near[-1] = min(melody_keys[:2]), min(melody_keys[-2:])
    lowest_melody = near.reshape(-1, grid).min(axis=1)  # [C]
    allowed = np.arange(NUM_KEYS)[:, None] < lowest_melody[None, :]
    top = melody_roll.reshape(NUM_KEYS, -1, grid)[:, :, 0]  # the melody at each cell's start [88, C]
    above = np.where(top.any(axis=0), np.argmax(top, axis=0) + LOWEST_PITCH, -1)
    chosen = _assign(sounding, struck, allowed, (1, 2, 3), above)
    _hold_over_short_rests(chosen, allowed, steps // grid, above)
    soprano = restore_repeats(quarters_to_notes(melody))
    lower = tuple(_voice_notes(chosen[:, v], struck, grid) for v in range(3))
    return Voices((soprano, *lower), num_quarters, steps)
