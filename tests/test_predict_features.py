"""`aqa-jax predict` with a CoFInAl run trained on `aqa-jax extract-features` output.

Oracle: `aqa-jax evaluate`'s per-sample predictions. A test video given as a folder of its
stored JPEGs must get the same features (the extractor settings recorded beside the training
features) and so the same score, grade, grade probabilities and sub-grade; each clip's score
alone must equal the run's evaluation of a one-clip features record.
"""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from aqa_jax.cli import main
from aqa_jax.config_args import load_config
from aqa_jax.data.registry import build, data_source
from aqa_jax.features import ExtractorSettings
from aqa_jax.train import reports

REPO = Path(__file__).resolve().parents[1]
TASK = "finger_tapping_tiny"  # 8 training and 4 test videos of 40 frames at 32 px


def _run_cli(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory):
    """A 2-epoch CoFInAl run on Kinetics-400 features of 8-frame clips (5 per video)."""
    from aqa_jax.train.loop import train

    root = tmp_path_factory.mktemp("predict_features")
    data_dir, feats, workdir = root / "data", root / "feats", root / "run"
    build("synthetic_aqa", TASK, data_dir=str(data_dir))
    assert main(["extract-features", "synthetic_aqa", "--config", TASK, "--data-dir", str(data_dir),
                 "--out", str(feats), "--clip-len", "8", "--stride", "8", "--preset", "deepmind_32"]) == 0
    assert main(["build-data", "clip_features", "--manual-dir", str(feats),
                 "--data-dir", str(feats / "tfds")]) == 0
    config = load_config(f"{REPO}/configs/cofinal.py:dataset=features,folder={feats},label_scale=4",
                         ["total_epochs=2", "optimizer.t_max=2.0"])  # the cosine over the 2 epochs
    config.cofinal.update(hidden_dim=32, clip_num=4, max_clips=8)
    config.update(batch_size=4, num_devices=1, mesh=[("data", 1), ("model", 1)])
    train(config, workdir)
    return data_dir, workdir, config


def test_extractor_settings_reach_the_run_config(feature_run):
    _, workdir, config = feature_run
    expected = ExtractorSettings(weights="kinetics400", variant="deepmind", clip_len=8, stride=8,
                                 preset="deepmind_32").to_dict()
    assert config.data.extractor.to_dict() == expected
    assert json.loads((workdir / "config.json").read_text())["data"]["extractor"] == expected


def test_predict_equals_evaluation_and_reports_grades(feature_run, tmp_path):
    import cv2
    import jax

    from train_helpers import restore_state

    from aqa_jax.evaluation import load_run_config
    from aqa_jax.methods import get_method
    from aqa_jax.predict import format_result

    data_dir, workdir, _ = feature_run
    feats_dir = workdir.parent / "feats"
    ids, columns = reports.read_predictions_csv(workdir / "predictions_test.csv")
    record = data_source("synthetic_aqa", TASK, "test", data_dir=str(data_dir))[0]
    name = record["id"].decode()
    folder = tmp_path / name
    folder.mkdir()
    for i, frame in enumerate(record["frames"]):
        (folder / f"{i:05d}.jpg").write_bytes(frame)
    # the same video played twice as an mp4: 10 clips, more than the run's max_clips=8
    frames = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for f in record["frames"]] * 2
    mp4 = tmp_path / "twice.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 25, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    (tmp_path / "broken.avi").write_bytes(b"not a video")
    # issue 17 items 8 and 9: a 1-pixel-high PNG (upscaled to short side 256 before: gigabytes
    # for a few hundred bytes) and a 5000x20 strip are refused in one line each before any
    # resize; a copy of the first folder under the same name gets its own plot
    for bad_name, shape in (("thin", (1, 60_000)), ("strip", (20, 5000))):
        (tmp_path / bad_name).mkdir()
        (tmp_path / bad_name / "0.png").write_bytes(cv2.imencode(".png", np.zeros(shape + (3,), np.uint8))[1].tobytes())
    assert (tmp_path / "thin" / "0.png").stat().st_size < 1000
    copy = tmp_path / "copy" / name
    copy.mkdir(parents=True)
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())

    code, out = _run_cli(["predict", "--checkpoint", str(workdir), str(folder), str(mp4),
                          str(tmp_path / "broken.avi"), str(tmp_path / "thin"), str(tmp_path / "strip"),
                          str(copy), "--json", "--plot", str(tmp_path / "plots")])
    assert code == 1  # some videos failed, the others were scored
    good, twice, bad, thin, strip, same_name = json.loads(out)
    assert thin["error"] == (f"{tmp_path / 'thin' / '0.png'}: a 60000x1 frame is outside what "
                             "predict reads (short side >= 16, aspect ratio <= 8, <= 40 Mpixel)")
    assert "a 5000x20 frame is outside" in strip["error"]
    assert same_name["score"] == pytest.approx(good["score"], abs=1e-6)  # the same frames
    assert {Path(good["plot"]).name, Path(same_name["plot"]).name} == {
        f"{tmp_path.name}__{name}.png", f"copy__{name}.png"}
    assert Path(same_name["plot"]).is_file()
    row = ids.index(name)
    assert good["score"] == pytest.approx(columns["score_pred"][row], abs=1e-4)
    assert good["coarse_score"] == pytest.approx(columns["coarse_score"][row], abs=1e-4)
    assert good["grade"] == int(columns["grade"][row])
    assert good["subgrade"] == int(columns["subgrade"][row])
    np.testing.assert_allclose(good["grade_probabilities"],
                               [columns[f"grade_prob_{i}"][row] for i in range(4)], atol=1e-5)
    assert sum(good["grade_probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert Path(good["plot"]).stat().st_size > 10_000
    assert len(twice["per_clip"]) == 10 and np.isfinite(twice["score"])
    assert "broken.avi" in bad["video"] and "\n" not in bad["error"]

    # each clip alone: a one-clip record of the training features (extract-features' file),
    # padded by the method's own sampler, through the checkpointed network
    method = get_method("cofinal")(load_run_config(workdir))
    state = restore_state(workdir)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    feats = np.load(feats_dir / f"{name}.npy")
    assert len(good["per_clip"]) == len(feats) == 5
    for j in (0, 4):
        example = method.sampler(False)({"id": name, "features": feats[j:j + 1], "score": np.nan}, None)
        batch = {k: np.asarray(v)[None] for k, v in example.items() if k != "id"}
        outputs = method.build_model().apply(variables, batch, train=False)
        alone = method.per_sample(jax.device_get(method.predict(outputs, batch)))
        assert good["per_clip"][j] == pytest.approx(float(alone["score_pred"][0]), abs=1e-5)

    text = format_result(good)
    assert f"grade {good['grade']} of 0-3" in text and f"sub-grade {good['subgrade']} of 0-99" in text

