"""extract-features: clip windows by hand, features equal a direct forward of the same clip."""

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
    assert code == 2 and not (out / "train.txt").exists()  # other settings: not in this folder

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

    from aqa_jax.methods.vspp import build_i3d
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
