"""Cost of a cache hit: ``@property`` + ``@persisted`` against a hand-written memoizing property.

Run with ``python benchmarks/bench_persisted.py [--reps N] [--number N]``.

Each variant's value is computed once, then read ``number`` times per
measurement.  The variants are measured in turn inside every repetition
(interleaved, so a slow moment on a shared machine hits all of them), and
the median over repetitions is reported with its ratio to the hand-written
property.  ``functools.cached_property`` is shown as the standard-library
peer (it stores the value over its own name, so a hit never calls Python
code at all).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import timeit
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Callable, Optional

from stashworks import PersistedWork, persisted

# Every variant is an ordinary class with an ``__init__`` that sets an
# attribute, as real owners have; the value is computed from it.


class HandWritten:
    def __init__(self, n: int) -> None:
        self.n = n
        self._value: Optional[int] = None

    @property
    def value(self) -> int:
        if self._value is None:
            self._value = self.n * 2
        return self._value


class Persisted:
    def __init__(self, n: int) -> None:
        self.n = n

    @property
    @persisted('_value')
    def value(self) -> int:
        return self.n * 2


class PersistedFile:
    # A file-backed work: a hit must not touch the file.
    def __init__(self, n: int, path: Path) -> None:
        self.n = n
        self._value = PersistedWork(path, self)

    @property
    @persisted('_value')
    def value(self) -> int:
        return self.n * 2


class StdlibCachedProperty:
    def __init__(self, n: int) -> None:
        self.n = n

    @functools.cached_property
    def value(self) -> int:
        return self.n * 2


def measure(variants: dict[str, Any], reps: int, number: int) -> dict[str, float]:
    """Median nanoseconds per ``obj.value`` for each variant, measured interleaved."""
    timers: dict[str, Callable[[], float]] = {}
    for label, obj in variants.items():
        assert obj.value == 42  # computes (and for the file variant, writes) once
        timer = timeit.Timer('obj.value', globals={'obj': obj})
        timers[label] = functools.partial(timer.timeit, number)
    samples: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(reps):
        for label, run in timers.items():
            samples[label].append(run() / number * 1e9)
    return {label: statistics.median(ns) for label, ns in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--reps', type=int, default=15, help='interleaved repetitions (median taken)')
    parser.add_argument('--number', type=int, default=200_000, help='reads per measurement')
    args = parser.parse_args()
    with TemporaryDirectory() as tmp:
        variants = {
            'hand-written memoizing property': HandWritten(21),
            '@property @persisted (memory)': Persisted(21),
            '@property @persisted (file)': PersistedFile(21, Path(tmp) / 'value.dat'),
            'functools.cached_property': StdlibCachedProperty(21),
        }
        medians = measure(variants, args.reps, args.number)
    base = medians['hand-written memoizing property']
    print(f'cache hit, median of {args.reps} interleaved reps x {args.number:,} reads')
    for label, ns in medians.items():
        print(f'  {label:34} {ns:7.1f} ns   ratio {ns / base:4.2f}')
    print(f'ratio @persisted / hand-written: {medians["@property @persisted (memory)"] / base:.2f} (target <= 2.0)')


if __name__ == '__main__':
    main()
