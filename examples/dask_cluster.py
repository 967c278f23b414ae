"""Run a batch on a Dask cluster, then resume it.

Usage::

    python examples/dask_cluster.py [OUTPUT_DIR] [--scheduler tcp://host:8786]

Without ``--scheduler`` the example starts a small ``LocalCluster`` (two
worker processes) on this machine; with it, the batch runs on an existing
cluster, whose workers must all see ``OUTPUT_DIR`` (a shared filesystem)
and have stashworks installed.  Needs ``pip install 'stashworks[dask]'``.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

from distributed import Client, LocalCluster

from stashworks import DaskExecutor, DirectoryStash, MultiProcessFactoryStash


def fingerprint(key: str) -> str:
    """The work of one item: a few thousand rounds of hashing."""
    digest = key.encode()
    for _ in range(2000):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def run(out: Path, client: Client) -> None:
    keys = [f'doc-{i:04d}' for i in range(200)]
    stash = MultiProcessFactoryStash(
        DirectoryStash(out),
        fingerprint,
        keys=keys,
        executor=DaskExecutor(client),  # the client stays open: it is ours
    )
    result = stash.prime()
    print(result)
    print(f'{len(stash)} items in {out}; doc-0007 -> {stash.load("doc-0007")[:16]}...')

    # A second batch over the same directory finds everything done.
    again = MultiProcessFactoryStash(DirectoryStash(out), fingerprint, keys=keys, executor=DaskExecutor(client))
    print(again.prime())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', nargs='?', help='output directory (default: a new temporary one)')
    parser.add_argument('--scheduler', help='address of an existing Dask scheduler, such as tcp://host:8786')
    args = parser.parse_args()
    # Workers resolve paths themselves: give them an absolute one.
    out = Path(args.out or tempfile.mkdtemp(prefix='stashworks-dask-')).resolve()
    if args.scheduler:
        with Client(args.scheduler) as client:
            run(out, client)
        return
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=':0') as cluster, Client(cluster) as client:
        run(out, client)


if __name__ == '__main__':
    main()
