"""The compiled-or-pure switch: stale extensions are found, the sources can be forced."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from igw_io.compiled import stale_extensions

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _touch(path: Path, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    os.utime(path, (mtime, mtime))


def test_a_source_edited_after_the_build_is_stale(tmp_path: Path) -> None:
    _touch(tmp_path / "igw_core" / "exchange.py", 100)
    _touch(tmp_path / "igw_core" / f"exchange{SUFFIX}", 200)  # the per-module shim
    _touch(tmp_path / "igw_core" / "config.py", 300)  # never compiled: never stale
    _touch(tmp_path / f"abc123__mypyc{SUFFIX}", 200)  # the shared library
    assert stale_extensions(tmp_path) == []
    _touch(tmp_path / "igw_core" / "exchange.py", 250)
    assert stale_extensions(tmp_path) == [os.path.join("igw_core", "exchange.py")]


def test_a_shim_left_old_by_a_rebuild_is_not_stale(tmp_path: Path) -> None:
    # A rebuild rewrites the shared library but keeps a shim whose code did not change.
    _touch(tmp_path / "igw_io" / f"h1client{SUFFIX}", 100)
    _touch(tmp_path / "igw_io" / "h1client.py", 150)
    _touch(tmp_path / f"abc123__mypyc{SUFFIX}", 200)
    assert stale_extensions(tmp_path) == []


def test_nothing_compiled_is_never_stale(tmp_path: Path) -> None:
    _touch(tmp_path / "igw_core" / "exchange.py", 100)
    assert stale_extensions(tmp_path) == []


@pytest.mark.parametrize("pure", ["1", ""])
def test_the_switch_decides_where_the_request_path_comes_from(pure: str) -> None:
    code = ("import igw_standalone, igw_core.exchange as e, igw_io.compiled as c;"
            "print(c.is_compiled(e), c.build_kind())")
    env = {**os.environ, "IGW_PURE_PYTHON": pure}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True, timeout=60)
    compiled, kind = done.stdout.split(" ", 1)
    assert (compiled == "True") == (kind.strip() == "compiled")
    if pure:
        assert kind.strip() == "pure Python"
