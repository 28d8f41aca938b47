"""Progress of long work: a tqdm bar on a terminal, ``logging`` lines everywhere else.

A bar redraws itself with carriage returns, which a log file or a CI console keeps as hundreds
of lines. So the bar is shown only when stderr is a TTY; otherwise every ``log_every``
updates (by default about 20 lines a run) and at the end one ``logging.info`` line carries
the same position, rate and metrics. ``AQA_JAX_PROGRESS=bar|log|off`` overrides the choice.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

log = logging.getLogger("aqa_jax")
T = TypeVar("T")
MODES = ("bar", "log", "off")


def mode() -> str:
    """``bar`` on a terminal, ``log`` otherwise, unless ``$AQA_JAX_PROGRESS`` says which."""
    chosen = os.environ.get("AQA_JAX_PROGRESS", "").strip().lower()
    if chosen in MODES:
        return chosen
    stream = sys.stderr
    return "bar" if hasattr(stream, "isatty") and stream.isatty() else "log"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """``update(n, **metrics)`` advances by ``n``; ``close()`` ends (a context manager too).

    Args:
      total: the number of units (None: unknown).
      desc: what is progressing, e.g. ``"pecop pd4t"``.
      unit: ``step``, ``video``, ...
      initial: where a resumed run starts.
      enabled: False on processes other than the first (nothing shown).
      log_every: units between log lines (default: total / 20, at least 1).
    """

    def __init__(self, total: int | None, *, desc: str, unit: str = "step", initial: int = 0,
                 enabled: bool = True, log_every: int | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self.start_n = initial
        self.mode = mode() if enabled else "off"
        self.metrics: dict[str, Any] = {}
        self.log_every = log_every or max(1, math.ceil((total or 200) / 20))
        self.last_logged = initial
        self.tic = time.perf_counter()
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, n: int = 1, **metrics: Any) -> None:
        self.n += n
        if metrics:
            self.metrics = metrics
        if self.bar is not None:
            self.bar.update(n)
            if metrics:
                self.bar.set_postfix({k: _format(v) for k, v in metrics.items()}, refresh=False)
        elif self.mode == "log" and self.n - self.last_logged >= self.log_every:
            self._log()

    def _log(self) -> None:
        elapsed = time.perf_counter() - self.tic
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        where = f"{self.n}/{self.total}" if self.total else str(self.n)
        shown = " ".join(f"{k}={_format(v)}" for k, v in self.metrics.items())
        log.info("%s: %s %ss (%.3g %s/s)%s", self.desc, where, self.unit, rate, self.unit,
                 f" {shown}" if shown else "")
        self.last_logged = self.n

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == "log" and self.n != self.last_logged:
            self._log()
        self.mode = "off"

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def track(iterable: Iterable[T], *, desc: str, unit: str = "item", total: int | None = None,
          enabled: bool = True) -> Iterator[T]:
    """Yields ``iterable``'s items while showing their progress (see :class:`Progress`)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc=desc, unit=unit, enabled=enabled) as bar:
        for item in iterable:
            yield item
            bar.update(1)
