"""``--keep N``: deregister older kiln AMIs and their snapshots, never one in use.

An AMI is *in use* when a launch-template version that something may still boot
references it: any version an Auto Scaling group points at (``$Latest`` and
``$Default`` resolved), the version any group instance was launched from, and
each template's default and latest version. Images of running instances are kept
too. Which AMIs to delete is decided by :func:`choose_to_delete`, a pure function.
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


def prune(ec2: Any, autoscaling: Any, keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Deregister kiln AMIs beyond the newest ``keep`` that are not in use; delete their snapshots."""
    if keep < 1:
        raise ValueError("--keep must be >= 1")
    in_use = amis_in_use(ec2, autoscaling) | set(protect)
    doomed = choose_to_delete(list_kiln_images(ec2), keep, in_use)
    for image in doomed:
        ec2.deregister_image(ImageId=image.ami_id)
        for snap in image.snapshots:
            ec2.delete_snapshot(SnapshotId=snap)
    return [i.ami_id for i in doomed]
