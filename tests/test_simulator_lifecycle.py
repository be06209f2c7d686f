"""The simulator's pod lifecycle, as Kubernetes runs it: Pending before Running, graceful deletion
(a deletion timestamp, the node kept for the grace period), the Eviction API deciding from the
PodDisruptionBudget's status (spent on a grant, recomputed by the disruption controller) and the Job
controller recreating failed pods up to backoffLimit. Each test pins one step the engine relies on."""

from __future__ import annotations

import pytest

from automation.cli import main as automation_main
from automation.rollout import pods as pod_filters
from automation.rollout.ports import EvictionResult
from automation.rollout.sim import load_scenario, simulate
from automation.rollout.sim.ports import connect
from automation.rollout.sim.world import World


def world(**over) -> World:
    data = {"seed": 5, "boot_seconds": 240, "warm_seconds": 60, "autoscaler": False,
            "node_groups": [{"name": "gpu-a", "nodes": 4, "max_size": 8, "pods_per_node": 2}],
            "pod_start_seconds": 10, "termination_grace_seconds": 30}
    data.update(over)
    return World(load_scenario(data), roll=False)


def service_pods(w: World, ready: bool = True) -> list[str]:
    return sorted(k for k, i in w.pinfo.items() if i.kind == "service" and i.ready == ready
                  and not w.pods[k].deleting)


def job_pods(w: World, job: str | None = None) -> list[str]:
    return sorted(k for k, i in w.pinfo.items() if i.kind == "job" and (job is None or i.job == job))


def test_a_bound_pod_is_pending_on_its_node_until_it_has_started():
    w = world(jobs={"arrivals_per_hour": 3600, "duration_seconds": [900, 900]})
    w.advance_to(5)
    [first, *_] = sorted(job_pods(w), key=lambda k: w.pods[k].created_at)
    bound_at = w.pods[first].created_at            # free slots: bound as soon as it is created
    w.advance_to(bound_at + 9.9)
    pod = w.pods[first]
    assert pod.node_name is not None and pod.phase == "Pending"     # on its node, pulling and starting
    w.advance_to(bound_at + 10)
    assert w.pods[first].phase == "Running"
    assert w.waits[0] == pytest.approx(10)         # it waited until it ran, not until it was bound


def test_an_evicted_pod_is_terminating_on_its_node_for_its_grace_period_then_gone():
    w = world(jobs={"remaining_list": [5000]})
    [key] = job_pods(w)
    node = w.pods[key].node_name
    cloud, cluster, clock = connect(w)
    assert cluster.evict("ml", key.split("/")[1]) is EvictionResult.EVICTED
    w.advance_to(29.9)
    [seen] = [p for p in cluster.list_pods() if p.key == key]
    assert seen.deleting and seen.node_name == node and seen.phase == "Running"    # terminating, still there
    assert pod_filters.still_leaving(seen)                                          # what the drain waits for
    assert job_pods(w) == [key]                   # no second pod of the Job while the first holds the GPU
    w.advance_to(30)
    assert key not in w.pods and key not in w.pods_by_node[node]
    assert w.pods_terminated == 1 and w.jobs_interrupted == 1 and w.jobs_retried == 1
    [retry] = job_pods(w)
    assert w.pinfo[retry].attempt == 1 and w.pods[retry].phase == "Pending"


def test_a_service_pod_exits_on_sigterm_and_its_replicaset_replaces_it_at_once():
    w = world(services=[{"name": "api", "replicas": 2, "max_unavailable": 1, "stop_seconds": 4}])
    key = service_pods(w)[0]
    assert w.evict(key) == "evicted"
    assert w.pods[key].deleting and len(service_pods(w, ready=False)) == 1        # the replacement, Pending
    w.advance_to(3.9)
    assert key in w.pods
    w.advance_to(4)
    assert key not in w.pods


def test_the_rollout_never_terminates_a_node_while_a_pod_on_it_is_terminating():
    data = {"seed": 11, "boot_seconds": 240, "warm_seconds": 60, "deadline_seconds": 7200, "autoscaler": True,
            "node_groups": [{"name": "gpu-a", "nodes": 6, "max_size": 12, "pods_per_node": 2}],
            "jobs": {"running": 4, "remaining_seconds": [60, 1200]},
            "services": [{"name": "api", "replicas": 6, "min_available": 4, "stop_seconds": 90}],
            "termination_grace_seconds": 120}
    deferred = []
    report = simulate(load_scenario(data), on_event=lambda e: deferred.append(e)
                      if e.get("event") == "terminate_deferred" else None).report
    assert report["outcome"] == "completed" and report["old_nodes_remaining"] == 0
    assert deferred == []        # the engine itself waited: the runner's last look never had to catch it
    assert report["pods_terminated"] >= 6                       # every evicted service pod took its 90 s
    assert report["terminated_with_terminating_pods"] == 0
    assert report["terminating_pods_cut_short"] == 0
    assert report["pdb_violations"] == 0 and report["jobs_interrupted"] == 0


def test_the_simulator_sees_a_rollout_that_ignores_terminating_pods(monkeypatch):
    # The instrument of the test above: an engine (and runner) that no longer waits for a pod that
    # is leaving terminates nodes under terminating pods, and the simulator counts every one.
    def gone_already(pod, kinds):            # the broken line: a terminating pod treated as gone
        return pod_filters.PodVerdict(pod_filters.IGNORE, "terminating") if pod.deleting else None
    monkeypatch.setattr(pod_filters, "FILTERS", tuple(gone_already if f is pod_filters.terminating_filter else f
                                                      for f in pod_filters.FILTERS))
    monkeypatch.setattr(pod_filters, "_memo", {})
    data = {"seed": 11, "boot_seconds": 240, "warm_seconds": 60, "deadline_seconds": 7200, "autoscaler": True,
            "node_groups": [{"name": "gpu-a", "nodes": 6, "max_size": 12, "pods_per_node": 2}],
            "services": [{"name": "api", "replicas": 6, "min_available": 4, "stop_seconds": 90}],
            "termination_grace_seconds": 120}
    report = simulate(load_scenario(data)).report
    assert report["terminated_with_terminating_pods"] > 0 and report["terminating_pods_cut_short"] > 0


def test_a_second_eviction_in_the_same_instant_is_refused_because_the_first_spent_the_budget():
    w = world(services=[{"name": "api", "replicas": 3, "min_available": 2, "start_seconds": 5}])
    cloud, cluster, clock = connect(w)
    [pdb] = cluster.list_pdbs()
    assert pdb.disruptions_allowed == 1
    first, second = (k.split("/")[1] for k in service_pods(w)[:2])
    assert cluster.evict("default", first) is EvictionResult.EVICTED
    # No time has passed: the disruption controller has not looked again; the grant's decrement alone says 0.
    assert cluster.list_pdbs()[0].disruptions_allowed == 0
    assert cluster.evict("default", second) is EvictionResult.BLOCKED          # 429: the budget is spent
    assert w.evictions_refused == 1 and w.pdb_violations == 0
    # The controller has looked again; the first pod, still terminating (5 s to stop), is not healthy.
    w.advance_to(w.now + 1)
    assert w.pods[f"default/{first}"].deleting
    assert cluster.list_pdbs()[0].disruptions_allowed == 0
    assert cluster.evict("default", second) is EvictionResult.BLOCKED
    # The replacement: bound, Pending 10 s, Running, Ready 5 s later — only then is the budget back.
    w.advance_to(w.now + 9)
    assert cluster.list_pdbs()[0].disruptions_allowed == 0
    assert cluster.evict("default", second) is EvictionResult.BLOCKED          # Running, not yet Ready
    w.advance_to(w.now + 4.9)
    assert cluster.list_pdbs()[0].disruptions_allowed == 0
    w.advance_to(w.now + 0.1)
    assert cluster.list_pdbs()[0].disruptions_allowed == 1                     # recomputed from the pods
    assert cluster.evict("default", second) is EvictionResult.EVICTED


def test_the_budget_is_recomputed_as_pods_go_with_their_node():
    w = world(services=[{"name": "api", "replicas": 4, "max_unavailable": 2}])
    assert w.pdb_views()[0].disruptions_allowed == 2
    node = next(n for n in w.nodes if any(w.pinfo[k].kind == "service" for k in w.pods_by_node[n]))
    lost = sum(1 for k in w.pods_by_node[node] if w.pinfo[k].kind == "service")
    w._kill_instance(w.node_inst[node], cause="fault", decrement=False)
    w.advance_to(w.now)
    assert w.pdb_views()[0].disruptions_allowed == max(0, 2 - lost)


def test_an_unhealthy_pod_is_evicted_only_while_the_budget_has_its_healthy_pods():
    # unhealthyPodEvictionPolicy IfHealthyBudget (the default): a Running pod that is not Ready goes
    # without spending the budget, but not while the budget is short of healthy pods.
    w = world(services=[{"name": "api", "replicas": 2, "min_available": 2, "start_seconds": 60}])
    healthy = service_pods(w)[0]
    w._kill_instance(w.node_inst[w.pods[healthy].node_name], cause="fault", decrement=False)
    w.advance_to(w.now + 10)                                   # the replacement runs, not Ready for 60 s
    [starting] = service_pods(w, ready=False)
    assert w.pods[starting].phase == "Running"
    assert w.evict(starting) == "blocked"                      # 1 healthy of 2 needed
    w2 = world(services=[{"name": "api", "replicas": 3, "min_available": 1, "start_seconds": 60}])
    one = service_pods(w2)[0]
    w2._kill_instance(w2.node_inst[w2.pods[one].node_name], cause="fault", decrement=False)
    w2.advance_to(w2.now + 10)
    before = w2.pdb_views()[0].disruptions_allowed
    [starting] = service_pods(w2, ready=False)
    assert w2.evict(starting) == "evicted" and w2.pdb_views()[0].disruptions_allowed == before


def test_a_job_pod_that_finishes_within_its_grace_period_succeeds():
    w = world(jobs={"remaining_list": [20]})
    [key] = job_pods(w)
    assert w.evict(key) == "evicted"
    w.advance_to(19.9)
    assert w.pods[key].deleting and w.pods[key].phase == "Running"
    w.advance_to(20)
    assert key not in w.pods
    assert (w.jobs_completed, w.jobs_finished_in_grace, w.jobs_interrupted, w.jobs_retried) == (1, 1, 0, 0)


def test_a_job_pod_that_fails_in_its_grace_period_is_recreated_until_the_backoff_limit():
    w = world(jobs={"remaining_list": [5000], "backoff_limit": 2, "sigterm_exit_seconds": 5})
    [key] = job_pods(w)
    job = w.pinfo[key].job
    for attempt in range(3):
        [key] = job_pods(w, job)
        assert w.pinfo[key].attempt == attempt
        if w.pods[key].phase == "Pending":
            w.advance_to(w.now + 10)                  # bound, starting
        assert w.pods[key].phase == "Running"
        assert w.evict(key) == "evicted"
        w.advance_to(w.now + 4.9)
        assert job_pods(w, job) == [key]              # its replacement waits until it has failed
        w.advance_to(w.now + 0.1)                     # it exits on SIGTERM, failed, inside its 30 s
        assert key not in w.pods
    assert job_pods(w, job) == []                     # out of retries: the Job has failed
    assert (w.jobs_retried, w.jobs_failed, w.jobs_interrupted) == (2, 1, 3)


@pytest.mark.parametrize("key, value, expected", [
    ("pod_start_seconds", -1, "pod_start_seconds: input should be greater than or equal to 0"),
    ("pod_start_seconds", "10", "pod_start_seconds: input should be a valid number"),
    ("termination_grace_seconds", 90000, "termination_grace_seconds: input should be less than or equal to 86400"),
    ("termination_grace_seconds", ".nan", "termination_grace_seconds: input should be a finite number"),
])
def test_a_bad_lifecycle_value_exits_2_naming_its_key(tmp_path, capsys, key, value, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(f"node_groups: [{{name: a, nodes: 1}}]\n{key}: {value if value != '10' else repr(value)}\n")
    assert automation_main(["simulate", "--scenario", str(path)]) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("extra, expected", [
    ("services: [{name: api, replicas: 2, min_available: 1, max_unavailable: 1}]",
     "services[0].min_available: give exactly one of min_available and max_unavailable"),
    ("services: [{name: api, replicas: 2}]", "services[0].min_available: give exactly one"),
    ("services: [{name: api, replicas: 2, max_unavailable: 3}]", "services[0].max_unavailable: must be at most replicas"),
    ("jobs: {backoff_limit: -1}", "jobs.backoff_limit: input should be greater than or equal to 0"),
    ("jobs: {sigterm_exit_seconds: -5}", "jobs.sigterm_exit_seconds: input should be greater than or equal to 0"),
    ("services: [{name: api, replicas: 2, min_available: 1, stop_seconds: true}]",
     "services[0].stop_seconds: input should be a valid number"),
])
def test_bad_pod_and_budget_keys_exit_2_naming_the_key(tmp_path, capsys, extra, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(f"node_groups: [{{name: a, nodes: 1}}]\n{extra}\n")
    assert automation_main(["simulate", "--scenario", str(path)]) == 2
    assert expected in capsys.readouterr().err
