"""Jobs: what a worker runs, shipped to each worker once.

A :class:`Job` holds the delegate (where results go), the failure store
and the code that computes an item.  In the worker,
:meth:`Job.run_chunk` computes a chunk's keys in order, writes each
result to the delegate itself (an atomic, idempotent write), records a
failure for each item that raises, and returns a
:class:`~stashworks.multi.executor.ChunkReport`.  The parent never sees
the values.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from ..directory import DirectoryStash
from ..stash import MISSING, Stash
from .executor import Chunk, ChunkReport, ItemEvent
from .failures import FailureRecord, FailureStash, worker_name

if TYPE_CHECKING:
    from .stash import MultiProcessStash

__all__ = ['Job', 'FactoryJob', 'ProcessJob', 'find_directory']

logger = logging.getLogger(__name__)

#: ``should_stop`` callbacks: asked after each item whether the worker
#: must leave the rest of the chunk to another worker.
StopCheck = Callable[[], bool]


def find_directory(stash: Optional[Stash]) -> Optional[Path]:
    """The directory of the first :class:`DirectoryStash` in a delegate chain.

    Follows ``delegate`` attributes (wrappers such as a cache), so the
    batch can put its side files next to the items.
    """
    seen = 0
    while stash is not None and seen < 32:
        if isinstance(stash, DirectoryStash):
            return stash.path
        stash = getattr(stash, 'delegate', None)
        seen += 1
    return None


class Job:
    """The part of a batch that runs in a worker.

    Subclasses implement :meth:`_compute_chunk`.

    Args:
        delegate: the stash results are written to.
        failures: the store failure records are written to.
    """

    def __init__(self, delegate: Stash, failures: Stash) -> None:
        self.delegate = delegate
        self.failures = failures

    def shared_paths(self) -> list[Path]:
        """The directories every worker must be able to see and write."""
        paths = [find_directory(self.delegate)]
        if isinstance(self.failures, FailureStash):
            paths.append(self.failures.path)
        return [p for p in paths if p is not None]

    @property
    def worker_name(self) -> str:
        """This process, as named in reports and failure records."""
        return worker_name()

    def record_failure(self, key: str, exc: BaseException, attempt: int) -> None:
        """Write the failure record of ``key``; never raises for a bad store."""
        record = FailureRecord.from_exception(key, exc, attempts=attempt + 1)
        try:
            self.failures.dump(key, record)
        except Exception as store_exc:
            # The item is still reported as failed; losing the record only
            # means the next run tries the key again.
            logger.error('cannot record failure of %r in %r: %s (%s)', key, self.failures, store_exc, record)

    def run_chunk(
        self,
        chunk: Chunk,
        on_item: Optional[Callable[[ItemEvent], None]] = None,
        should_stop: Optional[StopCheck] = None,
        finished: Optional[tuple[list[str], list[str]]] = None,
    ) -> ChunkReport:
        """Compute ``chunk``'s items, write them, and report.

        Args:
            chunk: the keys to compute, in order.
            on_item: called with an :class:`ItemEvent` as each item ends.
            should_stop: asked after each item; when it answers ``True``
                the rest of the chunk is left undone (and unreported), for
                the batch to send elsewhere.
            finished: two empty lists, ``(done, failed)``, to which each
                key is appended as its item ends: a caller can read them
                from another thread (appends are atomic), which costs the
                items nothing, where ``on_item`` costs a call and an event
                per item.

        Returns:
            The chunk's report; ``extra`` holds ``elapsed`` (seconds) and
            ``stopped`` (``True`` if ``should_stop`` cut it short).
        """
        start = time.perf_counter()
        done, failed = finished if finished is not None else ([], [])

        if on_item is None and should_stop is None:

            def finish(key: str, ok: bool) -> bool:
                (done if ok else failed).append(key)
                return False

        else:

            def finish(key: str, ok: bool) -> bool:
                (done if ok else failed).append(key)
                if on_item is not None:
                    on_item(ItemEvent(chunk.id, key, ok))
                return should_stop is not None and should_stop()

        stopped = self._compute_chunk(chunk, finish)
        return ChunkReport(
            chunk_id=chunk.id,
            done=tuple(done),
            failed=tuple(failed),
            worker=self.worker_name,
            extra={'elapsed': time.perf_counter() - start, 'stopped': stopped, 'pid': os.getpid()},
        )

    def _compute_chunk(self, chunk: Chunk, finish: Callable[[str, bool], bool]) -> bool:
        """Compute every item of ``chunk``, calling ``finish(key, ok)`` after each.

        Returns ``True`` if it stopped early because ``finish`` said so.
        """
        raise NotImplementedError

    def _store(self, key: str, value: Any, attempt: int) -> bool:
        """Write one result; a value that cannot be written is a failure."""
        try:
            self.delegate.dump(key, value)
        except Exception as exc:
            self.record_failure(key, exc, attempt)
            return False
        return True


class FactoryJob(Job):
    """Computes each key with a function (``factory.load`` or a callable).

    Args:
        delegate: the stash results are written to.
        failures: the store failure records are written to.
        compute: ``compute(key) -> value``.
    """

    def __init__(self, delegate: Stash, failures: Stash, compute: Callable[[str], Any]) -> None:
        super().__init__(delegate, failures)
        self.compute = compute

    def _compute_chunk(self, chunk: Chunk, finish: Callable[[str, bool], bool]) -> bool:
        keys = chunk.keys
        for i, key in enumerate(keys):
            try:
                value = self.compute(key)
            except Exception as exc:
                self.record_failure(key, exc, chunk.attempt)
                ok = False
            else:
                ok = self._store(key, value, chunk.attempt)
            if finish(key, ok) and i < len(keys) - 1:
                return True
        return False


class MissingResultError(Exception):
    """``_process`` returned without yielding a work unit's key."""


class ProcessJob(Job):
    """Runs a :class:`~stashworks.MultiProcessStash` subclass's ``_process``.

    ``_process(units)`` yields ``(key, value)`` pairs; each is written as it
    comes.  If ``_process`` raises, the units it had not yielded yet are
    run one at a time, so the failure lands on the unit that caused it and
    the others still complete.

    Args:
        delegate: the stash results are written to.
        failures: the store failure records are written to.
        owner: the stash whose ``_process`` and ``_key_of`` run.
    """

    def __init__(self, delegate: Stash, failures: Stash, owner: 'MultiProcessStash') -> None:
        super().__init__(delegate, failures)
        self.owner = owner

    def _compute_chunk(self, chunk: Chunk, finish: Callable[[str, bool], bool]) -> bool:
        units: Iterable[Any] = chunk.payload if chunk.payload is not None else chunk.keys
        pending: dict[str, Any] = dict(zip(chunk.keys, units, strict=True))
        try:
            if self._run(list(pending.values()), pending, chunk, finish):
                return True
        except Exception:
            # Isolate: one unit at a time for what is left.
            logger.debug('_process failed in chunk %d; running its %d last units one by one', chunk.id, len(pending))
            for key, unit in list(pending.items()):
                try:
                    if self._run([unit], pending, chunk, finish):
                        return True
                except Exception as exc:
                    if key in pending:
                        del pending[key]
                        self.record_failure(key, exc, chunk.attempt)
                        if finish(key, False) and pending:
                            return True
        for key in list(pending):
            del pending[key]
            self.record_failure(key, MissingResultError(f'_process did not yield key {key!r}'), chunk.attempt)
            if finish(key, False) and pending:
                return True
        return False

    def _run(
        self, units: list[Any], pending: dict[str, Any], chunk: Chunk, finish: Callable[[str, bool], bool]
    ) -> bool:
        for key, value in self.owner._process(units):
            ok = self._store(key, value, chunk.attempt)
            if pending.pop(key, MISSING) is MISSING:
                # An extra key the units did not announce (or one yielded
                # twice): written, not counted, since the batch's total
                # does not know it.
                continue
            if finish(key, ok) and pending:
                return True
        return False
