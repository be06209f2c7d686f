"""The bake's builder instance profile: read the model bucket, and nothing the nodes need.

``python -m automation bake`` launches a builder instance that copies the model
from S3 onto the model volume, pulls the prefetch images and is driven through
SSM Run Command. It must not borrow the node role: nodes have no business
reading the model bucket (every pod on a node could reach what the node role
can through a host-network pod), and the node role cannot read it anyway, so a
bake with the node profile fails with AccessDenied at its copy step.

So the builder gets its own role, created only when ``kiln:modelBucket`` names
the bucket:

* ``s3:ListBucket`` on the bucket and ``s3:GetObject`` on its objects — no
  write, no other bucket;
* ``kms:Decrypt`` only through S3 and only for this bucket's objects (an
  SSE-KMS bucket; the encryption context names the object or, with S3 Bucket
  Keys, the bucket);
* SSM Run Command (``AmazonSSMManagedInstanceCore``) and ECR pulls
  (``AmazonEC2ContainerRegistryPullOnly``) for the prefetch images, as a node has;
* CloudWatch Logs writes only to log groups under ``/kiln/bake`` (for
  ``bake --log-group /kiln/bake/...``).

The instance profile's name is the stack output ``builderInstanceProfile``;
the rollout role may pass this role to EC2 (``infra/roles.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

from infra import policydocs as pd
from infra.labels import BAKE_LOG_GROUP

MANAGED_POLICIES = ("AmazonSSMManagedInstanceCore", "AmazonEC2ContainerRegistryPullOnly")
# bake --log-group must name this group or one below it for the builder to write its command output there.
LOG_GROUP_PREFIX = BAKE_LOG_GROUP
LOG_ACTIONS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents")


def builder_policy(partition: str, region: str, account: str, bucket: str) -> str:
    """The builder role's inline policy (its managed policies are :data:`MANAGED_POLICIES`)."""
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    logs = f"arn:{partition}:logs:{region}:{account}:log-group:{LOG_GROUP_PREFIX}"
    return pd.document(
        pd.statement("ListTheModelBucket", ["s3:ListBucket"], [bucket_arn]),
        pd.statement("ReadTheModelBucket", ["s3:GetObject"], [f"{bucket_arn}/*"]),
        # A customer-managed key is not known here; the conditions confine Decrypt to S3 reads of this bucket.
        pd.statement("DecryptTheModelBucketThroughS3", ["kms:Decrypt"], [f"arn:{partition}:kms:*:*:key/*"], {
            "StringLike": {"kms:ViaService": ["s3.*.amazonaws.com", "s3.*.amazonaws.com.cn"],
                           "kms:EncryptionContext:aws:s3:arn": [bucket_arn, f"{bucket_arn}/*"]}}),
        # The group /kiln/bake itself or one below it (/kiln/bake/...), never a sibling such as /kiln/bakery.
        pd.statement("WriteBakeLogs", LOG_ACTIONS, [logs, f"{logs}:*", f"{logs}/*"]),
        pd.statement("FindLogGroups", ["logs:DescribeLogGroups"],
                     [f"arn:{partition}:logs:{region}:{account}:log-group:*"]),
    )


def managed_policy_arn(partition: str, name: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{name}"


@dataclass(frozen=True)
class BakeBuilderArgs:
    model_bucket: str
    tags: dict[str, str] = field(default_factory=dict)


class BakeBuilder(pulumi.ComponentResource):
    """The builder's role, its policies and its instance profile (``role``, ``instance_profile``)."""

    def __init__(self, name: str, args: BakeBuilderArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:BakeBuilder", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        partition = aws.get_partition_output().partition
        region = aws.get_region_output().region
        account = aws.get_caller_identity_output().account_id

        self.role = aws.iam.Role(
            name,
            description=f"kiln bake builder: reads s3://{args.model_bucket}, driven through SSM",
            assume_role_policy=pd.trust({"Service": "ec2.amazonaws.com"}),
            tags=args.tags,
            opts=child,
        )
        grants: list[pulumi.Resource] = [aws.iam.RolePolicy(
            name,
            role=self.role.id,
            policy=pulumi.Output.all(partition, region, account).apply(
                lambda a: builder_policy(a[0], a[1], a[2], args.model_bucket)),
            opts=child,
        )]
        grants += [
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy}", role=self.role.name,
                policy_arn=partition.apply(lambda p, policy=policy: managed_policy_arn(p, policy)), opts=child)
            for policy in MANAGED_POLICIES
        ]
        # A builder launched from this profile never runs without its permissions.
        self.instance_profile = aws.iam.InstanceProfile(
            name, role=self.role.name, tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=grants),
        )
        self.register_outputs({"roleArn": self.role.arn, "instanceProfile": self.instance_profile.name})
