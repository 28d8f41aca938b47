"""The workdir promises of docs/RELIABILITY.md, each reproducing the failure of issue 17:
a resume under another config, two runs on one workdir, a NaN stop, a truncated
checkpoint file (SIGTERM: tests/test_train_loop.py, beside the SIGKILL test)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from train_helpers import REPO, restore_state, tiny_config, train_losses, write_config_file

from aqa_jax.cli import main
from aqa_jax.train.checkpoint import Checkpointer, CorruptCheckpointError
from aqa_jax.train.loop import NonFiniteLossError, train
from aqa_jax.train.workdir import (CONFIG_HISTORY, LOCK_NAME, ConfigMismatchError, WorkdirLock,
                                   WorkdirLockedError, check_resume_config)

MESH_1 = dict(num_devices=1, mesh=[("data", 1), ("model", 1)])


@pytest.fixture(scope="module")
def two_step_run(synthetic_data_dir, tmp_path_factory) -> Path:
    """A finished 2-step tiny run (checkpoints 0, 1, 2); tests work on copies of it."""
    workdir = tmp_path_factory.mktemp("two_steps") / "run"
    train(tiny_config(synthetic_data_dir, **MESH_1, total_steps=2), workdir)
    return workdir


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _cli_train(config_file: Path, workdir: Path, *extra: str) -> int:
    return main(["train", "--config", str(config_file), "--workdir", str(workdir), *extra])


# ------------------------------------------------------------------ 1. config-checked resume

def test_resume_under_another_config_is_refused_unless_forced(two_step_run, synthetic_data_dir,
                                                              tmp_path, capsys):
    workdir = _copy(two_step_run, tmp_path)
    saved = (workdir / "config.json").read_text()
    config_file = write_config_file(tmp_path / "cfg.py", synthetic_data_dir, **MESH_1, total_steps=2)

    # The reproductions: another seed; another lr with a longer run. rc 2, one line.
    assert _cli_train(config_file, workdir, "--set", "seed=1") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "seed: 0 -> 1" in err and "--force-config" in err
    assert _cli_train(config_file, workdir, "--set", "optimizer.lr=0.5", "--set", "total_steps=200") == 2
    err = capsys.readouterr().err
    assert "optimizer.lr: 0.05 -> 0.5" in err and "total_steps" not in err  # longer is fine
    assert _cli_train(config_file, workdir, "--set", "total_steps=1") == 2  # shorter is not
    assert "total_steps: 2 -> 1" in capsys.readouterr().err
    assert (workdir / "config.json").read_text() == saved  # the workdir still describes its run

    # Allowed: a longer run, other checkpoint/log cadence.
    train(tiny_config(synthetic_data_dir, **MESH_1, total_steps=3, log_every_steps=2,
                      checkpoint={"every_steps": 3, "max_to_keep": 5}), workdir)
    assert "resuming from step 2" in capsys.readouterr().out
    assert sorted(train_losses(workdir)) == [1, 2, 3]

    # --force-config resumes, and the history keeps both configs.
    assert _cli_train(config_file, workdir, "--set", "seed=1", "--set", "total_steps=3",
                      "--force-config") == 0
    history = [json.loads(line) for line in (workdir / CONFIG_HISTORY).read_text().splitlines()]
    assert [h["event"] for h in history[-2:]] == ["resume", "forced resume"]
    assert history[-2]["changed"]["total_steps"] == [2, 3]
    assert history[-1]["changed"]["seed"] == [0, 1] and history[-1]["step"] == 3
    assert history[-1]["config"]["seed"] == 1 and history[-2]["config"]["seed"] == 0
    assert json.loads((workdir / "config.json").read_text())["seed"] == 1


def test_which_keys_may_change_on_resume():
    saved = {"seed": 0, "total_steps": 100, "num_devices": 0, "mesh": [["data", -1]],
             "checkpoint": {"every_steps": 10}, "data": {"data_dir": "/a", "name": "x"},
             "started_from": {"name": "kinetics400", "sha256": "ab"}}

    def check(total=100, **changes):
        new = json.loads(json.dumps(saved))
        for key, value in changes.items():
            *parents, leaf = key.split("__")
            node = new
            for p in parents:
                node = node[p]
            node[leaf] = value
        return check_resume_config(saved, new, old_total_steps=100, new_total_steps=total)

    diff, forced = check(num_devices=4, mesh=[["data", 4], ["model", 2]],
                         checkpoint__every_steps=50, data__data_dir="/b")
    assert set(diff) == {"num_devices", "mesh", "checkpoint.every_steps", "data.data_dir"}
    assert not forced
    check(total=200, total_steps=200)
    with pytest.raises(ConfigMismatchError, match="may be extended, not shortened"):
        check(total=50, total_steps=50)
    with pytest.raises(ConfigMismatchError, match=r"data\.name: \"x\" -> \"y\""):
        check(data__name="y")
    # The starting weights' record (name and hash) is compared like any other key.
    with pytest.raises(ConfigMismatchError, match=r"started_from\.sha256"):
        check(started_from__sha256="cd")
    with pytest.raises(ConfigMismatchError, match=r"new_key: <absent> -> 1"):
        check(new_key=1)


# ------------------------------------------------------------------------ 2. the workdir lock

_HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from aqa_jax.train.workdir import WorkdirLock
    WorkdirLock({workdir!r}).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_a_second_run_is_refused_while_the_first_lives_and_takes_over_after(
        synthetic_data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER.format(repo=str(REPO), workdir=str(workdir))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = tiny_config(synthetic_data_dir, **MESH_1, total_steps=1)
        with pytest.raises(WorkdirLockedError, match=f"pid {holder.pid} on host"):
            train(config, workdir)
        config_file = write_config_file(tmp_path / "cfg.py", synthetic_data_dir, **MESH_1,
                                        total_steps=1)
        assert _cli_train(config_file, workdir) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "in use by another run" in err
        assert not (workdir / "checkpoints").exists()  # refused before touching anything
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock is stale, reported and taken over.
    train(config, workdir)
    err = capsys.readouterr().err
    assert f"took over the stale lock {workdir / LOCK_NAME}" in err and str(holder.pid) in err
    assert sorted(train_losses(workdir)) == [1]
    assert not (workdir / LOCK_NAME).exists()  # released at the end


def test_stale_and_foreign_locks(tmp_path):
    lock_file = tmp_path / LOCK_NAME
    # Another host: its pid cannot be checked; the message says how to remove the lock.
    lock_file.write_text(json.dumps({"host": "elsewhere-7", "pid": 1, "started": "x"}))
    with pytest.raises(WorkdirLockedError, match=f"delete {lock_file}"):
        WorkdirLock(tmp_path).acquire()
    # This host, a live pid that does not hold the flock (a reused pid): stale.
    lock_file.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    with WorkdirLock(tmp_path) as lock:
        assert "no longer running" in lock.took_over
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        with pytest.raises(WorkdirLockedError, match="in use by another run"):
            WorkdirLock(tmp_path).acquire()  # held (flocked) by this very lock
    assert not lock_file.exists()


# --------------------------------------------------------------------------- 3. NaN stop

def test_nan_stop_names_a_finite_checkpoint_that_trains_on(synthetic_data_dir, tmp_path):
    # The debug configs keep one checkpoint: a diverged state must never replace it.
    config = tiny_config(synthetic_data_dir, **MESH_1, total_steps=6, optimizer={"lr": 1e30},
                         checkpoint={"every_steps": 1, "max_to_keep": 1})
    with pytest.raises(NonFiniteLossError) as err:
        train(config, tmp_path)
    message = str(err.value)
    assert "finger_tapping_0000" in message  # the batch's sample ids
    named = int(message.split("verified finite, is step ")[1].split(" ")[0])
    ckpt = Checkpointer(tmp_path, read_only=True)
    assert ckpt.all_steps() == [named]  # nothing newer (and non-finite) was written
    ckpt.close()
    state = restore_state(tmp_path, named)
    for part in ("params", "batch_stats", "opt_state"):
        for leaf in jax.tree.leaves(state[part]):
            leaf = np.asarray(leaf, np.float64)
            assert np.all(np.isfinite(leaf)) and np.all(np.abs(leaf) < 1e6), part
    # As the message says: a lower lr with --force-config resumes from it and trains on.
    sane = tiny_config(synthetic_data_dir, **MESH_1, total_steps=named + 2, optimizer={"lr": 1e-3},
                       checkpoint={"every_steps": 1, "max_to_keep": 1})
    train(sane, tmp_path, force_config=True)
    losses = train_losses(tmp_path)
    assert all(np.isfinite(losses[s]) for s in (named + 1, named + 2))


# --------------------------------------------------------------- 4. corrupted latest checkpoint

def _truncate_largest_array_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    victim = max(files, key=lambda p: p.stat().st_size)
    with open(victim, "r+b") as f:
        f.truncate(1000)
    return victim


def test_truncated_array_file_falls_back_to_the_previous_checkpoint(
        two_step_run, synthetic_data_dir, tmp_path, capsys):
    workdir = _copy(two_step_run, tmp_path)
    victim = _truncate_largest_array_file(workdir / "checkpoints" / "2")
    train(tiny_config(synthetic_data_dir, **MESH_1, total_steps=3), workdir)
    out, err = capsys.readouterr()
    assert f"checkpoint step 2 in {workdir / 'checkpoints'} cannot be read: {victim} is truncated" in err
    assert "fell back to step 1" in err and "resuming from step 1" in out
    assert (workdir / "corrupt_checkpoints" / "2").is_dir()  # kept aside, not deleted
    # Steps 2 and 3 were trained again from step 1: the same step 2 as the run before.
    assert sorted(train_losses(workdir)) == [1, 2, 3]
    np.testing.assert_array_equal(train_losses(workdir)[2], train_losses(two_step_run)[2])
    ckpt = Checkpointer(workdir, read_only=True)
    assert ckpt.latest_step() == 3
    ckpt.close()


def test_no_readable_checkpoint_stops_with_one_line(two_step_run, synthetic_data_dir, tmp_path,
                                                    capsys):
    workdir = _copy(two_step_run, tmp_path)
    for step in (0, 1, 2):
        _truncate_largest_array_file(workdir / "checkpoints" / str(step))
    config_file = write_config_file(tmp_path / "cfg.py", synthetic_data_dir, **MESH_1, total_steps=3)
    assert _cli_train(config_file, workdir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("aqa-jax train: error: no checkpoint in")
    assert "(steps 2, 1, 0; step 2: 2/state/" in err[-1] and "is truncated to 1000 bytes" in err[-1]
    for step in (0, 1):  # each named on its own line before
        assert any(f"checkpoint step {step} in" in line and "is truncated" in line for line in err)
    assert len(err) == 4  # three warnings and the error: no traceback, no TensorStore spec
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["0", "1", "2"]  # kept
    with pytest.raises(CorruptCheckpointError):
        train(tiny_config(synthetic_data_dir, **MESH_1, total_steps=3), workdir)
