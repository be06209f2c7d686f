"""The preview gate's decisions, each branch with its exact verdict: which step, allowed or blocked, and why.

Written against the survivors of a mutmut run on ``automation/gate.py`` (issue 15): every test here states
what the gate decides for one kind of event — real ``pulumi.automation`` objects, as in tests/test_gate.py —
and pins the reason an operator reads, the step it names, and the report it writes. Equivalent mutants
(no input tells them apart) are listed with a reason in tests/mutation/equivalent.txt.
"""

from __future__ import annotations

import json

import pytest
from pulumi.automation.events import (DiagnosticEvent, DiffKind, EngineEvent, OpType, PropertyDiff,
                                      ResourcePreEvent, StepEventMetadata, StepEventStateMetadata, SummaryEvent)

from automation.gate import UNKNOWN, Expected, PathError, classify, format_path, judge, parse_path
from tests._engine_events import STACK_URN, outputs_of, policy_violation, step, summary, urn_of
from tests.test_gate import ASG, LT, NEW_AMI, OLD_AMI, PV, PVC, ROTATION, _asg, _b64, _lt, _pv, gate

PROVIDER = "pulumi:providers:kubernetes"
MODEL_TAG = "k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model-version"
ADOPT = Expected(to_model="v6", to_amis=frozenset({NEW_AMI}), from_model="v5", adopt_model_volume=True)
CONVERGE = Expected(to_model="v6", to_amis=frozenset({NEW_AMI}), from_model="v6", converge=True)


def only_verdict(events, expected=ROTATION):
    result = gate(events, expected)
    assert not result.problems, result.problems
    (verdict,) = result.verdicts
    return verdict


def blocked_because(events, expected=ROTATION):
    verdict = only_verdict(events, expected)
    assert verdict.allowed is False
    return verdict.reason


def allowed_because(events, expected=ROTATION):
    verdict = only_verdict(events, expected)
    assert verdict.allowed is True, verdict.reason
    return verdict.reason


def _state(type_, urn, inputs, outputs, retain=True):
    return StepEventStateMetadata(type=type_, urn=urn, id="id", parent=STACK_URN, provider="", custom=True,
                                  retain_on_delete=retain, inputs=inputs, outputs=outputs)


def _raw_step(op, type_, name, old=None, new=None, detailed=None, keys=None, diffs=None):
    """A step built field by field: states with separate inputs/outputs, ops and diff kinds as plain strings."""
    urn = urn_of(type_, name)
    meta = StepEventMetadata(op=op, urn=urn, type=type_, provider="",
                             old=_state(type_, urn, *old) if old else None,
                             new=_state(type_, urn, *new) if new else None, keys=keys,
                             diffs=diffs if diffs is not None else sorted(detailed or {}),
                             detailed_diff={k: PropertyDiff(v, True) for k, v in (detailed or {}).items()})
    return EngineEvent(sequence=1, timestamp=0, resource_pre_event=ResourcePreEvent(meta, planning=True))


def _engine_summary(changes, **extra):
    return EngineEvent.from_json({"sequence": 99, "timestamp": 0, "summaryEvent": {
        "resourceChanges": changes, "PolicyPacks": {"kiln": "0.1.0"}, **extra}})


def _provider(new_value, kind=DiffKind.UPDATE, op=OpType.UPDATE, keys=None, old_value="false"):
    return step(op, PROVIDER, "k8s", old={"upsertExistingObjects": old_value},
                new={} if new_value is None else {"upsertExistingObjects": new_value},
                detailed={"upsertExistingObjects": kind}, keys=keys)


# ------------------------------------------------------------------------- property paths


def test_bad_property_paths_are_rejected_with_what_is_wrong():
    for bad, why in [("", "empty property path"), ('a["b', "unterminated key in property path 'a\\[\"b'"),
                     ("a[x]", "bad index in property path 'a\\[x\\]'"),
                     ('["a\\', "unterminated key"),        # an escape as the very last character
                     ('a["b\\"]', "unterminated key"),     # the escaped quote does not close the key
                     ("a[12", "bad index")]:              # an index without its closing bracket
        with pytest.raises(PathError, match=why):
            parse_path(bad)


def test_paths_are_spelled_the_way_the_engine_writes_them():
    assert format_path(("metadata", "name")) == "metadata.name"
    assert format_path(("tags", 6, "value")) == "tags[6].value"
    assert format_path(("metadata", "labels", "kiln.dev/model-version")) == 'metadata.labels["kiln.dev/model-version"]'
    assert format_path(("a.b", "c/d")) == '["a.b"]["c/d"]'


# ------------------------------------------------------------------------- what each verdict names


def test_a_verdict_names_the_step_by_its_urn_and_resource_name():
    lt = _lt(imageId=NEW_AMI)
    verdict = only_verdict([lt])
    assert verdict.change.name == "gpu"
    assert verdict.change.urn == urn_of(LT, "gpu")
    assert verdict.change.op == "update" and verdict.change.type == LT
    assert verdict.reason == "a new launch-template version with the target AMI and model version"


def test_a_replaced_model_volume_reports_its_names_and_replace_keys():
    steps = [_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6"),
             _pv(OpType.REPLACE, "kiln-model-v5", "kiln-model-v6"),
             _pv(OpType.DELETE_REPLACED, "kiln-model-v5", None)]
    verdict = only_verdict(steps)
    assert verdict.allowed is True
    assert verdict.change.name == "model-volume-pv" and verdict.change.urn == urn_of(PV, "model-volume-pv")
    assert verdict.change.replace_keys == ("metadata",)
    assert verdict.change.object_names == ("kiln-model-v5", "kiln-model-v6")
    assert verdict.reason == ("the model volume of model v6 replaces v5's (retained: the old objects stay for Jobs "
                              "still using them)")


def test_a_blocked_replace_keeps_the_blocking_steps_reason_name_and_every_replace_key():
    steps = [_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v7"),
             step(OpType.REPLACE, PV, "model-volume-pv", old={"metadata": {"name": "kiln-model-v5"}},
                  new={"metadata": {"name": "kiln-model-v7"}}, detailed={"metadata.name": DiffKind.UPDATE_REPLACE},
                  keys=["spec"], retain=True)]
    verdict = only_verdict(steps)
    assert verdict.allowed is False
    assert verdict.reason == "the new model volume is kiln-model-v7, not kiln-model-v6"
    assert verdict.change.name == "model-volume-pv" and verdict.change.urn == urn_of(PV, "model-volume-pv")
    assert verdict.change.replace_keys == ("metadata", "spec")


def test_the_report_says_for_each_step_whether_it_passed_and_why():
    result = gate([_lt(imageId=NEW_AMI), _asg({"desiredCapacity": DiffKind.UPDATE})])
    assert json.loads(json.dumps(result.to_dict())) == {
        "allowed": False, "problems": [], "warnings": [], "summary": {"update": 2},
        "changes": [
            {"op": "update", "type": LT, "name": "gpu", "urn": urn_of(LT, "gpu"), "replaceKeys": [],
             "diffKeys": ["imageId"], "objectNames": [], "allowed": True,
             "reason": "a new launch-template version with the target AMI and model version"},
            {"op": "update", "type": ASG, "name": "gpu-a", "urn": urn_of(ASG, "gpu-a"), "replaceKeys": [],
             "diffKeys": ["desiredCapacity"], "objectNames": [], "allowed": False,
             "reason": "a rotation changes only its launch-template version and the model-version tag; "
                       "this also changes desiredCapacity"}]}
    pv = gate([_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6")]).to_dict()["changes"][0]
    assert pv["replaceKeys"] == ["metadata"] and pv["objectNames"] == ["kiln-model-v5", "kiln-model-v6"]
    no_summary = classify([], ROTATION).to_dict()
    assert no_summary["summary"] == {} and no_summary["allowed"] is False
    assert no_summary["problems"] == ["the engine sent no change summary, so the preview cannot be checked as complete"]
    advisory = [_lt(imageId=NEW_AMI)]
    warned = classify(advisory + [policy_violation("advisory"), summary(advisory)], ROTATION)
    assert warned.to_dict()["warnings"] == [
        "policy kiln/imdsv2-required: launch templates must require IMDSv2 (stack)"]


def test_the_rendered_gate_marks_each_step_and_counts_the_findings():
    pv = _pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6")
    bad = _asg({"desiredCapacity": DiffKind.UPDATE})
    text = classify([pv, bad], ROTATION).render()     # no summary: one blocked step and one problem
    lines = text.splitlines()
    assert lines[0] == ("preview gate: BLOCKED (2 finding(s) are not part of the rotation or could not be checked)")
    assert ("  ok      create-replacement kubernetes:core/v1:PersistentVolume  model-volume-pv  "
            "(kiln-model-v5 -> kiln-model-v6)  replaced because of: metadata") in lines
    assert "  BLOCKED update   aws:autoscaling/group:Group  gpu-a" in lines
    assert "  BLOCKED the engine sent no change summary, so the preview cannot be checked as complete" in lines
    three = classify([bad, _engine_summary({"update": 1}, maybeCorrupt=True)], ROTATION, dropped=["x"])
    assert three.render().splitlines()[0].startswith("preview gate: BLOCKED (3 finding(s)")
    ok = gate([_lt(imageId=NEW_AMI)]).render().splitlines()
    assert ok[0] == "preview gate: every change is part of the rotation"
    assert ok[1] == "  ok      update   aws:ec2/launchTemplate:LaunchTemplate  gpu"
    # Problems without any step are still a block, never "no changes".
    assert classify([], ROTATION).render().startswith("preview gate: BLOCKED (1 finding(s)")


def test_values_in_reasons_are_shown_readably_and_long_ones_cut():
    def reason(image):
        return blocked_because([_lt(imageId=image)])
    tail = "is not a target AMI (ami-0aaaaaaaaaaaaaaa1)"
    assert reason("ami-0bbbbbbbbbbbbbbbb") == f"imageId ami-0bbbbbbbbbbbbbbbb {tail}"       # a string, not its repr
    assert reason(7) == f"imageId 7 {tail}"
    assert reason(UNKNOWN) == f"imageId (known after apply) {tail}"
    assert reason(None) == f"imageId (none) {tail}"
    assert reason("a" * 80) == f"imageId {'a' * 80} {tail}"
    assert reason("a" * 81) == f"imageId {'a' * 60}... (81 chars) {tail}"
    assert reason("x\ny") == f"imageId x\\ny {tail}"
    # A value the event does not carry at all.
    gone = step(OpType.UPDATE, LT, "gpu", old={"imageId": OLD_AMI}, new={}, detailed={"imageId": DiffKind.UPDATE})
    assert blocked_because([gone]) == f"imageId (none) {tail}"


def test_an_unparsable_path_shows_no_values_and_is_listed_with_every_other_path_outside():
    events = [step(OpType.UPDATE, ASG, "gpu-a", old={"desiredCapacity": 1}, new={"desiredCapacity": 2},
                   detailed={'"bad': DiffKind.UPDATE, "desiredCapacity": DiffKind.UPDATE})]
    result = gate(events)
    (verdict,) = result.blocked
    assert verdict.reason == ("a rotation changes only its launch-template version and the model-version tag; "
                              'this also changes "bad, desiredCapacity')
    assert '            "bad: (none) -> (none)' in result.render().splitlines()


# ------------------------------------------------------------------------- what the engine may send


def test_plain_string_ops_and_diff_kinds_are_read_like_the_enums():
    old = {"imageId": OLD_AMI}
    ok = _raw_step("update", LT, "gpu", old=(old, old), new=({"imageId": NEW_AMI}, {"imageId": NEW_AMI}),
                   detailed={"imageId": "update"})
    result = classify([ok, _engine_summary({"update": 1})], ROTATION)
    assert result.allowed, result.render()
    assert result.verdicts[0].change.op == "update"
    added = _raw_step("update", LT, "gpu", old=(old, old), new=({"imageId": NEW_AMI}, None),
                      detailed={"imageId": "add"})
    assert classify([added, _engine_summary({"update": 1})], ROTATION).verdicts[0].reason == \
        "imageId is addd, not updated"


def test_object_names_and_namespaces_are_read_from_inputs_or_outputs():
    def claim(ns_in, ns_out, name_in=True):
        def obj(n, ns):
            meta = {"name": n} if name_in or ns is None else {}
            if ns:
                meta["namespace"] = ns
            return {"metadata": meta} if meta else {}
        return _raw_step(OpType.CREATE_REPLACEMENT, PVC, "model-volume-pvc",
                         old=(obj("model-v5", ns_in), {"metadata": {"name": "model-v5", "namespace": ns_out}}),
                         new=(obj("model-v6", ns_in), {"metadata": {"name": "model-v6", "namespace": ns_out}}),
                         detailed={"metadata.name": "update-replace"}, keys=["metadata"])
    # The inputs say it (a preview's new state has no outputs yet).
    inputs_only = _raw_step(OpType.CREATE_REPLACEMENT, PVC, "model-volume-pvc",
                            old=({"metadata": {"name": "model-v5", "namespace": "ml-jobs"}}, None),
                            new=({"metadata": {"name": "model-v6", "namespace": "ml-jobs"}}, None),
                            detailed={"metadata.name": "update-replace"}, keys=["metadata"])
    assert allowed_because([inputs_only])
    # The namespace is only in the outputs (the provider filled it in): read from there.
    assert allowed_because([claim(None, "ml-jobs")])
    assert blocked_because([claim(None, "default")]) == "the claim is in namespace default, not ml-jobs"
    # The name only in the outputs (inputs without metadata).
    names_out = _raw_step(OpType.DELETE_REPLACED, PV, "model-volume-pv",
                          old=({"spec": {}}, {"metadata": {"name": "kiln-model-v5"}}))
    assert allowed_because([names_out]).startswith("the model volume of model v6 replaces v5's")


def test_top_level_diffs_without_a_detailed_diff_are_judged_with_their_values():
    old = {"imageId": OLD_AMI, "userData": _b64("model v5"), "description": "model v5", "instanceType": "g5"}
    new = dict(old, imageId=NEW_AMI, userData=_b64("model v6"), description="model v6")
    ok = step(OpType.UPDATE, LT, "gpu", old=old, new=new, diffs=["description", "imageId", "userData"])
    assert allowed_because([ok]) == "a new launch-template version with the target AMI and model version"
    bad_desc = step(OpType.UPDATE, LT, "gpu", old=old, new=dict(new, description="model v6 and more"),
                    diffs=["description"])
    assert blocked_because([bad_desc]) == "description changes beyond the model version (v5 -> v6)"
    # A top-level key the detailed diff does not break down still counts.
    hidden = step(OpType.UPDATE, LT, "gpu", old=old, new=dict(old, imageId=NEW_AMI, instanceType="p5"),
                  diffs=["imageId", "instanceType"])
    hidden.resource_pre_event.metadata.detailed_diff = {"imageId": PropertyDiff(DiffKind.UPDATE, True)}
    assert blocked_because([hidden]) == ("a rotation changes only imageId, userData and description; this also "
                                         "changes instanceType")


# ------------------------------------------------------------------------- launch template


def test_launch_template_branches_say_why():
    assert blocked_because([step(OpType.UPDATE, LT, "gpu", new={"imageId": NEW_AMI},
                                 detailed={"imageId": DiffKind.UPDATE})]) == \
        "the event carries no old/new inputs, so the new values cannot be checked"
    assert blocked_because([_lt(imageId=NEW_AMI, userData="not base64 !")]) == \
        "userData is unknown or not base64 text, so it cannot be checked"
    assert blocked_because([_lt(imageId=NEW_AMI, userData=12)]) == \
        "userData is unknown or not base64 text, so it cannot be checked"
    smuggled = _b64("model v6")
    assert blocked_because([_lt(imageId=NEW_AMI, userData=smuggled[:4] + "*" + smuggled[4:])]) == \
        "userData is unknown or not base64 text, so it cannot be checked"
    assert allowed_because([_lt(imageId=NEW_AMI, userData=_b64("model v6"))])
    added = step(OpType.UPDATE, LT, "gpu", old={}, new={"imageId": NEW_AMI}, detailed={"imageId": DiffKind.ADD})
    verdict = only_verdict([added])
    assert (verdict.allowed, verdict.reason, verdict.change.name) == (False, "imageId is addd, not updated", "gpu")


# ------------------------------------------------------------------------- auto scaling group


def _tags(first_key="Name", first=("kiln-gpu", "kiln-gpu"), model=("v5", "v5"), model_key=MODEL_TAG):
    def tags(i):
        return [{"key": first_key[i] if isinstance(first_key, tuple) else first_key, "value": first[i]},
                {"key": model_key, "value": model[i]}]
    return {"launchTemplate": {"id": "lt-1", "version": "3"}, "tags": tags(0)}, \
        {"launchTemplate": {"id": "lt-1", "version": "3"}, "tags": tags(1)}


def test_asg_branches_say_why():
    def reason(events, expected=ROTATION):
        verdict = only_verdict(events, expected)
        assert verdict.allowed is False and verdict.change.name == "gpu-a"
        return verdict.reason
    assert reason([step(OpType.UPDATE, ASG, "gpu-a", old={}, new={}, keys=["name"],
                        detailed={"name": DiffKind.UPDATE_REPLACE})]) == "the diff forces a replacement (name)"
    # A replacement the engine marks only in the detailed diff's kind.
    assert reason([_asg({"launchTemplate.version": DiffKind.UPDATE_REPLACE})]) == \
        "the diff forces a replacement (launchTemplate.version)"
    assert reason([step(OpType.UPDATE, ASG, "gpu-a", old={}, new={}, diffs=[])]) == \
        "the update names no changed property, so it cannot be checked"
    assert reason([_asg({"maxSize": DiffKind.UPDATE})]) == (
        "a rotation changes only its launch-template version and the model-version tag; this also changes maxSize")
    assert reason([_asg({"desiredCapacity": DiffKind.UPDATE})], CONVERGE) == (
        "a rotation changes only its launch-template version and the model-version tag, and (after the replacement) "
        "maxSize and minSize; this also changes desiredCapacity")
    assert reason([_asg({"launchTemplate.version": DiffKind.ADD})]) == "launchTemplate.version is addd, not updated"
    old, new = _tags(model=("v5", "v6"))
    assert reason([step(OpType.UPDATE, ASG, "gpu-a", new=new, detailed={"tags[1].value": DiffKind.UPDATE})]) == \
        "the event carries no old/new inputs, so the tag cannot be checked"
    assert reason([step(OpType.UPDATE, ASG, "gpu-a", old=old, detailed={"tags[1].value": DiffKind.UPDATE})]) == \
        "the event carries no old/new inputs, so the tag cannot be checked"
    # Another tag going v5 -> v6 is not the model-version tag.
    old, new = _tags(first=("v5", "v6"))
    assert reason([step(OpType.UPDATE, ASG, "gpu-a", old=old, new=new, detailed={"tags[0].value": DiffKind.UPDATE})]) \
        == "tags[0].value is the value of tag Name, not the model-version tag"
    # A tag whose key turns into the model-version label as its value changes.
    old, new = _tags(first_key=("Name", MODEL_TAG), first=("v5", "v6"))
    assert reason([step(OpType.UPDATE, ASG, "gpu-a", old=old, new=new, detailed={"tags[0].value": DiffKind.UPDATE})]) \
        == f"tags[0].value is the value of tag {MODEL_TAG}, not the model-version tag"
    # Tags without keys.
    keyless = step(OpType.UPDATE, ASG, "gpu-a", old={"tags": [{"value": "v5"}]}, new={"tags": [{"value": "v6"}]},
                   detailed={"tags[0].value": DiffKind.UPDATE})
    assert reason([keyless]) == "tags[0].value is the value of tag (none), not the model-version tag"


def test_asg_allowed_reasons_say_whether_the_size_comes_back():
    old, new = _tags(model=("v5", "v6"))
    assert allowed_because([step(OpType.UPDATE, ASG, "gpu-a", old=old, new=new,
                                 detailed={"tags[1].value": DiffKind.UPDATE})]) == \
        "the group points at the new launch-template version"
    assert allowed_because([_asg({"launchTemplate.version": DiffKind.UPDATE})]) == \
        "the group points at the new launch-template version"
    assert allowed_because([_asg({"maxSize": DiffKind.UPDATE})], CONVERGE) == \
        "the group points at the new launch-template version and gets its declared size back"


# ------------------------------------------------------------------------- model volume and claim


def test_model_volume_branches_say_which_object_and_why():
    same = Expected(to_model="v6", to_amis=frozenset({NEW_AMI}), from_model="v6")
    pv = _pv(OpType.CREATE_REPLACEMENT, "kiln-model-v6", "kiln-model-v6")
    verdict = only_verdict([pv], same)
    assert (verdict.allowed, verdict.change.name) == (False, "model-volume-pv")
    assert verdict.reason == "the model version does not change in this apply, so the model volume must not change"
    claim = _pv(OpType.CREATE_REPLACEMENT, "model-v5", "model-v6", kind=PVC, name="model-volume-pvc")
    assert blocked_because([claim], same) == \
        "the model version does not change in this apply, so the model claim must not change"
    assert blocked_because([_pv(OpType.CREATE_REPLACEMENT, "model-v4", "model-v6", kind=PVC,
                                name="model-volume-pvc")]) == "the model claim being replaced is model-v4, not model-v5"
    assert blocked_because([_pv(OpType.CREATE_REPLACEMENT, "kiln-model-v4", "kiln-model-v6")]) == \
        "the model volume being replaced is kiln-model-v4, not kiln-model-v5"
    hostpath = step(OpType.CREATE_REPLACEMENT, PV, "model-volume-pv",
                    old={"metadata": {"name": "kiln-model-v5"}, "spec": {"hostPath": {"path": "/opt/models"}}},
                    new={"metadata": {"name": "kiln-model-v6"}, "spec": {"hostPath": {"path": "/"}}},
                    detailed={"metadata.name": DiffKind.UPDATE_REPLACE, "spec.hostPath.path": DiffKind.UPDATE_REPLACE},
                    keys=["metadata", "spec"], retain=True)
    assert blocked_because([hostpath]) == "the model volume also changes spec.hostPath.path"


@pytest.mark.parametrize("old_ns, new_ns", [("default", "ml-jobs"), ("ml-jobs", "default")])
def test_a_model_claim_in_another_namespace_before_or_after_blocks(old_ns, new_ns):
    def obj(n, ns):
        return {"metadata": {"name": n, "namespace": ns, "labels": {"kiln.dev/model-version": n[-2:]}}}
    claim = step(OpType.CREATE_REPLACEMENT, PVC, "model-volume-pvc", old=obj("model-v5", old_ns),
                 new=obj("model-v6", new_ns), keys=["metadata"], retain=True,
                 detailed={"metadata.name": DiffKind.UPDATE_REPLACE,
                           'metadata.labels["kiln.dev/model-version"]': DiffKind.UPDATE})
    assert blocked_because([claim]) == "the claim is in namespace default, not ml-jobs"


def test_a_model_label_that_appears_rather_than_changes_blocks():
    pv = step(OpType.CREATE_REPLACEMENT, PV, "model-volume-pv", old={"metadata": {"name": "kiln-model-v5"}},
              new={"metadata": {"name": "kiln-model-v6", "labels": {"kiln.dev/model-version": "v6"}}},
              detailed={"metadata.name": DiffKind.UPDATE_REPLACE,
                        'metadata.labels["kiln.dev/model-version"]': DiffKind.ADD},
              keys=["metadata"], retain=True)
    assert blocked_because([pv]) == \
        'metadata.labels["kiln.dev/model-version"] of the model volume becomes v6 (add), not v6'


def test_adopting_retained_objects_is_said_only_where_the_new_version_is_created():
    create = _pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6")
    delete = _pv(OpType.DELETE_REPLACED, "kiln-model-v5", None)
    base = "the model volume of model v6 replaces v5's (retained: the old objects stay for Jobs still using them)"
    assert allowed_because([create], ADOPT) == base + " - adopting the retained objects"
    assert allowed_because([delete], ADOPT) == base
    assert allowed_because([create]) == base


# ------------------------------------------------------------------------- kubernetes provider


def test_the_kubernetes_provider_switch_branches_say_why():
    replaced = _provider("false", kind=DiffKind.UPDATE_REPLACE, keys=["upsertExistingObjects"])
    verdict = only_verdict([replaced], ADOPT)
    assert (verdict.allowed, verdict.change.name) == (False, "k8s")
    assert verdict.reason == "a rotation must not update the Kubernetes provider"
    assert blocked_because([_provider("false", op=OpType.DELETE)]) == \
        "a rotation must not delete the Kubernetes provider"
    for off in ("false", "0", "F", False):
        verdict = only_verdict([_provider(off, old_value="true")])
        assert (verdict.allowed, verdict.reason, verdict.change.name) == (True, "turns upsertExistingObjects off again",
                                                                          "k8s")
    gone = _provider(None, kind=DiffKind.DELETE, old_value="true")
    assert only_verdict([gone]).reason == "turns upsertExistingObjects off again"
    on = only_verdict([_provider("true")], ADOPT)
    assert (on.allowed, on.reason, on.change.name) == (
        True, "adopts the retained PersistentVolume/claim of a model version used before", "k8s")
    assert blocked_because([_provider("1")]) == \
        "upsertExistingObjects is turned on, but there are no retained model objects to adopt"
    for unreadable in (["true"], {"value": "true"}, "yes"):
        assert blocked_because([_provider(unreadable)], ADOPT).endswith(", which the gate cannot read as on or off")


# ------------------------------------------------------------------------- judge on its own


def test_judge_blocks_an_op_its_rules_cannot_read():
    meta = StepEventMetadata(op="frobnicate", urn=urn_of(PV, "model-volume-pv"), type=PV, provider="",
                             old=_state(PV, urn_of(PV, "model-volume-pv"), {"metadata": {"name": "kiln-model-v5"}}, None),
                             detailed_diff={})
    verdict = judge(meta, ROTATION)
    assert verdict.allowed is False and verdict.change.name == "model-volume-pv"
    assert verdict.reason == "cannot classify this step ('frobnicate' is not a valid OpType)"


# ------------------------------------------------------------------------- the whole stream


def test_an_unknown_op_blocks_and_the_rest_of_the_stream_is_still_judged():
    odd = _raw_step("frobnicate", LT, "odd", old=({}, {}), new=({}, {}))
    bad = _asg({"desiredCapacity": DiffKind.UPDATE})
    result = classify([odd, bad, _engine_summary({"update": 1})], ROTATION)
    assert result.problems == (f"unknown op 'frobnicate' on {urn_of(LT, 'odd')}",)
    assert [v.change.name for v in result.blocked] == ["gpu-a"]


def test_a_no_change_step_carrying_only_top_level_diffs_blocks():
    same = step(OpType.SAME, "aws:eks/cluster:Cluster", "kiln", old={"version": "1"}, new={"version": "2"},
                diffs=["version"])
    assert blocked_because([same]) == "a same step carrying a diff (version) cannot be classified"


def test_each_gate_level_problem_says_what_went_wrong():
    lt = _lt(imageId=NEW_AMI)
    failed = EngineEvent.from_json({"sequence": 5, "timestamp": 0, "resOpFailedEvent": {
        "metadata": {"op": "update", "urn": urn_of(LT, "gpu"), "type": LT, "provider": ""}, "status": 1, "steps": 1}})
    result = classify([lt, failed, outputs_of(step(OpType.UPDATE, LT, "ghost", old={}, new={})),
                       _engine_summary({"update": 1, "frobnicate": 2}, maybeCorrupt=True)], ROTATION)
    assert result.problems == (
        f"a resource operation failed: {urn_of(LT, 'gpu')}",
        f"outputs of a step the gate never saw: {urn_of(LT, 'ghost')}",
        "the engine's summary says the stack may be corrupt (maybeCorrupt)",
        "the engine's summary counts an op the gate does not know: frobnicate",
        "the engine counts 2 frobnicate step(s), the gate saw 0: an event was lost")
    packs = classify([lt, summary([lt], policy_packs={"other": "1"})], ROTATION)
    assert packs.problems == ("policy pack kiln did not run in this preview (ran: other)",)


def test_engine_diagnostics_block_only_when_they_are_errors():
    lt = _lt(imageId=NEW_AMI)
    def diag(severity):
        return EngineEvent(sequence=3, timestamp=0, diagnostic_event=DiagnosticEvent(
            message="provider crashed", color="never", severity=severity))
    assert classify([lt, diag("error"), summary([lt])], ROTATION).problems == (
        "the engine reported an error: provider crashed",)
    for severity in ("info", "warning", "info#err"):
        assert classify([lt, diag(severity), summary([lt])], ROTATION).allowed


def test_the_summary_counts_are_compared_exactly():
    lt = _lt(imageId=NEW_AMI)
    # Zero counts for ops that did not happen are fine, as are the SDK's OpType keys.
    assert classify([lt, _engine_summary({"update": 1, "same": 0, "create": 0})], ROTATION).allowed
    typed = EngineEvent(sequence=4, timestamp=0, summary_event=SummaryEvent(
        maybe_corrupt=False, duration_seconds=1, resource_changes={OpType.UPDATE: 1}, policy_packs={"kiln": "0.1.0"}))
    assert classify([lt, typed], ROTATION).allowed
    assert classify([lt, typed], ROTATION).summary == {"update": 1}
    # An event lost on either side, with both counts.
    assert classify([lt, _engine_summary({})], ROTATION).problems == (
        "the engine counts 0 update step(s), the gate saw 1: an event was lost",)
    assert classify([_engine_summary({"update": 1})], ROTATION).problems == (
        "the engine counts 1 update step(s), the gate saw 0: an event was lost",)
    # A count that is not a number is reported, and never matches what the gate saw.
    nonsense = classify([lt, _engine_summary({"update": "1"})], ROTATION)
    assert nonsense.problems == ("the engine's summary counts '1' update step(s), not a number",
                                 "the engine counts -1 update step(s), the gate saw 1: an event was lost")
    assert nonsense.summary == {"update": -1}
    assert classify([], ROTATION).summary is None


def test_the_gate_counts_what_the_engine_marks_logical():
    unmarked = step(OpType.UPDATE, LT, "gpu", old=_lt(imageId=NEW_AMI).resource_pre_event.metadata.old.inputs,
                    new=_lt(imageId=NEW_AMI).resource_pre_event.metadata.new.inputs,
                    detailed={"imageId": DiffKind.UPDATE}, logical=False)
    assert classify([unmarked, _engine_summary({})], ROTATION).allowed
    marked = _pv(OpType.CREATE_REPLACEMENT, "kiln-model-v5", "kiln-model-v6")
    marked.resource_pre_event.metadata.logical = True
    assert classify([marked, _engine_summary({"create-replacement": 1})], ROTATION).allowed
