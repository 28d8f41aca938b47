"""Mixed precision: ``config.compute_dtype`` ('float32' | 'bfloat16', default 'float32').

One switch for every method's network. With ``'bfloat16'``:

- convolutions, matmuls and activations of the backbone, its adapters and the heads run in
  bfloat16 (flax ``dtype=``: parameters are cast to bf16 where they are used);
- parameters stay float32 (``param_dtype``), so gradients and optimizer state are float32;
- BatchNorm computes its batch statistics in float32 and keeps float32 running statistics
  (:class:`aqa_jax.models.layers.BatchNorm`), pools and the adapters' grouped conv accumulate
  in float32;
- the last projection of each head (the logits or regressed values) is computed in float32,
  so predictions are not rounded to bf16's 8-bit significand (a score of 85.3 would become
  85.5), and the train/predict steps cast every network output to float32 before the loss
  (:func:`float32_outputs`).

bfloat16 has float32's exponent range, so no loss scaling is needed (float16 would need it
and is not offered).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

COMPUTE_DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: Mapping[str, Any] | str | None) -> Any:
    """The jnp dtype of ``config.compute_dtype`` (a config, or the name itself; None → float32).

    Raises:
      ValueError: an unknown name, with the allowed ones.
    """
    if config is None or isinstance(config, str):
        name = config or "float32"
    else:
        name = config.get("compute_dtype", "float32") or "float32"
    try:
        return COMPUTE_DTYPES[str(name)]
    except KeyError:
        raise ValueError(
            f"config.compute_dtype={name!r}; use one of {sorted(COMPUTE_DTYPES)}"
        ) from None


def float32_outputs(tree: Any) -> Any:
    """Every floating leaf of ``tree`` below float32 cast to float32 (others unchanged)."""

    def cast(x: Any) -> Any:
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize < 4:
            return x.astype(jnp.float32)
        return x

    return jax.tree.map(cast, tree)
