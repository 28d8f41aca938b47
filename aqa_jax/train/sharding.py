"""Meshes, logical-axis rules and global batches: one code path from a CPU to a TPU pod.

``config.mesh`` lists ``(axis_name, size)`` pairs (big_vision style; one size may be ``-1`` for
"all remaining devices"), e.g. ``[("data", -1), ("model", 1)]``. Every mesh axis is
``AxisType.Auto`` so linen's GSPMD-style annotations work (an ``Explicit`` axis makes sharded
convolutions demand explicit output shardings). Parameters carry logical axis names
(``conv_out``, ``adapter_hidden``, ...) that ``config.logical_axis_rules`` maps to mesh axes.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class DistributedArgs:
    """What :func:`initialize_distributed` passes to ``jax.distributed.initialize``.

    ``source`` names the environment it came from (``aqa_jax``, ``torchrun``, ``slurm``,
    ``openmpi``, ``auto``); a ``None`` field is left for JAX's own cluster detection to fill.
    """

    source: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``jax.distributed.initialize`` (``None`` ones left out)."""
        out = {k: getattr(self, k) for k in
               ("coordinator_address", "num_processes", "process_id", "local_device_ids")}
        if out["local_device_ids"] is not None:
            out["local_device_ids"] = list(out["local_device_ids"])
        return {k: v for k, v in out.items() if v is not None}


def _first(env: Mapping[str, str], *names: str) -> str | None:
    return next((env[n] for n in names if env.get(n, "") != ""), None)


def _int(env: Mapping[str, str], *names: str) -> int | None:
    value = _first(env, *names)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{'/'.join(names)}={value!r} is not an integer") from None


def _local_device_ids(env: Mapping[str, str], *rank_vars: str) -> tuple[int, ...] | None:
    """One accelerator per process: ``AQA_JAX_LOCAL_DEVICE_IDS`` (``0,1``), else the local
    rank, unless ``CUDA_VISIBLE_DEVICES`` already shows this process a single GPU (SLURM's
    ``--gpus-per-task=1`` binding), where the only visible device is the one to use."""
    explicit = env.get("AQA_JAX_LOCAL_DEVICE_IDS", "").strip()
    if explicit:
        return tuple(int(i) for i in explicit.split(","))
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if len(visible) == 1:
        return (0,)
    local = _int(env, *rank_vars)
    return None if local is None else (local,)


def slurm_first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``node001``, ``node[001-016],gpu7`` → ``node001``,
    ``gpu-a[07,09-12]`` → ``gpu-a07`` (what ``scontrol show hostnames | head -1`` prints)."""
    nodelist = nodelist.strip()
    cut = next((i for i, ch in enumerate(nodelist) if ch in ",["), len(nodelist))
    if cut == len(nodelist) or nodelist[cut] == ",":
        return nodelist[:cut]
    inside = nodelist[cut + 1:]
    first = inside[: next(i for i, ch in enumerate(inside) if ch in ",-]")]
    return nodelist[:cut] + first


def slurm_port(job_id: int) -> int:
    """JAX's own choice of coordinator port under SLURM: one of 61440-65535 from the job id."""
    return job_id % 2**12 + (65535 - 2**12 + 1)


def distributed_args(env: Mapping[str, str] | None = None) -> DistributedArgs | None:
    """How this process joins a multi-process run, from its environment (pure: no JAX call).

    Checked in this order; ``None`` means a single process (no ``initialize()``):

    1. ``AQA_JAX_DISTRIBUTED=off`` → None; ``=auto`` → ``initialize()`` with no arguments
       (JAX detects the cluster itself: what ``launch/tpu_pod.py`` sets on a TPU VM slice).
    2. ``AQA_JAX_COORDINATOR`` (``host:port``; ``launch/local.py``, ``launch/slurm.py``):
       ``AQA_JAX_NUM_PROCESSES`` / ``AQA_JAX_PROCESS_ID``, each falling back to the
       launcher's own (``SLURM_NTASKS``/``SLURM_PROCID``, ``WORLD_SIZE``/``RANK``,
       ``OMPI_COMM_WORLD_SIZE``/``OMPI_COMM_WORLD_RANK``), so one exported coordinator serves
       every task of an ``srun``.
    3. torchrun style, ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE`` > 1, ``RANK``,
       ``LOCAL_RANK``: the coordinator is ``MASTER_ADDR:MASTER_PORT``, or
       ``MASTER_PORT + 1`` under ``torchrun`` itself (``TORCHELASTIC_RUN_ID`` set), whose
       agent already listens on ``MASTER_PORT``; ``JAX_COORDINATOR_PORT`` overrides the port.
    4. SLURM, inside an ``srun`` step with ``SLURM_NTASKS`` > 1: the first host of
       ``SLURM_STEP_NODELIST`` at JAX's job-id port (or ``JAX_COORDINATOR_PORT``),
       ``SLURM_PROCID``, one GPU per task from ``SLURM_LOCALID``.
    5. Open MPI, ``OMPI_COMM_WORLD_SIZE`` > 1: sizes and ranks from Open MPI, the coordinator
       left to JAX (it reads it from ``OMPI_MCA_orte_hnp_uri``).
    6. A TPU slice seen through ``TPU_WORKER_HOSTNAMES`` (GKE) with several hosts, or
       ``MEGASCALE_COORDINATOR_ADDRESS`` (multislice): ``initialize()`` with no arguments.

    Local device ids (one GPU per process) come from ``AQA_JAX_LOCAL_DEVICE_IDS`` or the local
    rank (see :func:`_local_device_ids`); never on TPU, where JAX assigns them.
    """
    env = os.environ if env is None else env
    mode = env.get("AQA_JAX_DISTRIBUTED", "").strip().lower()
    if mode in ("0", "off", "false", "no"):
        return None
    if mode == "auto":
        return DistributedArgs("auto")
    if mode:
        raise ValueError(f"AQA_JAX_DISTRIBUTED={mode!r}: use 'auto' or 'off' (or leave it unset)")
    local_ranks = ("SLURM_LOCALID", "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK")
    coordinator = env.get("AQA_JAX_COORDINATOR", "").strip()
    if coordinator:
        num = _int(env, "AQA_JAX_NUM_PROCESSES", "SLURM_NTASKS", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE")
        pid = _int(env, "AQA_JAX_PROCESS_ID", "SLURM_PROCID", "RANK", "OMPI_COMM_WORLD_RANK")
        if num is None or pid is None:
            raise ValueError(
                f"AQA_JAX_COORDINATOR={coordinator} is set but the number of processes or this "
                "process's id is not: set AQA_JAX_NUM_PROCESSES and AQA_JAX_PROCESS_ID (or run "
                "under srun/torchrun/mpirun, which set them)")
        return DistributedArgs("aqa_jax", coordinator, num, pid,
                               _local_device_ids(env, *local_ranks))
    world = _int(env, "WORLD_SIZE")
    if env.get("MASTER_ADDR") and world is not None and world > 1:
        port = _int(env, "JAX_COORDINATOR_PORT")
        if port is None:
            port = _int(env, "MASTER_PORT")
            if port is None:
                raise ValueError("MASTER_ADDR and WORLD_SIZE are set but MASTER_PORT is not")
            port += 1 if env.get("TORCHELASTIC_RUN_ID") else 0
        return DistributedArgs("torchrun", f"{env['MASTER_ADDR']}:{port}", world,
                               _int(env, "RANK"), _local_device_ids(env, "LOCAL_RANK"))
    ntasks = _int(env, "SLURM_NTASKS")
    if env.get("SLURM_STEP_NODELIST") and env.get("SLURM_JOB_ID") and ntasks and ntasks > 1:
        port = _int(env, "JAX_COORDINATOR_PORT") or slurm_port(int(env["SLURM_JOB_ID"]))
        return DistributedArgs("slurm", f"{slurm_first_host(env['SLURM_STEP_NODELIST'])}:{port}",
                               ntasks, _int(env, "SLURM_PROCID"),
                               _local_device_ids(env, "SLURM_LOCALID"))
    ompi = _int(env, "OMPI_COMM_WORLD_SIZE")
    if ompi and ompi > 1:
        return DistributedArgs("openmpi", None, ompi, _int(env, "OMPI_COMM_WORLD_RANK"),
                               _local_device_ids(env, "OMPI_COMM_WORLD_LOCAL_RANK"))
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return DistributedArgs("auto")
    return None


def initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """Calls ``jax.distributed.initialize(**distributed_args(env).kwargs())`` when this
    process is one of several (see :func:`distributed_args`). On CPU the collectives go
    through gloo. Returns whether a multi-process runtime was set up.
    """
    args = distributed_args(env)
    if args is None:
        return False
    # Must not touch the backend before initialize(); gloo only matters to CPU devices.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    logging.info("jax.distributed.initialize from %s: %s", args.source, args.kwargs())
    jax.distributed.initialize(**args.kwargs())
    return True


def mesh_shape(spec: MeshSpec, num_devices: int) -> dict[str, int]:
    """The axis sizes ``config.mesh`` gives on ``num_devices`` devices (the -1 axis filled).

    Pure arithmetic (no devices needed), so configs can be checked for any slice size.

    Raises:
      ValueError: when the sizes do not multiply to the number of devices, or there is no
        'data' axis.
    """
    names = tuple(name for name, _ in spec)
    sizes = [int(size) for _, size in spec]
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh {list(spec)}: at most one axis may have size -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"config.mesh {list(spec)} cannot use {num_devices} devices: the fixed axes "
                f"need a multiple of {known}"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"config.mesh {list(spec)} has {math.prod(sizes)} slots but there are "
            f"{num_devices} devices; use -1 for the data axis"
        )
    if DATA_AXIS not in names:
        raise ValueError(f"config.mesh {list(spec)} needs a {DATA_AXIS!r} axis")
    return dict(zip(names, sizes))


def make_mesh(spec: MeshSpec, devices: Sequence[Any] | None = None) -> Mesh:
    """The device mesh of ``spec`` (``[(name, size), ...]``, one size may be -1).

    Raises:
      ValueError: when the sizes do not multiply to the number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(spec, len(devices))
    return jax.make_mesh(
        tuple(shape.values()), tuple(shape), axis_types=(AxisType.Auto,) * len(shape),
        devices=devices,
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
