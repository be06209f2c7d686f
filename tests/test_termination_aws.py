"""The handler's AWS side over HTTP: EventBridge rules -> SQS on a moto server, the queue and its dead-letter
queue, this cluster's ASGs; and the two lifecycle calls moto 5.2.5 does not implement
(``CompleteLifecycleAction``, ``RecordLifecycleActionHeartbeat``) with botocore's Stubber, which validates
every parameter against the Auto Scaling service model."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from automation.localaws import ACCOUNT_ID, LocalAws, create_fleet
from automation.termination import aws as taws
from automation.termination.decisions import Reason
from automation.termination.events import parse_message
from infra import termination

REGION = "us-east-2"


@pytest.fixture(scope="module")
def local():
    with LocalAws(REGION) as aws_:
        yield aws_


@pytest.fixture(scope="module")
def fleets(local):
    session = local.session()
    ours = create_fleet(session, "kiln-test", group="gpu", nodes_per_zone=2)
    theirs = create_fleet(session, "other", group="cpu", nodes_per_zone=1, zones=("a",), base_ami=ours.base_ami)
    return ours, theirs


def sample_events(asg: str, other_asg: str) -> list[tuple[str, str, dict, object]]:
    """(source, detail-type, detail, the reason kiln should read, or None: the rules must not deliver it)."""
    lifecycle = {"LifecycleActionToken": "87654321-4321-4321-4321-210987654321", "AutoScalingGroupName": asg,
                 "LifecycleHookName": "kiln-termination", "EC2InstanceId": "i-0123456789abcdef0",
                 "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING", "Origin": "AutoScalingGroup",
                 "Destination": "EC2"}
    return [
        ("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action", lifecycle, Reason.LIFECYCLE),
        ("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action", {**lifecycle, "AutoScalingGroupName": other_asg}, None),
        ("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action", {**lifecycle, "LifecycleHookName": "theirs"}, None),
        ("aws.autoscaling", "EC2 Instance-launch Lifecycle Action", {**lifecycle}, None),
        ("aws.ec2", "EC2 Spot Instance Interruption Warning",
         {"instance-id": "i-0123456789abcdef1", "instance-action": "terminate"}, Reason.SPOT),
        ("aws.ec2", "EC2 Instance Rebalance Recommendation", {"instance-id": "i-0123456789abcdef2"}, Reason.REBALANCE),
        ("aws.ec2", "EC2 Instance State-change Notification", {"instance-id": "i-0123456789abcdef3", "state": "stopping"},
         Reason.STOPPING),
        ("aws.ec2", "EC2 Instance State-change Notification",
         {"instance-id": "i-0123456789abcdef3", "state": "shutting-down"}, Reason.STOPPING),
        ("aws.ec2", "EC2 Instance State-change Notification", {"instance-id": "i-0123456789abcdef3", "state": "running"}, None),
        ("aws.health", "AWS Health Event",
         {"service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
          "startTime": "Wed, 31 Jan 2029 22:00:00 GMT", "affectedEntities": [{"entityValue": "i-0123456789abcdef4"}]},
         Reason.SCHEDULED),
        ("aws.health", "AWS Health Event", {"service": "EC2", "eventTypeCategory": "issue", "affectedEntities": []}, None),
        ("aws.health", "AWS Health Event", {"service": "RDS", "eventTypeCategory": "scheduledChange"}, None),
        ("aws.ecr", "ECR Image Action", {"result": "SUCCESS"}, None),
    ]


def test_the_programs_rules_deliver_exactly_the_notices_kiln_reads(local, fleets):
    ours, theirs = fleets
    session = local.session()
    events, sqs = session.client("events"), session.client("sqs")
    url = sqs.create_queue(QueueName="rules-test")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for suffix, pattern in termination.event_patterns(ours.asgs).items():
        events.put_rule(Name=f"kiln-test-termination-{suffix}", EventPattern=json.dumps(pattern))
        events.put_targets(Rule=f"kiln-test-termination-{suffix}", Targets=[{"Id": "queue", "Arn": arn}])
    queue = taws.Queue(url, sqs=sqs, wait_seconds=0)
    for source, detail_type, detail, expected in sample_events(ours.asgs[0], theirs.asgs[0]):
        events.put_events(Entries=[{"Source": source, "DetailType": detail_type, "Detail": json.dumps(detail)}])
        received = queue.receive()
        for r in received:
            queue.delete(r.receipt_handle)
        if expected is None:
            assert received == [], (source, detail_type, detail)
            continue
        [message] = received
        notice = parse_message(message.message_id, message.body)
        assert notice.reason is expected, (detail_type, notice.detail)
        assert abs(notice.time - time.time()) < 120
        if expected is Reason.LIFECYCLE:
            assert (notice.asg, notice.hook, notice.instance_ids) == (ours.asgs[0], "kiln-termination",
                                                                      ("i-0123456789abcdef0",))


def test_a_message_left_alone_moves_to_the_dead_letter_queue(local):
    sqs = local.session().client("sqs")
    dlq = sqs.create_queue(QueueName="kiln-test-termination-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="kiln-test-termination", Attributes={
        "VisibilityTimeout": "0", "RedrivePolicy": termination.redrive_policy(dlq_arn)})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="not an event")
    queue = taws.Queue(url, sqs=sqs, wait_seconds=0)
    counts = []
    for _ in range(termination.MAX_RECEIVES + 2):
        counts.extend(r.receive_count for r in queue.receive())
    assert counts == list(range(1, termination.MAX_RECEIVES + 1))    # received 5 times, never again
    [dead] = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert dead["Body"] == "not an event"


def test_describe_lists_only_this_clusters_groups_and_each_instances_state(local, fleets):
    ours, theirs = fleets
    from moto.autoscaling.models import autoscaling_backends

    # moto 5.2.5 has lifecycle hooks but never holds an instance in Terminating:Wait: put one there, as a
    # hook would, in the server's (in-process) backend; DescribeAutoScalingGroups then reports it over HTTP.
    group = autoscaling_backends[ACCOUNT_ID][REGION].autoscaling_groups[ours.asgs[0]]
    group.instance_states[0].lifecycle_state = "Terminating:Wait"
    held = group.instance_states[0].instance.id
    actions = taws.LifecycleActions("kiln-test", autoscaling=local.session().client("autoscaling"), page_size=1)
    groups, instances = actions.describe()
    assert groups == frozenset(ours.asgs)
    assert len(instances) == 4 and {i.asg for i in instances.values()} == set(ours.asgs)
    assert instances[held].lifecycle_state == "Terminating:Wait"
    assert {i.lifecycle_state for k, i in instances.items() if k != held} == {"InService"}
    assert taws.LifecycleActions("nobody", autoscaling=local.session().client("autoscaling")).describe() == (frozenset(), {})


# ---- the two calls moto lacks: botocore's Stubber --------------------------------------------------------------


def stubbed() -> tuple[taws.LifecycleActions, Stubber]:
    client = boto3.client("autoscaling", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return taws.LifecycleActions("kiln-test", autoscaling=client), Stubber(client)


WHO = {"AutoScalingGroupName": "kiln-test-gpu-us-east-2a", "LifecycleHookName": "kiln-termination",
       "InstanceId": "i-0123456789abcdef0"}


def test_heartbeat_and_complete_send_exactly_these_parameters():
    actions, stub = stubbed()
    stub.add_response("record_lifecycle_action_heartbeat", {}, WHO)
    stub.add_response("complete_lifecycle_action", {}, {**WHO, "LifecycleActionResult": "CONTINUE"})
    with stub:
        assert actions.heartbeat(WHO["AutoScalingGroupName"], WHO["LifecycleHookName"], WHO["InstanceId"]) is True
        assert actions.complete(WHO["AutoScalingGroupName"], WHO["LifecycleHookName"], WHO["InstanceId"]) is True
    stub.assert_no_pending_responses()


def test_an_action_that_is_no_longer_pending_is_not_an_error():
    actions, stub = stubbed()
    gone = f"No active Lifecycle Action found with instance ID {WHO['InstanceId']}"
    stub.add_client_error("complete_lifecycle_action", "ValidationError", gone, 400,
                          expected_params={**WHO, "LifecycleActionResult": "CONTINUE"})
    stub.add_client_error("record_lifecycle_action_heartbeat", "ValidationError", gone, 400, expected_params=WHO)
    stub.add_client_error("record_lifecycle_action_heartbeat", "AccessDenied", "not authorized", 403, expected_params=WHO)
    stub.add_client_error("complete_lifecycle_action", "ValidationError", "No Lifecycle Hook found with name kiln-termination",
                          400, expected_params={**WHO, "LifecycleActionResult": "CONTINUE"})
    with stub:
        assert actions.complete(*WHO.values()) is False
        assert actions.heartbeat(*WHO.values()) is False
        with pytest.raises(ClientError):                       # anything else is the caller's to see
            actions.heartbeat(*WHO.values())
        with pytest.raises(ClientError):                       # a missing hook is a misconfiguration, not "done"
            actions.complete(*WHO.values())


def test_clients_retry_with_botocores_own_modes(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")     # on its own, no earlier test has set one
    assert taws.client_config("adaptive").retries == {"mode": "adaptive", "max_attempts": taws.MAX_ATTEMPTS}
    lifecycle = taws.LifecycleActions("kiln-test")
    assert lifecycle.autoscaling.meta.config.retries["mode"] == "adaptive"
    queue = taws.Queue("https://sqs.us-east-2.amazonaws.com/123456789012/q")
    assert queue.sqs.meta.config.retries["mode"] == "standard"
