"""Batch processing side by side: stashworks against a hand-written pool and peers.

Every contender computes the same items with the same number of workers and
persists each item as its own pickle file, written atomically (a temp file
named uuid-pid-thread in the same folder, then :func:`os.replace`), which is
what :class:`stashworks.DirectoryStash` does; so the comparison is between
the frameworks, not between ways of writing files.

Workloads:

* ``a``: many trivial items (the compute is under a microsecond), so the
  time is framework overhead plus file creation;
* ``b``: fewer items of about 5 ms of pure-Python work each;
* ``r``: the remainder of a batch: 10,000 keys of which 9,000 are already
  stored (written before the timed region), so the 1,000 missing trivial
  items must be found and computed.  The baseline here is a hand-written
  ``os.scandir`` + set difference + ``multiprocessing.Pool(workers)`` loop;
  only it and the stashworks contenders run this workload.

Contenders, run interleaved in one process, the order rotated every rep:

* ``serial``: a plain loop (also times the compute alone, for the ideal);
* ``pool``: the hand-written baseline, :class:`concurrent.futures.ProcessPoolExecutor`
  with chunks of ``ceil(n / (4 * workers))`` keys (the rule
  :meth:`multiprocessing.pool.Pool.map` uses), each chunk computed and
  written in the worker;
* ``joblib``: ``joblib.Parallel(n_jobs=workers)`` with its defaults (loky,
  automatic batching);
* ``mpire``: ``mpire.WorkerPool(n_jobs=workers).map`` with its defaults;
* ``stashworks``: ``MultiProcessFactoryStash(DirectoryStash(folder), work,
  keys=keys, workers=workers).prime()``;
* ``stashworks@REV`` (with ``--rev REV``): the same with the package as it
  was at git revision ``REV``, extracted with ``git archive`` and imported
  under another name in this same process, so the two engines are measured
  side by side under the same conditions.

Every contender starts its workers inside the timed region (a one-shot
batch pays for that); joblib's reusable loky workers are shut down after
each of its trials, outside the timing, so it starts cold like the others.
Each trial writes into its own fresh folder; folders are removed only at
the end, because deleting many files slows down creating them for seconds.

Run::

    /work/venv/bin/python benchmarks/bench_batch.py            # full run
    /work/venv/bin/python benchmarks/bench_batch.py --quick    # smoke test
    /work/venv/bin/python benchmarks/bench_batch.py --rev 9ae8dcb \
        --only serial,pool,stashworks --scenarios a-tmpfs,b-tmpfs,r-tmpfs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

from _common import RunDirs, format_table, machine_note, min_time, rotated, time_once

WORKERS = 2
BASELINE = 'pool'
CONTENDERS = ('serial', 'pool', 'joblib', 'mpire', 'stashworks')
#: The remainder workload: keys in all, and keys stored before the trial.
REMAINDER_TOTAL = 10_000
REMAINDER_DONE = 9_000


# -- the work ------------------------------------------------------------------


class Work:
    """The per-item computation: ``spin`` iterations of integer arithmetic.

    A class rather than a closure so every framework can ship it to its
    workers (pickle, cloudpickle or dill).
    """

    def __init__(self, spin: int) -> None:
        self.spin = spin

    def __call__(self, key: str) -> int:
        x = len(key)
        for i in range(self.spin):
            x = (x * 31 + i) & 0xFFFFFFFF
        return x


def write_item(folder: str, key: str, value: Any) -> None:
    """Persist one item as ``folder/key.dat``, atomically.

    The temp file is named like stashworks names its own (uuid, pid,
    thread), in the same folder, then moved into place with ``os.replace``.
    """
    tmp = f'{folder}/.~tmp-{uuid.uuid4().hex[:12]}-{os.getpid()}-{threading.get_ident()}.tmp'
    with open(tmp, 'xb') as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, f'{folder}/{key}.dat')


def compute_and_write(folder: str, work: Work, key: str) -> None:
    """One item, start to end: what joblib and mpire call per key."""
    write_item(folder, key, work(key))


def compute_and_write_chunk(folder: str, work: Work, keys: list[str]) -> int:
    """A chunk of items in one worker call: the hand-written pool's task."""
    for key in keys:
        write_item(folder, key, work(key))
    return len(keys)


# -- contenders ----------------------------------------------------------------
# Each returns a dict of extra facts about the trial (or an empty one).


def run_serial(keys: list[str], folder: str, work: Work, workers: int) -> dict[str, Any]:
    """A plain loop; also sums the time spent computing, for the ideal."""
    compute = 0.0
    clock = time.perf_counter
    for key in keys:
        t0 = clock()
        value = work(key)
        compute += clock() - t0
        write_item(folder, key, value)
    return {'compute': compute}


def run_pool(keys: list[str], folder: str, work: Work, workers: int) -> dict[str, Any]:
    """The hand-written baseline: chunks of ``ceil(n / (4 * workers))`` keys on a ProcessPoolExecutor."""
    size = max(1, math.ceil(len(keys) / (4 * workers)))
    with ProcessPoolExecutor(workers) as ex:
        futures = [
            ex.submit(compute_and_write_chunk, folder, work, keys[i : i + size]) for i in range(0, len(keys), size)
        ]
        done = sum(f.result() for f in futures)
    assert done == len(keys)
    return {'chunk_size': size}


def run_joblib(keys: list[str], folder: str, work: Work, workers: int) -> dict[str, Any]:
    """``joblib.Parallel`` with its defaults, one call per key."""
    from joblib import Parallel, delayed

    Parallel(n_jobs=workers)(delayed(compute_and_write)(folder, work, key) for key in keys)
    return {}


def after_joblib() -> None:
    """Stop loky's reusable workers so the next joblib trial starts cold, like the others."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def run_mpire(keys: list[str], folder: str, work: Work, workers: int) -> dict[str, Any]:
    """``mpire.WorkerPool.map`` with its defaults (automatic chunks)."""
    from mpire import WorkerPool

    with WorkerPool(n_jobs=workers) as pool:
        pool.map(partial(compute_and_write, folder, work), keys)
    return {}


def run_stashworks(
    keys: list[str], folder: str, work: Work, workers: int, package: Optional[types.ModuleType] = None
) -> dict[str, Any]:
    """``MultiProcessFactoryStash(...).prime()`` into a DirectoryStash (of ``package``: another revision)."""
    if package is None:
        import stashworks as package
    stash = package.MultiProcessFactoryStash(
        package.DirectoryStash(folder), work, keys=keys, workers=workers, progress=False
    )
    result = stash.prime()
    return {'result': str(result)}


def run_remainder_pool(keys: list[str], folder: str, work: Work, workers: int) -> dict[str, Any]:
    """The remainder baseline: ``os.scandir`` + set difference, then ``multiprocessing.Pool``."""
    with os.scandir(folder) as it:
        done = {e.name[:-4] for e in it if e.name.endswith('.dat')}
    missing = [k for k in keys if k not in done]
    size = max(1, math.ceil(len(missing) / (4 * workers)))
    chunks = [missing[i : i + size] for i in range(0, len(missing), size)]
    with multiprocessing.Pool(workers) as pool:
        n = sum(pool.map(partial(compute_and_write_chunk, folder, work), chunks))
    assert n == len(missing)
    return {'chunk_size': size}


def load_revision(rev: str) -> tuple[types.ModuleType, Path]:
    """The ``stashworks`` package as it was at git revision ``rev``, imported as ``stashworks_<rev>``.

    The package's own imports are relative, so a copy of its source loads
    beside the current one.  Returns the package and the temp folder to
    remove at the end.
    """
    root = Path(__file__).resolve().parents[1]
    where = Path(tempfile.mkdtemp(prefix='stashworks-rev-'))
    archive = subprocess.run(
        ['git', '-C', str(root), 'archive', rev, 'src/stashworks'], check=True, capture_output=True
    ).stdout
    subprocess.run(['tar', '-x', '-C', str(where)], input=archive, check=True)
    name = f'stashworks_{rev.replace("-", "_")[:12]}'
    package_dir = where / 'src' / 'stashworks'
    spec = importlib.util.spec_from_file_location(
        name, package_dir / '__init__.py', submodule_search_locations=[str(package_dir)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module, where


#: ``stashworks@REV`` contenders: the package of each revision given with ``--rev``.
REVISIONS: dict[str, types.ModuleType] = {}

RUNNERS: dict[str, Callable[[list[str], str, Work, int], dict[str, Any]]] = {
    'serial': run_serial,
    'pool': run_pool,
    'joblib': run_joblib,
    'mpire': run_mpire,
    'stashworks': run_stashworks,
}
AFTER: dict[str, Callable[[], None]] = {'joblib': after_joblib}
#: Contenders of the remainder workload, by the name they run under.
REMAINDER_RUNNERS: dict[str, Callable[[list[str], str, Work, int], dict[str, Any]]] = {
    'pool': run_remainder_pool,
    'stashworks': run_stashworks,
}


def runs_workload(contender: str, workload: str) -> bool:
    """Whether ``contender`` takes part in ``workload``."""
    if workload != 'r':
        return True
    return contender in REMAINDER_RUNNERS or contender.startswith('stashworks@')


def stashworks_available() -> Optional[str]:
    """``None`` if the batch layer can be imported, else why not."""
    try:
        from stashworks import MultiProcessFactoryStash  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


# -- harness -------------------------------------------------------------------


@dataclass
class Scenario:
    """One workload on one kind of storage."""

    workload: str  # 'a', 'b' or 'r'
    storage: str  # 'disk' or 'tmpfs'
    n: int
    spin: int
    dirs: RunDirs
    times: dict[str, list[float]] = field(default_factory=dict)
    compute: list[float] = field(default_factory=list)
    extra: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f'{self.workload}-{self.storage}'


def calibrate(target: float) -> tuple[int, float]:
    """The spin count whose computation takes about ``target`` seconds (best of several runs)."""
    probe = 200_000
    per_iter = min_time(partial(Work(probe), 'k0000000'), 5) / probe
    spin = max(1, round(target / per_iter))
    return spin, min_time(partial(Work(spin), 'k0000000'), 5)


def count_items(folder: str) -> int:
    with os.scandir(folder) as it:
        return sum(1 for e in it if e.name.endswith('.dat'))


def run_trial(sc: Scenario, contender: str, rep: int, workers: int) -> None:
    folder = str(sc.dirs.new(f'{sc.name}-{contender}-r{rep}'))
    keys = [f'k{i:07d}' for i in range(sc.n)]
    work = Work(sc.spin)
    extra: dict[str, Any] = {}
    runners = REMAINDER_RUNNERS if sc.workload == 'r' else RUNNERS
    if sc.workload == 'r':
        for key in keys[:REMAINDER_DONE]:
            write_item(folder, key, work(key))
    if contender in REVISIONS:
        package = REVISIONS[contender]

        def run(keys: list[str], folder: str, work: Work, workers: int) -> dict[str, Any]:
            return run_stashworks(keys, folder, work, workers, package)

    else:
        run = runners[contender]

    def trial() -> None:
        extra.update(run(keys, folder, work, workers))

    elapsed = time_once(trial)
    if contender in AFTER:
        AFTER[contender]()
    found = count_items(folder)
    if found != sc.n:
        raise RuntimeError(f'{contender} wrote {found} of {sc.n} items in {folder}')
    sc.times.setdefault(contender, []).append(elapsed)
    sc.extra.setdefault(contender, []).append(extra)
    if contender == 'serial':
        sc.compute.append(extra['compute'])
    print(f'  rep {rep} {sc.name:8} {contender:10} {elapsed:8.3f} s', file=sys.stderr, flush=True)


def ratios(sc: Scenario, contender: str) -> list[float]:
    """Per-rep ratio to the baseline: items/s ratio for ``a``, wall-time ratio for ``b``."""
    base = sc.times[BASELINE]
    mine = sc.times[contender]
    if sc.workload == 'a':
        return [b / m for b, m in zip(base, mine, strict=True)]
    return [m / b for b, m in zip(base, mine, strict=True)]


def ideal_ratios(sc: Scenario, contender: str, workers: int) -> list[float]:
    """Per-rep wall time over the ideal (serial compute time of the same rep / workers)."""
    return [m / (c / workers) for m, c in zip(sc.times[contender], sc.compute, strict=True)]


def report(scenarios: list[Scenario], contenders: list[str], workers: int) -> str:
    med = statistics.median
    out = []
    for sc in scenarios:
        reps = len(sc.times[BASELINE])
        where = f'{sc.storage} ({sc.dirs.run.parent})'
        if sc.workload == 'r':
            out.append(
                f'\n### (r) the {sc.n - REMAINDER_DONE:,} missing trivial items of a {sc.n:,}-key batch '
                f'({REMAINDER_DONE:,} stored before), {where}, {workers} workers, {reps} reps\n'
            )
            headers = ['contender', 'wall ratio to pool (median of per-rep)', 'min-max', 'median wall (ms)']
            rows = []
            for c in contenders:
                if c in sc.times:
                    r = ratios(sc, c)
                    rows.append([c, f'{med(r):.2f}x', f'{min(r):.2f}-{max(r):.2f}', f'{med(sc.times[c]) * 1e3:.1f}'])
        elif sc.workload == 'a':
            out.append(f'\n### (a) {sc.n:,} trivial items, {where}, {workers} workers, {reps} reps\n')
            headers = [
                'contender',
                'items/s ratio to pool (median of per-rep)',
                'min-max',
                'median wall (s)',
                'median items/s',
            ]
            rows = []
            for c in contenders:
                r, t = ratios(sc, c), med(sc.times[c])
                rows.append([c, f'{med(r):.2f}x', f'{min(r):.2f}-{max(r):.2f}', f'{t:.3f}', f'{sc.n / t:,.0f}'])
        else:
            per_item = med(sc.compute) / sc.n
            out.append(
                f'\n### (b) {sc.n} items of {per_item * 1e3:.1f} ms pure-Python work, {where}, '
                f'{workers} workers, {reps} reps\n'
            )
            headers = [
                'contender',
                'wall ratio to pool (median of per-rep)',
                'min-max',
                f'wall ratio to ideal (serial compute / {workers})',
                'median wall (s)',
            ]
            rows = []
            for c in contenders:
                r, ir = ratios(sc, c), ideal_ratios(sc, c, workers)
                rows.append(
                    [c, f'{med(r):.2f}x', f'{min(r):.2f}-{max(r):.2f}', f'{med(ir):.2f}x', f'{med(sc.times[c]):.3f}']
                )
        out.append(format_table(headers, rows))
        if sc.workload == 'b':
            out.append(f'\nSerial compute alone (median over reps): {med(sc.compute):.3f} s; ideal = that / {workers}.')
    return '\n'.join(out)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--reps', type=int, default=7)
    parser.add_argument('--workers', type=int, default=WORKERS)
    parser.add_argument('--trivial', type=int, default=20_000, help='items in workload a')
    parser.add_argument('--heavy', type=int, default=400, help='items in workload b')
    parser.add_argument('--ms', type=float, default=5.0, help='compute per item in workload b, in ms')
    parser.add_argument('--disk', default=tempfile.gettempdir(), help='a folder on disk for the trials')
    parser.add_argument('--tmpfs', default='/dev/shm', help='a tmpfs folder for the trials')
    parser.add_argument('--only', default=','.join(CONTENDERS), help='comma-separated contenders')
    parser.add_argument(
        '--scenarios',
        default='a-disk,a-tmpfs,b-disk,r-tmpfs',
        help='comma-separated workload-storage pairs (a|b|r)-(disk|tmpfs)',
    )
    parser.add_argument(
        '--rev', action='append', default=[], help='also run stashworks as of this git revision (repeatable)'
    )
    parser.add_argument('--json', help='also write the raw times here')
    parser.add_argument('--quick', action='store_true', help='a smoke test: 2 reps, few items')
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.trivial, args.heavy = 2, 2000, 40

    contenders = [c for c in args.only.split(',') if c]
    if BASELINE not in contenders or 'serial' not in contenders:
        parser.error(f'--only must include {BASELINE!r} and serial (the ratios need them)')
    if 'stashworks' in contenders:
        why = stashworks_available()
        if why:
            print(f'stashworks batch layer not available, skipped: {why}', file=sys.stderr)
            contenders.remove('stashworks')

    rev_dirs = []
    for rev in args.rev:
        package, where = load_revision(rev)
        REVISIONS[f'stashworks@{rev}'] = package
        contenders.append(f'stashworks@{rev}')
        rev_dirs.append(where)

    spin, per_item = calibrate(args.ms / 1e3)
    print(f'workload b: spin {spin}, {per_item * 1e3:.2f} ms per item (best of 5)', file=sys.stderr)
    load_start = machine_note()

    dirs = {'disk': RunDirs(args.disk), 'tmpfs': RunDirs(args.tmpfs)}
    scenarios = []
    for spec in args.scenarios.split(','):
        workload, storage = spec.split('-')
        n = {'a': args.trivial, 'b': args.heavy, 'r': REMAINDER_TOTAL}[workload]
        scenarios.append(Scenario(workload, storage, n, spin if workload == 'b' else 0, dirs[storage]))
    try:
        for rep in range(args.reps):
            order = rotated(contenders, rep)
            for sc in scenarios:
                for contender in order:
                    if runs_workload(contender, sc.workload):
                        run_trial(sc, contender, rep, args.workers)
        print(report(scenarios, contenders, args.workers))
        print(f'\nMachine at start: {load_start}\nMachine at end:   {machine_note()}')
        if args.json:
            raw = {
                'argv': sys.argv,
                'spin': spin,
                'scenarios': [
                    {'name': sc.name, 'n': sc.n, 'times': sc.times, 'compute': sc.compute, 'extra': sc.extra}
                    for sc in scenarios
                ],
            }
            Path(args.json).write_text(json.dumps(raw, indent=1))
    finally:
        for d in dirs.values():
            d.remove()
        for where in rev_dirs:
            shutil.rmtree(where, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
