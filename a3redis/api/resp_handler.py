"""The Redis commands of a node: the core's plans, run on the node's keyspace.

Rules: every decision is the core's. `a3redis.core.redis_pipeline.plan`
parses one read's requests and answers the session commands; this shell
runs the steps it returns, in order, on the `Keyspace` (the same
coordinator, validation and error type as the gRPC front end) and hands the
results back for the replies. Server steps are answered from the node:
- KEYS and SCAN page through the keyspace in key order at the session's
  read level (`Keyspace.scan_page`: every live member's copy merged, as a
  gRPC Scan), starting at the pattern's literal prefix; SCAN's numeric
  cursors live in this node's bounded table (core.scan_cursors). KEYS
  answers at most KEYS_MAX_BYTES of keys, else an error pointing at SCAN.
- DBSIZE is an estimate for the whole cluster: this node's live keys times
  the ring members over the replication factor (exact when every node holds
  its share).
- FLUSHALL / FLUSHDB (only with ALLOW_FLUSH=1, the planner checks) delete
  every key through the coordinator, page by page, as tombstones.
- CLUSTER is emulated from the live ring members that announce a RESP
  address (core.redis_cluster); INFO and CONFIG GET from the node's facts.
- SAVE and BGSAVE sync the store's log (`Store.sync_committed`); SLOWLOG and
  MONITOR read what `observe` saw of each run (core.redis_slowlog,
  core.redis_monitor); CLIENT KILL and MONITOR act on other connections
  through the listener that serves this handler (`bind`).
"""

from __future__ import annotations

import logging
import os
import platform
import random
import resource
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from functools import partial

from a3redis import __version__
from a3redis.api.metrics import process_usage
from a3redis.api.resp_server import Answer, ListenerControl, Remainder
from a3redis.cluster.keyspace import Keyspace
from a3redis.config import SETTINGS, Config, Integer
from a3redis.core.client_tokens import TokenHolder
from a3redis.core.errors import RequestError
from a3redis.core.hlc import Version
from a3redis.core.membership import Status
from a3redis.core.record import Record
from a3redis.core.redis_cluster import ClusterMember, ClusterView
from a3redis.core.redis_commands import (
    ClientKill,
    ClientList,
    Cluster,
    ConfigGet,
    ConfigSet,
    DbSize,
    Flush,
    Info,
    Keys,
    LastSave,
    Monitor,
    RandomKey,
    Save,
    Scan,
    ServerCommand,
    SlowLogGet,
    SlowLogLen,
    SlowLogReset,
)
from a3redis.core.redis_glob import Glob, PatternTooLongError, literal_prefix
from a3redis.core.redis_info import (
    RuntimeSetting,
    config_get,
    config_set,
    keyspace_fields,
    memory_fields,
    render_info,
)
from a3redis.core.redis_monitor import monitor_line, shown_to_monitors
from a3redis.core.redis_pipeline import (
    Plan,
    ReadStep,
    RewriteStep,
    ServerStep,
    Step,
    StepResult,
    WriteStep,
    plan,
)
from a3redis.core.redis_session import (
    ServerSettings,
    Session,
    client_kill_reply,
    client_list_reply,
    clients_to_kill,
)
from a3redis.core.redis_slowlog import SlowLog
from a3redis.core.resp_values import OK, ErrorReply, Reply, error
from a3redis.core.resp_values import Status as SimpleString
from a3redis.core.scan_cursors import INVALID_CURSOR, ScanCursors, scan_reply
from a3redis.net.address import Address
from a3redis.storage.policy import FsyncPolicy
from a3redis.storage.store import Store

log = logging.getLogger(__name__)


def _bounds_of(env: str) -> RuntimeSetting:
    """The range the node's setting `env` accepts, for CONFIG SET."""
    (parse,) = (setting.parse for setting in SETTINGS if setting.env == env)
    assert isinstance(parse, Integer)
    return RuntimeSetting(parse.low, parse.high)


# What CONFIG SET may change while a node runs (Redis's names), within the bounds of
# the node's settings of the same meaning.
RUNTIME_SETTINGS = {
    "slowlog-log-slower-than": _bounds_of("SLOWLOG_LOG_SLOWER_THAN"),
    "slowlog-max-len": _bounds_of("SLOWLOG_MAX_LEN"),
}

# BGSAVE's reply: the sync is done when it is sent, but clients wait for Redis's words.
BACKGROUND_SAVING_STARTED = SimpleString("Background saving started")

# What counts a run's commands for /metrics and INFO (NodeMetrics.observe_commands).
CommandCounter = Callable[[Sequence[list[bytes]], Sequence[Reply], float], None]

# SCAN cursors this node remembers (the least recently used is forgotten first).
SCAN_CURSORS = 100_000
# KEYS answers at most this many bytes of keys; SCAN pages through any keyspace.
KEYS_MAX_BYTES = 64 * 1024 * 1024
# Keys asked of the keyspace per page by KEYS, FLUSHALL and SCAN (at most).
PAGE = 1000
# Keys asked per page by RANDOMKEY, which needs one live key.
RANDOM_KEY_PAGE = 16


class RedisCommands:
    """The handler the RESP listener calls: one `Session` per connection."""

    def __init__(
        self,
        keyspace: Keyspace,
        store: Store,
        config: Config,
        resp_address: Address,
        connections: Callable[[], dict[str, int]],
        *,
        tokens: TokenHolder | None = None,
        expired_purged: Callable[[], int] = lambda: 0,
        command_facts: Callable[[], Mapping[str, Mapping[str, str | int]]] = dict,
        count_commands: CommandCounter | None = None,
    ) -> None:
        self.keyspace = keyspace
        self.store = store
        self.config = config
        self.resp_address = resp_address
        self.settings = ServerSettings(
            a3redis_version=__version__,
            read_default=config.read_consistency,
            write_default=config.write_consistency,
            limits=config.limits,
            allow_flush=config.allow_flush,
            tokens=tokens,
        )
        self.cursors = ScanCursors(SCAN_CURSORS, random.Random())
        self.sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self.started = time.time()
        self.run_id = random.Random().randbytes(20).hex()
        self.commands_processed = 0
        self._connections = connections
        self._expired_purged = expired_purged
        # INFO's commandstats and errorstats, and the stats fields made of them.
        self._command_facts = command_facts
        self._count_commands = count_commands
        self.lookups = Lookups()
        self._listener: ListenerControl | None = None  # the RESP listener, once it serves
        self._monitors: dict[int, Session] = {}  # connections in MONITOR mode, by client id
        self.slow_log = SlowLog(config.slowlog_log_slower_than, config.slowlog_max_len)
        self.last_save = self.started

    def bind(self, listener: ListenerControl) -> None:
        self._listener = listener

    def observe(
        self,
        session: Session,
        requests: Sequence[list[bytes]],
        replies: Sequence[Reply],
        seconds: float,
    ) -> None:
        """After each run (its replies queued): count its commands (metrics, INFO),
        log the slow ones (SLOWLOG) and show them to the monitoring connections."""
        if self._count_commands is not None:
            self._count_commands(requests, replies, seconds)
        if seconds >= self.slow_log.slower_than_s:  # note's own test: a fast run, no call
            self.slow_log.note(requests, seconds, time.time(), session.peer, session.name)
        if self._monitors:
            self._feed_monitors(session, requests)

    def _feed_monitors(self, session: Session, requests: Sequence[list[bytes]]) -> None:
        now = time.time()
        lines = b"".join(
            monitor_line(request, now, session.peer)
            for request in requests
            if shown_to_monitors(request)
        )
        if not lines:
            return
        listener = self._listener
        for client_id, monitor in list(self._monitors.items()):
            if not monitor.monitoring or listener is None or not listener.send_to(client_id, lines):
                del self._monitors[client_id]  # RESET, or the connection is gone

    def new_session(self, client_id: int, peer: str) -> Session:
        session = Session(
            self.settings, client_id, peer, self.keyspace.wall_ms(), str(self.resp_address)
        )
        self.sessions.add(session)
        return session

    def start(
        self, session: Session, requests: list[list[bytes]], answer: Answer
    ) -> list[Reply] | Remainder | None:
        """Plan a run and carry it out without a task where its steps allow.

        A run of key reads and writes only (GET, SET, MGET, DEL...) goes step
        by step through the keyspace's callbacks (`_KeySteps`): its replies
        now, when nothing had to wait, else through `answer`. A run with a
        step the node answers (SCAN, INFO, CLUSTER...) is awaited in a task.
        """
        pipeline = plan(session, requests, self.keyspace.wall_ms())
        self.commands_processed += len(pipeline.names)
        if pipeline.serves:
            return partial(self._finish, session, pipeline, [], 0)
        return _KeySteps(self.keyspace, pipeline, answer, self.lookups).begin()

    async def _finish(
        self, session: Session, pipeline: Plan, results: list[StepResult], first: int
    ) -> list[Reply]:
        """Run the steps from `first` on (`results` holds those before) and reply."""
        keyspace = self.keyspace
        for index in range(first, len(pipeline.steps)):
            step = pipeline.steps[index]
            try:
                if isinstance(step, ReadStep):
                    results.append(
                        await keyspace.batch_get(step.keys, step.consistency, response_limit=None)
                    )
                elif isinstance(step, RewriteStep):
                    rewrites = pipeline.rewrites(index, results, keyspace.wall_ms())
                    if isinstance(rewrites, RequestError) or not rewrites.writes:
                        results.append(rewrites if isinstance(rewrites, RequestError) else [])
                    else:
                        results.append(await self._write(rewrites))
                elif isinstance(step, WriteStep):
                    results.append(await self._write(step))
                else:
                    results.append(await self._serve(session, step))
            except RequestError as failure:
                results.append(failure)
        self.lookups.count(pipeline.steps, results)
        return pipeline.replies(results, keyspace.wall_ms())

    async def _write(self, step: WriteStep) -> list[Version]:
        return await self.keyspace.batch_write(
            step.writes, step.consistency, expiries=step.expiries
        )

    # ----- server steps ---------------------------------------------------------------------

    async def _serve(self, session: Session, step: ServerStep) -> Reply:
        command: ServerCommand = step.command
        if isinstance(command, Scan):
            return await self._scan(command, step)
        if isinstance(command, Keys):
            return await self._keys(command, step)
        if isinstance(command, RandomKey):
            return await self._random_key(step)
        if isinstance(command, DbSize):
            return self._db_size()
        if isinstance(command, Flush):
            return await self._flush(step)
        if isinstance(command, Info):
            return render_info(self._facts(), command.sections)
        if isinstance(command, ConfigGet):
            return config_get(self._config_settings(), command.parameters)
        if isinstance(command, ConfigSet):
            return self._config_set(command)
        if isinstance(command, LastSave):
            # With FSYNC=always every acknowledged write is on disk: the last save is now.
            always = self.config.fsync is FsyncPolicy.ALWAYS
            return int(time.time()) if always else int(self.last_save)
        if isinstance(command, Save):
            await self.store.sync_committed()
            self.last_save = time.time()
            return BACKGROUND_SAVING_STARTED if command.background else OK
        if isinstance(command, SlowLogGet):
            return self.slow_log.get(command.count)
        if isinstance(command, SlowLogLen):
            return len(self.slow_log)
        if isinstance(command, SlowLogReset):
            self.slow_log.reset()
            return OK
        if isinstance(command, Cluster):
            return self._cluster_view().command([command.subcommand.encode(), *command.args])
        if isinstance(command, Monitor):
            session.monitoring = True
            self._monitors[session.client_id] = session
            return OK
        if isinstance(command, ClientKill):
            return self._client_kill(command, session)
        if isinstance(command, ClientList):
            return client_list_reply(command, list(self.sessions), self.keyspace.wall_ms())
        raise AssertionError(f"no server step for {command!r}")

    async def _scan(self, command: Scan, step: ServerStep) -> Reply:
        start = self.cursors.start_of(command.cursor)
        if start is None:
            return INVALID_CURSOR
        matcher = self._matcher(command.match)
        if isinstance(matcher, ErrorReply):
            return matcher
        glob, prefix = matcher
        # COUNT is a hint, as in Redis: a page never asks for more than PAGE keys.
        count = min(max(1, command.count), PAGE)
        page, following = await self.keyspace.scan_page(
            max(start, prefix), b"", prefix, count, step.read_consistency
        )
        keys: list[bytes] = []
        # Only strings are stored: SCAN ... TYPE of any other type finds nothing.
        if command.type is None or command.type.lower() == b"string":
            keys = [record.key for record in page if glob is None or glob.match_key(record.key)]
        return scan_reply(self.cursors.cursor_for(following), keys)

    @staticmethod
    def _matcher(pattern: bytes | None) -> tuple[Glob | None, bytes] | ErrorReply:
        """The compiled pattern (None: every key) and its literal prefix, or the error."""
        if pattern is None:
            return None, b""
        try:
            glob = Glob(pattern)
        except PatternTooLongError as failure:
            return error(str(failure))
        return (None if glob.matches_every_key else glob), literal_prefix(pattern)

    async def _keys(self, command: Keys, step: ServerStep) -> Reply:
        matcher = self._matcher(command.pattern)
        if isinstance(matcher, ErrorReply):
            return matcher
        glob, prefix = matcher
        keys: list[Reply] = []
        size = 0
        start: bytes | None = prefix
        while start is not None:
            page, start = await self.keyspace.scan_page(
                start, b"", prefix, PAGE, step.read_consistency
            )
            for record in page:
                if glob is None or glob.match_key(record.key):
                    keys.append(record.key)
                    size += len(record.key)
            if size > KEYS_MAX_BYTES:
                return error(
                    f"KEYS would answer more than {KEYS_MAX_BYTES} bytes of keys; "
                    "use SCAN to page through them"
                )
        return keys

    async def _random_key(self, step: ServerStep) -> Reply:
        """The first live key from a random point in key order, wrapping around once.

        A page may hold only tombstones (deleted keys are scanned too), so the
        walk goes on page by page until it finds a live key or has seen them all.
        """
        split = random.randbytes(4)
        for start, end in ((split, b""), (b"", split)):
            following: bytes | None = start
            while following is not None:
                page, following = await self.keyspace.scan_page(
                    following, end, b"", RANDOM_KEY_PAGE, step.read_consistency
                )
                if page:
                    return page[0].key
        return None

    def _client_kill(self, command: ClientKill, me: Session) -> Reply:
        killed = 0
        for target in clients_to_kill(command, list(self.sessions), me):
            if target is me:
                me.closing = True  # once this reply is sent, as Redis closes after reply
                killed += 1
            elif self._listener is not None and self._listener.close_client(target.client_id):
                killed += 1
        return client_kill_reply(command, killed)

    def _db_size(self) -> int:
        cluster = self.keyspace.cluster
        members = max(1, len(cluster.ring.members))
        copies = max(1, min(cluster.replication_factor, members))
        return round(self.store.stats().live_keys * members / copies)

    async def _flush(self, step: ServerStep) -> Reply:
        start: bytes | None = b""
        while start is not None:
            page, start = await self.keyspace.scan_page(
                start, b"", b"", PAGE, step.read_consistency
            )
            if page:
                await self.keyspace.batch_write(
                    [(record.key, None) for record in page], step.write_consistency
                )
        return OK

    # ----- what the node tells ----------------------------------------------------------------

    def _cluster_view(self) -> ClusterView:
        membership = self.keyspace.cluster.membership
        ring = set(self.keyspace.cluster.ring.members)
        members = []
        for member in membership.members():
            address = self.resp_address if member.node_id == membership.node_id else None
            if address is None:
                if member.status is not Status.ALIVE or not member.resp_addr:
                    continue
                if member.node_id not in ring:
                    continue
                address = Address.parse(member.resp_addr)
            members.append(ClusterMember(member.node_id, address.host, address.port))
        return ClusterView(members, membership.node_id)

    def _config_set(self, command: ConfigSet) -> Reply:
        """Change this node's settings that may change while it runs (until a restart:
        the environment's values come back)."""
        values = config_set(command.pairs, RUNTIME_SETTINGS, self._config_settings())
        if isinstance(values, ErrorReply):
            return values
        self.slow_log.configure(
            values.get("slowlog-log-slower-than"), values.get("slowlog-max-len")
        )
        return OK

    def _config_settings(self) -> dict[str, str]:
        config = self.config
        settings = {
            "save": "",
            "appendonly": "yes",
            "appendfsync": config.fsync.value,
            "maxmemory": "0",
            "maxmemory-policy": "noeviction",
            "databases": "1",
            "port": str(self.resp_address.port),
            "bind": self.resp_address.host,
            "timeout": str(int(config.resp_idle_timeout)),
            "maxclients": str(config.resp_max_connections),
            "cluster-enabled": "yes",
            "slowlog-log-slower-than": str(self.slow_log.slower_than_us),
            "slowlog-max-len": str(self.slow_log.max_len),
        }
        for setting in SETTINGS:
            # Nothing that proves who someone is leaves the node.
            if setting.internal or "SECRET" in setting.env or "TOKEN" in setting.env:
                continue
            value = getattr(config, setting.attribute, None)
            if value is None:
                value = getattr(config.limits, setting.attribute, None)
            if value is not None:
                settings[setting.env.lower()] = str(getattr(value, "value", value))
        return settings

    def _facts(self) -> dict[str, dict[str, str | int]]:
        config = self.config
        cluster = self.keyspace.cluster
        stats = self.store.stats()
        uptime = int(time.time() - self.started)
        usage = os.times()
        connections = self._connections()
        commands = self._command_facts()
        command_stats = commands.get("stats", {})
        return {
            "server": {
                "redis_version": self.settings.redis_version,
                "redis_mode": "cluster",
                "os": f"{platform.system()} {platform.release()} {platform.machine()}",
                "arch_bits": 64 if sys.maxsize > 2**32 else 32,
                "multiplexing_api": "trio",
                "process_id": os.getpid(),
                "run_id": self.run_id,
                "tcp_port": self.resp_address.port,
                "server_time_usec": time.time_ns() // 1000,
                "uptime_in_seconds": uptime,
                "uptime_in_days": uptime // 86400,
                "executable": sys.executable,
                "config_file": "",
                "a3redis_version": __version__,
                "python_version": platform.python_version(),
            },
            "clients": {
                "connected_clients": len(self.sessions),
                "maxclients": config.resp_max_connections,
                "blocked_clients": 0,
                "tracking_clients": 0,
            },
            "memory": memory_fields(*_process_memory(), stats.live_bytes),
            "persistence": {
                "loading": 0,
                "async_loading": 0,
                "rdb_changes_since_last_save": 0,
                "rdb_bgsave_in_progress": 0,
                "rdb_last_save_time": int(self.started),
                "rdb_last_bgsave_status": "ok",
                "aof_enabled": 1,
                "aof_rewrite_in_progress": 0,
                "aof_last_write_status": "ok",
            },
            "stats": {
                "total_connections_received": connections.get("total", 0),
                "total_commands_processed": self.commands_processed,
                "instantaneous_ops_per_sec": command_stats.get("instantaneous_ops_per_sec", 0),
                "total_net_input_bytes": connections.get("net_input_bytes", 0),
                "total_net_output_bytes": connections.get("net_output_bytes", 0),
                "rejected_connections": connections.get("refused", 0),
                # Redis counts a key once, when expiry deletes it; here that is when its
                # record is purged (TOMBSTONE_GRACE after it expired: README).
                "expired_keys": self._expired_purged(),
                "evicted_keys": 0,
                "keyspace_hits": self.lookups.hits,
                "keyspace_misses": self.lookups.misses,
                "total_error_replies": command_stats.get("total_error_replies", 0),
            },
            "replication": {
                "role": "master",
                "connected_slaves": 0,
                "master_failover_state": "no-failover",
                "master_replid": self.run_id,
                "master_repl_offset": 0,
                "replication_factor": cluster.replication_factor,
                "ring_members": len(cluster.ring.members),
                "live_members": sum(1 for m in cluster.ring.members if not cluster.is_down(m)),
            },
            "cpu": {
                "used_cpu_sys": f"{usage.system:.6f}",
                "used_cpu_user": f"{usage.user:.6f}",
                "used_cpu_sys_children": f"{usage.children_system:.6f}",
                "used_cpu_user_children": f"{usage.children_user:.6f}",
            },
            "commandstats": dict(commands.get("commandstats", {})),
            "errorstats": dict(commands.get("errorstats", {})),
            "cluster": {"cluster_enabled": 1},
            "keyspace": dict(keyspace_fields(stats.live_keys, self.store.expiring_keys)),
            "a3redis": {
                "node_id": config.node_id,
                "cluster_name": config.cluster_name,
                "read_consistency": config.read_consistency.name,
                "write_consistency": config.write_consistency.name,
                "fsync": config.fsync.value,
                "grpc_port": config.grpc_port,
                "gossip_port": config.gossip_port,
            },
        }


def _process_memory() -> tuple[int, int]:
    """This process's resident bytes now and at most so far (0 where unknown)."""
    now = process_usage()["rss_bytes"] or 0
    # Linux gives ru_maxrss in KiB.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return now, peak


class Lookups:
    """Keys that reads found (hits) and did not find (misses), as INFO's
    keyspace_hits and keyspace_misses count them."""

    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0

    def count(self, steps: Sequence[Step], results: Sequence[StepResult]) -> None:
        """Count the keys of a run's read steps, once the run is decided."""
        for step, result in zip(steps, results, strict=False):
            if type(step) is ReadStep and type(result) is list:
                missed = result.count(None)
                self.misses += missed
                self.hits += len(result) - missed


class _KeySteps:
    """A run of key reads and writes, each step started when the one before is decided.

    The keyspace calls back at once for what only this node holds, later for
    what needs the disk or the replicas; one loop (`_take`) handles both, so
    a run that never waits is answered without a callback at all.
    """

    __slots__ = ("answer", "keyspace", "launching", "lookups", "pending", "pipeline", "results")

    def __init__(
        self, keyspace: Keyspace, pipeline: Plan, answer: Answer, lookups: Lookups
    ) -> None:
        self.keyspace = keyspace
        self.pipeline = pipeline
        self.answer = answer
        self.lookups = lookups
        self.results: list[StepResult] = []
        self.launching = False  # inside a keyspace call: its callback only records
        self.pending = False  # a step was started and has not called back

    def begin(self) -> list[Reply] | None:
        """The replies if no step had to wait; else None, and `answer` gets them."""
        if not self._take():
            return None
        replies = self._replies()
        if replies is None:
            self.answer(None)  # a bug: the listener closes the connection (allowed this early)
        return replies

    def _take(self) -> bool:
        """Start steps until one must wait (False) or none is left (True)."""
        steps = self.pipeline.steps
        keyspace = self.keyspace
        while len(self.results) < len(steps):
            step = steps[len(self.results)]
            self.pending = True
            self.launching = True
            try:
                if isinstance(step, ReadStep):
                    keyspace.batch_get_then(step.keys, step.consistency, self._step_done)
                else:
                    if isinstance(step, RewriteStep):
                        decided = self.pipeline.rewrites(
                            len(self.results), self.results, keyspace.wall_ms()
                        )
                        if isinstance(decided, RequestError):
                            raise decided
                        step = decided
                    assert isinstance(step, WriteStep)
                    if step.writes:
                        keyspace.batch_write_then(
                            step.writes, step.consistency, self._step_done, expiries=step.expiries
                        )
                    else:
                        self._step_done([])  # nothing changed: no write to wait for
            except RequestError as failure:
                self._step_done(failure)
            finally:
                self.launching = False
            if self.pending:
                return False
        return True

    def _step_done(
        self, result: Sequence[Record | None] | Sequence[Version] | RequestError
    ) -> None:
        self.results.append(result)
        self.pending = False
        if self.launching:
            return  # `_take` goes on with the next step
        try:
            if self._take():
                self.answer(self._replies())
        except Exception:  # a bug of ours: the connection is told and closed
            log.exception("a Redis-protocol run failed")
            self.answer(None)

    def _replies(self) -> list[Reply] | None:
        try:
            pipeline = self.pipeline
            self.lookups.count(pipeline.steps, self.results)
            now_ms = self.keyspace.wall_ms() if pipeline.replies_read_the_clock else None
            return pipeline.replies(self.results, now_ms)
        except Exception:
            log.exception("could not reply to a Redis-protocol run")
            return None
