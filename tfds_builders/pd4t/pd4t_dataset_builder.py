"""pd4t: PD4T, Parkinson's disease motor tasks scored with MDS-UPDRS (0-4), as distributed.

One config per task (``gait``, ``finger_tapping``, ``hand_movement``, ``leg_agility``). Splits
``train``/``test`` are the official patient-level split given by the per-task CSV files.

Read from the distributed archive (manual_dir = the ``PD4T/`` folder or a folder holding it)::

    PD4T/Annotations/<Task>/train.csv, test.csv   no header; rows: video_id,num_frames,score
    PD4T/Videos/<Task>/.../*.mp4

Task folders are "Gait", "Finger tapping", "Hand movement", "Leg agility"; case, spaces,
underscores, hyphens and a plural "movements" are accepted.

**Finding a row's video** (third-party descriptions of the archive disagree on the layout, so
the builder accepts both and fails loudly on anything ambiguous). All ``*.mp4`` files under
``Videos/<Task>/`` are indexed (recursively), then for a ``video_id``:

1. a file named ``<video_id>.mp4`` anywhere under the task folder (e.g. the per-patient
   ``<patient>/<visit>_l.mp4`` layout);
2. otherwise, with ``video_id = <stem>_<suffix>``, a file ``<suffix>/<stem>.mp4``, i.e. a file
   named after the part before the last '_' inside a folder named after the part after it.
   This covers ``Gait/026/14-005690.mp4`` for id ``14-005690_026`` (patient folder) and
   ``Finger tapping/l/15-005087.mp4`` for id ``15-005087_l`` (side folder).

No match, or several matches at the same rule, is a :class:`BadSampleError` naming the id,
the task video folder and the candidates.

**Patient id** (``patient``): the first folder under ``Videos/<Task>/`` on the path of the
resolved video that is not a side folder (``l``, ``r``, ``left``, ``right``); for
``Gait/026/14-005690.mp4`` it is ``026``. If the video sits in no such folder, the numeric
suffix of the id (``14-005690_026`` → ``026``) when there is one, else ``""`` (unknown). The
public notes on the archive list the test patients as three-digit ids (001 … 057), which are
these folder names / id suffixes; the part before the '_' (``14-005690``) is the recording
(visit) number, not the patient.

**Side** (``side``): ``"l"``/``"r"`` when the id or the file name ends in ``_l``/``_r`` or the
video lies in an ``l``/``r`` folder, else ``""``.

Features: ``score`` (float32, UPDRS 0-4 as in the CSV), ``label`` (ClassLabel(5), the same
integer score), ``patient`` (text), ``side`` (text), ``task`` (text, config name),
``csv_num_frames`` (int32, the CSV's frame count, stored as given), and the core ``id``,
``frames`` (JPEG bytes, short side ``short_side``) and ``num_frames`` (int32, the number of
frames OpenCV actually decoded, which may differ from ``csv_num_frames``).

A video that decodes more than 5% (at least 2 frames) short of its CSV ``num_frames`` or of
its container's frame count is truncated: a :class:`BadSampleError`, not a short sample. An
id listed in both train.csv and test.csv is refused (the official split is patient-level).

A CSV row that does not parse (wrong column count, non-numeric count/score, a score outside
0-4 or not an integer, a repeated id) is a :class:`BadSampleError` naming the CSV file and
line; an unreadable or missing video, one naming the id and the file.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from aqa_jax.data.bad_input import BadSampleError, check_frame_count, check_split_overlap
from aqa_jax.data.frames import encode_video_frames, iter_video
from aqa_jax.data.tfds_base import AQABuilderConfig, AQAVideoBuilder

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
PD4T is distributed on request only: fill in the request form (datasets/PD4T_Request_Form.docx
in https://github.com/Plrbear/PECoP), have it signed by a faculty member, and email it to
a.dadashzadeh@bristol.ac.uk. Unpack the archive and pass the PD4T folder (or the folder that
holds it) as --manual_dir. Expected layout:

  PD4T/
    Annotations/
      Gait/train.csv, Gait/test.csv                       (no header: video_id,num_frames,score)
      Finger tapping/train.csv, test.csv
      Hand movement/train.csv, test.csv
      Leg agility/train.csv, test.csv
    Videos/
      Gait/<patient_id>/<visit>.mp4                       (id <visit>_<patient_id>)
      Finger tapping/<patient_id or l|r>/<...>.mp4
      Hand movement/...
      Leg agility/...

A CSV row's video is <video_id>.mp4 anywhere under Videos/<Task>/, or <suffix>/<stem>.mp4 for
video_id = <stem>_<suffix>.
"""

TASK_FOLDERS = {
    # config name: (canonical folder name, accepted normalised spellings)
    "gait": ("Gait", {"gait"}),
    "finger_tapping": ("Finger tapping", {"fingertapping", "fingertap", "fingertaps"}),
    "hand_movement": ("Hand movement", {"handmovement", "handmovements"}),
    "leg_agility": ("Leg agility", {"legagility"}),
}
SIDE_FOLDERS = {"l": "l", "r": "r", "left": "l", "right": "r"}
VIDEO_FIX = "check that the video is in PD4T/Videos/<Task>/ and plays (re-copy it from the archive)"
CSV_FIX = "restore the row from the original PD4T archive (video_id,num_frames,score; no header)"


@dataclasses.dataclass
class PD4TConfig(AQABuilderConfig):
    """One PD4T task."""

    task: str = "gait"


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


def find_root(manual: Path) -> tuple[Path, Path] | None:
    """(Annotations/, Videos/) of manual_dir or of a PD4T/ folder (up to 3 deep) below it."""
    frontier = [manual]
    for _ in range(4):
        nxt = []
        for d in frontier:
            names = {p.name.lower(): p for p in sorted(d.iterdir()) if p.is_dir()}
            if "annotations" in names and "videos" in names:
                return names["annotations"], names["videos"]
            nxt += sorted(p for p in names.values() if _norm(p.name) == "pd4t")
        frontier = nxt
    return None


def find_task_folder(parent: Path, task: str) -> Path:
    """The child of ``parent`` spelling the task's folder; error if none or several."""
    canonical, spellings = TASK_FOLDERS[task]
    hits = sorted(p for p in parent.iterdir() if p.is_dir() and _norm(p.name) in spellings)
    if len(hits) == 1:
        return hits[0]
    have = sorted(p.name for p in parent.iterdir() if p.is_dir())
    problem = "no folder" if not hits else f"several folders ({[h.name for h in hits]})"
    raise FileNotFoundError(
        f"pd4t/{task}: {problem} for task {canonical!r} in {parent} (it has {have}).\n"
        + MANUAL_DOWNLOAD_INSTRUCTIONS
    )


@dataclasses.dataclass(frozen=True)
class Row:
    video_id: str
    csv_num_frames: int
    score: float
    label: int


def parse_row(fields: list[str], csv_path: Path, line: int) -> Row:
    """One CSV row → :class:`Row`, or :class:`BadSampleError` naming the file and line."""
    fields = [f.strip() for f in fields]
    where = f"{csv_path}, line {line}"
    sample = fields[0] if fields and fields[0] else f"{csv_path.name}:{line}"
    if len(fields) != 3 or not fields[0]:
        raise BadSampleError(sample, f"{where}: expected 3 columns video_id,num_frames,score, "
                             f"got {fields!r}", CSV_FIX)
    try:
        num_frames_f = float(fields[1])
        score = float(fields[2])
    except ValueError:
        raise BadSampleError(sample, f"{where}: num_frames {fields[1]!r} or score {fields[2]!r} "
                             "is not a number", CSV_FIX) from None
    if not (math.isfinite(num_frames_f) and num_frames_f >= 0
            and num_frames_f == int(num_frames_f)):
        raise BadSampleError(sample, f"{where}: num_frames {fields[1]!r} is not a count", CSV_FIX)
    if not (math.isfinite(score) and score == int(score) and 0 <= score <= 4):
        raise BadSampleError(sample, f"{where}: score {fields[2]!r} is not an integer UPDRS "
                             "score in 0-4", CSV_FIX)
    return Row(fields[0], int(num_frames_f), score, int(score))


def read_csv(csv_path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line of a header-less CSV."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        return [(i, fields) for i, fields in enumerate(csv.reader(f), start=1)
                if any(x.strip() for x in fields)]


def index_videos(folder: Path) -> dict[str, list[Path]]:
    """File stem → every ``*.mp4`` (any case) with that stem under ``folder``, sorted."""
    index: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(".mp4"):
                index.setdefault(name[:-4], []).append(Path(dirpath) / name)
    return index


def resolve_video(video_id: str, index: dict[str, list[Path]], folder: Path) -> Path:
    """The video of ``video_id`` by the rules of the module docstring."""
    exact = index.get(video_id, [])
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise BadSampleError(video_id, f"several videos named {video_id}.mp4 under {folder}: "
                             f"{[str(p) for p in exact]}", "keep one copy")
    if "_" in video_id:
        stem, suffix = video_id.rsplit("_", 1)
        hits = [p for p in index.get(stem, []) if p.parent.name.lower() == suffix.lower()]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise BadSampleError(video_id, f"several videos {suffix}/{stem}.mp4 under {folder}: "
                                 f"{[str(p) for p in hits]}", "keep one copy")
        tried = f"{video_id}.mp4 or {suffix}/{stem}.mp4"
    else:
        tried = f"{video_id}.mp4"
    raise BadSampleError(video_id, f"missing video file: no {tried} under {folder}", VIDEO_FIX)


def patient_and_side(video_id: str, path: Path, folder: Path) -> tuple[str, str]:
    """(patient id, side) by the rules of the module docstring."""
    dirs = path.relative_to(folder).parent.parts
    side = ""
    for part in dirs:
        side = SIDE_FOLDERS.get(part.lower(), side)
    for name in (path.stem, video_id):
        m = re.search(r"_([lLrR])$", name)
        if m:
            side = m.group(1).lower()
    patient = next((p for p in dirs if p.lower() not in SIDE_FOLDERS), "")
    if not patient:
        m = re.search(r"_(\d+)$", video_id)
        patient = m.group(1) if m else ""
    return patient, side


class Builder(AQAVideoBuilder):
    """PD4T (Parkinson's disease, 4 tasks): MDS-UPDRS 0-4 scores of clinical videos."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: the distributed CSVs and mp4s."}
    BUILDER_CONFIGS = [
        PD4TConfig(name=task, task=task, description=f"PD4T {folder}")
        for task, (folder, _) in TASK_FOLDERS.items()
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://github.com/Plrbear/PECoP"
    CITATION = """@inproceedings{dadashzadeh2024pecop,
  title={PECoP: Parameter Efficient Continual Pretraining for Action Quality Assessment},
  author={Dadashzadeh, Amirhossein and Duan, Shuchao and Whone, Alan and Mirmehdi, Majid},
  booktitle={WACV}, year={2024}}"""

    def extra_features(self):
        return {
            "label": tfds.features.ClassLabel(num_classes=5),
            "patient": tfds.features.Text(),
            "side": tfds.features.Text(),
            "task": tfds.features.Text(),
            "csv_num_frames": tfds.features.Scalar(dtype=np.int32),
        }

    def _split_generators(self, dl_manager):
        manual = self.manual_path(dl_manager)
        found = find_root(manual)
        if found is None:
            raise FileNotFoundError(
                f"pd4t: no folder holding Annotations/ and Videos/ in {manual} (nor in a PD4T/ "
                f"folder below it).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        task = self.builder_config.task
        ann = find_task_folder(found[0], task)
        videos = find_task_folder(found[1], task)
        splits, ids = {}, {}
        for split in ("train", "test"):
            csv_path = ann / f"{split}.csv"
            if not csv_path.is_file():
                raise FileNotFoundError(
                    f"pd4t/{task}: missing {csv_path}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
            ids[split] = (csv_path, [f[0].strip() for _, f in read_csv(csv_path) if f and f[0].strip()])
            splits[split] = self._generate_examples(split, csv_path, videos)
        check_split_overlap(f"pd4t/{task}", ids)  # the official split is patient-level
        return splits

    def _generate_examples(self, split: str, csv_path: Path, videos: Path):
        report = self.new_report(split)
        rows = read_csv(csv_path)
        if not rows:
            raise ValueError(f"pd4t/{self.builder_config.task}: {csv_path} has no rows — "
                             f"{CSV_FIX}")
        index = index_videos(videos)
        seen: dict[str, int] = {}
        count = 0

        def parse(fields, line):
            row = parse_row(fields, csv_path, line)
            if row.video_id in seen:
                raise BadSampleError(row.video_id, f"{csv_path}, line {line}: repeats the id of "
                                     f"line {seen[row.video_id]}", CSV_FIX)
            seen[row.video_id] = line
            return row

        for line, fields in rows:
            sample = (fields[0].strip() if fields and fields[0].strip()
                      else f"{csv_path.name}:{line}")
            row = report.run(sample, lambda: parse(fields, line), fix=CSV_FIX)
            if row is None:
                continue
            example = report.run(row.video_id, lambda: self._example(row, index, videos),
                                 fix=VIDEO_FIX)
            if example is not None:
                count += 1
                yield row.video_id, example
        report.finish()
        if not count:
            raise ValueError(f"pd4t/{self.builder_config.task}:{split}: none of the {len(rows)} "
                             f"rows of {csv_path} gave a sample (see the skipped samples above)")

    def _example(self, row: Row, index: dict[str, list[Path]], videos: Path) -> dict:
        path = resolve_video(row.video_id, index, videos)
        try:
            frames = encode_video_frames(iter_video(path), self.short_side)
            check_frame_count(len(frames), path, row.csv_num_frames,
                              expected_from="the CSV (num_frames)")
        except ValueError as err:  # FrameError names the file
            raise BadSampleError(row.video_id, f"unreadable video {path}: {err}",
                                 VIDEO_FIX) from None
        patient, side = patient_and_side(row.video_id, path, videos)
        return {
            "id": row.video_id,
            "frames": frames,
            "num_frames": len(frames),
            "score": np.float32(row.score),
            "label": row.label,
            "patient": patient,
            "side": side,
            "task": self.builder_config.task,
            "csv_num_frames": row.csv_num_frames,
        }
