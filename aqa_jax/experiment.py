"""One run of a config: :class:`Experiment`, what training, evaluation, prediction, feature
extraction and notebooks all build from.

A config (``configs/<method>.py``, or the ``config.json`` a training run saved in its
workdir) says which dataset, which method and network, which optimizer and how long to train.
:class:`Experiment` turns it into the objects that do the work (the device mesh, the data
sources, the method and its network, the optimizer, the shardings of the train state, the
step arithmetic) and into the states and jitted steps that use them. Each piece is built
the first time it is asked for, and with ``prepare=False`` so is the training split: an
experiment used to score a video does not open a split it does not need.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from aqa_jax.data.pipeline import READER_NICE, make_dataset
from aqa_jax.data.registry import data_source
from aqa_jax.methods import get_method
from aqa_jax.methods.base import Method
from aqa_jax.models.i3d import InceptionI3d, build_i3d
from aqa_jax.steps import Schedule
from aqa_jax.train import reports
from aqa_jax.train.checkpoint import Checkpointer
from aqa_jax.train.feature_cache import backbone_variables, cache_split, check_frozen_backbone, make_clip_feature_fn
from aqa_jax.train.optimizer import make_optimizer
from aqa_jax.train.partition import trainable_predicate
from aqa_jax.train.sharding import batch_sharding, global_batch, make_mesh, replicated
from aqa_jax.train.state import TrainState, abstract_state, abstract_variables, create_train_state, state_shardings
from aqa_jax.train.step import make_predict_step, make_train_step

CONFIG_JSON = "config.json"


def upgrade_renamed_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a saved config (a plain dict, as ``config.json`` holds it) with the keys of
    earlier releases replaced as :data:`aqa_jax.steps.RENAMED` says, meaning what they meant
    then: ``num_epochs`` becomes ``total_epochs`` unless ``total_steps`` was set (it took
    precedence), ``eval_every_steps=-1`` becomes ``eval_every_epochs=1`` and
    ``checkpoint.every_steps=0`` becomes ``checkpoint.every_epochs=1``. A config without
    them comes back equal."""
    out = copy.deepcopy(dict(config))
    if "num_epochs" in out:
        epochs = out.pop("num_epochs")
        if not out.get("total_steps") and not out.get("total_epochs"):
            out["total_epochs"] = epochs
    if (out.get("eval_every_steps") or 0) < 0:
        out["eval_every_steps"] = 0
        out.setdefault("eval_every_epochs", 1)
    checkpoint = out.get("checkpoint")
    if isinstance(checkpoint, Mapping) and "every_steps" in checkpoint and not checkpoint["every_steps"] \
            and "every_epochs" not in checkpoint:
        checkpoint = dict(checkpoint)
        del checkpoint["every_steps"]
        checkpoint["every_epochs"] = 1
        out["checkpoint"] = checkpoint
    return out


def load_run_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a run was trained with (``config.json`` in its workdir), keys of earlier
    releases upgraded (:func:`upgrade_renamed_keys`)."""
    path = Path(workdir) / CONFIG_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {workdir} the --workdir of an aqa-jax training run?")
    return ml_collections.ConfigDict(upgrade_renamed_keys(json.loads(path.read_text())))


def split_batch(batch: Mapping[str, Any], host_keys: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the fields that go to the devices, the fields kept on the host: ``host_keys``)."""
    host_keys = tuple(host_keys)
    device = {k: v for k, v in batch.items() if k not in host_keys}
    host = {k: v for k, v in batch.items() if k in host_keys}
    return device, host


def sample_ids(host: Mapping[str, Any]) -> list[str]:
    """The sample ids of a batch's host fields (``id``), as text."""
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.ravel(host.get("id", []))]


ID_BYTES = 128  # sample ids travel between processes as fixed-width bytes


def _encode_ids(ids: list[str], count: int) -> np.ndarray:
    out = np.zeros((count, ID_BYTES), np.uint8)
    for i, sample in enumerate(ids[:count]):
        raw = sample.encode()[:ID_BYTES]
        out[i, : len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def _decode_ids(rows: np.ndarray) -> list[str]:
    return [bytes(r).rstrip(b"\0").decode(errors="replace") for r in rows]


def param_counts(params: Any, trainable: Any) -> dict[str, int]:
    """``total``, ``trainable`` (by the ``trainable`` patterns) and ``adapter`` parameter
    counts of a parameter tree (arrays or shapes)."""
    is_trainable = trainable_predicate(trainable)
    counts = {"total": 0, "trainable": 0, "adapter": 0}
    for path, leaf in traverse_util.flatten_dict(dict(params)).items():
        n = int(np.prod(leaf.shape))
        counts["total"] += n
        counts["trainable"] += n if is_trainable(path) else 0
        counts["adapter"] += n if "adapter" in path else 0
    return counts


class Experiment:
    """A config made into the objects that train, evaluate and predict with it.

    Build one with :meth:`from_config` (a config, e.g. from
    :func:`aqa_jax.config_args.load_config`, and the workdir its run writes to) or
    :meth:`from_workdir` (a trained run's workdir: the ``config.json`` it saved).

    What it holds (the method prepared on the training split at construction unless
    ``prepare=False``; every other piece built on first use):

    - ``config``, ``workdir``, ``method`` (the :class:`~aqa_jax.methods.base.Method` of
      ``config.method``: sampler, loss, evaluation protocol);
    - ``mesh``: the device mesh of ``config.mesh`` over ``config.num_devices`` devices (0:
      all);
    - ``train_source`` / ``eval_source``: the training and evaluation splits (``eval_source``
      is None without ``data.eval_split``; ``data.eval_name``/``eval_config`` evaluate on
      another dataset);
    - ``schedule``: the run's :class:`~aqa_jax.steps.Schedule` (steps per epoch, total steps,
      how often it evaluates, checkpoints and logs);
    - ``model``: the method's network; ``step_model``: the network the jitted steps run
      (the same, or after :meth:`use_feature_cache` the one reading cached backbone
      features);
    - ``example``: one training example's device fields (batch of 1) as the pipeline yields
      them (clips uint8), the template of a batch's shapes and dtypes; ``init_example``: the
      same as network input (clips normalised by the method), what the network is
      initialised on;
    - ``tx`` and ``lr_schedule``: the optimizer (frozen labels get no update) and its
      learning rate as a function of the step;
    - ``shardings``: the train state's shardings on ``mesh``; ``param_counts``.

    States: :meth:`init_state` (the random init with ``config.init_from``'s weights in
    place, as training starts), :meth:`restore` (a checkpoint of ``workdir`` laid out on
    ``mesh``), :meth:`restore_variables` (a checkpoint's ``params``/``batch_stats`` as
    whole arrays, without opening any data). Functions: :meth:`train_step` and
    :meth:`predict_step` (jitted, explicitly sharded), :meth:`dataset` (the grain pipeline
    of a split), :meth:`evaluate` (the method's protocol on ``eval_source``).

    Example (a notebook, after ``aqa-jax train ... --workdir runs/usdl``)::

        from aqa_jax.experiment import Experiment

        exp = Experiment.from_workdir("runs/usdl")
        state = exp.restore()                   # the latest checkpoint
        summary, columns = exp.evaluate(state)  # e.g. summary["srcc"], columns["score_pred"]
        batch = next(iter(exp.dataset(exp.train_source, train=True)))
        state, metrics = exp.train_step()(state, exp.global_batch(batch))  # one more step

    (With ``step_per_update`` k > 1 a training step takes k stacked batches and
    ``exp.global_batch(batch, leading_dims=1)``.)
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path | None = None, *,
                 prepare: bool = True):
        """See :meth:`from_config`."""
        self.config = config
        self.workdir = Path(workdir).absolute() if workdir is not None else None
        self.method: Method = get_method(config.method)(config)
        self.prepared = False
        if prepare:
            self.prepare()

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir: str | Path | None = None, *,
                    prepare: bool = True) -> "Experiment":
        """The experiment of ``config``, whose run writes to (or was written to) ``workdir``
        (None: no run, e.g. to recreate a config's initial weights).

        ``prepare``: open the training split now and have the method read what it needs
        there (:meth:`prepare`; what it computes goes into ``config``). False opens nothing
        until something needs it, and builds the network from the config alone: for a
        trained run's config (it already holds what preparing computed: CoRe's group
        boundaries, a captioner's vocabulary) when the training split may not be built here;
        a method whose samplers draw from the training split (CoRe and TSA exemplars) is
        prepared all the same before its network is built.
        """
        return cls(config, workdir, prepare=prepare)

    @classmethod
    def from_workdir(cls, workdir: str | Path, *, data_dir: str | None = None,
                     prepare: bool = True) -> "Experiment":
        """The experiment of a trained run: the config saved in ``workdir``
        (:func:`load_run_config`), its data read from ``data_dir`` when given."""
        config = load_run_config(workdir)
        if data_dir:
            config.data.data_dir = data_dir
        return cls(config, workdir, prepare=prepare)

    def __repr__(self) -> str:
        d = self.config.data
        return (f"Experiment({self.config.method} on {d.name}/{d.get('config')}, "
                f"workdir={str(self.workdir) if self.workdir else None})")

    # --- data and step arithmetic -----------------------------------------------------------

    @functools.cached_property
    def mesh(self) -> jax.sharding.Mesh:
        num_devices = int(self.config.get("num_devices", 0))  # 0: all (fewer: scaling studies, tests)
        return make_mesh(self.config.mesh, jax.devices()[:num_devices] if num_devices else None)

    @functools.cached_property
    def train_source(self) -> Any:
        d = self.config.data
        return data_source(d.name, d.get("config"), d.train_split, data_dir=d.get("data_dir"))

    @functools.cached_property
    def eval_source(self) -> Any | None:
        d = self.config.data
        if not d.get("eval_split"):
            return None
        return data_source(d.get("eval_name") or d.name, d.get("eval_config") or d.get("config"),
                           d.eval_split, data_dir=d.get("data_dir"))

    @property
    def step_per_update(self) -> int:
        """Micro-batches per optimizer step (gradient accumulation, ``config.step_per_update``)."""
        return int(self.config.get("step_per_update", 1))

    @functools.cached_property
    def local_batch(self) -> int:
        """This process's share of ``config.batch_size``."""
        pc = jax.process_count()
        if self.config.batch_size % pc:
            raise ValueError(f"config.batch_size={self.config.batch_size} is not a multiple of the "
                             f"{pc} processes")
        return self.config.batch_size // pc

    @functools.cached_property
    def schedule(self) -> Schedule:
        """:meth:`Schedule.from_config` with the training split's steps per epoch: its
        records x ``data.repeat`` // (``batch_size`` x ``step_per_update``)."""
        d, c = self.config.data, self.config
        per_epoch = len(self.train_source) * int(d.get("repeat", 1)) // (c.batch_size * self.step_per_update)
        if per_epoch == 0:
            raise ValueError(
                f"{d.name}/{d.get('config')} {d.train_split} has {len(self.train_source)} records: "
                f"fewer than one step of batch_size {c.batch_size} x step_per_update {self.step_per_update}")
        return Schedule.from_config(self.config, per_epoch)

    def dataset(self, source: Any, *, train: bool) -> Any:
        """The grain pipeline of ``source`` (this process's shard): the method's training
        (shuffled, repeated ``data.repeat`` times, random sampling, last partial batch
        dropped) or evaluation sampler (every record ``data.eval_repeat`` times, in order)."""
        d = self.config.data
        return make_dataset(
            source, self.method.sampler(train), batch_size=self.local_batch, train=train,
            seed=self.config.seed,
            repeat=int(d.get("repeat", 1)) if train else int(d.get("eval_repeat", 1)),
            worker_count=int(d.get("worker_count", 0)), drop_remainder=train,
            reader_nice=int(d.get("reader_nice", READER_NICE)),
        )

    def split_batch(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(device fields, host fields) of a host batch (:attr:`Method.host_keys` stay)."""
        return split_batch(batch, self.method.host_keys)

    def global_batch(self, batch: Mapping[str, Any], leading_dims: int = 0) -> dict[str, jax.Array]:
        """This process's host batch (its device fields) as global arrays on ``mesh``."""
        return global_batch(self.split_batch(batch)[0], self.mesh, leading_dims)

    # --- the method and its network -----------------------------------------------------------

    def prepare(self) -> None:
        """Has the method read the training split and the schedule (once): what it computes
        there (CoRe's group boundaries, a captioner's vocabulary) goes into ``config``."""
        if not self.prepared:
            self.method.prepare(self.train_source, self.schedule)
            self.prepared = True

    def open_data(self) -> None:
        """Opens the training and evaluation splits and prepares the method now, so that a
        missing split stops a run before anything is compiled or trained."""
        self.prepare()
        self.eval_source  # noqa: B018  (opening the split is the check)

    @functools.cached_property
    def model(self) -> nn.Module:
        if self.method.samples_from_train_split:
            self.prepare()
        return self.method.build_model()

    @functools.cached_property
    def step_model(self) -> nn.Module:
        return self.model

    @functools.cached_property
    def example(self) -> dict[str, np.ndarray]:
        """The device fields of the first training record's example (as the loop draws it)."""
        self.prepare()
        one = self.method.sampler(True)(self.train_source[0], np.random.default_rng(0))
        return {k: np.asarray(v)[None] for k, v in self.split_batch(one)[0].items()}

    @functools.cached_property
    def init_example(self) -> dict[str, np.ndarray]:
        """:attr:`example` as the network sees it inside the steps: uint8 clips normalised to
        float32 (:meth:`Method.normalize_inputs`)."""
        return self.method.normalize_inputs(self.example)

    @functools.cached_property
    def boxed_variables(self) -> Any:
        """The network's variables as logically partitioned shapes (nothing computed)."""
        return abstract_variables(self.model, self.init_example)

    @functools.cached_property
    def _optimizer(self) -> tuple[Any, Callable[[Any], Any]]:
        return make_optimizer(self.config.optimizer, nn.unbox(self.boxed_variables["params"]),
                              self.config.trainable, steps_per_epoch=self.schedule.steps_per_epoch,
                              total_steps=self.schedule.total_steps)

    @property
    def tx(self) -> Any:
        """The optimizer (``optax.partition`` over parameter labels)."""
        return self._optimizer[0]

    @property
    def lr_schedule(self) -> Callable[[Any], Any]:
        """The base learning rate as a function of the step."""
        return self._optimizer[1]

    @functools.cached_property
    def shardings(self) -> TrainState:
        rules = [tuple(r) for r in self.config.logical_axis_rules]
        return state_shardings(self.boxed_variables, self.tx, self.mesh, rules)

    @functools.cached_property
    def param_counts(self) -> dict[str, int]:
        return param_counts(nn.unbox(self.boxed_variables["params"]), self.config.trainable)

    def i3d(self, final_endpoint: str | None = None) -> InceptionI3d:
        """The run's I3D alone (``config.model``, adapters included, float32), up to
        ``final_endpoint`` (default: the config's); ValueError for a network without an I3D."""
        model = self.config.get("model", {})
        if "variant" not in model:
            raise ValueError(f"{self.workdir or 'this config'} is a {self.config.get('method')} run "
                             "without an I3D backbone")
        return build_i3d(model, **({"final_endpoint": final_endpoint} if final_endpoint else {}))

    # --- states ------------------------------------------------------------------------------

    def abstract_state(self) -> TrainState:
        """The restore target of this run's checkpoints, laid out on ``mesh``."""
        return abstract_state(self.shardings, self.boxed_variables, self.tx)

    def init_state(self) -> TrainState:
        """The state training starts from: the network initialised with ``config.seed``,
        ``config.init_from``'s weights put in place by the method, sharded on ``mesh``."""
        init_from = self.config.get("init_from", "none")
        return create_train_state(
            self.model, self.tx, self.init_example, self.shardings, seed=self.config.seed,
            load_pretrained=None if init_from in ("none", "", None) else self.method.load_pretrained,
        )

    def _checkpointer(self) -> Checkpointer:
        if self.workdir is None:
            raise ValueError("this experiment has no workdir to read checkpoints from")
        return Checkpointer(self.workdir, read_only=True)

    def checkpoint_step(self, step: int | None = None) -> int:
        """``step`` (default: the latest) if ``workdir`` holds that checkpoint, else
        FileNotFoundError naming the steps it holds."""
        ckpt = self._checkpointer()
        try:
            return ckpt.checked_step(step)
        finally:
            ckpt.close()

    def restore(self, step: int | None = None) -> TrainState:
        """The train state of checkpoint ``step`` (default: the latest), laid out on
        ``mesh`` whatever mesh saved it; ``state.step`` says which step it is."""
        ckpt = self._checkpointer()
        try:
            return ckpt.restore(ckpt.checked_step(step), self.abstract_state())
        finally:
            ckpt.close()

    def restore_variables(self, step: int | None = None) -> dict[str, Any]:
        """``{"params", "batch_stats"}`` of checkpoint ``step`` (default: the latest) as whole
        arrays on this process's first device; opens no data split (``batch_stats`` is left
        out for a network without BatchNorm)."""
        ckpt = self._checkpointer()
        try:
            state = ckpt.restore_item(ckpt.checked_step(step), "state")
        finally:
            ckpt.close()
        variables = {"params": state["params"]}
        if state.get("batch_stats"):
            variables["batch_stats"] = state["batch_stats"]
        return variables

    # --- steps -------------------------------------------------------------------------------

    def batch_shardings(self, leading_dims: int = 0) -> dict[str, Any]:
        """The shardings of a global batch: split over the ``data`` axis after ``leading_dims``
        (1 for the micro-batch axis of gradient accumulation)."""
        return {k: batch_sharding(self.mesh, leading_dims) for k in self.example}

    def train_step(self) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
        """The jitted ``train_step(state, batch) -> (state, metrics)`` of ``step_model``
        (:func:`aqa_jax.train.step.make_train_step`), state donated; with ``step_per_update``
        k > 1 the batch has a leading axis of k micro-batches."""
        c = self.config
        k = self.step_per_update
        return jax.jit(
            make_train_step(
                self.method, self.step_model, self.tx, self.lr_schedule, trainable=c.trainable,
                bn_policy=c.bn_policy, step_per_update=k,
                grad_clip_norm=float(c.optimizer.get("grad_clip_norm", 0.0)), seed=c.seed,
            ),
            in_shardings=(self.shardings, self.batch_shardings(1 if k > 1 else 0)),
            out_shardings=(self.shardings, replicated(self.mesh)),
            donate_argnums=(0,),
        )

    def predict_step(self) -> Callable[[TrainState, Mapping[str, jax.Array]], dict[str, jax.Array]]:
        """The jitted ``predict_step(state, batch) -> per-example predictions`` of
        ``step_model`` (evaluation mode; :meth:`Method.predict`)."""
        return jax.jit(make_predict_step(self.method, self.step_model),
                       in_shardings=(self.shardings, self.batch_shardings(0)))

    def use_feature_cache(self, state: TrainState) -> None:
        """Switches to the frozen-backbone fast path (``config.precompute_features``,
        :mod:`aqa_jax.train.feature_cache`): every video's backbone features computed once
        with ``state``'s backbone; ``train_source``/``eval_source`` become the cached records
        and ``step_model`` the network that reads them. Build steps after this."""
        check_frozen_backbone(self.config)
        model = self.model
        fn = make_clip_feature_fn(self.method, model.backbone, backbone_variables(state))
        sampler = self.method.feature_cache_sampler()
        self.train_source = cache_split(self.train_source, sampler, fn, desc="backbone features [train]")
        if self.eval_source is not None:
            self.eval_source = cache_split(self.eval_source, sampler, fn, desc="backbone features [eval]")
        self.step_model = self.method.use_cached_features(model)
        self.method.prepare(self.train_source, self.schedule)

    # --- evaluation --------------------------------------------------------------------------

    def evaluate(self, state: TrainState, predict_step: Callable | None = None,
                 ) -> tuple[dict[str, float], dict[str, Any]]:
        """The method's evaluation protocol over ``eval_source`` (every record once, on every
        process's shard; the last batch padded and the padding masked out), with
        ``predict_step`` (default: :meth:`predict_step`).

        Returns (summary, per-sample columns with their ``id``s, from ``method.per_sample``).
        """
        source = self.eval_source
        if source is None:
            raise ValueError("the config has no data.eval_split to evaluate")
        predict_step = predict_step or self.predict_step()
        pc = jax.process_count()
        per_process = math.ceil(len(source) / pc) * int(self.config.data.get("eval_repeat", 1))
        local = self.local_batch
        num_batches = math.ceil(per_process / local)
        it = iter(self.dataset(source, train=False))
        collected: dict[str, list[np.ndarray]] = {}
        template = None
        for _ in range(num_batches):
            batch = next(it, None)
            if batch is None:  # this process's shard is shorter: a fully masked batch
                batch, valid, ids = template, np.zeros(local, bool), []
            else:
                device, host = self.split_batch(batch)
                n = len(next(iter(device.values())))
                pad = local - n
                batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) if pad else v
                         for k, v in device.items()}
                valid, ids = np.arange(local) < n, sample_ids(host)
                template = batch
            preds = predict_step(state, global_batch(batch, self.mesh))
            extra = global_batch({"v": valid, "id": _encode_ids(ids, local)}, self.mesh)
            preds["_valid"], preds["_id"] = extra["v"], extra["id"]
            if pc > 1:
                preds = multihost_utils.process_allgather(preds, tiled=True)
            for key, value in jax.device_get(preds).items():
                collected.setdefault(key, []).append(np.asarray(value))
        merged = {k: np.concatenate(v) for k, v in collected.items()}
        valid = merged.pop("_valid").astype(bool)
        ids = _decode_ids(merged.pop("_id")[valid])
        predictions = {k: v[valid] for k, v in merged.items()}
        return self.method.summarize(predictions), {"id": ids, **self.method.per_sample(predictions)}

    def write_evaluation(self, split: str, summary: Mapping[str, float], columns: Mapping[str, Any],
                         title: str = "") -> None:
        """Writes ``predictions_<split>.csv`` (the per-sample columns) and, for score
        methods, ``scatter_<split>.png`` (predicted vs true) into ``workdir``; process 0 only."""
        if jax.process_index() != 0:
            return
        if self.workdir is None:
            raise ValueError("this experiment has no workdir to write its evaluation to")
        ids = columns["id"]
        table = {k: v for k, v in columns.items() if k != "id"}
        reports.write_predictions_csv(self.workdir / reports.PREDICTIONS_CSV.format(split=split), ids, table)
        if "score_pred" in table:
            shown = {k: summary[k] for k in ("srcc", "r_l2") if k in summary}
            reports.plot_scatter(self.workdir / reports.SCATTER_PNG.format(split=split),
                                 table["score_pred"], table["score_true"], title=title, metrics=shown)
