"""Jobs declared in Pulumi carry ``cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`` on their pods.

cluster-autoscaler treats Job pods as replicated and a PersistentVolumeClaim as
movable, so without the annotation it scales a quiet node down under a running
Job. In the Jobs namespace kiln's admission policy (``infra/safe_jobs.py``)
refuses such pods; this rule says so at ``pulumi preview`` time, for Jobs in
any namespace: batch/v1 Jobs and CronJobs (their pod template), the Kubeflow
training jobs (each ``*ReplicaSpecs`` template) and Argo Workflows
(``spec.podMetadata``). A patch may not set the annotation to anything else.
"""

from __future__ import annotations

from typing import Any, Iterator

from pulumi_policy import ResourceValidationPolicy

from policies.rules._props import MANDATORY, get

SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
KUBEFLOW_KINDS = ("PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob")
# Resource type -> where its pod template's metadata is.
TEMPLATE_METADATA: dict[str, tuple[str, ...]] = {
    "kubernetes:batch/v1:Job": ("spec", "template", "metadata"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "metadata"),
    "kubernetes:batch/v1beta1:CronJob": ("spec", "jobTemplate", "spec", "template", "metadata"),
    "kubernetes:argoproj.io/v1alpha1:Workflow": ("spec", "podMetadata"),
}


def _pod_metadata(resource_type: str, props: Any) -> Iterator[tuple[str, Any]]:
    """(where, metadata) of every pod template the resource declares."""
    base = resource_type.removesuffix("Patch")
    if base in TEMPLATE_METADATA:
        path = TEMPLATE_METADATA[base]
        yield ".".join(path), get(props, *path)
        return
    group, _, kind = base.removeprefix("kubernetes:").rpartition(":")
    if group.startswith("kubeflow.org/") and kind in KUBEFLOW_KINDS:
        spec = get(props, "spec", default={})
        for key in sorted(k for k in spec if str(k).endswith("ReplicaSpecs")):
            replicas = get(spec, key, default={})
            for role in sorted(replicas):
                yield f"spec.{key}.{role}.template.metadata", get(replicas, role, "template", "metadata")


def validate_safe_to_evict(args, report_violation) -> None:
    patch = args.resource_type.endswith("Patch")
    for where, metadata in _pod_metadata(args.resource_type, args.props):
        value = get(metadata, "annotations", SAFE_TO_EVICT)
        if value == "false" or (patch and value is None):
            continue
        found = "is missing" if value is None else f"is {value!r}"
        report_violation(f"{where}.annotations[{SAFE_TO_EVICT}] {found}; it must be \"false\" so cluster-autoscaler "
                         "never scales the node down under the running Job", None)


POLICIES = [
    ResourceValidationPolicy(
        name="k8s-job-safe-to-evict-false",
        description="Jobs' pod templates carry cluster-autoscaler.kubernetes.io/safe-to-evict: \"false\".",
        validate=validate_safe_to_evict,
        enforcement_level=MANDATORY,
    ),
]
