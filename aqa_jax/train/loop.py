"""The training loop shared by every method: ``train(config, workdir)``.

builder → ``tfds.data_source`` → grain pipeline (this process's shard) → global batch on the
mesh, put ``prefetch_batches`` ahead (:mod:`aqa_jax.train.prefetch`) → jitted ``train_step``
(donated, explicitly sharded state) → metrics (TensorBoard, JSONL, a progress bar on a
terminal and log lines otherwise, :mod:`aqa_jax.progress`) → orbax checkpoint (state,
adapters, data iterator, config). Everything the loop runs comes from the run's
:class:`~aqa_jax.experiment.Experiment`; how long it runs and how often it evaluates,
checkpoints and logs, from its :class:`~aqa_jax.steps.Schedule`. A run whose workdir already
holds a checkpoint resumes from it and produces the same result as an uninterrupted run with
the same config.

The loop is asynchronous, as big_vision's ``train.py``: it dispatches a step and goes on to
the next batch while the device computes, and reads the steps' metrics only at sync points
(step 1, every ``log_every_steps``, checkpoints, evaluations, a preemption, the last step),
checking every step read for NaN/Inf (:mod:`aqa_jax.train.pending`). ``clips_per_s`` is
averaged over the steps since the previous log line, evaluation excluded.
``profile_steps=(first, last)`` writes a profiler trace of those steps
(:mod:`aqa_jax.train.profiling`).

The workdir is guarded (docs/RELIABILITY.md): one run at a time holds its lock
(:mod:`aqa_jax.train.workdir`); a resume under another config stops with the diff unless
forced; a state is checked finite before it is saved, so a NaN stop names a finite
checkpoint; an unreadable newest checkpoint falls back to the previous one; SIGTERM saves a
checkpoint and stops (:class:`TrainingPreempted`)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from aqa_jax.experiment import Experiment, sample_ids, upgrade_renamed_keys
from aqa_jax.progress import Progress
from aqa_jax.steps import Schedule, steps
from aqa_jax.train import reports
from aqa_jax.train.checkpoint import Checkpointer
from aqa_jax.train.init_from import record_starting_point
from aqa_jax.train.pending import ADVICE as _ADVICE, NonFiniteLossError, PendingSteps
from aqa_jax.train.prefetch import DevicePrefetch, Prefetched
from aqa_jax.train.profiling import ProfileWindow
from aqa_jax.train.metrics_writer import CURVE_PNG, JSONL, MetricsWriter, plot_learning_curves, read_jsonl
from aqa_jax.train.state import non_finite_parts
from aqa_jax.train.workdir import (_agree, check_resume_config, config_as_json, hold_workdir,
                                   read_saved_config, record_config)



class TrainingPreempted(RuntimeError):
    """SIGTERM (preemption) arrived: a checkpoint of ``step`` was saved; rerun to resume."""

    def __init__(self, step: int, directory: Path):
        super().__init__(f"stopped by SIGTERM after step {step}; its checkpoint is saved in "
                         f"{directory}: run the same command again to resume")
        self.step = step


class _Preemption:
    """Whether SIGTERM asked the run to stop, agreed by every process.

    One process: a SIGTERM handler (installed while training, the previous one restored
    after) sets a flag the loop reads after each step. Several processes: JAX's preemption
    service (``jax.distributed``, which catches SIGTERM itself) picks the step at which all
    of them save, through :func:`multihost_utils.reached_preemption_sync_point`, called at
    every step; without that service, the processes' own flags are gathered every step.
    """

    def __init__(self) -> None:
        self.flag = threading.Event()
        self.previous = None
        self.jax_service = False
        if jax.process_count() > 1:
            try:  # jax.distributed.initialize() starts it unless jax_enable_preemption_service=0
                from jax._src import distributed

                self.jax_service = getattr(distributed.global_state, "preemption_sync_manager",
                                           None) is not None
            except ImportError:  # a JAX without that module: the gathered flags below
                self.jax_service = False
        if not self.jax_service and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, lambda *_: self.flag.set())

    def requested(self, step: int) -> bool:
        if self.jax_service:
            return multihost_utils.reached_preemption_sync_point(step)
        return _agree(not self.flag.is_set()) is False if jax.process_count() > 1 else self.flag.is_set()

    def close(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


def _next_train_batch(it: Iterator, k: int) -> dict[str, Any]:
    if k == 1:
        return next(it)
    micro = [next(it) for _ in range(k)]
    return {key: np.stack([m[key] for m in micro]) for key in micro[0]}


def train(config: ml_collections.ConfigDict, workdir: str | Path, *,
          force_config: bool = False) -> dict[str, Any]:
    """Trains (or resumes) the run of ``config`` in ``workdir``; returns its summary.

    Process 0 holds the workdir's lock throughout (before anything else). A resume
    prints "resuming from step N"; its config must match the saved ``config.json`` except
    for :data:`aqa_jax.train.workdir.RESUMABLE_KEYS` and a longer run, unless
    ``force_config`` (both configs stay in ``config_history.jsonl``).

    Raises:
      NonFiniteLossError: the loss, a gradient or the state became NaN/Inf (the step, the
        batch's sample ids and the last checkpoint verified finite are in the message).
      TrainingPreempted: SIGTERM arrived; the step it stopped after is checkpointed.
      aqa_jax.train.workdir.WorkdirLockedError: another live run holds the workdir.
      aqa_jax.train.workdir.ConfigMismatchError: a resume under another config (the diff).
      aqa_jax.train.checkpoint.CorruptCheckpointError: no checkpoint can be restored.
    """
    with hold_workdir(workdir, process_index=jax.process_index()) as lock:
        if lock is not None and lock.took_over:
            print(f"warning: {lock.took_over}", file=sys.stderr, flush=True)
        return _train(config, workdir, force_config)


def _old_total_steps(saved: Mapping[str, Any], schedule: Schedule) -> int:
    """The total steps of the run a workdir's saved config describes (keys of earlier
    releases mapped, :func:`~aqa_jax.experiment.upgrade_renamed_keys`), with this run's steps
    per epoch; a saved config that says neither counts as this run's length."""
    return steps(upgrade_renamed_keys(saved), "total", schedule.steps_per_epoch) or schedule.total_steps


def _train(config: ml_collections.ConfigDict, workdir: str | Path,
           force_config: bool) -> dict[str, Any]:
    # Before anything else: a missing starting-weights file is a one-line error here.
    started_from = record_starting_point(config, workdir)
    # The method reads the training split here, so what it computes (CoRe's group
    # boundaries) is in the config.json written below; a missing split stops the run now.
    exp = Experiment.from_config(config, workdir)
    exp.open_data()
    schedule = exp.schedule
    main_process = jax.process_index() == 0
    profile = ProfileWindow(config.get("profile_steps"), exp.workdir / "tensorboard", enabled=main_process)
    ckpt_cfg = config.get("checkpoint", {})
    ckpt = Checkpointer(exp.workdir, max_to_keep=int(ckpt_cfg.get("max_to_keep", 3)),
                        async_save=bool(ckpt_cfg.get("async_save", True)))
    def say(message: str, err: bool = False) -> None:
        if main_process:
            print(message, file=sys.stderr if err else sys.stdout, flush=True)

    new_config = config_as_json(config)
    latest = ckpt.latest_step()
    changed: dict[str, Any] = {}
    forced = False
    if latest is None:
        state = exp.init_state()
        start = 0
        resumed = False
    else:
        saved = read_saved_config(exp.workdir)
        where = str(exp.workdir / "config.json")
        if saved is None:  # config.json lost: the newest checkpoint's own copy
            saved, where = ckpt.restore_item(latest, "config"), f"the config of checkpoint {latest}"
        changed, forced = check_resume_config(
            upgrade_renamed_keys(saved), new_config, old_total_steps=_old_total_steps(saved, schedule),
            new_total_steps=schedule.total_steps, force=force_config, where=where)
        start, state = ckpt.restore_latest_readable(
            exp.abstract_state(), agree=_agree, main_process=main_process,
            report=lambda message: say(message, err=True))
        resumed = True
        say(f"resuming from step {start} of {ckpt.directory}")
    if config.get("precompute_features"):
        exp.use_feature_cache(state)
    data_iter = iter(exp.dataset(exp.train_source, train=True))
    if resumed:
        ckpt.restore_data_iter(start, data_iter)
    if main_process:
        exp.workdir.mkdir(parents=True, exist_ok=True)
        event = "start" if not resumed else ("forced resume" if forced else "resume")
        record_config(exp.workdir, new_config, step=start, event=event, changed=changed)
    writer = MetricsWriter(exp.workdir, enabled=main_process, resume_step=start if resumed else None)

    k = exp.step_per_update
    leading = 1 if k > 1 else 0
    train_step = exp.train_step()
    predict_step = exp.predict_step()
    total = schedule.total_steps
    eval_split = config.data.get("eval_split")
    clips_per_step = config.batch_size * k
    last_good = start  # the newest checkpoint verified finite (before it was written)

    def every(period: int, step: int) -> bool:
        return bool(period) and step % period == 0

    def save_checked(step: int, state: Any, batch: Prefetched | None = None, loss: Any = None) -> None:
        """Saves ``state`` as ``step`` only if it is finite (one jitted reduction), with the
        input stream as it stood after ``batch``."""
        bad = non_finite_parts(state)
        if bad and step == 0:
            raise NonFiniteLossError(
                f"the initial state is not finite ({', '.join(bad)}): check the starting "
                f"weights (init_from={config.get('init_from', 'none')!r})")
        if bad:
            ids = ", ".join(sample_ids(batch.host)) if batch else ""
            raise NonFiniteLossError(
                f"step {step}: the state after this step is not finite ({', '.join(bad)}; its "
                f"loss was {loss}, this process's batch: {ids}), so it was not saved. "
                "The last checkpoint, "
                f"verified finite, is step {last_good} in {ckpt.directory}; {_ADVICE}")
        ckpt.save(step, state, batch.iterator_state if batch else data_iter, config.to_dict())

    if start == 0 and not resumed:
        save_checked(0, state)

    def put(batch: Mapping[str, Any]) -> tuple[dict[str, jax.Array], dict[str, Any]]:
        device, host = exp.split_batch(batch)
        return exp.global_batch(device, leading), host

    batches = DevicePrefetch(lambda: _next_train_batch(data_iter, k), put, data_iter.get_state,
                             size=int(config.get("prefetch_batches", 2)))
    in_flight = PendingSteps(max(int(config.get("prefetch_batches", 2)), 1))
    bar = Progress(total, initial=start, enabled=main_process, unit="step",
                   desc=f"{config.method} {config.data.name}")
    preemption = _Preemption()
    tic, clips = time.perf_counter(), 0
    try:
        for step in range(start + 1, total + 1):
            profile.before(step)
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                with jax.profiler.TraceAnnotation("input"):
                    batch = next(batches)
                state, metrics = train_step(state, batch.device)
            in_flight.add(step, metrics, batch.host)
            profile.after(step, metrics)
            clips += clips_per_step
            logged = step == 1 or every(schedule.log_every, step) or step == total
            saved_now = every(schedule.checkpoint_every, step) or step == total
            stopping = step != total and preemption.requested(step)
            evaluating = bool(eval_split) and every(schedule.eval_every, step) and step != total
            if not (logged or saved_now or stopping or evaluating):
                bar.update(1)
                continue
            # A sync point: this step's and the unchecked steps' metrics come to the host.
            try:
                metrics = in_flight.fetch_checked(last_good, ckpt.directory)
            except NonFiniteLossError:
                ckpt.wait()
                bar.close()
                writer.close()
                raise
            if logged:
                toc = time.perf_counter()
                metrics["clips_per_s"] = clips / max(toc - tic, 1e-9)
                metrics["epoch"] = (step - 1) / schedule.steps_per_epoch
                writer.write(step, metrics)
                bar.update(1, loss=metrics["loss"], lr=metrics["lr"], clips_s=metrics["clips_per_s"])
                tic, clips = toc, 0
            else:
                bar.update(1)
            if saved_now or stopping:
                save_checked(step, state, batch, metrics["loss"])
                last_good = step
            if stopping:
                ckpt.wait()
                bar.close()
                writer.close()
                raise TrainingPreempted(step, ckpt.directory)
            if evaluating:
                result, _ = exp.evaluate(state, predict_step)
                writer.write(step, result, split=eval_split)
                tic = time.perf_counter()  # clips/s is the training loop's, without evaluation
    except BaseException:
        profile.close()
        ckpt.wait()  # never leave an async save half-written behind exiting threads
        raise
    finally:
        preemption.close()
    bar.close()
    summary: dict[str, Any] = {"steps": total, "param_counts": exp.param_counts,
                               "started_from": started_from}
    title = f"{config.method} on {config.data.name}/{config.data.get('config')}"
    if eval_split:
        result, columns = exp.evaluate(state, predict_step)
        writer.write(total, result, split=eval_split)
        summary[eval_split] = result
        exp.write_evaluation(eval_split, result, columns, title)
    ckpt.wait()
    ckpt.close()
    writer.close()
    if main_process:
        records = read_jsonl(exp.workdir / JSONL)
        plot_learning_curves(records, exp.workdir / CURVE_PNG, title=title)
        if eval_split:  # the official repos pick the best test epoch: report it and the last
            selection = reports.best_and_last([r for r in records if r["split"] == eval_split])
            if selection:
                summary[f"{eval_split}_best"] = selection["best"]
        (exp.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
