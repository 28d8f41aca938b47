"""Meshes, logical-axis rules and global batches: one code path from a CPU to a TPU pod.

``config.mesh`` lists ``(axis_name, size)`` pairs (big_vision style; one size may be ``-1`` for
"all remaining devices"), e.g. ``[("data", -1), ("model", 1)]``. Every mesh axis is
``AxisType.Auto`` so linen's GSPMD-style annotations work (an ``Explicit`` axis makes sharded
convolutions demand explicit output shardings). Parameters carry logical axis names
(``conv_out``, ``adapter_hidden``, ...) that ``config.logical_axis_rules`` maps to mesh axes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MeshSpec = Sequence[tuple[str, int]]
AxisRules = Sequence[tuple[str, str | None]]

log = logging.getLogger(__name__)

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

    ``source`` names where it came from: ``aqa_jax`` (``AQA_JAX_COORDINATOR``), ``torchrun``,
    the name of the JAX cluster detector that found the run (``ompi``, ``slurm``, ``gketpu``),
    or ``auto`` (JAX detects everything). ``cluster_detection_method`` goes to ``initialize()``
    as it is: ``"deactivate"`` where every argument was settled here (JAX then adds nothing,
    e.g. no ``SLURM_LOCALID`` pinning to a run ``launch/local.py`` started inside an
    allocation), a detector's name, or None (JAX's own order).
    """

    source: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    cluster_detection_method: str | None = "deactivate"

    def kwargs(self) -> dict[str, Any]:
        """The process-group arguments of ``jax.distributed.initialize`` (``None`` ones left
        out; ``cluster_detection_method`` is not among them)."""
        out = {k: getattr(self, k) for k in
               ("coordinator_address", "num_processes", "process_id", "local_device_ids")}
        if out["local_device_ids"] is not None:
            out["local_device_ids"] = list(out["local_device_ids"])
        return {k: v for k, v in out.items() if v is not None}

    def initialize_kwargs(self) -> dict[str, Any]:
        """Everything ``jax.distributed.initialize`` receives: :meth:`kwargs` plus
        ``cluster_detection_method`` when it is set."""
        out = self.kwargs()
        if self.cluster_detection_method is not None:
            out["cluster_detection_method"] = self.cluster_detection_method
        return out


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
    """This process's accelerators where they are decided here rather than by JAX's cluster
    detection: ``AQA_JAX_LOCAL_DEVICE_IDS`` (``0,1``); else ``(0,)`` when
    ``CUDA_VISIBLE_DEVICES`` shows this process a single GPU (SLURM's ``--gpus-per-task=1``
    binding; kept because JAX's detection would pin device ``SLURM_LOCALID``, which does not
    exist among one visible GPU); else the first of ``rank_vars`` that is set (torchrun's
    ``LOCAL_RANK``, which JAX does not read); None leaves it to JAX."""
    explicit = env.get("AQA_JAX_LOCAL_DEVICE_IDS", "").strip()
    if explicit:
        return tuple(int(i) for i in explicit.split(","))
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if len(visible) == 1:
        return (0,)
    local = _int(env, *rank_vars) if rank_vars else None
    return None if local is None else (local,)


# JAX's cluster detectors (jax._src.clusters, the same from jax 0.10 to 0.12) that tell from
# environment variables whether they are present, so they are asked on every start: Open
# MPI's mpirun (OMPI_MCA_orte_hnp_uri), a SLURM srun step, a GKE TPU slice
# (TPU_WORKER_HOSTNAMES on a TPU host; its slice count may come from the metadata server).
# The others query a server to know (GCE TPU metadata, the Kubernetes API) or are opt-in
# (mpi4py): AQA_JAX_DISTRIBUTED=auto or =<name> asks for them.
_ENV_ONLY_DETECTORS = ("ompi", "slurm", "gketpu")
# Those whose arguments are worked out here, through JAX's own code, so they can be logged and
# overridden; a TPU slice's are left to initialize() (its detector waits for DNS).
_RESOLVED_HERE = ("ompi", "slurm")


@contextlib.contextmanager
def _environment(env: Mapping[str, str] | None) -> Iterator[None]:
    """Shows ``env`` as ``os.environ`` to JAX's cluster detectors (they read ``os.environ``)
    for the duration, without changing the process's real (C-level) environment."""
    if env is None or env is os.environ:
        yield
        return
    real = os.environ
    os.environ = dict(env)  # type: ignore[assignment]
    try:
        yield
    finally:
        os.environ = real


def _detectors() -> list[Any]:
    from jax._src import clusters  # the detectors jax.distributed.initialize() itself uses

    return list(clusters.ClusterEnv._cluster_types)


def detector_names() -> tuple[str, ...]:
    """The names ``AQA_JAX_DISTRIBUTED`` (and ``cluster_detection_method``) accept: JAX's
    cluster detectors, e.g. ``ompi``, ``slurm``, ``mpi4py``, ``gketpu``, ``gcetpu``."""
    return tuple(d.name for d in _detectors() if d.name and d.name != "tpu")


def _multi_process_cluster(env: Mapping[str, str] | None) -> Any | None:
    """The first of JAX's env-only detectors (in JAX's own order) that finds this process in a
    cluster of more than one process, or None.

    The "more than one" test is kept here because JAX's detection does not make it: a
    one-task SLURM step or an sbatch script with ``SLURM_NTASKS=1`` is a SLURM cluster to JAX,
    and ``initialize()`` would then start a coordinator service for nothing and pin the task
    to GPU ``SLURM_LOCALID``, hiding the node's other GPUs from a single-process run.
    """
    with _environment(env):
        for detector in _detectors():
            if detector.name in _ENV_ONLY_DETECTORS and detector.is_env_present():
                return detector if detector.get_process_count() > 1 else None
    return None


def _resolve(detector: Any, env: Mapping[str, str] | None, coordinator: str | None,
             num: int | None, pid: int | None, local: tuple[int, ...] | None
             ) -> tuple[str | None, int | None, int | None, tuple[int, ...] | None]:
    """The arguments ``detector`` fills in where these are None, by JAX's own code
    (``ClusterEnv.auto_detect_unset_distributed_params``: coordinator host and port,
    ``JAX_COORDINATOR_PORT``, ranks, one device per process except on TPU)."""
    from jax._src import clusters

    with _environment(env):
        coordinator, num, pid, ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
            coordinator, num, pid, None if local is None else list(local), detector.name, 300)
    return coordinator, num, pid, None if ids is None else tuple(int(i) for i in ids)


def distributed_args(env: Mapping[str, str] | None = None) -> DistributedArgs | None:
    """How this process joins a multi-process run, from its environment (no JAX runtime is
    started). Cluster detection is JAX's own (``jax._src.clusters``: SLURM, Open MPI, TPU
    slices, ...); what remains here is what JAX's detection does not do.

    Checked in this order; ``None`` means a single process (no ``initialize()``):

    1. ``AQA_JAX_DISTRIBUTED``: ``off`` → None; ``auto`` → ``initialize()`` with no arguments
       (JAX detects the cluster, e.g. through a Cloud TPU VM's metadata server: what
       ``launch/tpu_pod.py`` sets); the name of one of JAX's detectors (``mpi4py`` for an Open
       MPI 5 ``mpirun``, ``gcetpu``, ...) → that detector.
    2. ``AQA_JAX_COORDINATOR`` (``host:port``; ``launch/local.py``, ``launch/slurm.py``):
       kept because it is the project's own; ``AQA_JAX_NUM_PROCESSES`` /
       ``AQA_JAX_PROCESS_ID``, else torchrun's ``WORLD_SIZE`` / ``RANK``, else what JAX's
       detection finds (SLURM's or Open MPI's ranks), so one exported coordinator serves every
       task of an ``srun``.
    3. torchrun style, ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE`` > 1, ``RANK``,
       ``LOCAL_RANK``: kept because JAX has no torchrun detector. The coordinator is
       ``MASTER_ADDR:MASTER_PORT``, or ``MASTER_PORT + 1`` under ``torchrun`` itself
       (``TORCHELASTIC_RUN_ID`` set), whose agent already listens on ``MASTER_PORT``;
       ``JAX_COORDINATOR_PORT`` overrides the port.
    4. JAX's env-only detectors, in JAX's order (Open MPI's ``mpirun``, a SLURM ``srun``
       step, a GKE TPU slice), when they find more than one process (see
       :func:`_multi_process_cluster` for why that test is made here). Open MPI's and SLURM's
       arguments are worked out by JAX's code here, so they are logged; a TPU slice's are
       left to ``initialize()``.

    Local device ids (one GPU per process): see :func:`_local_device_ids`; otherwise JAX's
    rule (the detector's local rank, never on TPU).

    ``env`` defaults to ``os.environ``; a given mapping is what JAX's detectors read too.
    """
    environ = os.environ if env is None else env
    mode = environ.get("AQA_JAX_DISTRIBUTED", "").strip().lower()
    if mode in ("0", "off", "false", "no"):
        return None
    if mode == "auto":
        return DistributedArgs("auto", cluster_detection_method=None)
    if mode in detector_names():
        return DistributedArgs(mode, cluster_detection_method=mode)
    if mode:
        raise ValueError(f"AQA_JAX_DISTRIBUTED={mode!r}: use 'auto', 'off', one of JAX's "
                         f"cluster detectors {list(detector_names())}, or leave it unset")
    cluster = _multi_process_cluster(env)
    coordinator = environ.get("AQA_JAX_COORDINATOR", "").strip()
    if coordinator:
        num = _int(environ, "AQA_JAX_NUM_PROCESSES", "WORLD_SIZE")
        pid = _int(environ, "AQA_JAX_PROCESS_ID", "RANK")
        local = _local_device_ids(environ, "LOCAL_RANK")
        if cluster is not None and cluster.name in _RESOLVED_HERE:
            _, num, pid, local = _resolve(cluster, env, coordinator, num, pid, local)
        if num is None or pid is None:
            raise ValueError(
                f"AQA_JAX_COORDINATOR={coordinator} is set but the number of processes or this "
                "process's id is not: set AQA_JAX_NUM_PROCESSES and AQA_JAX_PROCESS_ID (or run "
                "under srun/torchrun/mpirun, which set them)")
        return DistributedArgs("aqa_jax", coordinator, num, pid, local)
    world = _int(environ, "WORLD_SIZE")
    if environ.get("MASTER_ADDR") and world is not None and world > 1:
        port = _int(environ, "JAX_COORDINATOR_PORT")
        if port is None:
            port = _int(environ, "MASTER_PORT")
            if port is None:
                raise ValueError("MASTER_ADDR and WORLD_SIZE are set but MASTER_PORT is not")
            port += 1 if environ.get("TORCHELASTIC_RUN_ID") else 0
        return DistributedArgs("torchrun", f"{environ['MASTER_ADDR']}:{port}", world,
                               _int(environ, "RANK"), _local_device_ids(environ, "LOCAL_RANK"))
    if cluster is None:
        return None
    if cluster.name not in _RESOLVED_HERE:
        return DistributedArgs(cluster.name, cluster_detection_method=cluster.name)
    return DistributedArgs(cluster.name, *_resolve(cluster, env, None, None, None,
                                                   _local_device_ids(environ)))


def initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """Calls ``jax.distributed.initialize(**distributed_args(env).initialize_kwargs())`` when
    this process is one of several (see :func:`distributed_args`). On CPU the collectives go
    through gloo. Returns whether a multi-process runtime was set up.
    """
    args = distributed_args(env)
    if args is None:
        return False
    # Must not touch the backend before initialize(); gloo only matters to CPU devices.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    log.info("jax.distributed.initialize from %s: %s", args.source, args.initialize_kwargs())
    jax.distributed.initialize(**args.initialize_kwargs())
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
