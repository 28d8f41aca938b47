"""``aqa-jax``'s output: one-line errors for the project's own errors, tracebacks for the rest,
``--debug``, ``--version``, ``--help``'s examples and log lines on stderr.

Oracles: the exit statuses and message forms the CLI documents, Python's own traceback text
("Traceback (most recent call last)"), the installed packages' metadata and the logging
format ("YYYY-MM-DD HH:MM:SS LEVEL name: message").
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from importlib import metadata

import jax
import jax.numpy as jnp
import pytest

import aqa_jax
from aqa_jax import cli
from aqa_jax.models.layers import conv3d

TRACEBACK = "Traceback (most recent call last)"
HINT = "(--debug shows the traceback)"


def run_with(monkeypatch, capsys, body, *argv):
    """Runs ``aqa-jax [argv] demo`` with the demo replaced by ``body``: (status, stderr)."""
    monkeypatch.setattr(cli, "_demo", lambda args: body())
    code = cli.main([*argv, "demo"])
    return code, capsys.readouterr().err


def project_function(source: str, name: str):
    """A function whose frames are a project module's (``aqa_jax.fake_module``)."""
    namespace = {"__name__": "aqa_jax.fake_module"}
    exec(compile(source, "aqa_jax/fake_module.py", "exec"), namespace)
    return namespace[name]


def test_a_project_value_error_is_one_line_with_the_hint_and_status_2(tmp_path, capsys):
    code = cli.main(["evaluate", str(tmp_path / "no_run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and TRACEBACK not in err
    assert err.startswith("aqa-jax evaluate: error: ") and "no_run" in err
    assert err.rstrip().endswith(HINT)


def test_debug_shows_the_traceback_of_a_project_error_and_keeps_the_status(tmp_path, capsys):
    for argv in (["--debug", "evaluate", str(tmp_path / "no_run")],
                 ["evaluate", str(tmp_path / "no_run"), "--debug"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert TRACEBACK in err and "aqa_jax" in err
        assert err.rstrip().splitlines()[-1].startswith("aqa-jax evaluate: error: ")
        assert HINT not in err


def bad_convolution():
    """Project code (conv3d) handed mismatched channels inside jit: JAX raises the ValueError."""
    x, kernel = jnp.zeros((1, 4, 8, 8, 3)), jnp.zeros((3, 3, 3, 5, 8))
    return jax.jit(lambda x, k: conv3d(x, k, (1, 1, 1), [(1, 1)] * 3, "xla"))(x, kernel)


def test_a_value_error_from_inside_jax_keeps_its_traceback(monkeypatch, capsys):
    with pytest.raises(ValueError) as caught:
        run_with(monkeypatch, capsys, bad_convolution)
    # JAX's traceback filtering leaves our conv3d line last; it is a call, not a raise
    assert "aqa_jax" in caught.traceback[-1].frame.f_globals["__name__"]
    assert "aqa-jax demo: error" not in capsys.readouterr().err


def test_the_same_error_in_a_subprocess_prints_the_traceback():
    code = ("import sys, jax, jax.numpy as jnp\n"
            "from aqa_jax import cli\nfrom aqa_jax.models.layers import conv3d\n"
            "cli._demo = lambda args: jax.jit(lambda x, k: conv3d(x, k, (1, 1, 1), [(1, 1)] * 3,"
            " 'xla'))(jnp.zeros((1, 4, 8, 8, 3)), jnp.zeros((3, 3, 3, 5, 8)))\n"
            "sys.exit(cli.main(['demo']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin",
                                                "AQA_JAX_CACHE": "off"})
    assert done.returncode == 1 and TRACEBACK in done.stderr and "ValueError" in done.stderr
    assert HINT not in done.stderr


def test_a_bug_in_project_code_keeps_its_traceback(monkeypatch, capsys):
    """A ValueError that no raise statement of ours raised (a failed unpacking) is a bug."""
    unpack = project_function("def unpack():\n    a, b = (1, 2, 3)\n", "unpack")
    with pytest.raises(ValueError, match="too many values"):
        run_with(monkeypatch, capsys, unpack)
    # the same frames with a raise statement: one of our checks
    check = project_function("def check():\n    raise ValueError('batch_size=0 must be >= 1')\n",
                             "check")
    code, err = run_with(monkeypatch, capsys, check)
    assert code == 2 and err == f"aqa-jax demo: error: batch_size=0 must be >= 1 {HINT}\n"


def test_a_missing_file_met_by_project_code_is_one_line(monkeypatch, capsys, tmp_path):
    reader = project_function("def read(p):\n    return open(p).read()\n", "read")
    code, err = run_with(monkeypatch, capsys, lambda: reader(tmp_path / "absent.txt"))
    assert code == 2 and "absent.txt" in err and err.count("\n") == 1


def test_errors_raised_by_libraries_keep_their_traceback(monkeypatch, capsys):
    import json

    with pytest.raises(json.JSONDecodeError):
        run_with(monkeypatch, capsys, lambda: json.loads("{not json"))


def test_nan_stop_preemption_and_project_error_classes(monkeypatch, capsys, tmp_path):
    from aqa_jax.config_args import ConfigError
    from aqa_jax.train.loop import NonFiniteLossError, TrainingPreempted

    def raiser(err):
        def body():
            raise err
        return body

    code, err = run_with(monkeypatch, capsys, raiser(NonFiniteLossError("loss is nan at step 3")))
    assert code == 1 and err == f"aqa-jax demo: stopped: loss is nan at step 3 {HINT}\n"
    preempted = TrainingPreempted(4, tmp_path)
    code, err = run_with(monkeypatch, capsys, raiser(preempted))
    assert code == 143 and err == f"aqa-jax demo: {preempted}\n" and "step 4" in err
    # a project error class counts wherever it is raised (here: from a test's frame)
    code, err = run_with(monkeypatch, capsys, raiser(ConfigError("optimizer.lr=-1 must be >= 0")))
    assert code == 2 and err.startswith("aqa-jax demo: error: optimizer.lr=-1")


def test_version_names_the_package_and_jax(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"aqa-jax {aqa_jax.__version__} ")
    assert f"jax {metadata.version('jax')}" in out and f"jaxlib {metadata.version('jaxlib')}" in out


def test_help_shows_the_examples_a_new_user_runs(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    examples = out[out.index("examples:"):]
    commands = [line.split()[1] for line in examples.splitlines()
                if line.startswith("  aqa-jax ")]
    for command in ("demo", "build-data", "train", "evaluate", "predict", "extract-features",
                    "classify", "config"):
        assert command in commands, command
    parser = cli.build_parser()
    for line in examples.splitlines():  # every example parses
        if line.startswith("  aqa-jax "):
            words = line.split("#")[0].split()[1:]
            parser.parse_args(words)
    assert "--debug" in out and "--version" in out


def test_log_lines_reach_stderr_timestamped_and_the_logger_is_restored(monkeypatch, capsys):
    from aqa_jax.progress import Progress

    monkeypatch.setenv("AQA_JAX_PROGRESS", "log")
    logger = logging.getLogger("aqa_jax")
    before = (list(logger.handlers), logger.level, logger.propagate)

    def work():
        with Progress(4, desc="steps", log_every=2) as bar:
            for _ in range(4):
                bar.update(1, loss=0.5)
        logging.getLogger("aqa_jax.progress").debug("a debug line")
        return 0

    code, err = run_with(monkeypatch, capsys, work)
    lines = err.splitlines()
    assert code == 0 and len(lines) == 2 and "\r" not in err
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO aqa_jax: "
    assert re.match(stamp + r"steps: 2/4 steps .* loss=0\.5$", lines[0]), lines[0]
    assert re.match(stamp + r"steps: 4/4 steps", lines[1]), lines[1]
    assert (list(logger.handlers), logger.level, logger.propagate) == before
    code, err = run_with(monkeypatch, capsys, work, "--debug")
    assert "DEBUG aqa_jax.progress: a debug line" in err
