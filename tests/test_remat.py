"""InceptionI3d's ``remat`` policies change what the training step stores, never the math.

Oracle: the same network without rematerialisation (``remat='none'``): with every policy the
parameters, the train-mode loss, the BatchNorm statistics updates and the gradients of every
parameter are equal to 1e-6.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aqa_jax.models.i3d import REMAT_POLICIES, InceptionI3d, build_i3d

# Stem, two Mixed blocks with adapters and the max-pool between the stem units: every kind of
# layer the policies wrap, at a size that compiles in seconds.
SMALL = dict(variant="pecop", adapter_blocks=("Mixed_3b", "Mixed_3c"), final_endpoint="Mixed_3c")
X_SHAPE = (1, 8, 32, 32, 3)


def _loss_and_grads(remat: str, variables, x):
    model = InceptionI3d(**SMALL, remat=remat)

    def loss_fn(params):
        out, updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        feats = out["Mixed_3c"]
        # a loss that reaches every channel and position, with a non-constant gradient
        return jnp.mean(jnp.square(feats)) + jnp.mean(feats[..., ::7]), updates["batch_stats"]

    (loss, stats), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
    return loss, stats, grads


@pytest.fixture(scope="module")
def reference():
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, X_SHAPE).astype(np.float32))
    variables = nn.unbox(jax.jit(InceptionI3d(**SMALL).init)(jax.random.key(0), x))
    return x, variables, _loss_and_grads("none", variables, x)


@pytest.mark.parametrize("remat", [p for p in REMAT_POLICIES if p != "none"])
def test_remat_keeps_parameters_loss_statistics_and_gradients(reference, remat):
    x, variables, (loss0, stats0, grads0) = reference
    shapes = nn.unbox(jax.eval_shape(InceptionI3d(**SMALL, remat=remat).init, jax.random.key(0), x))
    assert jax.tree.structure(shapes) == jax.tree.structure(variables)
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(lambda v: v.shape, variables)

    loss, stats, grads = _loss_and_grads(remat, variables, x)
    np.testing.assert_allclose(loss, loss0, rtol=1e-6)
    for tree, ref in ((stats, stats0), (grads, grads0)):
        flat, flat_ref = jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(ref)
        assert len(flat) == len(flat_ref)
        # the whole tree to 1e-6 (relative 2-norm); each leaf to 1e-5 of its largest entry:
        # recomputed activations are fused differently, so fp32 sums over the 4096 stem
        # positions (BN bias gradients) may round differently (seen: 2.8e-6 with 'convs')
        diff = sum(float(jnp.sum(jnp.square(g - w))) for (_, g), w in zip(flat, flat_ref))
        norm = sum(float(jnp.sum(jnp.square(w))) for w in flat_ref)
        assert np.sqrt(diff / norm) <= 1e-6, (remat, np.sqrt(diff / norm))
        for (path, got), want in zip(flat, flat_ref):
            scale = max(float(jnp.max(jnp.abs(want))), 1e-30)
            err = float(jnp.max(jnp.abs(got - want))) / scale
            assert err <= 1e-5, (remat, jax.tree_util.keystr(path), err)


def test_remat_is_applied_and_checked():
    x = jnp.zeros(X_SHAPE)
    shapes = nn.unbox(jax.eval_shape(InceptionI3d(**SMALL).init, jax.random.key(0), x))

    def n_remat(remat):
        model = InceptionI3d(**SMALL, remat=remat)
        loss = lambda p, stats: jnp.sum(
            model.apply({"params": p, "batch_stats": stats}, x,
                        train=True, mutable=["batch_stats"])[0]["Mixed_3c"])
        jaxpr = jax.make_jaxpr(jax.grad(loss))(shapes["params"], shapes["batch_stats"])
        return len(re.findall(r"\b(remat2|checkpoint)\[", str(jaxpr)))

    assert n_remat("none") == 0
    assert n_remat("blocks") > 0 and n_remat("convs") > 0
    with pytest.raises(ValueError, match="remat policy"):
        InceptionI3d(**SMALL, remat="everything").init(jax.random.key(0), x)
    # the model config key reaches the module
    assert build_i3d({**SMALL, "remat": "blocks"}).remat == "blocks"

