"""The local process pool: one process per worker, each with its own pipes.

The parent waits on every worker's result pipe and process sentinel at
once, so it sees a death at once and knows which chunk that worker held.
docs/engine.md ("The local pool") describes the messages and signals.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from types import FrameType
from typing import Any, Iterator, Optional, Union

import dill
import multiprocess
from multiprocess.connection import wait

from .._text import plural
from .executor import Executor
from .guard import ITEM_TIMEOUT, death_handle
from .job import Job, Ledger, WorkerStop, dump_job, load_job
from .layout import worker_name
from .mainclasses import unreadable_main_hidden
from .wire import Chunk, ChunkReport, ExecutorError, Progress, Report
from .workers import resolve_workers

__all__ = ['LocalPoolExecutor', 'exit_reason']

logger = logging.getLogger(__name__)

#: Exit code of a worker that noticed its parent is gone.
ORPHAN_EXIT = 70
#: Workers that die before they are ready, in a row, before giving up.
MAX_START_FAILURES = 3
#: Seconds a worker holds finished items before it reports them.
FLUSH_INTERVAL = 0.1
#: The message that stops a worker once the chunks before it are done.
_STOP = pickle.dumps(None, pickle.HIGHEST_PROTOCOL)
_PR_SET_PDEATHSIG = 1


def exit_reason(exitcode: Optional[int]) -> str:
    """Describe a process exit code: ``'killed by signal 9 (SIGKILL)'``, ``'exit code 3'``."""
    if exitcode is None:
        return 'still running'
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = 'unknown signal'
        return f'killed by signal {-exitcode} ({name})'
    return f'exit code {exitcode}'


# -- messages ----------------------------------------------------------------


class _Dilled:
    """A message pickled by dill, inside a plainly pickled envelope."""

    __slots__ = ('data',)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Dilled, (self.data,))


def dumps(msg: object) -> bytes:
    """Pickle a pipe message, with the C pickler when it can.

    Keys, counts and reports pickle plainly, and fast.  A message plain
    pickle refuses (a work unit of a local class...) or that names
    ``__main__`` (which a spawned worker may not have, where dill sends
    the class itself) goes through dill instead.

    Raises:
        Exception: whatever dill raises for a message it cannot pickle either.
    """
    try:
        data = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)
    except Exception:
        data = b''
    if data and b'__main__' not in data:
        return data
    return pickle.dumps(_Dilled(dill.dumps(msg)), pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    """Unpickle what :func:`dumps` made."""
    msg = pickle.loads(data)
    if isinstance(msg, _Dilled):
        return dill.loads(msg.data)
    return msg


# -- the worker side ---------------------------------------------------------


_libc: Any = None


def _find_libc() -> Any:
    """The C library, looked up once (in the parent, so forked workers start without the lookup)."""
    global _libc
    if _libc is None and sys.platform.startswith('linux'):
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    return _libc


def _set_pdeathsig() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies."""
    libc = _find_libc()
    if not libc:
        return
    try:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except AttributeError:
        # No prctl: the parent checks below still end an orphan.
        pass


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    # WorkerStop, which the job lets through (it records any other
    # exception as the unit's failure); atomic_write removes its temp file
    # on the way out.
    raise WorkerStop(128 + signum)


def _memory_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class _Outbox:
    """A worker's result pipe: whole messages, and settled units in batches.

    The running chunk appends each settled unit to its
    :class:`~stashworks.multi.job.Ledger`; the task thread sends what was
    added since the last time, as one ``('items', chunk_id, done, failed)``
    message every ``interval`` seconds, and the main thread sends the rest
    with the chunk's end.  One message per item would cost more than a
    tiny item itself, in the worker and in the parent; this way an item
    costs the worker nothing but the append.  Both threads send, so a lock
    keeps messages whole.

    Units are settled in chunk order, so the done units of a message are
    usually a run of the chunk's own units: the message then carries that
    run as a ``slice`` of the chunk, which the parent cuts from the chunk
    it sent, instead of the keys themselves (a tiny item's key costs
    about as much to pickle and unpickle as the item).
    """

    def __init__(self, conn: Any, interval: float) -> None:
        self._conn = conn
        self.interval = interval
        self._lock = threading.Lock()
        self._chunk_id = -1
        self._ledger = Ledger()
        self._units: tuple[str, ...] = ()
        self._sent = (0, 0)
        self._last = time.monotonic()

    def send(self, msg: object) -> None:
        """Send one message now."""
        data = dumps(msg)
        with self._lock:
            self._conn.send_bytes(data)

    def watch(self, chunk_id: int, ledger: Ledger, units: tuple[str, ...] = ()) -> None:
        """Report the units appended to ``ledger`` from now on, as those of chunk ``chunk_id`` (``units``)."""
        with self._lock:
            self._chunk_id, self._ledger, self._units = chunk_id, ledger, units
            self._sent = (0, 0)

    def _unsent(self) -> tuple[Union[slice, tuple[str, ...]], tuple[str, ...]]:
        # Read the lengths once: the main thread may append meanwhile,
        # and what it adds past them goes in the next message.
        done, failed = self._ledger.done, self._ledger.failed
        sent_done, sent_failed = self._sent
        n_done, n_failed = len(done), len(failed)
        self._sent = (n_done, n_failed)
        new = done[sent_done:n_done]
        if not n_failed and new:
            # No unit failed yet, so done units sit where they sit in the
            # chunk; the comparison is of the very same objects, in C.
            run = self._units[sent_done:n_done]
            if len(run) == len(new) and new == list(run):
                return slice(sent_done, n_done), ()
        return tuple(new), tuple(failed[sent_failed:n_failed])

    def flush(self, due_only: bool = False) -> None:
        """Send the units not sent yet (with ``due_only``, only if the interval has passed)."""
        with self._lock:
            now = time.monotonic()
            if due_only and now - self._last < self.interval:
                return
            done, failed = self._unsent()
            if not failed and (done.start == done.stop if isinstance(done, slice) else not done):
                return
            self._conn.send_bytes(pickle.dumps(('items', self._chunk_id, done, failed), pickle.HIGHEST_PROTOCOL))
            self._last = now

    def end(self, report: ChunkReport) -> None:
        """End the chunk: the units not sent yet, and the report's other facts (not its unit lists)."""
        with self._lock:
            done, failed = self._unsent()
            msg = ('end', report.chunk_id, done, failed, report.worker, report.extra)
            self._conn.send_bytes(dumps(msg))
            self._chunk_id = -1


def _worker_main(
    task_r: Any,
    result_w: Any,
    job_bytes: bytes,
    memory_limit: Optional[int],
    max_items: Optional[int],
    flush_interval: float = FLUSH_INTERVAL,
) -> None:
    """The body of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _set_pdeathsig()
    ppid = os.getppid()
    if ppid == 1:
        os._exit(ORPHAN_EXIT)  # the parent died before we set the death signal
    out = _Outbox(result_w, flush_interval)
    tasks: queue.Queue[Optional[Chunk]] = queue.Queue()

    def read_tasks() -> None:
        # A thread drains the task pipe, so the parent never blocks on a
        # full pipe while this worker is busy sending results.  It never
        # sends itself: a send blocks while the parent is busy sending a
        # chunk here, and the two would wait for each other for ever.
        # Between tasks it checks that the parent is still there (where
        # PR_SET_PDEATHSIG is missing).
        while True:
            try:
                if not task_r.poll(flush_interval):
                    if os.getppid() != ppid:
                        os._exit(ORPHAN_EXIT)
                    continue
                data = task_r.recv_bytes()
            except (EOFError, OSError):
                os._exit(ORPHAN_EXIT)  # the parent's end is gone
            try:
                msg = loads(data)
            except Exception:
                out.send(('error', 'could not load a chunk:\n' + traceback.format_exc()))
                os._exit(1)
            tasks.put(msg)
            if msg is None:
                return

    def send_finished_items() -> None:
        # The items finished so far, every flush interval, from a thread
        # of their own (see read_tasks).
        while True:
            time.sleep(flush_interval)
            try:
                out.flush(due_only=True)
            except (EOFError, OSError):
                os._exit(ORPHAN_EXIT)  # the parent's end is gone

    try:
        job = load_job(job_bytes)
    except Exception:
        out.send(('error', 'could not load the job:\n' + traceback.format_exc()))
        return
    # Only this worker's own stop passes through the job: a SystemExit or
    # KeyboardInterrupt the job raises is its unit's failure.
    job.passthrough = (WorkerStop,)
    threading.Thread(target=read_tasks, name='stashworks-tasks', daemon=True).start()
    threading.Thread(target=send_finished_items, name='stashworks-items', daemon=True).start()
    out.send(('ready', os.getpid()))
    items = 0
    retire = ''
    ledger = Ledger()

    def limit_reached() -> str:
        if os.getppid() != ppid:
            os._exit(ORPHAN_EXIT)
        if max_items is not None and items + len(ledger.done) + len(ledger.failed) >= max_items:
            return f'reached {max_items} items'
        if memory_limit is not None:
            rss = _memory_rss()
            if rss > memory_limit:
                return f'memory {rss} bytes is over the limit of {memory_limit}'
        return ''

    def should_stop() -> bool:
        nonlocal retire
        retire = limit_reached()
        return bool(retire)

    # Asked after every item only when there is a limit to check; the
    # task thread watches for the parent's death meanwhile.
    stop_check = should_stop if max_items is not None or memory_limit is not None else None
    while True:
        chunk = tasks.get()
        if chunk is None:
            return
        out.send(('start', chunk.id))
        ledger = Ledger()
        out.watch(chunk.id, ledger, chunk.units)
        report = job.run_chunk(chunk, stop_check, ledger)
        out.end(report)
        items += len(ledger.done) + len(ledger.failed)
        ledger = Ledger()
        retire = retire or limit_reached()
        if retire:
            out.send(('retire', retire))
            return


# -- the parent side ---------------------------------------------------------


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, proc: Any, task_w: Any, result_r: Any) -> None:
        self.proc = proc
        self.task_w = task_w
        self.result_r = result_r
        #: chunks sent and not reported, oldest (the running one) first
        self.chunks: deque[Chunk] = deque()
        self.started: set[int] = set()
        #: per chunk sent, the units already passed on as done and failed
        self.relayed: dict[int, tuple[list[str], list[str]]] = {}
        self.ready = False
        self.retiring = ''
        #: sent its stop message behind its last chunk (no more chunks)
        self.stopping = False
        self.error = ''
        self.closed = False
        #: a pidfd readable once the process exits (None: use its sentinel),
        #: which a process the job forked cannot hold open
        self.death = death_handle(self.pid) if proc.pid is not None else None
        #: when the unit it runs now started, as far as the parent knows
        #: (``None`` between chunks)
        self.since: Optional[float] = None
        #: the item timeout it was stopped for (0: not stopped for one)
        self.timed_out = 0.0

    @property
    def pid(self) -> int:
        return int(self.proc.pid or 0)

    @property
    def death_signal(self) -> Any:
        """What to wait on for its exit."""
        return self.death if self.death is not None else self.proc.sentinel

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the process to exit, and reap it."""
        if self.death is None:
            self.proc.join(timeout)
            return
        # Not proc.join(): it waits on the sentinel, which a helper the job
        # forked keeps open after the worker itself exited.
        if self.proc.exitcode is None:
            wait([self.death], timeout)
        # fork, spawn: reaped by now.  forkserver: its server sends the exit
        # code a moment after the exit (through a sentinel no job holds).
        self.proc.join(0 if self.proc.exitcode is not None else min(timeout, 1.0))

    def release(self) -> None:
        """Close the pidfd (once the process is reaped or given up on)."""
        if self.death is not None:
            try:
                os.close(self.death)
            except OSError:
                pass
            self.death = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for conn in (self.task_w, self.result_r):
            try:
                conn.close()
            except OSError:
                pass


class LocalPoolExecutor(Executor):
    """Runs chunks in local worker processes that survive each other's deaths.

    Args:
        start_method: ``'fork'``, ``'spawn'`` or ``'forkserver'``; the
            platform's default when ``None``.
        memory_limit: bytes of RSS past which a worker is replaced after
            its current item.
        max_items_per_worker: items after which a worker is replaced.
        prefetch: chunks queued at each worker (one running, the rest
            waiting), so no worker idles between chunks.
        stop_timeout: seconds a cancelled worker gets to stop after SIGTERM
            before it is killed.
        flush_interval: seconds a worker holds finished items before it
            reports them in one message.
        item_timeout: seconds one unit may run; a worker past it is
            killed and replaced, and its chunk reported lost with
            ``error_type`` ``'ItemTimeout'`` (``None``: no limit).
    """

    def __init__(
        self,
        start_method: Optional[str] = None,
        memory_limit: Optional[int] = None,
        max_items_per_worker: Optional[int] = None,
        prefetch: int = 2,
        stop_timeout: float = 3.0,
        flush_interval: float = FLUSH_INTERVAL,
        item_timeout: Optional[float] = None,
    ) -> None:
        self.item_timeout = item_timeout
        self.start_method = start_method
        self.memory_limit = memory_limit
        self.max_items_per_worker = max_items_per_worker
        self.prefetch = max(1, prefetch)
        self.stop_timeout = stop_timeout
        self.flush_interval = flush_interval
        self._ctx: Any = None
        self._job_bytes = b''
        self._size = 0
        self._workers: list[_Worker] = []
        self._queue: deque[Chunk] = deque()
        self._out: deque[Report] = deque()
        self._outstanding = 0
        self._start_failures = 0
        self._started = 0
        self._down = True
        #: the engine said no new chunk will come (see :meth:`no_more_chunks`)
        self._last_chunks = False

    @property
    def description(self) -> str:
        method = self._ctx.get_start_method() if self._ctx is not None else self.start_method or 'default'
        return f'local pool ({plural(self._size, "worker")}, {method})'

    @property
    def workers_started(self) -> int:
        """How many worker processes this executor started in all."""
        return self._started

    def live_pids(self) -> list[int]:
        """The process ids of the workers alive now."""
        return [w.pid for w in self._workers if w.proc.is_alive()]

    def start(self, job: Job, workers: Union[int, float] = 0, limit: Optional[int] = None) -> int:
        """Serialize ``job`` once and start the worker processes.

        ``workers`` is read against this process's usable CPUs and, with
        a ``memory_limit``, the memory available now.

        Returns:
            How many worker processes run the batch.

        Raises:
            ExecutorError: the job cannot be serialized, or the start
                method is unknown.
        """
        try:
            self._ctx = multiprocess.get_context(self.start_method)
        except ValueError as exc:
            raise ExecutorError(f'unknown start method {self.start_method!r}: {exc}') from exc
        # Once, here: every worker gets the same bytes.
        self._job_bytes = dump_job(job, 'worker processes')
        self._size = resolve_workers(workers, jobs=limit, memory_per_worker=self.memory_limit)
        self._down = False
        self._last_chunks = False
        _find_libc()  # here, not in every worker
        for _ in range(self._size):
            self._spawn()
        return self._size

    def _spawn(self) -> None:
        ctx = self._ctx
        task_r, task_w = ctx.Pipe(duplex=False)
        result_r, result_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker_main,
            args=(
                task_r,
                result_w,
                self._job_bytes,
                self.memory_limit,
                self.max_items_per_worker,
                self.flush_interval,
            ),
            name=f'stashworks-worker-{self._started}',
        )
        # Not a daemon: a daemonic worker could not start processes of its
        # own; shutdown() reaps every worker instead.
        try:
            # A script read from stdin cannot be run again by a spawned worker.
            with unreadable_main_hidden():
                proc.start()
        except BaseException:
            # Ctrl-C half-way through a start: a worker nobody tracks must
            # not outlive this call.
            if proc.pid is not None:
                proc.kill()
                proc.join(2.0)
            for conn in (task_r, task_w, result_r, result_w):
                conn.close()
            raise
        self._started += 1
        # The child's ends belong to the child now.
        task_r.close()
        result_w.close()
        self._workers.append(_Worker(proc, task_w, result_r))
        logger.debug('started worker %s (pid %d)', proc.name, proc.pid)

    def submit(self, chunk: Chunk) -> None:
        if self._down:
            raise ExecutorError(f'{self!r} is not running; call start() first')
        self._queue.append(chunk)
        self._outstanding += 1

    def free_slots(self) -> int:
        """``prefetch`` chunks per worker (one running, the rest queued at it), less those outstanding."""
        return max(0, self._size * self.prefetch - self._outstanding)

    def no_more_chunks(self) -> None:
        """Let each worker stop once the chunks it holds are done.

        Once every chunk sent is at a worker, each worker gets its stop
        message behind its last chunk, so it ends as soon as it is done
        instead of waiting for :meth:`shutdown`: the first to finish stops
        while the others still compute.  A chunk submitted later (the
        units of a lost one) gets a fresh worker.
        """
        self._last_chunks = True

    def _dispatch(self) -> None:
        self._send_chunks()
        if self._last_chunks and not self._queue:
            self._send_stops()

    def _send_stops(self) -> None:
        """Tell every worker to stop after the chunks it holds (see :meth:`no_more_chunks`)."""
        stop = _STOP
        for w in self._workers:
            if w.stopping or w.retiring or w.closed:
                continue
            w.stopping = True
            try:
                w.task_w.send_bytes(stop)
            except (OSError, ValueError):
                pass  # dying: its sentinel will tell

    def _send_chunks(self) -> None:
        # Level by level: every worker gets a chunk to run before any gets
        # one to queue, so few chunks never pile up on one worker.
        for depth in range(self.prefetch):
            for w in self._workers:
                if not self._queue:
                    return
                if w.retiring or w.stopping or w.closed or len(w.chunks) > depth:
                    continue
                chunk = self._queue.popleft()
                try:
                    data = dumps(chunk)
                except Exception as exc:
                    raise ExecutorError(
                        f'cannot send chunk {chunk.id} (keys {chunk.keys[0]!r}...) to a worker: '
                        f'{type(exc).__name__}: {exc}'
                    ) from exc
                try:
                    w.task_w.send_bytes(data)
                except (OSError, ValueError):
                    # The worker is dying; its sentinel will tell.
                    self._queue.appendleft(chunk)
                    continue
                w.chunks.append(chunk)
                w.relayed[chunk.id] = ([], [])

    def _replace_workers(self) -> None:
        live = [w for w in self._workers if not w.retiring and not w.stopping and not w.closed]
        # A worker told to stop runs the chunks it holds; only the others need a worker.
        held = sum(len(w.chunks) for w in self._workers if w.stopping and not w.closed)
        needed = min(self._size, self._outstanding - held) - len(live)
        for _ in range(max(0, needed)):
            self._spawn()

    def _handle(self, w: _Worker, msg: Any) -> None:
        kind = msg[0]
        if kind == 'items':
            # Units ended: the one running now started about then.
            w.since = time.monotonic()
            self._relay(w, msg[1], self._units_of(w, msg[1], msg[2]), msg[3])
        elif kind == 'start':
            w.since = time.monotonic()
            w.started.add(msg[1])
        elif kind == 'end':
            w.since = None
            _, chunk_id, done, failed, worker, extra = msg
            self._relay(w, chunk_id, self._units_of(w, chunk_id, done), failed)
            all_done, all_failed = w.relayed.pop(chunk_id, ([], []))
            for i, chunk in enumerate(w.chunks):
                if chunk.id == chunk_id:
                    del w.chunks[i]
                    break
            w.started.discard(chunk_id)
            self._outstanding -= 1
            self._start_failures = 0
            # The full lists for the record; the engine counts each unit
            # once, from the Progress that passed it on.
            self._out.append(ChunkReport(chunk_id, tuple(all_done), tuple(all_failed), worker=worker, extra=extra))
        elif kind == 'ready':
            w.ready = True
        elif kind == 'retire':
            w.retiring = msg[1]
            logger.info('replacing worker %s: %s', worker_name(w.pid), msg[1])
        elif kind == 'error':
            w.error = msg[1]

    @staticmethod
    def _units_of(w: _Worker, chunk_id: int, done: Union[slice, tuple[str, ...]]) -> tuple[str, ...]:
        """The done units of a message: as sent, or cut from the chunk by the slice sent (see ``_Outbox``)."""
        if not isinstance(done, slice):
            return done
        for chunk in w.chunks:
            if chunk.id == chunk_id:
                return chunk.units[done]
        return ()  # a chunk no longer held: nothing to relay

    def _relay(self, w: _Worker, chunk_id: int, done: tuple[str, ...], failed: tuple[str, ...]) -> None:
        if not done and not failed:
            return
        relayed = w.relayed.get(chunk_id)
        if relayed is not None:
            relayed[0].extend(done)
            relayed[1].extend(failed)
        self._out.append(Progress(chunk_id, done, failed))

    def _drain(self, w: _Worker) -> None:
        """Read every message the worker has sent so far."""
        while not w.closed:
            try:
                if not w.result_r.poll(0):
                    return
                msg = loads(w.result_r.recv_bytes())
            except (EOFError, OSError):
                return
            except Exception as exc:
                # A message cut short by the worker's death: what follows
                # cannot be trusted; its sentinel reports the death.
                logger.warning('unreadable message from worker %s: %s: %s', worker_name(w.pid), type(exc).__name__, exc)
                w.close()
                return
            self._handle(w, msg)

    def _reap(self, w: _Worker) -> None:
        """A worker exited: report its running chunk lost, requeue the rest."""
        self._drain(w)
        w.join(1.0)
        reason = exit_reason(w.proc.exitcode)
        if w.timed_out:
            reason = f'stopped after the item timeout of {w.timed_out:g} s'
        self._workers.remove(w)
        w.close()
        w.release()
        if w.error:
            raise ExecutorError(f'a worker {w.error}')
        if not w.ready:
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                hint = ''
                if self._ctx.get_start_method() != 'fork':
                    hint = (
                        f'; with the {self._ctx.get_start_method()!r} start method, a script must start '
                        f'its batch under "if __name__ == \'__main__\':"'
                    )
                raise ExecutorError(
                    f'{self._start_failures} workers in a row died before they were ready ({reason}){hint}'
                )
        requeue: list[Chunk] = []
        for chunk in w.chunks:
            done, failed = w.relayed.pop(chunk.id, ([], []))
            if chunk.id in w.started:
                self._outstanding -= 1
                self._out.append(
                    ChunkReport(
                        chunk_id=chunk.id,
                        done=tuple(done),
                        failed=tuple(failed),
                        lost=True,
                        reason=reason,
                        worker=worker_name(w.pid),
                        extra={'pid': w.pid, 'timeout': w.timed_out} if w.timed_out else {'pid': w.pid},
                        error_type=ITEM_TIMEOUT if w.timed_out else 'WorkerDied',
                    )
                )
            else:
                requeue.append(chunk)
        # Chunks it never started go first to the next free worker.
        self._queue.extendleft(reversed(requeue))
        if not w.retiring and not w.timed_out and (w.chunks or not w.stopping):
            logger.warning('worker %s died (%s) holding %s', worker_name(w.pid), reason, plural(len(w.chunks), 'chunk'))

    def reports(self, timeout: Optional[float] = None) -> Iterator[Report]:
        last = time.monotonic()
        while True:
            while self._out:
                yield self._out.popleft()
                last = time.monotonic()
            if self._outstanding <= 0 or self._down:
                return
            self._replace_workers()
            self._dispatch()
            wait_for: Optional[float] = None
            if timeout is not None:
                wait_for = timeout - (time.monotonic() - last)
                if wait_for <= 0:
                    return
            wait_for = self._stop_overdue(wait_for)
            by_obj: dict[Any, tuple[_Worker, bool]] = {}
            for w in self._workers:
                if not w.closed:
                    by_obj[w.result_r] = (w, False)
                by_obj[w.death_signal] = (w, True)
            ready = wait(list(by_obj), timeout=wait_for)
            dead: list[_Worker] = []
            for obj in ready:
                w, is_sentinel = by_obj[obj]
                if is_sentinel:
                    if w not in dead:
                        dead.append(w)
                else:
                    self._drain(w)
            for w in dead:
                self._reap(w)

    def _stop_overdue(self, wait_for: Optional[float]) -> Optional[float]:
        """Kill each worker whose current unit ran past ``item_timeout``.

        Returns:
            ``wait_for``, shortened to the next deadline of a running unit.
        """
        limit = self.item_timeout
        if limit is None:
            return wait_for
        now = time.monotonic()
        for w in self._workers:
            if w.since is None or w.timed_out:
                continue
            left = w.since + limit - now
            if left > 0:
                wait_for = left if wait_for is None else min(wait_for, left)
                continue
            # SIGKILL: a unit stuck in C code never runs a SIGTERM handler.
            # Its death is then reported like any other, as a timeout.
            w.timed_out = limit
            # Info: the batch warns, naming the key.
            logger.info(
                'worker %s ran one item for more than %g s (item_timeout); stopping it', worker_name(w.pid), limit
            )
            try:
                os.kill(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return wait_for

    def shutdown(self, cancel: bool = False) -> None:
        if self._down and not self._workers:
            return
        self._down = True
        self._queue.clear()
        workers, self._workers = self._workers, []
        stop = _STOP
        for w in workers:
            if w.stopping:
                continue  # told already
            try:
                w.task_w.send_bytes(stop)
            except (OSError, ValueError):
                pass
        if cancel:
            for w in workers:
                if w.proc.is_alive():
                    try:
                        os.kill(w.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
        deadline = time.monotonic() + (self.stop_timeout if cancel else max(self.stop_timeout, 10.0))
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        for w in workers:
            if w.proc.is_alive():
                logger.warning('worker %s did not stop in time; killing it', worker_name(w.pid))
                w.proc.kill()
                w.join(2.0)
            w.close()
            w.release()
        self._outstanding = 0
        self._out.clear()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(start_method={self.start_method!r})'
