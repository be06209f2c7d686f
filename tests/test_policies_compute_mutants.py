"""The ASG, EKS and compute rules, each decision with the exact violations an operator reads.

Written against the survivors of a mutmut run on ``policies/rules/asgs.py``, ``eks.py`` and ``compute.py``
(issue 15): every test states what a rule decides for crafted resources — through the pack, as the SDK calls
it (tests/_policy_helpers.py) — and pins the full list of messages (and URNs for the stack rule), including
the boundaries: counts at the limit, strings against booleans, lists against scalars, missing keys, a rule
run without any config, and values not known during a preview. Equivalent mutants (no input tells them apart)
are listed with a reason in tests/mutation/equivalent.txt.
"""

from __future__ import annotations

import base64
import gzip

import pytest
from pulumi_policy import ResourceValidationArgs, StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

from _policy_helpers import POLICIES, UNKNOWN, _opts, _props, resource, stack_violations, violations

ASG = "aws:autoscaling/group:Group"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
LC = "aws:ec2/launchConfiguration:LaunchConfiguration"
INSTANCE = "aws:ec2/instance:Instance"
SPOT = "aws:ec2/spotInstanceRequest:SpotInstanceRequest"
SPOT_FLEET = "aws:ec2/spotFleetRequest:SpotFleetRequest"
FLEET = "aws:ec2/fleet:Fleet"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
MANAGED = "eks:index:ManagedNodeGroup"
NODE_GROUP_V1 = "eks:index:NodeGroup"
NODE_GROUP_V2 = "eks:index:NodeGroupV2"
EKS = "eks:index:Cluster"
AWS_EKS = "aws:eks/cluster:Cluster"
BATCH = "aws:batch/computeEnvironment:ComputeEnvironment"
VOLUME = "aws:ebs/volume:Volume"
SNAPSHOT_COPY = "aws:ebs/snapshotCopy:SnapshotCopy"
AMI_COPY = "aws:ec2/amiCopy:AmiCopy"
BY_DEFAULT = "aws:ebs/encryptionByDefault:EncryptionByDefault"
SUBNET = "aws:ec2/subnet:Subnet"
DEFAULT_SUBNET = "aws:ec2/defaultSubnet:DefaultSubnet"
EIP = "aws:ec2/eip:Eip"
EIP_ASSOCIATION = "aws:ec2/eipAssociation:EipAssociation"
BUCKET = "aws:s3/bucket:Bucket"


def unconfigured(policy: str, type_: str, props: dict) -> list[str]:
    """A resource policy's violations when the SDK hands the rule no config at all (its own defaults apply)."""
    found: list[str] = []
    args = ResourceValidationArgs(type_, _props(props), f"urn:pulumi:t::kiln::{type_}::r", "r", _opts(), None, {})
    POLICIES[policy].validate(args, lambda message, urn=None: found.append(message))
    return found


# =========================================================================== asgs.py

ZONE = "asg-single-zone"
TAGS = "asg-autoscaler-discovery-tags"
PINNED = "asg-launch-template-version-pinned"
DESIRED = "asg-desired-capacity-ignored"
SPANS = "spans {} zones/subnets; kiln uses one ASG per availability zone"
NO_ZONE = "names neither availabilityZones nor vpcZoneIdentifiers (exactly one zone expected)"


@pytest.mark.parametrize("props", [{"availabilityZones": ["eu-west-1a"]}, {"vpcZoneIdentifiers": ["subnet-1"]},
                                   {"availabilityZones": ["eu-west-1a"], "vpcZoneIdentifiers": ["subnet-1"]},
                                   {"vpcZoneIdentifiers": [UNKNOWN]}])
def test_one_zone_or_one_subnet_is_one_zone(props):
    assert violations(ZONE, ASG, props) == []


@pytest.mark.parametrize("props, message", [
    ({"availabilityZones": ["a", "b"]}, SPANS.format(2)),
    ({"vpcZoneIdentifiers": ["s1", "s2"]}, SPANS.format(2)),
    ({"availabilityZones": ["a"], "vpcZoneIdentifiers": ["s1", "s2", "s3"]}, SPANS.format(3)),
    ({"availabilityZones": ["a", "b", "c"], "vpcZoneIdentifiers": ["s1"]}, SPANS.format(3)),
    ({"vpcZoneIdentifiers": [UNKNOWN, UNKNOWN]}, SPANS.format(2)),   # ids unknown in a preview, their count is not
    ({}, NO_ZONE),
    ({"availabilityZones": [], "vpcZoneIdentifiers": []}, NO_ZONE),
])
def test_zone_count_other_than_one_is_refused_with_the_count(props, message):
    assert violations(ZONE, ASG, props) == [message]


def test_a_subnet_list_not_known_in_a_preview_is_not_guessed():
    with pytest.raises(UnknownValueError):
        violations(ZONE, ASG, {"vpcZoneIdentifiers": UNKNOWN})


def test_asg_rules_ignore_other_resource_types():
    for policy in (ZONE, TAGS, PINNED, DESIRED):
        assert violations(policy, LT, {}) == [], policy


CA_ENABLED = "k8s.io/cluster-autoscaler/enabled"
CA_CLUSTER = "k8s.io/cluster-autoscaler/kiln"
MISSING_ENABLED = "missing tag k8s.io/cluster-autoscaler/enabled=true (cluster-autoscaler auto-discovery)"
MISSING_CLUSTER = "missing tag k8s.io/cluster-autoscaler/<cluster-name> (cluster-autoscaler auto-discovery)"


def asg_tags(**tags):
    return {"tags": [{"key": k, "value": v, "propagateAtLaunch": False} for k, v in tags.items()]}


@pytest.mark.parametrize("enabled", ["true", "True", "TRUE", True])
def test_discovery_tags_accept_true_in_any_case_or_as_a_boolean(enabled):
    assert violations(TAGS, ASG, asg_tags(**{CA_ENABLED: enabled, CA_CLUSTER: "owned"})) == []
    assert violations(TAGS, ASG, {"tags": {CA_ENABLED: enabled, CA_CLUSTER: "owned"}}) == []


@pytest.mark.parametrize("tags, expected", [
    ({}, [MISSING_ENABLED, MISSING_CLUSTER]),
    ({CA_CLUSTER: "owned"}, [MISSING_ENABLED]),
    ({CA_ENABLED: "false", CA_CLUSTER: "owned"}, [MISSING_ENABLED]),
    ({CA_ENABLED: False, CA_CLUSTER: "owned"}, [MISSING_ENABLED]),
    ({CA_ENABLED: "yes", CA_CLUSTER: "owned"}, [MISSING_ENABLED]),
    ({CA_ENABLED: "true"}, [MISSING_CLUSTER]),
    # node-template tags describe the nodes; they do not name the cluster
    ({CA_ENABLED: "true", "k8s.io/cluster-autoscaler/node-template/label/kiln.dev/model": "v6"}, [MISSING_CLUSTER]),
    ({CA_ENABLED: "true", "kubernetes.io/cluster/kiln": "owned"}, [MISSING_CLUSTER]),
])
def test_missing_discovery_tags_are_named(tags, expected):
    assert violations(TAGS, ASG, asg_tags(**tags)) == expected


PIN = "{} is {!r}; pin a launch-template version number, not $Latest/$Default"
LT_VERSION = "launchTemplate.version"
MIXED_VERSION = "mixedInstancesPolicy.launchTemplate.launchTemplateSpecification.version"
OVERRIDE_VERSION = "mixedInstancesPolicy.launchTemplate.overrides[{}].launchTemplateSpecification.version"


@pytest.mark.parametrize("version", ["3", 3, 3.0, "1", 1, " 12 ", "2024"])
def test_a_version_number_is_pinned(version):
    assert violations(PINNED, ASG, {"launchTemplate": {"id": "lt-1", "version": version}}) == []


@pytest.mark.parametrize("version", ["$Latest", "$Default", " $Latest ", "", "   "])
def test_a_floating_or_empty_version_is_refused(version):
    assert violations(PINNED, ASG, {"launchTemplate": {"id": "lt-1", "version": version}}) == \
        [PIN.format(LT_VERSION, version)]


@pytest.mark.parametrize("version", ["$LATEST", "$latest", "latest", "v2", "3.5", 3.5, "0", 0, "-1", "+3", "1e3",
                                     "\u0663", True, False, None, "inf", float("inf")])
def test_anything_but_a_version_number_is_refused(version):
    # (a bug: only the exact spellings $Latest/$Default were refused, though the rule promises a number)
    assert violations(PINNED, ASG, {"launchTemplate": {"id": "lt-1", "version": version}}) == \
        [PIN.format(LT_VERSION, version)]


def test_a_template_without_a_version_is_refused():
    assert violations(PINNED, ASG, {"launchTemplate": {"id": "lt-1"}}) == [PIN.format(LT_VERSION, None)]


def test_an_asg_without_a_template_is_refused():
    assert violations(PINNED, ASG, {"launchConfiguration": "lc-1"}) == ["uses no launch template"]
    assert violations(PINNED, ASG, {"mixedInstancesPolicy": {"launchTemplate": {"overrides": [
        {"instanceType": "m7i.large"}]}}}) == ["uses no launch template"]


def mixed(spec_version, *override_versions):
    overrides = [{"instanceType": "m7i.large"}]
    overrides += [{"instanceType": "g5.xlarge", "launchTemplateSpecification": {"launchTemplateId": "lt-2", "version": v}}
                  for v in override_versions]
    return {"mixedInstancesPolicy": {"launchTemplate": {
        "launchTemplateSpecification": {"launchTemplateId": "lt-1", "version": spec_version}, "overrides": overrides}}}


def test_every_template_of_a_mixed_instances_policy_is_pinned():
    assert violations(PINNED, ASG, mixed("4", "2", "7")) == []
    assert violations(PINNED, ASG, mixed("$Latest", "2", "$Default")) == [
        PIN.format(MIXED_VERSION, "$Latest"), PIN.format(OVERRIDE_VERSION.format(2), "$Default")]
    assert violations(PINNED, ASG, mixed("4", "$Latest")) == [PIN.format(OVERRIDE_VERSION.format(1), "$Latest")]


def test_a_mixed_specification_without_a_version_is_refused():
    props = {"mixedInstancesPolicy": {"launchTemplate": {"launchTemplateSpecification": {"launchTemplateId": "lt-1"}}}}
    assert violations(PINNED, ASG, props) == [PIN.format(MIXED_VERSION, None)]


def test_a_plain_and_a_mixed_template_are_both_judged():
    props = {"launchTemplate": {"id": "lt-0", "version": "$Default"}, **mixed("$Latest", "$Latest")}
    assert violations(PINNED, ASG, props) == [PIN.format(LT_VERSION, "$Default"), PIN.format(MIXED_VERSION, "$Latest"),
                                              PIN.format(OVERRIDE_VERSION.format(1), "$Latest")]


def test_a_single_override_given_as_a_mapping_is_judged():
    props = {"mixedInstancesPolicy": {"launchTemplate": {
        "launchTemplateSpecification": {"launchTemplateId": "lt-1", "version": "1"},
        "overrides": {"instanceType": "g5", "launchTemplateSpecification": {"launchTemplateId": "lt-2",
                                                                             "version": "$Latest"}}}}}
    assert violations(PINNED, ASG, props) == [PIN.format(OVERRIDE_VERSION.format(0), "$Latest")]


DESIRED_MESSAGE = ("desiredCapacity must be in ignore_changes, or every `pulumi up` resets what the autoscaler and "
                   "the rollout chose")


@pytest.mark.parametrize("ignored", [["desiredCapacity"], ["desired_capacity"], ["tags", "desiredCapacity"]])
def test_desired_capacity_left_to_the_autoscaler(ignored):
    assert violations(DESIRED, ASG, {}, ignore_changes=ignored) == []


@pytest.mark.parametrize("ignored", [[], ["minSize", "maxSize"], ["DesiredCapacity"], ["desiredcapacity"]])
def test_desired_capacity_managed_by_pulumi_is_refused(ignored):
    assert violations(DESIRED, ASG, {}, ignore_changes=ignored) == [DESIRED_MESSAGE]


# =========================================================================== eks.py

ENDPOINT = "eks-endpoint-not-public-to-world"
SECRETS = "eks-secrets-encryption"
LOGGING = "eks-control-plane-logging"
AUTH = "eks-api-authentication-mode"
DEFAULT_LIMIT = "at most a /8 of IPv4 (16777216 addresses) or a /32 of IPv6"
PRIVATE_ENDPOINT = {EKS: {"endpointPublicAccess": False}, AWS_EKS: {"vpcConfig": {"endpointPublicAccess": False}}}


def endpoint_props(type_, cidrs, public=True):
    if type_ == EKS:
        return {"endpointPublicAccess": public, "publicAccessCidrs": cidrs}
    return {"vpcConfig": {"endpointPublicAccess": public, "publicAccessCidrs": cidrs, "subnetIds": ["subnet-1"]}}


def where(type_):
    return "publicAccessCidrs" if type_ == EKS else "vpcConfig.publicAccessCidrs"


@pytest.mark.parametrize("type_", [EKS, AWS_EKS])
def test_a_private_endpoint_needs_no_cidrs(type_):
    assert violations(ENDPOINT, type_, PRIVATE_ENDPOINT[type_]) == []
    assert violations(ENDPOINT, type_, endpoint_props(type_, ["0.0.0.0/0"], public=False)) == []


@pytest.mark.parametrize("type_, props", [
    (EKS, {}), (EKS, {"endpointPublicAccess": True}), (EKS, {"publicAccessCidrs": []}),
    (AWS_EKS, {}), (AWS_EKS, {"vpcConfig": {"subnetIds": ["subnet-1"]}}),
    (AWS_EKS, {"vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": []}}),
])
def test_a_public_endpoint_is_public_by_default_and_open_without_cidrs(type_, props):
    assert violations(ENDPOINT, type_, props) == [
        f"the public endpoint is enabled without {where(type_)}, which defaults to 0.0.0.0/0"]


@pytest.mark.parametrize("type_", [EKS, AWS_EKS])
def test_public_endpoint_cidrs_are_judged_one_by_one_then_together(type_):
    w = where(type_)
    assert violations(ENDPOINT, type_, endpoint_props(type_, ["203.0.113.0/24", "198.51.100.7/32"])) == []
    assert violations(ENDPOINT, type_, endpoint_props(type_, ["203.0.113.0/24", "0.0.0.0/0", "::/0"])) == [
        f"{w} contains 0.0.0.0/0: the API endpoint is open to the whole internet",
        f"{w} contains ::/0: the API endpoint is open to the whole internet"]
    assert violations(ENDPOINT, type_, endpoint_props(type_, ["203.0.113.0/24", "32.0.0.0/7"])) == [
        f"{w} contains 32.0.0.0/7, which admits 33554432 public addresses (IPv4); {DEFAULT_LIMIT} allowed"]
    assert violations(ENDPOINT, type_, endpoint_props(type_, ["32.0.0.0/8", "34.0.0.0/8"])) == [
        f"{w} 32.0.0.0/8, 34.0.0.0/8 together admit 33554432 public addresses (IPv4); {DEFAULT_LIMIT} allowed"]
    assert violations(ENDPOINT, type_, endpoint_props(type_, ["not-a-cidr", "203.0.113.0/24"])) == [
        f"{w} contains 'not-a-cidr', which is not a CIDR block: what it admits cannot be checked"]


def test_a_single_cidr_string_is_judged_as_a_list_of_one():
    assert violations(ENDPOINT, EKS, {"publicAccessCidrs": "0.0.0.0/0"}) == [
        "publicAccessCidrs contains 0.0.0.0/0: the API endpoint is open to the whole internet"]


def test_endpoint_prefix_limits_are_configurable_for_each_address_family():
    v6 = endpoint_props(EKS, ["2a00::/40"])
    assert violations(ENDPOINT, EKS, v6) == []
    assert violations(ENDPOINT, EKS, v6, config={"ipv6MinPrefix": 48}) == [
        "publicAccessCidrs contains 2a00::/40, which admits about 2^88 public addresses (IPv6); "
        "at most a /8 of IPv4 (16777216 addresses) or a /48 of IPv6 allowed"]
    assert violations(ENDPOINT, EKS, endpoint_props(EKS, ["2a00::/48", "2a01::/48"]),
                      config={"ipv6MinPrefix": 48}) == [
        "publicAccessCidrs 2a00::/48, 2a01::/48 together admit about 2^81 public addresses (IPv6); "
        "at most a /8 of IPv4 (16777216 addresses) or a /48 of IPv6 allowed"]
    v4 = endpoint_props(EKS, ["203.0.113.0/24"])
    assert violations(ENDPOINT, EKS, v4, config={"ipv4MinPrefix": 25}) == [
        "publicAccessCidrs contains 203.0.113.0/24, which admits 256 public addresses (IPv4); "
        "at most a /25 of IPv4 (128 addresses) or a /32 of IPv6 allowed"]
    assert violations(ENDPOINT, EKS, endpoint_props(EKS, ["203.0.113.0/25", "198.51.100.0/25"]),
                      config={"ipv4MinPrefix": 25, "ipv6MinPrefix": 40}) == [
        "publicAccessCidrs 203.0.113.0/25, 198.51.100.0/25 together admit 256 public addresses (IPv4); "
        "at most a /25 of IPv4 (128 addresses) or a /40 of IPv6 allowed"]


def test_endpoint_limits_default_when_the_sdk_passes_no_config():
    assert unconfigured(ENDPOINT, EKS, endpoint_props(EKS, ["32.0.0.0/8"])) == []
    assert unconfigured(ENDPOINT, EKS, endpoint_props(EKS, ["32.0.0.0/7"])) == [
        f"publicAccessCidrs contains 32.0.0.0/7, which admits 33554432 public addresses (IPv4); {DEFAULT_LIMIT} allowed"]
    assert unconfigured(ENDPOINT, EKS, endpoint_props(EKS, ["2a00::/31"])) == [
        "publicAccessCidrs contains 2a00::/31, which admits about 2^97 public addresses (IPv6); "
        f"{DEFAULT_LIMIT} allowed"]


def test_endpoint_rule_ignores_other_types():
    assert violations(ENDPOINT, BUCKET, {"publicAccessCidrs": ["0.0.0.0/0"]}) == []


KMS = "arn:aws:kms:eu-west-1:111122223333:key/1"
COMPONENT_SECRETS = "encryptionConfigKeyArn must name a KMS key for secrets envelope encryption"
CLUSTER_SECRETS = "encryptionConfig must encrypt 'secrets' with a KMS key"


@pytest.mark.parametrize("props, expected", [
    ({"encryptionConfigKeyArn": KMS}, []), ({}, [COMPONENT_SECRETS]), ({"encryptionConfigKeyArn": ""},
                                                                         [COMPONENT_SECRETS])])
def test_the_component_names_a_secrets_key(props, expected):
    assert violations(SECRETS, EKS, props) == expected


@pytest.mark.parametrize("enc, expected", [
    ({"resources": ["secrets"], "provider": {"keyArn": KMS}}, []),
    ({"resources": "secrets", "provider": {"keyArn": KMS}}, []),
    ({"resources": ["secrets"], "provider": {"keyArn": ""}}, [CLUSTER_SECRETS]),
    ({"resources": ["secrets"], "provider": {}}, [CLUSTER_SECRETS]),
    ({"resources": ["secrets"]}, [CLUSTER_SECRETS]),
    ({"resources": ["configmaps"], "provider": {"keyArn": KMS}}, [CLUSTER_SECRETS]),
    ({"provider": {"keyArn": KMS}}, [CLUSTER_SECRETS]),
    (None, [CLUSTER_SECRETS]),
])
def test_the_cluster_encrypts_secrets_with_a_key(enc, expected):
    props = {} if enc is None else {"encryptionConfig": enc}
    assert violations(SECRETS, AWS_EKS, props) == expected
    assert violations(SECRETS, BUCKET, props) == []


ALL_LOGS = ["api", "audit", "authenticator"]


@pytest.mark.parametrize("type_", [EKS, AWS_EKS])
def test_required_control_plane_logs_are_named_when_missing(type_):
    assert violations(LOGGING, type_, {"enabledClusterLogTypes": ALL_LOGS}) == []
    assert violations(LOGGING, type_, {}) == ["enabledClusterLogTypes lacks api, audit, authenticator"]
    assert violations(LOGGING, type_, {"enabledClusterLogTypes": ["audit", "scheduler"]}) == [
        "enabledClusterLogTypes lacks api, authenticator"]
    assert violations(LOGGING, type_, {"enabledClusterLogTypes": "audit"}) == [
        "enabledClusterLogTypes lacks api, authenticator"]


def test_required_log_types_come_from_config_or_the_rule_default():
    assert violations(LOGGING, EKS, {"enabledClusterLogTypes": ALL_LOGS}, config={"requiredLogTypes": ["scheduler"]}) \
        == ["enabledClusterLogTypes lacks scheduler"]
    assert violations(LOGGING, EKS, {"enabledClusterLogTypes": ["scheduler"]},
                      config={"requiredLogTypes": ["scheduler"]}) == []
    assert unconfigured(LOGGING, EKS, {"enabledClusterLogTypes": ["api"]}) == [
        "enabledClusterLogTypes lacks audit, authenticator"]
    assert violations(LOGGING, BUCKET, {}) == []


@pytest.mark.parametrize("type_, props, expected", [
    (EKS, {"authenticationMode": "API"}, []),
    (AWS_EKS, {"accessConfig": {"authenticationMode": "API"}}, []),
    (EKS, {"authenticationMode": "API_AND_CONFIG_MAP"},
     ["authenticationMode is 'API_AND_CONFIG_MAP'; use API (access entries, no aws-auth ConfigMap)"]),
    (EKS, {}, ["authenticationMode is None; use API (access entries, no aws-auth ConfigMap)"]),
    (EKS, {"accessConfig": {"authenticationMode": "API"}},
     ["authenticationMode is None; use API (access entries, no aws-auth ConfigMap)"]),
    (AWS_EKS, {"accessConfig": {"authenticationMode": "CONFIG_MAP"}},
     ["accessConfig.authenticationMode is 'CONFIG_MAP'; use API (access entries, no aws-auth ConfigMap)"]),
    (AWS_EKS, {"authenticationMode": "API"},
     ["accessConfig.authenticationMode is None; use API (access entries, no aws-auth ConfigMap)"]),
    (AWS_EKS, {"accessConfig": {"authenticationMode": "api"}},
     ["accessConfig.authenticationMode is 'api'; use API (access entries, no aws-auth ConfigMap)"]),
    (BUCKET, {"authenticationMode": "CONFIG_MAP"}, []),
])
def test_authentication_mode_is_api(type_, props, expected):
    assert violations(AUTH, type_, props) == expected


# =========================================================================== compute.py: IMDSv2

IMDS = "compute-imdsv2-required"
EBS = "compute-ebs-encrypted"
PUBLIC_IP = "compute-no-public-ip"
SSH = "compute-no-ssh-access"
DECLARED = "compute-launch-template-declared"
IMDS_UNSET = ("metadataOptions is not set: IMDSv1 stays enabled (set httpTokens: required and a hop limit of at "
              "most {})")
TOKENS = "metadataOptions.httpTokens must be 'required' (IMDSv2 only)"
HOPS_UNSET = "metadataOptions.httpPutResponseHopLimit must be set (at most {})"
HOPS = "metadataOptions.httpPutResponseHopLimit is {}; at most {} allowed"
TEMPLATE = {"launchTemplate": {"id": "lt-1", "version": "1"}}


@pytest.mark.parametrize("type_", [LT, LC, INSTANCE, SPOT])
@pytest.mark.parametrize("metadata, expected", [
    ({"httpTokens": "required", "httpPutResponseHopLimit": 2}, []),
    ({"httpTokens": "required", "httpPutResponseHopLimit": 1}, []),
    ({"httpTokens": "required", "httpPutResponseHopLimit": "2"}, []),
    ({"httpTokens": "required", "httpPutResponseHopLimit": 3}, [HOPS.format(3, 2)]),
    ({"httpTokens": "required", "httpPutResponseHopLimit": "64"}, [HOPS.format(64, 2)]),
    ({"httpTokens": "required"}, [HOPS_UNSET.format(2)]),
    ({"httpTokens": "required", "httpPutResponseHopLimit": True}, [HOPS_UNSET.format(2)]),
    ({"httpTokens": "optional", "httpPutResponseHopLimit": 2}, [TOKENS]),
    ({"httpTokens": "Required", "httpPutResponseHopLimit": 5}, [TOKENS, HOPS.format(5, 2)]),
    ({}, [TOKENS, HOPS_UNSET.format(2)]),
    (None, [IMDS_UNSET.format(2)]),
])
def test_imds_settings_of_everything_that_carries_them(type_, metadata, expected):
    props = {} if metadata is None else {"metadataOptions": metadata}
    assert violations(IMDS, type_, props) == expected


def test_the_hop_limit_comes_from_config_or_the_rule_default():
    two = {"metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2}}
    assert violations(IMDS, LT, two, config={"maxHopLimit": 1}) == [HOPS.format(2, 1)]
    assert violations(IMDS, LT, {}, config={"maxHopLimit": 1}) == [IMDS_UNSET.format(1)]
    assert unconfigured(IMDS, LT, two) == []
    assert unconfigured(IMDS, LT, {"metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 3}}) \
        == [HOPS.format(3, 2)]


@pytest.mark.parametrize("type_", [INSTANCE, SPOT])
def test_an_instance_from_a_template_is_judged_by_the_template_unless_it_overrides(type_):
    assert violations(IMDS, type_, TEMPLATE) == []
    assert violations(IMDS, type_, {**TEMPLATE, "metadataOptions": {"httpTokens": "optional"}}) == \
        [TOKENS, HOPS_UNSET.format(2)]


NODE_GROUP_IMDS = "no launchTemplate: EKS's default launch template allows IMDSv1 (hop limit 2); use a launch template"
BATCH_IMDS = "computeResources has no launchTemplate: Batch's instances keep IMDSv1; use a launch template"
DEFAULT_NODE_GROUP = ("skipDefaultNodeGroup is not true: pulumi-eks launches a default node group; "
                      "kiln declares its own")


@pytest.mark.parametrize("type_, props, expected", [
    (NODE_GROUP, {}, [NODE_GROUP_IMDS]), (MANAGED, {"instanceTypes": ["m7i.large"]}, [NODE_GROUP_IMDS]),
    (NODE_GROUP, TEMPLATE, []), (MANAGED, TEMPLATE, []),
    (BATCH, {"computeResources": {"type": "EC2"}}, [BATCH_IMDS]),
    (BATCH, {"computeResources": {"type": "spot"}}, [BATCH_IMDS]),
    (BATCH, {"computeResources": {"type": "FARGATE"}}, []),
    (BATCH, {"computeResources": {"maxVcpus": 4}}, []),
    (BATCH, {"computeResources": {"type": "EC2", "launchTemplate": {"launchTemplateId": "lt-1"}}}, []),
    (SPOT_FLEET, {"launchSpecifications": [{"ami": "ami-1"}]}, ["launchSpecifications cannot require IMDSv2; "
                                                               "use launchTemplateConfigs"]),
    (SPOT_FLEET, {"launchTemplateConfigs": [{"launchTemplateSpecification": {"id": "lt-1"}}]}, []),
    (EKS, {}, [DEFAULT_NODE_GROUP]), (EKS, {"skipDefaultNodeGroup": False}, [DEFAULT_NODE_GROUP]),
    (EKS, {"skipDefaultNodeGroup": "true"}, [DEFAULT_NODE_GROUP]), (EKS, {"skipDefaultNodeGroup": True}, []),
    (BUCKET, {}, []),
])
def test_launchers_that_cannot_require_imdsv2_are_named(type_, props, expected):
    assert violations(IMDS, type_, props) == expected


# =========================================================================== compute.py: EBS encryption

ROOT_UNSET = "rootBlockDevice is not set: the root volume is encrypted only if the account encrypts by default"
ROOT = "rootBlockDevice.encrypted must be true"


def test_launch_template_volumes_are_named_when_unencrypted():
    props = {"blockDeviceMappings": [
        {"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}},
        {"deviceName": "/dev/xvdb", "ebs": {"encrypted": True}},
        {"deviceName": "/dev/xvdc", "ebs": {"encrypted": "TRUE"}},
        {"deviceName": "/dev/sdb", "virtualName": "ephemeral0"},       # instance store: no EBS settings
        {"ebs": {"volumeSize": 10}},
        {"deviceName": "/dev/xvdd", "ebs": {"encrypted": False}},
    ]}
    assert violations(EBS, LT, props) == ["EBS volume /dev/xvda is not encrypted", "EBS volume ? is not encrypted",
                                          "EBS volume /dev/xvdd is not encrypted"]


@pytest.mark.parametrize("encrypted, expected", [(True, []), ("true", []), (" True ", []), (False, [ROOT]),
                                                 ("false", [ROOT]), ("yes", [ROOT]), (None, [ROOT])])
@pytest.mark.parametrize("type_", [LC, INSTANCE, SPOT])
def test_the_root_volume_is_encrypted_as_a_boolean_or_a_string(type_, encrypted, expected):
    root = {"volumeSize": 50} if encrypted is None else {"encrypted": encrypted}
    assert violations(EBS, type_, {"rootBlockDevice": root}) == expected


@pytest.mark.parametrize("type_", [LC, INSTANCE, SPOT])
def test_extra_ebs_devices_are_named_when_unencrypted(type_):
    devices = [{"deviceName": "/dev/sdf", "encrypted": False}, {"deviceName": "/dev/sdg", "encrypted": "true"},
               {"deviceName": "/dev/sdh", "encrypted": True}, {"volumeSize": 10}, {"deviceName": "/dev/sdi",
                                                                                   "encrypted": "false"}]
    assert violations(EBS, type_, {"rootBlockDevice": {"encrypted": True}, "ebsBlockDevices": devices}) == [
        "ebsBlockDevices /dev/sdf is not encrypted", "ebsBlockDevices ? is not encrypted",
        "ebsBlockDevices /dev/sdi is not encrypted"]


def test_a_root_volume_is_required_unless_a_template_decides():
    assert violations(EBS, LC, {}) == [ROOT_UNSET]
    assert violations(EBS, LC, TEMPLATE) == [ROOT_UNSET]          # a launch configuration has no template
    assert violations(EBS, INSTANCE, {}) == [ROOT_UNSET]
    assert violations(EBS, INSTANCE, TEMPLATE) == []
    assert violations(EBS, SPOT, TEMPLATE) == []


@pytest.mark.parametrize("type_, props, expected", [
    (VOLUME, {"encrypted": True}, []), (VOLUME, {"encrypted": "true"}, []), (VOLUME, {}, ["encrypted must be true"]),
    (VOLUME, {"encrypted": False}, ["encrypted must be true"]),
    (SNAPSHOT_COPY, {"encrypted": True}, []), (SNAPSHOT_COPY, {}, ["encrypted must be true"]),
    (AMI_COPY, {"encrypted": True}, []), (AMI_COPY, {"encrypted": "false"}, ["encrypted must be true"]),
    (BY_DEFAULT, {}, []), (BY_DEFAULT, {"enabled": True}, []), (BY_DEFAULT, {"enabled": "true"}, []),
    (BY_DEFAULT, {"enabled": False}, ["enabled: false turns off the account's EBS encryption by default (every "
                                      "volume a rule cannot see)"]),
    (BY_DEFAULT, {"enabled": "false"}, ["enabled: false turns off the account's EBS encryption by default (every "
                                        "volume a rule cannot see)"]),
    (NODE_GROUP, {}, ["no launchTemplate: EKS's default launch template does not encrypt the node's volume"]),
    (MANAGED, {}, ["no launchTemplate: EKS's default launch template does not encrypt the node's volume"]),
    (NODE_GROUP, TEMPLATE, []),
    (BATCH, {"computeResources": {"type": "SPOT"}},
     ["computeResources has no launchTemplate: Batch's volumes are encrypted only if the account encrypts by default"]),
    (BATCH, {"computeResources": {"type": "FARGATE_SPOT"}}, []),
    (BUCKET, {"encrypted": False}, []),
])
def test_volumes_and_launchers_without_visible_encryption(type_, props, expected):
    assert violations(EBS, type_, props) == expected


def test_spot_fleet_specifications_need_every_volume_encrypted():
    specs = [
        {"rootBlockDevices": [{"encrypted": True}], "ebsBlockDevices": [{"encrypted": "true"}]},
        {},                                                                      # default volume: not visible
        {"rootBlockDevices": [{"encrypted": True}], "ebsBlockDevices": [{"encrypted": False}]},
        {"rootBlockDevices": [{"encrypted": False}]},
        {"ebsBlockDevices": [{"encrypted": True}]},
        {"rootBlockDevices": {"encrypted": True}},                               # one device given as a mapping
    ]
    assert violations(EBS, SPOT_FLEET, {"launchSpecifications": specs}) == [
        f"launchSpecifications[{i}] has an unencrypted (or default) volume" for i in (1, 2, 3)]


ROOT_COMPONENT = "nodeRootVolumeEncrypted must be true (pulumi-eks leaves the root volume unencrypted by default)"


@pytest.mark.parametrize("type_", [NODE_GROUP_V1, NODE_GROUP_V2, EKS])
@pytest.mark.parametrize("settings, expected", [
    ({"nodeRootVolumeEncrypted": True}, []), ({"encryptRootBlockDevice": True}, []), ({}, [ROOT_COMPONENT]),
    ({"nodeRootVolumeEncrypted": False, "encryptRootBlockDevice": False}, [ROOT_COMPONENT]),
    ({"nodeRootVolumeEncrypted": "true"}, [ROOT_COMPONENT]),
])
def test_pulumi_eks_node_settings_encrypt_the_root_volume(type_, settings, expected):
    assert violations(EBS, type_, settings) == expected


def test_a_cluster_without_a_default_node_group_has_no_node_settings():
    assert violations(EBS, EKS, {"skipDefaultNodeGroup": True}) == []
    assert violations(PUBLIC_IP, EKS, {"skipDefaultNodeGroup": True}) == []
    assert violations(SSH, EKS, {"skipDefaultNodeGroup": True, "nodePublicKey": "ssh-ed25519 AAAAC3"}) == []


# =========================================================================== compute.py: public IPs

NICS_UNSET = ("networkInterfaces is not set: the subnet's mapPublicIpOnLaunch decides whether instances get a "
              "public IP; set networkInterfaces[0].associatePublicIpAddress: 'false'")
NIC_UNSET = ("networkInterfaces[{}].associatePublicIpAddress is not set: the subnet's mapPublicIpOnLaunch decides; "
             "set it to 'false'")
NIC0_UNSET = NIC_UNSET.format(0)
PUBLIC_UNSET = "associatePublicIpAddress is not set: the subnet's mapPublicIpOnLaunch decides; set it to false"
MAP_PUBLIC = ("mapPublicIpOnLaunch gives every instance launched here without an explicit setting a public IP; "
              "set it to false")
EIP_MESSAGE = "associates an Elastic IP (a public address) with an instance or network interface"


@pytest.mark.parametrize("nics, expected", [
    (None, [NICS_UNSET]), ([], [NICS_UNSET]),
    ([{"associatePublicIpAddress": "false"}], []), ([{"associatePublicIpAddress": False}], []),
    ([{"associatePublicIpAddress": " FALSE "}], []),
    ([{"associatePublicIpAddress": "true"}], ["networkInterfaces[0].associatePublicIpAddress must not be true"]),
    ([{"associatePublicIpAddress": True}], ["networkInterfaces[0].associatePublicIpAddress must not be true"]),
    ([{"securityGroups": ["sg-1"]}], [NIC0_UNSET]), ([{"associatePublicIpAddress": "no"}], [NIC0_UNSET]),
    ([{"associatePublicIpAddress": "false"}, {"deviceIndex": 1}], []),          # only the primary decides
    ([{"associatePublicIpAddress": "false"}, {"associatePublicIpAddress": "true"}],
     ["networkInterfaces[1].associatePublicIpAddress must not be true"]),
])
def test_launch_template_interfaces_must_refuse_a_public_ip(nics, expected):
    props = {} if nics is None else {"networkInterfaces": nics}
    assert violations(PUBLIC_IP, LT, props) == expected


@pytest.mark.parametrize("nics, expected", [
    ([{"deviceIndex": 1, "associatePublicIpAddress": "false"}, {"deviceIndex": 0}], [NIC_UNSET.format(1)]),
    ([{"deviceIndex": 1, "associatePublicIpAddress": "false"}, {"deviceIndex": "0"}], [NIC_UNSET.format(1)]),
    ([{"deviceIndex": 1}, {"deviceIndex": 0, "associatePublicIpAddress": False}], [NIC_UNSET.format(0)]),
    ([{"deviceIndex": 1, "associatePublicIpAddress": "false"}, {"deviceIndex": 0, "associatePublicIpAddress": "false"}],
     []),
    ([{"deviceIndex": 0, "associatePublicIpAddress": "false"}, {"deviceIndex": 2}], []),
])
def test_the_primary_interface_is_found_by_device_index_wherever_it_is_listed(nics, expected):
    # (a bug: only the first listed interface was held to an explicit 'false', but a public IP goes to device 0)
    assert violations(PUBLIC_IP, LT, {"networkInterfaces": nics}) == expected


@pytest.mark.parametrize("type_", [LC, INSTANCE, SPOT])
@pytest.mark.parametrize("value, expected", [
    (False, []), ("false", []), (True, ["associatePublicIpAddress must not be true"]),
    ("true", ["associatePublicIpAddress must not be true"]), (None, [PUBLIC_UNSET]), ("0", [PUBLIC_UNSET])])
def test_instances_and_configurations_must_refuse_a_public_ip(type_, value, expected):
    props = {} if value is None else {"associatePublicIpAddress": value}
    assert violations(PUBLIC_IP, type_, props) == expected


def test_an_instance_from_a_template_leaves_the_public_ip_to_the_template_unless_it_asks_for_one():
    assert violations(PUBLIC_IP, INSTANCE, TEMPLATE) == []
    assert violations(PUBLIC_IP, INSTANCE, {**TEMPLATE, "associatePublicIpAddress": True}) == \
        ["associatePublicIpAddress must not be true"]
    assert violations(PUBLIC_IP, LC, TEMPLATE) == [PUBLIC_UNSET]


def test_spot_fleet_specifications_must_each_refuse_a_public_ip():
    specs = [{"associatePublicIpAddress": False}, {}, {"associatePublicIpAddress": True},
             {"associatePublicIpAddress": "false"}]
    assert violations(PUBLIC_IP, SPOT_FLEET, {"launchSpecifications": specs}) == [
        "launchSpecifications[1].associatePublicIpAddress must be false",
        "launchSpecifications[2].associatePublicIpAddress must be false"]
    assert violations(PUBLIC_IP, SPOT_FLEET, {"launchTemplateConfigs": [{}]}) == []


@pytest.mark.parametrize("type_, props, expected", [
    (SUBNET, {}, []), (SUBNET, {"mapPublicIpOnLaunch": False}, []), (SUBNET, {"mapPublicIpOnLaunch": True}, [MAP_PUBLIC]),
    (SUBNET, {"mapPublicIpOnLaunch": "true"}, [MAP_PUBLIC]),
    (DEFAULT_SUBNET, {}, [MAP_PUBLIC]), (DEFAULT_SUBNET, {"mapPublicIpOnLaunch": False}, []),
    (DEFAULT_SUBNET, {"mapPublicIpOnLaunch": "false"}, []),
    (EIP, {"domain": "vpc"}, []), (EIP, {"instance": "i-1"}, [EIP_MESSAGE]),
    (EIP, {"networkInterface": "eni-1"}, [EIP_MESSAGE]), (EIP, {"associateWithPrivateIp": "10.0.0.5"}, [EIP_MESSAGE]),
    (EIP_ASSOCIATION, {"allocationId": "eipalloc-1"}, []),
    (EIP_ASSOCIATION, {"allocationId": "eipalloc-1", "instanceId": "i-1"}, [EIP_MESSAGE]),
    (EIP_ASSOCIATION, {"allocationId": "eipalloc-1", "networkInterfaceId": "eni-1"}, [EIP_MESSAGE]),
    (BUCKET, {"instanceId": "i-1", "instance": "i-1", "mapPublicIpOnLaunch": True}, []),
])
def test_subnets_and_elastic_ips_that_hand_out_public_addresses(type_, props, expected):
    assert violations(PUBLIC_IP, type_, props) == expected


@pytest.mark.parametrize("type_", [NODE_GROUP_V1, NODE_GROUP_V2, EKS])
def test_pulumi_eks_nodes_must_not_get_public_ips(type_):
    assert violations(PUBLIC_IP, type_, {"nodeAssociatePublicIpAddress": False}) == []
    for props in ({}, {"nodeAssociatePublicIpAddress": True}, {"nodeAssociatePublicIpAddress": "false"}):
        assert violations(PUBLIC_IP, type_, props) == [
            "nodeAssociatePublicIpAddress must be false (pulumi-eks gives nodes public IPs by default)"], props


# =========================================================================== compute.py: SSH


@pytest.mark.parametrize("type_", [LT, LC, INSTANCE, SPOT])
def test_a_key_pair_on_a_launcher_is_named(type_):
    assert violations(SSH, type_, {"keyName": "ops"}) == ["keyName is 'ops'; nodes are reached through SSM, not SSH"]
    assert violations(SSH, type_, {"keyName": ""}) == []
    assert violations(SSH, type_, {}) == []


@pytest.mark.parametrize("type_, props, expected", [
    (NODE_GROUP, {"remoteAccess": {"ec2SshKey": "ops"}}, ["remoteAccess opens SSH to the nodes; they are reached "
                                                          "through SSM"]),
    (MANAGED, {"remoteAccess": {}}, ["remoteAccess opens SSH to the nodes; they are reached through SSM"]),
    (NODE_GROUP, {}, []),
    (BATCH, {"computeResources": {"type": "EC2", "ec2KeyPair": "ops"}},
     ["computeResources.ec2KeyPair is 'ops'; use SSM, not SSH"]),
    (BATCH, {"computeResources": {"type": "EC2"}}, []),
    (BUCKET, {"keyName": "ops", "remoteAccess": {}}, []),
])
def test_remote_access_and_batch_key_pairs_are_named(type_, props, expected):
    assert violations(SSH, type_, props) == expected


def test_spot_fleet_specifications_with_a_key_pair_are_named():
    specs = [{"keyName": "a"}, {"ami": "ami-1"}, {"keyName": "b", "userData": "#!/bin/bash\necho ok"}]
    assert violations(SSH, SPOT_FLEET, {"launchSpecifications": specs}) == [
        "launchSpecifications[0].keyName is 'a'; use SSM, not SSH",
        "launchSpecifications[2].keyName is 'b'; use SSM, not SSH"]


@pytest.mark.parametrize("type_", [NODE_GROUP_V1, NODE_GROUP_V2, EKS])
def test_pulumi_eks_node_keys_are_named(type_):
    assert violations(SSH, type_, {"nodePublicKey": "ssh-ed25519 AAAAC3", "keyName": "ops"}) == [
        "nodePublicKey gives the nodes an SSH key; they are reached through SSM",
        "keyName gives the nodes an SSH key; they are reached through SSM"]
    assert violations(SSH, type_, {"keyName": "ops"}) == [
        "keyName gives the nodes an SSH key; they are reached through SSM"]
    assert violations(SSH, type_, {"nodePublicKey": ""}) == []


SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ssh_message(where, found):
    return f"{where} sets up SSH logins ({found!r}); nodes are reached through SSM, not SSH"


@pytest.mark.parametrize("type_", [LT, LC, INSTANCE, SPOT])
def test_user_data_that_lets_ssh_in_is_named_with_what_it_does(type_):
    assert violations(SSH, type_, {"userData": "#cloud-config\nssh_pwauth: true\n"}) == [
        ssh_message("userData", "ssh_pwauth: true")]
    assert violations(SSH, type_, {"userDataBase64": b64(b"#!/bin/bash\necho '" + SSH_KEY.encode() + b"' >> x")}) == [
        ssh_message("userDataBase64", "ssh-ed25519 AAAA")]
    assert violations(SSH, type_, {"keyName": "k", "userData": "PermitRootLogin yes"}) == [
        "keyName is 'k'; nodes are reached through SSM, not SSH", ssh_message("userData", "PermitRootLogin yes")]
    assert violations(SSH, type_, {"userData": "#!/bin/bash\n/etc/eks/bootstrap.sh kiln\n"}) == []


def test_user_data_is_read_plain_base64_and_gzipped():
    script = b"#cloud-config\nchpasswd:\n  list: root:hunter2\n"
    assert violations(SSH, LT, {"userData": b64(gzip.compress(script))}) == [ssh_message("userData", "chpasswd")]
    # binary user data (not UTF-8) is read with replacement characters, not refused as unreadable
    assert violations(SSH, LT, {"userData": b64(b"\xff\xfe\x00" + b"\nPasswordAuthentication yes\n")}) == [
        ssh_message("userData", "PasswordAuthentication yes")]
    assert violations(SSH, LT, {"userData": b64(gzip.compress(b"\xff\xfe" + b"authorized_keys"))}) == [
        ssh_message("userData", "authorized_keys")]


def test_base64_wrapped_over_lines_is_read():
    script = b"#" * 50 + b" PermitRootLogin yes\n" + b"# more\n" * 10   # the setting straddles the first wrap
    wrapped = base64.encodebytes(script).decode()                          # (76 characters = 57 bytes a line)
    assert "\n" in wrapped.strip()
    assert violations(SSH, LT, {"userData": wrapped}) == [ssh_message("userData", "PermitRootLogin yes")]


def test_text_that_only_looks_like_base64_or_gzip_is_read_as_it_is():
    chpasswd = b64(b"chpasswd")
    assert violations(SSH, LT, {"userData": chpasswd[:4] + "!" + chpasswd[4:]}) == []  # not base64: not decoded
    assert violations(SSH, LT, {"userData": b64(b"\x1f\x8b not gzip at all")}) == []
    assert violations(SSH, LT, {"userData": b64(b"\x1f\x8b") + "\nssh_pwauth: yes"}) == [
        ssh_message("userData", "ssh_pwauth: yes")]


def test_user_data_with_an_unpaired_surrogate_is_read_not_crashed_on():
    # a str UTF-8 cannot encode (a JSON "\\ud800" escape decodes to one): read with a replacement, not crashed on
    assert violations(SSH, LT, {"userData": "\ud800#!/bin/bash\necho ok"}) == []
    assert violations(SSH, LT, {"userData": "\ud800\nssh_pwauth: true"}) == [ssh_message("userData", "ssh_pwauth: true")]


@pytest.mark.parametrize("value", [5, True, ["ssh_pwauth: true"], {"text": "ssh_pwauth: true"}, ""])
def test_user_data_that_is_not_text_is_not_read(value):
    assert violations(SSH, LT, {"userData": value}) == []


def test_a_long_ssh_match_is_shown_cut_to_forty_characters():
    found = "ssh-rsa" + " " * 40 + "AAAAB3NzaC1yc2E"
    assert violations(SSH, LT, {"userData": found}) == [ssh_message("userData", ("ssh-rsa" + " " * 40)[:40])]
    exact = "sk-ecdsa-sha2-nistp256@openssh.com AAAA"        # 39 characters: shown whole
    assert violations(SSH, LT, {"userData": exact + "C3Nz"}) == [ssh_message("userData", exact)]


def test_spot_fleet_and_pulumi_eks_user_data_are_read():
    specs = [{"userData": "#!/bin/bash\necho ok"}, {"userData": b64(b"ssh_authorized_keys:\n  - x")}]
    assert violations(SSH, SPOT_FLEET, {"launchSpecifications": specs}) == [
        ssh_message("launchSpecifications[1].userData", "ssh_authorized_keys")]
    for type_ in (NODE_GROUP_V1, NODE_GROUP_V2, EKS):
        assert violations(SSH, type_, {"nodeUserData": "PermitRootLogin yes",
                                       "nodeUserDataOverride": "ssh_pwauth: 1"}) == [
            ssh_message("nodeUserData", "PermitRootLogin yes"), ssh_message("nodeUserDataOverride", "ssh_pwauth: 1")]
    assert violations(SSH, BUCKET, {"nodeUserData": "PermitRootLogin yes", "userData": "PermitRootLogin yes"}) == []
    assert violations(SSH, MANAGED, {"nodeUserData": "PermitRootLogin yes", "userData": "PermitRootLogin yes"}) == []


# =========================================================================== compute.py: templates the pack can see

TEMPLATE_LT = resource(LT, "lt", {"id": "lt-1", "name": "nodes"})
CONFIGURATION = resource(LC, "lc", {"id": "lc-id", "name": "lc-name"})


def undeclared(r, where, value, what="launch template"):
    return (f"{r.resource_type} {r.name!r}: {where} ({value!r}) is not a {what} declared in this stack, so no rule "
            f"can check what it launches", r.urn)


def declared_violations(*resources):
    return stack_violations(DECLARED, [TEMPLATE_LT, CONFIGURATION, *resources], with_urns=True)


MIXED_SPEC = "mixedInstancesPolicy.launchTemplate.launchTemplateSpecification"
OVERRIDE_SPEC = "mixedInstancesPolicy.launchTemplate.overrides[{}].launchTemplateSpecification"


def asg_mixed(spec, *override_specs):
    overrides = [{"instanceType": "m7i.large"}] + [{"instanceType": "g5", "launchTemplateSpecification": s}
                                                   for s in override_specs]
    return {"mixedInstancesPolicy": {"launchTemplate": {"launchTemplateSpecification": spec, "overrides": overrides}}}


@pytest.mark.parametrize("type_, props", [
    (ASG, {"launchTemplate": {"id": "lt-1"}}), (ASG, {"launchTemplate": {"name": "nodes"}}),
    (ASG, asg_mixed({"launchTemplateId": "lt-1"}, {"launchTemplateName": "nodes"})),
    (ASG, asg_mixed({"launchTemplateName": "nodes"}, {"launchTemplateId": "lt-1"})),
    (ASG, {"launchConfiguration": "lc-name"}), (ASG, {"launchConfiguration": "lc-id"}),
    (INSTANCE, {"launchTemplate": {"id": "lt-1"}}), (SPOT, {"launchTemplate": {"name": "nodes"}}),
    (NODE_GROUP, {"launchTemplate": {"name": "nodes", "version": "1"}}),
    (FLEET, {"launchTemplateConfigs": [{"launchTemplateSpecification": {"launchTemplateId": "lt-1"}},
                                       {"launchTemplateSpecification": {"launchTemplateName": "nodes"}}]}),
    (SPOT_FLEET, {"launchTemplateConfigs": [{"launchTemplateSpecification": {"id": "lt-1"}},
                                            {"launchTemplateSpecification": {"name": "nodes"}}]}),
    (BATCH, {"computeResources": {"launchTemplate": {"launchTemplateId": "lt-1"}}}),
    (BATCH, {"computeResources": {"launchTemplate": {"launchTemplateName": "nodes"}}}),
    (ASG, {"vpcZoneIdentifiers": ["subnet-1"]}), (BATCH, {"computeResources": {"type": "FARGATE"}}),
    (BUCKET, {"launchTemplate": {"id": "lt-9"}}),
])
def test_references_to_declared_templates_by_id_or_name_pass(type_, props):
    assert declared_violations(resource(type_, "r", props)) == []


def test_each_undeclared_reference_is_named_where_it_sits():
    cases = [
        (ASG, {"launchTemplate": {"id": "lt-9", "name": "nodes"}}, ["launchTemplate.id", "lt-9"]),  # the id decides
        (ASG, {"launchTemplate": {"name": "other"}}, ["launchTemplate.name", "other"]),
        (ASG, {"launchTemplate": {"version": "1"}}, ["launchTemplate", None]),
        (ASG, asg_mixed({"launchTemplateId": "lt-9"}), [f"{MIXED_SPEC}.launchTemplateId", "lt-9"]),
        (ASG, asg_mixed({"launchTemplateName": "other"}), [f"{MIXED_SPEC}.launchTemplateName", "other"]),
        (ASG, asg_mixed({"launchTemplateId": "lt-1"}, {"launchTemplateId": "lt-1"}, {"launchTemplateName": "other"}),
         [f"{OVERRIDE_SPEC.format(2)}.launchTemplateName", "other"]),
        (ASG, asg_mixed({"launchTemplateId": "lt-1"}, {"launchTemplateId": "lt-9"}),
         [f"{OVERRIDE_SPEC.format(1)}.launchTemplateId", "lt-9"]),
        (ASG, asg_mixed({"version": "1"}), [MIXED_SPEC, None]),
        (INSTANCE, {"launchTemplate": {"id": "lt-9"}}, ["launchTemplate.id", "lt-9"]),
        (NODE_GROUP, {"launchTemplate": {"name": "other"}}, ["launchTemplate.name", "other"]),
        (FLEET, {"launchTemplateConfigs": [{"launchTemplateSpecification": {"launchTemplateId": "lt-1"}},
                                           {"launchTemplateSpecification": {"launchTemplateName": "other"}}]},
         ["launchTemplateConfigs[1].launchTemplateSpecification.launchTemplateName", "other"]),
        (FLEET, {"launchTemplateConfigs": [{"launchTemplateSpecification": {"launchTemplateId": "lt-9"}}]},
         ["launchTemplateConfigs[0].launchTemplateSpecification.launchTemplateId", "lt-9"]),
        (SPOT_FLEET, {"launchTemplateConfigs": [{"launchTemplateSpecification": {"name": "nodes"}},
                                                {"launchTemplateSpecification": {"id": "lt-9"}}]},
         ["launchTemplateConfigs[1].launchTemplateSpecification.id", "lt-9"]),
        (SPOT_FLEET, {"launchTemplateConfigs": [{"launchTemplateSpecification": {"name": "other"}}]},
         ["launchTemplateConfigs[0].launchTemplateSpecification.name", "other"]),
        (BATCH, {"computeResources": {"launchTemplate": {"launchTemplateId": "lt-9"}}},
         ["computeResources.launchTemplate.launchTemplateId", "lt-9"]),
        (BATCH, {"computeResources": {"launchTemplate": {"launchTemplateName": "other"}}},
         ["computeResources.launchTemplate.launchTemplateName", "other"]),
    ]
    for type_, props, (where_, value) in cases:
        r = resource(type_, "r", props)
        assert declared_violations(r) == [undeclared(r, where_, value)], (type_, props)


def test_a_launch_template_id_is_not_a_launch_configuration_and_the_reverse():
    by_template_id = resource(ASG, "a", {"launchConfiguration": "lt-1"})
    assert declared_violations(by_template_id) == [
        undeclared(by_template_id, "launchConfiguration", "lt-1", "launch configuration")]
    by_configuration = resource(INSTANCE, "i", {"launchTemplate": {"name": "lc-name"}})
    assert declared_violations(by_configuration) == [undeclared(by_configuration, "launchTemplate.name", "lc-name")]


def test_every_reference_of_a_resource_is_judged():
    r = resource(ASG, "a", {"launchTemplate": {"id": "lt-9"}, "launchConfiguration": "hand-made",
                            **asg_mixed({"launchTemplateId": "lt-8"}, {"launchTemplateName": "other"})})
    assert declared_violations(r) == [
        undeclared(r, "launchTemplate.id", "lt-9"), undeclared(r, f"{MIXED_SPEC}.launchTemplateId", "lt-8"),
        undeclared(r, f"{OVERRIDE_SPEC.format(1)}.launchTemplateName", "other"),
        undeclared(r, "launchConfiguration", "hand-made", "launch configuration")]


# A preview: a new template's id (or name) is not known yet; the engine says which resources it was computed from.
LT_NEW = resource(LT, "lt-new", {"id": UNKNOWN, "name": UNKNOWN})
LC_NEW = resource(LC, "lc-new", {"id": UNKNOWN, "name": UNKNOWN})


@pytest.mark.parametrize("type_, props, prop", [
    (ASG, {"launchTemplate": {"id": UNKNOWN}}, "launchTemplate"),
    (ASG, {"launchTemplate": {"name": UNKNOWN}}, "launchTemplate"),
    (ASG, asg_mixed({"launchTemplateId": UNKNOWN}), "mixedInstancesPolicy"),
    (ASG, asg_mixed({"launchTemplateId": UNKNOWN}, {"launchTemplateName": UNKNOWN}), "mixedInstancesPolicy"),
    (FLEET, {"launchTemplateConfigs": [{"launchTemplateSpecification": {"launchTemplateId": UNKNOWN}}]},
     "launchTemplateConfigs"),
    (SPOT_FLEET, {"launchTemplateConfigs": [{"launchTemplateSpecification": {"id": UNKNOWN}}]}, "launchTemplateConfigs"),
    (BATCH, {"computeResources": {"launchTemplate": {"launchTemplateId": UNKNOWN}}}, "computeResources"),
])
def test_an_unknown_reference_traced_to_a_declared_template_passes(type_, props, prop):
    traced = resource(type_, "r", props, property_dependencies={prop: [LT_NEW]})
    assert stack_violations(DECLARED, [LT_NEW, traced]) == []
    untraced = resource(type_, "r", props)
    with pytest.raises(UnknownValueError):
        stack_violations(DECLARED, [LT_NEW, untraced])


def test_an_unknown_configuration_is_traced_to_a_declared_configuration_only():
    props = {"launchConfiguration": UNKNOWN}
    assert stack_violations(DECLARED, [LC_NEW, resource(ASG, "a", props,
                                                        property_dependencies={"launchConfiguration": [LC_NEW]})]) == []
    with pytest.raises(UnknownValueError):   # computed from a launch template, not a configuration
        stack_violations(DECLARED, [LT_NEW, resource(ASG, "a", props,
                                                     property_dependencies={"launchConfiguration": [LT_NEW]})])
    with pytest.raises(UnknownValueError):   # a template traced through another input does not count
        stack_violations(DECLARED, [LT_NEW, resource(ASG, "a", {"launchTemplate": {"id": UNKNOWN}},
                                                     property_dependencies={"mixedInstancesPolicy": [LT_NEW]})])
    bucket = resource(BUCKET, "b", {})
    with pytest.raises(UnknownValueError):   # computed from something that is not a template
        stack_violations(DECLARED, [bucket, resource(ASG, "a", {"launchTemplate": {"id": UNKNOWN}},
                                                     property_dependencies={"launchTemplate": [bucket]})])


def test_a_traced_reference_does_not_end_the_judgement_of_the_resource():
    r = resource(ASG, "a", {"launchTemplate": {"id": UNKNOWN}, "launchConfiguration": "hand-made"},
                 property_dependencies={"launchTemplate": [LT_NEW]})
    assert stack_violations(DECLARED, [LT_NEW, r], with_urns=True) == [
        undeclared(r, "launchConfiguration", "hand-made", "launch configuration")]
