"""What recording units costs: the unit log against the work around it.

Two questions, each answered by contenders run side by side in one
process, interleaved rep by rep with the order rotated, reported as the
median of per-rep ratios (see ``_common.py``):

1. **Writing.**  A worker records each finished unit in the unit log
   (buffered, one ``os.write`` per group).  Against what: storing the
   unit's one item with :class:`stashworks.DirectoryStash` (the cheapest
   real item, on tmpfs by default).  Contenders, per rep, store
   ``--items`` items into a fresh folder: ``store`` (the items alone) and
   ``store + record`` (the items, then one record per unit, flushed every
   ``--group`` units).
2. **Reading on resume.**  A folder holds 90,000 of 100,000 one-item
   units, and a unit log with a record for each of the 90,000.  Each
   contender works out the 10,000 missing units from the full list:
   ``raw`` (the baseline: one ``os.scandir``, ``.dat`` suffix cut off,
   ``set(keys) - done``); ``plan, one-key form`` (what ``prime()`` does
   for a factory batch whose log holds only its own version: the file
   names of the log are listed, no record is read); ``plan, records
   read`` (the same with every record read and checked, as for a batch
   whose units store many items each, or whose log holds another
   version).  A listing is a 10-30 ms sample, so each contender's fastest
   run over ``--repeat`` counts, as in ``bench_resume.py``.

Run::

    /work/venv/bin/python benchmarks/bench_units.py
    /work/venv/bin/python benchmarks/bench_units.py --dir /tmp   # on disk
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from _common import RunDirs, format_table, machine_note, median_ratio, rotated

TOTAL = 100_000
DONE = 90_000
VERSION = '0123456789abcdef'


# -- 1. writing ----------------------------------------------------------------


def store_only(folder: Path, keys: list[str]) -> None:
    from stashworks import DirectoryStash

    stash = DirectoryStash(folder)
    for key in keys:
        stash.dump(key, key)


def store_and_record(folder: Path, keys: list[str], group: int) -> None:
    from stashworks import DirectoryStash
    from stashworks.multi.units import UnitLog

    stash = DirectoryStash(folder)
    log = UnitLog.beside(folder)
    for n, key in enumerate(keys, 1):
        stash.dump(key, key)
        log.add(key, VERSION, (key,))
        if n % group == 0:
            log.flush()
    log.close()


def bench_writing(dirs: RunDirs, items: int, group: int, reps: int) -> str:
    keys = [f'item-{i:07d}' for i in range(items)]
    contenders: dict[str, Callable[[Path], None]] = {
        'store': partial(store_only, keys=keys),
        'store + record': partial(store_and_record, keys=keys, group=group),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(reps):
        for name in rotated(list(contenders), rep):
            folder = dirs.new(name.replace(' ', '').replace('+', '-'))
            gc.collect()
            t0 = time.perf_counter()
            contenders[name](folder)
            times[name].append(time.perf_counter() - t0)
    from stashworks.multi.units import UnitLog

    check = UnitLog.beside(folder).read() if 'record' in name else None
    if check is not None and len(check) != items:
        raise RuntimeError(f'the log holds {len(check)} records, not {items}')
    base = times['store']
    rows = []
    for name, ts in times.items():
        cost = median_ratio(base, ts)  # time / store time, per rep
        rows.append([name, f'{statistics.median(ts) * 1e6 / items:.1f}', f'{cost:.3f}x'])
    return (
        f'### Writing: {items:,} one-item units, a record flushed every {group} units, {reps} reps\n\n'
        + format_table(['contender', 'median µs per unit', 'time vs store (median of per-rep ratios)'], rows)
    )


# -- 2. reading on resume -------------------------------------------------------


def build_resume(folder: Path, keys: list[str], done: int) -> None:
    from stashworks import DirectoryStash
    from stashworks.multi.units import UnitLog

    stash = DirectoryStash(folder)
    log = UnitLog.beside(folder)
    for n, key in enumerate(keys[:done], 1):
        stash.dump(key, key)
        log.add(key, VERSION, (key,))
        if n % 1000 == 0:
            log.flush()
    log.close()


def raw_missing(folder: str, keys: list[str]) -> set[str]:
    with os.scandir(folder) as it:
        done = {e.name[:-4] for e in it if e.name.endswith('.dat')}
    return set(keys) - done


def planned_missing(folder: str, keys: list[str], read_records: bool) -> set[str]:
    """The planning step of ``prime()`` with unit records: store listing, log, plan."""
    from stashworks import DirectoryStash
    from stashworks.multi.units import UnitLog, plan_units

    stash = DirectoryStash(folder)
    log = UnitLog.beside(folder)
    listing: Optional[set[str]] = None

    def stored(ks: list[str]) -> list[bool]:
        nonlocal listing
        if listing is None:
            listing = set(stash.keys())
        return [k in listing for k in ks]

    rows = log.latest_rows() if read_records or not log.only(VERSION) else None
    plan = plan_units(((k, None) for k in keys), stored, lambda ks: [False] * len(ks), VERSION, rows, one_key=True)
    return set(plan.missing)


def bench_resume(dirs: RunDirs, total: int, done: int, repeat: int) -> str:
    keys = [f'item-{i:07d}' for i in range(total)]
    folder = dirs.new('resume')
    build_resume(folder, keys, done)
    f = str(folder)
    contenders: dict[str, Callable[[], set[str]]] = {
        'raw': partial(raw_missing, f, keys),
        'plan, one-key form': partial(planned_missing, f, keys, False),
        'plan, records read': partial(planned_missing, f, keys, True),
    }
    expected = set(keys[done:])
    for name, fn in contenders.items():
        if fn() != expected:
            raise RuntimeError(f'{name} did not find exactly the {len(expected)} missing units')
    best = {name: float('inf') for name in contenders}
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(repeat):
        for name in rotated(list(contenders), rep):
            gc.collect()
            t0 = time.perf_counter()
            contenders[name]()
            dt = time.perf_counter() - t0
            samples[name].append(dt)
            best[name] = min(best[name], dt)
    rows = [
        [
            name,
            f'{best[name] * 1e3:.1f}',
            f'{best[name] / best["raw"]:.2f}x',
            f'{statistics.median(samples[name]) * 1e3:.1f}',
        ]
        for name in contenders
    ]
    return (
        f'### Resume: the {total - done:,} missing of {total:,} one-item units ({done:,} recorded), '
        f'fastest of {repeat}\n\n' + format_table(['method', 'min (ms)', 'ratio to raw (min)', 'median (ms)'], rows)
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dir', default='/dev/shm', help='where to write (tmpfs by default)')
    parser.add_argument('--items', type=int, default=20_000, help='units in the writing benchmark')
    parser.add_argument('--group', type=int, default=100, help='records per flush in the writing benchmark')
    parser.add_argument('--reps', type=int, default=7, help='reps of the writing benchmark')
    parser.add_argument('--total', type=int, default=TOTAL)
    parser.add_argument('--done', type=int, default=DONE)
    parser.add_argument('--repeat', type=int, default=30, help='runs of each resume contender; the fastest counts')
    parser.add_argument('--only', choices=('writing', 'resume'), help='run one of the two')
    args = parser.parse_args(argv)
    note = machine_note()
    with RunDirs(args.dir) as dirs:
        if args.only in (None, 'writing'):
            print(bench_writing(dirs, args.items, args.group, args.reps), end='\n\n')
        if args.only in (None, 'resume'):
            print(bench_resume(dirs, args.total, args.done, args.repeat), end='\n\n')
    print(f'Machine: {note}; folder {args.dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
