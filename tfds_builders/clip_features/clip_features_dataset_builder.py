"""clip_features: the per-clip features that ``aqa-jax extract-features`` writes, as a dataset.

``aqa-jax extract-features NAME --config C --out DIR`` runs an I3D (Kinetics-400, or a
PECoP-adapted checkpoint) over every video of a built dataset (PD4T, MTL-AQA, synthetic_aqa, ...)
and writes the RG/Fis-V feature layout with a one-score label file::

    DIR/<id>.npy                    float (num_clips, 1024)
    DIR/train.csv, DIR/test.csv     CSV (csv module quoting), header ``name,score``, one row per video

This builder reads such a folder (``--manual_dir DIR``) into the record layout of
``rhythmic_gymnastics`` / ``fis_v``: ``id``, ``features`` (float32 (num_clips, feature_dim)),
``num_clips`` and ``score`` (the source dataset's own units). It is the shared
:class:`ClipFeatureBuilder` with one label column, ``score``, so the same checks apply (a row
that does not parse, a missing or malformed ``.npy``: an error naming the file and line).

Ids are read as the CSV gives them, spaces, commas and quotes included. A folder written
before the CSV (``train.txt``/``test.txt``, header ``name score``, space-separated) is still
read; a row there with more than two fields (an id with a space) is an error naming the line
and asking for a re-extraction, since that format cannot say where such an id ends.

One config, ``default`` (1024-d). A built dataset lives at ``<data_dir>/clip_features/default``,
so give each feature folder its own ``--data-dir`` (the CoFInAl/GDLT configs use
``<DIR>/tfds``)::

    aqa-jax build-data clip_features --manual-dir DIR --data-dir DIR/tfds
"""

from __future__ import annotations

import csv
from pathlib import Path

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
    train.csv    (header `name,score`, then: name,score)
    test.csv
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

    def find_root(self, manual: Path) -> Path:
        """manual_dir itself, holding both splits' label files (.csv, or the older .txt)."""
        missing = [s for s in ("train", "test")
                   if not (manual / f"{s}.csv").is_file() and not (manual / f"{s}.txt").is_file()]
        if missing:
            raise FileNotFoundError(f"{self.name}: {manual} has no {' or '.join(f'{s}.csv' for s in missing)}"
                                    f" (run extract-features for those splits).\n"
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return manual

    def label_path(self, root: Path, split: str) -> Path:
        return root / f"{split}.csv" if (root / f"{split}.csv").is_file() else root / f"{split}.txt"

    def read_label_file(self, path: Path):
        if path.suffix != ".csv":  # the older space-separated layout
            positions, width, rows = super().read_label_file(path)
            for line, tokens in rows:
                if len(tokens) != 2:
                    raise ValueError(f"{self.name}: {path} line {line} has {len(tokens)} "
                                     "space-separated fields, not 2 (name score): an id with "
                                     "spaces is ambiguous in this older format — re-run "
                                     "`aqa-jax extract-features` (it writes the split as .csv)")
            return positions, width, rows
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
        if not rows or [c.strip().lower() for c in rows[0]] != ["name", "score"]:
            raise ValueError(f"{self.name}: {path} line 1 must be the header name,score — "
                             "re-run `aqa-jax extract-features` into this folder")
        return [1], 2, [(i, r) for i, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]

    def label_features(self):
        return {}

    def labels(self, name, values, where):
        return {}
