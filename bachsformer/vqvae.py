"""Ludovico: a convolutional VQ-VAE that turns a quarter of four voices into 16 codes and back.

Input per quarter (docs/design.md, The VQ-VAE): for each voice, which key sounds at each of the 32
steps and where a note starts, as two 88 x 32 one-hot planes, so a quarter is 2V channels of 88 x 32
(the voices' lines of voices.py). The encoder takes 88 x 32 -> 44 x 16 -> 22 x 8 -> 10 x 4 -> 8 x 2;
each of the 8 x 2 latent vectors snaps to the nearest of `num_embeddings` codebook entries, learned
by exponential moving averages (van den Oord et al. 2017, appendix A.1) and kept in buffers so
checkpoints hold them. Codes that fall out of use are restarted from recent encoder outputs.

The decoder mirrors the encoder and ends in three planes per voice: the logits of the 88 keys, a plane
read out (one weight per key) as the logit of silence, and onset logits. Each voice then gets one
key or silence per step (a categorical over 89) and, at that key, whether a note starts: every decoded
quarter is V lines by construction. With `decoder_context` the decoder also hears the codes of the
quarter before, so a note held across the boundary comes back held.
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
from bachsformer.voices import SILENCE, note_starts

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
    voices: int = 4  # lines per quarter, highest first (Soprano, Alto, Tenor, Bass)
    onset_weight: float = 1.0  # loss weight of the onsets against the keys
    tie_weight: float = 1.0  # loss weight of the onsets at a quarter's first step where a voice sounds (see below)
    decoder_context: bool = False  # the decoder also hears the codes of the quarter before (what sounded at its end)

    def __post_init__(self):
        """Refuse sizes no model can have; the message starts with the key (config.py adds the section)."""
        check_at_least(self, 1, "num_embeddings", "embedding_dim", "residual_channels", "voices")
        check_at_least(self, 2, "hidden_channels")
        check_at_least(self, 0, "residual_layers", "commitment_cost", "dead_code_threshold")
        if not 0 < self.decay < 1:
            raise ValueError(f"decay: must lie in (0, 1), got {self.decay}")
        for key in ("onset_weight", "tie_weight"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}: must be above 0, got {getattr(self, key)}")


def voice_channels(keys: torch.Tensor, onsets: torch.Tensor) -> torch.Tensor:
    """Lines keys long [N, V, S] (SILENCE: a rest) and onsets bool [N, V, S] -> the model's input [N, 2V, 88, S].

    Channel v is voice v's key, one-hot over the 88 keys at each step (all zero in a rest); channel
    V + v marks the same cell where a note of voice v starts.
    """
    sounding = F.one_hot(keys.long(), NUM_KEYS + 1)[..., :NUM_KEYS].transpose(-1, -2).float()  # [N, V, 88, S]
    struck = sounding * onsets.float()[:, :, None, :]
    return torch.cat([sounding, struck], dim=1)


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
    key_logits: torch.Tensor  # [N, V, 89, S]: the 88 keys, then silence
    onset_logits: torch.Tensor  # [N, V, 88, S]: a note starts, at each key
    loss: torch.Tensor  # reconstruction + commitment
    reconstruction_loss: torch.Tensor  # cross-entropy of the keys + weighted onset cross-entropy
    codes: torch.Tensor  # [N, 16]
    perplexity: torch.Tensor  # of the codes used in this batch


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        h, d = config.hidden_channels, config.embedding_dim
        r, n, v = config.residual_channels, config.residual_layers, config.voices
        self.encoder = nn.Sequential(
            nn.Conv2d(2 * v, h // 2, 4, stride=2, padding=1),  # 88 x 32 -> 44 x 16
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
            nn.ConvTranspose2d(h // 2, 3 * v, 4, stride=2, padding=1),  # -> 88 x 32: keys, silence, onsets per voice
        )
        self.silence = nn.Linear(NUM_KEYS, 1)  # a voice's silence plane [88] at a step -> its silence logit

    @property
    def codes_per_quarter(self) -> int:
        return LATENT_SHAPE[0] * LATENT_SHAPE[1]

    @property
    def num_embeddings(self) -> int:
        return self.config.num_embeddings

    @property
    def num_voices(self) -> int:
        return self.config.voices

    def _check_lines(self, keys: torch.Tensor, onsets: torch.Tensor) -> None:
        expected = (self.num_voices, STEPS_PER_QUARTER)
        if keys.ndim != 3 or tuple(keys.shape[1:]) != expected or onsets.shape != keys.shape:
            raise ValueError(f"keys and onsets must both be [N, {expected[0]}, {expected[1]}], got {list(keys.shape)}")

    def _heads(self, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's planes [N, 3V, 88, S] -> (key logits [N, V, 89, S], onset logits [N, V, 88, S])."""
        keys, silence, onsets = planes.float().unflatten(1, (3, self.num_voices)).unbind(1)  # each [N, V, 88, S]
        silence = self.silence(silence.transpose(-1, -2)).transpose(-1, -2)  # [N, V, 1, S]
        return torch.cat([keys, silence], dim=2), onsets

    def forward(
        self,
        keys: torch.Tensor,
        onsets: torch.Tensor,
        previous_keys: torch.Tensor | None = None,
        previous_onsets: torch.Tensor | None = None,
    ) -> VQVAEOutput:
        """Lines keys long [N, V, 32] and onsets bool [N, V, 32] -> reconstruction logits, losses, codes.

        previous_keys, previous_onsets: the lines of the quarter before each (silence before a piece's
        first), which a model with decoder_context encodes and hears while decoding.
        """
        self._check_lines(keys, onsets)
        if self.config.decoder_context != (previous_keys is not None):
            raise ValueError("the quarters before the inputs are given exactly when the model has decoder_context")
        inputs = voice_channels(keys, onsets)  # [N, 2V, 88, 32]
        if previous_keys is None:
            latents = self.encoder(inputs)  # [N, D, 8, 2]
            quantized, indices, commitment_loss, perplexity = self.quantizer(latents)
            planes = self.decoder(quantized)
        else:
            before_inputs = voice_channels(previous_keys, previous_onsets)
            latents = self.encoder(torch.cat([before_inputs, inputs]))  # [2N, D, 8, 2]: before, then own
            quantized, indices, commitment_loss, perplexity = self.quantizer(latents)
            before, quantized = quantized.chunk(2)
            indices = indices[len(inputs) :]
            planes = self.decoder(torch.cat([before, quantized], dim=1))  # [N, 3V, 88, 32]
        key_logits, onset_logits = self._heads(planes)
        reconstruction_loss = self.reconstruction_loss(key_logits, onset_logits, keys, onsets)
        return VQVAEOutput(
            key_logits=key_logits,
            onset_logits=onset_logits,
            loss=reconstruction_loss + commitment_loss,
            reconstruction_loss=reconstruction_loss,
            codes=indices.flatten(1),
            perplexity=perplexity,
        )

    def reconstruction_loss(
        self, key_logits: torch.Tensor, onset_logits: torch.Tensor, keys: torch.Tensor, onsets: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy of each voice's key (or silence) per step, plus onset_weight times the binary
        cross-entropy of the onsets, read at the key each voice sounds (a rest has none).

        The onsets at a quarter's first step where a voice sounds count tie_weight times: there the
        onset says whether a note goes on from the quarter before (a tie) or starts again, one step of
        32, which the codes would otherwise not spend a bit on.
        """
        keys = keys.long()
        key_loss = F.cross_entropy(key_logits.flatten(0, 1), keys.flatten(0, 1))  # [N * V, 89, S] against [N * V, S]
        sounding = keys != SILENCE
        at_key = onset_logits.gather(2, keys.clamp(max=NUM_KEYS - 1)[:, :, None, :])[:, :, 0]  # [N, V, S]
        onset_loss = F.binary_cross_entropy_with_logits(at_key, onsets.float(), reduction="none")
        weights = sounding.float()
        weights[..., 0] *= self.config.tie_weight
        onset_loss = (weights * onset_loss).sum() / weights.sum().clamp(min=1.0)
        return key_loss + self.config.onset_weight * onset_loss

    @torch.no_grad()
    def encode(self, keys: torch.Tensor, onsets: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Lines keys [N, V, 32] and onsets [N, V, 32] -> codes LongTensor [N, 16], row-major over the 8 x 2 grid.

        The onsets say which notes start in each quarter, so each quarter is encoded on its own: a
        quarter's codes are the same in a piece and alone. Runs `batch_size` quarters at a time.
        """
        device = self.decoder[0].weight.device
        keys, onsets = torch.as_tensor(keys).to(device), torch.as_tensor(onsets).to(device)
        self._check_lines(keys, onsets)
        codes = []
        for part_keys, part_onsets in zip(keys.split(batch_size), onsets.split(batch_size)):
            latents = self.encode_latents(voice_channels(part_keys, part_onsets))  # [n, D, 8, 2]
            flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
            codes.append(self.quantizer.indices(flat).view(len(part_keys), -1))
        return torch.cat(codes) if codes else torch.zeros(0, self.codes_per_quarter, dtype=torch.long)

    def encode_latents(self, inputs: torch.Tensor) -> torch.Tensor:
        """The encoder's output [N, D, 8, 2] for inputs [N, 2V, 88, 32], for inference.

        The first convolution reads its input channels laid out channels-last, where oneDNN runs it
        about ten times faster on a CPU and gives the same numbers; the rest runs as laid out.
        """
        first = self.encoder[0](inputs.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.encoder[1:](first)

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
        silent = torch.full((1, self.num_voices, STEPS_PER_QUARTER), SILENCE, dtype=torch.long)
        return self.encode(silent, torch.zeros_like(silent, dtype=torch.bool))[0]

    @torch.no_grad()
    def decode_logits(self, codes: torch.Tensor, previous: torch.Tensor | None = None):
        """codes [N, 16] -> (key logits [N, V, 89, S], onset logits [N, V, 88, S]).

        previous: the codes of the quarter before each [N, 16], heard by a model with decoder_context
        (default: a silent quarter); others ignore it.
        """
        self._check_codes(codes)
        vectors = self._vectors(codes)  # [N, D, 8, 2]
        if self.config.decoder_context:
            if previous is None:
                previous = self.silence_codes().expand(len(codes), -1)
            self._check_codes(previous)
            vectors = torch.cat([self._vectors(previous.to(codes.device)), vectors], dim=1)
        planes = self.decoder(vectors)  # [N, 3V, 88, 32]
        return self._heads(planes)

    @torch.no_grad()
    def decode(
        self,
        codes: torch.Tensor,
        consecutive: bool = True,
        batch_size: int = 1024,
        previous: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """codes [N, 16] -> lines (keys long [N, V, 32], SILENCE a rest; onsets bool [N, V, 32]).

        Each voice takes its likeliest key or silence at each step, and a note starts where the onset
        at that key is likelier than not. consecutive: the N quarters are one piece in order, each
        decoded hearing the one before (a model with decoder_context), so a held note comes back held;
        otherwise each hears `previous`. previous: the codes [16] of the quarter before the first
        (consecutive) or before each (not), default a silent quarter.
        """
        if not len(codes):
            empty = torch.full((0, self.num_voices, STEPS_PER_QUARTER), SILENCE, dtype=torch.long)
            return empty, empty.bool()
        before = [None] * len(codes.split(batch_size))  # a model without context hears no quarter before
        if self.config.decoder_context:
            first = self.silence_codes() if previous is None else previous.to(codes.device)
            heard = torch.cat([first[None], codes[:-1]]) if consecutive else first.expand(len(codes), -1)
            before = heard.split(batch_size)  # [N, 16]: each quarter's predecessor, in parts
        all_keys, all_onsets = [], []
        for part, heard in zip(codes.split(batch_size), before):
            key_logits, onset_logits = self.decode_logits(part, heard)
            keys = key_logits.argmax(dim=2)  # [n, V, S]
            at_key = onset_logits.gather(2, keys.clamp(max=NUM_KEYS - 1)[:, :, None, :])[:, :, 0]
            all_keys.append(keys)
            all_onsets.append((at_key > 0) & (keys != SILENCE))
        return torch.cat(all_keys), torch.cat(all_onsets)

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu") -> VQVAE:
        """The one loader: rebuilds the model from the config stored in the checkpoint.

        A VQ-VAE from before the voices (over the piano roll) is refused in one line.
        """
        from bachsformer.checkpoint import CheckpointError, load_checkpoint, load_model

        stored = load_checkpoint(path, "vq_vae", map_location).get("config") or {}
        if isinstance(stored, dict) and "voices" not in stored:
            raise CheckpointError(
                f"{path}: a VQ-VAE over the piano roll, from before the voices; use the models shipped with this"
                " version, or retrain it (python train_vq_vae.py) and the transformer on its codes"
                " (python train_transformer.py)"
            )
        return load_model(cls, VQVAEConfig, "vq_vae", path, map_location)


def piece_lines(keys: np.ndarray, onsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A piece's lines [Q, V, S] as one line per voice [V, Q * S], with its note starts [V, Q * S]."""
    flat_keys = np.asarray(keys).transpose(1, 0, 2).reshape(keys.shape[1], -1)
    flat_onsets = np.asarray(onsets).transpose(1, 0, 2).reshape(keys.shape[1], -1)
    return flat_keys, note_starts(flat_keys, flat_onsets)


@torch.no_grad()
def reconstruction_scores(model: VQVAE, pieces: list[tuple[np.ndarray, np.ndarray]], batch_size: int = 512) -> dict:
    """How the model's codes keep whole pieces, each lines (keys [Q, V, 32], onsets [Q, V, 32]).

    Each piece is encoded, then decoded as one piece (each quarter hearing the one before), and
    judged as a whole: `voice_<n>` (per voice, the share of steps with the same key or rest), the
    same on sixteenth steps (every 8th step), `voice_agreement` over all voices, onset F1 of the
    note starts (same voice, step and key), held and re-struck notes across quarter boundaries
    (`held_kept`, `restruck_kept`: the share that come back so), and the codebook's perplexity.
    """
    num_voices = model.num_voices
    same = np.zeros(num_voices)
    same_sixteenths = np.zeros(num_voices)
    steps_total, sixteenths_total = 0, 0
    starts_true = starts_predicted = starts_matched = 0
    held = held_kept = restruck = restruck_kept = 0
    counts = torch.zeros(model.num_embeddings)
    for keys, onsets in pieces:
        codes = model.encode(torch.from_numpy(np.asarray(keys)), torch.from_numpy(np.asarray(onsets)), batch_size)
        counts += torch.bincount(codes.flatten().cpu(), minlength=model.num_embeddings)
        decoded_keys, decoded_onsets = (part.cpu().numpy() for part in model.decode(codes, batch_size=batch_size))
        true_keys, true_starts = piece_lines(keys, onsets)  # [V, T]
        got_keys, got_starts = piece_lines(decoded_keys, decoded_onsets)
        same += (true_keys == got_keys).sum(axis=1)
        same_sixteenths += (true_keys[:, ::8] == got_keys[:, ::8]).sum(axis=1)
        steps_total += true_keys.shape[1]
        sixteenths_total += true_keys[:, ::8].shape[1]
        starts_true += int(true_starts.sum())
        starts_predicted += int(got_starts.sum())
        starts_matched += int((true_starts & got_starts & (got_keys == true_keys)).sum())  # same voice, step, key
        boundaries = np.arange(STEPS_PER_QUARTER, true_keys.shape[1], STEPS_PER_QUARTER)
        sounding_on = (true_keys[:, boundaries] != SILENCE) & (true_keys[:, boundaries] == true_keys[:, boundaries - 1])
        is_held = sounding_on & ~true_starts[:, boundaries]
        is_restruck = sounding_on & true_starts[:, boundaries]
        kept_key = got_keys[:, boundaries] == true_keys[:, boundaries]
        kept_before = got_keys[:, boundaries - 1] == true_keys[:, boundaries - 1]
        held += int(is_held.sum())
        held_kept += int((is_held & kept_key & kept_before & ~got_starts[:, boundaries]).sum())
        restruck += int(is_restruck.sum())
        restruck_kept += int((is_restruck & kept_key & kept_before & got_starts[:, boundaries]).sum())
    probs = counts / counts.sum()
    result = {f"voice_{n}": float(same[n] / max(steps_total, 1)) for n in range(num_voices)}
    result.update(
        {f"voice_{n}_sixteenths": float(same_sixteenths[n] / max(sixteenths_total, 1)) for n in range(num_voices)}
    )
    result.update(
        {
            "voice_agreement": float(same.sum() / max(steps_total * num_voices, 1)),
            "onset_f1": 2 * starts_matched / max(starts_true + starts_predicted, 1),
            "held_kept": held_kept / max(held, 1),
            "restruck_kept": restruck_kept / max(restruck, 1),
            "perplexity": torch.exp(-(probs * torch.log(probs + 1e-10)).sum()).item(),
            "codes_used": int((counts > 0).sum()),
        }
    )
    return result
