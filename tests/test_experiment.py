"""The public :class:`~aqa_jax.experiment.Experiment`: built from a config or from a trained
run's workdir; its states, steps and evaluation; saved configs of earlier releases read."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from train_helpers import flat_params, restore_state, tiny_config, train_losses

from aqa_jax.data.transforms import normalize_clip
from aqa_jax.experiment import Experiment, load_run_config, upgrade_renamed_keys
from aqa_jax.steps import Schedule, check_no_renamed_keys
from aqa_jax.train.loop import _old_total_steps, train

MESH_8 = dict(mesh=[("data", 4), ("model", 2)])


# ---------------------------------------------------------------- keys of earlier releases


def test_renamed_keys_are_upgraded_to_what_they_meant():
    old = {"num_epochs": 8, "total_steps": 0, "eval_every_steps": -1,
           "checkpoint": {"every_steps": 0, "max_to_keep": 3}}
    new = upgrade_renamed_keys(old)
    assert new == {"total_epochs": 8, "total_steps": 0, "eval_every_steps": 0, "eval_every_epochs": 1,
                   "checkpoint": {"every_epochs": 1, "max_to_keep": 3}}
    assert old["num_epochs"] == 8 and old["checkpoint"]["every_steps"] == 0  # a copy
    check_no_renamed_keys(new)
    # 10 steps an epoch: 8 epochs, evaluated and checkpointed once an epoch
    assert Schedule.from_config(new, 10) == Schedule(steps_per_epoch=10, total_steps=80, eval_every=10,
                                                     checkpoint_every=10, log_every=1)
    # total_steps took precedence over num_epochs
    assert upgrade_renamed_keys({"num_epochs": 8, "total_steps": 3}) == {"total_steps": 3}
    current = {"total_epochs": 2, "eval_every_steps": 5, "checkpoint": {"every_steps": 4}}
    assert upgrade_renamed_keys(current) == current


def test_resume_check_reads_the_total_of_an_earlier_release():
    schedule = Schedule(steps_per_epoch=7, total_steps=70)
    assert _old_total_steps({"num_epochs": 3, "total_steps": 0}, schedule) == 21
    assert _old_total_steps({"num_epochs": 3, "total_steps": 5}, schedule) == 5
    assert _old_total_steps({"total_epochs": 2}, schedule) == 14
    assert _old_total_steps({}, schedule) == 70  # says neither: this run's length


# ---------------------------------------------------------------- one trained run


@pytest.fixture(scope="module")
def run(synthetic_data_dir, tmp_path_factory) -> Path:
    """A 2-step tiny PECoP run on 8 devices, evaluated on the 4-video test split."""
    workdir = tmp_path_factory.mktemp("experiment_run")
    config = tiny_config(synthetic_data_dir, total_steps=2, **MESH_8)
    config.data.eval_split = "test"
    config.data.eval_repeat = 1  # each video's canonical VSPP draw (the debug config takes 8)
    train(config, workdir)
    return workdir


def test_a_run_restores_from_its_workdir(run, synthetic_data_dir):
    exp = Experiment.from_workdir(run)
    assert exp.workdir == run.absolute() and exp.config.method == "vspp"
    assert exp.checkpoint_step() == 2 and exp.schedule.total_steps == 2
    state = exp.restore()
    assert int(state.step) == 2
    saved = flat_params(restore_state(run, 2))
    got = flat_params({"params": jax.device_get(state.params)})
    assert got.keys() == saved.keys()
    for path, value in saved.items():
        np.testing.assert_array_equal(got[path], value, err_msg=str(path))
    # the variables alone, whole arrays, of another step
    variables = exp.restore_variables(1)
    step1 = restore_state(run, 1)
    for collection in ("params", "batch_stats"):
        for path, value in flat_params({"params": step1[collection]}).items():
            np.testing.assert_array_equal(flat_params({"params": variables[collection]})[path], value)
    with pytest.raises(FileNotFoundError, match="steps there"):
        exp.checkpoint_step(7)


def test_evaluate_equals_the_network_applied_to_each_video(run):
    """Oracle: each test video's example through the network alone, one at a time (no
    batching, padding, sharding or gathering)."""
    exp = Experiment.from_workdir(run)
    state = exp.restore()
    summary, columns = exp.evaluate(state)
    variables = exp.restore_variables()
    sampler = exp.method.sampler(False)
    apply = jax.jit(lambda v, b: exp.model.apply(v, b, train=False))
    want = {"id": [], "speed_pred": [], "speed_true": [], "segment_pred": [], "segment_true": []}
    for i in range(len(exp.eval_source)):
        example = sampler(exp.eval_source[i], None)
        batch = {k: np.asarray(v)[None] for k, v in example.items() if k != "id"}
        assert batch["clip"].dtype == np.uint8  # pixels; the network reads the preset's normalisation
        batch["clip"] = normalize_clip(batch["clip"], exp.config.vspp.preset)
        out = apply(variables, batch)
        want["id"].append(example["id"].decode() if isinstance(example["id"], bytes) else str(example["id"]))
        want["speed_pred"].append(int(np.argmax(out["speed"][0])))
        want["segment_pred"].append(int(np.argmax(out["segment"][0])))
        want["speed_true"].append(int(example["speed"]))
        want["segment_true"].append(int(example["segment"]))
    assert columns["id"] == want["id"] and len(want["id"]) == 4
    for key in ("speed_pred", "speed_true", "segment_pred", "segment_true"):
        np.testing.assert_array_equal(columns[key], want[key], err_msg=key)
    assert summary["acc_speed"] == pytest.approx(np.mean(np.equal(want["speed_pred"], want["speed_true"])))
    assert summary["acc_segment"] == pytest.approx(np.mean(np.equal(want["segment_pred"], want["segment_true"])))
    # the loop evaluated the same state at its last step
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["split"] == "test"][-1]
    assert last["acc_speed"] == pytest.approx(summary["acc_speed"])


def test_a_fresh_experiment_starts_where_the_run_started(run):
    """init_state() is the run's step-0 checkpoint: the same seed, the same init."""
    exp = Experiment.from_workdir(run)
    state = exp.init_state()
    step0 = flat_params(restore_state(run, 0))
    got = flat_params({"params": jax.device_get(state.params)})
    for path, value in step0.items():
        np.testing.assert_array_equal(got[path], value, err_msg=str(path))
    assert exp.param_counts["total"] == sum(v.size for v in step0.values())


def test_a_steps_train_step_continues_the_run(run):
    """train_step() from the restored step 1 on the run's second batch gives its step-2 loss."""
    exp = Experiment.from_workdir(run)
    state = exp.restore(1)
    it = iter(exp.dataset(exp.train_source, train=True))
    next(it)  # the first step's batch
    _, metrics = exp.train_step()(state, exp.global_batch(next(it)))
    assert float(metrics["loss"]) == pytest.approx(train_losses(run)[2], rel=1e-5)


def test_a_saved_config_of_an_earlier_release_still_builds(run, tmp_path):
    config = json.loads((run / "config.json").read_text())
    config["num_epochs"], config["total_steps"] = 1, 0
    config.pop("total_epochs", None)
    config["checkpoint"] = {**config["checkpoint"], "every_steps": 0}
    config["checkpoint"].pop("every_epochs", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_run_config(tmp_path)
    assert "num_epochs" not in loaded and loaded.total_epochs == 1
    exp = Experiment.from_config(loaded, tmp_path)
    # 8 training videos x repeat 8 / batch 8: 8 steps an epoch, checkpointed once an epoch
    assert exp.schedule.total_steps == 8 and exp.schedule.checkpoint_every == 8


def test_prediction_needs_no_training_split(run, tmp_path):
    """prepare=False: the network and the checkpoint, no data split opened (a synthetic_aqa
    split that is opened gets built in the data dir)."""
    data_dir = tmp_path / "nothing_here"
    exp = Experiment.from_workdir(run, data_dir=str(data_dir), prepare=False)
    variables = exp.restore_variables()
    assert set(variables["params"]) == {"backbone", "head_speed", "head_segment"}
    assert exp.model.backbone.final_endpoint == exp.config.model.final_endpoint
    assert exp.i3d().final_endpoint == exp.config.model.final_endpoint
    assert not data_dir.exists()


def test_a_new_experiment_has_prepared_its_method(synthetic_data_dir):
    """from_config reads the training split at once: CoRe's group boundaries are in the
    config the loop then saves (and predict later reads). Oracle: the boundaries are
    increasing and span the configured score range."""
    from aqa_jax.config_args import load_config
    from train_helpers import REPO

    config = load_config(f"{REPO}/configs/core.py:dataset=synthetic_aqa,debug")
    config.data.update(data_dir=str(synthetic_data_dir), config="finger_tapping_tiny")
    config.core.group_bounds = []
    exp = Experiment.from_config(config)
    bounds = list(config.core.group_bounds)
    assert exp.prepared and len(bounds) > 2
    assert np.all(np.diff(bounds) > 0) and bounds[0] == 0 and bounds[-1] == config.core.score_range
    lazy = Experiment.from_config(config, prepare=False)
    assert not lazy.prepared
    lazy.model  # noqa: B018  CoRe draws exemplars from the training split: prepared to build it
    assert lazy.prepared and lazy.method.pool is not None
