"""telecli reproduce fig4 and fig12 (telecli/reproduce/grokking.py): the grids share their cells with
figs. 11 and 13, and the claims read the timings of results files whose answers are known (fabricated
in the format of docs/format.md §2). With TELECLI_FINDINGS=1 both figures run at small scale.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from telecli.reproduce import get
from telecli.reproduce import grokking
from telecli.reproduce.runner import expand, reproduce

STEPS = np.unique(np.round(np.logspace(0, 4.3, 60))).astype(np.int64)


def _write(path: Path, *, train_fit: float, test_fit: float, gap_open: float, p_end: float, classes: bool,
           seed: int, n: int = 255) -> None:
    """Train and test curves falling at ``train_fit`` / ``test_fit`` (error halving for classes, loss a
    quarter for regression), p^train − p^test crossing 5 % of n at ``gap_open``, p^test ending at ``p_end``."""
    t = STEPS.astype(float)
    path.parent.mkdir(parents=True, exist_ok=True)

    def fall(at):  # 1 → 0, at a half (classes) or a quarter (regression) of its start at ``at``
        return 1 / (1 + (1 if classes else 3) * (t / at) ** 2)

    gap = 0.05 * n * 2 * t / (t + gap_open)  # 0.05 n at t = gap_open
    with h5py.File(path, "w") as f:
        f["steps"] = STEPS
        f.attrs["n_train"] = n
        for split, at in (("train", train_fit), ("test", test_fit)):
            curve = 0.5 * fall(at)
            f[f"{split}/error_actual"] = curve if classes else np.full(len(t), np.nan)
            f[f"{split}/loss_actual"] = curve * (1 + 1e-3 * seed)
        p_test = p_end * (1 + 1e-3 * seed) * np.ones_like(t)
        f["test/effective_parameters"] = p_test
        f["train/effective_parameters"] = p_test + gap


def _check_fit(path: Path, train_fit: float, test_fit: float, classes: bool) -> None:
    """The fabricated curves do cross where _write says (within one logarithmic output step)."""
    with h5py.File(path, "r") as f:
        kind = "error" if classes else "loss"
        got = grokking.fit_steps(f["steps"][...], f[f"train/{kind}_actual"][...], f[f"test/{kind}_actual"][...],
                                 classes)
    assert got[0] == pytest.approx(train_fit, rel=0.25) and got[1] == pytest.approx(test_fit, rel=0.25)


def test_fig4_shares_the_cells_of_figs_11_and_13():
    fig4 = {c.digest() for c in expand(get("fig4"), "small", 2, [])}
    fig11 = {c.digest() for c in expand(get("fig11"), "small", 2, []) if c.tags["epsilon"] == 0.2}
    fig13 = {c.digest() for c in expand(get("fig13"), "small", 2, [])}
    fig12 = {c.digest(): c.tags["alpha"] for c in expand(get("fig12"), "small", 2, [])}
    assert fig11 <= fig4 and fig13 <= fig4 and len(fig4) == 8
    alpha6 = {d for d, a in fig12.items() if a == 6.0}
    assert alpha6 <= fig4 and sorted(set(fig12.values())) == [5.0, 6.0, 7.0] and len(fig12) == 6
    assert len(expand(get("fig4"), "paper", 0, [])) == 16 and len(expand(get("fig12"), "paper", 0, [])) == 12


SETTINGS = {  # (column, setting) → (train fit, test fit, gap opens, p^test at the end, classes)
    ("poly", "ε = 0.2"): (400, 2500, 1300, 80.0, False),
    ("mnist", "α = 6"): (1000, 3000, 2000, 60.0, True),
    ("standard", "no sigmoid"): (100, 150, 5000, 25.0, True),
    ("standard", "sigmoid"): (100, 140, 5000, 6.0, True),
}


def test_fig4_claims_on_known_timings(tmp_path):
    cells = expand(get("fig4"), "small", 2, [])
    for c in cells:
        tr, te, gap, p, classes = SETTINGS[(c.tags["column"], c.tags["setting"])]
        _write(c.results(tmp_path), train_fit=tr, test_fit=te, gap_open=gap, p_end=p, classes=classes, seed=c.seed)
    _check_fit(cells[0].results(tmp_path), 400, 2500, False)
    _check_fit(cells[2].results(tmp_path), 1000, 3000, True)
    claims = grokking.fig4_claims(cells, tmp_path)
    assert [c["holds"] for c in claims] == [True, True, True, True, True], claims
    assert claims[1]["numbers"]["gap_open_step"] == pytest.approx(2000, rel=0.25)
    assert claims[2]["numbers"]["ratio (sigmoid)"] == pytest.approx(3000 / 140, rel=0.3)
    doc = reproduce("fig4", out=tmp_path, draw_only=True, progress=False)
    assert (tmp_path / "fig4.png").stat().st_size > 10_000 and doc["holding"] == 5
    assert json.loads((tmp_path / "claims.json").read_text())["fig4"]["validity"]["settings"] == {}


def test_fig4_claims_fail_where_the_timings_say_so(tmp_path):
    """The p-gap of α = 6 opens long before the training fit; standard init only 3× sooner and its p as
    high as α = 6's: claims 2–4 do not hold."""
    cells = expand(get("fig4"), "small", 2, [])
    bad = {**SETTINGS, ("mnist", "α = 6"): (1000, 3000, 100, 20.0, True),
           ("standard", "no sigmoid"): (300, 1000, 5000, 25.0, True)}
    for c in cells:
        tr, te, gap, p, classes = bad[(c.tags["column"], c.tags["setting"])]
        _write(c.results(tmp_path), train_fit=tr, test_fit=te, gap_open=gap, p_end=p, classes=classes, seed=c.seed)
    assert [c["holds"] for c in grokking.fig4_claims(cells, tmp_path)] == [True, False, False, False, True]


def test_fig12_claims_on_known_timings(tmp_path):
    """α = 5, 6, 7: the test error lags the training error 2×, 3×, 8×; the p-gap opens at 800, 2000,
    1500 (not later for α = 7): the first claim holds, the second does not."""
    cells = expand(get("fig12"), "small", 2, [])
    timing = {5.0: (500, 1000, 800), 6.0: (1000, 3000, 2000), 7.0: (1500, 12000, 1500)}
    for c in cells:
        tr, te, gap = timing[c.tags["alpha"]]
        _write(c.results(tmp_path), train_fit=tr, test_fit=te, gap_open=gap, p_end=50.0, classes=True, seed=c.seed)
    claims = grokking.fig12_claims(cells, tmp_path)
    assert [c["holds"] for c in claims] == [True, False], claims
    ratios = [claims[0]["numbers"][f"α={a}"] for a in (5, 6, 7)]
    assert ratios[0] < ratios[1] < ratios[2] and ratios[2] == pytest.approx(8, rel=0.4)
    grokking.fig12_draw(cells, tmp_path, tmp_path / "fig12.png")
    assert (tmp_path / "fig12.png").stat().st_size > 10_000


# ------------------------------------------------------------------------------------ findings (slow)

findings = pytest.mark.skipif(not os.environ.get("TELECLI_FINDINGS"), reason="TELECLI_FINDINGS=1 runs the figures")


@findings
@pytest.mark.parametrize("figure", ["fig4", "fig12"])
def test_the_small_figure_runs_and_its_claims_are_reported(figure, tmp_path):
    """The small figure end to end (2 seeds; minutes). The claims are reported as they come out (see the
    numbers in claims.json); what is asserted is that every claim was tested and the flags summarised."""
    out = Path(os.environ.get("TELECLI_FINDINGS_OUT", tmp_path))
    doc = reproduce(figure, seeds=2, jobs=2, out=out, progress=False)
    assert (out / f"{figure}.png").is_file()
    assert all(isinstance(c["holds"], bool) for c in doc["claims"]) and len(doc["claims"]) == (5 if figure == "fig4" else 2)
    assert doc["validity"]["settings"] and doc["validity"]["flagged_fraction"] is not None
