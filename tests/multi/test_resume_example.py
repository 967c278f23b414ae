"""``examples/resume_stdlib.py``: interrupted with SIGINT, run again, it resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from batch_jobs import wait_for

from stashworks import DirectoryStash

pytestmark = pytest.mark.timeout(120)

EXAMPLE = Path(__file__).resolve().parents[2] / 'examples' / 'resume_stdlib.py'
LIMIT = 240


def example(out: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(EXAMPLE), str(out), '--limit', str(LIMIT), '--workers', '2', '--no-progress', *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def inodes(out: Path) -> dict[str, int]:
    stash = DirectoryStash(out)
    # A stash iterates (key, value) pairs, so keys() it is.
    return {key: os.stat(stash.key_to_path(key)).st_ino for key in stash.keys()}  # noqa: SIM118


def test_interrupted_example_resumes_without_recomputing(tmp_path: Path) -> None:
    out = tmp_path / 'counts'
    first = example(out, '--slow', '0.02')
    assert wait_for(lambda: len(DirectoryStash(out)) >= 30, 60)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=15)
    assert first.returncode == 130, err
    assert 'run the same command again to resume' in err
    before = inodes(out)
    assert 30 <= len(before) < LIMIT

    second = example(out)
    stdout, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert f'{len(before)} done before' in stdout
    after = inodes(out)
    # Every item of the first run is still the very file it wrote.
    assert {key: after[key] for key in before} == before
    failed = len(list((out / '.stashworks' / 'failures').glob('*.json')))
    assert len(after) + failed == LIMIT
