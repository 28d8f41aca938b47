"""Write (or submit) the SLURM batch script of a GPU run: one JAX process per GPU.

  python launch/slurm.py --nodes 1 --gpus_per_node 8 --partition gpu --time 24:00:00 \\
      --config configs/pecop.py:dataset=pd4t,task=gait,hardware=gpu_8 \\
      --workdir /shared/runs/pecop_gait > pecop_gait.sbatch     # prints the script
  python launch/slurm.py ... --submit                            # writes it and runs sbatch

The script ``srun``s ``launch/main.py`` as ``nodes x gpus_per_node`` tasks. It exports the
coordinator (``AQA_JAX_COORDINATOR``: the job's first node, at a port derived from the job id
as JAX itself would pick) and ``AQA_JAX_NUM_PROCESSES``; each task's id and GPU come from
SLURM (``SLURM_PROCID``, ``SLURM_LOCALID``), which
:func:`aqa_jax.train.sharding.distributed_args` reads. Every task sees all GPUs of its node
and JAX takes GPU ``SLURM_LOCALID`` (with ``--gpus-per-task=1`` binding instead, each task
sees one GPU and takes it). ``--workdir`` and the TFDS data dir must be on a filesystem every
node mounts (the checkpoints are written by every process). See docs/SCALING.md.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sbatch_script(
    *,
    config: str,
    workdir: str,
    nodes: int = 1,
    gpus_per_node: int = 8,
    cpus_per_task: int = 12,
    time: str = "24:00:00",
    job_name: str = "aqa-jax",
    partition: str = "",
    account: str = "",
    sbatch_lines: tuple[str, ...] = (),
    setup: tuple[str, ...] = (),
    python: str = "python",
    repo: str = str(REPO),
    hardware: str = "",
    overrides: tuple[str, ...] = (),
    port: int | None = None,
) -> str:
    """The batch script's text (see module docstring); ``overrides`` are ``key=value`` items
    passed as ``--set=key=value``."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"need at least one node and one GPU, got {nodes} x {gpus_per_node}")
    tasks = nodes * gpus_per_node
    head = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={nodes}",
        f"#SBATCH --ntasks-per-node={gpus_per_node}",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --cpus-per-task={cpus_per_task}",
        f"#SBATCH --time={time}",
        "#SBATCH --output=%x-%j.out",
    ]
    head += [f"#SBATCH --partition={partition}"] * bool(partition)
    head += [f"#SBATCH --account={account}"] * bool(account)
    head += [f"#SBATCH {line}" for line in sbatch_lines]
    port_expr = str(port) if port else "$((61440 + SLURM_JOB_ID % 4096))"
    command = [python, "launch/main.py", f"--config={config}", f"--workdir={workdir}"]
    command += [f"--hardware={hardware}"] * bool(hardware)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.path=value")
        command.append(f"--set={item}")
    body = [
        "set -euo pipefail",
        f"cd {shlex.quote(repo)}",
        *setup,
        "# the coordinator: process 0 on the job's first node (AQA_JAX_* are read by",
        "# aqa_jax.train.sharding.distributed_args; task ids and GPUs come from SLURM_PROCID/LOCALID)",
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f'export AQA_JAX_COORDINATOR="${{head_node}}:{port_expr}"',
        f"export AQA_JAX_NUM_PROCESSES={tasks}",
        f"mkdir -p {shlex.quote(workdir)}",
        'echo "job $SLURM_JOB_ID: $AQA_JAX_NUM_PROCESSES processes, coordinator $AQA_JAX_COORDINATOR"',
        "srun --kill-on-bad-exit=1 --cpu-bind=none \\",
        "    " + " \\\n    ".join(shlex.quote(c) for c in command),
    ]
    return "\n".join(head + [""] + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="file.py[:args], as launch/main.py takes")
    parser.add_argument("--workdir", required=True, help="run directory on a shared filesystem")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus_per_node", type=int, default=8)
    parser.add_argument("--cpus_per_task", type=int, default=12,
                        help="CPU cores per GPU process (grain decoding workers run in them)")
    parser.add_argument("--time", default="24:00:00")
    parser.add_argument("--job_name", default="aqa-jax")
    parser.add_argument("--partition", default="")
    parser.add_argument("--account", default="")
    parser.add_argument("--sbatch_line", action="append", default=[],
                        help="extra #SBATCH option, e.g. --sbatch_line=--exclusive (repeatable)")
    parser.add_argument("--setup", action="append", default=[],
                        help="shell line run before srun, e.g. 'source .venv/bin/activate' (repeatable)")
    parser.add_argument("--python", default="python")
    parser.add_argument("--repo", default=str(REPO), help="the checkout's path on the cluster")
    parser.add_argument("--hardware", default="", help="preset for launch/main.py --hardware")
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: from the job id)")
    parser.add_argument("--set", dest="override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as launch/main.py --set (repeatable)")
    parser.add_argument("--output", default="", help="write the script here instead of stdout")
    parser.add_argument("--submit", action="store_true", help="write the script and sbatch it")
    args = parser.parse_args(argv)
    text = sbatch_script(
        config=args.config, workdir=args.workdir, nodes=args.nodes,
        gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task, time=args.time,
        job_name=args.job_name, partition=args.partition, account=args.account,
        sbatch_lines=tuple(args.sbatch_line), setup=tuple(args.setup), python=args.python,
        repo=args.repo, hardware=args.hardware, overrides=tuple(args.override), port=args.port,
    )
    if not args.output and not args.submit:
        sys.stdout.write(text)
        return 0
    path = Path(args.output or f"{args.job_name}.sbatch")
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)
    if args.submit:
        return subprocess.run(["sbatch", str(path)]).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
