"""The kind of store an output folder holds, found from what is on disk.

A batch's output folder holds its items either as one file per item (a
:class:`~stashworks.DirectoryStash`: ``<key>.dat`` files) or in one LMDB
database (an :class:`~stashworks.LmdbStash`: ``data.mdb`` and
``lock.mdb``); either way its ``.stashworks/`` folder (failure records,
status) sits beside the items.  Tools that read an output folder, such
as the ``stashworks`` command, call :func:`open_output` and need no flag
to say which kind it is.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional, Union

from .directory import DirectoryStash
from .errors import BatchError
from .serial import SigningSerializer
from .stash import Stash

__all__ = ['STORE_KINDS', 'store_kind', 'open_output', 'machine_id', 'local_only_store']

#: The kinds of store an output folder may hold, by the name the command line uses.
STORE_KINDS = ('directory', 'lmdb')

# LmdbStash's data file; spelled here too so that finding the kind of a
# folder does not import lmdb (an optional extra).
_LMDB_DATA = 'data.mdb'
_ITEM_SUFFIX = '.dat'


def store_kind(path: Union[str, 'os.PathLike[str]']) -> Optional[str]:
    """Which kind of store the folder ``path`` holds: ``'lmdb'``, ``'directory'``, or ``None`` if neither yet.

    An LMDB data file makes it ``'lmdb'``; otherwise one item file is
    enough to make it ``'directory'`` (the folder is not listed in full).
    """
    folder = Path(path)
    if (folder / _LMDB_DATA).is_file():
        return 'lmdb'
    try:
        with os.scandir(folder) as it:
            if any(entry.name.endswith(_ITEM_SUFFIX) for entry in it):
                return 'directory'
    except (FileNotFoundError, NotADirectoryError):
        pass
    return None


def open_output(path: Union[str, 'os.PathLike[str]'], kind: Optional[str] = None) -> Stash:
    """The stash of the output folder ``path``.

    Args:
        path: the output folder.
        kind: ``'directory'`` or ``'lmdb'`` to ask for one kind (a new
            folder is made of that kind); ``None`` to take whatever the
            folder holds (a folder with nothing yet is a directory).

    Raises:
        BatchError: ``kind`` is not a known kind, or the folder already
            holds the other kind (mixing them would hide items).
        ImportError: the folder is an LMDB database and the ``lmdb``
            package is not installed (the message names the extra).
    """
    if kind is not None and kind not in STORE_KINDS:
        raise BatchError(f'unknown kind of store {kind!r} for {path}: use one of {", ".join(STORE_KINDS)}')
    found = store_kind(path)
    if kind is not None and found is not None and found != kind:
        raise BatchError(
            f'{path} already holds a {found} store; it cannot hold a {kind} store too '
            f'(use another folder, or --store {found})'
        )
    # With a signing key in the environment, items are written signed and
    # checked before anything is unpickled.
    serializer = SigningSerializer.from_env()
    if (kind or found) == 'lmdb':
        from .lmdbstash import LmdbStash

        return LmdbStash(path, serializer=serializer)
    return DirectoryStash(path, serializer=serializer)


def machine_id() -> str:
    """Which machine (precisely: which running kernel) this process is on.

    The kernel's boot id, which processes in containers on one host share
    and no two hosts do; the host name where there is none.
    """
    try:
        return Path('/proc/sys/kernel/random/boot_id').read_text(encoding='ascii').strip()
    except OSError:
        return socket.gethostname()


def local_only_store(stash: Optional[Stash]) -> Optional[Stash]:
    """The first store in a delegate chain that only processes on this machine may share, if any.

    Such a store (an :class:`~stashworks.LmdbStash`) says so with a true
    ``local_only`` class attribute: its processes share a memory map and
    locks that a network file system does not keep coherent between hosts.
    """
    seen = 0
    while stash is not None and seen < 32:
        if getattr(type(stash), 'local_only', False):
            return stash
        stash = getattr(stash, 'delegate', None)
        seen += 1
    return None
