"""Transform presets and clip starts against transcriptions of the official pipelines.

Each oracle below is written from the official code, with PIL or cv2 called directly on a
real-size frame (our builders store frames at short side 256: 341 x 256; JIGSAWS 320 x 240):

- torch_videovision (master, as CoRe/TSA/PECoP install it): ``RandomHorizontalFlip`` first,
  then ``Resize(size)``, which calls ``resize_clip(clip, size, 'nearest')``; that swaps the
  tuple (``size = size[1], size[0]``) and, for PIL images, maps ``'nearest'`` to
  ``PIL.Image.BILINEAR`` (for numpy frames: ``cv2.INTER_NEAREST``); ``RandomCrop`` cuts at a
  drawn (y1, x1), ``CenterCrop`` at ``int(round((h - size) / 2.))``; ``ClipToTensor`` /255;
  ``Normalize`` with ImageNet mean/std per channel position.
- MUSDL ``MTL-AQA/dataset.py``: ``image.resize((455, 256), filter)`` with
  ``filter = [NEAREST, BILINEAR, BICUBIC, LANCZOS][randint(0, 3)]`` per frame, then (training)
  ``FLIP_LEFT_RIGHT``, then torchvision ``CenterCrop(224)``, ToTensor, Normalize.
- MUSDL ``JIGSAWS/dataset.py``: ``CenterCrop(224)`` of the stored frame, ToTensor, Normalize.
- PECoP: frames from ``cv2.imread`` (BGR, never converted) through torch_videovision's numpy
  path.

The random draws (flip, crop offsets, filters) are our pipeline's own; the oracles take them
from a generator replaying the documented order of :func:`apply_transform`.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from aqa_jax.data.sampling import CLIP_STARTS, split_clips
from aqa_jax.data.transforms import apply_transform

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PIL_MUSDL_FILTERS = [Image.NEAREST, Image.BILINEAR, Image.BICUBIC, Image.LANCZOS]


def _frames(t, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _to_tensor_normalize(frames):
    return (np.asarray(frames, np.float64) / 255.0 - MEAN) / STD


def _center(h, w, size):
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def _videovision_pil(clip, size_wh, crop, rng):
    """torch_videovision on PIL frames: [flip] → Resize(size_wh) → Random/CenterCrop → tensor."""
    images = [Image.fromarray(f) for f in clip]
    flip = rng is not None and rng.random() < 0.5
    if flip:
        images = [im.transpose(Image.FLIP_LEFT_RIGHT) for im in images]
    size = size_wh[1], size_wh[0]  # resize_clip's swap
    images = [im.resize(size, Image.BILINEAR) for im in images]  # 'nearest' → BILINEAR for PIL
    im_w, im_h = images[0].size
    if rng is None:
        y1, x1 = _center(im_h, im_w, crop)
    else:
        y1, x1 = int(rng.integers(0, im_h - crop + 1)), int(rng.integers(0, im_w - crop + 1))
    out = [np.asarray(im.crop((x1, y1, x1 + crop, y1 + crop))) for im in images]
    return _to_tensor_normalize(out), flip


@pytest.mark.parametrize("name,size_wh,crop", [("core", (455, 256), 224), ("tsa", (200, 112), 112)])
def test_core_and_tsa_presets_are_torch_videovision_on_pil_frames(name, size_wh, crop):
    clip = _frames(3, 256, 341)
    flips = set()
    for seed in range(6):
        ours = apply_transform(clip, name, rng=np.random.default_rng(seed))
        want, flip = _videovision_pil(clip, size_wh, crop, np.random.default_rng(seed))
        flips.add(flip)
        np.testing.assert_allclose(ours, want, atol=2e-5)
    assert flips == {True, False}
    want, _ = _videovision_pil(clip, size_wh, crop, None)
    np.testing.assert_allclose(apply_transform(clip, name), want, atol=2e-5)


def test_pecop_preset_is_torch_videovision_on_cv2_bgr_frames():
    clip = _frames(3, 256, 341, seed=1)
    bgr = clip[..., ::-1]  # what cv2.imread returns for the stored RGB frame
    flips = set()
    for seed in range(6):
        rng = np.random.default_rng(seed)
        frames = list(bgr)
        flip = rng.random() < 0.5
        flips.add(flip)
        if flip:
            frames = [np.fliplr(f) for f in frames]
        frames = [cv2.resize(f, (256, 455), interpolation=cv2.INTER_NEAREST) for f in frames]
        y1, x1 = int(rng.integers(0, 455 - 224 + 1)), int(rng.integers(0, 256 - 224 + 1))
        want = _to_tensor_normalize([f[y1:y1 + 224, x1:x1 + 224] for f in frames])
        np.testing.assert_allclose(apply_transform(clip, "pecop", rng=np.random.default_rng(seed)),
                                   want, atol=2e-5)
    assert flips == {True, False}


def _musdl_mtl_aqa(clip, filters, flip):
    """MUSDL ``load_image_train`` / ``load_image`` + CenterCrop(224) + ToTensor + Normalize."""
    out = []
    for frame, f in zip(clip, filters):
        image = Image.fromarray(frame).resize((455, 256), f)
        if flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        top, left = _center(image.size[1], image.size[0], 224)
        out.append(np.asarray(image.crop((left, top, left + 224, top + 224))))
    return _to_tensor_normalize(out)


def test_musdl_preset_draws_a_pil_filter_per_frame_and_centre_crops_in_training():
    clip = _frames(8, 256, 341, seed=2)
    flips, used = set(), set()
    for seed in range(4):
        rng = np.random.default_rng(seed)
        flip = rng.random() < 0.5
        idx = rng.integers(0, 4, len(clip))
        flips.add(flip)
        used.update(idx.tolist())
        want = _musdl_mtl_aqa(clip, [PIL_MUSDL_FILTERS[i] for i in idx], flip)
        np.testing.assert_allclose(apply_transform(clip, "musdl", rng=np.random.default_rng(seed)),
                                   want, atol=2e-5)
    assert flips == {True, False} and used == {0, 1, 2, 3}
    # evaluation: no flip, filters from the fixed evaluation seed (0)
    idx = np.random.default_rng(0).integers(0, 4, len(clip))
    np.testing.assert_allclose(apply_transform(clip, "musdl"),
                               _musdl_mtl_aqa(clip, [PIL_MUSDL_FILTERS[i] for i in idx], False), atol=2e-5)
    # the deterministic option: PIL bilinear on every frame
    rng = np.random.default_rng(7)
    flip = rng.random() < 0.5
    np.testing.assert_allclose(apply_transform(clip, "musdl_bilinear", rng=np.random.default_rng(7)),
                               _musdl_mtl_aqa(clip, [Image.BILINEAR] * len(clip), flip), atol=2e-5)


def test_musdl_jigsaws_preset_centre_crops_the_stored_frames_without_flip():
    clip = _frames(3, 240, 320, seed=3)
    top, left = _center(240, 320, 224)  # torchvision CenterCrop: (8, 48)
    want = _to_tensor_normalize([np.asarray(Image.fromarray(f).crop((left, top, left + 224, top + 224)))
                                 for f in clip])
    for seed in range(4):  # training never flips nor moves the crop
        np.testing.assert_allclose(apply_transform(clip, "musdl_jigsaws", rng=np.random.default_rng(seed)),
                                   want, atol=2e-5)
    np.testing.assert_allclose(apply_transform(clip, "musdl_jigsaws"), want, atol=2e-5)


def test_musdl_mtl_aqa_clips_end_at_frame_102():
    """MUSDL ``main.py``: ``videos[:, :, 10 * i : 10 * i + 16]`` for i < 9, then ``videos[:, :, -16:]``
    of the 103 frames, i.e. a last start of 87 (``opts.segment_points``); CoRe's is 86."""
    frames = np.arange(103)
    official = [frames[10 * i:10 * i + 16] for i in range(9)] + [frames[-16:]]
    np.testing.assert_array_equal(split_clips(frames, CLIP_STARTS["musdl_10x16"]), np.stack(official))
    assert CLIP_STARTS["core_10x16"][-1] == 86


@pytest.mark.parametrize("method", ["usdl", "musdl"])
def test_usdl_configs_default_to_the_official_preprocessing(method):
    from aqa_jax.config_args import load_config

    mtl = load_config(f"{CONFIGS}/{method}.py:dataset=mtl_aqa")
    assert (mtl.clips.preset, tuple(mtl.clips.clip_starts), mtl.clips.backbone_batches) == (
        "musdl", CLIP_STARTS["musdl_10x16"], "per_position")
    jig = load_config(f"{CONFIGS}/{method}.py:dataset=jigsaws")
    assert (jig.clips.preset, tuple(jig.clips.clip_starts), jig.clips.backbone_batches) == (
        "musdl_jigsaws", CLIP_STARTS["jigsaws_10x16"], "all_clips")
    assert load_config(f"{CONFIGS}/core.py:dataset=mtl_aqa").clips.preset == "core"
    assert load_config(f"{CONFIGS}/tsa.py:dataset=fine_diving").clips.preset == "tsa"


def test_a_crop_larger_than_the_stored_frames_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"cannot crop 224x224 from 64x80 frames: store larger frames"):
        apply_transform(_frames(1, 64, 80), "musdl_jigsaws")
