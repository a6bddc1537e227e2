"""The node process: `python -m a3redis.node`, configured by environment variables.

Rules: this module is the supervisor. It reads the Config, binds its
listening sockets (so a taken port fails before anything starts), opens the
store, and runs every service under one nursery. SIGINT/SIGTERM set one
`stop` event that every service watches; the store closes last, after the
services have drained, so every acknowledged write is flushed. Exit codes:
0 after a clean stop, 1 for a startup failure (port taken, DATA_DIR locked
or corrupt), 2 for invalid configuration. SIGHUP reads CLIENT_TOKENS_FILE and
the TLS files again (one receiver for both: a second would replace the first).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import os
import random
import signal
import socket
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from a3redis.api import status_details
from a3redis.api.describe import Describer
from a3redis.api.grpc_services import KeyValueService, ReplicaService
from a3redis.api.health import HealthService
from a3redis.api.http import NodeView, serve_http
from a3redis.api.metrics import (
    NodeMetrics,
    connection_source,
    node_source,
    peer_auth_source,
    rebalance_source,
    resp_source,
)
from a3redis.api.reflection import Reflection
from a3redis.api.replica_calls import ReplicaCalls
from a3redis.api.resp_handler import RedisCommands
from a3redis.api.resp_server import RespSettings, RespStats, codec_limits, serve_resp
from a3redis.cluster.anti_entropy import AntiEntropy, RepairSettings
from a3redis.cluster.gossip import (
    PROBE_TIMEOUT,
    GossipLoop,
    MemberFile,
    make_http_client,
    save_incarnation,
    seed_addresses,
    start_incarnation,
)
from a3redis.cluster.hinted_handoff import HintStore
from a3redis.cluster.keyspace import Keyspace
from a3redis.cluster.peer_auth import PeerGuard
from a3redis.cluster.rebalance import LEFT_MARKER, Rebalancer, StreamPacer
from a3redis.cluster.topology import Topology
from a3redis.config import (
    Config,
    ConfigError,
    TokensFile,
    check_protected_mode,
    is_loopback,
)
from a3redis.core.client_tokens import Role as TokenRole
from a3redis.core.client_tokens import TokenHolder
from a3redis.core.hlc import HybridLogicalClock
from a3redis.core.membership import Membership, MembershipSettings, MemberState, Role, Status
from a3redis.core.transition import Readiness, restart_state
from a3redis.net.channels import ChannelPool
from a3redis.net.grpc_server import RequestGate, serve_grpc
from a3redis.net.tls import NodeTls, TlsFileError
from a3redis.runtime import collector, logs
from a3redis.runtime.supervision import unwrap_single_group
from a3redis.runtime.wall_clock import wall_clock
from a3redis.storage.store import DataDirError, Store

log = logging.getLogger("a3redis.node")

HINT_DELIVERY_INTERVAL = 1.0
# Member tables up to this size are saved on every change, larger ones once a second.
SAVE_EVERY_CHANGE_UP_TO = 64


class StartupError(Exception):
    """The node cannot start; the message says why and what to change."""


@dataclass(frozen=True, slots=True)
class BoundPorts:
    grpc: int
    http: int
    resp: int


def bind_listener(host: str, port: int, variable: str) -> socket.socket:
    """A listening TCP socket on exactly host:port, or a StartupError naming `variable`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise StartupError(f"{variable}: cannot resolve {host!r}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    # SO_REUSEADDR lets a restarted node rebind past TIME_WAIT; on Linux it does
    # not let two processes listen on one port (SO_REUSEPORT would).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(1024)
    except OSError as error:
        sock.close()
        raise StartupError(
            f"{variable}: cannot listen on {host}:{port}: {error.strerror} "
            f"(is another node using this port?)"
        ) from None
    sock.setblocking(False)
    return sock


async def run_node(
    config: Config,
    stop: trio.Event,
    *,
    tokens: TokenHolder | None = None,
    tls: NodeTls | None = None,
    task_status: trio.TaskStatus[BoundPorts] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one node until `stop` is set; report the bound ports when serving.

    `tokens`: the client tokens to check (the caller may replace them, on SIGHUP); by
    default those of CLIENT_TOKENS_FILE as read into `config`, if it is set. `tls`: the
    TLS contexts (the caller may reload them, on SIGHUP); by default built from the
    TLS_* files of `config`, if they are set.
    """
    if tokens is None and config.client_tokens is not None:
        tokens = TokenHolder(config.client_tokens.tokens)
    if tls is None and config.tls is not None:
        tls = _node_tls(config)
    grpc_sock = bind_listener(config.bind_host, config.grpc_port, "GRPC_PORT")
    http_sock = bind_listener(config.bind_host, config.gossip_port, "GOSSIP_PORT")
    try:
        resp_sock = bind_listener(config.bind_host, config.resp_port, "RESP_PORT")
    except StartupError:
        grpc_sock.close()
        http_sock.close()
        raise
    ports = BoundPorts(
        grpc_sock.getsockname()[1], http_sock.getsockname()[1], resp_sock.getsockname()[1]
    )
    # Port 0 asks the kernel for a free port; from here on the node tells the truth.
    config = dataclasses.replace(
        config, grpc_port=ports.grpc, gossip_port=ports.http, resp_port=ports.resp
    )
    wall_ms = wall_clock(config.clock_offset_ms)
    try:
        store_cm = Store.open(
            config.data_dir, fsync=config.fsync, compact_min_bytes=config.compact_min_bytes
        )
        async with store_cm as store:
            clock = HybridLogicalClock(config.node_id)
            hints = HintStore(config.data_dir / "hints", config.hints_kept_for, wall_ms)
            await trio.to_thread.run_sync(hints.load)
            gate = RequestGate()
            member_file = MemberFile(config.data_dir, config.cluster_name)
            membership, parked = _membership(config, wall_ms(), member_file)
            guard = PeerGuard.from_config(config, wall_ms)  # None without a cluster secret
            if config.cluster_secrets is not None:
                _, previous = config.cluster_secrets
                log.info(
                    "cluster secret set: gossip, replica calls and operator requests are signed "
                    "and checked%s",
                    "" if previous is None else " (signatures with the previous secret accepted)",
                )
            async with (
                make_http_client(config, None if tls is None else tls.http_client) as http,
                ChannelPool.open(
                    PROBE_TIMEOUT, _local_host(config), None if tls is None else tls.grpc_client
                ) as channels,
                trio.open_nursery() as background,
            ):
                # Replica links, replica work that outlives a request, read repair.
                readiness = Readiness(trio.current_time(), config.join_timeout)
                cluster = Topology(
                    membership,
                    config.replication_factor,
                    functools.partial(
                        ReplicaCalls,
                        channels,
                        coordinator=config.node_id,
                        guard=guard,
                        frames=config.replica_frames,
                    ),
                    background,
                    config.peer_timeout,
                    readiness=readiness,
                )
                keyspace = Keyspace(
                    store,
                    clock,
                    wall_ms,
                    config.limits,
                    cluster,
                    background,
                    config.request_timeout,
                    hints,
                    read_consistency=config.read_consistency,
                    write_consistency=config.write_consistency,
                )
                await cluster.prepare_ring()
                background.start_soon(hints.run_delivery, cluster, HINT_DELIVERY_INTERVAL)
                saver = MembershipSaver(config.data_dir, membership, member_file)
                gossip = GossipLoop(
                    config,
                    membership,
                    http,
                    Describer(channels, PROBE_TIMEOUT).gossip_address,
                    random.Random(),
                    saver,
                    guard,
                )
                repair = AntiEntropy(
                    keyspace,
                    cluster,
                    RepairSettings(
                        config.sync_interval,
                        config.chunk_count,
                        config.repair_max_keys_per_second,
                        config.tombstone_grace,
                        config.merkle_fanout,
                    ),
                )
                resp_stats = RespStats(config.resp_max_connections)
                pacer = StreamPacer(
                    config.stream_max_keys_per_second,
                    config.stream_busy_keys_per_second,
                    lambda: gate.foreground_served + resp_stats.commands_served,
                    # A Stream answer held back longer would risk the caller's timeout.
                    max_answer_wait=config.peer_timeout / 4,
                )
                rebalancer = Rebalancer(
                    membership,
                    cluster,
                    keyspace,
                    readiness,
                    gossip.peers_unheard,
                    repair.index,
                    config.data_dir,
                    drain=config.transition_drain,
                    pacer=pacer,
                    on_change=saver,
                    on_left=stop.set,
                    parked=parked,
                )
                metrics = NodeMetrics()
                metrics.add_source(node_source(store, keyspace, hints, repair, gossip))
                metrics.add_source(rebalance_source(rebalancer))
                if guard is not None:
                    metrics.add_source(peer_auth_source(guard))
                view = NodeView(
                    config, store, gossip, repair, metrics, time.monotonic(), rebalancer
                )
                view.tokens = tokens
                replica_service = ReplicaService(keyspace, gate, repair, metrics, pacer, guard)
                health = HealthService(view.condition, gate, stop)
                services = [
                    KeyValueService(keyspace, config, gate, repair, metrics, tokens).service,
                    replica_service.service,
                    health.service,
                    *Reflection(guard).services(),
                ]
                async with trio.open_nursery() as nursery:
                    connections = await nursery.start(
                        partial(
                            serve_grpc,
                            grpc_sock,
                            services,
                            gate,
                            stop,
                            config.shutdown_grace,
                            max_connections=config.max_connections,
                            tls=tls,
                            members_only=[replica_service.service.name],
                            explain=status_details.explain,
                            frames=replica_service if config.replica_frames else None,
                        )
                    )
                    metrics.add_source(connection_source(connections))
                    await nursery.start(health.watch_changes)
                    await nursery.start(partial(serve_http, http_sock, view, stop, tls=tls))
                    resp_settings = RespSettings(
                        config.resp_max_connections,
                        config.resp_idle_timeout,
                        config.resp_max_reply_buffer,
                        config.shutdown_grace,
                        codec_limits(config.limits.max_key_bytes, config.limits.max_value_bytes),
                        tls=None if tls is None else tls.resp_server,
                    )
                    redis_commands = RedisCommands(
                        keyspace,
                        store,
                        config,
                        config.resp_address,
                        lambda: {
                            "total": resp_stats.accepted,
                            "refused": resp_stats.refused_over_limit,
                            "net_input_bytes": resp_stats.bytes_received,
                            "net_output_bytes": resp_stats.bytes_sent,
                        },
                        tokens=tokens,
                        expired_purged=lambda: repair.stats.expired_purged,
                        command_facts=metrics.command_facts,
                        count_commands=metrics.observe_commands,
                    )
                    await nursery.start(
                        partial(
                            serve_resp,
                            resp_sock,
                            redis_commands,
                            resp_settings,
                            stop,
                            redis_commands.observe,
                            stats=resp_stats,
                        )
                    )
                    metrics.add_source(resp_source(resp_stats))
                    await nursery.start(gossip.run, stop)
                    await nursery.start(repair.run, stop)
                    await nursery.start(rebalancer.run, stop)
                    await nursery.start(collector.pace_young_passes, stop)
                    log.info(
                        "%s serving gRPC on %s:%d, HTTP on %s:%d and Redis on %s:%d "
                        "(data in %s, fsync=%s)",
                        config.node_id,
                        config.bind_host,
                        ports.grpc,
                        config.bind_host,
                        ports.http,
                        config.bind_host,
                        ports.resp,
                        config.data_dir,
                        config.fsync.value,
                    )
                    if tls is not None:
                        log.info(
                            "TLS on the gRPC and HTTP ports and to peers (%s; %s)",
                            tls.files.cert,
                            "peers need a certificate from TLS_CA_FILE"
                            if tls.peers_need_certificates
                            else "no TLS_CA_FILE: peers verified against the system's CAs",
                        )
                    task_status.started(ports)
                    await stop.wait()
                    view.draining = True
                    log.info("shutting down: draining requests")
                background.cancel_scope.cancel()
                saver.flush()
        log.info("stopped cleanly")
    except DataDirError as error:
        raise StartupError(str(error)) from None
    finally:
        grpc_sock.close()
        resp_sock.close()
        if http_sock.fileno() >= 0:
            http_sock.close()


def _membership(config: Config, now_ms: int, member_file: MemberFile) -> tuple[Membership, bool]:
    """Our member table (restored from DATA_DIR), and whether we left the ring earlier."""
    saved, status_ages = member_file.load(time.time())
    mine = next((state for state in saved if state.node_id == config.node_id), None)
    role = _start_role(config, mine)
    parked = _left_earlier(config)
    status, incarnation = restart_state(
        role,
        None if mine is None else mine.incarnation,
        start_incarnation(config.data_dir, now_ms),
        parked,
    )
    save_incarnation(config.data_dir, incarnation)
    me = MemberState(
        config.node_id,
        str(config.grpc_address),
        str(config.gossip_address),
        status,
        incarnation,
        role,
        resp_addr=str(config.resp_address),
    )
    settings = MembershipSettings(
        failure_timeout=config.failure_timeout, dead_member_reap=config.dead_member_reap
    )
    membership = Membership(
        me,
        config.cluster_name,
        config.replication_factor,
        settings,
        limits=(config.limits.max_key_bytes, config.limits.max_value_bytes),
    )
    membership.restore(saved, trio.current_time(), status_ages)
    if saved:
        log.info("restored %d members from %s", len(saved), member_file.path)
    if parked:
        log.warning(
            "%s left the ring (its decommission ended): it will not join again with this "
            "DATA_DIR; wipe DATA_DIR to join as a new node",
            config.node_id,
        )
    return membership, parked


def _start_role(config: Config, mine: MemberState | None) -> Role:
    """Our role as we saved it (`mine`: our entry in the saved table); a fresh node with
    peers starts at its cold-start gate (a node that left stays there: see
    `_left_earlier`)."""
    if _left_earlier(config):
        return Role.STARTING
    if mine is None or mine.status is Status.LEFT:
        return Role.STARTING if seed_addresses(config) or mine is not None else Role.NORMAL
    return mine.role


def _left_earlier(config: Config) -> bool:
    """Whether this node's decommission ended in an earlier run."""
    return (config.data_dir / LEFT_MARKER).exists()


def _node_tls(config: Config) -> NodeTls | None:
    """The TLS contexts of config's TLS_* files (checked at start; StartupError if one
    has changed for the worse since), or None when TLS is off."""
    if config.tls is None:
        return None
    try:
        return NodeTls(config.tls)
    except TlsFileError as error:
        raise StartupError(str(error)) from None


def _local_host(config: Config) -> str | None:
    """Connect to peers from our own address unless we listen on every interface."""
    return None if config.bind_host in ("0.0.0.0", "::") else config.bind_host


class MembershipSaver:
    """Persist our incarnation whenever a refutation raises it, so a restart goes higher,
    and the member table whenever it changes, so a restart knows the ring at once.

    A dead or left member is saved with the wall-clock second it became so, worked
    out once per status change (so the file does not change with clock jitter). A
    table of more than SAVE_EVERY_CHANGE_UP_TO members costs milliseconds to write, so
    a stream of changes to it (a flood of made-up members) is saved once a second;
    the gossip tick saves the last change, and `flush` saves it at shutdown.
    """

    def __init__(self, data_dir: Path, membership: Membership, member_file: MemberFile) -> None:
        self._data_dir = data_dir
        self._membership = membership
        self._member_file = member_file
        self._incarnation = membership.me.incarnation
        self._version = -1
        self._save_after = 0.0
        # node id -> (status, incarnation, its `since` in wall-clock seconds)
        self._since: dict[str, tuple[Status, int, int]] = {}

    def __call__(self) -> None:
        self._save(trio.current_time())

    def flush(self) -> None:
        self._save(trio.current_time(), force=True)

    def _save(self, now_mono: float, force: bool = False) -> None:
        membership = self._membership
        if membership.me.incarnation != self._incarnation:
            self._incarnation = membership.me.incarnation
            save_incarnation(self._data_dir, self._incarnation)
        if membership.version == self._version or (now_mono < self._save_after and not force):
            return
        self._version = membership.version
        members = membership.members()
        if len(members) > SAVE_EVERY_CHANGE_UP_TO:
            self._save_after = now_mono + 1.0
        now_wall = time.time()
        since = self._since
        for member in members:
            age = membership.status_age(member.node_id, now_mono)
            known = since.get(member.node_id)
            if member.status not in (Status.DEAD, Status.LEFT) or age is None:
                since.pop(member.node_id, None)
            elif known is None or known[:2] != (member.status, member.incarnation):
                since[member.node_id] = (member.status, member.incarnation, int(now_wall - age))
        for node_id in set(since) - {member.node_id for member in members}:
            del since[node_id]
        try:
            self._member_file.save(members, {n: at for n, (_, _, at) in since.items()})
        except OSError as error:
            log.warning("cannot save %s: %s", self._member_file.path, error)


async def _main(config: Config) -> None:
    stop = trio.Event()
    with (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
        unwrap_single_group(),
    ):
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    if stop.is_set():
                        log.warning("second %s: exiting now", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return
                    log.info("received %s", signal.Signals(signum).name)
                    stop.set()

            nursery.start_soon(watch_signals)
            tokens = None
            if config.client_tokens is not None:
                tokens = TokenHolder(config.client_tokens.tokens)
                _log_tokens(config.client_tokens)
            tls = _node_tls(config)
            if tokens is not None or tls is not None:
                nursery.start_soon(_reload_on_hangup, config, tokens, tls)
            await run_node(config, stop, tokens=tokens, tls=tls)
            nursery.cancel_scope.cancel()


def _log_tokens(tokens_file: TokensFile) -> None:
    tokens = tokens_file.tokens
    counts = ", ".join(f"{tokens.count(role)} {role.value}" for role in TokenRole)
    log.info("client tokens required: %s (%s)", counts, tokens_file.path)


async def _reload_on_hangup(
    config: Config, tokens: TokenHolder | None, tls: NodeTls | None
) -> None:
    """SIGHUP: read CLIENT_TOKENS_FILE and the TLS files again; a file that is now wrong
    keeps what was read before."""
    with trio.open_signal_receiver(signal.SIGHUP) as hangups:
        async for _ in hangups:
            if tokens is not None and config.client_tokens is not None:
                await _reload_tokens(config.client_tokens.path, tokens)
            if tls is not None:
                # On the trio thread: the contexts are in use by this thread's handshakes.
                try:
                    tls.reload()
                except TlsFileError as error:
                    log.error("SIGHUP: TLS certificates kept unchanged: %s", error)
                    continue
                log.info("SIGHUP: TLS certificate reloaded (%s)", tls.files.cert)


async def _reload_tokens(path: Path, holder: TokenHolder) -> None:
    """Read CLIENT_TOKENS_FILE again; a file that is now wrong keeps the old tokens."""
    try:
        tokens_file = await trio.to_thread.run_sync(TokensFile.read, path)
    except ValueError as error:
        log.error("SIGHUP: CLIENT_TOKENS_FILE=%s kept unchanged: %s", path, error)
        return
    holder.tokens = tokens_file.tokens
    _log_tokens(tokens_file)


def main(env: dict[str, str] | None = None) -> int:
    try:
        config = Config.from_env(os.environ if env is None else env)
        check_protected_mode(config)
    except ConfigError as error:
        print(f"a3redis: invalid configuration: {error}", file=sys.stderr)
        return 2
    logs.configure(config.node_id, config.debug_log, config.log_format)
    if config.cluster_secrets is None and not is_loopback(config.bind_host):
        log.warning(
            "INSECURE=1: listening on %s without a cluster secret; anyone who reaches these "
            "ports can join the cluster, replicate and remove members",
            config.bind_host,
        )
    _raise_open_file_limit(config.max_connections + config.resp_max_connections)
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        trio.run(_main, config)
    except StartupError as error:
        print(f"a3redis: cannot start {config.node_id}: {error}", file=sys.stderr)
        return 1
    return 0


# The cyclic collector's thresholds. Python's default (700 allocations) runs a
# young-generation pass every few requests, each walking what the requests
# left alive; the node's garbage is freed by reference counting almost all, so
# passes are made rarer (benchmarks/README.md, "The collector's thresholds").
GC_THRESHOLDS = (50_000, 20, 10)

# Descriptors a node needs besides its client connections: the log and
# snapshot files, peer links, gossip and HTTP connections, hint files.
_DESCRIPTORS_BESIDES_CLIENTS = 256


def _raise_open_file_limit(max_connections: int) -> None:
    """Let the process hold MAX_CONNECTIONS connections and its own files.

    The soft limit is often 1,024 while the hard one is far higher; running
    out makes accepting fail (a3redis.net.grpc_server then waits and retries).
    """
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + _DESCRIPTORS_BESIDES_CLIENTS
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open file limit from %d to %d: %s", soft, wanted, error)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open file limit %d is below MAX_CONNECTIONS=%d plus %d for the node's own files",
            soft,
            max_connections,
            _DESCRIPTORS_BESIDES_CLIENTS,
        )


if __name__ == "__main__":
    sys.exit(main())
