"""The layout is the architecture: each package imports only from the layers below it.

Layers, bottom to top (a module may import its own layer and any below):
  0 a3redis.core      pure decisions (tests/core/test_core_purity.py keeps them pure)
  1 a3redis.runtime   small trio helpers: supervision, gathering, wall clock, logging
  2 a3redis.net       addresses, channels, the purerpc server and stream plumbing
  3 a3redis.storage, a3redis.config
  4 a3redis.cluster   the shells that carry out the core's decisions between nodes
  5 a3redis.api       front ends: gRPC services, HTTP, protobuf converters
  6 a3redis.tools, a3redis.client, a3redis.node
Generated protobuf code (a3redis.v1, google.protobuf) is imported only by the
front ends and the client, which convert it to core types at the boundary.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import a3redis

PACKAGE_DIR = Path(a3redis.__file__).parent
LAYERS: dict[str, int] = {
    "a3redis.core": 0,
    "a3redis.runtime": 1,
    "a3redis.net": 2,
    "a3redis.storage": 3,
    "a3redis.config": 3,
    "a3redis.cluster": 4,
    "a3redis.api": 5,
    "a3redis.tools": 6,
    "a3redis.client": 6,
    "a3redis.node": 6,
}
PROTOBUF = ("a3redis.v1", "google.protobuf")
MAY_USE_PROTOBUF = ("a3redis.api", "a3redis.client", "a3redis.v1")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            # `from a3redis import wire` imports the module a3redis.wire.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


MODULES = sorted(
    path for path in PACKAGE_DIR.rglob("*.py") if "v1" not in path.relative_to(PACKAGE_DIR).parts
)


def test_every_module_has_a_layer() -> None:
    unplaced = [
        _module_name(path)
        for path in MODULES
        if _layer(_module_name(path)) is None and _module_name(path) != "a3redis"
    ]
    assert not unplaced, f"modules outside every layer (add them to a package): {unplaced}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: _module_name(path))
def test_imports_point_down_the_layers(path: Path) -> None:
    module = _module_name(path)
    own = _layer(module)
    problems = []
    for line, imported in _imports(path, module):
        if imported.startswith(PROTOBUF) and not module.startswith(MAY_USE_PROTOBUF):
            problems.append(f"line {line}: {module} imports protobuf code ({imported})")
        target = _layer(imported)
        if own is not None and target is not None and target > own:
            problems.append(
                f"line {line}: {module} (layer {own}) imports {imported} (layer {target})"
            )
    assert not problems, "\n".join(problems)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule has teeth: an upward import in a lower layer is reported."""
    probe = PACKAGE_DIR / "storage" / "store.py"
    found = _imports(probe, "a3redis.storage.store")
    assert found, "the import walk finds nothing in the store"
    fake = tmp_path / "probe.py"
    fake.write_text("from a3redis.cluster import keyspace\nfrom a3redis.v1 import kv_pb2\n")
    imports = [name for _, name in _imports(fake, "a3redis.storage.probe")]
    assert "a3redis.cluster.keyspace" in imports and "a3redis.v1.kv_pb2" in imports
    assert _layer("a3redis.cluster.keyspace") > _layer("a3redis.storage.probe")  # type: ignore[operator]


TEST_TOOLS = ("pytest", "_pytest", "hypothesis", "trio.testing")


@pytest.mark.parametrize("entry", ["a3redis.node", "a3redis.tools.cli"])
def test_a_node_or_the_cli_starts_without_importing_test_tools(entry: str) -> None:
    """Every node and CLI process pays for what it imports at start; in a test or dev
    environment, where pytest is installed, trio.testing alone would import it."""
    probe = (
        f"import sys, {entry}\n"
        f"print(sorted(name for name in sys.modules if name.startswith({TEST_TOOLS!r})))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert ran.stdout.strip() == "[]", ran.stdout


# What only the commands that call the nodes' HTTP endpoints need (a3redis.tools.operator_commands).
HTTP_SIDE = ("httpx", "a3redis.tools.operator_commands", "a3redis.cluster.peer_auth")


def test_the_cli_loads_its_http_side_only_for_the_commands_that_use_it() -> None:
    """`a3redis get` and the other key-value commands start without httpx and the cluster
    secret's signing; a command that calls a node's HTTP endpoint loads them."""
    probe = (
        "import sys, trio\n"
        "from a3redis.tools import cli\n"
        "loaded = lambda: sorted({n.split('.')[0] if n.startswith('httpx') else n\n"
        f"    for n in sys.modules if n.startswith({HTTP_SIDE!r})}})\n"
        "code = cli.main(['get', 'k', '-e', '127.0.0.1:1', '--timeout', '0.5'])\n"
        "print(code, loaded())\n"
        "code = cli.main(['cluster', 'status', '-e', '127.0.0.1:1', '--timeout', '0.5'])\n"
        "print(code, loaded())\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    after_get, after_status = ran.stdout.splitlines()
    assert after_get == "3 []", ran.stdout  # the get failed (nothing listens there), no HTTP side
    assert after_status == f"3 {sorted(HTTP_SIDE)}", ran.stdout
