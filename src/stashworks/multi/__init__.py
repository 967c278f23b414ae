"""The batch layer: :class:`MultiProcessStash` and its executors."""

from __future__ import annotations

from .batch import BatchResult
from .executor import Chunk, ChunkReport, Executor, ExecutorError, ItemEvent
from .failures import FailureRecord, FailureStash
from .pool import LocalPoolExecutor
from .progress import BatchEvent
from .serial import SerialExecutor
from .stash import MultiProcessFactoryStash, MultiProcessStash
from .status import read_status
from .workers import parse_memory, resolve_workers, usable_cpus

__all__ = [
    'BatchEvent',
    'BatchResult',
    'Chunk',
    'ChunkReport',
    'Executor',
    'ExecutorError',
    'FailureRecord',
    'FailureStash',
    'ItemEvent',
    'LocalPoolExecutor',
    'MultiProcessFactoryStash',
    'MultiProcessStash',
    'SerialExecutor',
    'parse_memory',
    'read_status',
    'resolve_workers',
    'usable_cpus',
]
