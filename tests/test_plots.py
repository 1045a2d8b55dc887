"""telecli plot: every figure from fabricated results files (names of docs/format.md) in PNG, PDF and
SVG; the checks on missing datasets, unknown figures, labels and formats; the CLI; and one figure
end to end from a recorded and telescoped run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from telecli.errors import TelecliError
from telecli.plots import FIGURES, default_out, plot, style

FORMATS = (".png", ".pdf", ".svg")
COMPONENTS = ("gradient", "momentum", "weight_decay", "theta0_decay")


def config(lr=0.05, width=100, seed=0, optimizer="sgd", momentum=0.0):
    return {"name": "fake", "seed": seed, "task": {"name": "digits", "classes": [3, 5]},
            "model": {"name": "mlp", "width": width, "depth": 3, "sigmoid": False, "init_scale": 1.0},
            "train": {"optimizer": optimizer, "lr": lr, "momentum": momentum, "weight_decay": 0.0, "loss": "mse"}}


def fabricate(path: Path, *, cfg: dict | None = None, effective: bool = True, regression: bool = False,
              n_steps: int = 24, n: int = 30, k: int = 1, seed: int = 0, scale: float = 1.0) -> Path:
    """A results file shaped like telescope's: predictions converge to the targets, the telescoping
    model stays close to the network and the linearisation drifts, p^train grows and p^test lags."""
    rng = np.random.default_rng(seed)
    steps = np.unique(np.r_[0, np.round(np.logspace(0, 3, n_steps - 1))]).astype(np.int64)
    S = len(steps)
    prog = (np.log1p(steps) / np.log1p(steps[-1]))[:, None, None]
    with h5py.File(path, "w") as f:
        f["steps"] = steps
        f.attrs.update({"run": "runs/fake", "run_id": f"fake{seed}", "loss": "mse", "every": 1, "points": "all",
                        "optimizer": json.dumps({"name": "sgd", "momentum": 0.0, "weight_decay": 0.0})})
        if cfg is not None:
            f.attrs["config"] = json.dumps(cfg)
        for split in ("train", "test"):
            y = rng.normal(size=(n, k)) if regression else rng.integers(0, 2, size=(n, k)).astype(float)
            f0 = rng.normal(scale=0.3, size=(n, k))
            noise = 0.4 if split == "test" else 0.1
            actual = f0 + prog * (y - f0 + noise * rng.normal(size=(n, k)))
            drift = prog * rng.normal(size=(1, n, k))
            preds = {"actual": actual, "telescoped": actual + 1e-4 * scale * drift,
                     "linearized": actual + 0.1 * scale * drift}
            f[f"{split}/index"] = np.arange(n)
            f[f"{split}/targets"] = y
            for kind, pred in preds.items():
                f[f"{split}/{kind}"] = pred
                f[f"{split}/loss_{kind}"] = 0.5 * ((pred - y) ** 2).sum(-1).mean(-1)
                err = (np.nan * np.ones(S)) if regression else ((pred[..., 0] > 0.5) != y[..., 0]).mean(-1)
                f[f"{split}/error_{kind}"] = err
                if kind != "actual":
                    f[f"{split}/approx_error_{kind}"] = np.abs(pred - actual).mean((-2, -1))
            if effective:
                base = 5 + 20 * prog[:, 0, 0]
                f[f"{split}/effective_parameters"] = base if split == "train" else base * (1 - 0.5 * prog[:, 0, 0])
                f[f"{split}/smoother"] = actual
                f[f"{split}/kernel_norm_max"] = 1 + prog[:, 0, 0]
                decay = 1.0 / (1.0 + steps)[:, None, None]
                for i, c in enumerate(COMPONENTS):
                    f[f"{split}/components/{c}"] = decay * 10.0 ** (-i) * rng.normal(size=(S, n, k))
        if effective:
            f["train/smoother_trace"] = np.linspace(1, 10, S)
    return path


def fabricate_lmc(path: Path, seed: int = 0) -> Path:
    """An lmc.h5 shaped like ``telecli lmc interpolate`` + ``lmc gradients`` (docs/lmc.md): barriers that
    shrink with the spawn step t′, gradient changes per layer that fall fastest at the output."""
    rng = np.random.default_rng(seed)
    t = np.array([0, 2, 5, 10, 20, 50])
    with h5py.File(path, "w") as f:
        f["spawn_steps"] = t
        for name, scale in (("acc_barrier", 0.2), ("acc_gap_mid", 0.1)):
            f[f"summary/{name}_mean"] = scale / (1 + t) + 0.01 * rng.random(len(t))
            f[f"summary/{name}_se"] = 0.01 * rng.random(len(t))
        layers = ["conv1", "conv2", "bn1", "head"]
        f["gradients/layers"] = np.array(layers, dtype="S")
        f["gradients/kind"] = np.array(["conv", "conv", "batchnorm", "linear"], dtype="S")
        f["gradients/change"] = np.stack([1e-2 / (1 + t) ** (0.5 + j) for j in range(len(layers))], axis=1)
        f.attrs["gradient_delta"] = 20
    return path


def fabricate_boost(path: Path, seed: int = 0) -> Path:
    """A boost.h5 shaped like ``telecli boost`` (docs/boost.md): metrics per irregular proportion p."""
    rng = np.random.default_rng(seed)
    p = np.linspace(0, 1, 6)
    with h5py.File(path, "w") as f:
        f.attrs["dataset"] = "houses"
        f["metrics/proportions"] = p
        f["metrics/relative_mse"] = 1 + 2 * p + 0.05 * rng.random(6)
        f["metrics/kernel_norm_nn"] = 0.9 + 1.5 * p
        f["metrics/kernel_norm_gbt"] = 0.6 + 0.1 * p
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, list[Path]]:
    d = tmp_path_factory.mktemp("results")
    sweep = [fabricate(d / f"lr{lr}.h5", cfg=config(lr=lr), seed=i, scale=10 * lr)
             for i, lr in enumerate((0.01, 0.05, 0.2))]
    widths = [fabricate(d / f"w{w}-s{s}.h5", cfg=config(width=w, seed=s), seed=10 * w + s, n_steps=4)
              for w in (2, 5, 20, 100, 400) for s in (0, 1)]
    return {"one": [sweep[1]], "sweep": sweep, "widths": widths,
            "poly": [fabricate(d / "poly.h5", regression=True, k=1)],
            "bare": [fabricate(d / "bare.h5", effective=False)],
            "lmc": [fabricate_lmc(d / "lmc.h5")],
            "boost": [fabricate_boost(d / f"boost{s}.h5", seed=s) for s in (0, 1)]}


CASES = {  # figure → which files, extra options
    "approximation": ("sweep", {}),
    "accuracy": ("one", {}),
    "complexity": ("one", {}),
    "double-descent": ("widths", {}),
    "components": ("one", {"split": "train"}),
    "lmc": ("lmc", {}),
    "tabular": ("boost", {}),
}


def test_every_figure_has_a_case():
    assert set(CASES) == set(FIGURES)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("figure", sorted(CASES))
def test_draws_every_figure(files, tmp_path, figure, fmt):
    which, opts = CASES[figure]
    out = plot(files[which], figure, out=tmp_path / f"fig{fmt}", **opts)
    assert out == tmp_path / f"fig{fmt}" and out.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # the temporary file is gone
    head = out.read_bytes()[:8]
    assert head.startswith({".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}[fmt])
    if fmt == ".png":
        import matplotlib.image

        img = matplotlib.image.imread(out)
        h, w = img.shape[:2]
        assert 1000 <= w <= 6000 and 900 <= h <= 2000, (w, h)  # 300 dpi: ≥ 3.3 in wide
        assert img.std() > 0.05  # not blank


def test_figure_sizes_follow_dpi(files, tmp_path):
    import matplotlib.image

    h, w = matplotlib.image.imread(plot(files["one"], "approximation", out=tmp_path / "a.png")).shape[:2]
    assert (w, h) == (round(style.SINGLE[0] * style.DPI), round(style.SINGLE[1] * style.DPI))
    h, w = matplotlib.image.imread(plot(files["one"], "complexity", out=tmp_path / "c.png")).shape[:2]
    assert (w, h) == (round(style.DOUBLE[0] * style.DPI), round(style.DOUBLE[1] * style.DPI))


def test_overlays_and_variants(files, tmp_path):
    """Several files on approximation/complexity/components/accuracy; regression targets on complexity;
    the train split; explicit labels; the default output name."""
    for fig in ("complexity", "components", "accuracy"):
        assert plot(files["sweep"], fig, out=tmp_path / f"{fig}.png").stat().st_size > 10_000
    assert plot(files["poly"], "complexity", out=tmp_path / "poly.svg").stat().st_size > 10_000
    plot(files["one"], "approximation", out=tmp_path / "train.png", split="train", labels=["mine"])
    out = plot(files["one"], "approximation")
    assert out == files["one"][0].with_name("lr0.05-approximation.png") == default_out(files["one"][0], "approximation")
    assert out.is_file()
    out.unlink()


def test_labels_from_config(files):
    from telecli.plots import auto_labels

    with h5py.File(files["sweep"][0]) as a, h5py.File(files["sweep"][1]) as b:
        assert auto_labels([a, b], files["sweep"][:2]) == ["SGD lr=0.01", "SGD lr=0.05"]
    ws = files["widths"][:3]
    fs = [h5py.File(p) for p in ws]
    try:
        assert auto_labels(fs, ws) == ["seed=0, width=2", "seed=1, width=2", "seed=0, width=5"]
    finally:
        for f in fs:
            f.close()
    with h5py.File(files["bare"][0]) as f:
        assert auto_labels([f], files["bare"]) == ["SGD"]


def test_missing_dataset_names_it_and_the_command(files, tmp_path):
    for fig in ("complexity", "double-descent", "components"):
        with pytest.raises(TelecliError, match=r"effective_parameters|components.*--effective-params"):
            plot(files["bare"], fig, out=tmp_path / "x.png")
    with pytest.raises(TelecliError, match="no dataset 'train/effective_parameters'.*telecli telescope RUN "
                                           "--effective-params"):
        plot(files["bare"], "complexity", out=tmp_path / "x.png")
    assert not list(tmp_path.iterdir())  # nothing written


def test_expected_errors(files, tmp_path):
    with pytest.raises(TelecliError, match="unknown figure 'nope'; available: approximation, accuracy"):
        plot(files["one"], "nope", out=tmp_path / "x.png")
    with pytest.raises(TelecliError, match="extension"):
        plot(files["one"], "approximation", out=tmp_path / "x.jpg")
    with pytest.raises(TelecliError, match="--label"):
        plot(files["sweep"], "approximation", out=tmp_path / "x.png", labels=["a"])
    with pytest.raises(TelecliError, match="--split"):
        plot(files["one"], "approximation", out=tmp_path / "x.png", split="val")
    with pytest.raises(TelecliError, match="not found"):
        plot([tmp_path / "missing.h5"], "approximation", out=tmp_path / "x.png")
    with pytest.raises(TelecliError, match="accuracy is undefined"):
        plot(files["poly"], "accuracy", out=tmp_path / "x.png")
    with pytest.raises(TelecliError, match="'model.width' not found.*--x-key model.width"):
        plot(files["poly"], "double-descent", out=tmp_path / "x.png")  # no config attr
    with pytest.raises(TelecliError, match="'model.depth_x' not found"):
        plot(files["widths"], "double-descent", out=tmp_path / "x.png", x_key="model.depth_x")
    assert not list(tmp_path.iterdir())


def test_double_descent_other_key_and_stats(files, tmp_path):
    from telecli.plots.double_descent import mean_se

    x, m, se = mean_se(np.array([1.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0]))
    np.testing.assert_allclose(x, [1, 2]) and np.testing.assert_allclose(m, [2, 5])
    np.testing.assert_allclose(se, [np.std([1, 3], ddof=1) / np.sqrt(2), 0])
    assert plot(files["sweep"], "double-descent", out=tmp_path / "lr.pdf", x_key="train.lr").is_file()


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "telecli", "plot", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "MPLBACKEND": "Agg"})


def test_plot_command_writes_pdf_and_refuses_in_one_line(files, tmp_path):
    r = _cli(*files["sweep"], "--figure", "approximation", "--out", tmp_path / "a.pdf",
             "--label", "small", "--label", "mid", "--label", "large")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.pdf").stat().st_size > 10_000 and "a.pdf" in r.stdout
    r = _cli(tmp_path / "missing.h5", "--figure", "approximation")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not found" in r.stderr
    r = _cli(files["bare"][0], "--figure", "complexity", "--out", tmp_path / "c.png")
    assert r.returncode == 2 and "--effective-params" in r.stderr and not (tmp_path / "c.png").exists()


def test_recorded_run_telescoped_then_plotted(tmp_path):
    """A tiny recorded run, telescoped, then plotted."""
    from telecli import config as cfgmod
    from telecli.jobs.telescope import run_telescope
    from telecli.train.loop import run_training

    cfg = cfgmod.from_dict({"name": "tiny", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 16},
                            "train": {"batch_size": 64, "steps": 8, "lr": 0.05}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    lens = run_telescope(run, points=30, progress=False)
    for fig in ("approximation", "accuracy"):
        out = plot([lens], fig)
        assert out == lens.with_name(f"lens-{fig}.png") and out.stat().st_size > 10_000


def test_complexity_hatches_the_steps_where_p_is_not_valid(tmp_path):
    """validity/{split}/ok false → hatched bands over exactly those steps (one band per run of steps),
    on one file and on an overlay; a file without flags draws none."""
    from matplotlib.figure import Figure

    path = fabricate(tmp_path / "flagged.h5")
    with h5py.File(path, "a") as f:
        S = len(f["steps"])
        ok = np.ones(S, dtype=bool)
        ok[5:8] = False
        ok[-2:] = False
        f["validity/train/ok"] = np.ones(S, dtype=bool)
        f["validity/test/ok"] = ok
    with h5py.File(path, "r") as f:
        bad = style.invalid_steps(f)
        x = style.steps(f)
        assert bad.tolist() == (~ok).tolist()
        with h5py.File(fabricate(tmp_path / "plain.h5"), "r") as g:
            assert style.invalid_steps(g) is None
    ax = Figure().subplots()
    keep = x > 0
    assert style.shade_steps(ax, x[keep], bad[keep], log=True)
    spans = [p for p in ax.patches if p.get_hatch() == "///"]
    assert len(spans) == 2
    lo, hi = spans[0].get_x(), spans[0].get_x() + spans[0].get_width()
    inside = x[keep][(x[keep] >= lo) & (x[keep] <= hi)]
    assert sorted(inside.tolist()) == sorted(x[5:8].tolist())  # the band covers the flagged steps only
    assert not style.shade_steps(ax, x, np.zeros_like(bad), log=False)
    for files_ in ([path], [path, tmp_path / "plain.h5"]):
        assert plot(files_, "complexity", out=tmp_path / f"c{len(files_)}.png").stat().st_size > 10_000


def test_complexity_keeps_valid_steps_readable_when_the_smoother_diverged(tmp_path):
    """p far above n (a smoother recursion that diverged at flagged steps, as AdamW's does after the fit on
    the modular task): the p axis turns symlog, capped at DIVERGED × n, and a note gives the largest p;
    an ordinary file keeps its linear axis."""
    from telecli.plots import complexity

    drawn = []

    def keep_axes(fig, out):
        drawn.append(fig.axes)
        return style_save(fig, out)

    style_save = style.save
    path = fabricate(tmp_path / "diverged.h5")
    with h5py.File(path, "a") as f:
        f.attrs["n_train"] = 50
        p = f["test/effective_parameters"][...]
        p[-3:] = [1e3, 1e40, 1e200]
        f["test/effective_parameters"][...] = p
    import unittest.mock

    with unittest.mock.patch.object(style, "save", keep_axes):
        plot([path], "complexity", out=tmp_path / "d.png")
        plot([fabricate(tmp_path / "plain.h5")], "complexity", out=tmp_path / "p.png")
    bottom = drawn[0][1]
    assert bottom.get_yscale() == "symlog" and bottom.get_ylim()[1] == complexity.DIVERGED * 50
    assert any("1e+200" in t.get_text() for t in bottom.texts)
    assert drawn[1][1].get_yscale() == "linear"


def test_tabular_shows_the_difference_where_relative_mse_means_nothing(tmp_path):
    """The network wins at p = 0 (negative denominator): the ratio is not drawn; the difference
    MSE_NN − MSE_GBT is, from the stored MSEs (mean over the seeds)."""
    from telecli.plots.tabular import collect

    paths = []
    for s, shift in ((0, -0.10), (1, -0.14)):
        path = fabricate_boost(tmp_path / f"nnwins{s}.h5", seed=s)
        with h5py.File(path, "a") as f:
            p = f["metrics/proportions"][...]
            f["metrics/mse_gbt"] = 1.0 + p
            f["metrics/mse_nn"] = 1.0 + p + shift + 0.5 * p
        paths.append(path)
    good = fabricate_boost(tmp_path / "gbtwins.h5", seed=3)
    with h5py.File(good, "a") as f:
        p = f["metrics/proportions"][...]
        f["metrics/mse_gbt"], f["metrics/mse_nn"] = 1.0 + p, 1.3 + 2 * p
    with h5py.File(paths[0]) as a, h5py.File(paths[1]) as b, h5py.File(good) as g:
        data = collect([a, b], ["a", "b"])["houses"]
        assert not bool(data["meaningful"])
        np.testing.assert_allclose(data["mse_diff"], -0.12 + 0.5 * p, atol=1e-12)
        assert bool(collect([g], ["g"])["houses"]["meaningful"])
    assert plot(paths, "tabular", out=tmp_path / "t.png").stat().st_size > 10_000


def test_seeds_of_one_setting_are_drawn_as_mean_and_standard_error(tmp_path):
    """Files whose configurations differ only in the seed form one group; its curves are the mean over
    the seeds, its band the standard error (checked against numpy); other settings stay apart."""
    from telecli.plots import auto_labels
    from telecli.plots.seeds import curve, group_seeds

    paths = [fabricate(tmp_path / f"s{s}.h5", cfg=config(lr=0.05, seed=s), seed=s) for s in range(3)]
    paths.append(fabricate(tmp_path / "other.h5", cfg=config(lr=0.2, seed=0), seed=9))
    fs = [h5py.File(p) for p in paths]
    try:
        groups, labels = group_seeds(fs, auto_labels(fs, paths))
        assert [g.n for g in groups] == [3, 1]
        assert labels[0].endswith("(3 seeds)") and "seed" not in labels[0].split(" (")[0]
        rows = np.stack([f["test/approx_error_telescoped"][...] for f in fs[:3]])
        mean, se = curve(groups[0], lambda g: style.read(g, "test/approx_error_telescoped"))
        np.testing.assert_allclose(mean, rows.mean(0), rtol=1e-12)
        np.testing.assert_allclose(se, rows.std(0, ddof=1) / np.sqrt(3), rtol=1e-12)
        assert curve(groups[1], lambda g: style.read(g, "test/approx_error_telescoped"))[1] is None
    finally:
        for f in fs:
            f.close()
    for fig in ("approximation", "complexity", "components", "accuracy"):
        assert plot(paths, fig, out=tmp_path / f"{fig}.png").stat().st_size > 10_000
