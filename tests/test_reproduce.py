"""telecli reproduce: cells named by their settings and skipped when done, resumed after an
interruption, the Slurm array script, the figures' claims tested on results files whose answers are
known (fabricated in the format of docs/format.md), and one real grid of tiny runs end to end.

The small-scale figures themselves (minutes each) are run by tests/test_findings.py when
TELECLI_FINDINGS=1 is set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import cli, write_cfg
from telecli.errors import TelecliError
from telecli.reproduce import FIGURES, Figure, approximation, get
from telecli.reproduce.cells import Cell
from telecli.reproduce.runner import expand, reproduce
from test_plots import fabricate


def test_every_figure_expands_at_both_scales_into_uniquely_named_cells():
    for name, fig in FIGURES.items():
        for scale in ("small", "paper"):
            cells = expand(fig, scale, 0 if scale == "paper" else 2, [])
            assert len({c.digest() for c in cells}) == len(cells), (name, scale)
            assert all(c.preset_path().is_file() for c in cells), (name, scale)
    assert len(expand(get("fig7"), "small", 2, [])) == 10  # 5 settings × 2 seeds
    assert len(expand(get("fig7"), "paper", 0, [])) == 20  # the paper's 4 seeds
    assert len(expand(get("fig2"), "small", 1, [])) == 6  # 2 optimisers × 3 learning rates


def test_the_command_line_lists_every_figure(tmp_path):
    from telecli.cli import REPRODUCIBLE

    assert sorted(REPRODUCIBLE) == sorted(FIGURES)
    code, _, err = cli("reproduce", "all", "--emit", "slurm", "--out", tmp_path)
    assert code == 2 and "not all" in err


def test_a_cell_is_named_by_its_settings():
    a, b = Cell("approx-sgd", ("train.lr=0.1",), 0), Cell("approx-sgd", ("train.lr=0.1",), 1)
    assert a.digest() == Cell("approx-sgd", ("train.lr=0.1",), 0).digest() != b.digest()
    assert a.digest() != Cell("approx-sgd", ("train.lr=0.2",), 0).digest()
    assert a.folder(Path("D")).name == f"approx-sgd-lr0.1-s0-{a.digest()}"
    with_set = expand(get("fig7"), "small", 1, ["device=cpu"])
    assert all(c.overrides[-1] == "device=cpu" for c in with_set)


def test_bad_options_are_refused_in_one_line(tmp_path):
    for args, needle in ((["fig99"], "unknown figure"), (["fig7", "--scale", "huge"], "--scale"),
                         (["fig7", "--seeds", "0"], "--seeds"), (["fig7", "--jobs", "0"], "--jobs"),
                         (["fig7", "--emit", "pbs"], "--emit"), (["fig7", "--cell", "10"], "--cell"),
                         (["fig7", "--draw-only"], "not done")):
        code, _, err = cli("reproduce", *args, "--out", tmp_path / "r", "--quiet")
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, (args, err)


def test_emit_slurm_writes_an_array_of_one_task_per_cell(tmp_path):
    code, out, err = cli("reproduce", "fig7", "--scale", "paper", "--out", tmp_path, "--emit", "slurm")
    assert code == 0, err
    array = (tmp_path / "fig7.slurm.sh").read_text()
    assert "--array=0-19" in array and '--cell "$SLURM_ARRAY_TASK_ID"' in array and "--emit" not in array
    assert "--draw-only" in (tmp_path / "fig7.draw.sh").read_text()
    assert not (tmp_path / "cells").exists()  # nothing run


def _fabricate_cells(cells: list[Cell], out: Path, scale_of) -> None:
    """Results files where the cells would write them; ``scale_of(cell)`` sets how far the telescoping
    model and the linearisation stray from the network (test_plots.fabricate)."""
    for i, c in enumerate(cells):
        c.folder(out).mkdir(parents=True, exist_ok=True)
        fabricate(c.results(out), cfg={"name": c.name, "seed": c.seed}, seed=i, scale=scale_of(c))


def test_claims_hold_or_not_on_results_whose_answer_is_known(tmp_path):
    fig7 = expand(get("fig7"), "small", 2, [])
    # test_plots.fabricate: linearisation 1000× farther from the network than the telescoping model,
    # except for the momentum setting where the two are made equal here
    _fabricate_cells(fig7, tmp_path, lambda c: 1.0)
    import h5py

    for c in fig7:
        if c.tags["setting"] == "SGD + momentum":
            with h5py.File(c.results(tmp_path), "a") as f:
                f["test/approx_error_linearized"][...] = f["test/approx_error_telescoped"][...]
    claims = {c["claim"].split(":")[0]: c for c in approximation.claims_settings(fig7, tmp_path)}
    assert [k for k, c in claims.items() if not c["holds"]] == ["SGD + momentum"]
    assert claims["SGD"]["numbers"]["ratio"] == pytest.approx(
        np.mean([h5py.File(c.results(tmp_path))["test/approx_error_linearized"][-1] for c in fig7[:2]])
        / np.mean([h5py.File(c.results(tmp_path))["test/approx_error_telescoped"][-1] for c in fig7[:2]]))
    doc = reproduce("fig7", out=tmp_path, draw_only=True, progress=False)
    assert (tmp_path / "fig7.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "claims.json").read_text())["fig7"]["holding"] == doc["holding"] == 4
    reproduce("fig8", out=tmp_path, draw_only=True, progress=False)  # the same cells: both figures' claims kept
    assert sorted(json.loads((tmp_path / "claims.json").read_text())) == ["fig7", "fig8"]
    acc = approximation.claims_accuracy(fig7, tmp_path)
    assert len(acc) == 10 and all(isinstance(c["holds"], bool) for c in acc)


def test_the_sweep_claims_read_the_learning_rates(tmp_path):
    cells = expand(get("fig2"), "small", 1, [])
    _fabricate_cells(cells, tmp_path, lambda c: c.tags["lr"] * (30 if c.tags["setting"] == "AdamW" else 1))
    claims = approximation.claims_sweep(cells, tmp_path)
    grows = [c for c in claims if "smaller for smaller" in c["claim"]]
    assert len(grows) == 2 and all(c["holds"] for c in grows)  # error ∝ γ in both
    adamw = [c for c in claims if c["claim"].startswith("AdamW needs")]
    assert len(adamw) == 1 and adamw[0]["holds"]  # at γ = 1e-3 AdamW's error is 30× SGD's
    approximation.draw_sweep(cells, tmp_path, tmp_path / "fig2.png")
    assert (tmp_path / "fig2.png").stat().st_size > 10_000


def test_a_grid_of_real_runs_end_to_end_and_resumed(tmp_path, monkeypatch):
    """Two tiny cells through telecli record and telescope; a rerun skips them; a cell whose results
    file is gone (a kill before it was renamed into place) is run again, the other is not touched."""
    preset = str(write_cfg(tmp_path))
    tiny = Figure("fig7", "tiny", lambda scale, seeds: [Cell(preset, (), s, tags={"setting": "SGD"})
                                                        for s in range(seeds)],
                  approximation.draw_settings, approximation.claims_settings)
    monkeypatch.setitem(FIGURES, "fig7", tiny)
    out = tmp_path / "r"
    doc = reproduce("fig7", seeds=2, jobs=2, out=out, progress=False)
    assert doc["cells"] == 2 and len(doc["claims"]) == 1 and (out / "fig7.png").is_file()
    first, second = [c.results(out) for c in tiny.grid("small", 2)]
    stamp = second.stat().st_mtime_ns
    first.unlink()
    again = reproduce("fig7", seeds=2, jobs=1, out=out, progress=False)
    assert first.is_file() and second.stat().st_mtime_ns == stamp
    assert again["claims"] == doc["claims"]  # the same numbers: a cell is a function of its settings
    with pytest.raises(TelecliError, match="--cell"):
        reproduce("fig7", seeds=2, out=out, cell=2, progress=False)


def _grokking_file(path: Path, eps: float, seed: int) -> None:
    """A lens.h5 with the curves of polynomial grokking whose timing scales with 1/ε: the training loss
    falls at step ~30, the test loss at ~30/ε²·0.04 and p^train − p^test opens at ~20/ε; for the
    smallest ε the test loss first rises and p^test starts above p^train."""
    import h5py

    steps = np.unique(np.round(np.logspace(0, 4, 60))).astype(np.int64)
    t = steps.astype(float)
    train = 1 / (1 + (t / 30) ** 2)
    t_test = 30 * 0.04 / eps**2
    bump = 0.5 * np.exp(-((np.log(t) - np.log(t_test / 4)) ** 2)) if eps < 0.1 else 0.0
    test = (1 + bump) / (1 + (t / t_test) ** 2)
    p_train = 100 * t / (t + 20 / eps)
    p_test = p_train - 40 * t / (t + 400 / eps) + (8 * np.exp(-t / 50) if eps < 0.1 else 0.0)
    with h5py.File(path, "w") as f:
        f["steps"] = steps
        f.attrs["n_train"] = 275
        for name, v in (("train/loss_actual", train), ("test/loss_actual", test),
                        ("train/effective_parameters", p_train), ("test/effective_parameters", p_test)):
            f[name] = v * (1 + 1e-3 * seed)
        for split in ("train", "test"):
            f[f"{split}/error_actual"] = np.full(len(steps), np.nan)  # regression: no error rate


def test_the_grokking_claims_read_the_timings(tmp_path):
    from telecli.reproduce import grokking

    cells = expand(get("fig11"), "small", 2, [])
    assert {c.tags["epsilon"] for c in cells} == {0.05, 0.2, 0.5}
    assert all(("train.steps=9000" in c.overrides) == (c.tags["epsilon"] == 0.05) for c in cells)
    for c in cells:
        c.folder(tmp_path).mkdir(parents=True)
        _grokking_file(c.results(tmp_path), c.tags["epsilon"], c.seed)
    claims = grokking.claims(cells, tmp_path)
    assert [c["holds"] for c in claims] == [True, True, True, True], claims
    opens = claims[0]["numbers"]
    assert opens["ε=0.05"] > opens["ε=0.2"] > opens["ε=0.5"]
    grokking.draw(cells, tmp_path, tmp_path / "fig11.png")
    assert (tmp_path / "fig11.png").stat().st_size > 10_000


def test_the_standard_init_claims(tmp_path):
    """Train and test error halve at steps 40 and 60 (together) without sigmoid; with it the test error
    lags 5× (apart) but p^test ends lower: the first claim holds, the second does not, the third holds."""
    import h5py

    from telecli.reproduce import grokking

    cells = expand(get("fig13"), "small", 2, [])
    assert [c.tags["setting"] for c in cells] == ["no sigmoid"] * 2 + ["sigmoid"] * 2
    steps = np.arange(0, 1001, 10)
    for c in cells:
        c.folder(tmp_path).mkdir(parents=True)
        lag = 1.5 if c.tags["setting"] == "no sigmoid" else 5.0
        with h5py.File(c.results(tmp_path), "w") as f:
            f["steps"] = steps
            f["train/error_actual"] = 0.5 * (steps < 40) + 0.1 * (steps >= 40)
            f["test/error_actual"] = 0.5 * (steps < 40 * lag) + 0.15 * (steps >= 40 * lag)
            f["test/effective_parameters"] = steps / (20.0 if c.tags["setting"] == "no sigmoid" else 40.0)
    claims = grokking.standard_claims(cells, tmp_path)
    assert [c["holds"] for c in claims] == [True, False, True], claims
    assert claims[0]["numbers"]["train_halved_step"] == 40 and claims[1]["numbers"]["test_halved_step"] == 200
