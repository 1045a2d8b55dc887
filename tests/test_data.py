"""Loaders for MNIST (IDX), CIFAR-10 (binary version), MNIST-1D and tabular files, on fabricated files."""

from __future__ import annotations

import csv
import gzip
import json
import random

import numpy as np
import pytest

from telecli.config import TaskConfig
from telecli.data import build_task
from telecli.data.mnist import read_idx
from telecli.data.tabular import read_table
from telecli.errors import TelecliError

# ----------------------------------------------------------------------------------------- MNIST

N_TR, N_TE = 200, 50  # labels cycle 0..9: 20 / 5 per class


def write_idx(path, arr, magic, gz=False):
    arr = np.asarray(arr, dtype=np.uint8)
    blob = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)
    return path


def make_mnist(folder, gz=False):
    rng = np.random.default_rng(0)
    data = {
        "train": (rng.integers(0, 256, (N_TR, 28, 28)), np.arange(N_TR) % 10),
        "t10k": (rng.integers(0, 256, (N_TE, 28, 28)), np.arange(N_TE) % 10),
    }
    folder.mkdir(exist_ok=True)
    for part, (imgs, labs) in data.items():
        write_idx(folder / f"{part}-images-idx3-ubyte", imgs, 2051, gz)
        write_idx(folder / f"{part}-labels-idx1-ubyte", labs, 2049, gz)
    return data


def mnist_cfg(root, **kw):
    return TaskConfig(name="mnist", root=str(root), **kw)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    return root, make_mnist(root)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_pair_shapes_and_native_values(tmp_path, gz):
    imgs, labs = make_mnist(tmp_path, gz)["train"]
    t = build_task(mnist_cfg(tmp_path, downsample=0, flatten=False))
    assert t.x_train.shape == (40, 1, 28, 28) and t.x_test.shape == (10, 1, 28, 28)
    assert t.x_train.dtype == np.float64 and t.y_train.shape == (40, 1)
    keep = np.isin(labs, [3, 5])  # no subset: order of the file is kept
    np.testing.assert_array_equal(t.x_train[:, 0] * 255, imgs[keep])
    np.testing.assert_array_equal(t.y_train[:, 0], (labs[keep] == 5).astype(float))  # 3 → 0, 5 → 1
    assert set(np.unique(t.y_test)) == {0.0, 1.0}
    assert t.info["files"]["train_images"]["path"].endswith(".gz") == gz
    json.dumps(t.info)


def test_mnist_downsample_is_area_average(mnist):
    root, data = mnist
    imgs = data["train"][0][np.isin(data["train"][1], [3, 5])] / 255.0
    t7 = build_task(mnist_cfg(root, downsample=7))  # 28 = 7 × 4: exact 4×4 block means
    assert t7.x_train.shape == (40, 49)
    np.testing.assert_allclose(t7.x_train, imgs.reshape(-1, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(40, 49), atol=1e-12)
    t8 = build_task(mnist_cfg(root))  # default 8×8: windows ⌊28i/8⌋ … ⌈28(i+1)/8⌉
    lo = [28 * i // 8 for i in range(8)]
    hi = [-(-28 * (i + 1) // 8) for i in range(8)]
    want = np.array([[[im[lo[r]:hi[r], lo[c]:hi[c]].mean() for c in range(8)] for r in range(8)] for im in imgs])
    np.testing.assert_allclose(t8.x_train, want.reshape(40, 64), atol=1e-12)
    assert t8.info["side"] == 8 and 0 <= t8.x_train.min() and t8.x_train.max() <= 1


def optdigits_brute(img):
    """The optdigits preprocessing of telecli.data.mnist, pixel by pixel: on = pixel ≥ 128; the on-pixels'
    bounding box stretched (nearest neighbour) to 20 wide × 32 high at columns 6..25 of a 32×32 bitmap;
    each 8×8 pixel = on-pixels in its 4×4 block / 16."""
    on = [[int(img[r][c]) >= 128 for c in range(28)] for r in range(28)]
    rows = [r for r in range(28) if any(on[r])]
    cols = [c for c in range(28) if any(on[r][c] for r in range(28))]
    out = np.zeros((8, 8))
    if not rows:
        return out
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    for y in range(32):
        for x in range(6, 26):
            if on[rows[0] + int((y + 0.5) * h / 32)][cols[0] + int((x - 6 + 0.5) * w / 20)]:
                out[y // 4, x // 4] += 1 / 16
    return out


def test_mnist_optdigits_downsample(tmp_path):
    rng = np.random.default_rng(1)
    imgs = np.zeros((10, 28, 28), dtype=np.uint8)
    imgs[0, 4:24, 10:18] = 200  # a filled 20 × 8 rectangle ...
    imgs[0, 2, 2] = imgs[0, 26, 26] = 127  # ... and two pixels below the threshold (outside its box)
    imgs[1, 9, 17] = 255  # one on-pixel: fills the whole 20 × 32 box
    # imgs[2] stays empty
    for k in range(3, 10):  # random blobs of random size and place
        r, c = rng.integers(0, 20, 2)
        h, w = rng.integers(1, 28 - r), rng.integers(1, 28 - c)
        imgs[k, r:r + h, c:c + w] = rng.integers(0, 256, (h, w))
    for part in ("train", "t10k"):
        write_idx(tmp_path / f"{part}-images-idx3-ubyte", imgs, 2051)
        write_idx(tmp_path / f"{part}-labels-idx1-ubyte", np.arange(10), 2049)
    t = build_task(mnist_cfg(tmp_path, classes=[], flatten=False, downsample_mode="optdigits"))
    assert t.x_train.shape == (10, 1, 8, 8) and "optdigits" in t.info["downsample"]
    np.testing.assert_allclose(t.x_train[:, 0], np.stack([optdigits_brute(im) for im in imgs]), atol=1e-12)
    np.testing.assert_array_equal(t.x_test, t.x_train)
    box = np.array([0, 0.5, 1, 1, 1, 1, 0.5, 0])  # columns 6..25: blocks 1 and 6 half, 2..5 whole
    np.testing.assert_array_equal(t.x_train[0, 0], np.tile(box, (8, 1)))
    np.testing.assert_array_equal(t.x_train[1, 0], np.tile(box, (8, 1)))
    np.testing.assert_array_equal(t.x_train[2, 0], 0)
    assert np.all(t.x_train * 16 == np.round(t.x_train * 16))  # counts 0..16
    area = build_task(mnist_cfg(tmp_path, classes=[], flatten=False))  # the default is unchanged
    np.testing.assert_allclose(area.x_train[0, 0, 1, 2], imgs[0, 3:7, 7:11].mean() / 255, atol=1e-12)
    with pytest.raises(TelecliError, match="downsample = 8"):
        build_task(mnist_cfg(tmp_path, downsample=7, downsample_mode="optdigits"))


def test_mnist_all_classes_one_hot_and_subsets(mnist):
    root, data = mnist
    t = build_task(mnist_cfg(root, classes=[]))
    assert t.y_train.shape == (N_TR, 10) and t.y_test.shape == (N_TE, 10)
    np.testing.assert_array_equal(t.y_train.argmax(1), data["train"][1])
    t = build_task(mnist_cfg(root, one_hot=True, n_train=12, n_test=6))
    assert t.x_train.shape == (12, 64) and t.y_train.shape == (12, 2) and t.x_test.shape == (6, 64)
    np.testing.assert_array_equal(t.y_train.sum(1), 1.0)
    with pytest.raises(TelecliError, match="n_train"):
        build_task(mnist_cfg(root, n_train=41))
    with pytest.raises(TelecliError, match="classes"):
        build_task(mnist_cfg(root, classes=[3, 11]))


def test_mnist_label_noise_exact_and_train_only(mnist):
    root, _ = mnist
    clean = build_task(mnist_cfg(root, seed=3))
    noisy = build_task(mnist_cfg(root, seed=3, label_noise=0.25))
    np.testing.assert_array_equal(clean.x_train, noisy.x_train)
    np.testing.assert_array_equal(clean.y_test, noisy.y_test)
    assert int((clean.y_train != noisy.y_train).sum()) == 10 == noisy.info["n_noisy"]  # 25 % of 40


def test_mnist_determinism(mnist):
    root, _ = mnist
    a, b = (build_task(mnist_cfg(root, n_train=10, n_test=5, label_noise=0.2, seed=1)) for _ in range(2))
    c = build_task(mnist_cfg(root, n_train=10, n_test=5, label_noise=0.2, seed=2))
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.x_train, c.x_train)


def test_mnist_errors(tmp_path):
    with pytest.raises(TelecliError, match="task.root"):
        build_task(mnist_cfg(""))
    with pytest.raises(TelecliError, match="not a directory"):
        build_task(mnist_cfg(tmp_path / "nope"))
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(TelecliError, match="t10k-labels-idx1-ubyte"):
        build_task(mnist_cfg(tmp_path))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(N_TE) % 10, 2051)  # image magic on labels
    with pytest.raises(TelecliError, match="expected 2049.*found 2051"):
        build_task(mnist_cfg(tmp_path))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(N_TE - 1) % 10, 2049)  # one label short
    with pytest.raises(TelecliError, match="49 labels"):
        build_task(mnist_cfg(tmp_path))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(TelecliError, match="truncated"):
        read_idx(path, 2051)
    with pytest.raises(TelecliError, match="truncated"):
        build_task(mnist_cfg(tmp_path))


# -------------------------------------------------------------------------------------- CIFAR-10

REC = 50  # records per fabricated file; labels cycle 0..9


def make_cifar(root):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = np.arange(REC) % 10
        pixels = rng.integers(0, 256, (REC, 3, 32, 32))
        rec = np.concatenate([labels[:, None], pixels.reshape(REC, -1)], axis=1).astype(np.uint8)
        (folder / name).write_bytes(rec.tobytes())
        out[name] = (pixels, labels)
    return folder, out


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return make_cifar(tmp_path_factory.mktemp("cifar"))


def cifar_cfg(root, **kw):
    return TaskConfig(name="cifar10", root=str(root), **kw)


def test_cifar_grayscale_pair_and_downsample(cifar):
    folder, data = cifar
    train_px = np.concatenate([data[f"data_batch_{i}.bin"][0] for i in range(1, 6)]) / 255.0
    train_lab = np.concatenate([data[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    keep = np.isin(train_lab, [3, 5])
    t = build_task(cifar_cfg(folder.parent, downsample=0, flatten=False))  # parent directory accepted
    assert t.x_train.shape == (50, 1, 32, 32) and t.x_test.shape == (10, 1, 32, 32)
    np.testing.assert_allclose(t.x_train[:, 0], train_px[keep].mean(axis=1), atol=1e-12)  # grayscale = RGB mean
    np.testing.assert_array_equal(t.y_train[:, 0], (train_lab[keep] == 5).astype(float))
    assert t.info["class_names"] == ["cat", "dog"]
    t8 = build_task(cifar_cfg(folder))  # the batches directory itself; default 8×8, flattened
    want = train_px[keep].mean(axis=1).reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(50, 64)
    np.testing.assert_allclose(t8.x_train, want, atol=1e-12)
    rgb = build_task(cifar_cfg(folder, grayscale=False, flatten=False, classes=[]))
    assert rgb.x_train.shape == (5 * REC, 3, 8, 8) and rgb.y_train.shape == (5 * REC, 10)
    assert rgb.x_test.shape == (REC, 3, 8, 8)
    json.dumps(t8.info)


def test_cifar_errors(tmp_path):
    with pytest.raises(TelecliError, match="cifar-10-batches-bin"):
        build_task(cifar_cfg(tmp_path / "missing"))
    with pytest.raises(TelecliError, match="no data_batch_1.bin"):
        build_task(cifar_cfg(tmp_path))
    folder, _ = make_cifar(tmp_path)
    bad = folder / "data_batch_3.bin"
    blob = bad.read_bytes()
    bad.write_bytes(blob[:-5])
    with pytest.raises(TelecliError, match="multiple of 3073"):
        build_task(cifar_cfg(folder))
    bad.write_bytes(bytes([12]) + blob[1:])
    with pytest.raises(TelecliError, match="label byte 12"):
        build_task(cifar_cfg(folder))
    bad.unlink()
    with pytest.raises(TelecliError, match="data_batch_3.bin missing"):
        build_task(cifar_cfg(folder))


# -------------------------------------------------------------------------------------- MNIST-1D


def test_mnist1d_shapes_determinism_and_no_global_side_effect():
    np.random.seed(123)
    random.seed(7)
    expect_np, expect_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(7)
    a = build_task(TaskConfig(name="mnist1d", classes=[0, 1], label_noise=0.15))
    assert (np.random.rand(), random.random()) == (expect_np, expect_py)
    assert a.x_train.shape[1:] == (40,) and a.x_train.dtype == np.float64 and a.y_train.shape[1] == 1
    assert 700 < len(a.x_train) < 900 and len(a.x_train) + len(a.x_test) == 1000  # 500 per class, 80/20
    assert a.info["n_noisy"] == round(0.15 * len(a.x_train))
    b = build_task(TaskConfig(name="mnist1d", classes=[0, 1], label_noise=0.15))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    c = build_task(TaskConfig(name="mnist1d", classes=[0, 1], label_noise=0.15, seed=1))
    assert not np.array_equal(a.x_test, c.x_test)


def test_mnist1d_grows_and_unflattened():
    t = build_task(TaskConfig(name="mnist1d", classes=[0, 1], n_train=900, n_test=100, flatten=False))
    assert t.x_train.shape == (900, 1, 40) and t.x_test.shape == (100, 1, 40)
    assert t.info["num_samples"] > 5000
    t = build_task(TaskConfig(name="mnist1d", classes=[], n_train=300, n_test=50))
    assert t.y_train.shape == (300, 10)


# --------------------------------------------------------------------------------------- tabular


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_tabular_csv_errors(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["a", "city", "y"], [[1, "Paris", 2], [2, "Rome", 3]])
    with pytest.raises(TelecliError, match="column 'city'.*encode"):
        read_table(str(path), "y")
    path = write_csv(tmp_path / "u.csv", ["a", "b"], [[1, 2], [3, 4]])
    with pytest.raises(TelecliError, match=r"'price' not found.*available: a, b"):
        build_task(TaskConfig(name="tabular", root=str(path), target="price"))
    with pytest.raises(TelecliError, match="task.target"):
        build_task(TaskConfig(name="tabular", root=str(path)))
    with pytest.raises(TelecliError, match="not a file"):
        build_task(TaskConfig(name="tabular", root=str(tmp_path / "none.csv"), target="b"))


def test_tabular_csv_parquet_missing_rows_and_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = x @ [1.0, -2.0, 0.5]
    rows = [list(r) + [t] for r, t in zip(x, y)]
    rows[4][1], rows[9][3] = "", "NA"  # two rows with missing values are dropped
    path = write_csv(tmp_path / "d.csv", ["f0", "f1", "f2", "target"], rows)
    X, Y, names = read_table(str(path), "target")
    assert names == ["f0", "f1", "f2"] and X.shape == (48, 3) and Y.shape == (48,)
    np.testing.assert_allclose(Y, np.delete(y, [4, 9]))
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2], "target": y}
    pq.write_table(pa.table(cols), tmp_path / "d.parquet")
    Xp, Yp, _ = read_table(str(tmp_path / "d.parquet"), "target")
    np.testing.assert_allclose(Xp, x)
    np.testing.assert_allclose(Yp, y)
    cfg = TaskConfig(name="tabular", root=str(path), target="target", standardize=False, test_fraction=0.25)
    t = build_task(cfg)
    assert t.x_train.shape == (36, 3) and t.x_test.shape == (12, 3) and t.y_train.shape == (36, 1)
    assert t.info["n_dropped_missing"] == 2
    both = np.concatenate([t.x_train, t.x_test])
    np.testing.assert_allclose(np.sort(both, axis=0), np.sort(X, axis=0))  # a partition of the rows
    again = build_task(cfg)
    np.testing.assert_array_equal(t.x_train, again.x_train)
    other = build_task(TaskConfig(**{**cfg.__dict__, "seed": 1}))
    assert not np.array_equal(t.x_train, other.x_train)


def test_tabular_diabetes_builtin_standardised():
    from sklearn.datasets import load_diabetes

    t = build_task(TaskConfig(name="tabular", root="diabetes", n_test=100))
    assert t.x_train.shape == (309, 10) and t.x_test.shape == (100, 10) and t.y_train.shape == (309, 1)
    assert t.info["n_rows"] == 442 and len(t.info["feature_names"]) == 10
    np.testing.assert_allclose(t.x_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(t.x_train.std(axis=0), 1.0, atol=1e-12)
    assert abs(t.y_train.mean()) < 1e-12 and abs(t.y_train.std() - 1) < 1e-12
    raw = set(np.round(load_diabetes().target, 6))  # predictions map back with y_std, y_mean
    back = t.y_test[:, 0] * t.info["y_std"] + t.info["y_mean"]
    assert set(np.round(back, 6)) <= raw
    json.dumps(t.info)
    X, y, names = read_table("diabetes", "target")
    assert X.shape == (442, 10) and y.shape == (442,) and names[:3] == ["age", "sex", "bmi"]


def test_svhn_npz_and_mat(tmp_path):
    from scipy.io import savemat

    from telecli.data import svhn

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    y = np.array([10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2])
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz/train.npz", x=x, y=y)
    np.savez(tmp_path / "npz/test.npz", x=x[:4].transpose(0, 3, 1, 2), y=y[:4])
    (tmp_path / "mat").mkdir()
    savemat(tmp_path / "mat/train_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": y[:, None]})
    savemat(tmp_path / "mat/test_32x32.mat", {"X": x[:4].transpose(1, 2, 3, 0), "y": y[:4, None]})
    tasks = {}
    for kind in ("npz", "mat"):
        cfg = TaskConfig(name="svhn", root=str(tmp_path / kind), classes=[], one_hot=True,
                                    grayscale=False, downsample=0, flatten=False)
        tasks[kind] = svhn.load(cfg)
    t = tasks["npz"]
    assert t.x_train.shape == (12, 3, 32, 32) and t.y_train.shape == (12, 10) and t.x_test.shape == (4, 3, 32, 32)
    assert t.y_train[0].argmax() == 0 and t.y_train[1].argmax() == 1  # label 10 is the digit 0
    assert np.allclose(t.x_train[1], x[1].transpose(2, 0, 1) / 255.0)
    assert np.array_equal(t.x_test, tasks["mat"].x_test) and np.array_equal(t.y_train, tasks["mat"].y_train)
    with pytest.raises(TelecliError, match="task.root"):
        svhn.load(TaskConfig(name="svhn", root=str(tmp_path / "none")))
