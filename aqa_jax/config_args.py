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
    return module.get_config(arg or None)


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
        if isinstance(node[leaf], float) and isinstance(value, int):
            value = float(value)
        node[leaf] = value
    return config
