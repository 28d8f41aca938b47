"""``aqa-jax pretrain`` and ``aqa-jax export-adapters`` on a tiny run; adapter item size."""

from __future__ import annotations

import jax
import numpy as np
import flax.linen as nn
from flax import traverse_util

from train_helpers import REPO, restore_state

from aqa_jax.cli import main
from aqa_jax.config_args import load_config
from aqa_jax.methods import get_method
from aqa_jax.train.checkpoint import adapter_subtree, load_adapters_npz
from aqa_jax.train.state import abstract_variables


def test_pretrain_then_export_adapters(synthetic_data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["pretrain", "--config", f"{REPO}/configs/pecop.py:dataset=synthetic_aqa,debug",
            "--workdir", str(workdir), "--data-dir", str(synthetic_data_dir),
            "--set", "data.config=finger_tapping_tiny", "--set", "data.eval_repeat=2",
            "--set", "model.adapter_blocks=('Mixed_3b',)", "--set", "model.final_endpoint=Mixed_3b",
            "--set", "vspp.clip_len=8", "--set", "total_steps=2", "--set", "num_devices=1",
            "--set", "mesh=[('data', 1), ('model', 1)]"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trained 2 steps" in out and "acc_speed=" in out
    for name in ("metrics.jsonl", "learning_curve.png", "config.json", "summary.json"):
        assert (workdir / name).is_file(), name
    assert any((workdir / "tensorboard").iterdir())

    npz = tmp_path / "adapters.npz"
    assert main(["export-adapters", str(workdir), str(npz)]) == 0
    exported = traverse_util.flatten_dict(load_adapters_npz(npz))
    expected = traverse_util.flatten_dict(adapter_subtree(restore_state(workdir)["params"]))
    assert sorted(exported) == sorted(expected) and len(expected) == 5
    for key, value in expected.items():
        np.testing.assert_array_equal(exported[key], np.asarray(value))
    assert main(["export-adapters", str(workdir), str(npz), "--step", "77"]) == 2
    assert "no checkpoint at step 77" in capsys.readouterr().err


def test_pecop_adapters_item_is_4_4_mb():
    config = load_config(f"{REPO}/configs/pecop.py:dataset=pd4t,task=gait")
    model = get_method("vspp")(config).build_model()
    example = {"clip": np.zeros((1, 32, 224, 224, 3), np.float32)}
    params = nn.unbox(abstract_variables(model, example)["params"])
    adapters = adapter_subtree(params)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(adapters))
    assert n == 1_109_068  # pecop_i3d.md §1: 9 adapters
    assert round(n * 4 / 1e6, 2) == 4.44
    assert config.vspp.fr == 3 and config.optimizer.lr == 0.01 and config.data.repeat == 20
