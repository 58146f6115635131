"""The melody as the transformer hears it: each quarter's top line as a few slot tokens.

A quarter of a melody (one line of notes, quarters [Q, 88, 32]) becomes SLOTS_PER_QUARTER tokens,
one per sixteenth note (4 steps) in order: REST when the line is silent there, otherwise the key
sounding at the slot's first sounding step and whether a melody note starts inside the slot
(`1 + 2 * key + onset`). A held note is then a run of tokens without onsets, a repeated note a
second onset on the same key. NONE stands for "no melody": it fills the windows trained without
their melody (condition dropout) and free generation, so one transformer writes both.

Training reads each piece's own Soprano (voices.py: a file's highest part, or the voicing rule's
top voice), so any folder of MIDI files trains the condition; harmonizing reads the tune the user gives.
"""

from __future__ import annotations

import numpy as np
import torch

from bachsformer.midi import NUM_KEYS
from bachsformer.voices import Voices

SLOTS_PER_QUARTER = 8  # sixteenth notes: a chorale tune's shortest notes are eighths
REST = 0
NONE = 1 + 2 * NUM_KEYS  # no melody given (dropped in training, or free music)
VOCAB_SIZE = NONE + 1


def melody_tokens(melody: np.ndarray) -> np.ndarray:
    """Slot tokens of a melody's quarters [Q, 88, S] (one line; S a multiple of the slots): int64 [Q, slots].

    Where two keys sound at once (a line read from a chord), the highest is taken.
    """
    melody = np.asarray(melody, dtype=bool)
    num_quarters, _, steps = melody.shape
    if steps % SLOTS_PER_QUARTER:
        raise ValueError(f"{steps} steps per quarter do not split into {SLOTS_PER_QUARTER} slots")
    roll = melody.transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, Q * S]
    sounding = roll.any(axis=0)  # [T]
    top_key = NUM_KEYS - 1 - np.argmax(roll[::-1], axis=0)  # [T], meaningless where silent
    before = np.zeros_like(roll)
    before[:, 1:] = roll[:, :-1]
    onset = (roll & ~before)[top_key, np.arange(roll.shape[1])] & sounding  # [T]: the top key starts here
    width = steps // SLOTS_PER_QUARTER
    slots_sounding = sounding.reshape(-1, width)  # [Q * slots, width]
    first = np.argmax(slots_sounding, axis=1)  # the slot's first sounding step
    keys = top_key.reshape(-1, width)[np.arange(len(first)), first]
    starts = onset.reshape(-1, width).any(axis=1)
    tokens = np.where(slots_sounding.any(axis=1), 1 + 2 * keys + starts, REST)
    return tokens.reshape(num_quarters, SLOTS_PER_QUARTER).astype(np.int64)


def soprano_tokens(voices: Voices) -> torch.Tensor:
    """The slot tokens of a piece's Soprano, its first voice: long [Q, slots]."""
    return torch.from_numpy(melody_tokens(voices.voice_quarters(0)))


def window_melody(tokens: torch.Tensor, first_quarter: int, num_quarters: int) -> torch.Tensor:
    """tokens[first_quarter : first_quarter + num_quarters] of a piece's tokens [Q, slots], REST past its end."""
    part = tokens[first_quarter : first_quarter + num_quarters]
    missing = num_quarters - len(part)
    if missing > 0:
        part = torch.cat([part, torch.full((missing, tokens.shape[1]), REST, dtype=tokens.dtype)])
    return part


def transpose_tokens(tokens: torch.Tensor, semitones: int) -> torch.Tensor:
    """Slot tokens moved by `semitones` (REST and NONE stay); the caller keeps the keys inside the 88."""
    if not semitones:
        return tokens
    sounding = (tokens != REST) & (tokens != NONE)
    return torch.where(sounding, tokens + 2 * semitones, tokens)
