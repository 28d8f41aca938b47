"""Training batches put on the devices ahead of the step that consumes them.

The loop dispatches a step and returns at once (JAX's asynchronous dispatch), so while the
device computes step ``s`` the host already pulls batch ``s + 1`` from the input pipeline and
starts its transfer (big_vision's ``prefetch_iterator``, flax's ``prefetch_to_device``). Each
prefetched batch carries the input iterator's state *after* it, so a checkpoint of step ``s``
stores where the stream stood after the batches the state has seen — not after the ones
already prefetched — and a resumed run reads the same batches as an uninterrupted one.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
from typing import Any, Callable, Iterator


@dataclasses.dataclass(frozen=True)
class IteratorState:
    """A frozen copy of a grain iterator's state, saved by ``grain.checkpoint.CheckpointSave``
    as the live iterator's would be (its JSON); restoring goes to the live iterator."""

    state: Any

    def get_state(self) -> bytes:
        return json.dumps(self.state, indent=4).encode()


@dataclasses.dataclass(frozen=True)
class Prefetched:
    """One batch ready for a step: its device fields (global arrays, transfer under way), its
    host fields (sample ids…), and the input iterator's state after it."""

    device: Any
    host: dict[str, Any]
    iterator_state: IteratorState


class DevicePrefetch:
    """An iterator of :class:`Prefetched` batches, ``size`` of them pulled and put ahead.

    Args:
      pull: the next host batch (e.g. ``k`` micro-batches stacked).
      put: host batch → ``(device fields as global arrays, host fields)``; called as soon as a
        batch is pulled, so its transfer overlaps the running step.
      state: the input iterator's current state (``grain``'s ``get_state``).
      size: batches held ahead (0: pull and put only when asked).
    """

    def __init__(self, pull: Callable[[], Any], put: Callable[[Any], tuple[Any, dict[str, Any]]],
                 state: Callable[[], Any], size: int = 2):
        self._pull, self._put, self._state = pull, put, state
        self._size = max(int(size), 0)
        self._queue: collections.deque[Prefetched] = collections.deque()

    def _fetch_one(self) -> None:
        batch = self._pull()
        device, host = self._put(batch)
        self._queue.append(Prefetched(device, host, IteratorState(copy.deepcopy(self._state()))))

    def __iter__(self) -> Iterator[Prefetched]:
        return self

    def __next__(self) -> Prefetched:
        try:
            while len(self._queue) <= self._size:  # the batch to return and ``size`` behind it
                self._fetch_one()
        except StopIteration:  # a finite stream: the batches already held are still served
            if not self._queue:
                raise
        return self._queue.popleft()
