"""The dry run's predicted replacement: a snapshot of the live fleet as a simulator scenario.

``scenario_from_snapshot`` is pure: the :class:`AutoScalingGroup` values that
``CloudPort.list_groups`` returns and the :class:`Node`/:class:`Pod` values of
the ``ClusterPort`` in, a :class:`Scenario` out. ``predict`` reads those
through the ports (the real adapters, or anything implementing them) and runs
the simulator, which drives the real rollout engine over a virtual clock.

What a snapshot tells, and what is assumed:

- which nodes will be replaced: every live instance of the rotated groups (the
  dry run stops before ``up``, and ``up`` moves every group to a new
  launch-template version), or with ``only_outdated`` just the instances not on
  their group's current version (a replacement already under way);
- where the running Jobs are: each on its own node, as in the cluster;
- each Job's deadline extension (``kiln.dev/rollout-deadline-extension-seconds``
  on the pod, or on its Job, which ``KubeCluster.list_pods`` copies onto the pod);
- **not** how long a Job will still run: nothing in the API says. Each Job's
  remaining time is drawn from ``remaining_seconds`` (default: the simulator's
  spread, 1-60 minutes) with a fixed seed, so the prediction is one plausible
  draw, repeatable, not a bound. A Job's ``activeDeadlineSeconds`` would cap its
  remaining time, but reading it needs each Job's start time, a read the
  ClusterPort does not offer; it is not used.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

from automation.rollout import engine
from automation.rollout.model import AutoScalingGroup, Instance, Node, Pod
from automation.rollout.ports import CloudPort, ClusterPort
from automation.rollout.sim import JobsSpec, Scenario, load_scenario, simulate

from .fleet import prediction, scenario_for_groups

#: The simulator's default spread of a running Job's remaining time, in seconds.
DEFAULT_REMAINING_SECONDS: tuple[float, float] = JobsSpec().remaining_seconds

#: Lifecycle states of instances that are already leaving their group: nothing to replace.
_LEAVING = ("Terminat", "Detach", "Warmed", "Standby", "EnteredStandby")


def replaced_instances(group: AutoScalingGroup, only_outdated: bool = False) -> list[Instance]:
    """The instances of ``group`` the replacement will take away, in the group's order."""
    live = [i for i in group.instances if not i.lifecycle_state.startswith(_LEAVING)]
    if only_outdated:
        live = [i for i in live if engine.is_old(i, group.launch_template_version)]
    return live


def running_job_pods(pods: Iterable[Pod], job_owner_kinds: frozenset[str]) -> list[Pod]:
    """Job pods bound to a node and not finished or already being deleted."""
    return [p for p in pods if engine.is_job(p, job_owner_kinds) and p.node_name
            and not engine.is_terminal(p) and not p.deleting]


def scenario_from_snapshot(groups: Sequence[AutoScalingGroup], nodes: Sequence[Node], pods: Sequence[Pod], *,
                           deadline_seconds: float,
                           job_owner_kinds: frozenset[str] = engine.DEFAULT_JOB_OWNER_KINDS,
                           asg_names: Optional[Iterable[str]] = None, only_outdated: bool = False,
                           remaining_seconds: tuple[float, float] = DEFAULT_REMAINING_SECONDS,
                           surge: Optional[str] = None, ready_timeout_seconds: Optional[float] = None,
                           name: str = "dry-run prediction") -> Scenario:
    """The simulator's scenario for replacing this fleet (pure).

    Per ASG (only those in ``asg_names`` when given): its zone, max size and the
    nodes to replace; each running Job pod on the node it runs on (by the node's
    instance id), with its deadline extension. Pods that are not Jobs (by
    ``job_owner_kinds``), and Jobs on nodes that are not replaced, are left out.
    A group's Job slots per node are the most Jobs any of its nodes runs now.
    Groups with nothing to replace are left out.
    """
    wanted = set(asg_names) if asg_names is not None else None
    node_by_name = {n.name: n for n in nodes}
    slot_of_instance: dict[str, tuple[str, int]] = {}
    chosen: list[tuple[AutoScalingGroup, int]] = []
    for group in sorted(groups, key=lambda g: g.name):
        if wanted is not None and group.name not in wanted:
            continue
        replaced = replaced_instances(group, only_outdated)
        if not replaced:
            continue
        chosen.append((group, len(replaced)))
        slot_of_instance.update({inst.id: (group.name, index) for index, inst in enumerate(replaced)})

    placement: list[tuple[str, int]] = []
    extensions: list[float] = []
    for pod in sorted(running_job_pods(pods, job_owner_kinds), key=lambda p: p.key):
        node = node_by_name.get(pod.node_name or "")
        slot = slot_of_instance.get(node.instance_id or "") if node is not None else None
        if slot is None:
            continue   # a Job on a node that stays (another group, or already up to date)
        placement.append(slot)
        extensions.append(engine.pod_deadline(pod, 0.0))   # the pod's extension alone

    jobs_per_node: dict[tuple[str, int], int] = {}
    for slot in placement:
        jobs_per_node[slot] = jobs_per_node.get(slot, 0) + 1
    specs = []
    for group, count in chosen:
        busiest = max((n for (g, _), n in jobs_per_node.items() if g == group.name), default=1)
        specs.append({"name": group.name, "zone": group.zone or "unknown", "nodes": count,
                      "max_size": max(group.max_size, count), "min_size": min(group.min_size, count),
                      "pods_per_node": max(1, busiest)})
    jobs: dict[str, Any] = {"running": len(placement), "remaining_seconds": list(remaining_seconds),
                            "owner_kind": "Job" if "Job" in job_owner_kinds else sorted(job_owner_kinds)[0]}
    if placement:
        jobs.update(placement=[list(slot) for slot in placement], deadline_extension_list=extensions)
    extra: dict[str, Any] = {"surge": surge}
    if ready_timeout_seconds is not None:
        extra["ready_timeout_seconds"] = ready_timeout_seconds
    return load_scenario(scenario_for_groups(specs, jobs=jobs, deadline_seconds=deadline_seconds, name=name,
                                             **extra))


def predict(cloud: CloudPort, cluster: ClusterPort, cluster_name: str, *, deadline_seconds: float = 7200,
            strategy: str = "default", job_owner_kinds: Optional[frozenset[str]] = None,
            asg_names: Optional[Iterable[str]] = None, only_outdated: bool = False,
            remaining_seconds: tuple[float, float] = DEFAULT_REMAINING_SECONDS,
            surge: Optional[str] = None, ready_timeout_seconds: Optional[float] = None) -> dict[str, Any]:
    """Read the fleet through the ports (three list calls), simulate its replacement, summarise it."""
    kinds = job_owner_kinds or engine.DEFAULT_JOB_OWNER_KINDS
    groups = cloud.list_groups(cluster_name)
    nodes = cluster.list_nodes()
    pods = cluster.list_pods()
    scenario = scenario_from_snapshot(groups, nodes, pods, deadline_seconds=deadline_seconds, job_owner_kinds=kinds,
                                      asg_names=asg_names, only_outdated=only_outdated,
                                      remaining_seconds=remaining_seconds, surge=surge,
                                      ready_timeout_seconds=ready_timeout_seconds)
    result = simulate(scenario, strategy=strategy, job_owner_kinds=kinds)
    summary = prediction(result)
    summary.update(groups=[g.name for g in scenario.node_groups], jobs_running=scenario.jobs.running,
                   deadline_seconds=deadline_seconds, assumed_remaining_seconds=list(remaining_seconds))
    return summary


def describe(summary: Mapping[str, Any]) -> str:
    """One line for a person: what the replacement is predicted to cost."""
    def number(key: str) -> float:
        return summary.get(key) or 0

    running = summary.get("jobs_running")
    return (f"{number('nodes_replaced'):.0f} nodes replaced in ~{number('duration_seconds') / 60:.0f} min; "
            f"surge {number('surge_node_seconds') / 3600:.1f} node-hours, peak +{number('peak_surge_nodes'):.0f} nodes; "
            f"{number('jobs_outliving_deadline'):.0f} of {'?' if running is None else running} running Jobs "
            f"would outlive the deadline (force-evicted)")
