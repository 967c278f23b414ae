"""The executor interface: where a batch's chunks run.

The engine hands an :class:`Executor` a :class:`~stashworks.multi.job.Job`
once (:meth:`~Executor.start`, which answers how many workers it will
really use), submits chunks while :meth:`~Executor.free_slots` says it can
take more, and reads back reports.  The local process pool, Dask and the
in-process serial executor implement it; tests/multi/test_executor_contract.py
holds every one of them to it.
"""

from __future__ import annotations

import abc
from typing import Iterator, Optional, Union

from .job import Job

# The wire types keep their old import path here too.
from .wire import Chunk as Chunk
from .wire import ChunkReport as ChunkReport
from .wire import ExecutorError as ExecutorError
from .wire import ItemBatch as ItemBatch
from .wire import ItemEvent as ItemEvent
from .wire import Progress as Progress
from .wire import Report

__all__ = ['Executor']


class Executor(abc.ABC):
    """Runs chunks of a :class:`~stashworks.multi.job.Job` somewhere.

    The life cycle is :meth:`start`, then :meth:`submit` whenever
    :meth:`free_slots` is above zero, reading :meth:`reports` until every
    submitted chunk has its :class:`~stashworks.multi.wire.ChunkReport`,
    then :meth:`shutdown`.  An executor is a context manager;
    :meth:`shutdown` may be called more than once.

    Implementations must:

    * report every submitted chunk exactly once with a ``ChunkReport``
      (``lost=True`` if its worker died or its task was lost);
    * announce each settled unit at most once in a
      :class:`~stashworks.multi.wire.Progress` (a chunk's report may list
      it again), and only after its items were flushed;
    * never hang when a worker dies: the lost chunk is reported and a
      fresh worker takes its place;
    * ship the job to each worker once, not once per chunk.
    """

    #: ``True`` if chunks run in the calling process (an in-memory
    #: delegate then works).
    in_process: bool = False

    @abc.abstractmethod
    def start(self, job: Job, workers: Union[int, float] = 0, limit: Optional[int] = None) -> int:
        """Prepare workers to run chunks of ``job``.

        Args:
            job: what every chunk runs.
            workers: the batch's ``workers`` setting (``0`` for all this
                executor has, ``n``, ``-n`` all but ``n - 1``, a fraction), read
                against the executor's own resources (CPUs, a cluster's
                threads).
            limit: never more workers than this (the chunks there will be).

        Returns:
            How many workers it will really use.
        """

    @abc.abstractmethod
    def submit(self, chunk: Chunk) -> None:
        """Queue ``chunk`` to run on some worker."""

    def free_slots(self) -> int:
        """How many more chunks it can take now.

        Asked before every submission: the one throttle of a batch.  A
        cluster that grows answers more, one that shrinks fewer.
        """
        raise NotImplementedError(f'{type(self).__name__} does not say how many chunks it can take (free_slots)')

    def no_more_chunks(self) -> None:
        """A hint: no new chunk will be submitted, only the units of a lost one again.

        An executor may then let its workers stop as soon as they are
        done, instead of at :meth:`shutdown`; a chunk submitted after this
        must still run.  The default does nothing.
        """
        return None  # a hint only: nothing to do unless an executor can use it

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

    @property
    def description(self) -> str:
        """A short human name, such as ``'local pool (2 workers, fork)'``."""
        return type(self).__name__

    def __enter__(self) -> 'Executor':
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.shutdown(cancel=exc is not None)
