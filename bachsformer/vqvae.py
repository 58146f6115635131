"""Ludovico: a convolutional VQ-VAE that turns a quarter (88 keys x 32 steps) into 16 codes.

The encoder takes 88 x 32 -> 44 x 16 -> 22 x 8 -> 10 x 4 -> 8 x 2; each of the 8 x 2 latent
vectors snaps to the nearest of `num_embeddings` codebook entries, learned by exponential moving
averages (van den Oord et al. 2017, appendix A.1) and kept in buffers so checkpoints hold them.
Codes that fall out of use are restarted from recent encoder outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from bachsformer.errors import check_at_least
from bachsformer.midi import NUM_KEYS, STEPS_PER_QUARTER

LATENT_SHAPE = (8, 2)  # what the encoder's strides make of 88 x 32
SEMITONES_PER_ROW = 8  # the encoder's stride along pitch (2 x 2 x 2 x 1): one latent row per 8 keys


@dataclass
class VQVAEConfig:
    num_embeddings: int = 16  # codebook size: the transformer's vocabulary
    embedding_dim: int = 64
    hidden_channels: int = 64
    residual_layers: int = 2
    residual_channels: int = 32
    commitment_cost: float = 0.25
    decay: float = 0.99  # EMA decay of the codebook statistics
    dead_code_threshold: float = 1.0  # restart a code used by fewer vectors per batch (EMA)
    transition_weight: float = 1.0  # loss weight of cells where a key starts or stops sounding

    def __post_init__(self):
        """Refuse sizes no model can have; the message starts with the key (config.py adds the section)."""
        check_at_least(self, 1, "num_embeddings", "embedding_dim", "residual_channels")
        check_at_least(self, 2, "hidden_channels")
        check_at_least(self, 0, "residual_layers", "commitment_cost", "dead_code_threshold")
        if not 0 < self.decay < 1:
            raise ValueError(f"decay: must lie in (0, 1), got {self.decay}")
        if not self.transition_weight > 0:
            raise ValueError(f"transition_weight: must be above 0, got {self.transition_weight}")


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over DDP ranks (the codebook statistics must agree everywhere); a no-op alone."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook with EMA updates and dead-code restarts. Speaks indices."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.decay = config.decay
        self.commitment_cost = config.commitment_cost
        self.dead_code_threshold = config.dead_code_threshold
        embedding = torch.randn(config.num_embeddings, config.embedding_dim)
        self.register_buffer("embedding", embedding)  # [K, D]
        self.register_buffer("cluster_size", torch.ones(config.num_embeddings))  # EMA counts [K]
        self.register_buffer("embedding_sum", embedding.clone())  # EMA sums [K, D]

    def indices(self, vectors: torch.Tensor) -> torch.Tensor:
        """Nearest code for each row of vectors [M, D] -> [M]; distances in fp32 always."""
        vectors = vectors.float()
        distances = (
            vectors.pow(2).sum(1, keepdim=True)
            - 2 * vectors @ self.embedding.t()
            + self.embedding.pow(2).sum(1)[None, :]
        )  # [M, K]
        return distances.argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of `indices` [...] -> [..., D]."""
        return F.embedding(indices, self.embedding)

    def forward(self, latents: torch.Tensor):
        """latents [N, D, H, W] -> (quantized [N, D, H, W], indices [N, H, W], loss, perplexity)."""
        with torch.autocast(latents.device.type, enabled=False):
            latents = latents.float()
            n, d, h, w = latents.shape
            flat = latents.permute(0, 2, 3, 1).reshape(-1, d)  # [N*H*W, D]
            indices = self.indices(flat)
            counts = torch.bincount(indices, minlength=self.embedding.shape[0]).float()
            if self.training:
                self._update(flat.detach(), indices, counts)
            quantized = self.lookup(indices).view(n, h, w, d).permute(0, 3, 1, 2)
            loss = self.commitment_cost * F.mse_loss(latents, quantized.detach())
            quantized = latents + (quantized - latents).detach()  # straight-through gradient
            probs = counts / counts.sum()
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return quantized, indices.view(n, h, w), loss, perplexity

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor):
        """EMA step of counts and sums, then restart codes whose EMA count fell below threshold."""
        sums = torch.zeros_like(self.embedding_sum).index_add_(0, indices, flat)
        counts, sums = _all_reduce(counts.clone()), _all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        num_codes = self.cluster_size.shape[0]
        smoothed = (self.cluster_size + 1e-5) / (total + num_codes * 1e-5) * total  # Laplace
        self.embedding.copy_(self.embedding_sum / smoothed[:, None])

        dead = self.cluster_size < self.dead_code_threshold
        if dead.any():
            # Restart from encoder outputs of this batch; rank 0's choice is broadcast.
            picks = torch.randint(len(flat), (int(dead.sum()),), device=flat.device)
            fresh = flat[picks] + 1e-3 * torch.randn_like(flat[picks])
            if dist.is_available() and dist.is_initialized():
                dist.broadcast(fresh, 0)
            self.embedding[dead] = fresh
            self.embedding_sum[dead] = fresh * self.dead_code_threshold
            self.cluster_size[dead] = self.dead_code_threshold


class ResidualStack(nn.Module):
    def __init__(self, channels: int, residual_channels: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(channels, residual_channels, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(residual_channels, channels, 1),
            )
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return F.relu(x)


@dataclass
class VQVAEOutput:
    logits: torch.Tensor  # [N, 88, 32] reconstruction, before the sigmoid
    loss: torch.Tensor  # reconstruction + commitment
    reconstruction_loss: torch.Tensor  # binary cross-entropy per cell
    codes: torch.Tensor  # [N, 16]
    perplexity: torch.Tensor  # of the codes used in this batch


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        h, d = config.hidden_channels, config.embedding_dim
        r, n = config.residual_channels, config.residual_layers
        self.encoder = nn.Sequential(
            nn.Conv2d(1, h // 2, 4, stride=2, padding=1),  # 88 x 32 -> 44 x 16
            nn.ReLU(),
            nn.Conv2d(h // 2, h, 4, stride=2, padding=1),  # -> 22 x 8
            nn.ReLU(),
            nn.Conv2d(h, h, 4, stride=2, padding=(0, 1)),  # -> 10 x 4
            nn.ReLU(),
            nn.Conv2d(h, h, (3, 4), stride=(1, 2), padding=(0, 1)),  # -> 8 x 2
            ResidualStack(h, r, n),
            nn.Conv2d(h, d, 1),
        )
        self.quantizer = VectorQuantizer(config)
        self.decoder = nn.Sequential(
            nn.Conv2d(d, h, 3, padding=1),
            ResidualStack(h, r, n),
            nn.ConvTranspose2d(h, h, (3, 4), stride=(1, 2), padding=(0, 1)),  # 8 x 2 -> 10 x 4
            nn.ReLU(),
            nn.ConvTranspose2d(h, h, 4, stride=2, padding=(0, 1)),  # -> 22 x 8
            nn.ReLU(),
            nn.ConvTranspose2d(h, h // 2, 4, stride=2, padding=1),  # -> 44 x 16
            nn.ReLU(),
            nn.ConvTranspose2d(h // 2, 1, 4, stride=2, padding=1),  # -> 88 x 32
        )

    @property
    def codes_per_quarter(self) -> int:
        return LATENT_SHAPE[0] * LATENT_SHAPE[1]

    @property
    def num_embeddings(self) -> int:
        return self.config.num_embeddings

    def _check_rolls(self, rolls: torch.Tensor) -> torch.Tensor:
        if rolls.ndim != 3 or tuple(rolls.shape[1:]) != (NUM_KEYS, STEPS_PER_QUARTER):
            raise ValueError(f"rolls must be [N, {NUM_KEYS}, {STEPS_PER_QUARTER}], got {list(rolls.shape)}")
        return rolls.float()[:, None]  # [N, 1, 88, 32]

    def forward(self, rolls: torch.Tensor) -> VQVAEOutput:
        """rolls [N, 88, 32] in {0, 1} -> reconstruction logits, losses, codes."""
        latents = self.encoder(self._check_rolls(rolls))  # [N, D, 8, 2]
        quantized, indices, commitment_loss, perplexity = self.quantizer(latents)
        logits = self.decoder(quantized)[:, 0]  # [N, 88, 32]
        reconstruction_loss = self.reconstruction_loss(logits, rolls)
        return VQVAEOutput(
            logits=logits,
            loss=reconstruction_loss + commitment_loss,
            reconstruction_loss=reconstruction_loss,
            codes=indices.flatten(1),
            perplexity=perplexity,
        )

    def reconstruction_loss(self, logits: torch.Tensor, rolls: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy per cell, with cells where a key starts or stops sounding weighted.

        An onset right after a one-step gap is a single 0 among 1s: under plain cross-entropy it
        costs almost nothing to miss, yet missing it merges two notes. transition_weight > 1 makes
        such cells count more.
        """
        rolls = rolls.float()
        cross_entropy = F.binary_cross_entropy_with_logits(logits.float(), rolls, reduction="none")  # [N, 88, 32]
        if self.config.transition_weight == 1.0:
            return cross_entropy.mean()
        weights = torch.ones_like(rolls)
        changes = rolls[:, :, 1:] != rolls[:, :, :-1]  # [N, 88, 31]: onsets, offsets and gaps
        weights[:, :, 1:] += (self.config.transition_weight - 1.0) * changes
        return (weights * cross_entropy).sum() / weights.sum()

    @torch.no_grad()
    def encode(self, rolls: torch.Tensor) -> torch.Tensor:
        """rolls [N, 88, 32] -> codes LongTensor [N, 16], row-major over the 8 x 2 latent grid."""
        latents = self.encoder(self._check_rolls(rolls))  # [N, D, 8, 2]
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        return self.quantizer.indices(flat).view(len(rolls), -1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [N, 16] -> note probabilities [N, 88, 32]."""
        if codes.ndim != 2 or codes.shape[1] != self.codes_per_quarter:
            raise ValueError(f"codes must be [N, {self.codes_per_quarter}], got {list(codes.shape)}")
        if len(codes) and (codes.min() < 0 or codes.max() >= self.num_embeddings):
            raise ValueError(f"codes must lie in 0 ... {self.num_embeddings - 1}")
        vectors = self.quantizer.lookup(codes).view(len(codes), *LATENT_SHAPE, -1)
        logits = self.decoder(vectors.permute(0, 3, 1, 2).to(self.decoder[0].weight.dtype))
        return torch.sigmoid(logits[:, 0].float())

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu") -> VQVAE:
        """The one loader: rebuilds the model from the config stored in the checkpoint."""
        from bachsformer.checkpoint import load_model

        return load_model(cls, VQVAEConfig, "vq_vae", path, map_location)


def _f1(predicted: torch.Tensor, target: torch.Tensor) -> float:
    true_positives = (predicted & target).sum().item()
    denominator = predicted.sum().item() + target.sum().item()
    return 2 * true_positives / denominator if denominator else 1.0


def _onsets(roll: torch.Tensor) -> torch.Tensor:
    """Steps where a key starts sounding: roll [88, T] bool -> bool [88, T]."""
    before = torch.zeros_like(roll)
    before[:, 1:] = roll[:, :-1]
    return roll & ~before


@torch.no_grad()
def reconstruction_scores(model: VQVAE, pieces: list[np.ndarray], batch_size: int = 512) -> dict:
    """Frame F1, onset F1 (threshold 0.5) and code perplexity of `model` on whole pieces.

    Each piece [Q, 88, 32] is encoded and decoded quarter by quarter, then judged as one roll, so
    a note held across a quarter boundary is one onset, as in the music.
    """
    device = next(model.parameters()).device
    frames_true, frames_predicted, onsets_true, onsets_predicted = [], [], [], []
    counts = torch.zeros(model.num_embeddings)
    for quarters in pieces:
        rolls = torch.from_numpy(np.asarray(quarters))
        predicted = []
        for start in range(0, len(rolls), batch_size):
            codes = model.encode(rolls[start : start + batch_size].to(device))
            counts += torch.bincount(codes.flatten().cpu(), minlength=model.num_embeddings)
            predicted.append(model.decode(codes).cpu() > 0.5)
        target = rolls.bool().permute(1, 0, 2).flatten(1)  # [88, Q * 32]
        predicted = torch.cat(predicted).permute(1, 0, 2).flatten(1)
        frames_true.append(target)
        frames_predicted.append(predicted)
        onsets_true.append(_onsets(target))
        onsets_predicted.append(_onsets(predicted))
    probs = counts / counts.sum()
    return {
        "frame_f1": _f1(torch.cat(frames_predicted, 1), torch.cat(frames_true, 1)),
        "onset_f1": _f1(torch.cat(onsets_predicted, 1), torch.cat(onsets_true, 1)),
        "perplexity": torch.exp(-(probs * torch.log(probs + 1e-10)).sum()).item(),
        "codes_used": int((counts > 0).sum()),
    }
