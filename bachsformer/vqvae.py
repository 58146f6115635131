"""Ludovico: a convolutional VQ-VAE that turns a quarter (88 keys x 32 steps) into 16 codes.

Input and output are two 88 x 32 channels per quarter (docs/design.md, The VQ-VAE): *sounding*, the codec's roll
with its one-step repeat gaps filled, and *onsets*, the steps where a note starts. A repeated note
is then an explicit onset rather than a one-step hole the decoder must reproduce. Both channels
are read from a piece's quarters as consecutive (a note held across a quarter boundary has no onset
in the next quarter), and `decode` splits each sounding run at its onsets, across quarter boundaries
too, giving back the codec's roll. `onset_channel: false` is the older one-channel model (the roll).

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
    transition_weight: float = 1.0  # loss weight of sounding cells where a key starts or stops sounding
    onset_channel: bool = True  # input and output the onsets beside the sounding notes (False: the roll alone)
    onset_weight: float = 1.0  # loss weight of the onset channel against the sounding one
    tie_weight: float = 1.0  # loss weight of the onset cells at a quarter's first step where a key sounds (see below)
    decoder_context: bool = False  # the decoder also hears the codes of the quarter before (what sounded at its end)

    def __post_init__(self):
        """Refuse sizes no model can have; the message starts with the key (config.py adds the section)."""
        check_at_least(self, 1, "num_embeddings", "embedding_dim", "residual_channels")
        check_at_least(self, 2, "hidden_channels")
        check_at_least(self, 0, "residual_layers", "commitment_cost", "dead_code_threshold")
        if not 0 < self.decay < 1:
            raise ValueError(f"decay: must lie in (0, 1), got {self.decay}")
        for key in ("transition_weight", "onset_weight", "tie_weight"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}: must be above 0, got {getattr(self, key)}")


# Keys added to VQVAEConfig after checkpoints were shipped, with the values that rebuild those checkpoints.
ADDED_CONFIG_KEYS = {"onset_channel": False, "tie_weight": 1.0, "decoder_context": False}


def _piece_roll(quarters: torch.Tensor) -> torch.Tensor:
    """Quarters [N, 88, 32] -> one roll [88, N * 32], the quarters read as consecutive."""
    return quarters.permute(1, 0, 2).reshape(NUM_KEYS, -1)


def _quarters(roll: torch.Tensor, num_quarters: int) -> torch.Tensor:
    """One roll [..., 88, N * 32] -> quarters [N, ..., 88, 32] (the inverse of `_piece_roll`)."""
    split = roll.reshape(*roll.shape[:-1], num_quarters, STEPS_PER_QUARTER)  # [..., 88, N, 32]
    return split.movedim(-2, 0)


def _step_before(roll: torch.Tensor) -> torch.Tensor:
    """roll [..., T] shifted one step later: element t holds step t - 1 (silence before the first)."""
    return F.pad(roll[..., :-1], (1, 0))


def quarter_channels(
    quarters: torch.Tensor, consecutive: bool = True, previous: torch.Tensor | None = None
) -> torch.Tensor:
    """The codec's quarters [N, 88, 32] -> (sounding, onsets), bool [N, 2, 88, 32].

    sounding is the roll with every one-step hole filled (the codec's gap between a note and the
    same pitch starting again); onsets marks the first step of each note. consecutive: the N
    quarters are one piece in order; otherwise each is read alone, or, given previous [88, 32],
    each as the quarter after it (its first step read after previous's last).
    """
    quarters = quarters.bool()
    roll = _piece_roll(quarters) if consecutive else quarters  # [88, N * 32] or [N, 88, 32]
    before = _step_before(roll)
    if previous is not None and not consecutive:
        before[..., 0] = previous.bool()[:, -1]
    after = F.pad(roll[..., 1:], (0, 1))
    sounding = roll | (before & after)
    onsets = roll & ~before
    channels = torch.stack([sounding, onsets], dim=-3)  # [2, 88, N * 32] or [N, 2, 88, 32]
    return _quarters(channels, len(quarters)) if consecutive else channels


def split_at_onsets(sounding: torch.Tensor, onsets: torch.Tensor, consecutive: bool = True) -> torch.Tensor:
    """Note probabilities [N, 88, 32] whose cells above 0.5 are the codec's roll.

    sounding, onsets: probabilities [N, 88, 32]. Where a note starts (onset above 0.5) while the same
    key sounded the step before, the step before is set to 0: the earlier note loses its last step,
    as the codec writes a repeated note.
    """
    sounding_roll = _piece_roll(sounding) if consecutive else sounding
    onset_roll = _piece_roll(onsets) if consecutive else onsets
    is_sounding = sounding_roll > 0.5
    restarts = is_sounding & _step_before(is_sounding) & (onset_roll > 0.5)  # a new note in a sounding run
    ends = F.pad(restarts[..., 1:], (0, 1))  # the step before each restart
    roll = sounding_roll.masked_fill(ends, 0.0)
    return _quarters(roll, len(sounding)) if consecutive else roll


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


def transposed_convolution(x: torch.Tensor, layer: nn.ConvTranspose2d) -> torch.Tensor:
    """layer(x) for x [N, C_in, H, W] as one matrix product and a col2im (`F.fold`): the same sums.

    Each input pixel's C_in values times the weight give its out-channels x kernel patch; fold adds
    the overlapping patches into place. Faster than the library kernel where the layer writes
    few channels (the decoder's last). Plain layers only: no groups, dilation or output padding.
    """
    if layer.groups != 1 or layer.dilation != (1, 1) or layer.output_padding != (0, 0):
        raise ValueError("transposed_convolution takes plain layers: no groups, dilation or output padding")
    height, width = x.shape[2:]
    (kernel_h, kernel_w), (stride_h, stride_w), (pad_h, pad_w) = layer.kernel_size, layer.stride, layer.padding
    out_size = ((height - 1) * stride_h - 2 * pad_h + kernel_h, (width - 1) * stride_w - 2 * pad_w + kernel_w)
    patches = layer.weight.flatten(1).t() @ x.flatten(2)  # [N, C_out * kh * kw, H * W]
    y = F.fold(patches, out_size, layer.kernel_size, padding=layer.padding, stride=layer.stride)
    return y if layer.bias is None else y + layer.bias[:, None, None]


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
    logits: torch.Tensor  # [N, C, 88, 32] reconstruction of the input channels, before the sigmoid
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
        c = self.input_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(c, h // 2, 4, stride=2, padding=1),  # 88 x 32 -> 44 x 16
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
        heard = 2 * d if config.decoder_context else d  # with context: the quarter before's vectors beside its own
        self.decoder = nn.Sequential(
            nn.Conv2d(heard, h, 3, padding=1),
            ResidualStack(h, r, n),
            nn.ConvTranspose2d(h, h, (3, 4), stride=(1, 2), padding=(0, 1)),  # 8 x 2 -> 10 x 4
            nn.ReLU(),
            nn.ConvTranspose2d(h, h, 4, stride=2, padding=(0, 1)),  # -> 22 x 8
            nn.ReLU(),
            nn.ConvTranspose2d(h, h // 2, 4, stride=2, padding=1),  # -> 44 x 16
            nn.ReLU(),
            nn.ConvTranspose2d(h // 2, c, 4, stride=2, padding=1),  # -> 88 x 32
        )

    @property
    def codes_per_quarter(self) -> int:
        return LATENT_SHAPE[0] * LATENT_SHAPE[1]

    @property
    def num_embeddings(self) -> int:
        return self.config.num_embeddings

    @property
    def input_channels(self) -> int:
        return 2 if self.config.onset_channel else 1

    def channels(
        self, rolls: torch.Tensor, consecutive: bool = True, previous: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The codec's quarters [N, 88, 32] -> this model's input, float [N, C, 88, 32] (see the module doc).

        previous [88, 32]: with consecutive False, the quarter before each (`quarter_channels`).
        """
        if rolls.ndim != 3 or tuple(rolls.shape[1:]) != (NUM_KEYS, STEPS_PER_QUARTER):
            raise ValueError(f"rolls must be [N, {NUM_KEYS}, {STEPS_PER_QUARTER}], got {list(rolls.shape)}")
        if not self.config.onset_channel:
            return rolls.float()[:, None]
        return quarter_channels(rolls, consecutive, previous).float()

    def forward(self, inputs: torch.Tensor, previous: torch.Tensor | None = None) -> VQVAEOutput:
        """inputs [N, C, 88, 32] in {0, 1} (see `channels`) -> reconstruction logits, losses, codes.

        previous: the channels of the quarter before each input [N, C, 88, 32] (silence before a
        piece's first), which a model with decoder_context encodes and hears while decoding.
        """
        expected = (self.input_channels, NUM_KEYS, STEPS_PER_QUARTER)
        if inputs.ndim != 4 or tuple(inputs.shape[1:]) != expected:
            raise ValueError(f"inputs must be [N, {', '.join(map(str, expected))}], got {list(inputs.shape)}")
        if self.config.decoder_context != (previous is not None):
            raise ValueError("the quarters before the inputs are given exactly when the model has decoder_context")
        if previous is None:
            latents = self.encoder(inputs.float())  # [N, D, 8, 2]
            quantized, indices, commitment_loss, perplexity = self.quantizer(latents)
            logits = self.decoder(quantized)  # [N, C, 88, 32]
        else:
            latents = self.encoder(torch.cat([previous, inputs]).float())  # [2N, D, 8, 2]: before, then own
            quantized, indices, commitment_loss, perplexity = self.quantizer(latents)
            before, quantized = quantized.chunk(2)
            indices = indices[len(inputs) :]
            logits = self.decoder(torch.cat([before, quantized], dim=1))  # [N, C, 88, 32]
        reconstruction_loss = self.reconstruction_loss(logits, inputs)
        return VQVAEOutput(
            logits=logits,
            loss=reconstruction_loss + commitment_loss,
            reconstruction_loss=reconstruction_loss,
            codes=indices.flatten(1),
            perplexity=perplexity,
        )

    def reconstruction_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy per cell of both channels, logits and targets [N, C, 88, 32].

        Weighted means: the onset channel counts onset_weight times the sounding one, and sounding
        cells where a key starts or stops count transition_weight times the others (in the
        one-channel model a repeated note is a single 0 among 1s there, nearly free to miss). The
        onset cells at a quarter's first step where a key sounds count tie_weight times: there the
        onset says whether a note goes on from the quarter before (a tie) or starts again, about
        four cells of the 5,632 of a quarter, which the codes would otherwise not spend a bit on.
        """
        targets = targets.float()
        cross_entropy = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
        config = self.config
        if config.transition_weight == 1.0 and config.onset_weight == 1.0 and config.tie_weight == 1.0:
            return cross_entropy.mean()
        weights = torch.ones_like(targets)
        sounding = targets[:, 0]
        changes = sounding[:, :, 1:] != sounding[:, :, :-1]  # [N, 88, 31]: onsets, offsets (and gaps)
        weights[:, 0, :, 1:] += (config.transition_weight - 1.0) * changes
        if config.onset_channel:
            weights[:, 1] = config.onset_weight
            weights[:, 1, :, 0] *= 1.0 + (config.tie_weight - 1.0) * sounding[:, :, 0]  # [N, 88]
        return (weights * cross_entropy).sum() / weights.sum()

    @torch.no_grad()
    def encode(
        self,
        rolls: torch.Tensor,
        consecutive: bool = True,
        batch_size: int = 1024,
        previous: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """rolls [N, 88, 32] -> codes LongTensor [N, 16], row-major over the 8 x 2 latent grid.

        consecutive: the N quarters are one piece in order (a note held into the next quarter has no
        onset there); otherwise each is read alone, or as the quarter after previous [88, 32] when
        given (the codes each would have after it in a piece). Runs `batch_size` quarters at a time.
        """
        device = self.decoder[0].weight.device
        if previous is not None:
            previous = previous.to(device)
        inputs = self.channels(rolls.to(device), consecutive, previous)  # [N, C, 88, 32]
        codes = []
        for part in inputs.split(batch_size):
            latents = self.encode_latents(part)  # [n, D, 8, 2]
            flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
            codes.append(self.quantizer.indices(flat).view(len(part), -1))
        return torch.cat(codes) if codes else torch.zeros(0, self.codes_per_quarter, dtype=torch.long)

    def encode_latents(self, inputs: torch.Tensor) -> torch.Tensor:
        """The encoder's output [N, D, 8, 2] for inputs [N, C, 88, 32], for inference.

        The first convolution reads its C input channels laid out channels-last, where oneDNN runs
        it about ten times faster on a CPU and gives the same numbers; the rest runs as laid out.
        """
        first = self.encoder[0](inputs.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.encoder[1:](first)

    def decode_logits(self, vectors: torch.Tensor) -> torch.Tensor:
        """The decoder's output logits [N, C, 88, 32] for its input vectors [N, D or 2D, 8, 2], for inference.

        The last layer writes C channels, where a transposed convolution runs slowly on a CPU:
        `transposed_convolution` computes the same sums about twice as fast.
        """
        return transposed_convolution(self.decoder[:-1](vectors), self.decoder[-1])

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.ndim != 2 or codes.shape[1] != self.codes_per_quarter:
            raise ValueError(f"codes must be [N, {self.codes_per_quarter}], got {list(codes.shape)}")
        if len(codes) and (codes.min() < 0 or codes.max() >= self.num_embeddings):
            raise ValueError(f"codes must lie in 0 ... {self.num_embeddings - 1}")

    def _vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of codes [N, 16] as the decoder takes them: [N, D, 8, 2]."""
        vectors = self.quantizer.lookup(codes).view(len(codes), *LATENT_SHAPE, -1)
        return vectors.permute(0, 3, 1, 2).to(self.decoder[0].weight.dtype)

    @torch.no_grad()
    def silence_codes(self) -> torch.Tensor:
        """The codes of a silent quarter [16]: what a model with decoder_context hears before a piece."""
        device = self.decoder[0].weight.device
        return self.encode(torch.zeros(1, NUM_KEYS, STEPS_PER_QUARTER, device=device), consecutive=False)[0]

    @torch.no_grad()
    def decode_channels(self, codes: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """codes [N, 16] -> probabilities of this model's channels [N, C, 88, 32].

        previous: the codes of the quarter before each [N, 16], heard by a model with
        decoder_context (default: a silent quarter); others ignore it.
        """
        self._check_codes(codes)
        vectors = self._vectors(codes)  # [N, D, 8, 2]
        if self.config.decoder_context:
            if previous is None:
                previous = self.silence_codes().expand(len(codes), -1)
            self._check_codes(previous)
            vectors = torch.cat([self._vectors(previous.to(codes.device)), vectors], dim=1)
        return torch.sigmoid(self.decode_logits(vectors).float())

    @torch.no_grad()
    def decode(
        self,
        codes: torch.Tensor,
        consecutive: bool = True,
        batch_size: int = 1024,
        previous: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """codes [N, 16] -> note probabilities [N, 88, 32]; cells above 0.5 are the codec's roll.

        consecutive: the N quarters are one piece in order, so a note starting at a quarter's first
        step ends the same key's note of the quarter before; otherwise each quarter is read alone.
        previous: the codes [16] of the quarter before the first (consecutive) or before each (not),
        default a silent quarter; a model with decoder_context hears them, so that a note held
        across the boundary comes back held. The decoder runs `batch_size` quarters at a time.
        """
        before = [None] * len(codes.split(batch_size))  # a model without context hears no quarter before
        if self.config.decoder_context:
            first = self.silence_codes() if previous is None else previous.to(codes.device)
            heard = torch.cat([first[None], codes[:-1]]) if consecutive else first.expand(len(codes), -1)
            before = heard.split(batch_size)  # [N, 16]: each quarter's predecessor, in parts
        parts = [self.decode_channels(part, heard) for part, heard in zip(codes.split(batch_size), before)]
        probabilities = torch.cat(parts)
        if not self.config.onset_channel:
            return probabilities[:, 0]
        return split_at_onsets(probabilities[:, 0], probabilities[:, 1], consecutive)

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu") -> VQVAE:
        """The one loader: rebuilds the model from the config stored in the checkpoint."""
        from bachsformer.checkpoint import load_model

        return load_model(cls, VQVAEConfig, "vq_vae", path, map_location, added_keys=ADDED_CONFIG_KEYS)


def _f1(predicted: torch.Tensor, target: torch.Tensor) -> float:
    true_positives = (predicted & target).sum().item()
    denominator = predicted.sum().item() + target.sum().item()
    return 2 * true_positives / denominator if denominator else 1.0


def _onsets(roll: torch.Tensor) -> torch.Tensor:
    """Steps where a key starts sounding: roll [88, T] bool -> bool [88, T]."""
    before = torch.zeros_like(roll)
    before[:, 1:] = roll[:, :-1]
    return roll & ~before


def boundary_ties(target: torch.Tensor, predicted: torch.Tensor, steps: int = STEPS_PER_QUARTER) -> dict:
    """How the notes sounding across quarter boundaries come back, rolls [88, T] bool (the codec's).

    At each boundary step b (a multiple of `steps`, b > 0) and key: *held* in the target when the key
    sounds at b - 1 and at b (one note goes on); *re-struck* when it sounds at b - 2 and b with the
    codec's one-step gap at b - 1 (the same key starts again on the beat). Returns the counts and
    how many of each the prediction keeps so: held (sounding at b - 1 and b) and re-struck (a
    note starting at b).
    """
    boundaries = torch.arange(steps, target.shape[1], steps, device=target.device)
    before, at = target[:, boundaries - 1], target[:, boundaries]  # [88, B]
    held = before & at
    restruck = target[:, boundaries - 2] & ~before & at
    predicted_held = predicted[:, boundaries - 1] & predicted[:, boundaries]
    predicted_onset = predicted[:, boundaries] & ~predicted[:, boundaries - 1]
    return {
        "held": int(held.sum()),
        "held_kept": int((held & predicted_held).sum()),
        "restruck": int(restruck.sum()),
        "restruck_kept": int((restruck & predicted_onset).sum()),
    }


@torch.no_grad()
def reconstruction_scores(model: VQVAE, pieces: list[np.ndarray], batch_size: int = 512) -> dict:
    """Frame F1, onset F1 (threshold 0.5), ties and code perplexity of `model` on whole pieces.

    Each piece [Q, 88, 32] is encoded and decoded quarter by quarter, then judged as one roll, so
    a note held across a quarter boundary is one onset, as in the music. held_kept: the share of
    notes held across a quarter boundary that come back held; restruck_kept: of the notes struck
    again on a boundary, the share that come back struck again (`boundary_ties`).
    """
    frames_true, frames_predicted, onsets_true, onsets_predicted = [], [], [], []
    ties = {"held": 0, "held_kept": 0, "restruck": 0, "restruck_kept": 0}
    counts = torch.zeros(model.num_embeddings)
    for quarters in pieces:
        rolls = torch.from_numpy(np.asarray(quarters))
        codes = model.encode(rolls, batch_size=batch_size)  # [Q, 16]
        counts += torch.bincount(codes.flatten().cpu(), minlength=model.num_embeddings)
        predicted = model.decode(codes, batch_size=batch_size).cpu() > 0.5  # the quarters read as consecutive
        target = rolls.bool().permute(1, 0, 2).flatten(1)  # [88, Q * 32]
        predicted = predicted.permute(1, 0, 2).flatten(1)
        frames_true.append(target)
        frames_predicted.append(predicted)
        onsets_true.append(_onsets(target))
        onsets_predicted.append(_onsets(predicted))
        for name, count in boundary_ties(target, predicted).items():
            ties[name] += count
    probs = counts / counts.sum()
    return {
        "frame_f1": _f1(torch.cat(frames_predicted, 1), torch.cat(frames_true, 1)),
        "onset_f1": _f1(torch.cat(onsets_predicted, 1), torch.cat(onsets_true, 1)),
        "held_kept": ties["held_kept"] / max(ties["held"], 1),
        "restruck_kept": ties["restruck_kept"] / max(ties["restruck"], 1),
        "perplexity": torch.exp(-(probs * torch.log(probs + 1e-10)).sum()).item(),
        "codes_used": int((counts > 0).sum()),
    }
