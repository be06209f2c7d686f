"""The NVIDIA device plugin: released only with GPU groups, pinned, on GPU nodes only, tolerating their taints."""

from __future__ import annotations

import pytest

from _program_helpers import BASE, EXISTING_GPU_SPOT, example_config, run, user_data, with_changes
from infra.config import NodeGroupConfig
from infra.gpu import GpuDevicePluginArgs

RELEASE = "kubernetes:helm.sh/v3:Release"
COMPONENT = "kiln:infra:GpuDevicePlugin"

# The device plugin needs to run on GPU nodes whatever else they carry.
GPU_TWO_GROUPS = with_changes(EXISTING_GPU_SPOT, nodeGroups=[
    *EXISTING_GPU_SPOT["kiln:nodeGroups"],
    {"name": "infer", "instanceTypes": ["g6.xlarge"], "minSize": 0, "maxSize": 2, "desiredSize": 0, "gpu": True,
     "taints": ["dedicated=inference:NoExecute"]},
])


@pytest.fixture(scope="module")
def gpu_run():
    return run(GPU_TWO_GROUPS)


def plugin_release(program):
    component = program.one(COMPONENT)
    (release,) = [r for r in program.children_of(component) if r.type == RELEASE]
    return release


def test_cpu_only_stack_has_no_device_plugin():
    program = run(BASE)
    assert program.of_type(COMPONENT) == []
    assert not any(r.type == RELEASE and r.inputs.get("chart") == "nvidia-device-plugin" for r in program.resources)


def test_chart_is_nvidias_and_pinned(gpu_run):
    rel = plugin_release(gpu_run)
    assert rel.inputs["chart"] == "nvidia-device-plugin"
    assert rel.inputs["version"] == "0.17.1"
    assert rel.inputs["repositoryOpts"] == {"repo": "https://nvidia.github.io/k8s-device-plugin"}
    assert rel.inputs["namespace"] == "kube-system"
    assert rel.inputs["name"] == "nvidia-device-plugin"


def test_runs_only_on_the_gpu_groups_nodes(gpu_run):
    values = plugin_release(gpu_run).inputs["values"]
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    # One term (terms are ORed): the chart's NFD-label default terms are replaced, not added to.
    assert terms == [{"matchExpressions": [
        {"key": "kiln.dev/node-group", "operator": "In", "values": ["gpu", "infer"]}]}]
    assert "system" not in terms[0]["matchExpressions"][0]["values"]
    assert values["gfd"] == {"enabled": False} and values["nfd"] == {"enabled": False}


def test_tolerates_gpu_warming_and_the_gpu_groups_taints(gpu_run):
    tolerations = plugin_release(gpu_run).inputs["values"]["tolerations"]
    by_key = {(t["key"], t["effect"]) for t in tolerations}
    assert ("nvidia.com/gpu", "NoSchedule") in by_key
    # It must run before the warm-up lifts the startup taint.
    assert ("kiln.dev/model-warming", "NoSchedule") in by_key
    assert ("workload", "NoSchedule") in by_key          # group "gpu"
    assert ("dedicated", "NoExecute") in by_key          # group "infer"
    assert all(t["operator"] == "Exists" for t in tolerations)
    assert len(by_key) == len(tolerations) == 4          # no duplicates


def test_every_gpu_node_group_label_is_matched(gpu_run):
    """The affinity's group names are the values nodeadm puts on the GPU nodes' kiln.dev/node-group label."""
    values = plugin_release(gpu_run).inputs["values"]
    selected = set(values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                   ["nodeSelectorTerms"][0]["matchExpressions"][0]["values"])
    for lt in gpu_run.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        node_config, _, _ = user_data(lt)
        flags = node_config["spec"]["kubelet"]["flags"][0]
        labels = dict(kv.split("=", 1) for kv in flags.removeprefix("--node-labels=").split(","))
        taints = {t["key"] for t in node_config["spec"]["kubelet"]["config"]["registerWithTaints"]}
        assert (labels["kiln.dev/node-group"] in selected) == ("nvidia.com/gpu" in taints), lt.name


def test_release_goes_through_the_cluster_provider(gpu_run):
    provider = gpu_run.one("pulumi:providers:kubernetes", "cluster-k8s")
    assert plugin_release(gpu_run).provider.startswith(provider.urn + "::")


def test_example_stack_installs_it_for_its_gpu_group():
    values = plugin_release(run(example_config())).inputs["values"]
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["gpu-train"]


def test_args_for_groups_without_gpu_is_none():
    cpu = NodeGroupConfig("cpu", ("m7i.large",), 0, 1, 0)
    assert GpuDevicePluginArgs.for_groups([cpu]) is None


def test_policy_pack_passes_with_the_device_plugin():
    """The pack's hostPath rule sees kiln's own PV and pod templates; the release's rendered DaemonSet is not checked."""
    from policies import offline

    policy_config = {"k8s-hostpath-model-only-readonly": {"modelPath": GPU_TWO_GROUPS["kiln:modelPath"]}}
    for preview in (False, True):
        # A fresh run: the pack's stack rules read the config of the program run they judge.
        report = offline.check(GPU_TWO_GROUPS, preview=preview, policy_config=policy_config)
        assert report.mandatory == [], [(v.policy, v.name, v.message) for v in report.mandatory]
