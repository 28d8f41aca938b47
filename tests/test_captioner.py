"""The S2VT GRU captioner and the captioning metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aqa_jax.caption_metrics import bleu, caption_report, lcs_length, rouge_l
from aqa_jax.models.captioner import (EOS_ID, SOS_ID, S2VTCaptioner, caption_vocab, pad_caption,
                                      tokens_until_eos)

V, L, D = 13, 8, 6


def _init(model, feats, caps):
    return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, feats, caps, train=False)


def test_teacher_forcing_and_greedy_match_a_torch_s2vt():
    torch = pytest.importorskip("torch")
    from torch import nn

    model = S2VTCaptioner(vocab_size=V, max_len=L, hidden=10, word_dim=7, num_layers=2, dropout=0.5)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 4, D)).astype(np.float32)
    caps = np.concatenate([np.full((3, 1), SOS_ID), rng.integers(2, V, (3, L - 1))], 1).astype(np.int32)
    params = _init(model, feats, caps)["params"]

    # The official S2VTModel.forward (MTL-AQA models/C3DAVG/S2VTModel.py), rewritten here.
    rnn1 = nn.GRU(D, 10, 2, batch_first=True, dropout=0.5)
    rnn2 = nn.GRU(10 + 7, 10, 2, batch_first=True, dropout=0.5)
    emb, out = nn.Embedding(V, 7), nn.Linear(10, V)
    with torch.no_grad():
        for name, rnn in (("rnn1", rnn1), ("rnn2", rnn2)):
            for k in range(2):
                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(rnn, f"{w}_l{k}").copy_(torch.from_numpy(np.array(params[name][f"l{k}_{w}"])))
        emb.weight.copy_(torch.from_numpy(np.array(params["embedding"])))
        out.weight.copy_(torch.from_numpy(np.array(params["out_kernel"]).T))
        out.bias.copy_(torch.from_numpy(np.array(params["out_bias"])))
    for m in (rnn1, rnn2):
        m.eval()

    def torch_forward(vid, target=None):
        b, n, _ = vid.shape
        o1, s1 = rnn1(vid, None)
        o2, s2 = rnn2(torch.cat((o1, torch.zeros(b, n, 7)), 2), None)
        probs, preds = [], []
        word = emb(torch.full((b,), SOS_ID, dtype=torch.long))
        for i in range(L - 1):
            if target is not None:
                word = emb(target[:, i])
            o1, s1 = rnn1(torch.zeros(b, 1, D), s1)
            o2, s2 = rnn2(torch.cat((o1, word.unsqueeze(1)), 2), s2)
            logp = torch.log_softmax(out(o2.squeeze(1)), 1)
            probs.append(logp.unsqueeze(1))
            if target is None:
                pred = logp.argmax(1)
                preds.append(pred.unsqueeze(1))
                word = emb(pred)
        return torch.cat(probs, 1), (torch.cat(preds, 1) if preds else None)

    with torch.no_grad():
        ref_logp, _ = torch_forward(torch.from_numpy(feats), torch.from_numpy(caps).long())
        _, ref_words = torch_forward(torch.from_numpy(feats))
    logp = model.apply({"params": params}, feats, caps, train=False)
    np.testing.assert_allclose(np.asarray(logp), ref_logp.numpy(), atol=1e-5)
    words = model.apply({"params": params}, feats, train=False, decode="greedy")
    np.testing.assert_array_equal(np.asarray(words), ref_words.numpy())


def test_beam_of_width_one_is_greedy_and_wider_beams_score_no_worse():
    model = S2VTCaptioner(vocab_size=V, max_len=L, hidden=10, word_dim=7, dropout=0.0)
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(4, 3, D)).astype(np.float32)
    variables = _init(model, feats, np.zeros((4, L), np.int32))
    greedy = model.apply(variables, feats, decode="greedy")
    beam1 = model.apply(variables, feats, decode="beam", beam_size=1)
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(beam1))

    def logprob(words):  # teacher-forced log-probability of a decoded caption up to its <eos>
        caps = np.concatenate([np.full((4, 1), SOS_ID), np.asarray(words)], 1).astype(np.int32)
        lp = np.asarray(model.apply(variables, feats, caps))
        picked = np.take_along_axis(lp, caps[:, 1:, None], 2)[..., 0]
        ends = [int(np.argmax(np.r_[w == EOS_ID, True])) for w in np.asarray(words)]
        return np.array([picked[i, : e + 1].sum() for i, e in enumerate(ends)])

    beam4 = model.apply(variables, feats, decode="beam", beam_size=4)
    assert np.all(logprob(beam4) >= logprob(greedy) - 1e-4)


def test_captioner_overfits_a_tiny_caption_set():
    """Four videos, four different captions: after training, greedy decoding returns them."""
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(4, 3, D)).astype(np.float32)
    body = rng.integers(2, V, (4, 5))
    caps = np.zeros((4, L), np.int32)
    caps[:, 0], caps[:, 1:6] = SOS_ID, body  # then <eos> = 0 and padding
    mask = np.zeros((4, L), np.float32)
    mask[:, :7] = 1.0
    model = S2VTCaptioner(vocab_size=V, max_len=L, hidden=32, word_dim=16, dropout=0.0)
    params = _init(model, feats, caps)["params"]
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        def loss_fn(p):
            logp = model.apply({"params": p}, feats, caps, train=True)
            nll = -jnp.take_along_axis(logp, caps[:, 1:, None], 2)[..., 0]
            return jnp.sum(nll * mask[:, 1:]) / 4
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    for _ in range(300):
        params, state, loss = step(params, state)
    assert float(loss) < 0.05
    words = np.asarray(model.apply({"params": params}, feats, decode="greedy"))
    np.testing.assert_array_equal(words[:, :6], caps[:, 1:7])


def test_dropout_is_random_in_training_only():
    model = S2VTCaptioner(vocab_size=V, max_len=L, hidden=10, word_dim=7, dropout=0.5)
    feats = np.ones((2, 3, D), np.float32)
    caps = np.ones((2, L), np.int32)
    variables = _init(model, feats, caps)
    a, b = (model.apply(variables, feats, caps, train=True, rngs={"dropout": jax.random.key(k)}) for k in (0, 1))
    assert not np.allclose(a, b)
    e1, e2 = (model.apply(variables, feats, caps, train=False) for _ in range(2))
    np.testing.assert_array_equal(e1, e2)


def test_pad_caption_follows_the_official_loader():
    ids, mask = pad_caption([1, 5, 6, 7, 0], 8)
    np.testing.assert_array_equal(ids, [1, 5, 6, 7, 0, 0, 0, 0])
    np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 0, 0, 0])
    ids, mask = pad_caption([1, 5, 6, 7, 8, 9, 0], 4)  # truncated: the 4th token becomes <eos>
    np.testing.assert_array_equal(ids, [1, 5, 6, 0])
    np.testing.assert_array_equal(mask, [1, 1, 1, 1])


def test_vocab_and_token_decoding():
    records = [{"caption": [1, 4, 2, 0], "caption_text": "<sos> b a <eos>"},
               {"caption": [1, 2, 0], "caption_text": b"<sos> a <eos>"}]
    vocab = caption_vocab(records)
    assert vocab == ["<eos>", "<sos>", "a", "", "b"]
    assert tokens_until_eos([1, 4, 3, 2, 0, 2], vocab) == ["b", "<unk:3>", "a"]
    with pytest.raises(ValueError, match="both"):
        caption_vocab(records + [{"caption": [1, 2, 0], "caption_text": "<sos> c <eos>"}])


def test_bleu_on_a_hand_computed_case():
    # hyp "a b c d" vs ref "a b c e f": 1-grams 3/4, 2-grams 2/3, 3-grams 1/2, 4-grams 0/1;
    # brevity penalty exp(1 - 5/4).
    bp = np.exp(1 - 5 / 4)
    out = bleu([[["a", "b", "c", "e", "f"]]], [["a", "b", "c", "d"]])
    assert out["bleu_1"] == pytest.approx(bp * 3 / 4)
    assert out["bleu_2"] == pytest.approx(bp * np.sqrt(3 / 4 * 2 / 3))
    assert out["bleu_3"] == pytest.approx(bp * (3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3))
    assert out["bleu_4"] == pytest.approx(0.0, abs=1e-12)  # NLTK returns ~1e-77, not 0
    assert bleu([[["x", "y"]]], [["x", "y"]])["bleu_2"] == pytest.approx(1.0)


def test_rouge_l_on_a_hand_computed_case():
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4
    # hyp "a b d", ref "a b c d": LCS 3, P = 1, R = 3/4
    p, r, b2 = 1.0, 0.75, 1.2**2
    assert rouge_l([[["a", "b", "c", "d"]]], [["a", "b", "d"]]) == pytest.approx((1 + b2) * p * r / (r + b2 * p))
    report = caption_report([["a", "b"]], [["a", "b"]])
    assert report["rouge_l"] == pytest.approx(1.0) and report["bleu_1"] == pytest.approx(1.0)
