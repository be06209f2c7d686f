"""``--keep N``: deregister older kiln AMIs and their snapshots, never one in use or needed.

An AMI is *in use* when a launch-template version that something may still boot
references it: any version an Auto Scaling group points at (``$Latest`` and
``$Default`` resolved), the version any group instance was launched from, and
each template's default and latest version. Images of running instances are kept
too. An AMI is *needed* when a rollback could go back to it — the image each
launch template used before its current one (its newest versions read back until
the image changes) — or when it is shared: with another account or made public
(deregistering it would break their launches). Which AMIs to delete is decided
by :func:`choose_to_delete`, a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

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
    """Per launch template, the image it booted before its current one (what `rollback` goes back to)."""
    targets: set[str] = set()
    for page in ec2.get_paginator("describe_launch_templates").paginate():
        for lt in page["LaunchTemplates"]:
            versions = ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"])
            images = [v.get("LaunchTemplateData", {}).get("ImageId")
                      for v in sorted(versions["LaunchTemplateVersions"], key=lambda v: v["VersionNumber"], reverse=True)]
            distinct = list(dict.fromkeys(i for i in images if i))
            targets.update(distinct[:2])   # the current image and the one before it
    return targets


def shared(ec2: Any, images: Iterable[KilnImage]) -> set[str]:
    """Images with launch permissions for another account or the public."""
    out = set()
    for image in images:
        perms = ec2.describe_image_attribute(ImageId=image.ami_id, Attribute="launchPermission")
        if perms.get("LaunchPermissions"):
            out.add(image.ami_id)
    return out


def prune(ec2: Any, autoscaling: Any, keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Deregister kiln AMIs beyond the newest ``keep`` that are not in use, not a rollback target and not
    shared; delete their snapshots."""
    if keep < 1:
        raise ValueError("--keep must be >= 1")
    images = list_kiln_images(ec2)
    in_use = amis_in_use(ec2, autoscaling) | rollback_targets(ec2) | set(protect)
    candidates = choose_to_delete(images, keep, in_use)
    others = shared(ec2, candidates)    # one DescribeImageAttribute per candidate, not per image
    doomed = [i for i in candidates if i.ami_id not in others]
    for image in doomed:
        ec2.deregister_image(ImageId=image.ami_id)
        for snap in image.snapshots:
            ec2.delete_snapshot(SnapshotId=snap)
    return [i.ami_id for i in doomed]
