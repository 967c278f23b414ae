"""The serial executor: chunks run one after another in this process.

Useful to debug a job (breakpoints and ``print`` work, tracebacks are
local) and for delegates that live in memory, which worker processes
cannot write to.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Iterator, Optional

from .executor import Chunk, Executor, ExecutorError, Report

if TYPE_CHECKING:
    from .job import Job

__all__ = ['SerialExecutor']


class SerialExecutor(Executor):
    """Runs each chunk in the calling process when its reports are read.

    Item events of a chunk are delivered when the chunk ends.
    """

    item_events = True
    #: Chunks run in the calling process, so an in-memory delegate works.
    in_process = True

    def __init__(self) -> None:
        self._job: Optional['Job'] = None
        self._queue: deque[Chunk] = deque()
        self._out: deque[Report] = deque()

    def start(self, job: 'Job', workers: int) -> None:
        self._job = job
        self._queue.clear()

    def submit(self, chunk: Chunk) -> None:
        if self._job is None:
            raise ExecutorError(f'{self!r}: submit() before start()')
        self._queue.append(chunk)

    def reports(self, timeout: Optional[float] = None) -> Iterator[Report]:
        # timeout is moot: every chunk runs to its end before this yields.
        # Reports go through a buffer, so a caller that stops reading
        # half-way loses nothing.
        while True:
            if self._out:
                yield self._out.popleft()
                continue
            if not self._queue or self._job is None:
                return
            chunk = self._queue.popleft()
            events: list[Report] = []
            report = self._job.run_chunk(chunk, on_item=events.append)
            self._out.extend(events)
            self._out.append(report)

    def shutdown(self, cancel: bool = False) -> None:
        self._queue.clear()
        self._out.clear()
        self._job = None

    @property
    def description(self) -> str:
        return 'serial (in process)'

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'
