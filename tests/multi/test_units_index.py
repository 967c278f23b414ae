"""The index of the unit log: a cache of the latest records, checked against the log's own files.

Real files, real processes, real SIGKILL; mocks only to inject a fault
(a folder that refuses the index) or to count what a read opens.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from unittest import mock

import pytest
from batch_jobs import mark_unit, unit_computations

from stashworks import DictionaryStash, DirectoryStash, MultiProcessFactoryStash
from stashworks.multi import units as units_module
from stashworks.multi.plan import Membership
from stashworks.multi.units import (
    INDEX_FILE,
    LatestRows,
    UnitLog,
    UnitRecord,
    encode_block,
    latest_rows,
    plan_units,
    to_record,
)


def full_read(path: Path) -> dict[str, UnitRecord]:
    """The latest record of each unit from every file, record by record, with no index."""
    rows: dict[str, Sequence[Any]] = {}
    latest_rows(UnitLog(path).rows(), rows)
    return {unit: to_record(row) for unit, row in rows.items()}


class Opened:
    """Counts what a read parses: the files and how many bytes of each."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.real = units_module.parse_blocks_to

    def __call__(self, data: bytes) -> Any:
        self.sizes.append(len(data))
        return self.real(data)


def parsed(path: Path) -> tuple[dict[str, UnitRecord], list[int]]:
    """A read of the log (index and all) and the bytes it parsed, per file."""
    spy = Opened()
    with mock.patch.object(units_module, 'parse_blocks_to', spy):
        got = UnitLog(path).read()
    return got, spy.sizes


def varied_records(path: Path) -> None:
    """Records of every shape: versions, kept items, no item, many, odd keys."""
    a, b = UnitLog(path), UnitLog(path)
    a.add('one', 'v1', ['one'], when=10.0)
    a.add('other-key', 'v1', ['other-key/0'], when=10.0)
    a.add('many', 'v1', ['many/0', 'many/1', 'ünï\tcode\n'], when=10.0)
    a.add('none', 'v1', [], when=10.0)
    a.add('old', 'v0', ['old'], when=5.0)
    a.add('surrogate\udcff', 'v1', ['k\udcff'], when=10.0)
    b.add('old', 'v1', ['old'], kept_from='v0', when=20.0)
    b.add('moved', 'v0', ['moved'], when=1.0)
    a.flush()
    b.flush()
    a.add('moved', 'v1', ['moved/0', 'moved/1'], when=30.0)
    a.flush()


# -- what the index holds --------------------------------------------------------


def test_a_read_from_the_index_equals_a_read_of_every_record(tmp_path: Path) -> None:
    varied_records(tmp_path)
    expected = full_read(tmp_path)
    assert UnitLog(tmp_path).compact() == len(expected) == 7
    assert (tmp_path / INDEX_FILE).is_file()

    got, sizes = parsed(tmp_path)

    assert got == expected
    assert sizes == []  # nothing was appended since: no log file was read
    assert got['old'].kept_from == 'v0' and got['moved'].keys == ('moved/0', 'moved/1')
    assert got['none'].keys == () and got['surrogate\udcff'].keys == ('k\udcff',)
    rows = UnitLog(tmp_path).latest_rows()
    assert rows and rows.versions() == {'v1'} and not UnitLog(tmp_path / 'empty').latest_rows()


def test_records_appended_after_the_index_are_read_on_top_and_only_they(tmp_path: Path) -> None:
    writer = UnitLog(tmp_path)
    for n in range(50):
        writer.add(f'u{n}', 'v', [f'u{n}/0'])
    writer.flush()
    UnitLog(tmp_path).compact()
    covered = sum(f.stat().st_size for f in UnitLog(tmp_path).files())

    writer.add('late', 'v', ['late/0'])  # the covered file grows
    writer.add('u3', 'v2', ['u3/0', 'u3/1'])  # a newer record of an indexed unit
    writer.flush()
    UnitLog(tmp_path).record('new-writer', 'v', ['new-writer/0'])  # a file the index never saw

    got, sizes = parsed(tmp_path)

    assert got == full_read(tmp_path)
    assert got['u3'].version == 'v2' and 'late' in got and 'new-writer' in got
    total = sum(f.stat().st_size for f in UnitLog(tmp_path).files())
    # The grown file, the v2 file of the same writer, the new writer's: only their new bytes.
    assert len(sizes) == 3 and sum(sizes) == total - covered


def test_the_latest_record_wins_across_the_index_and_what_follows(tmp_path: Path) -> None:
    first = UnitLog(tmp_path)
    first.add('u', 'new', ['u'], when=200.0)
    first.add('w', 'old', ['w'], when=100.0)
    first.flush()
    UnitLog(tmp_path).compact()
    late = UnitLog(tmp_path)
    late.add('u', 'old', ['u'], when=150.0)  # written after the index, recorded before
    late.add('w', 'new', ['w', 'w2'], when=150.0)
    late.flush()

    got = UnitLog(tmp_path).read()

    assert got == full_read(tmp_path)
    assert (got['u'].version, got['w'].version, got['w'].keys) == ('new', 'new', ('w', 'w2'))


def test_a_big_read_beyond_the_index_writes_a_new_one(tmp_path: Path) -> None:
    writer = UnitLog(tmp_path)
    writer.record('a', 'v', ['a'])
    assert UnitLog(tmp_path).read() and not (tmp_path / INDEX_FILE).exists()  # a small log: no index
    for n in range(units_module.COMPACT_ROWS):
        writer.add(f'u{n}', 'v', [f'u{n}'])
    writer.flush()

    assert len(UnitLog(tmp_path).latest_rows()) == units_module.COMPACT_ROWS + 1

    assert (tmp_path / INDEX_FILE).is_file()
    got, sizes = parsed(tmp_path)
    assert sizes == [] and len(got) == units_module.COMPACT_ROWS + 1


# -- an index that no longer fits the files ---------------------------------------


def test_an_index_covering_a_removed_file_is_not_used(tmp_path: Path) -> None:
    UnitLog(tmp_path).record('gone', 'v', ['gone'])
    UnitLog(tmp_path).record('kept', 'v', ['kept'])
    UnitLog(tmp_path).compact()
    gone_file = next(f for f in UnitLog(tmp_path).files() if b'"gone"' in f.read_bytes())
    gone_file.unlink()  # as prune() or a hand would

    assert sorted(UnitLog(tmp_path).read()) == ['kept']


def test_clear_removes_the_index_with_the_records(tmp_path: Path) -> None:
    log = UnitLog(tmp_path)
    log.record('a', 'v', ['a'])
    log.compact()
    log.clear()
    assert not (tmp_path / INDEX_FILE).exists()
    UnitLog(tmp_path).record('b', 'v', ['b'])
    assert sorted(UnitLog(tmp_path).read()) == ['b']


def test_prune_writes_an_index_of_what_is_left(tmp_path: Path) -> None:
    old = UnitLog(tmp_path)
    old.add('a', 'v1', ['a'], when=1.0)
    old.flush()
    UnitLog(tmp_path).compact()
    new = UnitLog(tmp_path)
    new.add('a', 'v2', ['a'], when=2.0)
    new.flush()

    assert UnitLog(tmp_path).prune('v2') == 1

    got, sizes = parsed(tmp_path)
    assert {u: r.version for u, r in got.items()} == {'a': 'v2'}
    assert sizes == []  # the index was written again after the prune


def test_a_torn_or_altered_index_is_ignored(tmp_path: Path) -> None:
    varied_records(tmp_path)
    expected = full_read(tmp_path)
    UnitLog(tmp_path).compact()
    index = tmp_path / INDEX_FILE
    whole = index.read_bytes()
    rng = random.Random(11)
    for cut in sorted({0, 1, len(whole) - 1, *rng.sample(range(len(whole)), 40)}):
        index.write_bytes(whole[:cut])
        assert UnitLog(tmp_path).read() == expected, cut
    for at in rng.sample(range(len(whole)), 20):
        altered = bytearray(whole)
        altered[at] ^= 0x20
        index.write_bytes(bytes(altered))
        assert UnitLog(tmp_path).read() == expected, at


def test_a_block_half_written_when_the_index_was_made_is_read_once_whole(tmp_path: Path) -> None:
    first = encode_block(['["a","v",null,1.0]'])
    second = encode_block(['["b","v",["b/0","b/1"],2.0]'])
    file = tmp_path / f'host-1-{uuid.uuid4().hex[:8]}-{units_module.version_tag("v")}.log'
    file.write_bytes(first + second[:10])  # a writer in the middle of its os.write
    UnitLog(tmp_path).compact()
    assert sorted(UnitLog(tmp_path).read()) == ['a']

    with open(file, 'ab') as fh:
        fh.write(second[10:])

    got = UnitLog(tmp_path).read()
    assert sorted(got) == ['a', 'b'] and got['b'].keys == ('b/0', 'b/1')


def test_a_folder_that_refuses_the_index_is_still_read(tmp_path: Path) -> None:
    varied_records(tmp_path)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, 'Permission denied')

    with mock.patch('stashworks._atomic.atomic_write', refuse):
        assert UnitLog(tmp_path).compact() == 7
        assert UnitLog(tmp_path).read() == full_read(tmp_path)
    assert not (tmp_path / INDEX_FILE).exists()


COMPACTOR = textwrap.dedent(
    """
    import sys
    from stashworks.multi.units import UnitLog
    log = UnitLog(sys.argv[1])
    print('ready', flush=True)
    while True:
        log.compact()
    """
)


@pytest.mark.timeout(180)
def test_a_kill_while_the_index_is_written_leaves_the_old_index_or_the_new(tmp_path: Path) -> None:
    # A log big enough that writing its index takes a while, so kills land
    # in the middle of it; records keep arriving between the kills.
    writer = UnitLog(tmp_path)
    for n in range(30_000):
        writer.add(f'u{n}', 'v', [f'u{n}/0', f'u{n}/1'] if n % 3 else [f'u{n}'])
    writer.flush()
    rng = random.Random(5)
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, '-c', COMPACTOR, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == 'ready'
        time.sleep(0.1 + rng.random() * 0.4)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        writer.record(f'extra{attempt}', 'v', [f'extra{attempt}'])
        expected = full_read(tmp_path)
        assert UnitLog(tmp_path).read() == expected
        assert len(expected) == 30_000 + attempt + 1
    assert (tmp_path / INDEX_FILE).is_file()


# -- planning from the index --------------------------------------------------------


def members(keys: set[str]) -> Callable[[Sequence[str]], list[bool]]:
    return lambda ks: [k in keys for k in ks]


@pytest.mark.parametrize('seed', range(12))
def test_planning_from_the_index_agrees_with_planning_record_by_record(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    log = UnitLog(tmp_path)
    stored: set[str] = set()
    n = 300
    for i in range(n):
        uid = f'u{i}'
        if rng.random() < 0.2:
            continue  # never finished
        count = rng.choice([0, 1, 1, 1, 3]) if seed % 2 else 1
        keys = [uid] if count == 1 and rng.random() < 0.3 else [f'{uid}/{k}' for k in range(count)]
        kept = 'v0' if rng.random() < 0.05 else None
        log.add(uid, 'v', keys, kept_from=kept)
        stored.update(keys)
    log.flush()
    for key in rng.sample(sorted(stored), 5 if seed % 3 else 0):
        stored.discard(key)  # deleted by hand: their units are done no more
    failed = {f'u{i}' for i in rng.sample(range(n), 10)}
    work = [(f'u{i}', None if i % 5 else ('obj', i)) for i in range(n)]
    work += [(f'u{i}', None if i % 5 else ('obj', i)) for i in rng.sample(range(n), 40)]  # repeats
    rng.shuffle(work)
    if seed % 4 == 0:
        log.compact()  # from the index, or from the files alone: the same

    plain: dict[str, Sequence[Any]] = {}
    latest_rows(UnitLog(tmp_path).rows(), plain)
    # The engine asks real stores, through Membership: the planner then
    # takes the store's listing as a set.
    items = DictionaryStash()
    failures = DictionaryStash()
    for key in stored:
        items.dump(key, 1)
    for uid in failed:
        failures.dump(uid, 1)
    asked: list[tuple[Callable[[Sequence[str]], Sequence[bool]], ...]] = [
        (members(stored), members(failed)),
        (Membership(items), Membership(failures)),
    ]
    # Work much longer than the records too: a plan then takes it in several blocks.
    longer = work + [(f'z{i}', None if i % 3 else ('obj', i)) for i in range(1000)] + work[:50]
    for block, units in [(7, work), (64, work), (100_000, work), (7, longer), (400, longer)]:
        reference = plan_units(units, members(stored), members(failed), 'v', plain, one_key=False, block=block)
        for stored_in, failed_in in asked:
            rows = UnitLog(tmp_path).latest_rows()
            assert isinstance(rows, LatestRows)
            got = plan_units(units, stored_in, failed_in, 'v', rows, one_key=False, block=block)
            assert got.missing == reference.missing, block
            assert got.payload == reference.payload
            assert got.census == reference.census
            assert got.stale == reference.stale == {}


@pytest.mark.parametrize('deleted', [False, True])
def test_a_plan_from_the_index_lists_the_store_once(tmp_path: Path, deleted: bool) -> None:
    class Counted(DictionaryStash):
        listings = 0

        def keys(self) -> list[str]:
            Counted.listings += 1
            return list(super().keys())

    log = UnitLog(tmp_path)
    items = Counted()
    for i in range(100):
        log.add(f'u{i}', 'v', [f'u{i}/0', f'u{i}/1'])
        items.dump(f'u{i}/0', 1)
        items.dump(f'u{i}/1', 1)
    log.close()
    log.compact()
    if deleted:
        items.delete('u7/1')  # every block then asks about its own units' items
    work = [(f'u{i}', None) for i in range(120)]
    plan = plan_units(work, Membership(items), Membership(DictionaryStash()), 'v', log.latest_rows(), False, block=16)
    assert plan.missing == ([f'u{i}' for i in [7, *range(100, 120)]] if deleted else [f'u{i}' for i in range(100, 120)])
    assert plan.census.done_items == 200 - 2 * deleted
    assert Counted.listings == 1


# -- a whole batch ------------------------------------------------------------------------


class Pages:
    """``expand`` factory: unit ``u`` yields two items and leaves a marker per computation."""

    def __init__(self, markers: Path, sleep: float = 0.0) -> None:
        self.markers = markers
        self.sleep = sleep

    def __call__(self, unit: str) -> Iterator[tuple[str, str]]:
        mark_unit(self.markers, unit)
        for i in range(2):
            time.sleep(self.sleep)
            yield f'{unit}.{i}', f'{unit}-{i}'


def pages_of(units: list[str]) -> dict[str, str]:
    return {f'{u}.{i}': f'{u}-{i}' for u in units for i in range(2)}


def test_a_batch_that_ends_writes_the_index_and_the_next_plan_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(units_module, 'COMPACT_ROWS', 5)
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    units = [f'u{n:02d}' for n in range(20)]

    def batch(keys: list[str]) -> MultiProcessFactoryStash:
        return MultiProcessFactoryStash(
            DirectoryStash(out), Pages(markers), keys=keys, expand=True, executor='serial', progress=False
        )

    assert batch(units[:12]).prime().computed == 12
    index = out / '.stashworks' / 'units' / INDEX_FILE
    assert index.is_file()  # the census read at the end of the run wrote it
    assert parsed(out / '.stashworks' / 'units')[1] == []  # the index covers every record
    (out / 'u03.1.dat').unlink()  # an item deleted by hand

    stash = batch(units)
    result = stash.prime()

    assert (result.done_before, result.computed) == (11, 9)
    assert dict(DirectoryStash(out)) == pages_of(units)
    counts = unit_computations(markers)
    assert counts.pop('u03') == 2 and set(counts.values()) == {1}
    census = stash.census.as_dict()
    assert (census['units'], census['done_units'], census['done_items'], census['missing_units']) == (20, 20, 40, 0)
    assert batch(units).prime().computed == 0


PARENT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from test_units_index import Pages
    from stashworks import DictionaryStash, DirectoryStash, MultiProcessFactoryStash

    out, markers, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    stash = MultiProcessFactoryStash(
        DirectoryStash(out), Pages(markers, sleep=0.03), keys=[f'u{{i:03d}}' for i in range(n)],
        expand=True, workers=2, chunk_size=2, progress=False)
    print('READY', flush=True)
    stash.prime()
    print('DONE', flush=True)
    """
).format(here=str(Path(__file__).resolve().parent))


@pytest.mark.timeout(180)
def test_a_parent_killed_after_the_index_was_written_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The killed run's claims hold until they expire: a short expiry
    # keeps the test fast (claims are not what it is about).
    monkeypatch.setenv('STASHWORKS_HEARTBEAT', '0.2')
    monkeypatch.setenv('STASHWORKS_CLAIM_EXPIRY', '1')
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    first = [f'u{i:03d}' for i in range(10)]
    MultiProcessFactoryStash(
        DirectoryStash(out), Pages(markers), keys=first, expand=True, executor='serial', progress=False
    ).prime()
    assert UnitLog.beside(out).compact() == 10
    n = 40
    units = [f'u{i:03d}' for i in range(n)]
    proc = subprocess.Popen(
        [sys.executable, '-c', PARENT, str(out), str(markers), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == 'READY'
    deadline = time.monotonic() + 90
    while len(full_read(out / '.stashworks' / 'units')) < 16 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    time.sleep(1.0)  # the workers notice their parent's death and stop
    finished = set(UnitLog.beside(out).read())
    assert finished == set(full_read(out / '.stashworks' / 'units'))
    assert 16 <= len(finished) < n
    before = unit_computations(markers)

    result = MultiProcessFactoryStash(
        DirectoryStash(out), Pages(markers), keys=units, expand=True, workers=2, progress=False
    ).prime()

    assert result.done_before == len(finished)
    assert dict(DirectoryStash(out)) == pages_of(units)
    after = unit_computations(markers)
    for unit in finished:
        assert after[unit] == before[unit] == 1, unit  # a finished unit never again
    for unit in set(units) - finished:
        assert after[unit] == before.get(unit, 0) + 1, unit
    assert os.path.isfile(out / '.stashworks' / 'units' / INDEX_FILE)


@pytest.mark.parametrize('block', [2, 3, 100])
def test_a_unit_repeated_across_blocks_is_planned_once_with_the_object_it_first_came_with(
    tmp_path: Path, block: int
) -> None:
    log = UnitLog(tmp_path)
    for uid in ('a', 'b', 'c'):
        log.add(uid, 'v', [f'{uid}/0'])
    log.close()
    log.compact()
    stored = {'a/0', 'b/0', 'c/0'}
    # 'x' and 'a' come back later with other objects of the same identity.
    work = [('a', 'A1'), ('x', 'X1'), ('b', None), ('x', 'X2'), ('y', None), ('a', 'A2'), ('x', 'X3'), ('c', None)]
    plain: dict[str, Sequence[Any]] = {}
    latest_rows(UnitLog(tmp_path).rows(), plain)
    reference = plan_units(work, members(stored), members(set()), 'v', plain, one_key=False, block=block)
    got = plan_units(work, members(stored), members(set()), 'v', log.latest_rows(), one_key=False, block=block)
    assert got.missing == reference.missing == ['x', 'y']
    assert got.payload == reference.payload
    assert got.payload == {'x': 'X3' if block >= len(work) else 'X1'}  # the last of the block where it first came
    assert got.census == reference.census
    assert (got.census.units, got.census.done_units, got.census.missing_units) == (5, 3, 2)
