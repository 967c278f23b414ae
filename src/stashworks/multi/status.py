"""The status file of a running (or finished) batch.

For ``delegate = DirectoryStash(out)`` it is ``out/.stashworks/status.json``,
rewritten atomically at most about once a second while the batch runs and
once at its end, so ``stashworks status`` and other tools can watch a batch
from outside.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import IO, Any, Optional, Union

from .._atomic import atomic_write
from .batchstatus import BatchStatus
from .layout import status_path as status_path
from .layout import utc_now

__all__ = ['STATES', 'StatusWriter', 'read_status']

logger = logging.getLogger(__name__)

#: The values of the ``state`` field.
STATES = ('running', 'finished', 'interrupted', 'crashed')


def read_status(path: Union[str, 'os.PathLike[str]']) -> Optional[BatchStatus]:
    """Read a status file.

    Args:
        path: the status file itself, or the delegate's directory (the
            file is then ``<path>/.stashworks/status.json``).

    Returns:
        The status as a :class:`~stashworks.BatchStatus` (its fields also
        read by name, ``status['done']``), or ``None`` if there is no
        status file (no batch ever ran there) or it cannot be parsed.
    """
    p = Path(path)
    if p.is_dir():
        p = status_path(p)
    try:
        data = json.loads(p.read_text(encoding='utf-8'))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning('cannot read batch status %s: %s', p, exc)
        return None
    return BatchStatus.from_dict(data) if isinstance(data, dict) else None


class StatusWriter:
    """Keeps a batch's status file up to date.

    Args:
        path: the status file; ``None`` writes nothing (a delegate with no
            directory).
        total: how many items the batch has in all.
        done_before: items already complete when it started.
        workers: how many workers run it.
        executor: a short description of the executor.
        interval: least seconds between two writes while running.
    """

    def __init__(
        self,
        path: Optional[Path],
        total: int,
        done_before: int,
        workers: int,
        executor: str,
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self.interval = interval
        self.started_mono = time.monotonic()
        self._last = 0.0
        self.data: dict[str, Any] = {
            'pid': os.getpid(),
            'host': socket.gethostname(),
            'state': 'running',
            'total': total,
            'done_before': done_before,
            'done': done_before,
            'failed': 0,
            'started': utc_now(),
            'updated': utc_now(),
            'rate': 0.0,
            'eta_seconds': None,
            'workers': workers,
            'executor': executor,
        }

    def update(self, done: int, failed: int, state: str = 'running', force: bool = False) -> None:
        """Record progress; writes the file if ``force`` or a second has passed.

        Args:
            done: every complete item (before this run and now).
            failed: failures recorded (before this run and now).
            state: one of :data:`STATES`.
            force: write now, whatever the time since the last write.
        """
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self.started_mono, 1e-9)
        new = done - self.data['done_before']
        rate = new / elapsed
        left = self.data['total'] - done - failed
        self.data.update(
            state=state,
            done=done,
            failed=failed,
            updated=utc_now(),
            rate=round(rate, 3),
            eta_seconds=round(left / rate, 1) if rate > 0 and state == 'running' else None,
        )
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        # Compact: the C encoder (an indented dump takes the pure-Python one).
        payload = json.dumps(self.data, separators=(',', ':')).encode('utf-8')

        def write(fh: IO[bytes]) -> None:
            fh.write(payload)

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, write)
        except OSError as exc:
            # The status file is a convenience; a full disk must not stop
            # the batch itself.
            logger.warning('cannot write batch status %s: %s', self.path, exc)
