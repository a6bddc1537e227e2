"""Clients written by others, each run as its own process (tests/node/test_stock_clients.py)."""
