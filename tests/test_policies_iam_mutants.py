"""The IAM, S3 and CI-preview-role rules, each decision with the exact violations an operator reads.

Written against the survivors of a mutmut run on ``policies/rules/iam.py``, ``policies/rules/s3.py`` and
``policies/rules/ci_roles.py`` (issue 15): every test calls a rule through the pack as the SDK does
(tests/_policy_helpers.py: props behind the SDK's unknown-checking proxy) and asserts the whole list of
messages (and URNs, for stack rules), so a changed wording, a lost URN, a skipped statement or a widened
condition each fails a test. Equivalent mutants are listed with a reason in tests/mutation/equivalent.txt.
"""

from __future__ import annotations

import json

import pulumi
import pytest
from pulumi.runtime.rpc import UNKNOWN
from pulumi_policy.proxy import UnknownValueError

from _policy_helpers import resource, stack_violations, use_stack_config, violations
from infra import ci_oidc, ci_roles
from policies.rules import ci_roles as ci_rules
from policies.rules.iam import _account_of

ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/policy:Policy"
QUEUE = "aws:sqs/queue:Queue"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ACCOUNT, OTHER = "123456789012", "999999999999"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
ANYONE = "(anyone, in any account) without a condition on the caller's account, organisation or ARN"
ESCALATES = "on every matching role/user/group/policy: a principal with it can grant itself more"


def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action, resource_="*", **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource_, **extra}


def public(principal="*", **extra):
    return {"Effect": "Allow", "Principal": principal, "Action": "sqs:SendMessage", "Resource": "*", **extra}


# --------------------------------------------------------------------------- s3-no-public-access

S3 = "s3-no-public-access"
PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BLOCK_ALL = {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True,
             "restrictPublicBuckets": True}


@pytest.mark.parametrize("type_, acl", [("aws:s3/bucket:Bucket", "public-read"),
                                        ("aws:s3/bucketV2:BucketV2", "public-read-write"),
                                        ("aws:s3/bucketAclV2:BucketAclV2", "authenticated-read")])
def test_s3_a_public_canned_acl_is_named_in_the_violation(type_, acl):
    assert violations(S3, type_, {"acl": acl}) == [f"acl {acl!r} opens the bucket to everyone"]


@pytest.mark.parametrize("acl", ["private", "log-delivery-write", "bucket-owner-full-control"])
def test_s3_a_private_canned_acl_passes(acl):
    assert violations(S3, "aws:s3/bucketAcl:BucketAcl", {"acl": acl}) == []


def test_s3_a_bucket_grant_to_everyone_is_flagged_by_its_uri():
    grants = [{"type": "CanonicalUser", "id": "abc", "permissions": ["FULL_CONTROL"]},
              {"type": "Group", "uri": ALL_USERS, "permissions": ["READ"]}]
    assert violations(S3, "aws:s3/bucket:Bucket", {"grants": grants}) == [
        f"a grant to {ALL_USERS} opens the bucket to everyone"]


def test_s3_an_access_control_policy_grant_to_everyone_is_flagged_by_its_grantee_uri():
    acp = {"grants": [{"grantee": {"type": "Group", "uri": AUTHENTICATED_USERS}, "permission": "READ"}],
           "owner": {"id": "abc"}}
    assert violations(S3, "aws:s3/bucketAclV2:BucketAclV2", {"accessControlPolicy": acp}) == [
        f"a grant to {AUTHENTICATED_USERS} opens the bucket to everyone"]
    both = {"acl": "public-read", "grants": [{"type": "Group", "uri": ALL_USERS, "permissions": ["READ"]}],
            "accessControlPolicy": acp}
    assert violations(S3, "aws:s3/bucketAclV2:BucketAclV2", both) == [
        "acl 'public-read' opens the bucket to everyone", f"a grant to {ALL_USERS} opens the bucket to everyone",
        f"a grant to {AUTHENTICATED_USERS} opens the bucket to everyone"]


def test_s3_a_grant_to_a_named_account_passes():
    grants = [{"type": "CanonicalUser", "id": "abc", "permissions": ["READ"]}]
    assert violations(S3, "aws:s3/bucket:Bucket", {"grants": grants}) == []


def test_s3_a_public_access_block_lists_every_setting_that_is_not_true():
    for type_ in (PAB, "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock"):
        assert violations(S3, type_, BLOCK_ALL) == []
        assert violations(S3, type_, {**BLOCK_ALL, "blockPublicPolicy": False, "restrictPublicBuckets": "true"}) == [
            "blockPublicPolicy, restrictPublicBuckets must be true (S3 defaults them to false)"]
        assert violations(S3, type_, {}) == [
            "blockPublicAcls, blockPublicPolicy, ignorePublicAcls, restrictPublicBuckets must be true "
            "(S3 defaults them to false)"]


def test_s3_other_resources_are_not_judged():
    assert violations(S3, "aws:s3/bucketObject:BucketObject", {"acl": "public-read"}) == []


def test_s3_an_acl_not_known_during_preview_is_not_guessed():
    with pytest.raises(UnknownValueError):
        violations(S3, "aws:s3/bucketAclV2:BucketAclV2", {"acl": UNKNOWN})


# --------------------------------------------------------------------------- iam-no-star-on-star

STAR = "iam-no-star-on-star"


def test_star_on_star_names_the_statement_by_index_and_sid():
    assert violations(STAR, POLICY, {"policy": doc(allow("s3:GetObject"), allow("*", "*", Sid="Admin"))}) == [
        "policy Statement[1] (Admin) allows '*' on '*'"]


def test_star_on_star_judges_every_inline_policy_of_a_role_after_an_unreadable_one():
    inline = [{"name": "bad", "policy": '{"Statement": [}'},
              {"name": "miscased", "policy": json.dumps({"statement": [allow("*")]})},
              {"name": "admin", "policy": doc(allow("*:*", "arn:*"))}]
    assert violations(STAR, ROLE, {"inlinePolicies": inline}) == [
        "inlinePolicies[0].policy is not valid JSON",
        "inlinePolicies[1].policy spells an IAM element name in another case (Statement, Effect, Action, ...), "
        "so what it allows cannot be checked",
        "inlinePolicies[2].policy Statement[0] allows '*' on '*'"]


# --------------------------------------------------------------------------- iam-no-privilege-escalation

ESC = "iam-no-privilege-escalation"


def test_escalation_lists_every_escalating_action_in_one_violation():
    assert violations(ESC, POLICY, {"policy": doc(allow("s3:GetObject"), allow(["iam:PutRolePolicy", "iam:PassRole"]))}) == [
        f"policy Statement[1] allows iam:PassRole, iam:PutRolePolicy {ESCALATES}"]


def test_escalation_through_not_action_lists_only_what_it_does_not_exclude():
    statement = {"Effect": "Allow", "NotAction": ["iam:*"], "Resource": "arn:aws:iam::123456789012:role/*"}
    assert violations(ESC, POLICY, {"policy": doc(statement)}) == [f"policy Statement[0] allows sts:AssumeRole {ESCALATES}"]


def test_escalation_through_not_resource_covers_what_it_does_not_exclude():
    statement = {"Effect": "Allow", "Action": ["iam:PassRole", "iam:CreateAccessKey"],
                 "NotResource": "arn:*:iam::*:role/*"}
    assert violations(ESC, POLICY, {"policy": doc(statement)}) == [
        f"policy Statement[0] allows iam:CreateAccessKey {ESCALATES}"]


def test_resource_arns_are_matched_case_sensitively():
    # IAM matches resource ARNs case-sensitively: ROLE/* names no role (actions are matched ignoring case).
    assert violations(ESC, POLICY, {"policy": doc(allow("iam:PassRole", "arn:aws:iam::123456789012:ROLE/*"))}) == []
    assert violations(ESC, POLICY, {"policy": doc(allow("IAM:passrole", "arn:aws:iam::123456789012:role/*"))}) == [
        f"policy Statement[0] allows iam:PassRole {ESCALATES}"]


# --------------------------------------------------------------------------- iam-no-long-lived-credentials


@pytest.mark.parametrize("type_, what", [
    ("aws:iam/accessKey:AccessKey", "an access key (a secret that works until someone deletes it)"),
    ("aws:iam/userLoginProfile:UserLoginProfile", "a console password"),
    ("aws:iam/sshKey:SshKey", "an SSH key (CodeCommit)"),
])
def test_long_lived_credentials_say_what_they_create(type_, what):
    assert violations("iam-no-long-lived-credentials", type_, {"user": "u"}) == [
        f"creates {what} for an IAM user; use a role (OIDC for CI, SSO for people) instead"]
    assert violations("iam-no-long-lived-credentials", ROLE, {"name": "u"}) == []


# --------------------------------------------------------------------------- iam-no-administrator-access

ADMIN = "iam-no-administrator-access"
ADMIN_ARN = "arn:aws:iam::aws:policy/AdministratorAccess"


def test_admin_attachment_message_names_the_property_and_the_arn():
    found = violations(ADMIN, ROLE, {"managedPolicyArns": [42, "arn:aws:iam::aws:policy/ReadOnlyAccess", ADMIN_ARN]})
    assert found == [f"managedPolicyArns attaches {ADMIN_ARN}, an administrator-like AWS managed policy (forbiddenPolicies)"]


def test_admin_policy_arns_match_ignoring_case():
    arn = "ARN:AWS:IAM::AWS:POLICY/job-function/administratoraccess"
    assert violations(ADMIN, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", {"policyArn": arn}) == [
        f"policyArn attaches {arn}, an administrator-like AWS managed policy (forbiddenPolicies)"]


def test_admin_a_null_forbidden_list_falls_back_to_the_defaults():
    found = violations(ADMIN, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", {"policyArn": ADMIN_ARN},
                       config={"forbiddenPolicies": None})
    assert found == [f"policyArn attaches {ADMIN_ARN}, an administrator-like AWS managed policy (forbiddenPolicies)"]


# --------------------------------------------------------------------------- iam-attached-policies-declared

DECLARED = "iam-attached-policies-declared"
EXCLUSIVE = "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive"
ATTACH = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"


def _not_declared(type_, name, key, arn):
    return (f"{type_} {name!r}: {key} attaches {arn!r}, a policy this stack does not declare, so what it grants "
            "cannot be checked; declare it as an aws.iam.Policy here (or attach an AWS managed policy)",
            f"urn:pulumi:t::kiln::{type_}::{name}")


def test_attached_a_known_foreign_arn_is_flagged_even_when_computed_from_a_declared_policy():
    own = resource(POLICY, "own", {"arn": UNKNOWN, "policy": doc(allow("s3:GetObject"))})
    foreign = "arn:aws:iam::123456789012:policy/other"
    attach = resource(ATTACH, "a", {"role": "r", "policyArn": foreign}, property_dependencies={"policyArn": [own]})
    assert stack_violations(DECLARED, [own, attach], with_urns=True) == [_not_declared(ATTACH, "a", "policyArn", foreign)]


def test_attached_an_unreadable_arn_computed_from_declared_policies_is_skipped_not_the_rest():
    own = resource(POLICY, "own", {"arn": UNKNOWN, "policy": doc(allow("s3:GetObject"))})
    foreign = "arn:aws:iam::123456789012:policy/other"
    exclusive = resource(EXCLUSIVE, "x", {"roleName": "r", "policyArns": [None, foreign]},
                         property_dependencies={"policyArns": [own]})
    assert stack_violations(DECLARED, [own, exclusive], with_urns=True) == [
        _not_declared(EXCLUSIVE, "x", "policyArns", foreign)]


def test_attached_a_value_that_is_not_an_arn_is_flagged_and_a_null_one_is_not_guessed():
    exclusive = resource(EXCLUSIVE, "x", {"roleName": "r", "policyArns": [42]})
    assert stack_violations(DECLARED, [exclusive], with_urns=True) == [_not_declared(EXCLUSIVE, "x", "policyArns", 42)]
    with pytest.raises(UnknownValueError):
        stack_violations(DECLARED, [resource(EXCLUSIVE, "y", {"roleName": "r", "policyArns": [None]})])


# --------------------------------------------------------------------------- iam-no-public-principal

PUBLIC = "iam-no-public-principal"


def test_public_principal_messages_spell_each_kind_of_principal():
    statement = {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::123456789012:role/Xfer", "*"],
                                                  "Service": "sqs.amazonaws.com"},
                 "Action": "s3:GetObject", "Resource": "*"}
    assert violations(PUBLIC, BUCKET_POLICY, {"policy": doc(statement)}) == [f"policy Statement[0] allows AWS: * {ANYONE}"]
    two = {**statement, "Principal": {"AWS": ["*", "arn:aws:iam::*:root"]}}
    assert violations(PUBLIC, BUCKET_POLICY, {"policy": doc(two)}) == [
        f"policy Statement[0] allows AWS: *, AWS: arn:aws:iam::*:root {ANYONE}"]
    assert violations(PUBLIC, BUCKET_POLICY, {"policy": doc(public("*", Sid="Open"))}) == [
        f"policy Statement[0] (Open) allows * {ANYONE}"]
    not_principal = {"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "s3:*",
                     "Resource": "*"}
    assert violations(PUBLIC, BUCKET_POLICY, {"policy": doc(not_principal)}) == [f"policy Statement[0] allows * {ANYONE}"]


def test_public_principal_a_principal_string_other_than_star_is_still_judged_as_everyone():
    # IAM accepts only "*" as a string principal; anything else cannot be classified, so it is refused.
    assert violations(PUBLIC, BUCKET_POLICY, {"policy": doc(public("arn:aws:iam::123456789012:root"))}) == [
        f"policy Statement[0] allows arn:aws:iam::123456789012:root {ANYONE}"]


def test_public_principal_every_statement_after_a_deny_or_a_pinned_one_is_judged():
    pinned = public("*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}})
    deny = {**public("*"), "Effect": "Deny"}
    assert violations(PUBLIC, QUEUE, {"policy": doc(deny, pinned, public({"AWS": "*"}))}) == [
        f"policy Statement[2] allows AWS: * {ANYONE}"]


@pytest.mark.parametrize("condition, pinned", [
    ({"StringEquals": {"aws:PrincipalAccount": ""}}, False),
    ({"StringEquals": {"sts:ExternalId": "XYZ-shared-secret"}}, True),
    ({"StringNotEquals": {"aws:PrincipalAccount": "123456789012"}, "StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}},
     True),
    ({"ArnLike": {"aws:SourceArn": "arn:aws:lambda:us-east-2:123456789012:function:kiln-*:prod"}}, True),
    ({"ArnLike": {"aws:SourceArn": "arn:aws:lambda:us-east-2:*:function:kiln:prod"}}, False),
])
def test_public_principal_a_condition_pins_the_caller_only_when_it_names_one(condition, pinned):
    found = violations(PUBLIC, BUCKET_POLICY, {"policy": doc(public("*", Condition=condition))})
    assert found == ([] if pinned else [f"policy Statement[0] allows * {ANYONE}"])


def test_public_principal_a_service_on_a_queue_needs_a_source_condition():
    statement = {"Effect": "Allow", "Principal": {"Service": ["events.amazonaws.com", "s3.amazonaws.com"]},
                 "Action": "sqs:SendMessage", "Resource": "*"}
    assert violations(PUBLIC, QUEUE, {"policy": doc(allow("sqs:GetQueueUrl"), statement)}) == [
        "policy Statement[1] allows Service: events.amazonaws.com, s3.amazonaws.com without a condition on "
        "aws:SourceArn or aws:SourceAccount: any account's rule, bucket or topic could deliver messages through it"]
    assert violations(PUBLIC, BUCKET_POLICY, {"policy": doc(statement)}) == []


def test_public_principal_an_unreadable_document_is_flagged_and_the_next_one_still_judged():
    props = {"policy": '{"Statement": [}', "accessPolicy": doc(public("*"))}
    assert violations(PUBLIC, "aws:s3/bucketV2:BucketV2", props) == [
        "policy is not valid JSON (or names a key twice, or spells an IAM element name in another case), so who it "
        "lets in cannot be checked",
        f"accessPolicy Statement[0] allows * {ANYONE}"]


def test_public_principal_a_miscased_document_in_the_known_property_is_flagged():
    miscased = json.dumps({"statement": [public("*")]})
    assert violations(PUBLIC, BUCKET_POLICY, {"policy": miscased}) == [
        "policy is not valid JSON (or names a key twice, or spells an IAM element name in another case), so who it "
        "lets in cannot be checked"]


def test_public_principal_any_property_named_like_a_policy_is_read():
    domain = {"domainName": "search", "engineVersion": "OpenSearch_2.11", "accessPolicies": doc(public("*"))}
    assert violations(PUBLIC, "aws:opensearch/domain:Domain", domain) == [f"accessPolicies Statement[0] allows * {ANYONE}"]
    unreadable = {"domainName": "search", "accessPolicies": '  {"Statement": "*",}'}
    assert violations(PUBLIC, "aws:opensearch/domain:Domain", unreadable) == [
        "accessPolicies is not valid JSON (or names a key twice, or spells an IAM element name in another case), so "
        "who it lets in cannot be checked"]


def test_public_principal_reads_only_aws_resource_policies():
    # Identity policies have no principal (iam-no-star-on-star judges them); non-AWS resources hold no IAM policy;
    # a property not named like a policy is not one.
    assert violations(PUBLIC, POLICY, {"policy": '{"Statement": [}'}) == []
    assert violations(PUBLIC, "kubernetes:core/v1:ConfigMap", {"policy": doc(public("*"))}) == []
    assert violations(PUBLIC, "aws:ssm/document:Document", {"content": doc(public("*"))}) == []


def test_public_principal_lambda_permission_needs_a_source_or_organisation():
    base = {"action": "lambda:InvokeFunction", "function": "f", "principal": "*"}
    assert violations(PUBLIC, "aws:lambda/permission:Permission", base) == [
        "principal '*' without sourceArn, sourceAccount or principalOrgId: anyone may invoke"]
    for key, value in (("sourceArn", "arn:aws:s3:::kiln-models"), ("sourceAccount", ACCOUNT),
                       ("principalOrgId", "o-abcdefghij")):
        assert violations(PUBLIC, "aws:lambda/permission:Permission", {**base, key: value}) == []


def test_public_principal_other_public_grants_say_why():
    assert violations(PUBLIC, "aws:lambda/functionUrl:FunctionUrl", {"authorizationType": "NONE"}) == [
        "authorizationType is 'NONE': anyone on the internet may invoke the function"]
    assert violations(PUBLIC, "aws:ecrpublic/repository:Repository", {"repositoryName": "r"}) == [
        "an ECR Public repository: every image pushed to it (and the model or code inside) is public"]
    assert violations(PUBLIC, "aws:ec2/amiLaunchPermission:AmiLaunchPermission", {"imageId": "ami-1", "group": "ALL"}) == [
        "group 'all' makes the AMI public: anyone may launch it and read the model baked into it"]
    assert violations(PUBLIC, "aws:ec2/imageBlockPublicAccess:ImageBlockPublicAccess", {"state": "unblocked"}) == [
        "state is 'unblocked': AMIs or snapshots of this account (the baked model) may be made public; use "
        "block-new-sharing"]
    assert violations(PUBLIC, "aws:ebs/snapshotBlockPublicAccess:SnapshotBlockPublicAccess", {"state": "unblocked"}) == [
        "state is 'unblocked': AMIs or snapshots of this account (the baked model) may be made public; use "
        "block-all-sharing or block-new-sharing"]


# --------------------------------------------------------------------------- iam-no-cross-account-principal

CROSS = "iam-no-cross-account-principal"


def _trusting(name, principal, **extra):
    return resource(BUCKET_POLICY, name, {"bucket": "b", "policy": doc({
        "Effect": "Allow", "Principal": principal, "Action": "s3:GetObject", "Resource": "*", **extra})})


def _own_role(account=ACCOUNT):
    return resource(ROLE, "own", {"arn": f"arn:aws:iam::{account}:role/own"})


def _foreign(name, where, what, account, ours=ACCOUNT, type_=BUCKET_POLICY):
    return (f"{type_} {name!r}: {where} {what} account {account}, not this stack's ({ours}), without a condition such "
            "as sts:ExternalId or aws:PrincipalOrgID (or list it in trustedAccountIds)", f"urn:pulumi:t::kiln::{type_}::{name}")


def test_cross_account_message_names_statement_principal_and_own_accounts():
    k8s = resource("kubernetes:core/v1:Namespace", "ns", {"metadata": {"name": "x"}})
    bucket = _trusting("p", {"AWS": [f"arn:aws:iam::{OTHER}:root", "*"]}, Sid="Share")
    other_own = resource(ROLE, "own2", {"arn": "arn:aws:iam::222222222222:role/own2"})
    assert stack_violations(CROSS, [k8s, _own_role(), other_own, bucket], with_urns=True) == [
        _foreign("p", "policy Statement[0] (Share)", f"trusts arn:aws:iam::{OTHER}:root of", OTHER,
                 ours=f"{ACCOUNT}, 222222222222")]


def test_cross_account_every_allow_after_a_deny_is_judged():
    bucket = resource(BUCKET_POLICY, "p", {"bucket": "b", "policy": doc(
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"}, "Action": "s3:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": OTHER}, "Action": "s3:GetObject", "Resource": "*"})})
    assert stack_violations(CROSS, [_own_role(), bucket], with_urns=True) == [
        _foreign("p", "policy Statement[1]", f"trusts {OTHER} of", OTHER)]


def test_cross_account_configured_accounts_are_this_stacks():
    bucket = _trusting("p", {"AWS": f"arn:aws:iam::{OTHER}:root"})
    assert stack_violations(CROSS, [bucket], config={"accountIds": [OTHER]}) == []
    assert stack_violations(CROSS, [bucket, _own_role()], config={"trustedAccountIds": [OTHER]}) == []


def test_cross_account_without_any_known_account_asks_for_account_ids():
    bucket = _trusting("p", {"AWS": f"arn:aws:iam::{OTHER}:root"})
    ami = resource("aws:ec2/amiLaunchPermission:AmiLaunchPermission", "ami", {"imageId": "ami-1", "accountId": OTHER})
    assert stack_violations(CROSS, [bucket, ami], with_urns=True) == [
        (f"{BUCKET_POLICY} 'p': policy Statement[0] trusts arn:aws:iam::{OTHER}:root account {OTHER}, and no ARN in the "
         "stack says which account is this stack's; set accountIds", f"urn:pulumi:t::kiln::{BUCKET_POLICY}::p"),
        (f"aws:ec2/amiLaunchPermission:AmiLaunchPermission 'ami': accountId shares with account {OTHER}, and no ARN in "
         "the stack says which account is this stack's; set accountIds",
         "urn:pulumi:t::kiln::aws:ec2/amiLaunchPermission:AmiLaunchPermission::ami")]


def test_cross_account_shares_name_where_the_account_is_given():
    ami = "aws:ec2/amiLaunchPermission:AmiLaunchPermission"
    ram = "aws:ram/principalAssociation:PrincipalAssociation"
    resources = [_own_role(),
                 resource(ami, "public", {"imageId": "ami-1", "group": "all"}),
                 resource(ami, "shared", {"imageId": "ami-1", "accountId": OTHER}),
                 resource(ram, "own", {"principal": f"arn:aws:iam::{ACCOUNT}:root", "resourceShareArn": "s"}),
                 resource(ram, "other", {"principal": OTHER, "resourceShareArn": "s"}),
                 resource("aws:guardduty/member:Member", "m", {"accountId": OTHER, "detectorId": "d"})]
    assert stack_violations(CROSS, resources, with_urns=True) == [
        _foreign("shared", "accountId", "shares with", OTHER, type_=ami),
        _foreign("other", "principal", "shares with", OTHER, type_=ram)]


def test_account_of_reads_only_account_ids_and_arns():
    assert _account_of(OTHER) == OTHER
    assert _account_of(f"arn:aws:iam::{OTHER}:root") == OTHER
    assert _account_of(f"xrn:aws:iam::{OTHER}:root") is None
    assert _account_of("*") is None


# --------------------------------------------------------------------------- iam-irsa-trust-scoped

IRSA = "iam-irsa-trust-scoped"
EKS = "oidc.eks.us-east-2.amazonaws.com/id/ABC"
EKS_PROVIDER = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{EKS}"


def _trust(*statements):
    return {"assumeRolePolicy": doc(*statements)}


def _web(provider=EKS_PROVIDER, action="sts:AssumeRoleWithWebIdentity", **condition):
    statement = {"Effect": "Allow", "Principal": {"Federated": provider}, "Action": action}
    return {**statement, "Condition": condition} if condition else statement


def test_irsa_each_problem_is_reported_with_its_statement():
    assert violations(IRSA, ROLE, _trust(allow("s3:GetObject"), _web())) == [
        "assumeRolePolicy Statement[1]: trusts an EKS OIDC provider without a StringEquals condition on <issuer>:sub"]
    loose = _web(StringEquals={f"{EKS}:sub": ["system:serviceaccount:a:b", "system:serviceaccount:a:c"]},
                 StringLike={f"{EKS}:sub": "system:serviceaccount:a:*"})
    assert violations(IRSA, ROLE, _trust(loose)) == [
        f"assumeRolePolicy Statement[0]: {EKS}:sub must name exactly one service account "
        "(system:serviceaccount:<ns>:<name>), got ['system:serviceaccount:a:b', 'system:serviceaccount:a:c']",
        "assumeRolePolicy Statement[0]: StringLike on :sub widens the trust; use StringEquals with one service account"]


def test_irsa_a_single_service_account_value_must_be_one_string():
    assert violations(IRSA, ROLE, _trust(_web(StringEquals={f"{EKS}:sub": "system:serviceaccount:kiln:warmup"}))) == []
    assert violations(IRSA, ROLE, _trust(_web(StringEquals={f"{EKS}:sub": 7}))) == [
        f"assumeRolePolicy Statement[0]: {EKS}:sub must name exactly one service account "
        "(system:serviceaccount:<ns>:<name>), got 7"]


def test_irsa_an_eks_issuer_named_only_in_a_condition_key_is_judged():
    statement = {"Effect": "Allow", "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/x"},
                 "Action": "sts:AssumeRoleWithWebIdentity", "Condition": {"StringLike": {f"{EKS}:sub": "*"}}}
    assert violations(IRSA, ROLE, _trust(statement)) == [
        "assumeRolePolicy Statement[0]: trusts an EKS OIDC provider without a StringEquals condition on <issuer>:sub",
        "assumeRolePolicy Statement[0]: StringLike on :sub widens the trust; use StringEquals with one service account"]


def test_irsa_a_statement_that_does_not_grant_web_identity_is_not_judged():
    assert violations(IRSA, ROLE, _trust(_web(action="sts:TagSession"))) == []


# --------------------------------------------------------------------------- iam-web-identity-trust-scoped

WEB = "iam-web-identity-trust-scoped"
GITHUB = "token.actions.githubusercontent.com"
GITHUB_PROVIDER = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{GITHUB}"


@pytest.fixture
def no_ci_config():
    pulumi.runtime.set_all_config({}, [])
    yield
    pulumi.runtime.set_all_config({}, [])


def test_web_identity_every_subject_operator_is_judged_after_a_widening_one(no_ci_config):
    statement = _web(GITHUB_PROVIDER, StringEquals={f"{GITHUB}:aud": "sts.amazonaws.com"},
                     StringNotEquals={f"{GITHUB}:sub": "repo:o/r:pull_request"},
                     StringLike={f"{GITHUB}:sub": "repo:o/*"})
    found = violations(WEB, ROLE, _trust(statement))
    assert found[0] == (f"assumeRolePolicy Statement[0]: StringNotEquals on {GITHUB}:sub widens the trust; name the "
                        "subject with StringEquals")
    assert len(found) == 2 and found[1].startswith(f"assumeRolePolicy Statement[0]: {GITHUB}:sub ")


def test_web_identity_for_any_value_operators_count_as_exact(no_ci_config):
    statement = _web(GITHUB_PROVIDER, **{"ForAnyValue:StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com",
                                                                      f"{GITHUB}:sub": "repo:o/r:environment:prod"}})
    assert violations(WEB, ROLE, _trust(statement)) == []
    like = _web(GITHUB_PROVIDER, StringEquals={f"{GITHUB}:aud": "sts.amazonaws.com"},
                **{"ForAnyValue:StringLike": {f"{GITHUB}:sub": "repo:o/r:environment:prod"}})
    assert violations(WEB, ROLE, _trust(like)) == []


def test_web_identity_a_missing_subject_names_the_system(no_ci_config):
    statement = _web(GITHUB_PROVIDER, StringEquals={f"{GITHUB}:aud": "sts.amazonaws.com"})
    assert violations(WEB, ROLE, _trust(statement)) == [
        f"assumeRolePolicy Statement[0]: trusts {GITHUB} without a condition on {GITHUB}:sub: any GitHub "
        "subject (any repository or project) may assume the role"]
    other = "idp.example.com"
    unknown = _web(f"arn:aws:iam::{ACCOUNT}:oidc-provider/{other}", StringEquals={f"{other}:aud": "x"})
    assert violations(WEB, ROLE, _trust(unknown)) == [
        f"assumeRolePolicy Statement[0]: trusts {other} without a condition on {other}:sub: any token subject "
        "(any repository or project) may assume the role"]


def test_web_identity_cognito_is_pinned_by_audience_and_the_next_issuer_still_judged(no_ci_config):
    cognito = "cognito-identity.amazonaws.com"
    statement = {"Effect": "Allow", "Principal": {"Federated": [cognito, GITHUB_PROVIDER]},
                 "Action": "sts:AssumeRoleWithWebIdentity",
                 "Condition": {"StringEquals": {f"{cognito}:aud": "us-east-2:pool", f"{GITHUB}:aud": "sts.amazonaws.com"}}}
    assert violations(WEB, ROLE, _trust(statement)) == [
        f"assumeRolePolicy Statement[0]: trusts {GITHUB} without a condition on {GITHUB}:sub: any GitHub "
        "subject (any repository or project) may assume the role"]


def test_web_identity_an_issuer_named_only_by_a_condition_key_is_judged(no_ci_config):
    other = "idp.example.com"
    for suffix in ("sub", "aud", "amr"):
        statement = _web(GITHUB_PROVIDER, StringEquals={f"{GITHUB}:aud": "sts.amazonaws.com",
                                                        f"{GITHUB}:sub": "repo:o/r:environment:prod",
                                                        f"{other}:{suffix}": "x"})
        found = violations(WEB, ROLE, _trust(statement))
        assert [m for m in found if m.startswith(f"assumeRolePolicy Statement[0]: trusts {other} without ")], suffix


def test_web_identity_a_statement_without_a_federated_principal_is_not_judged(no_ci_config):
    assert violations(WEB, ROLE, _trust({"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                         "Action": "sts:AssumeRoleWithWebIdentity"})) == []
    assert violations(WEB, ROLE, _trust(_web(EKS_PROVIDER))) == []  # EKS: iam-irsa-trust-scoped


# --------------------------------------------------------------------------- ci-preview-role-read-only

CI = "ci-preview-role-read-only"
GITHUB_URL = f"https://{GITHUB}"
PREVIEW = "repo:example-org/ml-platform:pull_request"
CI_OIDC = {"providerUrl": GITHUB_URL, "audience": "sts.amazonaws.com",
           "subject": "repo:example-org/ml-platform:environment:production", "preview": {"subject": PREVIEW}}
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ci-preview"
ROLE_URN = f"urn:pulumi:t::kiln::{ROLE}::ci-preview"
RBAC = "kubernetes:rbac.authorization.k8s.io/v1:"
VIEW = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
WRITE = doc(allow("ec2:RunInstances"))


@pytest.fixture
def ci_stack():
    def use(ci=CI_OIDC):
        use_stack_config(ci)
    use()
    yield use
    pulumi.runtime.set_all_config({}, [])


def preview_trust(subject=PREVIEW, account=ACCOUNT):
    return ci_oidc.web_identity_trust(f"arn:aws:iam::{account}:oidc-provider/{GITHUB}", GITHUB_URL,
                                      "sts.amazonaws.com", subject)


def preview_role(**props):
    return resource(ROLE, "ci-preview", {"name": "ci-preview", "id": "ci-preview-id", "arn": ROLE_ARN,
                                         "assumeRolePolicy": preview_trust(), **props})


def read_only(problem):
    return (f"the CI preview role 'ci-preview' (trusted by pull requests: {PREVIEW!r}) must stay read-only: {problem}",
            ROLE_URN)


def test_ci_role_every_way_a_policy_reaches_the_role_is_named(ci_stack):
    managed_arn = f"arn:aws:iam::{ACCOUNT}:policy/ci-extra"
    resources = [
        preview_role(inlinePolicies=[{"name": "none"}, {"name": "w", "policy": WRITE}],
                     managedPolicyArns=[managed_arn, "arn:aws:iam::aws:policy/ReadOnlyAccess"]),
        resource(POLICY, "ci-extra", {"arn": managed_arn, "policy": doc(allow(["ec2:Describe*", "s3:PutObject"]))}),
        resource("aws:iam/rolePolicy:RolePolicy", "by-id", {"role": "ci-preview-id", "policy": WRITE}),
        resource("aws:iam/rolePolicy:RolePolicy", "by-arn", {"role": ROLE_ARN, "policy": doc(allow("kms:Decrypt"))}),
        resource("aws:iam/rolePolicy:RolePolicy", "other-role", {"role": "ci-deploy", "policy": WRITE}),
        resource(ATTACH, "by-arn", {"role": ROLE_ARN, "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
        resource(ATTACH, "other-role", {"role": "ci-deploy", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
        resource(EXCLUSIVE, "exclusive", {"roleName": "ci-preview", "policyArns": [managed_arn, "arn:x"]}),
        resource(EXCLUSIVE, "other-role", {"roleName": "ci-deploy", "policyArns": ["arn:y"]}),
    ]
    assert stack_violations(CI, resources, with_urns=True) == [read_only(p) for p in (
        "inlinePolicies[1] allows 'ec2:RunInstances'",
        "aws:iam/rolePolicy:RolePolicy 'by-id' allows 'ec2:RunInstances'",
        f"managedPolicyArns[0] attaches {POLICY} 'ci-extra', which allows 's3:PutObject'",
        "managedPolicyArns[1] attaches arn:aws:iam::aws:policy/ReadOnlyAccess, which is not a policy of this stack "
        "(AWS-managed policies are not judged read-only)",
        f"{ATTACH} 'by-arn' attaches arn:aws:iam::aws:policy/AdministratorAccess, which is not a policy of this stack "
        "(AWS-managed policies are not judged read-only)",
        f"{EXCLUSIVE} 'exclusive' attaches {POLICY} 'ci-extra', which allows 's3:PutObject'",
        f"{EXCLUSIVE} 'exclusive' attaches arn:x, which is not a policy of this stack (AWS-managed policies are not "
        "judged read-only)")]


@pytest.mark.parametrize("statement, problem", [
    ({"Action": "s3:PutObject", "Resource": "*"}, "'s3:PutObject'"),
    ({"Effect": "allow", "Action": "s3:PutObject", "Resource": "*"}, "'s3:PutObject'"),
    ({"Effect": "ALLOW", "Action": ["ec2:Describe*", "ec2:DeleteVpc"], "Resource": "*"}, "'ec2:DeleteVpc'"),
    ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, "NotAction 'iam:*'"),
])
def test_ci_role_anything_but_an_exact_deny_counts_as_an_allow(ci_stack, statement, problem):
    policy = doc({"Effect": "Deny", "Action": "*", "Resource": "*"}, statement)
    found = stack_violations(CI, [preview_role(inlinePolicies=[{"name": "p", "policy": policy}])], with_urns=True)
    assert found == [read_only(f"inlinePolicies[0] allows {problem}")]


@pytest.mark.parametrize("policy_arn, read", [
    (VIEW, True), ("arn:aws-us-gov:eks::aws:cluster-access-policy/AmazonEKSViewPolicy", True),
    ("AmazonEKSViewPolicy", False), ("arn:aws:eks::aws:cluster-access-policy/x/AmazonEKSViewPolicy", False),
    ("arn:aws:eks::aws:cluster-access-policy/AmazonEKSEditPolicy", False), (None, False),
])
def test_ci_role_eks_access_is_only_the_view_access_policy(ci_stack, policy_arn, read):
    association = resource("aws:eks/accessPolicyAssociation:AccessPolicyAssociation", "assoc",
                           {"principalArn": ROLE_ARN, "policyArn": policy_arn, "clusterName": "kiln"})
    other = resource("aws:eks/accessPolicyAssociation:AccessPolicyAssociation", "other", {
        "principalArn": f"arn:aws:iam::{ACCOUNT}:role/ci-deploy", "policyArn": "x", "clusterName": "kiln"})
    found = stack_violations(CI, [preview_role(), association, other], with_urns=True)
    assert found == ([] if read else [read_only(
        f"aws:eks/accessPolicyAssociation:AccessPolicyAssociation 'assoc' associates {policy_arn} (only AmazonEKSViewPolicy)")])


def _entry(groups, principal=ROLE_ARN, name="ci-preview"):
    return resource("aws:eks/accessEntry:AccessEntry", name, {"principalArn": principal, "kubernetesGroups": groups,
                                                              "clusterName": "kiln"})


def _k8s_role(kind, name, verbs, namespace=None):
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return resource(f"{RBAC}{kind}", f"{kind}-{name}-{namespace}", {"metadata": metadata, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": verbs}]})


def _binding(kind, name, role_kind, role_name, subjects, namespace=None):
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return resource(f"{RBAC}{kind}", name, {"metadata": metadata, "roleRef": {"kind": role_kind, "name": role_name},
                                             "subjects": subjects})


def test_ci_role_groups_are_judged_by_the_namespaced_roles_they_are_bound_to(ci_stack):
    group = {"kind": "Group", "name": "ci-read"}
    resources = [
        preview_role(), _entry(["ci-read"]), _entry(["ci-admin"], principal=f"arn:aws:iam::{ACCOUNT}:role/other", name="o"),
        _binding("ClusterRoleBinding", "unrelated", "ClusterRole", "cluster-admin",
                 [{"kind": "User", "name": "ci-read"}, {"kind": "Group", "name": "ci-other"}]),
        _binding("RoleBinding", "ns-bind", "Role", "pods", [group], namespace="ci"),
        _binding("RoleBinding", "elsewhere", "Role", "pods", [group], namespace="prod"),
        _binding("RoleBinding", "to-cluster-role", "ClusterRole", "pods", [group], namespace="ci"),
        _k8s_role("Role", "pods", ["get", "delete", "create"], namespace="ci"),
        _k8s_role("Role", "pods", ["*"], namespace="dev"),
        _k8s_role("ClusterRole", "pods", ["watch"]),
    ]
    assert stack_violations(CI, resources, with_urns=True) == [read_only(p) for p in (
        "group 'ci-read' is bound to Role 'pods', which allows ['create', 'delete']",
        "group 'ci-read' is bound to Role 'pods', which is not declared in this stack (its verbs cannot be judged)")]


def test_ci_role_every_binding_of_the_group_is_judged_after_an_undeclared_role(ci_stack):
    group = {"kind": "Group", "name": "ci-read"}
    resources = [preview_role(), _entry(["ci-read"]),
                 _entry(["ci-admin"], principal=f"arn:aws:iam::{ACCOUNT}:role/ci-deploy", name="deploy"),
                 _binding("ClusterRoleBinding", "admin", "ClusterRole", "writer", [{"kind": "Group", "name": "ci-admin"}]),
                 _binding("ClusterRoleBinding", "a", "ClusterRole", "missing", [group]),
                 _binding("ClusterRoleBinding", "b", "ClusterRole", "writer", [group]),
                 _k8s_role("ClusterRole", "writer", ["patch"])]
    assert stack_violations(CI, resources, with_urns=True) == [read_only(p) for p in (
        "group 'ci-read' is bound to ClusterRole 'missing', which is not declared in this stack (its verbs cannot be judged)",
        "group 'ci-read' is bound to ClusterRole 'writer', which allows ['patch']")]


def test_ci_role_every_role_is_looked_at_and_only_the_preview_one_judged(ci_stack):
    deploy = resource(ROLE, "ci-deploy", {"name": "ci-deploy", "arn": f"arn:aws:iam::{ACCOUNT}:role/ci-deploy",
                                          "assumeRolePolicy": preview_trust(CI_OIDC["subject"]), "inlinePolicies": [
                                              {"name": "w", "policy": WRITE}]})
    role = preview_role(inlinePolicies=[{"name": "w", "policy": WRITE}])
    assert stack_violations(CI, [deploy, role], with_urns=True) == [read_only("inlinePolicies[0] allows 'ec2:RunInstances'")]


def test_ci_role_the_preview_trust_through_another_accounts_provider_is_named_with_its_urn(ci_stack):
    foreign = resource(ROLE, "ci-preview", {"name": "ci-preview", "arn": ROLE_ARN,
                                            "assumeRolePolicy": preview_trust(account=OTHER)})
    role = preview_role(inlinePolicies=[{"name": "w", "policy": WRITE}])
    assert stack_violations(CI, [foreign, role], with_urns=True) == [
        (f"the role 'ci-preview' trusts pull requests ({PREVIEW!r}) through another account's OIDC provider", ROLE_URN),
        read_only("inlinePolicies[0] allows 'ec2:RunInstances'")]


def test_ci_role_a_preview_role_whose_arn_is_not_known_is_not_guessed(ci_stack):
    with pytest.raises(UnknownValueError):
        stack_violations(CI, [preview_role(arn=UNKNOWN)])


def test_ci_role_without_ci_oidc_config_nothing_is_judged(ci_stack):
    ci_stack(None)
    assert stack_violations(CI, [preview_role(inlinePolicies=[{"name": "w", "policy": WRITE}])]) == []


def test_ci_role_an_explicit_ci_config_is_used_instead_of_the_stacks(ci_stack):
    ci_stack(None)
    explicit = ci_rules.kiln_config.CiOidcConfig(GITHUB_URL, "sts.amazonaws.com", CI_OIDC["subject"],
                                                 preview=ci_rules.kiln_config.CiRoleTrust(PREVIEW, "sts.amazonaws.com"))
    assert ci_rules.is_kiln_preview_trust(preview_trust(), None, explicit) is True
    assert ci_rules.is_kiln_preview_trust(preview_trust(), None) is False


def test_ci_role_a_configured_provider_arn_is_the_only_provider_the_preview_trust_may_name(ci_stack):
    ci_stack({**CI_OIDC, "providerArn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{GITHUB}"})
    assert violations(WEB, ROLE, {"assumeRolePolicy": preview_trust()}) == []
    found = violations(WEB, ROLE, {"assumeRolePolicy": preview_trust(account=OTHER)})
    assert len(found) == 1 and found[0].startswith(f"assumeRolePolicy Statement[0]: {GITHUB}:sub ")


def test_web_identity_a_github_subject_is_judged_in_githubs_format(no_ci_config):
    gitlab_style = "project_path:g/p:ref_type:branch:ref:main"
    statement = _web(GITHUB_PROVIDER, StringEquals={f"{GITHUB}:aud": "sts.amazonaws.com", f"{GITHUB}:sub": gitlab_style})
    assert violations(WEB, ROLE, _trust(statement)) == [
        f"assumeRolePolicy Statement[0]: {GITHUB}:sub ({gitlab_style!r}) must name one repository and a ref or an "
        "environment, as GitHub sends it: repo:OWNER/REPO:ref:refs/heads/BRANCH, repo:OWNER/REPO:ref:refs/tags/TAG or "
        "repo:OWNER/REPO:environment:NAME"]


def test_web_identity_another_issuer_next_to_an_eks_one_is_still_judged(no_ci_config):
    statement = {"Effect": "Allow", "Principal": {"Federated": [EKS_PROVIDER, GITHUB_PROVIDER]},
                 "Action": "sts:AssumeRoleWithWebIdentity",
                 "Condition": {"StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com"}}}
    assert violations(WEB, ROLE, _trust(statement)) == [
        f"assumeRolePolicy Statement[0]: trusts {GITHUB} without a condition on {GITHUB}:sub: any GitHub "
        "subject (any repository or project) may assume the role"]


def test_web_identity_a_provider_whose_issuer_cannot_be_read_is_named_as_such(no_ci_config):
    saml = _web(f"arn:aws:iam::{ACCOUNT}:saml-provider/corp")
    assert violations(WEB, ROLE, _trust(saml)) == [
        "assumeRolePolicy Statement[0]: trusts <issuer> without a StringEquals condition on <issuer>:aud",
        "assumeRolePolicy Statement[0]: trusts <issuer> without a condition on <issuer>:sub: any token subject "
        "(any repository or project) may assume the role"]
