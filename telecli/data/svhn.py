"""SVHN (Street View House Numbers, cropped digits "format 2"): the pre-training task of the LMC
experiment's pretrained variant (method.md §5.2). The user supplies the files; ``task.root`` is a
directory holding one of two accepted formats (checked in this order):

1. ``train.npz`` and ``test.npz`` — NumPy archives (read with ``allow_pickle=False``) with arrays
   ``x``: uint8 images, (n, 32, 32, 3) channels-last or (n, 3, 32, 32) channels-first, and
   ``y``: integer labels (n,) in 0–9 (SVHN's label 10 for the digit 0 is read as 0). Any source can be
   converted to this, e.g. ``np.savez("train.npz", x=images, y=labels)``.
2. ``train_32x32.mat`` and ``test_32x32.mat`` — the official MATLAB files from
   http://ufldl.stanford.edu/housenumbers/ (``X``: (32, 32, 3, n) uint8, ``y``: (n, 1) with 10 = digit 0),
   read with ``scipy.io.loadmat`` (MATLAB v5 format; no pickle). ``extra_32x32.mat`` is not used.

Preprocessing as for CIFAR-10: pixels / 255, optional grayscale (mean over RGB), optional area
downsampling (``task.downsample``; 0 keeps 32×32), flattened or (C, H, W) images; ``task.classes`` /
``one_hot`` / ``n_train`` / ``n_test`` / ``label_noise`` as for the other image tasks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from telecli.config import TaskConfig
from telecli.data.cifar10 import finish_rgb
from telecli.data.labels import select_classes
from telecli.errors import TelecliError

SOURCE = "http://ufldl.stanford.edu/housenumbers/ (train_32x32.mat, test_32x32.mat)"
HELP = (f"svhn needs task.root = a directory with train.npz and test.npz (arrays x: uint8 (n, 32, 32, 3) or "
        f"(n, 3, 32, 32), y: labels 0–9) or the official train_32x32.mat and test_32x32.mat from {SOURCE}")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _labels(y: np.ndarray, path: Path) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise TelecliError(f"{path}: labels must be integers 0–9 (or 10 for the digit 0), got dtype {y.dtype}")
    y = y.astype(np.int64)
    y[y == 10] = 0
    if y.size and (y.min() < 0 or y.max() > 9):
        raise TelecliError(f"{path}: labels outside 0–9 (min {y.min()}, max {y.max()})")
    return y


def _images(x: np.ndarray, path: Path, channels_last: bool | None) -> np.ndarray:
    """→ uint8 (n, 3, 32, 32)."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TelecliError(f"{path}: images must be uint8 (0–255), got dtype {x.dtype}")
    if x.ndim != 4:
        raise TelecliError(f"{path}: images must have 4 dimensions, got shape {list(x.shape)}")
    if channels_last is None:
        channels_last = x.shape[-1] == 3 and x.shape[1] != 3
    if channels_last:
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise TelecliError(f"{path}: expected (n, 32, 32, 3) or (n, 3, 32, 32) images, got shape {list(x.shape)}")
    return np.ascontiguousarray(x)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise TelecliError(f"{path}: needs arrays 'x' (images) and 'y' (labels), found {sorted(z.files)}")
            x, y = z["x"], z["y"]
    except (ValueError, OSError) as e:
        raise TelecliError(f"{path} cannot be read as a NumPy .npz archive without pickle ({e})") from None
    images = _images(x, path, None)
    labels = _labels(y, path)
    if len(images) != len(labels):
        raise TelecliError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        raise TelecliError(f"reading {path.name} needs scipy; or convert it to train.npz/test.npz") from None
    try:
        m = loadmat(str(path), variable_names=["X", "y"])
    except (ValueError, NotImplementedError, OSError) as e:
        raise TelecliError(f"{path} cannot be read as a MATLAB v5 file ({e}); convert it to .npz (see telecli/data/svhn.py)") from None
    if "X" not in m or "y" not in m:
        raise TelecliError(f"{path}: needs variables X and y (the official SVHN format 2 files)")
    x = np.asarray(m["X"])
    if x.ndim != 4 or x.shape[2] != 3:
        raise TelecliError(f"{path}: X must be (32, 32, 3, n), got {list(x.shape)}")
    images = _images(x.transpose(3, 0, 1, 2), path, True)
    labels = _labels(m["y"], path)
    if len(images) != len(labels):
        raise TelecliError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def find_files(root: str) -> tuple[str, Path, Path]:
    base = Path(root).expanduser() if root else None
    if base is None or not base.is_dir():
        got = f" ({root} is not a directory)" if root else ""
        raise TelecliError(HELP + got)
    if (base / "train.npz").is_file() and (base / "test.npz").is_file():
        return "npz", base / "train.npz", base / "test.npz"
    if (base / "train_32x32.mat").is_file() and (base / "test_32x32.mat").is_file():
        return "mat", base / "train_32x32.mat", base / "test_32x32.mat"
    raise TelecliError(f"svhn: no train.npz + test.npz nor train_32x32.mat + test_32x32.mat in {base}; " + HELP)


def load(cfg: TaskConfig):
    """SVHN as a :class:`~telecli.data.Task` (all 10 digits by default, ``classes`` selects)."""
    kind, train_path, test_path = find_files(cfg.root)
    read = _read_npz if kind == "npz" else _read_mat
    x_tr, lab_tr = read(train_path)
    x_te, lab_te = read(test_path)
    n_tr = len(lab_tr)
    images = np.concatenate([x_tr, x_te])
    labels = np.concatenate([lab_tr, lab_te])
    index, labels, classes = select_classes(np.arange(len(labels)), labels, cfg.classes, 10, "svhn")
    is_train = index < n_tr
    info = {
        "source": f"SVHN cropped digits ({kind})",
        "root": str(Path(cfg.root).expanduser()),
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": _sha(p)} for p in (train_path, test_path)},
        "class_names": [str(c) for c in classes],
        "available_train": int(is_train.sum()),
        "available_test": int((~is_train).sum()),
        "grayscale": "mean over RGB" if cfg.grayscale else "no (RGB)",
        "native_side": 32,
        "side": int(cfg.downsample or 32),
        "scaling": "pixel / 255",
        "flatten": bool(cfg.flatten),
    }
    return finish_rgb(images, index, labels, is_train, classes, cfg, info)
