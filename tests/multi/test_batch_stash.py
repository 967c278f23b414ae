"""What a batch stash promises: prime on read, resume, failures are data.

These run with the serial executor (in this process) where the behaviour
does not depend on processes, so they are fast; the process pool has its
own tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest
from batch_jobs import Work, computations, keys

from stashworks import (
    BatchError,
    DirectoryStash,
    MultiProcessFactoryStash,
    MultiProcessStash,
    SerialExecutor,
    Stash,
    StashReadOnlyError,
)
from stashworks.multi import BatchEvent, Chunk, ChunkReport, Executor, FailureRecord, read_status
from stashworks.multi.job import Job

pytestmark = pytest.mark.timeout(30)


def serial_stash(tmp_path: Path, work: Any, n: int = 10, **kw: Any) -> MultiProcessFactoryStash:
    return MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'), factory=work, keys=keys(n), executor=SerialExecutor(), progress=False, **kw
    )


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / 'markers'
    path.mkdir()
    return path


class NoStart(Executor):
    """An executor that must not be used."""

    def start(self, job: Job, workers: int) -> None:
        raise AssertionError('the batch started an executor')

    def submit(self, chunk: Chunk) -> None:
        raise AssertionError('the batch submitted a chunk')

    def reports(self, timeout: float | None = None) -> Iterator[ChunkReport]:
        raise AssertionError('the batch read reports')

    def shutdown(self, cancel: bool = False) -> None:
        pass


class MemoryStash(Stash):
    """A stash in this process's memory, as a DictionaryStash is."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def load(self, key: str) -> Any:
        return self.data[key]

    def dump(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys(self) -> Iterable[str]:
        return list(self.data)


@pytest.mark.parametrize(
    'read',
    [
        lambda s: s['k001'],
        lambda s: s.get('k001'),
        lambda s: list(s.keys()),
        lambda s: len(s),
        lambda s: list(s),
        lambda s: 'k001' in s,
    ],
    ids=['getitem', 'get', 'keys', 'len', 'iter', 'contains'],
)
def test_any_read_primes_first(tmp_path: Path, read: Any) -> None:
    stash = serial_stash(tmp_path, Work())
    read(stash)
    assert len(DirectoryStash(tmp_path / 'out')) == 10


def test_values_come_from_the_factory(tmp_path: Path) -> None:
    stash = serial_stash(tmp_path, lambda k: k * 2, n=3)
    assert dict(stash) == {'k000': 'k000k000', 'k001': 'k001k001', 'k002': 'k002k002'}


def test_prime_returns_the_counts(tmp_path: Path) -> None:
    result = serial_stash(tmp_path, Work(fail=('k004',))).prime()
    assert (result.total, result.done_before, result.computed, result.failed) == (10, 0, 9, 1)
    assert not result.interrupted
    assert '9 computed now' in str(result) and '1 failed' in str(result)


def test_a_run_computes_only_missing_keys(tmp_path: Path, markers: Path) -> None:
    out = DirectoryStash(tmp_path / 'out')
    for key in keys(10)[:6]:
        out[key] = 'old'
    result = serial_stash(tmp_path, Work(markers)).prime()
    assert (result.done_before, result.computed) == (6, 4)
    assert sorted(computations(markers)) == keys(10)[6:]
    assert out['k000'] == 'old'


def test_priming_a_complete_stash_starts_no_executor(tmp_path: Path) -> None:
    serial_stash(tmp_path, Work()).prime()
    out = DirectoryStash(tmp_path / 'out')
    again = MultiProcessFactoryStash(out, factory=Work(), keys=keys(10), executor=NoStart())
    result = again.prime()
    assert (result.done_before, result.computed, result.workers) == (10, 0, 0)


def test_prime_runs_once_per_stash_object(tmp_path: Path, markers: Path) -> None:
    stash = serial_stash(tmp_path, Work(markers))
    stash.prime()
    stash.delegate.delete('k000')  # behind its back
    stash.prime()
    assert computations(markers)['k000'] == 1
    stash.invalidate()
    stash.prime()
    assert computations(markers)['k000'] == 2


def test_failures_are_recorded_with_tracebacks_not_stored_as_values(tmp_path: Path) -> None:
    bad = ('k003', 'k050', 'k097')
    stash = serial_stash(tmp_path, Work(fail=bad), n=100)
    result = stash.prime()
    assert result.failed == 3 and result.computed == 97
    assert sorted(stash.failures.keys()) == list(bad)
    for key in bad:
        assert key not in stash
        record = stash.failures[key]
        assert (record.key, record.error_type) == (key, 'ValueError')
        assert record.message == f'cannot compute {key}'
        assert 'Traceback (most recent call last)' in record.traceback
        assert 'raise ValueError' in record.traceback
        assert record.pid > 0 and record.time.endswith('+00:00')


def test_failure_records_are_json_files_next_to_the_delegate(tmp_path: Path) -> None:
    serial_stash(tmp_path, Work(fail=('k002',))).prime()
    data = json.loads((tmp_path / 'out' / '.stashworks' / 'failures' / 'k002.json').read_text())
    assert FailureRecord.from_dict(data).error_type == 'ValueError'
    assert set(data) >= {'key', 'error_type', 'message', 'traceback', 'worker', 'pid', 'time', 'attempts'}


def test_a_rerun_does_not_retry_recorded_failures(tmp_path: Path, markers: Path) -> None:
    serial_stash(tmp_path, Work(markers, fail=('k001', 'k002'))).prime()
    result = serial_stash(tmp_path, Work(markers)).prime()
    assert (result.computed, result.failed_before) == (0, 2)
    assert computations(markers)['k001'] == 1


def test_retry_failures_recomputes_them(tmp_path: Path, markers: Path) -> None:
    serial_stash(tmp_path, Work(markers, fail=('k001', 'k002'))).prime()
    stash = serial_stash(tmp_path, Work(markers))
    result = stash.retry_failures()
    assert (result.computed, result.failed) == (2, 0)
    assert len(stash.failures) == 0
    assert stash['k001'] == 'value-k001'


def test_failures_view_is_read_only(tmp_path: Path) -> None:
    stash = serial_stash(tmp_path, Work(fail=('k001',)))
    stash.prime()
    with pytest.raises(StashReadOnlyError):
        stash.failures.delete('k001')


def test_a_key_that_is_not_a_str_is_named(tmp_path: Path) -> None:
    stash = MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'), factory=Work(), keys=['a', 7], executor=SerialExecutor()
    )
    with pytest.raises(BatchError, match=r'#1 .*int: 7'):
        stash.prime()


def test_an_in_memory_delegate_with_a_process_pool_is_refused(tmp_path: Path) -> None:
    stash = MultiProcessFactoryStash(MemoryStash(), factory=Work(), keys=keys(3), progress=False)
    with pytest.raises(BatchError, match=r'memory of this process.*DirectoryStash'):
        stash.prime()


def test_an_in_memory_delegate_works_with_the_serial_executor() -> None:
    delegate = MemoryStash()
    stash = MultiProcessFactoryStash(delegate, factory=Work(fail=('k001',)), keys=keys(3), executor='serial')
    assert sorted(stash.keys()) == ['k000', 'k002']
    assert list(stash.failures.keys()) == ['k001']


def test_a_callable_factory_needs_keys(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match='keys='):
        MultiProcessFactoryStash(DirectoryStash(tmp_path), factory=Work())


def test_a_factory_stash_gives_the_keys_and_computes(tmp_path: Path) -> None:
    class Squares(Stash):
        def load(self, key: str) -> int:
            return int(key) ** 2

        def dump(self, key: str, value: Any) -> None:
            raise NotImplementedError

        def delete(self, key: str) -> None:
            raise NotImplementedError

        def keys(self) -> list[str]:
            return [str(i) for i in range(5)]

    stash = MultiProcessFactoryStash(DirectoryStash(tmp_path / 'out'), factory=Squares(), executor='serial')
    assert dict(stash) == {'0': 0, '1': 1, '2': 4, '3': 9, '4': 16}


def test_subclass_form_computes_units_by_chunk(tmp_path: Path) -> None:
    class Lengths(MultiProcessStash):
        def _create_data(self) -> Iterable[str]:
            return ['a', 'bb', 'ccc']

        def _process(self, chunk: list[str]) -> Iterable[tuple[str, int]]:
            for word in chunk:
                yield word, len(word)

    stash = Lengths(DirectoryStash(tmp_path / 'out'), executor='serial')
    assert dict(stash) == {'a': 1, 'bb': 2, 'ccc': 3}


def test_subclass_form_isolates_a_failing_unit_of_its_chunk(tmp_path: Path) -> None:
    class Inverse(MultiProcessStash):
        def _create_data(self) -> Iterable[int]:
            return [1, 0, 4]

        def _key_of(self, unit: int) -> str:
            return str(unit)

        def _process(self, chunk: list[int]) -> Iterable[tuple[str, float]]:
            for n in chunk:
                yield str(n), 1 / n

    stash = Inverse(DirectoryStash(tmp_path / 'out'), executor='serial', chunk_size=3)
    assert dict(stash) == {'1': 1.0, '4': 0.25}
    assert stash.failures['0'].error_type == 'ZeroDivisionError'


def test_events_report_each_item_and_the_end(tmp_path: Path) -> None:
    events: list[BatchEvent] = []
    serial_stash(tmp_path, Work(fail=('k001',)), n=4, on_event=events.append).prime()
    kinds = [e.kind for e in events]
    assert kinds[0] == 'start' and kinds[-1] == 'finish'
    items = [(e.key, e.ok) for e in events if e.kind == 'item']
    assert sorted(items) == [('k000', True), ('k001', False), ('k002', True), ('k003', True)]
    assert events[-1].done == 3 and events[-1].failed == 1 and events[-1].result.computed == 3


def test_status_file_after_a_batch(tmp_path: Path) -> None:
    serial_stash(tmp_path, Work(fail=('k001',))).prime()
    status = read_status(tmp_path / 'out')
    assert status is not None
    assert status['state'] == 'finished'
    assert (status['total'], status['done_before'], status['done'], status['failed']) == (10, 0, 9, 1)
    assert status['executor'] == 'serial (in process)'
    assert set(status) >= {'pid', 'host', 'started', 'updated', 'rate', 'eta_seconds', 'workers'}


def test_status_file_while_running(tmp_path: Path) -> None:
    seen: list[dict[str, Any] | None] = []

    def look(event: BatchEvent) -> None:
        if event.kind == 'item' and not seen:
            seen.append(read_status(tmp_path / 'out'))

    serial_stash(tmp_path, Work(), on_event=look).prime()
    status = seen[0]
    assert status is not None and status['state'] == 'running' and status['total'] == 10


def test_read_status_without_a_batch_is_none(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
