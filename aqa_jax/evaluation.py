"""``aqa-jax evaluate``: a trained run's checkpoint on a split, with per-sample predictions.

The run's own config (saved in its workdir) rebuilds the network, the clip layout and the
method's protocol (CoRe's group boundaries and exemplar pools included); the checkpoint's
state is restored onto this machine's devices. The split can be another dataset's, e.g. a
FineDiving model on MTL-AQA's test split, in which case the overlap between the two datasets
is checked: 1369 FineDiving instances are MTL-AQA samples and the two splits do not align
(268 MTL-AQA test samples are FineDiving training samples), so such an evaluation scores
videos the model was trained on; the shared samples are named in a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import ml_collections


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


def load_run_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a run was trained with (``config.json`` in its workdir)."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {workdir} the --workdir of an aqa-jax training run?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def evaluate_run(
    workdir: str | Path, *, step: int | None = None, dataset: str | None = None,
    split: str | None = None, data_dir: str | None = None,
) -> dict[str, Any]:
    """Evaluates checkpoint ``step`` (default: the latest) of a run on ``split`` of ``dataset``
    (``name`` or ``name/config``; default: the run's own evaluation split). Writes
    ``predictions_<tag>.csv`` and ``scatter_<tag>.png`` into the workdir; returns the summary
    with ``step``, ``split`` and ``overlap`` (shared MTL-AQA/FineDiving ids, see above)."""
    from aqa_jax.train import loop
    from aqa_jax.train.checkpoint import Checkpointer
    from aqa_jax.train.step import make_predict_step

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
    run = loop._Run(config, workdir)
    ckpt = Checkpointer(workdir, read_only=True)
    step = ckpt.checked_step(step)
    state = ckpt.restore(step, run.abstract_state())
    ckpt.close()
    eval_name = d.get("eval_name") or d.name
    overlap = training_overlap(run.train_source, d.name, run.eval_source, eval_name)
    if overlap:
        logging.warning(
            "%d of the %d evaluated %s samples are in the %s training split this model was "
            "trained on (the FineDiving and MTL-AQA splits overlap), e.g. %s; their scores are "
            "not a held-out test", len(overlap), len(run.eval_source), eval_name, d.name,
            ", ".join(overlap[:5]))
    if config.get("precompute_features"):
        run.use_feature_cache(state)
    predict_step = jax.jit(make_predict_step(run.method, run.step_model),
                           in_shardings=(run.shardings, run.batch_shardings(0)))
    summary, columns = loop.evaluate(run, state, predict_step)
    tag = d.eval_split if eval_name == d.name else f"{eval_name}_{d.eval_split}"
    loop.write_evaluation(run, tag, summary, columns,
                          title=f"{config.method} step {step} on {eval_name}:{d.eval_split}")
    return {"step": step, "split": tag, "overlap": overlap, **summary}
