"""DirectoryStash against raw files and other persistent stores, side by side.

For each folder given with ``--dir`` (a disk folder and ``/dev/shm`` by
default) and each data set (many small values, a few large ones), every
contender writes all items into a fresh folder of its own, reads them all
back, asks ``exists`` for each key, and lists ``keys()`` and ``len()``
(the minimum of ``--repeat`` calls, as one listing is a 5-30 ms sample).
Within a rep the contenders take turns chunk by chunk, in an order
rotated every turn, so the neighbours' load hits them all alike; each is
reported as the median of its per-rep ratios to raw atomic files (pickle,
temp file, ``os.replace``) measured in the same rep.  Nothing is deleted
until the run is over: deleting files stalls file creation here.

``DirectoryStash signed`` is DirectoryStash with a
:class:`~stashworks.SigningSerializer` (HMAC-SHA256 over the pickle); its
cost is also printed as the median of its per-rep time over plain
DirectoryStash's (target: at most 1.15x for write and read).

Run::

    python benchmarks/bench_storage.py --dir /dev/shm --dir /tmp --reps 5
    python benchmarks/bench_storage.py --contenders 'DirectoryStash,DirectoryStash signed' --reps 9
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import pickle
import random
import shelve
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from _common import RunDirs, format_table, machine_note, median_ratio, ratios, rotated

from stashworks import DirectoryStash, SigningSerializer

T = TypeVar('T')

BASELINE = 'raw atomic'
OPS = ('write', 'read', 'exists', 'keys', 'len')
# Signed over unsigned DirectoryStash time, at most.
SIGNING_TARGET = 1.15
# What DirectoryStash must reach, as a ratio to raw atomic files.
TARGETS = {'write': 0.85, 'read': 0.9, 'exists': 0.9, 'keys': 0.9, 'len': 0.9}
SUFFIX = '.dat'


class Contender:
    """One store under test; a new instance is opened on a fresh folder for each trial."""

    name = ''

    def open(self, folder: Path) -> None:
        raise NotImplementedError

    def write(self, items: Sequence[tuple[str, Any]]) -> None:
        raise NotImplementedError

    def read(self, keys: Sequence[str]) -> Any:
        raise NotImplementedError

    def exists(self, keys: Sequence[str]) -> int:
        raise NotImplementedError

    def keys(self) -> list[str]:
        raise NotImplementedError

    def length(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


# -- raw files: what a careful hand-written version does -------------------------------------------


def raw_save(folder: str, key: str, value: Any) -> None:
    with open(os.path.join(folder, key + SUFFIX), 'wb') as fh:
        pickle.dump(value, fh, pickle.HIGHEST_PROTOCOL)


def raw_save_atomic(folder: str, key: str, value: Any) -> None:
    # A unique temp name in the same folder (safe across processes and
    # threads), then an atomic rename; the temp goes if anything fails.
    path = os.path.join(folder, key + SUFFIX)
    tmp = os.path.join(folder, f'.{uuid.uuid4().hex}.tmp')
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


def raw_load(folder: str, key: str) -> Any:
    with open(os.path.join(folder, key + SUFFIX), 'rb') as fh:
        return pickle.load(fh)


def raw_exists(folder: str, key: str) -> bool:
    return os.path.exists(os.path.join(folder, key + SUFFIX))


def raw_keys(folder: str) -> list[str]:
    # os.listdir rather than os.scandir: only names are needed, and
    # listdir is the faster of the two here.
    n = len(SUFFIX)
    return [name[:-n] for name in os.listdir(folder) if name.endswith(SUFFIX)]


def raw_len(folder: str) -> int:
    return sum(1 for name in os.listdir(folder) if name.endswith(SUFFIX))


class Raw(Contender):
    name = 'raw'
    save: Callable[[str, str, Any], None] = staticmethod(raw_save)

    def open(self, folder: Path) -> None:
        self.folder = str(folder)

    def write(self, items: Sequence[tuple[str, Any]]) -> None:
        save, folder = type(self).save, self.folder
        for key, value in items:
            save(folder, key, value)

    def read(self, keys: Sequence[str]) -> Any:
        folder = self.folder
        value = None
        for key in keys:
            value = raw_load(folder, key)
        return value

    def exists(self, keys: Sequence[str]) -> int:
        folder = self.folder
        return sum(1 for key in keys if raw_exists(folder, key))

    def keys(self) -> list[str]:
        return raw_keys(self.folder)

    def length(self) -> int:
        return raw_len(self.folder)


class RawAtomic(Raw):
    name = BASELINE
    save = staticmethod(raw_save_atomic)


# -- stores with a mapping interface -----------------------------------------------------------------


class Mapping(Contender):
    """A store used through ``store[key]``, ``key in store``, ``len(store)``."""

    store: Any

    def write(self, items: Sequence[tuple[str, Any]]) -> None:
        store = self.store
        for key, value in items:
            store[key] = value
        self.commit()

    def commit(self) -> None:
        """Make the writes visible to another process (part of the write time)."""

    def read(self, keys: Sequence[str]) -> Any:
        store = self.store
        value = None
        for key in keys:
            value = store[key]
        return value

    def exists(self, keys: Sequence[str]) -> int:
        store = self.store
        return sum(1 for key in keys if key in store)

    def keys(self) -> list[str]:
        return list(self.store.keys())

    def length(self) -> int:
        return len(self.store)

    def close(self) -> None:
        self.store.close()


class Directory(Mapping):
    name = 'DirectoryStash'

    def open(self, folder: Path) -> None:
        self.store = DirectoryStash(folder)

    def write(self, items: Sequence[tuple[str, Any]]) -> None:
        # The stash API proper (dump/load/exists), not the dict sugar.
        dump = self.store.dump
        for key, value in items:
            dump(key, value)

    def read(self, keys: Sequence[str]) -> Any:
        load = self.store.load
        value = None
        for key in keys:
            value = load(key)
        return value

    def exists(self, keys: Sequence[str]) -> int:
        exists = self.store.exists
        return sum(1 for key in keys if exists(key))


class SignedDirectory(Directory):
    name = 'DirectoryStash signed'

    def open(self, folder: Path) -> None:
        # A fixed key: the benchmark measures the HMAC, not key loading.
        self.store = DirectoryStash(folder, serializer=SigningSerializer(key=b'bench-signing-key'))


class DiskCache(Mapping):
    name = 'diskcache'

    def open(self, folder: Path) -> None:
        import diskcache

        self.store = diskcache.Cache(str(folder))

    def keys(self) -> list[str]:
        return list(self.store)


class Shelve(Mapping):
    name = 'shelve'

    def open(self, folder: Path) -> None:
        # Held open across the trial; close() below closes it.
        self.store = shelve.open(str(folder / 'shelf'), protocol=pickle.HIGHEST_PROTOCOL)  # noqa: SIM115

    def commit(self) -> None:
        self.store.sync()


class SqliteDict(Mapping):
    name = 'sqlitedict'

    def open(self, folder: Path) -> None:
        from sqlitedict import SqliteDict

        # outer_stack=False: the default records a stack trace per request,
        # which would only measure the traceback module.
        self.store = SqliteDict(str(folder / 'db.sqlite'), autocommit=False, outer_stack=False)

    def commit(self) -> None:
        self.store.commit()


CONTENDERS: dict[str, type[Contender]] = {
    c.name: c for c in (Directory, SignedDirectory, RawAtomic, Raw, DiskCache, Shelve, SqliteDict)
}


def directory_at(rev: str) -> type[Contender]:
    """A contender running ``DirectoryStash`` as it was at git revision ``rev``, to measure a change.

    ``directory.py`` and ``_atomic.py`` are taken from ``rev``; everything
    they import besides each other comes from the current tree.
    """
    import importlib.util
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    tag = ''.join(ch if ch.isalnum() else '_' for ch in rev)
    modules = {}
    for mod in ('_atomic', 'directory'):
        source = subprocess.run(
            ['git', 'show', f'{rev}:src/stashworks/{mod}.py'], cwd=repo, check=True, capture_output=True, text=True
        ).stdout
        # The old directory.py must use the old _atomic.py, not today's.
        source = source.replace('from ._atomic import', f'from ._atomic_at_{tag} import')
        name = f'stashworks.{mod}_at_{tag}'
        spec = importlib.util.spec_from_loader(name, loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__package__ = 'stashworks'
        sys.modules[name] = module
        exec(compile(source, f'{rev}:src/stashworks/{mod}.py', 'exec'), module.__dict__)
        modules[mod] = module
    old_class = modules['directory'].DirectoryStash

    class OldDirectory(Directory):
        name = f'DirectoryStash@{rev}'

        def open(self, folder: Path) -> None:
            self.store = old_class(folder)

    return OldDirectory


# -- data --------------------------------------------------------------------------------------------


def small_items(n: int, rng: random.Random) -> list[tuple[str, Any]]:
    """``n`` records of about 300 bytes pickled."""
    return [
        (
            f'item-{i:06d}',
            {
                'id': i,
                'name': f'record {i}',
                'text': ''.join(rng.choices('abcdefghij klmnopqrstuvwxyz', k=200)),
                'tags': ['alpha', 'beta', 'gamma'],
                'score': rng.random(),
            },
        )
        for i in range(n)
    ]


def large_items(n: int, size: int, rng: random.Random) -> list[tuple[str, Any]]:
    """``n`` blobs of ``size`` bytes."""
    return [(f'blob-{i:04d}', rng.randbytes(size)) for i in range(n)]


def fs_type(path: str) -> str:
    """The file system type of ``path`` (``tmpfs``, ``ext4``...), from /proc/mounts."""
    best, kind = '', '?'
    real = os.path.realpath(path)
    try:
        with open('/proc/mounts') as fh:
            for line in fh:
                parts = line.split()
                mount = parts[1]
                inside = real == mount or real.startswith(mount.rstrip('/') + '/')
                if inside and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


# -- run ---------------------------------------------------------------------------------------------


def chunked(seq: Sequence[T], chunks: int) -> list[Sequence[T]]:
    """``seq`` cut into ``chunks`` nearly equal consecutive slices."""
    chunks = max(1, min(chunks, len(seq)))
    bounds = [len(seq) * i // chunks for i in range(chunks + 1)]
    return [seq[a:b] for a, b in itertools.pairwise(bounds)]


def run_rep(
    dirs: RunDirs,
    label: str,
    rep: int,
    items: Sequence[tuple[str, Any]],
    keys: list[str],
    names: Sequence[str],
    repeat: int,
    chunks: int,
) -> dict[str, dict[str, float]]:
    """One rep of every contender, each on a fresh folder: ``{contender: {op: seconds}}``.

    The contenders take turns chunk by chunk (and call by call for
    ``keys()``/``len()``), in an order rotated each turn, so a burst of
    load from the neighbours hits all of them alike instead of one.
    """
    stores: dict[str, Contender] = {}
    for name in names:
        stores[name] = CONTENDERS[name]()
        stores[name].open(dirs.new(f'{label}-{name.replace(" ", "-")}-{rep}'))
    t = {name: dict.fromkeys(OPS, 0.0) for name in names}
    clock = time.perf_counter
    try:
        phases: list[tuple[str, Sequence[Any], Callable[[Contender, Any], object]]] = [
            ('write', chunked(items, chunks), lambda c, part: c.write(part)),
            ('read', chunked(keys, chunks), lambda c, part: c.read(part)),
            ('exists', chunked(keys, chunks), lambda c, part: c.exists(part)),
        ]
        for op, parts, fn in phases:
            gc.collect()
            for i, part in enumerate(parts):
                for name in rotated(names, rep + i):
                    start = clock()
                    fn(stores[name], part)
                    t[name][op] += clock() - start
        for op in ('keys', 'len'):
            gc.collect()
            for name in names:
                t[name][op] = float('inf')
            for i in range(repeat):
                for name in rotated(names, rep + i):
                    call = stores[name].keys if op == 'keys' else stores[name].length
                    start = clock()
                    call()
                    t[name][op] = min(t[name][op], clock() - start)
        for name, store in stores.items():
            # Outside the timings: every contender must have done the same work.
            n = len(keys)
            if sorted(store.keys()) != keys or store.length() != n or store.exists(keys) != n:
                raise AssertionError(f'{name} lost items in rep {rep}')
            if store.read(keys[-1:]) != items[-1][1]:
                raise AssertionError(f'{name} read back a wrong value in rep {rep}')
    finally:
        for store in stores.values():
            store.close()
    return t


def run_set(
    dirs: RunDirs,
    label: str,
    items: Sequence[tuple[str, Any]],
    names: Sequence[str],
    reps: int,
    repeat: int,
    chunks: int,
) -> dict[str, dict[str, list[float]]]:
    """All reps of one data set in one folder: ``{contender: {op: [seconds per rep]}}``."""
    keys = sorted(k for k, _ in items)
    times: dict[str, dict[str, list[float]]] = {n: {op: [] for op in OPS} for n in names}
    for rep in range(reps):
        result = run_rep(dirs, label, rep, items, keys, names, repeat, chunks)
        for name in names:
            for op in OPS:
                times[name][op].append(result[name][op])
        print(f'  rep {rep + 1}/{reps} done', file=sys.stderr)
    return times


def ratio_cell(times: Sequence[float], baseline: Sequence[float]) -> str:
    """The median ratio, and the range of the per-rep ratios it is the median of."""
    r = ratios(times, baseline)
    return f'{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})'


def report(times: dict[str, dict[str, list[float]]], n: int) -> str:
    """Two Markdown tables: throughput (median over reps) and ratio to raw atomic files (median, range)."""
    base = times[BASELINE]
    speed = []
    ratio = []
    for name, t in times.items():
        per_item = [f'{n / statistics.median(t[op]):,.0f}' for op in ('write', 'read', 'exists')]
        per_call = [f'{statistics.median(t[op]) * 1e3:.2f}' for op in ('keys', 'len')]
        speed.append([name, *per_item, *per_call])
        ratio.append([name, *(ratio_cell(t[op], base[op]) for op in OPS)])
    return '\n\n'.join(
        [
            format_table(['items/s; ms per call', 'write /s', 'read /s', 'exists /s', 'keys() ms', 'len() ms'], speed),
            format_table(['ratio to raw atomic', 'write', 'read', 'exists', 'keys()', 'len()'], ratio),
        ]
    )


def check_targets(times: dict[str, dict[str, list[float]]]) -> list[str]:
    """One line per DirectoryStash operation: ratio, target, met or not."""
    lines = []
    for op in OPS:
        r = median_ratio(times[Directory.name][op], times[BASELINE][op])
        verdict = 'met' if r >= TARGETS[op] else 'MISSED'
        lines.append(f'{op} {r:.2f}x (target ≥ {TARGETS[op]:.2f}x) {verdict}')
    return lines


def check_signing(times: dict[str, dict[str, list[float]]]) -> list[str]:
    """Signed over plain DirectoryStash: median of the per-rep time ratios for write and read."""
    lines = []
    for op in ('write', 'read'):
        r = statistics.median(
            s / p for s, p in zip(times[SignedDirectory.name][op], times[Directory.name][op], strict=True)
        )
        verdict = 'met' if r <= SIGNING_TARGET else 'MISSED'
        lines.append(f'{op} {r:.3f}x the time (target ≤ {SIGNING_TARGET:.2f}x) {verdict}')
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--dir',
        action='append',
        help='folder to measure in; repeat for several (default: /dev/shm and /tmp)',
    )
    parser.add_argument('--reps', type=int, default=5, help='reps per contender (default 5)')
    parser.add_argument(
        '--large-reps',
        type=int,
        default=15,
        help='reps for the large items (default 15: a trial takes ~0.1 s, so one sample is mostly noise)',
    )
    parser.add_argument('--repeat', type=int, default=50, help='calls of keys()/len() per rep; minimum taken')
    parser.add_argument('--small', type=int, default=20_000, help='number of small items (default 20000)')
    parser.add_argument('--large', type=int, default=200, help='number of large items (default 200)')
    parser.add_argument('--large-size', type=int, default=100_000, help='bytes per large item')
    parser.add_argument(
        '--contenders',
        default=','.join(CONTENDERS),
        help=f'comma-separated subset of: {", ".join(CONTENDERS)} (raw atomic is always included)',
    )
    parser.add_argument('--chunks', type=int, default=20, help='turns the contenders take per operation (default 20)')
    parser.add_argument(
        '--rev',
        action='append',
        default=[],
        help='also run DirectoryStash as it was at this git revision (repeatable), to measure a change',
    )
    parser.add_argument('--keep', action='store_true', help='keep the written folders')
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.contenders.split(',') if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        parser.error(f'unknown contenders: {unknown}')
    if BASELINE not in names:
        names.insert(0, BASELINE)
    for rev in args.rev:
        old = directory_at(rev)
        CONTENDERS[old.name] = old
        names.append(old.name)
    rng = random.Random(20261127)
    sets = []
    if args.small:
        items = small_items(args.small, rng)
        size = statistics.mean(len(pickle.dumps(v, pickle.HIGHEST_PROTOCOL)) for _, v in items[:100])
        sets.append(('small', items, f'{args.small:,} small items (~{size:.0f} B pickled)', args.reps))
    if args.large:
        title = f'{args.large} items of {args.large_size:,} B'
        sets.append(('large', large_items(args.large, args.large_size, rng), title, args.large_reps))

    roots = args.dir or ['/dev/shm', '/tmp']
    print(f'python {" ".join(sys.argv)}')
    print(machine_note())
    print(f'keys()/len(): min of {args.repeat} calls per rep; ratios: median of per-rep ratios to raw atomic')
    all_dirs = [RunDirs(root, keep=args.keep) for root in roots]
    try:
        for root, dirs in zip(roots, all_dirs, strict=True):
            for label, items, title, reps in sets:
                print(f'\n### {root} ({fs_type(root)}): {title}, {reps} reps\n', flush=True)
                times = run_set(dirs, label, items, names, reps, args.repeat, args.chunks)
                print(report(times, len(items)))
                if Directory.name in times:
                    print('\nDirectoryStash: ' + '; '.join(check_targets(times)), flush=True)
                if Directory.name in times and SignedDirectory.name in times:
                    print('\nSigning: ' + '; '.join(check_signing(times)), flush=True)
    finally:
        # Only now: deleting files stalls creating them for every process.
        for dirs in all_dirs:
            dirs.remove()
    return 0


if __name__ == '__main__':
    sys.exit(main())
