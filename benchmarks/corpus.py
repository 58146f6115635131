"""Corpus reading speed: files/s and quarters/s, parsed cold and read back from the cache.

    python -m benchmarks.corpus [--midi-dir data/midi] [--normalize-key] [--repeats 3]

`codec` reads every file with the MIDI codec alone (`midi.read_midi_bytes`, the files already in
memory); `cold` is `load_corpus` parsing every file, estimating its key and writing the cache (into a
temporary folder, so your data/cache is left alone); `cached` is `load_corpus` again, from that cache.
With --normalize-key both loads also move each piece to C major / A minor, as training does. Each
figure is the best of --repeats runs (a fresh cache folder for each cold one), to see past the noise of
a busy machine.
"""

import argparse
import tempfile
import time

from bachsformer.data import load_corpus, midi_files
from bachsformer.midi import read_midi_bytes


def timed_load(midi_dir: str, cache_dir: str, normalize_key: bool) -> tuple[float, list]:
    start = time.perf_counter()
    pieces = load_corpus(midi_dir, cache_dir, on_skip=lambda error: None, normalize_key=normalize_key)
    return time.perf_counter() - start, pieces


def timed_codec(contents: list[bytes]) -> float:
    """Seconds to read every file's bytes (read from disk beforehand) with the codec alone."""
    start = time.perf_counter()
    for data in contents:
        try:
            read_midi_bytes(data)
        except ValueError:  # MidiError: skipped, as load_corpus would
            pass
    return time.perf_counter() - start


def best_times(midi_dir: str, normalize_key: bool, repeats: int) -> tuple[float, float, float, list]:
    """(codec, cold, cached) seconds, each the best of `repeats`, and the pieces read."""
    contents = [path.read_bytes() for path in midi_files(midi_dir)]
    codec = min(timed_codec(contents) for _ in range(repeats))
    cold = cached = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache_dir:
            seconds, pieces = timed_load(midi_dir, cache_dir, normalize_key)
            cold = min(cold, seconds)
            cached = min(cached, timed_load(midi_dir, cache_dir, normalize_key)[0])
    return codec, cold, cached, pieces


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--midi-dir", default="data/midi")
    parser.add_argument("--normalize-key", action="store_true", help="key-normalize the pieces as training does")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the best is printed")
    args = parser.parse_args()
    codec, cold, cached, pieces = best_times(args.midi_dir, args.normalize_key, args.repeats)
    quarters = sum(len(p.quarters) for p in pieces)
    notes = sum(p.notes for p in pieces)
    print(f"{args.midi_dir}: {len(pieces)} files, {quarters} quarters, {notes} notes")
    print(f"{'':8} {'seconds':>8} {'files/s':>9} {'quarters/s':>11}")
    for name, seconds in (("codec", codec), ("cold", cold), ("cached", cached)):
        print(f"{name:8} {seconds:8.2f} {len(pieces) / seconds:9.0f} {quarters / seconds:11.0f}")


if __name__ == "__main__":
    main()
