"""How good are the models, and how Bach-like is what they write? One command, one table.

    python -m bachsformer.evaluate                    # models/, 32 pieces as long as held-out files
    python -m bachsformer.evaluate --quarters 128     # 32 pieces of 128 quarters each
    python -m bachsformer.evaluate --num 64 --set models.transformer=runs/transformer/best.pt
    python -m bachsformer.evaluate --json results.json

VQ-VAE: frame F1, onset F1 and codebook perplexity on the held-out files. Transformer: held-out
bits per code beside unigram and bigram baselines. Generated music: features of the MIDI itself
against the held-out Bach files (overlapping areas of their distributions, after Yang & Lerch
2018), and the longest run of quarters copied verbatim, up to transposition, from the training
files. The held-out files are the same in both training scripts and here.

By default piece i is as long as held-out file i (cycling through them): pitch range grows with
length and scale consistency falls with it (a piece that modulates covers more keys), so pieces
are compared with Bach at the lengths Bach wrote.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bachsformer.codes import baselines, bits_per_code, encode_pieces, evaluation_windows
from bachsformer.compose import compose, load_models
from bachsformer.config import load_config
from bachsformer.data import load_corpus, split
from bachsformer.errors import ArgumentParser, exit_on_user_error
from bachsformer.metrics import FEATURE_NAMES, compare, longest_verbatim_runs, piece_features
from bachsformer.training import resolve_device
from bachsformer.vqvae import reconstruction_scores

COPY_LIMIT = 8  # a verbatim run of this many quarters counts as replaying the training data


def evaluate(config, num_pieces: int, num_quarters: int | None, seed: int, device: torch.device) -> dict:
    """All metrics as one JSON-ready dict; num_quarters None: the held-out files' lengths."""
    vq_vae, transformer = load_models(config.models.vq_vae, config.models.transformer, device)
    pieces = load_corpus(config.data.midi_dir, config.data.cache_dir, config.data.max_quarters)
    train, held_out = split(pieces, config.data.validation_fraction)
    held_out = held_out or train
    results = {"models": {"vq_vae": config.models.vq_vae, "transformer": config.models.transformer}}
    results["data"] = {"files": len(pieces), "train": len(train), "held_out": len(held_out)}
    results["vq_vae"] = reconstruction_scores(vq_vae, [p.quarters for p in held_out])

    window = transformer.config.block_size + 1
    held_out_windows = evaluation_windows(encode_pieces(vq_vae, held_out, 0, config.data.cache_dir), window)
    train_codes = encode_pieces(vq_vae, train, 0, config.data.cache_dir)
    results["transformer"] = {
        "bits_per_code": bits_per_code(transformer, held_out_windows),
        **baselines(train_codes, held_out_windows, vq_vae.num_embeddings),
    }

    options = config.generate
    started = time.perf_counter()
    seeds = [seed + i for i in range(num_pieces)]
    if num_quarters is None:
        lengths = [len(held_out[i % len(held_out)].quarters) for i in range(num_pieces)]
    else:
        lengths = [num_quarters] * num_pieces
    # one batch at the longest length, each piece cut to its own: piece i depends on its seed alone
    generated = compose(
        vq_vae,
        transformer,
        max(lengths),
        seeds,
        None,
        options.temperature,
        options.top_k,
        options.top_p,
        min_note_steps=options.min_note_steps,
    )
    generated = [piece[:length] for piece, length in zip(generated, lengths)]
    reference = [p.quarters for p in held_out]
    music = compare(generated, reference)
    copies = longest_verbatim_runs(generated, [p.quarters for p in train])
    reference_features = [piece_features(q) for q in reference]
    music["reference_range"] = {
        name: [min(f[name] for f in reference_features), max(f[name] for f in reference_features)]
        for name in ("silent_quarters", "repetition")
    }
    music["longest_verbatim_run"] = {"per_piece": copies, "max": max(copies), "mean": float(np.mean(copies))}
    music["sampling"] = {
        "pieces": num_pieces,
        "quarters": "held-out lengths" if num_quarters is None else num_quarters,
        "lengths": lengths,
        "seed": seed,
        "temperature": options.temperature,
        "top_k": options.top_k,
        "top_p": options.top_p,
        "min_note_steps": options.min_note_steps,
        "seconds": round(time.perf_counter() - started, 1),
    }
    results["music"] = music
    results["targets"] = targets(results)
    return results


def targets(results: dict) -> dict:
    """The issue's targets for the generated music, each True or False."""
    music = results["music"]
    generated, reference = music["generated_mean"], music["reference_mean"]

    def in_range(name):
        low, high = music["reference_range"][name]
        return low <= generated[name] <= high

    return {
        "scale_consistency_within_0.03": abs(generated["scale_consistency"] - reference["scale_consistency"]) <= 0.03,
        "mean_overlapping_area_at_least_0.75": music["mean_overlapping_area"] >= 0.75,
        f"no_verbatim_run_of_{COPY_LIMIT}_quarters": music["longest_verbatim_run"]["max"] < COPY_LIMIT,
        "silent_quarters_within_held_out_range": in_range("silent_quarters"),
        "repetition_within_held_out_range": in_range("repetition"),
    }


def print_table(results: dict) -> None:
    vq, lm, music = results["vq_vae"], results["transformer"], results["music"]
    print(f"data: {results['data']['files']} files, {results['data']['held_out']} held out")
    print(
        f"VQ-VAE (held out): frame F1 {vq['frame_f1']:.4f}, onset F1 {vq['onset_f1']:.4f},"
        f" perplexity {vq['perplexity']:.2f} of {vq['codes_used']} codes used"
    )
    print(
        f"transformer (held out): {lm['bits_per_code']:.3f} bits per code;"
        f" baselines unigram {lm['unigram_bits']:.3f}, bigram {lm['bigram_bits']:.3f}"
    )
    sampling = music["sampling"]
    lengths = sampling["lengths"]
    length = f"{lengths[0]}" if min(lengths) == max(lengths) else f"{min(lengths)}-{max(lengths)} (held-out lengths)"
    print(
        f"\ngenerated: {sampling['pieces']} pieces of {length} quarters"
        f" (temperature {sampling['temperature']:g}, top-k {sampling['top_k']}, top-p {sampling['top_p']:g})"
        f" vs {music['num_reference']} held-out Bach files"
    )
    print("| feature | generated mean | Bach mean | overlapping area |\n|---|---|---|---|")
    for name in FEATURE_NAMES:
        print(
            f"| {name} | {music['generated_mean'][name]:.3f} | {music['reference_mean'][name]:.3f}"
            f" | {music['overlapping_area'][name]:.3f} |"
        )
    print(f"| **mean overlapping area** | | | **{music['mean_overlapping_area']:.3f}** |")
    print(f"pitch-class histogram distance (total variation): {music['pitch_class_distance']:.3f}")
    copies = music["longest_verbatim_run"]
    print(f"longest verbatim run from the training files: max {copies['max']}, mean {copies['mean']:.2f} quarters")
    print("\ntargets:")
    for name, met in results["targets"].items():
        print(f"  {'met    ' if met else 'MISSED '} {name}")


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    parser.add_argument("--num", type=int, default=32, help="pieces to generate (default 32)")
    parser.add_argument("--quarters", type=int, help="quarters per piece (default: piece i as long as held-out file i)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write all results to this JSON file")
    args = parser.parse_args()
    if args.num < 1 or (args.quarters is not None and args.quarters < 1):
        parser.error("--num and --quarters must be at least 1")
    config = load_config(args.config, args.set)
    results = evaluate(config, args.num, args.quarters, args.seed, resolve_device(args.device))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    exit_on_user_error(main)
