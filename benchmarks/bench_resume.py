"""Resuming a batch: how long it takes to find the keys still to compute.

A folder holds 90,000 of 100,000 items, written once by
:class:`stashworks.DirectoryStash`.  Each contender works out the 10,000
missing keys from the full key list; contenders alternate, each is
repeated many times and its fastest run is kept (a listing is a 10-30 ms
sample on a noisy machine, so the minimum is the stable figure):

* ``raw``: the baseline, one ``os.scandir`` into a set of names with the
  ``.dat`` suffix cut off, then ``set(keys) - done``;
* ``raw (set given)``: the same, with the key set built beforehand (for
  information: the floor of the method);
* ``DirectoryStash.keys``: ``set(keys) - set(stash.keys())`` (for
  information: the public listing);
* ``stashworks``: the step :class:`stashworks.MultiProcessFactoryStash`
  runs at the start of ``prime()`` to find the missing keys (see
  :func:`stashworks_missing` for exactly what is timed).

Also, for information, a whole public ``prime()`` on a complete batch
(the work keys are the 90,000 done ones, so nothing is computed) against
the raw method given those same keys.

Run::

    /work/venv/bin/python benchmarks/bench_resume.py
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from _common import RunDirs, format_table, machine_note, rotated

TOTAL = 100_000
DONE = 90_000


def build(folder: Path, keys: list[str], done: int) -> None:
    """Write the first ``done`` keys with :class:`stashworks.DirectoryStash`."""
    from stashworks import DirectoryStash

    stash = DirectoryStash(folder)
    for key in keys[:done]:
        stash.dump(key, key)


def raw_missing(folder: str, keys: list[str]) -> set[str]:
    with os.scandir(folder) as it:
        done = {e.name[:-4] for e in it if e.name.endswith('.dat')}
    return set(keys) - done


def raw_missing_set_given(folder: str, key_set: set[str]) -> set[str]:
    with os.scandir(folder) as it:
        done = {e.name[:-4] for e in it if e.name.endswith('.dat')}
    return key_set - done


def directory_stash_missing(folder: str, keys: list[str]) -> set[str]:
    from stashworks import DirectoryStash

    return set(keys) - set(DirectoryStash(folder).keys())


def _never(key: str) -> None:
    raise AssertionError(f'nothing may be computed here, yet {key!r} was')


def stashworks_missing(folder: str, keys: list[str]) -> set[str]:
    """What ``MultiProcessFactoryStash.prime()`` spends to find the missing keys.

    The same steps, in the same order, as ``prime()`` takes before it
    starts any worker: build the stash (as a resuming script does), make
    its job, and :func:`stashworks.multi.plan.plan_batch` the work keys
    against the delegate and the failure store.
    """
    from stashworks import DirectoryStash, MultiProcessFactoryStash
    from stashworks.multi.plan import plan_batch

    stash = MultiProcessFactoryStash(DirectoryStash(folder), _never, keys=keys, workers=2, progress=False)
    job = stash._make_job()
    return set(plan_batch(stash._work(), job.delegate, job.failures).missing)


def stashworks_prime_complete(folder: str, done_keys: list[str]) -> set[str]:
    """A whole public ``prime()`` on a batch whose keys are all done (the no-op path)."""
    from stashworks import DirectoryStash, MultiProcessFactoryStash

    stash = MultiProcessFactoryStash(DirectoryStash(folder), _never, keys=done_keys, workers=2, progress=False)
    result = stash.prime()
    if result.computed or result.done_before != len(done_keys):
        raise RuntimeError(f'prime() on a complete batch did work: {result}')
    return set()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeat', type=int, default=50, help='runs of each contender; the fastest counts')
    parser.add_argument('--total', type=int, default=TOTAL)
    parser.add_argument('--done', type=int, default=DONE)
    parser.add_argument('--dir', default=tempfile.gettempdir(), help='where to build the folder (disk by default)')
    args = parser.parse_args(argv)

    keys = [f'item-{i:07d}' for i in range(args.total)]
    expected = set(keys[args.done :])
    contenders: dict[str, Callable[[], set[str]]] = {}
    with RunDirs(args.dir) as dirs:
        folder = dirs.new('resume')
        build(folder, keys, args.done)
        f = str(folder)
        contenders['raw'] = partial(raw_missing, f, keys)
        contenders['raw (set given)'] = partial(raw_missing_set_given, f, set(keys))
        contenders['DirectoryStash.keys'] = partial(directory_stash_missing, f, keys)
        contenders['stashworks'] = partial(stashworks_missing, f, keys)
        done_keys = keys[: args.done]
        contenders['raw, complete batch'] = partial(raw_missing, f, done_keys)
        contenders['stashworks prime(), complete batch'] = partial(stashworks_prime_complete, f, done_keys)
        for name, fn in contenders.items():
            if fn() != (set() if 'complete' in name else expected):
                raise RuntimeError(f'{name} did not find exactly the {len(expected)} missing keys')
        note = machine_note()
        best = {name: float('inf') for name in contenders}
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for rep in range(args.repeat):
            for name in rotated(list(contenders), rep):
                gc.collect()
                t0 = time.perf_counter()
                contenders[name]()
                dt = time.perf_counter() - t0
                samples[name].append(dt)
                best[name] = min(best[name], dt)
    rows = []
    for name in contenders:
        base = best['raw, complete batch' if 'complete' in name else 'raw']
        rows.append(
            [
                name,
                f'{best[name] * 1e3:.1f}',
                f'{best[name] / base:.2f}x',
                f'{statistics.median(samples[name]) * 1e3:.1f}',
            ]
        )
    print(
        f'\n### Resume: find the {args.total - args.done:,} missing of {args.total:,} keys '
        f'({args.done:,} done, {args.dir}), fastest of {args.repeat}\n'
    )
    print(format_table(['method', 'min (ms)', 'ratio to its raw baseline (min)', 'median (ms)'], rows))
    print(f'\nMachine: {note}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
