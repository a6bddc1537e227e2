from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSISTENCY_DEFAULT: _ClassVar[Consistency]
    CONSISTENCY_ONE: _ClassVar[Consistency]
    CONSISTENCY_QUORUM: _ClassVar[Consistency]
    CONSISTENCY_ALL: _ClassVar[Consistency]
    CONSISTENCY_LOCAL: _ClassVar[Consistency]

class ExpireCondition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPIRE_ALWAYS: _ClassVar[ExpireCondition]
    EXPIRE_NX: _ClassVar[ExpireCondition]
    EXPIRE_XX: _ClassVar[ExpireCondition]
    EXPIRE_GT: _ClassVar[ExpireCondition]
    EXPIRE_LT: _ClassVar[ExpireCondition]
CONSISTENCY_DEFAULT: Consistency
CONSISTENCY_ONE: Consistency
CONSISTENCY_QUORUM: Consistency
CONSISTENCY_ALL: Consistency
CONSISTENCY_LOCAL: Consistency
EXPIRE_ALWAYS: ExpireCondition
EXPIRE_NX: ExpireCondition
EXPIRE_XX: ExpireCondition
EXPIRE_GT: ExpireCondition
EXPIRE_LT: ExpireCondition

class Version(_message.Message):
    __slots__ = ("wall_ms", "logical", "node_id")
    WALL_MS_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    wall_ms: int
    logical: int
    node_id: str
    def __init__(self, wall_ms: _Optional[int] = ..., logical: _Optional[int] = ..., node_id: _Optional[str] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("key", "value", "consistency", "after", "ttl_ms", "expires_at_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    consistency: Consistency
    after: Version
    ttl_ms: int
    expires_at_ms: int
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., consistency: _Optional[_Union[Consistency, str]] = ..., after: _Optional[_Union[Version, _Mapping]] = ..., ttl_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: Version
    def __init__(self, version: _Optional[_Union[Version, _Mapping]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key", "consistency")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    consistency: Consistency
    def __init__(self, key: _Optional[bytes] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("found", "value", "version", "expires_at_ms")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    version: Version
    expires_at_ms: int
    def __init__(self, found: _Optional[bool] = ..., value: _Optional[bytes] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("key", "consistency", "after")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    consistency: Consistency
    after: Version
    def __init__(self, key: _Optional[bytes] = ..., consistency: _Optional[_Union[Consistency, str]] = ..., after: _Optional[_Union[Version, _Mapping]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: Version
    def __init__(self, version: _Optional[_Union[Version, _Mapping]] = ...) -> None: ...

class ScanRequest(_message.Message):
    __slots__ = ("start", "end", "prefix", "limit", "consistency")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    start: bytes
    end: bytes
    prefix: bytes
    limit: int
    consistency: Consistency
    def __init__(self, start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., prefix: _Optional[bytes] = ..., limit: _Optional[int] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("key", "value", "version", "expires_at_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    version: Version
    expires_at_ms: int
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., version: _Optional[_Union[Version, _Mapping]] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class KeyValuePair(_message.Message):
    __slots__ = ("key", "value", "ttl_ms", "expires_at_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    ttl_ms: int
    expires_at_ms: int
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., ttl_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class BatchPutRequest(_message.Message):
    __slots__ = ("pairs", "consistency", "after")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[KeyValuePair]
    consistency: Consistency
    after: Version
    def __init__(self, pairs: _Optional[_Iterable[_Union[KeyValuePair, _Mapping]]] = ..., consistency: _Optional[_Union[Consistency, str]] = ..., after: _Optional[_Union[Version, _Mapping]] = ...) -> None: ...

class BatchPutResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Version]
    def __init__(self, versions: _Optional[_Iterable[_Union[Version, _Mapping]]] = ...) -> None: ...

class BatchGetRequest(_message.Message):
    __slots__ = ("keys", "consistency")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    consistency: Consistency
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class BatchGetResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GetResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[GetResponse, _Mapping]]] = ...) -> None: ...

class ExpireRequest(_message.Message):
    __slots__ = ("key", "ttl_ms", "expires_at_ms", "condition", "consistency")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    ttl_ms: int
    expires_at_ms: int
    condition: ExpireCondition
    consistency: Consistency
    def __init__(self, key: _Optional[bytes] = ..., ttl_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., condition: _Optional[_Union[ExpireCondition, str]] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class ExpireResponse(_message.Message):
    __slots__ = ("set",)
    SET_FIELD_NUMBER: _ClassVar[int]
    set: bool
    def __init__(self, set: _Optional[bool] = ...) -> None: ...

class PersistRequest(_message.Message):
    __slots__ = ("key", "consistency")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    consistency: Consistency
    def __init__(self, key: _Optional[bytes] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class PersistResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("node_id", "grpc_address", "gossip_address", "cluster_name", "replication_factor", "version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GOSSIP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    grpc_address: str
    gossip_address: str
    cluster_name: str
    replication_factor: int
    version: str
    def __init__(self, node_id: _Optional[str] = ..., grpc_address: _Optional[str] = ..., gossip_address: _Optional[str] = ..., cluster_name: _Optional[str] = ..., replication_factor: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class TopologyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Member(_message.Message):
    __slots__ = ("node_id", "grpc_address", "status")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    grpc_address: str
    status: str
    def __init__(self, node_id: _Optional[str] = ..., grpc_address: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class TopologyResponse(_message.Message):
    __slots__ = ("members", "replication_factor", "partitions")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    replication_factor: int
    partitions: int
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., replication_factor: _Optional[int] = ..., partitions: _Optional[int] = ...) -> None: ...

class RepairRequest(_message.Message):
    __slots__ = ("wait",)
    WAIT_FIELD_NUMBER: _ClassVar[int]
    wait: bool
    def __init__(self, wait: _Optional[bool] = ...) -> None: ...

class PeerRepair(_message.Message):
    __slots__ = ("peer", "partitions", "tree_nodes", "leaves", "keys_pulled", "keys_pushed", "bytes_sent", "bytes_received", "seconds", "skipped", "calls")
    PEER_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    TREE_NODES_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    KEYS_PULLED_FIELD_NUMBER: _ClassVar[int]
    KEYS_PUSHED_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    peer: str
    partitions: int
    tree_nodes: int
    leaves: int
    keys_pulled: int
    keys_pushed: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    skipped: str
    calls: int
    def __init__(self, peer: _Optional[str] = ..., partitions: _Optional[int] = ..., tree_nodes: _Optional[int] = ..., leaves: _Optional[int] = ..., keys_pulled: _Optional[int] = ..., keys_pushed: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., bytes_received: _Optional[int] = ..., seconds: _Optional[float] = ..., skipped: _Optional[str] = ..., calls: _Optional[int] = ...) -> None: ...

class RepairResponse(_message.Message):
    __slots__ = ("started", "peers")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    started: bool
    peers: _containers.RepeatedCompositeFieldContainer[PeerRepair]
    def __init__(self, started: _Optional[bool] = ..., peers: _Optional[_Iterable[_Union[PeerRepair, _Mapping]]] = ...) -> None: ...
