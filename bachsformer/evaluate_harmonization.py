"""How well does bachsformer harmonize a chorale tune? `python -m bachsformer.evaluate --harmonize`.

The Soprano track of every held-out chorale is harmonized, and the result compared with Bach's own
harmonization of the same tune (the file's Alto, Tenor and Bass tracks):
- lower_voice_overlap: per quarter, the Jaccard overlap of the pitch classes the lower voices sound
  (everything but the melody) with the pitch classes Bach's lower voices sound; mean over the
  quarters where either sounds.
- voices_per_quarter: the most keys sounding at once in a quarter, mean over sounding quarters.
- scale_consistency: as in `metrics` (onsets in the best major / natural minor scale).
- bass_leap: mean absolute interval between successive notes of the bass line (the lowest
  sounding key, note by note, as `metrics.top_line` follows the highest).
- melody_kept: files whose output holds every melody note at its pitch, onset and length with
  nothing sounding above it (it must be all of them); of four voices, read on the voices
  (`soprano_kept`): the Soprano is the melody and no voice sounds above it.
- parallels: parallel fifths and octaves between the melody and the bass (the lowest sounding key
  below it), per 100 eighth notes where both sound: at successive eighth notes both voices move
  the same way and the interval is a fifth both times, or an octave (unison) both times.
- consonance: of the beats (a quarter's first step) where the melody and a bass below it sound,
  the share whose interval is consonant against the bass: unison or octave, third, fifth, sixth.

`--melodies FOLDER` harmonizes every tune in a folder instead (`melody_endings`), such as the folk
tunes of data/tunes/folk, which have no harmonization of Bach's to compare with: it reports how
each harmonization ends, in the key heard from its four voices, and the key of the tune alone.

The model harmonizes as `generate.py --melody` does. Beside it, the parts of the method one at a
time: one candidate per quarter drawn hearing the melody (the condition alone), candidates drawn
without hearing it (choosing among unconditioned samples by how they fit the tune), and one
candidate without it. Two references: the diatonic triad on each melody note in the tune's
estimated key, voiced in three parts below it (a rule a first-year student would apply), and the
VQ-VAE oracle, Bach's own chorale through the codes (key-normalized, encoded, decoded, the melody
imposed as the model's harmonizations have it): the ceiling of what the codes can carry.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from bachsformer.analyze import harmony_statistics, music_from_voices, print_harmony
from bachsformer.compose import decode_voices, load_models
from bachsformer.data import load_corpus, midi_files, split
from bachsformer.endings import piece_ending, print_endings, summarize_endings, voices_key
from bachsformer.harmonize import GuideError, harmonize, piece_roll, read_melody, with_tune
from bachsformer.keys import Key, estimate_key, normalizing_shift
from bachsformer.metrics import grid_shares, scale_consistency, top_line
from bachsformer.midi import (
    LOWEST_PITCH,
    NUM_KEYS,
    STEPS_PER_QUARTER,
    MidiError,
    quarters_to_notes,
    read_fermatas,
    read_midi_tracks,
)
from bachsformer.render import write_rolls_png
from bachsformer.rules import RULE_NAMES, four_part_scores, voice_figures
from bachsformer.voices import VOICE_NAMES, Voices, read_voices, restore_repeats
from bachsformer.voicing import grid_steps

MELODY_TRACK = "Soprano"
LOWER_TRACKS = ("Alto", "Tenor", "Bass")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 11)  # harmonic minor: the dominant is major, as in Bach's cadences
BASS_RANGE = (40, 60)  # E2 ... C4, where a chorale bass lives
SYSTEMS = (
    "model",
    "one candidate",
    "melody not heard",
    "one candidate, melody not heard",
    "triad rule",
    "VQ-VAE oracle",
)
MODEL_SYSTEMS = {  # system: (candidates: the options' or one, the transformer hears the melody)
    "model": (True, True),
    "one candidate": (False, True),
    "melody not heard": (True, False),
    "one candidate, melody not heard": (False, False),
}
EIGHTH = 2  # eighth notes per quarter
PERFECT = (0, 7)  # interval classes of octaves (unisons) and fifths
CONSONANT = (0, 3, 4, 7, 8, 9)  # against the bass: the fourth is a dissonance


def chorale_voices(path) -> tuple[np.ndarray, np.ndarray] | None:
    """(soprano, lower voices) of a chorale file as quarters [Q, 88, 32] on one grid; None without them."""
    tracks = read_midi_tracks(path)
    soprano = next((t.quarters for t in tracks if t.name == MELODY_TRACK and t.quarters.any()), None)
    lower = [t.quarters for t in tracks if t.name in LOWER_TRACKS]
    if soprano is None or not lower:
        return None
    return soprano, np.logical_or.reduce(lower)


def chorale_parts(path) -> list[np.ndarray]:
    """A chorale's Soprano, Alto, Tenor and Bass tracks as quarters [Q, 88, 32] on one grid (silent where missing)."""
    tracks = read_midi_tracks(path)
    silent = np.zeros_like(tracks[0].quarters)
    return [next((t.quarters for t in tracks if t.name == name and t.quarters.any()), silent) for name in VOICE_NAMES]


def triad_harmonization(melody: np.ndarray, key: Key) -> Voices:
    """Melody quarters [Q, 88, S] as the Soprano of four voices, the diatonic triad on each melody note below it.

    The triad is built in thirds of the key's scale (harmonic minor in minor) on the melody note's
    degree; a note outside the scale gets the major triad on it. Alto and tenor take the nearest
    chord tones below the melody and below the alto; the bass the chord's root in E2 ... C4.
    """
    scale = np.array(MAJOR_SCALE if key.mode == "major" else MINOR_SCALE)
    soprano = restore_repeats(quarters_to_notes(melody))
    lower: list[list[list[int]]] = [[], [], []]
    for onset, offset, pitch in soprano.tolist():
        degree = (pitch - key.tonic) % 12
        if degree in scale:
            index = int(np.nonzero(scale == degree)[0][0])
            chord = {(key.tonic + int(scale[(index + step) % 7])) % 12 for step in (0, 2, 4)}
        else:
            chord = {pitch % 12, (pitch + 4) % 12, (pitch + 7) % 12}
        alto = next(p for p in range(pitch - 1, pitch - 13, -1) if p % 12 in chord)
        tenor = next(p for p in range(alto - 1, alto - 13, -1) if p % 12 in chord)
        bass = next(p for p in range(min(tenor - 1, BASS_RANGE[1]), BASS_RANGE[0] - 13, -1) if p % 12 == pitch % 12)
        for notes, part in zip(lower, (alto, tenor, bass)):
            if 0 <= part - LOWEST_PITCH < NUM_KEYS:
                notes.append([onset, offset, part])
    parts = tuple(np.array(notes, dtype=np.int64).reshape(-1, 3) for notes in lower)
    return Voices((soprano, *parts), len(melody), melody.shape[2])


def melody_kept(music: np.ndarray, melody: np.ndarray) -> bool:
    """Every note of melody [Q, 88, S] is a note of music [Q, 88, S], and nothing sounds above it."""
    melody_notes = {tuple(n) for n in quarters_to_notes(melody).tolist()}
    if not melody_notes <= {tuple(n) for n in quarters_to_notes(music).tolist()}:
        return False
    music_roll, melody_roll = piece_roll(music), piece_roll(melody)
    steps = np.nonzero(melody_roll.any(axis=0))[0]
    highest = NUM_KEYS - 1 - np.argmax(music_roll[::-1, steps], axis=0)
    return bool(np.array_equal(highest, np.argmax(melody_roll[:, steps], axis=0)))


def soprano_kept(voices: Voices, melody: np.ndarray) -> bool:
    """The Soprano of `voices` is melody [Q, 88, S] note for note (its repeats whole) and no voice sounds above it.

    Read on the voices, not their union: a lower voice striking the melody's key while the melody holds it
    (a unison) leaves the melody whole in its track, where the union sounds the key struck again.
    """
    if voices.notes[0].tolist() != restore_repeats(quarters_to_notes(melody)).tolist():
        return False
    music_roll, melody_roll = piece_roll(voices.quarters()), piece_roll(melody)
    steps = np.nonzero(melody_roll.any(axis=0))[0]
    sounding = music_roll[:, steps].any(axis=0)  # not at the step the union strikes the melody's key again
    highest = np.where(sounding, NUM_KEYS - 1 - np.argmax(music_roll[::-1, steps], axis=0), -1)
    return bool((highest <= np.argmax(melody_roll[:, steps], axis=0)).all())


def pitch_classes_per_quarter(quarters: np.ndarray) -> np.ndarray:
    """Which pitch classes sound in each quarter [Q, 88, S]: bool [Q, 12]."""
    sounding = quarters.any(axis=2)  # [Q, 88]
    classes = np.zeros((len(quarters), 12), dtype=bool)
    for pitch_class in range(12):
        classes[:, pitch_class] = sounding[:, (np.arange(NUM_KEYS) + LOWEST_PITCH) % 12 == pitch_class].any(axis=1)
    return classes


def bass_leap(quarters: np.ndarray) -> float:
    """Mean absolute interval (semitones) between successive notes of the bass line; 0 with fewer than two."""
    flipped = top_line(quarters[:, ::-1])  # the lowest key is the highest of the flipped roll
    pitches = 2 * LOWEST_PITCH + NUM_KEYS - 1 - flipped
    return float(np.abs(np.diff(pitches)).mean()) if len(pitches) > 1 else 0.0


def melody_and_bass(music: np.ndarray, melody: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The melody's key and the bass's (the lowest key sounding below it) at each step.

    Two int arrays [T], -1 at the steps where the melody or a bass below it does not sound.
    """
    roll, melody_roll = piece_roll(music), piece_roll(melody)
    top = np.where(melody_roll.any(axis=0), np.argmax(melody_roll, axis=0), -1)
    lowest = np.where(roll.any(axis=0), np.argmax(roll, axis=0), NUM_KEYS)
    bass = np.where((top >= 0) & (lowest < top), lowest, -1)
    return np.where(bass >= 0, top, -1), bass


def voice_leading(music: np.ndarray, melody: np.ndarray) -> dict:
    """Counts for `parallels` and `consonance` (see the module doc) of music [Q, 88, S] with its melody."""
    top, bass = melody_and_bass(music, melody)
    steps = music.shape[2]
    eighths = np.arange(0, len(top), steps // EIGHTH)
    top_e, bass_e = top[eighths], bass[eighths]
    both = bass_e >= 0
    interval = (top_e - bass_e) % 12
    perfect = both & np.isin(interval, PERFECT)
    moves = np.sign(np.diff(top_e)) * np.sign(np.diff(bass_e))  # 1: both move, the same way
    parallel = perfect[1:] & perfect[:-1] & (interval[1:] == interval[:-1]) & (moves > 0)
    beats = np.arange(0, len(top), steps)
    on_beat = bass[beats] >= 0
    consonant = on_beat & np.isin((top[beats] - bass[beats]) % 12, CONSONANT)
    return {
        "eighths_together": int(both.sum()),
        "parallels": int(parallel.sum()),
        "beats_together": int(on_beat.sum()),
        "consonant_beats": int(consonant.sum()),
    }


def bass_pitch(quarters: np.ndarray) -> float:
    """Mean MIDI pitch of the bass line (the lowest sounding key, note by note); 0 when silent."""
    flipped = top_line(quarters[:, ::-1])
    return float((2 * LOWEST_PITCH + NUM_KEYS - 1 - flipped).mean()) if len(flipped) else 0.0


def harmony_scores(music: np.ndarray, melody: np.ndarray, bach_lower: np.ndarray) -> dict:
    """The module's measures of one harmonization against Bach's lower voices (all [Q, 88, S])."""
    ours = pitch_classes_per_quarter(music & ~melody)
    bach = pitch_classes_per_quarter(bach_lower)
    union = (ours | bach).sum(axis=1)
    shared = (ours & bach).sum(axis=1)
    voices = music.sum(axis=1).max(axis=1)  # [Q]: most keys at once in each quarter
    return {
        "overlap_sum": float((shared[union > 0] / union[union > 0]).sum()),
        "overlap_quarters": int((union > 0).sum()),
        "voices_per_quarter": float(voices[voices > 0].mean()) if voices.any() else 0.0,
        "scale_consistency": scale_consistency(music),
        "bass_leap": bass_leap(music),
        "bass_pitch": bass_pitch(music),
        "melody_kept": melody_kept(music, melody),
        **voice_leading(music, melody),
    }


def summarize(scores: list[dict]) -> dict:
    """Per-file scores -> the table's row: overlap, parallels and consonance pooled, the rest averaged over files."""

    def total(name):
        return sum(s[name] for s in scores)

    quarters = total("overlap_quarters")
    return {
        "lower_voice_overlap": sum(s["overlap_sum"] for s in scores) / max(quarters, 1),
        "voices_per_quarter": float(np.mean([s["voices_per_quarter"] for s in scores])),
        "scale_consistency": float(np.mean([s["scale_consistency"] for s in scores])),
        "bass_leap": float(np.mean([s["bass_leap"] for s in scores])),
        "parallels_per_100_eighths": 100 * total("parallels") / max(total("eighths_together"), 1),
        "consonance_on_the_beat": total("consonant_beats") / max(total("beats_together"), 1),
        "melody_kept": sum(s["melody_kept"] for s in scores),
        "files": len(scores),
        "bass_pitch": float(np.mean([s["bass_pitch"] for s in scores])),
        # the four-part rules between all voice pairs, per chorale
        **{f"{name}_per_chorale": float(np.mean([s[name] for s in scores])) for name in RULE_NAMES},
        "out_of_range_share": total("out_of_range") / max(total("notes"), 1),
        "endings": summarize_endings([s["ending"] for s in scores]),
    }


def through_the_codes(vq_vae, melody: np.ndarray, voices: Voices, options, normalize_key: bool = True) -> Voices:
    """Bach's voices through the VQ-VAE as harmonizing writes them: in the normalized key, encoded, decoded
    (short notes dropped), the melody made the Soprano (`harmonize.with_tune`), and moved back."""
    key = estimate_key(melody)
    shift = normalizing_shift(melody, key) if normalize_key else 0
    device = next(vq_vae.parameters()).device
    keys, onsets = (torch.from_numpy(lines).to(device) for lines in voices.transposed(shift).lines())
    decoded = decode_voices(vq_vae, vq_vae.encode(keys, onsets).flatten(), min_note_steps=options.min_note_steps)
    return with_tune(decoded.transposed(-shift), melody)


def harmonization_targets(table: dict) -> dict:
    """The melody issue's targets for the model's row, each True or False."""
    model, bach = table["model"], table["Bach"]
    return {
        "lower_voice_overlap_at_least_0.52": model["lower_voice_overlap"] >= 0.52,
        "parallels_at_most_0.3_per_100_eighths": model["parallels_per_100_eighths"] <= 0.3,
        "all_pairs_parallels_at_most_twice_Bach's": all_parallels(model) <= 2 * all_parallels(bach),
        "consonance_on_the_beat_at_least_0.90": model["consonance_on_the_beat"] >= 0.90,
        "bass_leap_within_15%": abs(model["bass_leap"] - bach["bass_leap"]) <= 0.15 * bach["bass_leap"],
        "voices_per_quarter_within_0.2": abs(model["voices_per_quarter"] - bach["voices_per_quarter"]) <= 0.2,
        "bass_pitch_within_2_semitones": abs(model["bass_pitch"] - bach["bass_pitch"]) <= 2,
        "melody_kept_in_every_file": model["melody_kept"] == model["files"],
    }


def all_parallels(row: dict) -> float:
    """Parallel fifths and octaves between all voice pairs, per chorale, of a table row."""
    return row["parallel_fifths_per_chorale"] + row["parallel_octaves_per_chorale"]


def evaluate_harmonization(
    config, seed: int, device, png: str | None = None, max_files: int | None = None, systems: tuple = SYSTEMS
) -> dict:
    """Harmonize the Soprano of every held-out chorale with each system; the table as a JSON-ready dict.

    png: also draw the first held-out chorale as the model harmonized it, above Bach's own.
    max_files: only the first this many held-out chorales (quick comparisons; the table is on all).
    systems: the rows to compute (of SYSTEMS; "model" among them for the targets).
    """
    vq_vae, transformer = load_models(config.models.vq_vae, config.models.transformer, device)
    pieces = load_corpus(config.data.midi_dir, config.data.cache_dir, config.data.max_quarters)
    _, held_out = split(pieces, config.data.validation_fraction)
    names = {piece.name for piece in held_out}
    options = dataclasses.replace(config.generate, key="")
    single = dataclasses.replace(options, candidates=1)
    grid = grid_steps(options.grid, STEPS_PER_QUARTER)
    # without the melody condition, hearing the melody and not hearing it are one system
    systems = [s for s in systems if transformer.config.melody_quarters or MODEL_SYSTEMS.get(s, (0, 1))[1]]
    scores: dict[str, list] = {name: [] for name in (*systems, "Bach")}
    seconds = dict.fromkeys(systems, 0.0)
    skipped = []
    outputs: dict[str, list] = {}
    voice_lists: dict[str, list] = {}  # each system's four voices: the four-part figures
    voiced: dict[str, list] = {}  # the same, with the chorale's fermatas, for the harmony statistics
    bach_files = []
    folder = config.data.midi_dir
    for path in midi_files(folder):
        name = path.relative_to(folder).as_posix()
        if name not in names or (max_files is not None and len(scores["Bach"]) >= max_files):
            continue
        try:
            voices = chorale_voices(path)
        except MidiError as error:
            skipped.append(f"{name}: {error.reason}")
            continue
        if voices is None:
            skipped.append(f"{name}: no {MELODY_TRACK} track with notes and no {'/'.join(LOWER_TRACKS)} tracks")
            continue
        melody, bach_lower = voices
        bach_voices, _ = read_voices(path, grid)
        fermatas = read_fermatas(path)
        for system in systems:
            started = time.perf_counter()
            if system == "triad rule":
                voices = triad_harmonization(melody, estimate_key(melody))
            elif system == "VQ-VAE oracle":
                voices = through_the_codes(vq_vae, melody, bach_voices, options, config.data.normalize_key)
            else:
                several, hears = MODEL_SYSTEMS[system]
                system_options = options if several else single
                voices = harmonize(
                    vq_vae, transformer, melody, system_options, seed, config.data.normalize_key, hear_melody=hears
                ).voices
            music = voices.quarters()
            seconds[system] += time.perf_counter() - started
            voice_lists.setdefault(system, []).append(voices)
            rolls = [voices.voice_quarters(number) for number in range(4)]  # the rules read the voices
            kept = {"melody_kept": soprano_kept(voices, melody)}  # the union may strike a held melody key again
            ending = piece_ending(
                voices.notes, voices_key(voices.notes, STEPS_PER_QUARTER), STEPS_PER_QUARTER, fermatas
            )
            scores[system].append(
                {**harmony_scores(music, melody, bach_lower), **four_part_scores(rolls), **kept, "ending": ending}
            )
            outputs.setdefault(system, []).append(music)
            # analysed with the chorale's phrase ends: the tune's fermatas are where Bach's are
            voiced.setdefault(system, []).append(
                music_from_voices(
                    voices.notes, voices.steps_per_quarter, fermatas=[f / STEPS_PER_QUARTER for f in fermatas]
                )
            )
            if png is not None and system == "model" and len(scores["model"]) == 1:
                panels = [(music, f"{name}: its Soprano harmonized by bachsformer"), (melody | bach_lower, "Bach")]
                write_rolls_png(panels, png, melody=melody, overwrite=True)
        bach_files.append(path)
        bach_scores = harmony_scores(melody | bach_lower, melody, bach_lower)
        parts = chorale_parts(path)
        notes = [restore_repeats(quarters_to_notes(part)) for part in parts]
        ending = piece_ending(notes, voices_key(notes, STEPS_PER_QUARTER), STEPS_PER_QUARTER, fermatas)
        scores["Bach"].append({**bach_scores, **four_part_scores(parts), "ending": ending})
        voice_lists.setdefault("Bach", []).append(bach_voices)
    table = {system: summarize(rows) for system, rows in scores.items() if rows}
    for system, pieces in voice_lists.items():  # parallels over all pairs per 100 quarters, inner rests, leaps
        table[system]["four_part"] = voice_figures(pieces)
    for system, pieces in outputs.items():  # on the grid of the voicing, at most four keys at once
        table[system]["grid"] = grid_shares(pieces, grid)
    for system in systems:
        if system in table:
            table[system]["seconds"] = round(seconds[system], 1)
    return {
        "models": {"vq_vae": config.models.vq_vae, "transformer": config.models.transformer},
        "candidates": options.candidates,
        "guidance": options.guidance,
        "targets": harmonization_targets(table) if "model" in table and "Bach" in table else {},
        "seed": seed,
        "skipped": skipped,
        "table": table,
        "harmony": {
            **{system: harmony_statistics(pieces) for system, pieces in voiced.items()},
            "Bach": harmony_statistics(bach_files),
        },
    }


def melody_endings(config, folder, seed: int, device) -> dict:
    """Harmonize each tune in `folder` (its MIDI and MusicXML files) as `generate.py --melody` does, and read
    how each harmonization ends (`endings.piece_ending`, in the key heard from the four voices; a file's
    fermata markers are its phrase ends). A file that cannot be read is skipped and named."""
    vq_vae, transformer = load_models(config.models.vq_vae, config.models.transformer, device)
    options = dataclasses.replace(config.generate, key="")
    rows, files, skipped = [], [], []
    folder = Path(folder)
    for path in midi_files(folder):
        name = path.relative_to(folder).as_posix()
        try:
            melody = read_melody(path).quarters
        except (MidiError, GuideError) as error:
            skipped.append(str(error))
            continue
        piece = harmonize(vq_vae, transformer, melody, options, seed, config.data.normalize_key)
        heard = voices_key(piece.voices.notes, STEPS_PER_QUARTER)
        ending = piece_ending(piece.voices.notes, heard, STEPS_PER_QUARTER, read_fermatas(path))
        rows.append(ending)
        # piece.key: the key harmonize closed the tune in (`keys.tune_key`'s, as no --key moved it)
        files.append({"file": name, "tune_key": str(piece.key), "heard": str(heard), "cadence": ending["cadence"]})
    if not rows:
        raise GuideError(f"{folder}: no tune could be read there ({len(skipped)} files skipped)")
    heard_as_the_tune = float(np.mean([f["heard"] == f["tune_key"] for f in files]))
    return {
        "folder": str(folder),
        "seed": seed,
        "models": {"vq_vae": config.models.vq_vae, "transformer": config.models.transformer},
        "endings": {**summarize_endings(rows), "key_heard_as_the_tune": heard_as_the_tune},
        "files": files,
        "skipped": skipped,
    }


def print_melody_endings(results: dict) -> None:
    """Each tune's key and final cadence, then the endings table and the files skipped."""
    print(f"harmonizing the tunes in {results['folder']} (seed {results['seed']})")
    print("| file | key of the tune | key heard | final cadence |\n|---|---|---|---|")
    for row in results["files"]:
        print(f"| {row['file']} | {row['tune_key']} | {row['heard']} | {row['cadence']} |")
    print_endings({"model": results["endings"]})
    print(f"key heard as the tune's: {results['endings']['key_heard_as_the_tune']:.3f}")
    for line in results["skipped"]:
        print(f"skipped {line}")


def print_harmonization(results: dict) -> None:
    table = results["table"]
    files = next(iter(table.values()))["files"] if table else 0
    print(
        f"harmonizing the {MELODY_TRACK} of {files} held-out chorales ({results['candidates']} candidates"
        f" per quarter, guidance {results['guidance']:g}, seed {results['seed']}),"
        f" against Bach's {', '.join(LOWER_TRACKS)}"
    )
    columns = (
        "system",
        "lower-voice pitch classes vs Bach",
        "voices per quarter",
        "scale consistency",
        "bass leap",
        "parallel 5ths/8ves per 100 eighths",
        "consonant on the beat",
        "melody kept",
    )
    print(f"| {' | '.join(columns)} |")
    print("|---" * len(columns) + "|")
    for system, row in table.items():
        kept = "(its own)" if system == "Bach" else f"{row['melody_kept']} of {row['files']}"
        print(
            f"| {system} | {row['lower_voice_overlap']:.3f} | {row['voices_per_quarter']:.2f}"
            f" | {row['scale_consistency']:.3f} | {row['bass_leap']:.2f} | {row['parallels_per_100_eighths']:.2f}"
            f" | {row['consonance_on_the_beat']:.3f} | {kept} |"
        )
    print("\nfour-part rules between all voice pairs, per chorale (notes out of range: share of all notes)")
    columns = ("system", *(name.replace("_", " ") for name in RULE_NAMES[:-1]), "out of range", "bass pitch")
    print(f"| {' | '.join(columns)} |")
    print("|---" * len(columns) + "|")
    for system, row in table.items():
        counts = " | ".join(f"{row[f'{name}_per_chorale']:.2f}" for name in RULE_NAMES[:-1])
        print(f"| {system} | {counts} | {row['out_of_range_share']:.3f} | {row['bass_pitch']:.1f} |")
    for system, row in table.items():
        if "grid" in row:
            grid = row["grid"]
            print(
                f"{system}: {grid['off_grid']:.3f} of {grid['notes']} notes off the grid,"
                f" {grid['shorter_than_grid']:.3f} shorter than it, at most {grid['max_keys']} keys at once"
            )
    print_endings({system: row["endings"] for system, row in table.items()})
    if "model" in table:
        for baseline in (s for s in SYSTEMS[1:] if s in table):
            gain = table["model"]["lower_voice_overlap"] - table[baseline]["lower_voice_overlap"]
            print(f"model against {baseline}: {gain:+.3f} lower-voice overlap")
    if "harmony" in results:
        print_harmony(results["harmony"])
    if results["targets"]:
        print("\ntargets:")
        for name, met in results["targets"].items():
            print(f"  {'met    ' if met else 'MISSED '} {name}")
    for line in results["skipped"]:
        print(f"skipped {line}")
