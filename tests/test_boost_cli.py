"""``telecli boost`` end to end on scikit-learn's bundled diabetes table (real data, no download): GBT and
NN through the same telescoping lens (method.md §4), boost.h5 contents, the tabular figure, bad input.

Measured on the e2e settings below (seed 0; 442 rows → irregular pool 44, regular-test 119, train
279; mixtures capped to 44 rows; NN 150 SGD steps at lr 0.01, kernel norms every 3rd step; GBT 60
trees, depth 3, lr 0.1), the NN's normalised max kernel norm is 0.914 at p = 0 and 0.981 at p = 1
(GBT: 0.535 → 0.561); MSE at p = 0: NN 0.527, GBT 0.523 (standardised target), so the relative MSE,
normalised by their small difference, is large at p > 0 (12–34) on this tiny table.
"""

import subprocess
import sys
import urllib.error

import h5py
import numpy as np
import pytest
import torch
from sklearn.ensemble import GradientBoostingRegressor
from typer.testing import CliRunner

from telecli.cli import app
from telecli.errors import TelecliError
from telecli import config
from telecli.data.tabular import load_table
from telecli.jobs import boost as pb
from telecli.store.trajectory import Trajectory

E2E = {"data": "diabetes", "nn.steps": 150, "nn.lr": 0.01, "kernel_every": 3, "gbt.trees": 60, "gbt.depth": 3,
       "gbt.lr": 0.1, "seed": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("boost")
    path = pb.run_boost(config.load_boost(None, E2E), out, progress=False)
    return out, path


def test_boost_h5_holds_every_dataset(run):
    out, path = run
    assert path == out / "boost.h5" and (out / "nn" / "run.json").is_file() and (out / "nn" / "lens.h5").is_file()
    with h5py.File(path, "r") as f:
        P = len(f["metrics/proportions"])
        n, m = len(f["split/train"]), len(f["split/test"])
        T = int(f.attrs["gbt_n_estimators"])
        K = len(f["nn/kernel_steps"])
        want = {
            "metrics/proportions": (P,), "metrics/n_irregular": (P,), "metrics/mse_nn": (P,), "metrics/mse_gbt": (P,),
            "metrics/relative_mse": (P,), "metrics/kernel_norm_nn": (P,), "metrics/kernel_norm_gbt": (P,),
            "metrics/telescoping_error_nn": (P,),
            "split/regular_test": None, "split/irregular": None, "split/scores": (442,),
            "split/mixture_index": (P, f.attrs["mixture_size"]), "split/mixture_rows": (P, f.attrs["mixture_size"]),
            "data/x_train": (n, 10), "data/y_train": (n,), "data/x_test": (m, 10), "data/y_test": (m,),
            "gbt/S_train": (n, n), "gbt/S_test": (m, n), "gbt/c_train": (n,), "gbt/c_test": (m,),
            "gbt/p_train": (T + 1,), "gbt/p_test": (T + 1,), "gbt/staged_test": (T + 1, m), "gbt/p_mixture": (P,),
            "gbt/kernel_norm_train": (T, n), "gbt/kernel_norm_test": (T, m), "gbt/kernel_norm_max_test": (P, T),
            "nn/kernel_norm_max_train": (K,), "nn/kernel_norm_max_test": (P, K), "nn/kernel_norm_mean_test": (m,),
            "nn/pred_test": (m,), "nn/loss": (150,),
        }
        for name, shape in want.items():
            assert name in f, name
            if shape is not None:
                assert f[name].shape == shape, (name, f[name].shape, shape)
        assert np.array_equal(f["metrics/proportions"][...], [0, 0.25, 0.5, 0.75, 1])
        assert list(f["nn/kernel_steps"][...][:3]) == [1, 4, 7]
        assert f.attrs["dataset"] == "diabetes" and f.attrs["mixture_size"] == 44 and f.attrs["mixture_size_capped"]
        # split: disjoint train / regular-test / pool; mixture p holds round(p·44) irregular rows
        train, pool = set(f["split/train"][...]), set(f["split/irregular"][...])
        assert not train & pool and not train & set(f["split/test"][...])
        rows = f["split/mixture_rows"][...]
        for i, p in enumerate(f["metrics/proportions"][...]):
            assert sum(r in pool for r in rows[i]) == f["metrics/n_irregular"][i] == int(np.floor(p * 44 + 0.5))
        assert np.array_equal(f["split/test"][...][f["split/mixture_index"][...]], rows)
        # the tree kernel's norms lie in [1/√n, 1] (method.md §4.1)
        kn = f["gbt/kernel_norm_test"][...]
        assert kn.min() >= 1 / np.sqrt(n) - 1e-12 and kn.max() <= 1


def test_nn_kernel_norm_grows_with_irregular_share(run):
    _, path = run
    with h5py.File(path, "r") as f:
        nn, gbt = f["metrics/kernel_norm_nn"][...], f["metrics/kernel_norm_gbt"][...]
        mx_tr, mx_te = f["nn/kernel_norm_max_train"][...], f["nn/kernel_norm_max_test"][...]
    # measured: NN 0.914 (p = 0) → 0.981 (p = 1); GBT 0.535 → 0.561
    assert nn[-1] > nn[0], nn
    assert np.all(np.isfinite(nn)) and np.all(gbt > 0)
    assert np.allclose(nn, mx_te.mean(axis=1) / mx_tr.mean())  # §4.4: mean_t max_test / mean_t max_train


def test_relative_mse_is_one_at_p0(run):
    _, path = run
    with h5py.File(path, "r") as f:
        rel, nn, gbt = (f[f"metrics/{k}"][...] for k in ("relative_mse", "mse_nn", "mse_gbt"))
        y, pos = f["data/y_test"][...], f["split/mixture_index"][...]
        pred = f["nn/pred_test"][...]
    assert rel[0] == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(rel, (nn - gbt) / (nn[0] - gbt[0]))
    assert np.allclose(nn, [np.mean((pred[i] - y[i]) ** 2) for i in pos])


def test_stored_smoother_reproduces_sklearn_on_the_mixtures(run):
    _, path = run
    with h5py.File(path, "r") as f:
        x_tr, y_tr, x_te = f["data/x_train"][...], f["data/y_train"][...], f["data/x_test"][...]
        S_te, c_te, pos = f["gbt/S_test"][...], f["gbt/c_test"][...], f["split/mixture_index"][...]
        S_tr, c_tr = f["gbt/S_train"][...], f["gbt/c_train"][...]
        attrs = dict(f.attrs)
    gbr = GradientBoostingRegressor(n_estimators=int(attrs["gbt_n_estimators"]), max_depth=int(attrs["gbt_max_depth"]),
                                    learning_rate=float(attrs["gbt_learning_rate"]), random_state=int(attrs["seed"]))
    gbr.fit(x_tr, y_tr)
    smoother = S_te @ y_tr + c_te
    for rows in pos:
        assert np.max(np.abs(smoother[rows] - gbr.predict(x_te[rows]))) < 1e-10
    assert np.max(np.abs(S_tr @ y_tr + c_tr - gbr.predict(x_tr))) < 1e-10


def test_nn_run_is_an_ordinary_run_on_the_same_split(run):
    out, path = run
    traj = Trajectory(out / "nn")
    assert traj.complete and traj.is_contiguous() and traj.last_step == 150
    data = traj.data()
    with h5py.File(path, "r") as f:
        assert np.array_equal(data["x_train"].numpy(), f["data/x_train"][...])
        assert np.array_equal(data["x_test"].numpy(), f["data/x_test"][...])
        assert np.array_equal(data["y_test"].numpy()[:, 0], f["data/y_test"][...])
        tel = f["metrics/telescoping_error_nn"][...]
        pos = f["split/mixture_index"][...]
    mixtures = traj.manifest["data"]["task"]["mixtures"]
    assert [mixtures[k] for k in ("0", "0.25", "0.5", "0.75", "1")] == pos.tolist()
    assert np.all(tel < 1e-2)  # small-γ SGD: the telescoping model tracks the network


def test_plot_tabular_figure(run, tmp_path):
    _, path = run
    png = tmp_path / "fig5.png"
    res = CliRunner().invoke(app, ["plot", str(path), str(path), "--figure", "tabular", "--out", str(png)])
    assert res.exit_code == 0, res.output
    assert png.is_file() and png.stat().st_size > 10_000


def test_existing_output_needs_overwrite(run):
    out, _ = run
    with pytest.raises(TelecliError, match="--overwrite"):
        pb.run_boost(config.load_boost(None, E2E), out, progress=False)


def test_kernel_row_norms_match_autograd():
    from torch.func import functional_call, jacrev, vmap

    from telecli.lens.boost import network_kernel_norms
    from telecli.models import instantiate, model_spec

    torch.manual_seed(0)
    spec = model_spec(config.NNSettings(width=7).run_config(0, "float64").model, (4,), 1)
    model = instantiate(*spec).double().eval()
    theta = {k: v.detach() + 0.01 * torch.randn_like(v) for k, v in model.named_parameters()}
    x_train, x_eval = torch.randn(12, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    batch = np.array([3, 0, 7, 7, 11])  # a repeated index counts twice

    def jac(x):
        j = vmap(jacrev(lambda th, xa: functional_call(model, th, (xa[None],))[0, 0]), in_dims=(None, 0))(theta, x)
        return torch.cat([j[k].reshape(len(x), -1) for k in theta], dim=1)

    K = jac(x_eval) @ jac(x_train[torch.as_tensor(batch)]).T / len(batch)  # Eq. 3, one column per batch entry
    k_row = torch.zeros(9, 12, dtype=torch.float64).index_add_(1, torch.as_tensor(batch), K)
    want = torch.linalg.vector_norm(k_row, dim=1)
    got = network_kernel_norms(model, theta, x_eval, x_train, batch)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "telecli", "boost", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("case", ["missing-target", "string-column", "proportion"])
def test_bad_input_one_line_exit_2(case, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,y\n1,2,3\n4,x,6\n7,8,9\n")
    args = {"missing-target": ["diabetes", "--target", "price"],
            "string-column": [str(csv), "--target", "y"],
            "proportion": ["diabetes", "--proportions", "0,0.5,1.5"]}[case]
    res = _cli(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("telecli: error:"), res.stderr
    assert {"missing-target": "'price' not found", "string-column": "column 'b'",
            "proportion": "1.5 is outside [0, 1]"}[case] in lines[0]
    assert not (tmp_path / "out" / "boost.h5").exists()


def test_openml_offline_gives_a_clear_error(monkeypatch):
    import sklearn.datasets

    def offline(**_):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(TelecliError, match="download its CSV"):
        load_table("openml:houses", "")
    with pytest.raises(TelecliError, match="openml:ID"):
        load_table("openml:nosuchset", "")


def test_config_files_and_overrides():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "sample_runs"
    cfg = config.load_boost(root / "boost-diabetes.toml", {"nn.steps": 7, "gbt.depth": "none"})
    assert cfg.data == "diabetes" and cfg.nn.steps == 7 and cfg.gbt.depth is None
    assert cfg.proportions == (0.0, 0.25, 0.5, 0.75, 1.0)
    papers = sorted((root / "paper").glob("boost-*.toml"))
    assert len(papers) == 4
    for p in papers:
        c = config.load_boost(p)
        assert c.data.startswith("openml:") and c.search == 25 and c.validation == 2000 and c.mixture_size == 4000
    with pytest.raises(TelecliError, match="unknown setting"):
        config.load_boost(None, {"data": "diabetes", "nn.momentum": 0.9})
    with pytest.raises(TelecliError, match="give the data"):
        config.load_boost(None, {})
    with pytest.raises(TelecliError, match="duplicates"):
        config.parse_proportions("0,0.5,0.5")


def test_random_search_draws_and_picks_the_best():
    X, y, _, _ = load_table("diabetes", "")
    cfg = config.load_boost(None, {"data": "diabetes", "search": 3, "nn.steps": 10, "validation": 2000})
    sp = pb.make_split(X, y, cfg)
    s = pb.random_search(sp, cfg, torch.device("cpu"), torch.float64, progress=False)
    assert s["n_validation"] == len(sp.y_train) // 5  # 2000 capped to a fifth of train
    assert len(s["gbt_val_mse"]) == len(s["nn_val_mse"]) == 3
    assert s["best_gbt"] == int(np.argmin(s["gbt_val_mse"])) and s["best_nn"] == int(np.argmin(s["nn_val_mse"]))
    assert np.all((s["nn_learning_rate"] >= 1e-5) & (s["nn_learning_rate"] <= 1e-2))
    assert np.all((s["gbt_n_estimators"] >= 10) & (s["gbt_n_estimators"] <= 1001))
    assert set(s["gbt_max_depth"].tolist()) <= {-1, 2, 3, 4, 5}
    assert s["gbt"].lr == s["gbt_learning_rate"][s["best_gbt"]]
