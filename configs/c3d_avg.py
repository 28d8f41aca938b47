"""C3D-AVG, STL and MTL (Parmar & Morris, CVPR 2019), on MTL-AQA, UNLV-Dive or synthetic data.

  aqa-jax convert-weights c3d.pickle weights/c3d_sports1m      # once (docs/C3D_WEIGHTS.md)
  aqa-jax train --config configs/c3d_avg.py:tasks=all,pretrained=weights/c3d_sports1m --workdir runs/c3davg_mtl
  aqa-jax train --config configs/c3d_avg.py:tasks=score,train_size=140,pretrained=... ...   # Table 8

Args: dataset (mtl_aqa | unlv_dive | synthetic_aqa), tasks (score | score+cls | score+caps |
all: the rows of the paper's Table 4; UNLV-Dive has no captions), train_size (0: all 1059,
or 450 / 280 / 140: Table 8), pretrained (the converted Sports-1M C3D, or ``none``), debug
(``task``: its synthetic task); see ``common.multitask_config``.

Input (``dataloader_C3DAVG.py``): the 103 frames ending at ``end_frame`` (shifted by U{-3..3}
in training), resized to 171x128, centre-cropped to 112, flipped in training, six 16-frame
clips at 0, 16, ..., 80. Official recipe (``opts.py``): Adam 1e-4, batch 3, 100 epochs.

``debug``: the small synthetic set (its commentary as captions, the 5-level label as the
class), all three tasks, a smaller captioner; no C3D weights ship with any package, so the C3D
is randomly initialised (He-uniform, ``model.init='he'``: PyTorch's default init leaves pool5
features that carry almost nothing), frozen with its features cached, and fc6 and the heads
train for 60 epochs. It checks the multitask pipeline, not the paper's recipe.
"""

import ml_collections

from . import common

CLIPS = {
    "mtl_aqa": dict(layout="window", num_frames=103, clip_starts=(0, 16, 32, 48, 64, 80), max_shift=3,
                    preset="c3d_avg"),
    "unlv_dive": dict(layout="window", num_frames=103, clip_starts=(0, 16, 32, 48, 64, 80), max_shift=3,
                      preset="c3d_avg"),
    "synthetic_aqa": dict(layout="all", num_frames=64, clip_starts=(0, 16, 32, 48), max_shift=0,
                          preset="deepmind_64"),
}
TASKS = {name: () for name in CLIPS}  # one score per dive: no task= (tasks= picks the heads)
REQUIRED_ARGS = {"mtl_aqa": "tasks=all,pretrained=weights/c3d_sports1m",
                 "unlv_dive": "tasks=score+cls,pretrained=weights/c3d_sports1m",
                 "synthetic_aqa": "pretrained=none"}
# The Sports-1M C3D that `aqa-jax convert-weights` turns into pretrained= (docs/C3D_WEIGHTS.md).
PRETRAINED_SOURCE = common.OfficialWeights("c3d.pickle")
# README.md's method x dataset table (python -m aqa_jax.readme_table derives the commands).
TABLE_ROWS = (
    common.TableRow("C3D-AVG-STL / -MTL", "MTL-AQA", (
        common.Run("tasks=score,pretrained=weights/c3d", "runs/c3d_stl", note="(`tasks=all`: MTL)"),),
        paper="89.60 / 90.44", debug="MTL: 0.49, BLEU-4 0.54"),
    common.TableRow("C3D-AVG (+Cls, +Caps)", "MTL-AQA", (
        common.Run("tasks=score+cls,pretrained=weights/c3d", "runs/c3d_cls", note="(`tasks=score+caps`)"),),
        paper="89.62, 88.78"),
    common.TableRow("C3D-AVG-STL / -MTL, fewer samples", "MTL-AQA 450 / 280 / 140", (
        common.Run("tasks=score,train_size=450,pretrained=weights/c3d", "runs/c3d_450",
                   note="(280, 140; `tasks=all`)"),),
        paper="STL 77.27 / 69.63 / 64.17, MTL 83.52 / 72.09 / 68.16"),
    common.TableRow("C3D-AVG-STL / -MTL", "UNLV-Dive", (
        common.Run("dataset=unlv_dive,tasks=score,pretrained=weights/c3d", "runs/c3d_unlv",
                   note="(`score+cls`; no captions there)"),),
        paper="83.83 / 88.08"),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, args = common.multitask_config("c3d_avg", arg, clips=CLIPS)
    if args.debug:
        c.model.init = "he"
        c.trainable, c.bn_policy, c.precompute_features = "head", "frozen", True
        c.model.fc6 = 256
        c.optimizer.lr = 1e-3
        c.total_epochs = 60
    return c
