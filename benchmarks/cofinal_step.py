"""CoFInAl training-step time on CPU: JAX (our jitted step) vs PyTorch (the same model).

    python benchmarks/cofinal_step.py                 # batch 32 x 68 clips x 1024, H 256, 20 steps
    python benchmarks/cofinal_step.py --steps 5 --batch 8      # smoke run

Model: the official RG Ball setting (``configs/cofinal.py:task=Ball``: H 256, 1 head, 1 encoder
and 2 decoder layers, 4 grade queries, revert branch, ETF head, weight preset 2, triplet labels
``loss_align=1``, dropout 0.3), on random features of the official training shape (batch 32, a
68-clip window of 1024-d features).

- JAX: ``aqa_jax.train.step.make_train_step`` (the loop's step: forward in train mode with BN
  batch statistics and dropout, CoFInAl's loss, gradients, SGD momentum 0.9 + weight decay 1e-4
  via optax), one ``jax.jit`` with the state donated, on one CPU device.
- PyTorch: ``tests/torch_reference/cofinal.py`` (``TorchCoFInAl``, ``nn.Transformer*Layer``
  modules, the official ``LossFun``), ``model.train()``, ``zero_grad``, forward, loss,
  ``backward``, ``torch.optim.SGD(lr=1e-2, momentum=0.9, weight_decay=1e-4).step()``.

Each framework runs in its own subprocess pinned to the same ``--threads`` CPUs
(``sched_setaffinity``; ``torch.set_num_threads``; XLA sizes its pool from the affinity mask).
Time: median of ``--steps`` steps after ``--warmup`` (JAX compile excluded, reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TAG = "COFINAL_STEP_RESULT "


def _pin(threads: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def _batch(args):
    import numpy as np

    rng = np.random.default_rng(0)
    scores = rng.uniform(5, 25, args.batch)
    return {
        "features": rng.normal(size=(args.batch, args.clips, args.dim)).astype(np.float32),
        "mask": np.ones((args.batch, args.clips), bool),
        "score": scores.astype(np.float32),
        "target": (scores / 25).astype(np.float32),
    }


def run_jax(args) -> dict:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from aqa_jax.config_args import load_config
    from aqa_jax.methods import cofinal, get_method
    from aqa_jax.train.optimizer import make_optimizer
    from aqa_jax.train.state import TrainState
    from aqa_jax.train.step import make_train_step

    config = load_config(f"{REPO}/configs/cofinal.py:task=Ball")
    config.cofinal.hidden_dim = args.hidden
    method = get_method("cofinal")(config)
    net = method.build_model()
    batch = _batch(args)
    batch["coarse_target"], batch["subgrade_target"] = cofinal.decouple(batch["target"])
    variables = jax.jit(lambda r: net.init({"params": r, "dropout": r}, batch, train=False))(
        jax.random.key(0))
    tx, schedule = make_optimizer(config.optimizer, variables["params"], config.trainable,
                                  steps_per_epoch=7, total_steps=7 * config.num_epochs)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                       batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))
    step = jax.jit(make_train_step(method, net, tx, schedule, trainable=config.trainable,
                                   bn_policy=config.bn_policy), donate_argnums=(0,))
    batch = jax.device_put(batch)
    tic = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - tic
    times = []
    for i in range(args.warmup + args.steps):
        tic = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics["loss"])
        if i >= args.warmup:
            times.append(time.perf_counter() - tic)
    return {"framework": "jax", "step_s": statistics.median(times), "min_s": min(times),
            "compile_s": compile_s, "loss": float(metrics["loss"]), "version": jax.__version__,
            "params": int(sum(np.size(x) for x in jax.tree.leaves(state.params)))}


def run_torch(args) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from torch_reference.cofinal import TorchCoFInAl, loss

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    model = TorchCoFInAl(args.dim, args.hidden, 1, preset=2).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-4)
    batch = _batch(args)
    x, y = torch.from_numpy(batch["features"]), torch.from_numpy(batch["target"])
    times = []
    for i in range(args.warmup + args.steps):
        tic = time.perf_counter()
        opt.zero_grad()
        value = loss(model, model(x), y, alpha=1.0, margin=1.0, loss_align=1)
        value.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - tic)
    return {"framework": "torch", "step_s": statistics.median(times), "min_s": min(times),
            "compile_s": 0.0, "loss": float(value), "version": torch.__version__,
            "params": int(sum(p.numel() for p in model.parameters()))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clips", type=int, default=68)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frameworks", default="jax,torch")
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _pin(args.threads)
        result = (run_jax if args.worker == "jax" else run_torch)(args)
        print(TAG + json.dumps(result), flush=True)
        return 0
    results = []
    for framework in args.frameworks.split(","):
        cmd = [sys.executable, __file__, "--worker", framework] + [
            f"--{k}={getattr(args, k)}" for k in ("batch", "clips", "dim", "hidden", "steps",
                                                  "warmup", "threads")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        line = next((l for l in proc.stdout.splitlines() if l.startswith(TAG)), None)
        if line is None:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            raise SystemExit(f"{framework} worker failed")
        results.append(json.loads(line[len(TAG):]))
    shape = f"{args.batch}x{args.clips}x{args.dim}, H {args.hidden}"
    print(f"CoFInAl training step ({shape}), {args.threads} threads, median of {args.steps} "
          f"steps after {args.warmup} warm-up; {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| framework | version | step ms (median) | step ms (min) | compile s | params | loss |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['framework']} | {r['version']} | {1000 * r['step_s']:.1f} | "
              f"{1000 * r['min_s']:.1f} | {r['compile_s']:.1f} | {r['params']:,} | {r['loss']:.3f} |")
    by = {r["framework"]: r for r in results}
    if {"jax", "torch"} <= set(by):
        print(f"torch / jax step time: {by['torch']['step_s'] / by['jax']['step_s']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
