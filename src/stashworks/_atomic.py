"""Atomic file writes: a reader or a crash never sees half a file."""

from __future__ import annotations

import itertools
import os
import uuid
from typing import IO, Callable, Union

__all__ = ['TEMP_PREFIX', 'TEMP_SUFFIX', 'atomic_create', 'atomic_write', 'is_temp_name', 'temp_name']

#: Temp files start with this prefix and end with :data:`TEMP_SUFFIX`; no
#: key a :class:`~stashworks.DirectoryStash` encodes ever produces such a
#: name, so they never show up as keys.
TEMP_PREFIX = '.~sw-'
TEMP_SUFFIX = '.tmp'


def is_temp_name(name: str) -> bool:
    """Whether ``name`` (a file name, not a path) is an in-progress temp file."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def _new_token() -> str:
    # A random part (hosts sharing the directory) and the pid (processes on
    # this host); a fresh uuid per write would cost more than the rename.
    return f'{uuid.uuid4().hex[:12]}-{os.getpid()}-'


_token = _new_token()
# next() on an itertools.count is atomic under the GIL, so threads never
# draw the same number.
_counter = itertools.count()


def _reset_after_fork() -> None:
    global _token, _counter
    _token = _new_token()
    _counter = itertools.count()


if hasattr(os, 'register_at_fork'):
    # A forked child inherits the token and the counter; give it its own.
    os.register_at_fork(after_in_child=_reset_after_fork)


def temp_name() -> str:
    """A new temp file name, unique across threads, processes and hosts."""
    return f'{TEMP_PREFIX}{_token}{next(_counter)}{TEMP_SUFFIX}'


def atomic_write(
    path: Union[str, 'os.PathLike[str]'],
    write: Callable[[IO[bytes]], None],
    fsync: bool = False,
    buffering: int = -1,
) -> None:
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
        buffering: as for :func:`open`; ``0`` for a writer that writes all
            its bytes in one call.
    """
    path = os.fspath(path)
    # The temp goes next to the file (same file system, so the rename is
    # atomic); rpartition keeps an absolute or bare name as it is.
    head, sep, _ = path.rpartition(os.sep)
    tmp = f'{head}{sep}{temp_name()}'
    try:
        with open(tmp, 'xb', buffering=buffering) as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        # Closing flushed the data; a failed flush raised above.
        os.replace(tmp, path)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-write must not leave a temp.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_create(
    path: Union[str, 'os.PathLike[str]'], write: Callable[[IO[bytes]], None], fsync: bool = False
) -> None:
    """Like :func:`atomic_write`, but never replaces an existing ``path``.

    The temp file is linked to ``path`` (which fails if ``path`` exists)
    rather than renamed over it, so two writers choosing the same new name
    cannot overwrite each other: one of them gets :class:`FileExistsError`.
    On a file system without hard links, an exclusive create of ``path``
    reserves the name first and the data then replaces it.

    Raises:
        FileExistsError: ``path`` exists; nothing was written.
    """
    path = os.fspath(path)
    head, sep, _ = path.rpartition(os.sep)
    tmp = f'{head}{sep}{temp_name()}'
    try:
        with open(tmp, 'xb') as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            # No hard links here (some network and FUSE file systems):
            # reserve the name, then move the data over the reservation.
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
