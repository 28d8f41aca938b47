"""Meshes, logical-axis rules and global batches: one code path from a CPU to a TPU pod.

``config.mesh`` lists ``(axis_name, size)`` pairs (big_vision style; one size may be ``-1`` for
"all remaining devices"), e.g. ``[("data", -1), ("model", 1)]``. Every mesh axis is
``AxisType.Auto`` so linen's GSPMD-style annotations work (an ``Explicit`` axis makes sharded
convolutions demand explicit output shardings). Parameters carry logical axis names
(``conv_out``, ``adapter_hidden``, ...) that ``config.logical_axis_rules`` maps to mesh axes.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MeshSpec = Sequence[tuple[str, int]]
AxisRules = Sequence[tuple[str, str | None]]

DATA_AXIS = "data"

# Output channels (and the adapters' bottleneck) split over 'model'; everything else replicated.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("conv_out", "model"),
    ("adapter_hidden", "model"),
    ("adapter_group_in", None),
    ("conv_in", None),
    ("kernel_t", None),
    ("kernel_h", None),
    ("kernel_w", None),
    ("embed", None),
    ("classes", None),
)


def initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize()`` when this process is one of several.

    Several processes are recognised from ``AQA_JAX_COORDINATOR`` / ``AQA_JAX_NUM_PROCESSES`` /
    ``AQA_JAX_PROCESS_ID`` (set by ``launch/local.py`` and the SLURM/TPU launchers), or from
    what ``jax.distributed`` detects by itself (SLURM, TPU VM, Open MPI). On CPU the
    collectives go through gloo. Returns whether a multi-process runtime was set up.
    """
    coordinator = os.environ.get("AQA_JAX_COORDINATOR")
    if coordinator:
        # Must not touch the backend before initialize(); gloo only matters to CPU devices.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["AQA_JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["AQA_JAX_PROCESS_ID"]),
        )
        return True
    if any(k in os.environ for k in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "OMPI_COMM_WORLD_SIZE")):
        ntasks = os.environ.get("SLURM_NTASKS") or os.environ.get("OMPI_COMM_WORLD_SIZE")
        if ntasks is None or int(ntasks) > 1 or "TPU_WORKER_HOSTNAMES" in os.environ:
            jax.distributed.initialize()
            return True
    return False


def make_mesh(spec: MeshSpec, devices: Sequence[Any] | None = None) -> Mesh:
    """The device mesh of ``spec`` (``[(name, size), ...]``, one size may be -1).

    Raises:
      ValueError: when the sizes do not multiply to the number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    names = tuple(name for name, _ in spec)
    sizes = [int(size) for _, size in spec]
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh {list(spec)}: at most one axis may have size -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"config.mesh {list(spec)} cannot use {len(devices)} devices: the fixed axes "
                f"need a multiple of {known}"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"config.mesh {list(spec)} has {math.prod(sizes)} slots but there are "
            f"{len(devices)} devices; use -1 for the data axis"
        )
    if DATA_AXIS not in names:
        raise ValueError(f"config.mesh {list(spec)} needs a {DATA_AXIS!r} axis")
    return jax.make_mesh(
        tuple(sizes), names, axis_types=(AxisType.Auto,) * len(names), devices=devices
    )


def logical_shardings(
    boxed_tree: Any, mesh: Mesh, rules: AxisRules = DEFAULT_RULES
) -> Any:
    """NamedShardings for a tree of (abstract) boxed leaves, from their logical axis names.

    A dimension whose size the mesh axis does not divide is replicated instead (logged), so
    odd channel counts never make a config unusable on a larger ``model`` axis.
    """
    specs = nn.get_partition_spec(boxed_tree)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, list(rules))
    leaves = nn.unbox(boxed_tree)

    def fit(sharding: NamedSharding, leaf: Any) -> NamedSharding:
        spec = list(sharding.spec) + [None] * (len(leaf.shape) - len(sharding.spec))
        for dim, axes in enumerate(spec):
            if axes is None:
                continue
            size = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
            if leaf.shape[dim] % size:
                logging.info("replicating dim %d of a %s leaf (not divisible by %d)",
                             dim, leaf.shape, size)
                spec[dim] = None
        return NamedSharding(mesh, P(*spec))

    return jax.tree.map(fit, shardings, leaves)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading_dims: int = 0) -> NamedSharding:
    """Sharding of a batch: its batch axis (after ``leading_dims`` unsharded ones) over 'data'."""
    return NamedSharding(mesh, P(*([None] * leading_dims), DATA_AXIS))


def global_batch(
    local: Mapping[str, np.ndarray], mesh: Mesh, leading_dims: int = 0
) -> dict[str, jax.Array]:
    """Turns this process's numpy batch into global arrays sharded over the 'data' axis.

    Every process passes its own slice (its grain shard); the global batch is their
    concatenation in process order (``jax.make_array_from_process_local_data``).
    """
    sharding = batch_sharding(mesh, leading_dims)
    per_process = mesh.shape[DATA_AXIS] // max(1, _processes_along_data(mesh))
    out = {}
    for key, value in local.items():
        value = np.asarray(value)
        batch = value.shape[leading_dims]
        if batch % max(1, per_process):
            raise ValueError(
                f"the per-process batch ({batch}) of {key!r} must be a multiple of the "
                f"{per_process} 'data' shards on this process; change config.batch_size"
            )
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out


def _processes_along_data(mesh: Mesh) -> int:
    return len({d.process_index for d in mesh.devices.flat})
