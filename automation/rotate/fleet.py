"""The simulator as the fleet: scenarios seeded from a live (or moto) fleet, and simulated replacement.

Used by ``--dry-run`` (the predicted replacement over a snapshot of the live
fleet), by ``make demo`` (moto has no kubelets, so the cluster is simulated) and
by the tests. What is simulated is the cluster: nodes booting and joining,
Jobs running and finishing, drains and evictions, on a virtual clock.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from automation.rollout.model import TAG_CLUSTER, TAG_NODE_GROUP


def scenario_for_groups(groups: Iterable[Mapping[str, Any]], *, jobs: Optional[Mapping[str, Any]] = None,
                        deadline_seconds: float = 7200, faults: Iterable[Mapping[str, Any]] = (),
                        name: str = "", **extra: Any) -> dict[str, Any]:
    """A scenario mapping (see ``automation.rollout.sim.scenario``) for these node groups."""
    return {"name": name, "node_groups": [dict(g) for g in groups], "jobs": dict(jobs or {}),
            "deadline_seconds": deadline_seconds, "faults": [dict(f) for f in faults], **extra}


def old_nodes_by_group(autoscaling: Any, ec2: Any, cluster: str) -> list[dict[str, Any]]:
    """Per ASG tagged for ``cluster``: the instances not running the image of the group's launch-template version.

    This is the snapshot that seeds the simulated fleet: group name, zone, how
    many nodes are out of date, and the group's max size. Instances are compared
    by image (what a node actually boots), read with one DescribeInstances call.
    """
    groups, image_of_version, instance_ids = [], {}, []
    raw = []
    for page in autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
            Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]):
        raw.extend(page["AutoScalingGroups"])
    for g in raw:
        spec = g.get("LaunchTemplate") or {}
        key = (spec.get("LaunchTemplateId"), str(spec.get("Version")))
        if key[0] and key not in image_of_version:
            v = ec2.describe_launch_template_versions(LaunchTemplateId=key[0], Versions=[key[1]])
            image_of_version[key] = v["LaunchTemplateVersions"][0]["LaunchTemplateData"].get("ImageId")
        instance_ids.extend(i["InstanceId"] for i in g.get("Instances", []))
    images = {}
    if instance_ids:
        for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=instance_ids):
            images.update({i["InstanceId"]: i.get("ImageId") for r in page["Reservations"] for i in r["Instances"]})
    for g in raw:
        spec = g.get("LaunchTemplate") or {}
        target_image = image_of_version.get((spec.get("LaunchTemplateId"), str(spec.get("Version"))))
        old = [i["InstanceId"] for i in g.get("Instances", []) if images.get(i["InstanceId"]) != target_image]
        tags = {t["Key"]: t["Value"] for t in g.get("Tags", [])}
        groups.append({"name": g["AutoScalingGroupName"], "zone": (g.get("AvailabilityZones") or ["?"])[0],
                       "nodes": len(old), "max_size": max(g["MaxSize"], 2 * len(old)),
                       "node_group": tags.get(TAG_NODE_GROUP, ""), "target_version": str(spec.get("Version")),
                       "target_image": target_image, "old_instance_ids": old,
                       "instances": len(g.get("Instances", []))})
    return sorted(groups, key=lambda g: g["name"])


def replace_with_simulator(scenario: Mapping[str, Any], strategy: str = "default", on_event=None) -> Any:
    """Run the rollout engine against the simulated fleet; returns the simulator's result."""
    from automation.rollout.sim import load_scenario, simulate

    return simulate(load_scenario(scenario), strategy=strategy, on_event=on_event)


def report_of(result: Any) -> dict[str, Any]:
    """One report dict: the runner's own report (nodes terminated, pods evicted, ...) and the simulator's."""
    merged = result.rollout.to_dict() if result.rollout is not None else {}
    merged.update(result.report)
    merged["simulated"] = True
    return merged


def prediction(result: Any) -> dict[str, Any]:
    """The dry run's summary of a simulated replacement."""
    report = report_of(result)
    peak = report.get("peak_surge_nodes")
    if peak is None:   # from the timeline's samples when the simulator does not track it
        most = max((s["old_nodes"] + s["new_nodes"] for s in result.timeline), default=0)
        start = result.timeline[0]["old_nodes"] + result.timeline[0]["new_nodes"] if result.timeline else 0
        peak = max(0, most - start)
    return {"outcome": report.get("outcome"), "duration_seconds": report.get("makespan_seconds"),
            "nodes_replaced": report.get("nodes_terminated"), "peak_surge_nodes": peak,
            "surge_node_seconds": report.get("surge_node_seconds"),
            "jobs_running": result.timeline[0]["jobs_running"] if result.timeline else None,
            "jobs_outliving_deadline": report.get("jobs_force_evicted"), "simulated": True}
