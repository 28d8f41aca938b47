"""The metrics of dispatched training steps, read by the host only at sync points.

JAX dispatches a jitted step and returns before it has run; reading its metrics
(``jax.device_get``) makes the host wait for it, and with it for everything before. The loop
therefore keeps each step's metrics on the device and reads them together at log,
checkpoint, evaluation and preemption steps (as big_vision's ``train.py`` does), where it
also checks every one of them for NaN/Inf: a stop names the first non-finite step, the range
of steps read with it and that step's sample ids. At most ``max_in_flight`` steps run ahead
of the host, so the prefetched batches of a fast input pipeline do not pile up in memory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import jax


class NonFiniteLossError(RuntimeError):
    """The loss, the gradients or the state became NaN/Inf; the message says where, which
    checkpoint is the last finite one and what to do."""


ADVICE = ("it is the newest checkpoint there, so rerunning resumes from it: add --force-config "
          "and a lower optimizer.lr (or an optimizer.grad_clip_norm)")


def _ids(host: Mapping[str, Any]) -> str:
    from aqa_jax.experiment import sample_ids

    return ", ".join(sample_ids(host))


class PendingSteps:
    """Steps whose metrics the host has not read yet (see the module docstring)."""

    def __init__(self, max_in_flight: int = 2):
        self.max_in_flight = max(int(max_in_flight), 1)
        self._steps: list[tuple[int, Mapping[str, jax.Array], Mapping[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, step: int, metrics: Mapping[str, jax.Array], host: Mapping[str, Any]) -> None:
        """Records a dispatched step (its metrics still on the device, its batch's host
        fields) and waits, if needed, until at most ``max_in_flight`` steps are unfinished."""
        self._steps.append((step, metrics, host))
        if len(self._steps) > self.max_in_flight:
            jax.block_until_ready(self._steps[-1 - self.max_in_flight][1]["loss"])

    def fetch_checked(self, last_good: int, checkpoints: Path | str) -> dict[str, float]:
        """Reads every pending step's metrics (waiting for them) and returns the newest
        step's as floats.

        Raises:
          NonFiniteLossError: a step's loss or gradient norm is NaN/Inf; the message names
            the first such step, the steps read together, its batch's sample ids and the last
            checkpoint verified finite (``last_good`` in ``checkpoints``).
        """
        if not self._steps:
            raise RuntimeError("no training step is pending")
        values = jax.device_get([metrics for _, metrics, _ in self._steps])
        first, last = self._steps[0][0], self._steps[-1][0]
        for (step, _, host), v in zip(self._steps, values):
            loss, grad_norm = float(v["loss"]), float(v["grad_norm"])
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                read = f"step {step}" if first == last else f"steps {first}-{last}"
                raise NonFiniteLossError(
                    f"step {step}: loss={loss} grad_norm={grad_norm} is not finite (the first "
                    f"such step of {read}, read together; this process's batch of step {step}: "
                    f"{_ids(host)}). The last checkpoint, verified finite, is step {last_good} in "
                    f"{checkpoints}; {ADVICE}, or check those samples.")
        self._steps.clear()
        return {name: float(value) for name, value in values[-1].items()}
