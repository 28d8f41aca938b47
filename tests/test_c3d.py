"""C3D and C3D-dilated backbones and the C3D weight converter.

Oracles: the layer tables of the official code (DavideA/c3d-pytorch ``C3D_model.py``, MTL-AQA
``models/MSCADC/body.py``) written out again here; a FLOP tally counted tap by tap; and
PyTorch models written in this file, saved with ``torch.save`` and converted by our converter.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aqa_jax.models.c3d import (
    C3D,
    C3D_DILATED_FLOPS_16x112,
    C3D_DILATED_FLOPS_16x180,
    C3D_FLOPS_16x112,
    C3DDilated,
)
from aqa_jax.train.partition import label_of
from aqa_jax.weights.assign import ConversionError
from aqa_jax.weights.c3d_convert import convert_c3d_state_dict, load_c3d_backbone

# (name, C_in, C_out, padding, dilation, pool after (window) or None), from the official code.
C3D_TABLE = [
    ("conv1", 3, 64, 1, 1, (1, 2, 2)),
    ("conv2", 64, 128, 1, 1, (2, 2, 2)),
    ("conv3a", 128, 256, 1, 1, None),
    ("conv3b", 256, 256, 1, 1, (2, 2, 2)),
    ("conv4a", 256, 512, 1, 1, None),
    ("conv4b", 512, 512, 1, 1, (2, 2, 2)),
    ("conv5a", 512, 512, 1, 1, None),
    ("conv5b", 512, 512, 1, 1, (2, 2, 2)),  # pool5 has padding (0, 1, 1)
]
DILATED_TABLE = [
    ("conv1", 3, 32, 1, 1, (1, 2, 2)),
    ("conv2", 32, 64, 1, 1, (2, 2, 2)),
    ("conv3a", 64, 128, 1, 1, None),
    ("conv3b", 128, 128, 1, 1, (2, 2, 2)),
    ("conv4a", 128, 256, 1, 1, None),
    ("conv4b", 256, 256, 1, 1, None),
    ("conv5a", 256, 256, 2, 2, None),
    ("conv5b", 256, 256, 1, 2, None),
]


def _shapes(module, shape, **kw):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    return variables, jax.eval_shape(lambda v, x: module.apply(v, x, **kw), variables, x)


def _clip(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _random_variables(model, shape, seed=0):
    """Random variables with the model's structure (``model.init`` of 27M parameters is slow
    on a shared 2-core CPU; the init itself is tested on single layers)."""
    rng = np.random.default_rng(seed)
    template = nn_unbox(_shapes(model, shape)[0])
    return jax.tree.map(lambda s: rng.uniform(-0.05, 0.05, s.shape).astype(np.float32), template)


# ---------------------------------------------------------------------------- shapes, counts


def test_c3d_shapes():
    _, out = _shapes(C3D(), (2, 16, 112, 112, 3))
    assert out.shape == (2, 8192)
    _, fmap = _shapes(C3D(flatten=False), (2, 16, 112, 112, 3))
    assert fmap.shape == (2, 1, 4, 4, 512)
    x = _clip((1, 16, 32, 32, 3))
    model = C3D()
    variables = _random_variables(model, x.shape)
    y = jax.jit(lambda v, x: model.apply(v, x, train=True, use_running_average=False))(variables, x)
    # 16x32x32 → pool5 1 x 2 x 2 x 512, flattened.
    assert y.shape == (1, 2048) and np.all(np.isfinite(y)) and np.all(np.asarray(y) >= 0)
    with pytest.raises(ValueError, match="NDHWC"):
        model.apply(variables, jnp.zeros((1, 3, 16, 32, 32)))


def test_c3d_dilated_shapes():
    _, out = _shapes(C3DDilated(), (2, 16, 180, 180, 3))
    assert out.shape == (2, 2, 20, 20, 256)  # MSCADC's input; the heads expect 2x20x20
    _, out = _shapes(C3DDilated(), (1, 16, 112, 112, 3))
    assert out.shape == (1, 2, 12, 12, 256)


@pytest.mark.parametrize(
    "model,table,bn", [(C3D(), C3D_TABLE, False), (C3DDilated(), DILATED_TABLE, True)]
)
def test_parameter_count_and_names(model, table, bn):
    variables, _ = _shapes(model, (1, 16, 112, 112, 3))
    params = jax.tree_util.tree_leaves_with_path(nn_unbox(variables["params"]))
    expected = sum(27 * cin * cout + cout + (2 * cout if bn else 0) for _, cin, cout, *_ in table)
    assert sum(int(np.prod(v.shape)) for _, v in params) == expected
    for name, cin, cout, *_ in table:
        conv = variables["params"][name]["conv"] if bn else variables["params"][name]
        assert nn_unbox(conv)["kernel"].shape == (3, 3, 3, cin, cout)
    if bn:
        stats = jax.tree.leaves(variables["batch_stats"])
        assert sum(v.size for v in stats) == 2 * sum(cout for _, _, cout, *_ in table)
        paths = [tuple(k.key for k in p) for p, _ in params]
        assert {label_of(p) for p in paths if p[-2] == "bn"} == {"bn"}
        assert {label_of(p) for p in paths if p[-2] == "conv"} == {"backbone"}


def nn_unbox(tree):
    import flax.linen as nn

    return nn.unbox(tree)


@pytest.mark.parametrize("cin,cout", [(3, 32), (256, 256)])
def test_torch_default_init(cin, cout):
    """Weights and biases ~ U(±1/sqrt(27·C_in)), PyTorch's Conv3d default; BN gamma 1, beta 0
    (the layer C3D and C3DDilated build every conv from)."""
    from aqa_jax.models.c3d import ConvBNReLU

    layer = ConvBNReLU(cout, conv_impl="xla")
    init = jax.jit(lambda key, x: layer.init(key, x, use_running_average=True))
    variables = init(jax.random.key(1), jnp.zeros((1, 3, 3, 3, cin)))
    params = nn_unbox(variables["params"])
    bound = 1 / np.sqrt(27 * cin)
    for leaf in ("kernel", "bias"):
        v = np.asarray(params["conv"][leaf])
        assert np.abs(v).max() <= bound * (1 + 1e-6) and np.abs(v).max() > 0.8 * bound, leaf
    kernel = np.asarray(params["conv"]["kernel"])  # uniform: mean 0, std bound/sqrt(3)
    assert abs(kernel.mean()) < 0.05 * bound
    assert abs(kernel.std() - bound / np.sqrt(3)) < 0.05 * bound
    np.testing.assert_array_equal(params["bn"]["scale"], 1.0)
    np.testing.assert_array_equal(params["bn"]["bias"], 0.0)


# ---------------------------------------------------------------------------- FLOPs


def _tally(n, k=3, pad=1, dil=1):
    """(output, tap) pairs of a 1-D conv that land on real input, and the dense count."""
    out = n + 2 * pad - dil * (k - 1)
    real = sum(1 for o in range(out) for a in range(k) if 0 <= o - pad + a * dil < n)
    return real, out * k


def _conv_flops(table, size):
    t, h = size
    dense = real = 0
    for name, cin, cout, pad, dil, pool in table:
        rt, dt = _tally(t, 3, pad, dil)
        rh, dh = _tally(h, 3, pad, dil)
        real += 2 * rt * rh * rh * cin * cout
        dense += 2 * dt * dh * dh * cin * cout
        t, h = t + 2 * pad - 2 * dil, h + 2 * pad - 2 * dil
        if pool:
            t, h = t // pool[0], h // pool[1]
    return dense, real


def test_flops():
    assert _conv_flops(C3D_TABLE, (16, 112))[0] == C3D_FLOPS_16x112
    assert _conv_flops(DILATED_TABLE, (16, 112))[0] == C3D_DILATED_FLOPS_16x112
    assert _conv_flops(DILATED_TABLE, (16, 180))[0] == C3D_DILATED_FLOPS_16x180
    # XLA counts only taps on real input, plus bias/ReLU/pool/BN elementwise work.
    for model, table in (
        (C3D(conv_impl="xla"), C3D_TABLE),
        (C3DDilated(conv_impl="xla"), DILATED_TABLE),
    ):
        x = jax.ShapeDtypeStruct((1, 16, 112, 112, 3), jnp.float32)
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
        flops = jax.jit(model.apply).lower(variables, x).compile().cost_analysis()["flops"]
        real = _conv_flops(table, (16, 112))[1]
        assert real <= flops <= 1.01 * real


# ---------------------------------------------------------------------------- converter errors


def _numpy_state(table, bn, fc=()):
    state = {}
    for name, cin, cout, *_ in table:
        state[f"{name}.weight"] = np.zeros((cout, cin, 3, 3, 3), np.float32)
        state[f"{name}.bias"] = np.zeros((cout,), np.float32)
        if bn:
            b = "bn" + name[4:]
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                state[f"{b}.{leaf}"] = np.zeros((cout,), np.float32)
            state[f"{b}.num_batches_tracked"] = np.array(3)
    for name, fin, fout in fc:
        state[f"{name}.weight"] = np.zeros((fout, fin), np.float32)
        state[f"{name}.bias"] = np.zeros((fout,), np.float32)
    return state


def test_converter_accounts_for_every_key():
    state = _numpy_state(C3D_TABLE, False, fc=[("fc6", 8192, 16), ("fc7", 16, 16), ("fc8", 16, 4)])
    conv = convert_c3d_state_dict(state)
    assert conv.arch == "c3d" and len(conv.weights) == 16 and conv.ignored == []
    assert conv.fc["fc6"]["kernel"].shape == (8192, 16) and sorted(conv.fc) == ["fc6", "fc7", "fc8"]
    assert conv.weights[("params", "conv2", "kernel")].shape == (3, 3, 3, 64, 128)

    missing = dict(state)
    del missing["conv3a.bias"]
    with pytest.raises(ConversionError, match=r"missing keys: \['conv3a.bias'\]"):
        convert_c3d_state_dict(missing)
    half_fc = dict(state)
    del half_fc["fc7.bias"]
    with pytest.raises(ConversionError, match="fc7.bias"):
        convert_c3d_state_dict(half_fc)
    extra = dict(state, **{"conv6.weight": np.zeros((1,))})
    with pytest.raises(ConversionError, match=r"unexpected keys: \['conv6.weight'\]"):
        convert_c3d_state_dict(extra)
    assert convert_c3d_state_dict(extra, allow_unexpected=True).ignored == ["conv6.weight"]
    wrong = dict(state, **{"conv4b.weight": np.zeros((512, 256, 3, 3, 3), np.float32)})
    with pytest.raises(ConversionError, match="conv4b.weight"):
        convert_c3d_state_dict(wrong)

    dil = _numpy_state(DILATED_TABLE, True)
    conv = convert_c3d_state_dict(dil)
    assert conv.arch == "c3d_dilated" and len(conv.ignored) == 8 and len(conv.weights) == 48
    del dil["bn5a.running_var"]
    with pytest.raises(ConversionError, match="bn5a.running_var"):
        convert_c3d_state_dict(dil)
    with pytest.raises(ConversionError, match="not a C3D state dict"):
        convert_c3d_state_dict({"Conv3d_1a_7x7.conv3d.weight": np.zeros(1)})


def test_load_c3d_backbone_errors(tmp_path):
    variables = {"params": {"backbone": {}, "head": {}}}
    assert load_c3d_backbone(variables, "none") == variables
    with pytest.raises(FileNotFoundError, match="convert-weights"):
        load_c3d_backbone(variables, tmp_path / "nowhere")
    (tmp_path / "i3d").mkdir()
    (tmp_path / "i3d" / "model.json").write_text(json.dumps({"model": {"variant": "pecop"}}))
    with pytest.raises(ValueError, match="I3D weights"):
        load_c3d_backbone(variables, tmp_path / "i3d")
    with pytest.raises(ValueError, match="no 'backbone'"):
        load_c3d_backbone({"params": {"head": {}}}, tmp_path / "i3d")


# ---------------------------------------------------------------------------- PyTorch parity


class _Torch:
    """The official models, written here from the layer tables (NCDHW)."""

    @staticmethod
    def c3d(fc):
        import torch.nn as tnn

        class TorchC3D(tnn.Module):
            def __init__(self):
                super().__init__()
                for name, cin, cout, *_ in C3D_TABLE:
                    setattr(self, name, tnn.Conv3d(cin, cout, 3, padding=1))
                self.pools = {
                    name: tnn.MaxPool3d(pool, pool, padding=(0, 1, 1) if name == "conv5b" else 0)
                    for name, *_, pool in C3D_TABLE
                    if pool
                }
                for name, fin, fout in fc:  # after pool5, as in C3D_model.py (sizes reduced)
                    setattr(self, name, tnn.Linear(fin, fout))

            def forward(self, x):
                for name, *_ in C3D_TABLE:
                    x = getattr(self, name)(x).relu()
                    if name in self.pools:
                        x = self.pools[name](x)
                return x.reshape(x.shape[0], -1)

        return TorchC3D()

    @staticmethod
    def dilated():
        import torch.nn as tnn

        class TorchDilatedBody(tnn.Module):
            def __init__(self):
                super().__init__()
                for name, cin, cout, pad, dil, _ in DILATED_TABLE:
                    setattr(self, name, tnn.Conv3d(cin, cout, 3, padding=pad, dilation=dil))
                    setattr(self, "bn" + name[4:], tnn.BatchNorm3d(cout))
                self.dropout = tnn.Dropout(p=0.5)

            def forward(self, x):
                for name, *_, pool in DILATED_TABLE:
                    x = getattr(self, "bn" + name[4:])(getattr(self, name)(x)).relu()
                    if pool:
                        x = tnn.functional.max_pool3d(x, pool, pool)
                return self.dropout(x)

        return TorchDilatedBody()


def _he_init_(torch, model, seed):
    """Weights that keep activations O(1) through 8 layers, so 1e-4 is a meaningful tolerance."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
            elif p.ndim == 1:
                offset = 1.0 if name.endswith("weight") else 0.0  # BN gamma around 1
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + offset)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.2)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)


def _ncdhw(x):
    return np.ascontiguousarray(np.transpose(x, (0, 4, 1, 2, 3)))


def test_c3d_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from aqa_jax.cli import main as cli_main

    fc = [("fc6", 2048, 32), ("fc7", 32, 32), ("fc8", 32, 5)]  # fc6 sized for 32x32 clips
    tmodel = _Torch.c3d(fc).eval()
    _he_init_(torch, tmodel, seed=0)
    src = tmp_path / "c3d.pickle"
    torch.save(tmodel.state_dict(), src)

    assert cli_main(["convert-weights", str(src), str(tmp_path / "out")]) == 0
    x = _clip((2, 16, 32, 32, 3), seed=1)
    with torch.no_grad():
        want = tmodel(torch.from_numpy(_ncdhw(x)))
        want_fc6 = tmodel.fc6(want).numpy()
    want = want.numpy()
    assert np.abs(want).max() > 0.1  # activations did not vanish

    model = C3D()
    init = _random_variables(model, x.shape)
    variables = {"params": {"backbone": init["params"], "head": {"w": np.zeros(3)}}}
    loaded = load_c3d_backbone(variables, tmp_path / "out")
    np.testing.assert_array_equal(loaded["params"]["head"]["w"], 0)
    got = np.asarray(jax.jit(model.apply)({"params": loaded["params"]["backbone"]}, x))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    # init_from may also name the PyTorch file itself (converted on the fly).
    direct = load_c3d_backbone(variables, src)
    jax.tree.map(np.testing.assert_array_equal, direct, loaded)

    from aqa_jax.weights.c3d_convert import read_c3d_weights

    _, _, heads = read_c3d_weights(tmp_path / "out")
    got_fc6 = got @ heads["fc6"]["kernel"] + heads["fc6"]["bias"]  # (C, T, H, W) flatten order
    np.testing.assert_allclose(got_fc6, want_fc6, atol=1e-4, rtol=1e-4)


def test_c3d_dilated_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from aqa_jax.weights.c3d_convert import c3d_variables, save_c3d_weights

    tmodel = _Torch.dilated().eval()
    _he_init_(torch, tmodel, seed=2)
    src = tmp_path / "body.pth"
    torch.save(tmodel.state_dict(), src)
    converted = convert_c3d_state_dict(torch.load(src, map_location="cpu", weights_only=True))
    assert converted.arch == "c3d_dilated"
    save_c3d_weights(tmp_path / "out", converted)
    variables = c3d_variables(converted)
    model = C3DDilated(conv_impl="xla")
    x = _clip((2, 16, 32, 32, 3), seed=3)
    xt = torch.from_numpy(_ncdhw(x))

    # Eval mode: running statistics, no dropout; both ways of computing the dilated convs.
    with torch.no_grad():
        want = tmodel(xt).numpy().transpose(0, 2, 3, 4, 1)
    assert want.shape == (2, 2, 2, 2, 256) and np.abs(want).max() > 0.1
    for impl in ("xla", "planes"):
        got = jax.jit(C3DDilated(conv_impl=impl).apply)(variables, x)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4, err_msg=impl)

    # Batch statistics and the running-stat update (PyTorch momentum 0.1, unbiased var).
    tmodel.train()
    tmodel.dropout.eval()
    with torch.no_grad():
        want = tmodel(xt).numpy().transpose(0, 2, 3, 4, 1)
    got, updates = jax.jit(
        lambda v, x: model.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    )(variables, x)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)
    for name, *_ in DILATED_TABLE:
        bn = getattr(tmodel, "bn" + name[4:])
        ours = updates["batch_stats"][name]["bn"]
        np.testing.assert_allclose(ours["mean"], bn.running_mean.numpy(), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(ours["var"], bn.running_var.numpy(), atol=1e-5, rtol=1e-4)

    # train=True adds the final element-wise dropout(0.5): kept values doubled, ~half zeroed.
    dropped, _ = jax.jit(
        lambda v, x, key: model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )
    )(variables, x, jax.random.key(0))
    dropped, got = np.asarray(dropped), np.asarray(got)
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], 2 * got[kept], rtol=1e-6)
    assert 0.4 < 1 - kept[got != 0].mean() < 0.6

    # A dilated checkpoint does not go into a C3D backbone.
    c3d_vars = jax.eval_shape(C3D().init, jax.random.key(0), jnp.zeros((1, 16, 32, 32, 3)))
    c3d_params = jax.tree.map(lambda s: np.zeros(s.shape), nn_unbox(c3d_vars["params"]))
    target = {"params": {"backbone": c3d_params}}
    with pytest.raises(ValueError, match="holds c3d_dilated weights"):
        load_c3d_backbone(target, tmp_path / "out")
    # Shapes that disagree are named.
    target = {c: {"backbone": jax.tree.map(np.asarray, v)} for c, v in variables.items()}
    target["params"]["backbone"]["conv2"]["conv"]["bias"] = np.zeros(7, np.float32)
    with pytest.raises(ConversionError, match="conv2/conv/bias"):
        load_c3d_backbone(target, tmp_path / "out")
    loaded = load_c3d_backbone(
        {c: {"backbone": jax.tree.map(np.zeros_like, v)} for c, v in variables.items()},
        tmp_path / "out",
    )
    np.testing.assert_array_equal(
        loaded["batch_stats"]["backbone"]["conv5b"]["bn"]["var"],
        variables["batch_stats"]["conv5b"]["bn"]["var"],
    )
