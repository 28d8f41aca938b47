"""The train state and its sharded creation.

``TrainState`` is a pytree of arrays only (the optimizer and the model are not in it), so
orbax saves it as it is and ``jax.jit`` donates it whole.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh

from aqa_jax.train.sharding import AxisRules, logical_shardings, replicated


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def abstract_variables(model: nn.Module, example: Mapping[str, Any]) -> Any:
    """Boxed (logically partitioned) shapes of ``model``'s variables, computing nothing."""
    return jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                           example, train=False)
    )


def state_shardings(
    boxed: Any, tx: optax.GradientTransformation, mesh: Mesh, rules: AxisRules
) -> TrainState:
    """A ``TrainState`` of NamedShardings for the model whose :func:`abstract_variables` are
    ``boxed``: parameters (and their optimizer moments) as the logical-axis rules say, batch
    statistics and scalars replicated."""
    var_shardings = logical_shardings(boxed, mesh, rules)
    params_sh = var_shardings["params"]
    abstract_params = nn.unbox(boxed["params"])
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    opt_sh = _mirror_param_shardings(abstract_opt, abstract_params, params_sh, replicated(mesh))
    return TrainState(
        step=replicated(mesh),
        params=params_sh,
        batch_stats=var_shardings.get("batch_stats", {}),
        opt_state=opt_sh,
    )


def put_global(tree: Any, shardings: Any) -> Any:
    """Host arrays (the same on every process) → global arrays with ``shardings``."""

    def put(value, sharding):
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])

    return jax.tree.map(put, tree, shardings)


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    example: Mapping[str, Any],
    shardings: TrainState,
    *,
    seed: int,
    load_pretrained: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> TrainState:
    """A sharded initial state: ``model.init`` jitted with ``out_shardings``, pretrained
    weights put in place (``load_pretrained`` maps numpy variables to numpy variables; None
    keeps the random init), and the optimizer state initialised sharded."""
    var_shardings = {"params": shardings.params}
    if shardings.batch_stats:
        var_shardings["batch_stats"] = shardings.batch_stats

    def init(rng):
        return nn.unbox(model.init({"params": rng, "dropout": rng}, example, train=False))

    rng = jax.random.key(seed)
    if load_pretrained is None:
        variables = jax.jit(init, out_shardings=var_shardings)(rng)
    else:
        # Initialise replicated, read one local copy, fill in the pretrained weights on the
        # host (identical on every process), then lay it out as the rules say.
        repl = jax.tree.map(lambda s: replicated(s.mesh), var_shardings)
        host = jax.tree.map(
            lambda x: np.asarray(x.addressable_data(0)), jax.jit(init, out_shardings=repl)(rng)
        )
        variables = put_global(load_pretrained(host), var_shardings)
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(variables["params"])
    return TrainState(
        step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        opt_state=opt_state,
    )


def abstract_state(
    shardings: TrainState, boxed: Any, tx: optax.GradientTransformation
) -> TrainState:
    """ShapeDtypeStructs carrying ``shardings`` (from :func:`abstract_variables` ``boxed``):
    the restore target of a checkpoint."""
    params = nn.unbox(boxed["params"])
    shapes = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params,
        batch_stats=nn.unbox(boxed.get("batch_stats", {})),
        opt_state=jax.eval_shape(tx.init, params),
    )
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )


def _mirror_param_shardings(opt_state: Any, params: Any, params_sh: Any, default: Any) -> Any:
    """Shardings for an optimizer state: a leaf whose key path ends with a parameter's path
    (momenta, moments) and has its shape is sharded like it; counters etc. get ``default``."""
    by_path = {
        tuple(k.key for k in path): (leaf.shape, sh)
        for (path, leaf), sh in zip(
            jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(params_sh)
        )
    }

    def pick(path, leaf):
        keys = tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
        for i in range(len(keys)):
            shape, sh = by_path.get(keys[i:], (None, None))
            if sh is not None and shape == leaf.shape:
                return sh
        return default

    return jax.tree_util.tree_map_with_path(pick, opt_state)


@jax.jit
def _finiteness(state: TrainState) -> dict[str, jax.Array]:
    def all_finite(tree: Any) -> jax.Array:
        flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
                 if jnp.issubdtype(x.dtype, jnp.inexact)]
        return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)

    floats = [x.astype(jnp.float32) for x in jax.tree.leaves(state.params)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    norm_sq = sum((jnp.sum(jnp.square(x)) for x in floats), jnp.float32(0))
    return {
        "params": all_finite(state.params) & jnp.isfinite(norm_sq),
        "batch_stats": all_finite(state.batch_stats),
        "opt_state": all_finite(state.opt_state),
    }


def non_finite_parts(state: TrainState) -> list[str]:
    """The parts of ``state`` that are not finite: ``params`` (a NaN/Inf value, or a global
    L2 norm that overflows float32, i.e. values past ~1e19 that no further step survives),
    ``batch_stats``, ``opt_state``. One jitted reduction on the devices; only three booleans
    come back to the host."""
    flags = _finiteness(state)  # replicated scalars: this process's copy is the answer
    return [name for name in ("params", "batch_stats", "opt_state")
            if not bool(np.asarray(flags[name].addressable_data(0)))]
