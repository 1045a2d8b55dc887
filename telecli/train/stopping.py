"""The paper's stopping rule for the double-descent runs (method.md §3.2, after Belkin et al. 2019 §S.3.3):
stop when the training accuracy reaches 100 %, or when the training squared loss has not improved by
more than ``tolerance`` (1e-4) for ``patience`` (500) consecutive epochs. ``train.stop = "paper"`` turns it
on (telecli.config.TrainConfig); the default "none" trains the fixed ``train.steps``.

How it is measured [I] (the paper does not say):

* once per epoch, at its last step t (t a multiple of the batches per epoch), on the **whole training
  set** with the network's current θ_t (a no-grad forward, eval mode), after the optimiser step;
* the loss is the run's training loss over all n points (lens.metrics.loss: ½‖f − y‖² per example, mean
  over the points, for ``mse``); the accuracy is lens.metrics.accuracy (one output against 0/1 targets,
  decided at 0.5 for ``mse``; argmax for k outputs); regression targets have no accuracy (NaN: only the
  loss criterion applies);
* "not improved by more than tol for P epochs" at the end of epoch e (e ≥ P) means: no epoch of the last
  P (e − P + 1 … e) has a loss below the best loss of all epochs before them (1 … e − P) by more than
  tol, i.e. ``min(L[e−P+1 .. e]) ≥ min(L[1 .. e−P]) − tol``;
* the accuracy criterion is checked first; both are checked at every epoch end, and the run then stops at
  that step T_stop (stored; the manifest's ``stopped_early`` names the step, the epoch and the reason).

The per-epoch values are recorded as per-step records (``meta.epoch_loss``, ``meta.epoch_accuracy``; NaN
at the other steps), so that a resumed run rebuilds the rule's state from the records and stops at
the same step as an uninterrupted one.

>>> rule = PaperStop(patience=2, tolerance=0.1)
>>> [rule.update(e, loss, acc) for e, (loss, acc) in enumerate([(1.0, .5), (0.95, .6), (0.92, .7), (0.5, 1.0)], 1)]
[None, None, 'no improvement', 'train accuracy 100 %']
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch

from telecli.lens.metrics import accuracy, loss

ACCURACY, PATIENCE = "train accuracy 100 %", "no improvement"
META_LOSS, META_ACCURACY = "epoch_loss", "epoch_accuracy"  # per-step records (docs/format.md)


class PaperStop:
    """The rule's state over epochs: :meth:`update` takes epoch e's training loss and accuracy and returns
    the reason to stop (``ACCURACY`` or ``PATIENCE``) or None. O(1) amortised per epoch: the best loss of
    the epochs before the window and a sliding-window minimum (monotone deque)."""

    def __init__(self, patience: int = 500, tolerance: float = 1e-4):
        self.patience, self.tolerance = int(patience), float(tolerance)
        self.epochs = 0
        self._losses: list[float] = []  # L[1 .. e] (at most 30,000 floats at paper scale)
        self._window: deque[tuple[int, float]] = deque()  # (epoch, loss) minimum candidates, increasing
        self._before = math.inf  # best loss of the epochs before the window

    def update(self, epoch: int, train_loss: float, train_accuracy: float) -> str | None:
        if epoch != self.epochs + 1:
            raise ValueError(f"epoch {epoch} after epoch {self.epochs}: the rule needs every epoch in order")
        self.epochs = epoch
        self._losses.append(float(train_loss))
        while self._window and self._window[-1][1] >= train_loss:
            self._window.pop()
        self._window.append((epoch, float(train_loss)))
        leaving = epoch - self.patience  # the epoch that has just left the window
        if leaving >= 1:
            self._before = min(self._before, self._losses[leaving - 1])
            while self._window[0][0] <= leaving:
                self._window.popleft()
        if train_accuracy == 1.0:
            return ACCURACY
        if leaving >= 1 and self._window[0][1] >= self._before - self.tolerance:
            return PATIENCE
        return None


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str) -> tuple[float, float]:
    """(training loss, training accuracy) of the whole training set at the network's current θ: one
    no-grad forward in eval mode (the model's mode is restored)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            f = model(x)
            f = f.reshape(f.shape[0], -1)
            yy = y.reshape(f.shape)
            return float(loss(f, yy, kind)), float(accuracy(f, yy, kind))
    finally:
        model.train(was)


def replay(rule: PaperStop, meta: dict[str, np.ndarray], per_epoch: int, upto: int) -> str | None:
    """Feed ``rule`` the per-epoch values recorded for the epochs that end at a step ≤ ``upto`` (a resumed
    or branched run), in order; returns the reason the rule would have stopped there (None: it would not)."""
    steps = meta.get("step", np.zeros(0))
    if META_LOSS not in meta:
        if upto >= per_epoch:
            raise ValueError("the run's per-step records hold no epoch_loss: it was recorded without the rule")
        return None
    by_step = {int(s): (float(a), float(b)) for s, a, b in zip(steps, meta[META_LOSS], meta[META_ACCURACY])}
    why = None
    for e in range(1, upto // per_epoch + 1):
        t = e * per_epoch
        if t not in by_step or math.isnan(by_step[t][0]):
            raise ValueError(f"no recorded training loss at the end of epoch {e} (step {t})")
        why = rule.update(e, *by_step[t])
    return why


__all__ = ["PaperStop", "measure", "replay", "ACCURACY", "PATIENCE", "META_LOSS", "META_ACCURACY"]
