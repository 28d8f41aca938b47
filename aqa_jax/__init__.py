"""aqa_jax: Action Quality Assessment in JAX/Flax."""

__version__ = "0.1.0"
