"""JAX's persistent compilation cache, on by default for every ``aqa-jax`` command.

Compiling the I3D takes a minute or more on a CPU; with the cache, a second command on the
same shapes (a second ``aqa-jax predict``, ``extract-features``, ``evaluate``) reads the
compiled executables from disk instead. Where (:func:`cache_dir`):

- ``$AQA_JAX_CACHE``, when set (not empty); ``AQA_JAX_CACHE=off`` (or ``0``, ``false``, ``no``,
  ``none``) sets no cache;
- else ``$XDG_CACHE_HOME/aqa_jax/jax``;
- else ``~/.cache/aqa_jax/jax``.

Executables whose compilation took less than :data:`MIN_COMPILE_SECONDS` are not written
(JAX's own threshold). The cache is trusted code: do not point it at a folder others can
write to (see JAX's ``set_cache_dir``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Mapping

ENV = "AQA_JAX_CACHE"
OFF = frozenset({"off", "0", "false", "no", "none"})
MIN_COMPILE_SECONDS = 1.0


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The cache folder that ``environ`` (default: ``os.environ``) selects, as the module
    docstring says; None when ``AQA_JAX_CACHE`` turns the cache off."""
    env = os.environ if environ is None else environ
    value = env.get(ENV, "").strip()
    if value:
        return None if value.lower() in OFF else Path(value).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path(env.get("HOME") or Path.home()) / ".cache"
    return base / "aqa_jax" / "jax"


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Points JAX's persistent compilation cache at ``path`` (default: :func:`cache_dir`),
    created if need be, and returns the folder; returns None and changes nothing when the
    cache is off, or, with one logged warning, when the folder cannot be created.

    Before ``jax`` is imported this sets JAX's own environment variables, which ``jax`` reads
    when imported (so a command that never imports it pays nothing); afterwards it updates
    ``jax.config``, which takes effect unless this process already compiled with another
    cache folder (JAX keeps the first one it opens)."""
    folder = Path(path).expanduser() if path is not None else cache_dir()
    if folder is None:
        return None
    folder = folder.absolute()  # the same folder for child processes in other directories
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        logging.getLogger(__name__).warning(
            "no compilation cache (%s: %s); set %s to a writable folder, or to off",
            folder, err.strerror or err, ENV)
        return None
    settings = {"jax_compilation_cache_dir": str(folder),
                "jax_persistent_cache_min_compile_time_secs": MIN_COMPILE_SECONDS}
    if "jax" in sys.modules:
        import jax

        for name, value in settings.items():
            jax.config.update(name, value)
    else:
        os.environ.update({name.upper(): str(value) for name, value in settings.items()})
    return folder
