"""The local process pool: what travels to workers, and how they are used."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import psutil
import pytest
from batch_jobs import CountsUnpickling, Work, computations, keys, pids_by_key

from stashworks import DirectoryStash, MultiProcessFactoryStash, MultiProcessStash
from stashworks.multi import BatchEvent

pytestmark = pytest.mark.timeout(60)


def pool_stash(tmp_path: Path, factory: Any, n: int, start_method: str, **kw: Any) -> MultiProcessFactoryStash:
    kw.setdefault('workers', 2)
    kw.setdefault('progress', False)
    return MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'), factory=factory, keys=keys(n), start_method=start_method, **kw
    )


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / 'markers'
    path.mkdir()
    return path


def test_lambda_factory(tmp_path: Path, start_method: str) -> None:
    stash = pool_stash(tmp_path, lambda k: k[::-1], 6, start_method)
    assert stash['k001'] == '100k'


def test_closure_factory(tmp_path: Path, start_method: str) -> None:
    suffix = '!'

    def shout(key: str) -> str:
        return key.upper() + suffix

    stash = pool_stash(tmp_path, shout, 6, start_method)
    assert stash['k002'] == 'K002!'


def test_locally_defined_class_as_factory_and_value(tmp_path: Path, start_method: str) -> None:
    class Box:
        def __init__(self, key: str) -> None:
            self.key = key

        def __call__(self, key: str) -> str:
            return self.key + key

    stash = pool_stash(tmp_path, Box('<'), 4, start_method)
    assert stash['k003'] == '<k003'


def test_subclass_form_runs_in_worker_processes(tmp_path: Path, start_method: str) -> None:
    class Pids(MultiProcessStash):
        def _create_data(self) -> Iterable[str]:
            return keys(6)

        def _process(self, chunk: list[str]) -> Iterable[tuple[str, int]]:
            for key in chunk:
                yield key, os.getpid()

    stash = Pids(DirectoryStash(tmp_path / 'out'), workers=2, chunk_size=2, start_method=start_method, progress=False)
    pids = set(dict(stash).values())
    assert os.getpid() not in pids
    assert len(stash) == 6


def test_the_job_is_shipped_once_per_worker_not_per_chunk(tmp_path: Path, start_method: str) -> None:
    counts = tmp_path / 'unpickled'
    counts.mkdir()
    stash = pool_stash(tmp_path, CountsUnpickling(counts), 20, start_method, chunk_size=2)
    result = stash.prime()
    assert result.chunks == 10
    assert len(list(counts.iterdir())) == result.workers == 2


def test_progress_bar_starts_from_the_work_done_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = DirectoryStash(tmp_path / 'out')
    for key in keys(20)[:15]:
        out[key] = 'old'
    stash = pool_stash(tmp_path, Work(fail=('k016',)), 20, 'fork', progress=True)
    stash.prime()
    err = capsys.readouterr().err
    assert '15/20' in err  # the bar's first frame
    assert '20/20' in err
    assert 'failed=1' in err
    # The summary is logged once, not printed under the bar as well.
    assert 'computed now' not in err


def test_start_event_gives_total_and_initial(tmp_path: Path) -> None:
    out = DirectoryStash(tmp_path / 'out')
    out['k000'] = 'old'
    events: list[BatchEvent] = []
    pool_stash(tmp_path, Work(), 5, 'fork', on_event=events.append).prime()
    start = events[0]
    assert (start.kind, start.total, start.done) == ('start', 5, 1)
    assert sum(1 for e in events if e.kind == 'item') == 4


def test_item_events_arrive_before_their_chunk_ends(tmp_path: Path) -> None:
    order: list[str] = []
    pool_stash(
        tmp_path, Work(sleep=0.02), 4, 'fork', workers=1, chunk_size=4, on_event=lambda e: order.append(e.kind)
    ).prime()
    assert order.index('item') < order.index('chunk')


def test_memory_limit_recycles_a_worker_after_its_item(tmp_path: Path, start_method: str, markers: Path) -> None:
    # A 1-byte ceiling: every worker is over it after its first item.
    stash = pool_stash(tmp_path, Work(markers), 6, start_method, workers=1, chunk_size=3, memory_limit=1)
    result = stash.prime()
    assert len(stash.delegate.keys()) == 6
    assert (result.lost, result.failed) == (0, 0)  # recycling is not a death
    assert all(n == 1 for n in computations(markers).values())
    pids = pids_by_key(markers)
    assert len(set().union(*pids.values())) == 6  # one fresh worker per item


def test_max_items_per_worker(tmp_path: Path, start_method: str, markers: Path) -> None:
    stash = pool_stash(tmp_path, Work(markers), 8, start_method, workers=2, chunk_size=3, max_items_per_worker=2)
    stash.prime()
    assert len(stash.delegate.keys()) == 8
    per_pid: dict[int, int] = {}
    for key_pids in pids_by_key(markers).values():
        for pid in key_pids:
            per_pid[pid] = per_pid.get(pid, 0) + 1
    assert max(per_pid.values()) <= 2
    assert sum(per_pid.values()) == 8


def chunk_sizes(tmp_path: Path, work: Work, n: int) -> list[int]:
    events: list[BatchEvent] = []
    pool_stash(tmp_path, work, n, 'fork', on_event=events.append).prime()
    return [e.size for e in events if e.kind == 'submit']


def test_auto_chunking_spreads_slow_items(tmp_path: Path) -> None:
    sizes = chunk_sizes(tmp_path, Work(sleep=0.05), 24)
    assert len(sizes) >= 8
    assert max(sizes) <= 3  # 24 / (2 workers * 4)


def test_auto_chunking_batches_tiny_items(tmp_path: Path) -> None:
    sizes = chunk_sizes(tmp_path, Work(), 1200)
    assert max(sizes) >= 50
    assert len(sizes) < 120


def test_parent_memory_does_not_grow_with_items(tmp_path: Path) -> None:
    me = psutil.Process()
    rss: dict[int, int] = {}

    def sample(event: BatchEvent) -> None:
        if event.kind == 'item' and event.done in (1000, 5800):
            rss[event.done] = me.memory_info().rss

    big = 'x' * 5000  # each value is ~5 kB: 24 MB for these items if the parent kept them
    pool_stash(tmp_path, lambda k: big + k, 6000, 'fork', on_event=sample).prime()
    assert rss[5800] - rss[1000] < 8 * 1024 * 1024


def test_progress_off_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool_stash(tmp_path, Work(), 3, 'fork', progress=False).prime()
    assert capsys.readouterr().err == ''
