"""Atomic file writes: a reader or a crash never sees half a file."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import IO, Callable

__all__ = ['TEMP_PREFIX', 'TEMP_SUFFIX', 'atomic_write', 'is_temp_name']

#: Temp files start with this prefix and end with :data:`TEMP_SUFFIX`; no
#: key a :class:`~stashworks.DirectoryStash` encodes ever produces such a
#: name, so they never show up as keys.
TEMP_PREFIX = '.~sw-'
TEMP_SUFFIX = '.tmp'


def is_temp_name(name: str) -> bool:
    """Whether ``name`` (a file name, not a path) is an in-progress temp file."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def _temp_path(path: Path) -> Path:
    # uuid + pid + thread: unique across processes, threads and hosts that
    # share the directory.
    token = f'{uuid.uuid4().hex[:12]}-{os.getpid()}-{threading.get_ident()}'
    return path.with_name(f'{TEMP_PREFIX}{token}{TEMP_SUFFIX}')


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], fsync: bool = False) -> None:
    """Write ``path`` atomically.

    ``write`` is called with a binary file object opened on a temp file in
    the same directory; when it returns, the temp file is flushed and moved
    over ``path`` with :func:`os.replace`.  If anything raises (``write``
    itself, a full disk, a failed replace) the temp file is removed, the
    previous content of ``path`` is untouched, and the error propagates.

    Args:
        path: the final file.
        write: fills the file object.
        fsync: also ``fsync`` the data before the rename (survives power
            loss, costs a disk flush per write).
    """
    tmp = _temp_path(path)
    try:
        with open(tmp, 'xb') as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-write must not leave a temp.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
