"""Network: a new VPC per AZ with NAT and S3/ECR endpoints, or an existing VPC as given."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings, strategies as st

from _program_helpers import BASE, EXISTING_GPU_SPOT, run
from infra.network import subnet_cidrs

VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
NAT = "aws:ec2/natGateway:NatGateway"
RT = "aws:ec2/routeTable:RouteTable"
RTA = "aws:ec2/routeTableAssociation:RouteTableAssociation"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
SG = "aws:ec2/securityGroup:SecurityGroup"


def subnets(run_, kind):
    return {r.inputs["availabilityZone"]: r for r in run_.of_type(SUBNET) if f"-{kind}-" in r.name}


def test_new_vpc_has_a_public_and_a_private_subnet_in_every_zone():
    r = run(BASE)
    vpc = r.one(VPC, "network-vpc")
    assert vpc.inputs["cidrBlock"] == "10.20.0.0/16"
    assert vpc.inputs["enableDnsHostnames"] and vpc.inputs["enableDnsSupport"]   # private DNS for endpoints
    zones = BASE["kiln:availabilityZones"]
    private, public = subnets(r, "private"), subnets(r, "public")
    assert sorted(private) == sorted(public) == sorted(zones)
    blocks = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in [*private.values(), *public.values()]]
    assert all(b.subnet_of(ipaddress.ip_network("10.20.0.0/16")) for b in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    assert not any(s.inputs["mapPublicIpOnLaunch"] for s in [*private.values(), *public.values()])
    assert all(s.inputs["tags"]["kubernetes.io/role/internal-elb"] == "1" for s in private.values())


def test_private_subnets_leave_through_their_own_zones_nat():
    r = run(BASE)
    private, public = subnets(r, "private"), subnets(r, "public")
    nats = {n.inputs["subnetId"]: n for n in r.of_type(NAT)}
    assert len(nats) == len(BASE["kiln:availabilityZones"])
    for zone, subnet in private.items():
        assoc = next(a for a in r.of_type(RTA) if a.inputs["subnetId"] == subnet.id)
        table = next(t for t in r.of_type(RT) if t.id == assoc.inputs["routeTableId"])
        [route] = table.inputs["routes"]
        nat = next(n for n in r.of_type(NAT) if n.id == route["natGatewayId"])
        assert route["cidrBlock"] == "0.0.0.0/0" and nat.inputs["subnetId"] == public[zone].id


def test_public_subnets_route_to_the_internet_gateway():
    r = run(BASE)
    igw = r.one("aws:ec2/internetGateway:InternetGateway", "network-igw")
    for subnet in subnets(r, "public").values():
        assoc = next(a for a in r.of_type(RTA) if a.inputs["subnetId"] == subnet.id)
        table = next(t for t in r.of_type(RT) if t.id == assoc.inputs["routeTableId"])
        assert table.inputs["routes"] == [{"cidrBlock": "0.0.0.0/0", "gatewayId": igw.id}]


def test_image_layers_bypass_nat_through_s3_and_ecr_endpoints():
    r = run(BASE)
    network = r.one("kiln:infra:Network", "network")
    endpoints = {e.inputs["serviceName"]: e for e in r.of_type(ENDPOINT) if e.parent == network.urn}
    assert set(endpoints) == {"com.amazonaws.us-east-2.s3", "com.amazonaws.us-east-2.ecr.api",
                              "com.amazonaws.us-east-2.ecr.dkr"}
    s3 = endpoints["com.amazonaws.us-east-2.s3"]
    private_tables = {t.id for t in r.of_type(RT) if "-private-" in t.name}
    assert s3.inputs["vpcEndpointType"] == "Gateway" and set(s3.inputs["routeTableIds"]) == private_tables
    private_ids = {s.id for s in subnets(r, "private").values()}
    for name in ("ecr.api", "ecr.dkr"):
        ep = endpoints[f"com.amazonaws.us-east-2.{name}"]
        assert ep.inputs["vpcEndpointType"] == "Interface" and ep.inputs["privateDnsEnabled"] is True
        assert set(ep.inputs["subnetIds"]) == private_ids
        [sg_id] = ep.inputs["securityGroupIds"]
        sg = next(s for s in r.of_type(SG) if s.id == sg_id)
        assert sg.inputs["ingress"] == [{"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["10.20.0.0/16"]}]


def test_existing_vpc_creates_no_network_and_uses_the_given_subnets():
    r = run(EXISTING_GPU_SPOT)
    assert r.children_of(r.one("kiln:infra:Network", "network")) == []
    for type_ in (VPC, SUBNET, NAT, RT, ENDPOINT, "aws:ec2/internetGateway:InternetGateway"):
        assert r.of_type(type_) == [], type_
    eks = r.one("eks:index:Cluster", "cluster-eks")
    assert eks.inputs["vpcId"] == EXISTING_GPU_SPOT["kiln:vpcId"]
    assert eks.inputs["privateSubnetIds"] == EXISTING_GPU_SPOT["kiln:privateSubnetIds"]
    assert "publicSubnetIds" not in eks.inputs


@settings(max_examples=60, deadline=None)
@given(prefix=st.integers(min_value=8, max_value=20), zones=st.integers(min_value=1, max_value=8))
def test_subnet_plan_fits_the_vpc_without_overlap(prefix, zones):
    vpc = ipaddress.ip_network(f"10.0.0.0/{prefix}")
    plan = subnet_cidrs(str(vpc), zones)
    assert len(plan) == zones
    blocks = [ipaddress.ip_network(c) for pair in plan for c in pair]
    assert all(b.subnet_of(vpc) for b in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    # Pods live in the private subnets: each is at least as large as its public twin.
    assert all(ipaddress.ip_network(p).num_addresses >= ipaddress.ip_network(q).num_addresses for p, q in plan)
