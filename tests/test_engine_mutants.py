"""What the drain and the verdict decide, pinned exactly (Issue 15).

Each test here kills mutants of ``plan_drain`` and ``judge`` (and, below them, of the stages around them: new
nodes, capacity, versions, the give-back, the finish and the words) that the rest of the engine's tests let live
(mutmut 3.8.1, listed in the issue note): the exact command (group, node, pod, uid, why), the exact hold
(group, node, holders, when it blocks, whether it is recovering), the Events that say so, the wake-up time
and the outcome — everything an operator or the runner acts on. Everything goes through ``decide()``.
"""

from __future__ import annotations

import time
from dataclasses import replace

from automation.rollout import engine
from automation.rollout.engine import (AnnotateNode, Cordon, DeleteGroupIntent, Evict, Held, Note, Protect,
                                       ScaleAutoscaler, SetCapacity, SetVersion, Terminate, Uncordon, decide,
                                       finish_commands)
from automation.rollout.model import (ANNOTATION_DEADLINE_EXTENSION, ANNOTATION_ROLLOUT_PROTECTED,
                                      CA_SCALE_DOWN_DISABLED, LABEL_NODE_GROUP, RESOURCE_GPU, Node, Pod,
                                      PodDisruptionBudget)
from automation.rollout.strategies import DEFAULT, DOUBLE_AND_DRAIN
from tests.test_engine import ICE, canary, failed, gi, group, inst, intent, job_pod, node, of, snap

GRACE = engine.BLOCKED_GRACE_SECONDS          # 300 s: a hold past the deadline stops the rollout after this
DEADLINE = 7200.0                             # intent()'s deadline
API_PDB = PodDisruptionBudget("default", "api", {"app": "api"}, disruptions_allowed=0)
PDB_HOLDS = "keep this node from draining, so no Job is force-evicted from it"
JOB_HOLDS = "still run past the deadline and a rollback never evicts a Job"


def api_pod(name: str, node_name, **kw) -> Pod:
    return Pod(namespace="default", name=name, node_name=node_name, phase="Running", owner_kind="ReplicaSet",
               labels={"app": "api"}, uid=f"uid-{name}", **kw)


def recovering_api_pod(now: float) -> Pod:
    """A replacement the budget's last disruption started: just created, not Ready yet."""
    return api_pod("api-new", "c1", ready=False, created_at=now - 10)


def held_note(node_name: str, holders: str, blocked_at: float, pdb: bool = True) -> Note:
    return Note("Node", "", node_name, "RolloutBlocked",
                f"cannot drain: {holders} {PDB_HOLDS if pdb else JOB_HOLDS}; the rollout stops as blocked at "
                f"t={blocked_at:.0f}s if this still holds", subject=holders, uid=node_name, warning=True)


def proven_fleet(*old: str):
    """A proven group (canary c1) with these old nodes, cordoned and seen so."""
    g = group([inst(f"i-{n}") for n in old] + [inst("i-c1", "2")], desired=len(old) + 1)
    return g, [node(f"n{n}", f"i-{n}") for n in old] + [canary()]


# ---------------------------------------------------------------- a PodDisruptionBudget that holds past the deadline

def test_nodes_a_budget_holds_at_the_deadline_are_held_named_and_woken_for_exactly():
    g, nodes = proven_fleet("1", "2", "3")
    pods = [api_pod("api-0", "n1"), api_pod("api-1", "n3")]
    d = decide(snap([g], nodes, pods, [API_PDB], now=DEADLINE), intent(), gi(desired=3), DEFAULT)
    assert not of(Evict, d.commands)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-2", "n2")]      # the idle one goes
    holders = ("PodDisruptionBudget default/api",)
    assert d.held == (Held("gpu-a", "n1", holders, DEADLINE + GRACE, recovering=False),
                      Held("gpu-a", "n3", holders, DEADLINE + GRACE, recovering=False))
    assert [n for n in d.notes if n.reason == "RolloutBlocked"] == [
        held_note("n1", "PodDisruptionBudget default/api", DEADLINE + GRACE),
        held_note("n3", "PodDisruptionBudget default/api", DEADLINE + GRACE)]
    assert d.stop is None and not d.done
    assert d.wake_at == DEADLINE + GRACE + 1        # just after the hold would block
    assert d.waiting_for == ("2 nodes waiting for PodDisruptionBudgets; "
                             "PodDisruptionBudget default/api holds n1 (blocked at t=7500s); "
                             "PodDisruptionBudget default/api holds n3 (blocked at t=7500s)")


def test_one_node_a_budget_holds_is_one_node_waiting():
    g, nodes = proven_fleet("1")
    d = decide(snap([g], nodes, [api_pod("api-0", "n1")], [API_PDB], now=DEADLINE), intent(), gi(desired=1), DEFAULT)
    assert d.waiting_for.startswith("1 node waiting for PodDisruptionBudgets; ")


def test_a_budget_recovering_from_a_disruption_holds_without_blocking():
    g, nodes = proven_fleet("1")
    now = DEADLINE + GRACE
    pods = [api_pod("api-0", "n1"), recovering_api_pod(now)]
    d = decide(snap([g], nodes, pods, [API_PDB], now=now), intent(), gi(desired=1), DEFAULT)
    assert d.held == (Held("gpu-a", "n1", ("PodDisruptionBudget default/api",), DEADLINE + GRACE, recovering=True),)
    assert d.stop is None
    # Once the replacement has been unready for longer than the grace, the hold is real: blocked.
    d = decide(snap([g], nodes, [api_pod("api-0", "n1"), recovering_api_pod(now - GRACE)], [API_PDB], now=now),
               intent(), gi(desired=1), DEFAULT)
    assert d.held[0].recovering is False and d.stop.outcome == "blocked"


def test_before_a_nodes_deadline_a_budget_only_makes_it_wait_until_that_deadline():
    g, nodes = proven_fleet("1")
    ext = {ANNOTATION_DEADLINE_EXTENSION: "600"}
    pods = [api_pod("api-0", "n1", annotations=ext)]
    # Before the rollout's deadline no extension counts yet: the rollout wakes at its deadline.
    early = decide(snap([g], nodes, pods, [API_PDB], now=7000), intent(), gi(desired=1), DEFAULT)
    assert not early.held and early.wake_at == DEADLINE and not of(Evict, early.commands)
    # At the rollout's deadline the pod's extension moves the node's: not held yet, woken at its end.
    at = decide(snap([g], nodes, pods, [API_PDB], now=DEADLINE), intent(), gi(desired=1), DEFAULT)
    assert not at.held and at.wake_at == DEADLINE + 600 and at.stop is None
    assert at.waiting_for == "1 node waiting for PodDisruptionBudgets"


def test_three_held_nodes_are_all_named_a_fourth_is_counted():
    g, nodes = proven_fleet("1", "2", "3", "4")
    pods = [api_pod(f"api-{n}", f"n{n}") for n in "1234"]
    three = decide(snap([g], nodes[:3] + nodes[4:], pods[:3], [API_PDB], now=DEADLINE), intent(), gi(desired=4),
                   DEFAULT)
    held = "; ".join(f"PodDisruptionBudget default/api holds n{n} (blocked at t=7500s)" for n in "123")
    assert three.waiting_for == f"3 nodes waiting for PodDisruptionBudgets; {held}"
    four = decide(snap([g], nodes, pods, [API_PDB], now=DEADLINE), intent(), gi(desired=4), DEFAULT)
    assert four.waiting_for == f"4 nodes waiting for PodDisruptionBudgets; {held}; 1 more held nodes"


# ---------------------------------------------------------------- a rollback: a Job holds its node

def rollback_fleet(*bad: str):
    """Rolling back to version 1: the original node n1 stays; bad version-2 nodes c<N> are cordoned."""
    g = group([inst("i-1", "1")] + [inst(f"i-c{b}", "2") for b in bad], desired=1 + len(bad), version="1")
    return g, [node("n1", "i-1", old=False)] + [node(f"c{b}", f"i-c{b}", old=False, cordoned=True) for b in bad]


def test_in_a_rollback_jobs_past_the_deadline_hold_their_nodes_and_are_counted():
    g, nodes = rollback_fleet("1", "2")
    pods = [job_pod("j1", "c1"), job_pod("j2", "c2")]
    d = decide(snap([g], nodes, pods, now=7300), intent(phase="rolling_back"), gi(desired=1), DEFAULT)
    assert not of(Evict, d.commands) and d.stop is None
    assert d.held == (Held("gpu-a", "c1", ("Job ml/j1",), DEADLINE + GRACE, recovering=False),
                      Held("gpu-a", "c2", ("Job ml/j2",), DEADLINE + GRACE, recovering=False))
    assert [n for n in d.notes if n.reason == "RolloutBlocked"] == [
        held_note("c1", "Job ml/j1", DEADLINE + GRACE, pdb=False), held_note("c2", "Job ml/j2", DEADLINE + GRACE, pdb=False)]
    assert d.blocking_jobs == 2
    assert d.wake_at == DEADLINE + GRACE + 1


def test_in_a_rollback_a_budget_that_holds_a_jobs_node_is_named_and_may_be_recovering():
    g, nodes = rollback_fleet("1")
    now = 7300
    pods = [job_pod("j1", "c1"), api_pod("api-0", "c1")]
    d = decide(snap([g], nodes, pods, [API_PDB], now=now), intent(phase="rolling_back"), gi(desired=1), DEFAULT)
    assert d.held == (Held("gpu-a", "c1", ("PodDisruptionBudget default/api",), DEADLINE + GRACE, recovering=False),)
    assert [n for n in d.notes if n.reason == "RolloutBlocked"] == [
        held_note("c1", "PodDisruptionBudget default/api", DEADLINE + GRACE)]
    pods.append(api_pod("api-new", "n1", ready=False, created_at=now - 10))
    d = decide(snap([g], nodes, pods, [API_PDB], now=now), intent(phase="rolling_back"), gi(desired=1), DEFAULT)
    assert d.held == (Held("gpu-a", "c1", ("PodDisruptionBudget default/api",), DEADLINE + GRACE, recovering=True),)


def test_a_rollback_says_how_many_instances_of_the_new_version_are_left_after_this_cycle():
    g, nodes = rollback_fleet("1", "2")
    d = decide(snap([g], nodes, [job_pod("j1", "c1")], now=100), intent(phase="rolling_back"), gi(desired=1), DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-c2", "c2")]
    assert "rolling back: 1 instance of the new version to remove" in d.waiting_for


# ---------------------------------------------------------------- a Job whose deadline extension cannot be read

def test_an_unreadable_extension_holds_its_node_from_the_deadline_on_and_says_so_on_the_pod():
    g, nodes = proven_fleet("1")
    pods = [job_pod("odd", "n1", annotations={ANNOTATION_DEADLINE_EXTENSION: "soon"})]
    d = decide(snap([g], nodes, pods, now=DEADLINE), intent(), gi(desired=1), DEFAULT)
    assert not of(Evict, d.commands) and not of(Terminate, d.commands)
    [pod_note] = [n for n in d.notes if n.kind == "Pod"]
    assert (pod_note.namespace, pod_note.name, pod_note.reason, pod_note.uid, pod_note.warning) == \
        ("ml", "odd", "RolloutUnreadableDeadlineExtension", "uid-odd", True)
    assert "soon" in pod_note.subject and pod_note.message.startswith(pod_note.subject + ": this pod is never")
    holder = f"Job ml/odd ({pod_note.subject})"
    assert d.held == (Held("gpu-a", "n1", (holder,), DEADLINE + GRACE, recovering=False),)
    assert [n for n in d.notes if n.reason == "RolloutBlocked"] == [held_note("n1", holder, DEADLINE + GRACE)]


# ---------------------------------------------------------------- forced and ordinary evictions, exactly

def test_a_job_past_its_deadline_is_forced_from_exactly_its_node_and_the_rest_are_counted():
    g, nodes = proven_fleet("1", "2")
    ext = {ANNOTATION_DEADLINE_EXTENSION: "600"}
    pods = [job_pod("j1", "n1"), job_pod("long", "n1", annotations=ext), job_pod("long2", "n2", annotations=ext)]
    d = decide(snap([g], nodes, pods, now=DEADLINE), intent(), gi(desired=2), DEFAULT)
    [evict] = of(Evict, d.commands)
    assert evict == Evict("gpu-a", "n1", "ml", "j1", job=True, forced=True)
    assert evict.uid == "uid-j1" and evict.why == "past its deadline (t=7200s); node n1 is being replaced"
    assert d.blocking_jobs == 2 and d.wake_at == DEADLINE + 600


def test_a_controller_pod_is_evicted_by_uid_from_exactly_its_node():
    g, nodes = proven_fleet("1")
    d = decide(snap([g], nodes, [api_pod("api-0", "n1")]), intent(), gi(desired=1), DEFAULT)
    [evict] = of(Evict, d.commands)
    assert evict == Evict("gpu-a", "n1", "default", "api-0")
    assert evict.uid == "uid-api-0" and evict.why == "node n1 is being replaced"
    assert not of(Terminate, d.commands)


def test_a_node_still_draining_does_not_stop_the_next_one_from_going():
    g, nodes = proven_fleet("1", "2")
    evicting = decide(snap([g], nodes, [api_pod("api-0", "n1")]), intent(), gi(desired=2), DEFAULT)
    assert of(Terminate, evicting.commands) == [Terminate("gpu-a", "i-2", "n2")]
    leaving = decide(snap([g], nodes, [api_pod("api-0", "n1", deleting=True)]), intent(), gi(desired=2), DEFAULT)
    assert of(Terminate, leaving.commands) == [Terminate("gpu-a", "i-2", "n2")]
    assert of(Terminate, leaving.commands)[0].why == "drained: no Job or other pod left on it"


def test_an_instance_that_never_registered_goes_while_launches_fail_and_says_why():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=4)
    nodes = [node("n1", "i-1"), canary()]
    d = decide(snap([g], nodes, now=400, activities=[failed(300)]), intent(), gi(), DEFAULT)
    assert d.launch_failures
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-2", None)]
    assert of(Terminate, d.commands)[0].why == "never registered as a node"


# ---------------------------------------------------------------- cordons

def test_a_node_cordoned_without_the_autoscaler_annotation_is_cordoned_again_a_complete_one_is_not():
    g, nodes = proven_fleet("1")
    half = [node("n1", "i-1", annotations={"note": "cordoned by hand"}), canary()]
    d = decide(snap([g], half), intent(), gi(desired=1), DEFAULT)
    assert [c.node for c in of(Cordon, d.commands)] == ["n1"]
    d = decide(snap([g], nodes), intent(), gi(desired=1), DEFAULT)
    assert not of(Cordon, d.commands) and of(Terminate, d.commands) == [Terminate("gpu-a", "i-1", "n1")]


def test_jobs_on_every_node_just_cordoned_are_counted():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False), canary()]
    d = decide(snap([g], nodes, [job_pod("j1", "n1"), job_pod("j2", "n2")]), intent(), gi(), DEFAULT)
    assert [c.node for c in of(Cordon, d.commands)] == ["n1", "n2"]
    assert d.blocking_jobs == 2 and d.waiting_for == "2 Job pods on old nodes"


def test_a_group_still_waiting_for_proof_does_not_hold_up_a_proven_one():
    a = group([inst("i-1"), inst("i-c1", "2")], desired=2, name="gpu-a")
    b = group([inst("i-2"), inst("i-c2", "2")], desired=2, name="gpu-b")
    nodes = [node("n1", "i-1", cordoned=False), node("c1", "i-c1", old=False, warming=True),
             node("n2", "i-2", cordoned=False, group_name="gpu-b"), node("c2", "i-c2", old=False, group_name="gpu-b")]
    d = decide(snap([a, b], nodes), intent(), {**gi(desired=1), **gi(desired=1, name="gpu-b")}, DEFAULT)
    assert [(c.asg, c.node) for c in of(Cordon, d.commands)] == [("gpu-b", "n2")]
    assert "new nodes to be proven" not in d.waiting_for and "rolling back" not in d.waiting_for


# ---------------------------------------------------------------- the verdict

def test_with_no_old_node_left_an_unproven_replacement_is_still_waited_for():
    g = group([inst("i-c1", "2")], desired=1)
    d = decide(snap([g], [node("c1", "i-c1", old=False, warming=True)], now=100), intent(), gi(desired=1), DEFAULT)
    assert not d.done and d.waiting_for == "new nodes to be proven"


def test_the_baseline_needs_no_proof_to_be_done_and_done_waits_for_nothing():
    g = group([inst("i-c1", "2")], desired=1)
    d = decide(snap([g], [node("c1", "i-c1", old=False, warming=True)], now=100), intent(strategy="double-and-drain"),
               gi(desired=1), DOUBLE_AND_DRAIN)
    assert d.done and d.waiting_for == "" and d.stop is None


def test_only_a_surplus_to_drain_is_not_waiting_for_proof():
    g = group([inst(f"i-{i}", "2", launched_at=float(i)) for i in range(4)], desired=4, max_size=6)
    nodes = [node(f"n{i}", f"i-{i}", old=False) for i in range(4)]
    pods = [job_pod("j0", "n0"), job_pod("j1", "n1"), job_pod("j2", "n2")]
    d = decide(snap([g], nodes, pods), intent(), gi(desired=2, max_size=6), DEFAULT)
    assert not d.done and d.waiting_for == "2 surplus nodes to drain"


def test_while_waiting_for_proof_old_nodes_are_not_reported_as_a_rollback_or_as_proof_pending():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    nodes = [node("n1", "i-1", cordoned=False), node("c1", "i-c1", old=False, warming=True)]
    d = decide(snap([g], nodes, now=100), intent(), gi(desired=1), DEFAULT)
    assert d.waiting_for == "gpu-a: a replacement to be proven (Ready, labelled, warm); 1 new, none proven yet"


def test_the_give_up_comes_strictly_after_the_grace_and_is_a_failure():
    g = group([inst("i-2"), inst("i-c1", "2")], desired=2)
    nodes = [node("n2", "i-2"), canary()]
    stuck = [job_pod("stuck", "n2", deleting=True)]
    at = decide(snap([g], nodes, stuck, now=DEADLINE + engine.GRACE_AFTER_DEADLINE), intent(), gi(desired=1), DEFAULT)
    assert at.stop is None and not at.done
    after = decide(snap([g], nodes, stuck, now=DEADLINE + engine.GRACE_AFTER_DEADLINE + 1), intent(), gi(desired=1),
                   DEFAULT)
    assert after.stop.outcome == "failed" and not after.done


def test_past_the_give_up_an_unproven_group_with_no_old_node_fails_rather_than_completes():
    g = group([inst("i-c1", "2")], desired=1)
    d = decide(snap([g], [node("c1", "i-c1", old=False, warming=True)], now=DEADLINE + engine.GRACE_AFTER_DEADLINE + 1),
               intent(timeout=1e9), gi(desired=1), DEFAULT)
    assert d.stop.outcome == "failed" and not d.done


# ---------------------------------------------------------------- across groups

def surplus_node(name: str, instance_id: str, group_name: str) -> Node:
    """A new node the trim has cordoned as surplus."""
    plain = node(name, instance_id, old=False, cordoned=False, group_name=group_name)
    return Node(**{**plain.__dict__, "unschedulable": True, "taints": (engine.SURPLUS_TAINT,)})


def test_a_budget_the_drain_spent_is_not_spent_again_by_the_trim_in_the_same_cycle():
    a = group([inst("i-1"), inst("i-c1", "2")], desired=2, name="gpu-a")
    b = group([inst("i-b2", "2"), inst("i-b3", "2")], desired=2, max_size=4, name="gpu-b")
    nodes = [node("n1", "i-1"), canary(),
             node("b2", "i-b2", old=False, group_name="gpu-b"), surplus_node("b3", "i-b3", "gpu-b")]
    pods = [api_pod("api-0", "n1"), api_pod("api-1", "b3"), job_pod("jb", "b2")]
    one = PodDisruptionBudget("default", "api", {"app": "api"}, disruptions_allowed=1)
    d = decide(snap([a, b], nodes, pods, [one]), intent(), {**gi(desired=1), **gi(desired=1, max_size=4, name="gpu-b")},
               DEFAULT)
    assert of(Evict, d.commands) == [Evict("gpu-a", "n1", "default", "api-0")]     # one disruption, not two


def test_past_the_give_up_a_surplus_with_an_unproven_group_is_a_failure_not_a_completion():
    a = group([inst("i-a1", "2")], desired=1, name="gpu-a")
    b = group([inst("i-b2", "2"), inst("i-b3", "2")], desired=2, max_size=4, name="gpu-b")
    nodes = [node("a1", "i-a1", old=False, warming=True),
             node("b2", "i-b2", old=False, group_name="gpu-b"), surplus_node("b3", "i-b3", "gpu-b")]
    now = DEADLINE + engine.GRACE_AFTER_DEADLINE + 1
    d = decide(snap([a, b], nodes, [job_pod("j3", "b3")], now=now), intent(timeout=1e9),
               {**gi(desired=1), **gi(desired=1, max_size=4, name="gpu-b")}, DEFAULT)
    assert d.stop.outcome == "failed" and "new nodes to be proven" in d.stop.reason and not d.done


# ---------------------------------------------------------------- new nodes: bad ones, a cordon undone, the autoscaler kept off

PROTECT = ((CA_SCALE_DOWN_DISABLED, "true"), (ANNOTATION_ROLLOUT_PROTECTED, "true"))


def gpu_pod(name: str, node_name, gpus: float, phase: str = "Running", **kw) -> Pod:
    """A Job pod asking for ``gpus`` slots (0 is a pod that asks for none)."""
    return Pod(namespace="ml", name=name, node_name=node_name, phase=phase, owner_kind="Job", owner_name=name,
               requests={RESOURCE_GPU: gpus}, uid=f"uid-{name}", **kw)


def test_a_bad_node_in_a_proven_group_is_replaced_in_place_and_says_so_on_the_node():
    g = group([inst("i-1"), inst("i-c1", "2"), inst("i-c2", "2", launched_at=0.0)], desired=3)
    nodes = [node("n1", "i-1"), canary(), node("c2", "i-c2", old=False, ready=False)]
    d = decide(snap([g], nodes, [job_pod("j", "n1")], now=1900), intent(), gi(), DEFAULT)
    why = "node c2 (i-c2) in gpu-a: not Ready 30m after launch"
    [replaced] = of(Terminate, d.commands)
    assert replaced == Terminate("gpu-a", "i-c2", "c2", decrement=False) and replaced.why == why + "; replaced"
    assert d.notes == (Note("Node", "", "c2", "RolloutBadNode", why + "; it is replaced", subject="gpu-a", uid="c2",
                            warning=True),)
    assert d.rollback_reason is None


def test_a_bad_node_before_any_proof_is_not_replaced_the_rollout_rolls_back_and_says_so():
    g = group([inst("i-1"), inst("i-c2", "2", launched_at=0.0)], desired=2)
    nodes = [node("n1", "i-1", cordoned=False), node("c2", "i-c2", old=False, ready=False)]
    d = decide(snap([g], nodes, [job_pod("j", "n1")], now=1900), intent(), gi(), DEFAULT)
    why = "node c2 (i-c2) in gpu-a: not Ready 30m after launch"
    assert not of(Terminate, d.commands) and d.rollback_reason == why
    assert d.notes == (Note("Node", "", "c2", "RolloutBadNode", why + "; the rollout rolls back", subject="gpu-a",
                            uid="c2", warning=True),)


def test_a_new_node_still_cordoned_as_old_is_uncordoned_saying_why():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    nodes = [node("n1", "i-1"), node("c1", "i-c1", old=False, cordoned=True)]
    d = decide(snap([g], nodes, [job_pod("j", "n1")]), intent(), gi(), DEFAULT)
    [uncordon] = of(Uncordon, d.commands)
    assert uncordon == Uncordon("gpu-a", "c1") and uncordon.why == "runs the current launch template version again"
    assert not of(Uncordon, decide(snap([g], [node("n1", "i-1"), canary()], [job_pod("j", "n1")]), intent(), gi(),
                                   DEFAULT).commands)


def test_a_running_autoscaler_is_kept_off_each_new_node_not_yet_marked_while_old_nodes_remain():
    # i-c0 has no node yet: nothing to mark, and the others still are.
    g = group([inst("i-1"), inst("i-c0", "2"), inst("i-c1", "2"), inst("i-c2", "2")], desired=4)
    pods = [job_pod("j", "n1")]
    for ann, marked in (({}, ["c1", "c2"]), ({CA_SCALE_DOWN_DISABLED: "true"}, ["c1"]),
                        ({CA_SCALE_DOWN_DISABLED: "false"}, ["c1", "c2"])):
        nodes = [node("n1", "i-1"), canary(), node("c2", "i-c2", old=False, annotations=ann)]
        d = decide(snap([g], nodes, pods, replicas=1), intent(), gi(), DEFAULT)
        assert of(AnnotateNode, d.commands) == [AnnotateNode("gpu-a", n, PROTECT) for n in marked], ann
    # No old node left: nothing to keep the autoscaler off for (the finish removes the marks).
    done = group([inst("i-c1", "2"), inst("i-c2", "2")], desired=2)
    d = decide(snap([done], [canary(), node("c2", "i-c2", old=False)], replicas=1), intent(), gi(), DEFAULT)
    assert not of(AnnotateNode, d.commands)
    # Rolling back: the new nodes are the ones going.
    d = decide(snap([g], [node("n1", "i-1"), canary(), node("c2", "i-c2", old=False)], pods, replicas=1),
               intent(phase="rolling_back"), gi(), DEFAULT)
    assert not of(AnnotateNode, d.commands)


# ---------------------------------------------------------------- old capacity given back to pending Jobs

def give_back_fleet(canary_node: Node):
    g = group([inst("i-1"), inst("i-2"), inst("i-3"), inst("i-c1", "2")], desired=5)
    return g, [node("n1", "i-1"), node("n2", "i-2", slots=2.0), node("n3", "i-3"), canary_node]


def test_while_launches_fail_old_nodes_go_back_one_per_pending_slot_a_pod_asking_for_none_counts_one():
    g, nodes = give_back_fleet(canary())
    asks_none = gpu_pod("z", None, 0.0, phase="Pending")
    asks_nothing = Pod("ml", "y", None, "Pending", owner_kind="Job", owner_name="y")     # no request at all
    pods = [job_pod("busy", "n2"), job_pod("on-canary", "c1"), asks_none, asks_nothing]
    d = decide(snap([g], nodes, pods, now=400, activities=[failed(300)]), intent(), gi(desired=3), DEFAULT)
    # Two slots wanted, none free on the canary: n2 first (it holds a Job and stays anyway), then the idle
    # node with the lowest name.
    back = of(Uncordon, d.commands)
    assert back == [Uncordon("gpu-a", "n2"), Uncordon("gpu-a", "n1")]
    assert [u.why for u in back] == ["given back to pending Jobs: launches in gpu-a fail"] * 2
    assert d.waiting_for == f"launches in gpu-a failing for 100s: {ICE}"
    # A free slot on the canary takes one of them: one node back.
    g, nodes = give_back_fleet(canary())
    d = decide(snap([g], nodes, [job_pod("busy", "n2"), asks_none, asks_nothing], now=400, activities=[failed(300)]),
               intent(), gi(desired=3), DEFAULT)
    assert of(Uncordon, d.commands) == [Uncordon("gpu-a", "n2")]


def test_with_nothing_proven_old_nodes_go_back_without_counting_a_replacement_that_may_never_come():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1"), node("n2", "i-2", slots=2.0), node("c1", "i-c1", old=False, warming=True)]
    pods = [job_pod("busy", "n2"), job_pod("p1", None, phase="Pending"), job_pod("p2", None, phase="Pending")]
    d = decide(snap([g], nodes, pods, now=400), intent(), gi(desired=2), DEFAULT)
    back = of(Uncordon, d.commands)
    assert back == [Uncordon("gpu-a", "n2"), Uncordon("gpu-a", "n1")]
    assert [u.why for u in back] == ["given back to pending Jobs: nothing in gpu-a is proven (any more)"] * 2
    # One pending Job asking for two GPUs wants both free slots too.
    d = decide(snap([g], nodes, [pods[0], gpu_pod("big", None, 2.0, phase="Pending")], now=400), intent(), gi(desired=2),
               DEFAULT)
    assert of(Uncordon, d.commands) == [Uncordon("gpu-a", "n2"), Uncordon("gpu-a", "n1")]
    # The pending pods' selector names another group: nothing here is theirs.
    other = [p.__class__(**{**p.__dict__, "node_selector": {LABEL_NODE_GROUP: "gpu-b"}}) for p in pods[1:]]
    d = decide(snap([g], nodes, pods[:1] + other, now=400), intent(), gi(desired=2), DEFAULT)
    assert not of(Uncordon, d.commands)


def test_a_node_not_ready_or_full_is_not_given_back():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1", ready=False), node("n2", "i-2"), node("c1", "i-c1", old=False, warming=True)]
    pods = [job_pod("busy", "n2"), job_pod("p1", None, phase="Pending")]
    d = decide(snap([g], nodes, pods, now=400), intent(), gi(desired=2), DEFAULT)
    assert not of(Uncordon, d.commands)


def test_stopping_because_launches_fail_gives_the_old_nodes_back_pins_the_proven_version_and_withdraws_the_surge():
    g = group([inst("i-1"), inst("i-2")], desired=4, max_size=10)
    nodes = [node("n1", "i-1"), node("n2", "i-2", cordoned=False)]
    d = decide(snap([g], nodes, now=1200, activities=[failed(200)]), intent(), gi(desired=2), DEFAULT)
    assert d.stop.outcome == "failed" and d.stop.reason == f"launches in gpu-a have failed for 17m: {ICE}"
    assert d.stop.commands == (Uncordon("gpu-a", "n1"), SetVersion("gpu-a", "lt-1", "1"), SetCapacity("gpu-a", desired=2))
    uncordon, version, capacity = d.stop.commands
    assert uncordon.why == "the rollout stopped: launches in gpu-a fail"
    assert version.expected == "2" and capacity.raise_only is False
    assert d.waiting_for == f"gpu-a: no replacement can launch yet (17m): {ICE}"


def test_stopping_because_launches_fail_asks_again_for_nodes_removed_before_they_began_to_fail():
    # Pinned already (the group shows version 1); one old node left of three, desired 2.
    g = group([inst("i-1")], desired=2, max_size=10, version="1")
    d = decide(snap([g], [node("n1", "i-1")], now=1200, activities=[failed(200)]), intent(), gi(desired=3), DEFAULT)
    assert d.stop.commands == (Uncordon("gpu-a", "n1"), SetCapacity("gpu-a", desired=3))
    assert d.stop.commands[1].raise_only is True
    assert d.summary() == {"old_nodes": 1, "new_nodes": 0, "new_ready": 0, "blocking_jobs": 0, "pending_jobs": 0,
                           "commands": 2, "waiting_for": f"gpu-a: no replacement can launch yet (17m): {ICE}",
                           "unproven_groups": 1, "launch_failures": 1, "held_nodes": 0}
    # At its original size already: nothing to change but the cordon.
    g = group([inst("i-1"), inst("i-2")], desired=3, max_size=10, version="1")
    d = decide(snap([g], [node("n1", "i-1"), node("n2", "i-2", cordoned=False)], now=1200, activities=[failed(200)]),
               intent(), gi(desired=3), DEFAULT)
    assert d.stop.commands == (Uncordon("gpu-a", "n1"),)


def test_a_stop_for_failing_launches_leaves_groups_whose_launches_work_alone():
    a = group([inst("i-1")], desired=2, name="gpu-a")
    b = group([inst("i-b1"), inst("i-cb", "2")], desired=2, name="gpu-b")
    nodes = [node("n1", "i-1"), node("b1", "i-b1", group_name="gpu-b"), canary("cb", "i-cb", group_name="gpu-b")]
    d = decide(snap([a, b], nodes, [job_pod("jb", "b1")], now=1200, activities=[failed(200)]), intent(),
               {**gi(desired=1), **gi(desired=1, name="gpu-b")}, DEFAULT)
    assert d.stop.outcome == "failed"
    assert d.stop.commands == (Uncordon("gpu-a", "n1"), SetVersion("gpu-a", "lt-1", "1"), SetCapacity("gpu-a", desired=1))


# ---------------------------------------------------------------- nodes for pending Jobs across groups

def two_proven_groups(*, slots_b=4.0, max_a=10, max_b=10, pending=(), replicas=0):
    """gpu-a (1 slot a node) and gpu-b (``slots_b``), each with one busy old node and a busy proven canary;
    the rollout paused the autoscaler, so it stands in for it."""
    a = group([inst("i-a1"), inst("i-ca", "2")], desired=2, name="gpu-a", max_size=max_a)
    b = group([inst("i-b1"), inst("i-cb", "2")], desired=2, name="gpu-b", max_size=max_b)
    nodes = [node("a1", "i-a1"), canary("ca", "i-ca"),
             node("b1", "i-b1", slots=slots_b, group_name="gpu-b"),
             canary("cb", "i-cb", slots=slots_b, group_name="gpu-b")]
    pods = [gpu_pod("ja", "a1", 1.0), gpu_pod("jca", "ca", 1.0), gpu_pod("jb", "b1", slots_b),
            gpu_pod("jcb", "cb", slots_b)] + list(pending)
    return decide(snap([a, b], nodes, pods, replicas=replicas), intent(pause=True, replicas=1),
                  {**gi(desired=1, max_size=max_a), **gi(desired=1, max_size=max_b, name="gpu-b")}, DEFAULT)


def pending(n: int, gpus: float = 1.0, **kw) -> list[Pod]:
    return [gpu_pod(f"p{i}", None, gpus, phase="Pending", **kw) for i in range(n)]


def test_pending_jobs_get_nodes_of_the_group_with_the_most_slots_packed_first_fit():
    d = two_proven_groups(pending=pending(3))
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-b", desired=3, max_size=10)]   # 3 pods, one 4-slot node
    assert of(SetCapacity, d.commands)[0].raise_only is True
    d = two_proven_groups(pending=pending(3, 2.0))
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-b", desired=4, max_size=10)]   # 2 + 1 pods a node
    # A pod asking for no GPU still takes a slot: 5 of them are two 4-slot nodes.
    d = two_proven_groups(pending=pending(5, 0.0))
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-b", desired=4, max_size=10)]


def test_pending_jobs_go_where_there_is_room_under_the_original_max_and_where_their_selector_points():
    d = two_proven_groups(max_b=1, pending=pending(3))
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=5, max_size=10)]
    # A pod no group can take (queued first) does not stop the ones after it.
    nowhere = gpu_pod("a-nowhere", None, 1.0, phase="Pending", node_selector={LABEL_NODE_GROUP: "gpu-z"})
    d = two_proven_groups(pending=[nowhere] + pending(2, node_selector={LABEL_NODE_GROUP: "gpu-a"}))
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=4, max_size=10)]
    # gpu-b has room for one node under its max of 2: four pods there, the fifth on gpu-a.
    d = two_proven_groups(max_b=2, pending=pending(5))
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3, max_size=10),
                                           SetCapacity("gpu-b", desired=3, max_size=3)]
    # A pod bigger than any node of its groups gets nothing, and does not stop the ones after it.
    d = two_proven_groups(pending=pending(1, 8.0))
    assert not of(SetCapacity, d.commands)
    big = gpu_pod("big", None, 8.0, phase="Pending")
    d = two_proven_groups(pending=[big] + pending(3))
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-b", desired=3, max_size=10)]


def test_between_groups_of_equal_slots_pending_jobs_go_where_most_room_is_left():
    d = two_proven_groups(slots_b=1.0, max_a=5, max_b=4, pending=pending(3))
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=4, max_size=5),
                                           SetCapacity("gpu-b", desired=3, max_size=4)]


# ---------------------------------------------------------------- what a cordon says (the node's Event)

def cordon_whys(d) -> dict[str, str]:
    return {c.node: c.why for c in of(Cordon, d.commands)}


def test_a_cordon_names_the_rollout_the_proof_the_deadline_and_at_most_three_jobs():
    g = group([inst("i-1"), inst("i-2"), inst("i-3"), inst("i-c1", "2")], desired=4)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False), node("n3", "i-3", cordoned=False),
             canary()]
    later = {ANNOTATION_DEADLINE_EXTENSION: "600"}
    pods = ([job_pod(f"j{i}", "n1") for i in (4, 2, 3, 1)] + [job_pod("j5", "n1", annotations=later)]
            + [job_pod(f"k{i}", "n2", annotations=later) for i in (3, 1, 2)])
    d = decide(snap([g], nodes, pods), intent(), gi(desired=3), DEFAULT)
    head = "rollout r1: gpu-a moves to launch template version 2; replacement proven by node c1; Jobs may run until t=7200s"
    assert cordon_whys(d) == {
        "n1": f"{head}; waiting for Jobs ml/j1, ml/j2, ml/j3 and 2 more to finish before replacing this node; "
              f"Jobs still running at t=7200s (their deadline) are evicted",
        "n2": f"{head}; waiting for Jobs ml/k1, ml/k2, ml/k3 to finish before replacing this node; "
              f"Jobs still running at t=7800s (their deadline) are evicted",
        "n3": head}
    assert [w.deadline for w in of(Cordon, d.commands)[0].waits_for] == [7200.0] * 4 + [7800.0]
    # Four Jobs: three named, the fourth counted.
    d = decide(snap([g], nodes, pods[:4]), intent(), gi(desired=3), DEFAULT)
    assert cordon_whys(d)["n1"] == (f"{head}; waiting for Jobs ml/j1, ml/j2, ml/j3 and 1 more to finish before "
                                    f"replacing this node; Jobs still running at t=7200s (their deadline) are evicted")


def test_a_cordon_over_a_job_whose_extension_cannot_be_read_says_it_is_never_evicted():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    nodes = [node("n1", "i-1", cordoned=False), canary()]
    odd = job_pod("j1", "n1", annotations={ANNOTATION_DEADLINE_EXTENSION: "x"})
    d = decide(snap([g], nodes, [odd]), intent(), gi(desired=1), DEFAULT)
    assert cordon_whys(d)["n1"].endswith("; waiting for Job ml/j1 to finish before replacing this node; never evicted: "
                                         "the deadline extension annotation cannot be read")
    assert of(Cordon, d.commands)[0].waits_for[0].deadline == float("inf")
    # Beside a readable one, the readable one's deadline is the one named.
    d = decide(snap([g], nodes, [odd, job_pod("j2", "n1")]), intent(), gi(desired=1), DEFAULT)
    assert cordon_whys(d)["n1"].endswith("waiting for Jobs ml/j1, ml/j2 to finish before replacing this node; "
                                         "Jobs still running at t=7200s (their deadline) are evicted")


def test_a_rollbacks_cordon_names_its_reason_and_never_evicts_a_job():
    g = group([inst("i-1", "1"), inst("i-c1", "2"), inst("i-c2", "2")], desired=3, version="1")
    nodes = [node("n1", "i-1", old=False), node("c1", "i-c1", old=False, cordoned=False),
             node("c2", "i-c2", old=False, cordoned=False)]
    pods = [job_pod("a", "c1"), job_pod("b", "c1")]
    d = decide(snap([g], nodes, pods), intent(phase="rolling_back", reason="bad AMI"), gi(), DEFAULT)
    assert cordon_whys(d) == {
        "c1": "rolling back gpu-a to launch template version 1: bad AMI; waiting for Jobs ml/a, ml/b to finish before "
              "replacing this node; a rollback never evicts a Job",
        "c2": "rolling back gpu-a to launch template version 1: bad AMI"}
    d = decide(snap([g], nodes, pods[:1]), intent(phase="rolling_back"), gi(), DEFAULT)
    assert cordon_whys(d)["c2"] == "rolling back gpu-a to launch template version 1: rollback"
    assert cordon_whys(d)["c1"].endswith("waiting for Job ml/a to finish before replacing this node; "
                                         "a rollback never evicts a Job")
    assert d.summary() == {"old_nodes": 2, "new_nodes": 1, "new_ready": 1, "blocking_jobs": 1, "pending_jobs": 0,
                           "commands": 4, "waiting_for": "rolling back: 2 instances of the new version to remove; "
                                                         "1 Job pod on old nodes",
                           "unproven_groups": 0, "launch_failures": 0, "held_nodes": 0}


def test_the_baselines_cordon_claims_no_proof_and_a_real_clock_is_shown_as_utc():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    d = decide(snap([g], [node("n1", "i-1", cordoned=False)]), intent(strategy="double-and-drain",
                                                                      deadline=1_800_000_000.0),
               gi(desired=1), DOUBLE_AND_DRAIN)
    assert cordon_whys(d) == {"n1": "rollout r1: gpu-a moves to launch template version 2; Jobs may run until "
                                    "2027-01-15T08:00:00Z"}


# ---------------------------------------------------------------- the finish: only what the rollout changed is undone

def finish_world():
    a = group([inst("i-2", "2", protected_from_scale_in=True),
               inst("i-3", "2", protected_from_scale_in=True, lifecycle_state="Terminating"),
               inst("i-4", "2"), inst("i-5", "2")], desired=5, max_size=6, tags={engine.TAG_ROLLED_BACK_FROM: "7"})
    b = group([inst("b-1", "2")], desired=1, max_size=4, name="gpu-b")
    c = group([inst("c-1", "2")], desired=1, max_size=3, name="gpu-c")
    cpu = group([inst("o-1", "2")], name="cpu")                 # not rolled: its cordon is someone else's
    mark = {ANNOTATION_ROLLOUT_PROTECTED: "true"}
    by_hand = Node(**{**node("n5", "i-5", old=False).__dict__, "unschedulable": True})           # no rollout taint
    schedulable = Node(**{**node("n4", "i-4", old=False, cordoned=True).__dict__, "unschedulable": False})
    nodes = [node("n2", "i-2", old=False, cordoned=True, annotations=mark), schedulable, by_hand,
             node("o1", "o-1", cordoned=True, group_name="cpu"), node("x1", None, old=False, annotations=mark),
             node("x2", "i-9", old=False, annotations={ANNOTATION_ROLLOUT_PROTECTED: "false"})]
    intents = {**gi(desired=2, max_size=3), **gi(desired=1, max_size=3, name="gpu-b"),
               **gi(desired=1, max_size=3, name="gpu-c"), **gi(name="gone")}
    return [a, b, c, cpu], nodes, intents


UNMARK = ((CA_SCALE_DOWN_DISABLED, None), (ANNOTATION_ROLLOUT_PROTECTED, None))


def test_the_finish_restores_max_protection_cordons_and_marks_it_set_and_nothing_else():
    groups, nodes, intents = finish_world()
    cmds = finish_commands(snap(groups, nodes, replicas=0), intent(pause=True, replicas=2), intents, DEFAULT)
    assert cmds == [
        SetCapacity("gpu-a", max_size=5),            # never below what the group has now
        Protect("gpu-a", ("i-2",), False),           # the terminating instance is left alone
        SetCapacity("gpu-b", max_size=3),
        Uncordon("gpu-a", "n2"),
        AnnotateNode("gpu-a", "n2", UNMARK), AnnotateNode("", "x1", UNMARK),
        engine.ClearRolledBack("gpu-a"), DeleteGroupIntent("gpu-a"), DeleteGroupIntent("gpu-b"),
        DeleteGroupIntent("gpu-c"),
        ScaleAutoscaler(2)]
    # The autoscaler already back at its replicas (or never paused): left alone.
    assert not of(ScaleAutoscaler, finish_commands(snap(groups, nodes, replicas=2), intent(pause=True, replicas=2),
                                                   intents, DEFAULT))
    assert not of(ScaleAutoscaler, finish_commands(snap(groups, nodes, replicas=0), intent(replicas=2), intents,
                                                   DEFAULT))
    assert not of(ScaleAutoscaler, finish_commands(snap(groups, nodes, replicas=0), intent(pause=True), intents,
                                                   DEFAULT))
    # A strategy that never protected instances does not unprotect them.
    unprotected = replace(DEFAULT, protect_instances=False)
    assert not of(Protect, finish_commands(snap(groups, nodes), intent(), intents, unprotected))


def test_a_finished_rollback_is_recorded_instead_of_cleared():
    groups, nodes, intents = finish_world()
    cmds = finish_commands(snap(groups, nodes), intent(phase="rolling_back", reason="r"), intents, DEFAULT)
    assert cmds[-6:] == [engine.MarkRolledBack("gpu-a", "2", "1", "r"), DeleteGroupIntent("gpu-a"),
                         engine.MarkRolledBack("gpu-b", "2", "1", "r"), DeleteGroupIntent("gpu-b"),
                         engine.MarkRolledBack("gpu-c", "2", "1", "r"), DeleteGroupIntent("gpu-c")]


# ---------------------------------------------------------------- a budget recovering: which replacement counts

def recovering_with(replacement: Pod, now: float) -> bool:
    g, nodes = proven_fleet("1")
    d = decide(snap([g], nodes, [api_pod("api-0", "n1"), replacement], [API_PDB], now=now), intent(), gi(desired=1),
               DEFAULT)
    [held] = d.held
    return held.recovering


def test_only_a_replacement_started_within_the_grace_and_not_ready_yet_makes_a_budget_recovering():
    now = DEADLINE + GRACE
    assert recovering_with(api_pod("new", "c1", ready=False, created_at=now - 10), now)
    assert recovering_with(api_pod("new", "c1", ready=False, created_at=now - GRACE + 1), now)
    assert not recovering_with(api_pod("new", "c1", ready=False, created_at=now - GRACE), now)
    pending_pod = Pod("default", "new", None, "Pending", owner_kind="ReplicaSet", labels={"app": "api"},
                      created_at=now - 10)
    assert recovering_with(pending_pod, now)                                   # Pending, readiness unknown
    assert not recovering_with(Pod(**{**pending_pod.__dict__, "ready": True}), now)
    assert not recovering_with(api_pod("new", "c1", created_at=now - 10), now)         # Running, readiness unknown
    assert not recovering_with(api_pod("new", "c1", ready=False, created_at=now - 10, deleting=True), now)
    assert not recovering_with(Pod(**{**pending_pod.__dict__, "phase": "Succeeded"}), now)
    # Another budget's pod (other labels, or another namespace) does not make this one recover.
    assert not recovering_with(Pod(**{**pending_pod.__dict__, "labels": {"app": "web"}}), now)
    assert not recovering_with(Pod(**{**pending_pod.__dict__, "namespace": "other"}), now)


def test_a_node_two_budgets_hold_is_recovering_only_if_both_are():
    g, nodes = proven_fleet("1")
    now = DEADLINE + GRACE
    web_pdb = PodDisruptionBudget("default", "web", {"tier": "web"}, disruptions_allowed=0)
    both = Pod("default", "api-0", "n1", "Running", owner_kind="ReplicaSet", labels={"app": "api", "tier": "web"},
               uid="uid-api-0")
    new_api = api_pod("new", "c1", ready=False, created_at=now - 10)
    d = decide(snap([g], nodes, [both, new_api], [API_PDB, web_pdb], now=now), intent(), gi(desired=1), DEFAULT)
    assert d.held == (Held("gpu-a", "n1", ("PodDisruptionBudget default/api", "PodDisruptionBudget default/web"),
                           DEADLINE + GRACE, recovering=False),)
    assert d.stop.outcome == "blocked"
    assert d.stop.reason == ("past the deadline, nodes cannot drain: PodDisruptionBudget default/api holds n1; "
                             "PodDisruptionBudget default/web holds n1")
    new_web = Pod("default", "new-web", "c1", "Running", owner_kind="ReplicaSet", labels={"tier": "web"}, ready=False,
                  created_at=now - 10)
    d = decide(snap([g], nodes, [both, new_api, new_web], [API_PDB, web_pdb], now=now), intent(), gi(desired=1),
               DEFAULT)
    assert d.held[0].recovering is True and d.stop is None


# ---------------------------------------------------------------- words an operator reads

def test_durations_read_as_a_person_would_say_them():
    cases = {float("nan"): "an unknown time", -5.0: "0s", 0.4: "0s", 119.0: "119s", 120.0: "2m", 7199.0: "120m",
             7200.0: "2.0h", 172656.0: "48.0h", 2 * 86400 - 1: "48.0h", 2 * 86400: "2d", 86357232.0: "1000d",
             1000 * 86400 - 1: "1000d",
             1000 * 86400: "more than 1000 days", float("inf"): "ever"}
    assert {s: engine._duration(s) for s in cases} == cases


def test_instants_read_as_utc_on_a_real_clock_and_seconds_on_an_injected_one(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")        # UTC whatever the machine's zone
    time.tzset()
    cases = {float("nan"): "never", float("inf"): "never", 1_800_000_000.0: "2027-01-15T08:00:00Z",
             1e9 + 1: "2001-09-09T01:46:41Z", 1e9: "t=1e+09s", 1e7 + 1: "t=1e+07s", 1e7: "t=10000000s",
             7200.4: "t=7200s", 1e300: "after the year 9999"}
    try:
        assert {s: engine._clock(s) for s in cases} == cases
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_long_message_is_cut_to_its_limit_and_whitespace_folded():
    assert engine._short("a \n  b\tc") == "a b c"
    exact = "x" * 160
    assert engine._short(exact) == exact
    assert engine._short(exact + "y") == "x" * 159 + "…"
    assert engine._short("abcdef", limit=4) == "abc…"


def test_a_launch_failure_message_in_the_waiting_line_is_cut_to_160_characters():
    g = group([inst("i-1")], desired=2)
    long = "Could not launch: " + "no capacity " * 20
    d = decide(snap([g], [node("n1", "i-1", cordoned=False)], now=400, activities=[failed(300, long)]), intent(),
               gi(desired=1), DEFAULT)
    assert d.waiting_for == "gpu-a: no replacement can launch yet (100s): " + engine._short(long)
    assert len(d.waiting_for) == len("gpu-a: no replacement can launch yet (100s): ") + 160


# ---------------------------------------------------------------- predicates and group intent

def test_a_node_is_schedulable_only_ready_uncordoned_and_without_a_hard_taint():
    from automation.rollout.model import Taint
    plain = node("c1", "i-c1", old=False)
    assert engine.is_schedulable(plain)
    assert not engine.is_schedulable(node("c1", "i-c1", old=False, ready=False))
    assert not engine.is_schedulable(Node(**{**plain.__dict__, "unschedulable": True}))
    for effect, ok in (("NoSchedule", False), ("NoExecute", False), ("PreferNoSchedule", True)):
        assert engine.is_schedulable(Node(**{**plain.__dict__, "taints": (Taint("x", "y", effect),)})) is ok, effect


def test_a_proven_node_with_a_hard_taint_offers_no_free_slot_to_pending_jobs():
    from automation.rollout.model import Taint
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    tainted = Node(**{**canary(slots=4.0).__dict__, "taints": (Taint("gpu", "broken", "NoSchedule"),)})
    nodes = [node("n1", "i-1", slots=4.0), tainted]
    d = decide(snap([g], nodes, [gpu_pod("j", "n1", 4.0)] + pending(2), replicas=0), intent(pause=True, replicas=1),
               gi(desired=1), DEFAULT)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3, max_size=10)]
    d = decide(snap([g], [node("n1", "i-1", slots=4.0), canary(slots=4.0)], [gpu_pod("j", "n1", 4.0)] + pending(2),
                    replicas=0), intent(pause=True, replicas=1), gi(desired=1), DEFAULT)
    assert not of(SetCapacity, d.commands)


def test_an_earlier_rollback_names_the_versions_and_the_reason():
    tags = engine.rolled_back_tags("2", "1", "canary not Ready")
    assert engine.earlier_rollback(group([inst("i-1")], version="1", tags=tags)) == \
        "gpu-a was rolled back from launch template version 2 to 1: canary not Ready"
    assert engine.earlier_rollback(group([inst("i-1")], version="2", tags={engine.TAG_ROLLED_BACK_FROM: "2"})) == \
        "gpu-a was rolled back from launch template version 2 to None: "
    assert engine.rolled_back_tags("2", "1", "")[engine.TAG_ROLLED_BACK_REASON] == "rolled back"


def test_a_newer_version_published_mid_rollout_moves_the_target_and_keeps_the_rest():
    from automation.rollout.model import GroupIntent
    was = GroupIntent("gpu-a", 4, 6, "2", "1")
    assert engine.moved_target(group([inst("i-1")], version="3"), was) == GroupIntent("gpu-a", 4, 6, "3", "1")
    assert engine.moved_target(group([inst("i-1")], version="2"), was) is None
    assert engine.moved_target(group([inst("i-1")], version="1"), was) is None


def test_the_initial_intent_takes_the_most_common_old_version_and_ignores_leaving_instances():
    from automation.rollout.model import GroupIntent
    g = group([inst("i-1", "1"), inst("i-2", "0"), inst("i-3", "0"), inst("i-4", "2")], desired=4, max_size=6)
    assert engine.initial_group_intent(g) == GroupIntent("gpu-a", 4, 6, "2", "0")
    tie = group([inst("i-1", "1"), inst("i-2", "0"), inst("i-4", "2")], desired=3)
    assert engine.initial_group_intent(tie).previous_version == "0"        # a tie: the lowest, every time
    leaving = group([inst("i-1", "1", lifecycle_state="Terminating"), inst("i-2", "0"), inst("i-3", "1"),
                     inst("i-4", "2")], desired=3)
    assert engine.initial_group_intent(leaving).previous_version == "0"
    assert engine.initial_group_intent(group([inst("i-1", "2", lifecycle_state="Terminated")])) is None


# ---------------------------------------------------------------- versions: each write says what it expects to find

def test_each_version_write_names_the_version_it_expects_to_replace():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False)]
    [pin] = of(SetVersion, decide(snap([g], nodes), intent(), gi(), DEFAULT).commands)
    assert pin == SetVersion("gpu-a", "lt-1", "1") and pin.expected == "2"
    pinned = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3, version="1")
    [unpin] = of(SetVersion, decide(snap([pinned], nodes + [canary()]), intent(), gi(), DEFAULT).commands)
    assert unpin == SetVersion("gpu-a", "lt-1", "2") and unpin.expected == "1"
    [back] = of(SetVersion, decide(snap([g], nodes), intent(phase="rolling_back"), gi(), DEFAULT).commands)
    assert back == SetVersion("gpu-a", "lt-1", "1") and back.expected == "2"
    assert not of(SetVersion, decide(snap([pinned], nodes), intent(phase="rolling_back"), gi(), DEFAULT).commands)


def test_a_group_with_no_old_instance_or_no_canary_yet_is_not_pinned():
    only_new = group([inst("i-c1", "2")], desired=1)
    d = decide(snap([only_new], [node("c1", "i-c1", old=False, warming=True)], now=100), intent(), gi(desired=1),
               DEFAULT)
    assert not of(SetVersion, d.commands)
    no_canary = group([inst("i-1"), inst("i-2")], desired=2)
    d = decide(snap([no_canary], [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False)]), intent(),
               gi(), DEFAULT)
    assert not of(SetVersion, d.commands) and of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3,
                                                                                          max_size=10)]


# ---------------------------------------------------------------- the capacity the rollout took away (paid back, no more)

def no_request_job(name: str, node_name: str) -> Pod:
    return Pod("ml", name, node_name, "Running", owner_kind="Job", owner_name=name)


def asked_for(old_nodes, pods, *, instance_ids=None, job_kinds=None) -> list[SetCapacity]:
    """A proven group (busy 2-slot canary c1) with these old nodes and 20 pending Jobs: the autoscaler is not
    paused, so the rollout adds nodes only for the slots it took away by cordoning."""
    ids = instance_ids or [n.instance_id for n in old_nodes]
    g = group([inst(i) for i in ids] + [inst("i-c1", "2")], desired=len(ids) + 1, max_size=40)
    queue = [gpu_pod(f"p{i}", None, 1.0, phase="Pending") for i in range(20)]
    kw = {"job_kinds": job_kinds} if job_kinds else {}
    d = decide(snap([g], list(old_nodes) + [canary(slots=2.0)], list(pods) + [gpu_pod("on-c1", "c1", 2.0)] + queue),
               intent(), gi(desired=len(ids), max_size=40), DEFAULT, **kw)
    return of(SetCapacity, d.commands)


def test_one_free_slot_on_a_cordoned_node_is_one_node_to_pay_back():
    # A Job asking for nothing still takes one slot: one of the two is free.
    assert asked_for([node("n1", "i-1", slots=2.0)], [no_request_job("a", "n1")]) == [
        SetCapacity("gpu-a", desired=3, max_size=40)]
    # Full: nothing taken away, nothing paid back.
    assert asked_for([node("n1", "i-1", slots=2.0)], [gpu_pod("a", "n1", 2.0)]) == []


def test_only_cordoned_ready_old_nodes_count_each_by_its_own_slots():
    bare = Node(**{**node("n3", "i-3").__dict__, "allocatable": {}})        # no GPU reported: the group's 2 slots
    old = [node("n0", "i-0", slots=2.0, cordoned=False), node("n1", "i-1", slots=2.0), node("n2", "i-2", slots=4.0),
           bare, node("n4", "i-4", slots=2.0, ready=False)]
    pods = [gpu_pod("a", "n0", 1.0), gpu_pod("b", "n1", 2.0), gpu_pod("c", "n2", 1.0), gpu_pod("d", "n3", 1.0),
            gpu_pod("e", "n4", 1.0)]
    # i-x never registered (it goes). Free on cordoned ready nodes: n2 3 + n3 1 = 4 slots = 2 nodes; 5 old stay,
    # 2 new now (the canary and one as i-x leaves) + 2 = 9.
    assert asked_for(old, pods, instance_ids=["i-0", "i-x", "i-1", "i-2", "i-3", "i-4"]) == [
        SetCapacity("gpu-a", desired=9, max_size=40)]


def test_a_pod_of_a_kind_counted_as_a_job_takes_its_slot():
    ray = [Pod("ml", f"ray-{n}", n, "Running", owner_kind="RayCluster", owner_name="r") for n in ("n1", "n2")]
    old = [node("n1", "i-1", slots=2.0), node("n2", "i-2", slots=2.0)]
    pods = ray + [gpu_pod("a", "n1", 0.0), gpu_pod("b", "n2", 0.0)]
    # By default a RayCluster pod takes no Job slot: 4 free slots, 2 nodes; counted as Jobs: 2 free, 1 node.
    assert asked_for(old, pods) == [SetCapacity("gpu-a", desired=5, max_size=40)]
    assert asked_for(old, pods, job_kinds=frozenset({"Job", "RayCluster"})) == [
        SetCapacity("gpu-a", desired=4, max_size=40)]


def test_a_stop_for_failing_launches_keeps_every_live_instance_the_min_size_and_a_proven_groups_version():
    # Proven (the canary c1) with c2 booting: nothing pinned; desired comes down to the 3 live instances.
    g = group([inst("i-1"), inst("i-c1", "2"), inst("i-c2", "2")], desired=5)
    nodes = [node("n1", "i-1"), canary()]
    d = decide(snap([g], nodes, [job_pod("j", "n1")], now=1200, activities=[failed(200)]), intent(), gi(desired=2),
               DEFAULT)
    assert d.stop.commands == (Uncordon("gpu-a", "n1"), SetCapacity("gpu-a", desired=3))
    # The min size is a floor.
    g = group([inst("i-1")], desired=5, min_size=4)
    d = decide(snap([g], [node("n1", "i-1")], now=1200, activities=[failed(200)]), intent(), gi(desired=2), DEFAULT)
    assert d.stop.commands == (Uncordon("gpu-a", "n1"), SetVersion("gpu-a", "lt-1", "1"), SetCapacity("gpu-a", desired=4))
    # No old instance left: nothing to pin for (the target is all there is).
    g = group([inst("i-c1", "2")], desired=2)
    d = decide(snap([g], [node("c1", "i-c1", old=False, warming=True)], now=1200, activities=[failed(200)]), intent(),
               gi(desired=1), DEFAULT)
    assert d.stop.commands == (SetCapacity("gpu-a", desired=1),)


def test_only_a_numbered_version_strictly_between_the_previous_and_the_target_is_a_superseded_target():
    assert engine._between("2", "1", "4") and engine._between("3", "1", "4")
    assert not engine._between("1", "1", "4") and not engine._between("4", "1", "4")
    assert not engine._between("5", "1", "4") and not engine._between("0", "1", "4")
    assert not engine._between(None, "1", "4") and not engine._between("$Latest", "1", "4")
    assert not engine._between("2", "$Default", "4") and not engine._between("2", "1", "$Latest")


def test_old_nodes_given_back_are_judged_each_by_its_own_free_slots():
    g = group([inst("i-0"), inst("i-1"), inst("i-2"), inst("i-3"), inst("i-4"), inst("i-c1", "2")], desired=6)
    bare = Node(**{**node("n4", "i-4").__dict__, "allocatable": {}})            # no GPU reported: the group's 1 slot
    nodes = [node("c1", "i-c1", old=False, warming=True), node("n1", "i-1", slots=3.0), node("n2", "i-2", slots=2.0),
             node("n3", "i-3"), bare]
    pods = [gpu_pod("two", "n1", 2.0), no_request_job("one", "n2")] + pending(2)
    d = decide(snap([g], nodes, pods, now=400), intent(), gi(desired=5), DEFAULT)
    # i-0 has no node; n1 and n2 hold a Job and have one slot free each: they go back first.
    assert of(Uncordon, d.commands) == [Uncordon("gpu-a", "n1"), Uncordon("gpu-a", "n2")]
    # One pending Job: the node with the most free slots goes back first.
    roomy = [node("c1", "i-c1", old=False, warming=True), node("n1", "i-1", slots=2.0), node("n2", "i-2", slots=4.0)]
    d = decide(snap([g], roomy, [gpu_pod("a", "n1", 1.0), gpu_pod("b", "n2", 2.0)] + pending(1), now=400), intent(),
               gi(desired=5), DEFAULT)
    assert of(Uncordon, d.commands) == [Uncordon("gpu-a", "n2")]


def test_a_node_whose_only_pod_is_a_job_of_a_configured_kind_has_no_slot_to_give_back():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    nodes = [node("c1", "i-c1", old=False, warming=True), node("n1", "i-1")]
    pods = [Pod("ml", "ray", "n1", "Running", owner_kind="RayCluster", owner_name="r")] + pending(1)
    d = decide(snap([g], nodes, pods, now=400), intent(), gi(desired=1), DEFAULT)
    assert of(Uncordon, d.commands) == [Uncordon("gpu-a", "n1")]
    d = decide(snap([g], nodes, pods, now=400), intent(), gi(desired=1), DEFAULT,
               job_kinds=frozenset({"Job", "RayCluster"}))
    assert not of(Uncordon, d.commands)


def pending_beside(b_state: str):
    """gpu-a (1 slot a node, proven) and gpu-b (4 slots, ``unproven`` or proven with ``failing`` launches), three
    pending Jobs that fit either; the rollout paused the autoscaler."""
    a = group([inst("i-a1"), inst("i-ca", "2")], desired=2, name="gpu-a")
    b = group([inst("i-b1"), inst("i-cb", "2")], desired=3 if b_state == "failing" else 2, name="gpu-b")
    nodes = [node("a1", "i-a1"), canary("ca", "i-ca"),
             node("b1", "i-b1", slots=4.0, group_name="gpu-b", cordoned=b_state != "unproven"),
             canary("cb", "i-cb", slots=4.0, group_name="gpu-b", warming=b_state == "unproven")]
    pods = [gpu_pod("ja", "a1", 1.0), gpu_pod("jca", "ca", 1.0), gpu_pod("jb", "b1", 4.0), gpu_pod("jcb", "cb", 4.0)]
    acts = ([engine.ScalingActivity("gpu-b", "a-1", "Failed", "Launching a new EC2 instance.  Status Reason: " + ICE,
                                    ICE, started_at=300)] if b_state == "failing" else [])
    return decide(snap([a, b], nodes, pods + pending(3), replicas=0, now=400, activities=acts),
                  intent(pause=True, replicas=1), {**gi(desired=1), **gi(desired=1, name="gpu-b")}, DEFAULT)


def test_pending_jobs_get_nodes_only_in_a_proven_group_whose_launches_work():
    for b_state in ("unproven", "failing"):
        d = pending_beside(b_state)
        assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=5, max_size=10)], b_state


def test_a_node_about_to_be_asked_for_takes_pending_jobs_before_one_more_is_added():
    # n1 is idle and goes: its replacement is asked for now, and its 4 slots take the 3 pending Jobs.
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1", slots=4.0), node("n2", "i-2", slots=4.0), canary(slots=4.0)]
    pods = [gpu_pod("j2", "n2", 4.0), gpu_pod("jc", "c1", 4.0)] + pending(3)
    d = decide(snap([g], nodes, pods, replicas=0), intent(pause=True, replicas=1), gi(desired=2), DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-1", "n1")]
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3, max_size=10)]


def test_a_node_about_to_be_asked_for_counts_against_its_groups_room():
    # gpu-b (4 slots, original max 2): b0 is idle and goes, its replacement is asked for now. That node takes
    # four pending Jobs and fills gpu-b's room; the fifth gets a node of gpu-a.
    a = group([inst("i-a1"), inst("i-ca", "2")], desired=2, name="gpu-a")
    b = group([inst("i-b0"), inst("i-b1"), inst("i-cb", "2")], desired=3, max_size=2, name="gpu-b")
    nodes = [node("a1", "i-a1"), canary("ca", "i-ca"), node("b0", "i-b0", slots=4.0, group_name="gpu-b"),
             node("b1", "i-b1", slots=4.0, group_name="gpu-b"), canary("cb", "i-cb", slots=4.0, group_name="gpu-b")]
    pods = [gpu_pod("ja", "a1", 1.0), gpu_pod("jca", "ca", 1.0), gpu_pod("jb", "b1", 4.0),
            gpu_pod("jcb", "cb", 4.0)] + pending(5)
    d = decide(snap([a, b], nodes, pods, replicas=0), intent(pause=True, replicas=1),
               {**gi(desired=1), **gi(desired=2, max_size=2, name="gpu-b")}, DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-b", "i-b0", "b0")]
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3, max_size=10),
                                           SetCapacity("gpu-b", desired=3, max_size=3)]


def test_between_groups_of_equal_slots_the_room_left_counts_new_nodes_and_those_about_to_be_asked_for():
    def world(a_old, a_new, a_desired, n_pending):
        """gpu-a and gpu-b (1 slot a node, original max 5, proven): gpu-b has one busy old node and one busy new one."""
        a = group([inst(i) for i in a_old] + [inst(i, "2") for i in a_new], desired=len(a_old) + len(a_new),
                  max_size=5, name="gpu-a")
        b = group([inst("i-b1"), inst("i-cb", "2")], desired=2, max_size=5, name="gpu-b")
        nodes = ([node(i.replace("i-", ""), i) for i in a_old] + [canary(i.replace("i-", ""), i) for i in a_new]
                 + [node("b1", "i-b1", group_name="gpu-b"), canary("cb", "i-cb", group_name="gpu-b")])
        busy = [gpu_pod(f"j-{n.name}", n.name, 1.0) for n in nodes if n.name != "a0"]
        return decide(snap([a, b], nodes, busy + pending(n_pending), replicas=0), intent(pause=True, replicas=1),
                      {**gi(desired=a_desired, max_size=5), **gi(desired=1, max_size=5, name="gpu-b")}, DEFAULT)
    # gpu-a has two new nodes (room for 3 more), gpu-b one (room for 4): the pending Job goes to gpu-b.
    d = world(["i-a1"], ["i-ca", "i-ca2"], 1, 1)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-b", desired=3, max_size=5)]
    # a0 is idle and goes: its replacement (asked for now) takes the first pending Job and leaves gpu-a room
    # for 3 more; the second goes to gpu-b (room for 4).
    d = world(["i-a0", "i-a1"], ["i-ca"], 2, 2)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-a0", "a0")]
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3, max_size=5),
                                           SetCapacity("gpu-b", desired=3, max_size=5)]


def test_a_rollback_sets_the_previous_version_on_every_group_that_is_not_there_yet():
    a = group([inst("i-a1")], version="1", name="gpu-a")
    b = group([inst("i-b1"), inst("i-b2", "2")], version="2", name="gpu-b")
    nodes = [node("a1", "i-a1", old=False), node("b1", "i-b1", old=False, group_name="gpu-b"),
             node("b2", "i-b2", old=False, group_name="gpu-b")]
    d = decide(snap([a, b], nodes), intent(phase="rolling_back"), {**gi(desired=1), **gi(desired=1, name="gpu-b")},
               DEFAULT)
    assert of(SetVersion, d.commands) == [SetVersion("gpu-b", "lt-1", "1")]


def test_a_strategy_that_does_not_prove_first_never_pins():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False)]
    d = decide(snap([g], nodes), intent(), gi(), replace(DEFAULT, prove_first=False))
    assert not of(SetVersion, d.commands)


def test_a_group_that_had_no_node_when_the_rollout_began_is_asked_for_no_canary_and_never_pinned():
    g = group([inst("i-1")], desired=1)
    d = decide(snap([g], [node("n1", "i-1", cordoned=False)], [job_pod("j", "n1")]), intent(), gi(desired=0), DEFAULT)
    assert not of(SetVersion, d.commands) and not of(SetCapacity, d.commands)


# ---------------------------------------------------------------- how many new nodes a group should have now

def test_a_group_with_no_old_node_left_gets_back_to_its_original_size_even_unproven():
    g = group([inst("i-c1", "2")], desired=1)
    d = decide(snap([g], [node("c1", "i-c1", old=False, warming=True)], now=100), intent(), gi(desired=2), DEFAULT)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=2, max_size=10)]


def test_an_unproven_group_with_one_old_node_gets_its_canary_and_nothing_more():
    g = group([inst("i-1")], desired=1)
    d = decide(snap([g], [node("n1", "i-1", cordoned=False)], [job_pod("j", "n1")]), intent(), gi(desired=2), DEFAULT)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=2, max_size=10)]


def test_without_a_canary_a_proven_group_replaces_only_the_nodes_that_left():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1"), node("n2", "i-2"), canary()]
    # n1 goes: with a canary ahead, its replacement comes on top of c1; without, c1 is its replacement.
    with_canary = decide(snap([g], nodes, [job_pod("j", "n2")]), intent(), gi(desired=2), DEFAULT)
    assert of(SetCapacity, with_canary.commands) == [SetCapacity("gpu-a", desired=3, max_size=10)]
    without = decide(snap([g], nodes, [job_pod("j", "n2")]), intent(), gi(desired=2), replace(DEFAULT, canary=False))
    assert of(Terminate, without.commands) == [Terminate("gpu-a", "i-1", "n1")] and not of(SetCapacity, without.commands)


def rollback_while_launches_fail(on_previous: list[str], *, c1="busy", desired=5, min_size=0):
    """Rolling back to version 1 while launches fail (original size 2): ``on_previous`` instances run version 1,
    i-c1 (version 2) is cordoned with a Job on it (``busy``) or never registered (``unregistered``)."""
    g = group([inst(i, "1") for i in on_previous] + [inst("i-c1", "2")], desired=desired, version="1",
              min_size=min_size)
    nodes = [node(i.replace("i-", "n"), i, old=False) for i in on_previous]
    if c1 == "busy":
        nodes.append(node("c1", "i-c1", old=False, cordoned=True))
    pods = [job_pod("j", "c1")] if c1 == "busy" else []
    return decide(snap([g], nodes, pods, now=400, activities=[failed(300)]), intent(phase="rolling_back"),
                  gi(desired=2), DEFAULT)


def test_a_rollback_whose_launches_fail_withdraws_what_it_no_longer_wants_but_never_a_live_instance():
    # One on version 1 and c1 still to go: the original 2 on version 1 plus c1 = 3.
    d = rollback_while_launches_fail(["i-1"])
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3)]
    assert of(SetCapacity, d.commands)[0].raise_only is False
    # Never below the min size.
    assert of(SetCapacity, rollback_while_launches_fail(["i-1"], min_size=4).commands) == [SetCapacity("gpu-a", desired=4)]
    # Never below the instances there are (4 live).
    assert of(SetCapacity, rollback_while_launches_fail(["i-1", "i-2", "i-3"], desired=6).commands) == [
        SetCapacity("gpu-a", desired=4)]
    # c1 never registered: it goes (with a decrement) and no longer counts as live.
    d = rollback_while_launches_fail(["i-1", "i-2", "i-3"], c1="unregistered", desired=6)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-c1", None)]
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3)]


def test_a_fixed_surge_or_a_strategy_without_nodes_for_pending_jobs_adds_none_for_them():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1"), node("n2", "i-2"), canary()]
    pods = [job_pod("j1", "n1"), job_pod("j2", "n2"), job_pod("jc", "c1")] + pending(3)
    world = snap([g], nodes, pods, replicas=0)
    assert of(SetCapacity, decide(world, intent(pause=True, replicas=1), gi(desired=2), DEFAULT).commands) == [
        SetCapacity("gpu-a", desired=6, max_size=10)]
    assert not of(SetCapacity, decide(world, intent(pause=True, replicas=1, surge="1"), gi(desired=2), DEFAULT).commands)
    # double-and-drain asks for its second fleet (2 new beside 2 old) and nothing for the queue.
    assert of(SetCapacity, decide(world, intent(pause=True, replicas=1, strategy="double-and-drain"), gi(desired=2),
                                  DOUBLE_AND_DRAIN).commands) == [SetCapacity("gpu-a", desired=4, max_size=10)]


def test_a_rollback_whose_launches_fail_leaves_a_group_at_what_it_keeps_alone_and_sees_every_group():
    assert not of(SetCapacity, rollback_while_launches_fail(["i-1"], desired=3).commands)
    a = group([inst("i-a1", "1"), inst("i-ca", "2")], desired=5, version="1", name="gpu-a")
    b = group([inst("i-b1", "1"), inst("i-cb", "2")], desired=5, version="1", name="gpu-b")
    nodes = [node("a1", "i-a1", old=False), node("ca", "i-ca", old=False, cordoned=True),
             node("b1", "i-b1", old=False, group_name="gpu-b"),
             node("cb", "i-cb", old=False, cordoned=True, group_name="gpu-b")]
    b_failed = engine.ScalingActivity("gpu-b", "b-300", "Failed", "Launching a new EC2 instance.  Status Reason: " + ICE,
                                      ICE, started_at=300)
    d = decide(snap([a, b], nodes, [job_pod("ja", "ca"), job_pod("jb", "cb")], now=400,
                    activities=[failed(300), b_failed]), intent(phase="rolling_back"),
               {**gi(desired=2), **gi(desired=2, name="gpu-b")}, DEFAULT)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3), SetCapacity("gpu-b", desired=3)]


def test_a_group_whose_launches_fail_asks_for_nothing_more_and_does_not_stop_the_next_one_asking():
    a = group([inst("i-1")], desired=2, name="gpu-a")
    b = group([inst("i-b1")], desired=1, name="gpu-b")
    nodes = [node("n1", "i-1", cordoned=False), node("b1", "i-b1", cordoned=False, group_name="gpu-b")]
    d = decide(snap([a, b], nodes, now=400, activities=[failed(300)]), intent(),
               {**gi(desired=1), **gi(desired=1, name="gpu-b")}, DEFAULT)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-b", desired=2, max_size=10)]


def test_instances_that_never_look_new_grow_an_unproven_group_to_double_its_size_and_a_canary_and_no_further():
    """Every instance launched for a canary reports the previous version (it never looks new): each cycle asks for
    one more canary, up to twice the original size (2) plus the canary, then stops."""
    def ask(n: int) -> list[SetCapacity]:
        g = group([inst(f"i-{i}") for i in range(n)], desired=n)
        d = decide(snap([g], [node(f"n{i}", f"i-{i}", cordoned=False) for i in range(n)]), intent(),
                   gi(desired=2, max_size=2), DEFAULT)
        return of(SetCapacity, d.commands)
    assert ask(3) == [SetCapacity("gpu-a", desired=4, max_size=4)]
    assert ask(4) == [SetCapacity("gpu-a", desired=5, max_size=5)]
    assert ask(5) == [SetCapacity("gpu-a", max_size=5)]            # no more desired; max back to what there is
