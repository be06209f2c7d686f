"""SIGTERM as an exception: a CI cancel or ``kill`` stops a long command where it is, cleanly.

The default SIGTERM action kills the process on the spot: no ``finally`` runs,
so a bake leaks its builder and a rotation cannot say "rerun to continue".
:func:`sigterm_raises` turns SIGTERM into :class:`Interrupted` (a
``BaseException``, like ``KeyboardInterrupt``, so no ``except Exception`` on the
way up treats it as an ordinary failure and starts undoing things). The node
replacement installs its own handler while it runs and puts this one back.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Interrupted(BaseException):
    """SIGTERM (or Ctrl-C): stop where we are; every intent stays so a rerun continues."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs (main thread only), SIGTERM raises :class:`Interrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Interrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
