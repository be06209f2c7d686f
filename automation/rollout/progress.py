"""Showing a rollout as it runs: rich live progress for a person, JSON lines for machines.

Both are ``on_event`` callbacks for :func:`automation.rollout.runner.run_rollout`;
events are plain dicts with an ``event`` key (``start``, ``cycle``,
``rollback``, ``resumed``, ``launch_failure``, ``blocked``, ``failed``,
``finish``, ...). A person sees the bar and one status line per cycle (what the
rollout waits for: a replacement to be proven, Jobs, a PodDisruptionBudget,
failing launches), and a logged line for each event that changes the story.
"""

from __future__ import annotations

import json
import sys
from typing import Callable, Optional, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn


def json_lines(stream: TextIO = sys.stdout) -> Callable[[dict], None]:
    """One JSON object per event, one per line."""
    def emit(event: dict) -> None:
        stream.write(json.dumps(event, sort_keys=True, default=str) + "\n")
        stream.flush()
    return emit


class LiveProgress:
    """A rich progress bar of old nodes replaced, with the state of the fleet.

    Use as a context manager; pass the instance as ``on_event``.
    """

    def __init__(self, console: Optional[Console] = None, label: str = "rollout"):
        self.console = console or Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), console=self.console, transient=False)
        self.task = self.progress.add_task(label, total=None, status="starting")
        self.total_old: Optional[int] = None

    def __enter__(self) -> "LiveProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "cycle":
            old = int(event.get("old_nodes", 0))
            if self.total_old is None or old > self.total_old:
                self.total_old = old
                self.progress.update(self.task, total=old)
            status = (f"t={event.get('t', 0):.0f}s new ready {event.get('new_ready', 0)}/{event.get('new_nodes', 0)} "
                      f"Jobs blocking {event.get('blocking_jobs', 0)} pending {event.get('pending_jobs', 0)} "
                      f"[{event.get('phase', '')}] {event.get('waiting_for', '')}")
            self.progress.update(self.task, completed=(self.total_old or 0) - old, status=status)
        elif kind in ("rollback", "resumed", "locked", "error", "launch_failure", "blocked", "failed",
                      "rolled_back_earlier", "events_unavailable", "crash", "target_moved", "command_failed",
                      "another_rollout"):
            self.console.log(f"{kind.replace('_', ' ')}: {event.get('reason', event)}")
        elif kind == "finish":
            self.progress.update(self.task, status=f"{event.get('outcome')}")
