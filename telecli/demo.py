"""``telecli demo`` (what ``make demo`` runs): the main job on the embedded digits data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from telecli.train.loop import record


def preset_path(name: str) -> Path:
    """A preset shipped inside the package (telecli/presets/NAME.toml)."""
    return Path(str(resources.files("telecli") / "presets" / f"{name}.toml"))


def run_demo(out: Path, overwrite: bool = True, progress: bool = True) -> None:
    out = Path(out)
    run = out / "digits-sgd"
    record(preset_path("digits-sgd"), run, overwrite=overwrite, progress=progress)
    print(f"\nDemo finished. Files:\n  {run}/run.json            manifest (telecli info {run})"
          f"\n  {run}/data.safetensors    training and test tensors"
          f"\n  {run}/trajectory/         θ_t for every step, B_t, γ_t, optimiser state"
          f"\nCheck integrity with: telecli verify {run}")
