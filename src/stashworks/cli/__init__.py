"""The ``stashworks`` command line (``stashworks --help``)."""

from __future__ import annotations

from .main import build_parser, main

__all__ = ['build_parser', 'main']
