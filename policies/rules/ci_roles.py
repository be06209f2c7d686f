"""kiln's CI preview role: the one role a pull request may assume, so the one that must stay read-only.

``iam-web-identity-trust-scoped`` refuses every trust a pull request's token can satisfy, with one exception:
the role whose trust is *exactly* the one kiln writes for the stack's ``kiln:ciOidc.preview`` (web identity
through this account's IAM OIDC provider for ``providerUrl``, that audience, that subject). Its name or component
type prove nothing; what it may do is judged here, by behaviour: every policy the role holds (inline, attached,
``managedPolicyArns``) allows only reads, and in Kubernetes it holds only ``AmazonEKSViewPolicy`` and groups
bound to read verbs. A contributor who gives that role a write, an AWS-managed policy, cluster admin or an
``edit`` binding is flagged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Optional

from pulumi_policy import StackValidationPolicy

from infra import ci_oidc
from infra import config as kiln_config
from policies.rules._props import MANDATORY, as_list, get, iter_mappings, json_document, known

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
MANAGED_POLICY = "aws:iam/policy:Policy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
EXCLUSIVE_ATTACHMENTS = "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
ACCESS_POLICY_ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
K8S_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
BINDINGS = ("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
READ_ACCESS_POLICIES = ("AmazonEKSViewPolicy",)
_ACCESS_POLICY_ARN = re.compile(r"arn:aws[a-z-]*:eks::aws:cluster-access-policy/(?P<name>[A-Za-z0-9]+)")
READ_VERBS = frozenset({"get", "list", "watch"})
# An action is a read when every operation it can match is named Describe…, Get… or List… (``ec2:Describe*`` is;
# ``ec2:*``, ``ec2:D*`` and ``*`` are not); kms:Decrypt is the one other (the stack's secrets key).
_READ_ACTION = re.compile(r"^[a-z0-9-]+:(Describe|Get|List)[A-Za-z0-9*?]*$")
OTHER_READS = ("kms:Decrypt",)


def stack_ci_oidc() -> Optional[kiln_config.CiOidcConfig]:
    try:
        return kiln_config.load().ci_oidc
    except kiln_config.ConfigError:
        return None


def is_kiln_preview_trust(trust: Any, role_arn: Any, ci: Optional[kiln_config.CiOidcConfig] = None) -> bool:
    """Whether a role's trust is exactly kiln's preview trust for the stack's ``kiln:ciOidc.preview``."""
    ci = ci if ci is not None else stack_ci_oidc()
    if ci is None or ci.preview is None:
        return False
    return ci_oidc.is_web_identity_trust(trust, role_arn, ci.provider_url, ci.preview.audience, ci.preview.subject,
                                         ci.provider_arn)


def write_actions(document: Any) -> Iterator[str]:
    """The actions of a policy document's Allow statements that are not reads (``NotAction`` allows everything
    else, so it is never read-only)."""
    doc = json_document(document)
    for statement in iter_mappings(doc.get("Statement") if isinstance(doc, Mapping) else None):
        if statement.get("Effect") == "Deny":
            continue  # anything but an exact Deny is judged as an Allow (iam._allows): never guess a write away
        if "NotAction" in statement:
            yield f"NotAction {statement['NotAction']!r}"
        for action in as_list(statement.get("Action")):
            if not (isinstance(action, str) and (_READ_ACTION.match(action) or action in OTHER_READS)):
                yield repr(action)


def _names(role) -> set[Any]:
    return {v for v in (known(role.props, "name"), known(role.props, "id"), known(role.props, "arn")) if v is not None}


def problems_of(role, resources) -> Iterator[str]:
    """Everything that makes kiln's preview role more than read-only."""
    names, arn = _names(role), get(role.props, "arn")
    managed = {known(r.props, "arn"): r for r in resources if r.resource_type == MANAGED_POLICY}
    for i, inline in enumerate(iter_mappings(get(role.props, "inlinePolicies"))):
        for action in write_actions(get(inline, "policy")):
            yield f"inlinePolicies[{i}] allows {action}"
    attached = [(f"managedPolicyArns[{i}]", a) for i, a in enumerate(as_list(get(role.props, "managedPolicyArns")))]
    for r in resources:
        if r.resource_type == ROLE_POLICY and get(r.props, "role") in names:
            for action in write_actions(get(r.props, "policy")):
                yield f"{ROLE_POLICY} {r.name!r} allows {action}"
        elif r.resource_type == ATTACHMENT and get(r.props, "role") in names:
            attached.append((f"{ATTACHMENT} {r.name!r}", get(r.props, "policyArn")))
        elif r.resource_type == EXCLUSIVE_ATTACHMENTS and get(r.props, "roleName") in names:
            attached += [(f"{EXCLUSIVE_ATTACHMENTS} {r.name!r}", a) for a in as_list(get(r.props, "policyArns"))]
        elif r.resource_type == ACCESS_POLICY_ASSOCIATION and get(r.props, "principalArn") == arn:
            policy = get(r.props, "policyArn")
            read = _ACCESS_POLICY_ARN.fullmatch(policy) if isinstance(policy, str) else None
            if not (read and read["name"] in READ_ACCESS_POLICIES):  # EKS's own ARN, not any string ending in the name
                yield f"{ACCESS_POLICY_ASSOCIATION} {r.name!r} associates {policy} (only {', '.join(READ_ACCESS_POLICIES)})"
        elif r.resource_type == ACCESS_ENTRY and get(r.props, "principalArn") == arn:
            for group in as_list(get(r.props, "kubernetesGroups")):
                yield from _bound_problems(f"group {group!r}", _is_group(group), resources)
            # The role is also the Kubernetes user the entry names (or, without userName, EKS's
            # assumed-role ARN for it): a binding to that user gives the role its verbs as surely as a group.
            yield from _bound_problems("the role's user", _is_user_of(get(r.props, "userName"), names), resources)
    for where, policy_arn in attached:
        if policy_arn not in managed:
            yield f"{where} attaches {policy_arn}, which is not a policy of this stack (AWS-managed policies are not judged read-only)"
        else:
            for action in write_actions(get(managed[policy_arn].props, "policy")):
                yield f"{where} attaches {MANAGED_POLICY} {managed[policy_arn].name!r}, which allows {action}"


def _is_group(group: Any) -> Callable[[Any], bool]:
    return lambda subject: get(subject, "kind") == "Group" and get(subject, "name") == group


def _is_user_of(user_name: Any, role_names: set[Any]) -> Callable[[Any], bool]:
    """A ``User`` subject that is the entry's ``userName`` or, failing closed, names the role at all (its ARN, or
    EKS's default user for a role, ``arn:aws:sts::ACCOUNT:assumed-role/NAME/{{SessionName}}``)."""
    def matches(subject: Any) -> bool:
        name = get(subject, "name")
        if get(subject, "kind") != "User" or not isinstance(name, str):
            return False
        if user_name is not None and name == user_name:
            return True
        return any(isinstance(n, str) and (name == n or f"assumed-role/{n.rsplit('/', 1)[-1]}/" in name)
                   for n in role_names)
    return matches


def _bound_problems(who: str, is_subject: Callable[[Any], bool], resources) -> Iterator[str]:
    """A Kubernetes group or user the role is mapped to may be bound only to roles of this stack with read verbs."""
    rules_of = {(r.resource_type, get(r.props, "metadata", "name"), get(r.props, "metadata", "namespace")): r
                for r in resources if r.resource_type in (CLUSTER_ROLE, K8S_ROLE)}
    for binding in (r for r in resources if r.resource_type in BINDINGS):
        if not any(is_subject(s) for s in iter_mappings(get(binding.props, "subjects"))):
            continue
        kind, name = get(binding.props, "roleRef", "kind"), get(binding.props, "roleRef", "name")
        namespace = get(binding.props, "metadata", "namespace") if kind == "Role" else None
        role = rules_of.get((CLUSTER_ROLE if kind == "ClusterRole" else K8S_ROLE, name, namespace))
        if role is None:
            yield f"{who} is bound to {kind} {name!r}, which is not declared in this stack (its verbs cannot be judged)"
            continue
        for rule in iter_mappings(get(role.props, "rules")):
            verbs = set(as_list(get(rule, "verbs")))
            if not verbs <= READ_VERBS:
                yield f"{who} is bound to {kind} {name!r}, which allows {sorted(verbs - READ_VERBS)}"


def validate_preview_role_read_only(args, report_violation) -> None:
    ci = stack_ci_oidc()
    if ci is None or ci.preview is None:
        return
    for role in (r for r in args.resources if r.resource_type == ROLE):
        if not is_kiln_preview_trust(known(role.props, "assumeRolePolicy"), None, ci):
            continue
        get(role.props, "arn")   # not known yet (created by this update): the SDK's "can't run during preview"
        if not is_kiln_preview_trust(get(role.props, "assumeRolePolicy"), get(role.props, "arn"), ci):
            report_violation(f"the role {role.name!r} trusts pull requests ({ci.preview.subject!r}) through another "
                             "account's OIDC provider", role.urn)
            continue
        for problem in problems_of(role, args.resources):
            report_violation(f"the CI preview role {role.name!r} (trusted by pull requests: {ci.preview.subject!r}) "
                             f"must stay read-only: {problem}", role.urn)


POLICIES = [
    StackValidationPolicy(
        name="ci-preview-role-read-only",
        description="kiln's CI preview role, the one role a pull request may assume (kiln:ciOidc.preview), holds "
                    "only reads: its policies allow Describe/Get/List (and kms:Decrypt), its EKS access is "
                    "AmazonEKSViewPolicy and groups bound to get/list/watch.",
        validate=validate_preview_role_read_only,
        enforcement_level=MANDATORY,
    ),
]
