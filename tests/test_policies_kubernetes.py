"""The Kubernetes rules walk every resource: pod templates of every kind, custom resources, Helm values."""

from __future__ import annotations

import pulumi
import pytest
from pulumi_policy.proxy import UnknownValueError

from _policy_helpers import POLICIES, resource, stack_violations, violations
from policies.program import config_to_pulumi

HOSTPATH = "k8s-hostpath-model-only-readonly"
PRIVILEGED = "k8s-no-privileged-or-host-namespaces"
ADMIN = "k8s-no-cluster-admin-binding"
PV = "kubernetes:core/v1:PersistentVolume"


def container(name="main", **extra):
    return {"name": name, "image": "busybox", **extra}


def mount(name="m", read_only=True):
    return {"name": name, "mountPath": "/m", **({"readOnly": True} if read_only else {})}


def host_volume(path, name="m"):
    return {"name": name, "hostPath": {"path": path}}


SHAPES = {
    "kubernetes:core/v1:Pod": lambda spec: {"spec": spec},
    "kubernetes:apps/v1:Deployment": lambda spec: {"spec": {"template": {"spec": spec}}},
    "kubernetes:apps/v1:StatefulSet": lambda spec: {"spec": {"template": {"spec": spec}}},
    "kubernetes:apps/v1:DaemonSetPatch": lambda spec: {"spec": {"template": {"spec": spec}}},
    "kubernetes:batch/v1:Job": lambda spec: {"spec": {"template": {"spec": spec}}},
    "kubernetes:batch/v1:CronJob": lambda spec: {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}},
    # Custom resources: wherever their authors put a pod spec.
    "kubernetes:kubeflow.org/v1:PyTorchJob": lambda spec: {"spec": {"pytorchReplicaSpecs": {"Worker": {"template": {
        "spec": spec}}}}},
    "kubernetes:ray.io/v1:RayCluster": lambda spec: {"spec": {"workerGroupSpecs": [{"template": {"spec": spec}}]}},
    "kubernetes:helm.sh/v3:Release": lambda spec: {"values": {"daemonset": {"podSpec": spec}}},
}


@pytest.mark.parametrize("type_", SHAPES)
@pytest.mark.parametrize("spec, fragment", [
    ({"containers": [container(securityContext={"privileged": True})]}, "privileged: true"),
    ({"initContainers": [container(securityContext={"privileged": True})], "containers": [container()]}, "privileged"),
    ({"ephemeralContainers": [container(securityContext={"privileged": True})], "containers": [container()]},
     "ephemeralContainers[0].securityContext.privileged"),
    ({"containers": [container()], "hostPID": True}, "hostPID: true shares the node's processes"),
    ({"containers": [container()], "hostIPC": True}, "hostIPC"),
    ({"containers": [container()], "hostNetwork": True}, "hostNetwork"),
    ({"containers": [container(securityContext={"capabilities": {"add": ["NET_BIND_SERVICE", "CAP_SYS_ADMIN"]}})]},
     "capabilities.add grants SYS_ADMIN ("),
    ({"containers": [container(securityContext={"capabilities": {"add": ["all"]}})]}, "grants ALL"),
])
def test_privileged_and_host_namespaces_everywhere(type_, spec, fragment):
    found = violations(PRIVILEGED, type_, SHAPES[type_](spec))
    assert len(found) == 1 and fragment in found[0], found


@pytest.mark.parametrize("type_", SHAPES)
def test_restricted_pods_pass(type_):
    spec = {"containers": [container(securityContext={"privileged": False, "allowPrivilegeEscalation": False,
                                                      "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}})],
            "hostNetwork": False, "hostPID": False}
    assert violations(PRIVILEGED, type_, SHAPES[type_](spec)) == []


def test_schemas_and_strings_are_not_pods():
    crd = {"spec": {"versions": [{"schema": {"openAPIV3Schema": {"properties": {
        "hostNetwork": {"type": "boolean"}, "securityContext": {"type": "object", "properties": {
            "privileged": {"type": "boolean"}}}}}}}]}}
    assert violations(PRIVILEGED, "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition", crd) == []
    config_map = {"data": {"pod.yaml": "hostNetwork: true\nprivileged: true\n"}}
    assert violations(PRIVILEGED, "kubernetes:core/v1:ConfigMap", config_map) == []
    assert violations(PRIVILEGED, "aws:ec2/instance:Instance", {"hostNetwork": True}) == []


@pytest.mark.parametrize("type_", SHAPES)
def test_host_paths_outside_the_model_and_writable_mounts_everywhere(type_):
    wrap = SHAPES[type_]
    inside = {"containers": [container(volumeMounts=[mount()])], "volumes": [host_volume("/opt/models/v5")]}
    assert violations(HOSTPATH, type_, wrap(inside)) == []
    evil = {"containers": [container(volumeMounts=[mount()])], "volumes": [host_volume("/opt/models-evil")]}
    found = violations(HOSTPATH, type_, wrap(evil))
    assert len(found) == 1 and "mounts host path '/opt/models-evil', outside the model path /opt/models" in found[0]
    escape = {"containers": [container(volumeMounts=[mount()])], "volumes": [host_volume("/opt/models/../../etc")]}
    assert len(violations(HOSTPATH, type_, wrap(escape))) == 1
    writable_init = {"initContainers": [container("seed", volumeMounts=[mount(read_only=False)])],
                     "containers": [container(volumeMounts=[mount()])], "volumes": [host_volume("/opt/models")]}
    found = violations(HOSTPATH, type_, wrap(writable_init))
    assert found == ["initContainers[0] (seed) mounts host path volume 'm' without readOnly: true"]
    # An ephemeral container (kubectl debug) is a container like the others: a writable mount of the model fails.
    writable_debug = {"ephemeralContainers": [container("debug", volumeMounts=[mount(read_only=False)])],
                      "containers": [container(volumeMounts=[mount()])], "volumes": [host_volume("/opt/models")]}
    found = violations(HOSTPATH, type_, wrap(writable_debug))
    assert found == ["ephemeralContainers[0] (debug) mounts host path volume 'm' without readOnly: true"]
    local = {"containers": [container()], "volumes": [{"name": "l", "local": {"path": "/var/lib"}}]}
    assert len(violations(HOSTPATH, type_, wrap(local))) == 1


def test_argo_workflow_volumes_and_template_mounts():
    argo = "kubernetes:argoproj.io/v1alpha1:Workflow"
    workflow = {"spec": {"volumes": [host_volume("/opt/models", "model")], "templates": [
        {"name": "train", "container": {"image": "x", "volumeMounts": [{"name": "model", "mountPath": "/m"}]}}]}}
    assert violations(HOSTPATH, argo, workflow) == [
        "templates[0].container mounts host path volume 'model' without readOnly: true"]
    workflow["spec"]["templates"][0]["container"]["volumeMounts"][0]["readOnly"] = True
    assert violations(HOSTPATH, argo, workflow) == []
    workflow["spec"]["volumes"] = [host_volume("/", "model")]
    assert len(violations(HOSTPATH, argo, workflow)) == 1
    # A host path anywhere in a custom resource, even outside a volumes list, must be under the model path.
    odd = {"spec": {"storage": {"hostPath": {"path": "/var/run/docker.sock"}}}}
    assert len(violations(HOSTPATH, "kubernetes:example.com/v1:Thing", odd)) == 1


def test_local_persistent_volumes_are_host_paths():
    local = {"spec": {"accessModes": ["ReadWriteOnce"], "local": {"path": "/"}}}
    assert violations(HOSTPATH, PV, local) == ["local '/' is outside the model path /opt/models",
                                               "a local volume must be ReadOnlyMany only, has accessModes ['ReadWriteOnce']"]
    model = {"spec": {"accessModes": ["ReadOnlyMany"], "local": {"path": "/opt/models"}}}
    assert violations(HOSTPATH, PV, model) == []


@pytest.fixture
def stack_model_path():
    def use(path):
        pulumi.runtime.set_all_config(config_to_pulumi({
            "kiln:clusterName": "kiln", "kiln:kubernetesVersion": "1.33", "kiln:availabilityZones": ["us-east-2a", "us-east-2b"],
            "kiln:nodeAmi": "ami-0123456789abcdef0", "kiln:modelVersion": "v5", "kiln:modelPath": path,
            "kiln:nodeGroups": [{"name": "cpu", "instanceTypes": ["m7i.large"], "minSize": 0, "maxSize": 1,
                                 "desiredSize": 1}]}), [])
    yield use
    pulumi.runtime.set_all_config({}, [])


def test_the_model_path_follows_the_stack_unless_the_pack_sets_it(stack_model_path):
    pod = {"spec": {"containers": [container(volumeMounts=[mount()])], "volumes": [host_volume("/data/models")]}}
    assert len(violations(HOSTPATH, "kubernetes:core/v1:Pod", pod)) == 1  # no stack config: /opt/models
    stack_model_path("/data/models")
    assert violations(HOSTPATH, "kubernetes:core/v1:Pod", pod) == []
    assert len(violations(HOSTPATH, "kubernetes:core/v1:Pod", pod, config={"modelPath": "/srv/models"})) == 1


@pytest.mark.parametrize("model_path", ["/", "/etc", "/var/lib", "relative"])
def test_a_system_directory_as_the_model_path_allows_nothing(model_path):
    pod = {"spec": {"containers": [container(volumeMounts=[mount()])], "volumes": [host_volume("/etc/passwd")]}}
    found = violations(HOSTPATH, "kubernetes:core/v1:Pod", pod, config={"modelPath": model_path})
    assert len(found) == 1 and found[0].startswith(f"the model path {model_path!r}")


def test_unknown_values_skip_what_cannot_matter_and_defer_what_can():
    unknown = pulumi.runtime.rpc.UNKNOWN
    pod = {"metadata": {"namespace": unknown, "annotations": {"a": unknown}},
           "spec": {"containers": [container(image=unknown, volumeMounts=[mount()])], "volumes": [host_volume("/opt/models")]}}
    assert violations(HOSTPATH, "kubernetes:core/v1:Pod", pod) == []
    assert violations(PRIVILEGED, "kubernetes:core/v1:Pod", pod) == []
    hidden = {"spec": {"containers": [container()], "volumes": unknown}}
    with pytest.raises(UnknownValueError):
        violations(HOSTPATH, "kubernetes:core/v1:Pod", hidden)
    hidden_privilege = {"spec": {"containers": [container(securityContext={"privileged": unknown})]}}
    with pytest.raises(UnknownValueError):
        violations(PRIVILEGED, "kubernetes:core/v1:Pod", hidden_privilege)
    # A whole template or container not known yet could hold anything: never taken for safe.
    for hidden in ({"spec": {"template": unknown}}, {"spec": {"template": {"spec": {"containers": [unknown]}}}}):
        for rule in (HOSTPATH, PRIVILEGED):
            with pytest.raises(UnknownValueError):
                violations(rule, "kubernetes:apps/v1:Deployment", hidden)
    env = {"spec": {"containers": [container(env=[{"name": "A", "value": unknown}], resources={"limits": unknown})]}}
    assert violations(PRIVILEGED, "kubernetes:core/v1:Pod", env) == []


def test_claims_bound_to_the_model_are_read_only_in_custom_resources_too():
    pv = resource(PV, "pv", {"metadata": {"name": "model-v5"}, "spec": {"hostPath": {"path": "/opt/models"},
                                                                         "claimRef": {"namespace": "ml-jobs", "name": "model-v5"}}})
    workflow = resource("kubernetes:argoproj.io/v1alpha1:Workflow", "wf", {"metadata": {"namespace": "ml-jobs"}, "spec": {
        "volumes": [{"name": "model", "persistentVolumeClaim": {"claimName": "model-v5"}}],
        "templates": [{"name": "t", "container": {"image": "x", "volumeMounts": [{"name": "model", "mountPath": "/m"}]}}]}})
    found = stack_violations("k8s-model-claim-mounted-readonly", [pv, workflow])
    assert len(found) == 1 and found[0].startswith("kubernetes:argoproj.io/v1alpha1:Workflow 'wf': templates[0].container")


# --------------------------------------------------------------------------- cluster-admin

RBAC = "kubernetes:rbac.authorization.k8s.io/v1:"


@pytest.mark.parametrize("type_, props", [
    (f"{RBAC}ClusterRoleBinding", {"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}, "subjects": []}),
    (f"{RBAC}RoleBinding", {"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}}),
    (f"{RBAC}ClusterRoleBindingPatch", {"roleRef": {"kind": "ClusterRole", "name": "view"},
                                        "subjects": [{"kind": "Group", "name": "system:masters"}]}),
    (f"{RBAC}ClusterRole", {"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
    ("aws:eks/accessPolicyAssociation:AccessPolicyAssociation",
     {"principalArn": "arn:aws:iam::1:role/x",
      "policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"}),
    ("aws:eks/accessEntry:AccessEntry", {"principalArn": "arn:aws:iam::1:role/x", "kubernetesGroups": ["system:masters"]}),
    ("eks:index:Cluster", {"accessEntries": {"ops": {"principalArn": "arn:aws:iam::1:role/ops", "accessPolicies": {
        "admin": {"policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"}}}}}),
    ("eks:index:Cluster", {"roleMappings": [{"roleArn": "arn:aws:iam::1:role/x", "groups": ["system:masters"]}]}),
])
def test_cluster_admin_grants(type_, props):
    assert len(violations(ADMIN, type_, props)) == 1


def test_narrow_grants_and_allowed_principals():
    assert violations(ADMIN, f"{RBAC}ClusterRoleBinding", {"roleRef": {"kind": "ClusterRole", "name": "kiln-rollout"},
                                                           "subjects": [{"kind": "Group", "name": "kiln-rollout"}]}) == []
    assert violations(ADMIN, f"{RBAC}ClusterRole", {"rules": [{"apiGroups": [""], "resources": ["pods", "nodes"],
                                                                "verbs": ["get", "list"]}]}) == []
    view = {"principalArn": "arn:aws:iam::1:role/x",
            "policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"}
    assert violations(ADMIN, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation", view) == []
    admin = {**view, "policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"}
    assert violations(ADMIN, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation", admin,
                      config={"allowedPrincipalArns": ["arn:aws:iam::1:role/x"]}) == []
    nodes = {"accessEntries": {"nodes": {"principalArn": "arn:aws:iam::1:role/n", "type": "EC2_LINUX"}}}
    assert violations(ADMIN, "eks:index:Cluster", nodes) == []


# --- kiln's own CI deploy access: the one cluster-admin grant kiln declares (infra/ci_access.py)

CI_ADMIN = "k8s-ci-cluster-admin-only-for-the-ci-deploy-role"
ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
CI_ACCESS = "kiln:infra:CiClusterAccess"
CLUSTER_ADMIN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
ACCOUNT, OTHER_ACCOUNT = "123456789012", "999999999999"
GITHUB = "https://token.actions.githubusercontent.com"
SUBJECT = "repo:example-org/ml-platform:ref:refs/heads/main"
CI_OIDC = {"providerUrl": GITHUB, "audience": "sts.amazonaws.com", "subject": SUBJECT}


def provider_arn(account=ACCOUNT, host="token.actions.githubusercontent.com"):
    return f"arn:aws:iam::{account}:oidc-provider/{host}"


def ci_trust(provider=None, subject=SUBJECT):
    from infra import ci_oidc
    return ci_oidc.deploy_role_trust(provider or provider_arn(), GITHUB, "sts.amazonaws.com", subject)


def role(name, trust, account=ACCOUNT):
    return resource("aws:iam/role:Role", name, {"arn": f"arn:aws:iam::{account}:role/{name}", "assumeRolePolicy": trust})


def grant(principal, name="ci-access", parent_type=CI_ACCESS):
    return resource(ASSOCIATION, name, {"clusterName": "kiln", "principalArn": principal, "policyArn": CLUSTER_ADMIN,
                                        "accessScope": {"type": "cluster"}}, parent_type=parent_type)


def set_stack(ci_oidc):
    pulumi.runtime.set_all_config(config_to_pulumi({
        "kiln:clusterName": "kiln", "kiln:kubernetesVersion": "1.33", "kiln:availabilityZones": ["us-east-2a", "us-east-2b"],
        "kiln:nodeAmi": "ami-0123456789abcdef0", "kiln:modelVersion": "v5",
        "kiln:nodeGroups": [{"name": "cpu", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 2, "desiredSize": 1}],
        **({"kiln:ciOidc": ci_oidc} if ci_oidc else {})}), [])


@pytest.fixture
def stack_with_ci(request):
    """The stack's kiln config, with kiln:ciOidc unless the test is parametrised with False."""
    set_stack(CI_OIDC if getattr(request, "param", True) else None)
    yield
    pulumi.runtime.set_all_config({}, [])


def test_kiln_ci_access_is_left_to_the_stack_rule_only_with_ci_oidc(stack_with_ci):
    props = {"principalArn": f"arn:aws:iam::{ACCOUNT}:role/ci-deploy", "policyArn": CLUSTER_ADMIN}
    kiln_urn = f"urn:pulumi:t::kiln::{CI_ACCESS}${ASSOCIATION}::ci-access"
    assert violations(ADMIN, ASSOCIATION, props, urn=kiln_urn) == []
    # The same grant declared anywhere else (top level, or under another component) is flagged at once.
    assert len(violations(ADMIN, ASSOCIATION, props)) == 1
    other = f"urn:pulumi:t::kiln::kiln:infra:Cluster${ASSOCIATION}::ci-access"
    assert len(violations(ADMIN, ASSOCIATION, props, urn=other)) == 1
    # A narrower policy from kiln's component is no admin grant at all.
    view = {**props, "policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"}
    assert violations(ADMIN, ASSOCIATION, view, urn=kiln_urn) == []


@pytest.mark.parametrize("stack_with_ci", [False], indirect=True)
def test_without_ci_oidc_kiln_ci_access_is_an_ordinary_admin_grant(stack_with_ci):
    props = {"principalArn": f"arn:aws:iam::{ACCOUNT}:role/ci-deploy", "policyArn": CLUSTER_ADMIN}
    kiln_urn = f"urn:pulumi:t::kiln::{CI_ACCESS}${ASSOCIATION}::ci-access"
    assert len(violations(ADMIN, ASSOCIATION, props, urn=kiln_urn)) == 1
    assert stack_violations(CI_ADMIN, [role("ci-deploy", ci_trust()), grant(props["principalArn"])]) == []


def test_the_ci_deploy_role_is_recognised_by_its_trust(stack_with_ci):
    ci = role("ci-deploy", ci_trust())
    assert stack_violations(CI_ADMIN, [ci, grant(ci.props["arn"])]) == []
    # A configured existing provider (ciOidc.providerArn) is the same trust through that provider.
    set_stack({**CI_OIDC, "providerArn": provider_arn()})
    assert stack_violations(CI_ADMIN, [ci, grant(ci.props["arn"])]) == []
    # ... and only through that provider.
    set_stack({**CI_OIDC, "providerArn": provider_arn(account=OTHER_ACCOUNT)})
    assert len(stack_violations(CI_ADMIN, [ci, grant(ci.props["arn"])])) == 1


@pytest.mark.parametrize("principal_role", [
    role("ci-deploy-admin", '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": '
                            f'{{"AWS": "arn:aws:iam::{ACCOUNT}:root"}}, "Action": "sts:AssumeRole"}}]}}'),
    role("ci-deploy", ci_trust(subject="repo:example-org/ml-platform:ref:refs/heads/dev")),
    role("ci-deploy", ci_trust(provider=provider_arn(host="gitlab.com"))),
    role("ci-deploy", ci_trust(provider=provider_arn(account=OTHER_ACCOUNT))),
    role("ci-deploy", ci_trust(subject="repo:example-org/ml-platform:ref:refs/heads/XX").replace(
        '"StringEquals"', '"StringLike"').replace("refs/heads/XX", "*")),
    role("ci-deploy", ci_trust()[:-2] + ', {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}'),
], ids=["name-copied-trust-account", "another-subject", "another-issuer", "provider-of-another-account",
        "wildcard-subject", "extra-statement"])
def test_kiln_ci_access_granting_anyone_else_is_flagged(stack_with_ci, principal_role):
    ci = role("ci-deploy-real", ci_trust())
    found = stack_violations(CI_ADMIN, [ci, principal_role, grant(principal_role.props["arn"])], with_urns=True)
    assert len(found) == 1 and "which is not kiln's CI deploy role" in found[0][0]
    assert found[0][1].endswith(f"{CI_ACCESS}${ASSOCIATION}::ci-access")


def test_an_admin_grant_outside_kiln_ci_access_is_the_resource_rule_s(stack_with_ci):
    """The stack rule judges only what the resource rule left to it."""
    ci = role("ci-deploy", ci_trust())
    assert stack_violations(CI_ADMIN, [ci, grant(f"arn:aws:iam::{ACCOUNT}:role/other", parent_type=None)]) == []


def test_unknown_values_are_not_taken_for_the_ci_deploy_role(stack_with_ci):
    unknown = pulumi.runtime.rpc.UNKNOWN
    ci = role("ci-deploy", ci_trust())
    with pytest.raises(UnknownValueError):      # whom it grants is not known yet
        stack_violations(CI_ADMIN, [ci, grant(unknown)])
    pending = resource("aws:iam/role:Role", "new", {"arn": unknown, "assumeRolePolicy": unknown})
    with pytest.raises(UnknownValueError):      # a role created in the same update might be it
        stack_violations(CI_ADMIN, [pending, grant(f"arn:aws:iam::{ACCOUNT}:role/new")])
    # Once the CI deploy role is known and granted, another role still unknown does not matter.
    assert stack_violations(CI_ADMIN, [pending, ci, grant(ci.props["arn"])]) == []


def test_kubernetes_rules_are_mandatory():
    for name in (HOSTPATH, PRIVILEGED, ADMIN, CI_ADMIN):
        assert POLICIES[name].enforcement_level.value == "mandatory"


def test_config_group_yaml_is_read_like_any_other_object():
    group = "kubernetes:yaml/v2:ConfigGroup"
    manifest = """
apiVersion: v1
kind: ConfigMap
metadata: {name: harmless}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-shell}
spec:
  template:
    spec:
      hostPID: true
      containers: [{name: c, image: busybox, volumeMounts: [{name: root, mountPath: /host}]}]
      volumes: [{name: root, hostPath: {path: /}}]
"""
    assert len(violations(PRIVILEGED, group, {"yaml": manifest})) == 1
    assert len(violations(HOSTPATH, group, {"yaml": manifest})) == 2  # outside the model path, and writable
    assert violations(PRIVILEGED, group, {"yaml": "apiVersion: v1\nkind: ConfigMap\n"}) == []
    for rule in (PRIVILEGED, HOSTPATH):
        found = violations(rule, group, {"yaml": "kind: [unclosed"})
        assert len(found) == 1 and "cannot be parsed" in found[0]
    objs = {"objs": [{"apiVersion": "v1", "kind": "Pod", "spec": {"hostNetwork": True, "containers": []}}]}
    assert len(violations(PRIVILEGED, group, objs)) == 1


# --------------------------------------------------------------------------- autoscaler-safe Jobs

SAFE_TO_EVICT = "k8s-job-safe-to-evict-false"
KEY = "cluster-autoscaler.kubernetes.io/safe-to-evict"
SAFE = {KEY: "false"}
ARGO = "kubernetes:argoproj.io/v1alpha1:"


def pod_template(annotations=None, **spec):
    template = {"spec": {"containers": [container()], **spec}}
    if annotations is not None:
        template["metadata"] = {"annotations": annotations}
    return template


# Every kind whose pods are Job pods (the rollout's list) or that creates them, with its pod template where its
# authors put it.
JOB_SHAPES = {
    "kubernetes:batch/v1:Job": lambda t: {"spec": {"template": t}},
    "kubernetes:batch/v1:CronJob": lambda t: {"spec": {"jobTemplate": {"spec": {"template": t}}}},
    "kubernetes:batch/v1beta1:CronJob": lambda t: {"spec": {"jobTemplate": {"spec": {"template": t}}}},
    "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet": lambda t: {"spec": {"replicatedJobs": [
        {"name": "workers", "template": {"metadata": {"annotations": SAFE}, "spec": {"template": t}}}]}},
    "kubernetes:kubeflow.org/v1:PyTorchJob": lambda t: {"spec": {"pytorchReplicaSpecs": {"Worker": {"template": t}}}},
    "kubernetes:kubeflow.org/v1:TFJob": lambda t: {"spec": {"tfReplicaSpecs": {"PS": {"template": t}}}},
    "kubernetes:kubeflow.org/v2beta1:MPIJob": lambda t: {"spec": {"mpiReplicaSpecs": {"Launcher": {"template": t}}}},
    "kubernetes:kubeflow.org/v1:JAXJob": lambda t: {"spec": {"jaxReplicaSpecs": {"Worker": {"template": t}}}},
}


@pytest.mark.parametrize("type_", JOB_SHAPES)
def test_every_pod_template_of_a_job_kind_carries_safe_to_evict_false(type_):
    shape = JOB_SHAPES[type_]
    assert violations(SAFE_TO_EVICT, type_, shape(pod_template(SAFE))) == []
    [missing] = violations(SAFE_TO_EVICT, type_, shape(pod_template()))
    assert f"template.metadata.annotations[{KEY}] is missing" in missing and "cluster-autoscaler" in missing
    [wrong] = violations(SAFE_TO_EVICT, type_, shape(pod_template({KEY: "true"})))
    assert "is 'true'" in wrong
    # A patch may leave the annotation alone, never flip it.
    assert violations(SAFE_TO_EVICT, f"{type_}Patch", shape(pod_template())) == []
    assert violations(SAFE_TO_EVICT, f"{type_}Patch", {"spec": {"suspend": True}}) == []
    assert violations(SAFE_TO_EVICT, f"{type_}Patch", shape(pod_template({KEY: "true"}))) != []


def test_each_pod_template_is_judged_and_named():
    roles = {"spec": {"pytorchReplicaSpecs": {"Master": {"template": pod_template(SAFE)},
                                              "Worker": {"template": {"spec": {}}}}}}
    [found] = violations(SAFE_TO_EVICT, "kubernetes:kubeflow.org/v1:PyTorchJob", roles)
    assert found.startswith(f"spec.pytorchReplicaSpecs.Worker.template.metadata.annotations[{KEY}] is missing")
    # A JobSet's Job template is not the pod's: the annotation there does not reach the pods.
    jobset = {"spec": {"replicatedJobs": [{"name": "w", "template": {"metadata": {"annotations": SAFE},
                                                                    "spec": {"template": pod_template()}}}]}}
    [found] = violations(SAFE_TO_EVICT, "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet", jobset)
    assert found.startswith("spec.replicatedJobs[0].template.spec.template.metadata")
    # ...and it is not required there: only the pods' templates count.
    jobset["spec"]["replicatedJobs"][0]["template"] = {"spec": {"template": pod_template(SAFE)}}
    assert violations(SAFE_TO_EVICT, "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet", jobset) == []
    # A pod template under a key of the author's choosing is found by its pod spec.
    custom = {"spec": {"launcher": pod_template(SAFE), "workers": {"template": pod_template(SAFE)}}}
    assert violations(SAFE_TO_EVICT, "kubernetes:example.com/v1:MPIJob", custom) == []
    custom["spec"]["launcher"] = pod_template()
    [found] = violations(SAFE_TO_EVICT, "kubernetes:example.com/v1:MPIJob", custom)
    assert found.startswith(f"spec.launcher.metadata.annotations[{KEY}] is missing")


def test_a_job_kind_whose_pods_cannot_be_found_is_not_passed():
    [found] = violations(SAFE_TO_EVICT, "kubernetes:kubeflow.org/v1:XGBoostJob", {"spec": {"runPolicy": {}}})
    assert "no pod template found" in found
    with pytest.raises(UnknownValueError):   # a template not known yet: "can't run during preview"
        violations(SAFE_TO_EVICT, "kubernetes:batch/v1:Job", {"spec": {"template": pulumi.runtime.rpc.UNKNOWN}})
    with pytest.raises(UnknownValueError):   # nor an annotation
        violations(SAFE_TO_EVICT, "kubernetes:batch/v1:Job",
                   {"spec": {"template": pod_template({KEY: pulumi.runtime.rpc.UNKNOWN})}})


@pytest.mark.parametrize("type_, props", [
    ("kubernetes:apps/v1:Deployment", {"spec": {"template": pod_template()}}),
    ("kubernetes:apps/v1:StatefulSet", {"spec": {"template": pod_template()}}),
    ("kubernetes:core/v1:Pod", pod_template()),
    ("kubernetes:ray.io/v1:RayCluster", {"spec": {"workerGroupSpecs": [{"template": pod_template()}]}}),
    ("kubernetes:core/v1:ConfigMap", {"data": {"template": "{}"}}),
])
def test_other_kinds_are_not_this_rules_business(type_, props):
    assert violations(SAFE_TO_EVICT, type_, props) == []


def workflow(pod_metadata=None, *templates, **spec):
    out = {"entrypoint": "main", "templates": list(templates), **spec}
    if pod_metadata is not None:
        out["podMetadata"] = {"annotations": pod_metadata}
    return out


def argo_template(name, annotations=None, kind="container"):
    t = {"name": name, kind: {"image": "busybox"} if kind != "steps" else [[{"name": "a", "template": "a"}]]}
    if annotations is not None:
        t["metadata"] = {"annotations": annotations}
    return t


@pytest.mark.parametrize("type_, where", [
    (f"{ARGO}Workflow", ("spec",)), (f"{ARGO}WorkflowTemplate", ("spec",)),
    (f"{ARGO}ClusterWorkflowTemplate", ("spec",)), (f"{ARGO}CronWorkflow", ("spec", "workflowSpec")),
])
def test_argo_pods_get_pod_metadata_then_their_templates_metadata(type_, where):
    def props(spec):
        out = spec
        for key in reversed(where):
            out = {key: out}
        return out
    at = ".".join(where)
    steps = argo_template("main", kind="steps")
    # spec.podMetadata reaches every pod; a template's own metadata wins over it.
    assert violations(SAFE_TO_EVICT, type_, props(workflow(SAFE, steps, argo_template("a")))) == []
    [found] = violations(SAFE_TO_EVICT, type_, props(workflow(SAFE, steps, argo_template("a", {KEY: "true"}))))
    assert found.startswith(f"{at}.templates[1] (a).metadata.annotations[{KEY}] is 'true'")
    # Without podMetadata every template that runs a pod must carry it (steps run none).
    assert violations(SAFE_TO_EVICT, type_, props(workflow(None, steps, argo_template("a", SAFE),
                                                           argo_template("b", SAFE, "script")))) == []
    [found] = violations(SAFE_TO_EVICT, type_, props(workflow(None, steps, argo_template("a", SAFE),
                                                               argo_template("b", None, "resource"))))
    assert found.startswith(f"{at}.templates[2] (b).metadata.annotations[{KEY}] is missing and {at}.podMetadata")
    [found] = violations(SAFE_TO_EVICT, type_, props(workflow({KEY: "true"}, steps, argo_template("a"))))
    assert found.startswith(f"{at}.podMetadata.annotations[{KEY}] is 'true'")
    # Pods from a WorkflowTemplate get only this workflow's podMetadata.
    ref = workflow(None, workflowTemplateRef={"name": "train"})
    ref.pop("templates")
    assert "WorkflowTemplate" in violations(SAFE_TO_EVICT, type_, props(ref))[0]
    step_ref = workflow(None, {"name": "main", "steps": [[{"name": "s", "templateRef": {"name": "t", "template": "x"}}]]})
    [found] = violations(SAFE_TO_EVICT, type_, props(step_ref))
    assert found.startswith(f"{at}.podMetadata.annotations[{KEY}] is missing") and "WorkflowTemplate" in found
    assert violations(SAFE_TO_EVICT, type_, props(workflow(SAFE, workflowTemplateRef={"name": "train"}))) == []
    # Nothing to classify is not a pass.
    assert "declares no template that runs a pod" in violations(SAFE_TO_EVICT, type_, props({}))[0]
    # Patches: leaving it alone is fine, flipping it is not.
    assert violations(SAFE_TO_EVICT, f"{type_}Patch", props(workflow(None, argo_template("a")))) == []
    assert violations(SAFE_TO_EVICT, f"{type_}Patch", props(workflow({KEY: "true"}))) != []


def test_a_workflow_of_another_api_group_is_judged_as_a_job_kind():
    props = {"spec": {"template": pod_template()}}
    assert len(violations(SAFE_TO_EVICT, "kubernetes:example.com/v1:Workflow", props)) == 1


def test_jobs_in_a_config_groups_yaml_are_judged_too():
    import yaml as pyyaml

    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": pod_template()}}}}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
              "spec": {"template": pod_template()}}
    text = pyyaml.safe_dump_all([deploy, cron])
    [found] = violations(SAFE_TO_EVICT, "kubernetes:yaml/v2:ConfigGroup", {"yaml": text})
    assert found.startswith("yaml CronJob/nightly: spec.jobTemplate.spec.template.metadata.annotations")
    cron["spec"]["jobTemplate"]["spec"]["template"] = pod_template(SAFE)
    assert violations(SAFE_TO_EVICT, "kubernetes:yaml/v2:ConfigGroup", {"yaml": pyyaml.safe_dump_all([deploy, cron])}) == []


# --------------------------------------------------------------------------- review of issue 14: what got through

@pytest.mark.parametrize("type_", SHAPES)
@pytest.mark.parametrize("spec, fragment", [
    # Pod Security Standards, baseline: every capability outside its short list
    ({"containers": [container(securityContext={"capabilities": {"add": ["SYS_RESOURCE", " net_raw "]}})]},
     "grants SYS_RESOURCE, NET_RAW"),
    ({"containers": [container(ports=[{"containerPort": 80, "hostPort": 80}])]}, "hostPort 80"),
    ({"containers": [container(securityContext={"procMount": "Unmasked"})]}, "procMount: Unmasked"),
    ({"containers": [container()], "securityContext": {"seccompProfile": {"type": "Unconfined"}}}, "seccompProfile"),
    ({"containers": [container(securityContext={"appArmorProfile": {"type": "Unconfined"}})]}, "appArmorProfile"),
    ({"containers": [container()], "securityContext": {"seLinuxOptions": {"type": "spc_t"}}}, "spc_t"),
    ({"containers": [container()], "securityContext": {"windowsOptions": {"hostProcess": True}}}, "hostProcess"),
    ({"containers": [container()], "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}},
     "sets kernel.msgmax"),
])
def test_pod_security_baseline_everywhere(type_, spec, fragment):
    found = violations(PRIVILEGED, type_, SHAPES[type_](spec))
    assert len(found) == 1 and fragment in found[0], found


def test_what_the_baseline_allows():
    spec = {"containers": [container(ports=[{"containerPort": 80}], securityContext={
        "procMount": "Default", "seccompProfile": {"type": "RuntimeDefault"},
        "capabilities": {"add": ["NET_BIND_SERVICE", "CHOWN"]}})],
        "securityContext": {"seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"},
                            "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}]}}
    assert violations(PRIVILEGED, "kubernetes:core/v1:Pod", {"spec": spec}) == []


def test_annotations_and_namespace_labels_that_turn_protections_off():
    pod = {"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/main": "unconfined"}},
           "spec": {"containers": [container()]}}
    assert len(violations(PRIVILEGED, "kubernetes:core/v1:Pod", pod)) == 1
    namespace = {"metadata": {"name": "ml-jobs", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
    for type_ in ("kubernetes:core/v1:Namespace", "kubernetes:core/v1:NamespacePatch"):
        assert len(violations(PRIVILEGED, type_, namespace)) == 1
    restricted = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    assert violations(PRIVILEGED, "kubernetes:core/v1:Namespace", restricted) == []
    unknown = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": pulumi.runtime.rpc.UNKNOWN}}}
    with pytest.raises(UnknownValueError):
        violations(PRIVILEGED, "kubernetes:core/v1:Namespace", unknown)


@pytest.mark.parametrize("path", ["/opt/models/current/../v4", "/opt/models/./v5", "/opt/models//v5"])
def test_host_paths_that_stay_inside_only_on_paper(path):
    spec = {"containers": [container(volumeMounts=[mount()])], "volumes": [host_volume(path)]}
    found = violations(HOSTPATH, "kubernetes:core/v1:Pod", {"spec": spec})
    assert len(found) == 1 and "not a normalised path" in found[0]
    ok = {"containers": [container(volumeMounts=[mount()])], "volumes": [host_volume("/opt/models/v5/")]}
    assert violations(HOSTPATH, "kubernetes:core/v1:Pod", {"spec": ok}) == []


def test_argo_pod_spec_patches_written_as_text_are_read():
    argo = "kubernetes:argoproj.io/v1alpha1:Workflow"
    patch = "hostNetwork: true\nvolumes: [{name: r, hostPath: {path: /}}]\n"
    wf = {"spec": {"entrypoint": "main", "podSpecPatch": patch,
                   "templates": [{"name": "main", "container": container(), "podSpecPatch": '{"hostPID": true}'}]}}
    assert len(violations(PRIVILEGED, argo, wf)) == 2
    assert len(violations(HOSTPATH, argo, wf)) == 1
    broken = {"spec": {"podSpecPatch": "hostNetwork: [true"}}
    assert len(violations(PRIVILEGED, argo, broken)) == 1 and "cannot be parsed" in violations(PRIVILEGED, argo, broken)[0]


def test_persistent_volumes_inside_a_config_group_are_persistent_volumes():
    group = {"yaml": "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: m}\nspec:\n"
                     "  accessModes: [ReadWriteMany]\n  hostPath: {path: /opt/models}\n"}
    found = violations(HOSTPATH, "kubernetes:yaml/v2:ConfigGroup", group)
    assert found == ["PersistentVolume 'm': a hostPath volume must be ReadOnlyMany only, has accessModes ['ReadWriteMany']"]


@pytest.mark.parametrize("type_, props, fragment", [
    (f"{RBAC}ClusterRole", {"rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["*"]}]}, "every verb on every"),
    (f"{RBAC}Role", {"rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                                "verbs": ["escalate"]}]}, "'escalate' on clusterroles"),
    (f"{RBAC}ClusterRole", {"rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["*"],
                                       "verbs": ["bind"]}]}, "'bind' on *"),
    (f"{RBAC}ClusterRole", {"rules": [{"apiGroups": [""], "resources": ["serviceaccounts"],
                                       "verbs": ["impersonate"]}]}, "'impersonate' on serviceaccounts"),
    (f"{RBAC}ClusterRole", {"rules": [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}]},
     "nodes/proxy"),
    (f"{RBAC}ClusterRoleBinding", {"roleRef": {"kind": "ClusterRole", "name": "view"},
                                   "subjects": [{"kind": "Group", "name": "system:authenticated"}]}, "everyone"),
    (f"{RBAC}RoleBinding", {"roleRef": {"kind": "Role", "name": "reader"},
                            "subjects": [{"kind": "User", "name": "system:anonymous"}]}, "everyone"),
    (f"{RBAC}ClusterRoleBinding", {"roleRef": {"kind": "ClusterRole", "name": "edit"},
                                   "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": "ml-jobs"}]},
     "cluster-wide"),
    ("aws:eks/accessPolicyAssociation:AccessPolicyAssociation",
     {"principalArn": "arn:aws:iam::1:role/x", "accessScope": {"type": "cluster"},
      "policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy"}, "AmazonEKSAdminPolicy"),
])
def test_cluster_admin_by_other_names(type_, props, fragment):
    found = violations(ADMIN, type_, props)
    assert len(found) == 1 and fragment in found[0], found


def test_namespace_scoped_grants_that_are_fine():
    edit_in_one_namespace = {"roleRef": {"kind": "ClusterRole", "name": "edit"},
                             "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": "ml-jobs"}]}
    assert violations(ADMIN, f"{RBAC}RoleBinding", edit_in_one_namespace) == []
    admin_in_a_namespace = {"principalArn": "arn:aws:iam::1:role/x",
                            "accessScope": {"type": "namespace", "namespaces": ["ml-jobs"]},
                            "policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy"}
    assert violations(ADMIN, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation", admin_in_a_namespace) == []


HELM = "k8s-helm-chart-allowed"
RELEASE = "kubernetes:helm.sh/v3:Release"


def test_only_reviewed_charts_at_exact_versions():
    from infra import autoscaler, gpu
    for module in (autoscaler, gpu):  # kiln's own charts are the default list
        ok = {"chart": module.CHART, "version": module.DEFAULT_CHART_VERSION,
              "repositoryOpts": {"repo": module.CHART_REPOSITORY}}
        assert violations(HELM, RELEASE, ok) == []
    found = violations(HELM, RELEASE, {"chart": "node-shell", "version": "1.0.0",
                                       "repositoryOpts": {"repo": "https://charts.example.com/"}})
    assert len(found) == 1 and "'https://charts.example.com/node-shell', which is not in allowedCharts" in found[0]
    for version in (None, "^9.46.0", "9.x", ">=1.0.0", "*", "latest"):
        found = violations(HELM, RELEASE, {"chart": autoscaler.CHART, "version": version,
                                           "repositoryOpts": {"repo": autoscaler.CHART_REPOSITORY}})
        assert len(found) == 1 and "exact version" in found[0], version
    oci = {"chart": "oci://ghcr.io/example/charts/app", "version": "1.2.3"}
    assert len(violations(HELM, "kubernetes:helm.sh/v4:Chart", oci)) == 1
    assert violations(HELM, "kubernetes:helm.sh/v4:Chart", oci,
                      config={"allowedCharts": ["oci://ghcr.io/example/charts/app"]}) == []
    v3 = {"chart": "app", "version": "1.2.3", "fetchOpts": {"repo": "https://charts.example.com"}}
    assert violations(HELM, "kubernetes:helm.sh/v3:Chart", v3,
                      config={"allowedCharts": ["https://charts.example.com/app"]}) == []


LB = "k8s-no-internet-load-balancer"
SERVICE = "kubernetes:core/v1:Service"


def lb(annotations=None, **spec):
    return {"metadata": {"annotations": annotations or {}}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}],
                                                                     **spec}}


@pytest.mark.parametrize("type_, props, fragment", [
    (SERVICE, lb(), "open to 0.0.0.0/0"),
    (SERVICE, lb(loadBalancerSourceRanges=["0.0.0.0/1", "128.0.0.0/1"]), "the whole internet"),
    (SERVICE, lb({"service.beta.kubernetes.io/load-balancer-source-ranges": "3.0.0.0/8, 4.0.0.0/8"}), "public addresses"),
    (SERVICE, lb({"service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"}), "open to 0.0.0.0/0"),
    ("kubernetes:networking.k8s.io/v1:Ingress",
     {"metadata": {"annotations": {"alb.ingress.kubernetes.io/scheme": "internet-facing"}}}, "internet-facing ALB"),
    ("kubernetes:yaml/v2:ConfigGroup", {"yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                                                "spec: {type: LoadBalancer, ports: [{port: 80}]}\n"}, "open to 0.0.0.0/0"),
])
def test_load_balancers_that_kubernetes_opens_to_the_internet(type_, props, fragment):
    found = violations(LB, type_, props)
    assert len(found) == 1 and fragment in found[0], found


def test_internal_or_narrow_load_balancers():
    for props in (lb({"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}),
                  lb({"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}),
                  lb(loadBalancerSourceRanges=["203.0.113.0/24"]),
                  {"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}):
        assert violations(LB, SERVICE, props) == [], props
    internal_alb = {"metadata": {"annotations": {"alb.ingress.kubernetes.io/scheme": "internal"}}}
    assert violations(LB, "kubernetes:networking.k8s.io/v1:Ingress", internal_alb) == []


def test_an_admin_principal_not_known_yet_is_not_an_allowed_one():
    admin = {"policyArn": CLUSTER_ADMIN, "principalArn": pulumi.runtime.rpc.UNKNOWN}
    found = violations(ADMIN, ASSOCIATION, admin)
    assert len(found) == 1 and "a principal not known yet" in found[0]
    with pytest.raises(UnknownValueError):  # it may be one of the allowed ones
        violations(ADMIN, ASSOCIATION, admin, config={"allowedPrincipalArns": ["arn:aws:iam::123456789012:role/ops"]})


def test_ci_access_to_a_role_not_known_yet_is_judged_by_that_roles_trust(stack_with_ci):
    import json
    unknown = pulumi.runtime.rpc.UNKNOWN
    ops = resource("aws:iam/role:Role", "ops", {"arn": unknown, "assumeRolePolicy": json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/ops"}, "Action": "sts:AssumeRole"}]})})
    entry = resource("aws:eks/accessEntry:AccessEntry", "ci-access", {"principalArn": unknown},
                     parent_type=CI_ACCESS, property_dependencies={"principalArn": [ops]})
    association = resource(ASSOCIATION, "ci-access", {"policyArn": CLUSTER_ADMIN, "principalArn": unknown},
                           parent_type=CI_ACCESS, property_dependencies={"principalArn": [entry]})
    found = stack_violations(CI_ADMIN, [ops, entry, association])
    assert len(found) == 1 and "the role 'ops'" in found[0]
    ci = resource("aws:iam/role:Role", "ci", {"arn": unknown, "assumeRolePolicy": ci_trust()})
    entry = resource("aws:eks/accessEntry:AccessEntry", "ci-access", {"principalArn": unknown},
                     parent_type=CI_ACCESS, property_dependencies={"principalArn": [ci]})
    association = resource(ASSOCIATION, "ci-access", {"policyArn": CLUSTER_ADMIN, "principalArn": unknown},
                           parent_type=CI_ACCESS, property_dependencies={"principalArn": [entry]})
    assert stack_violations(CI_ADMIN, [ci, entry, association]) == []
    pending = resource("aws:iam/role:Role", "ci", {"arn": unknown, "assumeRolePolicy": unknown})
    entry = resource("aws:eks/accessEntry:AccessEntry", "ci-access", {"principalArn": unknown},
                     parent_type=CI_ACCESS, property_dependencies={"principalArn": [pending]})
    association = resource(ASSOCIATION, "ci-access", {"policyArn": CLUSTER_ADMIN, "principalArn": unknown},
                           parent_type=CI_ACCESS, property_dependencies={"principalArn": [entry]})
    with pytest.raises(UnknownValueError):
        stack_violations(CI_ADMIN, [pending, entry, association])
