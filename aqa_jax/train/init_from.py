"""What a training run starts from, checked and recorded before it touches any data.

The starting weights themselves (``config.init_from``: named Kinetics-400 checkpoints,
converted weights, another run's workdir) are put in place by the method's
``load_pretrained`` (:mod:`aqa_jax.weights.init`); this module is the training loop's part:
:func:`record_starting_point` stops a run at once when the weights are missing and writes
what it starts from into the run's ``config.json`` and ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def record_starting_point(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Checks and records what a run of ``config`` starts from; the training loop calls it
    before it touches data or compiles anything, so a missing weights file stops the run at
    once with one line (:func:`aqa_jax.weights.named.resolve`).

    Sets ``config.started_from`` (written to the run's ``config.json``) and returns it for
    ``summary.json``: see :func:`aqa_jax.weights.named.starting_point_record`. A run that
    resumes (a checkpoint in ``workdir``, whose ``config.json`` already holds the record for
    the same ``init_from``) keeps its record and needs the starting weights no more.
    """
    import contextlib
    import json

    import ml_collections

    from aqa_jax.weights.named import starting_point_record

    init_from = config.get("init_from", "none")
    saved = None
    config_file = Path(workdir) / "config.json"
    checkpoints = Path(workdir) / "checkpoints"
    if config_file.is_file() and checkpoints.is_dir() and any(checkpoints.iterdir()):
        saved = json.loads(config_file.read_text())
    if saved is not None and saved.get("init_from") == init_from and "started_from" not in saved:
        # a run started before starting points were recorded: its resume config stays as saved
        return {"init_from": str(init_from or ""), "name": "", "kind": "not recorded"}
    previous = (saved or {}).get("started_from")
    if previous and previous.get("init_from") == str(init_from or ""):
        record = dict(previous)
    else:
        record = starting_point_record(init_from, config.get("model"))
    with config.unlocked() if config.is_locked else contextlib.nullcontext():
        config.started_from = ml_collections.ConfigDict(record)
    return record
