"""Every shipped config, resolved with the argument combinations users run, as flat JSON.

``tests/test_config_golden.py`` compares the configs against ``tests/data/configs_golden.json``
key by key, so a change to any resolved value is seen (and, when intended, recorded with
``python tests/config_golden.py write``). ``python tests/config_golden.py dump DIR`` writes one
JSON file per spec (a before/after record of a refactoring).

The specs: each dataset and task of each config, each ``init`` / ``variant`` of its first task,
``probe``, ``debug`` (per dataset and per synthetic task), ``weights=``, ``hardware=``, the
method-specific args (``decoding``, ``tasks``, ``train_size``, ``variant``, ...), and every
spec the README and docs/REPRODUCING.md name.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(os.environ.get("AQA_JAX_GOLDEN_CONFIGS", REPO / "configs"))  # another checkout's
GOLDEN = REPO / "tests" / "data" / "configs_golden.json"

_FINETUNE_DATASETS = {
    "usdl": ("pd4t", "mtl_aqa", "jigsaws", "aqa7", "synthetic_aqa"),
    "musdl": ("mtl_aqa", "jigsaws", "synthetic_aqa"),
    "core": ("mtl_aqa", "fine_diving", "jigsaws", "pd4t", "aqa7", "synthetic_aqa"),
    "tsa": ("fine_diving", "synthetic_aqa"),
}
_TASKS = {
    "mtl_aqa": ("diving",), "fine_diving": ("diving",),
    "jigsaws": ("suturing", "needle_passing", "knot_tying"),
    "pd4t": ("gait", "finger_tapping", "hand_movement", "leg_agility"),
    "synthetic_aqa": ("finger_tapping", "hand_movement", "leg_agility"),
    "aqa7": ("diving", "gym_vault", "ski_big_air", "snowboard_big_air", "sync_diving_3m",
             "sync_diving_10m"),
}


def _finetune(method: str) -> Iterator[str]:
    for dataset in _FINETUNE_DATASETS[method]:
        tasks = _TASKS[dataset]
        yield f"dataset={dataset}"
        for task in tasks:
            yield f"dataset={dataset},task={task}"
            yield f"dataset={dataset},task={task},debug"
        first = f"dataset={dataset},task={tasks[0]}"
        for init in ("pecop", "hpt_bn", "dom_s"):
            yield f"{first},init={init},pretrained=runs/{init}_x"
            yield f"{first},init={init},debug"
            yield f"{first},init={init},pretrained=runs/{init}_x,debug"
        yield f"{first},init=dom_g"
        yield f"{first},probe"
        yield f"{first},init=pecop,pretrained=runs/pecop_x,probe"
        for weights in ("rgb_scratch", "rgb_imagenet_hassony2", "rgb_imagenet_piergiaj",
                        "kinetics400", "weights/converted"):
            yield f"{first},weights={weights}"
        yield f"{first},weights=rgb_imagenet_hassony2,debug"
        if dataset == "jigsaws":
            for fold in (1, 2, 3):
                yield f"dataset=jigsaws,fold={fold}"
            yield "dataset=jigsaws,init=pecop,pretrained=runs/p_f3,fold=3"
        if method in ("usdl", "musdl"):
            yield f"{first},decoding=expectation"
            yield f"{first},decoding=expectation,probe"
    yield "debug"
    yield ""


def _pecop() -> Iterator[str]:
    for dataset in ("pd4t", "mtl_aqa", "jigsaws", "fine_diving", "synthetic_aqa"):
        tasks = _TASKS[dataset]
        yield f"dataset={dataset}"
        yield f"dataset={dataset},debug"
        for task in tasks:
            yield f"dataset={dataset},task={task}"
            yield f"dataset={dataset},task={task},debug"
        first = f"dataset={dataset},task={tasks[0]}"
        for variant in ("pecop", "hpt_bn", "dom_s", "dom_g"):
            yield f"{first},variant={variant}"
            yield f"{first},variant={variant},debug"
        for weights in ("rgb_scratch", "rgb_imagenet_piergiaj", "weights/pecop_gait"):
            yield f"{first},weights={weights}"
        for hardware in ("gpu_8", "tpu_v5e_16", "tpu_v4_32"):
            yield f"{first},hardware={hardware}"
        if dataset == "jigsaws":
            for fold in (1, 2, 3):
                yield f"dataset=jigsaws,task=knot_tying,fold={fold}"
    yield "hardware=gpu_8"
    yield "debug"
    yield ""


def _features(method: str) -> Iterator[str]:
    for task in ("Ball", "Clubs", "Hoop", "Ribbon"):
        yield f"dataset=rhythmic_gymnastics,task={task}"
        yield f"dataset=rhythmic_gymnastics,task={task},debug"
    yield "dataset=rhythmic_gymnastics,task=ball"
    for task in ("TES", "PCS"):
        yield f"dataset=fis_v,task={task}"
    yield "dataset=fis_v,task=TES,debug"
    yield "dataset=synthetic_features"
    yield "dataset=synthetic_features,task=small"
    yield "dataset=features,folder=/nonexistent/feats,label_scale=4"
    yield "dataset=features,folder=/nonexistent/feats,label_scale=104.5,max_clips=128"
    yield "max_clips=128"
    yield "label_scale=10"
    if method == "cofinal":
        yield "task=Ball,variant=cofinal_2"
        yield "task=Ribbon,variant=cofinal"
        yield "task=Ball,faithful_quirks"
    yield "debug"
    yield ""


def _multitask() -> Iterator[str]:
    for tasks in ("score", "score+cls", "score+caps", "all"):
        yield f"tasks={tasks},pretrained=weights/c3d"
        yield f"tasks={tasks},debug"
    for size in (450, 280, 140):
        for tasks in ("score", "all"):
            yield f"tasks={tasks},train_size={size},pretrained=weights/c3d"
    yield "dataset=unlv_dive,tasks=score,pretrained=weights/c3d"
    yield "dataset=unlv_dive,tasks=score+cls,pretrained=weights/c3d"
    yield "dataset=synthetic_aqa,tasks=all,pretrained=none"
    yield "pretrained=none"
    yield "debug"
    yield "debug,task=hand_movement"


def _i3d() -> Iterator[str]:
    yield ""
    yield "variant=pecop,adapters=all"
    yield "variant=piergiaj,adapters=Mixed_4b+Mixed_5c"
    yield "adapters=none,reduction=8,zero_init"


# Combinations a config refuses: the record keeps the error type (the message may be reworded).
REFUSED = {
    "core": ["dataset=pd4t,task=gait,init=pecop", "dataset=pd4t,task=running", "dataset=fis_v",
             "dataset=pd4t,init=pecop,pretrained=runs/p,weights=rgb_scratch", "init=dom_x"],
    "musdl": ["dataset=aqa7,task=diving", "dataset=pd4t"],
    "usdl": ["dataset=fine_diving", "varient=pecop"],
    "tsa": ["dataset=mtl_aqa"],
    "pecop": ["dataset=aqa7", "variant=full", "task=gait,dataset=jigsaws"],
    "cofinal": ["dataset=features,folder=/x/f", "dataset=features,label_scale=4", "task=Vault",
                "variant=cofinal_3", "dataset=fis_v,folder=/x"],
    "gdlt": ["dataset=features,folder=/x/f"],
    "c3d_avg": ["tasks=score", "dataset=unlv_dive,tasks=all,pretrained=none", "tasks=cls,pretrained=none",
                "train_size=100,pretrained=none", "dataset=unlv_dive,train_size=450,pretrained=none"],
    "mscadc": ["tasks=score"],
}


def documented() -> Iterator[tuple[str, str]]:
    """(config name, arg) of every spec README.md and docs/REPRODUCING.md name, their shell
    placeholders filled in (a task variable: the dataset's first task; a fold: 0)."""
    import re

    for doc in ("README.md", "docs/REPRODUCING.md"):
        for name, arg in re.findall(r"configs/([a-z0-9_]+)\.py:([^\s`\"')]+)", (REPO / doc).read_text()):
            items = [i for i in arg.split(",") if i and "$(" not in i and i != "..."]
            keyed = dict(i.partition("=")[::2] for i in items)
            task = _TASKS.get(keyed.get("dataset", ""), ("",))[0]
            fill = {"T": task, "$t": task, "$V": "pecop", "F": "0", "$f": "0", "$tasks": "all",
                    "$n": "450", "$I": "pecop"}
            filled = []
            for item in items:
                key, eq, value = item.partition("=")
                value = fill.get(value, value).replace("{task}", task).replace("{fold}", "0")
                for var, sub in fill.items():
                    if var.startswith("$"):
                        value = value.replace(var, sub)
                filled.append(f"{key}{eq}{value}")
            yield name, ",".join(filled)


def specs() -> dict[str, list[str]]:
    """Config file name -> the arg strings resolved (each as ``file.py:arg``)."""
    out = {m: list(dict.fromkeys(_finetune(m))) for m in _FINETUNE_DATASETS}
    out["pecop"] = list(dict.fromkeys(_pecop()))
    out["cofinal"] = list(dict.fromkeys(_features("cofinal")))
    out["gdlt"] = list(dict.fromkeys(_features("gdlt")))
    out["c3d_avg"] = list(dict.fromkeys(_multitask()))
    out["mscadc"] = list(dict.fromkeys(_multitask()))
    out["i3d"] = list(_i3d())
    for name, refused in REFUSED.items():
        out[name] += refused
    for name, arg in documented():
        if arg not in out[name]:
            out[name].append(arg)
    return out


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}`` of a nested mapping; an empty mapping is kept as ``{}``."""
    from aqa_jax.config_args import plain

    if hasattr(tree, "keys"):
        if not tree and prefix:
            return {prefix: {}}
        out: dict[str, Any] = {}
        for key in tree.keys():
            out.update(flatten(tree[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: plain(tree)}


def resolve_all(load: Callable[[str], Any]) -> dict[str, dict[str, Any]]:
    """``{"core.py:dataset=mtl_aqa": flat config or {"error": message}}`` for every spec."""
    out = {}
    for name, args in specs().items():
        for arg in args:
            key = f"{name}.py:{arg}"
            try:
                out[key] = flatten(load(f"{CONFIGS}/{key}"))
            except (ValueError, KeyError) as err:  # a refused combination is part of the record
                out[key] = {"error": type(err).__name__}
    return out


def _default_load(spec: str) -> Any:
    sys.path.insert(0, str(CONFIGS.parent))
    from aqa_jax.config_args import load_config

    return load_config(spec)


def compress(resolved: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{spec: {"base": an earlier spec of the same file or None, "set": {...}, "unset": [...]}}``:
    each spec stored as its difference from the closest spec before it (46 kB instead of 1 MB)."""
    out: dict[str, Any] = {}
    seen: dict[str, list[str]] = {}
    for key, flat in resolved.items():
        earlier = seen.setdefault(key.partition(":")[0], [])
        base = min(earlier, key=lambda b: len(_diff(resolved[b], flat)[0]) + len(_diff(resolved[b], flat)[1]),
                   default=None)
        changed, removed = _diff(resolved[base] if base else {}, flat)
        out[key] = {"base": base, "set": changed, "unset": removed}
        earlier.append(key)
    return out


def _diff(base: dict[str, Any], flat: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    return ({k: v for k, v in flat.items() if k not in base or base[k] != v},
            sorted(k for k in base if k not in flat))


def expand(golden: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The inverse of :func:`compress`."""
    out: dict[str, dict[str, Any]] = {}
    for key, entry in golden.items():  # a base always comes before the specs built on it
        flat = {k: v for k, v in (out[entry["base"]] if entry["base"] else {}).items()
                if k not in entry["unset"]}
        flat.update(entry["set"])
        out[key] = flat
    return out


def dumps(golden: dict[str, Any]) -> str:
    """The golden record as JSON with one line per spec header and per key (diff-friendly)."""
    entries = []
    for spec, entry in golden.items():
        items = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in entry["set"].items())
        entries.append(f"{json.dumps(spec)}: {{\"base\": {json.dumps(entry['base'])}, "
                       f"\"unset\": {json.dumps(entry['unset'])}, \"set\": {{\n{items}}}}}")
    return "{\n" + ",\n".join(entries) + "\n}\n"


def main(argv: list[str]) -> int:
    if argv[:1] == ["dump"] and len(argv) == 2:
        out = Path(argv[1])
        out.mkdir(parents=True, exist_ok=True)
        resolved = resolve_all(_default_load)
        for key, flat in resolved.items():
            (out / (key.replace("/", "_").replace(":", "__") + ".json")).write_text(
                json.dumps(flat, indent=1, sort_keys=True))
        (out / "ALL.json").write_text(json.dumps(resolved, indent=1, sort_keys=True))
        print(f"{len(resolved)} resolved configs written to {out}")
        return 0
    if argv == ["write"]:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(dumps(compress(resolve_all(_default_load))))
        print(f"wrote {GOLDEN}")
        return 0
    print("usage: python tests/config_golden.py dump DIR | write", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
