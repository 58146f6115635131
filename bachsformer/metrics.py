"""How Bach-like is generated music? Set-level comparison after Yang & Lerch (2018).

"On the evaluation of generative models in music" compares a generated set of pieces with a
reference set feature by feature: compute a scalar feature per piece, smooth each set's values
into a density (Gaussian kernel density estimate) and report the area the two densities share,
1.0 when the sets are indistinguishable in that feature and 0.0 when they have nothing in common.

Everything here works on quarters, bool arrays [Q, 88, steps] (see `bachsformer.midi`), and is
pure numpy: no torch, no files. A note is a maximal run of set steps in one key row, counted over
the whole piece (`midi.quarters_to_notes`), so a note held across a quarter boundary is one note.

Definitions chosen here (all pieces must have at least one quarter):
- notes_per_quarter: note onsets / Q.
- polyphony: mean number of sounding keys over the steps where at least one key sounds (0 if silent).
- pitch_range: highest minus lowest MIDI pitch in semitones (0 if silent).
- scale_consistency: the largest fraction of note onsets whose pitch class lies in one major scale
  (over the 12 tonics; the natural minor scales are the same 12 sets) (0 if silent).
- top_voice_interval: the *top voice* is, at every step where some note starts, the highest pitch
  starting at that step; this is the mean absolute interval in semitones between successive
  top-voice pitches (0 with fewer than two onset steps). Onsets rather than sounding notes, so that
  a held high note does not hide the melody moving beneath it.
- max_polyphony: the most keys sounding at one step of the piece (a chorale has 4 voices).
- top_voice_leap: the *top line* is the highest sounding key at each step (the codec's one-step
  gap before a repeated note counted as sounding, so that a lower voice does not show through it);
  its notes are its runs of one pitch, split where that pitch starts again; this is the mean absolute
  interval in semitones between successive top-line notes, across rests (0 with fewer than two).
  Unlike top_voice_interval, a held soprano note stays the top line while lower voices move.
- long_notes: fraction of the notes a half note (two quarters) or longer (0 if silent).
- tied_notes: fraction of the notes that sound across a quarter boundary, held into the next
  quarter rather than struck again (0 if silent).
- silent_quarters: fraction of quarters with no key sounding.
- repetition: fraction of the Q - 1 neighbouring pairs of quarters that are identical (silent pairs
  included; 0 when Q < 2).
- pitch-class distance between sets: total variation distance, 0 ... 1, between the sets' mean
  pitch-class histograms (the mean over pieces that have notes).
- copying: the longest run of consecutive quarters found verbatim, up to one transposition, in one
  training piece; a run must hold at least one sounding quarter (agreeing on silence alone is not
  copying), and silent quarters inside or at the edges of such a run count toward its length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, key_range, quarters_to_notes

FEATURE_NAMES = (
    "notes_per_quarter",
    "polyphony",
    "pitch_range",
    "scale_consistency",
    "top_voice_interval",
    "silent_quarters",
    "repetition",
    "max_polyphony",
    "top_voice_leap",
    "long_notes",
    "tied_notes",
)
FIRST_NINE = FEATURE_NAMES[:9]  # the features before the note-length pair, to compare with evaluations made then
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)  # pitch classes above the tonic
KDE_GRID_MARGIN = 4.0  # bandwidths beyond the samples: the kernels' tails there hold < 1e-4
KDE_BANDWIDTH_FLOOR = 1e-2  # times the pooled standard deviation: constant samples still smooth
KDE_STEPS_PER_BANDWIDTH = 8  # grid resolution, relative to the narrowest kernel
KDE_MAX_GRID = 50_001
KDE_CHUNK = 4096  # grid points evaluated at once, to bound memory


def _check_piece(quarters: np.ndarray) -> np.ndarray:
    """quarters as a bool array [Q, 88, steps] with Q >= 1, or ValueError."""
    quarters = np.asarray(quarters, dtype=bool)
    if quarters.ndim != 3 or quarters.shape[1] != NUM_KEYS:
        raise ValueError(f"quarters must have shape [Q, {NUM_KEYS}, steps], got {quarters.shape}")
    if quarters.shape[0] == 0 or quarters.shape[2] == 0:
        raise ValueError(f"a piece needs at least one quarter and one step, got {quarters.shape}")
    return quarters


# --------------------------------------------------------------------------------------------
# Per-piece features


def pitch_class_histogram(quarters: np.ndarray) -> np.ndarray:
    """Pitch classes (0 = C) of the note onsets: float array [12] summing to 1 (all 0 if silent)."""
    pitches = quarters_to_notes(_check_piece(quarters))[:, 2]
    counts = np.bincount(pitches % 12, minlength=12).astype(np.float64)
    return counts / counts.sum() if counts.sum() else counts


def _major_scales() -> np.ndarray:
    """[12 tonics, 12 pitch classes]: row t marks the pitch classes of t major with 1.0."""
    in_scale = np.zeros((12, 12))
    for tonic in range(12):
        in_scale[tonic, [(tonic + step) % 12 for step in MAJOR_SCALE]] = 1.0
    return in_scale


IN_MAJOR_SCALE = _major_scales()


def scale_consistency(quarters: np.ndarray) -> float:
    """Largest fraction of note onsets inside one major (= natural minor) scale; 0 if silent."""
    return float((IN_MAJOR_SCALE @ pitch_class_histogram(quarters)).max())


def best_scale(quarters: np.ndarray) -> int:
    """Tonic (0 = C) of the major scale holding the most note onsets; the lowest tonic on a tie."""
    return int((IN_MAJOR_SCALE @ pitch_class_histogram(quarters)).argmax())


def onsets_in_scale(quarters: np.ndarray, tonic: int) -> tuple[int, int]:
    """(note onsets whose pitch class lies in the major scale on `tonic`, all note onsets)."""
    pitch_classes = quarters_to_notes(_check_piece(quarters))[:, 2] % 12
    return int(IN_MAJOR_SCALE[tonic % 12, pitch_classes].sum()), len(pitch_classes)


def top_voice_interval(quarters: np.ndarray) -> float:
    """Mean absolute interval (semitones) of the top voice; 0 with fewer than two onset steps.

    The top voice is, at each step where some note starts, the highest pitch starting there.
    """
    notes = quarters_to_notes(_check_piece(quarters))  # sorted by onset, then pitch
    if len(notes) == 0:
        return 0.0
    last_at_onset = np.append(notes[1:, 0] != notes[:-1, 0], True)  # highest pitch of each onset
    top = notes[last_at_onset, 2]
    return float(np.abs(np.diff(top)).mean()) if len(top) > 1 else 0.0


def _top_keys(roll: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps where something sounds, the top line's key at each, the roll one step later) of roll [88, T].

    The codec's one-step gap before a repeated note is no rest: a lower voice must not show through it.
    """
    before = np.zeros_like(roll)
    before[:, 1:] = roll[:, :-1]
    after = np.zeros_like(roll)
    after[:, :-1] = roll[:, 1:]
    filled = roll | (before & after)
    steps = np.nonzero(filled.any(axis=0))[0]
    return steps, NUM_KEYS - 1 - np.argmax(filled[::-1, steps], axis=0), before


def highest_line(quarters: np.ndarray) -> np.ndarray:
    """The top line of quarters [Q, 88, steps] and nothing else, as quarters (a repeat's gap kept)."""
    quarters = _check_piece(quarters)
    roll = quarters.transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, Q * steps]
    steps, top, _ = _top_keys(roll)
    line = np.zeros_like(roll)
    line[top, steps] = roll[top, steps]
    return np.ascontiguousarray(line.reshape(NUM_KEYS, len(quarters), -1).transpose(1, 0, 2))


def top_line(quarters: np.ndarray) -> np.ndarray:
    """Pitches of the top line's notes in order (see the module doc): int array [N]."""
    quarters = _check_piece(quarters)
    roll = quarters.transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, Q * steps]
    steps, top, before = _top_keys(roll)
    # a new top-line note: the first sounding step, a change of pitch, a rest before, or an onset of that key
    onset = roll[top, steps] & ~before[top, steps]
    new_note = np.ones(len(steps), dtype=bool)
    new_note[1:] = (top[1:] != top[:-1]) | (steps[1:] != steps[:-1] + 1) | onset[1:]
    return top[new_note] + LOWEST_PITCH


def top_voice_leap(quarters: np.ndarray) -> float:
    """Mean absolute interval (semitones) between successive notes of the top line; 0 with fewer than two."""
    pitches = top_line(quarters)
    return float(np.abs(np.diff(pitches)).mean()) if len(pitches) > 1 else 0.0


def piece_features(quarters: np.ndarray) -> dict[str, float]:
    """The scalar features of one piece [Q, 88, steps], keyed by `FEATURE_NAMES`."""
    quarters = _check_piece(quarters)
    num_quarters = quarters.shape[0]
    notes = quarters_to_notes(quarters)
    sounding = quarters.sum(axis=1)  # [Q, steps]: keys sounding at each step
    quarter_silent = ~quarters.reshape(num_quarters, -1).any(axis=1)
    if num_quarters > 1:
        flat = quarters.reshape(num_quarters, -1)
        repetition = float((flat[1:] == flat[:-1]).all(axis=1).mean())
    else:
        repetition = 0.0
    return {
        "notes_per_quarter": len(notes) / num_quarters,
        "polyphony": float(sounding[sounding > 0].mean()) if sounding.any() else 0.0,
        "pitch_range": float(np.ptp(notes[:, 2])) if len(notes) else 0.0,
        "scale_consistency": scale_consistency(quarters),
        "top_voice_interval": top_voice_interval(quarters),
        "silent_quarters": float(quarter_silent.mean()),
        "repetition": repetition,
        "max_polyphony": float(sounding.max()),
        "top_voice_leap": top_voice_leap(quarters),
        **note_lengths(notes, quarters.shape[2]),
    }


def note_lengths(notes: np.ndarray, steps_per_quarter: int) -> dict[str, float]:
    """long_notes and tied_notes (see the module doc) of notes [N, 3] (onset step, offset step, pitch)."""
    if not len(notes):
        return {"long_notes": 0.0, "tied_notes": 0.0}
    onset, offset = notes[:, 0], notes[:, 1]
    next_boundary = (onset // steps_per_quarter + 1) * steps_per_quarter
    return {
        "long_notes": float((offset - onset >= 2 * steps_per_quarter).mean()),
        "tied_notes": float((offset > next_boundary).mean()),
    }


# --------------------------------------------------------------------------------------------
# Comparing sets


def _scott_bandwidth(sample: np.ndarray, floor: float) -> float:
    """Scott's rule for one dimension, std * n^(-1/5) (as scipy's gaussian_kde), at least `floor`."""
    std = sample.std(ddof=1) if len(sample) > 1 else 0.0
    return max(float(std) * len(sample) ** -0.2, floor)


def _kde(sample: np.ndarray, bandwidth: float, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density estimate of `sample` at the points of `grid`."""
    density = np.empty_like(grid)
    norm = 1.0 / (len(sample) * bandwidth * np.sqrt(2.0 * np.pi))
    for start in range(0, len(grid), KDE_CHUNK):
        z = (grid[start : start + KDE_CHUNK, None] - sample[None, :]) / bandwidth  # [chunk, n]
        density[start : start + KDE_CHUNK] = np.exp(-0.5 * z * z).sum(axis=1) * norm
    return density


def overlapping_area(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Area shared by the Gaussian kernel density estimates of two 1-D samples, 0 ... 1.

    Bandwidths by Scott's rule, each at least 1 % of the pooled standard deviation (so constant
    samples work; two identical constants give 1). The integral of min(kde_a, kde_b) is summed on
    a uniform grid spanning both samples plus 4 bandwidths, fine enough for the narrower kernel.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if len(a) == 0 or len(b) == 0:
        raise ValueError("overlapping_area needs two non-empty samples")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("overlapping_area needs finite values")
    pooled = np.concatenate([a, b])
    # the floor scales with the data, so the result does not depend on the feature's unit
    scale = float(pooled.std()) or max(float(np.abs(pooled).max()), 1.0)
    floor = KDE_BANDWIDTH_FLOOR * scale
    bandwidth_a, bandwidth_b = _scott_bandwidth(a, floor), _scott_bandwidth(b, floor)
    margin = KDE_GRID_MARGIN * max(bandwidth_a, bandwidth_b)
    low, high = pooled.min() - margin, pooled.max() + margin
    spacing = min(bandwidth_a, bandwidth_b) / KDE_STEPS_PER_BANDWIDTH
    num_points = int(min(np.ceil((high - low) / spacing) + 1, KDE_MAX_GRID))
    grid, step = np.linspace(low, high, num_points, retstep=True)
    overlap = np.minimum(_kde(a, bandwidth_a, grid), _kde(b, bandwidth_b, grid))
    return float(min(overlap.sum() * step, 1.0))


def mean_pitch_class_histogram(pieces: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the pieces' pitch-class histograms [12], over pieces with notes (all 0 if none)."""
    histograms = [pitch_class_histogram(piece) for piece in pieces]
    histograms = [h for h in histograms if h.sum() > 0]
    return np.mean(histograms, axis=0) if histograms else np.zeros(12)


def pitch_class_distance(histogram_a: np.ndarray, histogram_b: np.ndarray) -> float:
    """Total variation distance, 0 ... 1, between two pitch-class histograms [12].

    Half the sum of absolute differences: the share of probability mass that would have to move.
    An all-zero histogram (no notes) is at distance 1 from any other, and 0 from another such.
    """
    a = np.asarray(histogram_a, dtype=np.float64)
    b = np.asarray(histogram_b, dtype=np.float64)
    if a.shape != (12,) or b.shape != (12,):
        raise ValueError(f"pitch-class histograms must have shape (12,), got {a.shape}, {b.shape}")
    if a.sum() == 0 or b.sum() == 0:
        return float(a.sum() != b.sum())
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def compare(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> dict:
    """Compare a set of generated pieces with a reference set (e.g. held-out Bach).

    Returns a plain, JSON-ready dict: the set sizes; per-feature overlapping areas and their mean;
    the total variation distance between the mean pitch-class histograms; and each set's
    per-feature means.
    """
    if not generated or not reference:
        raise ValueError("compare needs at least one generated and one reference piece")
    generated_features = [piece_features(piece) for piece in generated]
    reference_features = [piece_features(piece) for piece in reference]
    areas = {
        name: overlapping_area([f[name] for f in generated_features], [f[name] for f in reference_features])
        for name in FEATURE_NAMES
    }
    return {
        "num_generated": len(generated),
        "num_reference": len(reference),
        "overlapping_area": areas,
        "mean_overlapping_area": float(np.mean(list(areas.values()))),
        # without the features added later, to compare with evaluations made before them
        "mean_overlapping_area_of_first_seven": float(np.mean([areas[name] for name in FEATURE_NAMES[:7]])),
        "mean_overlapping_area_of_first_nine": float(np.mean([areas[name] for name in FIRST_NINE])),
        "pitch_class_distance": pitch_class_distance(
            mean_pitch_class_histogram(generated), mean_pitch_class_histogram(reference)
        ),
        "generated_mean": {name: float(np.mean([f[name] for f in generated_features])) for name in FEATURE_NAMES},
        "reference_mean": {name: float(np.mean([f[name] for f in reference_features])) for name in FEATURE_NAMES},
    }


def grid_shares(pieces: Sequence[np.ndarray], grid: int) -> dict:
    """How the notes of pieces [Q, 88, steps] sit on a grid of `grid` steps, pooled over the pieces.

    off_grid: the share of notes whose onset or end is off the grid (an end one step before a
    grid point counts as on it when the key is struck again there: the codec's repeat gap);
    shorter_than_grid: the share shorter than one grid cell; max_keys: the most keys sounding at
    one step of any piece.
    """
    notes_total = off = short = most = 0
    for quarters in pieces:
        quarters = _check_piece(quarters)
        notes = quarters_to_notes(quarters)
        onset_keys = {(int(onset), int(pitch)) for onset, _, pitch in notes.tolist()}
        ends = np.array([end + 1 if (end + 1, pitch) in onset_keys else end for _, end, pitch in notes.tolist()])
        ends = ends.reshape(-1).astype(np.int64)
        off += int(((notes[:, 0] % grid != 0) | (ends % grid != 0)).sum())
        short += int((ends - notes[:, 0] < grid).sum())
        notes_total += len(notes)
        most = max(most, int(quarters.sum(axis=1).max()))
    return {
        "notes": notes_total,
        "off_grid": off / max(notes_total, 1),
        "shorter_than_grid": short / max(notes_total, 1),
        "max_keys": most,
    }


# --------------------------------------------------------------------------------------------
# Copying


def _quarter_keys(quarters: np.ndarray) -> list[bytes]:
    """One hashable key per quarter: its packed bits."""
    return [row.tobytes() for row in np.packbits(quarters.reshape(len(quarters), -1), axis=1)]


def _build_index(training_pieces: Sequence[np.ndarray]) -> dict[bytes, list[tuple[int, int]]]:
    """Quarter key -> every (training piece, quarter index) holding that exact quarter."""
    index: dict[bytes, list[tuple[int, int]]] = {}
    for piece_index, piece in enumerate(training_pieces):
        for quarter_index, key in enumerate(_quarter_keys(_check_piece(piece))):
            index.setdefault(key, []).append((piece_index, quarter_index))
    return index


def _longest_run(piece: np.ndarray, index: dict[bytes, list[tuple[int, int]]], max_shift: int) -> int:
    """`longest_verbatim_run` of one checked piece against a built index."""
    lowest, highest = key_range(piece)  # silent quarters get bounds any shift satisfies
    quarter_sounds = highest >= 0
    best = 0
    for shift in range(-max_shift, max_shift + 1):
        # piece transposed by `shift` is compared with the training quarters as they are
        fits = (lowest + shift >= 0) & (highest + shift < NUM_KEYS)
        keys = _quarter_keys(np.roll(piece, shift, axis=1))
        # (training piece, index of its quarter matching the current one) -> (run length, sounds)
        runs: dict[tuple[int, int], tuple[int, bool]] = {}
        for quarter, key in enumerate(keys):
            extended: dict[tuple[int, int], tuple[int, bool]] = {}
            if fits[quarter]:
                for piece_index, quarter_index in index.get(key, ()):
                    length, sounds = runs.get((piece_index, quarter_index - 1), (0, False))
                    length, sounds = length + 1, sounds or bool(quarter_sounds[quarter])
                    extended[(piece_index, quarter_index)] = (length, sounds)
                    if sounds:
                        best = max(best, length)
            runs = extended
    return best


def longest_verbatim_runs(
    pieces: Sequence[np.ndarray], training_pieces: Sequence[np.ndarray], max_shift: int = 12
) -> list[int]:
    """`longest_verbatim_run` of each piece, indexing the training pieces once for all of them."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    index = _build_index(training_pieces)
    return [_longest_run(_check_piece(piece), index, max_shift) for piece in pieces]


def longest_verbatim_run(piece: np.ndarray, training_pieces: Sequence[np.ndarray], max_shift: int = 12) -> int:
    """Longest run of consecutive quarters of `piece` found verbatim in one training piece.

    Verbatim up to one transposition: the whole run shifted by the same number of semitones,
    |shift| <= max_shift, with no note leaving the 88 keys. A run needs at least one sounding
    quarter (0 if nothing matches); silent quarters within it count toward its length.
    """
    return longest_verbatim_runs([piece], training_pieces, max_shift)[0]


# --------------------------------------------------------------------------------------------
# The top line and the ending (docs/design.md, Evaluation)
# --------------------------------------------------------------------------------------------


def top_line_features(quarters: np.ndarray) -> dict:
    """The tune of a piece [Q, 88, steps], read as its top line: mean leap (semitones), range
    (semitones), the share of its intervals that are steps (one or two semitones), and the mean
    phrase length in quarters (a phrase ends on a note followed by the next only after a half note
    or more, or at the last note)."""
    quarters = _check_piece(quarters)
    pitches = top_line(quarters)
    intervals = np.abs(np.diff(pitches))
    line = highest_line(quarters).transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, T]
    before = np.zeros_like(line)
    before[:, 1:] = line[:, :-1]
    onsets = np.flatnonzero((line & ~before).any(axis=0))
    half = 2 * quarters.shape[2]
    phrases = 1 + sum(int(b - a >= half) for a, b in zip(onsets, onsets[1:]))
    return {
        "leap": float(intervals.mean()) if len(intervals) else 0.0,
        "range": float(pitches.max() - pitches.min()) if len(pitches) else 0.0,
        "steps": float(np.isin(intervals, (1, 2)).mean()) if len(intervals) else 0.0,
        "phrase_quarters": len(quarters) / phrases,
    }


def ending(quarters: np.ndarray, tonic: int) -> dict:
    """How a piece [Q, 88, steps] ends: how long (quarters) its final chord has sounded unchanged
    (from the last onset among the notes sounding at its last step), and whether its lowest note
    there is the `tonic` pitch class (0 = C)."""
    quarters = _check_piece(quarters)
    notes = quarters_to_notes(quarters)  # [N, 3]: onset, offset, key
    if not len(notes):
        return {"final_chord_quarters": 0.0, "bass_on_tonic": False}
    end = int(notes[:, 1].max())
    last = notes[notes[:, 1] == end]
    held = end - int(last[:, 0].max())
    bass = int(last[:, 2].min())  # a MIDI pitch
    return {"final_chord_quarters": held / quarters.shape[2], "bass_on_tonic": bass % 12 == tonic % 12}
