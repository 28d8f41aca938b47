"""aqa7: AQA-7 (Parmar & Morris, WACV 2019) as CoRe reads it, one config per action class.

Configs ``diving``, ``gym_vault``, ``ski_big_air``, ``snowboard_big_air``, ``sync_diving_3m``,
``sync_diving_10m``: class indices 1-6 in this order, the order of CoRe's
``datasets/SevenPair.py`` (``classes_name``). Trampoline (class 7 of the original release)
is not used by CoRe and has no config. Splits ``train``/``test`` are CoRe's ``Split_4``.

Read from the distributed archive (manual_dir = ``Seven/`` or a folder holding it)::

    Seven/<class>-out/<NNN>/img_<k:05d>.jpg        NNN = sample index, zero-padded to 3
    Seven/Split_4/split_4_train_list.mat           variable consolidated_train_list
    Seven/Split_4/split_4_test_list.mat            variable consolidated_test_list

Each .mat row is ``[class_idx (1-6), sample_idx, score]``; a config keeps the rows of its
class (the other classes' rows belong to the other configs). The ``<class>-out`` folders may
also sit in ``Seven/data/`` (the AQA-Benchmark layout).

Frames: **every** ``img_%05d.jpg`` of the sample folder, in index order, which must run
1..N without a gap (a gap is a :class:`BadSampleError` naming the first missing file). CoRe
reads the first ``frame_length`` = 103 of them (``img_00001`` … ``img_00103``, no temporal
shift on AQA-7); a folder with fewer than ``min_frames`` (default 103, that length; 0
disables the check) frames is a :class:`BadSampleError`, since CoRe cannot use it.

Features: core ``id`` (``<class>/<NNN>``), ``frames`` (JPEG bytes, short side ``short_side``),
``num_frames`` (int32, frames stored), ``score`` (float32, the .mat's raw score in the
class's own units; CoRe normalises it per class to [0, 100] with the ranges
:data:`CORE_SCORE_RANGES` from its ``utils/misc.py`` — a method-side transform, not applied
here), plus ``action_class`` (text, class name), ``class_idx`` (int32, 1-6) and
``sample_idx`` (int32, the folder number).

A .mat row that does not parse (non-integer class or sample index, a non-finite score, a
sample listed twice) is a :class:`BadSampleError` naming the .mat file and row.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from aqa_jax.data.bad_input import BadSampleError, check_split_overlap
from aqa_jax.data.frames import encode_video_frames, read_image
from aqa_jax.data.tfds_base import AQABuilderConfig, AQAVideoBuilder

CLASSES = ["diving", "gym_vault", "ski_big_air", "snowboard_big_air", "sync_diving_3m",
           "sync_diving_10m"]  # class_idx = position + 1 (CoRe SevenPair.py)
NUM_CLASSES_IN_SPLIT = 7  # the split lists may also hold trampoline (7), which no config uses
CORE_FRAME_LENGTH = 103
# (min, max) per class, CoRe utils/misc.py, for normalising scores to [0, 100] (method side).
CORE_SCORE_RANGES = {
    "diving": (21.6, 102.6), "gym_vault": (12.3, 16.87), "ski_big_air": (8.0, 50.0),
    "snowboard_big_air": (8.0, 50.0), "sync_diving_3m": (46.2, 104.88),
    "sync_diving_10m": (49.8, 99.36),
}
FRAME_RE = re.compile(r"^img_(\d+)\.jpg$")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download AQA-7 from http://rtis.oit.unlv.edu/datasets.html (http://rtis.oit.unlv.edu/datasets/AQA-7.zip)
and unzip it; CoRe (github.com/yuxumin/CoRe) also links a prepared copy. Pass the Seven/ folder
(or the folder holding it) as --manual_dir. Expected layout:

  Seven/
    diving-out/001/img_00001.jpg ... (every sample folder NNN, frames img_%05d.jpg from 1)
    gym_vault-out/  ski_big_air-out/  snowboard_big_air-out/  sync_diving_3m-out/  sync_diving_10m-out/
    Split_4/split_4_train_list.mat   (variable consolidated_train_list: rows [class_idx, sample_idx, score])
    Split_4/split_4_test_list.mat    (variable consolidated_test_list)
"""
FRAMES_FIX = "restore the sample folder from AQA-7.zip (frames img_00001.jpg, img_00002.jpg, ...)"
MAT_FIX = "restore Split_4/*.mat from AQA-7.zip"


@dataclasses.dataclass
class AQA7Config(AQABuilderConfig):
    """One AQA-7 action class."""

    class_idx: int = 1
    min_frames: int = CORE_FRAME_LENGTH


def find_root(manual: Path) -> Path | None:
    """The folder holding ``Split_4/``: manual_dir or a folder up to 2 levels below it."""
    frontier = [manual]
    for _ in range(3):
        for d in frontier:
            if (d / "Split_4").is_dir():
                return d
        frontier = [c for d in frontier for c in sorted(d.iterdir()) if c.is_dir()]
    return None


def read_split(mat_path: Path, split: str) -> np.ndarray:
    """The (N, 3) ``consolidated_<split>_list`` array; ValueError naming the file otherwise."""
    var = f"consolidated_{split}_list"
    try:
        mat = scipy.io.loadmat(str(mat_path))
    except Exception as err:  # scipy raises several types for a corrupt file
        raise ValueError(f"aqa7: {mat_path} is not a readable .mat file ({err}) — "
                         f"{MAT_FIX}") from None
    if var not in mat:
        have = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"aqa7: {mat_path} has no variable {var} (it has {have}) — {MAT_FIX}")
    table = np.asarray(mat[var])
    if table.ndim != 2 or table.shape[1] != 3 or table.shape[0] == 0:
        raise ValueError(f"aqa7: {var} in {mat_path} has shape {table.shape}, expected (N, 3) rows "
                         f"[class_idx, sample_idx, score] — {MAT_FIX}")
    return table


def _as_int(x) -> int | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return int(x) if math.isfinite(x) and x == int(x) else None


def sample_frames(folder: Path, sample: str, min_frames: int) -> list[Path]:
    """The frame files of a sample folder, 1..N without gap; BadSampleError otherwise."""
    if not folder.is_dir():
        raise BadSampleError(sample, f"missing sample folder {folder}", FRAMES_FIX)
    indices = sorted(int(m.group(1)) for p in folder.iterdir() if (m := FRAME_RE.match(p.name)))
    if not indices:
        raise BadSampleError(sample, f"no img_%05d.jpg frames in {folder}", FRAMES_FIX)
    present = set(indices)
    for k in range(1, indices[-1] + 1):
        if k not in present:
            raise BadSampleError(sample, f"missing frame file {folder / f'img_{k:05d}.jpg'} "
                                 f"(the folder has frames up to img_{indices[-1]:05d}.jpg)",
                                 FRAMES_FIX)
    if len(indices) < min_frames:
        first_missing = folder / f"img_{len(indices) + 1:05d}.jpg"
        raise BadSampleError(sample, f"{folder} has {len(indices)} frames, fewer than the "
                             f"{min_frames} CoRe reads (missing {first_missing})", FRAMES_FIX)
    return [folder / f"img_{k:05d}.jpg" for k in range(1, indices[-1] + 1)]


class Builder(AQAVideoBuilder):
    """AQA-7: six Olympic actions (dives, vault, big air), frames and judges' scores."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: Seven/ frames and CoRe's Split_4 lists."}
    BUILDER_CONFIGS = [
        AQA7Config(name=name, class_idx=i + 1, description=f"AQA-7 {name} (class {i + 1})")
        for i, name in enumerate(CLASSES)
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "http://rtis.oit.unlv.edu/datasets.html"
    CITATION = """@inproceedings{parmar2019action,
  title={Action Quality Assessment Across Multiple Actions},
  author={Parmar, Paritosh and Morris, Brendan Tran},
  booktitle={WACV}, year={2019}}"""

    def extra_features(self):
        return {
            "action_class": tfds.features.Text(),
            "class_idx": tfds.features.Scalar(dtype=np.int32),
            "sample_idx": tfds.features.Scalar(dtype=np.int32),
        }

    def _split_generators(self, dl_manager):
        manual = self.manual_path(dl_manager)
        root = find_root(manual)
        if root is None:
            raise FileNotFoundError(f"aqa7: no Split_4/ folder in {manual} or below it.\n"
                                    f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
        name = CLASSES[self.builder_config.class_idx - 1]
        class_dir = next((d / f"{name}-out" for d in (root, root / "data")
                          if (d / f"{name}-out").is_dir()), None)
        if class_dir is None:
            raise FileNotFoundError(f"aqa7/{name}: no {name}-out/ folder in {root}.\n"
                                    f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
        splits = {}
        for split in ("train", "test"):
            mat_path = root / "Split_4" / f"split_4_{split}_list.mat"
            if not mat_path.is_file():
                raise FileNotFoundError(f"aqa7: missing {mat_path}.\n"
                                        f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
            splits[split] = self._generate_examples(split, mat_path, class_dir)
        listed = {}  # the official split 4 is disjoint: a sample in both would leak test samples
        for split in ("train", "test"):
            mat_path = root / "Split_4" / f"split_4_{split}_list.mat"
            listed[split] = (mat_path, [_as_int(r[1]) for r in read_split(mat_path, split)
                                        if _as_int(r[0]) == self.builder_config.class_idx
                                        and _as_int(r[1]) is not None])
        check_split_overlap(f"aqa7/{name}", listed)
        return splits

    def _generate_examples(self, split: str, mat_path: Path, class_dir: Path):
        cfg = self.builder_config
        name = CLASSES[cfg.class_idx - 1]
        report = self.new_report(split)
        table = read_split(mat_path, split)
        seen: dict[int, int] = {}
        rows = count = 0

        def parse(i, row):
            cls, idx = _as_int(row[0]), _as_int(row[1])
            where = f"{mat_path}, consolidated_{split}_list row {i}"
            if cls is None or not 1 <= cls <= NUM_CLASSES_IN_SPLIT:
                raise BadSampleError(f"{mat_path.name}:row{i}", f"{where}: class_idx {row[0]!r} "
                                     f"is not an integer in 1-{NUM_CLASSES_IN_SPLIT}", MAT_FIX)
            if cls != cfg.class_idx:
                return None
            sample = f"{name}/{idx:03d}" if idx is not None else f"{mat_path.name}:row{i}"
            if idx is None or idx < 0:
                raise BadSampleError(sample, f"{where}: sample_idx {row[1]!r} is not an index",
                                     MAT_FIX)
            if not math.isfinite(float(row[2])):
                raise BadSampleError(sample, f"{where}: score {row[2]!r} is not finite", MAT_FIX)
            if idx in seen:
                raise BadSampleError(sample, f"{where}: repeats sample {idx} of row {seen[idx]}",
                                     MAT_FIX)
            seen[idx] = i
            return idx, float(row[2])

        for i, row in enumerate(table):
            parsed = report.run(f"{mat_path.name}:row{i}", lambda: parse(i, row) or (), fix=MAT_FIX)
            if not parsed:
                continue
            rows += 1
            idx, score = parsed
            key = f"{name}/{idx:03d}"
            example = report.run(key, lambda: self._example(key, class_dir / f"{idx:03d}", idx,
                                                            score), fix=FRAMES_FIX)
            if example is not None:
                count += 1
                yield key, example
        report.finish()
        if not count:
            raise ValueError(f"aqa7/{name}:{split}: no sample of class {cfg.class_idx} in "
                             f"{mat_path} ({rows} rows of this class; skipped ones are listed "
                             "above)")

    def _example(self, key: str, folder: Path, idx: int, score: float) -> dict:
        cfg = self.builder_config
        paths = sample_frames(folder, key, cfg.min_frames)
        frames = encode_video_frames((read_image(p) for p in paths), self.short_side)
        return {
            "id": key,
            "frames": frames,
            "num_frames": len(frames),
            "score": np.float32(score),
            "action_class": CLASSES[cfg.class_idx - 1],
            "class_idx": cfg.class_idx,
            "sample_idx": idx,
        }
