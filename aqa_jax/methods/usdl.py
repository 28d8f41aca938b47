"""USDL: Uncertainty-aware Score Distribution Learning (Tang et al., CVPR 2020; nzl-thu/MUSDL).

The I3D runs on each 16-frame clip, clip features are averaged, and an MLP 1024-256-128-K with
a softmax predicts a distribution over K score bins. Target: a Gaussian of std ``sigma`` (in
bins) centred at the score's bin position, evaluated at the bins and normalised
(``stats.norm.pdf(arange(K), loc, sigma)`` in ``MTL-AQA/dataset.py``). Loss: PyTorch's
``nn.KLDivLoss()`` with its default reduction, the **mean over every element** (batch x bins),
of ``target * (log target - log p)``. MUSDL (:mod:`aqa_jax.methods.musdl`) is the same with
one MLP per judge and the KL summed over judges.

Decoding: ``argmax`` (the official rule: bin index x bin width + ``score_min``) or
``expectation`` (the distribution's mean). Combining judges (MUSDL): ``diving`` sorts the
seven judge predictions and multiplies the sum of the middle three by the difficulty
(``MTL-AQA/main.py``); ``sum`` adds them (JIGSAWS' six GRS items).

``config.usdl``: ``num_bins``, ``score_min``, ``score_max`` (bin ``k`` is
``score_min + k * (score_max - score_min) / (num_bins - 1)``), ``sigma`` (bins), ``hidden``
((256, 128)), ``decoding``, and for MUSDL ``judge_key`` (record field with one score per
judge), ``num_judges``, ``combine``, ``judge_weights`` (optional, for ``sum``). The official settings: MTL-AQA USDL 101 bins over
0-104.5, sigma 5; MUSDL 7 judges x 21 bins over 0-10, sigma 5; JIGSAWS USDL 25 bins over
6-30, sigma 1; MUSDL 6 x 5 bins over 1-5, sigma 1.

BatchNorm batches (``config.clips.backbone_batches``, :mod:`aqa_jax.methods._score`): the
official MTL-AQA code runs the I3D once per clip position (``per_position``: ten BN batches
and ten running-statistics updates per step), its JIGSAWS code all clips as one batch
(``all_clips``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aqa_jax.methods._score import MLP, ScoreMethod, build_backbone, clip_features
from aqa_jax.models.i3d import InceptionI3d
from aqa_jax.models.precision import compute_dtype

DECODINGS = ("argmax", "expectation")
COMBINE_RULES = ("diving", "sum")


def gaussian_targets(position: jax.Array, num_bins: int, sigma: float) -> jax.Array:
    """Normalised ``N(position, sigma)`` densities at bins ``0..num_bins-1`` (last axis)."""
    bins = jnp.arange(num_bins, dtype=jnp.float32)
    logits = -0.5 * ((bins - position[..., None]) / sigma) ** 2
    return jax.nn.softmax(logits, axis=-1)  # = pdf / sum(pdf): the constant cancels


def kl_div_mean(log_probs: jax.Array, targets: jax.Array) -> jax.Array:
    """``nn.KLDivLoss()(log_probs, targets)``: mean over all elements, ``0 log 0 = 0``."""
    return jnp.mean(jax.scipy.special.xlogy(targets, targets) - targets * log_probs)


def combine_judges(judge_scores: np.ndarray, rule: str, difficulty: np.ndarray | None,
                   weights: Sequence[float] | None = None) -> np.ndarray:
    """(N, J) judge predictions → (N,) scores by the dataset's rule (see module docstring);
    ``sum`` weighs judge ``j`` by ``weights[j]`` when given."""
    if rule == "sum":
        return judge_scores @ np.asarray(weights, judge_scores.dtype) if weights else judge_scores.sum(-1)
    if rule == "diving":
        if judge_scores.shape[-1] != 7 or difficulty is None:
            raise ValueError("the diving rule needs 7 judges and the difficulty")
        return np.sort(judge_scores, -1)[:, 2:5].sum(-1) * difficulty
    raise ValueError(f"usdl.combine={rule!r}; use one of {COMBINE_RULES}")


class DistributionNetwork(nn.Module):
    """I3D per clip → mean over clips → one MLP per judge → (B, J, K) logits."""

    backbone: InceptionI3d
    num_heads: int
    num_bins: int
    hidden: tuple[int, ...] = (256, 128)
    from_features: bool = False
    dtype: Any = jnp.float32  # the MLPs' hidden layers (config.compute_dtype)
    # one backbone (BN) batch per clip position; None: the backbone's (config.clips.backbone_batches)
    per_position: bool | None = None

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], *, train: bool,
                 use_running_average: bool | None = None) -> dict[str, jax.Array]:
        features, _ = clip_features(self.backbone, batch["clip"], train=train,
                                    use_running_average=use_running_average,
                                    from_features=self.from_features,
                                    per_position=self.per_position)
        pooled = features.mean(axis=-2)
        heads = [MLP((*self.hidden, self.num_bins), self.dtype, name=f"head_{j}")(pooled)
                 for j in range(self.num_heads)]
        return {"logits": jnp.stack(heads, axis=1), "features": pooled}


class Method(ScoreMethod):
    """USDL (one head on ``score``) or, with ``usdl.judge_key``, MUSDL (see module docstring)."""

    def __init__(self, config):
        super().__init__(config)
        u = config.usdl
        if u.get("decoding", "argmax") not in DECODINGS:
            raise ValueError(f"usdl.decoding={u.decoding!r}; use one of {DECODINGS}")
        self.judge_key = u.get("judge_key") or None
        self.num_heads = int(u.get("num_judges", 1)) if self.judge_key else 1
        if self.judge_key:
            self.label_keys = (self.judge_key, "difficulty") if u.combine == "diving" else (self.judge_key,)
        self.bin_width = (u.score_max - u.score_min) / (u.num_bins - 1)

    def absent_target_values(self):
        if not self.judge_key:
            return {}
        return {self.judge_key: np.full(self.num_heads, np.nan, np.float32)}

    def build_model(self) -> DistributionNetwork:
        u = self.config.usdl
        return DistributionNetwork(build_backbone(self.config), self.num_heads, int(u.num_bins),
                                   tuple(u.get("hidden", (256, 128))),
                                   dtype=compute_dtype(self.config))

    def _targets(self, batch) -> jax.Array:
        u = self.config.usdl
        values = batch[self.judge_key] if self.judge_key else batch["score"][:, None]
        position = (values.astype(jnp.float32) - u.score_min) / self.bin_width
        return gaussian_targets(position, int(u.num_bins), float(u.sigma))

    def loss(self, outputs, batch):
        log_probs = jax.nn.log_softmax(outputs["logits"], axis=-1)  # (B, J, K)
        targets = self._targets(batch)
        per_judge = jax.vmap(kl_div_mean, in_axes=(1, 1))(log_probs, targets)
        return per_judge.sum(), {"kl": per_judge.mean()}

    def predict(self, outputs, batch):
        u = self.config.usdl
        probs = jax.nn.softmax(outputs["logits"], axis=-1)
        values = u.score_min + self.bin_width * jnp.arange(u.num_bins, dtype=jnp.float32)
        mean = jnp.sum(probs * values, axis=-1)  # (B, J)
        std = jnp.sqrt(jnp.maximum(jnp.sum(probs * values**2, axis=-1) - mean**2, 0.0))
        argmax = u.score_min + self.bin_width * jnp.argmax(probs, axis=-1).astype(jnp.float32)
        out = {
            "judge_pred": argmax if u.get("decoding", "argmax") == "argmax" else mean,
            "judge_mean": mean, "judge_std": std,
            "score_true": batch["score"],
        }
        if self.judge_key:
            out["judge_true"] = batch[self.judge_key]
        if "difficulty" in batch:
            out["difficulty"] = batch["difficulty"]
        return out

    def per_sample(self, predictions):
        judges = np.asarray(predictions["judge_pred"])
        if not self.judge_key:
            return {"score_pred": judges[:, 0], "score_true": predictions["score_true"],
                    "score_mean": predictions["judge_mean"][:, 0],
                    "score_std": predictions["judge_std"][:, 0]}
        score = combine_judges(judges, self.config.usdl.combine, predictions.get("difficulty"),
                               self.config.usdl.get("judge_weights") or None)
        return {"score_pred": score, "score_true": predictions["score_true"]}
