"""MUSDL fine-tuning (one score distribution per judge), MTL-AQA and JIGSAWS.

  aqa-jax train --config configs/musdl.py:dataset=mtl_aqa --workdir runs/musdl_mtl
  aqa-jax cv --config configs/musdl.py:dataset=jigsaws --tasks suturing,needle_passing,knot_tying --workdir runs/musdl_jigsaws

Args: dataset (mtl_aqa | jigsaws | synthetic_aqa), task, fold, init, pretrained, weights,
probe, decoding, debug: as ``configs/usdl.py`` (same official code, same starting weights).

Official recipe (nzl-thu/MUSDL): Adam lr 1e-4, weight decay 1e-5 on MTL-AQA (0 on JIGSAWS),
batch 4, 100 epochs (80 on JIGSAWS). MTL-AQA: 7 judges x 21 bins over 0-10 (0.5 apart), sigma
5, final score = middle three judges x difficulty. JIGSAWS: the 6 GRS items x 5 bins over 1-5,
sigma 1, final score = their sum; report the mean of the four folds over the last 10 epochs
(``aqa-jax cv``). Preprocessing and BN batches as ``configs/usdl.py``. On synthetic_aqa (and
in ``debug``) the four generative factor severities (0-1, weighted x4 into the score) stand
in for judges. AQA-7 has no judge scores: ``dataset=aqa7`` is refused (use ``configs/usdl.py``).
"""

import ml_collections

from . import common

# dataset: (judge field, judges, bins, lo, hi, sigma, combine, weight decay, epochs)
JUDGES = {
    "mtl_aqa": ("judge_scores", 7, 21, 0.0, 10.0, 5.0, "diving", 1e-5, 100),
    "jigsaws": ("grs", 6, 5, 1.0, 5.0, 1.0, "sum", 0.0, 80),
    "synthetic_aqa": ("factors", 4, 21, 0.0, 1.0, 2.0, "sum", 0.0, 30),
}
TASKS = common.tasks_of(JUDGES)
# README.md's method x dataset table (python -m aqa_jax.readme_table derives the commands).
TABLE_ROWS = (
    common.TableRow("PECoP → MUSDL", "MTL-AQA", (
        common.Run("dataset=mtl_aqa,init=pecop,pretrained=runs/pecop_mtl", "runs/musdl_mtl"),),
        paper="93.72 (Dom-G 92.73)"),
    common.TableRow("PECoP → MUSDL", "JIGSAWS (3 tasks x 4 folds)", (
        common.Run("dataset=jigsaws,init=pecop,pretrained=runs/pecop_{task}_f{fold}", "runs/musdl_jigsaws"),),
        paper="76 (Dom-G 70)"),
)
# synthetic_aqa: the factor severities' weights in the 0-4 score (aqa_jax.data.synthetic)
FACTOR_JUDGE_WEIGHTS = [common.SYNTHETIC_MAX_SCORE * w for w in common.SYNTHETIC_FACTOR_WEIGHTS.values()]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    dataset = dict(item.partition("=")[::2] for item in str(arg or "").split(",")).get("dataset")
    if dataset == "aqa7":
        raise ValueError("musdl: AQA-7 has no per-judge scores (MUSDL needs them; the paper reports "
                         "USDL on AQA-7): use configs/usdl.py:dataset=aqa7,task=<class>")
    c, args = common.finetune_config("musdl", arg, datasets=tuple(JUDGES), preset="musdl",
                                     decoding="argmax", numerics="piergiaj",
                                     official_weights="rgb_imagenet_piergiaj")
    key, judges, bins, lo, hi, sigma, combine, wd, epochs = JUDGES[args.dataset]
    c.usdl = dict(num_bins=bins, score_min=lo, score_max=hi, sigma=sigma, hidden=(256, 128),
                  decoding=args.decoding, judge_key=key, num_judges=judges, combine=combine,
                  judge_weights=FACTOR_JUDGE_WEIGHTS if args.dataset == "synthetic_aqa" else [])
    c.optimizer.weight_decay = wd
    c.total_epochs = epochs
    c.clips.backbone_batches = "all_clips"
    if args.dataset == "mtl_aqa":  # MTL-AQA/main.py, opts.py: last clip at 87, a BN batch per position
        c.clips.update(clip_starts=common.CLIP_STARTS["musdl_10x16"], backbone_batches="per_position")
    if args.dataset == "jigsaws":  # JIGSAWS/dataset.py: centre crop 224 of the stored frames
        c.clips.preset = "musdl_jigsaws"
    if args.dataset == "synthetic_aqa":
        c.clips.preset = "deepmind_64"
    if args.debug:
        common.apply_debug(c, args, epochs=20)
        c.usdl.update(judge_key="factors", num_judges=4, num_bins=21, score_min=0.0,
                      score_max=1.0, sigma=2.0, combine="sum", judge_weights=FACTOR_JUDGE_WEIGHTS)
    return c
