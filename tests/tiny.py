"""A tiny synthetic corpus and config for running the training scripts in seconds on a CPU.

`write_corpus` writes chorale-like MIDI files (a few voices, each holding notes of 4-16 steps in
its own register) from a fixed seed; `write_config` writes a config.yaml with models small enough
to train a few epochs in a test. `ddp_worker` is one rank of an in-process DistributedDataParallel
run, here so that `torch.multiprocessing.spawn` can import it. `write_model_pair` saves untrained
models of that config as a matching pair for generate.py, and `run_script` runs a script in-process.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from bachsformer.checkpoint import save_checkpoint
from bachsformer.gpt import GPT, GPTConfig
from bachsformer.midi import LOWEST_PITCH, NUM_KEYS, STEPS_PER_QUARTER, tracks_to_midi_bytes
from bachsformer.vqvae import VQVAE, VQVAEConfig

REPO = Path(__file__).resolve().parents[1]

NUM_FILES = 12
QUARTERS_PER_FILE = 16
VOICE_RANGES = ((36, 52), (48, 62), (55, 69), (60, 76))  # bass, tenor, alto, soprano (MIDI pitches)
BLOCK_QUARTERS = 3
TUNE_BLOCK = 31  # 16 quarters of eighths, less one


def tiny_voices(num_files: int = NUM_FILES, quarters: int = QUARTERS_PER_FILE, seed: int = 0) -> list[list[np.ndarray]]:
    """Per file, the notes [N, 3] (onset step, offset step, MIDI pitch) of each voice of VOICE_RANGES (bass first):
    each sounding throughout in notes of 4-16 steps, one step of rest after each, so repeated pitches stay two notes."""
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(num_files):
        voices = []
        for low, high in VOICE_RANGES:
            step, notes = 0, []
            while step < quarters * STEPS_PER_QUARTER:
                length = int(rng.integers(4, 17))
                pitch = int(rng.integers(low, high + 1))
                notes.append([step, min(step + length - 1, quarters * STEPS_PER_QUARTER), pitch])
                step += length
            voices.append(np.array(notes, dtype=np.int64))
        pieces.append(voices)
    return pieces


def tiny_rolls(num_files: int = NUM_FILES, quarters: int = QUARTERS_PER_FILE, seed: int = 0) -> list[np.ndarray]:
    """Bool rolls [quarters, 88, 32] of `tiny_voices`: the voices' notes, one roll."""
    rolls = []
    for voices in tiny_voices(num_files, quarters, seed):
        roll = np.zeros((NUM_KEYS, quarters * STEPS_PER_QUARTER), dtype=bool)  # [88, Q * 32]
        for onset, offset, pitch in np.concatenate(voices).tolist():
            roll[pitch - LOWEST_PITCH, onset:offset] = True
        rolls.append(roll.reshape(NUM_KEYS, quarters, STEPS_PER_QUARTER).transpose(1, 0, 2).copy())
    return rolls


def write_corpus(folder: str | Path, num_files: int = NUM_FILES, quarters: int = QUARTERS_PER_FILE) -> Path:
    """Write `num_files` tiny pieces of `quarters` quarters as MIDI files into `folder`, a chorale's four tracks
    (Soprano, Alto, Tenor, Bass) each, as the corpus has them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for number, voices in enumerate(tiny_voices(num_files, quarters)):
        tracks = list(zip(("Bass", "Tenor", "Alto", "Soprano"), voices))[::-1]
        (folder / f"piece{number:02d}.mid").write_bytes(tracks_to_midi_bytes(tracks, quarters))
    return folder


def tiny_config(root: str | Path) -> dict:
    """A config with tiny models whose data, cache and run folders all lie under `root`."""
    root = Path(root)
    train = {
        "epochs": 2,
        "batch_size": 8,
        "learning_rate": 0.003,
        "min_learning_rate": 0.0003,
        "warmup_steps": 2,
        "checkpoint_every": 2,
        "device": "cpu",
        "amp": False,
        "max_transpose": 2,
    }
    return {
        "data": {
            "midi_dir": str(root / "midi"),
            "cache_dir": str(root / "cache"),
            "validation_fraction": 0.2,
        },
        "models": {
            "vq_vae": str(root / "vq_vae.pt"),
            "transformer": str(root / "transformer.pt"),
            "tune": str(root / "tune.pt"),
        },
        "vq_vae": {"hidden_channels": 8, "embedding_dim": 8, "residual_layers": 1, "residual_channels": 8},
        "gpt": {
            "vocab_size": 16,
            "block_size": BLOCK_QUARTERS * 16 - 1,
            "n_layer": 1,
            "n_head": 2,
            "n_embd": 16,
            "dropout": 0.0,
        },
        "tune": {
            "vocab_size": 93,
            "block_size": TUNE_BLOCK,
            "n_layer": 1,
            "n_head": 2,
            "n_embd": 16,
            "dropout": 0.0,
            "codes_per_quarter": 2,
            "countdown": 16,
        },
        "train_vq_vae": {**train, "out": str(root / "runs" / "vq_vae")},
        "train_transformer": {**train, "out": str(root / "runs" / "transformer")},
        "train_tune": {**train, "max_transpose": 0, "out": str(root / "runs" / "tune")},
        # untrained tiny decoders make short notes; the tests compare with compose() as it comes.
        # Free music the old way (codes alone): tests/test_tune.py turns tune-first on
        "generate": {"min_note_steps": 0, "tune_first": False},
    }


def write_config(root: str | Path) -> Path:
    """Write `tiny_config(root)` to root/config.yaml and return its path."""
    path = Path(root) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tiny_config(root), sort_keys=False))
    return path


def ddp_worker(rank: int, world_size: int, port: int, config_path: str, out_dir: str, max_steps: int) -> None:
    """One rank of a gloo DDP run of the VQ-VAE Trainer, seeded as train_vq_vae.py seeds it.

    Saves the rank's initial and final weights to out_dir/init{rank}.pt and out_dir/rank{rank}.pt.
    """
    from bachsformer.checkpoint import plain_state_dict
    from bachsformer.config import load_config
    from bachsformer.data import VoiceQuarterDataset, load_corpus, split
    from bachsformer.training import Trainer, setup_distributed
    from bachsformer.vqvae import VQVAE

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    config = load_config(config_path, [f"train_vq_vae.max_steps={max_steps}"])
    out_dir = Path(out_dir)
    ranks, device = setup_distributed("cpu")
    try:
        torch.manual_seed(config.train_vq_vae.seed)
        model = VQVAE(config.vq_vae)
        torch.save(plain_state_dict(model), out_dir / f"init{rank}.pt")
        train_pieces, _ = split(load_corpus(config.data.midi_dir), config.data.validation_fraction)
        trainer = Trainer(
            model,
            "vq_vae",
            config,
            config.train_vq_vae,
            VoiceQuarterDataset(train_pieces, config.train_vq_vae.max_transpose, config.vq_vae.decoder_context),
            lambda model, batch: (model(*batch).loss, {}),
            evaluate=lambda model: {"loss": 0.0},
            best_metric="loss",
            maximize=False,
            run_dir=out_dir / "run",
            optimizer=torch.optim.Adam(model.parameters(), lr=config.train_vq_vae.learning_rate),
            ranks=ranks,
            device=device,
        )
        trainer.fit()
        torch.save(plain_state_dict(model), out_dir / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def write_model_pair(
    root: str | Path,
    silent: bool = False,
    melody_quarters: int = 0,
    decoder_context: bool = False,
    hears_mode: bool = False,
) -> tuple[Path, Path]:
    """Save untrained models of `tiny_config(root)` at its model paths, as a matching pair; returns the paths.

    Untrained, the decoder's voices change key at every step whatever its codes. So the codebook is
    spread out (different codes decode differently); `silent=True` raises the silence logit until
    every code decodes to silence. melody_quarters:
    the transformer hears a melody that many quarters ahead (0: no melody condition); decoder_context:
    the VQ-VAE's decoder hears the quarter before; hears_mode: the transformer hears the mode with the melody.
    """
    config = tiny_config(root)
    vq_config = VQVAEConfig(**config["vq_vae"], decoder_context=decoder_context)
    gpt_config = GPTConfig(**config["gpt"], melody_quarters=melody_quarters, hears_mode=hears_mode)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vq_vae, transformer = VQVAE(vq_config).eval(), GPT(gpt_config).eval()
    with torch.no_grad():
        vq_vae.quantizer.embedding.mul_(30)
        if silent:
            vq_vae.silence.bias += 1000.0
    vq_path, transformer_path = Path(config["models"]["vq_vae"]), Path(config["models"]["transformer"])
    saved = save_checkpoint(vq_path, "vq_vae", vq_config, vq_vae)
    save_checkpoint(transformer_path, "transformer", gpt_config, transformer, vq_vae_fingerprint=saved["fingerprint"])
    return vq_path, transformer_path


def run_script(script: str, *args: str, monkeypatch, capsys) -> tuple[int, str, str]:
    """Run a script's `__main__` in-process from the repository root, as `python script args` would.

    Returns (exit status, stdout, stderr). An exception the script lets escape (a traceback in a real
    run) fails the test. torch's grad mode, which generate.py switches off, is restored.
    """
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [script, *args])
    capsys.readouterr()
    grad_enabled = torch.is_grad_enabled()
    status = 0
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as exit_info:
        code = exit_info.code
        status = 0 if code is None else code if isinstance(code, int) else 1  # sys.exit("message"): 1
    finally:
        torch.set_grad_enabled(grad_enabled)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write_tune_model(root: str | Path, fingerprints: dict | None = None) -> Path:
    """Save an untrained tune model of `tiny_config(root)` at its path, recording `fingerprints`
    (default: those of the pair at the config's paths, as train_tune.py records them)."""
    from bachsformer.checkpoint import load_checkpoint

    config = tiny_config(root)
    if fingerprints is None:
        fingerprints = {
            f"{kind}_fingerprint": load_checkpoint(config["models"][kind], kind)["fingerprint"]
            for kind in ("vq_vae", "transformer")
        }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT(GPTConfig(**config["tune"])).eval()
    path = Path(config["models"]["tune"])
    save_checkpoint(path, "tune", model.config, model, minor_share=0.5, **fingerprints)
    return path
