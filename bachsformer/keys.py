"""Keys: estimate a piece's key, move it to C major / A minor, and move music to a key asked for.

A key is estimated from the piece's duration-weighted pitch-class profile (the number of sounding
steps of each pitch class) by its Pearson correlation with the 24 rotations of the Krumhansl-Kessler
major and minor profiles (Krumhansl 1990), the best correlation winning. A whole piece and a tune
are read by the note they close on where the profile leaves two keys near (`piece_key`, `tune_key`).

Both models learn the music *key-normalized* (docs/design.md, Keys): every piece moved by the smallest
shift, -6 ... +5 semitones, that puts its key on C major or A minor (one set of seven pitch classes),
or an octave further when that keeps it inside the 88 keys. The VQ-VAE's codes change under most
transpositions, so this gives the transformer one code language instead of twelve.

Generated music is moved to the tonic asked for (`--key D`, `--key "G minor"`); when a mode is named
and differs from the piece's own, the piece's mode is changed as a musician would (the third and
sixth of major lowered for minor, giving harmonic minor since the leading tone stays; the third,
sixth and seventh of minor raised for major).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bachsformer.errors import BachsformerError
from bachsformer.midi import LOWEST_PITCH, NUM_KEYS

# Krumhansl & Kessler (1982) probe-tone ratings, from the tonic up by semitones
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MODES = ("major", "minor")
# the spelling musicians use for each tonic, by mode
SIGNATURE_FIFTHS = {  # sharps (+) or flats (-) of each tonic's key, spelled as TONIC_NAMES spells it
    "major": (0, -5, 2, -3, 4, -1, 6, 1, -4, 3, -2, 5),
    "minor": (-3, 4, -1, -6, 1, -4, 3, -2, 5, 0, -5, 2),
}
TONIC_NAMES = {
    "major": ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"),
    "minor": ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"),
}
NORMAL_TONIC = {"major": 0, "minor": 9}  # C major, A minor: the white keys
LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# pitch-class moves (degree above the tonic -> semitones) that change a piece's mode
MODE_CHANGES = {("major", "minor"): {4: -1, 9: -1}, ("minor", "major"): {3: +1, 8: +1, 10: +1}}
KEY_PATTERN = re.compile(r"^\s*([A-Ga-g])\s*(#|♯|b|♭)?\s*(major|maj|minor|min|m)?\s*$", re.IGNORECASE)


class KeyNameError(BachsformerError, ValueError):
    """A key name that cannot be read, such as --key H."""


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class, 0 = C
    mode: str  # "major" or "minor"

    def __str__(self) -> str:
        return f"{TONIC_NAMES[self.mode][self.tonic]} {self.mode}"

    @property
    def signature(self) -> tuple[int, bool]:
        """The key signature as a MIDI file holds it: (sharps, or flats as a negative number; minor), as
        TONIC_NAMES spells the tonic."""
        return SIGNATURE_FIFTHS[self.mode][self.tonic], self.mode == "minor"


@dataclass(frozen=True)
class KeyRequest:
    """What `--key` asks for: a tonic, and a mode or None (keep the piece's own)."""

    tonic: int
    mode: str | None

    def __str__(self) -> str:
        name = TONIC_NAMES[self.mode or "major"][self.tonic]
        return f"{name} {self.mode}" if self.mode else name


def parse_key(text: str) -> KeyRequest:
    """'D', 'F#', 'Bb', 'G minor', 'c# min', 'Am' -> KeyRequest; KeyNameError otherwise."""
    match = KEY_PATTERN.match(text.replace("-", " ").replace("_", " "))
    if not match:
        raise KeyNameError(
            f"{text!r} is not a key: give a tonic A-G with an optional # or b, then optionally major or minor"
            " (D, F#, Bb, G minor)"
        )
    letter, accidental, mode = match.groups()
    tonic = (LETTERS[letter.upper()] + {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(accidental or "", 0)) % 12
    if mode is not None:
        mode = "major" if mode.lower() in ("major", "maj") else "minor"
    return KeyRequest(tonic, mode)


def pitch_class_profile(quarters: np.ndarray) -> np.ndarray:
    """Sounding steps of each pitch class (0 = C) in quarters [Q, 88, T]: float [12]."""
    per_key = np.count_nonzero(np.asarray(quarters), axis=(0, 2))  # [88]
    # laid out from the C below A0, so that position i has pitch class i % 12
    octaves = np.zeros(-(-(LOWEST_PITCH % 12 + NUM_KEYS) // 12) * 12)
    octaves[LOWEST_PITCH % 12 : LOWEST_PITCH % 12 + NUM_KEYS] = per_key
    return octaves.reshape(-1, 12).sum(axis=0)


def _centred_templates() -> np.ndarray:
    """[2 modes, 12 tonics, 12 pitch classes]: each key's profile, less its mean."""
    templates = np.stack(
        [np.stack([np.roll(reference, tonic) for tonic in range(12)]) for reference in (MAJOR_PROFILE, MINOR_PROFILE)]
    )  # templates[m, t, pc] is the rating of pitch class pc in tonic t of mode m
    return templates - templates.mean(-1, keepdims=True)


CENTRED_TEMPLATES = _centred_templates()
TEMPLATE_NORMS = np.linalg.norm(CENTRED_TEMPLATES, axis=-1)  # [2, 12]


def key_correlations(profile: np.ndarray) -> np.ndarray:
    """Pearson correlation of `profile` [12] with each key's profile: [2 modes, 12 tonics]."""
    observed = profile - profile.mean()
    norms = TEMPLATE_NORMS * np.linalg.norm(observed)
    return (CENTRED_TEMPLATES @ observed) / np.where(norms > 0, norms, 1.0)


def estimate_key(quarters: np.ndarray) -> Key:
    """The key whose Krumhansl-Kessler profile best correlates with the piece's (C major if silent)."""
    correlations = key_correlations(pitch_class_profile(quarters))
    mode, tonic = np.unravel_index(int(np.argmax(correlations)), correlations.shape)
    return Key(int(tonic), MODES[mode])


def closing_key(quarters: np.ndarray, last_class: int) -> Key:
    """Of the two keys that best fit quarters [Q, 88, T] (`estimate_key`'s correlations), the one whose
    tonic is the pitch class `last_class` (the note the music closes on), else the best.

    A pitch-class profile leaves a key and its dominant (or its relative) nearly equally likely, and
    Bach closes a chorale, and its tune, on the tonic: where the profile cannot tell, the close decides.
    """
    correlations = key_correlations(pitch_class_profile(quarters))  # [2, 12]
    best = np.argsort(correlations, axis=None)[::-1][:2]
    mode, tonic = next(
        (np.unravel_index(b, correlations.shape) for b in best if b % 12 == last_class),
        np.unravel_index(best[0], correlations.shape),
    )
    return Key(int(tonic), MODES[mode])


def _last_sounding_keys(quarters: np.ndarray) -> np.ndarray:
    """The keys (0 = A0) sounding at the last step where anything sounds in quarters [Q, 88, T]: int [K], K >= 0."""
    roll = np.asarray(quarters).transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, Q * T]
    sounding = np.flatnonzero(roll.any(axis=0))
    return np.flatnonzero(roll[:, sounding[-1]]) if len(sounding) else np.zeros(0, dtype=np.int64)


def tune_key(quarters: np.ndarray) -> Key:
    """The key of a tune, quarters [Q, 88, T] of one line: `closing_key` on its last note (C major if silent).

    The key heard from Bach's four voices is the tune's best-fitting key in 0.69 of the corpus's
    files, and this one in 0.75.
    """
    last = _last_sounding_keys(quarters)
    return closing_key(quarters, (int(last[-1]) + LOWEST_PITCH) % 12) if len(last) else Key(0, "major")


def piece_key(quarters: np.ndarray) -> Key:
    """The key of a whole piece, quarters [Q, 88, T]: `closing_key` on the lowest note of its final
    sonority, the bass it closes on (C major if silent).

    The key the training corpus is moved by (`data.load_corpus`). The best-fitting key alone has
    the last bass note for its tonic in 301 of the 409 chorales; 82 more end on the tonic of the
    second best, most of them a piece read in its dominant (docs/design.md, Keys).
    """
    last = _last_sounding_keys(quarters)
    return closing_key(quarters, (int(last[0]) + LOWEST_PITCH) % 12) if len(last) else Key(0, "major")


def shift_inside_keys(quarters: np.ndarray, shift: int) -> bool:
    """Whether moving every note of quarters [Q, 88, T] up by `shift` semitones keeps it in the 88 keys."""
    sounding = np.nonzero(np.asarray(quarters).any(axis=(0, 2)))[0]
    return not len(sounding) or (sounding[0] + shift >= 0 and sounding[-1] + shift < NUM_KEYS)


def nearest_shift(quarters: np.ndarray, semitones: int) -> int:
    """The shift congruent to `semitones` mod 12 nearest zero (-6 ... +5 first) that keeps the notes inside.

    When no octave fits (a piece spanning nearly the whole keyboard), the -6 ... +5 one, whose
    notes past either end `transpose_quarters` drops.
    """
    base = (semitones + 6) % 12 - 6  # -6 ... +5
    for shift in sorted((base, base - 12, base + 12, base - 24, base + 24), key=abs):
        if shift_inside_keys(quarters, shift):
            return shift
    return base


def normalizing_shift(quarters: np.ndarray, key: Key | None = None) -> int:
    """The smallest shift that moves a piece in `key` (estimated when None) to C major or A minor."""
    key = key or estimate_key(quarters)
    return nearest_shift(quarters, NORMAL_TONIC[key.mode] - key.tonic)


def transpose_quarters(quarters: np.ndarray, shift: int) -> np.ndarray:
    """quarters [Q, 88, T] moved up `shift` semitones; notes moved past either end are dropped."""
    quarters = np.asarray(quarters, dtype=bool)
    moved = np.zeros_like(quarters)
    if abs(shift) < NUM_KEYS:
        if shift >= 0:
            moved[:, shift:] = quarters[:, : NUM_KEYS - shift]
        else:
            moved[:, :shift] = quarters[:, -shift:]
    return moved


def change_mode(quarters: np.ndarray, tonic: int, from_mode: str, to_mode: str) -> np.ndarray:
    """Quarters [Q, 88, T] in `tonic` `from_mode` rewritten in the same tonic's `to_mode` (see the module doc)."""
    quarters = np.asarray(quarters, dtype=bool)
    if from_mode == to_mode:
        return quarters.copy()
    moves = MODE_CHANGES[(from_mode, to_mode)]
    changed = np.zeros_like(quarters)
    degrees = (np.arange(NUM_KEYS) + LOWEST_PITCH - tonic) % 12
    for row in range(NUM_KEYS):
        target = row + moves.get(int(degrees[row]), 0)
        if 0 <= target < NUM_KEYS:
            changed[:, target] |= quarters[:, row]
    return changed


def key_move(quarters: np.ndarray, request: KeyRequest, key: Key | None = None) -> tuple[np.ndarray, Key]:
    """Where each key goes when quarters [Q, 88, T] in `key` (estimated when None) move to the tonic and mode
    of `request`: (int [88], each key's new key or -1 where it falls off the keyboard; the new key).

    The piece keeps its own mode unless `request` names one (`change_mode`).
    """
    key = key or estimate_key(quarters)
    mode = request.mode or key.mode
    rows = np.arange(NUM_KEYS) + nearest_shift(quarters, request.tonic - key.tonic)
    if mode != key.mode:
        moves = MODE_CHANGES[(key.mode, mode)]
        degrees = (rows + LOWEST_PITCH - request.tonic) % 12
        rows = rows + np.array([moves.get(int(degree), 0) for degree in degrees])
    return np.where((rows >= 0) & (rows < NUM_KEYS), rows, -1), Key(request.tonic, mode)


def move_to_key(quarters: np.ndarray, request: KeyRequest, key: Key | None = None) -> tuple[np.ndarray, Key]:
    """quarters [Q, 88, T] in `key` (estimated when None) moved to the tonic and mode of `request`.

    The piece keeps its own mode unless `request` names one. Returns (moved quarters, their key).
    """
    quarters = np.asarray(quarters, dtype=bool)
    rows, moved_key = key_move(quarters, request, key)
    return moved_rows(quarters, rows), moved_key


def moved_rows(quarters: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """quarters [Q, 88, T] with each key k moved to rows[k] (int [88], -1: dropped), as `key_move` gives."""
    quarters = np.asarray(quarters, dtype=bool)
    moved = np.zeros_like(quarters)
    for row in np.flatnonzero(rows >= 0):
        moved[:, rows[row]] |= quarters[:, row]
    return moved
