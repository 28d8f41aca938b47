"""CoFInAl: Coarse-to-Fine Instruction Alignment (Zhou et al., IJCAI 2024; ZhouKanglei/CoFInAl_AQA).

CoFInAl scores a video from precomputed per-clip features ``(T, D)`` (VST or I3D, 1024-d); no
backbone runs in the loop. Network (``models/model.py``, class ``cofinal``), in order:

1. **input projection**: Conv1d(k=1) D→D/2 → BatchNorm1d → ReLU → Conv1d D/2→H → BatchNorm1d
   (BN over batch and time, PyTorch numerics: momentum 0.1, eps 1e-5, unbiased running var);
2. **Temporal Fusion Module**: a post-norm Transformer encoder (``n_encoder`` layers, ``n_head``
   heads, FFN 3H, ReLU, dropout 0.3 on attention weights and residual branches, a final
   LayerNorm, LayerNorm eps 1e-5) and **no positional encoding** (commented out upstream);
3. **Grade Parsing Module**: a post-norm Transformer decoder (``n_decoder`` = 2 layers, final
   LayerNorm) whose queries are ``n_query`` = 4 learnable grade prototypes (``nn.Embedding``,
   N(0, 1) init); output ``q`` (B, 4, H);
4. **coarse Likert read-out** (GDLT): ``s = diag(Linear_{H→4}(q))``, ``p = σ(s) / Σ σ(s)``,
   ``coarse = Σ w_i p_i``; a second Linear with weights ``w'`` gives ``coarse_rev`` (the
   *revert* branch); the coarse prediction is ``(coarse + 1 - coarse_rev) / 2``. Weight presets
   (``--activate_regular_restrictions``): 0: w = linspace(0, 1, 4), w' = w reversed;
   1: linspace(0, 1, 5)[1:] and reversed; 2: [0.1, 0.2, 0.8, 1] and [1, 1, -1, -1];
   3: [-1, -0.8, 0.8, 1] and reversed;
5. **Fine-Grained Scoring**: MultiheadAttention(H, 4 heads, dropout) self-attention over ``q``,
   flatten (4H), Linear 4H→H → Linear H→100, L2-normalised: ``f``; logits ``f · E`` against a
   fixed simplex ETF ``E`` of K = 100 sub-grades; sub-grade ``c = argmax``.

The ETF (``eth()``): ``E = sqrt(K/(K-1)) U (I - 11ᵀ/K)``, ``U`` the Q factor of
``np.random.random((K, K))`` drawn right after ``np.random.seed(0)`` (``main.py`` seeds, then
builds the model), reproduced with NumPy's legacy ``RandomState(0)``. It lives in the
``batch_stats`` collection (variable ``head/etf``): the non-trainable state that the train
state carries and every checkpoint saves, so a restored model scores with the ETF it was
trained with and the optimizer never sees it.

**Targets** (÷``label_scale`` units, 25 for RG and Fis-V as ``normalize_score``): with
``n = ⌊10000 y⌋`` (``(y * 10000).long()`` in float32), the coarse grade
``g1 = (n div 100) / 100`` and the sub-grade ``g2 = n mod 100``; re-coupled,
``g1 + g2 / 10000 = n / 10000``. The sampler computes them on the host, in float32 as the
official tensors (traced, XLA would divide by 100 as a multiplication by 0.01, 1 ulp off for a
third of the labels), from the decimal the label file held (the shortest repr of the stored
float32, divided in float64, then rounded to float32, as the official float64 ``score / 25``
then ``.float()``).

**Loss** (``models/loss.py`` with the ETF head): ``MSE(coarse, g1) + MSE(coarse_rev, 1 - g1) +
L1(f, E[:, g2]) + α · L_tri``; ``L_tri`` is the hardest-positive / hardest-negative triplet
loss (margin 1) over the B x 4 query embeddings with labels from ``loss_align`` (0: query
index; 1: query index rescaled to [-1, 1), the same partition; 2: every embedding its own
label, so only negatives). Its distance is the **cosine** distance ``1 - cos`` in the released
``models/triplet_loss.py`` (CoFInAl and GDLT alike; the Euclidean code is commented out there
although the papers describe Euclidean): ``triplet_distance='cosine'`` is the default,
``'euclidean'`` is available. **Score**: ``ŷ = coarse prediction + c / 10000``, reported
x ``label_scale`` (the dataset's own units). Per-sample columns (predictions CSV): ``score_pred``,
``score_true``, ``pred_scaled`` (ŷ), ``coarse_score`` (the coarse prediction x scale),
``grade`` (the dominant grade query, argmax p), ``grade_prob_0..3`` (p), ``subgrade`` (c).

**Clips**: training takes a random window of ``clip_num`` = 68 clips (start drawn from
``[0, T - 68)``, upper bound excluded, as ``np.random.randint``) or zero-pads a shorter video
to 68. The official code feeds those zero rows to the network **unmasked** (they enter the BN
batch statistics and every attention): ``mask_train_padding=False`` mirrors that (default);
True masks them out of attention keys and BN statistics. Evaluation runs the full sequence
(official: batch 1); here every evaluated video is zero-padded to ``max_clips`` with a key
padding mask (BN uses running statistics, so the padded evaluation equals the unpadded one,
tested); a longer video is an error naming it and the fix.

Defects of the release, fixed here (and said where):

- the FGS head is ``Linear(4H→256) → Linear(H→100)``, which only runs for H = 256 (the Fis-V
  scripts' H = 448 crashes): here ``Linear(4H→H) → Linear(H→100)`` (AQA-Benchmark's fix;
  identical for H = 256);
- the Ribbon script calls ``cofinal_2``, which ``models/model.py`` does not define; the class
  that matches it (and the first commit's script) is ``GDLTETH2``, CoFInAl without the revert
  branch: ``revert=False`` (configs: ``variant=cofinal_2``);
- the FGS ``nn.MultiheadAttention`` is built with ``batch_first=False`` but receives
  ``(B, 4, H)``, so in training it attends across the **batch** (per query slot) rather than
  across the 4 grade queries; in the official evaluation (batch 1) each video attends only to
  itself. The default attends over the 4 queries of each video; ``faithful_quirks=True``
  reproduces the batch mixing in training and the batch-1 behaviour in evaluation.
- ``get_score`` takes ``torch.argmax`` over the flattened batch, right only at batch 1 (its
  evaluation): here the argmax is per video.

GDLT (Xu et al., CVPR 2022; :mod:`aqa_jax.methods.gdlt`) is this network without the ETF
head and the revert branch: Likert read-out with ``w = linspace(0, 1, 4)`` trained with
``MSE(ŷ, y) + α L_tri`` (labels = query index) on the unsplit ``y``.

Initialisation as PyTorch's: Conv1d/Linear U(±1/sqrt(fan_in)); inside the Transformer every
matrix Xavier-uniform (the fused (3H, H) in-projection's bound sqrt(6 / 4H) for each of q, k,
v), in-projection and out-projection biases zero; the FGS attention's out-projection keeps
PyTorch's Linear init; prototypes N(0, 1). Dropout masks are nn.Dropout's per-element
Bernoulli(0.7) draws, all of a Transformer layer's taken from one random call (compile time).

``config.cofinal`` (``config.gdlt`` for GDLT, whose ETF/revert flags are fixed):
``hidden_dim``, ``n_head``, ``n_encoder``, ``n_decoder``, ``n_query``, ``dropout``,
``weight_preset`` (0-3), ``revert``, ``use_etf``, ``num_subgrades`` (100), ``fgs_heads`` (4),
``alpha``, ``margin``, ``loss_align``, ``triplet_distance``, ``label_scale``, ``clip_num``,
``max_clips``, ``mask_train_padding``, ``faithful_quirks``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aqa_jax.methods.base import Method as BaseMethod
from aqa_jax.metrics import regression_report
from aqa_jax.models.layers import BatchNorm, torch_uniform_init

SUBGRADE_RESOLUTION = 10000  # y = g1 + g2 / 10000
WEIGHT_PRESETS = (0, 1, 2, 3)
LOSS_ALIGNS = (0, 1, 2)
TRIPLET_DISTANCES = ("cosine", "euclidean")

DEFAULTS: dict[str, Any] = dict(
    hidden_dim=256, n_head=1, n_encoder=1, n_decoder=2, n_query=4, dropout=0.3,
    weight_preset=2, revert=True, use_etf=True, num_subgrades=100, fgs_heads=4,
    alpha=1.0, margin=1.0, loss_align=1, triplet_distance="cosine", label_scale=25.0,
    clip_num=68, max_clips=256, mask_train_padding=False, faithful_quirks=False,
)


# --- the fixed pieces ----------------------------------------------------------------------

def simplex_etf(num_classes: int = 100, dim: int | None = None, seed: int = 0) -> np.ndarray:
    """(dim, K) simplex ETF of ``eth(dim, K)``: ``sqrt(K/(K-1)) U (I - 11ᵀ/K)`` with ``U`` the
    Q of ``np.random.random((dim, K))`` right after ``np.random.seed(seed)``, in float32 as
    ``torch.tensor(U).float()`` and the float32 products that follow."""
    dim = num_classes if dim is None else dim
    rand = np.random.RandomState(seed).random_sample((dim, num_classes))
    u = np.linalg.qr(rand)[0].astype(np.float32)
    center = np.eye(num_classes, dtype=np.float32) - np.full(
        (num_classes, num_classes), 1.0 / num_classes, np.float32)
    return (u @ center * np.float32(math.sqrt(num_classes / (num_classes - 1)))).astype(np.float32)


def weight_preset(preset: int, n_query: int) -> tuple[np.ndarray, np.ndarray]:
    """(w, w') of ``choose_activate`` (``--activate_regular_restrictions``)."""
    if preset == 0:
        w = np.linspace(0, 1, n_query, dtype=np.float32)
        return w, w[::-1].copy()
    if preset == 1:
        w = np.linspace(0, 1, n_query + 1, dtype=np.float32)[1:]
        return w, w[::-1].copy()
    if n_query != 4:
        raise ValueError(f"weight_preset={preset} has 4 fixed weights; n_query={n_query}")
    if preset == 2:
        return (np.array([0.1, 0.2, 0.8, 1], np.float32), np.array([1, 1, -1, -1], np.float32))
    if preset == 3:
        w = np.array([-1, -0.8, 0.8, 1], np.float32)
        return w, w[::-1].copy()
    raise ValueError(f"weight_preset={preset!r}; use one of {WEIGHT_PRESETS}")


def decouple(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """(g1, g2) of scaled labels ``y`` (host side, float32 as the official tensors):
    ``n = trunc(float32(y) * 10000)`` (``.long()``), ``g1 = float32((n div 100) / 100)``,
    ``g2 = n mod 100`` (int32, 0-99). Not traced: XLA turns a division by a constant into a
    multiplication by its reciprocal, which is 1 ulp off ``g1`` for a third of the labels."""
    n = np.trunc(np.asarray(y, np.float32) * np.float32(SUBGRADE_RESOLUTION)).astype(np.int64)
    high = np.floor_divide(n, 100)
    return (high / 100.0).astype(np.float32), (n - high * 100).astype(np.int32)


def recouple(g1: Any, g2: Any) -> np.ndarray:
    """The score of a coarse grade and a sub-grade, ``g1 + g2 / 10000`` in float32 (host)."""
    return (np.asarray(g1, np.float32)
            + (np.asarray(g2, np.float64) / SUBGRADE_RESOLUTION).astype(np.float32))


def likert(logits: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """GDLT's read-out of per-grade logits (..., G): (``Σ w_i p_i``, ``p``) with
    ``p = σ(s) / Σ σ(s)``."""
    p = jax.nn.sigmoid(logits)
    p = p / jnp.sum(p, axis=-1, keepdims=True)
    return jnp.sum(jnp.asarray(weights, p.dtype) * p, axis=-1), p


def align_labels(loss_align: int, n_query: int, batch: int) -> np.ndarray:
    """``choose_align``: the triplet labels of the flattened (batch x query) embeddings."""
    if loss_align == 0:
        return np.tile(np.arange(n_query, dtype=np.float32), batch)
    if loss_align == 1:
        half = n_query // 2
        return np.tile(np.arange(-n_query // 2, half, dtype=np.float32) / half, batch)
    if loss_align == 2:
        n = n_query * batch
        return np.arange(-n // 2, n // 2, dtype=np.float32) / (n // 2)
    raise ValueError(f"loss_align={loss_align!r}; use one of {LOSS_ALIGNS}")


def pairwise_distance(x: jax.Array, kind: str = "cosine") -> jax.Array:
    """(N, N) distances: ``1 - cos`` (``F.normalize``, eps 1e-12; the released code) or
    Euclidean (omoindrot's, zero on the diagonal with a finite gradient)."""
    if kind == "cosine":
        unit = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        return 1.0 - unit @ unit.T
    if kind == "euclidean":
        sq = jnp.sum(x * x, axis=-1)
        d2 = jnp.maximum(sq[:, None] - 2.0 * x @ x.T + sq[None, :], 0.0)
        zero = d2 == 0.0
        return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, d2)))
    raise ValueError(f"triplet_distance={kind!r}; use one of {TRIPLET_DISTANCES}")


def hardest_triplet_loss(embeddings: jax.Array, labels: Any, margin: float,
                         distance: str = "cosine") -> jax.Array:
    """``HardTripletLoss(hardest=True)``: per anchor, the farthest positive (0 when it has none)
    and the nearest negative, ``mean(relu(d_ap - d_an + margin))``."""
    d = pairwise_distance(embeddings, distance)
    labels = jnp.asarray(labels)
    same = labels[:, None] == labels[None, :]
    positive = same & ~jnp.eye(len(labels), dtype=bool)
    hardest_positive = jnp.max(d * positive, axis=1)
    farthest = jnp.max(d, axis=1, keepdims=True)
    hardest_negative = jnp.min(d + farthest * same, axis=1)
    return jnp.mean(jax.nn.relu(hardest_positive - hardest_negative + margin))


# --- layers with PyTorch's numerics ----------------------------------------------------------

def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def _torch_bn(name: str) -> BatchNorm:
    """``BatchNorm1d`` with PyTorch's defaults over every axis but the last (batch and time):
    momentum 0.1 (0.9 in Flax's convention), eps 1e-5, the unbiased variance in the running
    estimate."""
    return BatchNorm(momentum=0.9, epsilon=1e-5, unbiased_running_var=True, name=name)


class TorchMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (batch-first layout ``(..., L, E)``): PyTorch's fused
    in-projection (``in_kernel`` (E, 3E) = ``in_proj_weight.T``, rows q, k, v; Xavier-uniform
    over the (3E, E) matrix, zero bias), scaled dot product, dropout on the attention weights
    (per element; ``weight_keep`` is a mask drawn by the caller), out-projection ``out``.
    ``key_mask`` (..., S): True keeps a key.
    ``out_init``: ``xavier`` (inside ``nn.Transformer``, re-initialised) or ``torch`` (a
    free-standing module: PyTorch's Linear init)."""

    num_heads: int
    dropout: float = 0.0
    out_init: str = "xavier"

    @nn.compact
    def __call__(self, query: jax.Array, key_value: jax.Array, key_mask: jax.Array | None = None,
                 *, deterministic: bool, weight_keep: jax.Array | None = None) -> jax.Array:
        e = query.shape[-1]
        if e % self.num_heads:
            raise ValueError(f"attention width {e} is not a multiple of {self.num_heads} heads")
        head = e // self.num_heads
        kernel = self.param("in_kernel", _uniform(math.sqrt(6.0 / (e + 3 * e))), (e, 3 * e))
        bias = self.param("in_bias", nn.initializers.zeros, (3 * e,))
        if query is key_value:
            q, k, v = jnp.split(query @ kernel + bias, 3, axis=-1)
        else:
            q = query @ kernel[:, :e] + bias[:e]
            k, v = jnp.split(key_value @ kernel[:, e:] + bias[e:], 2, axis=-1)
        split = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, head))  # noqa: E731
        logits = jnp.einsum("...qhd,...khd->...hqk", split(q) * (1.0 / math.sqrt(head)), split(k))
        if key_mask is not None:
            logits = jnp.where(key_mask[..., None, None, :], logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        if weight_keep is not None:  # drawn by the enclosing layer (see _keep_masks)
            weights = _dropped(weights, weight_keep, self.dropout)
        else:
            weights = nn.Dropout(self.dropout)(weights, deterministic=deterministic)
        out = jnp.einsum("...hqk,...khd->...qhd", weights, split(v)).reshape(query.shape)
        kernel_init = (nn.initializers.xavier_uniform() if self.out_init == "xavier"
                       else torch_uniform_init(e))
        return nn.Dense(e, kernel_init=kernel_init, bias_init=nn.initializers.zeros,
                        name="out")(out)


def _keep_masks(module: nn.Module, rate: float, shapes: list[tuple[int, ...]],
                deterministic: bool) -> list[jax.Array | None]:
    """The dropout keep-masks of all of a layer's dropout sites from one uniform draw
    (``nn.Dropout``'s per-element Bernoulli(1 - rate) each). One random call per layer instead
    of one per site: XLA compiles every threefry call's graph, and the 17 sites of CoFInAl's
    step cost several seconds of CPU compile time. ``None`` each when not dropping."""
    if deterministic or not rate:
        return [None] * len(shapes)
    sizes = [math.prod(shape) for shape in shapes]
    u = jax.random.uniform(module.make_rng("dropout"), (sum(sizes),))
    masks, start = [], 0
    for shape, size in zip(shapes, sizes):
        masks.append(u[start:start + size].reshape(shape) < 1.0 - rate)
        start += size
    return masks


def _dropped(x: jax.Array, keep: jax.Array | None, rate: float) -> jax.Array:
    return x if keep is None else jnp.where(keep, x / (1.0 - rate), 0.0)


class _FeedForward(nn.Module):
    width: int
    dropout: float

    @nn.compact
    def __call__(self, x: jax.Array, hidden_keep: jax.Array | None) -> jax.Array:
        e = x.shape[-1]
        h = nn.Dense(self.width, kernel_init=nn.initializers.xavier_uniform(),
                     bias_init=torch_uniform_init(e), name="linear1")(x)
        h = _dropped(nn.relu(h), hidden_keep, self.dropout)
        return nn.Dense(e, kernel_init=nn.initializers.xavier_uniform(),
                        bias_init=torch_uniform_init(self.width), name="linear2")(h)


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)


class EncoderLayer(nn.Module):
    """``TransformerEncoderLayer`` (post-norm, ReLU)."""

    num_heads: int
    ffn: int
    dropout: float

    @nn.compact
    def __call__(self, x, mask, *, deterministic):
        lead, t = x.shape[:-2], x.shape[-2]
        attn, res1, hidden, res2 = _keep_masks(
            self, self.dropout, [lead + (self.num_heads, t, t), x.shape,
                                 x.shape[:-1] + (self.ffn,), x.shape], deterministic)
        a = TorchMultiheadAttention(self.num_heads, self.dropout, name="self_attn")(
            x, x, mask, deterministic=deterministic, weight_keep=attn)
        x = _layer_norm("norm1")(x + _dropped(a, res1, self.dropout))
        f = _FeedForward(self.ffn, self.dropout, name="ffn")(x, hidden)
        return _layer_norm("norm2")(x + _dropped(f, res2, self.dropout))


class DecoderLayer(nn.Module):
    """``TransformerDecoderLayer`` (post-norm, ReLU); ``memory_mask`` masks memory keys."""

    num_heads: int
    ffn: int
    dropout: float

    @nn.compact
    def __call__(self, x, memory, memory_mask, *, deterministic):
        lead, g, s = x.shape[:-2], x.shape[-2], memory.shape[-2]
        self_w, res1, cross_w, res2, hidden, res3 = _keep_masks(
            self, self.dropout, [lead + (self.num_heads, g, g), x.shape,
                                 lead + (self.num_heads, g, s), x.shape,
                                 x.shape[:-1] + (self.ffn,), x.shape], deterministic)
        a = TorchMultiheadAttention(self.num_heads, self.dropout, name="self_attn")(
            x, x, None, deterministic=deterministic, weight_keep=self_w)
        x = _layer_norm("norm1")(x + _dropped(a, res1, self.dropout))
        a = TorchMultiheadAttention(self.num_heads, self.dropout, name="cross_attn")(
            x, memory, memory_mask, deterministic=deterministic, weight_keep=cross_w)
        x = _layer_norm("norm2")(x + _dropped(a, res2, self.dropout))
        f = _FeedForward(self.ffn, self.dropout, name="ffn")(x, hidden)
        return _layer_norm("norm3")(x + _dropped(f, res3, self.dropout))


class FGSAttention(nn.Module):
    """The FGS head's ``nn.MultiheadAttention(H, 4, dropout)`` on ``q`` (B, G, H).

    ``mode``: ``queries`` (the fix: each video's G queries attend to each other);
    ``batch`` (the released ``batch_first=False`` reading of (B, G, H): for each query slot,
    the B videos attend to each other); ``self`` (the release at batch 1: each query attends
    only to itself, i.e. out-projection of its value)."""

    num_heads: int
    dropout: float

    @nn.compact
    def __call__(self, q: jax.Array, *, mode: str, deterministic: bool) -> jax.Array:
        attn = TorchMultiheadAttention(self.num_heads, self.dropout, out_init="torch", name="attn")
        if mode == "queries":
            return attn(q, q, deterministic=deterministic)
        if mode == "batch":
            t = jnp.swapaxes(q, 0, 1)  # (G, B, H): batch G, sequence B
            return jnp.swapaxes(attn(t, t, deterministic=deterministic), 0, 1)
        if mode == "self":
            t = q[..., None, :]  # every (video, query) a sequence of length 1
            return attn(t, t, deterministic=deterministic)[..., 0, :]
        raise ValueError(f"unknown FGS attention mode {mode!r}")


class CoFInAlHead(nn.Module):
    """The whole CoFInAl / GDLT network on clip features (see module docstring)."""

    hidden_dim: int = 256
    n_head: int = 1
    n_encoder: int = 1
    n_decoder: int = 2
    n_query: int = 4
    dropout: float = 0.3
    weights: tuple[float, ...] = (0.1, 0.2, 0.8, 1.0)
    weights_revert: tuple[float, ...] | None = (1.0, 1.0, -1.0, -1.0)
    use_etf: bool = True
    num_subgrades: int = 100
    fgs_heads: int = 4
    batch_mixing: bool = False
    mask_train_padding: bool = False

    @nn.compact
    def __call__(self, features: jax.Array, mask: jax.Array, *, train: bool,
                 use_running_average: bool) -> dict[str, jax.Array]:
        det = not train
        h_mask = mask if (not train or self.mask_train_padding) else None
        x = features.astype(jnp.float32)
        d_in = x.shape[-1]
        x = nn.Dense(d_in // 2, kernel_init=torch_uniform_init(d_in),
                     bias_init=torch_uniform_init(d_in), name="conv0")(x)
        x = nn.relu(_torch_bn("bn0")(x, use_running_average=use_running_average, mask=h_mask))
        x = nn.Dense(self.hidden_dim, kernel_init=torch_uniform_init(d_in // 2),
                     bias_init=torch_uniform_init(d_in // 2), name="conv1")(x)
        x = _torch_bn("bn1")(x, use_running_average=use_running_average, mask=h_mask)

        ffn = 3 * self.hidden_dim
        for i in range(self.n_encoder):
            x = EncoderLayer(self.n_head, ffn, self.dropout, name=f"encoder_{i}")(
                x, h_mask, deterministic=det)
        memory = _layer_norm("encoder_norm")(x)
        prototypes = self.param("prototypes", nn.initializers.normal(1.0),
                                (self.n_query, self.hidden_dim))
        q = jnp.broadcast_to(prototypes, (x.shape[0],) + prototypes.shape)
        for i in range(self.n_decoder):
            q = DecoderLayer(self.n_head, ffn, self.dropout, name=f"decoder_{i}")(
                q, memory, h_mask, deterministic=det)
        q = _layer_norm("decoder_norm")(q)

        def grade_logits(name):
            s = nn.Dense(self.n_query, kernel_init=torch_uniform_init(self.hidden_dim),
                         bias_init=torch_uniform_init(self.hidden_dim), name=name)(q)
            return jnp.diagonal(s, axis1=-2, axis2=-1)  # query i's own logit

        coarse, probs = likert(grade_logits("regressor"), jnp.asarray(self.weights))
        out = {"coarse": coarse, "grade_probs": probs, "embed": q}
        if self.weights_revert is not None:
            out["coarse_revert"], out["grade_probs_revert"] = likert(
                grade_logits("regressor_revert"), jnp.asarray(self.weights_revert))
        if self.use_etf:
            mode = ("batch" if train else "self") if self.batch_mixing else "queries"
            a = FGSAttention(self.fgs_heads, self.dropout, name="fgs")(q, mode=mode, deterministic=det)
            a = a.reshape(a.shape[0], -1)
            a = nn.Dense(self.hidden_dim, kernel_init=torch_uniform_init(a.shape[-1]),
                         bias_init=torch_uniform_init(a.shape[-1]), name="fgs_fc0")(a)
            a = nn.Dense(self.num_subgrades, kernel_init=torch_uniform_init(self.hidden_dim),
                         bias_init=torch_uniform_init(self.hidden_dim), name="fgs_fc1")(a)
            f = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
            etf = self.variable("batch_stats", "etf",
                                lambda: jnp.asarray(simplex_etf(self.num_subgrades)))
            out["subgrade_feature"] = f
            out["subgrade_logits"] = f @ etf.value
            out["etf"] = etf.value
        return out


class CoFInAlNetwork(nn.Module):
    """Batch dict → outputs; the network sits under ``head`` so every parameter is labelled
    ``head`` (no backbone: the features are precomputed)."""

    head: CoFInAlHead

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool,
                 use_running_average: bool | None = None) -> dict[str, jax.Array]:
        ura = (not train) if use_running_average is None else use_running_average
        return self.head(batch["features"], batch["mask"], train=train, use_running_average=ura)


# --- data ------------------------------------------------------------------------------------

def scaled_label(score: Any, label_scale: float) -> np.float32:
    """``score / label_scale`` as the official float64 ``score / 25`` then ``.float()``: the
    stored float32 score is first turned back into the decimal the label file held (its
    shortest repr), so ``21.15`` gives float32(0.846), not float32(float32(21.15) / 25)."""
    decimal = float(np.format_float_positional(np.float32(score)))
    return np.float32(decimal / float(label_scale))


@dataclasses.dataclass(frozen=True)
class FeatureWindowSampler:
    """Record (``features`` (T, D), ``score``) → example with ``features`` (L, D) zero-padded,
    ``mask`` (L,) marking real clips, ``score`` (dataset units), ``target`` (÷ scale) and its
    decoupled ``coarse_target`` (g1) and ``subgrade_target`` (g2).

    Training (``rng`` given): a random window of ``clip_num`` clips, start in
    ``[0, T - clip_num)``, or the whole video zero-padded to ``clip_num``. Evaluation: the whole
    video zero-padded to ``max_clips``."""

    clip_num: int = 68
    max_clips: int = 256
    label_scale: float = 25.0

    def __call__(self, record: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, Any]:
        sample = record["id"].decode() if isinstance(record["id"], bytes) else str(record["id"])
        feats = np.asarray(record["features"], np.float32)
        if feats.ndim != 2 or len(feats) == 0:
            raise ValueError(f"{sample}: features of shape {feats.shape}; expected (num_clips, D)")
        if rng is not None:
            length = self.clip_num
            if len(feats) > length:
                start = int(rng.integers(0, len(feats) - length))
                feats = feats[start:start + length]
        else:
            length = self.max_clips
            if len(feats) > length:
                raise ValueError(
                    f"{sample} has {len(feats)} clips, more than max_clips={length} (evaluation "
                    f"pads every video to that static length); raise it, e.g. --set "
                    f"<method>.max_clips={len(feats)}")
        padded = np.zeros((length, feats.shape[1]), np.float32)
        padded[:len(feats)] = feats
        score = np.float32(record.get("score", np.nan))
        target = scaled_label(score, self.label_scale) if np.isfinite(score) else np.float32(np.nan)
        g1, g2 = decouple(target) if np.isfinite(target) else (np.float32(np.nan), np.int32(0))
        return {
            "id": sample, "features": padded, "mask": np.arange(length) < len(feats),
            "score": score, "target": target,
            "coarse_target": np.float32(g1), "subgrade_target": np.int32(g2),
        }


# --- the method ------------------------------------------------------------------------------

class Method(BaseMethod):
    """CoFInAl (and, through :mod:`aqa_jax.methods.gdlt`, GDLT) on clip features."""

    video_input = "features"
    clip_keys = ()  # clip features, no frames
    #: the config section holding the options
    section = "cofinal"
    #: options a subclass fixes (a config that says otherwise is an error)
    fixed: dict[str, Any] = {}

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        given = dict(config.get(self.section, {}) or {})
        unknown = set(given) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"config.{self.section} has unknown fields {sorted(unknown)}; "
                             f"known: {sorted(DEFAULTS)}")
        for key, value in self.fixed.items():
            if key in given and given[key] != value:
                raise ValueError(f"config.{self.section}.{key}={given[key]!r} contradicts "
                                 f"{config.method}, which fixes it to {value!r}")
        o = ml_collections.ConfigDict({**DEFAULTS, **given, **self.fixed})
        if o.loss_align not in LOSS_ALIGNS:
            raise ValueError(f"{self.section}.loss_align={o.loss_align!r}; use one of {LOSS_ALIGNS}")
        if o.triplet_distance not in TRIPLET_DISTANCES:
            raise ValueError(f"{self.section}.triplet_distance={o.triplet_distance!r}; "
                             f"use one of {TRIPLET_DISTANCES}")
        if o.hidden_dim % o.n_head or (o.use_etf and o.hidden_dim % o.fgs_heads):
            raise ValueError(f"{self.section}.hidden_dim={o.hidden_dim} must be a multiple of "
                             f"n_head={o.n_head} and fgs_heads={o.fgs_heads}")
        if o.label_scale <= 0:
            raise ValueError(f"{self.section}.label_scale={o.label_scale} must be positive")
        if (config.get("compute_dtype") or "float32") != "float32":
            raise ValueError(f"{config.method} computes in float32 only; set "
                             f"compute_dtype='float32' (got {config.compute_dtype!r})")
        self.options = o
        self.w, self.w_revert = weight_preset(int(o.weight_preset), int(o.n_query))

    def build_model(self) -> CoFInAlNetwork:
        o = self.options
        return CoFInAlNetwork(CoFInAlHead(
            hidden_dim=int(o.hidden_dim), n_head=int(o.n_head), n_encoder=int(o.n_encoder),
            n_decoder=int(o.n_decoder), n_query=int(o.n_query), dropout=float(o.dropout),
            weights=tuple(float(v) for v in self.w),
            weights_revert=tuple(float(v) for v in self.w_revert) if o.revert else None,
            use_etf=bool(o.use_etf), num_subgrades=int(o.num_subgrades),
            fgs_heads=int(o.fgs_heads), batch_mixing=bool(o.faithful_quirks),
            mask_train_padding=bool(o.mask_train_padding),
        ))

    def sampler(self, train: bool) -> FeatureWindowSampler:
        o = self.options
        return FeatureWindowSampler(int(o.clip_num), int(o.max_clips), float(o.label_scale))

    def loss(self, outputs, batch):
        o = self.options
        metrics = {}
        coarse_target = batch["coarse_target"] if o.use_etf else batch["target"]
        loss = metrics["coarse_mse"] = jnp.mean(jnp.square(outputs["coarse"] - coarse_target))
        if "coarse_revert" in outputs:
            revert = outputs["coarse_revert"] - (1.0 - coarse_target)
            metrics["revert_mse"] = jnp.mean(jnp.square(revert))
            loss = loss + metrics["revert_mse"]
        if o.use_etf:
            target_feature = jnp.take(outputs["etf"], batch["subgrade_target"], axis=1).T  # E[:, g2]ᵀ
            metrics["subgrade_l1"] = jnp.mean(jnp.abs(outputs["subgrade_feature"] - target_feature))
            loss = loss + metrics["subgrade_l1"]
        if o.alpha:
            embed = outputs["embed"]
            b, n, h = embed.shape
            labels = align_labels(int(o.loss_align), n, b)
            metrics["triplet"] = hardest_triplet_loss(embed.reshape(b * n, h), labels,
                                                      float(o.margin), o.triplet_distance)
            loss = loss + float(o.alpha) * metrics["triplet"]
        return loss, metrics

    def predict(self, outputs, batch):
        o = self.options
        coarse = outputs["coarse"]
        if "coarse_revert" in outputs:
            coarse = (coarse + 1.0 - outputs["coarse_revert"]) / 2.0
        out = {"coarse": coarse, "grade_probs": outputs["grade_probs"], "score_true": batch["score"]}
        if o.use_etf:
            out["subgrade"] = jnp.argmax(outputs["subgrade_logits"], axis=-1).astype(jnp.int32)
        return out

    def per_sample(self, predictions):
        scale = np.float32(self.options.label_scale)
        probs = np.asarray(predictions["grade_probs"])
        pred = np.asarray(predictions["coarse"], np.float32)
        if "subgrade" in predictions:
            pred = recouple(pred, predictions["subgrade"])
        columns = {
            "pred_scaled": pred,
            "score_pred": pred * scale,
            "score_true": np.asarray(predictions["score_true"], np.float32),
            "coarse_score": np.asarray(predictions["coarse"], np.float32) * scale,
            "grade": np.argmax(probs, axis=-1).astype(np.int32),
        }
        if "subgrade" in predictions:
            columns["subgrade"] = np.asarray(predictions["subgrade"], np.int32)
        for i in range(probs.shape[-1]):
            columns[f"grade_prob_{i}"] = probs[:, i]
        return columns

    def summarize(self, predictions):
        columns = self.per_sample(predictions)
        return regression_report(columns["score_pred"], columns["score_true"])

    def load_pretrained(self, variables):
        return variables  # no backbone: CoFInAl starts from its own random init
