"""Protected mode, on a real `python -m a3redis.node` process: a node that other machines
could reach refuses to start without a cluster secret, unless INSECURE=1 says so.

The non-loopback address is 192.0.2.1 (TEST-NET-1, on no interface here): a node that
gets past the check fails to bind it, so no test listens beyond loopback.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import run_node_once

UNREACHABLE = "192.0.2.1"
SECRET = "a-cluster-secret-for-protected-mode-tests"


def test_a_reachable_node_without_a_secret_exits_2_naming_the_ways_out(tmp_path: Path) -> None:
    result = run_node_once({"BIND_HOST": UNREACHABLE, "DATA_DIR": str(tmp_path / "d")})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CLUSTER_SECRET_FILE" in lines[0]
    assert "INSECURE=1" in lines[0]
    assert not (tmp_path / "d").exists()


def test_insecure_lets_it_start_with_a_warning(tmp_path: Path) -> None:
    env = {"BIND_HOST": UNREACHABLE, "INSECURE": "1", "DATA_DIR": str(tmp_path / "d")}
    result = run_node_once(env)
    # Past the check: it fails only at binding an address this machine does not have.
    assert result.returncode == 1, result.stderr
    assert "INSECURE=1: listening on 192.0.2.1 without a cluster secret" in result.stderr
    assert "cannot listen" in result.stderr


def test_a_secret_is_enough_and_needs_no_warning(tmp_path: Path) -> None:
    env = {"BIND_HOST": UNREACHABLE, "CLUSTER_SECRET": SECRET, "DATA_DIR": str(tmp_path / "d")}
    result = run_node_once(env)
    assert result.returncode == 1, result.stderr
    assert "INSECURE" not in result.stderr
    assert "cannot listen" in result.stderr
    assert SECRET not in result.stderr
