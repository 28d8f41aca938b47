"""README.md's method × dataset table is the one the configs generate, and its commands work.

(a) the table between the markers is ``python -m aqa_jax.readme_table``'s output;
(b) every ``--config SPEC`` in it resolves with ``load_config`` (placeholders ``T`` / ``C``:
    the dataset's first task, ``F``: fold 0), its ``--tasks`` are the config's, and every
    ``build-data NAME`` is a builder of ``tfds_builders/``;
(c) every (config, dataset) pair of the configs' ``TASKS`` has a command in the table, or its
    dataset is in ``readme_table.NOT_IN_TABLE`` with the reason.
Nothing trains; the whole file takes about a second.
"""

import re
from pathlib import Path

import pytest

from aqa_jax import readme_table
from aqa_jax.config_args import config_tasks, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
COMMAND = re.compile(r"`([^`]+)`")
SPEC = re.compile(r"--config (configs/([a-z0-9_]+)\.py:([^\s`]*))")


def table_text() -> str:
    text = (REPO / "README.md").read_text()
    start, end = text.index(readme_table.BEGIN), text.index(readme_table.END)
    return text[start:end]


def commands() -> list[str]:
    """Every backticked command of the table's commands column."""
    lines = [line for line in table_text().splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| method | dataset | commands"), lines[:1]
    rows = [line.split(" | ") for line in lines[1:]]
    return [c for row in rows for c in COMMAND.findall(row[2]) if c.startswith(("aqa-jax", "7z"))]


def specs() -> list[tuple[str, str, str]]:
    """(spec, config name, arg) of every ``--config configs/...`` in the table."""
    return [m.groups() for c in commands() for m in SPEC.finditer(c)]


def default_dataset(name: str, arg: str) -> str:
    items = dict(i.partition("=")[::2] for i in arg.split(",") if i)
    return items.get("dataset") or next(iter(config_tasks(f"{CONFIGS}/{name}.py")))


def filled(name: str, arg: str) -> str:
    """``arg`` with ``T`` / ``C`` / ``{task}`` the dataset's first task and ``F`` / ``{fold}`` 0."""
    tasks = config_tasks(f"{CONFIGS}/{name}.py").get(default_dataset(name, arg), ())
    return readme_table.fill(arg, tasks[0] if tasks else "")


def test_readme_table_is_the_generated_one():
    text = (REPO / "README.md").read_text()
    generated = readme_table.replace_table(text, readme_table.render_table(CONFIGS))
    assert generated == text, "README.md's method × dataset table differs from the configs': " \
                              "run `python -m aqa_jax.readme_table` (--check shows the diff)"


def test_check_reports_a_hand_edit(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    assert readme_table.main(["--check", "--readme", str(readme)]) == 0
    readme.write_text(readme.read_text().replace("runs/core_fd", "runs/core_finediving", 1))
    assert readme_table.main(["--check", "--readme", str(readme)]) == 1
    assert "+| PECoP → CoRe | FineDiving" in capsys.readouterr().out
    assert readme_table.main(["--readme", str(readme)]) == 0
    assert readme.read_text() == (REPO / "README.md").read_text()


def test_every_config_spec_in_the_table_resolves():
    found = specs()
    assert len(found) >= 25, found
    for spec, name, arg in found:
        config = load_config(f"{CONFIGS}/{name}.py:{filled(name, arg)}")
        assert config.method, spec


def test_cv_tasks_and_built_datasets_are_the_configs():
    for command in commands():
        if command.startswith("aqa-jax cv "):
            _, name, arg = SPEC.search(command).groups()
            tasks = re.search(r"--tasks (\S+)", command).group(1)
            assert tuple(tasks.split(",")) == config_tasks(f"{CONFIGS}/{name}.py")[default_dataset(name, arg)]
        if command.startswith("aqa-jax build-data "):
            assert (REPO / "tfds_builders" / command.split()[2]).is_dir(), command


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.py") if p.stem != "common"))
def test_every_dataset_of_a_config_is_in_the_table_or_excluded(name):
    covered = {default_dataset(n, arg) for _, n, arg in specs() if n == name}
    for dataset in config_tasks(f"{CONFIGS}/{name}.py"):
        assert dataset in covered or dataset in readme_table.NOT_IN_TABLE, (
            f"configs/{name}.py covers {dataset}: add a row to its TABLE_ROWS, or the dataset and "
            "the reason to readme_table.NOT_IN_TABLE")
        assert not (dataset in covered and dataset in readme_table.NOT_IN_TABLE), dataset


def test_a_spec_without_dataset_trains_on_the_first_of_tasks():
    """The table reads a spec that names no dataset as the config's first ``TASKS`` dataset."""
    for spec, name, arg in specs():
        if "dataset=" not in arg:
            first = default_dataset(name, arg)
            plain = load_config(f"{CONFIGS}/{name}.py:{filled(name, arg)}")
            named = load_config(f"{CONFIGS}/{name}.py:dataset={first},{filled(name, arg)}")
            assert plain.to_dict() == named.to_dict(), spec
