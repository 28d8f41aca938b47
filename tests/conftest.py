"""Test setup: CPU only, 8 simulated devices (so sharding is exercised), no persistent
compilation cache (the commands' default one is in the user's home, and jax.config is global
to the process, so one test turning it on would change what every later test compiles; tests of
aqa_jax.compilation_cache set their own folder), shared/ discovery."""

import os
import sys
from pathlib import Path

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ["AQA_JAX_CACHE"] = "off"  # inherited by the commands tests run in subprocesses

import pytest  # noqa: E402

TESTS_DIR = Path(__file__).parent
sys.path.insert(0, str(TESTS_DIR))  # for tests/torch_reference

SHARED = Path(os.environ.get("AQA_JAX_SHARED", TESTS_DIR.parent.parent / "shared"))


@pytest.fixture(scope="session")
def real_annotations() -> Path:
    """../shared/real_annotations, or skip when the shared folder is not beside the repo."""
    path = SHARED / "real_annotations"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A data dir holding the built ``synthetic_aqa/finger_tapping_tiny`` (8 + 4 videos)."""
    from aqa_jax.data.registry import build

    data_dir = tmp_path_factory.mktemp("aqa_data")
    build("synthetic_aqa", "finger_tapping_tiny", data_dir=str(data_dir))
    return data_dir
