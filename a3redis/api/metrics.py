"""Prometheus metrics and the JSON summary of one node.

Rules: request counts and latencies are recorded as requests finish (the
only hot-path cost: two dict updates, turned into a counter and a histogram
when Prometheus scrapes); everything else
(storage, replication, hints, repair, gossip, members) is read from the
owning components' own counters when Prometheus scrapes, so those
components never import this module. Each node has its own registry, so
several in-process nodes in tests do not share numbers.
"""

from __future__ import annotations

import os
import random
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from a3redis.core.membership import Membership, Role, summary
from a3redis.core.redis_info import ERROR_CODE, command_stat_fields, error_stat_fields
from a3redis.core.resp_values import ErrorReply, Reply
from a3redis.core.window import RollingStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# The "le" labels, as prometheus_client writes them ("1.0", "+Inf").
_BUCKET_LABELS = (*(repr(float(bound)) for bound in LATENCY_BUCKETS), "+Inf")
# Redis command names get their own label up to this many; clients choose the
# names, so the rest share one ("other"), and unknown commands share "unknown".
MAX_COMMAND_LABELS = 256
# Error codes counted apart for INFO errorstats (Redis keeps 128); later ones are not.
MAX_ERROR_CODES = 128
_UNKNOWN_COMMAND = "ERR unknown command"
_COMMAND_NAME = re.compile(rb"[A-Z0-9][A-Z0-9._|-]{0,31}")
# The operations of Redis commands in `NodeMetrics.rolling` ("RESP GET"...).
_RESP_OPERATION = "RESP "


class _Calls:
    """Counts by a tuple of labels (with when each was first seen) and latencies by one
    label: a count per bucket (not cumulative; the last is +Inf) and the sum."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}
        self.created: dict[tuple[str, ...], float] = {}
        self.latency: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, key: tuple[str, ...], label: str, bucket: int, seconds: float) -> None:
        """Count one call under `key`, and its latency (in `bucket`) under `label`."""
        count = self.counts.get(key)
        if count is None:
            self.counts[key] = 1
            self.created[key] = time.time()
        else:
            self.counts[key] = count + 1
        latency = self.latency.get(label)
        if latency is None:
            latency = self.latency[label] = ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
        latency[0][bucket] += 1
        latency[1][0] += seconds

    def counter(self, name: str, documentation: str, labels: list[str]) -> Metric:
        family = CounterMetricFamily(name, documentation, labels=labels)
        for key, count in list(self.counts.items()):
            family.add_metric(list(key), count, created=self.created[key])
        return family

    def histogram(self, name: str, documentation: str, label: str) -> Metric:
        family = HistogramMetricFamily(name, documentation, labels=[label])
        for value, (counts, total) in list(self.latency.items()):
            buckets = [
                (bound, float(count))
                for bound, count in zip(_BUCKET_LABELS, accumulate(counts), strict=True)
            ]
            family.add_metric([value], buckets, total[0])
        return family


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Request counts and latencies are kept in plain dicts and handed to
        # Prometheus only when it scrapes: prometheus_client's labels() lookup,
        # locks and bucket search, per request, would be a visible share of a
        # request's whole CPU budget (benchmarks/README.md has the figure).
        # gRPC: (service, rpc, code) -> count, latency per rpc.
        self._calls = _Calls()
        self.registry.register(_Source(self._requests))
        # Redis-protocol commands, kept the same way: (command, result) -> count,
        # latency per command.
        self._commands_seen = _Calls()
        # Upper-cased name -> (its label, its operation on the status page).
        self._command_labels: dict[bytes, tuple[str, str]] = {}
        # Error replies by code (their first word), for INFO errorstats.
        self._error_codes: dict[str, int] = {}
        self.registry.register(_Source(self._commands))
        # process_resident_memory_bytes, process_open_fds, CPU seconds...: an
        # operator sees memory or descriptors grow before the kernel does.
        ProcessCollector(registry=self.registry)
        self.rolling = RollingStats(window_s=60, rng=random.Random())

    def observe(self, service: str, rpc: str, code: str, seconds: float) -> None:
        # bisect_left: the first bucket whose upper bound is >= seconds (Prometheus' "le").
        self._calls.observe(
            (service, rpc, code), rpc, bisect_left(LATENCY_BUCKETS, seconds), seconds
        )
        if service == "KeyValue":
            self.rolling.record(rpc, seconds, time.monotonic())

    def _requests(self) -> Iterator[Metric]:
        yield self._calls.counter(
            "a3redis_requests",
            "gRPC requests served, by service, method and status code",
            ["service", "rpc", "code"],
        )
        yield self._calls.histogram(
            "a3redis_request_seconds", "gRPC request latency, by method", "rpc"
        )

    def observe_commands(
        self, requests: Sequence[list[bytes]], replies: Sequence[Reply], seconds: float
    ) -> None:
        """Count one run of Redis commands; each took the run's `seconds` (its replies
        leave together)."""
        bucket = bisect_left(LATENCY_BUCKETS, seconds)
        seen = self._commands_seen
        now = time.monotonic()
        # Replies Redis leaves out (QUIT, CLIENT REPLY OFF|SKIP) leave the requests'
        # results unknown: they are counted as "unanswered".
        answered = len(replies) == len(requests)
        for index, request in enumerate(requests):
            reply = replies[index] if answered else None
            command, operation = self._command_label(request, reply)
            if not answered:
                result = "unanswered"
            elif isinstance(reply, ErrorReply):
                result = "error"
                self._count_error(reply.text)
            else:
                result = "ok"
            seen.observe((command, result), command, bucket, seconds)
            self.rolling.record(operation, seconds, now)

    def _count_error(self, text: str) -> None:
        code = text.split(" ", 1)[0]
        codes = self._error_codes
        if code in codes:
            codes[code] += 1
        elif len(codes) < MAX_ERROR_CODES and ERROR_CODE.fullmatch(code):
            codes[code] = 1

    def command_facts(self) -> dict[str, dict[str, str | int]]:
        """What INFO shows of the Redis commands served: the commandstats and
        errorstats sections, and the stats section's fields made of them."""
        calls: dict[str, tuple[int, int, float]] = {}
        error_replies = 0
        for (command, result), count in list(self._commands_seen.counts.items()):
            if result == "error":
                error_replies += count
            if command in ("unknown", "other"):
                continue  # Redis counts no calls of a command it does not have
            made, failed, _ = calls.get(command.lower(), (0, 0, 0.0))
            calls[command.lower()] = (
                made + count,
                failed + (count if result == "error" else 0),
                self._commands_seen.latency[command][1][0],
            )
        last_second = int(time.monotonic()) - 1
        return {
            "stats": {
                "instantaneous_ops_per_sec": self.rolling.counted_in_second(
                    last_second, _RESP_OPERATION
                ),
                "total_error_replies": error_replies,
            },
            "commandstats": command_stat_fields(calls),
            "errorstats": error_stat_fields(self._error_codes),
        }

    def _command_label(self, request: list[bytes], reply: Reply) -> tuple[str, str]:
        name = request[0].upper() if request else b""
        known = self._command_labels.get(name)
        if known is not None:
            return known
        if isinstance(reply, ErrorReply) and reply.text.startswith(_UNKNOWN_COMMAND):
            return ("unknown", "RESP unknown")
        if len(self._command_labels) >= MAX_COMMAND_LABELS or not _COMMAND_NAME.fullmatch(name):
            return ("other", "RESP other")
        label = name.decode("ascii")
        known = self._command_labels[name] = (label, f"RESP {label}")
        return known

    def _commands(self) -> Iterator[Metric]:
        yield self._commands_seen.counter(
            "a3redis_resp_commands",
            "Redis-protocol commands served, by command and result (ok, error, or "
            "unanswered: after QUIT or under CLIENT REPLY OFF|SKIP)",
            ["command", "result"],
        )
        yield self._commands_seen.histogram(
            "a3redis_resp_command_seconds",
            "Redis-protocol command latency, by command (from the start of the run of "
            "pipelined commands it came in to its replies)",
            "command",
        )

    def add_source(self, source: Callable[[], Iterator[Metric]]) -> None:
        self.registry.register(_Source(source))

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def summary(self) -> dict[str, Any]:
        return self.rolling.summary(time.monotonic())


def process_usage() -> dict[str, int | None]:
    """This process's resident memory and open file descriptors (None where /proc is absent)."""
    rss: int | None = None
    open_fds: int | None = None
    try:
        with open("/proc/self/statm", "rb") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        open_fds = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError):
        pass
    return {"rss_bytes": rss, "open_fds": open_fds}


class _Source(Collector):
    def __init__(self, produce: Callable[[], Iterator[Metric]]) -> None:
        self.produce = produce

    def collect(self) -> Iterator[Metric]:
        return self.produce()


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def labelled_counter(
    name: str, documentation: str, labels: list[str], counts: dict[tuple[str, ...], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, count in sorted(counts.items()):
        family.add_metric(list(values), count)
    return family


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def member_gauges(membership: Membership) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "a3redis_members", "Members in this node's table, by status", labels=["status"]
    )
    for status, count in summary(membership.members()).items():
        family.add_metric([status], count)
    incompatible = len(membership.incompatible)
    family.add_metric(["incompatible"], incompatible)
    yield family


def connection_source(connections: Any) -> Callable[[], Iterator[Metric]]:
    """The gRPC listener's connection counters (a3redis.net.grpc_server.ConnectionStats)."""

    def produce() -> Iterator[Metric]:
        yield gauge("a3redis_grpc_connections", "gRPC connections open now", connections.open)
        yield gauge(
            "a3redis_grpc_connection_limit", "MAX_CONNECTIONS on the gRPC port", connections.limit
        )
        refused = CounterMetricFamily(
            "a3redis_grpc_connections_refused",
            "gRPC connections closed unserved, by reason",
            labels=["reason"],
        )
        refused.add_metric(["over_limit"], connections.refused_over_limit)
        refused.add_metric(["silent"], connections.dropped_silent)
        refused.add_metric(["accept_error"], connections.accept_errors)
        refused.add_metric(["tls_handshake"], connections.tls_handshakes_failed)
        yield refused
        yield gauge(
            "a3redis_grpc_inbound_buffered_bytes",
            "Bytes of incomplete request messages held over all gRPC connections",
            connections.budget.held,
        )
        yield counter(
            "a3redis_grpc_streams_over_budget",
            "gRPC streams reset because incomplete requests held more than the inbound budget",
            connections.budget.streams_reset,
        )
        yield counter(
            "a3redis_grpc_frame_connections",
            "Connections on the gRPC port that spoke replica frames (peers' Read and Apply)",
            connections.frame_connections,
        )
        yield counter(
            "a3redis_grpc_frame_connections_over_budget",
            "Replica-frames connections closed because incomplete frames held more than the "
            "inbound budget",
            connections.budget.frame_connections_closed,
        )
        yield counter(
            "a3redis_grpc_pings",
            "HTTP/2 PINGs received from gRPC clients",
            connections.keepalive.pings,
        )
        yield counter(
            "a3redis_grpc_too_many_pings",
            "gRPC connections sent GOAWAY ENHANCE_YOUR_CALM for pinging too often",
            connections.keepalive.too_many_pings,
        )

    return produce


def resp_source(stats: Any) -> Callable[[], Iterator[Metric]]:
    """The Redis-protocol listener's connections (a3redis.api.resp_server.RespStats)."""

    def produce() -> Iterator[Metric]:
        yield gauge("a3redis_resp_connections", "Redis-protocol connections open now", stats.open)
        yield gauge(
            "a3redis_resp_connection_limit",
            "RESP_MAX_CONNECTIONS on the Redis-protocol port",
            stats.limit,
        )
        yield counter(
            "a3redis_resp_connections_accepted",
            "Redis-protocol connections accepted and served",
            stats.accepted,
        )
        refused = CounterMetricFamily(
            "a3redis_resp_connections_refused",
            "Redis-protocol connections closed unserved, by reason",
            labels=["reason"],
        )
        refused.add_metric(["over_limit"], stats.refused_over_limit)
        refused.add_metric(["accept_error"], stats.accept_errors)
        yield refused
        closed = CounterMetricFamily(
            "a3redis_resp_connections_closed",
            "Redis-protocol connections the node closed, by reason (idle: RESP_IDLE_TIMEOUT; "
            "reply_buffer: RESP_MAX_REPLY_BUFFER; query_buffer: a request too large; "
            "protocol_error: bytes that are not RESP; tls: a TLS handshake failed or stalled, "
            "or a TLS session broke)",
            labels=["reason"],
        )
        closed.add_metric(["idle"], stats.closed_idle)
        closed.add_metric(["reply_buffer"], stats.closed_reply_buffer)
        closed.add_metric(["query_buffer"], stats.closed_query_buffer)
        closed.add_metric(["protocol_error"], stats.protocol_errors)
        closed.add_metric(["tls"], stats.tls_failures)
        yield closed
        yield gauge(
            "a3redis_resp_reply_buffered_bytes",
            "Bytes of replies waiting for Redis-protocol clients to read them",
            stats.reply_bytes_queued,
        )

    return produce


def peer_auth_source(guard: Any) -> Callable[[], Iterator[Metric]]:
    """Messages the cluster secret refused (a3redis.cluster.peer_auth.PeerGuard)."""

    def collect() -> Iterator[Metric]:
        yield labelled_counter(
            "a3redis_peer_auth_refused",
            "Gossip messages, replica calls and operator requests refused for want of a "
            "valid cluster-secret signature (nothing changed), by channel and reason",
            ["channel", "reason"],
            dict(guard.refused.counts),
        )

    return collect


def rebalance_source(rebalancer: Any) -> Callable[[], Iterator[Metric]]:
    """This node's join or decommission: role, partitions copied, keys streamed."""

    def produce() -> Iterator[Metric]:
        stats = rebalancer.stats
        roles = GaugeMetricFamily(
            "a3redis_ring_role",
            "1 for this node's role in the ring (normal, joining, leaving, ...), else 0",
            labels=["role"],
        )
        for role in Role:
            roles.add_metric([role.value], int(rebalancer.role is role))
        yield roles
        yield gauge(
            "a3redis_transition_partitions",
            "Partitions this node copies in its join or decommission in progress",
            stats.partitions_total,
        )
        yield gauge(
            "a3redis_transition_partitions_done",
            "Of those, the partitions copied so far",
            stats.partitions_done,
        )
        yield counter(
            "a3redis_stream_keys", "Records copied by joins and decommissions", stats.keys_streamed
        )
        pace = rebalancer.pacer.status_json()
        yield gauge(
            "a3redis_stream_pace_keys_per_second",
            "The pace copying may take now (0: no limit): lower while the node is busy",
            pace["max_keys_per_second"] or 0,
        )
        yield counter(
            "a3redis_stream_bytes",
            "Key and value bytes copied by joins and decommissions",
            stats.bytes_streamed,
        )
        yield counter(
            "a3redis_stream_failures",
            "Stream calls that failed (retried at the next tick)",
            stats.stream_failures,
        )

    return produce


def node_source(
    store: Any, keyspace: Any, hints: Any, repair: Any, gossip: Any
) -> Callable[[], Iterator[Metric]]:
    """Everything but request counts, read from the components at scrape time."""

    def produce() -> Iterator[Metric]:
        stats = store.stats()
        yield gauge("a3redis_keys", "Live keys stored on this node", stats.live_keys)
        yield gauge("a3redis_records", "Records on this node, tombstones included", stats.keys)
        yield gauge(
            "a3redis_keys_with_ttl",
            "Values stored on this node that carry an expiry (expired ones until purged)",
            store.expiring_keys,
        )
        yield gauge("a3redis_log_bytes", "Bytes in the current log file", stats.log_bytes)
        yield gauge("a3redis_live_bytes", "Encoded bytes of the live records", stats.live_bytes)
        yield counter("a3redis_commits", "Group commits written to the log", stats.commits)
        yield counter("a3redis_fsyncs", "fdatasync calls on the log", stats.fsyncs)
        yield gauge(
            "a3redis_fsync_in_child_process",
            "1 while FSYNC=always commits are synced by the node's fsync child process; 0 "
            "while a thread syncs them (before writes first overlap a sync, or after a loss)",
            int(stats.syncs_in_process),
        )
        yield counter(
            "a3redis_fsync_process_lost",
            "fsync child processes lost (commits went back to a thread)",
            stats.fsync_process_lost,
        )
        yield counter("a3redis_compactions", "Snapshots written by compaction", stats.compactions)
        replication = keyspace.stats
        yield counter(
            "a3redis_replica_write_failures",
            "Replica writes that failed (they become hints)",
            replication.replica_write_failures,
        )
        yield counter(
            "a3redis_replica_read_failures",
            "Replica reads that failed",
            replication.replica_read_failures,
        )
        yield counter(
            "a3redis_read_repairs", "Stale replica copies fixed by reads", replication.read_repairs
        )
        yield counter(
            "a3redis_expired_reads",
            "Keys whose newest record had expired, answered as missing",
            replication.expired_reads,
        )
        yield counter(
            "a3redis_write_plans",
            "Plans made for Redis-protocol writes (the writes of every client that starts one "
            "in the same turn of the event loop share one)",
            replication.write_plans,
        )
        yield counter(
            "a3redis_read_plans",
            "Plans made for Redis-protocol reads that ask peers (the reads of every client "
            "that starts one in the same turn of the event loop, at one level, share one)",
            replication.read_plans,
        )
        yield gauge(
            "a3redis_peer_links", "Links to peer nodes held open", len(keyspace.cluster.links())
        )
        yield counter(
            "a3redis_peer_keepalive_failures",
            "Keepalive pings to idle peer connections that failed (the channel was dropped)",
            sum(link.keepalive_failures for link in keyspace.cluster.links()),
        )
        yield counter("a3redis_hints_stored", "Hints stored for down replicas", hints.stored)
        yield counter("a3redis_hints_delivered", "Hints handed to their replica", hints.delivered)
        yield counter("a3redis_hints_expired", "Hints dropped after HINT_WINDOW", hints.expired)
        yield gauge("a3redis_hints_pending", "Hints waiting", sum(hints.pending().values()))
        ae = repair.stats
        yield counter("a3redis_repair_rounds", "Anti-entropy rounds", ae.rounds)
        yield counter("a3redis_repair_peers_compared", "Peer comparisons", ae.peers_compared)
        yield counter("a3redis_repair_tree_nodes", "Merkle tree nodes compared", ae.tree_nodes)
        yield counter("a3redis_repair_leaves_differed", "Leaves that differed", ae.leaves_differed)
        yield counter("a3redis_repair_keys_pulled", "Keys fetched by repair", ae.keys_pulled)
        yield counter("a3redis_repair_keys_pushed", "Keys sent by repair", ae.keys_pushed)
        yield counter("a3redis_repair_bytes_sent", "Repair bytes sent", ae.bytes_sent)
        yield counter("a3redis_repair_bytes_received", "Repair bytes received", ae.bytes_received)
        yield gauge(
            "a3redis_repair_last_round_seconds", "Duration of the last round", ae.last_round_seconds
        )
        yield counter(
            "a3redis_tombstones_purged", "Tombstones purged after the grace period", ae.purged
        )
        yield counter(
            "a3redis_expired_purged",
            "Expired records purged after the grace period",
            ae.expired_purged,
        )
        handed = repair.handoff.stats
        yield counter(
            "a3redis_handoff_keys",
            "Keys of partitions not ours handed to their owners and dropped here",
            handed.keys_handed_off,
        )
        yield gauge(
            "a3redis_handoff_partitions_waiting",
            "Partitions not ours still held here (an owner was down at the last pass)",
            handed.partitions_waiting,
        )
        g = gossip.stats
        yield counter("a3redis_gossip_probes", "Gossip exchanges started", g["probes"])
        yield counter(
            "a3redis_gossip_probe_failures", "Gossip exchanges that failed", g["probe_failures"]
        )
        yield counter(
            "a3redis_gossip_exchanges_served", "Gossip exchanges answered", g["exchanges_served"]
        )
        yield counter("a3redis_gossip_rejected", "Gossip messages refused", g["rejected"])
        # One family for every refusal: the data path's (records, entries, answers)
        # and gossip's (messages); their endpoints differ, so no series is shared.
        refused: dict[tuple[str, ...], int] = dict(gossip.rejected.counts)
        for labels, count in list(keyspace.rejections.counts.items()):
            refused[labels] = refused.get(labels, 0) + count
        yield labelled_counter(
            "a3redis_rejected",
            "Records, entries, answers and gossip messages refused (nothing changed), "
            "by endpoint and reason",
            ["endpoint", "reason"],
            refused,
        )
        yield labelled_counter(
            "a3redis_task_errors",
            "Failures a background task survived (logged, then carried on), by task and reason",
            ["task", "reason"],
            hints.errors.counts,
        )
        membership = gossip.membership
        yield counter(
            "a3redis_members_refused",
            "New members not admitted because the member table was full (MAX_MEMBERS)",
            membership.members_refused,
        )
        yield counter(
            "a3redis_member_claims_at_cap",
            "Claims about this node at the highest incarnation (2^63-1; only a forgery gets there)",
            membership.claims_at_cap,
        )
        yield gauge(
            "a3redis_members_forgotten",
            "Members forgotten after DEAD_MEMBER_REAP and still remembered as such",
            len(membership.forgotten()),
        )
        yield from member_gauges(membership)

    return produce
