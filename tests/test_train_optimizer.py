"""Optimizers, schedules, per-label learning rates and gradient accumulation against PyTorch
and hand-computed updates."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aqa_jax.methods.base import Method
from aqa_jax.train.optimizer import make_optimizer, make_schedule
from aqa_jax.train.state import TrainState
from aqa_jax.train.step import make_train_step

torch = pytest.importorskip("torch")

PECOP = dict(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="cosine_epochs",
             t_max=22, eta_min=1e-6)


def test_cosine_epochs_is_torch_cosine_annealing_stepped_per_epoch():
    steps_per_epoch = 3
    schedule = make_schedule(PECOP, steps_per_epoch=steps_per_epoch, total_steps=24)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=22, eta_min=1e-6)
    expected = []
    for _ in range(8):
        expected += [opt.param_groups[0]["lr"]] * steps_per_epoch
        opt.step()
        sched.step()
    got = [float(schedule(s)) for s in range(24)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The reference's hand-derived per-epoch values (pecop_i3d.md §2).
    np.testing.assert_allclose(got[::3], [0.01, 0.00995, 0.00980, 0.00955, 0.00921, 0.00878,
                                          0.00827, 0.00770], atol=6e-6)


@pytest.mark.parametrize("opt_config, torch_opt", [
    (dict(PECOP, schedule="constant"),
     lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-4)),
    (dict(name="adam", lr=1e-3, weight_decay=1e-4),
     lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4)),
])
def test_updates_equal_torch_optimizers(opt_config, torch_opt):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    targets = rng.standard_normal((5, 4, 3)).astype(np.float32)
    params = {"backbone": {"w": jnp.asarray(w0)}}
    tx, _ = make_optimizer(opt_config, params, "full", steps_per_epoch=1, total_steps=5)
    state = tx.init(params)
    tw = torch.nn.Parameter(torch.tensor(w0))
    topt = torch_opt([tw])
    for target in targets:
        grads = jax.grad(lambda p: jnp.sum((p["backbone"]["w"] - target) ** 2 * 0.5))(params)
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(jnp.add, params, updates)
        topt.zero_grad()
        (0.5 * ((tw - torch.tensor(target)) ** 2).sum()).backward()
        topt.step()
    np.testing.assert_allclose(np.asarray(params["backbone"]["w"]), tw.detach().numpy(), rtol=1e-5)


def test_lr_factors_scale_each_label_and_frozen_leaves_get_zero():
    params = {"backbone": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(3)},
              "x": {"bn": {"scale": jnp.ones(3)}}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 2.0), params)
    config = dict(name="sgd", lr=0.5, lr_factors={"backbone": 0.1})
    tx, _ = make_optimizer(config, params, ["backbone", "head"], steps_per_epoch=1, total_steps=1)
    updates, state = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["backbone"]["w"], -0.5 * 0.1 * 2.0)
    np.testing.assert_allclose(updates["head"]["w"], -0.5 * 2.0)
    np.testing.assert_array_equal(updates["x"]["bn"]["scale"], 0.0)
    with pytest.raises(ValueError, match="unknown labels"):
        make_optimizer(dict(config, lr_factors={"backbon": 0.1}), params, "full",
                       steps_per_epoch=1, total_steps=1)


class _Regression(Method):
    """A linear 'head' on a 2-d input, squared error: enough to test the step."""

    def build_model(self):
        class Net(nn.Module):
            @nn.compact
            def __call__(self, batch, *, train, use_running_average=None):
                return {"y": nn.Dense(1, name="head")(batch["x"])[:, 0]}

        return Net()

    def sampler(self, train):
        return lambda record, rng: dict(record)

    def loss(self, outputs, batch):
        return jnp.mean((outputs["y"] - batch["t"]) ** 2), {}

    def predict(self, outputs, batch):
        return outputs

    def summarize(self, predictions):
        return {}


def _one_step(step_per_update: int, batch):
    method = _Regression(None)
    model = method.build_model()
    params = model.init(jax.random.key(0), {"x": jnp.zeros((1, 2))}, train=False)["params"]
    tx, schedule = make_optimizer(dict(name="sgd", lr=0.1), params, "full",
                                  steps_per_epoch=1, total_steps=1)
    state = TrainState(jnp.zeros((), jnp.int32), params, {}, tx.init(params))
    step = make_train_step(method, model, tx, schedule, trainable="full", bn_policy="frozen",
                           step_per_update=step_per_update)
    new, metrics = jax.jit(step)(state, batch)
    return params, new.params, metrics


def test_gradient_accumulation_sums_micro_batch_gradients():
    x = np.array([[1.0, 2.0], [0.5, -1.0]], np.float32)
    t = np.array([1.0, -2.0], np.float32)
    p0, p1, m1 = _one_step(1, {"x": x, "t": t})
    # k = 2 identical micro-batches: CoRe calls backward twice before the optimizer step,
    # so the update is twice the single-batch one; the reported loss is the mean.
    _, p2, m2 = _one_step(2, {"x": np.stack([x, x]), "t": np.stack([t, t])})
    for path in (("head", "kernel"), ("head", "bias")):
        d1 = p1[path[0]][path[1]] - p0[path[0]][path[1]]
        d2 = p2[path[0]][path[1]] - p0[path[0]][path[1]]
        np.testing.assert_allclose(d2, 2 * d1, rtol=1e-5)
    np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-6)
    # And the hand-computed SGD step for k = 1: w -= lr * dL/dw, L = mean((xw + b - t)^2).
    w, b = np.asarray(p0["head"]["kernel"])[:, 0], float(p0["head"]["bias"][0])
    residual = x @ w + b - t
    np.testing.assert_allclose(np.asarray(p1["head"]["kernel"])[:, 0],
                               w - 0.1 * (2 * residual @ x / 2), rtol=1e-5)
