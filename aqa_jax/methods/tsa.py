"""TSA: procedure-aware AQA with Temporal Segmentation Attention (Xu et al., CVPR 2022;
xujinglin/FineDiving).

A query video and an exemplar of the same dive number go through the same I3D (9 clips of 16
frames at 0, 10, ..., 80 of the 96 sampled frames; each clip's Mixed_5c averaged over
(T, H, W) gives a 1024-d feature, averaged over T only a (H', W', 1024) map). Then
(``tools/helper.py``):

- **procedure segmentation** (``models/PS.py``, ``PS_parts.py``): PSNet, the encoder half of
  a 1-D U-Net, reads the clips as *channels* and the 1024 feature dimensions as the
  *sequence*: double conv (Conv1d k3 → BN → ReLU, twice) n_clips→12, then four
  maxpool(2) + double conv 12→24→48→96→``num_frames`` (96). Its output (96 channels x length
  64) is read as 96 pseudo-frames of 64-d. The transition head (MLP 64→128→64→2, ReLU,
  sigmoid) gives p (96, 2); the predicted transitions are ``argmax p[:48, 0]`` and
  ``48 + argmax p[48:, 1]``. The same PSNet runs on the per-clip feature maps, once per
  spatial position (see ``map_layout`` below);
- **step pooling** (``utils/misc.py``, ``seg_pool_1d`` / ``seg_pool_3d``): the three steps
  ``[0, t1)``, ``[t1, t2)``, ``[t2, 96)`` are each resampled to ``fix_size`` = 5 pseudo-frames
  by linear interpolation with ``align_corners=True`` (the trilinear ``seg_pool_3d`` keeps
  H' x W', so it is the same 1-D interpolation at every position). Boundaries: the ground
  truth during the first 25% of the epochs (``epoch / max_epoch <= 0.25``), afterwards and in
  evaluation the predicted ones, a predicted 0 clamped to 1;
- **procedure-aware cross-attention** (``models/vit_decoder.py``): for each step, the query's
  5 tokens attend to the exemplar map's 5 x H'W' tokens of the same step through
  ``decoder_fuser`` (3 pre-LN blocks, dim 64, 8 heads, no qkv bias, MLP 64→256→64 with exact
  GELU), in both directions (query → exemplar map, exemplar → query map);
- **fine-grained contrastive regression** (``models/MLP.py``): MLP 64→256→64→1 per token,
  mean over the 15 tokens = Δ. Loss: ``MSE(Δ12, s1 - s2) + MSE(Δ21, s2 - s1) + BCE(p, y)``
  with y one-hot at (t1, 0) and (t2, 1), on raw dive scores; prediction
  ``mean_m (Δ(query, exemplar_m) + s_m)`` over M = 10 exemplars of the same dive number (a
  dive number with fewer training samples gives all of them, the mean over those; a training
  query alone in its group is its own exemplar: :mod:`aqa_jax.data.exemplars`);
- **segmentation metric**: the 1-D IoU of ``[t1, t2]`` and ``[t̂1, t̂2]`` of the query,
  averaged over the exemplar passes (in evaluation mode the query's PSNet output does not
  depend on the exemplar, so every pass gives the same IoU and we compute it once), then
  the share of samples with tIoU >= 0.5 / 0.75.

Transition labels (``datasets/FineDiving_Pair.py``, ``load_video``): the per-frame sub-action
labels of the sampled frames; distinct labels in order of first appearance; t1 = the first
index of the 2nd, t2 = the first index of the last (the loader stores ``t - 1``, the runner
adds the 1 back). The 96 frames are ``np.linspace(start, end, 96).astype(int) - start`` over
the absolute frame numbers, which the ``uniform`` layout of
:class:`~aqa_jax.data.pipeline.FrameClipSampler` reproduces for records with
``start_frame``/``end_frame``. Records without
``frame_labels`` (``synthetic_aqa``) get **fixed stand-in transitions** at the thirds,
``round(T/3)`` and ``round(2T/3)`` of the T sampled frames: a debug-only device so the
pipeline runs end to end; there the BCE learns a constant and tIoU means nothing. With
``num_frames`` pseudo-frames different from the T sampled frames, sampled index t maps to
pseudo-frame ``floor(t * num_frames / T + 0.5)``.

Our choices where the official code has none or cannot run:

- **switch to predicted boundaries**: the network uses the ground truth while the step being
  trained is below ``gt_boundary_steps`` (:meth:`Method.prepare` computes the step of the
  official epoch rule from the run's :class:`~aqa_jax.steps.Schedule`; the method declares
  :attr:`~aqa_jax.methods.base.Method.forward_takes_step`, so the generic train step passes
  that step to the network as ``step=``). A forward without ``step`` uses the predicted
  boundaries, as the official run does for 75% of its epochs and in every evaluation;
- **PSNet BatchNorm**: the official code freezes only the I3D's BN (``fix_bn`` on
  ``base_model``); PSNet's BN is in training mode (batch statistics, running statistics
  updated, running variance unbiased as PyTorch). The generic train step makes
  ``batch_stats`` mutable under every BN policy, so PSNet does that in training while the
  backbone (``bn_policy='frozen'``) keeps its statistics; a forward whose ``batch_stats`` is
  not mutable normalises PSNet with its running statistics;
- **map layout** (``map_layout``): the official helper reshapes the (N, 9, 1024, H', W')
  feature maps with ``reshape(-1, 9, 1024)`` (and the PSNet output back with
  ``reshape(N, 96, 64, H', W')``), a memory reinterpretation that does *not* give one
  sequence per spatial position: each of the H'W' "positions" reads a block of interleaved
  channels/positions. ``official`` reproduces that exactly (what the published numbers come
  from); ``per_position`` runs PSNet on each position's (9, 1024) features, as the paper
  describes;
- **boundary sanity**: segments are pooled with ``1 <= t1 < t2 <= num_frames - 1`` (t1 clamped
  up to 1, t2 to at least t1 + 1); this equals the official clamp for every predicted
  boundary and for every ground truth the official code can pool (it crashes on an empty
  segment);
- **BCE** is computed from the logits (``log_sigmoid``, each log clamped at -100 as
  ``nn.BCELoss``): equal to BCE on the sigmoid except where float32 rounds a probability to
  exactly 0 or 1, where ``nn.BCELoss`` saturates at 100 with no gradient;
- with M > 1 training exemplars the BCE and both MSEs are averaged over every exemplar (M = 1
  is the official setting).

``config.tsa``: ``num_frames`` (pseudo-frames, 96), ``fix_size`` (5), ``decoder_depth`` (3),
``num_heads`` (8), ``mlp_ratio`` (4), ``exemplar_key`` (``action_type`` | ""),
``num_exemplars`` (10), ``gt_boundary_fraction`` (0.25), ``gt_boundary_steps`` (-1: computed
by :meth:`Method.prepare` from the schedule; never written back into the config),
``map_layout`` (``official`` | ``per_position``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aqa_jax.data.exemplars import ExemplarPool, PairSampler, masked_mean_std
from aqa_jax.data.pipeline import FrameClipSampler, Record
from aqa_jax.methods._score import MLP, ScoreMethod, build_backbone, clip_features
from aqa_jax.metrics import interval_iou, tiou_at
from aqa_jax.models.i3d import InceptionI3d
from aqa_jax.models.layers import BatchNorm, torch_uniform_init
from aqa_jax.models.precision import compute_dtype
from aqa_jax.steps import Schedule

NUM_STEPS = 3  # two transitions: take-off / flight / entry
MAP_LAYOUTS = ("official", "per_position")


# --------------------------------------------------------------------------- labels


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def transitions_from_labels(sampled_labels: np.ndarray) -> np.ndarray | None:
    """(t1, t2) of TSA: the first index of the 2nd distinct label and of the last distinct
    label, labels ordered by first appearance (``load_video`` stores ``t - 1`` and the runner
    adds 1 back, so these are the values the network sees). ``None`` with fewer than two
    distinct labels (the official loader crashes there)."""
    labels = [int(x) for x in np.asarray(sampled_labels).ravel()]
    firsts = [labels.index(c) for c in dict.fromkeys(labels)]
    if len(firsts) < 2:
        return None
    return np.array([firsts[1], firsts[-1]], np.int32)


def fixed_transitions(num_sampled: int) -> np.ndarray:
    """The debug-only stand-in for videos without step labels: ``round(T/3)``, ``round(2T/3)``."""
    return np.array([round(num_sampled / 3), round(2 * num_sampled / 3)], np.int32)


def to_pseudo_frames(transitions: np.ndarray, num_sampled: int, num_pseudo: int) -> np.ndarray:
    """Sampled-frame indices → pseudo-frame indices ``floor(t * P / T + 0.5)`` (identity when
    P == T, TSA's 96 and 96), clipped to ``[0, P - 1]``."""
    t = np.asarray(transitions, np.int64)
    if num_sampled != num_pseudo:
        t = np.floor(t * num_pseudo / num_sampled + 0.5).astype(np.int64)
    return np.clip(t, 0, num_pseudo - 1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class TSAClipSampler(FrameClipSampler):
    """:class:`FrameClipSampler` plus ``transitions`` (2,) int32 in pseudo-frame indices, from
    ``frame_labels`` of the sampled frames, or the fixed thirds without them (module doc)."""

    num_pseudo_frames: int = 96

    def transitions(self, record: Record, indices: np.ndarray) -> np.ndarray:
        """The record's (t1, t2) for the frames at ``indices``, in pseudo-frame indices."""
        t = None
        if "frame_labels" in record:
            t = transitions_from_labels(np.asarray(record["frame_labels"])[indices])
            if t is None:
                logging.warning("sample %s: its sampled frames hold a single sub-action; using the "
                                "fixed thirds as transitions", _text(record["id"]))
        if t is None:
            t = fixed_transitions(len(indices))
        return to_pseudo_frames(t, len(indices), self.num_pseudo_frames)

    def example(self, record: Record, idx: np.ndarray, rng: np.random.Generator | None) -> dict[str, Any]:
        out = super().example(record, idx, rng)
        out["transitions"] = self.transitions(record, idx)
        return out


# --------------------------------------------------------------------------- step pooling


def sane_boundaries(bounds: jax.Array, num_frames: int) -> jax.Array:
    """``(..., 2)`` → ``1 <= t1 <= P - 2``, ``t1 < t2 <= P - 1``: three non-empty steps (the
    official clamp of a predicted 0 to 1, extended to the cases it would crash on)."""
    t1 = jnp.clip(bounds[..., 0], 1, num_frames - 2)
    t2 = jnp.clip(bounds[..., 1], t1 + 1, num_frames - 1)
    return jnp.stack([t1, t2], axis=-1).astype(jnp.int32)


def segment_pool(x: jax.Array, bounds: jax.Array, fix_size: int) -> jax.Array:
    """``seg_pool_1d``/``seg_pool_3d``: ``x`` (N, P, ...) with steps ``[0, t1)``, ``[t1, t2)``,
    ``[t2, P)`` (``bounds`` (N, 2), non-empty steps) → (N, 3, fix_size, ...).

    Each step of length L is resampled as ``F.interpolate(mode='linear', align_corners=True)``:
    output i reads source position ``i * (L - 1) / (fix_size - 1)`` of the step, between
    ``floor`` and the next index (the last index when at the end), linearly weighted.
    """
    num_frames = x.shape[1]
    t1, t2 = bounds[:, 0], bounds[:, 1]
    starts = jnp.stack([jnp.zeros_like(t1), t1, t2], axis=1)  # (N, 3)
    lengths = jnp.stack([t1, t2 - t1, num_frames - t2], axis=1)
    scale = (lengths - 1).astype(jnp.float32) / max(fix_size - 1, 1)  # 0 when fix_size == 1
    src = scale[..., None] * jnp.arange(fix_size, dtype=jnp.float32)  # (N, 3, fix)
    lo = jnp.floor(src).astype(jnp.int32)
    lam = src - lo
    hi = lo + (lo < lengths[..., None] - 1)
    lo, hi = starts[..., None] + lo, starts[..., None] + hi
    take = jax.vmap(lambda xv, iv: xv[iv])
    n = x.shape[0]
    a = take(x, lo.reshape(n, -1))
    b = take(x, hi.reshape(n, -1))
    lam = lam.reshape((n, -1) + (1,) * (x.ndim - 2)).astype(x.dtype)
    out = a * (1 - lam) + b * lam
    return out.reshape((n, 3, fix_size) + x.shape[2:])


def predicted_transitions(logits: jax.Array) -> jax.Array:
    """``(..., P, 2)`` → (t̂1, t̂2): argmax of channel 0 over the first half, ``P // 2`` +
    argmax of channel 1 over the second half (the helper's loop; sigmoid is monotone, so the
    argmax of the logits is that of p)."""
    half = logits.shape[-2] // 2
    t1 = jnp.argmax(logits[..., :half, 0], axis=-1)
    t2 = half + jnp.argmax(logits[..., half:, 1], axis=-1)
    return jnp.stack([t1, t2], axis=-1).astype(jnp.int32)


def choose_boundaries(batch: Mapping[str, jax.Array], predicted: jax.Array, *, train: bool,
                      gt_boundary_steps: int, num_frames: int,
                      step: jax.Array | int | None = None) -> jax.Array:
    """The step boundaries the pooling uses, ``(B, 1 + M, 2)``, made sane (:func:`sane_boundaries`).

    The ground truth (``transitions``, ``exemplar_transitions``) in a training forward at a
    ``step`` (the optimizer step being trained, from 0) below ``gt_boundary_steps`` (the
    official ``epoch / max_epoch <= 0.25``); otherwise ``predicted``, as the official run
    after its first 25% of epochs and in every evaluation. Without ``step`` the training
    progress is unknown and the predicted boundaries are used.
    """
    if train and step is not None and gt_boundary_steps > 0:
        gt = jnp.concatenate([batch["transitions"][:, None], batch["exemplar_transitions"]], axis=1)
        use_gt = jnp.asarray(step) < gt_boundary_steps
        predicted = jnp.where(use_gt, gt.astype(jnp.int32), predicted)
    return sane_boundaries(predicted, num_frames)


# --------------------------------------------------------------------------- modules


class DoubleConv(nn.Module):
    """``double_conv``: (Conv1d k3 pad 1 → BatchNorm1d → ReLU) x 2, channels last."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, use_running_average: bool) -> jax.Array:
        for i in range(2):
            fan_in = 3 * x.shape[-1]
            x = nn.Conv(self.features, (3,), padding=[(1, 1)], kernel_init=torch_uniform_init(fan_in),
                        bias_init=torch_uniform_init(fan_in), dtype=self.dtype, name=f"conv{i}")(x)
            x = BatchNorm(momentum=0.9, epsilon=1e-5, unbiased_running_var=True, dtype=self.dtype,
                          name=f"bn{i}")(x, use_running_average=use_running_average)
            x = nn.relu(x)
        return x


class PSNet(nn.Module):
    """``PSNet``: ``(N, L, n_clips)`` (sequence L = feature dims, channels = clips) →
    pseudo-frame tokens ``(N, num_frames, L / 16)`` and transition logits
    ``(N, num_frames, 2)`` (sigmoid gives the official p)."""

    num_frames: int = 96
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, use_running_average: bool) -> tuple[jax.Array, jax.Array]:
        widths = (24, 48, 96, self.num_frames)
        x = DoubleConv(12, self.dtype, name="inc")(x, use_running_average=use_running_average)
        for i, width in enumerate(widths):
            x = nn.max_pool(x, (2,), strides=(2,))
            x = DoubleConv(width, self.dtype, name=f"down{i + 1}")(x, use_running_average=use_running_average)
        tokens = jnp.swapaxes(x, 1, 2)  # PyTorch's (N, channels=pseudo-frames, length)
        return tokens, MLP((128, 64, 2), self.dtype, name="tas")(tokens)


class CrossAttention(nn.Module):
    """``CrossAttention``: q from the queries, k and v from the same memory, no qkv bias,
    scale ``head_dim ** -0.5``, output projection with bias."""

    num_heads: int = 8
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, q: jax.Array, memory: jax.Array) -> jax.Array:
        dim = q.shape[-1]
        if dim % self.num_heads:
            raise ValueError(f"decoder dim {dim} is not a multiple of num_heads={self.num_heads}")
        head = dim // self.num_heads

        def dense(name, bias=False):
            init = torch_uniform_init(dim)
            return nn.Dense(dim, use_bias=bias, kernel_init=init, bias_init=init, dtype=self.dtype, name=name)

        split = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, head))  # noqa: E731
        qh, kh, vh = split(dense("q_map")(q)), split(dense("k_map")(memory)), split(dense("v_map")(memory))
        scores = jnp.einsum("...qhd,...khd->...hqk", qh, kh).astype(jnp.float32) * head**-0.5
        attn = jax.nn.softmax(scores, axis=-1).astype(vh.dtype)  # softmax in float32
        out = jnp.einsum("...hqk,...khd->...qhd", attn, vh).reshape(q.shape)
        return dense("proj", bias=True)(out)


class DecoderBlock(nn.Module):
    """``DecoderBlock``: ``q + attn(LN_q(q), LN_v(memory))``, then ``q + MLP(LN(q))`` with the
    MLP ``dim → mlp_ratio * dim → dim`` and exact (erf) GELU; LayerNorm eps 1e-5."""

    num_heads: int = 8
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, q: jax.Array, memory: jax.Array) -> jax.Array:
        dim = q.shape[-1]
        ln = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=name)  # noqa: E731
        q = q + CrossAttention(self.num_heads, self.dtype, name="attn")(ln("norm_q")(q), ln("norm_v")(memory))
        hidden = int(dim * self.mlp_ratio)
        h = ln("norm2")(q)
        h = nn.Dense(hidden, kernel_init=torch_uniform_init(dim), bias_init=torch_uniform_init(dim),
                     dtype=self.dtype, name="fc1")(h)
        h = nn.gelu(h, approximate=False)
        h = nn.Dense(dim, kernel_init=torch_uniform_init(hidden), bias_init=torch_uniform_init(hidden),
                     dtype=self.dtype, name="fc2")(h)
        return q + h


class Decoder(nn.Module):
    """``decoder_fuser``: ``depth`` :class:`DecoderBlock` s, every one reading the same memory."""

    depth: int = 3
    num_heads: int = 8
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, q: jax.Array, memory: jax.Array) -> jax.Array:
        for i in range(self.depth):
            q = DecoderBlock(self.num_heads, self.mlp_ratio, self.dtype, name=f"block{i}")(q, memory)
        return q


def official_map_sequences(maps: jax.Array) -> jax.Array:
    """(V, n_clips, H, W, C) → (V * H * W, C, n_clips) PSNet inputs as the official
    ``feamap.reshape(-1, n_clips, C)`` of the (V, n_clips, C, H, W) tensor builds them."""
    v, n, h, w, c = maps.shape
    torch_layout = jnp.transpose(maps, (0, 1, 4, 2, 3)).reshape(v * h * w, n, c)
    return jnp.swapaxes(torch_layout, 1, 2)


def official_map_tokens(tokens: jax.Array, h: int, w: int) -> jax.Array:
    """PSNet tokens (V * H * W, P, D) → (V, P, H * W, D) as the official
    ``reshape(V, P, D, H, W)`` then per-(pseudo-frame, position) vectors read them."""
    vhw, p, d = tokens.shape
    torch_layout = tokens.reshape(vhw // (h * w), p, d, h, w)
    return jnp.transpose(torch_layout, (0, 1, 3, 4, 2)).reshape(vhw // (h * w), p, h * w, d)


def position_map_sequences(maps: jax.Array) -> jax.Array:
    """(V, n_clips, H, W, C) → (V * H * W, C, n_clips): one sequence per spatial position."""
    v, n, h, w, c = maps.shape
    return jnp.transpose(maps, (0, 2, 3, 4, 1)).reshape(v * h * w, c, n)


def position_map_tokens(tokens: jax.Array, h: int, w: int) -> jax.Array:
    """PSNet tokens (V * H * W, P, D) of :func:`position_map_sequences` → (V, P, H * W, D)."""
    vhw, p, d = tokens.shape
    return jnp.swapaxes(tokens.reshape(vhw // (h * w), h * w, p, d), 1, 2)


class TSANetwork(nn.Module):
    """Shared I3D, PSNet (``head_psnet``), step pooling, cross-attention (``head_decoder``) and
    regressor (``head_regressor``) on a query and its M exemplars (see module docstring).

    Outputs: ``delta`` (B, M) = Δ(query → exemplar map); in training also ``delta_reverse``
    (B, M) = Δ(exemplar → query map); ``transition_logits`` (B, 1 + M, P, 2) and
    ``transitions_pred`` (B, 1 + M, 2) (raw argmaxes, query first); ``s_exemplar`` (B, M).
    """

    backbone: InceptionI3d
    num_frames: int = 96
    fix_size: int = 5
    decoder_depth: int = 3
    num_heads: int = 8
    mlp_ratio: float = 4.0
    gt_boundary_steps: int = 0
    map_layout: str = "official"
    dtype: Any = jnp.float32  # the heads' hidden layers (config.compute_dtype)

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool,
                 use_running_average: bool | None = None,
                 step: jax.Array | int | None = None) -> dict[str, jax.Array]:
        """``step``: the optimizer step being trained (the train step passes it, see
        :attr:`~aqa_jax.methods.base.Method.forward_takes_step`); it chooses ground-truth or
        predicted boundaries (:func:`choose_boundaries`)."""
        if self.map_layout not in MAP_LAYOUTS:
            raise ValueError(f"tsa.map_layout={self.map_layout!r}; use one of {MAP_LAYOUTS}")
        clips = jnp.concatenate([batch["clip"][:, None], batch["exemplar_clip"]], axis=1)
        b, v1, n = clips.shape[:3]
        m = v1 - 1
        features, maps = clip_features(self.backbone, clips, train=train,
                                       use_running_average=use_running_average, keep_maps=True)
        h, w, c = maps.shape[-3:]
        # PSNet's BN in training mode (official) needs a mutable batch_stats collection.
        head_running = not (train and self.is_mutable_collection("batch_stats"))
        psnet = PSNet(self.num_frames, self.dtype, name="head_psnet")
        tokens, logits = psnet(jnp.swapaxes(features.reshape(b * v1, n, c), 1, 2),
                               use_running_average=head_running)
        d = tokens.shape[-1]
        logits = logits.reshape(b, v1, self.num_frames, 2)
        predicted = predicted_transitions(logits)  # (B, 1 + M, 2)
        bounds = choose_boundaries(batch, predicted, train=train, gt_boundary_steps=self.gt_boundary_steps,
                                   num_frames=self.num_frames, step=step)

        map_videos = maps if train else maps[:, 1:]  # the query's map is only read in training
        vm = map_videos.shape[1]
        flat_maps = map_videos.reshape((b * vm, n, h, w, c))
        if self.map_layout == "official":
            map_tokens, _ = psnet(official_map_sequences(flat_maps), use_running_average=head_running)
            map_tokens = official_map_tokens(map_tokens, h, w)
        else:
            map_tokens, _ = psnet(position_map_sequences(flat_maps), use_running_average=head_running)
            map_tokens = position_map_tokens(map_tokens, h, w)
        map_bounds = bounds if train else bounds[:, 1:]

        steps = segment_pool(tokens, bounds.reshape(-1, 2), self.fix_size)  # (B(1+M), 3, fix, D)
        steps = steps.reshape(b, v1, NUM_STEPS, self.fix_size, d)
        step_maps = segment_pool(map_tokens, map_bounds.reshape(-1, 2), self.fix_size)
        step_maps = step_maps.reshape(b, vm, NUM_STEPS, self.fix_size * h * w, d)

        queries = [jnp.broadcast_to(steps[:, :1], (b, m) + steps.shape[2:])]
        memories = [step_maps[:, -m:]]
        if train:  # exemplar tokens → query map: the reverse direction of the loss
            queries.append(steps[:, 1:])
            memories.append(jnp.broadcast_to(step_maps[:, :1], (b, m) + step_maps.shape[2:]))
        q = jnp.stack(queries, axis=2)  # (B, M, directions, 3, fix, D)
        mem = jnp.stack(memories, axis=2)
        lead = q.shape[:4]
        decoder = Decoder(self.decoder_depth, self.num_heads, self.mlp_ratio, self.dtype, name="head_decoder")
        fused = decoder(q.reshape((-1,) + q.shape[4:]), mem.reshape((-1,) + mem.shape[4:]))
        fused = fused.reshape(lead[:3] + (NUM_STEPS * self.fix_size, d))
        delta = MLP((256, 64, 1), self.dtype, name="head_regressor")(fused)[..., 0].mean(-1)  # (B, M, dirs)
        out = {"delta": delta[..., 0], "transition_logits": logits, "transitions_pred": predicted,
               "s_exemplar": batch["exemplar_score"].astype(jnp.float32)}
        if train:
            out["delta_reverse"] = delta[..., 1]
        return out


# --------------------------------------------------------------------------- loss, metrics


def transition_targets(transitions: jax.Array, num_frames: int) -> jax.Array:
    """``(..., 2)`` → y ``(..., P, 2)``: 1 at (t1, 0) and (t2, 1), 0 elsewhere."""
    return jnp.stack([jax.nn.one_hot(transitions[..., 0], num_frames),
                      jax.nn.one_hot(transitions[..., 1], num_frames)], axis=-1)


def bce_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """``nn.BCELoss()(sigmoid(logits), targets)``: mean of ``-(y log p + (1 - y) log(1 - p))``
    with each log clamped at -100, the logs taken as ``log_sigmoid`` (see module doc)."""
    log_p = jnp.maximum(jax.nn.log_sigmoid(logits), -100.0)
    log_not_p = jnp.maximum(jax.nn.log_sigmoid(-logits), -100.0)
    return -jnp.mean(targets * log_p + (1 - targets) * log_not_p)


def tsa_loss(delta: jax.Array, delta_reverse: jax.Array, score: jax.Array, exemplar_score: jax.Array,
             logits: jax.Array, transitions: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``MSE(Δ12, s_q - s_e) + MSE(Δ21, s_e - s_q) + BCE(p, y)`` (weights 1, means over the
    batch, the exemplars and for the BCE every pseudo-frame and channel).

    ``delta``, ``delta_reverse``, ``exemplar_score``: (B, M); ``score``: (B,);
    ``logits``: (B, 1 + M, P, 2); ``transitions``: (B, 1 + M, 2) ground truth.
    """
    diff = score[:, None] - exemplar_score
    mse = jnp.mean((delta - diff) ** 2)
    mse_reverse = jnp.mean((delta_reverse + diff) ** 2)
    bce = bce_with_logits(logits, transition_targets(transitions, logits.shape[-2]))
    return mse + mse_reverse + bce, {"mse": mse, "mse_reverse": mse_reverse, "bce": bce}


# --------------------------------------------------------------------------- method


def gt_boundary_steps(fraction: float, steps_per_epoch: int, total_steps: int) -> int:
    """Steps (counted from 0) that use the ground-truth boundaries under the official rule
    ``epoch / max_epoch <= fraction`` (epoch 0-based, so 51 of 200 epochs at 0.25); with a
    ``total_steps`` that is not a whole number of epochs, ``max_epoch = total / per_epoch``."""
    if fraction <= 0:
        return 0
    epochs = total_steps / steps_per_epoch
    last_gt_epoch = math.floor(fraction * epochs + 1e-9)
    return min((last_gt_epoch + 1) * steps_per_epoch, total_steps)


class Method(ScoreMethod):
    """TSA (see module docstring)."""

    forward_takes_step = True  # ground-truth boundaries for the first steps
    samples_from_train_split = True  # exemplars of the training split
    clip_keys = ("clip", "exemplar_clip")  # the query's and its exemplars' frames

    def __init__(self, config):
        super().__init__(config)
        if config.get("precompute_features"):
            raise ValueError(
                "TSA cannot train on cached backbone features: PSNet reads every clip's Mixed_5c "
                "map (H' x W' positions), which the feature cache does not keep. Set "
                "precompute_features=False (trainable='head' with bn_policy='frozen' still freezes "
                "the backbone, computed every step)")
        t = config.tsa
        if t.get("map_layout", "official") not in MAP_LAYOUTS:
            raise ValueError(f"tsa.map_layout={t.map_layout!r}; use one of {MAP_LAYOUTS}")
        if int(t.num_frames) < 4:
            raise ValueError(f"tsa.num_frames={t.num_frames}: need at least 4 pseudo-frames")
        self.pool: ExemplarPool | None = None
        #: steps (from 0) trained with ground-truth boundaries: ``tsa.gt_boundary_steps`` when
        #: given (>= 0), else computed by :meth:`prepare` from the schedule (0 without one)
        self.gt_boundary_steps = max(int(t.get("gt_boundary_steps", -1)), 0)

    def prepare(self, train_source, schedule: Schedule | None = None) -> None:
        """The exemplar pool of the training split and, unless ``tsa.gt_boundary_steps`` gives
        it, the official epoch rule's ground-truth steps for ``schedule``."""
        t = self.config.tsa
        self.pool = ExemplarPool(train_source, t.get("exemplar_key") or None, self.label_keys)
        if int(t.get("gt_boundary_steps", -1)) < 0 and schedule is not None:
            self.gt_boundary_steps = gt_boundary_steps(float(t.gt_boundary_fraction),
                                                       schedule.steps_per_epoch, schedule.total_steps)

    def build_model(self) -> TSANetwork:
        t = self.config.tsa
        return TSANetwork(build_backbone(self.config), int(t.num_frames), int(t.fix_size),
                          int(t.decoder_depth), int(t.num_heads), float(t.mlp_ratio),
                          self.gt_boundary_steps, t.get("map_layout", "official"),
                          dtype=compute_dtype(self.config))

    def clip_sampler(self, train: bool) -> TSAClipSampler:
        return TSAClipSampler(**self.clip_sampler_fields(train),
                              num_pseudo_frames=int(self.config.tsa.num_frames))

    def sampler(self, train: bool) -> PairSampler:
        if self.pool is None:
            raise RuntimeError("call Method.prepare(train_source) before asking for samplers")
        return PairSampler(self.clip_sampler(train), self.pool, int(self.config.tsa.num_exemplars))

    def loss(self, outputs, batch):
        transitions = jnp.concatenate([batch["transitions"][:, None], batch["exemplar_transitions"]], 1)
        return tsa_loss(outputs["delta"], outputs["delta_reverse"], batch["score"].astype(jnp.float32),
                        outputs["s_exemplar"], outputs["transition_logits"], transitions)

    def predict(self, outputs, batch):
        scores = outputs["delta"] + outputs["s_exemplar"]  # (B, M)
        truth, pred = batch["transitions"], outputs["transitions_pred"][:, 0]
        mask = batch["exemplar_mask"] if "exemplar_mask" in batch else jnp.ones_like(scores)
        mean, spread = masked_mean_std(scores, mask)  # over the exemplars that exist
        return {"score_pred": mean, "score_true": batch["score"], "exemplar_spread": spread,
                "t1_true": truth[:, 0], "t2_true": truth[:, 1], "t1_pred": pred[:, 0], "t2_pred": pred[:, 1]}

    def per_sample(self, predictions):
        keys = ("score_pred", "score_true", "exemplar_spread", "t1_true", "t2_true", "t1_pred", "t2_pred")
        columns = {k: np.asarray(predictions[k]) for k in keys}
        columns["tiou"] = interval_iou(np.stack([columns["t1_true"], columns["t2_true"]], -1),
                                       np.stack([columns["t1_pred"], columns["t2_pred"]], -1))
        return columns

    def report(self, columns: Mapping[str, np.ndarray]) -> dict[str, float]:
        report = super().report(columns)
        tiou = columns["tiou"]
        report.update({"tiou_0.5": tiou_at(tiou, 0.5), "tiou_0.75": tiou_at(tiou, 0.75),
                       "tiou_mean": float(np.mean(tiou))})
        return report
