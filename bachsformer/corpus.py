"""Export the Bach chorales bundled with music21 to MIDI files, and a set of folk tunes to harmonize.

Usage::

    python -m bachsformer.corpus [--out data/midi] [--overwrite]
    python -m bachsformer.corpus --folk [--out data/tunes/folk]

Writes one MIDI file per chorale, named after the corpus file's stem
(``bach/bwv66.6.mxl`` -> ``data/midi/bwv66.6.mid``), in sorted order. Existing
files are kept unless ``--overwrite`` is given. A file that cannot be exported
is reported on one line and skipped; the exit status is 1 if any failed.

music21 is needed only by this command, not by the rest of bachsformer, so it
is imported lazily (``pip install music21``).

Which files are exported: ``music21.corpus.getComposer("bach")`` lists every
file under ``music21/corpus/bach/`` (433 in music21 10.5: 408 ``.mxl``,
2 ``.xml``, 3 ``.krn``, 20 ``.rntxt``). That is more complete than
``music21.corpus.chorales.Iterator``, which walks the 371 Riemenschneider
numbers; these resolve to only 350 distinct files, leave out about 60 chorales
that are in the corpus (``bwv1.6``, ``bwv66.6``, ...) and name one file that is
not (``bwv18.5-l``). From the ``getComposer`` list this module drops:

* the ``.rntxt`` files in ``choraleAnalyses/``: Roman-numeral analyses, not
  scores;
* ``.krn`` copies of chorales that also exist as MusicXML (the MusicXML,
  which carries voice names, is preferred);
* ``bwv846``: the C major prelude from the Well-Tempered Clavier, not a chorale.

Phrase ends: each fermata of the score becomes a marker meta event (text ``fermata``, in a track
of its own added after the parts) at the onset of the note that carries it, so that a folder of
MIDI files carries the chorales' phrases (bachsformer/tune.py reads them); the parts' bytes are
those music21 writes.

Folk tunes (``--folk``): the first FOLK_TUNES tunes of FOLK_SOURCE, the German children's songs of
the Essen folk song collection in music21's corpus, in the collection's order, one MIDI file each
(``kinder0-01.mid`` ...). They are tunes the models never saw, for ``python -m bachsformer.evaluate
--melodies data/tunes/folk``.

Scores are parsed with ``forceSource=True`` so music21 writes no pickle cache.
The MIDI bytes depend only on the score, so repeated exports are identical.
"""

import argparse
import sys
from pathlib import Path
from types import ModuleType

from tqdm import tqdm

SCORE_SUFFIXES = (".mxl", ".xml", ".krn")
"""Score formats to export, most preferred first when one chorale has several."""

NOT_CHORALES = frozenset({"bwv846"})
"""Stems of files in music21's Bach corpus that are not chorales."""

FOLK_SOURCE = "essenFolksong/kinder0.abc"
"""The folk tunes' source in music21's corpus: an ABC file of 213 tunes."""

FOLK_TUNES = 24
"""How many of them are exported, from the first."""


def require_music21() -> ModuleType:
    """Import music21, or exit with a one-line hint if it is not installed."""
    try:
        import music21
    except ModuleNotFoundError:
        raise SystemExit("music21 is required for this command: pip install music21") from None
    return music21


def chorale_sources() -> list[Path]:
    """Return the corpus file of every Bach chorale, one per stem, sorted by stem."""
    music21 = require_music21()
    scores = [
        path
        for path in map(Path, music21.corpus.getComposer("bach"))
        if path.suffix in SCORE_SUFFIXES and path.stem not in NOT_CHORALES
    ]
    by_stem: dict[str, Path] = {}
    for path in sorted(scores, key=lambda path: SCORE_SUFFIXES.index(path.suffix)):
        by_stem.setdefault(path.stem, path)
    return [by_stem[stem] for stem in sorted(by_stem)]


def fermata_offsets(score) -> list[float]:
    """Offsets (in quarters from the score's start) of the notes that carry a fermata, in any part."""
    music21 = require_music21()
    offsets = set()
    for note in score.recurse().notes:
        if any(isinstance(e, music21.expressions.Fermata) for e in note.expressions):
            offsets.add(float(note.getOffsetInHierarchy(score)))
    return sorted(offsets)


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a partial file, so an interrupted export leaves no half file."""
    partial = target.with_name(target.name + ".part")
    try:
        partial.write_bytes(data)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def score_midi(score) -> bytes:
    """A music21 score as MIDI file bytes, with its fermatas as markers."""
    from music21.midi.translate import music21ObjectToMidiFile

    from bachsformer.tune import add_markers

    midi_file = music21ObjectToMidiFile(score)
    data = midi_file.writestr()
    offsets = fermata_offsets(score)
    if offsets:
        data = add_markers(data, [round(offset * midi_file.ticksPerQuarterNote) for offset in offsets])
    return data


def export(source: Path, target: Path) -> None:
    """Convert one corpus file to a MIDI file with its fermatas as markers, written atomically to ``target``."""
    music21 = require_music21()
    write_atomically(target, score_midi(music21.converter.parse(source, forceSource=True)))


def export_folk_tunes(out: Path, count: int = FOLK_TUNES) -> list[Path]:
    """Write the first ``count`` tunes of FOLK_SOURCE to ``out`` as MIDI files; returns their paths."""
    music21 = require_music21()
    opus = music21.corpus.parse(FOLK_SOURCE, forceSource=True)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, score in enumerate(opus.scores[:count], start=1):
        target = out / f"{Path(FOLK_SOURCE).stem}-{number:02d}.mid"
        write_atomically(target, score_midi(score))
        paths.append(target)
    return paths


def main(argv: list[str] | None = None) -> None:
    """Export all chorales; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m bachsformer.corpus",
        description="Export the Bach chorales in music21's corpus to MIDI files (or, with --folk, folk tunes).",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: data/midi, with --folk data/tunes/folk)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing MIDI files")
    parser.add_argument(
        "--folk",
        action="store_true",
        help=f"export the first {FOLK_TUNES} tunes of {FOLK_SOURCE} (written anew each time)",
    )
    args = parser.parse_args(argv)
    if args.folk:
        paths = export_folk_tunes(args.out or Path("data/tunes/folk"))
        print(f"{len(paths)} folk tunes exported -> {paths[0].parent}")
        return
    args.out = args.out or Path("data/midi")

    sources = chorale_sources()
    if not sources:
        raise SystemExit("no Bach chorales found in the music21 corpus")
    args.out.mkdir(parents=True, exist_ok=True)

    exported = failed = kept = 0
    for source in tqdm(sources, desc="chorales", unit="file"):
        target = args.out / f"{source.stem}.mid"
        if target.exists() and not args.overwrite:
            kept += 1
            continue
        try:
            export(source, target)
        except Exception as error:  # noqa: BLE001 - music21 raises many kinds
            failed += 1
            reason = " ".join(str(error).split()) or "no message"
            tqdm.write(f"{source.name}: {type(error).__name__}: {reason}")
        else:
            exported += 1

    summary = f"{exported} exported, {failed} failed -> {args.out}"
    if kept:
        summary += f" ({kept} already there, kept; use --overwrite to replace)"
    print(summary)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
