"""Label handling shared by the classification tasks: class pairs, 0/1 or one-hot targets, label noise."""

from __future__ import annotations

import numpy as np

from telecli.errors import TelecliError


def select_classes(x: np.ndarray, labels: np.ndarray, classes: list[int], available: int, what: str):
    """Keep the examples of ``classes`` (all when empty); return x, labels re-indexed 0..c-1."""
    if not classes:
        return x, labels.astype(np.int64), list(range(available))
    bad = [c for c in classes if not 0 <= int(c) < available]
    if bad or len(set(classes)) != len(classes):
        raise TelecliError(f"{what}: unknown or repeated classes {classes} (valid: 0..{available - 1})")
    mask = np.isin(labels, classes)
    remap = {c: i for i, c in enumerate(classes)}
    new = np.array([remap[int(v)] for v in labels[mask]], dtype=np.int64)
    return x[mask], new, list(classes)


def add_label_noise(labels: np.ndarray, fraction: float, n_classes: int, rng: np.random.Generator):
    """Replace the labels of a random ``fraction`` of examples by a different class, uniformly.

    Returns the noisy labels and the indices that were changed.
    """
    if not 0.0 <= fraction <= 1.0:
        raise TelecliError(f"label_noise must lie in [0, 1], got {fraction}")
    labels = labels.copy()
    n_flip = int(round(fraction * len(labels)))
    if n_flip == 0 or n_classes < 2:
        return labels, np.zeros(0, dtype=np.int64)
    idx = np.sort(rng.choice(len(labels), size=n_flip, replace=False))
    shift = rng.integers(1, n_classes, size=n_flip)
    labels[idx] = (labels[idx] + shift) % n_classes
    return labels, idx.astype(np.int64)


def encode(labels: np.ndarray, n_classes: int, one_hot: bool) -> np.ndarray:
    """Targets of shape (n, k): 0/1 in one column for a pair, else one-hot."""
    if n_classes == 2 and not one_hot:
        return labels.astype(np.float64)[:, None]
    out = np.zeros((len(labels), n_classes), dtype=np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def split(n: int, n_test: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def finish_classification(x_tr, lab_tr, x_te, lab_te, cfg, classes, rng, info):
    """Subset sizes, label noise on training labels, target encoding; fills ``info``."""
    from telecli.data import Task

    if cfg.n_train:
        if cfg.n_train > len(lab_tr):
            raise TelecliError(f"{cfg.name}: n_train={cfg.n_train} but only {len(lab_tr)} training examples")
        keep = np.sort(rng.choice(len(lab_tr), size=cfg.n_train, replace=False))
        x_tr, lab_tr = x_tr[keep], lab_tr[keep]
    if cfg.n_test:
        if cfg.n_test > len(lab_te):
            raise TelecliError(f"{cfg.name}: n_test={cfg.n_test} but only {len(lab_te)} test examples")
        keep = np.sort(rng.choice(len(lab_te), size=cfg.n_test, replace=False))
        x_te, lab_te = x_te[keep], lab_te[keep]
    k = len(classes)
    noisy, flipped = add_label_noise(lab_tr, cfg.label_noise, k, rng)
    info.update(classes=[int(c) for c in classes], label_noise=cfg.label_noise, n_noisy=int(len(flipped)))
    return Task(
        x_train=np.ascontiguousarray(x_tr, dtype=np.float64),
        y_train=encode(noisy, k, cfg.one_hot),
        x_test=np.ascontiguousarray(x_te, dtype=np.float64),
        y_test=encode(lab_te, k, cfg.one_hot),
        info=info,
    )
