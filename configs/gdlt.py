"""GDLT (Likert scoring with grade decoupling) on clip features, one config per dataset/task.

  aqa-jax train --config configs/gdlt.py:dataset=rhythmic_gymnastics,task=Hoop --workdir runs/gdlt_hoop
  aqa-jax train --config configs/gdlt.py:dataset=features,folder=feats/pd4t_gait,label_scale=4 --workdir runs/gdlt_gait

Args: dataset (rhythmic_gymnastics | fis_v | features | synthetic_features), task (Ball, Clubs,
Hoop, Ribbon; TES, PCS), folder and label_scale (dataset=features), max_clips, debug
(synthetic_features/small, 15 epochs): see ``common.features_config``.

Official settings (xuangch/CVPR22_GDLT README): SGD 1e-2, momentum 0.9, weight decay 1e-4,
cosine to 1e-4, batch 32, H 256, 1 head, 1 encoder and 2 decoder layers, 4 grade queries,
dropout 0.3, alpha 1, margin 1, triplet labels = query index, labels / 25; epochs Ball 250,
Clubs 400, Hoop 500, Ribbon 150. GDLT published no Fis-V recipe: TES/PCS use CoFInAl's Fis-V
architecture (H 448, 7 heads) and 200 epochs with GDLT's loss (alpha 1), not a published setting.
"""

import ml_collections

from . import common

EPOCHS = {"Ball": 250, "Clubs": 400, "Hoop": 500, "Ribbon": 150, "TES": 200, "PCS": 200}
TASKS = common.feature_tasks()
REQUIRED_ARGS = {"features": "folder=feats/pd4t_gait,label_scale=4"}
# README.md's method x dataset table (python -m aqa_jax.readme_table derives the commands).
TABLE_ROWS = (
    common.TableRow("GDLT", "RG, Fis-V", (
        common.Run("dataset=rhythmic_gymnastics,task=Ball", "runs/gdlt_ball"),
        common.Run("dataset=fis_v,task=TES", "runs/gdlt_tes")),
        paper="RG average 76.5, Fis-V 76.1 [unverified]", debug="0.65-0.71"),
    common.TableRow("CoFInAl / GDLT", "any video dataset (PD4T, MTL-AQA, ...)", (
        common.Run("dataset=features,folder=DIR,label_scale=4", "runs/cofinal_gait", config="cofinal"),
        common.Run("dataset=features,folder=DIR,label_scale=4", "runs/gdlt_gait")),
        features=common.Features("pd4t", "gait", "rgb_imagenet_hassony2")),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, args, task, section = common.features_config("gdlt", arg)
    section.update(alpha=1.0, loss_align=0)
    common.set_epochs(c, EPOCHS.get(task, EPOCHS["Ball"]))
    if args.debug:
        common.apply_features_debug(c, section, epochs=15)
    c.gdlt = section
    return c
