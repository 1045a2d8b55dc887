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

``task.downsample_mode = "optdigits"`` (with ``downsample = 8``; the default is ``"area"``) instead
makes MNIST look like scikit-learn's 8×8 digits, the UCI "optdigits": NIST's binary bitmaps, normalised
to 32×32, divided into non-overlapping 4×4 blocks, each 8×8 pixel the number of on-pixels of its block
(0..16; telecli's digits task divides by 16). MNIST's 28×28 images are anti-aliased renderings of NIST's
binary bitmaps (size-normalised to a 20×20 box, aspect ratio kept), so :func:`optdigits_downsample`
(1) binarises them at 128 (pixel / 255 ≥ 0.5), (2) crops the on-pixels' bounding box, (3) stretches it,
aspect ratio not kept, by nearest neighbour (output row r reads crop row ⌊(r + ½)·h / 32⌋, column c
reads ⌊(c + ½)·w / 20⌋) to 32 rows × 20 columns, centred in a 32×32 frame (columns 6..25), and
(4) counts the on-pixels of each 4×4 block, / 16 → [0, 1]. An image without on-pixels gives zeros.
The 20×32 box is read off scikit-learn's digits themselves (optdigits' documentation only says "normalized
bitmaps"): each of the 1,797 spans all 8 block rows, 77 % span exactly 6 block columns (block column 0
is never on, 7 in 3 % of them: a 20-pixel-wide box at columns 6..25 covers blocks 1..6) and even the
1s are 5.2 blocks wide on average, i.e. stretched to a fixed width, not scaled with the aspect ratio.
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


OPTDIGITS_FRAME, OPTDIGITS_WIDTH, OPTDIGITS_BLOCK = 32, 20, 4  # 32×32 bitmap, 20-pixel-wide box, 4×4 blocks


def optdigits_downsample(images: np.ndarray) -> np.ndarray:
    """uint8 (n, C, H, W) → float64 (n, C, 8, 8) in [0, 1] by the optdigits preprocessing of scikit-learn's
    digits (module docstring): binarise at 128, crop to the on-pixels, stretch to 20 wide × 32 high
    (nearest neighbour) centred in 32×32, count the on-pixels of each 4×4 block, / 16."""
    frame, width, block = OPTDIGITS_FRAME, OPTDIGITS_WIDTH, OPTDIGITS_BLOCK
    side, left = frame // block, (frame - width) // 2
    out = np.zeros(images.shape[:2] + (side, side), dtype=np.float64)
    rows2, cols2 = 2 * np.arange(frame) + 1, 2 * np.arange(width) + 1  # (2r + 1)·h // 2F = ⌊(r + ½)·h / F⌋
    for i, j in np.ndindex(*images.shape[:2]):
        on = images[i, j] >= 128
        r, c = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
        if not len(r):
            continue
        crop = on[r[0] : r[-1] + 1, c[0] : c[-1] + 1]
        h, w = crop.shape
        bitmap = np.zeros((frame, frame), dtype=np.int64)
        bitmap[:, left : left + width] = crop[np.ix_(rows2 * h // (2 * frame), cols2 * w // (2 * width))]
        out[i, j] = bitmap.reshape(side, block, side, block).sum(axis=(1, 3)) / block**2
    return out


def to_inputs(images: np.ndarray, cfg: TaskConfig, chunk: int = 4096) -> np.ndarray:
    """uint8 (n, C, H, W) → float64 in [0, 1], downsampled (area, or ``downsample_mode = "optdigits"``),
    flattened or (n, C, s, s)."""
    if cfg.downsample < 0:
        raise TelecliError(f"{cfg.name}: downsample must be >= 0 (0 keeps the native size), got {cfg.downsample}")
    optdigits = cfg.downsample_mode == "optdigits"
    if optdigits and cfg.downsample != OPTDIGITS_FRAME // OPTDIGITS_BLOCK:
        raise TelecliError(f"{cfg.name}: downsample_mode = \"optdigits\" makes 8×8 images (32×32 bitmaps in 4×4 "
                           f"blocks): set downsample = 8, not {cfg.downsample}")
    side = cfg.downsample or images.shape[-1]
    x = np.empty(images.shape[:2] + (side, side), dtype=np.float64)
    for i in range(0, len(images), chunk):  # chunks bound the float64 copy of the native images
        part = images[i : i + chunk]
        x[i : i + chunk] = (optdigits_downsample(part) if optdigits
                            else area_downsample(part.astype(np.float64) / 255.0, side))
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
        "downsample": ("optdigits: binarise at 128, bounding box stretched to 20×32 in a 32×32 frame, 4×4 block "
                       "counts / 16" if cfg.downsample_mode == "optdigits" else
                       "torch adaptive_avg_pool2d (area)" if cfg.downsample else "none"),
        "scaling": "on-pixel count / 16" if cfg.downsample_mode == "optdigits" else "pixel / 255",
        "flatten": bool(cfg.flatten),
    }
    task = finish_classification(index[is_train], labels[is_train], index[~is_train], labels[~is_train],
                                 cfg, classes, rng, info)
    task.x_train = to_inputs(images[task.x_train.astype(np.int64)], cfg)
    task.x_test = to_inputs(images[task.x_test.astype(np.int64)], cfg)
    return task
