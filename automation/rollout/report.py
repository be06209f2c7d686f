"""The rollout's final report: what happened, in numbers a person can check."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from automation.errors import EXIT_FAILED, EXIT_OK

#: What a rollout can end as, and the exit code ``replace`` (and ``simulate``) gives each.
#: ``blocked``: past the deadline, something kiln will not force (a PodDisruptionBudget; in
#: a rollback, a Job) keeps nodes from draining; the intent stays and a rerun continues,
#: like after an interruption. ``rolled_back`` is recorded on the groups: a rerun reports
#: it again until the target version changes.
OUTCOMES = ("completed", "rolled_back", "blocked", "failed", "dry_run")
EXIT_CODES = {"completed": EXIT_OK, "dry_run": EXIT_OK, "rolled_back": EXIT_FAILED, "blocked": EXIT_FAILED,
              "failed": EXIT_FAILED}


@dataclass
class RolloutReport:
    outcome: str = "failed"                 # completed | rolled_back | blocked | failed | dry_run
    reason: str = ""
    cluster: str = ""
    strategy: str = "default"
    rollout_id: Optional[str] = None
    resumed: bool = False                   # this run continued a rollout found in the cluster
    started_at: float = 0.0                 # of the rollout (from its intent), on the injected clock
    finished_at: float = 0.0
    deadline_at: Optional[float] = None
    old_nodes_at_start: int = 0             # of this run
    old_nodes_remaining: int = 0
    nodes_terminated: int = 0
    pods_evicted: int = 0
    evictions_blocked: int = 0              # 429s from PodDisruptionBudgets, retried
    jobs_force_evicted: int = 0             # Job pods evicted after the deadline
    cycles: int = 0
    throttled_calls: int = 0
    autoscaler_restored: Optional[bool] = None
    max_size_restored: Optional[bool] = None
    plan: list = field(default_factory=list)  # dry run: the commands the first cycle would issue
    launch_failures: list = field(default_factory=list)  # each failed launch seen: group, AWS's message, activity
    held: list = field(default_factory=list)  # blocked: each node held past its deadline and what holds it
    events_written: int = 0                 # Kubernetes Events created or updated
    events_failed: int = 0                  # Event writes that failed (best effort; never stops the rollout)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.outcome, 1)

    @property
    def makespan_seconds(self) -> float:
        return max(0.0, self.finished_at - self.started_at)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["makespan_seconds"] = round(self.makespan_seconds, 3)
        return data

    def to_text(self) -> str:
        lines = [f"rollout {self.outcome}" + (f": {self.reason}" if self.reason else ""),
                 f"  strategy {self.strategy}, makespan {self.makespan_seconds:.0f}s, cycles {self.cycles}"
                 + (" (resumed)" if self.resumed else ""),
                 f"  old nodes {self.old_nodes_at_start} -> {self.old_nodes_remaining}, "
                 f"terminated {self.nodes_terminated}, pods evicted {self.pods_evicted} "
                 f"({self.evictions_blocked} blocked by PDBs and retried), "
                 f"Jobs force-evicted after the deadline {self.jobs_force_evicted}"]
        for failure in self.launch_failures[-3:]:
            lines.append(f"  launch failed in {failure['group']}: {failure['message']}")
        for held in self.held[:10]:
            lines.append(f"  {held['node']} ({held['group']}) held by {', '.join(held['holders'])}")
        if self.plan:
            lines.append(f"  plan ({len(self.plan)} commands):")
            lines += [f"    {c}" for c in self.plan[:50]]
            if len(self.plan) > 50:
                lines.append(f"    ... {len(self.plan) - 50} more")
        return "\n".join(lines)
