"""A strict fake of the stack seam: Pulumi state, a preview that speaks the engine's events, a fleet.

``FakeStack`` keeps what the *runner* has (the stack file's config) apart from
what is *deployed* (the engine's state, read back as stack outputs), as the
real world does. Its preview emits what the engine emits for kiln's program
(see ``tests/_engine_events.py`` for the program-derived version): launch
templates and ASGs updated with their old and new inputs, the model
PersistentVolume/claim replaced (``retainOnDelete``), the Kubernetes provider's
``upsertExistingObjects`` when adoption is switched on, and the change summary
with the policy pack that ran. It saves an update plan; ``up`` refuses to run
with a plan that does not match what it would do. A refresh reads the groups' live
max size back (``drift_max``: set by something outside Pulumi after every up), so a
refreshed preview can still show changes after the converge's up. Its Kubernetes objects are
those of the model volumes: creating one that exists fails with AlreadyExists
unless the apply adopts (``PULUMI_K8S_UPSERT_EXISTING_OBJECTS``), as
pulumi-kubernetes 4.29+ does; the old version's objects are retained.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Optional

from pulumi.automation.events import DiffKind, OpType

from automation.gate import UNKNOWN, claim_name, volume_name
from automation.rotate.fleet import replace_with_simulator, report_of, scenario_for_groups
from automation.rotate.volumes import decide
from automation.stack import desired_amis
from tests._engine_events import step, summary

OLD_AMI, NEW_AMI = "ami-0000000000000aaaa", "ami-0000000000000bbbb"
OLD_GPU, NEW_GPU = "ami-0000000000000cccc", "ami-0000000000000dddd"
NAMESPACE, MODEL_PATH = "ml-jobs", "/opt/models"
MODEL_TAG = "k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model-version"


class AlreadyExists(RuntimeError):
    pass


class MemoryObjects:
    """The model objects in the cluster, by name (``kiln-model-v5``, ``ml-jobs/model-v5``)."""

    def __init__(self, names=()):
        self.names = set(names)

    def exists(self, name: str) -> bool:
        return name in self.names

    def create(self, name: str, adopt: bool) -> None:
        if name in self.names and not adopt:
            raise AlreadyExists(f'creation failed: {name} already exists ("AlreadyExists")')
        self.names.add(name)


class FakeVolumes:
    """``ModelVolumes`` over :class:`MemoryObjects`, deciding with the real :func:`decide`."""

    def __init__(self, objects: MemoryObjects):
        self.objects = objects
        self.prepared: list[str] = []
        self.dry_runs: list[bool] = []

    def prepare(self, version: str, *, dry_run: bool = False):
        self.prepared.append(version)
        self.dry_runs.append(dry_run)
        pv = pvc = None
        if self.objects.exists(volume_name(version)):
            pv = {"metadata": {"name": volume_name(version)}, "status": {"phase": "Bound"},
                  "spec": {"persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": MODEL_PATH},
                           "claimRef": {"namespace": NAMESPACE, "name": claim_name(version)}}}
        if self.objects.exists(f"{NAMESPACE}/{claim_name(version)}"):
            pvc = {"metadata": {"name": claim_name(version), "namespace": NAMESPACE},
                   "spec": {"volumeName": volume_name(version)}}
        return decide(version, NAMESPACE, MODEL_PATH, pv, pvc)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeStack:
    kind = "fake"
    supports_plans = True

    def __init__(self, tmp_path: Path, ami: Any = OLD_AMI, model: str = "v5",
                 groups: Optional[dict[str, tuple[str, list[str], int]]] = None, objects: Any = None):
        self.name = "prod"
        self.stack_file = Path(tmp_path) / "Pulumi.prod.yaml"
        self.groups = groups or {"gpu": ("standard", ["a", "b"], 0)}   # name -> (family, zones, nodes per zone)
        self.policy_packs = ("kiln",)
        node_groups = [{"name": g, "gpu": fam == "nvidia"} for g, (fam, _, _) in self.groups.items()]
        self.config: dict[str, Any] = {"kiln:nodeAmi": ami, "kiln:modelVersion": model, "kiln:clusterName": "kiln",
                                       "kiln:nodeGroups": node_groups}
        amis = desired_amis(ami if isinstance(ami, str) else json.dumps(ami))
        self.deployed = {"amis": amis, "model": model, "upsert": False, "shape_map": not isinstance(ami, str)}
        self.lt_versions = {g: [(self._pick(amis, fam), model)] for g, (fam, _, _) in self.groups.items()}
        self.asg_version = {f"{g}-{z}": 1 for g, (_, zones, _) in self.groups.items() for z in zones}
        sizes = {f"{g}-{z}": (n or (3 if z == "a" else 2)) for g, (_, zones, n) in self.groups.items() for z in zones}
        self.instances = {asg: [1] * n for asg, n in sizes.items()}
        self.objects = objects if objects is not None else MemoryObjects(
            {volume_name(model), f"{NAMESPACE}/{claim_name(model)}"})
        self.extra_events: list = []
        self.dropped: list[str] = []
        self.pack_ran = True
        self.fail_up: Optional[Exception] = None
        self.config_error: Optional[Exception] = None
        self.set_error: Optional[Exception] = None
        self.previews: list[dict] = []
        self.ups: list[dict] = []
        self.set_calls: list[dict] = []
        self.declared_max = self.state_max = self.live_max = 10
        # Something outside Pulumi (a person, another tool) that sets the groups' max size to this after every
        # up: the refreshed preview then still shows changes, and the stack never converges.
        self.drift_max: Optional[int] = None

    # ---- config ---------------------------------------------------------------------------------------
    def all_config(self) -> dict[str, str]:
        if self.config_error is not None:
            raise self.config_error
        return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in self.config.items()}

    def get_config(self, key: str) -> Optional[str]:
        return self.all_config().get(key)

    def set_config(self, values) -> None:
        if self.set_error is not None:
            raise self.set_error
        self.set_calls.append(dict(values))
        for k, v in values.items():
            assert isinstance(v, str) or isinstance(v, dict), v
            self.config[k] = v

    # ---- what the program wants ------------------------------------------------------------------------
    @staticmethod
    def _pick(amis: dict, family: str) -> str:
        return amis.get(family) or amis["standard"]

    def _want(self) -> tuple[dict, str]:
        ami = self.config["kiln:nodeAmi"]
        return desired_amis(ami if isinstance(ami, str) else json.dumps(ami)), self.config["kiln:modelVersion"]

    def _lt_inputs(self, group: str, ami: str, model: str) -> dict:
        return {"imageId": ami, "description": f"kiln node group {group}: model {model}",
                "userData": _b64(f"[settings.kubernetes.node-labels]\nkiln.dev/model-version={model}\n"
                                 f"mount /dev/xvdb /opt/models/{model}\n")}

    def _asg_inputs(self, version: Any, model: str, max_size: int) -> dict:
        return {"launchTemplate": {"id": "lt-1", "version": version}, "maxSize": max_size,
                "tags": [{"key": "Name", "value": "kiln"}, {"key": MODEL_TAG, "value": model}]}

    def preview(self, on_event, *, refresh: bool = False, plan: Optional[str] = None,
                adopt_model_volume: bool = False) -> list[str]:
        self.previews.append({"refresh": refresh, "plan": plan, "adopt": adopt_model_volume})
        if refresh:
            self.state_max = self.live_max
        amis, model = self._want()
        events = [step(OpType.SAME, "pulumi:pulumi:Stack", "kiln-prod", old={}, new={})]
        for g, (fam, zones, _) in self.groups.items():
            have_ami, have_model = self.lt_versions[g][-1]
            want_ami = self._pick(amis, fam)
            lt_changed = (want_ami, model) != (have_ami, have_model)
            old, new = self._lt_inputs(g, have_ami, have_model), self._lt_inputs(g, want_ami, model)
            detailed = {k: DiffKind.UPDATE for k in old if old[k] != new[k]}
            events.append(step(OpType.UPDATE if lt_changed else OpType.SAME, "aws:ec2/launchTemplate:LaunchTemplate",
                               g, old=old, new=new, detailed=detailed))
            for z in zones:
                asg = f"{g}-{z}"
                current = str(self.asg_version[asg])
                new_version = UNKNOWN if lt_changed else str(len(self.lt_versions[g]))
                old_in = self._asg_inputs(current, have_model, self.state_max)
                new_in = self._asg_inputs(new_version, model, self.declared_max)
                detailed = {}
                if new_version != current:
                    detailed["launchTemplate.version"] = DiffKind.UPDATE
                if have_model != model:
                    detailed["tags[1].value"] = DiffKind.UPDATE
                if self.state_max != self.declared_max:
                    detailed["maxSize"] = DiffKind.UPDATE
                events.append(step(OpType.UPDATE if detailed else OpType.SAME, "aws:autoscaling/group:Group", asg,
                                   old=old_in, new=new_in, detailed=detailed))
        if model != self.deployed["model"]:
            old_model = self.deployed["model"]
            for kind, name, names in (("kubernetes:core/v1:PersistentVolume", "model-pv", volume_name),
                                      ("kubernetes:core/v1:PersistentVolumeClaim", "model-pvc", claim_name)):
                meta = lambda v: {"name": names(v), **({"namespace": NAMESPACE} if name == "model-pvc" else {}),  # noqa: E731
                                  "labels": {"kiln.dev/model-version": v}}
                old, new = {"metadata": meta(old_model)}, {"metadata": meta(model)}
                detailed = {"metadata.name": DiffKind.UPDATE_REPLACE,
                            'metadata.labels["kiln.dev/model-version"]': DiffKind.UPDATE}
                for op in (OpType.CREATE_REPLACEMENT, OpType.REPLACE):
                    events.append(step(op, kind, name, old=old, new=new, detailed=detailed, keys=["metadata"],
                                       retain=True))
                events.append(step(OpType.DELETE_REPLACED, kind, name, old=old, retain=True, diffs=[]))
        if adopt_model_volume != self.deployed["upsert"]:
            old = {"upsertExistingObjects": "true"} if self.deployed["upsert"] else {}
            new = {"upsertExistingObjects": "true"} if adopt_model_volume else {}
            events.append(step(OpType.UPDATE, "pulumi:providers:kubernetes", "cluster-k8s", old=old, new=new,
                               detailed={"upsertExistingObjects": DiffKind.ADD if adopt_model_volume else DiffKind.DELETE}))
        events.extend(self.extra_events)
        events.append(summary(events, policy_packs={"kiln": "0.1.0"} if self.pack_ran else {}))
        for e in events:
            on_event(e)
        if plan is not None:
            Path(plan).write_text(json.dumps(self._planned(adopt_model_volume), sort_keys=True))
        return list(self.dropped)

    def _planned(self, adopt: bool) -> dict:
        amis, model = self._want()
        return {"amis": amis, "model": model, "adopt": adopt, "max": self.declared_max}

    # ---- apply ------------------------------------------------------------------------------------------
    def up(self, *, refresh: bool = False, plan: Optional[str] = None, adopt_model_volume: bool = False) -> dict:
        self.ups.append({"refresh": refresh, "plan": plan, "adopt": adopt_model_volume})
        if plan is not None:
            planned = json.loads(Path(plan).read_text())
            if planned != self._planned(adopt_model_volume):
                raise RuntimeError(f"error: the update does not match the plan saved by the preview ({planned})")
        if self.fail_up is not None:
            failure, self.fail_up = self.fail_up, None     # fails once, as a throttled or broken update does
            raise failure
        if refresh:
            self.state_max = self.live_max
        amis, model = self._want()
        if model != self.deployed["model"]:
            for name in (volume_name(model), f"{NAMESPACE}/{claim_name(model)}"):
                self.objects.create(name, adopt_model_volume)
            # the old version's objects are retainOnDelete: they stay in the cluster
        for g, (fam, _, _) in self.groups.items():
            if self.lt_versions[g][-1] != (self._pick(amis, fam), model):
                self.lt_versions[g].append((self._pick(amis, fam), model))
        for asg in self.asg_version:
            self.asg_version[asg] = len(self.lt_versions[asg.rsplit("-", 1)[0]])
        self.deployed = {"amis": amis, "model": model, "upsert": adopt_model_volume,
                         "shape_map": not isinstance(self.config["kiln:nodeAmi"], str)}
        self.state_max = self.live_max = self.declared_max
        if self.drift_max is not None:
            self.live_max = self.drift_max
        return self.outputs()

    def outputs(self) -> dict[str, Any]:
        amis = self.deployed["amis"]
        exported = amis["standard"] if len(amis) == 1 else dict(amis)   # as __main__.py exports nodeAmi
        return {"clusterName": "kiln", "nodeAmi": exported, "modelVersion": self.deployed["model"],
                "nodeGroups": {g: [{"zone": f"us-east-2{z}", "asgName": f"{g}-{z}", "launchTemplateId": "lt-1"}
                                   for z in zones] for g, (_, zones, _) in self.groups.items()}}

    # ---- the fleet --------------------------------------------------------------------------------------
    def old_nodes(self) -> int:
        return sum(v != self.asg_version[a] for a, vs in self.instances.items() for v in vs)

    def node_amis(self) -> set[str]:
        out = set()
        for asg, versions in self.instances.items():
            group = asg.rsplit("-", 1)[0]
            out |= {self.lt_versions[group][v - 1][0] for v in versions}
        return out


class Fleet:
    """The simulator as the fleet behind the fake stack: replaces the stack's old nodes."""

    def __init__(self, stack: FakeStack, faults: tuple[dict, ...] = ()):
        self.stack, self.faults, self.runs = stack, faults, []

    def replace(self, outputs: dict[str, Any]) -> dict[str, Any]:
        old = {asg: sum(v != self.stack.asg_version[asg] for v in vs) for asg, vs in self.stack.instances.items()}
        scenario = scenario_for_groups(
            [{"name": asg, "nodes": n, "zone": f"us-east-2{asg[-1]}"} for asg, n in old.items()],
            jobs={"running": sum(old.values()), "remaining_seconds": [300, 2400]}, deadline_seconds=3600,
            faults=list(self.faults))
        report = report_of(replace_with_simulator(scenario))
        self.runs.append(report)
        if report["outcome"] == "completed":
            for asg, vs in self.stack.instances.items():
                self.stack.instances[asg] = [self.stack.asg_version[asg]] * len(vs)
        return report


class Baker:
    """Bake by recipe: the same model version and family reuse their AMI; records the base it was given."""

    AMIS = {("v6", "standard"): NEW_AMI, ("v6", "nvidia"): NEW_GPU, ("v5", "standard"): OLD_AMI,
            ("v5", "nvidia"): OLD_GPU}

    def __init__(self):
        self.built: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[str, str, Optional[str]]] = []

    @property
    def builds(self) -> int:
        return len(self.built)

    def __call__(self, intent, family: str, base: Optional[str]) -> str:
        self.calls.append((intent.model_version, family, base))
        key = (intent.model_version, family)
        if key not in self.built:
            self.built[key] = self.AMIS.get(key, f"ami-{abs(hash(key)) % 10**17:017d}")
        return self.built[key]
