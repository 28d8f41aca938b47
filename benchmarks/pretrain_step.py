"""PECoP pretraining step (VSPP network: I3D to AvgPool + speed/segment heads) as the training
core runs it: time and memory per trainable mode, and step time from 1 to 8 devices.

    python benchmarks/pretrain_step.py                   # B=8 x 16x112x112, modes + scaling
    python benchmarks/pretrain_step.py --quick           # B=8 x 8x64x64, 2 repeats
    python benchmarks/pretrain_step.py --frames 32 --size 224 --batch 16   # the official shape

Each case runs in its own subprocess with ``JAX_NUM_CPU_DEVICES`` = its device count, builds
the state and the jitted, donated ``train_step`` exactly as ``aqa_jax.train.loop`` does
(``configs/pecop.py`` recipe: SGD momentum 0.9, wd 1e-4, BN on batch statistics with running
statistics updated) and times it on a fixed random batch:

- modes: ``adapters`` (PECoP: adapters + heads), ``bn`` (HPT+BN: BN scale/bias + heads, no
  adapters), ``full`` (Dom-S: everything, no adapters); one device;
- scaling: ``adapters`` on a (data=N, model=1) mesh for N = 1, 2, 4, 8 simulated CPU devices,
  same global batch. Simulated devices share this machine's cores, so this measures the
  overhead of partitioning, not a speed-up.

Time: median of ``--repeats`` after one warm-up (compile excluded). Memory: XLA's
``memory_analysis()`` of the compiled step (temporaries, and arguments = state + batch) and the
optimizer state's size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_case(mode: str, devices: int, frames: int, size: int, batch: int, repeats: int) -> dict:
    import jax
    import numpy as np
    import flax.linen as nn

    sys.path.insert(0, str(REPO))
    from aqa_jax.config_args import load_config
    from aqa_jax.methods import get_method
    from aqa_jax.train.optimizer import make_optimizer
    from aqa_jax.train.partition import split_trainable
    from aqa_jax.train.sharding import global_batch, make_mesh, replicated, batch_sharding
    from aqa_jax.train.state import abstract_variables, create_train_state, state_shardings
    from aqa_jax.train.step import make_train_step

    variant = {"adapters": "pecop", "bn": "hpt_bn", "full": "dom_s"}[mode]
    config = load_config(f"{REPO}/configs/pecop.py:variant={variant}")
    method = get_method("vspp")(config)
    model = method.build_model()
    rng = np.random.default_rng(0)
    host = {
        "clip": rng.standard_normal((batch, frames, size, size, 3)).astype(np.float32),
        "speed": rng.integers(0, 5, batch).astype(np.int32),
        "segment": rng.integers(0, 4, batch).astype(np.int32),
    }
    example = {k: v[:1] for k, v in host.items()}
    mesh = make_mesh([("data", devices), ("model", 1)])
    boxed = abstract_variables(model, example)
    params = nn.unbox(boxed["params"])
    tx, schedule = make_optimizer(config.optimizer, params, config.trainable,
                                  steps_per_epoch=100, total_steps=800)
    shardings = state_shardings(boxed, tx, mesh, [tuple(r) for r in config.logical_axis_rules])
    state = create_train_state(model, tx, example, shardings, seed=0)
    step = jax.jit(
        make_train_step(method, model, tx, schedule, trainable=config.trainable,
                        bn_policy=config.bn_policy),
        in_shardings=(shardings, {k: batch_sharding(mesh) for k in host}),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=(0,),
    )
    device_batch = global_batch(host, mesh)
    tic = time.perf_counter()
    compiled = step.lower(state, device_batch).compile()
    compile_s = time.perf_counter() - tic
    memory = compiled.memory_analysis()
    state, metrics = compiled(state, device_batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        state, metrics = compiled(state, device_batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - tic)
    opt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.opt_state))
    trainable = sum(int(np.prod(x.shape))
                    for x in jax.tree.leaves(split_trainable(params, config.trainable)[0]))
    return {
        "mode": mode, "devices": devices, "shape": f"{batch}x{frames}x{size}x{size}",
        "step_s": statistics.median(times), "clips_per_s": batch / statistics.median(times),
        "compile_s": compile_s,
        "temp_mb": memory.temp_size_in_bytes / 1e6 if memory else float("nan"),
        "args_mb": memory.argument_size_in_bytes / 1e6 if memory else float("nan"),
        "opt_state_mb": opt_bytes / 1e6, "trainable": trainable,
        "loss": float(metrics["loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench_out/pretrain_step.json")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.frames, args.size, args.batch, args.repeats = 8, 64, 8, 2
    if args.case:
        mode, devices = args.case.split(":")
        print(json.dumps(run_case(mode, int(devices), args.frames, args.size, args.batch, args.repeats)))
        return
    cases = [("adapters", 1), ("bn", 1), ("full", 1)] + [("adapters", n) for n in (2, 4, 8)]
    rows = []
    for mode, devices in cases:
        env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
        out = subprocess.run(
            [sys.executable, __file__, "--case", f"{mode}:{devices}", "--frames", str(args.frames),
             "--size", str(args.size), "--batch", str(args.batch), "--repeats", str(args.repeats)],
            env=env, capture_output=True, text=True,
        )
        if out.returncode:
            sys.exit(f"case {mode}:{devices} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['mode']:>9} {r['devices']} dev {r['shape']}: {r['step_s']:.3f} s/step "
              f"({r['clips_per_s']:.1f} clips/s), temp {r['temp_mb']:.0f} MB, "
              f"args {r['args_mb']:.0f} MB, opt state {r['opt_state_mb']:.2f} MB, "
              f"compile {r['compile_s']:.0f} s", flush=True)
    base = {r["mode"]: r for r in rows if r["devices"] == 1}
    print("\n| mode | devices | step (s) | vs adapters@1 | clips/s | XLA temp (MB) | args (MB) | "
          "optimizer state (MB) | trainable params |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["step_s"] / base["adapters"]["step_s"]
        print(f"| {r['mode']} | {r['devices']} | {r['step_s']:.3f} | {ratio:.2f}x | "
              f"{r['clips_per_s']:.1f} | {r['temp_mb']:.0f} | {r['args_mb']:.0f} | "
              f"{r['opt_state_mb']:.2f} | {r['trainable']:,} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
