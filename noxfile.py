"""Developer tasks. `nox` runs the default sessions (lint, tests, redis-clients);
`./scripts/test`, the test command that CI runs, installs the system packages the tests
use and then runs `nox`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests", "redis-clients"]
nox.options.reuse_existing_virtualenvs = True

# Every session installs the exact versions in constraints.txt (`nox -s lock` refreshes it
# from pyproject.toml), so a new release of a dependency reaches CI only through a commit.
CONSTRAINTS = "constraints.txt"
DEV = ("-c", CONSTRAINTS, "-e", ".[dev]")
# tests/support/processes.py's PORT_SLICE_VARIABLE (the noxfile imports nothing of the tests).
PORT_SLICE = "A3REDIS_TEST_PORT_SLICE"

SHELL_SCRIPTS = [".ci/run", "scripts/test"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy over the package, tests, scripts and benchmarks;
    shellcheck over the shell scripts outside deploy/ (deploy/check.py covers those)."""
    session.install(*DEV)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("shellcheck", *SHELL_SCRIPTS)


# With no arguments `tests` runs the suite as two pytest processes at once, each about
# half of it: most of the suite waits on timers in real node processes (failure
# detection, drains, repair intervals), so the two overlap well on two cores. A third
# process made timing checks fail (a node's refutation within two gossip rounds, in
# tests/faults). The fault suite lives in its own network namespaces; the ring-change
# tests run after it, and the two processes hand out ports from disjoint slices of the
# loopback's range (tests/support/processes.py). The first streams its output; the
# second's follows once both have ended.
RING_CHANGE_TESTS = (
    "tests/cluster/test_scaling.py",
    "tests/cluster/test_join_resume.py",
    "tests/cluster/test_handoff.py",
    "tests/cluster/test_membership.py",
)
SUITE_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "tests/ but tests/faults and the ring-change tests",
        ("--ignore=tests/faults", *(f"--ignore={path}" for path in RING_CHANGE_TESTS)),
    ),
    ("tests/faults, then the ring-change tests", ("tests/faults", *RING_CHANGE_TESTS)),
)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: core properties, storage, real node processes, faults."""
    session.install(*DEV)
    if session.posargs:
        session.run("pytest", *session.posargs)
        return
    pytest = str(Path(session.bin) / "pytest")
    path = f"{session.bin}{os.pathsep}{os.environ.get('PATH', '')}"
    logs = Path(session.create_tmp())
    running: list[tuple[str, subprocess.Popen[bytes], Path | None]] = []
    try:
        for index, (name, arguments) in enumerate(SUITE_PARTS):
            env = {**os.environ, "PATH": path, PORT_SLICE: f"{index}/{len(SUITE_PARTS)}"}
            command = [pytest, *arguments]
            if index == 0:  # the first writes to the session's output
                running.append((name, subprocess.Popen(command, env=env), None))
                continue
            log = logs / f"part-{index}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            running.append((name, process, log))
        codes = {name: process.wait() for name, process, _ in running}
    except BaseException:
        for _, process, _ in running:
            process.kill()
        raise
    for name, _, written in running:
        if written is not None:
            session.log(f"{name}, run beside the first:")
            sys.stdout.write(written.read_text(errors="replace"))
            sys.stdout.flush()
    failed = [name for name, code in codes.items() if code]
    if failed:
        session.error(f"pytest failed: {'; '.join(failed)}")


# The Redis-protocol tests run again with these redis-py installs (the `tests` session has
# the pinned 8.x and its pure-Python parser): the oldest major we support, and 8.x on
# hiredis's parser. The tests check they got what the session asked for.
REDIS_CLIENTS = {
    "redis5": (("redis>=5,<6",), {"A3REDIS_REDIS_PY_MAJOR": "5"}),
    "redis8-hiredis": (
        ("redis>=8,<9", "hiredis>=3,<4"),
        {"A3REDIS_REDIS_PY_MAJOR": "8", "A3REDIS_REDIS_PY_PARSER": "hiredis"},
    ),
}
RESP_TESTS = (
    "tests/node/test_resp_commands.py",
    "tests/node/test_resp_server.py",
    "tests/node/test_resp_expiry.py",
    "tests/cluster/test_resp_cluster.py",
)


@nox.session(name="redis-clients")
@nox.parametrize("client", list(REDIS_CLIENTS))
def redis_clients(session: nox.Session, client: str) -> None:
    """The Redis-protocol tests with redis-py 5.x, and with 8.x on hiredis's parser."""
    packages, env = REDIS_CLIENTS[client]
    session.install(*DEV)
    session.install(*packages)
    session.run("pytest", *RESP_TESTS, *session.posargs, env=env)


@nox.session
def faults(session: nox.Session) -> None:
    """Only the fault-injection suite (root, iproute2 and nftables; part of `tests` too)."""
    session.install(*DEV)
    session.run("pytest", "tests/faults", *session.posargs)


@nox.session(name="faults-long")
def faults_long(session: nox.Session) -> None:
    """The fault suite at full length: 30 s loads, a 2-minute partition cycle (~15 min)."""
    session.install(*DEV)
    session.run("pytest", "tests/faults", *session.posargs, env={"A3REDIS_FAULTS_LONG": "1"})


@nox.session(name="faults-secured")
def faults_secured(session: nox.Session) -> None:
    """The fault suite with a cluster secret and TLS (a CA: mutual TLS between nodes) on
    every node (~7 min)."""
    session.install(*DEV)
    session.run("pytest", "tests/faults", *session.posargs, env={"A3REDIS_FAULTS_SECURED": "1"})


@nox.session
def proto(session: nox.Session) -> None:
    """Regenerate the protobuf and purerpc stubs in a3redis/v1 from proto/."""
    session.install(*DEV)
    session.run("python", "proto/generate.py")


@nox.session
def deploy(session: nox.Session) -> None:
    """Offline checks of deploy/ (Dockerfile, compose, Kubernetes, Prometheus); no Docker needed."""
    session.install("-c", CONSTRAINTS, "-e", ".[deploy]")
    session.run("python", "deploy/check.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against real node processes; writes a report to stdout."""
    session.install(*DEV)
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session
def scaling(session: nox.Session) -> None:
    """Only the tests of growing and shrinking a cluster under load, at RF 2 and 3 (part of
    `tests` too; about 2.5 minutes)."""
    session.install(*DEV)
    session.run("pytest", "tests/cluster/test_scaling.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """3 nodes under a steady mixed load for 10 minutes: RSS and open files must stay flat."""
    session.install(*DEV)
    session.run("python", "-m", "benchmarks.soak", *session.posargs)


@nox.session(name="fresh-clone", python=False)
def fresh_clone(session: nox.Session) -> None:
    """The README's cluster and test commands in a fresh clone of HEAD (~15 min; not a default
    session). `-- --cluster-only` stops after the cluster command; needs ports 50051-50053 and
    8001-8003 free."""
    session.run("python3", "scripts/fresh_clone.py", *session.posargs, external=True)


@nox.session(python=False)
def lock(session: nox.Session) -> None:
    """Refresh constraints.txt: the newest versions pyproject.toml allows, for Python 3.11+."""
    # nox[uv] puts uv beside the Python that runs nox.
    beside = Path(sys.executable).with_name("uv")
    session.run(
        str(beside) if beside.exists() else "uv",
        "pip",
        "compile",
        "pyproject.toml",
        "--extra",
        "dev",
        "--extra",
        "deploy",
        "--universal",
        "--python-version",
        "3.11",
        "--upgrade",
        "-o",
        CONSTRAINTS,
        external=True,
    )
