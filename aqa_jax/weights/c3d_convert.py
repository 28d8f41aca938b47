"""Converters from PyTorch C3D checkpoints to :mod:`aqa_jax.models.c3d`, and their weight store.

Two source layouts (``torch.nn.Module.state_dict`` key names of the official code):

- ``c3d`` — DavideA/c3d-pytorch ``C3D_model.py``, whose Sports-1M weights ``c3d.pickle`` (a
  plain torch state dict) MTL-AQA's C3D-AVG loads: ``conv1.weight``/``bias`` ... ``conv5b``,
  ``fc6``, ``fc7``, ``fc8``. MTL-AQA's ``C3D_altered`` (the same body without fc layers) has
  the same conv keys. Target :class:`~aqa_jax.models.c3d.C3D`.
- ``c3d_dilated`` — MTL-AQA ``models/MSCADC/body.py`` ``C3D_dilated_body``: ``conv1`` ...
  ``conv5b`` plus BatchNorm ``bn1``, ``bn2``, ``bn3a`` ... ``bn5b`` (``weight``, ``bias``,
  ``running_mean``, ``running_var``, ``num_batches_tracked``). Target
  :class:`~aqa_jax.models.c3d.C3DDilated`.

Every key is accounted for both ways: each conv (and BN) key the architecture needs must be
present with its layer-table shape, every other key is an error naming it, except

- ``fcN.weight``/``fcN.bias`` (N = 6, 7, 8) of ``c3d``: **returned separately** in
  :attr:`ConvertedC3D.fc` (``{'fc6': {'kernel': (in, out), 'bias': (out,)}, ...}``) and saved
  under ``heads`` in the weights directory, never put into the backbone. The C3D-AVG body stops
  at pool5 and the official ``train_test_C3DAVG.py`` builds a fresh ``my_fc6`` (its
  ``{k: v ... if k in model_dict}`` filter drops the pickle's fc layers), so they are unused by
  default; ``fc6`` applies unchanged to :class:`~aqa_jax.models.c3d.C3D`'s (C, T, H, W)-order
  features if a method wants it. fc layers are optional (``C3D_altered`` checkpoints lack them).
- BN ``num_batches_tracked`` counters: listed in :attr:`ConvertedC3D.ignored`.
- with ``allow_unexpected=True``, any other key is listed in ``ignored`` instead of raising:
  the official loaders' lenient filter, for checkpoints with extra modules.

Conv weights (O, I, kt, kh, kw) become kernels (kt, kh, kw, I, O); BN weight/bias become
``scale``/``bias`` and running_mean/var ``batch_stats`` ``mean``/``var``.

Weights directory (same shape as :mod:`aqa_jax.weights.store`, which holds I3Ds)::

    DIR/model.json   {"model": {"arch": "c3d" | "c3d_dilated"}, "provenance": {...}}
    DIR/variables/   orbax checkpoint of {'params', ['batch_stats'], ['heads']}

:func:`load_c3d_backbone` fills a network's ``backbone`` subtree from such a directory, or
directly from a ``.pickle``/``.pt``/``.pth`` file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from aqa_jax.models.c3d import C3D, C3D_DILATED_LAYERS, C3D_LAYERS, C3DDilated
from aqa_jax.weights.assign import ConversionError, FlatPath, fill_variables

ARCHS = ("c3d", "c3d_dilated")
FC_LAYERS = ("fc6", "fc7", "fc8")
BACKBONE = "backbone"
_BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


@dataclass
class ConvertedC3D:
    """A PyTorch C3D state dict in our layout.

    Attributes:
      arch: ``'c3d'`` or ``'c3d_dilated'``.
      weights: flat ``{(collection, *path): array}`` for :func:`c3d_model` ``(arch)``.
      fc: the ``c3d`` layout's fully connected layers, ``{'fc6': {'kernel': (in, out),
        'bias': (out,)}, ...}`` (Flax ``nn.Dense`` layout); empty if the checkpoint has none.
      ignored: source keys deliberately dropped (BN counters; unexpected keys when allowed).
    """

    arch: str
    weights: dict[FlatPath, np.ndarray]
    fc: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def c3d_model(arch: str) -> C3D | C3DDilated:
    """The module a converted ``arch`` fills (default attributes)."""
    if arch == "c3d":
        return C3D()
    if arch == "c3d_dilated":
        return C3DDilated()
    raise ValueError(f"unknown C3D arch {arch!r}; choose one of {ARCHS}")


def detect_c3d_arch(state: Mapping[str, Any]) -> str | None:
    """``'c3d_dilated'`` if the keys have ``bn1.*``, ``'c3d'`` if ``conv1.weight``, else None."""
    keys = {_strip(k) for k in state}
    if "conv1.weight" not in keys:
        return None
    return "c3d_dilated" if any(k.startswith("bn1.") for k in keys) else "c3d"


def _strip(key: str) -> str:
    while key.startswith("module."):  # DataParallel
        key = key[len("module.") :]
    return key


def _numpy(value: Any) -> np.ndarray:
    return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)


def _expected(arch: str) -> dict[str, tuple[FlatPath, tuple[int, ...], bool]]:
    """torch key → (our flat path, torch shape, is conv weight) for every key ``arch`` needs."""
    out: dict[str, tuple[FlatPath, tuple[int, ...], bool]] = {}
    if arch == "c3d":
        for name, cin, cout in C3D_LAYERS:
            out[f"{name}.weight"] = (("params", name, "kernel"), (cout, cin, 3, 3, 3), True)
            out[f"{name}.bias"] = (("params", name, "bias"), (cout,), False)
        return out
    for name, cin, cout, _, _ in C3D_DILATED_LAYERS:
        out[f"{name}.weight"] = (("params", name, "conv", "kernel"), (cout, cin, 3, 3, 3), True)
        out[f"{name}.bias"] = (("params", name, "conv", "bias"), (cout,), False)
        bn = "bn" + name[len("conv") :]
        for leaf, (collection, ours) in _BN_LEAVES.items():
            out[f"{bn}.{leaf}"] = ((collection, name, "bn", ours), (cout,), False)
    return out


def convert_c3d_state_dict(
    state: Mapping[str, Any],
    arch: str | None = None,
    *,
    allow_unexpected: bool = False,
) -> ConvertedC3D:
    """Converts a PyTorch C3D / C3D_dilated_body state dict (torch or numpy values).

    Args:
      state: the state dict (``module.`` prefixes of DataParallel are dropped).
      arch: ``'c3d'`` or ``'c3d_dilated'``; detected from the keys by default.
      allow_unexpected: list keys that belong to neither layout in ``ignored`` instead of
        raising (the official loaders' ``if k in model_dict`` filter).

    Raises:
      ConversionError: naming every missing key, every unexpected key and every key whose
        shape is not the layer table's.
    """
    arch = arch or detect_c3d_arch(state)
    if arch is None:
        raise ConversionError(
            f"this is not a C3D state dict (no conv1.weight; first keys: {list(state)[:5]})"
        )
    if arch not in ARCHS:
        raise ValueError(f"unknown C3D arch {arch!r}; choose one of {ARCHS}")
    arrays = {_strip(k): _numpy(v) for k, v in state.items()}
    expected = _expected(arch)
    converted = ConvertedC3D(arch=arch, weights={})
    unexpected, bad_shape = [], []
    fc_parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        module, _, leaf = key.rpartition(".")
        if key in expected:
            path, shape, is_kernel = expected[key]
            if value.shape != shape:
                bad_shape.append(f"{key}: {value.shape}, expected {shape}")
                continue
            if is_kernel:  # (O, I, kt, kh, kw) → (kt, kh, kw, I, O)
                value = np.ascontiguousarray(np.transpose(value, (2, 3, 4, 1, 0)))
            converted.weights[path] = value
        elif arch == "c3d_dilated" and leaf == "num_batches_tracked" and module.startswith("bn"):
            converted.ignored.append(key)
        elif arch == "c3d" and module in FC_LAYERS and leaf in ("weight", "bias"):
            fc_parts.setdefault(module, {})[leaf] = value
        elif allow_unexpected:
            converted.ignored.append(key)
        else:
            unexpected.append(key)
    missing = [k for k in expected if k not in arrays]
    for name, parts in sorted(fc_parts.items()):
        if set(parts) != {"weight", "bias"}:
            missing.extend(f"{name}.{leaf}" for leaf in ("weight", "bias") if leaf not in parts)
            continue
        w, b = parts["weight"], parts["bias"]
        if w.ndim != 2 or b.shape != (w.shape[0],):
            bad_shape.append(f"{name}: weight {w.shape} and bias {b.shape} are not a Linear layer")
            continue
        converted.fc[name] = {"kernel": np.ascontiguousarray(w.T), "bias": b}
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing keys: {missing}")
        if unexpected:
            parts.append(
                f"unexpected keys: {unexpected} (pass allow_unexpected=True to drop them as the "
                "official loader does)"
            )
        if bad_shape:
            parts.append(f"shape mismatches: {bad_shape}")
        raise ConversionError(f"not a {arch} state dict: " + "; ".join(parts))
    return converted


def c3d_variables(converted: ConvertedC3D) -> dict[str, Any]:
    """The full variables (``params`` [+ ``batch_stats``]) of :func:`c3d_model` ``(arch)``."""
    import jax
    import jax.numpy as jnp

    model = c3d_model(converted.arch)
    size = 112 if converted.arch == "c3d" else 32
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, size, size, 3), jnp.float32))
    )
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes))
    return fill_variables(
        template, converted.weights, keep_initial=(), source_name=f"{converted.arch} checkpoint"
    )


def save_c3d_weights(
    directory: str | os.PathLike[str],
    converted: ConvertedC3D,
    *,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Writes the converted backbone (and its fc layers under ``heads``) to ``directory``."""
    import jax
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    tree = dict(c3d_variables(converted))
    if converted.fc:
        tree["heads"] = converted.fc
    tree = jax.tree.map(np.asarray, tree)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "variables", tree, force=True)
    meta = {"model": {"arch": converted.arch}, "provenance": dict(provenance or {})}
    (directory / "model.json").write_text(json.dumps(meta, indent=2))
    return directory


def convert_c3d_checkpoint(
    state: Mapping[str, Any],
    dst: str | os.PathLike[str],
    *,
    arch: str | None = None,
    source: str = "",
) -> str:
    """Converts and saves a C3D state dict; returns a one-paragraph report (for the CLI)."""
    converted = convert_c3d_state_dict(state, arch)
    out = save_c3d_weights(dst, converted, provenance={"source": source, "arch": converted.arch})
    n = sum(v.size for v in converted.weights.values())
    fc = ", ".join(f"{k} {v['kernel'].shape}" for k, v in converted.fc.items()) or "none"
    return (
        f"converted {source or 'state dict'} ({converted.arch} layout, {len(state)} keys, "
        f"{n:,} backbone values) → {out}\n  fc layers kept aside under 'heads' (not part of "
        f"the backbone): {fc}; ignored: {len(converted.ignored)} keys"
    )


def read_c3d_weights(
    path: str | os.PathLike[str],
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(arch, variables, fc heads) from a converted weights directory or a PyTorch file."""
    path = Path(path)
    if path.is_file():
        from aqa_jax.weights.torch_convert import read_torch_checkpoint

        converted = convert_c3d_state_dict(read_torch_checkpoint(path))
        return converted.arch, c3d_variables(converted), converted.fc
    spec_file = path / "model.json"
    if not spec_file.is_file():
        raise FileNotFoundError(
            f"no C3D weights at {path}: expected a PyTorch C3D file (c3d.pickle) or a directory "
            "written by `aqa-jax convert-weights c3d.pickle DIR` (with model.json); see "
            "docs/C3D_WEIGHTS.md"
        )
    arch = json.loads(spec_file.read_text()).get("model", {}).get("arch")
    if arch not in ARCHS:
        raise ValueError(
            f"{path} holds I3D weights, not C3D ones (model.json has no C3D 'arch'); convert "
            "c3d.pickle with `aqa-jax convert-weights` and point init_from at that directory"
        )
    import jax
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(path.absolute() / "variables")
    tree = jax.tree.map(np.asarray, dict(tree))
    heads = tree.pop("heads", {})
    return arch, tree, heads


def load_c3d_backbone(
    variables: Mapping[str, Any], init_from: str | os.PathLike[str] | None
) -> dict[str, Any]:
    """``variables`` with the ``backbone`` subtree filled from ``init_from`` (C3D counterpart of
    :func:`aqa_jax.weights.init.load_backbone`, for a method's ``load_pretrained``).

    ``init_from`` is ``'none'``/empty (keep the init), a directory written by
    ``aqa-jax convert-weights``, or a PyTorch C3D file (converted on the fly; needs torch).
    Every backbone leaf must be filled and every stored one used, with matching shapes.

    Raises:
      FileNotFoundError: ``init_from`` does not exist / is not a weights directory.
      ValueError: the network has no ``backbone``, or its architecture is not the file's.
      ConversionError: leaves or shapes disagree (each named).
    """
    if init_from in (None, "", "none"):
        return dict(variables)
    target = {
        c: variables[c][BACKBONE]
        for c in ("params", "batch_stats")
        if BACKBONE in (variables.get(c) or {})
    }
    if not target:
        raise ValueError(f"init_from={str(init_from)!r} but the network has no 'backbone' module")
    arch, weights, _ = read_c3d_weights(init_from)
    wants = "c3d_dilated" if "batch_stats" in target else "c3d"
    if arch != wants:
        raise ValueError(
            f"{init_from} holds {arch} weights but the network's backbone is a {wants} "
            f"({'C3DDilated' if wants == 'c3d_dilated' else 'C3D'})"
        )
    from flax import traverse_util

    source = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(dict(weights)).items()}
    filled = fill_variables(
        target, source, keep_initial=(), source_name=f"{arch} weights in {init_from}"
    )
    out = {c: dict(v) for c, v in variables.items()}
    for collection, tree in filled.items():
        out[collection][BACKBONE] = tree
    return out
