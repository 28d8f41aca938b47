"""Step counts from ``*_steps`` / ``*_epochs`` config pairs, resolved in one place.

A config says how long a run is, and how often it evaluates, checkpoints and logs, either in
steps or in epochs of the training split (big_vision's ``utils.steps``): ``total_steps`` or
``total_epochs``, ``eval_every_steps`` or ``eval_every_epochs``, ``checkpoint.every_steps`` or
``checkpoint.every_epochs``, ``log_every_steps``. At most one of a pair is set (> 0); 0 or
absent means "not given". :class:`Schedule` is what the loop and the methods read, so none of
them repeats the epoch arithmetic.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

# Keys of earlier releases, with what replaced them: a config that still uses one is an error
# naming the new key, never a silently different run.
RENAMED = {
    "num_epochs": "total_epochs",
    "eval_every_steps=-1": "eval_every_epochs=1",
    "checkpoint.every_steps=0": "checkpoint.every_epochs=1",
}


def steps(config: Mapping[str, Any], name: str, steps_per_epoch: int, *,
          default: int | None = None, where: str = "config") -> int | None:
    """``config[name + "_steps"]``, or ``config[name + "_epochs"]`` x ``steps_per_epoch``
    (rounded, at least 1), or ``default`` when neither is set (> 0).

    Raises ValueError if both are set, or a value is negative.
    """
    given = {}
    for unit in ("steps", "epochs"):
        value = config.get(f"{name}_{unit}")
        if value is None:
            continue
        if value < 0:
            raise ValueError(f"{where}.{name}_{unit}={value} is negative; 0 or absent means "
                             f"not given (see aqa_jax.steps.RENAMED for the old sentinels)")
        if value > 0:
            given[unit] = value
    if len(given) == 2:
        raise ValueError(f"{where} sets both {name}_steps={given['steps']} and "
                         f"{name}_epochs={given['epochs']}: keep one")
    if "steps" in given:
        return int(given["steps"])
    if "epochs" in given:
        return max(1, round(given["epochs"] * steps_per_epoch))
    return default


def check_no_renamed_keys(config: Mapping[str, Any], where: str = "config") -> None:
    """Raises ValueError naming the replacement of a key or sentinel of earlier releases."""
    checkpoint = config.get("checkpoint") or {}
    found = []
    if config.get("num_epochs") is not None:
        found.append("num_epochs")
    if (config.get("eval_every_steps") or 0) < 0:
        found.append("eval_every_steps=-1")
    if "every_steps" in checkpoint and checkpoint.get("every_steps") == 0 and "every_epochs" not in checkpoint:
        found.append("checkpoint.every_steps=0")
    if found:
        raise ValueError(f"{where} uses " + ", ".join(f"{k} (now {RENAMED[k]})" for k in found))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A run's step arithmetic, resolved from its config and its training split's size.

    ``eval_every`` / ``checkpoint_every`` / ``log_every`` are in steps; 0 means never (the
    last step is always evaluated, checkpointed and logged).
    """

    steps_per_epoch: int
    total_steps: int
    eval_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 1

    @property
    def total_epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch

    @classmethod
    def from_config(cls, config: Mapping[str, Any], steps_per_epoch: int) -> "Schedule":
        """Resolves ``total``, ``eval_every``, ``checkpoint.every`` and ``log_every``.

        Checkpoints default to once an epoch; evaluation to the end of the run only.
        """
        check_no_renamed_keys(config)
        total = steps(config, "total", steps_per_epoch)
        if not total:
            raise ValueError("the config sets neither total_steps nor total_epochs (> 0)")
        checkpoint = config.get("checkpoint") or {}
        return cls(
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            eval_every=steps(config, "eval_every", steps_per_epoch, default=0) or 0,
            checkpoint_every=steps(checkpoint, "every", steps_per_epoch, default=steps_per_epoch,
                                   where="config.checkpoint") or 0,
            log_every=steps(config, "log_every", steps_per_epoch, default=1) or 1,
        )
