"""Kubernetes: the model is the only host path a pod may see, read-only; no privileged pods; Jobs clean up.

The rules read *every* Kubernetes resource, not a list of kinds: the pod
templates of Deployments, StatefulSets, DaemonSets, Jobs, CronJobs (and their
``…Patch`` forms) as much as custom resources that carry pod specs of their own
(an Argo Workflow, a Kubeflow PyTorchJob, a Helm release's values). They walk
the whole object and judge what they find: a ``hostPath`` or ``local`` volume
outside the model directory, a mount of one without ``readOnly``, a privileged
container or a pod sharing the node's PID, IPC or network namespace, in
containers, init containers and ephemeral containers alike.

A writable hostPath (or one outside the model directory) lets a pod alter the
node or the model every later Job trusts; so can a pod that mounts a claim bound to
the hostPath PersistentVolume without ``readOnly``, since Kubernetes does not
enforce a PV's ``ReadOnlyMany`` on a mount. Jobs without requests defeat the
autoscaler's bin-packing; Jobs without a TTL pile up forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator, Optional

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from infra import ci_oidc
from infra import config as kiln_config
from infra.hostpaths import system_directory_problem
from policies.rules._props import (ADVISORY, MANDATORY, as_list, config, get, is_list, iter_mappings, known, schema,
                                   under_path)

KUBERNETES = "kubernetes:"
PERSISTENT_VOLUME = "kubernetes:core/v1:PersistentVolume"
PERSISTENT_VOLUME_CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"
# Where each workload kind keeps its pod spec (the model-claim rule binds claims to pod specs).
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
HOST_VOLUME_SOURCES = ("hostPath", "local")  # a local PersistentVolume is a host path too
HOST_NAMESPACES = {"hostPID": "the node's processes", "hostIPC": "the node's IPC", "hostNetwork": "the node's network"}
# Capabilities that break out of a container, or let it reconfigure the node's network or kernel.
DANGEROUS_CAPABILITIES = ("ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE", "SYS_RAWIO", "SYS_BOOT", "DAC_READ_SEARCH",
                          "NET_ADMIN", "BPF", "PERFMON", "MAC_ADMIN", "MAC_OVERRIDE")
# Values not known during preview that cannot hide a host path or a privilege: skipped. Any other unknown
# value (a whole template, a volume list, a securityContext) stops the rule ("can't run during preview").
_HARMLESS_KEYS = frozenset({"image", "value", "namespace", "volumeName", "serviceAccountName", "serviceName",
                            "command", "args", "workingDir", "storageClassName", "priorityClassName", "schedule"})
_HARMLESS_UNDER = frozenset({"metadata", "env", "envFrom", "data", "stringData", "binaryData", "resources"})
DEFAULT_MODEL_PATH = "/opt/models"
CONFIG_GROUP = "kubernetes:yaml/v2:ConfigGroup"


def walk(value: Any, trail: tuple = ()) -> Iterator[tuple[tuple, Mapping[str, Any]]]:
    """Every mapping in ``value`` with the keys leading to it.

    A value not known during preview is skipped where it cannot matter (an image, a namespace, anything
    under ``metadata`` or ``env``); anywhere else it raises the SDK's UnknownValueError, which reports
    "can't run during preview" and leaves the rule to ``up`` — an unknown is never taken for safe.
    """
    if isinstance(value, Mapping):
        yield trail, value
        keys: list[Any] = list(value)
    elif is_list(value):
        keys = list(range(len(value)))
    else:
        return
    for key in keys:
        try:
            child = value[key]
        except UnknownValueError:
            if key in _HARMLESS_KEYS or _HARMLESS_UNDER.intersection(k for k in trail + (key,) if isinstance(k, str)):
                continue
            raise
        yield from walk(child, trail + (key,))


def manifests(resource_type: str, props: Any) -> tuple[list[Any], Optional[str]]:
    """What a resource declares: its own properties, plus the objects in a ConfigGroup's inline ``yaml``
    (under the offline runner its children are not registered). The second item says why the yaml
    could not be read: then nothing it declares can be judged, which is itself a violation."""
    out = [props]
    text = get(props, "yaml") if resource_type == CONFIG_GROUP else None
    if isinstance(text, str):
        import yaml

        try:
            out.extend(d for d in yaml.safe_load_all(text) if d is not None)
        except yaml.YAMLError as exc:
            return out, f"yaml cannot be parsed ({type(exc).__name__}), so what it declares cannot be checked"
    return out, None


def where(trail: tuple) -> str:
    out = ""
    for key in trail:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out or "(top level)"


def pod_spec(args) -> Any:
    path = POD_SPEC_PATHS.get(args.resource_type)
    return None if path is None else get(args.props, *path)


def containers(spec: Any) -> Iterator[tuple[str, Any]]:
    for kind in CONTAINER_LISTS:
        for i, container in enumerate(iter_mappings(get(spec, kind))):
            yield f"{kind}[{i}] ({get(container, 'name', default='?')})", container


def model_path_of(args) -> str:
    """The pack's modelPath setting, else the stack's kiln:modelPath, else /opt/models."""
    configured = config(args, "modelPath", "")
    if configured:
        return configured
    try:
        return kiln_config.load().model_path
    except kiln_config.ConfigError:
        return DEFAULT_MODEL_PATH


def host_volumes(scope: Mapping[str, Any]) -> Iterator[tuple[tuple, str, Any, Any]]:
    """``(trail, source kind, name, path)`` of every hostPath/local volume in ``scope``."""
    for trail, node in walk(scope):
        for kind in HOST_VOLUME_SOURCES:
            source = node.get(kind) if kind in node else None
            if isinstance(source, Mapping) and (kind == "hostPath" or "path" in source):
                yield trail, kind, get(node, "name"), get(source, "path")


def writable_mounts(scope: Mapping[str, Any], name: Any) -> Iterator[str]:
    """Mounts of volume ``name`` anywhere in ``scope`` (containers, init and ephemeral containers, a CR's
    templates) without ``readOnly: true``."""
    for trail, node in walk(scope):
        for mount in iter_mappings(node.get("volumeMounts") if "volumeMounts" in node else None):
            if get(mount, "name") == name and get(mount, "readOnly") is not True:
                label = f" ({get(node, 'name')})" if isinstance(get(node, "name"), str) else ""
                yield f"{where(trail)}{label}"


def hostpath_problems(props: Any, model_path: str) -> Iterator[str]:
    """Host volumes outside ``model_path`` anywhere in ``props``, and every mount of a host volume without readOnly."""
    for trail, _, name, path in host_volumes(props):
        if not under_path(path, model_path):
            yield f"{where(trail)}: volume {name!r} mounts host path {path!r}, outside the model path {model_path}"
    for _, scope in walk(props):
        volumes = scope.get("volumes") if "volumes" in scope else None
        if not is_list(volumes):
            continue
        for _, _, name, _ in host_volumes({"volumes": volumes}):
            for mount in writable_mounts(scope, name):
                yield f"{mount} mounts host path volume {name!r} without readOnly: true"


def validate_hostpath(args, report_violation) -> None:
    if not args.resource_type.startswith(KUBERNETES):
        return
    model_path = model_path_of(args)
    problem = system_directory_problem(model_path) if model_path.startswith("/") else "must be an absolute path"
    if problem:
        report_violation(f"the model path {model_path!r} {problem}: no host path can be allowed under it", None)
        return
    if args.resource_type in PERSISTENT_VOLUMES:
        spec = get(args.props, "spec")
        for kind in HOST_VOLUME_SOURCES:
            if get(spec, kind) is None:
                continue
            path = get(spec, kind, "path")
            if not under_path(path, model_path):
                report_violation(f"{kind} {path!r} is outside the model path {model_path}", None)
            modes = as_list(get(spec, "accessModes"))
            if modes != ["ReadOnlyMany"]:
                report_violation(f"a {kind} volume must be ReadOnlyMany only, has accessModes {modes}", None)
        return
    objects, unreadable = manifests(args.resource_type, args.props)
    for problem in [unreadable] if unreadable else (p for o in objects for p in hostpath_problems(o, model_path)):
        report_violation(problem, None)


def privilege_problems(props: Any) -> Iterator[str]:
    for trail, node in walk(props):
        for key, what in HOST_NAMESPACES.items():
            if key in node and node[key] is True:
                yield f"{where(trail + (key,))}: true shares {what} with the pod"
        context = node.get("securityContext") if "securityContext" in node else None
        if isinstance(context, Mapping):
            at = where(trail + ("securityContext",))
            if get(context, "privileged") is True:
                yield f"{at}.privileged: true gives the container the node"
            added = [str(c).upper().removeprefix("CAP_") for c in as_list(get(context, "capabilities", "add"))]
            dangerous = [c for c in added if c in DANGEROUS_CAPABILITIES]
            if dangerous:
                yield f"{at}.capabilities.add grants {', '.join(dangerous)}"


def validate_no_privileged(args, report_violation) -> None:
    if args.resource_type.startswith(KUBERNETES):
        objects, unreadable = manifests(args.resource_type, args.props)
        for problem in [unreadable] if unreadable else (p for o in objects for p in privilege_problems(o)):
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
def _namespace(props: Any) -> Any:
    """The namespace, or None while not known (a new namespace's name during preview): the binding is
    still found through the other side, so the rule need not wait for ``up``."""
    return known(props, "metadata", "namespace")


def _same_namespace(a: Any, b: Any) -> bool:
    """Unset or not-yet-known namespaces match anything: better a false alarm than a missed mount."""
    return not (isinstance(a, str) and isinstance(b, str)) or a == b


def hostpath_claims(resources) -> dict[tuple[Any, str], str]:
    """``(namespace, claim name) -> PV name`` for every claim bound to a hostPath (or local) PersistentVolume,
    through the PV's ``claimRef`` or the claim's ``volumeName``."""
    volumes = {}
    for r in resources:
        if r.resource_type in PERSISTENT_VOLUMES and any(get(r.props, "spec", k) is not None for k in HOST_VOLUME_SOURCES):
            name = known(r.props, "metadata", "name")
            volumes[name if isinstance(name, str) else r.name] = r
    claims: dict[tuple[Any, str], str] = {}
    for pv_name, pv in volumes.items():
        ref_name = known(pv.props, "spec", "claimRef", "name")
        if isinstance(ref_name, str):
            claims[(known(pv.props, "spec", "claimRef", "namespace"), ref_name)] = pv_name
    for r in resources:
        if r.resource_type in PERSISTENT_VOLUME_CLAIMS:
            volume, name = known(r.props, "spec", "volumeName"), known(r.props, "metadata", "name")
            if isinstance(volume, str) and volume in volumes and isinstance(name, str):
                claims[(_namespace(r.props), name)] = volume
    return claims


def writable_claim_mounts(props: Any, namespace: Any, claims: dict[tuple[Any, str], str]) -> list[str]:
    """Mounts without readOnly of a claim bound to a host-path PV, in any pod spec (or custom resource) in ``props``."""
    problems = []
    for _, scope in walk(props):
        for volume in iter_mappings(scope.get("volumes") if "volumes" in scope else None):
            source = get(volume, "persistentVolumeClaim")
            claim = get(source, "claimName")
            bound = [pv for (ns, name), pv in claims.items() if name == claim and _same_namespace(ns, namespace)]
            if not bound or get(source, "readOnly") is True:
                continue
            name = get(volume, "name")
            for mount in writable_mounts(scope, name):
                problems.append(f"{mount} mounts volume {name!r} (claim {claim!r}, bound to hostPath "
                                f"PersistentVolume {bound[0]!r}) without readOnly: true")
    return problems


def validate_model_claim_readonly(args, report_violation) -> None:
    claims = hostpath_claims(args.resources)
    if not claims:
        return
    for r in args.resources:
        if r.resource_type.startswith(KUBERNETES) and r.resource_type not in PERSISTENT_VOLUMES:
            for problem in writable_claim_mounts(r.props, _namespace(r.props), claims):
                report_violation(f"{r.resource_type} {r.name!r}: {problem}", r.urn)


# --------------------------------------------------------------------------- cluster-admin

RBAC = "kubernetes:rbac.authorization.k8s.io/v1:"
BINDINGS = tuple(f"{RBAC}{k}{p}" for k in ("ClusterRoleBinding", "RoleBinding") for p in ("", "Patch"))
ROLES = tuple(f"{RBAC}{k}{p}" for k in ("ClusterRole", "Role") for p in ("", "Patch"))
ACCESS_POLICY_ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
EKS_COMPONENT = "eks:index:Cluster"
ADMIN_ROLES = ("cluster-admin",)
ADMIN_GROUPS = ("system:masters",)
ADMIN_ACCESS_POLICIES = ("AmazonEKSClusterAdminPolicy",)


def _admin_access_policy(arn: Any) -> bool:
    return isinstance(arn, str) and arn.rsplit("/", 1)[-1] in ADMIN_ACCESS_POLICIES


# kiln's own grant: the CI deploy role's cluster-admin association (infra/ci_access.py, kiln:ciOidc). Declared by
# this component, it is left to the stack rule below, which checks whom it grants: the component's type is no proof.
CI_ACCESS_COMPONENT = "kiln:infra:CiClusterAccess"
ROLE = "aws:iam/role:Role"


def parent_type(urn: str) -> Optional[str]:
    """The type of a resource's parent, from its URN (``…::parentType$type::name``); None at the top level."""
    parts = urn.split("::")
    chain = parts[2].split("$") if len(parts) >= 4 else []
    return chain[-2] if len(chain) > 1 else None


def stack_ci_oidc() -> Optional[kiln_config.CiOidcConfig]:
    """The stack's kiln:ciOidc, or None (not set, or no valid kiln config: then nothing is kiln's CI access)."""
    try:
        return kiln_config.load().ci_oidc
    except kiln_config.ConfigError:
        return None


def is_kiln_ci_access(urn: str, props: Any) -> bool:
    """An admin association declared by kiln's CiClusterAccess, in a stack that sets kiln:ciOidc."""
    return (parent_type(urn) == CI_ACCESS_COMPONENT and _admin_access_policy(get(props, "policyArn"))
            and stack_ci_oidc() is not None)


def cluster_admin_problems(args, allowed: list[str]) -> Iterator[str]:
    t, props = args.resource_type, args.props
    if t in BINDINGS:
        if get(props, "roleRef", "kind") == "ClusterRole" and get(props, "roleRef", "name") in ADMIN_ROLES:
            yield f"binds ClusterRole {get(props, 'roleRef', 'name')!r} (every verb on every resource)"
        for subject in iter_mappings(get(props, "subjects")):
            if get(subject, "kind") == "Group" and get(subject, "name") in ADMIN_GROUPS:
                yield f"binds group {get(subject, 'name')!r}, which bypasses RBAC"
    elif t in ROLES:
        for i, rule in enumerate(iter_mappings(get(props, "rules"))):
            if all("*" in as_list(get(rule, k)) for k in ("verbs", "resources", "apiGroups")):
                yield f"rules[{i}] grants every verb on every resource of every API group (cluster-admin by another name)"
    elif t == ACCESS_POLICY_ASSOCIATION:
        if (_admin_access_policy(get(props, "policyArn")) and get(props, "principalArn") not in allowed
                and not is_kiln_ci_access(args.urn, props)):
            yield (f"associates {get(props, 'policyArn')} with {get(props, 'principalArn')}; only kiln's CI deploy "
                   "access (kiln:ciOidc) and the principals in allowedPrincipalArns may hold cluster admin")
    elif t == ACCESS_ENTRY:
        groups = [g for g in as_list(get(props, "kubernetesGroups")) if g in ADMIN_GROUPS]
        if groups and get(props, "principalArn") not in allowed:
            yield f"maps {get(props, 'principalArn')} to {', '.join(groups)}"
    elif t == EKS_COMPONENT:
        entries = get(props, "accessEntries", default={})
        for name in entries if isinstance(entries, Mapping) else ():
            entry = entries[name]
            principal = get(entry, "principalArn")
            policies = get(entry, "accessPolicies", default={})
            for key in policies if isinstance(policies, Mapping) else ():
                if _admin_access_policy(get(policies[key], "policyArn")) and principal not in allowed:
                    yield f"accessEntries.{name} associates {get(policies[key], 'policyArn')} with {principal}"
            if any(g in ADMIN_GROUPS for g in as_list(get(entry, "kubernetesGroups"))) and principal not in allowed:
                yield f"accessEntries.{name} maps {principal} to system:masters"
        for key in ("roleMappings", "userMappings"):
            for i, mapping in enumerate(iter_mappings(get(props, key))):
                if any(g in ADMIN_GROUPS for g in as_list(get(mapping, "groups"))):
                    yield f"{key}[{i}] maps a principal to system:masters"


def validate_no_cluster_admin(args, report_violation) -> None:
    allowed = list(config(args, "allowedPrincipalArns", []))
    for problem in cluster_admin_problems(args, allowed):
        report_violation(problem, None)


def validate_ci_access_grants_the_ci_deploy_role(args, report_violation) -> None:
    """kiln's CI access association must grant cluster admin to the CI deploy role and nobody else.

    The CI deploy role is recognised by its trust policy, not its name: exactly the trust infra/roles.py
    writes for the stack's kiln:ciOidc (web identity through this account's IAM OIDC provider for
    ``providerUrl``, ``StringEquals`` on the audience and the one subject). A role anyone else can assume,
    or a role of another account, is not it. Values not known during preview (a role or provider the same
    update creates) are left to the run that knows them ("can't run during preview").
    """
    grants = [r for r in args.resources if r.resource_type == ACCESS_POLICY_ASSOCIATION
              and parent_type(r.urn) == CI_ACCESS_COMPONENT and _admin_access_policy(known(r.props, "policyArn"))]
    ci = stack_ci_oidc()
    if not grants or ci is None:
        return  # nothing deferred: k8s-no-cluster-admin-binding judged every association itself
    ci_roles, unverifiable = set(), []
    for role in (r for r in args.resources if r.resource_type == ROLE):
        arn, trust = known(role.props, "arn"), known(role.props, "assumeRolePolicy")
        if arn is None or trust is None:
            unverifiable.append(role)
        elif ci_oidc.is_deploy_role_trust(trust, arn, ci.provider_url, ci.audience, ci.subject, ci.provider_arn):
            ci_roles.add(arn)
    for grant in grants:
        principal = get(grant.props, "principalArn")  # unknown: the SDK's "can't run during preview"
        if principal in ci_roles:
            continue
        if unverifiable:  # a role whose ARN or trust is not known yet may be the CI deploy role
            get(unverifiable[0].props, "arn")
            get(unverifiable[0].props, "assumeRolePolicy")
        report_violation(
            f"{CI_ACCESS_COMPONENT} {grant.name!r} associates {get(grant.props, 'policyArn')} with {principal}, "
            f"which is not kiln's CI deploy role: no role of this stack with that ARN trusts only "
            f"{ci.provider_url} tokens, through its own account's IAM OIDC provider"
            f"{' ' + ci.provider_arn if ci.provider_arn else ''}, for audience {ci.audience!r} and subject "
            f"{ci.subject!r} (kiln:ciOidc)",
            grant.urn)


POLICIES = [
    ResourceValidationPolicy(
        name="k8s-hostpath-model-only-readonly",
        description="Host path (hostPath, local) volumes only expose the model path, read-only, in every "
                    "Kubernetes resource (PersistentVolumes, pod templates, custom resources).",
        validate=validate_hostpath,
        enforcement_level=MANDATORY,
        config_schema=schema(modelPath={"type": "string", "default": "",
                                        "description": "empty: the stack's kiln:modelPath (else /opt/models)"}),
    ),
    ResourceValidationPolicy(
        name="k8s-no-privileged-or-host-namespaces",
        description="No container is privileged or adds a dangerous capability; no pod shares the node's "
                    "PID, IPC or network namespace (every Kubernetes resource, custom resources included).",
        validate=validate_no_privileged,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="k8s-no-cluster-admin-binding",
        description="Nothing grants cluster-admin: RBAC bindings to cluster-admin or system:masters, wildcard "
                    "ClusterRoles, EKS access entries with AmazonEKSClusterAdminPolicy or system:masters.",
        validate=validate_no_cluster_admin,
        enforcement_level=MANDATORY,
        config_schema=schema(allowedPrincipalArns={"type": "array", "items": {"type": "string"}, "default": []}),
    ),
    StackValidationPolicy(
        name="k8s-ci-cluster-admin-only-for-the-ci-deploy-role",
        description="kiln's CI cluster-admin access (kiln:ciOidc) grants exactly the CI deploy role, recognised by "
                    "its trust policy (this account's OIDC provider for ciOidc.providerUrl, one audience, one "
                    "subject), never another principal.",
        validate=validate_ci_access_grants_the_ci_deploy_role,
        enforcement_level=MANDATORY,
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
