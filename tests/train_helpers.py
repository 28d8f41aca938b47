"""A tiny PECoP-style training config for loop tests (I3D cut after Mixed_3b, one adapter)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

TINY = dict(
    data={"config": "finger_tapping_tiny", "repeat": 8},  # the 8 videos of the synthetic_data_dir fixture
    model={"adapter_blocks": ("Mixed_3b",), "final_endpoint": "Mixed_3b"},
    vspp={"clip_len": 8},
    batch_size=8,
    total_steps=3,
    log_every_steps=1,  # every step's loss is compared
    checkpoint={"every_steps": 1, "async_save": True, "max_to_keep": 10},
    optimizer={"name": "sgd", "lr": 0.05, "weight_decay": 1e-4},
)


def tiny_config(data_dir: Path | str, **overrides: Any):
    from aqa_jax.config_args import load_config

    config = load_config(f"{REPO}/configs/pecop.py:dataset=synthetic_aqa,debug")
    del config.total_epochs  # TINY sets total_steps, the other of the pair (aqa_jax.steps)
    config.data.data_dir = str(data_dir)
    config.data.eval_split = ""
    for key, value in {**TINY, **overrides}.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def write_config_file(path: Path, data_dir: Path | str, **overrides: Any) -> Path:
    """A config file whose get_config() is tiny_config(data_dir, **overrides), for subprocesses."""
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "from train_helpers import tiny_config\n"
        f"OVERRIDES = {overrides!r}\n"
        "def get_config(arg=None):\n"
        f"    return tiny_config({str(data_dir)!r}, **OVERRIDES)\n"
    )
    return path


def train_losses(workdir: Path | str) -> dict[int, float]:
    records = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def flat_params(state: dict) -> dict[tuple, np.ndarray]:
    from flax import traverse_util

    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(state["params"]).items()}


def restore_state(workdir: Path | str, step: int | None = None) -> dict:
    """A run's checkpointed state as plain numpy dicts."""
    from aqa_jax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(workdir, read_only=True)
    state = ckpt.restore_item(ckpt.latest_step() if step is None else step, "state")
    ckpt.close()
    return state
