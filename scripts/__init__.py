"""Developer scripts: the test command (`./scripts/test`) and its helpers.

Rules: standard library only (they run with the machine's python3, before any virtualenv
exists); each is a module here so that the tests and mypy see it under one name.
"""
