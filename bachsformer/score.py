"""MusicXML scores of the music, written with music21 (an optional dependency, imported only here).

A score is a grand staff: a treble staff and a bass staff joined by a brace, in the time signatures
of the piece's meter (4/4 for music written from nothing) and the key signature of its key, every
note spelled in that key. MuseScore, Finale, Sibelius and music21 open it.

Four voices (`write_voices_musicxml`) are printed as a chorale is: Soprano and Alto on a treble staff
(stems up and down), Tenor and Bass on a bass staff, each staff a part named after its voices, each
voice one line with its own ties (docs/design.md, Generation). A raw roll is written as follows.

How a roll becomes notation, so that nothing is left for a notation program to guess:
- The melody, when there is one (a harmonized tune), is voice 1 of the treble staff. The other
  notes go to the treble staff from middle C up and to the bass staff below it.
- On each staff the notes that are not the melody are one voice of chords. The staff's time is cut
  wherever one of its notes starts or ends and at every bar line; each cut is a chord (a note, a
  rest) of what sounds there, and a note that sounds over several cuts is tied across them.
- Each cut is written as notes of plain or dotted values, the longest first (5 steps, 5/32 of a
  quarter, is a 32nd tied to a 128th), so every duration on the grid of 32 steps per quarter is
  written exactly and reading the file back gives the same notes.
- Spelling: the seven degrees of the key as its scale spells them; the other five pitch classes as
  Bach's chromatic notes are spelled: in major the raised 1st, 2nd, 4th and 5th (leading tones of
  the secondary dominants) and the lowered 7th; in minor the lowered 2nd (Neapolitan), the raised
  3rd (the Picardy third), 4th, 6th and 7th (melodic and harmonic minor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bachsformer.errors import ArgumentParser, BachsformerError, exit_on_user_error
from bachsformer.keys import TONIC_NAMES, Key
from bachsformer.midi import Meter, quarters_to_notes
from bachsformer.voices import VOICE_NAMES, Voices

MIDDLE_C = 60  # the lowest pitch on the treble staff
LETTERS = "CDEFGAB"
LETTER_PITCH_CLASSES = (0, 2, 4, 5, 7, 9, 11)
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}  # natural minor
# semitones above the tonic -> (degree 1 ... 7, alteration of the scale's spelling of that degree)
CHROMATIC = {
    "major": {1: (1, +1), 3: (2, +1), 6: (4, +1), 8: (5, +1), 10: (7, -1)},
    "minor": {1: (2, -1), 4: (3, +1), 6: (4, +1), 9: (6, +1), 11: (7, +1)},
}
# note values in steps of 1/32 quarter, the longest first: breve, dotted whole, whole ... 128th
STEMS = ("up", "down")  # the upper and the lower voice of a staff
NOTE_VALUES = tuple(sorted({2**n for n in range(9)} | {3 * 2**n for n in range(8)}, reverse=True))


def require_music21() -> None:
    """BachsformerError, in one line, when music21 is not installed (--musicxml checks before writing anything)."""
    try:
        import music21  # noqa: F401
    except ImportError:
        raise BachsformerError("--musicxml needs music21: pip install music21") from None


def spellings(key: Key) -> dict[int, tuple[str, int]]:
    """How each pitch class (0 = C) is spelled in `key`: (letter, alteration in semitones), e.g. 6 -> ("F", 1)."""
    tonic_name = TONIC_NAMES[key.mode][key.tonic]
    first = LETTERS.index(tonic_name[0])
    degrees = []  # (letter, alteration) of degrees 1 ... 7
    for degree, interval in enumerate(SCALES[key.mode]):
        letter = LETTERS[(first + degree) % 7]
        natural = LETTER_PITCH_CLASSES[LETTERS.index(letter)]
        degrees.append((letter, ((key.tonic + interval - natural) + 6) % 12 - 6))
    names = {(key.tonic + interval) % 12: degrees[n] for n, interval in enumerate(SCALES[key.mode])}
    for interval, (degree, alteration) in CHROMATIC[key.mode].items():
        letter, alter = degrees[degree - 1]
        names[(key.tonic + interval) % 12] = (letter, alter + alteration)
    return names


def pitch_name(midi_pitch: int, spelling: dict[int, tuple[str, int]]) -> str:
    """music21's name of a MIDI pitch spelled as `spelling` says: 66 in D major is "F#4", 70 in F major "B-4"."""
    letter, alter = spelling[midi_pitch % 12]
    octave = (midi_pitch - LETTER_PITCH_CLASSES[LETTERS.index(letter)] - alter) // 12 - 1
    return f"{letter}{'#' * alter if alter > 0 else '-' * -alter}{octave}"


def note_values(steps: int) -> list[int]:
    """A duration in steps as plain or dotted note values, the longest first: 5 -> [4, 1], 40 -> [32, 8]."""
    values = []
    for value in NOTE_VALUES:
        while steps >= value:
            values.append(value)
            steps -= value
    return values


def chord_cuts(notes: np.ndarray, cuts: list[int]) -> list[tuple[int, int, list[tuple[int, str | None]]]]:
    """A staff's notes [N, 3] (onset step, offset step, pitch; one note at a time per pitch) as chords in time.

    cuts: steps where a chord must end (the bar lines, the staff's end). Returns (start, end,
    [(pitch, tie)]) for every span between consecutive cuts and note boundaries, an empty list for a
    rest; tie is "start", "continue", "stop" or None as the note goes on across the span's edges.
    """
    bounds = sorted({*cuts, *notes[:, 0].tolist(), *notes[:, 1].tolist()})
    spans = []
    for start, end in zip(bounds, bounds[1:]):
        sounding = notes[(notes[:, 0] < end) & (notes[:, 1] > start)]
        chord = []
        for onset, offset, pitch in sorted(sounding.tolist(), key=lambda note: note[2]):
            before, after = onset < start, offset > end
            chord.append((pitch, "continue" if before and after else "stop" if before else "start" if after else None))
        spans.append((start, end, chord))
    return spans


def _split_tie(tie: str | None, piece: int, pieces: int) -> str | None:
    """The tie of piece `piece` of `pieces` that a span with `tie` is written as."""
    if pieces == 1:
        return tie
    starts = piece > 0 or tie in ("continue", "stop")  # tied from before
    goes_on = piece < pieces - 1 or tie in ("start", "continue")  # tied to after
    return "continue" if starts and goes_on else "stop" if starts else "start"


def _voice_elements(music21, notes: np.ndarray, cuts: list[int], spelling, steps: int) -> list:
    """The notes [N, 3] of one voice as music21 notes, chords and rests [(step, element)] from 0 to cuts[-1]."""
    elements = []
    for start, end, chord in chord_cuts(notes, cuts):
        values = note_values(end - start)
        offset = start
        for piece, value in enumerate(values):
            length = music21.duration.Duration(value / steps)
            if not chord:
                element = music21.note.Rest(duration=length)
            else:
                members = []
                for pitch, tie in chord:
                    member = music21.note.Note(pitch_name(pitch, spelling), duration=length)
                    piece_tie = _split_tie(tie, piece, len(values))
                    if piece_tie:
                        member.tie = music21.tie.Tie(piece_tie)
                    members.append(member)
                element = members[0] if len(members) == 1 else music21.chord.Chord(members, duration=length)
            elements.append((offset, element))
            offset += value
    return elements


def write_musicxml(
    quarters: np.ndarray,
    path: str | Path,
    key: Key,
    meter: Meter | None = None,
    melody: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Write quarters [Q, 88, steps] as a MusicXML score at `path` (never overwritten); see `musicxml_bytes`."""
    return _write_new(path, musicxml_bytes(quarters, key, meter, melody, title))


def _write_new(path: str | Path, data: bytes) -> Path:
    """data written at a new file `path` (an existing one is never overwritten)."""
    path = Path(path)
    with open(path, "xb") as file:
        file.write(data)
    return path


def musicxml_bytes(
    quarters: np.ndarray,
    key: Key,
    meter: Meter | None = None,
    melody: np.ndarray | None = None,
    title: str = "",
) -> bytes:
    """Quarters [Q, 88, steps] as a MusicXML score (see the module doc).

    key: the piece's key (key signature and spelling); meter: its time signatures and tempos (None:
    4/4 at 120); melody: quarters [Q, 88, steps] inside `quarters`, written as a voice of its own.
    """
    quarters = np.asarray(quarters, dtype=bool)
    has_melody = melody is not None
    melody = np.zeros_like(quarters) if melody is None else np.asarray(melody, dtype=bool)
    rest = quarters_to_notes(quarters & ~melody)
    staves = {  # staff -> its voices' notes
        "treble": ([quarters_to_notes(melody)] if has_melody else []) + [rest[rest[:, 2] >= MIDDLE_C]],
        "bass": [rest[rest[:, 2] < MIDDLE_C]],
    }
    return _score_bytes(staves, len(quarters), quarters.shape[2], key, meter, title)


def write_voices_musicxml(
    voices: Voices,
    path: str | Path,
    key: Key,
    meter: Meter | None = None,
    names: tuple[str, ...] = VOICE_NAMES,
    title: str = "",
    analysis=None,
) -> Path:
    """Write four voices as a chorale is printed, at `path` (never overwritten): Soprano and Alto on a treble
    staff, stems up and down, Tenor and Bass on a bass staff, each staff named after its voices (`names`:
    S, A, T, B). Every voice is one line, so each note is written with its own ties. analysis: an
    `analyze.Analysis` of the voices, whose numerals are written under the bass staff (`add_numerals`)."""
    return _write_new(path, voices_musicxml_bytes(voices, key, meter, names, title, analysis))


def voices_musicxml_bytes(
    voices: Voices,
    key: Key,
    meter: Meter | None = None,
    names: tuple[str, ...] = VOICE_NAMES,
    title: str = "",
    analysis=None,
) -> bytes:
    """Four voices as MusicXML bytes, printed as `write_voices_musicxml` describes."""
    staves = {"treble": list(voices.notes[:2]), "bass": list(voices.notes[2:])}
    part_names = {"treble": f"{names[0]}, {names[1]}", "bass": f"{names[2]}, {names[3]}"}
    steps = voices.steps_per_quarter
    return _score_bytes(staves, voices.num_quarters, steps, key, meter, title, part_names, STEMS, analysis)


def _score_bytes(
    staves: dict[str, list[np.ndarray]],
    num_quarters: int,
    steps: int,
    key: Key,
    meter: Meter | None,
    title: str,
    part_names: dict[str, str] | None = None,
    stems: tuple[str, ...] | None = None,
    analysis=None,
) -> Path:
    """A grand staff of staves {"treble", "bass"} -> their voices' notes [N, 3], as MusicXML bytes.

    part_names: each staff's name; stems: the stem direction of each staff's voices, every voice then
    written in every bar (else one voice of chords alone is written without voices, and a voice under
    the first that only rests in a bar is left out there).
    """
    require_music21()
    import music21
    import music21.musicxml.m21ToXml

    meter = meter or Meter()
    bars = meter.bars(num_quarters) or [(0.0, meter.time_signatures[0].bar, meter.time_signatures[0])]
    bar_steps = [(round(start * steps), round(end * steps), signature) for start, end, signature in bars]
    cuts = [start for start, _, _ in bar_steps] + [bar_steps[-1][1]]
    spelling = spellings(key)
    tonic = TONIC_NAMES[key.mode][key.tonic].replace("b", "-")
    score = music21.stream.Score()
    score.metadata = music21.metadata.Metadata(title=title)
    parts = []
    for staff, voices in staves.items():
        # named staves are parts of their own (a grand staff's two staves are one part, with one name)
        part = music21.stream.Part(id=staff) if part_names else music21.stream.PartStaff(id=staff)
        if part_names:
            part.partName = part_names[staff]
        voice_elements = [_voice_elements(music21, notes, cuts, spelling, steps) for notes in voices]
        if stems:
            for elements, stem in zip(voice_elements, stems):
                for _, element in elements:
                    if not element.isRest:
                        element.stemDirection = stem
        previous_signature = None
        for number, (start, end, signature) in enumerate(bar_steps):
            measure = music21.stream.Measure(number=number + 1)
            if number == 0:
                measure.insert(0, music21.clef.TrebleClef() if staff == "treble" else music21.clef.BassClef())
                measure.insert(0, music21.key.Key(tonic, key.mode))
            if (signature.numerator, signature.denominator) != previous_signature:
                measure.insert(0, music21.meter.TimeSignature(f"{signature.numerator}/{signature.denominator}"))
                previous_signature = (signature.numerator, signature.denominator)
            if staff == "treble":
                for tempo in meter.tempos:
                    if start <= round(tempo.quarter * steps) < end:
                        mark = music21.tempo.MetronomeMark(number=round(tempo.bpm, 1))
                        measure.insert((round(tempo.quarter * steps) - start) / steps, mark)
            in_bar = [[(step, e) for step, e in elements if start <= step < end] for elements in voice_elements]
            # the first voice (the melody) is always there; a voice under it that only rests is left out
            kept = [n for n, elements in enumerate(in_bar) if stems or n == 0 or any(not e.isRest for _, e in elements)]
            for n in kept:
                holder = measure if len(kept) == 1 else music21.stream.Voice(id=str(n + 1))
                for step, element in in_bar[n]:
                    holder.insert((step - start) / steps, element)
                if holder is not measure:
                    measure.insert(0, holder)
            part.append(measure)
        parts.append(part)
        score.insert(0, part)
    score.insert(0, music21.layout.StaffGroup(parts, symbol="brace", barTogether=True))
    if analysis is not None:  # its offsets count from the music's first quarter, after a pickup's rests
        add_numerals(score, analysis, -bars[0][0])
    return music21.musicxml.m21ToXml.GeneralObjectExporter(score).parse()


def numeral_labels(analysis) -> list[tuple[float, str]]:
    """(offset, text) of the numerals as a score prints them: at each beat whose chord or key differs from the
    beat before, the key named ("D: V") where it changes, an uncertain numeral with a "?"."""
    labels, before = [], None
    for chord in analysis.chords:
        now = (chord.key, chord.figure, chord.uncertain)
        if now != before:
            text = chord.figure + ("?" if chord.uncertain else "")
            if before is None or chord.key != before[0]:
                text = f"{chord.key}: {text}"
            labels.append((chord.offset, text))
        before = now
    return labels


def add_numerals(score, analysis, start: float = 0.0) -> None:
    """Write an analysis into a music21 score with measures: the numerals (`numeral_labels`) under the lowest
    staff, the cadences' names above the highest, each at its offset (quarters after `start`, the first
    measure's offset)."""
    import music21

    parts = list(score.parts)
    below = [(offset, text, "below", parts[-1]) for offset, text in numeral_labels(analysis)]
    above = [(c["offset"], f"{c['cadence']} cadence", "above", parts[0]) for c in analysis.cadences]
    for offset, text, placement, part in below + above:
        where = start + offset
        for measure in part.getElementsByClass(music21.stream.Measure):
            if measure.offset <= where < measure.offset + measure.duration.quarterLength:
                mark = music21.expressions.TextExpression(text)
                mark.placement = placement
                measure.insert(where - measure.offset, mark)
                break


def annotated_musicxml(path: str | Path, analysis) -> bytes:
    """The score of a MusicXML or MIDI file (read by music21) with its analysis written in (`add_numerals`)."""
    require_music21()
    import music21
    import music21.musicxml.m21ToXml

    score = music21.converter.parse(str(path), forceSource=True)
    if not score.parts:
        raise BachsformerError(f"{path}: music21 finds no parts in it to write numerals under")
    first = score.parts[0].getElementsByClass(music21.stream.Measure)
    add_numerals(score, analysis, float(first[0].offset) if len(first) else 0.0)  # offsets from the first bar
    return music21.musicxml.m21ToXml.GeneralObjectExporter(score).parse()


def render_svg(musicxml_path: str | Path, svg_path: str | Path, width: int = 2100) -> Path:
    """Engrave a MusicXML score's first page as SVG with verovio (an optional dependency), never overwriting.

    `python -m bachsformer.score SCORE.musicxml OUT.svg` does it from the shell.
    """
    try:
        import verovio
    except ImportError:
        raise BachsformerError("engraving needs verovio: pip install verovio") from None
    toolkit = verovio.toolkit()
    toolkit.setOptions({"pageWidth": width, "adjustPageHeight": True, "footer": "none", "header": "none"})
    if not toolkit.loadFile(str(musicxml_path)):
        raise BachsformerError(f"{musicxml_path}: verovio cannot read it as MusicXML")
    path = Path(svg_path)
    with open(path, "x") as file:  # "x": never overwrite
        file.write(toolkit.renderToSVG(1))
    return path


def main():
    parser = ArgumentParser(description="Engrave a MusicXML score's first page as SVG (needs verovio).")
    parser.add_argument("musicxml")
    parser.add_argument("svg")
    args = parser.parse_args()
    print(render_svg(args.musicxml, args.svg))


if __name__ == "__main__":
    exit_on_user_error(main)
