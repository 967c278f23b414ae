"""Serializer strategies: how a value becomes bytes and back.

A stash that stores bytes takes a :class:`Serializer` instead of calling
:mod:`pickle` itself, so the format is chosen by the user, not hard-wired.
"""

from __future__ import annotations

import hmac
import io
import json
import os
import pickle
from pathlib import Path
from typing import IO, Any, Optional, Protocol, Union, runtime_checkable

from .errors import SerializationError, StashSignatureError

__all__ = [
    'Serializer',
    'PickleSerializer',
    'DillSerializer',
    'JsonSerializer',
    'SigningSerializer',
    'SIGNING_KEY_ENV',
    'SIGNING_KEY_FILE_ENV',
    'default_serializer',
    'serialize_into',
]


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back, through a binary file object."""

    def dump(self, value: Any, fh: IO[bytes]) -> None:
        """Write ``value`` to the binary file ``fh``."""

    def load(self, fh: IO[bytes]) -> Any:
        """Read one value from the binary file ``fh``."""


class PickleSerializer:
    """The standard library's :mod:`pickle` at its highest protocol."""

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def dump(self, value: Any, fh: IO[bytes]) -> None:
        pickle.dump(value, fh, protocol=self.protocol)

    def load(self, fh: IO[bytes]) -> Any:
        return pickle.load(fh)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(protocol={self.protocol})'


class DillSerializer:
    """:mod:`dill`, for lambdas, closures and locally defined classes.

    ``dill`` is imported on first use, so it costs nothing when unused.
    """

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL, recurse: bool = True) -> None:
        self.protocol = protocol
        self.recurse = recurse

    def dump(self, value: Any, fh: IO[bytes]) -> None:
        import dill

        dill.dump(value, fh, protocol=self.protocol, recurse=self.recurse)

    def load(self, fh: IO[bytes]) -> Any:
        import dill

        return dill.load(fh)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(protocol={self.protocol})'


class JsonSerializer:
    """UTF-8 JSON, for records other tools should read without Python.

    Only JSON types round-trip (tuples come back as lists).
    """

    def __init__(self, indent: int | None = None) -> None:
        self.indent = indent

    def dump(self, value: Any, fh: IO[bytes]) -> None:
        fh.write(json.dumps(value, indent=self.indent, ensure_ascii=False).encode('utf-8'))

    def load(self, fh: IO[bytes]) -> Any:
        return json.loads(fh.read().decode('utf-8'))

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


SIGNING_KEY_ENV = 'STASHWORKS_SIGNING_KEY'
"""The environment variable holding the key of :class:`SigningSerializer`."""

SIGNING_KEY_FILE_ENV = 'STASHWORKS_SIGNING_KEY_FILE'
"""The environment variable naming a file that holds the key of :class:`SigningSerializer`."""

# A signed file: this tag, the HMAC-SHA256 of the payload, the payload.
_SIGNED_TAG = b'SWHMAC1\n'
_DIGEST_SIZE = 32
_HEADER_SIZE = len(_SIGNED_TAG) + _DIGEST_SIZE


def _read_key_file(path: Union[str, 'os.PathLike[str]']) -> bytes:
    try:
        # Surrounding whitespace goes: `echo secret > key` adds a newline.
        return Path(path).read_bytes().strip()
    except OSError as exc:
        raise ValueError(f'cannot read the signing key file {path}: {exc.strerror or exc}') from exc


class SigningSerializer:
    """Signs what another serializer writes, and checks the signature before reading.

    Each stored value is an HMAC-SHA256 (:mod:`hmac`) of the inner
    serializer's bytes, followed by those bytes.  :meth:`load` checks the
    signature first and raises
    :class:`~stashworks.errors.StashSignatureError` (a
    :class:`~stashworks.errors.StashCorruptError`) for data that is
    unsigned, altered, or signed with another key, without deserializing
    any of it.  A pickle runs code when it is loaded; a signature lets a
    reader trust a folder that others can write to, as long as they do not
    have the key.

    The key is, in order: ``key``, the file ``key_file``, the environment
    variable :data:`SIGNING_KEY_ENV` (``STASHWORKS_SIGNING_KEY``), the file
    named by :data:`SIGNING_KEY_FILE_ENV` (``STASHWORKS_SIGNING_KEY_FILE``).
    Whitespace around a key read from a file is dropped.  The key travels
    with the serializer (to batch workers, for example); it never appears in
    its ``repr``.

    Args:
        inner: the serializer that turns values into bytes (pickle by
            default).
        key: the secret key, bytes or text (UTF-8).
        key_file: a file holding the key.

    Raises:
        ValueError: no key is given or configured, or the key is empty.
    """

    #: It reads the whole file at once, so a stash may hand it the bytes
    #: (:meth:`loads`) rather than a file object.
    reads_whole_file = True

    def __init__(
        self,
        inner: Optional[Serializer] = None,
        key: Union[bytes, str, None] = None,
        key_file: Union[str, 'os.PathLike[str]', None] = None,
    ) -> None:
        self.inner: Serializer = inner if inner is not None else PickleSerializer()
        if key is None and key_file is None:
            key = os.environ.get(SIGNING_KEY_ENV) or None
            if key is None:
                key_file = os.environ.get(SIGNING_KEY_FILE_ENV) or None
        if key is None and key_file is not None:
            key = _read_key_file(key_file)
        if key is None:
            raise ValueError(
                f'no signing key: pass key= or key_file=, or set {SIGNING_KEY_ENV} (the key) '
                f'or {SIGNING_KEY_FILE_ENV} (a file holding it)'
            )
        key_bytes = key.encode('utf-8') if isinstance(key, str) else bytes(key)
        if not key_bytes:
            raise ValueError('the signing key is empty')
        self._set_key(key_bytes)

    def _set_key(self, key: bytes) -> None:
        self._key = key
        # Keyed once; each signature copies it (a fresh HMAC costs more than
        # the hashing of a small item).
        self._mac = hmac.new(key, digestmod='sha256')

    def _sign(self, payload: Union[bytes, memoryview]) -> bytes:
        mac = self._mac.copy()
        mac.update(payload)
        return mac.digest()

    @classmethod
    def from_env(cls, inner: Optional[Serializer] = None) -> Optional['SigningSerializer']:
        """A serializer keyed from the environment, or ``None`` if no key is configured there."""
        if os.environ.get(SIGNING_KEY_ENV) or os.environ.get(SIGNING_KEY_FILE_ENV):
            return cls(inner)
        return None

    def _payload(self, value: Any) -> Union[bytes, memoryview]:
        inner = self.inner
        if type(inner) is PickleSerializer:
            # No file object in between for the usual case.
            return pickle.dumps(value, protocol=inner.protocol)
        buf = io.BytesIO()
        inner.dump(value, buf)
        return buf.getbuffer()

    def dump(self, value: Any, fh: IO[bytes]) -> None:
        payload = self._payload(value)
        # One write: the payload is small next to a second call, or large
        # enough that the copy costs little against hashing it.
        data = memoryview(b''.join((_SIGNED_TAG, self._sign(payload), payload)))
        # A loop: an unbuffered file may take fewer bytes than it is given.
        while data:
            data = data[fh.write(data) or 0 :]

    def verify(self, data: Union[bytes, bytearray, memoryview]) -> memoryview:
        """Return the payload of signed ``data`` (what the inner serializer wrote).

        Raises:
            StashSignatureError: ``data`` is not signed with this key.
        """
        data = bytes(data) if not isinstance(data, bytes) else data
        if len(data) < _HEADER_SIZE or not data.startswith(_SIGNED_TAG):
            raise StashSignatureError('not signed (no stashworks signature header); refusing to deserialize it')
        # A view: the payload is not copied, only hashed and then read.
        payload = memoryview(data)[_HEADER_SIZE:]
        if not hmac.compare_digest(self._sign(payload), data[len(_SIGNED_TAG) : _HEADER_SIZE]):
            raise StashSignatureError('bad signature (altered, or signed with another key); refusing to deserialize it')
        return payload

    def loads(self, data: bytes) -> Any:
        """Return the value stored in ``data`` (all of a file), after checking its signature.

        Raises:
            StashSignatureError: ``data`` is not signed with this key.
        """
        payload = self.verify(data)
        inner = self.inner
        if type(inner) is PickleSerializer:
            return pickle.loads(payload)
        return inner.load(io.BytesIO(payload))

    def load(self, fh: IO[bytes]) -> Any:
        payload = self.verify(fh.read())
        inner = self.inner
        if type(inner) is PickleSerializer:
            return pickle.loads(payload)
        return inner.load(io.BytesIO(payload))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state['_mac']  # an HMAC object does not pickle; rebuilt from the key
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._set_key(self._key)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.inner!r})'


default_serializer = PickleSerializer()
"""The serializer stashes use when none is given."""


def serialize_into(serializer: Serializer, value: Any, fh: IO[bytes], what: str) -> None:
    """Write ``value`` to ``fh`` with ``serializer``, naming ``what`` if it cannot.

    Args:
        what: the value's description for the error, such as
            ``"item 'k' for /data/k.dat in DirectoryStash('/data')"``.

    Raises:
        SerializationError: the serializer refused the value (unpicklable,
            not JSON...); chained to its error.
        OSError: writing failed (a full disk...); left as it is so the
            caller can tell a bad value from a bad disk.
    """
    try:
        serializer.dump(value, fh)
    except OSError:
        raise
    except Exception as exc:
        raise SerializationError(f'cannot serialize {what}: {type(exc).__name__}: {exc}') from exc
