"""Kubernetes: the model is the only host path a pod may see, and only read-only; Jobs clean up.

A writable hostPath (or one outside the model directory) lets a pod alter the
node or the model every later Job trusts; so can a pod that mounts a claim bound to
the hostPath PersistentVolume without ``readOnly``, since Kubernetes does not
enforce a PV's ``ReadOnlyMany`` on a mount. Jobs without requests defeat the
autoscaler's bin-packing; Jobs without a TTL pile up forever.
"""

from __future__ import annotations

from typing import Any, Iterator

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from policies.rules._props import ADVISORY, MANDATORY, as_list, config, get, iter_mappings, schema, under_path

PERSISTENT_VOLUME = "kubernetes:core/v1:PersistentVolume"
PERSISTENT_VOLUME_CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"
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
PERSISTENT_VOLUME_CLAIMS = (PERSISTENT_VOLUME_CLAIM, f"{PERSISTENT_VOLUME_CLAIM}Patch")
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


# Kubernetes does not enforce a PersistentVolume's ReadOnlyMany on a mount: a pod that mounts a
# claim bound to the hostPath PV without readOnly can write into the baked model on the node.
def _known(props: Any, *path: str) -> Any:
    """``get``, but None for a value not known during preview (a new namespace's name, a PV's name):
    the binding is still found through the other side, so the rule need not wait for ``up``."""
    try:
        return get(props, *path)
    except UnknownValueError:
        return None


def _namespace(props: Any) -> Any:
    return _known(props, "metadata", "namespace")


def _same_namespace(a: Any, b: Any) -> bool:
    """Unset or not-yet-known namespaces match anything: better a false alarm than a missed mount."""
    return not (isinstance(a, str) and isinstance(b, str)) or a == b


def hostpath_claims(resources) -> dict[tuple[Any, str], str]:
    """``(namespace, claim name) -> PV name`` for every claim bound to a hostPath PersistentVolume,
    through the PV's ``claimRef`` or the claim's ``volumeName``."""
    volumes = {}
    for r in resources:
        if r.resource_type in PERSISTENT_VOLUMES and get(r.props, "spec", "hostPath") is not None:
            name = _known(r.props, "metadata", "name")
            volumes[name if isinstance(name, str) else r.name] = r
    claims: dict[tuple[Any, str], str] = {}
    for pv_name, pv in volumes.items():
        ref_name = _known(pv.props, "spec", "claimRef", "name")
        if isinstance(ref_name, str):
            claims[(_known(pv.props, "spec", "claimRef", "namespace"), ref_name)] = pv_name
    for r in resources:
        if r.resource_type in PERSISTENT_VOLUME_CLAIMS:
            volume, name = _known(r.props, "spec", "volumeName"), _known(r.props, "metadata", "name")
            if isinstance(volume, str) and volume in volumes and isinstance(name, str):
                claims[(_namespace(r.props), name)] = volume
    return claims


def writable_claim_mounts(spec: Any, namespace: Any, claims: dict[tuple[Any, str], str]) -> list[str]:
    problems = []
    for volume in iter_mappings(get(spec, "volumes")):
        source = get(volume, "persistentVolumeClaim")
        claim = get(source, "claimName")
        bound = [pv for (ns, name), pv in claims.items() if name == claim and _same_namespace(ns, namespace)]
        if not bound or get(source, "readOnly") is True:
            continue
        name = get(volume, "name")
        for where, container in containers(spec):
            for mount in iter_mappings(get(container, "volumeMounts")):
                if get(mount, "name") == name and get(mount, "readOnly") is not True:
                    problems.append(f"{where} mounts volume {name!r} (claim {claim!r}, bound to hostPath "
                                    f"PersistentVolume {bound[0]!r}) without readOnly: true")
    return problems


def validate_model_claim_readonly(args, report_violation) -> None:
    claims = hostpath_claims(args.resources)
    if not claims:
        return
    for r in args.resources:
        spec = pod_spec(r)
        if spec is None:
            continue
        for problem in writable_claim_mounts(spec, _namespace(r.props), claims):
            report_violation(f"{r.resource_type} {r.name!r}: {problem}", r.urn)


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
    StackValidationPolicy(
        name="k8s-model-claim-mounted-readonly",
        description="Pod templates mount claims bound to a hostPath PersistentVolume read-only "
                    "(Kubernetes does not enforce the PV's ReadOnlyMany on a mount).",
        validate=validate_model_claim_readonly,
        enforcement_level=MANDATORY,
    ),
]
