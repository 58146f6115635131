"""Turning logits into codes: temperature, top-k, top-p, and one random stream per piece.

Each piece of a batch owns a `torch.Generator` seeded with its own seed and draws all its uniform
numbers from it up front; a code is then picked by inverting the cumulative distribution. So a
piece comes out the same whether it is sampled alone or in a batch of any size.
"""

from __future__ import annotations

import torch


def check_sampling_options(temperature: float, top_k: int, top_p: float, vocab_size: int) -> None:
    """Raise ValueError naming the option when a sampling setting is out of range."""
    if not temperature > 0:
        raise ValueError(f"temperature must be above 0, got {temperature}")
    if not 0 <= top_k <= vocab_size:
        raise ValueError(f"top-k must lie in 1 ... {vocab_size} (0 turns it off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top-p must lie in (0, 1], got {top_p}")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Probabilities [B, V] from logits [B, V] after temperature, top-k and top-p (nucleus).

    top_k 0 and top_p 1.0 turn those filters off. The most likely code always survives.
    """
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the more likely codes
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs / sorted_probs.sum(-1, keepdim=True))
    return probs


def draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Codes [B] from probabilities [B, V] (need not sum to 1) and uniforms [B] in [0, 1)."""
    cumulative = probs.cumsum(-1)
    threshold = uniforms[:, None] * cumulative[:, -1:]
    picked = (cumulative <= threshold).sum(-1)
    # rounding can put the threshold on the total: fall back to the last code that is allowed
    last_allowed = (probs > 0).cumsum(-1).argmax(-1)
    return torch.minimum(picked, last_allowed)


def piece_uniforms(seeds: list[int], count: int) -> torch.Tensor:
    """[B, count] uniforms, row i drawn from its own generator seeded with seeds[i]."""
    return torch.stack([torch.rand(count, generator=torch.Generator().manual_seed(s)) for s in seeds])
