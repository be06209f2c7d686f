"""The compute and cost rules, on every resource type that launches instances: one good, one bad each."""

from __future__ import annotations

import pulumi
import pytest

from _policy_helpers import POLICIES, resource, stack_violations, violations

LT = "aws:ec2/launchTemplate:LaunchTemplate"
LC = "aws:ec2/launchConfiguration:LaunchConfiguration"
INSTANCE = "aws:ec2/instance:Instance"
SPOT = "aws:ec2/spotInstanceRequest:SpotInstanceRequest"
SPOT_FLEET = "aws:ec2/spotFleetRequest:SpotFleetRequest"
FLEET = "aws:ec2/fleet:Fleet"
ASG = "aws:autoscaling/group:Group"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
MANAGED = "eks:index:ManagedNodeGroup"
NODE_GROUP_V2 = "eks:index:NodeGroupV2"
EKS = "eks:index:Cluster"
BATCH = "aws:batch/computeEnvironment:ComputeEnvironment"
VOLUME = "aws:ebs/volume:Volume"

IMDS = {"httpTokens": "required", "httpPutResponseHopLimit": 1}
GOOD_LT = {
    "imageId": "ami-0123456789abcdef0", "instanceType": "m7i.large",
    "metadataOptions": {**IMDS, "httpEndpoint": "enabled"},
    "blockDeviceMappings": [
        {"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "volumeType": "gp3", "volumeSize": 100}},
        {"deviceName": "/dev/xvdb", "ebs": {"encrypted": "true", "volumeType": "gp3", "volumeInitializationRate": 300}},
    ],
    "networkInterfaces": [{"associatePublicIpAddress": "false", "securityGroups": ["sg-1"]}],
}
GOOD_INSTANCE = {"ami": "ami-0123456789abcdef0", "instanceType": "m7i.large", "associatePublicIpAddress": False,
                 "metadataOptions": IMDS, "rootBlockDevice": {"encrypted": True, "volumeSize": 50}}
GOOD_LC = {"imageId": "ami-1", "instanceType": "m7i.large", "metadataOptions": IMDS, "associatePublicIpAddress": False,
           "rootBlockDevice": {"encrypted": True, "volumeSize": 50}}
GOOD_NODE_GROUP = {"clusterName": "kiln", "instanceTypes": ["m7i.large"], "launchTemplate": {"id": "lt-1", "version": "1"},
                   "scalingConfig": {"minSize": 0, "maxSize": 3, "desiredSize": 1}}
GOOD_COMPONENT = {"instanceType": "m7i.large", "nodeAssociatePublicIpAddress": False, "nodeRootVolumeEncrypted": True,
                  "maxSize": 3}
GOOD_BATCH = {"type": "MANAGED", "computeResources": {"type": "EC2", "maxVcpus": 16, "instanceTypes": ["c7i.large"],
                                                       "launchTemplate": {"launchTemplateId": "lt-1"}}}
COMPUTE = ("compute-imdsv2-required", "compute-ebs-encrypted", "compute-no-public-ip", "compute-no-ssh-access")
GOOD = [(LT, GOOD_LT), (LC, GOOD_LC), (INSTANCE, GOOD_INSTANCE), (SPOT, GOOD_INSTANCE), (NODE_GROUP, GOOD_NODE_GROUP),
        (MANAGED, GOOD_NODE_GROUP), (NODE_GROUP_V2, GOOD_COMPONENT), (BATCH, GOOD_BATCH),
        (VOLUME, {"size": 100, "encrypted": True}), (EKS, {"skipDefaultNodeGroup": True}),
        (SPOT_FLEET, {"launchTemplateConfigs": [{"launchTemplateSpecification": {"id": "lt-1"}}], "targetCapacity": 2})]


@pytest.mark.parametrize("type_, props", GOOD, ids=[t for t, _ in GOOD])
def test_good_launchers_pass_every_compute_and_cost_rule(type_, props):
    for name in (*COMPUTE, "cost-instance-families-allowed", "cost-volume-size-bounds"):
        assert violations(name, type_, props) == [], name


# (id, type, props, policy, message fragment)
BAD = [
    ("lt-imdsv1", LT, {**GOOD_LT, "metadataOptions": {**IMDS, "httpTokens": "optional"}},
     "compute-imdsv2-required", "metadataOptions.httpTokens must be 'required'"),
    ("lt-hop-limit", LT, {**GOOD_LT, "metadataOptions": {**IMDS, "httpPutResponseHopLimit": 3}},
     "compute-imdsv2-required", "httpPutResponseHopLimit is 3; at most 2 allowed"),
    ("lt-no-metadata-options", LT, {"imageId": "ami-1"}, "compute-imdsv2-required", "metadataOptions is not set"),
    ("lt-hop-limit-unset", LT, {**GOOD_LT, "metadataOptions": {"httpTokens": "required"}},
     "compute-imdsv2-required", "httpPutResponseHopLimit must be set"),
    ("lt-unencrypted", LT, {**GOOD_LT, "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSize": 20}}]},
     "compute-ebs-encrypted", "EBS volume /dev/xvda is not encrypted"),
    ("lt-public", LT, {**GOOD_LT, "networkInterfaces": [{"associatePublicIpAddress": "true"}]},
     "compute-no-public-ip", "networkInterfaces[0].associatePublicIpAddress must not be true"),
    ("lt-key", LT, {**GOOD_LT, "keyName": "ops"}, "compute-no-ssh-access", "keyName is 'ops'"),
    ("lc-imdsv1", LC, {**GOOD_LC, "metadataOptions": None}, "compute-imdsv2-required", "metadataOptions is not set"),
    ("lc-root-unset", LC, {**GOOD_LC, "rootBlockDevice": None}, "compute-ebs-encrypted", "rootBlockDevice is not set"),
    ("lc-public", LC, {**GOOD_LC, "associatePublicIpAddress": True}, "compute-no-public-ip", "associatePublicIpAddress"),
    ("lc-key", LC, {**GOOD_LC, "keyName": "ops"}, "compute-no-ssh-access", "keyName"),
    ("instance-imdsv1", INSTANCE, {**GOOD_INSTANCE, "metadataOptions": {**IMDS, "httpTokens": "optional"}},
     "compute-imdsv2-required", "httpTokens must be 'required'"),
    ("instance-hop-64", INSTANCE, {**GOOD_INSTANCE, "metadataOptions": {**IMDS, "httpPutResponseHopLimit": 64}},
     "compute-imdsv2-required", "is 64; at most 2"),
    ("instance-root-unencrypted", INSTANCE, {**GOOD_INSTANCE, "rootBlockDevice": {"encrypted": False}},
     "compute-ebs-encrypted", "rootBlockDevice.encrypted must be true"),
    ("instance-root-default", INSTANCE, {**GOOD_INSTANCE, "rootBlockDevice": None},
     "compute-ebs-encrypted", "rootBlockDevice is not set"),
    ("instance-data-volume", INSTANCE, {**GOOD_INSTANCE, "ebsBlockDevices": [{"deviceName": "/dev/sdf"}]},
     "compute-ebs-encrypted", "ebsBlockDevices /dev/sdf is not encrypted"),
    ("instance-public", INSTANCE, {**GOOD_INSTANCE, "associatePublicIpAddress": True}, "compute-no-public-ip",
     "associatePublicIpAddress must not be true"),
    ("spot-key", SPOT, {**GOOD_INSTANCE, "keyName": "ops"}, "compute-no-ssh-access", "keyName is 'ops'"),
    ("node-group-ssh", NODE_GROUP, {**GOOD_NODE_GROUP, "remoteAccess": {"ec2SshKey": "ops"}},
     "compute-no-ssh-access", "remoteAccess opens SSH"),
    ("node-group-no-template-imds", NODE_GROUP, {**GOOD_NODE_GROUP, "launchTemplate": None},
     "compute-imdsv2-required", "EKS's default launch template allows IMDSv1"),
    ("node-group-no-template-ebs", NODE_GROUP, {**GOOD_NODE_GROUP, "launchTemplate": None},
     "compute-ebs-encrypted", "does not encrypt"),
    ("managed-node-group-ssh", MANAGED, {**GOOD_NODE_GROUP, "remoteAccess": {"ec2SshKey": "ops"}},
     "compute-no-ssh-access", "remoteAccess"),
    ("component-public-by-default", NODE_GROUP_V2, {**GOOD_COMPONENT, "nodeAssociatePublicIpAddress": None},
     "compute-no-public-ip", "nodeAssociatePublicIpAddress must be false"),
    ("component-unencrypted-by-default", NODE_GROUP_V2, {**GOOD_COMPONENT, "nodeRootVolumeEncrypted": None},
     "compute-ebs-encrypted", "nodeRootVolumeEncrypted must be true"),
    ("component-ssh", NODE_GROUP_V2, {**GOOD_COMPONENT, "nodePublicKey": "ssh-ed25519 AAAA"},
     "compute-no-ssh-access", "nodePublicKey"),
    ("cluster-default-node-group", EKS, {"skipDefaultNodeGroup": False}, "compute-imdsv2-required",
     "skipDefaultNodeGroup is not true"),
    ("cluster-default-node-group-public", EKS, {}, "compute-no-public-ip", "nodeAssociatePublicIpAddress"),
    ("batch-key", BATCH, {**GOOD_BATCH, "computeResources": {**GOOD_BATCH["computeResources"], "ec2KeyPair": "ops"}},
     "compute-no-ssh-access", "ec2KeyPair"),
    ("batch-no-template", BATCH, {**GOOD_BATCH, "computeResources": {"type": "SPOT", "maxVcpus": 4}},
     "compute-imdsv2-required", "no launchTemplate"),
    ("batch-no-template-ebs", BATCH, {**GOOD_BATCH, "computeResources": {"type": "EC2", "maxVcpus": 4}},
     "compute-ebs-encrypted", "no launchTemplate"),
    ("spot-fleet-specs", SPOT_FLEET, {"launchSpecifications": [{"instanceType": "m7i.large", "keyName": "ops",
                                                                "associatePublicIpAddress": True}]},
     "compute-imdsv2-required", "launchSpecifications cannot require IMDSv2"),
    ("spot-fleet-specs-ssh", SPOT_FLEET, {"launchSpecifications": [{"instanceType": "m7i.large", "keyName": "ops"}]},
     "compute-no-ssh-access", "launchSpecifications[0].keyName"),
    ("spot-fleet-specs-public", SPOT_FLEET, {"launchSpecifications": [{"instanceType": "m7i.large",
                                                                       "associatePublicIpAddress": True}]},
     "compute-no-public-ip", "launchSpecifications[0].associatePublicIpAddress"),
    ("spot-fleet-specs-ebs", SPOT_FLEET, {"launchSpecifications": [{"instanceType": "m7i.large",
                                                                    "rootBlockDevices": [{"volumeSize": 8}]}]},
     "compute-ebs-encrypted", "launchSpecifications[0] has an unencrypted"),
    ("volume", VOLUME, {"size": 100}, "compute-ebs-encrypted", "encrypted must be true"),
    # cost
    ("family-instance", INSTANCE, {**GOOD_INSTANCE, "instanceType": "p5.48xlarge"}, "cost-instance-families-allowed",
     "instanceType is 'p5.48xlarge'"),
    ("family-lt-requirements", LT, {**GOOD_LT, "instanceType": None, "instanceRequirements": {"vcpuCount": {"min": 2}}},
     "cost-instance-families-allowed", "instanceRequirements lets EC2 pick"),
    ("family-asg-override", ASG, {"mixedInstancesPolicy": {"launchTemplate": {"overrides": [
        {"instanceType": "m7i.large"}, {"instanceType": "x2iedn.32xlarge"}]}}},
     "cost-instance-families-allowed", "overrides[1].instanceType is 'x2iedn.32xlarge'"),
    ("family-node-group", NODE_GROUP, {**GOOD_NODE_GROUP, "instanceTypes": ["p4d.24xlarge"]},
     "cost-instance-families-allowed", "instanceTypes[0]"),
    ("family-batch", BATCH, {**GOOD_BATCH, "computeResources": {**GOOD_BATCH["computeResources"],
                                                              "instanceTypes": ["optimal"]}},
     "cost-instance-families-allowed", "'optimal'"),
    ("family-fleet", FLEET, {"launchTemplateConfigs": [{"overrides": [{"instanceRequirements": {}}]}]},
     "cost-instance-families-allowed", "instanceRequirements"),
    ("family-cluster-default", EKS, {}, "cost-instance-families-allowed", "'t2.medium'"),
    ("volume-too-big", LT, {**GOOD_LT, "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {
        "encrypted": "true", "volumeSize": 4096}}]}, "cost-volume-size-bounds", "is 4096 GiB; volumes must be 20-1024"),
    ("volume-too-small", INSTANCE, {**GOOD_INSTANCE, "rootBlockDevice": {"encrypted": True, "volumeSize": 8}},
     "cost-volume-size-bounds", "rootBlockDevice.volumeSize is 8 GiB"),
    ("volume-ebs", VOLUME, {"size": 2000, "encrypted": True}, "cost-volume-size-bounds", "size is 2000 GiB"),
    ("volume-node-group-disk", NODE_GROUP, {**GOOD_NODE_GROUP, "diskSize": 5000}, "cost-volume-size-bounds", "diskSize"),
    ("volume-component", NODE_GROUP_V2, {**GOOD_COMPONENT, "nodeRootVolumeSize": 5000}, "cost-volume-size-bounds",
     "nodeRootVolumeSize"),
]


@pytest.mark.parametrize("type_, props, policy, fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_flaw_is_reported_by_its_rule(type_, props, policy, fragment):
    found = violations(policy, type_, props)
    assert any(fragment in m for m in found), found


def test_a_template_decides_for_an_instance_that_launches_from_it():
    from_template = {"launchTemplate": {"id": "lt-1"}, "instanceType": "m7i.large"}
    assert violations("compute-imdsv2-required", INSTANCE, from_template) == []
    assert violations("compute-ebs-encrypted", INSTANCE, from_template) == []
    # ... unless it overrides the template's settings itself.
    assert len(violations("compute-imdsv2-required", INSTANCE,
                          {**from_template, "metadataOptions": {"httpTokens": "optional"}})) == 2


def test_settings_are_configurable():
    hop3 = {**GOOD_LT, "metadataOptions": {**IMDS, "httpPutResponseHopLimit": 3}}
    assert violations("compute-imdsv2-required", LT, hop3, config={"maxHopLimit": 3}) == []
    p5 = {**GOOD_INSTANCE, "instanceType": "p5.48xlarge"}
    assert violations("cost-instance-families-allowed", INSTANCE, p5, config={"allowedFamilies": ["p5"]}) == []
    assert violations("cost-instance-families-allowed", INSTANCE, p5, config={"allowedFamilies": ["p*"]}) == []
    assert len(violations("cost-instance-families-allowed", INSTANCE, GOOD_INSTANCE, config={"allowedFamilies": ["c7i"]})) == 1
    big = {**GOOD_INSTANCE, "rootBlockDevice": {"encrypted": True, "volumeSize": 2000}}
    assert violations("cost-volume-size-bounds", INSTANCE, big, config={"maxVolumeSizeGiB": 2000}) == []
    assert len(violations("cost-volume-size-bounds", INSTANCE, GOOD_INSTANCE, config={"minVolumeSizeGiB": 51})) == 1


# --------------------------------------------------------------------------- templates the pack can see


def template(name, id_, lt_name=None):
    return resource(LT, name, {**GOOD_LT, "id": id_, **({"name": lt_name} if lt_name else {})})


def test_launch_templates_must_be_declared_in_the_stack():
    declared = template("lt", "lt-1", "nodes")
    by_id = resource(ASG, "a", {"launchTemplate": {"id": "lt-1", "version": "1"}})
    by_name = resource(NODE_GROUP, "ng", {"launchTemplate": {"name": "nodes", "version": "1"}})
    mixed = resource(ASG, "m", {"mixedInstancesPolicy": {"launchTemplate": {
        "launchTemplateSpecification": {"launchTemplateId": "lt-1"},
        "overrides": [{"instanceType": "m7i.large", "launchTemplateSpecification": {"launchTemplateName": "nodes"}}]}}})
    assert stack_violations("compute-launch-template-declared", [declared, by_id, by_name, mixed]) == []
    foreign = [
        resource(ASG, "a2", {"launchTemplate": {"id": "lt-0123456789abcdef0"}}),
        resource(ASG, "lc", {"launchConfiguration": "hand-made"}),
        resource(INSTANCE, "i", {"launchTemplate": {"name": "elsewhere"}}),
        resource(FLEET, "f", {"launchTemplateConfigs": [{"launchTemplateSpecification": {"launchTemplateId": "lt-9"}}]}),
        resource(SPOT_FLEET, "sf", {"launchTemplateConfigs": [{"launchTemplateSpecification": {"id": "lt-9"}}]}),
        resource(BATCH, "b", {"computeResources": {"type": "EC2", "launchTemplate": {"launchTemplateName": "x"}}}),
        resource(ASG, "empty", {"launchTemplate": {"version": "1"}}),
    ]
    found = stack_violations("compute-launch-template-declared", [declared, *foreign], with_urns=True)
    assert sorted(urn.rsplit("::", 1)[1] for _, urn in found) == sorted(r.name for r in foreign)
    lc = resource(LC, "hand", {**GOOD_LC, "name": "hand-made", "id": "hand-made"})
    assert stack_violations("compute-launch-template-declared", [lc, foreign[1]]) == []


def test_a_template_id_unknown_during_preview_defers_the_rule():
    from pulumi_policy.proxy import UnknownValueError
    asg = resource(ASG, "a", {"launchTemplate": {"id": pulumi.runtime.rpc.UNKNOWN, "version": "1"}})
    with pytest.raises(UnknownValueError):
        stack_violations("compute-launch-template-declared", [template("lt", "lt-1"), asg])


# --------------------------------------------------------------------------- node counts


def asg(name, max_size, group=None):
    tags = [{"key": "kiln.dev/node-group", "value": group}] if group else []
    return resource(ASG, name, {"maxSize": max_size, "tags": tags})


def test_nodes_per_group_add_up_over_a_groups_zonal_asgs():
    zones = [asg(f"gpu-{z}", 40, "gpu") for z in "abc"]
    found = stack_violations("cost-max-nodes-per-group", zones, with_urns=True)
    assert len(found) == 3 and all("node group 'gpu' may grow to 120 nodes" in m for m, _ in found)
    assert stack_violations("cost-max-nodes-per-group", zones[:2]) == []
    assert stack_violations("cost-max-nodes-per-group", zones, config={"maxNodesPerGroup": 120}) == []
    # Untagged ASGs are groups of their own; other launchers count by their own maximum.
    assert stack_violations("cost-max-nodes-per-group", [asg("a", 60), asg("b", 60)]) == []
    others = [resource(NODE_GROUP, "ng", {"scalingConfig": {"maxSize": 101}}),
              resource(SPOT_FLEET, "sf", {"targetCapacity": 101}),
              resource(FLEET, "f", {"targetCapacitySpecification": {"totalTargetCapacity": 101}}),
              resource(NODE_GROUP_V2, "v2", {"maxSize": 101})]
    assert len(stack_violations("cost-max-nodes-per-group", others)) == 4


def test_nodes_per_stack_blame_the_largest_contributor():
    fleet = [asg(f"g{i}", 90, f"group-{i}") for i in range(3)] + [asg("big", 95, "big"),
                                                                  resource(INSTANCE, "one", GOOD_INSTANCE)]
    found = stack_violations("cost-max-nodes-per-stack", fleet, with_urns=True)
    assert len(found) == 1 and found[0][1].endswith("::big")
    assert "the stack may grow to 366 nodes, the most (95)" in found[0][0]
    assert stack_violations("cost-max-nodes-per-stack", fleet, config={"maxNodesPerStack": 366}) == []


def test_every_compute_and_cost_rule_is_mandatory():
    for name in (*COMPUTE, "compute-launch-template-declared", "cost-max-nodes-per-group", "cost-max-nodes-per-stack",
                 "cost-instance-families-allowed", "cost-volume-size-bounds"):
        assert POLICIES[name].enforcement_level.value == "mandatory", name


# --------------------------------------------------------------------------- review of issue 14: what got through

import base64  # noqa: E402
import gzip  # noqa: E402

from pulumi_policy.proxy import UnknownValueError  # noqa: E402

from _policy_helpers import UNKNOWN  # noqa: E402

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE attacker@example"


@pytest.mark.parametrize("type_, props, fragment", [
    (INSTANCE, {**GOOD_INSTANCE, "associatePublicIpAddress": None}, "associatePublicIpAddress is not set"),
    (LC, {**GOOD_LC, "associatePublicIpAddress": None}, "associatePublicIpAddress is not set"),
    (LT, {**GOOD_LT, "networkInterfaces": None}, "networkInterfaces is not set"),
    (LT, {**GOOD_LT, "networkInterfaces": [{"securityGroups": ["sg-1"]}]}, "networkInterfaces[0].associatePublicIpAddress is not set"),
    ("aws:ec2/subnet:Subnet", {"cidrBlock": "10.0.0.0/24", "mapPublicIpOnLaunch": True}, "mapPublicIpOnLaunch"),
    ("aws:ec2/defaultSubnet:DefaultSubnet", {"availabilityZone": "us-east-2a"}, "mapPublicIpOnLaunch"),
    ("aws:ec2/eip:Eip", {"domain": "vpc", "instance": "i-1"}, "Elastic IP"),
    ("aws:ec2/eipAssociation:EipAssociation", {"networkInterfaceId": "eni-1", "allocationId": "eipalloc-1"}, "Elastic IP"),
    (SPOT_FLEET, {"launchSpecifications": [{"instanceType": "m7i.large"}]}, "associatePublicIpAddress must be false"),
])
def test_a_public_ip_left_to_the_subnet_is_a_public_ip(type_, props, fragment):
    found = violations("compute-no-public-ip", type_, props)
    assert any(fragment in m for m in found), found


def test_what_gets_no_public_ip():
    for type_, props in (("aws:ec2/subnet:Subnet", {"cidrBlock": "10.0.0.0/24", "mapPublicIpOnLaunch": False}),
                         ("aws:ec2/subnet:Subnet", {"cidrBlock": "10.0.0.0/24"}),
                         ("aws:ec2/defaultSubnet:DefaultSubnet", {"mapPublicIpOnLaunch": False}),
                         ("aws:ec2/eip:Eip", {"domain": "vpc"}),  # a NAT gateway's
                         (INSTANCE, {**GOOD_INSTANCE, "associatePublicIpAddress": None,
                                     "launchTemplate": {"id": "lt-1"}})):  # the template decides
        assert violations("compute-no-public-ip", type_, props) == [], (type_, props)


@pytest.mark.parametrize("type_, key, user_data", [
    (INSTANCE, "userData", f"#!/bin/bash\necho '{KEY}' >> /home/ec2-user/.ssh/authorized_keys\n"),
    (INSTANCE, "userData", f"#cloud-config\nssh_authorized_keys:\n  - {KEY}\n"),
    (INSTANCE, "userData", "#cloud-config\nssh_pwauth: true\nchpasswd: {expire: false}\n"),
    (INSTANCE, "userDataBase64", base64.b64encode(f"#!/bin/sh\necho {KEY} > /root/.ssh/authorized_keys".encode()).decode()),
    (LT, "userData", base64.b64encode(f"#cloud-config\nssh_authorized_keys: [{KEY}]".encode()).decode()),
    (LT, "userData", base64.b64encode(gzip.compress(b"#!/bin/sh\nsed -i s/no/yes/ /etc/ssh/sshd_config\n"
                                                    b"echo PasswordAuthentication yes >> /etc/ssh/sshd_config")).decode()),
    (LC, "userData", f"#!/bin/sh\necho '{KEY}' >> ~/.ssh/authorized_keys"),
])
def test_user_data_that_lets_ssh_in(type_, key, user_data):
    good = {INSTANCE: GOOD_INSTANCE, LT: GOOD_LT, LC: GOOD_LC}[type_]
    found = violations("compute-no-ssh-access", type_, {**good, key: user_data})
    assert len(found) == 1 and f"{key} sets up SSH logins" in found[0]


def test_kiln_node_user_data_is_not_ssh():
    from infra import userdata
    rendered = userdata.render(cluster_name="kiln", endpoint="https://x.eks.amazonaws.com", certificate_authority="Q0E=",
                               service_cidr="172.20.0.0/16", model_version="v5", group="general", extra_labels={},
                               taints=[], model_device="/dev/xvdb", model_path="/opt/models", accelerator=None)
    b64 = base64.b64encode(rendered.encode()).decode()
    assert violations("compute-no-ssh-access", LT, {**GOOD_LT, "userData": b64}) == []


def test_user_data_not_known_during_preview_is_reported_after_the_rest():
    found: list = []
    args = __import__("pulumi_policy").ResourceValidationArgs(
        LT, __import__("_policy_helpers")._props({**GOOD_LT, "keyName": "ops", "userData": UNKNOWN}), "urn:x", "x",
        __import__("_policy_helpers")._opts(), None, {})
    with pytest.raises(UnknownValueError):
        POLICIES["compute-no-ssh-access"].validate(args, lambda m, urn=None: found.append(m))
    assert len(found) == 1 and "keyName" in found[0]


@pytest.mark.parametrize("type_, props", [
    ("aws:ebs/encryptionByDefault:EncryptionByDefault", {"enabled": False}),
    ("aws:ebs/snapshotCopy:SnapshotCopy", {"sourceSnapshotId": "snap-1", "sourceRegion": "us-east-2"}),
    ("aws:ec2/amiCopy:AmiCopy", {"sourceAmiId": "ami-1", "sourceAmiRegion": "us-east-2", "encrypted": False}),
])
def test_encryption_switched_off_or_left_off(type_, props):
    assert len(violations("compute-ebs-encrypted", type_, props)) == 1
    on = {**props, "enabled": True} if "enabled" in props else {**props, "encrypted": True}
    assert violations("compute-ebs-encrypted", type_, on) == []


def test_fractional_weights_warm_pools_and_batch_count_as_nodes():
    lt = {"launchTemplateSpecification": {"id": "lt-1"}}
    spot = resource(SPOT_FLEET, "sf", {"targetCapacity": 10, "launchTemplateConfigs": [
        {**lt, "overrides": [{"instanceType": "m7i.large", "weightedCapacity": 0.05}]}]})
    fleet = resource(FLEET, "f", {"targetCapacitySpecification": {"totalTargetCapacity": 10}, "launchTemplateConfigs": [
        {**lt, "overrides": [{"instanceType": "m7i.large", "weightedCapacity": 0.05}]}]})
    warm = resource(ASG, "warm", {"maxSize": 3, "warmPool": {"maxGroupPreparedCapacity": 500, "minSize": 1}})
    batch = resource(BATCH, "b", {"computeResources": {"type": "SPOT", "maxVcpus": 4096}})
    found = stack_violations("cost-max-nodes-per-group", [spot, fleet, warm, batch], with_urns=True)
    assert sorted(u.rsplit("::", 1)[1] for _, u in found) == ["b", "f", "sf", "warm"]
    assert any("may grow to 200 nodes" in m for m, _ in found)  # 10 / 0.05
    whole = resource(SPOT_FLEET, "sf2", {"targetCapacity": 10, "launchTemplateConfigs": [
        {**lt, "overrides": [{"instanceType": "m7i.large", "weightedCapacity": 2}]}]})
    assert stack_violations("cost-max-nodes-per-group", [whole, asg("small-warm", 3)]) == []


def test_a_node_count_not_known_during_preview_is_left_out_and_reported():
    found: list = []
    unknown = resource(ASG, "pending", {"maxSize": UNKNOWN})
    with pytest.raises(UnknownValueError):
        POLICIES["cost-max-nodes-per-group"].validate(
            __import__("pulumi_policy").StackValidationArgs([unknown, asg("huge", 500)], {"maxNodesPerGroup": 100}),
            lambda m, urn=None: found.append(urn))
    assert [u.rsplit("::", 1)[1] for u in found] == ["huge"]


@pytest.mark.parametrize("type_, props, fragment", [
    (VOLUME, {"size": 100, "encrypted": True, "type": "io2", "iops": 256000}, "iops is 256000"),
    (VOLUME, {"size": 100, "encrypted": True, "type": "gp3", "throughput": 2000}, "throughput is 2000"),
    (LT, {**GOOD_LT, "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "iops": 64000}}]},
     "blockDeviceMappings /dev/xvda ebs.iops is 64000"),
    (INSTANCE, {**GOOD_INSTANCE, "ebsBlockDevices": [{"deviceName": "/dev/sdf", "encrypted": True, "iops": 100000}]},
     "ebsBlockDevices /dev/sdf.iops is 100000"),
])
def test_provisioned_volume_performance_is_bounded(type_, props, fragment):
    found = violations("cost-volume-performance-bounds", type_, props)
    assert len(found) == 1 and fragment in found[0]
    assert violations("cost-volume-performance-bounds", type_, props, config={"maxIops": 256000,
                                                                              "maxThroughputMiBps": 4000}) == []


def test_kiln_model_volume_throughput_is_within_the_default_bound():
    assert violations("cost-volume-performance-bounds", LT, {**GOOD_LT, "blockDeviceMappings": [
        {"deviceName": "/dev/xvdb", "ebs": {"encrypted": "true", "throughput": 300, "iops": 3000}}]}) == []


def test_volume_bounds_that_allow_nothing_are_named_as_the_settings_mistake():
    found = violations("cost-volume-size-bounds", VOLUME, {"size": 100, "encrypted": True},
                       config={"minVolumeSizeGiB": 2000, "maxVolumeSizeGiB": 10})
    assert found == ["the pack's settings minVolumeSizeGiB (2000) > maxVolumeSizeGiB (10) allow no volume; "
                     "fix the policy config"]


def test_a_template_id_unknown_during_preview_is_traced_to_the_declared_template():
    lt = resource(LT, "lt", {**GOOD_LT, "id": UNKNOWN, "name": "nodes-123"})
    traced = resource(ASG, "a", {"launchTemplate": {"id": UNKNOWN, "version": UNKNOWN}},
                      property_dependencies={"launchTemplate": [lt]})
    assert stack_violations("compute-launch-template-declared", [lt, traced]) == []
    foreign = resource(ASG, "f", {"launchTemplate": {"id": "lt-0123456789abcdef0"}})
    found: list = []
    untraced = resource(ASG, "u", {"launchTemplate": {"id": UNKNOWN}})
    with pytest.raises(UnknownValueError):
        POLICIES["compute-launch-template-declared"].validate(
            __import__("pulumi_policy").StackValidationArgs([lt, traced, untraced, foreign], {}),
            lambda m, urn=None: found.append(urn))
    assert [u.rsplit("::", 1)[1] for u in found] == ["f"]
