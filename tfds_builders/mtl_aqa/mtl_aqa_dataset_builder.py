"""mtl_aqa: MTL-AQA diving (Parmar & Morris, CVPR 2019), read as its owners distribute it.

Input (``manual_dir``, see ``MANUAL_DOWNLOAD_INSTRUCTIONS``): the ``Ready_2_Use`` annotation
pickles of github.com/ParitoshParmar/MTL-AQA and the frames of the whole YouTube videos (15 are
annotated: 01-07, 09, 10, 13, 14, 17, 18, 22, 26), extracted by the release's
``frame_extractor.sh`` into ``whole_videos_frames/<vid:02d>/%06d.jpg``.

**Which frames are stored.** Every official loader (MTL-AQA's C3D-AVG/MSCADC dataloaders, CoRe's
``MTLPair``) lists ``sorted(glob('<vid:02d>/*.jpg'))`` and reads the ``103`` entries
``[end_frame - 103, end_frame)`` of that list, i.e. the files numbered ``end_frame - 102 ..
end_frame`` (1-based), with ``end_frame`` shifted by a random integer in ``[-3, 3]`` during
training; the annotated ``start_frame`` is ignored. This builder stores the files
``end_frame - 105 .. end_frame + 3`` (109 frames; fewer only where the video begins or ends
inside that range) and

- ``end_frame``: the 1-based position of the annotated end frame *within the stored frames*, so
  ``aqa_jax.data.sampling.window_ending_at(end_frame, 103, shift)`` gives the 0-based indices
  of the official window for every shift in ``[-3, 3]``;
- ``first_frame_orig``: the original 1-based frame number of stored frame 0 (stored frame ``i``
  is original frame ``first_frame_orig + i``), plus ``start_frame_orig`` / ``end_frame_orig``.

A window whose unshifted 103 frames do not exist is a ``BadSampleError`` (the official code would
crash, or silently wrap around with a negative index). Frame files must be numbered
consecutively (from 1, or from 0); a gap (a missing file) would shift every later frame of the
sorted list, so it is reported naming the missing file instead.

Deviations / choices (principle 1):

- MUSDL reads prepared per-sample folders ``frames/<vid:02d>_<idx:02d>/`` with a forward shift of
  0..6; those folders are not distributed and how they were cut is not published, so this
  builder reads the owners' whole-video frames and stores the MTL-AQA/CoRe window above.
- ``judge_scores`` come from MUSDL's ``augmented_final_annotations_dict.pkl`` when it is in the
  manual dir (``has_judge_scores`` True), else they are empty and ``has_judge_scores`` is False.
  That file has one typo: sample ``04_49`` lists judge 4 as ``45.0``; CoRe's copy of the same
  dict (``final_annotations_dict_with_dive_number.pkl``) has ``4.5``, the value consistent with
  the 0..10 judging scale, so the builder stores 4.5 (listed in ``JUDGE_SCORE_ERRATA`` and
  logged). Any other judge score outside 0..10 is a bad sample.
- ``caption``: token ids under ``MTL-AQA_split_0_data/vocab.json``'s ``word_to_ix`` (``<eos>`` = 0,
  ``<sos>`` = 1) of the whole tokenised commentary from ``final_captions_dict.pkl`` (a list of
  words, ``<sos>`` ... ``<eos>``). The official loader truncates to ``max_cap_len = 100`` and
  forces the last kept token to ``<eos>``; that is left to the pipeline. ``caption_text`` is the
  tokens joined by spaces. The smaller training sets ship their own vocab.json; the ids here
  always use the main split's vocabulary.
- Sub-class codes are stored as released (ClassLabel by number). Derived meanings (reference
  §5.1, not an official legend): position 0 free / 1 pike / 2 tuck; armstand 1 = group 6;
  rotation_type 0 back / 1 forward / 2 inward / 3 reverse; ss_no and tw_no count *half*
  somersaults / twists.

Splits: ``train`` (1059) and ``test`` (353) from ``train_split_0.pkl`` / ``test_split_0.pkl``;
``train_450`` / ``train_280`` / ``train_140`` from ``smaller_training_sets/size_N/
train_split_0.pkl`` when present (443 / 279 / 143 keys in the release). Caution: the released
smaller training sets are NOT subsets of ``train_split_0``: 115 / 80 / 36 of their keys are in
``test_split_0`` (the release says their test list is the main one), so evaluating a model
trained on them on ``test`` leaks test samples. The builder logs the overlap; it does not
change the lists. The main ``train``/``test`` lists are disjoint as released; a key in both is
refused. Configs: ``default`` (short side 256) and ``raw`` (original frames, the JPEG
files' own bytes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from aqa_jax.data.bad_input import check_split_overlap
from aqa_jax.data.frames import decode_jpeg, encode_jpeg, resize_short_side
from aqa_jax.data.tfds_base import AQABuilderConfig, AQAVideoBuilder
from aqa_jax.weights.safe_pickle import safe_load

log = logging.getLogger(__name__)

WINDOW = 103  # frames the official loaders read, ending at end_frame
MAX_SHIFT = 3  # |temporal shift| of the official training loaders
CLASS_FIELDS: dict[str, int] = {
    "position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8,
}
BASE_FIELDS = ("start_frame", "end_frame", "difficulty", "final_score", *CLASS_FIELDS)
FRAME_DIRS = ("whole_videos_frames", "new_total_frames")  # MTL-AQA's name, CoRe's name
NUM_JUDGES = 7
# (video_id, sample_idx) -> (judge index, value in the released augmented dict, correct value)
JUDGE_SCORE_ERRATA: dict[tuple[int, int], tuple[int, float, float]] = {(4, 49): (3, 45.0, 4.5)}
SMALLER_TRAINING_SETS = (450, 280, 140)

Key = tuple[int, int]

CITATION = """@inproceedings{parmar2019and,
  title={What and How Well You Performed? A Multitask Learning Approach to Action Quality Assessment},
  author={Parmar, Paritosh and Tran Morris, Brendan},
  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition},
  pages={304--313},
  year={2019}
}"""

FRAMES_INSTRUCTIONS = """\
Frames: download the whole videos listed in MTL-AQA_dataset_release/Video_List.xlsx (YouTube),
name each by its Sr. No. (01.mp4, 02.mp4, ...) and extract every frame as the release's
frame_extractor.sh does:
    mkdir -p whole_videos_frames/01 && ffmpeg -i whole_videos/01.mp4 whole_videos_frames/01/%06d.jpg
(CoRe's `new_total_frames/<vid>/%08d.jpg` folder is accepted too). Frames must be numbered
consecutively from 1 (or 0): the official loaders index the sorted file list."""


# --- annotation files -------------------------------------------------------------------------
def sample_id(key: Key) -> str:
    """The MTL-AQA id text of a key, as MUSDL names its folders: ``(1, 5)`` -> ``"01_05"``."""
    return f"{key[0]:02d}_{key[1]:02d}"


def normalize_key(key: Any, source: str) -> Key:
    """A ``(video_id, sample_idx)`` pair of Python ints (the pickles mix int, np.int64, uint8)."""
    if (
        isinstance(key, (tuple, list)) and len(key) == 2
        and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in key)
    ):
        return int(key[0]), int(key[1])
    raise ValueError(f"{source}: key {key!r} is not a (video_id, sample_idx) pair of ints")


def load_key_list(path: Path) -> list[Key]:
    """A split pickle: a list of (video_id, sample_idx) keys, without duplicates."""
    data = safe_load(path)
    if not isinstance(data, (list, tuple)):
        raise ValueError(f"{path}: expected a list of (video_id, sample_idx) keys, got {type(data).__name__}")
    keys = [normalize_key(k, str(path)) for k in data]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{path}: duplicate keys {dup[:5]}")
    return keys


def load_key_dict(path: Path) -> dict[Key, Any]:
    """An annotation/caption pickle: a dict keyed by (video_id, sample_idx)."""
    data = safe_load(path)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a dict keyed by (video_id, sample_idx), got {type(data).__name__}")
    return {normalize_key(k, str(path)): v for k, v in data.items()}


def _as_int(value: Any, field: str, source: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise ValueError(f"{source}: field {field!r} = {value!r} is not an integer")


def _as_float(value: Any, field: str, source: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: field {field!r} = {value!r} is not a number") from None
    if not math.isfinite(out):
        raise ValueError(f"{source}: field {field!r} = {value!r} is not finite")
    return out


def parse_entry(entry: Any, source: str) -> dict[str, Any]:
    """The checked labels of one ``final_annotations_dict`` entry (``source`` names it)."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"{source}: the annotation is a {type(entry).__name__}, not a dict")
    missing = [f for f in BASE_FIELDS if f not in entry]
    if missing:
        raise ValueError(f"{source}: the annotation lacks {missing}")
    out: dict[str, Any] = {
        "start_frame": _as_int(entry["start_frame"], "start_frame", source),
        "end_frame": _as_int(entry["end_frame"], "end_frame", source),
        "difficulty": _as_float(entry["difficulty"], "difficulty", source),
        "final_score": _as_float(entry["final_score"], "final_score", source),
    }
    if out["end_frame"] < 1 or out["start_frame"] > out["end_frame"]:
        raise ValueError(
            f"{source}: start_frame {out['start_frame']} / end_frame {out['end_frame']} are not a "
            "valid 1-based frame range"
        )
    if out["difficulty"] <= 0 or out["final_score"] < 0:
        raise ValueError(
            f"{source}: difficulty {out['difficulty']} must be > 0 and final_score "
            f"{out['final_score']} >= 0"
        )
    for field, num in CLASS_FIELDS.items():
        value = _as_int(entry[field], field, source)
        if not 0 <= value < num:
            raise ValueError(f"{source}: {field} = {value} is outside 0..{num - 1}")
        out[field] = value
    return out


def judge_scores_of(key: Key, entry: Any, base: Mapping[str, Any], source: str) -> np.ndarray:
    """The 7 judge scores of an augmented-dict entry, checked against the main entry ``base``."""
    if not isinstance(entry, Mapping) or "judge_scores" not in entry:
        raise ValueError(f"{source}: the entry has no 'judge_scores'")
    for field in BASE_FIELDS:  # the augmented dict must describe the same dive
        if field in entry and entry[field] != base[field]:
            raise ValueError(
                f"{source}: {field} = {entry[field]!r} disagrees with final_annotations_dict.pkl "
                f"({base[field]!r})"
            )
    try:
        scores = np.asarray(entry["judge_scores"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: judge_scores {entry['judge_scores']!r} are not numbers") from None
    if scores.shape != (NUM_JUDGES,):
        raise ValueError(f"{source}: judge_scores has shape {scores.shape}, expected ({NUM_JUDGES},)")
    if key in JUDGE_SCORE_ERRATA:
        judge, wrong, right = JUDGE_SCORE_ERRATA[key]
        if scores[judge] == wrong:
            log.warning("%s: judge %d score %s corrected to %s (known erratum, see module docstring)",
                        source, judge, wrong, right)
            scores = scores.copy()
            scores[judge] = right
    if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 10:
        raise ValueError(f"{source}: judge_scores {scores.tolist()} are outside the 0..10 scale")
    return scores.astype(np.float32)


def caption_ids(tokens: Any, word_to_ix: Mapping[str, int], source: str) -> tuple[np.ndarray, str]:
    """Token ids (int32) and the space-joined text of one tokenised caption."""
    if not isinstance(tokens, (list, tuple)) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{source}: the caption is not a non-empty list of word tokens")
    unknown = sorted({t for t in tokens if t not in word_to_ix})
    if unknown:
        raise ValueError(f"{source}: caption words {unknown[:5]} are not in vocab.json's word_to_ix")
    return np.asarray([word_to_ix[t] for t in tokens], np.int32), " ".join(tokens)


def load_vocab(path: Path) -> dict[str, int]:
    info = json.loads(path.read_text())
    if not isinstance(info, dict) or not isinstance(info.get("word_to_ix"), dict):
        raise ValueError(f"{path}: expected a JSON object with a 'word_to_ix' dict")
    return {str(w): int(i) for w, i in info["word_to_ix"].items()}


# --- frames -----------------------------------------------------------------------------------
_NUMBER = re.compile(r"(\d+)(?=\.jpg$)")


class VideoFrames:
    """The sorted ``*.jpg`` files of each whole-video frame folder, listed once per video."""

    def __init__(self, root: Path):
        self.root = root
        self._names: dict[int, list[str]] = {}

    def folder(self, video_id: int) -> Path:
        return self.root / f"{video_id:02d}"

    def names(self, video_id: int) -> list[str]:
        if video_id not in self._names:
            folder = self.folder(video_id)
            if not folder.is_dir():
                raise FileNotFoundError(f"missing frame folder {folder} (video {video_id:02d})")
            names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
            if not names:
                raise FileNotFoundError(f"frame folder {folder} holds no .jpg files")
            self._names[video_id] = names
        return self._names[video_id]

    def window(self, video_id: int, end_frame: int) -> tuple[int, list[Path]]:
        """(first original frame, files) of ``end_frame - 105 .. end_frame + 3``, clipped."""
        folder, names = self.folder(video_id), self.names(video_id)
        num = len(names)
        if end_frame - WINDOW + 1 < 1 or end_frame > num:
            raise ValueError(
                f"the {WINDOW}-frame window ending at frame {end_frame} needs frames "
                f"{end_frame - WINDOW + 1}..{end_frame}, but {folder} holds {num} frames"
            )
        first = max(1, end_frame - WINDOW + 1 - MAX_SHIFT)
        last = min(num, end_frame + MAX_SHIFT)
        base = _frame_number(folder, names[0])
        if base not in (0, 1):
            raise FileNotFoundError(
                f"{folder}: the first frame file is {names[0]}; frames must be numbered from "
                "000001.jpg (ffmpeg's default) or 000000.jpg"
            )
        for pos in range(first, last + 1):  # pos: 1-based position in the sorted list
            name, expected = names[pos - 1], pos - 1 + base
            if _frame_number(folder, name) != expected:
                missing = _NUMBER.sub(lambda m: f"{expected:0{len(m.group(1))}d}", name)
                raise FileNotFoundError(
                    f"frame file {folder / missing} is missing (found {name} at sorted position "
                    f"{pos}); the official loaders index the sorted file list, so every frame up "
                    "to the window must be present"
                )
        return first, [folder / names[p - 1] for p in range(first, last + 1)]


def _frame_number(folder: Path, name: str) -> int:
    match = _NUMBER.search(name)
    if match is None:
        raise FileNotFoundError(f"{folder / name}: frame files must be named <number>.jpg")
    return int(match.group(1))


def encode_frame_file(path: Path, short_side: int | None) -> bytes:
    """JPEG bytes of one frame file: its own bytes (checked) or resized to ``short_side``."""
    data = path.read_bytes()
    image = decode_jpeg(data, str(path))
    if short_side is None:
        return data
    return encode_jpeg(resize_short_side(image, short_side))


# --- features and examples shared with unlv_dive -------------------------------------------------
def window_features() -> dict[str, Any]:
    """Labels of a whole-video window sample (MTL-AQA and UNLV-Dive)."""
    scalar = tfds.features.Scalar
    return {
        "video_id": scalar(dtype=np.int32),
        "sample_idx": scalar(dtype=np.int32),
        "difficulty": scalar(dtype=np.float32),
        "end_frame": scalar(dtype=np.int32),
        "first_frame_orig": scalar(dtype=np.int32),
        "start_frame_orig": scalar(dtype=np.int32),
        "end_frame_orig": scalar(dtype=np.int32),
        **{field: tfds.features.ClassLabel(num_classes=n) for field, n in CLASS_FIELDS.items()},
    }


def window_example(
    key: Key, labels: Mapping[str, Any], frames: VideoFrames, short_side: int | None
) -> dict[str, Any]:
    """The core + :func:`window_features` fields of one sample (``labels`` from parse_entry)."""
    first, files = frames.window(key[0], labels["end_frame"])
    return {
        "id": sample_id(key),
        "frames": [encode_frame_file(f, short_side) for f in files],
        "num_frames": len(files),
        "score": np.float32(labels["final_score"]),
        "video_id": key[0],
        "sample_idx": key[1],
        "difficulty": np.float32(labels["difficulty"]),
        "end_frame": labels["end_frame"] - first + 1,
        "first_frame_orig": first,
        "start_frame_orig": labels["start_frame"],
        "end_frame_orig": labels["end_frame"],
        **{field: labels[field] for field in CLASS_FIELDS},
    }


def first_existing(candidates: Iterable[Path], required: str) -> Path | None:
    """The first candidate directory holding ``required``."""
    for path in candidates:
        if (path / required).is_file():
            return path
    return None


def frames_root(root: Path) -> Path | None:
    for name in FRAME_DIRS:
        if (root / name).is_dir():
            return root / name
    return None


# --- the builder --------------------------------------------------------------------------------
@dataclass
class _Inputs:
    ann_dir: Path
    annotations: dict[Key, Any]
    augmented: dict[Key, Any] | None
    augmented_path: Path | None
    captions: dict[Key, Any]
    word_to_ix: dict[str, int]
    frames: VideoFrames


class Builder(AQAVideoBuilder):
    """MTL-AQA: 1412 Olympic dives, score, difficulty, 7 judges, 5 sub-classes, commentary."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        AQABuilderConfig(name="default", short_side=256,
                         description="frames resized to short side 256"),
        AQABuilderConfig(name="raw", short_side=None,
                         description="original frames (the JPEG files' own bytes)"),
    ]
    HOMEPAGE = "https://github.com/ParitoshParmar/MTL-AQA"
    CITATION = CITATION
    ANNOTATION_DIR = "MTL-AQA_split_0_data"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MTL-AQA ({HOMEPAGE}). Clone the repository and copy
MTL-AQA_dataset_release/Ready_2_Use/MTL-AQA_split_0_data/ (and, for the splits train_450 /
train_280 / train_140, Ready_2_Use/smaller_training_sets/) into the manual dir. For the 7
judge scores also put MUSDL's augmented_final_annotations_dict.pkl
(github.com/nzl-thu/MUSDL, MTL-AQA/data/info/) next to final_annotations_dict.pkl.
{FRAMES_INSTRUCTIONS}
Expected layout:
  <manual_dir>/
    MTL-AQA_split_0_data/            (or these files directly in <manual_dir>)
      final_annotations_dict.pkl
      final_captions_dict.pkl
      train_split_0.pkl
      test_split_0.pkl
      vocab.json
      augmented_final_annotations_dict.pkl        (optional: judge_scores)
    smaller_training_sets/size_{{140,280,450}}/train_split_0.pkl   (optional)
    whole_videos_frames/01/000001.jpg 000002.jpg ...   (one folder per whole video:
                                                        01 02 03 04 05 06 07 09 10 13 14 17 18 22 26)
"""

    def extra_features(self) -> dict[str, Any]:
        return {
            **window_features(),
            "judge_scores": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            "has_judge_scores": tfds.features.Scalar(dtype=np.bool_),
            "caption": tfds.features.Sequence(tfds.features.Scalar(dtype=np.int32)),
            "caption_text": tfds.features.Text(),
        }

    # --- inputs ---------------------------------------------------------------------------------
    def _missing(self, root: Path, what: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self.name}: {root} lacks {what}.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

    def _inputs(self, root: Path) -> _Inputs:
        ann_dir = first_existing(
            [root / self.ANNOTATION_DIR, root / "Ready_2_Use" / self.ANNOTATION_DIR, root],
            "final_annotations_dict.pkl",
        )
        if ann_dir is None:
            raise self._missing(root, f"{self.ANNOTATION_DIR}/final_annotations_dict.pkl")
        for name in ("final_captions_dict.pkl", "train_split_0.pkl", "test_split_0.pkl", "vocab.json"):
            if not (ann_dir / name).is_file():
                raise self._missing(root, str(ann_dir.relative_to(root) / name))
        frames = frames_root(root)
        if frames is None:
            raise self._missing(root, "whole_videos_frames/")
        augmented_path = first_existing([ann_dir, root], "augmented_final_annotations_dict.pkl")
        if augmented_path is not None:
            augmented_path = augmented_path / "augmented_final_annotations_dict.pkl"
        return _Inputs(
            ann_dir=ann_dir,
            annotations=load_key_dict(ann_dir / "final_annotations_dict.pkl"),
            augmented=load_key_dict(augmented_path) if augmented_path else None,
            augmented_path=augmented_path,
            captions=load_key_dict(ann_dir / "final_captions_dict.pkl"),
            word_to_ix=load_vocab(ann_dir / "vocab.json"),
            frames=VideoFrames(frames),
        )

    def _split_files(self, root: Path, ann_dir: Path) -> dict[str, Path]:
        splits = {"train": ann_dir / "train_split_0.pkl", "test": ann_dir / "test_split_0.pkl"}
        smaller_dirs = [ann_dir.parent / "smaller_training_sets", root / "smaller_training_sets"]
        for size in SMALLER_TRAINING_SETS:
            for base in smaller_dirs:
                path = base / f"size_{size}" / "train_split_0.pkl"
                if path.is_file():
                    splits[f"train_{size}"] = path
                    break
        return splits

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = self.manual_path(dl_manager)
        inputs = self._inputs(root)
        files = self._split_files(root, inputs.ann_dir)
        keys = {split: load_key_list(path) for split, path in files.items()}
        # the main split is disjoint and must stay so; the reduced training sets overlap test
        # as released (logged below, lists unchanged)
        check_split_overlap(self.name, {s: (files[s], keys[s]) for s in ("train", "test")})
        test = set(keys["test"])
        for split in keys:
            if split.startswith("train_"):
                leak = [k for k in keys[split] if k in test]
                if leak:
                    log.warning(
                        "%s: %d of the %d keys of %s are also in the test split (as released)",
                        self.name, len(leak), len(keys[split]), files[split],
                    )
        return {
            split: self._generate_examples(split, keys[split], files[split], inputs)
            for split in keys
        }

    # --- examples -------------------------------------------------------------------------------
    def _generate_examples(
        self, split: str, keys: Sequence[Key], split_file: Path, inputs: _Inputs
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        report = self.new_report(split)
        for key in keys:
            sid = sample_id(key)
            fix = (
                f"check video {key[0]:02d}'s frames under {inputs.frames.root} (all frames, as "
                f"frame_extractor.sh writes them) and key {key} in {inputs.ann_dir}, or rebuild "
                "with `aqa-jax build-data ... --skip-bad-samples` to leave this sample out"
            )
            example = report.run(sid, lambda: self._example(key, split_file, inputs), fix=fix)
            if example is not None:
                yield sid, example
        report.finish()

    def _example(self, key: Key, split_file: Path, inputs: _Inputs) -> dict[str, Any]:
        ann_path = inputs.ann_dir / "final_annotations_dict.pkl"
        if key not in inputs.annotations:
            raise ValueError(f"{split_file} lists {key}, which {ann_path} does not annotate")
        labels = parse_entry(inputs.annotations[key], f"{ann_path} [{key}]")
        if inputs.augmented is not None:
            source = f"{inputs.augmented_path} [{key}]"
            if key not in inputs.augmented:
                raise ValueError(f"{source}: no entry for this key")
            judges = judge_scores_of(key, inputs.augmented[key], inputs.annotations[key], source)
        else:
            judges = np.zeros((0,), np.float32)
        cap_path = inputs.ann_dir / "final_captions_dict.pkl"
        if key not in inputs.captions:
            raise ValueError(f"{cap_path}: no caption for {key}")
        caption, text = caption_ids(inputs.captions[key], inputs.word_to_ix, f"{cap_path} [{key}]")
        return {
            **window_example(key, labels, inputs.frames, self.short_side),
            "judge_scores": judges,
            "has_judge_scores": inputs.augmented is not None,
            "caption": caption,
            "caption_text": text,
        }
