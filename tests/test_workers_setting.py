"""``workers=``: negative counts as joblib's ``n_jobs``, and no silent clamping."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stashworks import DirectoryStash, MultiProcessFactoryStash
from stashworks.multi import resolve_workers


def test_minus_1_is_every_cpu_and_minus_2_all_but_one() -> None:
    assert resolve_workers(-1, cpus=2) == 2
    assert resolve_workers(-2, cpus=2) == 1


@pytest.mark.parametrize('setting', [-3, -100])
def test_a_negative_count_that_leaves_no_worker_is_refused_with_the_cpus(setting: int) -> None:
    with pytest.raises(ValueError, match=rf'workers={setting} leaves no worker: there are only 2 usable CPUs'):
        resolve_workers(setting, cpus=2)


def test_more_workers_than_cpus_is_allowed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger='stashworks'):
        assert resolve_workers(100, cpus=2) == 100
    assert 'workers=100 is more than the 2 usable CPUs' in caplog.text


def test_a_batch_with_minus_2_on_any_machine_is_accepted(tmp_path: Path) -> None:
    # The count is checked against the CPUs when the batch runs, not when
    # the stash is made (a cluster may have more).
    stash = MultiProcessFactoryStash(DirectoryStash(tmp_path), str.upper, keys=['a'], workers=-2, executor='serial')
    assert stash.prime().computed == 1
