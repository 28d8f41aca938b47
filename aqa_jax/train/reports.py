"""Per-sample predictions (CSV), the predicted-vs-true scatter plot, and model selection.

The official repositories report the best *test* epoch (``rho_best``); MUSDL on JIGSAWS the
mean of the last ten epochs. :func:`best_and_last` gives both the best and the last
evaluation so a report can show both and say which is which.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

PREDICTIONS_CSV = "predictions_{split}.csv"
SCATTER_PNG = "scatter_{split}.png"


def write_predictions_csv(path: str | Path, ids: Sequence[str], columns: Mapping[str, np.ndarray]) -> Path:
    """One row per sample: ``id`` then every column (floats with 6 significant digits)."""
    path = Path(path)
    names = list(columns)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *names])
        for i, sample in enumerate(ids):
            writer.writerow([sample, *(_fmt(columns[n][i]) for n in names)])
    return path


def _fmt(value: Any) -> str:
    value = np.asarray(value)
    if value.dtype.kind == "f":
        return f"{float(value):.6g}"
    return str(value.item())


def read_predictions_csv(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """(ids, columns) of a file written by :func:`write_predictions_csv`: numeric columns as
    float arrays, text columns (decoded captions) as string arrays."""
    with Path(path).open() as f:
        rows = list(csv.DictReader(f))
    names = [k for k in rows[0] if k != "id"] if rows else []

    def column(name: str) -> np.ndarray:
        values = [r[name] for r in rows]
        try:
            return np.array([float(v) for v in values])
        except ValueError:
            return np.array(values)

    return [r["id"] for r in rows], {n: column(n) for n in names}


def plot_scatter(path: str | Path, pred: np.ndarray, true: np.ndarray, *, title: str = "",
                 metrics: Mapping[str, float] | None = None) -> Path:
    """Predicted against true score, with the identity line and the figures in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.scatter(true, pred, s=18, alpha=0.75)
    lo = float(min(np.min(true), np.min(pred)))
    hi = float(max(np.max(true), np.max(pred)))
    ax.plot([lo, hi], [lo, hi], "--", c="gray", lw=1, label="predicted = true")
    if metrics:
        ax.plot([], [], " ", label=", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    ax.set_xlabel("true score")
    ax.set_ylabel("predicted score")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def best_and_last(history: Iterable[Mapping[str, Any]], key: str = "srcc") -> dict[str, Any]:
    """``{"last": ..., "best": ..., "best_step": ...}`` over evaluation records (each with a
    ``step``), best = highest ``key``; records without the key are ignored."""
    rows = [r for r in history if key in r and np.isfinite(r[key])]
    if not rows:
        return {}
    best = max(rows, key=lambda r: r[key])
    return {"last": dict(rows[-1]), "best": dict(best), "best_step": int(best["step"])}


def mean_of_last(history: Sequence[Mapping[str, Any]], key: str, count: int) -> float:
    """Mean of ``key`` over the last ``count`` evaluations (MUSDL's JIGSAWS report)."""
    values = [r[key] for r in history if key in r][-count:]
    return float(np.mean(values)) if values else float("nan")
