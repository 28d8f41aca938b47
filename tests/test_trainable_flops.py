"""Freezing by splitting the tree: frozen weights get no gradient computation at all.

Oracle: XLA's own FLOP count (``cost_analysis``) of the compiled training step.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

from aqa_jax.models.i3d import MIXED_BLOCKS, InceptionI3d
from aqa_jax.train.partition import label_of, merge, param_labels, split_trainable


def _compiled_step_flops(trainable: str) -> float:
    """FLOPs of the compiled step, lowered on shapes alone (no initialisation is computed)."""
    model = InceptionI3d(variant="pecop", adapter_blocks=tuple(MIXED_BLOCKS))
    x = jax.ShapeDtypeStruct((1, 8, 32, 32, 3), jnp.float32)
    variables = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), x))
    train, frozen = split_trainable(variables["params"], trainable)
    opt = optax.sgd(0.01, momentum=0.9)

    def step(train, opt_state, frozen, batch_stats, x):
        def loss_fn(train):
            out = model.apply({"params": merge(train, frozen), "batch_stats": batch_stats}, x)
            return jnp.mean(out["logits"] ** 2)

        grads = jax.grad(loss_fn)(train)
        updates, opt_state = opt.update(grads, opt_state, train)
        return optax.apply_updates(train, updates), opt_state

    opt_state = jax.eval_shape(opt.init, train)
    compiled = jax.jit(step).lower(train, opt_state, frozen, variables["batch_stats"], x).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))  # an empty step has no entry


@pytest.mark.slow  # about two minutes: three I3D steps compiled (make test-all)
def test_adapter_only_step_costs_fewer_flops():
    full, adapters, none = (_compiled_step_flops(m) for m in ("full", "adapters", "none"))
    assert adapters < 0.85 * full, (adapters, full)
    assert none <= adapters


def test_labels_and_split_round_trip():
    model = InceptionI3d(variant="pecop", adapter_blocks=("Mixed_5c",))
    params = nn.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3)))))["params"]
    labels = param_labels(params)
    assert labels["Mixed_5c"]["adapter"]["scale"] == "adapter"
    assert labels["Mixed_5c"]["b0"]["bn"]["scale"] == "bn"
    assert labels["Mixed_5c"]["b0"]["conv"]["kernel"] == "backbone"
    assert labels["Logits"]["conv"]["kernel"] == "head"
    train, frozen = split_trainable(params, "adapters")
    assert set(train) == {"Mixed_5c", "Logits"} and "adapter" in train["Mixed_5c"]
    assert jax.tree.structure(merge(train, frozen)) == jax.tree.structure(params)
    bn_train, _ = split_trainable(params, "bn")
    assert all(label_of(p) in ("bn", "head") for p in
               __import__("flax").traverse_util.flatten_dict(bn_train))
    custom, _ = split_trainable(params, [r"^Mixed_5c/b0/"])
    assert list(custom) == ["Mixed_5c"] and list(custom["Mixed_5c"]) == ["b0"]
    with pytest.raises(ValueError, match="unknown trainable mode"):
        split_trainable(params, "adapter_only")
