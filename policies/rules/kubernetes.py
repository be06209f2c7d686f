"""Kubernetes: the model is the only host path a pod may see, and only read-only; Jobs clean up.

A writable hostPath (or one outside the model directory) lets a pod alter the
node or the model every later Job trusts. Jobs without requests defeat the
autoscaler's bin-packing; Jobs without a TTL pile up forever.
"""

from __future__ import annotations

from typing import Any, Iterator

from pulumi_policy import ResourceValidationPolicy

from policies.rules._props import ADVISORY, MANDATORY, as_list, config, get, iter_mappings, schema, under_path

PERSISTENT_VOLUME = "kubernetes:core/v1:PersistentVolume"
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"
# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:core/v1:PodTemplate": ("template", "spec"),
    "kubernetes:core/v1:ReplicationController": ("spec", "template", "spec"),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    JOB: ("spec", "template", "spec"),
    CRON_JOB: ("spec", "jobTemplate", "spec", "template", "spec"),
}
# Server-side-apply patches (``<Kind>Patch``) and the older batch/v1beta1 CronJob carry the same
# pod spec, and a patch can add a writable hostPath to a workload declared elsewhere.
POD_SPEC_PATHS.update({f"{kind}Patch": path for kind, path in list(POD_SPEC_PATHS.items())})
POD_SPEC_PATHS["kubernetes:batch/v1beta1:CronJob"] = POD_SPEC_PATHS[CRON_JOB]
POD_SPEC_PATHS["kubernetes:batch/v1beta1:CronJobPatch"] = POD_SPEC_PATHS[CRON_JOB]
PERSISTENT_VOLUMES = (PERSISTENT_VOLUME, f"{PERSISTENT_VOLUME}Patch")
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
DEFAULT_MODEL_PATH = "/opt/models"


def pod_spec(args) -> Any:
    path = POD_SPEC_PATHS.get(args.resource_type)
    return None if path is None else get(args.props, *path)


def containers(spec: Any) -> Iterator[tuple[str, Any]]:
    for kind in CONTAINER_LISTS:
        for i, container in enumerate(iter_mappings(get(spec, kind))):
            yield f"{kind}[{i}] ({get(container, 'name', default='?')})", container


def hostpath_problems(spec: Any, model_path: str) -> list[str]:
    problems = []
    for volume in iter_mappings(get(spec, "volumes")):
        host_path = get(volume, "hostPath")
        if host_path is None:
            continue
        name, path = get(volume, "name"), get(host_path, "path")
        if not under_path(path, model_path):
            problems.append(f"volume {name!r} mounts host path {path!r}, outside the model path {model_path}")
        for where, container in containers(spec):
            for mount in iter_mappings(get(container, "volumeMounts")):
                if get(mount, "name") == name and get(mount, "readOnly") is not True:
                    problems.append(f"{where} mounts host path volume {name!r} without readOnly: true")
    return problems


def validate_hostpath(args, report_violation) -> None:
    model_path = config(args, "modelPath", DEFAULT_MODEL_PATH)
    if args.resource_type in PERSISTENT_VOLUMES:
        spec = get(args.props, "spec")
        path = get(spec, "hostPath", "path")
        if get(spec, "hostPath") is None:
            return
        if not under_path(path, model_path):
            report_violation(f"hostPath {path!r} is outside the model path {model_path}", None)
        modes = as_list(get(spec, "accessModes"))
        if modes != ["ReadOnlyMany"]:
            report_violation(f"a hostPath volume must be ReadOnlyMany only, has accessModes {modes}", None)
        return
    spec = pod_spec(args)
    if spec is not None:
        for problem in hostpath_problems(spec, model_path):
            report_violation(problem, None)


def _job_spec(args) -> Any:
    if args.resource_type == JOB:
        return get(args.props, "spec")
    if args.resource_type == CRON_JOB:
        return get(args.props, "spec", "jobTemplate", "spec")
    return None


def validate_job_hygiene(args, report_violation) -> None:
    job = _job_spec(args)
    if job is None:
        return
    if get(job, "ttlSecondsAfterFinished") is None:
        report_violation("spec.ttlSecondsAfterFinished must be set so finished Jobs are cleaned up", None)
    for where, container in containers(get(job, "template", "spec")):
        requests = get(container, "resources", "requests", default={})
        if not (get(requests, "cpu") or get(requests, "memory")):
            report_violation(f"{where} sets no resources.requests (cpu/memory)", None)


def validate_pod_failure_policy(args, report_violation) -> None:
    job = _job_spec(args)
    if job is None:
        return
    for rule in iter_mappings(get(job, "podFailurePolicy", "rules")):
        conditions = [get(c, "type") for c in iter_mappings(get(rule, "onPodConditions"))]
        if get(rule, "action") == "Ignore" and "DisruptionTarget" in conditions:
            return
    report_violation("spec.podFailurePolicy should Ignore DisruptionTarget, so a drained node does not count "
                     "against the Job's backoffLimit", None)


POLICIES = [
    ResourceValidationPolicy(
        name="k8s-hostpath-model-only-readonly",
        description="hostPath volumes only expose modelPath, read-only (PersistentVolumes and pod templates).",
        validate=validate_hostpath,
        enforcement_level=MANDATORY,
        config_schema=schema(modelPath={"type": "string", "default": DEFAULT_MODEL_PATH}),
    ),
    ResourceValidationPolicy(
        name="k8s-job-requests-and-ttl",
        description="Jobs set resource requests on every container and ttlSecondsAfterFinished.",
        validate=validate_job_hygiene,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="k8s-job-pod-failure-policy",
        description="Jobs have a pod failure policy that ignores disruptions.",
        validate=validate_pod_failure_policy,
        enforcement_level=ADVISORY,
    ),
]
