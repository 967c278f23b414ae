"""What travels between the engine and an executor's workers.

Plain frozen records, with no behaviour: a :class:`Chunk` of work units
goes out, :class:`Progress` messages and one :class:`ChunkReport` per
chunk come back.  Work is made of *units*, each named by a string
identity; a unit yields items stored under their own keys.  Today a unit
yields one item, keyed by the unit's identity, and the records say so
with ``items=None``; a report that lists the item keys of each unit is
already understood by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from ..errors import BatchError

__all__ = ['Chunk', 'ChunkReport', 'ExecutorError', 'ItemBatch', 'ItemEvent', 'Progress', 'Report', 'item_count']


class ExecutorError(BatchError):
    """The executor itself cannot go on (not a failure of one item)."""


@dataclass(frozen=True)
class Chunk:
    """Work units sent to one worker, processed in order.

    Attributes:
        id: the chunk's number in its batch (retries get new numbers).
        units: the identities of its units (today each is also the key
            of the unit's one item).
        attempt: how many times these units were already sent to a
            worker that died.
        payload: the unit objects behind ``units``, in the same order,
            when they are not the identities themselves (the subclass
            form of :class:`~stashworks.MultiProcessStash`); else ``None``.
    """

    id: int
    units: tuple[str, ...]
    attempt: int = 0
    payload: Optional[tuple[object, ...]] = field(default=None, compare=False, repr=False)

    @property
    def keys(self) -> tuple[str, ...]:
        """The unit identities (the name from when a unit was a key)."""
        return self.units


def item_count(done: tuple[str, ...], items: Optional[tuple[tuple[str, ...], ...]]) -> int:
    """How many items the units ``done`` stored (one each when ``items`` is ``None``)."""
    return len(done) if items is None else sum(len(i) for i in items)


@dataclass(frozen=True)
class Progress:
    """Units of one chunk that finished since the last message about it.

    A unit is announced once, only after its items were flushed to the
    store (see :meth:`~stashworks.Stash.flush`).

    Attributes:
        chunk_id: the chunk the units belong to.
        done: units whose items were all stored.
        failed: units for which a failure was recorded.
        items: for each unit of ``done``, the keys of the items it
            stored; ``None`` when each stored exactly one item under its
            own identity.
    """

    chunk_id: int
    done: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    items: Optional[tuple[tuple[str, ...], ...]] = None

    @property
    def item_count(self) -> int:
        """How many items the ``done`` units stored."""
        return item_count(self.done, self.items)


#: The earlier name of :class:`Progress`.
ItemBatch = Progress


@dataclass(frozen=True)
class ItemEvent:
    """One unit finished (a one-unit :class:`Progress`, for executors that send them singly).

    Attributes:
        chunk_id: the chunk the unit belongs to.
        key: the unit's identity.
        ok: ``True`` if its item was stored, ``False`` if a failure was
            recorded for it.
    """

    chunk_id: int
    key: str
    ok: bool


@dataclass(frozen=True)
class ChunkReport:
    """What became of a chunk; exactly one per submitted chunk.

    ``done`` and ``failed`` may repeat units already announced by a
    :class:`Progress` message: the engine counts each unit once, when it
    first hears of it.

    Attributes:
        chunk_id: the chunk reported on.
        done: units whose items were all stored.
        failed: units for which the worker recorded a failure.
        lost: the worker died (or the task was lost) before finishing;
            units in neither ``done`` nor ``failed`` were not finished.
        reason: why the chunk was lost ("killed by signal 9 (SIGKILL)",
            "exit code 3", a cluster's error text).
        worker: which worker ran it (``host:pid``, or a cluster address).
        extra: ``elapsed`` (seconds the chunk took in the worker),
            ``stopped`` (cut short on purpose), ``pid``.
        items: as in :class:`Progress`.
        error_type: the failure recorded for the unit a lost chunk was
            on, once it runs out of retries.
    """

    chunk_id: int
    done: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    lost: bool = False
    reason: str = ''
    worker: str = ''
    extra: dict[str, object] = field(default_factory=dict, compare=False)
    items: Optional[tuple[tuple[str, ...], ...]] = None
    error_type: str = 'WorkerDied'


#: Anything an executor's :meth:`~stashworks.multi.Executor.reports` yields.
Report = Union[Progress, ItemEvent, ChunkReport]
