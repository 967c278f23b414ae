"""SigningSerializer: nothing unsigned or altered is ever unpickled."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest

import stashworks
from stashworks import (
    SIGNING_KEY_ENV,
    SIGNING_KEY_FILE_ENV,
    DirectoryStash,
    JsonSerializer,
    MultiProcessFactoryStash,
    SigningSerializer,
    StashCorruptError,
    StashSignatureError,
)


class Trap:
    """Unpickling it creates a folder: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture
def signed(tmp_path: Path) -> DirectoryStash:
    return DirectoryStash(tmp_path / 's', serializer=SigningSerializer(key=b'secret'))


def test_signed_values_round_trip(signed: DirectoryStash) -> None:
    for key, value in {'a': 1, 'none': None, 'nested': {'x': [1, (2, None)]}}.items():
        signed.dump(key, value)
        assert signed.load(key) == value


def test_an_unsigned_pickle_is_refused_naming_the_key_and_never_unpickled(
    signed: DirectoryStash, tmp_path: Path
) -> None:
    marker = tmp_path / 'ran'
    signed.path.mkdir()
    (signed.path / 'evil.dat').write_bytes(pickle.dumps(Trap(marker)))
    with pytest.raises(StashCorruptError, match="'evil'") as info:
        signed.load('evil')
    assert isinstance(info.value, StashSignatureError)
    assert not marker.exists()


def test_a_tampered_payload_is_refused_and_never_unpickled(signed: DirectoryStash, tmp_path: Path) -> None:
    marker = tmp_path / 'ran'
    signed.dump('k', 'innocent')
    data = (signed.path / 'k.dat').read_bytes()
    header = data[: len(data) - len(pickle.dumps('innocent', protocol=pickle.HIGHEST_PROTOCOL))]
    (signed.path / 'k.dat').write_bytes(header + pickle.dumps(Trap(marker)))
    with pytest.raises(StashSignatureError, match="'k'"):
        signed.load('k')
    assert not marker.exists()


def test_a_flipped_byte_anywhere_is_refused(signed: DirectoryStash) -> None:
    signed.dump('k', list(range(20)))
    data = bytearray((signed.path / 'k.dat').read_bytes())
    for i in range(len(data)):
        data[i] ^= 1
        (signed.path / 'k.dat').write_bytes(bytes(data))
        with pytest.raises(StashSignatureError):
            signed.load('k')
        data[i] ^= 1


def test_a_file_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    DirectoryStash(tmp_path / 's', serializer=SigningSerializer(key='one')).dump('k', 1)
    with pytest.raises(StashSignatureError, match='another key'):
        DirectoryStash(tmp_path / 's', serializer=SigningSerializer(key='two')).load('k')


def test_a_truncated_or_empty_file_is_refused(signed: DirectoryStash) -> None:
    signed.dump('k', 1)
    (signed.path / 'k.dat').write_bytes(b'')
    with pytest.raises(StashSignatureError, match='not signed'):
        signed.load('k')


def test_the_key_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIGNING_KEY_ENV, 'from-env')
    DirectoryStash(tmp_path / 's', serializer=SigningSerializer()).dump('k', 1)
    assert DirectoryStash(tmp_path / 's', serializer=SigningSerializer(key='from-env')).load('k') == 1
    assert SIGNING_KEY_ENV == 'STASHWORKS_SIGNING_KEY'


def test_the_key_comes_from_a_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / 'key'
    key_file.write_text('from-file\n')
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    monkeypatch.setenv(SIGNING_KEY_FILE_ENV, str(key_file))
    DirectoryStash(tmp_path / 's', serializer=SigningSerializer()).dump('k', 1)
    assert DirectoryStash(tmp_path / 's', serializer=SigningSerializer(key_file=key_file)).load('k') == 1
    assert DirectoryStash(tmp_path / 's', serializer=SigningSerializer(key='from-file')).load('k') == 1


def test_no_key_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    monkeypatch.delenv(SIGNING_KEY_FILE_ENV, raising=False)
    with pytest.raises(ValueError, match=SIGNING_KEY_ENV):
        SigningSerializer()
    assert SigningSerializer.from_env() is None


def test_an_unreadable_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='signing key file'):
        SigningSerializer(key_file=tmp_path / 'missing')


def test_the_key_never_shows_in_the_repr() -> None:
    assert 'hunter2' not in repr(SigningSerializer(key='hunter2'))


def test_signing_wraps_any_serializer(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 's', serializer=SigningSerializer(JsonSerializer(), key='k'))
    stash.dump('k', {'a': [1, 2]})
    assert stash.load('k') == {'a': [1, 2]}
    assert (tmp_path / 's' / 'k.dat').read_bytes().endswith(b'{"a": [1, 2]}')


def test_verify_returns_the_payload_without_deserializing(signed: DirectoryStash) -> None:
    signed.dump('k', 'v')
    payload = signed.serializer.verify((signed.path / 'k.dat').read_bytes())  # type: ignore[union-attr]
    assert pickle.loads(payload) == 'v'


def test_it_is_exported_from_stashworks() -> None:
    assert {'SigningSerializer', 'StashSignatureError', 'SIGNING_KEY_ENV'} <= set(stashworks.__all__)


def square(key: str) -> int:
    return int(key) ** 2


@pytest.mark.timeout(120)
def test_batch_workers_write_signed_items(tmp_path: Path) -> None:
    stash = MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out', serializer=SigningSerializer(key='batch')),
        factory=square,
        keys=[str(i) for i in range(6)],
        workers=2,
        progress=False,
    )
    stash.prime()
    reader = DirectoryStash(tmp_path / 'out', serializer=SigningSerializer(key='batch'))
    assert dict(reader) == {str(i): i * i for i in range(6)}
    with pytest.raises(StashSignatureError):
        DirectoryStash(tmp_path / 'out', serializer=SigningSerializer(key='other')).load('1')


@pytest.mark.timeout(30)
def test_a_folder_or_fifo_named_like_a_signed_item_is_no_item(signed: DirectoryStash) -> None:
    signed.dump('real', 1)
    (signed.path / 'folder.dat').mkdir()
    os.mkfifo(signed.path / 'fifo.dat')
    for key in ('folder', 'fifo'):
        with pytest.raises(KeyError):
            signed.load(key)
        assert (signed.exists(key), signed.get(key, 'd')) == (False, 'd')
    assert signed.keys() == ['real']
