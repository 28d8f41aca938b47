"""Per-clip-position BatchNorm batches (``clips.backbone_batches=per_position``).

MUSDL's ``MTL-AQA/main.py`` calls the I3D once per clip position in training mode:
``clip_feats[:, i] = i3d(videos[:, :, 10 * i : 10 * i + 16])``, so each position is its own BN
batch and the running statistics are updated ten times in a row. The oracle below does that
by hand: the backbone module applied alone, position after position, each call starting
from the statistics the previous one left. The network under test is a small I3D (cut at
``Conv3d_2b_1x1``: two BN layers and a max-pool) on 4-frame 16x16 clips.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aqa_jax.methods._score import per_position_batches
from aqa_jax.methods.usdl import DistributionNetwork
from aqa_jax.models.i3d import InceptionI3d

N_VIDEOS, N_CLIPS = 2, 10


@pytest.fixture(scope="module")
def setup():
    backbone = InceptionI3d(variant="pecop", final_endpoint="Conv3d_2b_1x1")
    rng = np.random.default_rng(0)
    clips = rng.uniform(-1, 1, (N_VIDEOS, N_CLIPS, 4, 16, 16, 3)).astype(np.float32)
    # clip positions with different statistics, so one BN batch and ten differ clearly
    clips = clips * (1 + np.arange(N_CLIPS, dtype=np.float32))[None, :, None, None, None, None] / 4
    net = DistributionNetwork(backbone, num_heads=2, num_bins=5, hidden=(8,), per_position=True)
    # random variables of the right shapes, without compiling an init (slow on a CPU)
    shapes = jax.eval_shape(lambda c: net.init(jax.random.key(1), {"clip": c}, train=False), clips)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), jnp.float32), shapes)
    stats = jax.tree.map(lambda v: jnp.abs(v) + 0.5, variables["batch_stats"])  # positive variances
    return backbone, net, {"params": variables["params"], "batch_stats": stats}, clips


def _oracle(backbone, variables, clips):
    """Ten train-mode calls of the backbone alone, one per clip position, in order."""
    params, stats = variables["params"]["backbone"], variables["batch_stats"]["backbone"]
    features = []
    for i in range(N_CLIPS):
        out, mutated = backbone.apply({"params": params, "batch_stats": stats}, clips[:, i], train=True,
                                      use_running_average=False, mutable=["batch_stats"])
        stats = mutated["batch_stats"]
        features.append(out[backbone.final_endpoint].mean(axis=(1, 2, 3)))
    return jnp.stack(features, axis=1), stats


def test_per_position_equals_ten_train_mode_forwards(setup):
    backbone, net, variables, clips = setup
    out, mutated = jax.jit(lambda v, c: net.apply(v, {"clip": c}, train=True, mutable=["batch_stats"]))(
        variables, clips)
    features, stats = jax.jit(lambda v, c: _oracle(backbone, v, c))(variables, clips)
    np.testing.assert_allclose(out["features"], features.mean(axis=1), rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 mutated["batch_stats"]["backbone"], stats)
    # the heads see the same pooled feature: their logits follow
    ref_logits = net.clone(from_features=True).apply({"params": variables["params"]}, {"clip": features},
                                                     train=True)["logits"]
    np.testing.assert_allclose(out["logits"], ref_logits, rtol=1e-5, atol=1e-6)

    # all clips as one batch (the default) is a different computation: one update, other stats
    together = net.clone(per_position=False)
    out1, mutated1 = jax.jit(lambda v, c: together.apply(v, {"clip": c}, train=True, mutable=["batch_stats"]))(
        variables, clips)
    assert not np.allclose(out1["features"], out["features"], atol=1e-4)
    last = lambda tree: jax.tree.leaves(tree["Conv3d_2b_1x1"])  # noqa: E731
    assert not any(np.allclose(a, b, atol=1e-4) for a, b in
                   zip(last(mutated1["batch_stats"]["backbone"]), last(stats)))


def test_per_position_gradients_and_running_statistics_modes(setup):
    backbone, net, variables, clips = setup

    def loss(params, per_position):
        out, _ = net.clone(per_position=per_position).apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, {"clip": clips}, train=True,
            mutable=["batch_stats"])
        return jnp.sum(out["logits"] ** 2)

    grads = jax.jit(jax.grad(loss), static_argnums=1)(variables["params"], True)
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(g).all() for g in leaves) and any(np.abs(g).max() > 0 for g in leaves)
    # with running statistics (evaluation, bn_policy='frozen') both layouts are the same
    a = jax.jit(lambda v, c: net.apply(v, {"clip": c}, train=False))(variables, clips)
    b = jax.jit(lambda v, c: net.clone(per_position=False).apply(v, {"clip": c}, train=False))(variables, clips)
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-6, atol=1e-6)


def test_backbone_batches_option():
    assert per_position_batches({"clips": {"backbone_batches": "per_position"}})
    assert not per_position_batches({"clips": {}})
    with pytest.raises(ValueError, match="backbone_batches='per_clip'"):
        per_position_batches({"clips": {"backbone_batches": "per_clip"}})


def test_configs_choose_the_backbone_batches():
    """``build_backbone`` carries ``clips.backbone_batches`` to every method whose I3D it builds."""
    from pathlib import Path

    from aqa_jax.config_args import load_config
    from aqa_jax.methods._score import build_backbone

    configs = Path(__file__).resolve().parents[1] / "configs"
    assert build_backbone(load_config(f"{configs}/musdl.py:dataset=mtl_aqa")).per_position
    assert build_backbone(load_config(f"{configs}/usdl.py:dataset=mtl_aqa")).per_position
    assert not build_backbone(load_config(f"{configs}/musdl.py:dataset=jigsaws")).per_position
    core = load_config(f"{configs}/core.py:dataset=mtl_aqa")
    assert not build_backbone(core).per_position
    core.clips.backbone_batches = "per_position"
    assert build_backbone(core).per_position
