"""AQA metrics against scipy and hand-computed values."""

import numpy as np
import pytest
from scipy import stats

from aqa_jax import metrics


@pytest.mark.parametrize("seed", range(5))
def test_srcc_equals_scipy_spearmanr_with_ties(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 6, 40).astype(float)  # many ties, as integer UPDRS/GRS scores
    pred = np.round(true + rng.normal(0, 1.5, 40), 1)
    pred[:5] = pred[5]  # ties in the predictions too
    assert metrics.srcc(pred, true) == pytest.approx(stats.spearmanr(pred, true)[0], abs=1e-12)


def test_srcc_hand_cases():
    assert metrics.srcc([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert metrics.srcc([4, 3, 2, 1], [10, 20, 30, 40]) == pytest.approx(-1.0)
    # no ties: 1 - 6 * sum(d^2) / (n (n^2 - 1)); ranks (1,2,3,4) vs (2,1,4,3): sum d^2 = 4
    assert metrics.srcc([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(1 - 6 * 4 / (4 * 15))
    assert np.isnan(metrics.srcc([1, 1, 1], [1, 2, 3]))
    np.testing.assert_allclose(metrics.average_ranks([5, 1, 5, 2]), [3.5, 1, 3.5, 2])


def test_srcc_is_nan_without_a_warning_where_it_is_undefined(recwarn):
    """Constant predictions (a model that has not learnt to rank yet) are an ordinary evaluation
    outcome: NaN, and no ConstantInputWarning on every evaluation."""
    assert np.isnan(metrics.srcc([2.0] * 6, [1, 2, 3, 4, 5, 6]))
    assert np.isnan(metrics.srcc([1, 2, 3], [7, 7, 7]))
    assert np.isnan(metrics.srcc([1.0], [2.0]))
    assert not [w for w in recwarn if issubclass(w.category, stats.ConstantInputWarning)]
    # a NaN prediction makes the figure NaN (it is not ranked as the largest value)
    assert np.isnan(metrics.srcc([1.0, 2.0, np.nan, 4.0], [1, 2, 3, 4]))
    with pytest.raises(ValueError, match="1-D"):
        metrics.srcc([[1, 2], [3, 4]], [[1, 2], [3, 4]])


def test_relative_l2_uses_the_evaluated_ground_truth_range_and_is_x100():
    true, pred = np.array([60.0, 70.0, 80.0, 100.0]), np.array([62.0, 70.0, 76.0, 100.0])
    # range 40: ((2/40)^2 + 0 + (4/40)^2 + 0) / 4 * 100
    assert metrics.relative_l2(pred, true) == pytest.approx(100 * (0.0025 + 0.01) / 4)
    # invariant under one affine map of both (CoFInAl computes it on scores / 25)
    assert metrics.relative_l2(pred / 25 + 3, true / 25 + 3) == pytest.approx(metrics.relative_l2(pred, true))
    assert metrics.l2(pred, true) == pytest.approx((4 + 16) / 4)


def test_fisher_z_mean_reproduces_musdl_jigsaws_average():
    # JIGSAWS_avg.xls: S 0.71, NP 0.69, KT 0.71 -> 0.7035
    assert metrics.fisher_z_mean([0.71, 0.69, 0.71]) == pytest.approx(0.7035, abs=5e-5)
    assert metrics.fisher_z_mean([0.5]) == pytest.approx(0.5)
    assert np.isfinite(metrics.fisher_z_mean([1.0, 0.5]))


def test_interval_iou_and_tiou_thresholds():
    iou = metrics.interval_iou([[10, 20], [10, 20], [10, 20], [0, 5]], [[10, 20], [15, 25], [30, 40], [0, 10]])
    np.testing.assert_allclose(iou, [1.0, 5 / 15, 0.0, 0.5])
    assert metrics.tiou_at(iou, 0.5) == pytest.approx(0.5)
    assert metrics.tiou_at(iou, 0.75) == pytest.approx(0.25)
