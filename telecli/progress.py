"""Progress for long work: a rich bar on a terminal, throttled plain lines otherwise (cluster logs)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "record") as p: p.advance(1, loss=0.3)``; silent when ``enabled`` is False."""

    def __init__(self, total: int, description: str, enabled: bool = True, every_s: float = 10.0):
        self.total, self.description, self.enabled, self.every_s = total, description, enabled, every_s
        self.done = 0
        self._bar = None
        self._last = 0.0
        self._t0 = time.monotonic()

    def __enter__(self) -> "Progress":
        if self.enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
            from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.console import Console

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False,
                console=Console(stderr=True),  # stdout carries the results (--json), even on a terminal
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, info="")
        return self

    def advance(self, n: int = 1, **info) -> None:
        self.done += n
        text = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        if self._bar is not None:
            self._bar.update(self._task, advance=n, info=text)
        elif self.enabled:
            now = time.monotonic()
            if now - self._last >= self.every_s or self.done >= self.total:
                self._last = now
                rate = self.done / max(now - self._t0, 1e-9)
                print(f"{self.description}: {self.done}/{self.total} ({rate:.1f}/s) {text}", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
