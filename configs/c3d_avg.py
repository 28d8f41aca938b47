"""C3D-AVG, STL and MTL (Parmar & Morris, CVPR 2019), on MTL-AQA, UNLV-Dive or synthetic data.

  aqa-jax convert-weights c3d.pickle runs/weights/c3d_sports1m      # once (docs/C3D_WEIGHTS.md)
  aqa-jax train --config configs/c3d_avg.py:tasks=all,pretrained=runs/weights/c3d_sports1m --workdir runs/c3davg_mtl
  aqa-jax train --config configs/c3d_avg.py:tasks=score,pretrained=... --workdir runs/c3davg_stl
  aqa-jax train --config configs/c3d_avg.py:tasks=all,train_size=140,pretrained=... ...   # Table 8
  aqa-jax train --config configs/c3d_avg.py:dataset=unlv_dive,tasks=score+cls,pretrained=... ...

Args: see :func:`aqa_jax.config_lib.multitask_config` (dataset, tasks, train_size,
pretrained, debug). Paper (Table 4 / 8, MTL-AQA SRCC x100): STL 89.60, +Cls 89.62, +Caps
88.78, +Cls+Caps 90.44; with 450 / 280 / 140 training samples STL 77.27 / 69.63 / 64.17, MTL
83.52 / 72.09 / 68.16; UNLV-Dive STL 83.83, MTL 88.08.

Input (``dataloader_C3DAVG.py``): the 103 frames ending at ``end_frame`` (shifted by
U{-3..3} in training), resized to 171x128, centre-cropped to 112, flipped in training, six
16-frame clips at 0, 16, ..., 80.

``debug``: the small synthetic set (64 training / 32 test videos of 64 frames at 64 px; the
commentary of :func:`aqa_jax.data.synthetic.caption_tokens`, the 5-level label as the class),
all three tasks, a smaller captioner. No C3D weights ship with any package, so the debug C3D
is randomly initialised (He-uniform, ``model.init='he'``: PyTorch's default init shrinks the
activations ~2.4x per layer, leaving random pool5 features that carry almost nothing) and
frozen (its clip features computed once), and fc6 and the heads train on them for 60 epochs:
a few minutes on a CPU (test SRCC 0.49, label accuracy 0.41 vs 0.2 chance, BLEU-4 0.54 on
this machine). That checks the whole multitask pipeline, not the paper's recipe.
"""

from aqa_jax.config_lib import multitask_config

CLIPS = {
    "mtl_aqa": dict(layout="window", num_frames=103, clip_starts=(0, 16, 32, 48, 64, 80), max_shift=3,
                    preset="c3d_avg"),
    "unlv_dive": dict(layout="window", num_frames=103, clip_starts=(0, 16, 32, 48, 64, 80), max_shift=3,
                      preset="c3d_avg"),
    "synthetic_aqa": dict(layout="all", num_frames=64, clip_starts=(0, 16, 32, 48), max_shift=0,
                          preset="deepmind_64"),
}


def get_config(arg=None):
    c, args = multitask_config("c3d_avg", arg, clips=CLIPS)
    if args.debug:
        c.model.init = "he"
        c.trainable, c.bn_policy, c.precompute_features = "head", "frozen", True
        c.model.fc6 = 256
        c.optimizer.lr = 1e-3
        c.num_epochs = 60
    return c
