"""The stack seam: the few stack operations a rotation needs.

``PulumiStack`` is a thin layer over ``pulumi.automation`` on this project
directory: select the stack (a plain or a fully-qualified ``org/project/stack``
name), read its whole config at once (so "not set" and "could not read" are
different things), write ``kiln:nodeAmi`` in the shape it has (an id, or a
family map kept as a YAML map through ``--path`` keys), preview with an event
callback, the policy pack and a saved update plan, ``up`` that applies exactly
that plan, and outputs.

``StandInStack`` is used only when the ``pulumi`` CLI is not on PATH (a fresh
machine, ``make demo``): it applies the *same launch-template change* with
boto3 — a new launch-template version with the new AMI, each ASG pointed at
it — keeps config in ``Pulumi.<stack>.yaml`` like Pulumi's local config,
derives outputs from the tagged ASGs, and synthesises preview events (with the
engine's change summary) for the gate from the difference between config and
AWS. It is not Pulumi and says so loudly.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Union

from pulumi.automation import events as ev

from automation.gate import UNKNOWN
from infra.labels import TAG_AMI_FAMILY, TAG_CLUSTER, TAG_NODE_GROUP

OnEvent = Callable[[ev.EngineEvent], None]
ConfigSetting = Union[str, Mapping[str, str]]
PROJECT_DIR = Path(__file__).resolve().parent.parent
UPSERT_ENV = "PULUMI_K8S_UPSERT_EXISTING_OBJECTS"
STAND_IN_NOTICE = (
    "STAND-IN: the pulumi CLI is not on PATH, so the stack steps run through kiln's boto3 stand-in. "
    "It applies the same launch-template change (new LT version with the new AMI, ASGs pointed at it) "
    "and keeps config in Pulumi.<stack>.yaml; it does NOT run the Pulumi program, its engine or the policy pack. "
    "Install the pulumi CLI to use the real Automation API."
)
_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")


class ConfigReadError(RuntimeError):
    """The stack's config could not be read (not the same as a key that is not set)."""


class StackSeam(Protocol):
    name: str            # as given: "prod" or "org/project/prod"
    kind: str            # "pulumi" | "stand-in"
    stack_file: Path     # Pulumi.<short name>.yaml
    supports_plans: bool
    policy_packs: tuple[str, ...]   # pack names the engine's summary must list

    def all_config(self) -> dict[str, str]: ...

    def get_config(self, key: str) -> Optional[str]: ...

    def set_config(self, values: Mapping[str, ConfigSetting]) -> None: ...

    # refresh=True: read the live resources first, so drift (e.g. what a node replacement changed) shows.
    # plan: where to save the update plan. Returns the engine events the SDK could not parse (dropped).
    def preview(self, on_event: OnEvent, *, refresh: bool = False, plan: Optional[str] = None,
                adopt_model_volume: bool = False) -> list[str]: ...

    def up(self, *, refresh: bool = False, plan: Optional[str] = None,
           adopt_model_volume: bool = False) -> dict[str, Any]: ...

    def outputs(self) -> dict[str, Any]: ...


def short_name(stack: str) -> str:
    """The stack part of ``org/project/stack`` (what ``Pulumi.<stack>.yaml`` is named after)."""
    return stack.rsplit("/", 1)[-1]


def valid_stack_name(stack: str) -> bool:
    return bool(_STACK_NAME.fullmatch(stack or ""))


def stack_file(work_dir: Path | str, stack: str) -> Path:
    return Path(work_dir) / f"Pulumi.{short_name(stack)}.yaml"


def pulumi_cli_available() -> bool:
    return shutil.which("pulumi") is not None


def open_stack(name: str, work_dir: Path | str = PROJECT_DIR, *, session: Any = None,
               stand_in: Optional[bool] = None, on_output: Optional[Callable[[str], None]] = None) -> StackSeam:
    """The real Automation API when the CLI is present, else the labelled stand-in."""
    if stand_in is None:
        stand_in = not pulumi_cli_available()
    return StandInStack(name, work_dir, session=session) if stand_in else PulumiStack(name, work_dir,
                                                                                       on_output=on_output)


def desired_amis(node_ami: Optional[str]) -> dict[str, str]:
    """``kiln:nodeAmi`` (config text) as family -> AMI (a plain id means every family)."""
    if not node_ami:
        return {}
    text = node_ami.strip() if isinstance(node_ami, str) else node_ami
    if isinstance(text, Mapping):
        return dict(text)
    if text.startswith("{"):
        return dict(json.loads(text))
    return {"standard": text}


def is_family_map(node_ami: Optional[str]) -> bool:
    return isinstance(node_ami, str) and node_ami.strip().startswith("{")


def setting_of(node_ami: str) -> ConfigSetting:
    """Config text -> what ``set_config`` writes: the map itself for a family map, else the id."""
    return desired_amis(node_ami) if is_family_map(node_ami) else node_ami


# The SDK warns (and drops the event) when it cannot parse an engine event; the gate must know.
_DROPPED = re.compile(r"^(Failed to parse engine event|Error in event stream)")
_capture_lock = threading.Lock()


@contextlib.contextmanager
def capture_dropped_events() -> Iterator[list[str]]:
    """Collect the SDK's "Failed to parse engine event" warnings raised while the block runs (any thread:
    the SDK parses events on its gRPC server's threads); other warnings are shown as usual."""
    dropped: list[str] = []
    with _capture_lock, warnings.catch_warnings():   # catch_warnings restores showwarning and the filters
        original = warnings.showwarning
        warnings.simplefilter("always")

        def show(message, category, filename, lineno, file=None, line=None):
            if _DROPPED.match(str(message)):
                dropped.append(str(message))
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield dropped


# --------------------------------------------------------------------------- real


class PulumiStack:
    kind = "pulumi"
    supports_plans = True

    def __init__(self, name: str, work_dir: Path | str = PROJECT_DIR, *,
                 on_output: Optional[Callable[[str], None]] = None):
        from pulumi import automation as auto

        self.name = name
        self.work_dir = Path(work_dir)
        self.stack_file = stack_file(work_dir, name)
        self._auto = auto
        self._on_output = on_output  # the engine's progress lines while preview/up run
        self._stack = auto.select_stack(stack_name=name, work_dir=str(work_dir))
        self._pack_dir = self.work_dir / "policies"
        from policies.pack import PACK_NAME

        self.policy_packs = (PACK_NAME,)

    # config --------------------------------------------------------------------
    def all_config(self) -> dict[str, str]:
        try:
            config = self._stack.get_all_config()
        except self._auto.CommandError as exc:
            raise ConfigReadError(f"could not read the config of stack {self.name}: {_first_error_line(exc)}") from None
        return {k: v.value for k, v in config.items()}

    def get_config(self, key: str) -> Optional[str]:
        try:
            return self.all_config().get(key)
        except ConfigReadError as exc:
            raise ConfigReadError(f"{key}: {exc}") from None

    def set_config(self, values: Mapping[str, ConfigSetting]) -> None:
        current = self.all_config()
        scalars = {k: self._auto.ConfigValue(value=v) for k, v in values.items() if isinstance(v, str)}
        maps = {k: v for k, v in values.items() if not isinstance(v, str)}
        for key in values:
            # A change of shape (id <-> family map) replaces the key; so does a map losing a family (a rollback to
            # a map without it): setting the others by path would leave the stale family's AMI in place.
            if key in current and (is_family_map(current[key]) != (key in maps) or (
                    key in maps and set(desired_amis(current[key])) - set(maps[key]))):
                self._stack.remove_config(key)
        if scalars:
            self._stack.set_all_config(scalars)
        if maps:
            # --path keeps the map a YAML map in Pulumi.<stack>.yaml (not a JSON string).
            self._stack.set_all_config({f"{k}.{family}": self._auto.ConfigValue(value=ami)
                                        for k, m in maps.items() for family, ami in sorted(m.items())}, path=True)

    # operations ------------------------------------------------------------------
    @contextlib.contextmanager
    def _upsert(self, on: bool) -> Iterator[None]:
        """PULUMI_K8S_UPSERT_EXISTING_OBJECTS for this command only: adopt the retained model PV/PVC."""
        env = self._stack.workspace.env_vars
        before = env.get(UPSERT_ENV)
        if on:
            env[UPSERT_ENV] = "true"
        else:
            env.pop(UPSERT_ENV, None)
        try:
            yield
        finally:
            if before is None:
                env.pop(UPSERT_ENV, None)
            else:
                env[UPSERT_ENV] = before

    def preview(self, on_event: OnEvent, *, refresh: bool = False, plan: Optional[str] = None,
                adopt_model_volume: bool = False) -> list[str]:
        with self._upsert(adopt_model_volume), capture_dropped_events() as dropped:
            self._stack.preview(on_event=on_event, diff=True, refresh=refresh, on_output=self._on_output,
                                policy_packs=[str(self._pack_dir)], plan=plan)
        return dropped

    def up(self, *, refresh: bool = False, plan: Optional[str] = None,
           adopt_model_volume: bool = False) -> dict[str, Any]:
        with self._upsert(adopt_model_volume):
            result = self._stack.up(refresh=refresh, on_output=self._on_output, policy_packs=[str(self._pack_dir)],
                                    plan=plan)
        return plain_outputs(result.outputs)

    def outputs(self) -> dict[str, Any]:
        return plain_outputs(self._stack.outputs())


def _first_error_line(exc: BaseException) -> str:
    """The CLI's own error line (``error: ...`` on stderr) of a CommandError, else its text, on one line."""
    text = str(exc)
    stderr = text.split(" stderr: ", 1)[1] if " stderr: " in text else text
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors[0] if errors else lines[0] if lines else type(exc).__name__)[:300]


def plain_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Stack outputs without their ``OutputValue`` wrappers; secrets arrive in plaintext (``--show-secrets``)."""
    return {k: v.value for k, v in outputs.items()}


# --------------------------------------------------------------------------- stand-in


class StandInStack:
    """Not Pulumi: the launch-template change of a rotation, applied with boto3."""

    kind = "stand-in"
    notice = STAND_IN_NOTICE
    supports_plans = False
    policy_packs: tuple[str, ...] = ()

    def __init__(self, name: str, work_dir: Path | str = PROJECT_DIR, *, session: Any = None):
        import boto3
        from botocore.config import Config

        self.name = name
        self.path = self.stack_file = stack_file(work_dir, name)
        session = session or boto3.Session(region_name=self._region_from_file())
        cfg = Config(retries={"mode": "adaptive", "max_attempts": 10})
        self.session = session
        self.ec2 = session.client("ec2", config=cfg)
        self.autoscaling = session.client("autoscaling", config=cfg)
        self.iam = session.client("iam", config=cfg)
        self._seq = 0

    # config ------------------------------------------------------------------
    def _region_from_file(self) -> Optional[str]:
        try:
            region = (self._doc().get("config") or {}).get("aws:region")
        except (FileNotFoundError, ConfigReadError):
            return None
        return region if isinstance(region, str) and region else None

    def _doc(self) -> dict[str, Any]:
        import yaml

        if not self.path.exists():
            raise FileNotFoundError(f"stack config {self.path} does not exist (stand-in keeps config there)")
        try:
            doc = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigReadError(f"could not read {self.path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("config") or {}, dict):
            raise ConfigReadError(f"could not read {self.path}: 'config' is not a mapping")
        return doc

    def all_config(self) -> dict[str, str]:
        out = {}
        for key, value in (self._doc().get("config") or {}).items():
            out[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return out

    def get_config(self, key: str) -> Optional[str]:
        return self.all_config().get(key)

    def set_config(self, values: Mapping[str, ConfigSetting]) -> None:
        import yaml

        doc = self._doc()
        config = doc.setdefault("config", {})
        for k, v in values.items():
            config[k] = dict(v) if not isinstance(v, str) else v
        tmp = self.path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        tmp.replace(self.path)

    # the world -----------------------------------------------------------------
    def _cluster(self) -> str:
        cluster = self.get_config("kiln:clusterName")
        if not cluster:
            raise ConfigReadError(f"kiln:clusterName is not set in {self.path}")
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

    def _event(self, op: str, type_: str, name: str, old: dict, new: dict, paths: list[str]) -> ev.EngineEvent:
        self._seq += 1
        urn = f"urn:pulumi:{short_name(self.name)}::kiln::{type_}::{name}"
        state = lambda inputs: {"type": type_, "urn": urn, "id": name, "parent": "", "provider": "kiln-stand-in",  # noqa: E731
                                "custom": True, "inputs": inputs, "outputs": inputs}
        return ev.EngineEvent.from_json({"sequence": self._seq, "timestamp": 0, "resourcePreEvent": {"metadata": {
            "op": op, "urn": urn, "type": type_, "provider": "kiln-stand-in", "old": state(old), "new": state(new),
            "diffs": sorted({p.split(".")[0] for p in paths}),
            "detailedDiff": {p: {"diffKind": "update", "inputDiff": True} for p in paths}}}})

    def preview(self, on_event: OnEvent, *, refresh: bool = False, plan: Optional[str] = None,
                adopt_model_volume: bool = False) -> list[str]:
        # Always reads AWS, so it is always "refreshed"; the summary counts the steps it reports, as the engine does.
        from collections import Counter

        counts: Counter[str] = Counter()
        seen_lts: set[str] = set()
        for p in self._plan():
            lt_changes = bool(p["want_ami"]) and p["latest_ami"] != p["want_ami"]
            if p["lt_id"] not in seen_lts:
                seen_lts.add(p["lt_id"])
                op = "update" if lt_changes else "same"
                counts[op] += 1
                on_event(self._event(op, "aws:ec2/launchTemplate:LaunchTemplate", p["lt_name"],
                                     {"imageId": p["latest_ami"]},
                                     {"imageId": p["want_ami"] if lt_changes else p["latest_ami"]},
                                     ["imageId"] if lt_changes else []))
            asg_changes = lt_changes or p["asg_version"] != p["latest_version"]
            op = "update" if asg_changes else "same"
            counts[op] += 1
            # The engine's unknown sentinel, as a real preview shows the version a new template version gets.
            target = (UNKNOWN if lt_changes else p["latest_version"]) if asg_changes else p["asg_version"]
            on_event(self._event(op, "aws:autoscaling/group:Group", p["asg"],
                                 {"launchTemplate": {"id": p["lt_id"], "version": p["asg_version"]}},
                                 {"launchTemplate": {"id": p["lt_id"], "version": target}},
                                 ["launchTemplate.version"] if asg_changes else []))
        self._seq += 1
        on_event(ev.EngineEvent.from_json({"sequence": self._seq, "timestamp": 0, "summaryEvent": {
            "maybeCorrupt": False, "durationSeconds": 0, "resourceChanges": dict(counts), "PolicyPacks": {}}}))
        return []

    def up(self, *, refresh: bool = False, plan: Optional[str] = None,
           adopt_model_volume: bool = False) -> dict[str, Any]:
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

    def _builder_profile(self, cluster: str) -> Optional[str]:
        """The program's builder instance profile; the stand-in finds it by its name, ``<cluster>-builder``."""
        try:
            return self.iam.get_instance_profile(InstanceProfileName=f"{cluster}-builder")["InstanceProfile"][
                "InstanceProfileName"]
        except self.iam.exceptions.NoSuchEntityException:
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
        cluster = self._cluster()
        out = {"clusterName": cluster, "nodeGroups": node_groups,
               "nodeAmi": self.get_config("kiln:nodeAmi"), "modelVersion": self.get_config("kiln:modelVersion"),
               "privateSubnetIds": subnets, "nodeInstanceProfile": profile}
        builder = self._builder_profile(cluster)
        if builder:
            out["builderInstanceProfile"] = builder
        return out


def kiln_config(config: Mapping[str, str]) -> Any:
    """The stack's ``kiln:`` config, validated against its region (``infra.config.KilnConfig``; raises
    ``ConfigError`` naming keys), exactly as the program validates it."""
    from infra.config import NAMESPACE, parse

    return parse({k: v for k, v in config.items() if str(k).startswith(NAMESPACE + ":")}, region=stack_region(config))


def stack_region(config: Mapping[str, str]) -> Optional[str]:
    """The stack's ``aws:region``, else the standard AWS environment (as the aws provider itself falls back):
    ``infra.config.stack_region``, the one definition."""
    from infra.config import stack_region as region_of

    region = config.get("aws:region")
    return region_of({"aws:region": region if isinstance(region, str) else None})
