"""A stable fingerprint of the code that computes a batch's items.

:func:`fingerprint` digests a function, a bound method (``_process`` of a
:class:`~stashworks.MultiProcessStash` subclass), a callable object or a
:func:`functools.partial` together with everything of the user's own code
it reaches: its constants, the module-level values and closure values it
reads, and (recursively) the functions and classes of the user's modules
it uses.  Two runs of the same code agree, whatever the process, the
interpreter run or ``PYTHONHASHSEED``; editing a comment, a docstring, or
code above the function (which moves its line numbers) changes nothing.

Why code objects and not source text: every function has a code object
(lambdas, closures, functions made by ``exec`` or received through dill,
code whose file has changed since it was imported), while source text
needs the file and, for a lambda, cannot be told apart from the other code
on its line.  The bytecode is read instruction by instruction (:mod:`dis`)
with each argument resolved to what it names (the constant, the global,
the local variable), so docstrings (a constant no instruction loads) and
line numbers (kept outside the instructions) are left out by construction.
The price: a new Python minor version compiles to other bytecode, so its
fingerprints differ; pin ``version=`` to carry items across an upgrade.

What is the user's own code: a module whose file lies outside the standard
library and the site-packages folders (``__main__``, a project's modules,
an editable install), or code with no module at all.  Anything else (the
standard library, installed packages, stashworks itself) is named, not
read: ``module.qualname`` plus the top-level package's ``__version__``
when it has one, so upgrading an installed package changes the
fingerprint but its internals are never walked.

The state of an object whose method runs (a callable object's
attributes, a stash's folder and options) is configuration, not code, and
is left out: such values often differ from run to run (paths, handles)
without changing what is computed.  Closure values, default arguments and
:func:`functools.partial` arguments are part of the code and count.

Values are encoded canonically: sets and dict keys sorted, floats by
``repr``, nothing by ``id()`` or ``hash()``.  An object that is not plain
data (and not of a user class, whose attributes are encoded) is digested
through its pickle; one that cannot be pickled is encoded as its type's
qualified name only, so a change inside it goes unseen (name a
``version=`` for such code).
"""

from __future__ import annotations

import builtins
import dis
import enum
import functools
import hashlib
import inspect
import os
import pickle
import site
import sys
import sysconfig
import types
from typing import Any, Iterable, Optional

__all__ = ['fingerprint']

# Opcodes with no meaning for what the code computes: they mark line
# starts (NOP), interpreter entry points (RESUME) or widen an argument.
_SKIP_OPS = frozenset({'NOP', 'RESUME', 'CACHE', 'EXTENDED_ARG', 'PRECALL'})

# Opcodes whose argument is a name the function looks up in its module.
_GLOBAL_OPS = frozenset({'LOAD_GLOBAL', 'LOAD_NAME', 'STORE_GLOBAL', 'DELETE_GLOBAL', 'LOAD_FROM_DICT_OR_GLOBALS'})

# Code-object flags that change what a call does (generator, *args...),
# as opposed to optimisation flags that vary with nesting.
_FLAG_MASK = (
    inspect.CO_VARARGS
    | inspect.CO_VARKEYWORDS
    | inspect.CO_GENERATOR
    | inspect.CO_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
    | inspect.CO_ITERABLE_COROUTINE
)

# Class attributes that describe where or how a class was written, not
# what it does.
_CLASS_SKIP = frozenset(
    {
        '__dict__',
        '__weakref__',
        '__doc__',
        '__module__',
        '__qualname__',
        '__firstlineno__',
        '__static_attributes__',
        '__annotations__',
        '__orig_bases__',
        '__parameters__',
        '__abstractmethods__',
        # Added to a class by pickling its instances (copyreg), not by its code.
        '__slotnames__',
        # What dataclass generated from the class body, whose code (the
        # generated __init__ with its defaults) is walked anyway.
        '__dataclass_fields__',
        '__dataclass_params__',
    }
)

# The library's own package: named, never walked, and no version folded in
# (upgrading stashworks does not change what the user's code computes).
_OWN_PACKAGE = __name__.split('.')[0]

# Digest length in bytes (the fingerprint is twice as many hex digits).
_DIGEST_SIZE = 8


def fingerprint(obj: Any, *, ignore: Iterable[str] = ()) -> str:
    """The fingerprint of the code ``obj`` runs, as 16 hex digits.

    Args:
        obj: a function, a bound method, a callable object, a
            :func:`functools.partial`, or a class.
        ignore: attribute names of the root object's class (and of the
            instance) left out, e.g. ``_create_data`` of a
            :class:`~stashworks.MultiProcessStash`, which says which units
            there are, not how an item is computed.

    Returns:
        A digest that is the same for the same code in any process and
        any interpreter run of the same Python minor version.
    """
    walker = _Walker(frozenset(ignore))
    token = walker.root(obj)
    return _digest(token)


def _digest(token: Any) -> str:
    # repr of nested tuples of str/int/float/bytes/bool/None is
    # deterministic (no sets or dicts reach this point).
    return hashlib.blake2b(repr(token).encode('utf-8'), digest_size=_DIGEST_SIZE).hexdigest()


@functools.cache
def _library_roots() -> tuple[str, ...]:
    paths = set()
    for name in ('stdlib', 'platstdlib', 'purelib', 'platlib'):
        path = sysconfig.get_paths().get(name)
        if path:
            paths.add(os.path.realpath(path))
    try:
        paths.update(os.path.realpath(p) for p in site.getsitepackages())
    except AttributeError:  # some virtualenv flavours have no getsitepackages
        pass
    user_site = site.getusersitepackages() if hasattr(site, 'getusersitepackages') else None
    if isinstance(user_site, str):
        paths.add(os.path.realpath(user_site))
    return tuple(sorted(p.rstrip(os.sep) + os.sep for p in paths))


@functools.lru_cache(maxsize=4096)
def _is_user_module_file(path: str) -> bool:
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if 'site-packages' in parts or 'dist-packages' in parts:
        return False
    return not any(real.startswith(root) for root in _library_roots())


def _is_user_module(name: Optional[str]) -> bool:
    """Whether code of module ``name`` is the user's own (and so walked)."""
    if name is None:
        return True  # code with no module (exec, dill): its code is all we have
    if name == _OWN_PACKAGE or name.startswith(_OWN_PACKAGE + '.'):
        return False
    if name == '__main__':
        return True
    module = sys.modules.get(name)
    if module is None:
        return True  # made outside any imported module: walk what we have
    path = getattr(module, '__file__', None)
    if not path:
        return False  # built-in or frozen
    return _is_user_module_file(path)


def _package_version(module_name: Optional[str]) -> str:
    if not module_name:
        return ''
    top = module_name.split('.')[0]
    if top == _OWN_PACKAGE:
        return ''
    version = getattr(sys.modules.get(top), '__version__', '')
    return version if isinstance(version, str) else ''


def _library_token(kind: str, module: Optional[str], qualname: str) -> tuple[Any, ...]:
    return (kind, module or '', qualname, _package_version(module))


class _Walker:
    """One fingerprint's walk; memoises each object it digested by identity.

    Objects are memoised by ``id()`` only for the duration of the walk
    (they are kept alive meanwhile, so an id is not reused); an id never
    reaches the digest.
    """

    def __init__(self, ignore: frozenset[str]) -> None:
        self.ignore = ignore
        self.memo: dict[int, str] = {}
        self.active: set[int] = set()
        self.keep: list[Any] = []

    # -- roots --------------------------------------------------------------

    def root(self, obj: Any) -> Any:
        if isinstance(obj, types.MethodType):
            return ('method', self.value(obj.__func__), self.instance(obj.__self__))
        if isinstance(obj, (types.FunctionType, type, functools.partial)) or not callable(obj):
            return self.value(obj)
        if isinstance(obj, types.BuiltinFunctionType):
            return self.value(obj)
        # A callable object: its class's code and the state it reads.
        return ('callable', self.instance(obj))

    def instance(self, obj: Any) -> Any:
        """An object whose method runs: its class's code, not its state.

        An instance's attributes are configuration (a stash's folder and
        options, a callable object's settings), often paths or handles that
        differ from run to run without changing what is computed; a value
        that does change results belongs in ``version=``.
        """
        cls = obj if isinstance(obj, type) else type(obj)
        return (self.cls(cls, ignore=self.ignore),)

    # -- memoised digests of code-bearing objects ---------------------------

    def memoised(self, obj: Any, label: str, build: Any) -> str:
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        if key in self.active:
            # A cycle (recursion, a method's __class__ cell): a stable
            # back-reference, since the walk order is deterministic.
            return f'cycle:{label}'
        self.active.add(key)
        self.keep.append(obj)
        try:
            digest = _digest(build())
        finally:
            self.active.discard(key)
        self.memo[key] = digest
        return digest

    def function(self, func: types.FunctionType) -> Any:
        module = getattr(func, '__module__', None)
        qualname = getattr(func, '__qualname__', getattr(func, '__name__', '?'))
        if not _is_user_module(module):
            return _library_token('function', module, qualname)
        return ('function', self.memoised(func, qualname, lambda: self._function_token(func)))

    def _function_token(self, func: types.FunctionType) -> Any:
        code = func.__code__
        globals_read: set[str] = set()
        attrs: set[str] = set()
        code_token = self.code(code, globals_read, attrs)
        closure: list[Any] = []
        for name, cell in zip(code.co_freevars, func.__closure__ or (), strict=False):
            try:
                contents = cell.cell_contents
            except ValueError:
                closure.append((name, 'empty-cell'))
            else:
                closure.append((name, self.value(contents)))
        module_globals = func.__globals__
        reads = []
        for name in sorted(globals_read):
            if name in module_globals:
                reads.append((name, self.global_value(module_globals[name], attrs)))
            elif not hasattr(builtins, name):
                reads.append((name, 'unbound'))
            # A builtin: part of the interpreter, which the bytecode pins.
        return (
            code_token,
            self.value(func.__defaults__),
            self.value(func.__kwdefaults__),
            tuple(closure),
            tuple(reads),
        )

    def global_value(self, value: Any, attrs: set[str]) -> Any:
        if isinstance(value, types.ModuleType) and _is_user_module(value.__name__):
            # ``helpers.scale(x)``: the module's members the code names.
            members = sorted(a for a in attrs if a in vars(value))
            return ('user-module', tuple((a, self.value(getattr(value, a))) for a in members))
        return self.value(value)

    def code(self, code: types.CodeType, globals_read: set[str], attrs: set[str]) -> Any:
        """The instructions of ``code`` with their arguments resolved; collects the names it reads."""
        ops: list[Any] = []
        for ins in dis.get_instructions(code):
            name = ins.opname
            if name in _SKIP_OPS:
                continue
            if ins.opcode in dis.hasconst:
                const = ins.argval
                if isinstance(const, types.CodeType):
                    ops.append((name, self.code(const, globals_read, attrs)))
                else:
                    ops.append((name, self.value(const)))
                continue
            if name in _GLOBAL_OPS:
                globals_read.add(ins.argval)
            elif ins.opcode in dis.hasname and not name.startswith(('STORE_', 'DELETE_')):
                # Names read (``self.scale``, ``helpers.helper``); a store
                # in ``__init__`` alone does not make an attribute an input.
                attrs.add(ins.argval)
            ops.append((name, ins.argrepr))
        return (
            'code',
            code.co_argcount,
            code.co_posonlyargcount,
            code.co_kwonlyargcount,
            code.co_flags & _FLAG_MASK,
            code.co_varnames,
            tuple(ops),
        )

    def cls(self, cls: type, ignore: frozenset[str] = frozenset()) -> Any:
        module = cls.__module__
        if not _is_user_module(module):
            return _library_token('class', module, cls.__qualname__)
        return ('class', self.memoised(cls, cls.__qualname__, lambda: self._class_token(cls, ignore)))

    def _class_token(self, cls: type, ignore: frozenset[str]) -> Any:
        bases = tuple(self.cls(b) for b in cls.__bases__)
        members = []
        for name in sorted(vars(cls)):
            if name in _CLASS_SKIP or name in ignore or name.startswith('_abc_'):
                continue
            members.append((name, self.member(vars(cls)[name])))
        return (cls.__qualname__, bases, tuple(members))

    def member(self, value: Any) -> Any:
        if isinstance(value, (staticmethod, classmethod)):
            return (type(value).__name__, self.value(value.__func__))
        if isinstance(value, property):
            return ('property', self.value(value.fget), self.value(value.fset), self.value(value.fdel))
        if isinstance(value, functools.cached_property):
            return ('cached_property', self.value(value.func))
        return self.value(value)

    # -- values -------------------------------------------------------------

    def value(self, v: Any) -> Any:
        """A canonical, hash-seed-independent token of a value."""
        if v is None or isinstance(v, (bool, int, float, complex, str, bytes)):
            # The type name keeps 1, 1.0 and True apart.
            return (type(v).__name__, repr(v))
        if isinstance(v, types.FunctionType):
            return self.function(v)
        if isinstance(v, type):
            return self.cls(v)
        if isinstance(v, types.MethodType):
            return ('method', self.value(v.__func__), self.cls(type(v.__self__)))
        if isinstance(v, (types.BuiltinFunctionType, types.MethodDescriptorType, types.WrapperDescriptorType)):
            owner = getattr(v, '__self__', None)
            module = getattr(v, '__module__', None) or getattr(type(owner), '__module__', None)
            return _library_token('builtin', module, getattr(v, '__qualname__', getattr(v, '__name__', '?')))
        if isinstance(v, types.ModuleType):
            if _is_user_module(v.__name__):
                return ('module', v.__name__)
            return _library_token('module', v.__name__, '')
        if isinstance(v, functools.partial):
            return ('partial', self.value(v.func), self.value(v.args), self.value(v.keywords))
        if isinstance(v, (tuple, list)):
            return (type(v).__name__, tuple(self.value(x) for x in v)) if _plain(type(v)) else self.obj(v)
        if isinstance(v, (set, frozenset)):
            return (type(v).__name__, tuple(sorted((self.value(x) for x in v), key=repr)))
        if isinstance(v, dict):
            if not _plain(type(v)):
                return self.obj(v)
            items = sorted(((self.value(k), self.value(x)) for k, x in v.items()), key=repr)
            return ('dict', tuple(items))
        if isinstance(v, types.CodeType):
            return self.code(v, set(), set())
        return self.obj(v)

    def obj(self, v: Any) -> Any:
        cls = type(v)
        key = id(v)
        if key in self.active:
            return ('cycle', cls.__qualname__)
        self.active.add(key)
        self.keep.append(v)
        try:
            return self._obj(v, cls)
        finally:
            self.active.discard(key)

    def _obj(self, v: Any, cls: type) -> Any:
        if isinstance(v, enum.Enum):
            return ('enum', self.cls(cls), v.name)
        try:
            if hasattr(v, 'dtype') and hasattr(v, 'shape') and callable(getattr(v, 'tobytes', None)):
                # An array: its bytes, not its (abbreviated) repr.
                data = v.tobytes()
                return ('array', _qualified(cls), str(v.dtype), tuple(v.shape), hashlib.sha256(data).hexdigest())
            state = getattr(v, '__dict__', None)
        except Exception:
            # An object whose attribute lookup itself fails (a proxy, a
            # handle to something closed): only its type is known.
            return ('opaque', _qualified(cls))
        if _is_user_module(cls.__module__) and isinstance(state, dict):
            return ('object', self.cls(cls), self.value(dict(state)))
        if isinstance(v, os.PathLike):
            return ('path', _qualified(cls), os.fspath(v))
        try:
            data = pickle.dumps(v, protocol=4)
        except Exception:
            # Documented fallback: only the type is known.
            return ('opaque', _qualified(cls))
        return ('pickle', _qualified(cls), hashlib.sha256(data).hexdigest())


def _plain(cls: type) -> bool:
    return cls in (tuple, list, dict)


def _qualified(cls: type) -> str:
    return f'{cls.__module__}.{cls.__qualname__}'
