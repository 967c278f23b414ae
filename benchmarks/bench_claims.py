"""Runs that share an output folder: what claiming chunks costs.

Two figures, each from contenders interleaved rep by rep (order rotated),
reported as the median of per-rep ratios:

* **cooperation**: the same keys computed by *two* ``prime()`` runs of 1
  worker each, started together on one folder, against *one* run of 2
  workers.  Each run is its own process; every run's ``prime()`` starts
  at one agreed moment (``--lead`` seconds after launch, so starting
  Python is not counted), and the time is from that moment to the end of
  the last run's ``prime()``.  The time from launch to the last exit is
  shown for information.  Every key is counted: the runs' ``computed``
  must add up to the number of keys (none computed twice).
* **overhead**: one run of 2 workers on trivial items, claims on against
  ``STASHWORKS_CLAIMS=0``; the time is ``prime()`` inside the process.

Run::

    /work/venv/bin/python benchmarks/bench_claims.py
    /work/venv/bin/python benchmarks/bench_claims.py --reps 9 --root /dev/shm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from _common import RunDirs, format_table, machine_note, rotated


class Spin:
    """An item that keeps a CPU busy for about ``spin`` loop turns."""

    def __init__(self, spin: int) -> None:
        self.spin = spin

    def __call__(self, key: str) -> int:
        total = 0
        for i in range(self.spin):
            total += i
        return total


def _time_claims() -> list[float]:
    """Add up the time this process spends in the claims code (the parent's own cost)."""
    from stashworks.multi import claims

    spent = [0.0]

    def timed(cls: type, name: str) -> None:
        inner = getattr(cls, name)

        def wrapper(*args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*args, **kw)
            finally:
                spent[0] += time.perf_counter() - t

        setattr(cls, name, wrapper)

    for name in ('open', 'close', 'settle', 'update'):
        timed(claims.ClaimBook, name)
    timed(claims.SharedWork, 'take')
    return spent


def child(folder: str, keys: int, workers: int, spin: int, start_at: float) -> None:
    """One run: wait for ``start_at`` (epoch), prime the folder, print what it did as JSON."""
    from stashworks import DirectoryStash, MultiProcessFactoryStash

    stash = MultiProcessFactoryStash(
        DirectoryStash(folder), Spin(spin), keys=[f'k{n}' for n in range(keys)], workers=workers, progress=False
    )
    spent = _time_claims()
    late = time.time() - start_at
    if late < 0:
        time.sleep(-late)
    start = time.perf_counter()
    result = stash.prime()
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                'elapsed': elapsed,
                'late': max(0.0, late),
                'in_claims': spent[0],
                'ended': time.time(),
                'computed': result.computed,
                'done_elsewhere': getattr(result, 'done_elsewhere', 0),
            }
        )
    )


def launch(
    folder: Path, keys: int, workers: int, spin: int, start_at: float = 0.0, claims: bool = True
) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env['STASHWORKS_CLAIMS'] = '1' if claims else '0'
    cmd = [sys.executable, __file__, '--child', str(folder), str(keys), str(workers), str(spin), str(start_at)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)


def collect(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f'a run failed (exit {proc.returncode})')
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def cooperation(dirs: RunDirs, reps: int, keys: int, spin: int, lead: float) -> str:
    times: dict[str, list[float]] = {'one run, 2 workers': [], 'two runs, 1 worker each': []}
    walls: dict[str, list[float]] = {name: [] for name in times}
    for rep in range(reps):
        for name in rotated(list(times), rep):
            folder = dirs.new('coop')
            # Every run starts its prime() at the same moment, after its
            # interpreter started: the span to the last run's end is the
            # batch's time, without the cost of starting Python twice.
            start_at = time.time() + lead
            start = time.perf_counter()
            runs = 1 if name.startswith('one') else 2
            workers = 2 if runs == 1 else 1
            results = collect([launch(folder, keys, workers, spin, start_at) for _ in range(runs)])
            walls[name].append(time.perf_counter() - start)
            times[name].append(max(r['ended'] for r in results) - start_at)
            if max(r['late'] for r in results) > 0.05:
                print(f'  rep {rep}: a run started {max(r["late"] for r in results):.2f}s late', file=sys.stderr)
            computed = sum(r['computed'] for r in results)
            if computed != keys:
                raise SystemExit(f'{name}: {computed} computations for {keys} keys')
            if not name.startswith('one'):
                print(f'  rep {rep}: the runs computed {[r["computed"] for r in results]}', file=sys.stderr)
    base = times['one run, 2 workers']
    coop = times['two runs, 1 worker each']
    rel = [c / b for c, b in zip(coop, base, strict=True)]
    wall = [c / b for c, b in zip(walls['two runs, 1 worker each'], walls['one run, 2 workers'], strict=True)]
    rows = [
        ['one run, 2 workers', f'{statistics.median(base):.2f}', '1.00', '1.00'],
        [
            'two runs, 1 worker each',
            f'{statistics.median(coop):.2f}',
            f'{statistics.median(rel):.3f} (min {min(rel):.3f}, max {max(rel):.3f})',
            f'{statistics.median(wall):.3f}',
        ],
    ]
    headers = ['contender', 'median s (info)', 'batch time / one run', 'with Python start-up (info)']
    return format_table(headers, rows)


def overhead(dirs: RunDirs, reps: int, keys: int) -> str:
    times: dict[str, list[float]] = {'claims off': [], 'claims on': []}
    shares: list[float] = []
    for rep in range(reps):
        for name in rotated(list(times), rep):
            folder = dirs.new('trivial')
            (result,) = collect([launch(folder, keys, 2, 0, claims=name == 'claims on')])  # timed inside
            if result['computed'] != keys:
                raise SystemExit(f'{name}: computed {result["computed"]} of {keys}')
            times[name].append(result['elapsed'])
            if name == 'claims on':
                shares.append(result['in_claims'] / result['elapsed'])
    off, on = times['claims off'], times['claims on']
    rel = [a / b for a, b in zip(on, off, strict=True)]
    rows = [
        ['claims off', f'{statistics.median(off):.3f}', '1.00'],
        [
            'claims on',
            f'{statistics.median(on):.3f}',
            f'{statistics.median(rel):.3f} (min {min(rel):.3f}, max {max(rel):.3f})',
        ],
    ]
    table = format_table(['contender', 'median s (info)', 'time / claims off (median of per-rep ratios)'], rows)
    share = statistics.median(shares)
    return f'{table}\n\nTime the run spends in the claims code: {100 * share:.2f}% of prime() (median)'


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--child', nargs=5, metavar=('FOLDER', 'KEYS', 'WORKERS', 'SPIN', 'START'), help=argparse.SUPPRESS)
    ap.add_argument('--lead', type=float, default=4.0, help='seconds given to the runs to start Python')
    ap.add_argument('--reps', type=int, default=7)
    ap.add_argument('--root', default='/dev/shm', help='where trial folders go (default: tmpfs)')
    ap.add_argument('--keys', type=int, default=400, help='keys of the cooperation figure')
    ap.add_argument('--spin', type=int, default=100_000, help='loop turns per item of the cooperation figure')
    ap.add_argument('--trivial', type=int, default=20_000, help='keys of the overhead figure')
    ap.add_argument('--only', choices=['cooperation', 'overhead'])
    args = ap.parse_args(argv)
    if args.child:
        folder, keys, workers, spin, start_at = args.child
        child(folder, int(keys), int(workers), int(spin), float(start_at))
        return 0
    print(machine_note())
    with RunDirs(args.root) as dirs:
        if args.only in (None, 'cooperation'):
            print(f'\nCooperation: {args.keys} items of {args.spin} loop turns, {args.reps} reps')
            print(cooperation(dirs, args.reps, args.keys, args.spin, args.lead))
        if args.only in (None, 'overhead'):
            print(f'\nClaims overhead: {args.trivial} trivial items, 2 workers, {args.reps} reps')
            print(overhead(dirs, args.reps, args.trivial))
    return 0


if __name__ == '__main__':
    sys.exit(main())
