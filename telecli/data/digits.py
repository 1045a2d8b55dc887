"""scikit-learn's bundled 8×8 digits (1,797 images, no download): the embedded default task."""

from __future__ import annotations

import numpy as np

from telecli.config import TaskConfig
from telecli.data.labels import finish_classification, select_classes, split


def load(cfg: TaskConfig):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float64) / 16.0  # pixel intensities 0..16 → [0, 1]
    labels = d.target.astype(np.int64)
    x, labels, classes = select_classes(x, labels, cfg.classes, 10, "digits")
    if cfg.flatten:
        x = x.reshape(len(x), -1)
    else:
        x = x[:, None, :, :]
    rng = np.random.default_rng(cfg.seed)
    n_test = int(round(cfg.test_fraction * len(labels)))
    tr, te = split(len(labels), n_test, rng)
    info = {"source": "sklearn.datasets.load_digits", "input": "8x8 in [0,1]"}
    return finish_classification(x[tr], labels[tr], x[te], labels[te], cfg, classes, rng, info)
