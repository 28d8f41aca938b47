"""What a training objective provides to the generic loop (:mod:`aqa_jax.train.loop`).

A method owns its network (an I3D, or another backbone, named ``backbone`` plus its heads), the
clip sampler that turns dataset records into examples, the loss, and the evaluation protocol.
The loop owns everything else: mesh, optimizer, freezing, BatchNorm policy, gradient
accumulation, checkpoints, metrics. What the loop tells a method it passes explicitly: the
run's :class:`~aqa_jax.steps.Schedule` to :meth:`Method.prepare`, and, to a network that
declares :attr:`Method.forward_takes_step`, the step being trained.
"""

from __future__ import annotations

import abc
from typing import Any, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from aqa_jax.data.pipeline import ClipSampler
from aqa_jax.steps import Schedule

Batch = Mapping[str, Any]
Metrics = dict[str, Any]


class Method(abc.ABC):
    """One training objective. Subclasses live in ``aqa_jax/methods/<name>.py`` as ``Method``.

    The network's ``__call__(batch, *, train, use_running_average)`` takes the batch dict (only
    its array fields reach the device) and returns a dict of outputs.
    """

    #: batch fields kept on the host (sample ids); never sent to devices.
    host_keys: tuple[str, ...] = ("id",)
    #: what the network reads of a video: ``clips`` (frames, through its own backbone) or
    #: ``features`` (per-clip features computed beforehand, :mod:`aqa_jax.features`).
    video_input: str = "clips"
    #: record fields each example carries besides ``score`` (e.g. ``difficulty``).
    label_keys: tuple[str, ...] = ()
    #: whether the network's training forward takes ``step=``: the optimizer step being
    #: computed (an int32 scalar counted from 0, the same for every micro-batch of an
    #: accumulated step), for a network that schedules on training progress (TSA's
    #: ground-truth boundaries). The train step passes it only to such a network; evaluation
    #: and prediction never do.
    forward_takes_step: bool = False
    #: whether the method's samplers draw from the training split even in evaluation and
    #: prediction (CoRe and TSA compare with training exemplars), so that :meth:`prepare`
    #: must read that split before anything is scored.
    samples_from_train_split: bool = False
    #: batch fields holding frames: ``(..., T, H, W, 3)`` uint8 RGB clips as the samplers give
    #: them, made network input by :meth:`normalize_inputs` inside the jitted steps with the
    #: preset of :meth:`clip_preset` (a method with exemplars adds ``exemplar_clip``; one on
    #: clip features has none).
    clip_keys: tuple[str, ...] = ("clip",)

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The network to train."""

    @abc.abstractmethod
    def sampler(self, train: bool) -> ClipSampler:
        """record → example, for training (random) or evaluation (deterministic)."""

    @abc.abstractmethod
    def loss(self, outputs: Mapping[str, jax.Array], batch: Batch) -> tuple[jax.Array, Metrics]:
        """(scalar loss, scalar metrics) of one batch; runs inside the jitted step."""

    @abc.abstractmethod
    def predict(self, outputs: Mapping[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
        """Per-example arrays (leading batch axis) that :meth:`summarize` consumes."""

    @abc.abstractmethod
    def summarize(self, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The evaluation protocol over all evaluated examples."""

    def per_sample(self, predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The per-sample columns of the predictions file (by default every 1-D field)."""
        return {k: np.asarray(v) for k, v in predictions.items() if np.ndim(v) == 1}

    def clip_preset(self) -> str | None:
        """The transform preset whose channel order and normalisation :meth:`normalize_inputs`
        applies to :attr:`clip_keys`: ``config.clips.preset`` by default (None: no frames)."""
        return self.config.get("clips", {}).get("preset")

    def normalize_inputs(self, batch: Batch) -> dict[str, Any]:
        """``batch`` with its uint8 clips (:attr:`clip_keys`) as float32 network input
        (:func:`aqa_jax.data.transforms.normalize_clip` of :meth:`clip_preset`): numpy stays
        numpy, jax arrays and tracers go through ``jax.numpy``. The training and prediction
        steps call it before the network; float fields (cached backbone features, clips
        normalised on the host) pass unchanged.

        Raises:
          ValueError: a uint8 field that is not a clip key (it would reach the network as raw
            pixels), or clips without a preset.
        """
        from aqa_jax.data.transforms import normalize_clip

        out = dict(batch)
        for key, value in batch.items():
            if getattr(value, "dtype", None) != np.uint8:
                continue
            if key not in self.clip_keys:
                raise ValueError(
                    f"batch field {key!r} is uint8 but {type(self).__module__} declares "
                    f"clip_keys={self.clip_keys}: add it to the method's clip_keys if it holds frames")
            preset = self.clip_preset()
            if preset is None:
                raise ValueError(f"batch field {key!r} holds uint8 frames but the config names no "
                                 "transform preset to normalise them with")
            out[key] = normalize_clip(value, preset)
        return out

    def absent_target_values(self) -> dict[str, Any]:
        """Values for the training targets among ``label_keys`` that a raw video lacks (e.g.
        MUSDL's judge scores); prediction does not read them. Other label keys (difficulty
        with DD) are inputs a user must give."""
        return {}

    def prepare(self, train_source: Any, schedule: Schedule | None = None) -> None:
        """Reads what the method needs from the training split before the network is built
        (CoRe: group boundaries and exemplar pools) and, from ``schedule``, the run's step
        arithmetic (TSA: the steps that use ground-truth boundaries). ``schedule`` is None
        when nothing will be trained (a method that needs it then uses what its config
        says). The default needs nothing."""

    def load_pretrained(self, variables: dict[str, Any]) -> dict[str, Any]:
        """Variables with the pretrained weights of ``config.init_from`` in place.

        The default fills the ``backbone`` I3D from :func:`aqa_jax.weights.init.load_backbone`.
        """
        from aqa_jax.weights.init import load_backbone

        return load_backbone(variables, self.config.get("init_from", "kinetics400"))

    # --- frozen-backbone fast path (config.precompute_features, aqa_jax.train.feature_cache) --

    def feature_cache_sampler(self) -> ClipSampler:
        """record → the example whose ``clip`` holds the video's clips in the evaluation
        layout: the clips whose backbone features the fast path computes once per video.

        The default refuses: a method whose examples are not a video's clips (VSPP's speed
        and segment draws) has no fast path."""
        raise ValueError(self._no_feature_cache())

    def backbone_features(self, backbone: nn.Module, clips: jax.Array) -> jax.Array:
        """Evaluation-mode features ``(..., n_clips, C)`` of ``clips`` ``(..., n_clips, T, H,
        W, 3)``, computed by the network's ``backbone`` (called as ``backbone.apply(variables,
        clips, method=...)``): what the fast path caches. The default refuses (see
        :meth:`feature_cache_sampler`)."""
        raise ValueError(self._no_feature_cache())

    def use_cached_features(self, model: nn.Module) -> nn.Module:
        """Switches this method's samplers to records whose ``clip`` holds cached backbone
        features and returns the network that reads them (``model``'s parameters, its
        backbone skipped). The default refuses (see :meth:`feature_cache_sampler`)."""
        raise ValueError(self._no_feature_cache())

    def _no_feature_cache(self) -> str:
        return (f"method {type(self).__module__.rsplit('.', 1)[-1]} cannot train on cached "
                "backbone features: set precompute_features=False")
