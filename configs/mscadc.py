"""MSCADC, STL and MTL (Parmar & Morris, CVPR 2019), on MTL-AQA, UNLV-Dive or synthetic data.

  aqa-jax convert-weights C3D_small_PyTorch_Trained_12.pth runs/weights/c3d_small   # once
  aqa-jax train --config configs/mscadc.py:tasks=all,pretrained=runs/weights/c3d_small --workdir runs/mscadc_mtl
  aqa-jax train --config configs/mscadc.py:tasks=score,pretrained=... --workdir runs/mscadc_stl

Args: see :func:`aqa_jax.config_lib.multitask_config`. Paper (MTL-AQA SRCC x100, Table 4):
STL 84.72, +Cls 85.76, +Caps 85.47, +Cls+Caps 86.12; UNLV-Dive STL 79.79, MTL 80.60.

Input (``dataloader_MSCADC.py``): frames ``floor(6.5 k)``, k = 0..15, of the 103-frame
window ending at ``end_frame`` (shifted by U{-3..3} in training), resized to 640x360,
centre-cropped to 180, flipped in training: one 16-frame clip.

``debug``: the small synthetic set, 16 frames (every 4th of 64) at 64 px, all three tasks, a
smaller captioner, the body randomly initialised (He-uniform) and frozen with its features
cached; the three context heads train for 16 epochs (their 3-D convs over the 9-voxel
replication padding dominate: about 6 minutes on a 2-core CPU; test SRCC 0.52, BLEU-4
0.57 there; the 5-level label stays near chance, 0.22).
"""

from aqa_jax.config_lib import multitask_config

WINDOW = dict(layout="window", num_frames=103, frame_step=6.5, clip_starts=(0,), max_shift=3, preset="mscadc")
CLIPS = {
    "mtl_aqa": WINDOW,
    "unlv_dive": WINDOW,
    "synthetic_aqa": dict(layout="all", num_frames=64, frame_step=4.0, clip_starts=(0,), max_shift=0,
                          preset="deepmind_64"),
}


def get_config(arg=None):
    c, args = multitask_config("mscadc", arg, clips=CLIPS)
    if args.debug:
        c.model.init = "he"
        c.trainable, c.bn_policy, c.precompute_features = "head", "frozen", True
        c.optimizer.lr = 1e-3
        c.num_epochs = 16
    return c
