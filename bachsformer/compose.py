"""From the two trained models to music: load a matching pair, sample codes, decode them to four voices."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from bachsformer.checkpoint import CheckpointError
from bachsformer.config import GenerateConfig
from bachsformer.errors import BachsformerError
from bachsformer.gpt import GPT
from bachsformer.keys import Key, KeyRequest, estimate_key, key_move, moved_rows, normalizing_shift, parse_key
from bachsformer.midi import (
    STEPS_PER_QUARTER,
    Meter,
    notes_to_roll,
    quarters_to_notes,
    read_midi_tracks,
    tracks_to_midi_bytes,
)
from bachsformer.voices import VOICE_NAMES, Voices, concatenate, from_lines, restore_repeats
from bachsformer.voicing import grid_steps, voice
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


@torch.inference_mode()
def decode_voices(
    vq_vae: VQVAE,
    codes: torch.Tensor,
    min_note_steps: int = 0,
    previous: torch.Tensor | None = None,
) -> Voices:
    """Codes [Q * 16] of consecutive quarters -> their voices, as the decoder writes them (voices.py).

    min_note_steps: notes shorter than this many steps are the decoder's stray fragments, merged into
    the note before them or dropped (`Voices.without_short_notes`; the chorales hold no note shorter
    than 4 steps, 1/8 of a quarter). previous: the codes [16] of the quarter before the first, for a
    decoder that hears it (default: a silent quarter).
    """
    keys, onsets = vq_vae.decode(codes.view(-1, vq_vae.codes_per_quarter), previous=previous)
    voices = from_lines(keys.cpu().numpy(), onsets.cpu().numpy())
    return voices.without_short_notes(min_note_steps) if min_note_steps > 1 else voices


@torch.inference_mode()
def decode_quarters(
    vq_vae: VQVAE,
    codes: torch.Tensor,
    consecutive: bool = True,
    min_note_steps: int = 0,
    previous: torch.Tensor | None = None,
) -> np.ndarray:
    """Codes [Q * 16] -> the union of their decoded voices as quarters, bool [Q, 88, 32].

    consecutive: the quarters are one piece in order (`decode_voices`); otherwise each is decoded and
    read alone, after `previous` (the codes [16] of the quarter before each, default silence).
    """
    if consecutive:
        return decode_voices(vq_vae, codes, min_note_steps, previous).quarters()
    keys, onsets = vq_vae.decode(codes.view(-1, vq_vae.codes_per_quarter), consecutive=False, previous=previous)
    keys, onsets = keys.cpu().numpy(), onsets.cpu().numpy()
    quarters = [from_lines(keys[n : n + 1], onsets[n : n + 1]) for n in range(len(keys))]
    return np.concatenate(
        [(v.without_short_notes(min_note_steps) if min_note_steps > 1 else v).quarters() for v in quarters]
    )


@torch.inference_mode()
def sample_codes(
    vq_vae: VQVAE,
    transformer: GPT,
    prompt: torch.Tensor | None,
    num_quarters: int,
    seeds: list,
    options,
    progress=None,
) -> torch.Tensor:
    """`num_quarters` new quarters of codes after prompt [B, P] (or from nothing): [B, num_quarters * 16].

    Sampled with the options' temperature, top-k and top-p; each code sees at least
    DEFAULT_MIN_CONTEXT codes (whole quarters, fewer than the window holds) once there are that many.
    progress: called with 1 after each new quarter of the batch is sampled, or None.
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
        progress=progress,
    )
    return codes[:, codes.shape[1] - num_new :]


@dataclass(frozen=True)
class Composition:
    voices: Voices  # the four voices S, A, T, B
    key: Key  # the key it is written in: asked for, the primer's, or estimated
    melody: np.ndarray | None = None  # bool [Q, 88, 32]: the tune harmonized, the Soprano, in `key`
    tracks: tuple | None = None  # what its MIDI file holds once named (`voiced`): (name, notes [N, 3]) per track
    fermatas: tuple = ()  # onset steps of the tune's phrase ends (tune first), as the tune model wrote them

    @cached_property
    def quarters(self) -> np.ndarray:
        """The music as the roll of midi.py, bool [Q, 88, 32]: the union of the tracks (or the voices)."""
        if self.tracks is None:
            return self.voices.quarters()
        notes = np.concatenate([notes for _, notes in self.tracks]).reshape(-1, 3)
        return notes_to_roll(notes, self.voices.num_quarters, self.voices.steps_per_quarter)


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
    keep_tune_track: bool = False,
) -> Composition:
    """The piece with the tracks of its MIDI file: its four voices S, A, T, B, as the decoder wrote them
    (with `options.voicing` off, `--raw`: no tracks, the union written as one).

    A melody is the Soprano, its track named `melody_name`. kept: the tracks of the file the piece was
    made from (`file_tracks`), whose notes outside quarters span = (first, last), 0-based and last
    excluded, stay exactly as they were; the voices of that span join the kept tracks of their names
    (a chorale's) or come after them as tracks of their own. keep_tune_track: the piece's melody is the
    kept track `melody_name` (a harmonization's passage rewritten), which stays whole: the passage's
    lower voices join the others.
    """
    if not options.voicing:
        return piece
    names = (melody_name, *VOICE_NAMES[1:])
    if kept is None:
        return dataclasses.replace(piece, tracks=tuple(zip(names, piece.voices.notes)))
    first, last = span
    steps = piece.voices.steps_per_quarter
    start, end = first * steps, last * steps
    tune = keep_tune_track and piece.melody is not None and any(name == melody_name for name, _ in kept)
    tracks = [
        (name, notes if tune and name == melody_name else notes_outside(notes, start, end)) for name, notes in kept
    ]
    passage = piece.voices.sliced(first, last)
    for number, (name, notes) in enumerate(zip(names, passage.notes)):
        if tune and number == 0:
            continue  # the tune is the passage's Soprano, and its track keeps it whole
        notes = notes + np.array([start, start, 0])  # [N, 3] on the piece's steps
        match = next((n for n, (track, _) in enumerate(tracks) if track == name), None)
        if match is None:
            tracks.append((name, notes))
        else:
            joined = np.concatenate([tracks[match][1], notes])
            tracks[match] = (name, joined[np.argsort(joined[:, 0], kind="stable")])
    return dataclasses.replace(piece, tracks=tuple(tracks))


def in_key(voices: Voices, key: Key, request: str, melody: np.ndarray | None = None) -> Composition:
    """Voices in `key`, moved to the key `request` names ("": left as they are).

    melody: quarters [Q, 88, 32] inside the music, moved with it by the same map of keys.
    """
    if request:
        rows, key = key_move(voices.quarters(), parse_key(request), key)
        voices = voices.moved(rows)
        if melody is not None:
            melody = moved_rows(melody, rows)
    return Composition(voices, key, melody)


def as_voices(music: np.ndarray | Voices, grid: int) -> Voices:
    """Music given as voices, or as quarters [Q, 88, 32] without parts, split by the voicing rule (voicing.py)."""
    return music if isinstance(music, Voices) else voice(np.asarray(music, dtype=bool), grid)


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


@torch.inference_mode()
def compose(
    vq_vae: VQVAE,
    transformer: GPT,
    options: GenerateConfig,
    seeds: list[int],
    primer: np.ndarray | Voices | None = None,
    continuation_only: bool = False,
    normalize_key: bool = True,
    progress=None,
) -> list[Composition]:
    """One piece per seed: `options.quarters` new quarters, after the primer's own unless asked not to.

    The models write key-normalized music (C major / A minor). primer: the voices to continue (or
    quarters [P, 88, 32], split by the voicing rule); they are moved to C major / A minor, encoded and
    continued code by code, and the continuation moved back to the primer's key, the primer's own
    voices kept as they were. options.key: move each whole piece to that key (`keys.key_move`);
    empty: as written. normalize_key: whether the models learned key-normalized music
    (`data.normalize_key`); when not, a primer is continued in its own key.
    options.min_note_steps: shorter decoded notes are dropped (`decode_voices`).
    progress: called with 1 after each new quarter is sampled (for all seeds at once), or None.
    """
    if options.quarters < 1:
        raise ValueError(f"the number of quarters must be at least 1, got {options.quarters}")
    device = transformer.first_code_probs.device
    prompt, primer_key, primer_shift, last_primer_codes = None, None, 0, None
    if primer is not None:
        primer = as_voices(primer, grid_steps(options.grid, STEPS_PER_QUARTER))
        primer_key = estimate_key(primer.quarters())
        primer_shift = normalizing_shift(primer.quarters(), primer_key) if normalize_key else 0
        keys, onsets = (torch.from_numpy(lines).to(device) for lines in primer.transposed(primer_shift).lines())
        primer_codes = vq_vae.encode(keys, onsets)  # [P, 16]
        last_primer_codes = primer_codes[-1]
        prompt = primer_codes.flatten().expand(len(seeds), -1)
    codes = sample_codes(vq_vae, transformer, prompt, options.quarters, seeds, options, progress)
    request = parse_key(options.key) if options.key else None
    pieces = []
    for row in codes:
        voices = decode_voices(vq_vae, row, options.min_note_steps, previous=last_primer_codes)
        key = primer_key
        if primer is not None:
            voices = voices.transposed(-primer_shift)
            if not continuation_only:
                voices = concatenate([primer, voices])
        key = key or estimate_key(voices.quarters())
        if request is not None:
            rows, key = key_move(voices.quarters(), request, key)
            voices = voices.moved(rows)
        pieces.append(Composition(voices, key))
    return pieces


def piece_midi_bytes(piece: Composition, meter: Meter, program: int, tune_name: str = VOICE_NAMES[0]) -> bytes:
    """The MIDI file of a piece, the same from every route (generate.py, the API, the page's download).

    Its tracks: the four voices once voiced (a harmonized tune's voice named as its track, or
    "Soprano"; a file's own tracks where the piece was made from one), else the raw roll: the tune
    and "Harmony", or one track. Its meter (time signatures, tempos, a pickup's rests), the key
    signature of `piece.key`, and for a harmonization a marker naming the tune's track, so that
    regenerating a passage of the file keeps the tune (generate.py --regenerate).
    """
    if piece.tracks is not None:
        tracks = list(piece.tracks)
        if tune_name not in [name for name, _ in tracks]:  # the tune is the first voice
            tune_name = tracks[0][0]
    elif piece.melody is not None:
        tune = np.asarray(piece.melody, dtype=bool)
        tracks = [(tune_name, quarters_to_notes(tune)), ("Harmony", quarters_to_notes(piece.quarters & ~tune))]
    else:
        tracks = [("bachsformer", quarters_to_notes(piece.quarters))]
    return tracks_to_midi_bytes(
        tracks,
        len(piece.quarters),
        piece.quarters.shape[2],
        program=program,
        meter=meter,
        key_signature=piece.key.signature,
        tune_track=tune_name if piece.melody is not None else None,
    )
