"""The corpus (a folder of MIDI files read as four voices, cached), its split, and both datasets.

    python -m bachsformer.data scan DIR [--json]

prints one line per file (name, quarters, notes, pitch range, estimated key, where its four voices come from:
its parts or the voicing rule; or `skipped: <reason>`) and last
`N files, K read, M skipped`; exit status 0 when at least one file was read, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bachsformer.errors import BachsformerError
from bachsformer.keys import normalizing_shift, piece_key, transpose_quarters
from bachsformer.melody import NONE as MELODY_NONE
from bachsformer.melody import transpose_tokens, window_melody
from bachsformer.midi import (
    DEFAULT_MAX_QUARTERS,
    LOWEST_PITCH,
    NUM_KEYS,
    STEPS_PER_QUARTER,
    MidiError,
    key_range,
)
from bachsformer.voices import (
    READ_BY_RULE,
    READ_FROM_PARTS,
    SILENCE,
    VOICE_NAMES,
    Voices,
    from_lines,
    read_piece_voices,
)

MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")
CODEC_VERSION = 5  # bump when files are read differently, so old caches are ignored (5: four voices)
SPLIT_NOTE = "no four single-line parts (named Soprano, Alto, Tenor, Bass, or four in all): split by the voicing rule"
DEFAULT_GRID = 8  # steps of the voicing rule's cells for files without four parts: sixteenth notes


class CorpusError(BachsformerError):
    """A corpus that cannot be used at all (missing folder, no readable file)."""


@dataclass(frozen=True)
class CorpusPiece:
    name: str  # path relative to the corpus folder: the key of the train/validation split
    quarters: np.ndarray  # bool [Q, 88, 32]: the union of the voices
    notes: int
    dropped_notes: int
    key: str = ""  # the key estimated from the file as written, such as "G major"
    shift: int = 0  # semitones the quarters were moved from the file (key normalization; 0 when off)
    voices: Voices | None = None  # the four voices `quarters` is the union of, moved with it
    read_as: str = READ_FROM_PARTS  # where the voices came from: the file's parts or the voicing rule


def midi_files(folder: str | Path) -> list[Path]:
    """Every MIDI file under `folder`, sorted, so that all runs see the same order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: no such folder of MIDI files")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())


def is_validation(name: str, fraction: float) -> bool:
    """Held-out or not, decided by a hash of the file name alone: the same in both stages."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split(pieces: list[CorpusPiece], fraction: float) -> tuple[list, list]:
    """(train, validation) pieces by `is_validation`."""
    validation = [p for p in pieces if is_validation(p.name, fraction)]
    train = [p for p in pieces if not is_validation(p.name, fraction)]
    return train, validation


class _VoiceCache:
    """The voices read from one corpus folder, in one file, each keyed by its MIDI file's content.

    One file per folder and grid settings, not one per piece: opening hundreds of small files took
    most of a cached load. Each piece is stored as its lines (voices.py): keys uint8 [Q, V, S] and
    onsets as packed bits. `read` parses only files whose content is not in it; `save` writes it back
    (atomically, only when it changed) holding the files read since it was opened. Without a cache
    folder every file is parsed.
    """

    STEPS_PER_QUARTER_OF_VOICES = len(VOICE_NAMES) * STEPS_PER_QUARTER  # a quarter's entries of lines

    def __init__(self, cache_dir: Path | None, folder: Path, max_quarters: int, grid: int):
        self.max_quarters = max_quarters
        self.grid = grid
        self.path = None
        self.stored: dict[bytes, tuple] = {}
        self.used: dict[bytes, tuple] = {}
        if cache_dir is not None:
            settings = f"v{CODEC_VERSION}-s{STEPS_PER_QUARTER}-m{max_quarters}-g{grid}-voices{len(VOICE_NAMES)}"
            folder_key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
            self.path = cache_dir / "voices" / settings / f"{folder_key}.npz"
            self.stored = self._load(self.path) if self.path.exists() else {}

    @classmethod
    def _load(cls, path: Path) -> dict[bytes, tuple]:
        with np.load(path) as stored:
            digests, lengths, notes, dropped = stored["digests"], stored["quarters"], stored["notes"], stored["dropped"]
            by_rule, keys, onset_bits = stored["by_rule"], stored["keys"], stored["onsets"]
        entries = cls.STEPS_PER_QUARTER_OF_VOICES
        ends = np.cumsum(lengths) * entries
        shape = (len(VOICE_NAMES), STEPS_PER_QUARTER)
        onsets = np.unpackbits(onset_bits)[: int(lengths.sum()) * entries].view(bool)
        return {
            digest.tobytes(): (
                keys[end - length * entries : end].reshape(-1, *shape),
                onsets[end - length * entries : end].reshape(-1, *shape),
                int(n),
                int(d),
                bool(rule),
            )
            for digest, length, end, n, d, rule in zip(digests, lengths, ends, notes, dropped, by_rule)
        }

    def read(self, data: bytes, source: Path) -> tuple[Voices, int, int, str]:
        """(voices, notes, dropped notes, how they were read) of one file's bytes; MidiError when unreadable."""
        digest = hashlib.sha256(data).digest()[:16]
        if digest in self.stored:
            keys, onsets, notes, dropped, by_rule = self.used[digest] = self.stored[digest]
            return from_lines(keys, onsets), notes, dropped, READ_BY_RULE if by_rule else READ_FROM_PARTS
        piece, voices, read_as = read_piece_voices(data, source, self.grid, self.max_quarters)
        keys, onsets = voices.lines()
        self.used[digest] = (keys.astype(np.uint8), onsets, piece.notes, piece.dropped_notes, read_as == READ_BY_RULE)
        return voices, piece.notes, piece.dropped_notes, read_as

    def save(self) -> None:
        if self.path is None or self.used.keys() == self.stored.keys():
            return
        entries = list(self.used.values())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp.npz")
        np.savez(
            temporary,
            digests=np.array([np.frombuffer(digest, np.uint8) for digest in self.used]).reshape(-1, 16),
            quarters=np.array([len(entry[0]) for entry in entries], dtype=np.int64),
            notes=np.array([entry[2] for entry in entries], dtype=np.int64),
            dropped=np.array([entry[3] for entry in entries], dtype=np.int64),
            by_rule=np.array([entry[4] for entry in entries], dtype=bool),
            keys=np.concatenate([np.empty(0, np.uint8)] + [entry[0].ravel() for entry in entries]),
            onsets=np.packbits(np.concatenate([np.empty(0, bool)] + [entry[1].ravel() for entry in entries])),
        )
        temporary.replace(self.path)


def load_corpus(
    folder: str | Path,
    cache_dir: str | Path | None = None,
    max_quarters: int = DEFAULT_MAX_QUARTERS,
    on_skip: Callable[[MidiError], None] | None = None,
    normalize_key: bool = False,
    grid: int = DEFAULT_GRID,
    on_split: Callable[[str], None] | None = None,
) -> list[CorpusPiece]:
    """Read every MIDI file under `folder` as four voices (voices.py), skipping unreadable ones.

    normalize_key: move each piece from its key (`keys.piece_key`: the best-fitting of two, by the bass it
    closes on) to C major or A minor by the smallest shift that keeps it inside the 88 keys
    (`keys.normalizing_shift`; docs/design.md, Keys). grid: steps of the voicing rule's
    cells, for files without four parts. Each skipped file is passed to `on_skip`, and the name of each
    file split by the voicing rule to `on_split` (default for both: one line on stderr). Raises
    CorpusError when no file is readable.
    """
    folder = Path(folder)
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    on_skip = on_skip or (lambda error: print(f"skipped {error}", file=sys.stderr))
    on_split = on_split or (lambda name: print(f"note: {name}: {SPLIT_NOTE}", file=sys.stderr))
    pieces = []
    files = midi_files(folder)
    cache = _VoiceCache(cache_dir, folder, max_quarters, grid)
    for path in files:
        name = path.relative_to(folder).as_posix()
        try:
            data = path.read_bytes()
            voices, notes, dropped, read_as = cache.read(data, path)
        except MidiError as error:
            on_skip(error)
            continue
        except OSError as error:
            on_skip(MidiError(path, f"cannot read file ({error.strerror or error})"))
            continue
        if read_as == READ_BY_RULE:
            on_split(name)
        quarters = voices.quarters()
        key = piece_key(quarters)
        shift = normalizing_shift(quarters, key) if normalize_key else 0
        if shift:
            quarters, voices = transpose_quarters(quarters, shift), voices.transposed(shift)
        pieces.append(CorpusPiece(name, quarters, notes, dropped, str(key), shift, voices, read_as))
    cache.save()
    if not pieces:
        raise CorpusError(f"{folder}: none of {len(files)} MIDI files could be read")
    return pieces


def corpus_fingerprint(pieces: list[CorpusPiece]) -> str:
    """A short hash of the corpus content, for keying caches derived from it."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(f"{piece.name}\0{piece.shift}\0".encode())
        digest.update(np.packbits(piece.quarters).tobytes())
        if piece.voices is not None:
            keys, onsets = piece.voices.lines()
            digest.update(keys.astype(np.uint8).tobytes() + np.packbits(onsets).tobytes())
    return digest.hexdigest()[:16]


def transpose_range(quarters: np.ndarray, max_transpose: int) -> tuple[int, int]:
    """(lowest, highest) shift in semitones that keeps every note of `quarters` in the 88 keys."""
    lowest, highest = key_range(quarters)
    if highest.max(initial=-1) < 0:  # silent
        return 0, 0
    return max(-max_transpose, -int(lowest.min())), min(max_transpose, NUM_KEYS - 1 - int(highest.max()))


def transpose_lines(keys: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Lines keys [B, V, S] moved up by shifts[b] semitones, rests staying rests; callers keep notes on the keys."""
    return torch.where(keys == SILENCE, keys, keys + shifts[:, None, None])


class VoiceQuarterDataset:
    """Single quarters of four voices for the VQ-VAE, each transposed at random inside the 88 keys.

    `batch(indices, generator)` returns the lines (keys long [B, V, 32], onsets bool [B, V, 32]),
    read over each whole piece (a note held into a quarter has no onset there). With augmentation off
    (or max_transpose 0) the quarters come as they are. With `with_previous` (a VQ-VAE with
    decoder_context) the lines of the quarters before them follow, silence before a piece's first,
    moved together.
    """

    def __init__(self, pieces: list[CorpusPiece], max_transpose: int = 0, with_previous: bool = False):
        lines = [p.voices.lines() for p in pieces]
        self.keys = torch.from_numpy(np.concatenate([keys for keys, _ in lines]))  # [N, V, 32]
        self.onsets = torch.from_numpy(np.concatenate([onsets for _, onsets in lines]))
        self.with_previous = with_previous
        sounding = self.keys != SILENCE
        lowest_key = torch.where(sounding, self.keys, NUM_KEYS).flatten(1).min(1).values  # [N]
        highest_key = torch.where(sounding, self.keys, -1).flatten(1).max(1).values
        # the index of each quarter's predecessor in its piece, -1 before a piece's first
        self.previous = torch.arange(len(self.keys)) - 1
        self.previous[np.cumsum([0] + [len(p.quarters) for p in pieces[:-1]])] = -1
        if with_previous:  # a quarter and its predecessor move together: keep both inside the keys
            has_previous = self.previous >= 0
            before = self.previous.clamp(min=0)
            lowest_key = torch.where(has_previous, torch.minimum(lowest_key, lowest_key[before]), lowest_key)
            highest_key = torch.where(has_previous, torch.maximum(highest_key, highest_key[before]), highest_key)
        # per quarter, the shifts that keep its notes inside the keys (silent quarters stay put)
        silent = highest_key < 0
        self.lowest_shift = torch.where(silent, 0, (-lowest_key).clamp(min=-max_transpose))
        self.highest_shift = torch.where(silent, 0, (NUM_KEYS - 1 - highest_key).clamp(max=max_transpose))

    def __len__(self) -> int:
        return len(self.keys)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        keys, onsets = self.keys[indices].long(), self.onsets[indices]
        if self.with_previous:
            previous = self.previous[indices]
            before = previous.clamp(min=0)
            first = (previous < 0)[:, None, None]
            before_keys = self.keys[before].long().masked_fill(first, SILENCE)
            before_onsets = self.onsets[before] & ~first
        if generator is not None:
            low, high = self.lowest_shift[indices], self.highest_shift[indices]
            shifts = low + (torch.rand(len(indices), generator=generator) * (high - low + 1)).long()
            keys = transpose_lines(keys, shifts)
            if self.with_previous:
                before_keys = transpose_lines(before_keys, shifts)
        return (keys, onsets, before_keys, before_onsets) if self.with_previous else (keys, onsets)


@dataclass
class EncodedPiece:
    """A piece's codes at each allowed transposition: codes[shift - lowest_shift] is [Q * 16]."""

    name: str
    lowest_shift: int
    codes: torch.Tensor  # long [num_shifts, Q * codes_per_quarter]


class CodeWindowDataset:
    """Windows of codes for the transformer: `window` codes starting on quarter boundaries.

    `batch(indices, generator)` returns (inputs, targets), both long [B, window - 1]; with a
    generator each window is taken at a random allowed transposition, without one untransposed.
    Pieces shorter than a window are left out (`skipped` counts them).

    With `melodies` (each piece's melody slot tokens [Q, slots], `bachsformer.melody`), batches
    also hold each window's melody, long [B, window quarters + melody_quarters - 1, slots]: its own
    quarters and those the last one hears ahead (REST past the piece's end), transposed with the
    codes. With a generator, a window's melody is replaced by NONE with probability `melody_dropout`.
    With `modes` as well (each piece's mode, 0 major or 1 minor), batches end with each window's
    mode, long [B]: a model that `hears_mode` hears it with the melody.
    """

    def __init__(
        self,
        pieces: list[EncodedPiece],
        window: int,
        codes_per_quarter: int,
        melodies: list[torch.Tensor] | None = None,
        melody_quarters: int = 0,
        melody_dropout: float = 0.0,
        modes: list[int] | None = None,
    ):
        if modes is not None and melodies is None:
            raise ValueError("a window's mode is heard with its melody: give melodies with modes")
        self.pieces = pieces
        self.modes = modes
        self.window = window
        self.codes_per_quarter = codes_per_quarter
        self.melodies = melodies
        self.melody_quarters = melody_quarters
        self.melody_dropout = melody_dropout
        starts = []
        self.skipped = 0
        for number, piece in enumerate(pieces):
            num_codes = piece.codes.shape[1]
            if num_codes < window:
                self.skipped += 1
                continue
            for start in range(0, num_codes - window + 1, codes_per_quarter):
                starts.append((number, start))
        self.starts = torch.tensor(starts, dtype=torch.long).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        rows, melodies, modes = [], [], []
        heard_quarters = -(-self.window // self.codes_per_quarter) + self.melody_quarters - 1
        for number, start in self.starts[indices].tolist():
            piece = self.pieces[number]
            shift = -piece.lowest_shift  # the untransposed row
            if generator is not None:
                shift = int(torch.randint(piece.codes.shape[0], (1,), generator=generator))
            rows.append(piece.codes[shift, start : start + self.window])
            if self.melodies is not None:
                tokens = window_melody(self.melodies[number], start // self.codes_per_quarter, heard_quarters)
                tokens = transpose_tokens(tokens, shift + piece.lowest_shift)
                if generator is not None and float(torch.rand(1, generator=generator)) < self.melody_dropout:
                    tokens = torch.full_like(tokens, MELODY_NONE)
                melodies.append(tokens)
            if self.modes is not None:
                modes.append(self.modes[number])
        windows = torch.stack(rows)
        if self.melodies is None:
            return windows[:, :-1], windows[:, 1:]
        if self.modes is None:
            return windows[:, :-1], windows[:, 1:], torch.stack(melodies)
        return windows[:, :-1], windows[:, 1:], torch.stack(melodies), torch.tensor(modes, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# scan


def _pitch_name(midi_pitch: int) -> str:
    names = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
    return f"{names[midi_pitch % 12]}{midi_pitch // 12 - 1}"


def scan(folder: str | Path, as_json: bool = False, max_quarters: int = DEFAULT_MAX_QUARTERS) -> int:
    """Print what each MIDI file under `folder` holds; returns the number of files read."""
    files = midi_files(folder)
    read = 0
    for path in files:
        name = path.relative_to(folder).as_posix()
        record = {"file": name, "quarters": None, "notes": None, "dropped_notes": None, "key": None, "voices": None}
        try:
            data = path.read_bytes()
            piece, _, read_as = read_piece_voices(data, name, DEFAULT_GRID, max_quarters)
        except OSError as error:
            record["error"] = f"cannot read file ({error.strerror or error})"
        except MidiError as error:
            record["error"] = error.reason
        else:
            read += 1
            keys = np.nonzero(piece.quarters.any(axis=(0, 2)))[0] + LOWEST_PITCH
            record.update(
                quarters=len(piece.quarters),
                notes=piece.notes,
                dropped_notes=piece.dropped_notes,
                voices=read_as,
                error=None,
            )
            record["key"] = str(piece_key(piece.quarters))
            low, high = _pitch_name(int(keys[0])), _pitch_name(int(keys[-1]))
        if as_json:
            print(json.dumps(record))
        elif record["error"] is None:
            dropped = f", {piece.dropped_notes} dropped" if piece.dropped_notes else ""
            print(
                f"{name}: {len(piece.quarters)} quarters, {piece.notes} notes{dropped}, {low}-{high}, {record['key']},"
                f" voices {'from its parts' if read_as == READ_FROM_PARTS else 'split by the voicing rule'}"
            )
        else:
            print(f"{name}: skipped: {record['error']}")
    print(f"{len(files)} files, {read} read, {len(files) - read} skipped")
    return read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bachsformer.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scan_parser = commands.add_parser("scan", help="report what each MIDI file in a folder holds")
    scan_parser.add_argument("folder", help="folder of MIDI files (searched recursively)")
    scan_parser.add_argument("--json", action="store_true", help="one JSON object per file")
    scan_parser.add_argument("--max-quarters", type=int, default=DEFAULT_MAX_QUARTERS)
    args = parser.parse_args(argv)
    try:
        read = scan(args.folder, args.json, args.max_quarters)
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if read else 1


if __name__ == "__main__":
    sys.exit(main())
