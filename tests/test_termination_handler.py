"""The termination handler's loop, end to end over the wire.

AWS is a moto server (EventBridge rules as the program declares them -> the SQS
queue with its dead-letter queue; this cluster's ASGs, with an instance put in
``Terminating:Wait`` as a hook would); the two lifecycle calls moto 5.2.5 lacks
go to a botocore Stubber (which checks every parameter against the service
model, and fails the test on any call it was not told to expect). Kubernetes is
the API emulator. The handler runs as the real ``Handler`` with its real
adapters; only its clocks are injected.
"""

from __future__ import annotations

import json
import time

import boto3
import kmock
import pytest
from botocore.stub import Stubber

from automation.localaws import ACCOUNT_ID, LocalAws, create_fleet
from automation.termination import decisions as d
from automation.termination.aws import LifecycleActions, Queue
from automation.termination.handler import Handler, HandlerOptions
from automation.termination.kube import KubeTermination, LeaseElector
from infra import termination
from tests._kube_emulator import KubeEmulator, NODES, PDBS, PODS

REGION = "us-east-2"
CLUSTER = "kiln-test"
T0 = float(int(time.time()))     # EventBridge stamps events with the real time: the handler's clock starts there
EVENTS = kmock.resource("events.k8s.io/v1/events")


@pytest.fixture(scope="module")
def local():
    with LocalAws(REGION) as aws_:
        yield aws_


@pytest.fixture(scope="module")
def world(local):
    """The fleet, the queue + DLQ and the five rules, once for the module."""
    session = local.session()
    fleet = create_fleet(session, CLUSTER, group="gpu", nodes_per_zone=2)
    other = create_fleet(session, "other", group="cpu", nodes_per_zone=1, zones=("a",), base_ami=fleet.base_ami)
    sqs, events = session.client("sqs"), session.client("events")
    dlq = sqs.create_queue(QueueName=f"{CLUSTER}-termination-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=f"{CLUSTER}-termination", Attributes={
        "VisibilityTimeout": "0", "RedrivePolicy": termination.redrive_policy(dlq_arn)})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for suffix, pattern in termination.event_patterns(fleet.asgs).items():
        events.put_rule(Name=f"{CLUSTER}-termination-{suffix}", EventPattern=json.dumps(pattern))
        events.put_targets(Rule=f"{CLUSTER}-termination-{suffix}", Targets=[{"Id": "q", "Arn": arn}])
    asg = session.client("autoscaling")
    instances = {g["AutoScalingGroupName"]: [i["InstanceId"] for i in g["Instances"]]
                 for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]}
    return {"fleet": fleet, "other": other, "queue": url, "dlq": dlq, "instances": instances, "sqs": sqs,
            "events": events, "session": session}


@pytest.fixture(scope="module")
def kube_events(kube_server):
    kube_server.call(lambda: kube_server.emulator.resources.__setitem__(
        EVENTS, kmock.ResourceInfo(kind="Event", namespaced=True)))
    return kube_server


@pytest.fixture
def kube(kube_events, world):
    kube_events.reset()
    drain(world)
    from moto.autoscaling.models import autoscaling_backends

    for group in autoscaling_backends[ACCOUNT_ID][REGION].autoscaling_groups.values():
        for state in group.instance_states:
            state.lifecycle_state = "InService"
    return kube_events


def drain(world):
    for url in (world["queue"], world["dlq"]):
        while msgs := world["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for m in msgs:
                world["sqs"].delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def set_state(instance_id: str, state: str) -> None:
    """Put an instance where a lifecycle hook would (moto 5.2.5 never holds one in Terminating:Wait)."""
    from moto.autoscaling.models import autoscaling_backends

    for group in autoscaling_backends[ACCOUNT_ID][REGION].autoscaling_groups.values():
        for s in group.instance_states:
            if s.instance.id == instance_id:
                s.lifecycle_state = state
                return
    raise KeyError(instance_id)


def node(name, iid, annotations=None, taints=(), unschedulable=False):
    spec = {"providerID": f"aws:///us-east-2a/{iid}", "taints": list(taints)}
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": {}, "annotations": annotations or {}},
            "spec": spec, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name, node_name, kind="Job", phase="Running", labels=None):
    return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": labels or {},
                         "ownerReferences": [{"kind": kind, "name": f"{name}-x", "controller": True}]},
            "spec": {"nodeName": node_name, "containers": [{"name": "c"}]}, "status": {"phase": phase}}


def lifecycle_event(world, asg, instance_id, hook="kiln-termination"):
    world["events"].put_events(Entries=[{
        "Source": "aws.autoscaling", "DetailType": "EC2 Instance-terminate Lifecycle Action",
        "Detail": json.dumps({"AutoScalingGroupName": asg, "LifecycleHookName": hook, "EC2InstanceId": instance_id,
                              "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
                              "LifecycleActionToken": "tok"})}])


def ec2_event(world, detail_type, detail):
    world["events"].put_events(Entries=[{"Source": "aws.ec2", "DetailType": detail_type, "Detail": json.dumps(detail)}])


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def make_handler(world, kube, *, identity="handler-a", clock=None, mono=None, autoscaling=None,
                 queue_url=None, grace=7200.0):
    stub_client = boto3.client("autoscaling", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(stub_client)
    stubber.activate()
    clock = clock or Clock(T0)
    mono = mono or Clock(0.0)
    api = kube.api_client()
    handler = Handler(
        options=HandlerOptions(cluster_name=CLUSTER, queue_url=queue_url or world["queue"], identity=identity,
                               job_grace_seconds=grace, heartbeat_timeout_seconds=300, poll_seconds=5),
        queue=Queue(queue_url or world["queue"], sqs=world["session"].client("sqs"), wait_seconds=0),
        lifecycle=LifecycleActions(CLUSTER, autoscaling=autoscaling or world["session"].client("autoscaling"),
                                   lifecycle_client=stub_client),
        kube=KubeTermination(api, identity=identity, wall_clock=clock),
        elector=LeaseElector(api, namespace="kube-system", name="kiln-termination-handler", identity=identity,
                             clock=mono, wall_clock=clock),
        clock=clock, sleep=lambda s: None,
    )
    return handler, stubber, clock


def expect(stubber, call, asg, instance_id):
    params = {"AutoScalingGroupName": asg, "LifecycleHookName": "kiln-termination", "InstanceId": instance_id}
    if call == "complete_lifecycle_action":
        params["LifecycleActionResult"] = "CONTINUE"
    stubber.add_response(call, {}, params)


def queue_depth(world, url=None):
    attrs = world["sqs"].get_queue_attributes(QueueUrl=url or world["queue"], AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def events_on(kube, name):
    return [r.data for r in kube.requests(lambda r: r.resource == EVENTS and r.method == "POST")
            if r.data["regarding"]["name"] == name]


# ---- an ASG scale-in while a Job runs ---------------------------------------------------------------------------


def test_scale_in_holds_the_instance_while_the_job_runs_then_lets_it_go(world, kube):
    asg = world["fleet"].asgs[0]
    iid = world["instances"][asg][0]
    kube.put(NODES, None, node("n1", iid))
    kube.put(PODS, "ml", pod("train-0", "n1"))
    kube.put(PODS, "web", pod("api-0", "n1", "ReplicaSet"))
    kube.put(PODS, "kube-system", pod("cni", "n1", "DaemonSet"))
    set_state(iid, "Terminating:Wait")
    lifecycle_event(world, asg, iid)
    handler, stubber, clock = make_handler(world, kube)

    expect(stubber, "record_lifecycle_action_heartbeat", asg, iid)
    decision = handler.cycle()
    assert decision is not None
    stored = kube.get(NODES, None, "n1")
    assert stored["spec"]["unschedulable"] is True
    assert {"key": "kiln.dev/terminating", "value": "lifecycle-termination", "effect": "NoSchedule"} in stored["spec"]["taints"]
    assert "kiln.dev/terminating-lifecycle-termination" in stored["metadata"]["annotations"]
    assert kube.get(PODS, "web", "api-0") is None                       # evicted through the Eviction API
    assert kube.get(PODS, "ml", "train-0") is not None and kube.get(PODS, "kube-system", "cni") is not None
    assert queue_depth(world) == 0                                      # the world now carries the intent
    assert any(e["reason"] == "TerminationNotice" for e in events_on(kube, "n1"))
    assert any(e["reason"] == "NodeTerminating" for e in events_on(kube, "train-0"))
    stubber.assert_no_pending_responses()

    clock.t += 50                                                       # not due: no heartbeat, nothing at all
    handler.cycle()
    clock.t += 60
    expect(stubber, "record_lifecycle_action_heartbeat", asg, iid)
    handler.cycle()
    stubber.assert_no_pending_responses()

    kube.put(PODS, "ml", pod("train-0", "n1", phase="Succeeded"))      # the Job is done
    clock.t += 30
    expect(stubber, "complete_lifecycle_action", asg, iid)
    handler.cycle()
    stubber.assert_no_pending_responses()
    assert any(e["reason"] == "TerminationContinued" for e in events_on(kube, "n1"))
    set_state(iid, "Terminated")                                        # AWS goes on
    handler.cycle()                                                     # and the handler leaves it be
    assert handler.started == {} and handler.heartbeats == {}


def test_a_restarted_handler_resumes_from_the_node_and_never_lets_go_early(world, kube):
    asg = world["fleet"].asgs[0]
    iid = world["instances"][asg][1]
    marked = {"kiln.dev/terminating-lifecycle-termination": d.format_time(T0)}
    kube.put(NODES, None, node("n2", iid, marked, [{"key": "kiln.dev/terminating", "value": "lifecycle-termination",
                                                    "effect": "NoSchedule"}], unschedulable=True))
    kube.put(PODS, "ml", pod("train-1", "n2"))
    set_state(iid, "Terminating:Wait")
    handler, stubber, clock = make_handler(world, kube, clock=Clock(T0 + 7190))   # no message, no memory
    expect(stubber, "record_lifecycle_action_heartbeat", asg, iid)                # at once after a restart
    handler.cycle()
    stubber.assert_no_pending_responses()
    clock.t = T0 + 7200                                                # the grace from the node's mark, not from now
    handler.cycle()
    assert kube.get(PODS, "ml", "train-1") is None                     # evicted: its time is up
    assert any(e["reason"] == "JobGraceExpired" for e in events_on(kube, "train-1"))
    clock.t = T0 + 7200 + d.AFTER_GRACE_SECONDS
    expect(stubber, "complete_lifecycle_action", asg, iid)
    handler.cycle()
    stubber.assert_no_pending_responses()


def test_a_node_the_rollout_drained_is_let_go_at_once_and_left_untouched(world, kube):
    asg = world["fleet"].asgs[1]
    iid = world["instances"][asg][0]
    kube.put(NODES, None, node("n3", iid, taints=[{"key": "kiln.dev/rollout", "value": "old", "effect": "NoSchedule"}],
                               unschedulable=True))
    set_state(iid, "Terminating:Wait")
    lifecycle_event(world, asg, iid)
    handler, stubber, _ = make_handler(world, kube)
    expect(stubber, "complete_lifecycle_action", asg, iid)
    handler.cycle()
    stubber.assert_no_pending_responses()
    assert kube.requests(lambda r: r.resource == NODES and r.method == "PATCH") == []
    assert queue_depth(world) == 0


# ---- spot, other clusters, poison ---------------------------------------------------------------------------------


def test_a_spot_warning_cordons_and_evicts_non_jobs_and_other_clusters_are_ignored(world, kube):
    asg = world["fleet"].asgs[0]
    iid = world["instances"][asg][0]
    theirs = world["instances"][world["other"].asgs[0]][0]
    kube.put(NODES, None, node("n1", iid))
    kube.put(PODS, "ml", pod("train-0", "n1"))
    kube.put(PODS, "web", pod("api-0", "n1", "ReplicaSet"))
    ec2_event(world, "EC2 Spot Instance Interruption Warning", {"instance-id": iid, "instance-action": "terminate"})
    ec2_event(world, "EC2 Spot Instance Interruption Warning", {"instance-id": theirs, "instance-action": "terminate"})
    lifecycle_event(world, world["other"].asgs[0], theirs)             # not delivered: the rule names our ASGs only
    handler, stubber, _ = make_handler(world, kube)
    handler.cycle()                                                    # no lifecycle call at all (the Stubber would fail)
    stored = kube.get(NODES, None, "n1")
    assert stored["spec"]["unschedulable"] is True and "kiln.dev/terminating-spot-interruption" in stored["metadata"]["annotations"]
    assert kube.get(PODS, "web", "api-0") is None and kube.get(PODS, "ml", "train-0") is not None
    [warning] = [e for e in events_on(kube, "train-0") if e["reason"] == "NodeTerminating"]
    assert warning["type"] == "Warning" and "graceful shutdown" in warning["note"]
    assert queue_depth(world) == 0
    assert len(kube.requests(lambda r: r.resource == NODES and r.method == "PATCH")) == 1


def test_a_poison_message_goes_to_the_dead_letter_queue_and_the_handler_carries_on(world, kube):
    world["sqs"].send_message(QueueUrl=world["queue"], MessageBody="{not json")
    world["sqs"].send_message(QueueUrl=world["queue"], MessageBody=json.dumps({"source": "aws.ec2", "detail-type": "x"}))
    handler, stubber, clock = make_handler(world, kube)
    for _ in range(termination.MAX_RECEIVES + 1):
        clock.t += 1
        assert handler.cycle() is not None
    dead = world["sqs"].receive_message(QueueUrl=world["dlq"], MaxNumberOfMessages=10).get("Messages", [])
    assert sorted(m["Body"] for m in dead) == sorted(["{not json", json.dumps({"source": "aws.ec2", "detail-type": "x"})])
    assert queue_depth(world) == 0


# ---- leader election ---------------------------------------------------------------------------------------------


def test_two_handlers_only_the_leader_acts(world, kube):
    asg = world["fleet"].asgs[0]
    iid = world["instances"][asg][0]
    kube.put(NODES, None, node("n1", iid))
    kube.put(PODS, "ml", pod("train-0", "n1"))
    set_state(iid, "Terminating:Wait")
    lifecycle_event(world, asg, iid)
    mono_a, mono_b = Clock(0.0), Clock(500.0)
    a, stub_a, clock = make_handler(world, kube, identity="a", mono=mono_a)
    b, stub_b, _ = make_handler(world, kube, identity="b", mono=mono_b, clock=clock)
    expect(stub_a, "record_lifecycle_action_heartbeat", asg, iid)
    assert a.cycle() is not None
    kube.clear_requests()
    assert b.cycle() is None                      # the standby receives nothing and touches nothing
    assert kube.requests(lambda r: r.resource != kmock.resource("coordination.k8s.io/v1/leases")) == []
    stub_a.assert_no_pending_responses()
    # a dies. b counts a lease duration on its own clock from when it last saw a's record change.
    mono_b.t += 29
    assert b.cycle() is None
    mono_b.t += 6                                 # a standby tries again every poll period (5 s)
    clock.t += 120
    expect(stub_b, "record_lifecycle_action_heartbeat", asg, iid)   # its memory is empty: it heartbeats at once
    assert b.cycle() is not None
    stub_b.assert_no_pending_responses()
    mono_a.t += 25                                # a comes back after its renew deadline: not leading any more
    assert a.cycle() is None


# ---- failing closed --------------------------------------------------------------------------------------------------


def test_an_unreadable_cluster_keeps_holding_and_keeps_the_message(world, kube):
    asg = world["fleet"].asgs[0]
    iid = world["instances"][asg][0]
    set_state(iid, "Terminating:Wait")
    lifecycle_event(world, asg, iid)
    broken = KubeEmulator()
    try:
        failing = kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="etcd is down", details={})
        broken.call(lambda: broken.emulator[kmock.action.LIST, NODES] ** 10 << failing)
        handler, stubber, _ = make_handler(world, broken)
        expect(stubber, "record_lifecycle_action_heartbeat", asg, iid)
        handler.cycle()
        stubber.assert_no_pending_responses()     # held, not completed
        assert queue_depth(world) == 1            # and the message waits for a readable cluster
    finally:
        broken.close()


def test_a_queue_that_cannot_be_read_does_not_stop_the_holds(world, kube):
    asg = world["fleet"].asgs[0]
    iid = world["instances"][asg][0]
    kube.put(NODES, None, node("n1", iid))
    kube.put(PODS, "ml", pod("train-0", "n1"))
    set_state(iid, "Terminating:Wait")
    missing = world["queue"].rsplit("/", 1)[0] + "/no-such-queue"
    handler, stubber, _ = make_handler(world, kube, queue_url=missing)
    expect(stubber, "record_lifecycle_action_heartbeat", asg, iid)
    assert handler.cycle() is not None
    stubber.assert_no_pending_responses()
    assert kube.get(NODES, None, "n1")["spec"]["unschedulable"] is True


def test_throttled_auto_scaling_reads_fall_back_to_the_last_answer(world, kube):
    asg = world["fleet"].asgs[0]
    iid = world["instances"][asg][0]
    kube.put(NODES, None, node("n1", iid))
    kube.put(PODS, "ml", pod("train-0", "n1"))
    set_state(iid, "Terminating:Wait")
    describe_client = boto3.client("autoscaling", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    answer = world["session"].client("autoscaling").describe_auto_scaling_groups(
        Filters=[{"Name": "tag:kiln.dev/cluster", "Values": [CLUSTER]}])
    answer.pop("ResponseMetadata", None)
    throttled = Stubber(describe_client)
    throttled.add_response("describe_auto_scaling_groups", answer)
    throttled.add_client_error("describe_auto_scaling_groups", "Throttling", "Rate exceeded", 400)
    throttled.activate()
    handler, stubber, clock = make_handler(world, kube, autoscaling=describe_client)
    expect(stubber, "record_lifecycle_action_heartbeat", asg, iid)
    handler.cycle()
    clock.t += 100
    expect(stubber, "record_lifecycle_action_heartbeat", asg, iid)
    assert handler.cycle() is not None            # the describe failed: the last answer keeps the hold going
    stubber.assert_no_pending_responses()
    throttled.assert_no_pending_responses()


def test_with_no_answer_from_auto_scaling_yet_the_messages_stay(world, kube):
    describe_client = boto3.client("autoscaling", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    failing = Stubber(describe_client)
    failing.add_client_error("describe_auto_scaling_groups", "Throttling", "Rate exceeded", 400)
    failing.activate()
    lifecycle_event(world, world["fleet"].asgs[0], world["instances"][world["fleet"].asgs[0]][0])
    handler, _, _ = make_handler(world, kube, autoscaling=describe_client)
    assert handler.cycle() is None
    assert queue_depth(world) == 1


def test_the_cli_refuses_bad_input_naming_the_flag(capsys, monkeypatch):
    from automation.cli import main

    for key in ("KILN_CLUSTER_NAME", "KILN_QUEUE_URL"):
        monkeypatch.delenv(key, raising=False)
    assert main(["termination-handler", "--cluster-name", "kiln-test", "--queue-url", "nope"]) == 2
    assert "--queue-url" in capsys.readouterr().err
    url = "https://sqs.us-east-2.amazonaws.com/123456789012/kiln-test-termination"
    assert main(["termination-handler", "--cluster-name", "c", "--queue-url", url, "--heartbeat-timeout-seconds", "10"]) == 2
    assert "--heartbeat-timeout-seconds: 10 must be between 30 and 7200" in capsys.readouterr().err
    assert main(["termination-handler", "--cluster-name", "c", "--queue-url", url, "--job-kinds", "DaemonSet"]) == 2
    assert "--job-kinds" in capsys.readouterr().err
    monkeypatch.setenv("KILN_CLUSTER_NAME", "from-env")
    monkeypatch.setenv("KILN_QUEUE_URL", url)
    monkeypatch.setenv("KILN_JOB_KINDS", "Job, RayJob")
    from automation.termination.cli import configure, options_from
    import argparse

    parser = argparse.ArgumentParser()
    configure(parser)
    options = options_from(parser.parse_args(["--job-grace-seconds", "600"]))
    assert (options.cluster_name, options.job_grace_seconds, options.job_kinds) == ("from-env", 600.0,
                                                                                   frozenset({"Job", "RayJob"}))


def test_the_cli_refuses_a_grace_the_hook_cannot_honour_and_empty_names(capsys, monkeypatch):
    # Review of issue 10: the grace is validated against the hook's limits (as kiln:terminationJobGraceSeconds
    # is); an empty hook name or identity would match no lifecycle action / break leader election.
    from automation.cli import main

    for key in ("KILN_CLUSTER_NAME", "KILN_QUEUE_URL", "KILN_HOOK_NAME", "POD_NAME"):
        monkeypatch.delenv(key, raising=False)
    url = "https://sqs.us-east-2.amazonaws.com/123456789012/kiln-test-termination"
    base = ["termination-handler", "--cluster-name", "c", "--queue-url", url, "--once"]
    assert main(base + ["--heartbeat-timeout-seconds", "30", "--job-grace-seconds", "2641"]) == 2
    err = capsys.readouterr().err
    assert "--job-grace-seconds: 2641 must be <= 2640" in err and "--heartbeat-timeout-seconds (30)" in err
    assert main(base + ["--job-grace-seconds", "172800"]) == 2          # default heartbeat 300: global 30000 s
    assert "must be <= 29640" in capsys.readouterr().err
    assert main(base + ["--hook-name", ""]) == 2
    assert "--hook-name" in capsys.readouterr().err
    assert main(base + ["--hook-name", "has space"]) == 2
    assert "--hook-name" in capsys.readouterr().err
    assert main(base + ["--identity", ""]) == 2
    assert "--identity" in capsys.readouterr().err


def test_the_cli_says_in_one_line_when_no_cluster_can_be_reached(capsys, monkeypatch, tmp_path):
    from automation.cli import main

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    url = "https://sqs.us-east-2.amazonaws.com/123456789012/kiln-test-termination"
    base = ["termination-handler", "--cluster-name", "c", "--queue-url", url, "--once"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--kubeconfig" in err and len(err.strip().splitlines()) == 1
    assert main(base + ["--kubeconfig", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "--kubeconfig" in err and len(err.strip().splitlines()) == 1


def test_run_steps_down_when_stopped(world, kube):
    handler, _, _ = make_handler(world, kube, identity="a")
    cycles = []
    real = handler.cycle

    def cycle_then_stop():
        cycles.append(real())
        handler.stopping = True          # what SIGTERM does
        return cycles[-1]

    handler.cycle = cycle_then_stop
    assert handler.run() == 0 and len(cycles) == 1
    lease = kube.get(kmock.resource("coordination.k8s.io/v1/leases"), "kube-system", "kiln-termination-handler")
    assert lease["spec"].get("holderIdentity") is None  # released: the standby takes over at once


def test_a_failed_mark_keeps_its_message_for_the_next_delivery(world, kube):
    asg = world["fleet"].asgs[0]
    iid = world["instances"][asg][0]
    ec2_event(world, "EC2 Spot Instance Interruption Warning", {"instance-id": iid, "instance-action": "terminate"})
    broken = KubeEmulator()
    try:
        broken.put(NODES, None, node("n1", iid))
        failing = kmock.KubernetesError(status=500, reason="InternalError", message="webhook timed out", details={})
        broken.call(lambda: broken.emulator[kmock.method.PATCH, NODES] ** 10 << failing)
        handler, _, _ = make_handler(world, broken)
        assert handler.cycle() is not None
        assert queue_depth(world) == 1            # not deleted: its mark did not land
    finally:
        broken.close()
    handler, _, _ = make_handler(world, kube)     # the API server is fine again: the redelivered notice lands
    kube.put(NODES, None, node("n1", iid))
    handler.cycle()
    assert "kiln.dev/terminating-spot-interruption" in kube.get(NODES, None, "n1")["metadata"]["annotations"]
    assert queue_depth(world) == 0
