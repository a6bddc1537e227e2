"""Durable storage: the record log, snapshots and the store that owns them."""
