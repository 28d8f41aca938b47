"""Building blocks shared by the 3-D CNNs: padding rules, pooling, Unit3D, PyTorch-style init.

The two I3D families differ only in small numerical details (how "SAME" padding is computed,
what value max-pools pad with, whether pooling uses ``ceil_mode``), so those details are
explicit arguments here rather than hidden in the modules.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PaddingMode = Literal["tf_same", "static_same"]
Triple = tuple[int, int, int]

# Logical axis names of a 3-D conv kernel (T, H, W, Cin, Cout); a sharding rule maps them.
CONV_KERNEL_AXES = ("kernel_t", "kernel_h", "kernel_w", "conv_in", "conv_out")


def same_pads(size: int, kernel: int, stride: int, mode: PaddingMode) -> tuple[int, int]:
    """(front, back) zero padding of one dimension for a "SAME" conv or pool.

    ``tf_same`` is TensorFlow's rule, computed from the input size (DeepMind kinetics-i3d,
    piergiaj's dynamic padding): total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0).
    ``static_same`` is hassony2's pre-2019 rule used by CoRe/PECoP: total = max(k - s, 0),
    independent of the input size. Both put floor(total / 2) in front. They agree whenever
    size % stride == 0 and differ for odd sizes.
    """
    if mode == "tf_same":
        total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    elif mode == "static_same":
        total = max(kernel - stride, 0)
    else:
        raise ValueError(f"unknown padding mode {mode!r}; use 'tf_same' or 'static_same'")
    return total // 2, total - total // 2


def pooled_length(length: int, kernel: int, stride: int, ceil_mode: bool) -> int:
    """Output length of an unpadded pool, with PyTorch's ``ceil_mode`` rule.

    With ceil_mode the last window may run past the end, but must start inside the input.
    """
    if not ceil_mode:
        return (length - kernel) // stride + 1
    out = -(-(length - kernel) // stride) + 1
    if (out - 1) * stride >= length:
        out -= 1
    return out


def max_pool3d(
    x: jax.Array,
    window: Triple,
    strides: Triple,
    *,
    padding: PaddingMode,
    pad_value: float,
    ceil_mode: bool,
) -> jax.Array:
    """3-D max-pool over NDHWC with "SAME" padding filled with ``pad_value``.

    ``pad_value=-inf`` reproduces TF/Flax SAME max-pooling (padding never wins);
    ``pad_value=0`` reproduces the PyTorch ports, which zero-pad before pooling — identical
    after a ReLU, different once adapters make a block's output negative.
    ``ceil_mode`` adds the extra trailing window of PyTorch's ``MaxPool3d(ceil_mode=True)``;
    the part of that window past the end is ignored (-inf), as in PyTorch.
    """
    pads = [same_pads(x.shape[1 + i], window[i], strides[i], padding) for i in range(3)]
    if pad_value != -math.inf and any(p != (0, 0) for p in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_value)
        pads = [(0, 0)] * 3
    window_pads = []
    for i in range(3):
        length = x.shape[1 + i] + sum(pads[i])
        out = pooled_length(length, window[i], strides[i], ceil_mode)
        extra = max((out - 1) * strides[i] + window[i] - length, 0)
        window_pads.append((pads[i][0], pads[i][1] + extra))
    # A concrete numpy identity lets JAX recognise reduce_window_max (differentiable).
    init = np.array(-np.inf, dtype=x.dtype)
    return lax.reduce_window(
        x, init, lax.max, (1, *window, 1), (1, *strides, 1), [(0, 0), *window_pads, (0, 0)]
    )


def avg_pool3d_valid(x: jax.Array, window: Triple) -> jax.Array:
    """VALID average pool with stride 1; each window dimension is clipped to the input size.

    The official I3D pools Mixed_5c with a (2, 7, 7) window; clipping lets small test or
    low-resolution inputs through and is identical whenever the feature map is >= 2x7x7.
    """
    window = tuple(min(w, x.shape[1 + i]) for i, w in enumerate(window))
    summed = lax.reduce_window(
        x, np.array(0, x.dtype), lax.add, (1, *window, 1), (1, 1, 1, 1, 1), "VALID"
    )
    return summed / math.prod(window)


def torch_uniform_init(fan_in: int) -> nn.initializers.Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default Conv/Linear init.

    For weights this equals ``kaiming_uniform_(a=sqrt(5))``; for biases it is PyTorch's rule.
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv_padding(kernel: Triple, strides: Triple, mode: PaddingMode) -> str | list[tuple[int, int]]:
    """Padding argument for ``nn.Conv``: XLA's 'SAME' is exactly TF SAME; static is explicit."""
    if mode == "tf_same":
        return "SAME"
    return [same_pads(0, k, s, "static_same") for k, s in zip(kernel, strides)]


class Unit3D(nn.Module):
    """Conv3d → BatchNorm → ReLU, the I3D unit (Sonnet ``Unit3D``, hassony2 ``Unit3Dpy``).

    ``use_bn=False, use_bias=True, activation=False`` gives the logits layer.
    """

    features: int
    kernel: Triple = (1, 1, 1)
    strides: Triple = (1, 1, 1)
    padding: PaddingMode = "tf_same"
    use_bn: bool = True
    use_bias: bool = False
    activation: bool = True
    bn_scale: bool = False
    bn_eps: float = 1e-3
    bn_momentum: float = 0.999
    kernel_axes: tuple[str, ...] = CONV_KERNEL_AXES
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, use_running_average: bool = True) -> jax.Array:
        x = nn.Conv(
            self.features,
            self.kernel,
            strides=self.strides,
            padding=conv_padding(self.kernel, self.strides, self.padding),
            use_bias=self.use_bias,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), self.kernel_axes
            ),
            bias_init=nn.with_logical_partitioning(
                nn.initializers.zeros_init(), self.kernel_axes[-1:]
            ),
            name="conv",
        )(x)
        if self.use_bn:
            x = nn.BatchNorm(
                use_running_average=use_running_average,
                momentum=self.bn_momentum,
                epsilon=self.bn_eps,
                use_scale=self.bn_scale,
                dtype=self.dtype,
                scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("conv_out",)),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
                name="bn",
            )(x)
        if self.activation:
            x = nn.relu(x)
        return x
