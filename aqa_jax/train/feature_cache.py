"""Frozen-backbone fast path (``config.precompute_features``): backbone features once per video.

When nothing in the backbone trains (``trainable`` holds no ``backbone``, ``bn`` or
``adapter`` parameter) and BatchNorm uses its running statistics (``bn_policy: frozen``),
each clip's feature is a fixed function of the video, so the loop computes it once (with the
evaluation clip layout: centre crop, no flip, no temporal shift) and trains the heads on the
cached features: the same losses and updates as recomputing them every step, minus the
training-time augmentation, at a fraction of the cost. The network gets ``from_features=True``
and skips its backbone; the train state and checkpoints still hold the backbone, so the
result scores raw videos like any other run.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from aqa_jax.methods.base import Method
from aqa_jax.progress import track
from aqa_jax.train.partition import trainable_predicate

FROZEN_BACKBONE_LABELS = ("adapter", "bn", "backbone")


def check_frozen_backbone(config: ml_collections.ConfigDict) -> None:
    """Raises unless ``config`` freezes every backbone parameter and its BN statistics."""
    is_trainable = trainable_predicate(config.trainable)
    moving = [label for label in FROZEN_BACKBONE_LABELS if is_trainable(("backbone", label, label))]
    if moving or config.bn_policy != "frozen":
        raise ValueError(
            "config.precompute_features needs a frozen backbone: trainable must hold only heads "
            f"(e.g. trainable='head'; {moving or 'no backbone label'} would train) and "
            f"bn_policy='frozen' (got {config.bn_policy!r})"
        )


def backbone_variables(state: Any) -> dict[str, Any]:
    """The backbone's params and BN statistics as host numpy, gathered from every process."""
    tree = {"params": state.params["backbone"]}
    if state.batch_stats and "backbone" in state.batch_stats:
        tree["batch_stats"] = state.batch_stats["backbone"]
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def make_clip_feature_fn(method: Method, backbone: Any, variables: Mapping[str, Any]):
    """A jitted ``(N, n_clips, T, H, W, 3) -> (N, n_clips, C)`` on this process's devices:
    ``method.backbone_features`` of ``backbone`` with ``variables`` (its params and BN
    statistics), uint8 clips first normalised as the steps do (:meth:`Method.normalize_inputs`)."""
    variables = jax.tree.map(jnp.asarray, dict(variables))

    def features(clips):
        clips = method.normalize_inputs({"clip": clips})["clip"]
        return backbone.apply(variables, clips, method=method.backbone_features)

    return jax.jit(features)


def cache_split(
    source: Sequence[Mapping[str, Any]], sampler: Any, feature_fn: Any, *, desc: str,
    videos_per_batch: int = 4,
) -> list[dict[str, Any]]:
    """Every record of ``source`` with its per-clip features as ``clip`` (its frames dropped).

    ``sampler`` is the method's :meth:`~aqa_jax.methods.base.Method.feature_cache_sampler`
    (deterministic); the record's other fields stay, so exemplar pools can still group the
    cached records. Progress is shown as :func:`aqa_jax.progress.track` does (``desc``).
    """
    out: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush():
        feats = np.asarray(feature_fn(np.stack([p["clip"] for p in pending])))
        for example, f in zip(pending, feats):
            out.append(dict(example, clip=f.astype(np.float32)))
        pending.clear()

    for index in track(range(len(source)), desc=desc, unit="video"):
        record = source[index]
        example = {k: v for k, v in record.items() if k != "frames"}
        example.update(sampler(record, None))
        pending.append(example)
        if len(pending) == videos_per_batch:
            flush()
    if pending:
        flush()
    return out
