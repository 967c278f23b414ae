"""The same batch on the local process pool and on a Dask cluster, side by side.

Workload: 400 items of about 5 ms of pure-Python work each (calibrated on
this machine at start), one pickle file per key in a ``DirectoryStash``.

Contenders, interleaved rep by rep with the order rotated:

* ``local``: ``MultiProcessFactoryStash(..., workers=2).prime()`` on the
  default local process pool (its worker start-up is inside the timing,
  as a one-shot batch pays for it);
* ``dask``: the same stash with ``executor=DaskExecutor(client)`` on a
  fresh ``LocalCluster(n_workers=2, threads_per_worker=1)``: the first
  batch on that cluster, so worker-side imports and the job's first load
  are inside the timing;
* ``dask (warm)``: a second batch on the same cluster, into a new folder.

The cluster's start-up (``LocalCluster`` + ``Client``) is timed on its
own, outside the work phase; each rep starts and closes its own cluster.
Each trial writes into a fresh folder; folders are removed at the end.

Run from the repository root::

    /work/venv/bin/python benchmarks/bench_dask.py              # 5 reps
    /work/venv/bin/python benchmarks/bench_dask.py --reps 2     # quicker
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from _common import RunDirs, format_table, machine_note, median_ratio, rotated, time_once

WORKERS = 2
ITEMS = 400
ITEM_SECONDS = 0.005


class Work:
    """``spin`` iterations of integer arithmetic: CPU-bound, pure Python."""

    def __init__(self, spin: int) -> None:
        self.spin = spin

    def __call__(self, key: str) -> int:
        x = len(key)
        for i in range(self.spin):
            x = (x * 31 + i) & 0xFFFFFFFF
        return x


def calibrate(seconds: float) -> Work:
    """A :class:`Work` whose one call takes about ``seconds`` here."""
    spin = 10_000
    while True:
        work = Work(spin)
        elapsed = min(time_once(lambda: work('k')) for _ in range(5))  # noqa: B023 (called right here)
        if elapsed > 0.002:
            return Work(max(1, int(spin * seconds / elapsed)))
        spin *= 2


def run_batch(folder: Path, work: Work, keys: list[str], executor: Any = None) -> Any:
    from stashworks import DirectoryStash
    from stashworks.multi import MultiProcessFactoryStash

    stash = MultiProcessFactoryStash(
        DirectoryStash(folder), work, keys=keys, workers=WORKERS, executor=executor, progress=False
    )
    result = stash.prime()
    assert result.computed == len(keys) and not result.failed, result
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--dir', default='/tmp', help='where the trial folders go')
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from stashworks import DaskExecutor

    work = calibrate(ITEM_SECONDS)
    keys = [f'item-{i:04d}' for i in range(ITEMS)]
    per_item = time_once(lambda: [work(k) for k in keys[:50]]) / 50
    print(f'{machine_note()}')
    print(f'{ITEMS} items of {per_item * 1000:.1f} ms, {WORKERS} workers, {args.reps} reps\n')

    times: dict[str, list[float]] = {'local': [], 'dask': [], 'dask (warm)': []}
    startup: list[float] = []
    with RunDirs(args.dir) as dirs:
        for rep in range(args.reps):
            for contender in rotated(['local', 'dask'], rep):
                if contender == 'local':
                    times['local'].append(time_once(lambda: run_batch(dirs.new('local'), work, keys)))
                    continue
                t0 = time.perf_counter()
                cluster = LocalCluster(
                    n_workers=WORKERS,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=':0',
                    silence_logs=logging.ERROR,
                )
                client = Client(cluster, set_as_default=False)
                client.wait_for_workers(WORKERS)
                startup.append(time.perf_counter() - t0)
                try:
                    for label in ('dask', 'dask (warm)'):
                        folder = dirs.new(label.split()[0])
                        executor = DaskExecutor(client)
                        times[label].append(time_once(lambda: run_batch(folder, work, keys, executor)))  # noqa: B023
                finally:
                    client.close()
                    cluster.close()
            line = ', '.join(f'{name} {ts[-1]:.2f} s' for name, ts in times.items())
            print(f'rep {rep + 1}: {line}, cluster start-up {startup[-1]:.2f} s')

    ideal = ITEMS * per_item / WORKERS
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        rows.append(
            [
                name,
                f'{median:.2f}',
                f'{ITEMS / median:.0f}',
                f'{1 / median_ratio(ts, times["local"]):.2f}x',
                f'{median / ideal:.2f}x',
            ]
        )
    print()
    print(format_table(['work phase', 'median s', 'items/s', 'time vs local (median of per-rep)', 'vs ideal'], rows))
    print(f'\ncluster start-up (LocalCluster + Client, 2 worker processes): median {statistics.median(startup):.2f} s')
    print(f'ideal = {ITEMS} x {per_item * 1000:.1f} ms / {WORKERS} workers = {ideal:.2f} s')


if __name__ == '__main__':
    main()
