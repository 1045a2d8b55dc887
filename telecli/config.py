"""Run configuration: dataclasses read from TOML presets, overridable with ``--set key=value``.

A run is a function of its configuration and seeds. The full configuration is written into the
run's manifest (run.json) so that every later analysis knows exactly what was trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telecli.errors import TelecliError


@dataclass
class TaskConfig:
    """Which data set, which classes, how many points (method.md §2–4)."""

    name: str = "digits"  # poly | digits | mnist | cifar10 | mnist1d | tabular
    classes: list[int] = field(default_factory=lambda: [3, 5])  # a pair → binary 0/1; [] → all classes
    n_train: int = 0  # 0: the task's default (all available after the split)
    n_test: int = 0
    label_noise: float = 0.0  # fraction of training labels replaced at random
    one_hot: bool = False  # k-class one-hot targets instead of a single 0/1 output
    downsample: int = 8  # side length for image tasks (mnist, cifar10); 0 keeps the native size
    grayscale: bool = True  # cifar10: mean over RGB channels
    flatten: bool = True  # images as vectors (MLP) or (C, H, W) tensors (cnn, resnet20)
    root: str = ""  # directory (mnist, cifar10) or file (tabular CSV/Parquet); "" for built-ins
    target: str = ""  # tabular: name of the target column
    standardize: bool = True  # tabular: standardise features (statistics of the training split)
    test_fraction: float = 0.3  # tasks without a fixed test split
    # poly (Kumar et al. 2024; method.md §3.3)
    dim: int = 100
    seed: int = 0  # data seed (split, subsets, noise); independent of the training seed


@dataclass
class ModelConfig:
    """Which network (method.md §2–5). ``factory`` = "package.module:function" for a user's own."""

    name: str = "mlp"  # mlp | poly | cnn | resnet20 | factory
    depth: int = 3  # number of Linear layers in the mlp
    width: int = 200
    activation: str = "relu"  # relu | tanh | gelu | identity
    sigmoid: bool = False  # output sigmoid (paper's SGD + σ setting)
    init_scale: float = 1.0  # α: multiplies all parameters at initialisation (Omnigrok)
    epsilon: float = 0.2  # poly: φ(h) = h + ε/2 h²
    hidden: int = 500  # poly: n_h
    channels: int = 16  # cnn: channels of the first conv layer
    factory: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Loss, optimiser, schedule, length (method.md §1.6 for the optimisers' conventions)."""

    loss: str = "mse"  # mse: ½(f−y)² per example, mean over the batch | ce: cross-entropy
    optimizer: str = "sgd"  # sgd | adam | adamw  (sgd with momentum > 0 is PyTorch's convention)
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    batch_size: int = 0  # 0: full batch
    steps: int = 100
    schedule: str = "constant"  # constant | warmup | step | warmup-step
    warmup_steps: int = 0  # linear warmup from lr/warmup_steps to lr
    milestones: list[int] = field(default_factory=list)  # step decay points
    decay: float = 0.1  # factor applied at each milestone
    augment: bool = False  # image tasks: random crop (padding 4) + horizontal flip


@dataclass
class StoreConfig:
    """Which steps are stored and how shards are cut."""

    every: int = 1  # store θ_t for t % every == 0 (and the last step)
    log_points: int = 0  # > 0: instead store ~log_points log-spaced steps
    steps: list[int] = field(default_factory=list)  # extra steps always stored (e.g. LMC spawn points)
    shard_mb: float = 16.0  # target shard size; steps per shard are fixed when the run starts
    optimizer_state: bool = True  # store momentum buffers / Adam moments per stored step


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0  # training seed: initialisation and data order
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "float64"  # float64 | float32
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    store: StoreConfig = field(default_factory=StoreConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of the configuration (run identity; device excluded)."""
        d = self.to_dict()
        d.pop("device", None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


_SECTIONS = {"task": TaskConfig, "model": ModelConfig, "train": TrainConfig, "store": StoreConfig}


def _build(cls, data: dict[str, Any], where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise TelecliError(f"unknown setting '{where}{key}' (known: {', '.join(sorted(names))})")
        if key in _SECTIONS and where == "":
            if not isinstance(value, dict):
                raise TelecliError(f"setting '{key}' must be a table")
            kwargs[key] = _build(_SECTIONS[key], value, f"{key}.")
        else:
            kwargs[key] = _coerce(names[key], value, where + key)
    return cls(**kwargs)


def _coerce(f: dataclasses.Field, value: Any, key: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TelecliError(f"setting '{key}' must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TelecliError(f"setting '{key}' must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TelecliError(f"setting '{key}' must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TelecliError(f"setting '{key}' must be a string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise TelecliError(f"setting '{key}' must be a list, got {value!r}")
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise TelecliError(f"setting '{key}' must be a table, got {value!r}")
        return value
    return value


def from_dict(data: dict[str, Any]) -> RunConfig:
    return _build(RunConfig, data, "")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``train.lr=0.1`` → (["train", "lr"], 0.1). Values are TOML literals; bare words are strings."""
    if "=" not in item:
        raise TelecliError(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TelecliError(f"--set {item}: '{part}' is not a table")
        node[path[-1]] = value
    return data


def load(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML preset and apply ``--set`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise TelecliError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TelecliError(f"{path} is not valid TOML: {e}") from None
    data.pop("description", None)
    data.pop("paper", None)
    return from_dict(apply_overrides(data, overrides or []))
