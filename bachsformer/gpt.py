"""Bachsformer: a small decoder-only transformer over VQ-VAE codes, in the style of minGPT.

Token and learned position embeddings, pre-norm blocks of causal self-attention
(`scaled_dot_product_attention`) and MLP, a linear head tied to the token embedding. `forward`
takes an optional `KVCache`: with it, the model attends over what the cache holds and appends the
new keys and values, which makes sampling cost one position per step instead of a whole window.
Candidates after one context (`shared_context`, `sample_after`, `log_likelihood_after`) read it as
a `Prefix` shared by a group of rows instead of a copy per row (docs/design.md, How a quarter is
computed).

Melody condition (`melody_quarters` above 0): the transformer can hear a melody it harmonizes.
Each quarter's melody is SLOTS_PER_QUARTER tokens (`bachsformer.melody`); the codes of quarter q
hear the melody of quarters q ... q + melody_quarters - 1 (where the tune is going: a cadence, a
leap), as one vector added to their embeddings. Input position t predicts code t + 1, so it is
given the melody vector of that code's quarter, (t + 1) // codes_per_quarter: the code being
predicted always hears its own quarter. Without a melody the model hears NONE, as in the windows
trained with the melody dropped, so one checkpoint composes freely and harmonizes; sampling can
mix the two passes' logits (classifier-free guidance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bachsformer.errors import check_at_least
from bachsformer.melody import NONE, REST, SLOTS_PER_QUARTER
from bachsformer.melody import VOCAB_SIZE as MELODY_VOCAB_SIZE
from bachsformer.sampling import check_sampling_options, draw, filter_logits, gumbel, gumbel_noise


@dataclass
class GPTConfig:
    vocab_size: int = 16  # the VQ-VAE's codebook size
    block_size: int = 191  # 12 quarters of 16 codes, less the one predicted
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    bias: bool = False
    codes_per_quarter: int = 16  # the VQ-VAE's codes of one quarter; windows start on quarter boundaries
    melody_quarters: int = 0  # 0: no melody condition; n: quarter q's codes hear the melody of quarters q ... q + n - 1
    melody_dropout: float = 0.0  # training: share of windows that hear no melody, so the model also composes freely
    countdown: int = 0  # tune models (bachsformer/tune.py): tokens to the end heard exactly up to this many; 0: none
    countdown_to_last_note: bool = False  # tune models: the countdown runs to the last note's onset, not to END
    hears_mode: bool = False  # with the melody, the codes also hear the mode (major or minor) of the key it closes in

    def __post_init__(self):
        """Refuse sizes no model can have; the message starts with the key (config.py adds the section)."""
        check_at_least(self, 1, "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "codes_per_quarter")
        check_at_least(self, 0, "melody_quarters", "countdown")
        if self.hears_mode and not self.melody_quarters:
            raise ValueError("hears_mode: the mode is heard with the melody; set melody_quarters above 0")
        if not 0 <= self.melody_dropout <= 1:
            raise ValueError(f"melody_dropout: must lie in [0, 1], got {self.melody_dropout}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd: {self.n_embd} is not a multiple of n_head {self.n_head}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: must lie in [0, 1), got {self.dropout}")


class KVCache:
    """Preallocated keys and values of every layer: kv [n_layer, B, 2, n_head, block_size, head_dim].

    `length` is how many positions are filled; layers write in place, no tensor is reallocated.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device=None, dtype=torch.float32):
        shape = (
            config.n_layer,
            batch_size,
            2,
            config.n_head,
            config.block_size,
            config.n_embd // config.n_head,
        )
        self.kv = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def reset(self) -> None:
        self.length = 0

    def prefix(self) -> Prefix:
        """What the cache holds, as a `Prefix` for rows that continue it (copied: the cache may go on)."""
        keys, values = self.kv[:, :, :, :, : self.length].unbind(2)  # [n_layer, B, n_head, length, head_dim]
        return Prefix(keys.contiguous(), values.contiguous())


class Prefix(NamedTuple):
    """Keys and values of positions that groups of rows continue: each [n_layer, G, n_head, P, head_dim].

    Contiguous, so that a group's keys meet all its rows' queries in one matrix product.
    """

    keys: torch.Tensor
    values: torch.Tensor

    @property
    def length(self) -> int:
        return self.keys.shape[3]

    def first_group(self) -> Prefix:
        return Prefix(self.keys[:, :1], self.values[:, :1])


class CandidateKeys:
    """The keys and values that candidates continuing a shared prefix attend to, in one tensor
    kv [n_layer, 2, G, n_head, P + N * M, head_dim]: first the P positions of each group's prefix,
    then entries appended step by step, one per distinct candidate of that length (candidates that
    drew the same codes so far share theirs). `length` entries are filled. One attention call per
    layer reads a group's entries, a mask (`visible`) showing each row the prefix and its own.
    """

    def __init__(self, prefix: Prefix, candidates: int, positions: int):
        layers, groups, heads, prefix_length, head_width = prefix.keys.shape
        self.kv = prefix.keys.new_empty((layers, 2, groups, heads, prefix_length + positions * candidates, head_width))
        self.kv[:, 0, :, :, :prefix_length] = prefix.keys
        self.kv[:, 1, :, :, :prefix_length] = prefix.values
        self.prefix_length = self.length = prefix_length

    def append(self, layer: int, keys_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one layer's keys and values of U new entries, keys_values [2, G, n_head, U, head_dim], after
        the filled ones; return the layer's keys and values through them, each [G, n_head, length + U, head_dim].
        Every layer of a step writes the same entries; `advance` then counts them filled."""
        end = self.length + keys_values.shape[3]
        self.kv[layer, :, :, :, self.length : end] = keys_values
        return self.kv[layer, :, :, :, :end].unbind(0)

    def advance(self, count: int) -> None:
        self.length += count

    def visible(self, entries: torch.Tensor) -> torch.Tensor:
        """What each of U rows sees, the prefix and its entries [U, n] (the last appended in this step),
        as an attention mask to add: [U, length + U], 0 where seen and -inf elsewhere (built once
        for a step's layers; a boolean mask is converted in every attention call)."""
        mask = self.kv.new_full((len(entries), self.length + len(entries)), float("-inf"))
        mask[:, : self.prefix_length] = 0.0
        return mask.scatter_(1, entries, 0.0)


@dataclass
class SharedContext:
    """One context run once for each of G row groups, which the rows of a batch continue.

    prefix: its keys and values, one row per group; logits [G, vocab]: the next code after it;
    melodies [G, Qm, slots]: what each group hears (None: no melody); guidance: with two groups,
    group 0 hears the melody and group 1 none, and draws mix their logits (see `sample_after`).
    mode [1]: the mode heard with the melody (`GPT.melody_vectors`), or None.
    A batch of G * R rows continues it in G blocks of R rows: row b belongs to group b // R.
    cache: the same keys and values in a cache with room for the whole window, for a longer
    context that begins with this one (`shared_context`'s `earlier`).
    """

    prefix: Prefix
    logits: torch.Tensor
    melodies: torch.Tensor | None
    guidance: float
    cache: KVCache
    mode: torch.Tensor | None = None

    @property
    def groups(self) -> int:
        return len(self.logits)


def attention_after_prefix(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor
) -> torch.Tensor:
    """Causal attention of new positions after a prefix that groups of rows share: [B, n_head, t, head_dim].

    q [B, H, t, D]: the new positions' queries. k, v [B, H, L, D]: each row's own keys and values
    after the prefix, the last t of them the new positions' (new position i sees own positions up to
    L - t + i). prefix_k, prefix_v [G, H, P, D] (contiguous): the prefix of row group g, rows
    g * R ... (g + 1) * R - 1 (B = G * R). The prefix is read once per group, not copied to each
    row: all of a group's queries meet its keys in one matrix product.
    """
    batch, heads, t, width = q.shape
    groups, _, prefix_length, _ = prefix_k.shape
    rows = batch // groups
    q = q * width**-0.5
    grouped = q.reshape(groups, rows, heads, t, width).transpose(1, 2).reshape(groups, heads, rows * t, width)
    prefix_scores = (grouped @ prefix_k.transpose(-1, -2)).view(groups, heads, rows, t, prefix_length)
    prefix_scores = prefix_scores.transpose(1, 2).reshape(batch, heads, t, prefix_length)
    own_scores = q @ k.transpose(-1, -2)  # [B, H, t, L]
    if t > 1:
        own_length = k.shape[2]
        visible = torch.ones(t, own_length, dtype=torch.bool, device=q.device).tril(own_length - t)
        own_scores = own_scores.masked_fill(~visible, float("-inf"))
    weights = torch.softmax(torch.cat([prefix_scores, own_scores], dim=-1), dim=-1)  # [B, H, t, P + L]
    prefix_weights = weights[..., :prefix_length].reshape(groups, rows, heads, t, prefix_length)
    prefix_weights = prefix_weights.transpose(1, 2).reshape(groups, heads, rows * t, prefix_length)
    from_prefix = (prefix_weights @ prefix_v).view(groups, heads, rows, t, width).transpose(1, 2)  # [G, R, H, t, D]
    return torch.baddbmm(
        from_prefix.reshape(batch * heads, t, width),
        weights[..., prefix_length:].reshape(batch * heads, t, -1),
        v.reshape(batch * heads, -1, width),
    ).view(batch, heads, t, width)


def _step_mlp(x: torch.Tensor, layer_weights: tuple) -> torch.Tensor:
    """x [B, C] + the block's MLP of it, on `GPT.decode_weights` of one block."""
    *_, ln2_w, ln2_b, fc_w, fc_b, out_wt, out_b = layer_weights
    h = F.gelu(F.linear(F.layer_norm(x, x.shape[-1:], ln2_w, ln2_b), fc_w, fc_b), approximate="tanh")
    return torch.addmm(x if out_b is None else x + out_b, h, out_wt)  # x + out(h): residual and matmul in one


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, prefix: Prefix | None = None):
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(0, 2, 3, 1, 4)
        q, k, v = qkv.unbind(1)  # each [B, n_head, T, head_dim]
        dropout = self.dropout if self.training else 0.0
        if prefix is not None:  # after positions shared by groups of rows (inference, no cache)
            y = attention_after_prefix(q, k, v, prefix.keys[layer], prefix.values[layer])
        elif cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            start, end = cache.length, cache.length + t
            cache.kv[layer, :, :, :, start:end] = qkv[:, 1:]
            k, v = cache.kv[layer, :, :, :, :end].unbind(1)
            if start == 0:  # filling an empty cache: plain causal attention, the fast kernel
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # new position i sees the cached positions and the new ones up to i
                mask = torch.ones(t, end, dtype=torch.bool, device=x.device).tril(start)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(b, t, c)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias),
            nn.GELU(approximate="tanh"),  # as GPT-2; cheaper than erf on CPU
            nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, prefix: Prefix | None = None):
        x = x + self.attn(self.ln_1(x), cache, layer, prefix)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight  # weight tying
        if config.melody_quarters:
            slot_width = config.n_embd // 4
            self.melody_embedding = nn.Embedding(MELODY_VOCAB_SIZE, slot_width)
            self.melody_projection = nn.Linear(
                config.melody_quarters * SLOTS_PER_QUARTER * slot_width, config.n_embd, bias=config.bias
            )
        if config.countdown:  # where the tune ends: tokens to go, their phase in a 4/4 bar
            self.countdown_embedding = nn.Embedding(config.countdown + 1, config.n_embd)
            self.phase_embedding = nn.Embedding(4 * config.codes_per_quarter, config.n_embd)
        if config.countdown or config.hears_mode:  # the mode of the tune written or harmonized: 0 major, 1 minor
            self.mode_embedding = nn.Embedding(2, config.n_embd)
        # Where generation starts without a primer: the distribution of the first code of a
        # quarter in the training data, set by train_transformer.py.
        self.register_buffer("first_code_probs", torch.full((config.vocab_size,), 1 / config.vocab_size))
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):  # GPT-2 scaled init
                nn.init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def melody_vectors(
        self, melody: torch.Tensor | None, batch: int, num_quarters: int, mode: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """What the codes of each of a window's first `num_quarters` quarters hear: [B, num_quarters, n_embd].

        melody: slot tokens [B, Qm, slots] of the window's quarters from its first (REST past Qm; NONE
        past a row of NONE), or None for no melody (NONE). mode [B] (0 major, 1 minor): the mode of
        the key the melody closes in, which a model that `hears_mode` needs with a melody; a row
        without a melody hears no mode either (free music, and guidance's unconditioned rows).
        Returns None for a model without the melody condition, which refuses a melody.
        """
        lookahead = self.config.melody_quarters
        if not lookahead:
            if melody is not None:
                raise ValueError("this transformer was trained without a melody condition")
            return None
        needed = num_quarters + lookahead - 1
        device = self.melody_embedding.weight.device
        if melody is None:
            melody = torch.full((batch, needed, SLOTS_PER_QUARTER), NONE, dtype=torch.long, device=device)
        elif melody.shape[1] < needed:  # past a melody's end: rests; past "no melody": no melody
            no_melody = (melody == NONE).flatten(1).all(dim=1)  # [B]
            fill = torch.where(no_melody, NONE, REST)[:, None, None]
            melody = torch.cat([melody, fill.expand(-1, needed - melody.shape[1], melody.shape[2])], dim=1)
        slots = self.melody_embedding(melody[:, :needed].to(device)).flatten(2)  # [B, needed, slots * width]
        heard = slots.unfold(1, lookahead, 1).transpose(2, 3).flatten(2)  # [B, num_quarters, lookahead * slots * width]
        heard = self.melody_projection(heard)
        if self.config.hears_mode:
            with_melody = ~(melody == NONE).flatten(1).all(dim=1)  # [B]
            if mode is not None:
                mode_vectors = (
                    self.mode_embedding(mode.to(device)) * with_melody[:, None]
                )  # [B, C] (mode [1]: every row's)
                heard = heard + mode_vectors[:, None]
            elif with_melody.any():
                raise ValueError("this transformer hears the mode of the melody it harmonizes: give mode")
        return heard

    def end_vectors(self, remaining: torch.Tensor, mode: torch.Tensor) -> torch.Tensor:
        """What a tune model hears of its end: remaining [B, T] tokens from the one each position
        predicts to the end token (0: the end itself), mode [B] (0 major, 1 minor) -> [B, T, n_embd].

        Counted exactly up to `countdown` tokens, beyond it only as its phase in a 4/4 bar.
        """
        phase = remaining % (4 * self.config.codes_per_quarter)
        near = self.countdown_embedding(remaining.clamp(0, self.config.countdown))
        return near + self.phase_embedding(phase) + self.mode_embedding(mode)[:, None]

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        melody: torch.Tensor | None = None,
        prefix: Prefix | None = None,
        remaining: torch.Tensor | None = None,
        mode: torch.Tensor | None = None,
    ):
        """idx [B, T] -> (logits [B, T, vocab], mean cross-entropy in nats or None).

        With a cache, idx continues the cached positions: position numbers start at cache.length.
        melody: slot tokens [B, Qm, slots] (or [1, Qm, slots] for every row) of the window's
        quarters, counted from position 0 (see the module doc); None: no melody. prefix: positions
        of G groups that the rows follow, row b after group b // (B / G) (`attention_after_prefix`);
        position numbers then start after it. remaining [B, T] and mode [B]: a tune
        model's end condition (`end_vectors`), which it needs; mode [B] (or [1]) is also what a
        model that `hears_mode` hears with the melody (`melody_vectors`).
        """
        if cache is not None and prefix is not None:
            raise ValueError("a forward pass continues a cache or a prefix, not both")
        start = cache.length if cache is not None else prefix.length if prefix is not None else 0
        t = idx.shape[1]
        if start + t > self.config.block_size:
            raise ValueError(f"{start + t} positions exceed block_size {self.config.block_size}")
        positions = torch.arange(start, start + t, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(positions)
        per_quarter = self.config.codes_per_quarter
        heard = self.melody_vectors(melody, len(idx), (start + t) // per_quarter + 1, mode)  # [B, quarters, C]
        if heard is not None:
            x = x + heard[:, torch.div(positions + 1, per_quarter, rounding_mode="floor")]
        if self.config.countdown:
            if remaining is None or mode is None:
                raise ValueError("a tune model hears where its tune ends: give remaining and mode")
            x = x + self.end_vectors(remaining, mode)
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer, prefix)
        if cache is not None:
            cache.length += t
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return logits, loss

    def configure_optimizer(self, learning_rate: float, weight_decay: float, betas=(0.9, 0.95)):
        """AdamW with weight decay on matrices only (not on biases, norms or embeddings' rows)."""
        parameters = {name: p for name, p in self.named_parameters() if p.requires_grad}
        decay = [p for name, p in parameters.items() if p.dim() >= 2 and "embedding" not in name]
        no_decay = [p for name, p in parameters.items() if p.dim() < 2 or "embedding" in name]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)

    @torch.no_grad()
    def decode_weights(self) -> list[tuple]:
        """The tensors `decode_step` uses, looked up once: module attribute lookups cost more than
        the arithmetic of a step of a small model. Per block: (ln_1 weight, bias, qkv weight, bias,
        proj weight transposed, bias, ln_2 weight, bias, fc weight, bias, out weight transposed, bias).
        """
        weights = []
        for block in self.blocks:
            attention, (fc, _, out) = block.attn, list(block.mlp)[:3]
            weights.append(
                (
                    block.ln_1.weight,
                    block.ln_1.bias,
                    attention.qkv.weight,
                    attention.qkv.bias,
                    attention.proj.weight.t(),
                    attention.proj.bias,
                    block.ln_2.weight,
                    block.ln_2.bias,
                    fc.weight,
                    fc.bias,
                    out.weight.t(),
                    out.bias,
                )
            )
        return weights

    def decode_step(
        self,
        codes: torch.Tensor,
        cache: KVCache,
        weights: list[tuple] | None = None,
        heard: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, vocab] after feeding one code per piece, codes [B], at position cache.length.

        The same arithmetic as `forward(codes[:, None], cache=cache, melody=...)` (a test holds them
        equal), written as plain functions on the weights: a step of a small model is bound by the
        number of operations, not by arithmetic, so the step does no more than it must. Inference
        only. `weights`: `decode_weights()`, when a caller makes many steps. heard: the melody vector
        [B, C] of the quarter of the code this step predicts (`melody_vectors`), for a model with one.
        """
        batch, width, heads = len(codes), self.config.n_embd, self.config.n_head
        position = cache.length
        x = self.token_embedding.weight[codes] + self.position_embedding.weight[position]  # [B, C]
        if heard is not None:
            x = x + heard
        for layer, layer_weights in enumerate(weights or self.decode_weights()):
            ln1_w, ln1_b, qkv_w, qkv_b, proj_wt, proj_b = layer_weights[:6]
            layer_kv = cache.kv[layer]  # [B, 2, heads, block, head_dim]
            qkv = F.linear(F.layer_norm(x, (width,), ln1_w, ln1_b), qkv_w, qkv_b).view(batch, 3, heads, 1, -1)
            layer_kv[:, :, :, position : position + 1] = qkv[:, 1:]
            k, v = layer_kv[:, :, :, : position + 1].unbind(1)  # [B, heads, position + 1, head_dim]
            y = F.scaled_dot_product_attention(qkv[:, 0], k, v)  # [B, heads, 1, head_dim]
            x = torch.addmm(x if proj_b is None else x + proj_b, y.view(batch, width), proj_wt)  # x + proj(y)
            x = _step_mlp(x, layer_weights)
        cache.length += 1
        return F.linear(F.layer_norm(x, (width,), self.ln_f.weight, self.ln_f.bias), self.head.weight)

    @torch.inference_mode()
    def generate(
        self,
        prompt: torch.Tensor | None,
        num_new: int,
        seeds: list[int],
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        codes_per_quarter: int = 16,
        min_context: int = 96,
        use_cache: bool = True,
        progress=None,
    ) -> torch.Tensor:
        """Continue `prompt` [B, P] by `num_new` codes; returns [B, P + num_new].

        Without a prompt, each piece opens with a code drawn from `first_code_probs` (counted as one
        of the `num_new`). Continuous: every code is kept, and each new code sees between
        `min_context` and block_size codes before it. The window starts on a quarter boundary; when
        it is full it jumps forward, keeping its last `min_context` codes, which are encoded again
        once (their positions have moved). In between, each step feeds one code through the
        key/value cache. Piece b draws its randomness from its own generator seeded with seeds[b].
        `use_cache=False` recomputes the whole window for every code instead: the same codes at
        the naive cost, kept for comparison. progress: called with 1 each time the batch's codes
        complete a quarter (the prompt is whole quarters: once per new quarter), or None.
        """
        block = self.config.block_size
        if min_context % codes_per_quarter or not 0 < min_context < block:
            raise ValueError(f"min_context must be whole quarters below block_size, got {min_context}")
        check_sampling_options(temperature, top_k, top_p, self.config.vocab_size)
        device = self.first_code_probs.device
        noise = gumbel_noise(seeds, num_new, self.config.vocab_size).to(device)  # [B, num_new, vocab]
        if prompt is None:
            opening_logits = self.first_code_probs.log().expand(len(seeds), -1)
            prompt = draw(opening_logits, noise[:, 0])[:, None]
            noise, num_new = noise[:, 1:], num_new - 1
        batch, prompt_length = prompt.shape
        if prompt_length < 1 or batch != len(seeds):
            raise ValueError(f"prompt must be [len(seeds), P >= 1], got {list(prompt.shape)}")
        sequence = torch.empty(batch, prompt_length + num_new, dtype=torch.long, device=device)
        sequence[:, :prompt_length] = prompt
        cache = KVCache(self.config, batch, device, next(self.parameters()).dtype) if use_cache else None
        weights = self.decode_weights()
        no_melody = self.melody_vectors(None, batch, 1)  # [B, 1, C]: free music hears "no melody", or None
        heard = no_melody[:, 0] if no_melody is not None else None

        # The window begins on a quarter boundary (the prompt starts on one) and holds <= block codes.
        window_start = 0
        if prompt_length > block:
            window_start = (prompt_length - min_context) // codes_per_quarter * codes_per_quarter
        logits = None
        for n in range(prompt_length, prompt_length + num_new):  # n: index of the code to draw
            if n - window_start > block:
                window_start = n - min_context
                logits = None
            if cache is None:
                logits = self(sequence[:, window_start:n])[0][:, -1]
            elif logits is None:  # (re)fill the cache with the window so far
                cache.reset()
                logits = self(sequence[:, window_start:n], cache=cache)[0][:, -1]
            code = draw(filter_logits(logits, temperature, top_k, top_p), noise[:, n - prompt_length])
            sequence[:, n] = code
            if progress is not None and (n + 1) % codes_per_quarter == 0:
                progress(1)
            if cache is not None and n + 1 - window_start <= block and n + 1 < sequence.shape[1]:
                logits = self.decode_step(code, cache, weights, heard)
        return sequence

    @torch.inference_mode()
    def sample_candidates(
        self,
        context: torch.Tensor,
        num_candidates: int,
        num_new: int,
        generator: torch.Generator,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        melody: torch.Tensor | None = None,
        guidance: float = 1.0,
        mode: int | None = None,
    ) -> torch.Tensor:
        """`num_candidates` continuations of one context [P], each `num_new` codes: [M, num_new].

        The context is run once (`shared_context`) and every candidate attends to it there; then all
        candidates step together. The context must start where a training window does (a quarter
        boundary) and fit with the new codes: P + num_new - 1 <= block_size. An empty context opens
        with codes drawn from `first_code_probs`. The noise comes from `generator`, so a caller
        drawing in a fixed order gets the same candidates every run. melody: slot tokens [Qm, slots]
        of the quarters from the context's first (a model with the melody condition). guidance: with
        a melody, the logits drawn from are u + guidance * (c - u), c heard with the melody and u
        without (classifier-free guidance; 1: the melody alone). mode: heard with the melody (0
        major, 1 minor), by a model that `hears_mode`.
        """
        shared = self.shared_context(context, melody, guidance, mode=mode)
        return self.sample_after(shared, num_candidates, num_new, generator, temperature, top_k, top_p)

    @torch.inference_mode()
    def shared_context(
        self,
        context: torch.Tensor,
        melody: torch.Tensor | None = None,
        guidance: float = 1.0,
        earlier: SharedContext | None = None,
        mode: int | None = None,
    ) -> SharedContext:
        """Context [P] run once per row group, for `sample_after` and `log_likelihood_after` to continue.

        melody: slot tokens [Qm, slots] of the quarters from the context's first, heard by group 0;
        with a melody and guidance other than 1, group 1 hears no melody. Without a melody: one
        group. An empty context gives an empty prefix and the log of `first_code_probs`.
        earlier: what an earlier call returned for the first positions of this context (the same
        window start, melody and guidance): only the positions after it are run, appended to its
        cache (which this call takes over), while a window grows quarter by quarter. mode: heard with
        the melody (0 major, 1 minor), by a model that `hears_mode`; the group without it hears none.
        """
        device, dtype = self.first_code_probs.device, next(self.parameters()).dtype
        modes = None if mode is None else torch.tensor([mode], device=device)  # [1]: every group's
        melodies = None if melody is None else melody[None].to(device)  # [G, Qm, slots]: one group per melody
        if melody is not None and guidance != 1.0:  # a second group of rows hears no melody
            melodies = torch.cat([melodies, torch.full_like(melodies, NONE)])
        groups = 1 if melodies is None else len(melodies)
        cache = earlier.cache if earlier is not None else KVCache(self.config, groups, device, dtype)
        new = context[cache.length :]
        if len(new):
            logits = self(new[None].to(device).expand(groups, -1), cache=cache, melody=melodies, mode=modes)[0][:, -1]
        elif len(context):
            logits = earlier.logits
        else:
            logits = self.first_code_probs.log().expand(groups, -1)
        return SharedContext(cache.prefix(), logits, melodies, guidance if groups == 2 else 1.0, cache, modes)

    @torch.inference_mode()
    def sample_after(
        self,
        shared: SharedContext,
        num_candidates: int,
        num_new: int,
        generator: torch.Generator,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
    ) -> torch.Tensor:
        """`num_candidates` continuations of a shared context, each `num_new` codes: [M, num_new].

        Every group steps its distinct candidates (`candidate_step`): those that drew the same
        codes so far share a row, which gets the same logits whichever is stepped. With two groups
        the logits drawn from mix them (see `sample_candidates`).
        """
        context_length = shared.prefix.length
        if context_length + num_new - 1 > self.config.block_size or num_new < 1 or num_candidates < 1:
            raise ValueError(
                f"{context_length} context and {num_new} new codes do not fit block_size {self.config.block_size}"
            )
        check_sampling_options(temperature, top_k, top_p, self.config.vocab_size)
        device = self.first_code_probs.device
        noise = gumbel((num_candidates, num_new, self.config.vocab_size), generator).to(device)
        groups = shared.groups
        keys = CandidateKeys(shared.prefix, num_candidates, num_new)
        entries = torch.empty(num_candidates, num_new, dtype=torch.long, device=device)  # each one's, in `keys`
        logits = shared.logits[:, None].expand(-1, num_candidates, -1)  # [G, M, V]
        last_quarter = (context_length + num_new - 1) // self.config.codes_per_quarter
        heard = self.melody_vectors(shared.melodies, groups, last_quarter + 1, shared.mode)  # [G, quarters, C] or None
        weights = self.decode_weights()
        candidates = torch.empty(num_candidates, num_new, dtype=torch.long, device=device)
        row = torch.zeros(num_candidates, dtype=torch.long, device=device)  # each candidate's row in the last step
        vocab = self.config.vocab_size
        for n in range(num_new):
            mixed = logits[0] if groups == 1 else logits[1] + shared.guidance * (logits[0] - logits[1])  # [M, V]
            filtered = mixed if not context_length and n == 0 else filter_logits(mixed, temperature, top_k, top_p)
            candidates[:, n] = draw(filtered, noise[:, n])
            if n + 1 < num_new:
                # candidates that drew the same codes so far are one row, stepped once (U rows of M): a
                # row is its row in the last step and its new code, numbered in the order of its codes
                distinct, row = torch.unique(row * vocab + candidates[:, n], return_inverse=True)  # [U], [M]
                entries[:, n] = keys.length + row
                one_each = torch.empty(len(distinct), dtype=torch.long, device=device)
                one_each.scatter_(0, row, torch.arange(num_candidates, device=device))  # a candidate of each row
                quarter = (context_length + n + 1) // self.config.codes_per_quarter  # of the code predicted next
                step_heard = heard[:, quarter].repeat_interleave(len(distinct), dim=0) if heard is not None else None
                visible = keys.visible(entries[one_each, : n + 1])
                codes = (distinct % vocab).repeat(groups)  # [G * U]: each row's new code
                step_logits = self.candidate_step(codes, keys, n, weights, step_heard, visible)
                logits = step_logits.view(groups, len(distinct), -1)[:, row]  # [G, M, V]
        return candidates

    def candidate_step(
        self,
        codes: torch.Tensor,
        keys: CandidateKeys,
        position: int,
        weights: list[tuple],
        heard: torch.Tensor | None,
        visible: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [G * U, vocab] after feeding codes [G * U], one per row, at own position `position`.

        `decode_step` for U rows in each of G groups that continue the groups' prefixes, their
        keys and values appended to `keys`, each row seeing its entries there (`visible` [U, ...],
        from `CandidateKeys.visible`). The same arithmetic as `forward` with the prefix (a test
        holds them equal). weights: `decode_weights()`; heard: melody vectors [G * U, C] or None.
        """
        _, _, groups, heads, _, head_width = keys.kv.shape
        batch, width = len(codes), self.config.n_embd
        rows = batch // groups
        x = self.token_embedding.weight[codes] + self.position_embedding.weight[keys.prefix_length + position]
        if heard is not None:
            x = x + heard  # [B, C]
        for layer, layer_weights in enumerate(weights):
            ln1_w, ln1_b, qkv_w, qkv_b, proj_wt, proj_b = layer_weights[:6]
            qkv = F.linear(F.layer_norm(x, (width,), ln1_w, ln1_b), qkv_w, qkv_b)
            qkv = qkv.view(groups, rows, 3, heads, head_width).permute(2, 0, 3, 1, 4)  # [3, G, H, U, D]
            k, v = keys.append(layer, qkv[1:])
            y = F.scaled_dot_product_attention(qkv[0], k, v, attn_mask=visible)  # [G, H, U, D]
            y = y.permute(0, 2, 1, 3).reshape(batch, width)  # [B, C]: heads side by side
            x = torch.addmm(x if proj_b is None else x + proj_b, y, proj_wt)  # x + proj(y)
            x = _step_mlp(x, layer_weights)
        keys.advance(rows)
        return F.linear(F.layer_norm(x, (width,), self.ln_f.weight, self.ln_f.bias), self.head.weight)

    @torch.inference_mode()
    def continuation_log_likelihood(
        self,
        context: torch.Tensor,
        continuations: torch.Tensor,
        melody: torch.Tensor | None = None,
        mode: int | None = None,
    ) -> torch.Tensor:
        """Log-probability (nats) of each of continuations [M, n] after one context [P]: [M].

        The context is run once and shared, as in `sample_candidates`; it must start on a quarter
        boundary, and P + n - 1 <= block_size. melody: slot tokens [Qm, slots] of the quarters
        from the context's first, heard by a model with the melody condition, with its mode by a
        model that `hears_mode`.
        """
        return self.log_likelihood_after(self.shared_context(context, melody, mode=mode), continuations)

    @torch.inference_mode()
    def log_likelihood_after(self, shared: SharedContext, continuations: torch.Tensor) -> torch.Tensor:
        """Log-probability (nats) of each of continuations [M, n] after a shared context's group 0: [M]."""
        num, length = continuations.shape
        if shared.prefix.length + length - 1 > self.config.block_size:
            raise ValueError(f"{shared.prefix.length} + {length} codes do not fit block_size {self.config.block_size}")
        logits = [shared.logits[:1, None].float().expand(num, -1, -1)]  # predicts each continuation's first code
        if length > 1:
            melody = None if shared.melodies is None else shared.melodies[:1]  # [1, Qm, slots]: every row's
            prefix = shared.prefix.first_group()
            logits.append(self(continuations[:, :-1], melody=melody, prefix=prefix, mode=shared.mode)[0].float())
        log_probs = torch.log_softmax(torch.cat(logits, dim=1), dim=-1)  # [M, n, V]
        return log_probs.gather(-1, continuations[..., None]).squeeze(-1).sum(-1)

    @torch.inference_mode()
    def log_likelihood(self, sequences: torch.Tensor, first_scored: int) -> torch.Tensor:
        """Log-probability (nats) of codes first_scored ... T - 1 of each sequence [B, T <= block_size + 1]: [B]."""
        if not 1 <= first_scored < sequences.shape[1] <= self.config.block_size + 1:
            raise ValueError(f"cannot score from code {first_scored} of {sequences.shape[1]}")
        logits = self(sequences[:, :-1])[0][:, first_scored - 1 :].float()  # predicts codes first_scored ...
        log_probs = torch.log_softmax(logits, dim=-1)
        return log_probs.gather(-1, sequences[:, first_scored:, None]).squeeze(-1).sum(-1)

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu") -> GPT:
        """The one loader: rebuilds the model from the config stored in the checkpoint."""
        from bachsformer.checkpoint import load_model

        return load_model(cls, GPTConfig, "transformer", path, map_location)
