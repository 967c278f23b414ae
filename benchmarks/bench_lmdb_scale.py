"""How a batch into an LmdbStash scales with its number of keys, and how fast a resumed one plans.

Scale: for each size in ``--sizes``, a fresh process runs a batch of that
many trivial items into a new ``LmdbStash`` (keys from a generator, never
a list in the parent; ``--workers`` workers) and reports its wall time,
items per second and its own peak RSS (the parent's ``VmHWM``, not the
workers'). The table shows how each grows; the targets are a parent under
300 MB at 10M keys and within 1.3x of its peak at 1M.  ``--order
scrambled`` generates every key once in a scrambled order instead of
increasing order (planning then remembers the missing keys in a filter).

Plan (``--plan N``): a database holding 90% of N keys (every tenth key
missing) is made once; then, interleaved rep by rep, the batch engine's
planning (``stashworks.multi.plan.plan_batch`` with the store's
``exists_many`` hook) and a raw LMDB cursor scan into a set plus a set
difference over the same key generator each find the missing keys.  The
figure is the median of per-rep time ratios (target: under 1.5x).

Run::

    python benchmarks/bench_lmdb_scale.py --dir /tmp --sizes 100000,1000000,10000000
    python benchmarks/bench_lmdb_scale.py --dir /tmp --plan 10000000 --reps 3
    python benchmarks/bench_lmdb_scale.py --dir /tmp --sizes 10000000 --interrupt 20

Interrupt (``--interrupt S``): the largest size, sent SIGINT (Ctrl-C)
after S seconds, then run again in a fresh process; the resumed run must
find exactly the items the first stored and compute only the rest.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lmdb
from _common import RunDirs, format_table, machine_note, ratios, rotated

from stashworks import LmdbStash, MultiProcessFactoryStash

RSS_LIMIT_MB = 300
RSS_GROWTH = 1.3
PLAN_TARGET = 1.5


def key_of(i: int) -> str:
    return f'item-{i:09d}'


def keys(n: int, scrambled: bool = False) -> Iterator[str]:
    if scrambled:
        # Each of 0..n-1 once (7919 is prime and divides no size used here).
        return (key_of((i * 7919) % n) for i in range(n))
    return (key_of(i) for i in range(n))


def peak_mb() -> float:
    """This process's own peak RSS (ru_maxrss would carry a parent's over exec)."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compute(key: str) -> dict[str, Any]:
    return {'key': key, 'n': len(key)}


def one(out: Path, n: int, workers: int, scrambled: bool) -> dict[str, float]:
    """Run one batch in this process; report what it cost."""
    start = time.perf_counter()
    store = LmdbStash(out)
    stash = MultiProcessFactoryStash(store, compute, keys=lambda: keys(n, scrambled), workers=workers, progress=False)
    try:
        result = stash.prime()
    except KeyboardInterrupt:
        stored = len(store)
        store.close()
        return {'n': n, 'interrupted': True, 'stored': stored, 'peak_mb': peak_mb()}
    wall = time.perf_counter() - start
    stored = len(store)
    store.close()
    if stored != n or result.computed + result.done_before != n:
        raise AssertionError(f'{stored} stored, {result.computed} computed, of {n}')
    return {
        'n': n,
        'wall': wall,
        'rate': result.computed / wall,
        'peak_mb': peak_mb(),
        'done_before': result.done_before,
        'computed': result.computed,
    }


def interrupt(args: Any) -> bool:
    """The largest size, stopped by SIGINT after ``--interrupt`` seconds, then run again."""
    n = max(int(s) for s in args.sizes.split(','))
    root = (args.dir or ['/tmp'])[0]
    with RunDirs(root, keep=args.keep) as dirs:
        out = dirs.new(f'n{n}') / 'out'
        cmd = [sys.executable, __file__, '--one', str(n), '--out', str(out), '--workers', str(args.workers)]
        cmd += ['--order', args.order]
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(args.interrupt)
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate()
        got = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
        if not got.get('interrupted'):
            print(stderr, file=sys.stderr)
            raise SystemExit(f'the first run was not interrupted: {got}')
        second = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if second.returncode:
            print(second.stderr, file=sys.stderr)
            raise SystemExit('the resumed run failed')
        again = json.loads(second.stdout.strip().splitlines()[-1])
    exact = again['done_before'] == got['stored'] and again['computed'] == n - got['stored']
    print(f'\n## Ctrl-C after {args.interrupt} s and resume: {n:,} keys, {args.order} order\n')
    rows = [
        ['interrupted run', f'{got["stored"]:,} stored', '', f'{got["peak_mb"]:.0f} MB'],
        [
            'resumed run',
            f'{again["done_before"]:,} done before',
            f'{again["computed"]:,} computed',
            f'{again["peak_mb"]:.0f} MB',
        ],
    ]
    print(format_table(['run', 'items', 'computed', 'parent peak RSS'], rows))
    print(f'\nresume exact (nothing computed twice, nothing left): {exact}')
    return exact and again['peak_mb'] < RSS_LIMIT_MB


def scale(args: Any) -> bool:
    sizes = [int(s) for s in args.sizes.split(',')]
    rows, peaks = [], {}
    ok = True
    for root in args.dir or ['/tmp']:
        with RunDirs(root, keep=args.keep) as dirs:
            for n in sizes:
                out = dirs.new(f'n{n}') / 'out'
                cmd = [sys.executable, __file__, '--one', str(n), '--out', str(out), '--workers', str(args.workers)]
                cmd += ['--order', args.order]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode:
                    print(proc.stderr, file=sys.stderr)
                    raise SystemExit(f'the {n:,}-key batch failed')
                got = json.loads(proc.stdout.strip().splitlines()[-1])
                peaks[n] = got['peak_mb']
                rows.append([root, f'{n:,}', f'{got["wall"]:.1f} s', f'{got["rate"]:,.0f}', f'{got["peak_mb"]:.0f} MB'])
                print(f'  {root}: {n:,} keys done', file=sys.stderr)
    print(f'\n## scale: one batch per size, {args.workers} workers, keys in {args.order} order\n')
    print(format_table(['folder', 'keys', 'wall', 'items/s', 'parent peak RSS'], rows))
    big, mid = max(sizes), 1_000_000
    if big >= 10_000_000:
        ok &= peaks[big] < RSS_LIMIT_MB
        print(f'\npeak RSS at {big:,} keys: {peaks[big]:.0f} MB (target < {RSS_LIMIT_MB} MB)')
    if mid in peaks and big > mid:
        growth = peaks[big] / peaks[mid]
        ok &= growth <= RSS_GROWTH
        print(f'peak RSS at {big:,} / at {mid:,}: {growth:.2f}x (target <= {RSS_GROWTH}x)')
    return ok


def fill_90_percent(path: Path, n: int) -> int:
    """Store every key but each tenth, in bulk; return how many are missing."""
    env = lmdb.open(str(path), map_size=1 << 36)
    batch: list[tuple[bytes, bytes]] = []
    stored = 0
    for i in range(n):
        if i % 10 == 0:
            continue
        key = key_of(i)
        batch.append((key.encode(), pickle.dumps(compute(key), pickle.HIGHEST_PROTOCOL)))
        if len(batch) >= 100_000:
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(batch, append=True)
            stored += len(batch)
            batch = []
    if batch:
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(batch, append=True)
        stored += len(batch)
    env.close()
    return n - stored


def raw_missing(path: Path, n: int) -> int:
    env = lmdb.open(str(path), map_size=1 << 36, readonly=True, lock=False)
    with env.begin() as txn:
        stored = set(txn.cursor().iternext(values=False))
    env.close()
    return len([k for k in keys(n) if k.encode() not in stored])


def engine_missing(path: Path, n: int, state: Path) -> int:
    from stashworks.multi.failures import FailureStash
    from stashworks.multi.plan import iter_pairs, plan_batch

    with LmdbStash(path) as store:
        plan = plan_batch(iter_pairs(keys(n)), store, FailureStash(state))
    return len(plan.missing)


def plan(args: Any) -> bool:
    n = args.plan
    root = (args.dir or ['/tmp'])[0]
    with RunDirs(root, keep=args.keep) as dirs:
        path = dirs.new('db') / 'out'
        path.mkdir()
        start = time.perf_counter()
        missing = fill_90_percent(path, n)
        print(f'  filled {n - missing:,} of {n:,} keys in {time.perf_counter() - start:.0f} s', file=sys.stderr)
        state = dirs.new('state')
        times: dict[str, list[float]] = {'stashworks plan': [], 'raw scan + set difference': []}
        for rep in range(args.reps):
            for name in rotated(list(times), rep):
                start = time.perf_counter()
                if name == 'stashworks plan':
                    found = engine_missing(path, n, state)
                else:
                    found = raw_missing(path, n)
                t = time.perf_counter() - start
                if found != missing:
                    raise AssertionError(f'{name} found {found} missing keys, not {missing}')
                times[name].append(t)
                print(f'  rep {rep + 1}: {name} {t:.2f} s', file=sys.stderr)
    r = ratios(times['raw scan + set difference'], times['stashworks plan'])
    slower = statistics.median(r)
    print(f'\n## plan: the missing keys of a 90%-done batch of {n:,} keys, {args.reps} reps\n')
    rows = [[name, f'{statistics.median(ts):.2f} s'] for name, ts in times.items()]
    print(format_table(['how', 'median time'], rows))
    print(
        f'\nstashworks plan / raw scan: {slower:.2f}x the time (per-rep {min(r):.2f}-{max(r):.2f}; '
        f'target < {PLAN_TARGET}x)'
    )
    return slower < PLAN_TARGET


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dir', action='append', help='folder to run in (default /tmp)')
    parser.add_argument('--sizes', default='100000,1000000,10000000')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--plan', type=int, help='time the planning of a 90%%-done batch of this many keys')
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--order', choices=['increasing', 'scrambled'], default='increasing')
    parser.add_argument('--interrupt', type=float, help='Ctrl-C the largest size after this many seconds, then resume')
    parser.add_argument('--keep', action='store_true')
    parser.add_argument('--one', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(Path(args.out), args.one, args.workers, args.order == 'scrambled')))
        return 0
    print(machine_note())
    print(f'command: python benchmarks/bench_lmdb_scale.py {" ".join(sys.argv[1:])}')
    ok = plan(args) if args.plan else interrupt(args) if args.interrupt else scale(args)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
