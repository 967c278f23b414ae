"""A stash that keeps each item in its own file in a directory."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

from ._atomic import TEMP_PREFIX, atomic_write, is_temp_name
from .errors import StashCorruptError, StashWriteError
from .serial import Serializer, default_serializer, serialize_into
from .stash import CloseableStash, check_key

__all__ = ['DirectoryStash', 'encode_key', 'decode_name']

logger = logging.getLogger(__name__)

# Characters kept as they are in a file name; everything else is written
# as %XX of its UTF-8 bytes.  '~' and '%' are never plain, which keeps the
# long-key names ('~' + sha256) and temp names ('.~sw-...') apart from
# every encoded key.
_PLAIN_RE = r'[A-Za-z0-9_\-][A-Za-z0-9_.\-]*'
_PLAIN = re.compile(_PLAIN_RE + r'\Z')
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
        # The longest plain key whose file name needs no hashing.
        self._plain_max = _MAX_NAME - len((self._prefix + self._suffix).encode('utf-8'))
        # Matches a whole listing joined by '/' (which no file name holds)
        # when every name is an item file with a plain key: one regex pass
        # instead of a filter, a slice and a match per name.
        item = re.escape(self._prefix) + _PLAIN_RE + re.escape(self._suffix)
        # A name that starts with '.' is never an item file unless the
        # pattern starts with one (no encoded key does), so the batch's
        # '.stashworks' folder and temp files may sit among the items
        # without costing the fast path.
        self._hidden_ok = not self._prefix.startswith('.')
        entry = f'(?:{item}|\\.[^/]*)' if self._hidden_ok else item
        self._all_plain = re.compile(f'{entry}(?:/{entry})*\\Z')

    @property
    def path(self) -> Path:
        """The directory that holds the items."""
        return self._path

    @path.setter
    def path(self, path: Union[str, 'os.PathLike[str]']) -> None:
        self._path = Path(path)
        # Item paths are built as plain strings: a Path per call costs more
        # than the stat that exists() makes.
        self._dir = os.path.join(self._path, '')

    # -- names -------------------------------------------------------------

    def _file_name(self, key: str) -> str:
        if len(key) <= self._plain_max and _PLAIN.match(key):
            # Most keys: nothing to escape, nothing to hash.
            return self._prefix + key + self._suffix
        name = self._prefix + encode_key(key) + self._suffix
        if len(name.encode('utf-8')) > _MAX_NAME:
            digest = hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()
            name = f'{self._prefix}~{digest}{self._suffix}'
        return name

    def key_to_path(self, key: str) -> Path:
        """The file that holds (or would hold) the item ``key``."""
        return Path(self._item_path(key))

    def _item_path(self, key: str) -> str:
        """:meth:`key_to_path` as a ``str``, for the hot paths."""
        if not isinstance(key, str):
            check_key(key, self)
        return self._dir + self._file_name(key)

    def _long_key(self, name: str) -> Optional[str]:
        """The key of a long-key file, read from its sidecar."""
        try:
            return (self.path / (name + _LONG_KEY_SUFFIX)).read_bytes().decode('utf-8', 'surrogatepass')
        except (OSError, UnicodeDecodeError):
            return None

    def _listdir(self) -> list[str]:
        """Every file name in the directory; none if it does not exist yet."""
        try:
            # listdir, not scandir: only names are needed, and a DirEntry
            # per file costs more than the name alone.
            return os.listdir(self._path)
        except FileNotFoundError:
            return []

    def _hidden_among_plain(self, names: list[str]) -> Optional[int]:
        """How many of ``names`` are hidden, if all others are item files with plain keys; else ``None``.

        The usual listing (plain keys, perhaps a hidden folder or temp
        file) is answered with one regex pass.
        """
        if not names:
            return 0
        joined = '/'.join(names)
        if self._all_plain.match(joined) is None:
            return None
        if not self._hidden_ok:
            return 0
        return joined.count('/.') + (joined[0] == '.')

    def _iter_names(self, names: Optional[list[str]] = None) -> Iterator[tuple[str, str]]:
        """Yield ``(file name, key)`` for every item file among ``names`` (default: a fresh listing)."""
        prefix, suffix = self._prefix, self._suffix
        start, stop = len(prefix), -len(suffix) or None
        for name in self._listdir() if names is None else names:
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
        names = self._listdir()
        hidden = self._hidden_among_plain(names)
        if hidden is not None:
            start, stop = len(self._prefix), -len(self._suffix) or None
            if hidden:
                return [name[start:stop] for name in names if name[0] != '.']
            return [name[start:stop] for name in names]
        return [key for _, key in self._iter_names(names)]

    def __len__(self) -> int:
        # Counts exactly what keys() lists, without building the list.
        names = self._listdir()
        hidden = self._hidden_among_plain(names)
        if hidden is not None:
            return len(names) - hidden
        return sum(1 for _ in self._iter_names(names))

    def exists(self, key: str) -> bool:
        # One stat, as os.path.isfile does, without its extra call layer.
        try:
            st = os.stat(self._item_path(key))
        except (OSError, ValueError):
            return False
        return stat.S_ISREG(st.st_mode)

    def load(self, key: str) -> Any:
        path = self._item_path(key)
        try:
            # Opened outside `with` so that only a missing file means a
            # missing key; errors while reading are corruption.
            fh = open(path, 'rb')  # noqa: SIM115
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
        path = self._item_path(key)
        # Only a hashed name has '~' right after the prefix; encoded keys escape it.
        if path.startswith('~', len(self._dir) + len(self._prefix)):
            self._write(key, path + _LONG_KEY_SUFFIX, key.encode('utf-8', 'surrogatepass'), raw=True)
        self._write(key, path, value)

    def _write(self, key: str, path: str, value: Any, raw: bool = False) -> None:
        def write(fh: IO[bytes]) -> None:
            if raw:
                fh.write(value)
                return
            serialize_into(self.serializer, value, fh, f'item {key!r} for {path} in {self!r}')

        try:
            try:
                atomic_write(path, write, fsync=self.fsync)
            except FileNotFoundError:
                # The folder may be missing, or another process may be
                # creating it right now: (re)create it and try once more.
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

    def remove_stale_temp_files(self, min_age: float = 3600.0) -> int:
        """Remove the temp files of writers that died mid-write.

        A writer killed outright (SIGKILL, the OOM killer, a lost node)
        cannot remove its temp file.  Such files never show as keys, but
        they take space.  A live writer keeps writing to its temp file, so
        one untouched for ``min_age`` seconds was abandoned.

        Args:
            min_age: seconds since a temp file was last modified before it
                counts as abandoned.

        Returns:
            How many files were removed.
        """
        cutoff = time.time() - min_age
        removed = 0
        for name in self._listdir():
            if not is_temp_name(name):
                continue
            path = self.path / name
            try:
                if path.stat().st_mtime <= cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # its writer finished or another sweep got there first
        if removed:
            logger.info('removed %d abandoned temp files from %r', removed, self)
        return removed

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}')"
