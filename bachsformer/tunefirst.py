"""Free music as Bach's chorales were made: a tune first, then its harmonization (docs/design.md, Tune first).

The tune model (bachsformer/tune.py) writes a tune of about the length asked for, in C major or A
minor, closing on time; `guided.harmonize` writes the voices below it, with cadences at its phrase
ends (its fermatas) and the last chord held under the last note. A primer (`--file`) is continued
the same way: its top line is the tune's beginning, its own quarters are kept, and the voices under
the new part follow on from it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from bachsformer.checkpoint import CheckpointError
from bachsformer.compose import Composition, in_key
from bachsformer.config import GenerateConfig
from bachsformer.gpt import GPT
from bachsformer.guided import harmonize
from bachsformer.keys import Key, estimate_key, normalizing_shift, parse_key, transpose_quarters
from bachsformer.metrics import highest_line
from bachsformer.tune import (
    MAJOR,
    MINOR,
    SLOTS_PER_QUARTER,
    TuneError,
    load_tune_model,
    piece_mode,
    sample_tunes,
    tune_quarters,
    tune_tokens,
)
from bachsformer.vqvae import VQVAE

MIN_QUARTERS = 8  # one phrase of a chorale: two bars of 4/4
TONICS = {MAJOR: 0, MINOR: 9}  # C major, A minor: where the tunes are written


def load_tune_for(path: str | Path, vq_vae: VQVAE, transformer: GPT, transformer_path, device="cpu") -> GPT:
    """The tune model at `path`, refused in one line unless it was trained beside this pair."""
    model = load_tune_model(path, map_location=device)
    if not model.config.countdown:
        raise CheckpointError(f"{path}: a tune model hears where its tune ends (countdown), and this one does not")
    recorded = model.checkpoint_info.get("transformer_fingerprint")
    if recorded is not None and recorded != transformer.fingerprint:
        raise CheckpointError(
            f"{path}: was trained beside transformer {recorded}, but {transformer_path} is"
            f" {transformer.fingerprint}; use the three models shipped together, or retrain the tune model"
            " (python train_tune.py)"
        )
    recorded = model.checkpoint_info.get("vq_vae_fingerprint")
    if recorded is not None and recorded != vq_vae.fingerprint:
        raise CheckpointError(
            f"{path}: was trained beside VQ-VAE {recorded}, but the pair's is {vq_vae.fingerprint};"
            " use the three models shipped together, or retrain the tune model (python train_tune.py)"
        )
    return model


def tune_modes(tune_model: GPT, seeds: list[int], request: str, primer_key: Key | None) -> list[int]:
    """Each tune's mode: the one `request` (--key) names, else the primer's, else drawn from the
    piece's seed with the corpus's share of minor tunes."""
    asked = parse_key(request) if request else None
    if asked is not None and asked.mode is not None:
        return [piece_mode(asked.mode)] * len(seeds)
    if primer_key is not None:
        return [piece_mode(primer_key.mode)] * len(seeds)
    minor_share = float(tune_model.checkpoint_info.get("minor_share", 0.5))
    draws = [float(torch.rand(1, generator=torch.Generator().manual_seed(seed + 1))) for seed in seeds]
    return [MINOR if draw < minor_share else MAJOR for draw in draws]


@torch.no_grad()
def compose_tune_first(
    vq_vae: VQVAE,
    transformer: GPT,
    tune_model: GPT,
    options: GenerateConfig,
    seeds: list[int],
    primer: np.ndarray | None = None,
    continuation_only: bool = False,
    normalize_key: bool = True,
) -> list[Composition]:
    """One piece per seed: a tune of `options.quarters` quarters (after the primer's, if any), harmonized.

    The tune closes on time (`tune.sample_tunes`); the piece ends with it. The tunes are sampled as one batch
    with options.tune_temperature and options.tune_top_p; piece i is the same alone or in a batch.
    """
    if options.quarters < MIN_QUARTERS:
        raise TuneError(f"--quarters {options.quarters}: a tune needs at least one phrase, {MIN_QUARTERS} quarters")
    primer_key, shift, prefix, primer_line = None, 0, None, None
    if primer is not None:
        primer = np.asarray(primer, dtype=bool)
        primer_key = estimate_key(primer)
        shift = normalizing_shift(primer, primer_key) if normalize_key else 0
        primer = transpose_quarters(primer, shift)  # in C major / A minor, as the models learned it
        primer_line = highest_line(primer)
        prefix = tune_tokens(primer_line)
    modes = tune_modes(tune_model, seeds, options.key, primer_key)
    kept = 0 if primer is None else len(primer)
    num_slots = (kept + options.quarters) * SLOTS_PER_QUARTER
    tunes = sample_tunes(
        tune_model, num_slots, seeds, modes, options.tune_temperature, options.tune_top_p, prefix=prefix
    )
    plain = dataclasses.replace(options, key="")  # the key is chosen below, once the piece is back in its own
    pieces = []
    for seed, mode, tokens in zip(seeds, modes, tunes):
        melody, fermatas = tune_quarters(tokens)
        if primer is not None:
            melody = np.concatenate([primer_line, melody[kept:]]) if len(melody) > kept else primer_line
        tonic = TONICS[mode] if normalize_key else (primer_key.tonic if primer_key else TONICS[mode])
        piece = harmonize(
            vq_vae,
            transformer,
            melody,
            plain,
            seed,
            normalize_key=False,
            phrase_ends=[f for f in fermatas if f >= kept * melody.shape[2]] or None,
            primer=primer,
            tonic=tonic,
        )
        quarters = transpose_quarters(piece.quarters, -shift)
        tune = transpose_quarters(piece.melody, -shift)
        if primer is not None and continuation_only:
            quarters, tune = quarters[kept:], tune[kept:]
        key = primer_key or Key(tonic, "minor" if mode == MINOR else "major")
        steps = melody.shape[2]
        if primer is not None and continuation_only:
            fermatas = [f - kept * steps for f in fermatas if f >= kept * steps]
        fermatas = tuple(f for f in fermatas if f < len(quarters) * steps)
        pieces.append(dataclasses.replace(in_key(quarters, key, options.key, tune), fermatas=fermatas))
    return pieces
