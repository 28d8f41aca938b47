"""Filling a model's variable tree from converted weights, accounting for every leaf.

Converters turn a checkpoint into a flat ``{(collection, *module_path, leaf): array}`` dict in
our layout; :func:`fill_variables` writes it into a template tree (usually a fresh
``model.init``) and refuses to finish silently: every target leaf must be filled (or be
explicitly allowed to keep its initial value, like new adapters) and every source entry used.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import flax.linen as nn
import numpy as np
from flax import traverse_util

FlatPath = tuple[str, ...]


class ConversionError(ValueError):
    """Converted weights and the target model do not account for each other."""


def _describe(paths: Iterable[FlatPath], limit: int = 12) -> str:
    paths = sorted("/".join(p) for p in paths)
    shown = ", ".join(paths[:limit])
    return f"{shown}, … ({len(paths)} in all)" if len(paths) > limit else shown


def fill_variables(
    template: Mapping[str, Any],
    source: Mapping[FlatPath, np.ndarray],
    *,
    keep_initial: tuple[str, ...] = ("adapter",),
    ones_if_missing: tuple[str, ...] = (),
    source_name: str = "checkpoint",
) -> dict[str, Any]:
    """Returns ``template`` with its leaves replaced by ``source``.

    Args:
      template: variables of the target model (``{'params': ..., 'batch_stats': ...}``);
        boxed (logically partitioned) leaves are accepted and unboxed.
      source: flat converted weights keyed by ``(collection, *path)``.
      keep_initial: a target leaf whose path contains one of these module names may be absent
        from ``source`` and keeps its template value (PECoP adapters are not in Kinetics
        checkpoints and start from their own init).
      ones_if_missing: leaf names (e.g. ``'scale'`` of BatchNorm) set to ones when absent,
        as hassony2's TF→PyTorch converter does for BN gamma.
      source_name: names the checkpoint in errors.

    Raises:
      ConversionError: listing target leaves left unfilled, source entries left unused, and
        shape mismatches, all at once.
    """
    flat = traverse_util.flatten_dict(nn.unbox(dict(template)))
    out: dict[FlatPath, Any] = {}
    missing, mismatched = [], []
    for path, init_value in flat.items():
        if path in source:
            value = np.asarray(source[path])
            if value.shape != tuple(init_value.shape):
                mismatched.append(
                    f"{'/'.join(path)}: {source_name} has {value.shape}, model wants "
                    f"{tuple(init_value.shape)}"
                )
                continue
            out[path] = value.astype(init_value.dtype)
        elif any(name in path[:-1] for name in keep_initial):
            out[path] = init_value
        elif path[-1] in ones_if_missing:
            out[path] = np.ones(init_value.shape, init_value.dtype)
        else:
            missing.append(path)
    unused = set(source) - set(flat)
    if missing or unused or mismatched:
        parts = []
        if missing:
            parts.append(f"model leaves not in {source_name}: {_describe(missing)}")
        if unused:
            parts.append(f"{source_name} entries the model has no place for: {_describe(unused)}")
        if mismatched:
            parts.append("shape mismatches: " + "; ".join(mismatched[:12]))
        raise ConversionError(
            f"{source_name} does not match the model ("
            + " | ".join(parts)
            + "). Check the model's variant, adapter_blocks and num_classes."
        )
    return traverse_util.unflatten_dict(out)
