"""Self-describing checkpoints: written atomically, read without executing any code.

A checkpoint is a plain dict: `kind` ("vq_vae" or "transformer"), `config` (the model config as a
dict), `model` (the state dict), `fingerprint` (a hash of the weights, so a transformer can say
which VQ-VAE its codes came from), and for training runs `optimizer`, `step`, `best_metric`.
It is read with `torch.load(weights_only=True)`: tensors and plain containers only. Loading
checks the weights against the fingerprint and the config against the model's dataclass: a damaged
or foreign file ends in one CheckpointError line, not in a traceback or in silently changed weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import shutil
import warnings
from pathlib import Path

import torch

from bachsformer.config import ConfigError, build_section
from bachsformer.errors import BachsformerError

FORMAT_VERSION = 1


class CheckpointError(BachsformerError):
    """A checkpoint that cannot be used; the message, one line, names the file and the problem."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # text read from a file may hold line breaks


def fingerprint(state_dict: dict) -> str:
    """A short hash of a model's weights and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def plain_state_dict(model: torch.nn.Module) -> dict:
    """The state dict of the plain module, unwrapped from DDP and torch.compile."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def save_checkpoint(path: str | Path, kind: str, config, model: torch.nn.Module, **extra) -> dict:
    """Write a checkpoint atomically (temporary file, then rename); returns what was written."""
    state = plain_state_dict(model)
    checkpoint = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "config": dataclasses.asdict(config),
        "model": state,
        "fingerprint": fingerprint(state),
        **extra,
    }
    _write_atomically(checkpoint, path)
    return checkpoint


def _write_atomically(checkpoint: dict, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(temporary, "wb") as file:
        torch.save(checkpoint, file)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)


def export_run(run_dir: str | Path, kind: str, destination: str | Path) -> Path:
    """Ship a run's best model: its `best.pt` without the optimizer state, and its metrics log beside.

    The log goes to `<destination stem>_metrics.jsonl`. Returns the destination.
    """
    run_dir, destination = Path(run_dir), Path(destination)
    checkpoint = load_checkpoint(run_dir / "best.pt", kind)
    _write_atomically({k: v for k, v in checkpoint.items() if k not in ("optimizer", "scaler")}, destination)
    shutil.copy(run_dir / "metrics.jsonl", destination.with_name(f"{destination.stem}_metrics.jsonl"))
    return destination


def load_checkpoint(path: str | Path, kind: str, map_location="cpu") -> dict:
    """Read a checkpoint of `kind`, refusing anything else with a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols: one line is the promise
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error) or "Unsupported global" in str(error):
            reason = "it holds code or objects other than tensors and plain data; refused"
        else:
            reason = "corrupt, or not written by torch.save"
        raise CheckpointError(f"{path}: not a usable checkpoint ({reason})") from None
    except Exception as error:  # damaged files fail deep in torch.load, in many ways (KeyError, struct.error ...)
        reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({reason})") from None
    if (
        not isinstance(checkpoint, dict)
        or "kind" not in checkpoint
        or not isinstance(checkpoint.get("fingerprint"), str)
        or not isinstance(checkpoint.get("model"), dict)
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint["model"].items())
    ):
        raise CheckpointError(f"{path}: not a bachsformer checkpoint")
    if checkpoint["kind"] != kind:
        raise CheckpointError(f"{path}: a {checkpoint['kind']} checkpoint, expected a {kind} one")
    try:
        intact = checkpoint["fingerprint"] == fingerprint(checkpoint["model"])
    except (RuntimeError, TypeError):  # tensors no model saves (sparse ones)
        intact = False
    if not intact:
        raise CheckpointError(f"{path}: corrupt checkpoint (its weights do not match their fingerprint)")
    return checkpoint


def load_model(cls, config_class, kind: str, path: str | Path, map_location="cpu", added_keys: dict | None = None):
    """Build `cls(config_class(**checkpoint['config']))` and load its weights, in eval mode.

    added_keys: config keys added after earlier checkpoints were written, with the values that
    rebuild those checkpoints (a checkpoint without the key gets that value, not today's default).
    The model gets two attributes: `fingerprint` and `checkpoint_info` (everything stored but the
    weights and the optimizer state).
    """
    checkpoint = load_checkpoint(path, kind, map_location)
    known = {f.name for f in dataclasses.fields(config_class)}
    config_values = checkpoint.get("config") or {}
    if not isinstance(config_values, dict):
        raise CheckpointError(f"{path}: its config is not a mapping of keys")
    config_values = {**(added_keys or {}), **config_values}
    unknown = sorted(map(str, set(config_values) - known))
    if unknown:
        raise CheckpointError(f"{path}: config keys this version does not know: {', '.join(unknown)}")
    try:
        model = cls(build_section(config_class, config_values, "config"))
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except (AssertionError, ValueError, RuntimeError, TypeError) as error:  # sizes no model can have
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise CheckpointError(f"{path}: its config does not make a model ({first_line})") from None
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        lines = str(error).strip().splitlines()  # a heading, then one line per mismatch
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{path}: weights do not fit its config ({detail[:200]})") from None
    model.to(map_location).eval()
    model.fingerprint = checkpoint.get("fingerprint", "")
    model.checkpoint_info = {k: v for k, v in checkpoint.items() if k not in ("model", "optimizer")}
    return model
