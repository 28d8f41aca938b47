"""Clip samplers against hand-computed index lists (1-based in the comments, as the sources)."""

import numpy as np
import pytest

from aqa_jax.data.sampling import (
    pecop_vspp_indices,
    sample_pecop_vspp,
    split_clips,
    uniform_indices,
    window_ending_at,
)


def test_vspp_reference_example():
    # pecop_i3d.md §2: fr=3, sr=5, segment 2, start 100 →
    # 100,103,…,121 | 126,131,…,166 | 167,170,…
    idx = pecop_vspp_indices(1000, start=100, speed=5, segment=2, fr=3) + 1
    expected = [100 + 3 * i for i in range(8)] + [126 + 5 * i for i in range(9)]
    expected += [167] + [170 + 3 * i for i in range(14)]
    assert idx.tolist() == expected


def test_vspp_first_and_last_segment():
    # segment 1: positions 0..8 at sr from the start, then +1, then fr.
    idx = pecop_vspp_indices(500, start=10, speed=2, segment=1, fr=1) + 1
    assert idx[:9].tolist() == [10, 12, 14, 16, 18, 20, 22, 24, 26]
    assert idx[9:12].tolist() == [27, 28, 29]
    # segment 4: positions 24..31 (8 frames) at sr, entered from the last normal frame + sr.
    idx = pecop_vspp_indices(500, start=10, speed=4, segment=4, fr=1) + 1
    assert idx[:24].tolist() == list(range(10, 34))
    assert idx[24:].tolist() == [37, 41, 45, 49, 53, 57, 61, 65]


def test_vspp_wraps_to_frame_one():
    # 40 usable frames, start 5, fr 1, speed 5 in segment 3 (positions 16..24):
    # normal 5..20 (16 frames), segment 25,30,35,40 — the next read (45) would pass 40 → frame 1.
    idx = pecop_vspp_indices(40, start=5, speed=5, segment=3, fr=1) + 1
    assert idx[:16].tolist() == list(range(5, 21))
    assert idx[16:21].tolist() == [25, 30, 35, 40, 1]
    # after the wrap the segment (positions up to 24 inclusive) goes on from frame 1 at +5,
    # then +1 and fr:
    assert idx[21:27].tolist() == [6, 11, 16, 21, 22, 23]
    assert idx.min() >= 1 and idx.max() <= 40  # 1-based here


def test_vspp_sampler_labels_and_ranges():
    rng = np.random.default_rng(0)
    speeds, segments = set(), set()
    for _ in range(300):
        idx, speed, segment = sample_pecop_vspp(rng, 120, fr=3)
        speeds.add(speed)
        segments.add(segment)
        assert idx.shape == (32,) and idx.min() >= 0 and idx.max() < 117
    assert speeds == {0, 1, 3, 4}  # sr ≠ fr = 3, so class 2 never occurs
    assert segments == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="needs more than 35"):
        sample_pecop_vspp(rng, 35, fr=1)


def test_window_ending_at():
    # CoRe: sorted(frames)[end - 103 + i] → files end-102 … end (1-based).
    idx = window_ending_at(200, 103)
    assert idx[0] + 1 == 98 and idx[-1] + 1 == 200 and len(idx) == 103
    assert (window_ending_at(200, 103, shift=-3) + 1)[-1] == 197
    with pytest.raises(ValueError):
        window_ending_at(50, 103)
    with pytest.raises(ValueError):
        window_ending_at(200, 103, shift=3, num_frames=200)


def test_uniform_and_clip_split():
    assert uniform_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert uniform_indices(1000, 160)[[0, -1]].tolist() == [0, 999]
    clips = split_clips(np.arange(103), "core_10x16")
    assert clips.shape == (10, 16)
    assert clips[:, 0].tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80, 86]
    assert clips[-1, -1] == 101
    assert split_clips(np.arange(96), "tsa_9x16").shape == (9, 16)
    assert split_clips(np.arange(96), "c3d_6x16")[-1, -1] == 95
    with pytest.raises(ValueError):
        split_clips(np.arange(90), "core_10x16")
