"""MNIST from the standard IDX files (method.md §2, §3.2, §3.4–3.5: 3-vs-5, downsampled to 8×8).

``task.root`` is a directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or gzipped (``.gz``); the
``train-images.idx3-ubyte`` spelling and torchvision's ``<root>/MNIST/raw`` layout are accepted too.
The IDX format is parsed here with numpy: a big-endian int32 magic number (2051 = 0x00000803 for
images, 2049 = 0x00000801 for labels), one big-endian int32 per dimension, then unsigned bytes.

Preprocessing: pixels / 255 → [0, 1]; the fixed 60,000/10,000 train/test split of MNIST; then
``task.downsample`` = s > 0 resizes 28×28 → s×s by **area averaging** with
``torch.nn.functional.adaptive_avg_pool2d`` (identical to ``interpolate(mode="area")``): output
pixel i averages input rows ⌊28·i/s⌋ … ⌈28·(i+1)/s⌉−1 (likewise columns), i.e. exact 4×4 block
means for s = 7 and overlapping 4-pixel windows for s = 8. The paper does not say how it
downsampled (method.md §8.3); this is our documented choice.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from telecli.config import TaskConfig
from telecli.data.labels import finish_classification, select_classes
from telecli.errors import TelecliError

FILES = {
    "train_images": ("train-images-idx3-ubyte", 2051),
    "train_labels": ("train-labels-idx1-ubyte", 2049),
    "test_images": ("t10k-images-idx3-ubyte", 2051),
    "test_labels": ("t10k-labels-idx1-ubyte", 2049),
}
DOWNLOAD = "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of yann.lecun.com/exdb/mnist)"


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (raw or .gz) and check its magic number and size."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise TelecliError(f"cannot read {path}: {e} (re-download the file)") from None
    if len(raw) < 4:
        raise TelecliError(f"{path} is truncated ({len(raw)} bytes; re-download the file)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise TelecliError(
            f"{path}: wrong IDX magic number, expected {magic} (0x{magic:08x}), found {found} (0x{found:08x}); "
            "is this the right (uncompressed or .gz) MNIST file?"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise TelecliError(f"{path} is truncated: header needs {header} bytes, file has {len(raw)} (re-download it)")
    dims = [int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise TelecliError(
            f"{path} is {what}: dims {dims} need {expected} bytes, found {len(raw)} (re-download the file)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, name: str) -> Path:
    dotted = name.replace("-idx", ".idx")
    for folder in (root, root / "MNIST" / "raw"):
        for cand in (name, name + ".gz", dotted, dotted + ".gz"):
            if (folder / cand).is_file():
                return folder / cand
    raise TelecliError(f"mnist: file {name} (or {name}.gz) not found in {root} (download it from {DOWNLOAD})")


def _file_info(path: Path) -> dict:
    data = path.read_bytes()
    return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def area_downsample(images: np.ndarray, side: int) -> np.ndarray:
    """(n, C, H, W) float64 → (n, C, side, side) by area averaging (torch adaptive_avg_pool2d)."""
    if side <= 0 or (images.shape[-2], images.shape[-1]) == (side, side):
        return images
    import torch
    import torch.nn.functional as F

    block = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64))
    return F.adaptive_avg_pool2d(block, side).numpy()


def to_inputs(images: np.ndarray, cfg: TaskConfig, chunk: int = 4096) -> np.ndarray:
    """uint8 (n, C, H, W) → float64 in [0, 1], area-downsampled, flattened or (n, C, s, s)."""
    if cfg.downsample < 0:
        raise TelecliError(f"{cfg.name}: downsample must be >= 0 (0 keeps the native size), got {cfg.downsample}")
    side = cfg.downsample or images.shape[-1]
    x = np.empty(images.shape[:2] + (side, side), dtype=np.float64)
    for i in range(0, len(images), chunk):  # chunks bound the float64 copy of the native images
        x[i : i + chunk] = area_downsample(images[i : i + chunk].astype(np.float64) / 255.0, side)
    return x.reshape(len(x), -1) if cfg.flatten else x


def load(cfg: TaskConfig):
    """MNIST as a :class:`~telecli.data.Task`: pair (``classes=[3, 5]`` → 0/1) or all 10 classes."""
    if not cfg.root or not Path(cfg.root).expanduser().is_dir():
        got = f" ({cfg.root} is not a directory)" if cfg.root else ""
        raise TelecliError(
            "mnist needs task.root = a directory with the IDX files train-images-idx3-ubyte, "
            f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz){got} "
            f"(download from {DOWNLOAD})"
        )
    root = Path(cfg.root).expanduser()
    paths = {key: _find(root, name) for key, (name, _) in FILES.items()}
    arrays = {key: read_idx(paths[key], FILES[key][1]) for key in FILES}
    for part in ("train", "test"):
        imgs, labs = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if len(imgs) != len(labs):
            raise TelecliError(
                f"mnist: {paths[part + '_images'].name} has {len(imgs)} images but "
                f"{paths[part + '_labels'].name} has {len(labs)} labels (re-download the files)"
            )
        if labs.size and labs.max() > 9:
            raise TelecliError(f"mnist: {paths[part + '_labels']} has label {labs.max()} > 9 (not an MNIST label file)")
    n_tr = len(arrays["train_labels"])
    images = np.concatenate([arrays["train_images"], arrays["test_images"]])[:, None]  # (n, 1, 28, 28)
    labels = np.concatenate([arrays["train_labels"], arrays["test_labels"]]).astype(np.int64)

    # Select, subset and add noise on example indices (cheap), then convert only the chosen images.
    index = np.arange(len(labels))
    index, labels, classes = select_classes(index, labels, cfg.classes, 10, "mnist")
    is_train = index < n_tr
    rng = np.random.default_rng(cfg.seed)
    info = {
        "source": "MNIST IDX files",
        "root": str(root),
        "files": {key: _file_info(p) for key, p in paths.items()},
        "available_train": int(is_train.sum()),
        "available_test": int((~is_train).sum()),
        "native_side": int(images.shape[-1]),
        "side": int(cfg.downsample or images.shape[-1]),
        "downsample": "torch adaptive_avg_pool2d (area)" if cfg.downsample else "none",
        "scaling": "pixel / 255",
        "flatten": bool(cfg.flatten),
    }
    task = finish_classification(index[is_train], labels[is_train], index[~is_train], labels[~is_train],
                                 cfg, classes, rng, info)
    task.x_train = to_inputs(images[task.x_train.astype(np.int64)], cfg)
    task.x_test = to_inputs(images[task.x_test.astype(np.int64)], cfg)
    return task
