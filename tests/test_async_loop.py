"""The asynchronous training loop: batches prefetched with the stream's state after each,
metrics read only at sync points with every step checked for NaN, a profiler window."""

from __future__ import annotations

import gzip
import json
import re

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from train_helpers import tiny_config

from aqa_jax.train.loop import NonFiniteLossError, train
from aqa_jax.train.pending import PendingSteps
from aqa_jax.train.prefetch import DevicePrefetch

MESH_1 = dict(num_devices=1, mesh=[("data", 1), ("model", 1)])


def _stream():
    return iter(grain.MapDataset.range(10).shuffle(seed=3).batch(2).to_iter_dataset())


@pytest.mark.parametrize("size", [0, 1, 2, 5])
def test_prefetch_keeps_order_and_the_state_after_each_batch(size):
    it = _stream()
    puts = []

    def put(batch):
        puts.append(batch)
        return {"x": batch * 10}, {"id": batch}

    served = list(DevicePrefetch(lambda: next(it), put, it.get_state, size=size))
    reference = _stream()
    assert len(served) == 5
    for item in served:
        expected = next(reference)  # an independent iterator, read one batch at a time
        np.testing.assert_array_equal(item.host["id"], expected)
        np.testing.assert_array_equal(item.device["x"], expected * 10)
        assert json.loads(item.iterator_state.get_state()) == reference.get_state()
        # Restoring that state into a fresh iterator continues right after this batch.
        resumed = _stream()
        resumed.set_state(json.loads(item.iterator_state.get_state()))
        rest = list(resumed)
        ahead = _stream()
        ahead.set_state(reference.get_state())
        assert [r.tolist() for r in rest] == [r.tolist() for r in ahead]


def test_prefetch_runs_ahead_by_its_size():
    it = _stream()
    pulled = []

    def pull():
        pulled.append(next(it))
        return pulled[-1]

    prefetch = DevicePrefetch(pull, lambda b: (b, {}), it.get_state, size=2)
    next(prefetch)
    assert len(pulled) == 3  # the batch served and two behind it, already put


def _metrics(loss, grad_norm=1.0):
    return {"loss": jnp.float32(loss), "grad_norm": jnp.float32(grad_norm), "lr": jnp.float32(0.1)}


def test_pending_steps_name_the_first_non_finite_step_of_the_range_read():
    pending = PendingSteps(max_in_flight=2)
    for step, loss in [(3, 1.0), (4, 2.0), (5, np.nan), (6, np.inf), (7, 3.0)]:
        pending.add(step, _metrics(loss), {"id": np.array([f"video_{step}a", f"video_{step}b"])})
    with pytest.raises(NonFiniteLossError) as err:
        pending.fetch_checked(last_good=2, checkpoints="/runs/x/checkpoints")
    message = str(err.value)
    assert message.startswith("step 5: loss=nan")
    assert "steps 3-7" in message and "video_5a, video_5b" in message
    assert "verified finite, is step 2 in /runs/x/checkpoints" in message


def test_pending_steps_return_the_newest_metrics_and_empty():
    pending = PendingSteps()
    pending.add(1, _metrics(4.0), {})
    pending.add(2, _metrics(3.0, grad_norm=0.5), {})
    assert pending.fetch_checked(0, "c") == {"loss": 3.0, "grad_norm": 0.5, "lr": pytest.approx(0.1)}
    assert len(pending) == 0
    pending.add(3, _metrics(1.0, grad_norm=np.inf), {})
    with pytest.raises(NonFiniteLossError, match=r"step 3: loss=1.0 grad_norm=inf .*of step 3,"):
        pending.fetch_checked(2, "c")


def _nan_step(error: NonFiniteLossError) -> int:
    return int(re.match(r"step (\d+):", str(error)).group(1))


def test_a_nan_between_log_steps_is_the_step_a_synchronous_run_stops_at(synthetic_data_dir, tmp_path):
    """The oracle is the same run reading every step's metrics (log_every_steps=1)."""
    common = dict(MESH_1, total_steps=8, optimizer={"lr": 1e30},
                  checkpoint={"every_steps": 8, "max_to_keep": 1})
    with pytest.raises(NonFiniteLossError) as every_step:
        train(tiny_config(synthetic_data_dir, **common, log_every_steps=1), tmp_path / "sync")
    with pytest.raises(NonFiniteLossError) as every_fourth:
        train(tiny_config(synthetic_data_dir, **common, log_every_steps=4), tmp_path / "async")
    first_bad = _nan_step(every_step.value)
    assert 2 <= first_bad <= 4  # step 1 is always read alone; 2-4 together at step 4
    assert _nan_step(every_fourth.value) == first_bad
    message = str(every_fourth.value)
    assert "steps 2-4, read together" in message
    assert "finger_tapping_" in message and "verified finite, is step 0" in message


@pytest.mark.slow  # a tiny training run with the profiler on, about a minute (make test-all)
def test_profile_steps_write_a_trace_of_those_steps(synthetic_data_dir, tmp_path):
    config = tiny_config(synthetic_data_dir, **MESH_1, total_steps=3, profile_steps=(2, 3),
                         checkpoint={"every_steps": 3})
    train(config, tmp_path)
    traces = list((tmp_path / "tensorboard" / "plugins" / "profile").glob("*/*.trace.json.gz"))
    assert len(traces) == 1 and list(traces[0].parent.glob("*.xplane.pb"))
    events = json.loads(gzip.decompress(traces[0].read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    names = {e.get("name") for e in events}
    assert {"train", "input"} <= names
    steps = {int(e["args"]["step_num"]) for e in events
             if e.get("name") == "train" and "step_num" in e.get("args", {})}
    assert steps == {2, 3}


def test_profile_steps_are_checked(synthetic_data_dir, tmp_path):
    config = tiny_config(synthetic_data_dir, **MESH_1, total_steps=3, profile_steps=(3, 2))
    with pytest.raises(ValueError, match="profile_steps=.*first <= last"):
        train(config, tmp_path)
