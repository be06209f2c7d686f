"""The rollout simulator: the real engine and runner against a simulated fleet.

``load_scenario(path_or_mapping) -> Scenario`` and
``simulate(scenario, strategy="default", on_event=None, no_rollout=False) -> SimulationResult``.
The simulated cloud and cluster implement the same ports as the boto3 and
kubernetes adapters, over a virtual clock, so the engine cannot tell.
``no_rollout=True`` runs the same world with the launch template left as it
was and no rollout at all: the baseline every pending-time comparison uses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..model import TAG_INTENT_PREFIX
from ..report import RolloutReport
from ..runner import RolloutOptions, run_rollout
from ..strategies import get_strategy
from .ports import connect
from .scenario import FaultSpec, GroupSpec, JobsSpec, Scenario, ScenarioError, ServiceSpec, load_scenario
from .world import (CLUSTER, HANDLER_CYCLE_SECONDS, SPOT_WARNING_SECONDS, SimulatedCrash, SimulationStuck, World,
                    percentile)

RESTART_SECONDS = 10.0     # a crashed rollout is started again this much later

__all__ = ["FaultSpec", "GroupSpec", "JobsSpec", "Scenario", "ScenarioError", "ServiceSpec", "SimulationResult",
           "SimulationStuck", "load_scenario", "simulate"]


@dataclass
class SimulationResult:
    report: dict                              # every field of the report, and a few more
    timeline: list = field(default_factory=list)   # samples: t, old_nodes, new_nodes, jobs_running, jobs_pending, deadline_at
    rollout: Optional[RolloutReport] = None   # the last runner's own report (None with no_rollout)


def fault_end(fault: FaultSpec) -> float:
    """How long a --no-rollout run must last at least to see a fault play out."""
    if fault.kind == "spot_interruption":
        return (fault.at_seconds or 0.0) + SPOT_WARNING_SECONDS
    if fault.kind in ("asg_terminate", "handler_restart", "node_loss", "publish"):
        return fault.at_seconds or 0.0
    if fault.kind == "launch_failure":
        return (fault.at_seconds or 0.0) + (fault.for_seconds or 0.0)
    return 0.0


def settle(world: World) -> None:
    """After the rollout (or the horizon), let the termination handler finish: every instance on the
    hook completed or timed out, every warned spot instance reclaimed — so the report counts every
    Job the faults touched. Bounded by the hook's global timeout."""
    if not world.hook:
        return
    limit = world.now + world.handler_settings.global_timeout_seconds + SPOT_WARNING_SECONDS + HANDLER_CYCLE_SECONDS
    while world.handler_busy() and world.now < limit:
        world.advance_to(min(limit, world.now + HANDLER_CYCLE_SECONDS))


def simulate(scenario: Scenario, strategy: str = "default",
             on_event: Optional[Callable[[dict], None]] = None,
             job_owner_kinds: Optional[frozenset[str]] = None, *, no_rollout: bool = False,
             horizon_seconds: Optional[float] = None, events: bool = True) -> SimulationResult:
    """Run the rollout on a fresh simulated fleet until the runner returns.
    ``job_owner_kinds``: RolloutOptions.job_owner_kinds (default: the engine's).
    ``no_rollout``: the same world without a rollout, for ``horizon_seconds``
    (default: the scenario's lower bound, what a rollout needs at least)."""
    get_strategy(strategy)
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    wall = time.perf_counter()
    world = World(scenario, roll=not no_rollout)
    marks: dict[str, float] = {}

    def watch(event: dict) -> None:
        kind = event.get("event")
        if kind in ("rollback", "blocked", "failed", "launch_failure") and kind not in marks:
            marks[kind] = event.get("t", world.now) - world.start_at
        if on_event is not None:
            on_event(event)

    rollout: Optional[RolloutReport] = None
    restarts = 0
    if no_rollout:
        horizon = horizon_seconds if horizon_seconds is not None else max(
            world.lower_bound, scenario.poll_seconds, *(fault_end(f) for f in scenario.faults))
        world.advance_to(world.start_at + horizon)
        outcome, reason = "no_rollout", f"the same world for {horizon:.0f}s without a rollout"
        if world.hook:
            reason += ", faults and the termination handler only"
    else:
        options = RolloutOptions(cluster_name=CLUSTER, strategy=strategy, surge=scenario.surge,
                                 deadline_seconds=scenario.deadline_seconds,
                                 ready_timeout_seconds=scenario.ready_timeout_seconds,
                                 boot_timeout_seconds=scenario.boot_timeout_seconds,
                                 launch_failure_timeout_seconds=scenario.launch_failure_timeout_seconds,
                                 pause_autoscaler=scenario.pause_autoscaler, poll_seconds=scenario.poll_seconds,
                                 events=events,
                                 **({"job_owner_kinds": job_owner_kinds} if job_owner_kinds is not None else {}))
        while True:
            cloud, cluster, clock = connect(world)
            try:
                rollout = run_rollout(cloud, cluster, clock, options, watch)
                break
            except SimulatedCrash as crash:
                restarts += 1
                watch({"event": "crash", "t": round(world.now, 3), "reason": str(crash)})
                world.advance_to(world.now + RESTART_SECONDS)
        outcome, reason = rollout.outcome, rollout.reason
    ended_at = world.now
    settle(world)
    world.max_reads_per_cycle = max(world.max_reads_per_cycle, world.reads_this_cycle)   # the last reconcile
    world._sample(world.now)
    old, _new = world.count_old_new()
    specs = {g.name: g for g in scenario.node_groups}
    waits = world.pending_waits()
    report = {
        "scenario": scenario.name,
        "strategy": "none" if no_rollout else strategy,
        "nodes": scenario.total_nodes,
        "outcome": outcome,
        "reason": reason,
        "makespan_seconds": round(ended_at - world.start_at, 3),
        # With the termination handler: when the last instance left Terminating:Wait (or was reclaimed).
        "settled_at_seconds": round(world.now - world.start_at, 3),
        "lower_bound_seconds": round(world.lower_bound, 3),
        "old_nodes_remaining": old if not no_rollout else 0,
        # The rollout's last reading of its groups: a version published after it is the next rollout's to roll.
        "last_look_seconds": round(world.last_groups_read_at - world.start_at, 3),
        "original_nodes_removed": sum(world.original_removed.values()),
        "original_nodes_removed_by_group": dict(sorted(world.original_removed.items())),
        "proof_violations": sum(1 for g, t in world.first_removed_at.items()
                                if not no_rollout and t < world.proven_at.get(g, float("inf"))),
        "jobs_interrupted": world.jobs_interrupted,
        "jobs_force_evicted": world.jobs_force_evicted,
        "jobs_forced_off_pdb_held_nodes": world.forced_on_held_nodes,
        "jobs_lost_to_faults": world.jobs_lost,
        "termination_handler": world.hook,
        "instances_terminated_by_faults": world.faults_terminated,
        "instances_completed_by_handler": world.instances_completed_by_handler,
        "hook_timeouts": world.hook_timeouts,
        "max_hold_seconds": round(world.max_hold_seconds, 3),
        "max_rollout_hold_seconds": round(world.max_rollout_hold_seconds, 3),
        "handler_decisions": world.handler_decisions,
        "handler_actions": dict(sorted(world.handler_actions.items())),
        "jobs_completed": world.jobs_completed,
        "jobs_retried": world.jobs_retried,
        "jobs_failed": world.jobs_failed,
        "job_seconds_lost": round(world.job_seconds_lost, 3),
        "pdb_violations": world.pdb_violations,
        "evictions_refused": world.evictions_refused,
        "pods_terminated": world.pods_terminated,
        "jobs_finished_in_grace": world.jobs_finished_in_grace,
        "terminating_pods_cut_short": world.terminating_pods_cut_short,
        "terminated_with_terminating_pods": world.terminated_with_terminating_pods,
        "surge_node_seconds": round(world.surge_node_seconds, 3),
        "peak_surge_nodes": max(0, world.peak_live_count - world.start_count),
        "pending_p95_seconds": round(percentile(waits, 95), 3),
        "new_jobs": len(waits),
        "jobs_pending_at_end": sum(1 for k in world.pending if world.pinfo[k].kind == "job"),
        "failed_launches": world.failed_launches,
        "rollback_at_seconds": round(marks["rollback"], 3) if "rollback" in marks else None,
        "first_launch_failure_at_seconds": (round(marks["launch_failure"], 3) if "launch_failure" in marks
                                            else None),
        "api_reads": world.reads,
        "api_writes": world.writes,
        "max_reads_per_cycle": world.max_reads_per_cycle,
        "cycles": world.cycles,
        "throttled_calls": world.throttled,
        "events_created": world.events_created,
        "events_updated": world.events_updated,
        "restarts": restarts,
        "autoscaler_restored": world.autoscaler_replicas == (1 if scenario.autoscaler else None),
        "max_size_restored": all(g.max_size == specs[g.name].max for g in world.groups.values()),
        "intent_cleared": world.intent is None and not any(
            k.startswith(TAG_INTENT_PREFIX) for g in world.groups.values() for k in g.tags),
        "lock_released": world.lease is None,
        "final_nodes": len(world.insts),
        "original_nodes": scenario.total_nodes,
        "final_desired": sum(g.desired for g in world.groups.values()),
        # The launch template version each group is left on (a completed rollout leaves the newest).
        "final_versions": {name: g.version for name, g in sorted(world.groups.items())},
        "wall_seconds": round(time.perf_counter() - wall, 3),
    }
    return SimulationResult(report=report, timeline=world.timeline, rollout=rollout)
