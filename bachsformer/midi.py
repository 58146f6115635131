"""MIDI <-> quarters: the piano-roll codec every other part of bachsformer stands on.

A *quarter* is a binary piano roll of 88 keys (MIDI 21, A0 ... 108, C8) by 32 time steps per
quarter note. Time comes from the file's own ticks, `step = round(tick * 32 / ticks_per_beat)`,
so tempo (and tempo changes) never matter and performed files snap to the grid.

Note rules (see DESIGN.md §1): a note covers steps [onset, offset), at least one step; when the
same pitch starts again where (or before) the earlier note ended, the earlier note loses its last
step(s) so the two stay two notes; drum channel notes are left out; pitches outside the 88 keys
are dropped and counted; leading and trailing silent quarters are trimmed. With these rules any
binary roll survives `quarters -> MIDI -> quarters` exactly.

The Standard MIDI File reader is written here rather than borrowed so that every malformed file
ends in one `MidiError` naming the file and the reason, and so that a file claiming an absurd
length is refused before anything is allocated for it.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bachsformer.errors import BachsformerError

STEPS_PER_QUARTER = 32
LOWEST_PITCH = 21  # A0
NUM_KEYS = 88  # A0 ... C8
DRUM_CHANNEL = 9  # General MIDI channel 10, counted from zero
DEFAULT_MAX_QUARTERS = 20_000  # about three hours at 100 beats per minute
WRITE_TICKS_PER_BEAT = 480  # divisible by 32, so every step is a whole number of ticks
WRITE_VELOCITY = 80


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
# Reading


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


def _parse_track(data: bytes, pos: int, end: int, notes: list[tuple[int, int, int, int]]):
    """Parse one MTrk body data[pos:end], appending (on_tick, off_tick, channel, pitch) to `notes`.

    Note-on with velocity 0 is a note-off. Overlapping notes of one pitch and channel are paired
    first in, first out; a note still sounding when the track ends stops at the track's last tick.
    """
    tick = 0
    status = 0
    sounding: dict[tuple[int, int], deque[int]] = {}  # (channel, pitch) -> onset ticks, oldest first
    while pos < end:
        delta, pos = _read_varlen(data, pos, end)
        tick += delta
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
                    break
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
        kind = status & 0xF0
        channel = status & 0x0F
        size = 1 if kind in (0xC0, 0xD0) else 2
        if pos + size > end:
            raise ValueError("truncated channel message")
        if kind in (0x80, 0x90):
            pitch, velocity = data[pos], data[pos + 1]
            if pitch > 127 or velocity > 127:
                raise ValueError("note data byte above 127")
            key = (channel, pitch)
            if kind == 0x90 and velocity > 0:
                sounding.setdefault(key, deque()).append(tick)
            elif sounding.get(key):
                notes.append((sounding[key].popleft(), tick, channel, pitch))
        pos += size
    for (channel, pitch), onsets in sounding.items():
        notes.extend((onset, tick, channel, pitch) for onset in onsets)


def parse_midi_bytes(data: bytes) -> tuple[int, np.ndarray]:
    """Parse a Standard MIDI File (type 0, 1 or 2) into its notes.

    Returns (ticks_per_beat, notes) with notes an int64 array [N, 4] of
    (onset tick, offset tick, channel, pitch). Raises ValueError with a one-line reason.
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
    notes: list[tuple[int, int, int, int]] = []
    pos = 8 + header_length
    tracks_read = 0
    while tracks_read < num_tracks:
        if pos + 8 > len(data):
            raise ValueError(f"truncated: {tracks_read} of {num_tracks} tracks present")
        chunk_type = data[pos : pos + 4]
        (length,) = struct.unpack(">I", data[pos + 4 : pos + 8])
        start, end = pos + 8, pos + 8 + length
        if end > len(data):
            raise ValueError(f"truncated: track {tracks_read + 1} claims {length} bytes")
        if chunk_type == b"MTrk":
            try:
                _parse_track(data, start, end, notes)
            except ValueError as error:
                raise ValueError(f"track {tracks_read + 1}: {error}") from None
            tracks_read += 1
        pos = end  # unknown chunk types are skipped, as the standard asks
    return division, np.array(notes, dtype=np.int64).reshape(-1, 4)


def notes_to_quarters(
    notes: np.ndarray,
    ticks_per_beat: int,
    steps_per_quarter: int = STEPS_PER_QUARTER,
    max_quarters: int = DEFAULT_MAX_QUARTERS,
) -> Piece:
    """Turn notes [N, 4] of (onset tick, offset tick, channel, pitch) into quarters.

    Raises ValueError when no note is left or the music is longer than `max_quarters`.
    """
    notes = notes[notes[:, 2] != DRUM_CHANNEL]
    pitch = notes[:, 3] - LOWEST_PITCH
    in_range = (pitch >= 0) & (pitch < NUM_KEYS)
    dropped = int((~in_range).sum())
    notes, pitch = notes[in_range], pitch[in_range]
    if len(notes) == 0:
        raise ValueError("no notes" + (f" inside the 88 keys ({dropped} outside)" if dropped else ""))

    # round(tick * steps / tpb), halves rounded up, in exact integer arithmetic
    onset = (2 * notes[:, 0] * steps_per_quarter + ticks_per_beat) // (2 * ticks_per_beat)
    offset = (2 * notes[:, 1] * steps_per_quarter + ticks_per_beat) // (2 * ticks_per_beat)
    offset = np.maximum(offset, onset + 1)

    first_quarter = int(onset.min()) // steps_per_quarter
    num_quarters = (int(offset.max()) - 1) // steps_per_quarter - first_quarter + 1
    if num_quarters > max_quarters:
        raise ValueError(f"{num_quarters} quarters long, over the limit of {max_quarters}")
    onset -= first_quarter * steps_per_quarter
    offset -= first_quarter * steps_per_quarter

    # One note per (pitch, onset): the longest. Then, per pitch in time order, a note that starts
    # where or before the previous one ends cuts that one short by a step, leaving a gap.
    order = np.lexsort((-offset, onset, pitch))
    pitch, onset, offset = pitch[order], onset[order], offset[order]
    first = np.ones(len(pitch), dtype=bool)
    first[1:] = (pitch[1:] != pitch[:-1]) | (onset[1:] != onset[:-1])
    pitch, onset, offset = pitch[first], onset[first], offset[first]
    same_pitch = pitch[1:] == pitch[:-1]
    cut = same_pitch & (onset[1:] <= offset[:-1])
    offset[:-1][cut] = np.maximum(onset[1:][cut] - 1, onset[:-1][cut] + 1)
    num_quarters = (int(offset.max()) - 1) // steps_per_quarter + 1  # a cut may end the music sooner

    # Fill the roll: +1 where a note starts, -1 where it ends, summed along time. Notes of one pitch
    # no longer overlap, so every sum is 0 or 1, and memory stays a small multiple of the roll's.
    roll = np.zeros((NUM_KEYS, num_quarters * steps_per_quarter + 1), dtype=np.int8)  # [88, Q * steps + 1]
    np.add.at(roll, (pitch, onset), 1)
    np.add.at(roll, (pitch, offset), -1)
    np.cumsum(roll, axis=1, out=roll)
    roll = roll[:, :-1].view(bool).reshape(NUM_KEYS, num_quarters, steps_per_quarter)
    quarters = np.ascontiguousarray(roll.transpose(1, 0, 2))  # [Q, 88, steps]
    return Piece(quarters=quarters, notes=len(notes), dropped_notes=dropped)


def read_midi(
    path: str | Path,
    steps_per_quarter: int = STEPS_PER_QUARTER,
    max_quarters: int = DEFAULT_MAX_QUARTERS,
) -> Piece:
    """Read a MIDI file into quarters [Q, 88, 32]. Raises MidiError naming the file and reason."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise MidiError(path, f"cannot read file ({error.strerror or error})") from None
    return read_midi_bytes(data, path, steps_per_quarter, max_quarters)


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


# --------------------------------------------------------------------------------------------
# Writing


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


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


def quarters_to_midi_bytes(quarters: np.ndarray, tempo_bpm: float = 100.0) -> bytes:
    """Write quarters [Q, 88, steps] as a type-0 MIDI file: one piano track in 4/4."""
    if not 1 <= tempo_bpm <= 1000:
        raise ValueError(f"tempo must be within 1 ... 1000 beats per minute, got {tempo_bpm}")
    steps_per_quarter = np.shape(quarters)[-1]
    if WRITE_TICKS_PER_BEAT % steps_per_quarter:
        raise ValueError(f"{steps_per_quarter} steps per quarter do not divide the MIDI grid")
    ticks_per_step = WRITE_TICKS_PER_BEAT // steps_per_quarter
    notes = quarters_to_notes(quarters)

    # (tick, order, bytes): at equal ticks note-offs (order 0) come before note-ons (order 1)
    events = [(int(on) * ticks_per_step, 1, bytes((0x90, int(p), WRITE_VELOCITY))) for on, _, p in notes]
    events += [(int(off) * ticks_per_step, 0, bytes((0x80, int(p), 0))) for _, off, p in notes]
    events.sort()
    microseconds_per_beat = round(60_000_000 / tempo_bpm)
    track = bytearray()
    track += b"\x00\xff\x51\x03" + microseconds_per_beat.to_bytes(3, "big")
    track += b"\x00\xff\x58\x04\x04\x02\x18\x08"  # 4/4, 24 clocks per click, 8 32nds per beat
    track += b"\x00\xc0\x00"  # program 0: acoustic grand piano
    tick = 0
    for event_tick, _, message in events:
        track += _varlen(event_tick - tick) + message
        tick = event_tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, WRITE_TICKS_PER_BEAT)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def write_midi(quarters: np.ndarray, path: str | Path, tempo_bpm: float = 100.0) -> Path:
    """Write quarters to a MIDI file at `path`; refuses to overwrite an existing file."""
    path = Path(path)
    with open(path, "xb") as file:  # "x": never overwrite
        file.write(quarters_to_midi_bytes(quarters, tempo_bpm))
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
