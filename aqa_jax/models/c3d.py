"""C3D backbones of MTL-AQA (Parmar & Morris, CVPR 2019), NDHWC, in Flax linen.

- :class:`C3D` — the Sports-1M C3D of Tran et al. (ICCV 2015) up to ``pool5``, as ported to
  PyTorch by DavideA/c3d-pytorch (``C3D_model.py``, weights ``c3d.pickle``) and cut before
  ``fc6`` by MTL-AQA's ``models/C3DAVG/C3D_altered.py`` (the C3D-AVG body).
- :class:`C3DDilated` — MTL-AQA's ``models/MSCADC/body.py`` ``C3D_dilated_body`` (the MSCADC
  body): a half-width C3D with BatchNorm after every conv, no pool after stage 4 and dilated
  stage-5 convs.

Both follow the official PyTorch code layer for layer (kernel 3x3x3, zero padding, PyTorch
``MaxPool3d`` with ``ceil_mode=False``, so odd sizes are floored) and use PyTorch's default
Conv3d initialisation, U(±1/sqrt(27·C_in)) for weights and biases, so random-init training
starts where the official code does. Weights converted from PyTorch state dicts by
:mod:`aqa_jax.weights.c3d_convert` give the same outputs to float32 rounding
(tests/test_c3d.py checks this against a PyTorch model written in the test).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from aqa_jax.models.layers import (
    CONV_KERNEL_AXES,
    BatchNorm,
    ConvImpl,
    conv3d,
    max_pool3d,
    resolve_conv_impl,
    torch_uniform_init,
)

Triple = tuple[int, int, int]
INITS = ("torch", "he")  # conv initialisations (TorchConv3D)

# (name, C_in, C_out) of the Sports-1M C3D convs, all 3x3x3, stride 1, padding 1, + ReLU.
C3D_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("conv1", 3, 64),
    ("conv2", 64, 128),
    ("conv3a", 128, 256),
    ("conv3b", 256, 256),
    ("conv4a", 256, 512),
    ("conv4b", 512, 512),
    ("conv5a", 512, 512),
    ("conv5b", 512, 512),
)
# Max-pool after a conv: (window = stride, (T, H, W) padding) as in C3D_model.py.
C3D_POOLS: dict[str, tuple[Triple, Triple]] = {
    "conv1": ((1, 2, 2), (0, 0, 0)),
    "conv2": ((2, 2, 2), (0, 0, 0)),
    "conv3b": ((2, 2, 2), (0, 0, 0)),
    "conv4b": ((2, 2, 2), (0, 0, 0)),
    "conv5b": ((2, 2, 2), (0, 1, 1)),
}

# (name, C_in, C_out, padding, dilation) of C3D_dilated_body; every conv is 3x3x3 + BN + ReLU.
# conv5b's padding 1 with dilation 2 is the official value: it trims one voxel per side
# (the MSCADC head's 1x1 conv with padding 1 adds it back).
C3D_DILATED_LAYERS: tuple[tuple[str, int, int, int, int], ...] = (
    ("conv1", 3, 32, 1, 1),
    ("conv2", 32, 64, 1, 1),
    ("conv3a", 64, 128, 1, 1),
    ("conv3b", 128, 128, 1, 1),
    ("conv4a", 128, 256, 1, 1),
    ("conv4b", 256, 256, 1, 1),
    ("conv5a", 256, 256, 2, 2),
    ("conv5b", 256, 256, 1, 2),
)
C3D_DILATED_POOLS: dict[str, tuple[Triple, Triple]] = {
    "conv1": ((1, 2, 2), (0, 0, 0)),
    "conv2": ((2, 2, 2), (0, 0, 0)),
    "conv3b": ((2, 2, 2), (0, 0, 0)),
}

#: Conv FLOPs per clip (2 x multiply-adds, counting every 3x3x3 tap of every output voxel,
#: the usual dense convention: 2·27·C_in·C_out per output voxel), from the layer tables.
#: XLA's ``jax.jit(...).lower(...).compile().cost_analysis()['flops']`` reports less — 66.0 G
#: for C3D at 16x112x112, 18.8 G / 49.3 G for C3DDilated at 16x112² / 16x180² — because it
#: counts only the taps that land on real (non-padding) input; tests/test_c3d.py checks that
#: count against an independent tally.
C3D_FLOPS_16x112 = 76_993_265_664
C3D_DILATED_FLOPS_16x112 = 22_868_656_128
C3D_DILATED_FLOPS_16x180 = 58_478_837_760


def conv3d_dilated(
    x: jax.Array,
    kernel: jax.Array,
    pads: Sequence[tuple[int, int]],
    dilation: Triple,
    impl: str = "auto",
) -> jax.Array:
    """Stride-1 3-D convolution with kernel dilation, NDHWC input, DHWIO kernel.

    Dilation (1, 1, 1) is :func:`aqa_jax.models.layers.conv3d`. Otherwise ``impl='xla'`` is one
    ``lax.conv_general_dilated(rhs_dilation=...)`` and ``'planes'`` sums, over the kt temporal
    taps (spaced ``dilation[0]`` apart), dilated 2-D convs of the (B*T, H, W, C) planes — the
    same sums, in a form XLA:CPU runs much faster (see ``layers.conv3d``).
    """
    dilation = tuple(dilation)
    if dilation == (1, 1, 1):
        return conv3d(x, kernel, (1, 1, 1), pads, impl)
    impl = resolve_conv_impl(impl)
    pads = [tuple(p) for p in pads]
    if impl == "xla":
        return lax.conv_general_dilated(
            x,
            kernel,
            (1, 1, 1),
            pads,
            rhs_dilation=dilation,
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        )
    kt = kernel.shape[0]
    dt = dilation[0]
    x = jnp.pad(x, [(0, 0), pads[0], (0, 0), (0, 0), (0, 0)])
    b, tp, h, w, c = x.shape
    t_out = tp - dt * (kt - 1)
    if t_out <= 0:
        raise ValueError(f"clip of {tp} padded frames is too short for a dilated conv ({x.shape})")
    y = None
    for a in range(kt):
        plane = lax.slice_in_dim(x, a * dt, a * dt + t_out, axis=1).reshape(b * t_out, h, w, c)
        ya = lax.conv_general_dilated(
            plane,
            kernel[a],
            (1, 1),
            pads[1:],
            rhs_dilation=dilation[1:],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        y = ya if y is None else y + ya
    return y.reshape(b, t_out, *y.shape[1:])


class TorchConv3D(nn.Module):
    """``torch.nn.Conv3d`` (stride 1, symmetric zero padding, optional dilation) in NDHWC.

    Parameters ``kernel`` (kt, kh, kw, C_in, C_out) and ``bias`` (C_out,), both drawn from
    PyTorch's default U(±1/sqrt(C_in·kt·kh·kw)); ``weight_init='he'`` draws the kernel from
    He-uniform U(±sqrt(6/fan_in)) and zeroes the bias, which keeps the activations' scale
    through a deep ReLU stack trained from scratch (PyTorch's default shrinks it ~2.4x per
    layer).
    """

    features: int
    kernel_size: Triple = (3, 3, 3)
    padding: int = 1
    dilation: int = 1
    dtype: Any = jnp.float32
    impl: ConvImpl = "auto"
    weight_init: str = "torch"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1] * math.prod(self.kernel_size)
        if self.weight_init not in INITS:
            raise ValueError(f"conv weight_init={self.weight_init!r}; use one of {INITS}")
        he = self.weight_init == "he"
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                nn.initializers.he_uniform() if he else torch_uniform_init(fan_in),
                CONV_KERNEL_AXES),
            (*self.kernel_size, x.shape[-1], self.features),
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros if he else torch_uniform_init(fan_in),
                                         CONV_KERNEL_AXES[-1:]),
            (self.features,),
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        pads = [(self.padding, self.padding)] * 3
        y = conv3d_dilated(x, kernel, pads, (self.dilation,) * 3, self.impl)
        return y + bias


def torch_max_pool3d(x: jax.Array, window: Triple, padding: Triple = (0, 0, 0)) -> jax.Array:
    """``torch.nn.MaxPool3d(kernel_size=window, stride=window, padding=padding)`` on NDHWC.

    PyTorch pads max-pools with -inf and floors the output length (``ceil_mode=False``).
    The gradient goes to the first maximum of each window, as in PyTorch.
    """
    if any(p > 0 for p in padding):
        x = jnp.pad(x, [(0, 0), *[(p, p) for p in padding], (0, 0)], constant_values=-jnp.inf)
    # With window == stride, "static_same" means no padding; ceil_mode=False floors.
    return max_pool3d(
        x, window, window, padding="static_same", pad_value=-math.inf, ceil_mode=False
    )


def _check_clip(name: str, x: jax.Array, min_t: int, min_hw: int) -> None:
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"{name} expects NDHWC clips (N, T, H, W, 3), got shape {x.shape}")
    t, h, w = x.shape[1:4]
    if t < min_t or h < min_hw or w < min_hw:
        raise ValueError(
            f"{name} needs clips of at least {min_t} frames and {min_hw}x{min_hw} pixels "
            f"(its pools would leave nothing), got {t}x{h}x{w}"
        )


class C3D(nn.Module):
    """Sports-1M C3D up to ``pool5`` (Tran et al. 2015; DavideA/c3d-pytorch; MTL-AQA C3D_altered).

    ======  =================  ===================  =====================
    layer   conv (3x3x3, p 1)  then                 output at 16x112x112
    ======  =================  ===================  =====================
    conv1   3 → 64, ReLU       pool (1,2,2)         16 x 56 x 56 x 64
    conv2   64 → 128, ReLU     pool 2               8 x 28 x 28 x 128
    conv3a  128 → 256, ReLU                         8 x 28 x 28 x 256
    conv3b  256 → 256, ReLU    pool 2               4 x 14 x 14 x 256
    conv4a  256 → 512, ReLU                         4 x 14 x 14 x 512
    conv4b  512 → 512, ReLU    pool 2               2 x 7 x 7 x 512
    conv5a  512 → 512, ReLU                         2 x 7 x 7 x 512
    conv5b  512 → 512, ReLU    pool 2, pad (0,1,1)  1 x 4 x 4 x 512
    ======  =================  ===================  =====================

    "pool k" is a max-pool with window = stride = k (PyTorch, -inf padding, floored).
    27,655,936 parameters (``conv1/kernel``, ``conv1/bias``, ..., ``conv5b/bias``; kernels
    (3, 3, 3, C_in, C_out)); :data:`C3D_FLOPS_16x112` = 77.0 GFLOPs (38.5 G multiply-adds)
    per 16x112x112 clip (XLA's cost_analysis: 66.0 G, padding taps excluded).

    Returns, per clip, the pool5 activations flattened in **PyTorch's (C, T, H, W) order**
    — (N, 8192) at 16x112x112 — so that the Sports-1M ``fc6`` (or a converted MTL-AQA
    ``my_fc6``) applies to it unchanged. The official ``h.view(-1, 8192)`` is a per-clip
    flatten at that size; here each clip is flattened whatever its size. With
    ``flatten=False`` the NDHWC pool5 map (N, T', H', W', 512) is returned instead.

    Input scaling is the caller's choice: MTL-AQA's C3D-AVG feeds ImageNet-normalised RGB
    (reference §5.2), DavideA's ``predict.py`` raw 0-255 RGB.

    ``train`` and ``use_running_average`` are accepted (and have no effect: no BatchNorm, no
    dropout before fc6) so that methods call C3D and :class:`~aqa_jax.models.i3d.InceptionI3d`
    alike.

    Attributes:
      flatten: return the (C, T, H, W)-flattened features (default) or the NDHWC map.
      conv_impl: how convs are computed (:func:`aqa_jax.models.layers.conv3d`): ``'auto'``
        (``'planes'`` on CPU, ``'xla'`` elsewhere), ``'xla'`` or ``'planes'``.
      dtype: compute dtype (parameters stay float32).
    """

    flatten: bool = True
    conv_impl: ConvImpl = "auto"
    weight_init: str = "torch"  # or "he" (TorchConv3D), for training from scratch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        use_running_average: bool | None = None,
    ) -> jax.Array:
        del train, use_running_average  # no BatchNorm and no dropout in the body
        _check_clip("C3D", x, min_t=16, min_hw=16)
        x = x.astype(self.dtype)
        for name, _, features in C3D_LAYERS:
            x = TorchConv3D(features, dtype=self.dtype, impl=self.conv_impl, weight_init=self.weight_init, name=name)(x)
            x = nn.relu(x)
            if name in C3D_POOLS:
                x = torch_max_pool3d(x, *C3D_POOLS[name])
        if not self.flatten:
            return x
        return jnp.transpose(x, (0, 4, 1, 2, 3)).reshape(x.shape[0], -1)


class ConvBNReLU(nn.Module):
    """Conv3d → BatchNorm3d → ReLU of ``C3D_dilated_body``, as submodules ``conv`` and ``bn``.

    The BN submodule is named ``bn`` so :func:`aqa_jax.train.partition.label_of` labels its
    scale/bias ``bn``; it has PyTorch's defaults (affine, eps 1e-5, momentum 0.1 → Flax
    momentum 0.9, running variance updated with the unbiased batch variance).
    """

    features: int
    padding: int = 1
    dilation: int = 1
    dtype: Any = jnp.float32
    conv_impl: ConvImpl = "auto"
    weight_init: str = "torch"  # or "he" (TorchConv3D), for training from scratch

    @nn.compact
    def __call__(self, x: jax.Array, *, use_running_average: bool) -> jax.Array:
        x = TorchConv3D(
            self.features,
            padding=self.padding,
            dilation=self.dilation,
            dtype=self.dtype,
            impl=self.conv_impl,
            weight_init=self.weight_init,
            name="conv",
        )(x)
        x = BatchNorm(
            use_scale=True,
            epsilon=1e-5,
            momentum=0.9,
            unbiased_running_var=True,
            dtype=self.dtype,
            name="bn",
        )(x, use_running_average=use_running_average)
        return nn.relu(x)


class C3DDilated(nn.Module):
    """MSCADC's ``C3D_dilated_body`` (MTL-AQA ``models/MSCADC/body.py``).

    ======  ==================================  ============  ====================
    layer   conv 3x3x3 + BN + ReLU              then          output at 16x180x180
    ======  ==================================  ============  ====================
    conv1   3 → 32, pad 1                       pool (1,2,2)  16 x 90 x 90 x 32
    conv2   32 → 64, pad 1                      pool 2        8 x 45 x 45 x 64
    conv3a  64 → 128, pad 1                                   8 x 45 x 45 x 128
    conv3b  128 → 128, pad 1                    pool 2        4 x 22 x 22 x 128
    conv4a  128 → 256, pad 1                                  4 x 22 x 22 x 256
    conv4b  256 → 256, pad 1                                  4 x 22 x 22 x 256
    conv5a  256 → 256, pad 2, dilation 2                      4 x 22 x 22 x 256
    conv5b  256 → 256, pad 1, dilation 2                      2 x 20 x 20 x 256
    (end)   dropout p = 0.5 (element-wise)      train only    2 x 20 x 20 x 256
    ======  ==================================  ============  ====================

    No pool after stage 4. conv5b's padding 1 with dilation 2 (effective kernel 5) trims one
    voxel per side: that is the official code (the MSCADC heads' 1x1 conv with padding 1
    restores the size; their AvgPool(2, 11, 11) relies on it). At 16x112x112 the map is
    2 x 12 x 12 x 256. 6,918,720 parameters (4,096 of them BN scale/bias) plus 2 x 1,920 BN
    running statistics; :data:`C3D_DILATED_FLOPS_16x112` = 22.9 GFLOPs per 16x112x112 clip,
    :data:`C3D_DILATED_FLOPS_16x180` = 58.5 GFLOPs per 16x180x180 clip (MSCADC's input).

    Variables: ``params/conv1/conv/{kernel,bias}``, ``params/conv1/bn/{scale,bias}``,
    ``batch_stats/conv1/bn/{mean,var}``, ... (the module is ``bn``, so the training loop's
    freezing labels and BN policy treat it as the I3D's BatchNorm).

    ``use_running_average`` defaults to ``not train``, as in
    :class:`~aqa_jax.models.i3d.InceptionI3d`; the final dropout is active when ``train``
    (it needs a ``'dropout'`` rng), like PyTorch's ``model.train()``.

    Attributes:
      dropout_rate: the official body's final ``nn.Dropout(p=0.5)``.
      conv_impl: see :class:`C3D`.
      dtype: compute dtype (parameters and BN statistics stay float32).
    """

    dropout_rate: float = 0.5
    conv_impl: ConvImpl = "auto"
    weight_init: str = "torch"  # or "he" (TorchConv3D), for training from scratch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        use_running_average: bool | None = None,
    ) -> jax.Array:
        """Runs the body; returns the NDHWC map (N, T', H', W', 256)."""
        _check_clip("C3DDilated", x, min_t=12, min_hw=24)
        ura = (not train) if use_running_average is None else use_running_average
        x = x.astype(self.dtype)
        for name, _, features, padding, dilation in C3D_DILATED_LAYERS:
            x = ConvBNReLU(
                features,
                padding=padding,
                dilation=dilation,
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                weight_init=self.weight_init,
                name=name,
            )(x, use_running_average=ura)
            if name in C3D_DILATED_POOLS:
                x = torch_max_pool3d(x, *C3D_DILATED_POOLS[name])
        return nn.Dropout(self.dropout_rate)(x, deterministic=not train)
