"""Fault injection against real node processes in a private network namespace.

Rules:
- Everything runs inside one network namespace made for the test session
  (`ip netns add a3r-<pid>-<random>`), which has only its loopback: no
  route leads anywhere else, so no test traffic can leave the machine.
  Nodes listen on their own loopback addresses (node N on 127.0.0.(N+1),
  all on the same ports); clients connect from 127.0.0.101 and up, and the
  agent that looks inside for the test (health, membership, repair, LOCAL
  reads) from OBSERVER, which partitions never cut.
- Processes are started with `ip netns exec NS ...`, which execs, so the PID
  we hold is the program's own: kill -9, SIGSTOP and SIGCONT go to it.
- A partition is an nftables table in the namespace whose input chain drops
  packets between addresses of different groups (silently, like a cut
  cable: connections time out, nothing is refused); healing deletes the
  table. Rules are replaced in one nft transaction.
- Cleanup always happens: fixtures kill every process they started by PID
  and delete the namespace, whatever the test did. A namespace left behind
  by a session that was itself killed is removed by the next session (its
  name carries the PID of the session that made it).
- Without root, `ip` or `nft`, the fault tests are skipped with the reason and the fix,
  unless under CI (A3REDIS_REQUIRE_FAULTS=1 or CI=true), where they fail instead
  (tests/support/system_tools.py, shared by every test that needs a system command).
- With A3REDIS_FAULTS_SECURED=1 (`nox -s faults-secured`) every node runs
  with a cluster secret and TLS on every port (a CA made for the session:
  mutual TLS between nodes), and the agent and the workloads trust that CA
  (A3REDIS_TLS_CA in their environment): the same scenarios, secured.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a3redis.core.ring import Ring
from tests.support.certificates import Authority
from tests.support.history import (
    Anomaly,
    Observed,
    Op,
    check,
    check_repair_reports,
    load_history,
    merge_histories,
    version_from_json,
)
from tests.support.node_http import parse_samples
from tests.support.processes import NodeProcess
from tests.support.system_tools import missing_reason, unavailable
from tests.support.waiting import TransientError, wait_for
from tests.support.workload import Spec

REPO = Path(__file__).resolve().parents[2]
GRPC_PORT = 50051
GOSSIP_PORT = 8001
OBSERVER = "127.0.0.200"
# The system commands fault injection runs (listed in system-packages.toml).
SECURED = os.environ.get("A3REDIS_FAULTS_SECURED") == "1"
FAULT_TOOLS = ("ip", "nft")
NAME_PREFIX = "a3r-"
_NAME = re.compile(r"^a3r-(\d+)-[0-9a-f]+$")

# The short timers of the fault scenarios (README's variables).
FAST_TIMERS = {
    "FAILURE_TIMEOUT": "3",
    "GOSSIP_INTERVAL": "0.5",
    "SYNC_INTERVAL": "2",
    "REQUEST_TIMEOUT": "2",
    "PEER_TIMEOUT": "1",
}


def node_address(number: int) -> str:
    return f"127.0.0.{number + 1}"


def client_address(number: int) -> str:
    return f"127.0.0.{100 + number}"


# ----- capability -----------------------------------------------------------------------------


def missing_capability() -> str | None:
    """Why fault injection cannot run here (and the fix), or None."""
    if sys.platform != "linux":
        return "fault injection needs Linux (network namespaces)"
    if os.geteuid() != 0:
        return "fault injection needs root (ip netns, nftables): run the tests as root"
    for tool in FAULT_TOOLS:
        reason = missing_reason(tool)
        if reason is not None:
            return reason
    return None


def _run(argv: Sequence[str], input_text: str | None = None, timeout: float = 10.0) -> str:
    done = subprocess.run(
        list(argv), input=input_text, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


# ----- the namespace --------------------------------------------------------------------------


class Namespace:
    def __init__(self) -> None:
        self.name = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.created = False

    def create(self) -> None:
        _remove_stale_namespaces()
        _run(["ip", "netns", "add", self.name])
        self.created = True
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        routes = _run(["ip", "-n", self.name, "-4", "route", "show", "table", "all"])
        # Only loopback: local and broadcast routes on lo, no default route, no other link.
        assert "default" not in routes and all(
            " dev lo " in line or not line.strip() for line in routes.splitlines()
        ), routes
        links = _run(["ip", "-n", self.name, "-o", "link", "show"])
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"], links

    def argv(self, command: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(command), cwd=REPO, **kwargs)

    def nft(self, script: str) -> None:
        _run(self.argv(["nft", "-f", "-"]), input_text=script)

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Drop every packet between addresses of different groups (others are untouched)."""
        sets = [sorted(set(group)) for group in groups]
        self.cut([(a, b) for i, a in enumerate(sets) for b in sets[i + 1 :]])

    def cut(self, pairs: Sequence[tuple[Iterable[str], Iterable[str]]]) -> None:
        """Drop every packet between the two sides of each pair, both ways; nothing else."""
        rules = []
        for left, right in pairs:
            a, b = ", ".join(sorted(set(left))), ", ".join(sorted(set(right)))
            if a and b:
                rules.append(f"    ip saddr {{ {a} }} ip daddr {{ {b} }} drop")
                rules.append(f"    ip saddr {{ {b} }} ip daddr {{ {a} }} drop")
        body = "\n".join(rules)
        self.nft(
            "table inet a3r\ndelete table inet a3r\n"
            "table inet a3r {\n  chain cut {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"{body}\n  }}\n}}\n"
        )

    def heal(self) -> None:
        self.nft("table inet a3r\ndelete table inet a3r\n")

    def rules(self) -> str:
        return _run(self.argv(["nft", "list", "ruleset"]))

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in _run(["ip", "netns", "pids", self.name]).split()]
        except (RuntimeError, ValueError):
            return []

    def destroy(self) -> None:
        if not self.created:
            return
        # Every process in this namespace was started by this session.
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
        self.created = False


def _remove_stale_namespaces() -> None:
    """Delete namespaces of earlier sessions whose process is gone (killed mid-run)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NAME.match(name)
        if match is None or Path(f"/proc/{match.group(1)}").exists():
            continue
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


# ----- the agent: the test's eyes inside the namespace ----------------------------------------


class AgentError(TransientError):
    pass


class Agent:
    def __init__(self, namespace: Namespace, source: str = OBSERVER) -> None:
        self._namespace = namespace
        self._source = source
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def start(self) -> None:
        self._process = self._namespace.popen(
            [sys.executable, "-m", "tests.support.workload", "agent", self._source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._buffer = b""
        if self.request({"cmd": "ping"}, timeout=30) != "pong":
            raise AgentError("the agent did not answer")

    def close(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            self._process.wait(10)
            self._process = None

    def request(self, request: Mapping[str, Any], timeout: float = 30.0) -> Any:
        """Send one request and wait for its answer; restart the agent if it hangs."""
        if self._process is None or self._process.poll() is not None:
            self.start()
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(request).encode() + b"\n")
        process.stdin.flush()
        deadline = time.monotonic() + timeout
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(0.0, left))
            if not readable:
                self.close()
                raise AgentError(f"no answer to {request} within {timeout}s")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.close()
                raise AgentError(f"the agent exited while answering {request}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply = json.loads(line)
        if "error" in reply:
            raise AgentError(reply["error"])
        return reply["result"]


# ----- nodes ----------------------------------------------------------------------------------


class NsNode(NodeProcess):
    """One `python -m a3redis.node` inside the namespace, on its own loopback address."""

    def __init__(
        self,
        namespace: Namespace,
        number: int,
        workdir: Path,
        env: Mapping[str, str],
    ) -> None:
        self.namespace = namespace
        self.number = number
        self.node_id = f"node-{number}"
        self.address = node_address(number)
        super().__init__(
            workdir / f"node{number}-data",
            workdir / f"node{number}.log",
            env,
            host=self.address,
            grpc_port=GRPC_PORT,
            http_port=GOSSIP_PORT,
        )
        self.own_env.update(NODE_NUM=str(number), NODE_ID=self.node_id, ADVERTISE_HOST=self.address)

    def start(self, wait: bool = False, **kwargs: Any) -> NsNode:
        """Start without waiting: its health is read through the agent, inside the namespace."""
        assert not wait, "wait with FaultCluster.wait_ready"
        assert not self.running, f"{self.node_id} is already running"
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts + 1} at {time.monotonic():.3f}\n".encode())
        super().start(wait=False, **kwargs)
        return self

    def _launch(self, argv: list[str], **popen: Any) -> subprocess.Popen[Any]:
        return self.namespace.popen(argv, **popen)


# ----- workloads ------------------------------------------------------------------------------


class Workload:
    """A running `tests.support.workload run` process and the history it will write."""

    def __init__(self, namespace: Namespace, spec: Spec, workdir: Path) -> None:
        self.spec = spec
        self.spec_path = workdir / f"{spec.client}.spec.json"
        self.out_path = workdir / f"{spec.client}.history.json"
        self.log_path = workdir / f"{spec.client}.log"
        self.spec_path.write_text(json.dumps(spec.to_json()))
        with open(self.log_path, "wb") as log:
            self.process = namespace.popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.workload",
                    "run",
                    str(self.spec_path),
                    str(self.out_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait(self) -> list[Op]:
        limit = self.spec.duration + self.spec.request_timeout + 30
        if self.spec.start_at:
            limit += max(0.0, self.spec.start_at - time.monotonic())
        try:
            code = self.process.wait(limit)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"workload {self.spec.client} did not finish within {limit:.0f}s"
            ) from None
        if code != 0 or not self.out_path.exists():
            raise AssertionError(
                f"workload {self.spec.client} failed ({code}):\n{self.log_path.read_text()}"
            )
        return load_history(self.out_path)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


# ----- a cluster ------------------------------------------------------------------------------


@dataclass
class Converged:
    """What the end of a scenario found: every node's records, the last repair reports
    (their anomalies, and once checked the history's, in `anomalies`), and why each
    repair pass before the last was not clean."""

    final: dict[str, dict[str, Observed | None]]
    reports: dict[str, list[dict[str, Any]]]
    passes: int
    seconds: float
    anomalies: list[Anomaly] = field(default_factory=list)
    unclean: list[list[str]] = field(default_factory=list)


class FaultCluster:
    def __init__(
        self,
        namespace: Namespace,
        agent: Agent,
        workdir: Path,
        size: int,
        env: Mapping[str, str],
    ) -> None:
        self.namespace = namespace
        self.agent = agent
        self.workdir = workdir
        self.replication_factor = int(env.get("REPLICATION_FACTOR", "3"))
        self.nodes = [NsNode(namespace, n, workdir, env) for n in range(1, size + 1)]
        for node in self.nodes:
            node.extra_env.setdefault("REPLICATION_FACTOR", str(self.replication_factor))
            node.extra_env["PEERS"] = ",".join(o.endpoint for o in self.nodes if o is not node)
        self.workloads: list[Workload] = []
        self.ring = Ring([n.node_id for n in self.nodes], self.replication_factor)
        self._clients = 0

    def node(self, number: int) -> NsNode:
        return self.nodes[number - 1]

    # ----- life and death -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            if not node.running:
                node.start()
        for node in self.nodes:
            self.wait_ready(node, timeout)
        self.wait_all_alive(timeout)
        self.wait_coordinating(timeout)

    def wait_coordinating(self, timeout: float = 30.0) -> None:
        """Wait until every node coordinates requests (it has found its ring)."""

        def coordinating() -> bool:
            return all((self.health(node) or {}).get("ready") is True for node in self.nodes)

        wait_for(coordinating, timeout, "every node coordinates requests")

    def health(self, node: NsNode, timeout: float = 1.0) -> dict[str, Any] | None:
        try:
            reply = self.agent.request(
                {
                    "cmd": "http",
                    "address": node.gossip,
                    "path": "/health",
                    "timeout": timeout,
                },
                timeout=timeout + 10,
            )
        except AgentError:
            return None
        body = reply["body"]
        return body if isinstance(body, dict) else None

    def wait_ready(self, node: NsNode, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if not node.running:
                raise AssertionError(f"{node.node_id} exited:\n{node.output()[-3000:]}")
            health = self.health(node)
            return health is not None and health.get("status") == "ok"

        wait_for(ready, timeout, f"{node.node_id} ready")

    def statuses(self, observer: NsNode, timeout: float = 1.0) -> dict[str, str]:
        reply = self.agent.request(
            {"cmd": "http", "address": observer.gossip, "path": "/membership", "timeout": timeout},
            timeout=timeout + 10,
        )
        body = reply["body"]
        if reply["status"] != 200 or not isinstance(body, dict):
            raise AgentError(f"/membership of {observer.node_id}: {reply}")
        return {node_id: entry["status"] for node_id, entry in body.items()}

    def all_alive(self, observers: Sequence[NsNode] | None = None) -> bool:
        everyone = {n.node_id: "alive" for n in self.nodes}
        return all(self.statuses(o) == everyone for o in (observers or self.nodes))

    def wait_all_alive(self, timeout: float = 20.0) -> float:
        return wait_for(self.all_alive, timeout, "every node sees every node alive")

    # ----- faults ---------------------------------------------------------------------------

    def partition(self, *groups: Iterable[NsNode | str]) -> None:
        """Cut the groups (nodes or addresses) from each other; the observer is never cut."""
        self.namespace.partition([_addresses(group) for group in groups])

    def cut(self, *pairs: tuple[Iterable[NsNode | str], Iterable[NsNode | str]]) -> None:
        """Cut only between the two sides of each pair (a bridge, a ring of majorities)."""
        self.namespace.cut([(_addresses(a), _addresses(b)) for a, b in pairs])

    def heal(self) -> None:
        self.namespace.heal()

    # ----- clients --------------------------------------------------------------------------

    def client_address(self) -> str:
        self._clients += 1
        return client_address(self._clients)

    def workload(self, **fields: Any) -> Workload:
        fields.setdefault("client", f"w{len(self.workloads) + 1}")
        fields.setdefault("local_host", self.client_address())
        fields.setdefault("endpoints", [n.endpoint for n in self.nodes])
        spec = Spec(**fields)
        load = Workload(self.namespace, spec, self.workdir)
        self.workloads.append(load)
        return load

    def op(self, endpoint: str, kind: str, key: str, value: str | None = None, **extra: Any) -> Op:
        """One operation from the observer (or `local_host`) through one coordinator."""
        request = {"cmd": "op", "endpoint": endpoint, "kind": kind, "key": key, "value": value}
        request.update(extra)
        raw = self.agent.request(request, timeout=float(extra.get("timeout", 3.0)) + 20)
        return Op.from_json(raw)

    def repair(self, node: NsNode, timeout: float = 30.0) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.agent.request(
            {"cmd": "repair", "endpoint": node.endpoint, "timeout": timeout},
            timeout=timeout + 10,
        )
        return result

    def local_records(self, node: NsNode, keys: Sequence[str]) -> dict[str, Observed | None]:
        rows = self.agent.request(
            {"cmd": "local", "endpoint": node.endpoint, "keys": list(keys), "timeout": 10},
            timeout=40,
        )
        records: dict[str, Observed | None] = {}
        for key, (value, version) in zip(keys, rows, strict=True):
            parsed = version_from_json(version)
            records[key] = None if parsed is None else Observed(value, parsed)
        return records

    def metric(self, node: NsNode, name: str) -> float:
        """One unlabelled sample of the node's Prometheus metrics."""
        reply = self.agent.request(
            {"cmd": "http", "address": node.gossip, "path": "/metrics", "timeout": 2},
            timeout=15,
        )
        samples = parse_samples(str(reply["body"]))
        for sample in (name, name + "_total"):
            if (sample, ()) in samples:
                return samples[(sample, ())]
        raise AgentError(f"{node.node_id} has no metric {name}")

    def owners(self, key: str) -> Sequence[str]:
        return self.ring.preference_list(key.encode())

    # ----- the end of a scenario ------------------------------------------------------------

    def converge(self, keys: Sequence[str], max_passes: int = 6) -> Converged:
        """Repair rounds from every node until a whole pass finds nothing to do."""
        started = time.monotonic()
        self.wait_all_alive(30)
        everyone = {n.node_id for n in self.nodes}
        unclean: list[list[str]] = []
        passes = 0
        while True:
            passes += 1
            reports = {node.node_id: self.repair(node) for node in self.nodes}
            found = check_repair_reports(reports) + incomplete(reports, everyone)
            if not found or passes == max_passes:
                break
            unclean.append([anomaly.message for anomaly in found])
            # A node compares only with peers it sees alive: give gossip a round to catch
            # up on a busy machine before the next pass (the checks below stay the same).
            time.sleep(1.0)
        final = {node.node_id: self.local_records(node, keys) for node in self.nodes}
        seconds = time.monotonic() - started
        return Converged(final, reports, passes, seconds, anomalies=found, unclean=unclean)

    def check(self, history: Sequence[Op], keys: Sequence[str]) -> Converged:
        """Converge, then run every check of the history checker; the anomalies found."""
        all_keys = sorted(set(keys) | {op.key for op in history})
        converged = self.converge(all_keys)
        node_of = {node.endpoint: node.node_id for node in self.nodes}
        # The last repair pass's own findings stay after the history checker's.
        converged.anomalies = check(history, converged.final, self.owners, node_of) + (
            converged.anomalies
        )
        return converged

    def histories(self) -> list[Op]:
        return merge_histories(load.wait() for load in self.workloads)

    def close(self) -> None:
        for load in self.workloads:
            with contextlib.suppress(Exception):
                load.kill()
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)
            with contextlib.suppress(Exception):
                node.kill()
        with contextlib.suppress(Exception):
            self.heal()

    def logs(self, tail: int = 40) -> str:
        parts = []
        for node in self.nodes:
            lines = node.output().splitlines()[-tail:]
            parts.append(f"--- {node.node_id} ({node.log_path}):\n" + "\n".join(lines))
        return "\n".join(parts)


def incomplete(reports: dict[str, list[dict[str, Any]]], everyone: set[str]) -> list[Anomaly]:
    """An anomaly for each node whose repair round did not compare with every other node."""
    anomalies = []
    for node_id, peers in reports.items():
        compared = {r["peer"] for r in peers}
        if compared != everyone - {node_id}:
            message = f"{node_id} compared with {sorted(compared)} only"
            anomalies.append(Anomaly("repair-incomplete", "*", message))
    return anomalies


def _addresses(members: Iterable[NsNode | str]) -> list[str]:
    return [m.address if isinstance(m, NsNode) else m for m in members]


def secured_settings(directory: Path) -> dict[str, str]:
    """Node settings for a cluster secret and TLS with a CA of its own, made in
    `directory`; the CA is exported as A3REDIS_TLS_CA for the processes we start."""
    authority = Authority.create(directory)
    # One certificate serves every node: peers verify the address they dial.
    pair = authority.issue(directory, "node", ips=tuple(node_address(n) for n in range(1, 30)))
    os.environ["A3REDIS_TLS_CA"] = str(authority.file)
    return {
        "CLUSTER_SECRET": secrets.token_hex(32),
        "TLS_CERT_FILE": str(pair.cert),
        "TLS_KEY_FILE": str(pair.key),
        "TLS_CA_FILE": str(authority.file),
    }


@contextlib.contextmanager
def fault_session() -> Iterator[tuple[Namespace, Agent, dict[str, str]]]:
    """A namespace, its agent and the settings every node gets (the secured ones with
    A3REDIS_FAULTS_SECURED=1) for a test session; skipped (or failed) if impossible."""
    reason = missing_capability()
    if reason is not None:
        unavailable(reason)
    security: dict[str, str] = {}
    if SECURED:
        directory = Path(tempfile.mkdtemp(prefix="a3r-faults-tls-"))
        security = secured_settings(directory)
    namespace = Namespace()
    agent = Agent(namespace)
    try:
        try:
            namespace.create()
            namespace.heal()  # nft works in it (creates and deletes the table)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            unavailable(f"cannot build a network namespace with nftables: {error}")
        agent.start()
        yield namespace, agent, security
    finally:
        agent.close()
        namespace.destroy()
        if SECURED:
            os.environ.pop("A3REDIS_TLS_CA", None)
            shutil.rmtree(directory, ignore_errors=True)
