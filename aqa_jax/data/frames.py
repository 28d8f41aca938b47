"""Frame I/O for dataset builders and pipelines: JPEG bytes in, RGB uint8 arrays out.

Builders store every frame as JPEG bytes (short side 256 by default); pipelines decode only
the frames a clip needs. Unreadable inputs raise :class:`FrameError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np


class FrameError(ValueError):
    """A frame or video that cannot be read or decoded; the message names the file."""


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 (H, W, 3) → JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FrameError(f"could not JPEG-encode a frame of shape {frame.shape}")
    return buf.tobytes()


def decode_jpeg(data: bytes, source: str = "<frame>") -> np.ndarray:
    """JPEG (or PNG) bytes → RGB uint8 (H, W, 3)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameError(f"{source}: not a decodable image ({len(data)} bytes)")
    return image[..., ::-1]


def decode_frames(frames: Sequence[bytes], indices: Sequence[int], source: str = "") -> np.ndarray:
    """Decodes only ``frames[i]`` for i in ``indices`` into (len(indices), H, W, 3)."""
    cache: dict[int, np.ndarray] = {}
    out = []
    for i in indices:
        i = int(i)
        if i not in cache:
            if not 0 <= i < len(frames):
                raise FrameError(f"{source}: frame {i} requested, the video has {len(frames)}")
            cache[i] = decode_jpeg(frames[i], f"{source} frame {i}")
        out.append(cache[i])
    return np.stack(out)


def resize_short_side(frame: np.ndarray, short_side: int | None) -> np.ndarray:
    """Resizes so that min(H, W) == short_side (bilinear, area when shrinking); None keeps it."""
    if short_side is None:
        return frame
    h, w = frame.shape[:2]
    scale = short_side / min(h, w)
    if scale == 1:
        return frame
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(frame, size, interpolation=interp)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file → RGB uint8, or :class:`FrameError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"missing frame file {path}")
    return decode_jpeg(path.read_bytes(), str(path))


def iter_video(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Decodes a video file (mp4/avi/mov, via OpenCV's FFmpeg) frame by frame as RGB uint8."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"missing video file {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FrameError(f"{path}: OpenCV cannot open this video (corrupt or unsupported codec)")
    count = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            count += 1
            yield frame[..., ::-1]
    finally:
        cap.release()
    if count == 0:
        raise FrameError(f"{path}: no decodable frames")


def encode_video_frames(
    frames: Iterator[np.ndarray] | Sequence[np.ndarray], short_side: int | None, quality: int = 90
) -> list[bytes]:
    """Resizes (short side) and JPEG-encodes a frame sequence."""
    return [encode_jpeg(resize_short_side(f, short_side), quality) for f in frames]
