"""grain pipelines from TFDS data sources to batches of clips.

training: ``source → repeat → seeded shuffle → repeat epochs → sample a clip, decode only its
frames, transform → this process's part of each global batch → batch → iterator``; evaluation:
``source → per-process shard → deterministic sample → batch``; the iterator's state
(``get_state``/``set_state``) restores the stream exactly, and worker processes are optional.

A *clip sampler* turns one record into one example and is a plain callable
``sampler(record, rng) -> dict`` (``rng`` is ``None`` in evaluation); :class:`VSPPSampler` and
:class:`FrameClipSampler` cover PECoP pretraining and the fixed/uniform layouts of the
fine-tuning methods.

Clips stay **uint8** RGB from decoding to the device: the samplers resize, flip and crop
(:func:`~aqa_jax.data.transforms.transform_pixels`) and the preset's channel order and
normalisation run inside the jitted training and prediction steps
(:meth:`aqa_jax.methods.base.Method.normalize_inputs`), so worker processes and host-to-device
copies move a quarter of float32's bytes.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import zlib
from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np

from aqa_jax.data.frames import decode_frames
from aqa_jax.data.sampling import (
    absolute_linspace_indices,
    sample_pecop_vspp,
    split_clips,
    uniform_indices,
    window_ending_at,
)
from aqa_jax.data.transforms import transform_pixels

Record = Mapping[str, Any]
ClipSampler = Callable[[Record, "np.random.Generator | None"], dict[str, Any]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class VSPPSampler:
    """PECoP pretraining example: a VSPP clip (``(clip_len, crop, crop, 3)`` uint8 RGB) with its
    speed and segment labels.

    Evaluation (``rng=None``) is not defined for a random pretext task; a sampler used there
    draws with a generator seeded from the sample id so it stays deterministic.
    """

    fr: int = 1
    clip_len: int = 32
    max_sr: int = 5
    max_segment: int = 4
    preset: str = "pecop"

    def __call__(self, record: Record, rng: np.random.Generator | None) -> dict[str, Any]:
        sample = _text(record["id"])
        if rng is None:  # crc32, not hash(): str hashes differ between processes
            rng = np.random.default_rng(zlib.crc32(sample.encode()))
        idx, speed, segment = sample_pecop_vspp(
            rng, int(record["num_frames"]), fr=self.fr, max_sr=self.max_sr,
            max_segment=self.max_segment, clip_len=self.clip_len,
        )
        frames = decode_frames(record["frames"], idx, source=sample)
        return {
            "id": sample,
            "clip": transform_pixels(frames, self.preset, rng=rng),
            "speed": np.int32(speed),
            "segment": np.int32(segment),
        }


def annotation_value(value: Any) -> float:
    """The float64 annotation a float32-stored number was made from: the shortest decimal that
    rounds to that float32 (numpy's ``str``), read as float64. Exact for annotations with at
    most 7 significant digits, e.g. every MTL-AQA and FineDiving score and difficulty
    (``tests/test_core.py`` checks all of them)."""
    return float(str(np.float32(value)))


def normalized_score(score: Any, score_norm: Sequence[float]) -> float:
    """CoRe's ``utils/misc.normalize`` in float64: ``((s - lo) / (hi - lo)) * upper`` of the
    recovered annotation ``s`` (:func:`annotation_value`), ``score_norm = (lo, hi, upper)``."""
    lo, hi, upper = (float(v) for v in score_norm)
    return ((annotation_value(score) - lo) / (hi - lo)) * upper


@dataclasses.dataclass(frozen=True)
class FrameClipSampler:
    """Score-regression example: frames chosen by a layout, cut into 16-frame clips.

    Attributes:
      layout: ``uniform`` (``num_frames`` spread over the video; over the absolute frame
        numbers when the record is a trimmed instance with ``start_frame``/``end_frame``, as
        TSA samples FineDiving), ``window`` (the
        ``num_frames`` ending at ``record[end_key]``, shifted by U{-max_shift..max_shift} in
        training), ``first`` (the first ``num_frames``: AQA-7's ``img_00001`` … ``img_00103``,
        ``SevenPair.py``), or ``all`` (every stored frame).
      num_frames: frames per example (103 CoRe/MUSDL on MTL-AQA, 96 TSA, 160 JIGSAWS).
      clip_starts: official starts (a key of ``sampling.CLIP_STARTS`` or offsets); ``None``
        returns the frames as one clip.
      preset: transform preset name.
      frame_step: keep every ``frame_step``-th frame of the layout's frames (fractional steps
        floor each position: MSCADC's 16 frames at 6.5 over MTL-AQA's 103 are
        ``floor(6.5 k)``); 1 keeps them all.
      label_keys: record fields copied into the example (e.g. ``judge_scores``).
      score_norm: ``(lo, hi, upper)``: the example's ``score`` is the record's normalised by
        :func:`normalized_score` (CoRe's per-class AQA-7 normalisation to [0, 100]), rounded to
        float32, and ``raw_score`` keeps the stored one; empty: the stored score.
    """

    layout: str = "uniform"
    num_frames: int = 32
    clip_starts: str | Sequence[int] | None = None
    clip_len: int = 16
    preset: str = "deepmind"
    max_shift: int = 0
    end_key: str = "end_frame"
    label_keys: tuple[str, ...] = ()
    frame_step: float = 1.0
    score_norm: tuple[float, ...] = ()

    def frame_indices(self, record: Record, rng: np.random.Generator | None) -> np.ndarray:
        idx = self._layout_indices(record, rng)
        if self.frame_step == 1:
            return idx
        return idx[np.floor(np.arange(0, len(idx), self.frame_step)).astype(np.int64)]

    def _layout_indices(self, record: Record, rng: np.random.Generator | None) -> np.ndarray:
        total = int(record["num_frames"])
        if self.layout == "uniform":
            if "start_frame" in record and "end_frame" in record:  # a trimmed instance (FineDiving)
                start, end = int(record["start_frame"]), int(record["end_frame"])
                if end - start + 1 == total:
                    return absolute_linspace_indices(start, end, self.num_frames)
            return uniform_indices(total, self.num_frames)
        if self.layout == "window":
            shift = int(rng.integers(-self.max_shift, self.max_shift + 1)) if rng else 0
            return window_ending_at(int(record[self.end_key]), self.num_frames, shift,
                                    num_frames=total)
        if self.layout == "all":
            return np.arange(total)
        if self.layout == "first":
            if total < self.num_frames:
                raise ValueError(f"sample {_text(record['id'])} has {total} frames; layout 'first' "
                                 f"reads the first {self.num_frames}: rebuild it with all its frames")
            return np.arange(self.num_frames)
        raise ValueError(f"unknown frame layout {self.layout!r}: use uniform, window, first or all")

    def __call__(self, record: Record, rng: np.random.Generator | None) -> dict[str, Any]:
        return self.example(record, self.frame_indices(record, rng), rng)

    def example(self, record: Record, idx: np.ndarray, rng: np.random.Generator | None) -> dict[str, Any]:
        """The example of the frames at ``idx``: decoded, resized/flipped/cropped (uint8 RGB),
        cut into clips."""
        sample = _text(record["id"])
        frames = decode_frames(record["frames"], idx, source=sample)
        clip = transform_pixels(frames, self.preset, rng=rng)
        if self.clip_starts is not None:
            clip = clip[split_clips(np.arange(len(idx)), self.clip_starts, self.clip_len)]
        example = {"id": sample, "clip": clip, "score": np.float32(record["score"])}
        if self.score_norm:
            example["raw_score"] = example["score"]
            example["score"] = np.float32(normalized_score(record["score"], self.score_norm))
        for key in self.label_keys:
            example[key] = np.asarray(record[key])
        return example


# Nice value of the threads that decode and sample training clips (``data.reader_nice``).
READER_NICE = 19


def lower_thread_priority(nice: int) -> None:
    """Sets the calling thread's nice value to ``nice`` (Linux: nice is per thread), unless it
    is the main thread or already at least that nice. Unprivileged processes cannot raise it
    back, so only reader threads, which do nothing else, call this."""
    if nice <= 0 or threading.current_thread() is threading.main_thread():
        return
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # not permitted or not Linux: priority stays as it is
        pass


class _Sample(grain.transforms.RandomMap):
    """The training sampler, run in grain's reader threads at ``nice``: on a CPU host the
    training step's threads then keep the cores, and decoding fills their idle time."""

    def __init__(self, sampler: ClipSampler, nice: int = 0):
        self.sampler = sampler
        self.nice = nice

    def random_map(self, record: Record, rng: np.random.Generator) -> dict[str, Any]:
        lower_thread_priority(self.nice)
        return self.sampler(record, rng)


class _SampleEval(grain.transforms.Map):
    def __init__(self, sampler: ClipSampler):
        self.sampler = sampler

    def map(self, record: Record) -> dict[str, Any]:
        return self.sampler(record, None)


class _SampleEvalDraws(grain.transforms.MapWithIndex):
    """Evaluation with several draws per record: draw ``d`` of a record uses a generator seeded
    by (d, crc32(id)), the same in every run and on every process."""

    def __init__(self, sampler: ClipSampler, num_records: int):
        self.sampler = sampler
        self.num_records = num_records

    def map_with_index(self, index: int, record: Record) -> dict[str, Any]:
        draw = index // self.num_records
        seed = [draw, zlib.crc32(_text(record["id"]).encode())]
        return self.sampler(record, np.random.default_rng(seed))


class _ProcessSlice(grain.MapDataset):
    """Process ``index``'s share of each global batch of a (shuffled, sampled) global stream:
    elements ``[k*G + index*L, k*G + (index+1)*L)`` of batch ``k`` (``L`` = per-process batch,
    ``G = L * count``)."""

    def __init__(self, parent: grain.MapDataset, local_batch: int, count: int, index: int):
        super().__init__(parent)
        self._local, self._global, self._index = local_batch, local_batch * count, index
        self._length = len(parent) // self._global * local_batch

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        batch, offset = divmod(index, self._local)
        return self._parent[batch * self._global + self._index * self._local + offset]

    def __str__(self) -> str:
        return f"_ProcessSlice(local={self._local}, global={self._global}, index={self._index})"


def make_dataset(
    source: Sequence[Record],
    sampler: ClipSampler,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    num_epochs: int | None = None,
    repeat: int = 1,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool | None = None,
    worker_count: int = 0,
    reader_nice: int = READER_NICE,
) -> grain.IterDataset:
    """The batched iterable dataset; ``iter()`` it, and keep its iterator's state.

    Args:
      source: a ``tfds.data_source`` split (or any random-access sequence of records).
      sampler: record → example (see module docstring).
      batch_size: examples per batch on this process.
      train: shuffle (seeded), repeat ``num_epochs`` times (None: forever), random sampling;
        otherwise one ordered pass with deterministic sampling.
      repeat: in training, each record appears this many times per epoch (PECoP repeats its
        training list x20 inside the dataset, so one "epoch" is 20 passes, each clip drawn anew).
        In evaluation, ``repeat > 1`` evaluates that many seeded random draws per record (the
        VSPP pretext task has no canonical clip); 1 gives the deterministic canonical clip.
      shard_index, shard_count: this process and the number of processes (default: JAX's).
        Training: every process follows the same seeded global stream and takes its
        ``batch_size`` slice of each global batch (``batch_size * shard_count`` examples), so
        the global batches, clips included, are the same for any number of processes.
        Evaluation: each process reads every ``shard_count``-th record.
      drop_remainder: default True in training, False in evaluation.
      worker_count: grain worker processes for decoding (0 = in-process).
      reader_nice: nice value (0-19) of the threads that decode and sample training clips.
        On a CPU host they share the cores with the training step, whose threads split each
        op evenly and so wait for whichever core the reader took; niced, the readers use the
        step's idle time instead (PECoP at 4x32x224x224 on 2 cores: 7% more clips/s,
        docs/PERFORMANCE.md). 0 leaves them at the process's priority.
    """
    if shard_index is None or shard_count is None:
        import jax

        shard_index, shard_count = jax.process_index(), jax.process_count()
    if train:
        # One global stream (same seed everywhere), each process taking its part of every
        # global batch: the global batches do not depend on the number of processes.
        ds = grain.MapDataset.source(source)
        if len(ds) == 0:
            raise ValueError("the training source has no records")
        if repeat > 1:
            ds = ds.repeat(repeat)
        ds = ds.shuffle(seed=seed).repeat(num_epochs)
        ds = ds.random_map(_Sample(sampler, reader_nice), seed=seed)
        if shard_count > 1:
            ds = _ProcessSlice(ds, batch_size, shard_count, shard_index)
    else:
        ds = grain.MapDataset.source(source)[shard_index::shard_count]
        if len(ds) == 0:
            raise ValueError(f"shard {shard_index}/{shard_count} of the source has no records")
        if repeat > 1:
            ds = ds.repeat(repeat).map_with_index(_SampleEvalDraws(sampler, len(ds)))
        else:
            ds = ds.map(_SampleEval(sampler))
    if drop_remainder is None:
        drop_remainder = train
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    # grain's default ReadOptions read 500 elements (here: batches) ahead with 16 threads; when
    # the step is slower than decoding (any CPU run) that buffer fills with GBs of clips.
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=4))
    if worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain workers read absl flags (pytest, notebooks)
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(num_workers=worker_count))
    return it
