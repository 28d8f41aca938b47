"""I3D FLOPs from XLA's cost analysis, and the throughput they imply on accelerators.

    python benchmarks/flops.py             # the tables of docs/SCALING.md (~3 min on 2 cores)
    python benchmarks/flops.py --quick     # 16x112x112 only, a few seconds per case

Counts ``compiled.cost_analysis()['flops']`` (XLA counts a multiply-add as 2 FLOPs) of:

- the forward pass of one clip (inference, BN running statistics) through the I3D up to its
  400-way logits, with and without PECoP's nine 3D-Adapters, at 16/32/64 x 224 x 224;
- one PECoP training step of one 32 x 224 x 224 clip (the VSPP network: I3D to AvgPool +
  speed/segment heads; BN on batch statistics; SGD), built by the training core exactly as
  ``aqa_jax.train.loop`` builds it, for the three trainable modes of ``configs/pecop.py``:
  ``adapters`` (PECoP), ``bn`` (HPT+BN) and ``full`` (Dom-S). Gradients are taken only with
  respect to the trainable parameters, so frozen weight gradients are not computed.

Nothing runs on a device: inputs are abstract (``ShapeDtypeStruct``) and each case is only
lowered and compiled. The model uses the accelerator code path (``conv_impl='xla'``, one 3-D
convolution per layer; ``adapter_conv='lax'``, XLA's grouped convolution), whose FLOPs are
the network's arithmetic; ``--cpu-path`` counts the CPU decomposition instead. The same
counts hold in bfloat16 (the dtype does not change the arithmetic).

Then, for each accelerator of :data:`aqa_jax.train.hardware.ACCELERATORS` and a range of
model-FLOPs utilisation (MFU), the training clips/s per chip ``= MFU x peak / FLOPs per clip``
and the wall time of the PECoP recipe (8 epochs over the training list x 20, batch 16,
32 x 224 x 224 clips) per dataset on the hardware presets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Training-list sizes (from the PECoP paper and the datasets' official splits): PD4T official
# train splits; MTL-AQA train_split_0; FineDiving train_split; JIGSAWS 4-fold CV training folds
# (39/28/36 trials minus a test fold of ~10/7/9).
TRAIN_VIDEOS = {
    "PD4T gait": 310, "PD4T finger tapping": 590, "PD4T hand movement": 621,
    "PD4T leg agility": 627, "MTL-AQA": 1059, "FineDiving": 2251,
    "JIGSAWS suturing (fold)": 29, "JIGSAWS needle passing (fold)": 21,
    "JIGSAWS knot tying (fold)": 27,
}
EPOCHS, REPEAT, BATCH = 8, 20, 16
MFU_RANGE = (0.15, 0.30, 0.45)
# Measured on the 2-core development CPU (docs/PERFORMANCE.md, benchmarks/i3d_step.py):
# adapters-only training step of one 32x224x224 clip, fp32.
CPU_S_PER_CLIP = 1.897


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))


def forward_flops(frames: int, size: int, adapters: bool, cpu_path: bool) -> float:
    import jax
    import jax.numpy as jnp

    from aqa_jax.models.i3d import MIXED_BLOCKS, InceptionI3d

    impl = {} if cpu_path else dict(conv_impl="xla", adapter_conv="lax")
    model = InceptionI3d(variant="pecop", adapter_blocks=tuple(MIXED_BLOCKS) if adapters else (), **impl)
    x = jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
    fn = jax.jit(lambda v, x: model.apply(v, x)["logits"])
    return _flops(fn.lower(variables, x).compile())


def train_step_flops(mode: str, frames: int, size: int, cpu_path: bool) -> tuple[float, int]:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from aqa_jax.config_args import load_config
    from aqa_jax.methods import get_method
    from aqa_jax.train.optimizer import make_optimizer
    from aqa_jax.train.partition import split_trainable
    from aqa_jax.train.state import TrainState, abstract_variables
    from aqa_jax.train.step import make_train_step

    variant = {"adapters": "pecop", "bn": "hpt_bn", "full": "dom_s"}[mode]
    config = load_config(f"{REPO}/configs/pecop.py:variant={variant}")
    if not cpu_path:
        config.model.conv_impl, config.model.adapter_conv = "xla", "lax"
    method = get_method("vspp")(config)
    model = method.build_model()
    batch = {"clip": jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.float32),
             "speed": jax.ShapeDtypeStruct((1,), jnp.int32),
             "segment": jax.ShapeDtypeStruct((1,), jnp.int32)}
    example = {k: np.zeros(v.shape, v.dtype) for k, v in batch.items()}
    boxed = abstract_variables(model, example)
    params = nn.unbox(boxed["params"])
    tx, schedule = make_optimizer(config.optimizer, params, config.trainable,
                                  steps_per_epoch=100, total_steps=800)
    state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                       batch_stats=nn.unbox(boxed["batch_stats"]),
                       opt_state=jax.eval_shape(tx.init, params))
    step = jax.jit(make_train_step(method, model, tx, schedule, trainable=config.trainable,
                                   bn_policy=config.bn_policy))
    trainable = sum(int(np.prod(x.shape)) for x in
                    jax.tree.leaves(split_trainable(params, config.trainable)[0]))
    return _flops(step.lower(state, batch).compile()), trainable


def estimates(step_gflops: float) -> dict:
    """Clips/s per chip over the MFU range, the compute time of one recipe step on each slice,
    and the PECoP recipe's compute-bound minutes per dataset (see module docstring)."""
    from aqa_jax.train.hardware import ACCELERATORS, HARDWARE

    rows = []
    for key, acc in ACCELERATORS.items():
        per_chip = [m * acc.peak_bf16_tflops * 1e3 / step_gflops for m in MFU_RANGE]
        slices = [hw for hw in HARDWARE.values() if hw.accelerator == key]
        devices = slices[0].num_devices if slices else 8
        rows.append({
            "accelerator": acc.name, "peak_bf16_tflops": acc.peak_bf16_tflops,
            "slice": slices[0].name if slices else f"8 x {key}", "devices": devices,
            "clips_per_s_per_chip": per_chip,
            "step_ms": [BATCH / (c * devices) * 1e3 for c in per_chip],
            "minutes": {name: [EPOCHS * REPEAT * n / (c * devices) / 60 for c in per_chip]
                        for name, n in TRAIN_VIDEOS.items()},
        })
    datasets = [{"dataset": name, "videos": n, "clips": EPOCHS * REPEAT * n,
                 "steps": EPOCHS * (REPEAT * n // BATCH),
                 "cpu_hours": EPOCHS * REPEAT * n * CPU_S_PER_CLIP / 3600}
                for name, n in TRAIN_VIDEOS.items()]
    return {"accelerators": rows, "datasets": datasets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16x112x112 cases only")
    parser.add_argument("--cpu-path", action="store_true",
                        help="count the CPU decomposition (conv_impl=planes, adapter_conv=shift)")
    parser.add_argument("--out", default="bench_out/flops.json")
    args = parser.parse_args()
    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; "
          f"{'CPU' if args.cpu_path else 'accelerator'} code path", flush=True)
    size = 112 if args.quick else 224
    sizes = [16] if args.quick else [16, 32, 64]
    train_frames = 16 if args.quick else 32
    result = {"forward": [], "train": [], "size": size, "cpu_path": args.cpu_path}
    for frames in sizes:
        for adapters in (False, True):
            if adapters and frames != (16 if args.quick else 32):
                continue
            tic = time.perf_counter()
            f = forward_flops(frames, size, adapters, args.cpu_path)
            result["forward"].append({"frames": frames, "adapters": adapters, "gflops": f / 1e9})
            print(f"forward {frames}x{size}x{size} adapters={adapters}: {f / 1e9:.1f} GFLOP "
                  f"({f / 2e9:.1f} GMAC; {time.perf_counter() - tic:.0f} s)", flush=True)
    for mode in ("adapters", "bn", "full"):
        tic = time.perf_counter()
        f, trainable = train_step_flops(mode, train_frames, size, args.cpu_path)
        result["train"].append({"mode": mode, "frames": train_frames, "gflops": f / 1e9,
                                "trainable": trainable})
        print(f"train step ({mode}) 1x{train_frames}x{size}x{size}: {f / 1e9:.1f} GFLOP, "
              f"{trainable:,} trainable ({time.perf_counter() - tic:.0f} s)", flush=True)

    fwd = {(r["frames"], r["adapters"]): r["gflops"] for r in result["forward"]}
    print("\n| clip | I3D forward (GFLOP) | with 9 adapters (GFLOP) |\n|---|---|---|")
    for frames in sizes:
        with_adapters = fwd.get((frames, True))
        print(f"| {frames}x{size}x{size} | {fwd[(frames, False)]:.1f} | "
              f"{f'{with_adapters:.1f}' if with_adapters else '-'} |")
    base = fwd.get((train_frames, True))
    print(f"\n| training step, 1x{train_frames}x{size}x{size} | GFLOP | x forward (adapters) | trainable |")
    print("|---|---|---|---|")
    for r in result["train"]:
        print(f"| {r['mode']} | {r['gflops']:.1f} | {r['gflops'] / base:.2f} | {r['trainable']:,} |")

    step = {r["mode"]: r["gflops"] for r in result["train"]}["adapters"]
    if not args.quick:
        est = result["estimates"] = estimates(step)
        mfu = " / ".join(f"{m:.0%}" for m in MFU_RANGE)
        print(f"\nPECoP adapters step: {step:.0f} GFLOP per clip; MFU {mfu}\n")
        print("| accelerator | peak bf16 TFLOP/s | clips/s per chip | slice | compute of one "
              "batch-16 step (ms) |\n|---|---|---|---|---|")
        for r in est["accelerators"]:
            clips = " / ".join(f"{c:.0f}" for c in r["clips_per_s_per_chip"])
            ms = " / ".join(f"{t:.2f}" for t in r["step_ms"])
            print(f"| {r['accelerator']} | {r['peak_bf16_tflops']:.0f} | {clips} | "
                  f"{r['slice']} ({r['devices']} chips) | {ms} |")
        mid = MFU_RANGE.index(0.30)
        names = [r["slice"] for r in est["accelerators"]]
        print("\n| dataset | train videos | clips (8 x 20 x videos) | steps | "
              + " | ".join(f"{n} min @30%" for n in names)
              + f" | 2-core CPU h @{CPU_S_PER_CLIP} s/clip |")
        print("|---|---|---|---|" + "---|" * len(names) + "---|")
        for d in est["datasets"]:
            mins = " | ".join(f"{r['minutes'][d['dataset']][mid]:.1f}" for r in est["accelerators"])
            print(f"| {d['dataset']} | {d['videos']} | {d['clips']:,} | {d['steps']:,} | {mins} | "
                  f"{d['cpu_hours']:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
