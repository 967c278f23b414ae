"""The batch engine: missing keys in, chunks out, reports back.

:func:`run_batch` is what :meth:`MultiProcessStash.prime` runs.  It works
out which keys are missing (one listing of the delegate and one of the
failure store, compared as sets, nothing unpickled), cuts them into chunks,
feeds an :class:`~stashworks.multi.executor.Executor`, and handles what
comes back: item events for the progress bar, chunk reports, and chunks
lost with their worker (whose culprit key is isolated and retried a
bounded number of times before it is recorded as a failure).

Items are counted per message, not per key, unless an ``on_event`` hook
asks for one event per item: with tiny items the parent's per-key work
would compete with the workers for the CPUs.  The counts from item
messages are provisional; a chunk's report (or, for a chunk lost with its
worker, what the delegate and the failure store hold) settles them.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from ..errors import BatchError
from .chunking import Chunker
from .executor import Chunk, ChunkReport, Executor, ExecutorError, ItemBatch, ItemEvent
from .failures import FailureRecord, utc_now
from .job import Job
from .progress import BatchEvent, EventHook, ProgressBar
from .status import StatusWriter

__all__ = ['BatchResult', 'BatchOptions', 'run_batch']

logger = logging.getLogger(__name__)

#: Chunks kept submitted per worker, so none idles between two chunks.
PREFETCH = 2


@dataclass
class BatchResult:
    """What a batch run did.

    Attributes:
        total: items in the whole batch.
        done_before: items already complete when the run started.
        computed: items computed and written by this run.
        failed: failures recorded by this run.
        failed_before: keys skipped because a failure was recorded before.
        elapsed: seconds the run took.
        interrupted: the run was stopped (Ctrl-C, SIGTERM) before its end.
        chunks: chunks sent to workers (retries included).
        workers: workers used (0 when nothing had to be computed).
        lost: chunks lost with a worker that died.
    """

    total: int = 0
    done_before: int = 0
    computed: int = 0
    failed: int = 0
    failed_before: int = 0
    elapsed: float = 0.0
    interrupted: bool = False
    chunks: int = 0
    workers: int = 0
    lost: int = 0

    @property
    def missing(self) -> int:
        """Items neither complete nor failed (non-zero after an interruption)."""
        return max(0, self.total - self.done_before - self.computed - self.failed - self.failed_before)

    def __str__(self) -> str:
        text = f'{self.total} items: {self.done_before} done before, {self.computed} computed now, {self.failed} failed'
        if self.failed_before:
            text += f' ({self.failed_before} failed before, not retried)'
        text += f', {self.elapsed:.1f}s'
        settled = self.computed + self.failed
        if settled and self.elapsed > 0:
            text += f' ({settled / self.elapsed:.1f} items/s)'
        if self.interrupted:
            text += f'; interrupted with {self.missing} left'
        return text


@dataclass
class BatchOptions:
    """How to run a batch; see :class:`~stashworks.MultiProcessFactoryStash`."""

    workers: int = 1
    chunk_size: int = 0
    progress: Optional[bool] = None
    on_event: Optional[EventHook] = None
    max_retries: int = 2
    status_path: Optional[Path] = None
    desc: str = 'items'
    extra: dict[str, Any] = field(default_factory=dict)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl-C."""


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    raise _Terminated(f'received signal {signum} (SIGTERM)')


def scan(
    work: Iterable[tuple[str, Any]],
    done_keys: Iterable[str],
    failed_keys: Iterable[str],
    skip_failed: bool = True,
) -> tuple[list[str], Optional[dict[str, Any]], int, int]:
    """Split the work into missing keys and keys already settled.

    Args:
        work: ``(key, unit)`` pairs, streamed; ``unit`` is ``None`` when
            the key is the unit.
        done_keys: one listing of the delegate.
        failed_keys: one listing of the failure store.
        skip_failed: leave keys with a recorded failure out.

    Returns:
        ``(missing keys in order, units by key or None, done before,
        failed before)``.

    Raises:
        BatchError: a key is not a ``str`` (the message shows it).
    """
    done = set(done_keys)
    failed = set(failed_keys) if skip_failed else set()
    missing: list[str] = []
    seen: set[str] = set()
    units: Optional[dict[str, Any]] = None
    done_before = failed_before = 0
    for n, (key, unit) in enumerate(work):
        if not isinstance(key, str):
            raise BatchError(f'work key #{n} is not a str but {type(key).__name__}: {key!r}')
        if key in done:
            done_before += 1
            done.discard(key)  # counted once even if the source repeats it
        elif key in failed:
            failed_before += 1
            failed.discard(key)
        elif key not in seen:
            seen.add(key)
            missing.append(key)
            if unit is not None:
                if units is None:
                    units = {}
                units[key] = unit
    return missing, units, done_before, failed_before


class _Run:
    """The state of one batch run in the parent."""

    def __init__(
        self,
        job: Job,
        executor: Executor,
        missing: list[str],
        units: Optional[dict[str, Any]],
        result: BatchResult,
        opts: BatchOptions,
    ) -> None:
        self.job = job
        self.executor = executor
        self.missing = missing
        self.units = units
        self.result = result
        self.opts = opts
        self.next_index = 0
        self.next_id = 0
        self.retry: deque[Chunk] = deque()
        self.in_flight: dict[int, Chunk] = {}
        #: per chunk in flight, ``[written, failed]`` items counted so far
        self.tally: dict[int, list[int]] = {}
        #: per chunk in flight, the keys already counted (only when an
        #: ``on_event`` hook wants one event per item)
        self.counted: dict[int, set[str]] = {}
        self.per_item = opts.on_event is not None
        self.chunker = Chunker(opts.chunk_size, result.workers)
        self.bar = ProgressBar(
            result.total, result.done_before + result.failed_before, result.failed_before, opts.progress, opts.desc
        )
        self.status = StatusWriter(
            opts.status_path, result.total, result.done_before, result.workers, executor.description
        )

    # -- counts ------------------------------------------------------------

    @property
    def done(self) -> int:
        return self.result.done_before + self.result.computed

    @property
    def failed(self) -> int:
        return self.result.failed_before + self.result.failed

    def emit(self, kind: str, **kw: Any) -> None:
        hook = self.opts.on_event
        if hook is not None:
            hook(BatchEvent(kind, total=self.result.total, done=self.done, failed=self.failed, **kw))

    def count(self, chunk_id: int, done: int, failed: int) -> None:
        """Add ``done`` written and ``failed`` failed items of a chunk to the counts and the bar."""
        if not done and not failed:
            return
        tally = self.tally.setdefault(chunk_id, [0, 0])
        tally[0] += done
        tally[1] += failed
        self.result.computed += done
        self.result.failed += failed
        self.bar.advance_many(done, failed)

    def settle(self, chunk_id: int, key: str, ok: bool) -> None:
        """Count one item, once, whichever report tells of it first (per-item mode)."""
        seen = self.counted.setdefault(chunk_id, set())
        if key in seen:
            return
        seen.add(key)
        self.count(chunk_id, 1 if ok else 0, 0 if ok else 1)
        self.emit('item', key=key, ok=ok, chunk_id=chunk_id)

    def progress(self, chunk_id: int, done: Sequence[str], failed: Sequence[str]) -> None:
        """Items of a chunk in flight finished (provisional until its report)."""
        if self.per_item:
            for key in done:
                self.settle(chunk_id, key, True)
            for key in failed:
                self.settle(chunk_id, key, False)
        else:
            self.count(chunk_id, len(done), len(failed))

    def final(self, chunk_id: int, done: Sequence[str], failed: Sequence[str]) -> None:
        """Settle a chunk's counts: ``done`` and ``failed`` are all its finished items."""
        if self.per_item:
            self.progress(chunk_id, done, failed)
        else:
            # The report is the authority; item messages only ran ahead.
            counted = self.tally.get(chunk_id, (0, 0))
            self.count(chunk_id, len(done) - counted[0], len(failed) - counted[1])
        self.tally.pop(chunk_id, None)
        self.counted.pop(chunk_id, None)

    # -- chunks ------------------------------------------------------------

    def make_chunk(self, keys: tuple[str, ...], attempt: int, payload: Optional[tuple[Any, ...]] = None) -> Chunk:
        if payload is None and self.units is not None:
            payload = tuple(self.units.get(k, k) for k in keys)
        chunk = Chunk(self.next_id, keys, attempt, payload)
        self.next_id += 1
        return chunk

    def next_chunk(self) -> Optional[Chunk]:
        if self.retry:
            return self.retry.popleft()
        remaining = len(self.missing) - self.next_index
        size = self.chunker.next_size(remaining)
        if size <= 0:
            return None
        keys = tuple(self.missing[self.next_index : self.next_index + size])
        self.next_index += size
        return self.make_chunk(keys, 0)

    def top_up(self) -> None:
        capacity = max(1, self.result.workers) * PREFETCH
        while len(self.in_flight) < capacity:
            chunk = self.next_chunk()
            if chunk is None:
                return
            self.in_flight[chunk.id] = chunk
            self.result.chunks += 1
            self.executor.submit(chunk)
            self.emit('submit', chunk_id=chunk.id, size=len(chunk.keys))

    def resubmit(self, chunk: Chunk, keys: list[str], attempt: int) -> None:
        if not keys:
            return
        payload = None
        if chunk.payload is not None:
            by_key = dict(zip(chunk.keys, chunk.payload, strict=True))
            payload = tuple(by_key[k] for k in keys)
        self.retry.append(self.make_chunk(tuple(keys), attempt, payload))

    def on_report(self, report: ChunkReport) -> None:
        chunk = self.in_flight.pop(report.chunk_id, None)
        if chunk is None:
            logger.warning('report for unknown chunk %d ignored', report.chunk_id)
            return
        if report.lost:
            self.on_lost(chunk, report)
        else:
            self.final(chunk.id, report.done, report.failed)
            settled = len(report.done) + len(report.failed)
            elapsed = report.extra.get('elapsed')
            if isinstance(elapsed, (int, float)) and settled:
                self.chunker.observe(settled, float(elapsed))
            if settled < len(chunk.keys):
                # Cut short on purpose (a worker recycled for memory or
                # its item cap): the rest goes on, not counted as a death.
                finished = set(report.done) | set(report.failed)
                self.resubmit(chunk, [k for k in chunk.keys if k not in finished], chunk.attempt)
            self.emit('chunk', chunk_id=chunk.id, size=len(chunk.keys))
        self.status.update(self.done, self.failed)

    def on_lost(self, chunk: Chunk, report: ChunkReport) -> None:
        self.result.lost += 1
        finished = set(report.done) | set(report.failed)
        delegate, failures = self.job.delegate, self.job.failures
        done, failed = list(report.done), list(report.failed)
        unfinished = []
        for key in chunk.keys:
            if key in finished:
                continue
            # Items the worker finished but did not report (or whose item
            # messages died with it): what the stores hold decides.
            if delegate.exists(key):
                done.append(key)
            elif failures.exists(key):
                failed.append(key)
            else:
                unfinished.append(key)
        self.final(chunk.id, done, failed)
        reason = report.reason or 'worker lost'
        if not unfinished:
            return
        culprit, rest = unfinished[0], unfinished[1:]
        logger.warning(
            'worker %s died on key %r (%s); attempt %d of %d',
            report.worker or '?',
            culprit,
            reason,
            chunk.attempt + 1,
            self.opts.max_retries + 1,
        )
        self.emit('lost', key=culprit, chunk_id=chunk.id, size=len(chunk.keys), message=reason)
        if chunk.attempt >= self.opts.max_retries and len(chunk.keys) == 1:
            pid = report.extra.get('pid', 0)
            record = FailureRecord(
                key=culprit,
                error_type='WorkerDied',
                message=f'the worker died while computing key {culprit!r}: {reason}',
                worker=report.worker,
                pid=pid if isinstance(pid, int) else 0,
                time=utc_now(),
                attempts=chunk.attempt + 1,
            )
            try:
                failures.dump(culprit, record)
            except Exception as exc:
                logger.error('cannot record failure of %r in %r: %s', culprit, failures, exc)
            self.final(chunk.id, (), (culprit,))
        else:
            self.resubmit(chunk, [culprit], chunk.attempt + 1)
        # The others were innocent bystanders: same attempt count.
        self.resubmit(chunk, rest, chunk.attempt)

    def reconcile(self) -> None:
        """Settle the chunks still in flight from what the stores hold.

        After the workers stopped early (Ctrl-C, a crash), items they
        finished may not have been reported: item messages are sent in
        batches, and a stopped worker's last batch dies with it.
        """
        delegate, failures = self.job.delegate, self.job.failures
        for chunk in list(self.in_flight.values()):
            done, failed = [], []
            for key in chunk.keys:
                if delegate.exists(key):
                    done.append(key)
                elif failures.exists(key):
                    failed.append(key)
            self.final(chunk.id, done, failed)
        self.in_flight.clear()

    def on_items(self, event: Union[ItemEvent, ItemBatch]) -> None:
        if event.chunk_id not in self.in_flight:
            return
        if isinstance(event, ItemBatch):
            self.progress(event.chunk_id, event.done, event.failed)
        elif event.ok:
            self.progress(event.chunk_id, (event.key,), ())
        else:
            self.progress(event.chunk_id, (), (event.key,))

    # -- the loop ----------------------------------------------------------

    def loop(self) -> None:
        self.emit('start')
        self.status.update(self.done, self.failed, force=True)
        while True:
            self.top_up()
            if not self.in_flight:
                return
            for report in self.executor.reports(timeout=0.5):
                if isinstance(report, ChunkReport):
                    self.on_report(report)
                    break  # top up before reading on
                self.on_items(report)
            self.status.update(self.done, self.failed)


def _summary_line(result: BatchResult) -> str:
    return f'stashworks: {result}'


def run_batch(
    work: Iterable[tuple[str, Any]],
    job: Job,
    executor_factory: Callable[[int], Executor],
    opts: BatchOptions,
    workers: Callable[[int], int],
    result: Optional[BatchResult] = None,
) -> BatchResult:
    """Run a batch for the missing keys of ``work``.

    Args:
        work: ``(key, unit)`` pairs (``unit`` ``None`` when the key is the
            work), streamed once.
        job: what the workers run; ``job.delegate`` and ``job.failures``
            are listed once each to find what is missing.
        executor_factory: builds the executor, given the worker count.
        opts: the batch's options.
        workers: resolves the worker count from the number of missing keys.
        result: filled in as the run goes (so a caller keeps it when the
            run is interrupted); a new one by default.

    Returns:
        What the run did.

    Raises:
        KeyboardInterrupt: on Ctrl-C or SIGTERM, after the workers stopped
            and the status was written.
        BatchError: the batch cannot run (an executor that cannot start...).
    """
    started = time.monotonic()
    missing, units, done_before, failed_before = scan(work, job.delegate.keys(), job.failures.keys())
    if result is None:
        result = BatchResult()
    result.total = done_before + failed_before + len(missing)
    result.done_before = done_before
    result.failed_before = failed_before
    if not missing:
        result.elapsed = time.monotonic() - started
        logger.debug('nothing to compute: %s', result)
        return result
    result.workers = workers(len(missing))
    executor = executor_factory(result.workers)
    run = _Run(job, executor, missing, units, result, opts)
    in_main = threading.current_thread() is threading.main_thread()
    previous: Union[Callable[[int, Optional[FrameType]], Any], int, None] = None
    if in_main:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    state = 'crashed'
    try:
        try:
            executor.start(job, result.workers)
            run.status.data['executor'] = executor.description
            logger.info(
                'computing %d of %d items with %s (%d done before, %d failed before)',
                len(missing),
                result.total,
                executor.description,
                done_before,
                failed_before,
            )
            run.loop()
        except ExecutorError as exc:
            raise BatchError(f'the batch for {job.delegate!r} could not go on: {exc}') from exc
        except KeyboardInterrupt:
            state = 'interrupted'
            result.interrupted = True
            raise
        else:
            state = 'finished'
        finally:
            if in_main:
                # No second SIGTERM mid-shutdown: the workers must be reaped.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            executor.shutdown(cancel=state != 'finished')
            if state != 'finished':
                try:
                    run.reconcile()
                except Exception as exc:
                    logger.error('cannot count the items finished before the stop: %s', exc)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        result.elapsed = time.monotonic() - started
        run.status.update(run.done, run.failed, state=state, force=True)
        summary = _summary_line(result)
        # After a finished run the bar prints the summary under itself;
        # otherwise the warning or error below carries it (a warning shows
        # even where logging is not configured), so it is said once.
        run.bar.close(summary if state == 'finished' else '')
        if state == 'finished':
            logger.info('%s', summary)
            run.emit('finish', result=result)
        elif state == 'interrupted':
            logger.warning(
                '%s. Every completed item is saved; run the batch again to compute the %d missing items. '
                'Status: %s',
                summary,
                result.missing,
                opts.status_path or '(none)',
            )
            run.emit('interrupted', result=result)
        else:
            logger.error('batch crashed after %s', summary)
    return result


def iter_pairs(keys: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """``(key, None)`` for each key: work whose keys are the units."""
    for key in keys:
        yield key, None
