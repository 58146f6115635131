"""Free music as Bach's chorales were made: a tune first, then its harmonization (docs/design.md, Tune first).

The tune model (bachsformer/tune.py) writes a tune of about the length asked for, in C major or A
minor, closing on time; `harmonize.harmonize` writes the voices below it, with cadences at its phrase
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
from bachsformer.compose import Composition, as_voices, in_key
from bachsformer.config import GenerateConfig
from bachsformer.gpt import GPT
from bachsformer.harmonize import harmonize
from bachsformer.keys import MODES, Key, estimate_key, normalizing_shift, parse_key, transpose_quarters
from bachsformer.midi import STEPS_PER_QUARTER
from bachsformer.tune import (
    MAJOR,
    MINOR,
    SLOTS_PER_QUARTER,
    VOCAB_SIZE,
    TuneError,
    load_tune_model,
    piece_mode,
    sample_tunes,
    tune_quarters,
    tune_tokens,
)
from bachsformer.voices import Voices
from bachsformer.voicing import grid_steps
from bachsformer.vqvae import VQVAE

MIN_QUARTERS = 8  # one phrase of a chorale: two bars of 4/4
TONICS = {MAJOR: 0, MINOR: 9}  # C major, A minor: where the tunes are written


def load_tune_for(path: str | Path, normalize_key: bool, device="cpu") -> GPT:
    """The tune model at `path`, refused in one line unless it writes what tune first needs.

    A tune model reads no codes, so any tune model goes with any pair; it is checked only for its
    tokens (the tune vocabulary, the countdown to the tune's end, no melody heard) and for the key
    its tunes are written in: moved to C major / A minor when `normalize_key` (`data.normalize_key`),
    the setting the pair learned the music with, or in their own keys when not.
    """
    model = load_tune_model(path, map_location=device)
    config = model.config
    retrain = "train one with python train_tune.py --out runs/my_tune and pass --set models.tune=runs/my_tune/best.pt"
    if config.vocab_size != VOCAB_SIZE or config.codes_per_quarter != SLOTS_PER_QUARTER or config.melody_quarters:
        raise CheckpointError(
            f"{path}: not a tune model of the tune tokens ({config.vocab_size} tokens, {config.codes_per_quarter} per"
            f" quarter, where a tune has {VOCAB_SIZE} and {SLOTS_PER_QUARTER}); {retrain}"
        )
    if not config.countdown:
        raise CheckpointError(
            f"{path}: a tune model hears where its tune ends (countdown), and this one does not; {retrain}"
        )
    data = (model.checkpoint_info.get("train_config") or {}).get("data") or {}
    learned = data.get("normalize_key", True)
    if bool(learned) != bool(normalize_key):
        written = "in C major and A minor" if learned else "in their own keys"
        raise CheckpointError(
            f"{path}: writes tunes {written} (data.normalize_key={str(learned).lower()}), but the pair's setting"
            f" is data.normalize_key={str(normalize_key).lower()}; give the setting the models were trained with"
            f" (--set data.normalize_key=...), or {retrain}"
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


@torch.inference_mode()
def compose_tune_first(
    vq_vae: VQVAE,
    transformer: GPT,
    tune_model: GPT,
    options: GenerateConfig,
    seeds: list[int],
    primer: np.ndarray | Voices | None = None,
    continuation_only: bool = False,
    normalize_key: bool = True,
    progress=None,
) -> list[Composition]:
    """One piece per seed: a tune of `options.quarters` quarters (after the primer's, if any), harmonized.

    The tune closes on time (`tune.sample_tunes`); the piece ends with it. The tunes are sampled as one batch
    with options.tune_temperature and options.tune_top_p, their closes drawn options.tune_ending_drafts ways;
    piece i is the same alone or in a batch.
    primer: the voices to continue (or quarters [P, 88, 32], split by the voicing rule): its Soprano
    begins the tune, and its own voices are kept.
    progress: called with 1 after each quarter is harmonized, and once a piece is done with the quarters its
    tune left unwritten (a tune that closed before the length asked): options.quarters in all per seed; or None.
    """
    if options.quarters < MIN_QUARTERS:
        raise TuneError(
            f"a piece of {options.quarters} quarters is shorter than a tune's one phrase:"
            f" ask for {MIN_QUARTERS} or more"
        )
    primer_key, shift, prefix, primer_line = None, 0, None, None
    if primer is not None:
        primer = as_voices(primer, grid_steps(options.grid, STEPS_PER_QUARTER))
        primer_key = estimate_key(primer.quarters())
        shift = normalizing_shift(primer.quarters(), primer_key) if normalize_key else 0
        primer = primer.transposed(shift)  # in C major / A minor, as the models learned it
        primer_line = primer.voice_quarters(0)
        prefix = tune_tokens(primer_line)
    modes = tune_modes(tune_model, seeds, options.key, primer_key)
    kept = 0 if primer is None else primer.num_quarters
    num_slots = (kept + options.quarters) * SLOTS_PER_QUARTER
    tunes = sample_tunes(
        tune_model,
        num_slots,
        seeds,
        modes,
        options.tune_temperature,
        options.tune_top_p,
        prefix=prefix,
        ending_drafts=options.tune_ending_drafts,
    )
    plain = dataclasses.replace(options, key="")  # the key is chosen below, once the piece is back in its own
    pieces = []
    written = 0  # quarters of the piece harmonized so far

    def count(quarters: int):
        nonlocal written
        written += quarters
        progress(quarters)

    for seed, mode, tokens in zip(seeds, modes, tunes):
        written = 0
        melody, fermatas = tune_quarters(tokens)
        if primer is not None:
            melody = np.concatenate([primer_line, melody[kept:]]) if len(melody) > kept else primer_line
        # the melody is written in the models' key (normalized above): it closes on that key's tonic
        closing_key = Key(TONICS[mode] if normalize_key or not primer_key else primer_key.tonic, MODES[mode])
        piece = harmonize(
            vq_vae,
            transformer,
            melody,
            plain,
            seed,
            normalize_key=False,
            phrase_ends=[f for f in fermatas if f >= kept * melody.shape[2]] or None,
            primer=primer,
            closing_key=closing_key,
            progress=count if progress is not None else None,
        )
        if progress is not None and written < options.quarters:
            progress(options.quarters - written)
        voices = piece.voices.transposed(-shift)
        tune = transpose_quarters(piece.melody, -shift)
        if primer is not None and continuation_only:
            voices, tune = voices.sliced(kept, voices.num_quarters), tune[kept:]
        key = primer_key or closing_key
        steps = melody.shape[2]
        if primer is not None and continuation_only:
            fermatas = [f - kept * steps for f in fermatas if f >= kept * steps]
        fermatas = tuple(f for f in fermatas if f < voices.num_quarters * steps)
        pieces.append(dataclasses.replace(in_key(voices, key, options.key, tune), fermatas=fermatas))
    return pieces
