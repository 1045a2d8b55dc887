"""Configurations: dataclasses read from TOML, overridable on the command line, checked at load time.

- :class:`RunConfig` (``telecli record`` presets, ``--set key=value``): a run is a function of its
  configuration and seeds; the full configuration is written into the run's manifest (run.json) so that
  every later analysis knows exactly what was trained.
- :class:`BoostConfig` (``telecli boost``, sections [nn] and [gbt]; method.md §4).

One loader reads both, against one schema: every field declares its type (from its default) and, with
:func:`setting`, its range and allowed values (:class:`Rule`); unknown keys, wrong types, non-finite
numbers and values out of range are refused in one line that names the setting and what it accepts.

>>> load_text('train.steps = 0')
Traceback (most recent call last):
telecli.errors.TelecliError: setting 'train.steps' (--steps) must be ≥ 1, got 0
>>> load_text('model.width = 64').model.width
64
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


@dataclass(frozen=True)
class Rule:
    """What a setting accepts beyond its type: bounds (``low``/``high`` inclusive, ``above``/``below``
    exclusive), allowed values (``choices``: a tuple, or a function returning one, for registries that
    are read when checked; ``check``: a predicate), the length and element rule of a list, and the command-line option that
    sets it (named in the message)."""

    low: float | None = None
    above: float | None = None
    high: float | None = None
    below: float | None = None
    choices: Any = None
    check: Any = None  # a function of the value: None when accepted, else what is accepted
    length: int | None = None
    item: "Rule | None" = None
    kind: type | None = None  # element type of a list (int or float)
    option: str = ""


def setting(default: Any, **rule: Any) -> Any:
    """A dataclass field with a default and its :class:`Rule` (lists and dicts get a default factory)."""
    meta = {"rule": Rule(**rule)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=meta)
    return field(default=default, metadata=meta)


def _tasks():
    from telecli.data import TASKS

    return TASKS


def _models():
    from telecli.models import MODELS

    return (*MODELS, "factory")


def _activations():
    from telecli.models.mlp import ACTIVATIONS

    return tuple(ACTIVATIONS)


def _optimizers():
    from telecli.optim import OPTIMIZERS

    return tuple(OPTIMIZERS)


def _device(value: str) -> str | None:
    """None when ``value`` names a device (auto, cpu, cuda, cuda:N), else what is accepted."""
    ok = value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())
    return None if ok else "auto, cpu, cuda or cuda:N"


DEVICE = Rule(check=_device, option="--device")
DTYPE = Rule(choices=("float64", "float32"))
FRACTION = dict(low=0.0, high=1.0)


@dataclass
class TaskConfig:
    """Which data set, which classes, how many points (method.md §2–4)."""

    name: str = setting("digits", choices=_tasks)  # poly | digits | mnist | cifar10 | mnist1d | tabular | modular
    classes: list[int] = field(default_factory=lambda: [3, 5])  # a pair → binary 0/1; [] → all classes
    n_train: int = setting(0, low=0)  # 0: the task's default (all available after the split)
    n_test: int = setting(0, low=0)
    label_noise: float = setting(0.0, **FRACTION)  # fraction of training labels replaced at random
    one_hot: bool = False  # k-class one-hot targets instead of a single 0/1 output
    downsample: int = setting(8, low=0)  # side length for image tasks (mnist, cifar10); 0 keeps the native size
    # mnist: how 28×28 → downsample×downsample: "area" averages (the default) | "optdigits" = the UCI optdigits
    # preprocessing of scikit-learn's digits (binarise, stretch to 20×32, 4×4 block counts; downsample = 8 only)
    downsample_mode: str = setting("area", choices=("area", "optdigits"))
    grayscale: bool = True  # cifar10: mean over RGB channels
    flatten: bool = True  # images as vectors (MLP) or (C, H, W) tensors (cnn, resnet20)
    root: str = ""  # directory (mnist, cifar10) or file (tabular CSV/Parquet); "" for built-ins
    target: str = ""  # tabular: name of the target column
    standardize: bool = True  # tabular: standardise features (statistics of the training split)
    test_fraction: float = setting(0.3, above=0.0, below=1.0)  # tasks without a fixed test split
    # poly (Kumar et al. 2024; method.md §3.3)
    dim: int = setting(100, low=1)
    # modular (Power et al. 2022; Nanda et al. 2023; method.md §10.2): all pairs of Z_P, (a ∘ b) mod P
    modulus: int = setting(113, low=2)  # P
    operation: str = setting("add", choices=("add", "sub", "mul"))
    train_fraction: float = setting(0.3, above=0.0, below=1.0)  # seeded share of the P² pairs trained on
    seed: int = setting(0, low=0)  # data seed (split, subsets, noise); independent of the training seed


@dataclass
class ModelConfig:
    """Which network (method.md §2–5). ``factory`` = "package.module:function" for a user's own."""

    name: str = setting("mlp", choices=_models)  # mlp | poly | cnn | resnet20 | transformer | factory
    depth: int = setting(3, low=1)  # number of Linear layers in the mlp
    width: int = setting(200, low=1)
    activation: str = setting("relu", choices=_activations)  # relu | tanh | gelu | identity
    sigmoid: bool = False  # output sigmoid (paper's SGD + σ setting)
    init_scale: float = setting(1.0, above=0.0)  # α: multiplies all parameters at initialisation (Omnigrok)
    epsilon: float = 0.2  # poly: φ(h) = h + ε/2 h²
    hidden: int = setting(500, low=1)  # poly: n_h
    channels: int = setting(16, low=1)  # cnn: channels of the first conv layer
    # transformer (method.md §10.2; telecli.models.transformer): decoder blocks of attention + MLP
    d_model: int = setting(128, low=1)
    heads: int = setting(4, low=1)  # d_model must be a multiple of heads
    d_mlp: int = setting(512, low=1)
    blocks: int = setting(1, low=1)
    layernorm: bool = False  # pre-LayerNorm in each block and before the unembedding (Nanda et al.: none)
    factory: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Loss, optimiser, schedule, length (method.md §1.6 for the optimisers' conventions)."""

    loss: str = setting("mse", choices=("mse", "ce"))  # mse: ½(f−y)² per example, mean over the batch | ce: cross-entropy
    optimizer: str = setting("sgd", choices=_optimizers)  # sgd | adam | adamw …  (sgd with momentum > 0 is PyTorch's convention)
    lr: float = setting(0.01, above=0.0)
    momentum: float = setting(0.0, low=0.0, below=1.0)
    weight_decay: float = setting(0.0, low=0.0)
    betas: list[float] = setting([0.9, 0.999], length=2, item=Rule(low=0.0, below=1.0, kind=float))
    eps: float = setting(1e-8, above=0.0)
    batch_size: int = setting(0, low=0)  # 0: full batch
    steps: int = setting(100, low=1, option="--steps")
    schedule: str = setting("constant", choices=("constant", "warmup", "step", "warmup-step"))
    warmup_steps: int = setting(0, low=0)  # linear warmup from lr/warmup_steps to lr
    milestones: list[int] = setting([], item=Rule(low=1, kind=int))  # step decay points
    decay: float = setting(0.1, above=0.0)  # factor applied at each milestone
    augment: bool = False  # image tasks: random crop (padding 4) + horizontal flip
    # "paper": stop at 100 % train accuracy or when the train loss has not improved by more than
    # stop_tolerance for stop_patience_epochs epochs (method.md §3.2; telecli/train/stopping.py); "none": T = steps
    stop: str = setting("none", choices=("none", "paper"))
    stop_patience_epochs: int = setting(500, low=1)
    stop_tolerance: float = setting(1e-4, low=0.0)


@dataclass
class StoreConfig:
    """Which steps are stored and how shards are cut."""

    every: int = setting(1, low=1)  # store θ_t for t % every == 0 (and the last step)
    log_points: int = setting(0, low=0)  # > 0: instead store ~log_points log-spaced steps
    steps: list[int] = setting([], item=Rule(low=0, kind=int))  # extra steps always stored (e.g. LMC spawn points)
    shard_mb: float = setting(16.0, low=0.0)  # 0: one stored step per shard; target shard size; steps per shard are fixed when the run starts
    optimizer_state: bool = True  # store momentum buffers / Adam moments per stored step


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = setting(0, low=0, option="--seed")  # training seed: initialisation and data order
    device: str = field(default="auto", metadata={"rule": DEVICE})  # auto | cpu | cuda
    dtype: str = field(default="float64", metadata={"rule": DTYPE})  # float64 | float32
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
    """``value`` as the type of ``f``'s default, checked against its :class:`Rule`."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    rule = f.metadata.get("rule", Rule())
    if "None" in str(f.type) or isinstance(default, tuple):
        return value  # optional or parsed fields: their config's validate() parses them
    name = f"setting '{key}'" + (f" ({rule.option})" if rule.option else "")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TelecliError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        return _check_number(value, type(default), rule, name)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TelecliError(f"{name} must be a string, got {value!r}")
        _check_choice(value, rule, name)
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise TelecliError(f"{name} must be a list, got {value!r}")
        if rule.length is not None and len(value) != rule.length:
            raise TelecliError(f"{name} must be a list of {rule.length} values, got {value!r}")
        if rule.item is not None:
            value = [_check_number(v, rule.item.kind or float, rule.item, f"each value of {name}") for v in value]
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise TelecliError(f"{name} must be a table, got {value!r}")
        _check_finite_tree(value, name)
        return value
    return value


def _check_number(value: Any, kind: type, rule: Rule, name: str) -> int | float:
    """An int (a float with an integral value is accepted) or a finite float, within the rule's bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TelecliError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise TelecliError(f"{name} must be a finite number, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise TelecliError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    bounds = [(b, sign, ok) for b, sign, ok in ((rule.low, "≥", value >= (rule.low or 0)),
                                                 (rule.above, ">", value > (rule.above or 0)),
                                                 (rule.high, "≤", value <= (rule.high or 0)),
                                                 (rule.below, "<", value < (rule.below or 0))) if b is not None]
    if not all(ok for _, _, ok in bounds):
        wanted = " and ".join(f"{sign} {b:g}" for b, sign, _ in bounds)
        raise TelecliError(f"{name} must be {wanted}, got {value!r}")
    return value


def check_value(value: Any, kind: type, name: str, **rule: Any) -> int | float:
    """One number checked as a setting is (type, finiteness, :class:`Rule` bounds), for arguments that
    are not read from a configuration file (the Recorder's).

    >>> check_value(0, int, "every", low=1)
    Traceback (most recent call last):
    telecli.errors.TelecliError: every must be ≥ 1, got 0
    """
    return _check_number(value, kind, Rule(**rule), name)


def _check_choice(value: str, rule: Rule, name: str) -> None:
    if rule.check is not None:
        wanted = rule.check(value)
        if wanted is not None:
            raise TelecliError(f"{name} must be {wanted}, got {value!r}")
    if rule.choices is not None:
        choices = rule.choices() if callable(rule.choices) else rule.choices
        if value not in choices:
            raise TelecliError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_finite_tree(value: Any, name: str) -> None:
    """Tables passed through to user code (model.kwargs) must hold JSON values: no NaN or infinity."""
    if isinstance(value, dict):
        for v in value.values():
            _check_finite_tree(v, name)
    elif isinstance(value, list):
        for v in value:
            _check_finite_tree(v, name)
    elif isinstance(value, float) and not math.isfinite(value):
        raise TelecliError(f"{name} holds a non-finite number {value!r}")


def check_fields(obj: Any, where: str = "", sections: dict[str, type] = _SECTIONS) -> Any:
    """Check a configuration built in Python (not read by :func:`from_dict`) against the same schema;
    returns it with the values coerced (an integral float → int)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in sections and where == "":
            check_fields(value, f"{f.name}.", sections)
        else:
            setattr(obj, f.name, _coerce(f, value, where + f.name))
    return obj


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
    if not data:
        raise TelecliError(f"{path} holds no settings; start from a preset in sample_runs/ (e.g. "
                           f"sample_runs/approx-sgd.toml)")
    return from_dict(apply_overrides(data, overrides or []))


def load_text(text: str, overrides: list[str] | None = None) -> RunConfig:
    """A :class:`RunConfig` from TOML text (checked as :func:`load` checks a file)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TelecliError(f"not valid TOML: {e}") from None
    return from_dict(apply_overrides(data, overrides or []))


# ------------------------------------------------------------------------------------------- boost


@dataclass
class NNSettings:
    """The MLP of method.md §4.3: 3 layers, width 64, ReLU, batch 128, squared loss, plain SGD."""

    steps: int = setting(1000, low=1, option="--nn-steps")
    lr: float = setting(0.01, above=0.0, option="--nn-lr")
    batch_size: int = setting(128, low=1, option="--nn-batch")
    width: int = setting(64, low=1)
    depth: int = setting(3, low=1)
    activation: str = setting("relu", choices=_activations)

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

    trees: int = setting(100, low=1, option="--gbt-trees")
    depth: int | None = 3
    lr: float = setting(0.1, above=0.0, option="--gbt-lr")


@dataclass
class BoostConfig:
    data: str = ""  # CSV/Parquet path, "diabetes" or "openml:ID|NAME" (required)
    target: str = ""  # "" → "target" for diabetes, the default target for OpenML
    proportions: tuple[float, ...] = DEFAULT_PROPORTIONS
    mixture_size: int = setting(4000, low=1, option="--mixture-size")
    top: float = setting(0.1, above=0.0, below=1.0, option="--top")  # irregular pool: this fraction of the rows (method.md §4.2)
    test_size: float = setting(0.3, above=0.0, option="--test-size")  # regular rows held out as regular-test (fraction, or a count ≥ 1)
    search: int = setting(0, low=0, option="--search")  # random-search draws per model (paper: 25); 0 = use the settings below
    validation: int = setting(2000, low=1, option="--validation")  # validation rows for the search, capped to a fifth of train
    seed: int = setting(0, low=0, option="--seed")
    kernel_every: int = setting(1, low=1, option="--kernel-every")  # NN kernel norms at steps t = 1, 1+K, 1+2K, …
    telescope: bool = True  # also run the telescoping model on OUT/nn (lens.h5)
    smoother: bool = True  # build the GBT smoother S (memory (n+m)·n floats); False: kernel norms only
    device: str = field(default="auto", metadata={"rule": DEVICE})
    dtype: str = field(default="float64", metadata={"rule": DTYPE})
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
    """The checks beyond the schema (types and ranges are checked as the settings are read): the
    proportions, the tree depth, the test size and memory budget, the data (one-line TelecliError)."""
    check_fields(cfg, sections=_BOOST_SECTIONS)
    cfg.proportions = parse_proportions(cfg.proportions)
    cfg.gbt.depth = parse_depth(cfg.gbt.depth)
    if not float(cfg.test_size).is_integer() and cfg.test_size >= 1:
        raise TelecliError(f"--test-size must be a fraction in (0, 1) or a row count, got {cfg.test_size!r}")
    if cfg.max_memory not in ("", "auto"):
        from telecli.options import parse_bytes

        parse_bytes(cfg.max_memory, "--max-memory")
    if not isinstance(cfg.data, str) or not cfg.data:
        raise TelecliError("give the data: telecli boost DATA (a CSV/Parquet file, 'diabetes' or openml:ID) "
                           "or --config FILE.toml with data = ...")
    return cfg
