"""A stash that keeps each item in its own file in a directory."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import time
import warnings
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

from ._atomic import TEMP_PREFIX, atomic_write, is_temp_name, temp_name
from .errors import StashCorruptError, StashReadError, StashSignatureError, StashWarning, StashWriteError
from .serial import Serializer, default_serializer, serialize_into
from .stash import CloseableStash, V, check_key

__all__ = ['DirectoryStash', 'encode_key', 'decode_name', 'probe_case_insensitive']

logger = logging.getLogger(__name__)

# Characters kept as they are in a file name; everything else is written
# as %XX of its UTF-8 bytes.  '~' and '%' are never plain, which keeps the
# long-key names ('~' + sha256) and temp names ('.~sw-...') apart from
# every encoded key.
_PLAIN_RE = r'[A-Za-z0-9_\-][A-Za-z0-9_.\-]*'
_PLAIN = re.compile(_PLAIN_RE + r'\Z')
_UNSAFE = re.compile(r'[^A-Za-z0-9_.\-]')
# On a case-insensitive file system upper case letters are escaped too, so
# 'A' and 'a' stay two files.  The escapes' hex digits are always upper
# case and the plain letters lower case, so no two encoded names differ only
# in case.
_PLAIN_FOLD_RE = r'[a-z0-9_\-][a-z0-9_.\-]*'
_PLAIN_FOLD = re.compile(_PLAIN_FOLD_RE + r'\Z')
_UNSAFE_FOLD = re.compile(r'[^a-z0-9_.\-]')
_LONG = re.compile(r'~[0-9a-f]{64}\Z')
# The characters of a plain key, as bytes (see DirectoryStash._plain_stems).
_PLAIN_CHARS = b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-'
_PLAIN_FOLD_CHARS = b'abcdefghijklmnopqrstuvwxyz0123456789_.-'
# Called by filter() and map() over a listing, with no Python step per entry.
_is_file = os.DirEntry.is_file
_name_of = attrgetter('name')
# Listing a folder through a descriptor (see DirectoryStash._listdir).
_SCANDIR_FD = os.scandir in os.supports_fd and hasattr(os, 'O_DIRECTORY')
_DIR_FLAGS = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_CLOEXEC', 0)
_EMPTY = '%'  # '%' alone is no valid escape, so it can stand for ''
_LONG_KEY_SUFFIX = '~key'
# File names are limited to 255 bytes on every common file system; keep
# room for the pattern and the sidecar suffix.
_MAX_NAME = 200
_MAX_RAW_NAME = 255


def _escape(match: 're.Match[str]') -> str:
    return ''.join(f'%{b:02X}' for b in match.group().encode('utf-8', 'surrogatepass'))


def encode_key(key: str, fold: bool = False) -> str:
    """Encode any ``str`` key as a safe, reversible file name fragment.

    The result never contains ``/``, never starts with ``.``, and decodes
    back to exactly ``key`` with :func:`decode_name`.

    Args:
        fold: also escape upper case letters, for a case-insensitive file
            system (where ``A`` and ``a`` would be one file).
    """
    plain, unsafe = (_PLAIN_FOLD, _UNSAFE_FOLD) if fold else (_PLAIN, _UNSAFE)
    if plain.match(key):
        return key
    if key == '':
        return _EMPTY
    enc = unsafe.sub(_escape, key)
    if enc.startswith('.'):
        enc = '%2E' + enc[1:]
    return enc


def decode_name(enc: str, fold: bool = False) -> Optional[str]:
    """Decode a fragment made by :func:`encode_key`; ``None`` if it is not one."""
    if (_PLAIN_FOLD if fold else _PLAIN).match(enc):
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
    return key if encode_key(key, fold) == enc else None


def probe_case_insensitive(folder: Union[str, 'os.PathLike[str]']) -> Optional[bool]:
    """Whether ``folder`` is on a case-insensitive file system; ``None`` if it does not exist.

    A probe file (a temp name, never taken for a key) is created and looked
    up in upper case.  Where the folder cannot be written, its own name is
    looked up with the case of its letters swapped instead; a folder whose
    name has no letters then counts as case-sensitive.
    """
    folder = os.fspath(folder)
    probe = os.path.join(folder, temp_name())
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        head, name = os.path.split(os.path.abspath(folder))
        swapped = name.swapcase()
        if swapped == name:
            return False
        try:
            return os.path.samestat(os.stat(folder), os.stat(os.path.join(head, swapped)))
        except OSError:
            return False
    try:
        os.close(fd)
        head, name = os.path.split(probe)
        return os.path.lexists(os.path.join(head, name.upper()))
    finally:
        os.unlink(probe)


def _errno_name(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, '') or str(exc)


@dataclass(init=False, repr=False, eq=False)
class DirectoryStash(CloseableStash[V]):
    """Each item is a file in ``path``, named by ``pattern``.

    Writes are atomic (a temp file in the same directory, then
    :func:`os.replace`), so a crash or a concurrent reader never sees half
    an item.  Any ``str`` key works: it is encoded into a safe file name
    and round-trips exactly through :meth:`keys`.  :meth:`keys`,
    ``len()`` and :meth:`exists` never deserialize anything, and agree:
    only a regular file (or a link to one) named like an item is an item;
    a folder or a dangling link is not.

    On a case-insensitive file system (detected with a probe file when the
    folder is first used, or given with ``case_insensitive``), upper case
    letters in keys are escaped, so keys that differ only in case stay two
    items.

    Args:
        path: the directory; created on the first write.
        pattern: the file name of an item; ``{name}`` stands for the
            encoded key.
        serializer: how values become bytes (pickle by default).
        fsync: ``fsync`` each item before it replaces the old one.
        raw_names: use the key itself in the file name, unencoded, as
            zensols does, to read and write a zensols folder as it is.  A
            key that is no safe file name (holding ``/`` or a NUL, ``.``,
            ``..``, too long) is then refused with a :class:`ValueError`,
            and keys that differ only in case are one file on a
            case-insensitive file system.
        case_insensitive: ``None`` to detect, or force the answer (for a
            folder moved from a case-insensitive file system, say).

    Warns:
        StashWarning: once, when the folder holds files that look like
            items but are not names this stash writes (a zensols folder
            opened without ``raw_names=True``).
    """

    path: Path
    pattern: str = '{name}.dat'
    _path: Path = field(init=False, repr=False, compare=False)
    _dir: str = field(init=False, repr=False, compare=False)
    serializer: Optional[Serializer] = field(default=None, kw_only=True)
    fsync: bool = field(default=False, kw_only=True)
    raw_names: bool = field(default=False, kw_only=True)
    case_insensitive: Optional[bool] = field(default=None, kw_only=True)

    def __init__(
        self,
        path: Union[str, 'os.PathLike[str]'],
        pattern: str = '{name}.dat',
        serializer: Optional[Serializer] = None,
        fsync: bool = False,
        *,
        raw_names: bool = False,
        case_insensitive: Optional[bool] = None,
    ) -> None:
        self.path = path  # type: ignore[assignment]  # the setter makes it a Path
        self.pattern = pattern
        self.serializer = serializer
        self.fsync = fsync
        self.raw_names = raw_names
        self.case_insensitive = case_insensitive
        self.__post_init__()

    def __post_init__(self) -> None:
        """Finish initialization (also run by a dataclass subclass's constructor)."""
        super().__post_init__()
        pattern = self.pattern
        if not isinstance(pattern, str) or pattern.count('{name}') != 1 or '/' in pattern or os.sep in pattern:
            raise ValueError(f"pattern must contain '{{name}}' once and no '/': {pattern!r}")
        if self.serializer is None:
            self.serializer = default_serializer
        self._prefix, self._suffix = pattern.split('{name}')
        if self._prefix.startswith(TEMP_PREFIX):
            raise ValueError(f'pattern may not start with {TEMP_PREFIX!r}: {pattern!r}')
        # The longest plain key whose file name needs no hashing.
        self._plain_max = _MAX_NAME - len((self._prefix + self._suffix).encode('utf-8'))
        self._warned = False
        # time.time() of the last listing that held no hidden name, so no
        # temp file either (see remove_stale_temp_files); 0.0 for none.
        self._listed_clean = 0.0
        # None until the folder is first used (see _fold_mode).
        self._fold: Optional[bool] = None
        self._set_fold(bool(self.case_insensitive))
        if self.case_insensitive is None:
            self._fold = None

    def _set_fold(self, fold: bool) -> None:
        self._fold = fold
        self._plain = _PLAIN_FOLD if fold else _PLAIN
        # The characters of plain keys, and '/' (no file name holds one),
        # which joins a listing's names: a whole listing of item files with
        # plain keys is checked with a few passes in C (see _plain_stems).
        self._plain_chars = (_PLAIN_FOLD_CHARS if fold else _PLAIN_CHARS) + b'/'
        # A suffix that starts with '.' (so a name that is the suffix alone
        # is hidden) and holds only plain characters: a listing of plain
        # names then needs no stripping to be checked.
        self._plain_suffix = not self._suffix or (
            self._suffix[0] == '.'
            and self._suffix.isascii()
            and not self._suffix.encode().translate(None, self._plain_chars)
        )
        # A name that starts with '.' is never an item file unless the
        # pattern starts with one (no encoded key does), so temp files may
        # sit among the items without costing the fast path.
        self._hidden_ok = not self._prefix.startswith('.')

    def _fold_mode(self, create: bool = False) -> bool:
        """Whether keys are case-folded here, probing the folder on first use.

        Args:
            create: create the folder if needed (before a write), so that
                the probe can answer.
        """
        fold = self._fold
        if fold is not None:
            return fold
        found = probe_case_insensitive(self._path)
        if found is None and create:
            try:
                self._path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StashWriteError(f'cannot create folder {self._path} for {self!r}: {_errno_name(exc)}') from exc
            found = probe_case_insensitive(self._path)
        if found is None:
            # No folder, so no items: any spelling finds nothing; decide
            # once there is a folder to probe.
            return False
        if found:
            logger.info('%s is on a case-insensitive file system: upper case letters in keys are escaped', self._path)
        self._set_fold(found)
        return found

    # -- names -------------------------------------------------------------

    def _raw_file_name(self, key: str) -> str:
        name = self._prefix + key + self._suffix
        problem = None
        if key in ('.', '..') or name in ('.', '..'):
            problem = 'it is "." or ".."'
        elif '/' in key or os.sep in key or (os.altsep and os.altsep in key):
            problem = 'it holds a path separator'
        elif '\x00' in key:
            problem = 'it holds a NUL character'
        elif is_temp_name(name):
            problem = 'its file name would be taken for a temp file'
        else:
            try:
                size = len(os.fsencode(name))
            except UnicodeEncodeError:
                problem = 'it cannot be encoded as a file name'
            else:
                if size > _MAX_RAW_NAME:
                    problem = f'its file name would be {size} bytes (the limit is {_MAX_RAW_NAME})'
        if problem is not None:
            raise ValueError(
                f'key {key!r} cannot be a file name in {self!r} with raw_names=True: {problem}; '
                'use a DirectoryStash without raw_names to store any key'
            )
        return name

    def _file_name(self, key: str, create: bool = False) -> str:
        if self.raw_names:
            return self._raw_file_name(key)
        fold = self._fold if self._fold is not None else self._fold_mode(create)
        if len(key) <= self._plain_max and self._plain.match(key):
            # Most keys: nothing to escape, nothing to hash.
            return self._prefix + key + self._suffix
        name = self._prefix + encode_key(key, fold) + self._suffix
        if len(name.encode('utf-8')) > _MAX_NAME:
            digest = hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()
            name = f'{self._prefix}~{digest}{self._suffix}'
        return name

    def key_to_path(self, key: str) -> Path:
        """The file that holds (or would hold) the item ``key``.

        Raises:
            ValueError: with ``raw_names``, ``key`` is no safe file name.
        """
        return Path(self._item_path(key))

    def _item_path(self, key: str, create: bool = False) -> str:
        """:meth:`key_to_path` as a ``str``, for the hot paths."""
        if not isinstance(key, str):
            check_key(key, self)
        return self._dir + self._file_name(key, create)

    def _long_key(self, name: str) -> Optional[str]:
        """The key of a long-key file, read from its sidecar."""
        try:
            return (self.path / (name + _LONG_KEY_SUFFIX)).read_bytes().decode('utf-8', 'surrogatepass')
        except (OSError, UnicodeDecodeError):
            return None

    def _listdir(self) -> list[str]:
        """The name of every regular file (or link to one) in the folder; none if there is no folder.

        Raises:
            StashReadError: the folder cannot be listed.
        """
        try:
            if not _SCANDIR_FD:
                with os.scandir(self._path) as entries:
                    return list(map(_name_of, filter(_is_file, entries)))
            # Scanned through a descriptor: an entry then costs its name
            # alone (from a path, each also gets its full path, built and
            # decoded).  One scandir: is_file() answers from the directory
            # entry itself (no stat) except for links, so folders and
            # dangling links are left out at almost no cost.
            fd = os.open(self._path, _DIR_FLAGS)
            try:
                with os.scandir(fd) as entries:
                    return list(map(_name_of, filter(_is_file, entries)))
            finally:
                os.close(fd)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StashReadError(f'cannot list the items of {self!r} in {self._path}: {_errno_name(exc)}') from exc

    def _plain_stems(self, names: list[str]) -> Optional[tuple[str, str, int, int]]:
        """The keys of ``names`` as ``(text, sep, count, hidden)``: ``text.split(sep)`` is the keys and a last ``''``.

        ``count`` is the number of keys, ``hidden`` how many names are
        hidden.  Only when every name that is not hidden is an item file
        with a plain key (the usual listing); else ``None``.  Hidden names
        (a temp file, say) are skipped where no item name can be hidden.  A
        few passes in C over the joined listing (``/`` is in no file name)
        replace a match and a slice per name.
        """
        if not names:
            return '', '/', 0, 0
        joined = '/'.join(names)
        hidden = 0
        if self._hidden_ok and (joined[0] == '.' or '/.' in joined):
            visible = [name for name in names if name[0] != '.']
            hidden = len(names) - len(visible)
            if not visible:
                return '', '/', 0, hidden
            joined = '/'.join(visible)
        count = len(names) - hidden
        prefix, suffix = self._prefix, self._suffix
        joined += '/'
        end = suffix + '/'
        # Each '<suffix>/' holds one '/', the end of one name: as many as
        # there are names means every name ends with the suffix.
        if suffix and joined.count(end) != count:
            return None
        if not prefix and self._plain_suffix:
            # The names tell the keys as they are: no name left starts with
            # '.', so no key is empty or starts with one, and names of plain
            # characters have plain keys.
            if not joined.isascii() or joined.encode('ascii').translate(None, self._plain_chars):
                return None
            return joined, end, count, hidden
        stems = joined.replace(end, '/') if suffix else joined
        if prefix:
            stems = '/' + stems
            if stems.count('/' + prefix) != count:
                return None
            stems = stems.replace('/' + prefix, '/')[1:]
        # A plain key is not empty, does not start with '.', and holds
        # only plain characters.
        if (
            stems[0] in './'
            or '//' in stems
            or '/.' in stems
            or not stems.isascii()
            or stems.encode('ascii').translate(None, self._plain_chars)
        ):
            return None
        return stems, '/', count, hidden

    def _is_foreign_item(self, name: str) -> bool:
        """Whether ``name`` (not a name this stash writes) looks like an item file all the same."""
        if not (name.startswith(self._prefix) and name.endswith(self._suffix)) or is_temp_name(name):
            return False
        stem = name[: -len(_LONG_KEY_SUFFIX)] if name.endswith(_LONG_KEY_SUFFIX) else None
        if stem is not None and _LONG.match(stem[len(self._prefix) : len(stem) - len(self._suffix) or None]):
            return False  # the sidecar of a long key
        return len(name) > len(self._prefix) + len(self._suffix)

    def _warn_foreign(self, foreign: list[str]) -> None:
        if self._warned or not foreign:
            return
        self._warned = True
        warnings.warn(
            f'{len(foreign)} file(s) in {self._path} look like items of {self!r} but are not names it '
            f'writes (such as {sorted(foreign)[0]!r}), so they are not listed as keys; a folder written '
            'by zensols keeps raw keys in its file names: open it with DirectoryStash(path, raw_names=True)',
            StashWarning,
            stacklevel=4,
        )

    def _check_hidden(self, names: list[str]) -> None:
        # A zensols key starting with '.' gives a hidden file; say so
        # rather than skip it without a word.
        if not self._warned:
            self._warn_foreign([n for n in names if n[0] == '.' and self._is_foreign_item(n)])

    def _iter_names(self, names: Optional[list[str]] = None) -> Iterator[tuple[str, str]]:
        """Yield ``(file name, key)`` for every item file among ``names`` (default: a fresh listing)."""
        prefix, suffix = self._prefix, self._suffix
        start, stop = len(prefix), -len(suffix) or None
        if names is None:
            names = self._listdir()
        if self.raw_names:
            for name in names:
                if (
                    name.startswith(prefix)
                    and name.endswith(suffix)
                    and len(name) >= start + len(suffix)
                    and not is_temp_name(name)
                ):
                    yield name, name[start:stop]
            return
        fold = self._fold_mode() if names else False
        plain = self._plain
        foreign = []
        for name in names:
            if not (name.startswith(prefix) and name.endswith(suffix)):
                continue
            enc = name[start:stop]
            if plain.match(enc):
                yield name, enc
                continue
            if _LONG.match(enc):
                key = self._long_key(name)
            else:
                key = decode_name(enc, fold)
            if key is not None:
                yield name, key
            elif not self._warned and self._is_foreign_item(name):
                foreign.append(name)
        self._warn_foreign(foreign)

    # -- Stash -------------------------------------------------------------

    def keys(self) -> list[str]:
        names = self._listdir()
        if not self.raw_names:
            if names and self._fold is None:
                self._fold_mode()
            plain = self._plain_stems(names)
            if plain is not None:
                text, sep, count, hidden = plain
                self._note_clean_listing(hidden)
                if hidden:
                    self._check_hidden(names)
                if not count:
                    return []
                keys = text.split(sep)
                keys.pop()  # the '' after the last separator
                return keys
        return [key for _, key in self._iter_names(names)]

    def __len__(self) -> int:
        # Counts exactly what keys() lists, without building the list.
        names = self._listdir()
        if not self.raw_names:
            if names and self._fold is None:
                self._fold_mode()
            plain = self._plain_stems(names)
            if plain is not None:
                _, _, count, hidden = plain
                self._note_clean_listing(hidden)
                if hidden:
                    self._check_hidden(names)
                return count
        return sum(1 for _ in self._iter_names(names))

    def _note_clean_listing(self, hidden: int) -> None:
        # Temp names are hidden names; _hidden_among_plain counts them only
        # where item names cannot be hidden themselves.
        if hidden == 0 and self._hidden_ok:
            self._listed_clean = time.time()

    def exists(self, key: str) -> bool:
        # One stat, as os.path.isfile does, without its extra call layer.
        try:
            st = os.stat(self._item_path(key))
        except (FileNotFoundError, NotADirectoryError):
            return False
        except ValueError:
            return False  # raw_names: a key that cannot be a file name is not there
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return False
            raise StashReadError(f'cannot look up item {key!r} in {self!r}: {_errno_name(exc)}') from exc
        return stat.S_ISREG(st.st_mode)

    def load(self, key: str) -> V:
        path = self._item_path(key)
        serializer = self.serializer
        if getattr(serializer, 'reads_whole_file', False):
            # It takes the bytes (loads): one open, fstat and read, no file object.
            data = self._read_bytes(key, path)
            try:
                return serializer.loads(data)  # type: ignore[union-attr]
            except Exception as exc:
                raise self._corrupt(key, path, exc) from exc
        try:
            # Opened outside `with` so that only a missing file means a
            # missing key; errors while reading are corruption.
            fh = open(path, 'rb')  # noqa: SIM115
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # A folder named like an item is no item: keys() skips it too.
            raise self.missing_error(key) from None
        except OSError as exc:
            raise StashReadError(f'cannot read item {key!r} from {path} in {self!r}: {_errno_name(exc)}') from exc
        with fh:
            try:
                return serializer.load(fh)  # type: ignore[union-attr]
            except Exception as exc:
                raise self._corrupt(key, path, exc) from exc

    def _corrupt(self, key: str, path: str, exc: Exception) -> StashCorruptError:
        error = StashSignatureError if isinstance(exc, StashSignatureError) else StashCorruptError
        return error(f'cannot read item {key!r} from {path} in {self!r}: {type(exc).__name__}: {exc or "(no message)"}')

    def _read_bytes(self, key: str, path: str) -> bytes:
        """The content of the item file ``path``; a missing key unless it is a regular file."""
        try:
            # O_NONBLOCK: a FIFO named like an item must not hang the read.
            fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_CLOEXEC', 0))
        except (FileNotFoundError, NotADirectoryError):
            raise self.missing_error(key) from None
        except OSError as exc:
            raise StashReadError(f'cannot read item {key!r} from {path} in {self!r}: {_errno_name(exc)}') from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                # A folder (or FIFO...) named like an item is no item: keys() skips it too.
                raise self.missing_error(key)
            # Items are replaced whole, never grown: read what fstat says is there.
            chunks, left = [], st.st_size
            while left > 0:
                chunk = os.read(fd, left)
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return chunks[0] if len(chunks) == 1 else b''.join(chunks)
        except OSError as exc:
            raise StashReadError(f'cannot read item {key!r} from {path} in {self!r}: {_errno_name(exc)}') from exc
        finally:
            os.close(fd)

    def dump(self, key: str, value: Any) -> None:
        path = self._item_path(key, create=True)
        # Only a hashed name has '~' right after the prefix; encoded keys escape it.
        if not self.raw_names and path.startswith('~', len(self._dir) + len(self._prefix)):
            self._write(key, path + _LONG_KEY_SUFFIX, key.encode('utf-8', 'surrogatepass'), raw=True)
        self._write(key, path, value)

    def _write(self, key: str, path: str, value: Any, raw: bool = False) -> None:
        # A serializer that writes whole files writes them in one call:
        # a buffer in between would only copy the bytes.
        buffering = 0 if not raw and getattr(self.serializer, 'reads_whole_file', False) else -1

        def write(fh: IO[bytes]) -> None:
            if raw:
                fh.write(value)
                return
            serialize_into(self.serializer, value, fh, f'item {key!r} for {path} in {self!r}')  # type: ignore[arg-type]

        try:
            try:
                atomic_write(path, write, fsync=self.fsync, buffering=buffering)
            except FileNotFoundError:
                # The folder may be missing, or another process may be
                # creating it right now: (re)create it and try once more.
                self.path.mkdir(parents=True, exist_ok=True)
                atomic_write(path, write, fsync=self.fsync, buffering=buffering)
        except OSError as exc:
            err = StashWriteError(f'cannot write item {key!r} to {path} in {self!r}: {_errno_name(exc)}')
            err.errno = exc.errno
            raise err from exc

    def _unlink(self, key: str, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if os.path.isdir(path):
                return  # a folder named like an item is no item (see load)
            err = StashWriteError(f'cannot delete item {key!r} at {path} in {self!r}: {_errno_name(exc)}')
            err.errno = exc.errno
            raise err from exc

    def delete(self, key: str) -> None:
        try:
            path = self._item_path(key)
        except ValueError:
            return  # raw_names: a key that cannot be a file name is not there
        self._unlink(key, path)
        if not self.raw_names:
            self._unlink(key, path + _LONG_KEY_SUFFIX)

    def clear(self) -> None:
        for name, key in list(self._iter_names()):
            path = self._dir + name
            self._unlink(key, path)
            if not self.raw_names:
                self._unlink(key, path + _LONG_KEY_SUFFIX)

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
        now = time.time()
        cutoff = now - min_age
        if 0 <= now - self._listed_clean < min(min_age, 60.0):
            # A listing moments ago held no temp file, and a temp file made
            # since is younger than min_age: a batch that has just listed
            # the folder to plan is spared listing it again.
            return 0
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


def _get_path(self: DirectoryStash) -> Path:
    """The directory that holds the items."""
    return self._path


def _set_path(self: DirectoryStash, path: Union[str, 'os.PathLike[str]']) -> None:
    self._path = Path(path)
    # Item paths are built as plain strings: a Path per call costs more
    # than the stat that exists() makes.
    self._dir = os.path.join(self._path, '')


# Set after the dataclass is made, or the property would be taken for the
# default value of the field ``path``.
setattr(DirectoryStash, 'path', property(_get_path, _set_path, doc=_get_path.__doc__))  # noqa: B010
