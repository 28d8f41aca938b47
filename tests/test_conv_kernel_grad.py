"""The 'planes' conv's own kernel gradient (chunked W-column matmuls) against XLA's 3-D conv.

The oracle is autodiff of one ``lax.conv_general_dilated`` over the whole 3-D conv
(``conv3d(impl='xla')``), which shares no code with the custom VJP of ``plane_conv2d``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from aqa_jax.models import layers
from aqa_jax.models.layers import conv2d_kernel_grad, conv3d

# (input NDHWC, kernel DHWIO, strides, pads): the stem's stacked-taps path (kt * cin <= 64,
# stride 2, TF-SAME's asymmetric pads), a 3x3x3 Inception conv, a (1, 3, 3) conv, a padded
# 1x1 spatial kernel.
CASES = [
    ((2, 9, 13, 13, 3), (7, 7, 7, 3, 5), (2, 2, 2), [(2, 3), (2, 3), (2, 3)]),
    ((2, 4, 8, 8, 24), (3, 3, 3, 24, 7), (1, 1, 1), [(1, 1), (1, 1), (1, 1)]),
    ((1, 3, 9, 7, 5), (1, 3, 3, 5, 4), (1, 2, 1), [(0, 0), (1, 1), (0, 1)]),
    ((1, 5, 6, 6, 4), (3, 1, 1, 4, 6), (1, 1, 1), [(1, 1), (0, 0), (0, 0)]),
]


def _grads(impl, x, kernel, strides, pads):
    loss = lambda x, k: jnp.sum(jnp.sin(conv3d(x, k, strides, pads, impl)))  # noqa: E731
    return jax.jit(jax.grad(loss, (0, 1)))(x, kernel)


@pytest.mark.parametrize("chunk_bytes", [None, 1])
@pytest.mark.parametrize("shape,kshape,strides,pads", CASES)
def test_planes_gradients_equal_xla_3d_conv(monkeypatch, shape, kshape, strides, pads, chunk_bytes):
    """chunk_bytes=1 forces one plane per chunk (the loop); None, the whole batch at once."""
    if chunk_bytes is not None:
        monkeypatch.setattr(layers, "DW_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal(kshape) / np.sqrt(np.prod(kshape[:4])), jnp.float32)
    dx, dk = _grads("planes", x, kernel, strides, pads)
    ref_dx, ref_dk = _grads("xla", x, kernel, strides, pads)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dk, ref_dk, rtol=1e-4, atol=1e-4 * float(jnp.abs(ref_dk).max()))


@pytest.mark.parametrize("n,chunk_planes", [(6, 2), (6, 3), (5, 1), (4, 4)])
def test_chunks_divide_the_planes_and_sum_to_the_whole(n, chunk_planes):
    """The chunk is the largest divisor of the plane count that fits the byte budget."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((n, 10, 10, 3)), jnp.float32)
    kernel = jnp.zeros((3, 3, 3, 4), jnp.float32)
    pads = ((1, 1), (1, 1))
    conv = lambda k: lax.conv_general_dilated(  # noqa: E731
        x, k, (2, 2), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    dy = jnp.asarray(rng.standard_normal(conv(kernel).shape), jnp.float32)
    (ref,) = jax.vjp(conv, kernel)[1](dy)
    per_plane = 12 * 5 * 3 * 3 * 4  # padded rows x output columns x kw x C_in x float32 bytes
    budget = per_plane * chunk_planes + per_plane // 2
    got = jax.jit(lambda x, dy: conv2d_kernel_grad(x, dy, kernel.shape, (2, 2), pads, budget))(x, dy)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    jaxpr = str(jax.make_jaxpr(lambda x, dy: conv2d_kernel_grad(x, dy, kernel.shape, (2, 2), pads,
                                                                budget))(x, dy))
    if chunk_planes < n:  # one loop over the chunks (fori_loop with static bounds is a scan)
        assert f"length={n // chunk_planes}" in jaxpr
    else:
        assert "scan" not in jaxpr and "while" not in jaxpr
