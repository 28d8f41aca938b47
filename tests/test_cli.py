"""The ``aqa-jax`` command: clear one-line errors, and the demo end to end (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aqa_jax.cli import main
from aqa_jax.config_args import load_config, parse_arg

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


def test_config_args():
    cfg = parse_arg("variant=pecop,zero_init,reduction=8", variant="deepmind",
                    zero_init=False, reduction=4)
    assert (cfg.variant, cfg.zero_init, cfg.reduction) == ("pecop", True, 8)
    with pytest.raises(ValueError, match="allowed"):
        parse_arg("varient=pecop", variant="deepmind")
    config = load_config(f"{CONFIGS}/i3d.py:variant=piergiaj,adapters=Mixed_4b+Mixed_5c")
    assert config.model.variant == "piergiaj"
    assert tuple(config.model.adapter_blocks) == ("Mixed_4b", "Mixed_5c")


@pytest.mark.slow
def test_demo_pretrains_finetunes_and_scores_the_synthetic_test_split_well(tmp_path):
    out = subprocess.run([sys.executable, "-m", "aqa_jax.cli", "demo", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, check=True, timeout=900).stdout
    assert "1,109,068" in out  # the adapters, pecop_i3d.md §1
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    for run in ("USDL ← Kinetics-400", "USDL ← PECoP"):
        assert summary[run]["test"]["srcc"] >= 0.8, summary[run]
    assert summary["adapter_mb"] == pytest.approx(4.44, abs=0.01)
    for run in ("usdl_kinetics", "usdl_pecop"):
        assert (tmp_path / run / "scatter_test.png").is_file()
        assert (tmp_path / run / "learning_curve.png").is_file()
