"""Node groups: one launch template per group, one ASG per zone, spot/GPU handling, the model volume."""

from __future__ import annotations

import pytest

from _program_helpers import (AMI, BASE, EXISTING_GPU_SPOT, GPU_AMI, INSTANCE_TYPES, asg_tags, example_config,
                              of_component, run, user_data, with_changes)
from infra.config import ConfigError
from policies.program import KilnMocks, run_program

LT = "aws:ec2/launchTemplate:LaunchTemplate"
ASG = "aws:autoscaling/group:Group"
CONFIGS = {"new-vpc-cpu-on-demand": BASE, "existing-vpc-gpu-spot": EXISTING_GPU_SPOT, "example": None}


def config_of(name):
    return CONFIGS[name] or example_config()


def groups(run_):
    """{group name: (launch template, {zone: asg})} read from the NodeGroup components."""
    out = {}
    for component in run_.of_type("kiln:infra:NodeGroup"):
        [lt] = of_component(run_, LT, component)
        asgs = of_component(run_, ASG, component)
        zone_of = {a.name: a.name.removeprefix(component.name + "-") for a in asgs}   # "<group>-<zone>"
        out[component.name.removeprefix("nodes-")] = (lt, {zone_of[a.name]: a for a in asgs})
    return out


def zone_subnets(cfg, run_):
    """The private subnet id of each zone, as the program should use them."""
    if "kiln:vpcId" in cfg:
        return dict(zip(cfg["kiln:availabilityZones"], cfg["kiln:privateSubnetIds"]))
    return {s.inputs["availabilityZone"]: s.id for s in run_.of_type("aws:ec2/subnet:Subnet") if "-private-" in s.name}


@pytest.mark.parametrize("name", CONFIGS)
def test_one_asg_per_zone_in_that_zones_private_subnet(name):
    cfg = config_of(name)
    r = run(cfg)
    found = groups(r)
    assert set(found) == {g["name"] for g in cfg["kiln:nodeGroups"]}
    subnets = zone_subnets(cfg, r)
    for group, (lt, asgs) in found.items():
        assert sorted(asgs) == sorted(cfg["kiln:availabilityZones"]), group
        for zone, asg in asgs.items():
            assert asg.inputs["vpcZoneIdentifiers"] == [subnets[zone]], (group, zone)


@pytest.mark.parametrize("name", CONFIGS)
def test_launch_template_is_locked_down(name):
    r = run(config_of(name))
    profile = r.one("aws:iam/instanceProfile:InstanceProfile", "cluster-node")
    for group, (lt, _) in groups(r).items():
        i = lt.inputs
        assert i["metadataOptions"]["httpTokens"] == "required", group
        assert i["metadataOptions"]["httpPutResponseHopLimit"] == 1, group   # <= 2 required; 1 as documented
        assert "keyName" not in i, group
        [nic] = i["networkInterfaces"]
        assert nic["associatePublicIpAddress"] == "false", group
        assert nic["securityGroups"] == [r.one("eks:index:Cluster", "cluster-eks").outputs["nodeSecurityGroupId"]]
        volumes = [m["ebs"] for m in i["blockDeviceMappings"]]
        assert volumes and all(v["volumeType"] == "gp3" and v["encrypted"] == "true" for v in volumes), group
        assert i["iamInstanceProfile"] == {"arn": profile.outputs["arn"]}
        kinds = {t["resourceType"] for t in i["tagSpecifications"]}
        assert {"instance", "volume"} <= kinds
        for spec in i["tagSpecifications"]:
            assert spec["tags"]["kiln.dev/node-group"] == group and "kiln.dev/cluster" in spec["tags"]


@pytest.mark.parametrize("name", CONFIGS)
def test_model_volume_is_initialized_at_the_configured_rate(name):
    cfg = config_of(name)
    rate = cfg.get("kiln:modelVolumeInitRateMiBps", 300)
    device = cfg.get("kiln:modelVolumeDevice", "/dev/xvdb")
    for group, (lt, _) in groups(run(cfg)).items():
        by_device = {m["deviceName"]: m["ebs"] for m in lt.inputs["blockDeviceMappings"]}
        model = by_device[device]
        assert model["volumeInitializationRate"] == rate and 100 <= rate <= 300, group
        assert model["throughput"] >= rate                       # the read is not capped below the fetch
        assert model["volumeSize"] == cfg.get("kiln:modelVolumeSizeGiB", 100)
        root = by_device["/dev/xvda"]
        assert "volumeInitializationRate" not in root
        wanted = next(g for g in cfg["kiln:nodeGroups"] if g["name"] == group).get("volumeSizeGiB", 100)
        assert root["volumeSize"] == wanted


@pytest.mark.parametrize("name", CONFIGS)
def test_user_data_labels_and_taints_every_node(name):
    cfg = config_of(name)
    r = run(cfg)
    for group, (lt, _) in groups(r).items():
        spec = next(g for g in cfg["kiln:nodeGroups"] if g["name"] == group)
        node_config, script, types = user_data(lt)
        assert types == ["application/node.eks.aws", "text/x-shellscript"]
        assert node_config["kind"] == "NodeConfig"
        cluster = node_config["spec"]["cluster"]
        assert cluster["name"] == cfg["kiln:clusterName"]
        assert cluster["apiServerEndpoint"].startswith("https://") and cluster["certificateAuthority"]
        [flag] = node_config["spec"]["kubelet"]["flags"]
        labels = dict(kv.split("=", 1) for kv in flag.removeprefix("--node-labels=").split(","))
        assert labels == {"kiln.dev/model-version": cfg["kiln:modelVersion"], "kiln.dev/node-group": group,
                          **spec.get("labels", {}), **accelerator_label(spec)}
        taints = {(t["key"], t["value"], t["effect"]) for t in node_config["spec"]["kubelet"]["config"]["registerWithTaints"]}
        assert ("kiln.dev/model-warming", "true", "NoSchedule") in taints
        assert (("nvidia.com/gpu", "true", "NoSchedule") in taints) == bool(spec.get("gpu"))
        for taint in spec.get("taints", []):
            key, rest = taint.split("=", 1)
            value, effect = rest.split(":")
            assert (key, value, effect) in taints
        assert f"{cfg.get('kiln:modelPath', '/opt/models')}" in script


def accelerator_label(spec) -> dict[str, str]:
    """GPU groups: cluster-autoscaler's name for the group's one GPU model, ``nvidia`` when they differ."""
    if not spec.get("gpu"):
        return {}
    models = {INSTANCE_TYPES[t][3] for t in spec["instanceTypes"]}
    names = {"A10G": "nvidia-a10g", "L4": "nvidia-l4", "L40S": "nvidia-l40s", "H100": "nvidia-h100"}
    return {"k8s.amazonaws.com/accelerator": names[models.pop()] if len(models) == 1 else "nvidia"}


def test_gpu_groups_boot_the_accelerated_ami():
    found = groups(run(EXISTING_GPU_SPOT))
    assert found["gpu"][0].inputs["imageId"] == GPU_AMI
    assert found["system"][0].inputs["imageId"] == AMI
    assert groups(run(BASE))["cpu"][0].inputs["imageId"] == AMI


@pytest.mark.parametrize("name", CONFIGS)
def test_asg_pins_the_templates_latest_version_and_leaves_desired_capacity_alone(name):
    for group, (lt, asgs) in groups(run(config_of(name))).items():
        latest = str(lt.outputs["latestVersion"])
        for zone, asg in asgs.items():
            spec = asg.inputs.get("launchTemplate") or \
                asg.inputs["mixedInstancesPolicy"]["launchTemplate"]["launchTemplateSpecification"]
            version = spec["version"]
            assert version == latest and version not in ("$Latest", "$Default"), (group, zone)
            assert spec.get("id", spec.get("launchTemplateId")) == lt.id
            assert "desiredCapacity" in asg.ignore_changes


class _TemplateAtVersion7(KilnMocks):
    """A launch template that has been edited a few times: its latest version is 7, its default 1."""

    def new_resource(self, args):
        rid, state = super().new_resource(args)
        if args.typ == LT:
            state.update(latestVersion=7, defaultVersion=1)
        return rid, state


def test_asg_version_follows_the_templates_latest_version_not_a_constant():
    r = run_program(EXISTING_GPU_SPOT, mocks=_TemplateAtVersion7())
    for group, (_, asgs) in groups(r).items():
        for zone, asg in asgs.items():
            spec = asg.inputs.get("launchTemplate") or \
                asg.inputs["mixedInstancesPolicy"]["launchTemplate"]["launchTemplateSpecification"]
            assert spec["version"] == "7", (group, zone)


@pytest.mark.parametrize("name", CONFIGS)
def test_asg_sizes_are_per_zone_and_as_configured(name):
    cfg = config_of(name)
    for group, (_, asgs) in groups(run(cfg)).items():
        spec = next(g for g in cfg["kiln:nodeGroups"] if g["name"] == group)
        for asg in asgs.values():
            i = asg.inputs
            assert (i["minSize"], i["maxSize"], i["desiredCapacity"]) == (spec["minSize"], spec["maxSize"], spec["desiredSize"])


@pytest.mark.parametrize("name", CONFIGS)
def test_asg_tags_for_the_rollout_and_the_cluster_autoscaler(name):
    cfg = config_of(name)
    cluster = cfg["kiln:clusterName"]
    for group, (_, asgs) in groups(run(cfg)).items():
        spec = next(g for g in cfg["kiln:nodeGroups"] if g["name"] == group)
        for zone, asg in asgs.items():
            tags = asg_tags(asg)
            assert tags["kiln.dev/cluster"] == (cluster, True)
            assert tags["kiln.dev/node-group"] == (group, True)
            assert tags["k8s.io/cluster-autoscaler/enabled"] == ("true", False)
            assert tags[f"k8s.io/cluster-autoscaler/{cluster}"] == ("owned", False)
            template = "k8s.io/cluster-autoscaler/node-template/"
            assert tags[template + "label/kiln.dev/model-version"][0] == cfg["kiln:modelVersion"]
            assert tags[template + "label/kiln.dev/node-group"][0] == group
            for key, value in spec.get("labels", {}).items():
                assert tags[template + f"label/{key}"][0] == value
            if spec.get("gpu"):
                assert tags[template + "taint/nvidia.com/gpu"][0] == "true:NoSchedule"
            for taint in spec.get("taints", []):
                key, rest = taint.split("=", 1)
                assert tags[template + f"taint/{key}"][0] == rest
            # A startup taint: advertising it would stop scale-up for model Jobs.
            assert template + "taint/kiln.dev/model-warming" not in tags


def test_spot_groups_use_a_price_capacity_optimized_mixed_instances_policy():
    cfg = EXISTING_GPU_SPOT
    gpu_spec = next(g for g in cfg["kiln:nodeGroups"] if g["name"] == "gpu")
    lt, asgs = groups(run(cfg))["gpu"]
    assert "instanceType" not in lt.inputs
    for asg in asgs.values():
        policy = asg.inputs["mixedInstancesPolicy"]
        dist = policy["instancesDistribution"]
        assert dist["spotAllocationStrategy"] == "price-capacity-optimized"
        assert dist["onDemandPercentageAboveBaseCapacity"] == 0 and dist["onDemandBaseCapacity"] == 0
        assert [o["instanceType"] for o in policy["launchTemplate"]["overrides"]] == gpu_spec["instanceTypes"]
        assert asg.inputs["capacityRebalance"] is True
        assert "launchTemplate" not in asg.inputs


def test_on_demand_single_type_groups_launch_the_template_directly():
    lt, asgs = groups(run(BASE))["cpu"]
    assert lt.inputs["instanceType"] == "m7i.2xlarge"
    for asg in asgs.values():
        assert "mixedInstancesPolicy" not in asg.inputs
        assert asg.inputs["capacityRebalance"] is False


def test_nodes_wait_for_the_vpc_cni_and_the_warmup_daemonset():
    r = run(BASE)
    addon = r.one("aws:eks/addon:Addon", "cluster-vpc-cni")
    daemon_set = r.one("kubernetes:apps/v1:DaemonSet", "model-warmup-ds")   # depending on a component means on its children
    for asg in r.of_type(ASG):
        assert addon.urn in asg.dependencies and daemon_set.urn in asg.dependencies, asg.name


# ---- issue 12: what cluster-autoscaler and EC2 need from a group ------------------------------------------

GPU_ONLY = with_changes(BASE, nodeAmi={"standard": AMI, "nvidia": GPU_AMI}, nodeGroups=[
    {"name": "cpu", "instanceTypes": ["m7i.2xlarge"], "minSize": 1, "maxSize": 3, "desiredSize": 1},
    {"name": "a10g", "instanceTypes": ["g5.2xlarge"], "minSize": 0, "maxSize": 2, "desiredSize": 0, "gpu": True},
    {"name": "h100", "instanceTypes": ["p5.48xlarge"], "minSize": 0, "maxSize": 1, "desiredSize": 0, "gpu": True},
])


def node_labels_of(lt) -> dict[str, str]:
    node_config, _, _ = user_data(lt)
    [flag] = node_config["spec"]["kubelet"]["flags"]
    return dict(kv.split("=", 1) for kv in flag.removeprefix("--node-labels=").split(","))


@pytest.mark.parametrize("cfg,expected", [
    (GPU_ONLY, {"cpu": None, "a10g": "nvidia-a10g", "h100": "nvidia-h100"}),
    (EXISTING_GPU_SPOT, {"system": None, "gpu": "nvidia"}),     # A10G and L4 in one group: the generic value
], ids=["one-model-per-group", "mixed-models"])
def test_gpu_nodes_and_their_autoscaler_templates_carry_the_accelerator_label(cfg, expected):
    """cluster-autoscaler's AWS provider knows GPU nodes by k8s.amazonaws.com/accelerator: without it a GPU node
    whose device plugin has not registered yet looks like a node without GPUs, and the group scales up again."""
    for group, (lt, asgs) in groups(run(cfg)).items():
        assert node_labels_of(lt).get("k8s.amazonaws.com/accelerator") == expected[group], group
        for asg in asgs.values():
            tag = asg_tags(asg).get("k8s.io/cluster-autoscaler/node-template/label/k8s.amazonaws.com/accelerator")
            assert (tag and tag[0]) == expected[group] or (tag is None and expected[group] is None), group


def program_error(cfg, account=None, mocks=None) -> list[str]:
    """Run the program expecting a config error; it must have registered nothing."""
    from _program_helpers import AccountMocks

    with pytest.raises(ConfigError) as info:
        run_program(cfg, mocks=mocks or AccountMocks(account or {}))
    assert info.value.program_run.resources == []
    return info.value.problems


def test_a_group_whose_types_differ_in_memory_is_refused_before_any_resource():
    """Same size name, different size: m7i.2xlarge has 32 GiB, r7i.2xlarge 64 GiB."""
    cfg = with_changes(BASE, nodeGroups=[{"name": "cpu", "instanceTypes": ["m7i.2xlarge", "r7i.2xlarge"],
                                          "minSize": 1, "maxSize": 3, "desiredSize": 1}])
    [problem] = program_error(cfg)
    assert problem.startswith("kiln:nodeGroups[0].instanceTypes must all be one size (m7i.2xlarge: 8 vCPU, 32 GiB; "
                              "r7i.2xlarge: 8 vCPU, 64 GiB)")
    assert "first type (m7i.2xlarge)" in problem


def test_gpu_count_is_part_of_the_size():
    from infra import awsfacts
    from infra.config import parse

    cfg = parse({"clusterName": "c", "kubernetesVersion": "1.33", "availabilityZones": ["us-east-2a", "us-east-2b"],
                 "nodeAmi": {"standard": AMI, "nvidia": GPU_AMI}, "modelVersion": "v1",
                 "nodeGroups": [{"name": "cpu", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 1,
                                 "desiredSize": 1},
                                {"name": "g", "instanceTypes": ["g5.2xlarge", "g6.2xlarge"], "gpu": True, "spot": True,
                                 "minSize": 0, "maxSize": 1, "desiredSize": 0}]})
    # Same vCPUs and memory, another GPU count (hypothetical facts: only the count differs).
    facts = awsfacts.AwsFacts(instance_types={"g5.2xlarge": awsfacts.InstanceSpec(8, 32768, 1, ("A10G",)),
                                              "g6.2xlarge": awsfacts.InstanceSpec(8, 32768, 2, ("A10G",))})
    with pytest.raises(ConfigError) as info:
        awsfacts.plan(cfg, facts)
    assert "kiln:nodeGroups[1].instanceTypes must all be one size" in info.value.problems[0]
    assert "2 GPU (A10G)" in info.value.problems[0]


def test_an_instance_type_aws_does_not_know_names_its_key():
    cfg = with_changes(BASE, nodeGroups=[{"name": "cpu", "instanceTypes": ["m7i.2xlarge"], "minSize": 1,
                                          "maxSize": 3, "desiredSize": 1},
                                         {"name": "typo", "instanceTypes": ["m7i.2xlarge", "m9z.2xlarge"],
                                          "minSize": 1, "maxSize": 3, "desiredSize": 1}])
    [problem] = program_error(cfg)
    assert problem.startswith("kiln:nodeGroups[1].instanceTypes[1] (m9z.2xlarge) could not be read from AWS:")


def model_volume_size(run_, group):
    lt, _ = groups(run_)[group]
    return {m["deviceName"]: m["ebs"] for m in lt.inputs["blockDeviceMappings"]}["/dev/xvdb"]["volumeSize"]


def test_the_model_volume_is_never_smaller_than_the_amis_snapshot():
    """EC2 refuses a launch whose volume is smaller than its snapshot: the ASG would never get a node."""
    bigger_model = {"amis": {GPU_AMI: {"/dev/xvdb": 150}}}
    r = run(EXISTING_GPU_SPOT, bigger_model)
    assert model_volume_size(r, "gpu") == 150          # the nvidia AMI's snapshot wins over modelVolumeSizeGiB 100
    assert model_volume_size(r, "system") == 100       # the standard AMI's snapshot is 100 GiB
    larger_config = with_changes(EXISTING_GPU_SPOT, modelVolumeSizeGiB=200)
    assert model_volume_size(run(larger_config, bigger_model), "gpu") == 200


@pytest.mark.parametrize("cfg,key", [(EXISTING_GPU_SPOT, "nodeAmi.nvidia"), (BASE, "nodeAmi")])
def test_an_ami_without_a_model_snapshot_is_refused(cfg, key):
    """Not a kiln bake (or baked with another device): its nodes would find no model and never warm."""
    ami = GPU_AMI if key.endswith("nvidia") else AMI
    [problem] = program_error(cfg, {"amis": {ami: {"/dev/sdb": 100}}})
    assert problem.startswith(f"kiln:{key} ({ami}) has no EBS snapshot on kiln:modelVolumeDevice (/dev/xvdb)")


def test_a_gpu_group_never_boots_the_standard_ami():
    cfg = with_changes(EXISTING_GPU_SPOT, nodeAmi=AMI)
    [problem] = program_error(cfg)
    assert problem.startswith("kiln:nodeAmi ") and "must be a map with an nvidia entry" in problem


def test_one_availability_zone_is_refused_before_any_resource():
    cfg = with_changes(BASE, availabilityZones=["us-east-2a"])
    assert program_error(cfg) == ["kiln:availabilityZones (1 given) must list at least two zones: EKS requires "
                                  "subnets in two or more availability zones"]


# ---- what an instance type can boot and carry (review of issue 12) -----------------------------------------

def with_groups(*groups, base=EXISTING_GPU_SPOT):
    system = {"name": "system", "instanceTypes": ["m7i.xlarge"], "minSize": 1, "maxSize": 2, "desiredSize": 1}
    return with_changes(base, nodeGroups=[system, *groups])


def gpu_group(*types):
    return {"name": "gpu", "instanceTypes": list(types), "minSize": 0, "maxSize": 2, "desiredSize": 0, "gpu": True}


@pytest.mark.parametrize("instance_type", ["inf2.xlarge", "dl1.24xlarge"], ids=["inferentia", "gaudi"])
def test_a_gpu_group_of_a_type_without_an_nvidia_gpu_is_refused(instance_type):
    """The nvidia AMI and the accelerator label on a node whose device plugin finds no GPU: cluster-autoscaler
    would count it as a GPU node whose GPUs never become ready. One rule (infra/validation.py, by family), one
    message, before any resource and before any AWS lookup."""
    [problem] = program_error(with_groups(gpu_group(instance_type)))
    assert problem.startswith(f"kiln:nodeGroups[1].instanceTypes[0] ({instance_type}) has no NVIDIA GPU, but "
                              "the group has gpu: true")
    assert "cluster-autoscaler would wait for GPUs that never come" in problem


def test_an_arm64_type_in_a_group_booting_an_x86_ami_is_refused():
    problems = program_error(with_groups(gpu_group("g5g.2xlarge"),
                                         {"name": "arm", "instanceTypes": ["m7g.2xlarge"], "minSize": 0,
                                          "maxSize": 1, "desiredSize": 0}))
    assert problems == [
        f"kiln:nodeGroups[1].instanceTypes[0] (g5g.2xlarge) runs arm64, but kiln:nodeAmi.nvidia ({GPU_AMI}) is x86_64: "
        "EC2 cannot launch it and the group's ASGs would never get that node",
        f"kiln:nodeGroups[2].instanceTypes[0] (m7g.2xlarge) runs arm64, but kiln:nodeAmi.standard ({AMI}) is x86_64: "
        "EC2 cannot launch it and the group's ASGs would never get that node",
    ]


def test_an_arm64_ami_boots_arm64_types_only():
    cfg = with_changes(BASE, nodeGroups=[{"name": "arm", "instanceTypes": ["m7g.2xlarge"], "minSize": 1,
                                          "maxSize": 2, "desiredSize": 1}])
    arm_ami = {"architectures": {AMI: "arm64"}}
    assert groups(run(cfg, arm_ami))["arm"][0].inputs["imageId"] == AMI
    [problem] = program_error(BASE, arm_ami)         # its group is m7i.2xlarge
    assert problem.startswith(f"kiln:nodeGroups[0].instanceTypes[0] (m7i.2xlarge) runs i386/x86_64, but kiln:nodeAmi "
                              f"({AMI}) is arm64")
