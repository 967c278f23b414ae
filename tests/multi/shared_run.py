"""One run of a batch on a shared output folder, for the tests of cooperating runs.

As a script: ``python shared_run.py OUT KEYS WORKERS [--dask] [--retry]``
primes ``MultiProcessFactoryStash(DirectoryStash(OUT), mark, keys=k0..)``
and prints the run's result as one JSON line.  :func:`mark` (also usable as
``stashworks run shared_run:mark``) leaves one marker file per computation
in ``$SHARED_MARKERS`` (``<key>.<ppid>.<pid>.<n>``: a key computed twice has two),
sleeps ``$SHARED_DELAY`` seconds, and raises for the keys listed in
``$SHARED_FAIL`` (comma-separated).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

_count = itertools.count()


def mark(key: str) -> str:
    """Compute ``key``: a marker file, a pause, maybe a failure."""
    markers = os.environ.get('SHARED_MARKERS')
    if markers:
        # The parent's pid names the run (a pool worker's parent is its run).
        Path(markers, f'{key}.{os.getppid()}.{os.getpid()}.{next(_count)}').touch()
    time.sleep(float(os.environ.get('SHARED_DELAY', '0')))
    if key in os.environ.get('SHARED_FAIL', '').split(','):
        raise ValueError(f'{key} fails on purpose')
    return key.upper()


def main() -> None:
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parents[1] / 'src'))
    sys.path.insert(0, str(here))
    # Imported by name, so workers (Dask's too) find it by reference.
    from shared_run import mark as compute

    from stashworks import DirectoryStash, MultiProcessFactoryStash

    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('keys', type=int)
    ap.add_argument('workers', type=int)
    ap.add_argument('--chunk-size', type=int, default=0)
    ap.add_argument('--dask', action='store_true', help='run on a Dask LocalCluster of WORKERS processes')
    ap.add_argument('--retry', action='store_true', help='retry_failures() instead of prime()')
    args = ap.parse_args()
    keys = [f'k{n:04d}' for n in range(args.keys)]
    cluster = None
    executor = None
    if args.dask:
        from distributed import LocalCluster

        from stashworks.multi.dask import DaskExecutor

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
        executor = DaskExecutor(cluster.scheduler_address)
    stash = MultiProcessFactoryStash(
        DirectoryStash(args.out),
        compute,
        keys=keys,
        workers=args.workers,
        chunk_size=args.chunk_size,
        progress=False,
        executor=executor,
    )
    try:
        result = stash.retry_failures() if args.retry else stash.prime()
    finally:
        if cluster is not None:
            cluster.close()
    fields = ('total', 'done_before', 'computed', 'failed', 'failed_before', 'done_elsewhere', 'failed_elsewhere')
    print(json.dumps({name: getattr(result, name, None) for name in fields}), flush=True)


if __name__ == '__main__':
    main()
