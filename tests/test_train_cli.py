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

    # issue 17 items 7 and 9: no extension → the .npz path written is the one reported (rc 0,
    # not "wrote out.npz" then rc 2); predict on a pretraining run and a damaged checkpoint
    # are one line each (a KeyError and a 146-line tensorstore traceback before)
    capsys.readouterr()
    assert main(["export-adapters", str(workdir), str(tmp_path / "out")]) == 0
    assert f"to {tmp_path / 'out.npz'} (" in capsys.readouterr().out
    assert sorted(traverse_util.flatten_dict(load_adapters_npz(tmp_path / "out.npz"))) == sorted(expected)
    assert main(["predict", "--checkpoint", str(workdir), str(tmp_path / "any.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "PECoP pretraining run (method vspp)" in err
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(workdir, damaged)
    files = sorted((damaged / "checkpoints" / "2" / "adapters").rglob("d/*"), key=lambda p: -p.stat().st_size)
    files[0].write_bytes(files[0].read_bytes()[: files[0].stat().st_size // 2])
    assert main(["export-adapters", str(damaged), str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("aqa-jax export-adapters: error: checkpoint step 2 ")
    assert "cannot be read" in err and "--step" in err and not (tmp_path / "x.npz").exists()


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
