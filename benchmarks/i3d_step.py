"""I3D + 3D-Adapters (PECoP) forward and training-step speed and memory: JAX vs PyTorch on CPU.

    python benchmarks/i3d_step.py                      # 1x16x112x112 and 1x32x224x224
    python benchmarks/i3d_step.py --quick              # smoke run: 1x16x112x112, 2 repeats
    python benchmarks/i3d_step.py --sizes 16x112 --frameworks jax --conv-impl xla
    python benchmarks/i3d_step.py --xla-flags=--xla_cpu_enable_fast_math=true --dtype bfloat16
    python benchmarks/i3d_step.py --sizes 32x224 --remat-table none blocks convs   # memory vs speed
    python benchmarks/i3d_step.py --sizes 32x224 --memory-only --remat-table none blocks convs

Models: ours, ``InceptionI3d(variant='pecop', adapter_blocks=<all 9 Mixed blocks>)`` (NDHWC),
and the independent PyTorch reference ``TorchI3D(layout='hassony2', adapters=True)`` (NCDHW,
tests/torch_reference/i3d.py), the architecture and numerics PECoP runs.

Measured per (size, regime, framework), each case in its own subprocess:

- forward: inference, BN with running statistics (JAX: jitted ``apply(train=False)``;
  PyTorch: ``model.eval()`` under ``torch.inference_mode()``);
- training step: forward in train mode (BN on batch statistics, running statistics updated,
  dropout on), cross-entropy of the logits against a fixed label, backward, SGD with momentum
  0.9. Regimes: ``full`` (every parameter trains) and ``adapters`` (PECoP: adapters + logits
  head train; backbone convs and BN scale/bias frozen, BN still in train mode). JAX takes
  gradients only w.r.t. the trainable subtree (``aqa_jax.train.partition.split_trainable``),
  ``optax.sgd`` updates only it, the step is one ``jax.jit`` with the state donated; PyTorch
  freezes with ``requires_grad=False`` and ``torch.optim.SGD`` gets the trainable tensors.
- time: median of N repeats after warm-up (JAX compile excluded, ``jax.block_until_ready``);
- memory: peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) minus the RSS after imports and
  model creation (for JAX this includes XLA compilation, which dominates); the growth while
  running only (RSS high-water mark, reset via /proc/self/clear_refs after compiling and
  ``malloc_trim``, minus the RSS at that point); and for JAX XLA's
  ``compiled.memory_analysis()`` temp buffer size of the step.

``--remat POLICY`` picks the rematerialisation: a model policy (``InceptionI3d.remat``:
``none``, ``blocks``, ``convs``; the default is the model's) or ``jax.checkpoint`` around the
whole loss (``full``, ``dots``, ``dots_no_batch``). ``--remat-table P1 P2 ...`` runs every
policy for each size and regime, PyTorch once per regime in the same run, and prints the
memory-versus-speed table (XLA temp MB, JAX step s, PyTorch peak MB, temp / PyTorch peak);
it times the training step only (no forward; JAX variables drawn with numpy, no init to
compile).
``--memory-only`` skips running: the JAX step is only compiled (variables from
``eval_shape``), for its XLA temp size, in seconds to a minute per case.

Both frameworks get the same CPUs (``sched_setaffinity`` to the first ``--threads`` CPUs) and
``--threads`` intra-op threads (``torch.set_num_threads``; XLA sizes its pool from the
affinity mask; OMP/MKL_NUM_THREADS). Results go to stdout (a table) and ``--out`` (JSON).
See docs/PERFORMANCE.md for figures and for what the options below change.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from aqa_jax.models.i3d import REMAT_POLICIES, InceptionI3d  # noqa: E402  (jax, no backend)

DEFAULT_REMAT = InceptionI3d.__dataclass_fields__["remat"].default
# model policies (InceptionI3d.remat), then jax.checkpoint around the whole loss
REMAT_CHOICES = (*REMAT_POLICIES, "full", "dots", "dots_no_batch")
RESULT_TAG = "I3D_STEP_RESULT "
LABEL = 3  # the fixed class of the cross-entropy loss
LR = 0.01


# ----------------------------------------------------------------------------- helpers


def parse_size(text: str) -> tuple[int, int, int]:
    """'16x112' -> (16, 112, 112); '16x112x128' -> (16, 112, 128)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 2:
        return parts[0], parts[1], parts[1]
    if len(parts) == 3:
        return tuple(parts)  # type: ignore[return-value]
    raise argparse.ArgumentTypeError(f"size {text!r}: use TxS (e.g. 16x112) or TxHxW")


def size_name(size) -> str:
    t, h, w = size
    return f"1x{t}x{h}x{w}"


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_hwm() -> bool:
    """Give freed heap back to the OS, then reset the RSS high-water mark (Linux >= 4.0)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def pin_cpus(threads: int) -> list[int]:
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    return cpus


# ----------------------------------------------------------------------------- JAX worker


def _reduce_window_max_pool3d(x, window, strides, *, padding, pad_value, ceil_mode):
    """The 3-D ``reduce_window`` max-pool that ``aqa_jax.models.layers.max_pool3d`` replaced
    (same maxima; XLA:CPU differentiates it slowly). Used by ``--pool reduce_window``."""
    import numpy as np
    from jax import lax
    import jax.numpy as jnp

    from aqa_jax.models.layers import pooled_length, same_pads

    pads = [same_pads(x.shape[1 + i], window[i], strides[i], padding) for i in range(3)]
    if pad_value != -math.inf and any(p != (0, 0) for p in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_value)
        pads = [(0, 0)] * 3
    window_pads = []
    for i in range(3):
        length = x.shape[1 + i] + sum(pads[i])
        out = pooled_length(length, window[i], strides[i], ceil_mode)
        extra = max((out - 1) * strides[i] + window[i] - length, 0)
        window_pads.append((pads[i][0], pads[i][1] + extra))
    init = np.array(-np.inf, dtype=x.dtype)
    return lax.reduce_window(
        x, init, lax.max, (1, *window, 1), (1, *strides, 1), [(0, 0), *window_pads, (0, 0)]
    )


def _install_shift_reduce_conv():
    """Puts back the adapter ``shift`` conv as it was before 2026-12-07 (``--adapter-conv
    shift_reduce``): the forward as 27 shifted products summed over taps, then a ``jnp.sum``
    over each group's r inputs; the kernel gradient as 27 separate reductions. Same results;
    XLA:CPU materialises the 27 shifted copies (a YNNPACK reduce fusion's inputs) at once,
    1.7 GB of the 32x224x224 step's temporaries (docs/PERFORMANCE.md)."""
    import jax
    import jax.numpy as jnp

    import aqa_jax.models.adapter as adapter

    def fwd(x, kernel):
        *kernel_size, _, groups = kernel.shape
        xp = adapter._pad_groups(x, [(k // 2, k // 2) for k in kernel_size], groups)
        wt = jnp.swapaxes(kernel, -1, -2)
        return jnp.sum(adapter._shifted_sum(xp, wt, x.shape[1:4], flip=False), axis=-1)

    def bwd(res, ct):
        x, kernel = res
        *kernel_size, _, groups = kernel.shape
        pads = [(k // 2, k // 2) for k in kernel_size]
        t, h, w = x.shape[1:4]
        ctp = jnp.pad(ct, [(0, 0), *[(k - 1 - a, k - 1 - b) for k, (a, b) in zip(kernel_size, pads)], (0, 0)])
        wt = jnp.swapaxes(kernel, -1, -2)
        dx = adapter._shifted_sum(ctp[..., None], wt, (t, h, w), flip=True).reshape(x.shape)
        xp = adapter._pad_groups(x, pads, groups)
        dk = jnp.stack([jnp.sum(xp[:, i : i + t, j : j + h, k : k + w] * ct[..., None], axis=(0, 1, 2, 3))
                        for i, j, k in adapter._taps(kernel_size)])
        dk = jnp.swapaxes(dk.reshape(*kernel_size, *dk.shape[1:]), -1, -2)
        return dx.astype(x.dtype), dk.astype(kernel.dtype)

    conv = jax.custom_vjp(fwd)
    conv.defvjp(lambda x, k: (fwd(x, k), (x, k)), bwd)
    adapter._shift_conv = conv


def run_jax(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import linen as nn

    import aqa_jax.models.i3d as i3d_module
    from aqa_jax.models.i3d import MIXED_BLOCKS, REMAT_POLICIES, InceptionI3d
    from aqa_jax.train.partition import merge, split_trainable

    if spec["pool"] == "reduce_window":
        i3d_module.max_pool3d = _reduce_window_max_pool3d
    if spec["adapter_conv"] == "shift_reduce":
        _install_shift_reduce_conv()
    t, h, w = spec["size"]
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[spec["dtype"]]
    model = InceptionI3d(
        variant="pecop",
        adapter_blocks=tuple(MIXED_BLOCKS),
        dtype=dtype,
        conv_impl=spec["conv_impl"],
        adapter_conv="shift" if spec["adapter_conv"] == "shift_reduce" else spec["adapter_conv"],
        remat=spec["remat"] if spec["remat"] in REMAT_POLICIES else "none",
    )
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (1, t, h, w, 3)).astype(np.float32))
    y = jnp.asarray([LABEL])
    memory_only = spec.get("memory_only", False)
    step_only = spec.get("step_only", False)
    if memory_only:  # shapes only: nothing is initialised or run
        variables = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), x))
    elif step_only:  # numpy-drawn variables: no init to compile (tens of seconds at 32x224)
        from aqa_jax.weights.init import numpy_variables

        variables = numpy_variables(jax.eval_shape(model.init, jax.random.key(0), x))
    else:
        variables = nn.unbox(jax.jit(model.init)(jax.random.key(0), x))
        jax.block_until_ready(variables)
    base_rss = current_rss_mb()

    if not (memory_only or step_only):
        fwd = jax.jit(lambda v, x: model.apply(v, x, train=False)["logits"])
        fwd_c = fwd.lower(variables, x).compile()

    params, batch_stats = variables["params"], variables["batch_stats"]
    trainable, frozen = split_trainable(params, spec["regime"])
    tx = optax.sgd(LR, momentum=0.9)
    state = dict(trainable=trainable, frozen=frozen, batch_stats=batch_stats,
                 opt_state=(jax.eval_shape if memory_only else lambda f, a: f(a))(tx.init, trainable))

    def loss_fn(trainable, frozen, batch_stats, x, y, key):
        out, updates = model.apply(
            {"params": merge(trainable, frozen), "batch_stats": batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": key},
        )
        logits = out["logits"].astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates["batch_stats"]

    if spec["remat"] not in REMAT_POLICIES:  # jax.checkpoint around the whole loss
        policy = {
            "full": None,
            "dots": jax.checkpoint_policies.dots_saveable,
            "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        }[spec["remat"]]
        loss_fn = jax.checkpoint(loss_fn, policy=policy)

    def one_step(state, x, y, key):
        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["trainable"], state["frozen"], state["batch_stats"], x, y, key
        )
        updates, opt_state = tx.update(grads, state["opt_state"], state["trainable"])
        new = dict(trainable=optax.apply_updates(state["trainable"], updates),
                   frozen=state["frozen"], batch_stats=new_stats, opt_state=opt_state)
        return new, loss

    k = spec["steps_per_call"]

    def train_step(state, x, y, key):
        loss = None
        for i in range(k):  # k > 1: several steps in one executable (same batch)
            state, loss = one_step(state, x, y, jax.random.fold_in(key, i))
        return state, loss

    donate = (0,) if spec["donate"] else ()
    key = jax.eval_shape(lambda: jax.random.key(1)) if memory_only else jax.random.key(1)
    t0 = time.perf_counter()
    with jax.default_matmul_precision(spec["matmul_precision"]):
        step_c = jax.jit(train_step, donate_argnums=donate).lower(state, x, y, key).compile()
    compile_s = time.perf_counter() - t0

    def mem(compiled):
        try:
            m = compiled.memory_analysis()
            return dict(temp_mb=m.temp_size_in_bytes / 2**20,
                        argument_mb=m.argument_size_in_bytes / 2**20,
                        output_mb=m.output_size_in_bytes / 2**20,
                        alias_mb=m.alias_size_in_bytes / 2**20)
        except Exception as e:  # noqa: BLE001 - optional information
            return dict(error=repr(e))

    def gflops(compiled):
        try:
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            return cost.get("flops", float("nan")) / 1e9
        except Exception:  # noqa: BLE001
            return None

    if memory_only:
        return dict(compile_step_s=compile_s, xla_step_memory=mem(step_c),
                    step_gflops=gflops(step_c), memory_only=True,
                    versions=dict(jax=jax.__version__), xla_flags=os.environ.get("XLA_FLAGS", ""))

    peak_compile = max_rss_mb()
    hwm_ok = reset_hwm()
    pre_run_rss = current_rss_mb()
    fwd_times = [math.nan] if step_only else timed(
        lambda: jax.block_until_ready(fwd_c(variables, x)), spec["repeats"], spec["warmup"])
    holder = [state]
    del state, params, trainable, frozen, batch_stats, variables  # donated from here on

    def run_step():
        holder[0], loss = step_c(holder[0], x, y, key)
        jax.block_until_ready((holder[0], loss))
        return loss

    step_times = [s / k for s in timed(run_step, spec["repeats"], spec["warmup"])]
    loss = float(run_step())
    run_hwm = hwm_mb()
    return dict(
        fwd_s=statistics.median(fwd_times), fwd_times=fwd_times,
        step_s=statistics.median(step_times), step_times=step_times,
        final_loss=loss,
        compile_step_s=compile_s,
        peak_rss_mb=max(peak_compile, max_rss_mb()) - base_rss,
        run_peak_rss_mb=(run_hwm - pre_run_rss) if (hwm_ok and run_hwm) else None,
        base_rss_mb=base_rss,
        pre_run_rss_mb=pre_run_rss,
        xla_step_memory=mem(step_c), xla_fwd_memory=None if step_only else mem(fwd_c),
        step_gflops=gflops(step_c), fwd_gflops=None if step_only else gflops(fwd_c),
        versions=dict(jax=jax.__version__, flax=__import__("flax").__version__,
                      optax=optax.__version__),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        devices=str(jax.devices()),
    )


# ----------------------------------------------------------------------------- torch worker


def run_torch(spec: dict) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO / "tests"))
    from torch_reference.i3d import TorchI3D, randomize_

    torch.set_num_threads(spec["threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    t, h, w = spec["size"]
    model = randomize_(TorchI3D(layout="hassony2", adapters=True), seed=0)
    if spec["regime"] == "adapters":
        for name, p in model.named_parameters():
            p.requires_grad_("tuning_module" in name or name.startswith("conv3d_0c_1x1."))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=LR, momentum=0.9)
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, t, h, w)).astype(np.float32))
    y = torch.tensor([LABEL])
    base_rss = current_rss_mb()
    autocast = spec["dtype"] == "bfloat16"

    step_only = spec.get("step_only", False)

    def forward():
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            return model(x)["logits"]

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            logits = model(x)["logits"]
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        return loss

    hwm_ok = reset_hwm()
    pre_run_rss = current_rss_mb()
    model.eval()
    fwd_times = [math.nan] if step_only else timed(forward, spec["repeats"], spec["warmup"])
    model.train()
    step_times = timed(step, spec["repeats"], spec["warmup"])
    loss = float(step())
    run_hwm = hwm_mb()
    return dict(
        fwd_s=statistics.median(fwd_times), fwd_times=fwd_times,
        step_s=statistics.median(step_times), step_times=step_times,
        final_loss=loss,
        peak_rss_mb=max_rss_mb() - base_rss,
        run_peak_rss_mb=(run_hwm - pre_run_rss) if (hwm_ok and run_hwm) else None,
        base_rss_mb=base_rss,
        pre_run_rss_mb=pre_run_rss,
        n_trainable=sum(p.numel() for p in trainable),
        versions=dict(torch=torch.__version__),
        torch_threads=torch.get_num_threads(),
        mkldnn=torch.backends.mkldnn.is_available(),
    )


def worker(spec: dict) -> None:
    cpus = pin_cpus(spec["threads"])
    t0 = time.perf_counter()
    result = (run_jax if spec["framework"] == "jax" else run_torch)(spec)
    result.update(cpus=cpus, wall_s=time.perf_counter() - t0)
    print(RESULT_TAG + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- driver


def run_case(spec: dict, args) -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "1"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    )
    env.pop("JAX_NUM_CPU_DEVICES", None)
    if spec["framework"] == "jax" and args.xla_flags:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    load_before = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {args.timeout}s", load_before=load_before)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            res = json.loads(line[len(RESULT_TAG):])
            res.update(load_before=load_before, load_after=os.getloadavg()[0])
            return res
    tail = (proc.stderr or proc.stdout)[-2000:]
    return dict(error=f"exit {proc.returncode}: {tail}", load_before=load_before)


def fmt(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=parse_size, default=None,
                   help="clip sizes TxS or TxHxW, batch 1 (default: 16x112 32x224)")
    p.add_argument("--regimes", nargs="+", choices=("full", "adapters"),
                   default=["full", "adapters"])
    p.add_argument("--frameworks", nargs="+", choices=("jax", "torch"), default=["jax", "torch"])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    p.add_argument("--large-repeats", type=int, default=3,
                   help="timed repeats for clips with >= 32x224x224 voxels")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed calls first (1 for large clips)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 16x112 only, 2 repeats, 1 warm-up")
    p.add_argument("--threads", type=int, default=2,
                   help="CPUs and intra-op threads for both frameworks")
    p.add_argument("--xla-flags", default="",
                   help="appended to XLA_FLAGS of the JAX workers")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype: JAX model dtype (params stay fp32); "
                        "PyTorch autocast(cpu, bfloat16)")
    p.add_argument("--conv-impl", choices=("auto", "xla", "planes"), default="auto",
                   help="InceptionI3d.conv_impl (auto = planes on CPU)")
    p.add_argument("--adapter-conv", choices=("shift", "lax", "shift_reduce"), default="shift",
                   help="InceptionI3d.adapter_conv; shift_reduce: the shift conv as it was "
                        "before 2026-12-07 (materialises its shifted copies)")
    p.add_argument("--pool", choices=("separable", "reduce_window"), default="separable",
                   help="max-pool: the library's (separable) or the old 3-D reduce_window")
    p.add_argument("--remat", choices=REMAT_CHOICES, default=None,
                   help="rematerialisation (JAX): a model policy, InceptionI3d.remat "
                        f"({'/'.join(REMAT_POLICIES)}; default: the model's, "
                        f"{DEFAULT_REMAT!r}), or jax.checkpoint around the whole loss "
                        "(full: save nothing, dots / dots_no_batch: save matmul/conv outputs)")
    p.add_argument("--remat-table", nargs="+", choices=REMAT_CHOICES, default=None,
                   metavar="POLICY",
                   help="run each of these --remat policies per size and regime (PyTorch once "
                        "per regime) and print a memory-versus-speed table")
    p.add_argument("--memory-only", action="store_true",
                   help="JAX: only compile the step and report its XLA temp size (no timing; "
                        "PyTorch cases are skipped)")
    p.add_argument("--matmul-precision", default="default",
                   help="jax.default_matmul_precision while compiling the step")
    p.add_argument("--steps-per-call", type=int, default=1,
                   help="JAX training steps per jitted call (time reported per step)")
    p.add_argument("--no-donate", action="store_true", help="do not donate the JAX state")
    p.add_argument("--timeout", type=int, default=1200, help="seconds per case")
    p.add_argument("--out", default="bench_out/i3d_step.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(argv[:-1]):  # "--xla-flags --xla_cpu_x=1": the value looks like an option
        if a == "--xla-flags":
            argv[i : i + 2] = [f"--xla-flags={argv[i + 1]}"]
            break
    args = p.parse_args(argv)
    args.remat = args.remat or DEFAULT_REMAT
    policies = args.remat_table or [args.remat]
    frameworks = ["jax"] if args.memory_only else args.frameworks

    if args.worker:
        worker(json.loads(args.worker))
        return 0

    sizes = args.sizes or ([(16, 112, 112)] if args.quick else [(16, 112, 112), (32, 224, 224)])
    cpus = sorted(os.sched_getaffinity(0))[: args.threads]
    config = dict(
        threads=args.threads, cpus=cpus, cpu_model=cpu_model(), cpu_count=os.cpu_count(),
        python=platform.python_version(), xla_flags_extra=args.xla_flags,
        xla_flags_env=os.environ.get("XLA_FLAGS", ""), dtype=args.dtype,
        conv_impl=args.conv_impl, adapter_conv=args.adapter_conv, pool=args.pool,
        remat=args.remat, remat_table=args.remat_table, memory_only=args.memory_only,
        matmul_precision=args.matmul_precision,
        steps_per_call=args.steps_per_call, donate=not args.no_donate,
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        started=time.strftime("%Y-%m-%d %H:%M:%S"), load_at_start=os.getloadavg(),
    )
    print(f"I3D step benchmark on {config['cpu_model']} ({config['cpu_count']} CPUs), "
          f"{args.threads} threads pinned to CPUs {cpus} for both frameworks "
          f"(torch.set_num_threads({args.threads}), XLA pool from the affinity mask, "
          f"OMP/MKL_NUM_THREADS={args.threads})")
    print(f"JAX: dtype={args.dtype} conv_impl={args.conv_impl} adapter_conv={args.adapter_conv} "
          f"pool={args.pool} remat={'/'.join(policies)} matmul_precision={args.matmul_precision} "
          f"steps_per_call={args.steps_per_call} donate={not args.no_donate} "
          f"XLA_FLAGS={(os.environ.get('XLA_FLAGS', '') + ' ' + args.xla_flags).strip()!r}")
    print(f"load average at start: {config['load_at_start'][0]:.2f} "
          "(another busy process makes timings noisy)", flush=True)

    results = []
    total0 = time.perf_counter()
    for size in sizes:
        large = size[0] * size[1] * size[2] >= 32 * 224 * 224
        repeats = 2 if args.quick else (args.large_repeats if large else args.repeats)
        warmup = 1 if (args.quick or large) else args.warmup
        for regime in args.regimes:
            # each framework in --frameworks order: JAX once per policy, PyTorch once
            cases = [(fw, remat) for fw in frameworks
                     for remat in (policies if fw == "jax" else [None])]
            for fw, remat in cases:
                spec = dict(framework=fw, size=list(size), regime=regime, repeats=repeats,
                            warmup=warmup, threads=args.threads, dtype=args.dtype,
                            conv_impl=args.conv_impl, adapter_conv=args.adapter_conv,
                            pool=args.pool, remat=remat, memory_only=args.memory_only,
                            step_only=bool(args.remat_table),
                            matmul_precision=args.matmul_precision,
                            steps_per_call=args.steps_per_call, donate=not args.no_donate)
                t0 = time.perf_counter()
                res = run_case(spec, args)
                if "error" in res:
                    status = res["error"]
                elif res.get("memory_only"):
                    status = (f"XLA temp {res['xla_step_memory'].get('temp_mb', math.nan):.0f} MB "
                              f"compile {res['compile_step_s']:.0f}s")
                else:
                    status = (
                        f"fwd {res['fwd_s']:.3f}s step {res['step_s']:.3f}s "
                        f"peak +{res['peak_rss_mb']:.0f} MB"
                        + (f" XLA temp {res['xla_step_memory'].get('temp_mb', math.nan):.0f} MB"
                           f" compile {res['compile_step_s']:.0f}s" if fw == "jax" else "")
                    )
                tag = f"{fw}" + (f" remat={remat}" if fw == "jax" and len(policies) > 1 else "")
                print(f"  {size_name(size):>14} {regime:>8} {tag:>5}: {status} "
                      f"[{time.perf_counter() - t0:.0f}s]", flush=True)
                results.append(dict(spec=spec, result=res))
    config["total_s"] = time.perf_counter() - total0
    config["load_at_end"] = os.getloadavg()

    def get(fw, size, regime, remat=None):
        remat = remat or policies[0]
        for r in results:
            s = r["spec"]
            if (s["framework"] == fw and tuple(s["size"]) == tuple(size) and s["regime"] == regime
                    and (fw != "jax" or s["remat"] == remat)):
                res = r["result"]
                return res if "error" not in res and not res.get("memory_only") else None
        return None

    def print_table(header, rows):
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"
        print()
        print(line(header))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in rows:
            print(line(r))

    memory_table = []
    if args.remat_table or args.memory_only:
        for size in sizes:
            for regime in args.regimes:
                t = get("torch", size, regime)
                for remat in policies:
                    j = next((r["result"] for r in results if r["spec"]["framework"] == "jax"
                              and tuple(r["spec"]["size"]) == tuple(size)
                              and r["spec"]["regime"] == regime and r["spec"]["remat"] == remat
                              and "error" not in r["result"]), None)
                    temp = j and j["xla_step_memory"].get("temp_mb")
                    torch_peak = t and t["peak_rss_mb"]
                    memory_table.append(dict(
                        size=size_name(size), regime=regime, remat=remat, xla_temp_mb=temp,
                        jax_step_s=j and j.get("step_s"), step_gflops=j and j.get("step_gflops"),
                        torch_step_s=t and t["step_s"], torch_peak_mb=torch_peak,
                        temp_over_torch_peak=(temp / torch_peak) if (temp and torch_peak) else None))
        print_table(
            ("size", "regime", "remat", "XLA temp MB", "JAX step s", "GFLOP", "Torch step s",
             "Torch peak MB", "temp / Torch peak"),
            [(m["size"], m["regime"], m["remat"], fmt(m["xla_temp_mb"], 0), fmt(m["jax_step_s"]),
              fmt(m["step_gflops"], 0), fmt(m["torch_step_s"]), fmt(m["torch_peak_mb"], 0),
              fmt(m["temp_over_torch_peak"], 2)) for m in memory_table])
        print("\nmemory versus speed: XLA temp MB = compiled.memory_analysis() temp buffers of the "
              "JAX step; Torch peak MB = PyTorch peak RSS growth for the same step (this run); "
              "GFLOP = XLA cost analysis of the step (recomputation shows here).")
    if args.memory_only:
        config["total_s"] = time.perf_counter() - total0
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(config=config, cases=results, memory_table=memory_table),
                                  indent=1))
        print(f"wrote {out}")
        return 0 if all("error" not in r["result"] for r in results) else 1

    header = ("size", "regime", "JAX fwd s", "Torch fwd s", "JAX step s", "Torch step s",
              "torch/jax step", "JAX peak MB", "Torch peak MB", "JAX run-peak MB",
              "Torch run-peak MB", "XLA temp MB")
    rows = []
    for size in sizes:
        for regime in args.regimes:
            j, t = get("jax", size, regime), get("torch", size, regime)
            ratio = (t["step_s"] / j["step_s"]) if (j and t) else None
            rows.append((
                size_name(size), regime,
                fmt(j and j["fwd_s"]), fmt(t and t["fwd_s"]),
                fmt(j and j["step_s"]), fmt(t and t["step_s"]),
                fmt(ratio, 2),
                fmt(j and j["peak_rss_mb"], 0), fmt(t and t["peak_rss_mb"], 0),
                fmt(j and j["run_peak_rss_mb"], 0), fmt(t and t["run_peak_rss_mb"], 0),
                fmt(j and j["xla_step_memory"].get("temp_mb"), 0),
            ))
    if len(policies) > 1:
        print(f"\nJAX below: remat={policies[0]}")
    print_table(header, rows)
    print("\npeak MB: peak RSS (ru_maxrss) minus RSS after imports + model creation "
          "(JAX: includes XLA compilation); run-peak MB: RSS high-water mark while running "
          "(warm-up + timed calls) minus RSS just before (after compiling and malloc_trim); "
          "XLA temp MB: compiled.memory_analysis() temp buffers of the JAX step.")

    targets = []
    print("\nRatios that matter (medians, measured side by side in this run):")
    for size in sizes:
        jf, ja = get("jax", size, "full"), get("jax", size, "adapters")
        if jf and ja:
            r = jf["step_s"] / ja["step_s"]
            ok = r >= 1.5
            targets.append(dict(size=size_name(size), target="jax full step / jax adapters step >= 1.5",
                                value=r, met=ok))
            print(f"  {size_name(size)}: JAX adapters-only step is {r:.2f}x faster than JAX full "
                  f"step (target >= 1.5x): {'MET' if ok else 'NOT MET'}")
        for regime in args.regimes:
            j, t = get("jax", size, regime), get("torch", size, regime)
            if j and t:
                r = t["step_s"] / j["step_s"]
                ok = r >= 1.0
                targets.append(dict(size=size_name(size), regime=regime,
                                    target="torch step / jax step >= 1.0", value=r, met=ok))
                print(f"  {size_name(size)} {regime}: PyTorch step / JAX step = {r:.2f} "
                      f"(target >= 1.0, JAX at least as fast): {'MET' if ok else 'NOT MET'}; "
                      f"forward PyTorch/JAX = {t['fwd_s'] / j['fwd_s']:.2f}")
    print(f"\ntotal {config['total_s']:.0f}s; load average at end "
          f"{config['load_at_end'][0]:.2f}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(config=config, cases=results, targets=targets,
                                   memory_table=memory_table), indent=1))
    print(f"wrote {out}")
    return 0 if all("error" not in r["result"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
