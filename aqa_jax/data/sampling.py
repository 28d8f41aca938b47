"""Clip samplers: which frame indices of a video make a training or evaluation clip.

Pure functions of (frame count, parameters, numpy Generator) returning **0-based** frame
indices, so each official rule can be checked against hand-computed cases:

- :func:`pecop_vspp_indices` / :func:`sample_pecop_vspp` — PECoP's VSPP pace sampling
  (``datasets/ucf101.py::PECoP_SSL.loop_load_rgb``), index quirks included;
- :func:`window_ending_at` — MTL-AQA/CoRe/MUSDL's fixed 103-frame window ending at
  ``end_frame``, with the ±3 training shift;
- :func:`uniform_indices` — N frames spread uniformly over the video (JIGSAWS, 160);
- :func:`split_clips` — cut a frame sequence into 16-frame clips at the official start
  points (:data:`CLIP_STARTS`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Official clip start offsets within the sampled frames (16-frame clips).
CLIP_STARTS: dict[str, tuple[int, ...]] = {
    "core_10x16": (0, 10, 20, 30, 40, 50, 60, 70, 80, 86),  # CoRe on 103 frames (Backbone.py)
    # MUSDL on MTL-AQA's 103 frames: its last clip is ``videos[:, :, -16:]``, i.e. frame 87
    # (``opts.py`` segment_points, ``MTL-AQA/main.py``)
    "musdl_10x16": (0, 10, 20, 30, 40, 50, 60, 70, 80, 87),
    "tsa_9x16": (0, 10, 20, 30, 40, 50, 60, 70, 80),  # TSA on 96 frames
    "c3d_6x16": (0, 16, 32, 48, 64, 80),  # C3D-AVG on 96 frames
    "jigsaws_10x16": tuple(range(0, 160, 16)),  # MUSDL JIGSAWS: 10 non-overlapping on 160
}


def pecop_vspp_indices(
    num_frames: int,
    start: int,
    speed: int,
    segment: int,
    fr: int,
    *,
    clip_len: int = 32,
    max_segment: int = 4,
) -> np.ndarray:
    """0-based frame indices of one PECoP VSPP clip, exactly as the official loader reads them.

    The official loader walks 1-based frame numbers over ``num_frames`` (its list count minus
    3): positions ``(segment-1)*L/S <= i <= segment*L/S`` (inclusive, so 9 frames for segments
    1-3) advance by ``speed``, the others by ``fr``; entering the segment jumps ``speed``
    from the last normal frame, leaving it steps +1 then ``fr``; a read that would run past
    the end wraps to frame 1 (the two branches test the end differently — ``+speed`` inside
    the segment, ``+4`` outside — as the official code does).

    Args:
      num_frames: usable frame count (the official code's ``num_frames - 3``).
      start: 1-based start frame, in [1, num_frames - clip_len].
      speed: playback rate ``sr`` (1..max_sr).
      segment: 1-based segment number (1..max_segment).
      fr: the default rate (3 for PD4T gait, 1 otherwise in PECoP).
    """
    seg_first = int((segment - 1) * (clip_len / max_segment))
    seg_last = int(segment * (clip_len / max_segment))
    frames = []
    seg_base, seg_step = start, 0  # official: start_frame, idx1
    normal, offset = start, 0  # official: normal_f, idx
    for i in range(clip_len):
        if seg_first <= i <= seg_last:
            frame = seg_base + seg_step * speed
            normal, offset = frame, 1
            if seg_base + (seg_step + 1) * speed > num_frames:
                seg_base = normal = 1
                offset = seg_step = 0
            else:
                seg_step += 1
        else:
            frame = normal + offset
            seg_base, seg_step = frame, 1
            if normal + offset + 4 > num_frames:
                normal = seg_base = 1
                seg_step = offset = 0
            else:
                offset += fr
        frames.append(frame)
    return np.asarray(frames, np.int64) - 1


def sample_pecop_vspp(
    rng: np.random.Generator,
    num_frames: int,
    *,
    fr: int,
    max_sr: int = 5,
    max_segment: int = 4,
    clip_len: int = 32,
    list_offset: int = 3,
) -> tuple[np.ndarray, int, int]:
    """Draws one VSPP clip: (0-based indices, speed label ``sr-1``, segment label ``seg-1``).

    ``sr`` is uniform on 1..max_sr redrawn while it equals ``fr`` (so with fr = 3 class 2 never
    occurs), the segment uniform on 1..max_segment, the start uniform on
    [1, num_frames - list_offset - clip_len], as ``PECoP_SSL.__getitem__``.
    """
    usable = num_frames - list_offset
    if usable - clip_len < 1:
        raise ValueError(
            f"a VSPP clip of {clip_len} frames needs more than {clip_len + list_offset} "
            f"frames; this video has {num_frames}"
        )
    if not 1 <= fr <= max_sr or max_sr < 2:
        raise ValueError(f"fr={fr} must be in 1..max_sr={max_sr} and max_sr >= 2")
    speed = fr
    while speed == fr:
        speed = int(rng.integers(1, max_sr + 1))
    segment = int(rng.integers(1, max_segment + 1))
    start = int(rng.integers(1, usable - clip_len + 1))
    idx = pecop_vspp_indices(
        usable, start, speed, segment, fr, clip_len=clip_len, max_segment=max_segment
    )
    return idx, speed - 1, segment - 1


def window_ending_at(
    end_frame: int, length: int = 103, shift: int = 0, *, num_frames: int | None = None
) -> np.ndarray:
    """0-based indices of ``length`` frames ending at 1-based ``end_frame + shift`` (inclusive).

    CoRe/MUSDL read ``sorted(frames)[end - length + i]`` for i < length, i.e. the files
    numbered ``end - length + 1 .. end``; training adds ``shift`` ∈ [-3, 3]
    (``temporal_shift``). With ``num_frames`` given, a window outside the video is an error.
    """
    end = end_frame + shift
    idx = np.arange(end - length, end, dtype=np.int64)
    if idx[0] < 0 or (num_frames is not None and idx[-1] >= num_frames):
        raise ValueError(
            f"a {length}-frame window ending at frame {end} does not fit a video of "
            f"{num_frames if num_frames is not None else '?'} frames"
        )
    return idx


def uniform_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` indices spread over the whole video: ``np.linspace(0, n-1, count)`` floored.

    MUSDL's JIGSAWS loader samples 160 frames this way (``np.linspace(...).astype(int)``).
    """
    if num_frames < 1:
        raise ValueError("cannot sample frames from an empty video")
    return np.linspace(0, num_frames - 1, count).astype(np.int64)


def absolute_linspace_indices(start_frame: int, end_frame: int, count: int) -> np.ndarray:
    """TSA's sampling of a trimmed instance (``FineDiving_Pair.load_video``):
    ``np.linspace(start, end, count).astype(int) - start`` over the *absolute* frame numbers,
    as positions into the stored frames. It truncates differently from
    ``linspace(0, n - 1, count)`` for some offsets (about 1.4% of FineDiving's instances)."""
    frames = np.linspace(start_frame, end_frame, count).astype(np.int64)
    return frames - start_frame


def split_clips(indices: Sequence[int], starts: Sequence[int] | str, clip_len: int = 16) -> np.ndarray:
    """(num_clips, clip_len) array: ``indices[s : s + clip_len]`` for each start ``s``.

    ``starts`` is a list of offsets or a key of :data:`CLIP_STARTS`.
    """
    if isinstance(starts, str):
        starts = CLIP_STARTS[starts]
    indices = np.asarray(indices)
    if max(starts) + clip_len > len(indices):
        raise ValueError(
            f"clips of {clip_len} at starts up to {max(starts)} need {max(starts) + clip_len} "
            f"frames, got {len(indices)}"
        )
    return np.stack([indices[s : s + clip_len] for s in starts])
