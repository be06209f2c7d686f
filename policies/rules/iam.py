"""IAM: no ``*`` on ``*``, no AdministratorAccess, IRSA trust pinned to one service account."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any, Iterator

from pulumi_policy import ResourceValidationPolicy

from policies.rules._props import MANDATORY, as_list, get, iter_mappings, json_document

ROLE = "aws:iam/role:Role"
# Identity-policy documents, by resource type and the property holding them.
POLICY_DOCUMENTS = {
    "aws:iam/policy:Policy": "policy",
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
}
ATTACHMENTS = {
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": "policyArn",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment": "policyArn",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment": "policyArn",
    "aws:iam/policyAttachment:PolicyAttachment": "policyArn",
    "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive": "policyArns",
    ROLE: "managedPolicyArns",
}
_ADMIN_ARN = re.compile(r"^arn:aws[a-z-]*:iam::aws:policy/AdministratorAccess$")
_EKS_OIDC = "oidc.eks."
_WEB_IDENTITY = "sts:assumerolewithwebidentity"
_SERVICE_ACCOUNT = re.compile(r"^system:serviceaccount:[a-z0-9-]+:[a-z0-9.-]+$")


def statements(document: Any) -> Iterator[Mapping[str, Any]]:
    doc = json_document(document)
    if isinstance(doc, Mapping):
        yield from iter_mappings(doc.get("Statement"))


def _documents(args) -> Iterator[tuple[str, Any]]:
    key = POLICY_DOCUMENTS.get(args.resource_type)
    if key is not None:
        yield key, get(args.props, key)
    if args.resource_type == ROLE:
        for i, inline in enumerate(iter_mappings(get(args.props, "inlinePolicies"))):
            yield f"inlinePolicies[{i}].policy", get(inline, "policy")


def star_on_star(statement: Mapping[str, Any]) -> bool:
    """An Allow on every action and every resource.

    ``NotAction``/``NotResource`` in an Allow grant everything *except* what they list,
    so ``NotAction: iam:PassRole`` with ``Resource: "*"`` is ``*`` on ``*`` in all but name.
    """
    if statement.get("Effect", "Allow") != "Allow":
        return False
    all_actions = "NotAction" in statement or any(a in ("*", "*:*") for a in as_list(statement.get("Action")))
    all_resources = "NotResource" in statement or "*" in as_list(statement.get("Resource"))
    return all_actions and all_resources


def validate_no_star_on_star(args, report_violation) -> None:
    for where, document in _documents(args):
        if document is not None and json_document(document) is None:
            report_violation(f"{where} is not valid JSON", None)
            continue
        for i, statement in enumerate(statements(document)):
            if star_on_star(statement):
                sid = statement.get("Sid")
                report_violation(f"{where} Statement[{i}]{f' ({sid})' if sid else ''} allows '*' on '*'", None)


def validate_no_admin(args, report_violation) -> None:
    key = ATTACHMENTS.get(args.resource_type)
    if key is None:
        return
    for arn in as_list(get(args.props, key)):
        if isinstance(arn, str) and _ADMIN_ARN.match(arn):
            report_violation(f"{key} attaches {arn}", None)


def _allows_web_identity(statement: Mapping[str, Any]) -> bool:
    """Whether the statement grants sts:AssumeRoleWithWebIdentity, also via ``sts:*``, ``*`` or ``NotAction``.

    IAM action names are case-insensitive and may use ``*``/``?`` wildcards.
    """
    if "NotAction" in statement:
        return not any(fnmatch.fnmatchcase(_WEB_IDENTITY, str(a).lower()) for a in as_list(statement["NotAction"]))
    return any(fnmatch.fnmatchcase(_WEB_IDENTITY, str(a).lower()) for a in as_list(statement.get("Action")))


def irsa_problems(statement: Mapping[str, Any]) -> list[str]:
    """Problems of one trust statement if it trusts an EKS OIDC provider, else []."""
    federated = as_list(get(statement, "Principal", "Federated"))
    conditions = statement.get("Condition") or {}
    keys = [k for op in conditions for k in (conditions[op] or {})]
    is_eks = any(_EKS_OIDC in str(f) for f in federated) or any(_EKS_OIDC in str(k) for k in keys)
    if statement.get("Effect", "Allow") != "Allow" or not is_eks or not _allows_web_identity(statement):
        return []
    problems = []
    equals = conditions.get("StringEquals") or {}
    subs = {k: equals[k] for k in equals if str(k).endswith(":sub")}
    if not subs:
        problems.append("trusts an EKS OIDC provider without a StringEquals condition on <issuer>:sub")
    for key, value in subs.items():
        values = as_list(value)
        if len(values) != 1 or not isinstance(values[0], str) or not _SERVICE_ACCOUNT.match(values[0]):
            problems.append(f"{key} must name exactly one service account (system:serviceaccount:<ns>:<name>), got {value!r}")
    for op in conditions:
        if op != "StringEquals" and any(str(k).endswith(":sub") for k in (conditions[op] or {})):
            problems.append(f"{op} on :sub widens the trust; use StringEquals with one service account")
    return problems


def validate_irsa_trust(args, report_violation) -> None:
    if args.resource_type != ROLE:
        return
    for i, statement in enumerate(statements(get(args.props, "assumeRolePolicy"))):
        for problem in irsa_problems(statement):
            report_violation(f"assumeRolePolicy Statement[{i}]: {problem}", None)


POLICIES = [
    ResourceValidationPolicy(
        name="iam-no-star-on-star",
        description="No IAM policy statement allows '*' actions on '*' resources.",
        validate=validate_no_star_on_star,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="iam-no-administrator-access",
        description="Nothing attaches the AdministratorAccess managed policy.",
        validate=validate_no_admin,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="iam-irsa-trust-scoped",
        description="Roles trusted by an EKS OIDC provider are scoped to one service account.",
        validate=validate_irsa_trust,
        enforcement_level=MANDATORY,
    ),
]
