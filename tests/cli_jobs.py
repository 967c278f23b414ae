"""Functions and key lists that ``stashworks run`` imports in the CLI tests.

The command runs in a subprocess whose working directory is ``tests/``
(or whose ``PYTHONPATH`` names it), so ``cli_jobs:square`` resolves here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

#: Ten keys, as a module-level iterable (``--keys cli_jobs:KEYS``).
KEYS = [str(i) for i in range(10)]


def numbers() -> Iterator[str]:
    """Keys from a function (``--keys cli_jobs:numbers``)."""
    return iter(KEYS)


def not_strings() -> list[int]:
    """A key source that yields ints, which the command must refuse."""
    return [1, 2, 3]


def square(key: str) -> int:
    """The square of the integer ``key``."""
    return int(key) ** 2


def fail_on_odd(key: str) -> int:
    """``key`` itself, but an odd key raises ``ValueError``."""
    n = int(key)
    if n % 2:
        raise ValueError(f'odd key {key}')
    return n


def logged_slow(key: str) -> str:
    """``key`` upper-cased, slowly, logging each call.

    Each call appends ``key`` to the file named by ``$CLI_JOBS_LOG`` (one
    small ``O_APPEND`` write, so lines from many workers never mix) and
    sleeps ``$CLI_JOBS_DELAY`` seconds, so a test can watch and interrupt
    the batch and then count how often each key was computed.
    """
    log = os.environ.get('CLI_JOBS_LOG')
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f'{key}\n'.encode())
        finally:
            os.close(fd)
    time.sleep(float(os.environ.get('CLI_JOBS_DELAY', '0.05')))
    return key.upper()


def pid(key: str) -> int:
    """The id of the process that computed ``key``."""
    return os.getpid()


def die_on_die(key: str) -> str:
    """``key``, but the worker process dies at once on the key ``die``."""
    if key == 'die':
        os._exit(3)
    return key


def huge_message(key: str) -> str:
    """Raises with a message of about 5 MB on one line."""
    raise ValueError('x' * 5_000_000)


def slow(key: str) -> str:
    """``key``, after ``$CLI_JOBS_DELAY`` seconds (default 0.05)."""
    time.sleep(float(os.environ.get('CLI_JOBS_DELAY', '0.05')))
    return key
