"""PECoP's 3D-Adapter (a 3-D Conv-Adapter), inserted after an Inception block's concat."""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from aqa_jax.models.layers import Conv3D, ConvImpl, torch_uniform_init

GroupedConvImpl = Literal["shift", "lax"]
GROUPED_CONV_IMPLS: tuple[str, ...] = ("shift", "lax")


def grouped_conv3d_shift(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1, zero "same"-padded grouped 3-D conv written as shifted multiply-adds.

    ``x`` is NDHWC with ``C = G * r`` channels and ``kernel`` is ``(kt, kh, kw, r, G)`` with
    odd sizes: exactly ``lax.conv_general_dilated(x, kernel, (1, 1, 1), [(k // 2,) * 2] * 3,
    feature_group_count=G)`` with one output channel per group, which is the adapter's
    ``down`` conv. It computes the same sums of products in another order (fp32 results
    agree to ~1e-6); products and sums are in float32 (or wider) whatever ``x.dtype`` is,
    and the result is cast back to ``x.dtype``.

    Why it exists: XLA:CPU has no fast grouped convolution. It runs the forward and
    input-gradient grouped convs as a naive loop and rewrites the weight gradient (a
    ``batch_group_count`` conv) into a large dilated convolution; at 1x16x112x112 the nine
    adapters' ``down`` convs took ~3 s of a ~4 s PECoP training step. As ``r*kt*kh*kw``
    shifted multiply-adds (no reduction, so no shifted copy is materialised) XLA fuses them
    into one elementwise loop. The gradient is a custom VJP (the input gradient is the same
    shifted sum over the padded cotangent with the kernel flipped, the kernel gradient one
    reduction per tap in a scan over the taps, one shifted window at a time), so that only
    ``x`` is kept for the backward pass rather than the ``kt*kh*kw`` shifted copies autodiff
    would save. See docs/PERFORMANCE.md ("Memory at 32x224²").
    """
    *kernel_size, r, groups = kernel.shape
    c = x.shape[-1]
    if c != groups * r:
        raise ValueError(f"grouped_conv3d_shift: {c} channels != {groups} groups x {r} per group")
    if len(kernel_size) != 3 or any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"grouped_conv3d_shift needs an odd 3-D kernel, got {kernel.shape}")
    acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
    return _shift_conv(x.astype(acc_dtype), kernel.astype(acc_dtype)).astype(x.dtype)


def _taps(kernel_size) -> list[tuple[int, int, int]]:
    kt, kh, kw = kernel_size
    return [(i, j, k) for i in range(kt) for j in range(kh) for k in range(kw)]


def _shifted_sum(xp: jax.Array, weights: jax.Array, out_shape, flip: bool) -> jax.Array:
    """sum over taps of xp[window at tap] * weights[tap (flipped if flip)], summed over r.

    ``xp`` is (B, T', H', W', G, r) (padded), ``weights`` (kt, kh, kw, G, r); returns
    (B, T, H, W, G, r) before the r-sum, the caller reduces or reshapes.
    """
    t, h, w = out_shape
    kernel_size = weights.shape[:3]
    acc = None
    for i, j, k in _taps(kernel_size):
        wi = (kernel_size[0] - 1 - i, kernel_size[1] - 1 - j, kernel_size[2] - 1 - k) if flip else (i, j, k)
        term = xp[:, i : i + t, j : j + h, k : k + w] * weights[wi]
        acc = term if acc is None else acc + term
    return acc


def _materialised_shifted_sum(xp: jax.Array, weights: jax.Array, out_shape) -> jax.Array:
    """:func:`_shifted_sum` with ``flip=True``, computed in a loop over chunks of the output
    (along T, or H where T has no divisor) so that XLA stores the result once.

    Written as one expression, the sum is an elementwise fusion that XLA:CPU duplicates into
    every consumer: the adapter's input gradient feeds each Inception branch's BatchNorm
    backward, and XLA recomputed all ``kt*kh*kw*r`` products in each of those fusions (12 for
    Mixed_3c, 20 for each Mixed_4 block: a third of a PECoP step at 4x32x224x224). The output
    of a loop cannot be fused into its consumers, so the loop is where the sum is stored
    (XLA:CPU removes ``optimization_barrier`` before fusion, so that does not do it).
    """
    for axis, size in enumerate(out_shape, start=1):
        chunks = next((n for n in range(2, size + 1) if size % n == 0), 1)
        if chunks > 1:
            break
    else:
        return _shifted_sum(xp, weights, out_shape, flip=True)
    step = out_shape[axis - 1] // chunks
    part_shape = tuple(step if a == axis else n for a, n in enumerate(out_shape, start=1))
    window = step + weights.shape[axis - 1] - 1

    def chunk(i, out):
        part = _shifted_sum(lax.dynamic_slice_in_dim(xp, i * step, window, axis), weights,
                            part_shape, flip=True)
        return lax.dynamic_update_slice_in_dim(out, part, i * step, axis)

    shape = (xp.shape[0], *out_shape, *jnp.broadcast_shapes(xp.shape[4:], weights.shape[3:]))
    return lax.fori_loop(0, chunks, chunk, jnp.zeros(shape, jnp.result_type(xp, weights)))


def _pad_groups(x: jax.Array, pads, groups: int) -> jax.Array:
    b, *_, c = x.shape
    xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    return xp.reshape(b, *xp.shape[1:4], groups, c // groups)


@jax.custom_vjp
def _shift_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    # y[q, g] = sum over r and taps of xp[q + tap, g, r] * kernel[tap, r, g], written as
    # r * taps multiply-adds of (B, T, H, W, G) slices and no reduction: XLA fuses slices and
    # products into one loop. (A jnp.sum over r made it a YNNPACK reduce fusion, whose inputs,
    # the 27 shifted copies of x and 27 broadcast kernels, were materialised and live at once:
    # 1.2 GB of temporaries for Mixed_3c at 32x224x224, and slower.)
    *kernel_size, r, groups = kernel.shape
    t, h, w = x.shape[1:4]
    xp = _pad_groups(x, [(k // 2, k // 2) for k in kernel_size], groups)
    acc = None
    for c in range(r):
        xc = xp[..., c]  # (B, T', H', W', G): input channel c of every group
        for i, j, k in _taps(kernel_size):
            term = xc[:, i : i + t, j : j + h, k : k + w] * kernel[i, j, k, c]
            acc = term if acc is None else acc + term
    return acc


def _shift_conv_fwd(x: jax.Array, kernel: jax.Array):
    return _shift_conv(x, kernel), (x, kernel)


def _shift_conv_bwd(res, ct: jax.Array):
    x, kernel = res
    *kernel_size, _, groups = kernel.shape
    pads = [(k // 2, k // 2) for k in kernel_size]
    t, h, w = x.shape[1:4]
    # dx[q, g, r] = sum_tap ct[q - tap + pad, g] * kernel[tap, r, g]: a shifted sum over the
    # cotangent padded by (k - 1 - pad) with the kernel flipped.
    ctp = jnp.pad(ct, [(0, 0), *[(k - 1 - a, k - 1 - b) for k, (a, b) in zip(kernel_size, pads)], (0, 0)])
    wt = jnp.swapaxes(kernel, -1, -2)
    dx = _materialised_shifted_sum(ctp[..., None], wt, (t, h, w)).reshape(x.shape)
    # dkernel[tap, r, g] = sum_p xp[p, g, r] * ct[p - tap, g] (zero outside ct): one reduction
    # per tap, in a scan over the taps. It is the cotangent (G channels) that is shifted, not x
    # (G * r channels): each tap copies a window of ct, 1/r the size of a window of x, and reads
    # xp in place. (As 27 separate reductions XLA materialised all 27 copies at once: 0.6 GB
    # for Mixed_3c at 32x224x224.)
    xp = _pad_groups(x, pads, groups)
    ctpp = jnp.pad(ct, [(0, 0), *[(k - 1, k - 1) for k in kernel_size], (0, 0)])[..., None]
    window_shape = (x.shape[0], *xp.shape[1:4], groups, 1)

    def tap_grad(_, start):  # start = kernel_size - 1 - tap: where ct[p - tap] begins in ctpp
        window = lax.dynamic_slice(ctpp, (0, start[0], start[1], start[2], 0, 0), window_shape)
        return None, jnp.sum(xp * window, axis=(0, 1, 2, 3))

    starts = [tuple(k - 1 - i for k, i in zip(kernel_size, tap)) for tap in _taps(kernel_size)]
    _, dk = lax.scan(tap_grad, None, jnp.asarray(starts, jnp.int32))  # (taps, G, r)
    dk = jnp.swapaxes(dk.reshape(*kernel_size, *dk.shape[1:]), -1, -2)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_shift_conv.defvjp(_shift_conv_fwd, _shift_conv_bwd)


class GroupedConv3D(nn.Module):
    """The adapter's ``down`` conv: 3x3x3, stride 1, zero padding 1, ``C/r`` groups, with bias.

    Parameters ``kernel`` (3, 3, 3, r, C/r) and ``bias`` (C/r,) are laid out exactly like
    ``nn.Conv(C // r, (3, 3, 3), feature_group_count=C // r)``'s, so checkpoints and
    converters see no difference. ``impl='shift'`` (default) computes it with
    :func:`grouped_conv3d_shift`; ``impl='lax'`` with XLA's grouped convolution (what
    ``nn.Conv`` does), which is the fast choice where the backend has a native grouped conv
    (cuDNN) and very slow on XLA:CPU.
    """

    features: int
    kernel_init: Any
    bias_init: Any
    impl: GroupedConvImpl = "shift"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        group_in = channels // self.features
        kernel = self.param("kernel", self.kernel_init, (3, 3, 3, group_in, self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if self.impl == "shift":
            y = grouped_conv3d_shift(x, kernel)
        elif self.impl == "lax":
            y = lax.conv_general_dilated(
                x,
                kernel,
                (1, 1, 1),
                [(1, 1)] * 3,
                dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                feature_group_count=self.features,
            )
        else:
            raise ValueError(f"unknown grouped conv impl {self.impl!r}; use one of {GROUPED_CONV_IMPLS}")
        return y + bias


class Adapter3D(nn.Module):
    """out = x + scale * up(ReLU(down(x))), per PECoP ``models/i3d_adapter.py::ConvAdapter``.

    - ``down``: grouped 3x3x3 conv C → C/r with C/r groups (4 input channels per group at
      r = 4, *not* depthwise), stride 1, zero padding 1, with bias (:class:`GroupedConv3D`;
      ``conv_impl`` picks how it is computed, see there);
    - ReLU, no normalisation;
    - ``up``: 1x1x1 conv C/r → C with bias (a :class:`~aqa_jax.models.layers.Conv3D`;
      ``dense_conv_impl`` picks how it is computed);
    - ``scale``: one learnable value per channel (PECoP's ``se``), initialised to 1.

    Weights use PyTorch's default Conv3d init, as PECoP does (the adapter starts as a random,
    non-zero residual). ``zero_init=True`` zeroes ``up`` instead so the adapted network starts
    exactly equal to the backbone — not PECoP's choice, offered for fine-tuning experiments.
    """

    reduction: int = 4
    zero_init: bool = False
    dtype: Any = jnp.float32
    conv_impl: GroupedConvImpl = "shift"
    dense_conv_impl: ConvImpl = "auto"

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
        h = GroupedConv3D(
            hidden,
            kernel_init=nn.with_logical_partitioning(
                torch_uniform_init(down_fan_in),
                ("kernel_t", "kernel_h", "kernel_w", "adapter_group_in", "adapter_hidden"),
            ),
            bias_init=nn.with_logical_partitioning(
                torch_uniform_init(down_fan_in), ("adapter_hidden",)
            ),
            impl=self.conv_impl,
            dtype=self.dtype,
            name="down",
        )(x)
        h = nn.relu(h)
        up_init = nn.initializers.zeros_init() if self.zero_init else torch_uniform_init(hidden)
        h = Conv3D(
            channels,
            (1, 1, 1),
            dtype=self.dtype,
            impl=self.dense_conv_impl,
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
