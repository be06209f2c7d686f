"""The termination handler's AWS side over boto3: the queue and this cluster's lifecycle actions.

* :class:`Queue`: long-polls the termination queue (SQS) and deletes what the
  handler is done with. Nothing else: a message the handler leaves comes back
  after the queue's visibility timeout, and after the redrive policy's receive
  count it moves to the dead-letter queue (``infra/termination.py``).
* :class:`LifecycleActions`: lists this cluster's ASGs (by the
  ``kiln.dev/cluster`` tag) with each instance's lifecycle state, and records
  heartbeats and completes actions by instance id (both calls accept the
  instance id instead of the action's token, so a restarted handler needs
  nothing from the message to carry on).

Retries are botocore's: *adaptive* mode for Auto Scaling (client-side rate
limiting on top of backoff: a fleet's heartbeats share the account's Auto
Scaling request budget with cluster-autoscaler and the rollout), *standard*
for SQS. Region, credentials and endpoint come from the standard chain (IRSA's
``AWS_ROLE_ARN``/``AWS_WEB_IDENTITY_TOKEN_FILE`` in the cluster, ``AWS_ENDPOINT_URL``
against a moto server in the tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.labels import TAG_CLUSTER
from infra.lifecycle import DEFAULT_RESULT as RESULT

from .decisions import Instance

MAX_ATTEMPTS = 10
USER_AGENT = "kiln-termination-handler"
# What Auto Scaling answers for an action that is no longer pending (completed, timed out, instance gone).
NO_ACTIVE_ACTION = "No active Lifecycle Action found"


def client_config(mode: str) -> Config:
    return Config(retries={"mode": mode, "max_attempts": MAX_ATTEMPTS}, user_agent_extra=USER_AGENT)


def session(region: Optional[str] = None) -> boto3.session.Session:
    # AWS_REGION is the SDK-wide variable; botocore itself reads only AWS_DEFAULT_REGION.
    return boto3.session.Session(region_name=region or os.environ.get("AWS_REGION") or None)


@dataclass(frozen=True)
class Received:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class Queue:
    """The termination queue."""

    def __init__(self, url: str, *, sqs: Any = None, wait_seconds: int = 5, max_messages: int = 10) -> None:
        self.url = url
        self.sqs = sqs or session().client("sqs", config=client_config("standard"))
        self.wait_seconds = wait_seconds
        self.max_messages = max_messages

    def receive(self) -> list[Received]:
        """Up to ``max_messages`` messages, waiting at most ``wait_seconds`` for the first (long polling)."""
        answer = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=self.max_messages, WaitTimeSeconds=self.wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"])
        return [Received(m["MessageId"], m["ReceiptHandle"], m.get("Body", ""),
                         int((m.get("Attributes") or {}).get("ApproximateReceiveCount", 1)))
                for m in answer.get("Messages", [])]

    def delete(self, receipt_handle: str) -> None:
        self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)


class LifecycleActions:
    """This cluster's ASGs and their instances' lifecycle actions."""

    def __init__(self, cluster_name: str, *, autoscaling: Any = None, page_size: int = 100,
                 lifecycle_client: Any = None) -> None:
        """``lifecycle_client``: the client for the heartbeat and complete calls (default: ``autoscaling``).
        The tests pass a botocore Stubber's, as moto 5.2.5 implements neither call."""
        self.cluster_name = cluster_name
        self.autoscaling = autoscaling or session().client("autoscaling", config=client_config("adaptive"))
        self.lifecycle_client = lifecycle_client or self.autoscaling
        self.page_size = page_size

    def describe(self) -> tuple[frozenset[str], dict[str, Instance]]:
        """(names of this cluster's ASGs, instance id -> instance): one paginated describe."""
        groups: set[str] = set()
        instances: dict[str, Instance] = {}
        paginator = self.autoscaling.get_paginator("describe_auto_scaling_groups")
        pages = paginator.paginate(Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [self.cluster_name]}],
                                   PaginationConfig={"PageSize": self.page_size})
        for page in pages:
            for group in page["AutoScalingGroups"]:
                name = group["AutoScalingGroupName"]
                groups.add(name)
                for i in group.get("Instances", []):
                    instances[i["InstanceId"]] = Instance(i["InstanceId"], name, i.get("LifecycleState", ""))
        return frozenset(groups), instances

    def heartbeat(self, asg: str, hook: str, instance_id: str) -> bool:
        """Restart the hook's heartbeat timeout; False when the action is no longer pending."""
        return self._call(self.lifecycle_client.record_lifecycle_action_heartbeat, asg, hook, instance_id)

    def complete(self, asg: str, hook: str, instance_id: str) -> bool:
        """Let the instance terminate (CONTINUE); False when the action was no longer pending."""
        return self._call(self.lifecycle_client.complete_lifecycle_action, asg, hook, instance_id,
                          LifecycleActionResult=RESULT)

    @staticmethod
    def _call(call: Any, asg: str, hook: str, instance_id: str, **extra: Any) -> bool:
        try:
            call(AutoScalingGroupName=asg, LifecycleHookName=hook, InstanceId=instance_id, **extra)
            return True
        except ClientError as error:
            details = error.response.get("Error", {})
            if details.get("Code") == "ValidationError" and NO_ACTIVE_ACTION in details.get("Message", ""):
                return False
            raise
