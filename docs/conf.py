"""Sphinx configuration for the stashworks documentation.

Build with warnings as errors, as CI does::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx.util.nodes import nested_parse_with_titles

# Document the tree being built, even when an older stashworks is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'src'))

import stashworks

project = 'stashworks'
author = 'stashworks developers'
copyright = 'stashworks developers'
release = stashworks.__version__
version = '.'.join(release.split('.')[:2])

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
]

source_suffix = {'.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build', 'README.md', 'conftest.py']
templates_path: list[str] = []

html_theme = 'furo'
html_title = f'stashworks {release}'
html_static_path = ['_static']

# Markdown: ``:::`` fences for directives, and anchors for headings so that
# pages can link to ``page.md#a-section``.
myst_enable_extensions = ['colon_fence', 'deflist']
myst_heading_anchors = 3

# Google-style docstrings only.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_default_options = {
    'members': True,
    'show-inheritance': True,
}
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_typehints_format = 'short'

# Modules shown first in the API reference, in reading order; every other
# public module follows in alphabetical order.
_API_ORDER = [
    'stashworks.stash',
    'stashworks.directory',
    'stashworks.memory',
    'stashworks.shelf',
    'stashworks.factory',
    'stashworks.compose',
    'stashworks.increment',
    'stashworks.persisted',
    'stashworks.dealloc',
    'stashworks.serial',
    'stashworks.errors',
    'stashworks.multi',
]


def public_modules() -> list[str]:
    """Every importable public module of the package, in reading order.

    Found by walking the package, so a new module appears in the API
    reference without editing the docs.  A module whose name (or any of
    whose parents' names) starts with ``_`` is private and left out.
    """
    found = [
        info.name
        for info in pkgutil.walk_packages(stashworks.__path__, prefix='stashworks.')
        if not any(part.startswith('_') for part in info.name.split('.'))
    ]

    def rank(name: str) -> tuple[int, str]:
        for i, head in enumerate(_API_ORDER):
            if name == head or name.startswith(head + '.'):
                return i, name
        return len(_API_ORDER), name

    return sorted(found, key=rank)


class StashworksModules(Directive):
    """``stashworks-modules``: one section with ``automodule`` per module."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines = StringList()
        source = self.state.document.current_source or 'api'
        for name in public_modules():
            # A package only re-exports what its modules define: show its
            # docstring, and document each object once, where it is defined.
            options = ['   :no-members:'] if hasattr(importlib.import_module(name), '__path__') else []
            # The page is Markdown, so the nested content is MyST too; autodoc
            # writes reStructuredText, hence the eval-rst block.
            for line in (f'## {name}', '', '```{eval-rst}', f'.. automodule:: {name}', *options, '```', ''):
                lines.append(line, source)
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, lines, container)
        return list(container.children)


def resolve_package_alias(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a name re-exported by a package to where it is documented.

    Docstrings refer to the names users import (``stashworks.DirectoryStash``,
    ``stashworks.multi.Chunk``); the API reference documents each object in
    the module that defines it (``stashworks.directory.DirectoryStash``).
    """
    if node.get('refdomain') != 'py':
        return None
    parts = node.get('reftarget', '').split('.')
    if len(parts) < 2 or parts[0] != 'stashworks':
        return None
    # The longest importable module prefix, then the object named after it.
    for cut in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module('.'.join(parts[:cut]))
        except ImportError:
            continue
        obj = getattr(module, parts[cut], None)
        home = getattr(obj, '__module__', None)
        if obj is None or not home or home == module.__name__:
            return None
        qualname = getattr(obj, '__qualname__', parts[cut])
        target = '.'.join([home, qualname, *parts[cut + 1 :]])
        domain = env.get_domain('py')
        return domain.resolve_xref(env, node['refdoc'], app.builder, node['reftype'], target, node, contnode)
    return None


def setup(app: Any) -> dict[str, Any]:
    app.add_directive('stashworks-modules', StashworksModules)
    app.connect('missing-reference', resolve_package_alias)
    return {'parallel_read_safe': True}
