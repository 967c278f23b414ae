"""The executor interface: where a batch's chunks run.

A batch (:class:`~stashworks.MultiProcessStash`) knows nothing of
processes or clusters.  It hands an :class:`Executor` a :class:`Job` once,
submits :class:`Chunk` s of keys, and reads back :class:`ChunkReport` s
(and, from executors that can, per-item :class:`ItemEvent` s) as they
complete.  The local process pool, Dask and the in-process serial executor
each implement this interface.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Union

if TYPE_CHECKING:
    from .job import Job

__all__ = ['Chunk', 'ChunkReport', 'ItemBatch', 'ItemEvent', 'Report', 'Executor', 'ExecutorError']

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """A unit of work sent to one worker: some keys, processed in order."""

    id: int
    keys: tuple[str, ...]
    #: how many times these keys were already sent to a worker that died
    attempt: int = 0
    #: the work units behind ``keys``, in the same order, when they are not
    #: the keys themselves (the subclass form of
    #: :class:`~stashworks.MultiProcessStash`); ``None`` otherwise
    payload: Optional[tuple[object, ...]] = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ItemEvent:
    """One item finished in a worker (sent as it happens, where possible).

    Attributes:
        chunk_id: the chunk the item belongs to.
        key: the item's key.
        ok: ``True`` if the item was written, ``False`` if a failure was
            recorded for it.
    """

    chunk_id: int
    key: str
    ok: bool


@dataclass(frozen=True)
class ItemBatch:
    """Items of one chunk that finished since the last message about it.

    Sent instead of one :class:`ItemEvent` per item by executors whose
    per-message cost would dominate tiny items; a consumer that counts
    need not look at the keys one by one.

    Attributes:
        chunk_id: the chunk the items belong to.
        done: keys written to the delegate.
        failed: keys for which a failure was recorded.
    """

    chunk_id: int
    done: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChunkReport:
    """What became of a chunk.

    Attributes:
        chunk_id: the chunk reported on.
        done: keys written to the delegate.
        failed: keys for which the worker recorded a failure.
        lost: the worker died (or the task was lost) before finishing;
            keys in neither ``done`` nor ``failed`` were not finished.
        reason: why the chunk was lost ("killed by signal 9 (SIGKILL)",
            "exit code 3", a cluster's error text).
        worker: which worker ran it (pid or address), for the record.
    """

    chunk_id: int
    done: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    lost: bool = False
    reason: str = ''
    worker: str = ''
    extra: dict[str, object] = field(default_factory=dict, compare=False)


Report = Union[ItemEvent, ItemBatch, ChunkReport]


class ExecutorError(RuntimeError):
    """The executor itself cannot go on (not a failure of one item)."""


class Executor(abc.ABC):
    """Runs chunks of a :class:`~stashworks.multi.job.Job` somewhere.

    The life cycle is ``start(job, workers)``, any number of
    ``submit(chunk)``, reading :meth:`reports` until every submitted chunk
    has a :class:`ChunkReport`, then :meth:`shutdown`.  An executor is a
    context manager; :meth:`shutdown` may be called more than once.

    Implementations must:

    * report every submitted chunk exactly once with a
      :class:`ChunkReport` (``lost=True`` if its worker died);
    * never hang when a worker dies: a lost chunk is reported, and the
      executor keeps working with a fresh worker;
    * ship the job to each worker once, not once per chunk, where the
      engine allows.
    """

    #: ``True`` if :meth:`reports` yields :class:`ItemEvent` s (or
    #: :class:`ItemBatch` es) as items finish (the progress bar then moves
    #: within a chunk).
    item_events: bool = False

    @abc.abstractmethod
    def start(self, job: 'Job', workers: int) -> None:
        """Prepare ``workers`` workers to run chunks of ``job``."""

    @abc.abstractmethod
    def submit(self, chunk: Chunk) -> None:
        """Queue ``chunk`` to run on some worker."""

    @abc.abstractmethod
    def reports(self, timeout: Optional[float] = None) -> Iterator[Report]:
        """Yield reports as they arrive.

        Yields until no submitted chunk is outstanding; with ``timeout``,
        returns after that many seconds without a report (so the caller
        can submit more work or refresh its status).
        """

    @abc.abstractmethod
    def shutdown(self, cancel: bool = False) -> None:
        """Stop the workers.

        Args:
            cancel: drop queued chunks and stop running ones promptly
                (Ctrl-C) instead of waiting for them to finish.
        """

    def capacity(self) -> Optional[int]:
        """How many chunks the executor can run at once on its own, if it knows.

        A cluster knows its thread count; the batch then reads its
        ``workers`` setting against that number instead of this machine's
        CPUs (``0`` means every cluster thread).  ``None`` (the default)
        leaves the count to this machine's CPUs.
        """
        return None

    @property
    def description(self) -> str:
        """A short human name, such as ``'local pool (2 workers)'``."""
        return type(self).__name__

    def __enter__(self) -> 'Executor':
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.shutdown(cancel=exc is not None)


#: A function that runs one chunk in a worker: given the chunk and a
#: callback for item events, it returns the chunk's report.
ChunkRunner = Callable[[Chunk, Optional[Callable[[ItemEvent], None]]], ChunkReport]
