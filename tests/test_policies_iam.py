"""The IAM rules on every policy document form: wildcards by what they match, escalation, admin-like managed
policies, public and cross-account principals in trust and resource policies, web-identity trust."""

from __future__ import annotations

import json

import pulumi
import pytest
from pulumi_policy.proxy import UnknownValueError

from _policy_helpers import resource, stack_violations, violations
from policies.rules.iam import is_every_action, is_every_resource, star_on_star

ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/policy:Policy"
GITHUB = "token.actions.githubusercontent.com"
GITLAB = "gitlab.com"


def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action, resource_="*", **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource_, **extra}


# --------------------------------------------------------------------------- wildcards by what they match


@pytest.mark.parametrize("pattern, every", [
    ("*", True), ("*:*", True), ("*:*?*", True), ("?*", True), ("*:?*", True),
    ("s3:*", False), ("iam:*", False), ("*:Get*", False), ("*:*Policy", False), ("sts:AssumeRole", False),
])
def test_every_action_is_judged_by_what_the_pattern_matches(pattern, every):
    assert is_every_action(pattern) is every


@pytest.mark.parametrize("pattern, every", [
    ("*", True), ("arn:*", True), ("arn:aws:*", True), ("arn:aws:*:*:*:*", True), ("arn:*:*:*:*:*", True),
    ("arn:aws-us-gov:*:*:*:*", True), ("arn:aws:*:*:*:*/*", True), ("arn:aws:s3:::*", False),
    ("arn:aws:iam::*:*", False), ("arn:aws:*:us-east-2:*:*", False), ("arn:aws:[a-z]*:*:*:*", False),
])
def test_every_resource_is_judged_by_what_the_pattern_matches(pattern, every):
    assert is_every_resource(pattern) is every


def test_star_on_star_in_every_spelling():
    assert star_on_star(allow("*", "arn:aws:*:*:*:*")) and star_on_star(allow(["s3:GetObject", "*:*"], ["x", "arn:*"]))
    assert not star_on_star(allow("s3:*", "*")) and not star_on_star(allow("*", "arn:aws:s3:::*"))
    assert not star_on_star({**allow("*", "arn:*"), "Effect": "Deny"})
    found = violations("iam-no-star-on-star", POLICY, {"policy": doc(allow("*", "arn:aws:*:*:*:*"))})
    assert found == ["policy Statement[0] allows '*' on '*'"]


# --------------------------------------------------------------------------- escalation


@pytest.mark.parametrize("statement", [
    allow(["iam:PutRolePolicy"]),
    allow("iam:PassRole", "arn:aws:iam::*:role/*"),
    allow("iam:PassRole", "arn:aws:iam::123456789012:role/*"),
    allow("iam:Attach*", "*"),
    allow("iam:CreatePolicyVersion", "arn:aws:iam::123456789012:policy/*"),
    allow("iam:CreateAccessKey", "arn:aws:iam::*:user/*"),
    allow("sts:AssumeRole", "*"),
    allow("iam:*", "arn:aws:iam::123456789012:*"),
    {"Effect": "Allow", "NotAction": ["s3:*", "ec2:*"], "Resource": "arn:aws:iam::123456789012:role/*"},
    allow("iam:PassRole", "arn:aws-cn:iam::*:role/*"),
])
def test_privilege_escalation_on_every_role_user_or_policy(statement):
    found = violations("iam-no-privilege-escalation", POLICY, {"policy": doc(statement)})
    assert len(found) == 1 and "can grant itself more" in found[0]


@pytest.mark.parametrize("statement", [
    allow("iam:PassRole", "arn:aws:iam::123456789012:role/kiln-nodes",
          Condition={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
    allow("iam:PassRole", "arn:aws:iam::123456789012:role/kiln/*"),  # a path, not every role
    allow(["sts:AssumeRole", "sts:TagSession"], "arn:aws:iam::123456789012:role/rollout"),
    allow(["iam:GetRole", "iam:ListRoles"], "*"),
    {**allow("iam:*"), "Effect": "Deny"},
    allow("*", "*"),  # star on star is its own rule, reported once
])
def test_scoped_iam_grants_are_not_escalation(statement):
    assert violations("iam-no-privilege-escalation", POLICY, {"policy": doc(statement)}) == []


# --------------------------------------------------------------------------- admin-like managed policies


@pytest.mark.parametrize("type_, props", [
    ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", {"policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
    ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", {"policyArn": "arn:aws:iam::aws:policy/IAMFullAccess"}),
    ("aws:iam/userPolicyAttachment:UserPolicyAttachment", {"policyArn": "arn:aws:iam::aws:policy/PowerUserAccess"}),
    ("aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
     {"policyArn": "arn:aws-us-gov:iam::aws:policy/AdministratorAccess-Amplify"}),
    ("aws:iam/policyAttachment:PolicyAttachment", {"policyArn": "arn:aws:iam::aws:policy/administratoraccess"}),
    ("aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive",
     {"policyArns": ["arn:aws:iam::aws:policy/ReadOnlyAccess", "arn:aws:iam::aws:policy/IAMFullAccess"]}),
    (ROLE, {"managedPolicyArns": ["arn:aws-cn:iam::aws:policy/AdministratorAccess"]}),
    ("aws:ssoadmin/managedPolicyAttachment:ManagedPolicyAttachment",
     {"managedPolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
])
def test_admin_like_managed_policies_in_every_attachment_form(type_, props):
    assert len(violations("iam-no-administrator-access", type_, props)) == 1


def test_admin_list_is_configurable_and_customer_policies_are_not_aws_managed():
    attach = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
    ssm = {"policyArn": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}
    assert violations("iam-no-administrator-access", attach, ssm) == []
    assert len(violations("iam-no-administrator-access", attach, ssm,
                          config={"forbiddenPolicies": ["AmazonSSMManagedInstanceCore"]})) == 1
    own = {"policyArn": "arn:aws:iam::123456789012:policy/AdministratorAccess"}  # a customer policy: judged by content
    assert violations("iam-no-administrator-access", attach, own) == []
    pathed = {"policyArn": "arn:aws:iam::aws:policy/job-function/AdministratorAccess"}
    assert len(violations("iam-no-administrator-access", attach, pathed)) == 1


# --------------------------------------------------------------------------- public principals


@pytest.mark.parametrize("type_, key", [
    (ROLE, "assumeRolePolicy"), ("aws:ecr/repositoryPolicy:RepositoryPolicy", "policy"),
    ("aws:ecr/registryPolicy:RegistryPolicy", "policy"), ("aws:s3/bucketPolicy:BucketPolicy", "policy"),
    ("aws:kms/key:Key", "policy"), ("aws:kms/keyPolicy:KeyPolicy", "policy"), ("aws:sqs/queuePolicy:QueuePolicy", "policy"),
    ("aws:sns/topicPolicy:TopicPolicy", "policy"), ("aws:secretsmanager/secretPolicy:SecretPolicy", "policy"),
    ("aws:s3/bucketV2:BucketV2", "policy"), ("aws:efs/fileSystemPolicy:FileSystemPolicy", "policy"),
])
@pytest.mark.parametrize("principal", ["*", {"AWS": "*"}, {"AWS": ["arn:aws:iam::123456789012:root", "*"]},
                                       {"AWS": "arn:aws:iam::*:root"}, {"Service": "*"}])
def test_public_principals_in_every_resource_policy(type_, key, principal):
    statement = {"Effect": "Allow", "Principal": principal, "Action": "ecr:*"}
    assert len(violations("iam-no-public-principal", type_, {key: doc(statement)})) == 1
    pinned = {**statement, "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}}
    assert violations("iam-no-public-principal", type_, {key: doc(pinned)}) == []


@pytest.mark.parametrize("condition", [
    {"StringNotEquals": {"aws:PrincipalOrgID": "o-abc123"}},   # negated: lets everyone else in
    {"StringEquals": {"aws:PrincipalOrgID": "*"}},             # pins nothing
    {"StringLike": {"aws:PrincipalOrgID": "o-*"}},             # any organisation
    {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/ci"}},  # a role named ci in any account
    {"StringEqualsIfExists": {"aws:SourceAccount": "123456789012"}},
    {"Bool": {"aws:SecureTransport": "true"}},                # says how, not who
])
def test_conditions_that_do_not_pin_the_caller(condition):
    statement = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Condition": condition}
    assert len(violations("iam-no-public-principal", "aws:s3/bucketPolicy:BucketPolicy", {"policy": doc(statement)})) == 1


def test_not_principal_and_lambda_permissions():
    everyone_but = {"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::1:root"}, "Action": "s3:*"}
    assert len(violations("iam-no-public-principal", "aws:s3/bucketPolicy:BucketPolicy", {"policy": doc(everyone_but)})) == 1
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:*"}
    assert violations("iam-no-public-principal", "aws:s3/bucketPolicy:BucketPolicy", {"policy": doc(deny)}) == []
    lambda_ = "aws:lambda/permission:Permission"
    assert len(violations("iam-no-public-principal", lambda_, {"principal": "*", "action": "lambda:InvokeFunction"})) == 1
    assert violations("iam-no-public-principal", lambda_, {"principal": "*", "sourceAccount": "123456789012"}) == []
    assert violations("iam-no-public-principal", lambda_, {"principal": "events.amazonaws.com"}) == []


def test_service_and_named_principals_are_not_public():
    for principal in ({"Service": "ec2.amazonaws.com"}, {"AWS": "arn:aws:iam::123456789012:role/ci"},
                      {"Federated": f"arn:aws:iam::1:oidc-provider/{GITHUB}"}):
        statement = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
        assert violations("iam-no-public-principal", ROLE, {"assumeRolePolicy": doc(statement)}) == []


@pytest.mark.parametrize("type_", ["aws:sqs/queuePolicy:QueuePolicy", "aws:sqs/queue:Queue",
                                   "aws:sns/topicPolicy:TopicPolicy", "aws:sns/topic:Topic"])
def test_a_service_delivers_to_a_queue_or_topic_only_from_a_named_source(type_):
    """The termination queue's policy (infra/termination.py) as the rule wants it, and a copy any account's
    EventBridge rule could deliver forged notices through."""
    send = {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
            "Resource": "arn:aws:sqs:us-east-2:123456789012:kiln-termination"}
    [found] = violations("iam-no-public-principal", type_, {"policy": doc(send)})
    assert "Service: events.amazonaws.com without a condition on aws:SourceArn" in found
    rule = "arn:aws:events:us-east-2:123456789012:rule/kiln-termination-spot"
    for condition in ({"ArnEquals": {"aws:SourceArn": [rule]}}, {"StringEquals": {"aws:SourceAccount": "123456789012"}}):
        assert violations("iam-no-public-principal", type_, {"policy": doc({**send, "Condition": condition})}) == []
    for loose in ({"ArnLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/*"}},
                  {"Bool": {"aws:SecureTransport": "true"}}):
        assert len(violations("iam-no-public-principal", type_, {"policy": doc({**send, "Condition": loose})})) == 1
    # Elsewhere a service principal is how AWS services act for this account (role trust, key policies).
    assert violations("iam-no-public-principal", "aws:kms/key:Key", {"policy": doc(send)}) == []


def test_the_termination_queue_policy_passes_and_its_copy_without_the_source_does_not():
    from infra.termination import queue_policy

    policy = queue_policy("arn:aws:sqs:us-east-2:123456789012:kiln-termination",
                          ["arn:aws:events:us-east-2:123456789012:rule/kiln-termination-spot"])
    assert violations("iam-no-public-principal", "aws:sqs/queuePolicy:QueuePolicy", {"policy": policy}) == []
    document = json.loads(policy)
    del document["Statement"][0]["Condition"]
    assert len(violations("iam-no-public-principal", "aws:sqs/queuePolicy:QueuePolicy",
                          {"policy": json.dumps(document)})) == 1


# --------------------------------------------------------------------------- cross-account principals


def trusting(name, principal, **extra):
    return resource(ROLE, name, {"arn": f"arn:aws:iam::123456789012:role/{name}", "assumeRolePolicy": doc(
        {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole", **extra})})


def test_cross_account_principals_need_a_condition():
    same = trusting("same", "arn:aws:iam::123456789012:root")
    by_id = trusting("by-id", "123456789012")
    foreign = trusting("foreign", "arn:aws:iam::999999999999:role/x")
    foreign_id = trusting("foreign-id", ["999999999999"])
    with_external_id = trusting("ext", "arn:aws:iam::999999999999:root",
                                Condition={"StringEquals": {"sts:ExternalId": "kiln-42"}})
    found = stack_violations("iam-no-cross-account-principal",
                             [same, by_id, foreign, foreign_id, with_external_id], with_urns=True)
    assert sorted(urn.rsplit("::", 1)[1] for _, urn in found) == ["foreign", "foreign-id"]
    assert "of account 999999999999, not this stack's (123456789012)" in found[0][0]
    assert stack_violations("iam-no-cross-account-principal", [same, foreign],
                            config={"trustedAccountIds": ["999999999999"]}) == []
    # The stack's accounts can be stated; then the ARNs the stack reports do not matter.
    assert len(stack_violations("iam-no-cross-account-principal", [same], config={"accountIds": ["111111111111"]})) == 1


def test_cross_account_rule_fails_closed_without_a_known_account():
    bare = resource(ROLE, "r", {"assumeRolePolicy": doc(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"})})
    found = stack_violations("iam-no-cross-account-principal", [bare])
    assert len(found) == 1 and "set accountIds" in found[0]
    # While the stack's ARNs are all unknown (a first preview), the rule waits for `up`.
    pending = resource(ROLE, "p", {"arn": pulumi.runtime.rpc.UNKNOWN, "assumeRolePolicy": doc(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"})})
    with pytest.raises(UnknownValueError):
        stack_violations("iam-no-cross-account-principal", [pending])


def test_cross_account_rule_reads_resource_policies_too():
    own = resource("aws:ecr/repository:Repository", "repo", {"arn": "arn:aws:ecr:us-east-2:123456789012:repository/t"})
    shared = resource("aws:ecr/repositoryPolicy:RepositoryPolicy", "pol", {"policy": doc(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "ecr:BatchGetImage"})})
    assert len(stack_violations("iam-no-cross-account-principal", [own, shared])) == 1


# --------------------------------------------------------------------------- web identity


def oidc_trust(host, conditions, principal=None):
    return {"assumeRolePolicy": doc({"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
                                     "Principal": {"Federated": principal or f"arn:aws:iam::1:oidc-provider/{host}"},
                                     "Condition": conditions})}


GOOD_GITHUB = {"StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com",
                                f"{GITHUB}:sub": "repo:example-org/ml-platform:ref:refs/heads/main"}}


@pytest.mark.parametrize("conditions, fragment", [
    ({"StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com"}}, "without a condition on"),
    ({"StringEquals": {f"{GITHUB}:sub": "repo:o/r:ref:refs/heads/main"}}, "without a StringEquals condition on"),
    ({"StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com"}, "StringLike": {f"{GITHUB}:sub": "repo:*"}}, "wildcard"),
    ({"StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com", f"{GITHUB}:sub": "repo:o/r:pull_request"}}, "pull request"),
    ({"StringEquals": {f"{GITHUB}:aud": "anything", f"{GITHUB}:sub": "repo:o/r:ref:refs/heads/main"}},
     "not an audience GitHub issues"),
    ({"StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com"},
      "StringNotEquals": {f"{GITHUB}:sub": "repo:o/r:ref:refs/heads/dev"}}, "StringNotEquals"),
])
def test_github_trust_must_pin_one_repository_and_ref(conditions, fragment):
    found = violations("iam-web-identity-trust-scoped", ROLE, oidc_trust(GITHUB, conditions))
    assert any(fragment in m for m in found), found


def test_ci_trust_that_pins_one_repository_and_ref_passes():
    assert violations("iam-web-identity-trust-scoped", ROLE, oidc_trust(GITHUB, GOOD_GITHUB)) == []
    environment = {"StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com",
                                    f"{GITHUB}:sub": "repo:o/r:environment:production"}}
    assert violations("iam-web-identity-trust-scoped", ROLE, oidc_trust(GITHUB, environment)) == []
    gitlab = {"StringEquals": {f"{GITLAB}:aud": "sts.amazonaws.com",
                               f"{GITLAB}:sub": "project_path:ml/platform:ref_type:branch:ref:main"}}
    assert violations("iam-web-identity-trust-scoped", ROLE, oidc_trust(GITLAB, gitlab)) == []
    # The provider ARN may not name the issuer (kiln's mocks): the condition keys do.
    assert violations("iam-web-identity-trust-scoped", ROLE,
                      oidc_trust(GITHUB, GOOD_GITHUB, principal="arn:aws:iam::1:oidc-provider-x")) == []
    # EKS service accounts are iam-irsa-trust-scoped's, not this rule's.
    eks = "oidc.eks.us-east-2.amazonaws.com/id/X"
    assert violations("iam-web-identity-trust-scoped", ROLE, oidc_trust(eks, {})) == []


def test_unknown_issuers_and_cognito():
    unknown = oidc_trust("oidc.example.com", {})
    found = violations("iam-web-identity-trust-scoped", ROLE, unknown)
    assert len(found) == 2  # no aud, no sub
    cognito = oidc_trust("cognito-identity.amazonaws.com", {"StringEquals": {
        "cognito-identity.amazonaws.com:aud": "us-east-2:pool"}}, principal="cognito-identity.amazonaws.com")
    assert violations("iam-web-identity-trust-scoped", ROLE, cognito) == []
    cognito_open = oidc_trust("cognito-identity.amazonaws.com", {}, principal="cognito-identity.amazonaws.com")
    assert len(violations("iam-web-identity-trust-scoped", ROLE, cognito_open)) == 1


def test_arn_conditions_may_wildcard_the_resource_part_only():
    statement = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                 "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::123456789012:role/ci-*"}}}
    assert violations("iam-no-public-principal", "aws:s3/bucketPolicy:BucketPolicy", {"policy": doc(statement)}) == []


# --------------------------------------------------------------------------- S3 ACLs and public access blocks

S3 = "s3-no-public-access"


@pytest.mark.parametrize("type_, props, bad", [
    ("aws:s3/bucketV2:BucketV2", {"bucket": "models"}, False),
    ("aws:s3/bucketV2:BucketV2", {"acl": "private"}, False),
    ("aws:s3/bucket:Bucket", {"acl": "public-read"}, True),
    ("aws:s3/bucketAclV2:BucketAclV2", {"acl": "authenticated-read"}, True),
    ("aws:s3/bucketAcl:BucketAcl", {"accessControlPolicy": {"grants": [{"permission": "READ", "grantee": {
        "type": "Group", "uri": "http://acs.amazonaws.com/groups/global/AllUsers"}}]}}, True),
    ("aws:s3/bucketAclV2:BucketAclV2", {"accessControlPolicy": {"grants": [{"permission": "READ", "grantee": {
        "type": "CanonicalUser", "id": "abc"}}]}}, False),
    ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", {"bucket": "m", "blockPublicAcls": True,
     "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True}, False),
    ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", {"bucket": "m", "blockPublicAcls": True,
     "blockPublicPolicy": True, "ignorePublicAcls": True}, True),
    ("aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock", {"blockPublicPolicy": False}, True),
])
def test_s3_acls_and_public_access_blocks(type_, props, bad):
    assert bool(violations(S3, type_, props)) is bad


# --------------------------------------------------------------------------- review of issue 14: what got through

BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"


def public(statement_extra=None, **extra):
    return {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*",
            **(statement_extra or {}), **extra}


@pytest.mark.parametrize("effect", ["allow", "ALLOW", None, "Allow "])
def test_an_effect_that_is_not_exactly_deny_is_judged_as_allow(effect):
    statement = public()
    if effect is None:
        statement.pop("Effect")
    else:
        statement["Effect"] = effect
    assert len(violations("iam-no-public-principal", BUCKET_POLICY, {"policy": doc(statement)})) == 1
    assert violations("iam-no-public-principal", BUCKET_POLICY, {"policy": doc({**statement, "Effect": "Deny"})}) == []


@pytest.mark.parametrize("condition", [
    # true when the key is absent: a principal outside any organisation has no aws:PrincipalOrgID
    {"ForAllValues:StringEquals": {"aws:PrincipalOrgID": "o-abc123"}},
    # presence tests pin nobody
    {"Null": {"aws:PrincipalArn": "false"}},
    {"Bool": {"aws:PrincipalIsAWSService": "false"}},
    # an S3 ARN names no account: arn:aws:s3:::* is every bucket of everyone, and a prefix anyone can register
    {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::*"}},
    {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::kiln-*"}},
    {"StringEqualsIfExists": {"aws:SourceAccount": "123456789012"}},
    {"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-*/*"}},
])
def test_conditions_that_do_not_pin_the_caller(condition):
    assert len(violations("iam-no-public-principal", BUCKET_POLICY,
                          {"policy": doc(public(Condition=condition))})) == 1


@pytest.mark.parametrize("condition", [
    {"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}},
    {"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/*"}},
    {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::kiln-models"}},
    {"ArnLike": {"aws:SourceArn": "arn:aws:sns:us-east-2:123456789012:*"}},
])
def test_conditions_that_pin_the_caller(condition):
    assert violations("iam-no-public-principal", BUCKET_POLICY, {"policy": doc(public(Condition=condition))}) == []


def test_a_document_with_a_key_given_twice_is_unreadable():
    twice = ('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}], '
             '"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}')
    assert violations("iam-no-star-on-star", POLICY, {"policy": twice}) == ["policy is not valid JSON"]
    in_statement = ('{"Statement": [{"Effect": "Allow", "Principal": "*", "Principal": {"AWS": "arn:aws:iam::1:root"},'
                    ' "Action": "s3:*"}]}')
    found = violations("iam-no-public-principal", BUCKET_POLICY, {"policy": in_statement})
    assert len(found) == 1 and "not valid JSON" in found[0]
    assert len(violations("iam-no-public-principal", BUCKET_POLICY, {"policy": '{"Statement": [], }'})) == 1


@pytest.mark.parametrize("type_, key", [
    ("aws:secretsmanager/secret:Secret", "policy"),
    ("aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate", "repositoryPolicy"),
    ("aws:opensearch/domainPolicy:DomainPolicy", "accessPolicies"),
    ("aws:cloudwatch/logResourcePolicy:LogResourcePolicy", "policyDocument"),
    ("aws:s3control/accessPointPolicy:AccessPointPolicy", "policy"),
    ("aws:glacier/vault:Vault", "accessPolicy"),
])
def test_a_policy_document_is_judged_whatever_the_resource_calls_it(type_, key):
    found = violations("iam-no-public-principal", type_, {key: doc(public())})
    assert len(found) == 1 and found[0].startswith(f"{key} Statement[0]")
    pinned = public(Condition={"StringEquals": {"aws:PrincipalAccount": "123456789012"}})
    assert violations("iam-no-public-principal", type_, {key: doc(pinned)}) == []


def test_policy_names_that_are_not_documents_are_left_alone():
    listener = {"sslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06", "protocol": "HTTPS"}
    assert violations("iam-no-public-principal", "aws:lb/listener:Listener", listener) == []
    group = {"terminationPolicies": ["OldestLaunchTemplate"], "maxSize": 3}
    assert violations("iam-no-public-principal", "aws:autoscaling/group:Group", group) == []


@pytest.mark.parametrize("type_, props, fragment", [
    ("aws:lambda/functionUrl:FunctionUrl", {"functionName": "f", "authorizationType": "NONE"}, "anyone on the internet"),
    ("aws:ecrpublic/repository:Repository", {"repositoryName": "x"}, "ECR Public"),
    ("aws:ec2/amiLaunchPermission:AmiLaunchPermission", {"imageId": "ami-1", "group": "all"}, "makes the AMI public"),
    ("aws:ec2/imageBlockPublicAccess:ImageBlockPublicAccess", {"state": "unblocked"}, "may be made public"),
    ("aws:ebs/snapshotBlockPublicAccess:SnapshotBlockPublicAccess", {"state": "unblocked"}, "may be made public"),
])
def test_opening_to_anyone_without_a_policy_document(type_, props, fragment):
    found = violations("iam-no-public-principal", type_, props)
    assert len(found) == 1 and fragment in found[0]


def test_what_does_not_open_to_anyone():
    assert violations("iam-no-public-principal", "aws:lambda/functionUrl:FunctionUrl", {"authorizationType": "AWS_IAM"}) == []
    assert violations("iam-no-public-principal", "aws:ec2/amiLaunchPermission:AmiLaunchPermission",
                      {"imageId": "ami-1", "accountId": "123456789012"}) == []
    assert violations("iam-no-public-principal", "aws:ebs/snapshotBlockPublicAccess:SnapshotBlockPublicAccess",
                      {"state": "block-all-sharing"}) == []


@pytest.mark.parametrize("statement, found", [
    (allow("iam:AddUserToGroup", "arn:aws:iam::123456789012:group/*"), "iam:AddUserToGroup"),
    (allow("iam:PutRolePermissionsBoundary", "arn:aws:iam::*:role/*"), "iam:PutRolePermissionsBoundary"),
    (allow("iam:PutUserPermissionsBoundary"), "iam:PutUserPermissionsBoundary"),
])
def test_escalation_through_groups_and_boundaries(statement, found):
    messages = violations("iam-no-privilege-escalation", POLICY, {"policy": doc(statement)})
    assert len(messages) == 1 and found in messages[0]
    one_group = allow("iam:AddUserToGroup", "arn:aws:iam::123456789012:group/readers")
    assert violations("iam-no-privilege-escalation", POLICY, {"policy": doc(one_group)}) == []


def test_sso_permission_set_inline_policies_are_identity_policies():
    sso = "aws:ssoadmin/permissionSetInlinePolicy:PermissionSetInlinePolicy"
    assert len(violations("iam-no-star-on-star", sso, {"inlinePolicy": doc(allow("*"))})) == 1


@pytest.mark.parametrize("type_", ["aws:iam/accessKey:AccessKey", "aws:iam/userLoginProfile:UserLoginProfile",
                                   "aws:iam/serviceSpecificCredential:ServiceSpecificCredential",
                                   "aws:iam/signingCertificate:SigningCertificate", "aws:iam/sshKey:SshKey"])
def test_no_long_lived_credentials(type_):
    assert len(violations("iam-no-long-lived-credentials", type_, {"user": "someone"})) == 1
    assert violations("iam-no-long-lived-credentials", "aws:iam/user:User", {"name": "someone"}) == []


ATTACH = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"


def test_only_aws_managed_and_declared_policies_are_attached():
    own = resource(POLICY, "own", {"arn": "arn:aws:iam::123456789012:policy/own", "policy": doc(allow("s3:GetObject"))})
    managed = resource(ATTACH, "managed", {"policyArn": "arn:aws-us-gov:iam::aws:policy/AmazonEKSWorkerNodePolicy"})
    declared = resource(ATTACH, "declared", {"policyArn": "arn:aws:iam::123456789012:policy/own"})
    foreign = resource(ATTACH, "foreign", {"policyArn": "arn:aws:iam::123456789012:policy/HandMadeAdmin"})
    listed = resource(ROLE, "role", {"managedPolicyArns": ["arn:aws:iam::aws:policy/ReadOnlyAccess",
                                                           "arn:aws:iam::999999999999:policy/Theirs"]})
    found = stack_violations("iam-attached-policies-declared", [own, managed, declared, foreign, listed], with_urns=True)
    assert sorted(urn.rsplit("::", 1)[1] for _, urn in found) == ["foreign", "role"]
    assert "HandMadeAdmin" in dict((u.rsplit("::", 1)[1], m) for m, u in found)["foreign"]


def test_attachments_not_known_during_preview_are_traced_or_deferred():
    own = resource(POLICY, "own", {"arn": "04da6b54-80e4-46f7-96ec-b56ff0331ba9", "policy": doc(allow("s3:GetObject"))})
    traced = resource(ATTACH, "traced", {"policyArn": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"},
                      property_dependencies={"policyArn": [own]})
    assert stack_violations("iam-attached-policies-declared", [own, traced]) == []
    untraced = resource(ATTACH, "untraced", {"policyArn": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"})
    foreign = resource(ATTACH, "foreign", {"policyArn": "arn:aws:iam::123456789012:policy/HandMadeAdmin"})
    found: list = []
    with pytest.raises(UnknownValueError):  # "can't run during preview", after what it could judge was reported
        POLICIES_BY_NAME["iam-attached-policies-declared"].validate(
            _stack_args([own, untraced, foreign]), lambda message, urn=None: found.append(urn))
    assert [u.rsplit("::", 1)[1] for u in found] == ["foreign"]


def test_a_condition_naming_the_foreign_account_itself_does_not_make_it_trusted():
    foreign_pinned = trusting("pinned-to-itself", "arn:aws:iam::999999999999:root",
                              Condition={"StringEquals": {"aws:PrincipalAccount": "999999999999"}})
    org = trusting("org", "arn:aws:iam::999999999999:root",
                   Condition={"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}})
    ours = trusting("ours", "arn:aws:iam::999999999999:root",
                    Condition={"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::123456789012:role/ci"}})
    found = stack_violations("iam-no-cross-account-principal", [foreign_pinned, org, ours], with_urns=True)
    assert [urn.rsplit("::", 1)[1] for _, urn in found] == ["pinned-to-itself"]


@pytest.mark.parametrize("type_, props", [
    ("aws:ecr/replicationConfiguration:ReplicationConfiguration",
     {"replicationConfiguration": {"rules": [{"destinations": [{"region": "us-east-1", "registryId": "999999999999"}]}]}}),
    ("aws:ec2/amiLaunchPermission:AmiLaunchPermission", {"imageId": "ami-1", "accountId": "999999999999"}),
    ("aws:ec2/snapshotCreateVolumePermission:SnapshotCreateVolumePermission",
     {"snapshotId": "snap-1", "accountId": "999999999999"}),
    ("aws:ram/principalAssociation:PrincipalAssociation", {"principal": "999999999999", "resourceShareArn": "arn:x"}),
])
def test_sharing_with_another_account_without_a_policy_document(type_, props):
    own = resource(ROLE, "own", {"arn": "arn:aws:iam::123456789012:role/own"})
    shared = resource(type_, "shared", props)
    found = stack_violations("iam-no-cross-account-principal", [own, shared])
    assert len(found) == 1 and "shares with account 999999999999" in found[0]
    assert stack_violations("iam-no-cross-account-principal", [own, shared],
                            config={"trustedAccountIds": ["999999999999"]}) == []


def test_cross_account_rule_judges_what_it_can_during_preview():
    own = resource(ROLE, "own", {"arn": "arn:aws:iam::123456789012:role/own",
                                 "assumeRolePolicy": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"})
    foreign = trusting("foreign", "arn:aws:iam::999999999999:root")
    found: list = []
    with pytest.raises(UnknownValueError):
        POLICIES_BY_NAME["iam-no-cross-account-principal"].validate(
            _stack_args([own, foreign]), lambda message, urn=None: found.append(urn))
    assert [u.rsplit("::", 1)[1] for u in found] == ["foreign"]


from _policy_helpers import POLICIES as POLICIES_BY_NAME  # noqa: E402
from pulumi_policy import StackValidationArgs  # noqa: E402


def _stack_args(resources, config=None):
    return StackValidationArgs(resources, config or {})


@pytest.mark.parametrize("document", [
    {"Version": "2012-10-17", "statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},
    {"Version": "2012-10-17", "Statement": [{"effect": "Allow", "Action": "*", "Resource": "*"}]},
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "ACTION": "*", "Resource": "*"}]},
])
def test_element_names_in_another_case_are_unreadable(document):
    found = violations("iam-no-star-on-star", POLICY, {"policy": json.dumps(document)})
    assert len(found) == 1 and "in another case" in found[0]
    public_ = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "principal": "*", "Action": "s3:*"}]}
    assert len(violations("iam-no-public-principal", BUCKET_POLICY, {"policy": json.dumps(public_)})) == 1
