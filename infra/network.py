"""The VPC: created per AZ (public + private subnets, NAT, S3/ECR endpoints) or an existing one.

Image layers come from S3 through ECR. With a gateway endpoint for S3 and
interface endpoints for ECR's ``api`` and ``dkr``, pulls from private subnets
never cross the NAT gateway, so they pay no NAT data processing.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

from infra.config import default as config_default

ECR_INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr")


def subnet_cidrs(vpc_cidr: str, zones: int) -> list[tuple[str, str]]:
    """(private, public) CIDRs per zone.

    Private subnets hold the pods (the VPC CNI gives every pod a VPC address), so
    they share the VPC's first half; the public subnets only hold NAT gateways and
    load balancers and get a quarter of that size each, from the second half.
    """
    if zones < 1:
        raise ValueError("zones must be >= 1")
    vpc = ipaddress.ip_network(vpc_cidr)
    first, second = vpc.subnets(prefixlen_diff=1)
    bits = max(0, math.ceil(math.log2(zones)))
    private = list(first.subnets(prefixlen_diff=bits))[:zones]
    public = list(second.subnets(prefixlen_diff=bits + 2))[:zones]
    return [(str(a), str(b)) for a, b in zip(private, public)]


@dataclass(frozen=True)
class NetworkArgs:
    cluster_name: str
    availability_zones: tuple[str, ...]
    vpc_cidr: str = config_default("vpcCidr")
    vpc_id: Optional[str] = None                  # set: use this VPC, create nothing
    private_subnet_ids: tuple[str, ...] = ()      # with vpc_id: one per zone, same order
    tags: dict[str, str] = field(default_factory=dict)


class Network(pulumi.ComponentResource):
    """``vpc_id``, ``private_subnet_ids`` (one per zone, in zone order) and ``public_subnet_ids``."""

    def __init__(self, name: str, args: NetworkArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:Network", name, None, opts)
        if args.vpc_id is not None:
            self.vpc_id = pulumi.Output.from_input(args.vpc_id)
            self.private_subnet_ids = pulumi.Output.from_input(list(args.private_subnet_ids))
            self.public_subnet_ids: Optional[pulumi.Output[list[str]]] = None
        else:
            self._create(name, args)
        self.register_outputs({"vpcId": self.vpc_id, "privateSubnetIds": self.private_subnet_ids})

    def _create(self, name: str, args: NetworkArgs) -> None:
        child = pulumi.ResourceOptions(parent=self)
        region = args.availability_zones[0][:-1]
        cluster_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}

        def tags(extra: dict[str, str], label: str) -> dict[str, str]:
            return {**args.tags, **extra, "Name": f"{args.cluster_name}-{label}"}

        vpc = aws.ec2.Vpc(
            f"{name}-vpc", cidr_block=args.vpc_cidr,
            # Interface endpoints with private DNS need both.
            enable_dns_support=True, enable_dns_hostnames=True,
            tags=tags({}, "vpc"), opts=child,
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags({}, "igw"), opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=tags({}, "public"), opts=child,
        )

        private_subnets, public_subnets, private_rts = [], [], []
        for zone, (private_cidr, public_cidr) in zip(args.availability_zones,
                                                     subnet_cidrs(args.vpc_cidr, len(args.availability_zones))):
            public = aws.ec2.Subnet(
                f"{name}-public-{zone}", vpc_id=vpc.id, availability_zone=zone, cidr_block=public_cidr,
                map_public_ip_on_launch=False,
                tags=tags({**cluster_tag, "kubernetes.io/role/elb": "1"}, f"public-{zone}"), opts=child,
            )
            aws.ec2.RouteTableAssociation(f"{name}-public-{zone}", subnet_id=public.id,
                                          route_table_id=public_rt.id, opts=child)
            eip = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags=tags({}, f"nat-{zone}"), opts=child)
            # One NAT per zone: losing a zone does not cut the others' egress.
            nat = aws.ec2.NatGateway(f"{name}-nat-{zone}", subnet_id=public.id, allocation_id=eip.id,
                                     tags=tags({}, f"nat-{zone}"),
                                     opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]))
            private = aws.ec2.Subnet(
                f"{name}-private-{zone}", vpc_id=vpc.id, availability_zone=zone, cidr_block=private_cidr,
                map_public_ip_on_launch=False,
                tags=tags({**cluster_tag, "kubernetes.io/role/internal-elb": "1"}, f"private-{zone}"), opts=child,
            )
            rt = aws.ec2.RouteTable(
                f"{name}-private-{zone}", vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags=tags({}, f"private-{zone}"), opts=child,
            )
            aws.ec2.RouteTableAssociation(f"{name}-private-{zone}", subnet_id=private.id,
                                          route_table_id=rt.id, opts=child)
            private_subnets.append(private)
            public_subnets.append(public)
            private_rts.append(rt)

        aws.ec2.VpcEndpoint(
            f"{name}-s3", vpc_id=vpc.id, service_name=f"com.amazonaws.{region}.s3",
            vpc_endpoint_type="Gateway", route_table_ids=[rt.id for rt in private_rts],
            tags=tags({}, "s3"), opts=child,
        )
        endpoint_sg = aws.ec2.SecurityGroup(
            f"{name}-endpoints", vpc_id=vpc.id,
            description="HTTPS from inside the VPC to the ECR interface endpoints",
            ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=443, to_port=443,
                                                      cidr_blocks=[args.vpc_cidr])],
            tags=tags({}, "endpoints"), opts=child,
        )
        for service in ECR_INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"{name}-{service.replace('.', '-')}", vpc_id=vpc.id,
                service_name=f"com.amazonaws.{region}.{service}", vpc_endpoint_type="Interface",
                private_dns_enabled=True, subnet_ids=[s.id for s in private_subnets],
                security_group_ids=[endpoint_sg.id], tags=tags({}, service), opts=child,
            )

        self.vpc_id = vpc.id
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private_subnets])
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public_subnets])
