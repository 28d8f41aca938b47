"""aqa_jax: Action Quality Assessment in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy submodules: ``aqa_jax.inspect_adapters`` after a bare ``import aqa_jax``, without
    importing JAX at ``import aqa_jax``."""
    if name == "inspect_adapters":
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
