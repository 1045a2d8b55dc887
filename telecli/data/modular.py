"""Modular arithmetic (Power et al. 2022; Nanda et al. 2023), method.md §10.2: every pair (a, b) of Z_P
with target (a ∘ b) mod P for ∘ = + (``add``), − (``sub``) or · (``mul``), generated (no download).

Inputs are the three tokens "a b =" as token ids: a and b are 0..P−1, "=" is P (vocabulary P + 1).
They are stored, like every task's inputs, as float64 arrays (design.md): integers below 2^53 are
exact in float64, so the ids round-trip without loss and the transformer reads them back with
``x.long()`` (telecli.models.transformer). Targets are one-hot over the P residues, shape (n, P):
½‖f − y‖² for squared loss (as Omnigrok does for MNIST) and, for ``loss = "ce"``, cross-entropy against
the one-hot rows, which is cross-entropy with the class ids.

The split is a seeded permutation of the P² pairs (``task.seed``): the first ⌈train_fraction·P²⌉
(rounded) are training pairs, the rest test pairs; every pair is in exactly one split, and each split
lists its pairs in the order a·P + b.

>>> from telecli.config import TaskConfig
>>> t = load(TaskConfig(name="modular", modulus=5, train_fraction=0.4))
>>> t.x_train.shape, t.y_train.shape, t.x_test.shape
((10, 3), (10, 5), (15, 3))
>>> a, b, eq = t.x_train[0]; int(eq), int(t.y_train[0].argmax()) == (int(a) + int(b)) % 5
(5, True)
"""

from __future__ import annotations

import numpy as np

from telecli.config import TaskConfig
from telecli.data import Task
from telecli.errors import TelecliError

OPERATIONS = {"add": np.add, "sub": np.subtract, "mul": np.multiply}


def pairs(modulus: int, operation: str) -> tuple[np.ndarray, np.ndarray]:
    """All P² inputs "a b =" as token ids (P², 3), row a·P + b, and their residues (P²,)."""
    if operation not in OPERATIONS:
        raise TelecliError(f"modular: unknown operation '{operation}' (known: {', '.join(OPERATIONS)})")
    a, b = np.divmod(np.arange(modulus * modulus), modulus)
    tokens = np.stack([a, b, np.full_like(a, modulus)], axis=1)
    return tokens, OPERATIONS[operation](a, b) % modulus


def load(cfg: TaskConfig) -> Task:
    P = cfg.modulus
    tokens, residue = pairs(P, cfg.operation)
    n = P * P
    n_train = int(round(cfg.train_fraction * n))
    if not 1 <= n_train < n:
        raise TelecliError(f"modular: train_fraction {cfg.train_fraction:g} of {n} pairs leaves "
                           f"{n_train} training pairs; choose a fraction with 1 ≤ fraction·P² < P²")
    if cfg.n_train or cfg.n_test or cfg.label_noise or cfg.classes not in ([], [3, 5]):
        raise TelecliError("modular: the split is set by task.train_fraction; task.n_train, n_test, "
                           "label_noise and classes do not apply")
    perm = np.random.default_rng(cfg.seed).permutation(n)
    tr, te = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    y = np.eye(P, dtype=np.float64)[residue]
    x = tokens.astype(np.float64)
    info = {"source": "generated", "modulus": P, "operation": cfg.operation, "vocab": P + 1,
            "input": "token ids a, b, '=' (= P), stored as float64 integers",
            "train_fraction": cfg.train_fraction}
    return Task(x[tr], y[tr], x[te], y[te], info)
