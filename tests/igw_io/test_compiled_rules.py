"""The modules compiled with mypyc keep to the rules that make them safe and fast.

Coroutines:
mypyc 2.4 mishandles an ``await`` that runs while an exception is being handled: in a
``finally`` block after an ``except`` clause caught the exception, the caught exception is
raised again; nested in another ``try``, an uncaught one is swallowed. ``async with`` is
such an ``await`` (its exit). The compiled modules therefore hold no ``await``, ``async
with`` or ``async for`` in a ``finally`` block or an ``except`` handler, and no ``async
with`` at all (docs/engine.md, "The compiled request path").

Dataclasses: the ``__init__`` the dataclasses module writes is Python, even in a compiled
class, and costs a Python frame per object (about four times a compiled one). The
dataclasses built per request (not frozen, no ``field()`` specifiers) are declared
``init=False`` with their own ``__init__``, which must take the fields in order, with
their annotations and defaults.

Module constants: compiled, a module-level name that is not ``Final`` is looked up in the
module's dictionary at every use, where a ``Final`` one is a C static (an int is inlined).
Every module-level name a function of a compiled module reads is ``Final``, or rebound
through ``global`` (and then read rarely); type aliases, which only annotations name, are
not read.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
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


def problems_in_compiled_modules(check: Callable[[str, str], list[str]]) -> list[str]:
    """Return what ``check(source, name)`` finds in every module ``setup.py`` compiles."""
    return [line for module in compiled_modules()
            for line in check((REPO / module).read_text(), module)]


def test_the_compiled_modules_keep_to_the_rule() -> None:
    assert "igw_io/performing.py" in compiled_modules()
    assert problems_in_compiled_modules(violations) == []


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


def _is_dataclass(node: ast.ClassDef) -> ast.expr | None:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Name) and target.id == "dataclass":
            return decorator
    return None


def _keyword(decorator: ast.expr, name: str) -> object:
    """The constant a ``@dataclass(...)`` decorator passes as ``name``, else ``None``."""
    if isinstance(decorator, ast.Call):
        for k in decorator.keywords:
            if k.arg == name and isinstance(k.value, ast.Constant):
                return k.value.value
    return None


def init_problems(source: str, name: str = "<source>") -> list[str]:
    """Return where a dataclass of ``source`` breaks the ``__init__`` rule."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef) or (decorator := _is_dataclass(node)) is None:
            continue
        fields = [f for f in node.body if isinstance(f, ast.AnnAssign)
                  and isinstance(f.target, ast.Name) and "ClassVar" not in ast.unparse(f)]
        if _keyword(decorator, "frozen") is True or any(
                f.value is not None and "field(" in ast.unparse(f.value) for f in fields):
            continue  # built once per process, or per tool call: not per request
        where = f"{name}:{node.lineno}: {node.name}"
        if _keyword(decorator, "init") is not False:
            found.append(f"{where}: not init=False")
            continue
        inits = [f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
        if not fields:
            if inits:
                found.append(f"{where}: an __init__ without fields")
            continue
        if not inits:
            found.append(f"{where}: no __init__")
            continue
        args = inits[0].args
        params = args.args[1:]
        defaults: list[ast.expr | None] = [None] * (len(params) - len(args.defaults))
        defaults += args.defaults
        wanted = [(ast.unparse(f.target), ast.unparse(f.annotation),
                   None if f.value is None else ast.unparse(f.value)) for f in fields]
        declared = [(p.arg, "" if p.annotation is None else ast.unparse(p.annotation),
                     None if d is None else ast.unparse(d))
                    for p, d in zip(params, defaults, strict=True)]
        if declared != wanted or args.kwonlyargs or args.vararg or args.kwarg:
            found.append(f"{where}: __init__ does not take the fields as declared")
            continue
        assigned = [ast.unparse(s) for s in inits[0].body]
        if assigned != [f"self.{n} = {n}" for n, _, _ in wanted]:
            found.append(f"{where}: __init__ does more or less than set each field")
    return found


def test_dataclasses_built_per_request_have_compiled_inits() -> None:
    assert problems_in_compiled_modules(init_problems) == []


def test_the_init_check_finds_each_mistake() -> None:
    source = '''
@dataclass(slots=True)
class Generated:
    a: int

@dataclass(slots=True, init=False)
class Reordered:
    a: int
    b: str = ""

    def __init__(self, b: str = "", a: int = 0) -> None:
        self.b = b
        self.a = a

@dataclass(slots=True, init=False)
class Missing:
    a: int

@dataclass(slots=True, init=False)
class Busy:
    a: int

    def __init__(self, a: int) -> None:
        self.a = a + 1

@dataclass(frozen=True, slots=True)
class Frozen:
    a: int

@dataclass(slots=True, init=False)
class Right:
    a: int
    b: str = ""

    def __init__(self, a: int, b: str = "") -> None:
        self.a = a
        self.b = b

@dataclass(slots=True, init=False)
class Empty:
    """No fields: object.__init__ serves."""
'''
    assert init_problems(source) == [
        "<source>:3: Generated: not init=False",
        "<source>:7: Reordered: __init__ does not take the fields as declared",
        "<source>:16: Missing: no __init__",
        "<source>:20: Busy: __init__ does more or less than set each field",
    ]


def _module_names(tree: ast.Module) -> dict[str, tuple[int, bool]]:
    """Each name bound at module level by an assignment: its line, and whether ``Final``."""
    names: dict[str, tuple[int, bool]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = (node.lineno, False)
        elif (isinstance(node, ast.AnnAssign) and node.value is not None
              and isinstance(node.target, ast.Name)):
            names[node.target.id] = (node.lineno, ast.unparse(node.annotation).startswith("Final"))
    return names


def _read_in_functions(tree: ast.Module) -> tuple[set[str], set[str]]:
    """The names functions read (annotations aside), and the names they declare global."""
    read: set[str] = set()
    rebound: set[str] = set()
    pending: list[ast.AST] = [f for f in ast.walk(tree)
                              if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pending.extend(node.body)  # not the signature's annotations or defaults
            continue
        if isinstance(node, ast.AnnAssign):
            pending.extend(n for n in (node.target, node.value) if n is not None)
            continue
        if isinstance(node, ast.Global):
            rebound.update(node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            read.add(node.id)
        pending.extend(ast.iter_child_nodes(node))
    return read, rebound


def constant_problems(source: str, name: str = "<source>") -> list[str]:
    """Return the module-level names of ``source`` that functions read but are not Final."""
    tree = ast.parse(source)
    read, rebound = _read_in_functions(tree)
    return [f"{name}:{line}: {module_name} is not Final"
            for module_name, (line, final) in sorted(_module_names(tree).items())
            if module_name in read and not final and module_name not in rebound
            and module_name != "__all__"]


def test_module_constants_of_compiled_modules_are_final() -> None:
    assert problems_in_compiled_modules(constant_problems) == []


def test_the_constant_check_finds_each_case() -> None:
    source = '''
LIMIT = 4
SHAPE: tuple[int, ...] = (1,)
FINE: Final = 5
ALIAS = tuple[int, str]
_cache = None
UNREAD = 6
A, B = 1, 2

def f(x: ALIAS = UNREAD) -> int:
    global _cache
    y: ALIAS = (LIMIT, "")
    _cache = y
    return SHAPE[0] + FINE + B
'''
    assert constant_problems(source) == [
        "<source>:8: B is not Final",
        "<source>:2: LIMIT is not Final",
        "<source>:3: SHAPE is not Final",
    ]
