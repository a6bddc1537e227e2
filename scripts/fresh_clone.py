"""The README's two commands, checked on a fresh clone: `nox -s fresh-clone [-- --cluster-only]`.

Rules:
- What is checked is the committed HEAD: `git clone` of this repository into a temporary
  directory with HEAD checked out; uncommitted changes are not part of it (a warning says so).
- The commands come from the clone's README.md (the one line of each form, see
  `readme_commands`), never retyped here, and run with bash in the clone, as a newcomer
  pastes them.
- The cluster command takes the standard ports (gRPC 50051-50053, HTTP 8001-8003): if any is
  in use, the check stops before cloning and names them.
- Cluster part: every node's /health answers 200 (the first run installs the package, so this
  may take minutes), a put and a get through the clone's `.venv/bin/a3redis` agree; then
  Ctrl-C (SIGINT to the command's process group, as a terminal sends it): it must exit 0
  within 20 s, print no traceback, every node must log that it stopped cleanly, and every
  port must be free again.
- Test part (not with --cluster-only; about 15 minutes): the test command must exit 0, and as
  root with apt-get, where it installs every system package itself, skip no test.
- Only loopback is contacted (no HTTP proxy). Every process started here is stopped by its
  process group, whatever happens. The temporary directory is removed after a pass and kept
  (and named) after a failure or with --keep.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GRPC_PORTS = (50051, 50052, 50053)
HTTP_PORTS = (8001, 8002, 8003)
CLUSTER_COMMAND = re.compile(r"^python3 -m venv \.venv && .*a3redis cluster up$", re.MULTILINE)
TEST_COMMAND = re.compile(r"^\./scripts/test(?: .*)?$", re.MULTILINE)
STOP_WITHIN = 20.0
# pytest's -ra summary names every skipped test on a line of its own.
SKIPPED_LINE = re.compile(r"^SKIPPED \[\d+\] .*$", re.MULTILINE)
# Straight to loopback: a proxy from the environment must not see (or break) these requests.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CheckFailed(Exception):
    """One step of the check failed; the message says which and what was seen."""


@dataclass(frozen=True)
class ReadmeCommands:
    cluster: str
    test: str


def readme_commands(readme: str) -> ReadmeCommands:
    """The quick start's cluster and test commands: each the one README line of its form."""
    found = {}
    for name, pattern in (("cluster", CLUSTER_COMMAND), ("test", TEST_COMMAND)):
        lines = pattern.findall(readme)
        if len(lines) != 1:
            raise CheckFailed(
                f"README.md: expected exactly one {name} command (a line matching "
                f"{pattern.pattern}), found {len(lines)}: {lines}"
            )
        found[name] = lines[0]
    return ReadmeCommands(**found)


def ports_in_use(ports: tuple[int, ...]) -> list[int]:
    """The ports a node could not bind on 127.0.0.1 right now."""
    taken = []
    for port in ports:
        with socket.socket() as probe:
            # As the nodes bind: connections lingering in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                taken.append(port)
    return taken


def say(line: str) -> None:
    print(f"fresh-clone: {line}", flush=True)


def clone_head(destination: Path) -> str:
    head = _git("rev-parse", "HEAD", cwd=REPO).strip()
    if _git("status", "--porcelain", "--untracked-files=no", cwd=REPO).strip():
        say("warning: uncommitted changes are not part of the check (it clones HEAD)")
    _git("clone", "--quiet", "--no-checkout", str(REPO), str(destination), cwd=REPO)
    _git("checkout", "--quiet", "--detach", head, cwd=destination)
    return head


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CheckFailed(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def http_status(url: str) -> int | None:
    try:
        with LOOPBACK.open(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def check_cluster_command(clone: Path, command: str, log_path: Path, ready_within: float) -> None:
    say(f"$ {command}    (output: {log_path})")
    with log_path.open("wb") as log:
        # Its own process group, so that SIGINT can go to the whole of it, as Ctrl-C does.
        cluster = subprocess.Popen(
            ["bash", "-c", command],
            cwd=clone,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        started = time.monotonic()
        for port in HTTP_PORTS:
            url = f"http://127.0.0.1:{port}/health"
            while http_status(url) != 200:
                if cluster.poll() is not None:
                    raise CheckFailed(
                        f"the cluster command exited with {cluster.returncode} before {url} "
                        f"answered 200:\n{tail(log_path)}"
                    )
                if time.monotonic() - started > ready_within:
                    raise CheckFailed(
                        f"{url} did not answer 200 within {ready_within:.0f}s:\n{tail(log_path)}"
                    )
                time.sleep(0.5)
        say(f"every node's /health answers 200 after {time.monotonic() - started:.0f}s")
        _put_and_get(clone)
        stopped = _ctrl_c(cluster)
        output = log_path.read_text(errors="replace")
        if cluster.returncode != 0 or "Traceback" in output:
            raise CheckFailed(
                f"after Ctrl-C the cluster command exited with {cluster.returncode}:\n"
                f"{tail(log_path)}"
            )
        _wait_ports_free()
        _check_nodes_stopped_cleanly(clone)
        say(
            f"Ctrl-C: exited 0 after {stopped:.1f}s, no traceback, every node stopped cleanly, "
            "every port free again"
        )
    finally:
        _stop_group(cluster)


def _put_and_get(clone: Path) -> None:
    cli = str(clone / ".venv" / "bin" / "a3redis")
    key, value = "fresh-clone-check", "hello from a fresh clone"
    deadline = time.monotonic() + 30
    while True:
        put = subprocess.run(
            [cli, "put", key, value], cwd=clone, capture_output=True, text=True, timeout=30
        )
        if put.returncode == 0:
            break
        # Every node is up, but a node may not have heard of the others for a moment yet.
        if time.monotonic() > deadline:
            raise CheckFailed(f"a3redis put failed ({put.returncode}): {put.stderr.strip()}")
        time.sleep(1)
    got = subprocess.run(
        [cli, "get", key, "--endpoint", "127.0.0.1:50053"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if got.returncode != 0 or got.stdout != value + "\n":
        raise CheckFailed(
            f"a3redis get through node-3 answered {got.stdout!r} ({got.returncode}) "
            f"instead of {value!r}: {got.stderr.strip()}"
        )
    say(f"a3redis put through node-1 and get through node-3 agree: {value!r}")


def _ctrl_c(process: subprocess.Popen[bytes]) -> float:
    """SIGINT to the process group, as a terminal sends Ctrl-C; the seconds it took to exit."""
    sent = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(STOP_WITHIN)
    except subprocess.TimeoutExpired:
        raise CheckFailed(
            f"the cluster command was still running {STOP_WITHIN:.0f}s after Ctrl-C"
        ) from None
    return time.monotonic() - sent


def _wait_ports_free(within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while taken := ports_in_use(GRPC_PORTS + HTTP_PORTS):
        if time.monotonic() > deadline:
            raise CheckFailed(f"ports {taken} still in use {within:.0f}s after the cluster exited")
        time.sleep(0.2)


def _check_nodes_stopped_cleanly(clone: Path) -> None:
    # `cluster up` keeps each node's log beside its data in ./data (README's quick start).
    for number in range(1, len(HTTP_PORTS) + 1):
        log = clone / "data" / f"node{number}.log"
        if "stopped cleanly" not in tail(log, lines=5):
            raise CheckFailed(f"node-{number} did not stop cleanly ({log}):\n{tail(log)}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Whatever happened, nothing of the command outlives the check."""
    if process.poll() is not None:
        return
    for signum in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
            process.wait(STOP_WITHIN)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def check_test_command(clone: Path, command: str, log_path: Path) -> None:
    say(f"$ {command}    (about 15 minutes; output also in {log_path})")
    with log_path.open("w") as log:
        tests = subprocess.Popen(
            ["bash", "-c", command],
            cwd=clone,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert tests.stdout is not None
        for line in tests.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = tests.wait()
    if code != 0:
        raise CheckFailed(f"the test command exited with {code} (output: {log_path})")
    skipped = SKIPPED_LINE.findall(log_path.read_text(errors="replace"))
    installs_everything = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if skipped and installs_everything:
        listing = "\n".join(skipped)
        raise CheckFailed(
            "as root with apt-get the test command installs every system package, "
            f"yet it skipped:\n{listing}"
        )
    say(f"the test command passed ({len(skipped)} skipped)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--cluster-only", action="store_true", help="stop after the cluster command's check"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    parser.add_argument(
        "--ready-within",
        type=float,
        default=600.0,
        help="seconds the cluster command may take to install and answer /health (600)",
    )
    args = parser.parse_args(argv)

    taken = ports_in_use(GRPC_PORTS + HTTP_PORTS)
    if taken:
        say(
            f"ports {', '.join(map(str, taken))} are in use (an `a3redis cluster up` "
            "already running?): the cluster command needs 50051-50053 and 8001-8003 free"
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="a3redis-fresh-clone-"))
    passed = False
    try:
        clone = workdir / "a3redis"
        head = clone_head(clone)
        say(f"cloned HEAD {head[:12]} into {clone}")
        commands = readme_commands((clone / "README.md").read_text())
        check_cluster_command(clone, commands.cluster, workdir / "cluster.log", args.ready_within)
        if not args.cluster_only:
            check_test_command(clone, commands.test, workdir / "test.log")
        passed = True
    except CheckFailed as failure:
        say(f"FAILED: {failure}")
    except KeyboardInterrupt:
        # The cluster command is stopped already (its finally); the test command, in our
        # process group, got the same Ctrl-C.
        say("interrupted")
        return 130
    finally:
        if passed and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir}")
    if passed:
        say("passed" + (" (cluster command only)" if args.cluster_only else ""))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
