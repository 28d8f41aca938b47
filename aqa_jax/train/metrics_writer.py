"""Training metrics: TensorBoard event files (tensorboardX, no TensorFlow), a JSONL log, and a
learning-curve PNG.

Only process 0 writes. On resume, :class:`MetricsWriter` drops JSONL records after the
restored step (they were written by the killed run and will be written again) and tells
TensorBoard to purge its events after that step, so the logs of a resumed run equal those of
an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

JSONL = "metrics.jsonl"
CURVE_PNG = "learning_curve.png"


class MetricsWriter:
    def __init__(self, workdir: str | Path, *, enabled: bool = True, resume_step: int | None = None):
        self.workdir = Path(workdir)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / JSONL
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_jsonl(self.path) if r["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(
            str(self.workdir / "tensorboard"),
            purge_step=None if resume_step is None else resume_step + 1,
        )

    def write(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
        for key, value in values.items():
            self._tb.add_scalar(f"{split}/{key}", value, int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics JSONL file (a truncated last line, from a kill, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_learning_curves(
    records: Iterable[Mapping[str, Any]], out: str | Path,
    keys: tuple[str, ...] = ("loss", "lr"), title: str = "",
) -> Path:
    """A PNG with one panel per metric: training values per step (and their running mean),
    evaluation values per evaluation step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    eval_keys = sorted({k for r in records if r["split"] != "train" for k in r}
                       - {"step", "split", "num_samples"}, key=lambda k: (k != "srcc", k))
    panels = [("train", k) for k in keys if any(k in r for r in records if r["split"] == "train")]
    panels += [("eval", k) for k in eval_keys if not k.startswith("chance")]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.4),
                             squeeze=False)
    for ax, (split, key) in zip(axes[0], panels):
        rows = [r for r in records if (r["split"] == "train") == (split == "train") and key in r]
        steps = [r["step"] for r in rows]
        values = [r[key] for r in rows]
        if split == "train":
            ax.plot(steps, values, lw=0.8, alpha=0.5, label="per step")
            window = max(1, len(values) // 20)
            if window > 1:
                smooth = [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
                          for i in range(len(values))]
                ax.plot(steps, smooth, lw=1.6, label=f"mean of {window}")
            ax.legend(fontsize=7)
        else:
            ax.plot(steps, values, "o-", ms=3)
            if key == "srcc" and len(values) > 1:  # the official repos report the best epoch
                best = max(range(len(values)), key=lambda i: values[i])
                ax.plot(steps[best], values[best], "r*", ms=11,
                        label=f"best {values[best]:.3f} (test-selected)")
                ax.plot(steps[-1], values[-1], "ks", ms=6, label=f"last {values[-1]:.3f}")
                ax.legend(fontsize=7)
            chance = [r.get(key.replace("acc", "chance")) for r in rows]
            if key.startswith("acc") and chance and chance[-1] is not None:
                ax.axhline(chance[-1], ls="--", c="gray", lw=1, label="chance")
                ax.legend(fontsize=7)
        ax.set_title(f"{split} {key}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
