"""Whether the request path runs compiled (mypyc) or as Python, and the switch between them.

An install compiles the request path's modules with mypyc where it can (``setup.py``),
next to their ``.py`` files. Python imports an extension module before a source file of
the same name, so the compiled code runs by default. ``IGW_PURE_PYTHON=1`` in the
environment of a process that calls :func:`honour_pure_python` first (the ``igw``
command, the ASGI app, the test suite) makes it import the sources instead: the
reference implementation, for comparing or bisecting. This module is never compiled.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: The packages whose modules may be compiled.
PACKAGES = ("igw_core", "igw_io", "igw_standalone", "igw_asgi")
_ON = ("1", "true", "yes", "on")


def pure_python_requested() -> bool:
    """Whether ``IGW_PURE_PYTHON`` asks for the sources over compiled modules."""
    return os.environ.get("IGW_PURE_PYTHON", "").strip().lower() in _ON


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds igw's modules among ``.py`` files only, so compiled ones are skipped."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in PACKAGES or path is None:
            return None
        for directory in path:
            finder = importlib.machinery.FileFinder(
                directory, (importlib.machinery.SourceFileLoader,
                            importlib.machinery.SOURCE_SUFFIXES))
            spec = finder.find_spec(fullname)
            if spec is not None:
                return spec
        return None


def honour_pure_python() -> None:
    """With ``IGW_PURE_PYTHON=1``, import igw's modules from their sources from now on.

    Call it before any compiled module is imported; a module already imported stays
    as it is.
    """
    if pure_python_requested() and not any(isinstance(f, _SourcesFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourcesFirst())


def is_compiled(module: ModuleType) -> bool:
    """Whether ``module`` was loaded from a compiled extension rather than its source."""
    return isinstance(getattr(module, "__loader__", None),
                      importlib.machinery.ExtensionFileLoader)


def build_kind() -> str:
    """Say how the request path runs in this process: ``compiled`` or ``pure Python``."""
    from igw_core import exchange

    return "compiled" if is_compiled(exchange) else "pure Python"


def stale_extensions(root: Path | None = None) -> list[str]:
    """Return the compiled modules whose sources were edited after the last build.

    Such a module still runs the old code; installing again rebuilds it. The code of
    all of them is in one shared library beside the packages, rebuilt whenever any
    changed, so a source is compared with the newest of the build's files. ``root`` is
    the directory holding the packages (default: this installation's).
    """
    root = root or Path(__file__).resolve().parent.parent
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    built = [path for path in root.glob("*__mypyc*") if path.name.endswith(suffixes)]
    sources = []
    for package in PACKAGES:
        for path in (root / package).rglob("*"):
            if path.name.endswith(suffixes):
                built.append(path)
                source = path.with_name(path.name.split(".", 1)[0] + ".py")
                if source.exists():
                    sources.append(source)
    if not built:
        return []
    built_at = max(path.stat().st_mtime for path in built)
    return sorted(str(source.relative_to(root)) for source in sources
                  if source.stat().st_mtime > built_at)
