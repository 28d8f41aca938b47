"""Procedural AQA videos whose quality score is a known function of what an expert would judge.

Each video shows a repetitive movement, like the MDS-UPDRS motor items of PD4T:

- ``finger_tapping``: two fingertips opening and closing;
- ``hand_movement``: a hand (disc) opening and closing;
- ``leg_agility``: a leg (bar) raised and lowered about a hip.

Four generative factors, each a severity in [0, 1], drive the movement, and the ground-truth
score is a fixed weighted sum of them (:data:`FACTOR_WEIGHTS`, scaled to the UPDRS range 0-4):

- ``decrement``: the amplitude shrinks over the video (the sequence effect);
- ``slowing``: the tapping frequency drops;
- ``hesitation``: the movement freezes for a few frames, a few times;
- ``irregularity``: the period of each cycle jitters.

Factors are drawn around one latent severity per subject (as symptoms co-occur), and every
nuisance (position, size, colours, background texture, phase, noise) is random, so a model
must read the movement itself. Everything is deterministic from the seed.

Each video also has a commentary (:func:`caption_tokens`), the stand-in for MTL-AQA's
captions: one phrase per factor naming its level (``no`` / ``mild`` / ``marked``), so a
captioner has to read the same movement properties the score depends on. Its vocabulary is
:data:`CAPTION_VOCAB`, laid out as MTL-AQA's ``vocab.json`` (``<eos>`` = 0, ``<sos>`` = 1).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

TASKS = ("finger_tapping", "hand_movement", "leg_agility")
FACTORS = ("decrement", "slowing", "hesitation", "irregularity")
FACTOR_WEIGHTS = {"decrement": 0.35, "slowing": 0.30, "hesitation": 0.20, "irregularity": 0.15}
MAX_SCORE = 4.0
FACTOR_LEVELS = ("no", "mild", "marked")  # severity < 1/3, < 2/3, else
CAPTION_VOCAB = ("<eos>", "<sos>", "the", "with", "and", *TASKS[0].split("_"), "hand", "movement",
                 "leg", "agility", *FACTOR_LEVELS, *FACTORS)


@dataclasses.dataclass(frozen=True)
class SyntheticVideo:
    """One generated sample: frames (T, H, W, 3) uint8 RGB, its score and factors."""

    frames: np.ndarray
    score: float
    factors: dict[str, float]
    task: str
    subject: int


def quality_score(factors: dict[str, float]) -> float:
    """Ground truth: ``4 * sum(weight_f * severity_f)``, in [0, 4] (higher = more impaired)."""
    return MAX_SCORE * sum(FACTOR_WEIGHTS[f] * factors[f] for f in FACTORS)


def factor_level(severity: float) -> str:
    """The caption word of one factor's severity (thirds of [0, 1])."""
    return FACTOR_LEVELS[min(int(severity * 3), 2)]


def caption_tokens(task: str, factors: dict[str, float]) -> list[str]:
    """``<sos> the finger tapping with mild decrement and no slowing and ... <eos>``."""
    words = ["<sos>", "the", *task.split("_"), "with"]
    for i, f in enumerate(FACTORS):
        words += (["and"] if i else []) + [factor_level(factors[f]), f]
    return words + ["<eos>"]


def draw_factors(rng: np.random.Generator, severity: float) -> dict[str, float]:
    """Factor severities scattered around the subject's latent ``severity``."""
    return {f: float(np.clip(severity + 0.18 * rng.standard_normal(), 0.0, 1.0)) for f in FACTORS}


def movement_trace(
    rng: np.random.Generator,
    factors: dict[str, float],
    num_frames: int,
    *,
    steady: bool = False,
    period: float | None = None,
) -> np.ndarray:
    """Opening of the movement per frame in [0, 1] (0 closed, 1 fully open at full amplitude).

    ``steady``: no hesitations, no per-cycle jitter and no decrement, so tempo and amplitude
    are constant within a video; ``period``: every video's cycle lasts this many frames
    (instead of the ``slowing``-driven 7-20). With both, a clip's only change of tempo is one
    made by resampling it (PECoP's VSPP pretext task; the ``*_vspp`` builder configs).
    """
    base_period = rng.uniform(7.0, 9.0) * (1.0 + 1.2 * factors["slowing"])
    if period is not None:
        base_period = float(period)
    pauses = np.zeros(num_frames, bool)
    for _ in range(0 if steady else int(round(4 * factors["hesitation"]))):
        start = int(rng.integers(0, max(num_frames - 6, 1)))
        pauses[start : start + int(rng.integers(4, 8))] = True
    phase, cycle_period = rng.uniform(0, 2 * math.pi), base_period
    decrement = 0.0 if steady else factors["decrement"]
    trace = np.empty(num_frames, np.float32)
    for t in range(num_frames):
        if not pauses[t]:
            phase += 2 * math.pi / cycle_period
            if phase >= 2 * math.pi:  # a new cycle: jitter its period (unless steady)
                phase -= 2 * math.pi
                if not steady:
                    jitter = 1.0 + 0.6 * factors["irregularity"] * rng.standard_normal()
                    cycle_period = base_period * float(np.clip(jitter, 0.4, 2.0))
        amplitude = 1.0 - 0.8 * decrement * t / max(num_frames - 1, 1)
        trace[t] = amplitude * 0.5 * (1.0 - math.cos(phase))
    return trace


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    fx, fy = rng.uniform(3, 12, 2)
    base = rng.uniform(0.15, 0.45, 3)
    texture = 0.06 * np.sin(2 * math.pi * fx * xx + rng.uniform(0, 6)) * np.cos(
        2 * math.pi * fy * yy
    )
    return np.clip(base[None, None] + texture[..., None], 0, 1)


def render(
    rng: np.random.Generator, task: str, trace: np.ndarray, size: int
) -> np.ndarray:
    """Draws the movement trace as (T, size, size, 3) uint8 frames."""
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; choose one of {TASKS}")
    background = _background(rng, size)
    color = rng.uniform(0.7, 1.0, 3)
    cx, cy = rng.uniform(0.4, 0.6, 2) * size
    scale = rng.uniform(0.8, 1.1) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.empty((len(trace), size, size, 3), np.uint8)
    for t, opening in enumerate(trace):
        if task == "finger_tapping":
            gap = 0.04 * scale + 0.30 * scale * opening
            mask = np.zeros((size, size), bool)
            for sign in (-1, 1):
                mask |= (xx - cx) ** 2 + (yy - cy - sign * gap / 2) ** 2 < (0.07 * scale) ** 2
        elif task == "hand_movement":
            radius = 0.08 * scale + 0.17 * scale * opening
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        else:  # leg_agility: a bar hanging from the hip, raised by up to 70 degrees
            angle = math.radians(90 - 70 * opening)  # image y points down: 90 = hanging
            dx, dy = xx - (cx - 0.2 * scale), yy - (cy - 0.15 * scale)
            along = dx * math.cos(angle) + dy * math.sin(angle)
            across = -dx * math.sin(angle) + dy * math.cos(angle)
            mask = (np.abs(across) < 0.05 * scale) & (along > 0) & (along < 0.45 * scale)
        frame = background.copy()
        frame[mask] = color
        frame += 0.02 * rng.standard_normal(frame.shape)
        frames[t] = np.clip(frame * 255, 0, 255).astype(np.uint8)
    return frames


TEMPO_PERIODS = (10.0, 20.0)  # frames a cycle at slowing 0 and 1 (tempo videos)


def tempo_period(rng: np.random.Generator, factors: dict[str, float],
                 periods: tuple[float, float] = TEMPO_PERIODS) -> float:
    """The cycle of a ``tempo`` video: from ``periods[0]`` (slowing 0) to ``periods[1]``
    (slowing 1) frames, linearly, times U(0.95, 1.05)."""
    lo, hi = periods
    return (lo + (hi - lo) * factors["slowing"]) * float(rng.uniform(0.95, 1.05))


def tempo_score(factors: dict[str, float]) -> float:
    """Ground truth of a ``tempo`` video: ``4 * slowing``, the one factor it shows."""
    return MAX_SCORE * factors["slowing"]


def generate_video(
    seed: int, task: str, subject: int, severity: float, *, num_frames: int = 64, size: int = 64,
    steady: bool = False, period: float | None = None, tempo: bool = False,
    tempo_periods: tuple[float, float] = TEMPO_PERIODS,
) -> SyntheticVideo:
    """One deterministic sample of ``task`` for a subject with latent ``severity`` in [0, 1]
    (``steady``, ``period``: see :func:`movement_trace`).

    ``tempo``: the quality cue is the tempo alone. The movement is steady within the video
    (no hesitation, jitter or decrement, so a clip's only change of tempo is one VSPP makes),
    its cycle lasts :func:`tempo_period` frames (``tempo_periods``, 10-20 by default, from
    ``slowing``), and the score is :func:`tempo_score`. The PECoP effect benchmark and the
    demo use it.
    """
    rng = np.random.default_rng([seed, TASKS.index(task), subject])
    factors = draw_factors(rng, severity)
    if tempo:
        steady, period = True, tempo_period(rng, factors, tempo_periods)
    trace = movement_trace(rng, factors, num_frames, steady=steady, period=period)
    frames = render(rng, task, trace, size)
    score = tempo_score(factors) if tempo else quality_score(factors)
    return SyntheticVideo(frames, score, factors, task, subject)


def generate_split(
    seed: int,
    task: str,
    split: str,
    *,
    num_subjects: int,
    videos_per_subject: int = 1,
    num_frames: int = 64,
    size: int = 64,
    steady: bool = False,
    period: float | None = None,
    tempo: bool = False,
    tempo_periods: tuple[float, float] = TEMPO_PERIODS,
):
    """Yields the videos of one split; its subjects are disjoint from every other split's (as
    PD4T's). ``unlabelled`` (extra subjects for continual pretraining) and ``validation``
    exist besides ``train`` and ``test``."""
    offset = {"train": 0, "test": 100_000, "validation": 200_000, "unlabelled": 300_000}[split]
    for s in range(num_subjects):
        subject = offset + s
        severity = float(np.random.default_rng([seed, 7, subject]).uniform(0, 1))
        for v in range(videos_per_subject):
            yield generate_video(
                seed, task, subject * 10 + v, severity, num_frames=num_frames, size=size,
                steady=steady, period=period, tempo=tempo, tempo_periods=tempo_periods,
            )
