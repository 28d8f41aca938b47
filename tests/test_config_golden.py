"""Every shipped config resolves to the values recorded in ``tests/data/configs_golden.json``.

The record holds each config with the argument combinations users run (every dataset and
task, init/variant, probe, debug, weights, hardware, the method's own args, the refused
combinations, and every spec README.md and docs/REPRODUCING.md name: a spec added to those
docs is "not recorded" until the record is rewritten; see ``tests/config_golden.py``). A change to any resolved value fails here with
the spec, the key and both values; when the change is intended, record it with
``python tests/config_golden.py write`` and commit the JSON with the change.
"""

import json

import pytest

import config_golden as golden

GOLDEN_CMD = "python tests/config_golden.py write"


@pytest.fixture(scope="module")
def resolved():
    from aqa_jax.config_args import load_config

    return golden.resolve_all(load_config)


def test_configs_resolve_to_the_recorded_values(resolved):
    recorded = golden.expand(json.loads(golden.GOLDEN.read_text()))
    problems = []
    for spec in sorted(set(recorded) - set(resolved)):
        problems.append(f"{spec}: recorded, no longer resolved")
    for spec in sorted(set(resolved) - set(recorded)):
        problems.append(f"{spec}: not recorded")
    for spec in sorted(set(recorded) & set(resolved)):
        was, now = recorded[spec], resolved[spec]
        for key in sorted(set(was) | set(now)):
            if was.get(key, "<absent>") != now.get(key, "<absent>"):
                problems.append(f"{spec}: {key}: recorded {was.get(key, '<absent>')!r}, "
                                f"now {now.get(key, '<absent>')!r}")
    assert not problems, (f"{len(problems)} differences from {golden.GOLDEN.name} (if intended: "
                          f"{GOLDEN_CMD}):\n" + "\n".join(problems[:60]))


def test_record_is_written_as_read():
    """``write`` produces exactly the committed file (no hand edits, a stable format)."""
    text = golden.GOLDEN.read_text()
    assert golden.dumps(json.loads(text)) == text
