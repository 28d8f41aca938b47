"""Start ``launch/main.py`` on every worker of a Cloud TPU VM slice, in one command.

  python launch/tpu_pod.py --tpu my-v5e-16 --zone us-west4-a --bucket gs://my-bucket \\
      --run pecop_gait --config configs/pecop.py:dataset=pd4t,task=gait,hardware=tpu_v5e_16 \\
      --dry-run                       # print the gcloud commands; drop --dry-run to run them

Steps, each one ``gcloud compute tpus tpu-vm ssh NAME --zone Z --worker=all --command ...``
(every worker at once):

1. **code**: ``--sync git`` clones ``--repo`` on each worker and checks out ``--ref`` (default:
   this checkout's HEAD commit, which must be pushed); ``--sync scp`` packs ``--ref`` with
   ``git archive`` here and copies it to every worker (``tpu-vm scp --worker=all``);
   ``--sync none`` keeps what the workers have.
2. **setup** (skip with ``--no-setup``): a venv (made by ``uv`` with Python
   ``--python_version``, 3.12 by default, whatever the image's ``python3``) with this package
   and ``jax[tpu]``, and the bucket mounted with gcsfuse at ``~/gcs/<bucket>`` on every worker
   (uv and gcsfuse are installed if missing).
   The run's workdir is ``~/gcs/<bucket>/runs/<run>``: a path that is the same shared
   directory on every worker, as orbax's multi-host checkpoints need; the TFDS data is read
   from ``~/gcs/<bucket>/tensorflow_datasets`` (``--data_dir`` to change), built beforehand
   with ``aqa-jax build-data`` / ``tfds build`` and copied there (``gsutil -m rsync -r``).
3. **run**: ``AQA_JAX_DISTRIBUTED=auto python launch/main.py ...`` on all workers: each calls
   ``jax.distributed.initialize()`` without arguments and JAX finds the slice's coordinator,
   process count and id from the TPU VM metadata. ``--detach`` leaves it running under
   ``nohup`` (log in ``~/<run>.log`` on each worker) so the ssh sessions can end.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REMOTE_DIR = "~/aqa_jax"
VENV = "~/aqa_jax_venv"

GCSFUSE_INSTALL = (
    "command -v gcsfuse >/dev/null || { "
    "echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] "
    "https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main\" "
    "| sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && "
    "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg "
    "| sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null && "
    "sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse; }"
)


def bucket_name(bucket: str) -> str:
    """``gs://name[/...]`` or ``name`` → ``name``."""
    name = bucket.removeprefix("gs://").split("/", 1)[0]
    if not name:
        raise ValueError(f"--bucket {bucket!r}: give gs://BUCKET")
    return name


def mount_point(bucket: str) -> str:
    return f"~/gcs/{bucket_name(bucket)}"


def _ssh(args: argparse.Namespace, command: str) -> list[str]:
    out = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, f"--zone={args.zone}",
           "--worker=all"]
    if args.project:
        out.append(f"--project={args.project}")
    return out + [f"--command={command}"]


def _home(path: str) -> str:
    """A path for the remote shell: ``~/x`` → ``"$HOME"/x`` (expanded there, quoted safely)."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def build_commands(args: argparse.Namespace) -> list[list[str]]:
    """The commands the launch runs, in order (pure: nothing is executed)."""
    commands: list[list[str]] = []
    code = _home(REMOTE_DIR)
    if args.sync == "git":
        if not args.repo:
            raise ValueError("--sync git needs --repo (the URL the workers clone)")
        ref = shlex.quote(args.ref)
        commands.append(_ssh(args, (
            f"set -e; [ -d {code}/.git ] || git clone --quiet {shlex.quote(args.repo)} {code}; "
            f"cd {code} && git fetch --quiet origin && git checkout --quiet --detach {ref}")))
    elif args.sync == "scp":
        archive = f"/tmp/aqa_jax-{args.ref[:12]}.tar.gz"
        commands.append(["git", "-C", str(args.local_repo), "archive", "--format=tar.gz",
                         f"--output={archive}", args.ref])
        scp = ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{args.tpu}:aqa_jax.tar.gz",
               f"--zone={args.zone}", "--worker=all"]
        if args.project:
            scp.append(f"--project={args.project}")
        commands.append(scp)
        commands.append(_ssh(args, (
            f"set -e; rm -rf {code} && mkdir -p {code} && tar -xzf ~/aqa_jax.tar.gz -C {code}")))
    elif args.sync != "none":
        raise ValueError(f"--sync {args.sync!r}: use git, scp or none")
    mount = _home(mount_point(args.bucket))
    if args.setup:
        venv = _home(VENV)
        commands.append(_ssh(args, (
            f"set -e; {GCSFUSE_INSTALL}; mkdir -p {mount}; "
            f"mountpoint -q {mount} || gcsfuse --implicit-dirs {shlex.quote(bucket_name(args.bucket))} {mount}; "
            # uv brings its own Python: the TPU VM images' python3 may be older than 3.11
            f"command -v uv >/dev/null || [ -x ~/.local/bin/uv ] || "
            f"curl -LsSf https://astral.sh/uv/install.sh | sh; export PATH=~/.local/bin:$PATH; "
            f"[ -x {venv}/bin/python ] || uv venv --quiet --python {shlex.quote(args.python_version)} {venv}; "
            f"uv pip install --quiet --python {venv}/bin/python -e {code} 'jax[tpu]'")))
    workdir = f"{mount_point(args.bucket)}/runs/{args.run}"
    main = [f"{_home(VENV)}/bin/python", "launch/main.py", f"--config={shlex.quote(args.config)}",
            f"--workdir={_home(workdir)}"]
    if args.hardware:
        main.append(f"--hardware={shlex.quote(args.hardware)}")
    data_dir = args.data_dir if args.data_dir is not None else f"{mount_point(args.bucket)}/tensorflow_datasets"
    if data_dir:
        main.append(f"--set=data.data_dir={_home(data_dir)}")
    for item in args.override:
        if "=" not in item:
            raise ValueError(f"--set {item!r} must look like key.path=value")
        main.append(shlex.quote(f"--set={item}"))
    run = "AQA_JAX_DISTRIBUTED=auto " + " ".join(main)
    if args.detach:
        run = f"nohup env {run} > {_home(f'~/{args.run}.log')} 2>&1 < /dev/null &"
    commands.append(_ssh(args, f"cd {code} && {run}"))
    return commands


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tpu", required=True, help="TPU VM (slice) name")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--project", default="")
    parser.add_argument("--bucket", required=True, help="gs://BUCKET holding runs/ and tensorflow_datasets/")
    parser.add_argument("--run", required=True, help="run name: workdir gs://BUCKET/runs/RUN")
    parser.add_argument("--config", required=True, help="file.py[:args], as launch/main.py takes")
    parser.add_argument("--hardware", default="", help="preset for launch/main.py --hardware")
    parser.add_argument("--data_dir", default=None,
                        help="TFDS data dir on the workers (default ~/gcs/BUCKET/tensorflow_datasets; '' = the config's)")
    parser.add_argument("--set", dest="override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as launch/main.py --set (repeatable)")
    parser.add_argument("--sync", default="git", choices=("git", "scp", "none"))
    parser.add_argument("--repo", default="", help="git URL the workers clone (--sync git; default: origin)")
    parser.add_argument("--ref", default="", help="commit/branch to run (default: this checkout's HEAD)")
    parser.add_argument("--setup", action=argparse.BooleanOptionalAction, default=True,
                        help="install the venv and mount the bucket (first launch on a slice)")
    parser.add_argument("--python_version", default="3.12", help="the workers' venv Python (uv)")
    parser.add_argument("--detach", action="store_true", help="run under nohup; logs in ~/RUN.log")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="print the commands instead of running them")
    args = parser.parse_args(argv)
    args.local_repo = REPO
    if not args.ref:
        args.ref = _git(["rev-parse", "HEAD"]) or "HEAD"
    if args.sync == "git" and not args.repo:
        args.repo = _git(["remote", "get-url", "origin"])
    return args


def _git(cmd: list[str]) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    commands = build_commands(args)
    for command in commands:
        print(shlex.join(command), flush=True)
        if not args.dry_run:
            status = subprocess.run(command).returncode
            if status:
                print(f"failed ({status}): {shlex.join(command)}", file=sys.stderr)
                return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
