"""Building blocks shared by the 3-D CNNs: padding rules, pooling, Unit3D, PyTorch-style init.

The two I3D families differ only in small numerical details (how "SAME" padding is computed,
what value max-pools pad with, whether pooling uses ``ceil_mode``), so those details are
explicit arguments here rather than hidden in the modules.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name

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

    Computed as three 1-D max-pools (W, then H, then T), each a chain of
    ``where(v > best, v, best)`` over strided slices: the same maxima as a 3-D
    ``reduce_window`` (bit for bit), and the gradient goes to the first maximum of each window
    in (t, h, w) order, which is PyTorch's rule. XLA:CPU differentiates ``reduce_window`` max
    through an index-tracking variadic reduce-window plus a scatter, which took ~20% of a
    PECoP training step; these slices and selects fuse into a few elementwise loops.
    """
    pads = [same_pads(x.shape[1 + i], window[i], strides[i], padding) for i in range(3)]
    if pad_value != -math.inf and any(p != (0, 0) for p in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_value)
        pads = [(0, 0)] * 3
    window_pads, outs = [], []
    for i in range(3):
        length = x.shape[1 + i] + sum(pads[i])
        out = pooled_length(length, window[i], strides[i], ceil_mode)
        extra = max((out - 1) * strides[i] + window[i] - length, 0)
        window_pads.append((pads[i][0], pads[i][1] + extra))
        outs.append(out)
    if any(p != (0, 0) for p in window_pads):
        x = jnp.pad(x, [(0, 0), *window_pads, (0, 0)], constant_values=-jnp.inf)
    for i in (2, 1, 0):  # innermost axis first, so ties resolve in (t, h, w) scan order
        best = None
        for j in range(window[i]):
            v = lax.slice_in_dim(x, j, j + (outs[i] - 1) * strides[i] + 1, strides[i], axis=1 + i)
            best = v if best is None else jnp.where(v > best, v, best)
        x = best
    return x


def avg_pool3d_valid(x: jax.Array, window: Triple) -> jax.Array:
    """VALID average pool with stride 1; each window dimension is clipped to the input size.

    The official I3D pools Mixed_5c with a (2, 7, 7) window; clipping lets small test or
    low-resolution inputs through and is identical whenever the feature map is >= 2x7x7.
    Sums are taken in float32 (or wider) and the result is cast back to ``x.dtype``.
    """
    window = tuple(min(w, x.shape[1 + i]) for i, w in enumerate(window))
    acc = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # bf16 input: sum in float32
    summed = lax.reduce_window(
        acc, np.array(0, acc.dtype), lax.add, (1, *window, 1), (1, 1, 1, 1, 1), "VALID"
    )
    return (summed / math.prod(window)).astype(x.dtype)


def torch_uniform_init(fan_in: int) -> nn.initializers.Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default Conv/Linear init.

    For weights this equals ``kaiming_uniform_(a=sqrt(5))``; for biases it is PyTorch's rule.
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# The name (jax.ad_checkpoint.checkpoint_name) of each Unit3D's conv output.
CONV_OUT_NAME = "conv_out"

ConvImpl = Literal["auto", "xla", "planes"]
CONV_IMPLS: tuple[str, ...] = ("auto", "xla", "planes")


def resolve_conv_impl(impl: str) -> str:
    """``'auto'`` → ``'planes'`` when JAX's default backend is the CPU, else ``'xla'``."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; use one of {CONV_IMPLS}")
    if impl == "auto":
        return "planes" if jax.default_backend() == "cpu" else "xla"
    return impl


# Bytes of W-columns one kernel-gradient chunk may materialise (see conv2d_kernel_grad).
DW_CHUNK_BYTES = 8 * 2**20


def _conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
            pads: tuple[tuple[int, int], ...]) -> jax.Array:
    acc_type = None if x.dtype == jnp.float32 else jnp.promote_types(x.dtype, jnp.float32)
    return lax.conv_general_dilated(
        x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=acc_type,
    )


def conv2d_kernel_grad(
    x: jax.Array,
    dy: jax.Array,
    kernel_shape: Sequence[int],
    strides: tuple[int, int],
    pads: Sequence[tuple[int, int]],
    chunk_bytes: int | None = None,
) -> jax.Array:
    """Kernel gradient of a 2-D NHWC/HWIO conv, ``sum_{n,i,j} x[n, s*i+a, s*j+b, c] dy[n,i,j,o]``.

    Computed as matmuls of ``dy`` with columns of ``x``, a few planes at a time, summed in
    float32. Per chunk, the ``kw`` horizontal taps are gathered once into W-columns
    ``(n, H, W_out, kw * C)``; each of the ``kh`` vertical taps is then a row-strided slice of
    them (whole rows, contiguous) and one matmul. A chunk holds at most ``chunk_bytes`` of
    W-columns (:data:`DW_CHUNK_BYTES` by default; the chunk size is the largest divisor of the
    number of planes within that budget).

    Why: XLA:CPU's own kernel gradient is a convolution whose window is the whole output map
    (112x112 for the I3D stem); YNNPACK runs it slowly and worse than linearly in the number
    of planes: in one PECoP step at 4x32x224x224 the stem's took 7.4 s and Conv3d_2c's 4.2 s,
    15.9 s of the 27 s step for all kernel gradients (docs/PERFORMANCE.md, "Kernel gradients
    as chunked matmuls"). Full im2col columns (all ``kh * kw`` taps) were gathered in pieces
    of ``C`` floats; W-columns gather ``kh`` times less that way, and the row slices copy
    whole rows: 10-40% faster for the I3D's convs.
    """
    kh, kw, cin, cout = kernel_shape
    sh, sw = strides
    dtype = jnp.promote_types(x.dtype, dy.dtype)
    x = jnp.pad(x.astype(dtype), [(0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)])
    dy = dy.astype(dtype)
    n, oh, ow = dy.shape[:3]
    per_plane = x.shape[1] * ow * kw * cin * x.dtype.itemsize
    limit = max(1, min(n, (chunk_bytes or DW_CHUNK_BYTES) // per_plane))
    chunk = max(d for d in range(1, limit + 1) if n % d == 0)

    def chunk_grad(xs: jax.Array, dys: jax.Array) -> jax.Array:  # (kh, cout, kw * cin)
        cols = jnp.concatenate([xs[:, :, b:b + (ow - 1) * sw + 1:sw] for b in range(kw)], axis=-1)
        return jnp.stack([
            lax.dot_general(dys, cols[:, a:a + (oh - 1) * sh + 1:sh],
                            (((0, 1, 2), (0, 1, 2)), ((), ())), preferred_element_type=jnp.float32)
            for a in range(kh)
        ])

    if chunk == n:
        total = chunk_grad(x, dy)
    else:  # a loop: with the stem's 64 chunks unrolled, compiling a PECoP step took 3x longer
        def body(i, acc):
            xs = lax.dynamic_slice_in_dim(x, i * chunk, chunk)
            dys = lax.dynamic_slice_in_dim(dy, i * chunk, chunk)
            return acc + chunk_grad(xs, dys)

        total = lax.fori_loop(0, n // chunk, body, jnp.zeros((kh, cout, kw * cin), jnp.float32))
    return total.reshape(kh, cout, kw, cin).transpose(0, 2, 3, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def plane_conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 pads: tuple[tuple[int, int], ...]) -> jax.Array:
    """2-D NHWC conv of the ``'planes'`` path: XLA's forward and input gradient, the kernel
    gradient of :func:`conv2d_kernel_grad` (same values up to float32 summation order)."""
    return _conv2d(x, kernel, strides, pads)


def _plane_conv2d_fwd(x, kernel, strides, pads):
    return _conv2d(x, kernel, strides, pads), (x, kernel)


def _plane_conv2d_bwd(strides, pads, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda v: _conv2d(v, kernel, strides, pads), x)
    (dx,) = input_vjp(dy)
    dk = conv2d_kernel_grad(x, dy, kernel.shape, strides, pads)
    return dx, dk.astype(kernel.dtype)


plane_conv2d.defvjp(_plane_conv2d_fwd, _plane_conv2d_bwd)


def conv3d(
    x: jax.Array,
    kernel: jax.Array,
    strides: Triple,
    pads: Sequence[tuple[int, int]],
    impl: str = "auto",
) -> jax.Array:
    """Dense 3-D convolution, NDHWC input, DHWIO kernel, explicit (front, back) zero padding.

    ``impl='xla'`` is one ``lax.conv_general_dilated`` (what ``nn.Conv`` does).
    ``impl='planes'`` computes the same sums of products through ops XLA:CPU runs fast:
    a 1x1x1 conv is a matmul, and a (kt, kh, kw) conv is a sum over its kt temporal taps of
    2-D convs on the (B*T, H, W, C) planes — or, when kt * C_in is small (the RGB stem), one
    2-D conv on the taps stacked along channels. XLA:CPU sends 2-D convs and matmuls to its
    YNNPACK library but runs 3-D convs through a much slower Eigen path (its 7x7x7 stem is
    ~7x slower than PyTorch/oneDNN). Results equal ``'xla'`` up to float32 summation order
    (~1e-6 relative); with a low-precision ``x`` the taps are summed in float32.
    ``'auto'`` picks ``'planes'`` on the CPU backend and ``'xla'`` elsewhere.
    """
    impl = resolve_conv_impl(impl)
    pads = [tuple(p) for p in pads]
    if impl == "xla":
        return lax.conv_general_dilated(
            x, kernel, strides, pads, dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
        )
    kt, kh, kw, cin, cout = kernel.shape
    st, sh, sw = strides
    if (kt, kh, kw) == (1, 1, 1) and all(p == (0, 0) for p in pads):
        if (st, sh, sw) != (1, 1, 1):
            x = x[:, ::st, ::sh, ::sw]
        return lax.dot_general(x, kernel[0, 0, 0], (((4,), (0,)), ((), ())))
    x = jnp.pad(x, [(0, 0), pads[0], (0, 0), (0, 0), (0, 0)])
    b, tp, h, w, c = x.shape
    t_out = (tp - kt) // st + 1
    planes = [
        lax.slice_in_dim(x, a, a + (t_out - 1) * st + 1, st, axis=1).reshape(b * t_out, h, w, c)
        for a in range(kt)
    ]

    def conv2d(inp: jax.Array, k: jax.Array) -> jax.Array:
        return plane_conv2d(inp, k, (sh, sw), tuple(pads[1:]))

    if kt * cin <= 64:
        y = conv2d(
            jnp.concatenate(planes, axis=-1),
            jnp.moveaxis(kernel, 0, 2).reshape(kh, kw, kt * cin, cout),
        )
    else:
        y = conv2d(planes[0], kernel[0])
        for a in range(1, kt):
            y = y + conv2d(planes[a], kernel[a])
    y = y.astype(x.dtype)
    return y.reshape(b, t_out, *y.shape[1:])


class Conv3D(nn.Module):
    """``nn.Conv`` for 3-D kernels with the same parameters (``kernel`` DHWIO, ``bias``) and
    init arguments, computed by :func:`conv3d` (``impl`` chooses how).

    ``padding`` is ``'SAME'`` (XLA/TF SAME, from the input size) or explicit (front, back)
    pairs, as :func:`conv_padding` returns.
    """

    features: int
    kernel_size: Triple
    strides: Triple = (1, 1, 1)
    padding: str | Sequence[tuple[int, int]] = "SAME"
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()
    impl: ConvImpl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features)
        )
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if self.padding == "SAME":
            pads = [
                same_pads(x.shape[1 + i], self.kernel_size[i], self.strides[i], "tf_same")
                for i in range(3)
            ]
        else:
            pads = list(self.padding)
        y = conv3d(x, kernel, self.strides, pads, self.impl)
        if bias is not None:
            y = y + bias
        return y


def conv_padding(kernel: Triple, strides: Triple, mode: PaddingMode) -> str | list[tuple[int, int]]:
    """Padding argument for ``nn.Conv``: XLA's 'SAME' is exactly TF SAME; static is explicit."""
    if mode == "tf_same":
        return "SAME"
    return [same_pads(0, k, s, "static_same") for k, s in zip(kernel, strides)]


class BatchNorm(nn.Module):
    """Batch normalisation over all but the channel axis, with PyTorch's running-var option.

    Variables match ``flax.linen.BatchNorm`` (params ``scale``/``bias``, batch_stats
    ``mean``/``var``). Batch statistics use a two-pass variance in float32. With
    ``unbiased_running_var`` the running variance is updated with the unbiased batch
    variance (x n/(n-1)), as ``torch.nn.BatchNorm1d/3d`` do — what PECoP's pretraining does to
    the backbone statistics, and what every PyTorch-trained head (MSCADC, TSA, CoFInAl)
    expects; Sonnet/Flax use the biased one. Normalisation always uses the biased batch
    variance, as all of them do. ``momentum`` is Flax's (the running average keeps
    ``momentum`` of itself): PyTorch's ``momentum=0.1`` is ``momentum=0.9`` here.

    Kept instead of ``flax.linen.BatchNorm`` because Flax has no unbiased running variance:
    its ``var`` update is always the biased batch variance (``tests/test_batch_norm.py`` shows
    it, and compares this layer with ``torch.nn.BatchNorm1d``).

    ``mask`` (broadcastable to ``x`` without its channel axis; True counts) restricts the
    batch statistics to the masked positions, e.g. the real clips of padded videos: n is then
    the number of those positions.
    """

    use_scale: bool = True
    epsilon: float = 1e-5
    momentum: float = 0.9
    unbiased_running_var: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, use_running_average: bool,
                 mask: jax.Array | None = None) -> jax.Array:
        channels = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            if mask is None:
                n = math.prod(x.shape[:-1])
                mean = jnp.mean(xf, axes)
                var = jnp.mean(jnp.square(xf - mean), axes)
                bessel = n / max(n - 1, 1)
            else:
                weight = jnp.broadcast_to(mask, x.shape[:-1]).astype(jnp.float32)[..., None]
                n = jnp.sum(weight)
                mean = jnp.sum(xf * weight, axes) / n
                var = jnp.sum(jnp.square(xf - mean) * weight, axes) / n
                bessel = n / jnp.maximum(n - 1.0, 1.0)
            if not self.is_initializing():
                update_var = var * bessel if self.unbiased_running_var else var
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * mean
                ra_var.value = m * ra_var.value + (1 - m) * update_var
        y = (x.astype(jnp.float32) - mean) * lax.rsqrt(var + self.epsilon)
        if self.use_scale:
            y = y * self.param(
                "scale",
                nn.with_logical_partitioning(nn.initializers.ones_init(), ("conv_out",)),
                (channels,),
            )
        y = y + self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
            (channels,),
        )
        return y.astype(self.dtype)


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
    bn_unbiased_running_var: bool = False
    kernel_axes: tuple[str, ...] = CONV_KERNEL_AXES
    dtype: Any = jnp.float32
    conv_impl: ConvImpl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool = True) -> jax.Array:
        x = Conv3D(
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
            impl=self.conv_impl,
            name="conv",
        )(x)
        # Names the conv output for rematerialisation policies (models/i3d.py REMAT_POLICIES);
        # an identity otherwise.
        x = checkpoint_name(x, CONV_OUT_NAME)
        if self.use_bn:
            x = BatchNorm(
                use_scale=self.bn_scale,
                epsilon=self.bn_eps,
                momentum=self.bn_momentum,
                unbiased_running_var=self.bn_unbiased_running_var,
                dtype=self.dtype,
                name="bn",
            )(x, use_running_average=use_running_average)
        if self.activation:
            x = nn.relu(x)
        return x
