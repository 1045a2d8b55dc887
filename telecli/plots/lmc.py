"""Linear mode connectivity (paper Fig. 6) from ``telecli lmc interpolate`` / ``lmc gradients`` files.

Panel 1: decrease in accuracy of the weight-averaged model against the spawn step t' — the maximal
decrease over α (method.md §5.2, main-text reading), mean ± s.e. over the pairs, one curve per file
(run family, e.g. random vs pretrained initialisation); the α = 0.5 reading is drawn dotted.
Panels 2, 3, …: squared change of the pre-activation gradients over the next Δ steps, by layer, against
t' (one panel per file that holds /gradients): colour runs from the first layer (dark) to the last
(light), the output layer is drawn thick in black, BatchNorm layers dashed. t' = 0 is shown on a
symmetric-log axis (linear below 1).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from telecli.errors import TelecliError
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


@style.requires("spawn_steps", hint=HINT)
def draw(files: list[h5py.File], out: Path, *, labels: list[str], names: list[str] | None = None, **_) -> None:
    names = names or [str(i) for i in range(len(files))]
    with_metrics = [i for i, f in enumerate(files) if "summary/acc_barrier_mean" in f]
    with_grads = [i for i, f in enumerate(files) if "gradients/change" in f]
    if not with_metrics and not with_grads:
        raise TelecliError(f"{names[0]} has neither /summary/acc_barrier_mean nor /gradients/change, which "
                           f"--figure lmc needs; write it with: {HINT}")
    panels = (1 if with_metrics else 0) + len(with_grads)
    colours = style.palette(len(files))
    log = max(float(np.nanmax(style.read(f, "spawn_steps"), initial=0)) for f in files) > 20  # one x scale
    with style.house_style():
        fig, axes = style.new_figure(1, panels, size=(3.6 * panels + 0.4, 3.2), squeeze=False)
        axes = list(axes[0])
        if with_metrics:
            ax = axes.pop(0)
            for i in with_metrics:
                f = files[i]
                t = style.read(f, "spawn_steps")
                keep = t >= 0
                mean = 100 * style.read(f, "summary/acc_barrier_mean")
                se = 100 * np.nan_to_num(style.read(f, "summary/acc_barrier_se"))
                mid = 100 * style.read(f, "summary/acc_gap_mid_mean")
                ax.plot(t[keep], mean[keep], marker="o", color=colours[i], label=labels[i])
                ax.fill_between(t[keep], (mean - se)[keep], (mean + se)[keep], color=style.lighter(colours[i], 0.6),
                                lw=0)
                ax.plot(t[keep], mid[keep], ls=":", color=colours[i])
            ax.plot([], [], ls=":", color=style.GRAY, label="at α = 0.5")
            _t_axis(ax, log)
            ax.axhline(0.0, color=style.GRAY, lw=0.8)
            ax.set_ylabel("accuracy decrease of the\nweight-averaged model (%)")
            ax.set_title("max over α (mean ± s.e. over pairs)", loc="left")
            style.legend(ax, loc="upper right", fontsize=6.5)
        for i, ax in zip(with_grads, axes):
            f = files[i]
            t = style.read(f, "spawn_steps")
            g = style.read(f, "gradients/change")
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
            ax.set_title(labels[i], loc="left")
            style.legend(ax, fontsize=6.5)
        style.save(fig, out)
