"""Properties over random fleets, Job durations, services, crash points,
throttling (up to 90 %), bad AMIs, launch failures and a version published
mid-rollout (hypothesis): resuming
always converges, no Job is interrupted before its deadline, no
PodDisruptionBudget is violated, no old node leaves a group before a
replacement there is proven, a bad AMI keeps every original node, and the
autoscaler and the groups' sizes are restored."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from automation.rollout.sim import load_scenario, simulate


@st.composite
def fleets(draw):
    groups = [
        {"name": f"g{i}", "zone": f"us-east-2{'abc'[i]}", "nodes": draw(st.integers(0, 5)),
         "pods_per_node": draw(st.integers(1, 3)), "capacity_type": draw(st.sampled_from(["on-demand", "spot"]))}
        for i in range(draw(st.integers(1, 3)))
    ]
    for g in groups:
        g["max_size"] = g["nodes"] + draw(st.integers(0, g["nodes"] + 2))
        g["min_size"] = draw(st.integers(0, g["nodes"]))     # min = desired: fixed-size groups too
    slots = sum(g["nodes"] * g["pods_per_node"] for g in groups)
    low = draw(st.integers(0, 3000))
    scenario = {
        "seed": draw(st.integers(0, 10_000)),
        "boot_seconds": draw(st.sampled_from([60, 240])),
        "warm_seconds": draw(st.sampled_from([0, 60])),
        "deadline_seconds": draw(st.sampled_from([1800, 7200])),
        "autoscaler": draw(st.booleans()),
        "pause_autoscaler": draw(st.booleans()),
        "node_groups": groups,
        "jobs": {"running": draw(st.integers(0, slots)), "remaining_seconds": [low, low + draw(st.integers(0, 6000))],
                 "arrivals_per_hour": draw(st.sampled_from([0, 10, 60])), "duration_seconds": [300, 2400]},
    }
    if draw(st.booleans()):
        replicas = draw(st.integers(1, 4))
        scenario["services"] = [{"name": "api", "replicas": replicas, "min_available": draw(st.integers(0, replicas - 1))}]
    crashes = draw(st.lists(st.integers(1, 150), max_size=2, unique=True))
    scenario["faults"] = [{"kind": "crash", "after_actions": n} for n in crashes]
    if draw(st.booleans()):
        scenario["faults"].append({"kind": "node_loss", "at_seconds": draw(st.integers(0, 3000))})
    if draw(st.booleans()):
        scenario["faults"].append({"kind": "throttle", "rate": draw(st.sampled_from([0.1, 0.3, 0.9]))})
    return scenario


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.sampled_from(["default", "double-and-drain"]))
def test_rollout_converges_safely_from_any_crash_point(scenario, strategy):
    report = simulate(load_scenario(scenario), strategy).report
    assert report["outcome"] == "completed", report
    assert report["old_nodes_remaining"] == 0
    assert report["jobs_interrupted"] == 0
    assert report["pdb_violations"] == 0
    # The one documented exception: surplus nodes whose Jobs outlast the deadline + 30 minutes are
    # not evicted to shrink the group; the rollout completes and says how far above its size it stays.
    left_above = "left above their size" in report["reason"]
    assert report["autoscaler_restored"] and (report["max_size_restored"] or left_above)
    assert report["intent_cleared"] and report["lock_released"]
    assert report["restarts"] <= len([f for f in scenario["faults"] if f["kind"] == "crash"])
    if strategy == "default":     # (double-and-drain reproduces the script, which proves nothing first)
        assert report["proof_violations"] == 0      # nothing old left a group before a replacement there was proven
    if not scenario["autoscaler"] and not left_above:
        # Sizes given back: every group ends at its original desired capacity.
        assert report["final_desired"] == report["final_nodes"] == sum(g["nodes"] for g in scenario["node_groups"])
    # Only Jobs that outlive the deadline are ever evicted. (New Jobs can land on an
    # old node before its cordon, e.g. while a crashed rollout restarts, so only without arrivals.)
    if not scenario["jobs"]["arrivals_per_hour"] and scenario["deadline_seconds"] >= scenario["jobs"]["remaining_seconds"][1]:
        assert report["jobs_force_evicted"] == 0


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.sampled_from(["not_ready", "no_join", "warmup_fails"]))
def test_bad_ami_always_rolls_back_safely(scenario, mode):
    scenario = dict(scenario, ready_timeout_seconds=900,
                    faults=scenario["faults"] + [{"kind": "bad_ami", "mode": mode}])
    result = simulate(load_scenario(scenario))
    report = result.report
    has_old = any(g["nodes"] for g in scenario["node_groups"])
    # A crash right after the rollback finished, or a fault that took the only old node before the
    # rollout's first look, leaves it nothing to do.
    finished_before_crash = report["reason"] == "no old nodes"
    assert report["outcome"] == ("rolled_back" if has_old and not finished_before_crash else "completed"), report
    if not scenario["autoscaler"] and not finished_before_crash:
        # Every node is back on the previous version. (With cluster-autoscaler on, a group
        # that had no node to roll may scale up on its own, bad, launch template. When the only old
        # node was lost before the first look, the group replaced it on the new template before kiln
        # ran: a known limit, docs/rollout.md#limits — "no old nodes" does not judge unproven new ones.)
        assert result.timeline[-1]["new_nodes"] == 0
    assert report["jobs_interrupted"] == 0 and report["pdb_violations"] == 0
    assert report["autoscaler_restored"] and report["max_size_restored"] and report["intent_cleared"]
    # A bad AMI costs nothing: no original node removed by the rollout, no Job forced off one.
    assert report["original_nodes_removed"] == 0 and report["jobs_force_evicted"] == 0
    if not scenario["autoscaler"]:
        assert report["final_nodes"] == report["final_desired"] == sum(g["nodes"] for g in scenario["node_groups"])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.integers(0, 2000), st.one_of(st.none(), st.integers(60, 3000)))
def test_launch_failures_never_remove_capacity_that_cannot_be_replaced(scenario, at, lasting):
    groups = [g["name"] for g in scenario["node_groups"]]
    fault = {"kind": "launch_failure", "group": groups[0], "at_seconds": at}
    if lasting is not None:
        fault["for_seconds"] = lasting
    scenario = dict(scenario, launch_failure_timeout_seconds=600, faults=scenario["faults"] + [fault])
    report = simulate(load_scenario(scenario)).report
    assert report["outcome"] in ("completed", "failed"), report
    assert report["jobs_interrupted"] == 0 and report["pdb_violations"] == 0 and report["proof_violations"] == 0
    assert report["autoscaler_restored"] and report["lock_released"]
    if report["outcome"] == "failed":
        assert "launches in" in report["reason"] or "after the last deadline" in report["reason"], report
        if at == 0 and lasting is None:
            # Nothing could ever launch in that group: it was never touched.
            assert report["original_nodes_removed_by_group"][groups[0]] == 0
    if not scenario["autoscaler"]:
        # The capacity the rollout removed is asked for again, never given up (even when it stops).
        assert report["final_desired"] >= sum(g["nodes"] for g in scenario["node_groups"]), report


# Found by hypothesis: nodes the rollout added for pending Jobs on version 2 filled the unproven group's
# growth cap once version 3 was published, so no canary of 3 ever launched (failed after the give-up).
_ADDED_FOR_JOBS_THEN_SUPERSEDED = {
    "seed": 12, "boot_seconds": 60, "warm_seconds": 60, "deadline_seconds": 1800, "autoscaler": False,
    "pause_autoscaler": False,
    "node_groups": [{"name": "g0", "zone": "us-east-2a", "nodes": 2, "pods_per_node": 2,
                     "capacity_type": "on-demand", "max_size": 2, "min_size": 0}],
    "jobs": {"running": 0, "remaining_seconds": [0, 0], "arrivals_per_hour": 60, "duration_seconds": [300, 2400]},
    "faults": []}

# Also found by hypothesis: the canary of the new version lost while its group was pinned to the proven
# version; the group replaced it there, so nothing of the target ran and the cap left no room for a canary.
_CANARY_LOST_WHILE_PINNED = {
    "seed": 0, "boot_seconds": 240, "warm_seconds": 60, "deadline_seconds": 1800, "autoscaler": False,
    "pause_autoscaler": False,
    "node_groups": [{"name": f"g{i}", "zone": f"us-east-2{z}", "nodes": 1, "pods_per_node": 1,
                     "capacity_type": "on-demand", "max_size": 1, "min_size": 0} for i, z in enumerate("ab")],
    "jobs": {"running": 1, "remaining_seconds": [0, 0], "arrivals_per_hour": 0, "duration_seconds": [300, 2400]},
    "faults": [{"kind": "node_loss", "at_seconds": 246}]}


# Found by hypothesis: under 90 % throttling the clean-up took 75 s after the last reading of the groups, and a
# version published 5 s after that reading is the next rollout's (the test once guessed "the last minute").
_PUBLISHED_DURING_THE_CLEAN_UP = {
    "seed": 133, "boot_seconds": 240, "warm_seconds": 0, "deadline_seconds": 1800, "autoscaler": True,
    "pause_autoscaler": False,
    "node_groups": [
        {"name": "g0", "zone": "us-east-2a", "nodes": 0, "pods_per_node": 1, "capacity_type": "on-demand",
         "max_size": 0, "min_size": 0},
        {"name": "g1", "zone": "us-east-2b", "nodes": 4, "pods_per_node": 1, "capacity_type": "on-demand",
         "max_size": 4, "min_size": 4},
        {"name": "g2", "zone": "us-east-2c", "nodes": 4, "pods_per_node": 1, "capacity_type": "on-demand",
         "max_size": 5, "min_size": 3}],
    "jobs": {"running": 0, "remaining_seconds": [0, 0], "arrivals_per_hour": 0, "duration_seconds": [300, 2400]},
    "services": [{"name": "api", "replicas": 1, "min_available": 0}],
    "faults": [{"kind": "crash", "after_actions": 9}, {"kind": "crash", "after_actions": 36},
               {"kind": "throttle", "rate": 0.9}],
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.integers(0, 4000))
@example(_PUBLISHED_DURING_THE_CLEAN_UP, 2126)
@example(_ADDED_FOR_JOBS_THEN_SUPERSEDED, 244)
@example(_CANARY_LOST_WHILE_PINNED, 0)
def test_a_version_published_at_any_moment_is_followed_never_undone(scenario, at):
    scenario = dict(scenario, faults=scenario["faults"] + [{"kind": "publish", "at_seconds": at}])
    report = simulate(load_scenario(scenario)).report
    assert report["outcome"] == "completed", report
    assert report["jobs_interrupted"] == 0 and report["pdb_violations"] == 0 and report["proof_violations"] == 0
    assert report["intent_cleared"] and report["lock_released"] and report["autoscaler_restored"]
    if at < report["last_look_seconds"]:
        # Published before the rollout's last reading of its groups (a later one, during its clean-up, is
        # the next rollout's: a rerun or the next rotation): every group ends on it, no node on an older one.
        assert set(report["final_versions"].values()) == {"3"} and report["old_nodes_remaining"] == 0, report
