"""MSCADC, STL and MTL (Parmar & Morris, CVPR 2019), on MTL-AQA, UNLV-Dive or synthetic data.

  aqa-jax convert-weights C3D_small_PyTorch_Trained_12.pth weights/mscadc_body --format c3d   # once
  aqa-jax train --config configs/mscadc.py:tasks=all,pretrained=weights/mscadc_body --workdir runs/mscadc_mtl
  aqa-jax train --config configs/mscadc.py:tasks=score,pretrained=weights/mscadc_body --workdir runs/mscadc_stl

Args: as ``configs/c3d_avg.py`` (``pretrained``: the converted MSCADC body of
ParitoshParmar/MTL-AQA, ``MTL-AQA_code_release/models/MSCADC/pretrained_models/``).

Input (``dataloader_MSCADC.py``): frames ``floor(6.5 k)``, k = 0..15, of the 103-frame
window ending at ``end_frame`` (shifted by U{-3..3} in training), resized to 640x360,
centre-cropped to 180, flipped in training: one 16-frame clip. Official recipe (``opts.py``):
Adam 1e-4, batch 3, 100 epochs.

``debug``: the small synthetic set, 16 frames (every 4th of 64) at 64 px, all three tasks, a
smaller captioner, the body randomly initialised (He-uniform) and frozen with its features
cached; the three context heads train for 16 epochs.
"""

import ml_collections

from . import common

WINDOW = dict(layout="window", num_frames=103, frame_step=6.5, clip_starts=(0,), max_shift=3, preset="mscadc")
CLIPS = {
    "mtl_aqa": WINDOW,
    "unlv_dive": WINDOW,
    "synthetic_aqa": dict(layout="all", num_frames=64, frame_step=4.0, clip_starts=(0,), max_shift=0,
                          preset="deepmind_64"),
}
TASKS = {name: () for name in CLIPS}  # one score per dive: no task= (tasks= picks the heads)
REQUIRED_ARGS = {"mtl_aqa": "tasks=all,pretrained=weights/mscadc_body",
                 "unlv_dive": "tasks=score+cls,pretrained=weights/mscadc_body",
                 "synthetic_aqa": "pretrained=none"}
# The MSCADC body archive of ParitoshParmar/MTL-AQA that `aqa-jax convert-weights` turns into pretrained=.
PRETRAINED_SOURCE = common.OfficialWeights("C3D_small_PyTorch_Trained_12.pth", options="--format c3d",
                                           unpack="7z x C3D_small_PyTorch_Trained_12.7z.001")
# README.md's method x dataset table (python -m aqa_jax.readme_table derives the commands).
TABLE_ROWS = (
    common.TableRow("MSCADC-STL / -MTL", "MTL-AQA", (
        common.Run("tasks=score,pretrained=weights/mscadc_body", "runs/mscadc_stl", note="(`tasks=all`)"),),
        paper="84.72 / 86.12 (+Cls 85.76, +Caps 85.47)", debug="MTL: 0.52, BLEU-4 0.57"),
    common.TableRow("MSCADC-STL / -MTL", "UNLV-Dive", (
        common.Run("dataset=unlv_dive,tasks=score,pretrained=weights/mscadc_body", "runs/mscadc_unlv"),),
        paper="79.79 / 80.60"),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, args = common.multitask_config("mscadc", arg, clips=CLIPS)
    if args.debug:
        c.model.init = "he"
        c.trainable, c.bn_policy, c.precompute_features = "head", "frozen", True
        c.optimizer.lr = 1e-3
        c.total_epochs = 16
    return c
