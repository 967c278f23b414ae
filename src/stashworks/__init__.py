"""stashworks: parallel, resumable, progress-monitored batch processing.

Dict-like persistent *stashes* (:class:`Stash`), stacked into pipelines,
filled in parallel by :class:`MultiProcessStash`.
"""

from __future__ import annotations

from .directory import DirectoryStash
from .errors import (
    BatchError,
    PersistError,
    SerializationError,
    StashClosedError,
    StashCorruptError,
    StashError,
    StashKeyError,
    StashReadOnlyError,
    StashWriteError,
)
from .serial import DillSerializer, JsonSerializer, PickleSerializer, Serializer
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

__version__ = '0.1.0'

__all__ = [
    'MISSING',
    'BatchError',
    'CloseableStash',
    'DelegateStash',
    'DillSerializer',
    'DirectoryStash',
    'JsonSerializer',
    'KeyLimitStash',
    'PersistError',
    'PickleSerializer',
    'PreemptiveStash',
    'PrimablePreemptiveStash',
    'PrimeablePreemptiveStash',
    'PrimeableStash',
    'ReadOnlyStash',
    'SerializationError',
    'Serializer',
    'Stash',
    'StashClosedError',
    'StashCorruptError',
    'StashError',
    'StashKeyError',
    'StashReadOnlyError',
    'StashWriteError',
]
