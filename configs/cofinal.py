"""CoFInAl (coarse grades + fine ETF sub-grades) on clip features, one config per dataset/task.

  aqa-jax build-data rhythmic_gymnastics --config ball --manual-dir /data/RG
  aqa-jax train --config configs/cofinal.py:dataset=rhythmic_gymnastics,task=Ball --workdir runs/cofinal_ball
  aqa-jax train --config configs/cofinal.py:dataset=fis_v,task=TES --workdir runs/cofinal_tes

On any video dataset, from I3D (or PECoP-adapted I3D) clip features:

  aqa-jax extract-features pd4t --config gait --out feats/pd4t_gait        # [--weights <convert-weights dir>]
  aqa-jax build-data clip_features --manual-dir feats/pd4t_gait --data-dir feats/pd4t_gait/tfds
  aqa-jax train --config configs/cofinal.py:dataset=features,folder=feats/pd4t_gait,label_scale=4 --workdir runs/cofinal_gait
  aqa-jax predict --checkpoint runs/cofinal_gait patient_07.mp4       # grade, sub-grade, score

Args: dataset (rhythmic_gymnastics | fis_v | features | synthetic_features), task (Ball, Clubs,
Hoop, Ribbon; TES, PCS), folder and label_scale (dataset=features), max_clips, debug: see
``common.features_config``; variant (cofinal | cofinal_2: the Ribbon model, no revert branch;
default: the task's official one), faithful_quirks (the release's batch-mixing FGS attention).

Official per-run settings (``scripts/train_all_rg.sh``, ``train_all_fis.sh``; all: SGD 1e-2,
momentum 0.9, weight decay 1e-4, cosine to x0.01, batch 32, dropout 0.3, 1 encoder and 2
decoder layers, 4 grade queries, margin 1, 68-clip training windows, labels / 25):

| task   | epochs | alpha | loss_align | weight preset | model                     |
|--------|--------|-------|------------|---------------|---------------------------|
| Ball   | 250    | 1     | 1          | 2             | cofinal, H 256, 1 head    |
| Clubs  | 400    | 1     | 1          | 3             | cofinal                   |
| Hoop   | 300    | 1     | 2          | 2             | cofinal                   |
| Ribbon | 150    | 1     | 1          | 3             | cofinal_2 (= GDLTETH2)    |
| TES    | 200    | 0.5   | 1          | 3             | cofinal, H 448, 7 heads   |
| PCS    | 200    | 0.5   | 1          | 3             | cofinal, H 448, 7 heads   |

(the Fis-V H 448 runs only with the FGS head fix, see :mod:`aqa_jax.methods.cofinal`; Fis-V
scores above 25 give targets above 1, as officially). ``features`` / ``synthetic_features``
use Ball's settings. ``debug``: synthetic_features/small, 15 epochs (seconds on a CPU).
"""

import ml_collections

from . import common

# task: (epochs, alpha, loss_align, weight_preset, variant)
OFFICIAL = {
    "Ball": (250, 1.0, 1, 2, "cofinal"),
    "Clubs": (400, 1.0, 1, 3, "cofinal"),
    "Hoop": (300, 1.0, 2, 2, "cofinal"),
    "Ribbon": (150, 1.0, 1, 3, "cofinal_2"),
    "TES": (200, 0.5, 1, 3, "cofinal"),
    "PCS": (200, 0.5, 1, 3, "cofinal"),
}
VARIANTS = ("cofinal", "cofinal_2")
TASKS = common.feature_tasks()
REQUIRED_ARGS = {"features": "folder=feats/pd4t_gait,label_scale=4"}
# README.md's method x dataset table (python -m aqa_jax.readme_table derives the commands).
TABLE_ROWS = (
    common.TableRow("CoFInAl", "RG Ball / Clubs / Hoop / Ribbon", (
        common.Run("dataset=rhythmic_gymnastics,task=Ball", "runs/cofinal_ball"),),
        paper="Ball 80.87 (released log); average ≈ 80.7 [unverified]",
        debug="0.864 (generated `synthetic_features`)"),
    common.TableRow("CoFInAl", "Fis-V TES / PCS", (common.Run("dataset=fis_v,task=TES", "runs/cofinal_tes"),),
                    paper="average ≈ 78.8 [unverified]"),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, args, task, section = common.features_config("cofinal", arg, variant="", faithful_quirks=False)
    epochs, alpha, align, preset, variant = OFFICIAL.get(task, OFFICIAL["Ball"])
    variant = args.variant or variant
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; choose one of {VARIANTS}")
    section.update(alpha=alpha, loss_align=align, weight_preset=preset, use_etf=True,
                   revert=variant == "cofinal", num_subgrades=100, fgs_heads=4,
                   faithful_quirks=bool(args.faithful_quirks))
    common.set_epochs(c, epochs)
    if args.debug:
        common.apply_features_debug(c, section, epochs=15)
    c.cofinal = section
    return c
