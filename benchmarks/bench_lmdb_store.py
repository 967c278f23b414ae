"""LmdbStash against raw atomic files and other persistent stores, on many tiny items.

For each folder given with ``--dir`` (a disk folder and ``/dev/shm`` by
default), every contender, in an order rotated every rep, opens a fresh
folder and

* writes ``--items`` small items one by one, each its own transaction
  (``dump``; a store that commits per item does so, none batches);
* reads them all back in a shuffled order (``load``);
* lists ``keys()`` and counts ``len()`` (the minimum of ``--repeat``
  calls: one listing is a short, noisy sample).

Each figure is the median over reps of the per-rep ratio to raw atomic
files (pickle, a temp file, ``os.replace``) measured in the same rep;
above 1 is faster.  Per-item writes of stores that ``fsync`` every
commit (sqlitedict's SQLite, LmdbStash with ``sync=True``) are timed on
the first ``--slow-items`` items only and the rest written in one go,
so a rep stays within minutes; their figure is per item all the same.
Nothing is deleted until the run is over (deleting files stalls file
creation on these machines).

Run::

    python benchmarks/bench_lmdb_store.py --dir /tmp --dir /dev/shm --reps 5
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import shelve
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import RunDirs, format_table, machine_note, median_ratio, min_time, ratios, rotated

from stashworks import DirectoryStash, LmdbStash

BASELINE = 'raw atomic'
OPS = ('dump', 'load', 'keys', 'len')
# What LmdbStash must reach on disk, as a ratio to raw atomic files.
TARGETS = {'dump': 5.0, 'load': 2.0, 'keys': 2.0, 'len': 2.0}
SUFFIX = '.dat'


class Contender:
    """One store; opened on a fresh folder for each trial."""

    name = ''
    #: per-item writes timed on this many items at most (None: all)
    slow_writes: bool = False

    def open(self, folder: Path) -> None:
        raise NotImplementedError

    def dump(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def dump_rest(self, items: Sequence[tuple[str, Any]]) -> None:
        """Write untimed items (for stores whose per-item writes are timed on a sample)."""
        for key, value in items:
            self.dump(key, value)

    def load(self, key: str) -> Any:
        raise NotImplementedError

    def keys(self) -> list[str]:
        raise NotImplementedError

    def length(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class RawAtomic(Contender):
    name = BASELINE

    def open(self, folder: Path) -> None:
        self.folder = str(folder)

    def dump(self, key: str, value: Any) -> None:
        path = os.path.join(self.folder, key + SUFFIX)
        tmp = os.path.join(self.folder, f'.{uuid.uuid4().hex}.tmp')
        try:
            with open(tmp, 'xb') as fh:
                pickle.dump(value, fh, pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def load(self, key: str) -> Any:
        with open(os.path.join(self.folder, key + SUFFIX), 'rb') as fh:
            return pickle.load(fh)

    def keys(self) -> list[str]:
        n = len(SUFFIX)
        return [name[:-n] for name in os.listdir(self.folder) if name.endswith(SUFFIX)]

    def length(self) -> int:
        return sum(1 for name in os.listdir(self.folder) if name.endswith(SUFFIX))


class Mapping(Contender):
    store: Any

    def dump(self, key: str, value: Any) -> None:
        self.store[key] = value

    def load(self, key: str) -> Any:
        return self.store[key]

    def keys(self) -> list[str]:
        return list(self.store.keys())

    def length(self) -> int:
        return len(self.store)

    def close(self) -> None:
        self.store.close()


class Lmdb(Mapping):
    name = 'LmdbStash'

    def open(self, folder: Path) -> None:
        self.store = LmdbStash(folder / 'db')


class LmdbSync(Lmdb):
    name = 'LmdbStash(sync=True)'
    slow_writes = True

    def open(self, folder: Path) -> None:
        self.store = LmdbStash(folder / 'db', sync=True)

    def dump_rest(self, items: Sequence[tuple[str, Any]]) -> None:
        self.store.begin_group()
        for key, value in items:
            self.store.dump(key, value)
        self.store.flush()


class Directory(Mapping):
    name = 'DirectoryStash'

    def open(self, folder: Path) -> None:
        self.store = DirectoryStash(folder)


class DiskCache(Mapping):
    name = 'diskcache'

    def open(self, folder: Path) -> None:
        import diskcache

        self.store = diskcache.Cache(str(folder))

    def keys(self) -> list[str]:
        return list(self.store.iterkeys())


class Shelve(Mapping):
    name = 'shelve'

    def open(self, folder: Path) -> None:
        self.store = shelve.open(str(folder / 'db'), protocol=pickle.HIGHEST_PROTOCOL)  # noqa: SIM115


class SqliteDict(Mapping):
    name = 'sqlitedict'
    slow_writes = True

    def open(self, folder: Path) -> None:
        from sqlitedict import SqliteDict as Store

        self.store = Store(str(folder / 'db.sqlite'), autocommit=True)

    def dump_rest(self, items: Sequence[tuple[str, Any]]) -> None:
        from sqlitedict import SqliteDict as Store

        path = self.store.filename
        self.store.close()
        with Store(path, autocommit=False) as bulk:
            for key, value in items:
                bulk[key] = value
            bulk.commit()
        self.store = Store(path, autocommit=True)


CONTENDERS: list[type[Contender]] = [RawAtomic, Lmdb, LmdbSync, Directory, DiskCache, Shelve, SqliteDict]


def make_items(n: int) -> list[tuple[str, Any]]:
    """Small records, as a preprocessing job makes: a sentence, its tokens, an id."""
    rng = random.Random(1)
    words = ['alpha', 'beta', 'gamma', 'delta', 'eps', 'zeta', 'eta', 'theta']
    items = []
    for i in range(n):
        tokens = [rng.choice(words) for _ in range(rng.randint(3, 8))]
        items.append((f'item-{i:08d}', {'id': i, 'text': ' '.join(tokens), 'tokens': tokens}))
    return items


def trial(
    contender: Contender, folder: Path, items: list[tuple[str, Any]], order: list[str], args: Any
) -> dict[str, float]:
    contender.open(folder)
    try:
        timed = items[: args.slow_items] if contender.slow_writes else items
        start = time.perf_counter()
        for key, value in timed:
            contender.dump(key, value)
        dump = (time.perf_counter() - start) / len(timed)
        if len(timed) < len(items):
            contender.dump_rest(items[len(timed) :])
        start = time.perf_counter()
        for key in order:
            contender.load(key)
        load = (time.perf_counter() - start) / len(order)
        if len(contender.keys()) != len(items) or contender.length() != len(items):
            raise AssertionError(f'{contender.name} lost items')
        keys = min_time(contender.keys, args.repeat)
        length = min_time(contender.length, args.repeat)
        return {'dump': dump, 'load': load, 'keys': keys, 'len': length}
    finally:
        contender.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dir', action='append', help='folder to run in (repeatable; default /tmp and /dev/shm)')
    parser.add_argument('--items', type=int, default=20_000)
    parser.add_argument('--slow-items', type=int, default=1000, help='per-item writes timed for fsyncing stores')
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--repeat', type=int, default=20, help='calls of keys()/len() per trial (minimum kept)')
    parser.add_argument('--contenders', help='comma-separated names (default: all)')
    parser.add_argument('--keep', action='store_true', help='leave the files in place')
    args = parser.parse_args(argv)
    dirs = args.dir or ['/tmp', '/dev/shm']
    contenders = [c() for c in CONTENDERS]
    if args.contenders:
        wanted = {n.strip() for n in args.contenders.split(',')} | {BASELINE}
        contenders = [c for c in contenders if c.name in wanted]
    items = make_items(args.items)
    order = [k for k, _ in items]
    random.Random(2).shuffle(order)
    print(f'# LmdbStash store benchmark: {args.items} items, {args.reps} reps')
    print(machine_note())
    print(f'command: python benchmarks/bench_lmdb_store.py {" ".join(sys.argv[1:])}')
    failed = False
    for root in dirs:
        times: dict[str, dict[str, list[float]]] = {c.name: {op: [] for op in OPS} for c in contenders}
        with RunDirs(root, keep=args.keep) as run:
            for rep in range(args.reps):
                for contender in rotated(contenders, rep):
                    result = trial(contender, run.new(contender.name.split('(')[0]), items, order, args)
                    for op in OPS:
                        times[contender.name][op].append(result[op])
                print(f'  {root}: rep {rep + 1}/{args.reps} done', file=sys.stderr)
        base = times[BASELINE]
        rows = []
        for c in contenders:
            cells = [c.name]
            for op in OPS:
                r = ratios(times[c.name][op], base[op])
                cells.append(f'{median_ratio(times[c.name][op], base[op]):.2f}x ({min(r):.2f}-{max(r):.2f})')
            rows.append(cells)
        print(f'\n## {root}: speed relative to raw atomic files (median of per-rep ratios, range)\n')
        print(format_table(['store', *OPS], rows))
        med = {op: sorted(base[op])[len(base[op]) // 2] for op in OPS}
        print(
            f'\nraw atomic files (median, for scale only): dump {1 / med["dump"]:,.0f} items/s, '
            f'load {1 / med["load"]:,.0f} items/s, keys() {med["keys"] * 1e3:.1f} ms, len() {med["len"] * 1e3:.1f} ms'
        )
        if any(c.name == 'LmdbStash' for c in contenders):
            verdicts = []
            for op, target in TARGETS.items():
                got = median_ratio(times['LmdbStash'][op], base[op])
                ok = got >= target
                failed |= not ok and root not in ('/dev/shm',)
                verdicts.append(f'{op} {got:.2f}x (target {target}x: {"met" if ok else "NOT met"})')
            print('\nLmdbStash: ' + '; '.join(verdicts))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
