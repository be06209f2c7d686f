"""Nodes leaving by doors other than kiln's rollout, in the simulator: Auto Scaling
terminating instances on its own (scale-in, rebalance / health replacement), spot
interruptions, the termination handler restarting — with kiln's lifecycle hook and
the handler's real ``decide()`` running in the simulated cluster every 5 s, beside
a rollout and without one (``--no-rollout``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from automation.cli import main as automation_main
from automation.rollout.engine import is_live
from automation.rollout.sim import ScenarioError, load_scenario, simulate
from automation.rollout.sim.world import HANDLER_CYCLE_SECONDS, WAITING, World
from automation.termination import decisions as hd

ROOT = Path(__file__).resolve().parent.parent
REMAINING = [600.0, 900.0, 1200.0, 1500.0, 1800.0, 2100.0]


def fleet(faults, *, nodes=6, remaining=REMAINING, capacity="on-demand", **over) -> dict:
    """Every node runs one Job (one slot per node) with a known remaining time."""
    base = {"seed": 5, "boot_seconds": 240, "warm_seconds": 60,
            "node_groups": [{"name": "gpu", "nodes": nodes, "max_size": 2 * nodes, "pods_per_node": 1,
                             "capacity_type": capacity}],
            "jobs": {"remaining_list": list(remaining)}, "faults": faults}
    base.update(over)
    return base


def run(data, *, no_rollout=True, horizon=None) -> dict:
    return simulate(load_scenario(data), no_rollout=no_rollout, horizon_seconds=horizon).report


# ---- Auto Scaling on its own -------------------------------------------------------------------


def test_a_scale_in_of_n_ends_with_n_fewer_nodes_after_the_jobs_finish():
    report = run(fleet([{"kind": "asg_terminate", "group": "gpu", "count": 2, "at_seconds": 60}]), horizon=2200)
    assert report["outcome"] == "no_rollout" and report["termination_handler"] is True
    assert "termination handler" in report["reason"]
    assert (report["final_nodes"], report["final_desired"]) == (4, 4)
    assert report["jobs_interrupted"] == 0 and report["jobs_lost_to_faults"] == 0
    assert report["jobs_completed"] == 6 and report["jobs_retried"] == 0
    assert report["instances_completed_by_handler"] == 2 and report["hook_timeouts"] == 0
    # Held while their Jobs ran: the instances left when the Jobs were done, not before.
    assert report["max_hold_seconds"] >= min(REMAINING) - 60
    assert report["handler_actions"]["Heartbeat"] > 0


def test_without_the_handler_the_same_scale_in_interrupts_the_jobs_it_hits():
    report = run(fleet([{"kind": "asg_terminate", "group": "gpu", "count": 2, "at_seconds": 60}],
                       termination={"handler": False}))
    assert report["termination_handler"] is False
    assert report["final_nodes"] == 4
    assert report["jobs_interrupted"] == 2 and report["jobs_lost_to_faults"] == 0


def test_each_instance_leaves_once_its_own_job_is_done():
    world = World(load_scenario(fleet([{"kind": "asg_terminate", "group": "gpu", "count": 6, "at_seconds": 0}])),
                  roll=False)
    gone: dict[str, float] = {}
    kill = world._kill_instance

    def watch(iid, **kw):
        gone[iid] = world.now
        kill(iid, **kw)
    world._kill_instance = watch
    finished = {world.pods[k].node_name: world.pinfo[k].run_seconds for k in world.pods}
    by_node = {n: world.node_inst[n] for n in finished}
    world.advance_to(3000)
    assert world.jobs_interrupted == 0 and world.jobs_completed == 6
    for node, done in finished.items():
        # Completed at the first handler cycle after the Job finished.
        assert done <= gone[by_node[node]] <= done + HANDLER_CYCLE_SECONDS


def test_a_rebalance_replacement_launches_while_the_old_instance_waits_and_no_job_is_interrupted():
    data = fleet([{"kind": "asg_terminate", "group": "gpu", "count": 3, "at_seconds": 100, "replace": True}])
    world = World(load_scenario(data), roll=False)
    world.advance_to(101)
    group = world.groups["gpu"]
    view = world.group_view(group)
    waiting = [i for i in view.instances if i.lifecycle_state == WAITING]
    assert len(waiting) == 3 and not any(is_live(i) for i in waiting)   # the rollout's GONE_STATES
    assert len(group.insts) == group.desired == 6                       # replacements launching
    report = run(data)
    assert report["jobs_interrupted"] == 0 and report["jobs_lost_to_faults"] == 0
    assert (report["final_nodes"], report["final_desired"]) == (6, 6)
    assert report["instances_completed_by_handler"] == 3


def test_a_job_longer_than_the_hook_can_hold_is_lost_to_the_fault_not_hidden():
    # heartbeat 30 s -> global timeout 3000 s; a 1000 s grace: the 1200..2100 s Jobs cannot be held.
    report = run(fleet([{"kind": "asg_terminate", "group": "gpu", "count": 6, "at_seconds": 0}],
                       termination={"heartbeat_seconds": 30, "job_grace_seconds": 1000}))
    assert report["jobs_interrupted"] == 0
    assert report["jobs_lost_to_faults"] == 4 and report["jobs_completed"] == 2
    assert report["hook_timeouts"] == 0 and report["final_nodes"] == 0
    assert 1000 <= report["max_hold_seconds"] <= 1000 + 300 + 60


def test_a_handler_restart_mid_hold_keeps_holding_from_the_nodes_marks():
    report = run(fleet([{"kind": "asg_terminate", "group": "gpu", "count": 6, "at_seconds": 0},
                        {"kind": "handler_restart", "at_seconds": 250}],
                       termination={"heartbeat_seconds": 30, "job_grace_seconds": 2640}))
    assert report["jobs_interrupted"] == 0 and report["jobs_lost_to_faults"] == 0
    assert report["jobs_completed"] == 6 and report["hook_timeouts"] == 0
    assert report["final_nodes"] == 0


def test_with_nobody_heartbeating_the_hook_times_out_and_the_jobs_count_as_interrupted():
    world = World(load_scenario(fleet([{"kind": "asg_terminate", "group": "gpu", "count": 2, "at_seconds": 0}],
                                      termination={"heartbeat_seconds": 30, "job_grace_seconds": 2000})),
                  roll=False)
    world.handler_down_until = math.inf        # the handler never runs
    world.advance_to(31)
    assert world.hook_timeouts == 2 and world.jobs_interrupted == 2 and world.jobs_lost == 0
    assert len(world.insts) == 4


# ---- spot ----------------------------------------------------------------------------------------


def test_a_spot_interruption_cordons_at_once_and_counts_the_jobs_as_lost_to_the_fault_only():
    data = fleet([{"kind": "spot_interruption", "group": "gpu", "count": 3, "at_seconds": 50}], nodes=6,
                 remaining=[3000.0] * 3, capacity="spot",
                 jobs={"remaining_list": [3000.0] * 3, "arrivals_per_hour": 720, "duration_seconds": [3000, 3000]})
    world = World(load_scenario(data), roll=False)
    world.advance_to(50)
    warned = sorted(world.reclaims)
    assert len(warned) == 3
    world.advance_to(50 + HANDLER_CYCLE_SECONDS)
    nodes = [world.nodes[world.insts[i].node] for i in warned]
    assert all(n.unschedulable and any(t.key == hd.TAINT_TERMINATING and t.value == "spot-interruption"
                                       for t in n.taints) for n in nodes)
    on_warned = sum(1 for n in nodes for k in world.pods_by_node[n.name] if world.pinfo[k].kind == "job")
    world.advance_to(50 + 120 - 1)
    assert sum(1 for n in nodes for k in world.pods_by_node[n.name] if world.pinfo[k].kind == "job") == on_warned
    world.advance_to(50 + 120)
    assert not set(warned) & set(world.insts)              # reclaimed, whatever ran there
    assert world.jobs_lost == on_warned and world.jobs_interrupted == 0
    report = run(data)
    assert report["jobs_lost_to_faults"] >= 1 and report["jobs_interrupted"] == 0
    assert report["final_nodes"] == 6                      # Auto Scaling replaced the reclaimed instances


# ---- beside a rollout ----------------------------------------------------------------------------


def test_the_rollouts_own_terminations_pass_through_the_hook_and_are_completed_at_once():
    report = run(fleet([], termination={"handler": True}), no_rollout=False)
    assert report["outcome"] == "completed" and report["jobs_interrupted"] == 0
    assert report["instances_completed_by_handler"] == 6 and report["hook_timeouts"] == 0
    assert report["max_hold_seconds"] <= HANDLER_CYCLE_SECONDS
    assert "Mark" not in report["handler_actions"]          # a node the rollout drained is never marked


def test_faults_during_a_rollout_interrupt_no_job():
    report = simulate(load_scenario(ROOT / "scenarios" / "faults-during-rollout.yaml")).report
    assert report["outcome"] == "completed"
    assert report["jobs_interrupted"] == 0 and report["pdb_violations"] == 0
    assert report["old_nodes_remaining"] == 0
    assert report["instances_terminated_by_faults"] >= 8 and report["jobs_lost_to_faults"] >= 1
    assert report["hook_timeouts"] == 0
    assert report["settled_at_seconds"] >= report["makespan_seconds"]


def test_a_quiet_cluster_gives_the_handler_nothing_to_do():
    """The simulator skips decide() when no instance waits, no message is queued and no node is
    marked; decide() agrees on such a cluster."""
    world = World(load_scenario(fleet([{"kind": "handler_restart", "at_seconds": 0}])), roll=False)
    assert not world.handler_busy()
    assert hd.decide(world.handler_snapshot(), world.now, world.handler_settings).actions == ()


# ---- scenario files and the command --------------------------------------------------------------


@pytest.mark.parametrize("mutate, key", [
    (lambda f: f.update(group="nope"), "faults[0].group"),
    (lambda f: f.pop("group"), "faults[0].group"),
    (lambda f: f.update(count=0), "faults[0].count"),
    (lambda f: f.update(count=7), "faults[0].count"),
    (lambda f: f.update(count="2"), "faults[0].count"),
    (lambda f: f.update(at_seconds=-1.0), "faults[0].at_seconds"),
    (lambda f: f.update(at_seconds=float("nan")), "faults[0].at_seconds"),
    (lambda f: f.update(replace="yes"), "faults[0].replace"),
    (lambda f: f.update(rate=0.1), "faults[0].rate"),
])
def test_bad_asg_terminate_faults_name_the_key(mutate, key):
    fault = {"kind": "asg_terminate", "group": "gpu", "count": 2, "at_seconds": 60.0}
    mutate(fault)
    with pytest.raises(ScenarioError) as err:
        load_scenario(fleet([fault]))
    assert str(err.value).startswith(key + ":"), str(err.value)


@pytest.mark.parametrize("data, key", [
    (fleet([{"kind": "spot_interruption", "group": "gpu", "count": 1}]), "faults[0].group"),     # on-demand
    (fleet([{"kind": "spot_interruption", "group": "gpu", "count": 9}], capacity="spot"), "faults[0].count"),
    (fleet([{"kind": "spot_interruption", "group": "gpu", "replace": True}], capacity="spot"), "faults[0].replace"),
    (fleet([{"kind": "asg_terminate", "group": "gpu", "count": 3}], node_groups=[
        {"name": "gpu", "nodes": 6, "min_size": 4}]), "faults[0].count"),                     # below min_size
    (fleet([{"kind": "handler_restart"}], termination={"handler": False}), "faults[0].kind"),
    (fleet([], termination={"heartbeat_seconds": 10}), "termination.heartbeat_seconds"),
    (fleet([], termination={"heartbeat_seconds": 30, "job_grace_seconds": 2641}), "termination.job_grace_seconds"),
    (fleet([], termination={"hook": True}), "termination.hook"),
])
def test_bad_termination_scenarios_name_the_key(data, key):
    with pytest.raises(ScenarioError) as err:
        load_scenario(data)
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_the_handler_is_on_by_default_only_where_a_fault_needs_it():
    assert load_scenario(fleet([])).termination.handler is False
    assert load_scenario(fleet([{"kind": "asg_terminate", "group": "gpu"}])).termination.handler is True
    assert load_scenario(fleet([{"kind": "asg_terminate", "group": "gpu"}],
                               termination={"handler": False})).termination.handler is False


@pytest.mark.parametrize("name", ["asg-scale-in", "spot-interruption", "faults-during-rollout"])
def test_the_fault_scenarios_parse(name):
    s = load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    assert s.termination.handler is True and s.faults


def test_simulate_no_rollout_through_the_command(capsys):
    code = automation_main(["simulate", "--scenario", str(ROOT / "scenarios" / "asg-scale-in.yaml"),
                            "--no-rollout", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["outcome"] == "no_rollout" and "termination handler only" in report["reason"]
    assert report["jobs_interrupted"] == 0 and report["jobs_lost_to_faults"] == 0
    assert report["final_nodes"] == report["original_nodes"] - 5
    assert automation_main(["simulate", "--scenario", str(ROOT / "scenarios" / "spot-interruption.yaml"),
                            "--no-rollout"]) == 0
    out = capsys.readouterr().out
    assert "jobs_lost_to_faults" in out and "termination_handler" in out
