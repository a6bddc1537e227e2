"""The README's quick-start commands: the ones .ci/run and the fresh-clone check run.

The fresh-clone check itself (`nox -s fresh-clone`) clones the repository and runs both
commands for real; here only what it and .ci/run read is checked, in a second.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from scripts import system_packages
from scripts.fresh_clone import CheckFailed, ports_in_use, readme_commands

ROOT = Path(__file__).resolve().parent.parent.parent
README = (ROOT / "README.md").read_text()


def test_the_cluster_command_needs_only_python_and_pip() -> None:
    steps = readme_commands(README).cluster.split(" && ")
    assert steps[0] == "python3 -m venv .venv"
    assert steps[1].startswith(".venv/bin/pip install ")
    assert steps[2] == ".venv/bin/a3redis cluster up"
    assert len(steps) == 3, steps


def test_ci_runs_the_test_command_that_the_fresh_clone_check_runs() -> None:
    dry_run = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    assert dry_run.stdout == f"+ {readme_commands(README).test}\n"
    assert readme_commands(README).test == "./scripts/test"


def test_a_readme_without_exactly_one_test_command_is_refused() -> None:
    cluster = readme_commands(README).cluster
    with pytest.raises(CheckFailed, match=r"exactly one test command .* found 0"):
        readme_commands(cluster + "\n")
    with pytest.raises(CheckFailed, match=r"exactly one test command .* found 2"):
        readme_commands(f"{cluster}\n./scripts/test\n./scripts/test -s lint\n")


def test_the_readme_names_every_system_package_the_tests_use() -> None:
    section = README.split("The test command also installs", 1)[1].split("\n\n", 2)[1]
    for command in system_packages.load().values():
        assert f"`{command.package}`" in section, command


def test_a_port_in_use_is_reported_and_a_free_one_is_not() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert ports_in_use((port,)) == [port]
    assert ports_in_use((port,)) == []
