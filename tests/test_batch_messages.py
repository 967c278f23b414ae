"""What a batch says while it runs: one name per worker, counts spelled right, a crash that says why."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cli_helpers import stashworks

pytestmark = pytest.mark.timeout(120)

DYING_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    from stashworks import DirectoryStash, MultiProcessFactoryStash

    def job(key):
        if key == 'die':
            os._exit(3)
        return key

    if __name__ == '__main__':
        logging.basicConfig(level=logging.INFO, format='%(message)s')
        stash = MultiProcessFactoryStash(
            DirectoryStash(sys.argv[1]), job, keys=['a', 'die', 'b'], workers=1, chunk_size=1,
            max_retries=0, progress=False,
        )
        stash.prime()
    """
)


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / 'job.py'
    path.write_text(script, encoding='utf-8')
    return subprocess.run(
        [sys.executable, str(path), str(tmp_path / 'out')], capture_output=True, text=True, cwd=tmp_path, timeout=100
    )


def test_a_worker_has_one_name_in_messages_and_records(tmp_path: Path) -> None:
    proc = _run(DYING_SCRIPT, tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(stashworks('failures', tmp_path / 'out', '--json').stdout)[0]
    name = record['worker']
    assert re.fullmatch(r'[^:\s]+:\d+', name), name
    assert f'worker {name}' in proc.stderr, proc.stderr
    # Every worker a message names is named host:pid, never by its pid alone.
    assert not re.search(r'worker \d+\b', proc.stderr), proc.stderr


def test_counts_are_spelled_for_one(tmp_path: Path) -> None:
    proc = _run(DYING_SCRIPT, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '1 workers' not in proc.stderr and '1 chunks' not in proc.stderr, proc.stderr
    assert '(1 worker, ' in proc.stderr, proc.stderr


CRASHING_SCRIPT = textwrap.dedent(
    """
    import sys
    from stashworks import BatchError, DirectoryStash, MultiProcessFactoryStash

    gen = (i for i in range(3))  # no pickler can send a generator

    if __name__ == '__main__':
        stash = MultiProcessFactoryStash(
            DirectoryStash(sys.argv[1]), lambda key: (gen, key)[1], keys=['a', 'b'], workers=1, progress=False
        )
        try:
            stash.prime()
        except BatchError:
            pass
    """
)


def test_a_crashed_batch_says_why_and_status_does_not_advise_a_rerun(tmp_path: Path) -> None:
    proc = _run(CRASHING_SCRIPT, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'crashed after stashworks' not in proc.stderr
    status = json.loads((tmp_path / 'out' / '.stashworks' / 'status.json').read_text(encoding='utf-8'))
    assert status['state'] == 'crashed'
    assert 'cannot send the job' in status['error'], status
    text = stashworks('status', tmp_path / 'out').stdout
    assert 'cannot send the job' in text
    assert 'run it again to resume' not in text
