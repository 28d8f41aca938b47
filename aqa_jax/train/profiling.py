"""A profiler trace of a window of training steps (``config.profile_steps``).

``profile_steps=(10, 15)`` starts ``jax.profiler`` before step 10 is dispatched and stops it
once step 15 has finished, writing the trace under the run's TensorBoard directory
(``<workdir>/tensorboard/plugins/profile/<time>/``): ``tensorboard --logdir
<workdir>/tensorboard`` shows it in its Profile tab (with ``tensorboard-plugin-profile``
installed), and Perfetto (ui.perfetto.dev) opens its ``.trace.json.gz``. Each step is a
``StepTraceAnnotation("train")`` and its input a ``TraceAnnotation("input")``, so the trace
separates waiting for data from the step itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import jax


class ProfileWindow:
    """Starts and stops the trace around steps ``first``..``last`` (inclusive)."""

    def __init__(self, steps: Sequence[int] | None, log_dir: Path | str, *, enabled: bool = True):
        self.window: tuple[int, int] | None = None
        self.log_dir = Path(log_dir)
        self.active = False
        if steps is None or len(steps) == 0 or not enabled:
            return
        if len(steps) != 2 or not all(isinstance(s, int) and s >= 1 for s in steps) or steps[0] > steps[1]:
            raise ValueError(f"profile_steps={tuple(steps)!r}: give (first, last) steps, "
                             "1 <= first <= last, e.g. (10, 15)")
        self.window = (int(steps[0]), int(steps[1]))

    def before(self, step: int) -> None:
        if self.window and step == self.window[0]:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.log_dir), create_perfetto_trace=True)
            self.active = True

    def after(self, step: int, outputs: Any) -> None:
        if self.active and step == self.window[1]:
            jax.block_until_ready(outputs)
            self.close()
            print(f"profile of steps {self.window[0]}-{self.window[1]} written under "
                  f"{self.log_dir / 'plugins' / 'profile'}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
