"""Harmonic analysis: local keys, Roman numerals, cadences and four-part faults, beat by beat
(docs/design.md, Analysis).

    python -m bachsformer.analyze FILE                     # MIDI or MusicXML: a table, beat by beat
    python -m bachsformer.analyze FILE --json OUT.json     # also the analysis as JSON
    python -m bachsformer.analyze FILE --musicxml OUT.musicxml   # the score with the numerals under the bass

The music is read as notes (onset and offset in quarters from the first beat, the pickup included;
MIDI pitch; the voice when the file has one line per part or track) and analysed on its quarter-note
beats:
- Local keys: every beat's pitch-class profile (the time each pitch class sounds, the bass counted
  twice) is smoothed over the beats around it and correlated with the 24 key profiles of Temperley
  (2007); a key's fit at a beat is that correlation, plus how well the key's own chords explain the
  beat, plus at a phrase end a reward when the chord there is the key's tonic (or, less, its
  dominant). One path of keys through the piece (Viterbi) maximizes the summed fit less a cost for
  each change of key, larger for keys far apart on the circle of fifths: a phrase that cadences in the
  dominant is read in the dominant, a single secondary dominant is not a modulation.
- Chords: each beat's notes are weighed (longer, and sounding at the beat, weighs more; the bass
  more than the upper voices), non-chord tones are weighed down where the voices show them (a short
  note between two steps: passing or neighbour tones; a note held over the beat that falls a step
  inside it: a suspension), and the chord (root and one of nine kinds of triad and seventh chord)
  that best explains the weight is chosen, chords that belong to the key (diatonic, or a secondary
  dominant) preferred. The cadential six-four (the tonic over the dominant in the bass, then the
  dominant) is read as V. The inversion is the bass's place in the chord. Figures are
  written as RomanText writes them ("V6", "viio7/V", "ii6/5"), keys as "G" (major) or "e" (minor).
- Cadences, at each phrase end (a fermata, else the last beat): authentic (V to I), half (ending on V),
  plagal (IV to I), deceptive (V to vi) and Phrygian (iv6 to V in minor).
- Four-part faults, when the music is four voices: parallel fifths and octaves, crossing, spacing
  (Soprano-Alto or Alto-Tenor more than an octave apart) and notes out of their voice's range, each
  named with its voices and beat. Music of more than four voices is analysed without them.

Music with one line or none has no harmony: `NoHarmonyError`, one line. Beats that no chord explains
well, or whose key fits poorly (atonal music), and every beat of drums, are marked uncertain.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bachsformer.errors import ArgumentParser, BachsformerError, exit_on_user_error
from bachsformer.keys import MODES, TONIC_NAMES
from bachsformer.voices import VOICE_NAMES
from bachsformer.voicing import VOICE_RANGES

# key profiles of Temperley (2007), from the Kostka-Payne textbook's excerpts, from the tonic up by semitones
TKP_MAJOR = np.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400])
TKP_MINOR = np.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330])
# chord kinds: intervals above the root, the seventh (when there is one) last
CHORD_KINDS = {
    "major": (0, 4, 7),
    "minor": (0, 3, 7),
    "diminished": (0, 3, 6),
    "augmented": (0, 4, 8),
    "dominant7": (0, 4, 7, 10),
    "minor7": (0, 3, 7, 10),
    "halfdiminished7": (0, 3, 6, 10),
    "diminished7": (0, 3, 6, 9),
    "major7": (0, 4, 7, 11),
}
TRIAD_QUALITY = {  # the quality of each kind's triad
    "major": "major",
    "minor": "minor",
    "diminished": "diminished",
    "augmented": "augmented",
    "dominant7": "major",
    "minor7": "minor",
    "halfdiminished7": "diminished",
    "diminished7": "diminished",
    "major7": "major",
}
NUMERALS = ("I", "II", "III", "IV", "V", "VI", "VII")
# the scale degrees' semitones above the tonic; minor with the raised seventh (harmonic minor) for V and viio
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# the chords a key holds as its own: (degree 0-6, kind); the minor key's V, V7, viio, viio7 from the raised 7th
DIATONIC = {
    "major": {
        (0, "major"), (1, "minor"), (2, "minor"), (3, "major"), (4, "major"), (5, "minor"), (6, "diminished"),
        (0, "major7"), (1, "minor7"), (2, "minor7"), (3, "major7"), (4, "dominant7"), (5, "minor7"),
        (6, "halfdiminished7"),
    },
    "minor": {
        (0, "minor"), (1, "diminished"), (2, "major"), (3, "minor"), (4, "major"), (5, "major"), (6, "major"),
        (4, "minor"), (1, "halfdiminished7"), (3, "minor7"), (4, "dominant7"), (5, "major7"), (6, "dominant7"),
        (0, "minor7"), (2, "major7"), (6, "diminished"), (6, "diminished7"),
    },
}  # fmt: skip
# chord-tone weights when missing: the root and third matter, the fifth little
MISSING_COST = {0: 0.5, 1: 0.35, 2: 0.08, 3: 0.5}  # by the tone's place in the chord: root, third, fifth, seventh
OUTSIDE_COST = 1.0  # per unit of weight of a note that is not in the chord
SEVENTH_COST = 0.04  # a seventh chord must explain more than its triad
SEVENTH_PRESENT = 0.1  # the share of a beat's weight a seventh needs to make a seventh chord
SEVENTH_MISSING_COST = 0.5  # the cost of a seventh weighing less than that (a passing tone)
DIATONIC_BONUS, SECONDARY_BONUS, CHROMATIC_COST = 0.12, 0.04, 0.08
AT_BEAT_WEIGHT = 0.5  # a note sounding as the beat starts weighs this much more than its length
BASS_WEIGHT = 1.5  # the lowest note at the beat
NON_CHORD_FACTOR = 0.25  # the weight left to a passing or neighbour tone, or a suspension
# keys
KEY_SMOOTHING_BEATS = 1.5  # standard deviation of the Gaussian that smooths the beats' profiles
KEY_CHANGE_COST = 2.0  # a change of key, in correlation units summed over beats
KEY_DISTANCE_COST = 0.5  # more per step apart on the circle of fifths (relative keys count as one step)
PROFILE_WEIGHT = 8.0  # a key's fit at a beat: its profile's correlation times this ...
CHORD_FIT_WEIGHT = 1.0  # ... plus how well its best chord explains the beat times this ...
CADENCE_TONIC_REWARD = 2.0  # ... plus, at a phrase end, this when the chord there is its tonic ...
CADENCE_DOMINANT_REWARD = 0.5  # ... or this when it is its dominant
UNCERTAIN_KEY = 0.5  # a local key correlating less than this is uncertain
UNCERTAIN_CHORD = 0.35  # a chord leaving more than this share of the beat's weight unexplained is uncertain
RULES = ("parallel fifths", "parallel octaves", "crossing", "spacing", "range")


class NoHarmonyError(BachsformerError):
    """Music with fewer than two lines sounding together: there is no harmony to analyse."""


class AnalysisInputError(BachsformerError):
    """A file the analyzer cannot read."""


@dataclass
class Music:
    """Notes to analyse: float [N, 3] of (onset, offset in quarters from the first beat, MIDI pitch), each
    note's voice (int [N], -1 unknown), the voices' names, the phrase ends (fermatas, in quarters) and
    the bars' starts (in quarters)."""

    notes: np.ndarray
    voices: np.ndarray
    voice_names: tuple[str, ...] = ()
    fermatas: tuple[float, ...] = ()
    bar_starts: tuple[float, ...] = ()
    unpitched: bool = False  # drums: the notes' numbers are instruments, not pitches

    @property
    def length(self) -> float:
        return float(self.notes[:, 1].max()) if len(self.notes) else 0.0


@dataclass
class Chord:
    """One beat's analysis: the key ("G", "e", "Bb"), the figure ("V6"), root and bass pitch classes,
    the chord's pitch classes, and whether it is uncertain."""

    offset: float
    key: str
    figure: str
    root: int
    bass: int
    pitch_classes: tuple[int, ...]
    quality: str
    uncertain: bool = False

    def as_json(self) -> dict:
        entry = {"offset": self.offset, "key": self.key, "figure": self.figure}
        if self.uncertain:
            entry["uncertain"] = True
        return entry


@dataclass
class Analysis:
    chords: list[Chord]
    cadences: list[dict] = field(default_factory=list)  # {"offset", "key", "cadence"}
    faults: list[dict] = field(default_factory=list)  # {"offset", "fault", "voices", "pitches"}
    notes: list[str] = field(default_factory=list)  # what was left out, and why

    def as_json(self) -> list[dict]:
        """One list sorted by offset: the beats' chords, then at the same offset cadences and faults."""
        entries = [(c.offset, 0, c.as_json()) for c in self.chords]
        entries += [(c["offset"], 1, c) for c in self.cadences]
        entries += [(f["offset"], 2, f) for f in self.faults]
        return [entry for _, _, entry in sorted(entries, key=lambda e: (e[0], e[1]))]


# ------------------------------------------------------------------------------------------------ keys


def key_name(tonic: int, mode: str) -> str:
    """'G' for G major, 'e' for E minor, 'Bb', 'f#'."""
    name = TONIC_NAMES[mode][tonic]
    return name if mode == "major" else name[0].lower() + name[1:]


def parse_key_name(name: str) -> tuple[int, str]:
    """'G' -> (7, 'major'), 'f#' -> (6, 'minor'), 'Bb' or 'B-' -> (10, 'major')."""
    letters = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
    tonic = letters[name[0].upper()] + sum({"#": 1, "b": -1, "-": -1}[c] for c in name[1:])
    return tonic % 12, "major" if name[0].isupper() else "minor"


FIFTHS_POSITION = [(7 * pc) % 12 for pc in range(12)]  # pitch class -> place on the circle of fifths


def key_distance(a: tuple[int, int], b: tuple[int, int]) -> int:
    """Steps apart on the circle of fifths of keys (mode index, tonic); a minor key sits at its relative major."""
    place = [FIFTHS_POSITION[(tonic + (3 if mode == 1 else 0)) % 12] for mode, tonic in (a, b)]
    steps = abs(place[0] - place[1]) % 12
    return min(steps, 12 - steps) + (a[0] != b[0])


KEY_STATES = [(mode, tonic) for mode in range(2) for tonic in range(12)]


def key_transitions(change_cost: float, distance_cost: float) -> np.ndarray:
    """float [24, 24]: the cost of going from key a to key b (0 to stay)."""
    return np.array(
        [[0.0 if a == b else change_cost + distance_cost * key_distance(a, b) for b in KEY_STATES] for a in KEY_STATES]
    )


KEY_TRANSITIONS = key_transitions(KEY_CHANGE_COST, KEY_DISTANCE_COST)


def beat_profiles(music: Music, num_beats: int) -> np.ndarray:
    """float [B, 12]: how long each pitch class sounds in each beat, the lowest note at each moment twice."""
    profiles = np.zeros((num_beats, 12))
    for (onset, offset, pitch), is_bass in zip(music.notes, _bass_notes(music)):
        first, last = int(math.floor(onset)), int(math.ceil(offset))
        for beat in range(max(first, 0), min(last, num_beats)):
            overlap = min(offset, beat + 1) - max(onset, beat)
            profiles[beat, int(pitch) % 12] += overlap * (2.0 if is_bass else 1.0)
    return profiles


def _bass_notes(music: Music) -> np.ndarray:
    """bool [N]: the notes that are the lowest sounding as they start."""
    notes = music.notes
    result = np.zeros(len(notes), dtype=bool)
    for i, (onset, _, pitch) in enumerate(notes):
        sounding = (notes[:, 0] <= onset) & (notes[:, 1] > onset)
        result[i] = pitch <= notes[sounding, 2].min()
    return result


def _templates(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """[24, 12] the key profiles, centred and of unit norm, mode-major (as KEY_STATES)."""
    rows = np.stack([np.roll(profile, tonic) for profile in (major, minor) for tonic in range(12)])
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


KEY_TEMPLATES = _templates(TKP_MAJOR, TKP_MINOR)


def profile_correlations(profiles: np.ndarray) -> np.ndarray:
    """float [B, 24]: Pearson correlation of each profile [B, 12] with each key's profile."""
    centred = profiles - profiles.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return (centred / np.where(norms > 0, norms, 1.0)) @ KEY_TEMPLATES.T


def local_keys(
    profiles: np.ndarray, chord_scores: np.ndarray, ends: list[int]
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The path of keys (mode index, tonic) through the beats, and each beat's profile correlation with its key.

    profiles: float [B, 12], each beat's pitch classes; chord_scores: float [B, C], how well each chord
    explains each beat; ends: the beats that end phrases. A key's fit at a beat is the correlation of the
    smoothed profile with its key profile, plus how well the key's own chords explain the beat, plus, at a
    phrase end, a reward when the chord there is the key's tonic (or, less, its dominant).
    """
    num_beats = len(profiles)
    beats = np.arange(num_beats)
    spread = np.exp(-0.5 * ((beats[:, None] - beats[None, :]) / KEY_SMOOTHING_BEATS) ** 2)  # [B, B]
    smoothed = spread @ profiles
    correlations = profile_correlations(smoothed)  # [B, 24], mode-major
    fits = correlations * PROFILE_WEIGHT
    for state, key in enumerate(KEY_STATES):
        fits[:, state] += CHORD_FIT_WEIGHT * (chord_scores + KEY_PRIORS[key]).max(axis=1)
    best = np.argmax(chord_scores, axis=1)
    for end in ends:
        root, kind = CHORDS[best[end]]
        if kind in ("major", "minor"):
            fits[end, KEY_STATES.index((MODES.index(kind), root))] += CADENCE_TONIC_REWARD
        if kind in ("major", "dominant7"):
            for mode in range(2):
                fits[end, KEY_STATES.index((mode, (root + 5) % 12))] += CADENCE_DOMINANT_REWARD
    # Viterbi: maximize the summed fit less the costs of the changes
    score = fits[0].copy()
    back = np.zeros((num_beats, 24), dtype=np.int64)
    for beat in range(1, num_beats):
        candidates = score[:, None] - KEY_TRANSITIONS  # [from, to]
        back[beat] = np.argmax(candidates, axis=0)
        score = candidates[back[beat], np.arange(24)] + fits[beat]
    path = [int(np.argmax(score))]
    for beat in range(num_beats - 1, 0, -1):
        path.append(int(back[beat, path[-1]]))
    path.reverse()
    return [KEY_STATES[s] for s in path], correlations[beats, path]


# ------------------------------------------------------------------------------------------------ chords


def _lines(music: Music) -> list[np.ndarray]:
    """The indices of each voice's notes in time, for voices that are one line (no two notes at once)."""
    lines = []
    for voice in sorted(set(music.voices.tolist()) - {-1}):
        members = np.nonzero(music.voices == voice)[0]
        members = members[np.argsort(music.notes[members, 0], kind="stable")]
        if np.all(music.notes[members[1:], 0] >= music.notes[members[:-1], 1] - 1e-6):
            lines.append(members)
    return lines


def non_chord_factors(music: Music, num_beats: int) -> dict[tuple[int, int], float]:
    """{(note, beat): factor} for notes the voice leading shows as non-chord tones in that beat: a short note
    between two steps (passing and neighbour tones, accented or not) and a note held into a beat that then
    falls by step inside it (a suspension)."""
    notes = music.notes
    factors = {}
    for line in _lines(music):
        for position, index in enumerate(line):
            onset, offset, pitch = notes[index]
            before = line[position - 1] if position > 0 else None
            after = line[position + 1] if position + 1 < len(line) else None
            joined_after = after is not None and abs(notes[after, 0] - offset) < 1e-6
            step_after = joined_after and 1 <= abs(notes[after, 2] - pitch) <= 2
            joined_before = before is not None and abs(notes[before, 1] - onset) < 1e-6
            step_before = joined_before and 1 <= abs(notes[before, 2] - pitch) <= 2
            beat = int(math.floor(onset + 1e-6))
            if offset - onset <= 0.5 + 1e-6 and step_after and (step_before or onset - beat < 1e-6):
                for b in range(beat, min(int(math.ceil(offset - 1e-6)), num_beats)):
                    factors[(index, b)] = NON_CHORD_FACTOR
            if step_after and notes[after, 2] < pitch:  # held into a beat, falling a step inside it
                resolution = notes[after, 0]
                held_beat = int(math.floor(resolution - 1e-6))
                if onset < held_beat - 1e-6 and resolution - held_beat < 1 - 1e-6:
                    factors[(index, held_beat)] = NON_CHORD_FACTOR
    return factors


def beat_weights(music: Music, num_beats: int) -> tuple[np.ndarray, np.ndarray]:
    """float [B, 12] the weight of each pitch class in each beat, and int [B] the bass pitch at each beat
    (the lowest sounding at its start, else the lowest in it; -1 where silent)."""
    notes = music.notes
    factors = non_chord_factors(music, num_beats)
    weights = np.zeros((num_beats, 12))
    bass = np.full(num_beats, -1)
    for beat in range(num_beats):
        inside = np.nonzero((notes[:, 0] < beat + 1 - 1e-6) & (notes[:, 1] > beat + 1e-6))[0]
        if not len(inside):
            continue
        at_start = inside[notes[inside, 0] <= beat + 1e-6]
        lowest = notes[at_start if len(at_start) else inside, 2].min()
        bass[beat] = int(lowest)
        for index in inside:
            onset, offset, pitch = notes[index]
            weight = min(offset, beat + 1) - max(onset, beat) + (AT_BEAT_WEIGHT if onset <= beat + 1e-6 else 0.0)
            if pitch == lowest:
                weight *= BASS_WEIGHT
            weights[beat, int(pitch) % 12] += weight * factors.get((index, beat), 1.0)
    return weights, bass


def _chord_table() -> tuple[np.ndarray, list[tuple[int, str]]]:
    """[C, 12] the cost of each pitch class missing from chord c (0 for tones not in it) and [C, 12] whether in
    it, with the (root, kind) of each of the 12 x 9 chords."""
    members, missing, chords = [], [], []
    for root in range(12):
        for kind, intervals in CHORD_KINDS.items():
            member, cost = np.zeros(12, dtype=bool), np.zeros(12)
            for place, interval in enumerate(intervals):
                member[(root + interval) % 12] = True
                cost[(root + interval) % 12] = MISSING_COST[place]
            members.append(member)
            missing.append(cost)
            chords.append((root, kind))
    return np.array(members), np.array(missing), chords


CHORD_MEMBERS, CHORD_MISSING, CHORDS = _chord_table()
CHORD_SEVENTH = np.array([len(CHORD_KINDS[kind]) == 4 for _, kind in CHORDS])
CHORD_SEVENTHS = np.array(
    [
        np.eye(12)[(root + CHORD_KINDS[kind][3]) % 12] if len(CHORD_KINDS[kind]) == 4 else np.zeros(12)
        for root, kind in CHORDS
    ]
)  # [C, 12]: each seventh chord's seventh


def key_prior(tonic: int, mode: str) -> np.ndarray:
    """float [C]: the bonus (or cost) of each chord in a key: its own chords, secondary dominants, the rest."""
    prior = np.full(len(CHORDS), -CHROMATIC_COST)
    scale = SCALES[mode]
    # the minor key's leading-tone chords stand on the raised seventh
    raised = ("diminished", "diminished7")
    own = {((tonic + scale[degree] + (mode == "minor" and degree == 6 and kind in raised)) % 12, kind)
           for degree, kind in DIATONIC[mode]}  # fmt: skip
    # secondary dominants: V, V7, viio, viio7 of the key's major and minor triads other than I and vii
    targets = [(tonic + scale[d]) % 12 for d in range(1, 6)]
    secondary = set()
    for target in targets:
        secondary |= {((target + 7) % 12, "major"), ((target + 7) % 12, "dominant7")}
        secondary |= {((target + 11) % 12, "diminished"), ((target + 11) % 12, "diminished7")}
    secondary.add(((tonic + 7) % 12, "dominant7"))
    for index, chord in enumerate(CHORDS):
        if chord in own:
            prior[index] = DIATONIC_BONUS
        elif chord in secondary:
            prior[index] = SECONDARY_BONUS
    return prior


KEY_PRIORS = {(mode, tonic): key_prior(tonic, MODES[mode]) for mode, tonic in KEY_STATES}


def chord_scores(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [B, C]: how well each chord explains each beat's weights [B, 12] (before any key), and [B, C] the
    share of the weight it leaves unexplained."""
    total = weights.sum(axis=1, keepdims=True)
    shares = weights / np.where(total > 0, total, 1.0)  # [B, 12]
    explained = shares @ CHORD_MEMBERS.T  # [B, C]
    outside = 1.0 - explained
    present = shares > 0.02
    missing = (~present).astype(float) @ CHORD_MISSING.T  # [B, C]
    # a seventh counts only when it weighs as a chord tone does, not as a passing tone
    faint_seventh = (shares < SEVENTH_PRESENT) & present  # [B, 12]
    missing += SEVENTH_MISSING_COST * (faint_seventh.astype(float) @ CHORD_SEVENTHS.T)
    return explained - OUTSIDE_COST * outside - missing - SEVENTH_COST * CHORD_SEVENTH, outside


def choose_chords(
    scores: np.ndarray, outside: np.ndarray, keys: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Each beat's chord (an index into CHORDS) in its key, and the share of its weight left unexplained."""
    chosen = np.argmax(scores + np.stack([KEY_PRIORS[key] for key in keys]), axis=1)
    return chosen, outside[np.arange(len(chosen)), chosen]


# ------------------------------------------------------------------------------------------------ figures


def figure_of(root: int, kind: str, bass: int, tonic: int, mode: str) -> str:
    """The RomanText figure of a chord (root pitch class, kind, bass pitch class) in a key: 'V6', 'viio7/V'."""
    intervals = CHORD_KINDS[kind]
    places = [(root + i) % 12 for i in intervals]
    place = places.index(bass) if bass in places else 0
    inversion = (["", "6", "6/4"] if len(intervals) == 3 else ["7", "6/5", "4/3", "4/2"])[place]
    numeral = _numeral(root, kind, tonic, mode)
    own = KEY_PRIORS[(MODES.index(mode), tonic)][CHORDS.index((root, kind))] >= DIATONIC_BONUS
    if numeral is not None and (own or len(intervals) == 3):
        return _with_inversion(numeral, inversion)
    for target_degree in (4, 3, 1, 5, 2, 6):  # a secondary function: V, V7, viio, viio7 of a key's chord
        target = (tonic + SCALES[mode][target_degree]) % 12
        if _scale_triad(target_degree, mode) == "diminished":  # a diminished triad is not tonicized
            continue
        target_numeral = _numeral(target, _scale_triad(target_degree, mode), tonic, mode)
        if root == (target + 7) % 12 and kind in ("major", "dominant7"):
            return _with_inversion("V", inversion) + "/" + target_numeral.rstrip("o")
        if root == (target + 11) % 12 and kind in ("diminished", "diminished7", "halfdiminished7"):
            base = {"diminished": "viio", "diminished7": "viio", "halfdiminished7": "viiø"}[kind]
            return _with_inversion(base, inversion) + "/" + target_numeral.rstrip("o")
    if numeral is not None:  # a seventh chord off the key's own: the numeral, its seventh as the scale has it
        return _with_inversion(numeral, inversion)
    return _with_inversion(_chromatic_numeral(root, kind, tonic, mode), inversion)


def _scale_triad(degree: int, mode: str) -> str:
    scale = SCALES[mode]
    third = (scale[(degree + 2) % 7] - scale[degree]) % 12
    fifth = (scale[(degree + 4) % 7] - scale[degree]) % 12
    return {(4, 7): "major", (3, 7): "minor", (3, 6): "diminished"}.get((third, fifth), "major")


def _case(numeral: str, kind: str) -> str:
    quality = TRIAD_QUALITY[kind]
    text = numeral if quality in ("major", "augmented") else numeral.lower()
    suffix = {"diminished": "o", "augmented": "+"}.get(quality, "")
    if kind == "halfdiminished7":
        suffix = "ø"
    return text + suffix


def _numeral(root: int, kind: str, tonic: int, mode: str) -> str | None:
    """The numeral of a chord whose root is a degree of the key (the minor key's 6th and 7th natural or raised),
    or None. In minor, as music21 reads RomanText, a lower-case vi or vii is on the raised degree and an
    upper-case VI or VII on the natural one; the other cases take a sharp or a flat."""
    interval = (root - tonic) % 12
    lower = TRIAD_QUALITY[kind] in ("minor", "diminished")
    if mode == "minor" and interval in (8, 10, 9, 11):
        numeral = _case("VI" if interval in (8, 9) else "VII", kind)
        raised = interval in (9, 11)
        return numeral if raised == lower else ("b" if lower else "#") + numeral
    if interval in SCALES[mode]:
        return _case(NUMERALS[SCALES[mode].index(interval)], kind)
    return None


# the roots off the scale (semitones above the tonic) as RomanText alters a degree (0 ... 6) of the key's scale
ALTERED_DEGREES = {
    "major": {1: ("b", 1), 3: ("b", 2), 6: ("#", 3), 8: ("b", 5), 10: ("b", 6)},
    "minor": {1: ("b", 1), 4: ("#", 2), 6: ("#", 3)},
}


def _chromatic_numeral(root: int, kind: str, tonic: int, mode: str) -> str:
    """The numeral of a root off the scale: a lowered (bII, bVI, bVII, bIII) or raised (#iv, #III) degree."""
    sign, degree = ALTERED_DEGREES[mode][(root - tonic) % 12]
    return sign + _case(NUMERALS[degree], kind)


def _with_inversion(numeral: str, inversion: str) -> str:
    return numeral + inversion


# ------------------------------------------------------------------------------------------------ the analysis


def analyze(music: Music) -> Analysis:
    """The analysis of `music`: a chord on every beat, cadences at the phrase ends, four-part faults."""
    check_harmony(music)
    num_beats = int(math.ceil(music.length - 1e-6))
    weights, bass = beat_weights(music, num_beats)
    profiles = beat_profiles(music, num_beats)
    scores, outside = chord_scores(weights)
    keys, key_fit = local_keys(profiles, scores, [int(end) for end in phrase_ends(music)])
    chosen, unexplained = choose_chords(scores, outside, keys)
    chosen = cadential_six_fours(chosen, bass, keys)
    chords = []
    for beat in range(num_beats):
        if weights[beat].sum() == 0:  # nothing sounds: no chord (a pickup's rests, a general pause)
            continue
        mode_index, tonic = keys[beat]
        mode = MODES[mode_index]
        root, kind = CHORDS[chosen[beat]]
        pitch_classes = tuple(sorted((root + i) % 12 for i in CHORD_KINDS[kind]))
        bass_class = int(bass[beat]) % 12 if bass[beat] >= 0 else root
        if bass_class not in pitch_classes:
            bass_class = _lowest_chord_tone(music, beat, pitch_classes, root)
        uncertain = bool(music.unpitched or unexplained[beat] > UNCERTAIN_CHORD or key_fit[beat] < UNCERTAIN_KEY)
        figure = figure_of(root, kind, bass_class, tonic, mode)
        chords.append(
            Chord(
                float(beat),
                key_name(tonic, mode),
                figure,
                root,
                bass_class,
                pitch_classes,
                TRIAD_QUALITY[kind],
                uncertain,
            )
        )
    analysis = Analysis(chords)
    if music.unpitched:
        analysis.notes.append(
            "the notes are drums, whose numbers name instruments, not pitches: every numeral is uncertain"
        )
    analysis.cadences = find_cadences(music, chords)
    if four_voices(music):
        analysis.faults = find_faults(music)
    else:
        analysis.notes.append(
            f"four-part faults need four voices, one line each; this music has {describe_voices(music)}"
        )
    return analysis


def check_harmony(music: Music) -> None:
    """NoHarmonyError unless two notes sound together somewhere."""
    notes = music.notes
    if not len(notes):
        raise NoHarmonyError("the music has no notes: there is no harmony to analyse")
    order = np.argsort(notes[:, 0], kind="stable")
    latest_end = np.maximum.accumulate(notes[order, 1])
    if not np.any(notes[order[1:], 0] < latest_end[:-1] - 1e-6):
        raise NoHarmonyError("the music is one line (no two notes sound together): there is no harmony to analyse")


def _lowest_chord_tone(music: Music, beat: int, pitch_classes: tuple[int, ...], root: int) -> int:
    notes = music.notes
    inside = notes[(notes[:, 0] < beat + 1) & (notes[:, 1] > beat)]
    members = [int(p) for p in inside[:, 2] if int(p) % 12 in pitch_classes]
    return min(members) % 12 if members else root


def cadential_six_fours(chosen: np.ndarray, bass: np.ndarray, keys: list[tuple[int, int]]) -> np.ndarray:
    """The tonic triad over the dominant in the bass, followed by the dominant over the same bass, is V."""
    chosen = chosen.copy()
    for beat in range(len(chosen) - 1):
        mode_index, tonic = keys[beat]
        root, kind = CHORDS[chosen[beat]]
        dominant = (tonic + 7) % 12
        if root != tonic or kind not in ("major", "minor") or bass[beat] < 0 or bass[beat] % 12 != dominant:
            continue
        following = beat + 1
        while following < len(chosen) and chosen[following] == chosen[beat]:
            following += 1
        if following < len(chosen):
            next_root, next_kind = CHORDS[chosen[following]]
            if next_root == dominant and next_kind in ("major", "dominant7") and bass[following] % 12 == dominant:
                for b in range(beat, following):
                    chosen[b] = CHORDS.index((dominant, "major"))
    return chosen


# ------------------------------------------------------------------------------------------------ cadences


def phrase_ends(music: Music) -> list[float]:
    """The beats that end phrases: the fermatas' (the beat a fermata's note starts in), and the last beat
    unless no note starts after the last fermata (the final chord is then the fermata's)."""
    ends = sorted({float(math.floor(f + 1e-6)) for f in music.fermatas if 0 <= f < music.length})
    if not ends or np.any(music.notes[:, 0] >= ends[-1] + 1):
        ends.append(float(math.ceil(music.length - 1e-6) - 1))
    return ends


def find_cadences(music: Music, chords: list[Chord]) -> list[dict]:
    """The cadence at each phrase end: the chord there and the last different chord before it."""
    cadences = []
    by_beat = {int(c.offset): c for c in chords}
    for end in phrase_ends(music):
        final = by_beat.get(int(end))
        if final is None:
            continue
        beat = int(end) - 1
        while beat in by_beat and by_beat[beat].root == final.root and by_beat[beat].quality == final.quality:
            beat -= 1
        before = by_beat.get(beat)
        kind = cadence_kind(before, final)
        if kind:
            cadences.append({"offset": float(end), "key": final.key, "cadence": kind})
    return cadences


def cadence_kind(before: Chord | None, final: Chord) -> str | None:
    """authentic, half, plagal, deceptive, Phrygian or None, in the final chord's key."""
    tonic, mode = parse_key_name(final.key)
    degree = (final.root - tonic) % 12
    previous = None if before is None else (before.root - tonic) % 12
    if degree == 7 and final.quality == "major":
        if mode == "minor" and previous == 5 and before.quality == "minor" and before.bass == (tonic + 8) % 12:
            return "Phrygian"
        return "half"
    if degree == 0 and final.quality in ("major", "minor"):
        if previous in (7, 11) and before.quality in ("major", "diminished"):
            return "authentic"
        if previous == 5:
            return "plagal"
    if previous == 7 and before.quality == "major" and degree in (8, 9) and final.quality in ("major", "minor"):
        return "deceptive"
    return None


# ------------------------------------------------------------------------------------------------ four-part faults


def four_voices(music: Music) -> bool:
    return len(music.voice_names) == 4 and len(_lines(music)) == 4


def describe_voices(music: Music) -> str:
    if len(music.voice_names) and len(music.voice_names) != 4:
        return "one voice" if len(music.voice_names) == 1 else f"{len(music.voice_names)} voices"
    if len(music.voice_names) == 4:
        return "four parts, not every one a single line"
    return "no voices marked"


def find_faults(music: Music) -> list[dict]:
    """Parallel fifths and octaves, crossings, spacing and range faults between four voices (S, A, T, B).

    The voices are compared at every moment a note starts: a parallel is two voices moving the same way
    from a fifth (octave, unison) to a fifth (octave, unison); crossing is a lower voice above the one
    above it; spacing is Soprano-Alto or Alto-Tenor more than an octave apart. Each fault is named once
    per stretch: at the moment it starts. Each fault: {"offset", "fault", "voices", "pitches" (the voices'
    MIDI pitches there)}."""
    notes = music.notes
    voices = sorted(set(music.voices.tolist()) - {-1})[:4]
    names = [music.voice_names[v] for v in voices]
    moments = np.unique(notes[:, 0])
    pitches = np.full((4, len(moments)), -1)
    for row, voice in enumerate(voices):
        members = music.voices == voice
        for onset, offset, pitch in notes[members]:
            pitches[row, (moments >= onset - 1e-6) & (moments < offset - 1e-6)] = int(pitch)
    faults = []
    seen = set()

    def add(moment: int, rule: str, who: tuple[int, ...]):
        key = (rule, who, moment)
        if key not in seen:
            seen.add(key)
            offset = float(moments[moment])
            sounding = [int(pitches[v, moment]) for v in who]
            faults.append({"offset": offset, "fault": rule, "voices": [names[v] for v in who], "pitches": sounding})

    for upper in range(4):
        for lower in range(upper + 1, 4):
            high, low = pitches[upper], pitches[lower]
            both = (high >= 0) & (low >= 0)
            for m in range(len(moments)):
                if not both[m]:
                    continue
                if low[m] > high[m] and lower == upper + 1 and not (m > 0 and both[m - 1] and low[m - 1] > high[m - 1]):
                    add(m, "crossing", (upper, lower))
                if lower == upper + 1 and upper < 2 and high[m] - low[m] > 12:
                    if not (m > 0 and both[m - 1] and high[m - 1] - low[m - 1] > 12):
                        add(m, "spacing", (upper, lower))
                if m == 0 or not both[m - 1]:
                    continue
                moves = np.sign(high[m] - high[m - 1]), np.sign(low[m] - low[m - 1])
                if moves[0] == 0 or moves[0] != moves[1]:
                    continue
                before, now = (high[m - 1] - low[m - 1]) % 12, (high[m] - low[m]) % 12
                if before == now == 7:
                    add(m, "parallel fifths", (upper, lower))
                elif before == now == 0:
                    add(m, "parallel octaves", (upper, lower))
    for row, voice in enumerate(voices):
        low, high = VOICE_RANGES[row]
        for onset, _, pitch in notes[music.voices == voice]:
            if pitch < low or pitch > high:
                fault = {"offset": float(onset), "fault": "range", "voices": [names[row]], "pitches": [int(pitch)]}
                faults.append(fault)
    return sorted(faults, key=lambda f: (f["offset"], RULES.index(f["fault"])))


# ------------------------------------------------------------------------------------------------ reading music


def music_from_voices(voice_notes, steps_per_quarter: int, names=VOICE_NAMES, fermatas=(), bar_starts=()) -> Music:
    """Music from voices' notes [N, 3] (onset step, offset step, MIDI pitch), one array per voice."""
    arrays = [np.asarray(v, dtype=np.float64).reshape(-1, 3) for v in voice_notes]
    notes = np.concatenate(arrays) if arrays else np.zeros((0, 3))
    notes[:, :2] /= steps_per_quarter
    voices = np.concatenate([np.full(len(a), n) for n, a in enumerate(arrays)]) if arrays else np.zeros(0, int)
    return Music(notes, voices.astype(np.int64), tuple(names[: len(arrays)]), tuple(fermatas), tuple(bar_starts))


def analyze_voices(voices, names=VOICE_NAMES, fermatas=()) -> Analysis | None:
    """The analysis of `voicing.Voices` (four voices' notes on a grid), or None for music with no harmony."""
    music = music_from_voices(voices.notes, voices.steps_per_quarter, names, fermatas)
    try:
        return analyze(music)
    except NoHarmonyError:
        return None


def music_from_quarters(quarters: np.ndarray) -> Music:
    """Music from a roll [Q, 88, steps] (no voices known)."""
    from bachsformer.midi import quarters_to_notes

    notes = quarters_to_notes(np.asarray(quarters, dtype=bool)).astype(np.float64)
    notes[:, :2] /= np.asarray(quarters).shape[2]
    return Music(notes, np.full(len(notes), -1, dtype=np.int64))


def read_music(path: str | Path) -> Music:
    """A MIDI file (each track a voice; fermata markers as phrase ends) or a MusicXML score (each part, or
    each voice of a part, a voice; fermatas as phrase ends) as Music."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisInputError(f"{path}: no such file")
    data = path.read_bytes()
    if data[:4] == b"MThd":
        return _read_midi(path)
    if data[:2] == b"PK" or data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
        return music_from_score(_parse_musicxml(path))
    raise AnalysisInputError(f"{path}: neither a MIDI file nor a MusicXML score")


def _read_midi(path: Path) -> Music:
    from bachsformer.midi import (
        STEPS_PER_QUARTER,
        MidiError,
        quarters_to_notes,
        read_fermatas,
        read_meter,
        read_midi_tracks,
    )
    from bachsformer.voices import restore_repeats

    try:
        tracks = read_midi_tracks(path)
        meter = read_meter(path)
    except MidiError as error:
        drums = _drum_music(path)  # a file of drums alone: read, and every numeral uncertain
        if drums is None:
            raise AnalysisInputError(str(error)) from None
        return drums
    tracks = [t for t in tracks if t.quarters.any()]
    notes = [restore_repeats(quarters_to_notes(t.quarters)) for t in tracks]
    names = tuple(t.name or f"track {n + 1}" for n, t in enumerate(tracks))
    if len(tracks) == 4:
        names = VOICE_NAMES
    length = max((len(t.quarters) for t in tracks), default=0)
    fermatas = [step / STEPS_PER_QUARTER for step in read_fermatas(path)]
    music = music_from_voices(notes, STEPS_PER_QUARTER, names, fermatas, meter.bar_lines(length))
    # the codec starts at the first quarter that sounds; offsets count from the file's start, as a score's
    # count from its first bar (a pickup written after rests keeps them)
    lead = _leading_quarters(path)
    music.notes[:, :2] += lead
    music.fermatas = tuple(f + lead for f in music.fermatas)
    music.bar_starts = tuple(b + lead for b in music.bar_starts)
    return music


def _leading_quarters(path: Path) -> int:
    """The whole silent quarters before a MIDI file's first note, as the codec rounds onsets to its grid."""
    import symusic

    from bachsformer.midi import STEPS_PER_QUARTER

    score = symusic.Score(str(path))
    onsets = [int(t.notes.numpy()["time"].min()) for t in score.tracks if not t.is_drum and len(t.notes)]
    if not onsets:
        return 0
    ticks = score.ticks_per_quarter
    return (2 * min(onsets) * STEPS_PER_QUARTER + ticks) // (2 * ticks) // STEPS_PER_QUARTER


def _drum_music(path: Path) -> Music | None:
    """The notes of a MIDI file's drum tracks (their key numbers read as pitches), or None without any."""
    import symusic

    try:
        score = symusic.Score(str(path))
    except Exception:  # symusic raises several kinds for a damaged file; read_midi_tracks has named it
        return None
    ticks = score.ticks_per_quarter
    voices = []
    for track in score.tracks:
        if track.is_drum and len(track.notes):
            found = track.notes.numpy()
            voices.append(np.stack([found["time"], found["time"] + found["duration"], found["pitch"]], axis=1))
    if not voices:
        return None
    first = min(int(v[:, 0].min()) for v in voices) // ticks * ticks  # whole silent quarters left out
    music = music_from_voices([v - [first, first, 0] for v in voices], ticks, [f"drums {n + 1}" for n in range(9)])
    music.unpitched = True
    return music


def _parse_musicxml(path: Path):
    try:
        import music21
    except ImportError:
        raise AnalysisInputError(f"{path}: reading MusicXML needs music21: pip install music21") from None
    try:
        return music21.converter.parse(path, format="musicxml", forceSource=True)
    except Exception as error:  # music21 raises many kinds for a bad score; each is the file's fault
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise AnalysisInputError(f"{path}: not a MusicXML score music21 can read ({reason[:200]})") from None


def music_from_score(score) -> Music:
    """Music from a music21 score: each part a voice, or each voice of a part where a part has several. Tied
    notes are one note (a suspension tied over a bar line is held, not struck again)."""
    import music21

    rows, voices, names, fermatas = [], [], [], set()
    for part in score.parts:
        by_voice: dict[str, list] = {}
        for element in part.recurse().notes:
            site = element.activeSite
            by_voice.setdefault(str(site.id) if isinstance(site, music21.stream.Voice) else "", []).append(element)
        part_name = part.partName or f"part {len(names) + 1}"
        for voice_id, elements in sorted(by_voice.items()):
            voice_index = len(names)
            names.append(part_name if len(by_voice) == 1 else f"{part_name} {voice_id}")
            tied: dict[int, int] = {}  # MIDI pitch -> its row, while a tie goes on
            for element in elements:
                onset = float(element.getOffsetInHierarchy(part))
                offset = onset + float(element.duration.quarterLength)
                if offset <= onset:  # grace notes
                    continue
                if any(isinstance(e, music21.expressions.Fermata) for e in element.expressions):
                    fermatas.add(onset)
                for note in element.notes if element.isChord else [element]:
                    pitch, tie = note.pitch.midi, note.tie.type if note.tie is not None else None
                    row = tied.pop(pitch, None)
                    if row is not None and tie in ("stop", "continue") and abs(rows[row][1] - onset) < 1e-6:
                        rows[row][1] = offset
                    else:
                        row = len(rows)
                        rows.append([onset, offset, pitch])
                        voices.append(voice_index)
                    if tie in ("start", "continue"):
                        tied[pitch] = row
    notes = np.array(rows, dtype=np.float64).reshape(-1, 3)
    measures = score.parts[0].getElementsByClass(music21.stream.Measure) if len(score.parts) else []
    start = float(measures[0].offset) if len(measures) else 0.0
    notes[:, :2] -= start
    if len(names) == 4:
        names = list(VOICE_NAMES)
    bar_starts = tuple(float(m.offset) - start for m in measures)
    return Music(notes, np.array(voices, dtype=np.int64), tuple(names), tuple(sorted(fermatas)), bar_starts)


# ------------------------------------------------------------------------------------------------ statistics

INVERSIONS = {"": "root", "7": "root", "6": "first", "6/5": "first", "6/4": "second", "4/3": "second", "4/2": "third"}
TOP_PROGRESSIONS = 10


def as_music(piece) -> Music:
    """Music from what the evaluation holds: Music, `voicing.Voices`, a roll [Q, 88, steps] or a file's path."""
    if isinstance(piece, Music):
        return piece
    if hasattr(piece, "steps_per_quarter"):  # voicing.Voices
        return music_from_voices(piece.notes, piece.steps_per_quarter)
    if isinstance(piece, (str, Path)):
        return read_music(piece)
    return music_from_quarters(piece)


def split_figure(figure: str) -> tuple[str, str]:
    """'V6/5/V' -> ('V/V', '6/5'); 'viio7' -> ('viio', '7'); 'I6/4' -> ('I', '6/4')."""
    head, _, target = figure.partition("/") if not figure[:1].isdigit() else (figure, "", "")
    numeral = head.rstrip("0123456789")
    inversion = head[len(numeral) :]
    if target and target[0].isdigit():  # 'V6/5' or 'V6/5/V': the first slash is the inversion's
        digits, _, target = target.partition("/")
        inversion = f"{inversion}/{digits}"
    return numeral + (f"/{target}" if target else ""), inversion


def harmony_statistics(pieces: list) -> dict:
    """What the analyses of `pieces` (four-voice scores or MIDI files, Voices, rolls, Music) hold, as shares.

    cadences: per position (inner phrase ends: fermatas before the final one; `phrase_ends`) the share of each cadence
    kind (none where no cadence is found), with the number of phrase ends in `phrase_ends`; degrees: the share of
    beats on each numeral (inversion left out, secondary functions kept: "V/V"); inversions: root, first, second,
    third; changes_per_bar: chord changes (root, kind or bass) per bar (of the music's bars when known, else of 4
    quarters); progressions: the most common pairs of successive different numerals, as shares of all such pairs.
    Music with no harmony is counted in `skipped`.
    """
    cadences = {"inner": {}, "final": {}}
    degrees, inversions, progressions = {}, {}, {}
    changes, bars, beats, skipped, analysed = 0, 0.0, 0, 0, 0
    for piece in pieces:
        music = as_music(piece)
        try:
            analysis = analyze(music)
        except NoHarmonyError:
            skipped += 1
            continue
        analysed += 1
        cadence_at = {c["offset"]: c["cadence"] for c in analysis.cadences}
        ends = phrase_ends(music)
        for n, end in enumerate(ends):
            position = cadences["final" if n == len(ends) - 1 else "inner"]
            kind = cadence_at.get(end, "none")
            position[kind] = position.get(kind, 0) + 1
        previous = None
        for chord in analysis.chords:
            numeral, inversion = split_figure(chord.figure)
            degrees[numeral] = degrees.get(numeral, 0) + 1
            place = INVERSIONS.get(inversion, "root")
            inversions[place] = inversions.get(place, 0) + 1
            now = (chord.root, chord.pitch_classes, chord.bass)
            if previous is not None and now != previous[0]:
                changes += 1
                if numeral != previous[1]:
                    pair = f"{previous[1]} → {numeral}"
                    progressions[pair] = progressions.get(pair, 0) + 1
            previous = (now, numeral)
        beats += len(analysis.chords)
        bar_starts = [b for b in music.bar_starts if b < music.length]
        bars += len(bar_starts) if len(bar_starts) > 1 else len(analysis.chords) / 4

    def shares(counts: dict, limit: int | None = None) -> dict:
        total = sum(counts.values()) or 1
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return {name: count / total for name, count in ordered}

    return {
        "pieces": analysed,
        "skipped": skipped,
        "beats": beats,
        "cadences": {position: shares(counts) for position, counts in cadences.items()},
        "phrase_ends": {position: sum(counts.values()) for position, counts in cadences.items()},
        "degrees": shares(degrees),
        "inversions": shares(inversions),
        "changes_per_bar": changes / bars if bars else 0.0,
        "progressions": shares(progressions, TOP_PROGRESSIONS),
    }


def print_harmony(sets: dict) -> None:
    """The harmony statistics of several sets {name: harmony_statistics(...)}, side by side."""
    names = list(sets)
    print("\nharmony (bachsformer.analyze), " + ", ".join(f"{n}: {sets[n]['pieces']} pieces" for n in names))
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    print("| chord changes per bar | " + " | ".join(f"{sets[n]['changes_per_bar']:.2f}" for n in names) + " |")
    for position in ("inner", "final"):
        row = " | ".join(str(sets[n]["phrase_ends"][position]) for n in names)
        print(f"| {position} phrase ends | {row} |")
        kinds = sorted({k for n in names for k in sets[n]["cadences"][position]}, key=lambda k: (k == "none", k))
        for kind in kinds:
            counted = [n for n in names if sets[n]["phrase_ends"][position]]  # "-": no such phrase ends
            cells = [sets[n]["cadences"][position].get(kind, 0) if n in counted else None for n in names]
            row = " | ".join("-" if cell is None else f"{cell:.2f}" for cell in cells)
            print(f"| {position} cadences: {kind} | {row} |")
    for place in ("root", "first", "second", "third"):
        print(
            f"| {place} inversion | " + " | ".join(f"{sets[n]['inversions'].get(place, 0):.2f}" for n in names) + " |"
        )
    common = sorted(
        {d for n in names for d in list(sets[n]["degrees"])[:8]}, key=lambda d: -sets[names[-1]]["degrees"].get(d, 0)
    )
    for degree in common:
        print(f"| beats on {degree} | " + " | ".join(f"{sets[n]['degrees'].get(degree, 0):.3f}" for n in names) + " |")
    print(f"top {TOP_PROGRESSIONS} progressions (share of chord changes):")
    print("| rank | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for rank in range(TOP_PROGRESSIONS):
        cells = []
        for n in names:
            items = list(sets[n]["progressions"].items())
            cells.append(f"{items[rank][0]} ({items[rank][1]:.2f})" if rank < len(items) else "")
        print(f"| {rank + 1} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------------------------------------ output


def print_analysis(analysis: Analysis, out=None) -> None:
    cadences = {c["offset"]: c["cadence"] for c in analysis.cadences}
    faults: dict[float, list[str]] = {}
    for fault in analysis.faults:
        faults.setdefault(fault["offset"], []).append(f"{fault['fault']} ({', '.join(fault['voices'])})")
    previous_key = None
    print("| beat | key | figure | cadence | faults |", file=out)
    print("|---|---|---|---|---|", file=out)
    for chord in analysis.chords:
        key = chord.key if chord.key != previous_key else ""
        previous_key = chord.key
        figure = chord.figure + (" ?" if chord.uncertain else "")
        beat_faults = [f for offset, fs in faults.items() if chord.offset <= offset < chord.offset + 1 for f in fs]
        cadence = cadences.get(chord.offset, "")
        print(f"| {chord.offset:g} | {key} | {figure} | {cadence} | {'; '.join(beat_faults)} |", file=out)
    for note in analysis.notes:
        print(f"note: {note}", file=out)


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="a MIDI file or MusicXML score")
    parser.add_argument("--json", help="write the analysis to this JSON file")
    parser.add_argument("--musicxml", help="write the score with the numerals under the bass to this MusicXML file")
    args = parser.parse_args()
    started = time.perf_counter()
    music = read_music(args.file)
    analysis = analyze(music)
    print_analysis(analysis)
    if args.json:
        Path(args.json).write_text(json.dumps(analysis.as_json(), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.musicxml:
        from bachsformer.score import annotated_musicxml

        Path(args.musicxml).write_bytes(annotated_musicxml(args.file, analysis))
        print(f"wrote {args.musicxml}")
    print(f"analysed in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    exit_on_user_error(main)
