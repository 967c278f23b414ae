"""Housekeeping a batch does on its delegate before it computes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stashworks import DirectoryStash, MultiProcessFactoryStash, SerialExecutor

pytestmark = pytest.mark.timeout(30)


def _abandoned_temp(folder: Path, age: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / '.~sw-0123456789ab-1-0.tmp'
    temp.write_bytes(b'half an item')
    then = time.time() - age
    os.utime(temp, (then, then))
    return temp


def test_a_batch_with_work_to_do_removes_temp_files_abandoned_by_an_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    temp = _abandoned_temp(out, age=2 * 3600)
    stash = MultiProcessFactoryStash(DirectoryStash(out), str.upper, keys=['a', 'b'], executor=SerialExecutor())

    stash.prime()

    assert not temp.exists()
    assert sorted(DirectoryStash(out).keys()) == ['a', 'b']


def test_a_batch_leaves_a_recent_temp_file_alone(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    temp = _abandoned_temp(out, age=10)
    stash = MultiProcessFactoryStash(DirectoryStash(out), str.upper, keys=['a'], executor=SerialExecutor())

    stash.prime()

    assert temp.exists()
