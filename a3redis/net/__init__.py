"""Transport: addresses, gRPC channels, the purerpc server and its stream
plumbing, and the h2/hpack tuning. Knows nothing of keys or replicas."""
