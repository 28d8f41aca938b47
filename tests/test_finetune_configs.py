"""Every cell of PECoP's results table has a config, runnable from each initialisation."""

from pathlib import Path

import pytest

from aqa_jax.config_args import load_config
from aqa_jax.data.sampling import CLIP_STARTS
from aqa_jax.models.i3d import MIXED_BLOCKS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# (method, dataset, tasks) of the PECoP table (reference/pecop_i3d.md §5.2), plus USDL on PD4T
CELLS = [
    ("musdl", "mtl_aqa", ["diving"]),
    ("core", "mtl_aqa", ["diving"]),  # the poster's ablation bars
    ("musdl", "jigsaws", ["suturing", "needle_passing", "knot_tying"]),
    ("core", "jigsaws", ["suturing", "needle_passing", "knot_tying"]),
    ("core", "pd4t", ["gait", "finger_tapping", "hand_movement", "leg_agility"]),
    ("core", "fine_diving", ["diving"]),
    ("usdl", "pd4t", ["gait", "finger_tapping", "hand_movement", "leg_agility"]),
]


@pytest.mark.parametrize("method,dataset,tasks", CELLS)
@pytest.mark.parametrize("init", ["dom_g", "pecop", "hpt_bn"])
def test_cell_configs_load_with_the_official_recipe(method, dataset, tasks, init):
    for task in tasks:
        arg = f"dataset={dataset},task={task},init={init}"
        if init != "dom_g":
            arg += f",pretrained=runs/{init}_{dataset}_{task}"
        c = load_config(f"{CONFIGS}/{method}.py:{arg}")
        assert c.method == method and c.data.name == dataset
        official = "rgb_imagenet_hassony2" if method == "core" else "rgb_imagenet_piergiaj"
        assert c.init_from == (official if init == "dom_g" else f"runs/{init}_{dataset}_{task}")
        assert tuple(c.model.adapter_blocks) == (tuple(MIXED_BLOCKS) if init == "pecop" else ())
        assert c.trainable == "full" and c.optimizer.name == "adam"
        if method == "core":  # CoRe: 1e-3 heads, backbone x0.1, frozen BN
            assert c.optimizer.lr == 1e-3 and c.optimizer.lr_factors["backbone"] == 0.1
            assert c.bn_policy == "frozen" and c.total_epochs == 200 and c.core.num_exemplars == 10
            assert c.batch_size * c.step_per_update == 2
        else:  # USDL/MUSDL: 1e-4 everywhere, BN in training mode
            assert c.optimizer.lr == 1e-4 and not c.optimizer.lr_factors
            assert c.bn_policy == "batch_stats"
        if dataset == "mtl_aqa":
            starts = CLIP_STARTS["core_10x16" if method == "core" else "musdl_10x16"]  # MUSDL: last at 87
            assert (c.clips.layout, c.clips.num_frames, tuple(c.clips.clip_starts)) == ("window", 103, starts)
        if dataset == "jigsaws":
            assert c.data.train_split == "train_fold0" and c.clips.num_frames == 160
    if (method, dataset) == ("musdl", "mtl_aqa"):
        assert c.usdl.num_judges == 7 and c.usdl.combine == "diving" and c.optimizer.weight_decay == 1e-5
    if (method, dataset) == ("core", "mtl_aqa"):
        assert c.core.use_dd and c.step_per_update == 2


def test_pretrained_inits_need_a_pretraining_run():
    with pytest.raises(ValueError, match="pretrained="):
        load_config(f"{CONFIGS}/core.py:dataset=pd4t,task=gait,init=pecop")
    with pytest.raises(ValueError, match="covers|cover"):
        load_config(f"{CONFIGS}/musdl.py:dataset=pd4t")
