"""The warm-up admission policy, evaluated: its CEL (as the program declares it) against node updates.

The expressions are compiled and run by cel-python, a CEL implementation, on the
Node before and after an update, as the API server's ValidatingAdmissionPolicy
does. Kubernetes adds type checking against the Node schema and a few library
functions kiln does not use; whether the real API server compiles the policy is
the check docs/cluster.md lists for a real cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest

from _program_helpers import BASE, run
from infra import labels as L
from infra.warmup_agent import untaint_patch

VAP = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"
SA_USER = "system:serviceaccount:kube-system:kiln-model-warmup"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
_ENV = celpy.Environment()


@pytest.fixture(scope="module")
def policy() -> dict:
    return run(BASE).one(VAP, "model-warmup-policy").inputs["spec"]


def _eval(expression: str, activation: dict[str, Any]) -> bool:
    program = _ENV.program(_ENV.compile(expression))
    return bool(program.evaluate({k: celpy.json_to_cel(v) for k, v in activation.items()}))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what ``application/merge-patch+json`` does on the API server)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def warming_node(name: str = "ip-10-0-1-23.us-east-2.compute.internal") -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "4711",
                     "labels": {L.LABEL_MODEL_VERSION: "v5", L.LABEL_NODE_GROUP: "gpu"},
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"providerID": "aws:///us-east-2a/i-0abc", "podCIDR": "10.0.1.0/24",
                 "taints": [
                     {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"},
                     {"key": L.TAINT_WARMING, "value": "true", "effect": "NoSchedule"},
                     {"key": "workload", "value": "training", "effect": "NoSchedule"},
                 ]},
    }


def denials(policy: dict, old: dict, new: dict, *, user: str = SA_USER, bound_to: str | None = None) -> list[str]:
    """The messages of every validation the update fails ([] = admitted); None if the policy does not apply."""
    request = {"userInfo": {"username": user,
                            "extra": {NODE_NAME_EXTRA: [bound_to or old["metadata"]["name"]]}}}
    activation = {"object": new, "oldObject": old, "request": request}
    if not all(_eval(c["expression"], activation) for c in policy["matchConditions"]):
        return None
    return [v["message"] for v in policy["validations"] if not _eval(v["expression"], activation)]


def test_the_agents_own_patch_is_admitted(policy):
    old = warming_node()
    new = merge_patch(old, untaint_patch(old, L.TAINT_WARMING))
    assert [t["key"] for t in new["spec"]["taints"]] == ["nvidia.com/gpu", "workload"]
    assert denials(policy, old, new) == []


def test_only_its_own_node(policy):
    old = warming_node()
    new = merge_patch(old, untaint_patch(old, L.TAINT_WARMING))
    assert denials(policy, old, new, bound_to="another-node") == [
        "kiln-model-warmup may only change the node its pod runs on"]


def changed(**patch) -> tuple[dict, dict]:
    old = warming_node()
    return old, merge_patch(old, patch)


TAINT_RULE = f"kiln-model-warmup may only remove the {L.TAINT_WARMING} taint, and change no other taint"
WARM = [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"},
        {"key": "workload", "value": "training", "effect": "NoSchedule"}]


@pytest.mark.parametrize("patch,message", [
    ({"spec": {"taints": WARM + [{"key": "extra", "value": "x", "effect": "NoExecute"}]}}, TAINT_RULE),
    # Same key and effect, another value: the old rule compared key and effect only and let this through.
    ({"spec": {"taints": [{**WARM[0], "value": "false"}, {"key": L.TAINT_WARMING, "value": "true",
                                                          "effect": "NoSchedule"}, WARM[1]]}}, TAINT_RULE),
    ({"spec": {"taints": [WARM[0], {"key": L.TAINT_WARMING, "value": "true", "effect": "NoSchedule"}]}}, TAINT_RULE),
    ({"metadata": {"annotations": {"cluster-autoscaler.kubernetes.io/scale-down-disabled": "true"}}},
     "kiln-model-warmup may not change node annotations (e.g. cluster-autoscaler's scale-down-disabled)"),
    ({"metadata": {"annotations": {"node.alpha.kubernetes.io/ttl": None}}},
     "kiln-model-warmup may not change node annotations (e.g. cluster-autoscaler's scale-down-disabled)"),
    ({"metadata": {"finalizers": ["example.com/hold"]}}, "kiln-model-warmup may not change node finalizers"),
    ({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}]}},
     "kiln-model-warmup may not change node owner references"),
    ({"metadata": {"labels": {L.LABEL_MODEL_VERSION: "v6"}}}, "kiln-model-warmup may not change node labels"),
    ({"spec": {"unschedulable": True}}, "kiln-model-warmup may not change whether the node is cordoned"),
    ({"spec": {"podCIDR": "10.9.9.0/24"}}, "kiln-model-warmup may not change the node's pod CIDR"),
    ({"spec": {"providerID": "aws:///us-east-2a/i-0other"}}, "kiln-model-warmup may not change the node's provider ID"),
], ids=["add-taint", "change-taint-value", "remove-other-taint", "add-annotation", "remove-annotation",
        "add-finalizer", "add-owner", "change-label", "cordon", "pod-cidr", "provider-id"])
def test_every_other_change_is_denied(policy, patch, message):
    old, new = changed(**patch)
    assert message in denials(policy, old, new)


def test_removing_the_warming_taint_and_anything_else_at_once_is_denied(policy):
    old = warming_node()
    new = merge_patch(old, {**untaint_patch(old, L.TAINT_WARMING), "metadata": {"finalizers": ["x/y"]}})
    assert denials(policy, old, new) == ["kiln-model-warmup may not change node finalizers"]


def test_the_policy_applies_only_to_the_warmup_service_account(policy):
    old, new = changed(metadata={"finalizers": ["example.com/hold"]})
    assert denials(policy, old, new, user="system:node:ip-10-0-1-23.us-east-2.compute.internal") is None
    assert policy["failurePolicy"] == "Fail"
