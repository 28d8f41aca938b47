"""The training loop shared by every method: ``train(config, workdir)``.

builder → ``tfds.data_source`` → grain pipeline (this process's shard) → global batch on the
mesh → jitted ``train_step`` (donated, explicitly sharded state) → metrics (TensorBoard, JSONL,
progress bar) → orbax checkpoint (state, adapters, data iterator, config). A run whose
workdir already holds a checkpoint resumes from it and produces the same result as an
uninterrupted run with the same config.

The workdir is guarded (docs/RELIABILITY.md): one run at a time holds its lock
(:mod:`aqa_jax.train.workdir`); a resume under another config stops with the diff unless
forced; a state is checked finite before it is saved, so a NaN stop names a finite
checkpoint; an unreadable newest checkpoint falls back to the previous one; SIGTERM saves a
checkpoint and stops (:class:`TrainingPreempted`).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from aqa_jax.data.pipeline import make_dataset
from aqa_jax.data.registry import data_source
from aqa_jax.methods import get_method
from aqa_jax.methods.base import Method
from aqa_jax.train import reports
from aqa_jax.train.checkpoint import Checkpointer
from aqa_jax.train.init_from import record_starting_point
from aqa_jax.train.feature_cache import backbone_variables, cache_split, check_frozen_backbone, make_clip_feature_fn
from aqa_jax.train.metrics_writer import CURVE_PNG, JSONL, MetricsWriter, plot_learning_curves, read_jsonl
from aqa_jax.train.optimizer import make_optimizer
from aqa_jax.train.partition import trainable_predicate
from aqa_jax.train.sharding import batch_sharding, global_batch, make_mesh, replicated
from aqa_jax.train.state import (abstract_state, abstract_variables, create_train_state,
                                  non_finite_parts, state_shardings)
from aqa_jax.train.workdir import (_agree, check_resume_config, config_as_json, hold_workdir,
                                   read_saved_config, record_config)
from aqa_jax.train.step import make_predict_step, make_train_step



class NonFiniteLossError(RuntimeError):
    """The loss, the gradients or the state became NaN/Inf; the message says where, which
    checkpoint is the last finite one and what to do."""


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


def _split_host(batch: Mapping[str, Any], host_keys: tuple[str, ...]):
    device = {k: v for k, v in batch.items() if k not in host_keys}
    host = {k: v for k, v in batch.items() if k in host_keys}
    return device, host


def _ids(host: Mapping[str, Any]) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.ravel(host.get("id", []))]


class _Run:
    """Everything derived from the config that training and evaluation share."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path):
        self.config = config
        self.workdir = Path(workdir).absolute()
        num_devices = int(config.get("num_devices", 0))  # 0: all (fewer: scaling studies, tests)
        self.mesh = make_mesh(config.mesh, jax.devices()[:num_devices] if num_devices else None)
        d = config.data
        self.train_source = data_source(d.name, d.get("config"), d.train_split, data_dir=d.get("data_dir"))
        self.method: Method = get_method(config.method)(config)
        self.method.prepare(self.train_source)
        self.model = self.method.build_model()
        self.step_model = self.model  # the network the steps run (see use_feature_cache)
        self.k = int(config.get("step_per_update", 1))
        pc = jax.process_count()
        if config.batch_size % pc:
            raise ValueError(f"config.batch_size={config.batch_size} is not a multiple of the "
                             f"{pc} processes")
        self.local_batch = config.batch_size // pc
        self.repeat = int(d.get("repeat", 1))
        self.steps_per_epoch = len(self.train_source) * self.repeat // (config.batch_size * self.k)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{d.name}/{d.get('config')} {d.train_split} has {len(self.train_source)} records: "
                f"fewer than one step of batch_size {config.batch_size} x step_per_update {self.k}"
            )
        self.total_steps = int(config.get("total_steps") or config.num_epochs * self.steps_per_epoch)
        rng = np.random.default_rng(0)
        one = self.method.sampler(True)(self.train_source[0], rng)
        device_part, _ = _split_host(one, self.method.host_keys)
        self.example = {k: np.asarray(v)[None] for k, v in device_part.items()}
        self.boxed = abstract_variables(self.model, self.example)
        abstract_params = nn.unbox(self.boxed["params"])
        self.tx, self.schedule = make_optimizer(
            config.optimizer, abstract_params, config.trainable,
            steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
        )
        self.rules = [tuple(r) for r in config.logical_axis_rules]
        self.shardings = state_shardings(self.boxed, self.tx, self.mesh, self.rules)
        # data.eval_name / data.eval_config: evaluate on another dataset (default: the training one)
        self.eval_source = (
            data_source(d.get("eval_name") or d.name, d.get("eval_config") or d.get("config"),
                        d.eval_split, data_dir=d.get("data_dir"))
            if d.get("eval_split") else None
        )
        self.param_counts = _param_counts(abstract_params, config.trainable)

    def use_feature_cache(self, state: Any) -> None:
        """Switches to the frozen-backbone fast path (:mod:`aqa_jax.train.feature_cache`)."""
        check_frozen_backbone(self.config)
        fn = make_clip_feature_fn(self.model.backbone, backbone_variables(state))
        sampler = self.method.clip_sampler(False)
        self.train_source = cache_split(self.train_source, sampler, fn, desc="backbone features [train]")
        if self.eval_source is not None:
            self.eval_source = cache_split(self.eval_source, sampler, fn, desc="backbone features [eval]")
        self.method.feature_mode = True
        self.method.prepare(self.train_source)
        self.step_model = self.model.clone(from_features=True)

    def abstract_state(self) -> Any:
        """The restore target of this run's checkpoints, laid out on this run's mesh."""
        return abstract_state(self.shardings, self.boxed, self.tx)

    def batch_shardings(self, leading_dims: int) -> dict[str, Any]:
        return {k: batch_sharding(self.mesh, leading_dims) for k in self.example}

    def dataset(self, split_source, *, train: bool):
        d = self.config.data
        return make_dataset(
            split_source, self.method.sampler(train), batch_size=self.local_batch, train=train,
            seed=self.config.seed,
            repeat=self.repeat if train else int(d.get("eval_repeat", 1)),
            worker_count=int(d.get("worker_count", 0)), drop_remainder=train,
        )


def _param_counts(params: Any, trainable: Any) -> dict[str, int]:
    is_trainable = trainable_predicate(trainable)
    flat = traverse_util.flatten_dict(dict(params))
    counts = {"total": 0, "trainable": 0, "adapter": 0}
    for path, leaf in flat.items():
        n = int(np.prod(leaf.shape))
        counts["total"] += n
        counts["trainable"] += n if is_trainable(path) else 0
        counts["adapter"] += n if "adapter" in path else 0
    return counts


def _next_train_batch(it: Iterator, k: int) -> dict[str, Any]:
    if k == 1:
        return next(it)
    micro = [next(it) for _ in range(k)]
    return {key: np.stack([m[key] for m in micro]) for key in micro[0]}


ID_BYTES = 128  # sample ids travel between processes as fixed-width bytes


def _encode_ids(ids: list[str], count: int) -> np.ndarray:
    out = np.zeros((count, ID_BYTES), np.uint8)
    for i, sample in enumerate(ids[:count]):
        raw = sample.encode()[:ID_BYTES]
        out[i, : len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def _decode_ids(rows: np.ndarray) -> list[str]:
    return [bytes(r).rstrip(b"\0").decode(errors="replace") for r in rows]


def evaluate(run: _Run, state: Any, predict_step: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """The method's evaluation protocol over the eval split (every record once, on every
    process's shard; the last batch padded and the padding masked out).

    Returns (summary, per-sample columns with their ``id``s, from ``method.per_sample``).
    """
    d = run.config.data
    source = run.eval_source
    pc = jax.process_count()
    per_process = math.ceil(len(source) / pc) * int(d.get("eval_repeat", 1))
    num_batches = math.ceil(per_process / run.local_batch)
    it = iter(run.dataset(source, train=False))
    collected: dict[str, list[np.ndarray]] = {}
    template = None
    for _ in range(num_batches):
        batch = next(it, None)
        if batch is None:  # this process's shard is shorter: a fully masked batch
            batch, valid, ids = template, np.zeros(run.local_batch, bool), []
        else:
            device, host = _split_host(batch, run.method.host_keys)
            n = len(next(iter(device.values())))
            pad = run.local_batch - n
            batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) if pad else v
                     for k, v in device.items()}
            valid, ids = np.arange(run.local_batch) < n, _ids(host)
            template = batch
        preds = predict_step(state, global_batch(batch, run.mesh))
        extra = global_batch({"v": valid, "id": _encode_ids(ids, run.local_batch)}, run.mesh)
        preds["_valid"], preds["_id"] = extra["v"], extra["id"]
        if pc > 1:
            preds = multihost_utils.process_allgather(preds, tiled=True)
        for key, value in jax.device_get(preds).items():
            collected.setdefault(key, []).append(np.asarray(value))
    merged = {k: np.concatenate(v) for k, v in collected.items()}
    valid = merged.pop("_valid").astype(bool)
    ids = _decode_ids(merged.pop("_id")[valid])
    predictions = {k: v[valid] for k, v in merged.items()}
    return run.method.summarize(predictions), {"id": ids, **run.method.per_sample(predictions)}


def write_evaluation(run: _Run, split: str, summary: Mapping[str, float],
                     columns: Mapping[str, Any], title: str = "") -> None:
    """The per-sample CSV and, for score methods, the predicted-vs-true scatter plot."""
    if jax.process_index() != 0:
        return
    ids = columns["id"]
    table = {k: v for k, v in columns.items() if k != "id"}
    reports.write_predictions_csv(run.workdir / reports.PREDICTIONS_CSV.format(split=split), ids, table)
    if "score_pred" in table:
        shown = {k: summary[k] for k in ("srcc", "r_l2") if k in summary}
        reports.plot_scatter(run.workdir / reports.SCATTER_PNG.format(split=split),
                             table["score_pred"], table["score_true"], title=title, metrics=shown)


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


_ADVICE = ("it is the newest checkpoint there, so rerunning resumes from it: add --force-config "
           "and a lower optimizer.lr (or an optimizer.grad_clip_norm)")


def _old_total_steps(saved: Mapping[str, Any], run: _Run) -> int:
    total = saved.get("total_steps") or 0
    return int(total or int(saved.get("num_epochs", 0) or 0) * run.steps_per_epoch) or run.total_steps


def _train(config: ml_collections.ConfigDict, workdir: str | Path,
           force_config: bool) -> dict[str, Any]:
    # Before anything else: a missing starting-weights file is a one-line error here.
    started_from = record_starting_point(config, workdir)
    run = _Run(config, workdir)
    main_process = jax.process_index() == 0
    ckpt_cfg = config.get("checkpoint", {})
    ckpt = Checkpointer(run.workdir, max_to_keep=int(ckpt_cfg.get("max_to_keep", 3)),
                        async_save=bool(ckpt_cfg.get("async_save", True)))
    def say(message: str, err: bool = False) -> None:
        if main_process:
            print(message, file=sys.stderr if err else sys.stdout, flush=True)

    new_config = config_as_json(config)
    latest = ckpt.latest_step()
    changed: dict[str, Any] = {}
    forced = False
    if latest is None:
        init_from = config.get("init_from", "none")
        state = create_train_state(
            run.model, run.tx, run.example, run.shardings, seed=config.seed,
            load_pretrained=None if init_from in ("none", "") else run.method.load_pretrained,
        )
        start = 0
        resumed = False
    else:
        saved = read_saved_config(run.workdir)
        where = str(run.workdir / "config.json")
        if saved is None:  # config.json lost: the newest checkpoint's own copy
            saved, where = ckpt.restore_item(latest, "config"), f"the config of checkpoint {latest}"
        changed, forced = check_resume_config(
            saved, new_config, old_total_steps=_old_total_steps(saved, run),
            new_total_steps=run.total_steps, force=force_config, where=where)
        start, state = ckpt.restore_latest_readable(
            run.abstract_state(), agree=_agree, main_process=main_process,
            report=lambda message: say(message, err=True))
        resumed = True
        say(f"resuming from step {start} of {ckpt.directory}")
    if config.get("precompute_features"):
        run.use_feature_cache(state)
    data_iter = iter(run.dataset(run.train_source, train=True))
    if resumed:
        ckpt.restore_data_iter(start, data_iter)
    if main_process:
        run.workdir.mkdir(parents=True, exist_ok=True)
        event = "start" if not resumed else ("forced resume" if forced else "resume")
        record_config(run.workdir, new_config, step=start, event=event, changed=changed)
    writer = MetricsWriter(run.workdir, enabled=main_process, resume_step=start if resumed else None)

    leading = 1 if run.k > 1 else 0
    train_step = jax.jit(
        make_train_step(
            run.method, run.step_model, run.tx, run.schedule, trainable=config.trainable,
            bn_policy=config.bn_policy, step_per_update=run.k,
            grad_clip_norm=float(config.optimizer.get("grad_clip_norm", 0.0)), seed=config.seed,
        ),
        in_shardings=(run.shardings, run.batch_shardings(leading)),
        out_shardings=(run.shardings, replicated(run.mesh)),
        donate_argnums=(0,),
    )
    predict_step = jax.jit(
        make_predict_step(run.method, run.step_model),
        in_shardings=(run.shardings, run.batch_shardings(0)),
    )
    every_ckpt = int(ckpt_cfg.get("every_steps", 0)) or run.steps_per_epoch
    every_eval = int(config.get("eval_every_steps", 0))  # -1: once per epoch
    every_eval = run.steps_per_epoch if every_eval < 0 else every_eval
    eval_split = config.data.get("eval_split")
    clips_per_step = config.batch_size * run.k
    last_good = start  # the newest checkpoint verified finite (before it was written)

    def save_checked(step: int, state: Any, ids: str = "") -> None:
        """Saves ``state`` as ``step`` only if it is finite (one jitted reduction)."""
        bad = non_finite_parts(state)
        if bad and step == 0:
            raise NonFiniteLossError(
                f"the initial state is not finite ({', '.join(bad)}): check the starting "
                f"weights (init_from={config.get('init_from', 'none')!r})")
        if bad:
            raise NonFiniteLossError(
                f"step {step}: the state after this step is not finite ({', '.join(bad)}; its "
                f"loss was {metrics['loss']}, this process's batch: {ids}), so it was not saved. "
                "The last checkpoint, "
                f"verified finite, is step {last_good} in {ckpt.directory}; {_ADVICE}")
        ckpt.save(step, state, data_iter, config.to_dict())

    metrics: dict[str, float] = {}
    if start == 0 and not resumed:
        save_checked(0, state)

    bar = tqdm(total=run.total_steps, initial=start, disable=not main_process,
               desc=f"{config.method} {config.data.name}", unit="step", dynamic_ncols=True)
    preemption = _Preemption()
    tic = time.perf_counter()
    try:
        for step in range(start + 1, run.total_steps + 1):
            batch = _next_train_batch(data_iter, run.k)
            device, host = _split_host(batch, run.method.host_keys)
            state, metrics = train_step(state, global_batch(device, run.mesh, leading))
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])):
                ckpt.wait()
                bar.close()
                writer.close()
                raise NonFiniteLossError(
                    f"step {step}: loss={metrics['loss']} grad_norm={metrics['grad_norm']} is not "
                    f"finite (this process's batch: {', '.join(_ids(host))}). The last "
                    f"checkpoint, verified finite, is step {last_good} in {ckpt.directory}; "
                    f"{_ADVICE}, or check those samples."
                )
            toc = time.perf_counter()
            metrics["clips_per_s"] = clips_per_step / max(toc - tic, 1e-9)
            metrics["epoch"] = (step - 1) / run.steps_per_epoch
            tic = toc
            if step % int(config.get("log_every_steps", 1)) == 0 or step == run.total_steps:
                writer.write(step, metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.2e}",
                            clips_s=f"{metrics['clips_per_s']:.1f}")
            saved_now = step % every_ckpt == 0 or step == run.total_steps
            if saved_now:
                save_checked(step, state, ", ".join(_ids(host)))
                last_good = step
            if step != run.total_steps and preemption.requested(step):
                if not saved_now:
                    save_checked(step, state, ", ".join(_ids(host)))
                ckpt.wait()
                bar.close()
                writer.close()
                raise TrainingPreempted(step, ckpt.directory)
            if eval_split and every_eval and step % every_eval == 0 and step != run.total_steps:
                result, _ = evaluate(run, state, predict_step)
                writer.write(step, result, split=eval_split)
    except BaseException:
        ckpt.wait()  # never leave an async save half-written behind exiting threads
        raise
    finally:
        preemption.close()
    bar.close()
    summary: dict[str, Any] = {"steps": run.total_steps, "param_counts": run.param_counts,
                               "started_from": started_from}
    title = f"{config.method} on {config.data.name}/{config.data.get('config')}"
    if eval_split:
        result, columns = evaluate(run, state, predict_step)
        writer.write(run.total_steps, result, split=eval_split)
        summary[eval_split] = result
        write_evaluation(run, eval_split, result, columns, title)
    ckpt.wait()
    ckpt.close()
    writer.close()
    if main_process:
        records = read_jsonl(run.workdir / JSONL)
        plot_learning_curves(records, run.workdir / CURVE_PNG, title=title)
        if eval_split:  # the official repos pick the best test epoch: report it and the last
            selection = reports.best_and_last([r for r in records if r["split"] == eval_split])
            if selection:
                summary[f"{eval_split}_best"] = selection["best"]
        (run.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
