"""Cells of a figure's grid: one training run and its analysis, named by a hash of its settings.

A cell is a preset (a TOML file of sample_runs/, small or paper variant), ``--set`` overrides, a seed
and the options of ``telecli telescope``. Its folder ``DIR/cells/NAME-HASH`` (the hash of all of that,
as open_lth names its runs) holds ``run/`` (telecli record), ``lens.h5`` (telecli telescope) and
``cell.json`` (the settings). A cell whose ``lens.h5`` exists is done and is skipped; an interrupted
cell continues where it stopped (record --resume, the results file's partial).

>>> c = Cell("approx-sgd", ("train.lr=0.1",), 1)
>>> c.name, len(c.digest())
('approx-sgd-lr0.1-s1', 12)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from telecli.errors import TelecliError
from telecli.store.atomic import atomic_write_json

SAMPLE_RUNS = Path(__file__).resolve().parent.parent.parent / "sample_runs"


def preset_file(preset: str) -> Path:
    """sample_runs/PRESET.toml, or PRESET itself when it names a TOML file."""
    return Path(preset) if preset.endswith(".toml") else SAMPLE_RUNS / f"{preset}.toml"


@dataclass(frozen=True)
class Cell:
    preset: str  # a file of sample_runs/ without .toml (small), or "paper/NAME"
    overrides: tuple[str, ...] = ()
    seed: int = 0
    telescope: tuple[str, ...] = ()  # options of telecli telescope
    tags: dict = field(default_factory=dict, compare=False, hash=False)  # what the figure groups by

    def digest(self) -> str:
        """Hash of the settings, the preset's text included (an edited preset is a new cell)."""
        path = preset_file(self.preset)
        text = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        blob = json.dumps({"preset": self.preset, "preset_sha256": text, "overrides": list(self.overrides),
                           "seed": self.seed, "telescope": list(self.telescope)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def name(self) -> str:
        short = "-".join(o.split("=", 1)[0].split(".")[-1] + o.split("=", 1)[-1].replace('"', "")
                         for o in self.overrides)
        return "-".join(p for p in (Path(self.preset).stem if self.preset.endswith(".toml") else
                                    Path(self.preset).name, short, f"s{self.seed}") if p)

    def folder(self, out: Path) -> Path:
        return Path(out) / "cells" / f"{self.name}-{self.digest()}"

    def preset_path(self) -> Path:
        """sample_runs/PRESET.toml, or PRESET itself when it names a TOML file."""
        path = preset_file(self.preset)
        if not path.is_file():
            raise TelecliError(f"preset {path} not found: telecli reproduce reads the presets of a source "
                               f"checkout (git clone, then make install)")
        return path

    def results(self, out: Path) -> Path:
        return self.folder(out) / "lens.h5"

    def done(self, out: Path) -> bool:
        return self.results(out).is_file()

    def commands(self, out: Path) -> list[list[str]]:
        """The two telecli commands of the cell (record, then telescope), resumable as they are."""
        d = self.folder(out)
        return [self.record_command(self.preset_path(), d / "run"),
                ["telescope", str(d / "run"), "--out", str(self.results(out)), *self.telescope, "--quiet"]]

    def record_command(self, preset: Path, run: Path, extra: list[str] = ()) -> list[str]:
        """``telecli record PRESET`` into ``run`` with the cell's seed and overrides: --resume when its
        manifest exists, --overwrite when it was killed before it (nothing of it to keep)."""
        sets = [a for o in self.overrides for a in ("--set", o)]
        record = ["record", str(preset), "--out", str(run), "--seed", str(self.seed), *sets, *extra, "--quiet"]
        if (run / "run.json").is_file():
            record.append("--resume")
        elif run.exists():
            record.append("--overwrite")
        return record

    def run(self, out: Path, threads: int = 1) -> Path:
        """Record and analyse the cell (each command in a fresh process); returns its results file."""
        d = self.folder(out)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "cell.json", {**asdict(self), "digest": self.digest()})
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        for args in self.commands(out):
            if args[0] == "telescope" and self.done(out):
                break
            r = subprocess.run([sys.executable, "-m", "telecli", *args], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
                raise TelecliError(f"cell {d.name}: telecli {args[0]} failed: {last.removeprefix('telecli: error: ')}")
        return self.results(out)


__all__ = ["Cell", "SAMPLE_RUNS", "preset_file"]
