"""Clip-feature extraction time on CPU: what ``aqa-jax extract-features`` spends per video, and
what ``aqa-jax predict`` adds before a CoFInAl/GDLT head scores a raw video.

    python benchmarks/extract_features.py                    # 224 px crop, videos of 160-250 frames
    python benchmarks/extract_features.py --frames 40 56 --size 64 --preset deepmind_64   # smoke run

Extractor: :class:`aqa_jax.features.FeatureExtractor` with the shipped Kinetics-400 I3D
(``deepmind`` numerics), 16-frame clips every 16 frames, the ``--preset`` evaluation transform
(default ``deepmind``: short side 256, centre crop 224), 8 clips per forward pass. Videos: frames
of a moving gradient with noise, JPEG-encoded at ``--size`` x 4/3 ``--size`` as the builders
store them. Per video: wall time, split into decoding + transform and the network (timed
apart on the same clips). The first video includes XLA's compilation; later ones, of other
lengths, reuse it (the last batch is padded to 8 clips).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def _video(num_frames: int, size: int, seed: int) -> dict:
    from aqa_jax.data.frames import encode_jpeg

    rng = np.random.default_rng(seed)
    h, w = size, size * 4 // 3
    y, x = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(num_frames):
        base = (x + 3 * t) % 256 * 0.6 + (y * 0.4)
        image = np.stack([base, np.roll(base, t, 1), 255 - base], -1) + rng.normal(0, 8, (h, w, 3))
        frames.append(encode_jpeg(np.clip(image, 0, 255).astype(np.uint8)))
    return {"id": f"video_{seed}", "frames": frames, "num_frames": num_frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[160, 250, 200])
    parser.add_argument("--size", type=int, default=256, help="stored short side")
    parser.add_argument("--preset", default="deepmind")
    args = parser.parse_args()

    from aqa_jax.data.frames import decode_frames
    from aqa_jax.data.transforms import apply_transform
    from aqa_jax.features import ExtractorSettings, FeatureExtractor, clip_windows

    settings = ExtractorSettings(preset=args.preset)
    t0 = time.perf_counter()
    extractor = FeatureExtractor(settings)
    load_s = time.perf_counter() - t0
    print(f"# CPU: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores; "
          f"settings {settings.to_dict()}; weights loaded in {load_s:.1f} s")
    print("| video | frames | clips | wall s | decode+transform s | network s | ms per clip (network) |")
    print("|---|---|---|---|---|---|---|")
    for i, n in enumerate(args.frames):
        record = _video(n, args.size, i)
        t0 = time.perf_counter()
        features = extractor(record)
        wall = time.perf_counter() - t0
        windows = clip_windows(n, settings.clip_len, settings.stride)
        t0 = time.perf_counter()
        for w in windows:
            apply_transform(decode_frames(record["frames"], w), settings.preset)
        prep = time.perf_counter() - t0
        label = "first (compiles)" if i == 0 else f"{i + 1}"
        print(f"| {label} | {n} | {len(features)} | {wall:.2f} | {prep:.2f} | {wall - prep:.2f} | "
              f"{1000 * (wall - prep) / len(features):.0f} |")


if __name__ == "__main__":
    main()
