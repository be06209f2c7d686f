"""Each rule of the kiln policy pack against hand-built validation args: one violating, one passing.

Props are wrapped in pulumi_policy's own unknown-checking proxy, as the SDK hands
them to validate functions, so the rules see Mappings/Sequences, not dicts/lists.
"""

from __future__ import annotations

import json

import pulumi
import pytest
from hypothesis import given, settings, strategies as st

from _policy_helpers import POLICIES, resource, stack_violations, violations
from policies.program import config_to_pulumi
from policies.rules.ecr import lifecycle_problems


# --------------------------------------------------------------------------- ECR

REPO = "aws:ecr/repository:Repository"
LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"


def lifecycle(keep: int, *, tagged_rule: str = "pattern", any_priority: int = 2) -> str:
    rules = [{"rulePriority": 1, "description": "untagged", "selection": {
        "tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1},
        "action": {"type": "expire"}}]
    if tagged_rule == "pattern":
        rules.append({"rulePriority": 2, "selection": {"tagStatus": "tagged", "tagPatternList": ["*"],
                      "countType": "imageCountMoreThan", "countNumber": keep}, "action": {"type": "expire"}})
    elif tagged_rule == "any":
        rules.append({"rulePriority": any_priority, "selection": {"tagStatus": "any",
                      "countType": "imageCountMoreThan", "countNumber": keep}, "action": {"type": "expire"}})
    return json.dumps({"rules": rules})


def test_lifecycle_passes_within_cap():
    assert violations("ecr-lifecycle-policy", LIFECYCLE, {"repository": "trainer", "policy": lifecycle(10)}) == []
    assert violations("ecr-lifecycle-policy", LIFECYCLE, {"repository": "t", "policy": lifecycle(20, tagged_rule="any")}) == []


def test_lifecycle_over_cap_and_config_threshold():
    found = violations("ecr-lifecycle-policy", LIFECYCLE, {"repository": "t", "policy": lifecycle(25)})
    assert found == ["keeps up to 25 tagged images; at most 20 allowed"]
    # The threshold is the pack's config (maxImages).
    assert violations("ecr-lifecycle-policy", LIFECYCLE, {"repository": "t", "policy": lifecycle(10)},
                      config={"maxImages": 5}) == ["keeps up to 10 tagged images; at most 5 allowed"]


def test_lifecycle_without_tagged_cap_or_with_bad_priorities():
    only_untagged = violations("ecr-lifecycle-policy", LIFECYCLE, {"repository": "t", "policy": lifecycle(5, tagged_rule="none")})
    assert len(only_untagged) == 1 and "no rule caps the number of tagged images" in only_untagged[0]
    problems = lifecycle_problems(json.loads(lifecycle(5, tagged_rule="any", any_priority=1)), 20)
    assert any(p.startswith("rulePriority values must be unique") for p in problems)
    problems = lifecycle_problems({"rules": [
        {"rulePriority": 5, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 3},
         "action": {"type": "expire"}},
        {"rulePriority": 9, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 1,
                                          "countUnit": "days"}, "action": {"type": "expire"}}]}, 20)
    assert len(problems) == 1 and problems[0].startswith("the tagStatus any rule (rulePriority 5) must have the highest")
    assert [p[:15] for p in lifecycle_problems("not json", 20)] == ["not valid JSON:"]
    assert lifecycle_problems({"rules": []}, 20) == ["must be an object with a non-empty 'rules' list"]
    # Numbers arrive from the engine as floats (protobuf Struct); the ECR rules still hold.
    as_floats = json.loads(lifecycle(10).replace(": 2,", ": 2.0,").replace(": 10}", ": 10.0}"))
    assert lifecycle_problems(as_floats, 20) == []


def test_earlier_rules_over_tagged_images_cannot_escape_the_cap():
    cap = {"rulePriority": 5, "selection": {"tagStatus": "tagged", "tagPatternList": ["*"],
                                            "countType": "imageCountMoreThan", "countNumber": 10},
           "action": {"type": "expire"}}
    # An image matched by an earlier rule's tags cannot be expired by a later rule (ECR's evaluation
    # order), so a ten-year age rule on v* ahead of the cap keeps every v* image forever.
    keep_releases = {"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"],
                                                      "countType": "sinceImagePushed", "countUnit": "days",
                                                      "countNumber": 3650}, "action": {"type": "expire"}}
    found = violations("ecr-lifecycle-policy", LIFECYCLE, {"repository": "t", "policy": json.dumps(
        {"rules": [keep_releases, cap]})})
    assert found == ["the rule with rulePriority 1 selects tagged images before the image-count cap, "
                     "so the images it keeps escape the cap"]
    # The same rule after the cap is harmless; an earlier count rule adds its count to what is kept.
    after = {**keep_releases, "rulePriority": 9}
    assert violations("ecr-lifecycle-policy", LIFECYCLE, {"repository": "t", "policy": json.dumps(
        {"rules": [cap, after]})}) == []
    earlier_count = {"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"],
                                                      "countType": "imageCountMoreThan", "countNumber": 15},
                     "action": {"type": "expire"}}
    assert violations("ecr-lifecycle-policy", LIFECYCLE, {"repository": "t", "policy": json.dumps(
        {"rules": [earlier_count, cap]})}) == ["keeps up to 25 tagged images; at most 20 allowed"]


def test_every_repository_needs_a_lifecycle_policy_that_names_it():
    covered = resource(REPO, "trainer", {"name": "trainer"})
    bare = resource(REPO, "server", {"name": "server"})
    by_name = resource(LIFECYCLE, "trainer-lc", {"repository": "trainer", "policy": lifecycle(5)})
    missing = ["repository 'server' has no lifecycle policy (none names it as its repository)"]
    assert stack_violations("ecr-repository-has-lifecycle-policy", [covered, bare, by_name]) == missing
    # Depending on a repository, or being its child, is not covering it: ECR keys lifecycle policies by name.
    by_dependency = resource(LIFECYCLE, "server-lc", {"repository": "x", "policy": lifecycle(5)}, dependencies=[bare])
    as_child = resource(LIFECYCLE, "server-lc2", {"repository": "y", "policy": lifecycle(5)}, parent=bare)
    assert stack_violations("ecr-repository-has-lifecycle-policy",
                            [covered, bare, by_name, by_dependency, as_child]) == missing
    named = resource(LIFECYCLE, "server-lc3", {"repository": "server", "policy": lifecycle(5)})
    assert stack_violations("ecr-repository-has-lifecycle-policy", [covered, bare, by_name, named]) == []
    # A repository without a name (auto-named) is never matched by a guess.
    anonymous = resource(REPO, "anon", {})
    assert stack_violations("ecr-repository-has-lifecycle-policy", [anonymous, by_name]) == [
        "repository 'anon' has no lifecycle policy (none names it as its repository)"]


GOOD_REPO = {"name": "trainer", "imageTagMutability": "IMMUTABLE", "imageScanningConfiguration": {"scanOnPush": True},
             "encryptionConfigurations": [{"encryptionType": "KMS", "kmsKey": "arn:aws:kms:us-east-2:1:key/k"}]}


@pytest.mark.parametrize("policy, change, message", [
    ("ecr-immutable-tags", {"imageTagMutability": "MUTABLE"}, "imageTagMutability is MUTABLE"),
    ("ecr-scan-on-push", {"imageScanningConfiguration": {"scanOnPush": False}}, "scanOnPush must be true"),
    ("ecr-kms-encryption", {"encryptionConfigurations": [{"encryptionType": "AES256"}]}, "encryptionType KMS"),
])
def test_repository_rules(policy, change, message):
    assert violations(policy, REPO, GOOD_REPO) == []
    found = violations(policy, REPO, {**GOOD_REPO, **change})
    assert len(found) == 1 and message in found[0]


# --------------------------------------------------------------------------- launch templates

LT = "aws:ec2/launchTemplate:LaunchTemplate"
GOOD_LT = {
    "imageId": "ami-0123456789abcdef0",
    "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2, "httpEndpoint": "enabled"},
    "blockDeviceMappings": [
        {"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "volumeType": "gp3", "volumeSize": 100}},
        {"deviceName": "/dev/xvdb", "ebs": {"encrypted": "true", "volumeType": "gp3", "volumeInitializationRate": 300}},
    ],
    "networkInterfaces": [{"associatePublicIpAddress": "false", "securityGroups": ["sg-1"]}],
}


def test_model_volume_init_rate_is_advisory_and_checked():
    assert POLICIES["lt-model-volume-init-rate"].enforcement_level.value == "advisory"
    no_rate = {**GOOD_LT, "blockDeviceMappings": [GOOD_LT["blockDeviceMappings"][0],
                                                  {"deviceName": "/dev/xvdb", "ebs": {"encrypted": "true"}}]}
    assert len(violations("lt-model-volume-init-rate", LT, no_rate)) == 1
    assert violations("lt-model-volume-init-rate", LT, {**GOOD_LT, "blockDeviceMappings": []}) == [
        "no block device mapping for the model volume /dev/xvdb"]


# --------------------------------------------------------------------------- ASGs

ASG = "aws:autoscaling/group:Group"
GOOD_ASG = {
    "vpcZoneIdentifiers": ["subnet-0aaa"], "minSize": 0, "maxSize": 10, "desiredCapacity": 1,
    "launchTemplate": {"id": "lt-1", "version": "3"},
    "tags": [{"key": "k8s.io/cluster-autoscaler/enabled", "value": "true", "propagateAtLaunch": False},
             {"key": "k8s.io/cluster-autoscaler/kiln", "value": "owned", "propagateAtLaunch": False}],
}


def test_good_asg_passes():
    for name in ("asg-single-zone", "asg-autoscaler-discovery-tags", "asg-launch-template-version-pinned"):
        assert violations(name, ASG, GOOD_ASG) == [], name
    assert violations("asg-desired-capacity-ignored", ASG, GOOD_ASG, ignore_changes=["desiredCapacity"]) == []


def test_asg_violations():
    assert len(violations("asg-single-zone", ASG, {**GOOD_ASG, "vpcZoneIdentifiers": ["subnet-1", "subnet-2"]})) == 1
    assert len(violations("asg-single-zone", ASG, {**GOOD_ASG, "availabilityZones": ["a", "b"],
                                                   "vpcZoneIdentifiers": None})) == 1
    only_enabled = {**GOOD_ASG, "tags": GOOD_ASG["tags"][:1]}
    assert violations("asg-autoscaler-discovery-tags", ASG, only_enabled) == [
        "missing tag k8s.io/cluster-autoscaler/<cluster-name> (cluster-autoscaler auto-discovery)"]
    for floating in ("$Latest", "$Default"):
        found = violations("asg-launch-template-version-pinned", ASG,
                           {**GOOD_ASG, "launchTemplate": {"id": "lt-1", "version": floating}})
        assert len(found) == 1 and floating in found[0]
    mixed = {**GOOD_ASG, "launchTemplate": None, "mixedInstancesPolicy": {"launchTemplate": {
        "launchTemplateSpecification": {"launchTemplateId": "lt-1", "version": "$Latest"}}}}
    assert len(violations("asg-launch-template-version-pinned", ASG, mixed)) == 1
    assert len(violations("asg-desired-capacity-ignored", ASG, GOOD_ASG, ignore_changes=["maxSize"])) == 1


# --------------------------------------------------------------------------- EKS

EKS = "eks:index:Cluster"
AWS_EKS = "aws:eks/cluster:Cluster"
GOOD_EKS = {"endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"],
            "encryptionConfigKeyArn": "arn:aws:kms:us-east-2:1:key/k", "authenticationMode": "API",
            "enabledClusterLogTypes": ["api", "audit", "authenticator", "controllerManager", "scheduler"]}
GOOD_AWS_EKS = {"vpcConfig": {"endpointPublicAccess": False, "subnetIds": ["s"]},
                "encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn:k"}},
                "accessConfig": {"authenticationMode": "API"}, "enabledClusterLogTypes": ["api", "audit", "authenticator"]}
EKS_RULES = ("eks-endpoint-not-public-to-world", "eks-secrets-encryption", "eks-control-plane-logging",
             "eks-api-authentication-mode")


@pytest.mark.parametrize("type_, good", [(EKS, GOOD_EKS), (AWS_EKS, GOOD_AWS_EKS)])
def test_good_clusters_pass(type_, good):
    for name in EKS_RULES:
        assert violations(name, type_, good) == [], name


def test_eks_violations():
    assert violations("eks-endpoint-not-public-to-world", EKS, {**GOOD_EKS, "publicAccessCidrs": ["0.0.0.0/0"]}) == [
        "publicAccessCidrs contains 0.0.0.0/0: the API endpoint is open to the whole internet"]
    # pulumi-eks defaults to a public endpoint open to the world when no CIDRs are given.
    assert len(violations("eks-endpoint-not-public-to-world", EKS, {"authenticationMode": "API"})) == 1
    assert violations("eks-endpoint-not-public-to-world", EKS, {"endpointPublicAccess": False}) == []
    # Each half alone is too broad; eight /9s-worth of /8s together too; a /8 and a /24 are fine.
    halves = {**GOOD_EKS, "publicAccessCidrs": ["0.0.0.0/1", "128.0.0.0/1"]}
    assert [m.split(",")[0] for m in violations("eks-endpoint-not-public-to-world", EKS, halves)] == [
        "publicAccessCidrs contains 0.0.0.0/1", "publicAccessCidrs contains 128.0.0.0/1"]
    two_eights = {**GOOD_EKS, "publicAccessCidrs": ["3.0.0.0/8", "4.0.0.0/8"]}
    assert violations("eks-endpoint-not-public-to-world", EKS, two_eights) == [
        "publicAccessCidrs 3.0.0.0/8, 4.0.0.0/8 together admit 33554432 public addresses (IPv4); at most a /8 of IPv4 "
        "(16777216 addresses) or a /32 of IPv6 allowed"]
    assert violations("eks-endpoint-not-public-to-world", EKS, two_eights, config={"ipv4MinPrefix": 7}) == []
    assert violations("eks-endpoint-not-public-to-world", EKS, {**GOOD_EKS, "publicAccessCidrs": ["3.0.0.0/8"]}) == []
    assert len(violations("eks-endpoint-not-public-to-world", EKS, {**GOOD_EKS, "publicAccessCidrs": ["3.0.0.0/8"]},
                          config={"ipv4MinPrefix": 16})) == 1
    mapped = {**GOOD_EKS, "publicAccessCidrs": ["::ffff:0.0.0.0/96"]}
    assert violations("eks-endpoint-not-public-to-world", EKS, mapped) == [
        "publicAccessCidrs contains ::ffff:0.0.0.0/96: the API endpoint is open to the whole internet"]
    world = {**GOOD_AWS_EKS, "vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": ["::/0"]}}
    assert len(violations("eks-endpoint-not-public-to-world", AWS_EKS, world)) == 1
    assert len(violations("eks-secrets-encryption", EKS, {**GOOD_EKS, "encryptionConfigKeyArn": None})) == 1
    assert len(violations("eks-secrets-encryption", AWS_EKS, {**GOOD_AWS_EKS, "encryptionConfig": None})) == 1
    assert violations("eks-control-plane-logging", EKS, {**GOOD_EKS, "enabledClusterLogTypes": ["api"]}) == [
        "enabledClusterLogTypes lacks audit, authenticator"]
    assert violations("eks-api-authentication-mode", EKS, {**GOOD_EKS, "authenticationMode": "CONFIG_MAP"}) == [
        "authenticationMode is 'CONFIG_MAP'; use API (access entries, no aws-auth ConfigMap)"]


# --------------------------------------------------------------------------- security groups

SG = "aws:ec2/securityGroup:SecurityGroup"


INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"


def sg_violations(*resources, config=None):
    return stack_violations("sg-no-ingress-from-internet", list(resources), config=config)


@pytest.mark.parametrize("type_, bad, good", [
    (SG, {"id": "sg-1", "ingress": [{"fromPort": 22, "toPort": 22, "protocol": "tcp", "cidrBlocks": ["0.0.0.0/0"]}]},
     {"id": "sg-1", "ingress": [{"fromPort": 443, "toPort": 443, "protocol": "tcp", "cidrBlocks": ["10.0.0.0/16"]}],
      "egress": [{"fromPort": 0, "toPort": 0, "protocol": "-1", "cidrBlocks": ["0.0.0.0/0"]}]}),
    (SG, {"id": "sg-1", "ingress": [{"fromPort": 0, "toPort": 0, "protocol": "-1", "ipv6CidrBlocks": ["::/0"]}]},
     {"id": "sg-1", "ingress": []}),
    (INGRESS_RULE, {"securityGroupId": "sg-1", "cidrIpv4": "0.0.0.0/0"},
     {"securityGroupId": "sg-1", "referencedSecurityGroupId": "sg-2"}),
    (SG_RULE, {"type": "ingress", "securityGroupId": "sg-1", "cidrBlocks": ["0.0.0.0/0"]},
     {"type": "egress", "securityGroupId": "sg-1", "cidrBlocks": ["0.0.0.0/0"]}),
])
def test_no_ingress_from_internet(type_, bad, good):
    assert len(sg_violations(resource(type_, "bad", bad))) == 1
    assert sg_violations(resource(type_, "good", good)) == []


@pytest.mark.parametrize("type_, props", [
    (INGRESS_RULE, {"securityGroupId": "sg-1", "cidrIpv6": "::0/0"}),
    (INGRESS_RULE, {"securityGroupId": "sg-1", "cidrIpv4": "0.0.0.0/00"}),
    (INGRESS_RULE, {"securityGroupId": "sg-1", "cidrIpv6": "::ffff:0.0.0.0/96"}),
    (INGRESS_RULE, {"securityGroupId": "sg-1", "cidrIpv4": "0.0.0.0/1"}),
    (SG_RULE, {"type": "ingress", "securityGroupId": "sg-1", "ipv6CidrBlocks": ["0:0:0:0:0:0:0:0/0"]}),
    (SG, {"id": "sg-1", "ingress": [{"fromPort": 22, "toPort": 22, "protocol": "tcp", "ipv6CidrBlocks": ["0::/0"]}]}),
])
def test_other_spellings_of_the_whole_internet(type_, props):
    assert len(sg_violations(resource(type_, "r", props))) == 1
    narrow = {k: ("10.0.0.0/8" if k == "cidrIpv4" else "2001:db8::/32" if k == "cidrIpv6" else v)
              for k, v in props.items()}
    if type_ == INGRESS_RULE:
        assert sg_violations(resource(type_, "r", narrow)) == []


def test_ingress_is_judged_per_security_group_over_all_its_rules():
    low = resource(INGRESS_RULE, "low", {"securityGroupId": "sg-1", "cidrIpv4": "3.0.0.0/8"})
    high = resource(INGRESS_RULE, "high", {"securityGroupId": "sg-1", "cidrIpv4": "4.0.0.0/8"})
    inline = resource(SG, "sg", {"id": "sg-1", "ingress": [{"cidrBlocks": ["10.0.0.0/8"]}]})
    assert sg_violations(low) == [] and sg_violations(high) == []
    found = stack_violations("sg-no-ingress-from-internet", [inline, low, high], with_urns=True)
    # Both public sources are reported, each on its own resource; the private inline rule is not.
    assert [urn.rsplit("::", 1)[1] for _, urn in found] == ["low", "high"]
    assert "with the security group's other ingress admitting 33554432 public addresses" in found[0][0]
    # Two different security groups: each alone is fine.
    other = resource(INGRESS_RULE, "other", {"securityGroupId": "sg-2", "cidrIpv4": "4.0.0.0/8"})
    assert sg_violations(inline, low, other) == []
    # An inline rule and a separate rule of the same security group add up too.
    public_inline = resource(SG, "sg-public", {"id": "sg-1", "ingress": [{"cidrBlocks": ["4.0.0.0/8"]}]})
    assert len(sg_violations(public_inline, low)) == 2 and sg_violations(public_inline) == []
    assert sg_violations(low, high, config={"ipv4MinPrefix": 7}) == []


def test_prefix_lists_declared_in_the_stack_are_read():
    world = resource("aws:ec2/managedPrefixList:ManagedPrefixList", "pl",
                     {"id": "pl-1", "entries": [{"cidr": "0.0.0.0/1"}, {"cidr": "10.0.0.0/8"}]})
    entry = resource("aws:ec2/managedPrefixListEntry:ManagedPrefixListEntry", "e",
                     {"prefixListId": "pl-2", "cidr": "128.0.0.0/1"})
    rule = resource(INGRESS_RULE, "r", {"securityGroupId": "sg-1", "prefixListId": "pl-1"})
    assert len(sg_violations(world, rule)) == 1
    inline = resource(SG, "sg", {"id": "sg-9", "ingress": [{"prefixListIds": ["pl-2"]}]})
    # pl-2 is only added to here: its own entries are read (half the internet), and the rest of it is unknown.
    found = sg_violations(entry, inline)
    assert len(found) == 2 and any("128.0.0.0/1" in m for m in found) and any("does not declare" in m for m in found)
    private = resource("aws:ec2/managedPrefixList:ManagedPrefixList", "pl",
                       {"id": "pl-1", "entries": [{"cidr": "10.0.0.0/8"}]})
    assert sg_violations(private, rule) == []


# --------------------------------------------------------------------------- IAM

def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


STAR = {"Effect": "Allow", "Action": "*", "Resource": "*"}
SCOPED = {"Effect": "Allow", "Action": ["autoscaling:SetDesiredCapacity"], "Resource": "*",
          "Condition": {"StringEquals": {"aws:ResourceTag/kiln.dev/cluster": "kiln"}}}


@pytest.mark.parametrize("type_, key", [("aws:iam/policy:Policy", "policy"), ("aws:iam/rolePolicy:RolePolicy", "policy")])
def test_no_star_on_star_in_policies(type_, key):
    assert violations("iam-no-star-on-star", type_, {key: doc(SCOPED)}) == []
    assert violations("iam-no-star-on-star", type_, {key: doc(SCOPED, STAR)}) == ["policy Statement[1] allows '*' on '*'"]
    # Deny * on * is fine; a statement as a single object (not a list) is read too.
    assert violations("iam-no-star-on-star", type_, {key: doc({**STAR, "Effect": "Deny"})}) == []
    assert len(violations("iam-no-star-on-star", type_, {key: json.dumps({"Statement": STAR})})) == 1


@pytest.mark.parametrize("statement", [
    {"Effect": "Allow", "NotAction": "iam:PassRole", "Resource": "*"},          # everything but one action
    {"Effect": "Allow", "NotAction": ["iam:*"], "Resource": ["*"]},
    {"Effect": "Allow", "Action": "*", "NotResource": "arn:aws:s3:::audit-logs"},  # every resource but one
])
def test_not_action_and_not_resource_count_as_star(statement):
    assert violations("iam-no-star-on-star", "aws:iam/policy:Policy", {"policy": doc(statement)}) == [
        "policy Statement[0] allows '*' on '*'"]
    scoped = {**statement, "Resource": "arn:aws:s3:::bucket/*"} if "NotAction" in statement else {**SCOPED}
    assert violations("iam-no-star-on-star", "aws:iam/policy:Policy", {"policy": doc(scoped)}) == []


def test_no_star_on_star_in_role_inline_policies():
    role = {"assumeRolePolicy": doc({"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                     "Action": "sts:AssumeRole"}),
            "inlinePolicies": [{"name": "ok", "policy": doc(SCOPED)}, {"name": "bad", "policy": doc(STAR)}]}
    assert violations("iam-no-star-on-star", "aws:iam/role:Role", role) == ["inlinePolicies[1].policy Statement[0] allows '*' on '*'"]


def test_no_administrator_access():
    attach = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
    assert violations("iam-no-administrator-access", attach,
                      {"role": "r", "policyArn": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}) == []
    assert len(violations("iam-no-administrator-access", attach,
                          {"role": "r", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"})) == 1
    assert len(violations("iam-no-administrator-access", "aws:iam/role:Role",
                          {"managedPolicyArns": ["arn:aws-us-gov:iam::aws:policy/AdministratorAccess"]})) == 1


ISSUER = "oidc.eks.us-east-2.amazonaws.com/id/EXAMPLE"


def irsa(condition):
    return {"assumeRolePolicy": doc({"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
                                     "Principal": {"Federated": f"arn:aws:iam::1:oidc-provider/{ISSUER}"},
                                     "Condition": condition})}


def test_irsa_trust_scoped_to_one_service_account():
    role = "aws:iam/role:Role"
    good = irsa({"StringEquals": {f"{ISSUER}:sub": "system:serviceaccount:kube-system:cluster-autoscaler",
                                  f"{ISSUER}:aud": "sts.amazonaws.com"}})
    assert violations("iam-irsa-trust-scoped", role, good) == []
    assert len(violations("iam-irsa-trust-scoped", role, irsa({"StringEquals": {f"{ISSUER}:aud": "sts.amazonaws.com"}}))) == 1
    wildcard = irsa({"StringLike": {f"{ISSUER}:sub": "system:serviceaccount:kube-system:*"}})
    assert len(violations("iam-irsa-trust-scoped", role, wildcard)) == 2  # no StringEquals sub, and StringLike on sub
    two = irsa({"StringEquals": {f"{ISSUER}:sub": ["system:serviceaccount:a:x", "system:serviceaccount:b:y"]}})
    assert len(violations("iam-irsa-trust-scoped", role, two)) == 1
    # A CI provider (not EKS) is outside this rule.
    github = {"assumeRolePolicy": doc({"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
                                       "Principal": {"Federated": "arn:aws:iam::1:oidc-provider/token.actions.githubusercontent.com"},
                                       "Condition": {"StringLike": {"token.actions.githubusercontent.com:sub": "repo:o/r:*"}}})}
    assert violations("iam-irsa-trust-scoped", role, github) == []


@pytest.mark.parametrize("grant", [{"Action": "sts:*"}, {"Action": ["*"]}, {"Action": "STS:AssumeRoleWith*"},
                                   {"NotAction": "sts:AssumeRole"}])
def test_irsa_trust_granted_by_wildcard_or_not_action(grant):
    statement = {"Effect": "Allow", **grant, "Principal": {"Federated": f"arn:aws:iam::1:oidc-provider/{ISSUER}"}}
    # Any token from the cluster's issuer (every service account) may assume this role.
    assert len(violations("iam-irsa-trust-scoped", "aws:iam/role:Role", {"assumeRolePolicy": doc(statement)})) == 1
    scoped = {**statement, "Condition": {"StringEquals": {f"{ISSUER}:sub": "system:serviceaccount:ns:sa"}}}
    assert violations("iam-irsa-trust-scoped", "aws:iam/role:Role", {"assumeRolePolicy": doc(scoped)}) == []


# --------------------------------------------------------------------------- Kubernetes

PV = "kubernetes:core/v1:PersistentVolume"
JOB = "kubernetes:batch/v1:Job"
DS = "kubernetes:apps/v1:DaemonSet"


def pv(path, modes=("ReadOnlyMany",)):
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "model-v5"},
            "spec": {"accessModes": list(modes), "capacity": {"storage": "100Gi"}, "hostPath": {"path": path},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kiln.dev/model-version", "operator": "In", "values": ["v5"]}]}]}}}}


def pod(path, read_only=True, requests=True):
    container = {"name": "main", "image": "busybox", "volumeMounts": [{"name": "model", "mountPath": "/model",
                                                                       "readOnly": read_only}]}
    if requests:
        container["resources"] = {"requests": {"cpu": "1", "memory": "1Gi"}}
    return {"containers": [container], "volumes": [{"name": "model", "hostPath": {"path": path, "type": "Directory"}}],
            "restartPolicy": "Never"}


def job(spec_extra=None, **pod_kwargs):
    spec = {"template": {"spec": pod("/opt/models/v5", **pod_kwargs)}, "ttlSecondsAfterFinished": 3600,
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}
    spec.update(spec_extra or {})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"}, "spec": spec}


def test_hostpath_persistent_volumes():
    assert violations("k8s-hostpath-model-only-readonly", PV, pv("/opt/models")) == []
    assert violations("k8s-hostpath-model-only-readonly", PV, pv("/opt/models/../../etc")) == [
        "hostPath '/opt/models/../../etc' is outside the model path /opt/models"]
    assert len(violations("k8s-hostpath-model-only-readonly", PV, pv("/opt/models", modes=["ReadWriteOnce"]))) == 1
    assert violations("k8s-hostpath-model-only-readonly", PV, pv("/data/models"), config={"modelPath": "/data/models"}) == []


def test_hostpath_in_pod_templates():
    daemonset = {"spec": {"template": {"spec": pod("/opt/models")}}}
    assert violations("k8s-hostpath-model-only-readonly", DS, daemonset) == []
    writable = {"spec": {"template": {"spec": pod("/opt/models", read_only=False)}}}
    assert violations("k8s-hostpath-model-only-readonly", DS, writable) == [
        "containers[0] (main) mounts host path volume 'model' without readOnly: true"]
    root = {"spec": {"template": {"spec": pod("/var/run")}}}
    assert len(violations("k8s-hostpath-model-only-readonly", "kubernetes:apps/v1:Deployment", root)) == 1
    assert len(violations("k8s-hostpath-model-only-readonly", "kubernetes:core/v1:Pod", {"spec": pod("/", read_only=False)})) == 2
    assert len(violations("k8s-hostpath-model-only-readonly", JOB, job(read_only=False))) == 1


@pytest.mark.parametrize("type_, wrap", [
    ("kubernetes:batch/v1:CronJob", lambda spec: {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
    ("kubernetes:apps/v1:StatefulSet", lambda spec: {"spec": {"template": {"spec": spec}}}),
    # Server-side-apply patches carry the same pod spec and could add a writable hostPath.
    ("kubernetes:apps/v1:DeploymentPatch", lambda spec: {"spec": {"template": {"spec": spec}}}),
    ("kubernetes:apps/v1:DaemonSetPatch", lambda spec: {"spec": {"template": {"spec": spec}}}),
    ("kubernetes:batch/v1:CronJobPatch", lambda spec: {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
    ("kubernetes:core/v1:PodPatch", lambda spec: {"spec": spec}),
])
def test_hostpath_in_every_pod_template_shape(type_, wrap):
    assert violations("k8s-hostpath-model-only-readonly", type_, wrap(pod("/opt/models"))) == []
    assert len(violations("k8s-hostpath-model-only-readonly", type_, wrap(pod("/etc", read_only=False)))) == 2


def test_hostpath_persistent_volume_patch():
    patch = "kubernetes:core/v1:PersistentVolumePatch"
    assert violations("k8s-hostpath-model-only-readonly", patch, pv("/opt/models")) == []
    assert len(violations("k8s-hostpath-model-only-readonly", patch, pv("/", modes=["ReadWriteMany"]))) == 2


def test_jobs_need_requests_and_ttl():
    assert violations("k8s-job-requests-and-ttl", JOB, job()) == []
    no_ttl = job()
    del no_ttl["spec"]["ttlSecondsAfterFinished"]
    assert violations("k8s-job-requests-and-ttl", JOB, no_ttl) == [
        "spec.ttlSecondsAfterFinished must be set so finished Jobs are cleaned up"]
    assert violations("k8s-job-requests-and-ttl", JOB, job(requests=False)) == [
        "containers[0] (main) sets no resources.requests (cpu/memory)"]


def test_pod_failure_policy_is_advisory():
    assert POLICIES["k8s-job-pod-failure-policy"].enforcement_level.value == "advisory"
    assert violations("k8s-job-pod-failure-policy", JOB, job()) == []
    assert len(violations("k8s-job-pod-failure-policy", JOB, job({"podFailurePolicy": None}))) == 1



PVC = "kubernetes:core/v1:PersistentVolumeClaim"


def claim_pod(claim="model-v5", *, source_read_only=None, mounts=(True,)):
    """A pod spec mounting ``claim``; one container per entry of ``mounts`` (its readOnly)."""
    source = {"claimName": claim}
    if source_read_only is not None:
        source["readOnly"] = source_read_only
    containers = [{"name": f"c{i}", "image": "busybox",
                   "volumeMounts": [{"name": "model", "mountPath": "/model", **({} if ro is None else {"readOnly": ro})}]}
                  for i, ro in enumerate(mounts)]
    return {"containers": containers, "volumes": [{"name": "model", "persistentVolumeClaim": source}]}


def model_pv(claim_ref=True):
    props = pv("/opt/models")
    if claim_ref:
        props["spec"]["claimRef"] = {"namespace": "ml-jobs", "name": "model-v5"}
    return props


def model_pvc(volume_name="model-v5", name="model-v5"):
    return {"metadata": {"name": name, "namespace": "ml-jobs"},
            "spec": {"accessModes": ["ReadOnlyMany"], "volumeName": volume_name}}


def test_model_claim_mounted_readonly_passes():
    stack = [resource(PV, "pv", model_pv()), resource(PVC, "pvc", model_pvc()),
             resource(JOB, "ro-mounts", {"metadata": {"namespace": "ml-jobs"},
                                         "spec": {"template": {"spec": claim_pod(mounts=(True, True))}}}),
             resource(DS, "ro-source", {"spec": {"template": {"spec": claim_pod(source_read_only=True, mounts=(None,))}}}),
             # A writable mount of some other claim is not this rule's business.
             resource("kubernetes:core/v1:Pod", "scratch", {"spec": claim_pod("scratch", mounts=(False,))})]
    assert stack_violations("k8s-model-claim-mounted-readonly", stack) == []


def test_model_claim_mounted_writable_is_reported():
    stack = [resource(PV, "pv", model_pv()), resource(PVC, "pvc", model_pvc()),
             resource(JOB, "train", {"spec": {"template": {"spec": claim_pod(mounts=(True, None))}}}),
             resource("kubernetes:apps/v1:DeploymentPatch", "serve",
                      {"spec": {"template": {"spec": claim_pod(source_read_only=False, mounts=(False,))}}})]
    assert stack_violations("k8s-model-claim-mounted-readonly", stack) == [
        "kubernetes:batch/v1:Job 'train': containers[1] (c1) mounts volume 'model' (claim 'model-v5', bound to "
        "hostPath PersistentVolume 'model-v5') without readOnly: true",
        "kubernetes:apps/v1:DeploymentPatch 'serve': containers[0] (c0) mounts volume 'model' (claim 'model-v5', "
        "bound to hostPath PersistentVolume 'model-v5') without readOnly: true"]


@pytest.mark.parametrize("type_, wrap", [
    ("kubernetes:batch/v1:CronJob", lambda spec: {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
    ("kubernetes:apps/v1:StatefulSet", lambda spec: {"spec": {"template": {"spec": spec}}}),
    ("kubernetes:apps/v1:ReplicaSetPatch", lambda spec: {"spec": {"template": {"spec": spec}}}),
    ("kubernetes:core/v1:Pod", lambda spec: {"spec": spec}),
])
def test_model_claim_binding_by_claim_ref_or_volume_name(type_, wrap):
    writable = resource(type_, "w", wrap(claim_pod(mounts=(False,))))
    # Bound through the PV's claimRef alone (no claim declared here) ...
    assert len(stack_violations("k8s-model-claim-mounted-readonly", [resource(PV, "pv", model_pv()), writable])) == 1
    # ... or through the claim's volumeName alone.
    by_volume_name = [resource(PV, "pv", model_pv(claim_ref=False)), resource(PVC, "pvc", model_pvc()), writable]
    assert len(stack_violations("k8s-model-claim-mounted-readonly", by_volume_name)) == 1
    # A claim bound to a PV that is not a hostPath (or to no PV we know) is not the model.
    other = model_pv(claim_ref=False)
    del other["spec"]["hostPath"]
    other["spec"]["csi"] = {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}
    assert stack_violations("k8s-model-claim-mounted-readonly",
                            [resource(PV, "pv", other), resource(PVC, "pvc", model_pvc()), writable]) == []
    assert stack_violations("k8s-model-claim-mounted-readonly",
                            [resource(PVC, "pvc", model_pvc(volume_name="elsewhere")), writable]) == []


def test_model_claim_in_another_namespace_is_another_claim():
    stack = [resource(PV, "pv", model_pv()),
             resource(JOB, "elsewhere", {"metadata": {"namespace": "team-b"},
                                         "spec": {"template": {"spec": claim_pod(mounts=(False,))}}})]
    assert stack_violations("k8s-model-claim-mounted-readonly", stack) == []
    stack[1] = resource(JOB, "same", {"metadata": {"namespace": "ml-jobs"},
                                      "spec": {"template": {"spec": claim_pod(mounts=(False,))}}})
    assert len(stack_violations("k8s-model-claim-mounted-readonly", stack)) == 1


def test_model_claim_binding_survives_values_unknown_during_preview():
    """A new namespace's name and the PV's name are unknown in a first preview; the claimRef still binds."""
    unknown = pulumi.runtime.rpc.UNKNOWN
    pv_props = model_pv()
    pv_props["metadata"]["name"] = unknown
    pvc = {"metadata": {"name": "model-v5", "namespace": unknown}, "spec": {"volumeName": unknown}}
    writable = resource(JOB, "train", {"metadata": {"namespace": unknown},
                                       "spec": {"template": {"spec": claim_pod(mounts=(False,))}}})
    found = stack_violations("k8s-model-claim-mounted-readonly",
                             [resource(PV, "pv", pv_props), resource(PVC, "pvc", pvc), writable])
    assert found == ["kubernetes:batch/v1:Job 'train': containers[0] (c0) mounts volume 'model' (claim 'model-v5', "
                     "bound to hostPath PersistentVolume 'pv') without readOnly: true"]


# --------------------------------------------------------------------------- stack

STACK_CONFIG = {
    "kiln:clusterName": "kiln", "kiln:kubernetesVersion": "1.33",
    "kiln:availabilityZones": ["us-east-2a", "us-east-2b"],
    "kiln:modelVersion": "v5",
    # An untainted system group (CoreDNS and cluster-autoscaler need one) and a GPU group.
    "kiln:nodeGroups": [{"name": "system", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 2, "desiredSize": 1},
                        {"name": "gpu", "instanceTypes": ["g5.2xlarge"], "minSize": 0, "maxSize": 4, "desiredSize": 1,
                         "gpu": True}],
    "kiln:nodeAmi": {"standard": "ami-0123456789abcdef0", "nvidia": "ami-0fedcba9876543210"},
}


@pytest.fixture
def kiln_config():
    pulumi.runtime.set_all_config(config_to_pulumi(STACK_CONFIG), [])
    yield
    pulumi.runtime.set_all_config({}, [])


def asg(name, group, subnet):
    return resource(ASG, name, {**GOOD_ASG, "vpcZoneIdentifiers": [subnet],
                                "tags": GOOD_ASG["tags"] + [{"key": "kiln.dev/node-group", "value": group}]})


def subnet(name, id_, zone):
    return resource("aws:ec2/subnet:Subnet", name, {"id": id_, "availabilityZone": zone})


def test_every_group_and_zone_has_its_asg(kiln_config):
    subnets = [subnet("a", "subnet-0a", "us-east-2a"), subnet("b", "subnet-0b", "us-east-2b")]
    system = [asg("system-a", "system", "subnet-0a"), asg("system-b", "system", "subnet-0b")]
    assert stack_violations("stack-asg-per-group-and-zone", subnets + system + [asg("gpu-a", "gpu", "subnet-0a"),
                                                                                asg("gpu-b", "gpu", "subnet-0b")]) == []
    assert stack_violations("stack-asg-per-group-and-zone", subnets + system + [asg("gpu-a", "gpu", "subnet-0a")]) == [
        "node group 'gpu' has no ASG in us-east-2b"]


def test_model_volume_for_configured_version(kiln_config):
    claim = resource("kubernetes:core/v1:PersistentVolumeClaim", "claim", {"metadata": {"name": "model-v5"}})
    assert stack_violations("stack-model-volume-for-version", [resource(PV, "pv", pv("/opt/models")), claim]) == []
    old = pv("/opt/models")
    old["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] = ["v4"]
    found = stack_violations("stack-model-volume-for-version", [resource(PV, "pv", old)])
    assert found == ["no hostPath PersistentVolume at /opt/models requires kiln.dev/model-version=v5",
                     "no PersistentVolumeClaim named 'model-v5' for model v5"]


def test_stack_rules_not_applicable_without_kiln_config():
    pulumi.runtime.set_all_config({}, [])
    from pulumi_policy.policy import _NotApplicableError
    with pytest.raises(_NotApplicableError):
        stack_violations("stack-model-volume-for-version", [])


def test_every_rule_has_unit_tests():
    """Each rule is named in a unit-test module (here or a tests/test_policies_<area>.py beside it), not only in
    the end-to-end tables."""
    from pathlib import Path
    here = Path(__file__).resolve().parent
    sources = "".join(p.read_text(encoding="utf-8") for p in here.glob("test_policies_*.py")
                      if p.name not in ("test_policies_bypass.py", "test_policies_hostile_config.py"))
    missing = [name for name in POLICIES if f'"{name}"' not in sources]
    assert missing == []


def test_policies_page_lists_every_rule_with_its_level():
    from pathlib import Path
    from policies.pack import level_of
    text = (Path(__file__).resolve().parent.parent / "docs" / "policies.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`") and cells[1] in ("mandatory", "advisory"):
            rows[cells[0].strip("`")] = cells[1]
    assert rows == {name: level_of(p).value for name, p in POLICIES.items()}



@settings(max_examples=50, deadline=None)
@given(keep=st.integers(min_value=1, max_value=1000), cap=st.integers(min_value=1, max_value=100))
def test_registry_lifecycle_policies_pass_exactly_up_to_the_cap(keep, cap):
    """What infra/registry.py declares for any kiln:ecrKeepImages passes iff it keeps <= maxImages."""
    from infra.registry import lifecycle_policy
    found = violations("ecr-lifecycle-policy", LIFECYCLE, {"repository": "r", "policy": json.dumps(lifecycle_policy(keep))},
                       config={"maxImages": cap})
    assert found == ([] if keep <= cap else [f"keeps up to {keep} tagged images; at most {cap} allowed"])


# --------------------------------------------------------------------------- review of issue 14: security groups

from _policy_helpers import UNKNOWN  # noqa: E402

PREFIX_LIST = "aws:ec2/managedPrefixList:ManagedPrefixList"


@pytest.mark.parametrize("type_, props", [
    (SG, {"id": "sg-1", "ingress": [{"cidrBlocks": ["0.0.0.0 /0"]}]}),
    (INGRESS_RULE, {"securityGroupId": "sg-1", "cidrIpv4": "0/0"}),
    (SG_RULE, {"type": "ingress", "securityGroupId": "sg-1", "cidrBlocks": ["0.0.0.0/０"]}),
])
def test_a_source_that_is_not_a_cidr_is_not_let_through(type_, props):
    found = sg_violations(resource(type_, "r", props))
    assert len(found) == 1 and "is not a CIDR block" in found[0]


def test_prefix_lists_from_outside_the_stack_are_refused_unless_allowed():
    managed = resource(INGRESS_RULE, "cf", {"securityGroupId": "sg-1", "prefixListId": "pl-3b927c52"})
    found = sg_violations(managed)
    assert len(found) == 1 and "'pl-3b927c52', which this stack does not declare" in found[0]
    assert sg_violations(managed, config={"allowedPrefixListIds": ["pl-3b927c52"]}) == []
    # Entries added here to a list created elsewhere do not make the list known.
    entry = resource("aws:ec2/managedPrefixListEntry:ManagedPrefixListEntry", "e",
                     {"prefixListId": "pl-0abc", "cidr": "10.0.0.0/8"})
    inline = resource(SG, "sg", {"id": "sg-9", "ingress": [{"prefixListIds": ["pl-0abc"]}]})
    assert len(sg_violations(entry, inline)) == 1


def test_the_vpc_default_security_group_is_a_security_group():
    default = resource("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", "d",
                       {"id": "sg-d", "ingress": [{"protocol": "-1", "cidrBlocks": ["0.0.0.0/0"]}]})
    assert len(sg_violations(default)) == 1


def test_during_preview_rules_reach_their_new_group_through_property_dependencies():
    group = resource(SG, "g", {"id": UNKNOWN, "ingress": [{"cidrBlocks": ["3.0.0.0/9"]}]})
    rule = resource(INGRESS_RULE, "r", {"securityGroupId": UNKNOWN, "cidrIpv4": "4.0.0.0/9"},
                    property_dependencies={"securityGroupId": [group]})
    assert sg_violations(group, rule) == []  # two /9s: one /8's worth, the limit
    third = resource(SG_RULE, "t", {"type": "ingress", "securityGroupId": UNKNOWN, "cidrBlocks": ["5.0.0.0/9"]},
                     property_dependencies={"securityGroupId": [group]})
    assert len(sg_violations(group, rule, third)) == 3
    listed = resource(PREFIX_LIST, "pl", {"id": UNKNOWN, "entries": [{"cidr": "0.0.0.0/1"}]})
    via_list = resource(SG_RULE, "v", {"type": "ingress", "securityGroupId": "sg-2", "prefixListIds": [UNKNOWN]},
                        property_dependencies={"prefixListIds": [listed]})
    found = sg_violations(listed, via_list)
    assert len(found) == 1 and "admitting 2147483648" not in found[0] and "0.0.0.0/1" in found[0]


def test_during_preview_what_cannot_be_placed_is_reported_after_the_rest():
    from pulumi_policy.proxy import UnknownValueError
    untraced = resource(INGRESS_RULE, "u", {"securityGroupId": UNKNOWN, "cidrIpv4": "4.0.0.0/8"})
    world = resource(INGRESS_RULE, "w", {"securityGroupId": "sg-1", "cidrIpv4": "0.0.0.0/0"})
    found: list = []
    with pytest.raises(UnknownValueError):
        POLICIES["sg-no-ingress-from-internet"].validate(StackValidationArgs([untraced, world], {}),
                                                        lambda m, urn=None: found.append(urn))
    assert [u.rsplit("::", 1)[1] for u in found] == ["w"]


# --------------------------------------------------------------------------- review of issue 14: ECR's own repositories

TEMPLATE = "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate"
KEEP_10 = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                                                                   "countNumber": 10}, "action": {"type": "expire"}}]})


def ptc(prefix="dockerhub"):
    return resource("aws:ecr/pullThroughCacheRule:PullThroughCacheRule", f"ptc-{prefix}",
                    {"ecrRepositoryPrefix": prefix, "upstreamRegistryUrl": "registry-1.docker.io"})


def template_(prefix, applied=("PULL_THROUGH_CACHE",), lifecycle=KEEP_10):
    return resource(TEMPLATE, f"t-{prefix}", {"prefix": prefix, "appliedFors": list(applied),
                                              **({"lifecyclePolicy": lifecycle} if lifecycle else {})})


def test_repositories_ecr_creates_need_a_creation_template_with_a_lifecycle():
    rule = "ecr-repository-has-lifecycle-policy"
    assert len(stack_violations(rule, [ptc()])) == 1
    assert stack_violations(rule, [ptc(), template_("dockerhub")]) == []
    assert stack_violations(rule, [ptc(), template_("ROOT")]) == []
    assert len(stack_violations(rule, [ptc(), template_("quay")])) == 1                   # another prefix
    assert len(stack_violations(rule, [ptc(), template_("dockerhub", ("REPLICATION",))])) == 1  # another use
    assert len(stack_violations(rule, [ptc(), template_("dockerhub", lifecycle=None)])) == 1
    replication = resource("aws:ecr/replicationConfiguration:ReplicationConfiguration", "repl", {
        "replicationConfiguration": {"rules": [{"destinations": [{"region": "us-west-2", "registryId": "123456789012"}],
                                                "repositoryFilters": [{"filter": "trainer", "filterType": "PREFIX_MATCH"}]}]}})
    assert len(stack_violations(rule, [replication])) == 1
    assert stack_violations(rule, [replication, template_("trainer", ("REPLICATION",))]) == []


def test_creation_templates_are_judged_like_repositories():
    bad = {"prefix": "p", "appliedFors": ["PULL_THROUGH_CACHE"], "imageTagMutability": "MUTABLE",
           "lifecyclePolicy": json.dumps({"rules": [{"rulePriority": 1, "selection": {
               "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 500}, "action": {"type": "expire"}}]})}
    assert len(violations("ecr-lifecycle-policy", TEMPLATE, bad)) == 1
    assert len(violations("ecr-immutable-tags", TEMPLATE, bad)) == 1
    assert len(violations("ecr-kms-encryption", TEMPLATE, bad)) == 1
    assert violations("ecr-lifecycle-policy", TEMPLATE, {"prefix": "p"}) == [
        "lifecyclePolicy is not set: the repositories ECR creates from this template keep every image"]


def test_asg_zones_are_read_through_subnets_not_known_during_preview(kiln_config):
    from policies.rules.stack import SUBNET
    zones, groups = ("us-east-2a", "us-east-2b"), ("system", "gpu")  # STACK_CONFIG's
    subnets = {z: resource(SUBNET, f"s-{z}", {"id": UNKNOWN, "availabilityZone": z}) for z in zones}
    asgs = [resource("aws:autoscaling/group:Group", f"{g}-{z}", {
        "vpcZoneIdentifiers": [UNKNOWN], "tags": [{"key": "kiln.dev/node-group", "value": g}]},
        property_dependencies={"vpcZoneIdentifiers": [subnets[z]]}) for g in groups for z in zones]
    assert stack_violations("stack-asg-per-group-and-zone", [*subnets.values(), *asgs]) == []
    assert stack_violations("stack-asg-per-group-and-zone", [*subnets.values(), *asgs[1:]]) == [
        "node group 'system' has no ASG in us-east-2a"]


from pulumi_policy import StackValidationArgs  # noqa: E402


def test_an_endpoint_cidr_that_is_not_a_cidr_is_not_let_through():
    for type_, props in (("eks:index:Cluster", {"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0 /0"]}),
                         ("aws:eks/cluster:Cluster", {"vpcConfig": {"endpointPublicAccess": True,
                                                                    "publicAccessCidrs": ["203.0.113.0/24", "any"]}})):
        found = violations("eks-endpoint-not-public-to-world", type_, props)
        assert len(found) == 1 and "is not a CIDR block" in found[0], found


def test_policies_page_names_every_setting_of_every_rule():
    """Each rule's row says how to configure it: every setting of its config schema is named there."""
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "docs" / "policies.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    missing = [(name, key) for name, p in POLICIES.items() if p.config_schema
               for key in p.config_schema.properties if f"`{key}`" not in rows[name]]
    assert missing == []
