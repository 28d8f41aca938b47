"""Exemplar pools and the pair sampler of the contrastive-regression methods (CoRe, TSA).

A pool holds the **training** split's samples grouped by a key (MTL-AQA: ``difficulty``;
FineDiving: ``action_type``, "w/ DN"; none: every training sample). As CoRe's ``MTLPair.py``
(and FineDiving's ``FineDiving_Pair.py``) choose them:

- **training** draws one exemplar from the query's group, the query itself excluded
  (``if len(file_list) > 1: file_list.pop(...)``): a query **alone in its group is paired with
  itself** (MTL-AQA's training split has one, the DD 1.5 dive (7, 7));
- **evaluation** uses the first ``M`` (``voter_number`` = 10) of a permutation of the group
  (``train_file_list[:voter_number]``): a group with fewer than ``M`` members gives **all of
  them and no more**, and the prediction is the mean over the exemplars that exist
  (``tools/helper.py`` divides by ``len(video_2_list)``). Batches need a fixed ``M``, so
  :class:`PairSampler` pads with copies of the first exemplar and gives ``exemplar_mask``
  (1 for a real exemplar, 0 for padding) for the methods' masked means.

The evaluation permutation is seeded by the query's id, so every run and every process scores
a sample against the same exemplars (the official code shuffles the group with Python's global
``random`` state, so its choice depends on the evaluation order).

:func:`annotation_value` gives back the float64 annotation a float32-stored score or
difficulty came from (the official labels are float64 Python numbers).
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from aqa_jax.data.pipeline import FrameClipSampler, Record, annotation_value  # noqa: F401 (re-exported)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _group_value(record: Mapping[str, Any], key: str | None) -> Any:
    if not key:
        return None
    value = np.asarray(record[key])
    if value.dtype.kind in "SUO":
        return _text(value.item() if value.ndim == 0 else value)
    return round(float(value), 6)  # difficulties as floats: 3.0 and 3.0000001 are one group


class ExemplarPool:
    """The training samples, their scores and their group (see module docstring)."""

    def __init__(self, source: Sequence[Record], group_key: str | None = None,
                 label_keys: Sequence[str] = ()):
        self.source = source
        self.group_key = group_key or None
        self.ids: list[str] = []
        self.groups: list[Any] = []
        self.labels: dict[str, list[Any]] = {k: [] for k in ("score", *label_keys)}
        by_group: dict[Any, list[int]] = defaultdict(list)
        for index in range(len(source)):
            record = source[index]
            self.ids.append(_text(record["id"]))
            group = _group_value(record, self.group_key)
            self.groups.append(group)
            by_group[group].append(index)
            for key in self.labels:
                self.labels[key].append(np.asarray(record[key]))
        self.by_group = dict(by_group)
        self._warned: set[Any] = set()

    def __len__(self) -> int:
        return len(self.ids)

    def candidates(self, record: Mapping[str, Any]) -> list[int]:
        """Training indices in ``record``'s group, the record itself excluded unless it is the
        group's only member (then ``[itself]``, as the official ``len(file_list) > 1`` rule)."""
        sample = _text(record["id"])
        group = _group_value(record, self.group_key)
        members = self.by_group.get(group)
        if members is None:
            if group not in self._warned:
                self._warned.add(group)
                logging.warning("no training sample has %s=%r (sample %s): using every training "
                                "sample as exemplar candidate", self.group_key, group, sample)
            members = range(len(self.ids))
        out = [i for i in members if self.ids[i] != sample]
        return out or list(members)  # alone in its group: paired with itself (MTLPair.py)

    def draw(self, record: Mapping[str, Any], rng: np.random.Generator) -> list[int]:
        """One random training exemplar (training)."""
        candidates = self.candidates(record)
        return [candidates[int(rng.integers(len(candidates)))]]

    def fixed(self, record: Mapping[str, Any], count: int) -> list[int]:
        """The first ``count`` of a permutation of the group seeded by the sample id
        (evaluation): ``min(count, group size)`` exemplars, none repeated."""
        candidates = self.candidates(record)
        seed = zlib.crc32(_text(record["id"]).encode())
        order = np.random.default_rng(seed).permutation(len(candidates))
        return [candidates[int(i)] for i in order[:count]]


@dataclasses.dataclass(frozen=True)
class PairSampler:
    """A query example plus its exemplars: ``exemplar_<field>`` (M, ...) for every field the
    clip sampler gives but ``id`` (``clip``, ``score``, labels, TSA's ``transitions``), and
    ``exemplar_mask`` (M,) float32; M = 1 in training, ``num_exemplars`` in evaluation, where
    a group smaller than that is padded with copies of its first exemplar, masked 0."""

    clips: FrameClipSampler
    pool: ExemplarPool
    num_exemplars: int = 10

    def __call__(self, record: Record, rng: np.random.Generator | None) -> dict[str, Any]:
        return self.pair(record, rng)[0]

    def pair(self, record: Record, rng: np.random.Generator | None) -> tuple[dict[str, Any], list[int]]:
        """(example, the pool indices of its real exemplars)."""
        example = self.clips(record, rng)
        chosen = self.pool.draw(record, rng) if rng is not None else self.pool.fixed(record, self.num_exemplars)
        exemplars = [self.clips(self.pool.source[i], rng) for i in chosen]
        size = len(chosen) if rng is not None else max(self.num_exemplars, len(chosen))
        padded = exemplars + [exemplars[0]] * (size - len(exemplars))
        for key in exemplars[0]:
            if key != "id":
                example[f"exemplar_{key}"] = np.stack([np.asarray(e[key]) for e in padded])
        example["exemplar_mask"] = (np.arange(size) < len(exemplars)).astype(np.float32)
        return example, chosen


def masked_mean_std(values: Any, mask: Any) -> tuple[Any, Any]:
    """Mean and (population) standard deviation over the last axis of the entries with
    ``mask`` 1 (jax or numpy arrays, shapes (B, M))."""
    count = mask.sum(-1)
    mean = (values * mask).sum(-1) / count
    var = (((values - mean[..., None]) ** 2) * mask).sum(-1) / count
    return mean, var ** 0.5
