"""The two MIDI libraries considered for the codec's parser, side by side: symusic and mido.

    python -m benchmarks.midi_libraries [--midi-dir data/midi] [--fuzz-files 650] [--repeats 3]

For each library: the best of `--repeats` times to parse every corpus file from bytes to its note
events (symusic: a Score and its notes as arrays; mido: a MidiFile and its messages), then, on the
damaged files of `python -m benchmarks.fuzz`, how many it parsed, how many it refused and with
which exception types, and its slowest file. Only the parse is timed: the codec's own rules (grid,
overlaps, trimming) come after it and cost the same either way.
"""

from __future__ import annotations

import argparse
import io
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import mido
import symusic

from benchmarks.codec_identity import fuzz_files


def symusic_notes(data: bytes) -> int:
    return sum(len(track.notes.numpy()["time"]) for track in symusic.Score.from_midi(data).tracks)


def mido_messages(data: bytes) -> int:
    return sum(len(track) for track in mido.MidiFile(file=io.BytesIO(data)).tracks)


LIBRARIES: dict[str, Callable[[bytes], int]] = {
    f"symusic {symusic.__version__}": symusic_notes,
    f"mido {mido.version_info}": mido_messages,
}


def corpus_seconds(parse: Callable[[bytes], int], files: list[bytes], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for data in files:
            parse(data)
        best = min(best, time.perf_counter() - start)
    return best


def damaged_outcomes(parse: Callable[[bytes], int], damaged: list[tuple[str, bytes]]) -> tuple[int, Counter, float]:
    """(files parsed, exception type -> files refused with it, slowest seconds)."""
    parsed, refused, slowest = 0, Counter(), 0.0
    for _, data in damaged:
        start = time.perf_counter()
        try:
            parse(data)
            parsed += 1
        except Exception as error:  # what each library raises is what is measured
            refused[type(error).__name__] += 1
        slowest = max(slowest, time.perf_counter() - start)
    return parsed, refused, slowest


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--midi-dir", default="data/midi")
    parser.add_argument("--fuzz-files", type=int, default=650)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = [path.read_bytes() for path in sorted(Path(args.midi_dir).glob("*.mid"))]
    damaged = fuzz_files(args.fuzz_files, args.midi_dir)
    print(f"{args.midi_dir}: {len(files)} files, {sum(map(len, files)):,} bytes; {len(damaged)} damaged files\n")
    print("| library | corpus parse s | damaged: parsed | refused (exception types) | slowest ms |")
    print("|---|---|---|---|---|")
    for name, parse in LIBRARIES.items():
        seconds = corpus_seconds(parse, files, args.repeats)
        parsed, refused, slowest = damaged_outcomes(parse, damaged)
        types = ", ".join(f"{count} {kind}" for kind, count in refused.most_common())
        print(f"| {name} | {seconds:.3f} | {parsed} | {sum(refused.values())} ({types}) | {slowest * 1000:.0f} |")


if __name__ == "__main__":
    main()
