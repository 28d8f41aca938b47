"""aqa7 builder: tiny JPEG frame folders and Split_4 .mat lists in the distributed layout.

The oracle is the .mat content read back in the test with scipy.io.loadmat and the frames
the test wrote; no real AQA-7 files exist in shared/, so fixtures only.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from aqa_jax.data.bad_input import BadSampleError
from aqa_jax.data.frames import decode_jpeg
from aqa_jax.data.registry import build, data_source
from tfds_builders.aqa7.aqa7_dataset_builder import MANUAL_DOWNLOAD_INSTRUCTIONS

W, H = 16, 12
# rows [class_idx, sample_idx, score]; class 1 = diving, 2 = gym_vault, 7 = trampoline
TRAIN = [[1, 1, 45.6], [2, 3, 14.2], [1, 7, 80.25], [7, 1, 30.0], [2, 12, 15.9]]
TEST = [[2, 5, 13.05], [1, 2, 66.0], [1, 104, 92.4]]
NUM_FRAMES = {("diving", 1): 103, ("diving", 7): 105, ("diving", 2): 103, ("diving", 104): 104,
              ("gym_vault", 3): 103, ("gym_vault", 12): 103, ("gym_vault", 5): 106}
CLASSES = {1: "diving", 2: "gym_vault"}


def level(k: int) -> int:  # frame k's gray level: tells frame order apart
    return (k * 2) % 250


def make_seven(root: Path) -> Path:
    seven = root / "Seven"
    (seven / "Split_4").mkdir(parents=True)
    scipy.io.savemat(seven / "Split_4" / "split_4_train_list.mat",
                     {"consolidated_train_list": np.array(TRAIN, np.float64)})
    scipy.io.savemat(seven / "Split_4" / "split_4_test_list.mat",
                     {"consolidated_test_list": np.array(TEST, np.float64)})
    for (cls, idx), n in NUM_FRAMES.items():
        folder = seven / f"{cls}-out" / f"{idx:03d}"
        folder.mkdir(parents=True)
        for k in range(1, n + 1):
            cv2.imwrite(str(folder / f"img_{k:05d}.jpg"), np.full((H, W, 3), level(k), np.uint8))
    return seven


@pytest.fixture(scope="module")
def seven(tmp_path_factory) -> Path:
    return make_seven(tmp_path_factory.mktemp("manual"))


@pytest.fixture(scope="module")
def built(seven, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data")
    for config in ("diving", "gym_vault"):
        build("aqa7", config, data_dir=str(data), manual_dir=str(seven.parent))
    return data


@pytest.mark.parametrize("class_idx", [1, 2])
@pytest.mark.parametrize("split", ["train", "test"])
def test_splits_scores_and_frames_match_the_mat_lists(seven, built, class_idx, split):
    table = scipy.io.loadmat(seven / "Split_4" / f"split_4_{split}_list.mat")[
        f"consolidated_{split}_list"]
    name = CLASSES[class_idx]
    expected = {int(r[1]): float(r[2]) for r in table if int(r[0]) == class_idx}
    ds = data_source("aqa7", name, split, data_dir=str(built))
    assert len(ds) == len(expected)
    for rec in ds:
        idx = int(rec["sample_idx"])
        assert rec["id"].decode() == f"{name}/{idx:03d}"
        assert rec["action_class"].decode() == name and int(rec["class_idx"]) == class_idx
        assert float(rec["score"]) == pytest.approx(expected[idx], abs=1e-5)
        n = NUM_FRAMES[(name, idx)]  # every frame of the folder, not just 103
        assert int(rec["num_frames"]) == len(rec["frames"]) == n
        first, last = decode_jpeg(rec["frames"][0]), decode_jpeg(rec["frames"][-1])
        assert first.shape == (256, round(256 * W / H), 3)
        assert abs(first.mean() - level(1)) < 6 and abs(last.mean() - level(n)) < 6


def test_empty_manual_dir_gives_the_instructions(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        build("aqa7", "diving", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
    assert MANUAL_DOWNLOAD_INSTRUCTIONS in str(err.value)


def test_missing_frame_fails_then_is_skipped_and_reported(tmp_path):
    seven = make_seven(tmp_path / "m")
    gone = seven / "gym_vault-out" / "012" / "img_00050.jpg"
    gone.unlink()
    with pytest.raises(BadSampleError) as err:
        build("aqa7", "gym_vault", data_dir=str(tmp_path / "d1"), manual_dir=str(seven))
    assert "gym_vault/012" in str(err.value) and str(gone) in str(err.value)

    b = build("aqa7", "gym_vault", data_dir=str(tmp_path / "d2"), manual_dir=str(seven),
              skip_bad_samples=True)
    train = data_source("aqa7", "gym_vault", "train", data_dir=str(tmp_path / "d2"))
    assert [int(r["sample_idx"]) for r in train] == [3]
    report = json.loads((Path(b.data_dir) / "bad_samples_train.json").read_text())
    assert [s["sample"] for s in report["skipped"]] == ["gym_vault/012"]


def test_missing_folder_and_short_folder(tmp_path):
    seven = make_seven(tmp_path / "m")
    for p in sorted((seven / "diving-out" / "002").iterdir()):
        p.unlink()
    (seven / "diving-out" / "002").rmdir()
    with pytest.raises(BadSampleError, match=r"diving/002.*missing sample folder .*002"):
        build("aqa7", "diving", data_dir=str(tmp_path / "d1"), manual_dir=str(seven))
    make_seven(tmp_path / "m2")
    short = tmp_path / "m2" / "Seven" / "diving-out" / "104"
    for k in range(60, 105):
        (short / f"img_{k:05d}.jpg").unlink()
    with pytest.raises(BadSampleError, match=r"diving/104.* 59 frames, fewer than the 103"):
        build("aqa7", "diving", data_dir=str(tmp_path / "d2"), manual_dir=str(tmp_path / "m2"))


def test_malformed_mat_row_names_the_file_and_row(tmp_path):
    seven = make_seven(tmp_path / "m")
    mat = seven / "Split_4" / "split_4_test_list.mat"
    scipy.io.savemat(mat, {"consolidated_test_list": np.array(TEST + [[1, 9, np.nan]])})
    with pytest.raises(BadSampleError) as err:
        build("aqa7", "diving", data_dir=str(tmp_path / "d"), manual_dir=str(seven))
    assert f"{mat}, consolidated_test_list row 3" in str(err.value)
    assert "diving/009" in str(err.value)
    scipy.io.savemat(mat, {"wrong_name": np.array(TEST)})
    with pytest.raises(ValueError, match="no variable consolidated_test_list"):
        build("aqa7", "diving", data_dir=str(tmp_path / "d2"), manual_dir=str(seven))


def test_a_sample_in_both_split_lists_is_refused(tmp_path):
    """Split 4 is disjoint; a class sample listed in train and test would leak test samples."""
    seven = make_seven(tmp_path / "m")
    test_mat = seven / "Split_4" / "split_4_test_list.mat"
    scipy.io.savemat(test_mat, {"consolidated_test_list": np.array(TEST + [[1, 7, 80.25]])})
    with pytest.raises(ValueError) as err:
        build("aqa7", "diving", data_dir=str(tmp_path / "d"), manual_dir=str(seven))
    message = str(err.value)
    assert "1 sample(s)" in message and "7" in message and str(test_mat) in message
    # another class's lists are unaffected: gym_vault builds
    build("aqa7", "gym_vault", data_dir=str(tmp_path / "d2"), manual_dir=str(seven))
