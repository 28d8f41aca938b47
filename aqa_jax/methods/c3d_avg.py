"""C3D-AVG (Parmar & Morris, CVPR 2019, "What and How Well You Performed?"), STL and MTL.

Follows ``train_test_C3DAVG.py`` of ParitoshParmar/MTL-AQA: the Sports-1M C3D up to pool5
(:class:`aqa_jax.models.c3d.C3D`, ``c3d.pickle`` weights via ``aqa-jax convert-weights``) runs
on six non-overlapping 16-frame clips of the 103-frame window (starts 0, 16, ..., 80, i.e.
``arange(0, frames - 17, 16)``); the clip features (8192-d at 112 px) are averaged, a new fc6
(Linear 8192→4096 + ReLU, ``my_fc6``) feeds the score regressor (Linear 4096→1) and the five
dive classifiers, and the captioner reads the **sequence** of clip features (not the average).
Losses, tasks and evaluation: :mod:`aqa_jax.methods._multitask`. Everything trains with Adam
1e-4 (``configs/c3d_avg.py``).

``config.model``: ``fc6`` (4096). ``config.init_from``: a ``convert-weights`` output of
``c3d.pickle`` (or the ``.pickle`` itself, converted on the fly), or ``none`` (random init:
no C3D weights ship with any package, so the debug configs start from scratch).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from aqa_jax.methods._multitask import MultitaskMethod, caption_outputs
from aqa_jax.methods._score import clip_features
from aqa_jax.models.c3d import C3D
from aqa_jax.models.captioner import S2VTCaptioner
from aqa_jax.models.layers import torch_uniform_init
from aqa_jax.models.precision import compute_dtype


def torch_dense(features: int, name: str, fan_in: int, dtype: Any = jnp.float32) -> nn.Dense:
    """``torch.nn.Linear`` (PyTorch's default init) as a flax Dense."""
    init = torch_uniform_init(fan_in)
    return nn.Dense(features, kernel_init=init, bias_init=init, dtype=dtype, name=name)


class C3DAVGNetwork(nn.Module):
    """C3D per clip → mean → fc6 → score / classifiers; clip sequence → captioner."""

    backbone: nn.Module
    class_fields: tuple[tuple[str, int], ...] = ()
    head_caption: S2VTCaptioner | None = None  # the attribute name is its parameter path
    fc6: int = 4096
    decode: str = "greedy"
    beam_size: int = 5
    from_features: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool,
                 use_running_average: bool | None = None) -> dict[str, jax.Array]:
        feats, _ = clip_features(self.backbone, batch["clip"], train=train,
                                 use_running_average=use_running_average, from_features=self.from_features)
        pooled = feats.mean(axis=-2)
        h = nn.relu(torch_dense(self.fc6, "head_fc6", pooled.shape[-1], self.dtype)(pooled))
        out = {"score": torch_dense(1, "head_score", self.fc6)(h)[:, 0].astype(jnp.float32)}
        for field, classes in self.class_fields:
            out[f"logits_{field}"] = torch_dense(classes, f"head_cls_{field}", self.fc6)(h).astype(jnp.float32)
        if self.head_caption is not None:
            out.update(caption_outputs(self.head_caption, feats, batch, train=train, decode=self.decode,
                                       beam_size=self.beam_size))
        return out


class Method(MultitaskMethod):
    """C3D-AVG-STL (``mtl.tasks='score'``) or -MTL (module docstring)."""

    def build_model(self) -> C3DAVGNetwork:
        c = self.config
        dtype = compute_dtype(c)
        return C3DAVGNetwork(
            C3D(dtype=dtype, weight_init=c.model.get("init", "torch")), tuple(self.class_fields.items()),
            self.captioner() if self.captions else None, int(c.model.get("fc6", 4096)),
            **self.caption_call(), dtype=dtype)
