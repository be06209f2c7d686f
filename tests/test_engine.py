"""The pure rollout engine: snapshots in, commands out (no world at all)."""

from __future__ import annotations

import itertools

import pytest

from automation.rollout import engine
from automation.rollout.engine import (AnnotateNode, Cordon, DeleteGroupIntent, Evict, Protect, ScaleAutoscaler,
                                       SetCapacity, SetVersion, Terminate, Uncordon, decide, finish_commands)
from automation.rollout.model import (ANNOTATION_DEADLINE_EXTENSION, ANNOTATION_ROLLOUT_PROTECTED,
                                      CA_SCALE_DOWN_DISABLED, LABEL_MODEL_VERSION, LABEL_NODE_GROUP, RESOURCE_GPU,
                                      TAINT_ROLLOUT, TAINT_WARMING, AutoScalingGroup, GroupIntent, Instance, Node,
                                      Pod, PodDisruptionBudget, RolloutIntent, Snapshot, Taint)
from automation.rollout.strategies import DEFAULT, DOUBLE_AND_DRAIN, get_strategy, parse_surge, surge_nodes

ROLLOUT_TAINT = Taint(TAINT_ROLLOUT, "old", "NoSchedule")


def inst(i: str, version: str = "1", **kw) -> Instance:
    return Instance(id=i, zone="us-east-2a", launch_template_version=version, **kw)


def group(instances, *, desired=None, max_size=10, version="2", name="gpu-a", tags=None) -> AutoScalingGroup:
    return AutoScalingGroup(name=name, node_group=name, zone="us-east-2a", min_size=0, max_size=max_size,
                            desired_capacity=len(instances) if desired is None else desired,
                            launch_template_id="lt-1", launch_template_version=version,
                            instances=tuple(instances), tags=tags or {})


def node(name: str, instance_id: str, *, old=True, cordoned=None, ready=True, warming=False, slots=1.0,
         annotations=None) -> Node:
    cordoned = old if cordoned is None else cordoned
    taints = ((ROLLOUT_TAINT,) if cordoned else ()) + ((Taint(TAINT_WARMING, "true"),) if warming else ())
    ann = dict(annotations or ({CA_SCALE_DOWN_DISABLED: "true"} if cordoned else {}))
    return Node(name=name, instance_id=instance_id, labels={LABEL_MODEL_VERSION: "v1" if old else "v2",
                                                              LABEL_NODE_GROUP: "gpu-a"},
                annotations=ann, taints=taints, unschedulable=cordoned, ready=ready,
                allocatable={RESOURCE_GPU: slots})


def job_pod(name: str, node_name, phase="Running", **kw) -> Pod:
    return Pod(namespace="ml", name=name, node_name=node_name, phase=phase, owner_kind="Job", owner_name=name,
               requests={RESOURCE_GPU: 1.0}, **kw)


def svc_pod(name: str, node_name, app="api") -> Pod:
    return Pod(namespace="default", name=name, node_name=node_name, phase="Running", owner_kind="ReplicaSet",
               labels={"app": app})


def intent(*, now=0.0, deadline=7200.0, phase="rolling", pause=False, replicas=None, surge=None,
           strategy="default", timeout=1800.0) -> RolloutIntent:
    return RolloutIntent(rollout_id="r1", started_at=now, deadline_at=deadline, strategy=strategy, surge=surge,
                         pause_autoscaler=pause, autoscaler_replicas=replicas, ready_timeout_seconds=timeout,
                         phase=phase)


def gi(desired=2, max_size=10, name="gpu-a") -> dict[str, GroupIntent]:
    return {name: GroupIntent(asg=name, original_desired=desired, original_max=max_size, target_version="2",
                              previous_version="1")}


def snap(groups, nodes=(), pods=(), pdbs=(), now=0.0, replicas=None) -> Snapshot:
    return Snapshot(now=now, groups=tuple(groups), nodes=tuple(nodes), pods=tuple(pods), pdbs=tuple(pdbs),
                    autoscaler_replicas=replicas)


def of(kind, commands):
    return [c for c in commands if isinstance(c, kind)]


# ---------------------------------------------------------------- pod filters

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
    blocking = {p.name for p in PODS if engine.blocks_drain(p)}
    evict = {p.name for p in PODS if engine.needs_eviction(p)}
    assert blocking == {"running", "bare"}            # Jobs and bare pods are waited for
    assert evict == {"web", "sts"}                     # controller pods are evicted
    assert {p.name for p in PODS if engine.still_leaving(p)} == {"leaving"}
    # DaemonSet, mirror, Succeeded and Failed pods never block and are never evicted.
    for name in ("ds", "mirror", "done", "failed"):
        assert name not in blocking | evict


@pytest.mark.parametrize("phase,owner,deleting,mirror", itertools.product(
    ["Pending", "Running", "Succeeded", "Failed", "Unknown"],
    ["Job", "PyTorchJob", "Workflow", "RayCluster", "ReplicaSet", "DaemonSet", "Node", None],
    [False, True], [False, True]))
def test_flat_filters_equal_the_composed_ones(phase, owner, deleting, mirror):
    pod = Pod("ns", "p", "n1", phase, owner_kind=owner, deleting=deleting,
              annotations={"kubernetes.io/config.mirror": "x"} if mirror else {})
    assert engine.blocks_drain(pod) == engine.blocks_drain_composed(pod)
    assert engine.needs_eviction(pod) == engine.needs_eviction_composed(pod)
    with_ray = engine.DEFAULT_JOB_OWNER_KINDS | {"RayCluster"}
    assert engine.blocks_drain(pod, with_ray) == engine.blocks_drain_rule(with_ray)(pod)
    assert engine.needs_eviction(pod, with_ray) == engine.needs_eviction_rule(with_ray)(pod)


# ---------------------------------------------------------------- drain

def test_an_empty_node_is_terminated_only_once_seen_cordoned():
    g = group([inst("i-1")], desired=1)
    first = decide(snap([g], [node("n1", "i-1", cordoned=False)]), intent(), gi(desired=1), DEFAULT)
    assert of(Cordon, first.commands) and not of(Terminate, first.commands)
    second = decide(snap([g], [node("n1", "i-1")]), intent(), gi(desired=1), DEFAULT)
    assert of(Terminate, second.commands) == [Terminate("gpu-a", "i-1", "n1")]


def test_old_nodes_are_cordoned_up_front_and_running_jobs_wait():
    g = group([inst("i-1"), inst("i-2")])
    nodes = [node("n1", "i-1", cordoned=False), node("n2", "i-2", cordoned=False)]
    d = decide(snap([g], nodes, [job_pod("j1", "n1"), job_pod("j2", "n2")]), intent(), gi(), DEFAULT)
    assert {c.node for c in of(Cordon, d.commands)} == {"n1", "n2"}
    assert not of(Evict, d.commands) and not of(Terminate, d.commands)
    assert d.blocking_jobs == 2 and not d.done


def test_node_with_only_finished_and_daemon_pods_is_terminated_exactly():
    g = group([inst("i-1"), inst("i-2")])
    nodes = [node("n1", "i-1"), node("n2", "i-2")]
    pods = [job_pod("done", "n1", phase="Succeeded"), Pod("kube-system", "ds", "n1", "Running", owner_kind="DaemonSet"),
            job_pod("j2", "n2")]
    d = decide(snap([g], nodes, pods), intent(), gi(), DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-1", "n1")]


def test_controller_pods_are_evicted_once_no_job_remains_and_pdbs_are_spent_once():
    g = group([inst("i-1")], desired=1)
    pods = [svc_pod("a1", "n1"), svc_pod("a2", "n1"), svc_pod("a3", "n9")]
    pdb = PodDisruptionBudget("default", "api", {"app": "api"}, disruptions_allowed=1)
    d = decide(snap([g], [node("n1", "i-1")], pods, [pdb]), intent(), gi(desired=1), DEFAULT)
    evicts = of(Evict, d.commands)
    assert len(evicts) == 1 and not evicts[0].job        # the budget allows one disruption this cycle
    assert not of(Terminate, d.commands)                  # not empty yet


def test_job_pods_are_never_evicted_before_the_deadline_and_forced_after():
    g = group([inst("i-1")], desired=1)
    pods = [job_pod("j1", "n1"), job_pod("long", "n1", annotations={ANNOTATION_DEADLINE_EXTENSION: "600"})]
    before = decide(snap([g], [node("n1", "i-1")], pods, now=7199), intent(), gi(desired=1), DEFAULT)
    assert not of(Evict, before.commands)
    after = decide(snap([g], [node("n1", "i-1")], pods, now=7200), intent(), gi(desired=1), DEFAULT)
    assert [(c.name, c.forced) for c in of(Evict, after.commands)] == [("j1", True)]   # "long" has 600 s more
    later = decide(snap([g], [node("n1", "i-1")], pods, now=7800), intent(), gi(desired=1), DEFAULT)
    assert {c.name for c in of(Evict, later.commands)} == {"j1", "long"}


def test_an_old_instance_that_never_registered_is_terminated():
    g = group([inst("i-1")], desired=1)
    d = decide(snap([g]), intent(), gi(desired=1), DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-1", None)]


# ---------------------------------------------------------------- capacity

def test_default_brings_one_canary_then_replaces_freed_nodes_raising_max_only_as_needed():
    g = group([inst("i-1"), inst("i-2")], max_size=2)
    nodes = [node("n1", "i-1"), node("n2", "i-2")]
    pods = [job_pod("j1", "n1"), job_pod("j2", "n2")]
    d = decide(snap([g], nodes, pods), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=3, max_size=3)]
    # n1 freed: terminate it (with decrement) and ask for its replacement in the same cycle.
    g2 = group([inst("i-1"), inst("i-2"), inst("i-3", "2")], desired=3, max_size=3)
    nodes2 = nodes + [node("n3", "i-3", old=False)]
    d2 = decide(snap([g2], nodes2, [job_pod("j2", "n2")]), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert of(Terminate, d2.commands) == [Terminate("gpu-a", "i-1", "n1")]
    # after the terminate desired is 2 (1 old + 1 new); wanted: 1 old + min(2, 1 + 1) new = 3
    assert of(SetCapacity, d2.commands) == [SetCapacity("gpu-a", desired=3, max_size=3)]


def test_double_and_drain_doubles_and_protects_every_instance():
    g = group([inst("i-1"), inst("i-2")], max_size=2)
    nodes = [node("n1", "i-1"), node("n2", "i-2")]
    pods = [job_pod("j1", "n1"), job_pod("j2", "n2")]
    d = decide(snap([g], nodes, pods), intent(strategy="double-and-drain"), gi(desired=2, max_size=2),
               DOUBLE_AND_DRAIN)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=4, max_size=4)]
    assert of(Protect, d.commands) == [Protect("gpu-a", ("i-1", "i-2"), True)]


def test_fixed_surge_count_and_percentage():
    assert parse_surge("3") == (3, False) and parse_surge("25%") == (25, True) and parse_surge(None) is None
    assert surge_nodes("25%", 10) == 3 and surge_nodes("2", 10) == 2
    for bad in ("0", "x", "150%", "-1"):
        with pytest.raises(ValueError, match="--surge"):
            parse_surge(bad)
    with pytest.raises(ValueError, match="--strategy"):
        get_strategy("yolo")
    g = group([inst(f"i-{i}") for i in range(8)], max_size=8)
    nodes = [node(f"n{i}", f"i-{i}") for i in range(8)]
    pods = [job_pod(f"j{i}", f"n{i}") for i in range(8)]
    d = decide(snap([g], nodes, pods), intent(surge="25%"), gi(desired=8, max_size=8), DEFAULT)
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=10, max_size=10)]


def test_pending_jobs_no_new_node_can_take_add_nodes_counting_booting_ones():
    g = group([inst("i-1"), inst("i-2", "2")], max_size=10)      # i-2: the canary, still booting
    nodes = [node("n1", "i-1", slots=2.0)]
    pods = [job_pod("j1", "n1"), job_pod("j2", "n1")] + [job_pod(f"p{i}", None, phase="Pending") for i in range(5)]
    d = decide(snap([g], nodes, pods), intent(), gi(desired=1, max_size=10), DEFAULT)
    # 5 pending, 2 slots on the booting canary: 3 more slots -> 2 more 2-slot nodes; 1 old + 1 canary + 2
    assert of(SetCapacity, d.commands) == [SetCapacity("gpu-a", desired=4, max_size=10)]
    assert d.pending_jobs == 5


def test_desired_is_never_lowered_by_the_engine():
    g = group([inst("i-1"), inst("i-2", "2"), inst("i-3", "2"), inst("i-4", "2")], desired=4)
    nodes = [node("n1", "i-1")] + [node(f"n{i}", f"i-{i}", old=False) for i in (2, 3, 4)]
    d = decide(snap([g], nodes, [job_pod("j1", "n1")]), intent(), gi(desired=1), DEFAULT)
    assert not of(SetCapacity, d.commands)


# ---------------------------------------------------------------- readiness, rollback, autoscaler

def test_new_node_not_ready_in_time_asks_for_rollback():
    g = group([inst("i-1"), inst("i-2", "2", launched_at=0.0)])
    nodes = [node("n1", "i-1"), node("n2", "i-2", old=False, ready=False, warming=True)]
    pods = [job_pod("j1", "n1")]
    assert decide(snap([g], nodes, pods, now=1800), intent(), gi(desired=1), DEFAULT).rollback_reason is None
    late = decide(snap([g], nodes, pods, now=1801), intent(), gi(desired=1), DEFAULT)
    assert "i-2" in late.rollback_reason
    # Without a launch time, the runner's first sighting counts.
    g2 = group([inst("i-1"), inst("i-2", "2")])
    assert decide(snap([g2], nodes, pods, now=1801), intent(), gi(desired=1), DEFAULT,
                  {"i-2": 1000.0}).rollback_reason is None
    # double-and-drain never checks (as the script did not).
    assert decide(snap([g], nodes, pods, now=5000), intent(), gi(desired=1), DOUBLE_AND_DRAIN).rollback_reason is None


def test_a_warming_node_is_not_ready_and_a_ready_one_proves_the_ami():
    g = group([inst("i-2", "2")], desired=1)
    warming = decide(snap([g], [node("n2", "i-2", old=False, warming=True)]), intent(), gi(desired=1), DEFAULT)
    assert not warming.done and warming.new_ready == 0
    ready = decide(snap([g], [node("n2", "i-2", old=False)]), intent(), gi(desired=1), DEFAULT)
    assert ready.done and ready.new_ready == 1


def test_rollback_sets_the_previous_version_uncordons_old_nodes_and_removes_surge():
    g = group([inst("i-1"), inst("i-2", "2")], desired=2)
    nodes = [node("n1", "i-1"), node("n2", "i-2", old=False, ready=False)]
    d = decide(snap([g], nodes, [job_pod("j1", "n1")]), intent(phase="rolling_back"), gi(desired=1), DEFAULT)
    assert of(SetVersion, d.commands) == [SetVersion("gpu-a", "lt-1", "1")]
    assert of(Uncordon, d.commands) == [Uncordon("gpu-a", "n1")]
    assert of(Cordon, d.commands) == [Cordon("gpu-a", "n2")] and not of(Terminate, d.commands)
    assert not of(Evict, d.commands)            # the Job on the old node is untouched
    # Seen cordoned (and empty) the next cycle, the surge instance is terminated.
    nodes[1] = node("n2", "i-2", old=False, ready=False, cordoned=True)
    d = decide(snap([g], nodes, [job_pod("j1", "n1")]), intent(phase="rolling_back"), gi(desired=1), DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-2", "n2")]
    # Once the world matches, rollback is done.
    back = group([inst("i-1")], desired=1, version="1")
    done = decide(snap([back], [node("n1", "i-1", cordoned=False)], [job_pod("j1", "n1")]),
                  intent(phase="rolling_back"), gi(desired=1), DEFAULT)
    assert done.done and not done.commands


def test_paused_autoscaler_is_kept_at_zero_and_running_one_is_kept_off_new_nodes():
    g = group([inst("i-1"), inst("i-2", "2")])
    nodes = [node("n1", "i-1"), node("n2", "i-2", old=False)]
    pods = [job_pod("j1", "n1")]
    paused = decide(snap([g], nodes, pods, replicas=1), intent(pause=True, replicas=1), gi(desired=1), DEFAULT)
    assert ScaleAutoscaler(0) in paused.commands and not of(AnnotateNode, paused.commands)
    running = decide(snap([g], nodes, pods, replicas=1), intent(), gi(desired=1), DEFAULT)
    assert of(AnnotateNode, running.commands)[0].node == "n2"


def test_finish_restores_max_protection_annotations_tags_and_autoscaler():
    g = group([inst("i-2", "2", protected_from_scale_in=True)], desired=1, max_size=4)
    n2 = node("n2", "i-2", old=False, annotations={CA_SCALE_DOWN_DISABLED: "true", ANNOTATION_ROLLOUT_PROTECTED: "true"})
    cmds = finish_commands(snap([g], [n2], replicas=0), intent(pause=True, replicas=2), gi(desired=1, max_size=2),
                           DOUBLE_AND_DRAIN)
    assert SetCapacity("gpu-a", max_size=2) in cmds
    assert Protect("gpu-a", ("i-2",), False) in cmds
    assert of(AnnotateNode, cmds)[0].annotations == ((CA_SCALE_DOWN_DISABLED, None), (ANNOTATION_ROLLOUT_PROTECTED, None))
    assert DeleteGroupIntent("gpu-a") in cmds and cmds[-1] == ScaleAutoscaler(2)


def test_group_intent_round_trips_through_tags_and_initial_intent_reads_the_world():
    g = group([inst("i-1"), inst("i-2"), inst("i-3", "0"), inst("i-4", "2")], desired=4, max_size=6)
    first = engine.initial_group_intent(g)
    assert first == GroupIntent("gpu-a", 4, 6, "2", "1")
    tagged = group(list(g.instances), desired=9, max_size=12, tags=engine.group_intent_tags(first))
    assert engine.group_intent_from_tags(tagged) == first          # tags, not the changed world, win
    assert engine.initial_group_intent(group([inst("i-4", "2")])) is None


def test_surplus_above_the_original_max_is_trimmed_without_touching_a_job():
    # No old node left, but desired 3 > original max 2 (a lost node's replacement and the canary).
    g = group([inst("i-2", "2", launched_at=5.0), inst("i-3", "2", launched_at=9.0), inst("i-4", "2", launched_at=1.0)],
              desired=3, max_size=3)
    nodes = [node(f"n{i}", f"i-{i}", old=False) for i in (2, 3, 4)]
    busy = [job_pod("j2", "n2"), job_pod("j3", "n3"), job_pod("j4", "n4")]
    d = decide(snap([g], nodes, busy), intent(), gi(desired=2, max_size=2), DEFAULT)
    # Every node has a Job: the least busy one is cordoned as surplus, nothing terminated, not done.
    assert [(c.node, c.surplus) for c in of(Cordon, d.commands)] == [("n2", True)]
    assert not of(Terminate, d.commands) and not d.done
    # An idle node is cordoned first, then terminated once seen cordoned (newest first).
    idle = decide(snap([g], nodes, busy[:2]), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert [(c.node, c.surplus) for c in of(Cordon, idle.commands)] == [("n4", True)]
    surplus = node("n4", "i-4", old=False, cordoned=False)
    surplus = Node(**{**surplus.__dict__, "unschedulable": True, "taints": (engine.SURPLUS_TAINT,)})
    then = decide(snap([g], nodes[:2] + [surplus], busy[:2]), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert of(Terminate, then.commands) == [Terminate("gpu-a", "i-4", "n4")]
    # A surplus node is never mistaken for an old one to uncordon.
    assert not of(Uncordon, then.commands)
    # Back within max: done, and a leftover surplus cordon is lifted.
    g2 = group([inst("i-2", "2"), inst("i-3", "2")], desired=2, max_size=2)
    back = decide(snap([g2], [nodes[0], Node(**{**nodes[1].__dict__, "unschedulable": True,
                                                 "taints": (engine.SURPLUS_TAINT,)})], busy[:2]),
                  intent(), gi(desired=2, max_size=2), DEFAULT)
    assert of(Uncordon, back.commands) == [Uncordon("gpu-a", "n3")]


def test_terminate_at_the_min_size_lets_the_group_replace_the_instance_instead_of_a_refused_decrement():
    # A fixed-size group (min = desired): Auto Scaling refuses a decrement below min
    # (ValidationError), which would skip the group's every later command, cycle after cycle.
    from dataclasses import replace
    g = replace(group([inst("i-1"), inst("i-2"), inst("i-3", "2")], desired=3, max_size=3), min_size=2)
    nodes = [node("n1", "i-1"), node("n2", "i-2"), node("n3", "i-3", old=False)]
    d = decide(snap([g], nodes), intent(), gi(desired=2, max_size=2), DEFAULT)
    assert of(Terminate, d.commands) == [Terminate("gpu-a", "i-1", "n1", decrement=True),
                                         Terminate("gpu-a", "i-2", "n2", decrement=False)]
    # desired is 2 after the one decrement, and the group launches i-2's replacement itself.
    assert not of(SetCapacity, d.commands) or of(SetCapacity, d.commands)[0].desired is None


# ---------------------------------------------------------------- owner kinds that count as Jobs

def owned_pod(name: str, node_name, kind: str) -> Pod:
    return Pod(namespace="ml", name=name, node_name=node_name, phase="Running", owner_kind=kind,
               owner_name=f"{name}-owner", requests={RESOURCE_GPU: 1.0})


def test_default_job_kinds_cover_kubeflow_and_argo_but_not_ray():
    kinds = engine.DEFAULT_JOB_OWNER_KINDS
    assert {"Job", "PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob", "Workflow"} <= kinds
    assert "RayCluster" not in kinds and not kinds & engine.NEVER_EVICTED_OWNER_KINDS


@pytest.mark.parametrize("kind", ["PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob", "Workflow"])
def test_a_training_operator_or_workflow_pod_is_never_evicted_before_the_deadline_and_forced_after(kind):
    g = group([inst("i-1")], desired=1)
    pods = [owned_pod("train-0", "n1", kind), svc_pod("web", "n1")]
    for now in (0.0, 3600.0, 7199.0):
        d = decide(snap([g], [node("n1", "i-1")], pods, now=now), intent(), gi(desired=1), DEFAULT)
        # Not the training pod, and not even the service pod: the node waits for its Job.
        assert not of(Evict, d.commands) and not of(Terminate, d.commands)
        assert d.blocking_jobs == 1 and d.waiting_for == "running Jobs on old nodes"
    after = decide(snap([g], [node("n1", "i-1")], pods, now=7200.0), intent(), gi(desired=1), DEFAULT)
    assert [(c.name, c.job, c.forced) for c in of(Evict, after.commands)] == [("train-0", True, True)]


def test_a_pending_pytorchjob_pod_gets_replacement_capacity_like_a_job_pod():
    g = group([inst("i-1")], desired=1, max_size=4)
    pending = Pod("ml", "train-w1", None, "Pending", owner_kind="PyTorchJob", owner_name="train")
    pods = [owned_pod("train-0", "n1", "PyTorchJob"), pending]
    d = decide(snap([g], [node("n1", "i-1")], pods), intent(), gi(desired=1, max_size=4), DEFAULT)
    assert d.pending_jobs == 1
    assert of(SetCapacity, d.commands) and of(SetCapacity, d.commands)[0].desired == 3   # canary + the pending pod
    without = decide(snap([g], [node("n1", "i-1")], pods), intent(), gi(desired=1, max_size=4), DEFAULT,
                     job_kinds=frozenset({"Job"}))
    assert without.pending_jobs == 0


def test_a_raycluster_pod_is_evicted_like_a_service_by_default_and_waited_for_when_added():
    g = group([inst("i-1")], desired=1)
    pods = [owned_pod("ray-worker", "n1", "RayCluster")]
    default = decide(snap([g], [node("n1", "i-1")], pods, now=10.0), intent(), gi(desired=1), DEFAULT)
    assert [(c.name, c.job, c.forced) for c in of(Evict, default.commands)] == [("ray-worker", False, False)]
    assert default.blocking_jobs == 0

    with_ray = engine.DEFAULT_JOB_OWNER_KINDS | {"RayCluster"}
    protected = decide(snap([g], [node("n1", "i-1")], pods, now=10.0), intent(), gi(desired=1), DEFAULT,
                       job_kinds=with_ray)
    assert not of(Evict, protected.commands) and protected.blocking_jobs == 1
    forced = decide(snap([g], [node("n1", "i-1")], pods, now=7200.0), intent(), gi(desired=1), DEFAULT,
                    job_kinds=with_ray)
    assert [(c.name, c.forced) for c in of(Evict, forced.commands)] == [("ray-worker", True)]


def test_a_kind_left_out_of_job_kinds_is_evicted_even_a_batch_job():
    g = group([inst("i-1")], desired=1)
    pods = [job_pod("j1", "n1"), owned_pod("train-0", "n1", "PyTorchJob")]
    d = decide(snap([g], [node("n1", "i-1")], pods, now=10.0), intent(), gi(desired=1), DEFAULT,
               job_kinds=frozenset({"PyTorchJob"}))
    assert not of(Evict, d.commands) and d.blocking_jobs == 1   # the PyTorchJob pod still holds the node
    d = decide(snap([g], [node("n1", "i-1")], [job_pod("j1", "n1")], now=10.0), intent(), gi(desired=1), DEFAULT,
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
