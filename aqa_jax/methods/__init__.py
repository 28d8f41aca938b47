"""Training objectives, one module per method, looked up by name (``config.method``).

A method module ``aqa_jax/methods/<name>.py`` defines ``Method``, a subclass of
:class:`aqa_jax.methods.base.Method`; adding one touches no other file.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from aqa_jax.methods.base import Method


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_") and p.stem != "base")


def get_method(name: str) -> type[Method]:
    """The ``Method`` class of ``aqa_jax/methods/<name>.py``."""
    if name not in available():
        raise ValueError(f"unknown method {name!r}; available: {available()}")
    return importlib.import_module(f"aqa_jax.methods.{name}").Method


__all__ = ["Method", "available", "get_method"]
