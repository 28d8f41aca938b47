"""synthetic_features: generated per-clip feature sequences with a known score (no download).

The clip-feature counterpart of ``synthetic_aqa``, in the record layout of
``rhythmic_gymnastics`` / ``fis_v`` (``id``, ``features`` (num_clips, feature_dim) float32,
``num_clips``, ``score``), so the feature methods (CoFInAl, GDLT) run without a download and
their debug configs train in seconds.

Each video (deterministic from the config's seed and its index) has a difficulty
``d ~ U(0, 1)``, an execution level ``s ~ U(0, 1)``, a length ``T ~ U{min_clips..max_clips}``
and per-clip execution qualities ``e_t = clip(s + 0.15 z_t, 0, 1)``. Its score is the known
function (RG-like range 0-25, rounded to 3 decimals as judges' totals):

    score = 10 d + 15 mean_t(e_t)

Its clip features are ``x_t = m + n_t + a (e_t - 0.5) u_e + a (d - 0.5) u_d`` with ``u_e``,
``u_d`` two fixed orthonormal directions (drawn from the seed), ``a`` = 4 (config ``signal``),
``m ~ N(0, 0.3² I)`` a per-video nuisance (``nuisance``) and ``n_t ~ N(0, I)`` per-clip noise:
the score is readable only by pooling over the whole video (a training window of fewer clips
sees a noisy part of it, as with real routines). The ``factors`` feature stores
``(d, mean_t e_t)``; train and test videos are disjoint draws.

Configs: ``default`` (200 train / 50 test videos, 40-140 clips of 1024-d, RG-sized) and
``small`` (128 / 64 videos, 10-40 clips of 256-d, for the debug configs).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from aqa_jax.data.tfds_base import AQABuilderConfig, AQAVideoBuilder

DIFFICULTY_WEIGHT, EXECUTION_WEIGHT = 10.0, 15.0


@dataclasses.dataclass
class SyntheticFeaturesConfig(AQABuilderConfig):
    num_train: int = 200
    num_test: int = 50
    min_clips: int = 40
    max_clips: int = 140
    feature_dim: int = 1024
    signal: float = 4.0
    nuisance: float = 0.3
    seed: int = 0


def known_score(difficulty: float, qualities: np.ndarray) -> float:
    """The ground truth: ``10 d + 15 mean(e)``, rounded to 3 decimals."""
    return round(DIFFICULTY_WEIGHT * difficulty + EXECUTION_WEIGHT * float(np.mean(qualities)), 3)


def directions(seed: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The two fixed orthonormal signal directions (u_e, u_d) of a config."""
    q, _ = np.linalg.qr(np.random.default_rng([seed, 1]).standard_normal((dim, 2)))
    return q[:, 0], q[:, 1]


def generate_video(cfg: SyntheticFeaturesConfig, split: str, index: int) -> dict:
    """One video's features, score and factors (see module docstring)."""
    rng = np.random.default_rng([cfg.seed, {"train": 0, "test": 1}[split], index])
    u_e, u_d = directions(cfg.seed, cfg.feature_dim)
    difficulty, level = rng.uniform(0, 1, 2)
    num_clips = int(rng.integers(cfg.min_clips, cfg.max_clips + 1))
    quality = np.clip(level + 0.15 * rng.standard_normal(num_clips), 0.0, 1.0)
    nuisance = cfg.nuisance * rng.standard_normal(cfg.feature_dim)
    features = (nuisance[None] + rng.standard_normal((num_clips, cfg.feature_dim))
                + cfg.signal * (quality[:, None] - 0.5) * u_e[None]
                + cfg.signal * (difficulty - 0.5) * u_d[None])
    return {
        "features": features.astype(np.float32),
        "num_clips": num_clips,
        "score": np.float32(known_score(difficulty, quality)),
        "factors": np.array([difficulty, quality.mean()], np.float32),
    }


class Builder(AQAVideoBuilder):
    """Synthetic clip features whose score is a known function of the clips (see docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        SyntheticFeaturesConfig(name="default", short_side=None,
                                description="RG-sized: 200/50 videos, 40-140 clips of 1024-d"),
        SyntheticFeaturesConfig(name="small", short_side=None, num_train=128, num_test=64,
                                min_clips=10, max_clips=40, feature_dim=256,
                                description="debug size: 128/64 videos, 10-40 clips of 256-d"),
    ]

    def core_features(self):
        return {
            "id": tfds.features.Text(),
            "features": tfds.features.Tensor(shape=(None, self.builder_config.feature_dim),
                                             dtype=np.float32),
            "num_clips": tfds.features.Scalar(dtype=np.int32),
            "score": tfds.features.Scalar(dtype=np.float32),
        }

    def extra_features(self):
        return {"factors": tfds.features.Tensor(shape=(2,), dtype=np.float32)}

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        return {"train": self._generate_examples("train", cfg.num_train),
                "test": self._generate_examples("test", cfg.num_test)}

    def _generate_examples(self, split, count):
        for i in range(count):
            key = f"{split}_{i:05d}"
            yield key, {"id": key, **generate_video(self.builder_config, split, i)}
