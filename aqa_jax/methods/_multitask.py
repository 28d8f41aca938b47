"""What the MTL-AQA multitask models (C3D-AVG, MSCADC; Parmar & Morris, CVPR 2019) share.

Tasks (``config.mtl.tasks``, any set containing ``score``; the paper's Table 4 rows are
``score``, ``score,cls``, ``score,caps``, ``score,cls,caps``):

- ``score``: a regressed value trained on ``score / score_scale`` (``final_score_std = 17``
  in ``opts.py``) with ``MSELoss + L1Loss``; predictions are reported in the dataset's units.
- ``cls``: one classifier per ``config.mtl.class_fields`` entry (MTL-AQA: position 3,
  armstand 2, rotation type 4, somersaults 10, twists 8), the sum of their cross-entropies,
  weight ``cls_weight`` (1 in the official code).
- ``caps``: the S2VT GRU captioner (:mod:`aqa_jax.models.captioner`) with teacher forcing;
  ``LanguageModelCriterion``: token NLL masked up to the first ``<eos>``, summed and divided
  by the batch size, times ``caption_weight`` (0.01).

Evaluation: SRCC / R-ℓ2 / L2 of the score, per-field accuracy ``acc_<field>``, and BLEU-1..4
and ROUGE-L of the decoded captions (greedy, the official rule, or beam search) against the
dataset's caption (truncated to ``max_len`` as in training). The caption vocabulary (id →
word) is read from the training split's ``caption`` / ``caption_text`` pairs by
:meth:`MultitaskMethod.prepare` and saved in the run's config (``mtl.vocab``), so evaluation
and prediction decode ids without the dataset.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aqa_jax.caption_metrics import caption_report
from aqa_jax.methods._score import ScoreMethod
from aqa_jax.metrics import regression_report
from aqa_jax.models.captioner import S2VTCaptioner, caption_vocab, pad_caption, tokens_until_eos
from aqa_jax.steps import Schedule

TASKS = ("score", "cls", "caps")
# The MTL-AQA sub-action classes (reference aqa_methods.md §5.1).
MTL_AQA_CLASSES = {"position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8}


def parse_tasks(tasks: Any) -> tuple[str, ...]:
    """``'score,cls'`` / ``('score', 'caps')`` → a validated tuple in canonical order."""
    names = [t.strip() for t in (tasks.replace("+", ",").split(",") if isinstance(tasks, str) else tasks)]
    unknown = sorted(set(names) - set(TASKS))
    if unknown or "score" not in names:
        raise ValueError(f"mtl.tasks={tasks!r}: choose a set of {TASKS} that contains 'score'")
    return tuple(t for t in TASKS if t in names)


@dataclasses.dataclass(frozen=True)
class CaptionExample:
    """Wraps a clip sampler: the record's caption becomes fixed-length ``caption`` ids and a
    ``caption_mask`` (:func:`~aqa_jax.models.captioner.pad_caption`)."""

    inner: Any
    max_len: int

    def __call__(self, record: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, Any]:
        example = self.inner(record, rng)
        ids, mask = pad_caption(example["caption"], self.max_len)
        example["caption"], example["caption_mask"] = ids, mask
        return example


def caption_outputs(captioner: S2VTCaptioner, features: jax.Array, batch: Mapping[str, jax.Array], *,
                    train: bool, decode: str, beam_size: int) -> dict[str, jax.Array]:
    """The captioner's network outputs: teacher-forced ``caption_logp`` in training, decoded
    ``caption_ids`` otherwise (features in float32: the GRUs run in float32 under bf16)."""
    features = features.astype(jnp.float32)
    if train:
        return {"caption_logp": captioner(features, batch["caption"], train=True)}
    return {"caption_ids": captioner(features, decode=decode, beam_size=beam_size)}


class MultitaskMethod(ScoreMethod):
    """Score, classification and captioning heads on a video body (module docstring).

    The network returns ``score`` (B,), ``logits_<field>`` and, with captions, the
    teacher-forced ``caption_logp`` (training) or the decoded ``caption_ids`` (evaluation).
    """

    def __init__(self, config):
        super().__init__(config)
        m = config.mtl
        self.tasks = parse_tasks(m.tasks)
        self.class_fields = dict(m.class_fields) if "cls" in self.tasks else {}
        self.captions = "caps" in self.tasks
        self.label_keys = (*self.class_fields, *(("caption",) if self.captions else ()))
        self.score_scale = float(m.get("score_scale", 1.0))

    # --- data --------------------------------------------------------------------------------
    def prepare(self, train_source, schedule: Schedule | None = None) -> None:
        """The caption vocabulary of the training split, unless ``mtl.vocab`` gives it (the
        schedule is not needed)."""
        m = self.config.mtl
        if self.captions and not list(m.get("vocab", [])):
            vocab = caption_vocab(train_source[i] for i in range(len(train_source)))
            m.vocab = vocab
            m.vocab_size = max(int(m.get("vocab_size", 0) or 0), len(vocab))

    def clip_sampler(self, train: bool):
        sampler = super().clip_sampler(train)
        return CaptionExample(sampler, int(self.config.mtl.max_len)) if self.captions else sampler

    def absent_target_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {f: np.int64(0) for f in self.class_fields}
        if self.captions:
            values["caption"] = np.array([1, 0], np.int32)  # "<sos> <eos>": never read
        return values

    def captioner(self) -> S2VTCaptioner:
        m = self.config.mtl
        if not int(m.get("vocab_size", 0) or 0):
            raise ValueError("mtl.vocab_size is unknown: call Method.prepare(train_source) first")
        return S2VTCaptioner(int(m.vocab_size), int(m.max_len), int(m.hidden), int(m.word_dim),
                             int(m.num_layers), float(m.dropout), float(m.get("length_penalty", 0.0)))

    def caption_call(self) -> dict[str, Any]:
        """Decoding options passed to the captioner in evaluation."""
        return dict(decode=self.config.mtl.get("decode", "greedy"),
                    beam_size=int(self.config.mtl.get("beam_size", 5)))

    def load_pretrained(self, variables: dict[str, Any]) -> dict[str, Any]:
        """The C3D body from ``config.init_from`` (``aqa-jax convert-weights`` output, a
        PyTorch C3D state dict, or ``none``)."""
        from aqa_jax.weights.c3d_convert import load_c3d_backbone

        return load_c3d_backbone(variables, self.config.get("init_from", "none"))

    # --- training ----------------------------------------------------------------------------
    def score_loss(self, pred: jax.Array, target: jax.Array) -> jax.Array:
        """``MSELoss + L1Loss`` of the scaled score."""
        diff = pred - target
        return jnp.mean(diff**2) + jnp.mean(jnp.abs(diff))

    def loss(self, outputs, batch):
        m = self.config.mtl
        target = batch["score"].astype(jnp.float32) / self.score_scale
        loss_score = self.score_loss(outputs["score"], target)
        total, metrics = loss_score, {"loss_score": loss_score}
        if self.class_fields:
            ce = {f: optax.softmax_cross_entropy_with_integer_labels(
                outputs[f"logits_{f}"], batch[f].astype(jnp.int32)).mean() for f in self.class_fields}
            loss_cls = sum(ce.values())
            total = total + float(m.get("cls_weight", 1.0)) * loss_cls
            metrics["loss_cls"] = loss_cls
            for f in self.class_fields:
                hit = jnp.argmax(outputs[f"logits_{f}"], -1) == batch[f]
                metrics[f"acc_{f}"] = hit.astype(jnp.float32).mean()
        if self.captions:
            targets, mask = batch["caption"][:, 1:], batch["caption_mask"][:, 1:]
            nll = -jnp.take_along_axis(outputs["caption_logp"], targets[..., None], -1)[..., 0]
            loss_caps = jnp.sum(nll * mask) / targets.shape[0]
            total = total + float(m.get("caption_weight", 0.01)) * loss_caps
            metrics["loss_caption"] = loss_caps
        return total, metrics

    # --- evaluation --------------------------------------------------------------------------
    def predict(self, outputs, batch):
        out = {"score_pred": outputs["score"] * self.score_scale, "score_true": batch["score"]}
        for f in self.class_fields:
            out[f"{f}_pred"] = jnp.argmax(outputs[f"logits_{f}"], -1)
            out[f"{f}_true"] = batch[f]
        if self.captions:
            out["caption_pred"] = outputs["caption_ids"]
            out["caption_true"] = batch["caption"]
        return out

    def _texts(self, predictions: Mapping[str, np.ndarray]) -> tuple[list[list[str]], list[list[str]]]:
        vocab = list(self.config.mtl.vocab)
        hyps = [tokens_until_eos(ids, vocab, skip_sos=False) for ids in predictions["caption_pred"]]
        refs = [tokens_until_eos(ids, vocab) for ids in predictions["caption_true"]]
        return refs, hyps

    def per_sample(self, predictions):
        columns = {k: np.asarray(predictions[k]) for k in ("score_pred", "score_true")}
        for f in self.class_fields:
            columns[f"{f}_pred"] = np.asarray(predictions[f"{f}_pred"])
            columns[f"{f}_true"] = np.asarray(predictions[f"{f}_true"])
        if self.captions:
            refs, hyps = self._texts(predictions)
            columns["caption_pred"] = np.array([" ".join(h) for h in hyps], dtype=object)
            columns["caption_true"] = np.array([" ".join(r) for r in refs], dtype=object)
        return columns

    def summarize(self, predictions):
        summary = regression_report(np.asarray(predictions["score_pred"]), np.asarray(predictions["score_true"]))
        for f in self.class_fields:
            summary[f"acc_{f}"] = float(np.mean(np.asarray(predictions[f"{f}_pred"]) == np.asarray(predictions[f"{f}_true"])))
        if self.captions:
            summary.update(caption_report(*self._texts(predictions)))
        return summary
