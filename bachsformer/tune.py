"""Tunes: a chorale's top line as tokens, the corpus of them, and a tune model that writes new ones.

docs/design.md, "The tune model". A tune is read on an eighth-note grid, one token per eighth
(SLOTS_PER_QUARTER per quarter): `NOTE + key` where a note starts (the first onset inside the
eighth), HOLD where the note before goes on, REST where the line is silent, and FERMATA in place of
the first HOLD of a phrase's last note. A sequence is START, the tokens, END.

The tune model is the transformer of gpt.py over these tokens (`GPTConfig.countdown` above 0): each
position also hears how many tokens are left before END (exactly up to `countdown`, beyond it
only their phase in a 4/4 bar) and the mode (major or minor; the corpus is moved to C major or A
minor, so the mode names the tonic). Sampling asks for a length, so a tune of N quarters knows
where it ends and closes on time; END is forbidden until the last bar and forced at its end. With
`GPTConfig.countdown_to_last_note` the count runs to the onset of the tune's last note instead: the
model knows which note is its last, sampling draws that note's length and holds it to the end, and
the close may be drawn several ways (`ending_drafts`): the two bars before the last note and the
last note are drawn again after the same beginning, and the way the model finds most likely is kept.

Phrase ends travel in MIDI files as marker meta events whose text is FERMATA_MARKER, at the onset
of the phrase's last note (`python -m bachsformer.corpus` writes them for the chorales). A corpus
without them trains too: its tunes then have no FERMATA tokens.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bachsformer.checkpoint import load_model
from bachsformer.errors import BachsformerError
from bachsformer.gpt import GPT, GPTConfig, KVCache
from bachsformer.metrics import highest_line
from bachsformer.midi import FERMATA_MARKER, LOWEST_PITCH, NUM_KEYS, STEPS_PER_QUARTER, read_fermatas  # noqa: F401
from bachsformer.sampling import filter_logits, gumbel_noise

SLOTS_PER_QUARTER = 2  # eighth notes: a chorale tune's shortest note values but a few passing sixteenths
SLOT_STEPS = STEPS_PER_QUARTER // SLOTS_PER_QUARTER
REST, HOLD, FERMATA, END, START, NOTE = range(6)  # NOTE + key for keys 0 ... 87
VOCAB_SIZE = NOTE + NUM_KEYS
MAJOR, MINOR = 0, 1
KIND = "tune"  # the checkpoint kind
LAST_NOTE_SLOTS = 4  # a half note: the last note of a tune model that records no lengths (`draw_last_notes`)
ENDING_SLOTS = 2 * 4 * SLOTS_PER_QUARTER  # two bars of 4/4 before the last note: the close `sample_tunes` redrafts
# draft k of the close of the tune of seed s draws from seed s * DRAFT_SEED_STRIDE + k, apart from other tunes' seeds
DRAFT_SEED_STRIDE = 10_007


class TuneError(BachsformerError):
    """A tune request that cannot be met (a length below one phrase, a tune model that does not fit)."""


def tune_tokens(line: np.ndarray, fermatas: list[int] | np.ndarray = ()) -> np.ndarray:
    """Tokens of one line of notes, quarters [Q, 88, 32] (the highest key where two sound): int64 [Q * 2].

    fermatas: onset steps of the phrases' last notes; the first HOLD after each becomes FERMATA (a
    phrase ending on an eighth note, which has none, keeps no mark).
    """
    roll = np.asarray(line, dtype=bool).transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, T]
    sounding = roll.any(axis=0)
    top = NUM_KEYS - 1 - np.argmax(roll[::-1], axis=0)  # [T], meaningless where silent
    before = np.zeros_like(sounding)
    before[1:] = sounding[:-1]
    changed = np.ones_like(sounding)
    changed[1:] = top[1:] != top[:-1]
    onset = sounding & (~before | changed)  # a repeated note comes after the codec's one-step gap
    slot_onsets = onset.reshape(-1, SLOT_STEPS)  # [slots, 8]
    first_onset = np.argmax(slot_onsets, axis=1)
    slot_starts = np.arange(len(slot_onsets)) * SLOT_STEPS
    keys = top[slot_starts + first_onset]
    tokens = np.where(slot_onsets.any(axis=1), NOTE + keys, np.where(sounding[slot_starts], HOLD, REST))
    for step in fermatas:
        slot = int(step) // SLOT_STEPS
        if 0 <= slot < len(tokens) - 1 and tokens[slot] >= NOTE and tokens[slot + 1] == HOLD:
            tokens[slot + 1] = FERMATA
    return tokens.astype(np.int64)


def tune_quarters(tokens: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Tokens (up to END, START and END left out) -> (the line as quarters [Q, 88, 32], fermata onset steps).

    A note repeated on its key ends one step early, as the MIDI codec writes repeats.
    """
    tokens = [int(t) for t in tokens if t != START]
    if END in tokens:
        tokens = tokens[: tokens.index(END)]
    num_quarters = max(1, -(-len(tokens) // SLOTS_PER_QUARTER))
    roll = np.zeros((NUM_KEYS, num_quarters * STEPS_PER_QUARTER), dtype=bool)
    fermatas, key, start = [], None, 0
    for slot, token in enumerate(tokens + [REST]):
        step = slot * SLOT_STEPS
        if token in (HOLD, FERMATA) and key is not None:
            if token == FERMATA:
                fermatas.append(start)
            continue
        if key is not None:  # the note before ends here
            repeated = token - NOTE == key
            roll[key, start : step - 1 if repeated else step] = True
        key, start = (token - NOTE, step) if token >= NOTE else (None, step)
    quarters = roll.reshape(NUM_KEYS, num_quarters, STEPS_PER_QUARTER).transpose(1, 0, 2)
    return np.ascontiguousarray(quarters), fermatas


# ---- phrase ends in MIDI files ------------------------------------------------------------


def _variable_length(value: int) -> bytes:
    """A MIDI variable-length quantity."""
    groups = [value & 0x7F]
    while value > 0x7F:
        value >>= 7
        groups.append(0x80 | (value & 0x7F))
    return bytes(reversed(groups))


def add_markers(midi: bytes, ticks: list[int], text: str = FERMATA_MARKER) -> bytes:
    """A format-1 Standard MIDI File with one more track holding a marker meta event (FF 06) of
    `text` at each tick; the other tracks' bytes are left as they were."""
    if midi[:4] != b"MThd" or struct.unpack(">H", midi[8:10])[0] != 1:
        raise ValueError("markers are added to format-1 MIDI files only")
    events, now = b"", 0
    for tick in sorted(set(int(t) for t in ticks)):
        data = text.encode()
        events += _variable_length(tick - now) + b"\xff\x06" + _variable_length(len(data)) + data
        now = tick
    events += b"\x00\xff\x2f\x00"  # end of track
    tracks = struct.unpack(">H", midi[10:12])[0]
    header = midi[:10] + struct.pack(">H", tracks + 1) + midi[12:]
    return header + b"MTrk" + struct.pack(">I", len(events)) + events


# ---- the corpus of tunes ------------------------------------------------------------------


def piece_mode(key: str) -> int:
    """MINOR for a key name such as 'A minor', else MAJOR."""
    return MINOR if str(key).endswith("minor") else MAJOR


def corpus_tunes(pieces, midi_dir: str | Path, normalized: bool = True) -> tuple[list[np.ndarray], list[int], int]:
    """(tokens of each piece's top line, its mode, how many files carry fermatas).

    pieces: `data.CorpusPiece`s read from midi_dir; a fermata marker moves with the piece's key
    shift only in pitch, not in time, so the steps read from the file hold.
    """
    tunes, modes, marked = [], [], 0
    for piece in pieces:
        fermatas = read_fermatas(Path(midi_dir) / piece.name)
        marked += bool(fermatas)
        tunes.append(tune_tokens(highest_line(piece.quarters), fermatas))
        modes.append(piece_mode(piece.key))
    return tunes, modes, marked


def sequence_of(tokens: np.ndarray) -> torch.Tensor:
    """START, tokens, END: long [L + 2]."""
    return torch.from_numpy(np.concatenate([[START], tokens, [END]]).astype(np.int64))


def countdown_index(tokens: np.ndarray, to_last_note: bool = False) -> int:
    """The sequence index (START at 0) where a tune's countdown reaches 0: END's, or with
    to_last_note the onset of its last note (END's for a tune without notes). Positions past it hear 0."""
    notes = np.flatnonzero(np.asarray(tokens) >= NOTE)
    return 1 + int(notes[-1]) if to_last_note and len(notes) else len(tokens) + 1


def last_note_slots(tokens: np.ndarray) -> int:
    """Eighths from a tune's last note onset to its end (0 without notes)."""
    notes = np.flatnonzero(np.asarray(tokens) >= NOTE)
    return len(tokens) - int(notes[-1]) if len(notes) else 0


class TuneWindowDataset:
    """Windows of tune sequences for training: `window` tokens from each quarter boundary (a tune
    shorter than that is one window, padded). The countdown each target hears runs to END, or with
    to_last_note to the onset of the tune's last note (`countdown_index`). `batch(indices, generator)`
    returns (inputs, targets, remaining, mode, weight): long [B, window - 1] each but mode [B], weight
    float [B, window - 1]; padded targets are -1.

    A target near either end of a long tune lies in fewer windows than one in its middle (its END in
    one, a middle token in up to 64): weight is 1 / the number of windows that hold the target, so
    each target of the corpus counts once per epoch, its cadence as much as its middle.
    """

    def __init__(self, tunes: list[np.ndarray], modes: list[int], window: int, to_last_note: bool = False):
        self.sequences = [sequence_of(t) for t in tunes]
        self.counted_to = [countdown_index(t, to_last_note) for t in tunes]
        self.modes = modes
        self.window = window
        starts, self.weights = [], []
        for number, sequence in enumerate(self.sequences):
            firsts = range(0, max(1, len(sequence) - window + 1), SLOTS_PER_QUARTER)
            covered = torch.zeros(len(sequence))  # windows holding each sequence index as a target
            for start in firsts:
                starts.append((number, start))
                covered[start + 1 : start + window] += 1
            self.weights.append(1 / covered.clamp(min=1))
        self.starts = torch.tensor(starts, dtype=torch.long).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        size = self.window - 1
        inputs = torch.full((len(indices), size), END, dtype=torch.long)
        targets = torch.full((len(indices), size), -1, dtype=torch.long)
        remaining = torch.zeros((len(indices), size), dtype=torch.long)
        weight = torch.zeros((len(indices), size))
        modes = torch.zeros(len(indices), dtype=torch.long)
        for row, (number, start) in enumerate(self.starts[indices].tolist()):
            sequence = self.sequences[number][start : start + self.window]
            length = len(sequence) - 1
            inputs[row, :length], targets[row, :length] = sequence[:-1], sequence[1:]
            # input position t predicts sequence index start + t + 1
            remaining[row, :length] = (self.counted_to[number] - (start + 1 + torch.arange(length))).clamp(min=0)
            weight[row, :length] = self.weights[number][start + 1 : start + 1 + length]
            modes[row] = self.modes[number]
        return inputs, targets, remaining, modes, weight


def tune_loss(model: GPT, batch) -> torch.Tensor:
    """Cross-entropy (nats) of a `TuneWindowDataset` batch, each target by its weight, padding left out."""
    inputs, targets, remaining, modes, weight = batch
    logits, _ = model(inputs, remaining=remaining, mode=modes)
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1, reduction="none")
    weight = weight.flatten()
    return (losses * weight).sum() / weight.sum().clamp(min=1e-8)


@torch.no_grad()
def bits_per_token(model: GPT, tunes: list[np.ndarray], modes: list[int]) -> float:
    """Held-out bits per token (every token after START, END included), each tune read in windows
    of the model's block that overlap by half, every token scored once."""
    total, count = 0.0, 0
    window = model.config.block_size + 1
    for tokens, mode in zip(tunes, modes):
        sequence = sequence_of(tokens)
        counted_to = countdown_index(tokens, model.config.countdown_to_last_note)
        scored_until = 1  # sequence indices below this are scored
        start = 0
        while scored_until < len(sequence):
            part = sequence[start : start + window]
            positions = start + 1 + torch.arange(len(part) - 1)
            remaining = (counted_to - positions).clamp(min=0)
            logits, _ = model(part[None, :-1], remaining=remaining[None], mode=torch.tensor([mode]))
            losses = F.cross_entropy(logits[0].float(), part[1:], reduction="none")
            new = positions >= scored_until
            total += float(losses[new].sum())
            count += int(new.sum())
            scored_until = start + len(part)
            start += window // 2
    return total / count / math.log(2)


def tune_baselines(train: list[np.ndarray], held_out: list[np.ndarray]) -> dict:
    """Bits per token of held-out tunes under a unigram and a bigram model counted on the training
    tunes (add-one smoothing), on the targets `bits_per_token` scores."""
    unigram = np.ones(VOCAB_SIZE)
    bigram = np.ones((VOCAB_SIZE, VOCAB_SIZE))
    for tokens in train:
        sequence = sequence_of(tokens).numpy()
        unigram += np.bincount(sequence[1:], minlength=VOCAB_SIZE)
        np.add.at(bigram, (sequence[:-1], sequence[1:]), 1)
    unigram /= unigram.sum()
    bigram /= bigram.sum(1, keepdims=True)
    sequences = [sequence_of(t).numpy() for t in held_out]
    previous = np.concatenate([s[:-1] for s in sequences])
    targets = np.concatenate([s[1:] for s in sequences])
    return {
        "unigram_bits": float(-np.log2(unigram[targets]).mean()),
        "bigram_bits": float(-np.log2(bigram[previous, targets]).mean()),
    }


# ---- the tune model -------------------------------------------------------------------------


def load_tune_model(path: str | Path, map_location="cpu") -> GPT:
    """A tune model (checkpoint kind "tune"): the transformer of gpt.py with the end condition."""
    return load_model(GPT, GPTConfig, KIND, path, map_location)


def draw_last_notes(model: GPT, seeds: list[int]) -> list[int]:
    """Each tune's last note length in eighths, drawn from its seed with the training tunes' shares
    (the checkpoint's `last_note_slots`: counts by length in eighths); a half note where none are recorded."""
    counts = getattr(model, "checkpoint_info", {}).get("last_note_slots")
    if not counts or sum(counts) <= 0:  # none recorded, or no tune's last note an eighth or longer
        return [LAST_NOTE_SLOTS] * len(seeds)
    weights = torch.tensor(counts, dtype=torch.float)
    return [int(torch.multinomial(weights, 1, generator=torch.Generator().manual_seed(seed + 2))) for seed in seeds]


@torch.inference_mode()
def sample_tunes(
    model: GPT,
    num_slots: int,
    seeds: list[int],
    modes: list[int],
    temperature: float = 1.0,
    top_p: float = 1.0,
    prefix: np.ndarray | None = None,
    min_context: int | None = None,
    last_notes: list[int] | None = None,
    ending_drafts: int = 1,
) -> list[np.ndarray]:
    """One tune per seed, `num_slots` tokens long with its prefix: a list of int64 token arrays without
    START and END.

    modes: MAJOR or MINOR per tune. prefix: tokens every tune starts with (a primer's top line).
    A model whose countdown runs to END may end a tune within its last bar, and ends it there at the
    latest. A model whose countdown runs to the last note (`GPTConfig.countdown_to_last_note`) writes
    every tune exactly `num_slots` long: its last note starts `last_notes` eighths before the end
    (drawn per seed by `draw_last_notes` when None), the model choosing its pitch, and is held, with
    or without a fermata, to the end.
    Each tune draws its noise from its own generator seeded with its seed, so tune b is the same
    alone or in a batch. When the window is full it keeps its last `min_context` tokens (half the
    window by default) and runs them through the model once more.
    ending_drafts: with a model that counts to the last note, the close of each tune (ENDING_SLOTS
    before its last note, and the last note) is drawn this many ways in all, the first being the tune as
    sampled, and the one of the highest log-likelihood under the model is kept (`most_likely_ending`).
    """
    block = model.config.block_size
    min_context = min_context or (block + 1) // 2
    bar = 4 * SLOTS_PER_QUARTER
    prefix = np.zeros(0, dtype=np.int64) if prefix is None else np.asarray(prefix, dtype=np.int64)
    if num_slots <= len(prefix):
        raise TuneError(f"a tune of {num_slots} eighths leaves nothing to write after its {len(prefix)}")
    batch = len(seeds)
    device = model.token_embedding.weight.device
    sequence = torch.full((batch, num_slots + 2), END, dtype=torch.long, device=device)
    sequence[:, 0] = START
    sequence[:, 1 : 1 + len(prefix)] = torch.from_numpy(prefix)
    mode = torch.tensor(modes, dtype=torch.long, device=device)
    first_new = 1 + len(prefix)
    to_last_note = model.config.countdown_to_last_note
    if to_last_note:  # the sequence index of each tune's last note onset, after the prefix
        last_notes = draw_last_notes(model, seeds) if last_notes is None else last_notes
        counted_to = torch.tensor([max(num_slots + 1 - d, first_new) for d in last_notes], device=device)
    else:  # END's
        counted_to = torch.full((batch,), num_slots + 1, device=device)
    noise = gumbel_noise(seeds, num_slots + 1 - len(prefix), VOCAB_SIZE).to(device)  # [B, new + END, V]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    cache = KVCache(model.config, batch, device, next(model.parameters()).dtype)
    weights = model.decode_weights()
    window_start, logits = 0, None
    for n in range(first_new, num_slots + 2):  # n: sequence index of the token to draw
        if n - window_start > block:
            window_start, logits = n - min_context, None
        if logits is None:  # (re)fill the cache with the window so far
            cache.reset()
            positions = torch.arange(window_start, n, device=device)
            logits = model(
                sequence[:, window_start:n],
                cache=cache,
                remaining=(counted_to[:, None] - 1 - positions).clamp(min=0),
                mode=mode,
            )[0][:, -1]
        remaining = num_slots + 1 - n  # tokens from this one to END
        if to_last_note:  # before the last note no END, on it a note, after it the note held
            logits[:, END] = -math.inf
            at, after = counted_to == n, counted_to < n
            logits[at, REST] = logits[at, HOLD] = logits[at, FERMATA] = -math.inf
            logits[after, REST] = -math.inf
            logits[after, NOTE:] = -math.inf
            logits[after & (counted_to < n - 1), FERMATA] = -math.inf  # a fermata only in place of its first hold
        logits = filter_logits(logits, temperature, 0, top_p)
        logits[:, START] = -math.inf
        if remaining > bar:
            logits[:, END] = -math.inf
        previous = sequence[:, n - 1]
        silent = (previous == REST) | (previous == START)
        logits[silent, HOLD] = logits[silent, FERMATA] = -math.inf  # nothing to hold
        token = (logits + noise[:, n - first_new]).argmax(-1) if remaining else torch.full_like(previous, END)
        token = torch.where(finished, END, token)
        sequence[:, n] = token
        finished |= token == END
        if bool(finished.all()):
            break
        if n + 1 - window_start <= block and n + 1 < sequence.shape[1]:
            heard = model.end_vectors((counted_to - 1 - n).clamp(min=0)[:, None], mode)[:, 0]
            logits = model.decode_step(token, cache, weights, heard)
    tunes = []
    for row in sequence[:, 1:].cpu().numpy():
        ends = np.flatnonzero(row == END)
        tunes.append(row[: ends[0] if len(ends) else len(row)])
    if to_last_note and ending_drafts > 1:
        tunes = [
            most_likely_ending(
                model, tune, seed, mode, last, ending_drafts, temperature, top_p, len(prefix), min_context
            )
            for tune, seed, mode, last in zip(tunes, seeds, modes, last_notes)
        ]
    return tunes


def most_likely_ending(
    model: GPT,
    tune: np.ndarray,
    seed: int,
    mode: int,
    last_note: int,
    drafts: int,
    temperature: float,
    top_p: float,
    kept: int = 0,
    min_context: int | None = None,
) -> np.ndarray:
    """`tune` (tokens, its last note `last_note` eighths long) or one of drafts - 1 others that share its
    first tokens and draw its last ENDING_SLOTS before the last note, and the last note, again (never
    its first `kept`, a primer's): the one whose redrawn tokens the model finds most likely, the first of equals.

    A search over the close, as a musician tries a cadence a few ways: the model's likelihood chooses,
    not a rule about which note to end on. Draft k draws from seed * DRAFT_SEED_STRIDE + k.
    """
    first = max(kept, len(tune) - last_note - ENDING_SLOTS)  # the first token drawn again
    others = sample_tunes(
        model,
        len(tune),
        [seed * DRAFT_SEED_STRIDE + k for k in range(1, drafts)],
        [mode] * (drafts - 1),
        temperature,
        top_p,
        prefix=tune[:first],
        min_context=min_context,
        last_notes=[last_note] * (drafts - 1),
    )
    candidates = [tune, *others]
    scores = tail_log_likelihoods(model, np.stack(candidates), mode, first)
    return candidates[int(np.argmax(scores))]


@torch.inference_mode()
def tail_log_likelihoods(model: GPT, tunes: np.ndarray, mode: int, first: int) -> np.ndarray:
    """Log-likelihood (nats) under the model of each tune's tokens from index `first` on and its END,
    tunes int64 [B, L] of one mode, all counting to the same last note: float [B]. Read in the last
    window of the model's block, which holds them when L - first is below it."""
    counted_to = countdown_index(tunes[0], model.config.countdown_to_last_note)
    sequences = torch.stack([sequence_of(t) for t in tunes])  # [B, L + 2]
    start = max(0, sequences.shape[1] - (model.config.block_size + 1))
    part = sequences[:, start:].to(model.token_embedding.weight.device)
    positions = start + 1 + torch.arange(part.shape[1] - 1, device=part.device)  # the index each input predicts
    remaining = (counted_to - positions).clamp(min=0).expand(len(tunes), -1)
    modes = torch.full((len(tunes),), mode, dtype=torch.long, device=part.device)
    logits, _ = model(part[:, :-1], remaining=remaining, mode=modes)
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, part[:, 1:, None])[..., 0]  # [B, T]
    return log_probs[:, positions >= 1 + first].sum(dim=1).cpu().numpy()


def tune_pitches(tokens: np.ndarray) -> np.ndarray:
    """MIDI pitches of a tune's notes in order: int [N]."""
    tokens = np.asarray(tokens)
    return tokens[tokens >= NOTE] - NOTE + LOWEST_PITCH
