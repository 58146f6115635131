"""Guided generation: harmonize a melody, regenerate a passage (docs/design.md, Guided generation).

One mechanism serves both. The transformer draws `generate.candidates` candidates after one
context, in one batch; each is decoded and scored against the constraint, and one is chosen at
random with probability proportional to exp(score), from the piece's own generator (same seed, same
music). The constraint is then made exact in what is written, and the written music is what the
context holds from then on.

- Harmonize: a candidate is one quarter, drawn after the quarters written so far (their keys and
  values run once per quarter written, and shared; docs/design.md, How a quarter is computed),
  and decoded into four voices. Each is made exact first (`impose_melody`: its Soprano becomes the
  melody's line, and a lower voice above the melody moves down by octaves) and encoded again. All
  candidates are judged at once on their lines. The score adds the share of the melody's steps the
  candidate's own Soprano already sang, less the steps a lower voice sounded above it, times
  HARMONY_SHARPNESS, so that the candidate whose Soprano was the tune wins; and the
  log-likelihood the transformer gives the exact quarter after the context, so that lower voices
  that clash with the imposed melody lose. It loses `generate.rules` times its faults against the
  four-part rules (`rule_penalties`: parallels, the Bass's range and leaps) where it follows the
  quarter before. Where the tune's cadences ask for a chord (`cadence_targets`: the dominant, then
  the root-position tonic at the end), a candidate with it gains, and more candidates are drawn there.
- Regenerate: a candidate is the whole passage, sampled after the music before it. Its score is
  the log-likelihood the transformer gives the quarters after the passage (up to
  FOLLOWING_QUARTERS), so choosing by exp(score) is sampling-importance-resampling from
  p(passage | music before, music after), less `generate.rules` times its rule faults between the
  quarters around it. Every quarter outside the passage keeps its voices as they were read.

Both read and write the music key-normalized, as the models learned it, and move the result back
to the melody's or the file's key (or to `generate.key`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from bachsformer.compose import Composition, as_voices, decode_voices, in_key, sample_codes
from bachsformer.config import GenerateConfig
from bachsformer.endings import DOMINANT_CHORD, DOMINANT_TONES, TONIC_TRIAD
from bachsformer.errors import BachsformerError
from bachsformer.gpt import GPT
from bachsformer.keys import MODES, Key, estimate_key, normalizing_shift, transpose_quarters, tune_key
from bachsformer.melody import melody_tokens, window_melody
from bachsformer.metrics import highest_line
from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, STEPS_PER_QUARTER, quarters_to_notes, read_midi, read_midi_tracks
from bachsformer.rules import EIGHTHS_PER_QUARTER, count_rules_batch
from bachsformer.voices import SILENCE, VOICE_NAMES, Voices, concatenate, from_lines, note_starts, restore_repeats
from bachsformer.voicing import VOICE_RANGES, grid_steps
from bachsformer.vqvae import VQVAE

HARMONY_SHARPNESS = 20.0  # exp(20 * score): a candidate sounding 10 % more of the melody is e^2 times likelier
FOLLOWING_QUARTERS = 4  # quarters after a regenerated passage that its candidates are scored on
# The four-part rules in the choice (rule_penalties), in units of the score (log-likelihood): a candidate
# with one parallel fifth more is e^-2 times as likely to be chosen, times generate.rules.
RULE_WEIGHTS = {"parallel_fifths": 2.0, "parallel_octaves": 2.0, "hidden_fifths": 0.5, "hidden_octaves": 0.5}
OUTER_WEIGHT = 2.0  # again for the parallels and hidden octaves of Soprano and Bass, the voices heard most
BASS_RANGE_WEIGHT = 0.5  # per semitone a Bass note lies outside the Bass's range
BASS_LEAP_WEIGHT = 0.2  # per semitone the Bass leaps between notes beyond BASS_LEAP_FREE
BASS_LEAP_FREE = 5  # a Bass moving up to a fourth is not charged: Bach's basses move so at every cadence
THIN_HARMONY = 0.5  # a harmonization with harmony under less of its tune than this is warned about
# Cadences in the choice (docs/design.md, Endings and cadences), in units of the score: a candidate with the
# chord a cadence asks for is e^weight times likelier to be chosen; the runs that chose them are in the model
# card (models/README.md, Cadences in the harmony).
CADENCE_WEIGHT = 4.0  # a phrase end inside the tune: the tonic or the dominant (authentic or half close)
FINAL_WEIGHT = 32.0  # the tune's last note: the tonic (the dominant where the tune ends on it)
APPROACH_WEIGHT = 8.0  # the dominant before an asked tonic: V-I
CADENCE_CANDIDATES = 4  # times generate.candidates drawn in a quarter where a cadence asks for a chord
FINAL_BEAM = 4  # ways through the final cadence's quarters written before one is kept


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


def keep_tune(voices: Voices, melody: np.ndarray, first: int, last: int) -> Voices:
    """Voices with quarters first ... last (from 1) written anew and the melody quarters [Q, 88, S] (a
    harmonization's tune) made that passage's exact Soprano again (`with_tune`); the rest as it is."""
    parts = [
        voices.sliced(0, first - 1),
        with_tune(voices.sliced(first - 1, last), melody[first - 1 : last]),
        voices.sliced(last, voices.num_quarters),
    ]
    return concatenate([part for part in parts if part.num_quarters])


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


def melody_line(tune: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A tune's quarters [Q, 88, S] (one line of notes) as the lines of one voice: keys [Q, S], onsets [Q, S]."""
    notes = restore_repeats(quarters_to_notes(tune))
    keys, onsets = Voices((notes,), len(tune), tune.shape[2]).lines()
    return keys[:, 0], onsets[:, 0]


def below_ceiling(keys: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """Lower voices' keys [..., S] moved down by octaves until none lies above ceiling [S] (SILENCE stays;
    a key that would fall off the keyboard rests)."""
    above = (keys != SILENCE) & (keys > ceiling)
    octaves = -(-(keys - ceiling) // 12)
    lowered = np.where(above, keys - 12 * octaves, keys)
    return np.where(lowered < 0, SILENCE, lowered)


def impose_melody(
    keys: np.ndarray,
    onsets: np.ndarray,
    melody_keys: np.ndarray,
    melody_onsets: np.ndarray,
    ceiling: np.ndarray,
    key_before,
):
    """Candidates' lines keys, onsets [M, V, S] with the melody (keys, onsets [S]) as their Soprano, exactly,
    and nothing above it: a lower voice above the ceiling [S] moves down by octaves. key_before [V]: each
    voice's key at the step before (SILENCE: none); onsets are set where notes start. Returns (keys, onsets)."""
    keys, onsets = keys.copy(), onsets.copy()
    keys[:, 0], onsets[:, 0] = melody_keys, melody_onsets
    keys[:, 1:] = below_ceiling(keys[:, 1:], ceiling)
    before = np.broadcast_to(np.asarray(key_before), keys.shape[:2])
    onsets[:, 1:] = note_starts(keys[:, 1:], onsets[:, 1:], before[:, 1:])
    return keys, onsets


def with_tune(voices: Voices, melody: np.ndarray) -> Voices:
    """Voices whose Soprano is exactly the melody quarters [Q, 88, 32] (one line) and nothing above it: the
    lower voices' notes above the melody (or, in its rests, the note before) move down by octaves."""
    keys, onsets = voices.lines()  # [Q, V, S]
    melody_keys, melody_onsets = melody_line(melody)
    ceiling = melody_ceiling(piece_roll(melody)).reshape(melody_keys.shape)  # [Q, S]
    keys[:, 0], onsets[:, 0] = melody_keys, melody_onsets
    keys[:, 1:] = below_ceiling(keys[:, 1:], ceiling[:, None, :])
    lower_keys = keys[:, 1:].transpose(1, 0, 2).reshape(voices.num_voices - 1, -1)  # [V - 1, Q * S]
    lower_onsets = onsets[:, 1:].transpose(1, 0, 2).reshape(voices.num_voices - 1, -1)
    starts = note_starts(lower_keys, lower_onsets).reshape(voices.num_voices - 1, len(keys), -1)
    onsets[:, 1:] = starts.transpose(1, 0, 2)
    return from_lines(keys, onsets)


def melody_scores(keys: np.ndarray, melody_keys: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """How well each candidate's lines keys [M, V, S] already carry a melody's keys [S]: float [M].

    (melody steps its Soprano sounds right - steps where a lower voice sounds above the ceiling) / melody
    steps. A lower voice doubling the tune earns nothing: the doubling moves with it in parallel octaves.
    """
    sounding = melody_keys != SILENCE
    hits = ((keys[:, 0] == melody_keys) & sounding).sum(axis=1)
    lower = keys[:, 1:]
    above = ((lower != SILENCE) & (lower > ceiling)).any(axis=1).sum(axis=1)
    return (hits - above) / max(int(sounding.sum()), 1)


def eighth_pitches(keys: np.ndarray) -> np.ndarray:
    """Lines keys [..., V, T] (T a multiple of the steps of an eighth) as MIDI pitches at every eighth, -1 silent."""
    sampled = keys[..., :: STEPS_PER_QUARTER // EIGHTHS_PER_QUARTER]
    return np.where(sampled == SILENCE, -1, sampled + LOWEST_PITCH)


def rule_penalties(keys: np.ndarray, shift: int) -> np.ndarray:
    """How far each candidate breaks the four-part rules: lines keys [M, 4, T] of the music around each
    candidate, in the key it is written in moved by `shift` semitones: float [M].

    Its parallel and hidden fifths and octaves between all voices (those of Soprano and Bass again),
    its Bass notes outside the Bass's range and its Bass leaps are weighed (RULE_WEIGHTS). A hidden
    fifth or octave that the upper voice reaches by step is no fault, as in the textbook rule: every
    V-I with the Soprano stepping to the tonic over a Bass rising a fourth has one.
    """
    pitches = eighth_pitches(keys)  # [M, 4, E]
    counts = count_rules_batch(pitches, hidden_by_step=False)
    outer = count_rules_batch(pitches[:, [0, 3]], hidden_by_step=False)
    penalty = sum(RULE_WEIGHTS[name] * counts[name] for name in RULE_WEIGHTS)
    penalty = penalty + OUTER_WEIGHT * (outer["parallel_fifths"] + outer["parallel_octaves"] + outer["hidden_octaves"])
    low, high = VOICE_RANGES[3]
    bass = np.where(pitches[:, 3] >= 0, pitches[:, 3] - shift, -1)  # MIDI pitches in the written key
    sounding = bass >= 0
    penalty = penalty + BASS_RANGE_WEIGHT * np.where(
        sounding, np.maximum(low - bass, 0) + np.maximum(bass - high, 0), 0
    ).sum(axis=1)
    moves = sounding[:, 1:] & sounding[:, :-1]
    leaps = np.maximum(np.abs(np.diff(bass, axis=1)) - BASS_LEAP_FREE, 0)
    penalty = penalty + BASS_LEAP_WEIGHT * np.where(moves, leaps, 0).sum(axis=1)
    return penalty.astype(np.float64)


def choose(scores: torch.Tensor, generator: torch.Generator) -> int:
    """An index drawn with probability proportional to exp(scores [M])."""
    probabilities = torch.softmax(scores.double(), dim=0)
    return int(torch.multinomial(probabilities, 1, generator=generator))


@torch.inference_mode()
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
    primer: Voices | None = None,
    closing_key: Key | None = None,
) -> Composition:
    """The melody quarters [Q, 88, 32] (one line of notes) as the Soprano of four voices written by the models.

    normalize_key: whether the models learned key-normalized music (else the melody stays in its key).
    A transformer with the melody condition hears the tune (each quarter's and those ahead of it),
    with classifier-free guidance options.guidance; hear_melody False draws its candidates
    without it, as an unconditioned transformer does (the ablation of `evaluate --harmonize`).
    progress: called with 1 after each quarter is written (a progress bar's update), or None.
    phrase_ends: onset steps of the notes that end the tune's phrases (its fermatas), which get a
    cadence; None: the notes followed by the next only after a half note or more (`ending_notes`).
    primer: the voices the music starts with, in the melody's key and under its first P quarters:
    kept as they are, and harmonizing starts after them. closing_key: the key the melody closes in, as
    given (default: the one `keys.tune_key` hears in it): the melody is normalized by it, the cadences
    close on its tonic, and a transformer that `hears_mode` hears its mode. The cadences are
    asked for in the choice (`cadence_targets`, with more candidates where they are), and the final
    close is searched over its last quarters together (`final_cadence_quarters`, FINAL_BEAM ways).
    The harmony ends with the tune: the chord under its last note is held to `final_chord_end` (the
    first beat at or after the note's end and a quarter or more after its onset, so that a tune ending on
    a short note or before a rest still closes on a held chord; the piece gains a quarter where its file
    has no room for it), and nothing sounds after it (quarters of rest after the tune stay silent); the
    transformer hears the last note held as long (`held_last_note`).
    """
    melody = np.asarray(melody, dtype=bool)
    last_onset, tune_end = last_note(melody)
    chord_end = final_chord_end(last_onset, tune_end, melody.shape[2])
    melody = with_room_for(melody, chord_end)  # [Q, 88, 32], Q quarters through the final chord
    key = closing_key or tune_key(melody)
    shift = normalizing_shift(melody, key) if normalize_key else 0
    tune = transpose_quarters(melody, shift)  # [Q, 88, 32] in C major / A minor
    steps = tune.shape[2]
    tonic, mode = (key.tonic + shift) % 12, MODES.index(key.mode)  # the close's, in the tune as harmonized
    ends = ending_notes(tune) if phrase_ends is None else sorted(phrase_ends)
    ends = [e for e in ends if e < last_onset]
    ceiling = melody_ceiling(piece_roll(tune)).reshape(len(tune), steps)  # [Q, 32]
    melody_keys, melody_onsets = melody_line(tune)  # [Q, 32] each
    targets = cadence_targets(melody_keys.reshape(-1), melody_onsets.reshape(-1), ends, last_onset, tonic)
    drawn = candidates_per_quarter(options.candidates, len(tune), steps, targets)  # per quarter
    per_quarter = vq_vae.codes_per_quarter
    num_voices = vq_vae.num_voices
    context_quarters = (transformer.config.block_size + 1) // per_quarter - 1  # room for one more quarter
    generator = torch.Generator().manual_seed(seed)
    written_keys = np.full((len(tune), num_voices, steps), SILENCE, dtype=np.int64)  # [Q, V, 32]
    written_onsets = np.zeros((len(tune), num_voices, steps), dtype=bool)
    device = transformer.first_code_probs.device
    codes = torch.zeros(len(tune), per_quarter, dtype=torch.long, device=device)
    heard_ahead = transformer.config.melody_quarters if hear_melody else 0
    tokens = None  # [Q, slots]: what the transformer hears, the tune with its last note held as a chorale's is
    if heard_ahead:
        tokens = torch.from_numpy(melody_tokens(held_last_note(tune, last_onset, chord_end)))
    shared = None  # the context run so far
    kept = 0 if primer is None else primer.num_quarters
    if kept:
        written_keys[:kept], written_onsets[:kept] = primer.transposed(shift).lines()
        codes[:kept] = vq_vae.encode(torch.from_numpy(written_keys[:kept]), torch.from_numpy(written_onsets[:kept]))

    def write_quarter(i: int, shared):
        """Draw, judge and choose quarter i after those written; write it. Returns the shared context run
        for it (continued while the window grows) and the chosen candidate's score."""
        # the last context_quarters quarters: a window that slides by a quarter once full
        first = max(0, i - context_quarters)
        context = codes[first:i].flatten()
        # the melody of the context's quarters, the candidate's and those it hears ahead
        heard = window_melody(tokens, first, i - first + heard_ahead) if heard_ahead else None
        # run once, then continued by the candidates and by their scoring; while the window grows,
        # only the quarter written last is run (a window that slid has moved every position)
        shared = transformer.shared_context(
            context, heard, options.guidance, earlier=shared if first == 0 else None, mode=mode if heard_ahead else None
        )
        candidates = transformer.sample_after(
            shared, drawn[i], per_quarter, generator, options.temperature, options.top_k, options.top_p
        )  # [M, 16]
        # a candidate drawn more than once is decoded, imposed, encoded and scored once (U distinct)
        candidates, copies = torch.unique(candidates, dim=0, return_inverse=True)  # [U, 16], [M]
        previous = codes[i - 1] if i else None  # what a decoder with context hears before the candidates
        keys, onsets = (part.cpu().numpy() for part in vq_vae.decode(candidates, consecutive=False, previous=previous))
        key_before = written_keys[i - 1, :, -1] if i else np.full(num_voices, SILENCE)
        imposed_keys, imposed_onsets = impose_melody(
            keys, onsets, melody_keys[i], melody_onsets[i], ceiling[i], key_before
        )  # [U, V, 32] each
        imposed_codes = vq_vae.encode(torch.from_numpy(imposed_keys), torch.from_numpy(imposed_onsets))  # [U, 16]
        scores = torch.from_numpy(HARMONY_SHARPNESS * melody_scores(keys, melody_keys[i], ceiling[i])).float()
        # and how likely the transformer finds the quarter as it will be written
        scores += transformer.log_likelihood_after(shared, imposed_codes).cpu()
        if options.rules:  # and how well it keeps the rules of four-part writing after the quarter before
            before = written_keys[i - 1] if i else np.full((num_voices, steps), SILENCE)
            around = np.concatenate([np.broadcast_to(before, imposed_keys.shape), imposed_keys], axis=2)
            scores -= options.rules * torch.from_numpy(rule_penalties(around, shift)).float()
        scores += torch.from_numpy(cadence_scores(imposed_keys, i * steps, targets, tonic)).float()
        chosen = int(copies[choose(scores[copies], generator)])  # each copy drawn as often as it was sampled
        written_keys[i], written_onsets[i], codes[i] = (
            imposed_keys[chosen],
            imposed_onsets[chosen],
            imposed_codes[chosen],
        )
        return shared, float(scores[chosen])

    # The close is searched over its last quarters together (`final_cadence_quarters`): the quarter
    # before the dominant decides what a dominant there costs, so FINAL_BEAM ways through them are
    # written, each choosing quarter by quarter as elsewhere, and one is kept by exp(its scores' sum).
    close = final_close_step(melody_keys.reshape(-1), melody_onsets.reshape(-1), last_onset)
    end = (tune_end - 1) // steps + 1  # the quarters harmonized: through the one the tune's last note ends in
    search = final_cadence_quarters(close, last_onset, steps, kept)
    if not search:  # a primer holds the close: nothing left to search
        search = range(end, end)
    for i in range(kept, search.start):
        shared, _ = write_quarter(i, shared)
        if progress is not None:
            progress(1)
    span = slice(search.start, search.stop)
    ways = []  # each way through the search: the sum of its chosen scores, and the quarters it wrote
    for way in range(FINAL_BEAM if search else 0):
        total = 0.0
        shared = None  # each way runs its own context (a growing window's cache is not shared between them)
        for i in search:
            shared, score = write_quarter(i, shared)
            total += score
            if progress is not None and way == FINAL_BEAM - 1:  # the search's quarters count as the last way goes
                progress(1)
        ways.append((total, codes[span].clone(), written_keys[span].copy(), written_onsets[span].copy()))
    if ways:
        _, codes[span], written_keys[span], written_onsets[span] = ways[
            choose(torch.tensor([way[0] for way in ways]), generator)
        ]
        shared = None
    for i in range(search.stop, end):
        shared, _ = write_quarter(i, shared)
        if progress is not None:
            progress(1)
    voices = from_lines(written_keys, written_onsets)
    lower = Voices(voices.notes[1:], voices.num_quarters, steps)
    if options.min_note_steps > 1:
        lower = lower.without_short_notes(options.min_note_steps)
    lower = hold_last_chord(lower, last_onset, chord_end)
    lower = above_the_keyboard(lower, shift)
    # the melody exact once more: a fragment merged into the note before it may have carried that note above the tune
    voices = with_tune(Voices((voices.notes[0], *lower.notes), voices.num_quarters, steps), tune)
    if kept:
        voices = concatenate([primer.transposed(shift), voices.sliced(kept, voices.num_quarters)])
    return in_key(voices.transposed(-shift), key, options.key, melody)


def final_chord_end(last_onset: int, tune_end: int, steps: int) -> int:
    """The step the final chord sounds to under a tune whose last note sounds in steps [last_onset, tune_end):
    the first beat (quarters of `steps`) at or after the note's end and a quarter or more after its onset. A
    chorale's last note is held; a tune that ends on an eighth, or before a rest, still gets a held chord."""
    return -(-max(tune_end, last_onset + steps) // steps) * steps


def with_room_for(tune: np.ndarray, end: int) -> np.ndarray:
    """Quarters [Q, 88, S] of a tune followed by silent quarters until `end` steps fit ([Q', 88, S], Q' >= Q)."""
    missing = -(-end // tune.shape[2]) - len(tune)
    return np.concatenate([tune, np.zeros((missing, *tune.shape[1:]), dtype=tune.dtype)]) if missing > 0 else tune


def held_last_note(tune: np.ndarray, last_onset: int, until: int) -> np.ndarray:
    """The tune quarters [Q, 88, S] with its last note (onset step `last_onset`) sounding until step `until`:
    what the transformer hears of a tune that ends on a short note or before a rest, held as long as the
    final chord under it, as a chorale's last note is held."""
    roll = piece_roll(tune).copy()  # [88, Q * S]
    key = np.flatnonzero(roll[:, last_onset])[-1]
    roll[key, last_onset:until] = True
    return piece_quarters(roll, tune.shape[2])


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


def chord_at(keys: np.ndarray, step: int, tonic: int) -> tuple[np.ndarray, np.ndarray]:
    """The chord of candidates' lines keys [M, V, S] (Soprano to Bass) at `step`, in degrees above the tonic
    (0-11): the Bass's degree, int [M] (-1 where the Bass is silent), and the degrees any voice sounds, bool [M, 12]."""
    chord = keys[:, :, step]  # [M, V]
    sounding = chord != SILENCE
    degrees = (chord + LOWEST_PITCH - tonic) % 12
    present = np.zeros((len(keys), 12), dtype=bool)
    candidate, _ = np.nonzero(sounding)
    present[candidate, degrees[sounding]] = True
    return np.where(sounding[:, -1], degrees[:, -1], -1), present


def within(present: np.ndarray, degrees) -> np.ndarray:
    """Whether each chord, bool [M, 12], sounds only the given degrees (and at least one of them): bool [M]."""
    outside = np.ones(12, dtype=bool)
    outside[list(degrees)] = False
    return present.any(axis=1) & ~(present & outside).any(axis=1)


def tonic_chord(keys: np.ndarray, step: int, tonic: int) -> np.ndarray:
    """Whether each candidate's chord at `step` (lines keys [M, V, S]) is the tonic triad in root position: the
    Bass on the tonic, nothing but the triad's degrees above it (either third: minor's Picardy third). bool [M]."""
    bass, present = chord_at(keys, step, tonic)
    return (bass == 0) & within(present, TONIC_TRIAD)


def dominant_chord(keys: np.ndarray, step: int, tonic: int) -> np.ndarray:
    """Whether each candidate's chord at `step` (lines keys [M, V, S]) is the dominant (V or V7) in root
    position: the Bass on the fifth degree, its third or fifth above, nothing outside V7. bool [M]."""
    bass, present = chord_at(keys, step, tonic)
    return (bass == 7) & within(present, DOMINANT_CHORD) & present[:, sorted(DOMINANT_TONES)].any(axis=1)


def on_the_dominant(keys: np.ndarray, step: int, tonic: int) -> np.ndarray:
    """Whether each candidate's chord at `step` (lines keys [M, V, S]) stands on the dominant: the Bass on the
    fifth degree, the dominant's third or fifth above it; a cadential 6/4 or a suspension over it counts, as
    the chord that moves to the tonic (`endings.cadence` reads it so). bool [M]."""
    bass, present = chord_at(keys, step, tonic)
    return (bass == 7) & present[:, sorted(DOMINANT_TONES)].any(axis=1)


class CadenceTarget(NamedTuple):
    """A chord a cadence asks for: at `step` of the tune, any of `chords` (each a test of candidates' chords, such
    as `tonic_chord`), worth `weight`."""

    step: int
    chords: tuple[Callable[[np.ndarray, int, int], np.ndarray], ...]
    weight: float


def cadence_targets(
    melody_keys: np.ndarray, melody_onsets: np.ndarray, ends: list[int], last_onset: int, tonic: int
) -> list[CadenceTarget]:
    """The chords the tune's cadences ask for, known from the tune before a note is written (docs/design.md,
    Endings and cadences). melody_keys, melody_onsets: the tune's keys, int [T] (SILENCE in rests), and where
    its notes start, bool [T]; ends: the onset steps of the phrase ends before its last note, whose onset is
    last_onset. A last note struck again on the note before it (its key sounding up to it) closes where
    the first of them starts: the tonic and the dominant before it are asked there, the tonic again at
    the last note, and the phrase ends between them are that close's.

    At a phrase end's onset: the tonic or the dominant (an authentic or a half close), CADENCE_WEIGHT. At the
    last note: the tonic where the melody's note belongs to the tonic triad, else the dominant where it
    belongs to that (a tune ending on the dominant: a half close), FINAL_WEIGHT. Before a tonic that the
    melody asks for (its note in the tonic triad and not in the dominant's, or at the last note in the
    tonic triad): a chord on the dominant at the step before the onset, where the chord sounds that moves
    to it, APPROACH_WEIGHT: V-I, an authentic close.
    """

    def degree(step: int) -> int:
        return -1 if melody_keys[step] == SILENCE else (int(melody_keys[step]) + LOWEST_PITCH - tonic) % 12

    close = final_close_step(melody_keys, melody_onsets, last_onset)
    targets = []
    for end in [e for e in ends if e < close]:
        targets.append(CadenceTarget(end, (tonic_chord, dominant_chord), CADENCE_WEIGHT))
        if end > 0 and degree(end) in TONIC_TRIAD - DOMINANT_CHORD:
            targets.append(CadenceTarget(end - 1, (on_the_dominant,), APPROACH_WEIGHT))
    if degree(last_onset) in TONIC_TRIAD:
        targets += [CadenceTarget(step, (tonic_chord,), FINAL_WEIGHT) for step in sorted({close, last_onset})]
        if close > 0:
            targets.append(CadenceTarget(close - 1, (on_the_dominant,), APPROACH_WEIGHT))
    elif degree(last_onset) in DOMINANT_TONES:
        targets.append(CadenceTarget(last_onset, (dominant_chord,), FINAL_WEIGHT))
    return targets


def cadence_scores(keys: np.ndarray, first_step: int, targets: list[CadenceTarget], tonic: int) -> np.ndarray:
    """What the cadences add to the scores of one quarter's candidates, lines keys [M, V, S] starting at step
    `first_step` of the tune: each target in the quarter adds its weight where the candidate's chord at its
    step is one it asks for. float [M]."""
    steps = keys.shape[2]
    scores = np.zeros(len(keys))
    for target in targets:
        if first_step <= target.step < first_step + steps:
            step = target.step - first_step
            scores += target.weight * np.any([chord(keys, step, tonic) for chord in target.chords], axis=0)
    return scores


def candidates_per_quarter(candidates: int, num_quarters: int, steps: int, targets: list[CadenceTarget]) -> list[int]:
    """How many candidates to draw for each of the tune's quarters: CADENCE_CANDIDATES times `candidates` in the
    quarters where a cadence asks for a chord (a small search there), else `candidates`."""
    asked = {target.step // steps for target in targets}
    return [candidates * CADENCE_CANDIDATES if quarter in asked else candidates for quarter in range(num_quarters)]


def final_close_step(melody_keys: np.ndarray, melody_onsets: np.ndarray, last_onset: int) -> int:
    """Where the final close arrives in a tune's keys and onsets [T]: the onset of its last note, or of the first
    of its repeats where the last note is struck again on the note before it."""
    close = last_onset
    while close > 0 and melody_keys[close - 1] == melody_keys[last_onset]:
        close = int(np.flatnonzero(melody_onsets[:close])[-1])
    return close


def final_cadence_quarters(close: int, last_onset: int, steps: int, first_free: int) -> range:
    """The quarters searched together for the final cadence arriving at step `close`: from the one before the
    chord that moves to it (so the chord before the dominant too) through the quarter of the last note's
    onset `last_onset`, not before `first_free` (a primer's quarters are kept)."""
    before_close = max(close - 1, 0) // steps  # the quarter holding the chord that moves to the close
    return range(max(first_free, before_close - 1), last_onset // steps + 1)


def hold_last_chord(lower: Voices, onset: int, end: int) -> Voices:
    """Lower voices ending with the melody's last note, sounding in steps [onset, end): each voice's key at the
    note's onset (or at the first step after it where any lower voice sounds) held to its end as one note (a
    note of that key sounding into the onset goes on, a tie), and nothing sounding from `end` on."""
    keys = np.full((lower.num_voices, lower.num_quarters * lower.steps_per_quarter), SILENCE)
    for voice, notes in enumerate(lower.notes):
        for start, stop, pitch in notes.tolist():
            keys[voice, start:stop] = pitch - LOWEST_PITCH
    sounding = np.flatnonzero((keys[:, onset:end] != SILENCE).any(axis=0))
    held = keys[:, onset + sounding[0]] if len(sounding) else np.full(lower.num_voices, SILENCE)
    parts = []
    for voice, notes in enumerate(lower.notes):
        earlier = notes[notes[:, 0] < onset]
        kept = earlier.copy()
        kept[:, 1] = np.minimum(kept[:, 1], onset)
        if held[voice] != SILENCE:
            pitch = held[voice] + LOWEST_PITCH
            tied = len(earlier) and earlier[-1, 1] > onset and earlier[-1, 2] == pitch
            start = int(earlier[-1, 0]) if tied else onset
            kept = np.concatenate([kept[:-1] if tied else kept, [[start, end, pitch]]])
        parts.append(kept.reshape(-1, 3))
    return Voices(tuple(parts), lower.num_quarters, lower.steps_per_quarter)


def above_the_keyboard(lower: Voices, shift: int) -> Voices:
    """Lower voices written in a key moved up by `shift` semitones without the notes that moving them back would
    put below the keyboard's lowest key (they rest, as `below_ceiling`'s do)."""
    notes = tuple(part[part[:, 2] - shift >= LOWEST_PITCH] for part in lower.notes)
    return Voices(notes, lower.num_quarters, lower.steps_per_quarter)


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


@torch.inference_mode()
def regenerate(
    vq_vae: VQVAE,
    transformer: GPT,
    music: np.ndarray | Voices,
    first: int,
    last: int,
    options: GenerateConfig,
    seed: int,
    normalize_key: bool = True,
    progress=None,
) -> Composition:
    """The music's voices (or quarters [Q, 88, 32], split by the voicing rule) with quarters first ... last
    (1-based, inclusive) written anew to fit both sides.

    normalize_key: whether the models learned key-normalized music (else the piece stays in its key).
    progress: called with 1 after each quarter of the passage is sampled (all candidates at once), or None.
    """
    steps = STEPS_PER_QUARTER
    voices = as_voices(music, grid_steps(options.grid, steps))
    quarters = voices.quarters()
    key = estimate_key(quarters)
    shift = normalizing_shift(quarters, key) if normalize_key else 0
    per_quarter = vq_vae.codes_per_quarter
    device = transformer.first_code_probs.device
    keys, onsets = voices.transposed(shift).lines()  # [Q, V, 32]
    codes = vq_vae.encode(torch.from_numpy(keys).to(device), torch.from_numpy(onsets).to(device))  # [Q, 16]
    window_quarters = (transformer.config.block_size + 1) // per_quarter
    before = codes[: first - 1].flatten()
    # scored after at least one quarter of the passage, in one window
    after = codes[last : last + min(FOLLOWING_QUARTERS, window_quarters - 1)].flatten()
    generator = torch.Generator().manual_seed(seed)
    seeds = torch.randint(2**62, (options.candidates,), generator=generator).tolist()
    prompt = before.expand(options.candidates, -1) if len(before) else None
    passages = sample_codes(vq_vae, transformer, prompt, last - first + 1, seeds, options, progress)  # [M, codes]
    scores = torch.zeros(options.candidates)
    if len(after):
        # the window that ends with the following quarters, starting on a quarter boundary
        history_length = window_quarters * per_quarter - len(after)
        history = torch.cat([before.expand(options.candidates, -1), passages], dim=1)[:, -history_length:]
        sequences = torch.cat([history, after.expand(options.candidates, -1)], dim=1)
        scores = transformer.log_likelihood(sequences, history.shape[1]).cpu()
    previous = codes[first - 2] if first > 1 else None
    decoded = [decode_voices(vq_vae, row, options.min_note_steps, previous=previous) for row in passages]
    if options.rules:  # the four-part rules where each candidate meets the music around it
        around_keys = []
        for passage in decoded:
            passage_keys, _ = passage.lines()  # [P, V, 32]
            parts = [keys[first - 2 : first - 1]] if first > 1 else []
            parts += [passage_keys] + ([keys[last : last + 1]] if last < len(keys) else [])
            joined = np.concatenate(parts)  # [n, V, 32]
            around_keys.append(joined.transpose(1, 0, 2).reshape(joined.shape[1], -1))
        scores = scores - options.rules * torch.from_numpy(rule_penalties(np.stack(around_keys), shift)).float()
    passage = decoded[choose(scores, generator)].transposed(-shift)
    pieces = [voices.sliced(0, first - 1), passage, voices.sliced(last, voices.num_quarters)]
    return in_key(concatenate([p for p in pieces if p.num_quarters]), key, options.key)
