"""PECoP's 3D-Adapter (a 3-D Conv-Adapter), inserted after an Inception block's concat."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aqa_jax.models.layers import torch_uniform_init


class Adapter3D(nn.Module):
    """out = x + scale * up(ReLU(down(x))), per PECoP ``models/i3d_adapter.py::ConvAdapter``.

    - ``down``: grouped 3x3x3 conv C → C/r with C/r groups (4 input channels per group at
      r = 4, *not* depthwise), stride 1, zero padding 1, with bias;
    - ReLU, no normalisation;
    - ``up``: 1x1x1 conv C/r → C with bias;
    - ``scale``: one learnable value per channel (PECoP's ``se``), initialised to 1.

    Weights use PyTorch's default Conv3d init, as PECoP does (the adapter starts as a random,
    non-zero residual). ``zero_init=True`` zeroes ``up`` instead so the adapted network starts
    exactly equal to the backbone — not PECoP's choice, offered for fine-tuning experiments.
    """

    reduction: int = 4
    zero_init: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        if channels % self.reduction:
            raise ValueError(
                f"Adapter3D: {channels} channels are not divisible by reduction {self.reduction}"
            )
        hidden = channels // self.reduction
        group_in = channels // hidden
        down_fan_in = group_in * 27
        h = nn.Conv(
            hidden,
            (3, 3, 3),
            padding=[(1, 1)] * 3,
            feature_group_count=hidden,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(
                torch_uniform_init(down_fan_in),
                ("kernel_t", "kernel_h", "kernel_w", "adapter_group_in", "adapter_hidden"),
            ),
            bias_init=nn.with_logical_partitioning(
                torch_uniform_init(down_fan_in), ("adapter_hidden",)
            ),
            name="down",
        )(x)
        h = nn.relu(h)
        up_init = nn.initializers.zeros_init() if self.zero_init else torch_uniform_init(hidden)
        h = nn.Conv(
            channels,
            (1, 1, 1),
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(
                up_init, ("kernel_t", "kernel_h", "kernel_w", "adapter_hidden", "conv_out")
            ),
            bias_init=nn.with_logical_partitioning(up_init, ("conv_out",)),
            name="up",
        )(h)
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones_init(), ("conv_out",)),
            (channels,),
        )
        return x + h * jnp.asarray(scale, h.dtype)
