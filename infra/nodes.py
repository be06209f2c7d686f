"""Model node groups: one launch template per group, one ASG per availability zone.

Why one ASG per zone: the cluster-autoscaler can only pick a zone by picking an
ASG, and a pod bound to a zonal volume or placed by topology spread needs a node
in *that* zone. The rollout also replaces nodes zone by zone.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws

from infra import labels as L
from infra import userdata
from infra.cluster import NodeBootstrap
from infra.config import NodeGroupConfig

ROOT_DEVICE = "/dev/xvda"  # AL2023
# One hop: host-network pods (VPC CNI, kube-proxy) still reach IMDS, ordinary pods
# cannot borrow the node role's credentials. Pods that need AWS use IRSA.
IMDS_HOP_LIMIT = 1
GP3_BASELINE_THROUGHPUT = 125  # MiB/s included in the gp3 price
SPOT_ALLOCATION_STRATEGY = "price-capacity-optimized"


@dataclass(frozen=True)
class ModelDisk:
    """The EBS volume that holds the model: restored from the AMI's snapshot on every node."""

    device: str
    size_gib: int
    init_rate_mibps: int   # EBS volume initialization rate (Provisioned Rate for Volume Initialization)


@dataclass(frozen=True)
class NodeGroupArgs:
    cluster_name: pulumi.Input[str]
    group: NodeGroupConfig
    ami_id: str
    zones: tuple[str, ...]
    subnet_ids: pulumi.Input[Sequence[str]]          # one per zone, same order
    bootstrap: NodeBootstrap
    instance_profile_arn: pulumi.Input[str]
    security_group_ids: Sequence[pulumi.Input[str]]
    model_version: str
    model_path: str
    model_volume: ModelDisk
    tags: dict[str, str] = field(default_factory=dict)
    # GPU groups: the k8s.amazonaws.com/accelerator label value (infra/awsfacts.py).
    accelerator: Optional[str] = None
    # What must exist before a node boots: the VPC CNI (else pods get no IP) and the
    # warm-up DaemonSet (else the warming taint is never removed).
    depends_on: Sequence[pulumi.Resource] = ()


def autoscaler_tags(cluster_name: str, group: NodeGroupConfig, node_labels: dict[str, str]) -> dict[str, str]:
    """cluster-autoscaler discovery and node-template tags, so a group can scale from zero.

    The model-warming taint is deliberately *not* advertised: it is a startup taint
    that every node sheds within minutes (infra/autoscaler.py passes it to
    cluster-autoscaler as ``--startup-taint``); advertising it would make
    the autoscaler believe no model Job could ever fit on a new node.
    """
    tags = {L.CA_TAG_ENABLED: "true", L.ca_cluster_tag(cluster_name): "owned"}
    for key, value in sorted(node_labels.items()):
        tags[L.CA_TAG_NODE_TEMPLATE_LABEL + key] = value
    for taint in group.taints:
        tags[L.CA_TAG_NODE_TEMPLATE_TAINT + taint.key] = f"{taint.value}:{taint.effect}"
    return tags


def ownership_tags(cluster_name: str, group: str) -> dict[str, str]:
    """The tags the rollout finds its ASGs (and instances) by."""
    return {
        L.TAG_CLUSTER: cluster_name,
        L.TAG_NODE_GROUP: group,
        f"kubernetes.io/cluster/{cluster_name}": "owned",
    }


class NodeGroup(pulumi.ComponentResource):
    """A launch template and one ASG per zone.

    ``launch_template``; ``asgs`` (zone -> ``aws.autoscaling.Group``); ``entries``:
    Output list of ``{zone, asgName, launchTemplateId}`` (the ``nodeGroups`` stack output).
    """

    def __init__(self, name: str, args: NodeGroupArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:NodeGroup", name, None, opts)
        labels = userdata.node_labels(args.model_version, args.group.name, args.group.labels_dict, args.accelerator)
        self.launch_template = self._launch_template(name, args, self._user_data(args))
        # Pin the exact version: "$Latest" would let a template edit roll onto
        # nodes without the rollout noticing. The rollout sees the ASG's version change.
        lt_version = self.launch_template.latest_version.apply(str)
        tags = self._asg_tags(args, labels)
        placement = self._placement(args.group, lt_version)
        subnet_ids = pulumi.Output.from_input(args.subnet_ids)
        self.asgs: dict[str, aws.autoscaling.Group] = {
            zone: self._asg(f"{name}-{zone}", args, subnet_ids.apply(lambda ids, i=i: ids[i]), tags, placement)
            for i, zone in enumerate(args.zones)
        }
        self.entries: pulumi.Output[list[dict[str, str]]] = pulumi.Output.all(*[
            pulumi.Output.all(asg.name, self.launch_template.id).apply(
                lambda v, zone=zone: {"zone": zone, "asgName": v[0], "launchTemplateId": v[1]})
            for zone, asg in self.asgs.items()
        ])
        self.register_outputs({"launchTemplateId": self.launch_template.id, "asgs": self.entries})

    @staticmethod
    def _user_data(args: NodeGroupArgs) -> pulumi.Output[str]:
        """The node's user data (nodeadm NodeConfig + the model mount), base64: rendered once the cluster's
        endpoint and CA are known."""
        g, b = args.group, args.bootstrap
        taints = list(g.taints)
        return pulumi.Output.all(b.name, b.endpoint, b.certificate_authority).apply(
            lambda v: base64.b64encode(userdata.render(
                cluster_name=v[0], endpoint=v[1], certificate_authority=v[2], service_cidr=b.service_cidr,
                model_version=args.model_version, group=g.name, extra_labels=g.labels_dict, taints=taints,
                model_device=args.model_volume.device, model_path=args.model_path, accelerator=args.accelerator,
            ).encode()).decode())

    def _launch_template(self, name: str, args: NodeGroupArgs, user_data: pulumi.Output[str]) -> aws.ec2.LaunchTemplate:
        """The one launch template of the group: the AMI, IMDSv2 with one hop, no public IP, encrypted root and
        model volumes (the model volume initialised eagerly), ownership tags on everything it launches."""
        g, mv = args.group, args.model_volume
        resource_tags = pulumi.Output.from_input(args.cluster_name).apply(
            lambda c: {**args.tags, **ownership_tags(c, g.name), "Name": f"{c}-{g.name}"})
        return aws.ec2.LaunchTemplate(
            name,
            description=f"kiln node group {g.name}: model {args.model_version}",
            image_id=args.ami_id,
            # With one on-demand type the ASG launches it directly; otherwise the
            # mixed instances policy lists the types.
            instance_type=g.instance_types[0] if len(g.instance_types) == 1 and not g.spot else None,
            user_data=user_data,
            update_default_version=True,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=args.instance_profile_arn),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=IMDS_HOP_LIMIT,
                instance_metadata_tags="disabled",
            ),
            network_interfaces=[aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                device_index=0, associate_public_ip_address="false", delete_on_termination="true",
                security_groups=list(args.security_group_ids),
            )],
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=ROOT_DEVICE,
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=g.volume_size_gib, volume_type="gp3", encrypted="true",
                        delete_on_termination="true",
                    ),
                ),
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    # Same device name as the AMI's model volume: the snapshot comes from
                    # the AMI, this mapping only overrides how the volume is created.
                    device_name=mv.device,
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=mv.size_gib, volume_type="gp3", encrypted="true",
                        delete_on_termination="true",
                        # Fetch every block from S3 at this rate right away instead of lazily
                        # on first read (measured ~9 MB/s cold).
                        volume_initialization_rate=mv.init_rate_mibps,
                        # ...and let the warm-up read as fast as the blocks arrive.
                        throughput=max(GP3_BASELINE_THROUGHPUT, mv.init_rate_mibps),
                    ),
                ),
            ],
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=resource_tags)
                for kind in ("instance", "volume", "network-interface")
            ],
            tags=resource_tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    @staticmethod
    def _asg_tags(args: NodeGroupArgs, labels: dict[str, str]) -> pulumi.Output[list]:
        """Ownership tags go onto the instances too; the autoscaler's tags stay on the ASG."""
        g = args.group
        return pulumi.Output.from_input(args.cluster_name).apply(lambda c: [
            *[aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=True)
              for k, v in {**args.tags, **ownership_tags(c, g.name), "Name": f"{c}-{g.name}"}.items()],
            *[aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=False)
              for k, v in autoscaler_tags(c, g, labels).items()],
        ])

    def _placement(self, g: NodeGroupConfig, lt_version: pulumi.Output[str]) -> dict:
        """How the ASGs use the template: directly for one on-demand type; else a mixed instances policy
        listing the types (spot: price-capacity-optimized, all spot; on-demand: the types in priority order)."""
        if len(g.instance_types) == 1 and not g.spot:
            return dict(launch_template=aws.autoscaling.GroupLaunchTemplateArgs(
                id=self.launch_template.id, version=lt_version))
        return dict(mixed_instances_policy=aws.autoscaling.GroupMixedInstancesPolicyArgs(
            instances_distribution=aws.autoscaling.GroupMixedInstancesPolicyInstancesDistributionArgs(
                on_demand_base_capacity=0,
                on_demand_percentage_above_base_capacity=0 if g.spot else 100,
                on_demand_allocation_strategy="prioritized",
                spot_allocation_strategy=SPOT_ALLOCATION_STRATEGY if g.spot else None,
            ),
            launch_template=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateArgs(
                launch_template_specification=(
                    aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs(
                        launch_template_id=self.launch_template.id, version=lt_version)),
                overrides=[aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateOverrideArgs(instance_type=t)
                           for t in g.instance_types],
            ),
        ))

    def _asg(self, name: str, args: NodeGroupArgs, subnet_id: pulumi.Output[str], tags: pulumi.Output[list],
             placement: dict) -> aws.autoscaling.Group:
        """One zone's ASG, in that zone's private subnet: the autoscaler picks a zone by picking an ASG."""
        g = args.group
        return aws.autoscaling.Group(
            name,
            min_size=g.min_size,
            max_size=g.max_size,
            desired_capacity=g.desired_size,
            vpc_zone_identifiers=[subnet_id],
            capacity_rebalance=g.spot,
            health_check_type="EC2",
            tags=tags,
            **placement,
            # Desired capacity belongs to the autoscaler and the rollout after creation.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["desiredCapacity"],
                                        depends_on=list(args.depends_on)),
        )
