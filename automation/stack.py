"""The stack seam: the few stack operations a rotation needs.

``PulumiStack`` is a thin layer over ``pulumi.automation`` on this project
directory (select stack, set config, preview with an event callback, up,
outputs). ``StandInStack`` is used only when the ``pulumi`` CLI is not on PATH
(a fresh machine, ``make demo``): it applies the *same launch-template change*
with boto3 — a new launch-template version with the new AMI, each ASG pointed at
it — keeps config in ``Pulumi.<stack>.yaml`` like Pulumi's local config, derives
outputs from the tagged ASGs, and synthesises preview events for the gate from
the difference between config and AWS. It is not Pulumi and says so loudly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol

from pulumi.automation import events as ev

from automation.rollout.model import TAG_CLUSTER, TAG_NODE_GROUP

OnEvent = Callable[[ev.EngineEvent], None]
PROJECT_DIR = Path(__file__).resolve().parent.parent
TAG_AMI_FAMILY = "kiln.dev/ami-family"
STAND_IN_NOTICE = (
    "STAND-IN: the pulumi CLI is not on PATH, so the stack steps run through kiln's boto3 stand-in. "
    "It applies the same launch-template change (new LT version with the new AMI, ASGs pointed at it) "
    "and keeps config in Pulumi.<stack>.yaml; it does NOT run the Pulumi program or its engine. "
    "Install the pulumi CLI to use the real Automation API."
)


class StackSeam(Protocol):
    name: str
    kind: str  # "pulumi" | "stand-in"

    def get_config(self, key: str) -> Optional[str]: ...

    def set_config(self, values: Mapping[str, str]) -> None: ...

    # refresh=True: read the live resources first, so drift (e.g. what a node replacement changed) shows.
    def preview(self, on_event: OnEvent, *, refresh: bool = False) -> None: ...

    def up(self, on_event: Optional[OnEvent] = None, *, refresh: bool = False) -> dict[str, Any]: ...

    def outputs(self) -> dict[str, Any]: ...


def pulumi_cli_available() -> bool:
    return shutil.which("pulumi") is not None


def open_stack(name: str, work_dir: Path | str = PROJECT_DIR, *, session: Any = None,
               stand_in: Optional[bool] = None, on_output: Optional[Callable[[str], None]] = None) -> StackSeam:
    """The real Automation API when the CLI is present, else the labelled stand-in."""
    if stand_in is None:
        stand_in = not pulumi_cli_available()
    return StandInStack(name, work_dir, session=session) if stand_in else PulumiStack(name, work_dir,
                                                                                       on_output=on_output)


# --------------------------------------------------------------------------- real


class PulumiStack:
    kind = "pulumi"

    def __init__(self, name: str, work_dir: Path | str = PROJECT_DIR, *,
                 on_output: Optional[Callable[[str], None]] = None):
        from pulumi import automation as auto

        self.name = name
        self._auto = auto
        self._on_output = on_output  # the engine's progress lines while preview/up run
        self._stack = auto.select_stack(stack_name=name, work_dir=str(work_dir))

    def get_config(self, key: str) -> Optional[str]:
        try:
            return self._stack.get_config(key).value
        except self._auto.CommandError:
            return None

    def set_config(self, values: Mapping[str, str]) -> None:
        self._stack.set_all_config({k: self._auto.ConfigValue(value=v) for k, v in values.items()})

    def preview(self, on_event: OnEvent, *, refresh: bool = False) -> None:
        self._stack.preview(on_event=on_event, diff=True, refresh=refresh, on_output=self._on_output)

    def up(self, on_event: Optional[OnEvent] = None, *, refresh: bool = False) -> dict[str, Any]:
        result = self._stack.up(on_event=on_event, refresh=refresh, on_output=self._on_output)
        return plain_outputs(result.outputs)

    def outputs(self) -> dict[str, Any]:
        return plain_outputs(self._stack.outputs())


def plain_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Stack outputs without their ``OutputValue`` wrappers; secrets arrive in plaintext (``--show-secrets``)."""
    return {k: v.value for k, v in outputs.items()}


# --------------------------------------------------------------------------- stand-in


def desired_amis(node_ami: Optional[str]) -> dict[str, str]:
    """``kiln:nodeAmi`` as family -> AMI (a plain id means every family)."""
    if not node_ami:
        return {}
    text = node_ami.strip()
    if text.startswith("{"):
        return dict(json.loads(text))
    return {"standard": text}


class StandInStack:
    """Not Pulumi: the launch-template change of a rotation, applied with boto3."""

    kind = "stand-in"
    notice = STAND_IN_NOTICE

    def __init__(self, name: str, work_dir: Path | str = PROJECT_DIR, *, session: Any = None):
        import boto3
        from botocore.config import Config

        self.name = name
        self.path = Path(work_dir) / f"Pulumi.{name}.yaml"
        session = session or boto3.Session()
        cfg = Config(retries={"mode": "adaptive", "max_attempts": 10})
        self.ec2 = session.client("ec2", config=cfg)
        self.autoscaling = session.client("autoscaling", config=cfg)
        self._seq = 0

    # config ------------------------------------------------------------------
    def _doc(self) -> dict[str, Any]:
        import yaml

        if not self.path.exists():
            raise FileNotFoundError(f"stack config {self.path} does not exist (stand-in keeps config there)")
        return yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}

    def get_config(self, key: str) -> Optional[str]:
        value = (self._doc().get("config") or {}).get(key)
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True)

    def set_config(self, values: Mapping[str, str]) -> None:
        import yaml

        doc = self._doc()
        config = doc.setdefault("config", {})
        for k, v in values.items():
            config[k] = json.loads(v) if isinstance(v, str) and v.strip().startswith("{") else v
        tmp = self.path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        tmp.replace(self.path)

    # the world -----------------------------------------------------------------
    def _cluster(self) -> str:
        cluster = self.get_config("kiln:clusterName")
        if not cluster:
            raise ValueError(f"kiln:clusterName is not set in {self.path}")
        return cluster

    def _groups(self) -> list[dict[str, Any]]:
        cluster = self._cluster()
        groups = []
        for page in self.autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
                Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]):
            groups.extend(page["AutoScalingGroups"])
        return sorted(groups, key=lambda g: g["AutoScalingGroupName"])

    @staticmethod
    def _tags(group: dict[str, Any]) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in group.get("Tags", [])}

    def _latest(self, lt_id: str) -> dict[str, Any]:
        return self.ec2.describe_launch_template_versions(
            LaunchTemplateId=lt_id, Versions=["$Latest"])["LaunchTemplateVersions"][0]

    def _plan(self) -> list[dict[str, Any]]:
        """Per ASG: what the launch-template change must do (pure read)."""
        amis = desired_amis(self.get_config("kiln:nodeAmi"))
        plan = []
        for g in self._groups():
            spec = g.get("LaunchTemplate") or {}
            lt_id = spec.get("LaunchTemplateId")
            if not lt_id:
                continue
            family = self._tags(g).get(TAG_AMI_FAMILY, "standard")
            want = amis.get(family) or amis.get("standard")
            latest = self._latest(lt_id)
            plan.append({
                "asg": g["AutoScalingGroupName"], "lt_id": lt_id,
                "lt_name": latest.get("LaunchTemplateName", lt_id), "want_ami": want,
                "latest_version": str(latest["VersionNumber"]),
                "latest_ami": latest.get("LaunchTemplateData", {}).get("ImageId"),
                "asg_version": str(spec.get("Version")), "group": g,
            })
        return plan

    def _event(self, op: str, type_: str, name: str, diffs: list[str]) -> ev.EngineEvent:
        self._seq += 1
        urn = f"urn:pulumi:{self.name}::kiln::{type_}::{name}"
        return ev.EngineEvent.from_json({"sequence": self._seq, "timestamp": 0, "resourcePreEvent": {"metadata": {
            "op": op, "urn": urn, "type": type_, "provider": "kiln-stand-in", "diffs": diffs,
            "detailedDiff": {d: {"diffKind": "update", "inputDiff": True} for d in diffs}}}})

    def preview(self, on_event: OnEvent, *, refresh: bool = False) -> None:
        # Always reads AWS, so it is always "refreshed".
        seen_lts: set[str] = set()
        for p in self._plan():
            lt_changes = p["want_ami"] and p["latest_ami"] != p["want_ami"]
            if p["lt_id"] not in seen_lts:
                seen_lts.add(p["lt_id"])
                on_event(self._event("update" if lt_changes else "same", "aws:ec2/launchTemplate:LaunchTemplate",
                                     p["lt_name"], ["imageId"] if lt_changes else []))
            asg_changes = lt_changes or p["asg_version"] != p["latest_version"]
            on_event(self._event("update" if asg_changes else "same", "aws:autoscaling/group:Group", p["asg"],
                                 ["launchTemplate"] if asg_changes else []))

    def up(self, on_event: Optional[OnEvent] = None, *, refresh: bool = False) -> dict[str, Any]:
        if on_event is not None:
            self.preview(on_event)
        model_version = self.get_config("kiln:modelVersion") or ""
        new_versions: dict[str, str] = {}
        for p in self._plan():
            if not p["want_ami"]:
                continue
            target = new_versions.get(p["lt_id"])
            if target is None:
                if p["latest_ami"] == p["want_ami"]:
                    target = p["latest_version"]
                else:
                    created = self.ec2.create_launch_template_version(
                        LaunchTemplateId=p["lt_id"], SourceVersion=p["latest_version"],
                        VersionDescription=f"kiln model {model_version}"[:255],
                        LaunchTemplateData={"ImageId": p["want_ami"]})
                    target = str(created["LaunchTemplateVersion"]["VersionNumber"])
                    self.ec2.modify_launch_template(LaunchTemplateId=p["lt_id"], DefaultVersion=target)
                new_versions[p["lt_id"]] = target
            if p["asg_version"] != target:
                self.autoscaling.update_auto_scaling_group(
                    AutoScalingGroupName=p["asg"], LaunchTemplate={"LaunchTemplateId": p["lt_id"], "Version": target})
        return self.outputs()

    def _instance_profile(self, lt_id: str) -> Optional[str]:
        """The newest version's instance profile (emulators may not copy it into new versions)."""
        versions = self.ec2.describe_launch_template_versions(LaunchTemplateId=lt_id)["LaunchTemplateVersions"]
        for v in sorted(versions, key=lambda v: v["VersionNumber"], reverse=True):
            name = (v.get("LaunchTemplateData", {}).get("IamInstanceProfile") or {}).get("Name")
            if name:
                return name
        return None

    def outputs(self) -> dict[str, Any]:
        node_groups: dict[str, list[dict[str, str]]] = {}
        subnets: list[str] = []
        profile = None
        for g in self._groups():
            tags = self._tags(g)
            spec = g.get("LaunchTemplate") or {}
            node_groups.setdefault(tags.get(TAG_NODE_GROUP, g["AutoScalingGroupName"]), []).append({
                "zone": (g.get("AvailabilityZones") or [""])[0], "asgName": g["AutoScalingGroupName"],
                "launchTemplateId": spec.get("LaunchTemplateId", "")})
            subnets.extend(s for s in (g.get("VPCZoneIdentifier") or "").split(",") if s and s not in subnets)
            if profile is None and spec.get("LaunchTemplateId"):
                profile = self._instance_profile(spec["LaunchTemplateId"])
        return {"clusterName": self._cluster(), "nodeGroups": node_groups,
                "nodeAmi": self.get_config("kiln:nodeAmi"), "modelVersion": self.get_config("kiln:modelVersion"),
                "privateSubnetIds": subnets, "nodeInstanceProfile": profile}
