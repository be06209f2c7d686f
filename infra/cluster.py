"""The EKS control plane: API authentication, OIDC, logging, KMS envelope encryption.

No node group is created here (kiln's node groups are in ``infra/nodes.py``),
but the role those nodes assume is: the cluster's EC2_LINUX access entry needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from infra import irsa
from infra.awsfacts import SERVICE_CIDR_CANDIDATES

# Every control-plane log type: who did what (api, audit), who authenticated, and
# why pods were (not) scheduled — what an incident review needs.
CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")

# What a node needs, and nothing wider: join the cluster, pull from ECR (read-only),
# and be reachable through SSM Session Manager instead of SSH.
NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)

# The VPC CNI needs ENI permissions; it gets them through its own service account
# (IRSA) rather than through the node role, so no pod on the node inherits them.
CNI_POLICY = "AmazonEKS_CNI_Policy"

def managed_policy_arn(partition: str, name: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{name}"


@dataclass(frozen=True)
class ClusterArgs:
    name: str
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[Sequence[str]]
    public_subnet_ids: Optional[pulumi.Input[Sequence[str]]] = None
    endpoint_public_access_cidrs: tuple[str, ...] = ()
    # Pinned, so nodeadm can be told it: kiln:serviceCidr, or the default range that avoids every
    # CIDR of the VPC (infra/awsfacts.py plan()).
    service_cidr: str = SERVICE_CIDR_CANDIDATES[0]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeBootstrap:
    """What nodeadm needs to join a node to this cluster (all Outputs)."""

    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    certificate_authority: pulumi.Output[str]
    service_cidr: str


class Cluster(pulumi.ComponentResource):
    """An EKS cluster without default nodes, plus the node role, KMS key and a Kubernetes provider.

    Attributes other components build on: ``cluster_name``, ``oidc_provider_arn``,
    ``oidc_provider_url`` (issuer without ``https://``), ``k8s_provider``,
    ``node_role``, ``node_instance_profile``, ``node_security_group_id``,
    ``kms_key``, ``kubeconfig`` (secret), ``vpc_id``, ``private_subnet_ids``,
    ``bootstrap`` (:class:`NodeBootstrap`).
    """

    def __init__(self, name: str, args: ClusterArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:Cluster", name, None, opts)
        partition = aws.get_partition_output().partition
        self.vpc_id = pulumi.Output.from_input(args.vpc_id)
        self.private_subnet_ids = pulumi.Output.from_input(args.private_subnet_ids)
        self.kms_key = self._secrets_key(name, args)
        self._node_role(name, args, partition)
        self.eks = self._control_plane(name, args)
        self._cluster_outputs(args)
        self.k8s_provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.eks.kubeconfig_json, opts=self._child())
        self.vpc_cni = self._vpc_cni(name, args, partition)
        self.bootstrap = self._node_bootstrap(args)
        self.register_outputs({
            "clusterName": self.cluster_name,
            "oidcProviderArn": self.oidc_provider_arn,
            "nodeRoleArn": self.node_role.arn,
            "kmsKeyArn": self.kms_key.arn,
        })

    def _child(self, **extra) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **extra)

    def _secrets_key(self, name: str, args: ClusterArgs) -> aws.kms.Key:
        """The KMS key that envelope-encrypts Secrets in etcd; rotated yearly, 30 days to undo a deletion."""
        return aws.kms.Key(
            f"{name}-secrets",
            description=f"EKS secrets envelope encryption for {args.name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=args.tags,
            opts=self._child(),
        )

    def _node_role(self, name: str, args: ClusterArgs, partition: pulumi.Output[str]) -> None:
        """The role kiln's nodes assume (only NODE_MANAGED_POLICIES) and its instance profile. It is made here,
        not with the node groups: the cluster's EC2_LINUX access entry names it."""
        self.node_role = aws.iam.Role(
            f"{name}-node",
            description=f"Nodes of EKS cluster {args.name}",
            assume_role_policy=aws.iam.get_policy_document_output(statements=[
                aws.iam.GetPolicyDocumentStatementArgs(
                    actions=["sts:AssumeRole"],
                    principals=[aws.iam.GetPolicyDocumentStatementPrincipalArgs(
                        type="Service", identifiers=["ec2.amazonaws.com"])],
                ),
            ]).json,
            tags=args.tags,
            opts=self._child(),
        )
        self.node_policy_attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy}",
                role=self.node_role.name,
                policy_arn=partition.apply(lambda p, policy=policy: managed_policy_arn(p, policy)),
                opts=self._child(),
            )
            for policy in NODE_MANAGED_POLICIES
        ]
        # Nodes boot from this profile: it waits for the role's policies, so no node starts
        # (and, on destroy, none is still running) without its ECR/SSM/worker permissions.
        self.node_instance_profile = aws.iam.InstanceProfile(
            f"{name}-node", role=self.node_role.name, tags=args.tags,
            opts=self._child(depends_on=self.node_policy_attachments),
        )

    def _control_plane(self, name: str, args: ClusterArgs) -> eks.Cluster:
        """The pulumi-eks cluster: no default node group, API authentication with the node role's access entry,
        OIDC for IRSA, every log type, Secrets encrypted with our key, a public endpoint only for the given
        ranges."""
        public = bool(args.endpoint_public_access_cidrs)
        return eks.Cluster(
            f"{name}-eks",
            name=args.name,
            version=args.kubernetes_version,
            vpc_id=args.vpc_id,
            private_subnet_ids=args.private_subnet_ids,
            public_subnet_ids=args.public_subnet_ids,
            kubernetes_service_ip_address_range=args.service_cidr,
            skip_default_node_group=True,
            node_associate_public_ip_address=False,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries={
                "nodes": eks.AccessEntryArgs(principal_arn=self.node_role.arn, type=eks.AccessEntryType.EC2_LINUX),
            },
            create_oidc_provider=True,
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            encryption_config_key_arn=self.kms_key.arn,
            endpoint_private_access=True,
            endpoint_public_access=public,
            public_access_cidrs=list(args.endpoint_public_access_cidrs) if public else None,
            # kiln installs the VPC CNI add-on itself (_vpc_cni) so that it runs with its own IRSA role.
            use_default_vpc_cni=True,
            tags=args.tags,
            opts=self._child(),
        )

    def _cluster_outputs(self, args: ClusterArgs) -> None:
        """The attributes other components build on."""
        # An Output that carries the cluster as a dependency: anything that uses the
        # name (tags, Helm values, invokes) waits for the cluster.
        self.cluster_name: pulumi.Output[str] = self.eks.urn.apply(lambda _: args.name)
        self.oidc_provider_arn: pulumi.Output[str] = self.eks.oidc_provider_arn
        self.oidc_provider_url: pulumi.Output[str] = self.eks.oidc_provider_url
        self.node_security_group_id: pulumi.Output[str] = self.eks.node_security_group_id
        self.kubeconfig: pulumi.Output[str] = pulumi.Output.secret(self.eks.kubeconfig_json)

    def _vpc_cni(self, name: str, args: ClusterArgs, partition: pulumi.Output[str]) -> aws.eks.Addon:
        """The VPC CNI add-on with its own IRSA role, so ENI permissions are not on the node role (where every
        pod on the node could use them)."""
        cni_role = aws.iam.Role(
            f"{name}-vpc-cni",
            description=f"VPC CNI (kube-system/aws-node) of EKS cluster {args.name}",
            assume_role_policy=irsa.trust_policy(self.oidc_provider_arn, self.oidc_provider_url,
                                                 "kube-system", "aws-node"),
            tags=args.tags,
            opts=self._child(),
        )
        cni_policy = aws.iam.RolePolicyAttachment(
            f"{name}-vpc-cni",
            role=cni_role.name,
            policy_arn=partition.apply(lambda p: managed_policy_arn(p, CNI_POLICY)),
            opts=self._child(),
        )
        return aws.eks.Addon(
            f"{name}-vpc-cni",
            cluster_name=self.cluster_name,
            addon_name="vpc-cni",
            service_account_role_arn=cni_role.arn,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
            opts=self._child(depends_on=[cni_policy]),
        )

    def _node_bootstrap(self, args: ClusterArgs) -> NodeBootstrap:
        """What nodeadm needs: endpoint, CA and service CIDR, read from EKS once the cluster exists (in a preview
        of a new cluster they are simply unknown)."""
        described = aws.eks.get_cluster_output(
            name=self.cluster_name, opts=pulumi.InvokeOutputOptions(depends_on=[self.eks]),
        )
        return NodeBootstrap(
            name=self.cluster_name,
            endpoint=described.endpoint,
            certificate_authority=described.certificate_authorities.apply(lambda cas: cas[0].data),
            service_cidr=args.service_cidr,
        )
