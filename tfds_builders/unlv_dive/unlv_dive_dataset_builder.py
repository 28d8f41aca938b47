"""unlv_dive: UNLV-Dive (Parmar & Morris, CVPRW 2017) as re-released inside MTL-AQA.

Input: the folder ``MTL-AQA_dataset_release/Ready_2_Use/UNLV_Dive_split_4/`` of
github.com/ParitoshParmar/MTL-AQA and the MTL-AQA whole-video frames (``whole_videos_frames/01``,
``02``, ``03``: the 10 m platform dives of the London 2012 Olympics). What that folder holds (read
from the repository at commit bf7dcb2):

- ``final_annotations_dict.pkl``: 372 entries keyed by MTL-AQA's ``(video_id, sample_idx)``
  (videos 1, 2, 3), with the same fields *and values* as MTL-AQA's own dict (start/end frame,
  difficulty, final_score, the five sub-class codes); no judge scores. The file is
  byte-identical to ``smaller_training_sets/size_280/final_annotations_dict.pkl``.
- ``train_split_0.pkl`` / ``test_split_0.pkl``: 279 / 93 keys, a partition of the 372. These
  are the ``train``/``test`` splits of the ``default`` and ``raw`` configs.
- ``train_split_370_4.pkl`` / ``test_split_370_4.pkl`` (also as ``*_tupled_list.mat``):
  300 / 70 keys (uint8 pairs), which the maintainer calls "the test split of UNLV Dive dataset"
  (MTL-AQA issue #1), i.e. UNLV-Dive's split 4. They are the ``split_370_4`` config. The
  released train list contains ``(1, 64)``, which no released annotation dict (neither this
  one nor MTL-AQA's) annotates, so that config raises a BadSampleError for ``01_64`` unless it
  is built with ``--skip-bad-samples`` (then 299 / 70, with ``01_64`` in
  ``bad_samples_train.json``).
- ``final_captions_dict.pkl`` / ``vocab.json``: commentary, not read here (use mtl_aqa).

Frames, windows and fields are exactly those of ``mtl_aqa`` (see its docstring): the official
103-frame window ending at ``end_frame`` plus 3 frames of shift margin each side, with
``end_frame`` the 1-based position of the annotated end frame within the stored frames (so
``window_ending_at(end_frame, 103, shift)`` indexes it), ``first_frame_orig`` /
``start_frame_orig`` / ``end_frame_orig`` in original frame numbers, ``score`` = final_score,
``difficulty`` and the five sub-class codes as ClassLabels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator, Sequence

import tensorflow_datasets as tfds

from aqa_jax.data.bad_input import check_split_overlap
from aqa_jax.data.tfds_base import AQABuilderConfig, AQAVideoBuilder
from tfds_builders.mtl_aqa.mtl_aqa_dataset_builder import (
    CITATION as MTL_AQA_CITATION,
    FRAMES_INSTRUCTIONS,
    Key,
    VideoFrames,
    first_existing,
    frames_root,
    load_key_dict,
    load_key_list,
    parse_entry,
    sample_id,
    window_example,
    window_features,
)

FOLDER = "UNLV_Dive_split_4"

CITATION = """@inproceedings{parmar2017learning,
  title={Learning to score olympic events},
  author={Parmar, Paritosh and Tran Morris, Brendan},
  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition Workshops},
  pages={20--28},
  year={2017}
}
""" + MTL_AQA_CITATION

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
UNLV-Dive as re-released with MTL-AQA (https://github.com/ParitoshParmar/MTL-AQA). Clone the
repository and copy MTL-AQA_dataset_release/Ready_2_Use/{FOLDER}/ into the manual dir.
The samples are keyed by MTL-AQA (video_id, sample_idx) and read from the MTL-AQA whole-video
frames of videos 01, 02 and 03.
{FRAMES_INSTRUCTIONS}
Expected layout:
  <manual_dir>/
    {FOLDER}/                     (or these files directly in <manual_dir>)
      final_annotations_dict.pkl
      train_split_0.pkl  test_split_0.pkl              (configs default, raw)
      train_split_370_4.pkl  test_split_370_4.pkl      (config split_370_4)
    whole_videos_frames/01/000001.jpg 000002.jpg ...   (also 02/ and 03/)
"""


@dataclasses.dataclass
class UnlvDiveConfig(AQABuilderConfig):
    """``split_files``: the suffix of the split pickles, ``train_split_<suffix>.pkl``."""

    split_files: str = "0"


class Builder(AQAVideoBuilder):
    """UNLV-Dive: 372 Olympic 10 m platform dives (MTL-AQA videos 1-3), score and difficulty."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        UnlvDiveConfig(name="default", short_side=256, split_files="0",
                       description="train/test_split_0.pkl (279/93), short side 256"),
        UnlvDiveConfig(name="raw", short_side=None, split_files="0",
                       description="train/test_split_0.pkl (279/93), original frames"),
        UnlvDiveConfig(name="split_370_4", short_side=256, split_files="370_4",
                       description="UNLV-Dive split 4, train/test_split_370_4.pkl (300/70); the "
                                   "train list has the unannotated key (1, 64): build with "
                                   "--skip-bad-samples"),
    ]
    HOMEPAGE = "https://github.com/ParitoshParmar/MTL-AQA"
    CITATION = CITATION
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def extra_features(self) -> dict[str, Any]:
        return window_features()

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = self.manual_path(dl_manager)
        suffix = self.builder_config.split_files
        names = {split: f"{split}_split_{suffix}.pkl" for split in ("train", "test")}
        ann_dir = first_existing(
            [root / FOLDER, root / "Ready_2_Use" / FOLDER, root], "final_annotations_dict.pkl")
        if ann_dir is None:
            raise self._missing(root, f"{FOLDER}/final_annotations_dict.pkl")
        for name in names.values():
            if not (ann_dir / name).is_file():
                raise self._missing(root, str(ann_dir.relative_to(root) / name))
        frames = frames_root(root)
        if frames is None:
            raise self._missing(root, "whole_videos_frames/")
        ann_path = ann_dir / "final_annotations_dict.pkl"
        annotations = load_key_dict(ann_path)
        video_frames = VideoFrames(frames)
        keys = {split: load_key_list(ann_dir / name) for split, name in names.items()}
        # the released train/test lists are disjoint: a key in both would leak test samples
        check_split_overlap(self.name, {s: (ann_dir / names[s], keys[s]) for s in names})
        return {
            split: self._generate_examples(
                split, keys[split], ann_dir / name, ann_path, annotations, video_frames)
            for split, name in names.items()
        }

    def _missing(self, root: Path, what: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self.name}: {root} lacks {what}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")

    def _generate_examples(
        self, split: str, keys: Sequence[Key], split_file: Path, ann_path: Path,
        annotations: dict[Key, Any], frames: VideoFrames,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        report = self.new_report(split)
        for key in keys:
            sid = sample_id(key)

            def make(key: Key = key) -> dict[str, Any]:
                if key not in annotations:
                    raise ValueError(f"{split_file} lists {key}, which {ann_path} does not annotate")
                labels = parse_entry(annotations[key], f"{ann_path} [{key}]")
                return window_example(key, labels, frames, self.short_side)

            fix = (
                f"check video {key[0]:02d}'s frames under {frames.root} (all frames, as MTL-AQA's "
                f"frame_extractor.sh writes them) and key {key} in {ann_path}, or rebuild with "
                "`aqa-jax build-data ... --skip-bad-samples` to leave this sample out"
            )
            example = report.run(sid, make, fix=fix)
            if example is not None:
                yield sid, example
        report.finish()
