"""``aqa-jax predict``: score raw videos with a trained run's checkpoint.

A video (mp4/avi/mov, any size and frame rate, or a folder of frame images) becomes a record
like the datasets' (frames as JPEG, shrunk to short side 256 when larger, where the builders
resize every video to 256; a frame folder's own JPEG bytes when they are no larger; a video file
and the lossless PNG frames dumped from it give the same record), then goes through the run's own clip
sampler (its frame layout, clip starts and transform preset) and network. Layouts tied to an
annotation fall back to what a raw video allows: the ``window`` layout (MTL-AQA's 103 frames
ending at the annotated end frame) takes the same number of frames spread over the whole video.

Methods on clip features (CoFInAl, GDLT) first compute the video's features exactly as the
run's training features were computed: the I3D, preset, clip length and stride that
``aqa-jax extract-features`` recorded (``extractor.json``, copied into ``config.data.extractor``).

Per video: the score, the method's uncertainty where it has one (USDL: the mean, std and
histogram of its score distribution; CoRe/TSA: the spread over exemplars; CoFInAl: the coarse
grade, its probabilities and the ETF sub-grade; GDLT: the grade probabilities) and per-clip
contributions: the score the network gives each clip seen alone (CoRe: against the exemplars'
clip at the same place; TSA, whose PSNet reads a fixed number of clips, has none; CoFInAl/GDLT:
the clip's features alone in the padded sequence). A video that cannot be read gets a one-line
error and the others are still scored. CoRe and TSA compare with training exemplars chosen as
in evaluation, by a permutation seeded by the sample id, here the video's file or folder name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aqa_jax.data.frames import FrameError, encode_video_frames, iter_video, resize_short_side

SHORT_SIDE = 256
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# Frames outside these bounds are refused before they are decoded or resized: resizing to short
# side 256 scales the long side by 256 / short side, so a 1-pixel-high image of a few hundred
# bytes would otherwise become gigabytes (issue 17 item 8).
MIN_SIDE = 16
MAX_ASPECT = 8.0
MAX_PIXELS = 40_000_000  # 8K UHD is 33 Mpixel


def check_frame_size(width: int, height: int, source: str) -> None:
    """Raises :class:`FrameError` naming ``source`` when a frame is smaller than
    :data:`MIN_SIDE`, longer than :data:`MAX_ASPECT` times its short side, or larger than
    :data:`MAX_PIXELS`."""
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE or long > MAX_ASPECT * short or width * height > MAX_PIXELS:
        raise FrameError(
            f"{source}: a {width}x{height} frame is outside what predict reads (short side >= "
            f"{MIN_SIDE}, aspect ratio <= {MAX_ASPECT:g}, <= {MAX_PIXELS // 1_000_000} Mpixel)")


def _image_size(raw: bytes, source: str) -> None:
    """Checks an image file's size from its header alone (PIL reads no pixels here)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return  # left to the decoder, whose failure names the file
    check_frame_size(width, height, source)


def read_video_record(path: str | Path, labels: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A raw video or frame folder as a dataset-like record (see module docstring); frames of
    an implausible size are refused (:func:`check_frame_size`), as is a video whose decoding
    stops short of its container's frame count (a truncated file)."""
    import cv2

    from aqa_jax.data.bad_input import check_frame_count

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FrameError(f"{path}: a frame folder needs {'/'.join(IMAGE_SUFFIXES)} images")
        frames = []
        for f in files:
            raw = f.read_bytes()
            _image_size(raw, str(f))
            image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise FrameError(f"{f}: not a readable image")
            check_frame_size(image.shape[1], image.shape[0], str(f))
            if f.suffix.lower() in (".jpg", ".jpeg") and min(image.shape[:2]) <= SHORT_SIDE:
                frames.append(raw)  # the stored bytes, exactly as a builder keeps them
            else:  # shrunk to short side 256 when larger, as a video file's frames are
                frames.extend(encode_video_frames(_shrink([image[..., ::-1]], str(f)), None, 95))
    else:
        frames = encode_video_frames(_shrink(iter_video(path), str(path)), None, 95)
        try:
            check_frame_count(len(frames), path)
        except ValueError as err:
            raise FrameError(str(err)) from None
    record = {"id": path.name, "frames": frames, "num_frames": len(frames), "score": np.float32(np.nan)}
    record.update(labels or {})
    return record


def _shrink(frames, source: str):
    for frame in frames:
        check_frame_size(frame.shape[1], frame.shape[0], source)
        yield resize_short_side(frame, SHORT_SIDE) if min(frame.shape[:2]) > SHORT_SIDE else frame


class Predictor:
    """A run's network and checkpoint, ready to score records (see module docstring)."""

    def __init__(self, workdir: str | Path, *, step: int | None = None, data_dir: str | None = None):
        import jax

        from aqa_jax.experiment import Experiment, load_run_config

        config = load_run_config(workdir)
        if config.get("method") == "vspp":
            raise ValueError(
                f"{workdir} is a PECoP pretraining run (method vspp): it predicts playback speed "
                "and segment order, not a score; predict with a run fine-tuned from it, e.g. "
                f"configs/usdl.py:init=pecop,pretrained={workdir}")
        if data_dir:
            config.data.data_dir = data_dir
        config.precompute_features = False  # raw videos go through the whole network
        if config.get("clips", {}).get("layout") == "window":
            config.clips.layout = "uniform"
        self.config = config
        # the saved config holds what preparing computed; only exemplars need the training split
        self.experiment = Experiment.from_config(config, workdir, prepare=False)
        self.method = self.experiment.method
        if self.method.samples_from_train_split:  # CoRe/TSA score against training exemplars
            self._prepare(self.experiment)
        self.model = self.experiment.model
        self.step = self.experiment.checkpoint_step(step)
        self.variables = self.experiment.restore_variables(self.step)  # whole arrays on this machine
        self.sampler = self.method.sampler(False)
        # the sampler's uint8 clips normalised on device, as the run's predict step does
        self.apply = jax.jit(lambda v, batch: self.model.apply(v, self.method.normalize_inputs(batch),
                                                               train=False))
        self.per_clip = self.config.method != "tsa"
        self.extractor = self._feature_extractor(config) if self.method.video_input == "features" else None

    @staticmethod
    def _prepare(experiment) -> None:
        d = experiment.config.data
        try:
            experiment.prepare()
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{experiment.config.method} scores a video against exemplars from its training split "
                f"({d.name}/{d.get('config')}:{d.train_split}), which is not built here: {err}") from None

    @staticmethod
    def _feature_extractor(config):
        """The I3D that made the run's training features, as ``extract-features`` recorded it."""
        from aqa_jax.features import ExtractorSettings, FeatureExtractor

        d = config.data
        settings = d.get("extractor")
        if not settings:
            raise ValueError(
                f"this {config.method} run trained on {d.name}/{d.get('config')} features whose "
                "extractor is not recorded (released features, or a folder extracted before "
                "extractor.json existed), so a raw video cannot be given the same features; "
                "extract them with `aqa-jax extract-features`, build clip_features and train "
                f"with configs/{config.method}.py:dataset=features,folder=DIR")
        return FeatureExtractor(ExtractorSettings.from_dict(settings.to_dict(), "config.data.extractor"))

    def _feature_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A video record as a clip-features record (``features``, ``num_clips``)."""
        features = self.extractor(record)
        return {**{k: v for k, v in record.items() if k not in ("frames", "num_frames")},
                "features": features, "num_clips": len(features)}

    def _run(self, example: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(per-sample columns, network outputs) of one example: one forward pass."""
        import jax

        batch = {k: np.asarray(v)[None] for k, v in example.items() if k not in self.method.host_keys}
        outputs = self.apply(self.variables, batch)
        columns = self.method.per_sample(jax.device_get(self.method.predict(outputs, batch)))
        return columns, jax.device_get(outputs)

    def score(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The score of one record, its uncertainty and per-clip scores."""
        record = {**self.method.absent_target_values(), **record}
        missing = [k for k in self.method.label_keys if k not in record]
        if missing:
            raise ValueError(f"this {self.config.method} run needs {', '.join(missing)} for each "
                             f"video (pass --label {missing[0]}=VALUE)")
        num_frames = int(record["num_frames"])
        sampler = self.sampler
        if self.extractor is not None:
            record = self._feature_record(record)
            if record["num_clips"] > sampler.max_clips:  # padded and masked: same result
                sampler = dataclasses.replace(sampler, max_clips=1 << (record["num_clips"] - 1).bit_length())
        example = sampler(record, None)
        columns, outputs = self._run(example)
        if "score_pred" not in columns:
            raise ValueError(f"this {self.config.method} run predicts no score "
                             f"({', '.join(sorted(columns))}); predict with a scoring run")
        out: dict[str, Any] = {"video": str(record["id"]), "score": float(columns["score_pred"][0]),
                               "num_frames": num_frames}
        for key in ("score_std", "exemplar_spread", "coarse_score"):
            if key in columns:
                out[key] = float(columns[key][0])
        if "grade" in columns:  # CoFInAl / GDLT
            out["grade"] = int(columns["grade"][0])
            grades = sum(k.startswith("grade_prob_") for k in columns)
            out["grade_probabilities"] = [float(columns[f"grade_prob_{i}"][0]) for i in range(grades)]
        if "subgrade" in columns:
            out["subgrade"] = int(columns["subgrade"][0])
        if self.config.method in ("usdl", "musdl"):
            out["distribution"] = self._histogram(outputs["logits"][0, 0])
        clips = self._clips(example)
        if self.per_clip and clips > 1:
            out["per_clip"] = [self._clip_score(example, j) for j in range(clips)]
        return out

    def _clips(self, example: Mapping[str, Any]) -> int:
        """How many clips the example holds (0: a layout without separate clips)."""
        if "mask" in example:  # clip features, padded
            return int(np.sum(example["mask"]))
        return len(example["clip"]) if np.ndim(example["clip"]) >= 5 else 0

    def _clip_score(self, example: Mapping[str, Any], j: int) -> float:
        if "mask" in example:  # clip j alone, at the front of the padded sequence
            features = np.zeros_like(example["features"])
            features[0] = example["features"][j]
            alone = dict(example, features=features, mask=np.arange(len(features)) < 1)
        else:
            alone = dict(example, clip=example["clip"][j : j + 1])
        if "exemplar_clip" in example:  # compared with the exemplars' clip at the same place
            alone["exemplar_clip"] = example["exemplar_clip"][:, j : j + 1]
        return float(self._run(alone)[0]["score_pred"][0])

    def _histogram(self, logits: np.ndarray) -> dict[str, list[float]]:
        """USDL/MUSDL: the predicted distribution over score bins (first judge's for MUSDL)."""
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        u = self.config.usdl
        bins = u.score_min + (u.score_max - u.score_min) / (u.num_bins - 1) * np.arange(u.num_bins)
        return {"bins": bins.round(6).tolist(), "probability": probs.round(6).tolist()}


def plot_prediction(result: Mapping[str, Any], out: str | Path) -> Path:
    """The score distribution (USDL) or grade probabilities (CoFInAl, GDLT) and the per-clip
    scores of one video, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("distribution", "grade_probabilities", "per_clip") if p in result]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.6 * max(1, len(panels)), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "distribution":
            d = result["distribution"]
            width = (d["bins"][1] - d["bins"][0]) if len(d["bins"]) > 1 else 1.0
            ax.bar(d["bins"], d["probability"], width=0.9 * width)
            ax.axvline(result["score"], color="r", label=f"score {result['score']:.2f}")
            ax.set_xlabel("score")
            ax.set_ylabel("probability")
            ax.set_title("predicted score distribution")
        elif panel == "grade_probabilities":
            probs = result["grade_probabilities"]
            bars = ax.bar(range(len(probs)), probs, width=0.7)
            bars[result["grade"]].set_color("tab:red")
            bars[result["grade"]].set_label(f"grade {result['grade']}")
            ax.set_xticks(range(len(probs)))
            ax.set_xlabel("grade")
            ax.set_ylabel("probability")
            ax.set_title("grade probabilities" + (f" (sub-grade {result['subgrade']})"
                                                  if "subgrade" in result else ""))
        else:
            clips = range(1, len(result["per_clip"]) + 1)
            ax.plot(clips, result["per_clip"], "o-")
            ax.set_xticks(list(clips))
            ax.axhline(result["score"], color="r", ls="--", label=f"video {result['score']:.2f}")
            ax.set_xlabel("clip")
            ax.set_ylabel("score of the clip alone")
            ax.set_title("per-clip scores")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if not panels:
        axes[0][0].text(0.5, 0.5, f"score {result['score']:.3f}", ha="center", va="center")
        axes[0][0].axis("off")
    fig.suptitle(result["video"], fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def predict_videos(workdir: str | Path, videos: Sequence[str | Path], *, step: int | None = None,
                   labels: Mapping[str, Any] | None = None, data_dir: str | None = None,
                   plot_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Scores every video; an unreadable one gives ``{"video", "error"}`` instead."""
    import cv2

    predictor = Predictor(workdir, step=step, data_dir=data_dir)
    results = []
    names = plot_names(videos)
    for video in videos:
        try:
            result = predictor.score(read_video_record(video, labels))
        except (FrameError, ValueError, OSError, cv2.error) as err:
            lines = str(err).strip().splitlines() or [type(err).__name__]
            results.append({"video": str(video), "error": lines[0] if not isinstance(err, cv2.error)
                            else f"OpenCV cannot process it ({' '.join(' '.join(lines).split())})"})
            continue
        result["video"] = str(video)
        if plot_dir is not None:
            Path(plot_dir).mkdir(parents=True, exist_ok=True)
            result["plot"] = str(plot_prediction(result, Path(plot_dir) / names[str(video)]))
        results.append(result)
    return results


def plot_names(videos: Sequence[str | Path]) -> dict[str, str]:
    """A distinct PNG name per video: ``<file name>.png``, and for videos that share a file
    name (``a/clip.mp4``, ``b/clip.mp4``) the shortest tail of their paths that tells them apart,
    joined by ``__`` (``a__clip.mp4.png``, ``b__clip.mp4.png``)."""
    paths = {str(v): Path(v).resolve().parts for v in videos}
    names: dict[str, str] = {}
    for video, parts in paths.items():
        depth = 1
        while depth < len(parts) and any(
                other != video and o[-depth:] == parts[-depth:] for other, o in paths.items()):
            depth += 1
        names[video] = "__".join(p.strip("/") or "root" for p in parts[-depth:]) + ".png"
    return names


def format_result(result: Mapping[str, Any]) -> str:
    """One human-readable block per video."""
    if "error" in result:
        return f"{result['video']}: error: {result['error']}"
    lines = [f"{result['video']}: score {result['score']:.3f}"]
    if "score_std" in result:
        lines.append(f"  distribution: mean ± std {_mean(result):.3f} ± {result['score_std']:.3f}")
    if "exemplar_spread" in result:
        lines.append(f"  spread over exemplars (std): {result['exemplar_spread']:.3f}")
    if "grade" in result:
        probs = result["grade_probabilities"]
        lines.append(f"  grade {result['grade']} of 0-{len(probs) - 1} (probabilities "
                     + " ".join(f"{p:.2f}" for p in probs) + ")")
    if "subgrade" in result:
        lines.append(f"  sub-grade {result['subgrade']} of 0-99 (coarse score "
                     f"{result['coarse_score']:.3f}, refined by the sub-grade to {result['score']:.3f})")
    if "per_clip" in result:
        lines.append("  per clip: " + " ".join(f"{v:.2f}" for v in result["per_clip"]))
    if "plot" in result:
        lines.append(f"  plot: {result['plot']}")
    return "\n".join(lines)


def _mean(result: Mapping[str, Any]) -> float:
    d = result.get("distribution")
    if not d:
        return math.nan
    return float(np.dot(d["bins"], d["probability"]))


def to_json(results: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(results), indent=2)
