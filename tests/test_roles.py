"""The rollout role and the CI deploy role: every statement asserted, and checked against what the automation calls."""

from __future__ import annotations

import fnmatch
import json
import re
from functools import lru_cache
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore import xform_name

from _program_helpers import BASE, run, with_changes
from automation.bake.recipe import MANIFEST_NAME, TAG_RECIPE
from infra import roles
from policies.rules.iam import star_on_star

ROOT = Path(__file__).resolve().parent.parent
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/rolePolicy:RolePolicy"
OIDC = "aws:iam/openIdConnectProvider:OpenIdConnectProvider"
ACCOUNT, REGION = "123456789012", "us-east-2"
EC2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
ASGS = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/*"
CI = {"providerUrl": "https://token.actions.githubusercontent.com", "audience": "sts.amazonaws.com",
      "subject": "repo:acme/kiln:ref:refs/heads/main"}
# IAM permissions that are not API operations.
PERMISSION_ONLY = {"iam:PassRole", "sts:TagSession"}


@pytest.fixture(scope="module")
def program():
    return run(BASE)


@pytest.fixture(scope="module")
def with_ci():
    return run(with_changes(BASE, ciOidc=CI))


def rollout_statements(program) -> dict[str, dict]:
    doc = json.loads(program.one(POLICY, "rollout").inputs["policy"])
    assert doc["Version"] == "2012-10-17"
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert len(by_sid) == len(doc["Statement"])
    return by_sid


def allows(stmt: dict, actions: list[str], resources, conditions=None) -> None:
    assert stmt["Effect"] == "Allow", stmt["Sid"]
    assert stmt["Action"] == sorted(actions), stmt["Sid"]
    assert stmt["Resource"] == (resources if isinstance(resources, str) else sorted(resources)), stmt["Sid"]
    assert stmt.get("Condition") == conditions, stmt["Sid"]


# ---- the rollout role, statement by statement ------------------------------------------------------------


def test_rollout_statements_are_exactly_these(program):
    assert set(rollout_statements(program)) == {
        "AsgMutationsThisClusterOnly", "KeepOwnershipTags", "LaunchTemplatesThisClusterOnly", "DescribeThisCluster",
        "LaunchOnlyTaggedBuilders", "LaunchFromThisClustersTemplates", "LaunchBuilderFrom", "TagOnCreateOnly", "BuilderInstancesOnly",
        "CreateAndTagImages", "ManageOnlyKilnImages", "BuilderSecurityGroupIn", "CreateOnlyKilnSecurityGroups",
        "DeleteOnlyKilnSecurityGroups", "PassOnlyTheBuilderRoleToEc2", "RunOnlyTheBakeDocument", "OnlyOnBuilders",
        "ReadEksAmiParameters", "ReadModelManifests", "DescribeReadOnly",
    }


def test_asg_mutations_only_on_groups_tagged_for_this_cluster(program):
    s = rollout_statements(program)
    allows(s["AsgMutationsThisClusterOnly"],
           ["autoscaling:SetDesiredCapacity", "autoscaling:UpdateAutoScalingGroup",
            "autoscaling:TerminateInstanceInAutoScalingGroup", "autoscaling:SetInstanceProtection",
            "autoscaling:CreateOrUpdateTags", "autoscaling:DeleteTags"],
           [ASGS], {"StringEquals": {"autoscaling:ResourceTag/kiln.dev/cluster": "kiln-test"}})
    deny = s["KeepOwnershipTags"]
    assert deny["Effect"] == "Deny"
    assert deny["Action"] == ["autoscaling:CreateOrUpdateTags", "autoscaling:DeleteTags"]
    assert deny["Condition"] == {"ForAnyValue:StringLike": {
        "aws:TagKeys": ["kiln.dev/cluster", "k8s.io/cluster-autoscaler/*"]}}


def test_launch_templates_only_this_clusters(program):
    allows(rollout_statements(program)["LaunchTemplatesThisClusterOnly"],
           ["ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate", "ec2:RunInstances"],
           [f"{EC2}:launch-template/*"], {"StringEquals": {"aws:ResourceTag/kiln.dev/cluster": "kiln-test"}})
    allows(rollout_statements(program)["DescribeThisCluster"], ["eks:DescribeCluster"],
           [f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/kiln-test"])


def test_builder_is_launched_tagged_and_only_tagged_builders_are_stopped_imaged_terminated(program):
    s = rollout_statements(program)
    allows(s["LaunchOnlyTaggedBuilders"], ["ec2:RunInstances"], [f"{EC2}:instance/*"],
           {"StringEquals": {"aws:RequestTag/kiln.dev/role": "ami-builder"}})
    allows(s["LaunchBuilderFrom"], ["ec2:RunInstances"],
           [f"arn:aws:ec2:{REGION}::image/*", f"{EC2}:subnet/*", f"{EC2}:security-group/*",
            f"{EC2}:network-interface/*", f"{EC2}:volume/*"])
    allows(s["TagOnCreateOnly"], ["ec2:CreateTags"],
           [f"{EC2}:instance/*", f"{EC2}:volume/*", f"{EC2}:network-interface/*", f"{EC2}:security-group/*"],
           {"StringEquals": {"ec2:CreateAction": ["CreateSecurityGroup", "RunInstances"]}})
    allows(s["BuilderInstancesOnly"], ["ec2:CreateImage", "ec2:StopInstances", "ec2:TerminateInstances"],
           [f"{EC2}:instance/*"], {"StringEquals": {"aws:ResourceTag/kiln.dev/role": "ami-builder"}})


def permits(statements, action: str, resource: str, context: dict) -> bool:
    """IAM's verdict for one (action, resource) under ``context``: an explicit Deny wins, else any Allow.

    Only the condition operators kiln's documents use; a missing key fails every operator but Null.
    """
    def values(v):
        return v if isinstance(v, list) else [v]

    def holds(op: str, key: str, want) -> bool:
        have = context.get(key)
        if op == "Null":
            return (have is None) == (str(want).lower() == "true")
        if have is None:
            return False
        if op == "StringEquals":
            return any(h in values(want) for h in values(have))
        if op in ("StringLike", "ArnLike", "ForAnyValue:StringLike"):
            return any(fnmatch.fnmatchcase(h, w) for h in values(have) for w in values(want))
        raise AssertionError(f"operator {op} not modelled")

    def matches(stmt) -> bool:
        return (action in values(stmt["Action"])
                and any(fnmatch.fnmatchcase(resource, r) for r in values(stmt["Resource"]))
                and all(holds(op, k, v) for op, keys in stmt.get("Condition", {}).items() for k, v in keys.items()))

    hits = [s for s in statements if matches(s)]
    return bool(hits) and all(s["Effect"] == "Allow" for s in hits)


def test_asg_update_to_a_template_version_passes_autoscalings_run_instances_check(program):
    # UpdateAutoScalingGroup(LaunchTemplate=<id, version>) is refused ("not authorized to use launch template")
    # unless the caller could RunInstances from that template: every resource it launches, tagged on create.
    s = list(rollout_statements(program).values())
    lt = f"{EC2}:launch-template/lt-0123456789abcdef0"
    via_lt = {"ec2:LaunchTemplate": lt}
    assert permits(s, "ec2:RunInstances", lt, {**via_lt, "aws:ResourceTag/kiln.dev/cluster": "kiln-test"})
    for res in (f"{EC2}:instance/*", f"{EC2}:volume/*", f"{EC2}:network-interface/*", f"{EC2}:subnet/subnet-1",
                f"{EC2}:security-group/sg-1", f"arn:aws:ec2:{REGION}::image/ami-1"):
        assert permits(s, "ec2:RunInstances", res, via_lt), res
    for kind in ("instance", "volume", "network-interface"):   # the node templates' tag specifications
        assert permits(s, "ec2:CreateTags", f"{EC2}:{kind}/x", {"ec2:CreateAction": "RunInstances"}), kind
    # Still no instance outside a template unless it is a tagged builder, and no other cluster's template.
    assert not permits(s, "ec2:RunInstances", f"{EC2}:instance/*", {})
    assert permits(s, "ec2:RunInstances", f"{EC2}:instance/*", {"aws:RequestTag/kiln.dev/role": "ami-builder"})
    assert not permits(s, "ec2:RunInstances", lt, {**via_lt, "aws:ResourceTag/kiln.dev/cluster": "other"})
    assert not permits(s, "ec2:CreateTags", f"{EC2}:instance/x", {})


def test_bake_may_copy_and_tag_its_image_in_another_region(program):
    # `bake --copy-to-region eu-west-1` calls CopyImage and CreateTags with a client in eu-west-1: IAM
    # authorises them against the new image and snapshots there, not in the stack's region.
    s = list(rollout_statements(program).values())
    for action in ("ec2:CopyImage", "ec2:CreateTags"):
        assert permits(s, action, "arn:aws:ec2:eu-west-1::image/ami-0copy", {}), action
    assert permits(s, "ec2:CopyImage", "arn:aws:ec2:eu-west-1::snapshot/snap-0copy", {})
    # Deleting or sharing stays limited to kiln's own images.
    assert not permits(s, "ec2:DeregisterImage", f"arn:aws:ec2:{REGION}::image/ami-1", {})


def test_images_created_by_the_bake_and_only_kiln_images_deleted_or_shared(program):
    s = rollout_statements(program)
    images = [f"arn:aws:ec2:{REGION}::image/*", f"arn:aws:ec2:{REGION}::snapshot/*"]
    allows(s["CreateAndTagImages"], ["ec2:CopyImage", "ec2:CreateImage", "ec2:CreateTags"],
           ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*::snapshot/*"])
    allows(s["ManageOnlyKilnImages"],
           ["ec2:DeleteSnapshot", "ec2:DeregisterImage", "ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute"],
           images, {"Null": {"aws:ResourceTag/kiln:recipe": "false"}})


def test_builder_security_group_is_kilns_own(program):
    s = rollout_statements(program)
    allows(s["BuilderSecurityGroupIn"], ["ec2:CreateSecurityGroup"], [f"{EC2}:vpc/*"])
    allows(s["CreateOnlyKilnSecurityGroups"], ["ec2:CreateSecurityGroup"], [f"{EC2}:security-group/*"],
           {"Null": {"aws:RequestTag/kiln:recipe": "false"}})
    allows(s["DeleteOnlyKilnSecurityGroups"], ["ec2:DeleteSecurityGroup"], [f"{EC2}:security-group/*"],
           {"Null": {"aws:ResourceTag/kiln:recipe": "false"}})


def test_pass_role_only_for_the_builder_role_and_only_to_ec2(program):
    node_role_arn = program.one(ROLE, "cluster-node").outputs["arn"]
    allows(rollout_statements(program)["PassOnlyTheBuilderRoleToEc2"], ["iam:PassRole"], [node_role_arn],
           {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}})


def test_send_command_only_the_bake_document_and_only_to_builders(program):
    s = rollout_statements(program)
    allows(s["RunOnlyTheBakeDocument"], ["ssm:SendCommand"],
           [f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript"])
    allows(s["OnlyOnBuilders"], ["ssm:SendCommand"], [f"{EC2}:instance/*"],
           {"StringEquals": {"ssm:resourceTag/kiln.dev/role": "ami-builder"}})


def test_reads_only_public_eks_ami_parameters_and_model_manifests(program):
    s = rollout_statements(program)
    allows(s["ReadEksAmiParameters"], ["ssm:GetParameter", "ssm:GetParameters"],
           [f"arn:aws:ssm:{REGION}::parameter/aws/service/eks/optimized-ami/*"])
    allows(s["ReadModelManifests"], ["s3:GetObject"],
           ["arn:aws:s3:::*/MANIFEST.sha256", "arn:aws:s3:::*/*/MANIFEST.sha256"])


def test_unscoped_statement_is_read_only(program):
    s = rollout_statements(program)
    unscoped = [st for st in s.values() if st["Resource"] == "*" or "*" in st["Resource"]]
    assert [st["Sid"] for st in unscoped] == ["DescribeReadOnly"]
    assert all(re.fullmatch(r"[a-z0-9]+:(Describe|Get|List)\w+", a) for a in s["DescribeReadOnly"]["Action"])
    assert s["DescribeReadOnly"].get("Condition") is None


def test_no_statement_anywhere_allows_star_on_star_or_wildcard_actions(with_ci):
    for reg in with_ci.of_type(POLICY):
        for stmt in json.loads(reg.inputs["policy"])["Statement"]:
            assert not star_on_star(stmt), (reg.name, stmt)
            assert not any("*" in a for a in stmt["Action"]), (reg.name, stmt)


def test_contract_constants_match_the_bake():
    # The role's scopes name the bake's tags and file; if the bake renames them, the role must follow.
    assert roles.TAG_RECIPE == TAG_RECIPE
    assert roles.MANIFEST_NAME == MANIFEST_NAME


# ---- every action is real, and every call the automation makes is allowed --------------------------------


_BOTOCORE = botocore.session.get_session()


@lru_cache(maxsize=None)
def _operations(service: str) -> frozenset[str]:
    return frozenset(_BOTOCORE.get_service_model(service).operation_names)


@lru_cache(maxsize=None)
def _by_python_name(service: str) -> dict[str, str]:
    return {xform_name(op): op for op in _operations(service)}


def test_every_action_kiln_grants_is_a_real_api_operation(with_ci):
    for reg in with_ci.of_type(POLICY):
        for stmt in json.loads(reg.inputs["policy"])["Statement"]:
            for action in stmt["Action"]:
                if action in PERMISSION_ONLY:
                    continue
                service, op = action.split(":")
                assert op in _operations(service), f"{reg.name}: {action} is not an operation of {service}"


_CALL = re.compile(r"\b(ec2|remote|autoscaling|ssm|s3)\.(?:(get_waiter|get_paginator)\(\"(\w+)\"|(\w+)\()")
_SERVICE = {"remote": "ec2"}
# Fixture set-up for the local demo, not something a bake or rollout does.
_NOT_ROLLOUT = {"localaws.py", "demo.py"}


def automation_calls() -> set[str]:
    """``service:Operation`` for every boto3 call in the automation (waiters -> the operation they poll)."""
    found: set[str] = set()
    for path in sorted((ROOT / "automation").rglob("*.py")):
        if path.name in _NOT_ROLLOUT or "sim" in path.parts:
            continue
        for receiver, helper, helper_arg, method in _CALL.findall(path.read_text()):
            service = _SERVICE.get(receiver, receiver)
            names = _by_python_name(service)
            if helper == "get_waiter":
                client = boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
                found.add(f"{service}:{client.get_waiter(helper_arg).config.operation}")
            elif helper == "get_paginator":
                found.add(f"{service}:{names[helper_arg]}")
            elif method in names:
                found.add(f"{service}:{names[method]}")
    return found


def test_the_rollout_role_allows_every_call_the_bake_and_rollout_make(program):
    granted = {a for s in rollout_statements(program).values() if s["Effect"] == "Allow" for a in s["Action"]}
    calls = automation_calls()
    assert {"ec2:RunInstances", "ssm:SendCommand", "autoscaling:TerminateInstanceInAutoScalingGroup",
            "ec2:DescribeImages", "ssm:GetCommandInvocation"} <= calls   # the scan sees the automation
    assert calls - granted == set()


# ---- trust ----------------------------------------------------------------------------------------------


def test_without_ci_the_account_is_trusted_and_there_is_no_ci_role(program):
    trust = json.loads(program.one(ROLE, "rollout").inputs["assumeRolePolicy"])
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                                   "Action": ["sts:AssumeRole", "sts:TagSession"]}]
    assert program.of_type(OIDC) == [] and program.of_type("kiln:infra:CiDeployRole") == []
    assert "ciDeployRoleArn" not in program.outputs
    assert program.outputs["rolloutRoleArn"] == program.one(ROLE, "rollout").outputs["arn"]
    assert program.one(ROLE, "rollout").inputs["maxSessionDuration"] == 4 * 3600


def test_ci_role_is_trusted_through_the_oidc_provider_for_one_audience_and_subject(with_ci):
    provider = with_ci.one(OIDC)
    assert provider.inputs["url"] == CI["providerUrl"]
    assert provider.inputs["clientIdLists"] == [CI["audience"]]
    ci_role = with_ci.one(ROLE, "ci-deploy")
    [stmt] = json.loads(ci_role.inputs["assumeRolePolicy"])["Statement"]
    assert stmt["Effect"] == "Allow"
    assert stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert stmt["Principal"] == {"Federated": provider.outputs["arn"]}
    assert stmt["Condition"] == {"StringEquals": {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": "repo:acme/kiln:ref:refs/heads/main",
    }}
    assert with_ci.outputs["ciDeployRoleArn"] == ci_role.outputs["arn"]


def test_with_ci_only_the_ci_role_may_assume_the_rollout_role_and_it_may(with_ci):
    ci_arn = with_ci.one(ROLE, "ci-deploy").outputs["arn"]
    rollout = with_ci.one(ROLE, "rollout")
    trust = json.loads(rollout.inputs["assumeRolePolicy"])
    # AssumeRole with session tags (CI role chaining passes them by default) needs sts:TagSession on both sides.
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"AWS": ci_arn},
                                   "Action": ["sts:AssumeRole", "sts:TagSession"]}]
    grant = with_ci.one(POLICY, "rollout-assume")
    assert grant.inputs["role"] == with_ci.one(ROLE, "ci-deploy").outputs["id"]
    [stmt] = json.loads(grant.inputs["policy"])["Statement"]
    allows(stmt, ["sts:AssumeRole", "sts:TagSession"], [rollout.outputs["arn"]])
    assert set(stmt["Action"]) <= set(trust["Statement"][0]["Action"])   # what the CI may ask, the trust grants


def test_a_subject_pattern_uses_string_like():
    trust = json.loads(roles.oidc_trust("arn:aws:iam::1:oidc-provider/gitlab.example.com", "https://gitlab.example.com/",
                                        "https://gitlab.example.com", "project_path:acme/kiln:ref_type:branch:ref:*"))
    [stmt] = trust["Statement"]
    assert stmt["Condition"] == {
        "StringEquals": {"gitlab.example.com:aud": "https://gitlab.example.com"},
        "StringLike": {"gitlab.example.com:sub": "project_path:acme/kiln:ref_type:branch:ref:*"},
    }


# ---- Kubernetes access for the rollout role -----------------------------------------------------------------

# Every kubernetes-client call the rollout adapter makes -> (api group, resource, verb) RBAC must allow.
KUBE_CALLS = {
    "list_node": ("", "nodes", "list"),
    "read_node": ("", "nodes", "get"),
    "patch_node": ("", "nodes", "patch"),
    "delete_node": ("", "nodes", "delete"),
    "list_pod_for_all_namespaces": ("", "pods", "list"),          # and watch: the adapter streams it
    "create_namespaced_pod_eviction": ("", "pods/eviction", "create"),
    "list_job_for_all_namespaces": ("batch", "jobs", "list"),
    "list_pod_disruption_budget_for_all_namespaces": ("policy", "poddisruptionbudgets", "list"),
    "read_namespaced_deployment_scale": ("apps", "deployments/scale", "get"),
    "patch_namespaced_deployment_scale": ("apps", "deployments/scale", "patch"),
    "read_namespaced_lease": ("coordination.k8s.io", "leases", "get"),
    "create_namespaced_lease": ("coordination.k8s.io", "leases", "create"),
    "patch_namespaced_lease": ("coordination.k8s.io", "leases", "patch"),
    "create_namespaced_event": ("events.k8s.io", "events", "create"),
    "patch_namespaced_event": ("events.k8s.io", "events", "patch"),
}


def _rbac_rules(program, type_):
    [reg] = [r for r in program.of_type(type_) if r.name.startswith("rollout-access")]
    return reg, reg.inputs["rules"]


def _allowed(rules, group, resource, verb, name=None) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               and (not r.get("resourceNames") or name in r["resourceNames"]) for r in rules)


def test_rollout_role_is_mapped_to_its_kubernetes_group(program):
    entry = program.one("aws:eks/accessEntry:AccessEntry", "rollout-access")
    assert entry.inputs["principalArn"] == program.one(ROLE, "rollout").outputs["arn"]
    assert entry.inputs["clusterName"] == "kiln-test"
    assert entry.inputs["type"] == "STANDARD"
    assert entry.inputs["kubernetesGroups"] == ["kiln-rollout"]


def test_rbac_allows_every_call_the_rollout_adapter_makes_and_nothing_else(program):
    from automation.rollout import kube

    source = (ROOT / "automation" / "rollout" / "kube.py").read_text()
    made = set(re.findall(r"self\.(?:core|apps|batch|policy|coordination|events)\.(\w+)", source))
    assert made and made <= set(KUBE_CALLS), f"unmapped kubernetes calls: {made - set(KUBE_CALLS)}"

    cluster_role, cluster_rules = _rbac_rules(program, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    role, ns_rules = _rbac_rules(program, "kubernetes:rbac.authorization.k8s.io/v1:Role")
    assert role.inputs["metadata"]["namespace"] == kube.DEFAULT_LEASE_NAMESPACE == kube.DEFAULT_AUTOSCALER_NAMESPACE
    names = {"deployments/scale": kube.DEFAULT_AUTOSCALER_NAME, "leases": kube.DEFAULT_LEASE_NAME}
    for call in made:
        group, resource, verb = KUBE_CALLS[call]
        if "namespaced" in call and resource in names:
            assert _allowed(ns_rules, group, resource, verb, names[resource]), call
        else:
            assert _allowed(cluster_rules, group, resource, verb), call
    assert _allowed(cluster_rules, "", "pods", "watch")
    # Nothing beyond that: no secrets, no exec, no wildcard, no write to pods themselves.
    every = cluster_rules + ns_rules
    assert not any("*" in r["verbs"] or "*" in r["resources"] or "*" in r["apiGroups"] for r in every)
    assert not any(res in ("secrets", "pods/exec", "configmaps") for r in every for res in r["resources"])
    assert not _allowed(cluster_rules, "", "pods", "delete") and not _allowed(cluster_rules, "", "pods", "patch")
    assert not _allowed(ns_rules, "apps", "deployments/scale", "patch", "coredns")


def test_rbac_bindings_name_the_group(program):
    for type_, ref_kind in (("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", "ClusterRole"),
                            ("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "Role")):
        [binding] = [r for r in program.of_type(type_) if r.name.startswith("rollout-access")]
        assert binding.inputs["subjects"] == [{"kind": "Group", "name": "kiln-rollout",
                                               "apiGroup": "rbac.authorization.k8s.io"}]
        assert binding.inputs["roleRef"] == {"kind": ref_kind, "name": "kiln-rollout",
                                             "apiGroup": "rbac.authorization.k8s.io"}
        provider = program.one("pulumi:providers:kubernetes", "cluster-k8s")
        assert binding.provider.startswith(provider.urn + "::")


def test_rollout_policy_fits_the_inline_policy_size_limit(program):
    # IAM counts every character except whitespace; an inline role policy may hold 10,240.
    text = program.one(POLICY, "rollout").inputs["policy"]
    assert len(re.sub(r"\s", "", text)) < 10_240
