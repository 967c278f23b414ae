"""A worker that dies never hangs the batch, and only the culprit fails.

Each way to die is real: the worker SIGKILLs itself, segfaults, calls
``os._exit(3)``.  The batch must notice at once, give the chunk's other
keys to a fresh worker, retry the culprit a bounded number of times, and
record it (and only it) as a failure that names the key and the cause.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from batch_jobs import FailsToLoad, Work, computations, keys

from stashworks import BatchError, DirectoryStash, MultiProcessFactoryStash

pytestmark = pytest.mark.timeout(60)


def run(tmp_path: Path, start_method: str, work: Work, n: int = 8, **kw: object) -> MultiProcessFactoryStash:
    stash = MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'),
        factory=work,
        keys=keys(n),
        workers=2,
        chunk_size=4,
        start_method=start_method,
        progress=False,
        **kw,  # type: ignore[arg-type]
    )
    stash.prime()
    return stash


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / 'markers'
    path.mkdir()
    return path


def test_sigkill_fails_only_the_culprit_and_names_it(tmp_path: Path, start_method: str, markers: Path) -> None:
    stash = run(tmp_path, start_method, Work(markers, sigkill=('k001',)))
    # k001 shares its chunk with k000, k002, k003: they complete.
    assert sorted(stash.delegate.keys()) == [k for k in keys(8) if k != 'k001']
    assert list(stash.failures.keys()) == ['k001']
    record = stash.failures['k001']
    assert record.error_type == 'WorkerDied'
    assert 'k001' in record.message
    assert 'SIGKILL' in record.message
    assert record.attempts == 3  # the first try and max_retries=2 retries


def test_killed_worker_is_retried_a_bounded_number_of_times(tmp_path: Path, start_method: str, markers: Path) -> None:
    run(tmp_path, start_method, Work(markers, sigkill=('k002',)), max_retries=1)
    counts = computations(markers)
    assert counts['k002'] == 2
    # Innocent keys of the culprit's chunk were computed once each.
    assert all(counts[k] == 1 for k in keys(8) if k != 'k002')


def test_segfault_is_recorded_with_sigsegv(tmp_path: Path, start_method: str, markers: Path) -> None:
    stash = run(tmp_path, start_method, Work(markers, segfault=('k005',)), max_retries=0)
    assert list(stash.failures.keys()) == ['k005']
    assert 'SIGSEGV' in stash.failures['k005'].message
    assert len(stash.delegate.keys()) == 7


def test_os_exit_is_recorded_with_its_exit_code(tmp_path: Path, start_method: str, markers: Path) -> None:
    stash = run(tmp_path, start_method, Work(markers, exit3=('k000',)), max_retries=0)
    assert list(stash.failures.keys()) == ['k000']
    assert 'exit code 3' in stash.failures['k000'].message
    assert len(stash.delegate.keys()) == 7


def test_unpicklable_result_is_a_failure_not_a_death(tmp_path: Path, start_method: str, markers: Path) -> None:
    stash = run(tmp_path, start_method, Work(markers, unpicklable=('k003',)))
    record = stash.failures['k003']
    assert record.error_type == 'SerializationError'
    assert 'k003' in record.message
    assert stash.last_result is not None and stash.last_result.lost == 0
    assert computations(markers)['k003'] == 1


def test_a_job_workers_cannot_load_stops_the_batch_with_its_traceback(tmp_path: Path, start_method: str) -> None:
    with pytest.raises(BatchError, match=r'could not load the job[\s\S]*cannot be loaded here'):
        run(tmp_path, start_method, FailsToLoad())  # type: ignore[arg-type]


def test_an_unpicklable_factory_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    pending = (n for n in range(3))  # generators cannot be pickled, even by dill
    with pytest.raises(BatchError, match='cannot send the job to worker processes'):
        run(tmp_path, 'fork', lambda k: (pending, k))  # type: ignore[arg-type]


def test_spawned_workers_of_an_unguarded_script_stop_the_batch_with_a_hint(tmp_path: Path) -> None:
    script = tmp_path / 'unguarded.py'
    script.write_text(
        'from stashworks import DirectoryStash, MultiProcessFactoryStash\n'
        f'stash = MultiProcessFactoryStash(DirectoryStash({str(tmp_path / "out")!r}), factory=str.upper,\n'
        "    keys=['a', 'b'], workers=1, start_method='spawn', progress=False)\n"
        'stash.prime()\n'
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert 'BatchError' in done.stderr
    assert "if __name__ == '__main__':" in done.stderr
