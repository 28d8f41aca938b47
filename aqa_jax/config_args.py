"""big_vision-style string arguments for ``get_config(arg)``: ``"variant=pecop,debug"``."""

from __future__ import annotations

from typing import Any

import ml_collections


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses ``"k1=v1,k2,k3=v3"`` into a ConfigDict over ``defaults``.

    Values take the type of their default (``bool``: ``k`` alone or ``k=true/false``); an
    unknown key is an error naming the allowed ones.
    """
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; allowed: {sorted(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            out[key] = value.strip().lower() in ("", "1", "true", "yes")
        elif value == "":
            raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
        else:
            out[key] = type(default)(value) if default is not None else value
    return out


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads ``path/to/config.py[:arg]`` by calling its ``get_config(arg)``."""
    import importlib.util
    from pathlib import Path

    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"aqa_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} has no get_config(arg) function")
    config = module.get_config(arg or None)
    validate_config(config, where=spec)
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """Applies ``["optimizer.lr=0.001", "total_steps=50", ...]`` (as ``--config.x=y`` does):
    values are parsed as Python literals when they can be, and the key must exist."""
    import ast

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key.path=value")
        *parents, leaf = key.strip().split(".")
        node = config
        for name in parents:
            if name not in node:
                raise ValueError(f"override {item!r}: the config has no {name!r} under it")
            node = node[name]
        if leaf not in node:
            raise ValueError(f"override {item!r}: the config has no key {key!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        old = node[leaf]
        if isinstance(old, str) and not isinstance(value, str):
            value = raw.strip()  # a text setting keeps its text (e.g. data.config=3)
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(old, bool) != isinstance(value, bool)) and old is not None and (
                isinstance(old, (bool, int, float)) or isinstance(value, bool)):
            raise ConfigError(f"--set {item}: {key} takes {_a(type(old))} (now {old!r}), "
                              f"not {_a(type(value))}")
        try:
            node[leaf] = value
        except (TypeError, ValueError):
            raise ConfigError(f"--set {item}: {key} takes {_a(type(old))} (now {old!r}), "
                              f"not {raw.strip()!r}") from None
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
    "total_steps": (int, 0, None, "0: num_epochs x steps per epoch"),
    "num_epochs": (int, 0, None, ""),
    "num_devices": (int, 0, None, "0: all devices"),
    "log_every_steps": (int, 1, None, ""),
    "eval_every_steps": (int, -1, None, "-1: once per epoch, 0: at the end only"),
    "checkpoint.every_steps": (int, 0, None, "0: once per epoch"),
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


def validate_config(config: ml_collections.ConfigDict, where: str = "config") -> None:
    """Checks the shared run settings against their declared types and ranges
    (:data:`_RANGES`), once, when a config is loaded or overridden: a wrong value is a
    :class:`ConfigError` naming the key, the value and the allowed range, before anything runs
    (instead of a ZeroDivisionError from ``batch_size=0`` or a "trained -5 steps" run)."""
    import math

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
