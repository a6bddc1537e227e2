"""The sans-IO core: plain synchronous Python that decides, never waits.

Rules for every module in this package: no import of trio, purerpc, quart,
hypercorn or the generated protobuf code; no reads of the clock, the
environment or the file system; time and randomness arrive as arguments.
A test enforces the import rule.
"""
