"""How good are the models, and how Bach-like is what they write? One command, one table.

    python -m bachsformer.evaluate                    # models/, 32 pieces as long as held-out files
    python -m bachsformer.evaluate --quarters 128     # 32 pieces of 128 quarters each
    python -m bachsformer.evaluate --num 64 --set models.transformer=runs/transformer/best.pt
    python -m bachsformer.evaluate --json results.json
    python -m bachsformer.evaluate --no-tune          # free music the old way: codes sampled with no melody
    python -m bachsformer.evaluate --tunes            # the tune model alone: a table over temperature and top-p
    python -m bachsformer.evaluate --num 8 --set generate.tune_top_p=0.9   # a quick comparison
    python -m bachsformer.evaluate --harmonize        # harmonize held-out chorale tunes (evaluate_harmonization.py)
    python -m bachsformer.evaluate --harmonize --files 8 --systems model,"one candidate"   # a quick comparison
    python -m bachsformer.evaluate --melodies data/tunes/folk   # harmonize these tunes: how each one ends

VQ-VAE: frame F1, onset F1 and codebook perplexity on the held-out files. Transformer: held-out
bits per code beside unigram and bigram baselines. Generated music: features of the MIDI itself
against the held-out Bach files (overlapping areas of their distributions, after Yang & Lerch
2018), beside the same features of the VQ-VAE's reconstructions of those files (what the codes
allow: a gap there is the VQ-VAE's, a gap beyond it the transformer's or the sampling's), and
the longest run of quarters copied verbatim, up to transposition, from the training files. The
held-out files are the same in all three training scripts and here. Free music is written as
generate.py writes it: tune first (the tune model's tune, harmonized) unless generate.tune_first is
false or `--no-tune` is given. Beside the features: the tune model's held-out bits per token (with
unigram and bigram baselines), the top line of each set (mean leap, range, share of steps, phrase
length), how pieces end (the final chord's length, the bass on the tonic), and the longest run of
the generated tunes copied from the training files' top lines. A diagnostic separates local
harmony from drift: quarters sampled one at a time after the true music of a held-out file, and
how many of their notes stay in the local key. The harmony of both sets, read by `bachsformer.analyze`:
cadence kinds at inner and final phrase ends, the shares of numerals and inversions, chord changes per
bar and the ten most common progressions, side by side (with --harmonize: each system's and Bach's).

By default piece i is as long as held-out file i (cycling through them): pitch range grows with
length and scale consistency falls with it (a piece that modulates covers more keys), so pieces
are compared with Bach at the lengths Bach wrote.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from bachsformer.analyze import harmony_statistics, print_harmony
from bachsformer.codes import baselines, bits_per_code, encode_pieces, evaluation_windows, untransposed
from bachsformer.compose import Composition, compose, decode_quarters, decode_voices, load_models
from bachsformer.config import load_config
from bachsformer.data import CorpusPiece, EncodedPiece, load_corpus, split, transpose_lines
from bachsformer.endings import piece_ending, print_endings, summarize_endings, voices_key
from bachsformer.errors import ArgumentParser, BachsformerError, exit_on_user_error
from bachsformer.evaluate_harmonization import (
    SYSTEMS,
    evaluate_harmonization,
    melody_endings,
    print_harmonization,
    print_melody_endings,
)
from bachsformer.gpt import GPT
from bachsformer.keys import Key, estimate_key
from bachsformer.metrics import (
    FEATURE_NAMES,
    best_scale,
    compare,
    ending,
    grid_shares,
    highest_line,
    longest_verbatim_runs,
    onsets_in_scale,
    overlapping_area,
    piece_features,
    top_line_features,
)
from bachsformer.midi import NUM_KEYS, STEPS_PER_QUARTER, quarters_to_notes, read_midi_tracks
from bachsformer.rules import voice_figures
from bachsformer.sampling import set_sampling_threads
from bachsformer.training import resolve_device
from bachsformer.tune import (
    FERMATA,
    HOLD,
    MINOR,
    NOTE,
    SLOTS_PER_QUARTER,
    TuneError,
    bits_per_token,
    corpus_tunes,
    load_tune_model,
    read_fermatas,
    sample_tunes,
    tune_baselines,
    tune_pitches,
    tune_quarters,
)
from bachsformer.tunefirst import MIN_QUARTERS, TONICS, compose_tune_first, load_tune_for, tune_modes
from bachsformer.voices import SILENCE, VOICE_NAMES, Voices, restore_repeats
from bachsformer.voicing import grid_steps
from bachsformer.vqvae import LATENT_SHAPE, SEMITONES_PER_ROW, VQVAE, reconstruction_scores

COPY_LIMIT = 8  # a verbatim run of this many quarters counts as replaying the training data
KEY_SPAN = 4  # the local key of quarter i: the major scale best holding true quarters i - 4 ... i + 3
NEXT_QUARTER_EVERY = 3  # the diagnostic samples every third quarter of each held-out file
TRANSPOSITIONS = (1, 2, 5, 7, 8, 12)  # semitones, for codes_kept_under_transposition


@torch.no_grad()
def codes_kept_under_transposition(
    vq_vae: VQVAE, pieces: list[CorpusPiece], shifts=TRANSPOSITIONS, device="cpu", batch_size: int = 1024
) -> dict:
    """For each shift, the fraction of codes a sounding quarter keeps when transposed up by it.

    The encoder strides 8 semitones per latent row, so a shift of 8k semitones can move the codes k
    rows up unchanged. The codes of the transposed quarter are compared with the original's
    shift // 8 rows lower (rows without a counterpart are left out). Silent quarters, and quarters
    the shift would push past the top key, are left out. Returns {shift: fraction}, keys as text.
    """
    lines = [piece.voices.lines() for piece in pieces]
    keys = torch.from_numpy(np.concatenate([k for k, _ in lines]))  # [N, V, 32]
    onsets = torch.from_numpy(np.concatenate([o for _, o in lines]))
    highest = torch.where(keys == SILENCE, -1, keys).flatten(1).max(1).values  # [N]
    sounding = highest >= 0
    keys, onsets, highest = keys[sounding], onsets[sounding], highest[sounding]
    rows = LATENT_SHAPE[0]

    def encode(batch_keys: torch.Tensor, batch_onsets: torch.Tensor) -> torch.Tensor:  # -> [n, 8, 2] on the CPU
        return vq_vae.encode(batch_keys.to(device), batch_onsets.to(device), batch_size).cpu().view(-1, *LATENT_SHAPE)

    original = encode(keys, onsets)  # once: each shift compares with a subset of these
    kept = {}
    for shift in shifts:
        usable = highest + shift < NUM_KEYS
        moved = encode(transpose_lines(keys[usable], torch.full((int(usable.sum()),), shift)), onsets[usable])
        rows_up = shift // SEMITONES_PER_ROW
        same = moved[:, rows_up:] == original[usable][:, : rows - rows_up]
        kept[str(shift)] = float(same.float().mean())
    return kept


@torch.no_grad()
def next_quarter_in_key(
    vq_vae: VQVAE,
    transformer: GPT,
    pieces: list[CorpusPiece],
    encoded: list[EncodedPiece],
    seed: int,
    temperature: float,
    top_k: int,
    top_p: float,
) -> dict:
    """How well the transformer keeps the local key one quarter ahead, given the true music before it.

    At every third quarter i of each held-out piece that has a full window of quarters before it
    (11 for block size 191) and 4 after, the transformer samples quarter i from the true codes
    before it. The local key is the major scale that best holds the true quarters i - 4 ... i + 3
    (from quarter 0 when i < 4). Returns the fraction of note onsets in the local key of the sampled
    quarters, and of the VQ-VAE reconstructions of the true quarters (what the codes allow). Unlike
    whole generated pieces, this cannot drift: it measures the harmony of each single step.
    Decoded without min_note_steps.
    """
    per_quarter = vq_vae.codes_per_quarter
    # whole quarters before the sampled one such that all of it still fits in the window
    context = (transformer.config.block_size - per_quarter + 1) // per_quarter
    sampled, reconstructed = np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64)  # (in key, all)
    num_sampled = 0
    for piece, piece_codes in zip(pieces, encoded):
        codes = untransposed(piece_codes).view(-1, per_quarter).to(transformer.first_code_probs.device)  # [Q, 16]
        quarters = piece.quarters  # [Q, 88, 32]
        positions = [
            i
            for i in range(context, len(quarters) - KEY_SPAN + 1, NEXT_QUARTER_EVERY)
            if quarters[max(i - KEY_SPAN, 0) : i + KEY_SPAN].any()
        ]
        if not positions:
            continue
        prompts = torch.stack([codes[i - context : i].flatten() for i in positions])  # [N, context * 16]
        seeds = [seed + num_sampled + n for n in range(len(positions))]
        samples = transformer.generate(
            prompts,
            per_quarter,
            seeds,
            temperature,
            top_k,
            top_p,
            codes_per_quarter=per_quarter,
            min_context=context * per_quarter,  # unused: the window never fills
        )[:, -per_quarter:]
        num_sampled += len(positions)
        sampled_quarters = decode_quarters(vq_vae, samples.flatten(), consecutive=False)  # [N, 88, 32]
        true_quarters = decode_quarters(vq_vae, codes[positions].flatten(), consecutive=False)
        for i, sample, truth in zip(positions, sampled_quarters, true_quarters):
            tonic = best_scale(quarters[max(i - KEY_SPAN, 0) : i + KEY_SPAN])
            sampled += onsets_in_scale(sample[None], tonic)
            reconstructed += onsets_in_scale(truth[None], tonic)
    return {
        "context_quarters": context,
        "quarters": num_sampled,
        "sampled_in_key": float(sampled[0] / max(sampled[1], 1)),
        "reconstructed_in_key": float(reconstructed[0] / max(reconstructed[1], 1)),
    }


def line_and_endings(pieces: list[np.ndarray]) -> dict:
    """Mean top-line features of `pieces` and how they end: the share whose final chord sounds a half
    note or longer, and the share whose bass there is the tonic of their estimated key."""
    lines = [top_line_features(q) for q in pieces]
    endings = [ending(q, estimate_key(q).tonic) for q in pieces]
    return {
        **{name: float(np.mean([line[name] for line in lines])) for name in lines[0]},
        "final_chord_held_half": float(np.mean([e["final_chord_quarters"] >= 2 for e in endings])),
        "final_chord_quarters": float(np.mean([e["final_chord_quarters"] for e in endings])),
        "bass_on_tonic": float(np.mean([e["bass_on_tonic"] for e in endings])),
    }


def free_endings(voiced: list[Voices], pieces: list[Composition], asked: list[int]) -> dict:
    """`endings.summarize_endings` of generated pieces (their four voices, each in the key heard from
    them, at the tune's fermatas), with the share heard in the key each was written in, the share
    within a bar (4 quarters) of the length asked for, and their lengths."""
    rows, heard_as_asked = [], []
    for voices, piece in zip(voiced, pieces):
        heard = voices_key(voices.notes, voices.steps_per_quarter)
        heard_as_asked.append(heard == piece.key)
        rows.append(piece_ending(voices.notes, heard, voices.steps_per_quarter, piece.fermatas))
    lengths = [voices.num_quarters for voices in voiced]
    return {
        **summarize_endings(rows),
        "key_heard_as_written": float(np.mean(heard_as_asked)),
        "within_a_bar_of_the_length": float(np.mean([abs(n - a) <= 4 for n, a in zip(lengths, asked)])),
        "quarters": lengths,
        "asked_quarters": asked,
    }


def chorale_voice_notes(path) -> list[np.ndarray]:
    """A chorale file's Soprano, Alto, Tenor and Bass tracks as note lists [N, 3] (a track counts by the
    first word of its name: "Soprano\\rOboe 1" is the Soprano), each repeat at its full length; a
    voice the file lacks has no notes."""
    tracks = {}
    for track in read_midi_tracks(path):
        name = track.name.split()[0] if track.name.split() else ""
        if name in VOICE_NAMES and track.quarters.any() and name not in tracks:
            tracks[name] = restore_repeats(quarters_to_notes(track.quarters))
    return [tracks.get(name, np.zeros((0, 3), dtype=np.int64)) for name in VOICE_NAMES]


def bach_endings(midi_dir: str | Path, names: list[str]) -> dict:
    """`endings.summarize_endings` of the chorale files `names` in midi_dir: their own four voices, in
    the key heard from them, at their fermata markers."""
    rows = []
    for name in names:
        path = Path(midi_dir) / name
        voices = chorale_voice_notes(path)
        key = voices_key(voices, STEPS_PER_QUARTER)
        rows.append(piece_ending(voices, key, STEPS_PER_QUARTER, read_fermatas(path)))
    return summarize_endings(rows)


def evaluate(
    config, num_pieces: int, num_quarters: int | None, seed: int, device: torch.device, png: str | None = None
) -> dict:
    """All metrics as one JSON-ready dict; num_quarters None: the held-out files' lengths.

    png: also draw the generated pieces' features against the held-out files' there.
    """
    vq_vae, transformer = load_models(config.models.vq_vae, config.models.transformer, device)
    pieces = load_corpus(
        config.data.midi_dir, config.data.cache_dir, config.data.max_quarters, normalize_key=config.data.normalize_key
    )
    train, held_out = split(pieces, config.data.validation_fraction)
    held_out = held_out or train
    results = {"models": {"vq_vae": config.models.vq_vae, "transformer": config.models.transformer}}
    results["data"] = {"files": len(pieces), "train": len(train), "held_out": len(held_out)}
    results["vq_vae"] = reconstruction_scores(vq_vae, [p.voices.lines() for p in held_out])
    results["vq_vae"]["num_embeddings"] = vq_vae.num_embeddings
    kept = codes_kept_under_transposition(vq_vae, held_out, device=device)
    results["vq_vae"]["codes_kept_under_transposition"] = kept

    window = transformer.config.block_size + 1
    held_out_codes = encode_pieces(vq_vae, held_out, 0, config.data.cache_dir)
    held_out_windows = evaluation_windows(held_out_codes, window)
    train_codes = encode_pieces(vq_vae, train, 0, config.data.cache_dir)
    options = config.generate
    results["transformer"] = {
        "bits_per_code": bits_per_code(transformer, held_out_windows),
        **baselines(train_codes, held_out_windows, vq_vae.num_embeddings),
        "next_quarter": next_quarter_in_key(
            vq_vae, transformer, held_out, held_out_codes, seed, options.temperature, options.top_k, options.top_p
        ),
    }

    started = time.perf_counter()
    seeds = [seed + i for i in range(num_pieces)]
    if num_quarters is None:
        lengths = [len(held_out[i % len(held_out)].quarters) for i in range(num_pieces)]
    else:
        lengths = [num_quarters] * num_pieces
    tune_first = options.tune_first
    tunes = []
    if tune_first:  # each piece a tune of its length, harmonized; in the key the models write
        tune_model = load_tune_for(config.models.tune, config.data.normalize_key, device)
        plain = dataclasses.replace(options, key="")
        compositions = []
        for piece_seed, length in zip(seeds, lengths):
            piece = compose_tune_first(vq_vae, transformer, tune_model, replace_length(plain, length), [piece_seed])[0]
            compositions.append(piece)
            tunes.append(piece.melody)
        train_tunes, _, _ = corpus_tunes(train, config.data.midi_dir)
        held_out_tunes, held_out_modes, _ = corpus_tunes(held_out, config.data.midi_dir)
        results["tune"] = {
            "model": config.models.tune,
            "bits_per_token": bits_per_token(tune_model, held_out_tunes, held_out_modes),
            **tune_baselines(train_tunes, held_out_tunes),
            "longest_verbatim_run_of_tunes": max(
                longest_verbatim_runs(tunes, [highest_line(p.quarters) for p in train])
            ),
            "temperature": options.tune_temperature,
            "top_p": options.tune_top_p,
            "ending_drafts": options.tune_ending_drafts,
        }
    else:
        # one batch at the longest length, each piece cut to its own: piece i depends on its seed alone
        # in the key the model writes, as the held-out files are read (key-normalized or not)
        compositions = compose(vq_vae, transformer, dataclasses.replace(options, quarters=max(lengths), key=""), seeds)
    pieces_written = [
        piece.voices if tune_first else piece.voices.sliced(0, length) for piece, length in zip(compositions, lengths)
    ]
    generated = [voices.quarters() for voices in pieces_written]  # the union of the decoder's voices
    reference = [p.quarters for p in held_out]
    grid = grid_steps(options.grid, STEPS_PER_QUARTER)
    music = compare(generated, reference)
    music["grid"] = {
        "note_value": options.grid,
        "generated": grid_shares(generated, grid),
        "Bach": grid_shares(reference, grid),
    }
    # what the codes allow: the held-out files through the VQ-VAE, decoded as generation decodes
    reconstructed_voices = [
        decode_voices(vq_vae, untransposed(piece), min_note_steps=options.min_note_steps) for piece in held_out_codes
    ]
    reconstructed = [voices.quarters() for voices in reconstructed_voices]
    music["reconstruction_mean"] = {
        name: float(np.mean([piece_features(q)[name] for q in reconstructed])) for name in FEATURE_NAMES
    }
    results["four_part"] = {
        "generated": voice_figures(pieces_written),
        "reconstruction": voice_figures(reconstructed_voices),
        "bach": voice_figures([p.voices for p in held_out]),
    }
    copies = longest_verbatim_runs(generated, [p.quarters for p in train])
    reference_features = [piece_features(q) for q in reference]
    music["reference_range"] = {
        name: [min(f[name] for f in reference_features), max(f[name] for f in reference_features)]
        for name in ("silent_quarters", "repetition")
    }
    music["longest_verbatim_run"] = {"per_piece": copies, "max": max(copies), "mean": float(np.mean(copies))}
    results["top_line_and_endings"] = {
        "generated": line_and_endings(generated),
        "bach": line_and_endings(reference),
        "reconstruction": line_and_endings(reconstructed),
    }
    results["harmony"] = {  # keys, numerals and cadences of both sets (bachsformer/analyze.py)
        "generated": harmony_statistics(pieces_written),
        "Bach": harmony_statistics([Path(config.data.midi_dir) / p.name for p in held_out]),
    }
    asked = [max(length, MIN_QUARTERS) if tune_first else length for length in lengths]
    results["endings"] = {
        "generated": free_endings(pieces_written, compositions, asked),
        "bach": bach_endings(config.data.midi_dir, [p.name for p in held_out]),
    }
    music["sampling"] = {
        "pieces": num_pieces,
        "quarters": "held-out lengths" if num_quarters is None else num_quarters,
        "lengths": lengths,
        "seed": seed,
        "temperature": options.temperature,
        "top_k": options.top_k,
        "top_p": options.top_p,
        "min_note_steps": options.min_note_steps,
        "tune_first": tune_first,
        "seconds": round(time.perf_counter() - started, 1),
    }
    results["music"] = music
    results["targets"] = targets(results)
    if png is not None:
        write_feature_png(generated, reference, results, png, reconstructed)
    return results


def replace_length(options, quarters: int):
    """The generate options with `quarters` (at least one phrase: shorter held-out files get a phrase)."""
    return dataclasses.replace(options, quarters=max(quarters, MIN_QUARTERS))


TUNE_TEMPERATURES = (0.8, 0.9, 1.0)
TUNE_TOP_PS = (0.9, 0.95, 1.0)
TUNE_FEATURES = ("leap", "range", "steps", "phrase_quarters")
TUNE_CLOSE = ("ends_on_tonic", "ends_by_step", "cut", "fermata_phrase_quarters", "key_heard")


def tune_close(tokens: np.ndarray, mode: int) -> dict:
    """How a tune's tokens close: its last note on the tonic of its mode (C or A), reached by a step (one
    or two semitones), cut (the last note shorter than a quarter), its quarters per FERMATA (its
    length when it has none), and whether the tune alone is heard in its key (C major or A minor)."""
    tokens = np.asarray(tokens)
    pitches = tune_pitches(tokens)
    notes = np.flatnonzero(tokens >= NOTE)
    last = tokens[notes[-1] + 1 :] if len(notes) else tokens[:0]
    held = 1 + int(np.isin(last, (HOLD, FERMATA)).cumprod().sum()) if len(notes) else 0  # eighths
    return {
        "ends_on_tonic": bool(len(pitches)) and int(pitches[-1]) % 12 == TONICS[mode],
        "ends_by_step": len(pitches) > 1 and abs(int(pitches[-1]) - int(pitches[-2])) in (1, 2),
        "cut": held < SLOTS_PER_QUARTER,
        "fermata_phrase_quarters": len(tokens) / SLOTS_PER_QUARTER / max(int((tokens == FERMATA).sum()), 1),
        "key_heard": estimate_key(tune_quarters(tokens)[0]) == Key(TONICS[mode], "minor" if mode == MINOR else "major"),
    }


def evaluate_tunes(config, num_pieces: int, seed: int, device: torch.device) -> dict:
    """The tune model alone, sampled at each TUNE_TEMPERATURES x TUNE_TOP_PS: its tunes (tune i as
    long as held-out file i) against the held-out files' top lines: the overlapping area of each
    top-line feature, their mean, how many tunes end on the tonic and on a half note or longer, and
    the longest run copied from the training files' top lines."""
    tune_model = load_tune_model(config.models.tune, device)
    pieces = load_corpus(
        config.data.midi_dir, config.data.cache_dir, config.data.max_quarters, normalize_key=config.data.normalize_key
    )
    train, held_out = split(pieces, config.data.validation_fraction)
    held_out = held_out or train
    bach = [top_line_features(highest_line(p.quarters)) for p in held_out]
    training_lines = [highest_line(p.quarters) for p in train]
    seeds = [seed + i for i in range(num_pieces)]
    lengths = [max(MIN_QUARTERS, len(held_out[i % len(held_out)].quarters)) for i in range(num_pieces)]
    modes = tune_modes(tune_model, seeds, "", None)
    drafts = config.generate.tune_ending_drafts
    rows = []
    for temperature in TUNE_TEMPERATURES:
        for top_p in TUNE_TOP_PS:
            tunes = []
            for piece_seed, mode, length in zip(seeds, modes, lengths):
                try:
                    tune = sample_tunes(
                        tune_model, 2 * length, [piece_seed], [mode], temperature, top_p, ending_drafts=drafts
                    )
                    tunes.append(tune[0])
                except TuneError:
                    continue
            lines = [tune_quarters(t)[0] for t in tunes]
            features = [top_line_features(q) for q in lines]
            areas = {
                name: overlapping_area([f[name] for f in features], [f[name] for f in bach]) for name in TUNE_FEATURES
            }
            endings = [ending(q, TONICS[mode]) for q, mode in zip(lines, modes)]
            closes = [tune_close(t, mode) for t, mode in zip(tunes, modes)]
            rows.append(
                {
                    "temperature": temperature,
                    "top_p": top_p,
                    **{f"{name}_mean": float(np.mean([f[name] for f in features])) for name in TUNE_FEATURES},
                    **{f"{name}_overlap": area for name, area in areas.items()},
                    "mean_overlap": float(np.mean(list(areas.values()))),
                    **{name: float(np.mean([c[name] for c in closes])) for name in TUNE_CLOSE},
                    "last_note_half_or_longer": float(np.mean([e["final_chord_quarters"] >= 2 for e in endings])),
                    "longest_copy": max(longest_verbatim_runs(lines, training_lines)),
                }
            )
    bach_means = {f"{name}_mean": float(np.mean([f[name] for f in bach])) for name in TUNE_FEATURES}
    held_out_tunes, held_out_modes, _ = corpus_tunes(held_out, config.data.midi_dir)
    bach_closes = [tune_close(t, mode) for t, mode in zip(held_out_tunes, held_out_modes)]
    bach_means.update({name: float(np.mean([c[name] for c in bach_closes])) for name in TUNE_CLOSE})
    bach_means["last_note_half_or_longer"] = float(
        np.mean([ending(tune_quarters(t)[0], 0)["final_chord_quarters"] >= 2 for t in held_out_tunes])
    )
    return {
        "model": config.models.tune,
        "pieces": num_pieces,
        "seed": seed,
        "ending_drafts": drafts,
        "bach": bach_means,
        "rows": rows,
    }


def print_tunes(results: dict) -> None:
    bach = results["bach"]
    print(
        f"{results['pieces']} tunes per row, at held-out lengths, seed {results['seed']}, each close drawn"
        f" {results['ending_drafts']} ways; held-out top lines:"
        + ", ".join(f" {name} {bach[name + '_mean']:.2f}" for name in TUNE_FEATURES)
        + f"; end on the tonic {bach['ends_on_tonic']:.2f}, by step {bach['ends_by_step']:.2f}, last note a half"
        f" or longer {bach['last_note_half_or_longer']:.2f}, cut {bach['cut']:.2f}, quarters per fermata"
        f" {bach['fermata_phrase_quarters']:.1f}, heard in their key {bach['key_heard']:.2f}"
    )
    print(
        "| temperature | top-p | leap | range | steps | phrase | mean overlap | ends on tonic | by step | last >= half"
        " | cut | quarters per fermata | key heard | copy |"
    )
    print("|---" * 14 + "|")
    for row in results["rows"]:
        print(
            f"| {row['temperature']:g} | {row['top_p']:g} | {row['leap_mean']:.2f} | {row['range_mean']:.1f}"
            f" | {row['steps_mean']:.2f} | {row['phrase_quarters_mean']:.1f} | {row['mean_overlap']:.3f}"
            f" | {row['ends_on_tonic']:.2f} | {row['ends_by_step']:.2f} | {row['last_note_half_or_longer']:.2f}"
            f" | {row['cut']:.2f} | {row['fermata_phrase_quarters']:.1f} | {row['key_heard']:.2f}"
            f" | {row['longest_copy']} |"
        )


def targets(results: dict) -> dict:
    """The project's targets for the generated music, each True or False.

    The overlapping-area target is 0.75 at the held-out lengths and 0.70 at a fixed length (pieces
    longer than most chorales drift further from them).
    """
    music = results["music"]
    generated, reference = music["generated_mean"], music["reference_mean"]

    def in_range(name):
        low, high = music["reference_range"][name]
        return low <= generated[name] <= high

    def within(name, fraction):
        return abs(generated[name] - reference[name]) <= fraction * reference[name]

    vq, reconstruction = results["vq_vae"], music["reconstruction_mean"]

    def reconstruction_within(name, fraction):
        return abs(reconstruction[name] - reference[name]) <= fraction * reference[name]

    lines = results["top_line_and_endings"]
    endings = results["endings"]["generated"]

    def line_within(name, fraction):
        return abs(lines["generated"][name] - lines["bach"][name]) <= fraction * lines["bach"][name]

    overlap_target = 0.75 if music["sampling"]["quarters"] == "held-out lengths" else 0.70

    first_nine = music["mean_overlapping_area_of_first_nine"]
    grid = music["grid"]["generated"]
    voiced = {  # the voicing issue's: on the grid, four voices, and no worse for it
        "no_note_off_the_grid_or_shorter_than_it": grid["off_grid"] == 0 and grid["shorter_than_grid"] == 0,
        "at_most_four_keys_at_once": grid["max_keys"] <= 4,
        "max_polyphony_within_10%": within("max_polyphony", 0.1),
        "polyphony_within_10%": within("polyphony", 0.1),
    }
    four_part, bach = results["four_part"], results["four_part"]["bach"]
    generated_parts, reconstruction_parts = four_part["generated"], four_part["reconstruction"]

    def leap_within(name, fraction):
        return abs(generated_parts["leaps"][name] - bach["leaps"][name]) <= fraction * bach["leaps"][name]

    voices = {  # the voices issue's (docs/design.md, Voices)
        "vq_vae_each_voice_matches_bach_on_0.95_of_sixteenths": min(
            vq[f"voice_{n}_sixteenths"] for n in range(len(VOICE_NAMES))
        )
        >= 0.95,
        "reconstruction_parallels_at_most_0.45_per_100_quarters": reconstruction_parts["parallels"] <= 0.45,
        "reconstruction_inner_rests_at_most_0.005": reconstruction_parts["inner_rests"] <= 0.005,
        "parallels_at_most_0.7_per_100_quarters": generated_parts["parallels"] <= 0.7,
        "inner_rests_at_most_0.01": generated_parts["inner_rests"] <= 0.01,
        "alto_leap_within_15%": leap_within("Alto", 0.15),
        "tenor_leap_within_15%": leap_within("Tenor", 0.15),
        "notes_per_quarter_at_least_90%_of_bach": generated_parts["notes_per_quarter"]
        >= 0.9 * bach["notes_per_quarter"],
    }
    return {
        **voiced,
        **voices,
        "vq_vae_held_notes_kept_held_at_least_0.90": vq["held_kept"] >= 0.90,
        "vq_vae_restruck_notes_kept_restruck_at_least_0.95": vq["restruck_kept"] >= 0.95,
        "vq_vae_onset_f1_at_least_0.95": vq["onset_f1"] >= 0.95,
        "vq_vae_all_codes_used": vq["codes_used"] == vq["num_embeddings"],
        "reconstruction_long_notes_within_20%": reconstruction_within("long_notes", 0.2),
        "reconstruction_repetition_within_30%": reconstruction_within("repetition", 0.3),
        "reconstruction_max_polyphony_within_10%": reconstruction_within("max_polyphony", 0.1),
        "scale_consistency_within_0.02": abs(generated["scale_consistency"] - reference["scale_consistency"]) <= 0.02,
        f"mean_overlapping_area_of_first_nine_at_least_{overlap_target}": first_nine >= overlap_target,
        "next_quarter_in_key_at_least_0.93": results["transformer"]["next_quarter"]["sampled_in_key"] >= 0.93,
        "max_polyphony_within_20%": within("max_polyphony", 0.2),
        "top_voice_leap_within_20%": within("top_voice_leap", 0.2),
        "notes_per_quarter_within_10%": within("notes_per_quarter", 0.1),
        f"no_verbatim_run_of_{COPY_LIMIT}_quarters": music["longest_verbatim_run"]["max"] < COPY_LIMIT,
        "silent_quarters_within_held_out_range": in_range("silent_quarters"),
        "repetition_within_held_out_range": in_range("repetition"),
        "top_line_leap_within_10%": line_within("leap", 0.1),
        "top_line_range_within_10%": line_within("range", 0.1),
        "final_chord_held_a_half_note_in_every_piece": lines["generated"]["final_chord_held_half"] == 1.0,
        "bass_on_the_tonic_at_the_end_at_least_0.70": lines["generated"]["bass_on_tonic"] >= 0.70,
        # the cadence issue's, read from the four voices (endings.py)
        "authentic_close_at_least_0.60": endings["final_authentic"] >= 0.60,
        "tune_ends_on_the_tonic_at_least_0.65": endings["tune_on_tonic"] >= 0.65,
        "final_chord_held_a_quarter_or_more_at_least_0.9": endings["final_chord_held"] >= 0.9,
        "key_heard_as_written_at_least_0.90": endings["key_heard_as_written"] >= 0.90,
        "no_tune_cut_and_every_piece_within_a_bar_of_its_length": endings["tune_cut"] == 0
        and endings["within_a_bar_of_the_length"] == 1,
    }


def note_length_shares(pieces: list[np.ndarray], bins: np.ndarray) -> np.ndarray:
    """The share of all notes of `pieces` whose length in quarters falls in each of `bins` (edges): [len(bins) - 1]."""
    lengths = np.concatenate(
        [np.diff(quarters_to_notes(piece)[:, :2], axis=1)[:, 0] / piece.shape[2] for piece in pieces]
    )
    counts, _ = np.histogram(lengths, bins=bins)
    return counts / max(len(lengths), 1)


def write_feature_png(
    generated: list[np.ndarray],
    reference: list[np.ndarray],
    results: dict,
    path: str | Path,
    reconstructed: list[np.ndarray] | None = None,
):
    """One small panel per feature, the generated pieces' values against the held-out Bach files',
    and a last panel of note lengths: Bach's, the generated music's and the VQ-VAE reconstructions'."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BachsformerError("--png needs matplotlib: pip install matplotlib") from None
    generated_features = [piece_features(piece) for piece in generated]
    reference_features = [piece_features(piece) for piece in reference]
    columns = 3
    rows = -(-(len(FEATURE_NAMES) + 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.3 * rows), dpi=110)
    for axis, name in zip(axes.flat, FEATURE_NAMES):
        ours = np.array([f[name] for f in generated_features])
        bach = np.array([f[name] for f in reference_features])
        bins = np.histogram_bin_edges(np.concatenate([ours, bach]), bins=16)
        axis.hist(bach, bins=bins, density=True, alpha=0.5, color="tab:blue", label="Bach (held out)")
        axis.hist(ours, bins=bins, density=True, alpha=0.5, color="tab:orange", label="generated")
        area = results["music"]["overlapping_area"][name]
        axis.set_title(f"{name.replace('_', ' ')} (overlap {area:.2f})", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.set_yticks([])
    axis = axes.flat[len(FEATURE_NAMES)]
    bins = np.array([0, 0.25, 0.5, 1, 1.5, 2, 3, 4, np.inf])  # quarters: sixteenths and eighths ... whole notes
    labels = ["<1/4", "1/4", "1/2", "1", "1.5", "2", "3", "4+"]
    sets = [(reference, "Bach (held out)", "tab:blue"), (generated, "generated", "tab:orange")]
    if reconstructed is not None:
        sets.append((reconstructed, "VQ-VAE reconstruction", "tab:green"))
    width = 0.8 / len(sets)
    for number, (pieces, label, color) in enumerate(sets):
        positions = np.arange(len(labels)) + (number - (len(sets) - 1) / 2) * width
        axis.bar(positions, note_length_shares(pieces, bins), width=width, color=color, alpha=0.7, label=label)
    axis.set_xticks(np.arange(len(labels)), labels, fontsize=6)
    axis.set_title("note length in quarters (share of notes)", fontsize=8)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=5)
    for axis in list(axes.flat)[len(FEATURE_NAMES) + 1 :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    sampling = results["music"]["sampling"]
    figure.suptitle(
        f"{sampling['pieces']} generated pieces ({sampling['quarters']} quarters) against"
        f" {len(reference)} held-out chorales; mean overlap {results['music']['mean_overlapping_area']:.3f}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def print_table(results: dict) -> None:
    vq, lm, music = results["vq_vae"], results["transformer"], results["music"]
    print(f"data: {results['data']['files']} files, {results['data']['held_out']} held out")
    agreement = ", ".join(
        f"{name} {vq[f'voice_{n}']:.3f} ({vq[f'voice_{n}_sixteenths']:.3f})" for n, name in enumerate(VOICE_NAMES)
    )
    print(
        f"VQ-VAE (held out): each voice's steps (sixteenths) as Bach's: {agreement}; onset F1 {vq['onset_f1']:.4f},"
        f" perplexity {vq['perplexity']:.2f}, {vq['codes_used']} of {vq['num_embeddings']} codes used"
    )
    print(
        f"VQ-VAE ties: notes held across a quarter boundary come back held {vq['held_kept']:.3f},"
        f" notes struck again on a boundary come back struck again {vq['restruck_kept']:.3f}"
    )
    kept = ", ".join(f"{shift}: {fraction:.3f}" for shift, fraction in vq["codes_kept_under_transposition"].items())
    print(f"VQ-VAE codes kept when a quarter is transposed by n semitones (compared n // 8 rows lower): {kept}")
    print(
        f"transformer (held out): {lm['bits_per_code']:.3f} bits per code;"
        f" baselines unigram {lm['unigram_bits']:.3f}, bigram {lm['bigram_bits']:.3f}"
    )
    step = lm["next_quarter"]
    print(
        f"next quarter sampled after {step['context_quarters']} true ones ({step['quarters']} quarters):"
        f" {step['sampled_in_key']:.3f} of its notes in the local key"
        f" (VQ-VAE reconstruction of the true quarter: {step['reconstructed_in_key']:.3f})"
    )
    sampling = music["sampling"]
    lengths = sampling["lengths"]
    length = f"{lengths[0]}" if min(lengths) == max(lengths) else f"{min(lengths)}-{max(lengths)} (held-out lengths)"
    print(
        f"\ngenerated: {sampling['pieces']} pieces of {length} quarters"
        f" (temperature {sampling['temperature']:g}, top-k {sampling['top_k']}, top-p {sampling['top_p']:g})"
        f" vs {music['num_reference']} held-out Bach files"
    )
    print("| feature | generated mean | VQ-VAE reconstruction mean | Bach mean | overlapping area |")
    print("|---|---|---|---|---|")
    for name in FEATURE_NAMES:
        print(
            f"| {name} | {music['generated_mean'][name]:.3f} | {music['reconstruction_mean'][name]:.3f}"
            f" | {music['reference_mean'][name]:.3f}"
            f" | {music['overlapping_area'][name]:.3f} |"
        )
    print(f"| **mean overlapping area** | | | | **{music['mean_overlapping_area']:.3f}** |")
    print(
        f"mean overlapping area of the first seven features: {music['mean_overlapping_area_of_first_seven']:.3f},"
        f" of the first nine: {music['mean_overlapping_area_of_first_nine']:.3f}"
    )
    print(f"pitch-class histogram distance (total variation): {music['pitch_class_distance']:.3f}")
    grid = music["grid"]
    rows = [(name, grid[name]) for name in ("generated", "Bach")]
    print(f"on the grid of 1/{grid['note_value']} notes:")
    for name, row in rows:
        print(
            f"  {name.replace('_', ' ')}: {row['off_grid']:.3f} of {row['notes']} notes off it,"
            f" {row['shorter_than_grid']:.3f} shorter, at most {row['max_keys']} keys at once"
        )
    print_four_part(results["four_part"])
    copies = music["longest_verbatim_run"]
    print(f"longest verbatim run from the training files: max {copies['max']}, mean {copies['mean']:.2f} quarters")
    print(f"\nfree music written {'tune first' if sampling.get('tune_first') else 'the old way (no tune)'}")
    if "tune" in results:
        tune = results["tune"]
        print(
            f"tune model (held out): {tune['bits_per_token']:.3f} bits per token; baselines unigram"
            f" {tune['unigram_bits']:.3f}, bigram {tune['bigram_bits']:.3f}; sampled at temperature"
            f" {tune['temperature']:g}, top-p {tune['top_p']:g}, each close drawn {tune['ending_drafts']} ways;"
            f" longest run of a tune copied from the training top lines:"
            f" {tune['longest_verbatim_run_of_tunes']} quarters"
        )
    lines = results["top_line_and_endings"]
    print("| top line and ending | generated | VQ-VAE reconstruction | Bach |")
    print("|---|---|---|---|")
    for name in lines["bach"]:
        values = " | ".join(f"{lines[column][name]:.3f}" for column in ("generated", "reconstruction", "bach"))
        print(f"| {name} | {values} |")
    if "harmony" in results:
        print_harmony(results["harmony"])
    print_endings(results["endings"])
    print("\ntargets:")
    for name, met in results["targets"].items():
        print(f"  {'met    ' if met else 'MISSED '} {name}")


def print_four_part(four_part: dict) -> None:
    """The four-part figures (`rules.voice_figures`) of each column of `four_part`, one row per figure."""
    columns = list(four_part)
    print(f"| four parts | {' | '.join(columns)} |")
    print(f"|---|{'---|' * len(columns)}")
    names = ("parallels", "parallel_fifths", "parallel_octaves", "crossings", "inner_rests", "unisons")
    for name in (*names, "notes_per_quarter"):
        print(f"| {name} | {' | '.join(f'{four_part[c][name]:.3f}' for c in columns)} |")
    for voice in VOICE_NAMES:
        leaps = " | ".join(f"{four_part[column]['leaps'][voice]:.3f}" for column in columns)
        print(f"| {voice} leap | {leaps} |")


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    parser.add_argument("--num", type=int, default=32, help="pieces to generate (default 32)")
    parser.add_argument("--quarters", type=int, help="quarters per piece (default: piece i as long as held-out file i)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-tune", action="store_true", help="free music the old way: codes with no melody")
    parser.add_argument("--json", help="also write all results to this JSON file")
    parser.add_argument(
        "--png", help="also draw each feature, generated against Bach (with --harmonize: one chorale), into this PNG"
    )
    parser.add_argument(
        "--harmonize", action="store_true", help="harmonize the held-out chorales' Soprano tracks instead"
    )
    parser.add_argument("--tunes", action="store_true", help="the tune model alone, over temperature and top-p")
    parser.add_argument("--melodies", metavar="FOLDER", help="harmonize every tune in FOLDER; how each one ends")
    parser.add_argument("--files", type=int, help="with --harmonize: only the first N held-out chorales")
    parser.add_argument("--systems", help="with --harmonize: the rows to compute, comma-separated (default: all)")
    args = parser.parse_args()
    if args.num < 1 or (args.quarters is not None and args.quarters < 1) or (args.files is not None and args.files < 1):
        parser.error("--num, --quarters and --files must be at least 1")
    config = load_config(args.config, args.set)
    set_sampling_threads(config.generate.threads)
    if args.no_tune:
        config.generate.tune_first = False
    if args.tunes:
        results = evaluate_tunes(config, args.num, args.seed, resolve_device(args.device))
        print_tunes(results)
    elif args.melodies:
        results = melody_endings(config, args.melodies, args.seed, resolve_device(args.device))
        print_melody_endings(results)
    elif args.harmonize:
        systems = tuple(args.systems.split(",")) if args.systems else SYSTEMS
        unknown = set(systems) - set(SYSTEMS)
        if unknown:
            parser.error(f"--systems: unknown {', '.join(sorted(unknown))} (known: {', '.join(SYSTEMS)})")
        results = evaluate_harmonization(config, args.seed, resolve_device(args.device), args.png, args.files, systems)
        print_harmonization(results)
    else:
        results = evaluate(config, args.num, args.quarters, args.seed, resolve_device(args.device), args.png)
        print_table(results)
    if args.png:
        print(f"\nwrote {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    exit_on_user_error(main)
