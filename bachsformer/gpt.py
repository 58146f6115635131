"""Bachsformer: a small decoder-only transformer over VQ-VAE codes, in the style of minGPT.

Token and learned position embeddings, pre-norm blocks of causal self-attention
(`scaled_dot_product_attention`) and MLP, a linear head tied to the token embedding. `forward`
takes an optional `KVCache`: with it, the model attends over what the cache holds and appends the
new keys and values, which makes sampling cost one position per step instead of a whole window.

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

    def __post_init__(self):
        """Refuse sizes no model can have; the message starts with the key (config.py adds the section)."""
        check_at_least(self, 1, "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "codes_per_quarter")
        check_at_least(self, 0, "melody_quarters", "countdown")
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


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0):
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(0, 2, 3, 1, 4)
        q, k, v = qkv.unbind(1)  # each [B, n_head, T, head_dim]
        dropout = self.dropout if self.training else 0.0
        if cache is None:
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

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0):
        x = x + self.attn(self.ln_1(x), cache, layer)
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
        if config.countdown:  # where the tune ends: tokens to go, their phase in a 4/4 bar, the mode
            self.countdown_embedding = nn.Embedding(config.countdown + 1, config.n_embd)
            self.phase_embedding = nn.Embedding(4 * config.codes_per_quarter, config.n_embd)
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

    def melody_vectors(self, melody: torch.Tensor | None, batch: int, num_quarters: int) -> torch.Tensor | None:
        """What the codes of each of a window's first `num_quarters` quarters hear: [B, num_quarters, n_embd].

        melody: slot tokens [B, Qm, slots] of the window's quarters from its first (REST past Qm; NONE
        past a row of NONE), or None for no melody (NONE). Returns None for a model without the
        melody condition, which refuses a melody.
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
        return self.melody_projection(heard)

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
        remaining: torch.Tensor | None = None,
        mode: torch.Tensor | None = None,
    ):
        """idx [B, T] -> (logits [B, T, vocab], mean cross-entropy in nats or None).

        With a cache, idx continues the cached positions: position numbers start at cache.length.
        melody: slot tokens [B, Qm, slots] of the window's quarters, counted from position 0 (see
        the module doc); None: no melody. remaining [B, T] and mode [B]: a tune model's end
        condition (`end_vectors`), which it needs.
        """
        start = cache.length if cache is not None else 0
        t = idx.shape[1]
        if start + t > self.config.block_size:
            raise ValueError(f"{start + t} positions exceed block_size {self.config.block_size}")
        positions = torch.arange(start, start + t, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(positions)
        per_quarter = self.config.codes_per_quarter
        heard = self.melody_vectors(melody, len(idx), (start + t) // per_quarter + 1)  # [B, quarters, C]
        if heard is not None:
            x = x + heard[:, torch.div(positions + 1, per_quarter, rounding_mode="floor")]
        if self.config.countdown:
            if remaining is None or mode is None:
                raise ValueError("a tune model hears where its tune ends: give remaining and mode")
            x = x + self.end_vectors(remaining, mode)
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
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
            ln1_w, ln1_b, qkv_w, qkv_b, proj_wt, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_wt, out_b = layer_weights
            layer_kv = cache.kv[layer]  # [B, 2, heads, block, head_dim]
            qkv = F.linear(F.layer_norm(x, (width,), ln1_w, ln1_b), qkv_w, qkv_b).view(batch, 3, heads, 1, -1)
            layer_kv[:, :, :, position : position + 1] = qkv[:, 1:]
            k, v = layer_kv[:, :, :, : position + 1].unbind(1)  # [B, heads, position + 1, head_dim]
            y = F.scaled_dot_product_attention(qkv[:, 0], k, v)  # [B, heads, 1, head_dim]
            x = torch.addmm(x if proj_b is None else x + proj_b, y.view(batch, width), proj_wt)  # x + proj(y)
            h = F.gelu(F.linear(F.layer_norm(x, (width,), ln2_w, ln2_b), fc_w, fc_b), approximate="tanh")
            x = torch.addmm(x if out_b is None else x + out_b, h, out_wt)  # x + out(h): residual and matmul in one
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
    ) -> torch.Tensor:
        """Continue `prompt` [B, P] by `num_new` codes; returns [B, P + num_new].

        Without a prompt, each piece opens with a code drawn from `first_code_probs` (counted as one
        of the `num_new`). Continuous: every code is kept, and each new code sees between
        `min_context` and block_size codes before it. The window starts on a quarter boundary; when
        it is full it jumps forward, keeping its last `min_context` codes, which are encoded again
        once (their positions have moved). In between, each step feeds one code through the
        key/value cache. Piece b draws its randomness from its own generator seeded with seeds[b].
        `use_cache=False` recomputes the whole window for every code instead: the same codes at
        the naive cost, kept for comparison.
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
    ) -> torch.Tensor:
        """`num_candidates` continuations of one context [P], each `num_new` codes: [M, num_new].

        The context is run once and its keys and values copied to every candidate's row of the
        cache; then all candidates step together. The context must start where a training window
        does (a quarter boundary) and fit with the new codes: P + num_new - 1 <= block_size. An
        empty context opens with codes drawn from `first_code_probs`. The noise comes from
        `generator`, so a caller drawing in a fixed order gets the same candidates every run.
        melody: slot tokens [Qm, slots] of the quarters from the context's first (a model with the
        melody condition). guidance: with a melody, the logits drawn from are u + guidance * (c - u),
        c heard with the melody and u without (classifier-free guidance; 1: the melody alone).
        """
        context_length = len(context)
        if context_length + num_new - 1 > self.config.block_size or num_new < 1 or num_candidates < 1:
            raise ValueError(
                f"{context_length} context and {num_new} new codes do not fit block_size {self.config.block_size}"
            )
        check_sampling_options(temperature, top_k, top_p, self.config.vocab_size)
        device = self.first_code_probs.device
        noise = gumbel((num_candidates, num_new, self.config.vocab_size), generator).to(device)
        melodies = None if melody is None else melody[None].to(device)  # [G, Qm, slots]: one group per melody
        guided = melody is not None and guidance != 1.0
        if guided:  # a second group of rows hears no melody
            melodies = torch.cat([melodies, torch.full_like(melodies, NONE)])
        groups = 1 if melodies is None else len(melodies)
        cache, logits = self._context_cache(context, num_candidates * groups, melodies)
        last_quarter = (context_length + num_new - 1) // self.config.codes_per_quarter
        heard = self.melody_vectors(melodies, groups, last_quarter + 1)  # [G, quarters, C] or None
        if heard is not None:
            heard = heard.repeat_interleave(num_candidates, dim=0)  # [G * M, quarters, C]
        weights = self.decode_weights()
        candidates = torch.empty(num_candidates, num_new, dtype=torch.long, device=device)
        for n in range(num_new):
            if guided:
                with_melody, without = logits[:num_candidates], logits[num_candidates:]
                logits = without + guidance * (with_melody - without)
            filtered = logits if not context_length and n == 0 else filter_logits(logits, temperature, top_k, top_p)
            candidates[:, n] = draw(filtered, noise[:, n])
            if n + 1 < num_new:
                quarter = (context_length + n + 1) // self.config.codes_per_quarter  # of the code predicted next
                step_heard = heard[:, quarter] if heard is not None else None
                logits = self.decode_step(candidates[:, n].repeat(groups), cache, weights, step_heard)
        return candidates

    def _context_cache(
        self, context: torch.Tensor, batch: int, melodies: torch.Tensor | None = None
    ) -> tuple[KVCache, torch.Tensor]:
        """A cache of `batch` rows, each holding context [P], and the logits after it [batch, V].

        melodies: slot tokens [G, Qm, slots]; the context is run once per melody, and row group g
        (batch / G rows in order) hears melody g. Without: run once. An empty context gives an
        empty cache and the log of `first_code_probs` for every row.
        """
        device, dtype = self.first_code_probs.device, next(self.parameters()).dtype
        cache = KVCache(self.config, batch, device, dtype)
        if not len(context):
            return cache, self.first_code_probs.log().expand(batch, -1)
        groups = 1 if melodies is None else len(melodies)
        shared = KVCache(self.config, groups, device, dtype)
        logits = self(context[None].to(device).expand(groups, -1), cache=shared, melody=melodies)[0][:, -1]
        rows = batch // groups
        cache.kv[:, :, :, :, : len(context)] = shared.kv[:, :, :, :, : len(context)].repeat_interleave(rows, dim=1)
        cache.length = len(context)
        return cache, logits.repeat_interleave(rows, dim=0)

    @torch.inference_mode()
    def continuation_log_likelihood(
        self, context: torch.Tensor, continuations: torch.Tensor, melody: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Log-probability (nats) of each of continuations [M, n] after one context [P]: [M].

        The context is run once and shared through the cache, as in `sample_candidates`; it must
        start on a quarter boundary, and P + n - 1 <= block_size. melody: slot tokens [Qm, slots]
        of the quarters from the context's first, heard by a model with the melody condition.
        """
        num, length = continuations.shape
        if len(context) + length - 1 > self.config.block_size:
            raise ValueError(f"{len(context)} + {length} codes do not fit block_size {self.config.block_size}")
        melodies = None if melody is None else melody[None].to(self.first_code_probs.device)
        cache, first_logits = self._context_cache(context, num, melodies)
        logits = [first_logits[:, None].float()]  # predicts each continuation's first code
        if length > 1:
            each = None if melodies is None else melodies.expand(num, -1, -1)
            logits.append(self(continuations[:, :-1], cache=cache, melody=each)[0].float())
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
