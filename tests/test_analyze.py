"""bachsformer.analyze on short four-part passages written in the tests: keys, numerals, cadences, faults, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from midi_files import make_midi

from bachsformer.analyze import (
    CHORD_KINDS,
    CHORDS,
    KEY_PRIORS,
    Music,
    NoHarmonyError,
    analyze,
    figure_of,
    harmony_statistics,
    key_name,
    music_from_voices,
    read_music,
    split_figure,
)
from bachsformer.keys import MODES
from bachsformer.midi import tracks_to_midi_bytes
from bachsformer.voices import Voices

STEPS = 4  # steps per quarter in these passages


def chorale(chords: list[tuple[int, int, int, int]], fermatas=()) -> Music:
    """Four voices (S, A, T, B) from one chord (MIDI pitches) per quarter; a repeated pitch is held."""
    voices = []
    for part in range(4):
        notes = []
        for beat, chord in enumerate(chords):
            if notes and notes[-1][2] == chord[part] and notes[-1][1] == beat * STEPS:
                notes[-1][1] += STEPS
            else:
                notes.append([beat * STEPS, (beat + 1) * STEPS, chord[part]])
        voices.append(np.array(notes))
    return music_from_voices(voices, STEPS, fermatas=fermatas)


C, F, G, G7 = (72, 67, 64, 48), (72, 69, 65, 53), (71, 67, 62, 55), (71, 65, 62, 43)
C_END = (72, 64, 55, 48)


def figures(analysis) -> list[tuple[str, str]]:
    return [(chord.key, chord.figure) for chord in analysis.chords]


def test_a_cadence_in_c_is_named_beat_by_beat():
    analysis = analyze(chorale([C, F, G7, C_END]))
    assert figures(analysis) == [("C", "I"), ("C", "IV"), ("C", "V7"), ("C", "I")]
    assert analysis.cadences == [{"offset": 3.0, "key": "C", "cadence": "authentic"}]
    assert [entry["offset"] for entry in analysis.as_json()] == [0.0, 1.0, 2.0, 3.0, 3.0]
    assert analysis.as_json()[0] == {"offset": 0.0, "key": "C", "figure": "I"}


def test_a_passing_tone_and_a_suspension_leave_the_chord_alone():
    music = chorale([C, C, F, F, G, G, C_END, C_END])
    soprano = music.voices == 0
    # the soprano C-C / C-C / B-B / C: a passing D between the first two chords' E... written as notes
    notes = music.notes.copy()
    notes[soprano] = [[0, 1, 72], [1, 1.5, 72], [1.5, 2, 74], [2, 4, 72], [4, 4.5, 72], [4.5, 6, 71], [6, 8, 72]][
        : int(soprano.sum())
    ]
    music = Music(notes, music.voices, music.voice_names)
    chords = figures(analyze(music))
    assert chords[1] == ("C", "I")  # the D on the second eighth passes
    assert chords[4] == ("C", "V")  # the soprano's C held over the beat falls to B: a suspension


def test_the_cadential_six_four_is_read_as_v():
    six_four = (72, 67, 64, 43)
    analysis = analyze(chorale([C, F, six_four, G7, C_END]))
    assert [figure for _, figure in figures(analysis)] == ["I", "IV", "V", "V7", "I"]


def test_a_phrase_in_the_dominant_is_read_in_the_dominant():
    g, c_in_g, d7, g_end = (71, 67, 62, 43), (72, 67, 64, 48), (72, 66, 62, 50), (71, 67, 62, 43)
    home = [C, F, G, C, C, F, G7, C_END]
    dominant = [g, c_in_g, d7, g, g, c_in_g, d7, g_end, g_end]
    analysis = analyze(chorale(home + dominant, fermatas=(7.0, 16.0)))
    keys = [key for key, _ in figures(analysis)]
    assert keys[:6] == ["C"] * 6 and keys[-5:] == ["G"] * 5
    assert {"offset": 16.0, "key": "G", "cadence": "authentic"} in analysis.cadences


def test_figures_name_the_chord_they_were_made_from():
    """Every triad, and every seventh chord a key holds or a secondary dominant, read back by music21."""
    music21 = pytest.importorskip("music21")
    for tonic, mode in ((0, "major"), (9, "minor"), (10, "major"), (6, "minor")):
        key = music21.key.Key(key_name(tonic, mode).replace("b", "-"))
        prior = KEY_PRIORS[(MODES.index(mode), tonic)]
        for root in range(12):
            for kind, intervals in CHORD_KINDS.items():
                if len(intervals) == 4 and prior[CHORDS.index((root, kind))] <= 0:
                    continue
                for bass_interval in intervals:
                    bass = (root + bass_interval) % 12
                    figure = figure_of(root, kind, bass, tonic, mode)
                    numeral = music21.roman.RomanNumeral(figure, key)
                    assert numeral.root().pitchClass == root, (figure, key)
                    assert numeral.bass().pitchClass == bass, (figure, key)
                    assert set(numeral.pitchClasses) == {(root + i) % 12 for i in intervals}, (figure, key)


def test_key_names_and_split_figures():
    assert [key_name(10, "major"), key_name(6, "minor"), key_name(4, "minor")] == ["Bb", "f#", "e"]
    assert split_figure("V6/5/V") == ("V/V", "6/5") and split_figure("viio7") == ("viio", "7")


def test_four_part_faults_are_named_with_their_voices_and_beat():
    fifths = [(72, 67, 64, 48), (74, 69, 65, 50)]  # S-B C-C to D-D, A-B G-C to A-D: all move up a step
    crossing = [(72, 67, 69, 53)]  # the tenor's A above the alto's G
    analysis = analyze(chorale(fifths + crossing + [(88, 64, 55, 48)]))  # the soprano's E6 out of range
    faults = {(f["offset"], f["fault"], tuple(f["voices"])) for f in analysis.faults}
    assert (1.0, "parallel fifths", ("Alto", "Bass")) in faults
    assert (1.0, "parallel octaves", ("Soprano", "Bass")) in faults
    assert (2.0, "crossing", ("Alto", "Tenor")) in faults
    assert (3.0, "range", ("Soprano",)) in faults
    assert (3.0, "spacing", ("Soprano", "Alto")) in faults


def test_more_than_four_voices_are_analysed_without_faults():
    music = chorale([C, F, G7, C_END])
    extra = music_from_voices(
        [music.notes[music.voices == v] * [STEPS, STEPS, 1] for v in range(4)] + [np.array([[0, 16, 84]])],
        STEPS,
        names=("S", "A", "T", "B", "Descant"),
    )
    analysis = analyze(extra)
    assert [figure for _, figure in figures(analysis)][0] == "I"
    assert analysis.faults == [] and "5 voices" in analysis.notes[0]


def test_one_line_or_no_notes_has_no_harmony():
    with pytest.raises(NoHarmonyError, match="one line"):
        analyze(music_from_voices([np.array([[0, 4, 60], [4, 8, 62]])], STEPS))
    with pytest.raises(NoHarmonyError, match="no notes"):
        analyze(music_from_voices([np.zeros((0, 3))], STEPS))


def test_atonal_clusters_are_marked_uncertain():
    rng = np.random.default_rng(0)
    voices = [np.array([[b * STEPS, (b + 1) * STEPS, 60 + rng.integers(12)] for b in range(8)]) for _ in range(6)]
    voices += [np.array([[b * STEPS, (b + 1) * STEPS, 61 + b] for b in range(8)])]
    analysis = analyze(music_from_voices(voices, STEPS, names=tuple("abcdefg")))
    assert any(chord.uncertain for chord in analysis.chords)
    assert all("uncertain" in entry for entry in analysis.as_json() if entry.get("uncertain"))


def test_a_four_track_midi_file_is_read_as_four_voices_and_analysed_from_the_command_line(tmp_path):
    music = chorale([C, F, G7, C_END])
    voices = Voices(tuple((music.notes[music.voices == v] * [8, 8, 1]).astype(np.int64) for v in range(4)), 4, 8)
    tracks = list(zip(("Soprano", "Alto", "Tenor", "Bass"), voices.notes))
    path = tmp_path / "cadence.mid"
    path.write_bytes(tracks_to_midi_bytes(tracks, 4, 8))
    read = read_music(path)
    assert read.voice_names == ("Soprano", "Alto", "Tenor", "Bass") and len(read.notes) == 15
    out = tmp_path / "analysis.json"
    result = subprocess.run(
        [sys.executable, "-m", "bachsformer.analyze", str(path), "--json", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())[:4] == [
        {"offset": 0.0, "key": "C", "figure": "I"},
        {"offset": 1.0, "key": "C", "figure": "IV"},
        {"offset": 2.0, "key": "C", "figure": "V7"},
        {"offset": 3.0, "key": "C", "figure": "I"},
    ]
    assert harmony_statistics([voices])["cadences"]["final"] == {"authentic": 1.0}


def test_bad_files_get_one_line(tmp_path):
    one_line = tmp_path / "tune.mid"
    one_line.write_bytes(tracks_to_midi_bytes([("Tune", np.array([[0, 8, 60], [8, 16, 62]]))], 2, 8))
    text = tmp_path / "notes.txt"
    text.write_text("not music")
    for path, message in (
        (text, "neither a MIDI file nor a MusicXML score"),
        (tmp_path / "none.mid", "no such file"),
        (one_line, "there is no harmony to analyse"),
    ):
        command = [sys.executable, "-m", "bachsformer.analyze", str(path)]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and message in result.stderr


def test_drums_alone_are_analysed_with_every_numeral_uncertain(tmp_path):
    path = tmp_path / "drums.mid"
    kicks, hats = [(36, beat, 0.5) for beat in range(8)], [(42, beat / 2, 0.5) for beat in range(16)]
    path.write_bytes(make_midi([], drum_notes=kicks + hats))
    analysis = analyze(read_music(path))
    assert len(analysis.chords) == 8 and all(chord.uncertain for chord in analysis.chords)
    assert "drums" in analysis.notes[0]


def test_a_written_chorale_reads_back_as_four_voices_with_its_numerals_under_the_bass(tmp_path):
    pytest.importorskip("music21")
    from bachsformer.keys import Key
    from bachsformer.score import voices_musicxml_bytes

    music = chorale([C, F, G7, C_END])
    voices = Voices(tuple((music.notes[music.voices == v] * [8, 8, 1]).astype(np.int64) for v in range(4)), 4, 8)
    analysis = analyze(music)
    path = tmp_path / "cadence.musicxml"
    path.write_bytes(voices_musicxml_bytes(voices, Key(0, "major"), analysis=analysis))
    read = read_music(path)
    assert len(read.voice_names) == 4 and sorted(map(tuple, read.notes)) == sorted(map(tuple, music.notes))
    assert figures(analyze(read)) == figures(analysis)
    text = path.read_text()
    assert "<words>C: I</words>" in text and "<words>authentic cadence</words>" in text


def test_offsets_of_a_midi_file_count_from_its_start_silent_beats_have_no_chord(tmp_path):
    music = chorale([C, F, G7, C_END])
    late = [(name, (music.notes[music.voices == v] * [8, 8, 1] + [16, 16, 0]).astype(np.int64)) for v, name in
            enumerate(("Soprano", "Alto", "Tenor", "Bass"))]  # fmt: skip
    path = tmp_path / "after two rests.mid"
    path.write_bytes(tracks_to_midi_bytes(late, 6, 8))
    analysis = analyze(read_music(path))
    assert figures(analysis) == [("C", "I"), ("C", "IV"), ("C", "V7"), ("C", "I")]
    assert [chord.offset for chord in analysis.chords] == [2.0, 3.0, 4.0, 5.0]
    assert analysis.cadences == [{"offset": 5.0, "key": "C", "cadence": "authentic"}]


def test_numerals_in_a_score_with_a_pickup_stand_under_their_chords(tmp_path):
    music21 = pytest.importorskip("music21")
    from bachsformer.keys import Key
    from bachsformer.midi import Meter, Tempo, TimeSignature
    from bachsformer.score import voices_musicxml_bytes

    music = chorale([C, F, G7, C_END])
    voices = Voices(tuple((music.notes[music.voices == v] * [8, 8, 1]).astype(np.int64) for v in range(4)), 4, 8)
    pickup = Meter((TimeSignature(0.0, 3, 4),), (Tempo(0.0, 90.0),), lead=2.0)  # the music starts on beat 3
    data = voices_musicxml_bytes(voices, Key(0, "major"), pickup, analysis=analyze(music))
    score = music21.converter.parseData(data.decode(), format="musicxml")
    bass = score.parts[-1]
    found = bass.recurse().getElementsByClass("TextExpression")
    marks = [(float(mark.getOffsetInHierarchy(bass)), mark.content) for mark in found]
    assert marks == [(2.0, "C: I"), (3.0, "IV"), (4.0, "V7"), (5.0, "I")]
