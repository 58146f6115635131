"""Guided generation: harmonize a melody, regenerate a passage (docs/design.md, Guided generation).

One mechanism serves both. The transformer draws `generate.candidates` candidates after one
context, in one batch; each is decoded and scored against the constraint, and one is chosen at
random with probability proportional to exp(score), from the piece's own generator (same seed, same
music). The constraint is then made exact in what is written, and the written music is what the
context holds from then on.

- Harmonize: a candidate is one quarter, drawn after the quarters written so far (their keys and
  values run once per quarter written, and shared; docs/design.md, How a quarter is computed).
  Each is made exact first: the melody imposed (`impose_melody`: nothing sounds
  above it, every melody note keeps its pitch, onset and length) and the result encoded after the
  quarter before it. Its score adds two things: the share of the melody's cells the candidate
  already sounded less what it sounded above the melody, times
  HARMONY_SHARPNESS, so that the texture whose top voice was the tune wins; and the log-likelihood
  the transformer gives the exact quarter after the context, so that lower voices that clash with
  the imposed melody lose. It loses `generate.rules` times its faults against the four-part rules
  (`rule_penalties`: parallels, the Bass's range and leaps) where it follows the quarter before.
- Regenerate: a candidate is the whole passage, sampled after the music before it. Its score is
  the log-likelihood the transformer gives the quarters after the passage (up to
  FOLLOWING_QUARTERS), so choosing by exp(score) is sampling-importance-resampling from
  p(passage | music before, music after), less `generate.rules` times its rule faults between the
  quarters around it. Every quarter outside the passage is kept as it was read.

Both read and write the music key-normalized, as the models learned it, and move the result back
to the melody's or the file's key (or to `generate.key`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from bachsformer.compose import Composition, decode_quarters, in_key, sample_codes
from bachsformer.config import GenerateConfig
from bachsformer.errors import BachsformerError
from bachsformer.gpt import GPT
from bachsformer.keys import estimate_key, normalizing_shift, transpose_quarters
from bachsformer.melody import melody_tokens, window_melody
from bachsformer.metrics import highest_line
from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, drop_short_notes, read_midi, read_midi_tracks
from bachsformer.rules import count_rules, lines
from bachsformer.voicing import VOICE_NAMES, VOICE_RANGES, grid_steps, voice
from bachsformer.vqvae import VQVAE

HARMONY_SHARPNESS = 20.0  # exp(20 * score): a candidate sounding 10 % more of the melody is e^2 times likelier
FOLLOWING_QUARTERS = 4  # quarters after a regenerated passage that its candidates are scored on
# The four-part rules in the choice (rule_penalties), in units of the score (log-likelihood): a candidate
# with one parallel fifth more is e^-2 times as likely to be chosen, times generate.rules.
RULE_WEIGHTS = {"parallel_fifths": 2.0, "parallel_octaves": 2.0, "hidden_fifths": 0.5, "hidden_octaves": 0.5}
OUTER_WEIGHT = 2.0  # again for the parallels and hidden octaves of Soprano and Bass, the voices heard most
BASS_RANGE_WEIGHT = 0.5  # per semitone a Bass note lies outside the Bass's range
BASS_LEAP_WEIGHT = 0.2  # per semitone the Bass leaps between notes
THIN_HARMONY = 0.5  # a harmonization with harmony under less of its tune than this is warned about
CADENCE_WEIGHT = 4.0  # a candidate closing a phrase with a cadence is e^4 times likelier (docs/design.md, Endings)


class GuideError(BachsformerError):
    """A melody or passage that cannot guide generation (chords in the melody, a passage out of range)."""


def piece_roll(quarters: np.ndarray) -> np.ndarray:
    """Quarters [Q, 88, S] -> one roll [88, Q * S]."""
    return np.asarray(quarters, dtype=bool).transpose(1, 0, 2).reshape(NUM_KEYS, -1)


def piece_quarters(roll: np.ndarray, steps_per_quarter: int) -> np.ndarray:
    """One roll [88, Q * S] -> quarters [Q, 88, S] (the inverse of `piece_roll`)."""
    return np.ascontiguousarray(roll.reshape(NUM_KEYS, -1, steps_per_quarter).transpose(1, 0, 2))


def chords_warning(melody: np.ndarray, source: str) -> str:
    """GuideError when quarters [Q, 88, S] hold no note; where they hold chords, the warning that their top line
    is harmonized (one line naming the source and the first chord); else ""."""
    roll = piece_roll(melody)
    voices = roll.sum(axis=0)
    if not voices.any():
        raise GuideError(f"{source}: has no notes")
    if voices.max() <= 1:
        return ""
    step = int(np.argmax(voices > 1))
    return (
        f"{source}: the melody has chords ({int(voices[step])} notes at once in quarter"
        f" {step // melody.shape[2] + 1}); harmonizing its top line"
    )


class Melody(NamedTuple):
    """A melody read from a file: the name its track keeps (`tune_name`), its quarters, and a warning when it
    had chords (its top line is the melody)."""

    name: str
    quarters: np.ndarray  # bool [Q, 88, 32], one line of notes
    warning: str = ""


def read_melody(path: str | Path, track: str | None = None) -> Melody:
    """The melody of a MIDI file, named, as quarters [Q, 88, 32]: its highest sounding line, or one track's notes.

    track: a track's number (counted from 0 over the tracks that are not drums) or its name, matched
    exactly and else regardless of case ("soprano" finds "Soprano"); the track's quarters lie on the
    whole file's grid, so a harmonized chorale aligns with the original. A melody with chords (a piano
    piece) is its top line, with a warning. Raises MidiError or GuideError with one line naming the
    file and the problem.
    """
    if track is None:
        piece = read_midi(path)
        if piece.dropped_notes:
            raise GuideError(f"{path}: {piece.dropped_notes} notes lie outside the 88 keys (MIDI 21-108)")
        # one track of chords (a piano piece) is warned about; the highest line of several tracks is the tune
        parts = sum(track.quarters.any() for track in read_midi_tracks(path))
        warning = chords_warning(piece.quarters, str(path)) if parts == 1 else ""
        return Melody(tune_name(read_midi_tracks(path)), highest_line(piece.quarters), warning)
    tracks = read_midi_tracks(path)
    names = [t.name for t in tracks]
    named = [n for n, name in enumerate(names) if name == track] or [
        n for n, name in enumerate(names) if name.strip().casefold() == track.strip().casefold()
    ]
    if track.strip().isdigit() and int(track) < len(tracks):
        number = int(track)
    elif named:  # the first track of that name that holds notes (a file may repeat a name)
        number = next((n for n in named if tracks[n].quarters.any() or tracks[n].dropped_notes), named[0])
    else:
        listing = ", ".join(f"{number} {name!r}" for number, name in enumerate(names))
        raise GuideError(f"{path}: no track {track!r} with notes (tracks: {listing})")
    name, quarters, dropped = tracks[number]
    source = f"{path}: track {number} {name!r}"
    if dropped:
        raise GuideError(f"{source}: {dropped} notes lie outside the 88 keys (MIDI 21-108)")
    warning = chords_warning(quarters, source)
    return Melody(name.strip() or VOICE_NAMES[0], highest_line(quarters), warning)


def tune_name(tracks) -> str:
    """The name a harmonized tune's track keeps: that of the file's one track of notes when it is a single
    line, else "Soprano" (the highest line of several tracks, or the top of chords)."""
    sounding = [track for track in tracks if track.quarters.any()]
    if len(sounding) == 1 and sounding[0].name.strip() and piece_roll(sounding[0].quarters).sum(axis=0).max() <= 1:
        return sounding[0].name.strip()
    return VOICE_NAMES[0]


def harmony_under_tune(quarters: np.ndarray, melody: np.ndarray) -> float:
    """The share of the tune's sounding steps with another note sounding below it: float in [0, 1]."""
    tune, music = piece_roll(melody), piece_roll(quarters)
    sounding = tune.any(axis=0)
    harmony = (music & ~tune).any(axis=0)
    return float((harmony & sounding).sum() / max(int(sounding.sum()), 1))


def thin_harmony_warning(quarters: np.ndarray, melody: np.ndarray, source: str, remedy: str) -> str:
    """One line when harmony sounds under less than THIN_HARMONY of the tune (the tune left bare), else ""."""
    share = harmony_under_tune(quarters, melody)
    if share >= THIN_HARMONY:
        return ""
    return f"{source}: harmony sounds under only {share:.0%} of the tune, which is left mostly bare (try {remedy})"


def keep_tune(quarters: np.ndarray, written: np.ndarray, melody: np.ndarray, first: int, last: int) -> np.ndarray:
    """Quarters [Q, 88, S] with quarters first ... last (from 1) written anew, and the rest exactly as they were.

    melody: the tune inside `quarters` (a harmonization's), made the passage's exact top voice again;
    all silent: the passage as written.
    """
    music = quarters.copy()
    music[first - 1 : last] = written[first - 1 : last]
    if melody.any():
        tune = piece_roll(melody)
        steps = quarters.shape[2]
        music = piece_quarters(impose_melody(piece_roll(music), tune, melody_ceiling(tune)), steps)
        music[: first - 1], music[last:] = quarters[: first - 1], quarters[last:]
    return music


def melody_ceiling(melody_roll: np.ndarray) -> np.ndarray:
    """The highest key the harmony may reach at each step of a melody roll [88, T]: int [T].

    Where the melody sounds, its key (which only the melody holds); in a rest, the key of the
    melody note before it (before the first note, the first note's), which the harmony may hold.
    """
    sounding = melody_roll.any(axis=0)
    keys = np.where(sounding, np.argmax(melody_roll, axis=0), -1)
    last_step = np.maximum.accumulate(np.where(sounding, np.arange(len(keys)), -1))
    first_key = keys[np.argmax(sounding)] if sounding.any() else NUM_KEYS - 1
    return np.where(last_step >= 0, keys[np.maximum(last_step, 0)], first_key)


def impose_melody(roll: np.ndarray, melody_roll: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """Harmony roll [88, T] with melody [88, T] made its exact top voice (see the module doc).

    Nothing sounds above the ceiling; where the melody sounds its key is the melody's alone, and a
    harmony note of the same key is cut one step before each melody onset and at each melody offset,
    so that every melody note keeps its onset and length.
    """
    keys = np.arange(NUM_KEYS)[:, None]
    sounding = melody_roll.any(axis=0)[None, :]
    blocked = (keys > ceiling[None, :]) | ((keys == ceiling[None, :]) & sounding)
    result = (roll & ~blocked) | melody_roll
    follows_melody = np.zeros_like(melody_roll)  # [k, t]: the melody sounds key k at step t - 1
    follows_melody[:, 1:] = melody_roll[:, :-1]
    precedes_melody = np.zeros_like(melody_roll)  # [k, t]: the melody sounds key k at step t + 1
    precedes_melody[:, :-1] = melody_roll[:, 1:]
    result[(follows_melody | precedes_melody) & ~melody_roll] = False  # the steps around each melody note
    return result


def melody_scores(candidates: np.ndarray, melody: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """How well each candidate quarter [M, 88, S] already carries melody [88, S]: float [M].

    (melody cells it sounds - cells it sounds above the ceiling) / melody cells. The melody's pitch
    class an octave lower earns nothing: crediting it chose candidates that double the tune in a
    lower voice, and the doubling moves with the tune in parallel octaves (the model card measures it).
    """
    keys = np.arange(NUM_KEYS)[:, None]
    hits = (candidates & melody[None]).sum(axis=(1, 2))
    above = (candidates & (keys > ceiling[None, :])[None]).sum(axis=(1, 2))
    return (hits - above) / max(int(melody.sum()), 1)


def rule_penalties(before: np.ndarray, candidates: np.ndarray, melody: np.ndarray | None, shift: int, grid: int):
    """How far each candidate breaks the four-part rules where it follows the music before it: float [M].

    before: quarters [B, 88, S] written before; candidates: [M, P, 88, S]; melody: quarters [B + P, 88, S]
    of the tune over both (None: no melody); shift: semitones the music was moved by (the ranges are
    the voices' in the key it is written in). Each candidate is voiced after `before` (voicing.py), and
    its parallel and hidden fifths and octaves between all voices (those of Soprano and Bass again),
    its Bass notes outside the Bass's range and its Bass leaps are weighed (RULE_WEIGHTS).
    """
    low, high = VOICE_RANGES[3]
    penalties = np.zeros(len(candidates))
    for number, candidate in enumerate(candidates):
        voices = voice(np.concatenate([before, candidate]), grid, melody)
        voice_lines = lines([voices.voice_quarters(part) for part in range(4)])
        counts = count_rules(voice_lines)
        outer = count_rules(voice_lines[[0, 3]])
        bass = voices.notes[3][:, 2] - shift  # MIDI pitches in the written key
        penalty = sum(RULE_WEIGHTS[name] * counts[name] for name in RULE_WEIGHTS)
        penalty += OUTER_WEIGHT * (outer["parallel_fifths"] + outer["parallel_octaves"] + outer["hidden_octaves"])
        penalty += BASS_RANGE_WEIGHT * (np.maximum(low - bass, 0) + np.maximum(bass - high, 0)).sum()
        penalty += BASS_LEAP_WEIGHT * np.abs(np.diff(bass)).sum()
        penalties[number] = penalty
    return penalties


def encode_after(vq_vae: VQVAE, previous: np.ndarray | None, quarters: np.ndarray) -> torch.Tensor:
    """Codes [M, 16] of each of quarters [M, 88, 32], each read as following `previous` [88, 32] (if any)."""
    before = None if previous is None else torch.from_numpy(previous)
    return vq_vae.encode(torch.from_numpy(quarters), consecutive=False, previous=before)


def choose(scores: torch.Tensor, generator: torch.Generator) -> int:
    """An index drawn with probability proportional to exp(scores [M])."""
    probabilities = torch.softmax(scores.double(), dim=0)
    return int(torch.multinomial(probabilities, 1, generator=generator))


@torch.no_grad()
def harmonize(
    vq_vae: VQVAE,
    transformer: GPT,
    melody: np.ndarray,
    options: GenerateConfig,
    seed: int,
    normalize_key: bool = True,
    hear_melody: bool = True,
    progress=None,
    phrase_ends: list[int] | None = None,
    primer: np.ndarray | None = None,
    tonic: int | None = None,
) -> Composition:
    """The melody quarters [Q, 88, 32] (one line of notes) with voices below it written by the models.

    normalize_key: whether the models learned key-normalized music (else the melody stays in its key).
    A transformer with the melody condition hears the tune (each quarter's and those ahead of it),
    with classifier-free guidance options.guidance; hear_melody False draws its candidates
    without it, as an unconditioned transformer does (the ablation of `evaluate --harmonize`).
    progress: called with 1 after each quarter is written (a progress bar's update), or None.
    phrase_ends: onset steps of the notes that end the tune's phrases (its fermatas), which get a
    cadence; None: the notes followed by the next only after a half note or more (`ending_notes`).
    primer: quarters [P, 88, 32] the music starts with, in the melody's key and under its first P
    quarters: kept as they are, and harmonizing starts after them. tonic: the pitch class the
    cadences close on, in the melody as harmonized (default: its estimated key's).
    The harmony ends with the tune: the chord under its last note is held to the note's end, and
    nothing sounds after it (a rest at the tune's end is not harmonized).
    """
    melody = np.asarray(melody, dtype=bool)
    key = estimate_key(melody)
    shift = normalizing_shift(melody, key) if normalize_key else 0
    tune = transpose_quarters(melody, shift)  # [Q, 88, 32] in C major / A minor
    steps = tune.shape[2]
    if tonic is None:
        tonic = estimate_key(tune).tonic if normalize_key else key.tonic
    ends = ending_notes(tune) if phrase_ends is None else sorted(phrase_ends)
    last_onset, tune_end = last_note(tune)
    ends = [e for e in ends if e < last_onset]
    ceiling = melody_ceiling(piece_roll(tune))  # [Q * 32]
    per_quarter = vq_vae.codes_per_quarter
    context_quarters = (transformer.config.block_size + 1) // per_quarter - 1  # room for one more quarter
    generator = torch.Generator().manual_seed(seed)
    written = np.zeros_like(tune)
    codes = torch.zeros(len(tune), per_quarter, dtype=torch.long, device=transformer.first_code_probs.device)
    heard_ahead = transformer.config.melody_quarters if hear_melody else 0
    tokens = torch.from_numpy(melody_tokens(tune)) if heard_ahead else None  # [Q, slots]
    shared = None  # the context run so far
    grid = grid_steps(options.grid, steps)
    kept = 0 if primer is None else len(primer)
    if kept:
        written[:kept] = transpose_quarters(np.asarray(primer, dtype=bool), shift)
        codes[:kept] = vq_vae.encode(torch.from_numpy(written[:kept]).to(codes.device))
    for i in range(kept, (tune_end - 1) // steps + 1):
        # the last context_quarters quarters: a window that slides by a quarter once full
        first = max(0, i - context_quarters)
        context = codes[first:i].flatten()
        # the melody of the context's quarters, the candidate's and those it hears ahead
        heard = window_melody(tokens, first, i - first + heard_ahead) if heard_ahead else None
        # run once, then continued by the candidates and by their scoring; while the window grows,
        # only the quarter written last is run (a window that slid has moved every position)
        shared = transformer.shared_context(context, heard, options.guidance, earlier=shared if first == 0 else None)
        candidates = transformer.sample_after(
            shared, options.candidates, per_quarter, generator, options.temperature, options.top_k, options.top_p
        )  # [M, 16]
        # a candidate drawn more than once is decoded, imposed, encoded and scored once (U distinct)
        candidates, copies = torch.unique(candidates, dim=0, return_inverse=True)  # [U, 16], [M]
        previous = codes[i - 1] if i else None  # what a decoder with context hears before the candidates
        rolls = decode_quarters(vq_vae, candidates.flatten(), consecutive=False, previous=previous)  # [U, 88, 32]
        quarter_ceiling = ceiling[i * steps : (i + 1) * steps]
        imposed = np.stack([impose_melody(r, tune[i], quarter_ceiling) for r in rolls])  # [U, 88, 32]
        imposed_codes = encode_after(vq_vae, written[i - 1] if i else None, imposed)  # [U, 16]
        scores = torch.from_numpy(HARMONY_SHARPNESS * melody_scores(rolls, tune[i], quarter_ceiling)).float()
        # and how likely the transformer finds the quarter as it will be written
        scores += transformer.log_likelihood_after(shared, imposed_codes).cpu()
        if options.rules:  # and how well it keeps the rules of four-part writing after the quarter before
            silence = np.zeros_like(tune[:1])  # before the first quarter
            before = written[i - 1 : i] if i else silence
            tune_around = np.concatenate([tune[i - 1 : i] if i else silence, tune[i : i + 1]])
            penalties = rule_penalties(before, imposed[:, None], tune_around, shift, grid)
            scores -= options.rules * torch.from_numpy(penalties).float()
        for end in [e for e in ends if e // steps == i] + ([last_onset] if last_onset // steps == i else []):
            scores += CADENCE_WEIGHT * torch.from_numpy(
                cadences(imposed, tune[i], end % steps, tonic, end == last_onset)
            )
        chosen = int(copies[choose(scores[copies], generator)])  # each copy drawn as often as it was sampled
        written[i], codes[i] = imposed[chosen], imposed_codes[chosen]
        if progress is not None:
            progress(1)
    if options.min_note_steps > 1:
        written[kept:] = drop_short_notes(written[kept:], options.min_note_steps)
    roll = hold_last_chord(piece_roll(written), piece_roll(tune), last_onset, tune_end)
    # once more over the whole piece: the cuts around melody notes that start or end on a boundary
    music = piece_quarters(impose_melody(roll, piece_roll(tune), ceiling), steps)
    if kept:
        music[:kept] = transpose_quarters(np.asarray(primer, dtype=bool), shift)
    return in_key(transpose_quarters(music, -shift), key, options.key, melody)


def last_note(tune: np.ndarray) -> tuple[int, int]:
    """(onset step, end step) of the last note of a melody, quarters [Q, 88, S]."""
    roll = piece_roll(tune)
    sounding = np.flatnonzero(roll.any(axis=0))
    end = int(sounding[-1]) + 1
    key = int(np.argmax(roll[:, end - 1]))
    onset = end - 1
    while onset > 0 and roll[key, onset - 1]:
        onset -= 1
    return onset, end


def ending_notes(tune: np.ndarray) -> list[int]:
    """Onset steps of the notes that end a phrase in a melody without marks, quarters [Q, 88, S]: each
    note followed by the next only after a half note or more (a long note, or a note and a rest)."""
    roll = piece_roll(tune)
    sounding = roll.any(axis=0)
    before = np.zeros_like(roll)
    before[:, 1:] = roll[:, :-1]
    onsets = np.flatnonzero((roll & ~before).any(axis=0) & sounding)
    half = 2 * tune.shape[2]
    return [int(a) for a, b in zip(onsets, onsets[1:]) if b - a >= half]


def cadences(candidates: np.ndarray, melody: np.ndarray, step: int, tonic: int, final: bool) -> np.ndarray:
    """1.0 for each candidate quarter [M, 88, S] whose chord at `step` closes a phrase, else 0: float [M].

    The chord's bass (the lowest key sounding at the step) is the tonic, or at a phrase inside the
    tune also the dominant, and the melody's note there belongs to the triad on that bass. The
    tune's last note asks for the tonic alone (an authentic close); inside it a half close counts.
    """
    keys = np.flatnonzero(melody[:, step])
    if not len(keys):
        return np.zeros(len(candidates))
    melody_class = (int(keys[0]) + LOWEST_PITCH) % 12
    roots = [tonic] if final else [tonic, (tonic + 7) % 12]
    scores = np.zeros(len(candidates))
    for m, candidate in enumerate(candidates):
        sounding = np.flatnonzero(candidate[:, step])
        if not len(sounding):
            continue
        bass = (int(sounding[0]) + LOWEST_PITCH) % 12
        triad = {bass, (bass + 3) % 12, (bass + 4) % 12, (bass + 7) % 12}  # either third: minor's V is major
        scores[m] = float(bass in roots and melody_class in triad)
    return scores


def hold_last_chord(roll: np.ndarray, melody_roll: np.ndarray, onset: int, end: int) -> np.ndarray:
    """Harmony roll [88, T] ending with the melody [88, T]: the chord under the last melody note (the
    keys sounding at its onset, or at the first step after it where the harmony sounds) held to its
    end, no other note struck under it, and nothing sounding from `end` on."""
    roll = roll.copy()
    harmony = roll[:, onset:end] & ~melody_roll[:, onset:end]  # [88, note steps]
    sounding = np.flatnonzero(harmony.any(axis=0))
    if len(sounding):
        roll[:, onset:end] = harmony[:, sounding[0]][:, None]
    roll[:, end:] = False
    return roll


def parse_passage(text: str, num_quarters: int, source: str) -> tuple[int, int]:
    """'A-B' (1-based, inclusive) -> (A, B), or GuideError naming the file and its length."""
    first, dash, last = text.partition("-")
    if not dash or not first.strip().isdigit() or not last.strip().isdigit():
        raise GuideError(f"--regenerate {text}: expected quarters A-B, such as 5-8")
    first, last = int(first), int(last)
    if not 1 <= first <= last <= num_quarters:
        raise GuideError(
            f"--regenerate {text}: {source} has quarters 1-{num_quarters}; give 1 <= A <= B <= {num_quarters}"
        )
    return first, last


@torch.no_grad()
def regenerate(
    vq_vae: VQVAE,
    transformer: GPT,
    quarters: np.ndarray,
    first: int,
    last: int,
    options: GenerateConfig,
    seed: int,
    normalize_key: bool = True,
) -> Composition:
    """Quarters [Q, 88, 32] with quarters first ... last (1-based, inclusive) written anew to fit both sides.

    normalize_key: whether the models learned key-normalized music (else the piece stays in its key).
    """
    quarters = np.asarray(quarters, dtype=bool)
    key = estimate_key(quarters)
    shift = normalizing_shift(quarters, key) if normalize_key else 0
    per_quarter = vq_vae.codes_per_quarter
    device = transformer.first_code_probs.device
    codes = vq_vae.encode(torch.from_numpy(transpose_quarters(quarters, shift)).to(device))  # [Q, 16]
    window_quarters = (transformer.config.block_size + 1) // per_quarter
    before = codes[: first - 1].flatten()
    # scored after at least one quarter of the passage, in one window
    after = codes[last : last + min(FOLLOWING_QUARTERS, window_quarters - 1)].flatten()
    generator = torch.Generator().manual_seed(seed)
    seeds = torch.randint(2**62, (options.candidates,), generator=generator).tolist()
    prompt = before.expand(options.candidates, -1) if len(before) else None
    passages = sample_codes(vq_vae, transformer, prompt, last - first + 1, seeds, options)  # [M, passage codes]
    scores = torch.zeros(options.candidates)
    if len(after):
        # the window that ends with the following quarters, starting on a quarter boundary
        history_length = window_quarters * per_quarter - len(after)
        history = torch.cat([before.expand(options.candidates, -1), passages], dim=1)[:, -history_length:]
        sequences = torch.cat([history, after.expand(options.candidates, -1)], dim=1)
        scores = transformer.log_likelihood(sequences, history.shape[1]).cpu()
    previous = codes[first - 2] if first > 1 else None
    decoded = np.stack(  # [M, P, 88, 32]
        [decode_quarters(vq_vae, row, min_note_steps=options.min_note_steps, previous=previous) for row in passages]
    )
    if options.rules:  # the four-part rules where each candidate meets the music around it
        normalized = transpose_quarters(quarters[max(first - 2, 0) : last + 1], shift)
        before, after = normalized[: min(first - 1, 1)], normalized[len(normalized) - (last < len(quarters)) :]
        around = np.concatenate([decoded, np.broadcast_to(after, (len(decoded), *after.shape))], axis=1)
        grid = grid_steps(options.grid, quarters.shape[2])
        scores = scores - options.rules * torch.from_numpy(rule_penalties(before, around, None, shift, grid)).float()
    passage = decoded[choose(scores, generator)]
    music = np.concatenate([quarters[: first - 1], transpose_quarters(passage, -shift), quarters[last:]])
    return in_key(music, key, options.key)
