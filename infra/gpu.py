"""The NVIDIA device plugin: what makes ``nvidia.com/gpu`` requests schedulable on GPU groups.

The AL2023 NVIDIA AMI ships the driver and the container toolkit, not the device
plugin; without it a node advertises no ``nvidia.com/gpu`` capacity and every
GPU Job stays Pending. kiln installs NVIDIA's pinned Helm chart, only when a node
group has ``gpu: true``, and runs it only on those groups' nodes.

It must run *before* the model is warm: it tolerates the ``kiln.dev/model-warming``
startup taint (besides ``nvidia.com/gpu`` and the groups' own taints), so a node
already advertises its GPUs when the warm-up lifts the taint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra import labels as L
from infra.config import NodeGroupConfig

# NVIDIA/k8s-device-plugin chart (and image) v0.17.1.
DEFAULT_CHART_VERSION = "0.17.1"
CHART = "nvidia-device-plugin"
CHART_REPOSITORY = "https://nvidia.github.io/k8s-device-plugin"
NAMESPACE = "kube-system"
NAME = "nvidia-device-plugin"
GPU_TAINT = "nvidia.com/gpu"


@dataclass(frozen=True)
class GpuDevicePluginArgs:
    gpu_groups: tuple[str, ...]                  # names of the node groups with gpu: true
    # Taints of those groups besides the warming taint, as (key, effect): the plugin
    # must tolerate them all to run on every GPU node.
    group_taints: tuple[tuple[str, str], ...] = ()
    chart_version: str = DEFAULT_CHART_VERSION

    @classmethod
    def for_groups(cls, groups: Sequence[NodeGroupConfig]) -> Optional["GpuDevicePluginArgs"]:
        """The args for these node groups, or None when none has ``gpu: true`` (nothing to install)."""
        gpu = [g for g in groups if g.gpu]
        if not gpu:
            return None
        return cls(gpu_groups=tuple(g.name for g in gpu),
                   group_taints=tuple(sorted({(t.key, t.effect) for g in gpu for t in g.taints})))


def helm_values(args: GpuDevicePluginArgs) -> dict[str, Any]:
    tolerations = [
        {"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"},
        {"key": L.TAINT_WARMING, "operator": "Exists", "effect": L.TAINT_WARMING_EFFECT},
    ]
    for key, effect in args.group_taints:
        entry = {"key": key, "operator": "Exists", "effect": effect}
        if entry not in tolerations:
            tolerations.append(entry)
    return {
        "fullnameOverride": NAME,
        # Replaces the chart's default affinity, which requires node-feature-discovery
        # labels (pci-10de.present, ...) that kiln's nodes do not carry (no NFD here).
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": L.LABEL_NODE_GROUP, "operator": "In", "values": list(args.gpu_groups)},
            ]}],
        }}},
        "tolerations": tolerations,
        "priorityClassName": "system-node-critical",
        # No GPU feature discovery / node-feature-discovery: kiln's own labels select the nodes.
        "gfd": {"enabled": False},
        "nfd": {"enabled": False},
    }


class GpuDevicePlugin(pulumi.ComponentResource):
    """The ``nvidia-device-plugin`` Helm release (a DaemonSet in kube-system).

    Pass the Kubernetes provider through ``opts`` (``providers={"kubernetes": ...}``).
    """

    def __init__(self, name: str, args: GpuDevicePluginArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:GpuDevicePlugin", name, None, opts)
        if not args.gpu_groups:
            raise ValueError("GpuDevicePlugin needs at least one GPU node group")
        self.release = k8s.helm.v3.Release(
            name,
            name=NAME,
            chart=CHART,
            version=args.chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPOSITORY),
            namespace=NAMESPACE,
            values=helm_values(args),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"chartVersion": args.chart_version, "gpuGroups": list(args.gpu_groups)})
