"""From the two trained models to music: load a matching pair, sample codes, decode quarters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from bachsformer.checkpoint import CheckpointError
from bachsformer.config import GenerateConfig
from bachsformer.errors import BachsformerError
from bachsformer.gpt import GPT
from bachsformer.keys import (
    Key,
    KeyRequest,
    estimate_key,
    move_to_key,
    normalizing_shift,
    parse_key,
    transpose_quarters,
)
from bachsformer.midi import drop_short_notes, notes_to_roll, quarters_to_notes, read_midi_tracks
from bachsformer.voicing import VOICE_NAMES, Voices, grid_steps, restore_repeats, voice
from bachsformer.vqvae import VQVAE

DEFAULT_MIN_CONTEXT = 96  # six quarters, half of the default window of 191 codes


def load_models(vq_vae_path, transformer_path, device="cpu") -> tuple[VQVAE, GPT]:
    """Load the VQ-VAE and the transformer, refusing a pair that does not belong together."""
    vq_vae = VQVAE.from_checkpoint(vq_vae_path, map_location=device)
    transformer = GPT.from_checkpoint(transformer_path, map_location=device)
    trained_on = transformer.checkpoint_info.get("vq_vae_fingerprint")
    if transformer.config.vocab_size != vq_vae.num_embeddings:
        raise CheckpointError(
            f"{transformer_path}: its vocabulary has {transformer.config.vocab_size} codes but"
            f" {vq_vae_path} has {vq_vae.num_embeddings}; train the transformer on this VQ-VAE"
            " (python train_transformer.py)"
        )
    if transformer.config.block_size <= vq_vae.codes_per_quarter:
        raise CheckpointError(
            f"{transformer_path}: its window of {transformer.config.block_size} codes does not hold a quarter"
            f" ({vq_vae.codes_per_quarter} codes) and the code after it; retrain it with a larger gpt.block_size"
            " (python train_transformer.py)"
        )
    if trained_on != vq_vae.fingerprint:
        raise CheckpointError(
            f"{transformer_path}: learned the codes of VQ-VAE {trained_on}, but {vq_vae_path} is"
            f" {vq_vae.fingerprint}; use the pair trained together, or retrain the transformer"
            " on this VQ-VAE (python train_transformer.py)"
        )
    return vq_vae, transformer


@torch.no_grad()
def decode_quarters(
    vq_vae: VQVAE,
    codes: torch.Tensor,
    consecutive: bool = True,
    min_note_steps: int = 0,
    previous: torch.Tensor | None = None,
) -> np.ndarray:
    """Codes [Q * 16] -> quarters, bool [Q, 88, 32] (note probabilities above one half).

    consecutive: the quarters are one piece in order (see `VQVAE.decode`); otherwise each is alone.
    min_note_steps: notes shorter than this many steps are dropped: the decoder's stray fragments
    (the chorales hold no note shorter than 4 steps, 1/8 of a quarter). previous: the codes [16]
    of the quarter before (the first, or each when not consecutive), for a decoder that hears it.
    """
    codes = codes.view(-1, vq_vae.codes_per_quarter)
    quarters = (vq_vae.decode(codes, consecutive, previous=previous) > 0.5).cpu().numpy()
    return drop_short_notes(quarters, min_note_steps) if min_note_steps > 1 else quarters


@torch.no_grad()
def sample_codes(
    vq_vae: VQVAE, transformer: GPT, prompt: torch.Tensor | None, num_quarters: int, seeds: list, options
) -> torch.Tensor:
    """`num_quarters` new quarters of codes after prompt [B, P] (or from nothing): [B, num_quarters * 16].

    Sampled with the options' temperature, top-k and top-p; each code sees at least
    DEFAULT_MIN_CONTEXT codes (whole quarters, fewer than the window holds) once there are that many.
    """
    per_quarter = vq_vae.codes_per_quarter
    min_context = min(DEFAULT_MIN_CONTEXT, (transformer.config.block_size - 1) // per_quarter * per_quarter)
    num_new = num_quarters * per_quarter
    codes = transformer.generate(
        prompt,
        num_new,
        seeds,
        options.temperature,
        options.top_k,
        options.top_p,
        codes_per_quarter=per_quarter,
        min_context=min_context,
    )
    return codes[:, codes.shape[1] - num_new :]


@dataclass(frozen=True)
class Composition:
    quarters: np.ndarray  # bool [Q, 88, 32]
    key: Key  # the key it is written in: asked for, the primer's, or estimated
    melody: np.ndarray | None = None  # bool [Q, 88, 32] inside `quarters`: the tune harmonized, in `key`
    voices: Voices | None = None  # the four voices `quarters` is made of, once voiced (`voiced`)
    tracks: tuple | None = None  # what its MIDI file holds once voiced: (name, notes [N, 3]) per track
    fermatas: tuple = ()  # onset steps of the tune's phrase ends (tune first), as the tune model wrote them


def file_tracks(path) -> list[tuple[str, np.ndarray]]:
    """The tracks of a MIDI file as (name, notes [N, 3] of onset step, offset step, MIDI pitch) on the grid
    `read_midi` reads it on, each repeated note at its full length."""
    return [(track.name, restore_repeats(quarters_to_notes(track.quarters))) for track in read_midi_tracks(path)]


def notes_outside(notes: np.ndarray, start: int, end: int) -> np.ndarray:
    """Notes [N, 3] without what sounds in steps [start, end): notes across an edge are cut there."""
    notes = np.array(notes, dtype=np.int64).reshape(-1, 3)
    before = notes[notes[:, 0] < start].copy()
    before[:, 1] = np.minimum(before[:, 1], start)
    after = notes[notes[:, 1] > end].copy()
    after[:, 0] = np.maximum(after[:, 0], end)
    return np.concatenate([before, after])


def voiced(
    piece: Composition,
    options: GenerateConfig,
    melody_name: str = VOICE_NAMES[0],
    kept: list[tuple[str, np.ndarray]] | None = None,
    span: tuple[int, int] | None = None,
) -> Composition:
    """The piece as four voices S, A, T, B on the grid of `options.grid` (voicing.py); as it is when
    `options.voicing` is off.

    A melody is the Soprano, its track named `melody_name`. kept: the tracks of the file the piece was
    made from (`file_tracks`), whose notes outside quarters span = (first, last), 0-based and last
    excluded, stay exactly as they were; only the music of that span is voiced, and its voices join
    the kept tracks of their names (a chorale's) or come after them as tracks of their own.
    """
    if not options.voicing:
        return piece
    steps = piece.quarters.shape[2]
    grid = grid_steps(options.grid, steps)
    names = (melody_name, *VOICE_NAMES[1:])
    if kept is None:
        voices = voice(piece.quarters, grid, piece.melody)
        return dataclasses.replace(
            piece, quarters=voices.quarters(), voices=voices, tracks=tuple(zip(names, voices.notes))
        )
    first, last = span
    start, end = first * steps, last * steps
    tracks = [(name, notes_outside(notes, start, end)) for name, notes in kept]
    passage = voice(piece.quarters[first:last], grid)
    for name, notes in zip(names, passage.notes):
        notes = notes + np.array([start, start, 0])  # [N, 3] on the piece's steps
        match = next((n for n, (track, _) in enumerate(tracks) if track == name), None)
        if match is None:
            tracks.append((name, notes))
        else:
            joined = np.concatenate([tracks[match][1], notes])
            tracks[match] = (name, joined[np.argsort(joined[:, 0], kind="stable")])
    quarters = notes_to_roll(np.concatenate([notes for _, notes in tracks]), len(piece.quarters), steps)
    return dataclasses.replace(piece, quarters=quarters, tracks=tuple(tracks))


def in_key(quarters: np.ndarray, key: Key, request: str, melody: np.ndarray | None = None) -> Composition:
    """Quarters [Q, 88, 32] in `key`, moved to the key `request` names ("": left as they are).

    melody: quarters [Q, 88, 32] inside the music, moved with it: the same notes span the keys the
    music spans, so `move_to_key` picks the same octave for both.
    """
    if request:
        both = quarters if melody is None else np.concatenate([quarters, melody])
        both, key = move_to_key(both, parse_key(request), key)
        quarters, melody = (both, None) if melody is None else (both[: len(quarters)], both[len(quarters) :])
    return Composition(quarters, key, melody)


def refuse_mode_change(melody: np.ndarray, request: str, source: str) -> None:
    """BachsformerError when `request` (a --key) names a mode other than the melody's own.

    Changing the mode rewrites degrees of the scale (a major tune's F# becomes F in D minor), and a
    harmonization keeps the melody's notes exactly; moving it to another tonic keeps them as a tune.
    """
    asked = parse_key(request) if request else None
    if asked is None or asked.mode is None:
        return
    own = estimate_key(melody)
    if asked.mode != own.mode:
        tonic = KeyRequest(asked.tonic, None)
        raise BachsformerError(
            f"--key {request}: {source} is in {own}, and a harmonized melody keeps its notes exactly, so"
            f" --key may move it to another tonic but not change its mode (give --key {tonic})"
        )


@torch.no_grad()
def compose(
    vq_vae: VQVAE,
    transformer: GPT,
    options: GenerateConfig,
    seeds: list[int],
    primer: np.ndarray | None = None,
    continuation_only: bool = False,
    normalize_key: bool = True,
) -> list[Composition]:
    """One piece per seed: `options.quarters` new quarters, after the primer's own unless asked not to.

    The models write key-normalized music (C major / A minor). primer: quarters [P, 88, 32] to
    continue; it is moved to C major / A minor, encoded and continued code by code, and the
    continuation moved back to the primer's key, the primer's own quarters kept as they were.
    options.key: move each whole piece to that key (`keys.move_to_key`); empty: as written.
    normalize_key: whether the models learned key-normalized music (`data.normalize_key`); when
    not, a primer is continued in its own key.
    options.min_note_steps: shorter decoded notes are dropped (`decode_quarters`).
    """
    if options.quarters < 1:
        raise ValueError(f"the number of quarters must be at least 1, got {options.quarters}")
    device = transformer.first_code_probs.device
    prompt, primer_key, primer_shift = None, None, 0
    if primer is not None:
        primer = primer.astype(bool)
        primer_key = estimate_key(primer)
        primer_shift = normalizing_shift(primer, primer_key) if normalize_key else 0
        normalized = torch.from_numpy(transpose_quarters(primer, primer_shift)).to(device)
        prompt = vq_vae.encode(normalized).flatten().expand(len(seeds), -1)
    codes = sample_codes(vq_vae, transformer, prompt, options.quarters, seeds, options)
    request = parse_key(options.key) if options.key else None
    pieces = []
    for row in codes:
        quarters = decode_quarters(vq_vae, row, min_note_steps=options.min_note_steps)
        key = primer_key
        if primer is not None:
            quarters = transpose_quarters(quarters, -primer_shift)
            if not continuation_only:
                quarters = np.concatenate([primer, quarters])
        if request is not None:
            quarters, key = move_to_key(quarters, request, key)
        pieces.append(Composition(quarters, key or estimate_key(quarters)))
    return pieces
