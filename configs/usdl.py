"""USDL fine-tuning (score distribution learning), one config per dataset/task.

  aqa-jax train --config configs/usdl.py:dataset=pd4t,task=gait --workdir runs/usdl_gait
  aqa-jax train --config configs/usdl.py:dataset=pd4t,task=gait,init=pecop,pretrained=runs/pecop_gait ...

Args: dataset (pd4t | mtl_aqa | jigsaws | synthetic_aqa), task, fold (JIGSAWS), init
(dom_g: Kinetics-400; pecop / hpt_bn / dom_s: the backbone of ``pretrained``, a
``configs/pecop.py`` run of that variant), decoding (argmax, the official rule, or
expectation), debug (the small synthetic set at 32 px, a few epochs: minutes on a CPU).

Official recipe (nzl-thu/MUSDL ``run.sh``/``opts.py``): Adam lr 1e-4, weight decay 0, batch 4,
100 epochs (80 on JIGSAWS), the whole I3D trained with BatchNorm in training mode.
Bins: MTL-AQA 101 over 0-104.5, sigma 5; JIGSAWS 25 over GRS 6-30, sigma 1. PD4T's USDL
settings are not published: we treat its UPDRS 0-4 like JIGSAWS' integer scores (5 bins,
sigma 1). synthetic_aqa scores are continuous 0-4: 41 bins (0.1 apart), sigma 3 bins.
"""

from aqa_jax.config_lib import apply_debug, finetune_config

# dataset: (num_bins, score_min, score_max, sigma, epochs)
BINS = {
    "mtl_aqa": (101, 0.0, 104.5, 5.0, 100),
    "jigsaws": (25, 6.0, 30.0, 1.0, 80),
    "pd4t": (5, 0.0, 4.0, 1.0, 100),
    "synthetic_aqa": (41, 0.0, 4.0, 3.0, 30),
}


def get_config(arg=None):
    c, args = finetune_config("usdl", arg, datasets=("pd4t", "mtl_aqa", "jigsaws", "synthetic_aqa"),
                              preset="musdl", decoding="argmax")
    bins, lo, hi, sigma, epochs = BINS[args.dataset]
    c.usdl = dict(num_bins=bins, score_min=lo, score_max=hi, sigma=sigma, hidden=(256, 128),
                  decoding=args.decoding, judge_key="", num_judges=1, combine="")
    c.num_epochs = epochs
    if args.dataset == "synthetic_aqa":
        c.clips.preset = "deepmind_64"
    if args.debug:
        apply_debug(c, args, epochs=20)
        c.usdl.update(num_bins=41, score_min=0.0, score_max=4.0, sigma=3.0)
    return c
