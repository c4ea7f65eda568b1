"""What a person reads while a stage runs: every log line once, progress that suits the output.

- `single_log_lines`: the `lightning` package gives its logger a console handler of its own
  ("INFO: ...") and lets records propagate too, so under Hydra's root handler every Lightning
  line printed twice. Where the root logger has handlers, that own handler is dropped.
- A terminal gets one progress bar per long loop (tqdm, Lightning's bar); a file or pipe
  gets a plain line every `PROGRESS_EVERY_S` seconds instead of thousands of carriage-return
  updates (`progress`, `ProgressLines`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator

import lightning as L
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 30.0


def single_log_lines() -> None:
    """Drop the `lightning` logger's own console handlers when the root logger has handlers
    (records still reach them by propagation)."""
    if not logging.getLogger().handlers:
        return
    own = logging.getLogger("lightning")
    for handler in list(own.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler,
                                                                         logging.FileHandler):
            own.removeHandler(handler)


def interactive() -> bool:
    """Whether progress goes to a terminal (tqdm and Lightning write bars to stderr)."""
    return sys.stderr.isatty()


class _Lines:
    """A plain log line at most every `every_s` seconds, and one at the end."""

    def __init__(self, desc: str, total: int | None, every_s: float):
        self.desc, self.total, self.every_s = desc, total, every_s
        self.start = self.last = time.perf_counter()

    def update(self, done: int, extra: str = "", final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self.last < self.every_s:
            return
        self.last = now
        of = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and 0 < done < self.total and not final:
            eta = f", ~{(now - self.start) * (self.total - done) / done:.0f} s left"
        log.info("%s: %d%s in %.0f s%s%s", self.desc, done, of, now - self.start, eta,
                 f" ({extra})" if extra else "")  # fmt: skip


def progress(iterable: Iterable, desc: str | None, total: int | None = None,
             unit: str = "it", every_s: float = PROGRESS_EVERY_S) -> Iterator:  # fmt: skip
    """`iterable` with a tqdm bar on a terminal, plain periodic lines otherwise; `desc`
    None: silent."""
    if desc is None:
        yield from iterable
        return
    if interactive():
        yield from tqdm(iterable, desc=desc, total=total, unit=unit)
        return
    lines, done = _Lines(f"{desc} ({unit})", total, every_s), 0
    for item in iterable:
        yield item
        done += 1
        lines.update(done)
    lines.update(done, final=True)


class ProgressLines(L.Callback):
    """Lightning's progress as plain lines (for logs in files): optimiser steps done of
    max_steps, or a GRPO module's rollouts of its max_rollouts, with the latest values of the
    metrics shown in the bar."""

    def __init__(self, desc: str, every_s: float = PROGRESS_EVERY_S):
        self.desc, self.every_s = desc, every_s
        self._lines: _Lines | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if hasattr(pl_module, "rollouts"):
            self._lines = _Lines(f"{self.desc} (rollouts)", pl_module.s.max_rollouts, self.every_s)
            return
        total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        total = int(total) if total != float("inf") else None
        self._lines = _Lines(f"{self.desc} (optimiser steps)", total, self.every_s)

    @staticmethod
    def _done(trainer, pl_module) -> int:
        return getattr(pl_module, "rollouts", trainer.global_step)

    def _extra(self, trainer) -> str:
        shown = trainer.progress_bar_metrics
        return ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(shown.items()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero and self._lines:
            self._lines.update(self._done(trainer, pl_module), self._extra(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self._lines:
            self._lines.update(self._done(trainer, pl_module), self._extra(trainer), final=True)
