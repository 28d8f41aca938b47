"""The persistent compilation cache of the aqa-jax commands: where it is, `off`, and that the
command dispatch turns it on (in a fresh process, where jax is not imported yet, and in this
one, with jax.config restored afterwards: nothing is compiled while it points elsewhere)."""

import subprocess
import sys
from pathlib import Path

import jax
import pytest

from aqa_jax import cli
from aqa_jax.compilation_cache import cache_dir, enable_compilation_cache

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")


@pytest.mark.parametrize("environ, expected", [
    ({"AQA_JAX_CACHE": "/data/xla", "XDG_CACHE_HOME": "/xdg", "HOME": "/home/u"}, "/data/xla"),
    ({"XDG_CACHE_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/aqa_jax/jax"),
    ({"HOME": "/home/u"}, "/home/u/.cache/aqa_jax/jax"),
    ({"AQA_JAX_CACHE": "", "XDG_CACHE_HOME": "", "HOME": "/home/u"}, "/home/u/.cache/aqa_jax/jax"),
    ({"AQA_JAX_CACHE": "off", "HOME": "/home/u"}, None),
    ({"AQA_JAX_CACHE": "OFF", "XDG_CACHE_HOME": "/xdg"}, None),
    ({"AQA_JAX_CACHE": "0", "HOME": "/home/u"}, None),
])
def test_the_cache_folder_is_resolved_as_documented(environ, expected):
    assert cache_dir(environ) == (None if expected is None else Path(expected))


@pytest.fixture
def jax_cache_settings():
    """Restores JAX's cache settings after the test (jax.config is global to the process)."""
    saved = {name: getattr(jax.config, name) for name in SETTINGS}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


def _dispatched_settings(monkeypatch, capsys, value: str) -> list[str]:
    """JAX's cache settings as a command sees them when run by cli.main with
    AQA_JAX_CACHE=value (the command is replaced by one that prints them)."""
    monkeypatch.setenv("AQA_JAX_CACHE", value)
    monkeypatch.setattr(cli, "_config", lambda args: print(*(getattr(jax.config, n) for n in SETTINGS)) or 0)
    assert cli.main(["config", "any.py"]) == 0
    return capsys.readouterr().out.split()


def test_every_command_runs_with_the_cache_on(tmp_path, monkeypatch, capsys, jax_cache_settings):
    assert jax.config.jax_compilation_cache_dir is None  # conftest: AQA_JAX_CACHE=off
    assert _dispatched_settings(monkeypatch, capsys, "off") == ["None", "1.0"]
    assert _dispatched_settings(monkeypatch, capsys, str(tmp_path / "xla")) == [str(tmp_path / "xla"), "1.0"]


def test_before_jax_is_imported_the_cache_goes_through_jax_environment(tmp_path):
    code = ("import sys\nfrom aqa_jax.compilation_cache import enable_compilation_cache\n"
            "folder = enable_compilation_cache()\nassert 'jax' not in sys.modules\n"
            "import jax\nprint(folder, jax.config.jax_compilation_cache_dir)\n")
    for value, expected in ((str(tmp_path / "xla"), f"{tmp_path / 'xla'} {tmp_path / 'xla'}"),
                            ("off", "None None")):
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu",
               "AQA_JAX_CACHE": value}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=REPO, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == expected.split()


def test_an_explicit_folder_wins_and_pecop_effect_keeps_its_name(tmp_path, monkeypatch, jax_cache_settings):
    from aqa_jax import pecop_effect

    monkeypatch.setenv("AQA_JAX_CACHE", "off")
    assert enable_compilation_cache(tmp_path) == tmp_path
    assert jax.config.jax_compilation_cache_dir == str(tmp_path)
    assert pecop_effect.enable_compilation_cache is enable_compilation_cache


def test_a_folder_that_cannot_be_created_means_no_cache(tmp_path, caplog, jax_cache_settings):
    (tmp_path / "a_file").write_text("")
    assert enable_compilation_cache(tmp_path / "a_file" / "xla") is None
    assert jax.config.jax_compilation_cache_dir is None
    assert "no compilation cache" in caplog.text and "AQA_JAX_CACHE" in caplog.text
