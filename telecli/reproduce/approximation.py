"""Figs. 2, 7 and 8: how well the telescoping model and the linearisation follow the network (method.md
§2): the five settings SGD, AdamW, SGD + momentum, SGD + weight decay, SGD + σ(·) (Figs. 7, 8), and a
learning-rate sweep of SGD and AdamW (Fig. 2; the paper does not state its γ, method.md §2 GAP: the
recommended sweep). Small scale: the small presets of sample_runs/ (digits 3 vs 5, width 32, 400
steps); paper scale: sample_runs/paper/ (MNIST 3 vs 5, width 200, 5000 steps, 4 seeds).

The claims (method.md §6) are tested on the test split, each number the mean over seeds:
- Fig. 7: in every setting the telescoping error is below the linearisation's by orders of magnitude
  (≥ 10× at the last step);
- Fig. 8: the telescoping model's accuracy follows the network's (largest gap over the steps ≤ 0.02)
  while the linearisation's drifts later in training (largest gap over the second half ≥ 5× that);
- Fig. 2: the error grows with γ; at a γ both use, AdamW's error is larger than SGD's (it needs a
  smaller γ); telescoping beats linearisation at every γ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from telecli.reproduce.cells import Cell
from telecli.reproduce.reading import by, seed_groups, stack

SETTINGS = (  # (the paper's name, the preset)
    ("SGD", "approx-sgd"),
    ("AdamW", "approx-adamw"),
    ("SGD + momentum", "approx-momentum"),
    ("SGD + weight decay", "approx-weight-decay"),
    ("SGD + σ(·)", "approx-sigmoid"),
)
SWEEP = {"SGD": (1e-3, 1e-2, 1e-1), "AdamW": (1e-5, 1e-4, 1e-3)}  # method.md §2 [I] recommendation
PAPER_SEEDS = 4
ORDERS = 10.0  # "by orders of magnitude": at least one
FOLLOWS = 0.02  # largest accuracy gap of a model that "is visually indistinguishable" from the network
DRIFT = 5.0  # the linearisation's gap late in training, as a multiple of the telescoping model's


def _preset(name: str, scale: str) -> str:
    return name if scale == "small" else f"paper/{name}"


def _seeds(scale: str, seeds: int) -> range:
    return range(seeds or (PAPER_SEEDS if scale == "paper" else 2))


def settings_grid(scale: str, seeds: int) -> list[Cell]:
    return [Cell(_preset(preset, scale), (), s, tags={"setting": label})
            for label, preset in SETTINGS for s in _seeds(scale, seeds)]


def sweep_grid(scale: str, seeds: int) -> list[Cell]:
    presets = dict(SETTINGS)
    return [Cell(_preset(presets[label], scale), (f"train.lr={lr:g}",), s, tags={"setting": label, "lr": lr})
            for label, lrs in SWEEP.items() for lr in lrs for s in _seeds(scale, seeds)]


# ------------------------------------------------------------------------------------------- figures

def draw_settings(cells: list[Cell], out: Path, path: Path) -> None:
    from telecli.plots.approximation import draw_panels

    with seed_groups(by(cells, "setting"), out) as groups:
        draw_panels([(name, [g], [f"{g.n} seeds" if g.n > 1 else "1 seed"]) for (name,), g in groups.items()],
                    path)


def draw_sweep(cells: list[Cell], out: Path, path: Path) -> None:
    from telecli.plots.approximation import draw_panels

    with seed_groups(by(cells, "setting", "lr"), out) as groups:
        panels: dict[str, tuple[list, list[str]]] = {}
        for (name, lr), g in groups.items():
            files, labels = panels.setdefault(name, ([], []))
            files.append(g)
            labels.append(rf"$\gamma$={lr:g}")
        draw_panels([(name, files, labels) for name, (files, labels) in panels.items()], path)


def draw_accuracy(cells: list[Cell], out: Path, path: Path) -> None:
    from telecli.plots import plot

    plot([c.results(out) for c in cells], "accuracy", out=path, labels=[c.tags["setting"] for c in cells])


# -------------------------------------------------------------------------------------------- claims

def _errors(cells: list[Cell], out: Path) -> tuple[float, float]:
    """Mean over seeds of the test approximation errors at the last step: (telescoping, linearised)."""
    d = stack(cells, out, "test/approx_error_telescoped", "test/approx_error_linearized")
    return float(d["test/approx_error_telescoped"][:, -1].mean()), float(d["test/approx_error_linearized"][:, -1].mean())


def claims_settings(cells: list[Cell], out: Path) -> list[dict]:
    claims = []
    for (name,), members in by(cells, "setting").items():
        tel, lin = _errors(members, out)
        ratio = lin / tel if tel > 0 else float("inf")
        claims.append({"claim": f"{name}: the telescoping model's test error is below the linearisation's by "
                                f"orders of magnitude (≥ {ORDERS:g}× at the last step)",
                       "numbers": {"telescoping_error": tel, "linearized_error": lin, "ratio": ratio,
                                   "seeds": len(members)},
                       "holds": bool(ratio >= ORDERS)})
    return claims


def claims_accuracy(cells: list[Cell], out: Path) -> list[dict]:
    claims = []
    for (name,), members in by(cells, "setting").items():
        d = stack(members, out, *(f"test/error_{k}" for k in ("actual", "telescoped", "linearized")), "test/index")
        err = {k: d[f"test/error_{k}"] for k in ("actual", "telescoped", "linearized")}
        gap_tel = np.abs(err["telescoped"] - err["actual"]).max(axis=1).mean()
        mean_gap_tel = np.abs(err["telescoped"] - err["actual"]).mean(axis=1).mean()
        half = err["actual"].shape[1] // 2
        gap_lin = np.abs(err["linearized"] - err["actual"])[:, half:].max(axis=1).mean()
        accuracy = 1 - err["actual"][:, -1].mean()
        claims.append({"claim": f"{name}: the telescoping model's test accuracy follows the network's (largest "
                                f"gap ≤ {FOLLOWS:g})",
                       "numbers": {"largest_gap_telescoping": float(gap_tel),
                                   "mean_gap_telescoping": float(mean_gap_tel), "final_accuracy": float(accuracy),
                                   "test_points": int(d["test/index"].shape[1]),
                                   "seeds": len(members)},
                       "holds": bool(gap_tel <= FOLLOWS)})
        claims.append({"claim": f"{name}: the linearisation's accuracy drifts from the network's later in "
                                f"training (largest gap in the second half ≥ {DRIFT:g}× the telescoping model's)",
                       "numbers": {"largest_gap_linearized_late": float(gap_lin),
                                   "largest_gap_telescoping": float(gap_tel)},
                       "holds": bool(gap_lin > 0 and gap_lin >= DRIFT * gap_tel)})
    return claims


def claims_sweep(cells: list[Cell], out: Path) -> list[dict]:
    claims = []
    tel_at: dict[tuple[str, float], float] = {}
    for (name, lr), members in by(cells, "setting", "lr").items():
        tel, lin = _errors(members, out)
        tel_at[(name, lr)] = tel
        claims.append({"claim": f"{name} γ={lr:g}: telescoping beats linearisation by orders of magnitude",
                       "numbers": {"telescoping_error": tel, "linearized_error": lin, "ratio": lin / tel},
                       "holds": bool(lin >= ORDERS * tel)})
    for name, lrs in SWEEP.items():
        errs = [tel_at[(name, lr)] for lr in lrs]
        claims.append({"claim": f"{name}: the telescoping error is smaller for smaller γ",
                       "numbers": {f"γ={lr:g}": e for lr, e in zip(lrs, errs)},
                       "holds": bool(np.all(np.diff(errs) > 0))})
    common = sorted(set(SWEEP["SGD"]) & set(SWEEP["AdamW"]))
    for lr in common:
        a, s = tel_at[("AdamW", lr)], tel_at[("SGD", lr)]
        claims.append({"claim": f"AdamW needs a smaller γ than SGD: at γ={lr:g} its telescoping error is larger",
                       "numbers": {"adamw": a, "sgd": s}, "holds": bool(a > s)})
    return claims


def _figures():
    from telecli.reproduce import Figure

    return (
        Figure("fig2", "Approximation quality of SGD and AdamW across learning rates", sweep_grid, draw_sweep,
               claims_sweep),
        Figure("fig7", "Approximation quality in all five settings (SGD, AdamW, momentum, weight decay, sigmoid)",
               settings_grid, draw_settings, claims_settings),
        Figure("fig8", "Test accuracy of the telescoping model and the linearisation against the network",
               settings_grid, draw_accuracy, claims_accuracy),
    )


FIGURES = _figures()
