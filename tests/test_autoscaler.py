"""cluster-autoscaler: pinned chart, discovery by the node groups' own tags, IRSA scoped to its service account."""

from __future__ import annotations

import json

import pytest

from _program_helpers import AMI, BASE, GPU_AMI, asg_tags, run, with_changes
from automation.rollout.kube import DEFAULT_AUTOSCALER_NAME, DEFAULT_AUTOSCALER_NAMESPACE
from infra.autoscaler import DEFAULT_CHART_VERSION
from policies.rules.iam import irsa_problems, star_on_star

RELEASE = "kubernetes:helm.sh/v3:Release"
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/rolePolicy:RolePolicy"
ASG = "aws:autoscaling/group:Group"
ISSUER = "oidc.eks.us-east-2.amazonaws.com/id/EXAMPLE"   # what KilnMocks gives the EKS cluster
PROVIDER_ARN = f"arn:aws:iam::123456789012:oidc-provider/{ISSUER}"
TWO_GROUPS = with_changes(BASE, nodeAmi={"standard": AMI, "nvidia": GPU_AMI}, nodeGroups=[
    {"name": "cpu", "instanceTypes": ["m7i.2xlarge"], "minSize": 1, "maxSize": 5, "desiredSize": 2},
    {"name": "gpu", "instanceTypes": ["g5.2xlarge"], "minSize": 0, "maxSize": 4, "desiredSize": 0, "gpu": True},
])


@pytest.fixture(scope="module")
def program():
    return run(TWO_GROUPS)


def release(program):
    return program.one(RELEASE, "autoscaler")


def test_chart_is_pinned_and_comes_from_the_autoscaler_repository(program):
    rel = release(program)
    assert rel.inputs["chart"] == "cluster-autoscaler"
    assert rel.inputs["version"] == DEFAULT_CHART_VERSION == "9.46.6"
    assert rel.inputs["repositoryOpts"] == {"repo": "https://kubernetes.github.io/autoscaler"}
    assert rel.inputs["namespace"] == "kube-system"


def test_chart_version_follows_config():
    rel = release(run(with_changes(TWO_GROUPS, autoscalerChartVersion="9.43.1")))
    assert rel.inputs["version"] == "9.43.1"


def test_release_goes_to_the_cluster_through_its_provider(program):
    provider = program.one("pulumi:providers:kubernetes", "cluster-k8s")
    assert release(program).provider.startswith(provider.urn + "::")


def test_auto_discovery_uses_tags_every_node_group_asg_carries(program):
    values = release(program).inputs["values"]
    assert values["cloudProvider"] == "aws" and values["awsRegion"] == "us-east-2"
    assert values["autoDiscovery"]["clusterName"] == "kiln-test"
    tags = values["autoDiscovery"]["tags"]
    assert tags == ["k8s.io/cluster-autoscaler/enabled", "k8s.io/cluster-autoscaler/kiln-test"]
    asgs = program.of_type(ASG)
    assert len(asgs) == 4   # two groups x two zones
    for asg in asgs:
        assert set(tags) <= set(asg_tags(asg)), asg.name


def test_similar_groups_are_balanced_and_the_cheapest_fit_wins(program):
    args = release(program).inputs["values"]["extraArgs"]
    assert args["balance-similar-node-groups"] is True
    assert args["expander"] in ("least-waste", "price")
    # A node running a model Job (hostPath = local storage) is never scaled down under it.
    assert args["skip-nodes-with-local-storage"] is True


def test_autoscaler_runs_on_nodes_that_are_still_warming_the_model(program):
    values = release(program).inputs["values"]
    assert values["tolerations"] == [{"key": "kiln.dev/model-warming", "operator": "Exists", "effect": "NoSchedule"}]
    # New nodes register with the warming taint; the autoscaler must treat it as temporary, or it
    # would think a scaled-up node can never take a model Job and never scale up for one.
    assert values["extraArgs"]["startup-taint"] == "kiln.dev/model-warming"


def test_autoscaler_resolves_aws_endpoints_without_coredns(program):
    """On a first deploy every node is still warming and CoreDNS does not tolerate that taint: with cluster DNS
    the autoscaler could not resolve AWS endpoints and would crash-loop until a node is warm."""
    assert release(program).inputs["values"]["dnsPolicy"] == "Default"


@pytest.mark.parametrize("version, tag", [("1.33", "v1.33.0"), ("1.31", "v1.31.0")])
def test_image_minor_matches_the_cluster(version, tag):
    values = release(run(with_changes(TWO_GROUPS, kubernetesVersion=version))).inputs["values"]
    assert values["image"] == {"tag": tag}


def test_service_account_carries_the_irsa_role_and_the_name_the_rollout_scales(program):
    values = release(program).inputs["values"]
    role = program.one(ROLE, "autoscaler-irsa")
    sa = values["rbac"]["serviceAccount"]
    assert sa["create"] is True
    assert sa["annotations"] == {"eks.amazonaws.com/role-arn": role.outputs["arn"]}
    # The rollout pauses cluster-autoscaler by scaling this Deployment (automation/rollout/kube.py).
    assert sa["name"] == values["fullnameOverride"] == DEFAULT_AUTOSCALER_NAME
    assert release(program).inputs["namespace"] == DEFAULT_AUTOSCALER_NAMESPACE


def test_irsa_trust_is_limited_to_the_autoscaler_service_account(program):
    trust = json.loads(program.one(ROLE, "autoscaler-irsa").inputs["assumeRolePolicy"])
    [stmt] = trust["Statement"]
    assert stmt["Effect"] == "Allow"
    assert stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert stmt["Principal"] == {"Federated": PROVIDER_ARN}
    assert stmt["Condition"] == {"StringEquals": {
        f"{ISSUER}:sub": "system:serviceaccount:kube-system:cluster-autoscaler",
        f"{ISSUER}:aud": "sts.amazonaws.com",
    }}
    assert irsa_problems(stmt) == []


def test_irsa_condition_keys_never_carry_the_url_scheme():
    # Given the issuer as a URL (pulumi-eks's oidc_provider_url is not documented as scheme-less),
    # the keys must still be "<host/path>:sub" / ":aud", the form IAM matches.
    from infra.irsa import trust_document
    [stmt] = json.loads(trust_document(PROVIDER_ARN, f"https://{ISSUER}", "kube-system", "cluster-autoscaler"))["Statement"]
    assert stmt["Condition"] == {"StringEquals": {
        f"{ISSUER}:sub": "system:serviceaccount:kube-system:cluster-autoscaler",
        f"{ISSUER}:aud": "sts.amazonaws.com",
    }}
    assert trust_document(PROVIDER_ARN, ISSUER, "kube-system", "cluster-autoscaler") == json.dumps(
        json.loads(trust_document(PROVIDER_ARN, f"https://{ISSUER}", "kube-system", "cluster-autoscaler")),
        sort_keys=True)


def test_autoscaler_may_change_only_this_clusters_groups(program):
    policy = program.one(POLICY, "autoscaler-irsa")
    assert policy.inputs["role"] == program.one(ROLE, "autoscaler-irsa").outputs["id"]
    doc = json.loads(policy.inputs["policy"])
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert set(by_sid) == {"ScaleOnlyThisClustersGroups", "DescribeReadOnly"}

    scale = by_sid["ScaleOnlyThisClustersGroups"]
    assert scale["Effect"] == "Allow"
    assert scale["Action"] == ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    assert scale["Resource"] == ["arn:aws:autoscaling:us-east-2:123456789012:autoScalingGroup:*:autoScalingGroupName/*"]
    assert scale["Condition"] == {"StringEquals": {
        "aws:ResourceTag/kiln.dev/cluster": "kiln-test",
        "aws:ResourceTag/k8s.io/cluster-autoscaler/kiln-test": "owned",
    }}
    # Those are tags every ASG of this cluster carries, with those values.
    for asg in program.of_type(ASG):
        tags = asg_tags(asg)
        assert tags["kiln.dev/cluster"][0] == "kiln-test"
        assert tags["k8s.io/cluster-autoscaler/kiln-test"][0] == "owned"

    describe = by_sid["DescribeReadOnly"]
    assert describe["Resource"] == "*"
    assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in describe["Action"])
    assert "autoscaling:DescribeAutoScalingGroups" in describe["Action"]
    assert not any(star_on_star(s) for s in doc["Statement"])
    assert not any("*" in a for s in doc["Statement"] for a in s["Action"])


def test_autoscaler_resources_are_children_of_the_component(program):
    component = program.one("kiln:infra:ClusterAutoscaler")
    children = {(r.type, r.name) for r in program.children_of(component)}
    assert children == {(ROLE, "autoscaler-irsa"), (POLICY, "autoscaler-irsa"), (RELEASE, "autoscaler")}
