"""Bach's voices beside their VQ-VAE reconstruction: each voice's agreement, held notes, four-part figures.

    python -m benchmarks.reconstruction --file data/midi/bwv10.7.mid --quarters 73-88 --png cadence.png
    python -m benchmarks.reconstruction --file data/midi/bwv10.7.mid --midi bwv10.7_through_the_codes.mid
    python -m benchmarks.reconstruction --file data/midi/bwv10.7.mid --set models.vq_vae=runs/vq/best.pt

The file's four voices are read as the models learn them (its parts, or split by the voicing rule;
key-normalized when data.normalize_key), encoded, decoded as one piece (short notes dropped as
generation drops them) and moved back. Prints, for the whole file and for the chosen quarters,
each voice's share of sixteenth steps on Bach's key (or rest), how many of the notes Bach holds
across a quarter boundary come back held, and the four-part figures (rules.voice_figures) of both.
--midi writes the reconstruction as four named tracks (Soprano, Alto, Tenor, Bass) in the file's
key, on its grid and with its meter; --png draws the chosen quarters, Bach's above the reconstruction's.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bachsformer.compose import decode_voices
from bachsformer.config import load_config
from bachsformer.errors import ArgumentParser, exit_on_user_error
from bachsformer.harmonize import parse_passage
from bachsformer.keys import estimate_key, normalizing_shift
from bachsformer.midi import read_meter, tracks_to_midi_bytes, write_bytes
from bachsformer.render import require_matplotlib, write_rolls_png
from bachsformer.rules import voice_figures
from bachsformer.voices import SILENCE, VOICE_NAMES, Voices, note_starts, read_voices
from bachsformer.voicing import grid_steps
from bachsformer.vqvae import VQVAE


def agreement(bach: Voices, reconstruction: Voices) -> str:
    """Each voice's share of sixteenth steps with Bach's key or rest, and Bach's held notes kept held."""
    true_keys, true_onsets = bach.lines()
    got_keys, got_onsets = reconstruction.lines()
    flat = [keys.transpose(1, 0, 2).reshape(keys.shape[1], -1) for keys in (true_keys, got_keys)]  # [V, T]
    sixteenth = bach.steps_per_quarter // 4
    shares = (flat[0][:, ::sixteenth] == flat[1][:, ::sixteenth]).mean(axis=1)
    starts = [
        note_starts(k, o.transpose(1, 0, 2).reshape(o.shape[1], -1)) for k, o in zip(flat, (true_onsets, got_onsets))
    ]
    boundaries = np.arange(bach.steps_per_quarter, flat[0].shape[1], bach.steps_per_quarter)
    held = (flat[0][:, boundaries] != SILENCE) & ~starts[0][:, boundaries]
    kept = held & (flat[1][:, boundaries] == flat[0][:, boundaries]) & ~starts[1][:, boundaries]
    voices = ", ".join(f"{name} {share:.3f}" for name, share in zip(VOICE_NAMES, shares))
    return f"sixteenths on Bach's key or rest: {voices}; held across a boundary: {int(kept.sum())} of {int(held.sum())}"


def figures(voices: Voices) -> str:
    row = voice_figures([voices])
    leaps = ", ".join(f"{name} {leap:.2f}" for name, leap in row["leaps"].items())
    return (
        f"parallels {row['parallels']:.2f} per 100 quarters, inner rests {row['inner_rests']:.3f},"
        f" unisons {row['unisons']:.3f}, crossings {row['crossings']:.2f}, leaps {leaps},"
        f" {row['notes_per_quarter']:.2f} notes per quarter"
    )


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    parser.add_argument("--file", default="data/midi/bwv10.7.mid", help="a MIDI file (default: bwv10.7)")
    parser.add_argument("--quarters", metavar="A-B", help="quarters to report and draw, from 1 (default: all)")
    parser.add_argument("--png", help="draw the quarters, Bach's above the reconstruction's, into this PNG")
    parser.add_argument("--midi", help="write the reconstruction as four named tracks into this MIDI file")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    if args.png:
        require_matplotlib()
    bach, read_as = read_voices(args.file, grid_steps(config.generate.grid, 32), config.data.max_quarters)
    first, last = (
        parse_passage(args.quarters, bach.num_quarters, args.file) if args.quarters else (1, bach.num_quarters)
    )

    vq_vae = VQVAE.from_checkpoint(config.models.vq_vae)
    key = estimate_key(bach.quarters())
    shift = normalizing_shift(bach.quarters(), key) if config.data.normalize_key else 0
    keys, onsets = (torch.from_numpy(lines) for lines in bach.transposed(shift).lines())
    codes = vq_vae.encode(keys, onsets)
    reconstruction = decode_voices(vq_vae, codes.flatten(), config.generate.min_note_steps).transposed(-shift)

    print(f"{args.file} ({key}; voices from its {read_as}) through {config.models.vq_vae}")
    print(f"  whole file: {agreement(bach, reconstruction)}")
    print(f"  Bach: {figures(bach)}")
    print(f"  reconstruction: {figures(reconstruction)}")
    bach_part, reconstruction_part = bach.sliced(first - 1, last), reconstruction.sliced(first - 1, last)
    if args.quarters:
        print(f"  quarters {first}-{last}: {agreement(bach_part, reconstruction_part)}")
    if args.midi:
        meter = read_meter(args.file)
        tracks = list(zip(VOICE_NAMES, reconstruction.notes))
        data = tracks_to_midi_bytes(
            tracks,
            reconstruction.num_quarters,
            reconstruction.steps_per_quarter,
            program=config.generate.program,
            meter=meter,
            key_signature=key.signature,
        )
        print(f"wrote {write_bytes(data, args.midi)}")
    if args.png:
        panels = [(bach_part.quarters(), f"Bach: {args.file}, quarters {first}-{last}")]
        panels.append((reconstruction_part.quarters(), f"through the VQ-VAE ({config.models.vq_vae})"))
        write_rolls_png(panels, args.png, overwrite=True)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    exit_on_user_error(main)
