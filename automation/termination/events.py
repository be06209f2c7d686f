"""EventBridge events, as the termination queue delivers them, to :class:`~.decisions.Notice`. Pure.

Each message body is one EventBridge event (the rules in ``infra/termination.py``
target the queue without an input transformer). The shapes read here:

* ``aws.autoscaling`` / ``EC2 Instance-terminate Lifecycle Action``:
  ``detail.EC2InstanceId``, ``AutoScalingGroupName``, ``LifecycleHookName``,
  ``LifecycleTransition``;
* ``aws.ec2`` / ``EC2 Spot Instance Interruption Warning``: ``detail.instance-id``,
  ``instance-action`` — the instance is reclaimed two minutes after the event;
* ``aws.ec2`` / ``EC2 Instance Rebalance Recommendation``: ``detail.instance-id``;
* ``aws.ec2`` / ``EC2 Instance State-change Notification``: ``detail.instance-id``,
  ``state`` (the rule delivers ``stopping`` and ``shutting-down`` only);
* ``aws.health`` / ``AWS Health Event`` with ``detail.service`` EC2 and
  ``eventTypeCategory`` ``scheduledChange``: ``affectedEntities[].entityValue``,
  ``startTime``, ``eventTypeCode``.

Anything else — not JSON, another event, a field missing or malformed — is a
notice with ``reason=None`` and a ``detail`` saying why: the handler never acts on
it and never crashes on it; the queue's redrive policy moves it to the
dead-letter queue.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
from typing import Any, Mapping, Optional

from .decisions import Notice, Reason

SPOT_WARNING_SECONDS = 120.0          # EC2 reclaims a spot instance two minutes after the warning
LIFECYCLE_DETAIL_TYPE = "EC2 Instance-terminate Lifecycle Action"
SPOT_DETAIL_TYPE = "EC2 Spot Instance Interruption Warning"
REBALANCE_DETAIL_TYPE = "EC2 Instance Rebalance Recommendation"
STATE_DETAIL_TYPE = "EC2 Instance State-change Notification"
HEALTH_DETAIL_TYPE = "AWS Health Event"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
STOPPING_STATES = ("stopping", "shutting-down")
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$")


class _Malformed(ValueError):
    pass


def parse_time(value: Any) -> float:
    """EventBridge's ``time`` (``2026-01-02T03:04:05Z``) or AWS Health's
    ``startTime`` (``Wed, 31 Jan 2024 22:00:00 GMT``, or ISO) -> epoch seconds."""
    if not isinstance(value, str) or not value:
        raise _Malformed(f"time {value!r} is not a timestamp")
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise _Malformed(f"time {value!r} is not a timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _instance_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _INSTANCE_ID.fullmatch(value):
        raise _Malformed(f"{where} {value!r} is not an EC2 instance id")
    return value


def _text(detail: Mapping[str, Any], key: str) -> str:
    value = detail.get(key)
    if not isinstance(value, str) or not value:
        raise _Malformed(f"detail.{key} is missing")
    return value


def parse_message(message_id: str, body: str) -> Notice:
    """One message body -> a notice (``reason=None`` with ``detail`` when it is not one kiln understands)."""
    try:
        return _parse(message_id, body)
    except _Malformed as problem:
        return Notice(message_id, None, detail=str(problem))


def _parse(message_id: str, body: str) -> Notice:
    try:
        event = json.loads(body)
    except (TypeError, ValueError):
        raise _Malformed(f"body is not JSON: {str(body)[:80]!r}") from None
    if not isinstance(event, Mapping):
        raise _Malformed("body is not an EventBridge event (not an object)")
    source, kind = event.get("source"), event.get("detail-type")
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise _Malformed(f"{source}/{kind}: no detail object")
    time = parse_time(event.get("time"))

    if source == "aws.autoscaling" and kind == LIFECYCLE_DETAIL_TYPE:
        transition = detail.get("LifecycleTransition")
        if transition != TERMINATING:
            raise _Malformed(f"lifecycle transition {transition!r} is not {TERMINATING}")
        return Notice(message_id, Reason.LIFECYCLE, (_instance_id(detail.get("EC2InstanceId"), "detail.EC2InstanceId"),),
                      time, asg=_text(detail, "AutoScalingGroupName"), hook=_text(detail, "LifecycleHookName"),
                      detail=f"{detail.get('Origin', '?')} -> {detail.get('Destination', '?')}")
    if source == "aws.ec2" and kind == SPOT_DETAIL_TYPE:
        instance = _instance_id(detail.get("instance-id"), "detail.instance-id")
        return Notice(message_id, Reason.SPOT, (instance,), time, at=time + SPOT_WARNING_SECONDS,
                      detail=f"instance-action {detail.get('instance-action', '?')}")
    if source == "aws.ec2" and kind == REBALANCE_DETAIL_TYPE:
        return Notice(message_id, Reason.REBALANCE, (_instance_id(detail.get("instance-id"), "detail.instance-id"),), time)
    if source == "aws.ec2" and kind == STATE_DETAIL_TYPE:
        state = detail.get("state")
        if state not in STOPPING_STATES:
            raise _Malformed(f"instance state {state!r} is not one of {', '.join(STOPPING_STATES)}")
        return Notice(message_id, Reason.STOPPING, (_instance_id(detail.get("instance-id"), "detail.instance-id"),),
                      time, at=time, detail=state)
    if source == "aws.health" and kind == HEALTH_DETAIL_TYPE:
        return _health(message_id, detail, time)
    raise _Malformed(f"{source!r}/{kind!r} is not an event kiln handles")


def _health(message_id: str, detail: Mapping[str, Any], time: float) -> Notice:
    if detail.get("service") != "EC2" or detail.get("eventTypeCategory") != "scheduledChange":
        raise _Malformed(f"AWS Health {detail.get('service')!r}/{detail.get('eventTypeCategory')!r} "
                         "is not an EC2 scheduled change")
    entities = detail.get("affectedEntities")
    if not isinstance(entities, list):
        raise _Malformed("AWS Health event without affectedEntities")
    ids = []
    for i, entity in enumerate(entities):
        value = entity.get("entityValue") if isinstance(entity, Mapping) else None
        # Health lists other entity kinds too (volumes, hosts); only instances matter here.
        if isinstance(value, str) and value.startswith("i-"):
            ids.append(_instance_id(value, f"detail.affectedEntities[{i}].entityValue"))
    if not ids:
        raise _Malformed("AWS Health scheduled change names no EC2 instance")
    start: Optional[float] = parse_time(detail["startTime"]) if detail.get("startTime") else None
    return Notice(message_id, Reason.SCHEDULED, tuple(dict.fromkeys(ids)), time, at=start,
                  detail=str(detail.get("eventTypeCode") or "scheduled change"))
