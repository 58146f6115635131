"""Previews of generated music: a WAV file to listen to and a piano-roll picture to look at.

WAV uses FluidSynth when it is usable (the pyfluidsynth package and the FluidSynth library), with
the General MIDI SoundFont pretty_midi ships (TimGM6mb.sf2) or the one $BACHSFORMER_SOUNDFONT
names, so the MIDI file's instrument (its program change) is heard; otherwise pretty_midi's own
sine-wave synthesis, so a preview is always written. The picture needs matplotlib, an optional
dependency: a piano roll with the bar lines of the piece's time signatures, and the melody, the
primer and a regenerated passage marked, as a legend says.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bachsformer.errors import BachsformerError
from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, Meter

SAMPLE_RATE = 22_050
SOUNDFONT_VARIABLE = "BACHSFORMER_SOUNDFONT"
REAL_INSTRUMENTS = (
    "for real instruments install pyfluidsynth (pip install pyfluidsynth) and the FluidSynth library"
    " (apt install libfluidsynth3, brew install fluid-synth)"
)


def soundfont() -> Path:
    """The SoundFont for previews: $BACHSFORMER_SOUNDFONT, else the General MIDI one pretty_midi ships."""
    import pretty_midi

    return Path(os.environ.get(SOUNDFONT_VARIABLE) or Path(pretty_midi.__file__).parent / "TimGM6mb.sf2")


def _fluidsynth_audio(music, sound_font: Path) -> np.ndarray | None:
    """FluidSynth's rendering of a PrettyMIDI, or None when pyfluidsynth or its library is missing."""
    try:
        # positional: the SoundFont is `sf2_path` in pretty_midi 0.2.10 and `synthesizer` from 0.2.11
        return music.fluidsynth(SAMPLE_RATE, str(sound_font))
    except (ImportError, OSError):  # pretty_midi without pyfluidsynth; pyfluidsynth without libfluidsynth
        return None


@dataclass(frozen=True)
class Rendering:
    """How a WAV preview was made."""

    synthesizer: str  # "FluidSynth with TimGM6mb.sf2", or "sine waves"
    note: str = ""  # with sine waves: one line saying why, and how to get real instruments


def write_wav(midi_path: str | Path, wav_path: str | Path) -> Rendering:
    """Render a MIDI file to a 16-bit mono WAV at `wav_path` (never overwritten); says how."""
    import pretty_midi

    music = pretty_midi.PrettyMIDI(str(midi_path))
    sound_font = soundfont()
    audio = _fluidsynth_audio(music, sound_font) if sound_font.is_file() else None
    if audio is not None:
        rendering = Rendering(f"FluidSynth with {sound_font.name}")
    else:
        audio = music.synthesize(fs=SAMPLE_RATE)
        why = f"${SOUNDFONT_VARIABLE} names no file ({sound_font})" if not sound_font.is_file() else REAL_INSTRUMENTS
        rendering = Rendering("sine waves", f"WAV previews are sine waves: {why}")
    peak = np.abs(audio).max(initial=0.0) or 1.0  # a piece without notes renders as an empty WAV
    samples = (audio / peak * 0.9 * 32767).astype("<i2")
    with open(wav_path, "xb") as file, wave.open(file, "wb") as audio_file:  # "x": never overwrite
        audio_file.setnchannels(1)
        audio_file.setsampwidth(2)
        audio_file.setframerate(SAMPLE_RATE)
        audio_file.writeframes(samples.tobytes())
    return rendering


MELODY_COLOUR = (0.85, 0.1, 0.1)  # red notes
PRIMER_SHADE = (0.12, 0.47, 0.71, 0.15)  # a blue wash over the quarters kept from the primer
PASSAGE_SHADE = (1.0, 0.5, 0.05, 0.25)  # an orange wash over the quarters regenerated
BAR_LINE_COLOUR = (0.5, 0.5, 0.5)


def require_matplotlib() -> None:
    """BachsformerError, in one line, when matplotlib is not installed (--png checks before writing anything)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BachsformerError("--png needs matplotlib: pip install matplotlib") from None


def _pyplot():
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def piano_roll_figure(
    quarters: np.ndarray,
    title: str = "",
    *,
    meter: Meter | None = None,
    melody: np.ndarray | None = None,
    primer_quarters: int = 0,
    passage: tuple[int, int] | None = None,
):
    """The picture `write_png` saves, as a matplotlib figure (the caller closes it).

    Notes are black, the melody's red; the first `primer_quarters` quarters (a primer kept as read)
    lie under a blue wash and the regenerated quarters `passage` (first, last; from 1) under an
    orange one; bar lines follow the meter's time signatures (4/4 when None). A legend names them.
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    meter = meter or Meter()
    roll = np.asarray(quarters, dtype=bool).transpose(1, 0, 2).reshape(NUM_KEYS, -1)  # [88, Q * 32]
    num_quarters, steps = len(quarters), np.shape(quarters)[2]
    keys = np.nonzero(roll.any(axis=1))[0]
    low, high = (keys[0], keys[-1]) if len(keys) else (0, NUM_KEYS - 1)
    image = np.ones((*roll.shape, 3))  # [88, Q * 32, RGB]
    image[roll] = 0.0
    legend = [Patch(color="black", label="notes")]
    if melody is not None:
        melody_roll = np.asarray(melody, dtype=bool).transpose(1, 0, 2).reshape(NUM_KEYS, -1)
        image[roll & melody_roll] = MELODY_COLOUR
        legend.append(Patch(color=MELODY_COLOUR, label="melody"))
    figure, axis = plt.subplots(figsize=(max(6, num_quarters / 6), 3.5), dpi=120)
    axis.imshow(
        image[low : high + 1],
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        extent=(0, num_quarters, low + LOWEST_PITCH - 0.5, high + LOWEST_PITCH + 0.5),
    )
    if primer_quarters:
        axis.axvspan(0, primer_quarters, color=PRIMER_SHADE, linewidth=0)
        legend.append(Patch(color=PRIMER_SHADE, label=f"primer (quarters 1-{primer_quarters})"))
    if passage is not None:
        first, last = passage
        axis.axvspan(first - 1, last, color=PASSAGE_SHADE, linewidth=0)
        legend.append(Patch(color=PASSAGE_SHADE, label=f"regenerated (quarters {first}-{last})"))
    for bar in meter.bar_lines(num_quarters):
        axis.axvline(bar, color=BAR_LINE_COLOUR, linewidth=0.4)
    signatures = dict.fromkeys(f"{ts.numerator}/{ts.denominator}" for _, _, ts in meter.bars(num_quarters))
    legend.append(Line2D([], [], color=BAR_LINE_COLOUR, linewidth=0.8, label=f"bars ({', '.join(signatures)})"))
    axis.legend(handles=legend, loc="upper right", fontsize=7, framealpha=0.85)
    axis.set_xlim(0, num_quarters)
    axis.set_ylabel("MIDI pitch")
    axis.set_xlabel(f"quarter notes ({steps} steps each)")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def write_png(
    quarters: np.ndarray,
    png_path: str | Path,
    title: str = "",
    *,
    meter: Meter | None = None,
    melody: np.ndarray | None = None,
    primer_quarters: int = 0,
    passage: tuple[int, int] | None = None,
) -> None:
    """Draw quarters [Q, 88, 32] as a piano roll at `png_path` (never overwritten); see `piano_roll_figure`."""
    figure = piano_roll_figure(
        quarters, title, meter=meter, melody=melody, primer_quarters=primer_quarters, passage=passage
    )
    try:
        with open(png_path, "xb") as file:
            figure.savefig(file, format="png")
    finally:
        _pyplot().close(figure)


def write_rolls_png(
    panels: list[tuple[np.ndarray, str]], png_path: str | Path, melody: np.ndarray | None = None, overwrite=False
) -> None:
    """Draw pieces [Q, 88, 32] as piano rolls one above the other on a shared pitch axis.

    melody: quarters [Q, 88, 32] drawn in red wherever a panel sounds them (a harmonized tune).
    Refuses to overwrite an existing file unless `overwrite`.
    """
    plt = _pyplot()
    rolls = [np.asarray(q).transpose(1, 0, 2).reshape(NUM_KEYS, -1) for q, _ in panels]  # [88, Q * 32] each
    keys = np.nonzero(np.logical_or.reduce([roll.any(1) for roll in rolls]))[0]
    low, high = (keys[0], keys[-1]) if len(keys) else (0, NUM_KEYS - 1)
    num_quarters = max(len(q) for q, _ in panels)
    steps = panels[0][0].shape[2]
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(max(6, num_quarters / 6), 3.0 * len(panels) + 0.5), dpi=120, squeeze=False
    )
    melody_roll = None if melody is None else np.asarray(melody).transpose(1, 0, 2).reshape(NUM_KEYS, -1)
    for axis, roll, (quarters, title) in zip(axes[:, 0], rolls, panels):
        image = np.ones((*roll.shape, 3))
        image[roll] = 0.0  # black notes
        if melody_roll is not None and melody_roll.shape == roll.shape:
            image[roll & melody_roll] = (0.85, 0.1, 0.1)  # the melody in red
        axis.imshow(
            image[low : high + 1],
            aspect="auto",
            origin="lower",
            interpolation="nearest",
            extent=(0, len(quarters), low + LOWEST_PITCH - 0.5, high + LOWEST_PITCH + 0.5),
        )
        for bar in range(0, len(quarters) + 1, 4):
            axis.axvline(bar, color="tab:blue", linewidth=0.3)
        axis.set_xlim(0, num_quarters)
        axis.set_ylabel("MIDI pitch")
        axis.set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel(f"quarter notes ({steps} steps each)")
    figure.tight_layout()
    with open(png_path, "wb" if overwrite else "xb") as file:
        figure.savefig(file, format="png")
    plt.close(figure)
