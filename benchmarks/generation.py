"""Sampling speed: cached, continuous generation against the naive loop, and where a free piece's time goes.

    python -m benchmarks.generation [--quarters 128] [--batch 16] [--threads 1] [--device cpu] [--seed 3]

The naive loop recomputes the whole window for every code, as the original bachsformer does;
both sample the same codes (a test holds them equal). Uses the transformer in models/ when there
is one, else an untrained model of the config's size (speed does not depend on the weights).
With the whole model set in models/, it then writes one free piece as `generate.py --seed 3` does
(a tune, harmonized, its MIDI file's bytes) and prints the seconds of each part (benchmarks/parts.py).
"""

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from bachsformer import compose
from bachsformer.compose import load_models
from bachsformer.config import load_config
from bachsformer.gpt import GPT
from bachsformer.midi import Meter
from bachsformer.tunefirst import compose_tune_first, load_tune_for
from benchmarks.parts import print_parts, time_parts


def timed(model: GPT, num_codes: int, seeds: list[int], use_cache: bool) -> float:
    start = time.perf_counter()
    model.generate(None, num_codes, seeds, use_cache=use_cache)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quarters", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (generate.py uses 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--seed", type=int, default=3, help="the free piece's seed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config("config.yaml")
    path = Path(config.models.transformer)
    model = GPT.from_checkpoint(path, args.device) if path.is_file() else GPT(config.gpt).to(args.device).eval()
    source = path if path.is_file() else "untrained, config.yaml size"
    parameters = sum(p.numel() for p in model.parameters())
    codes = args.quarters * 16
    print(
        f"model: {source}; {model.config.n_layer} layers x {model.config.n_embd}, {parameters / 1e6:.2f} M parameters"
    )
    print(f"device {args.device}, {args.threads} thread(s), {args.quarters} quarters = {codes} codes per piece")
    timed(model, 64, [0], use_cache=True)  # warm-up

    single = timed(model, codes, [0], use_cache=True)
    batch = timed(model, codes, list(range(args.batch)), use_cache=True)
    rows = [
        ("cached, 1 piece", single, codes / single),
        (f"cached, batch of {args.batch}", batch, args.batch * codes / batch),
    ]
    if not args.skip_naive:
        naive = timed(model, codes, [0], use_cache=False)
        rows.append(("naive, 1 piece", naive, codes / naive))
    print(f"{'':24} {'s/piece':>9} {'codes/s':>10} {'vs naive':>9}")
    for name, seconds, rate in rows:
        per_piece = seconds / (args.batch if "batch" in name else 1)
        ratio = f"{rate / (codes / naive):8.1f}x" if not args.skip_naive else ""
        print(f"{name:24} {per_piece:9.2f} {rate:10.0f} {ratio:>9}")
    if all(Path(p).is_file() for p in (config.models.vq_vae, config.models.transformer, config.models.tune)):
        profile_free_piece(config, args)


def profile_free_piece(config, args) -> None:
    """The parts of one free piece of --quarters quarters written as generate.py writes it by default."""
    vq_vae, transformer = load_models(config.models.vq_vae, config.models.transformer, args.device)
    tune_model = load_tune_for(config.models.tune, config.data.normalize_key, args.device)
    options = dataclasses.replace(config.generate, quarters=args.quarters)

    def free_piece(quarters: int = args.quarters):
        piece_options = dataclasses.replace(options, quarters=quarters)
        piece = compose_tune_first(vq_vae, transformer, tune_model, piece_options, [args.seed])[0]
        compose.piece_midi_bytes(piece, Meter.free(options.tempo), options.program)

    free_piece(8)  # warm-up

    print_parts(f"a free piece of {args.quarters} quarters, tune first, seed {args.seed}", time_parts(free_piece))


if __name__ == "__main__":
    main()
