"""LmdbStash shared by real processes: readers during writes, fork, spawn, SIGKILL.

Every process here is real and every kill a real SIGKILL; each test runs
under a timeout.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip('lmdb')

from stashworks import LmdbStash

fork = multiprocessing.get_context('fork')
spawn = multiprocessing.get_context('spawn')

GROUP = 50  # items per group in the writers below


def value_of(key: str, size: int = 2000) -> bytes:
    """A value that says whether it is whole: its key's digest, repeated."""
    digest = hashlib.sha256(key.encode()).digest()
    return (digest * (size // len(digest) + 1))[:size]


def write_groups(path: str, start: int, groups: int, ready: Any = None) -> None:
    """Write ``groups`` groups of ``GROUP`` items, one transaction each (``groups`` < 0: forever)."""
    stash = LmdbStash(path, map_size=1 << 16, group_items=GROUP)
    if ready is not None:
        ready.set()
    g = start
    while groups < 0 or g < start + groups:
        stash.begin_group()
        for i in range(GROUP):
            key = f'g{g:06d}-{i:02d}'
            stash.dump(key, value_of(key))
        stash.flush()
        g += 1
    stash.close()


def check_whole(stash: LmdbStash) -> int:
    """Assert every item is whole and every group complete; return how many groups there are."""
    groups: dict[str, int] = {}
    for key, value in stash.items():
        assert value == value_of(key), f'partial or wrong value under {key}'
        group = key.split('-')[0]
        groups[group] = groups.get(group, 0) + 1
    assert all(n == GROUP for n in groups.values()), f'a partial group: {groups}'
    return len(groups)


def read_until_stopped(path: str, stop: Any, out: Any) -> None:
    stash = LmdbStash(path)
    seen: set[int] = set()
    try:
        while not stop.is_set() or len(seen) < 2:
            n = len(stash)
            assert n % GROUP == 0, f'len {n} is not a whole number of groups'
            seen.add(check_whole(stash))
        out.put(('ok', sorted(seen)))
    except BaseException as exc:
        out.put(('error', repr(exc)))


@pytest.mark.timeout(120)
@pytest.mark.parametrize('ctx', [fork, spawn], ids=['fork', 'spawn'])
def test_a_reader_process_sees_whole_groups_only_while_another_writes(tmp_path: Path, ctx: Any) -> None:
    path = str(tmp_path / 'db')
    stop, out = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=read_until_stopped, args=(path, stop, out))
    writer = ctx.Process(target=write_groups, args=(path, 0, 400))
    reader.start()
    writer.start()
    writer.join(90)
    stop.set()
    status, seen = out.get(timeout=60)
    reader.join(30)
    assert status == 'ok', seen
    assert writer.exitcode == 0
    # The reader read while the writer wrote: it saw some groups, not all.
    assert any(0 < n < 400 for n in seen), seen
    with LmdbStash(path) as stash:
        assert check_whole(stash) == 400


@pytest.mark.timeout(120)
def test_two_writer_processes_growing_one_tiny_map_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / 'db')
    writers = [fork.Process(target=write_groups, args=(path, start, 40)) for start in (0, 1000)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(90)
        assert w.exitcode == 0
    with LmdbStash(path) as stash:
        assert check_whole(stash) == 80
        assert len(stash) == 80 * GROUP


def child_uses_inherited(stash: LmdbStash, out: Any) -> None:
    try:
        before = stash['parent']
        stash['child'] = os.getpid()
        out.put((before, len(stash)))
    except BaseException as exc:
        out.put(repr(exc))


@pytest.mark.timeout(60)
@pytest.mark.parametrize('ctx', [fork, spawn], ids=['fork', 'spawn'])
def test_a_child_process_opens_its_own_environment(tmp_path: Path, ctx: Any) -> None:
    stash = LmdbStash(tmp_path / 'db')
    stash['parent'] = 'p'
    out = ctx.Queue()
    proc = ctx.Process(target=child_uses_inherited, args=(stash, out))
    proc.start()
    assert out.get(timeout=30) == ('p', 2)
    proc.join(30)
    assert proc.exitcode == 0
    # The parent's environment is untouched by the child's.
    stash['after'] = 1
    assert (stash['child'], len(stash)) == (proc.pid, 3)
    stash.close()


@pytest.mark.timeout(60)
def test_os_fork_mid_group_leaves_the_parents_buffer_to_the_parent(tmp_path: Path) -> None:
    stash = LmdbStash(tmp_path / 'db')
    stash['base'] = 0
    stash.begin_group()
    stash.dump('buffered', 1)
    pid = os.fork()
    if pid == 0:  # the child: exits without running pytest's cleanup
        code = 0
        try:
            stash.dump('child', 2)
            # The parent's buffered item is not the child's to commit.
            code = 0 if ('buffered' not in stash and stash['base'] == 0) else 3
            stash.flush()
            stash.close()
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    stash.flush()
    assert sorted(stash.keys()) == ['base', 'buffered', 'child']
    # Readers still work in the parent: its reader slots were not touched.
    assert [stash[k] for k in ('base', 'buffered', 'child')] == [0, 1, 2]
    stash.close()


@pytest.mark.timeout(60)
def test_a_forked_child_reads_and_the_parent_keeps_reading(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db') as stash:
        for i in range(100):
            stash[f'k{i}'] = i
        with fork.Pool(2) as pool:
            sums = pool.map(sum_values, [stash] * 4)
        assert sums == [sum(range(100))] * 4
        assert sum(stash.values()) == sum(range(100))


def sum_values(stash: LmdbStash) -> int:
    return sum(stash.values())


# -- SIGKILL --------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_sigkill_of_a_writer_mid_group_loses_only_uncommitted_items(tmp_path: Path) -> None:
    path = str(tmp_path / 'db')
    rng = random.Random(12)
    start = 0
    for round_ in range(6):
        ready = fork.Event()
        proc = fork.Process(target=write_groups, args=(path, start, -1, ready), daemon=True)
        proc.start()
        assert ready.wait(20)
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
        # Every committed group is whole, nothing is corrupt, and a new writer
        # (here, the next round's) gets the write lock the dead one held.
        with LmdbStash(path) as stash:
            groups = check_whole(stash)
            assert len(stash) == groups * GROUP
        assert groups > 0 or round_ == 0
        start += 100_000
    # A last writer finishes normally after all those deaths.
    write_groups(path, start, 2)
    with LmdbStash(path) as stash:
        check_whole(stash)
