"""The Kubernetes rules, the safe-to-evict rule and the launch-template rule, each decision with its exact messages.

Written against the survivors of a mutmut run on ``policies/rules/kubernetes.py``, ``safe_to_evict.py`` and
``launch_templates.py`` (issue 15): every test states what a rule reports for one crafted resource — called as
the SDK calls it (tests/_policy_helpers.py) — and pins the exact violation messages an operator reads. Equivalent
mutants (no input tells them apart) are listed with a reason in tests/mutation/equivalent.txt.
"""

from __future__ import annotations

import pytest
from pulumi_policy.proxy import UnknownValueError

from _policy_helpers import UNKNOWN, resource, stack_violations, violations

# --------------------------------------------------------------------------- launch templates: model volume init rate

LT = "aws:ec2/launchTemplate:LaunchTemplate"
INIT_RATE = "lt-model-volume-init-rate"


def rate_message(device="/dev/xvdb"):
    return (f"model volume {device} needs ebs.volumeInitializationRate between 100 and 300 MiB/s "
            "(a volume restored from a snapshot otherwise reads cold at ~9 MB/s)")


def lt(*mappings):
    return {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSize": 100}}, *mappings]}


def model_volume(rate, device="/dev/xvdb"):
    return {"deviceName": device, "ebs": {"encrypted": "true", **({} if rate is None else {
        "volumeInitializationRate": rate})}}


@pytest.mark.parametrize("rate", [100, 100.0, 200, 300, "150"])
def test_init_rate_within_100_to_300_passes(rate):
    assert violations(INIT_RATE, LT, lt(model_volume(rate))) == []


@pytest.mark.parametrize("rate", [None, 99, 99.9, 300.5, 301, 0, -200, "fast", True])
def test_init_rate_missing_outside_or_not_a_number_is_reported_once(rate):
    assert violations(INIT_RATE, LT, lt(model_volume(rate))) == [rate_message()]


def test_init_rate_without_ebs_block_is_reported():
    assert violations(INIT_RATE, LT, lt({"deviceName": "/dev/xvdb"})) == [rate_message()]


def test_no_model_volume_mapping_is_reported_with_the_device():
    assert violations(INIT_RATE, LT, lt()) == ["no block device mapping for the model volume /dev/xvdb"]
    assert violations(INIT_RATE, LT, {}) == ["no block device mapping for the model volume /dev/xvdb"]
    assert violations(INIT_RATE, LT, lt(model_volume(200, device="/dev/xvdc"))) == [
        "no block device mapping for the model volume /dev/xvdb"]


def test_only_the_first_mapping_of_the_model_device_is_judged():
    assert violations(INIT_RATE, LT, lt(model_volume(200), model_volume(None))) == []
    assert violations(INIT_RATE, LT, lt(model_volume(None), model_volume(200))) == [rate_message()]


def test_configured_model_volume_device_is_the_one_judged():
    cfg = {"modelVolumeDevice": "/dev/xvdc"}
    assert violations(INIT_RATE, LT, lt(model_volume(200, device="/dev/xvdc")), config=cfg) == []
    assert violations(INIT_RATE, LT, lt(model_volume(50, device="/dev/xvdc")), config=cfg) == [
        rate_message("/dev/xvdc")]
    assert violations(INIT_RATE, LT, lt(model_volume(200)), config=cfg) == [
        "no block device mapping for the model volume /dev/xvdc"]


def test_unset_device_config_falls_back_to_the_kiln_default():
    assert violations(INIT_RATE, LT, lt(model_volume(200)), config={"modelVolumeDevice": None}) == []
    assert violations(INIT_RATE, LT, lt(), config={"modelVolumeDevice": None}) == [
        "no block device mapping for the model volume /dev/xvdb"]


@pytest.mark.parametrize("type_", ["aws:ec2/instance:Instance", "aws:ec2/launchTemplate:LaunchTemplatePatch",
                                   "kubernetes:core/v1:Pod"])
def test_init_rate_judges_only_launch_templates(type_):
    assert violations(INIT_RATE, type_, lt()) == []


# --------------------------------------------------------------------------- k8s-no-cluster-admin-binding

ADMIN = "k8s-no-cluster-admin-binding"
RBAC = "kubernetes:rbac.authorization.k8s.io/v1:"
ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
EKS = "eks:index:Cluster"
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy"
ROLE_X = "arn:aws:iam::111122223333:role/x"
ONLY_CI = ("; only kiln's CI deploy access (kiln:ciOidc) and the principals in allowedPrincipalArns may hold "
           "cluster admin")
EVERYONE = ": everyone who reaches the API server"


def binding(kind, role_kind, role_name, *subjects):
    return violations(ADMIN, f"{RBAC}{kind}", {"roleRef": {"kind": role_kind, "name": role_name},
                                               "subjects": [{"kind": k, "name": n} for k, n in subjects]})


def test_binding_cluster_admin_in_any_binding_kind():
    for kind in ("ClusterRoleBinding", "RoleBinding", "RoleBindingPatch"):
        assert binding(kind, "ClusterRole", "cluster-admin") == [
            "binds ClusterRole 'cluster-admin' (every verb on every resource)"]
    assert binding("RoleBinding", "Role", "cluster-admin") == []  # a namespaced Role of that name is no admin


def test_admin_and_edit_only_cluster_wide():
    wide = ("cluster-wide: every namespace's Secrets and service accounts (kube-system's included); bind it in one "
            "namespace with a RoleBinding")
    assert binding("ClusterRoleBinding", "ClusterRole", "admin") == [f"binds ClusterRole 'admin' {wide}"]
    assert binding("ClusterRoleBindingPatch", "ClusterRole", "edit") == [f"binds ClusterRole 'edit' {wide}"]
    assert binding("RoleBinding", "ClusterRole", "admin") == []
    assert binding("ClusterRoleBinding", "Role", "edit") == []
    assert binding("ClusterRoleBinding", "ClusterRole", "view") == []


def test_subjects_that_bypass_rbac_or_are_everyone():
    assert binding("RoleBinding", "Role", "r", ("Group", "system:masters"), ("User", "system:masters"),
                   ("Group", "system:authenticated"), ("Group", "system:unauthenticated"),
                   ("User", "system:anonymous"), ("Group", "system:anonymous"), ("ServiceAccount", "system:anonymous"),
                   ("User", "system:authenticated")) == [
        "binds group 'system:masters', which bypasses RBAC",
        f"binds Group 'system:authenticated'{EVERYONE}", f"binds Group 'system:unauthenticated'{EVERYONE}",
        f"binds User 'system:anonymous'{EVERYONE}"]
    assert binding("ClusterRoleBinding", "ClusterRole", "cluster-admin", ("Group", "system:masters")) == [
        "binds ClusterRole 'cluster-admin' (every verb on every resource)",
        "binds group 'system:masters', which bypasses RBAC"]


def roles(*rules, kind="ClusterRole"):
    return violations(ADMIN, f"{RBAC}{kind}", {"rules": list(rules)})


def test_wildcard_rules_are_cluster_admin_and_stop_there():
    every = "(cluster-admin by another name: Secrets, pods/exec, the node's kubelet)"
    assert roles({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}) == [
        f"rules[0] grants every verb on every resource of every API group {every}"]
    assert roles({"apiGroups": ["get"], "resources": ["x"], "verbs": ["get"]},
                 {"apiGroups": [""], "resources": ["*"], "verbs": ["*"]}, kind="Role") == [
        f"rules[1] grants every verb on every resource of [''] {every}"]
    assert roles({"apiGroups": "apps", "resources": "*", "verbs": "*"}, kind="RolePatch") == [
        f"rules[0] grants every verb on every resource of ['apps'] {every}"]


def test_escalation_verbs_on_what_they_escalate():
    more = ": the subject can grant itself more"
    assert roles({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "clusterroles", "pods"],
                  "verbs": ["escalate", "bind", "impersonate"]}) == [
        f"rules[0] grants 'escalate' on roles, clusterroles{more}", f"rules[0] grants 'bind' on roles, clusterroles{more}"]
    assert roles({"apiGroups": [""], "resources": ["users", "serviceaccounts", "roles"], "verbs": ["impersonate"]}) == [
        f"rules[0] grants 'impersonate' on users, serviceaccounts{more}"]
    assert roles({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["*"], "verbs": ["bind"]}) == [
        f"rules[0] grants 'bind' on *{more}"]
    assert roles({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["*"]}) == [
        f"rules[0] grants 'escalate' on clusterroles{more}", f"rules[0] grants 'bind' on clusterroles{more}"]
    assert roles({"apiGroups": [""], "resources": ["groups", "uids", "userextras"], "verbs": ["get", "list"]}) == []


def test_the_kubelet_api_through_nodes_proxy():
    proxy = "rules[0] grants nodes/proxy: the kubelet API runs commands in every pod on the node"
    for resources, verbs in ((["nodes/proxy"], ["get"]), (["nodes/*"], ["create"]), (["nodes/proxy"], ["*"]),
                             (["pods", "nodes/proxy"], ["list", "get"])):
        assert roles({"apiGroups": [""], "resources": resources, "verbs": verbs}) == [proxy]
    assert roles({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}) == [proxy]  # every core resource
    assert roles({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}) == []
    assert roles({"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["list", "watch"]}) == []
    assert roles({"apiGroups": [""], "resources": ["nodes", "nodes/status"], "verbs": ["get"]}) == []


def association(policy, principal=ROLE_X, scope=None, **kw):
    return violations(ADMIN, ASSOCIATION, {"principalArn": principal, "policyArn": policy,
                                           **({"accessScope": {"type": scope}} if scope else {})}, **kw)


def test_admin_access_policies_and_their_scope():
    assert association(CLUSTER_ADMIN_POLICY, scope="namespace") == [
        f"associates {CLUSTER_ADMIN_POLICY} with {ROLE_X}{ONLY_CI}"]
    assert association(ADMIN_POLICY, scope="cluster") == [f"associates {ADMIN_POLICY} with {ROLE_X}{ONLY_CI}"]
    assert association(ADMIN_POLICY, scope="namespace") == []
    assert association(ADMIN_POLICY) == []
    assert association("AmazonEKSClusterAdminPolicy") == [f"associates AmazonEKSClusterAdminPolicy with {ROLE_X}{ONLY_CI}"]
    assert association("arn:aws:eks::aws:cluster-access-policy/AmazonEKSEditPolicy", scope="cluster") == []
    assert association(7) == []
    assert association("arn:aws:eks::aws:cluster-access-policy/x/AmazonEKSClusterAdminPolicy") == [
        f"associates arn:aws:eks::aws:cluster-access-policy/x/AmazonEKSClusterAdminPolicy with {ROLE_X}{ONLY_CI}"]


def test_admin_association_to_an_allowed_or_unknown_principal():
    allowed = {"allowedPrincipalArns": [ROLE_X]}
    assert association(CLUSTER_ADMIN_POLICY, config=allowed) == []
    assert association(CLUSTER_ADMIN_POLICY, principal="arn:aws:iam::111122223333:role/y", config=allowed) == [
        f"associates {CLUSTER_ADMIN_POLICY} with arn:aws:iam::111122223333:role/y{ONLY_CI}"]
    assert association(CLUSTER_ADMIN_POLICY, principal=UNKNOWN) == [
        f"associates {CLUSTER_ADMIN_POLICY} with a principal not known yet{ONLY_CI}"]
    with pytest.raises(UnknownValueError):  # it may turn out to be the allowed one
        association(CLUSTER_ADMIN_POLICY, principal=UNKNOWN, config=allowed)
    assert association(CLUSTER_ADMIN_POLICY, config={"allowedPrincipalArns": None}) == [
        f"associates {CLUSTER_ADMIN_POLICY} with {ROLE_X}{ONLY_CI}"]


def test_access_entries_mapped_to_system_masters():
    entry = {"principalArn": ROLE_X, "kubernetesGroups": ["readers", "system:masters"]}
    assert violations(ADMIN, ACCESS_ENTRY, entry) == [f"maps {ROLE_X} to system:masters"]
    assert violations(ADMIN, ACCESS_ENTRY, {**entry, "kubernetesGroups": "system:masters"}) == [
        f"maps {ROLE_X} to system:masters"]
    assert violations(ADMIN, ACCESS_ENTRY, {**entry, "kubernetesGroups": ["readers"]}) == []
    assert violations(ADMIN, ACCESS_ENTRY, entry, config={"allowedPrincipalArns": [ROLE_X]}) == []
    assert violations(ADMIN, ACCESS_ENTRY, {**entry, "principalArn": UNKNOWN}) == [
        "maps a principal not known yet to system:masters"]
    with pytest.raises(UnknownValueError):
        violations(ADMIN, ACCESS_ENTRY, {**entry, "principalArn": UNKNOWN}, config={"allowedPrincipalArns": [ROLE_X]})


def eks(**props):
    return violations(ADMIN, EKS, props)


def test_eks_component_access_entries_and_aws_auth_mappings():
    ops = "arn:aws:iam::111122223333:role/ops"
    entry = {"principalArn": ops, "kubernetesGroups": ["system:masters"], "accessPolicies": {
        "view": {"policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"},
        "admin": {"policyArn": CLUSTER_ADMIN_POLICY}, "ns": {"policyArn": ADMIN_POLICY, "accessScope": {"type": "namespace"}},
        "wide": {"policyArn": ADMIN_POLICY, "accessScope": {"type": "cluster"}}}}
    assert eks(accessEntries={"ops": entry}, roleMappings=[{"groups": ["x"]}, {"groups": ["system:masters"]}],
               userMappings=[{"groups": "system:masters"}]) == [
        f"accessEntries.ops associates {CLUSTER_ADMIN_POLICY} with {ops}",
        f"accessEntries.ops associates {ADMIN_POLICY} with {ops}",
        f"accessEntries.ops maps {ops} to system:masters",
        "roleMappings[1] maps a principal to system:masters", "userMappings[0] maps a principal to system:masters"]
    assert violations(ADMIN, EKS, {"accessEntries": {"ops": entry}}, config={"allowedPrincipalArns": [ops]}) == []
    assert eks(accessEntries={"ops": {**entry, "kubernetesGroups": ["readers"], "accessPolicies": [
        {"policyArn": CLUSTER_ADMIN_POLICY}]}}) == []
    assert eks(accessEntries=[entry]) == []
    assert eks(roleMappings=[{"groups": ["readers"]}], userMappings=[{"groups": []}]) == []


# --------------------------------------------------------------------------- k8s-job-safe-to-evict-false

SAFE_TO_EVICT = "k8s-job-safe-to-evict-false"
CONFIG_GROUP = "kubernetes:yaml/v2:ConfigGroup"
ARGO_WORKFLOW = "kubernetes:argoproj.io/v1alpha1:Workflow"
ANNOTATION = "annotations[cluster-autoscaler.kubernetes.io/safe-to-evict]"
WHY = 'it must be "false" so cluster-autoscaler never scales the node down under the running Job'
NOT_SET = f"is missing and spec.podMetadata does not set it; {WHY}"


def test_one_yaml_document_is_judged_and_named_by_kind_and_name():
    job = "apiVersion: batch/v1\nkind: Job\nmetadata: {}\nspec:\n  template:\n    spec:\n      containers: [{name: a}]\n"
    assert violations(SAFE_TO_EVICT, CONFIG_GROUP, {"yaml": job}) == [
        f"yaml Job/?: spec.template.metadata.{ANNOTATION} is missing; {WHY}"]


def test_an_argo_workflow_in_yaml_is_judged_by_its_api_version():
    wf = ("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\n"
          "spec:\n  templates: [{container: {image: x}}]\n")
    assert violations(SAFE_TO_EVICT, CONFIG_GROUP, {"yaml": wf}) == [f"yaml Workflow/wf: spec.templates[0].metadata.{ANNOTATION} {NOT_SET}"]


def test_a_yaml_kind_that_is_not_a_string_is_no_job():
    assert violations(SAFE_TO_EVICT, CONFIG_GROUP, {"yaml": "apiVersion: argoproj.io/v1alpha1\nkind: {a: 1}\n---\n"
                                                           "apiVersion: argoproj.io/v1alpha1\nkind: [Workflow]\n"}) == []


def test_a_workflow_kind_of_another_group_is_a_job_whose_pod_templates_are_looked_for():
    assert violations(SAFE_TO_EVICT, "kubernetes:example.com/v1:Workflow", {"spec": {"templates": [
        {"name": "t", "container": {"image": "x"}}]}}) == [
        "no pod template found (spec.template, spec.jobTemplate.spec.template, spec.<x>ReplicaSpecs.<role>.template, "
        "...), so its pods cannot be checked for cluster-autoscaler.kubernetes.io/safe-to-evict: \"false\""]


def test_argo_templates_from_elsewhere_only_through_templates_or_the_workflow_template_ref():
    own = {"name": "t", "container": {"image": "x"}}
    assert violations(SAFE_TO_EVICT, ARGO_WORKFLOW, {"spec": {"arguments": {"templateRef": {"name": "x"}},
                                                               "templates": [own]}}) == [
        f"spec.templates[0] (t).metadata.{ANNOTATION} {NOT_SET}"]
    elsewhere = (f"spec.podMetadata.{ANNOTATION} is missing; {WHY} (the pods of templates a WorkflowTemplate "
                 "declares get only this)")
    assert violations(SAFE_TO_EVICT, ARGO_WORKFLOW, {"spec": {"workflowTemplateRef": {"name": "x"}}}) == [elsewhere]
    assert violations(SAFE_TO_EVICT, ARGO_WORKFLOW, {"spec": {"templates": [
        {"container": {"image": "x"}}, {"name": "s", "steps": [[{"name": "a", "templateRef": {"name": "x"}}]]}]}}) == [
        elsewhere, f"spec.templates[0].metadata.{ANNOTATION} {NOT_SET}"]


def test_an_argo_workflow_without_a_pod_template_is_not_passed():
    assert violations(SAFE_TO_EVICT, ARGO_WORKFLOW, {"spec": {"templates": [{"name": "s", "steps": []}]}}) == [
        "spec declares no template that runs a pod (container, script, containerSet, resource, data) and no "
        f"spec.podMetadata.{ANNOTATION}: \"false\", so its pods cannot be checked"]


# --------------------------------------------------------------------------- k8s-hostpath-model-only-readonly

HOSTPATH = "k8s-hostpath-model-only-readonly"
PRIVILEGED = "k8s-no-privileged-or-host-namespaces"
POD = "kubernetes:core/v1:Pod"
PV = "kubernetes:core/v1:PersistentVolume"
THING = "kubernetes:example.com/v1:Thing"
OUTSIDE = "outside the model path /opt/models"


def test_a_host_volume_and_its_mount_at_the_top_level_of_a_custom_resource():
    assert violations(HOSTPATH, THING, {"volumes": [{"name": "m", "hostPath": {"path": "/etc"}}],
                                        "volumeMounts": [{"name": "m"}]}) == [
        f"volumes[0]: volume 'm' mounts host path '/etc', {OUTSIDE}",
        "(top level) mounts host path volume 'm' without readOnly: true"]


def test_a_host_path_without_a_path_and_paths_that_are_not_normalised():
    assert violations(HOSTPATH, POD, {"spec": {"volumes": [
        {"name": "a", "hostPath": {}}, {"name": "b", "local": {}}, {"name": "c", "hostPath": {"path": "/./opt/models"}},
        {"name": "d", "hostPath": {"path": "/opt/models/"}}, {"name": "e", "hostPath": {"path": "/opt/models/.X"}}]}}) == [
        f"spec.volumes[0]: volume 'a' mounts host path None, {OUTSIDE}",
        "spec.volumes[2]: volume 'c' mounts host path '/./opt/models', which is not a normalised path ('.', '..' and "
        "'//' are resolved by the node, through symlinks, not by this rule); write it as '/opt/models'"]


def test_a_model_path_that_is_relative_or_a_system_directory_allows_nothing():
    pod = {"spec": {"volumes": [{"name": "c", "hostPath": {"path": "/opt/models"}}]}}
    assert violations(HOSTPATH, POD, pod, config={"modelPath": "relative"}) == [
        "the model path 'relative' must be an absolute path: no host path can be allowed under it"]
    assert violations(HOSTPATH, POD, pod, config={"modelPath": "/etc"}) == [
        "the model path '/etc' is inside /etc, a system directory the node needs: no host path can be allowed under it"]
    assert violations(HOSTPATH, POD, pod, config={"modelPath": None}) == []  # unset: the stack's, else /opt/models


def test_persistent_volume_messages_name_the_path_once():
    assert violations(HOSTPATH, PV, {"spec": {"accessModes": ["ReadOnlyMany"], "hostPath": {"path": "/srv, outside"}}}) == [
        f"hostPath '/srv, outside' is {OUTSIDE}"]


def test_only_other_objects_of_kind_persistent_volume_are_judged_as_volumes():
    assert violations(HOSTPATH, THING, {"kind": "PersistentVolume", "spec": {"hostPath": {"path": "/opt/models"}}}) == []
    yaml = ("kind: Thing\nspec: {hostPath: {path: /opt/models}}\n---\nkind: PersistentVolume\nmetadata: {name: pv}\n"
            "spec: {hostPath: {path: /opt/models/v1}, accessModes: [ReadWriteMany]}\n")
    assert violations(HOSTPATH, CONFIG_GROUP, {"yaml": yaml}) == [
        "PersistentVolume 'pv': a hostPath volume must be ReadOnlyMany only, has accessModes ['ReadWriteMany']"]


def test_yaml_that_cannot_be_parsed_is_reported_by_both_rules():
    for rule in (HOSTPATH, PRIVILEGED):
        assert violations(rule, CONFIG_GROUP, {"yaml": "kind: [\n"}) == [
            "yaml cannot be parsed (ParserError), so what it declares cannot be checked"]


def test_only_a_config_group_s_yaml_is_read_as_manifests():
    assert violations(PRIVILEGED, POD, {"yaml": "kind: Pod\nspec: {hostPID: true}\n"}) == []


def test_a_pod_spec_patch_written_as_text_is_judged_or_reported_unreadable():
    wf = "kubernetes:argoproj.io/v1alpha1:Workflow"
    assert violations(PRIVILEGED, wf, {"spec": {"templates": [{"name": "t", "podSpecPatch": "hostPID: true\n"}]}}) == [
        "podSpecPatch.hostPID: true shares the node's processes with the pod"]
    assert violations(PRIVILEGED, wf, {"spec": {"templates": [{"name": "t", "podSpecPatch": "hostPID: [\n"}]}}) == [
        "spec.templates[0].podSpecPatch cannot be parsed (ParserError), so what it adds to the pod cannot be checked"]


def test_an_unknown_harmless_value_does_not_hide_the_keys_after_it():
    assert violations(PRIVILEGED, POD, {"spec": {"containers": [
        {"name": "a", "image": UNKNOWN, "securityContext": {"privileged": True}}]}}) == [
        "spec.containers[0].securityContext.privileged: true gives the container the node"]


# --------------------------------------------------------------------------- k8s-no-privileged-or-host-namespaces

def context(sc):
    return violations(PRIVILEGED, POD, {"spec": {"containers": [{"name": "a", "securityContext": sc}]}})


def test_every_security_context_problem_with_its_message():
    at = "spec.containers[0].securityContext"
    assert context({"seLinuxOptions": {"type": "spc_t", "user": "u", "role": "r"}, "procMount": "Unmasked",
                    "seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "unconfined"},
                    "windowsOptions": {"hostProcess": True},
                    "sysctls": [{"name": "kernel.msgmax"}, {"name": "net.ipv4.tcp_syncookies"}, {"name": "vm.x"}],
                    "capabilities": {"add": ["cap_net_admin", "CHOWN", " sys_time "]}, "privileged": True}) == [
        f"{at}.privileged: true gives the container the node",
        f"{at}.capabilities.add grants NET_ADMIN, SYS_TIME (beyond Pod Security's baseline)",
        f"{at}.procMount: Unmasked unmasks the node's /proc",
        f"{at}.seccompProfile.type: Unconfined turns off the runtime's seccomp filter",
        f"{at}.appArmorProfile.type: Unconfined turns off the runtime's appArmor filter",
        f"{at}.seLinuxOptions.type 'spc_t' is not a container type (spc_t is unconfined)",
        f"{at}.seLinuxOptions.user may not be set (Pod Security baseline)",
        f"{at}.seLinuxOptions.role may not be set (Pod Security baseline)",
        f"{at}.windowsOptions.hostProcess: true runs the container as a process of the node",
        f"{at}.sysctls sets kernel.msgmax, vm.x, which are not safe for a pod (they reach the node)"]


def test_what_the_baseline_security_context_allows():
    assert context({"seLinuxOptions": {"level": "s0:c1"}, "procMount": "Default", "privileged": "true",
                    "seccompProfile": {"type": "RuntimeDefault"}, "appArmorProfile": {},
                    "capabilities": {"add": ["NET_BIND_SERVICE"]}, "sysctls": [{"name": "net.ipv4.ping_group_range"}],
                    "windowsOptions": {"hostProcess": "true"}}) == []
    assert context({"seLinuxOptions": {"type": "container_t", "user": "", "role": None}}) == []


def test_host_ports_other_than_zero_and_annotations_that_turn_protections_off():
    assert violations(PRIVILEGED, POD, {"metadata": {"annotations": {
        "container.apparmor.security.beta.kubernetes.io/a": "Unconfined", "seccomp.security.alpha.kubernetes.io/pod": " unconfined",
        "container.seccomp.security.alpha.kubernetes.io/a": "unconfined", "x": "unconfined",
        "container.apparmor.security.beta.kubernetes.io/b": "runtime/default"}},
        "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 0}, {"containerPort": 81, "hostPort": 1},
                                                        {"hostPort": 2}]}]}}) == [
        "metadata.annotations.container.apparmor.security.beta.kubernetes.io/a: unconfined turns off AppArmor",
        "metadata.annotations.seccomp.security.alpha.kubernetes.io/pod: unconfined turns off seccomp",
        "metadata.annotations.container.seccomp.security.alpha.kubernetes.io/a: unconfined turns off seccomp",
        "spec.containers[0].ports[1].hostPort 1 binds the node's own port (Pod Security baseline)"]


def test_labels_and_annotations_count_only_under_metadata_at_any_depth():
    assert violations(PRIVILEGED, "kubernetes:apps/v1:Deployment", {"spec": {
        "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
        "annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"},
        "template": {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "Privileged"},
                                  "annotations": {"container.apparmor.security.beta.kubernetes.io/a": "unconfined"}}}}}) == [
        "spec.template.metadata.labels.pod-security.kubernetes.io/enforce: privileged lets any pod of the namespace in",
        "spec.template.metadata.annotations.container.apparmor.security.beta.kubernetes.io/a: unconfined turns off AppArmor"]
    assert violations(PRIVILEGED, "kubernetes:core/v1:Namespace", {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "baseline"}}}) == []


# --------------------------------------------------------------------------- k8s-job-requests-and-ttl, k8s-job-pod-failure-policy

JOB_HYGIENE = "k8s-job-requests-and-ttl"
FAILURE_POLICY = "k8s-job-pod-failure-policy"
TTL = "spec.ttlSecondsAfterFinished must be set so finished Jobs are cleaned up"
IGNORE_DISRUPTION = ("spec.podFailurePolicy should Ignore DisruptionTarget, so a drained node does not count against "
                     "the Job's backoffLimit")


def cron(job_spec):
    return {"spec": {"jobTemplate": {"spec": job_spec}}}


def test_a_cron_job_s_job_template_needs_requests_and_a_ttl():
    pod = {"initContainers": [{"resources": {"requests": {"cpu": "1"}}}],
           "containers": [{"name": "m", "resources": {"requests": {"memory": "1Gi"}}},
                          {"name": "n", "resources": {"limits": {"cpu": "1"}}}, {"resources": {"requests": {}}}],
           "ephemeralContainers": [{"name": "e"}]}
    assert violations(JOB_HYGIENE, "kubernetes:batch/v1:CronJob", cron({"template": {"spec": pod}})) == [
        TTL, "containers[1] (n) sets no resources.requests (cpu/memory)",
        "containers[2] (?) sets no resources.requests (cpu/memory)",
        "ephemeralContainers[0] (e) sets no resources.requests (cpu/memory)"]
    assert violations(JOB_HYGIENE, "kubernetes:batch/v1:CronJob", cron({"ttlSecondsAfterFinished": 0, "template": {
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}})) == []


def test_job_rules_judge_only_jobs_and_cron_jobs():
    props = {"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}}}
    for type_ in (POD, "kubernetes:batch/v1:JobPatch", THING):
        assert violations(JOB_HYGIENE, type_, props) == []
        assert violations(FAILURE_POLICY, type_, props) == []
    assert violations(FAILURE_POLICY, "kubernetes:batch/v1:CronJob", props) == [IGNORE_DISRUPTION]


def test_the_failure_policy_must_ignore_disruption_in_one_rule():
    def rules(*r):
        return violations(FAILURE_POLICY, "kubernetes:batch/v1:Job", {"spec": {"podFailurePolicy": {"rules": list(r)}}})
    assert rules({"action": "Ignore", "onPodConditions": [{"type": "ConfigIssue"}]},
                 {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}) == [IGNORE_DISRUPTION]
    assert rules({"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]},
                 {"action": "Ignore", "onPodConditions": [{"type": "ConfigIssue"}, {"type": "DisruptionTarget"}]}) == []
    assert violations(FAILURE_POLICY, "kubernetes:batch/v1:CronJob", cron({"podFailurePolicy": {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}})) == []


# --------------------------------------------------------------------------- k8s-ci-cluster-admin-only-for-the-ci-deploy-role

from pulumi_policy import StackValidationArgs  # noqa: E402

from _policy_helpers import POLICIES  # noqa: E402
from test_policies_kubernetes import (ACCOUNT, CI_ACCESS, CI_OIDC, CLUSTER_ADMIN, GITHUB, SUBJECT,  # noqa: E402
                                      ci_trust, grant, provider_arn, role, set_stack, stack_with_ci)  # noqa: F401

CI_ADMIN = "k8s-ci-cluster-admin-only-for-the-ci-deploy-role"
OTHER = f"arn:aws:iam::{ACCOUNT}:role/other"


def not_the_ci_role(whom, via=""):
    return (f"{CI_ACCESS} 'ci-access' associates {CLUSTER_ADMIN} with {whom}, which is not kiln's CI deploy role: no "
            f"role of this stack with that ARN trusts only {GITHUB} tokens, through its own account's IAM OIDC "
            f"provider{via}, for audience 'sts.amazonaws.com' and subject {SUBJECT!r} (kiln:ciOidc)")


def traced_grant(*sources, name="ci-access"):
    return resource(ASSOCIATION, name, {"principalArn": UNKNOWN, "policyArn": CLUSTER_ADMIN}, parent_type=CI_ACCESS,
                    property_dependencies={"principalArn": list(sources)})


def entry(name, *sources):
    return resource(ACCESS_ENTRY, name, {"principalArn": UNKNOWN}, property_dependencies={"principalArn": list(sources)})


def test_a_grant_to_an_arn_no_role_of_the_stack_has(stack_with_ci):
    ci = role("ci-deploy", ci_trust())
    found = stack_violations(CI_ADMIN, [ci, grant(OTHER)], with_urns=True)
    assert found == [(not_the_ci_role(OTHER), f"urn:pulumi:t::kiln::{CI_ACCESS}${ASSOCIATION}::ci-access")]
    set_stack({**CI_OIDC, "providerArn": provider_arn()})
    assert stack_violations(CI_ADMIN, [ci, grant(OTHER)]) == [not_the_ci_role(OTHER, f" {provider_arn()}")]


def test_every_grant_is_judged_after_one_that_passes_or_waits(stack_with_ci):
    ci = role("ci-deploy", ci_trust())
    assert stack_violations(CI_ADMIN, [ci, grant(ci.props["arn"], name="ok"), grant(OTHER)]) == [not_the_ci_role(OTHER)]
    found: list = []
    with pytest.raises(UnknownValueError):
        POLICIES[CI_ADMIN].validate(StackValidationArgs([ci, grant(UNKNOWN, name="later"), grant(OTHER)], {}),
                                    lambda message, urn=None: found.append(message))
    assert found == [not_the_ci_role(OTHER)]


def test_a_principal_traced_through_up_to_three_access_entries(stack_with_ci):
    ci = role("ci-deploy", ci_trust())
    chain = [ci]
    for i in range(4):
        chain.append(entry(f"e{i}", chain[-1]))
    assert stack_violations(CI_ADMIN, [*chain, traced_grant(chain[3])]) == []  # grant <- e2 <- e1 <- e0 <- role
    with pytest.raises(UnknownValueError):  # four entries deep: not traced, so not known to be the CI role
        stack_violations(CI_ADMIN, [*chain, traced_grant(chain[4])])


def test_traced_roles_are_all_candidates_and_only_entries_are_followed(stack_with_ci):
    ci, bad = role("ci-deploy", ci_trust()), role("bad", ci_trust(subject="repo:x/y:ref:refs/heads/dev"))
    e = entry("e", bad)
    assert stack_violations(CI_ADMIN, [ci, bad, e, traced_grant(ci, e)]) == []
    assert stack_violations(CI_ADMIN, [ci, bad, e, traced_grant(e, bad)]) == [not_the_ci_role("the role 'bad', 'bad'")]
    gone = resource(ACCESS_ENTRY, "gone", {})
    other = resource("aws:iam/policy:Policy", "p", {}, property_dependencies={"principalArn": [ci]})
    with pytest.raises(UnknownValueError):
        stack_violations(CI_ADMIN, [ci, other, traced_grant(gone, other)])


def test_helpers_on_malformed_urns_and_trusts():
    from policies.rules.kubernetes import _stand_in_role_arn, parent_type
    assert parent_type("not-a-urn") is None
    assert parent_type(f"urn:pulumi:t::kiln::{CI_ACCESS}${ASSOCIATION}::x") == CI_ACCESS
    federated = {"Statement": [{"Principal": {"Federated": f"arn:aws-cn:iam::{ACCOUNT}:oidc-provider/h"}}]}
    assert _stand_in_role_arn(federated) == f"arn:aws-cn:iam::{ACCOUNT}:role/not-known-yet"
    for bad in (["x"], "arn:aws:iam", f"arn:aws:iam::{ACCOUNT}"):
        assert _stand_in_role_arn({"Statement": [{"Principal": {"Federated": bad}}]}) is None


# --------------------------------------------------------------------------- k8s-model-claim-mounted-readonly

CLAIMS = "k8s-model-claim-mounted-readonly"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"


def test_a_claim_binds_only_in_its_own_namespace_and_every_volume_is_judged():
    pv = resource(PV, "pv", {"metadata": {"name": "model"}, "spec": {"hostPath": {"path": "/opt/models"}}})
    pvc = resource(PVC, "pvc", {"metadata": {"name": "model", "namespace": "ml"}, "spec": {"volumeName": "model"}})

    def pod(ns, type_=POD):
        return resource(type_, f"pod-{ns}", {"metadata": {"namespace": ns}, "spec": {
            "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "ro", "persistentVolumeClaim": {"claimName": "model", "readOnly": True}},
                        {"name": "m", "persistentVolumeClaim": {"claimName": "model"}}],
            "containers": [{"name": "c", "volumeMounts": [{"name": "m", "mountPath": "/m"}]}]}})
    a, b = pod("ml"), pod("other")
    outsider = pod("ml", type_="example:index:Thing")
    assert stack_violations(CLAIMS, [pv, pvc, a, b, outsider], with_urns=True) == [
        (f"{POD} 'pod-ml': containers[0] (c) mounts volume 'm' (claim 'model', bound to hostPath PersistentVolume "
         "'model') without readOnly: true", a.urn)]


# --------------------------------------------------------------------------- k8s-no-internet-load-balancer

LB = "k8s-no-internet-load-balancer"
SERVICE = "kubernetes:core/v1:Service"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
NLB = "makes an internet-facing load balancer (no aws-load-balancer-scheme: internal)"
ALB = "makes an internet-facing ALB"
OPEN = "open to 0.0.0.0/0 (no source ranges); make it internal or list the source ranges"
LIMIT = "at most a /8 of IPv4 (16777216 addresses) or a /32 of IPv6 allowed"


def lb_service(*ranges, **annotations):
    return {"metadata": {"annotations": annotations}, "spec": {"type": "LoadBalancer",
                                                               **({"loadBalancerSourceRanges": list(ranges)} if ranges else {})}}


def alb(**annotations):
    return {"metadata": {"annotations": {"alb.ingress.kubernetes.io/scheme": "internet-facing", **{
        k.replace("_", "-"): v for k, v in annotations.items()}}}}


def test_load_balancer_messages():
    assert violations(LB, SERVICE, lb_service()) == [f"{NLB} {OPEN}"]
    assert violations(LB, SERVICE, lb_service("10.0.0.0/8", "bogus", "0.0.0.0/0")) == [
        f"{NLB} with source ranges that are not CIDR blocks: bogus", f"{NLB} admitting the whole internet; {LIMIT}"]
    assert violations(LB, INGRESS, alb()) == [f"{ALB} {OPEN}"]
    assert violations(LB, INGRESS, alb(**{"alb.ingress.kubernetes.io/inbound-cidrs": "1.2.3.0/24, 0.0.0.0/0"})) == [
        f"{ALB} admitting the whole internet; {LIMIT}"]
    assert violations(LB, INGRESS, alb(**{"alb.ingress.kubernetes.io/inbound-cidrs": "1.2.3.0/24"})) == []


def test_the_prefix_limits_come_from_the_pack_config():
    assert violations(LB, SERVICE, lb_service("1.2.0.0/16"), config={"ipv4MinPrefix": 24}) == [
        f"{NLB} admitting 65536 public addresses (IPv4); at most a /24 of IPv4 (256 addresses) or a /32 of IPv6 allowed"]
    assert violations(LB, SERVICE, lb_service("2001:db8::/40"), config={"ipv6MinPrefix": 48}) == [
        f"{NLB} admitting about 2^88 public addresses (IPv6); at most a /8 of IPv4 (16777216 addresses) or a /48 of "
        "IPv6 allowed"]
    assert violations(LB, SERVICE, lb_service("1.2.0.0/16", "2001:db8::/40"),
                      config={"ipv4MinPrefix": None, "ipv6MinPrefix": None}) == []


def test_load_balancers_in_yaml_are_judged_by_kind_of_any_api_version():
    yaml = ("apiVersion: v1\nkind: Service\nspec: {type: LoadBalancer}\n---\napiVersion: extensions/v1beta1\n"
            "kind: Ingress\nmetadata: {annotations: {alb.ingress.kubernetes.io/scheme: internet-facing}}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {annotations: {alb.ingress.kubernetes.io/scheme: internet-facing}}\n"
            "spec: {type: LoadBalancer}\n")
    assert violations(LB, CONFIG_GROUP, {"yaml": yaml}) == [f"{NLB} {OPEN}", f"{ALB} {OPEN}"]


# --------------------------------------------------------------------------- k8s-helm-chart-allowed

HELM = "k8s-helm-chart-allowed"
RELEASE = "kubernetes:helm.sh/v3:Release"
AUTOSCALER = "https://kubernetes.github.io/autoscaler/cluster-autoscaler"
NVIDIA = "https://nvidia.github.io/k8s-device-plugin/nvidia-device-plugin"


def not_allowed(source, allowed=f"{AUTOSCALER}, {NVIDIA}"):
    return (f"installs chart {source!r}, which is not in allowedCharts ({allowed}): the pack cannot see the workloads "
            "and permissions a chart renders; review it and add it to allowedCharts")


def unpinned(version):
    return f"version is {version!r}: pin the chart to an exact version (a range or none installs whatever is published next)"


def test_charts_outside_allowed_charts_and_unpinned_versions():
    assert violations(HELM, RELEASE, {"chart": "foo", "repositoryOpts": {"repo": "https://x.io/"}, "version": "1.x"}) == [
        not_allowed("https://x.io/foo"), unpinned("1.x")]
    assert violations(HELM, RELEASE, {"chart": "foo", "version": 3}) == [not_allowed("foo"), unpinned(3)]
    assert violations(HELM, RELEASE, {"repositoryOpts": {"repo": "https://x.io"}}, config={"allowedCharts": []}) == [
        not_allowed("https://x.io/", "none"), unpinned(None)]
    assert violations(HELM, RELEASE, {}) == [not_allowed(""), unpinned(None)]


def test_allowed_charts_match_without_trailing_slashes():
    repo = {"chart": "cluster-autoscaler", "repositoryOpts": {"repo": "https://kubernetes.github.io/autoscaler/"}}
    assert violations(HELM, RELEASE, {**repo, "version": " 9.43.2 "}) == []
    assert violations(HELM, RELEASE, {**repo, "version": "v9.43.2-rc.1+b"}, config={"allowedCharts": None}) == []
    oci = {"chart": "oci://registry.example.com/charts/foo/", "repositoryOpts": {"repo": "https://x.io"}, "version": "1.0.0"}
    assert violations(HELM, RELEASE, oci, config={"allowedCharts": ["oci://registry.example.com/charts/foo"]}) == []
    assert violations(HELM, "kubernetes:helm.sh/v3:Chart", {"chart": "foo", "fetchOpts": {"repo": "https://x.io"},
                                                            "version": "1.0.0"},
                      config={"allowedCharts": ["https://x.io/foo/"]}) == []


# --------------------------------------------------------------------------- corner cases found by the second run

def test_an_unknown_harmless_value_does_not_hide_the_containers_after_it():
    assert violations(PRIVILEGED, POD, {"spec": {"serviceAccountName": UNKNOWN, "containers": [
        {"name": "a", "securityContext": {"privileged": True}}]}}) == [
        "spec.containers[0].securityContext.privileged: true gives the container the node"]


def test_a_persistent_volume_message_rewrites_only_its_own_path():
    assert violations(HOSTPATH, PV, {"spec": {"accessModes": ["ReadOnlyMany"], "hostPath": {"path": "/etc"}}},
                      config={"modelPath": "/srv/'/etc', outside"}) == [
        "hostPath '/etc' is outside the model path /srv/'/etc', outside"]


def test_requests_other_than_cpu_or_memory_are_no_requests():
    job = {"spec": {"ttlSecondsAfterFinished": 60, "template": {"spec": {"containers": [
        {"name": "gpu", "resources": {"requests": {"nvidia.com/gpu": 1}}},
        {"name": "empty", "resources": {"requests": {"cpu": "", "memory": "1Gi"}}}]}}}}
    assert violations(JOB_HYGIENE, "kubernetes:batch/v1:Job", job) == [
        "containers[0] (gpu) sets no resources.requests (cpu/memory)"]


def test_chart_sources_lose_only_trailing_slashes():
    chart = {"chart": "fooX", "repositoryOpts": {"repo": "https://e.example/reX/"}, "version": "1.0.0"}
    assert violations(HELM, RELEASE, chart, config={"allowedCharts": ["https://e.example/reX/fooX/"]}) == []
    assert violations(HELM, RELEASE, chart, config={"allowedCharts": ["https://e.example/re/fooX"]}) == [
        not_allowed("https://e.example/reX/fooX", "https://e.example/re/fooX")]


def test_every_unreadable_source_range_and_admin_group_is_listed():
    assert violations(LB, SERVICE, lb_service("bogus", "nope", "10.0.0.0/8")) == [
        f"{NLB} with source ranges that are not CIDR blocks: bogus, nope"]
    assert violations(ADMIN, ACCESS_ENTRY, {"principalArn": ROLE_X, "kubernetesGroups": ["system:masters"] * 2}) == [
        f"maps {ROLE_X} to system:masters, system:masters"]
