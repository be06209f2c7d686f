"""Run the kiln Pulumi program under the Pulumi SDK's mocks and record what it registers.

This is how kiln verifies its program without the Pulumi CLI or an AWS account:
the real ``__main__.py`` runs exactly as ``pulumi preview`` would run it, but the
resource monitor is the SDK's ``MockMonitor``. We subclass it only to *record*
each ``RegisterResource`` request — inputs after serialisation, plus the resource
options the engine would see (parent, ``ignore_changes``, dependencies, …) — and
the stack outputs. The offline policy runner and the tests both use this.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as _mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROJECT_NAME = "kiln"


@dataclass
class Registration:
    """One resource as the engine saw it: type, name, inputs, outputs and options."""

    urn: str
    type: str
    name: str
    custom: bool
    remote: bool
    parent: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    id: str
    provider: str = ""
    ignore_changes: tuple[str, ...] = ()
    replace_on_changes: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    # Input property -> the URNs it was computed from (how a rule knows which security group an
    # ingress rule names while the group's id is not known yet, as the engine tells analyzers).
    property_dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    protect: bool = False
    delete_before_replace: bool = False
    retain_on_delete: bool = False
    additional_secret_outputs: tuple[str, ...] = ()
    # The request's inputs as they travel on the wire (JSON of the protobuf Struct): unknowns as the
    # UNKNOWN sentinel string, secrets and resource references in their signature form. The offline
    # policy runner hands these to the analyzer exactly as the engine would.
    wire_inputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProgramRun:
    """Everything one run of the program registered, in order."""

    resources: list[Registration] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: Optional[str] = None) -> Registration:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_)]
            raise AssertionError(f"expected one {type_} named {name!r}, found {len(found)} among {names}")
        return found[0]

    def by_urn(self, urn: str) -> Registration:
        for r in self.resources:
            if r.urn == urn:
                return r
        raise KeyError(urn)

    def children_of(self, parent: Registration) -> list[Registration]:
        return [r for r in self.resources if r.parent == parent.urn]


class KilnMocks(pulumi.runtime.Mocks):
    """Plausible provider behaviour: ids, ARNs, and the outputs the program reads back.

    Outputs echo the inputs (as a provider's state would) and add the computed
    attributes kiln's components depend on. Nothing here asserts anything.

    With ``preview=True`` they behave as the engine does in the first preview of a new
    stack, where every resource is a create: a resource's outputs are its inputs (and its
    auto-generated ``name``, which providers compute at check time), while everything the
    provider computes on create — the id, ARNs, versions, URLs — stays unknown. That is the
    preview in which the fewest values are known, so the one a policy pack must survive.
    """

    def __init__(self, account: str = "123456789012", region: str = "us-east-2", preview: bool = False) -> None:
        self.account = account
        self.region = region
        self.preview = preview
        self._counter = 0

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        rid, state = self._created(args)
        if not self.preview:
            return rid, state
        # An empty id and missing outputs are unknown to the program at preview (the SDK's dry run).
        planned = {k: v for k, v in state.items() if k in args.inputs}
        if "name" in state:
            planned["name"] = state["name"]
        return "", planned

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter:017x}"

    def _created(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        typ, name = args.typ, args.name
        rid = self._id(typ.split(":")[-1].lower()[:8])
        arn = f"arn:aws:{typ.split(':')[1].split('/')[0]}:{self.region}:{self.account}:{name}"
        state.setdefault("arn", arn)
        if typ == "aws:ec2/launchTemplate:LaunchTemplate":
            state.update(latestVersion=1, defaultVersion=1)
        elif typ == "aws:iam/role:Role":
            state.update(arn=f"arn:aws:iam::{self.account}:role/{name}", name=state.get("name", name))
        elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            # IAM names a provider by its URL's host (one per URL and account).
            host = str(state.get("url", name)).removeprefix("https://").rstrip("/")
            state.update(arn=f"arn:aws:iam::{self.account}:oidc-provider/{host}")
        elif typ == "aws:iam/instanceProfile:InstanceProfile":
            state.update(arn=f"arn:aws:iam::{self.account}:instance-profile/{name}", name=state.get("name", name))
        elif typ == "aws:ecr/repository:Repository":
            repo = state.get("name", name)
            state.update(repositoryUrl=f"{self.account}.dkr.ecr.{self.region}.amazonaws.com/{repo}", name=repo)
        elif typ == "aws:kms/key:Key":
            state.update(keyId=rid, arn=f"arn:aws:kms:{self.region}:{self.account}:key/{rid}")
        elif typ == "aws:autoscaling/group:Group":
            state.setdefault("name", name)
        elif typ.startswith("eks:index:Cluster"):
            cluster = state.get("name", name)
            # eksCluster and core are resource references in the real engine; a dict there
            # fails the SDK's typed deserialisation, so they are left out (use getCluster).
            state.update(
                kubeconfig={"apiVersion": "v1", "clusters": [{"name": cluster}]},
                kubeconfigJson=json.dumps({"apiVersion": "v1", "clusters": [{"name": cluster}]}),
                clusterSecurityGroupId=self._id("sg"),
                nodeSecurityGroupId=self._id("sg"),
                oidcProviderArn=f"arn:aws:iam::{self.account}:oidc-provider/oidc.eks.{self.region}.amazonaws.com/id/EXAMPLE",
                oidcProviderUrl=f"oidc.eks.{self.region}.amazonaws.com/id/EXAMPLE",
                oidcIssuer=f"oidc.eks.{self.region}.amazonaws.com/id/EXAMPLE",
            )
        elif typ == "aws:ec2/vpc:Vpc":
            rid = self._id("vpc")
        elif typ == "aws:ec2/subnet:Subnet":
            rid = self._id("subnet")
        elif typ == "aws:ec2/securityGroup:SecurityGroup":
            rid = self._id("sg")
        state.setdefault("id", rid)
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        token, a = args.token, dict(args.args)
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": self.account, "arn": f"arn:aws:iam::{self.account}:user/kiln", "userId": "AIDEXAMPLE"}
        if token == "aws:index/getRegion:getRegion":
            return {"name": self.region, "region": self.region, "id": self.region}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if token == "aws:eks/getCluster:getCluster":
            cluster = a.get("name", "cluster")
            return {"name": cluster, "id": cluster, "endpoint": f"https://{cluster}.gr7.{self.region}.eks.amazonaws.com",
                    "arn": f"arn:aws:eks:{self.region}:{self.account}:cluster/{cluster}",
                    "certificateAuthorities": [{"data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUV4YW1wbGUKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="}],
                    "kubernetesNetworkConfigs": [{"ipFamily": "ipv4", "serviceIpv4Cidr": "172.20.0.0/16"}],
                    "version": "1.33", "status": "ACTIVE"}
        if token == "aws:iam/getPolicyDocument:getPolicyDocument":
            return {"json": json.dumps({"Version": "2012-10-17", "Statement": a.get("statements", [])})}
        return a


class RecordingMonitor(_mocks.MockMonitor):
    """The SDK's mock monitor, recording every registration with its options."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.run = ProgramRun()

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        _mocks._ensure_event_loop()
        registered = self.resources[response.urn]
        self.run.resources.append(Registration(
            urn=response.urn,
            type=request.type,
            name=request.name,
            custom=bool(request.custom),
            remote=bool(request.remote),
            parent=request.parent,
            inputs=rpc.deserialize_properties(request.object),
            outputs=dict(registered.state or {}),
            id=registered.id or "",
            provider=request.provider,
            ignore_changes=tuple(request.ignoreChanges),
            replace_on_changes=tuple(request.replaceOnChanges),
            dependencies=tuple(request.dependencies),
            property_dependencies={k: tuple(v.urns) for k, v in request.propertyDependencies.items()},
            protect=bool(request.protect),
            delete_before_replace=bool(request.deleteBeforeReplace),
            retain_on_delete=bool(request.retainOnDelete),
            additional_secret_outputs=tuple(request.additionalSecretOutputs),
            wire_inputs=json_format.MessageToDict(request.object),
        ))
        return response

    def RegisterResourceOutputs(self, request):  # noqa: N802 (gRPC method name)
        if request.urn.endswith("::pulumi:pulumi:Stack::" + request.urn.split("::")[-1]) and "pulumi:pulumi:Stack" in request.urn:
            _mocks._ensure_event_loop()
            self.run.outputs = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
        return super().RegisterResourceOutputs(request)


def config_to_pulumi(config: Mapping[str, Any], namespace: str = "kiln") -> dict[str, str]:
    """Stack-file style config (native YAML values) to the string map Pulumi passes programs."""
    out: dict[str, str] = {}
    for key, value in config.items():
        full = key if ":" in key else f"{namespace}:{key}"
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            value = "[secret]"
        out[full] = value if isinstance(value, str) else json.dumps(value)
    return out


def run_program(
    config: Mapping[str, Any],
    *,
    program: Path | str = PROJECT_DIR / "__main__.py",
    stack: str = "test",
    preview: bool = False,
    mocks: Optional[pulumi.runtime.Mocks] = None,
) -> ProgramRun:
    """Run ``program`` once under mocks with ``config`` and return what it registered.

    Raises whatever the program raises (for instance ``infra.config.ConfigError``);
    the registrations made before the failure stay on ``RecordingMonitor.run``.
    """
    mocks = mocks or KilnMocks(preview=preview)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_all_config(config_to_pulumi(config), [])
    settings.ROOT.set(None)
    _mocks.set_mocks(mocks, project=PROJECT_NAME, stack=stack, preview=preview, monitor=monitor)
    # set_mocks opened (and closed) a root stack of its own; run the program in a fresh one
    # so that its exports are registered as the stack outputs, as the CLI would.
    settings.ROOT.set(None)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()

    program = Path(program)
    added = str(program.parent)
    sys.path.insert(0, added)
    old_cwd = os.getcwd()
    os.chdir(program.parent)
    error: Optional[BaseException] = None
    try:
        _sync_await(run_in_stack(lambda: runpy.run_path(str(program), run_name="__main__")))
    except BaseException as exc:  # noqa: BLE001 - re-raised below, with the partial run attached
        error = exc
    finally:
        os.chdir(old_cwd)
        sys.path.remove(added)
    if error is not None:
        error.program_run = monitor.run  # type: ignore[attr-defined]
        raise error
    return monitor.run
