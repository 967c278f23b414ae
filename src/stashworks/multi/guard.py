"""What keeps a batch honest whatever its job does.

Small helpers the engine calls at a few points: the per-item time limit
(``item_timeout``), a handle that tells a worker's death at once even when
the job forked a helper that holds the worker's pipes, the check that an
output folder can be written before any work, the absolute paths a batch
writes to (a job may ``os.chdir``), and the text of an exception whose
``__str__`` raises.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Optional

from .._atomic import temp_name
from ..errors import BatchError

__all__ = [
    'ITEM_TIMEOUT',
    'check_item_timeout',
    'timeout_message',
    'death_handle',
    'check_writable',
    'absolute',
    'safe_str',
]

logger = logging.getLogger(__name__)

#: ``error_type`` of the failure record of a key that ran past ``item_timeout``.
ITEM_TIMEOUT = 'ItemTimeout'


def check_item_timeout(value: Any) -> Optional[float]:
    """Validate an ``item_timeout`` option: ``None`` or seconds > 0.

    Raises:
        ValueError: ``value`` is not a finite number of seconds > 0.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'item_timeout must be a number of seconds > 0 or None, not {value!r}')
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f'item_timeout must be a number of seconds > 0 or None, not {value!r}')
    return float(value)


def timeout_message(key: str, limit: float) -> str:
    """The failure message of ``key`` when it ran past ``limit`` seconds."""
    return (
        f'key {key!r} timed out: it ran longer than the item timeout of {limit:g} s, '
        f'so its worker was stopped (item_timeout={limit:g})'
    )


def death_handle(pid: int) -> Optional[int]:
    """A file descriptor that becomes readable the moment process ``pid`` exits.

    A process sentinel of ``fork`` and ``spawn`` workers is the read end of
    a pipe whose write end the worker holds: a helper the job starts with
    ``os.fork()`` inherits that end, and the sentinel stays silent until
    the helper exits too.  A pidfd (Linux 5.3+) is about the process
    itself.  The caller closes it.

    Returns:
        The pidfd, or ``None`` where pidfds are not available (the caller
        then waits on the sentinel).
    """
    opener = getattr(os, 'pidfd_open', None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        # An old kernel or a sandbox without pidfd_open.
        return None


def check_writable(directory: Path) -> None:
    """Make sure a batch can write in ``directory`` (created if missing).

    Creates and removes a small file there, so a read-only mount, missing
    permissions or a full disk are found before any work, as one error.

    Raises:
        BatchError: the folder cannot be written, naming it and the reason.
    """
    probe = directory / temp_name()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            # A few bytes, not an empty file: a full disk refuses only data.
            with open(probe, 'xb') as fh:
                fh.write(b'stashworks write check\n')
        finally:
            try:
                os.unlink(probe)
            except FileNotFoundError:
                pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BatchError(f'cannot write to the output folder {directory}: {reason}; nothing was computed') from exc


def absolute(path: Path) -> Path:
    """``path`` made absolute against the current directory (symlinks kept as they are)."""
    return path if path.is_absolute() else Path.cwd() / path


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in naming the problem when its ``__str__`` raises."""
    try:
        return str(exc)
    except BaseException as inner:  # a broken __str__ may raise anything
        return f'<the message of this {type(exc).__name__} cannot be shown: its __str__ raised {type(inner).__name__}>'
