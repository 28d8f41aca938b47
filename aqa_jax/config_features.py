"""Building blocks of the clip-feature method configs (``configs/cofinal.py``, ``configs/gdlt.py``).

CoFInAl and GDLT train on precomputed per-clip features, so their configs have no backbone,
clip layout or transform preset: a dataset of ``features`` records, the method's section
(``config.cofinal`` / ``config.gdlt``, fields in :mod:`aqa_jax.methods.cofinal`) and the
official optimizer recipe (``main.py`` + ``scripts/train_all_*.sh``): SGD lr 1e-2, momentum 0.9,
weight decay 1e-4, ``CosineAnnealingLR(T_max=epochs, eta_min=lr * 0.01)`` stepped once per epoch,
batch 32, seed 0, the test split evaluated after every epoch.

Datasets (``dataset=``):

- ``rhythmic_gymnastics``: tasks Ball / Clubs / Hoop / Ribbon (builder configs ``ball`` ...);
- ``fis_v``: tasks TES / PCS;
- ``features``: a folder written by ``aqa-jax extract-features`` (``folder=DIR``), built with
  ``aqa-jax build-data clip_features --manual-dir DIR --data-dir DIR/tfds`` (the config reads
  ``DIR/tfds``); ``label_scale=`` is required (the divisor that brings the source scores into
  [0, 1]: 4 for PD4T and synthetic_aqa, 104.5 for MTL-AQA). The folder's ``extractor.json``
  (how its features were computed) is copied into ``config.data.extractor``, so that
  ``aqa-jax predict`` can score a raw video with the run: same I3D, preset and clip layout;
- ``synthetic_features``: generated features with a known score (built on first use); the
  ``debug`` runs use it.

Official labels are ``score / 25`` for RG and Fis-V (``label_scale=25``).

Differences from the official runs: the last partial training batch of an epoch is dropped
(RG: 6 steps of 32 per epoch instead of 6 plus one of 8), so the cosine schedule and the
number of updates per epoch differ slightly; evaluation pads every video to ``max_clips``
(equal to the official full-length batch-1 evaluation, see the method's docstring).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from aqa_jax.features import read_extractor_settings
from aqa_jax.config_lib import set_epoch_run

# dataset: (builder, {task: builder config}, label_scale, (hidden_dim, n_head))
DATASETS: dict[str, tuple[str, dict[str, str | None], float, tuple[int, int]]] = {
    "rhythmic_gymnastics": ("rhythmic_gymnastics",
                            {t: t.lower() for t in ("Ball", "Clubs", "Hoop", "Ribbon")}, 25.0, (256, 1)),
    "fis_v": ("fis_v", {"TES": "tes", "PCS": "pcs"}, 25.0, (448, 7)),
    "features": ("clip_features", {"": "default"}, 0.0, (256, 1)),
    "synthetic_features": ("synthetic_features", {"": "default", "small": "small"}, 25.0, (256, 1)),
}


def _task(dataset: str, task: str) -> str:
    tasks = DATASETS[dataset][1]
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


def features_config(method: str, arg: str | None, **defaults: Any):
    """(config, parsed args, canonical task) shared by CoFInAl and GDLT.

    Args (big_vision style): ``dataset``, ``task``, ``folder`` (dataset=features),
    ``label_scale`` (0: the dataset's default), ``max_clips``, ``debug``, plus ``defaults``.
    """
    from aqa_jax.config_args import parse_arg

    args = parse_arg(arg, dataset="rhythmic_gymnastics", task="", folder="", label_scale=0.0,
                     max_clips=256, debug=False, **defaults)
    if args.dataset not in DATASETS:
        raise ValueError(f"{method}: dataset={args.dataset!r}; choose one of {sorted(DATASETS)}")
    task = _task(args.dataset, args.task)
    builder, tasks, scale, (hidden, heads) = DATASETS[args.dataset]
    data_dir, extractor = None, None
    if args.dataset == "features":
        if not args.folder:
            raise ValueError(f"{method}: dataset=features needs folder=<the --out DIR of "
                             "`aqa-jax extract-features`>")
        if not args.label_scale:
            raise ValueError(f"{method}: dataset=features needs label_scale=<divisor bringing the "
                             "scores into [0, 1]> (4 for PD4T and synthetic_aqa, 104.5 for MTL-AQA)")
        data_dir = f"{args.folder.rstrip('/')}/tfds"
        settings = read_extractor_settings(args.folder)
        extractor = settings.to_dict() if settings else None
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
    c.num_epochs = epochs
    c.optimizer.t_max = float(epochs)
    c.optimizer.eta_min = c.optimizer.lr * 0.01


def apply_debug(c: ml_collections.ConfigDict, section: dict[str, Any], *, epochs: int) -> None:
    """The ``debug`` variant: ``synthetic_features/small`` (128 / 64 videos of 10-40 clips of
    256-d features, score = 10 d + 15 mean(e) in 0-25), a narrow network (H 64), 16-clip
    training windows, batch 16, lr 0.05 (5x the official: few steps), the test split evaluated
    every 5 epochs and one checkpoint at the end: well under a minute on a CPU."""
    c.data.update(name="synthetic_features", config="small", data_dir=c.data.get("data_dir"))
    section.update(hidden_dim=64, n_head=1, clip_num=16, max_clips=48, label_scale=25.0)
    c.batch_size = 16
    c.optimizer.lr = 0.05
    set_epochs(c, epochs)
    c.eval_every_steps = 5 * (128 // c.batch_size)
    c.checkpoint.update(every_steps=10**9, max_to_keep=1)  # the last step is always saved
