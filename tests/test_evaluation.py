"""Evaluation helpers: the FineDiving/MTL-AQA overlap check and the k-fold report."""

import json

import numpy as np
import pytest

from aqa_jax import cross_validation as cv
from aqa_jax.evaluation import training_overlap


def test_overlap_between_finediving_and_mtl_aqa_splits_is_named():
    fine_diving_train = [{"id": "FINA_1/3", "mtl_aqa_key": ""}, {"id": "01/1", "mtl_aqa_key": "01_01"},
                         {"id": "02/7", "mtl_aqa_key": "02_07"}]
    mtl_test = [{"id": "01_01"}, {"id": "05_02"}, {"id": "02_07"}]
    assert training_overlap(fine_diving_train, "fine_diving", mtl_test, "mtl_aqa") == ["01_01", "02_07"]
    assert training_overlap(mtl_test, "mtl_aqa", fine_diving_train, "fine_diving") == ["01_01", "02_07"]
    assert training_overlap(mtl_test, "mtl_aqa", mtl_test, "mtl_aqa") == []  # same dataset: split check is the builder's


def test_with_args_sets_and_replaces_config_args():
    assert cv.with_args("configs/musdl.py:dataset=jigsaws,fold=3", fold=1) == "configs/musdl.py:dataset=jigsaws,fold=1"
    assert cv.with_args("configs/musdl.py", fold=2, task="suturing") == "configs/musdl.py:fold=2,task=suturing"
    assert cv.fold_spec("configs/musdl.py:dataset=jigsaws,init=pecop,pretrained=runs/p_f{fold}", 3) == (
        "configs/musdl.py:dataset=jigsaws,init=pecop,pretrained=runs/p_f3,fold=3")


def test_cv_report_is_the_mean_of_the_per_epoch_fold_average_over_the_last_epochs(tmp_path):
    rng = np.random.default_rng(0)
    curves = rng.uniform(0.2, 0.9, size=(4, 12))
    dirs = []
    for f, curve in enumerate(curves):
        d = tmp_path / f"fold{f}"
        d.mkdir()
        lines = [{"step": 5 * (e + 1), "split": "train", "loss": 1.0} for e in range(12)]
        lines += [{"step": (3 + f) * (e + 1), "split": "test", "srcc": float(v)} for e, v in enumerate(curve)]
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
        dirs.append(d)
    report = cv.cv_report(dirs, last=10)
    by_epoch = [np.mean([curves[f][e] for f in range(4)]) for e in range(12)]
    assert report["mean_last_10"] == pytest.approx(np.mean(by_epoch[2:]))
    assert report["best_epoch"] == int(np.argmax(by_epoch)) + 1
    assert report["fold_last"] == pytest.approx(curves[:, -1].tolist())
    assert cv.plot_cv(dirs, tmp_path / "cv.png").stat().st_size > 5_000
    # Fisher-z across tasks
    assert cv.average_tasks({"a": {"mean_last_10": 0.71}, "b": {"mean_last_10": 0.69},
                             "c": {"mean_last_10": 0.71}}) == pytest.approx(0.7035, abs=5e-5)
