"""The PECoP effect benchmark (benchmarks/pecop_effect.py, aqa_jax/pecop_effect.py): its tempo data, its bootstrap, and
(slow) its reduced run: the pretext learns, PECoP's removable state leaves the Kinetics-400
backbone bit-identical, and the report's table and plot are written."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from aqa_jax.data import synthetic


def _benchmark():
    import aqa_jax.pecop_effect as module

    return module


def test_tempo_video_is_steady_at_its_slowing_period_and_scored_by_it():
    video = synthetic.generate_video(0, "hand_movement", 3, 0.7, num_frames=96, size=32, tempo=True)
    assert video.score == pytest.approx(4.0 * video.factors["slowing"])
    # the same draws as generate_video: the period is 10 (1 + slowing) x U(0.95, 1.05)
    rng = np.random.default_rng([0, synthetic.TASKS.index("hand_movement"), 3])
    factors = synthetic.draw_factors(rng, 0.7)
    period = synthetic.tempo_period(rng, factors)
    assert factors == video.factors
    assert 10.0 * (1 + factors["slowing"]) * 0.95 <= period <= 10.0 * (1 + factors["slowing"]) * 1.05
    # steady: the disc's area (pixels differing from frame 0's background) repeats every period
    area = np.abs(video.frames.astype(int) - video.frames[:1].astype(int)).sum(-1).reshape(96, -1)
    spectrum = np.abs(np.fft.rfft(area.sum(1) - area.sum(1).mean()))
    peak = np.argmax(spectrum[1:]) + 1
    assert abs(96 / peak - period) < period * 0.2, (96 / peak, period)


def test_splits_have_disjoint_subjects():
    ids = {split: {v.subject for v in synthetic.generate_split(0, "hand_movement", split, num_subjects=3,
                                                              num_frames=8, size=8, tempo=True)}
           for split in ("train", "validation", "test", "unlabelled")}
    all_ids = [i for s in ids.values() for i in s]
    assert len(all_ids) == len(set(all_ids)) == 12


def test_paired_bootstrap_matches_scipy_and_brackets_the_difference():
    pe = _benchmark()
    rng = np.random.default_rng(0)
    truth = rng.normal(size=40)
    a, b = truth + 0.3 * rng.normal(size=40), truth + 1.5 * rng.normal(size=40)
    out = pe.paired_bootstrap(a, b, truth, 300)
    expected = scipy.stats.spearmanr(a, truth)[0] - scipy.stats.spearmanr(b, truth)[0]
    assert out["diff"] == pytest.approx(expected)
    assert out["lo"] < expected < out["hi"] and out["lo"] > 0  # a is clearly the better predictor


def test_ridge_probe_picks_the_penalty_on_validation():
    pe = _benchmark()
    rng = np.random.default_rng(1)
    w = rng.normal(size=5)
    feats = {k: rng.normal(size=(n, 5)) for k, n in (("train", 30), ("val", 20), ("test", 20))}
    scores = {k: v @ w for k, v in feats.items()}
    out = pe.ridge_probe(feats, scores, (1e-3, 1e6))
    assert out["alpha"] == 1e-3 and out["test_srcc"] > 0.99


@pytest.mark.slow  # ~8 min on a free 2-core CPU: 800 VSPP steps (Dom-G and PECoP, tempo 14-18)
def test_reduced_benchmark_learns_the_pretext_and_removes_cleanly(tmp_path):
    pe = _benchmark()
    setup = pe.Setup(**pe.QUICK)
    results = pe.run(setup, tmp_path)
    run = results["seeds"]["0"]
    after = run["pecop"]["pretext_after"]
    assert after["acc_speed"] >= 2 * after["chance_speed"], after
    assert after["acc_segment"] >= 2 * after["chance_segment"], after
    rows = results["forgetting"]["rows"]
    assert rows["pecop_removed"]["identical"], rows["pecop_removed"]
    assert rows["pecop_removed"]["top5_agreement"] == 1.0
    assert not rows["pecop"]["identical"]  # with its adapters it is another network
    table = (tmp_path / "table.md").read_text()
    for variant in setup.variants:
        assert pe.LABELS[variant] in table
    png = (tmp_path / "pecop_effect.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
