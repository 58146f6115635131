"""The corpus as VQ-VAE codes: encoding (cached), and how well a model predicts held-out codes.

Bits per code are measured on held-out pieces, untransposed, cut into disjoint windows that start
on quarter boundaries; every code but the first of a window is predicted once. The two baselines
(unigram and bigram models counted on the training codes) are scored on exactly the same targets,
so the three numbers compare directly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bachsformer.data import CorpusPiece, EncodedPiece, corpus_fingerprint, transpose_lines, transpose_range
from bachsformer.melody import window_melody
from bachsformer.vqvae import VQVAE


@torch.no_grad()
def encode_pieces(
    model: VQVAE,
    pieces: list[CorpusPiece],
    max_transpose: int,
    cache_dir: str | Path | None = None,
    batch_size: int = 1024,
) -> list[EncodedPiece]:
    """Codes of every piece at every transposition augmentation may use, each encoded once.

    Cached on disk, keyed by the VQ-VAE's fingerprint, the corpus content and max_transpose.
    """
    cached = None
    if cache_dir is not None:
        key = f"{model.fingerprint or 'unsaved'}-{corpus_fingerprint(pieces)}-t{max_transpose}"
        cached = Path(cache_dir) / "codes" / f"{key}.pt"
        if cached.exists():
            stored = torch.load(cached, weights_only=True)
            return [EncodedPiece(*item) for item in zip(stored["names"], stored["lowest_shifts"], stored["codes"])]
    device = next(model.parameters()).device
    encoded = []
    for piece in tqdm(pieces, desc=f"encoding codes (transpositions up to {max_transpose})", unit="piece"):
        low, high = transpose_range(piece.quarters, max_transpose)
        keys, onsets = (torch.from_numpy(lines).to(device) for lines in piece.voices.lines())  # [Q, V, 32]
        rows = []
        for shift in range(low, high + 1):
            shifted = transpose_lines(keys, torch.full((len(keys),), shift, device=device))
            rows.append(model.encode(shifted, onsets, batch_size).cpu().flatten())  # [Q * 16]
        encoded.append(EncodedPiece(piece.name, low, torch.stack(rows)))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_suffix(".tmp")
        torch.save(
            {
                "names": [p.name for p in encoded],
                "lowest_shifts": [p.lowest_shift for p in encoded],
                "codes": [p.codes for p in encoded],
            },
            temporary,
        )
        temporary.replace(cached)
    return encoded


def untransposed(piece: EncodedPiece) -> torch.Tensor:
    """The piece's codes as written: long [Q * 16]."""
    return piece.codes[-piece.lowest_shift]


def evaluation_windows(pieces: list[EncodedPiece], window: int) -> list[torch.Tensor]:
    """Disjoint windows of up to `window` codes over each piece, untransposed (at least 2 codes)."""
    windows = []
    for piece in pieces:
        codes = untransposed(piece)
        windows += [part for part in codes.split(window) if len(part) >= 2]
    return windows


def evaluation_modes(pieces: list[EncodedPiece], modes: list[int], window: int) -> list[int]:
    """The mode of each of `evaluation_windows(pieces, window)`, in the same order: its piece's."""
    return [
        mode
        for piece, mode in zip(pieces, modes, strict=True)
        for part in untransposed(piece).split(window)
        if len(part) >= 2
    ]


def evaluation_melodies(
    pieces: list[EncodedPiece], melodies: list[torch.Tensor], window: int, codes_per_quarter: int, heard_ahead: int
) -> list[torch.Tensor]:
    """The melody slot tokens of each of `evaluation_windows(pieces, window)`, in the same order.

    melodies: each piece's tokens [Q, slots]. A window's melody holds its quarters and the
    `heard_ahead` - 1 after them (REST past the piece's end), as `CodeWindowDataset` gives them.
    """
    window_quarters = -(-window // codes_per_quarter)
    windowed = []
    for piece, tokens in zip(pieces, melodies, strict=True):
        for number, part in enumerate(untransposed(piece).split(window)):
            if len(part) >= 2:
                first_quarter = number * window // codes_per_quarter
                windowed.append(window_melody(tokens, first_quarter, window_quarters + heard_ahead - 1))
    return windowed


@torch.no_grad()
def bits_per_code(
    model,
    windows: list[torch.Tensor],
    batch_size: int = 64,
    melodies: list[torch.Tensor] | None = None,
    modes: list[int] | None = None,
) -> float:
    """Mean cross-entropy of the model on every code but each window's first, in bits.

    melodies: each window's melody slot tokens (`evaluation_melodies`), heard by a model with the
    melody condition; without, such a model hears "no melody". modes: each window's mode (0 major,
    1 minor), heard with its melody by a model that `hears_mode`.
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0
    by_length: dict[int, list[int]] = {}
    for number, window in enumerate(windows):
        by_length.setdefault(len(window), []).append(number)
    for same_length in by_length.values():
        for start in range(0, len(same_length), batch_size):
            numbers = same_length[start : start + batch_size]
            batch = torch.stack([windows[n] for n in numbers]).to(device)
            melody = None if melodies is None else torch.stack([melodies[n] for n in numbers]).to(device)
            mode = None if modes is None else torch.tensor([modes[n] for n in numbers], device=device)
            logits, _ = model(batch[:, :-1], melody=melody, mode=mode)
            losses = torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="sum"
            )
            total += losses.item()
            count += batch[:, 1:].numel()
    return total / count / math.log(2)


def baselines(train: list[EncodedPiece], windows: list[torch.Tensor], vocab_size: int) -> dict:
    """Bits per code on `windows` of a unigram and a bigram model counted on the training codes.

    Both use add-one smoothing; the targets are those `bits_per_code` scores.
    """
    unigram = np.ones(vocab_size)
    bigram = np.ones((vocab_size, vocab_size))
    for piece in train:
        codes = untransposed(piece).numpy()
        unigram += np.bincount(codes, minlength=vocab_size)
        np.add.at(bigram, (codes[:-1], codes[1:]), 1)
    unigram /= unigram.sum()
    bigram /= bigram.sum(1, keepdims=True)
    previous = np.concatenate([w[:-1].numpy() for w in windows])
    targets = np.concatenate([w[1:].numpy() for w in windows])
    return {
        "unigram_bits": float(-np.log2(unigram[targets]).mean()),
        "bigram_bits": float(-np.log2(bigram[previous, targets]).mean()),
    }


def first_code_distribution(pieces: list[EncodedPiece], codes_per_quarter: int, vocab_size: int) -> torch.Tensor:
    """How often each code opens a quarter in `pieces`: where sampling without a primer starts."""
    counts = torch.ones(vocab_size)  # add-one: no code is impossible
    for piece in pieces:
        counts += torch.bincount(piece.codes[:, ::codes_per_quarter].flatten(), minlength=vocab_size)
    return counts / counts.sum()
