"""The README's recipe for training on your own music, run top to bottom as printed, on a tiny folder.

Each command of the block under "Training on your own music" runs as a user runs it, from a folder
holding the repository's config.yaml and models/, with `path/to/midi` a tiny synthetic corpus and `--set` for
tiny models and two epochs (tests/tiny.py): the same config a user edits, only smaller.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import tiny

REPO = Path(__file__).resolve().parents[1]
# the sections the recipe trains with, from tests/tiny.py; the recipe names its own folders and models
TINY_SECTIONS = ("vq_vae", "gpt", "tune", "train_vq_vae", "train_transformer", "train_tune", "generate")


def recipe() -> list[str]:
    """The commands of the README's training block, continuation lines joined, comments left out."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Training on your own music") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.strip()]


def tiny_settings(root: Path) -> list[str]:
    config = tiny.tiny_config(root)
    settings = [f"data.cache_dir={root / 'cache'}", "data.validation_fraction=0.2", "vq_vae.num_embeddings=16"]
    for section in TINY_SECTIONS:
        for key, value in config[section].items():
            if key != "out":
                settings.append(f"{section}.{key}={str(value).lower() if isinstance(value, bool) else value}")
    return settings + ["generate.quarters=16", "generate.candidates=2", "generate.tune_first=true"]


def test_the_readme_training_recipe_runs_top_to_bottom_as_printed(tmp_path):
    corpus = tiny.write_corpus(tmp_path / "corpus")
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(REPO / "models", tmp_path / "models")  # the shipped models lie beside, as in a checkout
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    commands = recipe()
    assert [command.split()[1] for command in commands] == [
        "-m",
        "train_vq_vae.py",
        "train_transformer.py",
        "train_tune.py",
        "generate.py",
    ]
    for command in commands:
        words = shlex.split(command.replace("path/to/midi", str(corpus)))
        assert words[0] == "python"
        words[0] = sys.executable
        if words[1].endswith(".py"):
            words[1] = str(REPO / words[1])
            words += [item for setting in tiny_settings(tmp_path) for item in ("--set", setting)]
        result = subprocess.run(words, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    written = result.stdout.splitlines()[0]
    assert written.endswith(".mid") and (tmp_path / written).is_file()
    assert "_tune-" in written  # free music tune first, from the tune model the recipe trained
