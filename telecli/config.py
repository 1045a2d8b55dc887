"""Configurations: dataclasses read from TOML, overridable on the command line, checked at load time.

- :class:`RunConfig` (``telecli record`` presets, ``--set key=value``): a run is a function of its
  configuration and seeds; the full configuration is written into the run's manifest (run.json) so that
  every later analysis knows exactly what was trained.
- :class:`BoostConfig` (``telecli boost``, sections [nn] and [gbt]; method.md §4).

One loader reads both: unknown keys and wrongly typed values are refused in one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telecli.errors import TelecliError
from telecli.lens.irregular import DEFAULT_PROPORTIONS, check_proportions


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


def _build(cls, data: dict[str, Any], where: str, sections: dict[str, type] = _SECTIONS):
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise TelecliError(f"unknown setting '{where}{key}' (known: {', '.join(sorted(names))})")
        if key in sections and where == "":
            if not isinstance(value, dict):
                raise TelecliError(f"setting '{key}' must be a table")
            kwargs[key] = _build(sections[key], value, f"{key}.")
        else:
            kwargs[key] = _coerce(names[key], value, where + key)
    return cls(**kwargs)


def _coerce(f: dataclasses.Field, value: Any, key: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if "None" in str(f.type) or isinstance(default, tuple):
        return value  # optional or parsed fields: their config's validate() parses them
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


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TelecliError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TelecliError(f"{path} is not valid TOML: {e}") from None


def load(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML preset and apply ``--set`` overrides."""
    data = read_toml(path)
    data.pop("description", None)
    data.pop("paper", None)
    return from_dict(apply_overrides(data, overrides or []))


# ------------------------------------------------------------------------------------------- boost


@dataclass
class NNSettings:
    """The MLP of method.md §4.3: 3 layers, width 64, ReLU, batch 128, squared loss, plain SGD."""

    steps: int = 1000
    lr: float = 0.01
    batch_size: int = 128
    width: int = 64
    depth: int = 3
    activation: str = "relu"

    def run_config(self, seed: int, dtype: str) -> RunConfig:
        """The same network and optimiser as a :class:`RunConfig`, trained by telecli.train.loop."""
        return RunConfig(name="boost-nn", seed=seed, dtype=dtype, task=TaskConfig(name="tabular"),
                         model=ModelConfig(name="mlp", depth=self.depth, width=self.width,
                                           activation=self.activation, sigmoid=False, init_scale=1.0),
                         train=TrainConfig(loss="mse", optimizer="sgd", lr=self.lr, batch_size=self.batch_size,
                                           steps=self.steps))


@dataclass
class GBTSettings:
    """sklearn ``GradientBoostingRegressor`` (loss squared_error, subsample 1); depth None = unlimited."""

    trees: int = 100
    depth: int | None = 3
    lr: float = 0.1


@dataclass
class BoostConfig:
    data: str = ""  # CSV/Parquet path, "diabetes" or "openml:ID|NAME" (required)
    target: str = ""  # "" → "target" for diabetes, the default target for OpenML
    proportions: tuple[float, ...] = DEFAULT_PROPORTIONS
    mixture_size: int = 4000
    top: float = 0.1  # irregular pool: this fraction of the rows (method.md §4.2)
    test_size: float = 0.3  # regular rows held out as regular-test (fraction, or a count ≥ 1)
    search: int = 0  # random-search draws per model (paper: 25); 0 = use the settings below
    validation: int = 2000  # validation rows for the search, capped to a fifth of train
    seed: int = 0
    kernel_every: int = 1  # NN kernel norms at steps t = 1, 1+K, 1+2K, …
    telescope: bool = True  # also run the telescoping model on OUT/nn (lens.h5)
    smoother: bool = True  # build the GBT smoother S (memory (n+m)·n floats); False: kernel norms only
    device: str = "auto"
    dtype: str = "float64"
    max_memory: str = "auto"  # the NN side's working-memory budget (kernel norms, telescope), e.g. "2G"
    description: str = ""
    nn: NNSettings = field(default_factory=NNSettings)
    gbt: GBTSettings = field(default_factory=GBTSettings)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["proportions"] = list(self.proportions)
        return d


_BOOST_SECTIONS = {"nn": NNSettings, "gbt": GBTSettings}


def parse_proportions(value) -> tuple[float, ...]:
    """"0,0.25,1" or a list → a tuple of floats in [0, 1] (TelecliError otherwise)."""
    items = [s for s in value.replace(";", ",").split(",") if s.strip()] if isinstance(value, str) else value
    return check_proportions(items, "--proportions")


def parse_depth(value) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        return None
    try:
        depth = int(value)
    except (TypeError, ValueError):
        raise TelecliError(f"--gbt-depth must be a positive integer or 'none', got {value!r}") from None
    if depth < 1:
        raise TelecliError(f"--gbt-depth must be ≥ 1 (or 'none'), got {depth}")
    return depth


def load_boost(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> BoostConfig:
    """Settings from a TOML file (keys as in :class:`BoostConfig`, sections [nn] and [gbt]) and
    ``overrides`` ("key" or "nn.key"/"gbt.key" → value; None values are ignored), then validated."""
    data: dict[str, Any] = read_toml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return validate_boost(_build(BoostConfig, data, "", _BOOST_SECTIONS))


def validate_boost(cfg: BoostConfig) -> BoostConfig:
    """Check every setting before any work (one-line TelecliError naming the bad one)."""
    cfg.proportions = parse_proportions(cfg.proportions)
    cfg.gbt.depth = parse_depth(cfg.gbt.depth)

    def integer(name: str, value, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
            raise TelecliError(f"{name} must be an integer ≥ {low}, got {value!r}")
        return int(value)

    def positive(name: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise TelecliError(f"{name} must be a positive number, got {value!r}")
        return float(value)

    cfg.mixture_size = integer("--mixture-size", cfg.mixture_size, 1)
    cfg.search = integer("--search", cfg.search, 0)
    cfg.validation = integer("--validation", cfg.validation, 1)
    cfg.seed = integer("--seed", cfg.seed, 0)
    cfg.kernel_every = integer("--kernel-every", cfg.kernel_every, 1)
    cfg.nn.steps = integer("--nn-steps", cfg.nn.steps, 1)
    cfg.nn.batch_size = integer("--nn-batch", cfg.nn.batch_size, 1)
    cfg.nn.width = integer("nn.width", cfg.nn.width, 1)
    cfg.nn.depth = integer("nn.depth", cfg.nn.depth, 1)
    cfg.nn.lr = positive("--nn-lr", cfg.nn.lr)
    cfg.gbt.trees = integer("--gbt-trees", cfg.gbt.trees, 1)
    cfg.gbt.lr = positive("--gbt-lr", cfg.gbt.lr)
    if not (isinstance(cfg.top, (int, float)) and 0 < cfg.top < 1):
        raise TelecliError(f"--top must be a fraction in (0, 1), got {cfg.top!r}")
    if not (isinstance(cfg.test_size, (int, float)) and cfg.test_size > 0 and (cfg.test_size < 1 or
                                                                              float(cfg.test_size).is_integer())):
        raise TelecliError(f"--test-size must be a fraction in (0, 1) or a row count, got {cfg.test_size!r}")
    if cfg.dtype not in ("float64", "float32"):
        raise TelecliError(f"dtype must be float64 or float32, got {cfg.dtype!r}")
    if cfg.max_memory not in ("", "auto"):
        from telecli.options import parse_bytes

        parse_bytes(cfg.max_memory, "--max-memory")
    if not isinstance(cfg.data, str) or not cfg.data:
        raise TelecliError("give the data: telecli boost DATA (a CSV/Parquet file, 'diabetes' or openml:ID) "
                           "or --config FILE.toml with data = ...")
    return cfg
