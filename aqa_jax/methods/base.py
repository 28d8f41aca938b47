"""What a training objective provides to the generic loop (:mod:`aqa_jax.train.loop`).

A method owns its network (an I3D, or another backbone, named ``backbone`` plus its heads), the
clip sampler that turns dataset records into examples, the loss, and the evaluation protocol.
The loop owns everything else: mesh, optimizer, freezing, BatchNorm policy, gradient
accumulation, checkpoints, metrics.
"""

from __future__ import annotations

import abc
from typing import Any, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from aqa_jax.data.pipeline import ClipSampler

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

    def absent_target_values(self) -> dict[str, Any]:
        """Values for the training targets among ``label_keys`` that a raw video lacks (e.g.
        MUSDL's judge scores); prediction does not read them. Other label keys (difficulty
        with DD) are inputs a user must give."""
        return {}

    def prepare(self, train_source: Any) -> None:
        """Reads what the method needs from the training split before the network is built
        (CoRe: group boundaries and exemplar pools). The default needs nothing."""

    def load_pretrained(self, variables: dict[str, Any]) -> dict[str, Any]:
        """Variables with the pretrained weights of ``config.init_from`` in place.

        The default fills the ``backbone`` I3D from :func:`aqa_jax.train.init_from.load_backbone`.
        """
        from aqa_jax.train.init_from import load_backbone

        return load_backbone(variables, self.config.get("init_from", "kinetics400"))
