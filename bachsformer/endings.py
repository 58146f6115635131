"""How a piece ends, read from its four voices: the final cadence, the bass and the tune on the tonic, the
final chord held, and the cadence under each fermata (docs/design.md, Evaluation).

Everything reads four voices as note lists, Soprano, Alto, Tenor, Bass (each int [N, 3] of onset step,
offset step, MIDI pitch, as `voicing.Voices.notes` and a chorale's four tracks give them), and the
piece's key, so Bach's files, harmonizations and free music are read alike. `voices_key` hears the
key from the four voices (Krumhansl-Kessler, `keys.estimate_key`).

A cadence is read from the last two different bass notes (by pitch class) and the chords over them:
the pitch classes that sound for at least half of each bass note (so a suspension and its resolution
both count), and for the one before the last also those sounding at its last step (a cadential 6/4
longer than the dominant seventh it resolves to still reads as the dominant). In degrees above the key's tonic:
- authentic: the bass moves from the dominant (7) to the tonic (0); the chord over the dominant holds
  its third or fifth (11 or 2), and the chord over the tonic is a tonic triad (0 with 3, 4, 7 only:
  a major third in minor, Bach's Picardy third, counts).
- plagal: the bass moves from the subdominant (5) to the tonic, under a subdominant chord (its third,
  8 or 9, and no leading tone) and then a tonic triad.
- half: the piece, or the phrase, closes on the dominant chord (bass 7, its third or fifth above,
  nothing outside 7, 11, 2, 5).
- deceptive: the bass moves from the dominant, under its chord, to the sixth degree (8 or 9).
- other: anything else, and a bass of fewer than two different notes.
A phrase inside the piece is read in the piece's key: a cadence in the dominant key reads as half.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bachsformer.keys import Key, estimate_key
from bachsformer.midi import notes_to_roll

CADENCES = ("authentic", "half", "plagal", "deceptive", "other")
TONIC_TRIAD = frozenset((0, 3, 4, 7))  # degrees above the tonic; either third
DOMINANT_TONES = frozenset((11, 2))  # the dominant's third and fifth
DOMINANT_CHORD = frozenset((7, 11, 2, 5))  # V and V7
SUBDOMINANT_THIRDS = frozenset((8, 9))


def _notes(voice) -> np.ndarray:
    """One voice as int64 [N, 3] (onset, offset, pitch), in order of onset."""
    notes = np.asarray(voice, dtype=np.int64).reshape(-1, 3)
    return notes[np.argsort(notes[:, 0], kind="stable")]


def voices_key(voices: Sequence[np.ndarray], steps_per_quarter: int) -> Key:
    """The key the four voices sound in (Krumhansl-Kessler over all their notes; C major if silent)."""
    notes = np.concatenate([_notes(v) for v in voices])
    if not len(notes):
        return Key(0, "major")
    quarters = -(-int(notes[:, 1].max()) // steps_per_quarter)
    return estimate_key(notes_to_roll(notes, quarters, steps_per_quarter))


def chord_over(voices: Sequence[np.ndarray], start: int, end: int) -> frozenset:
    """Pitch classes (0 = C) sounding for at least half of steps [start, end) in any voice."""
    classes = set()
    for voice in voices:
        notes = _notes(voice)
        overlap = np.minimum(notes[:, 1], end) - np.maximum(notes[:, 0], start)  # [N] steps inside
        classes.update(int(pitch) % 12 for pitch in notes[(overlap > 0) & (2 * overlap >= end - start), 2])
    return frozenset(classes)


def cadence(voices: Sequence[np.ndarray], tonic: int, until: int | None = None) -> str:
    """The cadence (one of CADENCES) of the bass notes that start before step `until` (None: the
    whole piece): the last of them against the last before it of another pitch class."""
    bass = _notes(voices[3])
    if until is not None:
        bass = bass[bass[:, 0] < until]
    if not len(bass):
        return "other"
    last = bass[-1]
    earlier = bass[bass[:, 2] % 12 != last[2] % 12]
    if not len(earlier):
        return "other"
    before = earlier[-1]
    first, final = (int(before[2]) - tonic) % 12, (int(last[2]) - tonic) % 12

    def degrees(start: int, end: int) -> frozenset:
        return frozenset((c - tonic) % 12 for c in chord_over(voices, start, end))

    # the chord that moves to the last: over most of the bass note, and at its last step
    chord_before = degrees(int(before[0]), int(before[1])) | degrees(int(before[1]) - 1, int(before[1]))
    chord_last = degrees(int(last[0]), int(last[1]))
    dominant_before = first == 7 and bool(chord_before & DOMINANT_TONES)
    if final == 0 and chord_last <= TONIC_TRIAD:
        if dominant_before:
            return "authentic"
        if first == 5 and chord_before & SUBDOMINANT_THIRDS and 11 not in chord_before:
            return "plagal"
    if final == 7 and chord_last & DOMINANT_TONES and chord_last <= DOMINANT_CHORD:
        return "half"
    if dominant_before and final in SUBDOMINANT_THIRDS:
        return "deceptive"
    return "other"


def piece_ending(voices: Sequence[np.ndarray], key: Key, steps_per_quarter: int, fermatas: Sequence[int] = ()) -> dict:
    """How one piece ends: its final cadence, whether its last bass note and its Soprano's last note
    are the tonic, how long (quarters) its final chord sounds unchanged (from the last onset in any
    voice to the end), whether that is a quarter or more (held), how long its Soprano's last note
    lasts, and the cadence under each fermata
    (onset steps of the Soprano's phrase-end notes; the last phrase's fermata is the final cadence
    and is not counted again) as counts per cadence type."""
    voices = [_notes(v) for v in voices]
    everything = np.concatenate(voices)
    if not len(everything):
        return {
            "cadence": "other",
            "bass_on_tonic": False,
            "tune_on_tonic": False,
            "final_chord_quarters": 0.0,
            "final_chord_held": False,
            "tune_last_note_quarters": 0.0,
            "fermata_cadences": dict.fromkeys(CADENCES, 0),
        }
    end = int(everything[:, 1].max())
    held = (end - int(everything[:, 0].max())) / steps_per_quarter
    soprano, bass = voices[0], voices[3]
    last_soprano_onset = int(soprano[:, 0].max()) if len(soprano) else end
    counts = dict.fromkeys(CADENCES, 0)
    for step in sorted(set(int(f) for f in fermatas)):
        if step < last_soprano_onset:  # the last note's is the final cadence
            note = soprano[soprano[:, 0] == step]
            counts[cadence(voices, key.tonic, int(note[:, 1].max()) if len(note) else step + 1)] += 1
    return {
        "cadence": cadence(voices, key.tonic),
        "bass_on_tonic": bool(len(bass)) and int(bass[-1, 2]) % 12 == key.tonic,
        "tune_on_tonic": bool(len(soprano)) and int(soprano[-1, 2]) % 12 == key.tonic,
        "final_chord_quarters": held,
        "final_chord_held": held >= 1,
        "tune_last_note_quarters": float(soprano[-1, 1] - soprano[-1, 0]) / steps_per_quarter if len(soprano) else 0.0,
        "fermata_cadences": counts,
    }


def summarize_endings(endings: Sequence[dict]) -> dict:
    """Per-piece `piece_ending`s -> shares over the pieces: each final cadence type, the bass and the
    tune on the tonic, the final chord held (a quarter or more) and a half note or more, its mean
    length, the tune cut (its last note shorter than a quarter: Bach's never is); and over all the
    fermatas before the last, the share closed by each cadence type."""
    pieces = max(len(endings), 1)
    fermatas = {name: sum(e["fermata_cadences"][name] for e in endings) for name in CADENCES}
    total = sum(fermatas.values())
    return {
        "pieces": len(endings),
        **{f"final_{name}": sum(e["cadence"] == name for e in endings) / pieces for name in CADENCES},
        "bass_on_tonic": sum(e["bass_on_tonic"] for e in endings) / pieces,
        "tune_on_tonic": sum(e["tune_on_tonic"] for e in endings) / pieces,
        "final_chord_held": sum(e["final_chord_held"] for e in endings) / pieces,
        "final_chord_half_or_longer": sum(e["final_chord_quarters"] >= 2 for e in endings) / pieces,
        "final_chord_quarters": float(np.mean([e["final_chord_quarters"] for e in endings])) if endings else 0.0,
        "tune_cut": sum(e["tune_last_note_quarters"] < 1 for e in endings) / pieces,
        "fermatas": total,
        **{f"fermatas_{name}": fermatas[name] / max(total, 1) for name in CADENCES},
    }


ENDING_ROWS = (
    *(f"final_{name}" for name in CADENCES),
    "bass_on_tonic",
    "tune_on_tonic",
    "final_chord_held",
    "final_chord_half_or_longer",
    "tune_cut",
    *(f"fermatas_{name}" for name in CADENCES),
    "key_heard_as_written",
    "within_a_bar_of_the_length",
)


def print_endings(columns: dict) -> None:
    """The endings table: one column per set of `summarize_endings` shares (a row one set lacks is blank there)."""
    names = list(columns)
    print(
        "\nendings (four voices, each piece in the key heard from them; fermatas: their phrase ends before the"
        " last, " + ", ".join(f"{name} {int(columns[name]['fermatas'])}" for name in names) + ")"
    )
    print(f"| ending | {' | '.join(names)} |")
    print("|---" * (len(names) + 1) + "|")
    for row in (row for row in ENDING_ROWS if any(row in column for column in columns.values())):
        values = [f"{columns[name][row]:.3f}" if row in columns[name] else "" for name in names]
        print(f"| {row.replace('_', ' ')} | {' | '.join(values)} |")
