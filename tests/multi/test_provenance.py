"""Units of any type, many items per unit, per-unit completion, versions.

Integration tests of the batch stashes with real processes, real files and
real signals; computations are counted with marker files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import pytest
from batch_jobs import mark_unit, unit_computations

from stashworks import BatchError, DirectoryStash, MultiProcessFactoryStash, MultiProcessStash
from stashworks.multi.units import StaleItemsError, UnitLog, read_census, unit_id

HERE = Path(__file__).resolve().parent


class Documents(MultiProcessStash):
    """Units of several types; unit ``n`` yields ``n % 4`` items (0 to 3)."""

    def __init__(self, out: Path, markers: Path, units: list[Any], **options: Any) -> None:
        super().__init__(DirectoryStash(out), progress=False, **options)
        self.markers = markers
        self.units = units

    def _create_data(self) -> Iterable[Any]:
        return self.units

    def _process(self, chunk: list[Any]) -> Iterator[tuple[str, Any]]:
        for unit in chunk:
            uid = unit_id(unit)
            mark_unit(self.markers, uid.replace(':', '_'))
            for i in range(count_of(unit)):
                yield f'{uid}/{i}', (repr(unit), i)


def count_of(unit: Any) -> int:
    return len(repr(unit)) % 4


UNITS: list[Any] = [
    7,
    'doc-a',
    Path('corpus') / 'b.txt',
    ('pair', 2),
    {'id': 3, 'tags': ['x', 'y']},
    frozenset({1, 2}),  # ints: its repr, in the item, is the same in every process (str hashes are salted)
    12345,
    'doc-bb',
]


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / 'markers'
    path.mkdir()
    return path


def expected_items(units: list[Any]) -> dict[str, Any]:
    items = {}
    for unit in units:
        uid = unit_id(unit)
        for i in range(count_of(unit)):
            items[f'{uid}/{i}'] = (repr(unit), i)
    return items


# -- units of any type, any number of items ------------------------------------


@pytest.mark.parametrize('executor', ['serial', 'local'])
def test_units_of_several_types_yield_zero_one_or_many_items(tmp_path: Path, markers: Path, executor: str) -> None:
    counts = {count_of(u) for u in UNITS}
    assert {0, 1} <= counts and max(counts) >= 2  # the test covers 0, 1 and many
    stash = Documents(tmp_path / 'out', markers, UNITS, executor=executor, workers=2, chunk_size=3)
    result = stash.prime()
    assert (result.total, result.computed, result.failed) == (len(UNITS), len(UNITS), 0)
    assert dict(DirectoryStash(tmp_path / 'out')) == expected_items(UNITS)
    records = UnitLog.beside(tmp_path / 'out').read()
    assert set(records) == {unit_id(u) for u in UNITS}
    for unit in UNITS:
        rec = records[unit_id(unit)]
        assert list(rec.keys) == [f'{unit_id(unit)}/{i}' for i in range(count_of(unit))]
        assert rec.version == records[unit_id(UNITS[0])].version  # one version for the batch
    # A unit with no item is done too: the rerun computes nothing.
    again = Documents(tmp_path / 'out', markers, UNITS, executor=executor).prime()
    assert (again.done_before, again.computed) == (len(UNITS), 0)
    assert all(n == 1 for n in unit_computations(markers).values())


def test_a_deleted_item_sends_its_unit_back_and_only_it(tmp_path: Path, markers: Path) -> None:
    Documents(tmp_path / 'out', markers, UNITS, executor='serial').prime()
    many = next(u for u in UNITS if count_of(u) >= 2)
    DirectoryStash(tmp_path / 'out').delete(f'{unit_id(many)}/1')  # as `stashworks rm` does
    result = Documents(tmp_path / 'out', markers, UNITS, executor='serial').prime()
    assert (result.done_before, result.computed) == (len(UNITS) - 1, 1)
    counts = unit_computations(markers)
    assert counts.pop(unit_id(many).replace(':', '_')) == 2
    assert set(counts.values()) == {1}
    assert dict(DirectoryStash(tmp_path / 'out')) == expected_items(UNITS)


def test_the_factory_form_takes_units_of_any_type_when_it_expands_them(tmp_path: Path) -> None:
    # One item per key: the keys are str, as for FactoryStash.
    plain = MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'plain'), factory=lambda n: n * n, keys=range(3), executor='serial', progress=False
    )
    with pytest.raises(BatchError, match=r'#0 .*int: 0'):
        plain.prime()
    stash = MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'),
        factory=lambda n: [(f'square-{n}', n * n)],
        keys=range(3),
        expand=True,
        executor='serial',
        progress=False,
    )
    assert dict(stash) == {'square-0': 0, 'square-1': 1, 'square-2': 4}
    assert set(UnitLog.beside(tmp_path / 'out').read()) == {'0', '1', '2'}


def test_the_factory_form_expands_a_unit_into_its_items(tmp_path: Path, markers: Path) -> None:
    def sentences(doc: tuple[str, int]) -> list[tuple[str, str]]:
        name, n = doc
        mark_unit(markers, name)
        return [(f'{name}/{i}', f'sentence {i} of {name}') for i in range(n)]

    docs = [('a', 3), ('b', 0), ('c', 1)]

    def build() -> MultiProcessFactoryStash:
        return MultiProcessFactoryStash(
            DirectoryStash(tmp_path / 'out'), sentences, keys=docs, expand=True, workers=2, progress=False
        )

    result = build().prime()
    assert (result.total, result.computed) == (3, 3)
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == ['a/0', 'a/1', 'a/2', 'c/0']
    assert build().prime().computed == 0
    assert set(unit_computations(markers).values()) == {1}


def test_a_unit_id_can_be_given(tmp_path: Path) -> None:
    stash = MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'),
        lambda doc: [(doc['name'], doc['size'])],
        keys=[{'name': 'x', 'size': 1}, {'name': 'y', 'size': 2}],
        expand=True,
        unit_id=lambda doc: doc['name'],
        executor='serial',
        progress=False,
    )
    stash.prime()
    assert set(UnitLog.beside(tmp_path / 'out').read()) == {'x', 'y'}


def test_a_unit_that_raises_half_way_is_a_failure_and_not_done(tmp_path: Path, markers: Path) -> None:
    flag = tmp_path / 'fail-now'
    flag.touch()

    def pages(doc: str) -> Iterator[tuple[str, int]]:
        mark_unit(markers, doc)
        for i in range(3):
            if doc == 'bad' and i == 1 and flag.exists():
                raise ValueError('page 1 of bad')
            yield f'{doc}/{i}', i

    def build() -> MultiProcessFactoryStash:
        return MultiProcessFactoryStash(
            DirectoryStash(tmp_path / 'out'), pages, keys=['ok', 'bad'], expand=True, executor='serial', progress=False
        )

    stash = build()
    result = stash.prime()
    assert (result.computed, result.failed) == (1, 1)
    assert stash.failures['bad'].message == 'page 1 of bad'
    assert 'bad' not in UnitLog.beside(tmp_path / 'out').read()
    flag.unlink()
    result = build().retry_failures()
    assert (result.computed, result.failed) == (1, 0)
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == ['bad/0', 'bad/1', 'bad/2', 'ok/0', 'ok/1', 'ok/2']


# -- kills in the middle of a unit -----------------------------------------------


class SlowPages:
    """``expand`` factory: a unit ``u`` yields 4 items, slowly; may kill its worker half way."""

    def __init__(self, markers: Path, kill_once: Optional[str] = None, sleep: float = 0.05) -> None:
        self.markers = markers
        self.kill_once = kill_once
        self.sleep = sleep

    def __call__(self, unit: str) -> Iterator[tuple[str, str]]:
        mark_unit(self.markers, unit)
        for i in range(4):
            time.sleep(self.sleep)
            yield f'{unit}/{i}', f'{unit}-{i}'
            if i == 1 and unit == self.kill_once:
                flag = self.markers.parent / f'killed-{unit}'
                if not flag.exists():
                    flag.touch()
                    os.kill(os.getpid(), signal.SIGKILL)


def all_pages(units: list[str]) -> dict[str, str]:
    return {f'{u}/{i}': f'{u}-{i}' for u in units for i in range(4)}


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_unit_computes_that_unit_again_and_nothing_else(
    tmp_path: Path, markers: Path, start_method: str
) -> None:
    units = [f'u{n:02d}' for n in range(8)]

    def build(kill: Optional[str]) -> MultiProcessFactoryStash:
        return MultiProcessFactoryStash(
            DirectoryStash(tmp_path / 'out'),
            SlowPages(markers, kill_once=kill, sleep=0.01),
            keys=units,
            expand=True,
            workers=2,
            chunk_size=2,
            start_method=start_method,
            progress=False,
        )

    result = build('u03').prime()
    assert (result.computed, result.failed, result.lost) == (8, 0, 1)
    assert (tmp_path / 'killed-u03').exists()
    assert dict(DirectoryStash(tmp_path / 'out')) == all_pages(units)
    counts = unit_computations(markers)
    assert counts.pop('u03') == 2  # half done when killed, so computed again
    assert set(counts.values()) == {1}
    assert build(None).prime().computed == 0


PARENT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from test_provenance import SlowPages
    from stashworks import DirectoryStash, MultiProcessFactoryStash

    out, markers, n, method = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    stash = MultiProcessFactoryStash(
        DirectoryStash(out), SlowPages(markers, sleep=0.05), keys=[f'u{{i:03d}}' for i in range(n)],
        expand=True, workers=2, chunk_size=2, start_method=method, progress=False)
    print('READY', flush=True)
    stash.prime()
    print('DONE', flush=True)
    """
).format(here=str(HERE))


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.mark.timeout(180)
def test_the_parent_killed_mid_batch_then_resume_completes_every_unit_and_repeats_no_finished_one(
    tmp_path: Path, markers: Path, start_method: str
) -> None:
    n = 24
    units = [f'u{i:03d}' for i in range(n)]
    out = tmp_path / 'out'
    proc = subprocess.Popen(
        [sys.executable, '-c', PARENT, str(out), str(markers), str(n), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == 'READY'
    log = UnitLog.beside(out)
    assert wait_for(lambda: len(log.read()) >= 4, 90), proc.stderr.read() if proc.stderr else ''
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    # The workers notice their parent's death and stop; give them time to.
    time.sleep(1.0)
    finished = set(UnitLog.beside(out).read())
    assert 4 <= len(finished) < n
    before = unit_computations(markers)
    started = set(before)
    assert started - finished, 'the kill landed between units: nothing was half done'

    result = MultiProcessFactoryStash(
        DirectoryStash(out), SlowPages(markers, sleep=0.0), keys=units, expand=True, workers=2, progress=False
    ).prime()
    assert result.done_before == len(finished)
    assert dict(DirectoryStash(out)) == all_pages(units)
    after = unit_computations(markers)
    for unit in finished:
        assert after[unit] == before[unit] == 1, unit  # a finished unit never again
    for unit in set(units) - finished:
        assert after[unit] == before.get(unit, 0) + 1, unit


# -- versions ------------------------------------------------------------------------

JOB_MODULE = '''
    """Pages of documents."""
    import os
    import uuid

    SEPARATOR = '-'

    def label(doc, i):
        return doc + SEPARATOR + str(i)

    def pages(doc):
        # computes the pages of one document
        (MARKERS / (doc + '.' + uuid.uuid4().hex)).touch()
        return [(doc + '/' + str(i), label(doc, i) + '!') for i in range(2)]
'''

RUN = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import pagejob
    pagejob.MARKERS = Path(sys.argv[2])
    from stashworks import DirectoryStash, MultiProcessFactoryStash
    from stashworks.multi.units import StaleItemsError
    options = json.loads(sys.argv[4])
    stash = MultiProcessFactoryStash(
        DirectoryStash(sys.argv[3]), pagejob.pages, keys=['a', 'b', 'c'], expand=True, executor='serial',
        progress=False, **options)
    try:
        result = stash.prime()
    except StaleItemsError as exc:
        print(json.dumps({'stale': [exc.units, exc.items, exc.versions, exc.version], 'message': str(exc)}))
    else:
        print(json.dumps({'computed': result.computed, 'done_before': result.done_before,
                          'census': stash.census.as_dict()}))
    """
)


class VersionedJob:
    """A job module in a folder of its own, run in a fresh interpreter each time."""

    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path / 'code'
        self.folder.mkdir()
        self.markers = tmp_path / 'markers'
        self.markers.mkdir(exist_ok=True)
        self.out = tmp_path / 'out'
        self.text = textwrap.dedent(JOB_MODULE).lstrip()
        self.write()

    def write(self) -> None:
        (self.folder / 'pagejob.py').write_text(self.text, encoding='utf-8')

    def edit(self, old: str, new: str) -> None:
        assert old in self.text
        self.text = self.text.replace(old, new)
        self.write()

    def run(self, **options: Any) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, '-c', RUN, str(self.folder), str(self.markers), str(self.out), json.dumps(options)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONDONTWRITEBYTECODE='1'),
        )
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))


@pytest.fixture
def job(tmp_path: Path) -> VersionedJob:
    job = VersionedJob(tmp_path)
    assert job.run()['computed'] == 3
    return job


@pytest.mark.parametrize(
    'old, new',
    [
        ('# computes the pages of one document', '# computes the pages of one document, and says so'),
        ('"""Pages of documents."""', '"""Pages of documents.\n\nLonger.\n"""\n\n# more lines above\n'),
    ],
    ids=['comment', 'line-shift'],
)
def test_a_comment_or_a_line_shift_does_not_make_items_stale(job: VersionedJob, old: str, new: str) -> None:
    job.edit(old, new)
    out = job.run()
    assert (out['computed'], out['done_before']) == (0, 3)


@pytest.mark.parametrize(
    'old, new',
    [
        ("label(doc, i) + '!'", "label(doc, i) + '?'"),  # a constant
        ("SEPARATOR = '-'", "SEPARATOR = '_'"),  # a module-level value it reads
        ('return doc + SEPARATOR + str(i)', 'return doc + SEPARATOR + str(i + 1)'),  # a helper it calls
    ],
    ids=['constant', 'module-value', 'helper'],
)
def test_a_code_change_stops_the_batch_before_any_work(job: VersionedJob, old: str, new: str) -> None:
    job.edit(old, new)
    before = unit_computations(job.markers)
    out = job.run()
    units, items, versions, version = out['stale']
    assert (units, items) == (3, 6)
    assert list(versions.values()) == [6] and version not in versions
    assert "on_stale='recompute'" in out['message'] and "on_stale='keep'" in out['message']
    assert unit_computations(job.markers) == before  # nothing was computed
    census = read_census(job.out)
    assert census is not None and (census['stale_units'], census['stale_items']) == (3, 6)


def test_a_changed_closure_value_makes_items_stale(tmp_path: Path) -> None:
    def factory(scale: int) -> Callable[[str], int]:
        def compute(key: str) -> int:
            return len(key) * scale

        return compute

    def build(scale: int, **options: Any) -> MultiProcessFactoryStash:
        return MultiProcessFactoryStash(
            DirectoryStash(tmp_path / 'out'),
            factory(scale),
            keys=['a', 'bb'],
            executor='serial',
            progress=False,
            **options,
        )

    build(2).prime()
    assert build(2).prime().computed == 0
    with pytest.raises(StaleItemsError) as info:
        build(3).prime()
    assert (info.value.units, info.value.items) == (2, 2)


def test_on_stale_recompute_computes_the_stale_units_and_nothing_else(job: VersionedJob) -> None:
    # 'd' is new and missing; a, b, c are stale after the change.
    job.edit("label(doc, i) + '!'", "label(doc, i) + '?'")
    out = job.run(on_stale='recompute')
    assert (out['computed'], out['done_before']) == (3, 0)
    assert unit_computations(job.markers) == {'a': 2, 'b': 2, 'c': 2}
    assert DirectoryStash(job.out)['a/0'] == 'a-0?'
    again = job.run()
    assert (again['computed'], again['done_before']) == (0, 3)
    # The superseded records are gone: one version left in the log.
    assert len(UnitLog.beside(job.out).versions_on_disk()) == 1


def test_on_stale_keep_keeps_the_items_and_records_the_choice(job: VersionedJob) -> None:
    old_version = next(iter(UnitLog.beside(job.out).read().values())).version
    job.edit("label(doc, i) + '!'", "label(doc, i) + '?'")
    out = job.run(on_stale='keep')
    assert (out['computed'], out['done_before']) == (0, 3)
    assert out['census']['kept_units'] == 3
    assert DirectoryStash(job.out)['a/0'] == 'a-0!'  # kept as it was
    records = UnitLog.beside(job.out).read()
    assert {r.kept_from for r in records.values()} == {old_version}
    assert {r.version for r in records.values()} != {old_version}
    assert job.run()['computed'] == 0  # no longer stale
    assert unit_computations(job.markers) == {'a': 1, 'b': 1, 'c': 1}


def test_an_explicit_version_replaces_the_fingerprint(job: VersionedJob) -> None:
    assert job.run(version='1', on_stale='keep')['computed'] == 0
    job.edit("label(doc, i) + '!'", "label(doc, i) + '?'")
    assert job.run(version='1')['computed'] == 0  # the user's version did not change
    out = job.run(version='2')
    assert out['stale'][3] == '2' and out['stale'][2] == {'1': 6}


def test_items_with_no_recorded_version_count_as_current(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    DirectoryStash(out).dump('a', 'written by hand')
    UnitLog.beside(out).record('b', 'an-older-version', ['b'])
    DirectoryStash(out).dump('b', 'older')

    def build(**options: Any) -> MultiProcessFactoryStash:
        return MultiProcessFactoryStash(
            DirectoryStash(out), str.upper, keys=['a', 'b', 'c'], executor='serial', progress=False, **options
        )

    with pytest.raises(StaleItemsError) as info:
        build().prime()
    assert (info.value.units, info.value.versions) == (1, {'an-older-version': 1})  # not 'a'
    result = build(on_stale='recompute').prime()
    assert (result.done_before, result.computed) == (1, 2)
    assert dict(DirectoryStash(out)) == {'a': 'written by hand', 'b': 'B', 'c': 'C'}


# -- counts of this batch only -----------------------------------------------------


def test_counts_speak_of_the_batch_own_units_only(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    other = DirectoryStash(out)
    for i in range(40):
        other.dump(f'other-{i}', i)
    stash = MultiProcessFactoryStash(
        DirectoryStash(out), str.upper, keys=[f'k{i}' for i in range(10)], executor='serial', progress=False
    )
    result = stash.prime()
    assert (result.total, result.done_before, result.computed) == (10, 0, 10)
    census = read_census(out)
    assert census is not None
    assert (census['units'], census['done_units'], census['done_items'], census['missing_units']) == (10, 10, 10, 0)


def test_status_counts_done_failed_stale_and_missing_in_units_and_items(tmp_path: Path, markers: Path) -> None:
    out = tmp_path / 'out'

    def pages(doc: str) -> list[tuple[str, int]]:
        if doc == 'bad':
            raise ValueError('no pages')
        return [(f'{doc}/{i}', i) for i in range(3)]

    def build(keys: list[str], **options: Any) -> MultiProcessFactoryStash:
        return MultiProcessFactoryStash(
            DirectoryStash(out), pages, keys=keys, expand=True, executor='serial', progress=False, **options
        )

    build(['a', 'b', 'bad'], version='1').prime()
    stash = build(['a', 'b', 'bad', 'new'], version='2')
    census = stash.unit_census()
    assert census.as_dict() == {
        'version': '2',
        'units': 4,
        'done_units': 0,
        'done_items': 0,
        'stale_units': 2,
        'stale_items': 6,
        'stale_versions': {'1': 6},
        'failed_units': 1,
        'missing_units': 1,
        'kept_units': 0,
    }


def test_the_command_line_stops_on_stale_items_and_takes_on_stale(tmp_path: Path) -> None:
    (tmp_path / 'keys.txt').write_text('a\nb\n', encoding='utf-8')
    job = tmp_path / 'clijob.py'

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                '-m',
                'stashworks',
                'run',
                'clijob:f',
                '--keys',
                'keys.txt',
                '--out',
                'out',
                '--serial',
                *extra,
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, PYTHONDONTWRITEBYTECODE='1'),
        )

    job.write_text('def f(key):\n    return key * 2\n', encoding='utf-8')
    assert run().returncode == 0
    job.write_text('def f(key):\n    return key * 3\n', encoding='utf-8')
    stopped = run()
    assert stopped.returncode == 1
    assert '2 items of 2 units' in stopped.stderr and '--on-stale recompute|keep' in stopped.stderr
    assert DirectoryStash(tmp_path / 'out')['a'] == 'aa'
    assert run('--on-stale', 'recompute').returncode == 0
    assert DirectoryStash(tmp_path / 'out')['a'] == 'aaa'
    job.write_text('def f(key):\n    return key * 4\n', encoding='utf-8')
    assert run('--on-stale', 'keep').returncode == 0
    assert DirectoryStash(tmp_path / 'out')['a'] == 'aaa'
    assert {r.kept_from is not None for r in UnitLog.beside(tmp_path / 'out').read().values()} == {True}


def test_recompute_in_the_one_item_form_computes_every_stale_unit(tmp_path: Path, markers: Path) -> None:
    def build(suffix: str, **options: Any) -> MultiProcessFactoryStash:
        def shout(key: str) -> str:
            mark_unit(markers, key)
            return key.upper() + suffix

        return MultiProcessFactoryStash(
            DirectoryStash(tmp_path / 'out'), shout, keys=['a', 'b', 'c'], workers=2, progress=False, **options
        )

    build('').prime()
    result = build('!', on_stale='recompute').prime()
    assert (result.total, result.computed, result.done_before) == (3, 3, 0)
    assert dict(DirectoryStash(tmp_path / 'out')) == {'a': 'A!', 'b': 'B!', 'c': 'C!'}
    assert unit_computations(markers) == {'a': 2, 'b': 2, 'c': 2}


def test_stashworks_status_counts_the_batch_units_not_every_file(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    for i in range(40):
        DirectoryStash(out).dump(f'other-{i}', i)
    (tmp_path / 'keys.txt').write_text(''.join(f'k{i}\n' for i in range(10)), encoding='utf-8')
    (tmp_path / 'statusjob.py').write_text('def f(key):\n    return key\n', encoding='utf-8')

    def stashworks(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, '-m', 'stashworks', *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    assert stashworks('run', 'statusjob:f', '--keys', 'keys.txt', '--out', 'out', '--serial').returncode == 0
    status = stashworks('status', 'out')
    assert status.returncode == 0, status.stderr
    headline = status.stdout.splitlines()[0]
    assert '50 done' not in headline and '10 done' in headline, status.stdout
    assert '10 done (10 items), 0 stale (0 items), 0 failed, 0 missing' in status.stdout
    report = json.loads(stashworks('status', 'out', '--json').stdout)
    assert (report['done'], report['units']['done_units']) == (10, 10)
