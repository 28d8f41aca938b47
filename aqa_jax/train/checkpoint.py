"""Orbax checkpoints of a training run: the full state, the adapters alone, the data iterator
and the config, saved together per step.

Layout: ``<workdir>/checkpoints/<step>/{state, adapters, data_iter, config}``. Orbax writes a
step into a temporary directory and renames it only once every item is complete, so a run
killed mid-save leaves no step that :meth:`Checkpointer.latest_step` would pick. Saves are
asynchronous (the next training steps overlap the write) and the newest ``max_to_keep``
steps are kept.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from aqa_jax.train.partition import label_of

ITEMS = ("state", "adapters", "data_iter", "config")
CORRUPT_DIR = "corrupt_checkpoints"  # unreadable steps are moved here (beside checkpoints/)


class CorruptCheckpointError(ValueError):
    """No checkpoint of a run can be read; the message names each step's problem."""


@contextlib.contextmanager
def _quiet_failed_reads() -> Iterator[None]:
    """Mutes what a failed orbax read leaves behind besides its exception: the other
    pending reads' "Task exception was never retrieved" / "Exception ignored in" reports
    (dozens of lines of TensorStore specs), collected before leaving."""
    hook = sys.unraisablehook
    log = logging.getLogger("asyncio")
    disabled = log.disabled
    sys.unraisablehook, log.disabled = (lambda _: None), True
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook, log.disabled = hook, disabled


def describe_restore_error(err: BaseException, step_dir: Path, *, short: bool = False) -> str:
    """One line for an orbax/tensorstore restore failure of ``step_dir``: the innermost
    message, with the file a truncated array value lives in when its size identifies it
    (``short``: that file and its size alone)."""
    messages = []
    seen: BaseException | None = err
    while seen is not None and len(messages) < 10:
        lines = [line.strip() for line in str(seen).strip().splitlines() if line.strip()]
        head = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines or [""])[0]
        messages.append(head or type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    text = next((m for m in reversed(messages) if m and "Event loop" not in m), messages[0])
    found = re.search(r"not valid for value of size (\d+)", " ".join(messages))
    if found and step_dir.is_dir():  # a value shorter than its index says: the truncated file
        size = int(found.group(1))
        hits = [p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size == size]
        if len(hits) == 1:
            if short:
                return f"{hits[0].relative_to(step_dir.parent)} is truncated to {size} bytes"
            return f"{hits[0]} is truncated to {size} bytes ({text})"
    limit = 150 if short else 400
    return text if len(text) <= limit else text[:limit - 3] + "..."


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir).absolute() / "checkpoints"


def adapter_subtree(params: Mapping[str, Any]) -> dict[str, Any]:
    """The leaves of ``params`` labelled ``adapter`` (PECoP's 3D-Adapters), same nesting."""
    flat = traverse_util.flatten_dict(dict(params))
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if label_of(k) == "adapter"})


class Checkpointer:
    """Saves and restores the items of a run (see module docstring)."""

    def __init__(
        self, workdir: str | Path, *, max_to_keep: int = 3, async_save: bool = True,
        read_only: bool = False,
    ):
        self.directory = checkpoint_dir(workdir)
        self._options = (max_to_keep, async_save, read_only)
        if read_only and not self.directory.is_dir():
            raise FileNotFoundError(
                f"{workdir} has no checkpoints/ folder; is it the --workdir of a training run?"
            )
        from absl import logging as absl_logging

        verbosity = absl_logging.get_verbosity()
        if read_only:  # orbax warns that a read-only manager does not save: we know
            absl_logging.set_verbosity(absl_logging.ERROR)
        try:
            self.manager = self._manager(max_to_keep, async_save, read_only)
        finally:
            absl_logging.set_verbosity(verbosity)

    def _manager(self, max_to_keep: int, async_save: bool, read_only: bool) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            item_names=ITEMS,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "adapters": ocp.StandardCheckpointHandler(),
                "data_iter": grain.checkpoint.CheckpointHandler(),
                "config": ocp.JsonCheckpointHandler(),
            },
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=not read_only,
                enable_async_checkpointing=async_save,
                read_only=read_only,
            ),
        )

    def reload(self) -> None:
        """A fresh manager (after steps were moved away on disk)."""
        self.manager.close()
        self.manager = self._manager(*self._options)

    def restore_latest_readable(
        self, abstract_state: Any, *, agree: Callable[[bool], bool] = bool,
        main_process: bool = True, report: Callable[[str], None] = print,
    ) -> tuple[int, Any]:
        """(step, state) of the newest checkpoint that restores completely (its state and its
        data-iterator record). Each newer one that does not is named with its problem through
        ``report``, and moved to ``<workdir>/corrupt_checkpoints/`` once an older one has
        restored (by the main process; ``agree`` makes every process of a multi-process run
        take the same decision). Raises :class:`CorruptCheckpointError` (one line, naming
        every step's problem) when none restores; nothing is moved then."""
        problems: list[tuple[int, str]] = []
        for step in sorted(self.all_steps(), reverse=True):
            step_dir = self.directory / str(step)
            ok, problem, brief = True, "", ""
            with _quiet_failed_reads():
                try:
                    state = self.restore(step, abstract_state)
                    for record in sorted((step_dir / "data_iter").glob("*.json")):
                        json.loads(record.read_text())
                except Exception as err:  # orbax/tensorstore/json: the zoo of read errors
                    ok = False
                    problem = describe_restore_error(err, step_dir)
                    brief = describe_restore_error(err, step_dir, short=True)
                    del err
            if not agree(ok):
                problem = problem or "unreadable on another process"
                problems.append((step, brief or problem))
                report(f"warning: checkpoint step {step} in {self.directory} cannot be read: "
                       f"{problem}")
                continue
            if problems and main_process:
                target = self.directory.parent / CORRUPT_DIR
                target.mkdir(exist_ok=True)
                for bad, _ in problems:
                    dest = target / str(bad)
                    if dest.exists():
                        shutil.rmtree(dest)
                    shutil.move(str(self.directory / str(bad)), str(dest))
                report(f"warning: fell back to step {step}, the newest complete checkpoint; moved "
                       f"the unreadable step(s) {[b for b, _ in problems]} to {target}")
            if problems:
                agree(True)  # the other processes wait for the move before looking again
                self.reload()
            return step, state
        raise CorruptCheckpointError(
            f"no checkpoint in {self.directory} can be restored (steps "
            f"{', '.join(str(s) for s, _ in problems)}; step {problems[0][0]}: {problems[0][1]}"
            f"{'; the others are named above' if len(problems) > 1 else ''}). If its files are damaged, start again in a new --workdir (or delete its "
            "checkpoints/); if not, the config no longer builds the state they hold (a "
            "--force-config change of the model or optimizer?)")

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def checked_step(self, step: int | None = None) -> int:
        """``step`` (default: the latest), or FileNotFoundError naming the steps there are."""
        step = self.latest_step() if step is None else step
        if step is None or step not in self.all_steps():
            raise FileNotFoundError(
                f"no checkpoint {'at step ' + str(step) if step is not None else ''} in "
                f"{self.directory}; steps there: {self.all_steps()}")
        return step

    def save(
        self, step: int, state: Any, data_iter: Any, config: Mapping[str, Any]
    ) -> None:
        """Starts saving ``step`` (asynchronously); :meth:`wait` blocks until it is on disk."""
        items = dict(
            state=ocp.args.StandardSave(state),
            data_iter=grain.checkpoint.CheckpointSave(data_iter),
            config=ocp.args.JsonSave(json.loads(json.dumps(dict(config), default=str))),
        )
        adapters = adapter_subtree(state.params)
        if adapters:  # a network without 3D-Adapters has no adapters item
            items["adapters"] = ocp.args.StandardSave(adapters)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state: Any, data_iter: Any | None = None) -> Any:
        """The state of ``step`` laid out as ``abstract_state`` (its shardings: any mesh);
        also rewinds ``data_iter`` to where that step left it."""
        items = dict(state=ocp.args.StandardRestore(abstract_state))
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        return self.manager.restore(step, args=ocp.args.Composite(**items)).state

    def restore_data_iter(self, step: int, data_iter: Any) -> None:
        """Rewinds ``data_iter`` to where the ``step`` checkpoint left it."""
        self.manager.restore(step, args=ocp.args.Composite(
            data_iter=grain.checkpoint.CheckpointRestore(data_iter)))

    def restore_item(self, step: int, item: str, abstract: Any | None = None) -> Any:
        """One item alone (e.g. ``adapters``); without ``abstract``, whole arrays on this
        process's first device, whatever mesh saved them."""
        if item == "config":
            args = ocp.args.JsonRestore()
        else:
            if abstract is None:  # whole arrays on this process's first device
                device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
                metadata = self.manager.item_metadata(step)
                if item == "adapters" and metadata.get(item) is None:
                    return {}  # saved from a network without adapters
                abstract = jax.tree.map(
                    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                    metadata[item],
                )
            args = ocp.args.StandardRestore(abstract)
        return self.manager.restore(step, args=ocp.args.Composite(**{item: args}))[item]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def save_adapters_npz(adapters: Mapping[str, Any], path: str | Path) -> Path:
    """Writes an adapters tree as ``.npz`` with ``'Mixed_3b/adapter/down/kernel'``-style keys."""
    flat = traverse_util.flatten_dict(dict(adapters))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{"/".join(k): np.asarray(jax.device_get(v)) for k, v in flat.items()})
    return path


def load_adapters_npz(path: str | Path) -> dict[str, Any]:
    """Inverse of :func:`save_adapters_npz`."""
    with np.load(path) as data:
        return traverse_util.unflatten_dict({tuple(k.split("/")): data[k] for k in data.files})
