"""``telecli demo`` (what ``make demo`` runs): the main job on the embedded digits data — record the
digits preset, telescope it with effective parameters, and draw the paper's figure families."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from telecli.jobs.telescope import run_telescope
from telecli.plots import plot
from telecli.train.loop import record


def preset_path(name: str) -> Path:
    """A preset shipped inside the package (telecli/presets/NAME.toml)."""
    return Path(str(resources.files("telecli") / "presets" / f"{name}.toml"))


def run_demo(out: Path, overwrite: bool = True, progress: bool = True) -> dict[str, Path]:
    out = Path(out)
    run = out / "digits-sgd"
    record(preset_path("digits-sgd"), run, overwrite=overwrite, progress=progress)
    lens = run_telescope(run, out / "lens.h5", effective_params=True, overwrite=overwrite, progress=progress)
    figures = {name: plot([lens], name, out=out / f"{name}.png") for name in ("approximation", "accuracy",
                                                                              "complexity")}
    print(f"\nDemo finished. Files under {out}/:"
          f"\n  digits-sgd/          the recorded run: θ_t for every step, B_t, γ_t (telecli info {run})"
          f"\n  lens.h5              actual, telescoped and linearised predictions, approximation errors,"
          f"\n                       smoother predictions, effective parameters p, kernel norms (docs/format.md)")
    for name, path in figures.items():
        print(f"  {path.name:<20} figure '{name}'")
    return {"run": run, "lens": lens, **figures}
