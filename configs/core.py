"""CoRe fine-tuning (group-aware contrastive regression), one config per dataset/task.

  aqa-jax train --config configs/core.py:dataset=mtl_aqa --workdir runs/core_mtl
  aqa-jax train --config configs/core.py:dataset=pd4t,task=gait,init=pecop,pretrained=runs/pecop_gait ...
  aqa-jax classes --config configs/core.py:dataset=aqa7 --workdir runs/core_aqa7

Args: dataset (mtl_aqa | fine_diving | jigsaws | pd4t | aqa7 | synthetic_aqa), task, fold,
init, pretrained, weights (default rgb_imagenet_hassony2 with ``model.variant=pecop``, as
``MTL_CoRe.yaml``), probe, debug: as ``configs/usdl.py``.

Official recipe (``configs/MTL_CoRe.yaml``): Adam, lr 1e-3 for the regressor and 1e-4 for the
I3D (lr factor 0.1), no weight decay, no schedule, batch 1 with an optimizer step every 2
(``step_per_update``), 200 epochs, BatchNorm statistics frozen (``fix_bn``), tree depth 5,
10 test exemplars; the ten clips of query and exemplar in one I3D batch. Preprocessing
(``tools/builder.py``, preset ``core``): flip, torch_videovision's swapped
``Resize((455, 256))`` (PIL bilinear on CoRe's PIL frames), random crop 224 (centre in test).
Per dataset:
  mtl_aqa: with DD (target score/DD, theta 30, exemplars of the same difficulty);
  fine_diving: as the FineDiving paper re-ran CoRe "w/ DN": exemplars of the same dive
    number, raw scores, theta 100;
  jigsaws, pd4t (not published by CoRe): every training sample is an exemplar candidate,
    theta = the largest score difference (24 for GRS 6-30, 4 for UPDRS 0-4), batch 2;
  aqa7 (``Seven_CoRe.yaml``, ``SevenPair.py``): one run per class (``task=diving | gym_vault |
    ski_big_air | snowboard_big_air | sync_diving_3m | sync_diving_10m``; ``aqa-jax
    classes`` runs all six), scores normalised per class to [0, 100] (``clips.score_norm``)
    and reported in those units, theta 100, batch 2 with a step every 2, the first 103
    frames; ``debug`` keeps the class's data at 64 px;
  synthetic_aqa: 64 px clips, 30 epochs.
``debug``: a probe on the small synthetic set, 10 epochs, 4 exemplars.
"""

import ml_collections

from . import common

# dataset: (use_dd, exemplar_key, theta, batch, step_per_update)
SETTINGS = {
    "mtl_aqa": (True, "difficulty", 30.0, 1, 2),
    "fine_diving": (False, "action_type", 100.0, 1, 2),
    "jigsaws": (False, "", 24.0, 2, 1),
    "pd4t": (False, "", 4.0, 2, 1),
    "aqa7": (False, "", 100.0, 2, 2),  # Seven_CoRe.yaml: bs_train 2, step_per_update 2, score_range 100
    "synthetic_aqa": (False, "", 4.0, 2, 1),
}
TASKS = common.tasks_of(SETTINGS)
# README.md's method x dataset table (python -m aqa_jax.readme_table derives the commands).
TABLE_ROWS = (
    common.TableRow("PECoP → CoRe", "JIGSAWS", (
        common.Run("dataset=jigsaws,init=pecop,pretrained=runs/pecop_{task}_f{fold}", "runs/core_jigsaws"),),
        paper="89 (Dom-G 85)"),
    common.TableRow("PECoP → CoRe", "PD4T (4 tasks)", (
        common.Run("dataset=pd4t,task=T,init=pecop,pretrained=runs/pecop_T", "runs/core_T"),),
        paper="63.87 (Dom-G 60.31)"),
    common.TableRow("PECoP → CoRe", "FineDiving", (
        common.Run("dataset=fine_diving,init=pecop,pretrained=runs/pecop_fd", "runs/core_fd"),),
        paper="93.15 (Dom-G 90.61)"),
    common.TableRow("CoRe", "AQA-7 (6 classes)", (common.Run("dataset=aqa7", "runs/core_aqa7"),),
                    paper="average 84.01 [unverified]"),
    common.TableRow("CoRe", "MTL-AQA", (common.Run("dataset=mtl_aqa", "runs/core_mtl"),)),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, args = common.finetune_config("core", arg, datasets=tuple(SETTINGS), preset="core")
    use_dd, key, theta, batch, spu = SETTINGS[args.dataset]
    c.core = dict(depth=5, hidden=256, score_range=theta, use_dd=use_dd, exemplar_key=key,
                  num_exemplars=10, group_bounds=[])
    c.bn_policy = "frozen"
    c.clips.backbone_batches = "all_clips"  # the official Backbone.py: every clip in one batch
    c.batch_size, c.step_per_update = batch, spu
    c.total_epochs = 200
    c.optimizer.update(lr=1e-3, lr_factors=dict(backbone=0.1, bn=0.1, adapter=0.1))
    if args.dataset == "synthetic_aqa":
        c.clips.preset = "deepmind_64"
        c.total_epochs = 30
    if args.debug:
        common.apply_debug(c, args, epochs=10)
        c.core.update(use_dd=False, exemplar_key="", score_range=theta if args.dataset == "aqa7" else 4.0,
                      num_exemplars=4)
    return c
