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
    'StashCorruptError',
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


class StashWriteError(StashError, OSError):
    """Writing an item failed; the previous value is left as it was."""


class SerializationError(StashError, ValueError):
    """A value could not be serialized (for example it is unpicklable)."""


class StashCorruptError(StashError, ValueError):
    """Stored data could not be read back (truncated, empty or garbage)."""


class PersistError(StashError):
    """A :func:`~stashworks.persisted` method or its file is misused."""


class BatchError(StashError, RuntimeError):
    """A batch could not run (bad configuration, unusable executor...)."""

