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

import re
from collections.abc import Mapping
from typing import Any, Iterator, Optional

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from infra import ci_oidc, hostpaths, netranges
from infra import config as kiln_config
from infra.hostpaths import system_directory_problem
from policies.rules._props import (ADVISORY, MANDATORY, Deferred, as_list, config, dependency_urns, get, is_list,
                                   iter_mappings, known, schema, under_path, unknown_error)

KUBERNETES = "kubernetes:"
PERSISTENT_VOLUME = "kubernetes:core/v1:PersistentVolume"
PERSISTENT_VOLUME_CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"
PERSISTENT_VOLUMES = (PERSISTENT_VOLUME, f"{PERSISTENT_VOLUME}Patch")
PERSISTENT_VOLUME_CLAIMS = (PERSISTENT_VOLUME_CLAIM, f"{PERSISTENT_VOLUME_CLAIM}Patch")
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
HOST_VOLUME_SOURCES = ("hostPath", "local")  # a local PersistentVolume is a host path too
HOST_NAMESPACES = {"hostPID": "the node's processes", "hostIPC": "the node's IPC", "hostNetwork": "the node's network"}
# Pod Security Standards, baseline level (kubernetes.io/docs/concepts/security/pod-security-standards): the
# capabilities a container may add — anything else (SYS_ADMIN, NET_ADMIN, NET_RAW, SYS_RESOURCE, ALL, ...) may
# break out of the container or reconfigure the node — the SELinux types, and the sysctls safe for any pod.
BASELINE_CAPABILITIES = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                   "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
BASELINE_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
SAFE_SYSCTLS = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                          "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                          "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                          "net.ipv4.tcp_keepalive_probes"})
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
_SECCOMP_ANNOTATIONS = ("seccomp.security.alpha.kubernetes.io/pod", "container.seccomp.security.alpha.kubernetes.io/")
# Values not known during preview that cannot hide a host path or a privilege: skipped. Any other unknown
# value (a whole template, a volume list, a securityContext) stops the rule ("can't run during preview").
_HARMLESS_KEYS = frozenset({"image", "value", "namespace", "volumeName", "serviceAccountName", "serviceName",
                            "command", "args", "workingDir", "storageClassName", "priorityClassName", "schedule"})
_HARMLESS_UNDER = frozenset({"metadata", "env", "envFrom", "data", "stringData", "binaryData", "resources"})
DEFAULT_MODEL_PATH = kiln_config.default("modelPath")
CONFIG_GROUP = "kubernetes:yaml/v2:ConfigGroup"
POD_SPEC_PATCH = "podSpecPatch"


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
    import yaml

    out = [props]
    text = get(props, "yaml") if resource_type == CONFIG_GROUP else None
    if isinstance(text, str):
        try:
            out.extend(d for d in yaml.safe_load_all(text) if d is not None)
        except yaml.YAMLError as exc:
            return out, f"yaml cannot be parsed ({type(exc).__name__}), so what it declares cannot be checked"
    # A pod spec patch given as text (Argo's podSpecPatch, YAML or JSON) is merged into the pod as it starts.
    for obj in list(out):
        for trail, node in walk(obj):
            patch = node.get(POD_SPEC_PATCH) if POD_SPEC_PATCH in node else None
            if isinstance(patch, str):
                try:
                    out.append({"podSpecPatch": yaml.safe_load(patch)})
                except yaml.YAMLError as exc:
                    return out, (f"{where(trail + (POD_SPEC_PATCH,))} cannot be parsed ({type(exc).__name__}), so "
                                 "what it adds to the pod cannot be checked")
    return out, None


def where(trail: tuple) -> str:
    out = ""
    for key in trail:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out or "(top level)"


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


def _path_problem(path: Any, model_path: str) -> Optional[str]:
    """Why a host path may reach outside the model path, or None. ``..`` and ``.`` are refused even when they
    stay inside on paper: the kernel resolves them through symlinks (the model's own ``current`` is one)."""
    if not under_path(path, model_path):
        return f"{path!r}, outside the model path {model_path}"
    segments = path.rstrip("/").split("/")[1:]
    if any(seg in ("", ".", "..") for seg in segments):
        return (f"{path!r}, which is not a normalised path ('.', '..' and '//' are resolved by the node, through "
                f"symlinks, not by this rule); write it as {hostpaths.normalise(path)!r}")
    return None


def hostpath_problems(props: Any, model_path: str) -> Iterator[str]:
    """Host volumes outside ``model_path`` anywhere in ``props``, and every mount of a host volume without readOnly."""
    for trail, _, name, path in host_volumes(props):
        problem = _path_problem(path, model_path)
        if problem:
            yield f"{where(trail)}: volume {name!r} mounts host path {problem}"
    for _, scope in walk(props):
        volumes = scope.get("volumes") if "volumes" in scope else None
        if not is_list(volumes):
            continue
        for _, _, name, _ in host_volumes({"volumes": volumes}):
            for mount in writable_mounts(scope, name):
                yield f"{mount} mounts host path volume {name!r} without readOnly: true"


def persistent_volume_problems(spec: Any, model_path: str) -> Iterator[str]:
    for kind in HOST_VOLUME_SOURCES:
        if get(spec, kind) is None:
            continue
        path = get(spec, kind, "path")
        problem = _path_problem(path, model_path)
        if problem:
            yield f"{kind} {problem.replace(f'{path!r}, outside', f'{path!r} is outside', 1)}"
        modes = as_list(get(spec, "accessModes"))
        if modes != ["ReadOnlyMany"]:
            yield f"a {kind} volume must be ReadOnlyMany only, has accessModes {modes}"


def validate_hostpath(args, report_violation) -> None:
    if not args.resource_type.startswith(KUBERNETES):
        return
    model_path = model_path_of(args)
    problem = system_directory_problem(model_path) if model_path.startswith("/") else "must be an absolute path"
    if problem:
        report_violation(f"the model path {model_path!r} {problem}: no host path can be allowed under it", None)
        return
    if args.resource_type in PERSISTENT_VOLUMES:
        for problem in persistent_volume_problems(get(args.props, "spec"), model_path):
            report_violation(problem, None)
        return
    objects, unreadable = manifests(args.resource_type, args.props)
    if unreadable:
        report_violation(unreadable, None)
        return
    for o in objects:
        if o is not args.props and isinstance(o, Mapping) and o.get("kind") == "PersistentVolume":
            for problem in persistent_volume_problems(get(o, "spec"), model_path):
                report_violation(f"PersistentVolume {get(o, 'metadata', 'name')!r}: {problem}", None)
        for problem in hostpath_problems(o, model_path):
            report_violation(problem, None)


def _context_problems(context: Mapping[str, Any], at: str) -> Iterator[str]:
    """What a pod's or container's securityContext allows beyond Pod Security's baseline."""
    if get(context, "privileged") is True:
        yield f"{at}.privileged: true gives the container the node"
    added = [str(c).strip().upper().removeprefix("CAP_") for c in as_list(get(context, "capabilities", "add"))]
    beyond = [c for c in added if c not in BASELINE_CAPABILITIES]
    if beyond:
        yield f"{at}.capabilities.add grants {', '.join(beyond)} (beyond Pod Security's baseline)"
    if get(context, "procMount") not in (None, "Default"):
        yield f"{at}.procMount: {get(context, 'procMount')} unmasks the node's /proc"
    for key in ("seccompProfile", "appArmorProfile"):
        if str(get(context, key, "type", default="")).lower() == "unconfined":
            yield f"{at}.{key}.type: Unconfined turns off the runtime's {key[:-7]} filter"
    selinux = get(context, "seLinuxOptions")
    if selinux is not None:
        if get(selinux, "type", default="") not in BASELINE_SELINUX_TYPES:
            yield f"{at}.seLinuxOptions.type {get(selinux, 'type')!r} is not a container type (spc_t is unconfined)"
        for key in ("user", "role"):
            if get(selinux, key):
                yield f"{at}.seLinuxOptions.{key} may not be set (Pod Security baseline)"
    if get(context, "windowsOptions", "hostProcess") is True:
        yield f"{at}.windowsOptions.hostProcess: true runs the container as a process of the node"
    unsafe = [get(x, "name") for x in iter_mappings(get(context, "sysctls")) if get(x, "name") not in SAFE_SYSCTLS]
    if unsafe:
        yield f"{at}.sysctls sets {', '.join(map(str, unsafe))}, which are not safe for a pod (they reach the node)"


def privilege_problems(props: Any) -> Iterator[str]:
    for trail, node in walk(props):
        for key, what in HOST_NAMESPACES.items():
            if key in node and node[key] is True:
                yield f"{where(trail + (key,))}: true shares {what} with the pod"
        context = node.get("securityContext") if "securityContext" in node else None
        if isinstance(context, Mapping):
            yield from _context_problems(context, where(trail + ("securityContext",)))
        if "containerPort" in node and get(node, "hostPort") not in (None, 0):
            yield f"{where(trail)}.hostPort {get(node, 'hostPort')} binds the node's own port (Pod Security baseline)"
        labels = node.get("labels") if trail[-1:] == ("metadata",) and "labels" in node else None
        if isinstance(labels, Mapping) and str(get(labels, PSA_ENFORCE, default="")).lower() == "privileged":
            yield f"{where(trail)}.labels.{PSA_ENFORCE}: privileged lets any pod of the namespace in"
        annotations = node.get("annotations") if trail[-1:] == ("metadata",) and "annotations" in node else None
        if isinstance(annotations, Mapping):
            for name in annotations:
                for prefix, what in ((_APPARMOR_ANNOTATION, "AppArmor"), *((p, "seccomp") for p in _SECCOMP_ANNOTATIONS)):
                    if str(name).startswith(prefix) and str(get(annotations, name)).strip().lower() == "unconfined":
                        yield f"{where(trail)}.annotations.{name}: unconfined turns off {what}"


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
    deferred = Deferred()  # a resource with a value not known yet is left to up; the others are judged now

    def judge(r) -> None:
        for problem in writable_claim_mounts(r.props, _namespace(r.props), claims):
            report_violation(f"{r.resource_type} {r.name!r}: {problem}", r.urn)
    for r in args.resources:
        if r.resource_type.startswith(KUBERNETES) and r.resource_type not in PERSISTENT_VOLUMES:
            deferred.attempt(judge, r)
    deferred.finish()


# --------------------------------------------------------------------------- what the pack cannot look into: Helm charts

HELM_CHARTS = {"kubernetes:helm.sh/v3:Release": "repositoryOpts", "kubernetes:helm.sh/v3:Chart": "fetchOpts",
               "kubernetes:helm.sh/v4:Chart": "repositoryOpts"}
# kiln's own charts (infra/autoscaler.py, infra/gpu.py; a test keeps them in step).
DEFAULT_ALLOWED_CHARTS = ["https://kubernetes.github.io/autoscaler/cluster-autoscaler",
                          "https://nvidia.github.io/k8s-device-plugin/nvidia-device-plugin"]
_EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def chart_source(resource_type: str, props: Any) -> str:
    """A chart as ``<repository URL>/<chart>``, or the chart reference itself (``oci://…``, a path, ``alias/chart``)."""
    chart = str(get(props, "chart", default=""))
    repo = get(props, HELM_CHARTS[resource_type], "repo")
    if repo and "://" not in chart:
        return f"{str(repo).rstrip('/')}/{chart}"
    return chart


def validate_helm_chart(args, report_violation) -> None:
    """A Helm chart's templates are rendered by the provider (a Release) or inside a component: the pack never sees
    the pods, roles and host paths in them, so only charts reviewed by hand may be installed, at an exact version
    (a range, or no version, installs whatever the repository publishes next)."""
    if args.resource_type not in HELM_CHARTS:
        return
    allowed = [str(a).rstrip("/") for a in config(args, "allowedCharts", DEFAULT_ALLOWED_CHARTS)]
    source = chart_source(args.resource_type, args.props)
    if source.rstrip("/") not in allowed:
        report_violation(f"installs chart {source!r}, which is not in allowedCharts ({', '.join(allowed) or 'none'}): "
                         "the pack cannot see the workloads and permissions a chart renders; review it and add it "
                         "to allowedCharts", None)
    version = get(args.props, "version")
    if not isinstance(version, str) or not _EXACT_VERSION.fullmatch(version.strip()):
        report_violation(f"version is {version!r}: pin the chart to an exact version (a range or none installs "
                         "whatever is published next)", None)


# --------------------------------------------------------------------------- load balancers from Kubernetes

SERVICE = "kubernetes:core/v1:Service"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
_INTERNAL = {"service.beta.kubernetes.io/aws-load-balancer-internal": ("true",),
             "service.beta.kubernetes.io/aws-load-balancer-scheme": ("internal",)}
_SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"
_ALB_SCHEME = "alb.ingress.kubernetes.io/scheme"
_ALB_CIDRS = "alb.ingress.kubernetes.io/inbound-cidrs"


def _split(value: Any) -> list[str]:
    return [c.strip() for c in str(value).split(",") if c.strip()] if value is not None else []


def load_balancer_problems(resource_type: str, props: Any, v4: int, v6: int) -> Iterator[str]:
    """A Service of type LoadBalancer or an ALB Ingress that AWS makes internet-facing, open to more than the limit.

    AWS's load balancer controllers (and the in-tree cloud provider) create the load balancer and its security group
    rules themselves, from these objects: the security-group rule never sees them."""
    annotations = get(props, "metadata", "annotations", default={})
    if resource_type.startswith(SERVICE) and get(props, "spec", "type") == "LoadBalancer":
        if any(str(get(annotations, k, default="")).strip().lower() in v for k, v in _INTERNAL.items()):
            return
        cidrs = as_list(get(props, "spec", "loadBalancerSourceRanges")) or _split(get(annotations, _SOURCE_RANGES_ANNOTATION))
        where = "an internet-facing load balancer (no aws-load-balancer-scheme: internal)"
    elif resource_type.startswith(INGRESS) and str(get(annotations, _ALB_SCHEME, default="")).strip() == "internet-facing":
        cidrs = _split(get(annotations, _ALB_CIDRS))
        where = "an internet-facing ALB"
    else:
        return
    if not cidrs:
        yield f"makes {where} open to 0.0.0.0/0 (no source ranges); make it internal or list the source ranges"
        return
    bad = netranges.unreadable(cidrs)
    if bad:
        yield f"makes {where} with source ranges that are not CIDR blocks: {', '.join(map(str, bad))}"
    reach = netranges.reach(cidrs)
    if reach.too_broad(v4, v6):
        yield f"makes {where} admitting {reach.describe()}; {netranges.limit_text(v4, v6)} allowed"


def validate_no_internet_load_balancer(args, report_violation) -> None:
    if not args.resource_type.startswith(KUBERNETES):
        return
    v4, v6 = int(config(args, "ipv4MinPrefix", netranges.DEFAULT_IPV4_MIN_PREFIX)), \
        int(config(args, "ipv6MinPrefix", netranges.DEFAULT_IPV6_MIN_PREFIX))
    objects, _ = manifests(args.resource_type, args.props)
    for o in objects:
        kind = args.resource_type if o is args.props else f"kubernetes:{get(o, 'apiVersion', default='')}:{get(o, 'kind', default='')}"
        kind = SERVICE if kind.endswith(":Service") else INGRESS if kind.endswith(":Ingress") else kind
        for problem in load_balancer_problems(kind, o, v4, v6):
            report_violation(problem, None)


# --------------------------------------------------------------------------- cluster-admin

RBAC = "kubernetes:rbac.authorization.k8s.io/v1:"
BINDINGS = tuple(f"{RBAC}{k}{p}" for k in ("ClusterRoleBinding", "RoleBinding") for p in ("", "Patch"))
ROLES = tuple(f"{RBAC}{k}{p}" for k in ("ClusterRole", "Role") for p in ("", "Patch"))
ACCESS_POLICY_ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
EKS_COMPONENT = "eks:index:Cluster"
ADMIN_ROLES = ("cluster-admin",)
# Bound cluster-wide, admin and edit read every Secret and run pods as any service account in every namespace.
CLUSTER_WIDE_ADMIN_ROLES = ("admin", "edit")
ADMIN_GROUPS = ("system:masters",)
# Everyone: a binding to these lets every authenticated (or unauthenticated) caller in.
EVERYONE = {"Group": ("system:authenticated", "system:unauthenticated"), "User": ("system:anonymous",)}
ADMIN_ACCESS_POLICIES = ("AmazonEKSClusterAdminPolicy",)
# Admin of every namespace when its access scope is the cluster.
CLUSTER_SCOPED_ADMIN_ACCESS_POLICIES = ("AmazonEKSAdminPolicy",)
# Verbs that let a subject grant itself more than it has (Kubernetes' escalation checks do not apply to them).
ESCALATION = {"escalate": ("roles", "clusterroles"), "bind": ("roles", "clusterroles"),
              "impersonate": ("users", "groups", "serviceaccounts", "uids", "userextras")}


def _admin_access_policy(arn: Any, scope: Any = None) -> bool:
    name = arn.rsplit("/", 1)[-1] if isinstance(arn, str) else None
    return name in ADMIN_ACCESS_POLICIES or (name in CLUSTER_SCOPED_ADMIN_ACCESS_POLICIES and scope == "cluster")


def rbac_rule_problems(i: int, rule: Any) -> Iterator[str]:
    verbs, resources = as_list(get(rule, "verbs")), as_list(get(rule, "resources"))
    groups = as_list(get(rule, "apiGroups"))
    if "*" in verbs and "*" in resources:
        yield (f"rules[{i}] grants every verb on every resource of {'every API group' if '*' in groups else groups} "
               "(cluster-admin by another name: Secrets, pods/exec, the node's kubelet)")
        return
    for verb, targets in ESCALATION.items():
        hit = [r for r in resources if r == "*" or r in targets] if verb in verbs or "*" in verbs else []
        if hit:
            yield f"rules[{i}] grants {verb!r} on {', '.join(hit)}: the subject can grant itself more"
    if any(r in ("nodes/proxy", "nodes/*") or (r == "*" and "" in groups) for r in resources) and \
            set(verbs) & {"*", "get", "create"}:
        yield f"rules[{i}] grants nodes/proxy: the kubelet API runs commands in every pod on the node"


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


def _not_allowed(props: Any, key: str, allowed: list[str]) -> bool:
    """The principal is not in ``allowed``; one not known yet (a preview) can only be an allowed one if any are."""
    principal = known(props, key)
    if principal is None and allowed:
        get(props, key)  # may turn out to be allowed: "can't run during preview"
    return principal not in allowed


def cluster_admin_problems(args, allowed: list[str]) -> Iterator[str]:
    t, props = args.resource_type, args.props
    if t in BINDINGS:
        role_kind, role_name = get(props, "roleRef", "kind"), get(props, "roleRef", "name")
        if role_kind == "ClusterRole" and role_name in ADMIN_ROLES:
            yield f"binds ClusterRole {role_name!r} (every verb on every resource)"
        elif role_kind == "ClusterRole" and role_name in CLUSTER_WIDE_ADMIN_ROLES and "ClusterRoleBinding" in t:
            yield (f"binds ClusterRole {role_name!r} cluster-wide: every namespace's Secrets and service accounts "
                   "(kube-system's included); bind it in one namespace with a RoleBinding")
        for subject in iter_mappings(get(props, "subjects")):
            if get(subject, "kind") == "Group" and get(subject, "name") in ADMIN_GROUPS:
                yield f"binds group {get(subject, 'name')!r}, which bypasses RBAC"
            if get(subject, "name") in EVERYONE.get(get(subject, "kind"), ()):
                yield f"binds {get(subject, 'kind')} {get(subject, 'name')!r}: everyone who reaches the API server"
    elif t in ROLES:
        for i, rule in enumerate(iter_mappings(get(props, "rules"))):
            yield from rbac_rule_problems(i, rule)
    elif t == ACCESS_POLICY_ASSOCIATION:
        if (_admin_access_policy(get(props, "policyArn"), get(props, "accessScope", "type"))
                and _not_allowed(props, "principalArn", allowed)
                and not is_kiln_ci_access(args.urn, props)):
            yield (f"associates {get(props, 'policyArn')} with {known(props, 'principalArn') or 'a principal not known yet'}; only kiln's CI deploy "
                   "access (kiln:ciOidc) and the principals in allowedPrincipalArns may hold cluster admin")
    elif t == ACCESS_ENTRY:
        groups = [g for g in as_list(get(props, "kubernetesGroups")) if g in ADMIN_GROUPS]
        if groups and _not_allowed(props, "principalArn", allowed):
            yield f"maps {known(props, 'principalArn') or 'a principal not known yet'} to {', '.join(groups)}"
    elif t == EKS_COMPONENT:
        entries = get(props, "accessEntries", default={})
        for name in entries if isinstance(entries, Mapping) else ():
            entry = entries[name]
            principal = get(entry, "principalArn")
            policies = get(entry, "accessPolicies", default={})
            for key in policies if isinstance(policies, Mapping) else ():
                if _admin_access_policy(get(policies[key], "policyArn"), get(policies[key], "accessScope", "type")) \
                        and principal not in allowed:
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
    roles = [r for r in args.resources if r.resource_type == ROLE]
    by_urn = {r.urn: r for r in roles}

    def is_ci_role(role) -> Optional[bool]:
        """Whether a role's trust is exactly the CI deploy role's; None while its trust is not known. A role whose
        ARN is not known yet (a preview) is taken to live in its trusted provider's account, as it must to be
        assumable; ``up`` judges the real ARN."""
        trust = known(role.props, "assumeRolePolicy")
        if trust is None:
            return None
        arn = known(role.props, "arn") or _stand_in_role_arn(trust)
        return arn is not None and ci_oidc.is_deploy_role_trust(trust, arn, ci.provider_url, ci.audience, ci.subject,
                                                                ci.provider_arn)

    deferred = Deferred()
    for grant in grants:
        principal = known(grant.props, "principalArn")
        if principal is not None:
            candidates = [r for r in roles if known(r.props, "arn") == principal]
            if not candidates:  # a role whose ARN is not known yet may be the one
                candidates = [r for r in roles if known(r.props, "arn") is None]
        else:  # the principal is computed from a role of this stack (through its access entry): judge that role
            candidates = _traced_roles(grant, by_urn, {r.urn: r for r in args.resources})
        verdicts = [is_ci_role(r) for r in candidates]
        if any(v is True for v in verdicts):
            continue
        if any(v is None for v in verdicts) or (principal is None and not candidates):
            deferred.unknown = deferred.unknown or unknown_error(f"{grant.name}.principalArn")
            continue
        report_violation(
            f"{CI_ACCESS_COMPONENT} {grant.name!r} associates {get(grant.props, 'policyArn')} with "
            f"{principal or 'the role ' + ', '.join(repr(r.name) for r in candidates)}, "
            f"which is not kiln's CI deploy role: no role of this stack with that ARN trusts only "
            f"{ci.provider_url} tokens, through its own account's IAM OIDC provider"
            f"{' ' + ci.provider_arn if ci.provider_arn else ''}, for audience {ci.audience!r} and subject "
            f"{ci.subject!r} (kiln:ciOidc)",
            grant.urn)
    deferred.finish()


def _traced_roles(resource, roles: dict[str, Any], everything: dict[str, Any], depth: int = 0) -> list[Any]:
    """The roles a resource's ``principalArn`` was computed from, through access entries in between."""
    found = []
    for urn in dependency_urns(resource, "principalArn"):
        if urn in roles:
            found.append(roles[urn])
        elif depth < 3 and urn in everything and everything[urn].resource_type == ACCESS_ENTRY:
            found += _traced_roles(everything[urn], roles, everything, depth + 1)
    return found


def _stand_in_role_arn(trust: Any) -> Optional[str]:
    """A role ARN in the account (and partition) of the OIDC provider a trust names, or None."""
    import json

    try:
        document = json.loads(trust) if isinstance(trust, str) else trust
        federated = document["Statement"][0]["Principal"]["Federated"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    parts = federated.split(":") if isinstance(federated, str) else []
    return f"arn:{parts[1]}:iam::{parts[4]}:role/not-known-yet" if len(parts) > 5 else None


POLICIES = [
    ResourceValidationPolicy(
        name="k8s-hostpath-model-only-readonly",
        description="Host path (hostPath, local) volumes only expose the model path, read-only, in every "
                    "Kubernetes resource (PersistentVolumes, pod templates, custom resources).",
        validate=validate_hostpath,
        enforcement_level=MANDATORY,
        config_schema=schema(modelPath={"type": "string", "default": "", "pattern": "^(/.*)?$",
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
        config_schema=schema(allowedPrincipalArns={
            "type": "array", "default": [],
            "items": {"type": "string", "pattern": "^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:(role|user|assumed-role)/[^*?]+$"}}),
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
    ResourceValidationPolicy(
        name="k8s-helm-chart-allowed",
        description="Helm charts (whose rendered workloads the pack cannot see) come from allowedCharts, at an "
                    "exact version.",
        validate=validate_helm_chart,
        enforcement_level=MANDATORY,
        config_schema=schema(allowedCharts={"type": "array", "items": {"type": "string", "minLength": 1},
                                            "default": DEFAULT_ALLOWED_CHARTS,
                                            "description": "<repository URL>/<chart>, or an oci:// reference"}),
    ),
    ResourceValidationPolicy(
        name="k8s-no-internet-load-balancer",
        description="No Service of type LoadBalancer or ALB Ingress is internet-facing beyond a /8 of public IPv4 "
                    "(ipv4MinPrefix) or /32 of IPv6: internal, or source ranges within the limit.",
        validate=validate_no_internet_load_balancer,
        enforcement_level=MANDATORY,
        config_schema=schema(
            ipv4MinPrefix={"type": "integer", "minimum": 1, "maximum": 32, "default": netranges.DEFAULT_IPV4_MIN_PREFIX},
            ipv6MinPrefix={"type": "integer", "minimum": 1, "maximum": 128, "default": netranges.DEFAULT_IPV6_MIN_PREFIX}),
    ),
    StackValidationPolicy(
        name="k8s-model-claim-mounted-readonly",
        description="Pod templates mount claims bound to a hostPath PersistentVolume read-only "
                    "(Kubernetes does not enforce the PV's ReadOnlyMany on a mount).",
        validate=validate_model_claim_readonly,
        enforcement_level=MANDATORY,
    ),
]
