"""Start N cooperating JAX processes on this machine (CPU collectives through gloo).

  python launch/local.py --num_processes 2 --devices_per_process 4 -- \
      launch/main.py --config configs/pecop.py:debug --workdir /tmp/run

Each process gets ``AQA_JAX_COORDINATOR``, ``AQA_JAX_NUM_PROCESSES`` and ``AQA_JAX_PROCESS_ID``
(read by :func:`aqa_jax.train.sharding.initialize_distributed`), ``JAX_PLATFORMS=cpu`` and
``JAX_NUM_CPU_DEVICES``. Output lines are prefixed with the process id. If one process fails,
the others are stopped and the exit status is the first failure's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pump(stream, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def launch(command: list[str], num_processes: int, devices_per_process: int,
           env: dict[str, str] | None = None) -> int:
    """Runs ``python command...`` as ``num_processes`` processes; returns the exit status."""
    address = f"127.0.0.1:{free_port()}"
    procs, pumps = [], []
    for pid in range(num_processes):
        proc_env = dict(os.environ if env is None else env)
        proc_env.update(
            AQA_JAX_COORDINATOR=address,
            AQA_JAX_NUM_PROCESSES=str(num_processes),
            AQA_JAX_PROCESS_ID=str(pid),
            JAX_PLATFORMS="cpu",
            JAX_NUM_CPU_DEVICES=str(devices_per_process),
        )
        proc = subprocess.Popen([sys.executable, *command], env=proc_env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        pump = threading.Thread(target=_pump, args=(proc.stdout, f"[{pid}] "), daemon=True)
        pump.start()
        procs.append(proc)
        pumps.append(pump)
    status = 0
    remaining = set(range(num_processes))
    while remaining:
        for pid in sorted(remaining):
            code = procs[pid].poll()
            if code is None:
                continue
            remaining.discard(pid)
            if code and not status:
                status = code
                for other in remaining:
                    procs[other].terminate()
        if remaining:
            try:
                procs[min(remaining)].wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
    for pump in pumps:
        pump.join(timeout=5)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=1)
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- script.py [args]: what each process runs with python")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the script to run after --")
    return launch(command, args.num_processes, args.devices_per_process)


if __name__ == "__main__":
    sys.exit(main())
