"""Mixed precision (``config.compute_dtype='bfloat16'``): bf16 compute, fp32 state.

Oracle: the same network and step in float32. Tolerances come from bfloat16's unit roundoff
u = 2^-9 ≈ 2e-3 (8-bit significand): every layer rounds its input, its weights and its output
to bf16, so a layer's output carries a relative error of a few u (≈ 5e-3); the tiny I3D (stem
to Mixed_3b with its adapter) has ~7 sequential convolutions, and BatchNorm renormalises
between them so the errors add rather than compound: a relative L2 error of order
sqrt(7) * 5e-3 ≈ 1.3e-2 is expected (1.7e-2 measured). We assert < 4e-2, and > 1e-4 so that a
run that silently stayed in float32 (error ~1e-7) fails. Gradients carry errors of the same
order (the adapters' first SGD update: 1.0e-2 measured, < 5e-2 asserted). The loss and the
gradient norm are averages over many elements, where independent rounding errors cancel
(4e-4 and 3e-4 measured): < 1e-2 and < 2e-2 asserted.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pathlib import Path

from aqa_jax.models.i3d import InceptionI3d
from aqa_jax.models.precision import compute_dtype, float32_outputs
from aqa_jax.weights.init import numpy_variables

REPO = Path(__file__).resolve().parents[1]

TINY = dict(variant="pecop", adapter_blocks=("Mixed_3b",), final_endpoint="Mixed_3b")


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _clip(shape=(2, 8, 32, 32, 3)) -> jax.Array:
    return jax.random.normal(jax.random.key(1), shape, jnp.float32)


def _eqns(jaxpr):
    """Every equation of a jaxpr, recursing into sub-jaxprs (pjit, custom_vjp, scan...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _eqns(inner)


def test_compute_dtype_names():
    assert compute_dtype({"compute_dtype": "bfloat16"}) == jnp.bfloat16
    assert compute_dtype({}) == jnp.float32 and compute_dtype(None) == jnp.float32
    with pytest.raises(ValueError, match="compute_dtype='float16'"):
        compute_dtype("float16")
    out = float32_outputs({"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2, jnp.int32)})
    assert out["a"].dtype == jnp.float32 and out["b"].dtype == jnp.int32


def test_bf16_forward_close_to_fp32_and_activations_are_bf16():
    x = _clip()
    f32 = InceptionI3d(**TINY)
    bf16 = InceptionI3d(**TINY, dtype=jnp.bfloat16)
    variables = numpy_variables(jax.eval_shape(f32.init, jax.random.key(0), x))
    # parameters and BN statistics are float32 in the bf16 network too, and the same tree
    shapes = nn.unbox(jax.eval_shape(bf16.init, jax.random.key(0), x))
    assert jax.tree.structure(variables) == jax.tree.structure(shapes)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}

    kw = dict(use_running_average=False, mutable=["batch_stats", "intermediates"],
              capture_intermediates=True)
    ref, _ = jax.jit(lambda v, x: f32.apply(v, x, use_running_average=False,
                                            mutable=["batch_stats"]))(variables, x)
    out, state = jax.jit(lambda v, x: bf16.apply(v, x, **kw))(variables, x)
    y, y_ref = out["Mixed_3b"], ref["Mixed_3b"]
    assert y.dtype == jnp.bfloat16 and y_ref.dtype == jnp.float32
    err = _rel(y, y_ref)
    assert 1e-4 < err < 4e-2, err

    # every conv, BatchNorm and adapter inside produced bf16; BN statistics stayed float32
    inter = nn.unbox(state["intermediates"])
    dtypes = {}
    for path, value in jax.tree_util.tree_flatten_with_path(inter)[0]:
        names = [getattr(k, "key", str(k)) for k in path]
        kind = next((n for n in reversed(names) if n in ("conv", "bn", "adapter", "up", "down")), None)
        if kind:
            dtypes.setdefault(kind, set()).add(value.dtype)
    assert set(dtypes) >= {"conv", "bn", "adapter", "up", "down"}, set(dtypes)
    assert all(d == {jnp.dtype(jnp.bfloat16)} for d in dtypes.values()), dtypes
    assert {leaf.dtype for leaf in jax.tree.leaves(state["batch_stats"])} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("config_spec", ["pecop.py:dataset=synthetic_aqa", "usdl.py:dataset=mtl_aqa",
                                         "musdl.py:dataset=mtl_aqa", "core.py:dataset=mtl_aqa",
                                         "tsa.py:dataset=fine_diving"])
def test_every_method_builds_with_the_compute_dtype(config_spec):
    from aqa_jax.config_args import load_config
    from aqa_jax.methods import get_method

    config = load_config(f"{REPO}/configs/{config_spec}")
    assert compute_dtype(config) == jnp.float32  # the default
    config.compute_dtype = "bfloat16"
    model = get_method(config.method)(config).build_model()
    assert model.backbone.dtype == jnp.bfloat16
    assert getattr(model, "dtype", jnp.bfloat16) == jnp.bfloat16  # VSPP: heads are projections


def test_heads_hidden_layers_bf16_outputs_fp32():
    """Score heads: hidden layers in the compute dtype, the last projection in float32."""
    from aqa_jax.methods._score import MLP
    from aqa_jax.methods.core import RegressionTree
    from aqa_jax.methods.tsa import Decoder

    x = jax.random.normal(jax.random.key(0), (3, 16), jnp.bfloat16)

    @jax.jit
    def run(key, x):  # one compilation for the three heads
        k1, k2, k3 = jax.random.split(key, 3)
        mlp = MLP((8, 4), jnp.bfloat16).init_with_output(k1, x, capture_intermediates=True)
        tree = RegressionTree(3, 8, jnp.bfloat16).init_with_output(k2, x)[0]
        seq = x.reshape(3, 2, 8)
        fused = Decoder(1, 2, 2.0, jnp.bfloat16).init_with_output(k3, seq, seq)[0]
        return mlp, tree, fused

    (out, state), (logp, reg), fused = run(jax.random.key(1), x)
    assert state["intermediates"]["fc0"]["__call__"][0].dtype == jnp.bfloat16
    assert out.dtype == jnp.float32
    assert {p.dtype for p in jax.tree.leaves(state["params"])} == {jnp.dtype(jnp.float32)}
    assert logp.dtype == reg.dtype == jnp.float32
    assert fused.dtype == jnp.bfloat16


@pytest.mark.parametrize("conv_impl", ["xla", "planes"])
def test_bf16_convolutions_in_jaxpr_and_fp32_grads(conv_impl):
    """Every dense convolution and matmul of the traced computation has bf16 operands: forward
    and backward on the GPU/TPU path (``xla``); the forward on the CPU path (``planes``, whose
    2-D convs accumulate in float32, so their cotangents arrive in float32 — XLA:CPU gains
    nothing from bf16 anyway, docs/PERFORMANCE.md). Parameter gradients are float32."""
    x = _clip((1, 8, 32, 32, 3))
    model = InceptionI3d(**TINY, conv_impl=conv_impl, dtype=jnp.bfloat16)
    shapes = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), x)))
    params, stats = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                 (shapes["params"], shapes["batch_stats"]))

    def loss(params, x):
        out, _ = model.apply({"params": params, "batch_stats": stats},
                             x, use_running_average=False, mutable=["batch_stats"])
        return jnp.mean(float32_outputs(out["Mixed_3b"]) ** 2)

    def heavy_operand_dtypes(jaxpr, minimum):
        heavy = [e for e in _eqns(jaxpr.jaxpr)
                 if e.primitive.name in ("conv_general_dilated", "dot_general")]
        assert len(heavy) >= minimum, len(heavy)
        return {str(v.aval.dtype) for e in heavy for v in e.invars}

    assert heavy_operand_dtypes(jax.make_jaxpr(loss)(params, x), 10) == {"bfloat16"}
    grad_jaxpr = jax.make_jaxpr(jax.grad(loss))(params, x)
    if conv_impl == "xla":  # forward, input and weight gradients of the 10 convs
        assert heavy_operand_dtypes(grad_jaxpr, 3 * 10 - 1) == {"bfloat16"}
    assert {str(a.dtype) for a in grad_jaxpr.out_avals} == {"float32"}


def test_pecop_debug_step_bf16_close_to_fp32():
    """One PECoP (VSPP, adapters-only) training step of the debug config, tiny I3D, in both
    precisions through the real training core: params, gradients' updates and optimizer state
    stay float32; loss and grad norm are close."""
    from aqa_jax.config_args import load_config
    from aqa_jax.methods import get_method
    from aqa_jax.train.optimizer import make_optimizer
    from aqa_jax.train.sharding import batch_sharding, global_batch, make_mesh, replicated
    from aqa_jax.train.state import TrainState, abstract_variables, put_global, state_shardings
    from aqa_jax.train.step import make_train_step

    rng = np.random.default_rng(0)
    host = {"clip": rng.standard_normal((4, 8, 32, 32, 3)).astype(np.float32),
            "speed": rng.integers(0, 5, 4).astype(np.int32),
            "segment": rng.integers(0, 4, 4).astype(np.int32)}
    config = load_config(f"{REPO}/configs/pecop.py:dataset=synthetic_aqa,debug")
    config.model.update(adapter_blocks=("Mixed_3b",), final_endpoint="Mixed_3b")
    # the PECoP recipe's SGD (the debug config's Adam makes its first update ~lr * sign(g))
    config.optimizer.update(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4)
    mesh = make_mesh(config.mesh, jax.devices()[:1])
    example = {k: v[:1] for k, v in host.items()}
    state = None
    results = {}
    for dtype in ("float32", "bfloat16"):
        config.compute_dtype = dtype
        method = get_method("vspp")(config)
        model = method.build_model()
        assert model.backbone.dtype == compute_dtype(dtype)
        boxed = abstract_variables(model, example)
        tx, schedule = make_optimizer(config.optimizer, nn.unbox(boxed["params"]), config.trainable,
                                      steps_per_epoch=10, total_steps=10)
        shardings = state_shardings(boxed, tx, mesh, [tuple(r) for r in config.logical_axis_rules])
        if state is None:  # one initial state (float32 in both precisions) for both steps
            variables = numpy_variables(boxed)
            params = put_global(variables["params"], shardings.params)
            state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               batch_stats=put_global(variables["batch_stats"], shardings.batch_stats),
                               opt_state=tx.init(params))
        step = jax.jit(make_train_step(method, model, tx, schedule, trainable=config.trainable,
                                       bn_policy=config.bn_policy),
                       in_shardings=(shardings, {k: batch_sharding(mesh) for k in host}),
                       out_shardings=(shardings, replicated(mesh)))
        new_state, metrics = step(state, global_batch(host, mesh))
        for tree in (new_state.params, new_state.opt_state, new_state.batch_stats):
            assert {str(x.dtype) for x in jax.tree.leaves(tree) if x.ndim} == {"float32"}
        results[dtype] = (jax.device_get(metrics), jax.device_get(new_state.params))
    init = jax.device_get(state.params)
    (m32, p32), (m16, p16) = results["float32"], results["bfloat16"]
    assert np.isfinite(m16["loss"])
    assert abs(m16["loss"] - m32["loss"]) / m32["loss"] < 1e-2, (m16["loss"], m32["loss"])
    assert abs(m16["grad_norm"] - m32["grad_norm"]) / m32["grad_norm"] < 2e-2
    # the adapters' first SGD update (-lr x (gradient + weight decay)) is alike in both
    get = lambda tree: tree["backbone"]["Mixed_3b"]["adapter"]["up"]["kernel"]  # noqa: E731
    update16, update32 = get(p16) - get(init), get(p32) - get(init)
    assert np.abs(update32).max() > 0
    assert _rel(update16, update32) < 5e-2, _rel(update16, update32)
