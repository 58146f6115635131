"""From the two trained models to music: load a matching pair, sample codes, decode quarters."""

from __future__ import annotations

import numpy as np
import torch

from bachsformer.checkpoint import CheckpointError
from bachsformer.gpt import GPT
from bachsformer.midi import drop_short_notes
from bachsformer.vqvae import VQVAE

DEFAULT_MIN_CONTEXT = 96  # six quarters, half of the default window of 191 codes


def load_models(vq_vae_path, transformer_path, device="cpu") -> tuple[VQVAE, GPT]:
    """Load the VQ-VAE and the transformer, refusing a pair that does not belong together."""
    vq_vae = VQVAE.from_checkpoint(vq_vae_path, map_location=device)
    transformer = GPT.from_checkpoint(transformer_path, map_location=device)
    trained_on = transformer.checkpoint_info.get("vq_vae_fingerprint")
    if transformer.config.vocab_size != vq_vae.num_embeddings:
        raise CheckpointError(
            f"{transformer_path}: its vocabulary has {transformer.config.vocab_size} codes but"
            f" {vq_vae_path} has {vq_vae.num_embeddings}; train the transformer on this VQ-VAE"
            " (python train_transformer.py)"
        )
    if transformer.config.block_size <= vq_vae.codes_per_quarter:
        raise CheckpointError(
            f"{transformer_path}: its window of {transformer.config.block_size} codes does not hold a quarter"
            f" ({vq_vae.codes_per_quarter} codes) and the code after it; retrain it with a larger gpt.block_size"
            " (python train_transformer.py)"
        )
    if trained_on != vq_vae.fingerprint:
        raise CheckpointError(
            f"{transformer_path}: learned the codes of VQ-VAE {trained_on}, but {vq_vae_path} is"
            f" {vq_vae.fingerprint}; use the pair trained together, or retrain the transformer"
            " on this VQ-VAE (python train_transformer.py)"
        )
    return vq_vae, transformer


@torch.no_grad()
def decode_quarters(vq_vae: VQVAE, codes: torch.Tensor) -> np.ndarray:
    """Codes [Q * 16] -> quarters, bool [Q, 88, 32] (note probabilities above one half)."""
    return (vq_vae.decode(codes.view(-1, vq_vae.codes_per_quarter)) > 0.5).cpu().numpy()


@torch.no_grad()
def compose(
    vq_vae: VQVAE,
    transformer: GPT,
    num_quarters: int,
    seeds: list[int],
    primer: np.ndarray | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    continuation_only: bool = False,
    min_note_steps: int = 0,
) -> list[np.ndarray]:
    """One piece per seed: `num_quarters` new quarters, after the primer's own unless asked not to.

    primer: quarters [P, 88, 32] to continue (encoded, then continued code by code).
    min_note_steps: notes shorter than this many steps are dropped from the decoded music: the
    decoder's stray fragments (the chorales hold no note shorter than 4 steps, 1/8 of a quarter).
    Returns bool quarters [Q, 88, 32] per piece.
    """
    if num_quarters < 1:
        raise ValueError(f"the number of quarters must be at least 1, got {num_quarters}")
    codes_per_quarter = vq_vae.codes_per_quarter
    # Each code sees at least this much context; whole quarters, fewer than the window holds.
    min_context = min(DEFAULT_MIN_CONTEXT, (transformer.config.block_size - 1) // codes_per_quarter * codes_per_quarter)
    device = transformer.first_code_probs.device
    prompt = None
    if primer is not None:
        primer_codes = vq_vae.encode(torch.from_numpy(primer).float().to(device)).flatten()
        prompt = primer_codes.expand(len(seeds), -1)
    codes = transformer.generate(
        prompt,
        num_quarters * codes_per_quarter,
        seeds,
        temperature,
        top_k,
        top_p,
        codes_per_quarter=codes_per_quarter,
        min_context=min_context,
    )
    new_codes = codes[:, codes.shape[1] - num_quarters * codes_per_quarter :]
    pieces = []
    for row in new_codes:
        quarters = decode_quarters(vq_vae, row)
        if min_note_steps > 1:
            quarters = drop_short_notes(quarters, min_note_steps)
        if primer is not None and not continuation_only:
            quarters = np.concatenate([primer.astype(bool), quarters])
        pieces.append(quarters)
    return pieces
