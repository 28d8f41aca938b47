"""InceptionI3d and Adapter3D: sizes, shapes, padding rules and sharding annotations.

Oracles: the parameter counts and the 64x224x224 shape table of the reference notes
(pecop_i3d.md §1, §4.1), hand-computed padding cases, and a network without adapters.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jax import lax

from aqa_jax.models.adapter import grouped_conv3d_shift
from aqa_jax.models.i3d import MIXED_BLOCKS, InceptionI3d
from aqa_jax.models.layers import max_pool3d, pooled_length, same_pads

ALL = tuple(MIXED_BLOCKS)


def _shapes(model, x_shape=(1, 16, 224, 224, 3)):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x_shape)))


def _count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(tree)))


@pytest.mark.parametrize("variant, expected", [("deepmind", 12_689_984), ("pecop", 12_697_264)])
def test_parameter_counts(variant, expected):
    assert _count(_shapes(InceptionI3d(variant=variant))["params"]) == expected
    with_adapters = _count(_shapes(InceptionI3d(variant=variant, adapter_blocks=ALL))["params"])
    assert with_adapters - expected == 1_109_068


def test_adapter_sizes_per_block():
    # pecop_i3d.md §1: (C, C/4, params) per block.
    expected = {"Mixed_3b": 23_872, "Mixed_3c": 71_640, "Mixed_4b": 80_512, "Mixed_4c": 80_512,
                "Mixed_4d": 80_512, "Mixed_4e": 85_140, "Mixed_4f": 197_392,
                "Mixed_5b": 197_392, "Mixed_5c": 292_096}
    params = nn.unbox(_shapes(InceptionI3d(adapter_blocks=ALL))["params"])
    assert {b: _count(params[b]["adapter"]) for b in ALL} == expected
    down = params["Mixed_4e"]["adapter"]["down"]["kernel"]
    assert down.shape == (3, 3, 3, 4, 132)  # grouped, 4 inputs per group, not depthwise


def test_adapter_reduction_and_block_choice():
    model = InceptionI3d(adapter_blocks=("Mixed_5c",), adapter_reduction=8)
    params = nn.unbox(_shapes(model)["params"])
    assert [b for b in ALL if "adapter" in params[b]] == ["Mixed_5c"]
    c, h = 1024, 128
    assert _count(params["Mixed_5c"]["adapter"]) == (27 * 8 * h + h) + (h * c + c) + c
    with pytest.raises(ValueError, match="not Mixed blocks"):
        _shapes(InceptionI3d(adapter_blocks=("Mixed_9z",)))


def test_endpoint_shapes_64x224():
    # pecop_i3d.md §4.1, TF-SAME semantics, (T, H, W, C).
    expected = {
        "Conv3d_1a_7x7": (32, 112, 112, 64), "MaxPool3d_2a_3x3": (32, 56, 56, 64),
        "Conv3d_2b_1x1": (32, 56, 56, 64), "Conv3d_2c_3x3": (32, 56, 56, 192),
        "MaxPool3d_3a_3x3": (32, 28, 28, 192), "Mixed_3b": (32, 28, 28, 256),
        "Mixed_3c": (32, 28, 28, 480), "MaxPool3d_4a_3x3": (16, 14, 14, 480),
        "Mixed_4b": (16, 14, 14, 512), "Mixed_4e": (16, 14, 14, 528),
        "Mixed_4f": (16, 14, 14, 832), "MaxPool3d_5a_2x2": (8, 7, 7, 832),
        "Mixed_5b": (8, 7, 7, 832), "Mixed_5c": (8, 7, 7, 1024), "AvgPool": (7, 1, 1, 1024),
    }
    for variant in ("deepmind", "pecop"):
        model = InceptionI3d(variant=variant, adapter_blocks=ALL)
        out = jax.eval_shape(
            lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, 64, 224, 224, 3)))[0]
        )
        assert {k: out[k].shape[1:] for k in expected} == expected
        assert out["features"].shape == (1, 1024) and out["logits"].shape == (1, 400)


def test_same_padding_rules():
    # TF SAME depends on the input size, the static rule does not (hand-computed).
    assert same_pads(224, 7, 2, "tf_same") == (2, 3)
    assert same_pads(225, 7, 2, "tf_same") == (3, 3)
    assert same_pads(225, 7, 2, "static_same") == (2, 3)
    assert same_pads(9, 3, 2, "tf_same") == (1, 1)
    assert same_pads(9, 1, 1, "static_same") == (0, 0)
    with pytest.raises(ValueError):
        same_pads(9, 3, 2, "valid")


def test_pooled_length_ceil_mode():
    assert pooled_length(10, 3, 2, ceil_mode=False) == 4
    assert pooled_length(10, 3, 2, ceil_mode=True) == 5
    assert pooled_length(9, 3, 2, ceil_mode=True) == 4  # last window would start past the end
    assert pooled_length(5, 2, 2, ceil_mode=True) == 3


def test_max_pool_pad_value_matters_for_negative_inputs():
    # A constant -1 map: with -inf padding the border stays -1, with zero padding it becomes 0.
    x = -jnp.ones((1, 4, 4, 4, 1))
    tf = max_pool3d(x, (3, 3, 3), (1, 1, 1), padding="tf_same", pad_value=-math.inf,
                    ceil_mode=False)
    zero = max_pool3d(x, (3, 3, 3), (1, 1, 1), padding="tf_same", pad_value=0.0,
                      ceil_mode=False)
    assert tf.shape == zero.shape == x.shape
    np.testing.assert_array_equal(tf, -1.0)
    assert float(zero.max()) == 0.0 and float(zero[0, 1, 1, 1, 0]) == -1.0


@pytest.mark.slow  # four compilations of a cut I3D, about a minute (make test-all)
def test_zero_init_adapters_are_identity():
    # An I3D cut after Mixed_3c with adapters in its two Mixed blocks: the adapter module is
    # the same in every block, and the full network compiles many times slower.
    blocks, end = ("Mixed_3b", "Mixed_3c"), "Mixed_3c"
    x = jax.random.normal(jax.random.key(1), (1, 8, 32, 32, 3))
    plain = InceptionI3d(variant="pecop", final_endpoint=end)
    adapted = InceptionI3d(variant="pecop", adapter_blocks=blocks, adapter_zero_init=True, final_endpoint=end)
    va = jax.jit(adapted.init)(jax.random.key(0), x)
    flat = traverse_util.flatten_dict(nn.unbox(va["params"]))
    vp = {"params": traverse_util.unflatten_dict(
        {k: v for k, v in flat.items() if "adapter" not in k})}
    vp["batch_stats"] = va["batch_stats"]
    a, p = jax.jit(adapted.apply)(va, x)[end], jax.jit(plain.apply)(vp, x)[end]
    np.testing.assert_allclose(a, p, rtol=1e-6, atol=1e-6)
    # The default (PECoP) init is not the identity.
    default = InceptionI3d(variant="pecop", adapter_blocks=blocks, final_endpoint=end)
    d = jax.jit(default.apply)(jax.jit(default.init)(jax.random.key(0), x), x)[end]
    assert not np.allclose(d, p, atol=1e-3)


def test_adapter_init_follows_pytorch_defaults():
    x = jnp.zeros((1, 8, 32, 32, 3))
    # One block's adapter (the module is the same in every block) on a cut, jitted I3D: eager
    # initialisation of the whole network takes about a minute on 2 cores.
    model = InceptionI3d(adapter_blocks=("Mixed_3b",), final_endpoint="Mixed_3b")
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), x)["params"])
    ad = params["Mixed_3b"]["adapter"]
    np.testing.assert_array_equal(ad["scale"], 1.0)
    bound = 1 / math.sqrt(4 * 27)  # kaiming_uniform(a=sqrt 5) with fan_in = 4 x 3x3x3
    k = np.asarray(ad["down"]["kernel"])
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.9 * bound
    assert abs(k.std() - bound / math.sqrt(3)) < 0.05 * bound


def test_every_kernel_has_logical_axes_and_shards_on_a_mesh():
    model = InceptionI3d(variant="pecop", adapter_blocks=ALL)
    x = jnp.zeros((2, 8, 32, 32, 3))
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    specs = traverse_util.flatten_dict(nn.get_partition_spec(abstract)["params"])
    for path, spec in specs.items():
        assert spec is not None and len(spec) >= 1, path
        assert all(isinstance(name, str) for name in spec), path
    # Laid out on a mesh: the network cut after Mixed_3c (the same kinds of layers, a
    # fraction of the compilation time of the whole one).
    model = InceptionI3d(variant="pecop", adapter_blocks=("Mixed_3b", "Mixed_3c"),
                         final_endpoint="Mixed_3c")
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    rules = (("conv_out", "model"), ("adapter_hidden", "model"))
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
    variables = jax.jit(lambda: model.init(jax.random.key(0), x), out_shardings=shardings)()
    kernel = variables["params"]["Mixed_3c"]["b1b"]["conv"]["kernel"].value
    assert kernel.sharding.spec == P(None, None, None, None, "model")
    assert len({s.device for s in kernel.addressable_shards}) == 8
    assert kernel.addressable_shards[0].data.shape == (3, 3, 3, 128, 96)  # 192 outputs over 2
    down = variables["params"]["Mixed_3b"]["adapter"]["down"]["kernel"].value
    assert down.sharding.spec == P(None, None, None, None, "model")
    out = jax.jit(model.apply)(variables, x)
    assert out["Mixed_3c"].shape == (2, 4, 4, 4, 480)
    assert isinstance(kernel.sharding, NamedSharding)


# T = 4 and 3: the input gradient in a loop over 2 and 3 chunks of frames; T = 1: over rows;
# all sizes 1: no loop.
@pytest.mark.parametrize("shape", [(1, 4, 6, 5, 16), (2, 3, 4, 4, 8), (1, 1, 5, 3, 8),
                                   (2, 1, 1, 1, 8)])
def test_shift_grouped_conv_equals_lax_grouped_conv(shape):
    # The adapter's ``down`` conv written as shifted multiply-adds (forward without a
    # reduction, kernel gradient as a scan over taps: both for memory) against XLA's grouped
    # convolution: outputs, input and kernel gradients.
    rng = np.random.default_rng(1)
    groups = shape[-1] // 4
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, 3, 4, groups)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((*shape[:-1], groups)), jnp.float32)
    ref = lambda x, k: lax.conv_general_dilated(
        x, k, (1, 1, 1), [(1, 1)] * 3, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        feature_group_count=groups)
    want = jax.value_and_grad(lambda x, k: jnp.sum(ref(x, k) * ct), argnums=(0, 1))(x, kernel)
    got = jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(grouped_conv3d_shift(x, k) * ct),
                                     argnums=(0, 1)))(x, kernel)
    np.testing.assert_allclose(grouped_conv3d_shift(x, kernel), ref(x, kernel), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_shift_grouped_conv_temporaries_stay_small():
    # XLA materialised the 27 shifted copies of x (forward: a YNNPACK reduce fusion's inputs;
    # kernel gradient: 27 reductions' inputs), all live at once: 21x and 29x the input in
    # temporaries at Mixed_3c's shape, 1.7 GB of the 32x224x224 PECoP step (docs/PERFORMANCE.md).
    x = jax.ShapeDtypeStruct((1, 8, 14, 14, 128), jnp.float32)
    kernel = jax.ShapeDtypeStruct((3, 3, 3, 4, 32), jnp.float32)
    ct = jax.ShapeDtypeStruct((1, 8, 14, 14, 32), jnp.float32)
    x_bytes = 8 * 14 * 14 * 128 * 4
    fwd = jax.jit(grouped_conv3d_shift).lower(x, kernel).compile()
    bwd = jax.jit(jax.grad(lambda x, k, ct: jnp.sum(grouped_conv3d_shift(x, k) * ct),
                           argnums=(0, 1))).lower(x, kernel, ct).compile()
    for compiled in (fwd, bwd):
        assert compiled.memory_analysis().temp_size_in_bytes < 6 * x_bytes


def test_shift_grouped_conv_input_gradient_is_computed_once():
    # The adapter's input gradient feeds every Inception branch's BatchNorm backward. Written
    # as one elementwise expression, XLA:CPU fused (and so recomputed) it into each consuming
    # fusion: 12x in Mixed_3c. XLA's own cost analysis of the compiled gradient counts the
    # work: here four normalised branches feed the conv, and the whole gradient must cost
    # less than three times the products of one shifted sum over x (forward + input
    # gradient are two; the kernel gradient's loop body is counted once); it was 5.5x.
    shape, groups = (2, 8, 14, 14, 64), 16
    u = jax.ShapeDtypeStruct((*shape[:-1], 16), jnp.float32)
    kernel = jax.ShapeDtypeStruct((3, 3, 3, 4, groups), jnp.float32)

    def loss(u, k):
        branches = []
        for i in range(4):
            b = u * (i + 1.0)
            b = (b - b.mean((0, 1, 2, 3))) * lax.rsqrt(b.var((0, 1, 2, 3)) + 1e-3)
            branches.append(jax.nn.relu(b))
        return jnp.sum(grouped_conv3d_shift(jnp.concatenate(branches, -1), k) ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(u, kernel).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert cost["flops"] < 3 * np.prod(shape) * 27 * 2
