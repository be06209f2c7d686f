"""The rules config and pack share (infra/netranges, hostpaths, ci_oidc, zones, instance_types) and
infra/validation.py, which applies them to a stack: boundaries, spellings, one error per mistake."""

from __future__ import annotations

import copy
import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from infra import ci_oidc, hostpaths, instance_types, netranges, validation, zones
from infra.config import ConfigError, parse

GOOD = {
    "clusterName": "kiln-dev", "kubernetesVersion": "1.33", "availabilityZones": ["us-east-2a", "us-east-2b"],
    "nodeAmi": "ami-0123456789abcdef0", "modelVersion": "v5",
    "nodeGroups": [{"name": "cpu", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 3, "desiredSize": 1}],
}
# An untainted group with a node, for cases that taint the group under test (CoreDNS and cluster-autoscaler
# need one: infra/config.py), and the AMI map a gpu: true group needs.
SYSTEM = {"name": "system", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 2, "desiredSize": 1}
AMIS = {"standard": "ami-0123456789abcdef0", "nvidia": "ami-0fedcba9876543210"}


def problems(region=None, **changes) -> list[str]:
    raw = copy.deepcopy(GOOD)
    raw.update(changes)
    try:
        parse(raw, region=region)
    except ConfigError as exc:
        return exc.problems
    return []


# --------------------------------------------------------------------------- netranges


def test_public_addresses_are_counted_without_private_space():
    assert netranges.reach(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]).public_ipv4 == 0
    half = netranges.reach(["0.0.0.0/1"])
    assert half.public_ipv4 == 2 ** 31 - 3 * 2 ** 24 - 2 ** 22 and not half.whole_internet
    assert netranges.reach(["3.0.0.0/8"]).public_ipv4 == 2 ** 24
    assert netranges.reach(["10.1.0.0/16", "10.0.0.0/8"]).public_ipv4 == 0  # nested private


@pytest.mark.parametrize("cidrs, whole", [
    (["0.0.0.0/1", "128.0.0.0/1"], True), (["0.0.0.0/0"], True), (["::/0"], True), (["0.0.0.0/00"], True),
    (["::ffff:0.0.0.0/96"], True), (["64:ff9b::/96"], True), (["2002::/16"], True), (["::/64"], True),
    (["::ffff:0.0.0.0/97", "::ffff:128.0.0.0/97"], True), (["0.0.0.0/1", "::ffff:128.0.0.0/97"], True),
    (["0.0.0.0/1"], False), (["::ffff:10.0.0.0/104"], False), (["2001:db8::/32"], False),
])
def test_whole_internet_in_every_spelling(cidrs, whole):
    assert netranges.reach(cidrs).whole_internet is whole


def test_ipv4_embedded_in_ipv6_maps_to_the_ipv4_it_reaches():
    assert netranges.as_ipv4(ipaddress.ip_network("::ffff:203.0.113.0/120"))[1] == ipaddress.ip_network("203.0.113.0/24")
    assert netranges.as_ipv4(ipaddress.ip_network("2002:cb00:7100::/40"))[1] == ipaddress.ip_network("203.0.113.0/24")
    # A 6to4 network longer than /48 is within one IPv4 address.
    assert netranges.as_ipv4(ipaddress.ip_network("2002:cb00:7101::/64"))[1] == ipaddress.ip_network("203.0.113.1/32")
    assert netranges.as_ipv4(ipaddress.ip_network("2001:db8::/32")) == [ipaddress.ip_network("2001:db8::/32")]


@pytest.mark.parametrize("cidrs, v4, broad", [
    (["3.0.0.0/8"], 8, False), (["3.0.0.0/8", "4.0.0.1/32"], 8, True), (["3.0.0.0/7"], 8, True),
    (["3.0.0.0/16"], 16, False), (["3.0.0.0/15"], 16, True), (["10.0.0.0/8", "3.0.0.0/8"], 8, False),
    (["2a05::/32"], 8, False), (["2a05::/31"], 8, True),
])
def test_too_broad_at_the_boundary(cidrs, v4, broad):
    assert netranges.reach(cidrs).too_broad(v4, 32) is broad


def test_unparseable_ranges_are_left_to_the_caller():
    assert netranges.reach(["office", None, "10.0.0.0/33"]) == netranges.reach([])


@pytest.mark.parametrize("cidr, private", [
    ("10.0.0.0/16", True), ("172.16.0.0/12", True), ("192.168.0.0/20", True), ("100.64.0.0/16", True),
    ("172.0.0.0/10", False), ("8.8.0.0/16", False), ("fd00::/56", False), ("100.128.0.0/16", False),
])
def test_private_vpc_ranges(cidr, private):
    assert netranges.is_private_vpc_range(ipaddress.ip_network(cidr)) is private


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2 ** 32 - 1), st.integers(0, 32)), min_size=1, max_size=6))
def test_splitting_a_range_never_makes_it_narrower(parts):
    """However a set of ranges is cut into pieces, together they admit exactly what the whole admits."""
    nets = [ipaddress.IPv4Network((addr, plen), strict=False) for addr, plen in parts]
    pieces = [str(sub) for n in nets for sub in (n.subnets(1) if n.prefixlen < 32 else [n])]
    assert netranges.reach(pieces) == netranges.reach([str(n) for n in nets])


# --------------------------------------------------------------------------- host paths


@pytest.mark.parametrize("path, root, inside", [
    ("/opt/models", "/opt/models", True), ("/opt/models/v5", "/opt/models", True), ("/opt/models/", "/opt/models", True),
    ("/opt/models-evil", "/opt/models", False), ("/opt/modelsx/v5", "/opt/models", False), ("/opt", "/opt/models", False),
    ("/opt/models/../../etc", "/opt/models", False), ("//opt/models", "/opt/models", True), ("opt/models", "/opt/models", False),
    ("/opt/./models/v5", "/opt/models", True), (None, "/opt/models", False),
])
def test_under_compares_path_components(path, root, inside):
    assert hostpaths.under(path, root) is inside


@pytest.mark.parametrize("path, fragment", [
    ("/", "must not be /"), ("/etc", "inside /etc"), ("/etc/models", "inside /etc"), ("/var", "contains /var/cache"),
    ("/opt", "contains /opt/aws"), ("/usr/local/models", "inside /usr"), ("/var/lib/kubelet", "inside /var/lib"),
    ("/opt/cni/bin", "inside /opt/cni"), ("/.", "normalised"), ("/opt//models", "normalised"), ("/opt/models/", "normalised"),
    ("/opt/models/..", "normalised"),
])
def test_system_directories_cannot_hold_the_model(path, fragment):
    assert fragment in (hostpaths.system_directory_problem(path) or "")


@pytest.mark.parametrize("path", ["/opt/models", "/data/models", "/mnt/models", "/srv/model", "/var/models", "/models"])
def test_directories_of_their_own_can(path):
    assert hostpaths.system_directory_problem(path) is None


# --------------------------------------------------------------------------- CI OIDC


@pytest.mark.parametrize("subject, system", [
    ("repo:example-org/ml-platform:ref:refs/heads/main", ci_oidc.GITHUB),
    ("repo:o/r:ref:refs/heads/release/2.x", ci_oidc.GITHUB), ("repo:o/r:ref:refs/tags/v1.2.3", ci_oidc.GITHUB),
    ("repo:o/r.js:environment:production", ci_oidc.GITHUB),
    ("project_path:group/sub/project:ref_type:branch:ref:main", ci_oidc.GITLAB),
    ("project_path:g/p:ref_type:tag:ref:v1", ci_oidc.GITLAB), ("repo:o/r:ref:refs/heads/main", None),
])
def test_subjects_naming_one_repository_and_ref(subject, system):
    assert ci_oidc.subject_problem(subject, system) is None


@pytest.mark.parametrize("subject, system, fragment", [
    ("repo:*:*", ci_oidc.GITHUB, "wildcard"), ("repo:o/r:*", ci_oidc.GITHUB, "wildcard"),
    ("repo:o/r:ref:refs/heads/?", ci_oidc.GITHUB, "wildcard"), ("repo:o/r:pull_request", ci_oidc.GITHUB, "pull request"),
    ("repo:o/r", ci_oidc.GITHUB, "no ref"), ("repo:o/r:workflow:deploy", ci_oidc.GITHUB, "GitHub"),
    ("repo:o/r:ref:refs/pull/1/merge", ci_oidc.GITHUB, "GitHub"), ("repo:o:ref:refs/heads/main", ci_oidc.GITHUB, "GitHub"),
    ("project_path:g/p:ref_type:branch:ref:main", ci_oidc.GITHUB, "GitHub"),
    ("repo:o/r:ref:refs/heads/main", ci_oidc.GITLAB, "GitLab"), ("project_path:p:ref_type:branch:ref:main", ci_oidc.GITLAB,
                                                                  "GitLab"),
    ("repo:o/r:ref:refs/heads/ma in", ci_oidc.GITHUB, "GitHub"), ("repo:o/r:environment:", ci_oidc.GITHUB, "GitHub"),
])
def test_subjects_that_let_in_more_than_one_pipeline(subject, system, fragment):
    assert fragment in (ci_oidc.subject_problem(subject, system) or "")


def test_issuers_and_audiences():
    assert ci_oidc.issuer_problem(ci_oidc.GITHUB_ISSUER, "sts.amazonaws.com", False) == (None, None)
    assert ci_oidc.issuer_problem(ci_oidc.GITLAB_ISSUER, "https://gitlab.com", False) == (None, None)
    assert ci_oidc.issuer_problem(ci_oidc.GITHUB_ISSUER, "https://gitlab.com", False)[1]
    assert ci_oidc.issuer_problem("https://ghe.example.com/_services/token", "sts.amazonaws.com", False)[0]
    assert ci_oidc.issuer_problem("https://ghe.example.com/_services/token", "anything", True) == (None, None)
    # allowCustomIssuer never widens a known issuer's audiences.
    assert ci_oidc.issuer_problem(ci_oidc.GITHUB_ISSUER, "anything", True)[1]


# --------------------------------------------------------------------------- zones and instance types


@pytest.mark.parametrize("zone, region, fragment", [
    ("us-east-2a", "us-east-2", None), ("us-east-1f", None, None), ("ca-central-1d", "ca-central-1", None),
    ("us-east-2d", None, "does not exist"), ("ca-central-1c", None, "does not exist"), ("us-west-2a", "us-east-2", "not in"),
    ("xx-fake-1a", None, "not a region"), ("us-gov-west-1a", None, None), ("cn-north-1d", None, None), ("use2-az1", None,
                                                                                                        "availability zone"),
])
def test_zones_exist_in_their_region(zone, region, fragment):
    problem = zones.zone_problem(zone, region)
    assert (problem is None) if fragment is None else (fragment in problem)


@pytest.mark.parametrize("instance_type, gpu, arch", [
    ("g5.2xlarge", True, "x86_64"), ("p5.48xlarge", True, "x86_64"), ("p6-b200.48xlarge", True, "x86_64"),
    ("g5g.xlarge", True, "arm64"), ("g4ad.xlarge", False, "x86_64"), ("inf2.xlarge", False, "x86_64"),
    ("t3.micro", False, "x86_64"), ("m7g.large", False, "arm64"), ("c7gn.large", False, "arm64"),
    ("r8gd.large", False, "arm64"), ("a1.large", False, "arm64"), ("m7i-flex.large", False, "x86_64"),
    ("u-6tb1.metal", False, None),
])
def test_instance_type_names(instance_type, gpu, arch):
    assert instance_types.has_nvidia_gpu(instance_type) is gpu
    assert instance_types.architecture(instance_type) == arch


# --------------------------------------------------------------------------- validation on a stack


def test_the_good_stack_has_no_problems_in_its_region():
    assert validation.problems(GOOD, "us-east-2") == [] and problems(region="us-east-2") == []
    assert problems(region="eu-west-1")[0].startswith("kiln:availabilityZones[0] (us-east-2a) is not in the stack's region")


def test_what_parse_refuses_is_not_reported_twice():
    assert problems(availabilityZones=["east", "us-east-2z"]) == [
        "kiln:availabilityZones[0] ('east') must be an availability zone such as us-east-2a",
        "kiln:availabilityZones[1] (us-east-2z) does not exist (us-east-2 has zones us-east-2a, us-east-2b, us-east-2c)"]
    assert problems(kubernetesVersion="1.28") == ["kiln:kubernetesVersion ('1.28') must be >= 1.29 (AL2023 nodeadm and "
                                                  "access entries)"]
    assert len(problems(ciOidc={"providerUrl": ci_oidc.GITHUB_ISSUER, "audience": "sts.amazonaws.com",
                                "subject": "*"})) == 1
    assert len(problems(endpointPublicAccessCidrs=["0.0.0.0/0"])) == 1
    assert len(problems(modelPath="/opt/../etc")) == 1
    assert len(problems(nodeGroups=[{**GOOD["nodeGroups"][0], "taints": ["bad"]}])) == 1
    assert problems(vpcCidr="fd00::/56") == ["kiln:vpcCidr (fd00::/56) must be an IPv4 private range: inside 10.0.0.0/8, "
                                             "172.16.0.0/12, 192.168.0.0/16 (RFC 1918) or 100.64.0.0/10 (RFC 6598)"]
    # An override that is neither true nor false is the one mistake: what it would override is not judged too.
    spot = {**GOOD["nodeGroups"][0], "spot": True, "allowSingleSpotType": "yes"}
    assert problems(nodeGroups=[spot]) == ["kiln:nodeGroups[0].allowSingleSpotType ('yes') must be true or false"]
    custom = {"providerUrl": "https://ghe.example.com/_services/token", "audience": "sts.amazonaws.com",
              "subject": "repo:o/r:ref:refs/heads/main", "allowCustomIssuer": "yes"}
    assert problems(ciOidc=custom) == ["kiln:ciOidc.allowCustomIssuer ('yes') must be true or false"]


def test_zones_in_two_regions_are_one_mistake():
    """With aws:region known, each zone elsewhere is named; without it, the zones are compared with each other."""
    zones_ = ["us-east-2a", "us-west-2b"]
    assert problems(region="us-east-2", availabilityZones=zones_) == [
        "kiln:availabilityZones[1] (us-west-2b) is not in the stack's region us-east-2 (aws:region)"]
    assert problems(availabilityZones=zones_) == ["kiln:availabilityZones must all be in one region (got us-east-2, us-west-2)"]
    assert problems(region="us-east-2", availabilityZones=["us-east-2a", "us-east-2c"]) == []


def test_a_repeated_instance_type_is_not_a_second_spot_type():
    """[x, x] is one type listed twice: refused once (a repeat), never counted as the two a spot group needs."""
    group = {**GOOD["nodeGroups"][0], "spot": True, "instanceTypes": ["m7i.large", "m7i.large"]}
    assert problems(nodeGroups=[group]) == [
        "kiln:nodeGroups[0].instanceTypes (m7i.large, m7i.large) must not repeat an instance type (m7i.large): a repeat "
        "adds no capacity and no second spot pool"]
    assert problems(nodeGroups=[{**group, "instanceTypes": ["m7i.large"]}])[0].startswith(
        "kiln:nodeGroups[0].instanceTypes lists one instance type for a spot group")
    assert problems(nodeGroups=[{**group, "instanceTypes": ["m7i.large", "m6i.large"]}]) == []


def test_group_rules_read_pulumi_strings():
    """Pulumi hands programs JSON strings and "true"/"false": the rules read them as parse does."""
    import json
    group = {**GOOD["nodeGroups"][0], "gpu": "true", "instanceTypes": ["m7i.large"]}
    found = problems(nodeAmi=AMIS, nodeGroups=json.dumps([SYSTEM, group]))
    assert len(found) == 1 and found[0].startswith("kiln:nodeGroups[1].instanceTypes[0] (m7i.large) has no NVIDIA GPU")
    spot = {**GOOD["nodeGroups"][0], "spot": "true", "allowSingleSpotType": "true"}
    assert problems(nodeGroups=json.dumps([spot])) == []
    assert problems(nodeGroups=[{**GOOD["nodeGroups"][0], "maxSize": "1000"}]) == []
    assert problems(nodeGroups=[{**GOOD["nodeGroups"][0], "maxSize": "1001"}])[0].startswith(
        "kiln:nodeGroups[0].maxSize (1001) must be <= 1000")


@pytest.mark.parametrize("version", validation.SUPPORTED_KUBERNETES_VERSIONS)
def test_every_supported_version_is_accepted(version):
    assert problems(kubernetesVersion=version) == []


@pytest.mark.parametrize("label, ok", [
    ("node.kubernetes.io/pool", True), ("kubelet.kubernetes.io/x", True), ("example.com/team", True), ("team", True),
    ("node-role.kubernetes.io/worker", False), ("kubernetes.io/hostname", False), ("topology.kubernetes.io/zone", False),
    ("k8s.io/x", False), ("foo.k8s.io/x", False), ("a" * 63, True), ("notkubernetes.io/x", True),
    # cluster-autoscaler's ASG tag key is 46 characters of prefix plus the label key: at most 82 fit in 128.
    ("a" * 40 + "." + "b" * 27 + "." + "example.com/x", True), ("a" * 40 + "." + "b" * 28 + "." + "example.com/x", False),
])
def test_label_keys_kubelet_and_asg_tags_accept(label, ok):
    found = problems(nodeGroups=[{**GOOD["nodeGroups"][0], "labels": {label: "v"}}])
    assert (found == []) is ok, found


@pytest.mark.parametrize("taint, ok", [
    ("dedicated=ml:NoSchedule", True), ("dedicated:NoExecute", True), ("dedicated=:NoSchedule", True),
    ("dedicated=a_b.c-d:PreferNoSchedule", True), ("dedicated=" + "a" * 63 + ":NoSchedule", True),
    ("dedicated=" + "a" * 64 + ":NoSchedule", False), ("dedicated=-a:NoSchedule", False),
    ("dedicated=a$b:NoSchedule", False), ("dedicated=a`b`:NoSchedule", False), ("kiln.dev/x=y:NoSchedule", False),
])
def test_taint_syntax(taint, ok):
    found = problems(nodeGroups=[{**GOOD["nodeGroups"][0], "taints": [taint]}, SYSTEM])
    assert (found == []) is ok, found


def test_duplicate_taints_but_not_same_key_with_another_effect():
    group = GOOD["nodeGroups"][0]
    assert problems(nodeGroups=[{**group, "taints": ["a=b:NoSchedule", "a=c:NoExecute"]}, SYSTEM]) == []
    assert len(problems(nodeGroups=[{**group, "taints": ["a=b:NoSchedule", "a:NoSchedule"]}, SYSTEM])) == 1


# --------------------------------------------------------------------------- review of issue 14: what got through

@pytest.mark.parametrize("changes, key", [
    ({"nodeGroups": [{**GOOD["nodeGroups"][0], "maxSize": "３"}]}, "kiln:nodeGroups[0].maxSize"),   # fullwidth digit
    ({"nodeGroups": [{**GOOD["nodeGroups"][0], "minSize": "٠"}]}, "kiln:nodeGroups[0].minSize"),   # Arabic-Indic zero
    ({"ecrKeepImages": "１０"}, "kiln:ecrKeepImages"),
    ({"kubernetesVersion": "1.３３"}, "kiln:kubernetesVersion"),
    ({"availabilityZones": ["us-east-２a", "us-east-2b"]}, "kiln:availabilityZones[0]"),
])
def test_numbers_are_ascii_digits(changes, key):
    found = problems(**changes)
    assert found and all(p.startswith(key) for p in found), found


def test_a_unicode_digit_is_not_an_image_port_or_an_account():
    from infra.imageref import image_reference_problem
    assert image_reference_problem("localhost:５０００/x:1") is not None
    assert image_reference_problem("localhost:5000/x:1") is None
    arn = "arn:aws:iam::１２３４５６７８９０１２:oidc-provider/token.actions.githubusercontent.com"
    found = problems(ciOidc={"providerUrl": ci_oidc.GITHUB_ISSUER, "audience": "sts.amazonaws.com",
                             "subject": "repo:o/r:ref:refs/heads/main", "providerArn": arn})
    assert len(found) == 1 and found[0].startswith("kiln:ciOidc.providerArn")


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "172.16.0.0/12", "10.0.0.0/15"])
def test_a_vpc_larger_than_ec2_allows_is_refused(cidr):
    assert problems(vpcCidr=cidr) == [f"kiln:vpcCidr ({cidr}) must be /16 or smaller: a VPC's CIDR block is /16 to "
                                      "/28 (EC2 refuses a larger one)"]
    assert problems(vpcCidr="10.0.0.0/16") == []


def test_ecr_repository_names_within_ecrs_length_limit():
    found = problems(ecrRepositories=["a" * 257])
    assert len(found) == 1 and "must be 2 to 256 characters" in found[0]
    assert problems(ecrRepositories=["a" * 256, "ab"]) == []


def test_a_namespace_that_is_not_a_dns_label_is_one_mistake():
    assert problems(jobsNamespace="kube-system ") == ["kiln:jobsNamespace ('kube-system ') must be a DNS-1123 label"]


def test_the_model_path_rule_says_what_it_wants():
    found = problems(modelPath="/opt/mоdels")  # a Cyrillic o
    assert len(found) == 1 and "ASCII letters, digits" in found[0]


# --------------------------------------------------------------------------- ciOidc: one role per purpose

GH = {"providerUrl": "https://token.actions.githubusercontent.com", "audience": "sts.amazonaws.com",
      "subject": "repo:o/r:environment:production"}
GL = {"providerUrl": "https://gitlab.com", "audience": "kiln-deploy",
      "subject": "project_path:g/p:ref_type:branch:ref:main"}


@pytest.mark.parametrize("ci, key, fragment", [
    # A rotation role any pull request could assume, or one any token of the repository satisfies.
    ({**GH, "rotation": {"subject": "repo:o/r:pull_request"}}, "ciOidc.rotation.subject", "pull request"),
    ({**GH, "rotation": {"subject": "repo:o/r:*"}}, "ciOidc.rotation.subject", "wildcard"),
    # The same token would satisfy two roles: one job could hold both.
    ({**GH, "rotation": {"subject": "repo:o/r:environment:production"}}, "ciOidc.rotation.subject", "same tokens"),
    ({**GH, "preview": {"subject": "repo:o/r:environment:production"}}, "ciOidc.preview.subject", "same tokens"),
    ({**GL, "rotation": {"subject": "project_path:g/p:ref_type:branch:ref:main"}}, "ciOidc.rotation.subject", "same tokens"),
    ({**GL, "preview": {"subject": "project_path:g/p:ref_type:branch:ref:*"}}, "ciOidc.preview.subject", "same tokens"),
    # Every role is this repository's.
    ({**GH, "preview": {"subject": "repo:other/r:pull_request"}}, "ciOidc.preview.subject", "another repository"),
    # A preview pattern beyond a pull request's subject (GitHub) or one project's branches (GitLab).
    ({**GH, "preview": {"subject": "repo:o/*:pull_request"}}, "ciOidc.preview.subject", "without a wildcard"),
    ({**GL, "preview": {"subject": "project_path:g/*:ref_type:branch:ref:*", "audience": "kiln-preview"}},
     "ciOidc.preview.subject", "ciOidc.preview.subject"),
    # GitLab: an audience kiln's template gives another role.
    ({**GL, "rotation": {"subject": "project_path:g/p:ref_type:branch:ref:main", "audience": "kiln-preview"}},
     "ciOidc.rotation.audience", "preview role's audience"),
    ({**GH, "stateBackend": "my-bucket"}, "ciOidc.stateBackend", "s3://"),
    ({**GH, "secretsKmsKey": "alias/pulumi"}, "ciOidc.secretsKmsKey", "key ARN"),
])
def test_ci_roles_that_would_let_a_token_in_twice_or_from_elsewhere(ci, key, fragment):
    found = [p for p in problems(ciOidc=ci) if key in p]
    assert found and fragment in found[0], problems(ciOidc=ci)


@pytest.mark.parametrize("ci", [
    {**GH, "preview": {"subject": "repo:o/r:pull_request"}, "rotation": {"subject": "repo:o/r:environment:rotation"},
     "stateBackend": "s3://state/kiln",
     "secretsKmsKey": "arn:aws:kms:us-east-2:123456789012:key/0e3f1f2a-1111-2222-3333-444455556666"},
    {**GL, "preview": {"subject": "project_path:g/p:ref_type:branch:ref:*", "audience": "kiln-preview"},
     "rotation": {"subject": "project_path:g/p:ref_type:branch:ref:main", "audience": "kiln-rotation"}},
])
def test_one_role_per_purpose_as_the_templates_use_them(ci):
    assert problems(ciOidc=ci) == []
