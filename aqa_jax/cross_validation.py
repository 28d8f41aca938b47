"""k-fold runs and their report, as MUSDL evaluates JIGSAWS (``JIGSAWS/main.py``).

Each fold trains its own model (``fold=N`` in the config's args) in ``<workdir>/fold<N>``,
evaluated on its test fold after every epoch. At each epoch the folds' test SRCCs are
averaged; the reported figure is the mean of that average over the **last 10 epochs** (the
official "final test correlation"). The best epoch of the average is shown too, labelled as
such. Tasks are averaged with the Fisher z-transform (MUSDL's ``JIGSAWS_avg.xls``).

Per-class runs (AQA-7, :func:`run_classes`): one model per action class (``task=<class>``),
each trained and tested on its class alone (CoRe's ``Seven_CoRe.yaml`` runs, the USDL
paper's AQA-7 table); each class's test SRCC at its best evaluation (what CoRe's runner
keeps as ``rho_best``, selected on the test split as the official code does) and at its last,
and the Fisher-z average of each over the classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from aqa_jax.metrics import fisher_z_mean
from aqa_jax.train.metrics_writer import read_jsonl

CV_PNG = "cv_curve.png"


def with_args(spec: str, **values: Any) -> str:
    """``path.py:a=1,b`` with ``values`` set (replacing those already there)."""
    path, _, arg = spec.partition(":")
    items = [item for item in arg.split(",") if item and item.partition("=")[0] not in values]
    items += [f"{k}={v}" for k, v in values.items()]
    return f"{path}:{','.join(items)}"


def fold_spec(spec: str, fold: int) -> str:
    """``spec`` for one fold: ``fold=N`` set and ``{fold}`` replaced by N."""
    return with_args(spec.replace("{fold}", str(fold)), fold=fold)


def _eval_split(workdir: Path) -> str:
    config = workdir / "config.json"
    return json.loads(config.read_text())["data"]["eval_split"] if config.is_file() else "test"


def fold_curves(fold_workdirs: Sequence[str | Path], split: str | None = None, key: str = "srcc") -> np.ndarray:
    """(folds, evaluations) array of ``key`` per fold, evaluations in step order; ``split``
    defaults to each run's evaluation split (``test_fold<N>`` on JIGSAWS)."""
    curves = []
    for workdir in map(Path, fold_workdirs):
        name = split or _eval_split(workdir)
        records = [r for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == name and key in r]
        curves.append([r[key] for r in sorted(records, key=lambda r: r["step"])])
    length = min(len(c) for c in curves)
    if length == 0:
        raise ValueError(f"a fold has no {split} {key} records: was it evaluated every epoch?")
    return np.array([c[:length] for c in curves], np.float64)


def cv_report(fold_workdirs: Sequence[str | Path], *, last: int = 10, split: str | None = None,
              key: str = "srcc") -> dict[str, Any]:
    """Per-epoch fold mean, its mean over the last ``last`` epochs, its best epoch, and each
    fold's last value."""
    curves = fold_curves(fold_workdirs, split, key)
    mean = curves.mean(0)
    best = int(np.argmax(mean))
    return {
        "per_epoch_mean": mean.tolist(),
        f"mean_last_{last}": float(mean[-last:].mean()),
        "best_epoch": best + 1,
        "best_epoch_mean": float(mean[best]),
        "fold_last": curves[:, -1].tolist(),
        "epochs": int(curves.shape[1]),
    }


def plot_cv(fold_workdirs: Sequence[str | Path], out: str | Path, *, title: str = "",
            last: int = 10) -> Path:
    """Each fold's test curve and their mean, the last-``last`` window shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = fold_curves(fold_workdirs)
    epochs = np.arange(1, curves.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, curve in enumerate(curves):
        ax.plot(epochs, curve, lw=0.8, alpha=0.6, label=f"fold {i}")
    ax.plot(epochs, curves.mean(0), "k-", lw=2, label="mean of folds")
    ax.axvspan(max(1, epochs[-1] - last + 1), epochs[-1], color="gray", alpha=0.15,
               label=f"last {last} epochs (reported)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test SRCC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def _check_evaluates_during_training(config: Any, why: str) -> None:
    """Raises ValueError when ``config`` evaluates only at the end of its run."""
    from aqa_jax.steps import steps

    if not steps(config, "eval_every", 1):
        raise ValueError(f"{why}: the config must evaluate every epoch (eval_every_epochs=1), "
                         "not only at the end")


def run_folds(spec: str, workdir: str | Path, *, folds: Iterable[int] = range(4),
              overrides: Sequence[str] = (), last: int = 10) -> dict[str, Any]:
    """Trains every fold of ``spec`` (a config with a ``fold`` arg; resumes finished folds),
    writes ``cv_report.json`` and ``cv_curve.png`` into ``workdir`` and returns the report.

    ``{fold}`` in ``spec`` is replaced by the fold number, so each fold can start from its own
    pretraining run (PECoP pretrains on a JIGSAWS fold's training trials):
    ``configs/musdl.py:dataset=jigsaws,init=pecop,pretrained=runs/pecop_suturing_f{fold}``."""
    from aqa_jax.config_args import load_config
    from aqa_jax.train.loop import train

    workdir = Path(workdir)
    fold_dirs = []
    for fold in folds:
        config = load_config(fold_spec(spec, fold), overrides)
        _check_evaluates_during_training(config, "cross-validation reads the per-epoch test curve")
        fold_dirs.append(workdir / f"fold{fold}")
        train(config, fold_dirs[-1])
    report = cv_report(fold_dirs, last=last)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cv_report.json").write_text(json.dumps(report, indent=2))
    plot_cv(fold_dirs, workdir / CV_PNG, title=spec, last=last)
    return report


def average_tasks(reports: dict[str, dict[str, Any]], key: str = "mean_last_10") -> float:
    """Fisher-z average of the tasks' reported correlations."""
    return fisher_z_mean([r[key] for r in reports.values()])


def classes_report(class_workdirs: dict[str, str | Path], key: str = "srcc") -> dict[str, Any]:
    """Each class's test ``key`` at its best and last evaluation (epoch numbers from 1), and
    the Fisher-z averages of both over the classes."""
    classes = {}
    for name, workdir in class_workdirs.items():
        curve = fold_curves([workdir], key=key)[0]
        best = int(np.nanargmax(curve))
        classes[name] = {"best": float(curve[best]), "best_epoch": best + 1, "last": float(curve[-1]),
                         "epochs": int(len(curve))}
    return {"classes": classes,
            "fisher_z_best": fisher_z_mean([c["best"] for c in classes.values()]),
            "fisher_z_last": fisher_z_mean([c["last"] for c in classes.values()])}


def run_classes(spec: str, workdir: str | Path, tasks: Sequence[str], *,
                overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Trains ``spec`` once per class (``task=<class>``; ``{task}`` in ``spec`` is replaced, so
    each class can start from its own pretraining run) in ``<workdir>/<class>`` (finished runs
    resume), writes ``classes_report.json`` (:func:`classes_report`) and returns it."""
    from aqa_jax.config_args import load_config
    from aqa_jax.train.loop import train

    workdir = Path(workdir)
    dirs = {}
    for task in tasks:
        config = load_config(with_args(spec.replace("{task}", task), task=task), overrides)
        _check_evaluates_during_training(config, "per-class runs read each class's test curve")
        dirs[task] = workdir / task
        train(config, dirs[task])
    report = classes_report(dirs)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "classes_report.json").write_text(json.dumps(report, indent=2))
    return report
