"""When the store's log reaches the disk (FSYNC): a setting, kept apart from the store so
that reading the configuration does not load the storage engine."""

from __future__ import annotations

import enum


class FsyncPolicy(enum.Enum):
    ALWAYS = "always"  # acknowledge after fdatasync (group commit)
    EVERYSEC = "everysec"  # acknowledge after write(); fdatasync once a second
    NO = "no"  # acknowledge after write(); the OS decides when to flush
