"""The S2VT-style GRU captioner of the MTL-AQA models (Parmar & Morris, CVPR 2019).

Follows ``models/C3DAVG/S2VTModel.py`` of ParitoshParmar/MTL-AQA (itself from
xiadingZ/video-caption.pytorch), used with ``rnn_cell='gru'``, 2 layers, hidden 512, word
embedding 512, dropout 0.5 between the layers:

- ``rnn1`` (a GRU over video features) reads the clip features, then one zero frame per
  word step; ``rnn2`` (a GRU over ``[rnn1 output, word embedding]``) reads ``rnn1``'s outputs
  with a zero word during the video, then the previous word during decoding; a linear layer
  and a log-softmax give the next word. Both GRUs keep their state from the video into the
  words (the "sequence to sequence" of S2VT).
- Training uses teacher forcing over ``max_len - 1`` steps (inputs ``caption[:, :-1]``);
  inference starts from ``<sos>`` and feeds back its own words: greedy (the official rule) or
  beam search. Both decoders run all ``max_len - 1`` steps (static shapes); everything after
  the first ``<eos>`` is ignored by :func:`tokens_until_eos`.

The GRUs keep ``torch.nn.GRU``'s parametrisation (``weight_ih_l{k}`` ``(3H, in)`` with gates
in r, z, n order, ``weight_hh_l{k}``, and both biases) and its initialisation
U(-1/sqrt(H), 1/sqrt(H)), so a PyTorch captioner's state dict maps one to one; the embedding
is initialised N(0, 1) as ``nn.Embedding``. The recurrences run as ``lax.scan`` over pure
functions of the parameter arrays.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aqa_jax.models.layers import torch_uniform_init

SOS_ID = 1
EOS_ID = 0

GRUWeights = list[dict[str, jax.Array]]


def gru_cell(w: dict[str, jax.Array], x: jax.Array, h: jax.Array) -> jax.Array:
    """One ``torch.nn.GRU`` layer step: r, z, n gates; ``h' = (1 - z) n + z h``."""
    gi = x @ w["weight_ih"].T + w["bias_ih"]
    gh = h @ w["weight_hh"].T + w["bias_hh"]
    i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


def gru_step(
    layers: GRUWeights, x: jax.Array, state: jax.Array, keep: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """A stacked GRU's step: ``(output, new state (L, ..., H))``. ``keep`` ``(L-1, ..., H)``
    holds the inverted-dropout multipliers applied to every layer's output but the last (as
    ``torch.nn.GRU(dropout=p)`` does in training)."""
    new = []
    for k, w in enumerate(layers):
        h = gru_cell(w, x, state[k])
        new.append(h)
        x = h * keep[k] if keep is not None and k < len(layers) - 1 else h
    return x, jnp.stack(new)


class TorchGRU(nn.Module):
    """The parameters of a ``torch.nn.GRU(input, hidden, num_layers)`` (``l{k}`` subtrees)."""

    hidden: int
    num_layers: int

    @nn.compact
    def __call__(self, input_dim: int) -> GRUWeights:
        init = torch_uniform_init(self.hidden)  # U(-1/sqrt(H), 1/sqrt(H)) as torch's RNNs
        layers = []
        for k in range(self.num_layers):
            fan = input_dim if k == 0 else self.hidden
            layers.append({
                "weight_ih": self.param(f"l{k}_weight_ih", init, (3 * self.hidden, fan)),
                "weight_hh": self.param(f"l{k}_weight_hh", init, (3 * self.hidden, self.hidden)),
                "bias_ih": self.param(f"l{k}_bias_ih", init, (3 * self.hidden,)),
                "bias_hh": self.param(f"l{k}_bias_hh", init, (3 * self.hidden,)),
            })
        return layers


class S2VTCaptioner(nn.Module):
    """Video features ``(B, n, D)`` → caption log-probabilities or word ids (module docstring).

    ``__call__(features, captions=None, *, train, decode='greedy', beam_size=5)``: with
    ``captions`` ``(B, max_len)`` (``<sos>`` first) it returns the teacher-forced
    log-probabilities ``(B, max_len - 1, V)`` of ``captions[:, 1:]``; without, the decoded
    ids ``(B, max_len - 1)`` (the words after ``<sos>``).
    """

    vocab_size: int
    max_len: int = 100
    hidden: int = 512
    word_dim: int = 512
    num_layers: int = 2
    dropout: float = 0.5
    length_penalty: float = 0.0  # beam search: rank finished beams by logp / length**alpha

    @nn.compact
    def __call__(self, features: jax.Array, captions: jax.Array | None = None, *, train: bool = False,
                 decode: str = "greedy", beam_size: int = 5) -> jax.Array:
        batch, _, dim = features.shape
        rnn1 = TorchGRU(self.hidden, self.num_layers, name="rnn1")(dim)
        rnn2 = TorchGRU(self.hidden, self.num_layers, name="rnn2")(self.hidden + self.word_dim)
        embedding = self.param("embedding", nn.initializers.normal(1.0), (self.vocab_size, self.word_dim))
        out_w = self.param("out_kernel", torch_uniform_init(self.hidden), (self.hidden, self.vocab_size))
        out_b = self.param("out_bias", torch_uniform_init(self.hidden), (self.vocab_size,))
        drop = self.dropout if train else 0.0
        key = self.make_rng("dropout") if drop > 0 else None
        shape = (self.num_layers - 1, batch, self.hidden)

        def keep(k):
            if k is None:
                return None
            masks = jax.random.bernoulli(k, 1.0 - drop, (2,) + shape)
            return masks.astype(features.dtype) / (1.0 - drop)

        state0 = jnp.zeros((self.num_layers, batch, self.hidden), features.dtype)
        zero_word = jnp.zeros((batch, self.word_dim), features.dtype)
        n, steps = features.shape[1], self.max_len - 1
        enc_keys = dec_keys = None
        if key is not None:
            keys = jax.random.split(key, n + steps)
            enc_keys, dec_keys = keys[:n], keys[n:]

        def encode(carry, xs):
            s1, s2 = carry
            frame, k = xs
            m = keep(k)
            o1, s1 = gru_step(rnn1, frame, s1, None if m is None else m[0])
            _, s2 = gru_step(rnn2, jnp.concatenate([o1, zero_word], -1), s2, None if m is None else m[1])
            return (s1, s2), None

        (s1, s2), _ = jax.lax.scan(encode, (state0, state0), (jnp.swapaxes(features, 0, 1), enc_keys))

        def word_step(s1, s2, word_vec, k):
            m = keep(k)
            zero_frame = jnp.zeros((word_vec.shape[0], dim), features.dtype)
            o1, s1 = gru_step(rnn1, zero_frame, s1, None if m is None else m[0])
            o2, s2 = gru_step(rnn2, jnp.concatenate([o1, word_vec], -1), s2, None if m is None else m[1])
            return s1, s2, jax.nn.log_softmax(o2 @ out_w + out_b, axis=-1)

        if captions is not None:
            def teacher(carry, xs):
                s1, s2 = carry
                words, k = xs
                s1, s2, logp = word_step(s1, s2, embedding[words], k)
                return (s1, s2), logp

            _, logp = jax.lax.scan(teacher, (s1, s2), (jnp.swapaxes(captions[:, :steps], 0, 1), dec_keys))
            return jnp.swapaxes(logp, 0, 1)
        if decode == "greedy":
            return greedy_decode(lambda a, b, w: word_step(a, b, embedding[w], None), s1, s2, batch, steps)
        if decode == "beam":
            return beam_decode(lambda a, b, w: word_step(a, b, embedding[w], None), s1, s2, batch,
                               steps, beam_size, self.length_penalty)
        raise ValueError(f"caption decode={decode!r}: use greedy or beam")


def greedy_decode(step, s1: jax.Array, s2: jax.Array, batch: int, steps: int) -> jax.Array:
    """The official inference loop: start at ``<sos>``, feed back the argmax word."""

    def body(carry, _):
        s1, s2, word = carry
        s1, s2, logp = step(s1, s2, word)
        word = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        return (s1, s2, word), word

    _, words = jax.lax.scan(body, (s1, s2, jnp.full((batch,), SOS_ID, jnp.int32)), None, length=steps)
    return jnp.swapaxes(words, 0, 1)


def beam_decode(step, s1: jax.Array, s2: jax.Array, batch: int, steps: int, beam: int,
                length_penalty: float = 0.0) -> jax.Array:
    """Beam search of width ``beam`` (not in the official code, which decodes greedily).

    Beams that emitted ``<eos>`` are frozen (they keep their log-probability and emit
    ``<eos>``); the result is the beam with the highest ``logp / length**length_penalty``.
    """
    rep = lambda s: jnp.repeat(s, beam, axis=1)  # (L, B, H) -> (L, B*K, H)
    scores = jnp.tile(jnp.where(jnp.arange(beam) == 0, 0.0, -jnp.inf), (batch, 1))
    tokens = jnp.zeros((batch, beam, steps), jnp.int32)
    carry0 = (rep(s1), rep(s2), jnp.full((batch, beam), SOS_ID, jnp.int32), scores,
              jnp.zeros((batch, beam), bool), jnp.zeros((batch, beam), jnp.int32), tokens)

    def body(carry, t):
        s1, s2, words, scores, done, length, tokens = carry
        s1, s2, logp = step(s1, s2, words.reshape(-1))
        vocab = logp.shape[-1]
        logp = logp.reshape(batch, beam, vocab)
        frozen = jnp.where(jnp.arange(vocab) == EOS_ID, 0.0, -jnp.inf)
        logp = jnp.where(done[..., None], frozen, logp)
        total = (scores[..., None] + logp).reshape(batch, beam * vocab)
        scores, flat = jax.lax.top_k(total, beam)
        src, word = flat // vocab, (flat % vocab).astype(jnp.int32)
        pick = lambda x: jnp.take_along_axis(x, src.reshape(src.shape + (1,) * (x.ndim - 2)), axis=1)
        regroup = lambda s: pick(s.reshape(s.shape[0], batch, beam, -1).transpose(1, 2, 0, 3)
                                 ).transpose(2, 0, 1, 3).reshape(s.shape)
        s1, s2 = regroup(s1), regroup(s2)
        was_done = pick(done)
        length = pick(length) + (~was_done).astype(jnp.int32)
        tokens = pick(tokens).at[:, :, t].set(word)
        done = was_done | (word == EOS_ID)
        return (s1, s2, word, scores, done, length, tokens), None

    (_, _, _, scores, _, length, tokens), _ = jax.lax.scan(body, carry0, jnp.arange(steps))
    ranked = scores / jnp.maximum(length, 1).astype(scores.dtype) ** length_penalty
    best = jnp.argmax(ranked, axis=1)
    return jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]


def pad_caption(ids: Sequence[int] | np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, mask)`` of length ``max_len`` as the MTL-AQA loaders build them: truncate to
    ``max_len``, make the last kept token ``<eos>`` (the loader overwrites it, so a truncated
    caption loses its last word), zero-pad (``<eos>`` = 0), mask up to and including the
    first ``<eos>``."""
    ids = np.asarray(ids, np.int32)[:max_len].copy()
    if len(ids) == 0:
        raise ValueError("empty caption")
    ids[-1] = EOS_ID
    out = np.zeros(max_len, np.int32)
    out[: len(ids)] = ids
    mask = np.zeros(max_len, np.float32)
    mask[: int(np.argmax(out == EOS_ID)) + 1] = 1.0
    return out, mask


def tokens_until_eos(ids: Sequence[int], vocab: Sequence[str], *, skip_sos: bool = True) -> list[str]:
    """The words of ``ids`` up to (not including) the first ``<eos>``; ids outside ``vocab``
    read ``<unk:ID>``."""
    words: list[str] = []
    for i in np.asarray(ids).tolist():
        if i == EOS_ID:
            break
        if skip_sos and i == SOS_ID and not words:
            continue
        words.append(vocab[i] if 0 <= i < len(vocab) and vocab[i] else f"<unk:{i}>")
    return words


def caption_vocab(records: Any) -> list[str]:
    """id → word from records holding ``caption`` ids and their ``caption_text`` (the training
    split's own pairs; MTL-AQA's vocab.json is not stored with the dataset). Ids no record
    uses stay ``""``; contradicting pairs are an error."""
    words: dict[int, str] = {}
    for record in records:
        text = record["caption_text"]
        text = text.decode() if isinstance(text, bytes) else str(text)
        ids, tokens = np.asarray(record["caption"]).tolist(), text.split()
        if len(ids) != len(tokens):
            raise ValueError(f"{record.get('id')!r}: caption has {len(ids)} ids but {len(tokens)} words")
        for i, w in zip(ids, tokens):
            if words.setdefault(int(i), w) != w:
                raise ValueError(f"caption id {i} is both {words[int(i)]!r} and {w!r}")
    if not words:
        raise ValueError("no captions in the training split")
    vocab = [""] * (max(words) + 1)
    for i, w in words.items():
        vocab[i] = w
    return vocab
