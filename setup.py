"""Build igw: the request path compiled to C with mypyc where the machine can, else pure Python.

Everything else about the package is in ``pyproject.toml``. The modules in
:data:`COMPILED` are what every request runs through (the core's exchange and relay
flows, the provider client, the HTTP/1.1 engine); compiling them cuts the instructions
per request by about half (``benchmarks/instructions.py``). The anyio scopes stay
Python: ``docs/engine.md`` ("The compiled request path") says why. The ``.py``
files are installed beside the compiled modules and stay the reference: set
``IGW_PURE_PYTHON=1`` when installing to skip compilation, and a machine without a C
compiler or Python's headers gets the pure-Python package with a warning instead of a
failed install.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent

#: The modules compiled with mypyc: the path of a chat, stream or /proxy request, less
#: igw_io/scopes.py, which awaits in anyio scopes; mypyc 2.4 gets an exception wrong
#: there (tests/igw_io/test_compiled_rules.py holds these modules to the rule).
COMPILED = [
    "igw_core/chat.py",
    "igw_core/config.py",  # Settings: its fields are read per request
    "igw_core/effects.py",
    "igw_core/endpoints.py",
    "igw_core/events.py",
    "igw_core/exchange.py",
    "igw_core/flows/anthropic.py",
    "igw_core/flows/base.py",
    "igw_core/flows/models.py",
    "igw_core/flows/relay.py",
    "igw_core/gateway.py",
    "igw_core/headers.py",
    "igw_core/mcp/agent.py",
    "igw_core/mcp/catalog.py",
    "igw_core/mcp/loop.py",
    "igw_core/messages.py",
    "igw_core/models.py",
    "igw_core/providers.py",
    "igw_core/proxy.py",
    "igw_core/redact.py",
    "igw_core/report.py",
    "igw_core/responses.py",
    "igw_core/routing.py",
    "igw_core/sse.py",
    "igw_core/usage.py",
    "igw_core/vision.py",
    "igw_io/channel.py",
    "igw_io/driver.py",
    "igw_io/h1client.py",
    "igw_io/header_lines.py",
    "igw_io/heads.py",
    "igw_io/logs.py",
    "igw_io/loops.py",
    "igw_io/performing.py",
    "igw_io/queues.py",
    "igw_io/response_parsers.py",
    "igw_io/upstream.py",
    "igw_standalone/http1.py",
    "igw_standalone/parsers.py",
]

#: Flags added for GCC and Clang. The compiled modules share one library, whose
#: functions and globals are otherwise exported: calls between them went through the
#: PLT, reads of module globals through the GOT, and GCC could inline none of them.
#: Hidden, they are direct; ``-fno-plt`` (ELF only) calls into libpython through the
#: GOT without a jump through the PLT. In callgrind's simulation of a chat request,
#: 3.8% fewer instructions, 9% fewer instruction-cache and 18% fewer data-cache misses
#: (``docs/engine.md``). Each module's ``PyInit_`` stays exported (``PyMODINIT_FUNC``
#: says so); the library hands out everything else in capsules.
UNIX_FLAGS: list[str] = ["-fvisibility=hidden"] + (
    ["-fno-plt"] if sys.platform.startswith("linux") else [])

_OFF = ("1", "true", "yes", "on")
#: Commands that write only metadata or sources: pip runs two of them before the build,
#: each in a fresh process, and mypyc's type-check would cost ~25 s each time.
_NO_BUILD = ("egg_info", "dist_info", "sdist")


def _warn(message: str) -> None:
    print(f"igw: {message}; installing the pure-Python package", file=sys.stderr)


def compiled_extensions() -> list:  # type: ignore[type-arg]
    """Return the mypyc extension modules to build, or none when compilation is off.

    Off with ``IGW_PURE_PYTHON=1``, on other interpreters than CPython, for commands
    that build nothing (:data:`_NO_BUILD`), and when mypyc cannot type-check the
    sources (a warning says why).
    """
    if os.environ.get("IGW_PURE_PYTHON", "").lower() in _OFF:
        return []
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if sys.implementation.name != "cpython" or command in _NO_BUILD:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not available")
        return []
    previous = os.getcwd()
    os.chdir(HERE)  # mypy reads its settings from pyproject.toml here
    try:
        extensions = mypycify(COMPILED, opt_level="3")
    except BaseException as exc:  # mypyc exits on a type error: never fail the install
        _warn(f"mypyc could not compile the request path ({exc!r})")
        return []
    finally:
        os.chdir(previous)
    for extension in extensions:
        if "-O3" in extension.extra_compile_args:  # a GCC-like compiler, not MSVC
            extension.extra_compile_args += UNIX_FLAGS
    return extensions


class OptionalBuildExt(build_ext):
    """``build_ext`` that leaves the pure-Python package when the C build fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python headers, ...
            _warn(f"the C build failed ({exc})")
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
