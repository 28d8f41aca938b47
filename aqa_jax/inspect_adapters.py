"""Inspecting PECoP's 3D-Adapters in a training run (``notebooks/inspect_adapters.ipynb``).

Everything here reads checkpoints read-only and returns plain Python/numpy values (lists of
row dicts for tables, :func:`format_table` to print them) or matplotlib figures, so the same
analysis runs in a notebook, a script or a test:

- :func:`load_run` — a run's config, parameters and BatchNorm statistics at one checkpoint
  step, restored onto this machine's CPU whatever mesh saved them;
  :func:`load_adapters` — the ``adapters`` checkpoint item alone, or an ``aqa-jax
  export-adapters`` ``.npz``;
- :func:`adapter_table` — per block: weight norms of each adapter layer, the scale α
  (PECoP's ``se``; ``Adapter3D``'s ``scale`` parameter, one value per channel, initialised
  to 1) statistics, parameter count;
- :func:`initial_adapters` (the initialisation recreated from the config, exactly as the
  training loop created it), :func:`change_from_init`, :func:`blocks_moved_most`;
- :func:`trained_share` — parameters per label, the trained share, and (given the step-0
  state) how many values actually changed;
- :func:`feature_similarity` — cosine similarity of pooled ``Mixed_5c`` features computed
  with and without the adapters, on clips from :func:`sample_clips`;
- :func:`compare_runs` — two runs (e.g. two PD4T tasks) block by block;
- ``plot_*`` helpers returning ``matplotlib.figure.Figure`` objects (not registered with
  pyplot: display them in a notebook or ``fig.savefig(...)``).

An *adapters* value (:data:`Adapters`) is ``{block: {layer: array}}`` with blocks in network
order (``'Mixed_3b'``, …) and layers ``down/kernel``, ``down/bias``, ``up/kernel``,
``up/bias``, ``scale``. Every function taking adapters also accepts an :class:`AdapterRun`
or a raw parameter tree (nested dicts holding ``adapter`` submodules).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

LAYERS: tuple[str, ...] = ("down/kernel", "down/bias", "up/kernel", "up/bias", "scale")
Adapters = dict[str, dict[str, np.ndarray]]
Rows = list[dict[str, Any]]


# ── loading ──────────────────────────────────────────────────────────────────────────────────


@dataclasses.dataclass
class AdapterRun:
    """One checkpoint of a training run, as numpy arrays on the host.

    Attributes:
      name: a label for tables and plots (default ``<workdir name>@<step>``).
      workdir: the run's ``--workdir`` (None for a run assembled by hand).
      step: the checkpoint step.
      steps: every checkpoint step the run holds.
      config: the config the run was trained with (the checkpoint's ``config`` item).
      params: the full parameter tree (nested dicts of numpy arrays).
      batch_stats: the BatchNorm statistics tree (empty for a network without BN).
    """

    name: str
    workdir: Path | None
    step: int
    steps: list[int]
    config: Any
    params: dict[str, Any]
    batch_stats: dict[str, Any]

    @property
    def adapters(self) -> Adapters:
        """The run's adapters (see :data:`Adapters`)."""
        return adapters_of(self.params)


def _numpy_tree(tree: Any) -> Any:
    import jax

    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def load_run(run_dir: str | Path, step: int | None = None, *, name: str | None = None) -> AdapterRun:
    """Config, parameters and BatchNorm statistics of ``run_dir`` at ``step`` (default: the
    latest checkpoint), restored read-only as whole arrays on this machine (any saving mesh).

    Raises:
      FileNotFoundError: ``run_dir`` is not a training workdir, or has no such step (the
        message lists the steps it has).
    """
    import ml_collections

    from aqa_jax.train.checkpoint import Checkpointer

    workdir = Path(run_dir)
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        step = ckpt.checked_step(step)
        steps = ckpt.all_steps()
        state = ckpt.restore_item(step, "state")
        config = ckpt.restore_item(step, "config")
    finally:
        ckpt.close()
    return AdapterRun(
        name=name or f"{workdir.name}@{step}",
        workdir=workdir,
        step=int(step),
        steps=sorted(int(s) for s in steps),
        config=ml_collections.ConfigDict(dict(config)),
        params=_numpy_tree(dict(state["params"])),
        batch_stats=_numpy_tree(dict(state.get("batch_stats") or {})),
    )


def load_adapters(path: str | Path, step: int | None = None) -> Adapters:
    """The adapters alone, from any of:

    - a ``.npz`` written by ``aqa-jax export-adapters`` (or :func:`~aqa_jax.train.checkpoint.save_adapters_npz`);
    - a training workdir: the ``adapters`` item of checkpoint ``step`` (default: the latest),
      without reading the full state;
    - a checkpoint step folder ``<workdir>/checkpoints/<step>``.

    Raises:
      FileNotFoundError: none of the above; ValueError: the checkpoint has no adapters.
    """
    from aqa_jax.train.checkpoint import Checkpointer, load_adapters_npz

    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        return adapters_of(load_adapters_npz(path))
    if path.is_dir() and path.parent.name == "checkpoints" and path.name.isdigit():
        path, step = path.parent.parent, int(path.name) if step is None else step
    if not (path / "checkpoints").is_dir():
        raise FileNotFoundError(
            f"{path}: expected an export-adapters .npz, a training workdir (with checkpoints/) "
            "or a checkpoints/<step> folder")
    ckpt = Checkpointer(path, read_only=True)
    try:
        step = ckpt.checked_step(step)
        tree = ckpt.restore_item(step, "adapters")
    finally:
        ckpt.close()
    if not tree:
        raise ValueError(f"checkpoint {step} of {path} has no adapters (its model has no adapter_blocks)")
    return adapters_of(_numpy_tree(dict(tree)))


def _block_order(name: str) -> tuple[int, str]:
    from aqa_jax.models.i3d import ENDPOINTS

    last = name.rsplit("/", 1)[-1]
    return (ENDPOINTS.index(last) if last in ENDPOINTS else len(ENDPOINTS), name)


def adapters_of(tree: Any) -> Adapters:
    """:data:`Adapters` from an :class:`AdapterRun`, a parameter tree (any nesting with
    ``adapter`` submodules, e.g. ``params`` or the ``adapters`` checkpoint item) or an
    :data:`Adapters` value (returned as numpy). Blocks are keyed by their module path, a
    leading ``backbone/`` dropped; sorted in network order.
    """
    from flax import traverse_util

    if isinstance(tree, AdapterRun):
        return tree.adapters
    if not isinstance(tree, Mapping):
        raise TypeError(f"expected a run, a parameter tree or adapters, got {type(tree).__name__}")
    if _is_adapters_value(tree):
        return {b: _ordered_layers(tree[b]) for b in sorted(tree, key=_block_order)}
    out: Adapters = {}
    for path, value in traverse_util.flatten_dict(dict(tree)).items():
        if "adapter" not in path:
            continue
        i = path.index("adapter")
        prefix = path[1:i] if path[:1] == ("backbone",) else path[:i]
        out.setdefault("/".join(prefix), {})["/".join(path[i + 1:])] = np.asarray(value)
    return {b: _ordered_layers(out[b]) for b in sorted(out, key=_block_order)}


def _ordered_layers(layers: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    rank = {k: i for i, k in enumerate(LAYERS)}
    return {k: np.asarray(layers[k]) for k in sorted(layers, key=lambda k: (rank.get(k, len(rank)), k))}


def _check_same_blocks(a: Adapters, b: Adapters, what: str) -> None:
    if list(a) != list(b):
        raise ValueError(f"{what}: the adapters are in different blocks: {list(a)} vs {list(b)}")
    for block in a:
        shapes_a = {k: v.shape for k, v in a[block].items()}
        shapes_b = {k: v.shape for k, v in b[block].items()}
        if shapes_a != shapes_b:
            raise ValueError(f"{what}: {block} differs in shape: {shapes_a} vs {shapes_b}")


def _flat(layers: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(layers[k]).astype(np.float64) for k in sorted(layers)])


def _weights(layers: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in layers.items() if k != "scale"}


def _norm(x: np.ndarray) -> float:
    return float(np.linalg.norm(np.ravel(x).astype(np.float64)))


# ── per-block statistics ─────────────────────────────────────────────────────────────────────


def adapter_table(adapters: Any) -> Rows:
    """One row per adapter block: ``block``, ``channels`` C, ``hidden`` C/λ, ``params``, the
    Frobenius norm of each layer (``|down/kernel|``, ``|down/bias|``, ``|up/kernel|``,
    ``|up/bias|``, ``|scale|``) and the scale α's ``alpha_mean``, ``alpha_std``,
    ``alpha_min``, ``alpha_max`` (α starts at 1 in every channel)."""
    rows = []
    for block, layers in adapters_of(adapters).items():
        alpha = np.asarray(layers["scale"], np.float64)
        row: dict[str, Any] = {
            "block": block,
            "channels": int(alpha.size),
            "hidden": int(np.size(layers["down/bias"])) if "down/bias" in layers else None,
            "params": int(sum(np.size(v) for v in layers.values())),
        }
        row.update({f"|{k}|": _norm(layers[k]) for k in LAYERS if k in layers})
        row.update(alpha_mean=float(alpha.mean()), alpha_std=float(alpha.std()),
                   alpha_min=float(alpha.min()), alpha_max=float(alpha.max()))
        rows.append(row)
    return rows


def _init_setup(config: Any, data_dir: str | None):
    """(config, method, network, example) of the config's
    :class:`~aqa_jax.experiment.Experiment`, as the training loop builds them."""
    import ml_collections

    from aqa_jax.experiment import Experiment, upgrade_renamed_keys

    plain = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    config = ml_collections.ConfigDict(upgrade_renamed_keys(plain))  # a checkpoint of an earlier release
    if data_dir is not None:
        config.data.data_dir = data_dir
    exp = Experiment.from_config(config)
    return config, exp.method, exp.model, exp.init_example


def _adapter_weights_from_init_from(config: Any) -> bool:
    """Whether ``config.init_from`` can put adapter weights in place (the named Kinetics-400
    checkpoints and ``none`` leave the adapters at their random init; see
    :mod:`aqa_jax.weights.init`)."""
    from aqa_jax.weights.named import NAMED, NONE_NAMES, PYPI_NAMES

    return config.get("init_from", "none") not in (None, *NONE_NAMES, *PYPI_NAMES, *NAMED)


def initial_variables(config: Any, *, data_dir: str | None = None) -> dict[str, Any]:
    """The variables (``{'params', 'batch_stats'}``, numpy) a run of ``config`` started from,
    recreated as :func:`aqa_jax.train.loop.train` creates them: the method's network
    initialised with ``jax.random.key(config.seed)`` on an example drawn from the training
    split by the method's training sampler (so every shape is the run's), then
    ``method.load_pretrained`` (``config.init_from``: Kinetics-400, a converted checkpoint,
    another run's workdir — the latter read as it is *now*).

    JAX draws random numbers with the partitionable threefry, so the values do not depend on
    the mesh the run used. The step-0 checkpoint, which the loop saves before the first
    update (while ``checkpoint.max_to_keep`` keeps it), holds the same values and needs no
    data. Compiling the whole initialisation takes a while on a CPU; for the adapters alone
    :func:`initial_adapters` is much faster.

    Raises:
      FileNotFoundError: the training split is not built here (the example comes from it);
        use the run's step-0 checkpoint instead.
    """
    import flax.linen as nn
    import jax

    config, method, model, example = _init_setup(config, data_dir)

    def init(rng):
        return nn.unbox(model.init({"params": rng, "dropout": rng}, example, train=False))

    variables = _numpy_tree(jax.jit(init)(jax.random.key(int(config.seed))))
    if config.get("init_from", "none") not in ("none", "", None):
        variables = method.load_pretrained(variables)
    return variables


def initial_adapters(config: Any, *, data_dir: str | None = None) -> Adapters:
    """The adapters a run of ``config`` started from, recreated from its seed as the training
    loop created them (see :func:`initial_variables`; the result equals the run's step-0
    ``adapters`` exactly, which the tests check).

    With ``init_from`` ``kinetics400`` or ``none`` the adapters keep their random init, so
    only they are computed: the same jitted ``model.init`` with every other output left
    out, which XLA then does not compute (each parameter's random stream depends only on
    the seed and its module path, not on what else is computed). With any other
    ``init_from`` (a converted PECoP checkpoint, another run) the full
    :func:`initial_variables` runs.
    """
    import flax.linen as nn
    import jax
    from flax import traverse_util

    from aqa_jax.train.partition import label_of

    if _adapter_weights_from_init_from(config):
        return adapters_of(initial_variables(config, data_dir=data_dir)["params"])
    config, _, model, example = _init_setup(config, data_dir)

    def init(rng):
        params = nn.unbox(model.init({"params": rng, "dropout": rng}, example, train=False))["params"]
        flat = traverse_util.flatten_dict(dict(params))
        return {"/".join(k): v for k, v in flat.items() if label_of(k) == "adapter"}

    flat = _numpy_tree(jax.jit(init)(jax.random.key(int(config.seed))))
    return adapters_of(traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()}))


def change_from_init(adapters: Any, init: Any) -> Rows:
    """Per block, how far training moved the adapters from ``init``: ``|delta|`` and
    ``|init|`` (over all the block's adapter parameters), ``relative`` = |delta| / |init|,
    the relative change of each layer (``rel down/kernel``, …), ``alpha_mean_change``
    (mean α now minus at init) and ``alpha_max_abs_change``."""
    a, a0 = adapters_of(adapters), adapters_of(init)
    _check_same_blocks(a, a0, "change_from_init")
    rows = []
    for block in a:
        delta, ref = _flat(a[block]) - _flat(a0[block]), _flat(a0[block])
        row: dict[str, Any] = {
            "block": block, "|delta|": _norm(delta), "|init|": _norm(ref),
            "relative": _norm(delta) / max(_norm(ref), 1e-30),
        }
        for k in LAYERS:
            if k in a[block]:
                d = np.asarray(a[block][k], np.float64) - np.asarray(a0[block][k], np.float64)
                row[f"rel {k}"] = _norm(d) / max(_norm(a0[block][k]), 1e-30)
        dalpha = np.asarray(a[block]["scale"], np.float64) - np.asarray(a0[block]["scale"], np.float64)
        row["alpha_mean_change"] = float(dalpha.mean())
        row["alpha_max_abs_change"] = float(np.abs(dalpha).max())
        rows.append(row)
    return rows


def blocks_moved_most(change: Rows, by: str = "relative", top: int | None = None) -> list[tuple[str, float]]:
    """``(block, value)`` from :func:`change_from_init` rows, largest ``by`` first."""
    ranked = sorted(((r["block"], float(r[by])) for r in change), key=lambda bv: -bv[1])
    return ranked[:top] if top is not None else ranked


def trained_share(run: AdapterRun, init: AdapterRun | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Which parameters the run's config trains, and how many actually moved.

    Returns ``total`` and ``trainable`` parameter counts, ``share`` (trainable / total),
    ``adapter`` and ``adapter_share``, ``by_label`` (``{label: {"params", "trainable"}}``
    with the labels of :mod:`aqa_jax.train.partition`) and, when ``init`` (the step-0
    :class:`AdapterRun`, or its variables) is given, ``changed``: per label the number of
    parameter values that differ from ``init``, ``changed_share`` (all changed / total) and
    ``batch_stats_changed`` / ``batch_stats_total`` (BatchNorm statistics are not parameters:
    PECoP re-estimates them while their layers stay frozen).
    """
    from flax import traverse_util

    from aqa_jax.train.partition import LABELS, label_of, trainable_predicate

    is_trainable = trainable_predicate(run.config.trainable)
    flat = traverse_util.flatten_dict(dict(run.params))
    by_label = {label: {"params": 0, "trainable": False} for label in LABELS}
    total = trainable = adapter = 0
    for path, leaf in flat.items():
        n = int(np.size(leaf))
        label = label_of(path)
        total += n
        by_label[label]["params"] += n
        if is_trainable(path):
            trainable += n
            by_label[label]["trainable"] = True
        adapter += n if label == "adapter" else 0
    out: dict[str, Any] = {
        "total": total, "trainable": trainable, "share": trainable / max(total, 1),
        "adapter": adapter, "adapter_share": adapter / max(total, 1),
        "by_label": {k: v for k, v in by_label.items() if v["params"]},
    }
    if init is not None:
        init_params = init.params if isinstance(init, AdapterRun) else init["params"]
        init_stats = init.batch_stats if isinstance(init, AdapterRun) else init.get("batch_stats", {})
        flat0 = traverse_util.flatten_dict(dict(init_params))
        changed = {label: 0 for label in out["by_label"]}
        for path, leaf in flat.items():
            changed[label_of(path)] += int(np.count_nonzero(np.asarray(leaf) != np.asarray(flat0[path])))
        out["changed"] = changed
        out["changed_share"] = sum(changed.values()) / max(total, 1)
        stats, stats0 = (traverse_util.flatten_dict(dict(t)) for t in (run.batch_stats, init_stats))
        out["batch_stats_total"] = int(sum(np.size(v) for v in stats.values()))
        out["batch_stats_changed"] = int(sum(
            np.count_nonzero(np.asarray(v) != np.asarray(stats0[k])) for k, v in stats.items()))
    return out


# ── features ─────────────────────────────────────────────────────────────────────────────────


def sample_clips(run: AdapterRun, n: int = 4, *, split: str | None = None,
                 data_dir: str | None = None) -> tuple[np.ndarray, list[str]]:
    """``n`` clips ``(n, T, H, W, 3)`` and their video ids from the run's dataset (its
    evaluation split, else its training split): the run's clip length and transform preset,
    ``T`` consecutive frames from the middle of each of the first ``n`` videos, centre crop,
    normalised to float32 network input."""
    from aqa_jax.data.pipeline import FrameClipSampler
    from aqa_jax.data.registry import data_source
    from aqa_jax.data.transforms import normalize_clip

    c = run.config
    d = c.data
    clips_cfg = c.get("vspp") or c.get("clips") or {}
    clip_len, preset = int(clips_cfg.get("clip_len", 16)), clips_cfg.get("preset", "deepmind")
    source = data_source(d.name, d.get("config"), split or d.get("eval_split") or d.train_split,
                         data_dir=data_dir if data_dir is not None else d.get("data_dir"))
    sampler = FrameClipSampler(layout="all", clip_len=clip_len, preset=preset)
    clips, ids = [], []
    for i in range(min(n, len(source))):
        record = source[i]
        total = int(record["num_frames"])
        start = max((total - clip_len) // 2, 0)
        idx = np.minimum(np.arange(start, start + clip_len), total - 1)
        example = sampler.example(record, idx, None)
        clips.append(normalize_clip(example["clip"], preset))  # network input, as the steps feed it
        ids.append(example["id"])
    return np.stack(clips), ids


_FEATURE_FNS: dict[tuple[str, str, bool], Any] = {}


def feature_similarity(
    run: AdapterRun, clips: np.ndarray, *, endpoint: str | None = None, batch_size: int = 4
) -> dict[str, Any]:
    """Cosine similarity of pooled features with and without the adapters.

    Both networks are the run's I3D with its parameters and BatchNorm statistics (inference
    mode, running averages); the second has no adapters (the adapter parameters are left
    out), so the difference is the adapters' residuals ``α ⊙ up(ReLU(down(x)))`` and their
    effect on every later layer. Features are ``endpoint``'s map averaged over time and
    space. ``endpoint`` defaults to ``Mixed_5c``, or the run network's last Mixed block when
    it stops earlier (test-sized networks).

    Returns ``endpoint``, ``cosine`` (n,), ``relative_change`` (n,: |f_with − f_without| /
    |f_without|), ``with`` and ``without`` (n, C).
    """
    import jax
    import jax.numpy as jnp

    from aqa_jax.models.i3d import ENDPOINTS, MIXED_BLOCKS, build_i3d

    clips = np.asarray(clips, np.float32)
    model_cfg = run.config.model
    last = model_cfg.get("final_endpoint", "Mixed_5c")
    reached = ENDPOINTS[: ENDPOINTS.index(last) + 1] if last in ENDPOINTS else ENDPOINTS
    if endpoint is None:
        endpoint = "Mixed_5c" if "Mixed_5c" in reached else [b for b in reached if b in MIXED_BLOCKS][-1]
    if endpoint not in reached:
        raise ValueError(f"endpoint {endpoint!r}: the run's network stops at {last!r}")
    if "backbone" not in run.params:
        raise ValueError(f"{run.name}: no 'backbone' I3D in its parameters")
    params = run.params["backbone"]
    stats = (run.batch_stats or {}).get("backbone", {})
    if not adapters_of(params):
        raise ValueError(f"{run.name}: the network has no adapters")

    def strip(tree):
        return {k: strip(v) for k, v in tree.items() if k != "adapter"} if isinstance(tree, Mapping) else tree

    def features(adapters: bool, variables):
        key = (json.dumps(model_cfg.to_dict(), sort_keys=True, default=str), endpoint, adapters)
        if key not in _FEATURE_FNS:  # one compiled function per network, reused across runs
            model = build_i3d(model_cfg, final_endpoint=endpoint,
                              **({} if adapters else {"adapter_blocks": ()}))
            _FEATURE_FNS[key] = jax.jit(
                lambda v, x: jnp.mean(model.apply(v, x, train=False)[endpoint], axis=(1, 2, 3)))
        fn = _FEATURE_FNS[key]
        return np.concatenate([np.asarray(fn(variables, jnp.asarray(clips[i: i + batch_size])))
                               for i in range(0, len(clips), batch_size)]).astype(np.float64)

    def variables(p, s):
        return {"params": p, **({"batch_stats": s} if s else {})}

    with_ = features(True, variables(params, stats))
    without = features(False, variables(strip(params), stats))
    return {"endpoint": endpoint, "cosine": cosine_rows(with_, without),
            "relative_change": np.linalg.norm(with_ - without, axis=1) / np.maximum(
                np.linalg.norm(without, axis=1), 1e-30),
            "with": with_, "without": without}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, C)`` arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)


# ── comparing runs ───────────────────────────────────────────────────────────────────────────


def compare_runs(a: Any, b: Any, *, init_a: Any = None, init_b: Any = None) -> Rows:
    """Two sets of adapters (runs, steps, tasks) block by block: ``|a|``, ``|b|``,
    ``|a-b|`` (over all the block's adapter parameters), ``relative_difference``
    (|a−b| / |a|), ``cosine`` (of the block's flattened ``down``/``up`` weights and biases;
    α is left out, it starts at 1 everywhere and would dominate), ``alpha_max_abs_diff``,
    ``alpha_mean_a``/``alpha_mean_b``; with both inits, also ``|delta a|``,
    ``|delta b|`` and ``update_cosine``, the cosine between the two runs' updates from their
    own inits (runs started from the same seed share their init, so this says whether two
    tasks pushed an adapter the same way).

    Raises:
      ValueError: the two have adapters in different blocks or of different shapes.
    """
    xa, xb = adapters_of(a), adapters_of(b)
    _check_same_blocks(xa, xb, "compare_runs")
    ia = adapters_of(init_a) if init_a is not None else None
    ib = adapters_of(init_b) if init_b is not None else None
    rows = []
    for block in xa:
        va, vb = _flat(xa[block]), _flat(xb[block])
        row: dict[str, Any] = {
            "block": block, "|a|": _norm(va), "|b|": _norm(vb), "|a-b|": _norm(va - vb),
            "relative_difference": _norm(va - vb) / max(_norm(va), 1e-30),
            "cosine": float(cosine_rows(_flat(_weights(xa[block]))[None], _flat(_weights(xb[block]))[None])[0]),
            "alpha_max_abs_diff": float(np.max(np.abs(np.asarray(xa[block]["scale"], np.float64)
                                                      - np.asarray(xb[block]["scale"], np.float64)))),
            "alpha_mean_a": float(np.mean(xa[block]["scale"])),
            "alpha_mean_b": float(np.mean(xb[block]["scale"])),
        }
        if ia is not None and ib is not None:
            da, db = va - _flat(ia[block]), vb - _flat(ib[block])
            row.update({"|delta a|": _norm(da), "|delta b|": _norm(db),
                        "update_cosine": float(cosine_rows(da[None], db[None])[0])
                        if _norm(da) and _norm(db) else math.nan})
        rows.append(row)
    return rows


# ── tables and plots ─────────────────────────────────────────────────────────────────────────


def format_table(rows: Rows, columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """Rows (dicts) as an aligned text table; floats with ``digits`` significant digits."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return f"{v:.{digits}g}"
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return f"{v:,}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(  # noqa: E731
        v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _short(block: str) -> str:
    return block.replace("Mixed_", "")


def _grouped_bars(ax, labels: Sequence[str], series: Mapping[str, Sequence[float]]) -> None:
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, [_short(b) for b in labels])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(3, len(series)), loc="upper left", framealpha=0.7)


def plot_adapter_norms(table: Rows, title: str = ""):
    """Bars of each adapter layer's Frobenius norm per block (from :func:`adapter_table`)."""
    fig, (ax_w, ax_b) = _figure(11, 3.4, 2)
    blocks = [r["block"] for r in table]
    _grouped_bars(ax_w, blocks, {k: [r[f"|{k}|"] for r in table] for k in ("down/kernel", "up/kernel", "scale")})
    ax_w.set_title("weight norms")
    _grouped_bars(ax_b, blocks, {k: [r[f"|{k}|"] for r in table] for k in ("down/bias", "up/bias")})
    ax_b.set_title("bias norms")
    for ax in (ax_w, ax_b):
        ax.set_xlabel("Mixed block")
    if title:
        fig.suptitle(title)
    return fig


def plot_scale_distributions(adapters: Any, title: str = ""):
    """Box plots of the per-channel scale α in each block. ``adapters`` is one set (an
    :class:`AdapterRun`, a parameter tree or :data:`Adapters`) or ``{label: set}`` whose
    values are runs or :data:`Adapters`, drawn side by side (e.g. init and trained, or two
    tasks)."""
    if isinstance(adapters, Mapping) and adapters and all(
            isinstance(v, AdapterRun) or _is_adapters_value(v) for v in adapters.values()):
        sets = {k: adapters_of(v) for k, v in adapters.items()}
    else:
        sets = {adapters.name if isinstance(adapters, AdapterRun) else "α": adapters_of(adapters)}
    blocks = list(next(iter(sets.values())))
    fig, (ax,) = _figure(max(6.0, 0.9 * len(blocks) * len(sets)), 3.6)
    width = 0.8 / len(sets)
    for i, (label, ads) in enumerate(sets.items()):
        pos = np.arange(len(blocks)) + (i - (len(sets) - 1) / 2) * width
        bp = ax.boxplot([np.ravel(ads[b]["scale"]) for b in blocks], positions=pos, widths=0.9 * width,
                        patch_artist=True, flierprops={"markersize": 2})
        for patch in bp["boxes"]:
            patch.set_facecolor(f"C{i}")
            patch.set_alpha(0.5)
        ax.plot([], [], color=f"C{i}", lw=6, alpha=0.5, label=label)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(blocks)), [_short(b) for b in blocks])
    ax.set_xlabel("Mixed block")
    ax.set_ylabel("scale α per channel")
    ax.set_title(title or "scale α distribution (init: 1)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _is_layers(v: Any) -> bool:
    return isinstance(v, Mapping) and "scale" in v and not any(isinstance(x, Mapping) for x in v.values())


def _is_adapters_value(v: Any) -> bool:
    """``v`` is an :data:`Adapters` value: ``{block: {layer: array}}``."""
    return isinstance(v, Mapping) and bool(v) and all(_is_layers(x) for x in v.values())


def plot_change_from_init(change: Rows, title: str = ""):
    """Relative change of each adapter layer per block, and of the whole block."""
    fig, (ax,) = _figure(8, 3.6)
    blocks = [r["block"] for r in change]
    series = {"block": [r["relative"] for r in change]}
    series.update({k: [r.get(f"rel {k}", np.nan) for r in change] for k in LAYERS})
    _grouped_bars(ax, blocks, series)
    ax.set_ylabel("|w − w₀| / |w₀|")
    ax.set_xlabel("Mixed block")
    ax.set_title(title or "change from initialisation")
    return fig


def plot_feature_similarity(result: Mapping[str, Any], labels: Sequence[str] | None = None, title: str = ""):
    """Per clip: cosine similarity and relative change of the features with vs without
    adapters (from :func:`feature_similarity`)."""
    fig, (ax_c, ax_r) = _figure(10, 3.2, 2)
    n = len(result["cosine"])
    names = list(labels) if labels is not None else [str(i) for i in range(n)]
    ax_c.bar(range(n), result["cosine"])
    ax_c.set_ylim(min(0.0, float(np.min(result["cosine"]))), 1.02)
    ax_c.set_title(f"cosine({result['endpoint']} with, without adapters)")
    ax_r.bar(range(n), result["relative_change"], color="C1")
    ax_r.set_title("|f_with − f_without| / |f_without|")
    for ax in (ax_c, ax_r):
        ax.set_xticks(range(n), names, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_comparison(rows: Rows, labels: tuple[str, str] = ("a", "b"), title: str = ""):
    """Norms of the two runs' adapters per block, and their cosine similarity (and the
    cosine of their updates, when :func:`compare_runs` had the inits)."""
    fig, (ax_n, ax_c) = _figure(11, 3.4, 2)
    blocks = [r["block"] for r in rows]
    _grouped_bars(ax_n, blocks, {f"|{labels[0]}|": [r["|a|"] for r in rows],
                                 f"|{labels[1]}|": [r["|b|"] for r in rows],
                                 f"|{labels[0]}−{labels[1]}|": [r["|a-b|"] for r in rows]})
    ax_n.set_title("adapter norms")
    series = {"cosine(a, b)": [r["cosine"] for r in rows]}
    if rows and "update_cosine" in rows[0]:
        series["cosine(Δa, Δb)"] = [r["update_cosine"] for r in rows]
    _grouped_bars(ax_c, blocks, series)
    ax_c.axhline(0.0, color="k", lw=0.8)
    ax_c.set_title("similarity")
    for ax in (ax_n, ax_c):
        ax.set_xlabel("Mixed block")
    fig.suptitle(title or f"{labels[0]} vs {labels[1]}")
    return fig


__all__ = [
    "LAYERS", "Adapters", "AdapterRun", "load_run", "load_adapters", "adapters_of", "adapter_table",
    "initial_variables", "initial_adapters", "change_from_init", "blocks_moved_most",
    "trained_share", "sample_clips", "feature_similarity", "cosine_rows", "compare_runs",
    "format_table", "plot_adapter_norms", "plot_scale_distributions", "plot_change_from_init",
    "plot_feature_similarity", "plot_comparison",
]
