"""Claims between runs on one folder: real processes, real SIGKILL, real files."""

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
from typing import Any, Optional

import psutil
import pytest

from stashworks.multi.claims import ClaimBook, SharedWork, claims_dir
from stashworks.multi.runs import claim_timings, judge, read_runs, runs_dir

WORKER = Path(__file__).resolve().parent / 'claim_worker.py'


def start(root: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(WORKER), str(root), name, *args])


def wait_file(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f'{path} never appeared'
        time.sleep(0.02)


def finish(procs: list[subprocess.Popen[bytes]], timeout: float = 90.0) -> None:
    for proc in procs:
        assert proc.wait(timeout=timeout) == 0


def marker_counts(root: Path) -> Counter[str]:
    return Counter(name.rsplit('.', 1)[0] for name in os.listdir(root / 'markers'))


def summary(root: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / f'{name}.json').read_text())
    return data


def all_keys(chunks: int, size: int) -> set[str]:
    return {f'c{i}-{j}' for i in range(chunks) for j in range(size)}


def fake_run(state: Path, run: str, host: str, pid: int, pid_started: float, age: float, keys: list[str]) -> None:
    """A run record and one claim of it, as a run elsewhere would leave them."""
    runs_dir(state).mkdir(parents=True, exist_ok=True)
    claims_dir(state).mkdir(parents=True, exist_ok=True)
    record = {
        'run': run,
        'host': host,
        'pid': pid,
        'pid_started': pid_started,
        'state': 'running',
        'heartbeat_interval': 0.2,
        'claims': [0],
        'claims_last': 0,
    }
    path = runs_dir(state) / f'{run}.json'
    path.write_text(json.dumps(record))
    (claims_dir(state) / '0.json').write_text(json.dumps({'run': run, 'host': host, 'pid': pid, 'keys': keys}))
    then = time.time() - age
    os.utime(path, (then, then))


def never_settled(key: str) -> Optional[bool]:
    return None


# -- several live runs ---------------------------------------------------------


@pytest.mark.parametrize('runs', [2, 3])
def test_live_runs_never_compute_a_key_twice(tmp_path: Path, runs: int) -> None:
    go = time.time() + 2.0
    procs = [start(tmp_path, f'r{n}', '--chunks', '40', '--start-at', str(go)) for n in range(runs)]
    finish(procs)
    counts = marker_counts(tmp_path)
    assert set(counts) == all_keys(40, 5)
    assert max(counts.values()) == 1
    # Each run accounts for every key: its own and the others'.
    mine = [set(summary(tmp_path, f'r{n}')['computed']) for n in range(runs)]
    for n in range(runs):
        theirs = set(summary(tmp_path, f'r{n}')['others'])
        assert mine[n].isdisjoint(theirs)
        assert mine[n] | theirs == all_keys(40, 5)
    # The work was shared (each run started before any could finish it).
    assert sum(1 for m in mine if m) >= 2


def test_a_run_joining_midway_computes_only_what_is_left(tmp_path: Path) -> None:
    first = start(tmp_path, 'first', '--chunks', '40', '--item-time', '0.01')
    wait_file(tmp_path / 'first.ready')
    time.sleep(0.8)
    second = start(tmp_path, 'second', '--chunks', '40', '--item-time', '0.01')
    finish([first, second])
    counts = marker_counts(tmp_path)
    assert set(counts) == all_keys(40, 5) and max(counts.values()) == 1
    late = summary(tmp_path, 'second')
    assert late['computed'], 'the second run joined while work was left'
    assert 'c0-0' in summary(tmp_path, 'first')['computed']


# -- a holder that dies ----------------------------------------------------------


def test_sigkilled_holders_claims_are_taken_over_after_expiry_not_before(tmp_path: Path) -> None:
    expiry = 2.0
    holder = start(tmp_path, 'holder', '--hang-after', '3', '--expiry', str(expiry))
    wait_file(tmp_path / 'holder.holding')
    held = json.loads((tmp_path / 'holder.holding').read_text())
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    killed = time.time()
    other = start(tmp_path, 'other', '--expiry', str(expiry))
    finish([other])
    counts = marker_counts(tmp_path)
    assert set(counts) == all_keys(20, 5)
    twice = {k for k, n in counts.items() if n > 1}
    # At most the chunk the dead run held is computed again (here it had
    # not started it), and only after its claim expired (its last
    # heartbeat was at most one beat before the kill).
    assert twice <= set(held)
    assert set(held) <= set(summary(tmp_path, 'other')['computed'])
    taken = summary(tmp_path, 'other')['claimed_at']
    for key in held:
        assert taken[key] >= killed + expiry - 0.2 - 0.3
    # The chunks it finished before the kill were not computed again.
    assert set(summary(tmp_path, 'other')['others']) >= {f'c0-{j}' for j in range(5)}


def test_claim_of_a_run_on_another_host_expires_by_heartbeat(tmp_path: Path) -> None:
    state = tmp_path / 'state'
    # The pid is alive here, but the run says it is on another host: only
    # its heartbeat counts.
    fake_run(state, 'far-1', 'another-host.example', os.getpid(), 0.0, age=0.0, keys=['a', 'b'])
    book = ClaimBook(state, never_settled, heartbeat=0.2, expiry=1.5)
    book.open()
    try:
        first = book.claim(['a', 'b', 'c'])
        assert first.keys == ['c'] and first.deferred == ['a', 'b']
        time.sleep(1.7)
        later = book.poll(['a', 'b'])
        assert later.keys == ['a', 'b'] and not later.deferred
        assert book.claim(later.keys).keys == ['a', 'b']
    finally:
        book.close()


def test_claim_of_a_live_pid_on_this_host_holds_past_its_heartbeat(tmp_path: Path) -> None:
    state = tmp_path / 'state'
    me = psutil.Process()
    fake_run(state, 'here-1', socket.gethostname(), me.pid, me.create_time(), age=60.0, keys=['a'])
    book = ClaimBook(state, never_settled, heartbeat=0.2, expiry=1.0)
    book.open()
    try:
        assert book.claim(['a']).deferred == ['a']
        assert [v.state for v in read_runs(state) if v.run_id == 'here-1'] == ['live']
    finally:
        book.close()


def test_reused_pid_does_not_keep_a_dead_runs_claims(tmp_path: Path) -> None:
    state = tmp_path / 'state'
    me = psutil.Process()
    # Same pid, but the process started long after the run did.
    fake_run(state, 'here-2', socket.gethostname(), me.pid, me.create_time() - 3600, age=60.0, keys=['a'])
    book = ClaimBook(state, never_settled, heartbeat=0.2, expiry=1.0)
    book.open()
    try:
        assert book.claim(['a']).keys == ['a']
    finally:
        book.close()


def test_dead_runs_claims_on_this_host_show_as_expiring_then_dead() -> None:
    gone = {'run': 'x', 'host': socket.gethostname(), 'pid': 2**22 + 12345, 'state': 'running'}
    assert judge(gone, age=1.0, expiry=10.0).state == 'expiring'
    assert judge(gone, age=11.0, expiry=10.0).state == 'dead'
    assert judge({**gone, 'state': 'finished'}, age=0.0, expiry=10.0).state == 'ended'


def test_concurrent_takeover_of_a_dead_claim_has_one_winner(tmp_path: Path) -> None:
    for trial in range(3):
        root = tmp_path / f't{trial}'
        held = [f'c{i}-{j}' for i in range(4) for j in range(5)]
        fake_run(root / 'state', 'dead-1', 'gone-host.example', 1, 0.0, age=3600.0, keys=held)
        go = time.time() + 1.5
        procs = [start(root, f'r{n}', '--chunks', '4', '--item-time', '0', '--start-at', str(go)) for n in range(2)]
        finish(procs)
        counts = marker_counts(root)
        assert set(counts) == set(held)
        assert max(counts.values()) == 1, f'trial {trial}: {counts.most_common(3)}'


# -- the protocol in one process --------------------------------------------------


def test_ended_run_releases_its_claims_at_once(tmp_path: Path) -> None:
    done: set[str] = set()
    a = ClaimBook(tmp_path, lambda k: True if k in done else None, heartbeat=5.0, expiry=60.0)
    b = ClaimBook(tmp_path, lambda k: True if k in done else None, heartbeat=5.0, expiry=60.0)
    a.open()
    b.open()
    try:
        assert a.claim(['k1', 'k2']).keys == ['k1', 'k2']
        assert b.claim(['k1', 'k2']).deferred == ['k1', 'k2']
        done.add('k1')
        a.close('interrupted')  # k2 never computed
        polled = b.poll(['k1', 'k2'])
        assert polled.done_elsewhere == ['k1'] and polled.keys == ['k2']
    finally:
        b.close()


def test_settled_claim_is_released_on_disk(tmp_path: Path) -> None:
    book = ClaimBook(tmp_path, never_settled, heartbeat=5.0, expiry=60.0)
    book.open()
    got = book.claim(['x', 'y'])
    book.settle(['x'])
    assert book.held_keys == 1
    book.settle(['y'])
    data = json.loads((claims_dir(tmp_path) / f'{got.seq}.json').read_text())
    assert data['released'] is True and data['keys'] == ['x', 'y']
    book.close()


def test_cleanup_keeps_the_highest_claim_number(tmp_path: Path) -> None:
    book = ClaimBook(tmp_path, never_settled, heartbeat=5.0, expiry=60.0, keep_for=0.0)
    book.open()
    for n in range(4):
        book.settle(book.claim([f'k{n}']).keys)
    book.close('finished', cleanup=True)
    assert os.listdir(claims_dir(tmp_path)) == ['3.json']


def test_cleanup_keeps_recent_releases_for_runs_still_planning(tmp_path: Path) -> None:
    book = ClaimBook(tmp_path, never_settled, heartbeat=5.0, expiry=60.0)
    book.open()
    for n in range(3):
        book.settle(book.claim([f'k{n}']).keys)
    book.close('finished', cleanup=True)
    assert sorted(os.listdir(claims_dir(tmp_path))) == ['0.json', '1.json', '2.json']
    # A run that listed the stores before k0 was stored learns it from the claim.
    late = ClaimBook(tmp_path, lambda k: True, heartbeat=5.0, expiry=60.0)
    late.open()
    got = late.claim(['k0', 'k9'])
    assert got.keys == ['k9'] and got.done_elsewhere == ['k0']
    late.close()
    later = ClaimBook(tmp_path, never_settled, heartbeat=5.0, expiry=60.0)
    later.open()
    assert later.claim(['k9']).seq == 4
    later.close()


def test_claims_released_before_a_run_planned_cost_it_no_memory(tmp_path: Path) -> None:
    # A run interrupted after a million keys leaves its released claims
    # behind; the run that resumes planned after they were released, so
    # their keys are in its plan's counts already and must not be held.
    first = ClaimBook(tmp_path, never_settled, heartbeat=5.0, expiry=60.0)
    first.open()
    for n in range(5):
        first.settle(first.claim([f'c{n}-{j}' for j in range(1000)]).keys)
    first.close('interrupted')
    time.sleep(0.05)
    # Planned at once (Ctrl-C, then run again): this host's own clock needs no slack.
    resumed = ClaimBook(tmp_path, never_settled, heartbeat=5.0, expiry=60.0, planned_at=time.time())
    resumed.open()
    try:
        held = sum(len(claim.keys) for claim in resumed.others.values())
        assert held == 0, f'{held} keys of claims released before planning are held in memory'
        assert resumed.claim(['c0-0', 'new']).keys == ['c0-0', 'new']
        assert resumed.claim(['x']).seq == 6  # numbered after every claim on disk
    finally:
        resumed.close()


def test_claims_another_host_released_just_before_planning_still_count(tmp_path: Path) -> None:
    # Another host's clock may run ahead: a release stamped a second before
    # this run planned may really have come after its listing.
    fake_run(tmp_path, 'elsewhere-1', 'another-host', 4242, 0.0, 0.0, ['k1', 'k2'])
    claim = claims_dir(tmp_path) / '0.json'
    claim.write_text(json.dumps({'run': 'elsewhere-1', 'released': True, 'keys': ['k1', 'k2']}))
    planned = time.time()
    os.utime(claim, (planned - 1.0, planned - 1.0))
    book = ClaimBook(tmp_path, lambda k: True, heartbeat=5.0, expiry=60.0, planned_at=planned)
    book.open()
    try:
        assert book.claim(['k1', 'k3']).done_elsewhere == ['k1']
    finally:
        book.close()


def test_run_record_lists_its_claims_and_beats(tmp_path: Path) -> None:
    book = ClaimBook(tmp_path, never_settled, heartbeat=0.1, expiry=1.0, info={'workers': 3})
    book.open()
    try:
        book.claim(['a'])
        book.update(done=1, computed=1)
        time.sleep(0.4)
        (view,) = read_runs(tmp_path)
        assert view.state == 'live' and view.claims == [0]
        assert view.data['workers'] == 3 and view.data['host'] == socket.gethostname()
        assert view.age < 0.5
    finally:
        book.close()
    (view,) = read_runs(tmp_path)
    assert view.state == 'ended' and view.claims == []


def test_timings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('STASHWORKS_HEARTBEAT', '2')
    monkeypatch.setenv('STASHWORKS_CLAIM_EXPIRY', '30')
    assert claim_timings() == (2.0, 30.0)
    assert claim_timings(expiry=1.0) == (2.0, 6.0)  # at least three heartbeats
    monkeypatch.setenv('STASHWORKS_CLAIM_EXPIRY', 'soon')
    with pytest.raises(ValueError, match='STASHWORKS_CLAIM_EXPIRY'):
        claim_timings()


def test_shared_work_hands_out_only_units_nobody_else_holds(tmp_path: Path) -> None:
    done: set[str] = set()

    def settled(key: str) -> Optional[bool]:
        return True if key in done else None

    units = [f'u{n}' for n in range(10)]
    a = ClaimBook(tmp_path, settled, heartbeat=5.0, expiry=60.0)
    b = ClaimBook(tmp_path, settled, heartbeat=5.0, expiry=60.0)
    a.open()
    b.open()
    try:
        work_a, work_b = SharedWork(a, units, poll_interval=0.0), SharedWork(b, units, poll_interval=0.0)
        first = work_a.take(4)
        second = work_b.take(4)
        assert first == tuple(units[:4]) and second == tuple(units[4:8])
        assert work_b.deferred == units[:4]
        assert work_a.take(4) == tuple(units[8:])
        assert work_b.take(4) == () and work_b.waiting
        done.update(first)
        a.settle(first)
        assert work_b.take(4) == () and work_b.waiting  # units[8:] still held by a
        assert work_b.done_elsewhere == 4 and work_b.drain() == (4, 0)
        a.close('interrupted')  # gives units[8:] back unsettled
        assert work_b.take(4) == tuple(units[8:]) and not work_b.waiting
    finally:
        b.close()
