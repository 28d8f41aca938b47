"""The SLURM and TPU-pod launchers build the commands their docs promise (nothing is run:
no network, no cluster). Oracle: the documented gcloud/srun invocations, and bash's own parser
(``bash -n``) for every shell text the launchers produce."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "launch"))

import slurm  # noqa: E402
import tpu_pod  # noqa: E402

CONFIG = "configs/pecop.py:dataset=pd4t,task=gait,hardware=tpu_v5e_16"


def bash_syntax_ok(text: str) -> None:
    out = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert out.returncode == 0, out.stderr


def remote(command: list[str]) -> str:
    """The shell text a ``gcloud ... ssh --command=TEXT`` runs on every worker."""
    (flag,) = [a for a in command if a.startswith("--command=")]
    return flag.removeprefix("--command=")


def test_tpu_pod_git_sync_setup_and_run():
    args = tpu_pod.parse_args([
        "--tpu", "my-v5e", "--zone", "us-west4-a", "--project", "proj", "--bucket", "gs://bkt/ignored",
        "--run", "pecop_gait", "--config", CONFIG, "--repo", "https://example.com/aqa_jax.git",
        "--ref", "0123abcd", "--set", "optimizer.lr=0.02", "--dry-run"])
    sync, setup, run = tpu_pod.build_commands(args)
    for command in (sync, setup, run):
        assert command[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v5e",
                               "--zone=us-west4-a", "--worker=all"]
        assert "--project=proj" in command
        bash_syntax_ok(remote(command))
    assert "git clone --quiet https://example.com/aqa_jax.git" in remote(sync)
    assert remote(sync).endswith("git checkout --quiet --detach 0123abcd")
    assert 'gcsfuse --implicit-dirs bkt "$HOME"/gcs/bkt' in remote(setup)
    assert "uv venv --quiet --python 3.12" in remote(setup) and "'jax[tpu]'" in remote(setup)
    # the run: every worker, auto-detected jax.distributed, workdir on the mounted bucket
    words = shlex.split(remote(run).replace('"$HOME"', "HOME"))
    assert words[:3] == ["cd", "HOME/aqa_jax", "&&"]
    assert words[3] == "AQA_JAX_DISTRIBUTED=auto"
    assert words[4:6] == ["HOME/aqa_jax_venv/bin/python", "launch/main.py"]
    assert f"--config={CONFIG}" in words
    assert "--workdir=HOME/gcs/bkt/runs/pecop_gait" in words
    assert "--set=data.data_dir=HOME/gcs/bkt/tensorflow_datasets" in words
    assert "--set=optimizer.lr=0.02" in words


def test_tpu_pod_scp_sync_detached_without_setup():
    args = tpu_pod.parse_args([
        "--tpu", "v4-32", "--zone", "us-central2-b", "--bucket", "bkt", "--run", "r1",
        "--config", "configs/usdl.py:dataset=mtl_aqa", "--hardware", "tpu_v4_32", "--sync", "scp",
        "--ref", "feedbeefcafe0000", "--no-setup", "--detach", "--data_dir", "", "--dry-run"])
    archive, scp, unpack, run = tpu_pod.build_commands(args)
    assert archive[:2] == ["git", "-C"] and archive[3:] == [
        "archive", "--format=tar.gz", "--output=/tmp/aqa_jax-feedbeefcafe.tar.gz", "feedbeefcafe0000"]
    assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/aqa_jax-feedbeefcafe.tar.gz",
                   "v4-32:aqa_jax.tar.gz", "--zone=us-central2-b", "--worker=all"]
    assert "tar -xzf ~/aqa_jax.tar.gz" in remote(unpack)
    text = remote(run)
    bash_syntax_ok(text)
    assert "nohup env AQA_JAX_DISTRIBUTED=auto" in text and text.endswith("< /dev/null &")
    assert "--hardware=tpu_v4_32" in text and "data_dir" not in text  # '' keeps the config's


def test_tpu_pod_main_dry_run_prints_and_runs_nothing(capsys, monkeypatch):
    monkeypatch.setattr(tpu_pod.subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
    status = tpu_pod.main(["--tpu", "t", "--zone", "z", "--bucket", "gs://b", "--run", "r",
                           "--config", CONFIG, "--repo", "u", "--ref", "HEAD", "--dry-run"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert status == 0 and len(lines) == 3
    assert all(shlex.split(line)[0] == "gcloud" for line in lines)
    with pytest.raises(ValueError, match="gs://BUCKET"):
        tpu_pod.mount_point("gs://")


def test_slurm_script_one_process_per_gpu():
    text = slurm.sbatch_script(
        config=CONFIG, workdir="/shared/runs/x", nodes=2, gpus_per_node=8, partition="gpu",
        account="proj", sbatch_lines=("--exclusive",), setup=("source .venv/bin/activate",),
        python=".venv/bin/python", repo="/shared/aqa_jax", hardware="gpu_8",
        overrides=("optimizer.lr=0.02",))
    bash_syntax_ok(text)
    lines = text.splitlines()
    for directive in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu",
                      "--account=proj", "--exclusive"):
        assert f"#SBATCH {directive}" in lines
    assert "export AQA_JAX_NUM_PROCESSES=16" in lines
    assert 'export AQA_JAX_COORDINATOR="${head_node}:$((61440 + SLURM_JOB_ID % 4096))"' in lines
    assert lines.index("source .venv/bin/activate") < lines.index("srun --kill-on-bad-exit=1 --cpu-bind=none \\")
    srun = shlex.split(text[text.index("srun "):].replace("\\\n", " "))
    assert srun[3:] == [".venv/bin/python", "launch/main.py", f"--config={CONFIG}",
                        "--workdir=/shared/runs/x", "--hardware=gpu_8", "--set=optimizer.lr=0.02"]
    # what the script exports + what srun gives each task = the initialize() arguments
    from aqa_jax.train.sharding import distributed_args

    env = {"AQA_JAX_COORDINATOR": "gpu07:61441", "AQA_JAX_NUM_PROCESSES": "16", "SLURM_JOB_ID": "1",
           "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_NTASKS": "16", "SLURM_PROCID": "13",
           "SLURM_LOCALID": "5"}
    assert distributed_args(env).kwargs() == {"coordinator_address": "gpu07:61441", "num_processes": 16,
                                              "process_id": 13, "local_device_ids": [5]}


def test_slurm_cli_prints_or_writes(tmp_path, capsys):
    assert slurm.main(["--config", CONFIG, "--workdir", "/w", "--port", "5555"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash") and ':5555"' in out
    path = tmp_path / "job.sbatch"
    assert slurm.main(["--config", CONFIG, "--workdir", "/w", "--output", str(path)]) == 0
    assert path.read_text().startswith("#!/bin/bash")
    with pytest.raises(ValueError, match="key.path=value"):
        slurm.sbatch_script(config=CONFIG, workdir="/w", overrides=("oops",))
