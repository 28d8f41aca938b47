"""Per-clip I3D features of a whole dataset split, for feature-based methods (CoFInAl, GDLT).

Each video is cut into consecutive ``clip_len``-frame clips (every ``stride`` frames, the last
partial clip dropped; a video shorter than one clip is padded by repeating its last frame),
transformed with the evaluation transform of ``preset`` (centre crop, no flip) and passed
through the I3D (Kinetics-400, or a PECoP-adapted checkpoint); the pooled 1024-d feature of
each clip is kept. Output layout follows the RG / Fis-V feature releases: ``<out>/<id>.npy``
of shape (num_clips, 1024) and ``<out>/<split>.txt`` (header ``name score``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from tqdm import tqdm

from aqa_jax.data.frames import decode_frames
from aqa_jax.data.transforms import apply_transform


def clip_windows(num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    """(num_clips, clip_len) frame indices of consecutive clips (see module docstring)."""
    if num_frames < 1:
        raise ValueError("cannot cut clips from an empty video")
    if num_frames < clip_len:
        return np.minimum(np.arange(clip_len), num_frames - 1)[None]
    starts = np.arange(0, num_frames - clip_len + 1, stride)
    return starts[:, None] + np.arange(clip_len)[None]


def video_features(
    record: Mapping[str, Any],
    apply_fn,
    *,
    clip_len: int = 16,
    stride: int = 16,
    preset: str = "deepmind",
    batch_clips: int = 8,
) -> np.ndarray:
    """(num_clips, 1024) features of one record; ``apply_fn(clips) -> (n, 1024)``."""
    sample = record["id"].decode() if isinstance(record["id"], bytes) else str(record["id"])
    windows = clip_windows(int(record["num_frames"]), clip_len, stride)
    out = []
    for start in range(0, len(windows), batch_clips):
        clips = np.stack([
            apply_transform(decode_frames(record["frames"], w, source=sample), preset)
            for w in windows[start : start + batch_clips]
        ])
        out.append(np.asarray(apply_fn(clips)))
    return np.concatenate(out).astype(np.float32)


def make_feature_fn(model, variables):
    """A jitted ``clips -> features`` for an ``InceptionI3d`` and its variables."""

    @jax.jit
    def features(clips):
        return model.apply(variables, clips)["features"]

    return features


def extract_split(
    source: Sequence[Mapping[str, Any]],
    model,
    variables,
    out_dir: str | os.PathLike[str],
    split: str,
    **kwargs: Any,
) -> Path:
    """Writes every record's features and the split's label file; returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fn = make_feature_fn(model, variables)
    lines = ["name score"]
    for record in tqdm(source, desc=f"I3D features [{split}]", unit="video"):
        name = record["id"].decode() if isinstance(record["id"], bytes) else str(record["id"])
        safe = name.replace("/", "__")
        np.save(out_dir / f"{safe}.npy", video_features(record, fn, **kwargs))
        lines.append(f"{safe} {float(record['score']):.6f}")
    (out_dir / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return out_dir


def iter_feature_files(out_dir: str | os.PathLike[str], split: str) -> Iterator[tuple[str, np.ndarray, float]]:
    """Reads back what :func:`extract_split` wrote: (name, features, score)."""
    out_dir = Path(out_dir)
    for line in (out_dir / f"{split}.txt").read_text().splitlines()[1:]:
        name, score = line.split()
        yield name, np.load(out_dir / f"{name}.npy"), float(score)
