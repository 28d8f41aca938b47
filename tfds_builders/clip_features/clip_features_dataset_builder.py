"""clip_features: the per-clip features that ``aqa-jax extract-features`` writes, as a dataset.

``aqa-jax extract-features NAME --config C --out DIR`` runs an I3D (Kinetics-400, or a
PECoP-adapted checkpoint) over every video of a built dataset (PD4T, MTL-AQA, synthetic_aqa, ...)
and writes the RG/Fis-V feature layout with a one-score label file::

    DIR/<id>.npy                    float (num_clips, 1024)
    DIR/train.txt, DIR/test.txt     header ``name score``, then one ``name score`` row per video

This builder reads such a folder (``--manual_dir DIR``) into the record layout of
``rhythmic_gymnastics`` / ``fis_v``: ``id``, ``features`` (float32 (num_clips, feature_dim)),
``num_clips`` and ``score`` (the source dataset's own units). It is the shared
:class:`ClipFeatureBuilder` with one label column, ``score``, so the same checks apply (a row
that does not parse, a missing or malformed ``.npy``: an error naming the file and line).

One config, ``default`` (1024-d). A built dataset lives at ``<data_dir>/clip_features/default``,
so give each feature folder its own ``--data-dir`` (the CoFInAl/GDLT configs use
``<DIR>/tfds``)::

    aqa-jax build-data clip_features --manual-dir DIR --data-dir DIR/tfds
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from tfds_builders.rhythmic_gymnastics.rhythmic_gymnastics_dataset_builder import (
    ClipFeatureBuilder,
    ClipFeatureConfig,
)

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Pass the folder written by `aqa-jax extract-features NAME --config C --out DIR` as
--manual_dir DIR (both splits extracted). Expected layout:

  DIR/
    <id>.npy     (num_clips x 1024 float features, one file per video)
    train.txt    (header `name score`, then: name score)
    test.txt
"""


class Builder(ClipFeatureBuilder):
    """Per-clip features written by ``aqa-jax extract-features`` (see module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: the extract-features folder layout."}
    BUILDER_CONFIGS = [ClipFeatureConfig(name="default", target="score",
                                         description="extract-features output, one score")]
    COLUMNS = ["score"]
    ROOT_NAMES: set[str] = set()
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def label_features(self):
        return {}

    def labels(self, name, values, where):
        return {}
