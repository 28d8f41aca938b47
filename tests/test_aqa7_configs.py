"""AQA-7 recipes: CoRe as ``Seven_CoRe.yaml`` / ``SevenPair.py`` run it, USDL per class, the
per-class report with its Fisher-z average.

Oracles: the official per-class ranges and ``misc.normalize`` / ``SevenPair.delta`` /
``Group_helper.build`` transcribed here, the .mat values the test writes, scipy-free Fisher-z
written out. The fixture is a tiny AQA-7 class in the distributed layout (``Seven/``).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from aqa_jax import cross_validation as cv
from aqa_jax.config_args import load_config
from aqa_jax.data.frames import decode_jpeg
from aqa_jax.data.registry import build, data_source

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["diving", "gym_vault", "ski_big_air", "snowboard_big_air", "sync_diving_3m", "sync_diving_10m"]
# CoRe utils/misc.py, normalize(): label_ranges by class index 1-6
OFFICIAL_RANGES = {1: (21.6, 102.6), 2: (12.3, 16.87), 3: (8.0, 50.0), 4: (8.0, 50.0),
                   5: (46.2, 104.88), 6: (49.8, 99.36)}
# diving rows [class_idx, sample_idx, score] of a tiny Split_4
TRAIN = [[1, i, s] for i, s in zip(range(1, 9), [45.6, 80.25, 66.0, 92.4, 30.15, 71.4, 55.35, 88.2])]
TEST = [[1, i, s] for i, s in zip(range(20, 24), [50.4, 77.7, 62.1, 95.55])]


def official_normalize(label, class_idx, upper=100.0):
    lo, hi = OFFICIAL_RANGES[class_idx]
    return ((label - lo) / (hi - lo)) * float(upper)


def level(k: int) -> int:  # frame k's gray level
    return (k * 2) % 250


@pytest.fixture(scope="module")
def aqa7_dir(tmp_path_factory) -> Path:
    """A built ``aqa7/diving``: 8 training, 4 test samples of 104 frames (16x12 JPEGs)."""
    root = tmp_path_factory.mktemp("aqa7")  # manual/Seven (the owners' files) and data/ (built)
    seven = root / "manual" / "Seven"
    (seven / "Split_4").mkdir(parents=True)
    scipy.io.savemat(seven / "Split_4" / "split_4_train_list.mat", {"consolidated_train_list": np.array(TRAIN)})
    scipy.io.savemat(seven / "Split_4" / "split_4_test_list.mat", {"consolidated_test_list": np.array(TEST)})
    for _, idx, _ in TRAIN + TEST:
        folder = seven / "diving-out" / f"{idx:03d}"
        folder.mkdir(parents=True)
        for k in range(1, 105):
            cv2.imwrite(str(folder / f"img_{k:05d}.jpg"), np.full((12, 16, 3), level(k), np.uint8))
    data = root / "data"
    build("aqa7", "diving", data_dir=str(data), manual_dir=str(seven))
    return data


def test_core_aqa7_configs_are_seven_core_yaml_per_class():
    from tfds_builders.aqa7.aqa7_dataset_builder import CORE_SCORE_RANGES

    for class_idx, name in enumerate(CLASSES, start=1):
        c = load_config(f"{REPO}/configs/core.py:dataset=aqa7,task={name}")
        assert (c.data.name, c.data.config, c.data.train_split, c.data.eval_split) == ("aqa7", name, "train", "test")
        assert (c.batch_size, c.step_per_update, c.total_epochs) == (2, 2, 200)  # bs_train, step_per_update
        assert c.core.score_range == 100.0 and c.core.depth == 5 and c.core.num_exemplars == 10
        assert c.core.use_dd is False and c.core.exemplar_key == ""  # any training sample of the class
        assert c.optimizer.lr == 1e-3 and c.optimizer.lr_factors.backbone == 0.1 and c.optimizer.weight_decay == 0
        assert c.bn_policy == "frozen" and c.clips.preset == "core"
        assert (c.clips.layout, c.clips.num_frames, c.clips.max_shift) == ("first", 103, 0)
        assert tuple(c.clips.clip_starts) == (0, 10, 20, 30, 40, 50, 60, 70, 80, 86)  # Backbone.py
        assert tuple(c.clips.score_norm) == (*OFFICIAL_RANGES[class_idx], 100.0)
        assert CORE_SCORE_RANGES[name] == OFFICIAL_RANGES[class_idx]  # the builder's table agrees


def test_usdl_aqa7_and_musdl_refusal():
    c = load_config(f"{REPO}/configs/usdl.py:dataset=aqa7,task=sync_diving_10m")
    assert (c.usdl.num_bins, c.usdl.score_min, c.usdl.score_max, c.usdl.sigma) == (101, 0.0, 100.0, 5.0)
    assert tuple(c.clips.score_norm) == (49.8, 99.36, 100.0) and c.clips.layout == "first"
    assert c.batch_size == 4 and c.total_epochs == 100 and c.optimizer.lr == 1e-4
    with pytest.raises(ValueError, match="no per-judge scores.*configs/usdl.py:dataset=aqa7") as err:
        load_config(f"{REPO}/configs/musdl.py:dataset=aqa7,task=diving")
    assert "\n" not in str(err.value)


def test_sampler_reads_the_first_103_frames_and_normalises_the_class_scores(aqa7_dir):
    from aqa_jax.methods import get_method

    config = load_config(f"{REPO}/configs/core.py:dataset=aqa7,task=diving,debug")
    method = get_method("core")(config)
    sampler = method.clip_sampler(False)
    source = data_source("aqa7", "diving", "test", data_dir=str(aqa7_dir))
    raw = {int(r[1]): float(r[2]) for r in scipy.io.loadmat(
        aqa7_dir.parent / "manual" / "Seven" / "Split_4" / "split_4_test_list.mat")["consolidated_test_list"]}
    for record in source:
        idx = sampler.frame_indices(record, np.random.default_rng(0))
        np.testing.assert_array_equal(idx, np.arange(103))  # img_00001 ... img_00103, no shift
        assert abs(decode_jpeg(record["frames"][102]).mean() - level(103)) < 6
        example = sampler(record, None)
        expected = np.float32(official_normalize(raw[int(record["sample_idx"])], 1))  # then .float()
        assert example["score"] == expected and example["raw_score"] == np.float32(raw[int(record["sample_idx"])])
        assert example["clip"].shape == (10, 16, 64, 64, 3)


def test_core_group_bounds_on_a_class_are_seven_pair_delta(aqa7_dir):
    from aqa_jax.methods import get_method

    config = load_config(f"{REPO}/configs/core.py:dataset=aqa7,task=diving")
    method = get_method("core")(config)
    method.prepare(data_source("aqa7", "diving", "train", data_dir=str(aqa7_dir)))
    # SevenPair.delta over the .mat's float64 scores, Group_helper.build(Min 0, Max 100)
    scores = [r[2] for r in TRAIN]
    delta = sorted(abs(official_normalize(scores[i], 1) - official_normalize(scores[j], 1))
                   for i in range(len(scores)) for j in range(i + 1, len(scores)))
    edges = [0] + [delta[int((i / 8) * (len(delta) - 1))] for i in range(1, 8)] + [100]
    assert config.core.group_bounds == [float(e) for e in edges]


def _debug_run(method, aqa7_dir, workdir):
    from aqa_jax.train.loop import train

    config = load_config(f"{REPO}/configs/{method}.py:dataset=aqa7,task=diving,debug")
    config.data.data_dir = str(aqa7_dir)
    config.model.final_endpoint = "Conv3d_1a_7x7"  # the first conv alone: compiles in seconds
    config.batch_size, config.total_epochs = 4, 1
    config.num_devices = 1
    config.mesh = [("data", 1), ("model", 1)]
    return config, train(config, workdir)


@pytest.mark.parametrize("method", ["core", "usdl"])
def test_aqa7_debug_variant_trains_and_reports_normalised_scores(method, aqa7_dir, tmp_path):
    from aqa_jax.train import reports

    config, summary = _debug_run(method, aqa7_dir, tmp_path)
    assert config.data.name == "aqa7" and config.clips.layout == "first"
    assert summary["test"]["num_samples"] == 4 and np.isfinite(summary["test"]["l2"])
    ids, columns = reports.read_predictions_csv(tmp_path / "predictions_test.csv")
    truth = {f"diving/{i:03d}": np.float32(official_normalize(s, 1)) for _, i, s in TEST}
    for sample, value in zip(ids, columns["score_true"]):
        assert value == pytest.approx(truth[sample], abs=1e-4)  # the normalised units
    if method == "core":  # the class's training set gives 4 (num_exemplars) real exemplars each
        assert np.all(np.isfinite(columns["exemplar_spread"]))


def test_classes_report_gives_each_class_and_the_fisher_z_average(tmp_path):
    curves = {"diving": [0.5, 0.8, 0.7], "gym_vault": [0.2, 0.3, 0.6], "ski_big_air": [0.9, 0.1, 0.4]}
    dirs = {}
    for name, curve in curves.items():
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        lines = [{"split": "test", "step": 10 * (k + 1), "srcc": v} for k, v in enumerate(curve)]
        lines.insert(1, {"split": "train", "step": 10, "loss": 1.0})
        (dirs[name] / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    report = cv.classes_report(dirs)
    assert report["classes"]["diving"] == {"best": 0.8, "best_epoch": 2, "last": 0.7, "epochs": 3}
    assert report["classes"]["gym_vault"]["best_epoch"] == 3
    best, last = [0.8, 0.6, 0.9], [0.7, 0.6, 0.4]
    z = lambda r: np.tanh(np.mean([0.5 * np.log((1 + x) / (1 - x)) for x in r]))  # noqa: E731
    assert report["fisher_z_best"] == pytest.approx(z(best)) and report["fisher_z_last"] == pytest.approx(z(last))


def test_classes_command_runs_every_aqa7_class_and_prints_the_average(monkeypatch, capsys, tmp_path):
    from aqa_jax.cli import main

    calls = []

    def fake_run_classes(spec, workdir, tasks, overrides=()):
        calls.append((spec, Path(workdir), list(tasks), list(overrides)))
        rows = {t: {"best": 0.5, "best_epoch": 1, "last": 0.4, "epochs": 2} for t in tasks}
        return {"classes": rows, "fisher_z_best": 0.5, "fisher_z_last": 0.4}

    monkeypatch.setattr(cv, "run_classes", fake_run_classes)
    assert main(["classes", "--config", "configs/core.py:dataset=aqa7", "--workdir", str(tmp_path),
                 "--set", "total_epochs=3"]) == 0
    assert calls == [("configs/core.py:dataset=aqa7", tmp_path, CLASSES, ["total_epochs=3"])]
    out = capsys.readouterr().out
    assert "Fisher-z average over 6 classes: best 0.5000, last 0.4000" in out
