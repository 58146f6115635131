"""The chorales' four voices as voicing.py reads them: each voice's range, and how long its rests are.

    python -m benchmarks.voice_ranges [--midi-dir data/midi]

For the Soprano, Alto, Tenor and Bass tracks of every file: the lowest and highest MIDI pitch and the
1st and 99th percentiles of the notes' pitches (voicing.VOICE_RANGES are the percentiles), and the
rests inside each voice (between two of its notes) by length in quarters. Not a speed benchmark:
the figures voicing.py and docs/design.md rest on.
"""

import argparse
from collections import Counter

import numpy as np

from bachsformer.data import midi_files
from bachsformer.midi import STEPS_PER_QUARTER, MidiError, quarters_to_notes, read_midi_tracks
from bachsformer.voices import VOICE_NAMES, restore_repeats
from bachsformer.voicing import VOICE_RANGES


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--midi-dir", default="data/midi")
    args = parser.parse_args()
    pitches = {name: [] for name in VOICE_NAMES}
    rests: Counter = Counter()
    notes_total = 0
    for path in midi_files(args.midi_dir):
        try:
            tracks = read_midi_tracks(path)
        except MidiError:
            continue
        for track in tracks:
            if track.name not in pitches:
                continue
            notes = restore_repeats(quarters_to_notes(track.quarters))
            notes = notes[np.argsort(notes[:, 0], kind="stable")]
            pitches[track.name].extend(notes[:, 2].tolist())
            gaps = notes[1:, 0] - notes[:-1, 1]
            rests.update((gaps[gaps > 0] / STEPS_PER_QUARTER).tolist())
            notes_total += len(notes)
    print("| voice | notes | lowest | 1st percentile | 99th percentile | highest | voicing range |")
    print("|---|---|---|---|---|---|---|")
    for (name, values), (low, high) in zip(pitches.items(), VOICE_RANGES):
        values = np.array(values)
        first, last = np.percentile(values, [1, 99])
        print(f"| {name} | {len(values)} | {values.min()} | {first:g} | {last:g} | {values.max()} | {low}-{high} |")
    short = sum(count for length, count in rests.items() if length < 1)
    print(f"\nrests inside a voice, in {notes_total} notes: {sum(rests.values())}; shorter than a quarter: {short}")
    print("by length in quarters: " + ", ".join(f"{length:g}: {count}" for length, count in sorted(rests.items())))


if __name__ == "__main__":
    main()
