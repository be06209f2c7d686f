"""Autoscaler-safe Jobs: cluster-autoscaler must never scale a node down under a running Job.

cluster-autoscaler drains a node it finds underused when every pod on it can
move: it treats Job-owned pods as replicated, and counts only ``hostPath`` and
disk-backed ``emptyDir`` volumes as local storage. kiln's Jobs mount the model
through a PersistentVolumeClaim, so without more a CPU Job on a quiet node is
evicted and killed. A pod annotated ``cluster-autoscaler.kubernetes.io/safe-to-evict:
"false"`` is never moved: its node stays until the Job is done.

kiln makes that annotation hold in the Jobs namespace, for the pods of every
Job kind (``JOB_OWNER_KINDS``: the rollout's, kept equal by a test):

* Kubernetes 1.36+ (MutatingAdmissionPolicy is GA): the policy *sets* the
  annotation on such pods as they are created.
* Kubernetes 1.30-1.35 (ValidatingAdmissionPolicy is GA, the mutating one is
  not): the policy *requires* it — on the pods, and on ``batch/v1`` Jobs' and
  CronJobs' pod templates, so ``kubectl apply`` of a Job without it fails with
  the reason, instead of the Job controller failing silently to create pods.
  On an update, only removing (or changing) the annotation is refused: objects
  created before the policy keep working (the Job controller still removes its
  finalizers from their pods).
* Before 1.30 there is no GA admission policy: kiln declares none and the
  program warns (the policy pack still requires the annotation on Jobs declared
  in Pulumi).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.labels import ANNOTATION_SAFE_TO_EVICT as SAFE_TO_EVICT
from infra.labels import JOB_OWNER_KINDS  # the rollout's Job kinds (tests/test_safe_jobs.py keeps them equal)

NAME = "kiln-safe-to-evict-jobs"
ADM = k8s.admissionregistration.v1


def minor(kubernetes_version: str) -> tuple[int, int]:
    major, minor_ = (int(x) for x in kubernetes_version.split(".")[:2])
    return major, minor_


def mutates(kubernetes_version: str) -> bool:
    """MutatingAdmissionPolicy admissionregistration.k8s.io/v1: GA, on by default, from 1.36."""
    return minor(kubernetes_version) >= (1, 36)


def validates(kubernetes_version: str) -> bool:
    """ValidatingAdmissionPolicy admissionregistration.k8s.io/v1: GA from 1.30."""
    return minor(kubernetes_version) >= (1, 30)


# ---- CEL (pure, evaluated with cel-python in tests/test_safe_jobs.py) ------------------------------------


def owned_by_a_job_kind(kinds: tuple[str, ...] = JOB_OWNER_KINDS) -> str:
    listed = ", ".join(f"'{k}'" for k in kinds)
    return ("has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, "
            f"has(r.controller) && r.controller == true && r.kind in [{listed}])")


def _annotated(meta: str) -> str:
    """CEL: the metadata at ``meta`` (``object.spec.template.metadata``, say) carries safe-to-evict "false".

    Every optional level is tested with ``has()`` first: a template without metadata
    is a plain denial with the policy's message, not an evaluation error."""
    root, *rest = meta.split(".")
    levels = [".".join([root, *rest[:i + 1]]) for i in range(len(rest))] + [f"{meta}.annotations"]
    present = " && ".join(f"has({level})" for level in levels)
    return f"{present} && '{SAFE_TO_EVICT}' in {meta}.annotations && {meta}.annotations['{SAFE_TO_EVICT}'] == 'false'"


def required_on(path: str) -> str:
    """CEL: on create, the metadata at ``object.<path>`` must carry the annotation; on update it may not lose it."""
    new, old = f"object.{path}" if path else "object.metadata", f"oldObject.{path}" if path else "oldObject.metadata"
    return f"request.operation == 'CREATE' ? ({_annotated(new)}) : (!({_annotated(old)}) || ({_annotated(new)}))"


SET_ANNOTATION = f"Object{{metadata: Object.metadata{{annotations: {{'{SAFE_TO_EVICT}': 'false'}}}}}}"
MESSAGE = (f"{SAFE_TO_EVICT}: \"false\" is required on the pods of Jobs in this namespace (set it in the pod "
           "template's metadata.annotations): without it cluster-autoscaler may scale the node down under "
           "the running Job")

# (policy suffix, api group, resource, path of the pod metadata below object)
VALIDATED = (
    ("pods", "", "pods", ""),
    ("jobs", "batch", "jobs", "spec.template.metadata"),
    ("cronjobs", "batch", "cronjobs", "spec.jobTemplate.spec.template.metadata"),
)


@dataclass(frozen=True)
class SafeJobsArgs:
    namespace: str
    kubernetes_version: str


class AutoscalerSafeJobs(pulumi.ComponentResource):
    """The admission policies (and bindings) that keep Job pods in ``namespace`` safe from scale-down."""

    def __init__(self, name: str, args: SafeJobsArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:AutoscalerSafeJobs", name, None, opts)
        self.policies: list[pulumi.Resource] = []
        in_namespace = k8s.meta.v1.LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": args.namespace})
        if mutates(args.kubernetes_version):
            self._mutating(name, in_namespace)
        elif validates(args.kubernetes_version):
            for suffix, group, resource, path in VALIDATED:
                self._validating(f"{name}-{suffix}", f"{NAME}-{suffix}", in_namespace, group, resource, path)
        else:
            pulumi.log.warn(f"kubernetesVersion {args.kubernetes_version} has no GA admission policy: Jobs in "
                            f"{args.namespace} are not checked for {SAFE_TO_EVICT}: \"false\"; cluster-autoscaler may "
                            "scale a node down under a Job that lacks it (Kubernetes 1.30+ enforces it)")
        self.register_outputs({"policies": [p.urn for p in self.policies]})

    def _validating(self, name: str, policy_name: str, in_namespace, group: str, resource: str, path: str) -> None:
        policy = ADM.ValidatingAdmissionPolicy(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=policy_name),
            spec=ADM.ValidatingAdmissionPolicySpecArgs(
                failure_policy="Fail",
                match_constraints=ADM.MatchResourcesArgs(namespace_selector=in_namespace, resource_rules=[
                    ADM.NamedRuleWithOperationsArgs(api_groups=[group], api_versions=["v1"],
                                                    operations=["CREATE", "UPDATE"], resources=[resource])]),
                match_conditions=[ADM.MatchConditionArgs(name="owned-by-a-job-kind", expression=owned_by_a_job_kind())]
                if resource == "pods" else None,
                validations=[ADM.ValidationArgs(expression=required_on(path), message=MESSAGE, reason="Invalid")],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        binding = ADM.ValidatingAdmissionPolicyBinding(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=policy_name),
            spec=ADM.ValidatingAdmissionPolicyBindingSpecArgs(policy_name=policy_name, validation_actions=["Deny"]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        self.policies += [policy, binding]

    def _mutating(self, name: str, in_namespace) -> None:
        policy = ADM.MutatingAdmissionPolicy(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME),
            spec=ADM.MutatingAdmissionPolicySpecArgs(
                failure_policy="Fail",
                reinvocation_policy="IfNeeded",
                match_constraints=ADM.MatchResourcesArgs(namespace_selector=in_namespace, resource_rules=[
                    ADM.NamedRuleWithOperationsArgs(api_groups=[""], api_versions=["v1"], operations=["CREATE"],
                                                    resources=["pods"])]),
                match_conditions=[ADM.MatchConditionArgs(name="owned-by-a-job-kind", expression=owned_by_a_job_kind())],
                mutations=[ADM.MutationArgs(patch_type="ApplyConfiguration",
                                            apply_configuration=ADM.ApplyConfigurationArgs(expression=SET_ANNOTATION))],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        binding = ADM.MutatingAdmissionPolicyBinding(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME),
            spec=ADM.MutatingAdmissionPolicyBindingSpecArgs(policy_name=NAME),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        self.policies += [policy, binding]
