"""cluster-autoscaler: a pinned Helm chart, auto-discovering kiln's ASGs, with its own IRSA role.

kiln creates one ASG per node group and AZ; they are "similar" by construction,
so ``balance-similar-node-groups`` keeps the zones even. The ``least-waste``
expander picks the group whose instances are best filled by the pending pods,
which on AWS is the cheapest fit that cluster-autoscaler can compute (its
``price`` expander has no AWS pricing model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import irsa
from infra import policydocs as pd
from infra.labels import CA_TAG_ENABLED, TAG_CLUSTER, TAINT_WARMING, TAINT_WARMING_EFFECT, ca_cluster_tag

# Chart 9.46.6 ships cluster-autoscaler 1.32.0; the image is pinned to the cluster's minor below.
DEFAULT_CHART_VERSION = "9.46.6"
CHART = "cluster-autoscaler"
CHART_REPOSITORY = "https://kubernetes.github.io/autoscaler"
NAMESPACE = "kube-system"
# The Deployment and service account name; the rollout scales this Deployment to pause it
# (automation/rollout/kube.py DEFAULT_AUTOSCALER_NAME), so the two must agree.
NAME = "cluster-autoscaler"
EXPANDER = "least-waste"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"

# Actions that change an ASG; allowed only on this cluster's groups.
MUTATING_ACTIONS = ("autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup")
# Reads cluster-autoscaler makes; none supports resource-level permissions.
DESCRIBE_ACTIONS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLaunchConfigurations",
    "autoscaling:DescribeScalingActivities",
    "autoscaling:DescribeTags",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:GetInstanceTypesFromInstanceRequirements",
    "eks:DescribeNodegroup",
)


def image_tag(kubernetes_version: str) -> str:
    """cluster-autoscaler's minor must match the cluster's; every minor has a ``.0`` release."""
    return f"v{kubernetes_version}.0"


def autoscaler_policy(partition: str, region: str, account: str, cluster_name: str) -> str:
    """Describe anything; scale or terminate only ASGs carrying this cluster's tags."""
    return pd.document(
        pd.statement("ScaleOnlyThisClustersGroups", MUTATING_ACTIONS, [pd.asg_arn(partition, region, account)],
                     {"StringEquals": {
                         f"aws:ResourceTag/{TAG_CLUSTER}": cluster_name,
                         f"aws:ResourceTag/{ca_cluster_tag(cluster_name)}": "owned",
                     }}),
        pd.statement("DescribeReadOnly", DESCRIBE_ACTIONS, "*"),
    )


def helm_values(cluster_name: str, region: str, role_arn: str, kubernetes_version: str) -> dict[str, Any]:
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "fullnameOverride": NAME,
        "autoDiscovery": {
            "clusterName": cluster_name,
            # The tags infra/nodes.py puts on every ASG (asg:tag=<k1>,<k2> discovery).
            "tags": [CA_TAG_ENABLED, ca_cluster_tag(cluster_name)],
        },
        "extraArgs": {
            "balance-similar-node-groups": True,
            "expander": EXPANDER,
            # Model Jobs mount the model as a hostPath volume, which cluster-autoscaler counts as local
            # storage: a node running one is never scaled down under it (the chart default, made explicit).
            "skip-nodes-with-local-storage": True,
            # Nodes register with the model-warming taint and lose it once the model is read;
            # a startup taint is ignored in node templates, so groups still scale up for model Jobs.
            "startup-taint": TAINT_WARMING,
        },
        "image": {"tag": image_tag(kubernetes_version)},
        # Resolve AWS endpoints with the node's resolver (the VPC's), not CoreDNS: on a first deploy every
        # node is still warming and CoreDNS does not tolerate that taint, so with cluster DNS the autoscaler
        # would crash-loop (and its release time out) until a node is warm. It reaches the API server by IP.
        "dnsPolicy": "Default",
        # It needs no model: run on a node that is still warming, so a fresh cluster gets an
        # autoscaler minutes earlier (the Release waits for it to be ready).
        "tolerations": [{"key": TAINT_WARMING, "operator": "Exists", "effect": TAINT_WARMING_EFFECT}],
        "rbac": {"serviceAccount": {"create": True, "name": NAME, "annotations": {IRSA_ANNOTATION: role_arn}}},
    }


@dataclass(frozen=True)
class AutoscalerArgs:
    cluster_name: pulumi.Input[str]
    kubernetes_version: str
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]  # issuer without https://
    k8s_provider: k8s.Provider
    chart_version: Optional[str] = None
    tags: dict[str, str] = field(default_factory=dict)


class ClusterAutoscaler(pulumi.ComponentResource):
    """The IRSA role, its policy and the Helm release."""

    def __init__(self, name: str, args: AutoscalerArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:ClusterAutoscaler", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        partition = aws.get_partition_output().partition
        region = aws.get_region_output().region
        account = aws.get_caller_identity_output().account_id
        cluster = pulumi.Output.from_input(args.cluster_name)
        self.chart_version = args.chart_version or DEFAULT_CHART_VERSION

        self.role = aws.iam.Role(
            f"{name}-irsa",
            description="cluster-autoscaler (kube-system/cluster-autoscaler)",
            assume_role_policy=irsa.trust_policy(args.oidc_provider_arn, args.oidc_provider_url, NAMESPACE, NAME),
            tags=args.tags,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-irsa",
            role=self.role.id,
            policy=pulumi.Output.all(partition, region, account, cluster).apply(lambda a: autoscaler_policy(*a)),
            opts=child,
        )
        self.release = k8s.helm.v3.Release(
            name,
            name=NAME,
            chart=CHART,
            version=self.chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPOSITORY),
            namespace=NAMESPACE,
            timeout=900,  # seconds: on a new stack the first nodes are still booting
            values=pulumi.Output.all(cluster, region, self.role.arn).apply(
                lambda a: helm_values(a[0], a[1], a[2], args.kubernetes_version)),
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=[policy]),
        )
        self.register_outputs({"roleArn": self.role.arn, "chartVersion": self.chart_version})
