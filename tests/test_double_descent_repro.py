"""telecli reproduce fig3 / fig9 / fig10 (double descent, telecli/reproduce/double_descent.py): the grids at
both scales, the claims on fabricated results files whose answer is known, the figure drawn from them;
and, with TELECLI_FINDINGS=1, each small figure run for real with its claims asserted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from telecli.reproduce import double_descent as dd
from telecli.reproduce import get
from telecli.reproduce.runner import expand, reproduce


def test_the_grids_are_the_papers_at_paper_scale():
    for fig, widths in (("fig3", dd.PAPER_WIDTHS), ("fig9", dd.PAPER_WIDTHS), ("fig10", dd.PAPER_WIDTHS_MNIST1D)):
        cells = expand(get(fig), "paper", 0, [])
        columns = 2 if fig == "fig9" else 1
        assert len(cells) == columns * len(widths) * 4
        assert sorted({c.tags["width"] for c in cells}) == sorted(widths)
        assert all(c.preset.startswith("paper/") and c.telescope == ("--effective-params",) for c in cells)
    assert len(dd.PAPER_WIDTHS) == 22 and len(dd.PAPER_WIDTHS_MNIST1D) == 14
    small = expand(get("fig10"), "small", 2, [])
    assert max(c.tags["width"] for c in small) == 400 and all("--probes" in c.telescope for c in small)
    clean = [c for c in expand(get("fig9"), "small", 2, []) if c.tags["column"] == "no label noise"]
    assert clean and all("task.label_noise=0" in c.overrides for c in clean)
    # the small Fig. 3 is Fig. 9's noisy column: the same cells
    noisy = {c.digest() for c in expand(get("fig9"), "small", 2, []) if c.tags["column"] != "no label noise"}
    assert {c.digest() for c in expand(get("fig3"), "small", 2, [])} == noisy


def _fabricate(cells, out: Path, *, descent: bool = True, p_test_falls: bool = True, clean_peak: bool = False):
    """lens.h5 files with the final values of a double-descent sweep whose answer is known: threshold at
    width 20 (100 % training accuracy from there on); test MSE 0.05 at width 1, a peak of 0.10 at the
    threshold, then down to 0.06 (``descent``) or flat; p_train rising; p_test rising to the threshold then
    falling (``p_test_falls``) or still rising. The "no label noise" column: test MSE falling throughout
    (or with the same peak, ``clean_peak``). Seed s scales everything by 1 + 0.002 s."""
    import h5py

    for c in cells:
        w, s = float(c.tags["width"]), c.seed
        clean = c.tags["column"] == "no label noise"
        lw, l20 = np.log(w), np.log(20.0)
        if clean and not clean_peak:
            test = 0.05 / (1 + lw)
        elif w <= 20:
            test = 0.05 + 0.05 * lw / l20
        else:
            test = 0.10 - (0.04 * (lw - l20) / (np.log(400) - l20) if descent else 0.0)
        p_train = 200 * w / (w + 20)
        p_test = p_train if w <= 20 else (100 * (20 / w) ** 0.3 if p_test_falls else p_train * 1.05)
        train_err = 0.0 if w >= 20 else 0.1
        steps = np.array([0, 500, 1000])
        c.folder(out).mkdir(parents=True, exist_ok=True)
        with h5py.File(c.results(out), "w") as f:
            f["steps"] = steps
            f.attrs["n_train"] = 200
            for name, v in (("train/loss_actual", 0.05 / w), ("test/loss_actual", test),
                            ("train/error_actual", train_err), ("test/error_actual", 0.2),
                            ("train/effective_parameters", p_train), ("test/effective_parameters", p_test)):
                f[name] = np.array([np.nan, v * 2, v * (1 + 0.002 * s)])  # the final value is read


def test_the_claims_hold_on_a_known_double_descent(tmp_path):
    cells = expand(get("fig10"), "small", 2, [])
    _fabricate(cells, tmp_path)
    claims = dd.claims_of("fig10")(cells, tmp_path)
    assert [c["holds"] for c in claims] == [True, True, True], claims
    assert claims[0]["numbers"]["threshold_width"] == 20 and claims[0]["numbers"]["peak_width"] == 20
    assert claims[0]["numbers"]["fall_after_peak"] == pytest.approx(0.04 * 1.001, rel=1e-3)
    doc = reproduce("fig10", out=tmp_path, draw_only=True, progress=False)
    assert doc["holding"] == 3 and (tmp_path / "fig10.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "claims.json").read_text())["fig10"]["claims"][0]["numbers"]["threshold_width"] == 20


def test_the_claims_fail_where_the_curves_do(tmp_path):
    cells = expand(get("fig10"), "small", 2, [])
    _fabricate(cells, tmp_path, descent=False, p_test_falls=False)
    claims = dd.claims_of("fig10")(cells, tmp_path)
    assert [c["holds"] for c in claims] == [False, True, False], claims
    # no width reaches 100 % training accuracy: no threshold, the claims that need one do not hold
    table = dd.table(cells, tmp_path)
    col = next(iter(table.values()))
    col["train/error_actual"]["values"][...] = 0.05
    assert dd.threshold(col) is None and not dd.p_test_decreasing(col, "x")["holds"]
    assert dd.double_descent(col)[0] is False


def test_fig9_without_noise_must_show_no_double_descent(tmp_path):
    cells = expand(get("fig9"), "small", 2, [])
    _fabricate(cells, tmp_path)
    claims = {c["claim"].split(":")[0] + ("/dd" if "descent" in c["claim"].split(":")[1] else ""): c["holds"]
              for c in dd.claims_of("fig9")(cells, tmp_path)}
    assert claims["20 % label noise/dd"] and claims["no label noise/dd"]  # peak with noise; none without
    _fabricate(cells, tmp_path / "peaked", clean_peak=True)
    claims = dd.claims_of("fig9")(cells, tmp_path / "peaked")
    assert not next(c for c in claims if c["claim"].startswith("no label noise: no double"))["holds"]
    dd.draw_of("fig9")(cells, tmp_path, tmp_path / "fig9.png")
    assert (tmp_path / "fig9.png").stat().st_size > 10_000


def test_p_train_drops_within_the_tolerance_are_noise(tmp_path):
    cells = expand(get("fig10"), "small", 2, [])
    _fabricate(cells, tmp_path)
    col = next(iter(dd.table(cells, tmp_path).values()))
    p = col["train/effective_parameters"]
    p["mean"][5] = p["mean"][4] - 1.0  # a drop of 1 …
    p["se"][4] = p["se"][5] = 1.0  # … within 2 s.e. of the difference (2.83)
    assert dd.p_train_monotone(col, "x")["holds"]
    p["se"][4] = p["se"][5] = 0.1
    claim = dd.p_train_monotone(col, "x")
    assert not claim["holds"] and claim["numbers"]["largest_drop_at_width"] == col["width"][5]


# What holds at small scale (2 seeds, measured with telecli reproduce; the numbers are in claims.json and
# the notes of the presets): the claims listed hold and are asserted; the others are reported, not asserted —
# fig10: p_test falls past the threshold (135 → 121) but rises again to 131 at width 400, and the test-MSE
# fall after the peak is within 2 s.e.; fig9/fig3 (digits, threshold width 100, only width 200 past it): no
# second descent of the test MSE (flat from width 20), p_test 147 → 155 from width 100 to 200; without noise
# p_train drops 3.9 from width 100 to 200 and p_test does not fall.
HOLDS_AT_SMALL_SCALE = {
    "fig10": ("p_train increases monotonically",),
    "fig9": ("20 % label noise: p_train increases monotonically", "no label noise: no double descent"),
    "fig3": ("p_train increases monotonically",),
}


@pytest.mark.skipif(not os.environ.get("TELECLI_FINDINGS"), reason="minutes per figure; set TELECLI_FINDINGS=1")
@pytest.mark.parametrize("figure", ["fig10", "fig9", "fig3"])
def test_the_small_figures_claims(figure, tmp_path_factory):
    """Every claim of the figure is tested on the numbers (true or false, with them); those that hold at
    small scale (HOLDS_AT_SMALL_SCALE) hold."""
    out = Path(os.environ.get("TELECLI_FINDINGS_DIR") or tmp_path_factory.mktemp("dd")) / "double-descent"
    doc = reproduce(figure, scale="small", seeds=2, jobs=2, out=out, progress=False)
    assert (out / f"{figure}.png").is_file() and doc["validity"]["settings"]
    assert all(isinstance(c["holds"], bool) and c["numbers"] for c in doc["claims"])
    for needle in HOLDS_AT_SMALL_SCALE[figure]:
        claim = next(c for c in doc["claims"] if needle in c["claim"])
        assert claim["holds"], claim
