"""The preview gate over real ``pulumi.automation`` engine event objects.

Events are built with ``EngineEvent.from_json`` from the JSON the Pulumi engine
streams to the Automation API, so the gate reads exactly what ``on_event`` gets.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pulumi.automation.events import EngineEvent

from automation.gate import EventRecorder, GateRules, classify

STACK = "urn:pulumi:prod::kiln"
_seq = iter(range(1, 10_000))


def step(op: str, type_: str, name: str, *, keys=None, diffs=None, detailed=None, parent="kiln:index:NodeGroup",
         inputs=None):
    urn = f"{STACK}::{parent}${type_}::{name}"
    meta = {"op": op, "urn": urn, "type": type_, "provider": "", "old": {"type": type_, "urn": urn, "id": "x",
            "parent": "", "provider": "", "inputs": inputs or {}, "outputs": {}}, "new": None}
    if keys is not None:
        meta["keys"] = keys
    if diffs is not None:
        meta["diffs"] = diffs
    if detailed is not None:
        meta["detailedDiff"] = {k: {"diffKind": v, "inputDiff": True} for k, v in detailed.items()}
    return EngineEvent.from_json({"sequence": next(_seq), "timestamp": 0, "resourcePreEvent": {"metadata": meta}})


def prelude():
    return EngineEvent.from_json({"sequence": 0, "timestamp": 0, "preludeEvent": {"config": {"kiln:nodeAmi": "ami-1"}}})


def test_update_only_is_allowed_and_same_steps_are_ignored():
    events = [
        prelude(),
        step("same", "aws:eks/cluster:Cluster", "kiln-cluster"),
        step("update", "aws:ec2/launchTemplate:LaunchTemplate", "gpu-lt", diffs=["imageId", "userData"],
             detailed={"imageId": "update", "userData": "update"}),
        step("update", "aws:autoscaling/group:Group", "gpu-us-east-2a", diffs=["launchTemplate", "tags"]),
        step("update", "pulumi:pulumi:Stack", "kiln-prod", diffs=["outputs"]),
    ]
    result = classify(events)
    assert result.allowed
    assert [c.name for c in result.changes] == ["gpu-lt", "gpu-us-east-2a", "kiln-prod"]
    assert "no changes" not in result.render()


def test_no_changes():
    result = classify([prelude(), step("same", "aws:eks/cluster:Cluster", "kiln-cluster")])
    assert result.allowed and not result.has_changes
    assert result.render() == "preview: no changes"


def test_replace_of_launch_template_is_blocked_with_keys():
    # A new LT *version* is an update; a replace would delete the LT the ASGs use.
    result = classify([step("replace", "aws:ec2/launchTemplate:LaunchTemplate", "gpu-lt", keys=["name"],
                            diffs=["name", "imageId"])])
    assert not result.allowed
    (blocked,) = result.blocked
    assert blocked.change.replace_keys == ("name",)
    text = result.render()
    assert "BLOCKED" in text and "replace" in text and "gpu-lt" in text and "replaced because of: name" in text


def test_replace_keys_come_from_detailed_diff_when_keys_missing():
    result = classify([step("replace", "aws:autoscaling/group:Group", "gpu-a",
                            detailed={"availabilityZones": "update-replace", "tags": "update"})])
    assert result.blocked[0].change.replace_keys == ("availabilityZones",)


def test_asg_update_beyond_launch_template_and_tags_is_blocked():
    result = classify([step("update", "aws:autoscaling/group:Group", "gpu-a", diffs=["launchTemplate", "desiredCapacity"])])
    assert not result.allowed
    assert "desiredCapacity" in result.blocked[0].reason


def test_delete_is_blocked():
    result = classify([step("delete", "aws:iam/role:Role", "node-role")])
    assert not result.allowed
    assert "must not delete aws:iam/role:Role" in result.render()


def test_replace_of_the_cluster_is_blocked_even_among_allowed_changes():
    events = [
        step("update", "aws:ec2/launchTemplate:LaunchTemplate", "gpu-lt", diffs=["imageId"]),
        step("create-replacement", "aws:eks/cluster:Cluster", "kiln-cluster", keys=["version"], diffs=["version"]),
        step("replace", "aws:eks/cluster:Cluster", "kiln-cluster", keys=["version"], diffs=["version"]),
        step("delete-replaced", "aws:eks/cluster:Cluster", "kiln-cluster", keys=["version"]),
    ]
    result = classify(events)
    assert not result.allowed
    assert len(result.blocked) == 1  # one verdict per resource, however many steps the replace takes
    assert result.blocked[0].change.type == "aws:eks/cluster:Cluster"
    assert "version" in result.render()


def test_new_model_volume_create_and_old_delete_are_allowed():
    events = [
        step("create", "kubernetes:core/v1:PersistentVolume", "model-v6", parent="kiln:index:ModelVolume"),
        step("create", "kubernetes:core/v1:PersistentVolumeClaim", "model-v6", parent="kiln:index:ModelVolume"),
        step("delete", "kubernetes:core/v1:PersistentVolumeClaim", "model-v5", parent="kiln:index:ModelVolume"),
        step("delete", "kubernetes:core/v1:PersistentVolume", "model-v5", parent="kiln:index:ModelVolume"),
    ]
    result = classify(events)
    assert result.allowed
    assert all("new model's volume objects are expected" in v.reason for v in result.verdicts)


def test_model_volume_recognised_by_its_kubernetes_name():
    # The program's logical names are e.g. "volume-pv"; the object is kiln-model-v5 / model-v5.
    events = [
        step("replace", "kubernetes:core/v1:PersistentVolume", "volume-pv", keys=["metadata"],
             inputs={"metadata": {"name": "kiln-model-v5"}}),
        step("replace", "kubernetes:core/v1:PersistentVolumeClaim", "volume-pvc", keys=["metadata"],
             inputs={"metadata": {"name": "model-v5", "namespace": "ml-jobs"}}),
    ]
    assert classify(events).allowed
    assert not classify([step("replace", "kubernetes:core/v1:PersistentVolume", "volume-pv", keys=["metadata"],
                              inputs={"metadata": {"name": "scratch"}})]).allowed


def test_deleting_a_volume_that_is_not_the_model_is_blocked():
    result = classify([step("delete", "kubernetes:core/v1:PersistentVolumeClaim", "scratch")])
    assert not result.allowed


def test_explicit_allow_list():
    rules = GateRules(allowed_replacements=frozenset({"aws:ec2/launchTemplate:LaunchTemplate::gpu-lt"}))
    result = classify([step("replace", "aws:ec2/launchTemplate:LaunchTemplate", "gpu-lt", keys=["name"])], rules)
    assert result.allowed


def test_recorder_collects_on_event_calls():
    recorder = EventRecorder()
    recorder(step("delete", "aws:ec2/securityGroup:SecurityGroup", "nodes"))
    recorder(prelude())
    assert not recorder.result().allowed
    assert recorder.result().to_dict()["changes"][0]["op"] == "delete"


SAFE = [("update", "aws:ec2/launchTemplate:LaunchTemplate", "lt"), ("same", "aws:eks/cluster:Cluster", "kiln"),
        ("update", "aws:autoscaling/group:Group", "asg"), ("create", "kubernetes:core/v1:PersistentVolume", "model-v6"),
        ("delete", "kubernetes:core/v1:PersistentVolumeClaim", "model-v5"), ("update", "pulumi:pulumi:Stack", "s")]
DESTRUCTIVE = [("delete", "aws:iam/role:Role", "node"), ("replace", "aws:eks/cluster:Cluster", "kiln"),
               ("replace", "aws:ec2/launchTemplate:LaunchTemplate", "lt"), ("delete", "aws:autoscaling/group:Group", "asg"),
               ("delete-replaced", "aws:ec2/vpc:Vpc", "vpc")]


@given(st.lists(st.sampled_from(range(len(SAFE))), max_size=8),
       st.lists(st.sampled_from(range(len(DESTRUCTIVE))), max_size=3))
def test_any_destructive_change_blocks_and_only_safe_changes_pass(safe, destructive):
    events = [step(*SAFE[i], diffs=["launchTemplate"] if SAFE[i][1].startswith("aws:autoscaling") else None)
              for i in safe] + [step(*DESTRUCTIVE[i], keys=["name"]) for i in destructive]
    result = classify(events)
    assert result.allowed == (not destructive)
    assert {v.change.name for v in result.blocked} == {DESTRUCTIVE[i][2] for i in destructive}


# ---------------------------------------------------------------------------------------------
# The same rules with event objects built directly from the SDK's classes (what ``on_event`` gets
# after the SDK parsed the engine's JSON), including every op the engine can report.

import pytest
from pulumi.automation.events import (DiffKind, OpType, PropertyDiff, ResourcePreEvent, StepEventMetadata,
                                      StepEventStateMetadata)

LT = "aws:ec2/launchTemplate:LaunchTemplate"
ASG = "aws:autoscaling/group:Group"


def pre(op: OpType, type_: str, name: str, *, keys=None, diffs=None, detailed=None) -> EngineEvent:
    urn = f"{STACK}::kiln:index:NodeGroup${type_}::{name}"
    state = StepEventStateMetadata(type=type_, urn=urn, id="id-1", parent=f"{STACK}::kiln:index:NodeGroup::gpu",
                                   provider="urn:pulumi:prod::kiln::pulumi:providers:aws::default::1")
    meta = StepEventMetadata(op=op, urn=urn, type=type_, provider=state.provider, old=state, new=state, keys=keys,
                             diffs=diffs, detailed_diff={k: PropertyDiff(v, True) for k, v in (detailed or {}).items()})
    return EngineEvent(sequence=next(_seq), timestamp=0, resource_pre_event=ResourcePreEvent(metadata=meta))


@pytest.mark.parametrize("op", [OpType.REPLACE, OpType.CREATE_REPLACEMENT, OpType.DELETE_REPLACED, OpType.DELETE,
                                OpType.READ_REPLACEMENT, OpType.IMPORT_REPLACEMENT])
def test_every_destroying_op_on_a_launch_template_is_blocked(op):
    result = classify([pre(op, LT, "gpu-lt", keys=["name"])])
    assert not result.allowed and result.blocked[0].change.op == op.value


@pytest.mark.parametrize("op", [OpType.SAME, OpType.READ, OpType.REFRESH, OpType.DISCARD, OpType.DISCARD_REPLACED,
                                OpType.REMOVE_PENDING_REPLACE])
def test_ops_that_change_nothing_in_the_world_are_ignored(op):
    # discard / discard-replaced drop a *read* resource from the state; nothing is deleted.
    assert not classify([pre(op, LT, "gpu-lt")]).has_changes


def test_delete_before_replace_still_names_the_keys_causing_the_replace():
    # With deleteBeforeReplace the engine's first step is delete-replaced, which carries no keys.
    events = [pre(OpType.DELETE_REPLACED, LT, "gpu-lt"),
              pre(OpType.REPLACE, LT, "gpu-lt", keys=["name"], diffs=["name", "imageId"]),
              pre(OpType.CREATE_REPLACEMENT, LT, "gpu-lt", keys=["name"], diffs=["name", "imageId"])]
    result = classify(events)
    (blocked,) = result.blocked
    assert blocked.change.replace_keys == ("name",)
    assert "replaced because of: name" in result.render()


def test_launch_template_update_whose_diff_forces_replacement_is_blocked():
    result = classify([pre(OpType.UPDATE, LT, "gpu-lt", diffs=["imageId", "name"],
                           detailed={"imageId": DiffKind.UPDATE, "name": DiffKind.UPDATE_REPLACE})])
    assert not result.allowed
    assert "name" in result.blocked[0].reason and "replaced because of: name" in result.render()


def test_asg_desired_capacity_in_the_detailed_diff_only_is_blocked():
    result = classify([pre(OpType.UPDATE, ASG, "gpu-a", detailed={"launchTemplate.version": DiffKind.UPDATE,
                                                                  "desiredCapacity": DiffKind.UPDATE})])
    assert not result.allowed and "desiredCapacity" in result.blocked[0].reason


def test_asg_update_that_names_no_keys_cannot_be_checked_and_is_blocked():
    result = classify([pre(OpType.UPDATE, ASG, "gpu-a")])
    assert not result.allowed and "no changed keys" in result.blocked[0].reason
    assert classify([pre(OpType.UPDATE, ASG, "gpu-a", diffs=["launchTemplate.version", "tags[0].value"])]).allowed
