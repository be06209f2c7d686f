"""Least-privilege roles for kiln's automation: the rollout role and the optional CI deploy role.

The **rollout role** is what ``python -m automation bake`` / ``rotate`` /
``replace`` run as. Each statement below is one thing those commands do,
scoped to this cluster's tag, kiln's own images, or the builder instance:

* ASG mutations only on groups tagged ``kiln.dev/cluster=<cluster>``;
* launch-template versions only on this cluster's templates;
* the builder: launched only with ``kiln.dev/role=ami-builder``, and stopped,
  imaged, terminated and sent commands only when it carries that tag;
* ``iam:PassRole`` only for the node role and the bake builder's role
  (``infra/builder.py``), only to EC2;
* images and snapshots deregistered or shared only when kiln baked them
  (they carry ``kiln:recipe``);
* describes (which IAM cannot scope) read-only.

Who may assume it: with ``kiln:ciOidc.rotation``, the rotation job's OIDC
token only (the rollout role *is* the CI rotation role: one web-identity session
lasts the whole job, where a session chained from another role is capped at one
hour; ``infra/ci_roles.py``); with ``kiln:ciOidc`` alone, the CI deploy role (which
may chain into it); else the account — which in IAM means nobody until an
administrator grants ``sts:AssumeRole`` on this ARN to a user or role.

The **CI deploy role** is trusted through the CI system's OIDC provider, pinned
to one audience and one subject, so pipelines hold no long-lived keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws

from infra import ci_oidc
from infra import policydocs as pd
from infra.ci_roles import state_policy
from infra.config import CiRoleTrust
from infra.labels import (BAKE_KEY_GRANT_OPERATIONS, BUILDER_ROLE, CA_TAG_CLUSTER_PREFIX, CA_TAG_NODE_TEMPLATE_LABEL,
                          LABEL_MODEL_VERSION, TAG_CLUSTER, TAG_ROLE)

# Every image, snapshot and security group the bake creates carries this tag (automation/bake/recipe.py).
TAG_RECIPE = "kiln:recipe"
# The bake reads <model-uri>/MANIFEST.sha256 (automation/bake/recipe.py MANIFEST_NAME).
MANIFEST_NAME = "MANIFEST.sha256"
BAKE_DOCUMENT = "AWS-RunShellScript"
EKS_AMI_PARAMETERS = "aws/service/eks/optimized-ami/*"
# Assuming the rollout role, with session tags: the trust and the CI role's grant must both allow these.
ASSUME_ACTIONS = ["sts:AssumeRole", "sts:TagSession"]
MAX_SESSION_SECONDS = 4 * 3600  # a bake copies ~30 GB and snapshots it; an hour is not always enough
# The one cluster-autoscaler tag a rotation's gated `up` changes: the node template's model-version label.
MODEL_VERSION_TEMPLATE_TAG = CA_TAG_NODE_TEMPLATE_LABEL + LABEL_MODEL_VERSION

ASG_MUTATIONS = (
    "autoscaling:CreateOrUpdateTags",
    "autoscaling:DeleteTags",
    "autoscaling:SetDesiredCapacity",
    "autoscaling:SetInstanceProtection",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
    "autoscaling:UpdateAutoScalingGroup",
)
READ_ONLY = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeScalingActivities",
    "autoscaling:DescribeTags",
    "ec2:DescribeImageAttribute",   # bake --keep never deregisters an AMI shared with another account
    "ec2:DescribeImages",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeInstances",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSnapshots",
    "ec2:DescribeSubnets",
    "ec2:DescribeTags",
    "ec2:DescribeVolumes",
    "kms:ListAliases",   # bake --kms-key refuses AWS managed keys (aliases alias/aws/*); lists names only
    "ssm:DescribeInstanceInformation",
    "ssm:GetCommandInvocation",
    "ssm:ListCommandInvocations",
    "ssm:ListCommands",
)


# What EBS does with a customer-managed key on the caller's behalf (RunInstances with encrypted volumes,
# CreateImage and CopyImage of their snapshots): through EC2 only (kms:DescribeKey: ReadThisClustersBakeKeys).
EBS_KEY_ACTIONS = ("kms:CreateGrant", "kms:Decrypt", "kms:GenerateDataKeyWithoutPlaintext",
                   "kms:ReEncryptFrom", "kms:ReEncryptTo")


def rollout_policy(partition: str, region: str, account: str, cluster_name: str,
                   pass_role_arns: Sequence[str], model_bucket: Optional[str] = None) -> str:
    """The rollout role's permissions, one statement per job.

    ``model_bucket`` (``kiln:modelBucket``) narrows the manifest read to that bucket.
    """
    ec2 = lambda resource: pd.ec2_arn(partition, region, account, resource)  # noqa: E731
    cluster_tag = {f"aws:ResourceTag/{TAG_CLUSTER}": cluster_name}
    builder_tag = {f"aws:ResourceTag/{TAG_ROLE}": BUILDER_ROLE}
    baked_by_kiln = {"Null": {f"aws:ResourceTag/{TAG_RECIPE}": "false"}}
    images = [ec2("image/*"), ec2("snapshot/*")]
    kms_keys = [f"arn:{partition}:kms:*:{account}:key/*"]
    return pd.document(
        # --- node replacement (rotate / replace)
        pd.statement("AsgMutationsThisClusterOnly", ASG_MUTATIONS, [pd.asg_arn(partition, region, account)],
                     {"StringEquals": {f"autoscaling:ResourceTag/{TAG_CLUSTER}": cluster_name}}),
        # The ownership tags are how every scope here is drawn; the role must not move them. The one exception is
        # the node template's model-version label, which a rotation's `up` changes with the AMI (a request that
        # names it beside any other ownership key is still refused).
        pd.statement("KeepOwnershipTags", ["autoscaling:CreateOrUpdateTags", "autoscaling:DeleteTags"],
                     [pd.asg_arn(partition, region, account)],
                     {"ForAnyValue:StringLike": {"aws:TagKeys": [TAG_CLUSTER, CA_TAG_CLUSTER_PREFIX + "*"]},
                      "ForAnyValue:StringNotEquals": {"aws:TagKeys": [MODEL_VERSION_TEMPLATE_TAG]}},
                     effect="Deny"),
        pd.statement("LaunchTemplatesThisClusterOnly",
                     ["ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate", "ec2:RunInstances"],
                     [ec2("launch-template/*")], {"StringEquals": cluster_tag}),
        pd.statement("DescribeThisCluster", ["eks:DescribeCluster"],
                     [f"arn:{partition}:eks:{region}:{account}:cluster/{cluster_name}"]),
        # --- the bake: a tagged builder instance
        pd.statement("LaunchOnlyTaggedBuilders", ["ec2:RunInstances"], [ec2("instance/*")],
                     {"StringEquals": {f"aws:RequestTag/{TAG_ROLE}": BUILDER_ROLE}}),
        # UpdateAutoScalingGroup with a launch-template version makes Auto Scaling check that the
        # caller could RunInstances from that template (instance, volume, ENI, ...); the nodes are not
        # builders, so allow instances launched through a template (which itself must be this cluster's).
        pd.statement("LaunchFromThisClustersTemplates", ["ec2:RunInstances"], [ec2("instance/*")],
                     {"ArnLike": {"ec2:LaunchTemplate": ec2("launch-template/*")}}),
        pd.statement("LaunchBuilderFrom", ["ec2:RunInstances"],
                     [ec2("image/*"), ec2("subnet/*"), ec2("security-group/*"), ec2("network-interface/*"),
                      ec2("volume/*")]),
        pd.statement("TagOnCreateOnly", ["ec2:CreateTags"],
                     # network-interface: the node launch templates tag their ENIs on launch.
                     [ec2("instance/*"), ec2("volume/*"), ec2("network-interface/*"), ec2("security-group/*")],
                     {"StringEquals": {"ec2:CreateAction": ["CreateSecurityGroup", "RunInstances"]}}),
        pd.statement("BuilderInstancesOnly", ["ec2:CreateImage", "ec2:StopInstances", "ec2:TerminateInstances"],
                     [ec2("instance/*")], {"StringEquals": builder_tag}),
        # Any region: `bake --copy-to-region` calls CopyImage and CreateTags in the destination region,
        # where the new image and its snapshots live.
        pd.statement("CreateAndTagImages", ["ec2:CopyImage", "ec2:CreateImage", "ec2:CreateTags"],
                     [pd.ec2_arn(partition, "*", account, "image/*"), pd.ec2_arn(partition, "*", account, "snapshot/*")]),
        pd.statement("ManageOnlyKilnImages", ["ec2:DeleteSnapshot", "ec2:DeregisterImage",
                                              "ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute"],
                     images, baked_by_kiln),
        pd.statement("BuilderSecurityGroupIn", ["ec2:CreateSecurityGroup"], [ec2("vpc/*")]),
        pd.statement("CreateOnlyKilnSecurityGroups", ["ec2:CreateSecurityGroup"], [ec2("security-group/*")],
                     {"Null": {f"aws:RequestTag/{TAG_RECIPE}": "false"}}),
        pd.statement("DeleteOnlyKilnSecurityGroups", ["ec2:DeleteSecurityGroup"], [ec2("security-group/*")],
                     baked_by_kiln),
        pd.statement("PassOnlyTheBuilderRoleToEc2", ["iam:PassRole"], list(pass_role_arns),
                     {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
        pd.statement("RunOnlyTheBakeDocument", ["ssm:SendCommand"],
                     [pd.ssm_document_arn(partition, region, BAKE_DOCUMENT)]),
        pd.statement("OnlyOnBuilders", ["ssm:SendCommand"], [ec2("instance/*")],
                     {"StringEquals": {f"ssm:resourceTag/{TAG_ROLE}": BUILDER_ROLE}}),
        pd.statement("ReadEksAmiParameters", ["ssm:GetParameter", "ssm:GetParameters"],
                     [f"arn:{partition}:ssm:{region}::parameter/{EKS_AMI_PARAMETERS}"]),
        # --- bake --kms-key / --share-with: only customer-managed keys tagged for this cluster (the key is a
        # bake flag, not known here; the tag is the key owner's consent). Read the key and its grants; let EC2
        # encrypt the builder's volumes and copies with it; grant other accounts exactly the share operations.
        pd.statement("ReadThisClustersBakeKeys", ["kms:DescribeKey", "kms:ListGrants"], kms_keys,
                     {"StringEquals": cluster_tag}),
        pd.statement("EncryptBuilderVolumesWithThisClustersBakeKeys", list(EBS_KEY_ACTIONS), kms_keys,
                     {"StringEquals": cluster_tag, "StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}),
        pd.statement("ShareThisClustersBakeKeysWithAccounts", ["kms:CreateGrant"], kms_keys,
                     {"StringEquals": cluster_tag,
                      "ForAllValues:StringEquals": {"kms:GrantOperations": sorted(BAKE_KEY_GRANT_OPERATIONS)},
                      "StringLike": {"kms:GranteePrincipal": f"arn:{partition}:iam::*:root"}}),
        # The root-volume estimate reads image sizes from this account's repositories (else: unknown size).
        pd.statement("ReadImageSizes", ["ecr:DescribeImages"], [f"arn:{partition}:ecr:*:{account}:repository/*"]),
        pd.statement("ReadModelManifests", ["s3:GetObject"],
                     [f"arn:{partition}:s3:::{model_bucket or '*'}/{MANIFEST_NAME}",
                      f"arn:{partition}:s3:::{model_bucket or '*'}/*/{MANIFEST_NAME}"]),
        # --- reads IAM cannot scope
        pd.statement("DescribeReadOnly", READ_ONLY, "*"),
    )


def assume_policy(role_arn: str) -> str:
    return pd.document(pd.statement("AssumeTheRolloutRole", ASSUME_ACTIONS, [role_arn]))


def oidc_trust(provider_arn: str, provider_url: str, audience: str, subject: str) -> str:
    """Trust tokens of one CI OIDC provider, for one audience and one subject (``StringEquals``; the policy
    pack recognises the CI deploy role by exactly this document, see infra/ci_oidc.py)."""
    return ci_oidc.deploy_role_trust(provider_arn, provider_url, audience, subject)


# ---- components ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CiDeployRoleArgs:
    provider_url: str
    audience: str
    subject: str
    tags: dict[str, str] = field(default_factory=dict)
    # An IAM OIDC provider that already exists for provider_url: trusted instead of creating one
    # (an account holds one provider per URL, so creating a second fails `pulumi up`).
    provider_arn: Optional[str] = None
    # Every audience a kiln CI role trusts (the provider's client IDs); default: the deploy role's.
    client_ids: Sequence[str] = ()


class CiDeployRole(pulumi.ComponentResource):
    """The CI system's OIDC provider in IAM and the role its pipelines assume with their token.

    Its AWS permission is to assume the rollout role (granted by
    :class:`RolloutRole`); permissions for a full ``pulumi up`` are the
    account administrator's to attach. Its Kubernetes access is
    :class:`infra.ci_access.CiClusterAccess`. With ``provider_arn`` the
    account's existing provider is trusted and none is created.
    """

    def __init__(self, name: str, args: CiDeployRoleArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:CiDeployRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.provider: Optional[aws.iam.OpenIdConnectProvider] = None
        if args.provider_arn:
            provider_arn = pulumi.Output.from_input(args.provider_arn)
        else:
            self.provider = aws.iam.OpenIdConnectProvider(
                f"{name}-oidc",
                url=args.provider_url,
                client_id_lists=list(args.client_ids or [args.audience]),
                tags=args.tags,
                opts=child,
            )
            provider_arn = self.provider.arn
        self.provider_arn = provider_arn     # the preview role and the rotation trust the same provider
        self.role = aws.iam.Role(
            name,
            description=f"CI pipelines ({args.subject}) through {args.provider_url}",
            assume_role_policy=provider_arn.apply(
                lambda arn: oidc_trust(arn, args.provider_url, args.audience, args.subject)),
            max_session_duration=MAX_SESSION_SECONDS,
            tags=args.tags,
            opts=child,
        )
        self.register_outputs({"roleArn": self.role.arn})


@dataclass(frozen=True)
class RolloutRoleArgs:
    cluster_name: pulumi.Input[str]
    # Roles the rollout role may pass to EC2: the node role (an ASG update that names a launch
    # template checks it) and, with kiln:modelBucket, the bake builder's role (infra/builder.py).
    builder_role_arns: Sequence[pulumi.Input[str]]
    # The CI deploy role, if any: it becomes the only principal trusted, and is allowed to assume.
    ci_role: Optional[aws.iam.Role] = None
    tags: dict[str, str] = field(default_factory=dict)
    model_bucket: Optional[str] = None     # kiln:modelBucket: the only bucket manifests are read from
    # kiln:ciOidc.rotation: the rotation job's token is the only principal trusted (no chaining), and the role
    # gains what the rotation's gated `pulumi up` needs (infra/ci_roles.py).
    rotation: Optional["CiRotationArgs"] = None


@dataclass(frozen=True)
class CiRotationArgs:
    provider_arn: pulumi.Input[str]
    provider_url: str
    trust: CiRoleTrust
    read_policy_arn: pulumi.Input[str]      # infra/ci_roles.CiReadAccess: what a refresh reads
    state_bucket: Optional[str] = None
    state_prefix: str = ""
    secrets_kms_key: Optional[str] = None


class RolloutRole(pulumi.ComponentResource):
    """The role ``python -m automation bake / rotate / replace`` runs as."""

    def __init__(self, name: str, args: RolloutRoleArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:RolloutRole", name, None, opts)
        if not args.builder_role_arns:
            raise ValueError("RolloutRoleArgs.builder_role_arns must name the builder's role")
        child = pulumi.ResourceOptions(parent=self)
        partition = aws.get_partition_output().partition
        region = aws.get_region_output().region
        account = aws.get_caller_identity_output().account_id

        # sts:TagSession too: a caller that passes session tags (CI role chaining does by default)
        # is refused unless the trust allows it, and the CI role is granted it (assume_policy).
        rotation = args.rotation
        if rotation is not None:
            trust = pulumi.Output.from_input(rotation.provider_arn).apply(lambda arn: ci_oidc.web_identity_trust(
                arn, rotation.provider_url, rotation.trust.audience, rotation.trust.subject))
        elif args.ci_role is not None:
            trust = args.ci_role.arn.apply(lambda arn: pd.trust({"AWS": arn}, ASSUME_ACTIONS))
        else:
            trust = pulumi.Output.all(partition, account).apply(
                lambda a: pd.trust({"AWS": f"arn:{a[0]}:iam::{a[1]}:root"}, ASSUME_ACTIONS))
        self.role = aws.iam.Role(
            name,
            description="kiln automation: bake AMIs and replace this cluster's nodes",
            assume_role_policy=trust,
            max_session_duration=MAX_SESSION_SECONDS,
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            name,
            role=self.role.id,
            policy=pulumi.Output.all(partition, region, account, args.cluster_name,
                                     pulumi.Output.all(*args.builder_role_arns)).apply(
                lambda a: rollout_policy(a[0], a[1], a[2], a[3], a[4], args.model_bucket)),
            opts=child,
        )
        if rotation is not None:
            aws.iam.RolePolicyAttachment(f"{name}-ci-read", role=self.role.name, policy_arn=rotation.read_policy_arn,
                                         opts=child)
            if rotation.state_bucket or rotation.secrets_kms_key:
                aws.iam.RolePolicy(f"{name}-state", role=self.role.id, policy=partition.apply(lambda p: state_policy(
                    p, rotation.state_bucket, rotation.state_prefix, rotation.secrets_kms_key, write=True)), opts=child)
        elif args.ci_role is not None:
            aws.iam.RolePolicy(
                f"{name}-assume",
                role=args.ci_role.id,
                policy=self.role.arn.apply(assume_policy),
                opts=child,
            )
        self.register_outputs({"roleArn": self.role.arn})
