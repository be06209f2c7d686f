"""The rollout simulator: the real engine and runner against a simulated fleet.

``load_scenario(path_or_mapping) -> Scenario`` and
``simulate(scenario, strategy="default", on_event=None) -> SimulationResult``.
The simulated cloud and cluster implement the same ports as the boto3 and
kubernetes adapters, over a virtual clock, so the engine cannot tell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..report import RolloutReport
from ..runner import RolloutOptions, run_rollout
from ..strategies import get_strategy
from .ports import connect
from .scenario import FaultSpec, GroupSpec, JobsSpec, Scenario, ScenarioError, ServiceSpec, load_scenario
from .world import CLUSTER, SimulatedCrash, SimulationStuck, World, percentile

RESTART_SECONDS = 10.0     # a crashed rollout is started again this much later

__all__ = ["FaultSpec", "GroupSpec", "JobsSpec", "Scenario", "ScenarioError", "ServiceSpec", "SimulationResult",
           "SimulationStuck", "load_scenario", "simulate"]


@dataclass
class SimulationResult:
    report: dict                              # every field of the report, and a few more
    timeline: list = field(default_factory=list)   # samples: t, old_nodes, new_nodes, jobs_running, jobs_pending, deadline_at
    rollout: Optional[RolloutReport] = None   # the last runner's own report


def simulate(scenario: Scenario, strategy: str = "default",
             on_event: Optional[Callable[[dict], None]] = None,
             job_owner_kinds: Optional[frozenset[str]] = None) -> SimulationResult:
    """Run the rollout on a fresh simulated fleet until the runner returns.
    ``job_owner_kinds``: RolloutOptions.job_owner_kinds (default: the engine's)."""
    get_strategy(strategy)
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    wall = time.perf_counter()
    world = World(scenario)
    options = RolloutOptions(cluster_name=CLUSTER, strategy=strategy, surge=scenario.surge,
                             deadline_seconds=scenario.deadline_seconds,
                             ready_timeout_seconds=scenario.ready_timeout_seconds,
                             pause_autoscaler=scenario.pause_autoscaler, poll_seconds=scenario.poll_seconds,
                             **({"job_owner_kinds": job_owner_kinds} if job_owner_kinds is not None else {}))
    restarts = 0
    while True:
        cloud, cluster, clock = connect(world)
        try:
            rollout = run_rollout(cloud, cluster, clock, options, on_event)
            break
        except SimulatedCrash as crash:
            restarts += 1
            if on_event:
                on_event({"event": "crash", "t": round(world.now, 3), "reason": str(crash)})
            world.advance_to(world.now + RESTART_SECONDS)
    world._sample(world.now)
    old, _new = world.count_old_new()
    specs = {g.name: g for g in scenario.node_groups}
    report = {
        "scenario": scenario.name,
        "strategy": strategy,
        "nodes": scenario.total_nodes,
        "outcome": rollout.outcome,
        "reason": rollout.reason,
        "makespan_seconds": round(world.now - world.start_at, 3),
        "lower_bound_seconds": round(world.lower_bound, 3),
        "old_nodes_remaining": old,
        "jobs_interrupted": world.jobs_interrupted,
        "jobs_force_evicted": world.jobs_force_evicted,
        "jobs_lost_to_faults": world.jobs_lost,
        "jobs_completed": world.jobs_completed,
        "pdb_violations": world.pdb_violations,
        "surge_node_seconds": round(world.surge_node_seconds, 3),
        "peak_surge_nodes": max(0, world.peak_live_count - world.start_count),
        "pending_p95_seconds": round(percentile(world.pending_waits(), 95), 3),
        "new_jobs": len(world.pending_waits()),
        "api_reads": world.reads,
        "api_writes": world.writes,
        "max_reads_per_cycle": world.max_reads_per_cycle,
        "cycles": world.cycles,
        "throttled_calls": world.throttled,
        "restarts": restarts,
        "autoscaler_restored": world.autoscaler_replicas == (1 if scenario.autoscaler else None),
        "max_size_restored": all(g.max_size == specs[g.name].max for g in world.groups.values()),
        "intent_cleared": world.intent is None and not any(
            k.startswith("kiln.dev/rollout-") for g in world.groups.values() for k in g.tags),
        "lock_released": world.lease is None,
        "final_nodes": len(world.insts),
        "wall_seconds": round(time.perf_counter() - wall, 3),
    }
    return SimulationResult(report=report, timeline=world.timeline, rollout=rollout)
