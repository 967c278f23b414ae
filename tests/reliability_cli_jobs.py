"""Functions that ``stashworks run`` imports in the reliability tests of the command.

Like ``cli_jobs``, importable because the command runs with ``tests/`` on
its path.
"""

from __future__ import annotations

import errno
import os
import time


def fill_disk_then_fail(key: str) -> str:
    """Fill the file system of ``$RELIABILITY_FILLER`` (once), then fail on every odd key.

    After the first call the disk is full, so neither an item nor a
    failure record can be written any more.
    """
    filler = os.environ['RELIABILITY_FILLER']
    if not os.path.exists(filler):
        with open(filler, 'wb', buffering=0) as fh:
            for size in (65536, 4096, 512, 1):
                try:
                    while True:
                        fh.write(b'\0' * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
    if int(key) % 2:
        raise ValueError(f'odd key {key}')
    return key * 100


def hang_on_3(key: str) -> str:
    """``key`` upper-cased; key ``3`` hangs for an hour."""
    if key == '3':
        time.sleep(3600)
    return key.upper()
