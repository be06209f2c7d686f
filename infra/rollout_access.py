"""Kubernetes access for the rollout role: an EKS access entry and RBAC for exactly what a drain needs.

The rollout (``automation/rollout/kube.py``) lists nodes, pods, Jobs and PDBs,
cordons/taints nodes (never deletes one: Auto Scaling terminates the instance and
the node object goes with it), evicts pods, records Events about them, holds a
Lease in kube-system and pauses cluster-autoscaler by scaling its Deployment;
``rotate``/``rollback``/``guard`` read and write the rotation's intent, one
ConfigMap in kube-system (``automation/rotate/state.py``). The access entry maps
the rollout role to one Kubernetes group; the group gets those verbs and no others
(no secrets, no pod exec, no writes outside nodes, evictions, Events, its own Lease
and its own ConfigMap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.autoscaler import NAME as AUTOSCALER_NAME
from infra.autoscaler import NAMESPACE as AUTOSCALER_NAMESPACE
from infra.ci_roles import CI_READ_GROUP, ROTATION_GROUP, view_association
from infra.labels import ROTATION_NAMESPACE, rotation_configmap

GROUP = "kiln-rollout"
# automation/rollout/kube.py DEFAULT_LEASE_NAMESPACE / DEFAULT_LEASE_NAME (a test keeps them equal).
LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "kiln-rollout"

CLUSTER_RULES = (
    ("", "nodes", ("get", "list", "watch", "patch"), ()),
    ("", "pods", ("get", "list", "watch"), ()),
    ("", "pods/eviction", ("create",), ()),
    # A Job's annotation may extend its pods' rollout deadline: the adapter lists Jobs with the pods.
    ("batch", "jobs", ("list",), ()),
    ("policy", "poddisruptionbudgets", ("get", "list", "watch"), ()),
    # Events on the nodes and pods it drains (why it waits, what it did); a repeat updates the series.
    ("events.k8s.io", "events", ("create", "patch"), ()),
)
# (api group, resource, verbs, resource names) in kube-system.
NAMESPACE_RULES = (
    ("apps", "deployments/scale", ("get", "patch"), (AUTOSCALER_NAME,)),
    ("coordination.k8s.io", "leases", ("get", "patch"), (LEASE_NAME,)),
    ("coordination.k8s.io", "leases", ("create",), ()),  # create cannot be limited by name
)


def namespace_rules(stack: str) -> tuple:
    """NAMESPACE_RULES, plus the rotation's intent (``rotate``, ``rollback``, ``guard``): its one ConfigMap."""
    return NAMESPACE_RULES + (
        ("", "configmaps", ("get", "patch"), (rotation_configmap(stack),)),
        ("", "configmaps", ("create",), ()),   # create cannot be limited by name; the rotation creates it once
    )


def _rules(rules) -> list[k8s.rbac.v1.PolicyRuleArgs]:
    return [k8s.rbac.v1.PolicyRuleArgs(api_groups=[g], resources=[r], verbs=list(v),
                                       resource_names=list(n) or None) for g, r, v, n in rules]


@dataclass(frozen=True)
class RolloutAccessArgs:
    cluster_name: pulumi.Input[str]
    principal_arn: pulumi.Input[str]
    k8s_provider: k8s.Provider
    tags: dict[str, str] = field(default_factory=dict)
    stack: Optional[str] = None    # names the rotation's ConfigMap (default: this Pulumi stack)
    # kiln:ciOidc.rotation: the role is also the CI rotation role, whose gated `pulumi up` refreshes and replaces the
    # model volume: the groups of infra/ci_roles.py (reads, model PV/PVC) and AmazonEKSViewPolicy.
    ci_rotation: bool = False


class RolloutClusterAccess(pulumi.ComponentResource):
    def __init__(self, name: str, args: RolloutAccessArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:RolloutClusterAccess", name, None, opts)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        self.access_entry = aws.eks.AccessEntry(
            name,
            cluster_name=args.cluster_name,
            principal_arn=args.principal_arn,
            type="STANDARD",
            kubernetes_groups=[GROUP, *((CI_READ_GROUP, ROTATION_GROUP) if args.ci_rotation else ())],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        subject = [k8s.rbac.v1.SubjectArgs(kind="Group", name=GROUP, api_group="rbac.authorization.k8s.io")]
        cluster_role = k8s.rbac.v1.ClusterRole(
            name, metadata=k8s.meta.v1.ObjectMetaArgs(name=GROUP), rules=_rules(CLUSTER_RULES), opts=on_cluster)
        k8s.rbac.v1.ClusterRoleBinding(
            name, metadata=k8s.meta.v1.ObjectMetaArgs(name=GROUP), subjects=subject,
            role_ref=k8s.rbac.v1.RoleRefArgs(kind="ClusterRole", name=cluster_role.metadata.name,
                                             api_group="rbac.authorization.k8s.io"),
            opts=on_cluster)
        if not LEASE_NAMESPACE == AUTOSCALER_NAMESPACE == ROTATION_NAMESPACE:  # one Role covers all three
            raise AssertionError("the Lease, cluster-autoscaler and the rotation intent must share a namespace")
        role = k8s.rbac.v1.Role(
            f"{name}-kube-system",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=GROUP, namespace=LEASE_NAMESPACE),
            rules=_rules(namespace_rules(args.stack or pulumi.get_stack())), opts=on_cluster)
        k8s.rbac.v1.RoleBinding(
            f"{name}-kube-system",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=GROUP, namespace=LEASE_NAMESPACE), subjects=subject,
            role_ref=k8s.rbac.v1.RoleRefArgs(kind="Role", name=role.metadata.name,
                                             api_group="rbac.authorization.k8s.io"),
            opts=on_cluster)
        if args.ci_rotation:
            view_association(f"{name}-view", args.cluster_name, self.access_entry, self)
        self.register_outputs({"accessEntry": self.access_entry.access_entry_arn})
