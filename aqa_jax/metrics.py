"""AQA evaluation metrics, as the official repositories compute them.

- SRCC: Spearman's rank correlation over the whole evaluated set, ties given their average rank
  (``scipy.stats.spearmanr``, which every official repository calls).
- R-ℓ2: ``100 * mean(((y - ŷ) / (max(y) - min(y)))**2)`` with the range of the *evaluated*
  ground truth (CoRe/FineDiving ``runner.py`` print it without the factor 100; papers report
  it x100, as CoFInAl's ``test.py`` computes it).
- Fisher-z averaging of correlations across classes, tasks or folds (MUSDL's
  ``JIGSAWS_avg.xls``): ``tanh(mean(artanh(rho)))``.
- tIoU of TSA's step boundaries and the share of samples above a threshold.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy import stats


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span
    (``scipy.stats.rankdata(values, method="average")``)."""
    return stats.rankdata(np.asarray(values, np.float64), method="average")


def srcc(pred: Sequence[float], true: Sequence[float]) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``): the Pearson correlation of the average-rank
    vectors of two equal-length 1-D sequences.

    NaN, without a warning, when it is undefined: either side constant (scipy's
    ``ConstantInputWarning`` is silenced: a model that predicts one score for every sample, as
    early in training, is an ordinary outcome of an evaluation, and the NaN says it), fewer
    than two samples, or a NaN in either side (scipy's ``nan_policy="propagate"``).

    Raises:
      ValueError: when the inputs are not two 1-D arrays of the same length (``spearmanr``
        would read 2-D inputs as several variables and return a matrix).
    """
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if p.shape != t.shape or p.ndim != 1:
        raise ValueError(f"srcc needs two equal-length 1-D arrays, got {p.shape} and {t.shape}")
    if len(p) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(p, t).statistic)


def relative_l2(pred: Sequence[float], true: Sequence[float]) -> float:
    """R-ℓ2 x 100 with the ground-truth range of the evaluated set (see module docstring)."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    span = float(t.max() - t.min())
    if span == 0:
        return float("nan")
    return float(100.0 * np.mean(((t - p) / span) ** 2))


def l2(pred: Sequence[float], true: Sequence[float]) -> float:
    """Mean squared error in the dataset's own units (the "L2" CoRe/TSA also log)."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    return float(np.mean((p - t) ** 2))


def fisher_z_mean(correlations: Sequence[float]) -> float:
    """``tanh(mean(artanh(rho)))``: the average correlation across tasks, classes or folds.

    Correlations of exactly ±1 are clipped to ±(1 - 1e-12) so one perfect fold does not make
    the average exactly 1.
    """
    r = np.clip(np.asarray(correlations, np.float64), -1 + 1e-12, 1 - 1e-12)
    return float(np.tanh(np.mean(np.arctanh(r))))


def interval_iou(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """1-D IoU of intervals ``[a0, a1]`` and ``[b0, b1]`` (arrays of shape (..., 2)), as TSA's
    runner computes it between ground-truth and predicted step boundaries."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inter = np.clip(np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    union = np.maximum(a[..., 1], b[..., 1]) - np.minimum(a[..., 0], b[..., 0])
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def tiou_at(iou: Sequence[float], threshold: float) -> float:
    """Share of samples whose tIoU is at least ``threshold`` (TSA's tIoU@0.5 / @0.75)."""
    return float(np.mean(np.asarray(iou) >= threshold))


def regression_report(pred: Sequence[float], true: Sequence[float]) -> dict[str, float]:
    """The standard score-regression figures of one evaluated set."""
    return {"srcc": srcc(pred, true), "r_l2": relative_l2(pred, true), "l2": l2(pred, true),
            "num_samples": float(len(np.asarray(true)))}
