"""jigsaws: JIGSAWS surgical skill videos with GRS scores, in MUSDL's 4-fold protocol.

One config per task (``suturing``, ``needle_passing``, ``knot_tying``); one example per trial
(``Suturing_B001`` …), left camera (``capture1``) only, as MUSDL uses. Labels come from MUSDL's
``label.pkl`` (trial → the 6 GRS sub-scores, each 1–5) and the folds from its ``splits.pkl``
(task → 4 lists of trials; sizes S 9/10/10/10, NP 7/7/7/7, KT 9/9/9/9). These random folds
(surgeons recur across folds, so not LOSO/LOUO) are the de-facto AQA protocol on JIGSAWS.

Splits: ``fold0`` … ``fold3`` (the trials of each fold), ``train_fold{k}`` (the three other
folds, in fold order) and ``test_fold{k}`` (= fold k), and ``all_trials`` (every trial once).
``all`` is a reserved TFDS split name meaning *every stored split concatenated*: here that
repeats each trial 6 times, so use ``all_trials`` (or split arithmetic such as
``"fold1+fold2+fold3"``, which ``tfds.data_source`` also accepts). A trial is stored in 6
splits; its frames are decoded and encoded once per build (a cache in the dataset's temporary
build directory, removed after its last use).

Frames: MUSDL (``JIGSAWS/dataset.py``) reads pre-extracted frame folders
``data/frames/<trial>_capture1/`` (file names sorted as strings, 160 sampled with
``np.linspace(0, n - 1, 160).astype(int)``, center crop 224, no resize); those frames were
prepared by its authors and are not distributed. This builder reads, per trial, the first
that exists of

1. a frame folder ``<trial>_capture1/`` in ``frames/``, ``data/frames/`` or ``<Task>/frames/``
   of the manual_dir (all ``.jpg``/``.jpeg``/``.png`` files, in MUSDL's sorted-name order);
2. the distributed video ``<Task>/video/<trial>_capture1.avi`` (every frame, native 30 fps).

Features (besides ``id`` = trial name, ``frames``, ``num_frames``): ``score`` (sum of the 6
GRS sub-scores, 6–30, what USDL regresses), ``grs`` (the 6 sub-scores in label.pkl order,
float32, what MUSDL's 6 "judges" predict), ``task``, ``surgeon`` (letter B–I), ``trial``
(1–5) and ``fold`` (0–3, the MUSDL fold holding the trial).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow_datasets as tfds

from aqa_jax.data.bad_input import BadSampleError, check_frame_count
from aqa_jax.data.frames import (FrameError, decode_jpeg, encode_jpeg, encode_video_frames,
                                 iter_video, resize_short_side)
from aqa_jax.data.tfds_base import AQABuilderConfig, AQAVideoBuilder
from aqa_jax.weights.safe_pickle import safe_load

NUM_FOLDS = 4
NUM_GRS = 6
CAMERA = "capture1"  # MUSDL: "only loads left view"
INFO_DIRS = (".", "info", "data/info")  # MUSDL keeps them in JIGSAWS/data/info/
FRAME_DIRS = ("frames", "data/frames")  # plus <Task>/frames
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass
class JigsawsConfig(AQABuilderConfig):
    task: str = "Suturing"  # the JIGSAWS folder / trial-name prefix


class Builder(AQAVideoBuilder):
    """JIGSAWS (Gao et al., 2014): robotic surgery trials scored with the 6-item GRS."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        JigsawsConfig(name="suturing", task="Suturing", description="Suturing, 39 trials"),
        JigsawsConfig(name="needle_passing", task="Needle_Passing",
                      description="Needle Passing, 28 trials"),
        JigsawsConfig(name="knot_tying", task="Knot_Tying", description="Knot Tying, 36 trials"),
    ]
    DEFAULT_CONFIG_NAME = "suturing"
    HOMEPAGE = "https://cirl.lcsr.jhu.edu/research/hmm/datasets/jigsaws_release/"
    CITATION = """@inproceedings{gao2014jigsaws,
  title={JHU-ISI Gesture and Skill Assessment Working Set (JIGSAWS): A Surgical Activity Dataset
         for Human Motion Modeling},
  author={Gao, Yixin and Vedula, S. Swaroop and Reiley, Carol E. and Ahmidi, Narges and
          Varadarajan, Balakrishnan and Lin, Henry C. and Tao, Lingling and Zappella, Luca and
          B{\\'e}jar, Benjam{\\'i}n and Yuh, David D. and others},
  booktitle={MICCAI Workshop: M2CAI}, year={2014}}"""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
JIGSAWS is distributed by JHU CIRL after a short request form:
https://cirl.lcsr.jhu.edu/research/hmm/datasets/jigsaws_release/ (Suturing.zip,
Needle_Passing.zip, Knot_Tying.zip). The 4-fold protocol and GRS labels are MUSDL's
https://github.com/nzl-thu/MUSDL/tree/master/JIGSAWS/data/info (splits.pkl, label.pkl).
Unzip the tasks into the manual_dir and add the two pickles:

  <manual_dir>/
    splits.pkl, label.pkl            (or info/ or data/info/, as in MUSDL's repository)
    Suturing/video/Suturing_B001_capture1.avi, ...
    Needle_Passing/video/Needle_Passing_B001_capture1.avi, ...
    Knot_Tying/video/Knot_Tying_B001_capture1.avi, ...

Instead of a video, a trial may come as a folder of frames (MUSDL's pre-extracted layout):
frames/<trial>_capture1/*.jpg, data/frames/<trial>_capture1/*.jpg or
<Task>/frames/<trial>_capture1/*.jpg (used first when present; files taken in sorted name order).
"""

    def extra_features(self) -> dict[str, Any]:
        return {
            "grs": tfds.features.Tensor(shape=(NUM_GRS,), dtype=np.float32),
            "task": tfds.features.Text(),
            "surgeon": tfds.features.Text(),
            "trial": tfds.features.Scalar(dtype=np.int32),
            "fold": tfds.features.Scalar(dtype=np.int32),
        }

    # --- inputs -----------------------------------------------------------------------------
    def _info_file(self, root: Path, name: str) -> Path:
        for folder in INFO_DIRS:
            if (root / folder / name).is_file():
                return root / folder / name
        raise FileNotFoundError(
            f"{self.name}: {name} not found in {', '.join(str(root / d) for d in INFO_DIRS)}.\n"
            f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )

    def _folds(self, path: Path) -> list[list[str]]:
        splits = safe_load(path)
        task = self.builder_config.task
        if not isinstance(splits, dict) or task not in splits:
            raise ValueError(f"{path}: expected a dict with key {task!r} (MUSDL's splits.pkl), "
                             f"got {type(splits).__name__} with keys "
                             f"{sorted(splits) if isinstance(splits, dict) else '-'}")
        folds = splits[task]
        if (not isinstance(folds, (list, tuple)) or len(folds) != NUM_FOLDS
                or not all(isinstance(f, (list, tuple)) for f in folds)):
            raise ValueError(f"{path}: {task!r} should hold {NUM_FOLDS} lists of trial names")
        empty = [k for k, fold in enumerate(folds) if not fold]
        if empty:
            raise ValueError(f"{path}: {task!r} folds {empty} are empty (no trials to test on)")
        seen: dict[str, int] = {}
        for k, fold in enumerate(folds):
            for trial in fold:
                if not isinstance(trial, str):
                    raise ValueError(f"{path}: {task!r} fold {k} has a non-text trial {trial!r}")
                if trial in seen:
                    raise ValueError(f"{path}: trial {trial} is in folds {seen[trial]} and {k}")
                seen[trial] = k
        return [list(f) for f in folds]

    def _split_generators(self, dl_manager):
        root = self.manual_path(dl_manager)
        folds = self._folds(self._info_file(root, "splits.pkl"))
        label_path = self._info_file(root, "label.pkl")
        labels = safe_load(label_path)
        if not isinstance(labels, dict):
            raise ValueError(f"{label_path}: expected a dict trial -> 6 GRS sub-scores, got "
                             f"{type(labels).__name__}")
        fold_of = {t: k for k, fold in enumerate(folds) for t in fold}
        split_trials = {f"fold{k}": folds[k] for k in range(NUM_FOLDS)}
        for k in range(NUM_FOLDS):
            split_trials[f"train_fold{k}"] = [t for j in range(NUM_FOLDS) if j != k
                                              for t in folds[j]]
            split_trials[f"test_fold{k}"] = list(folds[k])
        split_trials["all_trials"] = [t for fold in folds for t in fold]

        uses: dict[str, int] = {}
        for trials in split_trials.values():
            for t in trials:
                uses[t] = uses.get(t, 0) + 1
        cache = _FrameCache(uses, num_splits=len(split_trials))
        context = dict(root=root, labels=labels, label_path=label_path, fold_of=fold_of,
                       cache=cache)
        return {split: self._generate_examples(split, trials, context)
                for split, trials in split_trials.items()}

    # --- examples ---------------------------------------------------------------------------
    def _generate_examples(self, split, trials, context):
        report = self.new_report(split)
        cache: _FrameCache = context["cache"]
        cache.directory = Path(self.data_dir) / "_frame_cache"
        for trial in trials:
            example = report.run(trial, lambda: self._make_example(trial, context),
                                 fix=self._fix(trial))
            if example is not None:
                yield trial, example
        report.finish()
        cache.split_done()

    def _fix(self, trial: str) -> str:
        task = self.builder_config.task
        return (f"put {task}/video/{trial}_{CAMERA}.avi (from {task}.zip of the JIGSAWS release) or "
                f"a frame folder frames/{trial}_{CAMERA}/ into the manual_dir, check {trial} in "
                "label.pkl/splits.pkl, or build with `aqa-jax build-data ... --skip-bad-samples` "
                "to leave it out")

    def _make_example(self, trial: str, context: dict) -> dict[str, Any]:
        task = self.builder_config.task
        match = re.fullmatch(rf"{re.escape(task)}_([A-Z])(\d{{3}})", trial)
        if not match:
            raise BadSampleError(trial, f"trial name {trial!r} in splits.pkl is not "
                                 f"{task}_<surgeon letter><3-digit trial>", self._fix(trial))
        labels, label_path = context["labels"], context["label_path"]
        if trial not in labels:
            raise BadSampleError(trial, f"{trial} of splits.pkl has no entry in {label_path}",
                                 self._fix(trial))
        grs = labels[trial]
        ok = (isinstance(grs, (list, tuple, np.ndarray)) and len(grs) == NUM_GRS
              and all(isinstance(g, (int, float, np.integer, np.floating))
                      and not isinstance(g, bool) and 1 <= g <= 5 for g in grs))
        if not ok:
            raise BadSampleError(trial, f"{label_path}: {trial} has {grs!r}, expected {NUM_GRS} "
                                 "GRS sub-scores in 1..5", self._fix(trial))
        grs = np.asarray(grs, np.float32)
        frames = context["cache"].get(trial, lambda: self._read_frames(trial, context["root"]))
        return {
            "id": trial,
            "frames": frames,
            "num_frames": len(frames),
            "score": np.float32(grs.sum()),
            "grs": grs,
            "task": task,
            "surgeon": match.group(1),
            "trial": int(match.group(2)),
            "fold": context["fold_of"][trial],
        }

    def _frame_bytes(self, path: Path) -> bytes:
        """A frame file as stored: its own JPEG bytes when already at ``short_side``."""
        data = path.read_bytes()
        image = decode_jpeg(data, str(path))  # validates every frame
        if path.suffix.lower() != ".png" and (
                self.short_side is None or min(image.shape[:2]) == self.short_side):
            return data
        return encode_jpeg(resize_short_side(image, self.short_side))

    def _read_frames(self, trial: str, root: Path) -> list[bytes]:
        task = self.builder_config.task
        name = f"{trial}_{CAMERA}"
        for folder in [root / d / name for d in FRAME_DIRS] + [root / task / "frames" / name]:
            if folder.is_dir():
                files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                               key=lambda p: p.name)
                if not files:
                    raise FrameError(f"frame folder {folder} has no .jpg/.png frames")
                return [self._frame_bytes(p) for p in files]
        video = root / task / "video" / f"{name}.avi"
        if not video.is_file():
            raise BadSampleError(trial, f"missing video file {video} (and no frame folder "
                                 f"frames/{name}/)", self._fix(trial))
        frames = encode_video_frames(iter_video(video), self.short_side)
        check_frame_count(len(frames), video)  # a truncated avi stops early without an error
        return frames


class _FrameCache:
    """Encoded frames of trials used by several splits: computed once, dropped after last use.

    Stored as ``<trial>.npz`` (one uint8 buffer + offsets; no pickle) in the build's temporary
    directory, which TFDS removes if the build fails.
    """

    def __init__(self, uses: dict[str, int], num_splits: int):
        self.uses = dict(uses)
        self.pending_splits = num_splits
        self.directory: Path | None = None

    def get(self, trial: str, make: Callable[[], list[bytes]]) -> list[bytes]:
        path = self.directory / f"{trial}.npz" if self.directory else None
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as data:
                buffer, offsets = data["buffer"], data["offsets"]
            frames = [buffer[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
        else:
            frames = make()
            if path is not None and self.uses.get(trial, 0) > 1:
                path.parent.mkdir(parents=True, exist_ok=True)
                offsets = np.cumsum([0] + [len(f) for f in frames]).astype(np.int64)
                np.savez(path, buffer=np.frombuffer(b"".join(frames), np.uint8), offsets=offsets)
        self.uses[trial] = self.uses.get(trial, 1) - 1
        if self.uses[trial] <= 0 and path is not None and path.is_file():
            path.unlink()
        return frames

    def split_done(self) -> None:
        """After the last split, removes the cache (never left in the built dataset)."""
        self.pending_splits -= 1
        if self.pending_splits <= 0 and self.directory is not None and self.directory.is_dir():
            shutil.rmtree(self.directory)
