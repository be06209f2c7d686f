"""Typed config: every validation rule names its key; a bad stack registers nothing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from infra import config
from infra.config import ConfigError, parse
from policies.program import run_program

ROOT = Path(__file__).resolve().parent.parent

CI = {"providerUrl": "https://token.actions.githubusercontent.com", "audience": "sts.amazonaws.com",
      "subject": "repo:o/r:ref:refs/heads/main"}

GOOD = {
    "clusterName": "kiln-dev",
    "kubernetesVersion": "1.33",
    "availabilityZones": ["us-east-2a", "us-east-2b"],
    "nodeAmi": "ami-0123456789abcdef0",
    "modelVersion": "v5",
    "nodeGroups": [{"name": "cpu", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 3, "desiredSize": 1}],
}


# A GPU group as every rule accepts it: an NVIDIA type (infra/instance_types.py) with gpu: true.
GPU = {"name": "gpu", "gpu": True, "instanceTypes": ["g5.xlarge"]}
AMIS = {"standard": "ami-0123456789abcdef0", "nvidia": "ami-0fedcba9876543210"}


def group(**changes):
    g = dict(GOOD["nodeGroups"][0])
    for k, v in changes.items():
        if v is None:
            g.pop(k)
        else:
            g[k] = v
    return g


def problems(**changes) -> list[str]:
    raw = copy.deepcopy(GOOD)
    for k, v in changes.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    with pytest.raises(ConfigError) as info:
        parse(raw)
    return info.value.problems


# (id, changes to GOOD, the key the error must name, a word of the rule)
RULES = [
    ("unknown-key", {"clusterNmae": "x"}, "clusterNmae", "not a kiln configuration key"),
    ("clusterName-required", {"clusterName": None}, "clusterName", "is required"),
    ("clusterName-pattern", {"clusterName": "1bad_name"}, "clusterName", "must start with a letter"),
    ("kubernetesVersion-required", {"kubernetesVersion": None}, "kubernetesVersion", "is required"),
    ("kubernetesVersion-pattern", {"kubernetesVersion": "v1.33"}, "kubernetesVersion", "must look like 1.33"),
    ("kubernetesVersion-minimum", {"kubernetesVersion": "1.28"}, "kubernetesVersion", ">= 1.29"),
    ("availabilityZones-required", {"availabilityZones": None}, "availabilityZones", "is required"),
    ("availabilityZones-list", {"availabilityZones": "us-east-2a"}, "availabilityZones", "must be a list"),
    ("availabilityZones-empty", {"availabilityZones": []}, "availabilityZones", "at least two zones"),
    # EKS needs subnets in two zones (issue 12, point 5).
    ("availabilityZones-one", {"availabilityZones": ["us-east-2a"]}, "availabilityZones", "(1 given) must list at least two zones"),
    ("availabilityZones-item", {"availabilityZones": ["us-east-2a", "east"]}, "availabilityZones[1]", "availability zone"),
    ("availabilityZones-repeat", {"availabilityZones": ["us-east-2a", "us-east-2a"]}, "availabilityZones", "must not repeat"),
    ("availabilityZones-region", {"availabilityZones": ["us-east-2a", "us-west-2a"]}, "availabilityZones", "one region"),
    ("vpcCidr-cidr", {"vpcCidr": "10.0.0.300/16"}, "vpcCidr", "must be a CIDR"),
    ("vpcCidr-size", {"vpcCidr": "10.0.0.0/24"}, "vpcCidr", "/20 or larger"),
    ("vpcId-pattern", {"vpcId": "vpc-xyz", "privateSubnetIds": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]},
     "vpcId", "must be a VPC id"),
    ("privateSubnetIds-required", {"vpcId": "vpc-0123456789abcdef0"}, "privateSubnetIds", "required when vpcId"),
    ("privateSubnetIds-item", {"vpcId": "vpc-0123456789abcdef0", "privateSubnetIds": ["subnet-0aaaaaaaaaaaaaaaa", "sn-1"]},
     "privateSubnetIds[1]", "must be a subnet id"),
    ("privateSubnetIds-count", {"vpcId": "vpc-0123456789abcdef0", "privateSubnetIds": ["subnet-0aaaaaaaaaaaaaaaa"]},
     "privateSubnetIds", "one subnet per availability zone"),
    ("privateSubnetIds-without-vpc", {"privateSubnetIds": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]},
     "privateSubnetIds", "only used with vpcId"),
    ("nodeAmi-required", {"nodeAmi": None}, "nodeAmi", "is required"),
    ("nodeAmi-pattern", {"nodeAmi": "ami-123"}, "nodeAmi", "must be an AMI id"),
    ("nodeAmi-type", {"nodeAmi": 7}, "nodeAmi", "map of family"),
    ("nodeAmi-family", {"nodeAmi": {"standard": "ami-0123456789abcdef0", "arm": "ami-0123456789abcdef0"}},
     "nodeAmi.arm", "not an AMI family"),
    ("nodeAmi-map-id", {"nodeAmi": {"standard": "ami-0123456789abcdef0", "nvidia": "ami-x"}}, "nodeAmi.nvidia", "must be an AMI id"),
    ("nodeAmi-map-standard", {"nodeAmi": {"nvidia": "ami-0123456789abcdef0"}}, "nodeAmi.standard", "required when nodeAmi is a map"),
    ("nodeAmi-nvidia-for-gpu", {"nodeAmi": {"standard": "ami-0123456789abcdef0"}, "nodeGroups": [group(), group(**GPU)]},
     "nodeAmi.nvidia", "gpu: true"),
    # A single AMI id is the standard AMI: a GPU group would boot it without a driver (point 6).
    ("nodeAmi-single-for-gpu", {"nodeGroups": [group(), group(**GPU)]},
     "nodeAmi", "must be a map with an nvidia entry (the GPU AMI) because nodeGroups ('gpu') has gpu: true"),
    ("modelVersion-required", {"modelVersion": None}, "modelVersion", "is required"),
    ("modelVersion-pattern", {"modelVersion": "V5_final"}, "modelVersion", "label value"),
    ("modelPath-pattern", {"modelPath": "models"}, "modelPath", "absolute path"),
    ("modelPath-dotdot", {"modelPath": "/opt/../etc"}, "modelPath", "'..'"),
    ("modelVolumeDevice-pattern", {"modelVolumeDevice": "/dev/xvda"}, "modelVolumeDevice", "secondary EBS device"),
    ("modelVolumeSizeGiB-int", {"modelVolumeSizeGiB": "big"}, "modelVolumeSizeGiB", "must be an integer"),
    ("modelVolumeSizeGiB-min", {"modelVolumeSizeGiB": 0}, "modelVolumeSizeGiB", ">= 1"),
    ("modelVolumeInitRateMiBps-min", {"modelVolumeInitRateMiBps": 99}, "modelVolumeInitRateMiBps", ">= 100"),
    ("modelVolumeInitRateMiBps-max", {"modelVolumeInitRateMiBps": 301}, "modelVolumeInitRateMiBps", "<= 300"),
    ("modelVolumeInitRateMiBps-bool", {"modelVolumeInitRateMiBps": True}, "modelVolumeInitRateMiBps", "must be an integer"),
    ("nodeGroups-required", {"nodeGroups": None}, "nodeGroups", "is required"),
    ("nodeGroups-list", {"nodeGroups": {"name": "cpu"}}, "nodeGroups", "must be a list"),
    ("nodeGroups-empty", {"nodeGroups": []}, "nodeGroups", "at least one node group"),
    ("nodeGroups-mapping", {"nodeGroups": ["cpu"]}, "nodeGroups[0]", "must be a mapping"),
    ("nodeGroups-field", {"nodeGroups": [group(minsize=1)]}, "nodeGroups[0].minsize", "not a node group field"),
    ("nodeGroups-field-required", {"nodeGroups": [group(instanceTypes=None)]}, "nodeGroups[0].instanceTypes", "is required"),
    ("nodeGroups-name", {"nodeGroups": [group(name="CPU_1")]}, "nodeGroups[0].name", "lower-case"),
    ("nodeGroups-name-unique", {"nodeGroups": [group(), group()]}, "nodeGroups[1].name", "used by another"),
    ("nodeGroups-types-empty", {"nodeGroups": [group(instanceTypes=[])]}, "nodeGroups[0].instanceTypes", "at least one"),
    ("nodeGroups-type", {"nodeGroups": [group(instanceTypes=["huge"])]}, "nodeGroups[0].instanceTypes[0]", "instance type"),
    # cluster-autoscaler sizes a group from its first instance type (point 12).
    ("nodeGroups-types-one-size", {"nodeAmi": AMIS, "nodeGroups": [
        group(), group(**{**GPU, "spot": True, "instanceTypes": ["g5.2xlarge", "g6.2xlarge", "g5.4xlarge"]})]},
     "nodeGroups[1].instanceTypes", "must all be one size, not 2xlarge, 4xlarge"),
    ("nodeGroups-types-repeat", {"nodeGroups": [group(instanceTypes=["m7i.large", "m7i.large"])]},
     "nodeGroups[0].instanceTypes", "must not repeat an instance type (m7i.large)"),
    ("nodeGroups-minSize-negative", {"nodeGroups": [group(minSize=-1)]}, "nodeGroups[0].minSize", ">= 0"),
    ("nodeGroups-max-lt-min", {"nodeGroups": [group(minSize=5, maxSize=2, desiredSize=5)]},
     "nodeGroups[0].maxSize", "(2) must be >= minSize (5)"),
    ("nodeGroups-desired-lt-min", {"nodeGroups": [group(minSize=2, desiredSize=1)]}, "nodeGroups[0].desiredSize", ">= minSize"),
    ("nodeGroups-desired-gt-max", {"nodeGroups": [group(desiredSize=4)]}, "nodeGroups[0].desiredSize", "<= maxSize"),
    ("nodeGroups-max-zero", {"nodeGroups": [group(minSize=0, maxSize=0, desiredSize=0)]}, "nodeGroups[0].maxSize", ">= 1"),
    ("nodeGroups-spot", {"nodeGroups": [group(spot="yes")]}, "nodeGroups[0].spot", "true or false"),
    ("nodeGroups-gpu", {"nodeGroups": [group(gpu=1)]}, "nodeGroups[0].gpu", "true or false"),
    ("nodeGroups-volume", {"nodeGroups": [group(volumeSizeGiB=10)]}, "nodeGroups[0].volumeSizeGiB", ">= 20"),
    ("nodeGroups-labels-map", {"nodeGroups": [group(labels=["a=b"])]}, "nodeGroups[0].labels", "map of label"),
    ("nodeGroups-label-key", {"nodeGroups": [group(labels={"bad key": "x"})]}, "nodeGroups[0].labels.bad key", "label key"),
    ("nodeGroups-label-reserved", {"nodeGroups": [group(labels={"kiln.dev/model-version": "v9"})]},
     "nodeGroups[0].labels.kiln.dev/model-version", "reserves"),
    ("nodeGroups-label-value", {"nodeGroups": [group(labels={"team": "ml team"})]}, "nodeGroups[0].labels.team", "label value"),
    ("nodeGroups-taints-list", {"nodeGroups": [group(taints="a=b:NoSchedule")]}, "nodeGroups[0].taints", "must be a list"),
    ("nodeGroups-taint-format", {"nodeGroups": [group(taints=["a=b"])]}, "nodeGroups[0].taints[0]", "key=value:Effect"),
    ("nodeGroups-taint-effect", {"nodeGroups": [group(taints=["a=b:Never"])]}, "nodeGroups[0].taints[0]", "effect must be"),
    ("nodeGroups-taint-key", {"nodeGroups": [group(taints=["-bad=b:NoSchedule"])]}, "nodeGroups[0].taints[0]", "valid Kubernetes key"),
    ("endpointPublicAccessCidrs-cidr", {"endpointPublicAccessCidrs": ["office"]}, "endpointPublicAccessCidrs[0]", "CIDR"),
    ("endpointPublicAccessCidrs-open", {"endpointPublicAccessCidrs": ["0.0.0.0/0"]}, "endpointPublicAccessCidrs[0]",
     "whole internet"),
    ("jobsNamespace-pattern", {"jobsNamespace": "ML_Jobs"}, "jobsNamespace", "DNS-1123"),
    ("ecrRepositories-name", {"ecrRepositories": ["Trainer"]}, "ecrRepositories[0]", "ECR repository name"),
    ("ecrRepositories-repeat", {"ecrRepositories": ["trainer", "trainer"]}, "ecrRepositories", "must not repeat"),
    ("ecrKeepImages-range", {"ecrKeepImages": 0}, "ecrKeepImages", ">= 1"),
    ("prefetchImages-reference", {"prefetchImages": ["trainer:latest"]}, "prefetchImages[0]", "full image reference"),
    ("autoscalerChartVersion-pattern", {"autoscalerChartVersion": "latest"}, "autoscalerChartVersion", "chart version"),
    ("ciOidc-mapping", {"ciOidc": ["x"]}, "ciOidc", "must be a map"),
    ("ciOidc-url", {"ciOidc": {"providerUrl": "http://x", "audience": "sts.amazonaws.com", "subject": "repo:o/r:ref:refs/heads/main"}},
     "ciOidc.providerUrl", "https://"),
    ("ciOidc-audience", {"ciOidc": {"providerUrl": "https://x", "subject": "repo:o/r:ref:refs/heads/main"}},
     "ciOidc.audience", "non-empty"),
    ("ciOidc-subject-wildcard", {"ciOidc": {"providerUrl": "https://x", "audience": "a", "subject": "*"}},
     "ciOidc.subject", "must name one repository"),
    ("ciOidc-field", {"ciOidc": {**CI, "providerARN": "arn"}}, "ciOidc.providerARN", "not a ciOidc field"),
    ("ciOidc-providerArn-pattern", {"ciOidc": {**CI, "providerArn": "token.actions.githubusercontent.com"}},
     "ciOidc.providerArn", "must be an IAM OIDC provider ARN"),
    ("ciOidc-providerArn-other-url", {"ciOidc": {**CI, "providerArn": "arn:aws:iam::123456789012:oidc-provider/gitlab.com"}},
     "ciOidc.providerArn", "is the provider for gitlab.com, not for ciOidc.providerUrl"),
    ("modelBucket-uri", {"modelBucket": "s3://models/v5/"}, "modelBucket", "without s3://"),
    ("modelBucket-name", {"modelBucket": "Models_Bucket"}, "modelBucket", "must be an S3 bucket name"),
    ("modelBucket-ip", {"modelBucket": "192.168.5.4"}, "modelBucket", "IP address"),
    ("modelBucket-dots", {"modelBucket": "my..models"}, "modelBucket", "not a valid S3 bucket name"),
    # CoreDNS and cluster-autoscaler tolerate no group taint: some untainted group must have a node.
    ("nodeGroups-gpu-only", {"nodeAmi": AMIS, "nodeGroups": [group(**GPU)]},
     "nodeGroups", "must include a group without NoSchedule/NoExecute taints and with desiredSize >= 1: gpu carries "
                   "NoSchedule/NoExecute taints (gpu: true adds nvidia.com/gpu)"),
    ("nodeGroups-all-tainted", {"nodeGroups": [group(taints=["dedicated=batch:NoSchedule"]),
                                               group(name="b", taints=["dedicated=infer:NoExecute"])]},
     "nodeGroups", "cpu, b carry NoSchedule/NoExecute taints, so CoreDNS and cluster-autoscaler"),
    ("nodeGroups-untainted-starts-empty", {"nodeGroups": [group(minSize=0, desiredSize=0),
                                                          group(name="b", taints=["dedicated=batch:NoSchedule"])]},
     "nodeGroups", "b carries NoSchedule/NoExecute taints; cpu starts with no node (desiredSize 0)"),
    ("serviceCidr-cidr", {"serviceCidr": "172.20.0.0/33"}, "serviceCidr", "must be a CIDR"),
    ("serviceCidr-private", {"serviceCidr": "100.64.0.0/16"}, "serviceCidr", "must lie in 10.0.0.0/8"),
    ("serviceCidr-size", {"serviceCidr": "10.100.0.0/25"}, "serviceCidr", "between /12 and /24"),
    ("serviceCidr-vpc", {"serviceCidr": "10.0.128.0/20"}, "serviceCidr", "must not overlap vpcCidr (10.0.0.0/16)"),
]


@pytest.mark.parametrize("changes,key,rule", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule_names_its_key(changes, key, rule):
    found = problems(**changes)
    assert any(p.startswith(f"kiln:{key} ") and rule in p for p in found), found
    # Every other part of the case is valid under every rule (config.py's and validation.py's alike).
    top = key.split(".")[0].split("[")[0]
    assert all(p.startswith((f"kiln:{top} ", f"kiln:{top}[", f"kiln:{top}.")) for p in found), found


def test_the_documented_example_message():
    found = problems(nodeGroups=[group(), group(name="gpu", minSize=5, maxSize=2, desiredSize=5)])
    assert "kiln:nodeGroups[1].maxSize (2) must be >= minSize (5)" in found


def test_every_problem_is_reported_at_once():
    found = problems(clusterName=None, modelVersion="V!", vpcCidr="nope")
    assert {p.split()[0] for p in found} >= {"kiln:clusterName", "kiln:modelVersion", "kiln:vpcCidr"}


def test_values_arrive_as_pulumi_passes_them():
    """Pulumi hands programs strings: JSON for lists and maps, digits for numbers."""
    cfg = parse({**{k: json.dumps(v) if not isinstance(v, str) else v for k, v in GOOD.items()},
                 "modelVolumeSizeGiB": "120", "kiln:jobsNamespace": "jobs"})
    assert cfg.node_groups[0].max_size == 3 and cfg.model_volume_size_gib == 120 and cfg.jobs_namespace == "jobs"


def test_gpu_groups_get_the_gpu_taint_and_the_accelerated_ami():
    cfg = parse({**GOOD, "nodeAmi": {"standard": "ami-0123456789abcdef0", "nvidia": "ami-0fedcba9876543210"},
                 "nodeGroups": [group(), group(name="gpu", gpu=True, instanceTypes=["g5.xlarge"])]})
    cpu, gpu = cfg.node_groups
    assert [str(t) for t in gpu.taints] == ["nvidia.com/gpu=true:NoSchedule"] and not cpu.taints
    assert cfg.ami_for(gpu) == "ami-0fedcba9876543210" and cfg.ami_for(cpu) == "ami-0123456789abcdef0"


def test_new_keys_parse_into_the_typed_config():
    cfg = parse({**GOOD, "modelBucket": "ml-models.example", "serviceCidr": "192.168.0.0/16",
                 "ciOidc": {**CI, "providerArn": "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com/"}})
    assert cfg.model_bucket == "ml-models.example" and cfg.service_cidr == "192.168.0.0/16"
    assert cfg.ci_oidc.provider_arn.endswith("oidc-provider/token.actions.githubusercontent.com/")
    plain = parse({**GOOD, "ciOidc": CI})
    assert plain.ci_oidc.provider_arn is None and plain.model_bucket is None and plain.service_cidr is None


def test_an_existing_vpc_is_not_checked_against_vpc_cidr():
    """vpcCidr only describes a VPC kiln creates; an existing VPC's CIDRs are looked up (infra/awsfacts.py)."""
    cfg = parse({**GOOD, "vpcId": "vpc-0123456789abcdef0", "serviceCidr": "10.0.128.0/20",
                 "privateSubnetIds": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]})
    assert cfg.service_cidr == "10.0.128.0/20"


def test_one_instance_size_across_families_is_accepted():
    cfg = parse({**GOOD, "nodeAmi": AMIS,
                 "nodeGroups": [group(), group(**{**GPU, "instanceTypes": ["g5.2xlarge", "g6.2xlarge"], "spot": True})]})
    assert cfg.node_groups[1].instance_types == ("g5.2xlarge", "g6.2xlarge")


def test_ami_for_never_falls_back_to_the_standard_ami_for_a_gpu_group():
    """parse() refuses such a config; ami_for() itself refuses too, rather than booting GPUs without a driver."""
    import dataclasses

    cfg = parse({**GOOD, "nodeAmi": AMIS, "nodeGroups": [group(), group(**GPU)]})
    standard_only = dataclasses.replace(cfg, node_amis=(("standard", "ami-0123456789abcdef0"),))
    with pytest.raises(KeyError):
        standard_only.ami_for(cfg.node_groups[1])


def test_a_config_error_stops_the_program_before_any_resource():
    raw = {f"kiln:{k}": v for k, v in GOOD.items()}
    raw["kiln:nodeGroups"] = [group(minSize=5, maxSize=2, desiredSize=5)]
    with pytest.raises(ConfigError) as info:
        run_program(raw)
    assert "kiln:nodeGroups[0].maxSize (2) must be >= minSize (5)" in str(info.value)
    assert info.value.program_run.resources == []


def test_a_gpu_only_stack_stops_the_program_before_any_resource():
    """The example stack without its CPU group: every node carries nvidia.com/gpu, so cluster-autoscaler's
    release would wait 900 s for a pod that can never schedule, and CoreDNS would never run."""
    raw = yaml.safe_load((ROOT / "Pulumi.example.yaml").read_text())["config"]
    raw["kiln:nodeGroups"] = [g for g in raw["kiln:nodeGroups"] if g.get("gpu")]
    with pytest.raises(ConfigError) as info:
        run_program(raw)
    assert [p for p in info.value.problems if p.startswith("kiln:nodeGroups ")] == [
        "kiln:nodeGroups must include a group without NoSchedule/NoExecute taints and with desiredSize >= 1: "
        "gpu-train carries NoSchedule/NoExecute taints (gpu: true adds nvidia.com/gpu), so CoreDNS and "
        "cluster-autoscaler, which tolerate no group taint, would have no node to run on; add a small CPU group, "
        "e.g. {name: system, instanceTypes: [m7i.large], minSize: 1, maxSize: 2, desiredSize: 1}"]
    assert info.value.program_run.resources == []


@pytest.mark.parametrize("groups", [
    [group(taints=["dedicated=batch:PreferNoSchedule"])],                 # a soft taint repels nothing
    [group(**GPU), group(minSize=0, desiredSize=1)],                      # the autoscaler keeps its own node
    [group(**{**GPU, "minSize": 0, "desiredSize": 0}), group(name="system", minSize=1, desiredSize=1)],
], ids=["prefer-no-schedule", "untainted-min-0", "gpu-and-system"])
def test_a_stack_with_room_for_cluster_services_is_accepted(groups):
    raw = {**GOOD, "nodeAmi": {"standard": "ami-0123456789abcdef0", "nvidia": "ami-0fedcba9876543210"},
           "nodeGroups": groups}
    assert parse(raw).node_groups


def test_the_cluster_services_rule_waits_for_valid_groups():
    """A group with its own error is not judged twice: only its error is reported."""
    found = problems(nodeGroups=[group(minSize=5, maxSize=2, desiredSize=5), group(name="b", taints=["a=b:NoSchedule"])])
    assert not [p for p in found if p.startswith("kiln:nodeGroups ")], found


# ---- Pulumi.yaml declares exactly the keys config.py reads -----------------------------------------


def project_config() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]


def test_pulumi_yaml_declares_every_key_with_its_description():
    declared = project_config()
    assert set(declared) == set(config.KEYS)
    for key, description in config.KEYS.items():
        assert declared[key]["description"] == description, key


def test_pulumi_yaml_config_is_the_key_table_type_default_and_description():
    """Each default and description is written once, in infra/config.py's CONFIG_KEYS; Pulumi.yaml declares the same."""
    declared = project_config()
    expected = config.pulumi_yaml_config()
    for key in declared:
        assert declared[key] == expected[key], key
    assert list(declared) == list(expected)          # and in the table's order
    assert declared["vpcCidr"]["default"] == "10.0.0.0/16" and "(default 10.0.0.0/16)" in declared["vpcCidr"]["description"]


def test_the_dataclass_defaults_and_an_absent_key_are_the_tables_defaults():
    import dataclasses

    fields = {f.name: f.default for f in dataclasses.fields(config.KilnConfig)}
    by_key = {"vpcCidr": "vpc_cidr", "modelPath": "model_path", "modelVolumeDevice": "model_volume_device",
              "modelVolumeSizeGiB": "model_volume_size_gib", "modelVolumeInitRateMiBps": "model_volume_init_rate_mibps",
              "jobsNamespace": "jobs_namespace", "ecrKeepImages": "ecr_keep_images"}
    parsed = parse(GOOD)
    for key, name in by_key.items():
        assert fields[name] == config.default(key) == getattr(parsed, name), key
    assert parsed.termination.job_grace_seconds == config.default("terminationJobGraceSeconds") == 7200
    assert parsed.termination.heartbeat_seconds == config.default("terminationHeartbeatSeconds") == 300
    assert config.REQUIRED_KEYS == ("clusterName", "kubernetesVersion", "availabilityZones", "nodeAmi", "modelVersion",
                                    "nodeGroups")


def test_pulumi_yaml_runtime_uses_the_project_virtualenv():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "kiln"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}


def test_pulumi_yaml_requires_exactly_the_required_keys():
    """Pulumi refuses a stack that omits a declared key without a default."""
    declared = project_config()
    without_default = {k for k, d in declared.items() if "default" not in d}
    assert without_default == set(config.REQUIRED_KEYS)


def test_pulumi_yaml_defaults_mean_the_same_as_leaving_keys_out():
    """Pulumi merges Pulumi.yaml defaults into the stack: they must change nothing."""
    defaults = {k: d["default"] for k, d in project_config().items() if "default" in d}
    assert parse({**defaults, **GOOD}) == parse(GOOD)


def test_pulumi_yaml_types_match_the_values_config_accepts():
    declared = project_config()
    ints = {k for k, d in declared.items() if d.get("type") == "integer"}
    assert ints == {"modelVolumeSizeGiB", "modelVolumeInitRateMiBps", "ecrKeepImages",
                    "terminationJobGraceSeconds", "terminationHeartbeatSeconds"}
    for key, d in declared.items():
        if d.get("type") == "array":
            assert d["items"] == {"type": "string"}, key   # Pulumi requires items for arrays


def test_the_example_stack_is_complete_and_valid():
    cfg = config.load_stack_file(str(ROOT / "Pulumi.example.yaml"))
    doc = yaml.safe_load((ROOT / "Pulumi.example.yaml").read_text())["config"]
    assert {k.split(":", 1)[1] for k in doc if k.startswith("kiln:")} >= set(config.REQUIRED_KEYS)
    assert cfg.endpoint_public_access_cidrs and all(not c.endswith("/0") for c in cfg.endpoint_public_access_cidrs)
    assert any(g.gpu and g.spot for g in cfg.node_groups) and any(not g.spot for g in cfg.node_groups)
