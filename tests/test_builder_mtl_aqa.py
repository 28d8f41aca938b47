"""mtl_aqa builder: tiny whole-video frame folders + the Ready_2_Use pickles, as distributed.

Every fixture frame encodes its own 1-based frame number in its colour, so the test reads the
original frame number of every stored frame back from the pixels (an oracle independent of the
builder) and checks the official window ``files end_frame-102+shift .. end_frame+shift``
against ``window_ending_at(record['end_frame'], 103, shift)``. Labels are compared with the
annotation pickles the fixture was written from (and, with ``real_annotations``, with the
real pickles read directly in the test).
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
from tfds_builders.mtl_aqa.mtl_aqa_dataset_builder import (
    Builder, caption_ids, judge_scores_of, parse_entry)

NAME = "mtl_aqa"
W, H = 16, 12
CLASSES = {"position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8}


# --- frames whose colour is their frame number ---------------------------------------------------
def colour(n: int) -> np.ndarray:
    """BGR colour encoding n < 32768 in 5 bits per channel (step 8: JPEG-proof)."""
    return np.array([((n >> s) & 31) * 8 + 4 for s in (10, 5, 0)], np.uint8)


def number(jpeg: bytes) -> int:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)  # BGR
    b, g, r = (int(round((img[..., c].mean() - 4) / 8)) for c in range(3))
    return (b << 10) | (g << 5) | r


def write_video(folder: Path, num_frames: int) -> None:
    folder.mkdir(parents=True)
    for n in range(1, num_frames + 1):
        cv2.imwrite(str(folder / f"{n:06d}.jpg"), np.broadcast_to(colour(n), (H, W, 3)).copy())


def dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


# --- synthetic fixture ----------------------------------------------------------------------------
WORDS = ["<eos>", "<sos>", "a", "nice", "dive", "splash", "tuck", "and"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
VIDEO_FRAMES = {1: 400, 2: 250, 4: 115}


def entry(end, score, dd, pos, arm, rot, ss, tw):
    return {"primary_view": 0, "start_frame": end - 80, "end_frame": end, "position": pos,
            "difficulty": dd, "armstand": arm, "rotation_type": rot, "ss_no": ss, "tw_no": tw,
            "final_score": score}


ANNOTATIONS = {
    (1, 1): entry(150, 75.6, 2.8, 1, 0, 1, 5, 0),
    (1, 2): entry(300, 48.0, 3.2, 2, 0, 0, 7, 0),
    (1, 3): entry(398, 99.0, 3.6, 0, 1, 3, 4, 7),  # e+3 > 400 frames: window clipped at the end
    (2, 1): entry(106, 81.2, 3.0, 1, 0, 2, 3, 3),  # first stored frame is file 1
    (2, 2): entry(104, 12.5, 2.0, 2, 1, 0, 9, 0),  # e-105 < 1: clipped at the start
    (4, 49): entry(110, 39.6, 3.3, 1, 0, 1, 5, 2),  # carries the released judge-score typo
}
TRAIN = [(1, 1), (2, 1), (1, 3), (4, 49)]
TEST = [(2, 2), (1, 2)]
SMALL_140 = [(1, 1), (1, 2)]  # like the release: overlaps the test split
JUDGES = {k: np.array([7.0, 7.5, 8.0, 8.5, 9.0, 6.5, 7.0]) - i for i, k in enumerate(ANNOTATIONS)}
JUDGES[(4, 49)] = np.array([2.5, 4.0, 4.0, 45.0, 3.5, 5.0, 4.0])  # as in MUSDL's dict
CAPTIONS = {(np.int64(k[0]), k[1]): ["<sos>", *WORDS[2 + i % 5: 5 + i % 3], "<eos>"]
            for i, k in enumerate(ANNOTATIONS)}


def make_manual(root: Path, *, flat: bool = False, augmented: bool = True) -> Path:
    ann = root if flat else root / "MTL-AQA_split_0_data"
    dump(ann / "final_annotations_dict.pkl", ANNOTATIONS)
    dump(ann / "train_split_0.pkl", TRAIN)
    dump(ann / "test_split_0.pkl", TEST)
    dump(ann / "final_captions_dict.pkl", CAPTIONS)
    (ann / "vocab.json").write_text(json.dumps(
        {"ix_to_word": {str(i): w for w, i in VOCAB.items()}, "word_to_ix": VOCAB}))
    if augmented:
        dump(ann / "augmented_final_annotations_dict.pkl",
             {k: {**v, "judge_scores": JUDGES[k]} for k, v in ANNOTATIONS.items()})
    dump(root / "smaller_training_sets" / "size_140" / "train_split_0.pkl", SMALL_140)
    for vid, n in VIDEO_FRAMES.items():
        write_video(root / "whole_videos_frames" / f"{vid:02d}", n)
    return root


def _check_frames(rec, e, num_video_frames):
    """Stored frames are the original files first_frame_orig..; the official window is exact."""
    first, last = max(1, e - 105), min(num_video_frames, e + 3)
    got = [number(f) for f in rec["frames"]]
    assert got == list(range(first, last + 1))
    assert int(rec["first_frame_orig"]) == first and int(rec["num_frames"]) == last - first + 1
    assert int(rec["end_frame_orig"]) == e
    checked = 0
    for shift in range(-3, 4):
        if e + shift - 102 < 1 or e + shift > num_video_frames:
            continue  # the video does not hold this shifted window
        idx = window_ending_at(int(rec["end_frame"]), 103, shift)
        assert [got[i] for i in idx] == list(range(e + shift - 102, e + shift + 1))
        checked += 1
    return checked


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    manual = make_manual(tmp_path_factory.mktemp("manual"))
    data = tmp_path_factory.mktemp("data")
    build(NAME, "default", data_dir=str(data), manual_dir=str(manual))
    return data


def test_splits_labels_and_windows(built):
    splits = {"train": TRAIN, "test": TEST, "train_140": SMALL_140}
    assert set(Builder(config="default", data_dir=str(built)).info.splits) == set(splits)
    for split, keys in splits.items():
        ds = data_source(NAME, "default", split, data_dir=str(built))
        records = {r["id"].decode(): r for r in ds}
        assert sorted(records) == sorted(f"{v:02d}_{i:02d}" for v, i in keys)
        for key in keys:
            rec, ann = records[f"{key[0]:02d}_{key[1]:02d}"], ANNOTATIONS[key]
            assert (int(rec["video_id"]), int(rec["sample_idx"])) == key
            assert float(rec["score"]) == pytest.approx(ann["final_score"])
            assert float(rec["difficulty"]) == pytest.approx(ann["difficulty"])
            assert int(rec["start_frame_orig"]) == ann["start_frame"]
            for field in CLASSES:
                assert int(rec[field]) == ann[field]
            assert bool(rec["has_judge_scores"])
            expected = JUDGES[key].copy()
            if key == (4, 49):
                expected[3] = 4.5  # CoRe's copy of the dict has 4.5 (MUSDL's typo 45.0)
            np.testing.assert_allclose(rec["judge_scores"], expected)
            tokens = CAPTIONS[(np.int64(key[0]), key[1])]
            assert list(rec["caption"]) == [WORDS.index(t) for t in tokens]
            assert rec["caption_text"].decode() == " ".join(tokens)
            assert _check_frames(rec, ann["end_frame"], VIDEO_FRAMES[key[0]]) >= (
                4 if key == (2, 2) else 6)
            img = cv2.imdecode(np.frombuffer(rec["frames"][0], np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == (256, round(256 * W / H), 3)


def test_raw_flat_layout_without_judges_keeps_the_file_bytes(tmp_path):
    manual = make_manual(tmp_path / "m", flat=True, augmented=False)
    build(NAME, "raw", data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    ds = data_source(NAME, "raw", "test", data_dir=str(tmp_path / "d"))
    rec = next(r for r in ds if r["id"].decode() == "01_02")
    assert not bool(rec["has_judge_scores"]) and rec["judge_scores"].shape == (0,)
    folder = manual / "whole_videos_frames" / "01"
    assert [bytes(f) for f in rec["frames"]] == [
        (folder / f"{n:06d}.jpg").read_bytes() for n in range(300 - 105, 300 + 4)]


def test_empty_manual_dir_gives_the_instructions(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        build(NAME, "raw", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
    assert Builder.MANUAL_DOWNLOAD_INSTRUCTIONS in str(err.value)
    # annotations but no frames: the instructions again
    dump(tmp_path / "m2" / "MTL-AQA_split_0_data" / "final_annotations_dict.pkl", ANNOTATIONS)
    with pytest.raises(FileNotFoundError, match="lacks .*final_captions_dict.pkl"):
        build(NAME, "raw", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m2"))


def test_missing_frame_names_sample_and_file(tmp_path):
    manual = make_manual(tmp_path / "m")
    gone = manual / "whole_videos_frames" / "01" / "000100.jpg"
    gone.unlink()
    with pytest.raises(BadSampleError) as err:
        build(NAME, "raw", data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    assert "sample 01_01" in str(err.value) and str(gone) in str(err.value)


@pytest.mark.parametrize("field,value,match", [
    ("end_frame", 90, r"02_01.*window ending at frame 90 needs frames -12\.\.90"),
    ("end_frame", 251, r"02_01.*holds 250 frames"),
    ("difficulty", None, r"02_01.*final_annotations_dict.pkl.*lacks \['difficulty'\]"),
    ("tw_no", 8, r"02_01.*tw_no = 8 is outside 0\.\.7"),
])
def test_bad_annotation_entry(tmp_path, field, value, match):
    manual = make_manual(tmp_path / "m")
    bad = dict(ANNOTATIONS)
    bad[(2, 1)] = {k: v for k, v in bad[(2, 1)].items() if k != field}
    if value is not None:
        bad[(2, 1)][field] = value
    dump(manual / "MTL-AQA_split_0_data" / "final_annotations_dict.pkl", bad)
    (manual / "MTL-AQA_split_0_data" / "augmented_final_annotations_dict.pkl").unlink()
    with pytest.raises(BadSampleError, match=match):
        build(NAME, "raw", data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_missing_video_is_skipped_and_reported(tmp_path):
    manual = make_manual(tmp_path / "m")
    folder = manual / "whole_videos_frames" / "02"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    with pytest.raises(BadSampleError, match=r"sample 02_01.*missing frame folder .*02"):
        build(NAME, "raw", data_dir=str(tmp_path / "d1"), manual_dir=str(manual))
    b = build(NAME, "raw", data_dir=str(tmp_path / "d2"), manual_dir=str(manual),
              skip_bad_samples=True)
    for split, gone, kept in [("train", "02_01", {"01_01", "01_03", "04_49"}),
                              ("test", "02_02", {"01_02"})]:
        ds = data_source(NAME, "raw", split, data_dir=str(tmp_path / "d2"))
        assert {r["id"].decode() for r in ds} == kept
        report = json.loads((Path(b.data_dir) / f"bad_samples_{split}.json").read_text())
        assert [s["sample"] for s in report["skipped"]] == [gone]
        assert str(folder) in report["skipped"][0]["problem"]


def test_judge_score_out_of_range_is_bad(tmp_path):
    manual = make_manual(tmp_path / "m")
    judges = {k: {**v, "judge_scores": JUDGES[k]} for k, v in ANNOTATIONS.items()}
    judges[(1, 3)]["judge_scores"] = np.array([7.0, 7.5, 8.0, 85.0, 9.0, 6.5, 7.0])
    dump(manual / "MTL-AQA_split_0_data" / "augmented_final_annotations_dict.pkl", judges)
    with pytest.raises(BadSampleError, match=r"01_03.*augmented.*outside the 0\.\.10"):
        build(NAME, "raw", data_dir=str(tmp_path / "d"), manual_dir=str(manual))


# --- the real annotation pickles, frames for a few keys -------------------------------------------
REAL_KEYS = {"train": [(14, 2), (17, 1), (17, 2)], "test": [(14, 1), (14, 3)]}


def test_real_annotations_subset(real_annotations, tmp_path):
    src = real_annotations / "mtl_aqa"
    ann = safe_load(src / "final_annotations_dict.pkl")
    aug = safe_load(src / "augmented_final_annotations_dict.pkl")
    caps = safe_load(src / "final_captions_dict.pkl")
    vocab = json.loads((src / "vocab.json").read_text())["word_to_ix"]
    train, test = safe_load(src / "train_split_0.pkl"), safe_load(src / "test_split_0.pkl")
    # the real files as the reference describes them
    assert (len(train), len(test), len(ann), len(caps)) == (1059, 353, 1412, 1416)
    assert set(train) | set(test) == set(ann) and not set(train) & set(test)
    assert ann[(1, 1)]["final_score"] == 88.0 and ann[(1, 1)]["difficulty"] == 3.2
    assert aug[(4, 49)]["judge_scores"][3] == 45.0  # the typo the builder corrects
    fixed = judge_scores_of((4, 49), aug[(4, 49)], ann[(4, 49)], "real")
    np.testing.assert_allclose(fixed, [2.5, 4.0, 4.0, 4.5, 3.5, 5.0, 4.0])
    assert all(k in train for k in REAL_KEYS["train"]) and all(k in test for k in REAL_KEYS["test"])
    # every real entry passes the builder's checks (else the real build would stop on it)
    real_caps = {(int(k[0]), int(k[1])): v for k, v in caps.items()}
    for key in ann:
        labels = parse_entry(ann[key], str(key))
        assert labels["final_score"] == ann[key]["final_score"]
        judge_scores_of(key, aug[key], ann[key], str(key))
        ids, _ = caption_ids(real_caps[key], vocab, str(key))
        assert len(ids) == len(real_caps[key])

    # a subset of the real pickles (real values, fewer keys) in the distributed layout
    keys = REAL_KEYS["train"] + REAL_KEYS["test"]
    manual = tmp_path / "m"
    d = manual / "MTL-AQA_split_0_data"
    dump(d / "final_annotations_dict.pkl", {k: ann[k] for k in keys})
    dump(d / "augmented_final_annotations_dict.pkl", {k: aug[k] for k in keys})
    dump(d / "final_captions_dict.pkl", {k: v for k, v in caps.items()
                                         if (int(k[0]), int(k[1])) in keys})
    dump(d / "train_split_0.pkl", [k for k in train if k in keys])
    dump(d / "test_split_0.pkl", [k for k in test if k in keys])
    (d / "vocab.json").write_bytes((src / "vocab.json").read_bytes())
    length = {v: max(ann[k]["end_frame"] for k in keys if k[0] == v) + 3 for v in (14, 17)}
    for vid, n in length.items():
        write_video(manual / "whole_videos_frames" / f"{vid:02d}", n)

    build(NAME, "raw", data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    for split, expected in REAL_KEYS.items():
        ds = data_source(NAME, "raw", split, data_dir=str(tmp_path / "d"))
        assert len(ds) == len(expected)
        for rec in ds:
            key = (int(rec["video_id"]), int(rec["sample_idx"]))
            assert key in expected
            a = ann[key]
            assert float(rec["score"]) == pytest.approx(a["final_score"])
            assert float(rec["difficulty"]) == pytest.approx(a["difficulty"])
            assert [int(rec[f]) for f in CLASSES] == [a[f] for f in CLASSES]
            np.testing.assert_allclose(rec["judge_scores"], aug[key]["judge_scores"])
            assert list(rec["caption"]) == [vocab[w] for w in real_caps[key]]
            assert rec["caption"][0] == vocab["<sos>"] and rec["caption"][-1] == vocab["<eos>"]
            assert _check_frames(rec, a["end_frame"], length[key[0]]) == 7
