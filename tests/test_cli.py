"""The ``aqa-jax`` command: clear one-line errors, and the demo end to end (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aqa_jax.cli import main
from aqa_jax.config_args import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert main(["convert-weights", str(tmp_path / "none.pth"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aqa-jax convert-weights: error:") and "none.pth" in err
    assert "\n" not in err


def test_evaluate_and_finetune_config_mistakes_are_one_line_errors(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "no_run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aqa-jax evaluate: error:") and "no_run" in err and "\n" not in err
    assert main(["train", "--config", f"{CONFIGS}/core.py:dataset=pd4t,init=pecop",
                 "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pretrained=" in err and "\n" not in err


def test_config_args():  # parse_arg itself: tests/test_config_common.py
    with pytest.raises(ValueError, match="allowed"):
        load_config(f"{CONFIGS}/i3d.py:varient=pecop")
    config = load_config(f"{CONFIGS}/i3d.py:variant=piergiaj,adapters=Mixed_4b+Mixed_5c")
    assert config.model.variant == "piergiaj"
    assert tuple(config.model.adapter_blocks) == ("Mixed_4b", "Mixed_5c")


@pytest.mark.slow  # the demo: ~5-7 min on a free 2-core CPU
def test_demo_learns_the_pretext_and_reports_the_effect_with_its_interval(tmp_path):
    out = subprocess.run([sys.executable, "-m", "aqa_jax.cli", "demo", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, check=True, timeout=900).stdout
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    after = summary["pretext_after"]  # held-out videos; chance 1/4 for speed and for segment
    assert after["acc_speed"] >= 0.5 and after["acc_segment"] >= 0.5, after
    assert "1,118,293 parameters" in out  # 1,109,068 adapter parameters (pecop_i3d.md §1) + heads
    assert "1,109,068 adapter params" in summary["stored_per_task"]
    paired = summary["pecop_minus_dom_g"]
    assert paired["lo"] <= paired["diff"] <= paired["hi"]
    verdict = "cannot separate" if paired["lo"] <= 0 <= paired["hi"] else "excludes 0"
    assert verdict in out
    assert "docs/PECOP_EFFECT.md" in out and "seeds" in out


@pytest.mark.parametrize("override,message", [
    ("optimizer.lr=abc", "optimizer.lr takes a number (now 0.003), not 'abc'"),  # was a TypeError
    ("batch_size=0", "batch_size=0 must be >= 1"),  # was a ZeroDivisionError
    ("total_steps=-5", "total_steps=-5 must be >= 0"),  # was rc 0, "trained -5 steps"
    ("batch_size=2.5", "batch_size takes an integer (now 8), not '2.5'"),
    ("seed=True", "seed takes an integer (now 0), not a bool"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1 must be >= 0"),
    ("optimizer.lr=float('inf')", "optimizer.lr takes a number"),
    ("optimizer.lr=1e400", "optimizer.lr=inf must be finite"),
    ("optimizer.momentum=1.5", "optimizer.momentum=1.5 must be in [0, 1]"),
    ("checkpoint.max_to_keep=0", "checkpoint.max_to_keep=0 must be >= 1"),
    ("no_such.key=1", "the config has no 'no_such' under it"),
])
def test_each_bad_set_value_is_one_line_and_rc_2(override, message, tmp_path, capsys):
    """Issue 17 item 7: a bad --set value is refused when the config is loaded, before any
    work (nothing written in the workdir), in one line naming the key."""
    workdir = tmp_path / "run"
    code = main(["train", "--config", f"{CONFIGS}/pecop.py:dataset=synthetic_aqa,debug",
                 "--workdir", str(workdir), "--set", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("aqa-jax train: error: "), err
    assert message in err and not workdir.exists()


def test_config_files_are_validated_at_load(tmp_path):
    from aqa_jax.config_args import ConfigError

    bad = tmp_path / "bad.py"
    bad.write_text("import ml_collections\n"
                   "def get_config(arg=None):\n"
                   "    return ml_collections.ConfigDict(dict(batch_size=0, total_steps=3))\n")
    with pytest.raises(ConfigError, match=r"^.*bad.py: batch_size=0 must be >= 1"):
        load_config(str(bad))
    for name in ("pecop", "usdl", "musdl", "core", "tsa", "cofinal", "gdlt"):
        load_config(f"{CONFIGS}/{name}.py")  # the shipped configs are within their ranges


def test_refused_pickles_are_one_line_naming_the_file(tmp_path, capsys):
    """Issue 17 item 7: PyTorch's refusal (whose text suggests weights_only=False) and a
    file that is no checkpoint become one line naming the file; no code runs."""
    torch = pytest.importorskip("torch")
    import os

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    torch.save({"w": Exploit()}, evil)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint" * 4)
    for path, reason in ((evil, "GLOBAL posix.system"), (junk, "")):
        assert main(["convert-weights", str(path), str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"aqa-jax convert-weights: error: {path}: refused to load (")
        assert "\n" not in err and "weights_only=False" not in err and reason in err
    assert not marker.exists()
