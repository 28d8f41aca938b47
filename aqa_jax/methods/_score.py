"""What the score-regression methods (USDL, MUSDL, CoRe, TSA) share.

- :func:`clip_features`: the I3D run on every 16-frame clip of a video, each clip's final
  endpoint averaged over (T', H', W'): the 1024-d feature the official code takes from its
  average pool ((2, 7, 7) at 224 px, (2, 4, 4) at 112 px, both covering the whole map).
- :class:`MLP`: Linear/ReLU stacks with PyTorch's default initialisation.
- :class:`ScoreMethod`: the clip sampler from ``config.clips`` and the evaluation protocol of
  score regression (SRCC, R-ℓ2 x100, L2 over the whole evaluated set).

``config.clips`` (fields of :class:`aqa_jax.data.pipeline.FrameClipSampler`): ``layout``
(``window`` for MTL-AQA's 103 frames ending at ``end_frame``, ``uniform`` for JIGSAWS' 160,
``all``), ``num_frames``, ``clip_starts`` (official starts), ``preset``, ``max_shift``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aqa_jax.data.pipeline import FrameClipSampler
from aqa_jax.methods.base import Method
from aqa_jax.metrics import regression_report
from aqa_jax.methods.vspp import build_i3d
from aqa_jax.models.i3d import InceptionI3d
from aqa_jax.models.layers import torch_uniform_init
from aqa_jax.models.precision import compute_dtype


def build_backbone(config: Mapping[str, Any]) -> InceptionI3d:
    """The I3D of ``config.model``, stopping at ``Mixed_5c`` unless the config says otherwise,
    computing in ``config.compute_dtype`` (:mod:`aqa_jax.models.precision`)."""
    return build_i3d(config.model, final_endpoint=config.model.get("final_endpoint", "Mixed_5c"),
                     dtype=compute_dtype(config))


def clip_features(
    backbone: InceptionI3d, clips: jax.Array, *, train: bool, use_running_average: bool | None,
    keep_maps: bool = False, from_features: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """``(..., n_clips, T, H, W, 3)`` → features ``(..., n_clips, C)`` (and, with ``keep_maps``,
    the final maps averaged over time, ``(..., n_clips, H', W', C)``). A backbone without
    ``final_endpoint`` (the C3D) returns each clip's feature itself (its flattened pool5).

    All clips of all videos go through the I3D as one batch, so BatchNorm statistics (when
    they are used) are those of every clip together, as the official code's reshaping does.
    ``from_features``: ``clips`` already holds the features (the frozen-backbone fast path of
    :mod:`aqa_jax.train.feature_cache`) and is returned as is.
    """
    if from_features:
        return clips, None
    lead = clips.shape[:-4]
    flat = clips.reshape((-1,) + clips.shape[-4:])
    if not hasattr(backbone, "final_endpoint"):  # a backbone returning one feature per clip (C3D)
        features = backbone(flat, train=train, use_running_average=use_running_average)
        return features.reshape(lead + features.shape[1:]), None
    maps = backbone(flat, train=train, use_running_average=use_running_average)[backbone.final_endpoint]
    features = jnp.mean(maps, axis=(1, 2, 3)).reshape(lead + (maps.shape[-1],))
    if not keep_maps:
        return features, None
    return features, jnp.mean(maps, axis=1).reshape(lead + maps.shape[2:])


class MLP(nn.Module):
    """``Linear → ReLU → ... → Linear`` (no activation after the last), PyTorch init.

    ``dtype``: compute dtype of the hidden layers; the last layer (logits, regressed values)
    is always computed in float32 (see :mod:`aqa_jax.models.precision`).
    """

    features: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.features):
            fan_in = x.shape[-1]
            last = i == len(self.features) - 1
            x = nn.Dense(width, kernel_init=torch_uniform_init(fan_in),
                         bias_init=torch_uniform_init(fan_in),
                         dtype=jnp.float32 if last else self.dtype, name=f"fc{i}")(x)
            if i < len(self.features) - 1:
                x = nn.relu(x)
        return x


@dataclasses.dataclass(frozen=True)
class CachedClipSampler:
    """The example of a record whose ``clip`` already holds per-clip features."""

    label_keys: tuple[str, ...] = ()

    def __call__(self, record: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, Any]:
        keys = ("id", "clip", "score", *self.label_keys)
        return {k: record[k] for k in keys}


class ScoreMethod(Method):
    """Base of the score-regression methods: sampler from ``config.clips``, SRCC/R-ℓ2 summary.

    :meth:`per_sample` of a subclass returns at least ``score_pred`` and ``score_true`` (the
    dataset's own units); they are evaluated and written per sample to the predictions CSV.
    """

    #: set by the loop when the records hold cached backbone features (feature_cache)
    feature_mode: bool = False

    def sampler(self, train: bool) -> Any:
        return self.clip_sampler(train)

    def clip_sampler(self, train: bool) -> FrameClipSampler | CachedClipSampler:
        """record → one video's clips (or its cached features) with score and labels."""
        if self.feature_mode:
            return CachedClipSampler(self.clip_sampler_fields(train)["label_keys"])
        return FrameClipSampler(**self.clip_sampler_fields(train))

    def clip_sampler_fields(self, train: bool) -> dict[str, Any]:
        """The :class:`FrameClipSampler` fields of ``config.clips`` (no shift in evaluation)."""
        c = self.config.clips
        starts = c.get("clip_starts")
        return dict(
            layout=c.layout, num_frames=c.num_frames,
            clip_starts=tuple(starts) if isinstance(starts, (list, tuple)) else starts,
            clip_len=c.get("clip_len", 16), preset=c.preset,
            max_shift=c.get("max_shift", 0) if train else 0,
            label_keys=tuple(self.label_keys) + tuple(c.get("label_keys", ())),
            frame_step=float(c.get("frame_step", 1.0)),
        )

    def summarize(self, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        return self.report(self.per_sample(predictions))

    def report(self, columns: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The evaluation figures of the per-sample columns (SRCC, R-ℓ2, L2)."""
        return regression_report(columns["score_pred"], columns["score_true"])
