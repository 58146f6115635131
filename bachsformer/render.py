"""Previews of generated music: a WAV file to listen to and a piano-roll picture to look at.

WAV uses FluidSynth with a SoundFont when both are installed (pyfluidsynth; the SoundFont from
$BACHSFORMER_SOUNDFONT), and otherwise pretty_midi's own sine-wave synthesis, so it always works.
The picture needs matplotlib, an optional dependency.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np

from bachsformer.errors import BachsformerError
from bachsformer.midi import LOWEST_PITCH

SAMPLE_RATE = 22_050


def write_wav(midi_path: str | Path, wav_path: str | Path) -> str:
    """Render a MIDI file to a 16-bit mono WAV; returns the synthesizer used."""
    import pretty_midi

    music = pretty_midi.PrettyMIDI(str(midi_path))
    soundfont = os.environ.get("BACHSFORMER_SOUNDFONT")
    audio, synthesizer = None, "pretty_midi sine synthesis"
    if soundfont and Path(soundfont).is_file():
        try:
            audio = music.fluidsynth(fs=SAMPLE_RATE, sf2_path=soundfont)
            synthesizer = f"FluidSynth ({Path(soundfont).name})"
        except ImportError:
            audio = None
    if audio is None:
        audio = music.synthesize(fs=SAMPLE_RATE)
    peak = np.abs(audio).max(initial=0.0) or 1.0  # a piece without notes renders as an empty WAV
    samples = (audio / peak * 0.9 * 32767).astype("<i2")
    with open(wav_path, "xb") as file, wave.open(file, "wb") as audio_file:  # "x": never overwrite
        audio_file.setnchannels(1)
        audio_file.setsampwidth(2)
        audio_file.setframerate(SAMPLE_RATE)
        audio_file.writeframes(samples.tobytes())
    return synthesizer


def write_png(quarters: np.ndarray, png_path: str | Path, title: str = "") -> None:
    """Draw quarters [Q, 88, 32] as a piano roll, with a line at every bar of four quarters."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BachsformerError("--png needs matplotlib: pip install matplotlib") from None
    roll = np.asarray(quarters).transpose(1, 0, 2).reshape(quarters.shape[1], -1)  # [88, Q * 32]
    keys = np.nonzero(roll.any(1))[0]
    low, high = (keys[0], keys[-1]) if len(keys) else (0, roll.shape[0] - 1)
    steps = quarters.shape[2]
    figure, axes = plt.subplots(figsize=(max(6, len(quarters) / 6), 3.5), dpi=120)
    axes.imshow(
        roll[low : high + 1],
        aspect="auto",
        origin="lower",
        cmap="Greys",
        interpolation="nearest",
        extent=(0, len(quarters), low + LOWEST_PITCH - 0.5, high + LOWEST_PITCH + 0.5),
    )
    for bar in range(0, len(quarters) + 1, 4):
        axes.axvline(bar, color="tab:blue", linewidth=0.3)
    axes.set_xlabel(f"quarter notes ({steps} steps each)")
    axes.set_ylabel("MIDI pitch")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    with open(png_path, "xb") as file:
        figure.savefig(file, format="png")
    plt.close(figure)
