"""What a batch gives back is typed: its status, its result, its failure records, its values."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest

import stashworks
from stashworks import BatchResult, DirectoryStash, FailureRecord, MultiProcessFactoryStash


def _half(key: str) -> float:
    if key == '0':
        raise ZeroDivisionError('zero')
    return 1 / int(key)


@pytest.fixture
def finished(tmp_path: Path) -> MultiProcessFactoryStash:
    stash = MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'), _half, keys=['0', '1', '2'], executor='serial', progress=False
    )
    stash.prime()
    return stash


def test_read_status_is_importable_from_stashworks_and_returns_a_dataclass(
    finished: MultiProcessFactoryStash, tmp_path: Path
) -> None:
    status = stashworks.read_status(tmp_path / 'out')
    assert isinstance(status, stashworks.BatchStatus)
    assert (status.state, status.total, status.done, status.failed) == ('finished', 3, 2, 1)
    assert isinstance(status.started, dt.datetime) and status.started.tzinfo is not None
    assert status.executor
    assert 'read_status' in stashworks.__all__ and 'BatchStatus' in stashworks.__all__


def test_a_status_still_reads_by_field_name(finished: MultiProcessFactoryStash, tmp_path: Path) -> None:
    status = stashworks.read_status(tmp_path / 'out')
    assert status is not None
    assert status['state'] == 'finished' and status['done'] == 2


def test_a_status_keeps_fields_it_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / 'status.json'
    path.write_text(json.dumps({'state': 'running', 'total': 'many', 'new_field': [1]}), encoding='utf-8')
    status = stashworks.read_status(path)
    assert status is not None
    assert (status.state, status.total, status.extra) == ('running', 0, {'new_field': [1]})


def test_the_result_and_the_failures_are_typed(finished: MultiProcessFactoryStash) -> None:
    result = finished.last_result
    assert isinstance(result, BatchResult)
    record = finished.failures.load('0')
    assert isinstance(record, FailureRecord)
    assert (record.key, record.error_type, record.message) == ('0', 'ZeroDivisionError', 'zero')


def test_a_stash_declares_its_value_type_for_the_type_checker(tmp_path: Path) -> None:
    api = pytest.importorskip('mypy.api')
    source = tmp_path / 'typed_use.py'
    source.write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from stashworks import DirectoryStash, MultiProcessFactoryStash

            @dataclass
            class Rec:
                n: int

            def make(key: str) -> Rec:
                return Rec(len(key))

            recs: DirectoryStash[Rec] = DirectoryStash('out')
            reveal_type(recs['a'])
            reveal_type(recs.get('a'))
            batch = MultiProcessFactoryStash(recs, make, keys=['a'])
            reveal_type(batch.prime())
            """
        ),
        encoding='utf-8',
    )
    out, err, _ = api.run([str(source), '--no-incremental', '--follow-imports=silent', '--ignore-missing-imports'])
    assert 'typed_use.Rec' in out.splitlines()[0], out + err
    assert 'typed_use.Rec | None' in out.splitlines()[1], out + err
    assert 'BatchResult' in out, out + err
