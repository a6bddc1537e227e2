"""Front ends: the gRPC KeyValue and Replica services, the HTTP app (gossip,
membership, health, metrics, status page) and the protobuf converters.

Rules: each front end only translates: it decodes its wire format, calls the
cluster layer in core types, and maps a3redis.core.errors.ErrorKind to its
own codes in one table. Generated protobuf code is used here and in the
client, nowhere below.
"""
