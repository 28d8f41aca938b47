"""One run per workdir, and a workdir that keeps describing its own weights.

* :class:`WorkdirLock`: ``<workdir>/.lock``, created atomically (``O_CREAT | O_EXCL``)
  and holding the owner's host, pid and start time as JSON, plus an ``fcntl.flock`` on it
  where the file system supports one. A second run on the same workdir is refused while the
  owner lives. A lock left by a dead process on the same host (its pid is gone, or the pid
  was reused by a process that does not hold the flock) is reported and taken over. A lock
  from another host cannot be checked from here: the message says how to remove it.
* :func:`check_resume_config`: a resumed run's config must equal the one saved in
  ``<workdir>/config.json``, except for the keys in :data:`RESUMABLE_KEYS` (where and how
  often the run works, not what it computes) and ``total_steps``/``total_epochs`` extended.
  Anything else stops with a one-line diff; ``force=True`` (``--force-config``) resumes
  anyway, and :func:`record_config` appends every config a run started with, and the keys
  it changed, to ``<workdir>/config_history.jsonl``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

LOCK_NAME = ".lock"
CONFIG_JSON = "config.json"
CONFIG_HISTORY = "config_history.jsonl"

# Keys that may differ between a run and its resumption: where the run is placed and how
# often it logs, evaluates and saves. None of them changes what a training step computes
# (compute_dtype and the mesh change it only by float rounding; hardware presets set them).
RESUMABLE_KEYS: tuple[str, ...] = (
    "num_devices", "mesh", "logical_axis_rules", "hardware", "compute_dtype",
    "log_every_steps", "log_every_epochs", "eval_every_steps", "eval_every_epochs",
    "checkpoint.every_steps", "checkpoint.every_epochs", "checkpoint.max_to_keep",
    "checkpoint.async_save",
    "data.data_dir", "data.worker_count", "data.reader_nice", "prefetch_batches", "profile_steps",
)
# May grow on resume (a longer run), never shrink.
EXTENDABLE_KEYS: tuple[str, ...] = ("total_steps", "total_epochs")


class WorkdirLockedError(ValueError):
    """Another live run holds the workdir; the message names it and what to do."""


class ConfigMismatchError(ValueError):
    """A resume under a config that differs from the saved one; the message is the diff."""


# ----------------------------------------------------------------------------- the lock

def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _try_flock(fd: int) -> bool | None:
    """True: ``fd``'s file is now flocked by us; False: someone holds it; None: unsupported."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as err:  # e.g. ENOLCK / EOPNOTSUPP on some network file systems
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None


class WorkdirLock:
    """The exclusive lock of one workdir (see module docstring); :meth:`acquire` then
    :meth:`release`, or use it as a context manager."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir).absolute() / LOCK_NAME
        self.fd: int | None = None
        self.took_over: str = ""  # what stale lock was taken over, if any

    def _owner_text(self, owner: Mapping[str, Any]) -> str:
        return (f"pid {owner.get('pid')} on host {owner.get('host')} "
                f"(since {owner.get('started', '?')})")

    def acquire(self) -> "WorkdirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # a few rounds: a stale lock is removed, then created afresh
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            _try_flock(fd)  # held before the owner's details are written (see _handle_existing)
            os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                     "started": _now()}).encode())
            os.fsync(fd)
            self.fd = fd
            return self
        raise WorkdirLockedError(f"could not take the lock {self.path}: it keeps reappearing")

    def _handle_existing(self) -> None:
        """Raises for a live owner; removes a stale lock (reporting it) otherwise."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:  # released meanwhile: try again
            return
        try:
            text = b""
            while chunk := os.read(fd, 65536):
                text += chunk
            try:
                owner = json.loads(text.decode())
            except ValueError:  # being written right now, or left empty by a crash
                owner = {}
            flocked = _try_flock(fd)
            if not owner:  # its creator flocks it before writing: wait unless clearly dead
                age = time.time() - os.fstat(fd).st_mtime
                if flocked is False or age < (2 if flocked else 30):
                    time.sleep(0.2)
                    return
                owner = {"pid": None, "host": socket.gethostname(), "started": "?"}
            same_host = owner.get("host") == socket.gethostname()
            pid = owner.get("pid")
            if flocked is False:  # its owner holds it: alive, on this host or another
                raise self._locked(owner)
            if not same_host:  # its pid cannot be checked from here
                raise WorkdirLockedError(
                    f"{self.path.parent} is locked by {self._owner_text(owner)}, another host "
                    f"whose processes cannot be checked from here; if that run is gone, "
                    f"delete {self.path} and start again")
            alive = pid is not None and pid != os.getpid() and _pid_alive(int(pid))
            if alive and flocked is None:  # no flock to tell a reused pid from its owner
                raise self._locked(owner)
            # Dead pid, or a live pid that does not hold the flock (a reused pid): stale.
            # Stale: remove it, unless it was replaced by a new lock in the meantime.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.took_over = (f"took over the stale lock {self.path} of {self._owner_text(owner)}, "
                              "which is no longer running")
        finally:
            os.close(fd)

    def _locked(self, owner: Mapping[str, Any]) -> WorkdirLockedError:
        return WorkdirLockedError(
            f"{self.path.parent} is in use by another run, {self._owner_text(owner)}; wait for it "
            f"to finish or stop it, or use another --workdir (the lock is {self.path})")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)  # also drops the flock
            self.fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _agree(ok: bool) -> bool:
    """Whether ``ok`` holds on every process (a collective in multi-process runs)."""
    import jax

    if jax.process_count() == 1:
        return ok
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


@contextlib.contextmanager
def hold_workdir(workdir: str | Path, *, process_index: int = 0) -> Iterator[WorkdirLock | None]:
    """Process 0 holds the workdir's lock for the block; the other processes of a
    multi-process run take no lock but learn (collectively, so none is left waiting)
    whether process 0 got it, and raise its refusal too."""
    lock = WorkdirLock(workdir) if process_index == 0 else None
    error: Exception | None = None
    if lock is not None:
        try:
            lock.acquire()
        except WorkdirLockedError as err:
            error = err
    if not _agree(error is None):
        raise error or WorkdirLockedError(
            f"{Path(workdir).absolute()} is in use by another run (process 0 could not take "
            f"its lock {Path(workdir).absolute() / LOCK_NAME})")
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


# ----------------------------------------------------------------------- the config check

def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def config_as_json(config: Any) -> dict[str, Any]:
    """``config`` (ConfigDict or mapping) normalised as its JSON round trip (tuples → lists)."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(dict(config), default=str))


def _allowed(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def _short(value: Any) -> str:
    text = "<absent>" if value is _ABSENT else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


_ABSENT = object()


def config_diff(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every dotted key whose value differs between two JSON-normalised configs."""
    a, b = _flatten(saved), _flatten(new)
    return {k: (a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)}


def check_resume_config(
    saved: Mapping[str, Any], new: Mapping[str, Any], *, old_total_steps: int,
    new_total_steps: int, force: bool = False, where: str = "the saved config",
) -> tuple[dict[str, tuple[Any, Any]], bool]:
    """(The keys that differ between the ``saved`` config of a run and the ``new`` one it is
    resumed with (JSON-normalised, :func:`config_as_json`); raises
    :class:`ConfigMismatchError` with a one-line diff if any of them may not change
    (:data:`RESUMABLE_KEYS`; ``total_steps``/``total_epochs`` only if the run's total steps
    grow from ``old_total_steps`` to ``new_total_steps``), unless ``force``. The second
    element says whether ``force`` let such keys through.)"""
    diff = config_diff(saved, new)
    refused = {k: v for k, v in diff.items() if not _allowed(k) and k not in EXTENDABLE_KEYS}
    if new_total_steps < old_total_steps:
        refused.update({k: v for k, v in diff.items() if k in EXTENDABLE_KEYS})
    if refused and not force:
        parts = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in refused.items())
        if new_total_steps < old_total_steps:
            parts += f" (the run's {old_total_steps} steps may be extended, not shortened)"
        raise ConfigMismatchError(
            f"this config differs from {where}, the run being resumed: {parts}. Use another "
            "--workdir, or pass --force-config to resume under the new config (both are kept "
            f"in {CONFIG_HISTORY})")
    return diff, bool(refused)


def record_config(workdir: str | Path, config: Mapping[str, Any], *, step: int, event: str,
                  changed: Mapping[str, tuple[Any, Any]] | None = None) -> None:
    """Appends the config a run (re)starts with to ``config_history.jsonl`` and makes it
    ``config.json``: ``event`` is 'start', 'resume' or 'forced resume'; ``changed`` maps
    the keys that differ from the previous config to (old, new)."""
    workdir = Path(workdir)
    entry = {"time": _now(), "step": step, "event": event,
             "changed": {k: [None if a is _ABSENT else a, None if b is _ABSENT else b]
                         for k, (a, b) in (changed or {}).items()},
             "config": config}
    with open(workdir / CONFIG_HISTORY, "a") as f:
        f.write(json.dumps(entry) + "\n")
    tmp = workdir / (CONFIG_JSON + ".tmp")
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, workdir / CONFIG_JSON)


def read_saved_config(workdir: str | Path) -> dict[str, Any] | None:
    """``<workdir>/config.json``, or None if there is none (a ValueError if unreadable)."""
    path = Path(workdir) / CONFIG_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it or delete it to resume "
                         "without the config check") from None
