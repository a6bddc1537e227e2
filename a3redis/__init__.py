"""a3redis: a leaderless, Dynamo-style replicated key-value store on trio."""

__version__ = "0.1.0"
