"""rhythmic_gymnastics: the Rhythmic Gymnastics (RG) clip features of GDLT/CoFInAl, as distributed.

RG ships **features, not frames**: per video, one 1024-d Video Swin Transformer feature per
non-overlapping 32-frame clip (GDLT's ``rg_swintx.py``), plus label files. One config per
apparatus: ``ball``, ``clubs``, ``hoop``, ``ribbon``; splits ``train``/``test`` are the label
files (the apparatus is the prefix of the video name before the first '_', as GDLT filters).

Read from the distributed archive (manual_dir = the folder holding the label files, or a
folder holding that one, e.g. ``RG/`` below it)::

    <root>/swintx_avg_fps25_clip32/<name>.npy     float (num_clips, 1024)
    <root>/train.txt, <root>/test.txt             first line a header, then whitespace-separated
                                                  rows: name Difficulty_Score Execution_Score Total_Score

The features folder is ``swintx_avg_fps25_clip32`` when present, otherwise the only folder of
``.npy`` files under the root (config field ``features_dir`` names one explicitly; several
candidates is an error). Label columns are read by name when the header names them and
otherwise by position (GDLT reads them by position and skips the first line).

Features (``core_features`` overridden, no frames): ``id`` (text, the video name),
``features`` (float32 ``(num_clips, feature_dim)``; ``feature_dim`` is a config field, 1024 for
the VST features; CoFInAl treats 2048 as I3D), ``num_clips`` (int32), ``score`` (float32, the
Total_Score in **raw judges' units**), ``difficulty_score``, ``execution_score``,
``total_score`` (float32, raw) and ``apparatus`` (text: Ball/Clubs/Hoop/Ribbon).

GDLT and CoFInAl train on ``score / 25`` (``normalize_score``): that divisor is
:data:`OFFICIAL_SCORE_DIVISOR`, applied by the method, not stored in the data.

Bad input is never silent: a label row that does not parse (wrong column count, a
non-numeric or non-finite score, an unknown apparatus prefix, a repeated name) is a
:class:`BadSampleError` naming the label file and line; a missing, pickled, non-2-D,
wrong-width or non-finite ``.npy``, one naming the sample and the file.

:class:`ClipFeatureBuilder` here is the shared base of this builder and ``fis_v``.
"""

from __future__ import annotations

import abc

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from aqa_jax.data.bad_input import BadSampleError, check_split_overlap
from aqa_jax.data.tfds_base import AQABuilderConfig, AQAVideoBuilder

OFFICIAL_SCORE_DIVISOR = 25.0  # GDLT/CoFInAl normalize_score: label / 25 (method side)
DEFAULT_FEATURES_DIR = "swintx_avg_fps25_clip32"
DEFAULT_FEATURE_DIM = 1024
APPARATUS = ["Ball", "Clubs", "Hoop", "Ribbon"]
RG_COLUMNS = ["Difficulty_Score", "Execution_Score", "Total_Score"]

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the Rhythmic Gymnastics VST features and label files from the GDLT repository
(https://github.com/xuangch/CVPR22_GDLT, README "Features": OneDrive
https://1drv.ms/u/s!AqXkt0Mw7p9llVaV2oV1mwmdAICG), unzip, and pass the folder holding the label
files (or its parent) as --manual_dir. Expected layout:

  <root>/
    swintx_avg_fps25_clip32/<name>.npy   (num_clips x 1024 float features, one file per video)
    train.txt                            (header line, then: name Difficulty_Score Execution_Score Total_Score)
    test.txt
"""
LABEL_FIX = "restore the label file from the distributed archive"
FEATURE_FIX = "restore <name>.npy from the distributed feature archive"


@dataclasses.dataclass
class ClipFeatureConfig(AQABuilderConfig):
    """A clip-feature dataset config (``short_side`` is unused: no frames are stored).

    ``target``: the label column stored as ``score``; ``feature_dim``: D of the (T, D)
    features; ``features_dir``: the features folder under the root (None: automatic).
    """

    target: str = ""
    feature_dim: int = DEFAULT_FEATURE_DIM
    features_dir: str | None = None


@dataclasses.dataclass
class RGConfig(ClipFeatureConfig):
    apparatus: str = "Ball"


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


def _float(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class ClipFeatureBuilder(AQAVideoBuilder, skip_registration=True):
    """Base of the clip-feature datasets (RG, Fis-V): label txt files + one .npy per video.

    Subclasses set ``COLUMNS`` (label columns after ``name``), ``ROOT_NAMES`` (normalised
    folder names that identify the dataset's root when several candidates exist),
    ``MANUAL_DOWNLOAD_INSTRUCTIONS``, and define :meth:`label_features` and :meth:`labels`.
    """

    COLUMNS: list[str] = []
    ROOT_NAMES: set[str] = set()

    # --- features ---------------------------------------------------------------------------
    def core_features(self) -> dict[str, Any]:
        dim = self.builder_config.feature_dim
        return {
            "id": tfds.features.Text(),
            "features": tfds.features.Tensor(shape=(None, dim), dtype=np.float32),
            "num_clips": tfds.features.Scalar(dtype=np.int32),
            "score": tfds.features.Scalar(dtype=np.float32),
        }

    def extra_features(self) -> dict[str, Any]:
        return self.label_features()

    @abc.abstractmethod
    def label_features(self) -> dict[str, Any]:
        """The dataset's label features (besides id, features, num_clips, score)."""

    @abc.abstractmethod
    def labels(self, name: str, values: dict[str, float], where: str) -> dict[str, Any] | None:
        """Extra feature values of a row, or None when the row belongs to another config."""

    # --- inputs -----------------------------------------------------------------------------
    def find_root(self, manual: Path) -> Path:
        """The folder holding train.txt and test.txt: manual_dir or up to 2 levels below it."""
        found, frontier = [], [manual]
        for _ in range(3):
            found += [d for d in frontier
                      if (d / "train.txt").is_file() and (d / "test.txt").is_file()]
            frontier = [c for d in frontier for c in sorted(d.iterdir()) if c.is_dir()]
        if len(found) > 1:
            named = [d for d in found if _norm(d.name) in self.ROOT_NAMES]
            found = named if len(named) == 1 else found
        if len(found) == 1:
            return found[0]
        problem = "no folder holding train.txt and test.txt" if not found else (
            f"several folders holding train.txt and test.txt ({[str(d) for d in found]}); pass "
            "the one you mean as manual_dir")
        raise FileNotFoundError(f"{self.name}: {problem} in {manual}.\n"
                                f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

    def find_features_dir(self, root: Path) -> Path:
        cfg = self.builder_config
        if cfg.features_dir is not None:
            path = root / cfg.features_dir
            if not path.is_dir():
                raise FileNotFoundError(f"{self.name}: no features folder {path} (config "
                                        f"features_dir).\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
            return path
        if (root / DEFAULT_FEATURES_DIR).is_dir():
            return root / DEFAULT_FEATURES_DIR
        candidates = [d for d in sorted(root.iterdir()) if d.is_dir() and any(d.glob("*.npy"))]
        if not candidates and any(root.glob("*.npy")):
            candidates = [root]
        if len(candidates) == 1:
            return candidates[0]
        problem = (f"no folder of .npy features (expected {root / DEFAULT_FEATURES_DIR})"
                   if not candidates else
                   f"several folders of .npy features ({[d.name for d in candidates]}); choose "
                   "one with a config whose features_dir names it")
        raise FileNotFoundError(f"{self.name}: {problem} in {root}.\n"
                                f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

    def read_label_file(self, path: Path) -> tuple[list[int], int, list[tuple[int, list[str]]]]:
        """(positions of COLUMNS, expected column count, (line, tokens) of the data rows)."""
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        if not lines:
            raise ValueError(f"{self.name}: {path} is empty — {LABEL_FIX}")
        header = lines[0].split()
        if len(header) > 1 and all(_float(t) is not None for t in header[1:]):
            raise ValueError(f"{self.name}: {path} line 1 {lines[0]!r} looks like data; the "
                             f"label files start with a header line (name {' '.join(self.COLUMNS)})"
                             f" — {LABEL_FIX}")
        lower = [h.lower() for h in header]
        if all(c.lower() in lower for c in self.COLUMNS):
            positions, width = [lower.index(c.lower()) for c in self.COLUMNS], len(header)
        else:  # GDLT's positional reading
            positions, width = list(range(1, len(self.COLUMNS) + 1)), len(self.COLUMNS) + 1
        rows = [(i, line.split()) for i, line in enumerate(lines[1:], start=2) if line.strip()]
        return positions, width, rows

    # --- generation -------------------------------------------------------------------------
    def _split_generators(self, dl_manager):
        root = self.find_root(self.manual_path(dl_manager))
        features = self.find_features_dir(root)
        labels = {split: self.label_path(root, split) for split in ("train", "test")}
        check_split_overlap(self.name, {  # a video in both label files would leak test samples
            split: (path, [t[0] for _, t in self.read_label_file(path)[2] if t])
            for split, path in labels.items()})
        return {split: self._generate_examples(split, labels[split], features)
                for split in ("train", "test")}

    def label_path(self, root: Path, split: str) -> Path:
        """The label file of ``split`` under the root."""
        return root / f"{split}.txt"

    def _generate_examples(self, split: str, label_path: Path, features: Path):
        cfg = self.builder_config
        report = self.new_report(split)
        positions, width, rows = self.read_label_file(label_path)
        seen: dict[str, int] = {}
        kept = count = 0

        def parse(line, tokens):
            where = f"{label_path}, line {line}"
            sample = tokens[0] if tokens else f"{label_path.name}:{line}"
            if len(tokens) != width:
                raise BadSampleError(sample, f"{where}: expected {width} whitespace-separated "
                                     f"columns (name {' '.join(self.COLUMNS)}), got {tokens!r}",
                                     LABEL_FIX)
            values = {}
            for column, pos in zip(self.COLUMNS, positions):
                values[column] = _float(tokens[pos])
                if values[column] is None:
                    raise BadSampleError(sample, f"{where}: {column} {tokens[pos]!r} is not a "
                                         "finite number", LABEL_FIX)
            name = tokens[0]
            extra = self.labels(name, values, where)
            if extra is None:
                return ()
            if name in seen:
                raise BadSampleError(name, f"{where}: repeats the name of line {seen[name]}",
                                     LABEL_FIX)
            seen[name] = line
            return name, values[cfg.target], extra

        for line, tokens in rows:
            sample = tokens[0] if tokens else f"{label_path.name}:{line}"
            parsed = report.run(sample, lambda: parse(line, tokens), fix=LABEL_FIX)
            if not parsed:
                continue
            kept += 1
            name, score, extra = parsed
            example = report.run(name, lambda: self._example(name, score, extra, features),
                                 fix=FEATURE_FIX)
            if example is not None:
                count += 1
                yield name, example
        report.finish()
        if not count:
            raise ValueError(f"{self.name}/{cfg.name}:{split}: no sample from {label_path} "
                             f"({kept} rows of this config; skipped ones are listed above)")

    def _example(self, name: str, score: float, extra: dict, features: Path) -> dict:
        dim = self.builder_config.feature_dim
        path = features / f"{name}.npy"
        if not path.is_file():
            raise BadSampleError(name, f"missing feature file {path}", FEATURE_FIX)
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise BadSampleError(name, f"unreadable feature file {path}: {err}",
                                 FEATURE_FIX) from None
        if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] != dim:
            raise BadSampleError(name, f"{path} has shape {array.shape}, expected (num_clips, "
                                 f"{dim}) (config feature_dim)", FEATURE_FIX)
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
            raise BadSampleError(name, f"{path} holds non-finite or non-numeric values",
                                 FEATURE_FIX)
        return {
            "id": name,
            "features": array.astype(np.float32),
            "num_clips": array.shape[0],
            "score": np.float32(score),
            **extra,
        }


class Builder(ClipFeatureBuilder):
    """Rhythmic Gymnastics (RG): VST clip features and D/E/Total scores per apparatus."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: GDLT's VST features and label files."}
    BUILDER_CONFIGS = [
        RGConfig(name=a.lower(), apparatus=a, target="Total_Score",
                 description=f"Rhythmic Gymnastics, {a}, score = Total_Score")
        for a in APPARATUS
    ]
    COLUMNS = RG_COLUMNS
    ROOT_NAMES = {"rg", "rhythmicgymnastics"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://github.com/xuangch/CVPR22_GDLT"
    CITATION = """@inproceedings{zeng2020hybrid,
  title={Hybrid Dynamic-static Context-aware Attention Network for Action Assessment in Long Videos},
  author={Zeng, Ling-An and Hong, Fa-Ting and Zheng, Wei-Shi and others},
  booktitle={ACM MM}, year={2020}}
@inproceedings{xu2022likert,
  title={Likert Scoring with Grade Decoupling for Long-term Action Assessment},
  author={Xu, Angchi and Zeng, Ling-An and Zheng, Wei-Shi},
  booktitle={CVPR}, year={2022}}"""

    def label_features(self):
        return {
            "difficulty_score": tfds.features.Scalar(dtype=np.float32),
            "execution_score": tfds.features.Scalar(dtype=np.float32),
            "total_score": tfds.features.Scalar(dtype=np.float32),
            "apparatus": tfds.features.Text(),
        }

    def labels(self, name, values, where):
        prefix = name.split("_")[0]
        apparatus = next((a for a in APPARATUS if a.lower() == prefix.lower()), None)
        if apparatus is None:
            raise BadSampleError(name, f"{where}: the name's prefix {prefix!r} is not an "
                                 f"apparatus ({'/'.join(APPARATUS)})", LABEL_FIX)
        if apparatus != self.builder_config.apparatus:
            return None
        return {
            "difficulty_score": np.float32(values["Difficulty_Score"]),
            "execution_score": np.float32(values["Execution_Score"]),
            "total_score": np.float32(values["Total_Score"]),
            "apparatus": apparatus,
        }
