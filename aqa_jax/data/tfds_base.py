"""Common base of the TensorFlow-free AQA dataset builders in ``tfds_builders/``.

Every video dataset stores the same core features, so one pipeline reads them all:

- ``id`` (text): the sample key as the dataset's owners write it;
- ``frames``: a sequence of JPEG bytes (short side ``short_side``, 256 by default), kept as
  raw bytes (``Tensor(shape=(), dtype=object)``) so pipelines decode only the frames a clip
  needs (``tfds.features.Video``/``Image`` would need TensorFlow or decode everything);
- ``num_frames`` (int32) and ``score`` (float32, the dataset's own units);

plus the dataset's own labels from :meth:`AQAVideoBuilder.extra_features`. Feature datasets
(RG, Fis-V) override :meth:`core_features`. Builders are written with ``file_format=
'array_record'`` and read with ``tfds.data_source``; no TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from aqa_jax.data.bad_input import BadSampleReport

DEFAULT_SHORT_SIDE = 256


def frames_feature() -> tfds.features.FeatureConnector:
    """JPEG bytes per frame, undecoded (see module docstring)."""
    return tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))


@dataclasses.dataclass
class AQABuilderConfig(tfds.core.BuilderConfig):
    """A builder config with the stored frame size (``short_side=None`` keeps originals)."""

    short_side: int | None = DEFAULT_SHORT_SIDE


class AQAVideoBuilder(tfds.core.GeneratorBasedBuilder):
    """Base class: core features, manual_dir checks, bad-sample policy.

    Subclasses define ``VERSION``, ``BUILDER_CONFIGS``, ``MANUAL_DOWNLOAD_INSTRUCTIONS``,
    :meth:`extra_features`, ``_split_generators`` and ``_generate_examples``, and make each
    example through ``self.bad_samples.run(sample_id, make, fix=...)``.

    Extra constructor argument ``skip_bad_samples`` (default False): skip and report bad
    samples in ``bad_samples_<split>.json`` next to the dataset instead of failing.
    """

    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""

    def __init__(self, *, skip_bad_samples: bool = False, **kwargs: Any):
        self.skip_bad_samples = skip_bad_samples
        super().__init__(**kwargs)
        # tfds builds in a temporary folder that it renames to this one when the build succeeds
        self.final_data_dir = Path(os.fspath(self.data_dir))

    # --- features ---------------------------------------------------------------------------
    def core_features(self) -> dict[str, Any]:
        return {
            "id": tfds.features.Text(),
            "frames": frames_feature(),
            "num_frames": tfds.features.Scalar(dtype=np.int32),
            "score": tfds.features.Scalar(dtype=np.float32),
        }

    def extra_features(self) -> dict[str, Any]:
        return {}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION or (self.__doc__ or "").strip(),
            features=tfds.features.FeaturesDict({**self.core_features(), **self.extra_features()}),
            homepage=self.HOMEPAGE or None,
            citation=self.CITATION or None,
        )

    # --- inputs -----------------------------------------------------------------------------
    @property
    def short_side(self) -> int | None:
        return getattr(self.builder_config, "short_side", DEFAULT_SHORT_SIDE)

    def manual_path(self, dl_manager: tfds.download.DownloadManager, *required: str) -> Path:
        """The manual_dir, checked to hold ``required`` entries; else the instructions."""
        instructions = getattr(self, "MANUAL_DOWNLOAD_INSTRUCTIONS", "")
        try:
            root = Path(dl_manager.manual_dir)
        except AssertionError:
            root = None
        if root is None or not root.is_dir() or not any(root.iterdir()):
            raise FileNotFoundError(
                f"{self.name}: the manual directory {root} is missing or empty.\n{instructions}"
            )
        missing = [r for r in required if not (root / r).exists()]
        if missing:
            raise FileNotFoundError(
                f"{self.name}: {root} lacks {', '.join(missing)}.\n{instructions}"
            )
        return root

    def new_report(self, split: str) -> "SplitReport":
        return SplitReport(self, split)


class SplitReport(BadSampleReport):
    """A :class:`BadSampleReport` that writes next to the dataset being built."""

    def __init__(self, builder: AQAVideoBuilder, split: str):
        super().__init__(dataset=f"{builder.name}/{builder.builder_config.name}:{split}",
                         skip=builder.skip_bad_samples)
        self._builder, self._split = builder, split

    def finish(self) -> None:
        """Writes ``bad_samples_<split>.json`` into the dataset directory (if any skipped).

        While tfds builds, ``builder.data_dir`` is a temporary folder that is renamed to the
        dataset's own when the build completes; the report is written there, so it moves with
        the data, and the path printed is the one it has once the build is done."""
        if self.skipped:
            path = Path(os.fspath(self._builder.data_dir)) / f"bad_samples_{self._split}.json"
            super().write(path.parent)
            (path.parent / "bad_samples.json").rename(path)
            final = getattr(self._builder, "final_data_dir", path.parent) / path.name
            print(f"{self.dataset}: skipped {len(self.skipped)} bad samples; listed in {final} "
                  "once the build completes")
