"""PECoP's self-supervised pretext task, VSPP: predict a clip's playback speed and which of
its segments was played at that speed (Dadashzadeh et al., WACV 2024; ``train.py`` class
``VSPP`` and ``datasets/ucf101.py`` ``PECoP_SSL`` of the official code).

Network: the I3D up to its ``(2, 7, 7)`` average pool, then two heads, each a 1x1x1 conv with
bias (here ``nn.Dense`` on the channel axis, the same map) after its own dropout (p = 0.5),
averaged over the pooled time steps: speed (``max_sr`` = 5 classes, label ``sr - 1``) and
segment (``max_segment`` = 4 classes). Loss: CE(speed) + CE(segment).

``config.vspp``: ``fr`` (the task's default stride: 3 for PD4T gait, 1 otherwise), ``clip_len``
(32), ``max_sr`` (5), ``max_segment`` (4), ``preset`` (``pecop``: BGR frames, swapped
455x256 resize, ImageNet statistics, as the official loader), ``dropout_rate`` (0.5).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from aqa_jax.data.pipeline import VSPPSampler
from aqa_jax.methods.base import Method as BaseMethod
from aqa_jax.models.i3d import InceptionI3d, build_i3d
from aqa_jax.models.layers import torch_uniform_init
from aqa_jax.models.precision import compute_dtype


class VSPPHead(nn.Module):
    """Dropout, a 1x1x1 conv with bias (PyTorch default init), mean over the remaining time.

    The conv is the head's last projection, so it computes in float32 whatever the
    backbone's compute dtype (:mod:`aqa_jax.models.precision`)."""

    num_classes: int
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, pooled: jax.Array, *, train: bool) -> jax.Array:
        h = nn.Dropout(self.dropout_rate)(pooled, deterministic=not train)
        fan_in = pooled.shape[-1]
        logits = nn.Dense(
            self.num_classes,
            dtype=jnp.float32,
            kernel_init=nn.with_logical_partitioning(torch_uniform_init(fan_in), ("embed", "classes")),
            bias_init=nn.with_logical_partitioning(torch_uniform_init(fan_in), ("classes",)),
        )(h)
        return jnp.mean(logits, axis=tuple(range(1, logits.ndim - 1)))


class VSPPNetwork(nn.Module):
    """I3D backbone + speed and segment heads on its last endpoint (``AvgPool`` for PECoP)."""

    backbone: InceptionI3d
    num_speeds: int = 5
    num_segments: int = 4
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(
        self, batch: Mapping[str, jax.Array], *, train: bool, use_running_average: bool | None = None
    ) -> dict[str, jax.Array]:
        endpoints = self.backbone(batch["clip"], train=train, use_running_average=use_running_average)
        pooled = endpoints[self.backbone.final_endpoint]
        return {
            "speed": VSPPHead(self.num_speeds, self.dropout_rate, name="head_speed")(pooled, train=train),
            "segment": VSPPHead(self.num_segments, self.dropout_rate, name="head_segment")(
                pooled, train=train
            ),
        }


class Method(BaseMethod):
    """VSPP continual pretraining (see module docstring)."""

    def clip_preset(self) -> str:
        return self.config.vspp.preset

    def build_model(self) -> VSPPNetwork:
        v = self.config.vspp
        backbone = build_i3d(self.config.model, final_endpoint=self.config.model.get("final_endpoint", "AvgPool"),
                             dtype=compute_dtype(self.config))
        return VSPPNetwork(backbone, v.max_sr, v.max_segment, v.get("dropout_rate", 0.5))

    def load_pretrained(self, variables: dict[str, Any]) -> dict[str, Any]:
        """The backbone from ``config.init_from`` and, from a converted official PECoP
        checkpoint or a VSPP run, the two heads too (continual pretraining goes on from it;
        :func:`aqa_jax.weights.init.load_vspp_heads`)."""
        from aqa_jax.weights.init import load_vspp_heads

        variables = super().load_pretrained(variables)
        return load_vspp_heads(variables, self.config.get("init_from", "none"))

    def sampler(self, train: bool) -> VSPPSampler:
        v = self.config.vspp
        return VSPPSampler(fr=v.fr, clip_len=v.clip_len, max_sr=v.max_sr,
                           max_segment=v.max_segment, preset=v.preset)

    def loss(self, outputs, batch):
        speed = optax.softmax_cross_entropy_with_integer_labels(outputs["speed"], batch["speed"])
        segment = optax.softmax_cross_entropy_with_integer_labels(outputs["segment"], batch["segment"])
        metrics = {
            "loss_speed": speed.mean(),
            "loss_segment": segment.mean(),
            "acc_speed": (outputs["speed"].argmax(-1) == batch["speed"]).mean(),
            "acc_segment": (outputs["segment"].argmax(-1) == batch["segment"]).mean(),
        }
        return speed.mean() + segment.mean(), metrics

    def predict(self, outputs, batch):
        return {
            "speed_pred": outputs["speed"].argmax(-1),
            "speed_true": batch["speed"],
            "segment_pred": outputs["segment"].argmax(-1),
            "segment_true": batch["segment"],
        }

    def summarize(self, predictions):
        speeds = int(self.config.vspp.max_sr) - 1  # ``fr`` is never drawn
        return {
            "acc_speed": float(np.mean(predictions["speed_pred"] == predictions["speed_true"])),
            "acc_segment": float(np.mean(predictions["segment_pred"] == predictions["segment_true"])),
            "chance_speed": 1.0 / speeds,
            "chance_segment": 1.0 / int(self.config.vspp.max_segment),
        }
