"""The sans-IO rule: a3redis.core imports no I/O library and reads no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import a3redis.core

CORE_DIR = Path(a3redis.core.__file__).parent
CORE_MODULES = sorted(CORE_DIR.glob("*.py"))

FORBIDDEN_MODULES = (
    "trio",
    "purerpc",
    "quart",
    "quart_trio",
    "hypercorn",
    "anyio",
    "asyncio",
    "a3redis.v1",
    "a3redis.storage",
    "socket",
    "os",
    "pathlib",
    "shutil",
    "subprocess",
    "threading",
    "io",
    "time",
    "datetime",
    "random",
    "secrets",
    "uuid",
    "importlib",
)

# Calls that read the clock, randomness, the environment or the file system.
FORBIDDEN_CALLS = frozenset(
    {
        "open",
        "input",
        "__import__",
        "eval",
        "exec",
        "time.time",
        "time.time_ns",
        "time.monotonic",
        "time.monotonic_ns",
        "time.perf_counter",
        "time.perf_counter_ns",
        "time.sleep",
        "datetime.now",
        "datetime.utcnow",
        "datetime.today",
        "date.today",
        "os.getenv",
        "os.urandom",
        "uuid.uuid1",
        "uuid.uuid4",
        "trio.current_time",
    }
)
FORBIDDEN_CALL_PREFIXES = ("random.", "secrets.", "os.environ", "os.path.", "trio.")


def _is_forbidden(module: str) -> str | None:
    for forbidden in FORBIDDEN_MODULES:
        if module == forbidden or module.startswith(forbidden + "."):
            return forbidden
    return None


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The absolute names an import statement binds or loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        parts = package.split(".")
        base_parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _is_forbidden_call(name: str) -> bool:
    return (
        name in FORBIDDEN_CALLS
        or any(name.endswith("." + call) for call in FORBIDDEN_CALLS if "." in call)
        or name.startswith(FORBIDDEN_CALL_PREFIXES)
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node that can run: the bodies of `if TYPE_CHECKING:` are left out."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _dotted(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))
    return nodes


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Every break of the sans-IO rule in `source`, as readable messages."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported(node, package):
                if (rule := _is_forbidden(name)) is not None:
                    found.append(
                        f"{module} line {node.lineno}: imports {name} (forbidden: {rule}; an"
                        " import needed only for annotations goes under `if TYPE_CHECKING:`)"
                    )
                    break
        elif isinstance(node, ast.Call):
            called = _dotted(node.func)
            if called is not None and _is_forbidden_call(called):
                found.append(f"{module} line {node.lineno}: calls {called}()")
        elif isinstance(node, ast.Attribute) and _dotted(node) == "os.environ":
            found.append(f"{module} line {node.lineno}: reads os.environ")
    return found


def test_core_modules_are_found() -> None:
    names = {path.stem for path in CORE_MODULES}
    assert {"__init__", "hlc", "record", "table", "validation", "consistency"} <= names


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda path: path.name)
def test_core_module_is_sans_io(path: Path) -> None:
    is_package = path.stem == "__init__"
    module = "a3redis.core" if is_package else f"a3redis.core.{path.stem}"
    problems = violations(path.read_text(encoding="utf-8"), module, is_package=is_package)
    assert not problems, "sans-IO rule broken:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import trio", "imports trio"),
        ("import trio.lowlevel as tl", "imports trio.lowlevel"),
        ("from purerpc import Server", "imports purerpc"),
        ("import quart_trio", "imports quart_trio"),
        ("from hypercorn.trio import serve", "imports hypercorn.trio"),
        ("import anyio", "imports anyio"),
        ("from a3redis.v1 import kv_pb2", "imports a3redis.v1"),
        ("from a3redis import v1", "imports a3redis.v1"),
        ("from .. import v1", "imports a3redis.v1"),
        ("from ..v1.kv_pb2 import GetRequest", "imports a3redis.v1.kv_pb2"),
        ("import socket", "imports socket"),
        ("import os.path", "imports os.path"),
        ("from os import environ", "imports os"),
        ("import time", "imports time"),
        ("from time import monotonic", "imports time"),
        ("import random", "imports random"),
        ("from datetime import datetime", "imports datetime"),
        ("clock.time.time()", "calls clock.time.time()"),
        ("datetime.now()", "calls datetime.now()"),
        ("random.random()", "calls random.random()"),
        ("open('f')", "calls open()"),
        ("x = os.environ['A']", "reads os.environ"),
        ("__import__('trio')", "calls __import__()"),
    ],
)
def test_the_checker_catches_violations(source: str, expected: str) -> None:
    found = violations(source, "a3redis.core.sample")
    assert found, f"{source!r} was not flagged"
    assert found[0].startswith("a3redis.core.sample line 1: ")
    assert expected in found[0]


def test_relative_imports_resolve_from_the_package_init() -> None:
    found = violations("from . import hlc\nfrom .. import v1", "a3redis.core", is_package=True)
    assert len(found) == 1
    assert found[0].startswith("a3redis.core line 2: imports a3redis.v1 (forbidden: a3redis.v1")


def test_type_checking_imports_are_allowed_but_not_their_else_branch() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import random\n"
        "else:\n"
        "    import time\n"
        "def tick(rng: random.Random) -> float:\n"
        "    return rng.random()\n"
    )
    found = violations(source, "a3redis.core.sample")
    assert len(found) == 1
    assert found[0].startswith("a3redis.core.sample line 5: imports time")


@pytest.mark.parametrize(
    "source",
    [
        "from a3redis.core.hlc import Version",
        "from .record import Record",
        "from collections.abc import Iterable",
        "import sortedcontainers",
        "import typing",
        "def now(wall_ms: int) -> int:\n    return wall_ms + 1",
        "import timeit_helpers_not_time",
    ],
)
def test_the_checker_allows_pure_code(source: str) -> None:
    assert violations(source, "a3redis.core.sample") == []
