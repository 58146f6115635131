"""WAV previews: FluidSynth with a General MIDI SoundFont when it is usable, sine waves (and a note
saying how to get real instruments) when it is not; the MIDI file's program is the instrument."""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
import tiny
from midi_files import roll

from bachsformer import render
from bachsformer.errors import BachsformerError
from bachsformer.midi import Meter, TimeSignature, write_midi

MUSIC = roll(4, (60, 0, 60), (64, 32, 120), (67, 64, 128))


@pytest.fixture
def no_fluidsynth(monkeypatch):
    """pretty_midi as it is without pyfluidsynth (or without the FluidSynth library under it)."""

    def missing(*args, **kwargs):
        raise ImportError("fluidsynth() was called but pyfluidsynth is not installed.")

    monkeypatch.setattr(pretty_midi.PrettyMIDI, "fluidsynth", missing)
    monkeypatch.delenv(render.SOUNDFONT_VARIABLE, raising=False)


def frames(path: Path) -> np.ndarray:
    with wave.open(str(path)) as audio:
        assert audio.getnchannels() == 1 and audio.getsampwidth() == 2 and audio.getframerate() == render.SAMPLE_RATE
        return np.frombuffer(audio.readframes(audio.getnframes()), dtype="<i2")


def test_the_default_soundfont_is_the_general_midi_one_pretty_midi_ships(monkeypatch):
    monkeypatch.delenv(render.SOUNDFONT_VARIABLE, raising=False)
    assert render.soundfont().name == "TimGM6mb.sf2" and render.soundfont().is_file()
    monkeypatch.setenv(render.SOUNDFONT_VARIABLE, "/sound/fonts/organ.sf2")
    assert render.soundfont() == Path("/sound/fonts/organ.sf2")


def test_without_fluidsynth_a_wav_of_sine_waves_is_written_with_a_note_on_real_instruments(tmp_path, no_fluidsynth):
    midi = write_midi(MUSIC, tmp_path / "piece.mid")
    rendering = render.write_wav(midi, tmp_path / "piece.wav")
    assert rendering.synthesizer == "sine waves"
    assert "pip install pyfluidsynth" in rendering.note and "FluidSynth library" in rendering.note
    assert "\n" not in rendering.note
    assert np.abs(frames(tmp_path / "piece.wav")).max() > 0


def test_a_soundfont_variable_naming_no_file_falls_back_to_sine_waves_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(render.SOUNDFONT_VARIABLE, str(tmp_path / "missing.sf2"))
    midi = write_midi(MUSIC, tmp_path / "piece.mid")
    rendering = render.write_wav(midi, tmp_path / "piece.wav")
    assert rendering.synthesizer == "sine waves"
    assert f"${render.SOUNDFONT_VARIABLE} names no file" in rendering.note and "missing.sf2" in rendering.note
    assert len(frames(tmp_path / "piece.wav")) > 0


def test_a_wav_is_never_written_over_an_existing_file(tmp_path, no_fluidsynth):
    midi = write_midi(MUSIC, tmp_path / "piece.mid")
    (tmp_path / "piece.wav").write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        render.write_wav(midi, tmp_path / "piece.wav")
    assert (tmp_path / "piece.wav").read_bytes() == b"keep me"


def test_fluidsynth_plays_the_files_program_with_the_shipped_soundfont(tmp_path, monkeypatch):
    pytest.importorskip("fluidsynth", reason="pyfluidsynth and the FluidSynth library are optional")
    monkeypatch.delenv(render.SOUNDFONT_VARIABLE, raising=False)
    organ = render.write_wav(write_midi(MUSIC, tmp_path / "organ.mid", program=19), tmp_path / "organ.wav")
    piano = render.write_wav(write_midi(MUSIC, tmp_path / "piano.mid", program=0), tmp_path / "piano.wav")
    assert organ.synthesizer == piano.synthesizer == "FluidSynth with TimGM6mb.sf2" and not organ.note
    organ_frames, piano_frames = frames(tmp_path / "organ.wav"), frames(tmp_path / "piano.wav")
    assert len(organ_frames) > 0 and not np.array_equal(organ_frames, piano_frames)


# --------------------------------------------------------------------------------------------
# generate.py --wav and --program


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("render")
    tiny.write_config(root)
    tiny.write_model_pair(root)
    return root


@pytest.fixture
def run(root, monkeypatch, capsys):
    config = ("--config", str(root / "config.yaml"))
    return lambda *args: tiny.run_script("generate.py", *config, *args, monkeypatch=monkeypatch, capsys=capsys)


def test_generate_wav_without_fluidsynth_writes_the_preview_and_says_how_to_get_real_instruments(
    run, tmp_path, no_fluidsynth
):
    status, out, err = run("--out", str(tmp_path), "--quarters", "2", "--num", "2", "--wav")
    assert status == 0, err
    wavs = [Path(line) for line in out.splitlines() if line.endswith(".wav")]
    assert len(wavs) == 2 and all(len(frames(path)) > 0 for path in wavs)
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "sine waves" in notes[0] and "pip install pyfluidsynth" in notes[0]  # once per run


@pytest.mark.parametrize(
    ("options", "program"), [((), 19), (("--program", "52"), 52), (("--set", "generate.program=0"), 0)]
)
def test_generate_writes_the_configured_program_into_the_midi(run, tmp_path, options, program):
    status, out, err = run("--out", str(tmp_path), "--quarters", "2", *options)
    assert status == 0, err
    midi = mido.MidiFile(out.splitlines()[0])
    assert [message.program for message in midi.tracks[0] if message.type == "program_change"] == [program]


def test_generate_refuses_a_program_outside_general_midi(run, tmp_path):
    status, out, err = run("--out", str(tmp_path), "--program", "128")
    assert status == 2 and err.strip() == "error: --program: must be a General MIDI program 0 ... 127, got 128"


# --------------------------------------------------------------------------------------------
# the piano roll


def test_the_piano_roll_marks_bars_melody_primer_and_passage_with_a_legend():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    meter = Meter((TimeSignature(0.0, 1, 4), TimeSignature(1.0, 3, 4)))
    melody = roll(8, (72, 0, 64))
    music = melody | roll(8, (60, 0, 256))
    figure = render.piano_roll_figure(music, "t", meter=meter, melody=melody, primer_quarters=2, passage=(5, 6))
    try:
        (axis,) = figure.axes
        labels = [text.get_text() for text in axis.get_legend().get_texts()]
        assert labels == ["notes", "melody", "primer (quarters 1-2)", "regenerated (quarters 5-6)", "bars (1/4, 3/4)"]
        assert [line.get_xdata()[0] for line in axis.lines] == [0.0, 1.0, 4.0, 7.0]
        spans = [(patch.get_x(), patch.get_x() + patch.get_width()) for patch in axis.patches]
        assert spans == [(0.0, 2.0), (4.0, 6.0)]
        image = axis.images[0].get_array()  # [keys 60 ... 72, steps, RGB]
        assert tuple(image[72 - 60, 10]) == render.MELODY_COLOUR and tuple(image[0, 10]) == (0.0, 0.0, 0.0)
        assert tuple(image[72 - 60, 100]) == (1.0, 1.0, 1.0)  # the melody has ended
    finally:
        plt.close(figure)


def test_free_music_has_bars_of_four_quarters_and_nothing_marked():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    figure = render.piano_roll_figure(roll(9, (60, 0, 288)))
    try:
        (axis,) = figure.axes
        assert [text.get_text() for text in axis.get_legend().get_texts()] == ["notes", "bars (4/4)"]
        assert [line.get_xdata()[0] for line in axis.lines] == [0.0, 4.0, 8.0] and not axis.patches
    finally:
        plt.close(figure)


def test_without_matplotlib_a_picture_is_refused_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(BachsformerError, match=r"^--png needs matplotlib: pip install matplotlib$"):
        render.write_png(MUSIC, tmp_path / "piece.png")
    assert not (tmp_path / "piece.png").exists()
