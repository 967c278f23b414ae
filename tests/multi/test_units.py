"""Unit identity and the unit log: real files, real processes, real SIGKILL."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from unittest import mock

import pytest

from stashworks.errors import BatchError
from stashworks.multi.units import (
    MemoryUnitLog,
    StaleItemsError,
    UnitLog,
    UnitRecord,
    check_on_stale,
    encode_block,
    keep_stale,
    parse_blocks,
    plan_units,
    unit_id,
    version_tag,
)


@dataclasses.dataclass(frozen=True)
class Doc:
    path: str
    tags: frozenset[str]


# -- identity ----------------------------------------------------------------


def test_str_int_and_path_units_are_their_own_str() -> None:
    assert unit_id('a/b') == 'a/b'
    assert unit_id(7) == '7'
    assert unit_id(Path('data') / 'x.txt') == os.path.join('data', 'x.txt')


def test_other_units_get_a_typed_digest() -> None:
    ident = unit_id(('a', 1))
    assert ident.startswith('tuple:') and len(ident) == len('tuple:') + 32
    assert unit_id(('a', 1)) == ident
    assert unit_id(('a', 2)) != ident
    assert unit_id(['a', 1]) != ident  # a list is another unit than a tuple
    assert unit_id((1.0,)) != unit_id((1,)) != unit_id((True,))


def test_equal_dicts_and_sets_get_one_id_whatever_their_order() -> None:
    assert unit_id({'a': 1, 'b': 2}) == unit_id({'b': 2, 'a': 1})
    assert unit_id({'x', 'y', 'z'}) == unit_id({'z', 'y', 'x'})
    # One string object shared twice or two equal copies: the same unit.
    shared = 'k' * 30
    assert unit_id((shared, shared)) == unit_id(('k' * 30, ''.join(['k'] * 30)))


def test_a_unit_that_refers_to_itself_is_a_clear_type_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match='identity'):
        unit_id(loop)


def test_unit_ids_agree_across_interpreter_runs_and_hash_seeds(tmp_path: Path) -> None:
    units = (
        "[('a', 1), {'b': {1, 2, 'x'}, 'a': [3.5, None]}, frozenset({'p', 'q'}), b'raw',"
        " test_units.Doc('d', frozenset({'x', 'y', 'z'}))]"
    )
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_units
        from stashworks.multi.units import unit_id
        print(json.dumps([unit_id(u) for u in {units}]))
        """
    )
    runs = []
    for seed in ('1', '2', '98765'):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1] == runs[2]
    assert len(set(runs[0])) == 5


# -- the log ------------------------------------------------------------------


def test_records_round_trip(tmp_path: Path) -> None:
    log = UnitLog(tmp_path / 'units')
    log.record('1', 'v1', ['1'])
    log.record('doc', 'v1', ['doc/0', 'doc/1', 'ünï\tcode\n'])
    log.record('empty', 'v1', [])
    log.record('old', 'v2', ['old'], kept_from='v1')
    got = UnitLog(tmp_path / 'units').read()
    assert got['1'].keys == ('1',)
    assert got['doc'].keys == ('doc/0', 'doc/1', 'ünï\tcode\n')
    assert got['empty'].keys == ()
    assert got['old'].kept_from == 'v1' and got['old'].version == 'v2'
    assert got['1'].kept_from is None
    assert isinstance(got['1'], UnitRecord)


def test_the_latest_record_of_a_unit_wins(tmp_path: Path) -> None:
    one, two = UnitLog(tmp_path), UnitLog(tmp_path)
    one.add('u', 'old', ['u'], when=100.0)
    two.add('u', 'new', ['u', 'u2'], when=200.0)
    two.flush()
    one.flush()  # written last, but recorded earlier
    assert UnitLog(tmp_path).read()['u'].version == 'new'


def test_buffered_records_are_one_write_and_not_on_disk_before_flush(tmp_path: Path) -> None:
    log = UnitLog(tmp_path)
    for i in range(5):
        log.add(str(i), 'v', [str(i)])
    assert UnitLog(tmp_path).read() == {}
    with mock.patch('stashworks.multi.units.os.write', wraps=os.write) as write:
        log.flush()
    assert write.call_count == 1
    assert sorted(UnitLog(tmp_path).read()) == ['0', '1', '2', '3', '4']


def test_every_torn_end_of_a_file_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    first = encode_block(['["a","v",null,1.0]', '["b","v",null,1.0]'])
    second = encode_block(['["c","v",null,2.0]', '["d","v",["d1","d2"],2.0]'])
    data = first + second
    for cut in range(len(first), len(data)):
        units = sorted(row[0] for row in parse_blocks(data[:cut]))
        assert units == ['a', 'b'], cut
    assert sorted(row[0] for row in parse_blocks(data)) == ['a', 'b', 'c', 'd']


def test_a_corrupt_block_is_skipped_not_raised(tmp_path: Path) -> None:
    good = encode_block(['["a","v",null,1.0]'])
    bad = bytearray(encode_block(['["b","v",null,1.0]']))
    bad[3] ^= 0xFF
    garbage = b'\x00\x00junk\n#12 zz\n'
    rows = parse_blocks(garbage + good + bytes(bad) + good.replace(b'"a"', b'"z"'))
    assert [r[0] for r in rows] == ['a']  # the z block's checksum no longer matches either


def test_after_a_failed_write_the_next_block_starts_on_a_new_line(tmp_path: Path) -> None:
    log = UnitLog(tmp_path)
    log.record('before', 'v', ['before'])
    real_write = os.write

    def half_then_full_disk(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, 'No space left on device')

    log.add('lost', 'v', ['lost'])
    with mock.patch('stashworks.multi.units.os.write', side_effect=half_then_full_disk), pytest.raises(OSError):
        log.flush()
    log.add('after', 'v', ['after'])
    log.flush()  # the disk has room again: the buffered records go out
    assert sorted(UnitLog(tmp_path).read()) == ['after', 'before', 'lost']


APPENDER = textwrap.dedent(
    """
    import sys
    from stashworks.multi.units import UnitLog
    path, name, blocks, per_block, pad = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    log = UnitLog(path)
    print('ready', flush=True)
    for b in range(blocks):
        for i in range(per_block):
            unit = f'{name}-{b}-{i}'
            log.add(unit, 'v', [unit + '/' + 'x' * pad, unit])
        log.flush()
    print('done', flush=True)
    """
)


def start_appender(path: Path, name: str, blocks: int, per_block: int, pad: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, '-c', APPENDER, str(path), name, str(blocks), str(per_block), str(pad)],
        stdout=subprocess.PIPE,
        text=True,
    )


def check_whole_blocks(records: dict[str, UnitRecord], name: str, per_block: int) -> int:
    """Every block of ``name`` is there entirely or not at all; returns how many are."""
    blocks: dict[int, int] = {}
    for unit, rec in records.items():
        owner, b, _ = unit.rsplit('-', 2)
        if owner != name:
            continue
        assert rec.keys[1] == unit and rec.keys[0].startswith(unit + '/')
        blocks[int(b)] = blocks.get(int(b), 0) + 1
    assert all(n == per_block for n in blocks.values()), blocks
    # Blocks are written in order: the ones read are the first ones.
    assert sorted(blocks) == list(range(len(blocks)))
    return len(blocks)


@pytest.mark.timeout(180)
def test_sigkill_in_the_middle_of_appending_leaves_a_readable_log(tmp_path: Path) -> None:
    # Blocks of ~10 MB, so a kill often lands inside os.write and leaves
    # a torn block (the kernel stops a write part way for a fatal signal).
    per_block, pad = 200, 50_000
    read_counts: dict[str, int] = {}
    torn = 0
    for attempt in range(40):
        name = f'w{attempt}'
        proc = start_appender(tmp_path, name, blocks=50, per_block=per_block, pad=pad)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == 'ready'
        time.sleep(0.05 + 0.02 * (attempt % 10))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        records = UnitLog(tmp_path).read()
        read_counts[name] = check_whole_blocks(records, name, per_block)
        torn = sum(1 for f in UnitLog(tmp_path).files() if not f.read_bytes().endswith(b'\n'))
        if torn >= 1:
            break
    assert torn >= 1, 'no kill landed inside a write: the torn case was not exercised'
    # The log stays appendable: a new writer after the kills is read too.
    UnitLog(tmp_path).record('later', 'v', ['later'])
    records = UnitLog(tmp_path).read()
    assert records.pop('later').keys == ('later',)
    for name, count in read_counts.items():
        assert check_whole_blocks(records, name, per_block) == count


@pytest.mark.timeout(120)
def test_concurrent_appenders_lose_nothing(tmp_path: Path) -> None:
    procs = [start_appender(tmp_path, f'p{n}', blocks=40, per_block=50) for n in range(4)]
    for proc in procs:
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0 and out.split() == ['ready', 'done']
    records = UnitLog(tmp_path).read()
    assert len(records) == 4 * 40 * 50
    for n in range(4):
        assert check_whole_blocks(records, f'p{n}', 50) == 40
    # One file per writer: none was shared.
    assert len(UnitLog(tmp_path).files()) == 4


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs fork')
def test_a_forked_child_writes_a_file_of_its_own(tmp_path: Path) -> None:
    log = UnitLog(tmp_path)
    log.record('parent-1', 'v', ['parent-1'])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            log.record('child', 'v', ['child'])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    log.record('parent-2', 'v', ['parent-2'])
    assert sorted(UnitLog(tmp_path).read()) == ['child', 'parent-1', 'parent-2']
    assert len(log.files()) == 2


def test_a_pickled_log_writes_its_own_file(tmp_path: Path) -> None:
    log = UnitLog(tmp_path, durable=True)
    log.record('a', 'v', ['a'])
    copy = pickle.loads(pickle.dumps(log))
    assert copy.durable and copy.path == log.path
    copy.record('b', 'v', ['b'])
    assert sorted(UnitLog(tmp_path).read()) == ['a', 'b']


def test_clear_removes_every_record(tmp_path: Path) -> None:
    log = UnitLog(tmp_path / 'units')
    log.record('a', 'v', ['a'])
    UnitLog(tmp_path / 'units').record('b', 'v', ['b'])
    log.clear()
    assert UnitLog(tmp_path / 'units').read() == {}
    log.record('c', 'v', ['c'])
    assert list(UnitLog(tmp_path / 'units').read()) == ['c']


def test_beside_puts_the_log_in_the_state_folder(tmp_path: Path) -> None:
    assert UnitLog.beside(tmp_path).path == tmp_path / '.stashworks' / 'units'
    assert UnitLog(tmp_path / 'never-written').read() == {}


def test_the_memory_log_behaves_like_the_file_log() -> None:
    log = MemoryUnitLog()
    log.record('a', 'v', ['a', 'a2'])
    log.add('b', 'v', [])
    assert sorted(log.read()) == ['a']
    log.flush()
    assert log.read()['b'].keys == ()
    copy = pickle.loads(pickle.dumps(log))
    assert sorted(copy.read()) == ['a', 'b']
    log.clear()
    assert log.read() == {}


# -- the census of a batch's units ---------------------------------------------


def members(keys: set[str]) -> Callable[[Sequence[str]], list[bool]]:
    return lambda ks: [k in keys for k in ks]


def test_one_key_units_take_the_store_as_the_truth() -> None:
    stored = {'a', 'b', 'c', 'other-batch', 'k'}
    rows = {
        'b': ['b', 'old', None, 1.0],
        'c': ['c', 'v', None, 1.0],
        'gone': ['gone', 'v', None, 1.0],
        'k': ['k', 'v', None, 2.0, 'old'],
    }
    work = [(u, None) for u in ('a', 'b', 'c', 'gone', 'bad', 'new', 'a', 'k')]
    plan = plan_units(work, members(stored), members({'bad'}), 'v', rows, one_key=True)
    # a: no record, counts as current; gone: recorded but deleted by hand;
    # the folder's other item is not the batch's.
    assert plan.missing == ['gone', 'new']
    assert plan.stale == {'b': ('old', ('b',))}
    assert plan.payload is None
    assert plan.census.as_dict() == {
        'version': 'v',
        'units': 7,
        'done_units': 3,
        'done_items': 3,
        'stale_units': 1,
        'stale_items': 1,
        'stale_versions': {'old': 1},
        'failed_units': 1,
        'missing_units': 2,
        'kept_units': 1,
    }


def test_the_one_key_fast_path_reads_no_record() -> None:
    plan = plan_units([('a', None), ('b', None)], members({'a'}), members(set()), 'v', None, one_key=True)
    assert plan.missing == ['b'] and plan.census.done_units == 1


def test_many_key_units_need_a_record_and_every_recorded_item() -> None:
    stored = {'d/0', 'd/1', 'e/0', 'f/0', 'f/1', 'half/0', 'half'}
    rows = {
        'd': ['d', 'v', ['d/0', 'd/1'], 1.0],
        'e': ['e', 'v', ['e/0', 'e/1'], 1.0],  # e/1 was deleted
        'f': ['f', 'old', ['f/0', 'f/1'], 1.0],
        'none': ['none', 'v', [], 1.0],
    }
    work = [(u, ('unit', u)) for u in ('d', 'e', 'f', 'none', 'half', 'bad')]
    plan = plan_units(work, members(stored), members({'bad'}), 'v', rows, one_key=False)
    # half: items (even one under its own id) but no record: interrupted
    # half way, so computed again.
    assert plan.missing == ['e', 'half']
    assert plan.stale == {'f': ('old', ('f/0', 'f/1'))}
    assert plan.payload == {'e': ('unit', 'e'), 'half': ('unit', 'half'), 'f': ('unit', 'f')}
    c = plan.census
    assert (c.done_units, c.done_items, c.stale_units, c.stale_items, c.failed_units, c.missing_units) == (
        2,
        2,
        1,
        2,
        1,
        2,
    )


def test_a_folder_with_no_record_at_all_counts_units_stored_under_their_id() -> None:
    # Written before units were recorded: an item under the unit's id is
    # taken as the unit's one item.
    plan = plan_units([('a', None), ('b', None)], members({'a'}), members(set()), 'v', {}, one_key=False)
    assert plan.missing == ['b'] and plan.census.done_units == 1


def test_a_unit_id_that_is_not_a_str_is_a_type_error() -> None:
    with pytest.raises(BatchError, match='#1 is not a str but int'):
        plan_units([('a', None), (1, None)], members(set()), members(set()), 'v', None, one_key=True)  # type: ignore[list-item]


class Name(str):
    """A ``str`` subclass, as a data frame's column gives (``numpy.str_``)."""


@pytest.mark.parametrize('one_key', [True, False])
@pytest.mark.parametrize('recorded', [False, True])
def test_unit_ids_of_a_str_subclass_are_planned_as_str(tmp_path: Path, one_key: bool, recorded: bool) -> None:
    rows: Any = None if one_key else {}
    if recorded:
        log = UnitLog(tmp_path)
        log.record('a', 'v', ['a'])
        rows = log.latest_rows()
    work = [(Name('a'), None), (Name('b'), None), (Name('a'), None)]
    plan = plan_units(work, members({'a'}), members(set()), 'v', rows, one_key=one_key)
    assert plan.missing == ['b']
    assert (plan.census.units, plan.census.done_units, plan.census.missing_units) == (2, 1, 1)
    with pytest.raises(BatchError, match='#2 is not a str but int'):
        plan_units([*work[:2], (3, None)], members(set()), members(set()), 'v', rows, one_key=one_key)  # type: ignore[list-item]


def test_keep_stale_records_the_choice(tmp_path: Path) -> None:
    log = UnitLog(tmp_path)
    log.record('f', 'old', ['f/0', 'f/1'])
    rows = log.latest_rows()
    plan = plan_units([('f', None)], members({'f/0', 'f/1'}), members(set()), 'new', rows, one_key=False)
    assert plan.census.stale_items == 2
    assert keep_stale(log, plan, 'new') == 1
    assert plan.census.done_items == 2 and plan.census.stale_units == 0 and plan.census.kept_units == 1
    rec = UnitLog(tmp_path).read()['f']
    assert (rec.version, rec.kept_from, rec.keys) == ('new', 'old', ('f/0', 'f/1'))
    again = plan_units([('f', None)], members({'f/0', 'f/1'}), members(set()), 'new', log.latest_rows(), False)
    assert again.census.done_units == 1 and again.census.kept_units == 1 and not again.stale


def test_file_names_tell_which_versions_were_recorded(tmp_path: Path) -> None:
    log = UnitLog(tmp_path)
    assert log.only('v1')  # nothing recorded yet
    log.record('a', 'v1', ['a'])
    assert UnitLog(tmp_path).only('v1') and not UnitLog(tmp_path).only('v2')
    log.record('b', 'v2', ['b'])
    assert UnitLog(tmp_path).versions_on_disk() == {version_tag('v1'), version_tag('v2')}
    assert len(log.files()) == 2  # one file per version


def test_prune_removes_only_files_whose_every_record_was_superseded(tmp_path: Path) -> None:
    old = UnitLog(tmp_path)
    old.add('a', 'v1', ['a'], when=1.0)
    old.add('b', 'v1', ['b'], when=1.0)
    old.flush()
    older = UnitLog(tmp_path)
    older.record('c', 'v0', ['c'])
    new = UnitLog(tmp_path)
    new.add('a', 'v2', ['a'], when=2.0)
    new.flush()
    assert UnitLog(tmp_path).prune('v2') == 0  # b is still v1's, c v0's
    new.add('b', 'v2', ['b'], when=2.0, kept_from='v1')
    new.flush()
    assert UnitLog(tmp_path).prune('v2') == 1  # v1's file: all superseded
    assert UnitLog(tmp_path).versions_on_disk() == {version_tag('v0'), version_tag('v2')}
    got = UnitLog(tmp_path).read()
    assert {u: r.version for u, r in got.items()} == {'a': 'v2', 'b': 'v2', 'c': 'v0'}
    assert got['b'].kept_from == 'v1'


def test_the_stale_error_says_how_many_which_versions_and_the_ways_on() -> None:
    err = StaleItemsError('v3', units=2, items=5, versions={'v1': 3, 'v2': 2}, where='out/')
    text = str(err)
    for part in ('5 items of 2 units in out/', 'v1 (3 items), v2 (2 items)', 'v3', "on_stale='recompute'"):
        assert part in text
    assert "on_stale='keep'" in text and '--on-stale recompute|keep' in text
    assert isinstance(err, BatchError) and isinstance(err, RuntimeError)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == text and copy.versions == {'v1': 3, 'v2': 2}
    with pytest.raises(ValueError, match='on_stale'):
        check_on_stale('ignore')


# -- one job, several threads (a Dask worker runs chunks of one job in its threads) --


def test_a_job_shared_by_threads_records_every_unit_with_its_own_items(tmp_path: Path) -> None:
    import threading

    from stashworks import DirectoryStash
    from stashworks.multi.failures import FailureStash
    from stashworks.multi.unitjob import UnitJob
    from stashworks.multi.wire import Chunk

    def pages(unit: str) -> Iterator[tuple[str, int]]:
        for i in range(3):
            yield f'{unit}.p{i}', i

    log = UnitLog(tmp_path / 'units')
    job = UnitJob(DirectoryStash(tmp_path / 'out'), FailureStash(tmp_path / 'failures'), pages, 'expand', 'v', log)
    units = [f'u{i:04d}' for i in range(2000)]
    errors: list[BaseException] = []

    def run(first: int) -> None:
        try:
            for n in range(first, len(units), 8):
                job.run_chunk(Chunk(n, tuple(units[n : n + 2])))
        except BaseException as exc:  # reported below
            errors.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave between any two bytecodes
    try:
        threads = [threading.Thread(target=run, args=(first,)) for first in range(0, 8, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(switch)

    assert errors == []
    records = UnitLog(tmp_path / 'units').read()
    assert sorted(records) == units
    wrong = {u: r.keys for u, r in records.items() if r.keys != (f'{u}.p0', f'{u}.p1', f'{u}.p2')}
    assert wrong == {}
