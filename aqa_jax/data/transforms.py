"""Clip transforms: resize, crop, flip, normalise, per official preprocessing preset.

A clip is ``(T, H, W, 3) uint8`` in RGB (how our builders store frames). One random crop and
flip is drawn per clip and applied to every frame, as ``torch_videovision`` does.

Presets (see reference aqa_methods.md §1.5, pecop_i3d.md §2):

- ``deepmind``: RGB, short side → 256 (bilinear), crop 224, scale to [-1, 1] (kinetics-i3d).
- ``pecop``: PECoP's pretraining input, quirks kept: frames in **BGR** order (cv2.imread,
  never converted), ``Resize((455, 256))`` which torch_videovision turns into **455 high ×
  256 wide** with cv2 nearest-neighbour, crop 224, ImageNet mean/std on [0, 1].
- ``core``: CoRe's fine-tuning input: the same swapped 455×256 resize (PIL nearest) on RGB
  frames, crop 224, ImageNet mean/std.
- ``tsa``: TSA/FineDiving: swapped ``Resize((200, 112))`` → 200 high × 112 wide, crop 112,
  ImageNet mean/std.
- ``musdl``: MUSDL/MTL-AQA: PIL ``resize((455, 256))`` → 256 high × 455 wide (not swapped),
  crop 224, ImageNet mean/std. (The official code draws the PIL filter at random per frame;
  we use bilinear.)
- ``deepmind_112`` / ``deepmind_64`` / ``deepmind_32``: the ``deepmind`` recipe at short side
  128 / 64 / 32 and crop 112 / 64 / 32, for debug configs and CPU demos (not an official
  pipeline).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import cv2
import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclasses.dataclass(frozen=True)
class TransformPreset:
    """How one official pipeline turns frames into network input.

    Attributes:
      resize: ``("short_side", s)`` or ``("fixed", (height, width))``.
      resampler: ``cv2_nearest``, ``pil_nearest``, ``cv2_bilinear``.
      crop: square crop size.
      channel_order: ``rgb`` or ``bgr`` (order of the channels fed to the network).
      normalize: ``minus_one_one`` ([-1, 1]) or ``imagenet`` (mean/std on [0, 1]).
      train_crop: ``random`` or ``center`` (MTL-AQA's loaders centre-crop in training too and
        augment only by flipping).
    """

    resize: tuple[str, int | tuple[int, int]]
    resampler: Literal["cv2_nearest", "pil_nearest", "cv2_bilinear"]
    crop: int
    channel_order: Literal["rgb", "bgr"]
    normalize: Literal["minus_one_one", "imagenet"]
    train_crop: Literal["random", "center"] = "random"


PRESETS: dict[str, TransformPreset] = {
    "deepmind": TransformPreset(("short_side", 256), "cv2_bilinear", 224, "rgb", "minus_one_one"),
    "pecop": TransformPreset(("fixed", (455, 256)), "cv2_nearest", 224, "bgr", "imagenet"),
    "core": TransformPreset(("fixed", (455, 256)), "pil_nearest", 224, "rgb", "imagenet"),
    "tsa": TransformPreset(("fixed", (200, 112)), "pil_nearest", 112, "rgb", "imagenet"),
    "musdl": TransformPreset(("fixed", (256, 455)), "cv2_bilinear", 224, "rgb", "imagenet"),
    # MTL-AQA (dataloader_C3DAVG / _MSCADC): resize to 171x128 / 640x360 (W x H), centre crop
    # 112 / 180 in training and test, flip in training. The official loaders also draw the
    # resize filter at random among PIL's nearest/bilinear/bicubic/lanczos for every frame, in
    # test too, and MSCADC's test loader never uses its resized image; we resize bilinearly.
    "c3d_avg": TransformPreset(("fixed", (128, 171)), "cv2_bilinear", 112, "rgb", "imagenet", "center"),
    "mscadc": TransformPreset(("fixed", (360, 640)), "cv2_bilinear", 180, "rgb", "imagenet", "center"),
    # Low-resolution variants for debug configs and CPU demos (not an official pipeline).
    "deepmind_112": TransformPreset(("short_side", 128), "cv2_bilinear", 112, "rgb", "minus_one_one"),
    "deepmind_64": TransformPreset(("short_side", 64), "cv2_bilinear", 64, "rgb", "minus_one_one"),
    "deepmind_32": TransformPreset(("short_side", 32), "cv2_bilinear", 32, "rgb", "minus_one_one"),
}


def preset(name: str) -> TransformPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown transform preset {name!r}; choose one of {sorted(PRESETS)}") from None


def resized_shape(height: int, width: int, p: TransformPreset) -> tuple[int, int]:
    """(height, width) after the preset's resize."""
    kind, size = p.resize
    if kind == "fixed":
        return tuple(size)  # type: ignore[return-value]
    short = min(height, width)
    return round(height * size / short), round(width * size / short)


def resize_frame(frame: np.ndarray, height: int, width: int, resampler: str) -> np.ndarray:
    """One (H, W, 3) uint8 frame resized to (height, width)."""
    if frame.shape[:2] == (height, width):
        return frame
    if resampler == "pil_nearest":
        return np.asarray(Image.fromarray(frame).resize((width, height), Image.NEAREST))
    interp = cv2.INTER_NEAREST if resampler == "cv2_nearest" else cv2.INTER_LINEAR
    return cv2.resize(frame, (width, height), interpolation=interp)


def crop_offsets(
    height: int, width: int, size: int, rng: np.random.Generator | None
) -> tuple[int, int]:
    """(top, left) of a ``size`` crop: uniform when ``rng`` is given, else centred.

    Matches torch_videovision: RandomCrop draws ``randint(0, h - size)`` (inclusive);
    CenterCrop uses ``round((h - size) / 2)``.
    """
    if height < size or width < size:
        raise ValueError(f"cannot crop {size}x{size} from {height}x{width} frames")
    if rng is None:
        return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def apply_transform(
    clip: np.ndarray,
    p: TransformPreset | str,
    *,
    rng: np.random.Generator | None = None,
    flip: bool | None = None,
) -> np.ndarray:
    """Transforms a ``(T, H, W, 3)`` uint8 RGB clip into ``(T, crop, crop, 3)`` float32.

    Training: pass ``rng`` (random crop, and a horizontal flip with p = 0.5 unless ``flip``
    says otherwise). Evaluation: ``rng=None`` gives the centre crop without flip.
    """
    p = preset(p) if isinstance(p, str) else p
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected a (T, H, W, 3) clip, got {clip.shape}")
    if flip is None:
        flip = bool(rng.random() < 0.5) if rng is not None else False
    h, w = resized_shape(clip.shape[1], clip.shape[2], p)
    top, left = crop_offsets(h, w, p.crop, rng if p.train_crop == "random" else None)
    out = np.empty((clip.shape[0], p.crop, p.crop, 3), np.float32)
    for t, frame in enumerate(clip):
        frame = resize_frame(frame, h, w, p.resampler)[top : top + p.crop, left : left + p.crop]
        out[t] = frame[:, ::-1] if flip else frame
    if p.channel_order == "bgr":
        out = out[..., ::-1]
    if p.normalize == "minus_one_one":
        return out * (2.0 / 255.0) - 1.0
    # PECoP's quirk: BGR channels normalised with the RGB statistics, position by position.
    return (out / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
