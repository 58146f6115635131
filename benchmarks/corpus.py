"""Corpus reading speed: files/s and quarters/s, parsed cold and read back from the cache.

    python -m benchmarks.corpus [--midi-dir data/midi]

Cold parses every file with the MIDI codec and writes the cache (into a temporary folder, so
your data/cache is left alone); cached reads the same corpus again from that cache.
"""

import argparse
import tempfile
import time

from bachsformer.data import load_corpus


def timed_load(midi_dir: str, cache_dir: str) -> tuple[float, list]:
    start = time.perf_counter()
    pieces = load_corpus(midi_dir, cache_dir, on_skip=lambda error: None)
    return time.perf_counter() - start, pieces


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--midi-dir", default="data/midi")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        cold, pieces = timed_load(args.midi_dir, cache_dir)
        cached, _ = timed_load(args.midi_dir, cache_dir)
    quarters = sum(len(p.quarters) for p in pieces)
    notes = sum(p.notes for p in pieces)
    print(f"{args.midi_dir}: {len(pieces)} files, {quarters} quarters, {notes} notes")
    print(f"{'':8} {'seconds':>8} {'files/s':>9} {'quarters/s':>11}")
    for name, seconds in (("cold", cold), ("cached", cached)):
        print(f"{name:8} {seconds:8.2f} {len(pieces) / seconds:9.0f} {quarters / seconds:11.0f}")


if __name__ == "__main__":
    main()
