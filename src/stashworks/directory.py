"""A stash that keeps each item in its own file in a directory."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

from ._atomic import TEMP_PREFIX, atomic_write
from .errors import SerializationError, StashCorruptError, StashWriteError
from .serial import Serializer, default_serializer
from .stash import CloseableStash, check_key

__all__ = ['DirectoryStash', 'encode_key', 'decode_name']

logger = logging.getLogger(__name__)

# Characters kept as they are in a file name; everything else is written
# as %XX of its UTF-8 bytes.  '~' and '%' are never plain, which keeps the
# long-key names ('~' + sha256) and temp names ('.~sw-...') apart from
# every encoded key.
_PLAIN = re.compile(r'[A-Za-z0-9_\-][A-Za-z0-9_.\-]*\Z')
_UNSAFE = re.compile(r'[^A-Za-z0-9_.\-]')
_LONG = re.compile(r'~[0-9a-f]{64}\Z')
_EMPTY = '%'  # '%' alone is no valid escape, so it can stand for ''
_LONG_KEY_SUFFIX = '~key'
# File names are limited to 255 bytes on every common file system; keep
# room for the pattern and the sidecar suffix.
_MAX_NAME = 200


def _escape(match: 're.Match[str]') -> str:
    return ''.join(f'%{b:02X}' for b in match.group().encode('utf-8', 'surrogatepass'))


def encode_key(key: str) -> str:
    """Encode any ``str`` key as a safe, reversible file name fragment.

    The result never contains ``/``, never starts with ``.``, and decodes
    back to exactly ``key`` with :func:`decode_name`.
    """
    if _PLAIN.match(key):
        return key
    if key == '':
        return _EMPTY
    enc = _UNSAFE.sub(_escape, key)
    if enc.startswith('.'):
        enc = '%2E' + enc[1:]
    return enc


def decode_name(enc: str) -> Optional[str]:
    """Decode a fragment made by :func:`encode_key`; ``None`` if it is not one."""
    if _PLAIN.match(enc):
        return enc
    if enc == _EMPTY:
        return ''
    try:
        key = re.sub(
            r'(?:%[0-9A-F]{2})+',
            lambda m: bytes.fromhex(m.group().replace('%', '')).decode('utf-8', 'surrogatepass'),
            enc,
        )
    except UnicodeDecodeError:
        return None
    # Only the canonical spelling of a key counts; a stray file such as
    # 'my file.dat' is not mistaken for the key 'my file'.
    return key if encode_key(key) == enc else None


class DirectoryStash(CloseableStash):
    """Each item is a file in ``path``, named by ``pattern``.

    Writes are atomic (a temp file in the same directory, then
    :func:`os.replace`), so a crash or a concurrent reader never sees half
    an item.  Any ``str`` key works: it is encoded into a safe file name
    and round-trips exactly through :meth:`keys`.  :meth:`keys`,
    ``len()`` and :meth:`exists` never deserialize anything.

    Args:
        path: the directory; created on the first write.
        pattern: the file name of an item; ``{name}`` stands for the
            encoded key.
        serializer: how values become bytes (pickle by default).
        fsync: ``fsync`` each item before it replaces the old one.
    """

    def __init__(
        self,
        path: Union[str, 'os.PathLike[str]'],
        pattern: str = '{name}.dat',
        serializer: Optional[Serializer] = None,
        fsync: bool = False,
    ) -> None:
        if pattern.count('{name}') != 1 or '/' in pattern or os.sep in pattern:
            raise ValueError(f"pattern must contain '{{name}}' once and no '/': {pattern!r}")
        self.path = Path(path)
        self.pattern = pattern
        self.serializer = serializer if serializer is not None else default_serializer
        self.fsync = fsync
        self._prefix, self._suffix = pattern.split('{name}')
        if self._prefix.startswith(TEMP_PREFIX):
            raise ValueError(f'pattern may not start with {TEMP_PREFIX!r}: {pattern!r}')

    # -- names -------------------------------------------------------------

    def _file_name(self, key: str) -> str:
        name = self._prefix + encode_key(key) + self._suffix
        if len(name.encode('utf-8')) > _MAX_NAME:
            digest = hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()
            name = f'{self._prefix}~{digest}{self._suffix}'
        return name

    def key_to_path(self, key: str) -> Path:
        """The file that holds (or would hold) the item ``key``."""
        return self.path / self._file_name(check_key(key, self))

    def _long_key(self, name: str) -> Optional[str]:
        """The key of a long-key file, read from its sidecar."""
        try:
            return (self.path / (name + _LONG_KEY_SUFFIX)).read_bytes().decode('utf-8', 'surrogatepass')
        except (OSError, UnicodeDecodeError):
            return None

    def _iter_names(self) -> Iterator[tuple[str, str]]:
        """Yield ``(file name, key)`` for every item file, with one scandir."""
        prefix, suffix = self._prefix, self._suffix
        start, stop = len(prefix), -len(suffix) or None
        try:
            it = os.scandir(self.path)
        except FileNotFoundError:
            return
        with it:
            for entry in it:
                name = entry.name
                if not (name.startswith(prefix) and name.endswith(suffix)):
                    continue
                enc = name[start:stop]
                if _PLAIN.match(enc):
                    yield name, enc
                    continue
                if _LONG.match(enc):
                    key = self._long_key(name)
                else:
                    key = decode_name(enc)
                if key is not None:
                    yield name, key

    # -- Stash -------------------------------------------------------------

    def keys(self) -> list[str]:
        return [key for _, key in self._iter_names()]

    def __len__(self) -> int:
        return sum(1 for _ in self._iter_names())

    def exists(self, key: str) -> bool:
        return os.path.isfile(self.key_to_path(key))

    def load(self, key: str) -> Any:
        path = self.key_to_path(key)
        try:
            fh = open(path, 'rb')
        except (FileNotFoundError, NotADirectoryError):
            raise self.missing_error(key) from None
        with fh:
            try:
                return self.serializer.load(fh)
            except Exception as exc:
                raise StashCorruptError(
                    f'cannot read item {key!r} from {path} in {self!r}: '
                    f'{type(exc).__name__}: {exc or "(no message)"}'
                ) from exc

    def dump(self, key: str, value: Any) -> None:
        path = self.key_to_path(key)
        if _LONG.match(path.name[len(self._prefix) : -len(self._suffix) or None]):
            self._write(key, path.with_name(path.name + _LONG_KEY_SUFFIX), key.encode('utf-8', 'surrogatepass'), raw=True)
        self._write(key, path, value)

    def _write(self, key: str, path: Path, value: Any, raw: bool = False) -> None:
        def write(fh: IO[bytes]) -> None:
            if raw:
                fh.write(value)
                return
            try:
                self.serializer.dump(value, fh)
            except OSError:
                raise
            except Exception as exc:
                raise SerializationError(
                    f'cannot serialize item {key!r} for {path} in {self!r}: {type(exc).__name__}: {exc}'
                ) from exc

        try:
            try:
                atomic_write(path, write, fsync=self.fsync)
            except FileNotFoundError:
                if self.path.is_dir():
                    raise
                self.path.mkdir(parents=True, exist_ok=True)
                atomic_write(path, write, fsync=self.fsync)
        except OSError as exc:
            err = StashWriteError(f'cannot write item {key!r} to {path} in {self!r}: {exc.strerror or exc}')
            err.errno = exc.errno
            raise err from exc

    def delete(self, key: str) -> None:
        path = self.key_to_path(key)
        for p in (path, path.with_name(path.name + _LONG_KEY_SUFFIX)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def clear(self) -> None:
        for name, _ in list(self._iter_names()):
            for n in (name, name + _LONG_KEY_SUFFIX):
                try:
                    os.unlink(self.path / n)
                except FileNotFoundError:
                    pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}')"
