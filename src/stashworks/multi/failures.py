"""Failure records: an item that could not be computed is data, not a crash.

A batch writes one :class:`FailureRecord` per failed key into a side store
next to its delegate (for ``DirectoryStash(out)``:
``out/.stashworks/failures/<encoded key>.json``, one JSON object each), so
the command line and other tools can read them without importing the job.
"""

from __future__ import annotations

import json
import logging
import os
import traceback as _tb
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any, Iterable, Union

from ..directory import DirectoryStash
from ..errors import StashCorruptError, StashKeyError
from ..memory import DictionaryStash
from ..serial import JsonSerializer
from ..stash import ReadOnlyStash, Stash
from .guard import safe_str
from .layout import STATE_DIR as STATE_DIR
from .layout import failures_dir, utc_now, worker_name

__all__ = ['FailureRecord', 'FailureStash', 'ReadOnlyFailures', 'MemoryFailureStash', 'record_failure']

logger = logging.getLogger(__name__)


@dataclass
class FailureRecord:
    """Why one key could not be computed.

    Attributes:
        key: the item's key.
        error_type: the exception's class name, or ``'WorkerDied'`` when the
            worker process died on this key.
        message: the exception's message (or how the worker died).
        traceback: the formatted traceback text ('' for a dead worker).
        worker: which worker ran it (host:pid, or a cluster address).
        pid: the worker's process id (0 if unknown).
        time: when it failed, ISO 8601 UTC.
        attempts: how many times the key was tried.
    """

    key: str
    error_type: str
    message: str
    traceback: str = ''
    worker: str = ''
    pid: int = 0
    time: str = ''
    attempts: int = 1

    @classmethod
    def from_exception(cls, key: str, exc: BaseException, attempts: int = 1) -> 'FailureRecord':
        """Build the record of ``exc`` raised while computing ``key`` here."""
        return cls(
            key=key,
            error_type=type(exc).__name__,
            # An exception whose __str__ raises is still recorded as itself.
            message=safe_str(exc),
            traceback=''.join(_tb.format_exception(type(exc), exc, exc.__traceback__)),
            worker=worker_name(),
            pid=os.getpid(),
            time=utc_now(),
            attempts=attempts,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready ``dict``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'FailureRecord':
        """Rebuild a record from :meth:`to_dict` output; unknown fields are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def __str__(self) -> str:
        return f'{self.key!r}: {self.error_type}: {self.message}'


class _RecordJson(JsonSerializer):
    """UTF-8 JSON that also holds text which is not valid Unicode.

    A key or message made from a file name that is not valid UTF-8 holds
    lone surrogates (as ``os.listdir`` returns such names); UTF-8 cannot
    encode them, so such a record is written with JSON's ``\\u`` escapes,
    which read back to the same text.
    """

    def dump(self, value: Any, fh: IO[bytes]) -> None:
        try:
            data = json.dumps(value, indent=self.indent, ensure_ascii=False).encode('utf-8')
        except UnicodeEncodeError:
            data = json.dumps(value, indent=self.indent).encode('ascii')
        fh.write(data)


class FailureStash(Stash):
    """The failure records of a batch, one JSON file per key.

    ``load`` returns a :class:`FailureRecord`; ``dump`` takes one (or a
    ``dict`` with its fields).  Keys are the failed items' keys.

    Args:
        path: the directory (usually ``<delegate dir>/.stashworks/failures``).
    """

    def __init__(self, path: Union[str, 'os.PathLike[str]']) -> None:
        self.path = Path(path)
        #: the records as stored: one JSON object per key, read without
        #: building :class:`FailureRecord` s (for tools that show them raw)
        self.files = DirectoryStash(self.path, pattern='{name}.json', serializer=_RecordJson())

    @classmethod
    def beside(cls, directory: Union[str, 'os.PathLike[str]']) -> 'FailureStash':
        """The failure store of a batch whose items live in ``directory``."""
        return cls(failures_dir(directory))

    def load(self, key: str) -> FailureRecord:
        data = self.files.load(key)
        if not isinstance(data, dict):
            raise StashCorruptError(f'failure record {key!r} in {self.files.key_to_path(key)} is not a JSON object')
        return FailureRecord.from_dict(data)

    def dump(self, key: str, value: Any) -> None:
        record = value.to_dict() if isinstance(value, FailureRecord) else dict(value)
        self.files.dump(key, record)

    def delete(self, key: str) -> None:
        self.files.delete(key)

    def keys(self) -> list[str]:
        return self.files.keys()

    def exists(self, key: str) -> bool:
        return self.files.exists(key)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}')"


class MemoryFailureStash(DictionaryStash):
    """Failure records kept in memory, for delegates that have no directory.

    Only the :class:`~stashworks.multi.SerialExecutor` can use it: worker
    processes cannot write to the parent's memory.
    """

    def dump(self, key: str, value: Any) -> None:
        # Records arrive as FailureRecords or as their dict form.
        super().dump(key, value if isinstance(value, FailureRecord) else FailureRecord.from_dict(value))


class ReadOnlyFailures(ReadOnlyStash):
    """A read-only view of a batch's failure records (``stash.failures``).

    Args:
        store: the failure store it shows.
    """

    def __init__(self, store: Stash) -> None:
        self.store = store

    def load(self, key: str) -> FailureRecord:
        try:
            return self.store.load(key)
        except StashKeyError:
            raise self.missing_error(key) from None

    def keys(self) -> Iterable[str]:
        return self.store.keys()

    def exists(self, key: str) -> bool:
        return self.store.exists(key)

    def __len__(self) -> int:
        return len(self.store)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.store!r})'


def record_failure(store: Stash, record: FailureRecord) -> None:
    """Write ``record`` into ``store``; a store that refuses it is logged, never raised.

    The item still counts as failed; losing its record only means the
    next run tries the key again.
    """
    try:
        store.dump(record.key, record)
    except Exception as exc:
        logger.error('cannot record failure of %r in %r: %s (%s)', record.key, store, exc, record)
