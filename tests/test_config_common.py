"""``configs/common.py``: light (no jax), its restated constants equal the library's, and the
configs load through ``load_config`` from any directory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aqa_jax.config_args import load_config, load_module

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture(scope="module")
def common():
    return load_module(CONFIGS / "common.py")


def test_restated_constants_equal_the_library(common):
    from aqa_jax.data import synthetic
    from aqa_jax.data.sampling import CLIP_STARTS
    from aqa_jax.features import EXTRACTOR_FILE
    from aqa_jax.methods import _multitask
    from aqa_jax.models.i3d import MIXED_BLOCKS
    from aqa_jax.train.sharding import DEFAULT_RULES
    from aqa_jax.weights.named import NAMED

    assert common.MIXED_BLOCKS == tuple(MIXED_BLOCKS)
    assert common.CLIP_STARTS == CLIP_STARTS
    assert common.DEFAULT_RULES == DEFAULT_RULES
    assert common.NAMED_VARIANTS == {name: w.variant for name, w in NAMED.items()}
    assert common.MTL_TASKS == _multitask.TASKS
    assert common.MTL_AQA_CLASSES == _multitask.MTL_AQA_CLASSES
    assert common.SYNTHETIC_FACTOR_WEIGHTS == synthetic.FACTOR_WEIGHTS
    assert tuple(common.SYNTHETIC_FACTOR_WEIGHTS) == synthetic.FACTORS  # the judges' order
    assert common.SYNTHETIC_MAX_SCORE == synthetic.MAX_SCORE
    assert common.EXTRACTOR_FILE == EXTRACTOR_FILE


@pytest.mark.parametrize("tasks", ["score", "score+cls", "cls+score", "score,caps", "all",
                                   "caps+cls+score", " score + caps "])
def test_mtl_tasks_match_the_methods_parser(common, tasks):
    from aqa_jax.methods._multitask import parse_tasks

    expected = parse_tasks("score,cls,caps" if tasks == "all" else tasks)
    assert common.mtl_tasks(tasks) == ",".join(expected)


@pytest.mark.parametrize("tasks", ["cls", "score+speed", "caps+cls"])
def test_mtl_tasks_refuse_what_the_methods_refuse(common, tasks):
    from aqa_jax.methods._multitask import parse_tasks

    with pytest.raises(ValueError):
        parse_tasks(tasks)
    with pytest.raises(ValueError, match="contains 'score'"):
        common.mtl_tasks(tasks)


def test_parse_arg(common):
    cfg = common.parse_arg("variant=pecop,zero_init,reduction=8", variant="deepmind",
                           zero_init=False, reduction=4)
    assert (cfg.variant, cfg.zero_init, cfg.reduction) == ("pecop", True, 8)
    assert common.parse_arg("zero_init=false", zero_init=True).zero_init is False
    with pytest.raises(ValueError, match="allowed"):
        common.parse_arg("varient=pecop", variant="deepmind")
    with pytest.raises(ValueError, match="needs a value"):
        common.parse_arg("reduction=", reduction=4)


def test_every_keeps_one_of_a_pair(common):
    import ml_collections

    node = ml_collections.ConfigDict(dict(eval_every_epochs=1, x=0))
    common.every(node, "eval_every", steps=40)
    assert dict(node) == {"x": 0, "eval_every_steps": 40}
    common.every(node, "eval_every")
    assert dict(node) == {"x": 0}


def test_configs_import_neither_jax_nor_the_training_code():
    """Resolving every config in a fresh interpreter leaves jax, flax and the training modules
    unimported: the configs read only ml_collections and common.py."""
    specs = []
    for path in sorted(CONFIGS.glob("*.py")):
        if path.stem != "common":
            arg = "pretrained=none" if path.stem in ("c3d_avg", "mscadc") else ""
            specs += [f"{path}:{arg}"] + [f"{path}:debug"] * (path.stem != "i3d")  # i3d: a model only
    code = ("import sys\n"
            "from aqa_jax.config_args import load_config\n"
            f"for spec in {specs!r}:\n"
            "    load_config(spec)\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax', 'orbax')"
            " or m.startswith(('aqa_jax.train', 'aqa_jax.models', 'aqa_jax.methods', 'aqa_jax.data',"
            " 'aqa_jax.weights', 'aqa_jax.features')))\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_load_config_from_another_directory_and_a_copied_folder(tmp_path, monkeypatch):
    """``from . import common`` resolves beside the config file: from any current directory,
    and for a copy of configs/ elsewhere (whose common.py is its own)."""
    monkeypatch.chdir(tmp_path)
    assert load_config(f"{CONFIGS}/core.py:dataset=pd4t").data.name == "pd4t"
    copy = tmp_path / "my_configs"
    copy.mkdir()
    for name in ("common.py", "core.py"):
        (copy / name).write_text((CONFIGS / name).read_text())
    text = (copy / "common.py").read_text()
    (copy / "common.py").write_text(text.replace("INITS = (", "INITS = ('mine', "))
    assert load_config(f"{copy}/core.py:dataset=pd4t,init=mine,pretrained=x").init_name == "mine"
    with pytest.raises(ValueError, match="init='mine'"):
        load_config(f"{CONFIGS}/core.py:dataset=pd4t,init=mine,pretrained=x")


def test_configs_import_as_a_package_from_the_repository_root():
    out = subprocess.run([sys.executable, "-c", "import configs.usdl as u; "
                          "print(u.get_config('dataset=jigsaws').clips.preset)"],
                         capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "musdl_jigsaws"


def test_config_tasks_lists_each_configs_datasets():
    from aqa_jax.config_args import config_tasks

    assert config_tasks(f"{CONFIGS}/core.py:dataset=aqa7")["aqa7"] == (
        "diving", "gym_vault", "ski_big_air", "snowboard_big_air", "sync_diving_3m", "sync_diving_10m")
    assert set(config_tasks(f"{CONFIGS}/musdl.py")) == {"mtl_aqa", "jigsaws", "synthetic_aqa"}
    assert config_tasks(f"{CONFIGS}/pecop.py")["jigsaws"] == ("suturing", "needle_passing", "knot_tying")
    assert config_tasks(f"{CONFIGS}/i3d.py") == {}
    for name in ("usdl", "musdl", "core", "tsa", "pecop"):  # each listed dataset and task loads
        for dataset, tasks in config_tasks(f"{CONFIGS}/{name}.py").items():
            for task in tasks:
                c = load_config(f"{CONFIGS}/{name}.py:dataset={dataset},task={task}")
                assert c.data.name == dataset
