"""The CI roles beside the deploy role: the read-only preview role, and what the rotation job needs.

One role per purpose, each trusted only by its own jobs' tokens (``kiln:ciOidc``):

* **preview** (pull requests) may run ``pulumi preview --refresh`` and nothing more: describe, list and get on
  what the program manages (:func:`read_policy`), read the state backend, decrypt with the stack's KMS secrets
  key; in Kubernetes ``AmazonEKSViewPolicy`` plus the kinds that policy leaves out (:data:`CI_READ_RULES`). It
  cannot write anything, anywhere. Its trust is the pull request's own subject, so it is the one role a pull
  request (whose workflow, program and policy pack are the pull request's) may hold.
* **deploy** (``infra/roles.py`` ``CiDeployRole``): ``up`` and the handler image, only from the protected
  branch's environment; cluster admin (``infra/ci_access.py``).
* **rotation**: the rollout role itself, trusted by the rotation job's token. Not a role that chains into the
  rollout role: AWS caps a chained session at one hour, while a bake can take more and the rollout's deadline
  defaults to two hours. One web-identity session lasts the whole job (up to the role's 4-hour maximum). Beside
  the bake and node replacement it already may do, the rotation runs a gated ``pulumi up`` of new launch-template
  versions: the same reads as the preview, the state read *and written*, decrypt, and in Kubernetes the reads
  plus the model volume's PersistentVolume and claim (:data:`ROTATION_CLUSTER_RULES`).

Pure documents and rules first, components after; the tests evaluate the documents on requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import ci_oidc
from infra import policydocs as pd
from infra.autoscaler import NAMESPACE as AUTOSCALER_NAMESPACE
from infra.ci_access import access_policy_arn
from infra.config import CiRoleTrust
from infra.gpu import NAMESPACE as GPU_PLUGIN_NAMESPACE

VIEW_POLICY = "AmazonEKSViewPolicy"
CI_READ_GROUP = "kiln-ci-read"
ROTATION_GROUP = "kiln-rotation"
PREVIEW_SESSION_SECONDS = 3600          # the preview job's timeout is under an hour (ci/ templates)

# What `pulumi preview --refresh` reads, per service the program manages (infra/, pulumi-eks). Read verbs only; a
# service's `Get*`/`List*` is granted whole only where none of its operations returns data rather than metadata
# (never ec2:Get* — console output, Windows passwords —, ssm:Get* — SecureString parameters —, ecr:Get* — image
# layers, login tokens —, logs:Get* — log events —, sqs:Receive*, s3:Get* beyond the state backend).
READ_ACTIONS = (
    "autoscaling:Describe*",
    "ec2:Describe*",
    "ecr:DescribeRegistry", "ecr:DescribeRepositories", "ecr:GetLifecyclePolicy", "ecr:GetRepositoryPolicy",
    "ecr:ListTagsForResource",
    "eks:Describe*", "eks:List*",
    "events:Describe*", "events:List*",
    "kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListResourceTags",
    "logs:DescribeLogGroups", "logs:ListTagsForResource", "logs:ListTagsLogGroup",
    "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ListQueueTags",
    "ssm:DescribeAssociation", "ssm:DescribeDocument", "ssm:GetDocument", "ssm:ListTagsForResource",
)
# IAM reads, only on this account's roles, policies, instance profiles and OIDC providers (not account-wide reads
# such as GetAccountAuthorizationDetails or the credential report, whose resource is "*").
IAM_READ_ACTIONS = ("iam:Get*", "iam:List*")
IAM_READ_RESOURCES = ("role/*", "policy/*", "instance-profile/*", "oidc-provider/*")
# Public SSM parameters (EKS-optimized AMI ids), never the account's own (SecureString) parameters.
PUBLIC_PARAMETERS = "aws/service/*"

# Kubernetes kinds the program manages that AmazonEKSViewPolicy (like Kubernetes' `view`) does not show: RBAC,
# cluster-scoped PersistentVolumes, admission policies, namespaces. Read verbs only.
READ_VERBS = ("get", "list", "watch")
CI_READ_RULES = (
    ("", ("namespaces", "persistentvolumes", "persistentvolumeclaims", "serviceaccounts", "configmaps")),
    ("apps", ("daemonsets", "deployments")),
    ("policy", ("poddisruptionbudgets",)),
    ("rbac.authorization.k8s.io", ("clusterroles", "clusterrolebindings", "roles", "rolebindings")),
    ("admissionregistration.k8s.io", ("validatingadmissionpolicies", "validatingadmissionpolicybindings",
                                      "mutatingadmissionpolicies", "mutatingadmissionpolicybindings")),
)
# Helm keeps each release's record in Secrets of the release's namespace; a refresh of the cluster-autoscaler and
# NVIDIA device plugin releases reads them (list by label, then get). Kubernetes cannot narrow `list` by label, so
# this reads every Secret of that one namespace (docs/rotation.md: what the preview role can read).
HELM_RELEASE_NAMESPACES = tuple(sorted({AUTOSCALER_NAMESPACE, GPU_PLUGIN_NAMESPACE}))
HELM_RELEASE_RULES = (("", ("secrets",), ("get", "list")),)
# The rotation's gated `up` replaces the model volume (a new PersistentVolume kiln-model-<v> and claim model-<v>,
# the old ones retained) and, returning to an older version, adopts or deletes the retained objects
# (automation/rotate/volumes.py: it also lists the jobs namespace's pods to see whether a claim is in use). Names
# follow the model version, so they cannot be listed here; create cannot be narrowed by name in any case.
ROTATION_CLUSTER_RULES = (("", ("persistentvolumes",), ("get", "list", "watch", "create", "patch", "delete")),)
ROTATION_NAMESPACE_RULES = (("", ("persistentvolumeclaims",), ("get", "list", "watch", "create", "patch", "delete")),
                            ("", ("pods",), ("list",)))


def read_policy(partition: str, region: str, account: str) -> str:
    """What a refreshed preview reads: a customer-managed policy both the preview and the rotation role hold."""
    return pd.document(
        pd.statement("DescribeWhatTheProgramManages", READ_ACTIONS, "*"),
        pd.statement("ReadThisAccountsRolesAndPolicies", IAM_READ_ACTIONS,
                     [f"arn:{partition}:iam::{account}:{r}" for r in IAM_READ_RESOURCES]),
        pd.statement("ReadPublicParameters", ["ssm:GetParameter", "ssm:GetParameters"],
                     [f"arn:{partition}:ssm:{region}::parameter/{PUBLIC_PARAMETERS}"]),
    )


def state_policy(partition: str, bucket: Optional[str], prefix: str, kms_key: Optional[str], write: bool) -> Optional[str]:
    """The state backend (``s3://bucket/prefix``: Pulumi keeps stacks, history and locks under ``<prefix>.pulumi/``)
    and the secrets provider's key. ``write``: the rotation saves state and takes the stack lock; the preview
    only reads (a DIY backend's preview takes no lock and saves nothing). None when there is neither."""
    statements = []
    if bucket:
        objects = f"arn:{partition}:s3:::{bucket}/{prefix}.pulumi/*"
        statements.append(pd.statement("ListTheStateBackend", ["s3:ListBucket"], [f"arn:{partition}:s3:::{bucket}"],
                                       {"StringLike": {"s3:prefix": [f"{prefix}.pulumi/*", f"{prefix}.pulumi"]}}))
        statements.append(pd.statement("ReadTheState", ["s3:GetObject"], [objects]))
        if write:
            statements.append(pd.statement("WriteTheState", ["s3:DeleteObject", "s3:PutObject"], [objects]))
    if kms_key:
        statements.append(pd.statement("DecryptTheStacksSecrets", ["kms:Decrypt"], [kms_key]))
    return pd.document(*statements) if statements else None


def _rules(rules) -> list[k8s.rbac.v1.PolicyRuleArgs]:
    return [k8s.rbac.v1.PolicyRuleArgs(api_groups=[g], resources=list(r), verbs=list(v)) for g, r, v in rules]


def _bind(name: str, group: str, role_kind: str, role_name: pulumi.Input[str], namespace: Optional[str],
          opts: pulumi.ResourceOptions) -> None:
    subject = [k8s.rbac.v1.SubjectArgs(kind="Group", name=group, api_group="rbac.authorization.k8s.io")]
    ref = k8s.rbac.v1.RoleRefArgs(kind=role_kind, name=role_name, api_group="rbac.authorization.k8s.io")
    meta = k8s.meta.v1.ObjectMetaArgs(name=group, namespace=namespace)
    if namespace:
        k8s.rbac.v1.RoleBinding(name, metadata=meta, subjects=subject, role_ref=ref, opts=opts)
    else:
        k8s.rbac.v1.ClusterRoleBinding(name, metadata=meta, subjects=subject, role_ref=ref, opts=opts)


# ---- components ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CiReadArgs:
    k8s_provider: k8s.Provider
    jobs_namespace: str
    rotation: bool = False      # also the rotation's model-volume writes (group kiln-rotation)
    tags: dict[str, str] = field(default_factory=dict)


class CiReadAccess(pulumi.ComponentResource):
    """The read access the preview and the rotation share: the managed read policy and the Kubernetes group
    ``kiln-ci-read`` (with, for the rotation, the group ``kiln-rotation``)."""

    def __init__(self, name: str, args: CiReadArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:CiReadAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        partition = aws.get_partition_output().partition
        region = aws.get_region_output().region
        account = aws.get_caller_identity_output().account_id
        self.read_policy = aws.iam.Policy(
            name,
            description="kiln CI: what `pulumi preview --refresh` reads (describe, list, get); no writes",
            policy=pulumi.Output.all(partition, region, account).apply(lambda a: read_policy(a[0], a[1], a[2])),
            tags=args.tags,
            opts=child,
        )
        read = k8s.rbac.v1.ClusterRole(
            name, metadata=k8s.meta.v1.ObjectMetaArgs(name=CI_READ_GROUP),
            rules=_rules(tuple((g, r, READ_VERBS) for g, r in CI_READ_RULES)), opts=on_cluster)
        _bind(name, CI_READ_GROUP, "ClusterRole", read.metadata.name, None, on_cluster)
        for namespace in HELM_RELEASE_NAMESPACES:
            releases = k8s.rbac.v1.Role(
                f"{name}-helm-{namespace}", metadata=k8s.meta.v1.ObjectMetaArgs(name=CI_READ_GROUP, namespace=namespace),
                rules=_rules(HELM_RELEASE_RULES), opts=on_cluster)
            _bind(f"{name}-helm-{namespace}", CI_READ_GROUP, "Role", releases.metadata.name, namespace, on_cluster)
        if args.rotation:
            volumes = k8s.rbac.v1.ClusterRole(
                f"{name}-rotation", metadata=k8s.meta.v1.ObjectMetaArgs(name=ROTATION_GROUP),
                rules=_rules(ROTATION_CLUSTER_RULES), opts=on_cluster)
            _bind(f"{name}-rotation", ROTATION_GROUP, "ClusterRole", volumes.metadata.name, None, on_cluster)
            claims = k8s.rbac.v1.Role(
                f"{name}-rotation-jobs", metadata=k8s.meta.v1.ObjectMetaArgs(name=ROTATION_GROUP,
                                                                             namespace=args.jobs_namespace),
                rules=_rules(ROTATION_NAMESPACE_RULES), opts=on_cluster)
            _bind(f"{name}-rotation-jobs", ROTATION_GROUP, "Role", claims.metadata.name, args.jobs_namespace, on_cluster)
        self.register_outputs({"readPolicyArn": self.read_policy.arn})


def view_association(name: str, cluster_name: pulumi.Input[str], entry: aws.eks.AccessEntry,
                     parent: pulumi.Resource) -> aws.eks.AccessPolicyAssociation:
    """``AmazonEKSViewPolicy`` at cluster scope for an access entry's principal."""
    partition = aws.get_partition_output().partition
    return aws.eks.AccessPolicyAssociation(
        name,
        cluster_name=cluster_name,
        principal_arn=entry.principal_arn,
        policy_arn=partition.apply(lambda p: access_policy_arn(p, VIEW_POLICY)),
        access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[entry]),
    )


@dataclass(frozen=True)
class CiPreviewRoleArgs:
    provider_arn: pulumi.Input[str]
    provider_url: str
    trust: CiRoleTrust
    cluster_name: pulumi.Input[str]
    read_policy_arn: pulumi.Input[str]
    state_bucket: Optional[str] = None
    state_prefix: str = ""
    secrets_kms_key: Optional[str] = None
    tags: dict[str, str] = field(default_factory=dict)


class CiPreviewRole(pulumi.ComponentResource):
    """The read-only role pull requests' previews assume with their OIDC token."""

    def __init__(self, name: str, args: CiPreviewRoleArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:CiPreviewRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            name,
            description=f"kiln CI preview, read-only ({args.trust.subject}) through {args.provider_url}",
            assume_role_policy=pulumi.Output.from_input(args.provider_arn).apply(
                lambda arn: ci_oidc.web_identity_trust(arn, args.provider_url, args.trust.audience, args.trust.subject)),
            max_session_duration=PREVIEW_SESSION_SECONDS,
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicyAttachment(name, role=self.role.name, policy_arn=args.read_policy_arn, opts=child)
        state = aws.get_partition_output().partition.apply(
            lambda p: state_policy(p, args.state_bucket, args.state_prefix, args.secrets_kms_key, write=False))
        if args.state_bucket or args.secrets_kms_key:
            aws.iam.RolePolicy(f"{name}-state", role=self.role.id, policy=state, opts=child)
        self.access_entry = aws.eks.AccessEntry(
            name, cluster_name=args.cluster_name, principal_arn=self.role.arn, type="STANDARD",
            kubernetes_groups=[CI_READ_GROUP], tags=args.tags, opts=child)
        view_association(name, args.cluster_name, self.access_entry, self)
        self.register_outputs({"roleArn": self.role.arn})
