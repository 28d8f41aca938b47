"""``aqa-jax evaluate``: a trained run's checkpoint on a split, with per-sample predictions.

The run's own config (saved in its workdir) rebuilds its
:class:`~aqa_jax.experiment.Experiment`: the network, the clip layout and the
method's protocol (CoRe's group boundaries and exemplar pools included); the checkpoint's
state is restored onto this machine's devices. The split can be another dataset's, e.g. a
FineDiving model on MTL-AQA's test split, in which case the overlap between the two datasets
is checked: 1369 FineDiving instances are MTL-AQA samples and the two splits do not align
(268 MTL-AQA test samples are FineDiving training samples), so such an evaluation scores
videos the model was trained on; the shared samples are named in a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from aqa_jax.experiment import load_run_config  # noqa: F401  (also this module's public name)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def mtl_aqa_keys(source: Sequence[Mapping[str, Any]], dataset: str) -> set[str]:
    """The MTL-AQA sample ids (``"01_05"``) among a split's records: MTL-AQA's own ids, or
    FineDiving's ``mtl_aqa_key`` (empty for instances that are not from MTL-AQA)."""
    if dataset == "mtl_aqa":
        return {_text(source[i]["id"]) for i in range(len(source))}
    if dataset == "fine_diving":
        return {k for k in (_text(source[i]["mtl_aqa_key"]) for i in range(len(source))) if k}
    return set()


def training_overlap(train_source: Sequence[Mapping[str, Any]], train_dataset: str,
                     eval_source: Sequence[Mapping[str, Any]], eval_dataset: str) -> list[str]:
    """MTL-AQA ids present in both the training split and the evaluated split when one is
    FineDiving and the other MTL-AQA (see module docstring); empty otherwise."""
    if {train_dataset, eval_dataset} != {"fine_diving", "mtl_aqa"}:
        return []
    return sorted(mtl_aqa_keys(train_source, train_dataset) & mtl_aqa_keys(eval_source, eval_dataset))


def evaluate_run(
    workdir: str | Path, *, step: int | None = None, dataset: str | None = None,
    split: str | None = None, data_dir: str | None = None,
) -> dict[str, Any]:
    """Evaluates checkpoint ``step`` (default: the latest) of a run on ``split`` of ``dataset``
    (``name`` or ``name/config``; default: the run's own evaluation split). Writes
    ``predictions_<tag>.csv`` and ``scatter_<tag>.png`` into the workdir; returns the summary
    with ``step``, ``split`` and ``overlap`` (shared MTL-AQA/FineDiving ids, see above)."""
    from aqa_jax.experiment import Experiment

    workdir = Path(workdir)
    config = load_run_config(workdir)
    d = config.data
    if data_dir:
        d.data_dir = data_dir
    if dataset:
        name, _, builder_config = dataset.partition("/")
        d.eval_name, d.eval_config = name, builder_config or None
    if split:
        d.eval_split = split
    if not d.get("eval_split"):
        raise ValueError("the run has no evaluation split: pass --split")
    exp = Experiment.from_config(config, workdir)
    step = exp.checkpoint_step(step)
    state = exp.restore(step)
    eval_name = d.get("eval_name") or d.name
    overlap = training_overlap(exp.train_source, d.name, exp.eval_source, eval_name)
    if overlap:
        logging.warning(
            "%d of the %d evaluated %s samples are in the %s training split this model was "
            "trained on (the FineDiving and MTL-AQA splits overlap), e.g. %s; their scores are "
            "not a held-out test", len(overlap), len(exp.eval_source), eval_name, d.name,
            ", ".join(overlap[:5]))
    if config.get("precompute_features"):
        exp.use_feature_cache(state)
    summary, columns = exp.evaluate(state)
    tag = d.eval_split if eval_name == d.name else f"{eval_name}_{d.eval_split}"
    exp.write_evaluation(tag, summary, columns,
                         title=f"{config.method} step {step} on {eval_name}:{d.eval_split}")
    return {"step": step, "split": tag, "overlap": overlap, **summary}
