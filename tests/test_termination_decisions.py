"""The termination handler's pure decisions: every door a node leaves by, and what must never happen."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from automation.termination import decisions as d
from automation.termination.decisions import Reason
from automation.termination.rules import ANNOTATION_DEADLINE_EXTENSION, TAINT_ROLLOUT, Node, Pod, PodDisruptionBudget, Taint

T0 = 1_800_000_000.0          # when the lifecycle action began
GRACE = 7200.0
SETTINGS = d.Settings(job_grace_seconds=GRACE, heartbeat_timeout_seconds=300)
ASG = "kiln-test-gpu-us-east-2a"
IID = "i-0aaaaaaaaaaaaaaaa"
NODE = "ip-10-0-1-1.us-east-2.compute.internal"


def node(name=NODE, iid=IID, *, marks=None, unschedulable=None, taints=(), annotations=None) -> Node:
    marks = marks or {}
    ann = {r.annotation: d.format_time(t) for r, t in marks.items()}
    ann.update(annotations or {})
    kiln = (Taint(d.TAINT_TERMINATING, min(marks, key=marks.get).value, "NoSchedule"),) if marks else ()
    return Node(name=name, instance_id=iid, annotations=ann, taints=tuple(taints) + kiln,
                unschedulable=bool(marks) if unschedulable is None else unschedulable, ready=True)


def pod(name, kind="Job", *, node_name=NODE, ns="ml-jobs", phase="Running", deleting=False, labels=None,
        annotations=None) -> Pod:
    return Pod(namespace=ns, name=name, node_name=node_name, phase=phase, owner_kind=kind, owner_name=f"{name}-owner",
               labels=labels or {}, annotations=annotations or {}, deleting=deleting)


def waiting(iid=IID, asg=ASG, state=d.WAITING) -> dict:
    return {iid: d.Instance(iid, asg, state)}


def snap(*, nodes=(), pods=(), instances=None, notices=(), pdbs=(), started=None, heartbeats=None) -> d.Snapshot:
    instances = waiting() if instances is None else instances
    return d.Snapshot(groups=frozenset({ASG, "kiln-test-cpu-us-east-2a"}), instances=instances,
                      nodes=None if nodes is None else tuple(nodes), pods=tuple(pods), pdbs=tuple(pdbs),
                      notices=tuple(notices), started=started or {}, heartbeats=heartbeats or {})


def lifecycle_notice(mid="m-1", iid=IID, asg=ASG, hook=d.HOOK_NAME, time=T0) -> d.Notice:
    return d.Notice(mid, Reason.LIFECYCLE, (iid,), time, asg=asg, hook=hook)


def notice(reason, mid="m-2", iid=IID, time=T0, at=None, detail="") -> d.Notice:
    return d.Notice(mid, reason, (iid,), time, at=at, detail=detail)


def kinds(decision):
    return [type(a).__name__ for a in decision.actions if not isinstance(a, d.Event)]


def marked_now(*reasons):
    return node(marks={r: T0 for r in reasons} or {Reason.LIFECYCLE: T0})


# ---- lifecycle termination: hold while Jobs run ------------------------------------------------------------


def test_a_new_lifecycle_action_marks_the_node_evicts_non_jobs_and_heartbeats():
    dec = d.decide(snap(nodes=[node()], pods=[pod("train-0"), pod("web-1", "ReplicaSet"), pod("agent", "DaemonSet")],
                        notices=[lifecycle_notice()]), T0 + 5, SETTINGS)
    [mark] = dec.of(d.Mark)
    assert mark == d.Mark(NODE, IID, ((Reason.LIFECYCLE, T0),))           # the notice's time is the start
    assert [(e.namespace, e.name, e.job) for e in dec.of(d.Evict)] == [("ml-jobs", "web-1", False)]
    assert dec.of(d.Heartbeat) == [d.Heartbeat(IID, ASG, d.HOOK_NAME)]
    assert dec.of(d.Complete) == []
    assert dec.of(d.DeleteMessage) == [d.DeleteMessage("m-1", (IID,), f"lifecycle action of {IID} taken up")]
    node_events = [e for e in dec.of(d.Event) if e.regarding.kind == "Node"]
    pod_events = [e for e in dec.of(d.Event) if e.regarding.kind == "Pod"]
    assert len(node_events) == 1 and "1 Job pod(s) run, until 2027-01-15T10:00:00Z at most" in node_events[0].message
    assert [e.regarding.name for e in pod_events] == ["train-0"] and not pod_events[0].warning
    # Marks first, then evictions (the eviction's replacement pod must not land here), messages last.
    order = kinds(dec)
    assert order.index("Mark") < order.index("Evict") and order[-1] == "DeleteMessage"


def test_a_marked_node_is_held_while_its_job_runs_and_heartbeats_only_when_due():
    world = dict(nodes=[marked_now()], pods=[pod("train-0")])
    dec = d.decide(snap(**world, heartbeats={IID: T0 + 3000}), T0 + 3050, SETTINGS)
    assert dec.of(d.Heartbeat) == [] and dec.of(d.Complete) == [] and dec.of(d.Mark) == []
    [hold] = dec.holds
    assert hold.until == T0 + GRACE and "train-0" in hold.waiting_for[0]
    dec = d.decide(snap(**world, heartbeats={IID: T0 + 3000}), T0 + 3100, SETTINGS)   # 100 s = timeout / 3
    assert dec.of(d.Heartbeat) == [d.Heartbeat(IID, ASG, d.HOOK_NAME)]


def test_once_the_job_is_done_the_action_completes_with_continue():
    dec = d.decide(snap(nodes=[marked_now()], pods=[pod("train-0", phase="Succeeded"), pod("agent", "DaemonSet")]),
                   T0 + 600, SETTINGS)
    assert dec.of(d.Complete) == [d.Complete(IID, ASG, d.HOOK_NAME, "no Job pod runs on the node and every other pod has left")]
    assert dec.of(d.Heartbeat) == [] and dec.holds == ()


def test_a_restarted_handler_resumes_from_the_node_not_from_now():
    # Nothing in memory (no notice, no heartbeat): the start comes back from the node's mark.
    dec = d.decide(snap(nodes=[marked_now()], pods=[pod("train-0")]), T0 + 7000, SETTINGS)
    assert dec.of(d.Heartbeat) == [d.Heartbeat(IID, ASG, d.HOOK_NAME)]            # at once after a restart
    assert dec.holds[0].until == T0 + GRACE
    dec = d.decide(snap(nodes=[marked_now()], pods=[pod("train-0")]), T0 + GRACE, SETTINGS)
    assert [(e.name, e.job) for e in dec.of(d.Evict)] == [("train-0", True)]


def test_at_the_end_of_the_grace_jobs_are_evicted_given_time_to_stop_then_released():
    running = pod("train-0")
    dec = d.decide(snap(nodes=[marked_now()], pods=[running]), T0 + GRACE, SETTINGS)
    assert [(e.name, e.job) for e in dec.of(d.Evict)] == [("train-0", True)]
    [warning] = [e for e in dec.of(d.Event) if e.reason == "JobGraceExpired"]
    assert warning.warning and warning.regarding == d.Ref("Pod", "train-0", "ml-jobs")
    assert dec.of(d.Complete) == []
    stopping = replace(running, deleting=True)
    dec = d.decide(snap(nodes=[marked_now()], pods=[stopping]), T0 + GRACE + 100, SETTINGS)
    assert dec.of(d.Evict) == [] and dec.of(d.Complete) == []                        # its SIGTERM window
    assert dec.holds[0].until == T0 + GRACE + d.AFTER_GRACE_SECONDS
    dec = d.decide(snap(nodes=[marked_now()], pods=[stopping]), T0 + GRACE + d.AFTER_GRACE_SECONDS, SETTINGS)
    [done] = dec.of(d.Complete)
    assert "train-0" in done.why
    assert any(e.reason == "TerminationContinued" and e.warning for e in dec.of(d.Event))


def test_a_jobs_deadline_extension_stretches_its_time_but_never_past_the_hooks_global_timeout():
    extended = pod("train-0", annotations={ANNOTATION_DEADLINE_EXTENSION: "3600"})
    assert d.decide(snap(nodes=[marked_now()], pods=[extended]), T0 + GRACE + 3599, SETTINGS).of(d.Evict) == []
    assert d.decide(snap(nodes=[marked_now()], pods=[extended]), T0 + GRACE + 3600, SETTINGS).of(d.Evict) != []
    forever = pod("train-0", annotations={ANNOTATION_DEADLINE_EXTENSION: "999999"})
    hard = T0 + SETTINGS.global_timeout_seconds - d.COMPLETE_MARGIN_SECONDS
    assert SETTINGS.global_timeout_seconds == 30_000
    assert d.decide(snap(nodes=[marked_now()], pods=[forever]), hard - 1, SETTINGS).holds[0].until == hard
    dec = d.decide(snap(nodes=[marked_now()], pods=[forever]), hard, SETTINGS)
    [done] = dec.of(d.Complete)
    assert "global timeout" in done.why


def test_a_job_evicted_at_its_extended_time_still_gets_its_time_to_stop():
    # Review of issue 10: once evicted, the pod is "stopping" and no longer a Job with a due time; its
    # time to stop must still run from its own (extended) due time, as the JobGraceExpired Event says.
    extended = pod("train-0", annotations={ANNOTATION_DEADLINE_EXTENSION: "3600"})
    due = T0 + GRACE + 3600
    dec = d.decide(snap(nodes=[marked_now()], pods=[extended]), due, SETTINGS)
    [warning] = [e for e in dec.of(d.Event) if e.reason == "JobGraceExpired"]
    assert d.format_time(due + d.AFTER_GRACE_SECONDS) in warning.message
    stopping = replace(extended, deleting=True)
    dec = d.decide(snap(nodes=[marked_now()], pods=[stopping]), due + 5, SETTINGS)
    assert dec.of(d.Complete) == [] and dec.holds[0].until == due + d.AFTER_GRACE_SECONDS
    assert d.decide(snap(nodes=[marked_now()], pods=[stopping]), due + d.AFTER_GRACE_SECONDS,
                    SETTINGS).of(d.Complete) != []


@pytest.mark.parametrize("value", ["junk", "nan", "inf"])
def test_a_job_whose_extension_cannot_be_read_is_held_to_the_hooks_limit_never_forced_at_the_grace(value):
    # The rollout's rule (pods.unreadable_extension): fail closed, never force such a Job. The handler
    # cannot hold past the hook, so it holds to the hook's limit.
    unreadable = pod("train-0", annotations={ANNOTATION_DEADLINE_EXTENSION: value})
    hard = T0 + SETTINGS.global_timeout_seconds - d.COMPLETE_MARGIN_SECONDS
    dec = d.decide(snap(nodes=[marked_now()], pods=[unreadable]), T0 + GRACE, SETTINGS)
    assert dec.of(d.Evict) == [] and dec.of(d.Complete) == [] and dec.holds[0].until == hard
    assert d.decide(snap(nodes=[marked_now()], pods=[unreadable]), hard, SETTINGS).of(d.Complete) != []


def test_a_pdb_that_never_yields_holds_until_the_grace_then_the_pod_dies_with_the_node():
    web = pod("web-1", "ReplicaSet", ns="apps", labels={"app": "web"})
    pdb = PodDisruptionBudget("apps", "web", {"app": "web"}, disruptions_allowed=0)
    dec = d.decide(snap(nodes=[marked_now()], pods=[web], pdbs=[pdb]), T0 + 60, SETTINGS)
    assert dec.of(d.Evict) == [] and dec.of(d.Complete) == []          # the API would refuse: not even asked
    assert "PodDisruptionBudget apps/web allows no disruption" in dec.holds[0].waiting_for[0]
    dec = d.decide(snap(nodes=[marked_now()], pods=[web], pdbs=[pdb]), T0 + GRACE, SETTINGS)
    [done] = dec.of(d.Complete)
    assert "apps/web-1" in done.why
    ok = replace(pdb, disruptions_allowed=1)
    dec = d.decide(snap(nodes=[marked_now()], pods=[web, replace(web, name="web-2")], pdbs=[ok]), T0 + 60, SETTINGS)
    assert [e.name for e in dec.of(d.Evict)] == ["web-1"]              # one disruption: one eviction this cycle


def test_the_global_timeout_completes_even_while_jobs_run():
    hard = T0 + SETTINGS.global_timeout_seconds - d.COMPLETE_MARGIN_SECONDS
    long = d.Settings(job_grace_seconds=40_000, heartbeat_timeout_seconds=300)   # a grace the hook cannot honour
    dec = d.decide(snap(nodes=[marked_now()], pods=[pod("train-0")]), hard, long)
    assert dec.of(d.Complete) and dec.of(d.Heartbeat) == []
    dec = d.decide(snap(nodes=[marked_now()], pods=[pod("train-0")]), hard - 1, long)
    assert dec.of(d.Complete) == [] and dec.holds[0].until == hard


def test_a_stopping_pod_holds_the_node_but_not_forever():
    leaving = pod("web-1", "ReplicaSet", deleting=True)
    assert d.decide(snap(nodes=[marked_now()], pods=[leaving]), T0 + 100, SETTINGS).of(d.Complete) == []
    assert d.decide(snap(nodes=[marked_now()], pods=[leaving]), T0 + GRACE + d.AFTER_GRACE_SECONDS,
                    SETTINGS).of(d.Complete) != []


def test_bare_pods_are_held_like_jobs_and_daemonsets_neither_hold_nor_are_evicted():
    dec = d.decide(snap(nodes=[marked_now()], pods=[pod("notebook", None), pod("agent", "DaemonSet")]), T0 + 60, SETTINGS)
    assert dec.of(d.Evict) == [] and dec.of(d.Complete) == [] and "notebook" in dec.holds[0].waiting_for[0]
    dec = d.decide(snap(nodes=[marked_now()], pods=[pod("agent", "DaemonSet")]), T0 + 60, SETTINGS)
    assert dec.of(d.Complete) != []


def test_custom_job_kinds_come_from_the_settings():
    ray = pod("head", "RayCluster")
    assert d.decide(snap(nodes=[marked_now()], pods=[ray]), T0 + 60, SETTINGS).of(d.Evict) != []
    with_ray = replace(SETTINGS, job_kinds=SETTINGS.job_kinds | {"RayCluster"})
    assert d.decide(snap(nodes=[marked_now()], pods=[ray]), T0 + 60, with_ray).of(d.Evict) == []


# ---- the rollout and the handler never fight -----------------------------------------------------------------


def rollout_drained(**kw):
    return node(unschedulable=True, taints=(Taint(TAINT_ROLLOUT, "old", "NoSchedule"),), **kw)


def test_a_node_the_rollout_drained_is_completed_at_once_and_left_untouched():
    dec = d.decide(snap(nodes=[rollout_drained()], pods=[pod("agent", "DaemonSet")]), T0 + 1, SETTINGS)
    assert dec.of(d.Complete) == [d.Complete(IID, ASG, d.HOOK_NAME, "kiln's rollout drained the node")]
    assert dec.of(d.Mark) == [] and dec.of(d.Heartbeat) == [] and dec.of(d.Evict) == []


def test_a_rollout_cordoned_node_that_still_runs_a_job_is_held():
    dec = d.decide(snap(nodes=[rollout_drained()], pods=[pod("train-0")]), T0 + 1, SETTINGS)
    assert dec.of(d.Complete) == [] and dec.of(d.Mark) and dec.of(d.Heartbeat)


def test_an_empty_node_is_completed_only_once_it_was_seen_fenced():
    dec = d.decide(snap(nodes=[node()], pods=[]), T0 + 1, SETTINGS)     # a pod may bind before the cordon lands
    assert dec.of(d.Mark) and dec.of(d.Complete) == [] and dec.of(d.Heartbeat)
    assert d.decide(snap(nodes=[marked_now()], pods=[]), T0 + 6, SETTINGS).of(d.Complete) != []


def test_a_node_uncordoned_by_someone_else_is_fenced_again_without_new_events():
    uncordoned = node(marks={Reason.LIFECYCLE: T0}, unschedulable=False)
    dec = d.decide(snap(nodes=[uncordoned], pods=[pod("train-0")]), T0 + 60, SETTINGS)
    assert dec.of(d.Mark) == [d.Mark(NODE, IID, ((Reason.LIFECYCLE, T0),))]
    assert dec.of(d.Event) == [] and dec.of(d.Complete) == []


# ---- no node, nodes without a provider ID, an unreadable cluster -------------------------------------------


def test_an_instance_without_a_node_is_completed():
    dec = d.decide(snap(nodes=[node("other", "i-0bbbbbbbbbbbbbbbb")], pods=[]), T0 + 1, SETTINGS)
    assert dec.of(d.Complete) == [d.Complete(IID, ASG, d.HOOK_NAME, "no node of this cluster runs on the instance")]


def test_a_node_without_provider_id_running_jobs_fails_closed_until_the_grace():
    unmapped = node("ip-10-0-9-9", None)
    world = dict(nodes=[unmapped], pods=[pod("train-0", node_name="ip-10-0-9-9")])
    dec = d.decide(snap(**world), T0 + 1, SETTINGS)
    assert dec.of(d.Complete) == [] and dec.of(d.Heartbeat)
    [warn] = dec.of(d.Event)
    assert warn.warning and warn.regarding == d.Ref("Node", "ip-10-0-9-9") and IID in warn.message
    assert d.decide(snap(**world, started={IID: T0}), T0 + GRACE, SETTINGS).of(d.Complete) != []
    # Without Jobs there is nothing to lose: completed.
    assert d.decide(snap(nodes=[unmapped], pods=[pod("web", "ReplicaSet", node_name="ip-10-0-9-9")]),
                    T0 + 1, SETTINGS).of(d.Complete) != []


def test_an_unreadable_cluster_holds_every_action_and_settles_no_message():
    dec = d.decide(snap(nodes=None, notices=[lifecycle_notice(), notice(Reason.SPOT)]), T0 + 1, SETTINGS)
    assert dec.of(d.Heartbeat) == [d.Heartbeat(IID, ASG, d.HOOK_NAME)]
    assert dec.of(d.Complete) == [] and dec.of(d.DeleteMessage) == [] and dec.of(d.Mark) == []
    assert {k.message_id for k in dec.of(d.KeepMessage)} == {"m-1", "m-2"}


def test_start_time_falls_back_from_the_mark_to_the_notice_to_memory_to_now():
    c = d._Cycle(snap(nodes=[node()]), T0 + 500, SETTINGS)
    assert d._lifecycle_start(c, IID, None) == T0 + 500
    c = d._Cycle(snap(nodes=[node()], started={IID: T0 + 7}), T0 + 500, SETTINGS)
    assert d._lifecycle_start(c, IID, None) == T0 + 7
    c.notice_started[IID] = T0 + 3
    assert d._lifecycle_start(c, IID, None) == T0 + 3
    assert d._lifecycle_start(c, IID, marked_now()) == T0


# ---- spot, stop, rebalance, scheduled change --------------------------------------------------------------------


def test_a_spot_interruption_cordons_evicts_non_jobs_at_once_and_warns_the_jobs():
    world = dict(nodes=[node()], pods=[pod("train-0"), pod("web-1", "ReplicaSet")], instances={})
    dec = d.decide(snap(**world, notices=[notice(Reason.SPOT, at=T0 + 120)]), T0 + 1, SETTINGS)
    assert dec.of(d.Mark) == [d.Mark(NODE, IID, ((Reason.SPOT, T0),))]
    assert [(e.name, e.job) for e in dec.of(d.Evict)] == [("web-1", False)]
    assert dec.of(d.Heartbeat) == [] and dec.of(d.Complete) == []
    [job_event] = [e for e in dec.of(d.Event) if e.regarding.kind == "Pod"]
    assert job_event.warning and "2027-01-15T08:02:00Z" in job_event.message and "graceful shutdown" in job_event.message
    assert dec.of(d.DeleteMessage)[0].instance_ids == (IID,)
    # Level-triggered: later cycles keep evicting what is left, and never the Job.
    spotted = node(marks={Reason.SPOT: T0})
    again = d.decide(snap(nodes=[spotted], pods=[pod("train-0"), pod("web-2", "ReplicaSet")], instances={}), T0 + 30,
                     SETTINGS)
    assert [e.name for e in again.of(d.Evict)] == ["web-2"] and again.of(d.Mark) == []


@pytest.mark.parametrize("reason", [Reason.REBALANCE, Reason.SCHEDULED])
def test_rebalance_and_scheduled_changes_only_cordon(reason):
    dec = d.decide(snap(nodes=[node()], pods=[pod("train-0"), pod("web-1", "ReplicaSet")], instances={},
                        notices=[notice(reason, at=T0 + 86400, detail="AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED")]),
                   T0 + 1, SETTINGS)
    assert dec.of(d.Mark) == [d.Mark(NODE, IID, ((reason, T0),))]
    assert dec.of(d.Evict) == []
    [event] = dec.of(d.Event)
    assert "running pods stay" in event.message and not event.warning


def test_a_stopping_instance_is_drained_like_a_spot_reclaim():
    dec = d.decide(snap(nodes=[node()], pods=[pod("train-0"), pod("web-1", "ReplicaSet")], instances={},
                        notices=[notice(Reason.STOPPING, at=T0, detail="stopping")]), T0 + 1, SETTINGS)
    assert [(e.name, e.job) for e in dec.of(d.Evict)] == [("web-1", False)]


def test_a_rebalanced_node_that_the_asg_then_terminates_is_held_for_its_jobs():
    rebalanced = node(marks={Reason.REBALANCE: T0})
    dec = d.decide(snap(nodes=[rebalanced], pods=[pod("train-0")], notices=[lifecycle_notice(time=T0 + 60)]),
                   T0 + 61, SETTINGS)
    assert dec.of(d.Mark) == [d.Mark(NODE, IID, ((Reason.LIFECYCLE, T0 + 60),))]
    assert dec.of(d.Complete) == [] and dec.holds[0].until == T0 + 60 + GRACE


# ---- messages: foreign, stale, early, duplicate, poison ---------------------------------------------------------


def settled(decision):
    return {a.message_id: type(a).__name__ for a in decision.actions if isinstance(a, (d.DeleteMessage, d.KeepMessage))}


def test_messages_for_other_clusters_or_hooks_or_gone_instances_are_deleted_and_change_nothing():
    world = dict(nodes=[node()], pods=[pod("train-0")], instances=waiting())
    cases = [lifecycle_notice("a", asg="other-cluster-asg"), lifecycle_notice("b", hook="someone-elses-hook"),
             lifecycle_notice("c", iid="i-0ccccccccccccccccc"[:19]), notice(Reason.SPOT, "e", iid="i-0dddddddddddddddd")]
    dec = d.decide(snap(**world, notices=cases), T0 + 1, SETTINGS)
    assert settled(dec) == {"a": "DeleteMessage", "b": "DeleteMessage", "c": "DeleteMessage", "e": "DeleteMessage"}
    why = {a.message_id: a.why for a in dec.of(d.DeleteMessage)}
    assert "not one of this cluster's ASGs" in why["a"] and "not kiln's" in why["b"] and "past the hook" in why["c"]
    assert "not a node of this cluster" in why["e"]
    assert dec.of(d.Mark) == [d.Mark(NODE, IID, ((Reason.LIFECYCLE, T0 + 1),))]      # only the world's own action


def test_a_lifecycle_message_ahead_of_auto_scalings_describe_is_kept_for_later():
    dec = d.decide(snap(nodes=[node()], instances=waiting(state="InService"), notices=[lifecycle_notice()]), T0, SETTINGS)
    assert settled(dec) == {"m-1": "KeepMessage"} and dec.of(d.Mark) == [] and dec.of(d.Heartbeat) == []


def test_a_lifecycle_message_after_the_action_is_over_is_deleted():
    for state in ("Terminating:Proceed", "Terminated"):
        dec = d.decide(snap(nodes=[node()], instances=waiting(state=state), notices=[lifecycle_notice()]), T0, SETTINGS)
        assert settled(dec) == {"m-1": "DeleteMessage"} and dec.of(d.Complete) == []


def test_duplicate_and_out_of_order_notices_mark_once():
    dup = [notice(Reason.SPOT, "s1", time=T0 + 5), notice(Reason.SPOT, "s2", time=T0 + 5),
           notice(Reason.REBALANCE, "r1", time=T0)]
    dec = d.decide(snap(nodes=[node()], instances={}, notices=dup), T0 + 10, SETTINGS)
    assert dec.of(d.Mark) == [d.Mark(NODE, IID, ((Reason.REBALANCE, T0), (Reason.SPOT, T0 + 5)))]
    assert settled(dec) == {"s1": "DeleteMessage", "s2": "DeleteMessage", "r1": "DeleteMessage"}
    # Redelivered after the mark landed: nothing new.
    already = node(marks={Reason.SPOT: T0 + 5, Reason.REBALANCE: T0})
    dec = d.decide(snap(nodes=[already], instances={}, notices=dup), T0 + 99, SETTINGS)
    assert dec.of(d.Mark) == [] and dec.of(d.Event) == []


def test_a_poison_message_is_kept_for_the_dead_letter_queue():
    dec = d.decide(snap(nodes=[node()], notices=[d.Notice("p", None, detail="body is not JSON")]), T0, SETTINGS)
    [keep] = dec.of(d.KeepMessage)
    assert keep.poison and "not JSON" in keep.why


def test_an_instance_notice_that_might_be_an_unmapped_node_running_jobs_is_kept():
    unmapped = node("ip-10-0-9-9", None)
    dec = d.decide(snap(nodes=[unmapped], pods=[pod("train-0", node_name="ip-10-0-9-9")], instances={},
                        notices=[notice(Reason.SPOT, iid="i-0eeeeeeeeeeeeeeee")]), T0, SETTINGS)
    [keep] = dec.of(d.KeepMessage)
    assert "without a provider ID" in keep.why and not keep.poison


def test_settings_derive_the_global_timeout_and_heartbeat_period():
    assert d.Settings(heartbeat_timeout_seconds=300).global_timeout_seconds == 30_000
    assert d.Settings(heartbeat_timeout_seconds=7200).global_timeout_seconds == 48 * 3600
    assert d.Settings(heartbeat_timeout_seconds=300).heartbeat_every_seconds == 100


# ---- properties over random worlds ---------------------------------------------------------------------------------


_pods = st.lists(st.tuples(
    st.sampled_from(["Job", "PyTorchJob", None, "ReplicaSet", "StatefulSet", "DaemonSet"]),
    st.sampled_from(["Running", "Pending", "Succeeded"]),
    st.booleans(),                                           # deleting
    st.sampled_from([None, "0", "600", "100000", "junk"]),   # deadline extension
), max_size=6)


def _world(specs, mark_reason, fenced):
    pods = [pod(f"p{i}", kind, phase=phase, deleting=deleting,
                annotations={ANNOTATION_DEADLINE_EXTENSION: ext} if ext else None)
            for i, (kind, phase, deleting, ext) in enumerate(specs)]
    n = node(marks={mark_reason: T0}, unschedulable=fenced) if mark_reason else node(unschedulable=fenced)
    return n, pods


@hsettings(max_examples=300, deadline=None)
@given(specs=_pods, elapsed=st.floats(min_value=0, max_value=40_000), marked=st.booleans(), fenced=st.booleans(),
       grace=st.sampled_from([0.0, 600.0, 7200.0, 29_640.0]))
def test_never_completes_while_a_job_runs_within_its_time_and_never_holds_past_the_global_timeout(
        specs, elapsed, marked, fenced, grace):
    settings = replace(SETTINGS, job_grace_seconds=grace)
    n, pods = _world(specs, Reason.LIFECYCLE if marked else None, fenced)
    now = T0 + elapsed
    dec = d.decide(snap(nodes=[n], pods=pods, started={IID: T0}), now, settings)
    hard = T0 + settings.global_timeout_seconds - d.COMPLETE_MARGIN_SECONDS
    completes = dec.of(d.Complete)
    if now >= hard:
        assert completes and not dec.of(d.Heartbeat)
        return
    assert len(completes) + len(dec.holds) == 1
    c = d._Cycle(snap(nodes=[n], pods=pods), now, settings)
    for p in pods:
        if d.is_job(p, settings.job_kinds) and not p.deleting:
            due = d._job_due(c, p, T0)
            if now < due:
                assert not completes, p
                assert p.name not in [e.name for e in dec.of(d.Evict)], p
    for hold in dec.holds:
        assert hold.until <= hard


@hsettings(max_examples=200, deadline=None)
@given(specs=_pods, reason=st.sampled_from([Reason.SPOT, Reason.STOPPING, Reason.REBALANCE, Reason.SCHEDULED]),
       elapsed=st.floats(min_value=0, max_value=10_000))
def test_kiln_never_evicts_a_job_it_cannot_hold_for_and_never_touches_pods_on_advisory_notices(specs, reason, elapsed):
    n, pods = _world(specs, reason, True)
    dec = d.decide(snap(nodes=[n], pods=pods, instances={}), T0 + elapsed, SETTINGS)
    evicted = {e.name for e in dec.of(d.Evict)}
    assert not any(e.job for e in dec.of(d.Evict))
    assert not evicted & {p.name for p in pods if d.is_job(p)}
    if reason in (Reason.REBALANCE, Reason.SCHEDULED):
        assert not evicted
    else:
        assert evicted == {p.name for p in pods if d.needs_eviction(p)}
    assert not dec.of(d.Complete) and not dec.of(d.Heartbeat)


@hsettings(max_examples=100, deadline=None)
@given(specs=_pods, elapsed=st.floats(min_value=0, max_value=40_000))
def test_deciding_twice_on_the_same_world_gives_the_same_answer(specs, elapsed):
    n, pods = _world(specs, Reason.LIFECYCLE, True)
    world = snap(nodes=[n], pods=pods, notices=[lifecycle_notice()])
    assert d.decide(world, T0 + elapsed, SETTINGS) == d.decide(world, T0 + elapsed, SETTINGS)


def test_a_lifecycle_marked_node_whose_action_is_over_is_left_alone():
    # Completed (Terminating:Proceed) or gone: the node object may linger a moment; nothing to drain or hold for.
    for instances in (waiting(state="Terminating:Proceed"), {}):
        dec = d.decide(snap(nodes=[marked_now()], pods=[pod("web-1", "ReplicaSet")], instances=instances), T0 + 60,
                       SETTINGS)
        assert dec.actions == () and dec.holds == ()
    # While it waits, non-Job pods are evicted even past the grace (a Job's extension can keep the node longer).
    extended = pod("train-0", annotations={ANNOTATION_DEADLINE_EXTENSION: "3600"})
    dec = d.decide(snap(nodes=[marked_now()], pods=[extended, pod("web-1", "ReplicaSet")]), T0 + GRACE + 60, SETTINGS)
    assert [e.name for e in dec.of(d.Evict)] == ["web-1"] and dec.of(d.Complete) == []
