"""CIFAR-10 from the *binary version* (method.md §3.2: cat vs dog, grayscaled, downsized to 8×8; §5).

``task.root`` is the ``cifar-10-batches-bin`` directory of ``cifar-10-binary.tar.gz`` or its parent.
Files ``data_batch_1.bin`` … ``data_batch_5.bin`` (training) and ``test_batch.bin`` (test); each
record is 1 label byte (0–9) followed by 3,072 pixel bytes: the 32×32 red, then green, then blue
plane, row-major. The pickled "python version" is never read (no pickle anywhere).

Preprocessing: pixels / 255; ``grayscale`` = mean over the RGB channels (method.md §8.3, as in the
U-turn code); ``downsample`` = s > 0 → s×s by area averaging (``adaptive_avg_pool2d``, see
:mod:`telecli.data.mnist`; exact 4×4 block means for s = 8). Classes: 3 = cat, 5 = dog.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from telecli.config import TaskConfig
from telecli.data.labels import finish_classification, select_classes
from telecli.data.mnist import to_inputs
from telecli.errors import TelecliError

TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
RECORD = 1 + 3 * 32 * 32
DOWNLOAD = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """One binary batch file → uint8 images (n, 3, 32, 32), int64 labels (n,), file info."""
    data = path.read_bytes()
    if len(data) == 0 or len(data) % RECORD:
        raise TelecliError(
            f"{path}: size {len(data)} bytes is not a positive multiple of {RECORD} (1 label + 3072 pixel bytes "
            f"per record); the file is truncated or not from the CIFAR-10 binary version ({DOWNLOAD})"
        )
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise TelecliError(f"{path}: record {bad} has label byte {labels[bad]} > 9 (corrupt file or not CIFAR-10)")
    info = {"path": str(path), "bytes": len(data), "records": len(rec), "sha256": hashlib.sha256(data).hexdigest()}
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels, info


def _find_dir(root: str) -> Path:
    base = Path(root).expanduser() if root else None
    if base is None or not base.is_dir():
        got = f" ({root} is not a directory)" if root else ""
        raise TelecliError(
            f"cifar10 needs task.root = the cifar-10-batches-bin directory (or its parent){got}; "
            f"download and unpack the binary version {DOWNLOAD}"
        )
    for folder in (base, base / "cifar-10-batches-bin"):
        if (folder / TEST_FILE).is_file() or (folder / TRAIN_FILES[0]).is_file():
            return folder
    pickled = (base / "cifar-10-batches-py").is_dir() or (base / "data_batch_1").is_file()
    hint = " (found the pickled python version; the binary version is needed)" if pickled else ""
    raise TelecliError(f"cifar10: no {TRAIN_FILES[0]} / {TEST_FILE} in {base} or {base / 'cifar-10-batches-bin'}"
                       f"{hint}; download and unpack {DOWNLOAD}")


def load(cfg: TaskConfig):
    """CIFAR-10 as a :class:`~telecli.data.Task`: pair (``classes=[3, 5]`` = cat/dog → 0/1) or all 10."""
    folder = _find_dir(cfg.root)
    batches, files = [], {}
    for name in TRAIN_FILES + [TEST_FILE]:
        if not (folder / name).is_file():
            raise TelecliError(f"cifar10: file {name} missing in {folder}; download and unpack {DOWNLOAD}")
        imgs, labs, files[name] = read_batch(folder / name)
        batches.append((imgs, labs))
    n_tr = sum(len(labs) for _, labs in batches[:-1])
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])

    # Select, subset and add noise on example indices (cheap), then convert only the chosen images.
    index, labels, classes = select_classes(np.arange(len(labels)), labels, cfg.classes, 10, "cifar10")
    is_train = index < n_tr
    info = {
        "source": "CIFAR-10 binary version",
        "root": str(folder),
        "files": files,
        "class_names": [CLASS_NAMES[c] for c in classes],
        "available_train": int(is_train.sum()),
        "available_test": int((~is_train).sum()),
        "grayscale": "mean over RGB" if cfg.grayscale else "no (RGB)",
        "native_side": 32,
        "side": int(cfg.downsample or 32),
        "downsample": "torch adaptive_avg_pool2d (area)" if cfg.downsample else "none",
        "scaling": "pixel / 255",
        "flatten": bool(cfg.flatten),
    }
    return finish_rgb(images, index, labels, is_train, classes, cfg, info)


def finish_rgb(images: np.ndarray, index: np.ndarray, labels: np.ndarray, is_train: np.ndarray, classes,
               cfg: TaskConfig, info: dict):
    """Subsets, label noise and targets on the image indices, then the images of the chosen examples as
    inputs (shared by the 32×32 RGB tasks: cifar10, svhn)."""
    rng = np.random.default_rng(cfg.seed)
    task = finish_classification(index[is_train], labels[is_train], index[~is_train], labels[~is_train],
                                 cfg, classes, rng, info)
    task.x_train = _inputs(images[task.x_train.astype(np.int64)], cfg)
    task.x_test = _inputs(images[task.x_test.astype(np.int64)], cfg)
    return task


def _inputs(images: np.ndarray, cfg: TaskConfig) -> np.ndarray:
    """uint8 (n, 3, 32, 32) → float64 inputs; grayscale as the channel mean of the [0, 1] values."""
    if not cfg.grayscale:
        return to_inputs(images, cfg)
    x = to_inputs(images, dataclasses.replace(cfg, flatten=False))
    x = x.mean(axis=1, keepdims=True)  # the RGB mean commutes with area pooling
    return x.reshape(len(x), -1) if cfg.flatten else x
