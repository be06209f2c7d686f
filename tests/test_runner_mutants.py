"""The runner's own decisions pinned through the simulator: the exact report
fields and JSON events a rollout gives, each written to catch a survivor of a
mutation run on ``automation/rollout/runner.py`` (issue 15)."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from automation.rollout.ports import Throttled
from automation.rollout.runner import RolloutOptions, one_line, run_rollout
from automation.rollout.sim import load_scenario
from automation.rollout.sim.ports import connect
from automation.rollout.sim.world import CLUSTER, World

from _sim_ports import HookedCloud, TerminateFails


def _world(**over):
    base = {"seed": 3, "boot_seconds": 240, "warm_seconds": 60, "deadline_seconds": 7200, "autoscaler": True,
            "node_groups": [{"name": "gpu-a", "nodes": 3, "max_size": 6, "pods_per_node": 1}],
            "jobs": {"running": 3, "remaining_seconds": [60, 300]}}
    base.update(over)
    return World(load_scenario(base))


def _run(world, **opts):
    events = []
    cloud, cluster, clock = connect(world)
    report = run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER, **opts), on_event=events.append)
    return report, events, clock


@pytest.fixture(scope="module")
def rollout():
    world = _world()
    report, events, clock = _run(world)
    return world, report, events, clock


def test_a_whole_rollout_reports_each_termination_and_its_id(rollout):
    world, report, events, clock = rollout
    assert report.outcome == "completed", report.reason
    assert report.nodes_terminated == 3
    assert report.rollout_id is not None and len(report.rollout_id) == 12
    terminated = [e for e in events if e["event"] == "terminated"]
    assert len(terminated) == 3
    assert all(e["node"] and e["instance"] and e["group"] == "gpu-a" for e in terminated)


def test_every_cycle_event_names_the_phase_and_the_finish_its_time_and_reason(rollout):
    world, report, events, clock = rollout
    cycles = [e for e in events if e["event"] == "cycle"]
    assert cycles and {e["phase"] for e in cycles} == {"rolling"}
    finish = events[-1]
    assert finish["event"] == "finish" and finish["outcome"] == "completed"
    assert finish["reason"] == report.reason
    assert report.finished_at == finish["t"] == round(clock.now(), 3)
    assert report.finished_at > report.started_at


def test_every_event_has_a_name(rollout):
    world, report, events, clock = rollout
    names = [e["event"] for e in events]
    assert None not in names


def test_a_refused_lock_says_so_in_an_event_and_keeps_the_strategy():
    world = _world()
    world.lease = ("someone-else", world.now + 600)
    report, events, _ = _run(world, strategy="double-and-drain")
    assert report.outcome == "failed" and report.strategy == "double-and-drain"
    assert [e["event"] for e in events] == ["start", "locked", "finish"]
    assert events[1]["reason"] == report.reason == "another rollout holds the lock"
    assert events[2]["reason"] == report.reason


def test_a_resumed_rollout_says_which_phase_it_continues():
    world = _world()
    cloud, cluster, clock = connect(world)

    failed_events = []
    first = run_rollout(TerminateFails(cloud), cluster, clock, RolloutOptions(cluster_name=CLUSTER),
                        on_event=failed_events.append)
    assert first.outcome == "failed" and world.intent is not None and world.intent.phase == "rolling"
    failures = [e for e in failed_events if e["event"] == "command_failed"]
    assert failures and {e["reason"] for e in failures} == {"RuntimeError: boom"}
    assert all(e["command"].startswith("Terminate(") for e in failures)
    report, events, _ = _run(world)
    assert report.outcome == "completed" and report.resumed
    [resumed] = [e for e in events if e["event"] == "resumed"]
    assert resumed["phase"] == "rolling" and resumed["rollout_id"] == first.rollout_id == report.rollout_id


@pytest.mark.parametrize("name", ["deadline_seconds", "poll_seconds"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_number_of_seconds_is_refused(name, value):
    world = _world()
    cloud, cluster, clock = connect(world)
    flag = "--" + {"deadline_seconds": "deadline", "poll_seconds": "poll"}[name]
    with pytest.raises(ValueError, match=f"^{flag}: must be a finite number of seconds"):
        run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER, **{name: value}))


def test_job_kinds_of_mixed_types_are_refused_by_name_not_by_a_sort_error():
    world = _world()
    cloud, cluster, clock = connect(world)
    with pytest.raises(ValueError, match="^--job-kinds: 3 is not a Kubernetes kind"):
        run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER, job_owner_kinds=frozenset({"Job", 3})))


def test_an_api_error_is_its_status_reason_and_the_servers_message():
    exc = ApiException(status=409, reason="Conflict")
    exc.body = json.dumps({"message": "the object has been\n modified"})
    assert one_line(exc) == "ApiException: 409 Conflict: the object has been modified"
    bare = ApiException(status=500, reason="Internal Server Error")
    bare.body = "not json"
    assert one_line(bare) == "ApiException: 500 Internal Server Error"


def test_evictions_name_the_pod_and_its_node_in_an_event():
    world = _world(jobs={}, services=[{"name": "api", "replicas": 3, "min_available": 2}])
    uids = {(p.namespace, p.name): p.uid for p in connect(world)[1].list_pods() if p.name.startswith("api")}
    report, events, _ = _run(world)
    assert report.outcome == "completed", report.reason
    evicted = [e for e in events if e.get("event") == "evicted"]
    assert len(evicted) == report.pods_evicted >= 3
    assert all("/api" in e["pod"] for e in evicted), evicted
    assert all(e["node"] and e["forced"] is False for e in evicted)
    # The Kubernetes Event on each evicted pod carries its uid (kubectl describe finds it by it).
    told = {(ev.object_namespace, ev.object_name): (ev.reason, ev.type, ev.action, ev.object_uid)
            for ev in world.events.values() if ev.kind == "Pod"}
    assert told == {key: ("RolloutEvicted", "Normal", "Evict", uid) for key, uid in uids.items()}


def test_losing_the_lock_mid_rollout_is_the_reason_it_failed():
    world = _world(jobs={"remaining_list": [3000.0]})
    cloud, cluster, clock = connect(world)
    events = []

    def taken_over(n):
        if n == 5:
            world.lease = ("another-rollout", world.now + 10_000)

    report = run_rollout(HookedCloud(cloud, taken_over), cluster, clock, RolloutOptions(cluster_name=CLUSTER),
                         on_event=events.append)
    assert (report.outcome, report.reason) == ("failed", "lost the lock to another rollout")
    assert events[-1] == {"event": "finish", "t": events[-1]["t"], "outcome": "failed",
                          "reason": "lost the lock to another rollout"}


def test_a_failed_launch_is_told_once_with_its_group_and_since():
    world = _world(faults=[{"kind": "launch_failure", "group": "gpu-a", "at_seconds": 0}])
    report, events, _ = _run(world, launch_failure_timeout_seconds=600)
    failures = [e for e in events if e["event"] == "launch_failure"]
    assert failures, [e["event"] for e in events]
    assert all(e["group"] == "gpu-a" and isinstance(e["since"], float) and e["since"] <= e["t"] for e in failures)
    assert len({e["activity"] for e in failures}) == len(failures)
    assert report.launch_failures == [{"group": e["group"], "message": e["message"], "activity": e["activity"]}
                                      for e in failures]


def test_a_rollout_that_pauses_the_autoscaler_completes_and_restores_it():
    world = _world()
    before = world.autoscaler_replicas
    report, events, _ = _run(world, pause_autoscaler=True)
    assert report.outcome == "completed", report.reason
    assert world.autoscaler_replicas == before == 1 and report.autoscaler_restored


def test_losing_the_lock_between_two_commands_of_a_cycle_is_the_reason_it_failed():
    world = _world(jobs={})            # three idle old nodes: cordons in one cycle
    cloud, cluster, clock = connect(world)
    cordoned = []

    class TakenOverCluster:
        def __getattr__(self, name):
            return getattr(cluster, name)

        def cordon(self, node, *a, **kw):    # a slow write, during which another rollout takes the Lease
            cluster.cordon(node, *a, **kw)
            cordoned.append(node)
            world.advance_to(world.now + 200)
            world.lease = ("another-rollout", world.now + 10_000)

    report = run_rollout(cloud, TakenOverCluster(), clock, RolloutOptions(cluster_name=CLUSTER))
    assert (report.outcome, report.reason) == ("failed", "lost the lock to another rollout")
    assert len(cordoned) == 1 and world.lease[0] == "another-rollout"


class _EventsForbidden:
    def __init__(self, cluster):
        self._cluster, self.tries = cluster, 0

    def __getattr__(self, name):
        return getattr(self._cluster, name)

    def record_event(self, event):
        self.tries += 1
        raise PermissionError("events is forbidden")


def test_events_the_api_refuses_are_counted_told_once_and_given_up_after_twenty():
    world = _world(jobs={"remaining_list": [3000.0, 3000.0, 3000.0]})
    cloud, cluster, clock = connect(world)
    forbidden = _EventsForbidden(cluster)
    events = []
    report = run_rollout(cloud, forbidden, clock, RolloutOptions(cluster_name=CLUSTER), on_event=events.append)
    assert report.outcome == "completed", report.reason
    assert report.events_failed == forbidden.tries == 20 and report.events_written == 0
    [told] = [e for e in events if e["event"] == "events_unavailable"]
    assert told["reason"] == "cannot record Kubernetes Events: PermissionError: events is forbidden"


def test_kubernetes_events_say_what_the_rollout_did_to_each_node_and_waits_for_on_each_pod():
    world = _world(jobs={"remaining_list": [3000.0, 3000.0, 3000.0]})
    report, _, _ = _run(world)
    assert report.outcome == "completed", report.reason
    told = sorted((ev.kind, ev.reason, ev.type, ev.action) for ev in world.events.values())
    assert told == sorted([("Node", "RolloutCordoned", "Normal", "Cordon")] * 3
                          + [("Node", "RolloutTerminating", "Normal", "Terminate")] * 3
                          + [("Pod", "RolloutWaiting", "Normal", "Wait")] * 3)


def test_events_the_api_throttles_are_counted_and_written_later():
    world = _world(jobs={"remaining_list": [3000.0, 3000.0, 3000.0]})
    cloud, cluster, clock = connect(world)

    class Busy(_EventsForbidden):
        def record_event(self, event):
            self.tries += 1
            if self.tries <= 3:
                raise Throttled("events: 429 Too Many Requests")
            self._cluster.record_event(event)

    events = []
    report = run_rollout(cloud, Busy(cluster), clock, RolloutOptions(cluster_name=CLUSTER), on_event=events.append)
    assert report.outcome == "completed", report.reason
    assert report.events_failed == 3 and report.events_written == len(world.events) == 9
    assert not [e for e in events if e["event"] == "events_unavailable"]


def test_a_version_published_mid_rollout_is_followed_and_said_so():
    world = _world(jobs={"remaining_list": [3000.0, 3000.0, 3000.0]}, faults=[{"kind": "publish", "at_seconds": 900}])
    report, events, _ = _run(world)
    assert report.outcome == "completed", report.reason
    moved = [e for e in events if e["event"] == "target_moved"]
    assert moved and moved[0]["group"] == "gpu-a" and moved[0]["version"] == "3"
    assert moved[0]["reason"].startswith("gpu-a moved on to launch template version 3 (was 2)")


def test_a_write_rejected_four_cycles_in_a_row_from_the_first_is_retried_and_the_fifth_succeeds():
    world = _world()
    cloud, cluster, clock = connect(world)

    class Flaky:
        tries = 0

        def __getattr__(self, name):
            return getattr(cloud, name)

        def set_instance_protection(self, *a, **kw):      # the rollout's very first write
            Flaky.tries += 1
            if Flaky.tries <= 4:
                raise RuntimeError("conflict")
            return cloud.set_instance_protection(*a, **kw)

    report = run_rollout(Flaky(), cluster, clock, RolloutOptions(cluster_name=CLUSTER))
    assert report.outcome == "completed", report.reason
    assert Flaky.tries >= 5


def test_a_paused_autoscaler_that_cannot_be_scaled_back_is_not_reported_restored():
    world = _world()
    cloud, cluster, clock = connect(world)

    class StuckAutoscaler:
        def __getattr__(self, name):
            return getattr(cluster, name)

        def scale_autoscaler(self, replicas):
            if replicas > 0:
                raise RuntimeError("deployments is forbidden")
            return cluster.scale_autoscaler(replicas)

    events = []
    report = run_rollout(TerminateFails(cloud), StuckAutoscaler(), clock,
                         RolloutOptions(cluster_name=CLUSTER, pause_autoscaler=True), on_event=events.append)
    assert report.outcome == "failed" and "boom" in report.reason
    assert world.autoscaler_replicas == 0 and report.autoscaler_restored is False
    assert any(e["event"] == "error" and "could not restore cluster-autoscaler" in e["reason"] for e in events)
