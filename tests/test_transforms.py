"""Transform presets against hand-computed geometry and normalisation."""

import numpy as np
import pytest

from aqa_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD, apply_transform, crop_offsets, preset, resized_shape


def _solid(t, h, w, rgb):
    clip = np.zeros((t, h, w, 3), np.uint8)
    clip[...] = rgb
    return clip


def test_resized_shapes_keep_the_official_quirks():
    assert resized_shape(240, 320, preset("deepmind")) == (256, 341)
    assert resized_shape(240, 320, preset("pecop")) == (455, 256)  # swapped: 455 high
    assert resized_shape(240, 320, preset("core")) == (455, 256)
    assert resized_shape(240, 320, preset("tsa")) == (200, 112)
    assert resized_shape(240, 320, preset("musdl")) == (256, 455)  # PIL (w, h): not swapped
    with pytest.raises(ValueError, match="unknown transform preset"):
        preset("imagenet")


def test_deepmind_scales_to_minus_one_one():
    out = apply_transform(_solid(2, 120, 160, (255, 0, 51)), "deepmind")
    assert out.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(out[0, 5, 5], [1.0, -1.0, 51 * 2 / 255 - 1], atol=1e-6)


def test_pecop_feeds_bgr_with_rgb_statistics():
    out = apply_transform(_solid(1, 300, 300, (255, 0, 0)), "pecop")
    # channel 0 holds blue (0) normalised with the *red* statistics, as PECoP's cv2 loader does
    np.testing.assert_allclose(out[0, 0, 0, 0], (0 - 0.485) / 0.229, atol=1e-5)
    np.testing.assert_allclose(out[0, 0, 0, 2], (1 - 0.406) / 0.225, atol=1e-5)
    core = apply_transform(_solid(1, 300, 300, (255, 0, 0)), "core")
    np.testing.assert_allclose(core[0, 0, 0], (np.array([1, 0, 0]) - IMAGENET_MEAN) / IMAGENET_STD,
                               atol=1e-5)


def test_crop_and_flip_geometry():
    assert crop_offsets(256, 341, 224, None) == (16, 58)  # round(32/2), round(117/2)
    rng = np.random.default_rng(0)
    offs = {crop_offsets(230, 240, 224, rng) for _ in range(400)}
    assert {o[0] for o in offs} == set(range(7)) and {o[1] for o in offs} == set(range(17))
    # A horizontal ramp: flipping mirrors the columns of the centre crop.
    clip = np.tile(np.arange(256, dtype=np.uint8)[None, None, :, None], (2, 256, 1, 3))
    plain = apply_transform(clip, "deepmind", flip=False)
    flipped = apply_transform(clip, "deepmind", flip=True)
    np.testing.assert_array_equal(flipped, plain[:, :, ::-1])
    assert plain[0, 0, 0, 0] == pytest.approx(16 * 2 / 255 - 1)


def test_random_crop_is_shared_by_all_frames():
    clip = np.random.default_rng(1).integers(0, 255, (1, 240, 320, 3), np.uint8).repeat(4, 0)
    out = apply_transform(clip, "deepmind", rng=np.random.default_rng(5))
    for t in range(1, 4):
        np.testing.assert_array_equal(out[t], out[0])
