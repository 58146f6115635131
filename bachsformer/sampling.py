"""Turning logits into codes: temperature, top-k, top-p, and one random stream per piece.

Codes are drawn with the Gumbel-max trick: argmax(logits / temperature + Gumbel noise) is a sample
of softmax(logits / temperature). Each piece owns a `torch.Generator` seeded with its own seed and
draws all its noise from it up front, so a piece comes out the same whether it is sampled alone
or in a batch of any size, and a decoding step costs two operations instead of a softmax,
a cumulative sum and a search.

`set_sampling_threads` chooses how many CPU threads sampling runs on: one unless told otherwise.
"""

from __future__ import annotations

import math
import os

import torch


def set_sampling_threads(threads: int = 0) -> int:
    """Set torch's CPU threads for sampling, on purpose, and return how many: `threads`, or for 0 the
    OMP_NUM_THREADS environment variable when it holds a positive number, else 1.

    One thread by default, not torch's one per core: the models are small, so their operations
    are too short to share among threads, and where other programs hold the cores threads that
    wait for each other stall. Measured (docs/speed.md): harmonizing 16 quarters on a busy 2-core
    machine took 48.6 s with torch's default 2 threads and 2.6 s with one.
    """
    if threads < 0:
        raise ValueError(f"threads must be 0 (automatic) or more, got {threads}")
    if not threads:
        from_environment = os.environ.get("OMP_NUM_THREADS", "").strip()
        threads = int(from_environment) if from_environment.isdigit() and int(from_environment) > 0 else 1
    torch.set_num_threads(threads)
    return threads


def check_sampling_options(temperature: float, top_k: int, top_p: float, vocab_size: int) -> None:
    """Raise ValueError naming the option when a sampling setting is out of range."""
    if not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a number above 0, got {temperature}")
    if not 0 <= top_k <= vocab_size:
        raise ValueError(f"top-k must lie in 1 ... {vocab_size} (0 turns it off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top-p must lie in (0, 1], got {top_p}")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Logits [B, V] divided by the temperature, -inf outside the top-k and top-p (nucleus) sets.

    top_k 0 and top_p 1.0 turn those filters off. The likeliest code always survives.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the likelier codes
        remove = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, mass_before >= top_p)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def gumbel(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise of `shape`, drawn on the CPU from `generator`."""
    uniforms = torch.rand(shape, generator=generator)
    return -torch.log(-torch.log(uniforms.clamp_(1e-12, 1 - 1e-7)))


def gumbel_noise(seeds: list[int], count: int, vocab_size: int) -> torch.Tensor:
    """[B, count, V] Gumbel noise, row b drawn from its own generator seeded with seeds[b]."""
    return torch.stack([gumbel((count, vocab_size), torch.Generator().manual_seed(seed)) for seed in seeds])


def draw(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Codes [B] sampled from softmax(logits) [B, V], given Gumbel noise [B, V]."""
    return (logits + noise).argmax(-1)
