"""JIGSAWS builder: tiny .avi videos / frame folders in the distributed layout, MUSDL's real
splits.pkl and label.pkl, bad input. Oracles: the pickles the fixture was written from."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from aqa_jax.data import registry
from aqa_jax.data.bad_input import BadSampleError
from aqa_jax.data.frames import decode_jpeg
from aqa_jax.weights.safe_pickle import safe_load
from tfds_builders.jigsaws import jigsaws_dataset_builder as jb

NAME = "jigsaws"
TASKS = {"suturing": "Suturing", "needle_passing": "Needle_Passing", "knot_tying": "Knot_Tying"}


def _gray(i: int) -> int:
    return 20 + 30 * i  # frame i of a video; MJPG keeps flat frames within a few levels


def _write_video(path: Path, num_frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (16, 12))
    assert writer.isOpened()
    for i in range(num_frames):
        writer.write(np.full((12, 16, 3), _gray(i), np.uint8))
    writer.release()


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _num_frames(trial: str) -> int:
    return 3 + sum(map(ord, trial)) % 4  # 3..6 frames, differs between trials


def _write_manual_dir(root: Path, splits: dict, labels: dict, info_dir: str = ".",
                      videos: bool = True) -> None:
    _dump(root / info_dir / "splits.pkl", splits)
    _dump(root / info_dir / "label.pkl", labels)
    if videos:
        for task, folds in splits.items():
            for fold in folds:
                for trial in fold:
                    _write_video(root / task / "video" / f"{trial}_capture1.avi", _num_frames(trial))


def _synthetic(task="Suturing"):
    trials = [f"{task}_{s}{n:03d}" for s, n in
              [("B", 1), ("C", 2), ("D", 3), ("E", 4), ("F", 5), ("G", 1), ("H", 2), ("I", 3)]]
    folds = [trials[0:2], trials[2:4], trials[4:6], trials[6:8]]
    rng = np.random.default_rng(0)
    labels = {t: [int(x) for x in rng.integers(1, 6, size=6)] for t in trials}
    return {task: folds}, labels


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _by_id(source) -> dict[str, dict]:
    return {_text(source[i]["id"]): source[i] for i in range(len(source))}


def _expected_splits(folds):
    out = {f"fold{k}": folds[k] for k in range(4)}
    for k in range(4):
        out[f"test_fold{k}"] = folds[k]
        out[f"train_fold{k}"] = [t for j in range(4) if j != k for t in folds[j]]
    out["all_trials"] = [t for f in folds for t in f]
    return out


def _check(data_dir: Path, config: str, folds, labels, frame_counts=None, check_gray=True):
    task = TASKS[config]
    fold_of = {t: k for k, f in enumerate(folds) for t in f}
    expected = _expected_splits(folds)
    builder = registry.get_builder(NAME, config, data_dir=str(data_dir))
    assert set(builder.info.splits.keys()) == set(expected)
    for split, trials in expected.items():
        examples = _by_id(registry.data_source(NAME, config, split, data_dir=str(data_dir)))
        assert sorted(examples) == sorted(trials), split
        for trial, ex in examples.items():
            grs = labels[trial]
            assert len(grs) == 6
            np.testing.assert_array_equal(ex["grs"], np.array(grs, np.float32))
            assert ex["grs"].dtype == np.float32
            assert ex["score"] == sum(grs)
            assert _text(ex["task"]) == task
            assert _text(ex["surgeon"]) == trial[len(task) + 1]
            assert ex["trial"] == int(trial[-3:])
            assert ex["fold"] == fold_of[trial]
            n = (frame_counts or {}).get(trial, _num_frames(trial))
            assert ex["num_frames"] == len(ex["frames"]) == n
            first = decode_jpeg(ex["frames"][0])
            assert min(first.shape[:2]) == 256  # default short side
            if check_gray:
                for i in range(n):
                    assert abs(float(decode_jpeg(ex["frames"][i]).mean()) - _gray(i)) < 8
    assert not (Path(builder.data_dir) / "_frame_cache").exists()
    assert not list(Path(builder.data_dir).glob("bad_samples*.json"))


def test_fixture_videos(tmp_path, monkeypatch):
    splits, labels = _synthetic()
    root = tmp_path / "manual"
    _write_manual_dir(root, splits, labels)
    decoded = []
    real_iter_video = jb.iter_video
    monkeypatch.setattr(jb, "iter_video", lambda p: decoded.append(Path(p).name) or real_iter_video(p))
    data_dir = tmp_path / "data"
    registry.build(NAME, "suturing", data_dir=str(data_dir), manual_dir=str(root))
    # Every trial is in 6 of the 13 splits but its video is decoded once (frame cache).
    assert sorted(decoded) == sorted(f"{t}_capture1.avi" for f in splits["Suturing"] for t in f)
    _check(data_dir, "suturing", splits["Suturing"], labels)


def test_frame_folders_musdl_layout(tmp_path):
    """Pickles in data/info/, frames in data/frames/ and <Task>/frames/ instead of videos."""
    splits, labels = _synthetic("Knot_Tying")
    root = tmp_path / "manual"
    _write_manual_dir(root, splits, labels, info_dir="data/info")
    folds = splits["Knot_Tying"]
    counts = {}
    for trial, parent in ((folds[0][0], root / "data" / "frames"),
                          (folds[2][1], root / "Knot_Tying" / "frames")):
        (root / "Knot_Tying" / "video" / f"{trial}_capture1.avi").unlink()  # frames only
        folder = parent / f"{trial}_capture1"
        folder.mkdir(parents=True)
        # Names sort as strings (MUSDL: sorted(os.listdir)); frame i has gray _gray(i).
        for i in range(5):
            cv2.imwrite(str(folder / f"img_{i:05d}.jpg"), np.full((12, 16, 3), _gray(i), np.uint8))
        (folder / "notes.txt").write_text("not a frame")
        counts[trial] = 5
    data_dir = tmp_path / "data"
    registry.build(NAME, "knot_tying", data_dir=str(data_dir), manual_dir=str(root))
    _check(data_dir, "knot_tying", folds, labels, frame_counts=counts)


# --- the real MUSDL files -----------------------------------------------------------------------

def test_real_files(real_annotations):
    d = real_annotations / "jigsaws"
    splits, labels = safe_load(d / "splits.pkl"), safe_load(d / "label.pkl")
    sizes = {task: [len(f) for f in folds] for task, folds in splits.items()}
    assert sizes == {"Suturing": [9, 10, 10, 10], "Needle_Passing": [7, 7, 7, 7],
                     "Knot_Tying": [9, 9, 9, 9]}
    trials = [t for folds in splits.values() for f in folds for t in f]
    assert len(trials) == len(set(trials)) == 103
    assert set(trials) == set(labels)
    for task, folds in splits.items():
        assert all(t.startswith(task + "_") for f in folds for t in f)
    assert all(len(v) == 6 and all(1 <= g <= 5 for g in v) for v in labels.values())
    assert "Needle_Passing_G001" not in labels  # Needle Passing has no surgeon G


def test_real_annotation_subset(tmp_path, real_annotations):
    d = real_annotations / "jigsaws"
    splits, labels = safe_load(d / "splits.pkl"), safe_load(d / "label.pkl")
    sub = {task: [sorted(f)[:1] for f in folds] for task, folds in splits.items()}
    sub["Needle_Passing"] = [sorted(f)[:2] for f in splits["Needle_Passing"]]
    keep = {t for folds in sub.values() for f in folds for t in f}
    root = tmp_path / "manual"
    _dump(root / "splits.pkl", sub)
    _dump(root / "label.pkl", {t: labels[t] for t in keep})
    for trial in (t for f in sub["Needle_Passing"] for t in f):
        _write_video(root / "Needle_Passing" / "video" / f"{trial}_capture1.avi",
                     _num_frames(trial))
    data_dir = tmp_path / "data"
    registry.build(NAME, "needle_passing", data_dir=str(data_dir), manual_dir=str(root))
    # Oracle: the real pickles (fold membership and GRS of the real files).
    real_folds = [[t for t in f if t in keep] for f in splits["Needle_Passing"]]
    _check(data_dir, "needle_passing", real_folds, labels)
    ex = _by_id(registry.data_source(NAME, "needle_passing", "all_trials", data_dir=str(data_dir)))
    first = sorted(splits["Needle_Passing"][0])[0]
    assert ex[first]["score"] == sum(labels[first])


# --- bad input ---------------------------------------------------------------------------------

def test_empty_manual_dir(tmp_path):
    (tmp_path / "manual").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        registry.build(NAME, "suturing", data_dir=str(tmp_path / "data"),
                       manual_dir=str(tmp_path / "manual"))
    assert jb.Builder.MANUAL_DOWNLOAD_INSTRUCTIONS in str(err.value)


def test_missing_video_fails_then_skips(tmp_path):
    splits, labels = _synthetic()
    root = tmp_path / "manual"
    _write_manual_dir(root, splits, labels)
    folds = splits["Suturing"]
    bad = folds[1][0]
    video = root / "Suturing" / "video" / f"{bad}_capture1.avi"
    video.unlink()
    with pytest.raises(BadSampleError) as err:
        registry.build(NAME, "suturing", data_dir=str(tmp_path / "data"), manual_dir=str(root))
    assert err.value.sample == bad and str(video) in str(err.value)

    data_dir = tmp_path / "data2"
    builder = registry.build(NAME, "suturing", data_dir=str(data_dir), manual_dir=str(root),
                             skip_bad_samples=True)
    for split, trials in _expected_splits(folds).items():
        ids = sorted(_by_id(registry.data_source(NAME, "suturing", split, data_dir=str(data_dir))))
        assert ids == sorted(t for t in trials if t != bad)
        report = Path(builder.data_dir) / f"bad_samples_{split}.json"
        if bad in trials:
            skipped = json.loads(report.read_text())["skipped"]
            assert [s["sample"] for s in skipped] == [bad] and str(video) in skipped[0]["problem"]
        else:
            assert not report.exists()
    assert not (Path(builder.data_dir) / "_frame_cache").exists()


@pytest.mark.parametrize("problem", ["no_label", "five_items", "out_of_range", "bad_name"])
def test_bad_labels(tmp_path, problem):
    splits, labels = _synthetic()
    trial = splits["Suturing"][2][1]
    if problem == "no_label":
        del labels[trial]
        needle = "has no entry"
    elif problem == "five_items":
        labels[trial] = labels[trial][:5]
        needle = "expected 6 GRS"
    elif problem == "out_of_range":
        labels[trial] = [1, 2, 3, 4, 5, 6]
        needle = "expected 6 GRS"
    else:
        renamed = "Suturing_B1"
        splits["Suturing"][2][1] = renamed
        labels[renamed] = labels.pop(trial)
        trial, needle = renamed, "trial name"
    root = tmp_path / "manual"
    _write_manual_dir(root, splits, labels)
    with pytest.raises(BadSampleError) as err:
        registry.build(NAME, "suturing", data_dir=str(tmp_path / "data"), manual_dir=str(root))
    assert err.value.sample == trial and needle in str(err.value)


def test_trial_in_two_folds(tmp_path):
    splits, labels = _synthetic()
    splits["Suturing"][3].append(splits["Suturing"][0][0])
    root = tmp_path / "manual"
    _write_manual_dir(root, splits, labels, videos=False)
    with pytest.raises(ValueError, match="is in folds 0 and 3"):
        registry.build(NAME, "suturing", data_dir=str(tmp_path / "data"), manual_dir=str(root))


def test_empty_fold(tmp_path):
    splits, labels = _synthetic()
    splits["Suturing"][2] = []
    root = tmp_path / "manual"
    _write_manual_dir(root, splits, labels, videos=False)
    with pytest.raises(ValueError, match=r"folds \[2\] are empty"):
        registry.build(NAME, "suturing", data_dir=str(tmp_path / "data"), manual_dir=str(root))
