"""Clip transforms: resize, crop, flip, normalise, per official preprocessing preset.

A clip is ``(T, H, W, 3) uint8`` in RGB (how our builders store frames). One random crop and
flip is drawn per clip and applied to every frame, as ``torch_videovision`` does.

Two halves: :func:`transform_pixels` (resize, flip, crop; uint8 in, uint8 RGB out, on the
host) and :func:`normalize_clip` (channel order and scaling to float32; numpy or jax). The data
pipeline yields uint8 clips (a quarter of float32's bytes between grain workers and to the
device) and the jitted training and prediction steps normalise them on device
(:meth:`aqa_jax.methods.base.Method.normalize_inputs`); :func:`apply_transform` does both on
the host, for callers that feed a network directly.

Presets (see reference aqa_methods.md §1.5, pecop_i3d.md §2):

- ``deepmind``: RGB, short side → 256 (bilinear), crop 224, scale to [-1, 1] (kinetics-i3d).
  Our builders and ``aqa-jax predict`` already store frames at short side 256, resized with
  OpenCV's INTER_AREA when shrinking (INTER_LINEAR when enlarging) and re-encoded as JPEG
  (quality 90), so this preset's own resize is then a no-op and the pixels are not those of
  DeepMind's bilinear resize of the decoded video; the builder configs that keep the
  original frames (``short_side=None``: ``mtl_aqa/raw``, ``fine_diving/original``) let the
  preset resize them bilinearly itself.
- ``pecop``: PECoP's pretraining input, quirks kept: frames in **BGR** order (cv2.imread,
  never converted), ``Resize((455, 256))`` which torch_videovision turns into **455 high ×
  256 wide** with cv2 nearest-neighbour (its numpy path), flip before the resize, crop 224,
  ImageNet mean/std on [0, 1].
- ``core``: CoRe's fine-tuning input (``tools/builder.py``, PIL frames from ``MTLPair.py``):
  flip, the same swapped 455×256 resize on RGB frames, random crop 224 (centre in test),
  ImageNet mean/std. torch_videovision's ``Resize`` defaults to ``'nearest'``, which its
  ``functional.resize_clip`` maps to **PIL bilinear** for PIL images (the mapping is inverted
  on its master branch; the fix, PR #15, was never merged), so the resize is PIL bilinear.
- ``tsa``: TSA/FineDiving (``FineDiving_Pair.py``, PIL frames): flip, swapped
  ``Resize((200, 112))`` → 200 high × 112 wide, PIL bilinear as ``core``, crop 112,
  ImageNet mean/std.
- ``musdl``: MUSDL on MTL-AQA (``MTL-AQA/dataset.py``): PIL ``resize((455, 256))`` → 256 high ×
  455 wide (not swapped) with a filter drawn at random **per frame** among PIL's nearest /
  bilinear / bicubic / lanczos (in test too; our evaluation draws them from a fixed seed, so
  it is repeatable), then a flip (training), **centre** crop 224 in training and test,
  ImageNet mean/std.
- ``musdl_bilinear``: ``musdl`` with PIL bilinear for every frame (a deterministic filter;
  not the official pipeline).
- ``musdl_jigsaws``: MUSDL on JIGSAWS (``JIGSAWS/dataset.py``): **no resize**, centre crop 224
  of the stored frames in training and test, no flip, ImageNet mean/std.
- ``deepmind_112`` / ``deepmind_64`` / ``deepmind_32``: the ``deepmind`` recipe at short side
  128 / 64 / 32 and crop 112 / 64 / 32, for debug configs and CPU demos (not an official
  pipeline).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclasses.dataclass(frozen=True)
class TransformPreset:
    """How one official pipeline turns frames into network input.

    Attributes:
      resize: ``("short_side", s)``, ``("fixed", (height, width))`` or ``("none", 0)`` (the
        stored frames as they are).
      resampler: ``cv2_nearest``, ``cv2_bilinear``, ``pil_nearest``, ``pil_bilinear`` or
        ``pil_random`` (a PIL filter drawn per frame among nearest / bilinear / bicubic /
        lanczos, as MUSDL's MTL-AQA loader does).
      crop: square crop size.
      channel_order: ``rgb`` or ``bgr`` (order of the channels fed to the network).
      normalize: ``minus_one_one`` ([-1, 1]) or ``imagenet`` (mean/std on [0, 1]).
      train_crop: ``random`` or ``center`` (MTL-AQA's loaders centre-crop in training too and
        augment only by flipping).
      train_flip: whether training flips (p = 0.5); MUSDL's JIGSAWS loader never flips.
      flip_first: flip the whole frame before the resize (torch_videovision's
        ``RandomHorizontalFlip`` comes first in CoRe, TSA and PECoP) rather than after it
        (MUSDL/MTL-AQA); either way the flip precedes the crop, as in the official code.
        Nearest-neighbour resizes do not commute with a flip, and a centred crop with an
        odd margin lands one pixel apart on a flipped frame.
    """

    resize: tuple[str, int | tuple[int, int]]
    resampler: Literal["cv2_nearest", "cv2_bilinear", "pil_nearest", "pil_bilinear", "pil_random"]
    crop: int
    channel_order: Literal["rgb", "bgr"]
    normalize: Literal["minus_one_one", "imagenet"]
    train_crop: Literal["random", "center"] = "random"
    train_flip: bool = True
    flip_first: bool = False


PRESETS: dict[str, TransformPreset] = {
    "deepmind": TransformPreset(("short_side", 256), "cv2_bilinear", 224, "rgb", "minus_one_one"),
    "pecop": TransformPreset(("fixed", (455, 256)), "cv2_nearest", 224, "bgr", "imagenet", flip_first=True),
    "core": TransformPreset(("fixed", (455, 256)), "pil_bilinear", 224, "rgb", "imagenet", flip_first=True),
    "tsa": TransformPreset(("fixed", (200, 112)), "pil_bilinear", 112, "rgb", "imagenet", flip_first=True),
    "musdl": TransformPreset(("fixed", (256, 455)), "pil_random", 224, "rgb", "imagenet", "center"),
    "musdl_bilinear": TransformPreset(("fixed", (256, 455)), "pil_bilinear", 224, "rgb", "imagenet", "center"),
    "musdl_jigsaws": TransformPreset(("none", 0), "pil_bilinear", 224, "rgb", "imagenet", "center",
                                     train_flip=False),
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

# PIL's filters in MUSDL's order (``load_image``: ``interpolators[random.randint(0, 3)]``).
PIL_RANDOM_FILTERS = (Image.NEAREST, Image.BILINEAR, Image.BICUBIC, Image.LANCZOS)
PIL_FILTERS = {"pil_nearest": Image.NEAREST, "pil_bilinear": Image.BILINEAR}
# The generator of ``pil_random``'s filters in evaluation (the official test loader draws them
# at random too; a fixed seed keeps our evaluation repeatable).
EVAL_FILTER_SEED = 0


def preset(name: str) -> TransformPreset:
    """The preset called ``name``, or a one-line error listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown transform preset {name!r}; choose one of {sorted(PRESETS)}") from None


def resized_shape(height: int, width: int, p: TransformPreset) -> tuple[int, int]:
    """(height, width) after the preset's resize."""
    kind, size = p.resize
    if kind == "fixed":
        return tuple(size)  # type: ignore[return-value]
    if kind == "none":
        return height, width
    short = min(height, width)
    return round(height * size / short), round(width * size / short)


def resize_frame(frame: np.ndarray, height: int, width: int, resampler: str,
                 pil_filter: int | None = None) -> np.ndarray:
    """One (H, W, 3) uint8 frame resized to (height, width).

    ``pil_filter``: the PIL filter of a ``pil_random`` resize (drawn by the caller)."""
    if frame.shape[:2] == (height, width):
        return frame
    if resampler.startswith("pil_"):
        f = pil_filter if resampler == "pil_random" else PIL_FILTERS[resampler]
        if f is None:
            raise ValueError("resampler='pil_random' needs the frame's pil_filter")
        return np.asarray(Image.fromarray(frame).resize((width, height), f))
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
        raise ValueError(f"cannot crop {size}x{size} from {height}x{width} frames: store larger frames "
                         f"(the builder's short_side) or choose a preset with a smaller crop")
    if rng is None:
        return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def transform_pixels(
    clip: np.ndarray,
    p: TransformPreset | str,
    *,
    rng: np.random.Generator | None = None,
    flip: bool | None = None,
) -> np.ndarray:
    """Resizes, flips and crops a ``(T, H, W, 3)`` uint8 RGB clip: ``(T, crop, crop, 3)`` uint8,
    still RGB (:func:`normalize_clip` makes it network input).

    Training: pass ``rng`` (a horizontal flip with p = 0.5 unless ``flip`` says otherwise or
    the preset never flips, then the crop: random, or centred for ``train_crop='center'``).
    Evaluation: ``rng=None`` gives the centre crop without flip. ``rng`` draws, in this order,
    the flip (``rng.random() < 0.5``), the crop's top and left, then ``pil_random``'s filter
    index of every frame (``rng.integers(0, 4, T)``).
    """
    p = preset(p) if isinstance(p, str) else p
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected a (T, H, W, 3) clip, got {clip.shape}")
    if clip.dtype != np.uint8:
        raise ValueError(f"expected a uint8 clip (decoded frames), got {clip.dtype}")
    if flip is None:
        flip = bool(rng.random() < 0.5) if rng is not None and p.train_flip else False
    h, w = resized_shape(clip.shape[1], clip.shape[2], p)
    top, left = crop_offsets(h, w, p.crop, rng if p.train_crop == "random" else None)
    filters: list[int | None] = [None] * clip.shape[0]
    if p.resampler == "pil_random":
        draw = rng if rng is not None else np.random.default_rng(EVAL_FILTER_SEED)
        filters = [PIL_RANDOM_FILTERS[i] for i in draw.integers(0, len(PIL_RANDOM_FILTERS), clip.shape[0])]
    out = np.empty((clip.shape[0], p.crop, p.crop, 3), np.uint8)
    for t, frame in enumerate(clip):
        if flip and p.flip_first:
            frame = frame[:, ::-1]
        frame = resize_frame(frame, h, w, p.resampler, filters[t])
        if flip and not p.flip_first:  # the whole resized frame, then the crop (MTL-AQA loaders)
            frame = frame[:, ::-1]
        out[t] = frame[top : top + p.crop, left : left + p.crop]
    return out


def normalize_clip(x: Any, p: TransformPreset | str) -> Any:
    """Network input of uint8 RGB pixels ``(..., 3)`` (e.g. :func:`transform_pixels`' clips):
    float32 in the preset's channel order, scaled to [-1, 1] (``minus_one_one``) or ImageNet
    mean/std on [0, 1] (``imagenet``).

    One formula for numpy and jax: a numpy array gives numpy, anything else (a jax array, a
    tracer inside ``jax.jit``) gives ``jax.numpy``; the training and prediction steps call it
    on device (:meth:`aqa_jax.methods.base.Method.normalize_inputs`)."""
    p = preset(p) if isinstance(p, str) else p
    if isinstance(x, np.ndarray):
        xp = np
    else:
        import jax.numpy as xp
    out = xp.asarray(x).astype(xp.float32)
    if p.channel_order == "bgr":
        out = out[..., ::-1]
    if p.normalize == "minus_one_one":
        return out * np.float32(2.0 / 255.0) - np.float32(1.0)
    # PECoP's quirk: BGR channels normalised with the RGB statistics, position by position.
    return (out / np.float32(255.0) - IMAGENET_MEAN) / IMAGENET_STD


def apply_transform(
    clip: np.ndarray,
    p: TransformPreset | str,
    *,
    rng: np.random.Generator | None = None,
    flip: bool | None = None,
) -> np.ndarray:
    """:func:`transform_pixels` then :func:`normalize_clip`: a ``(T, H, W, 3)`` uint8 RGB clip
    as ``(T, crop, crop, 3)`` float32 network input, on the host (``rng`` and ``flip`` as
    :func:`transform_pixels` draws them). The data pipeline keeps clips uint8 instead."""
    return normalize_clip(transform_pixels(clip, p, rng=rng, flip=flip), p)
