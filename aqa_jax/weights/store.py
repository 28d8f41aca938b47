"""Saving and loading converted model weights as an orbax checkpoint plus a model spec.

Layout of a weights directory::

    DIR/model.json      the InceptionI3d fields needed to rebuild the model, and provenance
    DIR/variables/      orbax checkpoint of {'params', 'batch_stats'} (+ 'heads' if any)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import orbax.checkpoint as ocp

from aqa_jax.models.i3d import InceptionI3d

_SPEC_FIELDS = ("variant", "adapter_blocks", "adapter_reduction", "adapter_zero_init", "num_classes")


def model_spec(model: InceptionI3d) -> dict[str, Any]:
    """The JSON-able fields that rebuild ``model``."""
    spec = {name: getattr(model, name) for name in _SPEC_FIELDS}
    spec["adapter_blocks"] = list(spec["adapter_blocks"])
    return spec


def save_model_weights(
    directory: str | os.PathLike[str],
    model: InceptionI3d,
    variables: Mapping[str, Any],
    *,
    heads: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``variables`` (and optional extra ``heads``) with the model spec to ``directory``."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    tree = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    if heads:
        tree["heads"] = dict(heads)
    tree = _to_numpy(tree)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "variables", tree, force=True)
    meta = {"model": model_spec(model), "provenance": dict(provenance or {})}
    (directory / "model.json").write_text(json.dumps(meta, indent=2))
    return directory


def load_model_weights(
    directory: str | os.PathLike[str],
) -> tuple[InceptionI3d, dict[str, Any], dict[str, Any]]:
    """Reads a directory written by :func:`save_model_weights`: (model, variables, heads)."""
    directory = Path(directory).absolute()
    spec_file = directory / "model.json"
    if not spec_file.is_file():
        raise FileNotFoundError(
            f"{directory} is not an aqa_jax weights directory (no model.json); create one with "
            "`aqa-jax convert-weights SRC DST`"
        )
    spec = json.loads(spec_file.read_text())["model"]
    if "arch" in spec:  # a C3D directory (aqa_jax.weights.c3d_convert)
        raise ValueError(
            f"{directory} holds {spec['arch']} weights, not an I3D: use it as init_from of a C3D "
            "method (configs/c3d_avg.py, configs/mscadc.py)"
        )
    spec["adapter_blocks"] = tuple(spec["adapter_blocks"])
    model = InceptionI3d(**spec)
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(directory / "variables")
    tree = _to_numpy(tree)
    heads = tree.pop("heads", {})
    return model, tree, heads


def _to_numpy(tree: Any) -> Any:
    import jax

    return jax.tree.map(np.asarray, tree)
