"""Optimizers and learning-rate schedules from ``config.optimizer``, freezing by label.

The transformation is ``optax.partition`` over parameter labels (:mod:`.partition`): every
trainable label gets its own optimizer with its learning-rate factor (CoRe and TSA train the
backbone at 0.1x the head's rate), and every frozen leaf goes to ``optax.set_to_zero()``, so
the optimizer state holds momenta/moments for trainable leaves only.

``config.optimizer`` fields:
  name: ``sgd`` (PyTorch semantics: L2 weight decay added to the gradient before momentum,
    dampening 0; PECoP) | ``adam`` (PyTorch Adam: L2 decay added to the gradient; CoRe, TSA,
    USDL) | ``adamw`` (decoupled decay).
  lr, momentum, nesterov, weight_decay, b1, b2, eps.
  schedule: ``constant`` | ``cosine_epochs`` (``CosineAnnealingLR`` stepped once per epoch,
    ``T_max = t_max`` epochs, floor ``eta_min``; PECoP) | ``cosine`` (per step to ``eta_min``
    over the whole run).
  lr_factors: ``{label: factor}``; labels absent get 1.
  grad_clip_norm: global-norm clip over the trainable leaves (0 = off; applied in the step).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import optax
from flax import traverse_util

from aqa_jax.train.partition import label_of, trainable_predicate

FROZEN = "frozen"
Schedule = Callable[[Any], Any]


def make_schedule(opt: Mapping[str, Any], *, steps_per_epoch: int, total_steps: int) -> Schedule:
    """The learning-rate schedule (a function of the optimizer step)."""
    base = float(opt["lr"])
    kind = opt.get("schedule", "constant")
    eta_min = float(opt.get("eta_min", 0.0))
    if kind == "constant":
        return optax.constant_schedule(base)
    if kind == "cosine_epochs":
        t_max = float(opt["t_max"])

        def schedule(step):
            epoch = jnp.floor_divide(step, max(1, steps_per_epoch))
            return eta_min + (base - eta_min) * (1 + jnp.cos(math.pi * epoch / t_max)) / 2

        return schedule
    if kind == "cosine":
        return optax.cosine_decay_schedule(base, max(1, total_steps), alpha=eta_min / base)
    raise ValueError(f"unknown optimizer.schedule {kind!r}: use constant, cosine_epochs or cosine")


def _base_optimizer(opt: Mapping[str, Any], lr: Schedule) -> optax.GradientTransformation:
    name = opt.get("name", "sgd")
    wd = float(opt.get("weight_decay", 0.0))
    decay = [optax.add_decayed_weights(wd)] if wd else []
    if name == "sgd":
        return optax.chain(
            *decay,
            optax.sgd(lr, momentum=float(opt.get("momentum", 0.0)) or None,
                      nesterov=bool(opt.get("nesterov", False))),
        )
    adam_kw = dict(b1=float(opt.get("b1", 0.9)), b2=float(opt.get("b2", 0.999)),
                   eps=float(opt.get("eps", 1e-8)))
    if name == "adam":
        return optax.chain(*decay, optax.adam(lr, **adam_kw))
    if name == "adamw":
        return optax.adamw(lr, weight_decay=wd, **adam_kw)
    raise ValueError(f"unknown optimizer.name {name!r}: use sgd, adam or adamw")


def optimizer_labels(params: Mapping[str, Any], trainable: Any) -> dict[str, Any]:
    """Each leaf's optimizer group: its label (:func:`label_of`) if trainable, else 'frozen'."""
    is_trainable = trainable_predicate(trainable)
    flat = traverse_util.flatten_dict(dict(params))
    return traverse_util.unflatten_dict(
        {k: label_of(k) if is_trainable(k) else FROZEN for k in flat}
    )


def make_optimizer(
    opt: Mapping[str, Any], params: Mapping[str, Any], trainable: Any, *,
    steps_per_epoch: int, total_steps: int,
) -> tuple[optax.GradientTransformation, Schedule]:
    """(``optax.partition`` transformation over ``params``' labels, base schedule)."""
    schedule = make_schedule(opt, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    labels = optimizer_labels(params, trainable)
    groups = set(traverse_util.flatten_dict(labels).values()) | {FROZEN}
    factors = dict(opt.get("lr_factors", {}) or {})
    unknown = set(factors) - {"adapter", "head", "bn", "backbone"}
    if unknown:
        raise ValueError(f"optimizer.lr_factors has unknown labels {sorted(unknown)}")
    transforms = {FROZEN: optax.set_to_zero()}
    for group in groups - {FROZEN}:
        factor = float(factors.get(group, 1.0))
        lr = schedule if factor == 1.0 else (lambda s, f=factor: f * schedule(s))
        transforms[group] = _base_optimizer(opt, lr)
    return optax.partition(transforms, labels), schedule
