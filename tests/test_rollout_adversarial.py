"""Adversarial cases found reviewing issue 9 (capacity-safe rollout), each through the engine and
the simulator as users run it: faults combined, the proof lost at the worst moment, a new
launch template version published mid-rollout, annotations nobody expected, malformed input."""

from __future__ import annotations

import pytest

from automation.rollout import engine
from automation.rollout.engine import Cordon, SetCapacity, SetVersion, Terminate, Uncordon, decide
from automation.rollout.model import (CA_SCALE_DOWN_DISABLED, LABEL_MODEL_VERSION, LABEL_NODE_GROUP, RESOURCE_GPU,
                                      TAINT_ROLLOUT, AutoScalingGroup, GroupIntent, Instance, Node, Pod,
                                      RolloutIntent, ScalingActivity, Snapshot, Taint)
from automation.rollout.sim import load_scenario, simulate
from automation.rollout.strategies import DEFAULT

ICE = "InsufficientInstanceCapacity: We currently do not have sufficient g5.2xlarge capacity."
BOOT_WARM = 240 + 60


# ---------------------------------------------------------------- engine fixtures (plain values)

def inst(i: str, version: str = "1") -> Instance:
    return Instance(id=i, zone="us-east-2a", launch_template_version=version)


def group(instances, *, desired=None, max_size=10, version="2", min_size=0) -> AutoScalingGroup:
    return AutoScalingGroup(name="gpu-a", node_group="gpu-a", zone="us-east-2a", min_size=min_size, max_size=max_size,
                            desired_capacity=len(instances) if desired is None else desired,
                            launch_template_id="lt-1", launch_template_version=version, instances=tuple(instances))


def node(name: str, instance_id: str, *, old=True, cordoned=None) -> Node:
    cordoned = old if cordoned is None else cordoned
    return Node(name=name, instance_id=instance_id,
                labels={LABEL_NODE_GROUP: "gpu-a", LABEL_MODEL_VERSION: "v1" if old else "v2"},
                annotations={CA_SCALE_DOWN_DISABLED: "true"} if cordoned else {},
                taints=(Taint(TAINT_ROLLOUT, "old", "NoSchedule"),) if cordoned else (),
                unschedulable=cordoned, ready=True, allocatable={RESOURCE_GPU: 1.0})


def job_pod(name: str, node_name, phase="Running", **kw) -> Pod:
    return Pod(namespace="ml", name=name, node_name=node_name, phase=phase, owner_kind="Job", owner_name=name,
               requests={RESOURCE_GPU: 1.0}, uid=f"uid-{name}", **kw)


def intent(**kw) -> RolloutIntent:
    base = dict(rollout_id="r1", started_at=0.0, deadline_at=7200.0, strategy="default", surge=None,
                pause_autoscaler=False, autoscaler_replicas=None, ready_timeout_seconds=1800.0)
    base.update(kw)
    return RolloutIntent(**base)


def gi(desired=3, max_size=10) -> dict[str, GroupIntent]:
    return {"gpu-a": GroupIntent(asg="gpu-a", original_desired=desired, original_max=max_size, target_version="2",
                                 previous_version="1")}


def failed(at: float) -> ScalingActivity:
    return ScalingActivity("gpu-a", f"a-{at}", "Failed", "Launching a new EC2 instance.  Status Reason: " + ICE, ICE,
                           started_at=at)


def of(kind, commands):
    return [c for c in commands if isinstance(c, kind)]


def simulate_report(data: dict, **kw) -> dict:
    return simulate(load_scenario(data), **kw).report


def baseline_p95(data: dict, horizon: float) -> float:
    return simulate_report(data, no_rollout=True, horizon_seconds=horizon)["pending_p95_seconds"]


# ---------------------------------------------------------------- the proof lost after old nodes were cordoned

def test_once_the_proof_is_lost_cordoned_old_nodes_go_back_to_pending_jobs_even_with_a_replacement_booting():
    # Proven earlier (every old node cordoned), then the canary was lost; its replacement boots.
    g = group([inst("i-1"), inst("i-2"), inst("i-3"), inst("i-c2", "2")], desired=4)
    nodes = [node("n1", "i-1"), node("n2", "i-2"), node("n3", "i-3")]
    pods = [job_pod("busy", "n1"), job_pod("new", None, phase="Pending")]
    d = decide(Snapshot(now=400, groups=(g,), nodes=tuple(nodes), pods=tuple(pods)), intent(), gi(), DEFAULT)
    [back] = of(Uncordon, d.commands)
    assert back.node in ("n2", "n3") and "proven" in back.why
    assert not of(Terminate, d.commands) and not of(Cordon, d.commands)
    # Nothing pending: the cordons stay (a replacement is on its way).
    d = decide(Snapshot(now=400, groups=(g,), nodes=tuple(nodes), pods=(pods[0],)), intent(), gi(), DEFAULT)
    assert not of(Uncordon, d.commands)


def test_a_stop_for_failing_launches_never_gives_up_the_original_capacity_and_pins_an_unproven_group():
    # An idle old node was removed after the proof; then the canary was lost and launches fail for good.
    g = group([inst("i-1"), inst("i-2")], desired=4)           # original desired 3, +1 replacement asked for
    nodes = [node("n1", "i-1"), node("n2", "i-2")]
    d = decide(Snapshot(now=2000, groups=(g,), nodes=tuple(nodes), pods=(), activities=(failed(1500), failed(100))),
               intent(), gi(desired=3), DEFAULT)
    assert d.stop is not None and d.stop.outcome == "failed" and ICE in d.stop.reason
    sizes = of(SetCapacity, d.stop.commands)
    assert sizes == [SetCapacity("gpu-a", desired=3)]           # the surge withdrawn, never the original 3
    assert of(SetVersion, d.stop.commands) == [SetVersion("gpu-a", "lt-1", "1")]   # refilled on the proven version
    assert {c.node for c in of(Uncordon, d.stop.commands)} == {"n1", "n2"}


def test_canary_lost_right_after_proof_then_no_capacity_keeps_jobs_starting_and_the_original_size():
    # The canary proves the AMI at 300 s (every old node is cordoned, an idle one removed), is lost at
    # 306 s, and the zone has no capacity from 301 s on. Before the fix: arriving Jobs found every old
    # node cordoned for the whole launch-failure timeout, and the stop set desired to the 9 nodes left.
    data = {"seed": 7, "boot_seconds": 240, "warm_seconds": 60, "deadline_seconds": 7200,
            "node_groups": [{"name": "gpu-a", "nodes": 10, "max_size": 20}],
            "jobs": {"running": 4, "remaining_seconds": [3000, 5000], "arrivals_per_hour": 12,
                     "duration_seconds": [600, 1800]},
            "faults": [{"kind": "node_loss", "at_seconds": 306, "target": "new"},
                       {"kind": "launch_failure", "group": "gpu-a", "at_seconds": 301, "for_seconds": 3000}]}
    report = simulate_report(data)
    assert report["outcome"] == "failed" and "InsufficientInstanceCapacity" in report["reason"]
    assert report["final_desired"] == report["original_nodes"] == 10          # given back when capacity returns
    assert report["old_nodes_remaining"] == 9 and report["jobs_interrupted"] == 0
    assert report["pending_p95_seconds"] <= baseline_p95(data, report["makespan_seconds"]) + BOOT_WARM
