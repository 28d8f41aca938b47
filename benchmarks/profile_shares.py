"""Where a training step's time goes, read from a ``profile_steps`` trace.

``aqa-jax pretrain ... --set "profile_steps=(6, 10)"`` writes a Perfetto trace
(``<workdir>/tensorboard/plugins/profile/<time>/*.trace.json.gz``, :mod:`aqa_jax.train.profiling`).
This script reads it and prints, for the traced steps:

- the wall time per step (from the first ``train`` step annotation's start to the end of the
  last XLA work);
- the host's main thread: time inside ``input`` (waiting for the next batch and putting it on
  the device) and the rest of the ``train`` annotation (dispatch);
- the XLA executable's work, summed over its executor threads and grouped by kind
  (convolution, YNNPACK/oneDNN fusions, elementwise fusions, reductions, copies, ...),
  as CPU-seconds per step and as a share of the step's wall time x the cores;
- the input pipeline's Python work on other threads (grain's read threads), by function.

    python benchmarks/profile_shares.py RUN_WORKDIR_OR_TRACE [--top 12]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

XLA_THREAD = re.compile(r"XLAPjRtCpuClient|XLAEigen|tf_pjrt|XLA")
_KINDS = (
    ("YNNPACK/oneDNN fusions (convs as 2-D convs, dots)", re.compile(r"ynn|onednn|xnn", re.I)),
    ("loops (while: e.g. the adapters' kernel-gradient scan)", re.compile(r"^while", re.I)),
    ("copies and transposes", re.compile(r"^(copy|transpose)", re.I)),
    ("reductions", re.compile(r"^reduce", re.I)),
    ("convolutions (Eigen)", re.compile(r"^convolution", re.I)),
)
OTHER = "other fusions (elementwise, slicing, concatenation: BN, ReLU, pools, adapters)"
_BOOKKEEPING = re.compile(r"^(end: |ThreadpoolListener|ThunkExecutor|Wait|Handle |CommonPjRt|"
                          r"AllocateOutput|ParseArguments|PythonRefManager|PjitFunction|"
                          r"SlinkyThreadPool)")
# Python frames of threads that only wait (queues, selectors, conditions).
_WAITING = re.compile(r"(queues|connection|selectors|threading)\.py")


def find_trace(path: Path) -> Path:
    if path.is_file():
        return path
    traces = sorted(path.glob("**/plugins/profile/*/*.trace.json.gz"))
    if not traces:
        sys.exit(f"profile_shares.py: no *.trace.json.gz under {path} (run with profile_steps)")
    return traces[-1]


def kind_of(name: str) -> str:
    for kind, pattern in _KINDS:
        if pattern.search(name):
            return kind
    return OTHER


def shares(events: list[dict[str, Any]]) -> dict[str, Any]:
    threads = {(e.get("pid"), e.get("tid")): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    spans = [e for e in events if e.get("ph") == "X"]
    steps = sorted((e for e in spans if e.get("name") == "train"), key=lambda e: e["ts"])
    if not steps:
        raise ValueError("the trace has no 'train' step annotations")
    main = (steps[0].get("pid"), steps[0].get("tid"))
    start = steps[0]["ts"]
    xla = [e for e in spans if XLA_THREAD.search(threads.get((e.get("pid"), e.get("tid")), ""))
           and e["ts"] >= start and not _BOOKKEEPING.match(e["name"])]
    end = max([e["ts"] + e["dur"] for e in xla] + [steps[-1]["ts"] + steps[-1]["dur"]])
    n = len(steps)
    wall = (end - start) / 1e6 / n
    inputs = sum(e["dur"] for e in spans if e.get("name") == "input"
                 and (e.get("pid"), e.get("tid")) == main and e["ts"] >= start) / 1e6 / n
    dispatch = sum(e["dur"] for e in steps) / 1e6 / n - inputs
    by_kind: collections.Counter[str] = collections.Counter()
    for e in xla:
        by_kind[kind_of(e["name"])] += e["dur"] / 1e6 / n
    xla_threads = {(e.get("pid"), e.get("tid")) for e in xla}
    pipeline: collections.Counter[str] = collections.Counter()
    for e in spans:
        key = (e.get("pid"), e.get("tid"))
        if (key != main and key not in xla_threads and e["ts"] >= start and e["name"].startswith("$")
                and not _WAITING.search(e["name"])):
            pipeline[e["name"][1:]] += e["dur"] / 1e6 / n
    return {"steps": n, "wall_s": wall, "input_s": inputs, "dispatch_s": dispatch,
            "xla_cpu_s": dict(by_kind), "xla_threads": len(xla_threads),
            "pipeline_cpu_s": dict(pipeline)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", type=Path, help="a run's workdir or a .trace.json.gz")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)),
                   help="the cores the run had (default: this process's)")
    a = p.parse_args(argv)
    trace = find_trace(a.path)
    events = json.loads(gzip.decompress(trace.read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    s = shares(events)
    wall, cores = s["wall_s"], a.cores
    print(f"{trace}\n{s['steps']} steps, {wall:.3f} s wall per step\n")
    print("| stage | s per step | share of the step's wall time |\n|---|---|---|")
    print(f"| host: waiting for input (next batch + transfer) | {s['input_s']:.3f} | "
          f"{s['input_s'] / wall:.1%} |")
    print(f"| host: dispatch and the rest of the loop | {s['dispatch_s']:.3f} | "
          f"{s['dispatch_s'] / wall:.1%} |")
    total_xla = sum(s["xla_cpu_s"].values())
    print(f"| XLA step, all ops (CPU-s on {s['xla_threads']} threads) | {total_xla:.3f} | "
          f"{total_xla / (wall * cores):.1%} of {cores} cores |")
    for kind, sec in sorted(s["xla_cpu_s"].items(), key=lambda kv: -kv[1]):
        print(f"| - {kind} | {sec:.3f} | {sec / (wall * cores):.1%} ({sec / total_xla:.0%} of XLA) |")
    if s["pipeline_cpu_s"]:
        top = sorted(s["pipeline_cpu_s"].items(), key=lambda kv: -kv[1])[: a.top]
        print("\ninput pipeline threads, Python functions (inclusive s per step, waits left out; "
              "nested calls overlap):")
        for name, sec in top:
            print(f"  {sec:8.3f}  {name}")


if __name__ == "__main__":
    main()
