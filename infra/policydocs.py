"""IAM policy documents as plain data: small builders, and the ARNs kiln scopes statements to.

Components build their documents from these pure functions inside one
``Output.apply`` (account, region, partition and names known), so the JSON a
role carries is exactly what the tests parse, statement by statement.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Sequence

VERSION = "2012-10-17"


def statement(sid: str, actions: Sequence[str], resources: Sequence[str] | str,
              conditions: Optional[Mapping[str, Mapping[str, Any]]] = None, effect: str = "Allow") -> dict[str, Any]:
    """One statement; actions and resources sorted so documents are stable across runs."""
    if not actions:
        raise ValueError(f"statement {sid}: no actions")
    resource: Any = resources if isinstance(resources, str) else sorted(set(resources))
    out: dict[str, Any] = {"Sid": sid, "Effect": effect, "Action": sorted(set(actions)), "Resource": resource}
    if conditions:
        out["Condition"] = {op: dict(keys) for op, keys in conditions.items()}
    return out


def document(*statements: Mapping[str, Any]) -> str:
    sids = [s.get("Sid") for s in statements if s.get("Sid")]
    if len(set(sids)) != len(sids):
        raise ValueError(f"duplicate Sid in {sids}")
    return json.dumps({"Version": VERSION, "Statement": list(statements)}, sort_keys=True)


def trust(principal: Mapping[str, Any], action: str | Sequence[str] = "sts:AssumeRole",
          conditions: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    """A role trust policy with one statement (one action, or several)."""
    out: dict[str, Any] = {"Effect": "Allow", "Principal": dict(principal),
                           "Action": action if isinstance(action, str) else sorted(set(action))}
    if conditions:
        out["Condition"] = {op: dict(keys) for op, keys in conditions.items()}
    return json.dumps({"Version": VERSION, "Statement": [out]}, sort_keys=True)


# ---- ARNs -------------------------------------------------------------------------------------


def ec2_arn(partition: str, region: str, account: str, resource: str) -> str:
    """``arn:<p>:ec2:<region>:<account>:<resource>``; images and snapshots have no account."""
    owner = "" if resource.startswith(("image/", "snapshot/")) else account
    return f"arn:{partition}:ec2:{region}:{owner}:{resource}"


def ssm_document_arn(partition: str, region: str, document_name: str) -> str:
    """AWS-owned documents (``AWS-*``) carry no account id in their ARN."""
    return f"arn:{partition}:ssm:{region}::document/{document_name}"


def asg_arn(partition: str, region: str, account: str) -> str:
    """Every Auto Scaling group of the account in the region (narrowed further by tag conditions)."""
    return f"arn:{partition}:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/*"
