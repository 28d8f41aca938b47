"""extract-features: clip windows by hand, features equal a direct forward of the same clip."""

import json

import numpy as np
import pytest

from aqa_jax.cli import main
from aqa_jax.data.frames import decode_frames
from aqa_jax.data.registry import build, data_source
from aqa_jax.data.transforms import apply_transform
from aqa_jax.features import (ExtractorSettings, clip_windows, iter_feature_files, load_i3d,
                              read_extractor_settings)


def test_clip_windows():
    assert clip_windows(40, 16, 16).tolist() == [list(range(16)), list(range(16, 32))]
    assert clip_windows(40, 16, 12)[:, 0].tolist() == [0, 12, 24]
    assert clip_windows(5, 8, 8).tolist() == [[0, 1, 2, 3, 4, 4, 4, 4]]


def test_extract_features_cli(tmp_path):
    data_dir, out = str(tmp_path / "data"), tmp_path / "feats"
    assert main(["build-data", "synthetic_aqa", "--config", "hand_movement_tiny",
                 "--data-dir", data_dir]) == 0
    assert main(["extract-features", "synthetic_aqa", "--config", "hand_movement_tiny",
                 "--split", "test", "--data-dir", data_dir, "--out", str(out),
                 "--preset", "deepmind_64"]) == 0
    rows = list(iter_feature_files(out, "test"))
    assert len(rows) == 4 and all(f.shape == (2, 1024) for _, f, _ in rows)

    # the settings predict reuses are recorded beside the features
    assert read_extractor_settings(out) == ExtractorSettings(
        weights="kinetics400", variant="deepmind", clip_len=16, stride=16, preset="deepmind_64")
    code = main(["extract-features", "synthetic_aqa", "--config", "hand_movement_tiny",
                 "--split", "train", "--data-dir", data_dir, "--out", str(out), "--stride", "8",
                 "--preset", "deepmind_64"])
    assert code == 2 and not (out / "train.csv").exists()  # other settings: not in this folder

    import jax

    model, variables = load_i3d("kinetics400", "deepmind")
    record = next(r for r in data_source("synthetic_aqa", "hand_movement_tiny", "test",
                                         data_dir=data_dir) if r["id"].decode() == rows[0][0])
    clip = apply_transform(decode_frames(record["frames"], range(16, 32)), "deepmind_64")
    direct = jax.jit(model.apply)(variables, clip[None])["features"][0]
    np.testing.assert_allclose(rows[0][1][1], direct, atol=1e-4)
    assert abs(rows[0][2] - float(record["score"])) < 1e-5


@pytest.mark.slow
def test_extract_features_with_a_pecop_run(tmp_path):
    """`--weights RUN`: the run's adapted I3D, trained adapters included (oracle: the run's own
    network applied with its checkpointed backbone)."""
    import jax
    from train_helpers import restore_state, tiny_config

    from aqa_jax.models.i3d import build_i3d
    from aqa_jax.train.loop import train

    data_dir, run, out = tmp_path / "data", tmp_path / "pecop", tmp_path / "feats"
    build("synthetic_aqa", "finger_tapping_tiny", data_dir=str(data_dir))
    config = tiny_config(data_dir, total_steps=1, num_devices=1, mesh=[("data", 1), ("model", 1)],
                         model={"adapter_blocks": ("Mixed_5b", "Mixed_5c"), "final_endpoint": "AvgPool"})
    train(config, run)
    assert main(["extract-features", "synthetic_aqa", "--config", "finger_tapping_tiny", "--split", "test",
                 "--data-dir", str(data_dir), "--out", str(out), "--weights", str(run),
                 "--clip-len", "8", "--stride", "8", "--preset", "deepmind_32"]) == 0
    assert read_extractor_settings(out).weights == str(run.resolve())
    name, features, _ = next(iter_feature_files(out, "test"))
    record = next(r for r in data_source("synthetic_aqa", "finger_tapping_tiny", "test", data_dir=str(data_dir))
                  if r["id"].decode() == name)
    clip = apply_transform(decode_frames(record["frames"], range(8, 16)), "deepmind_32")
    state = restore_state(run)
    variables = {c: state[c]["backbone"] for c in ("params", "batch_stats")}
    direct = jax.jit(build_i3d(config.model).apply)(variables, clip[None])["features"][0]
    np.testing.assert_allclose(features[1], direct, rtol=1e-4, atol=1e-5)
    kinetics, kinetics_variables = load_i3d("kinetics400", config.model.variant)
    plain = jax.jit(kinetics.apply)(kinetics_variables, clip[None])["features"][0]
    assert np.abs(plain - direct).max() > 1e-3  # the adapters (and the step) changed the features


def _fake_run(workdir, model_overrides, drop=()):
    """A training run's workdir without training: the tiny PECoP config (``model_overrides``
    on its ``model``) and a step-3 checkpoint whose state holds a random backbone (and a
    head), less the backbone leaves whose paths contain one of ``drop``. Returns (config,
    the saved backbone as ``{'params', 'batch_stats'}``)."""
    import orbax.checkpoint as ocp
    from flax import traverse_util
    from train_helpers import tiny_config

    from aqa_jax.features import i3d_shapes
    from aqa_jax.models.i3d import build_i3d
    from aqa_jax.train.workdir import config_as_json

    config = tiny_config(workdir / "no_data", model=model_overrides)
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps(config_as_json(config)))
    rng = np.random.default_rng(0)
    backbone = {}
    for c, tree in i3d_shapes(build_i3d(config.model)).items():
        flat = traverse_util.flatten_dict(tree)
        backbone[c] = traverse_util.unflatten_dict({
            k: (rng.uniform(0.5, 1.5, s.shape) if k[-1] == "var" else rng.normal(0, 0.1, s.shape)).astype(s.dtype)
            for k, s in flat.items() if not any(d in "/".join(k) for d in drop)})
    state = {"step": np.int32(3), "params": {"backbone": backbone["params"],
                                             "head_speed": {"kernel": np.ones((1024, 4), np.float32)}},
             "batch_stats": {"backbone": backbone["batch_stats"]}}
    with ocp.CheckpointManager(workdir / "checkpoints", item_names=("state",)) as manager:
        manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        manager.wait_until_finished()
    return config, backbone


def test_features_of_a_run_workdir_equal_its_checkpoint_applied(tmp_path):
    """`--weights RUN` without compiling an init: every variable is the checkpoint's backbone
    (a Logits layer, which does not change features, left out), and the features equal the
    run's own I3D applied to the checkpoint's variables."""
    import jax
    from flax import traverse_util

    from aqa_jax.features import FeatureExtractor
    from aqa_jax.models.i3d import build_i3d

    config, saved = _fake_run(tmp_path / "run", {"adapter_blocks": ("Mixed_5b", "Mixed_5c"),
                                                 "final_endpoint": "Logits", "num_classes": 4})
    model, variables = load_i3d(str(tmp_path / "run"))
    flat, expected = (traverse_util.flatten_dict(v) for v in (variables, saved))
    assert model.final_endpoint == "AvgPool" and model.adapter_blocks == ("Mixed_5b", "Mixed_5c")
    assert set(flat) == {k for k in expected if k[1] != "Logits"}
    for key, value in flat.items():
        np.testing.assert_array_equal(value, expected[key], err_msg="/".join(key))

    settings = ExtractorSettings(weights=str(tmp_path / "run"), variant=config.model.variant,
                                 clip_len=8, stride=8, preset="deepmind_32")
    record = _records(["a"], seed=3)[0]
    features = FeatureExtractor(settings)(record)
    clip = apply_transform(decode_frames(record["frames"], range(8, 16)), "deepmind_32")
    direct = jax.jit(build_i3d(config.model).apply)(saved, clip[None])["features"][0]
    assert features.shape == (2, 1024)
    np.testing.assert_allclose(features[1], direct, rtol=1e-4, atol=1e-5)


def test_a_variable_missing_from_the_run_checkpoint_is_an_error(tmp_path):
    """No variable of a run's I3D is left at an initial value: an adapter the checkpoint
    lacks is named."""
    from aqa_jax.weights.assign import ConversionError

    _fake_run(tmp_path / "run", {"adapter_blocks": ("Mixed_5b", "Mixed_5c"), "final_endpoint": "AvgPool"},
              drop=("Mixed_5c/adapter",))
    with pytest.raises(ConversionError, match=r"model leaves not in backbone of .* step 3: "
                                              r"[^|]*Mixed_5c/adapter/"):
        load_i3d(str(tmp_path / "run"))


def _mean_colour_extractor():
    """A stand-in feature network (clip -> its mean colour tiled to 1024) and its settings."""
    import flax.linen as nn
    import jax.numpy as jnp

    from aqa_jax.features import make_feature_fn, video_features

    class MeanColour(nn.Module):
        @nn.compact
        def __call__(self, clips):
            return {"features": jnp.tile(clips.mean(axis=(1, 2, 3)), (1, 342))[:, :1024]}

    fn = make_feature_fn(MeanColour(), {})
    settings = ExtractorSettings(weights="mean colour", clip_len=8, stride=8, preset="deepmind_32")
    return settings, lambda r: video_features(r, fn, clip_len=8, stride=8, preset="deepmind_32")


def _records(ids, seed, frames=16):
    from aqa_jax.data.frames import encode_jpeg

    rng = np.random.default_rng(seed)
    return [{"id": i.encode(), "frames": [encode_jpeg(f) for f in
                                          rng.integers(0, 256, (frames, 32, 32, 3), dtype=np.uint8)],
             "num_frames": frames, "score": np.float32(rng.uniform(0, 4))} for i in ids]


def test_ids_with_spaces_round_trip_and_bad_videos_resume(tmp_path):
    """Issue 17 item 5: ids with spaces, commas and quotes survive extract-features →
    build-data clip_features; a bad video is named and the others go on; an interrupted split
    resumes (what is done is not recomputed). Oracle: the ids and scores of the records."""
    import csv

    from aqa_jax.features import ExtractionIncomplete, extract_split

    settings, extract = _mean_colour_extractor()
    out = tmp_path / "feats"
    ids = {"train": ["vidé o_1", 'a, "quoted" one', "plain_2"], "test": ["tëst 1", "x y z"]}
    records = {split: _records(names, seed) for seed, (split, names) in enumerate(ids.items())}
    # a bad video: its frames are not JPEG
    bad = dict(records["train"][2], id=b"broken video", frames=[b"not a jpeg"] * 16)
    calls = []

    def counting(record):
        calls.append(record["id"])
        return extract(record)

    lines = []
    with pytest.raises(ExtractionIncomplete, match="1 of 4 videos could not be read"):
        extract_split(records["train"] + [bad], counting, out, "train", settings, report=lines.append)
    assert len(lines) == 1 and lines[0].startswith("train: broken video: error: ")
    assert not (out / "train.csv").exists() and len(calls) == 4
    # the rerun (the bad video now left out) resumes: nothing is extracted again
    calls.clear()
    done = extract_split(records["train"], counting, out, "train", settings)
    assert (done.extracted, done.resumed, calls) == (0, 3, [])
    # an interruption: the partial log holds one complete row and one cut in the middle
    partial = out / "test.partial.csv"
    np.save(out / "tëst 1.npy", extract(records["test"][0]))
    partial.write_text('name,score\ntëst 1,1.0\n"x y', encoding="utf-8")
    done = extract_split(records["test"], counting, out, "test", settings)
    assert (done.extracted, done.resumed) == (1, 1) and [c.decode() for c in calls] == ["x y z"]
    assert not partial.exists()
    with open(out / "test.csv", newline="", encoding="utf-8") as f:
        assert [r[0] for r in csv.reader(f)] == ["name", "tëst 1", "x y z"]

    assert main(["build-data", "clip_features", "--manual-dir", str(out),
                 "--data-dir", str(out / "tfds")]) == 0
    for split, recs in records.items():
        got = {r["id"].decode(): float(r["score"]) for r in
               data_source("clip_features", None, split, data_dir=str(out / "tfds"))}
        assert got == pytest.approx({r["id"].decode(): float(r["score"]) for r in recs}, abs=1e-6)


def test_older_space_separated_labels(tmp_path):
    """A folder written before the CSV reads back; an id with a space there is a clear error."""
    from aqa_jax.features import read_labels

    (tmp_path / "test.txt").write_text("name score\nclip_1 2.5\n")
    assert read_labels(tmp_path, "test") == [("clip_1", "2.5")]
    (tmp_path / "test.txt").write_text("name score\nvidé o_1 2.5\n")
    with pytest.raises(ValueError, match="line 2: 3 space-separated fields.*re-extract"):
        read_labels(tmp_path, "test")
