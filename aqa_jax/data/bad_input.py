"""What builders do with bad input: fail with a precise message, or skip and report.

A builder makes each example through :meth:`BadSampleReport.run`. By default a failure raises
:class:`BadSampleError` naming the sample, the problem (with the file) and the fix; with
``skip=True`` the sample is skipped and listed in ``bad_samples.json`` written next to the
dataset — never a silent wrong sample.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


class BadSampleError(ValueError):
    """One sample of a dataset cannot be built."""

    def __init__(self, sample: str, problem: str, fix: str = ""):
        self.sample, self.problem, self.fix = sample, problem, fix
        super().__init__(f"sample {sample}: {problem}" + (f" — fix: {fix}" if fix else ""))


@dataclass
class BadSampleReport:
    """Collects skipped samples; with ``skip=False`` the first bad sample raises."""

    dataset: str
    skip: bool = False
    skipped: list[dict[str, str]] = field(default_factory=list)

    def run(self, sample: str, make: Callable[[], T], fix: str = "") -> T | None:
        """``make()`` for ``sample``; on bad input raises, or records it and returns None."""
        try:
            return make()
        except BadSampleError as err:
            error = err
        except (ValueError, KeyError, OSError, TypeError, IndexError) as err:
            error = BadSampleError(sample, f"{type(err).__name__}: {err}", fix)
        if not self.skip:
            raise error
        self.skipped.append({"sample": error.sample, "problem": error.problem, "fix": error.fix})
        return None

    def write(self, directory: str | os.PathLike[str]) -> Path | None:
        """Writes ``bad_samples.json`` into ``directory`` if anything was skipped."""
        if not self.skipped:
            return None
        path = Path(directory) / "bad_samples.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"dataset": self.dataset, "skipped": self.skipped}, indent=2))
        return path
