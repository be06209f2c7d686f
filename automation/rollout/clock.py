"""The real :class:`~automation.rollout.ports.Clock`.

``now()`` is wall-clock epoch seconds (``time.time``), not ``time.monotonic``:
the rollout persists ``started_at``/``deadline_at`` in its intent and compares
them with Kubernetes timestamps (node and pod ``creationTimestamp``), and a
rerun after a crash — maybe on another machine — must read the same deadline.
Durations measured inside one process (``elapsed``) use ``time.monotonic`` so
a wall-clock step cannot stretch or shrink them.
"""

from __future__ import annotations

import time


class SystemClock:
    """Wall time for persisted instants, monotonic time for in-process durations."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def elapsed(self) -> float:
        """Seconds since this clock was made, immune to wall-clock steps."""
        return time.monotonic() - self._started
