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
2. **Reading on resume.**  A folder holds 90,000 of 100,000 units done
   (items stored and recorded).  Each contender works out the 10,000
   missing units from the full list.  One-item units (the factory form):
   ``raw`` (the baseline: one ``os.scandir``, ``.dat`` suffix cut off,
   ``set(keys) - done``) against ``prime() planning, one-item form``
   (what ``prime()`` does before it starts a worker: build the stash, its
   job with the code's fingerprint, list the log's file names, plan, write
   the census).  Units whose item is stored under another key (the
   ``expand`` form: each unit's record tells its item, which is checked
   against the store's listing): ``raw, <unit>.0 items`` against two
   contenders.  ``prime() planning, expand form (index)`` plans from the
   log's index (``.stashworks/units/index``, written by the census read
   at the end of every run, or by any read that found many records beyond
   it), as a resume after a run that ended does.  ``prime() planning,
   expand form (no index)`` plans a second folder whose index is removed
   before each run (untimed), so every record is read and decoded, and
   the index written, as the first resume after a kill that came before
   any index does.  Reported: each contender's fastest run over
   ``--repeat`` against its baseline's fastest (as in ``bench_resume.py``),
   and the median over reps of the ratio of its time to its baseline's
   time in the same rep.
3. **A whole batch.**  ``--batch-items`` trivial one-item units (the
   factory returns its key), ``--workers`` workers, into a fresh folder
   per trial: ``with records`` (as shipped) against ``without records``
   (the same job with its unit log removed), reported as the median of
   per-rep time ratios.

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
from typing import Any, Callable, Optional

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


def build_resume(folder: Path, keys: list[str], done: int, version: str = VERSION) -> None:
    from stashworks import DirectoryStash
    from stashworks.multi.units import UnitLog

    stash = DirectoryStash(folder)
    log = UnitLog.beside(folder)
    for n, key in enumerate(keys[:done], 1):
        stash.dump(key, key)
        log.add(key, version, (key,))
        if n % 1000 == 0:
            log.flush()
    log.close()


def raw_missing(folder: str, keys: list[str]) -> set[str]:
    with os.scandir(folder) as it:
        done = {e.name[:-4] for e in it if e.name.endswith('.dat')}
    return set(keys) - done


def _never(key: str) -> None:
    raise AssertionError(f'nothing may be computed here, yet {key!r} was')


def _never_expand(unit: str) -> list[tuple[str, str]]:
    raise AssertionError(f'nothing may be computed here, yet {unit!r} was')


def planned_missing(folder: str, keys: list[str], expand: bool) -> set[str]:
    """What ``prime()`` spends before it starts a worker: build the stash, its job (the version), plan."""
    from stashworks import DirectoryStash, MultiProcessFactoryStash

    factory = _never_expand if expand else _never
    stash = MultiProcessFactoryStash(DirectoryStash(folder), factory, keys=keys, expand=expand, progress=False)
    plan = stash._plan(stash._make_job())
    return set(plan.missing)


def build_expanded(folder: Path, keys: list[str], done: int) -> None:
    """Like :func:`build_resume` for units that each stored one item under ``<unit>.0``."""
    from stashworks import DirectoryStash, MultiProcessFactoryStash
    from stashworks.multi.units import UnitLog

    version = MultiProcessFactoryStash(DirectoryStash(folder), _never_expand, keys=[], expand=True)._version()
    stash = DirectoryStash(folder)
    log = UnitLog.beside(folder)
    for n, key in enumerate(keys[:done], 1):
        stash.dump(key + '.0', key)
        log.add(key, version, (key + '.0',))
        if n % 1000 == 0:
            log.flush()
    log.close()


def raw_missing_expanded(folder: str, keys: list[str]) -> set[str]:
    with os.scandir(folder) as it:
        done = {e.name[:-6] for e in it if e.name.endswith('.0.dat')}
    return set(keys) - done


def bench_resume(dirs: RunDirs, total: int, done: int, repeat: int) -> str:
    from stashworks import DirectoryStash, MultiProcessFactoryStash
    from stashworks.multi.units import INDEX_FILE, UnitLog

    keys = [f'item-{i:07d}' for i in range(total)]
    one = dirs.new('resume-one-item')
    version = MultiProcessFactoryStash(DirectoryStash(one), _never, keys=[])._version()
    build_resume(one, keys, done, version)
    many = dirs.new('resume-expand')
    build_expanded(many, keys, done)
    UnitLog.beside(many).compact()
    bare = dirs.new('resume-expand-no-index')
    build_expanded(bare, keys, done)
    bare_index = UnitLog.beside(bare).path / INDEX_FILE
    contenders: dict[str, Callable[[], set[str]]] = {
        'raw': partial(raw_missing, str(one), keys),
        'prime() planning, one-item form': partial(planned_missing, str(one), keys, False),
        'raw, <unit>.0 items': partial(raw_missing_expanded, str(many), keys),
        'prime() planning, expand form (index)': partial(planned_missing, str(many), keys, True),
        'prime() planning, expand form (no index)': partial(planned_missing, str(bare), keys, True),
    }
    # What each run before the no-index contender's leaves: its index.
    setup: dict[str, Callable[[], None]] = {'prime() planning, expand form (no index)': bare_index.unlink}
    expected = set(keys[done:])
    for name, fn in contenders.items():
        got = fn()
        if got != expected:
            raise RuntimeError(f'{name} found {len(got)} missing units, not the {len(expected)} expected')
    best = {name: float('inf') for name in contenders}
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(repeat):
        for name in rotated(list(contenders), rep):
            if name in setup:
                setup[name]()
            gc.collect()
            t0 = time.perf_counter()
            contenders[name]()
            dt = time.perf_counter() - t0
            samples[name].append(dt)
            best[name] = min(best[name], dt)
    rows = []
    for name in contenders:
        base_name = 'raw, <unit>.0 items' if 'expand' in name or '<unit>' in name else 'raw'
        # Each rep's time over its raw baseline's in the same rep: a slow
        # moment on the machine cancels out.
        per_rep = sorted(t / b for t, b in zip(samples[name], samples[base_name], strict=True))
        quartiles = statistics.quantiles(per_rep, n=4) if len(per_rep) > 1 else per_rep * 3
        rows.append(
            [
                name,
                f'{best[name] * 1e3:.1f}',
                f'{best[name] / best[base_name]:.2f}x',
                f'{statistics.median(samples[name]) * 1e3:.1f}',
                f'{median_ratio(samples[base_name], samples[name]):.2f}x ({quartiles[0]:.2f}-{quartiles[2]:.2f})',
            ]
        )
    return (
        f'### Resume: the {total - done:,} missing of {total:,} units ({done:,} done and recorded), '
        f'{repeat} reps\n\n'
        + format_table(
            [
                'method',
                'min (ms)',
                'ratio to its raw baseline (min)',
                'median (ms)',
                'median of per-rep ratios to its raw baseline (quartiles)',
            ],
            rows,
        )
    )


# -- 3. a whole batch ------------------------------------------------------------


def trivial(key: str) -> str:
    return key


def run_batch(folder: Path, keys: list[str], workers: int, record: bool) -> None:
    from stashworks import DirectoryStash, MultiProcessFactoryStash
    from stashworks.multi.unitjob import UnitJob

    stash = MultiProcessFactoryStash(DirectoryStash(folder), trivial, keys=keys, workers=workers, progress=False)
    if not record:
        make_job = stash._make_job

        def without_records() -> Any:
            job = make_job()
            if not isinstance(job, UnitJob):
                raise RuntimeError(f'the batch made a {type(job).__name__}, not a UnitJob: nothing to leave out')
            job.units_log = None  # the same job, recording nothing
            return job

        stash._make_job = without_records  # type: ignore[method-assign]
    result = stash.prime()
    if result.computed != len(keys):
        raise RuntimeError(f'the batch computed {result.computed} of {len(keys)} items')


def bench_batch(dirs: RunDirs, items: int, workers: int, reps: int) -> str:
    keys = [f'item-{i:07d}' for i in range(items)]
    contenders = {'without records': False, 'with records': True}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(reps):
        for name in rotated(list(contenders), rep):
            folder = dirs.new(name.replace(' ', '-'))
            gc.collect()
            t0 = time.perf_counter()
            run_batch(folder, keys, workers, contenders[name])
            times[name].append(time.perf_counter() - t0)
    from stashworks.multi.units import UnitLog

    if len(UnitLog.beside(folder).read()) != (items if contenders[name] else 0):
        raise RuntimeError('the unit log does not hold what the contender should have written')
    base = times['without records']
    cost = median_ratio(base, times['with records'])
    spread = sorted(t / b for t, b in zip(times['with records'], base, strict=True))
    rows = [[name, f'{statistics.median(ts):.3f}', f'{median_ratio(base, ts):.3f}x'] for name, ts in times.items()]
    return (
        f'### A trivial batch: {items:,} items, {workers} workers, {reps} reps\n\n'
        + format_table(['contender', 'median s', 'time vs without records (median of per-rep ratios)'], rows)
        + f'\n\nrecord cost: {100 * (cost - 1):+.1f}% (per-rep ratios {", ".join(f"{r:.3f}" for r in spread)})'
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
    parser.add_argument('--batch-items', type=int, default=20_000, help='items of the whole-batch benchmark')
    parser.add_argument('--batch-reps', type=int, default=7, help='reps of the whole-batch benchmark')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--only', choices=('writing', 'resume', 'batch'), help='run one of the three')
    args = parser.parse_args(argv)
    note = machine_note()
    with RunDirs(args.dir) as dirs:
        if args.only in (None, 'writing'):
            print(bench_writing(dirs, args.items, args.group, args.reps), end='\n\n')
        if args.only in (None, 'resume'):
            print(bench_resume(dirs, args.total, args.done, args.repeat), end='\n\n')
        if args.only in (None, 'batch'):
            print(bench_batch(dirs, args.batch_items, args.workers, args.batch_reps), end='\n\n')
    print(f'Machine: {note}; folder {args.dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
