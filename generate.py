"""Write new music with the trained models: MIDI files in data/generated/.

    python generate.py                                   # a tune of 64 quarters, harmonized, seed 0
    python generate.py --no-tune                         # the old way: codes sampled with no melody
    python generate.py --seed 7 --num 8 --temperature 0.9 --top-p 0.95
    python generate.py --file primer.mid --quarters 64   # continue a MIDI file, in its own key
    python generate.py --key D --num 4                   # in D (major or minor, as the model wrote it)
    python generate.py --key "G minor"                   # in G minor
    python generate.py --melody tune.mid --num 4         # harmonize a tune: it stays the top voice
    python generate.py --melody bwv1.6.mid --melody-track soprano
    python generate.py --file piece.mid --regenerate 5-8 # rewrite quarters 5 ... 8 to fit both sides
    python generate.py --wav --png --musicxml            # also a WAV preview, a piano roll and a score

Free music is written tune first (models/tune.pt, bachsformer/tunefirst.py): the tune model writes
a tune of `--quarters` whose last note is held to the end (at least one phrase, 8 quarters), and the
transformer harmonizes it, with cadences at its phrase ends and the last chord held under its last
note; `--file` continues the primer's top line, then harmonizes the new part after the primer's own
music. `--no-tune` samples the codes with no melody, as before; without models/tune.pt generate.py
says so in one line and does that.

The models write music in C major or A minor (they learned the chorales moved there); `--key` moves
each piece to another tonic, keeping its mode unless one is named, and a primer's continuation comes
back in the primer's key. A melody (`--melody`: its highest line, or one track, named exactly or in
any case) is harmonized below, and a passage (`--regenerate A-B`, quarters counted from 1) rewritten,
by choosing among `--candidates` samples per quarter (or passage) the one that fits
(bachsformer/harmonize.py); the transformer hears the melody it harmonizes, `--guidance` above 1 makes
it lean on the melody harder (classifier-free guidance). A melody keeps its notes exactly: `--key`
may move it to another tonic, not change its mode. A melody with chords (a piano piece) is
harmonized from its top line, with a warning; a long one shows its progress.

What the files keep: music is written as the four voices the VQ-VAE decodes, tracks "Soprano",
"Alto", "Tenor" and "Bass", each one line; `--raw` writes their union as one track instead. A primer
or a file to rewrite enters as its voices: its parts, or split by the voicing rule (voicing.py).
A harmonization's Soprano is the melody, its track named
as the file's one track of notes (or "Soprano"), and a marker names that track, so that `--regenerate`
on a harmonization keeps its tune whole, as the page does. A file (`--melody`, `--file`) may be MIDI,
MusicXML or .mxl (read as the page reads it, bachsformer/musicxml.py); a tempo no piece is written
at is moved within 4 ... 1000 with a warning, and a harmonization leaving most of its tune bare is
warned about. Music made from a file (`--file`, `--regenerate`) keeps the file's tracks and
every note outside what was written anew (unless `--key` moves it all); the new music's voices join
the tracks of their names or follow them. It keeps the file's time signatures (a pickup with its
rests) and tempos, on the output's grid; music from nothing is in 4/4 at `--tempo`
(`generate.tempo`), all played by `--program`. `--musicxml` writes a score beside the MIDI (Soprano
and Alto on a treble staff, Tenor and Bass on a bass staff, spelled in the piece's key, the Roman numerals of
`bachsformer.analyze` under the bass; needs
music21), `--png` a piano roll with the bar lines and the melody, primer or regenerated passage
marked (needs matplotlib).

Piece i of `--num N --seed S` has seed S + i and is the same as `--seed S+i` alone. Files are named
after their settings and key and never overwritten; each path is printed, and a piece without a
single note is written but warned about. Options that would do nothing (`--quarters` with a melody
or a passage to rewrite, `--continuation-only` without a primer, `--tempo` with a file) are refused.
The models come from models/ unless `--set models.vq_vae=... --set models.transformer=...` points
elsewhere.
"""

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bachsformer.analyze import analyze_voices
from bachsformer.compose import compose, file_tracks, load_models, piece_midi_bytes, refuse_mode_change, voiced
from bachsformer.config import load_config
from bachsformer.errors import ArgumentParser, BachsformerError, exit_on_user_error
from bachsformer.harmonize import harmonize, keep_tune, parse_passage, read_melody, regenerate, thin_harmony_warning
from bachsformer.metrics import highest_line
from bachsformer.midi import (
    DEFAULT_MAX_QUARTERS,
    MAX_TEMPO_BPM,
    MIN_TEMPO_BPM,
    Meter,
    playable_tempos,
    read_meter,
    read_midi_tracks,
    read_tune_track,
    write_bytes,
)
from bachsformer.render import require_matplotlib, write_png, write_wav
from bachsformer.sampling import check_sampling_options, set_sampling_threads
from bachsformer.score import require_music21, write_musicxml, write_voices_musicxml
from bachsformer.training import resolve_device
from bachsformer.tunefirst import compose_tune_first, load_tune_for
from bachsformer.voices import read_voices

MAX_PIECES = 1024  # one batch; more pieces: run again with another --seed
LONG_MELODY_QUARTERS = 256  # harmonizing more shows its progress (docs/speed.md: 64 quarters take seconds)


def unique_path(folder: Path, stem: str, suffix: str) -> Path:
    """folder/stem.suffix, or stem-2, stem-3 ... when taken; a stem that could leave the folder is refused."""
    if stem in ("", ".", "..") or any(character in stem for character in "/\\\0"):
        raise ValueError(f"not a plain file name: {stem!r}")
    path = folder / f"{stem}{suffix}"
    number = 2
    while path.exists():
        path = folder / f"{stem}-{number}{suffix}"
        number += 1
    return path


def safe_name(text: str) -> str:
    """Letters, digits, dot, dash and underscore only: a name that cannot leave its folder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "primer"


def file_meter(path: str) -> Meter:
    """The meter of a file, its tempos within what a piece is written at (a warning for each one moved)."""
    meter, warnings = playable_tempos(read_meter(path), path)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return meter


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    parser.add_argument("--seed", type=int, help="random seed of the first piece")
    parser.add_argument("--num", type=int, help="number of pieces, sampled as one batch")
    parser.add_argument("--quarters", type=int, help="quarters to generate per piece (default: generate.quarters)")
    parser.add_argument("--temperature", type=float, help="above 1: bolder, below 1: safer")
    parser.add_argument("--top-k", type=int, help="sample among the k likeliest codes (0: all)")
    parser.add_argument("--top-p", type=float, help="sample among the likeliest codes holding this mass")
    parser.add_argument("--file", help="a MIDI file (or MusicXML, .mxl) to continue (primer)")
    parser.add_argument("--continuation-only", action="store_true", help="with --file: leave the primer out")
    parser.add_argument("--key", help="move each piece to this key: D, F#, Bb, 'G minor' (default: as written)")
    parser.add_argument("--melody", help="a MIDI file (or MusicXML, .mxl): its highest line (or --melody-track)")
    parser.add_argument("--melody-track", metavar="N|NAME", help="the melody is this track (number or name)")
    parser.add_argument("--regenerate", metavar="A-B", help="with --file: rewrite quarters A ... B (from 1)")
    parser.add_argument("--candidates", type=int, help="harmonizing, regenerating: samples to choose from (16)")
    parser.add_argument(
        "--guidance", type=float, help="harmonizing: how hard the transformer leans on the melody it hears (1: plain)"
    )
    parser.add_argument("--no-tune", action="store_true", help="free music: codes sampled with no melody (old way)")
    parser.add_argument("--tune-temperature", type=float, help="tune-first: the tune model's temperature")
    parser.add_argument("--tune-top-p", type=float, help="tune-first: the tune model's top-p")
    parser.add_argument("--out", help="output folder (default: data/generated)")
    parser.add_argument("--tempo", type=float, help="beats per minute of music written from nothing (90)")
    parser.add_argument("--program", type=int, help="General MIDI instrument of the MIDI and WAV (19: church organ)")
    parser.add_argument("--device", help="cpu, cuda, mps or auto")
    parser.add_argument("--threads", type=int, help="CPU threads (default 0: OMP_NUM_THREADS if set, else 1)")
    parser.add_argument("--wav", action="store_true", help="also write a WAV preview")
    parser.add_argument("--png", action="store_true", help="also write a piano-roll picture (needs matplotlib)")
    parser.add_argument("--musicxml", action="store_true", help="also write a MusicXML score (needs music21)")
    parser.add_argument("--raw", action="store_true", help="write the decoded roll as it is, not four voices")
    args = parser.parse_args()

    config = load_config(args.config, args.set)
    names = "seed num quarters temperature top_k top_p tempo program key candidates guidance device threads".split()
    names += ["tune_temperature", "tune_top_p"]
    try:
        options = dataclasses.replace(
            config.generate, **{n: getattr(args, n) for n in names if getattr(args, n) is not None}
        )
        if args.raw:
            options = dataclasses.replace(options, voicing=False)
    except ValueError as error:  # GenerateConfig refuses it, naming the option
        raise BachsformerError(f"--{str(error).replace('tune_', 'tune-', 1)}") from None
    if args.no_tune:
        options = dataclasses.replace(options, tune_first=False)
    out_dir = Path(args.out or options.out_dir)
    inputs = [(option, path) for option, path in (("--file", args.file), ("--melody", args.melody)) if path]
    checks = [
        (1 <= options.num <= MAX_PIECES, f"--num must lie in 1 ... {MAX_PIECES}, got {options.num}"),
        (  # longer pieces would not even read back
            1 <= options.quarters <= DEFAULT_MAX_QUARTERS,
            f"--quarters must lie in 1 ... {DEFAULT_MAX_QUARTERS}, got {options.quarters}",
        ),
        (0 <= options.seed <= 2**63 - options.num, f"--seed must lie in 0 ... 2**63 - num, got {options.seed}"),
        (
            MIN_TEMPO_BPM <= options.tempo <= MAX_TEMPO_BPM,
            f"--tempo must lie in {MIN_TEMPO_BPM} ... {MAX_TEMPO_BPM}, got {options.tempo}",
        ),
        *[(not Path(path).is_dir(), f"{option} {path}: is a folder; give one MIDI file") for option, path in inputs],
        *[(Path(path).is_file(), f"{option} {path}: no such file") for option, path in inputs],
        (not (args.melody and args.file), "--melody and --file do not go together: harmonize, or continue"),
        (not args.regenerate or args.file, "--regenerate needs --file: the piece to rewrite a passage of"),
        (not args.melody_track or args.melody, "--melody-track needs --melody"),
        (
            not (args.no_tune and (args.melody or args.regenerate)),
            "--no-tune is for free music and --file continuations: a melody or a passage is harmonized as it is",
        ),
        (
            not args.continuation_only or (args.file and not args.regenerate),
            "--continuation-only goes with a primer (--file) alone: it leaves the primer out of its continuation",
        ),
        (
            args.quarters is None or not (args.melody or args.regenerate),
            f"--quarters does not go with --{'melody' if args.melody else 'regenerate'}: the music written is as"
            f" long as the {'melody' if args.melody else 'piece'}",
        ),
        (
            args.tempo is None or not inputs,
            "--tempo is for music written from nothing: music made from a file keeps the file's tempo",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise BachsformerError(message)
    if args.png:  # before anything is written
        require_matplotlib()
    if args.musicxml:
        require_music21()
    melody = read_melody(args.melody, args.melody_track) if args.melody else None
    if melody is not None:
        refuse_mode_change(melody.quarters, options.key, args.melody)
        if melody.warning:
            print(f"warning: {melody.warning}", file=sys.stderr)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise BachsformerError(f"--out {out_dir}: cannot write there ({error.strerror or error})") from None

    device = resolve_device(options.device)
    threads = set_sampling_threads(options.threads)
    paths = config.models
    for path, command in ((paths.vq_vae, "train_vq_vae.py"), (paths.transformer, "train_transformer.py")):
        if not Path(path).is_file():
            raise BachsformerError(f"{path}: model not found; train it with python {command} --write-models")
    vq_vae, transformer = load_models(paths.vq_vae, paths.transformer, device)
    tune_model = None
    if options.tune_first and not (melody is not None or args.regenerate):
        if Path(paths.tune).is_file():
            tune_model = load_tune_for(paths.tune, config.data.normalize_key, device)
        else:
            print(
                f"warning: {paths.tune}: no tune model; writing the old way, codes with no melody"
                " (train one: python train_tune.py --write-models; or pass --no-tune)",
                file=sys.stderr,
            )
    try:
        check_sampling_options(options.temperature, options.top_k, options.top_p, transformer.config.vocab_size)
    except ValueError as error:
        raise BachsformerError(f"--{error}") from None

    seeds = [options.seed + i for i in range(options.num)]
    normalized = config.data.normalize_key  # as the models learned the music
    sampling = f"t{options.temperature:g}_k{options.top_k}_p{options.top_p:g}"
    meter, primer_quarters, passage = Meter.free(options.tempo), 0, None  # what the files keep and mark
    tune_track = None  # the track of the tune a harmonization's passage is rewritten under
    started = time.perf_counter()
    if melody is not None:
        meter = file_meter(args.melody)
        length = len(melody.quarters)
        bar = None
        if length * options.num > LONG_MELODY_QUARTERS:  # minutes on a CPU: say so, and show how far it is
            print(f"note: {args.melody}: a melody of {length} quarters, harmonized quarter by quarter", file=sys.stderr)
            bar = tqdm(total=length * options.num, unit="quarter", file=sys.stderr)
        pieces = [
            harmonize(vq_vae, transformer, melody.quarters, options, seed, normalized, progress=bar and bar.update)
            for seed in seeds
        ]
        if bar is not None:
            bar.close()
        settings = f"{sampling}_m{options.candidates}_harmony-{safe_name(Path(args.melody).stem)}"
    elif args.regenerate:
        piece, meter = read_voices(args.file)[0], file_meter(args.file)
        passage = parse_passage(args.regenerate, piece.num_quarters, args.file)
        pieces = [regenerate(vq_vae, transformer, piece, *passage, options, seed, normalized) for seed in seeds]
        # a harmonization (its tune's track named by a marker) keeps its tune, as the page does
        tune_track = None if options.key else read_tune_track(args.file)
        tune = next((t.quarters for t in read_midi_tracks(args.file) if t.name == tune_track), None)
        if tune is not None:
            tune = highest_line(tune)
            pieces = [
                dataclasses.replace(written, voices=keep_tune(written.voices, tune, *passage), melody=tune)
                for written in pieces
            ]
        length = piece.num_quarters
        settings = (
            f"{sampling}_m{options.candidates}_regenerate{passage[0]}-{passage[1]}-{safe_name(Path(args.file).stem)}"
        )
    else:
        primer = read_voices(args.file)[0] if args.file else None  # its parts, or split by the voicing rule
        if tune_model is not None:
            pieces = compose_tune_first(
                vq_vae, transformer, tune_model, options, seeds, primer, args.continuation_only, normalized
            )
            sampling = f"tune-t{options.tune_temperature:g}_p{options.tune_top_p:g}_m{options.candidates}"
        else:
            pieces = compose(vq_vae, transformer, options, seeds, primer, args.continuation_only, normalized)
        settings, length = f"{sampling}_q{options.quarters}", options.quarters
        if args.file:
            meter = file_meter(args.file).until(primer.num_quarters)  # the primer's meter goes on in its continuation
            if args.continuation_only:
                meter = meter.after(primer.num_quarters)
            else:
                primer_quarters = primer.num_quarters
            settings += f"_primer-{safe_name(Path(args.file).stem)}" + (
                "_continuation" if args.continuation_only else ""
            )
    # four voices; music made from a file keeps the file's tracks outside what was written anew, a tune its name
    tune_name = melody.name if melody is not None else tune_track or "Soprano"
    kept = file_tracks(args.file) if args.file and not options.key and not args.continuation_only else None
    if melody is not None:
        pieces = [voiced(piece, options, melody.name) for piece in pieces]
    elif kept is not None:
        span = (passage[0] - 1, passage[1]) if passage else (primer_quarters, primer_quarters + options.quarters)
        tune_kept = tune_track is not None
        pieces = [
            voiced(piece, options, tune_name, kept=kept, span=span, keep_tune_track=tune_kept) for piece in pieces
        ]
    else:
        pieces = [voiced(piece, options) for piece in pieces]
    seconds = time.perf_counter() - started

    wav_notes = set()
    for seed, piece in zip(seeds, pieces):
        quarters = piece.quarters
        stem = f"bachsformer_seed{seed}_{settings}_{safe_name(str(piece.key).replace(' ', '-'))}"
        data = piece_midi_bytes(piece, meter, options.program, tune_name)  # the same file the page and the API write
        midi_path = write_bytes(data, unique_path(out_dir, stem, ".mid"))
        print(midi_path)
        if not quarters.any():
            print(f"warning: {midi_path}: the models wrote no notes (a model pair that collapsed?)", file=sys.stderr)
        elif melody is not None or tune_track is not None:  # the user's tune: is it harmonized, or left bare?
            remedy = "another --seed, more --candidates or a higher --guidance"
            warning = thin_harmony_warning(quarters, piece.melody, str(midi_path), remedy)
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
        if args.wav:
            wav_path = unique_path(out_dir, midi_path.stem, ".wav")
            wav_notes.add(write_wav(midi_path, wav_path).note)
            print(wav_path)
        if args.musicxml:
            xml_path = unique_path(out_dir, midi_path.stem, ".musicxml")
            if piece.tracks is not None:  # the chorale as printed: S and A on a treble staff, T and B on a bass staff
                names = [name for name, _ in piece.tracks]
                analysis = analyze_voices(piece.voices, names)  # the numerals under the bass
                write_voices_musicxml(piece.voices, xml_path, piece.key, meter, names, midi_path.stem, analysis)
            else:
                write_musicxml(quarters, xml_path, piece.key, meter, piece.melody, title=midi_path.stem)
            print(xml_path)
        if args.png:
            png_path = unique_path(out_dir, midi_path.stem, ".png")
            marks = {"melody": piece.melody, "primer_quarters": primer_quarters, "passage": passage}
            write_png(quarters, png_path, title=midi_path.stem, meter=meter, **marks)
            print(png_path)
    for note in sorted(wav_notes - {""}):  # sine waves: say once how to get real instruments
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(pieces)} piece(s) of {length} quarters in {seconds:.1f} s on {device} ({threads} thread(s))")


if __name__ == "__main__":
    exit_on_user_error(main)
