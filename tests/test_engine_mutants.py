"""What the drain and the verdict decide, pinned exactly (Issue 15).

Each test here kills mutants of ``plan_drain`` and ``judge`` that the rest of the engine's tests let live
(mutmut 3.8.1, listed in the issue note): the exact command (group, node, pod, uid, why), the exact hold
(group, node, holders, when it blocks, whether it is recovering), the Events that say so, the wake-up time
and the outcome — everything an operator or the runner acts on. Everything goes through ``decide()``.
"""

from __future__ import annotations

from automation.rollout import engine
from automation.rollout.engine import Cordon, Evict, Held, Note, Terminate, decide
from automation.rollout.model import ANNOTATION_DEADLINE_EXTENSION, Node, Pod, PodDisruptionBudget
from automation.rollout.strategies import DEFAULT, DOUBLE_AND_DRAIN
from tests.test_engine import canary, failed, gi, group, inst, intent, job_pod, node, of, snap

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
