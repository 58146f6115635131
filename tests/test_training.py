"""Tiny runs of train_vq_vae.py and train_transformer.py on a synthetic corpus, on the CPU.

Training runs are subprocesses, started as a user starts them, so that resume, Ctrl-C and
SIGKILL behave as they would. Runs the scripts refuse before training (bad config, used or
protected folder) go through the same `__main__` in-process, sparing an interpreter start each.
DDP is run twice: the script under torchrun, and the shared Trainer in two spawned gloo
processes that both save their weights (the script saves only rank 0's) to compare them.
"""

from __future__ import annotations

import json
import os
import random
import runpy
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiny
import torch
import torch.multiprocessing

from bachsformer.checkpoint import load_checkpoint
from bachsformer.config import load_config
from bachsformer.gpt import GPT
from bachsformer.training import Distributed, Trainer
from bachsformer.vqvae import VQVAE, VQVAEConfig

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: more threads only contend
TIMEOUT = 180


def command(script: str, config: Path, out: Path, *sets: str, resume: bool = False) -> list[str]:
    args = [sys.executable, script, "--config", str(config), "--out", str(out)]
    args += [item for setting in sets for item in ("--set", setting)]
    return args + (["--resume"] if resume else [])


def run(script: str, config: Path, out: Path, *sets: str, resume: bool = False) -> subprocess.CompletedProcess:
    """Run a training script to its end; fails the test, showing stderr, if it did not succeed."""
    result = subprocess.run(
        command(script, config, out, *sets, resume=resume),
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def start(script: str, config: Path, out: Path, *sets: str, resume: bool = False, log: Path) -> subprocess.Popen:
    """Start a training script in the background, stdout and stderr into `log` (no pipe to fill).

    SIGINT is set back to its default in the child: a shell that started pytest in the
    background may have left it ignored, and Python then never raises KeyboardInterrupt.
    """
    with log.open("w") as file:
        return subprocess.Popen(
            command(script, config, out, *sets, resume=resume),
            cwd=REPO,
            env=ENV,
            stdout=file,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def run_refused(script: str, *args: str, monkeypatch, capsys) -> tuple[int, str]:
    """Run a script in-process from the repository root; returns (exit status, stderr)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / script), run_name="__main__")
    return exit_info.value.code, capsys.readouterr().err


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def step_of(checkpoint: Path, kind: str = "vq_vae") -> int:
    return int(load_checkpoint(checkpoint, kind)["step"])


def wait_for(condition, timeout: float = TIMEOUT, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process is None or process.poll() is None, "the run ended before it was interrupted"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def saved_since(checkpoint: Path, mtime: int | None):
    """A condition: `checkpoint` exists and was written after `mtime` (None: never written)."""
    return lambda: checkpoint.exists() and checkpoint.stat().st_mtime_ns != mtime


def progress_shown(log: str, start_step: int, total: int) -> bool:
    """Whether the tqdm bar shows `start_step/total` (a resumed run starts where it stopped)."""
    return f"| {start_step}/{total} [" in log


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A tiny corpus and its config, shared by every run of this module."""
    root = tmp_path_factory.mktemp("tiny")
    tiny.write_corpus(root / "midi")
    tiny.write_config(root)
    return root


@pytest.fixture(scope="module")
def config(root) -> Path:
    return root / "config.yaml"


@pytest.fixture(scope="module")
def vq_run(root, config) -> Path:
    """One tiny VQ-VAE trained for a few epochs; its best.pt is the transformer's VQ-VAE."""
    out = root / "runs" / "vq_vae"
    # a rate that moves the keys' cross-entropy over 89 classes within the tiny run
    run("train_vq_vae.py", config, out, "train_vq_vae.epochs=5", "train_vq_vae.learning_rate=0.01")
    return out


def test_vq_vae_run_writes_config_metrics_and_checkpoints(vq_run, config):
    resolved = load_config(vq_run / "config.yaml")
    overrides = [f"train_vq_vae.out={vq_run}", "train_vq_vae.epochs=5", "train_vq_vae.learning_rate=0.01"]
    assert resolved == load_config(config, overrides)

    records = metrics(vq_run)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    for record in records:
        assert 0 <= record["voice_agreement"] <= 1 and 0 <= record["onset_f1"] <= 1
        assert all(0 <= record[f"voice_{n}"] <= 1 for n in range(4)) and 0 <= record["held_kept"] <= 1
        assert 1 <= record["perplexity"] <= resolved.vq_vae.num_embeddings
    assert records[-1]["train_loss"] < 0.8 * records[0]["train_loss"]  # not just the codebook settling

    last, best = VQVAE.from_checkpoint(vq_run / "last.pt"), VQVAE.from_checkpoint(vq_run / "best.pt")
    assert last.config == best.config == resolved.vq_vae
    assert isinstance(last.config, VQVAEConfig)
    assert last.checkpoint_info["step"] == records[-1]["step"]
    assert best.checkpoint_info["best_metric"] == max(r["voice_agreement"] for r in records)


def test_resume_continues_at_the_saved_step_and_a_used_folder_needs_resume(root, config, monkeypatch, capsys):
    out = root / "runs" / "resume"
    run("train_vq_vae.py", config, out, "train_vq_vae.max_steps=4")
    assert step_of(out / "last.pt") == 4
    assert [r["step"] for r in metrics(out)] == [4]

    resumed = run("train_vq_vae.py", config, out, "train_vq_vae.max_steps=10", resume=True)
    assert progress_shown(resumed.stderr, 4, 10) and not progress_shown(resumed.stderr, 0, 10)
    checkpoint = load_checkpoint(out / "last.pt", "vq_vae")
    assert checkpoint["step"] == 10
    assert all(state["step"] == 10 for state in checkpoint["optimizer"]["state"].values())  # Adam's 4 + 6
    assert [(r["epoch"], r["step"]) for r in metrics(out)] == [(1, 10)]  # one epoch, cut at 4: one line

    status, err = run_refused(
        "train_vq_vae.py", "--config", str(config), "--out", str(out), monkeypatch=monkeypatch, capsys=capsys
    )
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "--resume" in err
    assert step_of(out / "last.pt") == 10


def test_resuming_a_finished_run_says_so_in_one_line_and_changes_nothing(root, config, monkeypatch, capsys):
    out = root / "runs" / "finished"
    run("train_vq_vae.py", config, out, "train_vq_vae.max_steps=2")
    before = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in out.iterdir()}
    args = ("--config", str(config), "--out", str(out), "--set", "train_vq_vae.max_steps=2", "--resume")
    status, stdout, err = tiny.run_script("train_vq_vae.py", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert (status, err) == (0, "")
    assert stdout.splitlines()[-1] == (
        f"{out}: the run is finished (step 2 of 2); nothing to train."
        " Raise train_vq_vae.epochs or train_vq_vae.max_steps to train on"
    )
    assert {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in out.iterdir()} == before


def test_an_epoch_cut_short_and_resumed_has_one_record_averaging_all_its_batches(root, config, tmp_path):
    """Each step's loss is its step number: the first 10-step epoch averages 0 ... 9, however it was cut."""
    config = load_config(config, ["train_vq_vae.batch_size=1"])
    run_dir = tmp_path / "run"

    class TenItems:
        def __len__(self):
            return 10

        def batch(self, indices, generator):
            return torch.zeros(len(indices))

    def trainer(max_steps: int) -> Trainer:
        config.train_vq_vae.max_steps = max_steps
        model = VQVAE(config.vq_vae)
        trainer = Trainer(
            model,
            "vq_vae",
            config,
            config.train_vq_vae,
            TenItems(),
            lambda model, batch: (next(model.parameters()).sum() * 0 + trainer.step, {}),
            evaluate=lambda model: {"score": 0.0},
            best_metric="score",
            maximize=True,
            run_dir=run_dir,
            optimizer=torch.optim.Adam(model.parameters()),
            ranks=Distributed(),
            device=torch.device("cpu"),
        )
        return trainer

    trainer(4).fit()
    assert [(r["epoch"], r["step"], r["train_loss"]) for r in metrics(run_dir)] == [(1, 4, 1.5)]
    resumed = trainer(0)  # both epochs: 20 steps
    resumed.resume()
    resumed.fit()
    assert [(r["epoch"], r["step"], r["train_loss"]) for r in metrics(run_dir)] == [(1, 10, 4.5), (2, 20, 14.5)]


@pytest.mark.parametrize("script", ["train_vq_vae.py", "train_transformer.py"])
@pytest.mark.parametrize(
    "out, reason",
    [
        ("{tmp}/file.txt", "--out {tmp}/file.txt: is a file, not a folder"),
        ("{tmp}/file.txt/run", "--out {tmp}/file.txt/run: {tmp}/file.txt is a file, not a folder"),
        ("/proc/bachsformer-run", "--out /proc/bachsformer-run: cannot write there"),
    ],
)
def test_an_out_that_cannot_be_a_run_folder_is_refused_before_anything_loads(
    script, out, reason, config, tmp_path, monkeypatch, capsys
):
    if out.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc, where no folder can be made")
    (tmp_path / "file.txt").write_text("a file, not a folder\n")
    # Neither a corpus nor a VQ-VAE is there to load: the refusal must come first.
    missing = ("--set", f"data.midi_dir={tmp_path / 'absent'}", "--set", f"models.vq_vae={tmp_path / 'absent.pt'}")
    args = ("--config", str(config), "--out", out.format(tmp=tmp_path), *missing)
    status, err = run_refused(script, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2
    assert err.startswith("error: " + reason.format(tmp=tmp_path)) and len(err.strip().splitlines()) == 1, err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.txt"]


def test_a_split_that_holds_out_every_file_is_refused_naming_the_key(config, tmp_path, monkeypatch, capsys):
    args = ("--config", str(config), "--out", str(tmp_path / "run"), "--set", "data.validation_fraction=0.9999")
    status, err = run_refused("train_vq_vae.py", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2
    assert err == (
        f"error: data.validation_fraction: 0.9999 holds out all {tiny.NUM_FILES} files of"
        f" {load_config(config).data.midi_dir}, leaving none to train on; lower it\n"
    )
    assert not (tmp_path / "run").exists()


def test_out_inside_models_is_refused_without_write_models(config, monkeypatch, capsys):
    models = REPO / "models"
    target = models / "test_training_run"
    before = sorted(models.iterdir()) if models.exists() else None
    status, err = run_refused(
        "train_vq_vae.py",
        "--config",
        str(config),
        "--out",
        "models/test_training_run",
        "--set",
        "train_vq_vae.max_steps=1",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    created = target.exists()
    if created:
        for path in sorted(target.iterdir()):
            path.unlink()
        target.rmdir()
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "--write-models" in err
    assert not created
    assert (sorted(models.iterdir()) if models.exists() else None) == before


@pytest.mark.parametrize("sig, said", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated (SIGTERM)")])
def test_ctrl_c_and_sigterm_save_last_without_a_traceback_and_resume_continues(root, config, tmp_path, sig, said):
    out = root / "runs" / f"interrupted-{sig.name}"
    log = tmp_path / "log.txt"
    process = start("train_vq_vae.py", config, out, "train_vq_vae.epochs=1000", log=log)
    try:
        wait_for((out / "last.pt").exists, process=process)
        written = (out / "last.pt").stat().st_mtime_ns
        process.send_signal(sig)
        status = process.wait(timeout=TIMEOUT)
    finally:
        process.kill()
    output = log.read_text()
    assert status == 130, output[-3000:]
    assert "Traceback" not in output
    stopped = step_of(out / "last.pt")
    assert f"{said}: saved {out / 'last.pt'} at step {stopped}" in output
    assert (out / "last.pt").stat().st_mtime_ns != written  # saved on the signal, not only at the last interval

    resumed = run("train_vq_vae.py", config, out, f"train_vq_vae.max_steps={stopped + 3}", resume=True)
    assert f"resuming {out / 'last.pt'} at step {stopped} of {stopped + 3} (epoch " in resumed.stdout
    assert progress_shown(resumed.stderr, stopped, stopped + 3)
    assert step_of(out / "last.pt") == stopped + 3


def test_killed_runs_leave_a_loadable_last_checkpoint_to_resume_from(root, config, tmp_path):
    out = root / "runs" / "killed"
    delays = random.Random(0)
    # Saving every step, with a codebook wide enough that writing the checkpoint takes a good
    # share of each step: a kill often lands mid-write, where a non-atomic save would be torn.
    sets = ("train_vq_vae.epochs=1000", "train_vq_vae.checkpoint_every=1", "vq_vae.embedding_dim=4096")
    steps, kills = [0], 0
    for attempt in range(3):
        checkpoint = out / "last.pt"
        saved = checkpoint.stat().st_mtime_ns if attempt else None
        process = start("train_vq_vae.py", config, out, *sets, resume=attempt > 0, log=tmp_path / f"{attempt}.txt")
        try:
            # Kill while training, a random moment after it has saved at least once.
            wait_for(saved_since(checkpoint, saved), process=process)
            time.sleep(delays.uniform(0.0, 0.3))
            assert process.poll() is None
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=TIMEOUT) == -signal.SIGKILL
            kills += 1
        finally:
            process.kill()
        steps.append(step_of(checkpoint))  # loads: the write was atomic
        assert steps[-1] >= steps[-2]
    assert kills == 3
    assert steps[-1] > 0

    final = steps[-1] + 3
    resumed = run("train_vq_vae.py", config, out, *sets, f"train_vq_vae.max_steps={final}", resume=True)
    assert progress_shown(resumed.stderr, steps[-1], final)
    assert step_of(out / "last.pt") == final


def test_transformer_run_reports_bits_records_its_vq_vae_and_reuses_the_codes(root, config, vq_run):
    vq_vae = vq_run / "best.pt"
    out = root / "runs" / "transformer"
    run("train_transformer.py", config, out, f"models.vq_vae={vq_vae}")

    records = metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert {"bits_per_code", "unigram_bits", "bigram_bits"} <= set(record)
        assert all(0 < record[key] < 16 for key in ("bits_per_code", "unigram_bits", "bigram_bits"))
    fingerprint = load_checkpoint(vq_vae, "vq_vae")["fingerprint"]
    assert fingerprint
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(out / name, "transformer")["vq_vae_fingerprint"] == fingerprint

    codes = root / "cache" / "codes"
    cached = {path: path.stat().st_mtime_ns for path in codes.iterdir()}
    assert cached and all(path.name.startswith(fingerprint) for path in cached)
    run(
        "train_transformer.py",
        config,
        root / "runs" / "transformer2",
        f"models.vq_vae={vq_vae}",
        "train_transformer.max_steps=1",
    )
    assert {path: path.stat().st_mtime_ns for path in codes.iterdir()} == cached


def test_a_melody_conditioned_transformer_trains_and_reports_bits_with_and_without_the_melody(root, config, vq_run):
    out = root / "runs" / "transformer_melody"
    run(
        "train_transformer.py",
        config,
        out,
        f"models.vq_vae={vq_run / 'best.pt'}",
        "gpt.melody_quarters=2",
        "gpt.melody_dropout=0.25",
    )
    records = metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 < r["bits_per_code"] < 16 and 0 < r["bits_per_code_without_melody"] < 16 for r in records)
    model = GPT.from_checkpoint(out / "best.pt")
    assert (model.config.melody_quarters, model.config.melody_dropout) == (2, 0.25)


@pytest.mark.parametrize(
    "override, key",
    [("gpt.n_layers=2", "gpt.n_layers"), ("train_vq_vae.epochs=abc", "train_vq_vae.epochs")],
)
def test_bad_config_override_exits_2_with_one_line_naming_the_key(override, key, config, tmp_path, monkeypatch, capsys):
    args = ("--config", str(config), "--out", str(tmp_path / "run"), "--set", override)
    status, err = run_refused("train_vq_vae.py", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and key in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_torchrun_with_two_processes_trains_and_only_rank_0_writes(root, config):
    out = root / "runs" / "torchrun"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    args = command("train_vq_vae.py", config, out, "train_vq_vae.max_steps=6")[1:]
    result = subprocess.run(torchrun + args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"{tiny.NUM_FILES} files:") == 1 and result.stdout.count("epoch 1 step 6") == 1
    assert [r["step"] for r in metrics(out)] == [6]
    assert step_of(out / "last.pt") == 6
    assert sorted(path.name for path in out.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_ranks_end_with_identical_weights_and_codebooks(config, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    steps = 6
    torch.multiprocessing.spawn(
        tiny.ddp_worker, args=(2, free_port(), str(config), str(tmp_path), steps), nprocs=2, join=True
    )
    initial, rank0, rank1 = (
        torch.load(tmp_path / name, weights_only=True) for name in ("init0.pt", "rank0.pt", "rank1.pt")
    )
    assert rank0.keys() == rank1.keys() and "quantizer.embedding" in rank0 and "quantizer.cluster_size" in rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert not torch.equal(initial["quantizer.embedding"], rank0["quantizer.embedding"])
    assert not torch.equal(initial["encoder.0.weight"], rank0["encoder.0.weight"])
    assert load_checkpoint(tmp_path / "run" / "last.pt", "vq_vae")["step"] == steps
