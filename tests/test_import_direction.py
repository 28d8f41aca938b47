"""Imports run one way: train → methods → models / data / weights (DESIGN.md, data flow).

Every module's imports are read from its source with ``ast``, those inside functions
included (a function-level import is still a dependency, only a hidden one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aqa_jax"

# What builds on the methods: training, the Experiment and the commands built from it.
APPLICATION = ("aqa_jax.train", "aqa_jax.experiment", "aqa_jax.cli", "aqa_jax.evaluation",
               "aqa_jax.predict", "aqa_jax.features")
RULES = {
    "aqa_jax.models": ("aqa_jax.methods", *APPLICATION),
    "aqa_jax.data": ("aqa_jax.methods", *APPLICATION),
    "aqa_jax.weights": ("aqa_jax.methods", *APPLICATION),
    "aqa_jax.methods": APPLICATION,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, anywhere in it; relative
    imports resolved, ``from pkg import name`` counted as ``pkg.name`` too (it may be a
    submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_import_reader_sees_function_level_and_relative_imports():
    source = (
        "import numpy as np\n"
        "from aqa_jax.models.i3d import build_i3d\n"
        "def f():\n"
        "    from aqa_jax.train.init_from import record_starting_point\n"
        "    from . import _score\n"
        "    from ..weights import init\n"
        "class C:\n"
        "    def g(self):\n"
        "        import aqa_jax.experiment\n"
    )
    found = imported_modules(source, "aqa_jax.methods.usdl")
    assert {"numpy", "aqa_jax.models.i3d", "aqa_jax.train.init_from", "aqa_jax.methods._score",
            "aqa_jax.weights.init", "aqa_jax.experiment"} <= found
    assert imported_modules("from . import base\n", "aqa_jax.methods", is_package=True) >= {"aqa_jax.methods.base"}


@pytest.mark.parametrize("layer", sorted(RULES))
def test_lower_layers_do_not_import_higher_ones(layer):
    folder = PACKAGE / layer.split(".", 1)[1]
    modules = sorted(folder.rglob("*.py"))
    assert modules, folder
    wrong = []
    for path in modules:
        name = module_name(path)
        for target in sorted(imported_modules(path.read_text(), name, path.name == "__init__.py")):
            if any(_within(target, banned) for banned in RULES[layer]):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports must run train → methods → models / data / weights:\n" + "\n".join(wrong)


def test_training_uses_only_the_public_method_interface():
    """The loop, its helpers and the Experiment import no private ``aqa_jax.methods._*``
    module: what they need of a method is on :class:`aqa_jax.methods.base.Method`."""
    paths = sorted((PACKAGE / "train").rglob("*.py")) + [PACKAGE / "experiment.py"]
    wrong = [f"{module_name(p)} imports {t}" for p in paths
             for t in sorted(imported_modules(p.read_text(), module_name(p)))
             if _within(t, "aqa_jax.methods") and any(part.startswith("_") for part in t.split(".")[2:3])]
    assert not wrong, "\n".join(wrong)
