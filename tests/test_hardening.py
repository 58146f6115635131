"""Hardening: bad checkpoints, options and configs end in one line naming the problem, never in a
traceback; generated files can neither leave their folder nor overwrite one another.

BAD_CHECKPOINTS, BAD_GENERATE_OPTIONS and BAD_TRAINING_CONFIGS are the cases README's hardening
table counts; test_the_case_lists_hold_what_the_readme_table_counts keeps the two in step.
Scripts run in-process (tiny.run_script) except where the refusal of a real process is the point.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import runpy
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch
from hypothesis import given
from hypothesis import strategies as st

from bachsformer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bachsformer.gpt import GPT, GPTConfig
from bachsformer.midi import DEFAULT_MAX_QUARTERS
from bachsformer.vqvae import VQVAE, VQVAEConfig

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
GENERATE = runpy.run_path(str(tiny.REPO / "generate.py"))  # its functions, without running main
MODELS = {"vq_vae": (VQVAE, VQVAEConfig), "transformer": (GPT, GPTConfig)}
OTHER_KIND = {"vq_vae": "transformer", "transformer": "vq_vae"}
MARKER = "code-ran"  # what a checkpoint carrying code creates, next to itself, if it is ever run
VOCAB = tiny.tiny_config(".")["gpt"]["vocab_size"]


class RunsCode:
    """Unpickled, this calls os.mkdir(marker): any call a checkpoint can carry (os.system alike)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    """Good checkpoints of both kinds, the starting point of every bad one."""
    root = tmp_path_factory.mktemp("pair")
    tiny.write_config(root)
    vq_vae, transformer = tiny.write_model_pair(root)
    return {"root": root, "vq_vae": vq_vae, "transformer": transformer}


# Each maker writes a bad checkpoint of `kind` into `folder` (or names one) and returns its path.
WRONG_TYPE = {"vq_vae": {"num_embeddings": "16"}, "transformer": {"n_embd": "16"}}
IMPOSSIBLE = {"vq_vae": {"hidden_channels": -8}, "transformer": {"n_head": 3}}  # n_head must divide n_embd 16
LARGER = {"vq_vae": {"hidden_channels": 16}, "transformer": {"n_embd": 32}}


def _written(folder: Path, data: bytes) -> Path:
    path = folder / "model.pt"
    path.write_bytes(data)
    return path


def _saved(folder: Path, checkpoint) -> Path:
    path = folder / "model.pt"
    torch.save(checkpoint, path)
    return path


def _edited(folder: Path, kind: str, pair: dict, **config) -> Path:
    checkpoint = load_checkpoint(pair[kind], kind)
    checkpoint["config"].update(config)
    return _saved(folder, checkpoint)


def missing(folder, kind, pair):
    return folder / "absent.pt"


def empty(folder, kind, pair):
    return _written(folder, b"")


def truncated(folder, kind, pair):
    return _written(folder, pair[kind].read_bytes()[:-4096])


def random_bytes(folder, kind, pair):
    return _written(folder, np.random.default_rng(0).bytes(4096))


def flipped_bit(folder, kind, pair):
    """One bit flipped in the stored bytes of the largest weight: torch.load reads it without complaint."""
    data = bytearray(pair[kind].read_bytes())
    weights = load_checkpoint(pair[kind], kind)["model"]
    largest = max(weights.values(), key=torch.Tensor.numel).numpy().tobytes()
    data[bytes(data).index(largest) + len(largest) // 2] ^= 0x10
    return _written(folder, bytes(data))


def bare_state_dict(folder, kind, pair):
    return _saved(folder, load_checkpoint(pair[kind], kind)["model"])


def other_kind(folder, kind, pair):
    return pair[OTHER_KIND[kind]]


def resized(folder, kind, pair):
    """Weights of the tiny model under the config of a larger one: each sound, but not together."""
    cls, config_class = MODELS[kind]
    config = config_class(**load_checkpoint(pair[kind], kind)["config"])
    path = folder / "model.pt"
    save_checkpoint(path, kind, dataclasses.replace(config, **LARGER[kind]), cls.from_checkpoint(pair[kind]))
    return path


def unknown_key(folder, kind, pair):
    return _edited(folder, kind, pair, n_experts=4)


def wrong_type(folder, kind, pair):
    return _edited(folder, kind, pair, **WRONG_TYPE[kind])


def impossible(folder, kind, pair):
    return _edited(folder, kind, pair, **IMPOSSIBLE[kind])


def torch_save_carrying_code(folder, kind, pair):
    return _saved(folder, {"kind": kind, "model": {}, "config": RunsCode(folder / MARKER)})


def pickle_carrying_code(folder, kind, pair):
    return _written(folder, pickle.dumps({"kind": kind, "model": RunsCode(folder / MARKER)}))


def lfs_pointer(folder, kind, pair):
    """What a clone without git-lfs holds in place of the model."""
    return _written(folder, b"version https://git-lfs.github.com/spec/v1\noid sha256:0123abcd\nsize 37510\n")


BAD_CHECKPOINTS = {
    "a missing file": missing,
    "an empty file": empty,
    "a truncated file": truncated,
    "random bytes": random_bytes,
    "a Git LFS pointer (text)": lfs_pointer,
    "a flipped bit in the weights": flipped_bit,
    "a bare state dict": bare_state_dict,
    "a checkpoint of the other model": other_kind,
    "weights of another size": resized,
    "a config key this version does not know": unknown_key,
    "a config value of the wrong type": wrong_type,
    "a config no model can have": impossible,
    "a torch.save that carries code": torch_save_carrying_code,
    "a plain pickle that carries code": pickle_carrying_code,
}

DAMAGED_COPIES = 100  # of each good checkpoint, cut short or with a few bytes changed


def damaged(data: bytes, rng: np.random.Generator) -> bytes:
    """A copy of `data` cut short at a random point, or with one to three random bytes changed."""
    if rng.random() < 0.3:
        return data[: rng.integers(len(data))]
    data = bytearray(data)
    for _ in range(rng.integers(1, 4)):
        data[rng.integers(len(data))] = rng.integers(256)
    return bytes(data)


# case: (arguments, what the error line must name)
BAD_GENERATE_OPTIONS = {
    "temperature 0": (["--temperature", "0"], "--temperature"),
    "temperature below 0": (["--temperature", "-0.5"], "--temperature"),
    "temperature nan": (["--temperature", "nan"], "--temperature"),
    "top-k -1": (["--top-k", "-1"], "--top-k"),
    "top-k above the vocabulary": (["--top-k", str(VOCAB + 1)], "--top-k"),
    "top-p 0": (["--top-p", "0"], "--top-p"),
    "top-p 1.5": (["--top-p", "1.5"], "--top-p"),
    "quarters 0": (["--quarters", "0"], "--quarters"),
    "quarters above the longest readable piece": (["--quarters", str(DEFAULT_MAX_QUARTERS + 1)], "--quarters"),
    "num 0": (["--num", "0"], "--num"),
    "seed below 0": (["--seed", "-1"], "--seed"),
    "seed past 2**63": (["--seed", str(2**64)], "--seed"),
    "tempo 0": (["--tempo", "0"], "--tempo"),
    "a missing primer file": (["--file", "{tmp}/absent.mid"], "absent.mid"),
    "a primer that is not MIDI": (["--file", "{tmp}/file.txt"], "not a MIDI file"),
    "an unwritable output folder": (["--out", "{tmp}/file.txt/out"], "--out"),
    "an unknown device": (["--device", "abacus"], "abacus"),
    "an unknown config key": (["--set", "generate.colour=red"], "generate.colour"),
    "an unknown config section": (["--set", "mood.key=1"], "'mood'"),
    "a config value of the wrong type": (["--set", "generate.quarters=many"], "generate.quarters"),
    "an override without a key": (["--set", "generate"], "section.key=value"),
    "a missing config file": (["--config", "{tmp}/absent.yaml"], "absent.yaml"),
    "a non-numeric option": (["--temperature", "warm"], "--temperature"),
    "an unknown option": (["--loudness", "11"], "--loudness"),
}

BAD_TRAINING_CONFIGS = {
    "an unknown config key": (["--set", "{section}.epochz=3"], "epochz"),
    "an unknown config section": (["--set", "mood.key=1"], "'mood'"),
    "a config value of the wrong type": (["--set", "gpt.n_layer=four"], "gpt.n_layer"),
    "a config value out of range": (["--set", "{section}.max_transpose=-2"], "max_transpose: must be at least 0"),
    "a missing config file": (["--config", "{tmp}/absent.yaml"], "absent.yaml"),
    "a config file that is not YAML": (["--config", "{tmp}/broken.yaml"], "not valid YAML"),
    "a held-out share of every file": (["--set", "data.validation_fraction=1"], "data.validation_fraction"),
    "a run folder that is a file": (["--out", "{tmp}/broken.yaml"], "is a file, not a folder"),
}
TRAINING_SCRIPTS = {"train_vq_vae.py": "train_vq_vae", "train_transformer.py": "train_transformer"}


def test_the_case_lists_hold_what_the_readme_table_counts():
    assert len(BAD_CHECKPOINTS) * len(MODELS) == 28
    assert DAMAGED_COPIES * len(MODELS) == 200
    assert len(BAD_GENERATE_OPTIONS) == 24
    assert len(BAD_TRAINING_CONFIGS) * len(TRAINING_SCRIPTS) == 16


def assert_one_line_error(status: int, err: str, *names: str) -> None:
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for name in names:
        assert name in err, err


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
@pytest.mark.parametrize("kind", MODELS)
def test_a_bad_checkpoint_is_refused_in_one_line_naming_the_file(kind, case, pair, tmp_path):
    path = BAD_CHECKPOINTS[case](tmp_path, kind, pair)
    with pytest.raises(CheckpointError) as refusal:
        MODELS[kind][0].from_checkpoint(path)
    message = str(refusal.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("kind", MODELS)
def test_a_damaged_checkpoint_loads_intact_or_is_refused_in_one_line(kind, pair, tmp_path):
    cls = MODELS[kind][0]
    good, reference = pair[kind].read_bytes(), cls.from_checkpoint(pair[kind]).state_dict()
    rng = np.random.default_rng(0)
    outcomes = Counter()
    for number in range(DAMAGED_COPIES):
        path = tmp_path / f"damaged{number}.pt"
        path.write_bytes(damaged(good, rng))
        try:
            state = cls.from_checkpoint(path).state_dict()
        except CheckpointError as refusal:
            assert "\n" not in str(refusal) and str(refusal).startswith(f"{path}: ")
            outcomes["refused"] += 1
        else:  # the damage missed the weights (zip padding, a name's case ...): they must be the same
            assert all(torch.equal(state[name], reference[name]) for name in reference)
            outcomes["loaded intact"] += 1
    assert sum(outcomes.values()) == DAMAGED_COPIES and outcomes["refused"] > DAMAGED_COPIES // 2


def test_the_code_carrying_checkpoint_runs_its_code_when_unpickled_unsafely(pair, tmp_path):
    path = BAD_CHECKPOINTS["a torch.save that carries code"](tmp_path, "vq_vae", pair)
    torch.load(path, weights_only=False)  # what a loader without weights_only would do
    assert (tmp_path / MARKER).is_dir()


@pytest.mark.parametrize("case", ["a torch.save that carries code", "a truncated file"])
def test_generate_refuses_a_bad_checkpoint_in_a_real_process(case, pair, tmp_path):
    bad = BAD_CHECKPOINTS[case](tmp_path, "transformer", pair)
    command = [sys.executable, "generate.py", "--config", str(pair["root"] / "config.yaml")]
    command += ["--out", str(tmp_path / "out"), "--set", f"models.transformer={bad}"]
    result = subprocess.run(command, cwd=tiny.REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, str(bad))
    assert not (tmp_path / MARKER).exists()
    assert not list((tmp_path / "out").glob("*.mid"))


@pytest.mark.parametrize("case", BAD_GENERATE_OPTIONS)
def test_a_bad_generate_option_exits_2_with_one_error_line(case, pair, tmp_path, monkeypatch, capsys):
    (tmp_path / "file.txt").write_text("a file: not a folder, not MIDI\n")
    args = ["--config", str(pair["root"] / "config.yaml"), "--out", str(tmp_path / "out"), "--quarters", "1"]
    bad_args, named = BAD_GENERATE_OPTIONS[case]
    args += [arg.format(tmp=tmp_path) for arg in bad_args]
    status, _, err = tiny.run_script("generate.py", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert_one_line_error(status, err, named)
    assert not list(tmp_path.rglob("*.mid"))


@pytest.mark.parametrize("case", BAD_TRAINING_CONFIGS)
@pytest.mark.parametrize("script", TRAINING_SCRIPTS)
def test_a_bad_training_config_exits_2_with_one_error_line(script, case, pair, tmp_path, monkeypatch, capsys):
    (tmp_path / "broken.yaml").write_text("data: [unclosed\n")
    args = ["--config", str(pair["root"] / "config.yaml"), "--out", str(tmp_path / "run")]
    bad_args, named = BAD_TRAINING_CONFIGS[case]
    args += [arg.format(tmp=tmp_path, section=TRAINING_SCRIPTS[script]) for arg in bad_args]
    status, _, err = tiny.run_script(script, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert_one_line_error(status, err, named)
    assert not (tmp_path / "run").exists()


NAMES_THAT_WOULD_LEAVE = ["../../etc/passwd", "a/b", "..", ".", "", "/", "/etc/passwd", "a\\b", "..\\..\\x", "\x00"]


@pytest.mark.parametrize("name", NAMES_THAT_WOULD_LEAVE + ["~", "...", "._", "-rf", "Präludium in C"])
def test_safe_name_gives_a_plain_name_inside_the_folder(name, tmp_path):
    assert_plain_name_inside(GENERATE["safe_name"](name), tmp_path)


@given(st.text())
def test_safe_name_of_any_text_is_a_plain_name(text):
    assert_plain_name_inside(GENERATE["safe_name"](text), Path("/music"))


def assert_plain_name_inside(name: str, folder: Path) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name), name  # no separators, no "." or ".."
    assert (folder / name).resolve().parent == folder.resolve()


@pytest.mark.parametrize("stem", NAMES_THAT_WOULD_LEAVE)
def test_unique_path_refuses_a_stem_that_could_leave_the_folder(stem, tmp_path):
    with pytest.raises(ValueError, match="not a plain file name"):
        GENERATE["unique_path"](tmp_path, stem, ".mid")


def test_unique_path_never_returns_an_existing_path(tmp_path):
    for name in ("piece.mid", "piece-2.mid", "piece-4.mid"):
        (tmp_path / name).touch()
    made = []
    for _ in range(3):
        path = GENERATE["unique_path"](tmp_path, "piece", ".mid")
        assert not path.exists() and path.parent == tmp_path
        path.touch()
        made.append(path.name)
    assert made == ["piece-3.mid", "piece-5.mid", "piece-6.mid"]
    assert GENERATE["unique_path"](tmp_path, "piece", ".wav") == tmp_path / "piece.wav"
