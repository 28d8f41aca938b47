"""Which ``jax.distributed.initialize`` arguments each launcher's environment gives.

Oracle: the launchers' documented variables (SLURM ``srun``, torchrun, Open MPI, TPU VM /
GKE, ``launch/local.py`` / ``launch/slurm.py``) set by hand, and the documented rules for the
coordinator (SLURM: first host of the step's node list, port ``61440 + job id mod 4096``).
Cluster detection is JAX's own; the tests named ``..._jax_alone_...`` show what JAX's detection
does without the project's additions, i.e. why each addition is kept. No JAX runtime is started.
"""

import pytest
from jax._src import clusters

from aqa_jax.train import sharding
from aqa_jax.train.sharding import distributed_args


def kwargs(env):
    args = distributed_args(env)
    return None if args is None else (args.source, args.kwargs())


def jax_alone(env):
    """What ``jax.distributed.initialize()`` would fill in by itself from ``env``."""
    with sharding._environment(env):
        return clusters.ClusterEnv.auto_detect_unset_distributed_params(
            None, None, None, None, None, 300)


SLURM_ONE_TASK = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1",
                  "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}


def test_single_process_environments_do_not_initialize():
    assert distributed_args({}) is None
    assert distributed_args({"WORLD_SIZE": "1", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}) is None
    # an sbatch script itself (no srun step) or a one-task step
    assert distributed_args({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8", "SLURM_PROCID": "0"}) is None
    assert distributed_args(SLURM_ONE_TASK) is None
    assert distributed_args({"OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0"}) is None
    assert distributed_args({"OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0",
                             "OMPI_COMM_WORLD_LOCAL_RANK": "0",
                             "OMPI_MCA_orte_hnp_uri": "123.0;tcp://10.0.0.1:5000"}) is None


def test_jax_alone_would_initialize_a_one_task_slurm_step_and_pin_one_gpu():
    """Why the "more than one process" test is made here: to JAX a one-task step is a SLURM
    cluster, and initialize() would pin the task to GPU SLURM_LOCALID (hiding the others)."""
    with sharding._environment(SLURM_ONE_TASK):
        assert clusters.SlurmCluster.is_env_present()
    assert jax_alone(SLURM_ONE_TASK) == ("n1:61447", 1, 0, [0])


def test_aqa_jax_variables_local_launcher():
    env = {"AQA_JAX_COORDINATOR": "127.0.0.1:4567", "AQA_JAX_NUM_PROCESSES": "2",
           "AQA_JAX_PROCESS_ID": "1"}
    assert kwargs(env) == ("aqa_jax", {"coordinator_address": "127.0.0.1:4567",
                                       "num_processes": 2, "process_id": 1})
    # everything is settled: JAX is told to add nothing of its own
    assert distributed_args(env).initialize_kwargs()["cluster_detection_method"] == "deactivate"
    env["AQA_JAX_LOCAL_DEVICE_IDS"] = "2,3"
    assert kwargs(env)[1]["local_device_ids"] == [2, 3]


def test_local_launcher_inside_a_one_task_allocation_is_not_pinned_to_slurm_localid():
    env = {"AQA_JAX_COORDINATOR": "127.0.0.1:4567", "AQA_JAX_NUM_PROCESSES": "2",
           "AQA_JAX_PROCESS_ID": "1", **SLURM_ONE_TASK}
    args = distributed_args(env)
    assert args.kwargs() == {"coordinator_address": "127.0.0.1:4567", "num_processes": 2,
                             "process_id": 1}
    assert args.initialize_kwargs()["cluster_detection_method"] == "deactivate"
    # without "deactivate", initialize() would fill local_device_ids from SLURM by itself
    with sharding._environment(env):
        filled = clusters.ClusterEnv.auto_detect_unset_distributed_params(
            "127.0.0.1:4567", 2, 1, None, None, 300)
    assert filled[3] == [0]


def test_aqa_jax_coordinator_under_srun_takes_ranks_from_slurm():
    """launch/slurm.py exports only the coordinator; each srun task has its own SLURM ids."""
    env = {"AQA_JAX_COORDINATOR": "gpu-a07:62001", "SLURM_JOB_ID": "4242",
           "SLURM_STEP_NODELIST": "gpu-a[07-08]", "SLURM_NTASKS": "16", "SLURM_PROCID": "11",
           "SLURM_LOCALID": "3"}
    assert kwargs(env) == ("aqa_jax", {"coordinator_address": "gpu-a07:62001",
                                       "num_processes": 16, "process_id": 11,
                                       "local_device_ids": [3]})
    # --gpus-per-task=1 binding: the task sees one GPU, which is its device 0
    assert kwargs({**env, "CUDA_VISIBLE_DEVICES": "3"})[1]["local_device_ids"] == [0]
    with pytest.raises(ValueError, match="AQA_JAX_PROCESS_ID"):
        distributed_args({"AQA_JAX_COORDINATOR": "h:1", "AQA_JAX_NUM_PROCESSES": "2"})


def test_jax_alone_pins_slurm_localid_even_when_one_gpu_is_visible():
    """Why CUDA_VISIBLE_DEVICES is read here: JAX would ask for device 3 of one visible GPU."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu-a[07-08]", "SLURM_NTASKS": "16",
           "SLURM_PROCID": "11", "SLURM_LOCALID": "3", "CUDA_VISIBLE_DEVICES": "3"}
    assert jax_alone(env)[3] == [3]
    assert kwargs(env)[1]["local_device_ids"] == [0]


def test_slurm_srun_step_through_jax_detection():
    env = {"SLURM_JOB_ID": "123457", "SLURM_STEP_NODELIST": "node[017-018,020],gpu7",
           "SLURM_NTASKS": "32", "SLURM_PROCID": "9", "SLURM_LOCALID": "1"}
    port = 123457 % 4096 + 61440
    assert port == 62017
    assert kwargs(env) == ("slurm", {"coordinator_address": f"node017:{port}", "num_processes": 32,
                                     "process_id": 9, "local_device_ids": [1]})
    assert distributed_args(env).initialize_kwargs()["cluster_detection_method"] == "deactivate"
    assert kwargs({**env, "JAX_COORDINATOR_PORT": "5000"})[1]["coordinator_address"] == "node017:5000"


@pytest.mark.parametrize("nodelist, first", [
    ("node001", "node001"), ("node001,node002", "node001"), ("node[001-016],gpu7", "node001"),
    ("gpu-a[07,09-12]", "gpu-a07")])
def test_slurm_coordinator_is_the_first_host_of_the_node_list(nodelist, first):
    env = {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": nodelist, "SLURM_NTASKS": "2",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    assert kwargs(env)[1]["coordinator_address"] == f"{first}:61441"


def test_torchrun_style():
    env = {"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500", "WORLD_SIZE": "16", "RANK": "10",
           "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "8"}
    # set by hand (e.g. a Kubernetes PyTorchJob): the port is free for JAX
    assert kwargs(env) == ("torchrun", {"coordinator_address": "10.0.0.5:29500", "num_processes": 16,
                                        "process_id": 10, "local_device_ids": [2]})
    # under torchrun its agent listens on MASTER_PORT: JAX takes the next one
    assert kwargs({**env, "TORCHELASTIC_RUN_ID": "none"})[1]["coordinator_address"] == "10.0.0.5:29501"
    assert kwargs({**env, "JAX_COORDINATOR_PORT": "7777"})[1]["coordinator_address"] == "10.0.0.5:7777"


def test_jax_alone_does_not_read_torchrun_variables():
    """Why torchrun's variables are read here: JAX has no torchrun detector."""
    env = {"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500", "WORLD_SIZE": "16", "RANK": "10",
           "LOCAL_RANK": "2"}
    assert jax_alone(env) == (None, None, None, None)


def test_open_mpi_through_jax_detection():
    uri = "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911"
    env = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_MCA_orte_hnp_uri": uri}
    # JAX's rule: the launcher's first address, port from the Open MPI job id
    port = 1531576320 // 4096 % 4096 + 61440
    assert kwargs(env) == ("ompi", {"coordinator_address": f"10.96.0.1:{port}", "num_processes": 4,
                                    "process_id": 3, "local_device_ids": [1]})


def test_tpu_slices_and_named_detectors_are_left_to_jax(monkeypatch):
    # launch/tpu_pod.py on a Cloud TPU VM slice (JAX reads the metadata server)
    args = distributed_args({"AQA_JAX_DISTRIBUTED": "auto"})
    assert (args.source, args.initialize_kwargs()) == ("auto", {})
    # one of JAX's detectors by name, e.g. mpi4py for an Open MPI 5 mpirun (no orte URI)
    args = distributed_args({"AQA_JAX_DISTRIBUTED": "mpi4py"})
    assert args.initialize_kwargs() == {"cluster_detection_method": "mpi4py"}
    # a GKE TPU slice: JAX's detector answers only on a TPU host
    gke = {"TPU_WORKER_HOSTNAMES": "h0,h1,h2,h3", "TPU_WORKER_ID": "2", "MEGASCALE_NUM_SLICES": "1"}
    assert distributed_args(gke) is None  # not a TPU host
    monkeypatch.setattr(clusters.cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
    args = distributed_args(gke)
    assert (args.source, args.initialize_kwargs()) == ("gketpu", {"cluster_detection_method": "gketpu"})
    assert distributed_args({**gke, "TPU_WORKER_HOSTNAMES": "t1v-n-0"}) is None  # one host
    # explicit off wins over everything
    assert distributed_args({"AQA_JAX_DISTRIBUTED": "off", "AQA_JAX_COORDINATOR": "h:1"}) is None
    with pytest.raises(ValueError, match="AQA_JAX_DISTRIBUTED.*slurm"):
        distributed_args({"AQA_JAX_DISTRIBUTED": "yes please"})


def test_precedence_aqa_jax_over_torchrun_over_slurm():
    slurm = {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
             "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
    torch = {"MASTER_ADDR": "m", "MASTER_PORT": "100", "WORLD_SIZE": "2", "RANK": "1"}
    assert kwargs({**slurm, **torch})[0] == "torchrun"
    assert kwargs({**slurm, **torch, "AQA_JAX_COORDINATOR": "c:1"})[1]["coordinator_address"] == "c:1"


def test_a_given_environment_does_not_change_the_process_environment(monkeypatch):
    import os

    monkeypatch.setenv("SLURM_JOB_ID", "99")
    before = dict(os.environ)
    distributed_args({"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
                      "SLURM_PROCID": "1", "SLURM_LOCALID": "0"})
    assert isinstance(os.environ, os._Environ) and dict(os.environ) == before
