"""Hardware presets: the configs build, and their mesh and global batch fit the slice.

No hardware: device and process counts are the presets' own numbers (simulated with
``AbstractMesh``); the oracle is arithmetic (batch = devices x per-device batch, ...).
"""

from pathlib import Path

import jax
import pytest
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec as P

from aqa_jax.config_args import load_config
from aqa_jax.train.hardware import ACCELERATORS, HARDWARE, apply_hardware, check_layout

REPO = Path(__file__).resolve().parents[1]

# devices, processes, clips per device of PECoP's batch 16 (slice sizes from the vendors' docs)
EXPECTED = {"gpu_8": (8, 8, 2), "tpu_v5e_16": (16, 4, 1), "tpu_v4_32": (16, 4, 1)}


@pytest.mark.parametrize("name", sorted(HARDWARE))
def test_pecop_hardware_config_layout(name):
    config = load_config(f"{REPO}/configs/pecop.py:dataset=pd4t,task=gait,hardware={name}")
    hw = HARDWARE[name]
    devices, processes, per_device = EXPECTED[name]
    assert (hw.num_devices, hw.num_processes) == (devices, processes)
    assert config.hardware == name and config.compute_dtype == "bfloat16"
    assert config.batch_size == 16 and config.optimizer.lr == 0.01  # the recipe is untouched
    assert config.data.worker_count == hw.worker_count > 0
    assert config.checkpoint.every_steps == hw.checkpoint_every_steps > 0
    layout = check_layout(config, devices, processes)
    assert layout["mesh"] == {"data": devices, "model": 1}
    assert layout["per_device_batch"] == per_device
    assert layout["per_process_batch"] * processes == config.batch_size
    # the global batch sharded over an abstract mesh of the slice: each device gets its clips
    mesh = AbstractMesh(tuple(layout["mesh"].values()), tuple(layout["mesh"]),
                        axis_types=(AxisType.Auto,) * 2)
    shard = NamedSharding(mesh, P("data")).shard_shape((config.batch_size, 32, 224, 224, 3))
    assert shard == (per_device, 32, 224, 224, 3)
    assert ACCELERATORS[hw.accelerator].peak_bf16_tflops > 100


def test_layout_errors_name_the_fix():
    config = load_config(f"{REPO}/configs/pecop.py:dataset=pd4t,task=gait")
    config.batch_size = 12
    with pytest.raises(ValueError, match=r"multiple of 16 \(e.g. \[16, 32, 48, 64\]\)"):
        check_layout(config, 16, 4)
    with pytest.raises(ValueError, match="cannot use 12 devices"):
        check_layout({"mesh": [("data", -1), ("model", 8)], "batch_size": 16}, 12, 1)
    # two 8-GPU nodes, one process per GPU, the recipe's batch: one clip per GPU
    assert check_layout(load_config(f"{REPO}/configs/pecop.py"), 16, 16)["per_device_batch"] == 1
    with pytest.raises(ValueError, match="batch_size=8 does not split over the 16-way"):
        load_config(f"{REPO}/configs/pecop.py:dataset=synthetic_aqa,debug,hardware=tpu_v5e_16")
    with pytest.raises(ValueError, match="unknown hardware"):
        load_config(f"{REPO}/configs/pecop.py:hardware=tpu_v9")


def test_any_config_takes_a_preset():
    """``launch/main.py --hardware`` applies the preset to configs that have no such argument."""
    config = load_config(f"{REPO}/configs/usdl.py:dataset=mtl_aqa")
    config.batch_size = 16
    apply_hardware(config, "tpu_v4_32")
    assert config.compute_dtype == "bfloat16" and config.mesh == [["data", -1], ["model", 1]]
    assert apply_hardware(config, "none") is config


def test_preset_mesh_builds_on_simulated_devices():
    """The preset's mesh spec on this machine's 8 simulated CPU devices (conftest)."""
    from aqa_jax.train.sharding import make_mesh

    config = load_config(f"{REPO}/configs/pecop.py:hardware=gpu_8")
    mesh = make_mesh(config.mesh, jax.devices()[:8])
    assert dict(mesh.shape) == {"data": 8, "model": 1}
