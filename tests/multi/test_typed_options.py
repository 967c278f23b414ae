"""The batch options are typed keywords: a type checker rejects a misspelt or mistyped one.

Runs ``mypy --strict`` on two small scripts, one right and one wrong; the
right one must pass (so the check can tell them apart), the wrong one must
be rejected at exactly its bad lines.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stashworks import DirectoryStash, MultiProcessFactoryStash
from stashworks.multi import BatchSettings

pytestmark = pytest.mark.timeout(300)

RIGHT = """
from stashworks import DirectoryStash, MultiProcessFactoryStash, MultiProcessStash


def compute(key: str) -> str:
    return key.upper()


stash = MultiProcessFactoryStash(
    DirectoryStash('out'), compute, keys=['a'], workers=2, chunk_size=4, progress=False, max_retries=1
)
other = MultiProcessStash(DirectoryStash('out'), workers=0.5, memory_limit='2GB', start_method='spawn')
"""

WRONG = """
from stashworks import DirectoryStash, MultiProcessFactoryStash


def compute(key: str) -> str:
    return key.upper()


a = MultiProcessFactoryStash(DirectoryStash('out'), compute, keys=['a'], progres=False)
b = MultiProcessFactoryStash(DirectoryStash('out'), compute, keys=['a'], workers='2')
c = MultiProcessFactoryStash(DirectoryStash('out'), compute, keys=['a'], max_retries=None)
"""


def test_mypy_strict_rejects_a_misspelt_or_mistyped_option(tmp_path: Path) -> None:
    pytest.importorskip('mypy')
    (tmp_path / 'right.py').write_text(textwrap.dedent(RIGHT))
    (tmp_path / 'wrong.py').write_text(textwrap.dedent(WRONG))
    run = subprocess.run(
        [
            sys.executable,
            '-m',
            'mypy',
            '--strict',
            '--follow-imports=silent',
            '--config-file=',
            f'--cache-dir={tmp_path / "cache"}',
            'right.py',
            'wrong.py',
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=280,
    )
    errors = [line for line in run.stdout.splitlines() if ': error:' in line]
    assert not [e for e in errors if e.startswith('right.py')], run.stdout
    bad_lines = sorted({int(m.group(1)) for e in errors if (m := re.match(r'wrong\.py:(\d+):', e))})
    assert bad_lines == [9, 10, 11], run.stdout
    assert 'Unexpected keyword argument "progres"' in run.stdout


def test_the_settings_are_one_frozen_validated_object(tmp_path: Path) -> None:
    stash = MultiProcessFactoryStash(DirectoryStash(tmp_path), str.upper, keys=['a'], memory_limit='1KB')
    settings = stash.settings
    assert isinstance(settings, BatchSettings)
    assert settings.memory_limit == 1000
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.workers = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match='max_retries'):
        BatchSettings(max_retries=-1)
    with pytest.raises(ValueError, match='chunk_size'):
        MultiProcessFactoryStash(DirectoryStash(tmp_path), str.upper, keys=['a'], chunk_size=-1)
