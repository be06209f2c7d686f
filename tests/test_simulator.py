"""The real engine and runner against the simulated fleet: a table of
scenarios, every fault, the scenario parser, the ``simulate`` command and the
runner's exit paths (lock, dry run, failure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from automation.cli import main as automation_main
from automation.rollout.model import TAG_INTENT_PREFIX
from automation.rollout.runner import RolloutOptions, run_rollout
from automation.rollout.sim import (GroupSpec, JobsSpec, Scenario, ScenarioError, load_scenario, simulate)
from automation.rollout.sim.ports import connect
from automation.rollout.sim.world import CLUSTER, OLD_VERSION, World

ROOT = Path(__file__).resolve().parent.parent


def scenario(**over) -> dict:
    base = {"seed": 3, "boot_seconds": 240, "warm_seconds": 60, "deadline_seconds": 7200, "autoscaler": True,
            "node_groups": [{"name": "gpu-a", "nodes": 6, "max_size": 12, "pods_per_node": 1}],
            "jobs": {"running": 6, "remaining_seconds": [60, 3000], "arrivals_per_hour": 6,
                     "duration_seconds": [600, 1800]}}
    base.update(over)
    return base


def assert_safe(report: dict, outcome: str = "completed") -> None:
    assert report["outcome"] == outcome, report
    assert report["jobs_interrupted"] == 0
    assert report["pdb_violations"] == 0
    assert report["old_nodes_remaining"] == 0
    assert report["autoscaler_restored"] and report["max_size_restored"]
    assert report["intent_cleared"] and report["lock_released"]


TABLE = {
    "one pod per GPU node": scenario(),
    "many short Jobs": scenario(
        node_groups=[{"name": "gpu-a", "nodes": 4, "max_size": 8, "pods_per_node": 4}],
        jobs={"running": 16, "remaining_seconds": [30, 300], "arrivals_per_hour": 120,
              "duration_seconds": [60, 300]}),
    "PDB-protected service": scenario(services=[{"name": "api", "replicas": 6, "min_available": 5}],
                                      daemonsets=True),
    "spot groups": scenario(node_groups=[
        {"name": "spot-a", "nodes": 3, "max_size": 6, "capacity_type": "spot"},
        {"name": "spot-b", "zone": "us-east-2b", "nodes": 3, "max_size": 6, "capacity_type": "spot",
         "pods_per_node": 2}],
        jobs={"running": 7, "remaining_seconds": [60, 2000], "selector_group": True, "arrivals_per_hour": 10},
        faults=[{"kind": "node_loss", "at_seconds": 400}]),
    "empty cluster": scenario(node_groups=[], jobs={}),
    "groups without Jobs": scenario(jobs={}),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_scenario_table(name):
    s = load_scenario(TABLE[name])
    report = simulate(s).report
    assert_safe(report)
    assert report["proof_violations"] == 0
    if report["lower_bound_seconds"]:
        # Reacts to Jobs finishing through the watches: close to the lower bound — plus, with Jobs
        # arriving, the longest of those that started on an old node while the canary proved itself.
        bound = report["lower_bound_seconds"]
        if s.jobs.arrivals_per_hour:
            bound = max(bound, s.boot_seconds + s.warm_seconds + s.jobs.duration_seconds[1])
        assert report["makespan_seconds"] <= 1.05 * bound + 60, report
    assert report["max_reads_per_cycle"] <= 12


def test_jobs_that_outlive_the_deadline_are_forced_after_it_and_reported_separately():
    report = simulate(load_scenario(scenario(deadline_seconds=1800,
                                             jobs={"remaining_list": [600, 1200, 4000, 9000, 100, 200]}))).report
    assert_safe(report)
    assert report["jobs_force_evicted"] == 2
    assert 1800 <= report["makespan_seconds"] <= 1800 + 120


def test_a_deadline_extension_annotation_is_honoured():
    report = simulate(load_scenario(scenario(deadline_seconds=1800, jobs={
        "remaining_list": [3000, 100], "deadline_extension_seconds": 3600}))).report
    assert_safe(report)
    assert report["jobs_force_evicted"] == 0 and report["makespan_seconds"] >= 3000


def test_thousand_nodes_once_cheaply():
    report = simulate(load_scenario({
        "seed": 1, "autoscaler": False,
        "node_groups": [{"name": f"g{i}", "nodes": 250, "max_size": 500} for i in range(4)],
        "jobs": {"remaining_list": [300.0] * 1000}})).report
    assert_safe(report)
    assert report["nodes"] == 1000 and report["final_nodes"] == 1000
    assert report["max_reads_per_cycle"] <= 12
    assert report["wall_seconds"] < 30


def test_a_whole_rollout_with_pytorchjob_pods_interrupts_none_of_them():
    s = load_scenario(scenario(jobs={"running": 6, "remaining_seconds": [600, 3000], "arrivals_per_hour": 6,
                                     "duration_seconds": [600, 1800], "owner_kind": "PyTorchJob"}))
    result = simulate(s)
    assert_safe(result.report)
    assert result.report["jobs_interrupted"] == 0 and result.report["jobs_force_evicted"] == 0
    assert result.report["makespan_seconds"] >= 600          # it waited for the training runs
    assert result.rollout.pods_evicted == 0                  # not one of them was evicted


def test_raycluster_pods_are_evicted_by_default_and_protected_when_added():
    s = load_scenario(scenario(jobs={"running": 6, "remaining_seconds": [1800, 3000], "owner_kind": "RayCluster"}))
    default = simulate(s).report
    assert default["outcome"] == "completed" and default["jobs_interrupted"] == 6   # a long-lived service to kiln
    added = simulate(s, job_owner_kinds=frozenset({"Job", "RayCluster"})).report
    assert_safe(added)
    assert added["jobs_force_evicted"] == 0 and added["makespan_seconds"] >= 1800


def test_double_and_drain_reproduces_the_script_and_surges_much_more():
    s = load_scenario(scenario(jobs={"running": 6, "remaining_seconds": [600, 3000]}))
    ours, dd = simulate(s).report, simulate(s, "double-and-drain").report
    assert_safe(ours)
    assert_safe(dd)
    assert ours["surge_node_seconds"] <= 0.5 * dd["surge_node_seconds"]
    assert dd["restarts"] == 0 and dd["autoscaler_restored"]   # paused, then restored


def test_same_seed_same_report():
    s = load_scenario(scenario(services=[{"name": "api", "replicas": 3, "min_available": 2}]))
    a, b = simulate(s).report, simulate(s).report
    a.pop("wall_seconds"), b.pop("wall_seconds")
    assert a == b


def test_timeline_samples_the_rollout():
    result = simulate(load_scenario(scenario(sample_seconds=120)))
    first, last = result.timeline[0], result.timeline[-1]
    assert set(first) == {"t", "old_nodes", "new_nodes", "jobs_running", "jobs_pending", "deadline_at"}
    assert first["t"] == 0 and first["old_nodes"] == 6 and first["jobs_running"] == 6
    assert last["old_nodes"] == 0 and last["deadline_at"] == 7200
    assert [s["t"] for s in result.timeline] == sorted(s["t"] for s in result.timeline)


# ---------------------------------------------------------------- faults

@pytest.mark.parametrize("after", [1, 2, 5, 9, 25])
def test_crash_at_any_point_resumes_and_converges(after):
    report = simulate(load_scenario(scenario(
        services=[{"name": "api", "replicas": 3, "min_available": 2}],
        faults=[{"kind": "crash", "after_actions": after}]))).report
    assert_safe(report)
    assert report["restarts"] == 1


@pytest.mark.parametrize("after", [1, 3, 20])
def test_crash_with_paused_autoscaler_restores_it_on_the_next_run(after):
    report = simulate(load_scenario(scenario(pause_autoscaler=True, faults=[{"kind": "crash", "after_actions": after}])),
                      "default").report
    assert_safe(report)
    report = simulate(load_scenario(scenario(faults=[{"kind": "crash", "after_actions": after}])),
                      "double-and-drain").report
    assert_safe(report)


def test_bad_ami_rolls_back_without_interrupting_a_job():
    events = []
    result = simulate(load_scenario(scenario(ready_timeout_seconds=900, faults=[{"kind": "bad_ami"}])),
                      on_event=events.append)
    assert_safe(result.report, "rolled_back")
    assert "not Ready" in result.report["reason"]
    assert result.report["original_nodes_removed"] == 0 and result.report["final_nodes"] == 6
    assert any(e["event"] == "rollback" for e in events)
    assert result.report["makespan_seconds"] < 900 + 300
    # The timeline counts nodes on the pre-rollout image as old: all six are back on it, none on the bad one.
    assert (result.timeline[-1]["old_nodes"], result.timeline[-1]["new_nodes"]) == (6, 0)


def test_bad_ami_with_a_crash_during_rollback_still_rolls_back():
    report = simulate(load_scenario(scenario(ready_timeout_seconds=600,
                                             faults=[{"kind": "bad_ami"}, {"kind": "crash", "after_actions": 14}]))).report
    assert_safe(report, "rolled_back")
    assert report["restarts"] == 1


def test_throttling_is_retried():
    report = simulate(load_scenario(scenario(faults=[{"kind": "throttle", "rate": 0.5}]))).report
    assert_safe(report)
    assert report["throttled_calls"] > 0


def test_node_loss_is_not_counted_as_an_interruption():
    report = simulate(load_scenario(scenario(jobs={"running": 6, "remaining_seconds": [2000, 3000]},
                                             faults=[{"kind": "node_loss", "at_seconds": 100}]))).report
    assert_safe(report)
    assert report["jobs_lost_to_faults"] == 1


# ---------------------------------------------------------------- runner exit paths

def _world(**over):
    return World(load_scenario(scenario(**over)))


def test_a_second_rollout_is_refused_while_the_lease_is_held():
    world = _world()
    world.lease = ("someone-else", world.now + 600)
    cloud, cluster, clock = connect(world)
    report = run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER))
    assert report.outcome == "failed" and "lock" in report.reason
    assert world.writes == 1 and all(i.version == OLD_VERSION for i in world.insts.values())


def test_an_expired_lease_of_another_holder_is_taken_over():
    world = _world(jobs={"remaining_list": [100.0]})
    world.lease = ("crashed-elsewhere", world.now - 1)
    cloud, cluster, clock = connect(world)
    report = run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER))
    assert report.outcome == "completed" and world.lease is None


def test_dry_run_plans_and_changes_nothing():
    world = _world()
    cloud, cluster, clock = connect(world)
    report = run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER, dry_run=True))
    assert report.outcome == "dry_run" and report.old_nodes_at_start == 6
    # The first cycle protects the group from scale-in and asks for the canary only: nothing old
    # is touched before it is proven.
    ids = tuple(sorted(world.insts))
    assert report.plan == [f"Protect(asg='gpu-a', instance_ids={ids!r}, protected=True)",
                           "SetCapacity(asg='gpu-a', desired=7, max_size=12)"]
    assert world.writes == 0 and world.intent is None and len(world.insts) == 6


def test_an_unexpected_error_fails_but_restores_the_paused_autoscaler_and_keeps_intent():
    world = _world()
    cloud, cluster, clock = connect(world)

    class Broken:
        def __getattr__(self, name):
            return getattr(cloud, name)

        def terminate_instance(self, *a, **kw):
            raise RuntimeError("boom")

    report = run_rollout(Broken(), cluster, clock, RolloutOptions(cluster_name=CLUSTER, pause_autoscaler=True))
    assert report.outcome == "failed" and "boom" in report.reason
    assert world.autoscaler_replicas == 1 and report.autoscaler_restored
    assert world.intent is not None and world.intent.pause_autoscaler     # a rerun resumes
    rerun = run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER))
    assert rerun.outcome == "completed" and rerun.resumed and world.intent is None
    assert world.autoscaler_replicas == 1 and world.jobs_interrupted == 0
    assert not any(k.startswith(TAG_INTENT_PREFIX) for g in world.groups.values() for k in g.tags)


def test_nothing_to_do_completes_without_writing_intent():
    world = _world()
    for g in world.groups.values():
        g.version = OLD_VERSION
        g.frozen = None
    cloud, cluster, clock = connect(world)
    report = run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER))
    assert report.outcome == "completed" and report.reason == "no old nodes"
    assert world.intent is None and world.lease is None
    assert world.writes == 2        # the Lease taken and given back; no intent, tag, cordon or capacity change
    assert not any(k.startswith(TAG_INTENT_PREFIX) for g in world.groups.values() for k in g.tags)


def test_runner_validates_options():
    world = _world()
    cloud, cluster, clock = connect(world)
    with pytest.raises(ValueError, match="--surge"):
        run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER, surge="lots"))
    with pytest.raises(ValueError, match="--deadline"):
        run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER, deadline_seconds=0))
    for kinds in (frozenset(), frozenset({"pytorchjob"}), frozenset({""}), frozenset({"DaemonSet"}), "Job"):
        with pytest.raises(ValueError, match="--job-kinds"):
            run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER, job_owner_kinds=kinds))
    assert world.writes == 0 and world.reads == 0      # rejected before touching the world


# ---------------------------------------------------------------- scenarios and the command

@pytest.mark.parametrize("mutate,key", [
    (lambda d: d.update(boot_secs=1), "boot_secs"),
    (lambda d: d["node_groups"][0].update(max_size=2), "node_groups[0].max_size"),
    (lambda d: d["node_groups"][0].pop("nodes"), "node_groups[0].nodes"),
    (lambda d: d["jobs"].update(running=99), "jobs.running"),
    (lambda d: d["jobs"].update(remaining_seconds=[5, 1]), "jobs.remaining_seconds"),
    (lambda d: d.update(faults=[{"kind": "meteor"}]), "faults[0].kind"),
    (lambda d: d.update(faults=[{"kind": "throttle", "rate": 2}]), "faults[0].rate"),
    (lambda d: d.update(services=[{"name": "api", "replicas": 2, "min_available": 3}]), "services[0].min_available"),
    (lambda d: d.update(autoscaler="yes"), "autoscaler"),
    (lambda d: d.update(surge="many"), "surge"),
    (lambda d: d.pop("node_groups"), "node_groups"),
    (lambda d: d["jobs"].update(owner_kind="pytorch job"), "jobs.owner_kind"),
    (lambda d: d["jobs"].update(owner_kind=""), "jobs.owner_kind"),
])
def test_bad_scenarios_name_the_key(mutate, key):
    data = scenario()
    mutate(data)
    with pytest.raises(ScenarioError) as err:
        load_scenario(data)
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_scenarios_are_constructible_in_code():
    s = Scenario(node_groups=(GroupSpec("g", nodes=2),), jobs=JobsSpec(remaining_list=(100.0, 200.0)), seed=1)
    report = simulate(s).report
    assert_safe(report)
    assert report["lower_bound_seconds"] == 300.0       # boot + warm is longer than the longest Job


def run_cli(argv):
    try:
        return automation_main(["simulate", *argv])
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_simulate_command_json_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(json.dumps(scenario()))
    assert run_cli(["--scenario", str(good), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert report["outcome"] == "completed" and report["jobs_interrupted"] == 0
    assert all(json.loads(line)["event"] for line in out[:-1])

    rolled = tmp_path / "bad-ami.yaml"
    rolled.write_text(json.dumps(scenario(faults=[{"kind": "bad_ami"}], ready_timeout_seconds=600)))
    assert run_cli(["--scenario", str(rolled), "--json"]) == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["outcome"] == "rolled_back"

    broken = tmp_path / "broken.yaml"
    broken.write_text("node_groups: [{name: a, nodes: -1}]\n")
    assert run_cli(["--scenario", str(broken)]) == 2
    assert "node_groups[0].nodes" in capsys.readouterr().err
    assert run_cli(["--scenario", str(tmp_path / "missing.yaml")]) == 2


def test_simulate_command_prints_a_report_for_people(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(scenario()))
    assert run_cli(["--scenario", str(path), "--strategy", "double-and-drain", "--timeline",
                    str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "makespan_seconds" in out and "double-and-drain" in out
    assert json.loads((tmp_path / "t.json").read_text())[0]["old_nodes"] == 6


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_reference_scenarios_parse(path):
    s = load_scenario(path)
    assert s.node_groups and s.name == path.stem


@pytest.mark.parametrize("name,outcome,code", [("issue-example", "rolled_back", 1),
                                               ("crash-throttle-node-loss", "completed", 0)])
def test_the_issue_example_scenarios_through_the_command(name, outcome, code, capsys):
    assert run_cli(["--scenario", str(ROOT / "scenarios" / f"{name}.yaml"), "--json"]) == code
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert_safe(report, outcome)
    assert report["restarts"] == 1 and report["throttled_calls"] > 0


# ---------------------------------------------------------------- review: lock, signals, back-off

class _HookedCloud:
    """The simulator's cloud, with a hook run at each reconcile's first read."""

    def __init__(self, cloud, hook):
        self._cloud, self._hook, self.cycles = cloud, hook, 0

    def __getattr__(self, name):
        return getattr(self._cloud, name)

    def list_groups(self, cluster):
        self.cycles += 1
        self._hook(self.cycles)
        return self._cloud.list_groups(cluster)


def test_two_rollouts_with_default_options_do_not_both_hold_the_lock():
    world = _world(jobs={"remaining_list": [2000.0]})
    cloud, cluster, clock = connect(world)
    second = []

    def start_another(n):
        if n == 3:       # the first rollout is under way and holds the Lease
            c2, k2, t2 = connect(world)
            second.append(run_rollout(c2, k2, t2, RolloutOptions(cluster_name=CLUSTER)))

    first = run_rollout(_HookedCloud(cloud, start_another), cluster, clock, RolloutOptions(cluster_name=CLUSTER))
    assert second[0].outcome == "failed" and "lock" in second[0].reason and second[0].cycles == 0
    assert first.outcome == "completed" and world.jobs_interrupted == 0


def test_the_lease_is_renewed_during_a_long_cycle_and_never_lapses_while_acting():
    world = _world(jobs={})            # six idle old nodes: six cordons in the first cycle
    cloud, cluster, clock = connect(world)
    lapsed = []

    class SlowCluster:
        def __getattr__(self, name):
            return getattr(cluster, name)

        def cordon(self, *a, **kw):    # a slow, throttled API: 50 s per cordon
            if world.lease is None or world.lease[1] <= world.now:
                lapsed.append(world.now)
            cluster.cordon(*a, **kw)
            world.advance_to(world.now + 50)

    report = run_rollout(cloud, SlowCluster(), clock, RolloutOptions(cluster_name=CLUSTER))
    assert report.outcome == "completed"
    assert lapsed == []                # another rollout could have taken over while we cordoned


def test_after_losing_the_lock_the_runner_writes_nothing_not_even_the_autoscaler():
    world = _world(jobs={"remaining_list": [3000.0]})
    cloud, cluster, clock = connect(world)

    def taken_over(n):
        if n == 5:   # our lease lapsed (a long GC pause, say) and another rollout took it
            assert world.autoscaler_replicas == 0
            world.lease = ("another-rollout", world.now + 10_000)

    report = run_rollout(_HookedCloud(cloud, taken_over), cluster, clock,
                         RolloutOptions(cluster_name=CLUSTER, pause_autoscaler=True))
    assert report.outcome == "failed" and "lost the lock" in report.reason
    assert world.autoscaler_replicas == 0      # the rollout now holding the lock paused it; hands off
    assert world.lease[0] == "another-rollout"


def test_sigterm_restores_the_paused_autoscaler_and_releases_the_lock():
    import subprocess
    import sys
    script = """
import os, signal, json
from automation.rollout.sim import load_scenario
from automation.rollout.sim.ports import connect
from automation.rollout.sim.world import CLUSTER, World
from automation.rollout.runner import RolloutOptions, run_rollout
world = World(load_scenario({"seed": 3, "autoscaler": True, "jobs": {"remaining_list": [3000.0]},
                             "node_groups": [{"name": "gpu-a", "nodes": 3, "max_size": 6}]}))
cloud, cluster, clock = connect(world)
class Cloud:
    n = 0
    def __getattr__(self, name): return getattr(cloud, name)
    def list_groups(self, name):
        Cloud.n += 1
        if Cloud.n == 5:
            assert world.autoscaler_replicas == 0
            os.kill(os.getpid(), signal.SIGTERM)
        return cloud.list_groups(name)
report = run_rollout(Cloud(), cluster, clock, RolloutOptions(cluster_name=CLUSTER, pause_autoscaler=True))
print(json.dumps({"outcome": report.outcome, "reason": report.reason, "replicas": world.autoscaler_replicas,
                  "lease": world.lease, "intent": world.intent is not None,
                  "handler_restored": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "failed" and "SIGTERM" in result["reason"]
    assert result["replicas"] == 1 and result["lease"] is None
    assert result["intent"] and result["handler_restored"]       # a rerun resumes


def test_evictions_a_pdb_refuses_back_off_instead_of_retrying_every_few_seconds():
    # The PDB status the rollout reads says one disruption is allowed, the Eviction
    # API says 429 every time (a stale status, or a budget the reader cannot match).
    world = _world(jobs={}, deadline_seconds=600, services=[{"name": "api", "replicas": 2, "min_available": 2}])
    cloud, cluster, clock = connect(world)

    class StalePdbs:
        def __getattr__(self, name):
            return getattr(cluster, name)

        def list_pdbs(self):
            from dataclasses import replace
            return [replace(p, disruptions_allowed=1) for p in cluster.list_pdbs()]

    report = run_rollout(cloud, StalePdbs(), clock, RolloutOptions(cluster_name=CLUSTER, poll_seconds=30))
    assert report.outcome == "failed" and world.pdb_violations == 0     # the budget is honoured to the end
    span = world.now - world.start_at
    assert report.evictions_blocked > 0
    # Backed off to the poll interval (or a pod change), not the 5 s settle time.
    assert report.cycles <= span / 30 * 1.2 + 20, (report.cycles, span)


def test_a_fixed_size_group_min_equals_desired_is_replaced():
    # The simulated Auto Scaling refuses a decrement below the min size, as AWS does.
    report = simulate(load_scenario(scenario(
        autoscaler=False, node_groups=[{"name": "gpu-a", "nodes": 6, "min_size": 6, "max_size": 6}],
        jobs={"remaining_list": [600, 600, 600, 600, 1200, 1200]}))).report
    assert_safe(report)
    assert report["final_nodes"] == 6


def test_a_job_pod_that_binds_after_the_snapshot_keeps_its_node():
    # A Job pod that tolerates every taint lands on a cordoned, empty old node right
    # after the rollout listed the pods: the node must not be terminated under it.
    world = _world(jobs={}, autoscaler=False)
    cloud, cluster, clock = connect(world)
    landed = []

    class LateBinding:
        def __getattr__(self, name):
            return getattr(cluster, name)

        def list_pods(self):
            pods = cluster.list_pods()
            cordoned = sorted(n for n, node in world.nodes.items() if node.unschedulable)
            if cordoned and not landed:
                key = world._new_job_pod(3000.0, arrival=False)
                world._bind(key, cordoned[0])
                landed.append((key, cordoned[0]))
            return pods                 # the list as it was a moment before the bind

    report = run_rollout(cloud, LateBinding(), clock, RolloutOptions(cluster_name=CLUSTER))
    assert landed and report.outcome == "completed"
    assert world.jobs_interrupted == 0 and world.jobs_completed == 1


def test_a_busy_pod_watch_does_not_turn_into_back_to_back_full_relists():
    # In a big cluster some pod changes every moment: the watch returns at once.
    world = _world(jobs={"remaining_list": [1500.0]}, autoscaler=False)
    cloud, cluster, clock = connect(world)

    class BusyWatch:
        def __getattr__(self, name):
            return getattr(cluster, name)

        def wait_for_change(self, timeout_seconds):
            cluster.wait_for_change(min(timeout_seconds, 0.5))   # an event every half second

    report = run_rollout(cloud, BusyWatch(), clock, RolloutOptions(cluster_name=CLUSTER))
    assert report.outcome == "completed" and world.jobs_interrupted == 0
    span = world.now - world.start_at
    assert report.cycles <= span / 5 + 10, (report.cycles, span)
