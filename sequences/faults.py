"""Crash points for fault tests: `SEQUENCES_CRASH_AT=mailer.before_smtp` makes the process kill
itself with SIGKILL when it reaches that point, so a test can prove what survives a crash exactly
there. Unset in production; reaching a point costs one set lookup."""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(filter(None, os.environ.get("SEQUENCES_CRASH_AT", "").split(",")))


def crash_point(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
