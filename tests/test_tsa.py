"""TSA: transition labels, step pooling, PSNet, the cross-attention decoder, the loss, the
boundary schedule and a short training run, each against an independent oracle (hand-computed
values, ``np.interp``, a NumPy decoder, PyTorch modules written from the official code)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.special import erf

from aqa_jax.config_args import load_config
from aqa_jax.data.exemplars import ExemplarPool, PairSampler
from aqa_jax.data.frames import encode_jpeg
from aqa_jax.data.sampling import split_clips
from aqa_jax.methods import get_method, tsa

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- labels


def test_transitions_from_hand_made_labels_and_the_fixed_thirds():
    # distinct labels by first appearance: 5 @0, 7 @3, 9 @5, 11 @9 (7 comes back at 8)
    labels = np.array([5, 5, 5, 7, 7, 9, 9, 9, 7, 11, 11])
    np.testing.assert_array_equal(tsa.transitions_from_labels(labels), [3, 9])
    np.testing.assert_array_equal(tsa.transitions_from_labels([1, 1, 2, 2, 3]), [2, 4])
    np.testing.assert_array_equal(tsa.transitions_from_labels([4, 4, 8, 8]), [2, 2])  # 2 steps
    assert tsa.transitions_from_labels([3, 3, 3]) is None
    np.testing.assert_array_equal(tsa.fixed_transitions(64), [21, 43])  # 21.33, 42.67
    np.testing.assert_array_equal(tsa.fixed_transitions(96), [32, 64])
    # sampled frame t -> pseudo-frame floor(t * P / T + 0.5)
    np.testing.assert_array_equal(tsa.to_pseudo_frames([21, 43], 64, 96), [32, 65])  # 31.5, 64.5
    np.testing.assert_array_equal(tsa.to_pseudo_frames([21, 43], 64, 32), [11, 22])  # 10.5, 21.5
    np.testing.assert_array_equal(tsa.to_pseudo_frames([3, 95], 96, 96), [3, 95])
    np.testing.assert_array_equal(tsa.to_pseudo_frames([0, 200], 96, 96), [0, 95])


def _record(sample_id, num_frames, *, start=None, labels=None, score=1.0, group="a"):
    frame = encode_jpeg(np.full((8, 8, 3), 128, np.uint8))
    record = {"id": sample_id.encode(), "frames": [frame] * num_frames, "num_frames": num_frames,
              "score": np.float32(score), "action_type": group.encode()}
    if start is not None:
        record.update(start_frame=start, end_frame=start + num_frames - 1)
    if labels is not None:
        record["frame_labels"] = np.asarray(labels, np.int32)
    return record


def _first_differing_instance():
    """An instance (start, n) whose absolute-frame linspace differs from linspace(0, n - 1)."""
    for start in range(0, 5000, 13):
        for n in range(97, 200):
            a = np.linspace(start, start + n - 1, 96).astype(int) - start
            if (a != np.linspace(0, n - 1, 96).astype(int)).any():
                return start, n
    raise AssertionError("no differing instance")


def test_sampler_takes_tsa_frames_and_labels_and_falls_back_to_thirds():
    start, n = _first_differing_instance()
    labels = np.concatenate([np.full(n // 3, 38), np.full(n // 4, 2), np.full(n // 6, 14),
                             np.full(n - n // 3 - n // 4 - n // 6, 36)])
    sampler = tsa.TSAClipSampler(layout="uniform", num_frames=96, clip_starts="tsa_9x16", preset="tsa",
                                 num_pseudo_frames=96)
    example = sampler(_record("x", n, start=start, labels=labels), None)
    assert example["clip"].shape == (9, 16, 112, 112, 3)
    # oracle: FineDiving_Pair.load_video's sampling, then a loop over the sampled labels
    positions = np.linspace(start, start + n - 1, 96).astype(int) - start
    sampled = labels[positions]
    firsts = {}
    for i, value in enumerate(sampled):
        firsts.setdefault(int(value), i)
    order = sorted(firsts.values())
    np.testing.assert_array_equal(example["transitions"], [order[1], order[-1]])
    assert example["transitions"].dtype == np.int32

    synthetic = tsa.TSAClipSampler(layout="all", num_frames=64, clip_starts=(0, 16, 32, 48),
                                   preset="deepmind_64", num_pseudo_frames=96)
    example = synthetic(_record("y", 64), None)
    assert example["clip"].shape == (4, 16, 64, 64, 3)
    np.testing.assert_array_equal(example["transitions"], [32, 65])  # thirds 21, 43 of 64 -> 96


def test_pair_sampler_stacks_the_exemplars_transitions():
    source = [_record(f"v{i}", 40, labels=np.repeat([1, 2, 3], [10 + i, 10, 20 - i]), score=i)
              for i in range(5)]
    pool = ExemplarPool(source, "action_type")
    clips = tsa.TSAClipSampler(layout="uniform", num_frames=32, clip_starts=(0, 16), preset="deepmind_32",
                               num_pseudo_frames=32)
    pairs = PairSampler(clips, pool, num_exemplars=3)
    example = pairs(source[0], None)
    assert example["exemplar_clip"].shape == (3, 2, 16, 32, 32, 3)
    assert example["exemplar_transitions"].shape == (3, 2)
    for row, index, score in zip(example["exemplar_transitions"], pool.fixed(source[0], 3),
                                 example["exemplar_score"]):
        assert score == index
        np.testing.assert_array_equal(row, clips(source[index], None)["transitions"])
    train = pairs(source[1], np.random.default_rng(0))
    assert train["exemplar_transitions"].shape == (1, 2) and train["exemplar_score"][0] != 1


def test_pair_sampler_pairs_a_lone_dive_number_with_itself_and_masks_small_test_groups():
    # FineDiving_Pair.py: "if len(file_list) > 1: pop(self)"; test: train_file_list[:voter_number]
    source = [_record("v0", 40, score=10.0, group="a"), _record("v1", 40, score=20.0, group="b"),
              _record("v2", 40, score=30.0, group="b")]
    pool = ExemplarPool(source, "action_type")
    clips = tsa.TSAClipSampler(layout="uniform", num_frames=32, clip_starts=(0, 16), preset="deepmind_32",
                               num_pseudo_frames=32)
    pairs = PairSampler(clips, pool, num_exemplars=3)
    train = pairs(source[0], np.random.default_rng(0))  # alone in dive number "a": itself
    assert train["exemplar_score"].tolist() == [10.0] and train["exemplar_mask"].tolist() == [1.0]
    query = _record("t0", 40, score=25.0, group="b")
    test = pairs(query, None)  # 2 training exemplars for M = 3: both, once, then masked padding
    assert test["exemplar_clip"].shape[0] == 3 and test["exemplar_mask"].tolist() == [1.0, 1.0, 0.0]
    assert sorted(test["exemplar_score"][:2].tolist()) == [20.0, 30.0]
    method = get_method("tsa")(load_config(f"{REPO}/configs/tsa.py:dataset=synthetic_aqa,debug"))
    outputs = {"delta": jnp.array([[1.0, -2.0, 100.0]]), "s_exemplar": jnp.asarray(test["exemplar_score"][None]),
               "transitions_pred": jnp.zeros((1, 4, 2), jnp.int32)}
    batch = {"score": np.array([25.0], np.float32), "transitions": np.array([[10, 20]]),
             "exemplar_mask": test["exemplar_mask"][None]}
    pred = jax.device_get(method.predict(outputs, batch))
    per_exemplar = [1.0 + test["exemplar_score"][0], -2.0 + test["exemplar_score"][1]]  # helper.py: / len(list)
    assert float(pred["score_pred"][0]) == pytest.approx(np.mean(per_exemplar))
    assert float(pred["exemplar_spread"][0]) == pytest.approx(np.std(per_exemplar))


# --------------------------------------------------------------------------- step pooling


def _interp_steps(x, t1, t2, fix):
    out = []
    for lo, hi in ((0, t1), (t1, t2), (t2, len(x))):
        seg = x[lo:hi].reshape(hi - lo, -1)
        pos = np.linspace(0, hi - lo - 1, fix)
        out.append(np.stack([np.interp(pos, np.arange(hi - lo), seg[:, c]) for c in range(seg.shape[1])], -1))
    return np.stack(out).reshape((3, fix) + x.shape[1:])


@pytest.mark.parametrize("trailing", [(3,), (4, 3)])
def test_segment_pool_is_linear_interpolation_of_each_step(trailing):
    x = np.random.default_rng(0).normal(size=(3, 12) + trailing).astype(np.float32)
    bounds = np.array([[3, 8], [1, 11], [1, 2]], np.int32)  # the last has two 1-frame steps
    got = np.asarray(tsa.segment_pool(jnp.asarray(x), jnp.asarray(bounds), 5))
    assert got.shape == (3, 3, 5) + trailing
    for i, (t1, t2) in enumerate(bounds):
        np.testing.assert_allclose(got[i], _interp_steps(x[i], t1, t2, 5), rtol=1e-6, atol=1e-6)


def test_segment_pool_matches_torch_interpolate_align_corners():
    x = np.random.default_rng(1).normal(size=(1, 96, 6)).astype(np.float32)
    got = np.asarray(tsa.segment_pool(jnp.asarray(x), jnp.asarray([[17, 71]]), 5))[0]
    xt = torch.from_numpy(x).transpose(1, 2)  # seg_pool_1d's (N, C, T)
    ref = torch.cat([torch.nn.functional.interpolate(xt[:, :, a:b], size=5, mode="linear", align_corners=True)
                     for a, b in ((0, 17), (17, 71), (71, 96))], 2)
    np.testing.assert_allclose(got.reshape(15, 6), ref[0].T.numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- PSNet


def test_psnet_shapes_and_predicted_transitions_lie_in_their_halves():
    net = tsa.PSNet(num_frames=96)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 1024, 9)), jnp.float32)
    variables = net.init(jax.random.key(0), x, use_running_average=True)
    tokens, logits = net.apply(variables, x, use_running_average=True)
    assert tokens.shape == (5, 96, 64) and logits.shape == (5, 96, 2)
    logits = jax.random.normal(jax.random.key(1), (200, 96, 2))
    pred = np.asarray(tsa.predicted_transitions(logits))
    assert ((0 <= pred[:, 0]) & (pred[:, 0] < 48)).all() and ((48 <= pred[:, 1]) & (pred[:, 1] < 96)).all()
    sane = np.asarray(tsa.sane_boundaries(jnp.asarray(pred), 96))
    assert ((1 <= sane[:, 0]) & (sane[:, 0] < 48)).all() and (sane[:, 1] == pred[:, 1]).all()
    hand = np.zeros((1, 96, 2), np.float32)
    hand[0, 0, 0] = hand[0, 30, 0] = 5.0  # a tie: the first maximum, as torch.argmax
    hand[0, 60, 1], hand[0, 10, 1] = 3.0, 9.0  # channel 1 outside its half does not count
    np.testing.assert_array_equal(tsa.predicted_transitions(jnp.asarray(hand)), [[0, 60]])
    np.testing.assert_array_equal(tsa.sane_boundaries(jnp.asarray([[0, 60], [50, 40]]), 96), [[1, 60], [50, 51]])


class _TorchDoubleConv(torch.nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(torch.nn.Conv1d(cin, cout, 3, padding=1), torch.nn.BatchNorm1d(cout), torch.nn.ReLU(),
                         torch.nn.Conv1d(cout, cout, 3, padding=1), torch.nn.BatchNorm1d(cout), torch.nn.ReLU())


class _TorchPSNet(torch.nn.Module):
    """``models/PS.py`` PSNet, written from the official code."""

    def __init__(self, cin, frames, length):
        super().__init__()
        self.inc = _TorchDoubleConv(cin, 12)
        self.downs = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.MaxPool1d(2), _TorchDoubleConv(a, b))
            for a, b in ((12, 24), (24, 48), (48, 96), (96, frames)))
        self.tas = torch.nn.Sequential(torch.nn.Linear(length // 16, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                                       torch.nn.ReLU(), torch.nn.Linear(64, 2), torch.nn.Sigmoid())

    def forward(self, x):
        x = self.inc(x)
        for down in self.downs:
            x = down(x)
        return x, self.tas(x)


def _load_double_conv(module, params, stats):
    for i, (conv, bn) in enumerate(((module[0], module[1]), (module[3], module[4]))):
        conv.weight.data = torch.from_numpy(np.asarray(params[f"conv{i}"]["kernel"]).transpose(2, 1, 0).copy())
        conv.bias.data = torch.from_numpy(np.asarray(params[f"conv{i}"]["bias"]).copy())
        bn.weight.data = torch.from_numpy(np.asarray(params[f"bn{i}"]["scale"]).copy())
        bn.bias.data = torch.from_numpy(np.asarray(params[f"bn{i}"]["bias"]).copy())
        bn.running_mean.data = torch.from_numpy(np.asarray(stats[f"bn{i}"]["mean"]).copy())
        bn.running_var.data = torch.from_numpy(np.asarray(stats[f"bn{i}"]["var"]).copy())


def test_psnet_matches_the_official_structure_in_torch_train_and_eval_mode():
    n, length, cin, frames = 3, 128, 9, 96
    x = np.random.default_rng(0).normal(size=(n, cin, length)).astype(np.float32)
    net = tsa.PSNet(num_frames=frames)
    xj = jnp.asarray(x.transpose(0, 2, 1))
    variables = jax.tree.map(np.asarray, nn_unbox(net.init(jax.random.key(0), xj, use_running_average=False)))
    ref = _TorchPSNet(cin, frames, length)
    names = ["inc", "down1", "down2", "down3", "down4"]
    mods = [ref.inc] + [d[1] for d in ref.downs]
    for name, mod in zip(names, mods):
        _load_double_conv(mod, variables["params"][name], variables["batch_stats"][name])
    for i, layer in enumerate((ref.tas[0], ref.tas[2], ref.tas[4])):
        layer.weight.data = torch.from_numpy(variables["params"]["tas"][f"fc{i}"]["kernel"].T.copy())
        layer.bias.data = torch.from_numpy(variables["params"]["tas"][f"fc{i}"]["bias"].copy())

    ref.train()  # the official psnet_model.train(): batch statistics, running stats updated
    (tokens, logits), mutated = net.apply(variables, xj, use_running_average=False, mutable=["batch_stats"])
    ref_tokens, ref_p = ref(torch.from_numpy(x))
    np.testing.assert_allclose(tokens, ref_tokens.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jax.nn.sigmoid(logits), ref_p.detach().numpy(), rtol=1e-4, atol=1e-5)
    for name, mod in zip(names, mods):
        for i, bn in enumerate((mod[1], mod[4])):
            stats = mutated["batch_stats"][name][f"bn{i}"]
            np.testing.assert_allclose(stats["mean"], bn.running_mean.numpy(), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(stats["var"], bn.running_var.numpy(), rtol=1e-4, atol=1e-6)

    ref.eval()
    variables = {"params": variables["params"], "batch_stats": mutated["batch_stats"]}
    tokens, _ = net.apply(variables, xj, use_running_average=True)
    np.testing.assert_allclose(tokens, ref(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-4, atol=1e-4)


def nn_unbox(tree):
    import flax.linen as nn

    return nn.unbox(tree)


def test_official_map_layout_is_the_official_reshape_and_per_position_is_per_position():
    v, n, h, w, c, p, d = 2, 9, 2, 3, 32, 5, 4
    maps = np.random.default_rng(0).normal(size=(v, n, h, w, c)).astype(np.float32)
    # helper.py: video_feamap (N, 9, C, H, W) .reshape(-1, 9, C) into PSNet's (N', 9, C)
    ref = torch.from_numpy(maps).permute(0, 1, 4, 2, 3).contiguous().reshape(-1, n, c)
    got = np.asarray(tsa.official_map_sequences(jnp.asarray(maps)))
    np.testing.assert_array_equal(got, ref.numpy().transpose(0, 2, 1))
    # PSNet output (N', P, D) .reshape(N, P, D, H, W); token (p, h, w) is [:, p, :, h, w]
    tokens = np.random.default_rng(1).normal(size=(v * h * w, p, d)).astype(np.float32)
    ref = torch.from_numpy(tokens).reshape(v, p, d, h, w).numpy()
    got = np.asarray(tsa.official_map_tokens(jnp.asarray(tokens), h, w))
    assert got.shape == (v, p, h * w, d)
    for i in range(h):
        for j in range(w):
            np.testing.assert_array_equal(got[:, :, i * w + j], ref[:, :, :, i, j])
    seqs = np.asarray(tsa.position_map_sequences(jnp.asarray(maps)))
    np.testing.assert_array_equal(seqs[1 * h * w + 1 * w + 2], maps[1, :, 1, 2, :].T)
    back = np.asarray(tsa.position_map_tokens(jnp.asarray(tokens), h, w))
    np.testing.assert_array_equal(back[1, :, 1 * w + 2], tokens[1 * h * w + 1 * w + 2])


# --------------------------------------------------------------------------- decoder


def _ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _block_numpy(q, mem, p, heads):
    """vit_decoder.DecoderBlock, one sample: pre-LN cross-attention then MLP, both residual."""
    qn, mn = _ln(q, p["norm_q"]), _ln(mem, p["norm_v"])
    a = p["attn"]
    qq, kk, vv = qn @ a["q_map"]["kernel"], mn @ a["k_map"]["kernel"], mn @ a["v_map"]["kernel"]
    hd = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        s = qq[:, h * hd:(h + 1) * hd] @ kk[:, h * hd:(h + 1) * hd].T * hd**-0.5
        s = np.exp(s - s.max(-1, keepdims=True))
        outs.append((s / s.sum(-1, keepdims=True)) @ vv[:, h * hd:(h + 1) * hd])
    q = q + np.concatenate(outs, -1) @ a["proj"]["kernel"] + a["proj"]["bias"]
    hidden = _ln(q, p["norm2"]) @ p["fc1"]["kernel"] + p["fc1"]["bias"]
    hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))  # nn.GELU(): exact
    return q + hidden @ p["fc2"]["kernel"] + p["fc2"]["bias"]


def test_decoder_matches_a_numpy_cross_attention_with_the_same_weights():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(3, 5, 64)).astype(np.float32)
    mem = rng.normal(size=(3, 80, 64)).astype(np.float32)
    decoder = tsa.Decoder(depth=3, num_heads=8)
    params = decoder.init(jax.random.key(0), jnp.asarray(q), jnp.asarray(mem))["params"]
    # non-trivial LayerNorm affine parameters, so they are checked too
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.1 * jax.random.normal(jax.random.key(len(str(path))), x.shape)
        if "norm" in str(path) else x, params)
    got = np.asarray(decoder.apply({"params": params}, jnp.asarray(q), jnp.asarray(mem)))
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    assert set(p) == {"block0", "block1", "block2"} and "bias" not in p["block0"]["attn"]["q_map"]
    for i in range(3):
        ref = q[i].astype(np.float64)
        for b in range(3):
            ref = _block_numpy(ref, mem[i].astype(np.float64), p[f"block{b}"], heads=8)
        np.testing.assert_allclose(got[i], ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- loss, metrics


def test_loss_on_a_hand_computed_case():
    delta = jnp.array([[1.0], [0.0]])  # Δ(query → exemplar)
    reverse = jnp.array([[-0.5], [2.0]])
    score, ex = jnp.array([3.0, 1.0]), jnp.array([[1.0], [2.0]])  # s_q - s_e = 2, -1
    logits = jnp.zeros((2, 2, 4, 2))  # p = 1/2 everywhere: every BCE term is log 2
    transitions = jnp.array([[[1, 2], [1, 3]], [[2, 3], [1, 2]]])
    loss, metrics = tsa.tsa_loss(delta, reverse, score, ex, logits, transitions)
    mse = ((1 - 2) ** 2 + (0 + 1) ** 2) / 2
    mse_reverse = ((-0.5 + 2) ** 2 + (2 - 1) ** 2) / 2  # targets s_e - s_q = -2, 1
    assert float(metrics["mse"]) == pytest.approx(mse)
    assert float(metrics["mse_reverse"]) == pytest.approx(mse_reverse)
    assert float(metrics["bce"]) == pytest.approx(np.log(2), rel=1e-6)
    assert float(loss) == pytest.approx(mse + mse_reverse + np.log(2), rel=1e-6)
    # y is one-hot at (t1, 0) and (t2, 1); nn.BCELoss on the sigmoid, by hand
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 4, 2)) * 3, jnp.float32)
    transitions = jnp.array([[[1, 2], [0, 3]]])
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    y = np.zeros((1, 2, 4, 2))
    y[0, 0, 1, 0] = y[0, 0, 2, 1] = y[0, 1, 0, 0] = y[0, 1, 3, 1] = 1
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    _, metrics = tsa.tsa_loss(delta[:1], reverse[:1], score[:1], ex[:1], logits, transitions)
    assert float(metrics["bce"]) == pytest.approx(expected, rel=1e-5)
    torch_bce = torch.nn.BCELoss()(torch.sigmoid(torch.from_numpy(np.array(logits))), torch.from_numpy(y).float())
    assert float(metrics["bce"]) == pytest.approx(float(torch_bce), rel=1e-5)


def test_tiou_and_summary():
    truth = np.array([[10, 50], [10, 50], [10, 50], [30, 40], [5, 6]])
    pred = np.array([[10, 50], [20, 60], [60, 90], [30, 70], [7, 60]])
    method = get_method("tsa")(load_config(f"{REPO}/configs/tsa.py:dataset=synthetic_aqa,debug"))
    outputs = {"delta": jnp.array([[1.0, 2.0], [0.0, 0.0], [-1.0, 1.0], [0.5, 0.5], [0.0, 1.0]]),
               "s_exemplar": jnp.array([[1.0, 0.0], [2.0, 3.0], [1.0, 2.0], [4.0, 4.0], [0.0, 0.0]]),
               "transitions_pred": jnp.stack([jnp.asarray(pred), jnp.asarray(pred)], 1)}
    batch = {"score": np.array([2.0, 2.5, 1.0, 4.0, 0.0], np.float32), "transitions": truth}
    columns = jax.tree.map(np.asarray, method.predict(outputs, batch))
    np.testing.assert_allclose(columns["score_pred"], [2.0, 2.5, 1.5, 4.5, 0.5])
    np.testing.assert_allclose(columns["exemplar_spread"], [0.0, 0.5, 1.5, 0.0, 0.5])
    got = method.per_sample(columns)["tiou"]
    np.testing.assert_allclose(got, [1.0, 30 / 50, 0.0, 10 / 40, 0.0], rtol=1e-6)
    summary = method.summarize(columns)
    assert summary["tiou_0.5"] == pytest.approx(2 / 5) and summary["tiou_0.75"] == pytest.approx(1 / 5)
    assert summary["srcc"] == pytest.approx(1.0) and summary["num_samples"] == 5
    assert set(method.per_sample(columns)) >= {"score_pred", "score_true", "tiou", "t1_pred", "t2_true"}


# --------------------------------------------------------------------------- schedule, network


def test_ground_truth_boundaries_for_the_first_quarter_of_the_epochs():
    # epoch / 200 <= 0.25 for epochs 0..50: 51 epochs of 10 steps
    assert tsa.gt_boundary_steps(0.25, 10, 2000) == 510
    assert tsa.gt_boundary_steps(0.25, 8, 3) == 3  # a 3-step smoke run is all ground truth
    assert tsa.gt_boundary_steps(0.25, 8, 24) == 8  # debug: 3 epochs, epoch 0 only
    assert tsa.gt_boundary_steps(0.0, 10, 2000) == 0
    gt = jnp.array([[5, 60]]), jnp.array([[[0, 70]]])
    batch = {"transitions": gt[0], "exemplar_transitions": gt[1]}
    predicted = jnp.array([[[20, 50], [0, 90]]])
    choose = lambda step, train: np.asarray(tsa.choose_boundaries(  # noqa: E731
        batch, predicted, train=train, gt_boundary_steps=100, num_frames=96, step=step))
    np.testing.assert_array_equal(choose(jnp.int32(99), True), [[[5, 60], [1, 70]]])
    np.testing.assert_array_equal(choose(jnp.int32(100), True), [[[20, 50], [1, 90]]])
    np.testing.assert_array_equal(choose(None, True), [[[20, 50], [1, 90]]])  # no progress: predicted
    np.testing.assert_array_equal(choose(jnp.int32(0), False), [[[20, 50], [1, 90]]])


def _tiny_method():
    config = load_config(f"{REPO}/configs/tsa.py:dataset=synthetic_aqa,debug")
    config.model.final_endpoint = "Mixed_3b"  # 256-d: PSNet length 16, decoder dim 16
    config.tsa.update(num_frames=32, gt_boundary_steps=10)
    return get_method("tsa")(config)


def _tiny_batch(b, m, size=32):
    rng = np.random.default_rng(0)
    return {"clip": rng.uniform(-1, 1, (b, 4, 16, size, size, 3)).astype(np.float32),
            "exemplar_clip": rng.uniform(-1, 1, (b, m, 4, 16, size, size, 3)).astype(np.float32),
            "score": rng.uniform(0, 4, b).astype(np.float32),
            "exemplar_score": rng.uniform(0, 4, (b, m)).astype(np.float32),
            "transitions": np.tile(np.array([[11, 22]], np.int32), (b, 1)),
            "exemplar_transitions": np.tile(np.array([[[10, 21]]], np.int32), (b, m, 1))}


def test_network_trains_its_heads_and_predicts_with_m_exemplars():
    from aqa_jax.train.partition import label_of, merge, split_trainable
    from flax import traverse_util

    method = _tiny_method()
    net = method.build_model()
    batch = _tiny_batch(2, 1)
    variables = jax.jit(lambda b: nn_unbox(net.init(jax.random.key(0), b, train=False)))(batch)
    labels = {label_of(k) for k in traverse_util.flatten_dict(variables["params"]) if k[0] != "backbone"}
    assert labels == {"head"} and set(variables["params"]) == {"backbone", "head_psnet", "head_decoder",
                                                               "head_regressor"}
    train_params, frozen = split_trainable(variables["params"], "head")

    def loss_fn(params, batch, mutable):
        v = {"params": merge(params, frozen), "batch_stats": variables["batch_stats"]}
        step = jnp.int32(0)  # what the train step passes (Method.forward_takes_step)
        if mutable:
            out, new = net.apply(v, batch, train=True, use_running_average=True, step=step,
                                 mutable=["batch_stats"])
        else:
            out, new = net.apply(v, batch, train=True, use_running_average=True, step=step), None
        return method.loss(out, batch)[0], (out, new)

    step_batch = batch
    (loss, (out, new)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=2)(
        train_params, step_batch, True)
    assert np.isfinite(float(loss)) and out["delta"].shape == out["delta_reverse"].shape == (2, 1)
    assert out["transition_logits"].shape == (2, 2, 32, 2)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert float(optax_norm(grads["head_psnet"])) > 0 and float(optax_norm(grads["head_decoder"])) > 0
    # train-mode PSNet BN moved its running statistics; the frozen backbone's stayed
    old, moved = variables["batch_stats"], new["batch_stats"]
    assert not np.allclose(old["head_psnet"]["inc"]["bn0"]["mean"], moved["head_psnet"]["inc"]["bn0"]["mean"])
    jax.tree.map(np.testing.assert_array_equal, old["backbone"], moved["backbone"])
    # without a mutable collection PSNet normalises with its running statistics
    loss_running, _ = jax.jit(loss_fn, static_argnums=2)(train_params, step_batch, False)
    assert np.isfinite(float(loss_running)) and float(loss_running) != pytest.approx(float(loss))

    eval_batch = _tiny_batch(2, 3)
    out = jax.jit(lambda v, b: net.apply(v, b, train=False))(variables, eval_batch)
    assert out["delta"].shape == (2, 3) and "delta_reverse" not in out
    pred = method.predict(out, eval_batch)
    np.testing.assert_allclose(pred["score_pred"], (out["delta"] + eval_batch["exemplar_score"]).mean(1), rtol=1e-6)
    assert method.per_sample(jax.device_get(pred))["tiou"].shape == (2,)


def optax_norm(tree):
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)))


def test_cached_features_are_refused():
    config = load_config(f"{REPO}/configs/tsa.py:dataset=synthetic_aqa,debug")
    assert config.precompute_features is False and config.trainable == "head"
    config.precompute_features = True
    with pytest.raises(ValueError, match="feature maps|feature cache"):
        get_method("tsa")(config)


def test_fine_diving_config_is_the_official_recipe():
    c = load_config(f"{REPO}/configs/tsa.py:dataset=fine_diving")
    assert (c.batch_size, c.total_epochs, c.optimizer.lr, c.optimizer.lr_factors.backbone) == (8, 200, 1e-3, 0.1)
    assert c.tsa.exemplar_key == "action_type" and c.tsa.num_exemplars == 10 and c.tsa.num_frames == 96
    assert c.clips.num_frames == 96 and c.clips.preset == "tsa"
    assert split_clips(np.arange(96), c.clips.clip_starts).shape == (9, 16)
    assert c.bn_policy == "frozen" and c.trainable == "full"


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow  # two I3D compilations on one core: about 1.5 min
def test_debug_training_run_reports_finite_srcc_and_tiou(synthetic_data_dir, tmp_path):
    from aqa_jax.experiment import Experiment
    from aqa_jax.train import reports
    from aqa_jax.train.loop import train

    config = load_config(f"{REPO}/configs/tsa.py:dataset=synthetic_aqa,debug", ["total_steps=2"])
    config.data.update(data_dir=str(synthetic_data_dir), config="finger_tapping_tiny")
    config.clips.layout = "uniform"  # the tiny videos have 40 frames: 64 spread over them
    config.num_devices = 1
    config.mesh = [("data", 1), ("model", 1)]
    summary = train(config, tmp_path)
    result = summary["test"]
    assert result["num_samples"] == 4
    for key in ("srcc", "r_l2", "l2", "tiou_0.5", "tiou_0.75"):
        assert np.isfinite(result[key]), (key, result)
    assert 0 <= result["tiou_0.75"] <= result["tiou_0.5"] <= 1
    ids, columns = reports.read_predictions_csv(tmp_path / "predictions_test.csv")
    assert len(ids) == 4 and {"tiou", "t1_pred", "exemplar_spread"} <= set(columns)
    # prepare() computes it from the schedule: 2 epochs of 1 step, epoch 0; the config keeps -1
    assert config.tsa.gt_boundary_steps == -1
    assert Experiment.from_config(config, tmp_path).model.gt_boundary_steps == 1


@pytest.mark.slow  # the debug config as shipped: about 6 minutes on one core
def test_debug_config_reaches_a_clearly_positive_srcc(tmp_path_factory, tmp_path):
    from aqa_jax.data.registry import build
    from aqa_jax.train.loop import train

    data_dir = tmp_path_factory.mktemp("tsa_small")
    build("synthetic_aqa", "finger_tapping_small", data_dir=str(data_dir))
    config = load_config(f"{REPO}/configs/tsa.py:dataset=synthetic_aqa,debug")
    config.data.data_dir = str(data_dir)
    summary = train(config, tmp_path)
    assert summary["test"]["num_samples"] == 32
    assert summary["test"]["srcc"] > 0.35, summary["test"]
