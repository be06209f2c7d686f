"""The cost, ECR, security-group and stack rules (and the property helpers they share), each decision with its
exact result: the violation messages an operator reads, and the URNs stack policies blame.

Written against the survivors of a mutmut run on ``policies/rules/{cost,ecr,security_groups,stack,_props}.py``
(issue 15): every test crafts resources around one decision — thresholds at and around the limit, strings
against booleans, lists against scalars, missing keys, values not known during a preview — and calls the rules
through the pack as the SDK does (tests/_policy_helpers.py). Equivalent mutants (no input tells them apart) are
listed with a reason in tests/mutation/equivalent.txt.
"""

from __future__ import annotations

import json

import pulumi
import pytest
from pulumi_policy import StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

from _policy_helpers import POLICIES, UNKNOWN, resource, stack_violations, violations
from policies.pack import config_defaults
from policies.program import config_to_pulumi
from policies.rules import _props

LT = "aws:ec2/launchTemplate:LaunchTemplate"
LC = "aws:ec2/launchConfiguration:LaunchConfiguration"
INSTANCE = "aws:ec2/instance:Instance"
SPOT_INSTANCE = "aws:ec2/spotInstanceRequest:SpotInstanceRequest"
SPOT_FLEET = "aws:ec2/spotFleetRequest:SpotFleetRequest"
FLEET = "aws:ec2/fleet:Fleet"
ASG = "aws:autoscaling/group:Group"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
MANAGED_NODE_GROUP = "eks:index:ManagedNodeGroup"
SELF_MANAGED = ("eks:index:NodeGroup", "eks:index:NodeGroupV2")
CLUSTER = "eks:index:Cluster"
BATCH = "aws:batch/computeEnvironment:ComputeEnvironment"
VOLUME = "aws:ebs/volume:Volume"


def urn_names(found):
    return [(message, urn.rsplit("::", 1)[1]) for message, urn in found]


def judged_with_unknowns(policy, resources, config=None):
    """A stack policy run over a preview: the (message, resource name) it reported before raising the SDK's
    UnknownValueError (which must be raised)."""
    p = POLICIES[policy]
    found: list = []
    with pytest.raises(UnknownValueError):
        p.validate(StackValidationArgs(resources, {**config_defaults(p), **(config or {})}),
                   lambda message, urn=None: found.append((message, urn and urn.rsplit("::", 1)[1])))
    return found


# =========================================================================== cost-instance-families-allowed

FAMILIES = "cost-instance-families-allowed"
SHORT = {"allowedFamilies": ["m7i", "g5"]}
REFUSED = "whose family is not in allowedFamilies (m7i, g5)"
BY_ATTRIBUTES = "lets EC2 pick instance types by attributes, which may be any family; list the instance types"


@pytest.mark.parametrize("type_", [LT, LC, INSTANCE, SPOT_INSTANCE])
def test_families_of_a_launcher_with_an_instance_type(type_):
    assert violations(FAMILIES, type_, {"instanceType": "m7i.large"}, config=SHORT) == []
    assert violations(FAMILIES, type_, {"instanceType": "p5.48xlarge"}, config=SHORT) == [
        f"instanceType is 'p5.48xlarge', {REFUSED}"]
    assert violations(FAMILIES, type_, {"instanceRequirements": {"vcpuCount": {"min": 2}}}, config=SHORT) == [
        f"instanceRequirements {BY_ATTRIBUTES}"]
    # an empty requirements block still hands the choice to EC2; a type and requirements are both judged
    assert violations(FAMILIES, type_, {"instanceType": "c5.large", "instanceRequirements": {}}, config=SHORT) == [
        f"instanceType is 'c5.large', {REFUSED}", f"instanceRequirements {BY_ATTRIBUTES}"]
    assert violations(FAMILIES, type_, {"instanceType": ""}, config=SHORT) == []  # nothing launched by that key


def test_families_match_patterns_case_sensitively_and_any_pattern_is_enough():
    assert violations(FAMILIES, INSTANCE, {"instanceType": "g5.xlarge"}, config=SHORT) == []  # the second pattern
    assert violations(FAMILIES, INSTANCE, {"instanceType": "p5.48xlarge"}, config={"allowedFamilies": ["p*"]}) == []
    assert violations(FAMILIES, INSTANCE, {"instanceType": "M7I.large"}, config=SHORT) == [
        f"instanceType is 'M7I.large', {REFUSED}"]
    assert violations(FAMILIES, INSTANCE, {"instanceType": "m7i-flex.large"}, config=SHORT) == [
        f"instanceType is 'm7i-flex.large', {REFUSED}"]


def test_families_default_list_is_named_in_the_message():
    from policies.rules.cost import DEFAULT_FAMILIES
    assert violations(FAMILIES, INSTANCE, {"instanceType": "m7i.large"}) == []
    assert violations(FAMILIES, INSTANCE, {"instanceType": "p4d.24xlarge"}) == [
        f"instanceType is 'p4d.24xlarge', whose family is not in allowedFamilies ({', '.join(DEFAULT_FAMILIES)})"]


def test_an_instance_type_that_is_not_a_string_is_refused():
    assert violations(FAMILIES, NODE_GROUP, {"instanceTypes": [5]}, config=SHORT) == [
        f"instanceTypes[0] is 5, {REFUSED}"]


def test_families_of_an_asg_mixed_instances_policy():
    overrides = [{"instanceType": "m7i.large"}, {"instanceType": "x2iedn.32xlarge"},
                 {"instanceRequirements": {"vcpuCount": {"min": 2}}}, {"instanceType": ""}, "not-a-mapping"]
    props = {"mixedInstancesPolicy": {"launchTemplate": {"overrides": overrides}}}
    assert violations(FAMILIES, ASG, props, config=SHORT) == [
        f"mixedInstancesPolicy.launchTemplate.overrides[1].instanceType is 'x2iedn.32xlarge', {REFUSED}",
        f"mixedInstancesPolicy.launchTemplate.overrides[2].instanceRequirements {BY_ATTRIBUTES}"]
    assert violations(FAMILIES, ASG, {"instanceType": "p5.48xlarge"}, config=SHORT) == []  # not an ASG field


@pytest.mark.parametrize("type_", [NODE_GROUP, MANAGED_NODE_GROUP])
def test_families_of_an_eks_node_group(type_):
    assert violations(FAMILIES, type_, {"instanceTypes": ["m7i.large", "p4d.24xlarge", "g5.xlarge"]},
                      config=SHORT) == [f"instanceTypes[1] is 'p4d.24xlarge', {REFUSED}"]
    assert violations(FAMILIES, type_, {"instanceTypes": "p4d.24xlarge"}, config=SHORT) == [
        f"instanceTypes[0] is 'p4d.24xlarge', {REFUSED}"]
    assert violations(FAMILIES, type_, {}, config=SHORT) == []


def test_families_of_a_batch_compute_environment_on_ec2_or_spot_only():
    for kind in ("EC2", "SPOT", "spot"):
        props = {"computeResources": {"type": kind, "instanceTypes": ["optimal", "m7i.large"]}}
        assert violations(FAMILIES, BATCH, props, config=SHORT) == [
            f"computeResources.instanceTypes[0] is 'optimal', {REFUSED}"]
    fargate = {"computeResources": {"type": "FARGATE", "instanceTypes": ["optimal"]}}
    assert violations(FAMILIES, BATCH, fargate, config=SHORT) == []


@pytest.mark.parametrize("type_", [FLEET, SPOT_FLEET])
def test_families_of_a_fleet(type_):
    props = {"launchSpecifications": [{"instanceType": "m7i.large"}, {"instanceType": "p5.48xlarge"}, {}],
             "launchTemplateConfigs": [
                 {"overrides": [{"instanceType": "g5.xlarge"}]},
                 {"overrides": [{"instanceType": "m7i.large"}, {"instanceType": "p4d.24xlarge"},
                                {"instanceRequirements": {}}, {"instanceType": ""}]}]}
    assert violations(FAMILIES, type_, props, config=SHORT) == [
        f"launchSpecifications[1].instanceType is 'p5.48xlarge', {REFUSED}",
        f"launchSpecifications[2].instanceType {BY_ATTRIBUTES}",  # a spec without a type: EC2's choice
        f"launchTemplateConfigs[1].overrides[1].instanceType is 'p4d.24xlarge', {REFUSED}",
        f"launchTemplateConfigs[1].overrides[2].instanceRequirements {BY_ATTRIBUTES}"]


@pytest.mark.parametrize("type_", [*SELF_MANAGED, CLUSTER])
def test_families_of_pulumi_eks_node_groups_default_to_t2_medium(type_):
    assert violations(FAMILIES, type_, {}, config=SHORT) == [f"instanceType is 't2.medium', {REFUSED}"]
    assert violations(FAMILIES, type_, {"instanceType": "p5.48xlarge"}, config=SHORT) == [
        f"instanceType is 'p5.48xlarge', {REFUSED}"]
    assert violations(FAMILIES, type_, {"instanceType": "m7i.large"}, config=SHORT) == []


def test_a_cluster_without_its_default_node_group_launches_nothing():
    assert violations(FAMILIES, CLUSTER, {"skipDefaultNodeGroup": True, "instanceType": "p5.48xlarge"},
                      config=SHORT) == []
    assert violations(FAMILIES, CLUSTER, {"skipDefaultNodeGroup": False}, config=SHORT) == [
        f"instanceType is 't2.medium', {REFUSED}"]
    # a node group component is a node group whatever it says about a default one
    assert violations(FAMILIES, SELF_MANAGED[0], {"skipDefaultNodeGroup": True}, config=SHORT) == [
        f"instanceType is 't2.medium', {REFUSED}"]


def test_families_ignore_resources_that_launch_nothing():
    assert violations(FAMILIES, VOLUME, {"instanceType": "p5.48xlarge"}, config=SHORT) == []


# =========================================================================== cost-volume-size-bounds

SIZES = "cost-volume-size-bounds"


def size_message(where, size, low=20, high=1024):
    return f"{where} is {size} GiB; volumes must be {low}-{high} GiB (minVolumeSizeGiB, maxVolumeSizeGiB)"


def test_volume_size_bounds_are_inclusive():
    for ok in (20, 1024, "512"):
        assert violations(SIZES, VOLUME, {"size": ok}) == []
    assert violations(SIZES, VOLUME, {"size": 19}) == [size_message("size", 19)]
    assert violations(SIZES, VOLUME, {"size": 1025}) == [size_message("size", 1025)]
    assert violations(SIZES, VOLUME, {"size": 19.5}) == [size_message("size", 19)]
    assert violations(SIZES, VOLUME, {"size": "4096"}) == [size_message("size", 4096)]
    for unreadable in ({}, {"size": "big"}, {"size": True}):
        assert violations(SIZES, VOLUME, unreadable) == []


def test_volume_size_bounds_come_from_the_config():
    cfg = {"minVolumeSizeGiB": 50, "maxVolumeSizeGiB": 60}
    assert violations(SIZES, VOLUME, {"size": 50}, config=cfg) == []
    assert violations(SIZES, VOLUME, {"size": 60}, config=cfg) == []
    assert violations(SIZES, VOLUME, {"size": 49}, config=cfg) == [size_message("size", 49, 50, 60)]
    assert violations(SIZES, VOLUME, {"size": 61}, config=cfg) == [size_message("size", 61, 50, 60)]
    same = {"minVolumeSizeGiB": 60, "maxVolumeSizeGiB": 60}
    assert violations(SIZES, VOLUME, {"size": 60}, config=same) == []
    assert violations(SIZES, VOLUME, {"size": 61}, config={"minVolumeSizeGiB": 61, "maxVolumeSizeGiB": 60}) == [
        "the pack's settings minVolumeSizeGiB (61) > maxVolumeSizeGiB (60) allow no volume; fix the policy config"]


def test_volume_sizes_of_a_launch_template():
    props = {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSize": 8}},
                                     {"ebs": {"volumeSize": 2048}},
                                     {"deviceName": "/dev/xvdc", "ebs": {"volumeSize": 100}},
                                     {"deviceName": "/dev/xvdd"}]}
    assert violations(SIZES, LT, props) == [size_message("blockDeviceMappings /dev/xvda", 8),
                                            size_message("blockDeviceMappings ?", 2048)]
    assert violations(SIZES, LT, {"rootBlockDevice": {"volumeSize": 8}}) == []  # not a launch template field


@pytest.mark.parametrize("type_", [LC, INSTANCE, SPOT_INSTANCE])
def test_volume_sizes_of_an_instance_or_launch_configuration(type_):
    props = {"rootBlockDevice": {"volumeSize": 8},
             "ebsBlockDevices": [{"deviceName": "/dev/sdf", "volumeSize": 5000}, {"volumeSize": 1},
                                 {"deviceName": "/dev/sdh", "volumeSize": 30}]}
    assert violations(SIZES, type_, props) == [size_message("rootBlockDevice.volumeSize", 8),
                                               size_message("ebsBlockDevices /dev/sdf", 5000),
                                               size_message("ebsBlockDevices ?", 1)]
    assert violations(SIZES, type_, {"blockDeviceMappings": [{"ebs": {"volumeSize": 8}}]}) == []


@pytest.mark.parametrize("type_", [NODE_GROUP, MANAGED_NODE_GROUP])
def test_volume_size_of_an_eks_node_group(type_):
    assert violations(SIZES, type_, {"diskSize": 5000}) == [size_message("diskSize", 5000)]
    assert violations(SIZES, type_, {"diskSize": 100}) == []
    assert violations(SIZES, type_, {"nodeRootVolumeSize": 5000}) == []


@pytest.mark.parametrize("type_", [*SELF_MANAGED, CLUSTER])
def test_volume_size_of_pulumi_eks_node_groups(type_):
    assert violations(SIZES, type_, {"nodeRootVolumeSize": 5}) == [size_message("nodeRootVolumeSize", 5)]
    assert violations(SIZES, type_, {"nodeRootVolumeSize": 100}) == []
    assert violations(SIZES, type_, {"diskSize": 5000}) == []


def test_volume_sizes_ignore_resources_without_volumes():
    assert violations(SIZES, ASG, {"size": 5000, "diskSize": 5000}) == []


# =========================================================================== cost-volume-performance-bounds

PERFORMANCE = "cost-volume-performance-bounds"
BILLED = "provisioned performance is billed per unit every month, whether used or not"


def iops(where, value, limit=16000):
    return f"{where} is {value}; at most {limit} IOPS (maxIops) allowed: {BILLED}"


def throughput(where, value, limit=1000):
    return f"{where} is {value}; at most {limit} MiB/s (maxThroughputMiBps) allowed: {BILLED}"


def test_volume_performance_limits_are_inclusive():
    assert violations(PERFORMANCE, VOLUME, {"iops": 16000, "throughput": 1000}) == []
    assert violations(PERFORMANCE, VOLUME, {"iops": 16001, "throughput": 1001}) == [
        iops("iops", 16001), throughput("throughput", 1001)]
    assert violations(PERFORMANCE, VOLUME, {"iops": "20000.7"}) == [iops("iops", 20000)]
    assert violations(PERFORMANCE, VOLUME, {"iops": "lots", "throughput": None}) == []


def test_volume_performance_limits_come_from_the_config():
    cfg = {"maxIops": 3000, "maxThroughputMiBps": 125}
    assert violations(PERFORMANCE, VOLUME, {"iops": 3000, "throughput": 125}, config=cfg) == []
    assert violations(PERFORMANCE, VOLUME, {"iops": 3001, "throughput": 126}, config=cfg) == [
        iops("iops", 3001, 3000), throughput("throughput", 126, 125)]


def test_volume_performance_of_a_launch_template():
    props = {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"iops": 64000, "throughput": 300}},
                                     {"ebs": {"throughput": 2000}}, {"deviceName": "/dev/xvdc"}]}
    assert violations(PERFORMANCE, LT, props) == [iops("blockDeviceMappings /dev/xvda ebs.iops", 64000),
                                                  throughput("blockDeviceMappings ? ebs.throughput", 2000)]
    assert violations(PERFORMANCE, LT, {"iops": 64000, "rootBlockDevice": {"iops": 64000}}) == []


@pytest.mark.parametrize("type_", [LC, INSTANCE, SPOT_INSTANCE])
def test_volume_performance_of_an_instance_or_launch_configuration(type_):
    props = {"rootBlockDevice": {"iops": 20000, "throughput": 2000},
             "ebsBlockDevices": [{"deviceName": "/dev/sdf", "iops": 100000}, {"throughput": 1500},
                                 {"deviceName": "/dev/sdg", "iops": 3000}]}
    assert violations(PERFORMANCE, type_, props) == [
        iops("rootBlockDevice.iops", 20000), throughput("rootBlockDevice.throughput", 2000),
        iops("ebsBlockDevices /dev/sdf.iops", 100000), throughput("ebsBlockDevices ?.throughput", 1500)]
    assert violations(PERFORMANCE, type_, {"iops": 64000}) == []


def test_volume_performance_ignores_resources_without_volumes():
    assert violations(PERFORMANCE, NODE_GROUP, {"iops": 64000, "throughput": 4000}) == []


# =========================================================================== cost-max-nodes-per-group / -per-stack

PER_GROUP, PER_STACK = "cost-max-nodes-per-group", "cost-max-nodes-per-stack"


def group_message(group, total, type_, name, n, limit):
    return (f"{group} may grow to {total} nodes ({type_} {name!r}: {n}); at most {limit} allowed (maxNodesPerGroup)",
            name)


def alone(r, limit=1):
    """The per-group verdict on one resource under a tiny limit: its group's name and node count."""
    return urn_names(stack_violations(PER_GROUP, [r], config={"maxNodesPerGroup": limit}, with_urns=True))


def tagged_asg(name, max_size, group=None, **extra):
    tags = [{"key": "kiln.dev/node-group", "value": group}] if group else []
    return resource(ASG, name, {"maxSize": max_size, "tags": tags, **extra})


def test_nodes_per_group_add_up_a_groups_asgs_up_to_the_limit_inclusive():
    zones = [tagged_asg("gpu-a", 40, "gpu"), tagged_asg("gpu-b", 40, "gpu"), tagged_asg("gpu-c", 20, "gpu")]
    assert stack_violations(PER_GROUP, zones) == []  # 100: the default limit
    over = zones[:2] + [tagged_asg("gpu-c", 21, "gpu")]
    assert urn_names(stack_violations(PER_GROUP, over, with_urns=True)) == [
        group_message("node group 'gpu'", 101, ASG, "gpu-a", 40, 100),
        group_message("node group 'gpu'", 101, ASG, "gpu-b", 40, 100),
        group_message("node group 'gpu'", 101, ASG, "gpu-c", 21, 100)]
    assert stack_violations(PER_GROUP, over, config={"maxNodesPerGroup": 101}) == []


def test_nodes_per_group_untagged_asgs_are_groups_of_their_own():
    assert alone(tagged_asg("a", 2)) == [group_message("ASG 'a'", 2, ASG, "a", 2, 1)]
    assert alone(tagged_asg("a", 1)) == []
    assert stack_violations(PER_GROUP, [tagged_asg("a", 1), tagged_asg("b", 1)], config={"maxNodesPerGroup": 1}) == []
    # an ASG's tags as a map, and as the list of {key, value} with another tag first
    as_map = resource(ASG, "m", {"maxSize": 3, "tags": {"kiln.dev/node-group": "cpu"}})
    assert alone(as_map) == [group_message("node group 'cpu'", 3, ASG, "m", 3, 1)]
    listed = resource(ASG, "l", {"maxSize": 3, "tags": [{"key": "team", "value": "ml"}, {"value": "x"},
                                                        {"key": "kiln.dev/node-group", "value": "cpu"}]})
    assert alone(listed) == [group_message("node group 'cpu'", 3, ASG, "l", 3, 1)]


def test_nodes_per_group_an_asg_size_that_is_not_a_number_counts_as_zero():
    assert alone(resource(ASG, "a", {"maxSize": "lots"})) == []
    assert alone(resource(ASG, "a", {"maxSize": "3"})) == [group_message("ASG 'a'", 3, ASG, "a", 3, 1)]


def test_nodes_per_group_a_warm_pool_adds_its_instances():
    def warm(max_size, **pool):
        return resource(ASG, "w", {"maxSize": max_size, "warmPool": pool})
    assert alone(warm(3, minSize=2)) == [group_message("ASG 'w'", 5, ASG, "w", 5, 1)]
    assert alone(warm(3, minSize=2, maxGroupPreparedCapacity=4)) == [group_message("ASG 'w'", 5, ASG, "w", 5, 1)]
    assert alone(warm(3, minSize=2, maxGroupPreparedCapacity=9)) == [group_message("ASG 'w'", 9, ASG, "w", 9, 1)]
    assert alone(warm(3, maxGroupPreparedCapacity=2)) == [group_message("ASG 'w'", 3, ASG, "w", 3, 1)]
    assert alone(warm(3)) == [group_message("ASG 'w'", 3, ASG, "w", 3, 1)]
    assert alone(resource(ASG, "w", {"warmPool": {"maxGroupPreparedCapacity": 4}})) == [
        group_message("ASG 'w'", 4, ASG, "w", 4, 1)]


@pytest.mark.parametrize("type_", [NODE_GROUP, MANAGED_NODE_GROUP])
def test_nodes_per_group_of_an_eks_node_group(type_):
    assert alone(resource(type_, "ng", {"scalingConfig": {"maxSize": 7}})) == [
        group_message("EKS node group 'ng'", 7, type_, "ng", 7, 1)]
    assert alone(resource(type_, "ng", {"maxSize": 7})) == []


@pytest.mark.parametrize("type_", SELF_MANAGED)
def test_nodes_per_group_of_a_pulumi_eks_node_group_default_two(type_):
    assert alone(resource(type_, "ng", {"maxSize": 7})) == [group_message("node group 'ng'", 7, type_, "ng", 7, 1)]
    assert alone(resource(type_, "ng", {})) == [group_message("node group 'ng'", 2, type_, "ng", 2, 1)]
    assert alone(resource(type_, "ng", {}), limit=2) == []
    assert alone(resource(type_, "ng", {"maxSize": "x"})) == []


def test_nodes_per_group_of_a_spot_fleet_divides_by_the_smallest_weight():
    def fleet(**props):
        return resource(SPOT_FLEET, "sf", {"targetCapacity": 10, **props})
    assert alone(fleet()) == [group_message("spot fleet 'sf'", 10, SPOT_FLEET, "sf", 10, 1)]
    configs = [{"overrides": [{"weightedCapacity": 2}, {"weightedCapacity": 0.5}]},
               {"overrides": [{"weightedCapacity": 0.25}, {"weightedCapacity": 0}, {"weightedCapacity": -1}]}]
    assert alone(fleet(launchTemplateConfigs=configs)) == [group_message("spot fleet 'sf'", 40, SPOT_FLEET, "sf", 40, 1)]
    specs = [{"weightedCapacity": 0.1}, {"weightedCapacity": "x"}]
    assert alone(fleet(launchSpecifications=specs)) == [group_message("spot fleet 'sf'", 100, SPOT_FLEET, "sf", 100, 1)]
    assert alone(fleet(launchSpecifications=[{"weightedCapacity": 4}],
                       launchTemplateConfigs=[{"overrides": [{"weightedCapacity": 0.5}]}])) == [
        group_message("spot fleet 'sf'", 20, SPOT_FLEET, "sf", 20, 1)]
    assert alone(fleet(launchSpecifications=[{"weightedCapacity": 0.5}],
                       launchTemplateConfigs=[{"overrides": [{"weightedCapacity": 2}]}])) == [
        group_message("spot fleet 'sf'", 20, SPOT_FLEET, "sf", 20, 1)]
    assert alone(resource(SPOT_FLEET, "sf", {})) == []


def test_nodes_per_group_of_an_ec2_fleet_divides_by_the_smallest_weight():
    def fleet(total, **props):
        return resource(FLEET, "f", {"targetCapacitySpecification": {"totalTargetCapacity": total}, **props})
    assert alone(fleet(6)) == [group_message("fleet 'f'", 6, FLEET, "f", 6, 1)]
    assert alone(fleet(6, launchTemplateConfigs=[{"overrides": [{"weightedCapacity": 0.5}]}])) == [
        group_message("fleet 'f'", 12, FLEET, "f", 12, 1)]
    # a fleet's launch specifications are not read for weights (EC2 Fleet has none)
    assert alone(fleet(6, launchSpecifications=[{"weightedCapacity": 0.5}])) == [
        group_message("fleet 'f'", 6, FLEET, "f", 6, 1)]
    assert alone(resource(FLEET, "f", {"targetCapacity": 6})) == []


def test_nodes_per_group_of_a_batch_environment_on_ec2_counts_vcpus():
    assert alone(resource(BATCH, "b", {"computeResources": {"type": "EC2", "maxVcpus": 64}})) == [
        group_message("Batch compute environment 'b'", 64, BATCH, "b", 64, 1)]
    assert alone(resource(BATCH, "b", {"computeResources": {"type": "FARGATE", "maxVcpus": 64}})) == []
    assert alone(resource(BATCH, "b", {"computeResources": {"type": "EC2"}})) == []


@pytest.mark.parametrize("type_", [INSTANCE, SPOT_INSTANCE])
def test_nodes_per_group_an_instance_is_one_node(type_):
    assert alone(resource(type_, "i", {}), limit=1) == []
    two = [resource(type_, "i", {}), resource(type_, "j", {})]
    assert stack_violations(PER_GROUP, two, config={"maxNodesPerGroup": 1}) == []  # each its own group
    from policies.rules.cost import max_nodes
    assert max_nodes(resource(type_, "i", {})) == ("instance 'i'", 1)
    assert max_nodes(resource(VOLUME, "v", {"size": 5})) is None


def test_nodes_per_group_a_count_unknown_during_preview_is_reported_after_the_rest():
    pending = resource(ASG, "pending", {"maxSize": UNKNOWN})
    found = judged_with_unknowns(PER_GROUP, [pending, tagged_asg("huge", 101)])
    assert found == [group_message("ASG 'huge'", 101, ASG, "huge", 101, 100)]
    # a group tag not known yet: the ASG counts on its own, under its name
    untagged = resource(ASG, "u", {"maxSize": 60, "tags": [{"key": "kiln.dev/node-group", "value": UNKNOWN}]})
    mapped = resource(ASG, "m", {"maxSize": 60, "tags": {"kiln.dev/node-group": UNKNOWN}})
    assert stack_violations(PER_GROUP, [untagged, tagged_asg("g", 60, "gpu")]) == []
    assert urn_names(stack_violations(PER_GROUP, [mapped], config={"maxNodesPerGroup": 59}, with_urns=True)) == [
        group_message("ASG 'm'", 60, ASG, "m", 60, 59)]


def stack_message(total, n, type_, name, limit=300):
    return (f"the stack may grow to {total} nodes, the most ({n}) from {type_} {name!r}; "
            f"at most {limit} allowed (maxNodesPerStack)", name)


def test_nodes_per_stack_up_to_the_limit_inclusive_blaming_the_largest():
    fleet = [tagged_asg("a", 100, "a"), tagged_asg("b", 150, "b"), tagged_asg("c", 50, "c")]
    assert stack_violations(PER_STACK, fleet) == []  # 300: the default limit
    fleet.append(resource(INSTANCE, "one", {}))
    assert urn_names(stack_violations(PER_STACK, fleet, with_urns=True)) == [stack_message(301, 150, ASG, "b")]
    assert stack_violations(PER_STACK, fleet, config={"maxNodesPerStack": 301}) == []
    assert urn_names(stack_violations(PER_STACK, fleet, config={"maxNodesPerStack": 10}, with_urns=True)) == [
        stack_message(301, 150, ASG, "b", 10)]


def test_nodes_per_stack_counts_every_kind_of_launcher():
    mixed = [resource(NODE_GROUP, "ng", {"scalingConfig": {"maxSize": 3}}), resource(INSTANCE, "i", {}),
             resource(SPOT_FLEET, "sf", {"targetCapacity": 2}), resource(VOLUME, "v", {"size": 500})]
    assert urn_names(stack_violations(PER_STACK, mixed, config={"maxNodesPerStack": 5}, with_urns=True)) == [
        stack_message(6, 3, NODE_GROUP, "ng", 5)]
    assert stack_violations(PER_STACK, mixed, config={"maxNodesPerStack": 6}) == []


def test_nodes_per_stack_a_count_unknown_during_preview_is_reported_after_the_rest():
    found = judged_with_unknowns(PER_STACK, [resource(ASG, "p", {"maxSize": UNKNOWN}), tagged_asg("big", 301)])
    assert found == [stack_message(301, 301, ASG, "big")]
    assert judged_with_unknowns(PER_STACK, [resource(ASG, "p", {"maxSize": UNKNOWN})]) == []


# =========================================================================== ECR

REPOSITORY = "aws:ecr/repository:Repository"
LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
TEMPLATE = "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate"
PTC = "aws:ecr/pullThroughCacheRule:PullThroughCacheRule"
REPLICATION = "aws:ecr/replicationConfiguration:ReplicationConfiguration"
ECR_LIFECYCLE = "ecr-lifecycle-policy"
NO_CAP = ("no rule caps the number of tagged images (need an imageCountMoreThan rule over all tagged images with "
          "countNumber <= {}")


def rule(priority, count=None, status="any", patterns=None, action="expire", count_type="imageCountMoreThan"):
    selection = {"tagStatus": status, "countType": count_type, "countNumber": count if count is not None else 1}
    if count_type == "sinceImagePushed":
        selection["countUnit"] = "days"
    if patterns is not None:
        selection["tagPatternList"] = patterns
    return {"rulePriority": priority, "selection": selection, "action": {"type": action}}


def policy(*rules):
    return json.dumps({"rules": list(rules)})


def test_lifecycle_cap_is_inclusive_and_from_the_config():
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(rule(1, 20))}) == []
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(rule(1, 21))}) == [
        "keeps up to 21 tagged images; at most 20 allowed"]
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(rule(1, 21))}, config={"maxImages": 21}) == []
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(rule(1, 5))}, config={"maxImages": 4}) == [
        "keeps up to 5 tagged images; at most 4 allowed"]


def test_lifecycle_counts_of_earlier_tagged_count_rules_add_up():
    tagged = rule(1, 12, "tagged", ["release-*"])
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(tagged, rule(2, 8))}) == []
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(tagged, rule(2, 9))}) == [
        "keeps up to 21 tagged images; at most 20 allowed"]
    # given out of order: ECR (and the rule) go by rulePriority; untagged rules keep no tagged image
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(rule(3, 9), rule(2, 5, "untagged"),
                                                                  rule(1, 12, "tagged", ["v*"]))}) == [
        "keeps up to 21 tagged images; at most 20 allowed"]
    # a rule after the one covering every tagged image is never reached for tagged images
    first = rule(1, 20, "tagged", ["*"])
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(first, rule(2, 500))}) == []


def test_lifecycle_a_tagged_pattern_list_covers_all_only_with_a_star():
    only_v = policy(rule(1, 10, "tagged", ["v*"]))
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": only_v}) == [NO_CAP.format(20) + ")"]
    star = policy(rule(1, 10, "tagged", ["v*", "*"]))
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": star}) == []
    # an object rather than JSON text: its tagPatternList a scalar, and a priority given as a string
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": {"rules": [
        {"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPatternList": "*",
                                          "countType": "imageCountMoreThan", "countNumber": 10},
         "action": {"type": "expire"}}]}}) == []


def test_lifecycle_only_an_expiring_image_count_rule_is_a_cap():
    for not_a_cap in (rule(1, 10, action="keep"), rule(1, 10, count_type="sinceImagePushed")):
        found = violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(not_a_cap)})
        assert found[-1] == NO_CAP.format(20) + ")"
    no_count = {"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan"},
                "action": {"type": "expire"}}
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(no_count)}) == [
        "rules[0].selection.countNumber (None) must be a positive integer", NO_CAP.format(20) + ")"]
    no_selection = {"rulePriority": 1, "action": {"type": "expire"}}
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(no_selection, rule(2, 5))}) == [
        "rules[0].selection must be an object"]


def test_lifecycle_an_earlier_rule_over_tagged_images_that_is_not_a_count_escapes_the_cap():
    by_age = rule(1, 30, "tagged", ["v*"], count_type="sinceImagePushed")
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(by_age, rule(2, 5))}) == [
        "the rule with rulePriority 1 selects tagged images before the image-count cap, so the images it keeps "
        "escape the cap"]
    untagged = rule(1, 30, "untagged", count_type="sinceImagePushed")
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(untagged, rule(2, 5))}) == []


def test_lifecycle_rules_without_a_numeric_priority_are_not_counted():
    bad = rule("first", 5)
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": policy(bad)}) == [
        "rules[0].rulePriority ('first') must be a positive integer", NO_CAP.format(20) + ")"]


def test_lifecycle_documents_that_are_not_policies():
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": "{"})[0].startswith("not valid JSON: ")
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": "[]"}) == ["must be an object with a non-empty 'rules' list"]
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": json.dumps({"rules": []})}) == [
        "must be an object with a non-empty 'rules' list"]
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": 5}) == ["must be an object with a non-empty 'rules' list"]


def test_lifecycle_a_key_given_twice_is_refused_not_read_as_the_last():
    """Bug fixed here: a policy whose ``rules`` key is given twice passed every check (the validator's JSON
    parser keeps the last, the cap check skipped text it could not read)."""
    from policies.rules.ecr import UNREADABLE
    twice = '{"rules": %s, "rules": %s}' % (json.dumps([rule(1, 5000)]), json.dumps([rule(1, 5)]))
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {"policy": twice}) == [UNREADABLE]
    assert violations(ECR_LIFECYCLE, TEMPLATE, {"lifecyclePolicy": twice}) == [f"lifecyclePolicy: {UNREADABLE}"]
    assert UNREADABLE == ("is not one readable JSON document (a key given twice, or NaN/Infinity): which of its "
                          "values ECR acts on cannot be checked")


def test_lifecycle_of_a_creation_template_and_of_nothing_else():
    assert violations(ECR_LIFECYCLE, TEMPLATE, {"lifecyclePolicy": policy(rule(1, 21))}) == [
        "lifecyclePolicy: keeps up to 21 tagged images; at most 20 allowed"]
    assert violations(ECR_LIFECYCLE, TEMPLATE, {"lifecyclePolicy": policy(rule(1, 20))}) == []
    assert violations(ECR_LIFECYCLE, LIFECYCLE, {}) == [
        "policy is not set: the repositories ECR creates from this template keep every image"]
    assert violations(ECR_LIFECYCLE, REPOSITORY, {"policy": policy(rule(1, 500))}) == []
    assert violations(ECR_LIFECYCLE, TEMPLATE, {"policy": policy(rule(1, 20))}) == [
        "lifecyclePolicy is not set: the repositories ECR creates from this template keep every image"]


HAS_LIFECYCLE = "ecr-repository-has-lifecycle-policy"


def repo(name, **props):
    return resource(REPOSITORY, f"r-{name}", {"name": name, **props})


def lifecycle_for(repository):
    return resource(LIFECYCLE, f"lp-{repository}", {"repository": repository, "policy": policy(rule(1, 5))})


def test_every_repository_is_named_by_a_lifecycle_policy():
    assert stack_violations(HAS_LIFECYCLE, [repo("a"), lifecycle_for("a")]) == []
    assert urn_names(stack_violations(HAS_LIFECYCLE, [repo("a"), repo("b"), lifecycle_for("a")], with_urns=True)) == [
        ("repository 'b' has no lifecycle policy (none names it as its repository)", "r-b")]
    nameless = resource(REPOSITORY, "anon", {})
    assert urn_names(stack_violations(HAS_LIFECYCLE, [nameless, lifecycle_for("a")], with_urns=True)) == [
        ("repository 'anon' has no lifecycle policy (none names it as its repository)", "anon")]
    # only a lifecycle policy's repository counts, not another resource's
    other = resource(TEMPLATE, "t", {"repository": "a", "prefix": "x", "appliedFors": ["REPLICATION"]})
    assert len(stack_violations(HAS_LIFECYCLE, [repo("a"), other])) == 1


def test_a_repository_name_unknown_during_preview_is_reported_after_the_rest():
    pending = resource(REPOSITORY, "pending", {"name": UNKNOWN})
    found = judged_with_unknowns(HAS_LIFECYCLE, [pending, repo("b")])
    assert found == [("repository 'b' has no lifecycle policy (none names it as its repository)", "r-b")]
    unknown_target = resource(LIFECYCLE, "lp", {"repository": UNKNOWN})
    assert judged_with_unknowns(HAS_LIFECYCLE, [unknown_target, repo("c")]) == [
        ("repository 'c' has no lifecycle policy (none names it as its repository)", "r-c")]


def ptc(prefix):
    return resource(PTC, f"ptc-{prefix}", {"ecrRepositoryPrefix": prefix})


def template(prefix, applied=("PULL_THROUGH_CACHE",), lifecycle=True, name=None):
    props = {"prefix": prefix, "appliedFors": list(applied)}
    if lifecycle:
        props["lifecyclePolicy"] = policy(rule(1, 5))
    return resource(TEMPLATE, name or f"t-{prefix}", props)


def uncovered_ptc(prefix):
    return (f"{PTC} 'ptc-{prefix}': ecrRepositoryPrefix makes ECR create repositories ({prefix}/…) that no repository "
            "creation template (appliedFor PULL_THROUGH_CACHE, a matching prefix) gives a lifecycle policy, so they "
            "keep every image", f"ptc-{prefix}")


def test_pull_through_cache_repositories_need_a_matching_template():
    assert urn_names(stack_violations(HAS_LIFECYCLE, [ptc("hub")], with_urns=True)) == [uncovered_ptc("hub")]
    assert stack_violations(HAS_LIFECYCLE, [ptc("hub"), template("hub")]) == []
    assert stack_violations(HAS_LIFECYCLE, [ptc("hub"), template("ROOT")]) == []
    assert stack_violations(HAS_LIFECYCLE, [ptc("hub/team"), template("hub")]) == []
    assert stack_violations(HAS_LIFECYCLE, [ptc("hub/team"), template("hub/")]) == []
    assert stack_violations(HAS_LIFECYCLE, [ptc("hub"), template("hub", ("REPLICATION", "PULL_THROUGH_CACHE"))]) == []
    for wrong in (template("hub", ("REPLICATION",)), template("hub", lifecycle=False), template("hu"),
                  template("hub/team"), template("other")):
        assert urn_names(stack_violations(HAS_LIFECYCLE, [ptc("hub"), wrong], with_urns=True)) == [uncovered_ptc("hub")]


def test_a_template_prefix_is_a_namespace_not_a_string_prefix():
    """Bug fixed here: a template for ``prod`` was taken to cover a pull-through cache's ``production/…``
    repositories; ECR applies it to ``prod/…`` only."""
    assert urn_names(stack_violations(HAS_LIFECYCLE, [ptc("production"), template("prod")], with_urns=True)) == [
        uncovered_ptc("production")]


def replication(*filters):
    rules = [{"destinations": [{"region": "us-west-2"}], "repositoryFilters": list(f)} for f in filters]
    return resource(REPLICATION, "repl", {"replicationConfiguration": {"rules": rules}})


def uncovered_replication(i, names):
    return (f"{REPLICATION} 'repl': replicationConfiguration.rules[{i}] makes ECR create repositories ({names}) that "
            "no repository creation template (appliedFor REPLICATION, a matching prefix) gives a lifecycle policy, so "
            "they keep every image", "repl")


def test_replicated_repositories_need_a_matching_template():
    repl = replication([{"filter": "trainer", "filterType": "PREFIX_MATCH"}], [])
    assert urn_names(stack_violations(HAS_LIFECYCLE, [repl], with_urns=True)) == [
        uncovered_replication(0, "trainer/…"), uncovered_replication(1, "any name")]
    assert urn_names(stack_violations(HAS_LIFECYCLE, [repl, template("trainer", ("REPLICATION",))],
                                      with_urns=True)) == [uncovered_replication(1, "any name")]
    assert stack_violations(HAS_LIFECYCLE, [repl, template("ROOT", ("REPLICATION",))]) == []
    # only ROOT covers every name: an empty or missing prefix is no template's
    nameless = resource(TEMPLATE, "t-none", {"appliedFors": ["REPLICATION"], "lifecyclePolicy": policy(rule(1, 5))})
    assert urn_names(stack_violations(HAS_LIFECYCLE, [replication([]), template("", ("REPLICATION",)), nameless],
                                      with_urns=True)) == [uncovered_replication(0, "any name")]
    # a filter of another type selects nothing by prefix: the rule replicates every name
    other = replication([{"filter": "x", "filterType": "OTHER"}])
    assert urn_names(stack_violations(HAS_LIFECYCLE, [other, template("x", ("REPLICATION",))], with_urns=True)) == [
        uncovered_replication(0, "any name")]
    two = replication([{"filter": "a", "filterType": "PREFIX_MATCH"}, {"filter": "b", "filterType": "PREFIX_MATCH"}])
    assert urn_names(stack_violations(HAS_LIFECYCLE, [two, template("a", ("REPLICATION",))], with_urns=True)) == [
        uncovered_replication(0, "b/…")]


def test_a_template_unknown_during_preview_is_reported_after_the_rest():
    pending = resource(TEMPLATE, "t", {"prefix": UNKNOWN, "appliedFors": ["PULL_THROUGH_CACHE"]})
    assert judged_with_unknowns(HAS_LIFECYCLE, [pending, ptc("hub")]) == [
        (uncovered_ptc("hub")[0], "ptc-hub")]
    unknown_ptc = resource(PTC, "p", {"ecrRepositoryPrefix": UNKNOWN})
    assert judged_with_unknowns(HAS_LIFECYCLE, [unknown_ptc, repo("z")]) == [
        ("repository 'z' has no lifecycle policy (none names it as its repository)", "r-z")]


@pytest.mark.parametrize("type_", [REPOSITORY, TEMPLATE])
def test_immutable_tags(type_):
    assert violations("ecr-immutable-tags", type_, {"imageTagMutability": "IMMUTABLE"}) == []
    assert violations("ecr-immutable-tags", type_, {"imageTagMutability": "MUTABLE"}) == [
        "imageTagMutability is MUTABLE; set IMMUTABLE so a tag always names one image"]
    assert violations("ecr-immutable-tags", type_, {}) == [
        "imageTagMutability is MUTABLE; set IMMUTABLE so a tag always names one image"]
    assert violations("ecr-immutable-tags", type_, {"imageTagMutability": "immutable"}) == [
        "imageTagMutability is immutable; set IMMUTABLE so a tag always names one image"]


def test_immutable_tags_and_kms_only_on_repositories_and_templates():
    for rule_ in ("ecr-immutable-tags", "ecr-kms-encryption", "ecr-scan-on-push"):
        assert violations(rule_, LIFECYCLE, {}) == []


def test_scan_on_push_must_be_the_boolean_true():
    assert violations("ecr-scan-on-push", REPOSITORY, {"imageScanningConfiguration": {"scanOnPush": True}}) == []
    for off in ({}, {"imageScanningConfiguration": {"scanOnPush": "true"}},
                {"imageScanningConfiguration": {"scanOnPush": False}}):
        assert violations("ecr-scan-on-push", REPOSITORY, off) == ["imageScanningConfiguration.scanOnPush must be true"]
    assert violations("ecr-scan-on-push", TEMPLATE, {}) == []


@pytest.mark.parametrize("type_", [REPOSITORY, TEMPLATE])
def test_kms_encryption(type_):
    assert violations("ecr-kms-encryption", type_, {"encryptionConfigurations": [{"encryptionType": "KMS"}]}) == []
    assert violations("ecr-kms-encryption", type_, {"encryptionConfigurations": [
        {"encryptionType": "AES256"}, {"encryptionType": "KMS"}]}) == []
    assert violations("ecr-kms-encryption", type_, {"encryptionConfigurations": {"encryptionType": "KMS"}}) == []
    for off in ({}, {"encryptionConfigurations": [{"encryptionType": "AES256"}]}):
        assert violations("ecr-kms-encryption", type_, off) == ["encryptionConfigurations must use encryptionType KMS"]


# =========================================================================== sg-no-ingress-from-internet

SG = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
PREFIX_LIST = "aws:ec2/managedPrefixList:ManagedPrefixList"
PREFIX_LIST_ENTRY = "aws:ec2/managedPrefixListEntry:ManagedPrefixListEntry"
WORLD = "sg-no-ingress-from-internet"
LIMIT = "at most a /8 of IPv4 (16777216 addresses) or a /32 of IPv6 allowed"


def sg(*resources, config=None):
    return urn_names(stack_violations(WORLD, list(resources), config=config, with_urns=True))


def broad(type_, name, where, cidrs, scope, limit=LIMIT):
    return f"{type_} {name!r}: {where} allows {cidrs}, {scope}; {limit}", name


def foreign(type_, name, where, pl):
    return (f"{type_} {name!r}: {where} allows prefix list {pl!r}, which this stack does not declare (at most adds "
            "entries to), so what it admits cannot be checked (AWS-managed lists hold public ranges); declare it, or "
            "list it in allowedPrefixListIds", name)


@pytest.mark.parametrize("type_", [SG, DEFAULT_SG])
def test_inline_ingress_of_a_security_group(type_):
    group = resource(type_, "g", {"id": "sg-1", "ingress": [
        {"cidrBlocks": ["10.0.0.0/8"]}, {"cidrBlocks": ["0.0.0.0/0"]}, {"ipv6CidrBlocks": ["::/0"]}],
        "egress": [{"cidrBlocks": ["0.0.0.0/0"]}]})
    assert sg(group) == [broad(type_, "g", "ingress[1]", "0.0.0.0/0", "admitting the whole internet"),
                         broad(type_, "g", "ingress[2]", "::/0", "admitting the whole internet")]
    assert sg(resource(type_, "g", {"id": "sg-1", "egress": [{"cidrBlocks": ["0.0.0.0/0"]}]})) == []


def test_sources_of_one_group_add_up_up_to_the_limit_inclusive():
    def rule_(name, cidr):
        return resource(INGRESS_RULE, name, {"securityGroupId": "sg-1", "cidrIpv4": cidr})
    assert sg(rule_("a", "3.0.0.0/9"), rule_("b", "3.128.0.0/9")) == []  # one /8 together
    found = sg(rule_("a", "3.0.0.0/9"), rule_("b", "4.0.0.0/9"), rule_("c", "5.0.0.0/9"), rule_("p", "10.0.0.0/8"))
    together = "with the security group's other ingress admitting 25165824 public addresses (IPv4)"
    assert found == [broad(INGRESS_RULE, "a", "ingress rule", "3.0.0.0/9", together),
                     broad(INGRESS_RULE, "b", "ingress rule", "4.0.0.0/9", together),
                     broad(INGRESS_RULE, "c", "ingress rule", "5.0.0.0/9", together)]
    # two /7s: one is too broad alone, the group reports each by what it admits alone
    assert sg(rule_("a", "4.0.0.0/7"), rule_("b", "4.0.0.0/8")) == [
        broad(INGRESS_RULE, "a", "ingress rule", "4.0.0.0/7", "admitting 33554432 public addresses (IPv4)"),
        broad(INGRESS_RULE, "b", "ingress rule", "4.0.0.0/8",
              "with the security group's other ingress admitting 33554432 public addresses (IPv4)")]


def test_the_limits_come_from_the_config():
    r = resource(INGRESS_RULE, "r", {"securityGroupId": "sg-1", "cidrIpv4": "4.0.0.0/8", "cidrIpv6": "2001:db8::/31"})
    assert sg(r, config={"ipv4MinPrefix": 8, "ipv6MinPrefix": 31}) == []
    assert sg(r, config={"ipv4MinPrefix": 9, "ipv6MinPrefix": 31}) == [broad(
        INGRESS_RULE, "r", "ingress rule", "4.0.0.0/8, 2001:db8::/31",
        "admitting 16777216 public addresses (IPv4) and about 2^97 public addresses (IPv6)",
        "at most a /9 of IPv4 (8388608 addresses) or a /31 of IPv6 allowed")]
    assert sg(r, config={"ipv4MinPrefix": 8, "ipv6MinPrefix": 32}) == [broad(
        INGRESS_RULE, "r", "ingress rule", "4.0.0.0/8, 2001:db8::/31",
        "admitting 16777216 public addresses (IPv4) and about 2^97 public addresses (IPv6)")]


def test_separate_rules_join_their_group_by_id():
    group = resource(SG, "g", {"id": "sg-1", "ingress": [{"cidrBlocks": ["4.0.0.0/8"]}]})
    same = resource(SG_RULE, "s", {"type": "ingress", "securityGroupId": "sg-1", "cidrBlocks": ["5.0.0.0/8"]})
    other = resource(SG_RULE, "o", {"type": "ingress", "securityGroupId": "sg-2", "cidrBlocks": ["5.0.0.0/8"]})
    egress = resource(SG_RULE, "e", {"type": "egress", "securityGroupId": "sg-1", "cidrBlocks": ["5.0.0.0/8"]})
    together = "with the security group's other ingress admitting 33554432 public addresses (IPv4)"
    assert sg(group, same) == [broad(SG, "g", "ingress[0]", "4.0.0.0/8", together),
                               broad(SG_RULE, "s", "ingress rule", "5.0.0.0/8", together)]
    assert sg(group, other) == [] and sg(group, egress) == []
    v6 = resource(SG_RULE, "v", {"type": "ingress", "securityGroupId": "sg-1", "ipv6CidrBlocks": ["::/0"]})
    assert sg(v6) == [broad(SG_RULE, "v", "ingress rule", "::/0", "admitting the whole internet")]
    v6_rule = resource(INGRESS_RULE, "w", {"securityGroupId": "sg-1", "cidrIpv6": "::/0"})
    assert sg(v6_rule) == [broad(INGRESS_RULE, "w", "ingress rule", "::/0", "admitting the whole internet")]


def test_a_source_that_is_not_a_cidr_is_refused_by_name():
    r = resource(SG_RULE, "r", {"type": "ingress", "securityGroupId": "sg-1", "cidrBlocks": ["10.0.0.0/8", "anywhere"]})
    assert sg(r) == [(f"{SG_RULE} 'r': ingress rule allows 'anywhere', which is not a CIDR block; what it admits "
                      "cannot be checked", "r")]


def test_prefix_lists_declared_in_the_stack_and_their_entries():
    declared = resource(PREFIX_LIST, "pl", {"id": "pl-1", "entries": [{"cidr": "4.0.0.0/8"}]})
    more = resource(PREFIX_LIST_ENTRY, "more", {"prefixListId": "pl-1", "cidr": "5.0.0.0/8"})
    via_rule = resource(INGRESS_RULE, "r", {"securityGroupId": "sg-1", "prefixListId": "pl-1"})
    assert sg(declared, via_rule) == []
    assert sg(declared, more, via_rule) == [broad(INGRESS_RULE, "r", "ingress rule", "4.0.0.0/8, 5.0.0.0/8",
                                                  "admitting 33554432 public addresses (IPv4)")]
    inline = resource(SG, "g", {"id": "sg-1", "ingress": [{"prefixListIds": ["pl-1"], "cidrBlocks": ["6.0.0.0/8"]}]})
    assert sg(declared, inline) == [broad(SG, "g", "ingress[0]", "6.0.0.0/8, 4.0.0.0/8",
                                          "admitting 33554432 public addresses (IPv4)")]
    on_sg_rule = resource(SG_RULE, "s", {"type": "ingress", "securityGroupId": "sg-1", "prefixListIds": ["pl-1"]})
    assert sg(declared, more, on_sg_rule) == [broad(SG_RULE, "s", "ingress rule", "4.0.0.0/8, 5.0.0.0/8",
                                                    "admitting 33554432 public addresses (IPv4)")]


def test_an_entry_reaches_a_new_list_through_its_property_dependency():
    new = resource(PREFIX_LIST, "pl", {"id": UNKNOWN, "entries": [{"cidr": "4.0.0.0/8"}]})
    entry = resource(PREFIX_LIST_ENTRY, "e", {"prefixListId": UNKNOWN, "cidr": "5.0.0.0/8"},
                     property_dependencies={"prefixListId": [new]})
    via = resource(INGRESS_RULE, "r", {"securityGroupId": "sg-1", "prefixListId": UNKNOWN},
                   property_dependencies={"prefixListId": [new]})
    assert sg(new, entry, via) == [broad(INGRESS_RULE, "r", "ingress rule", "4.0.0.0/8, 5.0.0.0/8",
                                         "admitting 33554432 public addresses (IPv4)")]
    assert sg(new, via) == []


def test_prefix_lists_from_outside_the_stack():
    entry = resource(PREFIX_LIST_ENTRY, "e", {"prefixListId": "pl-9", "cidr": "10.0.0.0/8"})
    via = resource(INGRESS_RULE, "r", {"securityGroupId": "sg-1", "prefixListId": "pl-9"})
    # only adding an entry does not make the list known: its other entries may be anything
    assert sg(entry, via) == [foreign(INGRESS_RULE, "r", "ingress rule", "pl-9")]
    assert sg(via) == [foreign(INGRESS_RULE, "r", "ingress rule", "pl-9")]
    assert sg(entry, via, config={"allowedPrefixListIds": ["pl-9"]}) == []
    assert sg(via, config={"allowedPrefixListIds": ["pl-8"]}) == [foreign(INGRESS_RULE, "r", "ingress rule", "pl-9")]
    # an entry on a listed id that is known in the stack goes to that list, not to a foreign one
    declared = resource(PREFIX_LIST, "pl", {"id": "pl-1", "entries": []})
    public_entry = resource(PREFIX_LIST_ENTRY, "p", {"prefixListId": "pl-1", "cidr": "0.0.0.0/0"})
    inline = resource(SG, "g", {"id": "sg-1", "ingress": [{"prefixListIds": ["pl-1"]}]})
    assert sg(declared, public_entry, inline) == [broad(SG, "g", "ingress[0]", "0.0.0.0/0",
                                                        "admitting the whole internet")]
    # a foreign list's known entries still count: a public one is reported besides the list itself
    public_foreign = resource(PREFIX_LIST_ENTRY, "f", {"prefixListId": "pl-9", "cidr": "0.0.0.0/0"})
    assert sg(public_foreign, via) == [foreign(INGRESS_RULE, "r", "ingress rule", "pl-9"),
                                       broad(INGRESS_RULE, "r", "ingress rule", "0.0.0.0/0",
                                             "admitting the whole internet")]


def test_during_preview_a_new_group_is_reached_through_property_dependencies():
    group = resource(SG, "g", {"id": UNKNOWN, "ingress": [{"cidrBlocks": ["4.0.0.0/8"]}]})
    rule_ = resource(INGRESS_RULE, "r", {"securityGroupId": UNKNOWN, "cidrIpv4": "5.0.0.0/8"},
                     property_dependencies={"securityGroupId": [group]})
    together = "with the security group's other ingress admitting 33554432 public addresses (IPv4)"
    assert sg(group, rule_) == [broad(SG, "g", "ingress[0]", "4.0.0.0/8", together),
                                broad(INGRESS_RULE, "r", "ingress rule", "5.0.0.0/8", together)]
    other = resource(SG, "h", {"id": UNKNOWN})
    elsewhere = resource(INGRESS_RULE, "r", {"securityGroupId": UNKNOWN, "cidrIpv4": "5.0.0.0/8"},
                         property_dependencies={"securityGroupId": [other]})
    assert sg(group, other, elsewhere) == []


def test_during_preview_a_rule_whose_group_cannot_be_traced_defers_the_rule_after_the_rest():
    untraced = resource(INGRESS_RULE, "u", {"securityGroupId": UNKNOWN, "cidrIpv4": "0.0.0.0/0"})
    world = resource(INGRESS_RULE, "w", {"securityGroupId": "sg-2", "cidrIpv4": "0.0.0.0/0"})
    assert judged_with_unknowns(WORLD, [untraced, world]) == [
        (f"{INGRESS_RULE} 'w': ingress rule allows 0.0.0.0/0, admitting the whole internet; {LIMIT}", "w")]


def test_a_rule_without_a_group_is_judged_alone():
    a = resource(INGRESS_RULE, "a", {"cidrIpv4": "4.0.0.0/8"})
    b = resource(INGRESS_RULE, "b", {"cidrIpv4": "0.0.0.0/0"})
    c = resource(INGRESS_RULE, "c", {"cidrIpv4": "5.0.0.0/8"})
    assert sg(a, b) == [broad(INGRESS_RULE, "b", "ingress rule", "0.0.0.0/0", "admitting the whole internet")]
    assert sg(a, c) == []  # two sources without a group are not one group


def test_during_preview_a_prefix_list_id_that_cannot_be_traced_defers_the_rule():
    via = resource(INGRESS_RULE, "r", {"securityGroupId": "sg-1", "prefixListId": UNKNOWN})
    world = resource(INGRESS_RULE, "w", {"securityGroupId": "sg-2", "cidrIpv4": "0.0.0.0/0"})
    p = POLICIES[WORLD]
    with pytest.raises(UnknownValueError) as raised:
        p.validate(StackValidationArgs([via, world], {}), lambda m, urn=None: None)
    assert raised.value.props == ["r.prefixListId"]
    assert judged_with_unknowns(WORLD, [via, world]) == [
        (f"{INGRESS_RULE} 'w': ingress rule allows 0.0.0.0/0, admitting the whole internet; {LIMIT}", "w")]
    inline = resource(SG, "g", {"id": "sg-3", "ingress": [{"prefixListIds": [UNKNOWN, "pl-9"]}]})
    assert judged_with_unknowns(WORLD, [inline]) == []
    # a list whose id is unknown, with an entry on a foreign list whose id is unknown: the entry cannot be placed
    pending_entry = resource(PREFIX_LIST_ENTRY, "e", {"prefixListId": UNKNOWN, "cidr": "0.0.0.0/0"})
    assert judged_with_unknowns(WORLD, [pending_entry, world]) == [
        (f"{INGRESS_RULE} 'w': ingress rule allows 0.0.0.0/0, admitting the whole internet; {LIMIT}", "w")]
    pending_list = resource(PREFIX_LIST, "pl", {"id": "pl-1", "entries": [{"cidr": UNKNOWN}]})
    assert judged_with_unknowns(WORLD, [pending_list, world]) == [
        (f"{INGRESS_RULE} 'w': ingress rule allows 0.0.0.0/0, admitting the whole internet; {LIMIT}", "w")]


# =========================================================================== stack rules (kiln configuration)

KILN = {
    "kiln:clusterName": "kiln", "kiln:kubernetesVersion": "1.33",
    "kiln:availabilityZones": ["us-east-2a", "us-east-2b"], "kiln:modelVersion": "v5",
    "kiln:vpcId": "vpc-0123456789abcdef0", "kiln:privateSubnetIds": ["subnet-0a1b2c3d", "subnet-0b1b2c3d"],
    "kiln:nodeGroups": [{"name": "system", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 2,
                         "desiredSize": 1},
                        {"name": "gpu", "instanceTypes": ["g5.2xlarge"], "minSize": 0, "maxSize": 4, "desiredSize": 1,
                         "gpu": True}],
    "kiln:nodeAmi": {"standard": "ami-0123456789abcdef0", "nvidia": "ami-0fedcba9876543210"},
}
PER_ZONE, MODEL = "stack-asg-per-group-and-zone", "stack-model-volume-for-version"
SUBNET = "aws:ec2/subnet:Subnet"
PV = "kubernetes:core/v1:PersistentVolume"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
GROUP_TAG, TEMPLATE_TAG = "kiln.dev/node-group", "k8s.io/cluster-autoscaler/node-template/label/kiln.dev/node-group"


@pytest.fixture
def kiln():
    pulumi.runtime.set_all_config(config_to_pulumi(KILN), [])
    yield
    pulumi.runtime.set_all_config({}, [])


def zonal(name, group=None, subnets=(), zones=None, tag=GROUP_TAG, parent=None, **deps):
    props = {"vpcZoneIdentifiers": list(subnets), "tags": [{"key": tag, "value": group}] if group else []}
    if zones is not None:
        props["availabilityZones"] = list(zones)
    return resource(ASG, name, props, parent=parent, property_dependencies=deps or None)


def missing(*pairs):
    return [f"node group {g!r} has no ASG in {z}" for g, z in pairs]


def every_zone(group, **kw):
    return [zonal(f"{group}-a", group, ["subnet-0a1b2c3d"], **kw), zonal(f"{group}-b", group, ["subnet-0b1b2c3d"], **kw)]


def test_every_group_needs_an_asg_in_every_zone_by_the_configured_subnets(kiln):
    assert stack_violations(PER_ZONE, every_zone("system") + every_zone("gpu")) == []
    assert stack_violations(PER_ZONE, every_zone("system")[:1] + every_zone("gpu")[1:]) == missing(
        ("system", "us-east-2b"), ("gpu", "us-east-2a"))
    assert stack_violations(PER_ZONE, []) == missing(("system", "us-east-2a"), ("system", "us-east-2b"),
                                                     ("gpu", "us-east-2a"), ("gpu", "us-east-2b"))
    # an unknown subnet places nothing; a group the config does not name is no group
    assert stack_violations(PER_ZONE, [zonal("x", "system", ["subnet-0fff"]), *every_zone("other"),
                                       *every_zone("gpu")]) == missing(("system", "us-east-2a"), ("system", "us-east-2b"))


def test_an_asgs_zones_come_from_its_zones_or_its_subnets(kiln):
    by_zone = [zonal("s", "system", zones=["us-east-2a", "us-east-2b", 5]), zonal("g", "gpu", zones=["us-east-2b"])]
    assert stack_violations(PER_ZONE, by_zone) == missing(("gpu", "us-east-2a"))
    declared = [resource(SUBNET, "sa", {"id": "subnet-1", "availabilityZone": "us-east-2a"}),
                resource(SUBNET, "sb", {"id": "subnet-2", "availabilityZone": "us-east-2b"}),
                resource(SUBNET, "sc", {"id": "subnet-3"})]
    asgs = [zonal("s", "system", ["subnet-1", "subnet-2"]), zonal("g", "gpu", ["subnet-1", "subnet-3"])]
    assert stack_violations(PER_ZONE, declared + asgs) == missing(("gpu", "us-east-2b"))
    # the ids ASGs name come from subnets of the stack, not from the zone a non-subnet resource claims
    impostor = resource("aws:ec2/instance:Instance", "i", {"id": "subnet-9", "availabilityZone": "us-east-2b"})
    assert stack_violations(PER_ZONE, [impostor, zonal("s", "system", ["subnet-9"]), *every_zone("gpu")]) == missing(
        ("system", "us-east-2a"), ("system", "us-east-2b"))


def test_an_asg_is_placed_through_a_subnet_id_unknown_during_preview_only_when_unknown(kiln):
    sa = resource(SUBNET, "sa", {"id": UNKNOWN, "availabilityZone": "us-east-2a"})
    sb = resource(SUBNET, "sb", {"id": UNKNOWN, "availabilityZone": "us-east-2b"})
    pending = zonal("s", "system", [UNKNOWN], vpcZoneIdentifiers=[sa])
    known_subnet = zonal("s2", "system", ["subnet-0b1b2c3d"], vpcZoneIdentifiers=[sa])
    assert stack_violations(PER_ZONE, [sa, sb, pending, known_subnet, *every_zone("gpu")]) == []
    # with every subnet id known, a dependency does not add its zone
    assert stack_violations(PER_ZONE, [sa, sb, known_subnet, *every_zone("gpu")]) == missing(("system", "us-east-2a"))
    unplaced = resource(SUBNET, "sx", {"id": UNKNOWN, "availabilityZone": UNKNOWN})
    assert stack_violations(PER_ZONE, [unplaced, zonal("s", "system", [UNKNOWN], vpcZoneIdentifiers=[unplaced]),
                                       *every_zone("gpu")]) == missing(("system", "us-east-2a"), ("system", "us-east-2b"))


def test_an_asgs_group_by_its_tag_its_node_template_label_or_its_component(kiln):
    by_template = every_zone("system", tag=TEMPLATE_TAG)
    assert stack_violations(PER_ZONE, by_template + every_zone("gpu")) == []
    component = resource("kiln:index:NodeGroup", "gpu", {})
    outer = resource("kiln:index:Cluster", "gpu-holder", {})
    nested = resource("kiln:index:Zone", "zone", {}, parent=component)
    assert stack_violations(PER_ZONE, every_zone("system") + [
        zonal("a", None, ["subnet-0a1b2c3d"], parent=component),
        zonal("b", None, ["subnet-0b1b2c3d"], parent=nested)]) == []
    assert stack_violations(PER_ZONE, every_zone("system") + [
        zonal("a", None, ["subnet-0a1b2c3d"], parent=outer)]) == missing(("gpu", "us-east-2a"), ("gpu", "us-east-2b"))
    # a tag naming no configured group does not stop the search: the node-template label may name one
    both = resource(ASG, "both", {"vpcZoneIdentifiers": ["subnet-0a1b2c3d", "subnet-0b1b2c3d"], "tags": [
        {"key": GROUP_TAG, "value": "other"}, {"key": TEMPLATE_TAG, "value": "gpu"}]})
    assert stack_violations(PER_ZONE, every_zone("system") + [both]) == []


def test_an_asg_whose_group_is_unknown_during_preview_defers_only_while_something_is_missing(kiln):
    pending = resource(ASG, "p", {"vpcZoneIdentifiers": ["subnet-0a1b2c3d"],
                                  "tags": [{"key": GROUP_TAG, "value": UNKNOWN}]})
    assert stack_violations(PER_ZONE, [pending, *every_zone("system"), *every_zone("gpu")]) == []
    with pytest.raises(UnknownValueError):
        stack_violations(PER_ZONE, [pending, *every_zone("system")])


def test_stack_rules_do_not_apply_without_a_valid_kiln_configuration():
    from pulumi_policy.policy import _NotApplicableError
    pulumi.runtime.set_all_config(config_to_pulumi({"kiln:clusterName": 5, "kiln:availabilityZones": "x",
                                                    "kiln:nodeGroups": 3}), [])
    try:
        for rule_ in (PER_ZONE, MODEL):
            with pytest.raises(_NotApplicableError) as raised:
                stack_violations(rule_, [])
            assert raised.value.reason == (
                "no valid kiln configuration: kiln:clusterName ('5') must start with a letter and contain only "
                "letters, digits and '-'; kiln:kubernetesVersion is required; kiln:availabilityZones ('x') must be "
                "a list")
    finally:
        pulumi.runtime.set_all_config({}, [])


def model_pv(path="/opt/models", key="kiln.dev/model-version", operator="In", values=("v5",), terms=None):
    expressions = [{"key": "other", "operator": "In", "values": ["v5"]},
                   {"key": key, "operator": operator,
                    "values": values if isinstance(values, str) else list(values)}]
    return resource(PV, "pv", {"spec": {"hostPath": {"path": path}, "nodeAffinity": {"required": {
        "nodeSelectorTerms": terms if terms is not None else [{"matchExpressions": []},
                                                              {"matchExpressions": expressions}]}}}})


CLAIM = resource(PVC, "claim", {"metadata": {"name": "model-v5"}})
NO_PV = "no hostPath PersistentVolume at /opt/models requires kiln.dev/model-version=v5"
NO_CLAIM = "no PersistentVolumeClaim named 'model-v5' for model v5"


def test_the_model_volume_and_claim_for_the_configured_version(kiln):
    assert stack_violations(MODEL, [model_pv(), CLAIM]) == []
    assert stack_violations(MODEL, [model_pv("/opt/models/v5"), CLAIM]) == []
    assert stack_violations(MODEL, [model_pv(values=("v4", "v5")), CLAIM]) == []
    assert stack_violations(MODEL, [model_pv(values="v5"), CLAIM]) == []
    for wrong in (model_pv("/opt/models-evil"), model_pv("/opt"), model_pv(key="kiln.dev/model"),
                  model_pv(operator="NotIn"), model_pv(values=("v4",)), model_pv(terms=[])):
        assert stack_violations(MODEL, [wrong, CLAIM]) == [NO_PV]
    not_a_pv = resource(PVC, "pv", _props.plain(model_pv().props))
    assert stack_violations(MODEL, [not_a_pv, CLAIM]) == [NO_PV]
    assert stack_violations(MODEL, [model_pv()]) == [NO_CLAIM]
    assert stack_violations(MODEL, [model_pv(), resource(PVC, "c", {"metadata": {"name": "model-v4"}})]) == [NO_CLAIM]
    assert stack_violations(MODEL, [model_pv(), resource(PV, "c", {"metadata": {"name": "model-v5"}})]) == [NO_CLAIM]
    assert stack_violations(MODEL, []) == [NO_PV, NO_CLAIM]


# =========================================================================== the property helpers (_props)


def proxied(value):
    return resource("t:t:T", "x", {"v": value}).props["v"]


def test_get_walks_maps_and_lists_with_a_default_at_any_missing_step():
    value = proxied({"a": [{"b": 1}, {"b": None}, "s"], "n": None, "z": 0})
    assert _props.get(value, "a", 0, "b") == 1
    assert _props.get(value, "a", -3, "b") == 1
    assert _props.get(value, "a", -1) == "s"
    assert _props.get(value, "a", 2) == "s"
    assert _props.get(value, "a", 3, default="d") == "d"
    assert _props.get(value, "a", -4, default="d") == "d"
    assert _props.get(value, "a", 1, "b", default="d") == "d"   # None is missing
    assert _props.get(value, "n", default="d") == "d"
    assert _props.get(value, "z", default="d") == 0             # a falsy value is a value
    assert _props.get(value, "missing") is None
    assert _props.get(value, "a", "b", default="d") == "d"      # a key on a list
    assert _props.get(value, 0, default="d") == "d"             # an index on a map
    assert _props.get(value, "a", 2, 0, default="d") == "d"     # an index on a string
    assert _props.get(value) is value


def test_get_raises_the_sdks_error_for_a_value_unknown_during_preview():
    value = proxied({"a": UNKNOWN, "l": [UNKNOWN]})
    with pytest.raises(UnknownValueError):
        _props.get(value, "a")
    with pytest.raises(UnknownValueError):
        _props.get(value, "l", 0)
    assert _props.known(value, "a") is None and _props.known(value, "l", 0) is None


def test_as_number_reads_numbers_and_numeric_strings_only():
    assert _props.as_number(3) == 3.0 and isinstance(_props.as_number(3), float)
    assert _props.as_number("2.5") == 2.5
    assert _props.as_number(True) is None and _props.as_number(False) is None
    assert _props.as_number("x") is None and _props.as_number(None) is None and _props.as_number([1]) is None


def test_tags_of_a_map_or_a_list_of_key_value_pairs():
    assert _props.tags_of(proxied({"tags": {"a": "1"}})) == {"a": "1"}
    assert _props.tags_of(proxied({"tags": [{"key": "a", "value": "1"}, {"key": "b"}, {"value": "2"}, "c"]})) == {
        "a": "1", "b": None}
    assert _props.tags_of(proxied({})) == {}


def test_duplicate_keys_are_named_and_constants_refused():
    assert _props._no_duplicates([("a", 1), ("b", 2)]) == {"a": 1, "b": 2}
    with pytest.raises(_props._DuplicateKey) as raised:
        _props._no_duplicates([("b", 1), ("a", 2), ("b", 3), ("a", 4), ("a", 5), ("c", 6)])
    assert raised.value.args == (["a", "b"],)
    with pytest.raises(ValueError) as refused:
        _props._no_constants("NaN")
    assert str(refused.value) == "NaN is not JSON"


def test_json_document_reads_text_or_objects_and_refuses_what_it_cannot_read_exactly():
    assert _props.json_document('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    assert _props.json_document('{"a": 1, "b": {"a": 2}}') == {"a": 1, "b": {"a": 2}}
    for unreadable in ('{"a": 1, "a": 2}', '{"b": {"a": 1, "a": 2}}', '{"a": NaN}', "Infinity", "-Infinity", "{", 5,
                       None):
        assert _props.json_document(unreadable) is None, unreadable
    as_object = proxied({"a": 1})
    assert _props.json_document(as_object) is as_object
    as_list = proxied([1])
    assert _props.json_document(as_list) is as_list


def test_schema_and_config():
    s = _props.schema(a={"type": "integer"}, b={"type": "string"})
    assert s.properties == {"a": {"type": "integer"}, "b": {"type": "string"}}


def test_dependency_urns_of_one_property():
    a, b = resource("t:t:T", "a", {}), resource("t:t:T", "b", {})
    r = resource("t:t:T", "r", {}, property_dependencies={"x": [a, b], "y": [b]})
    assert _props.dependency_urns(r, "x") == [a.urn, b.urn]
    assert _props.dependency_urns(r, "z") == []
    assert _props.dependency_urns(resource("t:t:T", "s", {}), "x") == []
    assert _props.dependency_urns(object(), "x") == []


def test_known_items_of_a_list_a_scalar_or_a_value_unknown_during_preview():
    value = proxied({"l": [1, UNKNOWN, 2, UNKNOWN], "s": "x", "u": UNKNOWN, "n": None})
    assert _props.known_items(value, "l") == ([1, 2], 2)
    assert _props.known_items(value, "s") == (["x"], 0)
    assert _props.known_items(value, "u") == ([], 1)
    assert _props.known_items(value, "n") == ([], 0)
    assert _props.known_items(value, "missing") == ([], 0)


def test_nodes_per_stack_a_missing_count_is_zero_nodes():
    nothing = [resource(ASG, "a", {}), resource(ASG, "w", {"maxSize": 0, "warmPool": {}}),
               resource(NODE_GROUP, "ng", {}), resource(SPOT_FLEET, "sf", {}), resource(FLEET, "f", {}),
               resource(BATCH, "b", {"computeResources": {"type": "EC2"}}), resource(SELF_MANAGED[0], "s", {"maxSize": 0})]
    one = resource(INSTANCE, "i", {})
    assert stack_violations(PER_STACK, [*nothing, one], config={"maxNodesPerStack": 1}) == []
    assert urn_names(stack_violations(PER_STACK, [*nothing, one, resource(ASG, "x", {"maxSize": 1})],
                                      config={"maxNodesPerStack": 1}, with_urns=True)) == [
        stack_message(2, 1, INSTANCE, "i", 1)]  # the first of the largest


def test_cost_rules_fall_back_to_their_defaults_when_the_sdk_passes_no_config():
    """The CLI fills in the schema's defaults; the SDK passes {} when a pack is run without them."""
    from pulumi_policy import ResourceValidationArgs

    def bare(policy, type_, props):
        r = resource(type_, "r", props)
        found: list = []
        POLICIES[policy].validate(ResourceValidationArgs(r.resource_type, r.props, r.urn, r.name, r.opts, None, {}),
                                  lambda message, urn=None: found.append(message))
        return found

    def bare_stack(policy, resources):
        found: list = []
        POLICIES[policy].validate(StackValidationArgs(resources, {}), lambda message, urn=None: found.append(message))
        return found

    assert bare(FAMILIES, INSTANCE, {"instanceType": "m7i.large"}) == []
    assert bare(FAMILIES, INSTANCE, {"instanceType": "p5.48xlarge"}) == violations(
        FAMILIES, INSTANCE, {"instanceType": "p5.48xlarge"})
    assert bare(SIZES, VOLUME, {"size": 20}) == [] and bare(SIZES, VOLUME, {"size": 1024}) == []
    assert bare(SIZES, VOLUME, {"size": 19}) == [size_message("size", 19)]
    assert bare(SIZES, VOLUME, {"size": 1025}) == [size_message("size", 1025)]
    assert bare(PERFORMANCE, VOLUME, {"iops": 16000, "throughput": 1000}) == []
    assert bare(PERFORMANCE, VOLUME, {"iops": 16001, "throughput": 1001}) == [
        iops("iops", 16001), throughput("throughput", 1001)]
    assert bare_stack(PER_GROUP, [tagged_asg("g", 100)]) == []
    assert bare_stack(PER_GROUP, [tagged_asg("g", 101)]) == [group_message("ASG 'g'", 101, ASG, "g", 101, 100)[0]]
    assert bare_stack(PER_STACK, [tagged_asg("g", 300)]) == []
    assert bare_stack(PER_STACK, [tagged_asg("g", 301)]) == [stack_message(301, 301, ASG, "g")[0]]


def test_ecr_and_security_group_rules_fall_back_to_their_defaults_when_the_sdk_passes_no_config():
    from pulumi_policy import ResourceValidationArgs
    r = resource(LIFECYCLE, "lp", {"policy": policy(rule(1, 21))})
    found: list = []
    POLICIES[ECR_LIFECYCLE].validate(ResourceValidationArgs(r.resource_type, r.props, r.urn, r.name, r.opts, None, {}),
                                     lambda message, urn=None: found.append(message))
    assert found == ["keeps up to 21 tagged images; at most 20 allowed"]
    sources = [resource(INGRESS_RULE, "a", {"securityGroupId": "sg-1", "cidrIpv4": "4.0.0.0/8"}),
               resource(INGRESS_RULE, "b", {"securityGroupId": "sg-2", "cidrIpv6": "2001:db8::/32"}),
               resource(INGRESS_RULE, "c", {"securityGroupId": "sg-3", "cidrIpv4": "5.0.0.0/7"}),
               resource(INGRESS_RULE, "d", {"securityGroupId": "sg-4", "cidrIpv6": "2001:db8::/31"}),
               resource(INGRESS_RULE, "e", {"securityGroupId": "sg-5", "prefixListId": "pl-9"})]
    found = []
    POLICIES[WORLD].validate(StackValidationArgs(sources, {}), lambda message, urn=None: found.append(message))
    assert found == [foreign(INGRESS_RULE, "e", "ingress rule", "pl-9")[0],
                     broad(INGRESS_RULE, "c", "ingress rule", "5.0.0.0/7", "admitting 33554432 public addresses (IPv4)")[0],
                     broad(INGRESS_RULE, "d", "ingress rule", "2001:db8::/31",
                           "admitting about 2^97 public addresses (IPv6)")[0]]


def test_a_template_prefix_ending_in_other_characters_is_not_trimmed():
    assert urn_names(stack_violations(HAS_LIFECYCLE, [ptc("hub/team"), template("hubX")], with_urns=True)) == [
        uncovered_ptc("hub/team")]


def test_every_prefix_list_of_an_inline_rule_counts():
    one = resource(PREFIX_LIST, "one", {"id": "pl-1", "entries": [{"cidr": "4.0.0.0/8"}]})
    two = resource(PREFIX_LIST, "two", {"id": "pl-2", "entries": [{"cidr": "5.0.0.0/8"}]})
    inline = resource(SG, "g", {"id": "sg-1", "ingress": [{"prefixListIds": ["pl-1", "pl-2"]}]})
    assert sg(one, two, inline) == [broad(SG, "g", "ingress[0]", "4.0.0.0/8, 5.0.0.0/8",
                                          "admitting 33554432 public addresses (IPv4)")]


def test_during_preview_an_inline_rules_new_prefix_list_is_traced_through_the_ingress_dependency():
    known_list = resource(PREFIX_LIST, "one", {"id": "pl-1", "entries": [{"cidr": "4.0.0.0/8"}]})
    new_list = resource(PREFIX_LIST, "new", {"id": UNKNOWN, "entries": [{"cidr": "5.0.0.0/8"}]})
    inline = resource(SG, "g", {"id": "sg-1", "ingress": [{"prefixListIds": ["pl-1", UNKNOWN]}]},
                      property_dependencies={"ingress": [new_list]})
    assert sg(known_list, new_list, inline) == [broad(SG, "g", "ingress[0]", "4.0.0.0/8, 5.0.0.0/8",
                                                      "admitting 33554432 public addresses (IPv4)")]
    # traced through another property, the list is not the inline rule's: "can't run during preview"
    elsewhere = resource(SG, "g", {"id": "sg-1", "ingress": [{"prefixListIds": [UNKNOWN]}]},
                         property_dependencies={"tags": [new_list]})
    assert judged_with_unknowns(WORLD, [new_list, elsewhere]) == []


def test_an_ipv6_source_is_judged_alone_against_the_configured_ipv6_limit():
    v4 = resource(INGRESS_RULE, "a", {"securityGroupId": "sg-1", "cidrIpv4": "4.0.0.0/7"})
    v6 = resource(INGRESS_RULE, "b", {"securityGroupId": "sg-1", "cidrIpv6": "2001:db8::/31"})
    both = "33554432 public addresses (IPv4) and about 2^97 public addresses (IPv6)"
    limit = "at most a /8 of IPv4 (16777216 addresses) or a /31 of IPv6 allowed"
    assert sg(v4, v6, config={"ipv6MinPrefix": 31}) == [
        broad(INGRESS_RULE, "a", "ingress rule", "4.0.0.0/7", "admitting 33554432 public addresses (IPv4)", limit),
        broad(INGRESS_RULE, "b", "ingress rule", "2001:db8::/31", f"with the security group's other ingress admitting "
                                                                  f"{both}", limit)]
    assert sg(v4, v6) == [
        broad(INGRESS_RULE, "a", "ingress rule", "4.0.0.0/7", "admitting 33554432 public addresses (IPv4)"),
        broad(INGRESS_RULE, "b", "ingress rule", "2001:db8::/31", "admitting about 2^97 public addresses (IPv6)")]
