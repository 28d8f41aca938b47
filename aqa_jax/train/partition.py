"""Freezing as data: label every parameter from its path, split the tree by trainable labels.

Labels (first match wins): ``adapter`` (PECoP 3D-Adapters), ``head`` (logits and task
heads), ``bn`` (BatchNorm scale/bias), ``backbone`` (everything else). Gradients are then
taken only with respect to the trainable part (:func:`split_trainable`), so XLA never
computes the weight gradients of frozen layers.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from flax import traverse_util

LABELS = ("adapter", "head", "bn", "backbone")
HEAD_MODULES = ("Logits", "head", "heads")

# Named trainable sets (PECoP §7 ablation names in comments).
TRAINABLE_MODES: dict[str, tuple[str, ...]] = {
    "adapters": ("adapter", "head"),  # PECoP
    "bn": ("bn", "head"),  # HPT+BN
    "full": LABELS,  # Dom-S, fine-tuning
    "head": ("head",),  # frozen backbone (adapters included), heads only
    "none": (),  # feature extraction
}


def label_of(path: tuple[str, ...]) -> str:
    """The label of one parameter path (module names then leaf name)."""
    if "adapter" in path:
        return "adapter"
    if any(p in HEAD_MODULES or p.startswith("head") for p in path):
        return "head"
    if "bn" in path:
        return "bn"
    return "backbone"


def param_labels(params: Mapping[str, Any]) -> dict[str, Any]:
    """A tree like ``params`` holding each leaf's label (for ``optax.multi_transform``)."""
    flat = traverse_util.flatten_dict(dict(params))
    return traverse_util.unflatten_dict({k: label_of(k) for k in flat})


def trainable_predicate(trainable: str | Iterable[str]):
    """``path -> bool`` from a mode name, a list of labels, or regexes over 'a/b/c' paths."""
    if isinstance(trainable, str):
        if trainable not in TRAINABLE_MODES:
            raise ValueError(
                f"unknown trainable mode {trainable!r}; use one of {sorted(TRAINABLE_MODES)} "
                "or a list of labels/regexes"
            )
        trainable = TRAINABLE_MODES[trainable]
    labels = {t for t in trainable if t in LABELS}
    patterns = [re.compile(t) for t in trainable if t not in LABELS]
    return lambda path: label_of(path) in labels or any(
        p.search("/".join(path)) for p in patterns
    )


def split_trainable(
    params: Mapping[str, Any], trainable: str | Iterable[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainable, frozen) subtrees of ``params``; :func:`merge` puts them back together."""
    is_trainable = trainable_predicate(trainable)
    flat = traverse_util.flatten_dict(dict(params))
    train = {k: v for k, v in flat.items() if is_trainable(k)}
    frozen = {k: v for k, v in flat.items() if not is_trainable(k)}
    return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)


def merge(trainable: Mapping[str, Any], frozen: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`split_trainable`."""
    flat = traverse_util.flatten_dict(dict(trainable))
    flat.update(traverse_util.flatten_dict(dict(frozen)))
    return traverse_util.unflatten_dict(flat)
