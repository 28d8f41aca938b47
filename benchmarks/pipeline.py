"""Input pipeline throughput: clips/s for decode + sample + augment, per grain worker.

Builds ``synthetic_aqa/finger_tapping_256`` (256x256 JPEG frames, like the real builders'
short side 256), then times PECoP's VSPP sampler (32 frames, ``pecop`` preset: 455x256
resize, random 224 crop, flip) with 0 (in-process), 1 and 2 worker processes, and says how
many workers keep a training step of a given duration fed. Clips are uint8, as the pipeline
yields them (the BGR order and ImageNet normalisation run inside the jitted step);
``--float`` normalises them on the host to float32 as the pipeline did before, for comparison.

    python benchmarks/pipeline.py [--clips 48] [--step-seconds S] [--batch 16] [--float]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time


class HostNormalized:
    """A sampler whose clips are normalised to float32 on the host (the pipeline before uint8)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, record, rng):
        from aqa_jax.data.transforms import normalize_clip

        example = self.inner(record, rng)
        example["clip"] = normalize_clip(example["clip"], self.inner.preset)
        return example


def measure(source, workers: int, clips: int, batch: int, host_float: bool = False) -> float:
    from aqa_jax.data.pipeline import VSPPSampler, make_dataset

    sampler = VSPPSampler(fr=1, preset="pecop")
    ds = make_dataset(source, HostNormalized(sampler) if host_float else sampler, batch_size=batch,
                      train=True, seed=0, shard_index=0, shard_count=1, worker_count=workers)
    it = iter(ds)
    next(it)  # start-up (worker spawn, first decode) is not throughput
    start = time.perf_counter()
    n = 0
    while n < clips:
        n += len(next(it)["speed"])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--step-seconds", type=float, nargs="+", default=[0.35, 2.0],
                        help="training-step times (for --train-batch clips) to feed")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "aqa_bench_data"))
    parser.add_argument("--float", action="store_true",
                        help="normalise clips to float32 on the host (the pipeline before uint8)")
    parser.add_argument("--out", default="bench_out/pipeline.json")
    args = parser.parse_args()

    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
    from aqa_jax.data.registry import build, data_source

    build("synthetic_aqa", "finger_tapping_256", data_dir=args.data_dir)
    source = data_source("synthetic_aqa", "finger_tapping_256", "train", data_dir=args.data_dir)
    rates = {w: measure(source, w, args.clips, args.batch, args.float) for w in args.workers}
    per_worker = rates.get(0) or next(iter(rates.values()))
    dtype, itemsize = ("float32", 4) if args.float else ("uint8", 1)
    print(f"\nVSPP clips (32x224x224, pecop preset, {dtype}: "
          f"{args.batch * 32 * 224 * 224 * 3 * itemsize / 1e6:.0f} MB a batch of {args.batch}) on "
          f"{os.cpu_count()} CPU cores, python {sys.version.split()[0]}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'workers':>8} {'clips/s':>9}")
    for w, r in rates.items():
        print(f"{w:>8} {r:9.2f}")
    print(f"\nworkers needed at {per_worker:.1f} clips/s per worker:")
    print(f"{'step s':>8} {'batch':>6} {'clips/s needed':>15} {'workers':>8}")
    needs = {}
    for step in args.step_seconds:
        need = args.train_batch / step
        needs[step] = math.ceil(need / per_worker)
        print(f"{step:8.2f} {args.train_batch:6d} {need:15.1f} {needs[step]:8d}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"dtype": dtype, "clips_per_s": rates, "workers_needed": needs,
                   "load_average": os.getloadavg()}, f, indent=2)


if __name__ == "__main__":
    main()
