"""Clients written by others against an in-process node, each in its own process.

grpcio-health-checking's stub (Check; Watch sees NOT_SERVING when the node stops),
grpcio-reflection's descriptor database (Put and Get built from reflected
descriptors, no .proto at hand) and @grpc/grpc-js with static stubs from
@grpc/proto-loader (Health/Check, KeyValue/Put and Get, the ErrorInfo of a
refused call). The Python clients run as subprocesses (tests/stock_clients):
their grpc.health.v1 messages would collide with the node's own in one process.
grpc-js and proto-loader are installed from npm, at pinned versions, into a
cache directory once per run; without `node` or `npm` the test is skipped
(failed under CI, which must run it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.node.conftest import RunningNode
from tests.support.system_tools import system_command, unavailable

ROOT = Path(__file__).resolve().parent.parent.parent
CLIENTS = ROOT / "tests" / "stock_clients"
GRPC_JS = "1.14.7"
PROTO_LOADER = "0.8.1"


async def _python_client(mode: str, endpoint: str) -> object:
    done = await trio.run_process(
        [sys.executable, str(CLIENTS / "python_client.py"), mode, endpoint],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


async def test_grpc_health_checking_stub_checks_the_node(running_node: RunningNode) -> None:
    assert await _python_client("check", running_node.endpoint) == {
        "": "SERVING",
        "a3redis.v1.KeyValue": "SERVING",
        "no.such.Service": "NOT_FOUND",
    }


async def test_grpc_health_checking_stub_watches_the_node_stop(running_node: RunningNode) -> None:
    script = [sys.executable, str(CLIENTS / "python_client.py"), "watch", running_node.endpoint]
    lines: list[str] = []
    watcher = await trio.lowlevel.open_process(script, stdout=subprocess.PIPE)
    try:
        assert watcher.stdout is not None
        buffer = b""
        with trio.fail_after(20):
            while chunk := await watcher.stdout.receive_some():
                buffer += chunk
                lines = buffer.decode().split()
                if lines == ["SERVING"]:
                    running_node.stop.set()
            assert await watcher.wait() == 0
    finally:
        watcher.kill()
    assert lines == ["SERVING", "NOT_SERVING", "END"]


async def test_grpc_reflection_descriptor_database_builds_put_and_get(
    running_node: RunningNode,
) -> None:
    answer = await _python_client("reflect", running_node.endpoint)
    assert isinstance(answer, dict)
    assert answer["services"] == [
        "a3redis.v1.KeyValue",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    assert answer["Get"]["found"] == "True" and answer["Get"]["value"] == "reflected"
    assert answer["Put"]["version"] == answer["Get"]["version"]


@pytest.fixture(scope="session")
def grpc_js_modules() -> Path:
    """node_modules holding @grpc/grpc-js and @grpc/proto-loader at their pinned versions."""
    npm = system_command("npm")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    prefix = cache / "a3redis-tests" / f"grpc-js-{GRPC_JS}-proto-loader-{PROTO_LOADER}"
    modules = prefix / "node_modules"
    installed = modules / "@grpc" / "grpc-js" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == GRPC_JS:
        return modules
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [
                npm,
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--prefix",
                str(prefix),
                f"@grpc/grpc-js@{GRPC_JS}",
                f"@grpc/proto-loader@{PROTO_LOADER}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        output = getattr(error, "stderr", "") or ""
        unavailable(f"npm could not install @grpc/grpc-js {GRPC_JS}: {output[-500:]}")
    return modules


async def test_grpc_js_calls_health_and_key_value_with_static_stubs(
    running_node: RunningNode, grpc_js_modules: Path
) -> None:
    node = system_command("node")
    done = await trio.run_process(
        [node, str(CLIENTS / "grpc_js_client.js"), running_node.endpoint, str(ROOT / "proto")],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "NODE_PATH": str(grpc_js_modules)},
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {
        "check": "SERVING",
        "put": running_node.config.node_id,
        "get": "from grpc-js",
        "refused_code": "INVALID_ARGUMENT",
        "error_info": {
            "reason": "KEY_TOO_LARGE",
            "domain": "a3redis",
            "metadata": {"bytes": "100", "limit": "64"},
        },
    }
