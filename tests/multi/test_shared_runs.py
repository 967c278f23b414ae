"""Several batch runs on one output folder: they split the work through claims.

Every run is a real process (``shared_run.py`` or ``stashworks run``);
each computation leaves a marker file, so a key computed twice shows.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stashworks.multi.runs import read_runs

HERE = Path(__file__).resolve().parent
RUN = HERE / 'shared_run.py'
sys.path.insert(0, str(HERE.parent))
from cli_helpers import command  # noqa: E402

pytestmark = pytest.mark.timeout(180)

EXPIRY = 2.0
HEARTBEAT = 0.2


def env_for(markers: Path, delay: float = 0.0, fail: str = '', **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SHARED_MARKERS=str(markers),
        SHARED_DELAY=str(delay),
        SHARED_FAIL=fail,
        STASHWORKS_HEARTBEAT=str(HEARTBEAT),
        STASHWORKS_CLAIM_EXPIRY=str(EXPIRY),
        PYTHONPATH=os.pathsep.join([str(HERE), env.get('PYTHONPATH', '')]),
    )
    env.update(extra)
    return env


def start_run(out: Path, keys: int, workers: int, env: dict[str, str], *flags: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(RUN), str(out), str(keys), str(workers), *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def result_of(proc: subprocess.Popen[str], timeout: float = 150) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def computations(markers: Path) -> Counter[str]:
    return Counter(name.split('.', 1)[0] for name in os.listdir(markers))


def keys_of(n: int) -> set[str]:
    return {f'k{i:04d}' for i in range(n)}


def wait_for(check: Any, timeout: float = 60.0, what: str = 'condition') -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.05)


def open_claims_of(out: Path, run: str) -> set[str]:
    """The keys of the claims ``run`` made and never released."""
    keys: set[str] = set()
    for path in (out / '.stashworks' / 'claims').glob('*.json'):
        data = json.loads(path.read_text())
        if data.get('run') == run and not data.get('released'):
            keys.update(data['keys'])
    return keys


@pytest.mark.parametrize('runs', [2, 3])
def test_runs_at_once_compute_every_key_once(tmp_path: Path, runs: int) -> None:
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    env = env_for(markers, delay=0.01, fail='k0007,k0100')
    procs = [start_run(out, 240, 1, env) for _ in range(runs)]
    results = [result_of(p) for p in procs]
    counts = computations(markers)
    assert set(counts) == keys_of(240)
    assert max(counts.values()) == 1, counts.most_common(3)
    # The work was split, and each run accounts for every key.
    assert sum(r['computed'] + r['failed'] for r in results) == 240
    assert sum(1 for r in results if r['computed']) >= 2
    for r in results:
        mine = r['computed'] + r['failed']
        theirs = r['done_elsewhere'] + r['failed_elsewhere']
        assert r['done_before'] + r['failed_before'] + mine + theirs == 240 == r['total']
    # A key that failed in one run is not retried by another.
    assert sum(r['failed'] for r in results) == 2


def test_a_run_started_later_joins_midway(tmp_path: Path) -> None:
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    env = env_for(markers, delay=0.02)
    first = start_run(out, 300, 1, env)
    wait_for(lambda: len(os.listdir(markers)) >= 40, what='the first run to get going')
    second = start_run(out, 300, 1, env)
    a, b = result_of(first), result_of(second)
    counts = computations(markers)
    assert set(counts) == keys_of(300) and max(counts.values()) == 1
    assert b['done_before'] >= 30 and b['computed'] > 0
    assert a['computed'] + b['computed'] == 300


def test_sigkilled_run_costs_at_most_the_chunks_it_held(tmp_path: Path) -> None:
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    expiry = 5.0  # long enough to see the claims expiring in status first
    env = env_for(markers, delay=0.03, STASHWORKS_CLAIM_EXPIRY=str(expiry))
    victim = start_run(out, 200, 2, env, '--chunk-size', '5')
    wait_for(lambda: len(os.listdir(markers)) >= 20, what='the first run to get going')
    survivor = start_run(out, 200, 1, env, '--chunk-size', '5')
    wait_for(lambda: len(read_runs(out)) == 2, what='the second run to register')
    time.sleep(0.5)
    (doomed,) = [v.run_id for v in read_runs(out) if v.data['pid'] == victim.pid]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = time.time()
    held = open_claims_of(out, doomed)
    assert held, 'the killed run held claims'
    # Until they expire, status shows the dead run's claims as expiring.
    status = subprocess.run(
        [*command(), 'status', str(out), '--json'], capture_output=True, text=True, env=env, timeout=60
    )
    report = json.loads(status.stdout)
    (dead,) = [r for r in report['runs'] if r['run'] == doomed]
    assert dead['state'] == 'expiring' and 0 < dead['expires_in'] <= expiry and dead['claims'] >= 1
    result = result_of(survivor)
    counts = computations(markers)
    assert set(counts) == keys_of(200)
    twice = {k for k, n in counts.items() if n > 1}
    assert twice <= held
    # Its keys were computed again only after its claims expired.
    retaken = [
        os.stat(markers / name).st_mtime
        for name in os.listdir(markers)
        if name.split('.', 1)[0] in held and int(name.split('.')[1]) == survivor.pid
    ]
    assert retaken and min(retaken) >= killed + expiry - HEARTBEAT - 0.5
    assert result['total'] == 200


def fake_dead_run(out: Path, host: str, keys: list[str]) -> None:
    """What a run killed on another host leaves: its record, a claim, a stale heartbeat."""
    state = out / '.stashworks'
    (state / 'runs').mkdir(parents=True)
    (state / 'claims').mkdir()
    record = {'run': 'far-run', 'host': host, 'pid': os.getpid(), 'state': 'running', 'claims': [0], 'claims_last': 0}
    (state / 'runs' / 'far-run.json').write_text(json.dumps(record))
    (state / 'claims' / '0.json').write_text(json.dumps({'run': 'far-run', 'host': host, 'keys': keys}))


def test_claims_of_a_crashed_run_on_another_host_expire_by_heartbeat(tmp_path: Path) -> None:
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    held = [f'k{i:04d}' for i in range(10)]
    fake_dead_run(out, 'elsewhere.example', held)  # its pid is alive here, which must not matter
    started = time.time()
    result = result_of(start_run(out, 40, 1, env_for(markers)))
    counts = computations(markers)
    assert set(counts) == keys_of(40) and max(counts.values()) == 1
    assert result['computed'] == 40
    first_held = min(os.stat(markers / n).st_mtime for n in os.listdir(markers) if n.split('.', 1)[0] in held)
    assert first_held >= started + EXPIRY - 0.5


def test_retry_failures_alongside_a_normal_run(tmp_path: Path) -> None:
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    failing = ['k0003', 'k0050', 'k0099']
    first = result_of(start_run(out, 100, 2, env_for(markers, fail=','.join(failing))))
    assert first['failed'] == 3
    for name in os.listdir(markers):
        os.unlink(markers / name)
    keyfile = tmp_path / 'keys.txt'
    keyfile.write_text(''.join(f'k{i:04d}\n' for i in range(300)))
    env = env_for(markers, delay=0.01)

    def cli(*extra: str) -> subprocess.Popen[str]:
        args = ['run', 'shared_run:mark', '--keys', str(keyfile), '--out', str(out), '--workers', '1', *extra]
        return subprocess.Popen([*command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    normal, retry = cli(), cli('--retry-failures')
    for proc in (normal, retry):
        _, err = proc.communicate(timeout=150)
        assert proc.returncode == 0, err[-3000:]
    counts = computations(markers)
    # The 200 new keys and the 3 failed ones, each computed once.
    assert set(counts) == keys_of(300) - keys_of(100) | set(failing)
    assert max(counts.values()) == 1, counts.most_common(3)
    assert not os.listdir(out / '.stashworks' / 'failures')


@pytest.mark.dask
def test_dask_run_and_local_run_share_the_folder(tmp_path: Path) -> None:
    pytest.importorskip('distributed')
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    env = env_for(markers, delay=0.02)
    on_dask = start_run(out, 300, 1, env, '--dask')
    # The cluster takes seconds to start: the local run joins once the
    # Dask run is computing, so both have work.
    wait_for(lambda: len(os.listdir(markers)) >= 5, what='the Dask run to compute')
    local = start_run(out, 300, 1, env)
    a, b = result_of(on_dask), result_of(local)
    counts = computations(markers)
    assert set(counts) == keys_of(300) and max(counts.values()) == 1, counts.most_common(3)
    assert a['computed'] > 0 and b['computed'] > 0
    assert a['computed'] + b['computed'] == 300


def test_status_lists_every_live_run(tmp_path: Path) -> None:
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    env = env_for(markers, delay=0.05)
    procs = [start_run(out, 200, 1, env) for _ in range(2)]
    try:
        wait_for(lambda: len([v for v in read_runs(out) if v.state == 'live']) == 2, what='two live runs')
        wait_for(lambda: len(os.listdir(markers)) >= 10, what='some progress')
        status = subprocess.run(
            [*command(), 'status', str(out), '--json'], capture_output=True, text=True, env=env, timeout=60
        )
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        live = [r for r in report['runs'] if r['state'] == 'live']
        assert sorted(r['pid'] for r in live) == sorted(p.pid for p in procs)
        assert all(r['host'] == socket.gethostname() and r['workers'] == 1 for r in live)
        assert report['combined']['live_runs'] == 2 and report['combined']['total'] == 200
        text = subprocess.run([*command(), 'status', str(out)], capture_output=True, text=True, env=env, timeout=60)
        assert text.returncode == 0 and text.stdout.count(' live') >= 2, text.stdout
    finally:
        results = [result_of(p) for p in procs]
    assert sum(r['computed'] for r in results) == 200
