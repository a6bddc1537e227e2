"""Client processes for the fault tests, run inside the test's network namespace.

Two commands, both `python -m tests.support.workload ...` under `ip netns exec`:

- `run SPEC OUT`: a bounded load of puts (some with a TTL, if the spec says so),
  deletes and gets (bounded both in operations and in time) from a chosen
  source address through chosen coordinators; every operation is recorded
  with its invocation and completion time (CLOCK_MONOTONIC, shared with the
  test process), outcome, version and expiry, and the history is written to
  OUT as JSON.
- `agent SOURCE`: a helper that answers one JSON request per stdin line with
  one JSON line on stdout (HTTP GETs, repair rounds, LOCAL reads of a node's
  own copies, single operations), so the test process, which lives outside
  the namespace, can look inside it. Its traffic comes from SOURCE, an
  address that partitions never cut.

Rules: every request has a deadline; nothing here talks to anything but
the loopback addresses it is given.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import ssl
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from a3redis.client import Client, ClientError
from a3redis.core.consistency import Consistency
from a3redis.core.hlc import Version
from tests.support.history import DELETE, GET, PUT, UNKNOWN, Op, classify, version_json


@dataclass
class Spec:
    client: str
    local_host: str
    endpoints: list[str]
    keys: list[str]
    duration: float = 10.0
    max_ops: int = 2000  # per worker
    workers: int = 2
    mix: dict[str, int] = field(default_factory=lambda: {PUT: 5, DELETE: 1, GET: 4})
    write_consistency: str = "QUORUM"
    read_consistency: str = "QUORUM"
    request_timeout: float = 3.0
    route_by_key: bool = False
    # Each operation goes to the next endpoint in turn (one client per endpoint; the
    # clients share the newest version they saw, as one application's requests would).
    rotate: bool = False
    pause: float = 0.0  # seconds between a worker's operations
    seed: int = 0
    start_at: float = 0.0  # CLOCK_MONOTONIC time to begin at (0: at once)
    # Each put draws its TTL from these (ms; 0: none). Empty: no put has a TTL.
    ttl_ms: list[int] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Spec:
        return cls(**raw)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def _one(
    client: Client,
    name: str,
    kind: str,
    key: str,
    value: str | None,
    consistency: str,
    coordinator: str,
    ttl_ms: int = 0,
) -> Op:
    level = Consistency[consistency]
    invoked = time.monotonic()
    version: Version | None = None
    read: str | None = None
    expires_at_ms = 0
    code, message = "OK", ""
    try:
        if kind == PUT:
            assert value is not None
            ttl = ttl_ms / 1000 if ttl_ms else None
            version = await client.put(key.encode(), value.encode(), level, ttl=ttl)
            # The coordinator's rule (core.expiry): the TTL after the write's version.
            expires_at_ms = version.wall_ms + ttl_ms if ttl_ms else 0
        elif kind == DELETE:
            version = await client.delete(key.encode(), level)
        else:
            result = await client.get(key.encode(), level)
            version = result.version
            read = None if result.value is None else result.value.decode()
            expires_at_ms = result.expires_at_ms
    except ClientError as error:
        code, message = error.code, error.message
    except Exception as error:  # anything unexpected: the operation's fate is unknown
        code, message = type(error).__name__, str(error)
    completed = time.monotonic()
    outcome = classify(code, message)
    if outcome != "ok":
        version = None
        expires_at_ms = 0
    return Op(
        client=name,
        kind=kind,
        key=key,
        value=value if kind == PUT else read,
        invoked=invoked,
        completed=completed,
        outcome=outcome,
        version=version,
        consistency=consistency,
        code=code,
        message=message[:300],
        coordinator=coordinator,
        expires_at_ms=expires_at_ms,
        ttl_ms=ttl_ms if kind == PUT else 0,
    )


async def run_workload(spec: Spec, stop: trio.Event | None = None) -> list[Op]:
    """Run the load until its duration or operation count is spent, or `stop` is set."""
    if spec.start_at:
        await trio.sleep(max(0.0, spec.start_at - time.monotonic()))
    ops: list[Op] = []
    deadline = time.monotonic() + spec.duration
    kinds = [kind for kind, weight in spec.mix.items() for _ in range(weight)]

    async def worker(number: int) -> None:
        rng = random.Random(f"{spec.seed}-{spec.client}-{number}")
        name = f"{spec.client}.{number}"
        targets = spec.endpoints if spec.rotate else [",".join(spec.endpoints)]
        async with _clients(spec, targets) as clients:
            for sequence in range(spec.max_ops):
                if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                    return
                kind = rng.choice(kinds)
                key = rng.choice(spec.keys)
                target = sequence % len(clients)
                client = clients[target]
                if spec.rotate:
                    client.seen = max((c.seen for c in clients if c.seen), default=None)
                value = f"{name}-{sequence}" if kind == PUT else None
                level = spec.read_consistency if kind == GET else spec.write_consistency
                coordinator = targets[target] if spec.rotate or not spec.route_by_key else ""
                ttl = rng.choice(spec.ttl_ms) if kind == PUT and spec.ttl_ms else 0
                ops.append(await _one(client, name, kind, key, value, level, coordinator, ttl))
                if spec.pause:
                    await trio.sleep(spec.pause)

    # A hard bound: the duration, one request deadline and some slack for the last answers.
    with trio.move_on_after(spec.duration + spec.request_timeout + 10):
        async with trio.open_nursery() as nursery:
            for number in range(spec.workers):
                nursery.start_soon(worker, number)
    return ops


@asynccontextmanager
async def _clients(spec: Spec, targets: Sequence[str]) -> AsyncIterator[list[Client]]:
    """One Client per target (an endpoint list), opened and closed together."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                Client.connect(
                    target,
                    request_timeout=spec.request_timeout,
                    route_by_key=spec.route_by_key,
                    local_host=spec.local_host,
                    tls_ca=_tls_ca(),
                )
            )
            for target in targets
        ]


# ----- the agent ----------------------------------------------------------------------------


def _tls_ca() -> str | None:
    """The CA that signed the nodes' certificates, when they speak TLS (as the CLI reads it)."""
    return os.environ.get("A3REDIS_TLS_CA") or None


def _http_get(source: str, address: str, path: str, timeout: float) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    ca = _tls_ca()
    connection = (
        http.client.HTTPConnection(host, int(port), timeout=timeout, source_address=(source, 0))
        if ca is None
        else http.client.HTTPSConnection(
            host,
            int(port),
            timeout=timeout,
            source_address=(source, 0),
            context=ssl.create_default_context(cafile=ca),
        )
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = body.decode(errors="replace")
        return {"status": response.status, "body": parsed}
    finally:
        connection.close()


async def _repair(source: str, endpoint: str, timeout: float) -> list[dict[str, Any]]:
    async with Client.connect(
        endpoint, request_timeout=timeout, route_by_key=False, local_host=source, tls_ca=_tls_ca()
    ) as client:
        return await client.repair(wait=True)


async def _local(source: str, endpoint: str, keys: list[str], timeout: float) -> list[Any]:
    """This node's own record of each key: [value or None, version or None]."""
    out: list[Any] = []
    async with Client.connect(
        endpoint, request_timeout=timeout, route_by_key=False, local_host=source, tls_ca=_tls_ca()
    ) as client:
        for start in range(0, len(keys), 200):
            chunk = [k.encode() for k in keys[start : start + 200]]
            for result in await client.batch_get(chunk, Consistency.LOCAL):
                value = None if result.value is None else result.value.decode()
                out.append([value, version_json(result.version)])
    return out


async def _op(source: str, request: dict[str, Any]) -> dict[str, Any]:
    async with Client.connect(
        request["endpoint"],
        request_timeout=request.get("timeout", 3.0),
        route_by_key=False,
        local_host=request.get("local_host", source),
        tls_ca=_tls_ca(),
    ) as client:
        if request.get("seen"):
            client.seen = Version(*request["seen"])
        op = await _one(
            client,
            request.get("client", "agent"),
            request["kind"],
            request["key"],
            request.get("value"),
            request.get("consistency", "QUORUM"),
            request["endpoint"],
        )
        result = op.to_json()
        result["seen"] = version_json(client.seen)
        return result


def _serve(source: str, request: dict[str, Any]) -> Any:
    command = request["cmd"]
    timeout = float(request.get("timeout", 2.0))
    if command == "http":
        return _http_get(source, request["address"], request["path"], timeout)
    if command == "repair":
        return trio.run(_repair, source, request["endpoint"], timeout)
    if command == "local":
        return trio.run(_local, source, request["endpoint"], request["keys"], timeout)
    if command == "op":
        return trio.run(_op, source, request)
    if command == "ping":
        return "pong"
    raise ValueError(f"unknown command {command!r}")


def agent(source: str) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            reply: dict[str, Any] = {"result": _serve(source, request)}
        except Exception as error:  # reported to the test, which decides
            reply = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 1 and argv[0] == "agent" and len(argv) == 2:
        agent(argv[1])
        return 0
    if len(argv) == 3 and argv[0] == "run":
        with open(argv[1]) as spec_file:
            spec = Spec.from_json(json.load(spec_file))
        started = time.monotonic()
        ops = trio.run(run_workload, spec)
        with open(argv[2], "w") as out:
            json.dump(
                {
                    "ops": [op.to_json() for op in ops],
                    "spec": spec.to_json(),
                    "started": started,
                    "finished": time.monotonic(),
                    "unknown": sum(op.outcome == UNKNOWN for op in ops),
                },
                out,
            )
        return 0
    print("usage: python -m tests.support.workload run SPEC OUT | agent SOURCE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
