"""The analyzer against human analyses, beat by beat, beside music21's one-line approach; and its speed.

    python -m benchmarks.analysis            # the 20 Riemenschneider chorales with analyses in music21's corpus
    python -m benchmarks.analysis --files 5  # the first five
    python -m benchmarks.analysis --halves   # the key constants chosen on each half, scored on the other

music21's corpus holds 20 Roman-numeral analyses (`bach/choraleAnalyses/riemenschneider001.rntxt` ...
`020`, RomanText by Tymoczko and others); each names its chorale's BWV number, found in the corpus as
`bach/bwv<number>`. On every quarter-note beat of the chorale (from its first beat, the pickup included)
the human label in force is compared with:
- ours: `bachsformer.analyze` on the score's parts;
- naive: the score chordified, one key for the whole piece (`score.analyze('key')`), and
  `roman.romanNumeralFromChord` of the chord sounding at the beat;
- naive chords in the true key: the same chords named in the human analysis's key.
Scores, as the share of beats right: key (tonic and mode); root (pitch class); root and quality (the
triad's quality: major, minor, diminished, augmented); full figure (the key, and the chord's root, bass
and pitch classes: inversion and seventh included, whatever the spelling: V7/V and II#7 are one chord).

--halves checks that the key constants generalize: the chorales are split into two halves (every
other one), the 27 combinations of smoothing (1, 1.5, 2 beats), change cost (2, 3, 4) and profile
weight (4, 6, 8) are scored on each half, and the best on one half is scored on the other, beside the
shipped constants.

Speed: the longest chorale of the corpus with four parts cut or repeated to 50 bars of 4/4, written to
a MusicXML file, analysed end to end by `python -m bachsformer.analyze` in a fresh process on one thread
(best of three; music21's import and the score's parsing included).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import bachsformer.analyze as analyzer
from bachsformer.analyze import analyze, music_from_score, parse_key_name

MEASURES = ("key", "root", "root_quality", "figure")


def chorale_pairs(limit: int | None = None) -> list[tuple[str, str]]:
    """(analysis corpus path, score corpus path) of the Riemenschneider analyses."""
    from music21 import corpus

    pairs = []
    for path in sorted(p for p in corpus.getPaths() if "choraleAnalyses" in str(p)):
        bwv = re.search(r"BWV: *(\S+)", Path(path).read_text()).group(1)
        bwv = bwv.replace("(2)", "").rstrip("s")
        stem = bwv if "." in bwv else bwv
        names = [f"bach/bwv{stem}", f"bach/bwv{stem.replace('.', '.', 1)}-2"]
        for name in names:
            if corpus.getWork(name.split("/")[-1]):
                pairs.append((str(path), name))
                break
        else:
            if bwv == "248.12":
                pairs.append((str(path), "bach/bwv248.12-2"))
    return pairs[:limit]


def labels(chord) -> dict:
    """The compared facts of a music21 RomanNumeral."""
    return {
        "key": (chord.key.tonic.pitchClass, chord.key.mode),
        "root": chord.root().pitchClass,
        "quality": chord.quality,
        "bass": chord.bass().pitchClass,
        "classes": frozenset(chord.pitchClasses),
    }


def ours_labels(chord) -> dict:
    tonic, mode = parse_key_name(chord.key)
    return {
        "key": (tonic, mode),
        "root": chord.root,
        "quality": chord.quality,
        "bass": chord.bass,
        "classes": frozenset(chord.pitch_classes),
    }


def right(label: dict, truth: dict) -> dict:
    root = label["root"] == truth["root"]
    return {
        "key": label["key"] == truth["key"],
        "root": root,
        "root_quality": root and label["quality"] == truth["quality"],
        "figure": label["key"] == truth["key"]
        and root
        and label["bass"] == truth["bass"]
        and label["classes"] == truth["classes"],
    }


def at_beats(numerals, num_beats: int) -> list:
    """The numeral in force at each beat 0 ... num_beats - 1 (None before the first)."""
    found, index = [], -1
    for beat in range(num_beats):
        while index + 1 < len(numerals) and numerals[index + 1][0] <= beat + 1e-6:
            index += 1
        found.append(numerals[index][1] if index >= 0 else None)
    return found


def naive(score, num_beats: int, true_keys: list) -> tuple[list, list]:
    """music21's one-line approach at each beat, in one global key and in the true keys."""
    from music21 import roman

    key = score.analyze("key")
    chords = score.chordify().flatten().notes
    sounding = at_beats([(float(c.offset), c) for c in chords], num_beats)
    global_key, true_key = [], []
    for chord, truth in zip(sounding, true_keys):
        if chord is None:
            global_key.append(None)
            true_key.append(None)
            continue
        global_key.append(labels(roman.romanNumeralFromChord(chord, key)))
        true_key.append(labels(roman.romanNumeralFromChord(chord, truth)) if truth is not None else None)
    return global_key, true_key


def score_chorale(analysis_path: str, score_name: str) -> dict:
    """Beats right per method and measure, with the number of beats compared."""
    import music21
    from music21 import converter, corpus, roman

    truth_stream = converter.parse(analysis_path, format="romanText")
    score = corpus.parse(score_name)
    numerals = [
        (float(r.getOffsetInHierarchy(truth_stream)), r)
        for r in truth_stream.recurse().getElementsByClass(roman.RomanNumeral)
    ]
    if abs(float(score.highestTime) - float(truth_stream.highestTime)) > 1:
        return {"skipped": f"the score is {score.highestTime:g} quarters, the analysis {truth_stream.highestTime:g}"}
    num_beats = int(np.ceil(float(score.highestTime)))
    truth = at_beats(numerals, num_beats)
    shift = transposition(score, truth)
    if shift:  # the analysis is of the chorale in another key: moved to the score's
        interval = music21.interval.Interval(shift if shift <= 6 else shift - 12)
        moved = {}
        truth = [moved.setdefault(id(t), transposed(t, interval)) if t is not None else None for t in truth]
    ours = {int(chord.offset): chord for chord in analyze(music_from_score(score)).chords}
    simple, in_true_key = naive(score, num_beats, [t.key if t is not None else None for t in truth])
    counts = {method: dict.fromkeys(MEASURES, 0) for method in ("ours", "naive", "naive_true_key")}
    beats = 0
    for beat, true in enumerate(truth):
        if true is None:
            continue
        beats += 1
        facts = labels(true)
        for method, label in (
            ("ours", ours_labels(ours[beat]) if beat in ours else None),
            ("naive", simple[beat]),
            ("naive_true_key", in_true_key[beat]),
        ):
            if label is None:
                continue
            for measure, ok in right(label, facts).items():
                counts[method][measure] += ok
    return {"beats": beats, "shift": shift, **counts}


def transposition(score, truth: list) -> int:
    """The semitones (0 ... 11) that move the analysis's chords onto the notes sounding at its beats best."""
    sounding = [set() for _ in truth]
    for note in score.flatten().notes:
        start, end = float(note.offset), float(note.offset + note.duration.quarterLength)
        for beat in range(int(np.floor(start)), min(int(np.ceil(end)), len(truth))):
            sounding[beat] |= {p.pitchClass for p in note.pitches}
    fits = [
        sum(
            len({(c + shift) % 12 for c in t.pitchClasses} & heard)
            for t, heard in zip(truth, sounding)
            if t is not None
        )
        for shift in range(12)
    ]
    return int(np.argmax(fits))


def transposed(numeral, interval):
    """A RomanNumeral moved by a music21 interval, its key moved with it."""
    from music21 import roman

    key = numeral.key.transpose(interval)
    return roman.RomanNumeral(numeral.figure, key)


def labelled_chorales() -> list[tuple]:
    """(name, Music, the human labels at each beat) of every usable chorale, parsed once."""
    import music21
    from music21 import converter, corpus, roman

    chorales = []
    for analysis_path, score_name in chorale_pairs():
        truth_stream = converter.parse(analysis_path, format="romanText")
        score = corpus.parse(score_name)
        if abs(float(score.highestTime) - float(truth_stream.highestTime)) > 1:
            continue
        numerals = [
            (float(r.getOffsetInHierarchy(truth_stream)), r)
            for r in truth_stream.recurse().getElementsByClass(roman.RomanNumeral)
        ]
        truth = at_beats(numerals, int(np.ceil(float(score.highestTime))))
        shift = transposition(score, truth)
        if shift:
            interval = music21.interval.Interval(shift if shift <= 6 else shift - 12)
            moved = {}
            truth = [moved.setdefault(id(t), transposed(t, interval)) if t is not None else None for t in truth]
        labels_at = [labels(t) if t is not None else None for t in truth]
        chorales.append((Path(analysis_path).stem, music_from_score(score), labels_at))
    return chorales


def key_and_figure(chorales: list[tuple]) -> tuple[float, float]:
    """The shares of beats whose key, and whose full figure, the analyzer names right."""
    right_key = right_figure = beats = 0
    for _, music, truth in chorales:
        chords = {int(chord.offset): chord for chord in analyze(music).chords}
        for beat, true in enumerate(truth):
            if true is None:
                continue
            found = right(ours_labels(chords[beat]), true) if beat in chords else dict.fromkeys(MEASURES, False)
            beats += 1
            right_key += found["key"]
            right_figure += found["figure"]
    return right_key / beats, right_figure / beats


def set_key_constants(smoothing: float, change_cost: float, profile_weight: float) -> None:
    analyzer.KEY_SMOOTHING_BEATS, analyzer.PROFILE_WEIGHT = smoothing, profile_weight
    analyzer.KEY_TRANSITIONS = analyzer.key_transitions(change_cost, analyzer.KEY_DISTANCE_COST)


def halves() -> None:
    chorales = labelled_chorales()
    parts = (chorales[0::2], chorales[1::2])
    shipped = (analyzer.KEY_SMOOTHING_BEATS, analyzer.KEY_CHANGE_COST, analyzer.PROFILE_WEIGHT)
    grid = [(s, c, w) for s in (1.0, 1.5, 2.0) for c in (2.0, 3.0, 4.0) for w in (4.0, 6.0, 8.0)]
    scores = {}
    for constants in grid:
        set_key_constants(*constants)
        scores[constants] = [key_and_figure(part) for part in parts]
    set_key_constants(*shipped)
    print("| chosen on | smoothing, change cost, profile weight | key there | key, figure on the other half |")
    print("|---|---|---|---|")
    for half in (0, 1):
        best = max(grid, key=lambda constants: scores[constants][half][0])
        other = scores[best][1 - half]
        print(
            f"| half {half + 1} ({len(parts[half])} chorales) | {best} | {scores[best][half][0]:.3f}"
            f" | {other[0]:.3f}, {other[1]:.3f} |"
        )
    for half in (0, 1):
        key, figure = scores[shipped][half] if shipped in scores else (float("nan"), float("nan"))
        print(f"shipped {shipped} on half {half + 1}: key {key:.3f}, figure {figure:.3f}")


def fifty_bar_file(folder: Path) -> Path:
    """A four-part chorale 50 bars of 4/4 long, as MusicXML: bwv267 repeated and cut."""
    from music21 import corpus, stream

    source = corpus.parse("bach/bwv267")
    score = stream.Score()
    for part in source.parts:
        measures = list(part.getElementsByClass(stream.Measure))[1:]  # the pickup left out
        new = stream.Part(id=part.id)
        new.partName = part.partName
        number = 0
        while number < 50:
            for measure in measures:
                if number >= 50 or measure.duration.quarterLength != 4:
                    continue
                copy = measure.__deepcopy__()
                copy.number = number + 1
                new.append(copy)
                number += 1
        score.insert(0, new)
    path = folder / "fifty_bars.musicxml"
    score.write("musicxml", fp=str(path))
    return path


def time_fifty_bars() -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        path = fifty_bar_file(Path(folder))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        times = []
        for _ in range(3):
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "bachsformer.analyze", str(path)], env=env, capture_output=True, text=True
            )
            times.append(time.perf_counter() - started)
            if result.returncode:
                raise SystemExit(result.stderr)
        beats = sum(1 for line in result.stdout.splitlines() if line.startswith("| ") and line[2].isdigit())
        return min(times), beats


def shift_note(shift: int) -> str:
    return f", analysis moved {shift if shift <= 6 else shift - 12:+d}" if shift else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, help="only the first N chorales")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--halves", action="store_true", help="the key constants chosen on each half, on the other")
    args = parser.parse_args()
    if args.halves:
        halves()
        return
    totals = {method: dict.fromkeys(MEASURES, 0) for method in ("ours", "naive", "naive_true_key")}
    beats, skipped = 0, []
    print("| chorale | beats | ours: key | root | root+quality | figure | naive: key | figure |")
    print("|---|---|---|---|---|---|---|---|")
    for analysis_path, score_name in chorale_pairs(args.files):
        counts = score_chorale(analysis_path, score_name)
        if "skipped" in counts:
            skipped.append(f"{Path(analysis_path).stem} ({score_name.split('/')[-1]}): {counts['skipped']}")
            continue
        beats += counts["beats"]
        for method in totals:
            for measure in MEASURES:
                totals[method][measure] += counts[method][measure]
        share = {m: {k: v / counts["beats"] for k, v in counts[m].items()} for m in totals}
        print(
            f"| {Path(analysis_path).stem} ({score_name.split('/')[-1]}{shift_note(counts['shift'])})"
            f" | {counts['beats']}"
            f" | {share['ours']['key']:.2f} | {share['ours']['root']:.2f} | {share['ours']['root_quality']:.2f}"
            f" | {share['ours']['figure']:.2f} | {share['naive']['key']:.2f} | {share['naive']['figure']:.2f} |"
        )
    for line in skipped:
        print(f"left out: {line}")
    print(f"\n{beats} beats, share right:")
    print("| method | key | root | root+quality | full figure |")
    print("|---|---|---|---|---|")
    names = {"ours": "bachsformer.analyze", "naive": "naive (one key)", "naive_true_key": "naive chords, true key"}
    for method, name in names.items():
        row = " | ".join(f"{totals[method][m] / beats:.3f}" for m in MEASURES)
        print(f"| {name} | {row} |")
    if not args.no_timing:
        seconds, analysed = time_fifty_bars()
        print(f"\n50 bars of 4/4 ({analysed} beats), end to end on one thread: {seconds:.2f} s (best of three)")


if __name__ == "__main__":
    main()
