"""extract-features: clip windows by hand, features equal a direct forward of the same clip."""

import numpy as np

from aqa_jax.cli import main
from aqa_jax.data.frames import decode_frames
from aqa_jax.data.registry import data_source
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
