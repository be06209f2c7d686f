"""Where ML Jobs run and how they get the model: a namespace and a read-only hostPath volume.

For the current model version there is one PersistentVolume, a hostPath at
``modelPath`` whose node affinity requires ``kiln.dev/model-version=<version>``,
and one claim, ``model-<version>``, bound to it by name. The scheduler honours a
PV's node affinity for every pod that uses its claim, so a Job that mounts
``model-v5`` can only run on a node that carries model v5.

The Jobs namespace **enforces** the restricted Pod Security Standard: a
privileged or host-network pod there could write to the node or reach IMDS
(and so the node role) whatever the hop limit. A PersistentVolumeClaim volume
is allowed under restricted, so Jobs mount the model as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from infra import labels as L

ACCESS_MODE = "ReadOnlyMany"
POD_SECURITY_LEVEL = "restricted"
# enforce refuses violating pods; warn and audit report them too (kubectl shows the warning).
POD_SECURITY_LABELS = {f"pod-security.kubernetes.io/{mode}": POD_SECURITY_LEVEL for mode in ("enforce", "warn", "audit")}
# The size of a hostPath volume is not enforced by anything; the claim's request is fixed when the
# version's claim is created. A bound claim cannot be resized (no storage class can expand it), so a
# later kiln:modelVolumeSizeGiB change must not reach it: only the next model version's claim takes it.
PV_SIZE_FIELDS = ["spec.capacity"]
PVC_SIZE_FIELDS = ["spec.resources"]


def volume_name(model_version: str) -> str:
    return f"kiln-model-{model_version}"


def claim_name(model_version: str) -> str:
    return f"model-{model_version}"


@dataclass(frozen=True)
class ModelVolumeArgs:
    namespace: str
    model_version: str
    model_path: str
    size_gib: int


class ModelVolume(pulumi.ComponentResource):
    """The Jobs namespace, the model PersistentVolume and its claim (``claim_name``)."""

    def __init__(self, name: str, args: ModelVolumeArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:ModelVolume", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # A new model version replaces the volume and claim (their names carry the
        # version). The old claim must not be deleted by `pulumi up`: Jobs of the old
        # version still run on the old nodes until the rollout drains them, the
        # pvc-protection finalizer would hold the delete, and the up would hang on it.
        # So Pulumi lets go of the old ones; they are inert (a hostPath, no storage)
        # and can be removed with kubectl once no Job uses them.
        versioned = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        version_labels = {"app.kubernetes.io/part-of": "kiln", L.LABEL_MODEL_VERSION: args.model_version}
        size = f"{args.size_gib}Gi"
        pv_name, pvc_name = volume_name(args.model_version), claim_name(args.model_version)

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-ns",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace, labels={
                "app.kubernetes.io/part-of": "kiln",
                # Jobs here must run as restricted pods; hostPath is reached only through the PV.
                **POD_SECURITY_LABELS,
            }),
            opts=child,
        )
        self.volume = k8s.core.v1.PersistentVolume(
            f"{name}-pv",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=pv_name, labels=version_labels),
            spec=k8s.core.v1.PersistentVolumeSpecArgs(
                capacity={"storage": size},
                access_modes=[ACCESS_MODE],
                volume_mode="Filesystem",
                storage_class_name="",
                persistent_volume_reclaim_policy="Retain",   # never let Kubernetes touch the baked model
                host_path=k8s.core.v1.HostPathVolumeSourceArgs(path=args.model_path, type="Directory"),
                # Reserved for our claim, so no other claim can bind it first.
                claim_ref=k8s.core.v1.ObjectReferenceArgs(namespace=args.namespace, name=pvc_name),
                node_affinity=k8s.core.v1.VolumeNodeAffinityArgs(required=k8s.core.v1.NodeSelectorArgs(
                    node_selector_terms=[k8s.core.v1.NodeSelectorTermArgs(match_expressions=[
                        k8s.core.v1.NodeSelectorRequirementArgs(
                            key=L.LABEL_MODEL_VERSION, operator="In", values=[args.model_version]),
                    ])],
                )),
            ),
            opts=pulumi.ResourceOptions.merge(versioned, pulumi.ResourceOptions(ignore_changes=PV_SIZE_FIELDS)),
        )
        self.claim = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-pvc",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=pvc_name, namespace=self.namespace.metadata.name,
                                                labels=version_labels),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=[ACCESS_MODE],
                storage_class_name="",          # no dynamic provisioning: bind to our PV only
                volume_name=self.volume.metadata.name,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": size}),
            ),
            opts=pulumi.ResourceOptions.merge(versioned, pulumi.ResourceOptions(ignore_changes=PVC_SIZE_FIELDS)),
        )
        self.claim_name = self.claim.metadata.name
        self.register_outputs({"claimName": self.claim_name, "volumeName": self.volume.metadata.name})
