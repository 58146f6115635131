"""Bach's music beside its VQ-VAE reconstruction: do held notes come back held?

    python -m benchmarks.reconstruction --file data/midi/bwv10.7.mid --quarters 73-88 --png cadence.png
    python -m benchmarks.reconstruction --file data/midi/bwv10.7.mid --set models.vq_vae=runs/vq/best.pt

The file is read as the models learn it (key-normalized when data.normalize_key), encoded,
decoded as one piece (short notes dropped as generation drops them) and moved back. Prints, for
the whole file and for the chosen quarters, how many notes each has, the share a half note or
longer, the share held across a quarter boundary, and of the notes Bach holds across a boundary
(or strikes again on one) how many come back so; --png draws the chosen quarters, Bach's above
the reconstruction's.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bachsformer.compose import decode_quarters
from bachsformer.config import load_config
from bachsformer.errors import ArgumentParser, exit_on_user_error
from bachsformer.guided import parse_passage
from bachsformer.keys import estimate_key, normalizing_shift, transpose_quarters
from bachsformer.metrics import note_lengths
from bachsformer.midi import NUM_KEYS, quarters_to_notes, read_midi
from bachsformer.render import require_matplotlib, write_rolls_png
from bachsformer.vqvae import VQVAE, boundary_ties


def describe(name: str, quarters: np.ndarray, bach: np.ndarray) -> str:
    notes = quarters_to_notes(quarters)
    lengths = note_lengths(notes, quarters.shape[2])
    as_roll = [torch.from_numpy(q.transpose(1, 0, 2).reshape(NUM_KEYS, -1)) for q in (bach, quarters)]
    ties = boundary_ties(*as_roll, steps=quarters.shape[2])
    return (
        f"{name}: {len(notes)} notes, {lengths['long_notes']:.3f} a half note or longer,"
        f" {lengths['tied_notes']:.3f} held across a quarter boundary; of Bach's {ties['held']} held across a"
        f" boundary {ties['held_kept']} held, of his {ties['restruck']} struck again {ties['restruck_kept']}"
    )


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    parser.add_argument("--file", default="data/midi/bwv10.7.mid", help="a MIDI file (default: bwv10.7)")
    parser.add_argument("--quarters", metavar="A-B", help="quarters to report and draw, from 1 (default: all)")
    parser.add_argument("--png", help="draw the quarters, Bach's above the reconstruction's, into this PNG")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    if args.png:
        require_matplotlib()
    bach = read_midi(args.file).quarters
    first, last = parse_passage(args.quarters, len(bach), args.file) if args.quarters else (1, len(bach))

    vq_vae = VQVAE.from_checkpoint(config.models.vq_vae)
    key = estimate_key(bach)
    shift = normalizing_shift(bach, key) if config.data.normalize_key else 0
    codes = vq_vae.encode(torch.from_numpy(transpose_quarters(bach, shift)))
    reconstructed = decode_quarters(vq_vae, codes.flatten(), min_note_steps=config.generate.min_note_steps)
    reconstructed = transpose_quarters(reconstructed, -shift)

    print(f"{args.file} ({key}) through {config.models.vq_vae}")
    print(describe("  Bach, whole file", bach, bach))
    print(describe("  reconstruction, whole file", reconstructed, bach))
    passage = slice(first - 1, last)
    print(describe(f"  Bach, quarters {first}-{last}", bach[passage], bach[passage]))
    print(describe(f"  reconstruction, quarters {first}-{last}", reconstructed[passage], bach[passage]))
    if args.png:
        panels = [(bach[passage], f"Bach: {args.file}, quarters {first}-{last}")]
        panels.append((reconstructed[passage], f"through the VQ-VAE ({config.models.vq_vae})"))
        write_rolls_png(panels, args.png, overwrite=True)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    exit_on_user_error(main)
