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
Hoop, Ribbon; TES, PCS), folder and label_scale (dataset=features: the extract-features folder,
and the divisor bringing its scores into [0, 1], e.g. 4 for PD4T/synthetic_aqa, 104.5 for
MTL-AQA), variant (cofinal | cofinal_2: the Ribbon model, no revert branch; default: the
task's official one), faithful_quirks (the release's batch-mixing FGS attention), max_clips
(evaluation pad length, 256), debug (synthetic_features/small, generated on first use; seconds on
a CPU).

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

(the Fis-V H 448 runs only with the FGS head fix, see :mod:`aqa_jax.methods.cofinal`).
``features`` / ``synthetic_features`` use Ball's settings. Fis-V scores above 25 give targets
above 1, beyond the read-out's largest weight (1): that is the official setting; ``label_scale=``
changes it. Debug: lr 0.05, 15 epochs, H 64, 16-clip windows, batch 16 (test SRCC 0.86-0.89 over
seeds 0-2).
"""

from aqa_jax.config_features import apply_debug, features_config, set_epochs

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


def get_config(arg=None):
    c, args, task, section = features_config("cofinal", arg, variant="", faithful_quirks=False)
    epochs, alpha, align, preset, variant = OFFICIAL.get(task, OFFICIAL["Ball"])
    variant = args.variant or variant
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; choose one of {VARIANTS}")
    section.update(alpha=alpha, loss_align=align, weight_preset=preset, use_etf=True,
                   revert=variant == "cofinal", num_subgrades=100, fgs_heads=4,
                   faithful_quirks=bool(args.faithful_quirks))
    set_epochs(c, epochs)
    if args.debug:
        apply_debug(c, section, epochs=15)
    c.cofinal = section
    return c
