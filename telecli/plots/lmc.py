"""Linear mode connectivity (paper Fig. 6) from ``telecli lmc interpolate`` / ``lmc gradients`` files.

Panel 1: decrease in accuracy of the weight-averaged model against the spawn step t' — the maximal
decrease over α (method.md §5.2, main-text reading), mean ± s.e. over the pairs, one curve per file
(run family, e.g. random vs pretrained initialisation); the α = 0.5 reading is drawn dotted.
Panels 2, 3, …: squared change of the pre-activation gradients over the next Δ steps, by layer, against
t' (one panel per file that holds /gradients): colour runs from the first layer (dark) to the last
(light), the output layer is drawn thick in black, BatchNorm layers dashed. t' = 0 is shown on a
symmetric-log axis (linear below 1).

:func:`draw_families` draws the same panels for families of files (e.g. the outer seeds of one
initialisation, as ``telecli reproduce fig6`` does): panel 1 pools the pairs of all files of a family
(mean ± s.e. over seeds × pairs, the paper's 9 values), the gradient panels average the files.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from telecli.errors import TelecliError
from telecli.lens.stats import mean_se
from telecli.plots import style

HINT = "telecli lmc interpolate SPAWN_DIR (or telecli lmc gradients RUN --at …)"


def _strings(f: h5py.File, name: str) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in f[name][...]]


def _t_axis(ax, log: bool) -> None:
    ax.set_xlabel("spawn step t′")
    if log:
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
    ax.margins(x=0.03)


def _output_layer(names: list[str], kinds: list[str]) -> int:
    """The last linear layer (the readout), else the last layer."""
    linear = [i for i, k in enumerate(kinds) if k == "linear"]
    return linear[-1] if linear else len(names) - 1


def _same_steps(members: list[h5py.File], names: list[str]) -> np.ndarray:
    t = style.read(members[0], "spawn_steps")
    for f, name in zip(members[1:], names[1:]):
        other = style.read(f, "spawn_steps")
        if other.shape != t.shape or not np.array_equal(other, t):
            raise TelecliError(f"{name}: spawn steps {other.tolist()} differ from {names[0]}'s {t.tolist()} in the "
                               f"same family; spawn both at the same --at")
    return t


def family_barrier(members: list[h5py.File], metric: str = "acc_barrier") -> tuple[np.ndarray, np.ndarray]:
    """Mean and s.e. over the pairs of all files (S,) of /metrics/METRIC (S, K) (s.e. 0 for one value);
    a single file without /metrics gives its /summary."""
    if len(members) == 1 and f"metrics/{metric}" not in members[0]:
        f = members[0]
        return style.read(f, f"summary/{metric}_mean"), np.nan_to_num(style.read(f, f"summary/{metric}_se"))
    rows = np.concatenate([style.read(f, f"metrics/{metric}") for f in members], axis=1)
    return mean_se(rows, axis=1, single=0.0)


def _has_barrier(members: list[h5py.File]) -> bool:
    return all("metrics/acc_barrier" in f for f in members) or (
        len(members) == 1 and "summary/acc_barrier_mean" in members[0])


def family_gradients(members: list[h5py.File]) -> np.ndarray:
    """/gradients/change (S, L) averaged over the files (NaN where every file has NaN)."""
    with np.errstate(invalid="ignore"):
        return mean_se(np.stack([style.read(f, "gradients/change") for f in members]), axis=0)[0]


@style.requires("spawn_steps", hint=HINT)
def draw(files: list[h5py.File], out: Path, *, labels: list[str], names: list[str] | None = None, **_) -> None:
    names = names or [str(i) for i in range(len(files))]
    draw_families({label: [f] for label, f in zip(labels, files)}, out,
                  names={label: [n] for label, n in zip(labels, names)})


def draw_families(families: dict[str, list[h5py.File]], out: Path, *, names: dict[str, list[str]] | None = None,
                  se_over: str = "pairs") -> None:
    """Fig. 6 with one curve (panel 1) and one gradient panel per family of files (label → files)."""
    names = names or {label: [f"{label} {i}" for i in range(len(m))] for label, m in families.items()}
    labels = list(families)
    with_metrics = [k for k in labels if _has_barrier(families[k])]
    with_grads = [k for k in labels if all("gradients/change" in f for f in families[k])]
    if not with_metrics and not with_grads:
        first = names[labels[0]][0]
        raise TelecliError(f"{first} has neither /metrics/acc_barrier nor /gradients/change, which "
                           f"--figure lmc needs; write it with: {HINT}")
    steps = {k: _same_steps(families[k], names[k]) for k in labels}
    panels = (1 if with_metrics else 0) + len(with_grads)
    colours = dict(zip(labels, style.palette(len(labels))))
    log = max(float(np.nanmax(t, initial=0)) for t in steps.values()) > 20  # one x scale
    with style.house_style():
        fig, axes = style.new_figure(1, panels, size=(3.6 * panels + 0.4, 3.2), squeeze=False)
        axes = list(axes[0])
        if with_metrics:
            ax = axes.pop(0)
            for k in with_metrics:
                t = steps[k]
                keep = t >= 0
                mean, se = (100 * v for v in family_barrier(families[k]))
                mid = 100 * family_barrier(families[k], "acc_gap_mid")[0]
                ax.plot(t[keep], mean[keep], marker="o", color=colours[k], label=k)
                ax.fill_between(t[keep], (mean - se)[keep], (mean + se)[keep], color=style.lighter(colours[k], 0.6),
                                lw=0)
                ax.plot(t[keep], mid[keep], ls=":", color=colours[k])
            ax.plot([], [], ls=":", color=style.GRAY, label="at α = 0.5")
            _t_axis(ax, log)
            ax.axhline(0.0, color=style.GRAY, lw=0.8)
            ax.set_ylabel("accuracy decrease of the\nweight-averaged model (%)")
            ax.set_title(f"max over α (mean ± s.e. over {se_over})", loc="left")
            style.legend(ax, loc="upper right", fontsize=6.5)
        for k, ax in zip(with_grads, axes):
            f = families[k][0]
            t = steps[k]
            g = family_gradients(families[k])
            layers = _strings(f, "gradients/layers")
            kinds = _strings(f, "gradients/kind") if "gradients/kind" in f else ["layer"] * len(layers)
            out_ix = _output_layer(layers, kinds)
            import matplotlib

            cmap = matplotlib.colormaps["viridis"]
            keep = (t >= 0) & np.isfinite(g).any(axis=1)
            shown = set()
            for j, (name, kind) in enumerate(zip(layers, kinds)):
                y = style.positive(g[:, j])
                if j == out_ix:
                    continue
                label = None
                if kind not in shown:
                    label = {"batchnorm": "BatchNorm layers", "conv": "conv layers"}.get(kind, f"{kind} layers")
                    shown.add(kind)
                ax.plot(t[keep], y[keep], color=cmap(0.85 * j / max(1, len(layers) - 1)), lw=0.9,
                        ls="--" if kind == "batchnorm" else "-", alpha=0.9, label=label)
            ax.plot(t[keep], style.positive(g[:, out_ix])[keep], color="black", lw=2.2,
                    label=f"output layer ({layers[out_ix]})")
            _t_axis(ax, log)
            ax.set_yscale("log")
            delta = f.attrs.get("gradient_delta", "Δ")
            ax.set_ylabel(f"gradient change over {delta} steps\n" + r"mean $(\partial f_{t'+\Delta}-\partial f_{t'})^2$")
            n = len(families[k])
            ax.set_title(k + (f" (mean of {n} files)" if n > 1 else ""), loc="left")
            style.legend(ax, fontsize=6.5)
        style.save(fig, out)
