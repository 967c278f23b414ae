"""Read a batch's output folder from outside the batch.

A batch writing to ``DirectoryStash(out)`` leaves, besides its items
(``out/<key>.dat``), a folder ``out/.stashworks`` with one JSON failure
record per failed key (``failures/<key>.json``) and the batch's
``status.json``.  :class:`BatchDir` reads that layout directly, so the
inspecting commands work from another shell while a batch runs, need not
import the job's code, and never unpickle more than the one item shown.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Optional, Union, cast

import psutil

from ..directory import DirectoryStash
from ..multi.failures import STATE_DIR, FailureStash
from ..multi.status import status_path
from ..serial import SigningSerializer
from ..stash import Stash
from ..stores import open_output, store_kind
from .common import CliError, parse_time

__all__ = ['BatchDir', 'STATE_DIR', 'is_alive']

# A process that started this much after the batch says it did cannot be
# the batch: its pid was reused.  The slack covers clock rounding.
_PID_REUSE_SLACK = 2.0


class BatchDir:
    """The output folder of a batch: its items, failures and status.

    Args:
        path: the folder given to the batch as its output.

    Raises:
        CliError: ``path`` does not exist, is not a folder, or holds
            neither items nor a ``.stashworks`` folder.
    """

    def __init__(self, path: Union[str, 'os.PathLike[str]'], raw_names: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CliError(f'no such directory: {self.path}')
        if not self.path.is_dir():
            raise CliError(f'not a directory: {self.path}')
        self.state_dir = self.path / STATE_DIR
        # The kind of store (a file per item, or LMDB) is found from what is
        # on disk.  raw_names: a zensols folder, whose file names are the
        # keys as they are.
        self.items: Stash
        if store_kind(self.path) == 'lmdb':
            try:
                self.items = open_output(self.path)
            except ImportError as exc:
                raise CliError(f'{self.path} holds an LMDB database: {exc}') from exc
        else:
            self.items = DirectoryStash(self.path, raw_names=raw_names, serializer=SigningSerializer.from_env())
        # The batch layer's own names for its layout, read as raw JSON.
        self.failures = FailureStash.beside(self.path).files
        self.status_path = status_path(self.path)
        if not self.state_dir.is_dir() and not self._has_item_files():
            raise CliError(f'not a stash: {self.path} (no {STATE_DIR} folder and no item files)')

    def _has_item_files(self) -> bool:
        # One entry is enough; no need to list a million-file folder.
        return store_kind(self.path) is not None

    def raw_item(self, key: str) -> bytes:
        """The stored bytes of the item ``key``, not unpickled."""
        if isinstance(self.items, DirectoryStash):
            return self.items.key_to_path(key).read_bytes()
        return bytes(cast(Any, self.items).load_bytes(key))

    def keys(self) -> list[str]:
        """The keys of the stored items, sorted."""
        return sorted(self.items.keys())

    def failed_keys(self) -> list[str]:
        """The keys with a failure record, sorted."""
        return sorted(self.failures.keys())

    def failure(self, key: str) -> dict[str, Any]:
        """The failure record of ``key`` (a dict of the record's fields).

        Raises:
            KeyError: there is no failure record for ``key``.
            StashCorruptError: the record is not valid JSON.
        """
        record = self.failures.load(key)
        if not isinstance(record, dict):
            raise CliError(f'failure record of {key!r} in {self.failures.path} is not a JSON object')
        record.setdefault('key', key)
        return record

    def status(self) -> Optional[dict[str, Any]]:
        """The last status the batch wrote, or ``None`` if no batch did.

        Raises:
            CliError: the status file exists but cannot be read as JSON.
        """
        try:
            text = self.status_path.read_text(encoding='utf-8')
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CliError(f'cannot read {self.status_path}: {exc.strerror or exc}') from exc
        try:
            status = json.loads(text)
        except ValueError as exc:
            raise CliError(f'corrupt status file {self.status_path}: {exc}') from exc
        if not isinstance(status, dict):
            raise CliError(f'corrupt status file {self.status_path}: not a JSON object')
        return status


def is_alive(status: dict[str, Any]) -> Optional[bool]:
    """Whether the process that wrote ``status`` still runs.

    ``None`` when that cannot be known from here: the batch runs on
    another host, or the status names no pid.  A zombie counts as dead,
    and so does a process that started after the batch (a reused pid).
    """
    pid = status.get('pid')
    if not isinstance(pid, int) or status.get('host') != socket.gethostname():
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = parse_time(status.get('started'))
        return started is None or proc.create_time() <= started.timestamp() + _PID_REUSE_SLACK
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        # AccessDenied: the process exists but belongs to someone else.
        return True
