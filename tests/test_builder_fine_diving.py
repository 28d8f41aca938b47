"""FineDiving builder: fixtures in the distributed layout, the real pickles, bad input.

The oracle for every label is the annotation pickle the fixture was written from, read here with
``safe_load``; the oracle for the frame/label alignment and TSA's 96-frame sampling is a
re-implementation of ``FineDiving_Pair_Dataset.load_video`` over the fixture's frame folder.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from aqa_jax.data import registry
from aqa_jax.data.bad_input import BadSampleError
from aqa_jax.data.frames import decode_jpeg
from aqa_jax.weights.safe_pickle import safe_load
from tfds_builders.fine_diving import fine_diving_dataset_builder as fd

NAME = "fine_diving"


def _gray(frame_no: int) -> int:
    return (frame_no * 37) % 200 + 20  # neighbouring frames differ by >= 17 gray levels


def _write_frames(folder: Path, start: int, end: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(start, end + 1):
        cv2.imwrite(str(folder / f"{n:05d}.jpg"), np.full((12, 16, 3), _gray(n), np.uint8))


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _labels(lengths_and_ids):
    return np.concatenate([np.full(n, i, np.int64) for n, i in lengths_and_ids])


def _synthetic_annotations():
    """Small annotations in the released format (values shaped like the real ones)."""
    coarse, fine = {}, {}
    specs = [  # key, action, start, step lengths/ids, score, DD, judges
        (("FINADivingWorldCup2021_Men3m_final_r1", 3), "207c", 3095,
         [(6, 2), (9, 25), (5, 36)], 81.18, 3.3, [7.5, 9.0, 8.0, 8.0, 8.5]),
        (("01", 7), "407c", 7378, [(4, 4), (8, 25), (3, 33), (6, 36)], 88.0, 3.2,
         [9.5, 9.0, 9.5, 9.0, 8.5, 9.5, 8.5]),
        (("Tokyo2020_Women10m_final", 2), "5253b", 120, [(5, 3), (10, 14), (7, 36)],
         70.2, 3.0, [8.0, 7.5, 7.9]),
        (("02", 11), "107b", 5000, [(7, 1), (12, 17), (5, 36)], 76.5, 3.0,
         [8.0, 8.5, 8.5, 8.5, 8.0, 9.0, 8.5]),
    ]
    for key, action, start, steps, score, dd, judges in specs:
        labels = _labels(steps)
        end = start + len(labels) - 1
        coarse[key] = {"action_type": action, "start_frame": start, "end_frame": end,
                       "dive_score": score, "difficulty": dd, "judge_scores": judges}
        transits = np.cumsum([n for n, _ in steps])[:-1] - 1
        fine[key] = [action, score, dd, transits, labels]
    keys = [s[0] for s in specs]
    return coarse, fine, keys[:3], keys[3:]


def _write_manual_dir(root: Path, coarse, fine, train, test, *, flat=False, fine_format="aqa",
                      table=None, frames=True):
    ann = root if flat else root / "Annotations"
    _dump(ann / fd.COARSE, coarse)
    if fine_format == "aqa":
        _dump(ann / fd.FINE_AQA, fine)
    else:  # FineDiving_fine-grained_annotation.pkl: dict values
        _dump(ann / fd.FINE_DICT, {
            k: {"action_type": v[0], "dive_score": v[1], "difficulty": v[2],
                "steps_transit_frames": v[3], "frames_labels": v[4],
                "sub-action_types": {int(i): str(i) for i in set(v[4].tolist())}}
            for k, v in fine.items()})
    if table is not None:
        _dump(ann / fd.SUB_ACTIONS, table)
    _dump(ann / "train_split.pkl", list(train))
    _dump(ann / "test_split.pkl", list(test))
    if frames:
        for key in list(train) + list(test):
            c = coarse[key]
            _write_frames(root / fd.FRAMES_DIR / key[0] / str(key[1]), c["start_frame"],
                          c["end_frame"])


def _by_id(source) -> dict[str, dict]:
    out = {}
    for i in range(len(source)):
        ex = source[i]
        sid = ex["id"].decode() if isinstance(ex["id"], bytes) else str(ex["id"])
        out[sid] = ex
    return out


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _tsa_oracle(folder: Path, labels_of_key, length=96):
    """FineDiving_Pair_Dataset.load_video re-done here: returns frame numbers, labels, transits."""
    image_list = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    start = int(image_list[0].split("/")[-1][:-4])
    end = int(image_list[-1].split("/")[-1][:-4])
    frame_list = np.linspace(start, end, length).astype(int)
    idx = [frame_list[i] - start for i in range(length)]
    numbers = [int(Path(image_list[i]).stem) for i in idx]
    frame_labels = [labels_of_key[i] for i in idx]
    cats = list(set(frame_labels))
    cats.sort(key=frame_labels.index)
    transitions = [frame_labels.index(c) for c in cats]
    return numbers, np.array(frame_labels), np.array([transitions[1] - 1, transitions[-1] - 1])


def _check_against_annotations(source, coarse_path, fine_path, keys, root):
    coarse, fine = safe_load(coarse_path), safe_load(fine_path)
    examples = _by_id(source)
    assert sorted(examples) == sorted(f"{v}/{i}" for v, i in keys)
    for key in keys:
        ex, c = examples[f"{key[0]}/{key[1]}"], coarse[key]
        f = fine[key]
        if isinstance(f, dict):
            f = [f["action_type"], f["dive_score"], f["difficulty"], f["steps_transit_frames"],
                 f["frames_labels"]]
        n = c["end_frame"] - c["start_frame"] + 1
        assert ex["score"] == pytest.approx(c["dive_score"], rel=1e-6)
        assert ex["score"] == pytest.approx(f[1], rel=1e-6)
        assert ex["difficulty"] == pytest.approx(c["difficulty"], rel=1e-6)
        assert _text(ex["action_type"]) == c["action_type"] == f[0]
        np.testing.assert_allclose(ex["judge_scores"], np.array(c["judge_scores"], np.float32))
        assert ex["judge_scores"].dtype == np.float32
        assert len(ex["judge_scores"]) == len(c["judge_scores"])
        assert ex["num_frames"] == n == len(ex["frames"])
        np.testing.assert_array_equal(ex["frame_labels"], f[4])
        assert ex["frame_labels"].dtype == np.int32
        np.testing.assert_array_equal(ex["step_transitions"], f[3])
        assert ex["num_steps"] == len(f[3]) + 1
        assert (ex["start_frame"], ex["end_frame"]) == (c["start_frame"], c["end_frame"])
        assert _text(ex["video_name"]) == key[0] and ex["instance_idx"] == key[1]
        is_mtl = len(key[0]) == 2 and key[0].isdigit()
        # The mtl_aqa builder's id of MTL-AQA key (1, 5) is "01_05".
        assert _text(ex["mtl_aqa_key"]) == (f"{int(key[0]):02d}_{key[1]:02d}" if is_mtl else "")
        # Frame i is the file numbered start_frame + i (gray level encodes the number).
        for i in (0, n // 2, n - 1):
            img = decode_jpeg(ex["frames"][i])
            assert abs(float(img.mean()) - _gray(c["start_frame"] + i)) < 6
        # TSA's 96 frames, labels and transition targets from what is stored.
        folder = root / fd.FRAMES_DIR / key[0] / str(key[1])
        numbers, tsa_labels, tsa_transits = _tsa_oracle(folder, list(f[4]))
        pos = fd.tsa_frame_positions(int(ex["start_frame"]), int(ex["end_frame"]))
        assert [int(ex["start_frame"]) + p for p in pos] == numbers
        np.testing.assert_array_equal(ex["frame_labels"][pos], tsa_labels)
        np.testing.assert_array_equal(fd.tsa_transitions(ex["frame_labels"][pos]), tsa_transits)
        for j in (0, 47, 95):
            assert abs(float(decode_jpeg(ex["frames"][pos[j]]).mean()) - _gray(numbers[j])) < 6
    return examples


def test_synthetic_fixture(tmp_path):
    coarse, fine, train, test = _synthetic_annotations()
    root = tmp_path / "manual"
    _write_manual_dir(root, coarse, fine, train, test, table={i: str(i) for i in range(1, 43)})
    data_dir = tmp_path / "data"
    registry.build(NAME, "original", data_dir=str(data_dir), manual_dir=str(root))
    ann = root / "Annotations"
    for split, keys in (("train", train), ("test", test)):
        source = registry.data_source(NAME, "original", split, data_dir=str(data_dir))
        assert len(source) == len(keys)
        examples = _check_against_annotations(source, ann / fd.COARSE, ann / fd.FINE_AQA, keys,
                                              root)
        for ex in examples.values():  # "original" keeps the distributed JPEG bytes
            assert decode_jpeg(ex["frames"][0]).shape == (12, 16, 3)


def test_dict_format_flat_layout(tmp_path):
    """FineDiving_fine-grained_annotation.pkl (dict values), pickles directly in manual_dir."""
    coarse, fine, train, test = _synthetic_annotations()
    root = tmp_path / "manual"
    _write_manual_dir(root, coarse, fine, train, test, flat=True, fine_format="dict")
    data_dir = tmp_path / "data"
    registry.build(NAME, "default", data_dir=str(data_dir), manual_dir=str(root))
    source = registry.data_source(NAME, "default", "test", data_dir=str(data_dir))
    examples = _check_against_annotations(source, root / fd.COARSE, root / fd.FINE_DICT, test,
                                          root)
    for ex in examples.values():  # default: short side 256
        assert min(decode_jpeg(ex["frames"][0]).shape[:2]) == 256


# --- the real annotation files -----------------------------------------------------------------

def _real(real_annotations: Path):
    d = real_annotations / "fine_diving"
    return (d, safe_load(d / fd.COARSE), safe_load(d / fd.FINE_AQA),
            safe_load(d / "train_split.pkl"), safe_load(d / "test_split.pkl"))


def test_real_files_counts(real_annotations):
    d, coarse, fine, train, test = _real(real_annotations)
    assert (len(train), len(test)) == (2251, 749)
    assert len(set(train)) == 2251 and len(set(test)) == 749 and not set(train) & set(test)
    assert set(train) | set(test) == set(coarse) == set(fine)
    assert len(coarse) == 3000
    assert {len(c["judge_scores"]) for c in coarse.values()} == {3, 5, 7}
    # The alignment the builder checks holds for every released instance.
    assert all(len(fine[k][4]) == c["end_frame"] - c["start_frame"] + 1 for k, c in coarse.items())
    mtl = [k for k in coarse if len(k[0]) == 2 and k[0].isdigit()]
    assert len(mtl) == 1369
    assert all(len(coarse[k]["judge_scores"]) == 7 for k in mtl)
    table = safe_load(d / fd.SUB_ACTIONS)
    assert len(table) == 42 and table[36] == "Entry"
    assert set(x for v in fine.values() for x in v[4].tolist()) <= set(table)


def test_real_annotation_subset(tmp_path, real_annotations):
    d, coarse, fine, train, test = _real(real_annotations)
    size = lambda k: coarse[k]["end_frame"] - coarse[k]["start_frame"]  # noqa: E731

    def shortest(keys, judges):
        return min((k for k in keys if len(coarse[k]["judge_scores"]) == judges),
                   key=lambda k: (size(k), k))

    sub_train = [shortest(train, 7), shortest(train, 5)]
    sub_test = [shortest(test, 3), shortest(test, 7)]
    keys = sub_train + sub_test
    root = tmp_path / "manual"
    _write_manual_dir(root, {k: coarse[k] for k in keys}, {k: fine[k] for k in keys},
                      sub_train, sub_test, table=safe_load(d / fd.SUB_ACTIONS))
    data_dir = tmp_path / "data"
    registry.build(NAME, "default", data_dir=str(data_dir), manual_dir=str(root))
    for split, sub in (("train", sub_train), ("test", sub_test)):
        source = registry.data_source(NAME, "default", split, data_dir=str(data_dir))
        assert len(source) == len(sub)
        # Oracle: the real pickles themselves (not the fixture copies).
        _check_against_annotations(source, d / fd.COARSE, d / fd.FINE_AQA, sub, root)


# --- bad input ---------------------------------------------------------------------------------

def test_empty_manual_dir(tmp_path):
    (tmp_path / "manual").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        registry.build(NAME, "original", data_dir=str(tmp_path / "data"),
                       manual_dir=str(tmp_path / "manual"))
    assert fd.Builder.MANUAL_DOWNLOAD_INSTRUCTIONS in str(err.value)


def test_missing_frame_fails_then_skips(tmp_path):
    coarse, fine, train, test = _synthetic_annotations()
    root = tmp_path / "manual"
    _write_manual_dir(root, coarse, fine, train, test)
    bad = train[1]
    missing = root / fd.FRAMES_DIR / bad[0] / str(bad[1]) / f"{coarse[bad]['start_frame'] + 5:05d}.jpg"
    missing.unlink()
    with pytest.raises(BadSampleError) as err:
        registry.build(NAME, "original", data_dir=str(tmp_path / "data"), manual_dir=str(root))
    assert err.value.sample == f"{bad[0]}/{bad[1]}"
    assert str(missing) in str(err.value)

    builder = registry.build(NAME, "original", data_dir=str(tmp_path / "data2"),
                             manual_dir=str(root), skip_bad_samples=True)
    source = registry.data_source(NAME, "original", "train", data_dir=str(tmp_path / "data2"))
    assert sorted(_by_id(source)) == sorted(f"{v}/{i}" for v, i in train if (v, i) != bad)
    report = json.loads((Path(builder.data_dir) / "bad_samples_train.json").read_text())
    assert [s["sample"] for s in report["skipped"]] == [f"{bad[0]}/{bad[1]}"]
    assert str(missing) in report["skipped"][0]["problem"]
    assert not (Path(builder.data_dir) / "bad_samples_test.json").exists()


@pytest.mark.parametrize("problem", ["no_entry", "bad_judges", "label_length", "extra_frame"])
def test_bad_annotations(tmp_path, problem):
    coarse, fine, train, test = _synthetic_annotations()
    root = tmp_path / "manual"
    key = train[0]
    if problem == "no_entry":
        key = ("FINADivingWorldCup2021_Men3m_final_r9", 99)
        train = train + [key]
        needle = "has no entry"
    elif problem == "bad_judges":
        coarse[key] = dict(coarse[key], judge_scores=[8.0, 7.5])
        needle = "judge_scores"
    elif problem == "label_length":
        fine[key] = fine[key][:4] + [fine[key][4][:-1]]
        needle = "frames_labels"
    _write_manual_dir(root, coarse, fine, [k for k in train if k in coarse], test)
    if problem == "no_entry":
        _dump(root / "Annotations" / "train_split.pkl", train)
    if problem == "extra_frame":
        c = coarse[key]
        _write_frames(root / fd.FRAMES_DIR / key[0] / str(key[1]), c["end_frame"] + 1,
                      c["end_frame"] + 1)
        needle = f"{c['end_frame'] + 1:05d}.jpg"
    with pytest.raises(BadSampleError) as err:
        registry.build(NAME, "original", data_dir=str(tmp_path / "data"), manual_dir=str(root))
    assert err.value.sample == f"{key[0]}/{key[1]}"
    assert needle in str(err.value)


def test_tsa_positions_use_absolute_numbers():
    """TSA's linspace over absolute frame numbers vs linspace over 0..n-1 (real case ('01', 114)).

    For frames 173866..173999 (133 steps), j * 133 / 95 is an integer at j = 45, 85, 90; TSA's
    absolute linspace truncates to it (63, 119, 126), the relative one lands just below (62, ...).
    """
    start, end = 173866, 173999
    pos = fd.tsa_frame_positions(start, end)
    exact = [Fraction(j * (end - start), 95).__floor__() for j in range(96)]
    assert pos.tolist() == exact
    np.testing.assert_array_equal(pos, np.linspace(start, end, 96).astype(int) - start)
    relative = np.linspace(0, end - start, 96).astype(int)
    assert np.nonzero(pos != relative)[0].tolist() == [45, 85, 90]
