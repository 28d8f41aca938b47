"""Frozen-backbone fine-tuning with and without the feature cache (``precompute_features``).

    python benchmarks/finetune_probe.py            # synthetic_aqa/finger_tapping, 2 epochs each
    python benchmarks/finetune_probe.py --epochs 3 --dataset-config finger_tapping_small

Runs ``configs/usdl.py:dataset=synthetic_aqa,probe`` (the demo's fine-tune: Kinetics-400 I3D
frozen, USDL head trained, 4 clips of 16x64x64 per video, batch 8) twice, side by side in
this process, through ``aqa_jax.train.loop.train``: once recomputing the frozen backbone every
step (``precompute_features=False``), once on features computed once per video. Evaluation is
off, so the wall times compare training only; the first epoch includes compilation (and, for
the cache, the feature pass over the training split). Prints the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cache: bool, epochs: int, dataset_config: str, workdir: Path) -> dict:
    from aqa_jax.config_args import apply_overrides, load_config
    from aqa_jax.train.loop import train

    config = load_config(f"{REPO}/configs/usdl.py:dataset=synthetic_aqa,decoding=expectation,probe")
    apply_overrides(config, [
        "model.variant=deepmind", "batch_size=8", f"num_epochs={epochs}", "optimizer.lr=0.001",
        f"precompute_features={cache}", "eval_every_steps=0", "data.eval_split=",
        f"data.config={dataset_config}",
    ])
    start = time.perf_counter()
    summary = train(config, workdir)
    total = time.perf_counter() - start
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["split"] == "train"]
    per_epoch = len(steps) // epochs
    # wall time of the last epoch: 1 / clips_per_s summed over its steps
    last = sum(config.batch_size / r["clips_per_s"] for r in steps[-per_epoch:])
    return {"cache": cache, "total_s": total, "last_epoch_s": last, "steps": summary["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dataset-config", default="finger_tapping")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cache in (False, True):
            rows.append(run(cache, args.epochs, args.dataset_config, Path(tmp) / f"cache_{cache}"))
    print(f"\nUSDL probe on synthetic_aqa/{args.dataset_config}, {args.epochs} epochs, "
          f"{rows[0]['steps']} steps of batch 8 (4 clips of 16x64x64 per video)")
    print(f"{'backbone features':<26}{'total (s)':>10}{'last epoch (s)':>16}")
    for r in rows:
        name = "cached once per video" if r["cache"] else "recomputed every step"
        print(f"{name:<26}{r['total_s']:>10.1f}{r['last_epoch_s']:>16.2f}")
    print(f"last-epoch speed-up: {rows[0]['last_epoch_s'] / rows[1]['last_epoch_s']:.0f}x")


if __name__ == "__main__":
    main()
