"""The shells that carry out the core's decisions between nodes.

The node's coordinator (keyspace), its view of the ring and peers (topology),
the batched peer links (peers), hinted handoff, ownership transfer,
anti-entropy and gossip. They move messages, keep time and supervise;
a3redis.core decides. Nothing here knows a wire format.
"""
