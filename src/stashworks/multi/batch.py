"""The batch engine: one run of a batch in the parent process.

:meth:`~stashworks.MultiProcessStash.prime` plans (which units are
missing), prepares the output, then runs a :class:`Batch`: start the
executor, feed it chunks while it has free slots, count what comes back,
and summarise.  docs/engine.md follows one key through it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Optional, Sequence, Union

from ..directory import DirectoryStash
from ..errors import BatchError
from ..stash import Stash
from .chunking import Chunker
from .claims import ClaimBook, SharedWork
from .display import ProgressDisplay
from .executor import Executor
from .failures import FailureRecord, record_failure
from .guard import ITEM_TIMEOUT, check_writable, timeout_message
from .job import Job
from .layout import find_directory, utc_now
from .plan import Plan
from .progress import BatchEvent
from .settings import BatchSettings
from .status import StatusWriter
from .wire import Chunk, ChunkReport, ExecutorError, ItemEvent, Progress, Report

__all__ = ['Batch', 'BatchResult', 'prepare_output']

logger = logging.getLogger(__name__)


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
        done_elsewhere: items other runs on the same folder stored
            while this one ran (see "Several runs on one folder").
        failed_elsewhere: items that failed in other runs meanwhile.
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
    done_elsewhere: int = 0
    failed_elsewhere: int = 0

    @property
    def missing(self) -> int:
        """Items neither complete nor failed (non-zero after an interruption)."""
        settled = self.done_before + self.computed + self.failed + self.failed_before
        return max(0, self.total - settled - self.done_elsewhere - self.failed_elsewhere)

    def __str__(self) -> str:
        text = f'{self.total} items: {self.done_before} done before, {self.computed} computed now, {self.failed} failed'
        if self.failed_before:
            text += f' ({self.failed_before} failed before, not retried)'
        if self.done_elsewhere or self.failed_elsewhere:
            text += f', {self.done_elsewhere} done and {self.failed_elsewhere} failed by other runs'
        text += f', {self.elapsed:.1f}s'
        settled = self.computed + self.failed
        if settled and self.elapsed > 0:
            text += f' ({settled / self.elapsed:.1f} items/s)'
        if self.interrupted:
            text += f'; interrupted with {self.missing} left'
        return text


def prepare_output(delegate: Stash, executor: Executor, writes: Sequence[Path] = ()) -> None:
    """Check that the executor's workers can reach ``delegate``, and sweep stale temp files.

    Args:
        delegate: where the items go.
        executor: where the chunks run.
        writes: the folders the batch writes (items, failure records),
            each checked by writing a small file there.

    Raises:
        BatchError: the delegate lives in this process's memory and the
            executor runs chunks elsewhere, or a folder of ``writes``
            cannot be written (one error naming the folder and the reason,
            before any work, instead of one failure per key).
    """
    for folder in writes:
        check_writable(folder)
    if not executor.in_process and find_directory(delegate) is None:
        raise BatchError(
            f'{delegate!r} keeps its items in the memory of this process, so worker processes cannot '
            f'store results in it; use an on-disk delegate such as DirectoryStash, or '
            f"executor='serial' to compute in this process"
        )
    if isinstance(delegate, DirectoryStash):
        # Writers killed in an earlier run left temp files behind.
        delegate.remove_stale_temp_files()


#: ``extra=`` of the log records that carry a batch's summary, so a
#: handler that prints a summary of its own can leave them out.
SUMMARY = {'stashworks_summary': True}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl-C."""

    #: Which signal stopped the batch (the command line exits 128 + it).
    signum = signal.SIGTERM


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    raise _Terminated(f'received signal {signum} (SIGTERM)')


class _InFlight:
    """A chunk sent to the executor, and the units already heard of."""

    __slots__ = ('chunk', 'heard')

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.heard: set[str] = set()


class _WorkQueue:
    """The units still to send, cut into chunks on demand; retries go first."""

    def __init__(self, plan: Plan, chunker: Chunker, shared: Optional[SharedWork] = None) -> None:
        self.shared = shared
        self.missing = plan.missing
        self.payload = plan.payload
        self.chunker = chunker
        self.next_id = 0
        self.retry: deque[Chunk] = deque()
        #: units claimed together with an earlier chunk, one entry per chunk
        self.claimed: deque[tuple[str, ...]] = deque()

    @property
    def exhausted(self) -> bool:
        """Whether no chunk is left to cut, unless a chunk sent is lost or cut short."""
        if self.retry or self.claimed:
            return False
        if self.shared is not None:
            return not self.shared.unsent and not self.shared.waiting
        return self.missing.remaining <= 0

    def next_chunk(self, room: int = 1) -> Optional[Chunk]:
        """The next chunk to submit; ``room``: how many the executor takes now."""
        if self.retry:
            return self.retry.popleft()
        if self.claimed:
            units = self.claimed.popleft()
        elif self.shared is not None:
            # Only units this run claimed; other runs hold the rest.  The
            # chunks there is room for now share one claim (one file
            # written and released instead of one per chunk).
            share = self.shared.share()
            sizes: list[int] = []
            for _ in range(max(1, room)):
                size = self.chunker.next_size(share - sum(sizes))
                if size <= 0:
                    break
                sizes.append(size)
            units = self.shared.take(sum(sizes) or 1)
            if not units:
                return None
            start = sizes[0] if sizes else len(units)
            for size in sizes[1:]:
                if start < len(units):
                    self.claimed.append(units[start : start + size])
                start += size
            units = units[: sizes[0]] if sizes else units
        else:
            size = self.chunker.next_size(self.missing.remaining)
            if size <= 0:
                return None
            units = tuple(self.missing.take(size))
            if not units:
                return None
        payload = None if self.payload is None else tuple(self.payload.get(u, u) for u in units)
        return self._make(units, 0, payload)

    def requeue(self, chunk: Chunk, units: Sequence[str], attempt: int) -> None:
        """Send ``units`` of ``chunk`` again, as a new chunk."""
        if not units:
            return
        payload = None
        if chunk.payload is not None:
            by_unit = dict(zip(chunk.units, chunk.payload, strict=True))
            payload = tuple(by_unit[u] for u in units)
        self.retry.append(self._make(tuple(units), attempt, payload))

    def _make(self, units: tuple[str, ...], attempt: int, payload: Optional[tuple[Any, ...]]) -> Chunk:
        chunk = Chunk(self.next_id, units, attempt, payload)
        self.next_id += 1
        return chunk


class Batch:
    """One run of a batch: ``with Batch(...) as b: b.start(); b.run()``.

    Leaving the ``with`` block stops the executor (cancelling its work
    unless the run finished), counts what stopped workers completed,
    writes the final status and says the summary once.  SIGTERM stops the
    run like Ctrl-C while it is inside the block.

    Args:
        plan: the missing units.
        job: what the workers run; its stores are read to settle chunks
            whose workers stopped or died.
        executor: where chunks run.
        settings: the batch's options.
        result: filled in as the run goes (a caller keeps it when the
            run is interrupted).
        status_path: the status file (``None``: none is written).
        started: ``time.monotonic()`` when the run began (planning included).
        claims: this run's open claim book when other runs may share the
            output folder: chunks then hold only units claimed here, and
            the run waits for the units other live runs hold.
    """

    def __init__(
        self,
        plan: Plan,
        job: Job,
        executor: Executor,
        settings: BatchSettings,
        result: BatchResult,
        status_path: Optional[Path],
        started: float,
        claims: Optional[ClaimBook] = None,
    ) -> None:
        self.plan = plan
        self.job = job
        self.executor = executor
        self.settings = settings
        self.result = result
        self.started = started
        self.in_flight: dict[int, _InFlight] = {}
        #: the executor was told that no new chunk will come
        self._told_last = False
        self.done_units = 0
        self.failed_units = 0
        self.per_item = settings.on_event is not None
        self.shared = SharedWork(claims, plan.missing) if claims is not None else None
        self.queue = _WorkQueue(plan, Chunker(settings.chunk_size, 1), self.shared)
        settled_before = plan.done_before + plan.failed_before
        self.bar = ProgressDisplay(result.total, settled_before, plan.failed_before, settings.progress)
        self.status = StatusWriter(status_path, result.total, plan.done_before, 0, executor.description)
        self._in_main = threading.current_thread() is threading.main_thread()
        self._previous: Union[Callable[[int, Optional[FrameType]], Any], int, None] = None

    # -- counts ------------------------------------------------------------

    @property
    def done(self) -> int:
        """Units complete, before this run and now."""
        return self.plan.done_before + self.done_units + self.result.done_elsewhere

    @property
    def failed(self) -> int:
        """Units failed, before this run and now."""
        return self.plan.failed_before + self.failed_units + self.result.failed_elsewhere

    def _emit(self, kind: str, **kw: Any) -> None:
        hook = self.settings.on_event
        if hook is not None:
            hook(BatchEvent(kind, total=self.result.total, done=self.done, failed=self.failed, **kw))

    def _settle(
        self,
        state: _InFlight,
        done: Sequence[str],
        failed: Sequence[str],
        items: Optional[Sequence[Sequence[str]]] = None,
    ) -> None:
        """Count the units of ``done`` and ``failed`` not heard of before: each unit is counted once."""
        heard = state.heard
        # The usual messages, judged by set operations in C: all new (a
        # worker's progress), or all heard of (a report repeating it).
        if heard.isdisjoint(done) and heard.isdisjoint(failed):
            fresh, lost = list(done), list(failed)
        elif heard.issuperset(done) and heard.issuperset(failed):
            return
        else:
            fresh = [u for u in done if u not in heard]
            lost = [u for u in failed if u not in heard]
        if items is None:
            n_items = len(fresh)
        else:
            n_items = sum(len(i) for u, i in zip(done, items, strict=True) if u not in heard)
        if not fresh and not lost:
            return
        heard.update(fresh)
        heard.update(lost)
        if self.shared is not None:
            self.shared.book.settle(fresh)
            self.shared.book.settle(lost)
        self.result.computed += n_items
        self.result.failed += len(lost)
        self.bar.advance_many(len(fresh), len(lost))
        if not self.per_item:
            self.done_units += len(fresh)
            self.failed_units += len(lost)
            return
        # One event per unit, each with the counts as of that unit.
        chunk_id = state.chunk.id
        for unit in fresh:
            self.done_units += 1
            self._emit('item', key=unit, ok=True, chunk_id=chunk_id)
        for unit in lost:
            self.failed_units += 1
            self._emit('item', key=unit, ok=False, chunk_id=chunk_id)

    def _settle_from_stores(self, state: _InFlight) -> list[str]:
        """Settle the units of a stopped chunk that were not heard of from what the stores hold.

        Returns:
            The units neither stored nor failed, in chunk order.
        """
        delegate, failures = self.job.delegate, self.job.failures
        # A job whose units store other keys than their own says itself.
        finished = getattr(self.job, 'unit_done', delegate.exists)
        done, failed, unfinished = [], [], []
        for unit in state.chunk.units:
            if unit in state.heard:
                continue
            if finished(unit):
                done.append(unit)
            elif failures.exists(unit):
                failed.append(unit)
            else:
                unfinished.append(unit)
        self._settle(state, done, failed)
        return unfinished

    # -- the run -----------------------------------------------------------

    def __enter__(self) -> 'Batch':
        if self._in_main:
            self._previous = signal.signal(signal.SIGTERM, _on_sigterm)
        return self

    def start(self) -> int:
        """Start the executor; returns (and records) how many workers it really uses."""
        settings, plan = self.settings, self.plan
        jobs = -(-len(plan.missing) // settings.chunk_size) if settings.chunk_size else len(plan.missing)
        workers = self.executor.start(self.job, settings.workers, limit=jobs)
        self.result.workers = workers
        self.queue.chunker = Chunker(settings.chunk_size, workers)
        self.status.data.update(workers=workers, executor=self.executor.description)
        dashboard = getattr(self.executor, 'dashboard_link', None)
        if dashboard:
            # A cluster's dashboard, for whoever watches the batch (stashworks status).
            self.status.data['dashboard'] = dashboard
        logger.info(
            'computing %d of %d items with %s (%d done before, %d failed before)',
            len(plan.missing),
            self.result.total,
            self.executor.description,
            plan.done_before,
            plan.failed_before,
        )
        return workers

    def run(self) -> None:
        """Feed the executor and count its reports until every unit is settled."""
        self._emit('start')
        self.status.update(self.done, self.failed, force=True)
        while True:
            self._dispatch()
            if not self._told_last and self.queue.exhausted:
                # Workers may stop as soon as they are done, not at shutdown.
                self._told_last = True
                self.executor.no_more_chunks()
            self._hear_others()
            if not self.in_flight:
                if self.shared is None or not self.shared.waiting:
                    return
                # Other live runs hold the units left: wait for them.
                time.sleep(0.1)
                continue
            for report in self.executor.reports(timeout=0.5):
                if isinstance(report, ChunkReport):
                    self._on_report(report)
                    break  # dispatch before reading on
                self._on_progress(report)
            self.status.update(self.done, self.failed)
            self.bar.tick()

    def _hear_others(self) -> None:
        """Count what other runs settled, and refresh this run's record."""
        shared = self.shared
        if shared is None:
            return
        done, failed = shared.drain()
        if done or failed:
            self.result.done_elsewhere += done
            self.result.failed_elsewhere += failed
            self.bar.advance_many(done, failed)
        result = self.result
        shared.book.update(
            total=result.total, done=self.done, failed=self.failed, computed=result.computed, workers=result.workers
        )

    def _dispatch(self) -> None:
        # At least one chunk in flight, whatever the executor says, so the
        # batch never stalls with work left.
        while True:
            room = self.executor.free_slots()
            if room <= 0 and self.in_flight:
                return
            chunk = self.queue.next_chunk(room)
            if chunk is None:
                return
            self.in_flight[chunk.id] = _InFlight(chunk)
            self.result.chunks += 1
            self.executor.submit(chunk)
            self._emit('submit', chunk_id=chunk.id, size=len(chunk.units))

    def _on_progress(self, msg: Report) -> None:
        state = self.in_flight.get(msg.chunk_id)
        if state is None:
            return  # a late message about a chunk already settled
        if isinstance(msg, Progress):
            self._settle(state, msg.done, msg.failed, msg.items)
        elif isinstance(msg, ItemEvent):
            self._settle(state, (msg.key,) if msg.ok else (), () if msg.ok else (msg.key,))

    def _on_report(self, report: ChunkReport) -> None:
        state = self.in_flight.pop(report.chunk_id, None)
        if state is None:
            logger.warning('report for unknown chunk %d ignored', report.chunk_id)
            return
        self._settle(state, report.done, report.failed, report.items)
        chunk = state.chunk
        if report.lost:
            self._on_lost(state, report)
        else:
            elapsed = report.extra.get('elapsed')
            if isinstance(elapsed, (int, float)) and state.heard:
                self.queue.chunker.observe(len(state.heard), float(elapsed))
            if len(state.heard) < len(chunk.units):
                # Cut short on purpose (a worker recycled for memory or
                # its item cap): the rest goes on, not counted as a death.
                self.queue.requeue(chunk, [u for u in chunk.units if u not in state.heard], chunk.attempt)
            self._emit('chunk', chunk_id=chunk.id, size=len(chunk.units))
        self.status.update(self.done, self.failed)

    def _on_lost(self, state: _InFlight, report: ChunkReport) -> None:
        self.result.lost += 1
        chunk = state.chunk
        # Units the worker finished but did not announce: the stores decide.
        unfinished = self._settle_from_stores(state)
        if not unfinished:
            return
        culprit, rest = unfinished[0], unfinished[1:]
        reason = report.reason or 'worker lost'
        max_retries = self.settings.max_retries
        timeout = report.extra.get('timeout')
        limit = float(timeout) if report.error_type == ITEM_TIMEOUT and isinstance(timeout, (int, float)) else None
        if limit is not None:
            logger.warning(
                'key %r ran past the item timeout of %g s on worker %s', culprit, limit, report.worker or '?'
            )
        else:
            logger.warning(
                'worker %s died on key %r (%s); attempt %d of %d',
                report.worker or '?',
                culprit,
                reason,
                chunk.attempt + 1,
                max_retries + 1,
            )
        self._emit('lost', key=culprit, chunk_id=chunk.id, size=len(chunk.units), message=reason)
        # A unit past item_timeout would only hang again: recorded at once.
        # Otherwise the culprit is retried max_retries times, even when it
        # shared its chunk (max_retries=0: never).
        if limit is not None or chunk.attempt >= max_retries:
            pid = report.extra.get('pid', 0)
            record = FailureRecord(
                key=culprit,
                error_type=report.error_type,
                message=timeout_message(culprit, limit)
                if limit is not None
                else f'the worker died while computing key {culprit!r}: {reason}',
                worker=report.worker,
                pid=pid if isinstance(pid, int) else 0,
                time=utc_now(),
                attempts=chunk.attempt + 1,
            )
            record_failure(self.job.failures, record)
            self._settle(state, (), (culprit,))
        else:
            self.queue.requeue(chunk, [culprit], chunk.attempt + 1)
        # The others were innocent bystanders: same attempt count.
        self.queue.requeue(chunk, rest, chunk.attempt)

    def __exit__(self, exc_type: object, exc: Optional[BaseException], tb: object) -> None:
        if exc is None:
            state = 'finished'
        elif isinstance(exc, KeyboardInterrupt):
            state = 'interrupted'
            self.result.interrupted = True
        else:
            state = 'crashed'
        try:
            if self._in_main:
                # No second SIGTERM mid-shutdown: the workers must be reaped.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if state == 'finished' and self.shared is not None:
                # Every chunk reported: the claims go while the workers exit.
                self._release_claims(state)
            self.executor.shutdown(cancel=state != 'finished')
            if state != 'finished':
                try:
                    # Stopped workers' last units were never announced.
                    for flight in self.in_flight.values():
                        self._settle_from_stores(flight)
                    self.in_flight.clear()
                except Exception as reconcile_exc:
                    logger.error('cannot count the items finished before the stop: %s', reconcile_exc)
        finally:
            if self.shared is not None and not self.shared.book.closed:
                self._release_claims(state)
            if self._in_main:
                signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._summarise(state, exc)
        if isinstance(exc, ExecutorError):
            raise BatchError(f'the batch for {self.job.delegate!r} could not go on: {exc}') from exc

    def _release_claims(self, state: str) -> None:
        """Give this run's claims up (after its workers stopped) and record how it ended."""
        assert self.shared is not None
        try:
            self._hear_others()
            self.shared.book.close(state, cleanup=state == 'finished' and self.result.missing == 0)
        except Exception as exc:
            # Other runs take the claims over when they expire.
            logger.error('cannot release the claims of this run: %s', exc)

    def _summarise(self, state: str, exc: Optional[BaseException] = None) -> None:
        result = self.result
        result.elapsed = time.monotonic() - self.started
        if state == 'crashed' and exc is not None:
            # `stashworks status` shows it, instead of advising a rerun
            # that would stop on the same error.
            self.status.data['error'] = f'{type(exc).__name__}: {exc}'
        self.status.update(self.done, self.failed, state=state, force=True)
        summary = f'stashworks: {result}'
        # The summary is said once, by logging (the bar closes without
        # one, so `print(result)` after it does not repeat it); the
        # command line prints its own and drops records marked SUMMARY.
        self.bar.close()
        if state == 'finished':
            logger.info('%s', summary, extra=SUMMARY)
            self._emit('finish', result=result)
        elif state == 'interrupted':
            logger.warning(
                '%s. Every completed item is saved; run the batch again to compute the %d missing items. Status: %s',
                summary,
                result.missing,
                self.status.path or '(none)',
                extra=SUMMARY,
            )
            self._emit('interrupted', result=result)
        else:
            cause = f': {type(exc).__name__}: {exc}' if exc is not None else ''
            logger.error('%s; the batch crashed%s', summary, cause, extra=SUMMARY)
