"""What the score-regression methods (USDL, MUSDL, CoRe, TSA) share.

- :func:`clip_features`: the I3D run on every 16-frame clip of a video, each clip's final
  endpoint averaged over (T', H', W'): the 1024-d feature the official code takes from its
  average pool ((2, 7, 7) at 224 px, (2, 4, 4) at 112 px, both covering the whole map).
- :class:`MLP`: Linear/ReLU stacks with PyTorch's default initialisation.
- :class:`ScoreMethod`: the clip sampler from ``config.clips`` and the evaluation protocol of
  score regression (SRCC, R-ℓ2 x100, L2 over the whole evaluated set).

``config.clips`` (fields of :class:`aqa_jax.data.pipeline.FrameClipSampler`): ``layout``
(``window`` for MTL-AQA's 103 frames ending at ``end_frame``, ``uniform`` for JIGSAWS' 160,
``all``), ``num_frames``, ``clip_starts`` (official starts), ``preset``, ``max_shift``; and
``backbone_batches`` (:data:`BACKBONE_BATCHES`; :func:`build_backbone` gives it to the
backbone, so every method whose I3D it builds follows it: USDL/MUSDL, CoRe, TSA): how the
clips meet the backbone's BatchNorm in training.

BatchNorm batches in the official code (what ``backbone_batches`` reproduces):

- ``all_clips``: every clip of every video in one backbone batch, one BN batch and one
  running-statistics update per step: MUSDL on JIGSAWS (``JIGSAWS/main.py`` concatenates the
  ten clip positions), CoRe (``models/Backbone.py``, query and exemplar together) and TSA
  (FineDiving ``models/Backbone.py``).
- ``per_position``: one backbone call per clip position over the batch's videos, so ten BN
  batches and ten sequential running-statistics updates per step: MUSDL/USDL on MTL-AQA
  (``MTL-AQA/main.py`` calls the I3D once per clip position).

The two differ only where BatchNorm normalises with batch statistics (training with
``bn_policy='batch_stats'``); with running statistics (evaluation, ``bn_policy='frozen'``, the
feature cache of :mod:`aqa_jax.train.feature_cache`) every clip is normalised alone and both
give the same features, so :func:`clip_features` then runs all clips as one batch.
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
from aqa_jax.models.i3d import InceptionI3d
from aqa_jax.models.layers import torch_uniform_init
from aqa_jax.models.precision import compute_dtype


class ClipBackbone(InceptionI3d):
    """An :class:`InceptionI3d` that also says how :func:`clip_features` batches its clips
    (``per_position``: ``config.clips.backbone_batches == 'per_position'``). Same parameters,
    same outputs."""

    per_position: bool = False


def build_backbone(config: Mapping[str, Any]) -> InceptionI3d:
    """The I3D of ``config.model``, stopping at ``Mixed_5c`` unless the config says otherwise,
    computing in ``config.compute_dtype`` (:mod:`aqa_jax.models.precision`), with the BN
    batching of ``config.clips.backbone_batches``."""
    fields = dict(config.model)
    fields["adapter_blocks"] = tuple(fields.get("adapter_blocks", ()))
    fields.update(final_endpoint=config.model.get("final_endpoint", "Mixed_5c"),
                  dtype=compute_dtype(config), per_position=per_position_batches(config))
    return ClipBackbone(**fields)


BACKBONE_BATCHES = ("all_clips", "per_position")


def per_position_batches(config: Mapping[str, Any]) -> bool:
    """Whether ``config.clips.backbone_batches`` asks for one backbone batch per clip position
    (default ``all_clips``; see the module docstring)."""
    value = config.get("clips", {}).get("backbone_batches", "all_clips")
    if value not in BACKBONE_BATCHES:
        raise ValueError(f"config.clips.backbone_batches={value!r}; use one of {BACKBONE_BATCHES}")
    return value == "per_position"


def _reduce(backbone: Any, out: Any, keep_maps: bool) -> tuple[jax.Array, jax.Array | None]:
    """A backbone's output for ``(N, T, H, W, 3)`` → (features (N, C), maps (N, H', W', C))."""
    if not hasattr(backbone, "final_endpoint"):  # a backbone returning one feature per clip (C3D)
        return out, None
    maps = out[backbone.final_endpoint]
    return jnp.mean(maps, axis=(1, 2, 3)), (jnp.mean(maps, axis=1) if keep_maps else None)


def _per_position_features(
    backbone: InceptionI3d, clips: jax.Array, *, train: bool, keep_maps: bool,
) -> tuple[jax.Array, jax.Array | None]:
    """:func:`clip_features` with one backbone call (one BN batch) per clip position, in
    order 0, 1, ...: a ``nn.scan`` over positions whose BatchNorm running statistics are
    carried from one position to the next (ten sequential updates for ten clips), the
    parameters shared."""
    lead, n_clips = clips.shape[:-5], clips.shape[-5]
    flat = clips.reshape((-1, n_clips) + clips.shape[-4:])

    def one_position(module, carry, x):
        out = module(x, train=train, use_running_average=False)
        return carry, _reduce(module, out, keep_maps)

    scan = nn.scan(one_position, variable_broadcast="params", variable_carry="batch_stats",
                   split_rngs={"params": False, "dropout": True}, in_axes=1, out_axes=1)
    _, (features, maps) = scan(backbone, None, flat)
    features = features.reshape(lead + features.shape[1:])
    return features, (maps.reshape(lead + maps.shape[1:]) if keep_maps else None)


def clip_features(
    backbone: InceptionI3d, clips: jax.Array, *, train: bool, use_running_average: bool | None,
    keep_maps: bool = False, from_features: bool = False, per_position: bool | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """``(..., n_clips, T, H, W, 3)`` → features ``(..., n_clips, C)`` (and, with ``keep_maps``,
    the final maps averaged over time, ``(..., n_clips, H', W', C)``). A backbone without
    ``final_endpoint`` (the C3D) returns each clip's feature itself (its flattened pool5).

    By default all clips of all videos go through the backbone as one batch, so BatchNorm
    statistics (when they are used) are those of every clip together, as MUSDL's JIGSAWS
    code, CoRe and TSA do. ``per_position``: one backbone batch per clip position (MUSDL/USDL
    on MTL-AQA), when BatchNorm uses batch statistics; with running statistics both are the
    same and the clips run as one batch (see the module docstring). ``None`` takes the
    backbone's own ``per_position`` (:class:`ClipBackbone`, from ``build_backbone``).
    ``from_features``: ``clips`` already holds the features (the frozen-backbone fast path of
    :mod:`aqa_jax.train.feature_cache`) and is returned as is.
    """
    if from_features:
        return clips, None
    batch_stats = (not use_running_average) if use_running_average is not None else train
    if per_position is None:
        per_position = bool(getattr(backbone, "per_position", False))
    if per_position and batch_stats and clips.ndim > 5 and not backbone.is_initializing():
        return _per_position_features(backbone, clips, train=train, keep_maps=keep_maps)
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
        if "raw_score" in record:  # FrameClipSampler.score_norm (AQA-7): the stored score too
            keys += ("raw_score",)
        return {k: record[k] for k in keys}


class ScoreMethod(Method):
    """Base of the score-regression methods: sampler from ``config.clips``, SRCC/R-ℓ2 summary.

    :meth:`per_sample` of a subclass returns at least ``score_pred`` and ``score_true`` (the
    dataset's own units); they are evaluated and written per sample to the predictions CSV.
    """

    #: whether the records hold cached backbone features (:meth:`use_cached_features`)
    feature_mode: bool = False

    def sampler(self, train: bool) -> Any:
        return self.clip_sampler(train)

    def feature_cache_sampler(self) -> FrameClipSampler | CachedClipSampler:
        """The evaluation clip sampler (centre crop, no flip, no temporal shift)."""
        return self.clip_sampler(False)

    def backbone_features(self, backbone: nn.Module, clips: jax.Array) -> jax.Array:
        """:func:`clip_features` in evaluation mode (running BatchNorm statistics)."""
        return clip_features(backbone, clips, train=False, use_running_average=True)[0]

    def use_cached_features(self, model: nn.Module) -> nn.Module:
        """Samplers read cached features (:class:`CachedClipSampler`); the network skips its
        backbone (``from_features=True``)."""
        self.feature_mode = True
        return model.clone(from_features=True)

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
            score_norm=tuple(float(v) for v in c.get("score_norm", ())),
        )

    def summarize(self, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        return self.report(self.per_sample(predictions))

    def report(self, columns: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The evaluation figures of the per-sample columns (SRCC, R-ℓ2, L2)."""
        return regression_report(columns["score_pred"], columns["score_true"])
