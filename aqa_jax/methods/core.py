"""CoRe: group-aware contrastive regression (Yu et al., ICCV 2021; yuxumin/CoRe).

A query and an exemplar video go through the same I3D (each clip's Mixed_5c pooled, clips
averaged: 1024-d per video). The pair feature ``[f_ref, f_other, s_ref / theta]`` (2049-d)
feeds a regression tree that predicts ``s_other - s_ref``:

- **tree** (``models/RegressTree.py``): Linear 2049→256 + ReLU, then ``depth - 1`` binary levels;
  node ``k`` of level ``d`` has its own 2-way classifier and its own 256→2x256 ReLU transform
  whose halves feed its two children. log p(leaf) is the sum of the binary log-softmaxes
  along the path; each of the ``2**(depth-1)`` = 16 leaves regresses one scalar;
- **groups** (``utils/Group_helper.py``): the sorted |Δ| of all training pairs (with DD on
  MTL-AQA: pairs of equal difficulty, Δ of score/DD) cut at positions ``int(i/8 * (L-1))``
  into 8 intervals, the first starting at 0 and the last ending at ``theta``; leaves 8-15 are
  ``[l, r)`` for Δ ≥ 0, leaves 0-7 their mirror ``(-r, -l]``. A Δ in no leaf (|Δ| ≥ theta)
  gets class 0 and no regression target, as ``glabel.argmax(0)`` does. The boundaries are
  computed from the training split in :meth:`Method.prepare` and stored in the run's config
  (``core.group_bounds``), which every checkpoint saves;
- **loss** (``tools/helper.py``): for both orderings of a (query a, exemplar b) pair,
  ``[f_a, f_b, s_a]`` → ``s_b - s_a`` and ``[f_b, f_a, s_b]`` → ``s_a - s_b``: NLL of the true
  leaf plus, per leaf, the MSE of its output against the position ``(Δ - l) / (r - l)``
  averaged over the samples in that leaf, summed over leaves; no weights;
- **inference**: ``[f_exemplar, f_query, s_exemplar]``, argmax leaf, ``Δ = l + (r - l) * reg``,
  score = Δ + s_exemplar (x the query's difficulty with DD), averaged over M = 10 exemplars
  of the same difficulty (MTL-AQA) or class.

``config.core``: ``depth`` (5), ``hidden`` (256), ``score_range`` (theta: 30 with DD, 100
without), ``use_dd``, ``exemplar_key`` (``difficulty`` | ``action_type`` | ""),
``num_exemplars`` (10), ``group_bounds`` (9 values, filled by :meth:`Method.prepare`).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aqa_jax.data.exemplars import ExemplarPool, PairSampler
from aqa_jax.methods._score import ScoreMethod, build_backbone, clip_features
from aqa_jax.models.i3d import InceptionI3d
from aqa_jax.models.layers import torch_uniform_init
from aqa_jax.models.precision import compute_dtype


def group_bounds(deltas: np.ndarray, num_leaves: int, score_range: float) -> np.ndarray:
    """The ``num_leaves // 2 + 1`` edges of the positive groups (``Group_helper.build``)."""
    d = np.sort(np.abs(np.asarray(deltas, np.float64)))
    if len(d) == 0:
        raise ValueError("CoRe needs at least one training pair to place its group boundaries")
    half = num_leaves // 2
    edges = [d[int((i / half) * (len(d) - 1))] for i in range(half + 1)]
    edges[0], edges[-1] = 0.0, float(score_range)
    return np.asarray(edges, np.float64)


def pair_deltas(scores: np.ndarray, groups: list[Any] | None = None) -> np.ndarray:
    """|s_i - s_j| over training pairs i < j (within each group when ``groups`` is given)."""
    scores = np.asarray(scores, np.float64)
    if groups is None:
        i, j = np.triu_indices(len(scores), k=1)
        return np.abs(scores[i] - scores[j])
    out = []
    for g in dict.fromkeys(groups):
        members = scores[[k for k, x in enumerate(groups) if x == g]]
        i, j = np.triu_indices(len(members), k=1)
        out.append(np.abs(members[i] - members[j]))
    return np.concatenate(out) if out else np.zeros(0)


def leaf_targets(delta: jax.Array, bounds: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(leaf index, position in the leaf, inside-some-leaf mask) of each Δ (see module doc)."""
    half = bounds.shape[0] - 1
    a = jnp.abs(delta)
    i = jnp.sum(a[..., None] >= bounds[1:half], axis=-1)  # b_i <= |Δ| < b_{i+1}
    inside = a < bounds[half]
    leaf = jnp.where(delta >= 0, half + i, half - 1 - i)
    left, right = leaf_edges(bounds)
    l, r = left[leaf], right[leaf]
    width = r - l
    position = jnp.where(width > 0, (delta - l) / jnp.where(width > 0, width, 1.0), delta - l)
    return jnp.where(inside, leaf, 0), position, inside


def leaf_edges(bounds: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Left and right edge of every leaf: negative mirror groups first, then the positive."""
    pos_left, pos_right = bounds[:-1], bounds[1:]
    return (jnp.concatenate([-pos_right[::-1], pos_left]),
            jnp.concatenate([-pos_left[::-1], pos_right]))


def decode_leaves(leaf_logp: jax.Array, leaf_reg: jax.Array, bounds: jax.Array) -> jax.Array:
    """Δ̂ = l + (r - l) * reg of the most probable leaf (``Group_helper.inference``)."""
    leaf = jnp.argmax(leaf_logp, axis=-1)
    left, right = leaf_edges(bounds)
    l, r = left[leaf], right[leaf]
    reg = jnp.take_along_axis(leaf_reg, leaf[..., None], axis=-1)[..., 0]
    return jnp.where(r > l, l + (r - l) * reg, l + reg)


def relative_score(batch: Mapping[str, jax.Array], use_dd: bool, prefix: str = "") -> jax.Array:
    """The regressed label: the score, or the "completeness" score / difficulty with DD."""
    score = batch[f"{prefix}score"].astype(jnp.float32)
    return score / batch[f"{prefix}difficulty"] if use_dd else score


class RegressionTree(nn.Module):
    """CoRe's ``RegressTree``: (N, D) → leaf log-probabilities (N, L) and outputs (N, L).

    ``dtype``: compute dtype of the hidden transforms; the node classifiers' log-softmaxes,
    the path sums and the leaf regressions are float32 (:mod:`aqa_jax.models.precision`).
    """

    depth: int = 5
    hidden: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        n, h = x.shape[0], self.hidden
        x = nn.relu(nn.Dense(h, kernel_init=torch_uniform_init(x.shape[-1]),
                             bias_init=torch_uniform_init(x.shape[-1]), dtype=self.dtype,
                             name="first")(x))
        x = x[:, None, :]  # (N, nodes, hidden)
        logp = jnp.zeros((n, 1), jnp.float32)
        init = torch_uniform_init(h)  # grouped 1x1 conv: fan_in = hidden per group
        cast = lambda a: jnp.asarray(a, self.dtype)  # noqa: E731
        for d in range(self.depth - 1):
            nodes = 2**d
            w_clf = self.param(f"clf_{d}_kernel", init, (nodes, h, 2))
            b_clf = self.param(f"clf_{d}_bias", init, (nodes, 2))
            logits = jnp.einsum("nkh,kho->nko", x, cast(w_clf)).astype(jnp.float32) + b_clf
            split = jax.nn.log_softmax(logits, axis=-1)
            logp = (logp[..., None] + split).reshape(n, 2 * nodes)
            w_feat = self.param(f"node_{d}_kernel", init, (nodes, h, 2 * h))
            b_feat = self.param(f"node_{d}_bias", init, (nodes, 2 * h))
            x = nn.relu(jnp.einsum("nkh,kho->nko", x, cast(w_feat)) + cast(b_feat)).reshape(n, 2 * nodes, h)
        leaves = 2 ** (self.depth - 1)
        w_reg = self.param("reg_kernel", init, (leaves, h))
        b_reg = self.param("reg_bias", init, (leaves,))
        return logp, jnp.einsum("nkh,kh->nk", x.astype(jnp.float32), w_reg) + b_reg


class CoReNetwork(nn.Module):
    """Shared I3D on query and exemplars, pair features, regression tree on both orderings."""

    backbone: InceptionI3d
    depth: int = 5
    hidden: int = 256
    score_range: float = 100.0
    use_dd: bool = False
    from_features: bool = False
    dtype: Any = jnp.float32  # the tree's hidden transforms (config.compute_dtype)

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool,
                 use_running_average: bool | None = None) -> dict[str, jax.Array]:
        clips = jnp.concatenate([batch["clip"][:, None], batch["exemplar_clip"]], axis=1)
        features, _ = clip_features(self.backbone, clips, train=train,
                                    use_running_average=use_running_average,
                                    from_features=self.from_features)
        pooled = features.mean(axis=-2)  # (B, 1 + M, C)
        f_query = jnp.broadcast_to(pooled[:, :1], pooled[:, 1:].shape)
        f_exemplar = pooled[:, 1:]
        s_exemplar = relative_score(batch, self.use_dd, "exemplar_")  # (B, M)
        pairs = [jnp.concatenate([f_exemplar, f_query, s_exemplar[..., None] / self.score_range], -1)]
        if train:  # the other ordering needs the query's own score: training only
            s_query = jnp.broadcast_to(relative_score(batch, self.use_dd)[:, None], s_exemplar.shape)
            pairs.append(jnp.concatenate([f_query, f_exemplar, s_query[..., None] / self.score_range], -1))
        x = jnp.stack(pairs, axis=2)  # (B, M, orderings, 2C + 1)
        logp, reg = RegressionTree(self.depth, self.hidden, self.dtype, name="head_tree")(
            x.reshape(-1, x.shape[-1]))
        shape = x.shape[:3] + (logp.shape[-1],)
        return {"leaf_logp": logp.reshape(shape), "leaf_reg": reg.reshape(shape),
                "s_exemplar": s_exemplar}


class Method(ScoreMethod):
    """CoRe (see module docstring)."""

    def __init__(self, config):
        super().__init__(config)
        c = config.core
        self.use_dd = bool(c.get("use_dd", False))
        self.label_keys = ("difficulty",) if self.use_dd else ()
        self.pool: ExemplarPool | None = None

    def prepare(self, train_source) -> None:
        c = self.config.core
        self.pool = ExemplarPool(train_source, c.get("exemplar_key") or None, self.label_keys)
        if not list(c.get("group_bounds", [])):
            scores = np.array([float(s) for s in self.pool.labels["score"]])
            groups = None
            if self.use_dd:
                difficulty = np.array([float(d) for d in self.pool.labels["difficulty"]])
                scores, groups = scores / difficulty, [round(float(d), 6) for d in difficulty]
            bounds = group_bounds(pair_deltas(scores, groups), 2 ** (c.depth - 1), c.score_range)
            c.group_bounds = [float(b) for b in bounds]

    def bounds(self) -> jax.Array:
        return jnp.asarray(self.config.core.group_bounds, jnp.float32)

    def build_model(self) -> CoReNetwork:
        c = self.config.core
        return CoReNetwork(build_backbone(self.config), int(c.depth), int(c.hidden),
                           float(c.score_range), self.use_dd, dtype=compute_dtype(self.config))

    def sampler(self, train: bool) -> PairSampler:
        if self.pool is None:
            raise RuntimeError("call Method.prepare(train_source) before asking for samplers")
        return PairSampler(self.clip_sampler(train), self.pool, int(self.config.core.num_exemplars))

    def loss(self, outputs, batch):
        bounds = self.bounds()
        s_exemplar = outputs["s_exemplar"]
        s_query = relative_score(batch, self.use_dd)[:, None]
        # ordering 0: reference = exemplar (target s_q - s_e); 1: reference = query.
        deltas = jnp.stack([s_query - s_exemplar, s_exemplar - s_query], axis=2)
        leaf, position, inside = leaf_targets(deltas, bounds)
        logp, reg = outputs["leaf_logp"], outputs["leaf_reg"]
        nll = -jnp.take_along_axis(logp, leaf[..., None], axis=-1)[..., 0]
        nll = nll.reshape(-1, 2).mean(0).sum()
        num_leaves = logp.shape[-1]
        onehot = jax.nn.one_hot(leaf, num_leaves) * inside[..., None]  # (B, M, 2, L)
        err = (reg - position[..., None]) ** 2 * onehot
        sums = err.reshape(-1, 2, num_leaves).sum(0)
        counts = onehot.reshape(-1, 2, num_leaves).sum(0)
        mse = jnp.sum(jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0))
        return nll + mse, {"nll": nll, "leaf_mse": mse}

    def predict(self, outputs, batch):
        delta = decode_leaves(outputs["leaf_logp"][:, :, 0], outputs["leaf_reg"][:, :, 0], self.bounds())
        relative = delta + outputs["s_exemplar"]  # (B, M)
        scores = relative * batch["difficulty"][:, None] if self.use_dd else relative
        return {"score_pred": scores.mean(1), "score_true": batch["score"],
                "exemplar_spread": scores.std(1)}

    def per_sample(self, predictions):
        return {k: np.asarray(predictions[k]) for k in ("score_pred", "score_true", "exemplar_spread")}
