"""Exemplar pools and the pair sampler of the contrastive-regression methods (CoRe, TSA).

A pool holds the **training** split's samples grouped by a key (MTL-AQA: ``difficulty``;
FineDiving: ``action_type``, "w/ DN"; none: every training sample). Training draws one
exemplar from the query's group, never the query itself (CoRe ``MTLPair``); evaluation uses
``M`` exemplars (``voter_number`` = 10) taken from a permutation of the group seeded by the
query's id, so every run and every process scores a sample against the same exemplars (the
official code shuffles with Python's global ``random`` state, so its choice depends on the
evaluation order).
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from aqa_jax.data.pipeline import FrameClipSampler, Record


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
        """Training indices in ``record``'s group, the record itself excluded."""
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
        if not out:
            raise ValueError(f"sample {sample} has no exemplar candidate in the training split")
        return out

    def draw(self, record: Mapping[str, Any], rng: np.random.Generator) -> list[int]:
        """One random training exemplar (training)."""
        candidates = self.candidates(record)
        return [candidates[int(rng.integers(len(candidates)))]]

    def fixed(self, record: Mapping[str, Any], count: int) -> list[int]:
        """``count`` exemplars from a permutation seeded by the sample id (evaluation); a group
        smaller than ``count`` is cycled."""
        candidates = self.candidates(record)
        seed = zlib.crc32(_text(record["id"]).encode())
        order = np.random.default_rng(seed).permutation(len(candidates))
        return [candidates[int(order[i % len(order)])] for i in range(count)]


@dataclasses.dataclass(frozen=True)
class PairSampler:
    """A query example plus its exemplars: ``exemplar_<field>`` (M, ...) for every field the
    clip sampler gives but ``id`` (``clip``, ``score``, labels, TSA's ``transitions``); M = 1
    in training, ``num_exemplars`` in evaluation."""

    clips: FrameClipSampler
    pool: ExemplarPool
    num_exemplars: int = 10

    def __call__(self, record: Record, rng: np.random.Generator | None) -> dict[str, Any]:
        example = self.clips(record, rng)
        chosen = self.pool.draw(record, rng) if rng is not None else self.pool.fixed(record, self.num_exemplars)
        exemplars = [self.clips(self.pool.source[i], rng) for i in chosen]
        for key in exemplars[0]:
            if key != "id":
                example[f"exemplar_{key}"] = np.stack([np.asarray(e[key]) for e in exemplars])
        return example
