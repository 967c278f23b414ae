"""DirectoryStash under real faults: killed writers, racing writers, a full disk.

Writers are real forked processes, killed with a real SIGKILL; every test
that starts a process runs under a timeout.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from stashworks import DirectoryStash, StashWriteError

# fork: the children need no pickling of their targets and start in
# milliseconds, which keeps many kill rounds cheap.
ctx = multiprocessing.get_context('fork')

BIG = 4 << 20  # bytes per value: a dump takes milliseconds, so kills land mid-write


def big_value(i: int, size: int = BIG) -> tuple[int, int, bytes]:
    return i, size, bytes([i % 256]) * size


def assert_whole(value: Any) -> None:
    i, size, payload = value
    assert payload == bytes([i % 256]) * size, f'partial or mixed value {i}'


def overwrite_forever(path: Path, key: str, start: int, ready: Any) -> None:
    stash = DirectoryStash(path)
    ready.set()
    i = start
    while True:
        i += 1
        stash.dump(key, big_value(i))


def add_keys_forever(path: Path, ready: Any) -> None:
    stash = DirectoryStash(path)
    ready.set()
    i = 0
    while True:
        stash.dump(f'k{i}', big_value(i, size=256 << 10))
        i += 1


def kill_at_a_random_moment(target: Any, args: tuple[Any, ...], rng: random.Random) -> None:
    ready = ctx.Event()
    proc = ctx.Process(target=target, args=(*args, ready), daemon=True)
    proc.start()
    assert ready.wait(10), 'writer did not start'
    time.sleep(rng.uniform(0, 0.04))
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL


def kill_writers_mid_dump(path: Path, rounds: int, seed: int, temp_files: Any) -> int:
    """Run ``rounds`` writers, each SIGKILLed at a random moment; return how many died mid-write."""
    rng = random.Random(seed)
    stash = DirectoryStash(path)
    killed_mid_write = 0
    for round_ in range(rounds):
        existed = 'big' in stash
        before = len(temp_files(stash.path))
        kill_at_a_random_moment(overwrite_forever, (stash.path, 'big', round_ * 10_000), rng)
        killed_mid_write += len(temp_files(stash.path)) > before
        if existed:
            assert 'big' in stash
        if 'big' in stash:
            assert_whole(stash.load('big'))
        assert stash.keys() in ([], ['big'])
    return killed_mid_write


@pytest.mark.timeout(60)
def test_a_writer_killed_mid_dump_leaves_the_old_value_or_none(tmp_path: Path, temp_files) -> None:
    killed_mid_write = kill_writers_mid_dump(tmp_path / 'stash', 30, 1234, temp_files)
    # The kills did land in the middle of writes (a temp file was left),
    # so the rounds tested what they claim to.
    assert killed_mid_write >= 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_many_writers_killed_mid_dump_leave_the_old_value_or_none(tmp_path: Path, temp_files) -> None:
    assert kill_writers_mid_dump(tmp_path / 'stash', 500, 4321, temp_files) >= 10


@pytest.mark.timeout(60)
def test_a_writer_killed_while_adding_keys_leaves_only_whole_items(tmp_path: Path, temp_files) -> None:
    rng = random.Random(99)
    stash = DirectoryStash(tmp_path / 'stash')
    for _ in range(10):
        kill_at_a_random_moment(add_keys_forever, (stash.path,), rng)
        for _, value in stash:
            assert_whole(value)


def write_range(path: Path, who: str, start: int, stop: int, barrier: Any) -> None:
    stash = DirectoryStash(path)
    barrier.wait(10)
    for i in range(start, stop):
        stash.dump(f'k{i}', (who, i))


@pytest.mark.timeout(90)
def test_two_processes_writing_overlapping_keys_leave_every_key_whole(tmp_path: Path, temp_files) -> None:
    # A writes k0..k4999, B writes k2500..k7499: half of each one's keys
    # are shared, written at the same time.
    path = tmp_path / 'stash'
    barrier = ctx.Barrier(3)
    writers = [
        ctx.Process(target=write_range, args=(path, 'A', 0, 5000, barrier)),
        ctx.Process(target=write_range, args=(path, 'B', 2500, 7500, barrier)),
    ]
    for proc in writers:
        proc.start()
    barrier.wait(10)
    reader = DirectoryStash(path)
    reads = 0
    # Read while they write: a listed key always loads whole.
    while any(proc.is_alive() for proc in writers):
        for key in reader.keys()[-50:]:
            who, i = reader.load(key)
            assert key == f'k{i}' and who in 'AB'
            reads += 1
        time.sleep(0.05)  # leave the CPUs to the writers
    for proc in writers:
        proc.join(60)
        assert proc.exitcode == 0
    assert len(reader) == 7500
    for i in range(7500):
        who, j = reader.load(f'k{i}')
        assert j == i
        assert who == ('A' if i < 2500 else 'B' if i >= 5000 else who)
        assert who in ('A', 'B')
    assert temp_files(path) == []
    assert reads > 0


def test_full_disk_on_replace_loses_nothing(tmp_path: Path, temp_files, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    stash = DirectoryStash(tmp_path / 'stash')
    model = {f'k{i}': ('old', i) for i in range(100)}
    for key, value in model.items():
        stash.dump(key, value)
    real_replace = os.replace

    def flaky_replace(src: Any, dst: Any) -> None:
        if rng.random() < 0.5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', flaky_replace)
    failures = 0
    for i in range(200):  # overwrite the 100 keys and try 100 new ones
        key, value = f'k{i}', ('new', i)
        try:
            stash.dump(key, value)
        except StashWriteError as exc:
            assert exc.errno == errno.ENOSPC and repr(key) in str(exc)
            failures += 1
        else:
            model[key] = value
    monkeypatch.undo()
    assert 50 < failures < 150
    assert dict(stash) == model
    assert temp_files(stash.path) == []
