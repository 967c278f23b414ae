"""Jobs: the part of a batch that runs in a worker, shipped to each worker once.

A :class:`Job` holds the store items go to, the failure store and the
code that computes (the factory, or a bound ``_process`` method).  In the
worker, :meth:`Job.run_chunk` computes a chunk's units in order, writes
each result itself (an atomic, idempotent write), records a failure for
each unit that raises, and returns a :class:`~stashworks.multi.wire.ChunkReport`.
The parent never sees the values.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Optional

import dill

from ..stash import MISSING, DelegateStash, Stash
from .failures import FailureRecord, FailureStash, record_failure
from .layout import find_directory as find_directory
from .layout import worker_name
from .mainclasses import load as load_keeping_main_classes
from .wire import Chunk, ChunkReport, ExecutorError

__all__ = [
    'FactoryJob',
    'Job',
    'Finish',
    'FinishMany',
    'Finishers',
    'Ledger',
    'MissingResultError',
    'ProcessJob',
    'WorkerStop',
    'buffers_writes',
    'dump_job',
    'load_job',
]

logger = logging.getLogger(__name__)

#: ``should_stop`` callbacks: asked after each unit whether the worker
#: must leave the rest of the chunk to another worker.
StopCheck = Callable[[], bool]
#: ``finish(unit, ok)``: called as each unit ends; ``True`` means stop.
Finish = Callable[[str, bool], bool]
#: ``finish_many(done, failed)``: called as a slice of units ends, the
#: units that are done and those that failed; ``True`` means stop.
FinishMany = Callable[[list[str], list[str]], bool]

#: What a job lets through instead of recording it as the unit's failure,
#: when it runs in the caller's process: Ctrl-C and ``sys.exit()`` stop
#: the caller as they would without a batch.
IN_PROCESS_PASSTHROUGH: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit)


class WorkerStop(SystemExit):
    """A worker process was asked to stop (SIGTERM): never a unit's failure.

    In a worker process every other exception a job raises, a
    ``BaseException`` included (``SystemExit``, ``KeyboardInterrupt``,
    ``GeneratorExit``...), is the failure of the unit that raised it.
    """


#: Longest a group of writes to a buffering store stays uncommitted, in
#: seconds, and most units in one group.  Time is the bound that matters:
#: each group ends with a flush (for LMDB a commit and an ``fsync``), which
#: a thousand tiny items would not pay for; the store bounds its own
#: buffer (an LmdbStash commits early every ``group_items`` items).
GROUP_SECONDS = 0.1
GROUP_UNITS = 100_000


class Finishers(NamedTuple):
    """How a job settles its units: one at a time, a slice at a time, and the last commit."""

    one: Finish
    #: ``None`` where units are never settled a slice at a time
    many: Optional[FinishMany]
    commit: Callable[[], None]


class Ledger:
    """The settled units of the running chunk, for a reporter in another thread.

    The job appends a unit only once its items are durable (flushed);
    another thread may read the lists at any time (appends are atomic),
    which costs the units nothing.
    """

    def __init__(self) -> None:
        self.done: list[str] = []
        self.failed: list[str] = []


def buffers_writes(store: Optional[Stash]) -> bool:
    """Whether ``store`` (or a store it wraps) commits its writes in groups.

    A store that overrides :meth:`~stashworks.Stash.flush` buffers; the
    delegate wrappers forward to what they wrap.
    """
    seen = 0
    while store is not None and seen < 32:
        flush = type(store).flush
        if flush is Stash.flush:
            return False
        if flush is not DelegateStash.flush:
            return True
        store = getattr(store, 'delegate', None)
        seen += 1
    return False


def dump_job(job: 'Job', where: str) -> bytes:
    """The job as bytes (dill), once for every worker.

    Raises:
        ExecutorError: something the job refers to cannot be pickled.
    """
    try:
        return dill.dumps(job, protocol=pickle.HIGHEST_PROTOCOL, recurse=True)
    except Exception as exc:
        raise ExecutorError(
            f'cannot send the job to {where}: {type(exc).__name__}: {exc} '
            f'(everything the factory refers to must be picklable with dill)'
        ) from exc


def load_job(data: bytes) -> 'Job':
    """The job :func:`dump_job` made (in a worker).

    Classes the job brings from the parent's ``__main__`` are bound to
    their names in the worker's ``__main__``, so values of them pickle
    (see :mod:`~stashworks.multi.mainclasses`).
    """
    job = load_keeping_main_classes(data)
    if not isinstance(job, Job):
        raise TypeError(f'expected a Job, got {type(job).__name__}')
    return job


class Job:
    """What a worker runs for a batch.

    Subclasses implement :meth:`_compute_chunk`.

    Args:
        delegate: the stash results are written to.
        failures: the store failure records are written to.
    """

    #: Exceptions that stop the chunk instead of failing a unit; a worker
    #: process sets ``(WorkerStop,)``.
    passthrough: tuple[type[BaseException], ...] = IN_PROCESS_PASSTHROUGH

    def __init__(self, delegate: Stash, failures: Stash) -> None:
        self.delegate = delegate
        self.failures = failures

    def shared_paths(self) -> list[Path]:
        """The directories every worker must be able to see and write."""
        paths = [find_directory(self.delegate)]
        if isinstance(self.failures, FailureStash):
            paths.append(self.failures.path)
        return [p for p in paths if p is not None]

    def record_failure(self, key: str, exc: BaseException, attempt: int) -> None:
        """Write the failure record of ``key``; never raises for a bad store."""
        # An item computed again in the worker (retries=) ran more than once.
        tries = getattr(exc, 'stashworks_tries', 1)
        record_failure(self.failures, FailureRecord.from_exception(key, exc, attempts=attempt + tries))

    def run_chunk(
        self, chunk: Chunk, should_stop: Optional[StopCheck] = None, ledger: Optional[Ledger] = None
    ) -> ChunkReport:
        """Compute ``chunk``'s units, write their items, and report.

        Writes go in groups (:meth:`~stashworks.Stash.begin_group`); a unit
        enters ``ledger`` only after its group was flushed, and at the
        latest when the chunk ends.  A store that writes through needs no
        flush, so its units enter the ledger at once.

        Args:
            chunk: the units to compute, in order.
            should_stop: asked after each unit; when it answers ``True``
                the rest of the chunk is left undone (and unreported), for
                the batch to send elsewhere.
            ledger: where settled units are appended, for a reporter
                thread to read; a fresh one by default.

        Returns:
            The chunk's report (every settled unit); ``extra`` holds
            ``elapsed`` (seconds), ``stopped`` and ``pid``.
        """
        start = time.perf_counter()
        ledger = ledger if ledger is not None else Ledger()
        stores = (self.delegate, self.failures)
        for store in stores:
            store.begin_group()
        grouped = buffers_writes(self.delegate) or buffers_writes(self.failures)
        if grouped:
            finish, finish_many, commit = self._grouped(chunk, ledger, should_stop)
        else:
            finish, finish_many, commit = self._write_through(ledger, should_stop)
        # Slices of units only where they lose nothing: a buffering store
        # loses its uncommitted group with a kill anyway (a write-through
        # store keeps each unit's item from the moment it is written), and
        # a stop check that may be asked after a slice rather than after
        # each unit (a limit of items per worker may not).
        sliced = grouped and (should_stop is None or getattr(should_stop, 'per_slice', False))
        try:
            stopped = self._compute_chunk(chunk, finish, finish_many if sliced else None)
        finally:
            commit()
        return ChunkReport(
            chunk_id=chunk.id,
            done=tuple(ledger.done),
            failed=tuple(ledger.failed),
            worker=worker_name(),
            extra={'elapsed': time.perf_counter() - start, 'stopped': stopped, 'pid': os.getpid()},
        )

    def _write_through(self, ledger: Ledger, should_stop: Optional[StopCheck]) -> Finishers:
        done, failed = ledger.done, ledger.failed
        if should_stop is None:

            def finish(unit: str, ok: bool) -> bool:
                (done if ok else failed).append(unit)
                return False

        else:

            def finish(unit: str, ok: bool) -> bool:
                (done if ok else failed).append(unit)
                return should_stop()

        # No slices into a write-through store: see run_chunk.
        return Finishers(finish, None, self._flush_quietly)

    def _grouped(self, chunk: Chunk, ledger: Ledger, should_stop: Optional[StopCheck]) -> Finishers:
        # The open group's units, done and failed: two appends' worth of
        # bookkeeping per unit, the rest once per group.
        done: list[str] = []
        failed: list[str] = []
        due = time.monotonic() + GROUP_SECONDS
        clock = time.monotonic

        def commit() -> None:
            nonlocal due
            try:
                self.delegate.flush()
                self.failures.flush()
            except Exception as exc:
                # Not durable, so not done: each unit of the group fails
                # with the store's error and is tried again next run.
                logger.error('cannot commit %d items to %r: %s', len(done) + len(failed), self.delegate, exc)
                for unit in done:
                    self.record_failure(unit, exc, chunk.attempt)
                ledger.failed.extend(done)
                ledger.failed.extend(failed)
            else:
                if failed:
                    ledger.failed.extend(failed)
                ledger.done.extend(done)
            done.clear()
            failed.clear()
            due = clock() + GROUP_SECONDS
            self.delegate.begin_group()
            self.failures.begin_group()

        def finish_many(units: list[str], bad: list[str]) -> bool:
            done.extend(units)
            failed.extend(bad)
            if len(done) >= GROUP_UNITS or clock() >= due:
                commit()
            return should_stop() if should_stop is not None else False

        if should_stop is None:

            def finish(unit: str, ok: bool) -> bool:
                (done if ok else failed).append(unit)
                # Failed units are few (and a group is bounded in time).
                if len(done) >= GROUP_UNITS or clock() >= due:
                    commit()
                return False

        else:

            def finish(unit: str, ok: bool) -> bool:
                (done if ok else failed).append(unit)
                if len(done) >= GROUP_UNITS or clock() >= due:
                    commit()
                return should_stop()

        return Finishers(finish, finish_many, commit)

    def _flush_quietly(self) -> None:
        for store in (self.delegate, self.failures):
            try:
                store.flush()
            except Exception as exc:
                logger.error('cannot flush %r: %s', store, exc)

    def _compute_chunk(self, chunk: Chunk, finish: Finish, finish_many: Optional[FinishMany]) -> bool:
        """Compute every unit of ``chunk``, calling ``finish(unit, ok)`` after each.

        Or, when ``finish_many`` is given, ``finish_many(done, failed)``
        after each slice of units: a job that computes many tiny units at a
        time may settle them together.

        Returns ``True`` if it stopped early because ``finish`` (or
        ``finish_many``) said so.
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
    """Computes each unit's one item with a function (``factory.load`` or a callable).

    Args:
        delegate: the stash results are written to.
        failures: the store failure records are written to.
        compute: ``compute(key) -> value``.
    """

    def __init__(self, delegate: Stash, failures: Stash, compute: Callable[[str], Any]) -> None:
        super().__init__(delegate, failures)
        self.compute = compute

    def _compute_chunk(self, chunk: Chunk, finish: Finish, finish_many: Optional[FinishMany]) -> bool:
        units = chunk.units
        last = len(units) - 1
        for i, key in enumerate(units):
            try:
                value = self.compute(key)
            except BaseException as exc:
                if isinstance(exc, self.passthrough):
                    raise
                self.record_failure(key, exc, chunk.attempt)
                ok = False
            else:
                ok = self._store(key, value, chunk.attempt)
            if finish(key, ok) and i < last:
                return True
        return False


class MissingResultError(Exception):
    """``_process`` returned without yielding a work unit's key."""


class ProcessJob(Job):
    """Runs a chunk through a ``process(units)`` function (a stash's ``_process``).

    ``process(units)`` yields ``(key, value)`` pairs; each is written as it
    comes.  If it raises, the units it had not yielded yet are run one at a
    time, so the failure lands on the unit that caused it and the others
    still complete.

    Args:
        delegate: the stash results are written to.
        failures: the store failure records are written to.
        process: the bound ``_process`` method of the batch stash.
    """

    def __init__(self, delegate: Stash, failures: Stash, process: Callable[[list[Any]], Iterable[tuple[str, Any]]]):
        super().__init__(delegate, failures)
        self.process = process

    def _compute_chunk(self, chunk: Chunk, finish: Finish, finish_many: Optional[FinishMany]) -> bool:
        units: Iterable[Any] = chunk.payload if chunk.payload is not None else chunk.units
        pending: dict[str, Any] = dict(zip(chunk.units, units, strict=True))
        try:
            if self._run(list(pending.values()), pending, chunk, finish):
                return True
        except BaseException as exc:
            if isinstance(exc, self.passthrough):
                raise
            # Isolate: one unit at a time for what is left.
            logger.debug('_process failed in chunk %d; running its %d last units one by one', chunk.id, len(pending))
            for key, unit in list(pending.items()):
                try:
                    if self._run([unit], pending, chunk, finish):
                        return True
                except BaseException as exc:
                    if isinstance(exc, self.passthrough):
                        raise
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

    def _run(self, units: list[Any], pending: dict[str, Any], chunk: Chunk, finish: Finish) -> bool:
        for key, value in self.process(units):
            ok = self._store(key, value, chunk.attempt)
            if pending.pop(key, MISSING) is MISSING:
                # An extra key the units did not announce (or one yielded
                # twice): written, not counted, since the batch's total
                # does not know it.
                continue
            if finish(key, ok) and pending:
                return True
        return False
