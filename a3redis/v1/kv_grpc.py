import purerpc
import a3redis.v1.kv_pb2 as a3redis_dot_v1_dot_kv__pb2


class KeyValueServicer(purerpc.Servicer):
    async def Put(self, input_message):
        raise NotImplementedError()

    async def Get(self, input_message):
        raise NotImplementedError()

    async def Delete(self, input_message):
        raise NotImplementedError()

    async def Scan(self, input_message):
        raise NotImplementedError()

    async def BatchPut(self, input_message):
        raise NotImplementedError()

    async def BatchGet(self, input_message):
        raise NotImplementedError()

    async def Expire(self, input_message):
        raise NotImplementedError()

    async def Persist(self, input_message):
        raise NotImplementedError()

    async def Describe(self, input_message):
        raise NotImplementedError()

    async def Topology(self, input_message):
        raise NotImplementedError()

    async def Repair(self, input_message):
        raise NotImplementedError()

    @property
    def service(self) -> purerpc.Service:
        service_obj = purerpc.Service(
            "a3redis.v1.KeyValue"
        )
        service_obj.add_method(
            "Put",
            self.Put,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.PutRequest,
                a3redis_dot_v1_dot_kv__pb2.PutResponse,
            )
        )
        service_obj.add_method(
            "Get",
            self.Get,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.GetRequest,
                a3redis_dot_v1_dot_kv__pb2.GetResponse,
            )
        )
        service_obj.add_method(
            "Delete",
            self.Delete,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.DeleteRequest,
                a3redis_dot_v1_dot_kv__pb2.DeleteResponse,
            )
        )
        service_obj.add_method(
            "Scan",
            self.Scan,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_STREAM,
                a3redis_dot_v1_dot_kv__pb2.ScanRequest,
                a3redis_dot_v1_dot_kv__pb2.Entry,
            )
        )
        service_obj.add_method(
            "BatchPut",
            self.BatchPut,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.BatchPutRequest,
                a3redis_dot_v1_dot_kv__pb2.BatchPutResponse,
            )
        )
        service_obj.add_method(
            "BatchGet",
            self.BatchGet,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.BatchGetRequest,
                a3redis_dot_v1_dot_kv__pb2.BatchGetResponse,
            )
        )
        service_obj.add_method(
            "Expire",
            self.Expire,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.ExpireRequest,
                a3redis_dot_v1_dot_kv__pb2.ExpireResponse,
            )
        )
        service_obj.add_method(
            "Persist",
            self.Persist,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.PersistRequest,
                a3redis_dot_v1_dot_kv__pb2.PersistResponse,
            )
        )
        service_obj.add_method(
            "Describe",
            self.Describe,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.DescribeRequest,
                a3redis_dot_v1_dot_kv__pb2.DescribeResponse,
            )
        )
        service_obj.add_method(
            "Topology",
            self.Topology,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.TopologyRequest,
                a3redis_dot_v1_dot_kv__pb2.TopologyResponse,
            )
        )
        service_obj.add_method(
            "Repair",
            self.Repair,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.RepairRequest,
                a3redis_dot_v1_dot_kv__pb2.RepairResponse,
            )
        )
        return service_obj


class KeyValueStub:
    def __init__(self, channel):
        self._client = purerpc.Client(
            "a3redis.v1.KeyValue",
            channel
        )
        self.Put = self._client.get_method_stub(
            "Put",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.PutRequest,
                a3redis_dot_v1_dot_kv__pb2.PutResponse,
            )
        )
        self.Get = self._client.get_method_stub(
            "Get",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.GetRequest,
                a3redis_dot_v1_dot_kv__pb2.GetResponse,
            )
        )
        self.Delete = self._client.get_method_stub(
            "Delete",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.DeleteRequest,
                a3redis_dot_v1_dot_kv__pb2.DeleteResponse,
            )
        )
        self.Scan = self._client.get_method_stub(
            "Scan",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_STREAM,
                a3redis_dot_v1_dot_kv__pb2.ScanRequest,
                a3redis_dot_v1_dot_kv__pb2.Entry,
            )
        )
        self.BatchPut = self._client.get_method_stub(
            "BatchPut",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.BatchPutRequest,
                a3redis_dot_v1_dot_kv__pb2.BatchPutResponse,
            )
        )
        self.BatchGet = self._client.get_method_stub(
            "BatchGet",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.BatchGetRequest,
                a3redis_dot_v1_dot_kv__pb2.BatchGetResponse,
            )
        )
        self.Expire = self._client.get_method_stub(
            "Expire",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.ExpireRequest,
                a3redis_dot_v1_dot_kv__pb2.ExpireResponse,
            )
        )
        self.Persist = self._client.get_method_stub(
            "Persist",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.PersistRequest,
                a3redis_dot_v1_dot_kv__pb2.PersistResponse,
            )
        )
        self.Describe = self._client.get_method_stub(
            "Describe",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.DescribeRequest,
                a3redis_dot_v1_dot_kv__pb2.DescribeResponse,
            )
        )
        self.Topology = self._client.get_method_stub(
            "Topology",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.TopologyRequest,
                a3redis_dot_v1_dot_kv__pb2.TopologyResponse,
            )
        )
        self.Repair = self._client.get_method_stub(
            "Repair",
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                a3redis_dot_v1_dot_kv__pb2.RepairRequest,
                a3redis_dot_v1_dot_kv__pb2.RepairResponse,
            )
        )