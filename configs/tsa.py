"""TSA fine-tuning (FineDiving's procedure-aware AQA), one config per dataset.

  aqa-jax train --config configs/tsa.py:dataset=fine_diving --workdir runs/tsa_finediving
  aqa-jax train --config configs/tsa.py:dataset=synthetic_aqa,debug --workdir /tmp/tsa_debug

Args: dataset (fine_diving | synthetic_aqa), task (synthetic_aqa), init, pretrained, weights
(default rgb_imagenet_hassony2 with ``model.variant=pecop``, as ``FineDiving_TSA.yaml``),
probe, debug: as ``configs/usdl.py``. ``probe`` freezes the backbone but computes it every
step: TSA reads per-clip feature maps, which the feature cache does not keep.

Official recipe (``FineDiving_TSA.yaml``, ``tools/builder.py``): Adam, lr 1e-3 for PSNet, the
decoder and the regressor, 1e-4 for the I3D (lr factor 0.1), no weight decay, no schedule,
batch 8, 200 epochs, the I3D's BatchNorm frozen (``fix_bn``); 96 frames by ``linspace`` over
the instance, nine 16-frame clips at 0, 10, ..., 80 in one I3D batch, preset ``tsa`` (flip,
``Resize((200, 112))`` PIL bilinear, crop 112); PSNet with 96 pseudo-frames, ``fix_size`` 5,
3 decoder blocks of dim 64 with 8 heads; exemplars of the same dive number: one in training,
10 in evaluation; ground-truth step boundaries for the first 25% of epochs, predicted ones
afterwards and in evaluation. Deviations: see :mod:`aqa_jax.methods.tsa`.

synthetic_aqa has no step labels: its transitions are the fixed thirds of the sampled frames
(a stand-in; tIoU means nothing there), every training video is an exemplar candidate, 64 px
clips, 30 epochs. ``debug``: the small synthetic set, frozen backbone (not cached), 2 test
exemplars, 8 epochs, evaluated once at the end.
"""

import ml_collections

from . import common

# dataset: (exemplar_key, epochs)
SETTINGS = {
    "fine_diving": ("action_type", 200),
    "synthetic_aqa": ("", 30),
}
TASKS = common.tasks_of(SETTINGS)
# README.md's method x dataset table (python -m aqa_jax.readme_table derives the commands).
TABLE_ROWS = (
    common.TableRow("PECoP → TSA", "FineDiving", (
        common.Run("dataset=fine_diving,init=pecop,pretrained=runs/pecop_fd", "runs/tsa_fd"),),
        paper="93.13 (Dom-G 92.03)", debug="0.52"),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, args = common.finetune_config("tsa", arg, datasets=tuple(SETTINGS), preset="tsa")
    key, epochs = SETTINGS[args.dataset]
    c.tsa = dict(num_frames=96, fix_size=5, decoder_depth=3, num_heads=8, mlp_ratio=4.0,
                 exemplar_key=key, num_exemplars=10, gt_boundary_fraction=0.25,
                 gt_boundary_steps=-1, map_layout="official")
    c.bn_policy = "frozen"
    c.clips.backbone_batches = "all_clips"  # the official Backbone.py: every clip in one batch
    c.batch_size, c.step_per_update = 8, 1
    c.total_epochs = epochs
    c.optimizer.update(lr=1e-3, lr_factors=dict(backbone=0.1, bn=0.1, adapter=0.1))
    c.precompute_features = False  # a probe freezes the backbone but cannot cache it
    if args.dataset == "synthetic_aqa":
        c.clips.preset = "deepmind_64"
    if args.debug:
        common.apply_debug(c, args, epochs=8)
        c.precompute_features = False
        c.tsa.update(exemplar_key="", num_exemplars=2)
        common.every(c, "eval_every")  # one evaluation, at the end
    return c
