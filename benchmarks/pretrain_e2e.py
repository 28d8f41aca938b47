"""PECoP pretraining end to end: the official PyTorch loop vs ``aqa-jax pretrain``, same videos.

Both sides train the VSPP pretext task (I3D with 3D-Adapters, speed and segment heads, SGD lr
0.01 momentum 0.9 wd 1e-4, CE(speed) + CE(segment)) from the same stored frames, with the same
batch and clip shape, on the same pinned cores, and the table gives what a user waits for:
clips/s of the whole loop (decoding, sampling, augmenting, the step), the step time, peak RSS,
and the input pipeline's clips/s alone (its data iterator without a step) against what the
training loop consumed.

    python benchmarks/pretrain_e2e.py                     # B=4, 32x224x224, 3 warm-up + 20 steps
    python benchmarks/pretrain_e2e.py --quick             # B=1, 16 frames, 1 + 2 steps (minutes)
    python benchmarks/pretrain_e2e.py --workers 2 --regimes adapters --batch 2

- **Data**: ``synthetic_aqa/finger_tapping_256`` (16 training videos of 96 frames at 256x256,
  JPEG). The official side reads the very same JPEG bytes, written out as PECoP's frame folders
  (``<folder>/<id>/img_00001.jpg``...) with a training list ``<id> 0 <num_frames> <folder>``.
- **Official side** (benchmarks/pecop_official.py): ``PECoP_SSL`` (``cv2.imread`` of every
  frame, BGR kept; VSPP rate/segment/start from Python's ``random``; the list x20), train.py's
  torchvideotransforms ``Compose`` (flip, ``Resize((455, 256))`` = 455 high x 256 wide with cv2
  nearest, ``RandomCrop(224)``, ``ClipToTensor``, ImageNet ``Normalize``), re-implemented
  because torchvideotransforms is not on PyPI (see that module); ``DataLoader(batch_size=B,
  shuffle=True, num_workers=W, pin_memory=<CUDA present>)``; ``VSPP`` = hassony2-layout I3D
  (tests/torch_reference/i3d.py) + ``Dropout(0.5)`` + ``logits_p`` (5 speeds) / ``logits_s``
  (4 segments); ``model.train()``; the I3D starts from seeded random weights (no Kinetics file
  is needed for timing).
- **JAX side**: ``python -m aqa_jax.cli pretrain --config configs/pecop.py:dataset=synthetic_aqa,
  task=finger_tapping,variant=V --set data.config=finger_tapping_256 --set batch_size=B --set
  total_steps=WARMUP+N --set data.worker_count=W --set init_from=none --set data.eval_split=''
  ...`` (checkpoints at step 0 and at the end only, no evaluation). Its clips/s comes from the
  arrival times of the records of ``<workdir>/metrics.jsonl`` (this script polls the file), from
  the record of the last warm-up step to the last one; the loop's own ``clips_per_s`` fields
  are kept in the JSON for comparison. ``--log-every 1`` (the default) has the loop fetch its
  metrics after every step; for an asynchronous loop give it room, e.g. ``--log-every 5
  --warmup 5 --steps 20``. The case runs with ``JAX_NUM_CPU_DEVICES=1`` (one CPU device, as a
  plain command-line run) and the default persistent compilation cache.
- **Regimes**: ``adapters`` (PECoP: only the adapters and the heads train, BatchNorm on batch
  statistics with its scale/bias frozen; JAX ``variant=pecop``) and ``full`` (everything trains,
  no adapters: the Dom-S ablation; JAX ``variant=dom_s``).
- **Conditions**: every case runs in its own subprocess pinned (``os.sched_setaffinity``,
  inherited by DataLoader and grain workers) to ``--cores`` (default: every core this process
  may use), torch with ``set_num_threads(len(cores))``. Workers: each side and regime sweeps
  ``--sweep`` worker counts with a short run (``--sweep-warmup`` + ``--sweep-steps``) and keeps
  the fastest; ``--workers`` fixes them. Peak RSS: ``getrusage`` of the case process
  (``RUSAGE_SELF``) and of its reaped children (``RUSAGE_CHILDREN``: the largest single
  worker), reported as ``main + W x worker``: an upper bound of the sum, as a forked worker's
  RSS counts the pages it shares with its parent; and the peak, sampled every 0.25 s, of the
  summed proportional set size (PSS, ``/proc/PID/smaps_rollup``) of the case process and its
  descendants, which counts each shared page once.
- **Pipeline alone**: each side's training iterator (the DataLoader; ``Experiment.dataset`` of
  the same config) with the chosen worker count: 9 batches untimed (start-up, and whatever the
  prefetch buffers hold), then ``--pipeline-batches`` timed.
  ``pipe/loop`` = that rate over the training loop's clips/s: >= 2 means the pipeline is not
  what the loop waits for.

Output: a markdown table on stdout, progress on stderr, everything in ``--out`` (JSON). Run it
on an otherwise idle machine: both sides share the pinned cores with nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = "synthetic_aqa"
BUILDER_CONFIG = "finger_tapping_256"
TASK = "finger_tapping"
FOLDER = "finger_tapping"
VARIANTS = {"adapters": "pecop", "full": "dom_s"}


def log(message: str) -> None:
    print(f"[pretrain_e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- data --------------------------------------------------------------------------------------

def prepare_data(data_dir: Path) -> Path:
    """Builds the stored videos (once) and writes PECoP's frame folders and list beside them;
    returns the list file (its folder is the official ``rgb_prefix``)."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from aqa_jax.data.registry import build, data_source
    from pecop_official import write_frame_folders

    build(CONFIG, BUILDER_CONFIG, data_dir=str(data_dir))
    source = data_source(CONFIG, BUILDER_CONFIG, "train", data_dir=str(data_dir))
    root = data_dir / "pecop_frames" / BUILDER_CONFIG
    list_path = root / "train.list"
    written = write_frame_folders([source[i] for i in range(len(source))], root, FOLDER, list_path)
    log(f"{len(source)} training videos in {data_dir}; PECoP frame folders in {root} "
        f"({written} frames written now)")
    return list_path


# --- case processes ----------------------------------------------------------------------------

def _pin(cores: list[int]) -> None:
    os.sched_setaffinity(0, cores)


def _rusage() -> dict[str, float]:
    """Peak RSS in MB of this process and of the largest of its reaped children (Linux: KB)."""
    return {"rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


DRAIN = 8  # untimed batches before the pipeline-alone timing (see time_iterator)


def time_iterator(it: Any, batch: int, batches: int) -> float:
    """Clips/s of a data iterator alone: 1 + :data:`DRAIN` batches untimed (start-up, and what
    the prefetch buffers made meanwhile: grain's 4 batches and 4 threads, the DataLoader's 2 per
    worker), then ``batches`` timed, when every batch waits on its production."""
    for _ in range(1 + DRAIN):
        next(it)
    tic = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - tic)


def torch_case(a: argparse.Namespace) -> dict[str, Any]:
    _pin(a.cores)
    import random

    import numpy as np
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    import pecop_official as official

    torch.set_num_threads(len(a.cores))
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    list_path = Path(a.list)
    dataset = official.PECoPSSL(list_path, list_path.parent, clip_len=a.clip_len, max_sr=5, fr=1,
                                max_segment=4, transforms_=official.official_transform())
    loader = torch.utils.data.DataLoader(dataset, batch_size=a.batch, shuffle=True,
                                         num_workers=a.workers_now,
                                         pin_memory=torch.cuda.is_available())
    it = iter(loader)
    result: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads()}
    if a.mode == "pipeline":
        result["clips_per_s"] = time_iterator(it, a.batch, a.pipeline_batches)
    else:
        from torch_reference.i3d import randomize_

        net = official.VSPPNet(adapters=a.regime == "adapters")
        randomize_(net.model, seed=a.seed)
        result["param_counts"] = official.make_trainable(net, a.regime)
        net.to(device)
        criterion = torch.nn.CrossEntropyLoss().to(device)
        optimizer = official.sgd(net)
        net.train()
        times, waits, losses = [], [], []
        for _ in range(a.warmup_now + a.steps_now):
            tic = time.perf_counter()
            rgb_clip, labels = next(it)
            got = time.perf_counter()
            losses.append(official.train_step(net, optimizer, criterion, rgb_clip, labels, device))
            toc = time.perf_counter()
            times.append(toc - tic)
            waits.append(got - tic)
        measured = times[a.warmup_now:]
        result.update(
            clips_per_s=a.batch * len(measured) / sum(measured),
            step_s=sum(measured) / len(measured),
            data_wait_s=sum(waits[a.warmup_now:]) / len(measured),
            warmup_s=sum(times[:a.warmup_now]),
            losses=losses,
        )
    del it, loader  # shuts the workers down, so RUSAGE_CHILDREN counts them
    import gc

    gc.collect()
    time.sleep(0.2)
    result.update(_rusage())
    return result


def jax_overrides(a: argparse.Namespace, workers: int, total_steps: int) -> list[str]:
    sets = [
        f"data.config={BUILDER_CONFIG}", f"batch_size={a.batch}", f"total_steps={total_steps}",
        f"data.worker_count={workers}", "init_from=none", "data.eval_split=''",
        f"log_every_steps={a.log_every}", f"checkpoint.every_steps={10**9}",
        f"vspp.clip_len={a.clip_len}", f"seed={a.seed}",
    ]
    return sets


def jax_spec(regime: str) -> str:
    return f"{REPO}/configs/pecop.py:dataset={CONFIG},task={TASK},variant={VARIANTS[regime]}"


def jax_case(a: argparse.Namespace) -> dict[str, Any]:
    _pin(a.cores)
    sys.path.insert(0, str(REPO))
    result: dict[str, Any] = {}
    if a.mode == "pipeline":
        from aqa_jax.config_args import load_config
        from aqa_jax.experiment import Experiment

        config = load_config(jax_spec(a.regime), jax_overrides(a, a.workers_now, 1))
        config.data.data_dir = str(a.data_dir)
        exp = Experiment.from_config(config, None)
        it = iter(exp.dataset(exp.train_source, train=True))
        result["clips_per_s"] = time_iterator(it, a.batch, a.pipeline_batches)
        del it
    else:
        from aqa_jax import cli

        argv = ["pretrain", "--config", jax_spec(a.regime), "--workdir", str(a.workdir),
                "--data-dir", str(a.data_dir)]
        for item in jax_overrides(a, a.workers_now, a.warmup_now + a.steps_now):
            argv += ["--set", item]
        code = cli.main(argv)
        if code:
            raise SystemExit(code)
        import jax

        result["device"] = str(jax.devices()[0].platform)
        summary = json.loads((Path(a.workdir) / "summary.json").read_text())
        result["param_counts"] = summary.get("param_counts")
    import gc

    gc.collect()
    time.sleep(0.2)
    result.update(_rusage())
    return result


# --- the orchestrator --------------------------------------------------------------------------

def _read_records(path: Path, arrivals: dict[int, float], records: dict[int, dict[str, Any]],
                  now: float) -> None:
    """Notes ``now`` as the arrival time of every training record new in ``path``."""
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if record.get("split") == "train" and record["step"] not in arrivals:
            arrivals[record["step"]] = now
            records[record["step"]] = record


def tree_pss_mb(pid: int) -> float:
    """Proportional set size, in MB, of ``pid`` and its descendants (each shared page counted
    once across them): what the case's processes hold together. 0 once it is gone."""
    total_kb, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total_kb += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (OSError, StopIteration, ValueError):  # gone meanwhile, or no smaps_rollup
            continue
    return total_kb / 1024


def run_case(a: argparse.Namespace, side: str, regime: str, mode: str, workers: int,
             warmup: int, steps: int, scratch: Path) -> dict[str, Any]:
    """One case in its own process; for a JAX training case, its JSONL is timed from here."""
    tag = f"{side}_{regime}_{mode}_w{workers}_{warmup}+{steps}"
    out = scratch / f"{tag}.json"
    workdir = scratch / f"{tag}_workdir"
    shutil.rmtree(workdir, ignore_errors=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_case", side, "--_mode", mode,
           "--_regime", regime, "--_workers", str(workers), "--_warmup", str(warmup),
           "--_steps", str(steps), "--_out", str(out), "--_workdir", str(workdir),
           "--_list", str(a.list), "--data-dir", str(a.data_dir), "--batch", str(a.batch),
           "--clip-len", str(a.clip_len), "--cores", ",".join(map(str, a.cores)),
           "--pipeline-batches", str(a.pipeline_batches), "--log-every", str(a.log_every),
           "--seed", str(a.seed)]
    log(f"{side} {regime} {mode}: workers={workers}, {warmup} warm-up + {steps} steps ...")
    logfile = scratch / f"{tag}.log"
    arrivals: dict[int, float] = {}
    records: dict[int, dict[str, Any]] = {}
    jsonl = workdir / "metrics.jsonl"
    tic = time.perf_counter()
    with logfile.open("w") as f:
        env = dict(os.environ, JAX_NUM_CPU_DEVICES="1")  # one CPU device, as a plain CLI run
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        peak_pss, polls = 0.0, 0
        while proc.poll() is None:
            if side == "jax" and mode == "train":
                _read_records(jsonl, arrivals, records, time.perf_counter())
            if polls % 5 == 0:  # every 0.25 s
                peak_pss = max(peak_pss, tree_pss_mb(proc.pid))
            polls += 1
            time.sleep(0.05)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        tail = "".join(logfile.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"case {tag} failed (exit {proc.returncode}); log {logfile}:\n{tail}")
    result = json.loads(out.read_text())
    result.update(side=side, regime=regime, mode=mode, workers=workers, warmup=warmup,
                  steps=steps, wall_s=wall, peak_pss_mb=peak_pss)
    if side == "jax" and mode == "train":
        _read_records(jsonl, arrivals, records, time.perf_counter())
        steps_seen = sorted(arrivals)
        first = max((s for s in steps_seen if s <= warmup), default=None)
        last = steps_seen[-1] if steps_seen else None
        if first is None or last is None or last <= first:
            raise RuntimeError(f"case {tag}: metrics records at steps {steps_seen}, cannot time "
                               f"steps after the warm-up ({warmup}); log {logfile}")
        elapsed = arrivals[last] - arrivals[first]
        loop_rates = [records[s].get("clips_per_s") for s in steps_seen if s > first]
        result.update(clips_per_s=a.batch * (last - first) / elapsed,
                      step_s=elapsed / (last - first), timed_steps=[first, last],
                      loop_clips_per_s=[r for r in loop_rates if r is not None],
                      losses=[records[s].get("loss") for s in steps_seen])
        shutil.rmtree(workdir, ignore_errors=True)
    log(f"  -> {result.get('clips_per_s', float('nan')):.3f} clips/s, peak RSS "
        f"{result['rss_main_mb']:.0f} MB + worker {result['rss_worker_mb']:.0f} MB, peak PSS of "
        f"all {peak_pss:.0f} MB ({wall:.0f} s)")
    return result


def rss_text(row: dict[str, Any]) -> str:
    w = row["workers"]
    if not w:
        return f"{row['rss_main_mb']:.0f}"
    return f"{row['rss_main_mb']:.0f} + {w}x{row['rss_worker_mb']:.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| side | regime | workers | clips/s | step s | peak RSS MB (main + W x worker) "
             "| peak PSS MB (all) | pipeline alone clips/s | pipe/loop |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        pipe = r.get("pipeline_clips_per_s")
        ratio = f"{pipe / r['clips_per_s']:.1f}" if pipe else "-"
        lines.append(f"| {r['label']} | {r['regime']} | {r['workers']} | {r['clips_per_s']:.3f} | "
                     f"{r['step_s']:.2f} | {rss_text(r)} | {r['peak_pss_mb']:.0f} | "
                     f"{f'{pipe:.2f}' if pipe else '-'} | {ratio} |")
    return "\n".join(lines)


def orchestrate(a: argparse.Namespace) -> dict[str, Any]:
    a.data_dir.mkdir(parents=True, exist_ok=True)
    a.list = prepare_data(a.data_dir)
    scratch = Path(tempfile.mkdtemp(prefix="pretrain_e2e_"))
    sweeps: dict[str, Any] = {}
    best: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    pipelines: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        for side in a.sides:
            for regime in a.regimes:
                if a.workers is not None:
                    workers = a.workers
                elif a.sweep_once and best.get(side) is not None:
                    workers = best[side]  # the side's sweep on its first regime
                else:
                    trial = {w: run_case(a, side, regime, "train", w, a.sweep_warmup, a.sweep_steps,
                                         scratch) for w in a.sweep}
                    sweeps[f"{side}/{regime}"] = {w: r["clips_per_s"] for w, r in trial.items()}
                    workers = best[side] = max(trial, key=lambda w: trial[w]["clips_per_s"])
                    log(f"{side} {regime}: best of the sweep {sweeps[f'{side}/{regime}']}: "
                        f"{workers} workers")
                row = run_case(a, side, regime, "train", workers, a.warmup, a.steps, scratch)
                if a.pipeline_batches > 0:
                    key = (side, workers)
                    if key not in pipelines:
                        pipelines[key] = run_case(a, side, regime, "pipeline", workers, 0, 0, scratch)
                    row["pipeline_clips_per_s"] = pipelines[key]["clips_per_s"]
                    row["pipeline_rss_main_mb"] = pipelines[key]["rss_main_mb"]
                row["label"] = {"torch": "official (PyTorch)", "jax": "aqa-jax pretrain"}[side]
                rows.append(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"rows": rows, "sweeps": sweeps}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--clip-len", type=int, default=32, help="frames per clip (crop 224 always)")
    p.add_argument("--steps", type=int, default=20, help="measured steps after the warm-up")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader / grain workers for both sides (default: the sweep's best)")
    p.add_argument("--sweep", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sweep-steps", type=int, default=4)
    p.add_argument("--sweep-warmup", type=int, default=2)
    p.add_argument("--sweep-once", action="store_true",
                   help="sweep each side's workers on its first regime only; the others use its best")
    p.add_argument("--regimes", nargs="+", choices=sorted(VARIANTS), default=["adapters", "full"])
    p.add_argument("--sides", nargs="+", choices=["torch", "jax"], default=["torch", "jax"])
    p.add_argument("--pipeline-batches", type=int, default=10,
                   help="batches timed for the pipeline-alone rate (0: skip)")
    p.add_argument("--log-every", type=int, default=1,
                   help="JAX log_every_steps (its records time the steps)")
    p.add_argument("--cores", default=None,
                   help="comma-separated cores both sides are pinned to (default: all allowed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "aqa_bench_data")
    p.add_argument("--out", type=Path, default=REPO / "bench_out" / "pretrain_e2e.json")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: B=1, 16-frame clips, 1 warm-up + 2 steps, adapters, 0 workers, "
                        "4 pipeline batches")
    for name in ("case", "mode", "regime", "workers", "warmup", "steps", "out", "workdir", "list"):
        p.add_argument(f"--_{name}", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.cores = ([int(c) for c in a.cores.split(",")] if a.cores
               else sorted(os.sched_getaffinity(0)))
    if a.quick:
        a.batch, a.clip_len, a.steps, a.warmup = 1, 16, 2, 1
        a.regimes, a.pipeline_batches = ["adapters"], 4
        if a.workers is None:
            a.workers = 0
    if not a._case and a.log_every > 1 and (a.warmup % a.log_every or a.steps % a.log_every):
        p.error("--warmup and --steps must be multiples of --log-every (records time the steps)")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a._case:  # one case, in its own process
        a.workers_now, a.warmup_now, a.steps_now = int(a._workers), int(a._warmup), int(a._steps)
        a.mode, a.regime, a.workdir, a.list = a._mode, a._regime, a._workdir, a._list
        result = (torch_case if a._case == "torch" else jax_case)(a)
        Path(a._out).write_text(json.dumps(result))
        return
    log(f"B={a.batch}, {a.clip_len}x224x224 clips, {a.warmup} warm-up + {a.steps} steps, "
        f"cores {a.cores}, regimes {a.regimes}, sides {a.sides}, workers "
        f"{a.workers if a.workers is not None else f'sweep {a.sweep}'}")
    report = orchestrate(a)
    report["conditions"] = {
        "batch": a.batch, "clip": [a.clip_len, 224, 224], "warmup": a.warmup, "steps": a.steps,
        "cores": a.cores, "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "data": f"{CONFIG}/{BUILDER_CONFIG}", "quick": a.quick, "log_every": a.log_every,
        "sweep": None if a.workers is not None else
        {"workers": a.sweep, "warmup": a.sweep_warmup, "steps": a.sweep_steps},
        "peak_rss": "rss_main_mb: the case process (RUSAGE_SELF); rss_worker_mb: the largest of "
                    "its reaped children (RUSAGE_CHILDREN), i.e. one DataLoader/grain worker; "
                    "peak_pss_mb: the largest sum of PSS over the case's process tree, sampled "
                    "every 0.25 s",
    }
    print(f"\nPECoP pretraining end to end, B={a.batch}, {a.clip_len}x224x224 clips, "
          f"{len(a.cores)} pinned cores, {a.steps} steps after {a.warmup} warm-up:\n")
    print(table(report["rows"]))
    for r in report["rows"]:
        c = r.get("param_counts") or {}
        if c:
            print(f"  {r['label']}, {r['regime']}: {c.get('trainable', 0):,} of "
                  f"{c.get('total', 0):,} parameters trainable")
    for key, rates in report["sweeps"].items():
        print(f"  sweep {key}: " + ", ".join(f"{w} workers {r:.3f}" for w, r in rates.items())
              + " clips/s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    print(f"\n{a.out}")


if __name__ == "__main__":
    main()
