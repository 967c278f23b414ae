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

With ``--case adaptive``: ``LocalCluster(n_workers=1, threads_per_worker=1)``
with ``cluster.adapt(minimum=1, maximum=4)``, 400 items that each sleep
50 ms (work that waits, so four workers help on two cores), the batch
(``DaskExecutor(client)``, defaults) against a hand-written ``client.map``
of one task per key that writes its pickle file; a fresh cluster per
contender per rep, the cluster's growth inside the timing for both.

The cluster's start-up (``LocalCluster`` + ``Client``) is timed on its
own, outside the work phase; each rep starts and closes its own cluster.
Each trial writes into a fresh folder; folders are removed at the end.

Run from the repository root::

    /work/venv/bin/python benchmarks/bench_dask.py              # 5 reps
    /work/venv/bin/python benchmarks/bench_dask.py --reps 2     # quicker
    /work/venv/bin/python benchmarks/bench_dask.py --case adaptive --reps 5
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import threading
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
    parser.add_argument('--case', choices=['pool', 'adaptive'], default='pool', help='which comparison to run')
    args = parser.parse_args()
    if args.case == 'adaptive':
        adaptive(args.reps, args.dir)
        return

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


# -- the adaptive cluster ---------------------------------------------------------

ADAPTIVE_ITEMS = 400
ADAPTIVE_SECONDS = 0.05
ADAPTIVE_MAX = 4


class Wait:
    """``key * 2`` after sleeping ``seconds``: work that waits (I/O, a remote service), not CPU."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, key: str) -> str:
        time.sleep(self.seconds)
        return key * 2


def _store_one(folder: str, work: Wait, key: str) -> None:
    """The hand-written task: compute one key and write it as a pickle file, atomically."""
    import os
    import pickle

    value = work(key)
    tmp = os.path.join(folder, f'.{key}.{os.getpid()}.tmp')
    with open(tmp, 'wb') as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, os.path.join(folder, f'{key}.dat'))


def _adaptive_cluster() -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=':0', silence_logs=logging.ERROR
    )
    cluster.adapt(minimum=1, maximum=ADAPTIVE_MAX)
    client = Client(cluster, set_as_default=False)
    client.wait_for_workers(1)
    return cluster, client


def _hand_written(client: Any, folder: Path, work: Wait, keys: list[str]) -> None:
    futures = client.map(_store_one, [str(folder)] * len(keys), [work] * len(keys), keys)
    client.gather(futures)


def _batch(client: Any, folder: Path, work: Wait, keys: list[str]) -> None:
    from stashworks import DaskExecutor, DirectoryStash
    from stashworks.multi import MultiProcessFactoryStash

    stash = MultiProcessFactoryStash(
        DirectoryStash(folder), work, keys=keys, executor=DaskExecutor(client), progress=False
    )
    result = stash.prime()
    assert result.computed == len(keys) and not result.failed, result


def _watch(client: Any, seen: list[int], stop: threading.Event) -> None:
    """Record the cluster's worker count every 0.1 s until ``stop``."""
    while not stop.wait(0.1):
        seen.append(len(client.scheduler_info()['workers']))


def adaptive(reps: int, root: str) -> None:
    """``LocalCluster(n_workers=1)`` + ``adapt(maximum=4)``: the batch against ``client.map``."""
    work = Wait(ADAPTIVE_SECONDS)
    keys = [f'item-{i:04d}' for i in range(ADAPTIVE_ITEMS)]
    print(f'{machine_note()}')
    print(
        f'adaptive: {ADAPTIVE_ITEMS} items sleeping {ADAPTIVE_SECONDS * 1000:.0f} ms, LocalCluster(n_workers=1) + '
        f'adapt(minimum=1, maximum={ADAPTIVE_MAX}), {reps} reps\n'
    )
    runners = {'client.map': _hand_written, 'stashworks': _batch}
    times: dict[str, list[float]] = {name: [] for name in runners}
    peak: dict[str, list[int]] = {name: [] for name in runners}
    with RunDirs(root) as dirs:
        for rep in range(reps):
            for contender in rotated(list(runners), rep):
                cluster, client = _adaptive_cluster()
                seen = [1]
                stop = threading.Event()
                watcher = threading.Thread(target=_watch, args=(client, seen, stop), daemon=True)
                watcher.start()
                try:
                    folder = dirs.new(contender.replace('.', '-'))
                    run = functools.partial(runners[contender], client, folder, work, keys)
                    times[contender].append(time_once(run))
                finally:
                    stop.set()
                    watcher.join()
                    client.close()
                    cluster.close()
                peak[contender].append(max(seen))
            line = ', '.join(f'{name} {ts[-1]:.2f} s ({peak[name][-1]} workers)' for name, ts in times.items())
            print(f'rep {rep + 1}: {line}')
    rows = []
    for name, ts in times.items():
        rows.append(
            [
                name,
                f'{statistics.median(ts):.2f}',
                f'{statistics.median(peak[name]):.0f}',
                f'{1 / median_ratio(ts, times["client.map"]):.2f}x',
            ]
        )
    print()
    print(
        format_table(
            ['adaptive cluster', 'median s', 'workers reached', 'time vs client.map (median of per-rep)'], rows
        )
    )


if __name__ == '__main__':
    main()
