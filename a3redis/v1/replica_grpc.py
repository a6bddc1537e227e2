import purerpc
import a3redis.v1.replica_pb2 as a3redis_dot_v1_dot_replica__pb2
import a3redis.v1.kv_pb2 as a3redis_dot_v1_dot_kv__pb2


class ReplicaServicer(purerpc.Servicer):
    async def Apply(self, input_message):
        raise NotImplementedError()

    async def Read(self, input_message):
        raise NotImplementedError()

    async def LocalScan(self, input_message):
        raise NotImplementedError()

    async def Tree(self, input_message):
        raise NotImplementedError()

    async def Chunks(self, input_message):
        raise NotImplementedError()

    async def Entries(self, input_message):
        raise NotImplementedError()

    async def Stream(self, input_message):
        raise NotImplementedError()

    @property
    def service(self) -> purerpc.Service:
        service_obj = purerpc.Service(
            "a3redis.v1.Replica"
        )
        service_obj.add_method(
            "Apply",
            self.Apply,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.ApplyRequest,
                a3redis_dot_v1_dot_replica__pb2.ApplyResponse,
            )
        )
        service_obj.add_method(
            "Read",
            self.Read,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.ReadRequest,
                a3redis_dot_v1_dot_replica__pb2.ReadResponse,
            )
        )
        service_obj.add_method(
            "LocalScan",
            self.LocalScan,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.LocalScanRequest,
                a3redis_dot_v1_dot_replica__pb2.LocalScanResponse,
            )
        )
        service_obj.add_method(
            "Tree",
            self.Tree,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.TreeRequest,
                a3redis_dot_v1_dot_replica__pb2.TreeResponse,
            )
        )
        service_obj.add_method(
            "Chunks",
            self.Chunks,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.ChunksRequest,
                a3redis_dot_v1_dot_replica__pb2.ChunksResponse,
            )
        )
        service_obj.add_method(
            "Entries",
            self.Entries,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.EntriesRequest,
                a3redis_dot_v1_dot_replica__pb2.EntriesResponse,
            )
        )
        service_obj.add_method(
            "Stream",
            self.Stream,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.StreamRequest,
                a3redis_dot_v1_dot_replica__pb2.StreamResponse,
            )
        )
        return service_obj


class ReplicaStub:
    def __init__(self, channel):
        self._client = purerpc.Client(
            "a3redis.v1.Replica",
            channel
        )
        self.Apply = self._client.get_method_stub(
            "Apply",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.ApplyRequest,
                a3redis_dot_v1_dot_replica__pb2.ApplyResponse,
            )
        )
        self.Read = self._client.get_method_stub(
            "Read",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.ReadRequest,
                a3redis_dot_v1_dot_replica__pb2.ReadResponse,
            )
        )
        self.LocalScan = self._client.get_method_stub(
            "LocalScan",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.LocalScanRequest,
                a3redis_dot_v1_dot_replica__pb2.LocalScanResponse,
            )
        )
        self.Tree = self._client.get_method_stub(
            "Tree",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.TreeRequest,
                a3redis_dot_v1_dot_replica__pb2.TreeResponse,
            )
        )
        self.Chunks = self._client.get_method_stub(
            "Chunks",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.ChunksRequest,
                a3redis_dot_v1_dot_replica__pb2.ChunksResponse,
            )
        )
        self.Entries = self._client.get_method_stub(
            "Entries",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.EntriesRequest,
                a3redis_dot_v1_dot_replica__pb2.EntriesResponse,
            )
        )
        self.Stream = self._client.get_method_stub(
            "Stream",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_replica__pb2.StreamRequest,
                a3redis_dot_v1_dot_replica__pb2.StreamResponse,
            )
        )