"""The pack's rule for kiln's CI preview role (policies/rules/ci_roles.py): the one role a pull request may assume
stays read-only, judged by what it may do, not by its name; and the preview trust is the only pull-request trust
``iam-web-identity-trust-scoped`` lets through."""

from __future__ import annotations

import pulumi
import pytest

from _policy_helpers import resource, stack_violations, use_stack_config, violations
from infra import ci_oidc, ci_roles

RULE = "ci-preview-role-read-only"
ACCOUNT, OTHER = "123456789012", "999999999999"
GITHUB = "https://token.actions.githubusercontent.com"
PROVIDER = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
PREVIEW = "repo:example-org/ml-platform:pull_request"
DEPLOY = "repo:example-org/ml-platform:environment:production"
CI_OIDC = {"providerUrl": GITHUB, "audience": "sts.amazonaws.com", "subject": DEPLOY, "preview": {"subject": PREVIEW}}
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ci-preview"
VIEW = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
RBAC = "kubernetes:rbac.authorization.k8s.io/v1:"


@pytest.fixture
def stack():
    def use(ci=CI_OIDC):
        use_stack_config(ci)
    use()
    yield use
    pulumi.runtime.set_all_config({}, [])


def trust(subject=PREVIEW, provider=PROVIDER):
    return ci_oidc.web_identity_trust(provider, GITHUB, "sts.amazonaws.com", subject)


def preview_stack(**extra):
    """What infra/ci_roles.py declares for the preview role, as the pack sees it (kiln's own documents)."""
    read = ci_roles.read_policy("aws", "us-east-2", ACCOUNT)
    state = ci_roles.state_policy("aws", "state-bucket", "kiln/", f"arn:aws:kms:us-east-2:{ACCOUNT}:key/"
                                  "0e3f1f2a-1111-2222-3333-444455556666", write=False)
    read_arn = f"arn:aws:iam::{ACCOUNT}:policy/ci-read"
    resources = {
        "role": resource("aws:iam/role:Role", "ci-preview", {"name": "ci-preview", "arn": ROLE_ARN,
                                                            "assumeRolePolicy": trust()}),
        "read": resource("aws:iam/policy:Policy", "ci-read", {"arn": read_arn, "policy": read}),
        "attach": resource("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "ci-preview",
                           {"role": "ci-preview", "policyArn": read_arn}),
        "state": resource("aws:iam/rolePolicy:RolePolicy", "ci-preview-state", {"role": "ci-preview", "policy": state}),
        "entry": resource("aws:eks/accessEntry:AccessEntry", "ci-preview",
                          {"principalArn": ROLE_ARN, "kubernetesGroups": [ci_roles.CI_READ_GROUP]}),
        "view": resource("aws:eks/accessPolicyAssociation:AccessPolicyAssociation", "ci-preview",
                         {"principalArn": ROLE_ARN, "policyArn": VIEW}),
        "clusterrole": resource(f"{RBAC}ClusterRole", "ci-read", {"metadata": {"name": ci_roles.CI_READ_GROUP}, "rules": [
            {"apiGroups": [g], "resources": list(r), "verbs": list(ci_roles.READ_VERBS)} for g, r in ci_roles.CI_READ_RULES]}),
        "binding": resource(f"{RBAC}ClusterRoleBinding", "ci-read", {
            "metadata": {"name": ci_roles.CI_READ_GROUP},
            "roleRef": {"kind": "ClusterRole", "name": ci_roles.CI_READ_GROUP},
            "subjects": [{"kind": "Group", "name": ci_roles.CI_READ_GROUP}]}),
    }
    resources.update(extra)
    return [r for r in resources.values() if r is not None]


def test_kilns_preview_role_is_read_only(stack):
    assert stack_violations(RULE, preview_stack()) == []


@pytest.mark.parametrize("action", ["ec2:RunInstances", "ec2:*", "*", "iam:PassRole", "s3:PutObject",
                                    "ec2:D*", "sts:AssumeRole", "ssm:SendCommand"])
def test_a_write_in_any_policy_form_is_flagged(stack, action):
    doc = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "%s", "Resource": "*"}]}' % action
    inline = resource("aws:iam/rolePolicy:RolePolicy", "extra", {"role": "ci-preview", "policy": doc})
    [found] = stack_violations(RULE, preview_stack(extra=inline))
    assert repr(action) in found and "must stay read-only" in found
    managed = preview_stack(read=resource("aws:iam/policy:Policy", "ci-read",
                                          {"arn": f"arn:aws:iam::{ACCOUNT}:policy/ci-read", "policy": doc}))
    assert len(stack_violations(RULE, managed)) == 1
    on_role = preview_stack(role=resource("aws:iam/role:Role", "ci-preview", {
        "name": "ci-preview", "arn": ROLE_ARN, "assumeRolePolicy": trust(), "inlinePolicies": [{"policy": doc}]}))
    assert len(stack_violations(RULE, on_role)) == 1


def test_not_action_and_foreign_managed_policies_are_never_read_only(stack):
    not_action = '{"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}'
    found = stack_violations(RULE, preview_stack(extra=resource("aws:iam/rolePolicy:RolePolicy", "x",
                                                                {"role": "ci-preview", "policy": not_action})))
    assert len(found) == 1 and "NotAction" in found[0]
    aws_managed = resource("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "ro",
                           {"role": "ci-preview", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"})
    [found] = stack_violations(RULE, preview_stack(extra=aws_managed))
    assert "not a policy of this stack" in found


def test_kubernetes_access_beyond_view_is_flagged(stack):
    admin = resource("aws:eks/accessPolicyAssociation:AccessPolicyAssociation", "admin", {
        "principalArn": ROLE_ARN, "policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"})
    [found] = stack_violations(RULE, preview_stack(extra=admin))
    assert "AmazonEKSClusterAdminPolicy" in found
    writes = resource(f"{RBAC}ClusterRole", "ci-read", {"metadata": {"name": ci_roles.CI_READ_GROUP}, "rules": [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]}]})
    [found] = stack_violations(RULE, preview_stack(clusterrole=writes))
    assert "['create']" in found
    edit = resource(f"{RBAC}ClusterRoleBinding", "edit", {"metadata": {"name": "ci-edit"},
                    "roleRef": {"kind": "ClusterRole", "name": "edit"},
                    "subjects": [{"kind": "Group", "name": ci_roles.CI_READ_GROUP}]})
    [found] = stack_violations(RULE, preview_stack(extra=edit))
    assert "not declared in this stack" in found


def test_only_the_role_with_kilns_preview_trust_is_judged(stack):
    # The deploy role (another subject) may write; no preview config, no rule.
    deploy = resource("aws:iam/role:Role", "ci-deploy", {"name": "ci-deploy", "arn": f"arn:aws:iam::{ACCOUNT}:role/ci-deploy",
                                                        "assumeRolePolicy": trust(DEPLOY)})
    writes = resource("aws:iam/rolePolicy:RolePolicy", "deploy", {"role": "ci-deploy", "policy":
                      '{"Statement": [{"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*"}]}'})
    assert stack_violations(RULE, preview_stack(deploy=deploy, writes=writes)) == []
    stack({k: v for k, v in CI_OIDC.items() if k != "preview"})
    inline = resource("aws:iam/rolePolicy:RolePolicy", "x", {"role": "ci-preview", "policy": writes.props["policy"]})
    assert stack_violations(RULE, preview_stack(extra=inline)) == []


def test_the_preview_trust_through_another_accounts_provider_is_flagged(stack):
    foreign = resource("aws:iam/role:Role", "ci-preview", {
        "name": "ci-preview", "arn": ROLE_ARN,
        "assumeRolePolicy": trust(provider=f"arn:aws:iam::{OTHER}:oidc-provider/token.actions.githubusercontent.com")})
    [found] = stack_violations(RULE, preview_stack(role=foreign))
    assert "another account's OIDC provider" in found


def test_only_kilns_exact_preview_trust_may_name_pull_requests(stack):
    """iam-web-identity-trust-scoped refuses every pull-request trust but the configured preview one."""
    role = "aws:iam/role:Role"
    assert violations("iam-web-identity-trust-scoped", role, {"assumeRolePolicy": trust()}) == []
    other_repo = trust("repo:example-org/other:pull_request")
    assert len(violations("iam-web-identity-trust-scoped", role, {"assumeRolePolicy": other_repo})) == 1
    stack({k: v for k, v in CI_OIDC.items() if k != "preview"})
    assert len(violations("iam-web-identity-trust-scoped", role, {"assumeRolePolicy": trust()})) == 1


def test_a_binding_to_the_roles_kubernetes_user_is_judged_like_one_to_its_group(stack):
    # EKS maps the role to a Kubernetes user too: the entry's userName or, without one, the role's
    # assumed-role ARN. A binding to that user gives the role its verbs; a binding to anyone else does not.
    edit = lambda user: resource(f"{RBAC}ClusterRoleBinding", "edit", {    # noqa: E731
        "metadata": {"name": "ci-edit"}, "roleRef": {"kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": user}]})
    named = resource("aws:eks/accessEntry:AccessEntry", "ci-preview",
                     {"principalArn": ROLE_ARN, "userName": "ci-bot", "kubernetesGroups": [ci_roles.CI_READ_GROUP]})
    assert stack_violations(RULE, preview_stack(entry=named, extra=edit("ci-bot"))) == [
        "the CI preview role 'ci-preview' (trusted by pull requests: 'repo:example-org/ml-platform:pull_request') must "
        "stay read-only: the role's user is bound to ClusterRole 'edit', which is not declared in this stack (its "
        "verbs cannot be judged)"]
    default_user = f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-preview/{{{{SessionName}}}}"
    [found] = stack_violations(RULE, preview_stack(extra=edit(default_user)))
    assert "the role's user is bound to ClusterRole 'edit'" in found
    [found] = stack_violations(RULE, preview_stack(extra=edit(ROLE_ARN)))
    assert "the role's user is bound to ClusterRole 'edit'" in found
    # Another user, another role's session, or the group name as a user: not this role.
    for user in ("someone-else", f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deploy/x", ci_roles.CI_READ_GROUP):
        assert stack_violations(RULE, preview_stack(entry=named, extra=edit(user))) == []
    # Bound to the stack's read-only ClusterRole: allowed.
    reader = resource(f"{RBAC}ClusterRoleBinding", "read-user", {
        "metadata": {"name": "ci-read-user"}, "roleRef": {"kind": "ClusterRole", "name": ci_roles.CI_READ_GROUP},
        "subjects": [{"kind": "User", "name": "ci-bot"}]})
    assert stack_violations(RULE, preview_stack(entry=named, extra=reader)) == []
