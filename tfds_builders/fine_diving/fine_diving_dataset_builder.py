"""fine_diving: FineDiving (Xu et al., CVPR 2022), the procedure-annotated diving dataset of TSA.

Read exactly as the authors distribute it (see ``MANUAL_DOWNLOAD_INSTRUCTIONS``): the annotation
pickles plus the ``FINADiving_MTL_256s`` frame folders. One example per action instance, keyed
``(video_name: str, instance_idx: int)`` in every pickle, written as the id text
``"<video_name>/<instance_idx>"``. Splits ``train``/``test`` come from ``train_split.pkl`` /
``test_split.pkl`` (2251 / 749 keys in the released files).

Frames and labels, and how TSA aligns them (``datasets/FineDiving_Pair.py``, ``load_video``):

* An instance folder ``FINADiving_MTL_256s/<video_name>/<instance_idx>/`` holds one JPEG per
  frame of the trimmed instance, named by its **absolute** frame number in the untrimmed video
  (``%05d.jpg``), from ``start_frame`` to ``end_frame`` of the coarse annotation.
* TSA globs and sorts the folder, takes ``start = int(first file name)``, ``end = int(last
  file name)``, ``frame_list = np.linspace(start, end, 96).astype(int)`` and
  ``idx = frame_list - start``; it then opens ``image_list[idx]`` **and** reads
  ``frames_labels[idx]``. So ``frames_labels[i]`` belongs to the i-th file of the folder, i.e.
  to absolute frame ``start + i``, which holds only when the folder is exactly the contiguous
  range ``start_frame..end_frame`` (in the released pickles ``len(frames_labels) ==
  end_frame - start_frame + 1`` for all 3000 instances). This builder therefore stores the
  folder's frames in frame-number order, **checks** that they are exactly ``start_frame ..
  end_frame`` with one label each (a gap, an extra file or a length mismatch is a bad sample,
  since TSA would silently pair frames with the wrong labels), and stores ``frame_labels``
  aligned with ``frames`` (``frame_labels[i]`` is the sub-action of ``frames[i]``).
* To pick TSA's 96 frames, store ``start_frame``/``end_frame`` (the absolute numbers of the
  first and last stored frame): :func:`tsa_frame_positions` reproduces TSA's
  ``np.linspace(start, end, 96).astype(int) - start`` exactly (``linspace`` over absolute
  numbers does not always truncate to the same positions as ``linspace(0, n - 1, 96)``), and
  :func:`tsa_transitions` reproduces TSA's transition targets from the sampled labels.
* TSA does **not** use ``steps_transit_frames``; it derives the transitions from the sampled
  ``frames_labels``. The raw array is still stored as ``step_transitions`` (it has -1 entries
  and non-monotonic values in a few instances: kept as the file has them).

Features (besides ``id``, ``frames``, ``num_frames``, ``score`` = ``dive_score``):
``video_name``, ``instance_idx``, ``difficulty`` (DD), ``action_type`` (dive number, e.g.
'207c'), ``judge_scores`` (7, 5 or 3 values as the coarse file has them), ``frame_labels``,
``step_transitions``, ``num_steps`` (= ``len(step_transitions) + 1``, the annotated step
count), ``start_frame``, ``end_frame`` and ``mtl_aqa_key`` (see below).

MTL-AQA overlap: the 1369 instances whose video name is a two-digit MTL-AQA video ('01', …,
'26') are MTL-AQA samples (key ``('01', 1)`` is MTL-AQA ``(1, 1)``), and the FineDiving split is
not aligned with MTL-AQA's (268 MTL-AQA test samples are FineDiving train). ``mtl_aqa_key`` is
the MTL-AQA key of those written as the ``mtl_aqa`` builder writes its ``id``
(``"<video_id:02d>_<sample_idx:02d>"``, e.g. ``('01', 5)`` -> ``"01_05"``), ``""`` otherwise, so
that code mixing the two datasets can detect the leak by joining on it.

Frames are re-encoded only when their short side differs from the config's ``short_side``;
the distributed frames are already 256 high, so with the default config the original JPEG
bytes are stored unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from aqa_jax.data.bad_input import BadSampleError, check_split_overlap
from aqa_jax.data.frames import decode_jpeg, encode_jpeg, resize_short_side
from aqa_jax.data.sampling import absolute_linspace_indices
from aqa_jax.data.tfds_base import AQABuilderConfig, AQAVideoBuilder
from aqa_jax.weights.safe_pickle import safe_load

FRAMES_DIR = "FINADiving_MTL_256s"
ANNOTATIONS_DIR = "Annotations"
COARSE = "FineDiving_coarse_annotation.pkl"
FINE_AQA = "fine-grained_annotation_aqa.pkl"  # what TSA reads
FINE_DICT = "FineDiving_fine-grained_annotation.pkl"
SUB_ACTIONS = "Sub_action_Types_Table.pkl"
SPLITS = {"train": "train_split.pkl", "test": "test_split.pkl"}

TSA_FRAME_LENGTH = 96  # FineDiving_TSA.yaml frame_length

_MTL_AQA_VIDEO = re.compile(r"^\d{2}$")

_FIX = (
    "check this instance's entry in the FineDiving annotation pickles and its frame folder "
    f"{FRAMES_DIR}/<video_name>/<instance_idx>/ (re-extract or re-download it), or build with "
    "`aqa-jax build-data ... --skip-bad-samples` to leave it out"
)


def tsa_frame_positions(start_frame: int, end_frame: int, length: int = TSA_FRAME_LENGTH) -> np.ndarray:
    """TSA's frame sampling: positions into the stored frames (and ``frame_labels``), as
    ``FineDiving_Pair_Dataset.load_video`` (:func:`aqa_jax.data.sampling.absolute_linspace_indices`)."""
    return absolute_linspace_indices(start_frame, end_frame, length)


def tsa_transitions(sampled_labels: np.ndarray) -> np.ndarray:
    """TSA's transition targets from the labels of the sampled frames.

    Distinct labels in order of first appearance; their first indices t; TSA stores
    ``[t[1] - 1, t[-1] - 1]`` (its runner adds the 1 back).
    """
    labels = [int(x) for x in np.asarray(sampled_labels)]
    firsts = [labels.index(c) for c in dict.fromkeys(labels)]
    if len(firsts) < 2:
        raise ValueError(f"sampled labels have a single sub-action {labels[:1]}; TSA needs >= 2")
    return np.array([firsts[1] - 1, firsts[-1] - 1], np.int64)


@dataclasses.dataclass
class FineDivingConfig(AQABuilderConfig):
    pass


class Builder(AQAVideoBuilder):
    """FineDiving: 3000 dives with dive score, DD, judges, dive number and sub-action steps."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        FineDivingConfig(name="default", short_side=256,
                         description="frames with short side 256 (the distributed size)"),
        FineDivingConfig(name="original", short_side=None,
                         description="frames exactly as distributed (never re-encoded)"),
    ]
    DEFAULT_CONFIG_NAME = "default"
    HOMEPAGE = "https://github.com/xujinglin/FineDiving"
    CITATION = """@inproceedings{xu2022finediving,
  title={FineDiving: A Fine-grained Dataset for Procedure-aware Action Quality Assessment},
  author={Xu, Jinglin and Rao, Yongming and Yu, Xumin and Chen, Guangyi and Zhou, Jie and Lu, Jiwen},
  booktitle={CVPR}, year={2022}}"""

    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
FineDiving is distributed by its authors on request: sign the release agreement
(https://github.com/xujinglin/FineDiving, agreement/Release_Agreement.pdf) and e-mail it to them;
they send the annotations and the frames (FINADiving_MTL_256s). The annotation pickles are also in
the repository's git history (commit 806717b, folder Annotations/).
Put them in the manual_dir like this (the pickles may also sit directly in manual_dir):

  <manual_dir>/
    {ANNOTATIONS_DIR}/
      {COARSE}           (required: judge scores, start/end frames)
      {FINE_AQA}            (TSA's file) and/or
      {FINE_DICT}     (one of the two is required)
      {SUB_ACTIONS}           (optional; checks the sub-action ids)
      {SPLITS['train']}, {SPLITS['test']}
    {FRAMES_DIR}/<video_name>/<instance_idx>/<frame_no:05d>.jpg
      (frame_no = absolute frame number in the untrimmed video, start_frame..end_frame)
"""

    def extra_features(self) -> dict[str, Any]:
        return {
            "video_name": tfds.features.Text(),
            "instance_idx": tfds.features.Scalar(dtype=np.int32),
            "difficulty": tfds.features.Scalar(dtype=np.float32),
            "action_type": tfds.features.Text(),
            "judge_scores": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            "frame_labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "step_transitions": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "num_steps": tfds.features.Scalar(dtype=np.int32),
            "start_frame": tfds.features.Scalar(dtype=np.int32),
            "end_frame": tfds.features.Scalar(dtype=np.int32),
            "mtl_aqa_key": tfds.features.Text(),
        }

    # --- inputs -----------------------------------------------------------------------------
    def _annotation_file(self, root: Path, name: str) -> Path | None:
        for folder in (root / ANNOTATIONS_DIR, root):
            if (folder / name).is_file():
                return folder / name
        return None

    def _require(self, root: Path, name: str) -> Path:
        path = self._annotation_file(root, name)
        if path is None:
            raise FileNotFoundError(
                f"{self.name}: {name} not found in {root / ANNOTATIONS_DIR} or {root}.\n"
                f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        return path

    @staticmethod
    def _load_dict(path: Path) -> dict:
        data = safe_load(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a dict keyed by (video_name, instance_idx), "
                             f"got {type(data).__name__}")
        return data

    def _split_generators(self, dl_manager):
        root = self.manual_path(dl_manager)
        if not (root / FRAMES_DIR).is_dir():
            raise FileNotFoundError(
                f"{self.name}: {root / FRAMES_DIR} is missing.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        coarse_path = self._require(root, COARSE)
        fine_paths = [p for p in (self._annotation_file(root, n) for n in (FINE_AQA, FINE_DICT)) if p]
        if not fine_paths:
            raise FileNotFoundError(
                f"{self.name}: neither {FINE_AQA} nor {FINE_DICT} found in "
                f"{root / ANNOTATIONS_DIR} or {root}.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        anno = {
            "coarse": (coarse_path, self._load_dict(coarse_path)),
            "fine": [(p, self._load_dict(p)) for p in fine_paths],
        }
        table_path = self._annotation_file(root, SUB_ACTIONS)
        anno["sub_actions"] = set(self._load_dict(table_path)) if table_path else None

        generators, listed = {}, {}
        for split, file_name in SPLITS.items():
            path = self._require(root, file_name)
            keys = safe_load(path)
            if not isinstance(keys, (list, tuple)):
                raise ValueError(f"{path}: expected a list of (video_name, instance_idx) keys, "
                                 f"got {type(keys).__name__}")
            seen: set[str] = set()
            dupes = [r for r in map(repr, keys) if r in seen or seen.add(r)]
            if dupes:
                raise ValueError(f"{path}: duplicated keys {dupes[:5]}")
            generators[split] = self._generate_examples(split, path, keys, root, anno)
            listed[split] = (path, list(map(repr, keys)))
        check_split_overlap(self.name, listed)  # the released splits are disjoint
        return generators

    # --- examples ---------------------------------------------------------------------------
    def _generate_examples(self, split, split_path, keys, root, anno):
        report = self.new_report(split)
        for key in keys:
            sample_id = (f"{key[0]}/{key[1]}" if isinstance(key, tuple) and len(key) == 2
                         else repr(key))
            example = report.run(
                sample_id, lambda: self._make_example(key, sample_id, split_path, root, anno),
                fix=_FIX,
            )
            if example is not None:
                yield sample_id, example
        report.finish()

    def _make_example(self, key, sample_id, split_path, root, anno) -> dict[str, Any]:
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str)
                and isinstance(key[1], (int, np.integer)) and not isinstance(key[1], bool)):
            raise BadSampleError(sample_id, f"{split_path}: malformed key {key!r}, expected "
                                 "(video_name: str, instance_idx: int)", _FIX)
        video_name, instance_idx = key[0], int(key[1])

        coarse_path, coarse = anno["coarse"]
        if key not in coarse:
            raise BadSampleError(sample_id, f"key {key!r} of {split_path} has no entry in "
                                 f"{coarse_path}", _FIX)
        c = _parse_coarse(coarse[key], sample_id, coarse_path)

        fine = []
        for path, table in anno["fine"]:
            if key not in table:
                raise BadSampleError(sample_id, f"key {key!r} of {split_path} has no entry in "
                                     f"{path}", _FIX)
            fine.append((path, _parse_fine(table[key], sample_id, path)))
        f_path, f = fine[0]
        for other_path, other in fine[1:]:
            for field in ("action_type", "dive_score", "difficulty", "step_transitions",
                          "frame_labels"):
                if not np.array_equal(np.asarray(f[field]), np.asarray(other[field])):
                    raise BadSampleError(sample_id, f"{field} differs between {f_path} and "
                                         f"{other_path}", _FIX)
        for field in ("action_type", "dive_score", "difficulty"):
            if c[field] != f[field]:
                raise BadSampleError(sample_id, f"{field} is {c[field]!r} in {coarse_path} but "
                                     f"{f[field]!r} in {f_path}", _FIX)
        labels = f["frame_labels"]
        n = c["end_frame"] - c["start_frame"] + 1
        if len(labels) != n:
            raise BadSampleError(sample_id, f"{f_path}: {len(labels)} frames_labels for frames "
                                 f"{c['start_frame']}..{c['end_frame']} ({n} frames) of "
                                 f"{coarse_path}", _FIX)
        known = anno["sub_actions"]
        if known is not None:
            unknown = sorted(set(labels.tolist()) - known)
            if unknown:
                raise BadSampleError(sample_id, f"{f_path}: frames_labels has ids {unknown} "
                                     f"missing from {SUB_ACTIONS}", _FIX)

        frames = self._read_frames(root / FRAMES_DIR / video_name / str(instance_idx),
                                   c["start_frame"], c["end_frame"], sample_id)
        return {
            "id": sample_id,
            "frames": frames,
            "num_frames": len(frames),
            "score": np.float32(c["dive_score"]),
            "video_name": video_name,
            "instance_idx": instance_idx,
            "difficulty": np.float32(c["difficulty"]),
            "action_type": c["action_type"],
            "judge_scores": np.asarray(c["judge_scores"], np.float32),
            "frame_labels": labels.astype(np.int32),
            "step_transitions": f["step_transitions"].astype(np.int32),
            "num_steps": len(f["step_transitions"]) + 1,
            "start_frame": c["start_frame"],
            "end_frame": c["end_frame"],
            "mtl_aqa_key": (f"{int(video_name):02d}_{instance_idx:02d}"
                            if _MTL_AQA_VIDEO.match(video_name) else ""),
        }

    def _read_frames(self, folder: Path, start: int, end: int, sample_id: str) -> list[bytes]:
        if not folder.is_dir():
            raise BadSampleError(sample_id, f"missing frame folder {folder}", _FIX)
        numbered = {}
        for path in folder.glob("*.jpg"):
            if not path.stem.isdigit():
                raise BadSampleError(sample_id, f"unexpected frame file {path} (names are "
                                     "absolute frame numbers, <frame_no:05d>.jpg)", _FIX)
            numbered[int(path.stem)] = path
        expected = range(start, end + 1)
        missing = [i for i in expected if i not in numbered]
        if missing:
            raise BadSampleError(
                sample_id, f"missing frame file {folder / f'{missing[0]:05d}.jpg'} ({len(missing)} "
                f"of frames {start}..{end} missing)", _FIX)
        extra = sorted(set(numbered) - set(expected))
        if extra:
            raise BadSampleError(
                sample_id, f"{folder} has frames outside {start}..{end} of the coarse annotation "
                f"(e.g. {numbered[extra[0]].name}); TSA would misalign frames and labels", _FIX)
        out = []
        for i in expected:
            data = numbered[i].read_bytes()
            image = decode_jpeg(data, str(numbered[i]))  # validates every frame
            if self.short_side is None or min(image.shape[:2]) == self.short_side:
                out.append(data)
            else:
                out.append(encode_jpeg(resize_short_side(image, self.short_side)))
        return out


def _number(value: Any, what: str, sample_id: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise BadSampleError(sample_id, f"{path}: {what} is {value!r}, not a number", _FIX)
    value = float(value)
    if not math.isfinite(value):
        raise BadSampleError(sample_id, f"{path}: {what} is {value}", _FIX)
    return value


def _integer(value: Any, what: str, sample_id: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BadSampleError(sample_id, f"{path}: {what} is {value!r}, not an integer", _FIX)
    return int(value)


def _int_array(value: Any, what: str, sample_id: str, path: Path, min_len: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1 or len(array) < min_len or not np.issubdtype(array.dtype, np.integer):
        raise BadSampleError(sample_id, f"{path}: {what} should be a 1-D integer array of "
                             f"length >= {min_len}, got {value!r:.80}", _FIX)
    return array


def _parse_coarse(entry: Any, sample_id: str, path: Path) -> dict[str, Any]:
    need = ("action_type", "start_frame", "end_frame", "dive_score", "difficulty", "judge_scores")
    if not isinstance(entry, dict) or any(k not in entry for k in need):
        raise BadSampleError(sample_id, f"{path}: entry {entry!r:.120} lacks some of {need}", _FIX)
    out = {
        "action_type": entry["action_type"],
        "start_frame": _integer(entry["start_frame"], "start_frame", sample_id, path),
        "end_frame": _integer(entry["end_frame"], "end_frame", sample_id, path),
        "dive_score": _number(entry["dive_score"], "dive_score", sample_id, path),
        "difficulty": _number(entry["difficulty"], "difficulty", sample_id, path),
    }
    if not isinstance(out["action_type"], str) or not out["action_type"]:
        raise BadSampleError(sample_id, f"{path}: action_type {out['action_type']!r}", _FIX)
    if out["end_frame"] < out["start_frame"] or out["start_frame"] < 0:
        raise BadSampleError(sample_id, f"{path}: frames {out['start_frame']}..{out['end_frame']}",
                             _FIX)
    judges = entry["judge_scores"]
    if not isinstance(judges, (list, tuple, np.ndarray)) or len(judges) not in (3, 5, 7):
        raise BadSampleError(sample_id, f"{path}: judge_scores {judges!r} should hold 3, 5 or 7 "
                             "scores", _FIX)
    out["judge_scores"] = [_number(j, "a judge score", sample_id, path) for j in judges]
    return out


def _parse_fine(entry: Any, sample_id: str, path: Path) -> dict[str, Any]:
    """Either format: TSA's list ``[action_type, dive_score, difficulty, transits, labels]``
    (``fine-grained_annotation_aqa.pkl``) or the dict of ``FineDiving_fine-grained_annotation.pkl``."""
    if isinstance(entry, (list, tuple)) and len(entry) == 5:
        action_type, dive_score, difficulty, transits, labels = entry
    elif isinstance(entry, dict) and all(
        k in entry for k in ("action_type", "dive_score", "difficulty", "steps_transit_frames",
                             "frames_labels")):
        action_type, dive_score, difficulty = (entry["action_type"], entry["dive_score"],
                                               entry["difficulty"])
        transits, labels = entry["steps_transit_frames"], entry["frames_labels"]
    else:
        raise BadSampleError(sample_id, f"{path}: malformed entry {entry!r:.120}", _FIX)
    return {
        "action_type": action_type,
        "dive_score": _number(dive_score, "dive_score", sample_id, path),
        "difficulty": _number(difficulty, "difficulty", sample_id, path),
        "step_transitions": _int_array(transits, "steps_transit_frames", sample_id, path, 1),
        "frame_labels": _int_array(labels, "frames_labels", sample_id, path, 1),
    }
