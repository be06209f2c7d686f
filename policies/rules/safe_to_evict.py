"""Jobs declared in Pulumi carry ``cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`` on their pods.

cluster-autoscaler treats Job pods as replicated and a PersistentVolumeClaim as
movable, so without the annotation it scales a quiet node down under a running
Job. In the Jobs namespace kiln's admission policies (``infra/safe_jobs.py``)
refuse such pods; this rule says so at ``pulumi preview`` time, for Jobs in any
namespace.

Like the other Kubernetes rules (``policies/rules/kubernetes.py``) it reads
objects, not a list of resource types: every Kubernetes resource and every
object in a ``yaml/v2`` ConfigGroup's inline YAML, judged by its kind. Which
kinds are Jobs is the rollout's list (``infra.labels.JOB_OWNER_KINDS``: batch
Jobs, Argo Workflows, the Kubeflow training jobs), plus the kinds that create
them (CronJobs and JobSets create Jobs; CronWorkflows and WorkflowTemplates
make Workflows). In those, *every* pod template is judged, wherever it sits
(``spec.template``, ``spec.jobTemplate.spec.template``, each
``spec.<x>ReplicaSpecs.<role>.template``, each JobSet ``replicatedJobs[]``'s
pod template, ...). Argo builds a pod's metadata from the workflow's
``spec.podMetadata`` and the template's own ``metadata`` (which wins): every
template that runs a pod must end up with "false". A ``…Patch`` may leave the
annotation alone but not set it to anything else.

Not visible to any pack: the Jobs a Helm chart renders, and the templates of a
WorkflowTemplate not declared in the same stack (a Workflow that uses one must
then carry the annotation in its own ``spec.podMetadata``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

from pulumi_policy import ResourceValidationPolicy

from infra.labels import ANNOTATION_SAFE_TO_EVICT, JOB_OWNER_KINDS
from policies.rules._props import MANDATORY, get, iter_mappings
from policies.rules.kubernetes import KUBERNETES, manifests, walk, where

SAFE_TO_EVICT = ANNOTATION_SAFE_TO_EVICT
# Kinds whose pod templates become Job pods through a Job of another kind (a CronJob or JobSet creates batch Jobs).
JOB_CREATOR_KINDS = ("CronJob", "JobSet")
ARGO = "argoproj.io/"
# Argo kind -> where its workflow spec is (spec.templates, spec.podMetadata).
ARGO_WORKFLOW_SPECS: dict[str, tuple[str, ...]] = {
    "Workflow": ("spec",), "WorkflowTemplate": ("spec",), "ClusterWorkflowTemplate": ("spec",),
    "CronWorkflow": ("spec", "workflowSpec"),
}
# Argo template types that run a pod (steps, dag and suspend do not; http/plugin run in the agent).
ARGO_POD_TEMPLATES = ("container", "script", "containerSet", "resource", "data")
WHY = "it must be \"false\" so cluster-autoscaler never scales the node down under the running Job"


def kind_of(resource_type: str) -> tuple[str, str, bool]:
    """``(apiVersion, kind, is_patch)`` of a ``kubernetes:<group>/<version>:<Kind>[Patch]`` resource type."""
    api_version, _, kind = resource_type.removeprefix(KUBERNETES).rpartition(":")
    patch = kind.endswith("Patch")
    return api_version, kind.removesuffix("Patch") if patch else kind, patch


def _annotation(metadata: Any) -> Any:
    return get(metadata, "annotations", SAFE_TO_EVICT)


def _found(value: Any) -> str:
    return "is missing" if value is None else f"is {value!r}"


def pod_templates(obj: Mapping[str, Any]) -> Iterator[tuple[tuple, Mapping[str, Any]]]:
    """Every pod template in ``obj``: a mapping under a ``template`` key that is not itself a Job's template
    (a JobSet's ``replicatedJobs[].template`` holds a Job spec, whose ``template`` is the pod's), or any mapping
    whose ``spec`` lists ``containers``."""
    for trail, node in walk(obj):
        under_template = bool(trail) and trail[-1] == "template"
        job_template = isinstance(node.get("spec") if "spec" in node else None, Mapping) and "template" in node["spec"]
        pod_spec = isinstance(node.get("spec") if "spec" in node else None, Mapping) and "containers" in node["spec"]
        if trail and ((under_template and not job_template) or pod_spec):
            yield trail, node


def template_problems(obj: Mapping[str, Any], patch: bool) -> Iterator[str]:
    found = False
    for trail, template in pod_templates(obj):
        found = True
        value = _annotation(get(template, "metadata"))
        if value != "false" and not (patch and value is None):
            yield f"{where(trail)}.metadata.annotations[{SAFE_TO_EVICT}] {_found(value)}; {WHY}"
    if not found and not patch:
        yield (f"no pod template found (spec.template, spec.jobTemplate.spec.template, spec.<x>ReplicaSpecs.<role>"
               f".template, ...), so its pods cannot be checked for {SAFE_TO_EVICT}: \"false\"")


def _elsewhere(spec: Mapping[str, Any]) -> bool:
    """Whether pods of this workflow come from templates declared elsewhere (a WorkflowTemplate)."""
    return get(spec, "workflowTemplateRef") is not None or any("templateRef" in node for _, node in walk(
        get(spec, "templates", default=[])))


def argo_problems(spec: Any, at: str, patch: bool) -> Iterator[str]:
    """An Argo workflow spec: each pod gets ``podMetadata``'s annotations, then its template's ``metadata``'s."""
    base = _annotation(get(spec, "podMetadata"))
    if base is not None and base != "false":
        yield f"{at}.podMetadata.annotations[{SAFE_TO_EVICT}] {_found(base)}; {WHY}"
    elif base is None and not patch and isinstance(spec, Mapping) and _elsewhere(spec):
        yield (f"{at}.podMetadata.annotations[{SAFE_TO_EVICT}] is missing; {WHY} (the pods of templates a "
               "WorkflowTemplate declares get only this)")
    pods = 0
    for i, template in enumerate(iter_mappings(get(spec, "templates"))):
        if not any(k in template for k in ARGO_POD_TEMPLATES):
            continue
        pods += 1
        own = _annotation(get(template, "metadata"))
        name = get(template, "name")
        at_template = f"{at}.templates[{i}]{f' ({name})' if isinstance(name, str) else ''}"
        if own is not None and own != "false":
            yield f"{at_template}.metadata.annotations[{SAFE_TO_EVICT}] {_found(own)}; {WHY}"
        elif own is None and base is None and not patch:
            yield (f"{at_template}.metadata.annotations[{SAFE_TO_EVICT}] is missing and {at}.podMetadata does not "
                   f"set it; {WHY}")
    if not pods and base is None and not patch and not (isinstance(spec, Mapping) and _elsewhere(spec)):
        # Nothing to classify (no template runs a pod, none comes from elsewhere): say so rather than pass it.
        yield (f"{at} declares no template that runs a pod ({', '.join(ARGO_POD_TEMPLATES)}) and no "
               f"{at}.podMetadata.annotations[{SAFE_TO_EVICT}]: \"false\", so its pods cannot be checked")


def object_problems(api_version: Any, kind: Any, obj: Any, patch: bool) -> Iterator[str]:
    """Problems of one Kubernetes object (a resource's properties, or a document of a ConfigGroup's YAML)."""
    if not isinstance(obj, Mapping) or not isinstance(kind, str):
        return
    if isinstance(api_version, str) and api_version.startswith(ARGO) and kind in ARGO_WORKFLOW_SPECS:
        path = ARGO_WORKFLOW_SPECS[kind]
        yield from argo_problems(get(obj, *path), ".".join(path), patch)
    elif kind in JOB_OWNER_KINDS or kind in JOB_CREATOR_KINDS:
        yield from template_problems(obj, patch)


def validate_safe_to_evict(args, report_violation) -> None:
    if not args.resource_type.startswith(KUBERNETES):
        return
    objects, unreadable = manifests(args.resource_type, args.props)
    if unreadable:
        return  # k8s-hostpath-model-only-readonly reports YAML nothing can read (one violation per mistake)
    api_version, kind, patch = kind_of(args.resource_type)
    for problem in object_problems(api_version, kind, args.props, patch):
        report_violation(problem, None)
    for doc in objects[1:]:                  # a ConfigGroup's inline YAML
        name = get(doc, "metadata", "name")
        label = f"yaml {get(doc, 'kind')}/{name if isinstance(name, str) else '?'}: "
        for problem in object_problems(get(doc, "apiVersion"), get(doc, "kind"), doc, False):
            report_violation(label + problem, None)


POLICIES = [
    ResourceValidationPolicy(
        name="k8s-job-safe-to-evict-false",
        description="Every pod template of a Job kind (batch Jobs and CronJobs, JobSets, Argo Workflows, Kubeflow "
                    "training jobs; ConfigGroup YAML included) carries "
                    "cluster-autoscaler.kubernetes.io/safe-to-evict: \"false\".",
        validate=validate_safe_to_evict,
        enforcement_level=MANDATORY,
    ),
]

