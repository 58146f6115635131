"""MusicXML scores: spelling in the key, note values, chords cut at bar lines, and a score that music21
reads back with the notes of the roll it was written from."""

from __future__ import annotations

import numpy as np
import pytest
from midi_files import roll

from bachsformer.keys import Key
from bachsformer.midi import Meter, Tempo, TimeSignature, quarters_to_notes
from bachsformer.score import chord_cuts, note_values, pitch_name, spellings, write_musicxml, write_voices_musicxml

music21 = pytest.importorskip("music21", reason="music21 is optional at run time (requirements-dev.txt has it)")


def score_notes(path, steps: int = 32) -> set[tuple[int, int, int]]:
    """(onset step, offset step, MIDI pitch) of every note of a MusicXML file, tied notes joined."""
    score = music21.converter.parse(str(path))
    found = set()
    for part in score.parts:
        tied: dict[int, tuple[int, int]] = {}  # pitch -> (onset, end so far) of a note tied on
        for element in part.flatten().notes:
            onset = round(float(element.getOffsetInHierarchy(part)) * steps)
            end = onset + round(float(element.quarterLength) * steps)
            for note in element.notes if element.isChord else [element]:
                tie = note.tie.type if note.tie is not None else None
                first = onset
                if tie in ("continue", "stop"):
                    first, tied_end = tied.pop(note.pitch.midi)
                    assert tied_end == onset
                if tie in ("start", "continue"):
                    tied[note.pitch.midi] = (first, end)
                else:
                    found.add((first, end, note.pitch.midi))
        assert not tied
    return found


def roll_notes(quarters: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(note) for note in quarters_to_notes(quarters).tolist()}


@pytest.mark.parametrize(
    "key, pitches, names",
    [
        (Key(2, "major"), (66, 61, 67, 60, 68), ("F#4", "C#4", "G4", "C4", "G#4")),  # C: lowered 7th; G#: V/V's
        (Key(5, "major"), (70, 64, 66, 63), ("B-4", "E4", "F#4", "E-4")),  # F#: the leading tone of V/ii
        (Key(9, "minor"), (68, 66, 70, 61, 72), ("G#4", "F#4", "B-4", "C#4", "C5")),
        (Key(6, "major"), (70, 65, 71, 60), ("A#4", "E#4", "B4", "B#3")),
        (Key(3, "minor"), (66, 71, 62, 70), ("G-4", "C-5", "D4", "B-4")),  # E-flat minor: 6 flats, D the leading tone
    ],
)
def test_notes_are_spelled_in_the_key(key, pitches, names):
    spelling = spellings(key)
    assert len(spelling) == 12
    assert [pitch_name(pitch, spelling) for pitch in pitches] == list(names)
    for pitch in range(21, 109):
        assert music21.pitch.Pitch(pitch_name(pitch, spelling)).midi == pitch


def test_durations_become_plain_or_dotted_note_values():
    assert note_values(32) == [32] and note_values(48) == [48] and note_values(5) == [4, 1]
    assert note_values(40) == [32, 8] and note_values(7) == [6, 1] and note_values(512) == [384, 128]


def test_chords_are_cut_where_notes_start_or_end_and_at_the_cuts_with_ties_across():
    notes = np.array([[0, 48, 60], [16, 32, 64], [40, 56, 67]])
    assert chord_cuts(notes, [0, 32, 64]) == [
        (0, 16, [(60, "start")]),
        (16, 32, [(60, "continue"), (64, None)]),
        (32, 40, [(60, "continue")]),
        (40, 48, [(60, "stop"), (67, "start")]),
        (48, 56, [(67, "stop")]),
        (56, 64, []),  # a rest
    ]


MELODY = roll(6, (72, 0, 31), (72, 32, 80), (74, 80, 85), (71, 85, 192))  # a repeat, a 5-step note, ties
HARMONY = roll(6, (55, 0, 100), (64, 4, 40), (60, 40, 44), (43, 100, 192), (62, 100, 160), (66, 130, 150))


def test_a_score_reads_back_with_every_note_of_the_roll(tmp_path):
    music = MELODY | HARMONY
    meter = Meter((TimeSignature(0.0, 1, 4), TimeSignature(1.0, 3, 4)), (Tempo(0.0, 72.0),))
    path = write_musicxml(music, tmp_path / "piece.musicxml", Key(7, "major"), meter, MELODY, title="piece")
    assert score_notes(path) == roll_notes(music)
    score = music21.converter.parse(str(path))
    treble, bass = score.parts
    assert [type(c).__name__ for c in treble.recurse().getElementsByClass("Clef")] == ["TrebleClef"]
    assert [type(c).__name__ for c in bass.recurse().getElementsByClass("Clef")] == ["BassClef"]
    assert [ts.ratioString for ts in treble.recurse().getElementsByClass("TimeSignature")] == ["1/4", "3/4"]
    assert [k.sharps for k in bass.recurse().getElementsByClass("KeySignature")] == [1]
    assert [m.number for m in treble.recurse().getElementsByClass("MetronomeMark")] == [72]
    # the bars: 1/4, then 3/4 bars, the last filled out with rests
    assert [float(m.duration.quarterLength) for m in treble.getElementsByClass("Measure")] == [1.0, 3.0, 3.0]
    # the melody is the treble staff's first voice, note for note
    melody_voice = [voice for measure in treble.getElementsByClass("Measure") for voice in measure.voices[:1]]
    assert {n.pitch.midi for voice in melody_voice for n in voice.notes} == {71, 72, 74}
    assert all(len(voice.notes) for voice in melody_voice)
    below = [voice for measure in treble.getElementsByClass("Measure") for voice in measure.voices[1:]]
    assert {p.midi for voice in below for n in voice.notes for p in n.pitches} == {60, 62, 64, 66}
    assert {p.midi for n in bass.recurse().notes for p in n.pitches} == {43, 55}


def test_free_music_is_one_voice_per_staff_in_4_4(tmp_path):
    music = MELODY | HARMONY
    path = write_musicxml(music, tmp_path / "free.musicxml", Key(0, "major"))
    assert score_notes(path) == roll_notes(music)
    score = music21.converter.parse(str(path))
    treble, bass = score.parts
    assert [ts.ratioString for ts in treble.recurse().getElementsByClass("TimeSignature")] == ["4/4"]
    assert all(not measure.voices for part in (treble, bass) for measure in part.getElementsByClass("Measure"))
    assert {p.midi for n in treble.recurse().notes for p in n.pitches} == {60, 62, 64, 66, 71, 72, 74}
    with pytest.raises(FileExistsError):
        write_musicxml(music, path, Key(0, "major"))


def voice_notes(path, steps: int = 32) -> tuple[list[str], list[list[tuple[int, int, int]]], list[float], set[str]]:
    """A chorale score read back: its part names, each voice's notes (onset, offset, MIDI pitch) with ties joined
    (a tie that does not go on from a note of its pitch fails), the shortest value and the stem directions."""
    score = music21.converter.parse(str(path))
    names, voices, shortest, stems = [], [], [], set()
    for part in score.parts:
        names.append(part.partName)
        for number in ("1", "2"):
            found, tied = [], None
            for measure in part.getElementsByClass("Measure"):
                (voice,) = [v for v in measure.voices if v.id == number]
                for element in voice.notesAndRests:
                    shortest.append(float(element.quarterLength))
                    if element.isRest:
                        assert tied is None, "a tie across a rest"
                        continue
                    stems.add(f"{number}{element.stemDirection}")
                    onset = round(float(element.getOffsetInHierarchy(part)) * steps)
                    end = onset + round(float(element.quarterLength) * steps)
                    tie = element.tie.type if element.tie is not None else None
                    if tie in ("continue", "stop"):
                        assert tied is not None and tied[1] == onset and tied[2] == element.pitch.midi, "broken tie"
                        onset = tied[0]
                    else:
                        assert tied is None, "a tie that does not arrive"
                    tied = (onset, end, element.pitch.midi) if tie in ("start", "continue") else None
                    if tied is None:
                        found.append((onset, end, element.pitch.midi))
            assert tied is None
            voices.append(found)
    return names, voices, min(shortest), stems


def test_four_voices_are_printed_on_two_staves_and_read_back_note_for_note(tmp_path):
    from bachsformer.voicing import voice

    # a 3/4 piece with held notes across bar lines, a dotted rhythm and repeated notes
    music = roll(
        7,
        *[(pitch, 0, 80) for pitch in (72, 64)],
        (74, 80, 88),
        (76, 88, 136),
        (76, 136, 224),
        (67, 80, 224),
        (55, 0, 120),
        (57, 120, 224),
        (48, 0, 64),
        (48, 64, 224),
    )
    voices = voice(music, 8)
    names = ("Tune", "Alto", "Tenor", "Bass")
    meter = Meter((TimeSignature(0.0, 3, 4),), (Tempo(0.0, 72.0),))
    path = write_voices_musicxml(voices, tmp_path / "chorale.musicxml", Key(0, "major"), meter, names)
    part_names, read, shortest, stems = voice_notes(path)
    assert part_names == ["Tune, Alto", "Tenor, Bass"]
    assert read == [sorted(map(tuple, notes.tolist())) for notes in voices.notes]
    assert shortest >= 0.25  # nothing shorter than the grid's sixteenth
    assert stems == {"1up", "2down"}
    score = music21.converter.parse(str(path))
    assert [type(c).__name__ for c in score.parts[1].recurse().getElementsByClass("Clef")] == ["BassClef"]
