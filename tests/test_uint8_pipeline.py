"""uint8 clips end to end: the pipeline yields uint8 pixels and the jitted steps normalise them.

Oracles: the float path as it was before the split (the crop's pixels as float32, reversed to
BGR for a ``bgr`` preset, then ``x / 127.5 - 1`` or ``(x / 255 - mean) / std`` written per
channel in float64); and a step fed float batches normalised on the host, which the step
passes through unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_helpers import REPO, tiny_config

from aqa_jax.data.transforms import PRESETS, TransformPreset, apply_transform, normalize_clip, transform_pixels

MEAN = (0.485, 0.456, 0.406)  # ImageNet, RGB order
STD = (0.229, 0.224, 0.225)


def _oracle(pixels: np.ndarray, name: str) -> np.ndarray:
    """The float input of uint8 RGB ``pixels``, computed channel by channel in float64."""
    p = PRESETS[name]
    x = pixels.astype(np.float64)
    out = np.empty(x.shape, np.float64)
    for c in range(3):
        src = 2 - c if p.channel_order == "bgr" else c  # BGR: position 0 holds blue
        if p.normalize == "minus_one_one":
            out[..., c] = x[..., src] / 127.5 - 1.0
        else:  # PECoP's BGR keeps the RGB statistics by position
            out[..., c] = (x[..., src] / 255.0 - MEAN[c]) / STD[c]
    return out


def _clip(seed: int = 0) -> np.ndarray:
    # 240 x 300 frames: every preset's crop fits, including musdl_jigsaws' no-resize 224 crop
    return np.random.default_rng(seed).integers(0, 256, (3, 240, 300, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_uint8_pixels_then_normalisation_equal_the_float_path(name):
    clip = _clip()
    p = PRESETS[name]
    for seed in (None, 3):  # evaluation (centre crop) and a training draw
        rng = None if seed is None else np.random.default_rng(seed)
        pixels = transform_pixels(clip, name, rng=rng)
        assert pixels.dtype == np.uint8 and pixels.shape == (3, p.crop, p.crop, 3)
        want = _oracle(pixels, name)
        on_host = normalize_clip(pixels, name)
        assert isinstance(on_host, np.ndarray) and on_host.dtype == np.float32
        np.testing.assert_allclose(on_host, want, rtol=0, atol=1e-6)
        on_device = jax.jit(lambda x, n=name: normalize_clip(x, n))(jnp.asarray(pixels))
        assert on_device.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(on_device), want, rtol=0, atol=1e-6)
        # apply_transform with the same draws is the same float input
        again = apply_transform(clip, name, rng=None if seed is None else np.random.default_rng(seed))
        np.testing.assert_allclose(again, want, rtol=0, atol=1e-6)


def test_normalize_clip_takes_a_batch_of_clips_and_a_preset_object():
    pixels = np.stack([transform_pixels(_clip(s), "pecop") for s in (1, 2)])[:, None]  # (2, 1, T, S, S, 3)
    out = normalize_clip(pixels, PRESETS["pecop"])
    np.testing.assert_allclose(out, _oracle(pixels, "pecop"), rtol=0, atol=1e-6)


def test_transform_pixels_refuses_float_frames():
    with pytest.raises(ValueError, match="uint8"):
        transform_pixels(_clip().astype(np.float32), "deepmind")


# --- methods: which fields are frames -----------------------------------------------------

METHOD_CONFIGS = ("pecop", "usdl", "musdl", "core", "tsa", "c3d_avg", "mscadc")


@pytest.mark.parametrize("name", METHOD_CONFIGS)
def test_every_uint8_field_is_a_declared_clip_and_init_sees_floats(name, synthetic_data_dir):
    """Each method's example: its frames (query and exemplars) are uint8 fields named in
    ``clip_keys``, normalised with the config's preset; the network is initialised on floats."""
    from aqa_jax.config_args import load_config
    from aqa_jax.experiment import Experiment

    config = load_config(f"{REPO}/configs/{name}.py:dataset=synthetic_aqa,debug")
    config.data.update(data_dir=str(synthetic_data_dir), config="finger_tapping_tiny")
    if "clips" in config:  # the tiny set's 40 frames: two clips of 16 (MSCADC: every 2nd frame)
        config.clips.update(clip_starts=(0, 16) if len(config.clips.clip_starts) > 1 else (0,),
                            frame_step=2.0 if name == "mscadc" else 1.0)
    exp = Experiment.from_config(config)
    example = exp.example
    frames = {k for k, v in example.items() if v.dtype == np.uint8}
    assert frames and frames <= set(exp.method.clip_keys), (frames, exp.method.clip_keys)
    if name in ("core", "tsa"):
        assert frames == {"clip", "exemplar_clip"}
    preset = config.vspp.preset if name == "pecop" else config.clips.preset
    assert exp.method.clip_preset() == preset
    init = exp.init_example
    assert set(init) == set(example)
    for key in example:
        if key in frames:
            assert init[key].dtype == np.float32
            np.testing.assert_allclose(init[key], _oracle(example[key], preset), rtol=0, atol=1e-6)
        else:
            assert init[key] is example[key]  # other fields untouched


def test_a_float_batch_passes_and_an_undeclared_uint8_field_is_refused():
    from aqa_jax.methods import get_method
    from aqa_jax.config_args import load_config

    config = load_config(f"{REPO}/configs/usdl.py:dataset=synthetic_aqa,debug")
    method = get_method("usdl")(config)
    features = {"clip": np.ones((2, 4, 1024), np.float32), "score": np.zeros(2, np.float32)}
    out = method.normalize_inputs(features)
    assert out["clip"] is features["clip"] and out["score"] is features["score"]
    with pytest.raises(ValueError, match="'mask' is uint8"):
        method.normalize_inputs({"mask": np.ones(2, np.uint8)})


# --- the jitted steps ----------------------------------------------------------------------

# PECoP's channel order and statistics at the debug size: BGR, ImageNet mean/std.
PECOP_32 = TransformPreset(("short_side", 32), "cv2_nearest", 32, "bgr", "imagenet", flip_first=True)


@pytest.fixture
def tiny_experiment(synthetic_data_dir, monkeypatch):
    from aqa_jax.experiment import Experiment

    monkeypatch.setitem(PRESETS, "pecop_32", PECOP_32)
    config = tiny_config(synthetic_data_dir, vspp={"clip_len": 8, "preset": "pecop_32"}, batch_size=8)
    return Experiment.from_config(config)


def test_steps_on_uint8_batches_equal_steps_on_host_normalised_batches(tiny_experiment):
    exp = tiny_experiment
    batch = next(iter(exp.dataset(exp.train_source, train=True)))
    assert batch["clip"].dtype == np.uint8 and batch["clip"].shape == (8, 8, 32, 32, 3)
    assert exp.example["clip"].dtype == np.uint8
    device, _ = exp.split_batch(batch)
    floats = dict(device, clip=_oracle(device["clip"], "pecop_32").astype(np.float32))
    raw = dict(device, clip=device["clip"].astype(np.float32))  # un-normalised: must differ

    predict = exp.predict_step()
    state = exp.init_state()
    p_uint8 = jax.device_get(predict(state, exp.global_batch(device)))
    p_float = jax.device_get(predict(state, exp.global_batch(floats)))
    for key in p_uint8:
        np.testing.assert_array_equal(p_uint8[key], p_float[key])

    train = exp.train_step()
    copy = lambda s: jax.tree.map(jnp.copy, s)  # noqa: E731  (the step donates its state)
    s_uint8, m_uint8 = train(copy(state), exp.global_batch(device))
    s_float, m_float = train(copy(state), exp.global_batch(floats))
    s_raw, m_raw = train(copy(state), exp.global_batch(raw))
    m_uint8, m_float, m_raw = jax.device_get((m_uint8, m_float, m_raw))
    np.testing.assert_allclose(m_uint8["loss"], m_float["loss"], rtol=1e-5)
    np.testing.assert_allclose(m_uint8["grad_norm"], m_float["grad_norm"], rtol=1e-4)
    assert abs(float(m_raw["loss"]) - float(m_uint8["loss"])) > 1e-3
    for a, b in zip(jax.tree.leaves(jax.device_get(s_uint8.params)), jax.tree.leaves(jax.device_get(s_float.params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
