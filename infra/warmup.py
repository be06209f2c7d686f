"""Model warm-up: keep model Jobs off a node until its model has been read once.

Nodes register with the ``kiln.dev/model-warming=true:NoSchedule`` taint (see
``infra/userdata.py``). This DaemonSet tolerates it, reads the whole model from
the hostPath once (``infra/warmup_agent.py``, an init container) and then removes
the taint from its *own* node, whose name it gets from the downward API.

Permissions. Kubernetes RBAC cannot say "only the node I run on": a rule's
``resourceNames`` is a fixed list, node names are not known in advance, and the
NodeRestriction admission plugin that confines kubelets to their own Node object
applies to node credentials only. So the narrowest RBAC is ``get`` and ``patch``
on ``nodes`` — no list/watch, no delete, no other resource, no ``nodes/status``.
On Kubernetes 1.30+ a ValidatingAdmissionPolicy narrows it the rest of the way:
the service-account token of a pod carries the name of the node the pod is bound
to, and the policy lets this service account change only that node, only by
removing the warming taint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from infra import labels as L
from infra.images import WARMUP_AGENT_IMAGE, WARMUP_PAUSE_IMAGE

NAMESPACE = "kube-system"
NAME = "kiln-model-warmup"
# Baked into every AMI by the bake (infra/images.py), so warming needs no registry pull.
AGENT_IMAGE = WARMUP_AGENT_IMAGE
PAUSE_IMAGE = WARMUP_PAUSE_IMAGE
AGENT_SOURCE = Path(__file__).with_name("warmup_agent.py")
MOUNT = "/model"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"

# CEL for the admission policy. object/oldObject are the Node after/before the change.
_TAINTS = "(has({o}.spec.taints) ? {o}.spec.taints : [])"


def _unchanged(path: str) -> str:
    """CEL: the field at ``path`` (below object/oldObject) is present in both or neither, and equal."""
    return (f"has(object.{path}) == has(oldObject.{path}) && "
            f"(!has(object.{path}) || object.{path} == oldObject.{path})")


# Everything the warm-up service account could change on a Node with `patch`, except the taints;
# metadata fields the API server maintains itself (resourceVersion, managedFields) are not the caller's.
LOCKED_NODE_FIELDS = (
    ("metadata.labels", "node labels"),
    ("metadata.annotations", "node annotations (e.g. cluster-autoscaler's scale-down-disabled)"),
    ("metadata.finalizers", "node finalizers"),
    ("metadata.ownerReferences", "node owner references"),
    ("spec.unschedulable", "whether the node is cordoned"),
    ("spec.podCIDR", "the node's pod CIDR"),
    ("spec.podCIDRs", "the node's pod CIDRs"),
    ("spec.providerID", "the node's provider ID"),
    ("spec.configSource", "the node's config source"),
    ("spec.externalID", "the node's external ID"),
)
POLICY_VALIDATIONS = (
    (f"has(request.userInfo.extra) && '{NODE_NAME_EXTRA}' in request.userInfo.extra && "
     f"request.userInfo.extra['{NODE_NAME_EXTRA}'][0] == object.metadata.name",
     "kiln-model-warmup may only change the node its pod runs on"),
    # Taints compared whole (key, value, effect, timeAdded): the only change allowed is dropping the
    # warming taint and keeping every other taint as it was, which is exactly the agent's patch.
    (_TAINTS.format(o="object") + " == " + _TAINTS.format(o="oldObject") + " || "
     + _TAINTS.format(o="object") + " == " + _TAINTS.format(o="oldObject")
     + f".filter(t, t.key != '{L.TAINT_WARMING}')",
     f"kiln-model-warmup may only remove the {L.TAINT_WARMING} taint, and change no other taint"),
    *((_unchanged(path), f"kiln-model-warmup may not change {what}") for path, what in LOCKED_NODE_FIELDS),
)


def supports_admission_policy(kubernetes_version: str) -> bool:
    """ValidatingAdmissionPolicy v1 and node-bound service-account tokens: 1.30+."""
    major, minor = (int(x) for x in kubernetes_version.split(".")[:2])
    return (major, minor) >= (1, 30)


SELECTOR = {"app.kubernetes.io/name": NAME}
# Every container of the warm-up pod: no privilege, read-only root, nobody's uid, no capabilities.
_RESTRICTED = k8s.core.v1.SecurityContextArgs(
    allow_privilege_escalation=False, read_only_root_filesystem=True, run_as_non_root=True,
    run_as_user=65534, run_as_group=65534,
    capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
    seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
)


def _tolerations(group_taints: tuple[tuple[str, str], ...]) -> list[k8s.core.v1.TolerationArgs]:
    """The warming taint, and every other taint of the node groups: the pod must run on every model node."""
    tolerations = [k8s.core.v1.TolerationArgs(key=L.TAINT_WARMING, operator="Exists", effect=L.TAINT_WARMING_EFFECT)]
    for key, effect in sorted(set(group_taints)):
        if key != L.TAINT_WARMING:
            tolerations.append(k8s.core.v1.TolerationArgs(key=key, operator="Exists", effect=effect))
    return tolerations


def _warm_container() -> k8s.core.v1.ContainerArgs:
    """The agent (init container): reads the model once from the read-only hostPath, then untaints its node."""
    return k8s.core.v1.ContainerArgs(
        name="warm-model",
        image=AGENT_IMAGE,
        command=["python", "-u", "/agent/warmup_agent.py"],
        env=[
            # Downward API: the node this pod was scheduled to.
            k8s.core.v1.EnvVarArgs(name="NODE_NAME", value_from=k8s.core.v1.EnvVarSourceArgs(
                field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path="spec.nodeName"))),
            k8s.core.v1.EnvVarArgs(name="MODEL_PATH", value=MOUNT),
            k8s.core.v1.EnvVarArgs(name="TAINT_KEY", value=L.TAINT_WARMING),
            # The model on disk must be the version this label names (checked before untaint).
            k8s.core.v1.EnvVarArgs(name="VERSION_LABEL", value=L.LABEL_MODEL_VERSION),
            # Why the agent refused to untaint, shown as the container's exit message.
            k8s.core.v1.EnvVarArgs(name="TERMINATION_LOG", value="/dev/termination-log"),
        ],
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(name="model", mount_path=MOUNT, read_only=True,
                                        mount_propagation="HostToContainer"),
            k8s.core.v1.VolumeMountArgs(name="agent", mount_path="/agent", read_only=True),
        ],
        security_context=_RESTRICTED,
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": "100m", "memory": "64Mi"}, limits={"memory": "256Mi"}),
    )


@dataclass(frozen=True)
class ModelWarmupArgs:
    model_path: str
    kubernetes_version: str
    # Taints the node groups carry besides the warming taint (e.g. nvidia.com/gpu): the
    # DaemonSet must tolerate them to run on every model node.
    group_taints: tuple[tuple[str, str], ...] = ()   # (key, effect)


class ModelWarmup(pulumi.ComponentResource):
    """ServiceAccount, RBAC, admission policy, agent ConfigMap and the DaemonSet."""

    def __init__(self, name: str, args: ModelWarmupArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:ModelWarmup", name, None, opts)
        meta = k8s.meta.v1.ObjectMetaArgs(name=NAME, namespace=NAMESPACE, labels={"app.kubernetes.io/name": NAME})
        guards: list[pulumi.Resource] = [self._rbac(name, meta)]
        if supports_admission_policy(args.kubernetes_version):
            guards += self._admission_policy(name)
        agent_source = AGENT_SOURCE.read_text()
        script = k8s.core.v1.ConfigMap(
            f"{name}-agent", metadata=meta, data={"warmup_agent.py": agent_source}, opts=pulumi.ResourceOptions(parent=self),
        )
        self.daemon_set = k8s.apps.v1.DaemonSet(
            f"{name}-ds",
            metadata=meta,
            spec=k8s.apps.v1.DaemonSetSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=SELECTOR),
                update_strategy=k8s.apps.v1.DaemonSetUpdateStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDaemonSetArgs(max_unavailable="25%"),
                ),
                template=self._pod_template(args, agent_source),
            ),
            # The agent starts only once its permissions (and their guard) and its script exist.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*guards, script]),
        )
        self.register_outputs({"daemonSet": self.daemon_set.metadata.name})

    def _rbac(self, name: str, meta: k8s.meta.v1.ObjectMetaArgs) -> pulumi.Resource:
        """The agent's identity and the narrowest RBAC it can have (get/patch nodes; see the module docstring).
        Returns the binding: the DaemonSet waits for it."""
        child = pulumi.ResourceOptions(parent=self)
        sa = k8s.core.v1.ServiceAccount(f"{name}-sa", metadata=meta, automount_service_account_token=True, opts=child)
        self.cluster_role = k8s.rbac.v1.ClusterRole(
            f"{name}-role",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME),
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["nodes"], verbs=["get", "patch"])],
            opts=child,
        )
        return k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-binding",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME),
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=NAME),
            subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=NAME, namespace=NAMESPACE)],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cluster_role, sa]),
        )

    @staticmethod
    def _pod_template(args: ModelWarmupArgs, agent_source: str) -> k8s.core.v1.PodTemplateSpecArgs:
        """The warm-up pod: on kiln's model nodes only, tolerating their taints, the warm-up as an init container
        and a pause container that stays so a warm node is not warmed again."""
        return k8s.core.v1.PodTemplateSpecArgs(
            # A new agent rolls the DaemonSet (a ConfigMap edit alone would not).
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=SELECTOR, annotations={
                "kiln.dev/agent-sha256": hashlib.sha256(agent_source.encode()).hexdigest()}),
            spec=k8s.core.v1.PodSpecArgs(
                service_account_name=NAME,
                priority_class_name="system-node-critical",
                # Only kiln's model nodes.
                affinity=k8s.core.v1.AffinityArgs(node_affinity=k8s.core.v1.NodeAffinityArgs(
                    required_during_scheduling_ignored_during_execution=k8s.core.v1.NodeSelectorArgs(
                        node_selector_terms=[k8s.core.v1.NodeSelectorTermArgs(match_expressions=[
                            k8s.core.v1.NodeSelectorRequirementArgs(key=L.LABEL_MODEL_VERSION, operator="Exists"),
                        ])]))),
                tolerations=_tolerations(args.group_taints),
                init_containers=[_warm_container()],
                containers=[k8s.core.v1.ContainerArgs(
                    # Stays, so the DaemonSet does not re-run the warm-up on a warm node.
                    name="done", image=PAUSE_IMAGE, security_context=_RESTRICTED,
                    resources=k8s.core.v1.ResourceRequirementsArgs(
                        requests={"cpu": "1m", "memory": "8Mi"}, limits={"memory": "16Mi"}),
                )],
                volumes=[
                    k8s.core.v1.VolumeArgs(name="model", host_path=k8s.core.v1.HostPathVolumeSourceArgs(
                        path=args.model_path, type="Directory")),
                    k8s.core.v1.VolumeArgs(name="agent", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                        name=NAME)),
                ],
            ),
        )

    def _admission_policy(self, name: str) -> list[pulumi.Resource]:
        child = pulumi.ResourceOptions(parent=self)
        policy = k8s.admissionregistration.v1.ValidatingAdmissionPolicy(
            f"{name}-policy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME),
            spec=k8s.admissionregistration.v1.ValidatingAdmissionPolicySpecArgs(
                failure_policy="Fail",
                match_constraints=k8s.admissionregistration.v1.MatchResourcesArgs(resource_rules=[
                    k8s.admissionregistration.v1.NamedRuleWithOperationsArgs(
                        api_groups=[""], api_versions=["v1"], operations=["UPDATE"], resources=["nodes"]),
                ]),
                match_conditions=[k8s.admissionregistration.v1.MatchConditionArgs(
                    name="is-kiln-model-warmup",
                    expression=f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:{NAME}'",
                )],
                validations=[k8s.admissionregistration.v1.ValidationArgs(expression=e, message=m)
                             for e, m in POLICY_VALIDATIONS],
            ),
            opts=child,
        )
        binding = k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(
            f"{name}-policy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME),
            spec=k8s.admissionregistration.v1.ValidatingAdmissionPolicyBindingSpecArgs(
                policy_name=NAME, validation_actions=["Deny"]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        return [policy, binding]
