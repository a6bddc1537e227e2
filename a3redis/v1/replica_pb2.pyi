from a3redis.v1 import kv_pb2 as _kv_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApplyOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPLY_STORED: _ClassVar[ApplyOutcome]
    APPLY_DUPLICATE: _ClassVar[ApplyOutcome]
    APPLY_SUPERSEDED: _ClassVar[ApplyOutcome]
    APPLY_REJECTED: _ClassVar[ApplyOutcome]
APPLY_STORED: ApplyOutcome
APPLY_DUPLICATE: ApplyOutcome
APPLY_SUPERSEDED: ApplyOutcome
APPLY_REJECTED: ApplyOutcome

class Record(_message.Message):
    __slots__ = ("key", "value", "tombstone", "version", "expires_at_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    tombstone: bool
    version: _kv_pb2.Version
    expires_at_ms: int
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., tombstone: _Optional[bool] = ..., version: _Optional[_Union[_kv_pb2.Version, _Mapping]] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("coordinator", "records", "record_payloads")
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    RECORD_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    coordinator: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    record_payloads: bytes
    def __init__(self, coordinator: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., record_payloads: _Optional[bytes] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("outcomes", "takes_payloads")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    TAKES_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedScalarFieldContainer[ApplyOutcome]
    takes_payloads: bool
    def __init__(self, outcomes: _Optional[_Iterable[_Union[ApplyOutcome, str]]] = ..., takes_payloads: _Optional[bool] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("keys", "payloads")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    payloads: bool
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., payloads: _Optional[bool] = ...) -> None: ...

class ReadResult(_message.Message):
    __slots__ = ("present", "record")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    present: bool
    record: Record
    def __init__(self, present: _Optional[bool] = ..., record: _Optional[_Union[Record, _Mapping]] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("results", "record_payloads", "missing")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    RECORD_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReadResult]
    record_payloads: bytes
    missing: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, results: _Optional[_Iterable[_Union[ReadResult, _Mapping]]] = ..., record_payloads: _Optional[bytes] = ..., missing: _Optional[_Iterable[int]] = ...) -> None: ...

class LocalScanRequest(_message.Message):
    __slots__ = ("start", "end", "prefix", "limit")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    start: bytes
    end: bytes
    prefix: bytes
    limit: int
    def __init__(self, start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., prefix: _Optional[bytes] = ..., limit: _Optional[int] = ...) -> None: ...

class LocalScanResponse(_message.Message):
    __slots__ = ("records", "more")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    more: bool
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class TreeRequest(_message.Message):
    __slots__ = ("requester", "shared_digest", "level", "indexes", "fanout", "chunks")
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    SHARED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    FANOUT_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    requester: str
    shared_digest: bytes
    level: int
    indexes: _containers.RepeatedScalarFieldContainer[int]
    fanout: int
    chunks: int
    def __init__(self, requester: _Optional[str] = ..., shared_digest: _Optional[bytes] = ..., level: _Optional[int] = ..., indexes: _Optional[_Iterable[int]] = ..., fanout: _Optional[int] = ..., chunks: _Optional[int] = ...) -> None: ...

class TreeResponse(_message.Message):
    __slots__ = ("same_ring", "hashes", "building")
    SAME_RING_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    BUILDING_FIELD_NUMBER: _ClassVar[int]
    same_ring: bool
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    building: bool
    def __init__(self, same_ring: _Optional[bool] = ..., hashes: _Optional[_Iterable[bytes]] = ..., building: _Optional[bool] = ...) -> None: ...

class ChunksRequest(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, partitions: _Optional[_Iterable[int]] = ...) -> None: ...

class ChunksResponse(_message.Message):
    __slots__ = ("hashes",)
    HASHES_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Leaf(_message.Message):
    __slots__ = ("partition", "chunk")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    partition: int
    chunk: int
    def __init__(self, partition: _Optional[int] = ..., chunk: _Optional[int] = ...) -> None: ...

class EntriesRequest(_message.Message):
    __slots__ = ("leaves",)
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    leaves: _containers.RepeatedCompositeFieldContainer[Leaf]
    def __init__(self, leaves: _Optional[_Iterable[_Union[Leaf, _Mapping]]] = ...) -> None: ...

class EntryVersion(_message.Message):
    __slots__ = ("key", "version", "tombstone", "expires_at_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    version: _kv_pb2.Version
    tombstone: bool
    expires_at_ms: int
    def __init__(self, key: _Optional[bytes] = ..., version: _Optional[_Union[_kv_pb2.Version, _Mapping]] = ..., tombstone: _Optional[bool] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class EntriesResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[EntryVersion]
    def __init__(self, entries: _Optional[_Iterable[_Union[EntryVersion, _Mapping]]] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("partitions", "start_key", "max_records", "ring_partitions", "payloads")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    START_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    RING_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    start_key: bytes
    max_records: int
    ring_partitions: int
    payloads: bool
    def __init__(self, partitions: _Optional[_Iterable[int]] = ..., start_key: _Optional[bytes] = ..., max_records: _Optional[int] = ..., ring_partitions: _Optional[int] = ..., payloads: _Optional[bool] = ...) -> None: ...

class StreamCursor(_message.Message):
    __slots__ = ("partition", "start_key")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    START_KEY_FIELD_NUMBER: _ClassVar[int]
    partition: int
    start_key: bytes
    def __init__(self, partition: _Optional[int] = ..., start_key: _Optional[bytes] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("records", "resume", "building", "record_payloads")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    BUILDING_FIELD_NUMBER: _ClassVar[int]
    RECORD_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    resume: StreamCursor
    building: bool
    record_payloads: bytes
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., resume: _Optional[_Union[StreamCursor, _Mapping]] = ..., building: _Optional[bool] = ..., record_payloads: _Optional[bytes] = ...) -> None: ...
