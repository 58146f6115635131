"""config.yaml -> dataclasses, with every key checked and `--set section.key=value` overrides.

Each section of config.yaml is one dataclass: the model configs live beside their models
(`VQVAEConfig` in vqvae.py, `GPTConfig` in gpt.py, for the transformer and the tune model), the
rest are defined here. An unknown section
or key, or a value of the wrong type, raises ConfigError naming it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bachsformer.errors import BachsformerError, check_at_least
from bachsformer.gpt import GPTConfig
from bachsformer.keys import KeyNameError, parse_key
from bachsformer.midi import DEFAULT_PROGRAM
from bachsformer.voicing import NOTE_VALUES
from bachsformer.vqvae import VQVAEConfig

MAX_CANDIDATES = 1024  # harmonizing and regenerating: more is slow and memory-bound, and chooses no better
MAX_GUIDANCE = 10.0  # classifier-free guidance scales used in practice lie in 1 ... 10


class ConfigError(BachsformerError):
    """A config file or override that cannot be used; the message names the key."""


MOVED_KEYS = {  # old key -> where it lives now, for configs written before the move
    "data.max_transpose": "train_vq_vae.max_transpose and train_transformer.max_transpose",
}


@dataclass
class DataConfig:
    midi_dir: str = "data/midi"
    cache_dir: str = "data/cache"  # parsed corpora and encoded codes, keyed by content
    validation_fraction: float = 0.1  # share of files held out, chosen by a hash of the name
    max_quarters: int = 20_000  # longer files are skipped rather than allocated
    normalize_key: bool = True  # both models learn every piece moved to C major / A minor (docs/design.md, Keys)

    def __post_init__(self):
        """Refuse values no run can use; the message starts with the key (config.py adds the section)."""
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction: must lie in [0, 1), a share of the files, got {self.validation_fraction}"
            )


@dataclass
class ModelPaths:
    vq_vae: str = "models/vq_vae.pt"
    transformer: str = "models/transformer.pt"
    tune: str = "models/tune.pt"  # the tune model of free music (bachsformer/tune.py)


@dataclass
class TrainConfig:
    out: str = "runs/run"  # run folder: checkpoints, metrics log, resolved config
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-4  # cosine decay ends here
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 disables clipping
    seed: int = 0
    device: str = "auto"  # auto: cuda, then mps, then cpu
    amp: bool = True  # mixed precision, used on CUDA only
    compile: bool = False  # torch.compile the model
    checkpoint_every: int = 500  # steps between `last` checkpoints (also at each epoch end)
    max_steps: int = 0  # stop after this many steps; 0 runs all epochs
    max_transpose: int = 0  # augmentation: random transposition up to this many semitones, inside the 88 keys

    def __post_init__(self):
        """Refuse values no run can use; the message starts with the key (config.py adds the section)."""
        check_at_least(self, 1, "epochs", "batch_size", "checkpoint_every")
        at_least_zero = ("min_learning_rate", "warmup_steps", "weight_decay", "grad_clip", "max_steps", "max_transpose")
        check_at_least(self, 0, *at_least_zero)
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: must be above 0, got {self.learning_rate}")


@dataclass
class GenerateConfig:
    out_dir: str = "data/generated"
    quarters: int = 64
    num: int = 1
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filtering
    top_p: float = 1.0  # 1.0: no nucleus filtering
    tempo: float = 90.0  # beats per minute of the written MIDI
    program: int = DEFAULT_PROGRAM  # General MIDI instrument of the written MIDI (and WAV): 19, church organ
    min_note_steps: int = 4  # drop decoded notes shorter than this (the decoder's stray fragments); 0: keep all
    key: str = ""  # move each piece to this tonic (D, F#, Bb), in a mode if named (G minor); "": as written
    candidates: int = 16  # harmonizing and regenerating: candidates drawn per quarter (or passage) to choose from
    guidance: float = 1.0  # harmonizing with a melody-conditioned transformer: classifier-free guidance scale
    voicing: bool = True  # write the decoder's four voices, S A T B, as four tracks; false: their union as one
    grid: int = 16  # the voicing rule's note value for input without parts (4, 8, 16 or 32)
    rules: float = 10.0  # harmonizing and regenerating: weight of the four-part rules in the choice (0: off)
    tune_first: bool = True  # free music and continuations: a tune from the tune model, then harmonized
    tune_temperature: float = 1.0  # sampling the tune model
    tune_top_p: float = 1.0
    tune_ending_drafts: int = 1  # a tune's close drawn this many ways, the most likely kept (`tune.sample_tunes`)
    device: str = "cpu"
    threads: int = 0  # CPU threads for sampling (`sampling.set_sampling_threads`); 0: OMP_NUM_THREADS, else 1

    def __post_init__(self):
        """Refuse values no run can use; the message starts with the key (config.py adds the section)."""
        check_at_least(self, 1, "candidates", "tune_ending_drafts")
        check_at_least(self, 0, "threads")
        check_at_least(self, 0, "guidance", "rules")
        if self.candidates > MAX_CANDIDATES:
            raise ValueError(
                f"candidates: must be at most {MAX_CANDIDATES} (each quarter decodes and scores them all), got"
                f" {self.candidates}"
            )
        if not self.guidance <= MAX_GUIDANCE:
            raise ValueError(
                f"guidance: must lie in 0 ... {MAX_GUIDANCE:g} (beyond, the melody's pull swamps the model), got"
                f" {self.guidance:g}"
            )
        if self.grid not in NOTE_VALUES:
            raise ValueError(f"grid: must be a note value, one of {', '.join(map(str, NOTE_VALUES))}, got {self.grid}")
        if not 0 < self.tune_temperature < float("inf"):
            raise ValueError(f"tune_temperature: must be a number above 0, got {self.tune_temperature}")
        if not 0 < self.tune_top_p <= 1:
            raise ValueError(f"tune_top_p: must lie in (0, 1], got {self.tune_top_p}")
        if not 0 <= self.program <= 127:
            raise ValueError(f"program: must be a General MIDI program 0 ... 127, got {self.program}")
        if self.key:
            try:
                parse_key(self.key)
            except KeyNameError as error:
                raise ValueError(f"key: {error}") from None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    models: ModelPaths = field(default_factory=ModelPaths)
    vq_vae: VQVAEConfig = field(default_factory=VQVAEConfig)
    gpt: GPTConfig = field(default_factory=GPTConfig)
    tune: GPTConfig = field(default_factory=lambda: GPTConfig(vocab_size=93, block_size=127, codes_per_quarter=2))
    train_vq_vae: TrainConfig = field(default_factory=TrainConfig)
    train_transformer: TrainConfig = field(default_factory=TrainConfig)
    train_tune: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_value(name: str, value, expected):
    """Return `value` as type `expected` (int, float, bool, str, or Optional of them)."""
    if isinstance(expected, types.UnionType) or typing.get_origin(expected) is typing.Union:
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return None
        expected = next(t for t in options if t is not type(None))
    if expected is float and isinstance(value, str):
        try:  # YAML 1.1 reads 3e-4 (no dot) as text
            value = float(value)
        except ValueError:
            pass
    ok = (
        isinstance(value, bool)
        if expected is bool
        else isinstance(value, (int, float)) and not isinstance(value, bool)
        if expected is float
        else isinstance(value, int) and not isinstance(value, bool)
        if expected is int
        else isinstance(value, expected)
    )
    if not ok:
        raise ConfigError(f"{name}: expected {expected.__name__}, got {value!r}")
    return float(value) if expected is float else value


def build_section(cls, values: dict, name: str):
    """A dataclass of type `cls` from `values`; unknown keys and wrong types are ConfigErrors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if f"{name}.{key}" in MOVED_KEYS:
            raise ConfigError(f"config key '{name}.{key}' has moved: set {MOVED_KEYS[f'{name}.{key}']}")
        if key not in known:
            raise ConfigError(f"unknown config key '{name}.{key}' (known: {', '.join(sorted(known))})")
    checked = {key: _check_value(f"{name}.{key}", v, hints[key]) for key, v in values.items()}
    try:
        return cls(**checked)
    except ValueError as error:  # a value no model can have, found by the dataclass itself
        raise ConfigError(f"{name}.{error}") from None


def parse_override(text: str) -> tuple[str, str, object]:
    """'section.key=value' -> (section, key, value); the value is read as YAML (8, 0.5, true, x)."""
    target, sep, raw = text.partition("=")
    section, dot, key = target.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return section, key, value


def load_config(path: str | Path | None = "config.yaml", overrides: list[str] = ()) -> Config:
    """Read config.yaml (or defaults when `path` is None) and apply `section.key=value` overrides."""
    raw: dict = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            first_line = str(error).splitlines()[0]
            raise ConfigError(f"{path}: not valid YAML ({first_line})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected sections of keys at the top level")
    raw = {section: dict(values or {}) for section, values in raw.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})[key] = value
    sections = {f.name: f for f in dataclasses.fields(Config)}
    hints = typing.get_type_hints(Config)
    built = {}
    for section, values in raw.items():
        if section not in sections:
            raise ConfigError(f"unknown config section '{section}' (known: {', '.join(sections)})")
        built[section] = build_section(hints[section], values, section)
    return Config(**built)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (the run folder keeps what it was trained with)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
