"""TensorFlow-free TFDS builders, one package per AQA dataset (see aqa_jax.data.registry)."""
