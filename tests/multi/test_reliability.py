"""Nothing a job or its environment does makes a batch hang, lie, or misplace an item.

Each test reproduces one way a real job broke a batch: a key that hangs,
a worker whose forked helper outlives it, ``BaseException`` s, names that
are not valid UTF-8, duplicate keys, a job that changes directory, an
output folder that cannot be written.  Real worker processes, real
signals, real mounts (skipped with the reason where they cannot be made).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from batch_jobs import Work, computations, keys
from reliability_jobs import BadMessage, Chdir, ForkHelperThenDie, Hang, RaisesBase, RaisesInProcess, identity

from mounts import read_only_folder
from stashworks import BatchError, DirectoryStash, MultiProcessFactoryStash, SerialExecutor

pytestmark = pytest.mark.timeout(90)


def batch(out: Path, factory: Any, work_keys: Any, **kw: Any) -> MultiProcessFactoryStash:
    kw.setdefault('progress', False)
    kw.setdefault('workers', 2)
    return MultiProcessFactoryStash(DirectoryStash(out), factory=factory, keys=work_keys, **kw)


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / 'markers'
    path.mkdir()
    return path


# -- hangs -------------------------------------------------------------------


def test_a_hung_key_times_out_and_the_rest_is_computed_elsewhere(
    tmp_path: Path, start_method: str, markers: Path
) -> None:
    out = tmp_path / 'out'
    # Chunks of 2 on 2 workers: k000+k001 run on one worker with k004+k005
    # queued behind them there; k001 hangs.
    stash = batch(out, Hang(markers, hang=('k001',)), keys(12), chunk_size=2, start_method=start_method, item_timeout=3)
    started = time.monotonic()
    stash.prime()
    assert time.monotonic() - started < 45
    assert sorted(DirectoryStash(out).keys()) == [k for k in keys(12) if k != 'k001']
    assert list(stash.failures.keys()) == ['k001']
    record = stash.failures['k001']
    assert 'timeout' in record.error_type.lower() or 'timedout' in record.error_type.lower()
    assert 'k001' in record.message and '3' in record.message
    counts = computations(markers)
    assert counts['k001'] == 1
    # Everything queued behind the hung key was computed once, elsewhere.
    assert all(counts[k] == 1 for k in keys(12))

    # A resume does not hang on it again: it is a recorded failure.
    again = batch(out, Hang(markers, hang=('k001',)), keys(12), start_method=start_method, item_timeout=3)
    started = time.monotonic()
    result = again.prime()
    assert time.monotonic() - started < 10
    assert result.failed_before == 1 and result.computed == 0
    assert computations(markers)['k001'] == 1


def test_item_timeout_counts_from_the_start_of_each_item(tmp_path: Path, markers: Path) -> None:
    # Ten items of 0.6 s each on one worker: 6 s per chunk, each item well
    # under the 2 s limit, so none times out.
    stash = batch(tmp_path / 'out', Hang(markers, sleep=0.6), keys(10), workers=1, chunk_size=10, item_timeout=2)
    stash.prime()
    assert len(stash.failures) == 0
    assert len(DirectoryStash(tmp_path / 'out').keys()) == 10


@pytest.mark.parametrize('bad', [0, -1, 'soon'])
def test_item_timeout_must_be_a_positive_number(tmp_path: Path, bad: Any) -> None:
    with pytest.raises((ValueError, TypeError), match='item_timeout must'):
        batch(tmp_path / 'out', identity, keys(2), item_timeout=bad)


def test_the_serial_executor_says_it_does_not_enforce_item_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stash = batch(tmp_path / 'out', identity, keys(3), executor=SerialExecutor(), item_timeout=5)
    with caplog.at_level(logging.WARNING, logger='stashworks'):
        stash.prime()
    assert len(DirectoryStash(tmp_path / 'out').keys()) == 3
    assert any('item_timeout' in r.getMessage() and 'serial' in r.getMessage().lower() for r in caplog.records)


def _kill_helpers(pids: Path) -> None:
    for p in pids.glob('*.helper'):
        try:
            os.kill(int(p.name.split('.')[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_forked_helper_does_not_delay_noticing_that_its_worker_died(tmp_path: Path, start_method: str) -> None:
    pids = tmp_path / 'pids'
    pids.mkdir()
    # k000 forks a helper that sleeps 60 s holding every inherited pipe end;
    # k001 then kills its worker.
    factory = ForkHelperThenDie(pids, fork_on='k000', die_on='k001', helper_sleep=60)
    stash = batch(tmp_path / 'out', factory, keys(4), workers=1, chunk_size=4, max_retries=0, start_method=start_method)
    # Should the death go unnoticed, end the helpers after 12 s so the test
    # fails on its timing instead of waiting a minute.
    stop = threading.Event()

    def watchdog() -> None:
        if not stop.wait(12):
            _kill_helpers(pids)

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    try:
        started = time.monotonic()
        stash.prime()
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        _kill_helpers(pids)
    assert list(stash.failures.keys()) == ['k001']
    assert 'SIGKILL' in stash.failures['k001'].message
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == ['k000', 'k002', 'k003']
    assert elapsed < 8, f'the death was noticed after {elapsed:.1f}s'


# -- lies --------------------------------------------------------------------


def test_duplicate_keys_are_computed_once_and_never_again(tmp_path: Path, markers: Path) -> None:
    work = ['k000', 'k000', 'k001', 'k001', 'k002']
    out = tmp_path / 'out'
    for _ in range(3):
        stash = batch(out, Work(markers, fail=('k001',)), work, workers=1)
        stash.prime()
    counts = computations(markers)
    assert counts == {'k000': 1, 'k001': 1, 'k002': 1}
    assert stash.last_result is not None
    assert stash.last_result.total == 3
    assert stash.last_result.computed == 0 and stash.last_result.failed == 0


def test_a_failing_key_that_is_not_utf8_gets_its_failure_record(tmp_path: Path, markers: Path) -> None:
    bad = os.fsdecode(b'caf\xe9')  # a Latin-1 file name, as os.listdir returns it
    assert '\udce9' in bad
    out = tmp_path / 'out'
    for _ in range(2):
        stash = batch(out, Work(markers, fail=(bad,)), [bad, 'k000'], workers=1)
        stash.prime()
    assert list(stash.failures.keys()) == [bad]
    record = stash.failures[bad]
    assert record.key == bad
    assert record.error_type == 'ValueError'
    # Recorded, so the second run did not try it again.
    assert computations(markers)[bad] == 1


def test_a_failure_message_that_is_not_utf8_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    stash = batch(out, BadMessage('k001'), keys(3), workers=1)
    stash.prime()
    assert list(stash.failures.keys()) == ['k001']
    record = stash.failures['k001']
    assert record.error_type == 'ValueError'
    assert 'cannot read caf' in record.message


@pytest.mark.parametrize('kind', ['SystemExit', 'KeyboardInterrupt', 'GeneratorExit', 'CustomBase', 'BadStr'])
def test_a_base_exception_in_a_job_is_recorded_as_itself(
    tmp_path: Path, start_method: str, markers: Path, kind: str
) -> None:
    stash = batch(
        tmp_path / 'out', RaisesBase(markers, 'k001', kind), keys(4), workers=1, chunk_size=4, start_method=start_method
    )
    stash.prime()
    assert list(stash.failures.keys()) == ['k001']
    record = stash.failures['k001']
    assert record.error_type == kind
    assert 'reliability_jobs.py' in record.traceback, record.traceback
    assert record.attempts == 1
    assert computations(markers)['k001'] == 1
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == ['k000', 'k002', 'k003']
    assert stash.last_result is not None and stash.last_result.lost == 0


@pytest.mark.parametrize('kind', ['SystemExit', 'GeneratorExit', 'CustomBase'])
def test_a_base_exception_in_process_is_recorded_as_itself(tmp_path: Path, kind: str) -> None:
    stash = RaisesInProcess(
        DirectoryStash(tmp_path / 'out'),
        keys(4),
        'k002',
        kind,
        workers=1,
        chunk_size=4,
        progress=False,
        start_method='fork',
    )
    stash.prime()
    assert list(stash.failures.keys()) == ['k002']
    record = stash.failures['k002']
    assert record.error_type == kind
    assert 'reliability_jobs.py' in record.traceback, record.traceback
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == ['k000', 'k001', 'k003']
    assert stash.last_result is not None and stash.last_result.lost == 0


def test_max_retries_zero_never_retries_a_key_that_shared_a_chunk(
    tmp_path: Path, start_method: str, markers: Path
) -> None:
    stash = batch(
        tmp_path / 'out',
        Work(markers, sigkill=('k001',)),
        keys(4),
        workers=1,
        chunk_size=4,
        max_retries=0,
        start_method=start_method,
    )
    stash.prime()
    assert computations(markers)['k001'] == 1
    record = stash.failures['k001']
    assert record.error_type == 'WorkerDied'
    assert record.attempts == 1
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == ['k000', 'k002', 'k003']


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path: Path, markers: Path) -> None:
    with read_only_folder(tmp_path / 'ro') as ro:
        stash = batch(ro, Work(markers), keys(50))
        with pytest.raises(BatchError) as info:
            stash.prime()
        message = str(info.value)
        assert str(ro) in message
        assert 'Read-only file system' in message or 'Permission denied' in message
        assert '\n' not in message
        assert not list(markers.iterdir()), 'the batch computed items it could not store'


def test_a_complete_read_only_folder_is_still_readable(tmp_path: Path, markers: Path) -> None:
    # Only a batch with work to do needs to write: a finished one is data.
    src = tmp_path / 'src'
    batch(src, Work(markers), keys(3), workers=1).prime()
    with read_only_folder(tmp_path / 'ro') as ro:
        if os.geteuid() == 0:
            # The mount is empty and read-only: mount it writable, copy, remount.
            import subprocess

            subprocess.run(['mount', '-o', 'remount,rw', str(ro)], check=True)
            for p in src.glob('*.dat'):
                (ro / p.name).write_bytes(p.read_bytes())
            subprocess.run(['mount', '-o', 'remount,ro', str(ro)], check=True)
        else:
            ro.chmod(0o755)
            for p in src.glob('*.dat'):
                (ro / p.name).write_bytes(p.read_bytes())
            ro.chmod(0o555)
        stash = batch(ro, Work(markers), keys(3))
        assert stash['k001'] == 'value-k001'
        assert len(stash) == 3


# -- misplaced ---------------------------------------------------------------


@pytest.fixture(params=['fork', 'spawn', 'serial'])
def how(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == 'serial':
        return {'executor': SerialExecutor()}
    return {'start_method': request.param, 'workers': 1}


def test_a_job_that_changes_directory_does_not_move_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: dict[str, Any]
) -> None:
    home = tmp_path / 'home'
    elsewhere = tmp_path / 'elsewhere'
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(home)
    stash = batch(Path('out'), Chdir(elsewhere, fail=('k002',)), keys(6), chunk_size=2, **how)
    stash.prime()
    os.chdir(home)
    written = sorted(p.name for p in (home / 'out').iterdir())
    assert written == ['.stashworks'] + [f'{k}.dat' for k in keys(6) if k != 'k002']
    assert sorted(p.name for p in (home / 'out' / '.stashworks' / 'failures').iterdir()) == ['k002.json']
    assert (home / 'out' / '.stashworks' / 'status.json').is_file()
    assert not (elsewhere / 'out').exists(), sorted(str(p) for p in elsewhere.rglob('*'))
