"""unlv_dive builder: MTL-AQA's ``UNLV_Dive_split_4/`` pickles + whole-video frame folders.

Fixture frames encode their 1-based frame number in their colour (as in
test_builder_mtl_aqa), so stored frames and the official 103-frame window are checked against
original frame numbers read from the pixels. Labels are compared with the pickles the fixture
was written from. The real ``UNLV_Dive_split_4`` pickles are used when they are in
``real_annotations/unlv_dive/``; MTL-AQA's real dict (whose values the UNLV dict repeats) is
used in any case for a real-typed subset.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from aqa_jax.data.bad_input import BadSampleError
from aqa_jax.data.registry import build, data_source
from aqa_jax.data.sampling import window_ending_at
from aqa_jax.weights.safe_pickle import safe_load
from tfds_builders.unlv_dive.unlv_dive_dataset_builder import MANUAL_DOWNLOAD_INSTRUCTIONS

NAME = "unlv_dive"
W, H = 16, 12
CLASSES = ("position", "armstand", "rotation_type", "ss_no", "tw_no")


def colour(n: int) -> np.ndarray:  # BGR, 5 bits per channel
    return np.array([((n >> s) & 31) * 8 + 4 for s in (10, 5, 0)], np.uint8)


def number(jpeg: bytes) -> int:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    b, g, r = (int(round((img[..., c].mean() - 4) / 8)) for c in range(3))
    return (b << 10) | (g << 5) | r


def write_video(folder: Path, num_frames: int) -> None:
    folder.mkdir(parents=True)
    for n in range(1, num_frames + 1):
        cv2.imwrite(str(folder / f"{n:06d}.jpg"), np.broadcast_to(colour(n), (H, W, 3)).copy())


def dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def check_window(rec, e: int, num_video_frames: int) -> None:
    first, last = max(1, e - 105), min(num_video_frames, e + 3)
    got = [number(f) for f in rec["frames"]]
    assert got == list(range(first, last + 1)) and int(rec["first_frame_orig"]) == first
    assert int(rec["end_frame_orig"]) == e
    for shift in range(-3, 4):
        idx = window_ending_at(int(rec["end_frame"]), 103, shift)
        assert [got[i] for i in idx] == list(range(e + shift - 102, e + shift + 1))


def entry(end, score, dd, pos=1, arm=0, rot=1, ss=5, tw=0):
    return {"primary_view": 0, "start_frame": end - 70, "end_frame": end, "position": pos,
            "difficulty": dd, "armstand": arm, "rotation_type": rot, "ss_no": ss, "tw_no": tw,
            "final_score": score}


ANNOTATIONS = {
    (1, 1): entry(120, 88.0, 3.2, 2, 0, 2, 7, 0),
    (1, 2): entry(200, 54.0, 3.0, 1, 1, 3, 4, 3),
    (2, 5): entry(140, 71.4, 3.4, 0, 0, 0, 5, 5),
    (3, 7): entry(110, 30.6, 2.0, 1, 0, 1, 3, 0),
}
SPLIT_0 = {"train": [(1, 2), (3, 7), (2, 5)], "test": [(1, 1)]}
# like the release: uint8 keys, one key (1, 64) that no dict annotates
SPLIT_370_4 = {"train": [(np.uint8(1), np.uint8(1)), (np.uint8(1), np.uint8(64))],
               "test": [(np.uint8(3), np.uint8(7))]}
VIDEO_FRAMES = {1: 220, 2: 160, 3: 120}


def make_manual(root: Path, *, flat: bool = False) -> Path:
    d = root if flat else root / "UNLV_Dive_split_4"
    dump(d / "final_annotations_dict.pkl", ANNOTATIONS)
    for suffix, splits in (("0", SPLIT_0), ("370_4", SPLIT_370_4)):
        for split, keys in splits.items():
            dump(d / f"{split}_split_{suffix}.pkl", keys)
    for vid, n in VIDEO_FRAMES.items():
        write_video(root / "whole_videos_frames" / f"{vid:02d}", n)
    return root


@pytest.fixture(scope="module")
def manual(tmp_path_factory) -> Path:
    return make_manual(tmp_path_factory.mktemp("manual"))


def test_default_splits_labels_and_windows(manual, tmp_path):
    build(NAME, "default", data_dir=str(tmp_path), manual_dir=str(manual))
    for split, keys in SPLIT_0.items():
        ds = data_source(NAME, "default", split, data_dir=str(tmp_path))
        records = {r["id"].decode(): r for r in ds}
        assert sorted(records) == sorted(f"{v:02d}_{i:02d}" for v, i in keys)
        for key in keys:
            rec, ann = records[f"{key[0]:02d}_{key[1]:02d}"], ANNOTATIONS[key]
            assert (int(rec["video_id"]), int(rec["sample_idx"])) == key
            assert float(rec["score"]) == pytest.approx(ann["final_score"])
            assert float(rec["difficulty"]) == pytest.approx(ann["difficulty"])
            assert int(rec["start_frame_orig"]) == ann["start_frame"]
            assert [int(rec[c]) for c in CLASSES] == [ann[c] for c in CLASSES]
            check_window(rec, ann["end_frame"], VIDEO_FRAMES[key[0]])
            img = cv2.imdecode(np.frombuffer(rec["frames"][0], np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == (256, round(256 * W / H), 3)


def test_split_370_4_needs_skip_for_the_unannotated_key(manual, tmp_path):
    with pytest.raises(BadSampleError, match=r"sample 01_64: .*train_split_370_4.pkl lists \(1, 64\)"):
        build(NAME, "split_370_4", data_dir=str(tmp_path / "d1"), manual_dir=str(manual))
    b = build(NAME, "split_370_4", data_dir=str(tmp_path / "d2"), manual_dir=str(manual),
              skip_bad_samples=True)
    train = data_source(NAME, "split_370_4", "train", data_dir=str(tmp_path / "d2"))
    test = data_source(NAME, "split_370_4", "test", data_dir=str(tmp_path / "d2"))
    assert [r["id"].decode() for r in train] == ["01_01"]
    assert [r["id"].decode() for r in test] == ["03_07"]
    report = json.loads((Path(b.data_dir) / "bad_samples_train.json").read_text())
    assert [s["sample"] for s in report["skipped"]] == ["01_64"]
    assert not (Path(b.data_dir) / "bad_samples_test.json").exists()


def test_raw_flat_layout_keeps_file_bytes(tmp_path):
    manual = make_manual(tmp_path / "m", flat=True)
    build(NAME, "raw", data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    rec = data_source(NAME, "raw", "test", data_dir=str(tmp_path / "d"))[0]
    folder = manual / "whole_videos_frames" / "01"
    assert [bytes(f) for f in rec["frames"]] == [
        (folder / f"{n:06d}.jpg").read_bytes() for n in range(120 - 105, 120 + 4)]


def test_empty_manual_dir_gives_the_instructions(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        build(NAME, "raw", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
    assert MANUAL_DOWNLOAD_INSTRUCTIONS in str(err.value)


def test_missing_frame_fails_then_is_skipped_and_reported(tmp_path):
    manual = make_manual(tmp_path / "m")
    gone = manual / "whole_videos_frames" / "02" / "000100.jpg"
    gone.unlink()
    with pytest.raises(BadSampleError) as err:
        build(NAME, "raw", data_dir=str(tmp_path / "d1"), manual_dir=str(manual))
    assert "sample 02_05" in str(err.value) and str(gone) in str(err.value)
    b = build(NAME, "raw", data_dir=str(tmp_path / "d2"), manual_dir=str(manual),
              skip_bad_samples=True)
    train = data_source(NAME, "raw", "train", data_dir=str(tmp_path / "d2"))
    assert sorted(r["id"].decode() for r in train) == ["01_02", "03_07"]
    report = json.loads((Path(b.data_dir) / "bad_samples_train.json").read_text())
    assert [s["sample"] for s in report["skipped"]] == ["02_05"]
    assert str(gone) in report["skipped"][0]["problem"]


def test_malformed_entry_names_sample_and_file(tmp_path):
    manual = make_manual(tmp_path / "m")
    bad = {**ANNOTATIONS, (3, 7): {**ANNOTATIONS[(3, 7)], "final_score": "n/a"}}
    dump(manual / "UNLV_Dive_split_4" / "final_annotations_dict.pkl", bad)
    with pytest.raises(BadSampleError,
                       match=r"sample 03_07: .*final_annotations_dict.pkl.*'final_score'"):
        build(NAME, "raw", data_dir=str(tmp_path / "d"), manual_dir=str(manual))


# --- real annotations ------------------------------------------------------------------------------
def _subset_build(tmp_path, ann, splits, suffix="0", config="raw"):
    """Writes the pickles for ``splits`` (real values, fewer keys) and frames for their videos."""
    keys = [k for ks in splits.values() for k in ks]
    d = tmp_path / "m" / "UNLV_Dive_split_4"
    dump(d / "final_annotations_dict.pkl", {k: ann[k] for k in keys})
    for split, ks in splits.items():
        dump(d / f"{split}_split_{suffix}.pkl", ks)
    length = {}
    for k in keys:
        length[k[0]] = max(length.get(k[0], 0), ann[k]["end_frame"] + 3)
    for vid, n in length.items():
        write_video(tmp_path / "m" / "whole_videos_frames" / f"{vid:02d}", n)
    build(NAME, config, data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
    return length


def _check_real(tmp_path, ann, splits, length, config="raw"):
    for split, keys in splits.items():
        ds = data_source(NAME, config, split, data_dir=str(tmp_path / "d"))
        assert sorted((int(r["video_id"]), int(r["sample_idx"])) for r in ds) == sorted(keys)
        for rec in ds:
            a = ann[(int(rec["video_id"]), int(rec["sample_idx"]))]
            assert float(rec["score"]) == pytest.approx(a["final_score"])
            assert float(rec["difficulty"]) == pytest.approx(a["difficulty"])
            assert [int(rec[c]) for c in CLASSES] == [a[c] for c in CLASSES]
            check_window(rec, a["end_frame"], length[int(rec["video_id"])])


def test_real_unlv_pickles(real_annotations, tmp_path):
    src = real_annotations / "unlv_dive"
    if not (src / "final_annotations_dict.pkl").is_file():
        pytest.skip(f"{src} does not hold MTL-AQA's UNLV_Dive_split_4 pickles")
    ann = safe_load(src / "final_annotations_dict.pkl")
    train, test = safe_load(src / "train_split_0.pkl"), safe_load(src / "test_split_0.pkl")
    assert (len(ann), len(train), len(test)) == (372, 279, 93)
    assert set(train) | set(test) == set(ann) and {k[0] for k in ann} == {1, 2, 3}
    if (src / "train_split_370_4.pkl").is_file():
        tr4 = [tuple(map(int, k)) for k in safe_load(src / "train_split_370_4.pkl")]
        te4 = [tuple(map(int, k)) for k in safe_load(src / "test_split_370_4.pkl")]
        assert (len(tr4), len(te4)) == (300, 70)
        assert [k for k in tr4 + te4 if k not in ann] == [(1, 64)]
    by_end = sorted(ann, key=lambda k: ann[k]["end_frame"])
    splits = {"train": [k for k in by_end if k in train][:2],
              "test": [k for k in by_end if k in test][:1]}
    _check_real(tmp_path, ann, splits, _subset_build(tmp_path, ann, splits))


def test_real_mtl_aqa_values_in_unlv_layout(real_annotations, tmp_path):
    """The UNLV dict repeats MTL-AQA's entries for videos 1-3: real-typed values parse."""
    ann = safe_load(real_annotations / "mtl_aqa" / "final_annotations_dict.pkl")
    assert sum(k[0] in (1, 2, 3) for k in ann) == 372  # the size of the UNLV dict
    splits = {"train": [(1, 1), (3, 1)], "test": [(1, 2)]}
    _check_real(tmp_path, ann, splits, _subset_build(tmp_path, ann, splits))


def test_a_key_in_both_split_files_is_refused(tmp_path):
    """The released train/test lists are disjoint; a shared key would leak a test sample."""
    root = make_manual(tmp_path / "m")
    test_file = root / "UNLV_Dive_split_4" / "test_split_0.pkl"
    dump(test_file, SPLIT_0["test"] + [(3, 7)])
    with pytest.raises(ValueError) as err:
        build(NAME, "default", data_dir=str(tmp_path / "d"), manual_dir=str(root))
    assert "1 sample(s)" in str(err.value) and "(3, 7)" in str(err.value)
    assert str(test_file) in str(err.value)
