"""The modules compiled with mypyc keep to the rule that makes compiled coroutines safe.

mypyc 2.4 mishandles an ``await`` that runs while an exception is being handled: in a
``finally`` block after an ``except`` clause caught the exception, the caught exception is
raised again; nested in another ``try``, an uncaught one is swallowed. ``async with`` is
such an ``await`` (its exit). The compiled modules therefore hold no ``await``, ``async
with`` or ``async for`` in a ``finally`` block or an ``except`` handler, and no ``async
with`` at all (docs/engine.md, "The compiled request path").
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def compiled_modules() -> list[str]:
    """Return ``setup.py``'s ``COMPILED`` list, read without running ``setup.py``."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "COMPILED"):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return [str(item) for item in value]
    raise AssertionError("setup.py has no COMPILED list")


_ASYNC = (ast.Await, ast.AsyncWith, ast.AsyncFor)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _awaits_in(nodes: list[ast.stmt]) -> list[ast.Await | ast.AsyncWith | ast.AsyncFor]:
    """Every await-like node in ``nodes``, not counting nested functions and classes."""
    found: list[ast.Await | ast.AsyncWith | ast.AsyncFor] = []
    pending: list[ast.AST] = list(nodes)
    while pending:
        node = pending.pop()
        if isinstance(node, _SCOPES):
            continue
        if isinstance(node, _ASYNC):
            found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def violations(source: str, name: str = "<source>") -> list[str]:
    """Return where ``source`` breaks the rule, as ``name:line: what`` strings."""
    found: list[str] = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.AsyncWith):
                found.append(f"{name}:{node.lineno}: async with")
            if isinstance(node, ast.Try):
                for handler in node.handlers:
                    found += [f"{name}:{n.lineno}: await in an except handler"
                              for n in _awaits_in(handler.body)]
                found += [f"{name}:{n.lineno}: await in a finally block"
                          for n in _awaits_in(node.finalbody)]
    return sorted(set(found))


def test_the_compiled_modules_keep_to_the_rule() -> None:
    modules = compiled_modules()
    assert "igw_io/performing.py" in modules
    found = [line for module in modules
             for line in violations((REPO / module).read_text(), module)]
    assert found == []


def test_the_check_finds_each_pattern() -> None:
    source = '''
async def f():
    try:
        await a()
    except E:
        await b()
    finally:
        for x in y:
            await c()
    async with d():
        pass

async def fine():
    try:
        await a()
    except E:
        def later():
            return 1
    await b()
'''
    assert violations(source) == [
        "<source>:10: async with",
        "<source>:6: await in an except handler",
        "<source>:9: await in a finally block",
    ]
