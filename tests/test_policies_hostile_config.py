"""Hostile stack configs through `python -m policies check --config`, as a security reviewer tries them.

Each case is the project's own ``Pulumi.example.yaml`` with one realistic mistake or
attack, and one expected outcome:

* ``Refused(key, words)`` — bad input, exit 2, before any resource is declared; the
  error line names ``kiln:<key>`` and says why (``words``);
* ``Flagged(policy)`` — a valid config the pack rejects: exit 1, a mandatory
  violation of ``policy``;
* ``Allowed(reason)`` — exit 0, and ``reason`` says why that is right.

The note of issue 14 counts how many of these were accepted before and after.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import pytest
import yaml

from policies import offline
from policies.program import PROJECT_DIR

EXAMPLE = yaml.safe_load((PROJECT_DIR / "Pulumi.example.yaml").read_text())["config"]
ECR = "123456789012.dkr.ecr.us-east-2.amazonaws.com"
DIGEST = "sha256:" + "0123456789abcdef" * 4
GITHUB = "https://token.actions.githubusercontent.com"
REPO = "repo:example-org/ml-platform"


@dataclass(frozen=True)
class Refused:
    key: str
    words: str


@dataclass(frozen=True)
class Flagged:
    policy: str


@dataclass(frozen=True)
class Allowed:
    reason: str


Expectation = Union[Refused, Flagged, Allowed]


def stack(**changes: Any) -> dict[str, Any]:
    """The example stack with ``kiln:<key>`` (or ``aws_region``) changed; None removes a key."""
    config = copy.deepcopy(EXAMPLE)
    for key, value in changes.items():
        full = "aws:region" if key == "aws_region" else f"kiln:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value
    return config


def groups(index: int, **changes: Any) -> list[dict[str, Any]]:
    """The example's node groups with group ``index`` changed (None removes a field)."""
    out = copy.deepcopy(EXAMPLE["kiln:nodeGroups"])
    for key, value in changes.items():
        if value is None:
            out[index].pop(key, None)
        else:
            out[index][key] = value
    return out


def ci(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLE["kiln:ciOidc"], **changes}


CASES: list[tuple[str, dict[str, Any], Expectation]] = [
    # --- the API endpoint: half the internet, combined ranges, IPv4 written as IPv6
    ("endpoint-half-internet", stack(endpointPublicAccessCidrs=["0.0.0.0/1"]),
     Refused("endpointPublicAccessCidrs[0]", "public addresses")),
    ("endpoint-two-halves", stack(endpointPublicAccessCidrs=["0.0.0.0/1", "128.0.0.0/1"]),
     Refused("endpointPublicAccessCidrs[0]", "public addresses")),
    ("endpoint-two-slash-8-together", stack(endpointPublicAccessCidrs=["3.0.0.0/8", "4.0.0.0/8"]),
     Refused("endpointPublicAccessCidrs", "together")),
    ("endpoint-ipv4-mapped-world", stack(endpointPublicAccessCidrs=["::ffff:0.0.0.0/96"]),
     Refused("endpointPublicAccessCidrs[0]", "whole internet")),
    ("endpoint-ipv4-mapped-half", stack(endpointPublicAccessCidrs=["::ffff:0.0.0.0/97"]),
     Refused("endpointPublicAccessCidrs[0]", "public addresses")),
    ("endpoint-6to4-world", stack(endpointPublicAccessCidrs=["2002::/16"]),
     Refused("endpointPublicAccessCidrs[0]", "whole internet")),
    ("endpoint-ipv6-world", stack(endpointPublicAccessCidrs=["::/0"]),
     Refused("endpointPublicAccessCidrs[0]", "whole internet")),
    # All global unicast IPv6 — which includes 6to4 (2002::/16), i.e. every IPv4 address too.
    ("endpoint-ipv6-global-unicast", stack(endpointPublicAccessCidrs=["2000::/3"]),
     Refused("endpointPublicAccessCidrs[0]", "whole internet")),
    ("endpoint-ipv6-slash-24", stack(endpointPublicAccessCidrs=["2a05::/24"]),
     Refused("endpointPublicAccessCidrs[0]", "public addresses")),
    ("endpoint-one-slash-8", stack(endpointPublicAccessCidrs=["3.0.0.0/8"]),
     Allowed("a single /8 is the broadest range config accepts (a large corporate or cloud block); "
             "the pack's eks-endpoint-not-public-to-world can be set stricter")),
    # --- the CI OIDC trust
    ("ci-subject-any-repository", stack(ciOidc=ci(subject="repo:*:*")), Refused("ciOidc.subject", "one repository")),
    ("ci-subject-any-ref", stack(ciOidc=ci(subject=f"{REPO}:*")), Refused("ciOidc.subject", "wildcard")),
    ("ci-subject-any-branch", stack(ciOidc=ci(subject=f"{REPO}:ref:refs/heads/*")),
     Refused("ciOidc.subject", "wildcard")),
    ("ci-subject-any-org", stack(ciOidc=ci(subject="repo:*/ml-platform:ref:refs/heads/main")),
     Refused("ciOidc.subject", "wildcard")),
    ("ci-subject-single-char-wildcard", stack(ciOidc=ci(subject="repo:example-org/ml-platfor?:ref:refs/heads/main")),
     Refused("ciOidc.subject", "wildcard")),
    ("ci-subject-pull-request", stack(ciOidc=ci(subject=f"{REPO}:pull_request")),
     Refused("ciOidc.subject", "pull request")),
    ("ci-subject-repository-only", stack(ciOidc=ci(subject="repo:example-org/ml-platform")),
     Refused("ciOidc.subject", "ref or an environment")),
    ("ci-subject-gitlab-format-on-github", stack(ciOidc=ci(subject="project_path:g/p:ref_type:branch:ref:main")),
     Refused("ciOidc.subject", "GitHub")),
    ("ci-subject-environment", stack(ciOidc=ci(subject=f"{REPO}:environment:production")),
     Allowed("one repository and one environment: GitHub's documented subject for a job with an environment")),
    ("ci-provider-unknown", stack(ciOidc=ci(providerUrl="https://oidc.evil.example.com")),
     Refused("ciOidc.providerUrl", "known CI issuer")),
    ("ci-provider-trailing-slash", stack(ciOidc=ci(providerUrl=GITHUB + "/")),
     Refused("ciOidc.providerUrl", "known CI issuer")),
    ("ci-audience-unknown", stack(ciOidc=ci(audience="anything")), Refused("ciOidc.audience", "audience")),
    ("ci-gitlab", stack(ciOidc={"providerUrl": "https://gitlab.com", "audience": "sts.amazonaws.com",
                                "subject": "project_path:ml/platform:ref_type:branch:ref:main"}),
     Allowed("GitLab.com's issuer with GitLab's documented subject for one project and one branch")),
    ("ci-gitlab-any-branch", stack(ciOidc={"providerUrl": "https://gitlab.com", "audience": "sts.amazonaws.com",
                                           "subject": "project_path:ml/platform:ref_type:branch:ref:*"}),
     Refused("ciOidc.subject", "wildcard")),
    ("ci-custom-issuer-explicitly-allowed",
     stack(ciOidc=ci(providerUrl="https://github.example.com/_services/token", allowCustomIssuer=True)),
     Allowed("a GitHub Enterprise Server issuer, explicitly allowed; the subject still names one repository and ref")),
    ("ci-custom-issuer-any-ref",
     stack(ciOidc=ci(providerUrl="https://github.example.com/_services/token", allowCustomIssuer=True,
                     subject=f"{REPO}:*")),
     Refused("ciOidc.subject", "wildcard")),
    ("ci-custom-issuer-override-not-boolean",
     stack(ciOidc=ci(providerUrl="https://github.example.com/_services/token", allowCustomIssuer="yes")),
     Refused("ciOidc.allowCustomIssuer", "true or false")),
    # --- taints and labels: Kubernetes syntax, kubelet's rules, ASG tag limits
    ("taint-command-substitution", stack(nodeGroups=groups(1, taints=["workload=$(reboot):NoSchedule"])),
     Refused("nodeGroups[1].taints[0]", "value")),
    ("taint-double-quotes", stack(nodeGroups=groups(1, taints=['workload="training":NoSchedule'])),
     Refused("nodeGroups[1].taints[0]", "value")),
    ("taint-single-quotes", stack(nodeGroups=groups(1, taints=["workload='training':NoSchedule"])),
     Refused("nodeGroups[1].taints[0]", "value")),
    ("taint-non-ascii", stack(nodeGroups=groups(1, taints=["workload=tráining:NoSchedule"])),
     Refused("nodeGroups[1].taints[0]", "value")),
    ("taint-value-100-characters", stack(nodeGroups=groups(1, taints=["workload=" + "a" * 100 + ":NoSchedule"])),
     Refused("nodeGroups[1].taints[0]", "value")),
    ("taint-key-too-long-for-asg-tag",
     stack(nodeGroups=groups(1, taints=["team." + "a" * 70 + ".example.com/workload=training:NoSchedule"])),
     Refused("nodeGroups[1].taints[0]", "ASG tag")),
    ("taint-key-kiln-reserved", stack(nodeGroups=groups(1, taints=["kiln.dev/model-warming=true:NoSchedule"])),
     Refused("nodeGroups[1].taints[0]", "reserves")),
    ("taint-duplicate-key-and-effect",
     stack(nodeGroups=groups(1, taints=["workload=training:NoSchedule", "workload=serving:NoSchedule"])),
     Refused("nodeGroups[1].taints[1]", "same key and effect")),
    ("label-kubelet-forbidden-namespace",
     stack(nodeGroups=groups(0, labels={"node-role.kubernetes.io/control-plane": "true"})),
     Refused("nodeGroups[0].labels.node-role.kubernetes.io/control-plane", "kubelet")),
    ("label-key-too-long-for-asg-tag",
     stack(nodeGroups=groups(0, labels={"team." + "a" * 70 + ".example.com/workload": "x"})),
     Refused("nodeGroups[0].labels.team." + "a" * 70 + ".example.com/workload", "ASG tag")),
    ("label-value-command-substitution", stack(nodeGroups=groups(0, labels={"team": "$(reboot)"})),
     Refused("nodeGroups[0].labels.team", "label value")),
    ("label-kubelet-allowed-namespace", stack(nodeGroups=groups(0, labels={"node.kubernetes.io/pool": "general"})),
     Allowed("node.kubernetes.io/ is one of the prefixes kubelet lets a node label itself with")),
    # IAM trusts only its own account's OIDC providers: a role trusting another account's could never be
    # assumed, and is not the CI deploy role the cluster-admin access may go to (the preview's facts refuse it too).
    ("ci-provider-of-another-account",
     stack(ciOidc=ci(providerArn="arn:aws:iam::999999999999:oidc-provider/token.actions.githubusercontent.com")),
     Flagged("k8s-ci-cluster-admin-only-for-the-ci-deploy-role")),
    # --- zones
    ("zones-in-another-region", stack(availabilityZones=["us-west-2a", "us-west-2b", "us-west-2c"]),
     Refused("availabilityZones[0]", "region us-east-2")),
    ("zone-that-does-not-exist", stack(availabilityZones=["us-east-2a", "us-east-2b", "us-east-2z"]),
     Refused("availabilityZones[2]", "does not exist")),
    ("zone-letter-past-the-region", stack(availabilityZones=["us-east-2a", "us-east-2b", "us-east-2d"]),
     Refused("availabilityZones[2]", "does not exist")),
    ("zones-in-unknown-region",
     stack(aws_region="xx-fake-1", availabilityZones=["xx-fake-1a", "xx-fake-1b", "xx-fake-1c"]),
     Refused("availabilityZones[0]", "not a region")),
    ("zones-without-aws-region",
     stack(aws_region=None),
     Allowed("without aws:region the provider takes the region from the environment; zones must still exist "
             "and share one region")),
    # Left by the review of issue 12: a zone outside aws:region is one mistake, reported once.
    ("zone-outside-aws-region", stack(availabilityZones=["us-east-2a", "us-west-2b"]),
     Refused("availabilityZones[1]", "not in the stack's region us-east-2")),
    ("zones-in-two-regions-without-aws-region", stack(aws_region=None, availabilityZones=["us-east-2a", "us-west-2b"]),
     Refused("availabilityZones", "must all be in one region")),
    ("one-zone", stack(availabilityZones=["us-east-2a"]), Refused("availabilityZones", "at least two zones")),
    # --- instance types
    ("gpu-on-t3-micro", stack(nodeGroups=groups(1, instanceTypes=["t3.micro", "t3a.micro"])),
     Refused("nodeGroups[1].instanceTypes[0]", "NVIDIA GPU")),
    ("gpu-on-amd-gpu", stack(nodeGroups=groups(1, instanceTypes=["g4ad.2xlarge"], spot=False)),
     Refused("nodeGroups[1].instanceTypes[0]", "NVIDIA GPU")),
    ("gpu-on-inferentia", stack(nodeGroups=groups(1, instanceTypes=["inf2.xlarge", "inf1.xlarge"])),
     Refused("nodeGroups[1].instanceTypes[0]", "NVIDIA GPU")),
    ("gpu-type-without-gpu-flag", stack(nodeGroups=groups(0, instanceTypes=["g5.2xlarge"])),
     Refused("nodeGroups[0].instanceTypes[0]", "gpu: true")),
    ("gpu-group-set-to-gpu-false", stack(nodeGroups=groups(1, gpu=False)),
     Refused("nodeGroups[1].instanceTypes[0]", "gpu: true")),
    ("gpu-group-without-nvidia-ami", stack(nodeAmi={"standard": EXAMPLE["kiln:nodeAmi"]["standard"]}),
     Refused("nodeAmi.nvidia", "gpu: true")),
    ("gpu-only-stack", stack(nodeGroups=[g for g in EXAMPLE["kiln:nodeGroups"] if g.get("gpu")]),
     Refused("nodeGroups", "without NoSchedule/NoExecute taints")),
    ("mixed-sizes", stack(nodeGroups=groups(1, instanceTypes=["g5.2xlarge", "g6.4xlarge"])),
     Refused("nodeGroups[1].instanceTypes", "one size")),
    # A repeat is not a second spot pool (and the ASG API refuses duplicate overrides): refused, once.
    ("spot-same-type-twice", stack(nodeGroups=groups(1, instanceTypes=["g5.2xlarge", "g5.2xlarge"])),
     Refused("nodeGroups[1].instanceTypes", "must not repeat an instance type")),
    ("mixed-architectures", stack(nodeGroups=groups(0, instanceTypes=["m7i.2xlarge", "m7g.2xlarge"])),
     Refused("nodeGroups[0].instanceTypes", "architecture")),
    ("spot-single-type", stack(nodeGroups=groups(1, instanceTypes=["g5.2xlarge"])),
     Refused("nodeGroups[1].instanceTypes", "two instance types")),
    ("spot-single-type-explicit-override",
     stack(nodeGroups=groups(1, instanceTypes=["g5.2xlarge"], allowSingleSpotType=True)),
     Allowed("the group says allowSingleSpotType: true — an explicit, reviewable choice")),
    ("spot-override-not-boolean",
     stack(nodeGroups=groups(1, instanceTypes=["g5.2xlarge"], allowSingleSpotType="yes")),
     Refused("nodeGroups[1].allowSingleSpotType", "true or false")),
    ("expensive-family", stack(nodeGroups=groups(1, instanceTypes=["p5.48xlarge", "p5e.48xlarge"])),
     Flagged("cost-instance-families-allowed")),
    # --- namespaces, versions, networks, sizes
    ("jobs-in-kube-system", stack(jobsNamespace="kube-system"), Refused("jobsNamespace", "system namespace")),
    ("jobs-in-default", stack(jobsNamespace="default"), Refused("jobsNamespace", "system namespace")),
    ("jobs-in-kube-prefixed", stack(jobsNamespace="kube-jobs"), Refused("jobsNamespace", "kube-")),
    ("kubernetes-1.99", stack(kubernetesVersion="1.99"), Refused("kubernetesVersion", "supported")),
    ("kubernetes-1.28", stack(kubernetesVersion="1.28"), Refused("kubernetesVersion", "1.29")),
    ("vpc-public-range", stack(vpcCidr="8.8.0.0/16"), Refused("vpcCidr", "private")),
    ("vpc-straddles-private-range", stack(vpcCidr="172.0.0.0/10"), Refused("vpcCidr", "private")),
    ("vpc-ipv6", stack(vpcCidr="fd00::/56"), Refused("vpcCidr", "IPv4")),
    ("vpc-shared-address-space", stack(vpcCidr="100.64.0.0/16"),
     Allowed("RFC 6598 shared address space (100.64.0.0/10) is not routed on the internet, as AWS allows for VPCs")),
    ("max-size-100000", stack(nodeGroups=groups(0, maxSize=100000)), Refused("nodeGroups[0].maxSize", "<= 1000")),
    ("max-size-within-config-over-budget", stack(nodeGroups=groups(0, maxSize=1000)),
     Flagged("cost-max-nodes-per-group")),
    ("root-volume-16-tib", stack(nodeGroups=groups(0, volumeSizeGiB=16000)), Flagged("cost-volume-size-bounds")),
    ("ecr-keeps-50-images", stack(ecrKeepImages=50), Flagged("ecr-lifecycle-policy")),
    # --- the model path
    ("model-path-etc", stack(modelPath="/etc"), Refused("modelPath", "system directory")),
    ("model-path-slash-dot", stack(modelPath="/."), Refused("modelPath", "normalised")),
    ("model-path-trailing-dot", stack(modelPath="/opt/models/."), Refused("modelPath", "normalised")),
    ("model-path-double-slash", stack(modelPath="//etc/models"), Refused("modelPath", "normalised")),
    ("model-path-opt-shadows-cni", stack(modelPath="/opt"), Refused("modelPath", "system directory")),
    ("model-path-under-kubelet", stack(modelPath="/var/lib/kubelet/models"), Refused("modelPath", "system directory")),
    ("model-path-usr-local", stack(modelPath="/usr/local/models"), Refused("modelPath", "system directory")),
    ("model-path-data", stack(modelPath="/data/models"),
     Allowed("a directory of its own; the pack's hostPath rule follows kiln:modelPath")),
    # --- prefetch images
    ("prefetch-latest", stack(prefetchImages=[f"{ECR}/trainer:latest"]), Refused("prefetchImages[0]", "latest")),
    ("prefetch-public-latest", stack(prefetchImages=["docker.io/library/python:latest"]),
     Refused("prefetchImages[0]", "latest")),
    ("prefetch-latest-upper-case", stack(prefetchImages=[f"{ECR}/trainer:LATEST"]), Refused("prefetchImages[0]", "latest")),
    ("prefetch-untagged", stack(prefetchImages=["docker.io/library/python"]), Refused("prefetchImages[0]", "tag or")),
    ("prefetch-no-registry", stack(prefetchImages=["library/python:3.12"]), Refused("prefetchImages[0]", "registry")),
    ("prefetch-non-ascii-tag", stack(prefetchImages=["docker.io/library/python:3.12-slím"]),
     Refused("prefetchImages[0]", "tag or")),
    ("prefetch-glob", stack(prefetchImages=[f"{ECR}/*:1.4"]), Refused("prefetchImages[0]", "repository")),
    ("prefetch-public-pinned-by-tag", stack(prefetchImages=["public.ecr.aws/docker/library/python:3.12-slim"]),
     Allowed("pinned by tag, as the issue asks; a digest is accepted too")),
    ("prefetch-pinned-by-digest", stack(prefetchImages=[f"{ECR}/trainer@{DIGEST}"]), Allowed("pinned by digest")),
    # --- the termination handler (its image holds and releases every node: by digest, the prefetch rule's grammar)
    ("handler-image-by-tag", stack(terminationHandlerImage=f"{ECR}/kiln-termination-handler:1.0"),
     Refused("terminationHandlerImage", "by digest")),
    ("handler-image-latest", stack(terminationHandlerImage=f"{ECR}/kiln-termination-handler:latest"),
     Refused("terminationHandlerImage", "by digest")),
    ("handler-image-no-registry", stack(terminationHandlerImage=f"kiln-termination-handler@{DIGEST}"),
     Refused("terminationHandlerImage", "registry")),
    ("handler-image-short-digest", stack(terminationHandlerImage=f"{ECR}/kiln-termination-handler@sha256:abc"),
     Refused("terminationHandlerImage", "invalid digest")),
    ("handler-heartbeat-10s", stack(terminationHeartbeatSeconds=10), Refused("terminationHeartbeatSeconds", ">= 30")),
    ("handler-grace-past-the-global-timeout", stack(terminationHeartbeatSeconds=30),
     Refused("terminationJobGraceSeconds", "must be <= 2640")),
    ("handler-grace-48h", stack(terminationJobGraceSeconds=48 * 3600, terminationHeartbeatSeconds=7200),
     Refused("terminationJobGraceSeconds", "must be <= 172440")),
    ("handler-image-tag-and-digest", stack(terminationHandlerImage=f"{ECR}/kiln-termination-handler:1.0@{DIGEST}"),
     Allowed("the digest pins it; the tag is informative")),
    ("no-termination-handler", stack(terminationHandlerImage=None),
     Allowed("no hook and no handler (the program warns): kiln's own rollout still never kills a Job")),
    # --- added by the review of issue 14
    ("review-max-size-fullwidth-digit", stack(nodeGroups=groups(0, maxSize="３")),
     Refused("nodeGroups[0].maxSize", "integer")),
    ("review-min-size-arabic-indic-zero", stack(nodeGroups=groups(0, minSize="٠")),
     Refused("nodeGroups[0].minSize", "integer")),
    ("review-keep-images-fullwidth", stack(ecrKeepImages="１０"), Refused("ecrKeepImages", "integer")),
    ("review-vpc-slash-8", stack(vpcCidr="10.0.0.0/8"), Refused("vpcCidr", "/16 or smaller")),
    ("review-vpc-slash-12", stack(vpcCidr="172.16.0.0/12"), Refused("vpcCidr", "/16 or smaller")),
    ("review-ecr-repository-300-characters", stack(ecrRepositories=["a" * 300]),
     Refused("ecrRepositories[0]", "2 to 256 characters")),
    ("review-provider-arn-unicode-account",
     stack(ciOidc=ci(providerArn="arn:aws:iam::１２３４５６７８９０１２:oidc-provider/token.actions.githubusercontent.com")),
     Refused("ciOidc.providerArn", "IAM OIDC provider ARN")),
    ("review-jobs-namespace-trailing-space", stack(jobsNamespace="kube-system "),
     Refused("jobsNamespace", "DNS-1123")),
    ("review-node-groups-as-a-json-string", stack(nodeGroups=json.dumps(EXAMPLE["kiln:nodeGroups"])),
     Allowed("how Pulumi itself hands structured config to a program")),
    ("review-ci-oidc-as-a-json-string", stack(ciOidc=json.dumps(ci())),
     Allowed("the same map as JSON text; each field is judged as before")),
    ("review-model-path-empty", stack(modelPath=""),
     Allowed("an empty value means not set (Pulumi.yaml declares \"\" as the default): /opt/models")),
    ("review-prefetch-tag-latest-cuda", stack(prefetchImages=["ghcr.io/org/trainer:latest-cuda"]),
     Allowed("a tag, not latest itself; the issue asks for a tag or digest, never latest")),
]

# Stack files whose text, not their values, is the attack: read as the Pulumi CLI reads them (Go's yaml.v3).
EXAMPLE_TEXT = (PROJECT_DIR / "Pulumi.example.yaml").read_text()
RAW_CASES: list[tuple[str, str, str]] = [
    # (id, stack file text, what the one error line says)
    ("review-key-given-twice-first-wins-in-go", EXAMPLE_TEXT.replace(
        "  kiln:jobsNamespace: ml-jobs\n", "  kiln:jobsNamespace: kube-system\n  kiln:jobsNamespace: ml-jobs\n"),
     "key 'kiln:jobsNamespace' is given twice"),
    ("review-key-given-twice-in-a-group", EXAMPLE_TEXT.replace("      maxSize: 3\n", "      maxSize: 3\n      maxSize: 900\n", 1),
     "key 'maxSize' is given twice"),
    ("review-config-section-given-twice", EXAMPLE_TEXT + "config:\n  kiln:modelPath: /etc\n", "key 'config' is given twice"),
    ("review-key-without-namespace-shadows", EXAMPLE_TEXT.replace(
        "  kiln:modelPath: /opt/models\n", "  kiln:modelPath: /opt/models\n  modelPath: /etc\n"), "kiln:modelPath is given twice"),
    ("review-yaml-1-1-yes", EXAMPLE_TEXT.replace("      spot: true\n", "      spot: yes\n"),
     "kiln:nodeGroups[1].spot ('yes') must be true or false"),
    ("review-yaml-1-1-base-60", EXAMPLE_TEXT.replace("      maxSize: 3\n", "      maxSize: 16:40\n", 1),
     "kiln:nodeGroups[0].maxSize ('16:40') must be an integer"),
]


@dataclass
class Outcome:
    code: int
    errors: list[str]
    mandatory: set[str]
    advisory: set[str]


def run_check(config: dict[str, Any], tmp_path: Path, capsys) -> Outcome:
    """Exactly `python -m policies check --config <file> --json`, in process."""
    path = tmp_path / "Pulumi.hostile.yaml"
    path.write_text(yaml.safe_dump({"config": config}, allow_unicode=True), encoding="utf-8")
    code = offline.main(["--config", str(path), "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    errors = [line.removeprefix("error: ") for line in captured.err.splitlines()]
    violations = report.get("violations", [])
    return Outcome(code, errors, {v["policy"] for v in violations if v["level"] == "mandatory"},
                   {v["policy"] for v in violations if v["level"] == "advisory"})


@pytest.mark.parametrize("config, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_config(config, expected, tmp_path, capsys, monkeypatch):
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):  # the region is the stack file's (or none)
        monkeypatch.delenv(variable, raising=False)
    outcome = run_check(config, tmp_path, capsys)
    if isinstance(expected, Refused):
        assert outcome.code == 2, outcome
        named = [e for e in outcome.errors if e.startswith(f"kiln:{expected.key} ")]
        assert named, outcome.errors
        assert any(expected.words in e for e in named), named
        # Nothing else in the case is refused (by config.py's or validation.py's rules): every error is about the
        # key the case changes (one per offending item, e.g. per zone).
        top = expected.key.split(".")[0].split("[")[0]
        assert all(e.startswith((f"kiln:{top} ", f"kiln:{top}[", f"kiln:{top}.")) for e in outcome.errors), outcome.errors
    elif isinstance(expected, Flagged):
        assert outcome.code == 1, outcome
        assert expected.policy in outcome.mandatory, outcome
    else:
        assert outcome.code == 0 and not outcome.mandatory, outcome
        assert expected.reason


def test_case_ids_are_unique_and_the_table_is_large():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    hostile = [c for c in CASES if not isinstance(c[2], Allowed)]
    assert len(hostile) >= 41  # at least as many as the review tried


@pytest.mark.parametrize("text, words", [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_hostile_stack_file_text(text, words, tmp_path, capsys, monkeypatch):
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    path = tmp_path / "Pulumi.hostile.yaml"
    path.write_text(text, encoding="utf-8")
    code = offline.main(["--config", str(path), "--json"])
    errors = [line.removeprefix("error: ") for line in capsys.readouterr().err.splitlines()]
    assert code == 2 and any(words in e for e in errors), errors
