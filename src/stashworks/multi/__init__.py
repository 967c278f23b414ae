"""The batch layer: :class:`MultiProcessStash` and its executors.

Module map (each imports only those above it): ``wire`` (what travels),
``fingerprint`` (the version of the code), ``layout`` (where files go),
``workers``, ``chunking``, ``progress``, ``failures``, ``status``, ``job``
(the worker side), ``units`` (unit identities, the record of finished
units, planning by unit), ``unitjob`` (computing and recording units in
a worker), ``executor`` (the contract),
``serial``/``pool``/``dask`` (executors), ``settings``, ``plan``,
``batch`` (the engine), ``stash`` (the public stashes).
"""

from __future__ import annotations

from .batch import BatchResult
from .batchstatus import BatchStatus
from .executor import Executor
from .failures import FailureRecord, FailureStash
from .fingerprint import fingerprint
from .pool import LocalPoolExecutor
from .progress import BatchEvent
from .runs import RunView, read_runs
from .serial import SerialExecutor
from .settings import BatchSettings
from .stash import MultiProcessFactoryStash, MultiProcessStash
from .status import read_status
from .units import Census, StaleItemsError, UnitLog, UnitRecord, read_census, unit_id
from .wire import Chunk, ChunkReport, ExecutorError, ItemEvent, Progress
from .workers import parse_memory, resolve_workers, usable_cpus

__all__ = [
    'BatchEvent',
    'BatchResult',
    'BatchSettings',
    'BatchStatus',
    'Census',
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
    'Progress',
    'RunView',
    'SerialExecutor',
    'StaleItemsError',
    'UnitLog',
    'UnitRecord',
    'fingerprint',
    'parse_memory',
    'read_census',
    'read_runs',
    'read_status',
    'resolve_workers',
    'unit_id',
    'usable_cpus',
]
