"""grain pipelines: sharding, seeded shuffling, batching, and exact iterator-state restore."""

import numpy as np
import pytest

from aqa_jax.data.pipeline import FrameClipSampler, VSPPSampler, make_dataset
from aqa_jax.data.registry import build, data_source


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("data"))
    build("synthetic_aqa", "finger_tapping_tiny", data_dir=data_dir)
    return data_source("synthetic_aqa", "finger_tapping_tiny", "train", data_dir=data_dir)


SMALL = FrameClipSampler(layout="uniform", num_frames=16, clip_starts=(0, 8), clip_len=8,
                         preset="tsa")


def _ids(batches):
    return [round(float(s), 6) for b in batches for s in b["score"]]


def test_evaluation_pass_sees_every_sample_once_across_shards(source):
    all_scores = sorted(round(float(r["score"]), 6) for r in source)
    seen = []
    for shard in range(2):
        ds = make_dataset(source, SMALL, batch_size=3, train=False, shard_index=shard,
                          shard_count=2)
        batches = list(ds)
        assert batches[0]["clip"].shape == (3, 2, 8, 112, 112, 3)
        seen += _ids(batches)
    assert sorted(seen) == all_scores


def test_training_is_seeded_batched_and_restorable(source):
    def stream(seed):
        return iter(make_dataset(source, SMALL, batch_size=3, train=True, seed=seed,
                                 shard_index=0, shard_count=1))

    it = stream(0)
    first = [next(it) for _ in range(2)]
    state = it.get_state()
    rest = [next(it) for _ in range(4)]  # crosses an epoch boundary (8 samples)
    again = stream(0)
    assert _ids([next(again) for _ in range(2)]) == _ids(first)
    resumed = stream(0)
    resumed.set_state(state)
    for a, b in zip(rest, [next(resumed) for _ in range(4)]):
        np.testing.assert_array_equal(a["clip"], b["clip"])
        np.testing.assert_array_equal(a["score"], b["score"])
    assert _ids([next(stream(1)) for _ in range(1)]) != _ids(first[:1])
    assert all(b["clip"].shape[0] == 3 for b in rest)  # drop_remainder in training


def test_vspp_batches_carry_pretext_labels(source):
    sampler = VSPPSampler(fr=1, clip_len=32, preset="tsa")
    batch = next(iter(make_dataset(source, sampler, batch_size=4, train=True, seed=3,
                                   shard_index=0, shard_count=1)))
    assert batch["clip"].shape == (4, 32, 112, 112, 3)
    assert batch["speed"].dtype == np.int32 and set(batch["speed"]) <= {1, 2, 3, 4}
    assert set(batch["segment"]) <= {0, 1, 2, 3}


def test_an_empty_shard_is_an_error(source):
    with pytest.raises(ValueError, match="no records"):
        make_dataset(source, SMALL, batch_size=1, train=False, shard_index=20, shard_count=21)


def test_iterator_state_round_trips_through_orbax(source, tmp_path):
    import orbax.checkpoint as ocp
    import grain

    def stream():
        return iter(make_dataset(source, SMALL, batch_size=2, train=True, seed=5,
                                 shard_index=0, shard_count=1))

    it = stream()
    for _ in range(3):
        next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt",
                               item_handlers={"data": grain.checkpoint.CheckpointHandler()}) as mgr:
        mgr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mgr.wait_until_finished()
    expected = [next(it) for _ in range(3)]
    resumed = stream()
    with ocp.CheckpointManager(tmp_path / "ckpt",
                               item_handlers={"data": grain.checkpoint.CheckpointHandler()}) as mgr:
        mgr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
    for a, b in zip(expected, [next(resumed) for _ in range(3)]):
        np.testing.assert_array_equal(a["clip"], b["clip"])


@pytest.mark.slow  # spawning a worker process re-imports jax: about a minute on 2 cores
def test_worker_processes_give_the_same_batches(source):
    def first_batches(workers):
        it = iter(make_dataset(source, SMALL, batch_size=2, train=True, seed=9, shard_index=0,
                               shard_count=1, worker_count=workers))
        return [next(it) for _ in range(3)]

    for a, b in zip(first_batches(0), first_batches(1)):
        np.testing.assert_array_equal(a["clip"], b["clip"])


def test_global_training_batches_do_not_depend_on_the_process_count(source):
    def batches(count: int, n: int = 3):
        its = [iter(make_dataset(source, SMALL, batch_size=4 // count, train=True, seed=5,
                                 repeat=2, shard_index=i, shard_count=count))
               for i in range(count)]
        return [[next(it) for it in its] for _ in range(n)]

    for single, parts in zip(batches(1), batches(2)):
        (whole,) = single
        np.testing.assert_array_equal(np.concatenate([p["clip"] for p in parts]), whole["clip"])
        assert [i for p in parts for i in p["id"]] == list(whole["id"])


def test_training_readers_run_niced_and_the_main_thread_keeps_its_priority(source):
    # The training sampler runs in grain's reader threads at data.reader_nice, so that on a
    # CPU host the step's threads keep the cores; the caller's (main) thread is never niced.
    import os
    import threading

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def sampler(record, rng):
        return dict(SMALL(record, rng), nice=np.int32(priority()))

    main_before = priority()
    it = iter(make_dataset(source, sampler, batch_size=2, train=True, seed=0, shard_index=0,
                           shard_count=1, reader_nice=7))
    seen = np.concatenate([next(it)["nice"] for _ in range(3)])
    assert (seen == max(7, main_before)).all()
    assert priority() == main_before
    plain = iter(make_dataset(source, sampler, batch_size=2, train=True, seed=0, shard_index=0,
                              shard_count=1, reader_nice=0))
    assert next(plain)["clip"].shape[0] == 2
