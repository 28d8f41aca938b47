"""Which ``jax.distributed.initialize`` arguments each launcher's environment gives.

Oracle: the launchers' documented variables (SLURM ``srun``, torchrun, Open MPI, TPU VM /
GKE, ``launch/local.py`` / ``launch/slurm.py``), set by hand; no JAX runtime is started.
"""

import pytest

from aqa_jax.train.sharding import distributed_args, slurm_first_host, slurm_port


def kwargs(env):
    args = distributed_args(env)
    return None if args is None else (args.source, args.kwargs())


def test_single_process_environments_do_not_initialize():
    assert distributed_args({}) is None
    assert distributed_args({"WORLD_SIZE": "1", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}) is None
    # an sbatch script itself (no srun step) or a one-task step
    assert distributed_args({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8", "SLURM_PROCID": "0"}) is None
    assert distributed_args({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1",
                             "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}) is None
    assert distributed_args({"OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0"}) is None
    assert distributed_args({"TPU_WORKER_HOSTNAMES": "t1v-n-0"}) is None  # one-host TPU VM


def test_aqa_jax_variables_local_launcher():
    env = {"AQA_JAX_COORDINATOR": "127.0.0.1:4567", "AQA_JAX_NUM_PROCESSES": "2",
           "AQA_JAX_PROCESS_ID": "1"}
    assert kwargs(env) == ("aqa_jax", {"coordinator_address": "127.0.0.1:4567",
                                       "num_processes": 2, "process_id": 1})
    env["AQA_JAX_LOCAL_DEVICE_IDS"] = "2,3"
    assert kwargs(env)[1]["local_device_ids"] == [2, 3]


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


def test_slurm_srun_step():
    env = {"SLURM_JOB_ID": "123457", "SLURM_STEP_NODELIST": "node[017-018,020],gpu7",
           "SLURM_NTASKS": "32", "SLURM_PROCID": "9", "SLURM_LOCALID": "1"}
    # JAX's SlurmCluster port rule: job id mod 4096 + 61440
    assert slurm_port(123457) == 123457 % 4096 + 61440 == 62017
    assert kwargs(env) == ("slurm", {"coordinator_address": "node017:62017", "num_processes": 32,
                                     "process_id": 9, "local_device_ids": [1]})
    assert kwargs({**env, "JAX_COORDINATOR_PORT": "5000"})[1]["coordinator_address"] == "node017:5000"


def test_slurm_first_host():
    assert slurm_first_host("node001") == "node001"
    assert slurm_first_host("node001,node002") == "node001"
    assert slurm_first_host("node[001-016],gpu7") == "node001"
    assert slurm_first_host("gpu-a[07,09-12]") == "gpu-a07"
    assert slurm_first_host("x[3]") == "x3"


def test_torchrun_style():
    env = {"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500", "WORLD_SIZE": "16", "RANK": "10",
           "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "8"}
    # set by hand (e.g. a Kubernetes PyTorchJob): the port is free for JAX
    assert kwargs(env) == ("torchrun", {"coordinator_address": "10.0.0.5:29500", "num_processes": 16,
                                        "process_id": 10, "local_device_ids": [2]})
    # under torchrun its agent listens on MASTER_PORT: JAX takes the next one
    assert kwargs({**env, "TORCHELASTIC_RUN_ID": "none"})[1]["coordinator_address"] == "10.0.0.5:29501"
    assert kwargs({**env, "JAX_COORDINATOR_PORT": "7777"})[1]["coordinator_address"] == "10.0.0.5:7777"


def test_open_mpi_leaves_the_coordinator_to_jax():
    env = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_MCA_orte_hnp_uri": "123.0;tcp://10.0.0.1:5000"}
    assert kwargs(env) == ("openmpi", {"num_processes": 4, "process_id": 3, "local_device_ids": [1]})


def test_tpu_slices_let_jax_detect_everything():
    # launch/tpu_pod.py on a Cloud TPU VM slice (JAX reads the metadata server)
    assert kwargs({"AQA_JAX_DISTRIBUTED": "auto"}) == ("auto", {})
    # GKE TPU slice / multislice
    assert kwargs({"TPU_WORKER_HOSTNAMES": "h0,h1,h2,h3", "TPU_WORKER_ID": "2"}) == ("auto", {})
    assert kwargs({"MEGASCALE_COORDINATOR_ADDRESS": "h0:8080"}) == ("auto", {})
    # explicit off wins over everything
    assert distributed_args({"AQA_JAX_DISTRIBUTED": "off", "AQA_JAX_COORDINATOR": "h:1"}) is None
    with pytest.raises(ValueError, match="AQA_JAX_DISTRIBUTED"):
        distributed_args({"AQA_JAX_DISTRIBUTED": "yes please"})


def test_precedence_aqa_jax_over_torchrun_over_slurm():
    slurm = {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
             "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
    torch = {"MASTER_ADDR": "m", "MASTER_PORT": "100", "WORLD_SIZE": "2", "RANK": "1"}
    assert kwargs({**slurm, **torch})[0] == "torchrun"
    assert kwargs({**slurm, **torch, "AQA_JAX_COORDINATOR": "c:1"})[1]["coordinator_address"] == "c:1"
