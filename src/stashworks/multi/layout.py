"""Where a batch keeps its own files, and how it names things on disk.

For ``DirectoryStash(out)`` the batch's files live in ``out/.stashworks/``:
``failures/<encoded key>.json`` and ``status.json``.  Workers are named
``host:pid`` and times are ISO 8601 UTC.  Every other module (and the
command line) takes these spellings from here.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from pathlib import Path
from typing import Optional, Union

from ..directory import DirectoryStash
from ..stash import Stash

__all__ = ['STATE_DIR', 'failures_dir', 'find_directory', 'status_path', 'utc_now', 'worker_name']

#: Name of the directory, inside a delegate's directory, that holds the
#: batch's own files (failures, status).
STATE_DIR = '.stashworks'

PathLike = Union[str, 'os.PathLike[str]']


def failures_dir(directory: PathLike) -> Path:
    """The failure records of a batch whose items live in ``directory``."""
    return Path(directory) / STATE_DIR / 'failures'


def status_path(directory: PathLike) -> Path:
    """The status file of a batch whose items live in ``directory``."""
    return Path(directory) / STATE_DIR / 'status.json'


def worker_name(pid: Optional[int] = None) -> str:
    """A worker as named in reports and failure records: ``host:pid`` (this process by default)."""
    return f'{socket.gethostname()}:{os.getpid() if pid is None else pid}'


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string (second precision)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')


def find_directory(stash: Optional[Stash]) -> Optional[Path]:
    """The directory of the first store on disk in a delegate chain.

    A :class:`DirectoryStash`, or a store whose class says its items live
    in the directory ``path`` (``items_in_directory``, as
    :class:`~stashworks.LmdbStash` does).  Follows ``delegate`` attributes
    (wrappers such as a cache), so the batch can put its own files next to
    the items.  ``None`` means the items live in this process's memory.
    """
    seen = 0
    while stash is not None and seen < 32:
        if isinstance(stash, DirectoryStash):
            return stash.path
        if getattr(type(stash), 'items_in_directory', False):
            return Path(stash.path)  # type: ignore[attr-defined]
        stash = getattr(stash, 'delegate', None)
        seen += 1
    return None
