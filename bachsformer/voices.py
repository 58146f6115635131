"""The voice data: music as four lines, Soprano, Alto, Tenor and Bass (docs/design.md, Voices).

A voice is a line of notes on the grid of midi.py, never two at once. It is kept two ways:
- `Voices.notes`: per voice int64 [N, 3] of (onset step, offset step, MIDI pitch), in time;
- lines, what the VQ-VAE reads and writes: `keys` int64 [Q, V, S] (the key 0 ... 87 sounding at each
  step, SILENCE where the voice rests) and `onsets` bool [Q, V, S] (a note of the voice starts
  there). A held note is a run of one key without onsets, across quarter boundaries too; a
  repeated note is a second onset on the same key.
Two voices on one key stay two voices; the roll of midi.py is their union (`Voices.quarters`).

`read_voices` gives a file's voices: from its parts where it has one monophonic part per voice
(named Soprano, Alto, Tenor, Bass, or else ordered by mean pitch), otherwise split by the voicing
rule (voicing.py), so any MIDI folder trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bachsformer.midi import (
    DEFAULT_MAX_QUARTERS,
    LOWEST_PITCH,
    NUM_KEYS,
    STEPS_PER_QUARTER,
    Piece,
    file_bytes,
    notes_to_roll,
    quarters_to_notes,
    read_midi_bytes,
    read_midi_tracks_bytes,
)

VOICE_NAMES = ("Soprano", "Alto", "Tenor", "Bass")
SILENCE = NUM_KEYS  # the key of a resting voice in lines
MAX_CHORD_SHARE = 0.02  # a part with two keys at once on more of its sounding steps is not one voice
READ_FROM_PARTS, READ_BY_RULE = "parts", "voicing rule"


@dataclass(frozen=True)
class Voices:
    """Voices, highest first: each int64 [N, 3] of (onset step, offset step, MIDI pitch), in time, never two at
    once; `num_quarters` quarters of `steps_per_quarter` steps."""

    notes: tuple[np.ndarray, ...]
    num_quarters: int
    steps_per_quarter: int

    @property
    def num_voices(self) -> int:
        return len(self.notes)

    def quarters(self) -> np.ndarray:
        """All voices as one roll, bool [Q, 88, steps], as a MIDI file of them reads back."""
        return notes_to_roll(np.concatenate(self.notes), self.num_quarters, self.steps_per_quarter)

    def voice_quarters(self, voice: int) -> np.ndarray:
        """One voice (0 the highest) as a roll, bool [Q, 88, steps]."""
        return notes_to_roll(self.notes[voice], self.num_quarters, self.steps_per_quarter)

    def lines(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys int64 [Q, V, S], SILENCE where a voice rests; onsets bool [Q, V, S]): see the module doc."""
        length = self.num_quarters * self.steps_per_quarter
        keys = np.full((self.num_voices, length), SILENCE, dtype=np.int64)
        onsets = np.zeros((self.num_voices, length), dtype=bool)
        for voice, notes in enumerate(self.notes):
            for onset, offset, pitch in notes.tolist():  # in time: a note overlapping the one before cuts it
                if onset < length:
                    keys[voice, onset : min(offset, length)] = pitch - LOWEST_PITCH
                    onsets[voice, onset] = True
        shape = (self.num_voices, self.num_quarters, self.steps_per_quarter)
        return keys.reshape(shape).transpose(1, 0, 2).copy(), onsets.reshape(shape).transpose(1, 0, 2).copy()

    def transposed(self, semitones: int) -> Voices:
        """The voices moved by `semitones`; the caller keeps them on the 88 keys."""
        moved = tuple(notes + np.array([0, 0, semitones]) for notes in self.notes)
        return Voices(moved, self.num_quarters, self.steps_per_quarter)

    def moved(self, rows: np.ndarray) -> Voices:
        """The voices with each key k moved to rows[k] (int [88], -1: the note is dropped), as `keys.key_move` gives."""
        parts = []
        for notes in self.notes:
            target = rows[notes[:, 2] - LOWEST_PITCH]
            kept = notes[target >= 0].copy()
            kept[:, 2] = target[target >= 0] + LOWEST_PITCH
            parts.append(kept)
        return Voices(tuple(parts), self.num_quarters, self.steps_per_quarter)

    def sliced(self, first: int, last: int) -> Voices:
        """Quarters first ... last - 1 (0-based) as voices of their own: notes across an edge are cut there."""
        start, end = first * self.steps_per_quarter, last * self.steps_per_quarter
        parts = []
        for notes in self.notes:
            inside = notes[(notes[:, 1] > start) & (notes[:, 0] < end)].copy()
            inside[:, :2] = np.clip(inside[:, :2], start, end) - start
            parts.append(inside)
        return Voices(tuple(parts), last - first, self.steps_per_quarter)

    def without_short_notes(self, min_steps: int) -> Voices:
        """The voices without notes shorter than `min_steps` (the decoder's fragments): a fragment that
        follows a note of its voice directly lengthens that note, any other is a rest."""
        parts = []
        for notes in self.notes:
            kept: list[list[int]] = []
            for onset, offset, pitch in notes.tolist():
                if offset - onset >= min_steps:
                    kept.append([onset, offset, pitch])
                elif kept and kept[-1][1] == onset:
                    kept[-1][1] = offset
            parts.append(np.array(kept, dtype=np.int64).reshape(-1, 3))
        return Voices(tuple(parts), self.num_quarters, self.steps_per_quarter)


def concatenate(pieces: list[Voices]) -> Voices:
    """Voices of consecutive passages as one piece (all with the same voices and steps)."""
    steps = pieces[0].steps_per_quarter
    parts, start = [[] for _ in pieces[0].notes], 0
    for piece in pieces:
        for voice, notes in enumerate(piece.notes):
            parts[voice].append(notes + np.array([start, start, 0]))
        start += piece.num_quarters * steps
    joined = tuple(np.concatenate(notes).reshape(-1, 3) for notes in parts)
    return Voices(joined, sum(p.num_quarters for p in pieces), steps)


def note_starts(keys: np.ndarray, onsets: np.ndarray, key_before: np.ndarray | None = None) -> np.ndarray:
    """Where notes start in lines keys, onsets [..., T] (one voice's steps in time, last axis): bool [..., T].

    A note starts where the voice sounds and is struck, or sounds another key than the step before.
    key_before [...]: the key of the step before each line's first (default: silence).
    """
    before = np.full(keys.shape[:-1] + (1,), SILENCE) if key_before is None else np.asarray(key_before)[..., None]
    previous = np.concatenate([before, keys[..., :-1]], axis=-1)
    sounding = keys != SILENCE
    return sounding & (onsets | (keys != previous))


def from_lines(keys: np.ndarray, onsets: np.ndarray) -> Voices:
    """Lines keys int [Q, V, S] and onsets bool [Q, V, S] as Voices, the quarters read as one piece in order.

    Each voice's notes are its runs of one key, split where it is struck again.
    """
    keys, onsets = np.asarray(keys), np.asarray(onsets, dtype=bool)
    num_quarters, num_voices, steps = keys.shape
    keys = keys.transpose(1, 0, 2).reshape(num_voices, -1)  # [V, T]
    onsets = onsets.transpose(1, 0, 2).reshape(num_voices, -1)
    starts_all = note_starts(keys, onsets)
    parts = []
    for voice in range(num_voices):
        starts = np.flatnonzero(starts_all[voice])
        breaks = np.flatnonzero(starts_all[voice] | (keys[voice] == SILENCE))
        breaks = np.append(breaks, keys.shape[1])
        ends = breaks[np.searchsorted(breaks, starts, side="right")]
        pitches = keys[voice, starts] + LOWEST_PITCH
        parts.append(np.stack([starts, ends, pitches], axis=1).astype(np.int64).reshape(-1, 3))
    return Voices(tuple(parts), num_quarters, steps)


def restore_repeats(notes: np.ndarray) -> np.ndarray:
    """Notes [N, 3] read from a roll with their repeats whole again: a note that ends one step before the next
    note of its key starts (the codec's mark of a repeat) is given that step back."""
    notes = np.array(notes, dtype=np.int64).reshape(-1, 3)
    order = np.lexsort((notes[:, 0], notes[:, 2]))
    ordered = notes[order]
    repeat = (ordered[1:, 2] == ordered[:-1, 2]) & (ordered[1:, 0] == ordered[:-1, 1] + 1)
    ordered[:-1, 1][repeat] += 1
    notes[order] = ordered
    return notes


def _chord_share(quarters: np.ndarray) -> float:
    """The share of a part's sounding steps where it sounds more than one key: quarters [Q, 88, S]."""
    keys_at = np.asarray(quarters, dtype=bool).sum(axis=1)  # [Q, S]
    sounding = int((keys_at > 0).sum())
    return float((keys_at > 1).sum()) / sounding if sounding else 0.0


def _line_notes(quarters: np.ndarray) -> np.ndarray:
    """A part's roll [Q, 88, S] as one line of notes [N, 3] in time: repeats whole, and where it sounds two keys
    (rare), the note that starts later cuts the one before."""
    notes = restore_repeats(quarters_to_notes(quarters))
    notes = notes[np.lexsort((-notes[:, 2], notes[:, 0]))]
    if len(notes) > 1:
        notes[:-1, 1] = np.minimum(notes[:-1, 1], np.maximum(notes[1:, 0], notes[:-1, 0] + 1))
        first = np.ones(len(notes), dtype=bool)
        first[1:] = notes[1:, 0] != notes[:-1, 0]  # of two notes struck at once, the higher
        notes = notes[first]
    return notes


def voices_from_parts(parts: list[tuple[str, np.ndarray]], num_voices: int = 4) -> Voices | None:
    """Voices from a file's parts (name, roll [Q, 88, S]), or None where its parts are not its voices.

    Parts named as VOICE_NAMES (a chorale's, beside any instruments) are taken by name; otherwise a
    file with exactly `num_voices` parts with notes gives them ordered by mean pitch, highest first.
    Every part taken must be one line: chords on at most MAX_CHORD_SHARE of its sounding steps.
    """
    parts = [(name, quarters) for name, quarters in parts if np.asarray(quarters).any()]
    names = [name.strip().casefold() for name, _ in parts]
    wanted = [name.casefold() for name in VOICE_NAMES]
    if num_voices == len(VOICE_NAMES) and all(names.count(name) == 1 for name in wanted):
        parts = [parts[names.index(name)] for name in wanted]
    elif len(parts) == num_voices:
        mean_pitch = [quarters_to_notes(quarters)[:, 2].mean() for _, quarters in parts]
        parts = [parts[n] for n in np.argsort(mean_pitch, kind="stable")[::-1]]
    else:
        return None
    if any(_chord_share(quarters) > MAX_CHORD_SHARE for _, quarters in parts):
        return None
    num_quarters, _, steps = parts[0][1].shape
    return Voices(tuple(_line_notes(quarters) for _, quarters in parts), num_quarters, steps)


def read_voices(path: str | Path, grid: int = 8, max_quarters: int = DEFAULT_MAX_QUARTERS) -> tuple[Voices, str]:
    """`read_voices_bytes` of the file at `path` (MIDI, or MusicXML read as midi.py reads it); MidiError names it
    when it cannot be read."""
    return read_voices_bytes(file_bytes(path), path, grid, max_quarters)


def read_voices_bytes(
    data: bytes,
    source: str | Path = "<bytes>",
    grid: int = 8,
    max_quarters: int = DEFAULT_MAX_QUARTERS,
) -> tuple[Voices, str]:
    """(the four voices of a MIDI file's bytes, how they were read: READ_FROM_PARTS or READ_BY_RULE).

    grid: steps of the voicing rule's cells, for a file split by it. Raises MidiError naming `source`.
    """
    _, voices, read_as = read_piece_voices(data, source, grid, max_quarters)
    return voices, read_as


def read_piece_voices(
    data: bytes,
    source: str | Path = "<bytes>",
    grid: int = 8,
    max_quarters: int = DEFAULT_MAX_QUARTERS,
) -> tuple[Piece, Voices, str]:
    """`read_voices_bytes` with the file read as a whole beside it (its notes and those dropped), each read once."""
    from bachsformer.voicing import voice  # the rule builds on this module's Voices

    piece = read_midi_bytes(data, source, STEPS_PER_QUARTER, max_quarters)
    tracks = read_midi_tracks_bytes(data, source, STEPS_PER_QUARTER, max_quarters)
    voices = voices_from_parts([(track.name, track.quarters) for track in tracks])
    if voices is not None:
        return piece, voices, READ_FROM_PARTS
    return piece, voice(piece.quarters, grid), READ_BY_RULE
