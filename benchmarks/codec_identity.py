"""Does the MIDI codec read files as an older version of it did? Quarters compared file by file.

    python -m benchmarks.codec_identity [--against 6269780] [--midi-dir data/midi] [--fuzz-files 650]

Loads bachsformer/midi.py as it was at git revision `--against` (default: the last commit with the
codec's own byte-level reader) beside the current one, reads every file of `--midi-dir` and the
damaged files of `python -m benchmarks.fuzz` with both, and prints how many read alike: the same
quarters, notes and dropped notes, or both refused. Each difference is listed: the file, what
each reader made of it and, for a file both read at one length, the sounding steps gained and lost
(a unison's sound kept, since CODEC_VERSION 4, gains steps and loses none); then the time each
reader takes over the corpus. The exit status is 0 when every corpus file reads alike, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import numpy as np

from bachsformer import midi
from benchmarks import fuzz

OLD_READER_REVISION = "6269780"  # the last commit whose midi.py parsed and wrote the bytes itself
REPO = Path(__file__).resolve().parents[1]


def module_at(revision: str, path: str = "bachsformer/midi.py") -> ModuleType:
    """The module `path` as it was at git `revision`, imported under a name of its own."""
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=REPO, capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / f"midi_{revision}.py"
        file.write_bytes(source)
        spec = importlib.util.spec_from_file_location(file.stem, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[file.stem] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return module


def outcome(reader: ModuleType, data: bytes, max_quarters: int) -> tuple:
    """("read", shape, notes, dropped, packed quarters) or ("refused", reason)."""
    try:
        piece = reader.read_midi_bytes(data, "file", max_quarters=max_quarters)
    except reader.MidiError as error:
        return ("refused", error.reason)
    return ("read", piece.quarters.shape, piece.notes, piece.dropped_notes, np.packbits(piece.quarters).tobytes())


def describe(result: tuple) -> str:
    if result[0] == "refused":
        return f"refused: {result[1]}"
    return f"{result[1][0]} quarters, {result[2]} notes, {result[3]} dropped"


def same(old: tuple, new: tuple) -> bool:
    """Both read the same piece, or both refused the file (the reasons may be worded differently)."""
    return old[0] == new[0] == "refused" or old == new


def compare(named_files: list[tuple[str, bytes]], old: ModuleType, max_quarters: int) -> list[tuple[str, tuple, tuple]]:
    """(name, old outcome, new outcome) of each file the two readers do not read alike."""
    differences = []
    for name, data in named_files:
        before, after = outcome(old, data, max_quarters), outcome(midi, data, max_quarters)
        if not same(before, after):
            differences.append((name, before, after))
    return differences


def seconds_to_read(reader: ModuleType, files: list[bytes], max_quarters: int, repeats: int = 3) -> float:
    """The best of `repeats` times for `reader` to read every file (refusals included)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for data in files:
            outcome(reader, data, max_quarters)
        best = min(best, time.perf_counter() - start)
    return best


def fuzz_files(count: int, midi_dir: str) -> list[tuple[str, bytes]]:
    """The damaged files `python -m benchmarks.fuzz` reads by default (seed 0), named by family."""
    seeds = fuzz.roll_seeds(np.random.default_rng(0)) + fuzz.corpus_seeds(midi_dir, 4, random.Random(0))
    files = itertools.islice(fuzz.damaged_files(seeds, 0), count)
    return [(fuzz.damaged_name(number, kind), data) for number, (kind, data) in enumerate(files)]


def steps_changed(before: tuple, after: tuple) -> str:
    """What changed between two readings of one file: sounding steps gained and lost (same length), or ""."""
    if before[0] != "read" or after[0] != "read" or before[1] != after[1]:
        return ""
    old, new = (np.unpackbits(np.frombuffer(result[4], np.uint8)).astype(bool) for result in (before, after))
    gained, lost = int((new & ~old).sum()), int((old & ~new).sum())
    # The codec's unison rule (CODEC_VERSION 4): a note inside a longer one of the same key no
    # longer silences the rest of the longer note, so steps are gained and none lost.
    why = " (sound kept in unisons)" if gained and not lost else ""
    return f"; {gained} sounding steps gained, {lost} lost{why}"


def report(title: str, total: int, differences: list[tuple[str, tuple, tuple]]) -> None:
    print(f"{title}: {total - len(differences)} of {total} read alike")
    kinds = Counter((before[0], after[0]) for _, before, after in differences)
    for (before, after), count in sorted(kinds.items()):
        print(f"  {count} {before} before, {after} now")
    for name, before, after in differences:
        print(f"    {name}: before {describe(before)}; now {describe(after)}{steps_changed(before, after)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default=OLD_READER_REVISION, help="git revision of the reader to compare with")
    parser.add_argument("--midi-dir", default="data/midi")
    parser.add_argument("--fuzz-files", type=int, default=650, help="damaged files to compare as well (0: none)")
    parser.add_argument("--max-quarters", type=int, default=midi.DEFAULT_MAX_QUARTERS)
    args = parser.parse_args(argv)

    old = module_at(args.against)
    corpus = [(path.name, path.read_bytes()) for path in sorted(Path(args.midi_dir).glob("*.mid"))]
    corpus_differences = compare(corpus, old, args.max_quarters)
    report(f"{args.midi_dir} (reader at {args.against} against the working tree)", len(corpus), corpus_differences)
    contents = [data for _, data in corpus]
    before, now = (seconds_to_read(reader, contents, args.max_quarters) for reader in (old, midi))
    print(f"  reading all {len(corpus)}: {before:.3f} s before, {now:.3f} s now (best of 3)")
    if args.fuzz_files:
        damaged = fuzz_files(args.fuzz_files, args.midi_dir)
        report("damaged files of benchmarks.fuzz", len(damaged), compare(damaged, old, args.max_quarters))
    return 1 if corpus_differences else 0


if __name__ == "__main__":
    sys.exit(main())
