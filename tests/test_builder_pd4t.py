"""pd4t builder: tiny mp4 fixtures in the distributed PD4T layout, built and read back.

The oracle is the CSV text written by the test (read back here with the csv module) and the
frames the test itself wrote; no real PD4T files exist in shared/, so fixtures only.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from aqa_jax.data.bad_input import BadSampleError
from aqa_jax.data.frames import decode_jpeg
from aqa_jax.data.registry import build, data_source
from tfds_builders.pd4t.pd4t_dataset_builder import MANUAL_DOWNLOAD_INSTRUCTIONS

W, H = 16, 12


def write_mp4(path: Path, levels: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (W, H))
    assert writer.isOpened()
    for level in levels:
        writer.write(np.full((H, W, 3), level, np.uint8))
    writer.release()


def write_csv(path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(str(x) for x in r) + "\n" for r in rows))


# Gait: per-patient folders, file named after the visit (id = <visit>_<patient>), plus one
# file named after the full id (rule 1).  One video is longer than its CSV frame count on
# purpose (stored as decoded); none is shorter (that is a truncated video, see below).
GAIT = {
    "train": [("14-005690_026", 4, 1, "026/14-005690.mp4", 4),
              ("15-001760_009", 3, 0, "009/15-001760.mp4", 3),
              ("13-007586_004", 3, 3, "004/13-007586_004.mp4", 5)],
    "test": [("15-003012_024", 3, 2, "024/15-003012.mp4", 3),
             ("15-003013_024", 2, 1, "024/15-003013.mp4", 2)],
}
# Finger tapping: l/ r/ side folders (the other documented layout), odd folder spelling.
FINGER = {
    "train": [("15-005087_l", 3, 4, "l/15-005087.mp4", 3),
              ("15-005087_r", 4, 2, "r/15-005087.mp4", 4)],
    "test": [("14-005717_l", 2, 1, "l/14-005717.mp4", 2)],
}


def make_pd4t(root: Path, task_folder: str, table: dict) -> Path:
    pd4t = root / "PD4T"
    for split, rows in table.items():
        write_csv(pd4t / "Annotations" / task_folder / f"{split}.csv", [r[:3] for r in rows])
        for vid, _, _, rel, n in rows:
            write_mp4(pd4t / "Videos" / task_folder / rel, [30 + 40 * i for i in range(n)])
    return pd4t


def oracle(csv_path: Path) -> dict[str, tuple[int, float]]:
    with open(csv_path, newline="") as f:
        return {r[0]: (int(r[1]), float(r[2])) for r in csv.reader(f)}


def test_gait_builds_from_the_distributed_layout(tmp_path):
    pd4t = make_pd4t(tmp_path / "manual", "Gait", GAIT)
    data = tmp_path / "data"
    build("pd4t", "gait", data_dir=str(data), manual_dir=str(tmp_path / "manual"))
    for split, rows in GAIT.items():
        expected = oracle(pd4t / "Annotations" / "Gait" / f"{split}.csv")
        ds = data_source("pd4t", "gait", split, data_dir=str(data))
        assert len(ds) == len(expected)
        n_written = {r[0]: r[4] for r in rows}
        for rec in ds:
            vid = rec["id"].decode()
            csv_frames, score = expected[vid]
            assert float(rec["score"]) == score and int(rec["label"]) == int(score)
            assert int(rec["csv_num_frames"]) == csv_frames
            assert int(rec["num_frames"]) == len(rec["frames"]) == n_written[vid]
            assert rec["patient"].decode() == vid.rsplit("_", 1)[1]  # the patient folder
            assert rec["side"].decode() == "" and rec["task"].decode() == "gait"
            frames = [decode_jpeg(b) for b in rec["frames"]]
            assert frames[0].shape == (256, round(256 * W / H), 3)  # short side 256
            means = [f.mean() for f in frames]
            assert np.all(np.diff(means) > 15), means  # the written order, 40 levels apart
            np.testing.assert_allclose(means, [30 + 40 * i for i in range(len(means))], atol=15)


def test_finger_tapping_side_folders_and_manual_dir_at_pd4t(tmp_path):
    pd4t = make_pd4t(tmp_path, "finger_Tapping", FINGER)
    data = tmp_path / "data"
    build("pd4t", "finger_tapping", data_dir=str(data), manual_dir=str(pd4t))
    for split in FINGER:
        expected = oracle(pd4t / "Annotations" / "finger_Tapping" / f"{split}.csv")
        ds = data_source("pd4t", "finger_tapping", split, data_dir=str(data))
        got = {r["id"].decode(): r for r in ds}
        assert set(got) == set(expected)
        for vid, rec in got.items():
            assert float(rec["score"]) == expected[vid][1]
            assert rec["side"].decode() == vid[-1] and rec["patient"].decode() == ""


def test_empty_manual_dir_gives_the_instructions(tmp_path):
    (tmp_path / "manual").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        build("pd4t", "gait", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "manual"))
    assert MANUAL_DOWNLOAD_INSTRUCTIONS in str(err.value)


def test_missing_video_fails_then_is_skipped_and_reported(tmp_path):
    pd4t = make_pd4t(tmp_path / "m", "Gait", GAIT)
    (pd4t / "Videos" / "Gait" / "024" / "15-003012.mp4").unlink()
    with pytest.raises(BadSampleError) as err:
        build("pd4t", "gait", data_dir=str(tmp_path / "d1"), manual_dir=str(tmp_path / "m"))
    assert "15-003012_024" in str(err.value) and str(pd4t / "Videos" / "Gait") in str(err.value)

    b = build("pd4t", "gait", data_dir=str(tmp_path / "d2"), manual_dir=str(tmp_path / "m"),
              skip_bad_samples=True)
    test = data_source("pd4t", "gait", "test", data_dir=str(tmp_path / "d2"))
    assert [r["id"].decode() for r in test] == ["15-003013_024"]
    assert len(data_source("pd4t", "gait", "train", data_dir=str(tmp_path / "d2"))) == 3
    report = json.loads((Path(b.data_dir) / "bad_samples_test.json").read_text())
    assert [s["sample"] for s in report["skipped"]] == ["15-003012_024"]


def test_corrupt_video_names_the_file(tmp_path):
    pd4t = make_pd4t(tmp_path / "m", "Gait", GAIT)
    bad = pd4t / "Videos" / "Gait" / "009" / "15-001760.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(BadSampleError) as err:
        build("pd4t", "gait", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
    assert "15-001760_009" in str(err.value) and str(bad) in str(err.value)


def test_bad_csv_row_names_the_file_and_line(tmp_path):
    pd4t = make_pd4t(tmp_path / "m", "Gait", GAIT)
    train_csv = pd4t / "Annotations" / "Gait" / "train.csv"
    train_csv.write_text(train_csv.read_text() + "16-000001_030,five hundred,1\n")
    with pytest.raises(BadSampleError) as err:
        build("pd4t", "gait", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
    assert f"{train_csv}, line 4" in str(err.value) and "16-000001_030" in str(err.value)

    # a score outside 0-4 as well; skipped and listed
    train_csv.write_text(train_csv.read_text() + "16-000002_030,500,7\n")
    b = build("pd4t", "gait", data_dir=str(tmp_path / "d2"), manual_dir=str(tmp_path / "m"),
              skip_bad_samples=True)
    report = json.loads((Path(b.data_dir) / "bad_samples_train.json").read_text())
    assert [s["sample"] for s in report["skipped"]] == ["16-000001_030", "16-000002_030"]
    assert "line 5" in report["skipped"][1]["problem"]
    assert len(data_source("pd4t", "gait", "train", data_dir=str(tmp_path / "d2"))) == 3


def test_split_with_every_sample_bad_is_an_error(tmp_path):
    pd4t = make_pd4t(tmp_path / "m", "Gait", GAIT)
    for rel in ("024/15-003012.mp4", "024/15-003013.mp4"):
        (pd4t / "Videos" / "Gait" / rel).unlink()
    with pytest.raises(ValueError, match="none of the 2 rows"):
        build("pd4t", "gait", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"),
              skip_bad_samples=True)


def test_ambiguous_video_is_an_error(tmp_path):
    pd4t = make_pd4t(tmp_path / "m", "Gait", GAIT)
    write_mp4(pd4t / "Videos" / "Gait" / "other" / "13-007586_004.mp4", [10, 20])
    with pytest.raises(BadSampleError, match="several videos named 13-007586_004.mp4"):
        build("pd4t", "gait", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))


def test_patient_and_side_rules_and_nested_root(tmp_path):
    from tfds_builders.pd4t.pd4t_dataset_builder import find_root, patient_and_side

    task = tmp_path / "Videos" / "Leg agility"
    assert patient_and_side("14-005690_026", task / "026" / "14-005690.mp4", task) == ("026", "")
    assert patient_and_side("15-1_l", task / "011" / "15-1_l.mp4", task) == ("011", "l")
    assert patient_and_side("15-1_r", task / "r" / "15-1.mp4", task) == ("", "r")
    assert patient_and_side("15-2_007", task / "15-2_007.mp4", task) == ("007", "")
    nested = tmp_path / "m" / "PD4T" / "PD4T" / "PD4T"  # as one public note unpacks it
    (nested / "Annotations").mkdir(parents=True)
    (nested / "Videos").mkdir()
    assert find_root(tmp_path / "m") == (nested / "Annotations", nested / "Videos")


def _truncated_avi(path: Path, frames: int = 120, keep: float = 0.3) -> None:
    """An MJPG avi of ``frames`` frames whose bytes are cut to ``keep``: it still opens, its
    header still says ``frames``, and OpenCV decodes the first ~30% and stops without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for i in range(frames):
        writer.write(np.full((H, W, 3), (7 * i) % 256, np.uint8))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_video_is_flagged_not_stored_short(tmp_path):
    """Issue 17 item 6: a truncated video that still opens is a bad sample naming the file and
    both counts (CSV and container), not a sample stored with a third of its frames."""
    from aqa_jax.data.bad_input import check_frame_count

    cut = tmp_path / "cut.avi"
    _truncated_avi(cut)
    cap = cv2.VideoCapture(str(cut))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) == 120 and 10 < decoded < 60
    with pytest.raises(ValueError, match=rf"after {decoded} of the 120 frames its container"):
        check_frame_count(decoded, cut)  # no annotation: the container's own count
    with pytest.raises(ValueError, match=rf"after {decoded} of the 150 frames the CSV"):
        check_frame_count(decoded, cut, 150, expected_from="the CSV")
    whole = tmp_path / "whole.avi"
    _truncated_avi(whole, keep=1.0)
    check_frame_count(120, whole, 120)  # complete: not flagged
    check_frame_count(115, whole, 121)  # within the tolerance of estimated counts (5%)

    # in a build: the CSV's num_frames is 120 and the mp4 of one row is a cut copy
    pd4t = make_pd4t(tmp_path / "m", "Gait", GAIT)
    video = pd4t / "Videos" / "Gait" / "026" / "14-005690.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (W, H))
    for i in range(40):
        writer.write(np.full((H, W, 3), 5 * i, np.uint8))
    writer.release()
    rows = [r[:3] for r in GAIT["train"]]
    rows[0] = ("14-005690_026", 120, 1)  # the video holds 40 of the 120 frames annotated
    write_csv(pd4t / "Annotations" / "Gait" / "train.csv", rows)
    with pytest.raises(BadSampleError, match=r"14-005690_026: .*14-005690.mp4: decoding stopped "
                                             r"after 40 of the 120 frames the CSV"):
        build("pd4t", "gait", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))


def test_an_id_in_both_splits_is_refused(tmp_path):
    """Issue 17 item 6: PD4T's official split is patient-level; an id in train.csv and
    test.csv is refused, naming both files."""
    pd4t = make_pd4t(tmp_path / "m", "Gait", GAIT)
    rows = [r[:3] for r in GAIT["test"]] + [GAIT["train"][1][:3]]
    write_csv(pd4t / "Annotations" / "Gait" / "test.csv", rows)
    with pytest.raises(ValueError, match=r"1 sample\(s\) are in both the train split \(.*train.csv\) "
                                         r"and the test split \(.*test.csv\): 15-001760_009"):
        build("pd4t", "gait", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))


def test_build_data_prints_a_bad_samples_path_that_exists(tmp_path, capsys):
    """Issue 17 item 9: the report path build-data prints used to point into tfds's temporary
    build folder, gone once the build completed."""
    import re

    from aqa_jax.cli import main

    pd4t = make_pd4t(tmp_path / "m", "Gait", GAIT)
    (pd4t / "Videos" / "Gait" / "024" / "15-003012.mp4").unlink()
    assert main(["build-data", "pd4t", "--config", "gait", "--data-dir", str(tmp_path / "d"),
                 "--manual-dir", str(tmp_path / "m"), "--skip-bad-samples"]) == 0
    printed = re.findall(r"(/\S+bad_samples_\w+\.json)", capsys.readouterr().out)
    assert printed and all(Path(p).is_file() for p in printed), printed
    assert all("incomplete" not in p for p in printed)
    report = json.loads(Path(printed[-1]).read_text())
    assert [s["sample"] for s in report["skipped"]] == ["15-003012_024"]
