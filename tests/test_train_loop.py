"""The training core end to end on a tiny I3D: sharding, freezing, checkpoints, resume,
multi-process, SIGKILL and SIGTERM (the non-finite stop: test_workdir_reliability.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from train_helpers import REPO, flat_params, restore_state, tiny_config, train_losses, write_config_file

from aqa_jax.train.checkpoint import Checkpointer
from aqa_jax.experiment import Experiment
from aqa_jax.train.loop import train
from aqa_jax.train.partition import label_of

MESH_1 = dict(num_devices=1, mesh=[("data", 1), ("model", 1)])
MESH_8 = dict(mesh=[("data", 4), ("model", 2)])


@pytest.fixture(scope="module")
def runs(synthetic_data_dir, tmp_path_factory):
    """Lazily trained tiny runs, shared by the tests of this module: name → workdir."""
    done: dict[str, Path] = {}
    specs = {
        "adapters_1": MESH_1,
        "adapters_8": MESH_8,
        "bn_1": dict(MESH_1, trainable="bn"),
    }

    def get(name: str) -> Path:
        if name not in done:
            workdir = tmp_path_factory.mktemp(name)
            train(tiny_config(synthetic_data_dir, **specs[name]), workdir)
            done[name] = workdir
        return done[name]

    return get


def test_one_and_eight_devices_give_the_same_losses(runs):
    one, eight = train_losses(runs("adapters_1")), train_losses(runs("adapters_8"))
    assert sorted(one) == [1, 2, 3]
    np.testing.assert_allclose([eight[s] for s in one], [one[s] for s in one], rtol=2e-5)
    final_one = flat_params(restore_state(runs("adapters_1")))
    final_eight = flat_params(restore_state(runs("adapters_8")))
    for path, value in final_one.items():
        np.testing.assert_allclose(final_eight[path], value, rtol=1e-4, atol=1e-6, err_msg=str(path))


def test_eight_device_state_is_sharded_as_the_rules_say(runs, synthetic_data_dir):
    config = tiny_config(synthetic_data_dir, **MESH_8)
    run = Experiment.from_config(config, runs("adapters_8"))
    ckpt = Checkpointer(runs("adapters_8"), read_only=True)
    state = ckpt.restore(3, run.abstract_state())
    ckpt.close()
    kernel = state.params["backbone"]["Mixed_3b"]["b1b"]["conv"]["kernel"]  # (3,3,3,96,128)
    assert kernel.sharding.spec == P(None, None, None, None, "model")  # conv_out → model
    assert {s.data.shape for s in kernel.addressable_shards} == {(3, 3, 3, 96, 64)}
    down = state.params["backbone"]["Mixed_3b"]["adapter"]["down"]["kernel"]
    assert down.sharding.spec[-1] == "model"  # adapter_hidden → model
    head = state.params["head_speed"]["Dense_0"]["kernel"]
    assert head.sharding.is_fully_replicated  # (embed, classes): not sharded
    # The optimizer's momentum of a sharded parameter is sharded like it.
    momenta = [
        leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
        if [getattr(k, "key", None) for k in path][-4:] == ["Mixed_3b", "adapter", "down", "kernel"]
    ]
    assert len(momenta) == 1 and momenta[0].sharding.spec == down.sharding.spec


def test_checkpoint_restores_onto_a_different_mesh(runs, synthetic_data_dir):
    run = Experiment.from_config(tiny_config(synthetic_data_dir, **MESH_1), runs("adapters_8"))
    ckpt = Checkpointer(runs("adapters_8"), read_only=True)
    state = ckpt.restore(3, run.abstract_state())
    ckpt.close()
    kernel = state.params["backbone"]["Mixed_3b"]["b1b"]["conv"]["kernel"]
    assert len(kernel.sharding.device_set) == 1
    expected = flat_params(restore_state(runs("adapters_8")))
    got = flat_params({"params": jax.device_get(state.params)})
    for path, value in expected.items():
        np.testing.assert_array_equal(got[path], value)


@pytest.mark.parametrize("mode, changing", [("adapters", {"adapter", "head"}), ("bn", {"bn", "head"})])
def test_only_the_trainable_labels_change(runs, mode, changing):
    workdir = runs("adapters_1" if mode == "adapters" else "bn_1")
    before, after = flat_params(restore_state(workdir, 0)), flat_params(restore_state(workdir, 3))
    changed = {label_of(p) for p in before if not np.array_equal(before[p], after[p])}
    assert changed == changing
    for path in before:
        if label_of(path) not in changing:
            assert before[path].tobytes() == after[path].tobytes(), path
    # Optimizer state (SGD momentum) exists for the trainable leaves only.
    state = restore_state(workdir, 3)
    momenta = {
        (label, *path)
        for label, inner in state["opt_state"]["inner_states"].items()
        if inner["inner_state"] is not None
        for path, leaf in jax.tree_util.tree_flatten_with_path(inner["inner_state"])[0]
        if leaf is not None and getattr(leaf, "ndim", 0) > 0
    }
    assert momenta, "no optimizer state at all"
    n_moments = sum(
        np.asarray(leaf).size
        for inner in state["opt_state"]["inner_states"].values()
        for leaf in jax.tree.leaves(inner["inner_state"]) if np.asarray(leaf).ndim > 0
    )
    n_trainable = sum(v.size for p, v in before.items() if label_of(p) in changing)
    assert n_moments == n_trainable


def _run_main(config_file: Path, workdir: Path, **popen) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
    return subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "main.py"), f"--config={config_file}",
         f"--workdir={workdir}"], env=env, **popen,
    )


INTERRUPTED = dict(MESH_1, total_steps=24, checkpoint={"every_steps": 4, "async_save": True})


@pytest.fixture(scope="module")
def uninterrupted(synthetic_data_dir, tmp_path_factory) -> Path:
    """The INTERRUPTED run done in one go (a subprocess, as the interrupted ones): the
    SIGKILL and SIGTERM tests compare their resumes with it."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    config_file = write_config_file(tmp / "cfg.py", synthetic_data_dir, **INTERRUPTED)
    assert _run_main(config_file, tmp / "run", stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL).wait(timeout=300) == 0
    return tmp / "run"


def test_sigkill_then_resume_equals_an_uninterrupted_run(synthetic_data_dir, uninterrupted, tmp_path):
    config_file = write_config_file(tmp_path / "cfg.py", synthetic_data_dir, **INTERRUPTED)
    straight, killed = uninterrupted, tmp_path / "killed"

    proc = _run_main(config_file, killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    jsonl = killed / "metrics.jsonl"
    while time.time() < deadline:  # kill once step 10 has been logged (steps 8 saved, 12 not yet)
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 10:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = Checkpointer(killed, read_only=True)
    latest = ckpt.latest_step()
    ckpt.close()
    assert latest is not None and 0 < latest < 24, latest
    # A step directory left half-written (as by a kill mid-save) must never be picked.
    bogus = killed / "checkpoints" / "999.orbax-checkpoint-tmp-1700000000"
    (bogus / "state").mkdir(parents=True)
    (bogus / "state" / "garbage").write_bytes(b"\0" * 64)

    assert _run_main(config_file, killed, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL).wait(timeout=300) == 0
    assert train_losses(killed) == train_losses(straight)
    a, b = flat_params(restore_state(straight, 24)), flat_params(restore_state(killed, 24))
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=str(path))
    for x, y in zip(jax.tree.leaves(restore_state(straight, 24)["batch_stats"]),
                    jax.tree.leaves(restore_state(killed, 24)["batch_stats"])):
        np.testing.assert_array_equal(x, y)


def test_sigterm_saves_a_checkpoint_and_the_resume_is_bit_identical(synthetic_data_dir, uninterrupted,
                                                                   tmp_path):
    from aqa_jax.train.workdir import LOCK_NAME, WorkdirLockedError

    steps = INTERRUPTED["total_steps"]
    # No regular checkpoint between step 0 and the end: the one SIGTERM leaves is its own.
    config_file = write_config_file(tmp_path / "cfg.py", synthetic_data_dir,
                                    **dict(INTERRUPTED, checkpoint={"every_steps": 1000}))
    stopped = tmp_path / "stopped"
    proc = _run_main(config_file, stopped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    jsonl, deadline = stopped / "metrics.jsonl", time.time() + 300
    while time.time() < deadline and not (jsonl.exists() and len(jsonl.read_text().splitlines()) >= 4):
        time.sleep(0.01)
    # Meanwhile, a second run on the same workdir is refused at once (its lock).
    with pytest.raises(WorkdirLockedError):
        train(tiny_config(synthetic_data_dir, **INTERRUPTED), stopped)
    logged = len(jsonl.read_text().splitlines())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]  # 128 + SIGTERM, after a clean stop
    assert "stopped by SIGTERM after step" in err and "Traceback" not in err
    ckpt = Checkpointer(stopped, read_only=True)
    saved = ckpt.all_steps()
    ckpt.close()
    assert saved[0] == 0 and len(saved) == 2 and logged <= saved[1] < steps, (saved, logged)
    assert not (stopped / LOCK_NAME).exists()

    assert _run_main(config_file, stopped, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL).wait(timeout=300) == 0
    assert train_losses(stopped) == train_losses(uninterrupted)
    a, b = restore_state(uninterrupted, steps), restore_state(stopped, steps)
    assert flat_params(a).keys() == flat_params(b).keys()
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_two_processes_reproduce_the_single_process_run(runs, synthetic_data_dir, tmp_path):
    config_file = write_config_file(tmp_path / "cfg.py", synthetic_data_dir, **MESH_8)
    workdir = tmp_path / "two_procs"
    result = subprocess.run(
        [sys.executable, str(REPO / "launch" / "local.py"), "--num_processes", "2",
         "--devices_per_process", "4", "--", str(REPO / "launch" / "main.py"),
         f"--config={config_file}", f"--workdir={workdir}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    single = train_losses(runs("adapters_8"))
    double = train_losses(workdir)
    np.testing.assert_allclose([double[s] for s in single], list(single.values()), rtol=2e-5)
    a, b = flat_params(restore_state(runs("adapters_8"))), flat_params(restore_state(workdir))
    for path in a:
        np.testing.assert_allclose(b[path], a[path], rtol=1e-4, atol=1e-6, err_msg=str(path))
