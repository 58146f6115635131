"""MIDI <-> quarters: the piano-roll codec every other part of bachsformer stands on.

A *quarter* is a binary piano roll of 88 keys (MIDI 21, A0 ... 108, C8) by 32 time steps per
quarter note. Time comes from the file's own ticks, `step = round(tick * 32 / ticks_per_beat)`,
so tempo (and tempo changes) never matter and performed files snap to the grid.

Note rules (docs/design.md): a note covers steps [onset, offset), at least one step; when the
same pitch starts again where (or before) the earlier note ended, the earlier note loses its last
step(s) so the two stay two notes; the roll is the union of what sounds, so a note starting inside
another of the same key (a unison) re-strikes it and the key sounds until the longer ends; drum
tracks are left out; pitches outside the 88 keys are dropped and counted; leading and trailing
silent quarters are trimmed. With these rules any binary roll survives `quarters -> MIDI -> quarters` exactly.

Standard MIDI Files are parsed and written by symusic (the C++ library MidiTok reads MIDI with).
Its notes are paired first in, first out per channel and pitch, and a note never released is left
out, as pretty_midi and miditoolkit do too. What stays here is what the library does not promise:
the header and chunk lengths are checked before parsing, so a truncated file is refused, not read
in part; a refused file's reason is named by `_fault`, a scan of its events that reads no music;
and a file's length is checked against `max_quarters` before its roll is allocated. A file read
from a path may be a MusicXML score (text or .mxl): bachsformer/musicxml.py turns it into MIDI bytes.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import symusic
from symusic.core import NoteTickList

from bachsformer.errors import BachsformerError

STEPS_PER_QUARTER = 32
LOWEST_PITCH = 21  # A0
NUM_KEYS = 88  # A0 ... C8
DEFAULT_MAX_QUARTERS = 20_000  # about three hours at 100 beats per minute
DEFAULT_PROGRAM = 19  # General MIDI church organ: sustained like the voices of a chorale
WRITE_TICKS_PER_BEAT = 480  # divisible by 32, so every step is a whole number of ticks
WRITE_VELOCITY = 80
TUNE_MARKER = "bachsformer tune: "  # a marker naming a harmonization's tune track (`tracks_to_midi_bytes`)
# What symusic's C++ core raises for a file it cannot parse, as its Python binding translates it.
LIBRARY_ERRORS = (RuntimeError, ValueError, IndexError, OverflowError)


class MidiError(BachsformerError, ValueError):
    """A file that cannot be read as music. The message is one line: `<file>: <reason>`."""

    def __init__(self, source: str | Path, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{source}: {reason}")


@dataclass(frozen=True)
class Piece:
    """A MIDI file read as quarters.

    quarters: bool array [Q, 88, 32]; notes: notes kept; dropped_notes: notes outside the 88 keys.
    """

    quarters: np.ndarray
    notes: int
    dropped_notes: int


# --------------------------------------------------------------------------------------------
# What the parser is given: a checked header and every track chunk present


def _track_chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the body of each track chunk, after checking the header and chunk lengths.

    Raises ValueError naming the first fault: not MIDI, an unreadable header, or a file shorter
    than its header and chunk lengths say.
    """
    if len(data) < 14 or data[:4] != b"MThd":
        raise ValueError("not a MIDI file (no MThd header)")
    (header_length,) = struct.unpack(">I", data[4:8])
    if header_length < 6:
        raise ValueError(f"header chunk too short ({header_length} bytes)")
    midi_format, num_tracks, division = struct.unpack(">HHH", data[8:14])
    if midi_format > 2:
        raise ValueError(f"unknown MIDI format {midi_format}")
    if division & 0x8000:
        raise ValueError("SMPTE time division is not supported (no beat grid)")
    if division == 0:
        raise ValueError("time division of 0 ticks per beat")
    tracks: list[tuple[int, int]] = []
    pos = 8 + header_length
    while len(tracks) < num_tracks:
        if pos + 8 > len(data):
            raise ValueError(f"truncated: {len(tracks)} of {num_tracks} tracks present")
        (length,) = struct.unpack(">I", data[pos + 4 : pos + 8])
        start, end = pos + 8, pos + 8 + length
        if end > len(data):
            raise ValueError(f"truncated: track {len(tracks) + 1} claims {length} bytes")
        if data[pos : pos + 4] == b"MTrk":
            tracks.append((start, end))
        pos = end  # unknown chunk types are skipped, as the standard asks
    return tracks


def _parser_input(data: bytes, tracks: list[tuple[int, int]]) -> bytes:
    """The file as the parser is given it: a 6-byte header (the standard allows longer ones; symusic
    does not) and the track chunks the header counts, without other chunks or anything after them."""
    return data[:4] + b"\x00\x00\x00\x06" + data[8:14] + b"".join(data[start - 8 : end] for start, end in tracks)


# --------------------------------------------------------------------------------------------
# Why a file was refused: a scan of its events, run only then, that reads no music


def _read_varlen(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A MIDI variable-length quantity (at most 4 bytes) at `pos`; returns (value, next pos)."""
    value = 0
    for _ in range(4):
        if pos >= end:
            raise ValueError("truncated variable-length number")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos
    raise ValueError("variable-length number longer than 4 bytes")


def _check_events(data: bytes, pos: int, end: int) -> None:
    """Raise ValueError at the first event of the track body data[pos:end] the standard does not allow."""
    status = 0
    while pos < end:
        _, pos = _read_varlen(data, pos, end)
        if pos >= end:
            raise ValueError("truncated event")
        byte = data[pos]
        if byte & 0x80:
            pos += 1
            if byte < 0xF0:
                status = byte  # running status applies to channel messages only
            elif byte == 0xFF:  # meta event: type, length, data
                if pos >= end:
                    raise ValueError("truncated meta event")
                meta_type = data[pos]
                length, pos = _read_varlen(data, pos + 1, end)
                pos += length
                if pos > end:
                    raise ValueError("meta event runs past the end of its track")
                if meta_type == 0x2F:  # end of track
                    return
                continue
            elif byte in (0xF0, 0xF7):  # sysex: length, data
                length, pos = _read_varlen(data, pos, end)
                pos += length
                if pos > end:
                    raise ValueError("sysex event runs past the end of its track")
                status = 0
                continue
            else:
                raise ValueError(f"unexpected status byte 0x{byte:02X} in a track")
        elif status == 0:
            raise ValueError("data byte without a status byte (running status misuse)")
        size = 1 if status & 0xF0 in (0xC0, 0xD0) else 2
        if pos + size > end:
            raise ValueError("truncated channel message")
        if status & 0xF0 in (0x80, 0x90) and (data[pos] > 127 or data[pos + 1] > 127):
            raise ValueError("note data byte above 127")
        pos += size


def _fault(data: bytes, tracks: list[tuple[int, int]]) -> str:
    """`track N: <reason>` for the first event the standard does not allow, or "" when there is none."""
    for number, (start, end) in enumerate(tracks, 1):
        try:
            _check_events(data, start, end)
        except ValueError as error:
            return f"track {number}: {error}"
    return ""


def _library_reason(error: Exception) -> str:
    """symusic's message on one line, without its parser's name and stream suffix."""
    message = " ".join(str(error).split()) or type(error).__name__
    return message.removeprefix("MiniMidi: ").removesuffix(": iostream error")


# --------------------------------------------------------------------------------------------
# Reading


def _parse(data: bytes) -> tuple[int, list[tuple[str, np.ndarray]]]:
    """Parse a Standard MIDI File (type 0, 1 or 2) into its non-drum tracks' notes.

    Returns (ticks_per_beat, [(track name, notes)]) with notes an int64 array [N, 3] of
    (onset tick, offset tick, pitch). symusic splits a track by channel and program; each part
    comes as a track of the same name. Raises ValueError with a one-line reason.
    """
    score, tracks = _parse_score(data)
    return score.ticks_per_quarter, tracks


def _parse_score(data: bytes) -> tuple[symusic.Score, list[tuple[str, np.ndarray]]]:
    """Like `_parse`, but with symusic's whole score (its time signatures and tempos) in place of the resolution."""
    chunks = _track_chunks(data)
    try:
        score = symusic.Score.from_midi(_parser_input(data, chunks))
    except LIBRARY_ERRORS as error:
        raise ValueError(_fault(data, chunks) or _library_reason(error)) from None
    tracks = [(track.name, _track_notes(track)) for track in score.tracks if not track.is_drum]
    if not any(len(notes) for _, notes in tracks):
        fault = _fault(data, chunks)  # an empty reading of a broken file: say what broke
        if fault:
            raise ValueError(fault)
    return score, tracks


def _track_notes(track) -> np.ndarray:
    """A symusic track's notes: int64 [N, 3] of (onset tick, offset tick, pitch)."""
    notes = track.notes.numpy()
    onset, duration = notes["time"], notes["duration"]
    if len(onset) and (onset.min() < 0 or duration.min() < 0):  # symusic counts ticks in 32 bits
        raise ValueError("ticks past 2**31, more than the parser counts")
    table = np.empty((len(onset), 3), dtype=np.int64)
    table[:, 0], table[:, 2] = onset, notes["pitch"]
    table[:, 1] = table[:, 0] + duration
    return table


def parse_midi_bytes(data: bytes) -> tuple[int, np.ndarray]:
    """Parse a Standard MIDI File into (ticks_per_beat, notes) of its non-drum tracks.

    notes: int64 array [N, 3] of (onset tick, offset tick, pitch). Raises ValueError with a one-line reason.
    """
    ticks_per_beat, tracks = _parse(data)
    return ticks_per_beat, _all_notes(tracks)


def _all_notes(tracks: list[tuple[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([np.empty((0, 3), np.int64)] + [notes for _, notes in tracks])


@dataclass(frozen=True)
class _Grid:
    """Notes on the step grid, as (key 0 ... 87, onset step, offset step) arrays, and the keys dropped."""

    key: np.ndarray
    onset: np.ndarray
    offset: np.ndarray
    dropped: int


def _on_grid(notes: np.ndarray, ticks_per_beat: int, steps_per_quarter: int) -> _Grid:
    """Notes [N, 3] in ticks -> steps; pitches outside the 88 keys are dropped and counted."""
    key = notes[:, 2] - LOWEST_PITCH
    in_range = (key >= 0) & (key < NUM_KEYS)
    notes, key = notes[in_range], key[in_range]
    # round(tick * steps / tpb), halves rounded up, in exact integer arithmetic
    onset = (2 * notes[:, 0] * steps_per_quarter + ticks_per_beat) // (2 * ticks_per_beat)
    offset = (2 * notes[:, 1] * steps_per_quarter + ticks_per_beat) // (2 * ticks_per_beat)
    return _Grid(key, onset, np.maximum(offset, onset + 1), int((~in_range).sum()))


def _separate_repeats(key: np.ndarray, onset: np.ndarray, offset: np.ndarray):
    """Notes that do not overlap on one key, whose roll is the union of what sounds.

    One note per (key, onset), the longest. Then per key in time order a note starting where or
    before the key's sound so far ends (a repeated note, or a unison of two voices) re-strikes the
    key: the sound before it ends a step early, leaving the one-step gap a repeat is written with,
    and the new note lasts until the longer of the two ends. So a short note inside a longer one on
    the same key (two voices in unison) never silences the rest of the longer note. Returns the arrays.
    """
    order = np.lexsort((-offset, onset, key))
    key, onset, offset = key[order], onset[order], offset[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = (key[1:] != key[:-1]) | (onset[1:] != onset[:-1])
    key, onset, offset = key[first], onset[first], offset[first]
    # Where the key's sound (every note of the key so far) ends: a running maximum within each key.
    span = int(offset.max()) + 1 if len(offset) else 1
    sound_end = np.maximum.accumulate(offset + key * span) - key * span
    restrike = (key[1:] == key[:-1]) & (onset[1:] <= sound_end[:-1])
    offset = sound_end.copy()
    offset[:-1][restrike] = np.maximum(onset[1:][restrike] - 1, onset[:-1][restrike] + 1)
    return key, onset, offset


def _roll(key: np.ndarray, onset: np.ndarray, offset: np.ndarray, num_quarters: int, steps: int) -> np.ndarray:
    """Quarters [Q, 88, steps] of notes that do not overlap on one key, clipped to Q quarters.

    One slice per note: a file holds a few hundred notes, and filling their steps costs less than
    summing +1/-1 marks over every cell of the roll.
    """
    length = num_quarters * steps
    roll = np.zeros((NUM_KEYS, length), dtype=bool)  # [88, Q * steps]
    for row, start, end in zip(key.tolist(), onset.tolist(), np.minimum(offset, length).tolist()):
        roll[row, start:end] = True
    return np.ascontiguousarray(roll.reshape(NUM_KEYS, num_quarters, steps).transpose(1, 0, 2))


def notes_to_roll(notes: np.ndarray, num_quarters: int, steps_per_quarter: int = STEPS_PER_QUARTER) -> np.ndarray:
    """Quarters [Q, 88, steps] of notes [N, 3] (onset step, offset step, MIDI pitch) under the codec's note rules.

    Notes of several voices may share a key: a unison sounds once, and a note struck while its key
    sounds re-strikes it (the one-step gap), as reading a MIDI file of those notes gives.
    """
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 3)
    key = notes[:, 2] - LOWEST_PITCH
    if ((key < 0) | (key >= NUM_KEYS)).any():
        raise ValueError(f"pitches must lie on the 88 keys (MIDI {LOWEST_PITCH} ... {LOWEST_PITCH + NUM_KEYS - 1})")
    key, onset, offset = _separate_repeats(key, notes[:, 0], np.maximum(notes[:, 1], notes[:, 0] + 1))
    return _roll(key, onset, offset, num_quarters, steps_per_quarter)


def _leading_silence(grid: _Grid, steps_per_quarter: int) -> int:
    """Steps of the whole silent quarters before the first note: what reading trims."""
    return int(grid.onset.min()) // steps_per_quarter * steps_per_quarter


def _length_checked(num_quarters: int, max_quarters: int) -> int:
    if num_quarters > max_quarters:
        raise ValueError(f"{num_quarters} quarters long, over the limit of {max_quarters}")
    return num_quarters


def notes_to_quarters(
    notes: np.ndarray,
    ticks_per_beat: int,
    steps_per_quarter: int = STEPS_PER_QUARTER,
    max_quarters: int = DEFAULT_MAX_QUARTERS,
) -> Piece:
    """Turn notes [N, 3] of (onset tick, offset tick, pitch) into quarters.

    Raises ValueError when no note is left or the music is longer than `max_quarters`.
    """
    grid = _on_grid(notes, ticks_per_beat, steps_per_quarter)
    if len(grid.key) == 0:
        raise ValueError("no notes" + (f" inside the 88 keys ({grid.dropped} outside)" if grid.dropped else ""))
    start = _leading_silence(grid, steps_per_quarter)
    _length_checked((int(grid.offset.max()) - 1) // steps_per_quarter - start // steps_per_quarter + 1, max_quarters)
    key, onset, offset = _separate_repeats(grid.key, grid.onset - start, grid.offset - start)
    num_quarters = (int(offset.max()) - 1) // steps_per_quarter + 1  # a cut may end the music sooner
    quarters = _roll(key, onset, offset, num_quarters, steps_per_quarter)
    return Piece(quarters=quarters, notes=len(grid.key), dropped_notes=grid.dropped)


def file_bytes(path: str | Path) -> bytes:
    """A file's bytes as MIDI: a MusicXML score (text or .mxl) is read by music21, within the bounds of
    bachsformer/musicxml.py, as the page reads an upload (the last few are kept: a file is read several ways)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise MidiError(path, f"cannot read file ({error.strerror or error})") from None
    if data[:4] == b"MThd" or not data:
        return data
    from bachsformer.musicxml import is_musicxml, musicxml_to_midi_bytes  # music21, in a child, only for a score

    if not is_musicxml(data):
        return data
    digest = hashlib.sha256(data).digest()
    if digest not in _SCORES:
        if len(_SCORES) >= 4:
            _SCORES.pop(next(iter(_SCORES)))
        _SCORES[digest] = musicxml_to_midi_bytes(data, str(path))
    return _SCORES[digest]


_SCORES: dict[bytes, bytes] = {}  # MIDI bytes of the scores read last, by the hash of their bytes


def read_midi(
    path: str | Path,
    steps_per_quarter: int = STEPS_PER_QUARTER,
    max_quarters: int = DEFAULT_MAX_QUARTERS,
) -> Piece:
    """Read a MIDI file into quarters [Q, 88, 32]. Raises MidiError naming the file and reason."""
    return read_midi_bytes(file_bytes(path), path, steps_per_quarter, max_quarters)


def read_midi_bytes(
    data: bytes,
    source: str | Path = "<bytes>",
    steps_per_quarter: int = STEPS_PER_QUARTER,
    max_quarters: int = DEFAULT_MAX_QUARTERS,
) -> Piece:
    """Like `read_midi`, for a file's bytes; `source` names it in errors."""
    if not data:
        raise MidiError(source, "empty file")
    try:
        ticks_per_beat, notes = parse_midi_bytes(data)
        return notes_to_quarters(notes, ticks_per_beat, steps_per_quarter, max_quarters)
    except ValueError as error:
        raise MidiError(source, str(error)) from None


class Track(NamedTuple):
    """One track of a MIDI file: its name, its quarters [Q, 88, 32], and its notes outside the 88 keys."""

    name: str
    quarters: np.ndarray
    dropped_notes: int


def read_midi_tracks(
    path: str | Path,
    steps_per_quarter: int = STEPS_PER_QUARTER,
    max_quarters: int = DEFAULT_MAX_QUARTERS,
) -> list[Track]:
    """Each non-drum track of a MIDI file as a `Track`, its quarters on the grid of `read_midi`.

    Every track has the Q quarters of `read_midi(path).quarters` and the same leading silence
    trimmed, so track quarters line up with the whole file's; the note rules apply within each
    track. A chorale gives [("Soprano", ...), ("Alto", ...), ("Tenor", ...), ("Bass", ...)]. Tracks
    without notes (a conductor track) are not listed; a track of notes outside the 88 keys comes
    silent. Raises MidiError as `read_midi` does, for the same files.
    """
    return read_midi_tracks_bytes(file_bytes(path), path, steps_per_quarter, max_quarters)


def read_midi_tracks_bytes(
    data: bytes,
    source: str | Path = "<bytes>",
    steps_per_quarter: int = STEPS_PER_QUARTER,
    max_quarters: int = DEFAULT_MAX_QUARTERS,
) -> list[Track]:
    """Like `read_midi_tracks`, for a file's bytes; `source` names it in errors."""
    if not data:
        raise MidiError(source, "empty file")
    try:
        ticks_per_beat, tracks = _parse(data)
        whole = notes_to_quarters(_all_notes(tracks), ticks_per_beat, steps_per_quarter, max_quarters)
    except ValueError as error:
        raise MidiError(source, str(error)) from None
    grids = [_on_grid(notes, ticks_per_beat, steps_per_quarter) for _, notes in tracks]
    first_onset = min(int(grid.onset.min()) for grid in grids if len(grid.onset))
    start = first_onset // steps_per_quarter * steps_per_quarter  # the whole file's leading silence
    track_quarters = []
    for (name, _), grid in zip(tracks, grids, strict=True):
        key, onset, offset = _separate_repeats(grid.key, grid.onset - start, grid.offset - start)
        quarters = _roll(key, onset, offset, len(whole.quarters), steps_per_quarter)
        track_quarters.append(Track(name, quarters, grid.dropped))
    return track_quarters


# --------------------------------------------------------------------------------------------
# Meter: the time signatures and tempos a file plays with, on the quarters' grid


class TimeSignature(NamedTuple):
    """numerator / denominator from `quarter` on (quarters counted from the music's first quarter)."""

    quarter: float
    numerator: int
    denominator: int

    @property
    def bar(self) -> float:
        """The length of a bar in quarters: 3 for 3/4, 1.5 for 3/8."""
        return self.numerator * 4 / self.denominator


class Tempo(NamedTuple):
    """Beats (quarters) per minute from `quarter` on."""

    quarter: float
    bpm: float


MIDI_DEFAULT_BPM = 120.0  # what a file without a tempo event plays at (and 4/4 without a time signature)
MIN_TEMPO_BPM = 4  # a MIDI tempo is at most 2**24 - 1 microseconds per quarter: 3.58 beats per minute
MAX_TEMPO_BPM = 1000
MAX_DENOMINATOR = 128  # a bar that ends on a step of the grid needs at most a 128th (32 steps per quarter)


@dataclass(frozen=True)
class Meter:
    """The time signatures and tempos of a piece, each sorted by position with the first at quarter 0.

    Positions are in quarters on the codec's grid, counted from the first quarter the piece has once
    read (`read_meter`), so the meter of a file lines up with `read_midi(path).quarters`. lead: whole
    quarters of the first bar before the music's first quarter (a pickup's rests, written as rests),
    so that a piece may start inside a bar of its own time signature (an anacrusis).
    """

    time_signatures: tuple[TimeSignature, ...] = (TimeSignature(0.0, 4, 4),)
    tempos: tuple[Tempo, ...] = (Tempo(0.0, MIDI_DEFAULT_BPM),)
    lead: float = 0.0

    def __post_init__(self):
        for name, events in (("time signatures", self.time_signatures), ("tempos", self.tempos)):
            positions = [event.quarter for event in events]
            if not positions or positions[0] != 0 or positions != sorted(positions):
                raise ValueError(f"{name} must be sorted by position, the first at quarter 0, got {events}")
        if self.lead != int(self.lead) or not 0 <= self.lead < self.time_signatures[0].bar:
            raise ValueError(f"lead must be whole quarters inside the first bar, got {self.lead}")

    @classmethod
    def free(cls, tempo_bpm: float) -> Meter:
        """4/4 at one tempo: the meter of music written from nothing."""
        return cls((TimeSignature(0.0, 4, 4),), (Tempo(0.0, float(tempo_bpm)),))

    def until(self, quarter: float) -> Meter:
        """The meter without the changes from `quarter` on (a primer's tail, past its music)."""
        return Meter(_events_before(self.time_signatures, quarter), _events_before(self.tempos, quarter), self.lead)

    def after(self, quarter: float) -> Meter:
        """The meter from `quarter` on, positions counted from there: the music before it is cut off.

        Cut inside a bar, whole quarters into it, the music starts inside that bar (a pickup: a 3/4 tune
        starting on its last beat has a lead of two quarters' rest); cut elsewhere inside a bar, or where
        the signature changes before the bar ends, the rest of that bar becomes a short bar of its own.
        Either way the bar lines stay where they were.
        """
        if quarter <= 0:
            return self
        tempos = _events_from(self.tempos, quarter)
        signatures = _events_from(self.time_signatures, quarter)
        current = [ts for ts in self.time_signatures if ts.quarter <= quarter][-1]
        first_bar = current.quarter - (self.lead if current == self.time_signatures[0] else 0)
        into_bar = (quarter - first_bar) % current.bar
        if into_bar:
            rest = current.bar - into_bar  # quarters left in the bar that was cut
            following = signatures[1:]
            if into_bar == int(into_bar) and not (following and following[0].quarter < rest):
                return Meter(signatures, tempos, into_bar)
            if following and following[0].quarter <= rest:  # the signature changes before the bar ends
                rest, current = following[0].quarter, None
            pickup = _short_bar(rest, signatures[0].denominator)
            if pickup is not None:
                signatures = (pickup, *((current._replace(quarter=rest),) if current else ()), *following)
        return Meter(signatures, tempos)

    def bars(self, num_quarters: float) -> list[tuple[float, float, TimeSignature]]:
        """(start, end, signature) of every bar starting before `num_quarters`.

        A change of signature starts a bar, ending the one before it early; the last bar ends where a
        full bar would, past `num_quarters` when the music stops inside it.
        """
        bars = []
        for number, signature in enumerate(self.time_signatures):
            following = self.time_signatures[number + 1 : number + 2]
            change = following[0].quarter if following else math.inf
            start = signature.quarter - (self.lead if number == 0 else 0)  # a pickup's bar starts before the music
            while start < min(change, num_quarters):
                bars.append((start, min(start + signature.bar, change), signature))
                start += signature.bar
        return bars

    def bar_lines(self, num_quarters: float) -> list[float]:
        """Where the bars start within [0, num_quarters), and where the last one ends if not after it."""
        bars = self.bars(num_quarters)
        return [start for start, _, _ in bars] + [end for _, end, _ in bars[-1:] if end <= num_quarters]


def _events_before(events: tuple, quarter: float) -> tuple:
    return tuple(event for n, event in enumerate(events) if n == 0 or event.quarter < quarter)


def _events_from(events: tuple, quarter: float) -> tuple:
    """The event in force at `quarter` moved to 0, and the later ones moved back by `quarter`."""
    current = [event for event in events if event.quarter <= quarter][-1]
    later = [event._replace(quarter=event.quarter - quarter) for event in events if event.quarter > quarter]
    return (current._replace(quarter=0.0), *later)


def _short_bar(quarters: float, denominator: int) -> TimeSignature | None:
    """A signature at 0 whose bar lasts `quarters`, in the smallest note value from `denominator` on that
    counts it whole; None when none does within MAX_DENOMINATOR and a numerator of 255."""
    while denominator <= MAX_DENOMINATOR:
        numerator = quarters * denominator / 4
        if numerator == int(numerator):
            return TimeSignature(0.0, int(numerator), denominator) if 1 <= numerator <= 255 else None
        denominator *= 2
    return None


def _in_order(events: list) -> tuple:
    """Events sorted by position (stably: of several at one position the last is kept, as MIDI plays it)."""
    kept: dict[float, tuple] = {}
    for event in sorted(events, key=lambda event: event.quarter):
        kept[event.quarter] = event
    return tuple(kept.values())


def playable_tempos(meter: Meter, source: str | Path) -> tuple[Meter, list[str]]:
    """The meter with every tempo outside MIN_TEMPO_BPM ... MAX_TEMPO_BPM moved to the nearer bound, and a
    warning (one line naming `source`) for each moved. A MIDI file holds tempos of 3.58 to 60 million
    beats per minute; a piece is written, played and engraved within the bounds."""
    tempos, warnings = [], []
    for tempo in meter.tempos:
        bpm = min(max(tempo.bpm, MIN_TEMPO_BPM), MAX_TEMPO_BPM)
        if bpm != tempo.bpm:
            shown = f"{tempo.bpm:.3g}" if tempo.bpm < 1000 else f"{tempo.bpm:,.0f}"
            warnings.append(
                f"{source}: a tempo of {shown} beats per minute (quarter {tempo.quarter:g}) lies outside"
                f" {MIN_TEMPO_BPM} ... {MAX_TEMPO_BPM}; written at {bpm:g}"
            )
        tempos.append(tempo._replace(bpm=float(bpm)))
    return Meter(meter.time_signatures, tuple(tempos), meter.lead), warnings


def read_meter(path: str | Path, steps_per_quarter: int = STEPS_PER_QUARTER) -> Meter:
    """The time signatures and tempos of a MIDI file, on the grid and from the first quarter of `read_midi`.

    A file without them plays in 4/4 at 120 beats per minute, as the standard says; an event before
    the first quarter read (one the leading silence carried) applies from it. Signatures no bar can be
    drawn with (a numerator of 0, a denominator over MAX_DENOMINATOR) and tempos of 0 are left out.
    Raises MidiError as `read_midi` does.
    """
    return read_meter_bytes(file_bytes(path), path, steps_per_quarter)


def read_meter_bytes(data: bytes, source: str | Path = "<bytes>", steps_per_quarter: int = STEPS_PER_QUARTER) -> Meter:
    """Like `read_meter`, for a file's bytes; `source` names it in errors."""
    if not data:
        raise MidiError(source, "empty file")
    try:
        score, tracks = _parse_score(data)
        grid = _on_grid(_all_notes(tracks), score.ticks_per_quarter, steps_per_quarter)
        if len(grid.key) == 0:
            raise ValueError("no notes")
    except ValueError as error:
        raise MidiError(source, str(error)) from None
    ticks_per_beat = score.ticks_per_quarter

    def quarter(tick: int) -> float:  # rounded to the grid as note onsets are
        return (2 * tick * steps_per_quarter + ticks_per_beat) // (2 * ticks_per_beat) / steps_per_quarter

    signatures = [
        TimeSignature(quarter(ts.time), ts.numerator, ts.denominator)
        for ts in score.time_signatures
        if 1 <= ts.numerator <= 255 and ts.denominator in [2**n for n in range(8)]
    ]
    tempos = [Tempo(quarter(tempo.time), 60_000_000 / tempo.mspq) for tempo in score.tempos if tempo.mspq > 0]
    meter = Meter(
        _in_order([TimeSignature(0.0, 4, 4), *signatures]), _in_order([Tempo(0.0, MIDI_DEFAULT_BPM), *tempos])
    )
    return meter.after(_leading_silence(grid, steps_per_quarter) / steps_per_quarter)


# --------------------------------------------------------------------------------------------
# Writing


def quarters_to_notes(quarters: np.ndarray) -> np.ndarray:
    """Notes of a roll: int64 array [N, 3] of (onset step, offset step, pitch), sorted by onset.

    Each maximal run of set steps of one key is one note.
    """
    quarters = np.asarray(quarters, dtype=bool)
    if quarters.ndim != 3 or quarters.shape[1] != NUM_KEYS:
        raise ValueError(f"quarters must have shape [Q, {NUM_KEYS}, steps], got {quarters.shape}")
    roll = quarters.transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, Q * steps]
    padded = np.zeros((NUM_KEYS, roll.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = roll
    change = np.diff(padded, axis=1)  # +1 at onsets, -1 at offsets
    key_on, onset = np.nonzero(change == 1)
    _, offset = np.nonzero(change == -1)  # row-major order pairs each onset with its offset
    notes = np.stack([onset, offset, key_on + LOWEST_PITCH], axis=1).astype(np.int64)
    return notes[np.lexsort((notes[:, 2], notes[:, 0]))]


def quarters_to_midi_bytes(
    quarters: np.ndarray,
    tempo_bpm: float = 100.0,
    program: int = DEFAULT_PROGRAM,
    *,
    meter: Meter | None = None,
    melody: np.ndarray | None = None,
    melody_name: str = "Melody",
) -> bytes:
    """Write quarters [Q, 88, steps] as a MIDI file playing General MIDI `program`.

    meter: the time signatures and tempos to write (those from the end of the music on are left
    out); None: 4/4 at `tempo_bpm`. melody: quarters [Q, 88, steps] inside `quarters`, written as a
    track of its own named `melody_name`, followed by a track "Harmony" holding the rest; None: one
    track, "bachsformer". Reading the file back gives `quarters` when no melody note touches a note
    of its key in the rest.
    """
    quarters = np.asarray(quarters, dtype=bool)
    if melody is None:
        parts = [("bachsformer", quarters)]
    else:
        melody = np.asarray(melody, dtype=bool)
        if melody.shape != quarters.shape or (melody & ~quarters).any():
            raise ValueError("the melody must lie inside the music: quarters of the same shape, no note of its own")
        parts = [(melody_name, melody), ("Harmony", quarters & ~melody)]
    tracks = [(name, quarters_to_notes(part)) for name, part in parts]
    return tracks_to_midi_bytes(tracks, len(quarters), quarters.shape[-1], tempo_bpm, program, meter=meter)


def tracks_to_midi_bytes(
    tracks: list[tuple[str, np.ndarray]],
    num_quarters: int,
    steps_per_quarter: int = STEPS_PER_QUARTER,
    tempo_bpm: float = 100.0,
    program: int = DEFAULT_PROGRAM,
    *,
    meter: Meter | None = None,
    key_signature: tuple[int, bool] | None = None,
    tune_track: str | None = None,
) -> bytes:
    """Write named tracks of notes [N, 3] (onset step, offset step, MIDI pitch) as a MIDI file playing `program`.

    Each note is written as it is given (two tracks may share a key; a repeated note keeps its full
    length). meter: as `quarters_to_midi_bytes` has it, for music of `num_quarters` quarters.
    key_signature: (sharps, or flats as a negative number; minor) at the start. tune_track: the name
    of the track holding a harmonized tune, written as a marker (TUNE_MARKER) that `read_tune_track` reads.
    """
    if not 0 <= program <= 127:
        raise ValueError(f"program must be a General MIDI program 0 ... 127, got {program}")
    if WRITE_TICKS_PER_BEAT % steps_per_quarter:
        raise ValueError(f"{steps_per_quarter} steps per quarter do not divide the MIDI grid")
    meter = Meter.free(tempo_bpm) if meter is None else meter.until(num_quarters)
    for tempo in meter.tempos:
        if not MIN_TEMPO_BPM <= tempo.bpm <= MAX_TEMPO_BPM:
            raise ValueError(
                f"tempo must be within {MIN_TEMPO_BPM} ... {MAX_TEMPO_BPM} beats per minute, got {tempo.bpm:g}"
            )
    score = symusic.Score(WRITE_TICKS_PER_BEAT)
    lead = round(meter.lead * WRITE_TICKS_PER_BEAT)  # a pickup's rests: everything after the first event moves
    for number, tempo in enumerate(meter.tempos):
        tick = round(tempo.quarter * WRITE_TICKS_PER_BEAT) + lead * (number > 0)
        score.tempos.append(symusic.Tempo(tick, mspq=round(60e6 / tempo.bpm)))
    for number, ts in enumerate(meter.time_signatures):
        tick = round(ts.quarter * WRITE_TICKS_PER_BEAT) + lead * (number > 0)
        score.time_signatures.append(symusic.TimeSignature(tick, ts.numerator, ts.denominator))
    if key_signature is not None:
        score.key_signatures.append(symusic.KeySignature(0, key_signature[0], int(key_signature[1])))
    if tune_track is not None:
        score.markers.append(symusic.TextMeta(0, f"{TUNE_MARKER}{tune_track}"))
    ticks_per_step = WRITE_TICKS_PER_BEAT // steps_per_quarter
    for name, notes in tracks:
        notes = np.asarray(notes, dtype=np.int64).reshape(-1, 3)
        track = symusic.Track(name=name, program=program)
        track.notes = NoteTickList.from_numpy(
            (notes[:, 0] * ticks_per_step + lead).astype(np.int32),
            ((notes[:, 1] - notes[:, 0]) * ticks_per_step).astype(np.int32),
            notes[:, 2].astype(np.int8),
            np.full(len(notes), WRITE_VELOCITY, dtype=np.int8),
        )
        score.tracks.append(track)
    return bytes(score.dumps_midi())


def read_tune_track(path: str | Path) -> str | None:
    """The name of the track holding a harmonized tune, as a harmonization's marker names it; None without one."""
    try:
        score = _parse_score(file_bytes(path))[0]
    except ValueError as error:
        raise MidiError(path, str(error)) from None
    names = [marker.text[len(TUNE_MARKER) :] for marker in score.markers if marker.text.startswith(TUNE_MARKER)]
    return names[0] if names else None


def write_midi(
    quarters: np.ndarray,
    path: str | Path,
    tempo_bpm: float = 100.0,
    program: int = DEFAULT_PROGRAM,
    *,
    meter: Meter | None = None,
    melody: np.ndarray | None = None,
    melody_name: str = "Melody",
) -> Path:
    """Write quarters to a MIDI file at `path` (see `quarters_to_midi_bytes`); refuses to overwrite a file."""
    path = Path(path)
    data = quarters_to_midi_bytes(quarters, tempo_bpm, program, meter=meter, melody=melody, melody_name=melody_name)
    return write_bytes(data, path)


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write a file's bytes at `path`, never overwriting a file."""
    path = Path(path)
    with open(path, "xb") as file:  # "x": never overwrite
        file.write(data)
    return path


def key_range(quarters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest sounding key (0 ... 87) of each quarter [Q, 88, steps]: two int arrays [Q].

    A silent quarter gets (88, -1), bounds that any transposition satisfies.
    """
    sounding = np.asarray(quarters, dtype=bool).any(axis=2)  # [Q, 88]
    keys = np.arange(NUM_KEYS)
    return np.where(sounding, keys, NUM_KEYS).min(axis=1), np.where(sounding, keys, -1).max(axis=1)


def drop_short_notes(quarters: np.ndarray, min_steps: int) -> np.ndarray:
    """A copy of quarters [Q, 88, steps] without the notes shorter than `min_steps` steps."""
    quarters = np.array(quarters, dtype=bool)
    notes = quarters_to_notes(quarters)
    short = notes[notes[:, 1] - notes[:, 0] < min_steps]
    if len(short):
        steps_per_quarter = quarters.shape[2]
        lengths = short[:, 1] - short[:, 0]
        steps = (
            np.repeat(short[:, 0], lengths)
            + np.arange(lengths.sum())
            - np.repeat(np.cumsum(lengths) - lengths, lengths)
        )
        keys = np.repeat(short[:, 2] - LOWEST_PITCH, lengths)
        quarters[steps // steps_per_quarter, keys, steps % steps_per_quarter] = False
    return quarters


# --------------------------------------------------------------------------------------------
# Phrase ends: fermata markers (bachsformer/corpus.py writes them, bachsformer/tune.py reads them)

FERMATA_MARKER = "fermata"


def read_fermatas(path: str | Path, steps_per_quarter: int = STEPS_PER_QUARTER) -> list[int]:
    """Onset steps of a MIDI file's fermata markers on the grid `midi.read_midi` reads it on (the whole
    silent quarters before the first note trimmed): [] for a file without them."""
    score = symusic.Score(str(path))
    marks = [m.time for m in score.markers if m.text.strip().casefold() == FERMATA_MARKER]
    onsets = [int(t.notes.numpy()["time"].min()) for t in score.tracks if not t.is_drum and len(t.notes)]
    if not marks or not onsets:
        return []
    ticks = score.ticks_per_quarter

    def step(tick: int) -> int:  # as midi.py rounds onsets: halves up, in integers
        return (2 * tick * steps_per_quarter + ticks) // (2 * ticks)

    trimmed = step(min(onsets)) // steps_per_quarter * steps_per_quarter
    return sorted({step(t) - trimmed for t in marks if step(t) >= trimmed})
