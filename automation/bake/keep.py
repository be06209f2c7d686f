"""``--keep N``: deregister older kiln AMIs and their snapshots, never one in use or needed.

An AMI is *in use* when a launch-template version that something may still boot
references it: any version an Auto Scaling group points at (``$Latest`` and
``$Default`` resolved), the version any group instance was launched from, and
each template's default and latest version. Images of running instances are kept
too. An AMI is *needed* when a rollback could go back to it — the image each
launch template booted right before each time its current image came in (so a
restore's ``Z, A, B, A`` history keeps Z) — when it is shared: with another
account or made public (deregistering it would break their launches) — or when
it is younger than the sweep bound (a rotation still running may have baked it
and not yet put it on a launch template). Which AMIs to delete is decided
by :func:`choose_to_delete`, a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

from .recipe import TAG_RECIPE


@dataclass(frozen=True)
class KilnImage:
    ami_id: str
    created: str
    snapshots: tuple[str, ...]


def choose_to_delete(images: Iterable[KilnImage], keep: int, in_use: set[str]) -> list[KilnImage]:
    """The kiln images older than the newest ``keep`` that nothing uses. Pure."""
    newest_first = sorted(images, key=lambda i: i.created, reverse=True)
    return [i for i in newest_first[keep:] if i.ami_id not in in_use]


def list_kiln_images(ec2: Any) -> list[KilnImage]:
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag-key", "Values": [TAG_RECIPE]}])["Images"]
    return [KilnImage(i["ImageId"], i.get("CreationDate", ""),
                      tuple(m["Ebs"]["SnapshotId"] for m in i.get("BlockDeviceMappings", [])
                            if m.get("Ebs", {}).get("SnapshotId")))
            for i in images]


def amis_in_use(ec2: Any, autoscaling: Any) -> set[str]:
    wanted: dict[str, set[str]] = {}  # launch template id -> versions ("$Latest" etc. allowed)

    def want(spec: dict | None, version: str | None = None) -> None:
        if not spec or not spec.get("LaunchTemplateId"):
            return
        wanted.setdefault(spec["LaunchTemplateId"], set()).add(str(version or spec.get("Version") or "$Default"))

    for page in autoscaling.get_paginator("describe_auto_scaling_groups").paginate():
        for g in page["AutoScalingGroups"]:
            want(g.get("LaunchTemplate"))
            mip = (g.get("MixedInstancesPolicy") or {}).get("LaunchTemplate", {}).get("LaunchTemplateSpecification")
            want(mip)
            for inst in g.get("Instances", []):
                want(inst.get("LaunchTemplate"))
    for page in ec2.get_paginator("describe_launch_templates").paginate():
        for lt in page["LaunchTemplates"]:
            wanted.setdefault(lt["LaunchTemplateId"], set()).update({"$Default", "$Latest"})

    used: set[str] = set()
    for lt_id, versions in wanted.items():
        resp = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=sorted(versions))
        for v in resp["LaunchTemplateVersions"]:
            image = v.get("LaunchTemplateData", {}).get("ImageId")
            if image:
                used.add(image)
    for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]):
        for r in page["Reservations"]:
            used.update(i["ImageId"] for i in r["Instances"] if i.get("ImageId"))
    return used


def rollback_targets(ec2: Any) -> set[str]:
    """Per launch template, its current image and every image it booted right before the current one came in.

    Not only the image just before: after a failed rotation was restored the history reads ``Z, A, B, A`` (A was
    rotated in from Z, B failed and A was put back), and ``rollback`` goes back to Z, the image the last *finished*
    rotation replaced; B (what a second rollback goes to) is kept as well."""
    targets: set[str] = set()
    for page in ec2.get_paginator("describe_launch_templates").paginate():
        for lt in page["LaunchTemplates"]:
            versions = ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"])
            images = [v.get("LaunchTemplateData", {}).get("ImageId")
                      for v in sorted(versions["LaunchTemplateVersions"], key=lambda v: v["VersionNumber"])]
            history = [i for n, i in enumerate(images) if i and (n == 0 or i != images[n - 1])]
            if not history:
                continue
            current = history[-1]
            targets.add(current)
            targets.update(history[n - 1] for n, image in enumerate(history) if image == current and n > 0)
    return targets


def young(images: Iterable[KilnImage], min_age_seconds: float, now: float) -> set[str]:
    """Images created less than ``min_age_seconds`` ago: maybe the target of a rotation still running (baked, not
    yet on a launch template), which nothing else here can see."""
    from datetime import datetime

    out = set()
    for image in images:
        try:
            created = datetime.fromisoformat(image.created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            out.add(image.ami_id)   # an age it cannot read: keep it
            continue
        if now - created < min_age_seconds:
            out.add(image.ami_id)
    return out


def shared(ec2: Any, images: Iterable[KilnImage]) -> set[str]:
    """Images with launch permissions for another account or the public."""
    out = set()
    for image in images:
        perms = ec2.describe_image_attribute(ImageId=image.ami_id, Attribute="launchPermission")
        if perms.get("LaunchPermissions"):
            out.add(image.ami_id)
    return out


def prune(ec2: Any, autoscaling: Any, keep: int, protect: Iterable[str] = (), *, min_age_seconds: float = 0,
          now: Optional[float] = None) -> list[str]:
    """Deregister kiln AMIs beyond the newest ``keep`` that are not in use, not a rollback target, not shared and
    not younger than ``min_age_seconds``; delete their snapshots."""
    import time

    if keep < 1:
        raise ValueError("--keep must be >= 1")
    images = list_kiln_images(ec2)
    in_use = amis_in_use(ec2, autoscaling) | rollback_targets(ec2) | set(protect) | \
        young(images, min_age_seconds, time.time() if now is None else now)
    candidates = choose_to_delete(images, keep, in_use)
    others = shared(ec2, candidates)    # one DescribeImageAttribute per candidate, not per image
    doomed = [i for i in candidates if i.ami_id not in others]
    for image in doomed:
        ec2.deregister_image(ImageId=image.ami_id)
        for snap in image.snapshots:
            ec2.delete_snapshot(SnapshotId=snap)
    return [i.ami_id for i in doomed]
