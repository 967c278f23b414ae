"""The serial executor: chunks run one after another in this process.

Useful to debug a job (breakpoints and ``print`` work, tracebacks are
local) and for delegates that live in memory, which worker processes
cannot write to.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator, Optional, Union

from .executor import Executor
from .job import Job
from .wire import Chunk, ExecutorError, Report

__all__ = ['SerialExecutor']


class SerialExecutor(Executor):
    """Runs each chunk in the calling process when its reports are read."""

    in_process = True

    def __init__(self) -> None:
        self._job: Optional[Job] = None
        self._queue: deque[Chunk] = deque()

    def start(self, job: Job, workers: Union[int, float] = 0, limit: Optional[int] = None) -> int:
        self._job = job
        self._queue.clear()
        return 1

    def submit(self, chunk: Chunk) -> None:
        if self._job is None:
            raise ExecutorError(f'{self!r}: submit() before start()')
        self._queue.append(chunk)

    def free_slots(self) -> int:
        # One chunk at a time: the next is cut after this one's timing is known.
        return 0 if self._queue else 1

    def reports(self, timeout: Optional[float] = None) -> Iterator[Report]:
        # timeout is moot: every chunk runs to its end before this yields.
        while self._queue and self._job is not None:
            yield self._job.run_chunk(self._queue.popleft())

    def shutdown(self, cancel: bool = False) -> None:
        self._queue.clear()
        self._job = None

    @property
    def description(self) -> str:
        return 'serial (in process)'

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'
