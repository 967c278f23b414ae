"""The command line and signed output folders: a tampered item is never unpickled.

With ``STASHWORKS_SIGNING_KEY`` (or ``STASHWORKS_SIGNING_KEY_FILE``) set,
``stashworks run`` writes signed items and ``show`` checks the signature
before it unpickles anything; ``show --help`` says that an output folder
must be trusted.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from cli_helpers import error_line, stashworks
from stashworks import DirectoryStash, SigningSerializer, StashSignatureError

KEY = 'a-secret-for-tests'


class _Trap:
    """Unpickling this creates the file named by ``path``: code run by a pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, 'w'))


def test_show_refuses_an_unsigned_item_when_a_signing_key_is_set(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    DirectoryStash(out)['ok'] = 1  # the folder and one plain (unsigned) item
    marker = tmp_path / 'code-ran'
    # An item file replaced by hand with a pickle that runs code.
    item = next(p for p in out.iterdir() if p.is_file())
    item.write_bytes(pickle.dumps(_Trap(str(marker))))
    proc = stashworks('show', out, 'ok', STASHWORKS_SIGNING_KEY=KEY)
    assert proc.returncode != 0
    line = error_line(proc)
    assert "'ok'" in line and 'sign' in line.lower()
    assert not marker.exists(), 'the unsigned pickle was run'


def test_show_reads_a_signed_item_with_the_key(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    DirectoryStash(out, serializer=SigningSerializer(key=KEY))['k'] = {'a': 1}
    proc = stashworks('show', out, 'k', STASHWORKS_SIGNING_KEY=KEY)
    assert proc.returncode == 0, proc.stderr
    assert "'a': 1" in proc.stdout


def test_run_writes_signed_items_when_a_signing_key_is_set(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    proc = stashworks('run', 'cli_jobs:square', '--keys', '-', '--out', out, input='2\n3\n', STASHWORKS_SIGNING_KEY=KEY)
    assert proc.returncode == 0, proc.stderr
    signed = DirectoryStash(out, serializer=SigningSerializer(key=KEY))
    assert signed['3'] == 9
    # Read with another key, the same items are refused.
    other = DirectoryStash(out, serializer=SigningSerializer(key='another key'))
    with pytest.raises(StashSignatureError, match="'3'"):
        other.load('3')


def test_show_help_says_an_output_folder_must_be_trusted() -> None:
    proc = stashworks('show', '--help')
    assert proc.returncode == 0
    text = ' '.join(proc.stdout.split()).lower()
    assert 'trust' in text and 'stashworks_signing_key' in text


def test_keys_of_a_signed_folder_need_no_key(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    DirectoryStash(out, serializer=SigningSerializer(key=KEY))['k'] = 1
    env = {k: v for k, v in os.environ.items() if not k.startswith('STASHWORKS_SIGNING')}
    assert 'STASHWORKS_SIGNING_KEY' not in env
    proc = stashworks('keys', out)
    assert proc.returncode == 0 and proc.stdout.split() == ['k']
