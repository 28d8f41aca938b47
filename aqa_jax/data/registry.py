"""Finding, building and opening the datasets of ``tfds_builders/`` by name."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

DEFAULT_DATA_DIR = os.environ.get("AQA_JAX_DATA_DIR", str(Path.home() / "aqa_jax_datasets"))


def builder_class(name: str) -> type:
    """The ``Builder`` class of ``tfds_builders/<name>``."""
    try:
        module = importlib.import_module(f"tfds_builders.{name}.{name}_dataset_builder")
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("tfds_builders"):
            available = sorted(
                p.name for p in Path(__file__).resolve().parents[2].joinpath("tfds_builders").iterdir()
                if p.is_dir() and not p.name.startswith("_")
            )
            raise ValueError(f"no dataset builder {name!r}; available: {available}") from None
        raise
    return module.Builder


def get_builder(
    name: str, config: str | None = None, *, data_dir: str | None = None, **kwargs: Any
) -> tfds.core.DatasetBuilder:
    """An array_record builder of ``name``/``config`` under ``data_dir``."""
    return builder_class(name)(
        config=config, data_dir=data_dir or DEFAULT_DATA_DIR, file_format="array_record", **kwargs
    )


def build(
    name: str,
    config: str | None = None,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    skip_bad_samples: bool = False,
) -> tfds.core.DatasetBuilder:
    """Builds (once) the dataset; reads the dataset's own files from ``manual_dir``."""
    builder = get_builder(name, config, data_dir=data_dir, skip_bad_samples=skip_bad_samples)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=download_config)
    return builder


def data_source(
    name: str, config: str | None, split: str, *, data_dir: str | None = None
) -> Any:
    """Random-access source of a built split (``tfds.data_source``; no TensorFlow)."""
    builder = get_builder(name, config, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"{name}/{config} is not built under {builder.data_dir}; run "
            f"`aqa-jax build-data {name} --config {config} --data-dir {data_dir or DEFAULT_DATA_DIR}`"
        )
    return builder.as_data_source(split=split)
