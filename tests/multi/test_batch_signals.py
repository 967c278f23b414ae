"""Ctrl-C, SIGTERM and a parent killed outright: stop fast, lose nothing, resume.

Each test runs the batch's parent as a real subprocess
(``batch_parent.py``), signals it part-way, and checks what is left on
disk and in the process table; then a second run must finish the batch,
computing only what was missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from batch_jobs import computations, keys, wait_for

from stashworks import DirectoryStash
from stashworks.multi import read_status

pytestmark = pytest.mark.timeout(90)

HERE = Path(__file__).resolve().parent
N = 30


def start_parent(tmp_path: Path, method: str, sleep: float = 0.1, session: bool = False) -> subprocess.Popen[str]:
    markers = tmp_path / 'markers'
    markers.mkdir(exist_ok=True)
    script = str(HERE / 'batch_parent.py')
    cmd = [sys.executable, script, str(tmp_path / 'out'), str(markers), str(N), str(sleep), method]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=session)


def workers_of(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def started(tmp_path: Path, count: int) -> bool:
    return len(list((tmp_path / 'markers').iterdir())) >= count


def gone(procs: list[psutil.Process]) -> bool:
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def rerun(tmp_path: Path, method: str) -> str:
    proc = start_parent(tmp_path, method, sleep=0.0)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out


def assert_resumed(tmp_path: Path, complete_before: set[str], method: str) -> None:
    """A second run finishes, recomputing nothing that was complete."""
    rerun(tmp_path, method)
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == keys(N)
    counts = computations(tmp_path / 'markers')
    assert all(counts[k] == 1 for k in complete_before)
    assert all(counts[k] >= 1 for k in keys(N))


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_signal_stops_the_batch_cleanly_and_it_resumes(tmp_path: Path, start_method: str, sig: int) -> None:
    proc = start_parent(tmp_path, start_method)
    assert wait_for(lambda: started(tmp_path, 6), 30)
    children = workers_of(proc)
    assert children
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130, err
    assert 'INTERRUPTED' in out
    assert 'run the batch again' in err  # it says how to resume
    assert wait_for(lambda: gone(children), 5)
    status = read_status(tmp_path / 'out')
    assert status is not None and status['state'] == 'interrupted'
    complete = set(DirectoryStash(tmp_path / 'out').keys())
    assert len(complete) < N
    assert status['done'] == len(complete)
    assert_resumed(tmp_path, complete, start_method)


def test_parent_killed_outright_leaves_no_worker_running(tmp_path: Path, start_method: str) -> None:
    proc = start_parent(tmp_path, start_method)
    assert wait_for(lambda: started(tmp_path, 6), 30)
    children = workers_of(proc)
    assert children
    proc.kill()
    proc.communicate(timeout=10)
    assert wait_for(lambda: gone(children), 5)


def test_parent_killed_mid_batch_then_rerun_computes_only_the_missing(tmp_path: Path, start_method: str) -> None:
    proc = start_parent(tmp_path, start_method)
    assert wait_for(lambda: started(tmp_path, 8), 30)
    children = workers_of(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert wait_for(lambda: gone(children), 5)
    complete = set(DirectoryStash(tmp_path / 'out').keys())
    assert 0 < len(complete) < N
    assert_resumed(tmp_path, complete, start_method)
    # Beyond the complete keys, at most the items in flight (one per
    # worker) were computed twice.
    counts = computations(tmp_path / 'markers')
    assert sum(counts.values()) <= N + 2


def test_ctrl_c_at_a_terminal_reaches_workers_too_but_only_the_parent_decides(
    tmp_path: Path, start_method: str
) -> None:
    # A terminal sends SIGINT to the whole foreground process group.
    proc = start_parent(tmp_path, start_method, session=True)
    assert wait_for(lambda: started(tmp_path, 6), 30)
    children = workers_of(proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert wait_for(lambda: gone(children), 5)
    # The workers ignored SIGINT: no KeyboardInterrupt traceback from any
    # of them (they share the parent's stderr).
    assert 'Traceback' not in err
    assert_resumed(tmp_path, set(DirectoryStash(tmp_path / 'out').keys()), start_method)
