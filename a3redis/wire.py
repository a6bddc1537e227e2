"""Conversion between the generated protobuf messages and core types.

Rules: the only module that knows both the protobuf classes and the core
types; it converts, it does not decide. Anything a client can get wrong in a
message (an enum number this server does not know) is an InvalidRequestError.
"""

from __future__ import annotations

from typing import cast

from a3redis.core.consistency import Consistency
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.core.validation import InvalidRequestError
from a3redis.v1 import kv_pb2 as pb
from a3redis.v1 import replica_pb2 as rpb

CONSISTENCY_DEFAULT = pb.CONSISTENCY_DEFAULT


def consistency_from_pb(value: int) -> Consistency | None:
    """The level a request asks for; None asks for the node's default."""
    if value == pb.CONSISTENCY_DEFAULT:
        return None
    try:
        return Consistency(value)
    except ValueError:
        names = ", ".join(pb.Consistency.keys())
        raise InvalidRequestError(
            f"unknown consistency level {value}; expected one of {names}"
        ) from None


def consistency_to_pb(level: Consistency | None) -> pb.Consistency:
    # The core enum shares the protobuf numbering; 0 asks for the server's default.
    return pb.CONSISTENCY_DEFAULT if level is None else cast(pb.Consistency, level.value)


def version_to_pb(version: Version) -> pb.Version:
    return pb.Version(wall_ms=version.wall_ms, logical=version.logical, node_id=version.node_id)


def version_from_pb(message: pb.Version) -> Version:
    return Version(message.wall_ms, message.logical, message.node_id)


def get_response(record: Record | None) -> pb.GetResponse:
    if record is None:
        return pb.GetResponse(found=False)
    if record.value is None:
        return pb.GetResponse(found=False, version=version_to_pb(record.version))
    return pb.GetResponse(found=True, value=record.value, version=version_to_pb(record.version))


def entry(record: Record) -> pb.Entry:
    return pb.Entry(
        key=record.key, value=record.value or b"", version=version_to_pb(record.version)
    )


def record_to_pb(record: Record) -> rpb.Record:
    return rpb.Record(
        key=record.key,
        value=record.value or b"",
        tombstone=record.value is None,
        version=version_to_pb(record.version),
    )


def record_from_pb(message: rpb.Record) -> Record:
    value = None if message.tombstone else message.value
    return Record(message.key, value, version_from_pb(message.version))
