"""Errors raised by stashworks.

Every error derives from :class:`StashError`.  Where a built-in exception
has the same meaning, the subclass inherits it too, so callers may catch
either (``except KeyError`` keeps working for a missing key).
"""

from __future__ import annotations

__all__ = [
    'StashError',
    'StashKeyError',
    'StashClosedError',
    'StashReadOnlyError',
    'StashWriteError',
    'StashReadError',
    'StashCorruptError',
    'StashSignatureError',
    'StashWarning',
    'SerializationError',
    'PersistError',
    'BatchError',
]


class StashError(Exception):
    """The root of every error stashworks raises."""


class StashKeyError(StashError, KeyError):
    """A key does not exist in a stash (or is not a valid key)."""

    def __str__(self) -> str:
        # KeyError.__str__ reprs its argument; a message reads better as is.
        return str(self.args[0]) if self.args else ''


class StashClosedError(StashError, ValueError):
    """A stash was used after :meth:`close`."""


class StashReadOnlyError(StashError, TypeError):
    """A write method was called on a read-only stash."""

    @classmethod
    def refusing(cls, stash: object, op: str, key: object = None, why: str = 'is read-only') -> 'StashReadOnlyError':
        """The error for ``op`` (of ``key``, if any) on ``stash``, which ``why``."""
        what = f' {key!r}' if key is not None else ''
        return cls(f'cannot {op}{what}: {stash!r} {why}')


class StashWriteError(StashError, OSError):
    """Writing an item failed; the previous value is left as it was."""


class StashReadError(StashError, OSError):
    """Reading failed for a reason other than a missing item or bad content.

    A permission error, an I/O error, a folder that is not a folder: the
    item may be fine, the stash cannot get at it.
    """


class SerializationError(StashError, ValueError):
    """A value could not be serialized (for example it is unpicklable)."""


class StashCorruptError(StashError, ValueError):
    """Stored data could not be read back (truncated, empty or garbage)."""


class StashSignatureError(StashCorruptError):
    """Stored data has no valid signature (unsigned, tampered, or signed with another key).

    Raised by :class:`~stashworks.SigningSerializer` before anything is
    deserialized.
    """


class StashWarning(UserWarning):
    """Something in a stash's storage looks wrong but nothing is lost (yet).

    For example a :class:`~stashworks.DirectoryStash` folder holding files
    that look like items but are not names it writes (a zensols folder
    opened without ``raw_names=True``).
    """


class PersistError(StashError):
    """A :func:`~stashworks.persisted` method or its file is misused."""


class BatchError(StashError, RuntimeError):
    """A batch could not run (bad configuration, unusable executor...)."""
