"""The README's demo: the real Kinetics-400 I3D with PECoP 3D-Adapters on a generated clip."""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np


def synthetic_clip(frames: int = 32, size: int = 224, seed: int = 0) -> np.ndarray:
    """A (1, T, H, W, 3) clip in [-1, 1]: a limb-like bar swinging over a textured floor.

    Deterministic from ``seed``; only meant to give the network a moving scene to look at.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    floor = 0.35 + 0.1 * np.sin(12 * xx) * np.cos(9 * yy) + 0.02 * rng.standard_normal((size, size))
    clip = np.empty((frames, size, size, 3), np.float32)
    for t in range(frames):
        angle = 0.9 * np.sin(2 * np.pi * t / 12)
        # distance of each pixel to a bar pivoting at the top centre
        dx, dy = xx - 0.5, yy - 0.15
        along = dx * np.sin(angle) + dy * np.cos(angle)
        across = dx * np.cos(angle) - dy * np.sin(angle)
        bar = (np.abs(across) < 0.04) & (along > 0) & (along < 0.6)
        frame = np.stack([floor, floor * 0.9, floor * 0.8], -1)
        frame[bar] = (0.9, 0.75, 0.6)
        clip[t] = frame
    return (clip * 2 - 1)[None]


def run_demo(model_config: Mapping[str, Any] | None = None) -> None:
    """Loads Kinetics-400 I3D (+ fresh adapters), runs a clip, prints top-5 and parameter sizes.

    ``model_config`` holds ``InceptionI3d`` fields (``configs/i3d.py``'s ``config.model``);
    by default the DeepMind numerics with PECoP adapters on all nine Mixed blocks.
    """
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from aqa_jax.models.i3d import MIXED_BLOCKS, InceptionI3d
    from aqa_jax.weights.kinetics import (
        kinetics400_labels,
        kinetics400_weights_path,
        load_i3d_kinetics400,
    )

    print(f"aqa_jax demo · jax {jax.__version__} on {jax.devices()[0].platform}")
    clip = jnp.asarray(synthetic_clip())
    labels = kinetics400_labels()
    print(f"weights: {kinetics400_weights_path()} (DeepMind rgb_scratch, Kinetics-400)")
    adapted = dict(variant="deepmind", adapter_blocks=tuple(MIXED_BLOCKS))
    adapted.update(model_config or {})
    adapted["adapter_blocks"] = tuple(adapted["adapter_blocks"])
    plain = dict(adapted, adapter_blocks=())
    for fields, title in ((plain, "I3D"), (adapted, "I3D + 3D-Adapters (PECoP)")):
        model = InceptionI3d(**fields)
        init = jax.jit(model.init)(jax.random.key(0), clip[:, :8, :32, :32])
        variables = load_i3d_kinetics400(init)
        start = time.perf_counter()
        out = jax.jit(model.apply)(variables, clip)
        probs = np.asarray(jax.nn.softmax(out["logits"][0]))
        elapsed = time.perf_counter() - start
        print(f"\n{title}, {model.variant} numerics: clip {tuple(clip.shape)} → top-5 Kinetics-400 classes ({elapsed:.1f} s)")
        for i in np.argsort(-probs)[:5]:
            print(f"  {probs[i]:6.3f}  {labels[i]}")
    flat = traverse_util.flatten_dict(variables["params"])
    adapter = sum(v.size for k, v in flat.items() if "adapter" in k)
    total = sum(v.size for v in flat.values())
    print("\nparameters            count        MB (fp32)")
    print(f"  backbone + logits   {total - adapter:>10,}   {4 * (total - adapter) / 1e6:8.2f}")
    print(f"  3D-Adapters (x9)    {adapter:>10,}   {4 * adapter / 1e6:8.2f}")
    print(f"  trainable in PECoP  {adapter / total:>10.1%}")
