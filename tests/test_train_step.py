"""The generic train step: the step count reaches the method, and under ``bn_policy='frozen'``
only a head's own train-mode BatchNorm updates its statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aqa_jax.methods.base import Method
from aqa_jax.train.optimizer import make_optimizer
from aqa_jax.train.state import TrainState
from aqa_jax.train.step import make_train_step


class _Net(nn.Module):
    @nn.compact
    def __call__(self, batch, *, train, use_running_average=None, step=None):
        frozen = True if use_running_average is None else use_running_average
        x = nn.BatchNorm(use_running_average=frozen, name="backbone_bn")(batch["x"])
        x = nn.Dense(1, name="backbone")(x)
        head = nn.BatchNorm(use_running_average=not train, name="head_bn")(batch["x"])  # a head in train mode
        out = {"y": x + nn.Dense(1, name="head")(head)}
        if step is not None:  # the training progress the train step passes (forward_takes_step)
            out["step"] = jnp.asarray(step, jnp.float32)
        return out


class _Method(Method):
    forward_takes_step = True

    def build_model(self):
        return _Net()

    def sampler(self, train):
        raise NotImplementedError

    def loss(self, outputs, batch):
        assert set(batch) == {"x"}  # the batch is the data alone
        return jnp.mean(outputs["y"] ** 2), {"seen_step": outputs["step"]}

    def predict(self, outputs, batch):
        return outputs

    def summarize(self, predictions):
        return {}


def _run(step_per_update):
    method = _Method(ml_collections.ConfigDict())
    net = method.build_model()
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    variables = net.init(jax.random.key(0), {"x": x}, train=False)
    opt = ml_collections.ConfigDict(dict(name="sgd", lr=0.1))
    tx, schedule = make_optimizer(opt, variables["params"], "head", steps_per_epoch=1, total_steps=3)
    state = TrainState(step=jnp.int32(0), params=variables["params"],
                       batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))
    step = jax.jit(make_train_step(method, net, tx, schedule, trainable="head", bn_policy="frozen",
                                   step_per_update=step_per_update))
    batch = {"x": np.stack([x] * step_per_update) if step_per_update > 1 else x}
    seen = []
    for _ in range(3):
        state, metrics = step(state, batch)
        seen.append(float(metrics["seen_step"]))
    return variables, state, seen


def test_step_count_reaches_the_method_with_and_without_accumulation():
    for k in (1, 2):
        _, _, seen = _run(k)
        assert seen == [0.0, 1.0, 2.0]


def test_frozen_policy_keeps_backbone_statistics_and_updates_a_train_mode_head():
    variables, state, _ = _run(1)
    old, new = variables["batch_stats"], jax.device_get(state.batch_stats)
    jax.tree.map(np.testing.assert_array_equal, old["backbone_bn"], new["backbone_bn"])
    assert not np.allclose(old["head_bn"]["mean"], new["head_bn"]["mean"])
