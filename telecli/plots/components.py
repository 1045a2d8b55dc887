"""Where each telescoping increment comes from: the per-step split of Δf̃_t(x) into the current
gradient term, the momentum carry-over, the weight-decay term and the decay of θ₀ (method.md §1.6).

y: mean |component| over the split's points and outputs, log scale; one line per component stored.
Several files: component by colour, file by line style. Runs that differ only in their seed are one
line: the mean over seeds (of each seed's mean |component|) with a ± s.e. band.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from telecli.errors import TelecliError
from telecli.plots import style
from telecli.plots.seeds import band, curve
from telecli.plots.complexity import EFFECTIVE_HINT

COMPONENTS = {  # dataset name → (legend, colour)
    "gradient": ("current gradient", "#C0392B"),
    "momentum": ("momentum carry-over", "#2E6DB4"),
    "weight_decay": ("weight decay", "#009E73"),
    "theta0_decay": (r"$\theta_0$ decay", "#7B4FA0"),
}
LINESTYLES = ["-", "--", ":", "-."]


@style.aggregates_seeds
@style.requires("steps", "{split}/components", hint=EFFECTIVE_HINT)
def draw(files: list[h5py.File], out: Path, *, labels: list[str], split: str = "test",
         names: list[str] | None = None, **_) -> None:
    names = names or labels
    single = len(files) == 1
    with style.house_style():
        fig, ax = style.new_figure(size=style.SINGLE)
        xs = [style.steps(f) for f in files]
        log_x = any(style.wants_log_x(x) for x in xs)
        seen: dict[str, tuple[str, str | None]] = {}
        for i, (f, x, name) in enumerate(zip(files, xs, names)):
            group = f[f"{split}/components"]
            present = [c for c in COMPONENTS if c in group] + sorted(c for c in group if c not in COMPONENTS)
            if not present:
                raise TelecliError(f"{name}: '{split}/components' holds no component; rerun {EFFECTIVE_HINT}")
            keep = style.step_axis(ax, x, log=log_x)
            for c in present:
                legend, colour = COMPONENTS.get(c, (c.replace("_", " "), None))
                colour = colour or style.palette(7)[len(seen) % 7]
                y, se = curve(f, lambda g, c=c: _mean_abs(g[f"{split}/components/{c}"]))
                band(ax, x[keep], y[keep], None if se is None else se[keep], colour,
                     ls=LINESTYLES[i % len(LINESTYLES)], label=legend)
                seen.setdefault(legend, (legend, colour))
        ax.set_yscale("log")
        ax.set_ylabel(f"mean |component| ({split})\n" + r"of the update $\Delta\tilde f_t(x)$")
        if single:
            ax.set_title(labels[0], loc="left")
            style.legend(ax)
        else:
            style.family_legend(ax, [v[0] for v in seen.values()], [v[1] for v in seen.values()],
                                [(lab, LINESTYLES[i % len(LINESTYLES)]) for i, lab in enumerate(labels)])
        style.save(fig, out)


def _mean_abs(dataset) -> np.ndarray:
    """Per step: mean |component| over the split's points and outputs (positive values for a log axis)."""
    y = np.abs(np.asarray(dataset[...], dtype=float))
    return style.positive(y.reshape(y.shape[0], -1).mean(axis=1))
