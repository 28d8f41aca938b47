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
from typing import Callable, Hashable, Iterable, Mapping, TypeVar

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


def check_split_overlap(
    dataset: str,
    splits: Mapping[str, tuple[str | os.PathLike[str], Iterable[Hashable]]],
    *,
    allowed: Iterable[frozenset[str]] = (),
) -> None:
    """Refuses a sample id listed in two splits (``splits``: name -> (file, ids)), which would
    train on test samples without a word. ``allowed``: pairs of split names whose overlap the
    dataset's official release has (MTL-AQA's reduced training sets share keys with its test
    split); those are left to the builder to report."""
    allowed = {frozenset(pair) for pair in allowed}
    names = list(splits)
    for i, a in enumerate(names):
        ids_a = set(splits[a][1])
        for b in names[i + 1:]:
            if frozenset((a, b)) in allowed:
                continue
            shared = sorted(ids_a.intersection(splits[b][1]), key=str)
            if shared:
                shown = ", ".join(map(str, shared[:5])) + (", ..." if len(shared) > 5 else "")
                raise ValueError(
                    f"{dataset}: {len(shared)} sample(s) are in both the {a} split "
                    f"({splits[a][0]}) and the {b} split ({splits[b][0]}): {shown} — fix: "
                    "remove each from one of the two files (a test sample must not be trained on)")


# A decode that stops this many frames (or this fraction of them) short of the count the
# annotation or the container gives is a truncated video; containers' own counts may be
# estimates, hence the tolerance.
SHORT_FRAMES = 2
SHORT_FRACTION = 0.05


def container_frame_count(path: str | os.PathLike[str]) -> int:
    """The frame count a video's container declares (0 when it declares none)."""
    import cv2

    cap = cv2.VideoCapture(os.fspath(path))
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
    finally:
        cap.release()


def check_frame_count(decoded: int, path: str | os.PathLike[str], expected: int | None = None,
                      *, expected_from: str = "the annotation") -> None:
    """Raises a :class:`ValueError` naming the file when ``decoded`` frames fall short of
    ``expected`` (the annotation's count, where the dataset gives one) or of the count the
    container declares: a truncated video decodes its first frames and then stops without
    an error, and would otherwise be stored short (issue 17 item 6)."""
    for count, source in ((expected, expected_from),
                          (container_frame_count(path), "its container header")):
        if count and count - decoded > max(SHORT_FRAMES, SHORT_FRACTION * count):
            raise ValueError(f"{path}: decoding stopped after {decoded} of the {count} frames "
                             f"{source} gives (truncated or damaged video)")
