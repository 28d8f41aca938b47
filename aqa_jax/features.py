"""Per-clip I3D features of a whole dataset split, for feature-based methods (CoFInAl, GDLT).

Each video is cut into consecutive ``clip_len``-frame clips (every ``stride`` frames, the last
partial clip dropped; a video shorter than one clip is padded by repeating its last frame),
transformed with the evaluation transform of ``preset`` (centre crop, no flip) and passed
through the I3D (Kinetics-400, or a PECoP-adapted checkpoint); the pooled 1024-d feature of
each clip is kept. Output layout follows the RG / Fis-V feature releases: ``<out>/<id>.npy``
of shape (num_clips, 1024) and ``<out>/<split>.csv`` (written with the csv module, header
``name,score``, so an id holding spaces, commas or quotes reads back unchanged), plus
``<out>/extractor.json``, the settings (:class:`ExtractorSettings`) that let ``aqa-jax predict``
compute the same features for a new video.

Extraction survives interruption and bad videos: each ``.npy`` is written atomically and its
row is then appended (flushed, fsynced) to ``<out>/<split>.partial.csv``; a rerun with the same
settings skips every video already listed there. A video that cannot be read is named in one
line and the others go on; the split's ``<split>.csv`` is written (atomically, in the source's
order) only when every video has its features, or with ``skip_bad=True`` without the bad ones,
which are then listed in ``<out>/bad_videos_<split>.json``. Folders written before the CSV
(``<split>.txt``, space-separated) are still read when every row has exactly two fields.

Raw videos need no built dataset (:func:`find_videos`, :func:`extract_videos`; ``aqa-jax
extract-features --videos``): video files and frame folders are read as ``aqa-jax predict``
reads them, each video's id is its file or folder name, and the same layout is written, the
label file being ``<out>/videos.csv`` (scores ``nan`` unless a scores file gives them).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np
from aqa_jax.data.frames import decode_frames
from aqa_jax.data.transforms import apply_transform
from aqa_jax.models.i3d import InceptionI3d
from aqa_jax.progress import track

EXTRACTOR_FILE = "extractor.json"
LABEL_HEADER = ("name", "score")


def clip_windows(num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    """(num_clips, clip_len) frame indices of consecutive clips (see module docstring)."""
    if num_frames < 1:
        raise ValueError("cannot cut clips from an empty video")
    if num_frames < clip_len:
        return np.minimum(np.arange(clip_len), num_frames - 1)[None]
    starts = np.arange(0, num_frames - clip_len + 1, stride)
    return starts[:, None] + np.arange(clip_len)[None]


def video_features(
    record: Mapping[str, Any],
    apply_fn,
    *,
    clip_len: int = 16,
    stride: int = 16,
    preset: str = "deepmind",
    batch_clips: int = 8,
) -> np.ndarray:
    """(num_clips, 1024) features of one record; ``apply_fn(clips) -> (n, 1024)`` is called on
    ``batch_clips`` clips at a time."""
    sample = record["id"].decode() if isinstance(record["id"], bytes) else str(record["id"])
    windows = clip_windows(int(record["num_frames"]), clip_len, stride)
    out = []
    for start in range(0, len(windows), batch_clips):
        chunk = windows[start : start + batch_clips]
        clips = np.stack([
            apply_transform(decode_frames(record["frames"], w, source=sample), preset) for w in chunk
        ])
        # every batch has batch_clips clips (the last one padded with copies): one compilation
        padded = np.concatenate([clips, np.repeat(clips[-1:], batch_clips - len(chunk), axis=0)])
        out.append(np.asarray(apply_fn(padded))[: len(chunk)])
    return np.concatenate(out).astype(np.float32)


def make_feature_fn(model, variables):
    """``clips -> features`` for an ``InceptionI3d`` and its variables: a jitted apply that
    takes the variables (put on the device once) as an argument, not as constants, so its
    compiled program, and its entry in the persistent compilation cache, are those of the
    architecture and clip shape alone (any weights reuse them; the entry holds no weights)."""
    apply = jax.jit(lambda v, clips: model.apply(v, clips)["features"])
    on_device = jax.device_put(variables)
    return lambda clips: apply(on_device, clips)


@dataclasses.dataclass(frozen=True)
class ExtractorSettings:
    """How a feature folder was computed, written beside it as ``extractor.json`` so that the
    same features can be computed again for a new video (``aqa-jax predict`` with a CoFInAl or
    GDLT run). ``weights``: ``kinetics400``, or the absolute path of a ``convert-weights``
    directory or of a training run's workdir (see :func:`load_i3d`)."""

    weights: str = "kinetics400"
    variant: str = "deepmind"
    clip_len: int = 16
    stride: int = 16
    preset: str = "deepmind"

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any], where: str = "extractor settings") -> "ExtractorSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        if set(fields) != known:
            raise ValueError(f"{where}: fields {sorted(fields)}; expected {sorted(known)}")
        return cls(**{k: type(getattr(cls, k))(v) for k, v in fields.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_extractor_settings(folder: str | os.PathLike[str]) -> ExtractorSettings | None:
    """The settings of a feature folder, or ``None`` when it has no ``extractor.json`` (the
    RG / Fis-V releases, or a folder written before the settings were recorded)."""
    path = Path(folder) / EXTRACTOR_FILE
    if not path.is_file():
        return None
    return ExtractorSettings.from_dict(json.loads(path.read_text()), where=str(path))


def check_extractor_settings(out_dir: str | os.PathLike[str], settings: ExtractorSettings) -> None:
    """A folder already extracted with other settings is an error: its splits would not be
    comparable, nor its features those a new video gets in ``predict``."""
    held = read_extractor_settings(out_dir)
    if held is not None and held != settings:
        raise ValueError(f"{out_dir} holds features extracted with {held.to_dict()}, not "
                         f"{settings.to_dict()}: write these to another --out")


def i3d_shapes(model: InceptionI3d) -> dict[str, Any]:
    """``{'params', 'batch_stats'}`` of ``model`` as ``jax.ShapeDtypeStruct`` leaves, from
    ``jax.eval_shape`` of its ``init`` (traced, not compiled: about 1 s, where a jitted
    ``init`` of the I3D takes about a minute to compile on a CPU)."""
    from flax import linen as nn

    return nn.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                   jax.ShapeDtypeStruct((1, 8, 32, 32, 3), np.float32)))


def kinetics400_i3d(variant: str = "deepmind") -> tuple[InceptionI3d, dict[str, Any]]:
    """(model, variables) of the shipped Kinetics-400 I3D with ``variant``'s numerics (a BN
    scale, where the variant has one, set to ones). Every leaf comes from the weights file
    onto the shapes of :func:`i3d_shapes`; nothing is compiled."""
    from aqa_jax.weights.kinetics import load_i3d_kinetics400

    model = InceptionI3d(variant=variant)
    shapes = i3d_shapes(model)
    zeros = {c: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), v) for c, v in shapes.items()}
    return model, load_i3d_kinetics400(zeros)


def run_i3d(workdir: str | os.PathLike[str]) -> InceptionI3d:
    """The I3D of a training run (``config.model``, adapters included) up to the average pool
    that gives clip features; ValueError for a run without an I3D or one cut before Mixed_5c."""
    from aqa_jax.experiment import Experiment

    run = Experiment.from_workdir(workdir, prepare=False)  # no data split is opened
    if "variant" not in run.config.get("model", {}):
        raise ValueError(f"{workdir} is a {run.config.get('method')} run without an I3D backbone; "
                         "features come from an I3D (kinetics400, converted weights or an "
                         "I3D run such as PECoP)")
    end = run.config.model.get("final_endpoint", "Logits")
    if end not in ("Mixed_5c", "AvgPool", "Logits"):  # the pool itself has no parameters
        raise ValueError(f"{workdir}: its I3D stops at {end}, short of Mixed_5c and the "
                         "average pool that gives clip features")
    return run.i3d(final_endpoint="AvgPool")  # Logits, if any, do not change the features


def load_i3d(weights: str, variant: str = "deepmind") -> tuple[InceptionI3d, dict[str, Any]]:
    """(model, variables) of a feature extractor I3D from ``weights``:

    - ``kinetics400``: the shipped DeepMind Kinetics-400 I3D, with ``variant``'s numerics;
    - a ``convert-weights`` directory (``model.json``): its own architecture and weights;
    - a training run's workdir (``checkpoints/``), e.g. a PECoP run: its I3D (``config.model``,
      adapters included) up to the average pool (:func:`run_i3d`), every variable from the
      backbone of its latest checkpoint (a variable the checkpoint lacks is an error).

    Nothing is compiled: the variables' shapes come from :func:`i3d_shapes`.
    """
    path = Path(weights)
    if weights != "kinetics400" and (path / "model.json").is_file():
        from aqa_jax.weights.store import load_model_weights

        model, variables, _ = load_model_weights(path)
        return model, variables
    if weights == "kinetics400":
        return kinetics400_i3d(variant)
    if (path / "checkpoints").is_dir():
        from aqa_jax.weights.init import run_backbone

        model = run_i3d(path)
        return model, run_backbone(path, i3d_shapes(model))
    raise FileNotFoundError(f"--weights {weights!r} is neither 'kinetics400', a weights "
                            "directory (model.json, from `aqa-jax convert-weights`) nor a "
                            "training workdir (checkpoints/)")


class FeatureExtractor:
    """``record -> (num_clips, 1024)`` features computed as ``settings`` say (the network is
    loaded once)."""

    def __init__(self, settings: ExtractorSettings):
        self.settings = settings
        model, variables = load_i3d(settings.weights, settings.variant)
        self._fn = make_feature_fn(model, variables)

    def __call__(self, record: Mapping[str, Any]) -> np.ndarray:
        s = self.settings
        return video_features(record, self._fn, clip_len=s.clip_len, stride=s.stride, preset=s.preset)


class ExtractionIncomplete(RuntimeError):
    """Some videos of a split could not be read; the others' features are saved (resumable)."""


@dataclasses.dataclass
class SplitExtraction:
    """What :func:`extract_split` did: the folder, the videos done (``extracted`` now,
    ``resumed`` from an interrupted run) and the ``failed`` ones (name, one-line reason)."""

    out_dir: Path
    extracted: int = 0
    resumed: int = 0
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    label_file: Path | None = None


def label_path(out_dir: str | os.PathLike[str], split: str) -> Path:
    """The label file of ``split`` (see module docstring)."""
    return Path(out_dir) / f"{split}.csv"


def _partial_rows(path: Path) -> dict[str, str]:
    """``name -> score`` of the complete rows of a label file being appended to (a row cut by
    an interruption, i.e. without its newline, is dropped)."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    return {r[0]: r[1] for r in rows[1:] if len(r) == 2}


def _write_atomic(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, mode, **({"newline": "", "encoding": "utf-8"} if "b" not in mode else {})) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def extract_split(
    source: Sequence[Mapping[str, Any]],
    extract: Callable[[Mapping[str, Any]], np.ndarray],
    out_dir: str | os.PathLike[str],
    split: str,
    settings: ExtractorSettings,
    *,
    skip_bad: bool = False,
    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> SplitExtraction:
    """Writes every record's features (``extract(record)``, e.g. a :class:`FeatureExtractor`),
    the split's label file and ``extractor.json`` (``settings``), resuming an interrupted run
    and going on past unreadable videos as the module docstring says (``report`` gets one line
    per bad video). Raises :class:`ExtractionIncomplete` when videos failed and ``skip_bad`` is
    False (the split's label file is then not written, a rerun retries only those)."""
    import cv2

    from aqa_jax.data.frames import FrameError

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_extractor_settings(out_dir, settings)
    _write_atomic(out_dir / EXTRACTOR_FILE,
                  lambda f: f.write(json.dumps(settings.to_dict(), indent=2) + "\n"))
    final, partial = label_path(out_dir, split), out_dir / f"{split}.partial.csv"
    done = {**_partial_rows(final), **_partial_rows(partial)}
    result = SplitExtraction(out_dir)
    order: list[tuple[str, str]] = []
    owners: dict[str, str] = {}
    fresh = not partial.is_file() or not partial.read_text(encoding="utf-8").strip()
    with open(partial, "w" if fresh else "a", newline="", encoding="utf-8") as log:
        writer = csv.writer(log)
        if fresh:
            writer.writerow(LABEL_HEADER)
        for record in track(source, desc=f"I3D features [{split}]", unit="video"):
            name = record["id"].decode() if isinstance(record["id"], bytes) else str(record["id"])
            safe = name.replace("/", "__")
            if owners.setdefault(safe, name) != name:
                result.failed.append((name, f"its file name {safe}.npy is that of {owners[safe]!r}"))
                report(f"{split}: {name}: error: {result.failed[-1][1]}")
                continue
            score = f"{float(record['score']):.6f}"
            npy = out_dir / f"{safe}.npy"
            if safe in done and npy.is_file():
                result.resumed += 1
                order.append((safe, score))
                continue
            try:
                features = extract(record)
            except (FrameError, ValueError, OSError, cv2.error) as err:
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                result.failed.append((name, reason))
                report(f"{split}: {name}: error: {reason}")
                continue
            _write_atomic(npy, lambda f: np.save(f, features), mode="wb")
            writer.writerow((safe, score))
            log.flush()
            os.fsync(log.fileno())
            result.extracted += 1
            order.append((safe, score))
    if result.failed and not skip_bad:
        raise ExtractionIncomplete(
            f"{split}: {len(result.failed)} of {len(order) + len(result.failed)} videos could not "
            f"be read (named above); the features of the {len(order)} others are saved in "
            f"{out_dir} — rerun to retry only those, or pass --skip-bad-videos to write the "
            "split without them")
    bad = out_dir / f"bad_videos_{split}.json"
    if result.failed:
        bad.write_text(json.dumps([{"video": n, "problem": p} for n, p in result.failed], indent=2))
    elif bad.exists():
        bad.unlink()

    def write_labels(f):
        rows = csv.writer(f)
        rows.writerow(LABEL_HEADER)
        rows.writerows(order)

    _write_atomic(final, write_labels)
    partial.unlink()
    result.label_file = final
    return result


def iter_feature_files(out_dir: str | os.PathLike[str], split: str) -> Iterator[tuple[str, np.ndarray, float]]:
    """Reads back what :func:`extract_split` wrote: (name, features, score)."""
    out_dir = Path(out_dir)
    for name, score in read_labels(out_dir, split):
        yield name, np.load(out_dir / f"{name}.npy"), float(score)


def read_labels(out_dir: str | os.PathLike[str], split: str) -> list[tuple[str, str]]:
    """(name, score text) rows of a split's label file: ``<split>.csv``, or a folder's older
    space-separated ``<split>.txt`` when each of its rows has exactly two fields (else an
    error naming the line: such a file cannot say where an id with spaces ends)."""
    out_dir = Path(out_dir)
    path = label_path(out_dir, split)
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows or [c.strip().lower() for c in rows[0]] != list(LABEL_HEADER):
            raise ValueError(f"{path}: the first row must be the header {','.join(LABEL_HEADER)}")
        bad = next((i for i, r in enumerate(rows[1:], 2) if r and len(r) != 2), None)
        if bad is not None:
            raise ValueError(f"{path}, line {bad}: expected 2 fields (name,score), got {rows[bad - 1]!r}")
        return [(r[0], r[1]) for r in rows[1:] if r]
    legacy = out_dir / f"{split}.txt"
    if not legacy.is_file():
        raise FileNotFoundError(f"{out_dir} has no {path.name} (nor an older {legacy.name}): "
                                f"extract the {split} split with `aqa-jax extract-features`")
    out = []
    for i, line in enumerate(legacy.read_text(encoding="utf-8").splitlines()[1:], 2):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{legacy}, line {i}: {len(fields)} space-separated fields, expected "
                             "2 (name score); an id with spaces is ambiguous in this older format: "
                             "re-extract with `aqa-jax extract-features` (it writes "
                             f"{path.name})")
        out.append((fields[0], fields[1]))
    return out


# ------------------------------------------------------------------------------- raw videos

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
RAW_VIDEOS_SPLIT = "videos"


def _is_frame_folder(path: Path) -> bool:
    from aqa_jax.predict import IMAGE_SUFFIXES

    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in path.iterdir())


def find_videos(inputs: Sequence[str | os.PathLike[str]]) -> list[tuple[str, Path]]:
    """(id, path) of every video that ``inputs`` name, in the order given (a folder's entries
    sorted by name):

    - a file is one video (OpenCV decides whether it can read it); its id is the file name
      without its suffix (``clips/dive_01.mp4`` → ``dive_01``);
    - a folder holding frame images (``.jpg``/``.jpeg``/``.png``/``.bmp``) is one video, read
      as ``aqa-jax predict`` reads a frame folder; its id is the folder's name;
    - any other folder contributes each video file (:data:`VIDEO_SUFFIXES`) and each frame
      folder directly inside it.

    Raises FileNotFoundError for an input that does not exist or a folder with no video in it,
    and ValueError, naming both paths, when two videos would get the same id (their features
    would overwrite each other's ``<id>.npy``).
    """
    found: list[tuple[str, Path]] = []
    for given in inputs:
        path = Path(given)
        if path.is_file():
            found.append((path.stem, path))
        elif path.is_dir():
            if _is_frame_folder(path):
                found.append((path.resolve().name, path))
                continue
            inside = [(p.stem if p.is_file() else p.name, p) for p in sorted(path.iterdir())
                      if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
                      or (p.is_dir() and _is_frame_folder(p))]
            if not inside:
                raise FileNotFoundError(
                    f"{path} holds no video: neither frame images nor video files "
                    f"({'/'.join(VIDEO_SUFFIXES)}) nor folders of frame images")
            found.extend(inside)
        else:
            raise FileNotFoundError(f"no such video file or folder: {path}")
    owners: dict[str, Path] = {}
    for name, path in found:
        if name in owners:
            raise ValueError(f"{owners[name]} and {path} both give the video id {name!r} (ids "
                             "are file or folder names without suffix): rename one, or extract "
                             "them into different --out folders")
        owners[name] = path
    return found


def read_scores(path: str | os.PathLike[str]) -> dict[str, float]:
    """``id -> score`` from a CSV file with the header ``name,score`` (the layout of the label
    files written here); a row that does not parse is an error naming its line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such scores file: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0]] != list(LABEL_HEADER):
        raise ValueError(f"{path}: the first row must be the header {','.join(LABEL_HEADER)}")
    scores: dict[str, float] = {}
    for line, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        try:
            if len(row) != 2:
                raise ValueError
            scores[row[0]] = float(row[1])
        except ValueError:
            raise ValueError(f"{path}, line {line}: expected name,score with a numeric score, "
                             f"got {row!r}") from None
    return scores


def check_scores(videos: Sequence[tuple[str, Path]], scores: Mapping[str, float] | None) -> None:
    """With ``scores`` given, a ValueError naming the videos (ids) that have none."""
    if scores is None:
        return
    missing = [name for name, _ in videos if name not in scores]
    if missing:
        raise ValueError(f"{len(missing)} of the videos have no row in the scores file: "
                         + ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""))


def extract_videos(
    videos: Sequence[tuple[str, Path]],
    extract: Callable[[Mapping[str, Any]], np.ndarray],
    out_dir: str | os.PathLike[str],
    settings: ExtractorSettings,
    *,
    split: str = RAW_VIDEOS_SPLIT,
    scores: Mapping[str, float] | None = None,
    skip_bad: bool = False,
    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> SplitExtraction:
    """:func:`extract_split` on raw videos, ``(id, path)`` pairs from :func:`find_videos`: each
    video is read as ``aqa-jax predict`` reads it (:func:`aqa_jax.predict.read_video_record`:
    frames at short side at most 256, as JPEG) only when its features are not already saved,
    then given to ``extract`` (e.g. a :class:`FeatureExtractor`). Writes the same layout:
    ``<id>.npy``, ``<split>.csv`` (``name,score``; the score is ``scores[id]``, or ``nan`` when
    no scores are given) and ``extractor.json``. With ``scores``, every video must have one
    (else a ValueError naming those without, before anything is read)."""
    from aqa_jax.predict import read_video_record

    check_scores(videos, scores)
    source = [{"id": name, "path": path,
               "score": np.float32(scores[name] if scores is not None else np.nan)}
              for name, path in videos]
    return extract_split(source, lambda item: extract(read_video_record(item["path"])), out_dir,
                         split, settings, skip_bad=skip_bad, report=report)
