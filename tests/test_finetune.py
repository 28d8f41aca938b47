"""Fine-tuning methods end to end on synthetic_aqa, and the frozen-backbone feature cache."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aqa_jax.config_args import load_config
from aqa_jax.metrics import srcc
from aqa_jax.train import reports

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_data_dir(tmp_path_factory) -> Path:
    from aqa_jax.data.registry import build

    data_dir = tmp_path_factory.mktemp("aqa_small")
    build("synthetic_aqa", "finger_tapping_small", data_dir=str(data_dir))
    return data_dir


@pytest.mark.parametrize("method", [
    # ~3 min on 2 free cores (20 probe epochs, a checkpoint each): fine-tuning end to end is
    # exercised in the default suite by the AQA-7 debug runs and the CLI train/predict tests
    pytest.param("usdl", marks=pytest.mark.slow),
    pytest.param("musdl", marks=pytest.mark.slow),  # ~1.5 min each on one core
    pytest.param("core", marks=pytest.mark.slow),
])
def test_debug_finetune_reaches_a_clearly_positive_srcc(method, small_data_dir, tmp_path):
    from aqa_jax.data.registry import data_source
    from aqa_jax.train.loop import train

    config = load_config(f"{REPO}/configs/{method}.py:dataset=synthetic_aqa,debug")
    config.data.data_dir = str(small_data_dir)
    summary = train(config, tmp_path)
    assert summary["test"]["srcc"] > 0.4, summary["test"]
    assert summary["test_best"]["srcc"] >= summary["test"]["srcc"]
    # the predictions file holds every test video once, and its figures are the summary's
    ids, columns = reports.read_predictions_csv(tmp_path / "predictions_test.csv")
    test_ids = {data_source("synthetic_aqa", "finger_tapping_small", "test", data_dir=str(small_data_dir))[i]["id"]
                for i in range(32)}
    assert sorted(ids) == sorted(i.decode() if isinstance(i, bytes) else i for i in test_ids)
    assert srcc(columns["score_pred"], columns["score_true"]) == pytest.approx(summary["test"]["srcc"], abs=1e-4)
    assert (tmp_path / "scatter_test.png").stat().st_size > 10_000
    assert (tmp_path / "learning_curve.png").is_file()
    if method == "usdl":  # `aqa-jax evaluate` restores the last checkpoint: same figures
        from aqa_jax.evaluation import evaluate_run

        result = evaluate_run(tmp_path, data_dir=str(small_data_dir))
        assert result["srcc"] == pytest.approx(summary["test"]["srcc"], abs=1e-6)
        assert result["r_l2"] == pytest.approx(summary["test"]["r_l2"], rel=1e-5)
        assert result["overlap"] == []
        _check_predict(tmp_path, small_data_dir, ids, columns)


def _check_predict(workdir, data_dir, ids, columns):
    """`aqa-jax predict` on a test video's frames (as a folder of its stored JPEGs) gives the
    evaluation's prediction for that video; an unreadable video is a one-line error."""
    from aqa_jax.cli import main
    from aqa_jax.data.registry import data_source

    record = data_source("synthetic_aqa", "finger_tapping_small", "test", data_dir=str(data_dir))[0]
    name = record["id"].decode() if isinstance(record["id"], bytes) else record["id"]
    folder = workdir / "videos" / name
    folder.mkdir(parents=True)
    for i, frame in enumerate(record["frames"]):
        (folder / f"{i:05d}.jpg").write_bytes(frame)
    (workdir / "videos" / "broken.mp4").write_bytes(b"not a video")
    out = workdir / "predict.json"
    import contextlib
    import io
    import json

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["predict", "--checkpoint", str(workdir), str(folder), str(workdir / "videos" / "broken.mp4"),
                     "--json", "--plot", str(workdir / "plots")])
    assert code == 1  # one video failed
    good, bad = json.loads(buffer.getvalue())
    row = ids.index(name)
    assert good["score"] == pytest.approx(columns["score_pred"][row], abs=1e-4)
    assert good["score_std"] == pytest.approx(columns["score_std"][row], abs=1e-4)
    assert sum(good["distribution"]["probability"]) == pytest.approx(1.0, abs=1e-4)
    assert len(good["per_clip"]) == 4 and Path(good["plot"]).stat().st_size > 10_000
    assert "broken.mp4" in bad["video"] and "cannot open" in bad["error"] and "\n" not in bad["error"]
    out.write_text(buffer.getvalue())


def test_cached_features_give_the_same_outputs_as_the_full_network(small_data_dir):
    """The fast path's oracle: the network run on raw clips with the same parameters."""
    from aqa_jax.data.registry import data_source
    from aqa_jax.methods import get_method
    from aqa_jax.train.feature_cache import cache_split, make_clip_feature_fn

    config = load_config(f"{REPO}/configs/usdl.py:dataset=synthetic_aqa,debug")
    config.model.final_endpoint = "Mixed_3c"  # a cut I3D keeps the test fast
    method = get_method("usdl")(config)
    model = method.build_model()
    source = data_source("synthetic_aqa", "finger_tapping_small", "test", data_dir=str(small_data_dir))
    records = [source[i] for i in range(3)]
    sampler = method.clip_sampler(False)
    raw = [sampler(r, None) for r in records]
    assert raw[0]["clip"].dtype == np.uint8  # the pipeline's pixels; the network reads them normalised
    batch = method.normalize_inputs({"clip": jnp.asarray(np.stack([e["clip"] for e in raw]))})
    variables = model.init(jax.random.key(0), batch, train=False)
    full = model.apply(variables, batch, train=False)

    fn = make_clip_feature_fn(method, model.backbone, {c: variables[c]["backbone"] for c in variables})
    cached = cache_split(records, sampler, fn, desc="test", videos_per_batch=2)
    assert [c["id"] for c in cached] == [e["id"] for e in raw]
    assert "frames" not in cached[0] and "factors" in cached[0]  # record fields kept
    fast_model = method.use_cached_features(model)
    fast_batch = {"clip": jnp.asarray(np.stack([method.clip_sampler(False)(c, None)["clip"] for c in cached]))}
    fast = fast_model.apply(variables, fast_batch, train=False)
    np.testing.assert_allclose(np.asarray(fast["logits"]), np.asarray(full["logits"]), rtol=1e-4, atol=1e-5)


def test_precompute_features_refuses_a_trainable_backbone():
    from aqa_jax.train.feature_cache import check_frozen_backbone

    config = load_config(f"{REPO}/configs/core.py:dataset=synthetic_aqa,debug")
    check_frozen_backbone(config)
    config.trainable = "adapters"
    with pytest.raises(ValueError, match="frozen backbone"):
        check_frozen_backbone(config)
    config.trainable, config.bn_policy = "head", "batch_stats"
    with pytest.raises(ValueError, match="bn_policy"):
        check_frozen_backbone(config)
