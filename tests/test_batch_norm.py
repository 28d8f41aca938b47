"""The project's one BatchNorm (``aqa_jax.models.layers.BatchNorm``) against ``torch.nn.BatchNorm1d``.

Oracle: PyTorch's BatchNorm1d in training mode (output, running mean, running variance), on the
whole batch and, for ``mask``, on the masked rows alone. The last test shows why the layer is
not ``flax.linen.BatchNorm``: Flax's running variance is the biased batch variance.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aqa_jax.models.layers import BatchNorm

torch = pytest.importorskip("torch")


def run_ours(x, steps, mask=None, **kwargs):
    """``steps`` training-mode calls; returns the last output and the running statistics."""
    bn = BatchNorm(momentum=0.9, epsilon=1e-5, unbiased_running_var=True, **kwargs)
    variables = nn.unbox(bn.init(jax.random.key(0), x, use_running_average=False))
    apply = jax.jit(lambda v, x: bn.apply(v, x, use_running_average=False, mask=mask,
                                          mutable=["batch_stats"]))
    for _ in range(steps):
        y, updates = apply(variables, x)
        variables = {**variables, **updates}
    return np.asarray(y), jax.device_get(variables["batch_stats"])


def run_torch(rows, steps):
    bn = torch.nn.BatchNorm1d(rows.shape[-1])  # momentum 0.1, eps 1e-5, unbiased running var
    bn.train()
    with torch.no_grad():
        for _ in range(steps):
            y = bn(torch.from_numpy(rows))
    return y.numpy(), bn.running_mean.numpy(), bn.running_var.numpy()


def test_matches_torch_batchnorm1d_over_batch_and_time():
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 5, 8)).astype(np.float32)
    y, stats = run_ours(x, steps=3)
    ty, tmean, tvar = run_torch(x.reshape(-1, 8), steps=3)
    np.testing.assert_allclose(y.reshape(-1, 8), ty, atol=2e-5)
    np.testing.assert_allclose(stats["mean"], tmean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], tvar, rtol=1e-5)


def test_mask_takes_the_statistics_of_the_real_positions_only():
    """Padded videos: BatchNorm1d on the real clips alone gives the statistics and, at those
    clips, the output."""
    rng = np.random.default_rng(1)
    lengths = [5, 2, 4]
    x = rng.normal(1.0, 2.0, (3, 5, 6)).astype(np.float32)
    mask = np.arange(5)[None] < np.asarray(lengths)[:, None]
    x[~mask] = 1e3  # padding that must not count
    y, stats = run_ours(x, steps=2, mask=jnp.asarray(mask))
    ty, tmean, tvar = run_torch(x[mask], steps=2)
    np.testing.assert_allclose(y[mask], ty, atol=2e-5)
    np.testing.assert_allclose(stats["mean"], tmean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], tvar, rtol=1e-5)


def test_flax_batchnorm_lacks_the_unbiased_running_variance():
    """Why the project keeps its own layer: flax.linen.BatchNorm (even with its ``mask``)
    updates ``var`` with the biased batch variance, n/(n-1) below PyTorch's."""
    x = np.random.default_rng(2).normal(0.0, 1.0, (6, 4)).astype(np.float32)
    flax_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5)
    v = flax_bn.init(jax.random.key(0), x, use_running_average=False)
    _, updates = flax_bn.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    _, _, tvar = run_torch(x, steps=1)
    biased = x.var(axis=0)
    np.testing.assert_allclose(updates["batch_stats"]["var"], 0.9 + 0.1 * biased, rtol=1e-5)
    assert not np.allclose(updates["batch_stats"]["var"], tvar, rtol=1e-3)
    _, ours = run_ours(x, steps=1)
    np.testing.assert_allclose(ours["var"], tvar, rtol=1e-5)
