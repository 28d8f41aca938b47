"""Parity with an independent PyTorch I3D (tests/torch_reference) through our converters.

The PyTorch model reproduces each official family's numerics with random weights; we convert
its state_dict with ``aqa_jax.weights.torch_convert`` and require every endpoint, the
features, the logits and the adapter gradients to match to 1e-4 (fp32), on even and odd sizes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_reference.i3d import (  # noqa: E402
    TorchI3D,
    pecop_checkpoint_state_dict,
    randomize_,
    set_bn_gamma_to_one_,
)

from aqa_jax.cli import main as cli_main  # noqa: E402
from aqa_jax.models.i3d import ENDPOINTS, MIXED_BLOCKS  # noqa: E402
from aqa_jax.weights.assign import ConversionError  # noqa: E402
from aqa_jax.weights.store import load_model_weights  # noqa: E402
from aqa_jax.weights.torch_convert import (  # noqa: E402
    convert_state_dict,
    convert_torch_i3d,
)

ATOL = 1e-4
# variant → the PyTorch reference configured with that family's numerics.
TORCH_FAMILY = {
    "pecop": dict(layout="hassony2"),
    "piergiaj": dict(layout="piergiaj"),
    "deepmind": dict(layout="piergiaj", pool_pad_value=float("-inf")),
}


def _torch_model(variant, seed=0):
    model = TorchI3D(adapters=True, **TORCH_FAMILY[variant])
    randomize_(model, seed=seed)
    if variant == "deepmind":
        set_bn_gamma_to_one_(model)
    return model.eval()


def _clip(shape, seed):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _to_ndhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 4, 1)) if t.ndim == 5 else t.detach().numpy()


@functools.lru_cache(maxsize=None)
def _converted(variant):
    tmodel = _torch_model(variant)
    model, variables, _ = convert_torch_i3d(tmodel.state_dict(), variant=variant)
    assert model.variant == variant and model.adapter_blocks == tuple(MIXED_BLOCKS)
    return variant, tmodel, model, variables


@pytest.fixture(scope="module", params=list(TORCH_FAMILY))
def converted(request):
    return _converted(request.param)


# The slowest comparisons (about a minute each) run in CI for PECoP's numerics; the other
# families with `make test-all`.
PECOP_IN_CI = [pytest.param(v, marks=pytest.mark.slow) if v != "pecop" else v for v in TORCH_FAMILY]


# Even sizes, where static and TF SAME agree, and odd ones, where they do not.
@pytest.mark.parametrize("shape", [(1, 8, 32, 32, 3), (2, 9, 33, 47, 3), (1, 17, 70, 58, 3)])
def test_forward_matches_pytorch(converted, shape):
    variant, tmodel, model, variables = converted
    x = _clip(shape, seed=sum(shape))
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(np.transpose(x, (0, 4, 1, 2, 3))))
    ours = jax.jit(model.apply)(variables, jnp.asarray(x))
    for name in (*ENDPOINTS[:-1], "features", "logits"):
        expected = _to_ndhwc(ref[name])
        got = np.asarray(ours[name])
        assert got.shape == expected.shape, (variant, name)
        err = np.abs(got - expected).max()
        assert err < ATOL, f"{variant} {name} {shape}: max abs diff {err:.2e}"
    # The adapters really make some Mixed outputs negative (where pool padding matters).
    assert float(np.asarray(ours["Mixed_4f"]).min()) < 0


@pytest.mark.parametrize("variant", PECOP_IN_CI)
def test_adapter_gradients_match_pytorch(variant):
    variant, tmodel, model, variables = _converted(variant)
    x = _clip((2, 9, 33, 47, 3), seed=3)
    w = np.random.default_rng(4).standard_normal((2, 1024)).astype(np.float32)

    xt = torch.from_numpy(np.transpose(x, (0, 4, 1, 2, 3)))
    loss_t = (tmodel(xt)["features"] * torch.from_numpy(w)).sum()
    tmodel.zero_grad()
    loss_t.backward()
    torch_grads = {
        n: p.grad for n, p in tmodel.named_parameters() if "tuning_module" in n
    }
    expected = convert_state_dict(torch_grads, layout=TORCH_FAMILY[variant]["layout"]).weights

    def loss(adapter_params):
        params = jax.tree.map(lambda a: a, variables["params"])
        for block, p in adapter_params.items():
            params[block] = {**params[block], "adapter": p}
        feats = model.apply({**variables, "params": params}, jnp.asarray(x))["features"]
        return jnp.sum(feats * w)

    adapters = {b: variables["params"][b]["adapter"] for b in MIXED_BLOCKS}
    grads = jax.jit(jax.grad(loss))(adapters)
    assert len(expected) == 9 * 5
    for (_, block, _, *leaf), g in expected.items():
        got = np.asarray(grads[block][leaf[0]][leaf[1]] if len(leaf) == 2 else grads[block][leaf[0]])
        scale = max(1.0, float(np.abs(g).max()))
        err = np.abs(got - g).max() / scale
        assert err < ATOL, f"{variant} d/d {block}/{'/'.join(leaf)}: rel diff {err:.2e}"


def test_pecop_checkpoint_converts_through_the_cli(tmp_path):
    tmodel = _torch_model("pecop", seed=7)
    state = pecop_checkpoint_state_dict(tmodel, data_parallel=True, seed=8)
    src = tmp_path / "gait_adapter08.pth.tar"
    torch.save(state, src)
    assert cli_main(["convert-weights", str(src), str(tmp_path / "out")]) == 0
    model, variables, heads = load_model_weights(tmp_path / "out")
    assert model.variant == "pecop" and set(model.adapter_blocks) == set(MIXED_BLOCKS)
    assert sorted(heads) == ["vspp_segment", "vspp_speed"]

    x = _clip((1, 16, 64, 64, 3), seed=9)
    with torch.no_grad():
        feats_t = tmodel(torch.from_numpy(np.transpose(x, (0, 4, 1, 2, 3))))["AvgPool"]
        # PECoP's heads: 1x1x1 conv on the pooled map, averaged over time.
        speed_t = torch.nn.functional.conv3d(
            feats_t, state["module.logits_p.conv3d.weight"], state["module.logits_p.conv3d.bias"]
        ).mean((2, 3, 4)).numpy()
    ours = model.apply(variables, jnp.asarray(x))
    np.testing.assert_allclose(ours["AvgPool"], _to_ndhwc(feats_t), atol=ATOL)
    k, b = heads["vspp_speed"]["kernel"], heads["vspp_speed"]["bias"]
    speed = np.asarray(ours["features"]) @ k.reshape(1024, 5) + b
    np.testing.assert_allclose(speed, speed_t, atol=ATOL)
    assert heads["vspp_segment"]["bias"].shape == (4,)


def test_converter_accounts_for_every_key():
    state = {k: v for k, v in _torch_model("piergiaj").state_dict().items()}
    missing = dict(state)
    del missing["Mixed_4c.b2b.bn.running_var"]
    with pytest.raises(ConversionError, match="Mixed_4c/b2b/bn/var"):
        convert_torch_i3d(missing)
    extra = dict(state, **{"Mixed_4c.b9.conv3d.weight": state["Mixed_4c.b0.conv3d.weight"]})
    with pytest.raises((ConversionError, ValueError), match="Mixed_4c"):
        convert_torch_i3d(extra)
    # A piergiaj checkpoint with trained gammas cannot go into the scale-free deepmind variant.
    with pytest.raises(ConversionError, match="gammas"):
        convert_torch_i3d(state, variant="deepmind")
    ignored = convert_state_dict(state).ignored
    assert ignored and all(k.endswith("num_batches_tracked") for k in ignored)


@pytest.mark.parametrize("variant", PECOP_IN_CI)
def test_train_mode_batch_statistics_match_pytorch(variant):
    """PECoP runs BN in train mode: batch statistics, and running stats updated (unbiased var).

    Normalising by statistics of a few values amplifies rounding through the network, so the
    oracle is PyTorch in float64: our float32 error must be no worse than PyTorch's own
    float32 error (plus a small floor).
    """
    variant, tmodel, model, variables = _converted(variant)
    x = _clip((2, 9, 33, 47, 3), seed=11)
    xt = torch.from_numpy(np.transpose(x, (0, 4, 1, 2, 3)))
    runs = {}
    for dtype in (torch.float64, torch.float32):
        ref_model = _torch_model(variant).to(dtype).train()
        with torch.no_grad():
            feats = ref_model(xt.to(dtype))["features"].double().numpy()
        runs[dtype] = (feats, {k: v.double().numpy() for k, v in ref_model.state_dict().items()})
    out, updates = model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"],
                               rngs={"dropout": jax.random.key(0)})
    exact, exact_state = runs[torch.float64]
    torch_err = np.abs(runs[torch.float32][0] - exact).max()
    our_err = np.abs(np.asarray(out["features"], np.float64) - exact).max()
    assert our_err <= 2 * torch_err + 1e-4, (variant, our_err, torch_err)
    if variant == "deepmind":  # Sonnet's decay 0.999 and biased variance: not PyTorch's update
        return
    expected = convert_state_dict(exact_state, layout=TORCH_FAMILY[variant]["layout"]).weights
    for path in (("Conv3d_1a_7x7",), ("Mixed_4b", "b1b"), ("Mixed_5c", "b3b")):
        stats = updates["batch_stats"]
        for name in path:
            stats = stats[name]
        for leaf in ("mean", "var"):
            np.testing.assert_allclose(
                stats["bn"][leaf], expected[("batch_stats", *path, "bn", leaf)],
                atol=1e-4, rtol=1e-4, err_msg=f"{variant} {path} running {leaf}")
