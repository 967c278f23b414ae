"""A batch of trivial items into LmdbStash, against DirectoryStash and a hand-written pool.

Three contenders compute ``--items`` trivial items (a small dict per key)
with ``--workers`` worker processes, into a fresh folder each, taking
turns rep by rep in an order rotated every rep:

* ``LmdbStash``: ``MultiProcessFactoryStash(LmdbStash(out), f, keys=...)``,
  its keys from a generator;
* ``DirectoryStash``: the same batch into ``DirectoryStash(out)``;
* ``hand-written``: a ``concurrent.futures.ProcessPoolExecutor`` sent
  chunks of ``--chunk`` keys from the same generator, whose workers
  compute a chunk and write it to LMDB in one transaction of their own
  (what a careful user writes by hand; no progress, failure records or
  resume).

Named with ``--contenders`` only: ``LmdbStash-noclaims``, the LmdbStash
batch with ``STASHWORKS_CLAIMS=0`` (no claims for other runs on the same
folder), to show what claiming costs.

Each figure is the median over reps of the per-rep ratio of items per
second to the hand-written pool's; every run's items are counted
afterwards.  Next to it, the CPU seconds (median rep) of the parent and
of its worker processes, which show where the time goes.  Nothing is
deleted until the run is over.

Run::

    python benchmarks/bench_lmdb_batch.py --dir /tmp --items 1000000 --reps 3
"""

from __future__ import annotations

import argparse
import itertools
import os
import pickle
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import lmdb
from _common import RunDirs, format_table, machine_note, median_ratio, ratios, rotated

from stashworks import DirectoryStash, LmdbStash, MultiProcessFactoryStash

BASELINE = 'hand-written'
# What LmdbStash must reach: against the same batch into a DirectoryStash,
# and against the hand-written pool.
TARGET_VS_DIRECTORY = 5.0
TARGET_VS_HANDWRITTEN = 0.9


def key_of(i: int) -> str:
    return f'item-{i:09d}'


def keys(n: int) -> Iterator[str]:
    """The work keys, generated (never a list in the parent)."""
    return (key_of(i) for i in range(n))


def compute(key: str) -> dict[str, Any]:
    """A trivial item: well under a microsecond of work."""
    return {'key': key, 'n': len(key)}


# -- the hand-written pool -------------------------------------------------------------------------

_env: dict[str, Any] = {}


def write_chunk(path: str, chunk: list[str]) -> int:
    env = _env.get(path)
    if env is None:
        env = _env[path] = lmdb.open(path, map_size=1 << 34, max_spare_txns=0)
    pairs = [(key.encode(), pickle.dumps(compute(key), pickle.HIGHEST_PROTOCOL)) for key in chunk]
    with env.begin(write=True) as txn:
        txn.cursor().putmulti(pairs)
    return len(chunk)


def hand_written(folder: Path, n: int, workers: int, chunk: int) -> int:
    """Chunks of keys from the same generator, sent to a ProcessPoolExecutor, each written in one transaction."""
    path = str(folder / 'out')
    os.makedirs(path, exist_ok=True)
    it = keys(n)
    with ProcessPoolExecutor(workers) as pool:
        futures = []
        while block := list(itertools.islice(it, chunk)):
            futures.append(pool.submit(write_chunk, path, block))
        done = sum(f.result() for f in futures)
    with lmdb.open(path, map_size=1 << 34) as env:
        stored = env.stat()['entries']
    if done != n or stored != n:
        raise AssertionError(f'hand-written pool stored {stored} of {n}')
    return n


def batch(store: Any, n: int, workers: int) -> int:
    stash = MultiProcessFactoryStash(store, compute, keys=lambda: keys(n), workers=workers, progress=False)
    stash.prime()
    stored = len(store)
    if stored != n:
        raise AssertionError(f'{store!r} holds {stored} of {n}')
    close = getattr(store, 'close', None)
    if close is not None:
        close()
    return n


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds so far of this process, and of its children that ended."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def run(name: str, folder: Path, args: Any) -> tuple[float, float, float]:
    """Wall seconds, and CPU seconds of the parent and of the workers (all reaped by the end)."""
    parent0, workers0 = cpu_seconds()
    start = time.perf_counter()
    if name == 'LmdbStash':
        batch(LmdbStash(folder / 'out'), args.items, args.workers)
    elif name == 'LmdbStash-noclaims':
        os.environ['STASHWORKS_CLAIMS'] = '0'
        try:
            batch(LmdbStash(folder / 'out'), args.items, args.workers)
        finally:
            del os.environ['STASHWORKS_CLAIMS']
    elif name == 'DirectoryStash':
        batch(DirectoryStash(folder / 'out'), args.items, args.workers)
    else:
        hand_written(folder, args.items, args.workers, args.chunk)
    wall = time.perf_counter() - start
    parent1, workers1 = cpu_seconds()
    return wall, parent1 - parent0, workers1 - workers0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dir', action='append', help='folder to run in (repeatable; default /tmp)')
    parser.add_argument('--items', type=int, default=1_000_000)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--chunk', type=int, default=2000, help="the hand-written pool's keys per task")
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--contenders', help='comma-separated names (default: all)')
    parser.add_argument('--keep', action='store_true')
    args = parser.parse_args(argv)
    names = ['LmdbStash', 'DirectoryStash', BASELINE]
    if args.contenders:
        wanted = {n.strip() for n in args.contenders.split(',')} | {BASELINE}
        unknown = wanted - {*names, 'LmdbStash-noclaims'}
        if unknown:
            parser.error(f'unknown contenders: {", ".join(sorted(unknown))}')
        names = [n for n in [*names, 'LmdbStash-noclaims'] if n in wanted]
    print(f'# batch of {args.items:,} trivial items, {args.workers} workers, {args.reps} reps')
    print(machine_note())
    print(f'command: python benchmarks/bench_lmdb_batch.py {" ".join(sys.argv[1:])}')
    failed = False
    for root in args.dir or ['/tmp']:
        times: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        with RunDirs(root, keep=args.keep) as dirs:
            for rep in range(args.reps):
                for name in rotated(names, rep):
                    wall, parent_cpu, workers_cpu = run(name, dirs.new(name), args)
                    times[name].append(wall)
                    cpu[name].append((parent_cpu, workers_cpu))
                    print(
                        f'  {root} rep {rep + 1}: {name} {args.items / wall:,.0f} items/s '
                        f'(CPU s: parent {parent_cpu:.2f}, workers {workers_cpu:.2f})',
                        file=sys.stderr,
                    )
        rows = []
        for name in names:
            r = ratios(times[name], times[BASELINE])
            med = sorted(times[name])[len(times[name]) // 2]
            parents = sorted(p for p, _ in cpu[name])
            workers = sorted(w for _, w in cpu[name])
            rows.append(
                [
                    name,
                    f'{args.items / med:,.0f}',
                    f'{median_ratio(times[name], times[BASELINE]):.2f}x',
                    f'{min(r):.2f}-{max(r):.2f}',
                    f'{parents[len(parents) // 2]:.2f}',
                    f'{workers[len(workers) // 2]:.2f}',
                ]
            )
        print(f'\n## {root}: items/s (median rep) and speed relative to the hand-written pool\n')
        print(
            format_table(
                ['contender', 'items/s', f'vs {BASELINE}', 'range', 'parent CPU s', 'workers CPU s'],
                rows,
            )
        )
        if 'LmdbStash' in names:
            vs_hand = median_ratio(times['LmdbStash'], times[BASELINE])
            verdicts = [f'vs hand-written {vs_hand:.2f}x (target {TARGET_VS_HANDWRITTEN}x)']
            ok = vs_hand >= TARGET_VS_HANDWRITTEN
            if 'DirectoryStash' in names:
                vs_dir = median_ratio(times['LmdbStash'], times['DirectoryStash'])
                ok &= vs_dir >= TARGET_VS_DIRECTORY
                verdicts.append(f'vs DirectoryStash {vs_dir:.2f}x (target {TARGET_VS_DIRECTORY}x)')
            failed |= not ok
            print('\nLmdbStash: ' + '; '.join(verdicts) + (' - met' if ok else ' - NOT met'))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
