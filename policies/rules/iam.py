"""IAM, read in every form a policy document takes: no admin, no escalation, no public or foreign trust.

Identity policies arrive as ``aws.iam.Policy``, role/user/group inline policies,
a role's ``inlinePolicies``, and attachments of AWS-managed policies (by
attachment resource, ``managedPolicyArns`` or an exclusive attachment list).
Resource policies — a role's trust policy, ECR repository and registry
policies, S3 bucket, KMS key, SQS, SNS, Secrets Manager, EventBridge and EFS
policies, Lambda permissions — say *who* may act.

Wildcards are judged by what they match, not how they are spelled: an action
or resource pattern is "everything" when it matches every action or every ARN
(``*``, ``*:*``, ``arn:*``, ``arn:aws:*:*:*:*``), and ``NotAction`` /
``NotResource`` in an Allow mean everything but what they list.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Iterator, Optional

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from infra import ci_oidc
from policies.rules._props import MANDATORY, as_list, config, get, iter_mappings, json_document, schema

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
    "aws:iam/userPolicyAttachmentsExclusive:UserPolicyAttachmentsExclusive": "policyArns",
    "aws:iam/groupPolicyAttachmentsExclusive:GroupPolicyAttachmentsExclusive": "policyArns",
    "aws:ssoadmin/managedPolicyAttachment:ManagedPolicyAttachment": "managedPolicyArn",
    ROLE: "managedPolicyArns",
}
# Resource policies (who may act on a resource), by resource type and the property holding them.
RESOURCE_POLICIES = {
    ROLE: "assumeRolePolicy",
    "aws:ecr/repositoryPolicy:RepositoryPolicy": "policy",
    "aws:ecr/registryPolicy:RegistryPolicy": "policy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
    "aws:s3/bucket:Bucket": "policy",
    "aws:s3/bucketV2:BucketV2": "policy",
    "aws:kms/key:Key": "policy",
    "aws:kms/keyPolicy:KeyPolicy": "policy",
    "aws:sqs/queue:Queue": "policy",
    "aws:sqs/queuePolicy:QueuePolicy": "policy",
    "aws:sns/topic:Topic": "policy",
    "aws:sns/topicPolicy:TopicPolicy": "policy",
    "aws:secretsmanager/secretPolicy:SecretPolicy": "policy",
    "aws:cloudwatch/eventBusPolicy:EventBusPolicy": "policy",
    "aws:efs/fileSystemPolicy:FileSystemPolicy": "policy",
}
LAMBDA_PERMISSION = "aws:lambda/permission:Permission"
# Queues and topics an AWS service delivers messages to (EventBridge rules, S3 notifications, ...): a service
# principal there needs a condition on the source, or any account's rule or bucket can deliver through it (the
# confused deputy) — forged notices, such as the termination handler's (infra/termination.py), would be obeyed.
MESSAGE_RESOURCES = ("aws:sqs/queue:Queue", "aws:sqs/queuePolicy:QueuePolicy", "aws:sns/topic:Topic",
                     "aws:sns/topicPolicy:TopicPolicy")
# AWS-managed policies that amount to administrator access (or let a principal grant it to itself).
DEFAULT_FORBIDDEN_POLICIES = ["AdministratorAccess", "IAMFullAccess", "PowerUserAccess",
                              "AdministratorAccess-Amplify", "AdministratorAccess-AWSElasticBeanstalk"]
# Condition keys that pin *who* a statement lets in: an organisation, an account, a principal, a source.
PRINCIPAL_CONDITION_KEYS = frozenset(k.lower() for k in (
    "aws:PrincipalAccount", "aws:PrincipalOrgID", "aws:PrincipalOrgPaths", "aws:PrincipalArn", "aws:SourceAccount",
    "aws:SourceArn", "aws:SourceOrgID", "aws:SourceOrgPaths", "aws:SourceVpc", "aws:SourceVpce", "sts:ExternalId"))
# Actions that let a principal give itself (or a resource it controls) more than it has.
ESCALATION_ACTIONS = {
    "role": ("iam:PassRole", "iam:AttachRolePolicy", "iam:PutRolePolicy", "iam:UpdateAssumeRolePolicy",
             "iam:DeleteRolePermissionsBoundary", "sts:AssumeRole"),
    "user": ("iam:AttachUserPolicy", "iam:PutUserPolicy", "iam:CreateAccessKey", "iam:CreateLoginProfile",
             "iam:UpdateLoginProfile", "iam:AddUserToGroup", "iam:DeleteUserPermissionsBoundary"),
    "group": ("iam:AttachGroupPolicy", "iam:PutGroupPolicy"),
    "policy": ("iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion"),
}
_EKS_OIDC = "oidc.eks."
_WEB_IDENTITY = "sts:assumerolewithwebidentity"
_SERVICE_ACCOUNT = re.compile(r"^system:serviceaccount:[a-z0-9-]+:[a-z0-9.-]+$")
_ACCOUNT = re.compile(r"^\d{12}$")
_PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
_SAMPLE_ACTIONS = ("iam:passrole", "s3:getobject", "ec2:runinstances", "kms:decrypt", "sts:assumerole")


# --------------------------------------------------------------------------- reading documents


def statements(document: Any) -> Iterator[Mapping[str, Any]]:
    doc = json_document(document)
    if isinstance(doc, Mapping):
        yield from iter_mappings(doc.get("Statement"))


@lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """An IAM wildcard pattern (``*`` any run, ``?`` one character; nothing else is special) as a regex."""
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(f"^{body}$", re.IGNORECASE if ignore_case else 0)


def action_matches(pattern: Any, action: str) -> bool:
    return isinstance(pattern, str) and bool(_glob(pattern, True).match(action))


def resource_matches(pattern: Any, arn: str) -> bool:
    return isinstance(pattern, str) and bool(_glob(pattern, False).match(arn))


def is_every_action(pattern: Any) -> bool:
    return all(action_matches(pattern, a) for a in _SAMPLE_ACTIONS)


def is_every_resource(pattern: Any) -> bool:
    """``*`` or an ARN pattern that matches an IAM role, an S3 object and an EC2 instance alike."""
    if pattern == "*":
        return True
    return any(all(resource_matches(pattern, arn) for arn in (
        f"arn:{p}:iam::123456789012:role/r", f"arn:{p}:s3:::bucket/key", f"arn:{p}:ec2:us-east-2:123456789012:instance/i-1"))
        for p in _PARTITIONS)


def _allows(statement: Mapping[str, Any]) -> bool:
    return statement.get("Effect", "Allow") == "Allow"


def grants(statement: Mapping[str, Any], action: str) -> bool:
    """Whether an Allow statement grants ``action``: listed (wildcards matched), or not excluded by NotAction."""
    if "NotAction" in statement:
        return not any(action_matches(a, action) for a in as_list(statement["NotAction"]))
    return any(action_matches(a, action) for a in as_list(statement.get("Action")))


def covers(statement: Mapping[str, Any], arn: str) -> bool:
    if "NotResource" in statement:
        return not any(resource_matches(r, arn) for r in as_list(statement["NotResource"]))
    return any(resource_matches(r, arn) for r in as_list(statement.get("Resource")))


def star_on_star(statement: Mapping[str, Any]) -> bool:
    """An Allow on every action and every resource, however spelled.

    ``NotAction``/``NotResource`` in an Allow grant everything *except* what they list,
    so ``NotAction: iam:PassRole`` with ``Resource: "*"`` is ``*`` on ``*`` in all but name.
    """
    if not _allows(statement):
        return False
    all_actions = "NotAction" in statement or any(is_every_action(a) for a in as_list(statement.get("Action")))
    all_resources = "NotResource" in statement or any(is_every_resource(r) for r in as_list(statement.get("Resource")))
    return all_actions and all_resources


def _identity_documents(args) -> Iterator[tuple[str, Any]]:
    key = POLICY_DOCUMENTS.get(args.resource_type)
    if key is not None:
        yield key, get(args.props, key)
    if args.resource_type == ROLE:
        for i, inline in enumerate(iter_mappings(get(args.props, "inlinePolicies"))):
            yield f"inlinePolicies[{i}].policy", get(inline, "policy")


def _label(i: int, statement: Mapping[str, Any]) -> str:
    sid = statement.get("Sid")
    return f"Statement[{i}]{f' ({sid})' if sid else ''}"


# --------------------------------------------------------------------------- identity policies


def validate_no_star_on_star(args, report_violation) -> None:
    for where, document in _identity_documents(args):
        if document is not None and json_document(document) is None:
            report_violation(f"{where} is not valid JSON", None)
            continue
        for i, statement in enumerate(statements(document)):
            if star_on_star(statement):
                report_violation(f"{where} {_label(i, statement)} allows '*' on '*'", None)


def escalations(statement: Mapping[str, Any]) -> list[str]:
    """The escalation actions an Allow statement grants on every role/user/group/policy of an account."""
    if not _allows(statement) or star_on_star(statement):
        return []  # star on star is its own rule
    found = []
    for kind, actions in ESCALATION_ACTIONS.items():
        every = any(all(covers(statement, f"arn:{p}:iam::123456789012:{kind}/{name}") for name in (f"a-{kind}", "path/b"))
                    for p in _PARTITIONS)
        if every:
            found += [a for a in actions if grants(statement, a)]
    return found


def validate_no_privilege_escalation(args, report_violation) -> None:
    for where, document in _identity_documents(args):
        for i, statement in enumerate(statements(document)):
            found = escalations(statement)
            if found:
                report_violation(f"{where} {_label(i, statement)} allows {', '.join(found)} on every matching "
                                 "role/user/group/policy: a principal with it can grant itself more", None)


def _forbidden_arn(arn: Any, names: list[str]) -> bool:
    if not isinstance(arn, str):
        return False
    m = re.fullmatch(r"arn:aws[a-z-]*:iam::aws:policy/(?:[^/]+/)*(?P<name>[^/]+)", arn, re.IGNORECASE)
    return bool(m) and m["name"].lower() in {n.lower() for n in names}


def validate_no_admin(args, report_violation) -> None:
    key = ATTACHMENTS.get(args.resource_type)
    if key is None:
        return
    names = list(config(args, "forbiddenPolicies", DEFAULT_FORBIDDEN_POLICIES))
    for arn in as_list(get(args.props, key)):
        if _forbidden_arn(arn, names):
            report_violation(f"{key} attaches {arn}, an administrator-like AWS managed policy (forbiddenPolicies)", None)


# --------------------------------------------------------------------------- trust and resource policies


def _principals(statement: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(kind, value)`` for each principal; ``Principal: "*"`` is ``("*", "*")``."""
    principal = statement.get("Principal")
    if isinstance(principal, str):
        yield "*", principal
    elif isinstance(principal, Mapping):
        for kind in principal:
            for value in as_list(principal[kind]):
                yield kind, value
    if "NotPrincipal" in statement:  # Allow with NotPrincipal: everyone but the listed
        yield "NotPrincipal", "*"


def _pinning(value: Any) -> bool:
    """A condition value that names something: no wildcard, except in an ARN's resource part."""
    if not isinstance(value, str) or not value:
        return False
    head = value.split(":", 5)[:5] if value.startswith("arn:") else [value]
    return not any(ch in part for part in head for ch in "*?")


def _pins_principal(statement: Mapping[str, Any]) -> bool:
    """A condition (not a negated one) on who the caller is or where it comes from, naming it without wildcards."""
    conditions = statement.get("Condition") or {}
    for op in conditions:
        if "Not" in str(op) or "IfExists" in str(op):
            continue
        block = conditions[op] or {}
        for key in block:
            values = as_list(block[key])
            if str(key).lower() in PRINCIPAL_CONDITION_KEYS and values and all(_pinning(v) for v in values):
                return True
    return False


def _is_public(kind: str, value: Any) -> bool:
    return kind in ("*", "NotPrincipal") or (isinstance(value, str) and any(ch in value for ch in "*?"))


def resource_documents(resource_type: str, props: Any) -> Iterator[tuple[str, Any]]:
    key = RESOURCE_POLICIES.get(resource_type)
    if key is not None and get(props, key) is not None:
        yield key, get(props, key)


def validate_no_public_principal(args, report_violation) -> None:
    for where, document in resource_documents(args.resource_type, args.props):
        for i, statement in enumerate(statements(document)):
            if not _allows(statement) or _pins_principal(statement):
                continue
            public = [f"{k}: {v}" if k not in ("*", "NotPrincipal") else str(v) for k, v in _principals(statement)
                      if _is_public(k, v)]
            if public:
                report_violation(f"{where} {_label(i, statement)} allows {', '.join(public)} (anyone, in any "
                                 "account) without a condition on the caller's account, organisation or ARN", None)
            services = [str(v) for k, v in _principals(statement) if k == "Service" and not _is_public(k, v)]
            if services and args.resource_type in MESSAGE_RESOURCES:
                report_violation(f"{where} {_label(i, statement)} allows Service: {', '.join(services)} without a "
                                 "condition on aws:SourceArn or aws:SourceAccount: any account's rule, bucket or "
                                 "topic could deliver messages through it", None)
    if args.resource_type == LAMBDA_PERMISSION and get(args.props, "principal") == "*" and not any(
            get(args.props, k) for k in ("sourceArn", "sourceAccount", "principalOrgId")):
        report_violation("principal '*' without sourceArn, sourceAccount or principalOrgId: anyone may invoke", None)


def _account_of(principal: str) -> Optional[str]:
    if _ACCOUNT.fullmatch(principal):
        return principal
    parts = principal.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and _ACCOUNT.fullmatch(parts[4]):
        return parts[4]
    return None


def own_accounts(resources) -> set[str]:
    """The accounts this stack's resources live in, read from the ARNs they report.

    Raises the SDK's unknown-value error when every ARN is still unknown (a preview of a new stack):
    the rule then runs at ``up``.
    """
    found: Counter[str] = Counter()
    unknown: Optional[UnknownValueError] = None
    for r in resources:
        if not r.resource_type.startswith("aws:"):
            continue
        try:
            arn = get(r.props, "arn")
        except UnknownValueError as exc:
            unknown = exc
            continue
        account = _account_of(arn) if isinstance(arn, str) else None
        if account:
            found[account] += 1
    if not found and unknown is not None:
        raise unknown
    return set(found)


def validate_no_cross_account_principal(args, report_violation) -> None:
    trusted = {str(a) for a in config(args, "trustedAccountIds", [])}
    configured = {str(a) for a in config(args, "accountIds", [])}
    checks = []
    for r in args.resources:
        for where, document in resource_documents(r.resource_type, r.props):
            for i, statement in enumerate(statements(document)):
                if not _allows(statement) or _pins_principal(statement):
                    continue
                for kind, value in _principals(statement):
                    account = _account_of(value) if kind == "AWS" and isinstance(value, str) else None
                    if account:
                        checks.append((r, f"{where} {_label(i, statement)}", value, account))
    if not checks:
        return
    ours = configured or own_accounts(args.resources)
    if not ours:
        for r, where, value, _ in checks:
            report_violation(f"{r.resource_type} {r.name!r}: {where} trusts {value}, and no ARN in the stack says "
                             "which account is this stack's; set accountIds", r.urn)
        return
    for r, where, value, account in checks:
        if account not in ours | trusted:
            report_violation(f"{r.resource_type} {r.name!r}: {where} trusts {value} of account {account}, not this "
                             f"stack's ({', '.join(sorted(ours))}), without a condition such as sts:ExternalId or "
                             "aws:PrincipalOrgID (or list it in trustedAccountIds)", r.urn)


# --------------------------------------------------------------------------- web identity (OIDC) trust


def _allows_web_identity(statement: Mapping[str, Any]) -> bool:
    """Whether the statement grants sts:AssumeRoleWithWebIdentity, also via ``sts:*``, ``*`` or ``NotAction``."""
    return _allows(statement) and grants(statement, _WEB_IDENTITY)


def _condition_keys(statement: Mapping[str, Any]) -> list[tuple[str, str, list[Any]]]:
    conditions = statement.get("Condition") or {}
    return [(str(op), str(key), as_list((conditions[op] or {})[key])) for op in conditions for key in (conditions[op] or {})]


def _issuer_hosts(statement: Mapping[str, Any]) -> set[str]:
    """Issuer hosts a statement names: in its Federated provider ARNs and its condition keys."""
    hosts = set()
    for kind, value in _principals(statement):
        if kind == "Federated" and isinstance(value, str) and ":oidc-provider/" in value:
            hosts.add(value.split(":oidc-provider/", 1)[1])
        elif kind == "Federated" and isinstance(value, str) and not value.startswith("arn:"):
            hosts.add(value)  # cognito-identity.amazonaws.com, accounts.google.com, ...
    hosts |= {key.rsplit(":", 1)[0] for _, key, _ in _condition_keys(statement) if ":" in key
              and key.rsplit(":", 1)[1] in ("sub", "aud", "amr")}
    return hosts


def irsa_problems(statement: Mapping[str, Any]) -> list[str]:
    """Problems of one trust statement if it trusts an EKS OIDC provider, else []."""
    federated = [v for k, v in _principals(statement) if k == "Federated"]
    conditions = statement.get("Condition") or {}
    keys = [k for op in conditions for k in (conditions[op] or {})]
    is_eks = any(_EKS_OIDC in str(f) for f in federated) or any(_EKS_OIDC in str(k) for k in keys)
    if not is_eks or not _allows_web_identity(statement):
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


def web_identity_problems(statement: Mapping[str, Any]) -> list[str]:
    """Problems of a trust statement that lets a web identity (other than EKS, see irsa_problems) assume the role."""
    if not _allows_web_identity(statement) or not any(k == "Federated" for k, _ in _principals(statement)):
        return []
    hosts = _issuer_hosts(statement) - {h for h in _issuer_hosts(statement) if _EKS_OIDC in h}
    if not hosts and any(_EKS_OIDC in h for h in _issuer_hosts(statement)):
        return []
    conditions = _condition_keys(statement)
    problems = []
    for host in sorted(hosts) or ["<issuer>"]:
        system = ci_oidc.system_of(f"https://{host}")
        subs = [(op, vals) for op, key, vals in conditions if key == f"{host}:sub"]
        auds = [(op, vals) for op, key, vals in conditions if key == f"{host}:aud"]
        exact_aud = [v for op, vals in auds if op in ("StringEquals", "ForAnyValue:StringEquals") for v in vals]
        if not exact_aud:
            problems.append(f"trusts {host} without a StringEquals condition on {host}:aud")
        elif system and any(v not in ci_oidc.KNOWN_ISSUERS[f"https://{host}"] for v in exact_aud):
            problems.append(f"{host}:aud {exact_aud} is not an audience {system} issues for AWS")
        if host == "cognito-identity.amazonaws.com":
            continue  # Cognito pins identities by aud (the identity pool) and amr
        if not subs:
            problems.append(f"trusts {host} without a condition on {host}:sub: any {system or 'token'} subject "
                            "(any repository or project) may assume the role")
        for op, values in subs:
            if op not in ("StringEquals", "StringLike", "ForAnyValue:StringEquals", "ForAnyValue:StringLike"):
                problems.append(f"{op} on {host}:sub widens the trust; name the subject with StringEquals")
                continue
            for value in values:
                problem = ci_oidc.subject_problem(str(value), system)
                if problem:
                    problems.append(f"{host}:sub {problem}")
    return problems


def validate_web_identity_trust(args, report_violation) -> None:
    if args.resource_type != ROLE:
        return
    from policies.rules.ci_roles import is_kiln_preview_trust  # kiln's read-only preview role: judged there
    if is_kiln_preview_trust(get(args.props, "assumeRolePolicy"), None):
        return
    for i, statement in enumerate(statements(get(args.props, "assumeRolePolicy"))):
        for problem in web_identity_problems(statement):
            report_violation(f"assumeRolePolicy {_label(i, statement)}: {problem}", None)


POLICIES = [
    ResourceValidationPolicy(
        name="iam-no-star-on-star",
        description="No IAM policy statement allows every action on every resource, however the wildcards are spelled.",
        validate=validate_no_star_on_star,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="iam-no-privilege-escalation",
        description="No IAM policy lets a principal pass, assume or rewrite every role, user, group or policy.",
        validate=validate_no_privilege_escalation,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="iam-no-administrator-access",
        description="Nothing attaches an administrator-like AWS managed policy (forbiddenPolicies).",
        validate=validate_no_admin,
        enforcement_level=MANDATORY,
        config_schema=schema(forbiddenPolicies={"type": "array", "items": {"type": "string", "minLength": 1},
                                                "default": DEFAULT_FORBIDDEN_POLICIES}),
    ),
    ResourceValidationPolicy(
        name="iam-no-public-principal",
        description="No trust or resource policy (role, ECR, S3, KMS, SQS, SNS, ...) lets in '*' or a wildcard "
                    "principal without a condition on the caller's account, organisation or ARN; a queue or topic "
                    "lets an AWS service deliver only with a condition on the source.",
        validate=validate_no_public_principal,
        enforcement_level=MANDATORY,
    ),
    StackValidationPolicy(
        name="iam-no-cross-account-principal",
        description="Trust and resource policies name principals of other accounts only with a condition "
                    "(or when listed in trustedAccountIds).",
        validate=validate_no_cross_account_principal,
        enforcement_level=MANDATORY,
        config_schema=schema(
            accountIds={"type": "array", "items": {"type": "string", "pattern": "^[0-9]{12}$"}, "default": [],
                        "description": "this stack's accounts; empty: read from the ARNs of the stack's resources"},
            trustedAccountIds={"type": "array", "items": {"type": "string", "pattern": "^[0-9]{12}$"}, "default": []}),
    ),
    ResourceValidationPolicy(
        name="iam-irsa-trust-scoped",
        description="Roles trusted by an EKS OIDC provider are scoped to one service account.",
        validate=validate_irsa_trust,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="iam-web-identity-trust-scoped",
        description="Roles trusted by another OIDC provider (GitHub, GitLab, ...) pin the audience and one "
                    "repository and ref or environment as the subject.",
        validate=validate_web_identity_trust,
        enforcement_level=MANDATORY,
    ),
]
