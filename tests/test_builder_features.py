"""rhythmic_gymnastics and fis_v builders: clip-feature .npy files and label txt files.

Fixtures in the distributed layout (one manual_dir holding RG/ and fis-v/, as in the
AQA-Benchmark VST folder); the oracle is the label text parsed here and the arrays written
here. No real RG/Fis-V files exist in shared/, so fixtures only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aqa_jax.data.bad_input import BadSampleError
from aqa_jax.data.registry import build, data_source
from tfds_builders.fis_v import fis_v_dataset_builder as fisv_mod
from tfds_builders.rhythmic_gymnastics import rhythmic_gymnastics_dataset_builder as rg_mod

RG_HEADER = "name Difficulty_Score Execution_Score Total_Score"
RG_ROWS = {
    "train": [("Ball_001", 14.3, 6.85, 21.15), ("Hoop_002", 12.0, 7.1, 19.1),
              ("Ball_017", 16.9, 7.95, 24.85), ("Ribbon_004", 9.5, 5.2, 14.7),
              ("Clubs_010", 13.2, 6.0, 19.2)],
    "test": [("Ball_101", 15.0, 7.0, 22.0), ("Hoop_102", 11.1, 6.5, 17.6),
             ("Clubs_103", 12.4, 6.3, 18.7), ("Ribbon_104", 10.0, 6.0, 16.0)],
}
FISV_HEADER = "name TES PCS"
FISV_ROWS = {
    "train": [("1", 40.17, 30.58), ("7", 68.23, 37.71), ("12", 25.9, 24.44)],
    "test": [("3", 55.5, 33.1), ("15", 33.33, 28.0)],
}


def write_dataset(root: Path, header: str, rows: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feats = {}
    (root / "swintx_avg_fps25_clip32").mkdir(parents=True)
    for split, split_rows in rows.items():
        lines = [header] + [" ".join(str(x) for x in r) for r in split_rows]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for r in split_rows:
            feats[r[0]] = rng.normal(size=(int(rng.integers(3, 9)), 1024)).astype(np.float32)
            np.save(root / "swintx_avg_fps25_clip32" / f"{r[0]}.npy", feats[r[0]])
    return feats


def read_labels(path: Path) -> list[list[str]]:  # the oracle: header skipped, split on spaces
    return [line.split() for line in path.read_text().splitlines()[1:] if line.strip()]


@pytest.fixture(scope="module")
def manual(tmp_path_factory) -> tuple[Path, dict, dict]:
    root = tmp_path_factory.mktemp("VST")
    rg = write_dataset(root / "RG", RG_HEADER, RG_ROWS, 0)
    fv = write_dataset(root / "fis-v", FISV_HEADER, FISV_ROWS, 1)
    return root, rg, fv


@pytest.fixture(scope="module")
def data(manual, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    for config in ("ball", "clubs", "hoop", "ribbon"):
        build("rhythmic_gymnastics", config, data_dir=str(d), manual_dir=str(manual[0]))
    for config in ("tes", "pcs"):
        build("fis_v", config, data_dir=str(d), manual_dir=str(manual[0]))
    return d


@pytest.mark.parametrize("apparatus", ["Ball", "Clubs", "Hoop", "Ribbon"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_rg_apparatus_split_labels_and_features(manual, data, apparatus, split):
    rows = [r for r in read_labels(manual[0] / "RG" / f"{split}.txt")
            if r[0].split("_")[0] == apparatus]
    ds = data_source("rhythmic_gymnastics", apparatus.lower(), split, data_dir=str(data))
    assert len(ds) == len(rows)
    got = {rec["id"].decode(): rec for rec in ds}
    for name, d, e, t in rows:
        rec = got[name]
        assert float(rec["score"]) == pytest.approx(float(t), abs=1e-5)  # raw, not / 25
        assert float(rec["total_score"]) == pytest.approx(float(t), abs=1e-5)
        assert float(rec["difficulty_score"]) == pytest.approx(float(d), abs=1e-5)
        assert float(rec["execution_score"]) == pytest.approx(float(e), abs=1e-5)
        assert rec["apparatus"].decode() == apparatus
        np.testing.assert_array_equal(rec["features"], manual[1][name])
        assert rec["features"].dtype == np.float32
        assert int(rec["num_clips"]) == manual[1][name].shape[0]


@pytest.mark.parametrize("target", ["TES", "PCS"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_fisv_target_split_labels_and_features(manual, data, target, split):
    rows = read_labels(manual[0] / "fis-v" / f"{split}.txt")
    ds = data_source("fis_v", target.lower(), split, data_dir=str(data))
    assert len(ds) == len(rows)
    got = {rec["id"].decode(): rec for rec in ds}
    for name, tes, pcs in rows:
        rec = got[name]
        want = float(tes) if target == "TES" else float(pcs)
        assert float(rec["score"]) == pytest.approx(want, abs=1e-5)
        assert float(rec["tes"]) == pytest.approx(float(tes), abs=1e-5)
        assert float(rec["pcs"]) == pytest.approx(float(pcs), abs=1e-5)
        np.testing.assert_array_equal(rec["features"], manual[2][name])
        assert int(rec["num_clips"]) == manual[2][name].shape[0]


def test_score_divisor_is_documented_not_applied():
    assert rg_mod.OFFICIAL_SCORE_DIVISOR == fisv_mod.OFFICIAL_SCORE_DIVISOR == 25.0


def test_empty_manual_dir_gives_the_instructions(tmp_path):
    (tmp_path / "m").mkdir()
    for name, mod in (("rhythmic_gymnastics", rg_mod), ("fis_v", fisv_mod)):
        with pytest.raises(FileNotFoundError) as err:
            build(name, None, data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
        assert mod.MANUAL_DOWNLOAD_INSTRUCTIONS in str(err.value)


def test_missing_npy_fails_then_is_skipped_and_reported(tmp_path):
    write_dataset(tmp_path / "m", RG_HEADER, RG_ROWS, 0)
    gone = tmp_path / "m" / "swintx_avg_fps25_clip32" / "Ball_017.npy"
    gone.unlink()
    with pytest.raises(BadSampleError) as err:
        build("rhythmic_gymnastics", "ball", data_dir=str(tmp_path / "d1"),
              manual_dir=str(tmp_path / "m"))
    assert "Ball_017" in str(err.value) and str(gone) in str(err.value)

    b = build("rhythmic_gymnastics", "ball", data_dir=str(tmp_path / "d2"),
              manual_dir=str(tmp_path / "m"), skip_bad_samples=True)
    train = data_source("rhythmic_gymnastics", "ball", "train", data_dir=str(tmp_path / "d2"))
    assert [r["id"].decode() for r in train] == ["Ball_001"]
    report = json.loads((Path(b.data_dir) / "bad_samples_train.json").read_text())
    assert [s["sample"] for s in report["skipped"]] == ["Ball_017"]


def test_wrong_feature_width_and_malformed_row(tmp_path):
    write_dataset(tmp_path / "m", FISV_HEADER, FISV_ROWS, 1)
    bad = tmp_path / "m" / "swintx_avg_fps25_clip32" / "7.npy"
    np.save(bad, np.zeros((4, 2048), np.float32))
    with pytest.raises(BadSampleError, match=r"sample 7: .*7\.npy has shape \(4, 2048\)"):
        build("fis_v", "tes", data_dir=str(tmp_path / "d1"), manual_dir=str(tmp_path / "m"))

    write_dataset(tmp_path / "m2", FISV_HEADER, FISV_ROWS, 1)
    labels = tmp_path / "m2" / "test.txt"
    labels.write_text(labels.read_text() + "21 55.0\n")
    with pytest.raises(BadSampleError) as err:
        build("fis_v", "pcs", data_dir=str(tmp_path / "d2"), manual_dir=str(tmp_path / "m2"))
    assert f"{labels}, line 4" in str(err.value) and "sample 21" in str(err.value)


def test_unknown_apparatus_and_missing_header(tmp_path):
    write_dataset(tmp_path / "m", RG_HEADER, RG_ROWS, 0)
    labels = tmp_path / "m" / "test.txt"
    labels.write_text(labels.read_text() + "Rope_200 1 2 3\n")
    with pytest.raises(BadSampleError, match=r"line 6: the name's prefix 'Rope'"):
        build("rhythmic_gymnastics", "hoop", data_dir=str(tmp_path / "d1"),
              manual_dir=str(tmp_path / "m"))
    labels.write_text("\n".join(" ".join(map(str, r)) for r in RG_ROWS["test"]) + "\n")
    with pytest.raises(ValueError, match="looks like data"):
        build("rhythmic_gymnastics", "hoop", data_dir=str(tmp_path / "d2"),
              manual_dir=str(tmp_path / "m"))


def test_ambiguous_feature_folders(tmp_path):
    write_dataset(tmp_path / "m", FISV_HEADER, FISV_ROWS, 1)
    feats = tmp_path / "m" / "swintx_avg_fps25_clip32"
    feats.rename(tmp_path / "m" / "vst_a")
    (tmp_path / "m" / "vst_b").mkdir()
    np.save(tmp_path / "m" / "vst_b" / "1.npy", np.zeros((2, 1024), np.float32))
    with pytest.raises(FileNotFoundError, match=r"several folders of \.npy features"):
        build("fis_v", "tes", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "m"))
