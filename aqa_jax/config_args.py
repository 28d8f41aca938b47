"""Loading configs: ``path/to/config.py[:arg]``, ``--set key=value`` overrides, checks.

Every entry point (``aqa-jax train|cv|classes|config``, ``launch/main.py``) resolves a config
through :func:`load_config`, so a spec means the same run everywhere:

1. the file is loaded as a module of a package rooted at its folder (``from . import common``
   finds ``configs/common.py``, whatever the current directory), and ``get_config(arg)`` is
   called with the text after the colon, less a ``hardware=NAME`` item;
2. ``hardware=NAME`` (in the arg, or the ``hardware`` keyword: ``launch/main.py --hardware``)
   applies a preset of :mod:`aqa_jax.train.hardware`;
3. the overrides (``--set key.path=value``, repeatable) are applied, so they can change what
   the preset set (e.g. ``batch_size`` to fit the slice, the checkpoint interval);
4. the run settings are checked (:func:`validate_config`), and the global batch against the
   preset's devices and processes.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import math
import sys
import types
from pathlib import Path
from typing import Any, Iterable, Mapping

import ml_collections

from aqa_jax.steps import check_no_renamed_keys, steps


def load_module(path: str | Path) -> types.ModuleType:
    """The config file ``path`` as a module of a package rooted at its folder (so that it can
    ``from . import common``), executed afresh."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    folder = path.resolve().parent
    package = "aqa_jax_configs_" + hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    if package not in sys.modules:
        module = types.ModuleType(package, f"the config files in {folder}")
        module.__path__ = [str(folder)]
        sys.modules[package] = module
    name = f"{package}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def split_spec(spec: str) -> tuple[str, str, str]:
    """``"f.py:a=1,hardware=gpu_8,b"`` -> ``("f.py", "a=1,b", "gpu_8")``."""
    path, _, arg = spec.partition(":")
    hardware, items = "", []
    for item in filter(None, arg.split(",")):
        key, _, value = item.partition("=")
        if key.strip() == "hardware":
            hardware = value.strip()
        else:
            items.append(item)
    return path, ",".join(items), hardware


def config_tasks(spec: str) -> dict[str, tuple[str, ...]]:
    """``{dataset: tasks}`` a config file covers (its module-level ``TASKS``; the first task of
    each dataset is its default), or ``{}`` for a config without datasets."""
    return dict(getattr(load_module(split_spec(spec)[0]), "TASKS", {}))


def load_config(spec: str, overrides: Iterable[str] = (), *, hardware: str = "") -> ml_collections.ConfigDict:
    """The config of ``path/to/config.py[:arg]``: its ``get_config(arg)``, with the hardware
    preset (``hardware=`` in ``arg``, or ``hardware``) and ``overrides`` (``key.path=value``)
    applied, checked by :func:`validate_config` (see the module docstring)."""
    path, arg, in_arg = split_spec(spec)
    if in_arg and hardware and in_arg != hardware:
        raise ValueError(f"{spec} sets hardware={in_arg} but --hardware {hardware} was given: keep one")
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} has no get_config(arg) function")
    config = module.get_config(arg or None)
    preset = in_arg or hardware
    if preset:
        from aqa_jax.train.hardware import apply_hardware

        apply_hardware(config, preset, check=False)
    validate_config(config, where=spec)
    overrides = list(overrides)
    if overrides:
        apply_overrides(config, overrides)
    if preset and preset != "none":
        from aqa_jax.train.hardware import check_layout, get_hardware

        check_layout(config, get_hardware(preset).num_devices, get_hardware(preset).num_processes)
    return config


# The *_steps / *_epochs pairs of aqa_jax.steps: setting one of a pair (an override) removes
# the other, and either may be added to a config that has neither.
PAIRS: tuple[str, ...] = ("total", "eval_every", "checkpoint.every", "log_every")


def _pair_partner(key: str) -> str | None:
    for name in PAIRS:
        for unit, other in (("steps", "epochs"), ("epochs", "steps")):
            if key == f"{name}_{unit}":
                return f"{name}_{other}"
    return None


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """Applies ``["optimizer.lr=0.001", "total_steps=50", ...]`` (``--set``) in place: values
    are parsed as Python literals when they can be, and the key must exist, except one of a
    ``*_steps`` / ``*_epochs`` pair (:data:`PAIRS`), which replaces its partner."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"override {item!r} must look like key.path=value")
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            if name not in node:
                raise ValueError(f"override {item!r}: the config has no {name!r} under it")
            node = node[name]
        partner = _pair_partner(key)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        if partner is not None and leaf not in node:
            if not (isinstance(value, (int, float)) and not isinstance(value, bool)):
                raise ConfigError(f"--set {item}: {key} takes a number, not {raw.strip()!r}")
            partner_leaf = partner.rpartition(".")[2]
            if partner_leaf in node:
                del node[partner_leaf]
            with node.ignore_type():
                node[leaf] = value
            continue
        if leaf not in node:
            raise ValueError(f"override {item!r}: the config has no key {key!r}")
        old = node[leaf]
        if isinstance(old, str) and not isinstance(value, str):
            value = raw.strip()  # a text setting keeps its text (e.g. data.config=3)
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(old, bool) != isinstance(value, bool)) and old is not None and (
                isinstance(old, (bool, int, float)) or isinstance(value, bool)):
            raise ConfigError(f"--set {item}: {key} takes {_a(type(old))} (now {old!r}), "
                              f"not {_a(type(value))}")
        if partner is not None and isinstance(old, int) and isinstance(value, float) and not isinstance(old, bool):
            with node.ignore_type():  # total_epochs=2.5: a pair's value may be fractional
                node[leaf] = value
        else:
            try:
                node[leaf] = value
            except (TypeError, ValueError):
                raise ConfigError(f"--set {item}: {key} takes {_a(type(old))} (now {old!r}), "
                                  f"not {raw.strip()!r}") from None
        if partner is not None:
            partner_leaf = partner.rpartition(".")[2]
            if partner_leaf in node:
                del node[partner_leaf]
    validate_config(config, where="--set " + " ".join(overrides))
    return config


def _a(kind: type) -> str:
    name = {"int": "integer", "float": "number", "str": "string", "bool": "bool (True/False)"}.get(
        kind.__name__, kind.__name__)
    return ("an " if name[0] in "aeiou" else "a ") + name


class ConfigError(ValueError):
    """A config value of the wrong type or outside its range (one line naming the key)."""


# Declared ranges of the run settings every config shares: (kind, lowest, highest, note). A key
# absent from a config is not checked; ``*`` matches any one level.
_RANGES: dict[str, tuple[type, float | None, float | None, str]] = {
    "seed": (int, None, None, ""),
    "batch_size": (int, 1, None, "examples per step"),
    "step_per_update": (int, 1, None, "steps accumulated per update"),
    "total_steps": (int, 0, None, "0: not given, see total_epochs"),
    "total_epochs": (float, 0, None, "0: not given, see total_steps"),
    "num_devices": (int, 0, None, "0: all devices"),
    "log_every_steps": (int, 1, None, ""),
    "prefetch_batches": (int, 0, None, "batches put on the devices ahead of the step"),
    "eval_every_steps": (int, 0, None, "0 or unset: at the end only"),
    "eval_every_epochs": (float, 0, None, "0 or unset: at the end only"),
    "checkpoint.every_steps": (int, 0, None, ""),
    "checkpoint.every_epochs": (float, 0, None, ""),
    "checkpoint.max_to_keep": (int, 1, None, ""),
    "optimizer.lr": (float, 0, None, ""),
    "optimizer.weight_decay": (float, 0, None, ""),
    "optimizer.grad_clip_norm": (float, 0, None, "0: no clipping"),
    "optimizer.b1": (float, 0, 1, ""),
    "optimizer.b2": (float, 0, 1, ""),
    "optimizer.eps": (float, 0, None, ""),
    "optimizer.momentum": (float, 0, 1, ""),
    "optimizer.eta_min": (float, 0, None, ""),
    "optimizer.lr_factors.*": (float, 0, None, ""),
    "clips.num_frames": (int, 1, None, ""),
    "clips.clip_len": (int, 1, None, ""),
    "data.repeat": (int, 1, None, ""),
    "data.eval_repeat": (int, 1, None, ""),
    "data.worker_count": (int, 0, None, ""),
    "data.reader_nice": (int, 0, 19, "0: reader threads at the process's priority"),
    "*.dropout": (float, 0, 1, ""),
    "*.dropout_rate": (float, 0, 1, ""),
}


def _lookup(config: Any, pattern: str) -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf of ``config`` matching ``pattern``."""
    found = [("", config)]
    for part in pattern.split("."):
        nxt = []
        for prefix, node in found:
            if not hasattr(node, "keys"):
                continue
            for name in (list(node.keys()) if part == "*" else [part]):
                if name in node:
                    nxt.append((f"{prefix}.{name}" if prefix else name, node[name]))
        found = nxt
    return found


def validate_config(config: Mapping[str, Any], where: str = "config") -> None:
    """Checks the shared run settings once, when a config is loaded or overridden: types and
    ranges (:data:`_RANGES`), no key of earlier releases (:data:`aqa_jax.steps.RENAMED`), at
    most one of each ``*_steps`` / ``*_epochs`` pair. A wrong value is a :class:`ConfigError`
    naming the key, the value and the allowed range, before anything runs (instead of a
    ZeroDivisionError from ``batch_size=0`` or a "trained -5 steps" run)."""
    for pattern, (kind, low, high, note) in _RANGES.items():
        for key, value in _lookup(config, pattern):
            if value is None or hasattr(value, "keys"):
                continue
            ok_type = (isinstance(value, int) if kind is int else
                       isinstance(value, (int, float))) and not isinstance(value, bool)
            if not ok_type:
                raise ConfigError(f"{where}: {key}={value!r} must be {'an integer' if kind is int else 'a number'}")
            if not math.isfinite(value) or (low is not None and value < low) or (
                    high is not None and value > high):
                bounds = ("finite" if not math.isfinite(value) or low is None else
                          f">= {low}" if high is None else f"in [{low}, {high}]")
                raise ConfigError(f"{where}: {key}={value!r} must be {bounds}"
                                  + (f" ({note})" if note else ""))
    try:
        check_no_renamed_keys(config, where=where)
        for name in ("total", "eval_every", "log_every"):
            steps(config, name, 1, where=where)
        if hasattr(config.get("checkpoint"), "keys"):
            steps(config["checkpoint"], "every", 1, where=f"{where}: checkpoint")
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None


def format_config(config: ml_collections.ConfigDict) -> str:
    """The config as ``aqa-jax config`` prints it: indented JSON, keys in the config's order."""
    import json

    return json.dumps(plain(config), indent=2)


def plain(value: Any) -> Any:
    """A config (or any value in one) as plain dicts, lists and scalars, keys as text."""
    if hasattr(value, "keys"):
        return {str(k): plain(value[k]) for k in value.keys()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
