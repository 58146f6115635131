"""The training loop both stages share; it knows nothing about VQ-VAEs or transformers.

It resolves the device once, runs under torchrun as DistributedDataParallel, uses mixed precision
on CUDA, shows a progress bar with the live loss, validates every epoch, logs metrics as JSON lines
(one per epoch), writes `last` and `best` checkpoints atomically, resumes a run at the step it
stopped, and saves before it exits on Ctrl-C.

A dataset here is anything with `__len__` and `batch(indices, generator) -> tensors`; batches are
drawn in memory, their order and augmentation fixed by (seed, step), so a resumed run draws the
same batches the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from bachsformer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bachsformer.config import Config, ConfigError, DataConfig, TrainConfig, save_config
from bachsformer.data import split
from bachsformer.errors import BachsformerError

SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models"  # the repository's models/


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; anything else is taken as a torch device name."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' asked for, but CUDA is not available here")
    return device


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group when started by torchrun; returns (ranks, this process's device)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Distributed(), resolve_device(device_name)
    ranks = Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def check_run_folder(out: str | Path, resume: bool) -> Path:
    """The run folder: never inside models/ (the shipped pair), never reused without --resume, and
    writable, all checked before any data loads. Nothing is created here; `Trainer.fit` makes it."""
    out = Path(out)
    protected = {Path("models").resolve(), SHIPPED_MODELS}
    if protected & {out.resolve(), *out.resolve().parents}:
        raise ConfigError(
            f"--out {out}: training never writes into models/; train elsewhere and pass --write-models"
            " to copy the best model there"
        )
    # The nearest folder that exists must take a new entry; the folders below it are made by fit().
    try:
        existing = next(path for path in (out, *out.parents) if path.exists())
        if not existing.is_dir():
            where = "" if existing == out else f"{existing} "
            raise ConfigError(f"--out {out}: {where}is a file, not a folder")
        # A uniquely named probe, removed at once: torchrun's processes check the same folder together.
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=existing))
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot write there ({error.strerror or error})") from None
    if (out / "last.pt").exists() and not resume:
        raise ConfigError(f"--out {out}: already holds a run; pass --resume to continue it, or choose another --out")
    if resume and not (out / "last.pt").exists():
        raise ConfigError(f"--resume: {out / 'last.pt'} does not exist")
    return out


def training_split(pieces: list, data: DataConfig) -> tuple[list, list]:
    """(train, held-out) pieces, split by `bachsformer.data.split`; none left to train on is a ConfigError."""
    train, held_out = split(pieces, data.validation_fraction)
    if not train:
        raise ConfigError(
            f"data.validation_fraction: {data.validation_fraction} holds out all {len(pieces)} files of"
            f" {data.midi_dir}, leaving none to train on; lower it"
        )
    return train, held_out


def learning_rate(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_learning_rate."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.min_learning_rate + cosine * (cfg.learning_rate - cfg.min_learning_rate)


def batch_indices(num_items: int, batch_size: int, step: int, steps_per_epoch: int, seed: int, ranks: Distributed):
    """This rank's item indices for global `step`: a fresh permutation each epoch, sharded by rank."""
    epoch, position = divmod(step, steps_per_epoch)
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    global_batch = batch_size * ranks.world_size
    chunk = order[position * global_batch : (position + 1) * global_batch]
    return chunk[ranks.rank :: ranks.world_size]


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return tuple(item.to(device, non_blocking=True) for item in batch)


class Trainer:
    """Trains `model` on `train_set` with `compute_loss(model, batch) -> (loss, logs)`.

    `evaluate(model) -> dict` runs each epoch on the plain model (main process only);
    `best_metric` names the entry of that dict that decides `best` (`maximize` says which way).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        kind: str,
        config: Config,
        train_config: TrainConfig,
        train_set,
        compute_loss: Callable,
        evaluate: Callable[[torch.nn.Module], dict],
        best_metric: str,
        maximize: bool,
        run_dir: Path,
        optimizer: torch.optim.Optimizer,
        ranks: Distributed,
        device: torch.device,
        checkpoint_extra: Callable[[], dict] | None = None,
    ):
        self.model, self.kind, self.config, self.cfg = model, kind, config, train_config
        self.train_set, self.compute_loss, self.evaluate = train_set, compute_loss, evaluate
        self.best_metric, self.maximize = best_metric, maximize
        self.run_dir, self.optimizer, self.ranks, self.device = run_dir, optimizer, ranks, device
        self.checkpoint_extra = checkpoint_extra or dict
        self.step = 0
        self.best = None
        self.steps_per_epoch = len(train_set) // (train_config.batch_size * ranks.world_size)
        if self.steps_per_epoch == 0:
            raise BachsformerError(
                f"{len(train_set)} training items make no batch of {train_config.batch_size}"
                f" x {ranks.world_size} process(es); lower batch_size or add data"
            )
        self.total_steps = train_config.epochs * self.steps_per_epoch
        if train_config.max_steps:
            self.total_steps = min(self.total_steps, train_config.max_steps)
        amp = train_config.amp and device.type == "cuda"
        amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
        self.autocast = torch.autocast("cuda", dtype=amp_dtype) if amp else contextlib.nullcontext()
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
        self.model_config = model.config
        self.training_model = model
        if train_config.compile:
            self.training_model = torch.compile(self.training_model)
        if ranks.world_size > 1:
            device_ids = [device.index] if device.type == "cuda" else None
            self.training_model = torch.nn.parallel.DistributedDataParallel(self.training_model, device_ids=device_ids)

    # ---- checkpoints -------------------------------------------------------------------------

    def save(self, name: str) -> None:
        if not self.ranks.is_main:
            return
        save_checkpoint(
            self.run_dir / f"{name}.pt",
            self.kind,
            self.model_config,
            self.model,
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            step=self.step,
            best_metric=self.best,
            train_config=self.config.to_dict(),
            **self.checkpoint_extra(),
        )

    def resume(self) -> None:
        """Continue from run_dir/last.pt at its step, with its optimizer and best metric."""
        path = self.run_dir / "last.pt"
        checkpoint = load_checkpoint(path, self.kind, map_location=self.device)
        stored = checkpoint.get("config") or {}
        if {**asdict(self.model_config), **stored} != asdict(self.model_config):
            raise CheckpointError(f"{path}: the run's model config differs from this one; resume with the same config")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.step = int(checkpoint["step"])
        self.best = checkpoint.get("best_metric")
        if self.ranks.is_main:
            epoch = self.step // self.steps_per_epoch + 1
            print(f"resuming {path} at step {self.step} of {self.total_steps} (epoch {epoch})", flush=True)

    # ---- the loop ----------------------------------------------------------------------------

    def records(self) -> list[dict]:
        """The run's metrics.jsonl, one record per epoch (a line that is not a JSON object is left out)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
        return [record for record in records if isinstance(record, dict)]

    def log(self, record: dict) -> None:
        """Write the record of an epoch, replacing any earlier record of that epoch or a later one.

        An epoch cut short (max_steps, or a kill between logging and saving `last`) and resumed
        is logged again when it ends; its first record goes, so an epoch keeps one line.
        """
        if not self.ranks.is_main:
            return
        kept = [old for old in self.records() if old.get("epoch", 0) < record["epoch"]]
        path = self.run_dir / "metrics.jsonl"
        partial = path.with_name(path.name + ".partial")
        partial.write_text("".join(json.dumps(item) + "\n" for item in [*kept, record]))
        os.replace(partial, path)

    def logged_loss(self) -> tuple[float, int]:
        """(sum of training losses, batches) already logged for the epoch a run resumes inside.

        A run stopped mid-epoch at max_steps logged that epoch's first batches; a resumed run
        starts its sum from them, so the epoch's one record averages all its batches.
        """
        epoch, position = divmod(self.step, self.steps_per_epoch)
        if position == 0:
            return 0.0, 0
        for record in self.records():
            if record.get("epoch") == epoch + 1 and record.get("step") == self.step:
                return record["train_loss"] * position, position
        return 0.0, 0

    def validate(self) -> dict:
        if not self.ranks.is_main:
            return {}
        self.model.eval()
        with torch.no_grad(), self.autocast:
            metrics = self.evaluate(self.model)
        self.model.train()
        return metrics

    def is_better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.maximize else value < self.best

    def end_epoch(self, epoch: int, train_loss: float, started: float, bar) -> None:
        metrics = self.validate()
        if self.ranks.is_main:
            improved = self.is_better(metrics[self.best_metric])
            if improved:
                self.best = metrics[self.best_metric]
            record = {"step": self.step, "epoch": epoch, "train_loss": train_loss, **metrics}
            record["lr"] = self.optimizer.param_groups[0]["lr"]
            record["seconds"] = round(time.time() - started, 1)
            self.log(record)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
            bar.write(
                f"epoch {epoch} step {self.step}: train loss {train_loss:.4f}, {shown}"
                + (" *best*" if improved else "")
            )
            self.save("last")
            if improved:
                self.save("best")
        if self.ranks.world_size > 1:
            dist.barrier()

    def train_step(self) -> tuple[float, dict]:
        """One optimizer step on the batch of global step `self.step`; returns (loss, logs)."""
        lr = learning_rate(self.step, self.total_steps, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        indices = batch_indices(
            len(self.train_set), self.cfg.batch_size, self.step, self.steps_per_epoch, self.cfg.seed, self.ranks
        )
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step * 101 + self.ranks.rank)
        batch = _to_device(self.train_set.batch(indices, generator), self.device)
        with self.autocast:
            loss, logs = self.compute_loss(self.training_model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return loss.item(), logs

    def fit(self) -> None:
        """Train to total_steps from self.step; a run already there says so in one line and returns.

        Ctrl-C and SIGTERM are honoured between steps, never inside one: `last` is saved, then
        KeyboardInterrupt is raised (a second one interrupts at once).
        """
        if self.step >= self.total_steps:
            if self.ranks.is_main:
                section = f"train_{self.kind}"
                print(
                    f"{self.run_dir}: the run is finished (step {self.step} of {self.total_steps}); nothing to"
                    f" train. Raise {section}.epochs or {section}.max_steps to train on"
                )
            return
        if self.ranks.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.run_dir / "config.yaml")
        torch.manual_seed(self.cfg.seed + self.step)
        self.model.train()
        started = time.time()
        bar = tqdm(
            total=self.total_steps, initial=self.step, disable=not self.ranks.is_main, unit="step", dynamic_ncols=True
        )
        interrupted = []

        def on_interrupt(signum, frame):
            if interrupted:
                raise KeyboardInterrupt
            interrupted.append(signum)

        in_main_thread = threading.current_thread() is threading.main_thread()
        # Ctrl-C and SIGTERM (a scheduler, `kill`, a closing terminal session) both save `last` first
        previous_handlers = (
            {sig: signal.signal(sig, on_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
        )
        running_loss = None
        epoch_loss, epoch_batches = self.logged_loss()
        try:
            while self.step < self.total_steps and not interrupted:
                value, logs = self.train_step()
                running_loss = value if running_loss is None else 0.98 * running_loss + 0.02 * value
                epoch_loss, epoch_batches = epoch_loss + value, epoch_batches + 1
                bar.update(1)
                bar.set_postfix(loss=f"{running_loss:.4f}", **{k: f"{float(v):.3g}" for k, v in logs.items()})
                if self.step % self.steps_per_epoch == 0 or self.step == self.total_steps:
                    epoch = math.ceil(self.step / self.steps_per_epoch)
                    self.end_epoch(epoch, epoch_loss / epoch_batches, started, bar)
                    epoch_loss, epoch_batches = 0.0, 0
                elif self.step % self.cfg.checkpoint_every == 0:
                    self.save("last")
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            bar.close()
        if interrupted:
            self.save("last")
            if self.ranks.is_main:
                how = "interrupted" if interrupted[0] == signal.SIGINT else "terminated (SIGTERM)"
                print(f"\n{how}: saved {self.run_dir / 'last.pt'} at step {self.step}; continue with --resume")
            raise KeyboardInterrupt
