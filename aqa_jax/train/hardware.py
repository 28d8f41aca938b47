"""Hardware presets: what a config changes to run on a GPU node or a TPU pod slice.

  python launch/main.py --config configs/pecop.py:dataset=pd4t,task=gait,hardware=gpu_8 ...
  python launch/main.py --config configs/usdl.py:dataset=mtl_aqa --hardware tpu_v5e_16 ...
  aqa-jax config configs/core.py:dataset=mtl_aqa,hardware=tpu_v4_32     # what it changes

A preset is data about a machine (devices, processes, peak bf16 FLOP/s) plus the run
settings that follow from it: the mesh (data parallel: I3D has 12.7M parameters, so
there is nothing to gain from splitting them), ``compute_dtype='bfloat16'``, grain decoding
processes per host, and how often to checkpoint. The method's recipe (global batch, epochs,
learning rate) is not touched: :func:`apply_hardware` only checks that the global batch
splits evenly over the devices and processes, and says what to change when it does not.
One method is still one module and one config: ``hardware=NAME`` in any config spec (or
``launch/main.py --hardware NAME``) is applied by :func:`aqa_jax.config_args.load_config`,
after ``get_config`` and before the ``--set`` overrides.

The worker counts and checkpoint intervals are starting points, not measured on the
hardware (see docs/SCALING.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

from aqa_jax.train.sharding import DATA_AXIS, mesh_shape


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """One JAX device: its name, dense bf16 peak (TFLOP/s, without sparsity) and memory."""

    name: str
    peak_bf16_tflops: float
    hbm_gib: float


ACCELERATORS: dict[str, Accelerator] = {
    "h100": Accelerator("NVIDIA H100 SXM", 989.0, 80.0),
    "a100": Accelerator("NVIDIA A100 SXM", 312.0, 80.0),
    # One JAX device per chip (v4 megacore: the chip's two TensorCores are one device).
    "tpu_v5e": Accelerator("TPU v5e chip", 197.0, 16.0),
    "tpu_v4": Accelerator("TPU v4 chip", 275.0, 32.0),
}


@dataclasses.dataclass(frozen=True)
class Hardware:
    """A slice of machines and the run settings that go with it (see module docstring).

    Attributes:
      name: the preset's name (``hardware=`` argument).
      platform: ``gpu`` or ``tpu``.
      accelerator: key of :data:`ACCELERATORS` (the one the throughput estimates assume).
      num_devices: JAX devices of the whole slice.
      num_hosts: machines.
      num_processes: JAX processes (one per GPU with ``launch/slurm.py``; one per TPU host).
      mesh: ``config.mesh``.
      compute_dtype: ``config.compute_dtype``.
      worker_count: grain decoding processes per JAX process (``config.data.worker_count``).
      checkpoint_every_steps: ``config.checkpoint.every_steps``, replacing the config's
        ``every_epochs`` (spot/preemptible TPUs: often).
    """

    name: str
    platform: str
    accelerator: str
    num_devices: int
    num_hosts: int
    num_processes: int
    mesh: tuple[tuple[str, int], ...] = ((DATA_AXIS, -1), ("model", 1))
    compute_dtype: str = "bfloat16"
    worker_count: int = 4
    checkpoint_every_steps: int = 200

    @property
    def devices_per_process(self) -> int:
        return self.num_devices // self.num_processes


HARDWARE: dict[str, Hardware] = {
    # One node, 8 GPUs, one process per GPU (srun --ntasks-per-node=8): 8 input pipelines.
    "gpu_8": Hardware("gpu_8", "gpu", "h100", num_devices=8, num_hosts=1, num_processes=8,
                      worker_count=4, checkpoint_every_steps=200),
    # v5litepod-16: 4 hosts x 4 chips, one process per host.
    "tpu_v5e_16": Hardware("tpu_v5e_16", "tpu", "tpu_v5e", num_devices=16, num_hosts=4,
                           num_processes=4, worker_count=16, checkpoint_every_steps=100),
    # v4-32: 32 TensorCores = 16 chips (megacore) on 4 hosts, one process per host.
    "tpu_v4_32": Hardware("tpu_v4_32", "tpu", "tpu_v4", num_devices=16, num_hosts=4,
                          num_processes=4, worker_count=16, checkpoint_every_steps=100),
}


def get_hardware(name: str) -> Hardware:
    """The preset named ``name``; an unknown name is a ValueError listing the presets."""
    try:
        return HARDWARE[name]
    except KeyError:
        raise ValueError(f"unknown hardware {name!r}; choose one of {sorted(HARDWARE)}") from None


def check_layout(config: Mapping[str, Any], num_devices: int, num_processes: int) -> dict[str, Any]:
    """How ``config``'s global batch lays out on ``num_devices`` devices in ``num_processes``
    processes (no devices needed): the mesh axis sizes, clips per device and per process.

    Raises:
      ValueError: the mesh does not fit the devices, or the global batch (``batch_size``,
        per micro-batch with ``step_per_update``) does not split evenly; the message says
        which batch sizes would.
    """
    if num_devices % num_processes:
        raise ValueError(f"{num_devices} devices do not split over {num_processes} processes")
    shape = mesh_shape([tuple(a) for a in config["mesh"]], num_devices)
    data = shape[DATA_AXIS]
    batch = int(config["batch_size"])
    # every process holds whole data shards: its batch must split over its own shards too
    unit = max(data, num_processes)
    if batch % unit:
        fits = [unit * k for k in range(1, 5)]
        raise ValueError(
            f"batch_size={batch} does not split over the {data}-way 'data' axis of "
            f"{num_devices} devices in {num_processes} processes; use a multiple of {unit} "
            f"(e.g. {fits}) and rescale the learning rate, or run on fewer devices")
    return {"mesh": shape, "per_device_batch": batch // data,
            "per_process_batch": batch // num_processes}


def apply_hardware(config: ml_collections.ConfigDict, name: str, *, check: bool = True
                   ) -> ml_collections.ConfigDict:
    """``config`` set up for hardware preset ``name`` (in place, and returned).

    Sets ``hardware``, ``compute_dtype``, ``mesh``, ``num_devices`` (all), the grain worker
    count and the checkpoint interval in steps (``checkpoint.every_epochs`` removed), then
    checks the layout (:func:`check_layout`; ``check=False``: the caller checks it after its
    own changes, as ``load_config`` does after the ``--set`` overrides).
    ``name`` 'none' or '' leaves the config as it is.
    """
    if name in ("", "none"):
        return config
    hw = get_hardware(name)
    with config.ignore_type():
        config.hardware = hw.name
        config.compute_dtype = hw.compute_dtype
        config.mesh = [list(axis) for axis in hw.mesh]
        config.num_devices = 0
    if "data" in config:
        config.data.worker_count = hw.worker_count
    if "checkpoint" not in config:
        config.checkpoint = ml_collections.ConfigDict()
    if "every_epochs" in config.checkpoint:  # one of the *_steps / *_epochs pair (aqa_jax.steps)
        del config.checkpoint.every_epochs
    config.checkpoint.every_steps = hw.checkpoint_every_steps
    if check:
        check_layout(config, hw.num_devices, hw.num_processes)
    return config
