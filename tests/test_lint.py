"""The packages stay ruff-clean and mypy-clean (the project's style): checked on every CI run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_does_no_io_of_its_own() -> None:
    forbidden = ("import anyio", "import asyncio", "import socket", "import ssl", "import httpcore",
                 "import threading", "os.environ", "time.time(", "time.monotonic(",
                 "datetime.now(", "from anyio", "from httpcore", "import trio")
    offenders = []
    for path in (ROOT / "igw_core").rglob("*.py"):
        text = path.read_text()
        offenders += [f"{path.name}: {word}" for word in forbidden if word in text]
    assert offenders == []
