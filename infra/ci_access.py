"""Kubernetes access for the CI deploy role, so every later ``pulumi up`` from CI can manage the cluster.

With API authentication only the identity that created the cluster is admin
(EKS's creator access entry). ``kiln:ciOidc`` creates the CI deploy role in the
same stack, so the first ``up`` is never run by it; without an access entry
every later CI ``up`` fails with Unauthorized on every Kubernetes object.

Why cluster admin, and not a narrower ClusterRole: ``up`` creates and updates
ClusterRoles, ClusterRoleBindings, Roles and RoleBindings (kiln's own and those
rendered by the cluster-autoscaler and NVIDIA device plugin charts), a
ValidatingAdmissionPolicy and PersistentVolumes, and Helm keeps its release
state in Secrets. Kubernetes lets a subject create RBAC that grants permissions
only if it holds them or has ``escalate``/``bind`` — and a subject with those can
grant itself anything. A narrower role would be cluster admin in all but name,
and would break whenever a chart upgrade renders a new kind. So the entry is
``STANDARD`` with ``AmazonEKSClusterAdminPolicy`` at cluster scope, and nothing
else in the account gets it: the rollout role keeps its own narrow RBAC
(``infra/rollout_access.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

CLUSTER_ADMIN_POLICY = "AmazonEKSClusterAdminPolicy"


def access_policy_arn(partition: str, name: str) -> str:
    """EKS access policies are AWS-owned and region-less: ``arn:<p>:eks::aws:cluster-access-policy/<name>``."""
    return f"arn:{partition}:eks::aws:cluster-access-policy/{name}"


@dataclass(frozen=True)
class CiAccessArgs:
    cluster_name: pulumi.Input[str]
    principal_arn: pulumi.Input[str]     # the CI deploy role
    tags: dict[str, str] = field(default_factory=dict)


class CiClusterAccess(pulumi.ComponentResource):
    """An EKS access entry for the CI deploy role and its cluster-admin policy association."""

    def __init__(self, name: str, args: CiAccessArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:CiClusterAccess", name, None, opts)
        partition = aws.get_partition_output().partition
        self.access_entry = aws.eks.AccessEntry(
            name,
            cluster_name=args.cluster_name,
            principal_arn=args.principal_arn,
            type="STANDARD",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.policy_association = aws.eks.AccessPolicyAssociation(
            name,
            cluster_name=args.cluster_name,
            principal_arn=self.access_entry.principal_arn,
            policy_arn=partition.apply(lambda p: access_policy_arn(p, CLUSTER_ADMIN_POLICY)),
            access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.access_entry]),
        )
        self.register_outputs({"accessEntry": self.access_entry.access_entry_arn})
