"""Node configuration, read once from the environment.

Rules:
- SETTINGS is the one table of settings. Each row names an environment variable, the
  Config attribute it fills, its default, its parser (which knows what it accepts) and
  one line of documentation. `Config.from_env`, README's table of variables
  (`python scripts/config_table.py`) and deploy/check.py's list of variables a node reads
  all come from it; nothing writes them down a second time.
- What relates one setting to another is plain code after the table: defaults that follow
  from NODE_NUM or BIND_HOST (`derived_defaults`, shown in the table as formulas) and the
  three settings that make the request limits (`Config.from_env`).
- `Config.from_env` either returns a complete, valid Config or raises ConfigError naming
  the variable, the value and the accepted form. Nothing else in the node reads the
  environment.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from a3redis.core import client_tokens
from a3redis.core import tls as tls_rules
from a3redis.core.consistency import Consistency
from a3redis.core.names import NODE_ID_RULE, is_host, is_node_id
from a3redis.core.peer_auth import (
    MAX_SECRET_BYTES,
    MIN_SECRET_BYTES,
    Secret,
    secret_from_file,
    secret_from_text,
)
from a3redis.core.redis_slowlog import SLOWLOG_LOG_SLOWER_THAN, SLOWLOG_MAX_LEN
from a3redis.core.validation import Limits
from a3redis.net.address import Address
from a3redis.net.tls import NodeTls, TlsFileError, TlsFiles
from a3redis.runtime.logs import LogFormat
from a3redis.storage.policy import FsyncPolicy

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

_INT = re.compile(r"-?[0-9]{1,20}")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """An environment variable has a value the node cannot use."""


# ----- parsers: text to value, and the words for what they accept ---------------------------


class Parser(Protocol[T_co]):
    """Parses one variable's (stripped) text, or raises ValueError; `form` says what it
    accepts, as error messages and README's table put it."""

    @property
    def form(self) -> str: ...

    def __call__(self, text: str, /) -> T_co: ...


@dataclass(frozen=True, slots=True)
class Integer:
    """A decimal integer from `low` to `high`; `words` may name `{low}` and `{high}`."""

    low: int
    high: int
    words: str = "an integer from {low} to {high}"
    power_of_two: bool = False

    @property
    def form(self) -> str:
        return self.words.format(low=self.low, high=self.high)

    def __call__(self, text: str) -> int:
        if not _INT.fullmatch(text):
            # int() would also take "1_000", "+7" or non-ASCII digits.
            raise ValueError("")
        number = int(text)
        if not self.low <= number <= self.high:
            raise ValueError("out of range")
        if self.power_of_two and number & (number - 1):
            raise ValueError("not a power of two")
        return number


@dataclass(frozen=True, slots=True)
class Number:
    """A decimal number from `low` to `high` (nan and infinities are out of range)."""

    low: float
    high: float
    words: str = "seconds, from {low} to {high}"

    @property
    def form(self) -> str:
        return self.words.format(low=f"{self.low:.12g}", high=f"{self.high:.12g}")

    def __call__(self, text: str) -> float:
        number = float(text)
        if not self.low <= number <= self.high:
            raise ValueError("out of range")
        return number


@dataclass(frozen=True, slots=True)
class OneOf(Generic[T]):
    """One of a few words (`parse` may accept spellings beyond `choices`)."""

    choices: tuple[str, ...]
    parse: Callable[[str], T]

    @property
    def form(self) -> str:
        return "one of " + ", ".join(self.choices)

    def __call__(self, text: str) -> T:
        return self.parse(text)


@dataclass(frozen=True, slots=True)
class Rule(Generic[T]):
    """A form too particular for the parsers above, stated in words."""

    form: str
    parse: Callable[[str], T]

    def __call__(self, text: str) -> T:
        return self.parse(text)


@dataclass(frozen=True, slots=True)
class OrUnset(Generic[T]):
    """`parser`'s form, or empty for None."""

    parser: Parser[T]

    @property
    def form(self) -> str:
        return self.parser.form

    def __call__(self, text: str) -> T | None:
        return self.parser(text) if text else None


def _node_id(text: str) -> str:
    # The rule gossip applies to every id it hears (a3redis.core.names).
    if not is_node_id(text):
        raise ValueError("")
    return text


def _host(text: str) -> str:
    if not is_host(text):
        raise ValueError("")
    return text


def _path(text: str) -> Path:
    if not text:
        raise ValueError("empty")
    return Path(text)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("")


def _peers(text: str) -> tuple[Address, ...]:
    return tuple(Address.parse(part) for part in text.split(",") if part.strip())


def _consistency(text: str) -> Consistency:
    try:
        return Consistency.parse(text)
    except ValueError:
        raise ValueError("") from None


def _secret_file(text: str) -> Secret:
    try:
        with open(text, "rb") as file:
            data = file.read(MAX_SECRET_BYTES + 3)
    except OSError as error:
        raise ValueError(f"cannot read it: {error.strerror}") from None
    return secret_from_file(data)


# ----- client tokens (CLIENT_TOKENS_FILE) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokensFile:
    """A tokens file and the tokens it held when read (a3redis.core.client_tokens)."""

    path: Path
    tokens: client_tokens.ClientTokens

    @classmethod
    def read(cls, path: Path) -> TokensFile:
        """Read and check the file; ValueError says what is wrong (with the line number)."""
        try:
            with path.open("rb") as file:
                text = file.read(client_tokens.MAX_FILE_BYTES + 1)
        except OSError as error:
            raise ValueError(f"cannot read it: {error.strerror}") from None
        # A fresh key per process: a token's digest means nothing outside it.
        return cls(path, client_tokens.parse(text, secrets.token_bytes(client_tokens.KEY_BYTES)))


def _tokens_file(text: str) -> TokensFile:
    return TokensFile.read(_path(text))


def _pem_file(problem: Callable[[bytes], str | None]) -> Callable[[str], Path]:
    """A parser of a PEM file's path: the file must be readable and hold what `problem`
    (a3redis.core.tls) asks for."""

    def parse(text: str) -> Path:
        path = _path(text)
        try:
            with path.open("rb") as file:
                data = file.read(tls_rules.MAX_PEM_BYTES + 1)
        except OSError as error:
            raise ValueError(f"cannot read it: {error.strerror}") from None
        reason = problem(data)
        if reason is not None:
            raise ValueError(reason)
        return path

    return parse


PORT = Integer(0, 65535, "a port number from {low} to {high}")
NODES = Integer(1, 10_000)
HOST = Rule("an IP address or host name", _host)
NAME = Rule(NODE_ID_RULE, _node_id)
BOOLEAN = OneOf(("1", "0", "true", "false"), _bool)
SECRET_TEXT = OrUnset(
    Rule(f"a secret of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes", secret_from_text)
)
SECRET_FILE = OrUnset(
    Rule(
        f"a readable file holding a secret of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes "
        "(one trailing newline is ignored)",
        _secret_file,
    )
)
CERTIFICATES = OrUnset(
    Rule("a readable PEM file of certificates", _pem_file(tls_rules.certificate_problem))
)
PRIVATE_KEY = OrUnset(Rule("a readable PEM private key file", _pem_file(tls_rules.key_problem)))
CONSISTENCY = OneOf(tuple(level.name.lower() for level in Consistency), _consistency)


# ----- the table ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: what it sets, its default, what it accepts, what it means."""

    env: str
    # The Config field it fills; MAX_KEY_BYTES, MAX_VALUE_BYTES and MAX_CLOCK_SKEW fill
    # `limits` together (see Config.from_env).
    attribute: str
    # The text read when the variable is unset; None: it follows from other settings
    # (derived_defaults), and `shown_default` gives the formula.
    default: str | None
    parse: Parser[object]
    doc: str  # one line of Markdown: what it means, for README's table
    shown_default: str = ""  # README's Default column, when not the `default` text itself
    seed: bool = False  # kept from the older project, with the same name and meaning
    internal: bool = False  # for tests only: left out of README's table
    hidden: bool = False  # a secret: an error message never repeats the value


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "NODE_NUM",
        "node_num",
        "1",
        NODES,
        "Node number N; sets the default node id, ports and data directory",
        seed=True,
    ),
    Setting(
        "NODE_ID",
        "node_id",
        None,
        NAME,
        "Stable identity of the node (survives address changes)",
        shown_default="`node-<N>`",
    ),
    Setting(
        "GRPC_PORT",
        "grpc_port",
        None,
        PORT,
        "gRPC API port (`0`: any free port)",
        shown_default="`50050+N`",
        seed=True,
    ),
    Setting(
        "GOSSIP_PORT",
        "gossip_port",
        None,
        PORT,
        "HTTP port: gossip, `/health`, `/ready`, `/membership`, `/metrics`, the status page",
        shown_default="`8000+N`",
        seed=True,
    ),
    Setting(
        "RESP_PORT",
        "resp_port",
        None,
        PORT,
        "Redis-protocol (RESP2/RESP3) port for `redis-cli`, redis-py and other Redis clients "
        "(`0`: any free port; 6379 is left to a real Redis)",
        shown_default="`6379+N`",
    ),
    Setting(
        "BIND_HOST",
        "bind_host",
        "127.0.0.1",
        HOST,
        "Address to listen on (`0.0.0.0` for all interfaces)",
    ),
    Setting(
        "ADVERTISE_HOST",
        "advertise_host",
        None,
        HOST,
        "Address other nodes and clients use",
        shown_default="`BIND_HOST` (host name if binding all)",
    ),
    Setting(
        "DATA_DIR",
        "data_dir",
        None,
        Rule("a directory path", _path),
        "Where this node keeps its data; one process per directory",
        shown_default="`./data/node<N>`",
        seed=True,
    ),
    Setting(
        "FSYNC",
        "fsync",
        "always",
        OneOf(tuple(policy.value for policy in FsyncPolicy), lambda t: FsyncPolicy(t.lower())),
        "`always`: acknowledge after fdatasync (group commit); `everysec`: fsync once a "
        "second; `no`: leave it to the OS",
    ),
    Setting(
        "PEERS",
        "peers",
        "",
        Rule("comma-separated HOST:PORT addresses", _peers),
        "Other nodes' gRPC addresses, `host:port,host:port`",
        seed=True,
    ),
    Setting(
        "TOTAL_NODES",
        "total_nodes",
        "",
        OrUnset(NODES),
        "Without `PEERS`: the peers are nodes 1 to `TOTAL_NODES` on this host",
        shown_default="(unset)",
        seed=True,
    ),
    Setting(
        "REPLICATION_FACTOR",
        "replication_factor",
        "3",
        Integer(1, 15),
        "Copies of each key, N (must match on every node: a peer that differs is refused)",
        seed=True,
    ),
    Setting(
        "CLUSTER_NAME",
        "cluster_name",
        "a3redis",
        NAME,
        "Nodes of different clusters refuse each other",
    ),
    Setting(
        "READ_CONSISTENCY",
        "read_consistency",
        "quorum",
        CONSISTENCY,
        "Default level of a read that does not name one",
    ),
    Setting(
        "WRITE_CONSISTENCY",
        "write_consistency",
        "quorum",
        CONSISTENCY,
        "Default level of a write or delete that does not name one",
    ),
    Setting(
        "MAX_KEY_BYTES",
        "max_key_bytes",
        "1024",
        Integer(1, 65_535),
        "Longest key accepted",
    ),
    Setting(
        "MAX_VALUE_BYTES",
        "max_value_bytes",
        str(1024 * 1024),
        Integer(0, 16 * 1024 * 1024),
        "Largest value accepted",
    ),
    Setting(
        "MAX_CONNECTIONS",
        "max_connections",
        "1024",
        Integer(1, 1_000_000),
        "gRPC connections served at once; more are closed as they arrive (counted in "
        "`a3redis_grpc_connections_refused_total`). The node raises its open-file limit to "
        "fit them when it can",
    ),
    Setting(
        "RESP_MAX_CONNECTIONS",
        "resp_max_connections",
        "10000",
        Integer(1, 1_000_000),
        "Redis-protocol connections served at once (Redis's `maxclients` default); more are "
        "answered `-ERR max number of clients reached` and closed (counted in "
        "`a3redis_resp_connections_refused_total`)",
    ),
    Setting(
        "RESP_IDLE_TIMEOUT",
        "resp_idle_timeout",
        "0",
        Number(0.0, 30 * 86400.0, "seconds, from {low} to {high}; 0 for never"),
        "Seconds a Redis-protocol connection may send nothing before it is closed (Redis's "
        "`timeout`; `0`: never)",
    ),
    Setting(
        "RESP_MAX_REPLY_BUFFER",
        "resp_max_reply_buffer",
        str(64 * 1024 * 1024),
        Integer(1024 * 1024, 2**40, "a byte count from {low} to {high}"),
        "Bytes of replies a Redis-protocol client may leave unread (it pipelines without "
        "reading); over it the connection is closed (Redis's client-output-buffer-limit). Keep "
        "it above the largest reply a client asks for",
    ),
    Setting(
        "SLOWLOG_LOG_SLOWER_THAN",
        "slowlog_log_slower_than",
        str(SLOWLOG_LOG_SLOWER_THAN),
        Integer(-1, 2**40, "microseconds, from {low} to {high}; -1: none"),
        "Microseconds a Redis-protocol command must take to be kept in `SLOWLOG` (Redis's "
        "`slowlog-log-slower-than`; a command's time is its pipelined run's, replicas and disk "
        "included; `0`: every command, `-1`: none)",
    ),
    Setting(
        "SLOWLOG_MAX_LEN",
        "slowlog_max_len",
        str(SLOWLOG_MAX_LEN),
        Integer(0, 1_000_000),
        "Commands `SLOWLOG` keeps, the oldest forgotten first (Redis's `slowlog-max-len`)",
    ),
    Setting(
        "ALLOW_FLUSH",
        "allow_flush",
        "0",
        BOOLEAN,
        "`1` lets `FLUSHALL` / `FLUSHDB` delete every key of the cluster; otherwise they answer "
        "an error naming this setting",
    ),
    Setting(
        "REPLICA_FRAMES",
        "replica_frames",
        "1",
        BOOLEAN,
        "`1`: quorum reads' and writes' calls between nodes go as replica frames (the Replica "
        "service's Read and Apply without HTTP/2's cost per call) on GRPC_PORT, to peers that "
        "answer them; `0`: this node neither sends nor serves them, and those calls are gRPC. "
        "A mixed-version cluster needs no setting: a node falls back to gRPC by itself",
    ),
    Setting(
        "MAX_CLOCK_SKEW",
        "max_clock_skew",
        "60",
        Number(1.0, 3600.0),
        "Seconds a received version may be ahead of this node's clock; more is refused (see "
        "[Hostile input](#hostile-input)). Keep it well above the clock differences between "
        "nodes",
    ),
    Setting(
        "COMPACT_MIN_BYTES",
        "compact_min_bytes",
        str(64 * 1024 * 1024),
        Integer(4096, 2**40, "a byte count of at least {low}"),
        "Compact once the log exceeds this and twice the live data",
    ),
    Setting(
        "SHUTDOWN_GRACE",
        "shutdown_grace",
        "1.5",
        Number(0.0, 60.0),
        "Seconds to let in-flight requests finish on shutdown",
    ),
    Setting(
        "GOSSIP_INTERVAL",
        "gossip_interval",
        "1.0",
        Number(0.05, 60.0),
        "Seconds between gossip rounds (one probe each)",
    ),
    Setting(
        "FAILURE_TIMEOUT",
        "failure_timeout",
        "10",
        Number(0.5, 3600.0),
        "Seconds without evidence of life before a member is declared dead",
    ),
    Setting(
        "DEAD_MEMBER_REAP",
        "dead_member_reap",
        str(72 * 3600),
        Number(1.0, 365 * 86400.0),
        "Seconds a member may stay dead (or left) before it is forgotten: taken out of the "
        "member table and the ring, its partitions moving to the other nodes (72 h, like "
        "memberlist's dead-node reclaim)",
    ),
    Setting(
        "JOIN_TIMEOUT",
        "join_timeout",
        "30",
        Number(0.0, 3600.0),
        "Seconds a node that starts with no saved member table waits for every configured "
        "peer (PEERS / TOTAL_NODES) to answer before it takes a place, once one has; and that "
        "a restarted node waits to hear from a peer before it coordinates on its saved table",
    ),
    Setting(
        "REQUEST_TIMEOUT",
        "request_timeout",
        "3",
        Number(0.05, 600.0),
        "Seconds a coordinator waits for replicas before `DEADLINE_EXCEEDED`",
    ),
    Setting(
        "PEER_TIMEOUT",
        "peer_timeout",
        "2",
        Number(0.05, 600.0),
        "Seconds one replica call may take before the replica counts as failed",
    ),
    Setting(
        "HINT_WINDOW",
        "hint_window",
        "10800",
        Number(0.0, 30 * 86400.0),
        "Seconds a hint for a down replica is kept (3 h, as Cassandra; at most TOMBSTONE_GRACE)",
    ),
    Setting(
        "SYNC_INTERVAL",
        "sync_interval",
        "30",
        Number(0.1, 86400.0),
        "Seconds between anti-entropy rounds (±20% jitter)",
        seed=True,
    ),
    Setting(
        "CHUNK_COUNT",
        "chunk_count",
        "16",
        Integer(1, 1024, "a power of two from {low} to {high}", power_of_two=True),
        "Merkle leaves per partition (must match on every node)",
        seed=True,
    ),
    Setting(
        "MERKLE_FANOUT",
        "merkle_fanout",
        "16",
        Integer(2, 256),
        "Children per inner node of the Merkle range tree (the asking node's value is used)",
    ),
    Setting(
        "REPAIR_MAX_KEYS_PER_SECOND",
        "repair_max_keys_per_second",
        "5000",
        Number(0.0, 1e9, "keys per second, 0 for no limit"),
        "Pace of repair transfers",
    ),
    Setting(
        "STREAM_MAX_KEYS_PER_SECOND",
        "stream_max_keys_per_second",
        "200000",
        Number(0.0, 1e9, "keys per second, 0 for no limit"),
        "Pace at which a joining node copies its partitions (and a leaving node hands its "
        "partitions over) while the node is idle",
    ),
    Setting(
        "STREAM_BUSY_KEYS_PER_SECOND",
        "stream_busy_keys_per_second",
        "10000",
        Number(0.0, 1e9, "keys per second, 0 for no limit"),
        "The same pace while the node serves client or replica requests (more than 20 a "
        "second): copying yields to them",
    ),
    Setting(
        "TOMBSTONE_GRACE",
        "tombstone_grace",
        "86400",
        Number(1.0, 365 * 86400.0),
        "Seconds before a tombstone every replica holds may be purged",
    ),
    Setting(
        "A3REDIS_CLOCK_OFFSET_MS",
        "clock_offset_ms",
        "0",
        Integer(-86_400_000, 86_400_000, "milliseconds within a day (tests only)"),
        "Shifts this node's wall clock, so that tests can skew one node",
        internal=True,
    ),
    Setting(
        "CLIENT_TOKENS_FILE",
        "client_tokens",
        "",
        OrUnset(Rule("a readable tokens file: `<token> <role>` lines", _tokens_file)),
        "File of client and operator tokens, one `<token> <role>` per line (role `readonly`, "
        "`readwrite` or `admin`; optionally `read=<level>` `write=<level>`, the token's Redis "
        "connections' levels): when set, every client call needs a token (see "
        "[Client and operator tokens](#client-and-operator-tokens)). Read at start and on "
        "SIGHUP",
        shown_default="(unset)",
    ),
    Setting(
        "METRICS_REQUIRE_TOKEN",
        "metrics_require_token",
        "0",
        BOOLEAN,
        "`1`: with `CLIENT_TOKENS_FILE`, `/metrics` and `/api/metrics/summary` need a token "
        "(any role)",
    ),
    Setting(
        "STATUS_REQUIRE_TOKEN",
        "status_require_token",
        "0",
        BOOLEAN,
        "`1`: with `CLIENT_TOKENS_FILE`, the status page (`/`) and the JSON it reads "
        "(`/membership`, `/api/ring`, `/api/transition`) need a token (any role)",
    ),
    Setting("DEBUG_LOG", "debug_log", "0", BOOLEAN, "`1` for debug logging"),
    Setting(
        "DEBUG_ENDPOINTS",
        "debug_endpoints",
        "0",
        BOOLEAN,
        "`1` serves `GET /debug/objects`: a census of live objects (instances per type, "
        "entries per container) for finding leaks; it walks the whole heap, so never on a "
        "production node",
    ),
    Setting(
        "LOG_FORMAT",
        "log_format",
        "text",
        OneOf(tuple(form.value for form in LogFormat), lambda t: LogFormat(t.lower())),
        "`json`: one JSON object per line (`timestamp`, `level`, `node_id`, `logger`, "
        "`event`), Hypercorn's and purerpc's lines and crash tracebacks included",
    ),
    # The cluster secret (a3redis.core.peer_auth; README's "Security"). Each secret is
    # given in one of two forms; the Config field holds the secret, read and checked.
    Setting(
        "CLUSTER_SECRET_FILE",
        "cluster_secret_file",
        "",
        SECRET_FILE,
        "File holding the cluster secret (a Docker or Kubernetes secret): with it, gossip, "
        "replica traffic and operator endpoints take only messages signed with it",
        shown_default="(unset)",
    ),
    Setting(
        "CLUSTER_SECRET",
        "cluster_secret",
        "",
        SECRET_TEXT,
        "The cluster secret itself, for local use (not both this and `CLUSTER_SECRET_FILE`)",
        shown_default="(unset)",
        hidden=True,
    ),
    Setting(
        "CLUSTER_SECRET_PREVIOUS_FILE",
        "cluster_secret_previous_file",
        "",
        SECRET_FILE,
        "File holding the previous cluster secret, still accepted (never sent) during a rotation",
        shown_default="(unset)",
    ),
    Setting(
        "CLUSTER_SECRET_PREVIOUS",
        "cluster_secret_previous",
        "",
        SECRET_TEXT,
        "The previous cluster secret itself (not both this and `CLUSTER_SECRET_PREVIOUS_FILE`)",
        shown_default="(unset)",
        hidden=True,
    ),
    # TLS (a3redis.core.tls, a3redis.net.tls; README's "TLS").
    Setting(
        "TLS_CERT_FILE",
        "tls_cert_file",
        "",
        CERTIFICATES,
        "PEM certificate (chain) of this node; with `TLS_KEY_FILE`, the gRPC and HTTP ports "
        "speak only TLS and peers are dialled with TLS. Its SANs must name every address "
        "clients and peers dial (see [TLS](#tls)). Read at start and on SIGHUP",
        shown_default="(unset)",
    ),
    Setting(
        "TLS_KEY_FILE",
        "tls_key_file",
        "",
        PRIVATE_KEY,
        "PEM private key of `TLS_CERT_FILE` (both or neither)",
        shown_default="(unset)",
    ),
    Setting(
        "TLS_CA_FILE",
        "tls_ca_file",
        "",
        CERTIFICATES,
        "PEM bundle of the CA(s) that sign the cluster's certificates: peers are verified "
        "against it (not the system's CAs), and node-to-node traffic is mutual TLS (replica "
        "calls need a certificate it signed)",
        shown_default="(unset)",
    ),
    Setting(
        "TLS_REQUIRE_CLIENT_CERT",
        "tls_require_client_cert",
        "0",
        BOOLEAN,
        "`1`: every connection to the gRPC, HTTP and Redis ports must present a certificate signed "
        "by `TLS_CA_FILE` (clients too: `--tls-cert` / `--tls-key`)",
    ),
    Setting(
        "INSECURE",
        "insecure",
        "0",
        BOOLEAN,
        "`1` lets a node listen beyond loopback without a cluster secret (protected mode off: "
        "anyone who reaches its ports can join, replicate and remove members)",
    ),
)

SETTINGS_BY_ENV: Mapping[str, Setting] = {setting.env: setting for setting in SETTINGS}


# ----- what relates settings to each other -----------------------------------------------------


def derived_defaults(node_num: int, bind_host: str) -> dict[str, str]:
    """The defaults (as text) of the settings whose default is None in the table."""
    wildcard = bind_host in ("0.0.0.0", "::")
    return {
        "NODE_ID": f"node-{node_num}",
        "GRPC_PORT": str(50050 + node_num),
        "GOSSIP_PORT": str(8000 + node_num),
        "RESP_PORT": str(6379 + node_num),
        # Listening on every interface: the host name is what others can most likely reach.
        "ADVERTISE_HOST": socket.gethostname() if wildcard else bind_host,
        "DATA_DIR": f"./data/node{node_num}",
    }


@dataclass(frozen=True, slots=True)
class Config:
    """A node's settings: one field per row of SETTINGS, where each is documented, except
    `limits`, which MAX_KEY_BYTES, MAX_VALUE_BYTES and MAX_CLOCK_SKEW make together."""

    node_num: int
    node_id: str
    grpc_port: int
    gossip_port: int
    resp_port: int
    bind_host: str
    advertise_host: str
    peers: tuple[Address, ...]
    total_nodes: int | None
    replication_factor: int
    cluster_name: str
    data_dir: Path
    fsync: FsyncPolicy
    limits: Limits
    read_consistency: Consistency
    write_consistency: Consistency
    compact_min_bytes: int
    shutdown_grace: float
    gossip_interval: float
    failure_timeout: float
    dead_member_reap: float
    join_timeout: float
    request_timeout: float
    peer_timeout: float
    hint_window: float
    sync_interval: float
    chunk_count: int
    merkle_fanout: int
    repair_max_keys_per_second: float
    stream_max_keys_per_second: float
    stream_busy_keys_per_second: float
    tombstone_grace: float
    clock_offset_ms: int
    debug_log: bool
    debug_endpoints: bool
    max_connections: int
    resp_max_connections: int
    resp_idle_timeout: float
    resp_max_reply_buffer: int
    slowlog_log_slower_than: int
    slowlog_max_len: int
    allow_flush: bool
    replica_frames: bool
    log_format: LogFormat
    client_tokens: TokensFile | None
    metrics_require_token: bool
    status_require_token: bool

    cluster_secret_file: Secret | None
    cluster_secret: Secret | None
    cluster_secret_previous_file: Secret | None
    cluster_secret_previous: Secret | None
    insecure: bool
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_ca_file: Path | None
    tls_require_client_cert: bool

    @property
    def tls(self) -> TlsFiles | None:
        """The node's TLS files; None when TLS is off."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return TlsFiles(
            self.tls_cert_file, self.tls_key_file, self.tls_ca_file, self.tls_require_client_cert
        )

    @property
    def grpc_address(self) -> Address:
        return Address(self.advertise_host, self.grpc_port)

    @property
    def gossip_address(self) -> Address:
        return Address(self.advertise_host, self.gossip_port)

    @property
    def resp_address(self) -> Address:
        return Address(self.advertise_host, self.resp_port)

    @property
    def hints_kept_for(self) -> float:
        """Seconds a hint is kept: HINT_WINDOW, but never longer than TOMBSTONE_GRACE.

        A hint older than the grace may carry a value whose delete has since
        been purged on every replica; delivered then, it would bring the key
        back. Dropping it loses nothing: the other replicas hold the write,
        and anti-entropy brings it to the one that missed it.
        """
        return min(self.hint_window, self.tombstone_grace)

    @property
    def cluster_secrets(self) -> tuple[Secret, Secret | None] | None:
        """The cluster secret and the previous one (or None), in whichever form each was
        given; None without a cluster secret."""
        current = self.cluster_secret_file or self.cluster_secret
        if current is None:
            return None
        return current, self.cluster_secret_previous_file or self.cluster_secret_previous

    @property
    def transition_drain(self) -> float:
        """Seconds a joining or leaving node waits after every member acknowledged a new
        role: every request coordinated under the previous configuration has ended by then."""
        return self.request_timeout + self.peer_timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Every row of SETTINGS read from `env`, or ConfigError for the first bad value."""
        # NODE_NUM and BIND_HOST first: other defaults follow from them.
        node_num = _read(env, SETTINGS_BY_ENV["NODE_NUM"], {})
        bind_host = _read(env, SETTINGS_BY_ENV["BIND_HOST"], {})
        derived = derived_defaults(node_num, bind_host)
        values = {setting.attribute: _read(env, setting, derived) for setting in SETTINGS}
        limits = Limits(
            max_key_bytes=values.pop("max_key_bytes"),
            max_value_bytes=values.pop("max_value_bytes"),
            max_clock_skew_ms=round(1000 * values.pop("max_clock_skew")),
        )
        _check_secret_forms(values)
        config = cls(limits=limits, **values)
        _check_tls(config)
        return config


def _check_secret_forms(values: Mapping[str, Any]) -> None:
    """One form per secret, and no previous secret without a current one."""
    for name in ("CLUSTER_SECRET", "CLUSTER_SECRET_PREVIOUS"):
        if values[name.lower()] is not None and values[name.lower() + "_file"] is not None:
            raise ConfigError(f"{name}_FILE and {name} are both set: set only one of them")
    current = values["cluster_secret"] or values["cluster_secret_file"]
    previous = values["cluster_secret_previous"] or values["cluster_secret_previous_file"]
    if previous is not None and current is None:
        raise ConfigError(
            "CLUSTER_SECRET_PREVIOUS[_FILE] is set without CLUSTER_SECRET[_FILE]: the previous "
            "secret is only accepted beside a current one"
        )


def _check_tls(config: Config) -> None:
    """The TLS settings go together (a3redis.core.tls) and the ssl library takes the files."""
    problem = tls_rules.settings_problem(
        config.tls_cert_file is not None,
        config.tls_key_file is not None,
        config.tls_ca_file is not None,
        config.tls_require_client_cert,
    )
    if problem is not None:
        raise ConfigError(problem)
    if config.tls is not None:
        try:
            NodeTls(config.tls)
        except TlsFileError as error:
            raise ConfigError(str(error)) from None


def is_loopback(host: str) -> bool:
    """Whether `host` is only reachable from this machine: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def check_protected_mode(config: Config) -> None:
    """Protected mode: ConfigError for a node that listens beyond loopback with no cluster
    secret, unless INSECURE=1 says that is meant."""
    if config.cluster_secrets is None and not config.insecure and not is_loopback(config.bind_host):
        raise ConfigError(
            f"BIND_HOST={config.bind_host} is reachable from other machines and no cluster "
            "secret is set: set CLUSTER_SECRET_FILE (or CLUSTER_SECRET), or INSECURE=1 to run "
            "unprotected"
        )


def _read(env: Mapping[str, str], setting: Setting, derived: Mapping[str, str]) -> Any:
    default = derived[setting.env] if setting.default is None else setting.default
    raw = env.get(setting.env, default)
    try:
        return setting.parse(raw.strip())
    except ValueError as error:
        detail = f" ({error})" if str(error) and "invalid literal" not in str(error) else ""
        form = setting.parse.form
        shown = f"<{len(raw)} characters, hidden>" if setting.hidden else repr(raw)
        raise ConfigError(f"{setting.env}={shown} is invalid: expected {form}{detail}") from None
