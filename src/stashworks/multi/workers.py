"""How many workers a batch gets, and how much memory each may use."""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Optional, Union

from .._text import plural

__all__ = ['usable_cpus', 'check_workers', 'resolve_workers', 'parse_memory']

logger = logging.getLogger(__name__)

_UNITS = {
    '': 1,
    'B': 1,
    'K': 1000,
    'KB': 1000,
    'M': 1000**2,
    'MB': 1000**2,
    'G': 1000**3,
    'GB': 1000**3,
    'T': 1000**4,
    'TB': 1000**4,
    'KIB': 1024,
    'MIB': 1024**2,
    'GIB': 1024**3,
    'TIB': 1024**4,
}
_MEMORY = re.compile(r'\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*\Z')


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        # No affinity API (macOS, Windows): every CPU counts.
        return max(1, os.cpu_count() or 1)


def parse_memory(value: Union[int, str, None]) -> Optional[int]:
    """Bytes from ``1_000_000``, ``'512MB'``, ``'2GB'`` or ``'1.5GiB'``.

    ``KB``/``MB``/``GB`` are powers of 1000, ``KiB``/``MiB``/``GiB`` powers
    of 1024, as in most tools.

    Raises:
        ValueError: for a negative number or text that is not a size.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f'not a memory size: {value!r}')
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f'a memory size must be positive, not {value!r}')
        return int(value)
    m = _MEMORY.match(value)
    unit = m.group(2).upper() if m else ''
    if m is None or unit not in _UNITS:
        raise ValueError(f"not a memory size: {value!r} (try '512MB' or '2GiB')")
    size = int(float(m.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f'a memory size must be positive, not {value!r}')
    return size


def check_workers(workers: object) -> None:
    """Refuse a ``workers`` setting that no number of CPUs makes right.

    Whether a negative count leaves a worker depends on the CPUs (or the
    cluster threads) there are when the batch runs; :func:`resolve_workers`
    checks that.

    Raises:
        ValueError: not an int or a float, or a fraction outside ``(0, 1]``.
    """
    if isinstance(workers, bool) or not isinstance(workers, (int, float)):
        raise ValueError(f'workers must be an int or a fraction, not {workers!r}')
    if isinstance(workers, float) and not workers.is_integer() and not 0 < workers <= 1:
        raise ValueError(f'a fractional workers setting must be in (0, 1], not {workers}')


def resolve_workers(
    workers: Union[int, float],
    jobs: Optional[int] = None,
    memory_per_worker: Optional[int] = None,
    cpus: Optional[int] = None,
    available_memory: Optional[int] = None,
) -> int:
    """Turn a ``workers`` setting into a number of worker processes.

    Args:
        workers: ``0`` or ``-1`` for every usable CPU, ``n > 0`` for
            ``n``, ``-n`` for all but ``n - 1`` as joblib's ``n_jobs``
            (``-2``: all but one), a fraction in ``(0, 1]`` for that share
            of the usable CPUs (at least one).  More workers than CPUs is
            allowed, with a warning: they take turns on the CPUs.
        jobs: never more workers than this many chunks of work.
        memory_per_worker: bytes one worker may need; caps the count by
            the memory available now.
        cpus: the usable CPUs (default: :func:`usable_cpus`).
        available_memory: bytes available (default: asked of psutil).

    Raises:
        ValueError: for a fraction outside ``(0, 1]``, a non-number, or a
            negative count that leaves no worker (the message says how
            many CPUs there are).
    """
    check_workers(workers)
    ncpu = usable_cpus() if cpus is None else cpus
    if isinstance(workers, float) and not workers.is_integer():
        n = max(1, math.floor(ncpu * workers))
    elif isinstance(workers, float) and workers == 1.0:
        n = ncpu  # 1.0 is the fraction "all", not one worker
    else:
        count = int(workers)
        if count == 0:
            n = ncpu
        elif count > 0:
            n = count
            if count > ncpu:
                logger.warning(
                    'workers=%d is more than the %s: the workers take turns on them, so each item runs slower',
                    count,
                    plural(ncpu, 'usable CPU'),
                )
        else:
            n = ncpu + 1 + count
            if n < 1:
                raise ValueError(
                    f'workers={count} leaves no worker: there {"is" if ncpu == 1 else "are"} only '
                    f'{plural(ncpu, "usable CPU")} (-1 means all of them, -2 all but one)'
                )
    if memory_per_worker:
        if available_memory is None:
            import psutil

            available_memory = int(psutil.virtual_memory().available)
        n = min(n, max(1, available_memory // memory_per_worker))
    if jobs is not None:
        n = min(n, max(1, jobs))
    return n
