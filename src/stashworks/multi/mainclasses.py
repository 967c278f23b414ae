"""Classes of ``__main__`` that a job brings to a worker, made findable there.

A factory defined in a script, a notebook, ``python -c`` or a script read
from stdin lives in ``__main__``, and so do the classes it returns
(``@dataclass class Rec``).  dill sends such classes *by value*: the
worker gets a copy of ``Rec``, made when the job is unpickled.  The
worker then stores each value with the stash's own serializer (plain
pickle), which writes a class *by reference*, as ``__main__.Rec``, and
checks that this name leads back to the very class of the value.  In the
worker it does not: under ``fork``, ``__main__.Rec`` is the parent's
original class, not dill's copy; under ``spawn``, a script's ``__main__``
was run again (another class again), and ``python -c`` or a stdin script
has no ``Rec`` at all.  Every item then fails with "Can't pickle <class
'__main__.Rec'>: it's not the same object as __main__.Rec".

:func:`load` unpickles a job as dill does, notes every class it had to
create for ``__main__``, and then binds each top-level one to its name in
the worker's ``__main__``.  The worker's pickle then writes
``__main__.Rec``, which the parent (and anyone reading the stash from the
same script or notebook) resolves to its own ``Rec``.  Only the worker's
``__main__`` changes, and only names that hold a class or nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Any, Callable, Iterator

import dill

__all__ = ['load', 'adopt_main_classes', 'unreadable_main_hidden']

# The functions a dill pickle calls to make a class sent by value.
_CLASS_MAKERS = frozenset(
    {
        ('dill._dill', '_create_type'),
        ('dill.dill', '_create_type'),
        ('dill._dill', '_create_namedtuple'),
        ('dill.dill', '_create_namedtuple'),
        ('types', 'new_class'),  # classes with generic bases (Generic[T])
    }
)

_MAIN_NAMES = ('__main__', '__mp_main__')


class _Unpickler(dill.Unpickler):
    """dill's unpickler, keeping a list of the classes it creates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created: list[type] = []

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        if (module, name) in _CLASS_MAKERS:
            return self._recording(found)
        return found

    def _recording(self, make: Callable[..., Any]) -> Callable[..., Any]:
        def make_and_note(*args: Any, **kwargs: Any) -> Any:
            made = make(*args, **kwargs)
            if isinstance(made, type):
                self.created.append(made)
            return made

        return make_and_note


def adopt_main_classes(classes: list[type]) -> None:
    """Bind each top-level ``__main__`` class of ``classes`` to its name in this process's ``__main__``.

    A name that holds something other than a class (a function, a
    value) is left alone: the job's class then pickles as before.
    """
    main = sys.modules.get('__main__')
    if main is None:
        return
    for cls in classes:
        # __qualname__ is set after the class is made; by now it is final.
        if cls.__module__ not in _MAIN_NAMES or cls.__qualname__ != cls.__name__:
            continue
        current = getattr(main, cls.__name__, None)
        if current is None or isinstance(current, type):
            setattr(main, cls.__name__, cls)


def load(data: bytes) -> Any:
    """Unpickle ``data`` (made by :func:`dill.dumps`), adopting its ``__main__`` classes.

    Raises:
        Exception: whatever dill raises for data it cannot unpickle.
    """
    unpickler = _Unpickler(io.BytesIO(data))
    obj = unpickler.load()
    adopt_main_classes(unpickler.created)
    return obj


@contextlib.contextmanager
def unreadable_main_hidden() -> Iterator[None]:
    """While starting ``spawn``/``forkserver`` workers, hide a ``__main__`` file that does not exist.

    A spawned worker first runs the parent's main script again, from the
    path in ``__main__.__file__``.  A script read from stdin
    (``python - < job.py``) has ``__file__ == '<stdin>'``: the worker
    fails with ``FileNotFoundError: '<stdin>'`` before it can do
    anything, and the batch blamed the ``__main__`` guard.  Without a
    ``__file__`` the worker skips that step, as it does for
    ``python -c``; the job's own code reaches it by value (dill), so
    nothing is lost.
    """
    main = sys.modules.get('__main__')
    path = getattr(main, '__file__', None)
    spec = getattr(main, '__spec__', None)
    if main is None or not isinstance(path, str) or spec is not None or os.path.exists(path):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path
