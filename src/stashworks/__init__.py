"""stashworks: parallel, resumable, progress-monitored batch processing.

Dict-like persistent *stashes* (:class:`Stash`), stacked into pipelines,
filled in parallel by :class:`MultiProcessStash`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .compose import SortedStash, UnionStash
from .dealloc import Deallocatable, dealloc
from .directory import DirectoryStash
from .errors import (
    BatchError,
    PersistError,
    SerializationError,
    StashClosedError,
    StashCorruptError,
    StashError,
    StashKeyError,
    StashReadError,
    StashReadOnlyError,
    StashSignatureError,
    StashWarning,
    StashWriteError,
)
from .factory import CacheStash, FactoryStash, OneShotFactoryStash
from .increment import IncrementKeyDirectoryStash
from .memory import DictionaryStash
from .multi import (
    BatchEvent,
    BatchResult,
    BatchStatus,
    FailureRecord,
    LocalPoolExecutor,
    MultiProcessFactoryStash,
    MultiProcessStash,
    SerialExecutor,
    StaleItemsError,
    read_status,
)
from .persisted import PersistableContainer, PersistedWork, persisted
from .serial import (
    SIGNING_KEY_ENV,
    SIGNING_KEY_FILE_ENV,
    DillSerializer,
    JsonSerializer,
    PickleSerializer,
    Serializer,
    SigningSerializer,
)
from .shelf import ShelveStash
from .stash import (
    MISSING,
    CloseableStash,
    DelegateStash,
    KeyLimitStash,
    PreemptiveStash,
    PrimablePreemptiveStash,
    PrimeablePreemptiveStash,
    PrimeableStash,
    ReadOnlyStash,
    Stash,
)

if TYPE_CHECKING:
    from .lmdbstash import LmdbStash
    from .multi.dask import ClusterError, DaskExecutor, remove_orphaned_jobs

__version__ = '0.1.0'

__all__ = [
    'MISSING',
    'SIGNING_KEY_ENV',
    'SIGNING_KEY_FILE_ENV',
    'BatchError',
    'BatchEvent',
    'BatchResult',
    'BatchStatus',
    'CacheStash',
    'CloseableStash',
    'ClusterError',
    'DaskExecutor',
    'Deallocatable',
    'DelegateStash',
    'DictionaryStash',
    'DillSerializer',
    'DirectoryStash',
    'FactoryStash',
    'FailureRecord',
    'IncrementKeyDirectoryStash',
    'JsonSerializer',
    'KeyLimitStash',
    'LmdbStash',
    'LocalPoolExecutor',
    'MultiProcessFactoryStash',
    'MultiProcessStash',
    'OneShotFactoryStash',
    'PersistError',
    'PersistableContainer',
    'PersistedWork',
    'PickleSerializer',
    'PreemptiveStash',
    'PrimablePreemptiveStash',
    'PrimeablePreemptiveStash',
    'PrimeableStash',
    'ReadOnlyStash',
    'SerialExecutor',
    'SerializationError',
    'Serializer',
    'SigningSerializer',
    'ShelveStash',
    'SortedStash',
    'Stash',
    'StashClosedError',
    'StashCorruptError',
    'StashError',
    'StashKeyError',
    'StashReadError',
    'StashReadOnlyError',
    'StashSignatureError',
    'StashWarning',
    'StashWriteError',
    'StaleItemsError',
    'UnionStash',
    'dealloc',
    'persisted',
    'read_status',
    'remove_orphaned_jobs',
]


def __getattr__(name: str) -> Any:
    # DaskExecutor is imported on first use: importing distributed costs
    # about a second and it is an optional extra ('stashworks[dask]').
    if name in ('DaskExecutor', 'ClusterError', 'remove_orphaned_jobs'):
        from .multi import dask

        return getattr(dask, name)
    # LmdbStash likewise: the lmdb package is an optional extra
    # ('stashworks[lmdb]'); without it the ImportError says so.
    if name == 'LmdbStash':
        from .lmdbstash import LmdbStash

        return LmdbStash
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
