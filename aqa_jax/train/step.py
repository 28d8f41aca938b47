"""The pure training and prediction steps, jitted with explicit shardings.

Freezing (DESIGN principle 4): the step differentiates the loss only with respect to the
trainable subtree (the frozen parameters are closed over as constants), so XLA never builds the
frozen layers' weight gradients; clipping and the ``grad_norm`` metric see only trainable
leaves. The ``optax.partition`` optimizer gives frozen leaves ``set_to_zero`` and the frozen
parameters are passed through untouched, bit for bit.

BatchNorm (``config.bn_policy``):
  ``frozen``: the backbone's running statistics normalise and stay fixed (BN in eval mode);
    a head's own BatchNorm in training mode (TSA's PSNet) still updates its statistics;
  ``batch_stats``: batch statistics normalise and the running statistics are updated, as
    PECoP's ``model.train()`` does even though its BN scale/bias are frozen.

Mixed precision (``config.compute_dtype``, :mod:`aqa_jax.models.precision`): the network's
outputs are cast to float32 before the method's loss and predictions; parameters, gradients
and optimizer state are float32 whatever the compute dtype.

Input: the batch's uint8 clips (:attr:`~aqa_jax.methods.base.Method.clip_keys`, as the data
pipeline yields them) become float32 network input inside the step, by the method's transform
preset (:meth:`~aqa_jax.methods.base.Method.normalize_inputs`: channel order, [-1, 1] or
ImageNet mean/std), before the network casts to its compute dtype; float fields pass unchanged.
With gradient accumulation each micro-batch is normalised in its turn.

Training progress: a network whose method declares
:attr:`~aqa_jax.methods.base.Method.forward_takes_step` (TSA) gets ``step=state.step`` in its
training forward (every micro-batch of an accumulated step the same); the batch itself is
only the data.

Gradient accumulation (``config.step_per_update`` = k): one step consumes k micro-batches
(a leading axis of k), runs them in sequence (BN statistics updated after each) and applies
one update with the **sum** of their gradients, as CoRe's ``loss.backward()`` k times then
``optimizer.step()`` does; the reported loss is their mean.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from aqa_jax.methods.base import Method
from aqa_jax.models.precision import float32_outputs
from aqa_jax.train.partition import merge, split_trainable
from aqa_jax.train.state import TrainState

BN_POLICIES = ("frozen", "batch_stats")


def make_train_step(
    method: Method,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: Callable[[Any], Any],
    *,
    trainable: Any,
    bn_policy: str,
    step_per_update: int = 1,
    grad_clip_norm: float = 0.0,
    seed: int = 0,
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """``train_step(state, batch) -> (state, metrics)`` (not yet jitted).

    The dropout key of a step is ``fold_in(key(seed), step)``, so a resumed run draws the same
    masks as an uninterrupted one.
    """
    if bn_policy not in BN_POLICIES:
        raise ValueError(f"config.bn_policy={bn_policy!r}; use one of {BN_POLICIES}")
    update_bn = bn_policy == "batch_stats"

    def loss_fn(train_params, frozen, batch_stats, batch, rng, step):
        batch = method.normalize_inputs(batch)  # uint8 clips -> float32 input, per micro-batch
        variables = {"params": merge(train_params, frozen)}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        kwargs = dict(train=True, use_running_average=not update_bn, rngs={"dropout": rng})
        if method.forward_takes_step:
            kwargs["step"] = step
        if batch_stats:  # "frozen" keeps the backbone's statistics; a head's train-mode BN (TSA) updates its own
            outputs, mutated = model.apply(variables, batch, mutable=["batch_stats"], **kwargs)
            batch_stats = mutated["batch_stats"]
        else:
            outputs = model.apply(variables, batch, **kwargs)
        loss, metrics = method.loss(float32_outputs(outputs), batch)
        return loss, (metrics, batch_stats)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
        train_params, frozen = split_trainable(state.params, trainable)
        rng = jax.random.fold_in(jax.random.key(seed), state.step)
        if step_per_update == 1:
            (loss, (metrics, batch_stats)), grads = grad_fn(
                train_params, frozen, state.batch_stats, batch, rng, state.step
            )
        else:
            def micro_step(carry, inputs):
                grads_sum, stats = carry
                micro, key = inputs
                (loss, (metrics, stats)), grads = grad_fn(train_params, frozen, stats, micro, key,
                                                          state.step)
                return (jax.tree.map(jnp.add, grads_sum, grads), stats), (loss, metrics)

            zeros = jax.tree.map(jnp.zeros_like, train_params)
            keys = jax.random.split(rng, step_per_update)
            (grads, batch_stats), (losses, metrics) = jax.lax.scan(
                micro_step, (zeros, state.batch_stats), (dict(batch), keys)
            )
            loss, metrics = losses.mean(), jax.tree.map(jnp.mean, metrics)
        grad_norm = optax.tree.norm(grads)
        if grad_clip_norm:
            grads = jax.tree.map(
                lambda g: g * jnp.minimum(1.0, grad_clip_norm / (grad_norm + 1e-6)), grads
            )
        full_grads = merge(grads, jax.tree.map(jnp.zeros_like, frozen))
        updates, opt_state = tx.update(full_grads, state.opt_state, state.params)
        train_updates, _ = split_trainable(updates, trainable)
        new_train = optax.apply_updates(train_params, train_updates)
        metrics = dict(metrics)
        metrics.update(
            loss=loss,
            grad_norm=grad_norm,
            param_norm=optax.tree.norm(new_train),
            lr=jnp.asarray(schedule(state.step), jnp.float32),
        )
        new_state = TrainState(
            step=state.step + 1,
            params=merge(new_train, frozen),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        return new_state, metrics

    return train_step


def make_predict_step(method: Method, model: nn.Module) -> Callable:
    """``predict_step(state, batch) -> per-example predictions`` (eval mode: running BN
    statistics, no dropout)."""

    def predict_step(state: TrainState, batch: Mapping[str, jax.Array]):
        batch = method.normalize_inputs(batch)
        variables = {"params": state.params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        outputs = model.apply(variables, batch, train=False)
        return method.predict(float32_outputs(outputs), batch)

    return predict_step
