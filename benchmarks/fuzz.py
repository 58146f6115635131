"""Damaged MIDI files, made from valid ones, to show that the reader fails only in the named way.

    python -m benchmarks.fuzz [--files N] [--seed S] [--max-quarters M] [--save DIR]

reads every damaged file with `read_midi_bytes`, timing it and tracing its peak memory, and prints
a markdown table: one row per fault family, with how many files read, how many were refused with
`MidiError`, how many raised anything else, and the slowest time and largest peak. The exit status
is 1 when any file raised anything but `MidiError`, returned a malformed piece, or went over the
time or memory bound; 0 otherwise. The same seed always makes the same files.
"""

from __future__ import annotations

import argparse
import itertools
import random
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bachsformer.midi import (
    DEFAULT_MAX_QUARTERS,
    NUM_KEYS,
    STEPS_PER_QUARTER,
    MidiError,
    Piece,
    quarters_to_midi_bytes,
    read_midi_bytes,
)

MAX_DELTA = b"\xff\xff\xff\x7f"  # 0x0FFFFFFF, the largest delta time four bytes can hold
END_OF_TRACK = b"\x00\xff\x2f\x00"
CONDUCTOR_TRACK = (  # tempo 120, a General MIDI reset (sysex), a text event, end of track
    b"\x00\xff\x51\x03\x07\xa1\x20" + b"\x00\xf0\x05\x7e\x7f\x09\x01\xf7" + b"\x00\xff\x01\x04Bach" + END_OF_TRACK
)
READ, REFUSED, OTHER = "read", "refused", "other"
MIB = 2**20


# --------------------------------------------------------------------------------------------
# Seeds: valid files, taken apart into tracks and events so that faults land where they mean to


@dataclass(frozen=True)
class Event:
    """One event of a track, by its offsets in the file."""

    at: int  # its delta time
    status_at: int  # its status byte, or its first data byte under running status
    end: int
    status: int  # the status in force: a channel status, 0xFF for meta, 0xF0 / 0xF7 for sysex


@dataclass(frozen=True)
class Track:
    """One MTrk chunk: `offset` of its "MTrk" tag, its body [start, end), and its events."""

    offset: int
    start: int
    end: int
    events: tuple[Event, ...]


@dataclass(frozen=True)
class Seed:
    """A valid MIDI file to damage."""

    name: str
    data: bytes
    tracks: tuple[Track, ...]

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Seed:
        tracks, pos = [], 8 + int.from_bytes(data[4:8], "big")
        while pos + 8 <= len(data):
            end = pos + 8 + int.from_bytes(data[pos + 4 : pos + 8], "big")
            if data[pos : pos + 4] == b"MTrk":
                tracks.append(Track(pos, pos + 8, end, tuple(_events(data, pos + 8, end))))
            pos = end
        return cls(name, data, tuple(tracks))


def vlq(value: int) -> bytes:
    """`value` as a MIDI variable-length quantity."""
    out = [value & 0x7F]
    while value := value >> 7:
        out.append(0x80 | (value & 0x7F))
    return bytes(reversed(out))


def _read_vlq(data: bytes, pos: int) -> tuple[int, int]:
    """The variable-length quantity at `pos` of a valid file; returns (value, next pos)."""
    value = 0
    while data[pos] & 0x80:
        value = (value << 7) | (data[pos] & 0x7F)
        pos += 1
    return (value << 7) | data[pos], pos + 1


def _events(data: bytes, pos: int, end: int) -> Iterator[Event]:
    """The events of a valid track body data[pos:end] (seeds only, so nothing is checked)."""
    running = 0
    while pos < end:
        at = pos
        _, pos = _read_vlq(data, pos)
        status_at, status = pos, data[pos]
        if status & 0x80:
            pos += 1
        else:
            status = running
        if status == 0xFF:
            length, pos = _read_vlq(data, pos + 1)
            pos += length
        elif status in (0xF0, 0xF7):
            length, pos = _read_vlq(data, pos)
            pos += length
        else:
            running = status
            pos += 1 if status & 0xF0 in (0xC0, 0xD0) else 2
        yield Event(at, status_at, pos, status)


def smf(tracks: list[bytes], division: int = 480) -> bytes:
    """A Standard MIDI File of the given track bodies: type 0 for one track, type 1 for more."""
    header = b"MThd" + struct.pack(">IHHH", 6, 0 if len(tracks) == 1 else 1, len(tracks), division)
    return header + b"".join(b"MTrk" + struct.pack(">I", len(body)) + body for body in tracks)


def _with_every_status(body: bytes) -> bytes:
    """A track body with each channel status byte that running status left out written out again."""
    out = bytearray()
    for event in _events(body, 0, len(body)):
        out += body[event.at : event.status_at]
        if not body[event.status_at] & 0x80:
            out.append(event.status)
        out += body[event.status_at : event.end]
    return bytes(out)


def roll_seeds(rng: np.random.Generator, rolls: int = 2) -> list[Seed]:
    """Small valid files of random rolls, each written three ways: type 0 as our writer writes the
    track (with running status), type 1 after a conductor track, and with every status byte."""
    seeds = []
    for number in range(rolls):
        roll = rng.random((int(rng.integers(2, 9)), NUM_KEYS, STEPS_PER_QUARTER)) < 0.02
        roll[0, 39, :8] = True  # at least one note, middle C, at the start
        body = quarters_to_midi_bytes(roll)[22:]  # its one track, after the 14-byte header and 8-byte track header
        seeds.append(Seed.from_bytes(f"roll{number}-type0", smf([body])))
        seeds.append(Seed.from_bytes(f"roll{number}-type1", smf([CONDUCTOR_TRACK, body])))
        seeds.append(Seed.from_bytes(f"roll{number}-every-status", smf([_with_every_status(body)])))
    return seeds


def corpus_seeds(folder: str | Path, count: int, rng: random.Random) -> list[Seed]:
    """`count` files picked from a folder of valid MIDI files (none when the folder is missing)."""
    files = sorted(Path(folder).glob("*.mid")) if Path(folder).is_dir() else []
    return [Seed.from_bytes(path.name, path.read_bytes()) for path in rng.sample(files, min(count, len(files)))]


# --------------------------------------------------------------------------------------------
# Fault families: each makes one damaged file from a seed. The docstring says what is tried.


def _splice(seed: Seed, track: Track, start: int, end: int, new: bytes) -> bytes:
    """The seed with data[start:end] of `track` replaced by `new`, the track's length field kept right."""
    data, length = seed.data, track.end - track.start - (end - start) + len(new)
    return data[: track.offset + 4] + struct.pack(">I", length) + data[track.start : start] + new + data[end:]


def truncated_sections(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """cut in or after the header, in or after a track header, at a track's last byte"""
    cuts = [1, 4, 8, 13, 14]
    for track in seed.tracks:
        cuts += [track.offset, track.offset + 2, track.offset + 4, track.offset + 6, track.start, track.end - 1]
    return seed.data[: rng.choice(cuts)]


def truncated_events(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """cut at an event, after its delta, after its status, mid-data; track length fixed or not"""
    track = rng.choice(seed.tracks)
    event = rng.choice(track.events)
    cut = rng.choice([event.at, event.status_at, event.status_at + 1, rng.randrange(event.at, event.end)])
    if rng.random() < 0.5:
        return seed.data[:cut]
    return _splice(seed, track, cut, track.end, b"")


def flipped_bytes(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """1 to 8 bytes anywhere XORed with random values"""
    data = bytearray(seed.data)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    return bytes(data)


def chunk_lengths(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """a header or track length too long, too short, 0 or 0xFFFFFFFF"""
    at = rng.choice([0] + [track.offset for track in seed.tracks])
    old = int.from_bytes(seed.data[at + 4 : at + 8], "big")
    new = rng.choice([old + rng.randint(1, 1000), old - rng.randint(1, old), 0, 0xFFFFFFFF])
    return seed.data[: at + 4] + struct.pack(">I", new) + seed.data[at + 8 :]


def delta_times(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """delta time 0x0FFFFFFF on one event, or on every event of a track"""
    track = rng.choice(seed.tracks)
    if rng.random() < 0.5:
        event = rng.choice(track.events)
        return _splice(seed, track, event.at, event.status_at, MAX_DELTA)
    body = b"".join(MAX_DELTA + seed.data[event.status_at : event.end] for event in track.events)
    return _splice(seed, track, track.start, track.end, body)


def tempos(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """tempo 0 or 0xFFFFFF us per beat, a tempo of no bytes, a thousand tempo events"""
    track = rng.choice(seed.tracks)
    at = rng.choice(track.events).at
    zero, huge = b"\x00\xff\x51\x03\x00\x00\x00", b"\x00\xff\x51\x03\xff\xff\xff"
    return _splice(seed, track, at, at, rng.choice([zero, huge, b"\x00\xff\x51\x00", zero * 1000]))


def divisions(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """division 0, SMPTE (-30 fps x 80), 1 or 0x7FFF ticks per beat"""
    division = rng.choice([b"\x00\x00", b"\xe2\x50", b"\x00\x01", b"\x7f\xff"])
    return seed.data[:12] + division + seed.data[14:]


def running_status(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """a data byte at a track's start, after a meta or sysex event, or a status byte dropped"""
    track = rng.choice(seed.tracks)
    event = rng.choice(track.events[:-1] or track.events)  # not after the end of track
    note = b"\x00\x3c\x40"  # delta 0, then data bytes with no status byte
    choice = rng.randrange(4)
    if choice == 0:
        return _splice(seed, track, track.start, track.start, note)
    if choice == 1:
        return _splice(seed, track, event.at, event.at, b"\x00\xff\x01\x01x" + note)
    if choice == 2:
        return _splice(seed, track, event.at, event.at, b"\x00\xf0\x01\xf7" + note)
    if seed.data[event.status_at] & 0x80 and event.status < 0xF0:
        return _splice(seed, track, event.status_at, event.status_at + 1, b"")
    return _splice(seed, track, event.end, event.end, note)


def million_ticks(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """1 tick per beat with notes ~2^28 ticks long or apart, or a note held 2^30 ticks"""
    note_on, note_off = b"\x90\x3c\x40", b"\x80\x3c\x00"
    choice = rng.randrange(3)
    if choice == 0:  # one note 2^28 ticks long, then another 2^28 ticks later
        body = b"\x00" + note_on + MAX_DELTA + note_off + MAX_DELTA + note_on + b"\x01" + note_off
    elif choice == 1:  # a note never released while four huge gaps of text events pass
        body = b"\x00" + note_on + (MAX_DELTA + b"\xff\x01\x01x") * 4
    else:  # a late note alone: the leading silence is trimmed, so it reads
        body = MAX_DELTA + note_on + b"\x01" + note_off
    return smf([body + END_OF_TRACK], division=1)


def track_counts(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """header claiming 0, one more or 65535 tracks, or format 3 or 0xFFFF"""
    midi_format, tracks = struct.unpack(">HH", seed.data[8:12])
    if rng.random() < 0.75:
        tracks = rng.choice([0, tracks + 1, 0xFFFF])
    else:
        midi_format = rng.choice([3, 0xFFFF])
    return seed.data[:8] + struct.pack(">HH", midi_format, tracks) + seed.data[12:]


def variable_lengths(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """a 5-byte delta, an endless meta length, a track ending mid-number"""
    track = rng.choice(seed.tracks)
    event = rng.choice(track.events)
    choice = rng.randrange(3)
    if choice == 0:
        return _splice(seed, track, event.at, event.status_at, b"\x80\x80\x80\x80\x00")
    if choice == 1:
        return _splice(seed, track, event.at, event.at, b"\x00\xff\x01\xff\xff\xff\xff\x7f")
    return _splice(seed, track, track.events[-1].at, track.end, b"\x81\x80")


def stuck_notes(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """thousands of notes of one key at once, all 88 keys held to just under or over max_quarters, or never released"""
    choice = rng.randrange(3)
    if choice == 0:
        count = rng.choice([1_000, 10_000, 30_000])
        body = (
            b"\x00\x90" + b"\x3c\x40" + b"\x00\x3c\x40" * (count - 1) + b"\x01\x3c\x00" + b"\x00\x3c\x00" * (count - 1)
        )
    else:
        quarters = max_quarters + rng.choice([-1, 1])
        body = b"\x00\x90" + b"\x00".join(bytes((21 + key, 64)) for key in range(NUM_KEYS))
        if choice == 1:  # released together at the end
            body += vlq(quarters * 480 - 1) + b"\x80" + b"\x00".join(bytes((21 + key, 0)) for key in range(NUM_KEYS))
        else:  # never released: the track just ends there
            body += vlq(quarters * 480 - 1) + b"\xff\x01\x01x"
    return smf([body + END_OF_TRACK], division=480)


def not_midi(seed: Seed, rng: random.Random, max_quarters: int) -> bytes:
    """empty, random bytes, text, PNG or zip signature, a bare "MThd", a RIFF RMID wrapper"""
    noise = rng.randbytes(rng.randint(1, 2000))
    return rng.choice(
        [
            b"",
            noise,
            b"Bach: Chorale 1, Wie schon leuchtet der Morgenstern\n" * 20,
            b"\x89PNG\r\n\x1a\n" + noise,
            b"PK\x03\x04" + noise,
            b"MThd",
            b"RIFF"
            + struct.pack("<I", len(seed.data) + 12)
            + b"RMIDdata"
            + struct.pack("<I", len(seed.data))
            + seed.data,
        ]
    )


FaultFamily = Callable[[Seed, random.Random, int], bytes]
FAULT_FAMILIES: dict[str, FaultFamily] = {
    "truncated sections": truncated_sections,
    "truncated events": truncated_events,
    "flipped bytes": flipped_bytes,
    "chunk lengths": chunk_lengths,
    "delta times": delta_times,
    "tempos": tempos,
    "divisions": divisions,
    "running status": running_status,
    "million ticks": million_ticks,
    "track counts": track_counts,
    "variable lengths": variable_lengths,
    "stuck notes": stuck_notes,
    "not MIDI": not_midi,
}


def damaged_files(
    seeds: list[Seed], random_seed: int = 0, max_quarters: int = DEFAULT_MAX_QUARTERS
) -> Iterator[tuple[str, bytes]]:
    """Endless (fault family, damaged file) pairs, the families in turn, each from a random seed file."""
    rng = random.Random(random_seed)
    while True:
        for kind, family in FAULT_FAMILIES.items():
            yield kind, family(rng.choice(seeds), rng, max_quarters)


def damaged_name(number: int, kind: str) -> str:
    """The name of the `number`th damaged file, of fault family `kind`: `0012-not-MIDI`."""
    return f"{number:04d}-{kind.replace(' ', '-')}"


def write_files(folder: str | Path, files: list[tuple[str, bytes]]) -> list[Path]:
    """Write damaged files into `folder` as `<damaged_name>.mid`; returns their paths."""
    paths = []
    for number, (kind, data) in enumerate(files):
        path = Path(folder) / f"{damaged_name(number, kind)}.mid"
        path.write_bytes(data)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Reading them


@dataclass(frozen=True)
class Outcome:
    """What reading one damaged file did: `result` is READ, REFUSED or OTHER (a broken contract)."""

    kind: str
    name: str
    result: str
    seconds: float
    peak_bytes: int
    message: str


def memory_bound(max_quarters: int) -> int:
    """Bytes one read may take: four rolls of the longest allowed piece, plus 32 MiB for parsing."""
    return 4 * max_quarters * NUM_KEYS * STEPS_PER_QUARTER + 32 * MIB


def _piece_problem(piece: Piece, max_quarters: int) -> str:
    """Why a returned piece breaks the reader's contract, or "" when it does not."""
    quarters = piece.quarters
    if quarters.dtype != bool or quarters.ndim != 3 or quarters.shape[1:] != (NUM_KEYS, STEPS_PER_QUARTER):
        return f"quarters of shape {quarters.shape} and dtype {quarters.dtype}"
    if not 1 <= len(quarters) <= max_quarters:
        return f"{len(quarters)} quarters, outside 1 ... {max_quarters}"
    return ""


def _error_problem(error: MidiError, name: str) -> str:
    """Why a MidiError breaks the contract (one line, naming the file), or "" when it does not."""
    message = str(error)
    if "\n" in message or not message.startswith(f"{name}: "):
        return f"MidiError message not one line naming the file: {message!r}"
    return ""


def _read(data: bytes, name: str, max_quarters: int) -> tuple[str, str]:
    """Read one file: (READ, "<Q> quarters"), (REFUSED, reason) or (OTHER, what broke the contract)."""
    try:
        piece = read_midi_bytes(data, name, max_quarters=max_quarters)
    except MidiError as error:
        problem = _error_problem(error, name)
        return (OTHER, problem) if problem else (REFUSED, error.reason)
    except Exception as error:  # the contract is broken: report it and go on with the next file
        return OTHER, f"{type(error).__name__}: {error}"
    problem = _piece_problem(piece, max_quarters)
    return (OTHER, problem) if problem else (READ, f"{len(piece.quarters)} quarters")


def check(kind: str, name: str, data: bytes, max_quarters: int) -> Outcome:
    """Read one damaged file twice: timed, then under tracemalloc for its peak memory.

    Two reads because tracing every allocation slows the parser's many small ones severalfold.
    """
    start = time.perf_counter()
    result, message = _read(data, name, max_quarters)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    try:
        _read(data, name, max_quarters)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return Outcome(kind, name, result, seconds, peak, message)


def check_all(files: list[tuple[str, bytes]], max_quarters: int) -> list[Outcome]:
    """`check` every (fault family, damaged file), each named by `damaged_name`."""
    return [check(kind, damaged_name(n, kind), data, max_quarters) for n, (kind, data) in enumerate(files)]


def over_bounds(outcome: Outcome, time_limit: float, memory_limit: int) -> bool:
    """Whether a file broke the contract or took more than `time_limit` seconds or `memory_limit` bytes."""
    return outcome.result == OTHER or outcome.seconds > time_limit or outcome.peak_bytes > memory_limit


def report(outcomes: list[Outcome], max_quarters: int, time_limit: float, memory_limit: int) -> str:
    """A markdown table: per fault family (and in total) how the files fared; then the limits used."""
    columns = ["fault family", "what is tried", "files", "read OK", "refused (MidiError)", "other exceptions"]
    columns += ["slowest ms", "peak MiB"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    families = [(kind, FAULT_FAMILIES[kind].__doc__) for kind in FAULT_FAMILIES]
    groups = [(kind, tried, [o for o in outcomes if o.kind == kind]) for kind, tried in families]
    for kind, tried, group in [*groups, ("total", "", outcomes)]:
        if not group:
            continue
        counts = [sum(o.result == result for o in group) for result in (READ, REFUSED, OTHER)]
        slowest, peak = max(o.seconds for o in group) * 1000, max(o.peak_bytes for o in group) / MIB
        name = f"**{kind}**" if kind == "total" else kind
        lines.append(
            f"| {name} | {tried} | {len(group)} | " + " | ".join(map(str, counts)) + f" | {slowest:.0f} | {peak:.1f} |"
        )
    lines.append(f"\nLength limit: max_quarters = {max_quarters} (a longer piece is refused, naming the limit).")
    lines.append(f"Bounds per file: {time_limit:g} s, and {memory_limit / MIB:.0f} MiB peak traced by tracemalloc.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=650, help="damaged files to make and read")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-quarters", type=int, default=DEFAULT_MAX_QUARTERS, help="the reader's length limit")
    parser.add_argument("--corpus", default="data/midi", help="folder of valid files to take seeds from")
    parser.add_argument("--corpus-seeds", type=int, default=4, help="seed files taken from --corpus")
    parser.add_argument("--time-limit", type=float, default=2.0, help="seconds one file may take")
    parser.add_argument("--save", help="also write the damaged files into this folder")
    args = parser.parse_args(argv)

    seeds = roll_seeds(np.random.default_rng(args.seed))
    seeds += corpus_seeds(args.corpus, args.corpus_seeds, random.Random(args.seed))
    files = list(itertools.islice(damaged_files(seeds, args.seed, args.max_quarters), args.files))
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
        write_files(args.save, files)
    outcomes = check_all(files, args.max_quarters)
    memory_limit = memory_bound(args.max_quarters)

    print(f"{len(seeds)} seed files fuzzed ({', '.join(seed.name for seed in seeds)}); {len(files)} faults injected.\n")
    print(report(outcomes, args.max_quarters, args.time_limit, memory_limit))
    failures = [o for o in outcomes if over_bounds(o, args.time_limit, memory_limit)]
    for o in failures:
        print(f"FAIL {o.name}: {o.message} ({o.seconds * 1000:.0f} ms, {o.peak_bytes / MIB:.1f} MiB)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
