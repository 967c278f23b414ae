"""Serializer strategies: how a value becomes bytes and back.

A stash that stores bytes takes a :class:`Serializer` instead of calling
:mod:`pickle` itself, so the format is chosen by the user, not hard-wired.
"""

from __future__ import annotations

import json
import pickle
from typing import IO, Any, Protocol, runtime_checkable

from .errors import SerializationError

__all__ = ['Serializer', 'PickleSerializer', 'DillSerializer', 'JsonSerializer', 'default_serializer', 'serialize_into']


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
