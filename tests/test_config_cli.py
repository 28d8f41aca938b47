"""One way to resolve a config: ``aqa-jax config``, ``aqa-jax train --set`` and
``launch/main.py --set/--hardware`` all go through ``load_config``; ``*_steps``/``*_epochs``
pairs; keys of earlier releases are refused with their replacement."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from aqa_jax.cli import main
from aqa_jax.config_args import ConfigError, format_config, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def test_config_command_prints_the_resolved_config(capsys):
    assert main(["config", f"{CONFIGS}/core.py:dataset=mtl_aqa,debug"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # the debug variant of CoRe on MTL-AQA (configs/core.py, common.apply_debug)
    assert printed["method"] == "core" and printed["data"]["name"] == "synthetic_aqa"
    assert printed["trainable"] == "head" and printed["total_epochs"] == 10
    assert printed["core"]["num_exemplars"] == 4 and printed["checkpoint"]["every_epochs"] == 1
    assert main(["config", f"{CONFIGS}/core.py:dataset=mtl_aqa", "optimizer.lr=0.5",
                 "total_steps=7", "clips.preset=tsa"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["optimizer"]["lr"] == 0.5 and printed["total_steps"] == 7
    assert "total_epochs" not in printed and printed["clips"]["preset"] == "tsa"
    assert printed == json.loads(format_config(load_config(
        f"{CONFIGS}/core.py:dataset=mtl_aqa", ["optimizer.lr=0.5", "total_steps=7", "clips.preset=tsa"])))


def test_config_command_errors_are_one_line(capsys):
    assert main(["config", f"{CONFIGS}/core.py:dataset=nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aqa-jax config: error:") and "nope" in err and "\n" not in err
    assert main(["config", f"{CONFIGS}/core.py", "optimizer.lr"]) == 2
    assert "key.path=value" in capsys.readouterr().err


def test_a_pair_override_replaces_its_partner():
    spec = f"{CONFIGS}/usdl.py:dataset=pd4t"
    c = load_config(spec, ["total_steps=50", "eval_every_steps=10", "checkpoint.every_steps=25"])
    assert (c.total_steps, c.eval_every_steps, c.checkpoint.every_steps) == (50, 10, 25)
    assert "total_epochs" not in c and "eval_every_epochs" not in c and "every_epochs" not in c.checkpoint
    c = load_config(spec, ["total_epochs=2.5"])  # fractional epochs
    assert c.total_epochs == 2.5
    c = load_config(f"{CONFIGS}/pecop.py:dataset=pd4t", ["eval_every_epochs=2"])  # absent: added
    assert c.eval_every_epochs == 2
    with pytest.raises(ConfigError, match="takes a number"):
        load_config(f"{CONFIGS}/pecop.py", ["eval_every_steps=often"])
    with pytest.raises(ConfigError, match="total_steps=-5 must be >= 0"):
        load_config(spec, ["total_steps=-5"])


def test_keys_of_earlier_releases_name_their_replacement(tmp_path):
    for body, message in [
        ("dict(batch_size=2, num_epochs=3)", "num_epochs (now total_epochs)"),
        ("dict(batch_size=2, total_epochs=3, eval_every_steps=-1)", "eval_every_steps=-1"),
        ("dict(batch_size=2, total_epochs=3, checkpoint=dict(every_steps=0))", "checkpoint.every_epochs=1"),
        ("dict(batch_size=2, total_epochs=3, total_steps=5)", "keep one"),
    ]:
        bad = tmp_path / "old.py"
        bad.write_text(f"import ml_collections\ndef get_config(arg=None):\n"
                       f"    return ml_collections.ConfigDict({body})\n")
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config(str(bad))


def test_hardware_in_the_spec_or_as_a_keyword_for_any_config():
    by_arg = load_config(f"{CONFIGS}/usdl.py:dataset=mtl_aqa,hardware=gpu_8", ["batch_size=16"])
    assert by_arg.hardware == "gpu_8" and by_arg.compute_dtype == "bfloat16"
    # the preset's checkpoint interval is in steps: it replaces the config's every_epochs
    assert by_arg.checkpoint.every_steps == 200 and "every_epochs" not in by_arg.checkpoint
    with pytest.raises(ValueError, match="batch_size=4 does not split"):  # checked after --set
        load_config(f"{CONFIGS}/usdl.py:dataset=mtl_aqa", hardware="gpu_8")
    pecop = f"{CONFIGS}/pecop.py:dataset=pd4t"
    assert load_config(pecop, hardware="tpu_v4_32").to_dict() == load_config(
        f"{pecop},hardware=tpu_v4_32").to_dict()
    with pytest.raises(ValueError, match="keep one"):
        load_config(f"{pecop},hardware=gpu_8", hardware="tpu_v4_32")
    # an override comes after the preset
    assert load_config(f"{pecop},hardware=gpu_8", ["checkpoint.every_steps=7"]).checkpoint.every_steps == 7


def _launch_main():
    spec = importlib.util.spec_from_file_location("launch_main_under_test", REPO / "launch" / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_main_resolves_configs_as_the_cli(monkeypatch, tmp_path):
    """``launch/main.py --config SPEC --set K=V --hardware H`` trains exactly the config that
    ``load_config(SPEC, [K=V], hardware=H)`` (and ``aqa-jax config``) gives."""
    import aqa_jax.train.loop as loop

    launch = _launch_main()
    seen = {}
    monkeypatch.setattr(loop, "train", lambda config, workdir, force_config=False: seen.update(
        config=config, workdir=workdir) or {"steps": 0})
    spec = f"{CONFIGS}/pecop.py:dataset=jigsaws,task=knot_tying,fold=2"
    argv = ["main.py", f"--config={spec}", f"--workdir={tmp_path}", "--hardware=tpu_v5e_16",
            "--set=optimizer.lr=0.02", "--set", "total_steps=100"]
    try:
        launch.flags.FLAGS(argv)
        launch.main(["main.py"])
    finally:
        launch.flags.FLAGS.unparse_flags()
    expected = load_config(spec, ["optimizer.lr=0.02", "total_steps=100"], hardware="tpu_v5e_16")
    assert seen["config"].to_dict() == expected.to_dict() and seen["workdir"] == str(tmp_path)
    assert seen["config"].optimizer.lr == 0.02 and seen["config"].hardware == "tpu_v5e_16"


def test_launch_main_refuses_the_old_override_syntax(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "launch" / "main.py"),
                          f"--config={CONFIGS}/pecop.py", f"--workdir={tmp_path}",
                          "--config.optimizer.lr=0.1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "--set optimizer.lr=0.1" in out.stderr and not (tmp_path / "config.json").exists()
