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
- **label precision** (computed on the host, :func:`pair_labels`): the official edges are
  float64 (``MTLPair.delta()`` on the annotations' Python floats: score/DD, or AQA-7's
  per-class normalisation ``misc.normalize``); the labels the runner feeds
  ``produce_label`` are **float32** (``data['completeness'].float()``), so Δ = label_2 -
  label_1 is a float32 difference, and ``produce_label`` compares that numpy float32 with
  the float64 edges in float64 (numpy 1.x promotion of a float32 scalar against a Python
  float) and computes the position in float64. We do the same: annotations recovered in
  float64 from the stored float32 (:func:`~aqa_jax.data.exemplars.annotation_value`), labels
  rounded to float32 (``relative`` / ``exemplar_relative``, also the network's ``s / theta``
  input), Δ in float32, leaf and position in float64 against the float64 edges. Casting the
  edges to float32 moves 4.4 % of the same-DD MTL-AQA training-pair orderings into another
  leaf (e.g. Δ = 3.0 against the official edge 3.0000000000000036); a float64 Δ would move
  6.2 %;
- **loss** (``tools/helper.py``): for both orderings of a (query a, exemplar b) pair,
  ``[f_a, f_b, s_a]`` → ``s_b - s_a`` and ``[f_b, f_a, s_b]`` → ``s_a - s_b``: NLL of the true
  leaf plus, per leaf, the MSE of its output against the position ``(Δ - l) / (r - l)``
  averaged over the samples in that leaf, summed over leaves; no weights;
- **inference**: ``[f_exemplar, f_query, s_exemplar]``, argmax leaf, ``Δ = l + (r - l) * reg``,
  score = Δ + s_exemplar (x the query's difficulty with DD), averaged over M = 10 exemplars
  of the same difficulty (MTL-AQA) or class; a group with fewer members gives all of them
  and the mean is over those (``exemplar_mask``, :mod:`aqa_jax.data.exemplars`). A training
  sample alone in its group is its own exemplar (``MTLPair.py``).

AQA-7 (``SevenPair.py``): ``clips.score_norm = (lo, hi, 100)`` normalises each class's scores
to [0, 100] (``misc.normalize``, float64) before the float32 labels; scores, predictions
and L2 are then in those units (SRCC and R-ℓ2 are unchanged by the affine map).

``config.core``: ``depth`` (5), ``hidden`` (256), ``score_range`` (theta: 30 with DD, 100
without), ``use_dd``, ``exemplar_key`` (``difficulty`` | ``action_type`` | ""),
``num_exemplars`` (10), ``group_bounds`` (9 values, filled by :meth:`Method.prepare`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aqa_jax.data.exemplars import ExemplarPool, PairSampler, annotation_value, masked_mean_std
from aqa_jax.data.pipeline import Record, normalized_score
from aqa_jax.methods._score import ScoreMethod, build_backbone, clip_features
from aqa_jax.models.i3d import InceptionI3d
from aqa_jax.models.layers import torch_uniform_init
from aqa_jax.models.precision import compute_dtype
from aqa_jax.steps import Schedule


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


def leaf_edges(bounds: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Left and right edge of every leaf: negative mirror groups first, then the positive."""
    pos_left, pos_right = bounds[:-1], bounds[1:]
    return (jnp.concatenate([-pos_right[::-1], pos_left]),
            jnp.concatenate([-pos_left[::-1], pos_right]))


def pair_labels(delta: np.ndarray, bounds: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Group_helper.produce_label`` on the host, for float32 Δ (any shape): (leaf int32,
    position float32, inside float32). Each Δ is compared in float64 with the float64 edges
    (see module doc); a Δ in no leaf gets leaf 0 and position -1."""
    d = np.asarray(delta, np.float32).astype(np.float64)
    b = np.asarray(bounds, np.float64)
    half = len(b) - 1
    a = np.abs(d)
    inside = a < b[half]
    i = np.sum(a[..., None] >= b[1:half], axis=-1)  # b_i <= |Δ| < b_{i+1}
    leaf = np.where(d >= 0, half + i, half - 1 - i)
    left = np.concatenate([-b[1:][::-1], b[:-1]])
    right = np.concatenate([-b[:-1][::-1], b[1:]])
    l, r = left[leaf], right[leaf]
    position = np.where(r != l, (d - l) / np.where(r != l, r - l, 1.0), d - l)
    return (np.where(inside, leaf, 0).astype(np.int32), np.where(inside, position, -1.0).astype(np.float32),
            inside.astype(np.float32))


def label64(score: Any, difficulty: Any = None, score_norm: Sequence[float] = ()) -> float:
    """The official float64 label of a stored (float32) record: score / DD with DD, the
    class-normalised score with ``score_norm`` (AQA-7), else the score."""
    if difficulty is not None:
        return annotation_value(score) / annotation_value(difficulty)
    if score_norm:
        return normalized_score(score, score_norm)
    return annotation_value(score)


def decode_leaves(leaf_logp: jax.Array, leaf_reg: jax.Array, bounds: jax.Array) -> jax.Array:
    """Δ̂ = l + (r - l) * reg of the most probable leaf (``Group_helper.inference``)."""
    leaf = jnp.argmax(leaf_logp, axis=-1)
    left, right = leaf_edges(bounds)
    l, r = left[leaf], right[leaf]
    reg = jnp.take_along_axis(leaf_reg, leaf[..., None], axis=-1)[..., 0]
    return jnp.where(r > l, l + (r - l) * reg, l + reg)


def relative_score(batch: Mapping[str, jax.Array], use_dd: bool, prefix: str = "") -> jax.Array:
    """The regressed label: the score, or the "completeness" score / difficulty with DD; the
    host's float32 rounding of the float64 label (``relative``, :class:`CoRePairSampler`)
    when the batch has it."""
    if f"{prefix}relative" in batch:
        return batch[f"{prefix}relative"].astype(jnp.float32)
    score = batch[f"{prefix}score"].astype(jnp.float32)
    return score / batch[f"{prefix}difficulty"] if use_dd else score


@dataclasses.dataclass(frozen=True)
class CoRePairSampler(PairSampler):
    """:class:`PairSampler` plus CoRe's float labels computed on the host (module doc):
    ``relative`` (float32 label of the query), ``exemplar_relative`` (M,), and the training
    loss's leaf targets of both orderings, ``pair_leaf`` / ``pair_position`` / ``pair_inside``
    (M, 2; in evaluation too, so both steps see one batch layout): ordering 0 has the
    exemplar as reference (Δ = label_q - label_e), ordering 1 the query (Δ = label_e -
    label_q)."""

    bounds: tuple[float, ...] = ()
    use_dd: bool = False

    def _label(self, score: Any, difficulty: Any) -> np.float32:
        if self.use_dd:
            return np.float32(annotation_value(score) / annotation_value(difficulty))
        return np.float32(score)  # the stored / normalised float32: the official .float()

    def __call__(self, record: Record, rng: np.random.Generator | None) -> dict[str, Any]:
        example, _ = self.pair(record, rng)
        dd = example.get("difficulty")
        example["relative"] = self._label(example["score"], dd)
        example["exemplar_relative"] = np.array(
            [self._label(s, example["exemplar_difficulty"][k] if self.use_dd else None)
             for k, s in enumerate(example["exemplar_score"])], np.float32)
        # training targets; evaluation batches carry them too (one batch layout for the steps)
        q, e = example["relative"], example["exemplar_relative"]
        with np.errstate(invalid="ignore"):  # predict: a raw video's score is NaN
            delta = np.stack([np.float32(q) - e, e - np.float32(q)], axis=-1)  # float32
            example["pair_leaf"], example["pair_position"], example["pair_inside"] = pair_labels(delta, self.bounds)
        return example


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

    samples_from_train_split = True  # exemplars of the training split
    clip_keys = ("clip", "exemplar_clip")  # the query's and its exemplars' frames

    def __init__(self, config):
        super().__init__(config)
        c = config.core
        self.use_dd = bool(c.get("use_dd", False))
        self.label_keys = ("difficulty",) if self.use_dd else ()
        self.pool: ExemplarPool | None = None

    def prepare(self, train_source, schedule: Schedule | None = None) -> None:
        """The exemplar pool of the training split and, unless ``core.group_bounds`` gives
        them, the regression tree's group boundaries (the schedule is not needed)."""
        c = self.config.core
        self.pool = ExemplarPool(train_source, c.get("exemplar_key") or None, self.label_keys)
        if not list(c.get("group_bounds", [])):
            norm = tuple(self.config.clips.get("score_norm", ()))
            records = [train_source[i] for i in range(len(train_source))]
            # records cached after the clip sampler hold the normalised score and raw_score
            raw = [r["raw_score"] if "raw_score" in r else r["score"] for r in records]
            groups = None
            if self.use_dd:
                labels = [label64(s, d) for s, d in zip(raw, self.pool.labels["difficulty"])]
                # MTLPair.delta(): pairs within the exemplar groups (DD, or dive number)
                groups = self.pool.groups if self.pool.group_key else \
                    [round(float(d), 6) for d in self.pool.labels["difficulty"]]
            else:
                labels = [label64(s, score_norm=norm) for s in raw]
            bounds = group_bounds(pair_deltas(np.array(labels, np.float64), groups),
                                  2 ** (c.depth - 1), c.score_range)
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
        c = self.config.core
        return CoRePairSampler(self.clip_sampler(train), self.pool, int(c.num_exemplars),
                               bounds=tuple(float(b) for b in c.group_bounds), use_dd=self.use_dd)

    def loss(self, outputs, batch):
        # ordering 0: reference = exemplar (target s_q - s_e); 1: reference = query. Leaf
        # targets from the host (CoRePairSampler: float64 comparisons, module doc).
        leaf, position = batch["pair_leaf"], batch["pair_position"]
        inside = batch["pair_inside"] > 0
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
        mask = batch["exemplar_mask"] if "exemplar_mask" in batch else jnp.ones_like(scores)
        mean, spread = masked_mean_std(scores, mask)  # over the exemplars that exist
        return {"score_pred": mean, "score_true": batch["score"], "exemplar_spread": spread}

    def per_sample(self, predictions):
        return {k: np.asarray(predictions[k]) for k in ("score_pred", "score_true", "exemplar_spread")}
