"""Timing helpers shared by the benchmark scripts.

The machines these run on have two shared, noisy cores, so every script
follows the same method: contenders run side by side in one process,
interleaved rep by rep with the order rotated, and results are reported
as the median of per-rep ratios to a baseline measured in the same rep.
Absolute times from different runs are never compared.
"""

from __future__ import annotations

import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = [
    'RunDirs',
    'format_table',
    'machine_note',
    'median_ratio',
    'min_time',
    'ratios',
    'rotated',
    'time_once',
]

T = TypeVar('T')


def time_once(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes, after a garbage collection.

    Collecting first keeps one contender's garbage from being charged to
    the next one.
    """
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def min_time(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` calls of ``fn``, in seconds.

    For short samples (a directory listing takes 10-30 ms) a single call
    mostly measures the neighbours; the minimum is the stable figure.
    """
    gc.collect()
    best = float('inf')
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rotated(items: Sequence[T], rep: int) -> list[T]:
    """``items`` rotated left by ``rep``, so each contender takes every slot in turn."""
    if not items:
        return []
    k = rep % len(items)
    return list(items[k:]) + list(items[:k])


def median_ratio(times: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over reps of ``baseline[i] / times[i]``: the speed relative to the baseline.

    Above 1 means faster than the baseline.  Each ratio pairs two figures
    from the same rep, so a slow moment on the machine cancels out.
    """
    return statistics.median(ratios(times, baseline))


def ratios(times: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per-rep ``baseline[i] / times[i]``; their spread shows how noisy a figure is."""
    if len(times) != len(baseline) or not times:
        raise ValueError(f'need equally many reps, got {len(times)} and {len(baseline)}')
    return [b / t for t, b in zip(times, baseline, strict=True)]


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table with right-aligned columns after the first."""
    rows = [list(r) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [str(cells[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return '| ' + ' | '.join(out) + ' |'

    rule = '|' + '|'.join(['-' * (widths[0] + 2)] + ['-' * (w + 1) + ':' for w in widths[1:]]) + '|'
    return '\n'.join([line(headers), rule, *(line(r) for r in rows)])


def machine_note() -> str:
    """One line on the machine: CPUs, load, Python, OS."""
    try:
        load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
    except OSError:
        load = 'n/a'
    return (
        f'{os.cpu_count()} CPUs (load {load}), Python {platform.python_version()} '
        f'({platform.python_implementation()}), {platform.system()} {platform.release()}'
    )


class RunDirs:
    """Fresh folders for each trial under one run folder, removed at the very end.

    Deleting many files stalls file creation on this machine for seconds,
    so nothing is removed between trials: every trial gets a new folder
    and the whole run folder goes only when the run is over.

    Args:
        root: where the run folder is made (a disk folder or ``/dev/shm``).
        keep: leave the files in place at the end, for inspection.
    """

    def __init__(self, root: str | os.PathLike[str], keep: bool = False) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        self.run = Path(tempfile.mkdtemp(prefix='stashworks-bench-', dir=root))
        self.keep = keep
        self._count = 0

    def new(self, label: str) -> Path:
        """A new, empty folder for one trial; ``label`` only helps a reader of the tree."""
        self._count += 1
        path = self.run / f'{self._count:04d}-{label}'
        path.mkdir()
        return path

    def remove(self) -> None:
        """Remove the run folder (unless ``keep``)."""
        if self.keep:
            print(f'kept {self.run}', file=sys.stderr)
        else:
            shutil.rmtree(self.run, ignore_errors=True)

    def __enter__(self) -> RunDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
