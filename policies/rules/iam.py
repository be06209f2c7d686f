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
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from infra import ci_oidc
from policies.rules._props import (MANDATORY, Deferred, as_list, config, get, iter_mappings, json_document, known,
                                   schema)

ROLE = "aws:iam/role:Role"
# Identity-policy documents, by resource type and the property holding them.
POLICY_DOCUMENTS = {
    "aws:iam/policy:Policy": "policy",
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
    "aws:ssoadmin/permissionSetInlinePolicy:PermissionSetInlinePolicy": "inlinePolicy",
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
LAMBDA_FUNCTION_URL = "aws:lambda/functionUrl:FunctionUrl"
AMI_LAUNCH_PERMISSION = "aws:ec2/amiLaunchPermission:AmiLaunchPermission"
SNAPSHOT_PERMISSION = "aws:ec2/snapshotCreateVolumePermission:SnapshotCreateVolumePermission"
BLOCK_PUBLIC_ACCESS = {"aws:ec2/imageBlockPublicAccess:ImageBlockPublicAccess": ("block-new-sharing",),
                       "aws:ebs/snapshotBlockPublicAccess:SnapshotBlockPublicAccess": ("block-all-sharing",
                                                                                       "block-new-sharing")}
ECR_PUBLIC_REPOSITORY = "aws:ecrpublic/repository:Repository"
ECR_REPLICATION = "aws:ecr/replicationConfiguration:ReplicationConfiguration"
RAM_PRINCIPAL_ASSOCIATION = "aws:ram/principalAssociation:PrincipalAssociation"
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
    "role-boundary": ("iam:PutRolePermissionsBoundary",),
    "user": ("iam:AttachUserPolicy", "iam:PutUserPolicy", "iam:CreateAccessKey", "iam:CreateLoginProfile",
             "iam:UpdateLoginProfile", "iam:DeleteUserPermissionsBoundary", "iam:PutUserPermissionsBoundary"),
    # AddUserToGroup acts on the group (its resource is the group's ARN), not on the user.
    "group": ("iam:AttachGroupPolicy", "iam:PutGroupPolicy", "iam:AddUserToGroup"),
    "policy": ("iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion"),
}
_EKS_OIDC = "oidc.eks."
_WEB_IDENTITY = "sts:assumerolewithwebidentity"
_SERVICE_ACCOUNT = re.compile(r"^system:serviceaccount:[a-z0-9-]+:[a-z0-9.-]+$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
UNKNOWN = object()  # a value not known during preview
_SAMPLE_ACTIONS = ("iam:passrole", "s3:getobject", "ec2:runinstances", "kms:decrypt", "sts:assumerole")


# --------------------------------------------------------------------------- reading documents


# IAM's element names, spelled as IAM spells them: a document that spells one otherwise ("statement", "EFFECT")
# is not read by a rule that looks for the right spelling, so it counts as unreadable (see ``readable``).
_DOCUMENT_ELEMENTS = ("Version", "Id", "Statement")
_STATEMENT_ELEMENTS = ("Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource",
                       "Condition")


def _miscased(mapping: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    lower = {n.lower(): n for n in names}
    return any(str(k).lower() in lower and str(k) != lower[str(k).lower()] for k in mapping)


def readable(document: Any) -> bool:
    """Valid JSON without a key given twice and with IAM's element names spelled as IAM spells them."""
    doc = json_document(document)
    if doc is None:
        return document is None
    if not isinstance(doc, Mapping):
        return True
    if _miscased(doc, _DOCUMENT_ELEMENTS):
        return False
    return not any(_miscased(st, _STATEMENT_ELEMENTS) for st in iter_mappings(doc.get("Statement")))


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
    """Anything but an exact ``Deny`` is judged as an Allow: a rule that cannot tell must not let it through."""
    return statement.get("Effect") != "Deny"


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
        if not readable(document):
            report_violation(f"{where} is not valid JSON" if json_document(document) is None else
                             f"{where} spells an IAM element name in another case (Statement, Effect, Action, ...), "
                             "so what it allows cannot be checked", None)
            continue
        for i, statement in enumerate(statements(document)):
            if star_on_star(statement):
                report_violation(f"{where} {_label(i, statement)} allows '*' on '*'", None)


def escalations(statement: Mapping[str, Any]) -> list[str]:
    """The escalation actions an Allow statement grants on every role/user/group/policy of an account."""
    if not _allows(statement) or star_on_star(statement):
        return []  # star on star is its own rule
    found = []
    for key, actions in ESCALATION_ACTIONS.items():
        kind = key.split("-", 1)[0]
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


# Credentials that never expire: kiln's pipelines and people reach AWS through roles (OIDC, SSO), never keys.
LONG_LIVED_CREDENTIALS = {
    "aws:iam/accessKey:AccessKey": "an access key (a secret that works until someone deletes it)",
    "aws:iam/userLoginProfile:UserLoginProfile": "a console password",
    "aws:iam/serviceSpecificCredential:ServiceSpecificCredential": "a service-specific password",
    "aws:iam/signingCertificate:SigningCertificate": "a signing certificate",
    "aws:iam/sshKey:SshKey": "an SSH key (CodeCommit)",
}


def validate_no_long_lived_credentials(args, report_violation) -> None:
    what = LONG_LIVED_CREDENTIALS.get(args.resource_type)
    if what:
        report_violation(f"creates {what} for an IAM user; use a role (OIDC for CI, SSO for people) instead", None)


_AWS_MANAGED = re.compile(r"^arn:aws[a-z-]*:iam::aws:policy/", re.IGNORECASE)
POLICY = "aws:iam/policy:Policy"


def _attached_arns(r) -> Iterator[tuple[str, Any]]:
    """``(property, ARN)`` of every policy a resource attaches; ARNs not known during preview as ``UNKNOWN``."""
    key = ATTACHMENTS.get(r.resource_type)
    if key is None:
        return
    try:
        value = get(r.props, key)
    except UnknownValueError:
        yield key, UNKNOWN
        return
    for i, arn in enumerate(as_list(value) if value is not None else []):
        yield key, arn


def validate_attached_policies_declared(args, report_violation) -> None:
    """A customer managed policy attached by ARN that the stack does not declare could grant anything:
    only AWS managed policies (judged by name, iam-no-administrator-access) and this stack's own
    ``aws.iam.Policy`` resources (judged by content) may be attached."""
    deferred = Deferred()
    # A policy whose ARN is not known yet is still recognised: attachments computed from it trace to its URN.
    declared = {known(r.props, "arn") for r in args.resources if r.resource_type == POLICY} - {None}
    declared_urns = {r.urn for r in args.resources if r.resource_type == POLICY}

    def judge(r) -> None:
        for key, arn in _attached_arns(r):
            if isinstance(arn, str) and (_AWS_MANAGED.match(arn) or arn in declared):
                continue
            if arn is UNKNOWN or not isinstance(arn, str):
                deps = [d.urn for d in (getattr(r, "property_dependencies", None) or {}).get(key, [])]
                if deps and set(deps) <= declared_urns:
                    continue  # computed from this stack's own policies
                if arn is UNKNOWN or arn is None:
                    raise UnknownValueError(UNKNOWN_STRING_VALUE, [f"{r.name}.{key}"])
            report_violation(f"{r.resource_type} {r.name!r}: {key} attaches {arn!r}, a policy this stack does not "
                             "declare, so what it grants cannot be checked; declare it as an aws.iam.Policy here "
                             "(or attach an AWS managed policy)", r.urn)
    for r in args.resources:
        deferred.attempt(judge, r)
    deferred.finish()


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


_ORG_PATH = re.compile(r"^o-[a-z0-9]{10,32}/")


def _pinning(value: Any, key: str = "") -> bool:
    """A condition value that names something: no wildcard, except in the resource part of an ARN that names
    an account (``arn:aws:s3:::*`` has no account: it is every bucket of everyone) and after the organisation
    of an organisation path (``o-abc/r-ab12/ou-ab12-1111/*``: that organisation's OU and below)."""
    if not isinstance(value, str) or not value:
        return False
    if key.endswith("orgpaths") and _ORG_PATH.match(value):
        return True
    if value.startswith("arn:"):
        parts = value.split(":", 5)
        head = parts[:5]
        if len(parts) < 6 or not parts[4]:
            head = parts  # no account to pin: the whole ARN must be exact
    else:
        head = [value]
    return not any(ch in part for part in head for ch in "*?")


# Operators that can pin a caller: the key must be present and match. ``ForAllValues:…`` is true when the key is
# absent (a principal outside any organisation has no aws:PrincipalOrgID), ``Null``/``Bool`` test presence,
# ``…Not…`` and ``…IfExists`` let the absent or the others in.
_PINNING_OPERATORS = frozenset(op.lower() for op in (
    "StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike",
    "ForAnyValue:StringEquals", "ForAnyValue:StringEqualsIgnoreCase", "ForAnyValue:StringLike",
    "ForAnyValue:ArnEquals", "ForAnyValue:ArnLike"))


def _pinning_conditions(statement: Mapping[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    """``(condition key, values)`` of the conditions that pin who the caller is or where it comes from."""
    conditions = statement.get("Condition") or {}
    if not isinstance(conditions, Mapping):
        return
    for op in conditions:
        block = conditions[op] or {}
        if str(op).lower() not in _PINNING_OPERATORS or not isinstance(block, Mapping):
            continue
        for key in block:
            values = as_list(block[key])
            if str(key).lower() in PRINCIPAL_CONDITION_KEYS and values and all(_pinning(v, str(key).lower())
                                                                                for v in values):
                yield str(key).lower(), values


def _pins_principal(statement: Mapping[str, Any]) -> bool:
    """A condition (not a negated one) on who the caller is or where it comes from, naming it without wildcards."""
    return any(True for _ in _pinning_conditions(statement))


# Conditions that keep another account's principals to the ones meant (a shared secret, an organisation).
_CROSS_ACCOUNT_PINS = frozenset(k.lower() for k in ("sts:ExternalId", "aws:PrincipalOrgID", "aws:PrincipalOrgPaths",
                                                     "aws:SourceOrgID", "aws:SourceOrgPaths"))
_ACCOUNT_KEYS = frozenset(k.lower() for k in ("aws:PrincipalAccount", "aws:SourceAccount", "aws:PrincipalArn",
                                               "aws:SourceArn"))


def _pins_to_own_accounts(statement: Mapping[str, Any], accounts: set[str]) -> bool:
    """A condition that limits a statement naming another account to an ExternalId, an organisation, or to
    principals of the given (own or trusted) accounts: ``aws:PrincipalAccount`` naming the foreign account
    itself adds nothing."""
    for key, values in _pinning_conditions(statement):
        if key in _CROSS_ACCOUNT_PINS:
            return True
        if key in _ACCOUNT_KEYS and all((_account_of(str(v)) or "") in accounts for v in values):
            return True
    return False


def _is_public(kind: str, value: Any) -> bool:
    return kind in ("*", "NotPrincipal") or (isinstance(value, str) and any(ch in value for ch in "*?"))


# Any other property that holds a policy document is judged too, whatever the resource (a Secrets Manager secret's
# ``policy``, an ECR creation template's ``repositoryPolicy``, an OpenSearch domain's ``accessPolicies``, a log
# group resource policy's ``policyDocument``, an S3 access point's ``policy``): what matters is the document.
_POLICY_PROPERTY = re.compile(r"(policy|policies|policydocument)$", re.IGNORECASE)


def _unreadable(value: Any) -> bool:
    """A policy given as text that is not (unambiguous) JSON; other strings (an ELB ``sslPolicy`` name) are not
    documents at all."""
    return isinstance(value, str) and value.strip().startswith("{") and json_document(value) is None


def resource_documents(resource_type: str, props: Any) -> Iterator[tuple[str, Any]]:
    """``(property, document)`` of every policy saying who may act on a resource, however the resource calls it."""
    key = RESOURCE_POLICIES.get(resource_type)
    if key is not None and get(props, key) is not None:
        yield key, get(props, key)
    if not resource_type.startswith("aws:") or resource_type in POLICY_DOCUMENTS or not isinstance(props, Mapping):
        return
    for name in props:
        if name == key or not _POLICY_PROPERTY.search(str(name)) or (resource_type == ROLE and name == "inlinePolicies"):
            continue
        value = get(props, name)
        document = json_document(value)
        if _unreadable(value) or (isinstance(document, Mapping) and "Statement" in document):
            yield name, value


def _public_grants(resource_type: str, props: Any) -> Iterator[str]:
    """Ways to open a resource to anyone that are not a policy document."""
    if resource_type == LAMBDA_PERMISSION and get(props, "principal") == "*" and not any(
            get(props, k) for k in ("sourceArn", "sourceAccount", "principalOrgId")):
        yield "principal '*' without sourceArn, sourceAccount or principalOrgId: anyone may invoke"
    elif resource_type == LAMBDA_FUNCTION_URL and get(props, "authorizationType") != "AWS_IAM":
        yield f"authorizationType is {get(props, 'authorizationType')!r}: anyone on the internet may invoke the function"
    elif resource_type == ECR_PUBLIC_REPOSITORY:
        yield "an ECR Public repository: every image pushed to it (and the model or code inside) is public"
    elif resource_type == AMI_LAUNCH_PERMISSION and str(get(props, "group", default="")).lower() == "all":
        yield "group 'all' makes the AMI public: anyone may launch it and read the model baked into it"
    elif resource_type in BLOCK_PUBLIC_ACCESS and get(props, "state") not in BLOCK_PUBLIC_ACCESS[resource_type]:
        yield (f"state is {get(props, 'state')!r}: AMIs or snapshots of this account (the baked model) may be made "
               f"public; use {' or '.join(BLOCK_PUBLIC_ACCESS[resource_type])}")


def validate_no_public_principal(args, report_violation) -> None:
    for where, document in resource_documents(args.resource_type, args.props):
        if _unreadable(document) or not readable(document):
            report_violation(f"{where} is not valid JSON (or names a key twice, or spells an IAM element name in "
                             "another case), so who it lets in cannot be checked", None)
            continue
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
    for problem in _public_grants(args.resource_type, args.props):
        report_violation(problem, None)


def _account_of(principal: str) -> Optional[str]:
    if _ACCOUNT.fullmatch(principal):
        return principal
    parts = principal.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and _ACCOUNT.fullmatch(parts[4]):
        return parts[4]
    return None


def own_accounts(resources, deferred) -> set[str]:
    """The accounts this stack's resources live in, read from the ARNs they report (unknown ones are skipped,
    and ``deferred`` remembers that some were)."""
    found: Counter[str] = Counter()
    for r in resources:
        if not r.resource_type.startswith("aws:"):
            continue
        arn = deferred.attempt(get, r.props, "arn")
        account = _account_of(arn) if isinstance(arn, str) else None
        if account:
            found[account] += 1
    return set(found)


def _shared_with(resource_type: str, props: Any) -> Iterator[tuple[str, str]]:
    """``(where, account)`` for what a resource copies or shares into another account without a policy document:
    ECR replication, AMI launch and snapshot volume permissions, RAM resource shares."""
    if resource_type == ECR_REPLICATION:
        for i, rule in enumerate(iter_mappings(get(props, "replicationConfiguration", "rules"))):
            for j, dest in enumerate(iter_mappings(get(rule, "destinations"))):
                yield f"replicationConfiguration.rules[{i}].destinations[{j}].registryId", str(get(dest, "registryId"))
    elif resource_type in (AMI_LAUNCH_PERMISSION, SNAPSHOT_PERMISSION) and get(props, "accountId"):
        yield "accountId", str(get(props, "accountId"))
    elif resource_type == RAM_PRINCIPAL_ASSOCIATION:
        principal = str(get(props, "principal", default=""))
        yield "principal", _account_of(principal) or principal


def validate_no_cross_account_principal(args, report_violation) -> None:
    trusted = {str(a) for a in config(args, "trustedAccountIds", [])}
    configured = {str(a) for a in config(args, "accountIds", [])}
    deferred = Deferred()
    checks = []

    def collect(r) -> None:
        for where, document in resource_documents(r.resource_type, r.props):
            for i, statement in enumerate(statements(document)):
                if not _allows(statement):
                    continue
                for kind, value in _principals(statement):
                    account = _account_of(value) if kind == "AWS" and isinstance(value, str) else None
                    if account:
                        checks.append((r, f"{where} {_label(i, statement)}", f"trusts {value} of", account, statement))
        for where, account in _shared_with(r.resource_type, r.props):
            checks.append((r, where, "shares with", account, None))
    for r in args.resources:
        deferred.attempt(collect, r)
    if checks:
        ours = configured or own_accounts(args.resources, deferred)
        if not ours:
            deferred.finish()  # every ARN unknown (a new stack's preview): the accounts are known at up
            for r, where, what, account, _ in checks:
                report_violation(f"{r.resource_type} {r.name!r}: {where} {what.removesuffix(' of')} account {account}, and no ARN in the stack "
                                 "says which account is this stack's; set accountIds", r.urn)
            return
        allowed = ours | trusted
        for r, where, what, account, statement in checks:
            if account in allowed or (statement is not None and _pins_to_own_accounts(statement, allowed)):
                continue
            report_violation(f"{r.resource_type} {r.name!r}: {where} {what} account {account}, not this "
                             f"stack's ({', '.join(sorted(ours))}), without a condition such as sts:ExternalId or "
                             "aws:PrincipalOrgID (or list it in trustedAccountIds)", r.urn)
    deferred.finish()


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
        config_schema=schema(forbiddenPolicies={"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                                                "default": DEFAULT_FORBIDDEN_POLICIES}),
    ),
    ResourceValidationPolicy(
        name="iam-no-long-lived-credentials",
        description="No IAM user access keys, console passwords, service-specific credentials, signing "
                    "certificates or SSH keys: pipelines and people use roles.",
        validate=validate_no_long_lived_credentials,
        enforcement_level=MANDATORY,
    ),
    StackValidationPolicy(
        name="iam-attached-policies-declared",
        description="Only AWS managed policies and policies declared in this stack are attached (anything else "
                    "could grant anything).",
        validate=validate_attached_policies_declared,
        enforcement_level=MANDATORY,
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
