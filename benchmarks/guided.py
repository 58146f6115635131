"""Guided generation speed: harmonizing a melody and regenerating a passage, beside plain generation.

    python -m benchmarks.guided [--quarters 64] [--passage 8] [--candidates 16] [--threads 1] [--set KEY=VALUE]

The melody is the Soprano of the corpus's first chorale with at least --quarters quarters, cut to
that length; the passage is regenerated in the middle of the whole chorale. Plain generation writes
a piece of the same length. Uses the model pair in models/ (speed does not depend on the weights,
but the pair must load together). With a transformer that hears the melody, harmonizing is also
timed with classifier-free guidance (two passes per candidate) when the config does not use it.
"""

import argparse
import dataclasses
import time

import torch

from bachsformer.compose import compose, load_models
from bachsformer.config import load_config
from bachsformer.data import midi_files
from bachsformer.guided import harmonize, regenerate
from bachsformer.harmonization import chorale_voices


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quarters", type=int, default=64, help="melody length (and plain piece length)")
    parser.add_argument("--passage", type=int, default=8, help="quarters to regenerate")
    parser.add_argument("--candidates", type=int, help="candidates per quarter (default: the config's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (generate.py uses 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config("config.yaml", args.set)
    vq_vae, transformer = load_models(config.models.vq_vae, config.models.transformer, args.device)
    options = dataclasses.replace(config.generate, quarters=args.quarters, key="")
    if args.candidates:
        options = dataclasses.replace(options, candidates=args.candidates)
    for path in midi_files(config.data.midi_dir):
        voices = chorale_voices(path)
        if voices is not None and len(voices[0]) >= args.quarters:
            break
    else:
        raise SystemExit(f"no chorale in {config.data.midi_dir} has a Soprano of {args.quarters} quarters")
    soprano, lower = voices
    piece = soprano | lower
    middle = (len(piece) - args.passage) // 2 + 1
    print(f"{path.name}: melody of {args.quarters} quarters; {options.candidates} candidates; {args.threads} thread(s)")
    harmonize(vq_vae, transformer, soprano[:4], options, seed=0)  # warm-up

    rows = []
    started = time.perf_counter()
    compose(vq_vae, transformer, options, [0])
    rows.append((f"plain generation, {args.quarters} quarters", time.perf_counter() - started))
    started = time.perf_counter()
    harmonize(vq_vae, transformer, soprano[: args.quarters], options, seed=0)
    rows.append((f"harmonize {args.quarters} quarters (guidance {options.guidance:g})", time.perf_counter() - started))
    if transformer.config.melody_quarters and options.guidance == 1.0:
        started = time.perf_counter()
        harmonize(vq_vae, transformer, soprano[: args.quarters], dataclasses.replace(options, guidance=2.0), seed=0)
        rows.append((f"harmonize {args.quarters} quarters (guidance 2)", time.perf_counter() - started))
    started = time.perf_counter()
    regenerate(vq_vae, transformer, piece, middle, middle + args.passage - 1, options, seed=0)
    rows.append((f"regenerate {args.passage} of {len(piece)} quarters", time.perf_counter() - started))
    for name, seconds in rows:
        print(f"{name:48} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
