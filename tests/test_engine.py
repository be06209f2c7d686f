"""The pure rollout engine: snapshots in, commands out (no world at all)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from automation.rollout import engine, pods as podrules
from automation.rollout.engine import (AnnotateNode, ClearRolledBack, Cordon, DeleteGroupIntent, Evict,
                                       MarkRolledBack, Protect, ScaleAutoscaler, SetCapacity, SetVersion, Terminate,
                                       Uncordon, decide, finish_commands)
from automation.rollout.model import (ANNOTATION_DEADLINE_EXTENSION, ANNOTATION_ROLLOUT_PROTECTED,
                                      CA_SCALE_DOWN_DISABLED, LABEL_MODEL_VERSION, LABEL_NODE_GROUP, RESOURCE_GPU,
                                      TAG_ROLLED_BACK_FROM, TAG_ROLLED_BACK_REASON, TAG_ROLLED_BACK_TO,
                                      TAINT_ROLLOUT, TAINT_WARMING, WARMUP_DAEMONSET, AutoScalingGroup, GroupIntent,
                                      Instance, Node, Pod, PodDisruptionBudget, RolloutIntent, ScalingActivity,
                                      Snapshot, Taint)
from automation.rollout.strategies import DEFAULT, DOUBLE_AND_DRAIN, get_strategy, parse_surge, surge_nodes

ROLLOUT_TAINT = Taint(TAINT_ROLLOUT, "old", "NoSchedule")


def inst(i: str, version: str = "1", **kw) -> Instance:
    return Instance(id=i, zone="us-east-2a", launch_template_version=version, **kw)


def group(instances, *, desired=None, max_size=10, version="2", name="gpu-a", tags=None, min_size=0) -> AutoScalingGroup:
    return AutoScalingGroup(name=name, node_group=name, zone="us-east-2a", min_size=min_size, max_size=max_size,
                            desired_capacity=len(instances) if desired is None else desired,
                            launch_template_id="lt-1", launch_template_version=version,
                            instances=tuple(instances), tags=tags or {})


def node(name: str, instance_id: str, *, old=True, cordoned=None, ready=True, warming=False, slots=1.0,
         annotations=None, group_name="gpu-a", label=True) -> Node:
    cordoned = old if cordoned is None else cordoned
    taints = ((ROLLOUT_TAINT,) if cordoned else ()) + ((Taint(TAINT_WARMING, "true"),) if warming else ())
    ann = dict(annotations or ({CA_SCALE_DOWN_DISABLED: "true"} if cordoned else {}))
    labels = {LABEL_NODE_GROUP: group_name}
    if label:
        labels[LABEL_MODEL_VERSION] = "v1" if old else "v2"
    return Node(name=name, instance_id=instance_id, labels=labels, annotations=ann, taints=taints,
                unschedulable=cordoned, ready=ready, allocatable={RESOURCE_GPU: slots})


def canary(name="c1", iid="i-c1", **kw) -> Node:
    """A proven replacement: Ready, labelled, warm."""
    return node(name, iid, old=False, **kw)


def job_pod(name: str, node_name, phase="Running", **kw) -> Pod:
    return Pod(namespace="ml", name=name, node_name=node_name, phase=phase, owner_kind="Job", owner_name=name,
               requests={RESOURCE_GPU: 1.0}, uid=f"uid-{name}", **kw)


def svc_pod(name: str, node_name, app="api") -> Pod:
    return Pod(namespace="default", name=name, node_name=node_name, phase="Running", owner_kind="ReplicaSet",
               labels={"app": app})


def intent(*, now=0.0, deadline=7200.0, phase="rolling", pause=False, replicas=None, surge=None,
           strategy="default", timeout=1800.0, boot=600.0, launch=900.0, reason="") -> RolloutIntent:
    return RolloutIntent(rollout_id="r1", started_at=now, deadline_at=deadline, strategy=strategy, surge=surge,
                         pause_autoscaler=pause, autoscaler_replicas=replicas, ready_timeout_seconds=timeout,
                         phase=phase, boot_timeout_seconds=boot, launch_failure_timeout_seconds=launch,
                         rollback_reason=reason)


def gi(desired=2, max_size=10, name="gpu-a") -> dict[str, GroupIntent]:
    return {name: GroupIntent(asg=name, original_desired=desired, original_max=max_size, target_version="2",
                              previous_version="1")}


def snap(groups, nodes=(), pods=(), pdbs=(), now=0.0, replicas=None, activities=()) -> Snapshot:
    return Snapshot(now=now, groups=tuple(groups), nodes=tuple(nodes), pods=tuple(pods), pdbs=tuple(pdbs),
                    autoscaler_replicas=replicas, activities=tuple(activities))


def of(kind, commands):
    return [c for c in commands if isinstance(c, kind)]


# ---------------------------------------------------------------- pod filters (kubectl pkg/drain style)

PODS = [
    job_pod("running", "n1"),
    job_pod("done", "n1", phase="Succeeded"),
    job_pod("failed", "n1", phase="Failed"),
    Pod("kube-system", "ds", "n1", "Running", owner_kind="DaemonSet"),
    Pod("kube-system", "mirror", "n1", "Running", owner_kind="Node",
        annotations={"kubernetes.io/config.mirror": "x"}),
    Pod("default", "bare", "n1", "Running", owner_kind=None),
    svc_pod("web", "n1"),
    Pod("default", "leaving", "n1", "Running", owner_kind="ReplicaSet", deleting=True),
    Pod("default", "sts", "n1", "Running", owner_kind="StatefulSet"),
]


def test_pod_filters_follow_kubectl_drain_rules():
    action = {p.name: podrules.classify_pod(p).action for p in PODS}
    assert action == {"running": "wait", "done": "ignore", "failed": "ignore", "ds": "ignore", "mirror": "ignore",
                      "bare": "wait", "web": "evict", "leaving": "leaving", "sts": "evict"}
    assert {p.name for p in PODS if engine.blocks_drain(p)} == {"running", "bare"}
    assert {p.name for p in PODS if engine.needs_eviction(p)} == {"web", "sts"}
    assert {p.name for p in PODS if engine.still_leaving(p)} == {"leaving"}


def test_each_filter_gives_its_own_reason_and_the_first_verdict_wins():
    reasons = {p.name: podrules.classify_pod(p).reason for p in PODS}
    assert reasons["done"] == reasons["failed"] == "finished"
    assert "DaemonSet" in reasons["ds"] and "mirror" in reasons["mirror"] and "terminating" in reasons["leaving"]
    assert "Job" in reasons["running"] and "bare pod" in reasons["bare"] and "Eviction API" in reasons["web"]
    assert len({reasons[n] for n in ("done", "ds", "mirror", "leaving", "running", "bare", "web")}) == 7
    # Order: a finished DaemonSet pod is "finished"; a terminating Job pod is leaving, not waited for.
    assert podrules.classify_pod(Pod("k", "x", "n", "Succeeded", owner_kind="DaemonSet")).reason == "finished"
    assert podrules.classify_pod(job_pod("j", "n1", deleting=True)).action == "leaving"
    # Each filter passes (None) on what is not its business.
    web = svc_pod("web", "n1")
    assert all(f(web, podrules.DEFAULT_JOB_OWNER_KINDS) is None for f in podrules.FILTERS)


@pytest.mark.parametrize("phase,owner,deleting,mirror", itertools.product(
    ["Pending", "Running", "Succeeded", "Failed", "Unknown"],
    ["Job", "PyTorchJob", "RayCluster", "ReplicaSet", "DaemonSet", "Node", None], [False, True], [False, True]))
def test_exactly_one_action_per_pod_and_a_node_is_held_by_every_action_but_ignore(phase, owner, deleting, mirror):
    pod = Pod("ns", "p", "n1", phase, owner_kind=owner, deleting=deleting,
              annotations={"kubernetes.io/config.mirror": "x"} if mirror else {})
    flags = [engine.blocks_drain(pod), engine.needs_eviction(pod), engine.still_leaving(pod)]
    assert sum(flags) <= 1
    assert podrules.holds_node(pod) == any(flags)
    if phase in ("Succeeded", "Failed") or owner in ("DaemonSet", "Node") or mirror:
        assert not any(flags)


def test_a_deadline_extension_that_is_not_a_finite_number_gives_no_deadline_of_its_own():
    # (the drain never forces such a pod: see tests/test_rollout_adversarial.py)
    for bad in ("nan", "inf", "-inf", "soon", ""):
        assert engine.pod_deadline(job_pod("j", "n", annotations={ANNOTATION_DEADLINE_EXTENSION: bad}), 100.0) == 100.0
    assert engine.pod_deadline(job_pod("j", "n", annotations={ANNOTATION_DEADLINE_EXTENSION: "-50"}), 100.0) == 100.0
    assert engine.pod_deadline(job_pod("j", "n", annotations={ANNOTATION_DEADLINE_EXTENSION: "600"}), 100.0) == 700.0


# ---------------------------------------------------------------- proof before removal

def test_before_proof_old_nodes_stay_schedulable_and_only_the_canary_is_launched():
    g = group([inst("i-1"), inst("i-2"), inst("i-3")], max_size=3)
    nodes = [node(f"n{i}", f"i-{i}", cordoned=False) for i in (1, 2, 3)]      # idle: "free" to terminate
    d = decide(snap([g], nodes, [job_pod("j1", "n1")], now=9000), intent(), gi(desired=3, max_size=3), DEFAULT)
    assert not of(Cordon, d.commands) and not of(Terminate, d.commands) and not of(Evict, d.commands)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=4, max_size=4)]   # the canary only
    assert "proven" in d.waiting_for and not d.done


@pytest.mark.parametrize("state", ["booting", "not ready", "warming", "no model label"])
def test_a_replacement_that_is_not_ready_labelled_and_warm_proves_nothing(state):
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False)]
    if state != "booting":
        nodes.append(canary(ready=state != "not ready", warming=state == "warming", label=state != "no model label"))
    d = decide(snap([g], nodes, now=100), intent(), gi(), DEFAULT)
    assert not of(Cordon, d.commands) and not of(Terminate, d.commands)
    assert d.groups[0].proven is False


def test_once_proven_old_nodes_are_cordoned_and_an_idle_one_terminated_when_seen_cordoned():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False), canary()]
    d = decide(snap([g], nodes, [job_pod("j1", "n1")]), intent(), gi(), DEFAULT)
    assert {c.node for c in of(Cordon, d.commands)} == {"n1", "n2"} and not of(Terminate, d.commands)
    assert d.groups[0].proven and "c1" in of(Cordon, d.commands)[0].why      # says which node proved it
    seen = [node("n1", "i-1"), node("n2", "i-2"), canary()]
    d = decide(snap([g], seen, [job_pod("j1", "n1")]), intent(), gi(), DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-2", "n2")]
    assert not of(Evict, d.commands) and d.blocking_jobs == 1


def test_proof_is_per_group():
    a = group([inst("i-1"), inst("i-c1", "2")], desired=2, name="gpu-a")
    b = group([inst("i-2"), inst("i-c2", "2")], desired=2, name="gpu-b")
    nodes = [node("n1", "i-1", cordoned=False), canary(),
             node("n2", "i-2", cordoned=False, group_name="gpu-b"),
             node("c2", "i-c2", old=False, warming=True, group_name="gpu-b")]
    intents = {**gi(desired=1), **gi(desired=1, name="gpu-b")}
    d = decide(snap([a, b], nodes), intent(), intents, DEFAULT)
    assert [c.node for c in of(Cordon, d.commands)] == ["n1"]          # gpu-b's canary is still warming


def test_losing_the_proof_pauses_removal_and_forced_eviction():
    # Cordoned after an earlier proof; the canary is gone now (a lost node) and its replacement boots.
    g = group([inst("i-1"), inst("i-2"), inst("i-c2", "2")], desired=3)
    nodes = [node("n1", "i-1"), node("n2", "i-2")]
    d = decide(snap([g], nodes, [job_pod("j1", "n1")], now=8000), intent(), gi(), DEFAULT)
    assert not of(Terminate, d.commands) and not of(Evict, d.commands)
    assert not of(Uncordon, d.commands)          # cordons stay; a replacement is on its way


def test_no_job_is_forced_before_proof_even_past_the_deadline():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    nodes = [node("n1", "i-1", cordoned=False), node("c1", "i-c1", old=False, warming=True)]
    d = decide(snap([g], nodes, [job_pod("j1", "n1")], now=7300), intent(), gi(desired=1), DEFAULT)
    assert not of(Evict, d.commands)


def test_double_and_drain_the_baseline_does_not_wait_for_proof():
    g = group([inst("i-1"), inst("i-2")], max_size=2)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False)]
    d = decide(snap([g], nodes, [job_pod("j1", "n1"), job_pod("j2", "n2")]), intent(strategy="double-and-drain"),
               gi(desired=2, max_size=2), DOUBLE_AND_DRAIN)
    assert {c.node for c in of(Cordon, d.commands)} == {"n1", "n2"}
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=4, max_size=4)]
    assert of(Protect, d.commands) == [Protect("gpu-a", ("i-1", "i-2"), True)]


# ---------------------------------------------------------------- drain once proven

def test_node_with_only_finished_and_daemon_pods_is_terminated_exactly():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1"), node("n2", "i-2"), canary()]
    pods = [job_pod("done", "n1", phase="Succeeded"), Pod("kube-system", "ds", "n1", "Running", owner_kind="DaemonSet"),
            job_pod("j2", "n2")]
    d = decide(snap([g], nodes, pods), intent(), gi(), DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-1", "n1")]


def test_a_node_outlives_its_terminating_pods_and_goes_once_they_are_gone():
    """Evicted pods shut down for their grace period (deletionTimestamp set, still on the node): the node is not
    terminated under them — in the engine's own plan, whatever the runner's last look would catch."""
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1"), node("n2", "i-2"), canary()]
    leaving = [Pod("default", "api-0", "n1", "Running", owner_kind="ReplicaSet", labels={"app": "api"}, deleting=True),
               job_pod("evicted-job", "n2", deleting=True)]
    d = decide(snap([g], nodes, leaving), intent(), gi(), DEFAULT)
    assert not of(Terminate, d.commands) and not of(Evict, d.commands)   # nothing to evict again, nothing to cut
    assert not d.done
    d = decide(snap([g], nodes, leaving[1:]), intent(), gi(), DEFAULT)   # api-0 is gone; the Job pod still stops
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-1", "n1")]
    d = decide(snap([g], nodes, leaving[1:], now=7200 + 60), intent(), gi(), DEFAULT)   # past the deadline too
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-1", "n1")]


def test_controller_pods_are_evicted_once_no_job_remains_and_pdbs_are_spent_once():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    pods = [svc_pod("a1", "n1"), svc_pod("a2", "n1"), svc_pod("a3", "c1")]
    pdb = PodDisruptionBudget("default", "api", {"app": "api"}, disruptions_allowed=1)
    d = decide(snap([g], [node("n1", "i-1"), canary()], pods, [pdb]), intent(), gi(desired=1), DEFAULT)
    evicts = of(Evict, d.commands)
    assert len(evicts) == 1 and not evicts[0].job        # the budget allows one disruption this cycle
    assert not of(Terminate, d.commands)                  # not empty yet
    assert "PodDisruptionBudget" in d.waiting_for


def test_job_pods_are_never_evicted_before_the_deadline_and_forced_after():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    nodes = [node("n1", "i-1"), canary()]
    pods = [job_pod("j1", "n1"), job_pod("long", "n1", annotations={ANNOTATION_DEADLINE_EXTENSION: "600"})]
    before = decide(snap([g], nodes, pods, now=7199), intent(), gi(desired=1), DEFAULT)
    assert not of(Evict, before.commands) and before.wake_at == 7200
    after = decide(snap([g], nodes, pods, now=7200), intent(), gi(desired=1), DEFAULT)
    assert [(c.name, c.forced) for c in of(Evict, after.commands)] == [("j1", True)]   # "long" has 600 s more
    assert after.wake_at == 7800
    later = decide(snap([g], nodes, pods, now=7800), intent(), gi(desired=1), DEFAULT)
    assert {c.name for c in of(Evict, later.commands)} == {"j1", "long"}


def test_an_old_instance_that_never_registered_is_terminated_once_proven():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    assert not of(Terminate, decide(snap([g]), intent(), gi(desired=1), DEFAULT).commands)   # nothing proven
    d = decide(snap([g], [canary()]), intent(), gi(desired=1), DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-1", None)]


def test_the_cordon_says_what_it_waits_for_and_until_when():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    pods = [job_pod("train", "n1", annotations={ANNOTATION_DEADLINE_EXTENSION: "3600"})]
    d = decide(snap([g], [node("n1", "i-1", cordoned=False), canary()], pods), intent(), gi(desired=1), DEFAULT)
    [cordon] = of(Cordon, d.commands)
    assert "ml/train" in cordon.why and "t=10800s" in cordon.why
    assert [(w.namespace, w.name, w.uid, w.deadline) for w in cordon.waits_for] == [("ml", "train", "uid-train", 10800.0)]


# ---------------------------------------------------------------- capacity

def test_default_brings_one_canary_then_replaces_freed_nodes_raising_max_only_as_needed():
    g = group([inst("i-1"), inst("i-2")], max_size=2)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False)]
    pods = [job_pod("j1", "n1"), job_pod("j2", "n2")]
    d = decide(snap([g], nodes, pods), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3, max_size=3)]
    # Proven, n1 freed: terminate it (with decrement) and ask for its replacement in the same cycle.
    g2 = group([inst("i-1"), inst("i-2"), inst("i-3", "2")], desired=3, max_size=3)
    nodes2 = [node("n1", "i-1"), node("n2", "i-2"), node("n3", "i-3", old=False)]
    d2 = decide(snap([g2], nodes2, [job_pod("j2", "n2")]), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert of(Terminate, d2.commands) == [Terminate("gpu-a", "i-1", "n1")]
    # after the terminate desired is 2 (1 old + 1 new); wanted: 1 old + min(2, 1 + 1) new = 3
    assert of(SetCapacity, d2.commands) == [SetCapacity("gpu-a", desired=3, max_size=3)]


def test_fixed_surge_count_and_percentage():
    assert parse_surge("3") == (3, False) and parse_surge("25%") == (25, True) and parse_surge(None) is None
    assert surge_nodes("25%", 10) == 3 and surge_nodes("2", 10) == 2
    for bad in ("0", "x", "150%", "-1"):
        with pytest.raises(ValueError, match="--surge"):
            parse_surge(bad)
    with pytest.raises(ValueError, match="--strategy"):
        get_strategy("yolo")
    g = group([inst(f"i-{i}") for i in range(8)], max_size=8)
    nodes = [node(f"n{i}", f"i-{i}", cordoned=False) for i in range(8)]
    pods = [job_pod(f"j{i}", f"n{i}") for i in range(8)]
    d = decide(snap([g], nodes, pods), intent(surge="25%"), gi(desired=8, max_size=8), DEFAULT)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=10, max_size=10)]   # 2 canaries at once


def test_pending_jobs_get_nodes_only_once_the_group_is_proven_counting_booting_ones():
    pending = [job_pod(f"p{i}", None, phase="Pending") for i in range(5)]
    unproven = group([inst("i-1"), inst("i-c1", "2")], max_size=10)
    d = decide(snap([unproven], [node("n1", "i-1", slots=2.0, cordoned=False)],
                    [job_pod("j1", "n1"), job_pod("j2", "n1")] + pending), intent(), gi(desired=1), DEFAULT)
    assert not of(SetCapacity, d.commands) and d.pending_jobs == 5     # the canary is on its way; nothing more yet
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2"), inst("i-3", "2")], max_size=10)   # i-3 booting
    nodes = [node("n1", "i-1", slots=4.0), node("n2", "i-2", slots=4.0), canary(slots=4.0)]
    # n1 and n2 are cordoned with 3 of their 4 slots free each: the rollout took 6 slots (2 nodes'
    # worth) away from pending Jobs; i-3 (booting) is one node of that already.
    nine = [job_pod(f"p{i}", None, phase="Pending") for i in range(9)]
    d = decide(snap([g], nodes, [job_pod("j1", "n1"), job_pod("j2", "n2")] + nine), intent(), gi(desired=2), DEFAULT)
    # 9 pending: 4 slots on the canary, 4 on the booting one: 1 more slot -> 1 more node; 2 old + 2 new + 1.
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=5, max_size=10)]
    # Once that node is there, the same queue asks for nothing more: the total is bounded, not each cycle.
    g5 = group([inst("i-1"), inst("i-2"), inst("i-c1", "2"), inst("i-3", "2"), inst("i-4", "2")], max_size=10)
    more = [job_pod(f"q{i}", None, phase="Pending") for i in range(20)]
    d = decide(snap([g5], nodes, [job_pod("j1", "n1"), job_pod("j2", "n2")] + more), intent(), gi(desired=2), DEFAULT)
    assert not of(SetCapacity, d.commands)


def test_pending_jobs_beyond_what_the_rollout_took_away_are_the_autoscalers_not_the_rollouts():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], max_size=20)
    nodes = [node("n1", "i-1"), node("n2", "i-2"), canary()]
    pods = [job_pod("j1", "n1"), job_pod("j2", "n2"), job_pod("j3", "c1")]
    storm = [job_pod(f"p{i}", None, phase="Pending") for i in range(30)]
    # Every old node is full: the rollout took no capacity away, so a queue is not its to serve.
    for replicas in (None, 1):
        d = decide(snap([g], nodes, pods + storm, replicas=replicas), intent(), gi(desired=2, max_size=20), DEFAULT)
        assert not of(SetCapacity, d.commands), replicas
    # Having paused cluster-autoscaler, the rollout stands in for it, up to the original max.
    paused = decide(snap([g], nodes, pods + storm, replicas=0), intent(pause=True, replicas=1),
                    gi(desired=2, max_size=20), DEFAULT)
    assert of(SetCapacity, paused.commands) == [SetCapacity("gpu-a", desired=22, max_size=22)]


def test_desired_is_never_lowered_by_the_engine():
    g = group([inst("i-1"), inst("i-2", "2"), inst("i-3", "2"), inst("i-4", "2")], desired=4)
    nodes = [node("n1", "i-1")] + [node(f"n{i}", f"i-{i}", old=False) for i in (2, 3, 4)]
    d = decide(snap([g], nodes, [job_pod("j1", "n1")]), intent(), gi(desired=1), DEFAULT)
    assert not of(SetCapacity, d.commands) or all(c.desired is None for c in of(SetCapacity, d.commands))


def test_terminate_at_the_min_size_lets_the_group_replace_the_instance_instead_of_a_refused_decrement():
    g = group([inst("i-1"), inst("i-2"), inst("i-3", "2")], desired=3, max_size=3, min_size=2)
    nodes = [node("n1", "i-1"), node("n2", "i-2"), node("n3", "i-3", old=False)]
    d = decide(snap([g], nodes), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-1", "n1", decrement=True),
                                         Terminate("gpu-a", "i-2", "n2", decrement=False)]
    assert not of(SetCapacity, d.commands) or of(SetCapacity, d.commands)[0].desired is None


# ---------------------------------------------------------------- a bad new version

def test_a_new_instance_with_no_node_after_the_boot_timeout_is_bad():
    g = group([inst("i-1"), inst("i-c1", "2", launched_at=0.0)])
    nodes = [node("n1", "i-1", cordoned=False)]
    within = decide(snap([g], nodes, now=600), intent(), gi(desired=1), DEFAULT)
    assert within.rollback_reason is None and within.wake_at == 601
    late = decide(snap([g], nodes, now=601), intent(), gi(desired=1), DEFAULT)
    assert "i-c1" in late.rollback_reason and "no node registered" in late.rollback_reason
    # Without a launch time the runner's first sighting counts.
    g2 = group([inst("i-1"), inst("i-c1", "2")])
    assert decide(snap([g2], nodes, now=601), intent(), gi(desired=1), DEFAULT, {"i-c1": 100.0}).rollback_reason is None


@pytest.mark.parametrize("ready,warming,expected", [(False, True, "not Ready"), (True, True, "still warming")])
def test_a_registered_node_not_ready_or_still_warming_after_the_ready_timeout_is_bad(ready, warming, expected):
    g = group([inst("i-1"), inst("i-c1", "2", launched_at=0.0)])
    nodes = [node("n1", "i-1", cordoned=False), node("c1", "i-c1", old=False, ready=ready, warming=warming)]
    assert decide(snap([g], nodes, now=1800), intent(), gi(desired=1), DEFAULT).rollback_reason is None
    late = decide(snap([g], nodes, now=1801), intent(), gi(desired=1), DEFAULT)
    assert expected in late.rollback_reason and "c1" in late.rollback_reason
    assert any(n.reason == "RolloutBadNode" and n.name == "c1" and n.warning for n in late.notes)
    # double-and-drain never checks (as the script did not).
    assert decide(snap([g], nodes, now=5000), intent(), gi(desired=1), DOUBLE_AND_DRAIN).rollback_reason is None


def test_a_failed_warm_up_pod_is_bad_at_once():
    g = group([inst("i-1"), inst("i-c1", "2", launched_at=0.0)])
    nodes = [node("n1", "i-1", cordoned=False), node("c1", "i-c1", old=False, warming=True)]
    warmup = Pod("kube-system", "kiln-model-warmup-x", "c1", "Pending", owner_kind="DaemonSet",
                 owner_name=WARMUP_DAEMONSET, failure="Init:CrashLoopBackOff")
    d = decide(snap([g], nodes, [warmup], now=120), intent(), gi(desired=1), DEFAULT)
    assert "warm-up pod kube-system/kiln-model-warmup-x failed (Init:CrashLoopBackOff)" in d.rollback_reason
    other = replace(warmup, owner_name="node-exporter")
    assert decide(snap([g], nodes, [other], now=120), intent(), gi(desired=1), DEFAULT).rollback_reason is None


def test_in_a_proven_group_one_bad_instance_is_replaced_not_rolled_back():
    g = group([inst("i-1"), inst("i-c1", "2"), inst("i-c2", "2", launched_at=0.0)], desired=3)
    nodes = [node("n1", "i-1"), canary()]
    d = decide(snap([g], nodes, [job_pod("j", "n1")], now=700), intent(), gi(), DEFAULT)
    assert d.rollback_reason is None
    assert Terminate("gpu-a", "i-c2", None, decrement=False) in d.commands


def test_rollback_sets_the_previous_version_keeps_the_original_nodes_and_removes_the_bad_ones():
    # The rollout never cordoned an original node: nothing was proven.
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2"), inst("i-c2", "2")], desired=4)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False),
             node("c1", "i-c1", old=False, ready=False, warming=True)]
    d = decide(snap([g], nodes, [job_pod("j1", "n1")], now=9000), intent(phase="rolling_back"), gi(desired=2),
               DEFAULT)
    assert of(SetVersion, d.commands) == [SetVersion("gpu-a", "lt-1", "1")]
    assert of(Cordon, d.commands) == [Cordon("gpu-a", "c1")]
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-c2", None)]      # never registered
    assert not of(Evict, d.commands) and not of(SetCapacity, d.commands)
    # Seen cordoned (and empty) the next cycle, the bad instance goes too; the original nodes never.
    nodes[2] = node("c1", "i-c1", old=False, ready=False, warming=True, cordoned=True)
    d = decide(snap([g], nodes, [job_pod("j1", "n1")], now=9000), intent(phase="rolling_back"), gi(desired=2),
               DEFAULT)
    assert {c.instance_id for c in of(Terminate, d.commands)} == {"i-c1", "i-c2"}
    back = group([inst("i-1"), inst("i-2")], version="1", desired=2)
    done = decide(snap([back], nodes[:2], [job_pod("j1", "n1")]), intent(phase="rolling_back"), gi(desired=2), DEFAULT)
    assert done.done and not done.commands


def test_a_rollback_never_evicts_a_job_and_is_blocked_by_one_past_the_deadline():
    g = group([inst("i-1", "1"), inst("i-c1", "2")], desired=2, version="1")
    nodes = [node("n1", "i-1", old=False), node("c1", "i-c1", old=False, cordoned=True)]   # ran a Job, then went bad
    pods = [job_pod("j9", "c1")]
    d = decide(snap([g], nodes, pods, now=7300), intent(phase="rolling_back"), gi(desired=1), DEFAULT)
    assert not of(Evict, d.commands) and d.stop is None
    assert [(h.node, h.holders) for h in d.held] == [("c1", ("Job ml/j9",))]
    late = decide(snap([g], nodes, pods, now=7200 + engine.BLOCKED_GRACE_SECONDS), intent(phase="rolling_back"),
                  gi(desired=1), DEFAULT)
    assert late.stop.outcome == "blocked" and "Job ml/j9 holds c1" in late.stop.reason


# ---------------------------------------------------------------- launch failures

ICE = ("We currently do not have sufficient p4d.24xlarge capacity in the Availability Zone you requested "
       "(us-east-2a). Launching EC2 instance failed.")


def failed(at, message=ICE, status="Failed", n=0):
    return ScalingActivity("gpu-a", f"a-{at}-{n}", status, "Launching a new EC2 instance.  Status Reason: " + message,
                           message, started_at=at)


def test_failing_launches_are_reported_in_aws_words_and_never_cordon_or_terminate():
    # Proven earlier; the next replacements cannot launch (desired 4, 3 instances).
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=4)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2"), canary()]
    acts = [failed(300), failed(200), ScalingActivity("gpu-a", "ok", "Successful", "Launching a new EC2 instance: i-c1",
                                                      started_at=100)]
    d = decide(snap([g], nodes, now=400, activities=acts), intent(), gi(), DEFAULT)
    [failure] = d.launch_failures
    assert failure.message == ICE and failure.since == 200 and failure.activity_id == "a-300-0"
    assert not failure.invalid_template and d.rollback_reason is None and d.stop is None
    assert not of(Cordon, d.commands) and not of(Terminate, d.commands) and not of(SetCapacity, d.commands)
    assert "launches in gpu-a failing" in d.waiting_for and "sufficient" in d.waiting_for
    assert d.wake_at == 200 + 900 + 1


def test_launches_are_not_failing_once_one_succeeds_or_the_group_has_its_instances():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=3)
    ok = ScalingActivity("gpu-a", "ok", "Successful", "Launching a new EC2 instance: i-c9", started_at=300)
    d = decide(snap([g], [node("n1", "i-1", cordoned=False)], now=400, activities=[ok, failed(200)]), intent(),
               gi(desired=1), DEFAULT)
    assert not d.launch_failures
    full = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    d = decide(snap([full], [node("n1", "i-1", cordoned=False)], now=400, activities=[failed(200)]), intent(),
               gi(desired=1), DEFAULT)
    assert not d.launch_failures
    # Failures from before this rollout started do not count.
    d = decide(snap([g], [node("n1", "i-1", cordoned=False)], now=400, activities=[failed(50)]), intent(now=100),
               gi(desired=1), DEFAULT)
    assert not d.launch_failures


def test_launches_failing_past_the_timeout_stop_the_rollout_as_failed_with_the_message():
    g = group([inst("i-1")], desired=2)
    nodes = [node("n1", "i-1", cordoned=False)]
    d = decide(snap([g], nodes, now=200 + 899, activities=[failed(1000), failed(200)]), intent(), gi(desired=1),
               DEFAULT)
    assert d.stop is None
    d = decide(snap([g], nodes, now=200 + 900, activities=[failed(1000), failed(200)]), intent(), gi(desired=1),
               DEFAULT)
    assert d.stop.outcome == "failed" and ICE in d.stop.reason and "15m" in d.stop.reason


@pytest.mark.parametrize("message", [
    "The image id '[ami-0abc]' does not exist. Launching EC2 instance failed.",
    "InvalidAMIID.NotFound: The image id '[ami-0abc]' does not exist",
    "Invalid launch template: When a network interface is provided, the security groups must be a part of it."])
def test_an_invalid_template_or_ami_rolls_back_at_once(message):
    g = group([inst("i-1")], desired=2)
    d = decide(snap([g], [node("n1", "i-1", cordoned=False)], now=60, activities=[failed(30, message)]), intent(),
               gi(desired=1), DEFAULT)
    assert d.rollback_reason and message in d.rollback_reason


def test_while_launches_fail_idle_cordoned_old_nodes_go_back_to_pending_jobs():
    g = group([inst("i-1"), inst("i-2"), inst("i-3"), inst("i-c1", "2")], desired=5)
    nodes = [node("n1", "i-1"), node("n2", "i-2", slots=2.0), node("n3", "i-3"), canary()]
    pods = [job_pod("busy", "n2"), job_pod("on-canary", "c1"), job_pod("p1", None, phase="Pending")]
    d = decide(snap([g], nodes, pods, now=400, activities=[failed(300)]), intent(), gi(desired=3), DEFAULT)
    # One pending Job: one node back — the one already holding a Job (it stays anyway), not an idle one.
    assert [c.node for c in of(Uncordon, d.commands)] == ["n2"]
    assert not of(Terminate, d.commands) and not of(Cordon, d.commands)


# ---------------------------------------------------------------- PodDisruptionBudgets: blocked

def test_past_the_deadline_no_job_is_forced_from_a_node_a_pdb_holds_and_the_run_ends_blocked():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1"), node("n2", "i-2"), canary()]
    pods = [job_pod("j1", "n1"), svc_pod("api-0", "n1"), job_pod("j2", "n2")]
    pdb = PodDisruptionBudget("default", "api", {"app": "api"}, disruptions_allowed=0)
    d = decide(snap([g], nodes, pods, [pdb], now=7200), intent(), gi(), DEFAULT)
    assert [(c.name, c.forced) for c in of(Evict, d.commands)] == [("j2", True)]     # n2 is not held
    assert [(h.node, h.holders) for h in d.held] == [("n1", ("PodDisruptionBudget default/api",))]
    assert any(n.reason == "RolloutBlocked" and n.name == "n1" and "default/api" in n.message for n in d.notes)
    assert d.stop is None                        # the budget gets a grace period to yield
    nodes2 = [node("n1", "i-1"), canary()]
    late = decide(snap([g], nodes2, pods[:2], [pdb], now=7200 + engine.BLOCKED_GRACE_SECONDS), intent(), gi(), DEFAULT)
    assert late.stop.outcome == "blocked"
    assert late.stop.reason == "past the deadline, nodes cannot drain: PodDisruptionBudget default/api holds n1"
    assert not of(Evict, late.commands)


def test_blocked_only_when_every_node_left_is_held_and_deadlines_honour_extensions():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1"), node("n2", "i-2"), canary()]
    pdb = PodDisruptionBudget("default", "api", {"app": "api"}, disruptions_allowed=0)
    ext = {ANNOTATION_DEADLINE_EXTENSION: "3600"}
    pods = [svc_pod("api-0", "n1"), job_pod("long", "n2", annotations=ext)]
    now = 7200 + engine.BLOCKED_GRACE_SECONDS
    d = decide(snap([g], nodes, pods, [pdb], now=now), intent(), gi(), DEFAULT)
    assert d.stop is None and not of(Evict, d.commands)      # n2's Job still has its extension
    # The extension moves the node's own deadline: a held node with an extended Job is not blocked yet.
    held_ext = [svc_pod("api-0", "n1"), job_pod("j1", "n1", annotations=ext)]
    d = decide(snap([g], nodes[:1] + nodes[2:], held_ext, [pdb], now=now), intent(), gi(), DEFAULT)
    assert d.stop is None and not d.held
    # Nor does the give-up cut an extension short: 30 minutes after the deadline is not the end.
    d = decide(snap([g], nodes[1:], [job_pod("long", "n2", annotations=ext)], now=7200 + 1900), intent(), gi(),
               DEFAULT)
    assert d.stop is None
    d = decide(snap([g], nodes[1:], [job_pod("stuck", "n2", deleting=True)], now=7200 + 1801), intent(), gi(),
               DEFAULT)
    assert d.stop.outcome == "failed" and "after the last deadline" in d.stop.reason and d.stop.overdue


# ---------------------------------------------------------------- sizes given back

def test_without_autoscaler_the_group_is_trimmed_to_its_original_desired_job_safely():
    g = group([inst(f"i-{i}", "2", launched_at=float(i)) for i in range(4)], desired=4, max_size=6)
    nodes = [node(f"n{i}", f"i-{i}", old=False) for i in range(4)]
    pods = [job_pod("j0", "n0"), job_pod("j1", "n1"), job_pod("j2", "n2")]
    d = decide(snap([g], nodes, pods), intent(), gi(desired=2, max_size=6), DEFAULT)
    # 2 above its size: the idle node first (cordoned, then terminated), then a busy one drains — one the
    # group launched during the rollout, newest first (n0 was there before the rollout started at t=0).
    assert [(c.node, c.surplus) for c in of(Cordon, d.commands)] == [("n3", True), ("n2", True)]
    assert not of(Evict, d.commands) and not d.done
    with_ca = decide(snap([g], nodes, pods, replicas=1), intent(), gi(desired=2, max_size=6), DEFAULT)
    assert with_ca.done           # within the original max: cluster-autoscaler sizes it from here


def test_surplus_above_the_original_max_is_trimmed_without_touching_a_job():
    g = group([inst("i-2", "2", launched_at=5.0), inst("i-3", "2", launched_at=9.0), inst("i-4", "2", launched_at=1.0)],
              desired=3, max_size=3)
    nodes = [node(f"n{i}", f"i-{i}", old=False) for i in (2, 3, 4)]
    busy = [job_pod("j2", "n2"), job_pod("j3", "n3"), job_pod("j4", "n4")]
    d = decide(snap([g], nodes, busy, replicas=1), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert [(c.node, c.surplus) for c in of(Cordon, d.commands)] == [("n3", True)]       # the newest
    assert not of(Terminate, d.commands) and not d.done
    idle = decide(snap([g], nodes, busy[:2], replicas=1), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert [(c.node, c.surplus) for c in of(Cordon, idle.commands)] == [("n4", True)]
    surplus = Node(**{**node("n4", "i-4", old=False, cordoned=False).__dict__, "unschedulable": True,
                      "taints": (engine.SURPLUS_TAINT,)})
    then = decide(snap([g], nodes[:2] + [surplus], busy[:2], replicas=1), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert of(Terminate, then.commands) == [Terminate("gpu-a", "i-4", "n4")] and not of(Uncordon, then.commands)
    # Max follows in the same cycle, so the autoscaler cannot refill what was just given back.
    assert then.commands.index(Terminate("gpu-a", "i-4", "n4")) < then.commands.index(SetCapacity("gpu-a", max_size=2))
    g2 = group([inst("i-2", "2"), inst("i-3", "2")], desired=2, max_size=2)
    back = decide(snap([g2], [nodes[0], Node(**{**nodes[1].__dict__, "unschedulable": True,
                                                 "taints": (engine.SURPLUS_TAINT,)})], busy[:2], replicas=1),
                  intent(), gi(desired=2, max_size=2), DEFAULT)
    assert of(Uncordon, back.commands) == [Uncordon("gpu-a", "n3")]


def test_a_rollbacks_trim_keeps_the_original_nodes_even_when_a_later_one_is_busy():
    # After a rollback the group is one above its size: the original (idle) node stays, the node the
    # group launched during the rollout (a lost canary's replacement, busy) is drained.
    g = group([inst("i-1", "1", launched_at=0.0), inst("i-9", "1", launched_at=61.0)], desired=2, version="1")
    nodes = [node("n1", "i-1", old=False), node("n9", "i-9", old=False)]
    d = decide(snap([g], nodes, [job_pod("j", "n9")], now=900), intent(phase="rolling_back"), gi(desired=1), DEFAULT)
    assert [(c.node, c.surplus) for c in of(Cordon, d.commands)] == [("n9", True)] and not of(Terminate, d.commands)


def test_a_trim_whose_jobs_outlast_the_rollout_ends_it_saying_so_rather_than_evicting():
    g = group([inst("i-2", "2"), inst("i-3", "2")], desired=2, max_size=4)
    nodes = [node("n2", "i-2", old=False), Node(**{**node("n3", "i-3", old=False, cordoned=False).__dict__,
                                                    "unschedulable": True, "taints": (engine.SURPLUS_TAINT,)})]
    pods = [job_pod("j3", "n3")]
    d = decide(snap([g], nodes, pods, now=9001), intent(), gi(desired=1, max_size=4), DEFAULT)
    assert not d.done and d.stop.outcome == "completed" and d.stop.overdue
    assert "left above their size (gpu-a by 1)" in d.stop.reason and not of(Evict, d.commands)


# ---------------------------------------------------------------- autoscaler, finish, intent and outcome tags

def test_paused_autoscaler_is_kept_at_zero_and_running_one_is_kept_off_new_nodes():
    g = group([inst("i-1"), inst("i-2", "2")])
    nodes = [node("n1", "i-1"), node("n2", "i-2", old=False)]
    pods = [job_pod("j1", "n1")]
    paused = decide(snap([g], nodes, pods, replicas=1), intent(pause=True, replicas=1), gi(desired=1), DEFAULT)
    assert ScaleAutoscaler(0) in paused.commands and not of(AnnotateNode, paused.commands)
    running = decide(snap([g], nodes, pods, replicas=1), intent(), gi(desired=1), DEFAULT)
    assert of(AnnotateNode, running.commands)[0].node == "n2"


def test_finish_restores_max_protection_annotations_tags_and_autoscaler():
    g = group([inst("i-2", "2", protected_from_scale_in=True)], desired=1, max_size=4,
              tags={TAG_ROLLED_BACK_FROM: "7", TAG_ROLLED_BACK_TO: "6"})
    n2 = node("n2", "i-2", old=False, annotations={CA_SCALE_DOWN_DISABLED: "true", ANNOTATION_ROLLOUT_PROTECTED: "true"})
    cmds = finish_commands(snap([g], [n2], replicas=0), intent(pause=True, replicas=2), gi(desired=1, max_size=2),
                           DOUBLE_AND_DRAIN)
    assert SetCapacity("gpu-a", max_size=2) in cmds
    assert Protect("gpu-a", ("i-2",), False) in cmds
    assert of(AnnotateNode, cmds)[0].annotations == ((CA_SCALE_DOWN_DISABLED, None), (ANNOTATION_ROLLOUT_PROTECTED, None))
    assert DeleteGroupIntent("gpu-a") in cmds and cmds[-1] == ScaleAutoscaler(2)
    assert ClearRolledBack("gpu-a") in cmds            # a completed rollout forgets an older rollback


def test_a_finished_rollback_is_recorded_on_the_group_before_its_intent_goes():
    g = group([inst("i-1")], desired=1, version="1")
    cmds = finish_commands(snap([g]), intent(phase="rolling_back", reason="canary not Ready"), gi(desired=1), DEFAULT)
    mark = cmds.index(MarkRolledBack("gpu-a", "2", "1", "canary not Ready"))
    assert mark < cmds.index(DeleteGroupIntent("gpu-a"))


def test_an_earlier_rollback_is_reported_until_the_target_version_changes():
    tags = engine.rolled_back_tags("2", "1", "x" * 400)
    assert len(tags[TAG_ROLLED_BACK_REASON]) == 256
    for version, reported in (("1", True), ("2", True), ("3", False)):
        why = engine.earlier_rollback(group([inst("i-1")], version=version, tags=tags))
        assert bool(why) == reported
    assert engine.earlier_rollback(group([inst("i-1")])) is None


def test_group_intent_round_trips_through_tags_and_initial_intent_reads_the_world():
    g = group([inst("i-1"), inst("i-2"), inst("i-3", "0"), inst("i-4", "2")], desired=4, max_size=6)
    first = engine.initial_group_intent(g)
    assert first == GroupIntent("gpu-a", 4, 6, "2", "1")
    tagged = group(list(g.instances), desired=9, max_size=12, tags=engine.group_intent_tags(first))
    assert engine.group_intent_from_tags(tagged) == first          # tags, not the changed world, win
    assert engine.initial_group_intent(group([inst("i-4", "2")])) is None


def test_stages_return_frozen_results_in_order():
    import dataclasses
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    s = snap([g], [node("n1", "i-1", cordoned=False), canary()], [job_pod("j", "n1")])
    fleet = engine.read_fleet(s, intent(), gi(desired=1))
    health = engine.assess_health(fleet, intent(), DEFAULT, {})
    drain = engine.plan_drain(fleet, health, intent(), DEFAULT)
    capacity = engine.plan_capacity(fleet, health, drain, intent(), DEFAULT)
    trim = engine.plan_trim(fleet, health, drain, capacity, intent())
    for result in (fleet, health, drain, capacity, trim):
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.commands = ()                     # noqa: frozen
    assert health.groups["gpu-a"].proven_by == "c1" and [c.node for c in drain.commands] == ["n1"]


# ---------------------------------------------------------------- owner kinds that count as Jobs

def owned_pod(name: str, node_name, kind: str) -> Pod:
    return Pod(namespace="ml", name=name, node_name=node_name, phase="Running", owner_kind=kind,
               owner_name=f"{name}-owner", requests={RESOURCE_GPU: 1.0})


def proven_one(extra_pods=()):
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    return g, [node("n1", "i-1"), canary()]


def test_default_job_kinds_cover_kubeflow_and_argo_but_not_ray():
    kinds = engine.DEFAULT_JOB_OWNER_KINDS
    assert {"Job", "PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob", "Workflow"} <= kinds
    assert "RayCluster" not in kinds and not kinds & engine.NEVER_EVICTED_OWNER_KINDS


@pytest.mark.parametrize("kind", ["PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob", "Workflow"])
def test_a_training_operator_or_workflow_pod_is_never_evicted_before_the_deadline_and_forced_after(kind):
    g, nodes = proven_one()
    pods = [owned_pod("train-0", "n1", kind), svc_pod("web", "n1")]
    for now in (0.0, 3600.0, 7199.0):
        d = decide(snap([g], nodes, pods, now=now), intent(), gi(desired=1), DEFAULT)
        assert not of(Evict, d.commands) and not of(Terminate, d.commands)
        assert d.blocking_jobs == 1 and "1 Job pod on old nodes" in d.waiting_for
    after = decide(snap([g], nodes, pods, now=7200.0), intent(), gi(desired=1), DEFAULT)
    assert [(c.name, c.job, c.forced) for c in of(Evict, after.commands)] == [("train-0", True, True), ("web", False, False)]


def test_a_pending_pytorchjob_pod_gets_replacement_capacity_like_a_job_pod():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2, max_size=4)
    pending = Pod("ml", "train-w1", None, "Pending", owner_kind="PyTorchJob", owner_name="train")
    pods = [owned_pod("train-0", "n1", "PyTorchJob"), owned_pod("t", "c1", "PyTorchJob"), pending]
    d = decide(snap([g], [node("n1", "i-1"), canary()], pods), intent(pause=True, replicas=1), gi(desired=1, max_size=4),
               DEFAULT)
    assert d.pending_jobs == 1
    assert of(SetCapacity, d.commands) and of(SetCapacity, d.commands)[0].desired == 3   # canary + the pending pod
    without = decide(snap([g], [node("n1", "i-1"), canary()], pods), intent(pause=True, replicas=1),
                     gi(desired=1, max_size=4), DEFAULT, job_kinds=frozenset({"Job"}))
    assert without.pending_jobs == 0


def test_a_raycluster_pod_is_evicted_like_a_service_by_default_and_waited_for_when_added():
    g, nodes = proven_one()
    pods = [owned_pod("ray-worker", "n1", "RayCluster")]
    default = decide(snap([g], nodes, pods, now=10.0), intent(), gi(desired=1), DEFAULT)
    assert [(c.name, c.job, c.forced) for c in of(Evict, default.commands)] == [("ray-worker", False, False)]
    assert default.blocking_jobs == 0
    with_ray = engine.DEFAULT_JOB_OWNER_KINDS | {"RayCluster"}
    protected = decide(snap([g], nodes, pods, now=10.0), intent(), gi(desired=1), DEFAULT, job_kinds=with_ray)
    assert not of(Evict, protected.commands) and protected.blocking_jobs == 1
    forced = decide(snap([g], nodes, pods, now=7200.0), intent(), gi(desired=1), DEFAULT, job_kinds=with_ray)
    assert [(c.name, c.forced) for c in of(Evict, forced.commands)] == [("ray-worker", True)]


def test_a_kind_left_out_of_job_kinds_is_evicted_even_a_batch_job():
    g, nodes = proven_one()
    pods = [job_pod("j1", "n1"), owned_pod("train-0", "n1", "PyTorchJob")]
    d = decide(snap([g], nodes, pods, now=10.0), intent(), gi(desired=1), DEFAULT, job_kinds=frozenset({"PyTorchJob"}))
    assert not of(Evict, d.commands) and d.blocking_jobs == 1
    d = decide(snap([g], nodes, [job_pod("j1", "n1")], now=10.0), intent(), gi(desired=1), DEFAULT,
               job_kinds=frozenset({"PyTorchJob"}))
    assert [(c.name, c.forced) for c in of(Evict, d.commands)] == [("j1", False)]


def test_the_kube_adapter_reads_the_controller_owner_kind_the_filters_judge():
    from automation.rollout.kube import pod_from_json
    raw = {"metadata": {"name": "train-worker-0", "namespace": "ml", "ownerReferences": [
        {"kind": "ConfigMap", "name": "unrelated"},
        {"kind": "PyTorchJob", "name": "train", "controller": True}]},
        "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    pod = pod_from_json(raw)
    assert pod.owner_kind == "PyTorchJob" and engine.blocks_drain(pod) and not engine.needs_eviction(pod)
    raw["metadata"]["ownerReferences"][1]["kind"] = "RayCluster"
    ray = pod_from_json(raw)
    assert not engine.blocks_drain(ray) and engine.needs_eviction(ray)
    assert engine.blocks_drain(ray, engine.DEFAULT_JOB_OWNER_KINDS | {"RayCluster"})


# ---------------------------------------------------------------- pinned to the proven version until proof

def test_once_the_canary_launched_the_group_launches_the_proven_version_until_it_is_proven():
    g = group([inst("i-1"), inst("i-2"), inst("i-c1", "2")], desired=3)
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False)]
    d = decide(snap([g], nodes), intent(), gi(), DEFAULT)
    assert of(SetVersion, d.commands) == [SetVersion("gpu-a", "lt-1", "1")]          # pinned
    # Pinned (the group shows version 1): the canary still counts as new, and an instance the
    # autoscaler launched meanwhile on version 1 is old — replaced once the new version is proven.
    pinned = group([inst("i-1"), inst("i-2"), inst("i-c1", "2"), inst("i-ca", "1")], desired=4, version="1")
    d = decide(snap([pinned], nodes), intent(), gi(), DEFAULT)
    assert not of(SetVersion, d.commands) and (d.old_nodes, d.new_nodes) == (3, 1)
    assert engine.old_node_count(snap([pinned]), gi().values()) == 3
    # Proven: unpinned, then the drain starts.
    proven = decide(snap([pinned], nodes + [canary()]), intent(), gi(), DEFAULT)
    assert of(SetVersion, proven.commands) == [SetVersion("gpu-a", "lt-1", "2")] and of(Cordon, proven.commands)


def test_a_pinned_group_whose_canary_was_lost_is_unpinned_before_it_asks_for_another():
    pinned = group([inst("i-1"), inst("i-2")], desired=2, version="1")
    d = decide(snap([pinned], [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False)]), intent(), gi(),
               DEFAULT)
    version, capacity = of(SetVersion, d.commands), of(SetCapacity, d.commands)
    assert version == [SetVersion("gpu-a", "lt-1", "2")] and capacity == [SetCapacity("gpu-a", desired=3, max_size=10)]
    assert d.commands.index(version[0]) < d.commands.index(capacity[0])


def test_the_baseline_and_a_rollback_never_pin():
    g = group([inst("i-1"), inst("i-c1", "2")], desired=2)
    d = decide(snap([g], [node("n1", "i-1", cordoned=False)]), intent(strategy="double-and-drain"), gi(desired=1),
               DOUBLE_AND_DRAIN)
    assert not of(SetVersion, d.commands)
    back = decide(snap([g], [node("n1", "i-1", cordoned=False)]), intent(phase="rolling_back"), gi(desired=1), DEFAULT)
    assert of(SetVersion, back.commands) == [SetVersion("gpu-a", "lt-1", "1")]
