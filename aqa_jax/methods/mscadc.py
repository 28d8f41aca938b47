"""MSCADC (Parmar & Morris, CVPR 2019): multi-scale context aggregation with dilated convs.

Follows ``train_test_MSCADC.py`` and ``models/MSCADC/*.py`` of ParitoshParmar/MTL-AQA. One
16-frame clip (frames ``floor(6.5 k)`` of the 103-frame window, 180x180) goes through
``C3D_dilated_body`` (:class:`aqa_jax.models.c3d.C3DDilated`, BN after every conv, dilated
stage 5, dropout 0.5), then three task heads with the same structure and their own weights
(:class:`ContextHead`):

- 1x1x1 conv 256→12 **with padding 1** (the official layer pads a 1x1 conv, growing the map
  by one voxel per side), replication padding 9, the context net: 3x3x3 convs 12→24→24→48
  (dilation 2)→96 (dilation 4)→96, each + BN + ReLU, a 1x1x1 conv 96→12, BN + ReLU,
  max-pool 2, a 3x3x3 conv 12→12 + BN + ReLU;
- score: a 3x3x3 conv 12→1 and AvgPool(2, 11, 11); classifier: one 3x3x3 conv 12→classes and
  AvgPool(2, 11, 11) per field; captions: a 3x3x3 conv 12→12, MaxPool(2, 2, 2) with stride 1,
  flattened in PyTorch's (C, T, H, W) order (1200-d at 180 px) and read by the S2VT captioner
  as a sequence of one.

At 180 px the head maps are 2x11x11, so the official average pools are global means; we take
the global mean at every input size (the official pools only work at 180 px). Losses and
evaluation: :mod:`aqa_jax.methods._multitask`. The heads' BatchNorms run in training mode
while training, as the official ``model.train()`` does, whatever ``bn_policy`` the body uses.

Score loss: the official score head ends in ``view(-1, 1)`` then ``squeeze`` (``head_fs_2.py``),
so the prediction is ``(B,)``, the same shape as the collated target
(``train_test_MSCADC.py``, ``data['label_final_score']``): ``MSELoss``/``L1Loss`` compare each
prediction with its own target, as we do.

The official body starts from ``C3D_small_PyTorch_Trained_12`` (a 7z archive in the
repository); ``init_from`` takes its state dict converted by ``aqa-jax convert-weights``, or
``none`` (random init).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from aqa_jax.methods._multitask import MultitaskMethod, caption_outputs
from aqa_jax.methods._score import clip_features
from aqa_jax.models.c3d import C3DDilated, TorchConv3D, torch_max_pool3d
from aqa_jax.models.captioner import S2VTCaptioner
from aqa_jax.models.layers import BatchNorm
from aqa_jax.models.precision import compute_dtype

BOTTLENECK = 12
# (output channels as a multiple of the bottleneck, dilation) of the context convs 1-5.
CONTEXT_CONVS = ((2, 1), (2, 1), (4, 2), (8, 4), (8, 1))
CONTEXT_PAD = 9


def _bn(name: str):
    return BatchNorm(momentum=0.9, epsilon=1e-5, unbiased_running_var=True, name=name)


class ContextHead(nn.Module):
    """One MSCADC head trunk: the map after ``head_conv2``/``head_bn2`` (module docstring)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, use_running_average: bool) -> jax.Array:
        conv = lambda c, name, k=3, pad=0, dil=1: TorchConv3D(
            c, kernel_size=(k,) * 3, padding=pad, dilation=dil, dtype=self.dtype, name=name)
        h = conv(BOTTLENECK, "head_conv1", k=1, pad=1)(x)
        h = jnp.pad(h, [(0, 0)] + [(CONTEXT_PAD, CONTEXT_PAD)] * 3 + [(0, 0)], mode="edge")
        for i, (mult, dil) in enumerate(CONTEXT_CONVS, start=1):
            h = conv(BOTTLENECK * mult, f"cntxt_conv{i}", dil=dil)(h)
            h = nn.relu(_bn(f"cntxt_bn{i}")(h, use_running_average=use_running_average))
        h = conv(BOTTLENECK, "cntxt_conv6", k=1)(h)
        h = nn.relu(_bn("head_bn1")(h, use_running_average=use_running_average))
        h = torch_max_pool3d(h, (2, 2, 2))
        h = conv(BOTTLENECK, "head_conv2", pad=1)(h)
        return nn.relu(_bn("head_bn2")(h, use_running_average=use_running_average))


class MSCADCNetwork(nn.Module):
    """C3D-dilated body → score / classifier / caption context heads."""

    backbone: nn.Module
    class_fields: tuple[tuple[str, int], ...] = ()
    head_caption: S2VTCaptioner | None = None  # the attribute name is its parameter path
    decode: str = "greedy"
    beam_size: int = 5
    from_features: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool,
                 use_running_average: bool | None = None) -> dict[str, jax.Array]:
        maps, _ = clip_features(self.backbone, batch["clip"], train=train,
                                use_running_average=use_running_average, from_features=self.from_features)
        maps = maps[:, 0]  # (B, 1 clip, T', H', W', 256) -> one map per video
        head_running = not (train and self.is_mutable_collection("batch_stats"))
        conv = lambda c, name: TorchConv3D(c, padding=1, dtype=self.dtype, name=name)
        global_mean = lambda h: jnp.mean(h.astype(jnp.float32), axis=(1, 2, 3))

        trunk = ContextHead(self.dtype, name="head_score")
        h = trunk(maps, use_running_average=head_running)
        out = {"score": global_mean(conv(1, "head_score_conv3")(h))[:, 0]}
        if self.class_fields:
            h = ContextHead(self.dtype, name="head_cls")(maps, use_running_average=head_running)
            for field, classes in self.class_fields:
                out[f"logits_{field}"] = global_mean(conv(classes, f"head_cls_conv3_{field}")(h))
        if self.head_caption is not None:
            h = ContextHead(self.dtype, name="head_caption_trunk")(maps, use_running_average=head_running)
            h = conv(BOTTLENECK, "head_caption_conv3")(h)
            h = nn.max_pool(h, (2, 2, 2), strides=(1, 1, 1), padding="VALID")
            feats = jnp.transpose(h, (0, 4, 1, 2, 3)).reshape(h.shape[0], 1, -1)
            out.update(caption_outputs(self.head_caption, feats, batch, train=train, decode=self.decode,
                                       beam_size=self.beam_size))
        return out


class Method(MultitaskMethod):
    """MSCADC-STL (``mtl.tasks='score'``) or -MTL (module docstring)."""

    def build_model(self) -> MSCADCNetwork:
        c = self.config
        dtype = compute_dtype(c)
        return MSCADCNetwork(
            C3DDilated(dropout_rate=float(c.model.get("dropout", 0.5)), dtype=dtype,
                       weight_init=c.model.get("init", "torch")),
            tuple(self.class_fields.items()), self.captioner() if self.captions else None,
            **self.caption_call(), dtype=dtype)
