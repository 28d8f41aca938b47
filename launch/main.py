"""Training entry point for every scale: ``python launch/main.py --config CFG --workdir DIR``.

  python launch/main.py --config configs/pecop.py:dataset=pd4t,task=gait \
      --workdir runs/pecop_gait --set batch_size=32

``--config`` takes ``file.py[:args]`` and ``--set key=value`` (repeatable) overrides a value:
the config resolves through ``aqa_jax.config_args.load_config``, exactly as for ``aqa-jax
train`` (``aqa-jax config SPEC KEY=VALUE ...`` prints it). ``--hardware
gpu_8|tpu_v5e_16|tpu_v4_32`` applies a preset of ``aqa_jax/train/hardware.py`` (mesh,
bfloat16, data workers, checkpoint interval) to any config, as ``hardware=`` in its args does.
Launched as several processes it first joins them with
``jax.distributed.initialize()``, with the arguments
:func:`aqa_jax.train.sharding.distributed_args` reads from the environment: ``AQA_JAX_*``
(``launch/local.py``, ``launch/slurm.py``), ``AQA_JAX_DISTRIBUTED=auto`` (``launch/tpu_pod.py``),
torchrun's ``MASTER_ADDR``/``MASTER_PORT``/``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, SLURM
``srun`` steps, Open MPI, GKE TPU slices. The same run is ``aqa-jax pretrain``. Compiled
steps are kept in the persistent compilation cache, as by every ``aqa-jax`` command
(``aqa_jax.compilation_cache``: ``$AQA_JAX_CACHE``, ``off`` disables it).

An existing run in ``--workdir`` resumes only under the same config (``--force-config``
overrides, see docs/RELIABILITY.md). Exit status: 0 done, 1 NaN stop, 2 a one-line error
(workdir in use, another config, no readable checkpoint, a bad config value), 143 stopped
by SIGTERM after saving a checkpoint (rerun to resume).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

flags.DEFINE_string("config", None, "config file[:args], e.g. configs/pecop.py:dataset=pd4t,task=gait")
flags.DEFINE_multi_string("set", [], "override a config value, KEY=VALUE (repeatable), e.g. "
                          "--set optimizer.lr=0.001")
flags.DEFINE_string("workdir", None, "checkpoints, metrics and plots; an existing run resumes")
flags.DEFINE_string("hardware", "", "hardware preset applied to the config (aqa_jax/train/hardware.py)")
flags.DEFINE_bool("force-config", False, "resume the run in --workdir even though this config "
                  "differs from its config.json (both are kept in config_history.jsonl)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from aqa_jax.compilation_cache import enable_compilation_cache
    from aqa_jax.train.sharding import initialize_distributed

    initialize_distributed()
    enable_compilation_cache()  # as every aqa-jax command: $AQA_JAX_CACHE, off disables
    from aqa_jax.config_args import load_config
    from aqa_jax.train.loop import NonFiniteLossError, TrainingPreempted, train

    try:
        config = load_config(flags.FLAGS.config, flags.FLAGS.set, hardware=flags.FLAGS.hardware)
        summary = train(config, flags.FLAGS.workdir, force_config=flags.FLAGS["force-config"].value)
    except (FileNotFoundError, ValueError) as err:  # a workdir in use, another config, ...
        print(f"launch/main.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as err:
        print(f"launch/main.py: stopped: {err}", file=sys.stderr)
        sys.exit(1)
    except TrainingPreempted as err:  # SIGTERM: a checkpoint of the last step is saved
        print(f"launch/main.py: {err}", file=sys.stderr)
        sys.exit(143)
    print({k: v for k, v in summary.items() if k != "param_counts"})


def _refuse_config_dot_flags(argv: list[str]) -> list[str]:
    """``--config.key=value`` (the ml_collections syntax of earlier releases) is an error naming
    ``--set key=value``, instead of absl's "unknown flag"."""
    for arg in argv[1:]:
        if arg.startswith("--config."):
            key = arg.removeprefix("--config.")
            print(f"launch/main.py: error: {arg}: overrides are --set {key} "
                  "(one syntax with aqa-jax train)", file=sys.stderr)
            sys.exit(2)
    return flags.FLAGS(argv)


if __name__ == "__main__":
    app.run(main, flags_parser=_refuse_config_dot_flags)
