"""INFO and CONFIG GET, written the way Redis 7 writes them, from facts the node hands over.

Rules:
- The node (a shell) gathers its facts into a plain dict of sections, each
  a dict of field -> value (`{"server": {"redis_version": "7.2.0", ...}}`);
  this module only chooses and writes. SECTIONS names the sections an
  a3redis node fills, in Redis's order, with the fields each one carries.
- Which sections INFO shows follows Redis 7 (`genInfoSectionDict`): no
  argument gives the default sections; `default` adds them, `all` gives
  every known section, `everything` every section the node handed over;
  any other argument names one section. Names are case-insensitive, an
  unknown name adds nothing (INFO with nothing matched is empty text), and
  sections come out in SECTIONS order whatever the order asked. A section
  the node handed over but SECTIONS does not know comes after the known
  ones, only when named or with `everything` (as Redis treats a module's).
  Our own `a3redis` section is a default one, so plain INFO shows it.
- Text: `# Title\\r\\n`, then `field:value\\r\\n` per field in the order given,
  sections separated by an empty line, sent as verbatim text (`txt`). A
  field name is lower-case letters, digits and `_`, `cmdstat_` and a
  command's name, or `errorstat_` and an error code in capitals (the
  shell's constant; anything else is a bug and raises); a value is a str or
  an int (a bool is written 1 or 0, as Redis does), and CR or LF inside it
  become spaces, so a value can never forge a line.
- CONFIG GET follows Redis 7 (`configGetCommand`): each argument without
  `[`, `*` or `?` is looked up by name, case-insensitively, and answered
  under the name as the client wrote it; any other argument is a glob
  (a3redis.core.redis_glob, folding case, as Redis's `stringmatch(..., 1)`)
  over every setting's name. A setting is answered once however many
  arguments match it; unknown names add nothing. The reply is a map (a flat
  array in RESP2).
- CONFIG SET follows Redis 7 (`configSetCommand`): every pair is checked
  before any is set (an unknown name, then one that is fixed until a
  restart, then a name given twice, then each value), with Redis's texts;
  the shell sets the values this module returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from a3redis.core.redis_glob import Glob, PatternTooLongError
from a3redis.core.resp_values import ErrorReply, Reply, Verbatim, error, quoted_argument

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

InfoValue = str | int


@dataclass(frozen=True, slots=True)
class InfoSection:
    """A section of INFO: its name (as asked), its title (as written), its fields in order."""

    name: str
    title: str
    fields: tuple[str, ...]
    default: bool = True


SECTIONS: tuple[InfoSection, ...] = (
    InfoSection(
        "server",
        "Server",
        (
            "redis_version",  # the Redis version whose behaviour we follow (clients check it)
            "redis_mode",  # "cluster": CLUSTER commands are answered
            "os",
            "arch_bits",
            "multiplexing_api",
            "process_id",
            "run_id",  # 40 hex characters, new at every start
            "tcp_port",  # the RESP port
            "server_time_usec",
            "uptime_in_seconds",
            "uptime_in_days",
            "executable",
            "config_file",
            "a3redis_version",
            "python_version",
        ),
    ),
    InfoSection(
        "clients",
        "Clients",
        ("connected_clients", "maxclients", "blocked_clients", "tracking_clients"),
    ),
    InfoSection(
        "memory",
        "Memory",
        (
            "used_memory",
            "used_memory_human",
            "used_memory_rss",
            "used_memory_rss_human",
            "used_memory_peak",
            "used_memory_peak_human",
            "used_memory_dataset",  # the stored records' encoded size
            "maxmemory",
            "maxmemory_human",
            "maxmemory_policy",
            "mem_allocator",
        ),
    ),
    InfoSection(
        "persistence",
        "Persistence",
        (
            "loading",
            "async_loading",
            "rdb_changes_since_last_save",
            "rdb_bgsave_in_progress",
            "rdb_last_save_time",
            "rdb_last_bgsave_status",
            "aof_enabled",  # 1 when every write is logged before it is acknowledged
            "aof_rewrite_in_progress",  # 1 while the log is compacted
            "aof_last_write_status",
        ),
    ),
    InfoSection(
        "stats",
        "Stats",
        (
            "total_connections_received",
            "total_commands_processed",
            "instantaneous_ops_per_sec",
            "total_net_input_bytes",
            "total_net_output_bytes",
            "rejected_connections",
            "expired_keys",
            "evicted_keys",
            "keyspace_hits",
            "keyspace_misses",
            "total_error_replies",
        ),
    ),
    InfoSection(
        "replication",
        "Replication",
        (
            "role",  # always "master": every node takes writes
            "connected_slaves",  # always 0: a3redis replicates without Redis replicas
            "master_failover_state",
            "master_replid",
            "master_repl_offset",
            "replication_factor",  # copies of each key
            "ring_members",  # nodes that own keys
            "live_members",  # of which are live now
        ),
    ),
    InfoSection(
        "cpu",
        "CPU",
        ("used_cpu_sys", "used_cpu_user", "used_cpu_sys_children", "used_cpu_user_children"),
    ),
    # One field per command:
    # cmdstat_get:calls=N,usec=N,usec_per_call=F,rejected_calls=N,failed_calls=N
    InfoSection("commandstats", "Commandstats", (), default=False),
    # One field per error code: errorstat_ERR:count=N
    InfoSection("errorstats", "Errorstats", ()),
    InfoSection("cluster", "Cluster", ("cluster_enabled",)),
    # db0:keys=N,expires=E,avg_ttl=0 when the node holds keys (see keyspace_fields)
    InfoSection("keyspace", "Keyspace", ()),
    InfoSection(
        "a3redis",
        "A3redis",
        (
            "node_id",
            "cluster_name",
            "read_consistency",  # the default read level of a connection
            "write_consistency",  # the default write level
            "fsync",
            "grpc_port",
            "gossip_port",
        ),
    ),
)

_BY_NAME = {section.name: section for section in SECTIONS}
# As in Redis, cmdstat_ fields carry the command's name (cmdstat_a3.consistency) and
# errorstat_ fields the error code as the reply has it (errorstat_ERR).
_ERROR_CODE_FORM = r"[A-Z][A-Z0-9_]{0,31}"
# An error reply's code (its first word) that errorstats counts apart.
ERROR_CODE = re.compile(_ERROR_CODE_FORM)
_FIELD_NAME = re.compile(rf"[a-z0-9_]+|cmdstat_[a-z0-9][a-z0-9._|-]*|errorstat_{_ERROR_CODE_FORM}")
_COMMAND_NAME = re.compile(r"[a-z0-9][a-z0-9._|-]*")
_CONFIG_WILDCARDS = re.compile(rb"[\[*?]")
# What string2ll takes: an optional '-' and digits, no leading zero, no '+' or spaces.
_DECIMAL = re.compile(rb"0|-?[1-9][0-9]{0,18}")


def human_bytes(count: int) -> str:
    """`count` bytes as Redis writes them in INFO's `*_human` fields: `512B`,
    `1.50K`, `2.00M`... (powers of 1024, two decimals)."""
    if count < 1024:
        return f"{count}B"
    size = float(count)
    for unit in "KMGTP":
        size /= 1024
        if size < 1024 or unit == "P":
            break
    return f"{size:.2f}{unit}"


def memory_fields(used: int, peak: int, dataset: int) -> dict[str, InfoValue]:
    """The memory section of a node whose process holds `used` bytes now and held
    `peak` at most, `dataset` of them the records it stores (their encoded size).
    Python's allocator keeps no running total as Redis's does, so `used_memory` is
    the resident size, as `used_memory_rss` is; there is no `maxmemory` (0: no
    limit) and nothing is evicted."""
    peak = max(peak, used)
    return {
        "used_memory": used,
        "used_memory_human": human_bytes(used),
        "used_memory_rss": used,
        "used_memory_rss_human": human_bytes(used),
        "used_memory_peak": peak,
        "used_memory_peak_human": human_bytes(peak),
        "used_memory_dataset": dataset,
        "maxmemory": 0,
        "maxmemory_human": "0B",
        "maxmemory_policy": "noeviction",
        "mem_allocator": "pymalloc",
    }


def command_stat_fields(
    calls: Mapping[str, tuple[int, int, float]],
) -> dict[str, InfoValue]:
    """The commandstats section from, per command (lower case), its calls, the calls
    that answered an error, and the seconds they took."""
    fields: dict[str, InfoValue] = {}
    for name, (count, failed, seconds) in sorted(calls.items()):
        if not count or not _COMMAND_NAME.fullmatch(name):
            continue
        usec = round(seconds * 1_000_000)
        fields[f"cmdstat_{name}"] = (
            f"calls={count},usec={usec},usec_per_call={usec / count:.2f},"
            f"rejected_calls=0,failed_calls={failed}"
        )
    return fields


def error_stat_fields(errors: Mapping[str, int]) -> dict[str, InfoValue]:
    """The errorstats section from the count of error replies per error code (the
    reply's first word: `ERR`, `NOAUTH`...)."""
    return {
        f"errorstat_{code}": f"count={count}"
        for code, count in sorted(errors.items())
        if count and ERROR_CODE.fullmatch(code)
    }


def keyspace_fields(keys: int, expires: int = 0) -> dict[str, InfoValue]:
    """The keyspace section for a node holding `keys` keys, `expires` of them with an
    expiry (as Redis, counted until they are reclaimed); Redis leaves out an empty db0."""
    return {"db0": f"keys={keys},expires={expires},avg_ttl=0"} if keys else {}


def selected_sections(arguments: Sequence[bytes], available: Sequence[str]) -> list[str]:
    """The sections INFO `arguments` asks for, among those `available`, in the order shown."""
    asked = {argument.decode("latin-1").lower() for argument in arguments}
    everything = "everything" in asked
    every_known = everything or "all" in asked
    with_defaults = not arguments or "default" in asked
    chosen = []
    for name in [section.name for section in SECTIONS] + [
        name for name in available if name not in _BY_NAME
    ]:
        if name not in available:
            continue
        known = _BY_NAME.get(name)
        if (
            name in asked
            or everything
            or (known is not None and (every_known or (with_defaults and known.default)))
        ):
            chosen.append(name)
    return chosen


def _value(value: InfoValue) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value).replace("\r", " ").replace("\n", " ")


def _title(name: str) -> str:
    known = _BY_NAME.get(name)
    return known.title if known is not None else name.capitalize()


def render_info(facts: Mapping[str, Mapping[str, InfoValue]], arguments: Sequence[bytes]) -> Reply:
    """INFO's reply: the sections `arguments` select from `facts`, as Redis writes them."""
    blocks = []
    for name in selected_sections(arguments, list(facts)):
        lines = [f"# {_title(name)}\r\n"]
        for field, value in facts[name].items():
            if not _FIELD_NAME.fullmatch(field):
                raise ValueError(f"INFO field names are [a-z0-9_]+: {field!r}")
            lines.append(f"{field}:{_value(value)}\r\n")
        blocks.append("".join(lines))
    return Verbatim("\r\n".join(blocks).encode())


def config_get(settings: Mapping[str, str], patterns: Sequence[bytes]) -> Reply:
    """CONFIG GET's reply: every setting (name -> value) one of `patterns` names or matches."""
    by_folded_name = {name.lower().encode(): name for name in settings}
    answered: dict[bytes, bytes] = {}  # folded name -> the name as answered
    reply: dict[Reply, Reply] = {}
    for pattern in patterns:
        if _CONFIG_WILDCARDS.search(pattern) is None:
            folded = pattern.lower()
            name = by_folded_name.get(folded)
            if name is not None and folded not in answered:
                answered[folded] = pattern
                reply[pattern] = settings[name].encode()
            continue
        try:
            glob = Glob(pattern, nocase=True)
        except PatternTooLongError as refused:
            return error(str(refused))
        for folded, name in by_folded_name.items():
            if folded not in answered and glob.match(name.encode()):
                answered[folded] = name.encode()
                reply[name.encode()] = settings[name].encode()
    return reply


@dataclass(frozen=True, slots=True)
class RuntimeSetting:
    """A setting CONFIG SET may change while the node runs: an integer in a range."""

    low: int
    high: int


def config_set(
    pairs: Sequence[tuple[bytes, bytes]],
    runtime: Mapping[str, RuntimeSetting],
    known: Collection[str],
) -> dict[str, int] | ErrorReply:
    """CONFIG SET's new values (name -> value) for `pairs`, or Redis's error; nothing
    is set unless every pair can be. `runtime` holds the settings that may change
    while the node runs; the other `known` names are fixed until a restart (Redis's
    immutable configs). Names are case-insensitive; a value is a decimal integer."""
    folded_known = {name.lower() for name in known} | set(runtime)
    chosen: dict[str, bytes] = {}
    for parameter, value in pairs:
        name = parameter.decode("latin-1").lower()
        if name not in folded_known:
            return ErrorReply(
                "ERR Unknown option or number of arguments for CONFIG SET - "
                f"'{quoted_argument(parameter)}'"
            )
        if name not in runtime:
            return _set_failed(parameter, "can't set immutable config")
        if name in chosen:
            return _set_failed(parameter, "duplicate parameter")
        chosen[name] = value
    values: dict[str, int] = {}
    for name, value in chosen.items():
        setting = runtime[name]
        if not _DECIMAL.fullmatch(value):
            return _set_failed(name.encode(), "argument couldn't be parsed into an integer")
        number = int(value)
        if not setting.low <= number <= setting.high:
            return _set_failed(
                name.encode(),
                f"argument must be between {setting.low} and {setting.high} inclusive",
            )
        values[name] = number
    return values


def _set_failed(parameter: bytes, why: str) -> ErrorReply:
    return ErrorReply(
        "ERR CONFIG SET failed (possibly related to argument "
        f"'{quoted_argument(parameter)}') - {why}"
    )
