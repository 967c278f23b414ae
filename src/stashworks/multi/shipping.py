"""The user's own modules, shipped with a job to workers that cannot import them.

A function pickles *by reference*: ``mymod.compute`` travels as the two
names ``'mymod'`` and ``'compute'``, and a worker must import ``mymod`` to
get it back.  On a cluster the driver's own modules (a script's sibling
``mymod.py``, a package in the working folder) are often missing on the
workers, whose working folder and ``sys.path`` differ.

:func:`find_modules` lists the user's modules a pickled job names (and the
user's modules those reach), with their source files;
:class:`ModuleInstaller` writes them, on a worker, to a folder of their
own put on ``sys.path``, for the modules that worker cannot import itself
(an installed copy always wins), and removes them again.

Only source files (``.py``) travel; a user module that is a compiled
extension must be installed on the workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pickletools
import shutil
import site
import sys
import sysconfig
import types
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ['ShippedModule', 'find_modules', 'ModuleInstaller', 'MAX_SHIPPED_BYTES']

logger = logging.getLogger(__name__)

#: Most bytes of source shipped with one job; larger user packages are
#: left out (with a warning) and must be installed on the workers.
MAX_SHIPPED_BYTES = 20 * 1024 * 1024

_OWN_PACKAGE = __name__.split('.')[0]


@dataclass(frozen=True)
class ShippedModule:
    """A top-level module or package of the user's, as source files.

    Attributes:
        name: the top-level name (``'mymod'`` for ``mymod.sub``).
        files: path relative to the folder on ``sys.path`` -> content.
    """

    name: str
    files: tuple[tuple[str, bytes], ...]

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.files)


def _library_roots() -> tuple[str, ...]:
    roots = set()
    for key in ('stdlib', 'platstdlib', 'purelib', 'platlib'):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.realpath(path))
    try:
        roots.update(os.path.realpath(p) for p in site.getsitepackages())
    except AttributeError:  # a virtualenv without site.getsitepackages
        pass
    user_site = site.getusersitepackages() if hasattr(site, 'getusersitepackages') else None
    if isinstance(user_site, str):
        roots.add(os.path.realpath(user_site))
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        roots.add(os.path.realpath(os.path.join(prefix, 'lib')))
    return tuple(sorted(r.rstrip(os.sep) + os.sep for r in roots))


def _source_root(module: types.ModuleType) -> Optional[tuple[str, Path]]:
    """``(top-level name, file or package folder)`` of a user's module, else ``None``."""
    name = module.__name__
    top = name.split('.')[0]
    if top in ('__main__', '__mp_main__', _OWN_PACKAGE) or top in sys.builtin_module_names:
        return None
    top_module = sys.modules.get(top)
    path = getattr(top_module, '__file__', None)
    if not path or not path.endswith('.py'):
        return None  # built in, frozen, a namespace package or an extension
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if 'site-packages' in parts or 'dist-packages' in parts:
        return None
    if any(real.startswith(root) for root in _library_roots()):
        return None
    source = Path(real)
    if source.name == '__init__.py':
        return top, source.parent
    return top, source


def _read_source(top: str, source: Path) -> Optional[ShippedModule]:
    files: list[tuple[str, bytes]] = []
    size = 0
    if source.is_file():
        candidates = [(f'{top}.py', source)]
    else:
        candidates = []
        for folder, dirs, names in os.walk(source):
            # Caches and hidden folders are not code.
            dirs[:] = sorted(d for d in dirs if not d.startswith('.') and d != '__pycache__')
            for file in sorted(names):
                if file.endswith('.py'):
                    path = Path(folder, file)
                    candidates.append((str(Path(top, path.relative_to(source))), path))
    for relative, path in candidates:
        try:
            data = path.read_bytes()
        except OSError as exc:
            logger.warning('cannot ship %s to the workers: %s', path, exc)
            return None
        size += len(data)
        if size > MAX_SHIPPED_BYTES:
            logger.warning(
                'module %s is larger than %d MB of source and is not shipped: install it on the workers',
                top,
                MAX_SHIPPED_BYTES // 2**20,
            )
            return None
        files.append((relative, data))
    return ShippedModule(top, tuple(files))


def _pickled_names(data: bytes) -> set[str]:
    """Every string in a pickle: among them, the modules it imports from."""
    names: set[str] = set()
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                if opcode.name == 'GLOBAL':
                    names.add(arg.split(' ')[0])
                elif len(arg) < 256:
                    names.add(arg)
    except Exception as exc:
        # A pickle we cannot walk is still sent; only shipping is skipped.
        logger.debug('cannot list the modules of a pickled job: %s', exc)
    return names


def _referenced(module: types.ModuleType) -> set[str]:
    """Modules a module's globals come from (what importing it needs)."""
    found = set()
    for value in list(vars(module).values()):
        if isinstance(value, types.ModuleType):
            found.add(value.__name__)
        else:
            owner = getattr(value, '__module__', None)
            if isinstance(owner, str):
                found.add(owner)
    return found


def find_modules(job_bytes: bytes) -> tuple[ShippedModule, ...]:
    """The user's modules a pickled job refers to, and the user's modules they use.

    "The user's" means imported from a file outside the standard library,
    site-packages and stashworks itself.  Each top-level module or package
    is shipped whole, once.
    """
    todo = [name for name in _pickled_names(job_bytes) if name in sys.modules]
    seen: set[str] = set()
    roots: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        module = sys.modules.get(name)
        if not isinstance(module, types.ModuleType):
            continue
        root = _source_root(module)
        if root is None:
            continue
        roots.setdefault(*root)
        todo.extend(n for n in _referenced(module) if n not in seen and n in sys.modules)
    shipped = []
    total = 0
    for top, source in sorted(roots.items()):
        module_files = _read_source(top, source)
        if module_files is None:
            continue
        total += module_files.size
        if total > MAX_SHIPPED_BYTES:
            logger.warning(
                'the user modules of the job exceed %d MB; %s is not shipped', MAX_SHIPPED_BYTES // 2**20, top
            )
            break
        shipped.append(module_files)
    return tuple(shipped)


class ModuleInstaller:
    """Puts shipped modules on a worker's ``sys.path``, and takes them off again.

    Args:
        modules: what the driver shipped.
        base: a folder of the worker's own (its local directory).
    """

    def __init__(self, modules: tuple[ShippedModule, ...], base: Path) -> None:
        self.modules = modules
        self.base = Path(base)
        self.folder: Optional[Path] = None
        #: the shipped modules this worker uses (it could not import them itself)
        self.installed: list[str] = []

    def install(self) -> None:
        """Write the modules this worker cannot import into a folder on ``sys.path``."""
        missing = [m for m in self.modules if importlib.util.find_spec(m.name) is None]
        if not missing:
            return
        folder = self.base / f'stashworks-modules-{uuid.uuid4().hex[:12]}'
        for module in missing:
            for relative, data in module.files:
                target = folder / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        self.folder = folder
        # First on the path: these are the modules the job was pickled with.
        sys.path.insert(0, str(folder))
        importlib.invalidate_caches()
        self.installed = [m.name for m in missing]
        logger.debug('installed the driver modules %s in %s', self.installed, folder)

    def uninstall(self) -> None:
        """Forget the shipped modules: off ``sys.path`` and ``sys.modules``, files removed."""
        folder, self.folder = self.folder, None
        if folder is None:
            return
        entry = str(folder)
        while entry in sys.path:
            sys.path.remove(entry)
        for name in list(sys.modules):
            if name.split('.')[0] in self.installed:
                path = getattr(sys.modules.get(name), '__file__', None) or ''
                if path.startswith(entry + os.sep):
                    del sys.modules[name]
        importlib.invalidate_caches()
        shutil.rmtree(folder, ignore_errors=True)
        self.installed = []
