"""Guided generation speed: harmonizing a melody and regenerating a passage, beside plain generation.

    python -m benchmarks.guided [--quarters 64] [--passage 8] [--candidates 16] [--threads 1] [--set KEY=VALUE]
    python -m benchmarks.guided --quarters 128 --end-to-end   # also generate.py --melody, process start to file

The melody is the Soprano of the corpus's first chorale with at least --quarters quarters, cut to
that length; the passage is regenerated in the middle of the whole chorale. Plain generation writes
a piece of the same length. Uses the model pair in models/ (speed does not depend on the weights,
but the pair must load together). With a transformer that hears the melody, harmonizing is also
timed with classifier-free guidance (two passes per candidate) when the config does not use it.
--threads sets torch's CPU threads (`sampling.set_sampling_threads`; 0: its automatic choice).
Each row gives wall-clock seconds and the CPU seconds of this process (on a machine that other
work shares, the CPU seconds move less). --end-to-end writes the melody to a MIDI file and times
`python generate.py --melody` on it as a new process, with the threads generate.py chooses itself
(OMP_NUM_THREADS removed): starting Python, importing torch, loading the models, harmonizing and
writing the file. Last, the melody is harmonized once more from its MIDI file to the bytes of the
harmonized file, with the seconds of each part (benchmarks/parts.py).
"""

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bachsformer import compose as compose_module
from bachsformer import harmonize as harmonize_module
from bachsformer.compose import compose, load_models
from bachsformer.config import load_config
from bachsformer.data import midi_files
from bachsformer.evaluate_harmonization import chorale_voices
from bachsformer.harmonize import harmonize, regenerate
from bachsformer.midi import Meter, write_midi
from bachsformer.sampling import set_sampling_threads
from benchmarks.parts import print_parts, time_parts


def generate_end_to_end(melody, overrides: list[str]) -> tuple[float, str]:
    """Seconds `python generate.py --melody` takes on melody quarters [Q, 88, 32], and its summary line."""
    environment = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    with tempfile.TemporaryDirectory() as folder:
        tune = write_midi(melody, Path(folder) / "tune.mid")
        command = [sys.executable, "generate.py", "--melody", str(tune), "--out", folder]
        command += [argument for override in overrides for argument in ("--set", override)]
        started = time.perf_counter()
        result = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
        return time.perf_counter() - started, result.stdout.strip().splitlines()[-1]


def benchmark_chorale(midi_dir: str, quarters: int):
    """(path, Soprano quarters [Q, 88, 32], lower voices' quarters) of the first chorale whose Soprano has at least
    `quarters` quarters: the benchmarks' melody."""
    for path in midi_files(midi_dir):
        voices = chorale_voices(path)
        if voices is not None and len(voices[0]) >= quarters:
            return path, *voices
    raise SystemExit(f"no chorale in {midi_dir} has a Soprano of {quarters} quarters")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quarters", type=int, default=64, help="melody length (and plain piece length)")
    parser.add_argument("--passage", type=int, default=8, help="quarters to regenerate")
    parser.add_argument("--candidates", type=int, help="candidates per quarter (default: the config's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (generate.py chooses 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    parser.add_argument("--end-to-end", action="store_true", help="also time generate.py --melody as a new process")
    args = parser.parse_args()
    threads = set_sampling_threads(args.threads)

    config = load_config("config.yaml", args.set)
    vq_vae, transformer = load_models(config.models.vq_vae, config.models.transformer, args.device)
    options = dataclasses.replace(config.generate, quarters=args.quarters, key="")
    if args.candidates:
        options = dataclasses.replace(options, candidates=args.candidates)
    path, soprano, lower = benchmark_chorale(config.data.midi_dir, args.quarters)
    piece = soprano | lower
    middle = (len(piece) - args.passage) // 2 + 1
    print(f"{path.name}: melody of {args.quarters} quarters; {options.candidates} candidates; {threads} thread(s)")
    harmonize(vq_vae, transformer, soprano[:4], options, seed=0)  # warm-up

    rows = []  # (what, wall-clock seconds, CPU seconds of this process)

    def timed(name: str, run) -> None:
        started, cpu_started = time.perf_counter(), time.process_time()
        run()
        rows.append((name, time.perf_counter() - started, time.process_time() - cpu_started))

    melody = soprano[: args.quarters]
    timed(f"plain generation, {args.quarters} quarters", lambda: compose(vq_vae, transformer, options, [0]))
    timed(
        f"harmonize {args.quarters} quarters (guidance {options.guidance:g})",
        lambda: harmonize(vq_vae, transformer, melody, options, seed=0),
    )
    if transformer.config.melody_quarters and options.guidance == 1.0:
        guided = dataclasses.replace(options, guidance=2.0)
        timed(
            f"harmonize {args.quarters} quarters (guidance 2)",
            lambda: harmonize(vq_vae, transformer, melody, guided, seed=0),
        )
    timed(
        f"regenerate {args.passage} of {len(piece)} quarters",
        lambda: regenerate(vq_vae, transformer, piece, middle, middle + args.passage - 1, options, seed=0),
    )
    if args.end_to_end:
        seconds, summary = generate_end_to_end(melody, args.set)
        rows.append((f"generate.py --melody, {args.quarters} quarters, end to end", seconds, None))
    print(f"{'':48} {'wall':>8} {'CPU':>8}")
    for name, seconds, cpu_seconds in rows:
        cpu = f"{cpu_seconds:6.2f} s" if cpu_seconds is not None else ""
        print(f"{name:48} {seconds:6.2f} s {cpu}")
    if args.end_to_end:
        print(f"(generate.py said: {summary})")

    def harmonized_file():  # as generate.py --melody: the tune read from its file, harmonized, written
        with tempfile.TemporaryDirectory() as folder:
            tune = harmonize_module.read_melody(write_midi(melody, Path(folder) / "tune.mid"))
            piece = harmonize(vq_vae, transformer, tune.quarters, options, seed=0)
            compose_module.piece_midi_bytes(piece, Meter.free(options.tempo), options.program)

    print_parts(f"harmonize {args.quarters} quarters, from file to file", time_parts(harmonized_file))


if __name__ == "__main__":
    main()
