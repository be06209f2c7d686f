"""CloudPort over boto3: EC2 Auto Scaling as the rollout needs it.

Reads are paginated lists whose count does not grow with the fleet: one
``DescribeAutoScalingGroups`` walk filtered by the ``kiln.dev/cluster`` tag,
one ``DescribeInstances`` walk filtered by the groups' names (for each
instance's AMI and launch time) and, only when a group or instance names
``$Latest``/``$Default``, ``DescribeLaunchTemplateVersions`` per launch
template (per node group, never per node) to turn those into numbers. Only for
a group short of instances (a launch outstanding or failing),
``DescribeScalingActivities`` for that group, to say why in AWS's words.

Throttling and transient errors are retried by botocore's *adaptive* retry
mode (client-side rate limiting plus exponential backoff); there is no retry
loop here. Region, profile, credentials and endpoint come from the standard
AWS configuration chain (``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``, ``~/.aws/config``), so the same code talks to AWS or to
a moto server.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .model import TAG_CLUSTER, TAG_NODE_GROUP, AutoScalingGroup, Instance, ScalingActivity
from .ports import Throttled

ASG_NAME_TAG = "aws:autoscaling:groupName"   # set by Auto Scaling on every instance it launches
SYMBOLIC_VERSIONS = ("$Latest", "$Default")
PROTECTION_BATCH = 50       # SetInstanceProtection accepts at most 50 instance ids per call
FILTER_VALUES_BATCH = 200   # EC2 filters accept at most 200 values
ACTIVITY_PAGES = 3          # DescribeScalingActivities: at most 3 pages of 100 (newest first) per look
DEFAULT_MAX_ATTEMPTS = 10
# Error codes AWS uses for "slow down" (botocore retries these itself first).
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled", "SlowDown",
    "EC2ThrottledException", "PriorRequestNotComplete", "BandwidthLimitExceeded",
})
F = TypeVar("F", bound=Callable[..., Any])


class CloudError(RuntimeError):
    """A group kiln cannot roll (e.g. no launch template)."""


def client_config(max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Config:
    """botocore config shared by both clients: adaptive retries, a kiln user agent."""
    return Config(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        user_agent_extra="kiln-rollout",
    )


def _port_call(method: F) -> F:
    """Throttling that outlasted botocore's adaptive retries becomes the port's ``Throttled``."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in THROTTLING_CODES:
                raise Throttled(f"{method.__name__}: {error}") from error
            raise
    return wrapper  # type: ignore[return-value]


_NOT_IN_SERVICE = re.compile(r"instance (i-[0-9a-f]+) is not in InService")


def _instance_not_in_service(error: ClientError) -> Optional[str]:
    """The instance id of SetInstanceProtection's "The instance i-… is not in InService
    or EnteringStandby or Standby." ValidationError; None for any other error."""
    details = error.response.get("Error", {})
    if details.get("Code") != "ValidationError":
        return None
    match = _NOT_IN_SERVICE.search(details.get("Message", ""))
    return match.group(1) if match else None


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _group_launch_template(group: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The launch template spec of a group, plain or inside a mixed-instances policy."""
    if group.get("LaunchTemplate"):
        return group["LaunchTemplate"]
    policy = group.get("MixedInstancesPolicy") or {}
    return (policy.get("LaunchTemplate") or {}).get("LaunchTemplateSpecification")


def _writable_override(override: Mapping[str, Any]) -> dict[str, Any]:
    """An override as Describe shows it -> as Update accepts it.

    Describe names an override's launch template by id *and* name; Update refuses a
    specification with both ("Valid requests must contain either launchTemplateId or
    LaunchTemplateName"), so the id alone is sent back.
    """
    out = dict(override)
    spec = out.get("LaunchTemplateSpecification")
    if spec and spec.get("LaunchTemplateId") and spec.get("LaunchTemplateName"):
        out["LaunchTemplateSpecification"] = {k: v for k, v in spec.items() if k != "LaunchTemplateName"}
    return out


def group_from_describe(
    raw: Mapping[str, Any],
    details: Mapping[str, tuple[Optional[str], Optional[float]]],
    resolved: Mapping[tuple[str, str], tuple[str, Optional[str]]],
) -> AutoScalingGroup:
    """One ``DescribeAutoScalingGroups`` entry -> :class:`AutoScalingGroup` (pure).

    ``details`` maps instance id -> (AMI, launch time) from EC2; ``resolved`` maps
    (template id, "$Latest"|"$Default") -> (version number, its AMI).
    """
    name = raw["AutoScalingGroupName"]
    spec = _group_launch_template(raw)
    if not spec or not spec.get("LaunchTemplateId"):
        raise CloudError(f"Auto Scaling group {name!r} has no launch template; kiln rolls launch-template groups only")
    template_id = spec["LaunchTemplateId"]
    group_version = spec.get("Version", "$Default")
    if (template_id, group_version) in resolved:
        group_version = resolved[(template_id, group_version)][0]

    def instance_version(instance: Mapping[str, Any], image_id: Optional[str]) -> Optional[str]:
        """The version an instance runs, comparable with the group's; a string that can
        never equal it when the instance runs something else."""
        launched_from = instance.get("LaunchTemplate") or {}
        version = launched_from.get("Version")
        if version is None:
            return None
        instance_template = launched_from.get("LaunchTemplateId") or template_id
        if instance_template != template_id:
            return f"{instance_template}:{version}"     # another template altogether: old
        if version not in SYMBOLIC_VERSIONS:
            return version
        # "$Latest"/"$Default" say nothing about *which* version launched the instance;
        # its AMI does: it is current only if it runs the AMI that version has now.
        number, image = resolved.get((template_id, version), (None, None))
        if number is not None and (image is None or image_id is None or image == image_id):
            return number
        return f"{version}@{image_id}"

    tags = {t["Key"]: t.get("Value", "") for t in raw.get("Tags", [])}
    instances = []
    for i in raw.get("Instances", []):
        image_id, launched_at = details.get(i["InstanceId"], (None, None))
        instances.append(Instance(
            id=i["InstanceId"],
            zone=i.get("AvailabilityZone", ""),
            launch_template_version=instance_version(i, image_id),
            lifecycle_state=i.get("LifecycleState", "InService"),
            healthy=i.get("HealthStatus", "Healthy") == "Healthy",
            protected_from_scale_in=bool(i.get("ProtectedFromScaleIn", False)),
            image_id=image_id,
            launched_at=launched_at,
        ))
    zones = raw.get("AvailabilityZones") or [""]
    return AutoScalingGroup(
        name=name,
        node_group=tags.get(TAG_NODE_GROUP, name),
        zone=sorted(zones)[0],
        min_size=int(raw["MinSize"]),
        max_size=int(raw["MaxSize"]),
        desired_capacity=int(raw["DesiredCapacity"]),
        launch_template_id=template_id,
        launch_template_version=group_version,
        instances=tuple(instances),
        tags=tags,
    )


def activity_from_describe(raw: Mapping[str, Any]) -> ScalingActivity:
    """One ``DescribeScalingActivities`` entry -> :class:`ScalingActivity` (pure)."""
    started = raw.get("StartTime")
    return ScalingActivity(
        group=raw.get("AutoScalingGroupName", ""),
        activity_id=raw.get("ActivityId", ""),
        status=raw.get("StatusCode", ""),
        description=raw.get("Description", ""),
        status_message=raw.get("StatusMessage", "") or "",
        started_at=started.timestamp() if started is not None else 0.0,
    )


class AwsCloud:
    """:class:`~automation.rollout.ports.CloudPort` over boto3 ``autoscaling`` and ``ec2``."""

    def __init__(
        self,
        *,
        session: Optional[boto3.session.Session] = None,
        profile: Optional[str] = None,
        region: Optional[str] = None,
        endpoint_url: Optional[str] = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        page_size: int = 100,
    ) -> None:
        # AWS_REGION is the SDK-wide variable; botocore itself reads only AWS_DEFAULT_REGION.
        region = region or os.environ.get("AWS_REGION") or None
        session = session or boto3.session.Session(profile_name=profile, region_name=region)
        config = client_config(max_attempts)
        # endpoint_url=None lets botocore apply AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE>.
        self.autoscaling = session.client("autoscaling", config=config, endpoint_url=endpoint_url)
        self.ec2 = session.client("ec2", config=config, endpoint_url=endpoint_url)
        self.page_size = page_size

    # ---- reads ---------------------------------------------------------------------------

    @_port_call
    def list_groups(self, cluster: str) -> list[AutoScalingGroup]:
        raw_groups = list(self._describe_groups(cluster))
        if not raw_groups:
            return []
        details = self._instance_details([g["AutoScalingGroupName"] for g in raw_groups])
        resolved = self._resolve_symbolic_versions(raw_groups)
        return [group_from_describe(raw, details, resolved) for raw in raw_groups]

    def _describe_groups(self, cluster: str) -> Iterator[Mapping[str, Any]]:
        paginator = self.autoscaling.get_paginator("describe_auto_scaling_groups")
        pages = paginator.paginate(
            Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}],
            PaginationConfig={"PageSize": self.page_size},
        )
        for page in pages:
            yield from page["AutoScalingGroups"]

    def _instance_details(self, group_names: Sequence[str]) -> dict[str, tuple[Optional[str], Optional[float]]]:
        """instance id -> (AMI, launch time) for every instance of these groups (AMI drift marks a node old)."""
        details: dict[str, tuple[Optional[str], Optional[float]]] = {}
        paginator = self.ec2.get_paginator("describe_instances")
        for names in _chunks(sorted(group_names), FILTER_VALUES_BATCH):
            pages = paginator.paginate(
                Filters=[{"Name": f"tag:{ASG_NAME_TAG}", "Values": names}],
                PaginationConfig={"PageSize": 1000},
            )
            for page in pages:
                for reservation in page["Reservations"]:
                    for instance in reservation["Instances"]:
                        launched = instance.get("LaunchTime")
                        details[instance["InstanceId"]] = (
                            instance.get("ImageId"), launched.timestamp() if launched is not None else None)
        return details

    def _resolve_symbolic_versions(
        self, raw_groups: Iterable[Mapping[str, Any]]
    ) -> dict[tuple[str, str], tuple[str, Optional[str]]]:
        """(template id, "$Latest"|"$Default") -> (version number, its AMI), read only when needed."""
        wanted: set[str] = set()
        for group in raw_groups:
            specs = [_group_launch_template(group)] + [i.get("LaunchTemplate") for i in group.get("Instances", [])]
            for spec in specs:
                if spec and spec.get("Version") in SYMBOLIC_VERSIONS and spec.get("LaunchTemplateId"):
                    wanted.add(spec["LaunchTemplateId"])
        resolved: dict[tuple[str, str], tuple[str, Optional[str]]] = {}
        for template_id in sorted(wanted):   # one call per launch template (per node group), not per node
            answer = self.ec2.describe_launch_template_versions(
                LaunchTemplateId=template_id, Versions=list(SYMBOLIC_VERSIONS))["LaunchTemplateVersions"]
            if not answer:
                continue
            latest = max(answer, key=lambda v: int(v["VersionNumber"]))
            default = next((v for v in answer if v.get("DefaultVersion")), latest)
            for symbol, version in (("$Latest", latest), ("$Default", default)):
                resolved[(template_id, symbol)] = (
                    str(version["VersionNumber"]), (version.get("LaunchTemplateData") or {}).get("ImageId"))
        return resolved

    @_port_call
    def list_scaling_activities(self, asg: str, since: float) -> list[ScalingActivity]:
        """The group's activities that started at or after ``since``, newest first (AWS returns
        them newest first; the walk stops at the first older one, or after a few pages)."""
        out: list[ScalingActivity] = []
        paginator = self.autoscaling.get_paginator("describe_scaling_activities")
        pages = paginator.paginate(AutoScalingGroupName=asg,
                                   PaginationConfig={"PageSize": 100, "MaxItems": 100 * ACTIVITY_PAGES})
        for page in pages:
            for raw in page.get("Activities", []):
                activity = activity_from_describe(raw)
                if activity.started_at < since:
                    return out
                out.append(activity)
        return out

    # ---- writes --------------------------------------------------------------------------

    @_port_call
    def set_capacity(self, asg: str, *, desired: Optional[int] = None, max_size: Optional[int] = None,
                     raise_only: bool = False) -> None:
        """The group is read back first (one describe of this group): desired is never written
        below the instances it has, nor (``raise_only``) below its current desired, and max never
        below desired. The window in which another writer can slip in shrinks from a reconcile to
        one round trip, and the group's scale-in protection covers that."""
        params: dict[str, Any] = {"AutoScalingGroupName": asg}
        if desired is None and max_size is None:
            return
        groups = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg])["AutoScalingGroups"]
        if groups:
            current = groups[0]
            if desired is not None:
                live = sum(1 for i in current.get("Instances", [])
                           if not str(i.get("LifecycleState", "")).startswith(("Terminating", "Terminated", "Detach")))
                desired = max(int(desired), live, int(current["DesiredCapacity"]) if raise_only else 0)
            # Max never below desired (Auto Scaling refuses it): the one written now, or the current one.
            floor = desired if desired is not None else int(current["DesiredCapacity"])
            wanted_max = max(int(max_size if max_size is not None else current["MaxSize"]), floor)
            max_size = wanted_max if max_size is not None or wanted_max != int(current["MaxSize"]) else None
        if desired is not None:
            params["DesiredCapacity"] = int(desired)
        if max_size is not None:
            params["MaxSize"] = int(max_size)
        if len(params) > 1:
            self.autoscaling.update_auto_scaling_group(**params)

    @_port_call
    def terminate_instance(self, instance_id: str, *, decrement_desired: bool) -> None:
        """Terminate exactly this instance; desired capacity drops in the same call when asked.

        Terminating an instance Auto Scaling no longer manages is a no-op, so a
        rollout that crashed right after this call can repeat it safely.
        """
        try:
            self.autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement_desired
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            message = error.response.get("Error", {}).get("Message", "")
            if code == "ValidationError" and "not found" in message.lower():
                return
            raise

    @_port_call
    def set_launch_template_version(self, asg: str, launch_template_id: str, version: str, *,
                                    expected: Optional[str] = None) -> bool:
        """With ``expected``: written only if the group, read back in this call, still has that
        version (``$Latest``/``$Default`` resolved to a number); False, nothing written, when a newer
        one was set since (a ``pulumi up`` mid-rollout must be followed, never undone). Auto Scaling
        has no conditional update: this narrows the window to one round trip."""
        spec = {"LaunchTemplateId": launch_template_id, "Version": str(version)}
        groups = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg])["AutoScalingGroups"]
        if expected is not None and groups:
            current = _group_launch_template(groups[0]) or {}
            now = str(current.get("Version", "$Default"))
            if now in SYMBOLIC_VERSIONS:
                now = self._resolve_symbolic_versions(groups).get((current.get("LaunchTemplateId"), now), (now,))[0]
            if current.get("LaunchTemplateId") != launch_template_id or now != str(expected):
                return False
        policy = groups[0].get("MixedInstancesPolicy") if groups else None
        if policy:
            # Spot / mixed-instances groups keep their template inside the policy. The policy is
            # written back whole with only the specification changed: overrides and the
            # instances distribution stay exactly as they were.
            policy = dict(policy)
            template = dict(policy.get("LaunchTemplate") or {}, LaunchTemplateSpecification=spec)
            if template.get("Overrides"):
                template["Overrides"] = [_writable_override(o) for o in template["Overrides"]]
            policy["LaunchTemplate"] = template
            self.autoscaling.update_auto_scaling_group(AutoScalingGroupName=asg, MixedInstancesPolicy=policy)
        else:
            self.autoscaling.update_auto_scaling_group(AutoScalingGroupName=asg, LaunchTemplate=spec)
        return True

    @_port_call
    def set_instance_protection(self, asg: str, instance_ids: Sequence[str], protected: bool) -> None:
        """Protect (or unprotect) these instances, 50 a call.

        AWS refuses a whole call when one instance is not InService or Standby (a
        surge instance still Pending, one already Terminating). That instance is
        left out and the rest of its batch sent again: the next snapshot shows it
        unprotected and the engine asks again once it is in service.
        """
        for ids in _chunks(list(instance_ids), PROTECTION_BATCH):
            while ids:
                try:
                    self.autoscaling.set_instance_protection(
                        AutoScalingGroupName=asg, InstanceIds=ids, ProtectedFromScaleIn=protected
                    )
                    break
                except ClientError as error:
                    refused = _instance_not_in_service(error)
                    if refused not in ids:
                        raise
                    ids = [i for i in ids if i != refused]

    @_port_call
    def put_tags(self, asg: str, tags: Mapping[str, str]) -> None:
        if not tags:
            return
        self.autoscaling.create_or_update_tags(
            Tags=[
                {
                    "ResourceId": asg,
                    "ResourceType": "auto-scaling-group",
                    "Key": key,
                    "Value": str(value),
                    "PropagateAtLaunch": False,   # intent belongs to the group, not its instances
                }
                for key, value in tags.items()
            ]
        )

    @_port_call
    def delete_tags(self, asg: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        self.autoscaling.delete_tags(
            Tags=[{"ResourceId": asg, "ResourceType": "auto-scaling-group", "Key": key} for key in keys]
        )
