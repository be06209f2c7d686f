"""Queue messages -> notices: every event kiln reads, and everything else refused with the reason (never a crash)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from automation.termination.decisions import Reason
from automation.termination.events import parse_message, parse_time

TIME = "2027-01-15T08:00:00Z"
EPOCH = 1_800_000_000.0


def event(source, detail_type, detail, time=TIME):
    return json.dumps({"version": "0", "id": "e", "source": source, "detail-type": detail_type, "time": time,
                       "region": "us-east-2", "resources": [], "detail": detail})


LIFECYCLE = {"LifecycleActionToken": "t", "AutoScalingGroupName": "kiln-prod-gpu-us-east-2a",
             "LifecycleHookName": "kiln-termination", "EC2InstanceId": "i-0123456789abcdef0",
             "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"}


def test_each_kind_of_notice():
    n = parse_message("m", event("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action", LIFECYCLE))
    assert (n.reason, n.instance_ids, n.asg, n.hook, n.time) == (
        Reason.LIFECYCLE, ("i-0123456789abcdef0",), "kiln-prod-gpu-us-east-2a", "kiln-termination", EPOCH)
    n = parse_message("m", event("aws.ec2", "EC2 Spot Instance Interruption Warning",
                                 {"instance-id": "i-0123456789abcdef0", "instance-action": "terminate"}))
    assert (n.reason, n.at) == (Reason.SPOT, EPOCH + 120)
    n = parse_message("m", event("aws.ec2", "EC2 Instance Rebalance Recommendation", {"instance-id": "i-01234567"}))
    assert (n.reason, n.instance_ids) == (Reason.REBALANCE, ("i-01234567",))
    for state in ("stopping", "shutting-down"):
        n = parse_message("m", event("aws.ec2", "EC2 Instance State-change Notification",
                                     {"instance-id": "i-0123456789abcdef0", "state": state}))
        assert (n.reason, n.detail) == (Reason.STOPPING, state)
    n = parse_message("m", event("aws.health", "AWS Health Event", {
        "service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED",
        "startTime": "Fri, 15 Jan 2027 10:00:00 GMT",
        "affectedEntities": [{"entityValue": "i-0123456789abcdef0"}, {"entityValue": "vol-0abc"},
                             {"entityValue": "i-0123456789abcdef1"}, {"entityValue": "i-0123456789abcdef0"}]}))
    assert n.reason is Reason.SCHEDULED and n.instance_ids == ("i-0123456789abcdef0", "i-0123456789abcdef1")
    assert n.at == EPOCH + 7200 and n.detail == "AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED"


@pytest.mark.parametrize("body, why", [
    ("", "not JSON"),
    ("{broken", "not JSON"),
    ("[1, 2]", "not an object"),
    ('"text"', "not an object"),
    (event("aws.ec2", "EC2 Spot Instance Interruption Warning", None), "no detail"),
    (event("aws.ec2", "EC2 Spot Instance Interruption Warning", {"instance-id": "i-0123456789abcdef0"}, time=None), "time"),
    (event("aws.ec2", "EC2 Spot Instance Interruption Warning", {"instance-id": "i-0123456789abcdef0"}, time="yesterday"),
     "not a timestamp"),
    (event("aws.ec2", "EC2 Spot Instance Interruption Warning", {"instance-id": "node-1"}), "not an EC2 instance id"),
    (event("aws.ec2", "EC2 Spot Instance Interruption Warning", {}), "not an EC2 instance id"),
    (event("aws.ec2", "EC2 Instance State-change Notification", {"instance-id": "i-0123456789abcdef0", "state": "running"}),
     "not one of stopping, shutting-down"),
    (event("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action",
           {**LIFECYCLE, "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING"}), "is not autoscaling:EC2_INSTANCE_TERMINATING"),
    (event("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action",
           {k: v for k, v in LIFECYCLE.items() if k != "AutoScalingGroupName"}), "AutoScalingGroupName is missing"),
    (event("aws.health", "AWS Health Event", {"service": "EC2", "eventTypeCategory": "issue"}), "not an EC2 scheduled change"),
    (event("aws.health", "AWS Health Event", {"service": "EC2", "eventTypeCategory": "scheduledChange",
                                               "affectedEntities": [{"entityValue": "vol-1"}]}), "names no EC2 instance"),
    (event("aws.health", "AWS Health Event", {"service": "EC2", "eventTypeCategory": "scheduledChange"}),
     "without affectedEntities"),
    (event("aws.ecr", "ECR Image Action", {"result": "SUCCESS"}), "not an event kiln handles"),
    (json.dumps({"Event": "autoscaling:TEST_NOTIFICATION"}), "no detail"),
])
def test_anything_else_is_refused_with_the_reason(body, why):
    notice = parse_message("m", body)
    assert notice.reason is None and why in notice.detail, notice.detail


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                              max_leaves=12).map(json.dumps)))
def test_no_body_makes_the_parser_raise(body):
    notice = parse_message("m", body)
    assert notice.reason is None or notice.instance_ids


def test_times_in_both_spellings():
    assert parse_time("2027-01-15T08:00:00Z") == EPOCH
    assert parse_time("Fri, 15 Jan 2027 08:00:00 GMT") == EPOCH
    assert parse_time("2027-01-15T08:00:00.500+00:00") == EPOCH + 0.5
