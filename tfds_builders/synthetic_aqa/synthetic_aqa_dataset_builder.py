"""synthetic_aqa: procedural repetitive-movement videos with a known quality score.

Generated (no download), deterministic from the seed, one config per task. The score is a
known function of decrement, slowing, hesitation and irregularity (aqa_jax.data.synthetic);
train and test subjects are disjoint. Default size builds in seconds.

``*_tempo``: 48 frames of 32x32 whose score is the tempo alone
(``synthetic.generate_video(tempo=True)``: steady cycles of 10-20 frames, score
``4 * slowing``; the first design of benchmarks/pecop_effect.py), with a validation split;
96/32/64 train/validation/test subjects, for ``aqa-jax train`` runs on that task.

``*_vspp`` (PECoP's debug config): every video moves at one steady tempo (a 16-frame cycle, no
hesitation, jitter or decrement), so the one change of tempo in a VSPP clip is the segment
played faster; its score and factors are recorded but the factors are not visible.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from aqa_jax.data import synthetic
from aqa_jax.data.frames import encode_jpeg
from aqa_jax.data.tfds_base import AQABuilderConfig, AQAVideoBuilder


@dataclasses.dataclass
class SyntheticConfig(AQABuilderConfig):
    task: str = "finger_tapping"
    num_train: int = 192
    num_test: int = 48
    num_frames: int = 64
    size: int = 64
    seed: int = 0
    steady: bool = False  # synthetic.movement_trace: constant tempo and amplitude
    period: float | None = None  # synthetic.movement_trace: every video's cycle, in frames
    tempo: bool = False  # synthetic.generate_video: steady tempo of 10-20 frames, score 4 * slowing
    num_validation: int = 0  # > 0: a validation split of its own subjects


def _configs() -> list[SyntheticConfig]:
    return [
        SyntheticConfig(name=task, task=task, short_side=None, description=f"synthetic {task}")
        for task in synthetic.TASKS
    ] + [
        SyntheticConfig(name=f"{task}_tiny", task=task, short_side=None, num_train=8,
                        num_test=4, num_frames=40, size=32, description=f"tiny {task} for tests")
        for task in synthetic.TASKS
    ] + [
        SyntheticConfig(name=f"{task}_small", task=task, short_side=None, num_train=64,
                        num_test=32, description=f"small {task} for debug fine-tuning configs")
        for task in synthetic.TASKS
    ] + [
        SyntheticConfig(name=f"{task}_vspp", task=task, short_side=None, num_train=8,
                        num_test=16, num_frames=96, size=32, steady=True, period=16.0,
                        description=f"steady-tempo {task} for the PECoP (VSPP) debug config")
        for task in synthetic.TASKS
    ] + [
        SyntheticConfig(name=f"{task}_tempo", task=task, short_side=None, num_train=96,
                        num_validation=32, num_test=64, num_frames=48, size=32, tempo=True,
                        description=f"{task} scored by its tempo alone (10-20 frames a cycle)")
        for task in synthetic.TASKS
    ] + [
        SyntheticConfig(name="finger_tapping_256", task="finger_tapping", short_side=None,
                        num_train=16, num_test=4, num_frames=96, size=256,
                        description="full-resolution frames, for pipeline benchmarks")
    ]


class Builder(AQAVideoBuilder):
    """Synthetic AQA: repetitive movements scored from generative factors (0-4, UPDRS-like)."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {"1.0.0": "First release.", "1.1.0": "192/48 subjects per task, *_small configs.",
                     "1.2.0": "caption / caption_text commentary (synthetic.CAPTION_VOCAB ids)."}
    BUILDER_CONFIGS = _configs()

    def extra_features(self):
        return {
            "task": tfds.features.Text(),
            "subject": tfds.features.Scalar(dtype=np.int32),
            "label": tfds.features.ClassLabel(num_classes=5),
            "factors": tfds.features.Tensor(shape=(len(synthetic.FACTORS),), dtype=np.float32),
            "caption": tfds.features.Sequence(tfds.features.Scalar(dtype=np.int32)),
            "caption_text": tfds.features.Text(),
        }

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        splits = {
            "train": self._generate_examples("train", cfg.num_train),
            "test": self._generate_examples("test", cfg.num_test),
        }
        if cfg.num_validation:
            splits["validation"] = self._generate_examples("validation", cfg.num_validation)
        return splits

    def _generate_examples(self, split, num_subjects):
        cfg = self.builder_config
        vocab = {w: i for i, w in enumerate(synthetic.CAPTION_VOCAB)}
        for video in synthetic.generate_split(
            cfg.seed, cfg.task, split, num_subjects=num_subjects, num_frames=cfg.num_frames,
            size=cfg.size, steady=cfg.steady, period=cfg.period, tempo=cfg.tempo,
        ):
            key = f"{cfg.task}_{video.subject:06d}"
            words = synthetic.caption_tokens(cfg.task, video.factors)
            yield key, {
                "id": key,
                "frames": [encode_jpeg(f, quality=95) for f in video.frames],
                "num_frames": len(video.frames),
                "score": video.score,
                "task": cfg.task,
                "subject": video.subject // 10,
                "label": int(np.clip(round(video.score), 0, 4)),
                "factors": np.array([video.factors[f] for f in synthetic.FACTORS], np.float32),
                "caption": np.array([vocab[w] for w in words], np.int32),
                "caption_text": " ".join(words),
            }
