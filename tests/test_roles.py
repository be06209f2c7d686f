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

from _program_helpers import BASE, program_scope, run, with_changes
from automation.bake.recipe import MANIFEST_NAME, TAG_RECIPE
from infra.labels import BAKE_KEY_GRANT_OPERATIONS
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
PERMISSION_ONLY = {"iam:PassRole", "sts:TagSession", "s3:ListBucket",
                   "kms:ReEncryptFrom", "kms:ReEncryptTo"}   # the two halves of the ReEncrypt operation
BUCKET = "example-ml-models"


@pytest.fixture(scope=program_scope)
def program():
    return run(BASE)


@pytest.fixture(scope=program_scope)
def with_ci():
    return run(with_changes(BASE, ciOidc=CI, modelBucket=BUCKET))


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
        "ReadEksAmiParameters", "ReadModelManifests", "DescribeReadOnly", "ReadThisClustersBakeKeys",
        "EncryptBuilderVolumesWithThisClustersBakeKeys", "ShareThisClustersBakeKeysWithAccounts", "ReadImageSizes",
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
    assert deny["Condition"] == {
        "ForAnyValue:StringLike": {"aws:TagKeys": ["kiln.dev/cluster", "k8s.io/cluster-autoscaler/*"]},
        "ForAnyValue:StringNotEquals": {"aws:TagKeys": ["k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model-version"]}}


@pytest.mark.parametrize("keys, allowed", [
    # The one CA tag a rotation's `up` changes with the AMI: the node template's model-version label.
    (["k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model-version"], True),
    (["kiln.dev/rollout-state"], True),                      # the rollout's own tags
    (["kiln.dev/cluster"], False),                          # ownership: never
    (["k8s.io/cluster-autoscaler/enabled"], False),
    (["k8s.io/cluster-autoscaler/other-cluster"], False),   # would hand the group to another cluster's autoscaler
    (["k8s.io/cluster-autoscaler/node-template/label/team"], False),
    (["k8s.io/cluster-autoscaler/node-template/taint/workload"], False),
    # Named beside the model-version label, an ownership key is still refused.
    (["k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model-version", "kiln.dev/cluster"], False),
    (["k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model-version", "k8s.io/cluster-autoscaler/x"], False),
])
def test_ownership_tags_stay_but_the_model_version_template_label_may_change(program, keys, allowed):
    asg = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:uuid:autoScalingGroupName/kiln-test-cpu-a"
    context = {"autoscaling:ResourceTag/kiln.dev/cluster": "kiln-test", "aws:TagKeys": keys}
    statements = list(rollout_statements(program).values())
    for action in ("autoscaling:CreateOrUpdateTags", "autoscaling:DeleteTags"):
        assert permits(statements, action, asg, context) is allowed, (action, keys)


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
        if op == "ForAllValues:StringEquals":
            return all(h in values(want) for h in values(have))
        if op == "ForAnyValue:StringNotEquals":
            return any(h not in values(want) for h in values(have))
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


KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
THIS_CLUSTER = {"aws:ResourceTag/kiln.dev/cluster": "kiln-test"}


def test_bake_keys_only_customer_keys_tagged_for_this_cluster(program):
    """bake --kms-key: read the key, let EC2 encrypt the builder's volumes with it; never another key."""
    s = list(rollout_statements(program).values())
    via_ec2 = {"kms:ViaService": f"ec2.{REGION}.amazonaws.com"}
    for action in ("kms:DescribeKey", "kms:ListGrants"):
        assert permits(s, action, KEY, THIS_CLUSTER), action
    for action in roles.EBS_KEY_ACTIONS:                      # what EBS does for RunInstances/CreateImage/CopyImage
        assert permits(s, action, KEY, {**THIS_CLUSTER, **via_ec2}), action
        assert not permits(s, action, KEY, {**THIS_CLUSTER, "kms:ViaService": f"s3.{REGION}.amazonaws.com"}), action
        assert not permits(s, action, KEY, THIS_CLUSTER), action    # not called directly, only through EC2
    for other in ({}, {"aws:ResourceTag/kiln.dev/cluster": "other"}):   # untagged, or another cluster's key
        for action in ("kms:DescribeKey", "kms:ListGrants", "kms:Decrypt", "kms:CreateGrant"):
            assert not permits(s, action, KEY, {**other, **via_ec2}), (action, other)
    assert not permits(s, "kms:DescribeKey", f"arn:aws:kms:{REGION}:999999999999:key/x", THIS_CLUSTER)
    # Never key administration or data use outside EBS.
    for action in ("kms:Encrypt", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:RevokeGrant",
                   "kms:GenerateDataKey", "kms:TagResource"):
        assert not permits(s, action, KEY, {**THIS_CLUSTER, **via_ec2}), action


def test_bake_may_grant_other_accounts_exactly_the_share_operations(program):
    s = list(rollout_statements(program).values())
    share = {**THIS_CLUSTER, "kms:GrantOperations": list(BAKE_KEY_GRANT_OPERATIONS),
             "kms:GranteePrincipal": "arn:aws:iam::111122223333:root"}
    assert permits(s, "kms:CreateGrant", KEY, share)
    assert not permits(s, "kms:CreateGrant", KEY, {**share, "kms:GrantOperations": ["Decrypt", "Encrypt"]})
    assert not permits(s, "kms:CreateGrant", KEY, {**share, "kms:GrantOperations": ["Decrypt", "RetireGrant"]})
    assert not permits(s, "kms:CreateGrant", KEY, {**share, "kms:GranteePrincipal": "arn:aws:iam::111122223333:role/x"})
    assert not permits(s, "kms:CreateGrant", KEY, {**share, "aws:ResourceTag/kiln.dev/cluster": "other"})


def test_the_grant_the_bake_makes_is_one_the_role_allows(program):
    """The bake's own CreateGrant request (botocore Stubber: moto's KMS does not evaluate grants) passes the role."""
    from botocore.stub import Stubber

    from automation.bake.baker import _grant_key

    kms = boto3.client("kms", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    sent = []
    kms.meta.events.register("before-parameter-build.kms.CreateGrant", lambda params, **_: sent.append(dict(params)))
    with Stubber(kms) as stub:
        stub.add_response("list_grants", {"Grants": []}, {"KeyId": KEY})
        stub.add_response("create_grant", {"GrantToken": "t", "GrantId": "g" * 64})
        _grant_key(kms, KEY, "111122223333")
    (request,) = sent
    context = {**THIS_CLUSTER, "kms:GrantOperations": request["Operations"],
               "kms:GranteePrincipal": request["GranteePrincipal"]}
    assert permits(list(rollout_statements(program).values()), "kms:CreateGrant", request["KeyId"], context)


def test_image_sizes_only_from_this_accounts_repositories(program):
    s = list(rollout_statements(program).values())
    assert permits(s, "ecr:DescribeImages", f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/trainer", {})
    assert permits(s, "ecr:DescribeImages", f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/ml/trainer", {})
    assert not permits(s, "ecr:DescribeImages", f"arn:aws:ecr:{REGION}:999999999999:repository/trainer", {})
    assert not permits(s, "ecr:BatchGetImage", f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/trainer", {})


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
    from automation.bake.baker import SHARE_KEY_OPERATIONS
    assert set(SHARE_KEY_OPERATIONS) == set(BAKE_KEY_GRANT_OPERATIONS)


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


_CALL = re.compile(r"\b(ec2|remote|autoscaling|ssm|s3|kms|ecr)\.(?:(get_waiter|get_paginator)\(\"(\w+)\"|(\w+)\()")
_SERVICE = {"remote": "ec2"}
# Fixture set-up for the local demo, not something a bake or rollout does.
_NOT_ROLLOUT = {"localaws.py", "demo.py"}


def automation_calls() -> set[str]:
    """``service:Operation`` for every boto3 call in the automation (waiters -> the operation they poll)."""
    found: set[str] = set()
    for path in sorted((ROOT / "automation").rglob("*.py")):
        if path.name in _NOT_ROLLOUT or "sim" in path.parts or "termination" in path.parts:
            continue   # the termination handler runs with its own role (checked below)
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
            "ec2:DescribeImages", "ssm:GetCommandInvocation", "kms:CreateGrant", "kms:DescribeKey",
            "ecr:DescribeImages"} <= calls   # the scan sees the automation, the bake's KMS and ECR reads too
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


def test_the_ci_trust_names_one_subject_with_string_equals():
    trust = json.loads(roles.oidc_trust("arn:aws:iam::1:oidc-provider/gitlab.example.com", "https://gitlab.example.com/",
                                        "https://gitlab.example.com", "project_path:acme/kiln:ref_type:branch:ref:main"))
    [stmt] = trust["Statement"]
    assert stmt["Condition"] == {"StringEquals": {
        "gitlab.example.com:aud": "https://gitlab.example.com",
        "gitlab.example.com:sub": "project_path:acme/kiln:ref_type:branch:ref:main"}}


def test_a_subject_pattern_is_refused_not_widened_with_string_like():
    """kiln:ciOidc refuses wildcard subjects (infra/ci_oidc.py); the trust builder refuses them too."""
    with pytest.raises(ValueError, match="wildcard"):
        roles.oidc_trust("arn:aws:iam::1:oidc-provider/gitlab.example.com", "https://gitlab.example.com/",
                         "https://gitlab.example.com", "project_path:acme/kiln:ref_type:branch:ref:*")


# ---- Kubernetes access for the rollout role -----------------------------------------------------------------

# Every kubernetes-client call the rollout adapter makes -> (api group, resource, verb) RBAC must allow.
KUBE_CALLS = {
    "list_node": ("", "nodes", "list"),
    "read_node": ("", "nodes", "get"),
    "patch_node": ("", "nodes", "patch"),
    "list_pod_for_all_namespaces": ("", "pods", "list"),          # and watch: the adapter streams it
    "create_namespaced_pod_eviction": ("", "pods/eviction", "create"),
    "list_job_for_all_namespaces": ("batch", "jobs", "list"),
    "list_pod_disruption_budget_for_all_namespaces": ("policy", "poddisruptionbudgets", "list"),
    "read_namespaced_deployment_scale": ("apps", "deployments/scale", "get"),
    "patch_namespaced_deployment_scale": ("apps", "deployments/scale", "patch"),
    "read_namespaced_lease": ("coordination.k8s.io", "leases", "get"),
    "create_namespaced_lease": ("coordination.k8s.io", "leases", "create"),
    "patch_namespaced_lease": ("coordination.k8s.io", "leases", "patch"),
    # the rotation's intent (automation/rotate/state.py): rotate, rollback and guard
    "read_namespaced_config_map": ("", "configmaps", "get"),
    "create_namespaced_config_map": ("", "configmaps", "create"),
    "patch_namespaced_config_map": ("", "configmaps", "patch"),
    "create_namespaced_event": ("events.k8s.io", "events", "create"),
    "patch_namespaced_event": ("events.k8s.io", "events", "patch"),
}
# Where those calls live: the rollout adapter, and the rotation's intent store.
KUBE_SOURCES = (("automation", "rollout", "kube.py"), ("automation", "rotate", "state.py"))


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

    from automation.rotate import state
    from infra.labels import rotation_configmap

    made = set()
    for parts in KUBE_SOURCES:
        found = set(re.findall(r"self\.(?:core|apps|batch|policy|coordination|events)\.(\w+)", ROOT.joinpath(*parts).read_text()))
        assert found, parts          # the scan sees each source
        made |= found
    assert made <= set(KUBE_CALLS), f"unmapped kubernetes calls: {made - set(KUBE_CALLS)}"
    assert {"read_namespaced_config_map", "create_namespaced_config_map", "patch_namespaced_config_map"} <= made

    cluster_role, cluster_rules = _rbac_rules(program, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    role, ns_rules = _rbac_rules(program, "kubernetes:rbac.authorization.k8s.io/v1:Role")
    assert role.inputs["metadata"]["namespace"] == kube.DEFAULT_LEASE_NAMESPACE == kube.DEFAULT_AUTOSCALER_NAMESPACE \
        == state.NAMESPACE
    # The program's stack is "test" (tests/_program_helpers): the rotation of that stack uses exactly this name.
    intent_name = state.ClusterIntentStore.name(None, "test")
    assert intent_name == rotation_configmap("org/kiln/test") == "kiln-rotation-test"
    names = {"deployments/scale": kube.DEFAULT_AUTOSCALER_NAME, "leases": kube.DEFAULT_LEASE_NAME,
             "configmaps": intent_name}
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
    assert not any(res in ("secrets", "pods/exec") for r in every for res in r["resources"])
    assert not _allowed(cluster_rules, "", "pods", "delete") and not _allowed(cluster_rules, "", "pods", "patch")
    assert not _allowed(cluster_rules, "", "nodes", "delete")     # the rollout never deletes a node object
    assert not _allowed(ns_rules, "apps", "deployments/scale", "patch", "coredns")
    # ConfigMaps: only the rotation's own is read or changed (never coredns, kube-proxy, aws-auth, another stack's),
    # only in kube-system, never deleted.
    assert not any(res == "configmaps" for r in cluster_rules for res in r["resources"])
    for other in ("coredns", "kube-proxy", "aws-auth", "kiln-rotation-staging"):
        assert not _allowed(ns_rules, "", "configmaps", "get", other) and not _allowed(ns_rules, "", "configmaps",
                                                                                       "patch", other), other
    assert not _allowed(ns_rules, "", "configmaps", "delete", intent_name)
    assert not _allowed(ns_rules, "", "configmaps", "list") and not _allowed(ns_rules, "", "configmaps", "update",
                                                                             intent_name)


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


# ---- the bake builder: its own role, reading only kiln:modelBucket (issue 12, point 2) ----------------------


@pytest.fixture(scope=program_scope)
def with_bucket():
    return run(with_changes(BASE, modelBucket=BUCKET))


def builder_statements(program) -> list[dict]:
    return json.loads(program.one(POLICY, "bake-builder").inputs["policy"])["Statement"]


def test_builder_reads_the_model_bucket_and_no_other(with_bucket):
    s = builder_statements(with_bucket)
    assert permits(s, "s3:GetObject", f"arn:aws:s3:::{BUCKET}/v6/weights.bin", {})
    assert permits(s, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {})
    for action, resource in (("s3:GetObject", "arn:aws:s3:::other-bucket/v6/weights.bin"),
                             ("s3:GetObject", f"arn:aws:s3:::{BUCKET}-backup/v6/weights.bin"),
                             ("s3:ListBucket", "arn:aws:s3:::other-bucket"),
                             ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/v6/weights.bin"),
                             ("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/v6/weights.bin")):
        assert not permits(s, action, resource, {}), (action, resource)
    assert {a for st in s for a in st["Action"] if a.startswith("s3:")} == {"s3:GetObject", "s3:ListBucket"}


def test_builder_decrypts_only_this_buckets_objects_and_only_through_s3(with_bucket):
    s = builder_statements(with_bucket)
    key = "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    via_s3 = {"kms:ViaService": "s3.us-east-2.amazonaws.com"}
    assert permits(s, "kms:Decrypt", key, {**via_s3, "kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{BUCKET}/v6/w"})
    assert permits(s, "kms:Decrypt", key, {**via_s3, "kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{BUCKET}"})
    assert not permits(s, "kms:Decrypt", key, {**via_s3, "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::other/x"})
    assert not permits(s, "kms:Decrypt", key, {"kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{BUCKET}/v6/w"})
    assert not permits(s, "kms:Decrypt", key, {"kms:ViaService": "secretsmanager.us-east-2.amazonaws.com",
                                               "kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{BUCKET}/v6/w"})


def test_builder_writes_logs_only_under_kiln_bake(with_bucket):
    s = builder_statements(with_bucket)
    logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group"
    assert permits(s, "logs:PutLogEvents", f"{logs}:/kiln/bake/v6:log-stream:i-0abc", {})
    assert permits(s, "logs:CreateLogStream", f"{logs}:/kiln/bake/v6", {})
    assert not permits(s, "logs:PutLogEvents", f"{logs}:/aws/eks/kiln-test/cluster:log-stream:x", {})
    # The group /kiln/bake itself (bake --log-group /kiln/bake) ...
    assert permits(s, "logs:CreateLogGroup", f"{logs}:/kiln/bake", {})
    assert permits(s, "logs:PutLogEvents", f"{logs}:/kiln/bake:log-stream:cmd/i-0abc/aws-runShellScript/stdout", {})
    # ... but no group that merely starts with the same letters.
    for sibling in ("/kiln/bakery", "/kiln/bake-prod", "/kiln/bake2"):
        assert not permits(s, "logs:CreateLogGroup", f"{logs}:{sibling}", {}), sibling
        assert not permits(s, "logs:PutLogEvents", f"{logs}:{sibling}:log-stream:x", {}), sibling


def test_builder_runs_ssm_and_pulls_from_ecr_with_the_managed_policies_only(with_bucket):
    role = with_bucket.one(ROLE, "bake-builder")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]
    attach = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
    attached = sorted(a.inputs["policyArn"] for a in with_bucket.of_type(attach) if a.inputs["role"] == role.outputs["name"])
    assert attached == ["arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
                        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    # The node role gains nothing: no model bucket on nodes.
    node = with_bucket.one(ROLE, "cluster-node")
    assert not [p for p in with_bucket.of_type(POLICY) if p.inputs["role"] == node.outputs["name"]]
    profile = with_bucket.one("aws:iam/instanceProfile:InstanceProfile", "bake-builder")
    assert profile.inputs["role"] == role.outputs["name"]
    grants = {r.urn for r in with_bucket.of_type(attach) + with_bucket.of_type(POLICY)
              if r.inputs["role"] in (role.outputs["name"], role.outputs["id"])}
    assert len(grants) == 3 and grants <= set(profile.dependencies)   # no builder boots without its permissions
    assert with_bucket.outputs["builderInstanceProfile"] == profile.outputs["name"]


def test_rollout_role_may_pass_the_builder_role_and_reads_manifests_only_in_the_model_bucket(with_bucket):
    s = rollout_statements(with_bucket)
    allows(s["PassOnlyTheBuilderRoleToEc2"], ["iam:PassRole"],
           [with_bucket.one(ROLE, "cluster-node").outputs["arn"], with_bucket.one(ROLE, "bake-builder").outputs["arn"]],
           {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}})
    allows(s["ReadModelManifests"], ["s3:GetObject"],
           [f"arn:aws:s3:::{BUCKET}/MANIFEST.sha256", f"arn:aws:s3:::{BUCKET}/*/MANIFEST.sha256"])


def test_without_a_model_bucket_there_is_no_builder(program):
    assert program.of_type("kiln:infra:BakeBuilder") == []
    assert "builderInstanceProfile" not in program.outputs
    assert [r.name for r in program.of_type(ROLE) if r.name == "bake-builder"] == []


# ---- an existing CI OIDC provider (issue 12, point 13) ---------------------------------------------------------


def test_an_existing_oidc_provider_is_trusted_and_none_is_created():
    arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    r = run(with_changes(BASE, ciOidc={**CI, "providerArn": arn}))
    assert r.of_type(OIDC) == []
    [stmt] = json.loads(r.one(ROLE, "ci-deploy").inputs["assumeRolePolicy"])["Statement"]
    assert stmt["Principal"] == {"Federated": arn}
    assert stmt["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == CI["subject"]


def test_an_existing_oidc_provider_must_accept_the_audience():
    """STS refuses a web identity token whose audience the provider does not list: every CI `up` would fail."""
    from _program_helpers import AccountMocks
    from infra.config import ConfigError
    from policies.program import run_program

    arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    cfg = with_changes(BASE, ciOidc={**CI, "providerArn": arn})
    with pytest.raises(ConfigError) as info:
        run_program(cfg, mocks=AccountMocks({"oidcAudiences": ["https://github.com/acme"]}))
    assert info.value.problems == [
        f"kiln:ciOidc.providerArn ({arn}) does not list ciOidc.audience (sts.amazonaws.com) among its client IDs "
        "(https://github.com/acme): STS would refuse every CI token; add the audience to the provider or use one "
        "of its client IDs"]
    assert info.value.program_run.resources == []
    assert run(cfg, {"oidcAudiences": ["https://github.com/acme", "sts.amazonaws.com"]}).of_type(OIDC) == []


def test_an_oidc_provider_iam_cannot_read_names_provider_arn():
    """Another account's provider (or a deleted one): the role could never be assumed with it."""
    from _program_helpers import AccountMocks
    from infra.config import ConfigError
    from policies.program import run_program

    arn = "arn:aws:iam::999999999999:oidc-provider/token.actions.githubusercontent.com"
    with pytest.raises(ConfigError) as info:
        run_program(with_changes(BASE, ciOidc={**CI, "providerArn": arn}), mocks=AccountMocks({}))
    [problem] = info.value.problems
    assert problem.startswith(f"kiln:ciOidc.providerArn ({arn}) could not be read from AWS:") and "NoSuchEntity" in problem


# ---- the termination handler's role and RBAC: exactly the calls its code makes (issue 10) ----------------------

HANDLER_IMAGE = "123456789012.dkr.ecr.us-east-2.amazonaws.com/kiln-termination-handler@sha256:" + "c" * 64
_HANDLER_CALL = re.compile(r"\b(sqs|autoscaling|lifecycle_client)\.(?:get_paginator\(\"(\w+)\"\)|(\w+)\b)")
_HANDLER_SERVICE = {"lifecycle_client": "autoscaling"}   # the Auto Scaling client for heartbeats and completes


@pytest.fixture(scope=program_scope)
def with_handler():
    return run(with_changes(BASE, terminationHandlerImage=HANDLER_IMAGE))


def handler_calls() -> set[str]:
    """``service:Operation`` for every boto3 call (or call passed on) in automation/termination."""
    found: set[str] = set()
    for path in sorted((ROOT / "automation" / "termination").rglob("*.py")):
        for receiver, paginated, method in _HANDLER_CALL.findall(path.read_text()):
            service = _HANDLER_SERVICE.get(receiver, receiver)
            names = _by_python_name(service)
            name = paginated or method
            if name in names:
                found.add(f"{service}:{names[name]}")
    return found


def test_the_handler_role_allows_exactly_the_calls_the_handler_makes(with_handler):
    calls = handler_calls()
    assert calls == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "autoscaling:DescribeAutoScalingGroups",
                     "autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"}
    doc = json.loads(with_handler.one(POLICY, "termination-irsa").inputs["policy"])
    granted = {a for s in doc["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}
    assert granted == calls
    for action in granted:
        service, op = action.split(":")
        assert op in _operations(service), action
    for stmt in doc["Statement"]:
        assert not star_on_star(stmt) and not any("*" in a for a in stmt["Action"])


def test_the_handler_may_hold_only_this_clusters_instances(with_handler):
    s = json.loads(with_handler.one(POLICY, "termination-irsa").inputs["policy"])["Statement"]
    queue = with_handler.one("aws:sqs/queue:Queue", "termination").outputs["arn"]
    ours = {"autoscaling:ResourceTag/kiln.dev/cluster": "kiln-test"}
    for action in ("autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"):
        assert permits(s, action, f"{ASGS[:-1]}kiln-test-cpu", ours)
        assert not permits(s, action, f"{ASGS[:-1]}other-cpu", {"autoscaling:ResourceTag/kiln.dev/cluster": "other"})
        assert not permits(s, action, f"{ASGS[:-1]}untagged", {})
    assert permits(s, "sqs:ReceiveMessage", queue, {}) and permits(s, "sqs:DeleteMessage", queue, {})
    assert not permits(s, "sqs:ReceiveMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:someone-elses-queue", {})
    assert not permits(s, "sqs:SendMessage", queue, {})
    assert not permits(s, "autoscaling:TerminateInstanceInAutoScalingGroup", f"{ASGS[:-1]}kiln-test-cpu", ours)


# Every kubernetes-client call the handler's adapter makes -> (api group, resource, verb).
HANDLER_KUBE_CALLS = {
    "list_node": ("", "nodes", "list"),
    "read_node": ("", "nodes", "get"),
    "patch_node": ("", "nodes", "patch"),
    "list_pod_for_all_namespaces": ("", "pods", "list"),
    "create_namespaced_pod_eviction": ("", "pods/eviction", "create"),
    "read_namespaced_job": ("batch", "jobs", "get"),
    "list_pod_disruption_budget_for_all_namespaces": ("policy", "poddisruptionbudgets", "list"),
    "create_namespaced_event": ("events.k8s.io", "events", "create"),
    "read_namespaced_lease": ("coordination.k8s.io", "leases", "get"),
    "patch_namespaced_lease": ("coordination.k8s.io", "leases", "patch"),
    "create_namespaced_lease": ("coordination.k8s.io", "leases", "create"),
}


def test_the_handlers_rbac_allows_exactly_the_calls_its_adapter_makes(with_handler):
    from infra import termination

    source = (ROOT / "automation" / "termination" / "kube.py").read_text()
    made = set(re.findall(r"self\.(?:core|batch|policy|events|coordination)\.(\w+)", source))
    assert made == set(HANDLER_KUBE_CALLS), f"unmapped or unused: {made ^ set(HANDLER_KUBE_CALLS)}"
    [cr] = [r for r in with_handler.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole") if r.name == "termination-rbac"]
    [role] = [r for r in with_handler.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role") if r.name == "termination-lease"]
    granted = {(g, res, v) for r in cr.inputs["rules"] for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    needed = {call for name, call in HANDLER_KUBE_CALLS.items() if call[0] != "coordination.k8s.io"}
    assert granted == needed
    for name, (group, resource, verb) in HANDLER_KUBE_CALLS.items():
        if group == "coordination.k8s.io":
            names = None if verb == "create" else termination.LEASE_NAME
            assert _allowed(role.inputs["rules"], group, resource, verb, names), name
    lease = {(g, res, v) for r in role.inputs["rules"] for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    assert lease == {c for c in HANDLER_KUBE_CALLS.values() if c[0] == "coordination.k8s.io"}
    assert not _allowed(role.inputs["rules"], "coordination.k8s.io", "leases", "patch", "kiln-rollout")



# ---- the rollout role as the CI rotation role (kiln:ciOidc.rotation) ---------------------------------------

ROTATION_CI = {**CI, "rotation": {"subject": "repo:acme/kiln:environment:rotation"},
               "stateBackend": "s3://acme-state/kiln"}


def test_the_rotation_role_trusts_only_the_rotation_job_and_may_write_the_stack_state():
    from infra import ci_oidc, ci_roles
    prog = run(with_changes(BASE, ciOidc=ROTATION_CI))
    role, provider = prog.one(ROLE, "rollout"), prog.one(OIDC)
    # Trusted by the rotation job's token only: this provider, its audience, the rotation subject.
    assert json.loads(role.inputs["assumeRolePolicy"]) == json.loads(ci_oidc.web_identity_trust(
        provider.outputs["arn"], CI["providerUrl"], CI["audience"], "repo:acme/kiln:environment:rotation"))
    assert role.inputs["maxSessionDuration"] == roles.MAX_SESSION_SECONDS
    assert role.inputs["tags"] == {"kiln.dev/cluster": "kiln-test"}
    # The gated `up` writes the stack's state and takes its lock: a write policy on this role, not a read one.
    state = prog.one(POLICY, "rollout-state")
    assert state.inputs["role"] == role.id
    written = json.loads(state.inputs["policy"])
    assert written == json.loads(ci_roles.state_policy("aws", "acme-state", "kiln/", None, write=True))
    assert written != json.loads(ci_roles.state_policy("aws", "acme-state", "kiln/", None, write=False))
    # Everything the role is made of is a child of its component (one place in `pulumi stack`, one delete).
    component = next(r for r in prog.resources if r.type == "kiln:infra:RolloutRole")
    for r in prog.resources:
        if r.name.startswith("rollout") and r.type.startswith("aws:iam/"):
            assert r.parent == component.urn, r.name
    # The CI deploy role: the same session length and tags.
    deploy = prog.one(ROLE, "ci-deploy")
    assert deploy.inputs["maxSessionDuration"] == roles.MAX_SESSION_SECONDS
    assert deploy.inputs["tags"] == {"kiln.dev/cluster": "kiln-test"}

