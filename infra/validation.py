"""Config rules beyond types and shapes: what a value means for the cluster, one small function per area.

``infra.config.parse`` checks that each key has the right type and shape; the
rules here read the same (normalised) raw mapping and check what a well-formed
value would do: open the API to half the internet, let any repository assume the
deploy role, mount the model over ``/etc``, boot GPU nodes without GPUs. Each
function returns ``(key, rule)`` pairs; a value ``parse`` already refuses is left
to ``parse`` (one error per mistake).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Iterator, Optional

from infra import ci_oidc, hostpaths, instance_types, lifecycle, netranges, zones

Problem = tuple[str, str]

# EKS versions kiln supports: those in EKS standard or extended support that have AL2023 nodeadm and access
# entries (1.29+); update with EKS's version calendar (docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html).
SUPPORTED_KUBERNETES_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34")
# Namespaces Kubernetes and EKS own. kiln creates the jobs namespace, so `pulumi destroy` would delete it.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "amazon-cloudwatch",
                     "amazon-guardduty", "aws-observability")
# A sanity bound per zone (one ASG); the team's budget is the policy pack's cost-max-nodes-per-group.
MAX_GROUP_SIZE = 1000
# cluster-autoscaler reads node labels and taints from ASG tags, whose keys AWS caps at 128 characters.
ASG_TAG_KEY_LIMIT = 128
CA_NODE_TEMPLATE_PREFIX = "k8s.io/cluster-autoscaler/node-template/label/"  # infra/labels.py; the taint one is as long
MAX_LABEL_KEY = ASG_TAG_KEY_LIMIT - len(CA_NODE_TEMPLATE_PREFIX)
# kubelet refuses to start with --node-labels in these namespaces, except under the allowed prefixes
# (k8s.io/kubernetes pkg/kubelet/apis: KubeletLabelNamespaces, KubeletLabels).
KUBELET_RESTRICTED_NAMESPACES = ("kubernetes.io", "k8s.io")
KUBELET_ALLOWED_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")
KILN_PREFIX = "kiln.dev/"

_TAINT_RE = re.compile(r"^(?P<key>[^=:\s]+)(=(?P<value>[^:\s]*))?:(?P<effect>\w+)$")
_INSTANCE_TYPE_RE = re.compile(r"^[a-z0-9-]+\.[a-z0-9]+$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_AZ_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9][a-z]$")


def problems(raw: Mapping[str, Any], region: Optional[str] = None) -> list[Problem]:
    """Every rule below, on ``raw`` as ``parse`` normalised it (no ``kiln:`` prefix, empty values dropped)."""
    out: list[Problem] = []
    for rule in (_kubernetes_version, _endpoint_cidrs, _vpc_cidr, _model_path, _jobs_namespace, _ci_oidc,
                 _ci_oidc_roles, _node_groups, _termination_hold):
        out.extend(rule(raw))
    out.extend(_zones(raw, region))
    return out


# --------------------------------------------------------------------------- helpers


def _decoded(value: Any) -> Any:
    import json

    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _list(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = _decoded(raw.get(key))
    return value if isinstance(value, list) else []


def _bool(value: Any) -> Optional[bool]:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    return None


# --------------------------------------------------------------------------- one function per area


def _kubernetes_version(raw: Mapping[str, Any]) -> Iterator[Problem]:
    version = str(raw.get("kubernetesVersion", ""))
    m = re.fullmatch(r"1\.([0-9]+)", version)
    if m and int(m[1]) >= 29 and version not in SUPPORTED_KUBERNETES_VERSIONS:  # older: parse says >= 1.29
        yield "kubernetesVersion", (f"({version!r}) is not a supported EKS version "
                                    f"(supported: {', '.join(SUPPORTED_KUBERNETES_VERSIONS)})")


def _zones(raw: Mapping[str, Any], region: Optional[str]) -> Iterator[Problem]:
    """Every zone exists and is in the stack's region; without a known region, all zones are in one region.

    One error per mistake: with the region known, a zone elsewhere is named by its index (which implies
    "not one region"); without it, the zones are compared with each other.
    """
    named = [(i, z) for i, z in enumerate(_list(raw, "availabilityZones"))
             if isinstance(z, str) and _AZ_RE.fullmatch(z)]  # else parse names the problem
    for i, zone in named:
        problem = zones.zone_problem(zone, region)
        if problem:
            yield f"availabilityZones[{i}]", f"({zone}) {problem}"
    regions = sorted({zones.region_of(z) for _, z in named})
    if not region and len(regions) > 1:
        yield "availabilityZones", f"must all be in one region (got {', '.join(regions)})"


def _endpoint_cidrs(raw: Mapping[str, Any]) -> Iterator[Problem]:
    key = "endpointPublicAccessCidrs"
    cidrs, each_fine = [], True
    for i, cidr in enumerate(_list(raw, key)):
        try:
            net = ipaddress.ip_network(str(cidr), strict=True)
        except ValueError:
            continue  # parse: must be a CIDR block
        cidrs.append(str(net))
        if net.prefixlen == 0:
            continue  # parse: whole internet
        reach = netranges.reach([net])
        if reach.too_broad():
            each_fine = False
            yield f"{key}[{i}]", (f"({cidr}) opens the API endpoint to {reach.describe()}; "
                                  f"{netranges.limit_text()} allowed")
    together = netranges.reach(cidrs)
    if each_fine and len(cidrs) > 1 and together.too_broad():
        yield key, (f"({', '.join(cidrs)}) together open the API endpoint to {together.describe()}; "
                    f"{netranges.limit_text()} allowed")


def _vpc_cidr(raw: Mapping[str, Any]) -> Iterator[Problem]:
    value = raw.get("vpcCidr")
    if value is None:
        return
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        return  # parse: must be a CIDR block
    if not netranges.is_private_vpc_range(net):
        yield "vpcCidr", (f"({value}) must be an IPv4 private range: inside 10.0.0.0/8, 172.16.0.0/12, "
                          "192.168.0.0/16 (RFC 1918) or 100.64.0.0/10 (RFC 6598)")


def _model_path(raw: Mapping[str, Any]) -> Iterator[Problem]:
    path = raw.get("modelPath")
    if isinstance(path, str) and path.startswith("/") and ".." not in path.split("/"):  # else parse says why
        problem = hostpaths.system_directory_problem(path)
        if problem:
            yield "modelPath", f"({path!r}) {problem}"


def _jobs_namespace(raw: Mapping[str, Any]) -> Iterator[Problem]:
    namespace = raw.get("jobsNamespace")
    if not isinstance(namespace, str) or not _DNS_LABEL_RE.fullmatch(namespace):
        return  # parse: must be a DNS-1123 label
    if namespace in SYSTEM_NAMESPACES:
        yield "jobsNamespace", (f"({namespace!r}) is a system namespace: kiln creates the jobs namespace and "
                                "`pulumi destroy` deletes it")
    elif namespace.startswith("kube-"):
        yield "jobsNamespace", f"({namespace!r}) starts with kube-, which Kubernetes reserves for system namespaces"


def _ci_oidc(raw: Mapping[str, Any]) -> Iterator[Problem]:
    ci = _decoded(raw.get("ciOidc"))
    if not isinstance(ci, Mapping):
        return  # parse: must be a map
    allow_custom: Optional[bool] = False
    if "allowCustomIssuer" in ci:
        allow_custom = _bool(ci["allowCustomIssuer"])
        if allow_custom is None:
            yield "ciOidc.allowCustomIssuer", f"({ci['allowCustomIssuer']!r}) must be true or false"
    issuer, audience, subject = ci.get("providerUrl"), ci.get("audience"), ci.get("subject")
    # With an override that is neither true nor false, the issuer is not judged (one error per mistake).
    if isinstance(issuer, str) and isinstance(audience, str) and issuer and audience and allow_custom is not None:
        issuer_problem, audience_problem = ci_oidc.issuer_problem(issuer, audience, allow_custom)
        if issuer_problem:
            yield "ciOidc.providerUrl", issuer_problem
        if audience_problem:
            yield "ciOidc.audience", audience_problem
    # "*" and "repo:*" are refused by parse already.
    if isinstance(subject, str) and subject and subject.strip() not in ("*", "repo:*"):
        problem = ci_oidc.subject_problem(subject, ci_oidc.system_of(issuer) if isinstance(issuer, str) else None)
        if problem:
            yield "ciOidc.subject", problem


def _ci_oidc_roles(raw: Mapping[str, Any]) -> Iterator[Problem]:
    """One role per purpose: each subject fits its purpose, every role names the deploy role's repository, and no
    token satisfies two roles' trusts (a pull request's never the deploy or rotation role's)."""
    ci = _decoded(raw.get("ciOidc"))
    if not isinstance(ci, Mapping):
        return  # parse: must be a map
    issuer, audience = ci.get("providerUrl"), ci.get("audience")
    system = ci_oidc.system_of(issuer) if isinstance(issuer, str) else None
    allow_custom = _bool(ci.get("allowCustomIssuer", False))
    deploy = ci.get("subject")
    # The deploy subject is judged by _ci_oidc (and parse); cross-role rules need it valid.
    valid = {"deploy": (audience, deploy)} if isinstance(deploy, str) and isinstance(audience, str) and deploy \
        and audience and ci_oidc.subject_problem(deploy, system) is None else {}
    for purpose, subject_rule in (("rotation", ci_oidc.subject_problem), ("preview", ci_oidc.preview_subject_problem)):
        role = _decoded(ci.get(purpose))
        if not isinstance(role, Mapping):
            continue  # parse: absent, or must be a map
        subject, own_audience = role.get("subject"), role.get("audience")
        role_audience = own_audience if own_audience is not None else audience
        ok = isinstance(subject, str) and bool(subject) and isinstance(role_audience, str) and bool(role_audience)
        if isinstance(subject, str) and subject:
            problem = subject_rule(subject, system)
            if problem:
                yield f"ciOidc.{purpose}.subject", problem
                ok = False
        if isinstance(own_audience, str) and own_audience and isinstance(issuer, str) and issuer \
                and allow_custom is not None:
            problem = ci_oidc.issuer_problem(issuer, own_audience, allow_custom)[1]
            other = [p for p, a in ci_oidc.GITLAB_ROLE_AUDIENCES.items() if a == own_audience and p != purpose]
            if problem or other:
                yield f"ciOidc.{purpose}.audience", problem or (
                    f"({own_audience!r}) is the {other[0]} role's audience in kiln's GitLab template")
                ok = False
        if ok:
            valid[purpose] = (role_audience, subject)
    if "deploy" not in valid:
        return
    repository = ci_oidc.repository_of(valid["deploy"][1])
    for purpose in ("rotation", "preview"):
        if purpose in valid and ci_oidc.repository_of(valid[purpose][1]) != repository:
            yield f"ciOidc.{purpose}.subject", (f"({valid[purpose][1]!r}) names another repository than the deploy "
                                                f"role's subject ({repository}): every CI role is this repository's")
            del valid[purpose]
    for first, second in (("deploy", "rotation"), ("deploy", "preview"), ("rotation", "preview")):
        if first in valid and second in valid:
            problem = ci_oidc.role_overlap_problem((first, *valid[first]), (second, *valid[second]))
            if problem:
                yield f"ciOidc.{second}.subject", problem


def _termination_hold(raw: Mapping[str, Any]) -> Iterator[Problem]:
    """The Job grace fits the lifecycle hook's global timeout, with time for evicted Jobs to stop.

    AWS ends ``Terminating:Wait`` after min(48 h, 100 x the heartbeat timeout) whatever the heartbeats: a
    longer grace would be cut short by AWS instead of ended by the handler (infra/lifecycle.py).
    """
    heartbeat = _int(raw.get("terminationHeartbeatSeconds", lifecycle.DEFAULT_HEARTBEAT_SECONDS))
    grace = _int(raw.get("terminationJobGraceSeconds", lifecycle.DEFAULT_JOB_GRACE_SECONDS))
    if heartbeat is None or grace is None or grace < 0 or not (
            lifecycle.MIN_HEARTBEAT_SECONDS <= heartbeat <= lifecycle.MAX_HEARTBEAT_SECONDS):
        return  # parse names the key
    limit = lifecycle.max_job_grace(heartbeat)
    if grace > limit:
        yield "terminationJobGraceSeconds", (
            f"({grace}) must be <= {limit}: the lifecycle hook's global timeout is min(48 h, 100 x "
            f"kiln:terminationHeartbeatSeconds ({heartbeat})) = {lifecycle.global_timeout(heartbeat)} s, less "
            f"{lifecycle.STOP_ALLOWANCE_SECONDS} s for evicted Jobs to stop; raise terminationHeartbeatSeconds "
            "or lower the grace")


def _node_groups(raw: Mapping[str, Any]) -> Iterator[Problem]:
    for i, group in enumerate(_list(raw, "nodeGroups")):
        if isinstance(group, Mapping):
            base = f"nodeGroups[{i}]"
            yield from _instance_types(base, group)
            yield from _group_size(base, group)
            yield from _labels(base, group)
            yield from _taints(base, group)


def _instance_types(base: str, group: Mapping[str, Any]) -> Iterator[Problem]:
    types = _decoded(group.get("instanceTypes"))
    if not isinstance(types, list):
        return
    types = [t for t in types if isinstance(t, str) and _INSTANCE_TYPE_RE.fullmatch(t)]
    gpu, spot = _bool(group.get("gpu", False)), _bool(group.get("spot", False))
    for j, t in enumerate(types):
        if gpu and not instance_types.has_nvidia_gpu(t):
            yield f"{base}.instanceTypes[{j}]", (f"({t}) has no NVIDIA GPU, but the group has gpu: true (NVIDIA AMI, "
                                                 f"GPU taint and device plugin): its nodes would advertise no "
                                                 f"nvidia.com/gpu and cluster-autoscaler would wait for GPUs that never "
                                                 f"come; NVIDIA families: "
                                                 f"{', '.join(sorted(instance_types.NVIDIA_GPU_FAMILIES))}")
        elif gpu is False and instance_types.has_nvidia_gpu(t):
            yield f"{base}.instanceTypes[{j}]", (f"({t}) is a GPU instance type; set gpu: true, or its nodes boot the "
                                                 "standard AMI without an NVIDIA driver")
    arches = {instance_types.architecture(t) for t in types} - {None}
    if len(arches) > 1:
        yield f"{base}.instanceTypes", (f"mixes CPU architectures ({', '.join(sorted(arches))}); one node group "
                                        "boots one AMI, of one architecture")
    override = group.get("allowSingleSpotType")
    allow_single = _bool(override) if override is not None else False
    if override is not None and allow_single is None:
        yield f"{base}.allowSingleSpotType", f"({override!r}) must be true or false"
    # A repeated type is refused by parse (and is not a second type): only one type, listed once, is judged here.
    if spot and len(types) == 1 and allow_single is False:  # None: the override itself is wrong (said above)
        yield f"{base}.instanceTypes", ("lists one instance type for a spot group; list at least two instance types "
                                        "(spot capacity of one type runs out), or set allowSingleSpotType: true")


def _group_size(base: str, group: Mapping[str, Any]) -> Iterator[Problem]:
    max_size = _int(group.get("maxSize"))
    if max_size is not None and max_size > MAX_GROUP_SIZE:
        yield f"{base}.maxSize", (f"({max_size}) must be <= {MAX_GROUP_SIZE} per zone (a sanity bound; the policy "
                                  "pack's cost-max-nodes-per-group sets the budget)")


def _key_problem(key: str, what: str) -> Optional[str]:
    if len(key) > MAX_LABEL_KEY:
        return (f"is {len(key)} characters long; cluster-autoscaler reads a group's {what}s from ASG tags, whose "
                f"keys ({CA_NODE_TEMPLATE_PREFIX.replace('label', what)}<key>) AWS caps at {ASG_TAG_KEY_LIMIT} "
                f"characters, so at most {MAX_LABEL_KEY}")
    if key.startswith(KILN_PREFIX):
        return f"uses the {KILN_PREFIX} prefix, which kiln reserves for its own labels and taints"
    return None


def _labels(base: str, group: Mapping[str, Any]) -> Iterator[Problem]:
    labels = _decoded(group.get("labels", {}))
    if not isinstance(labels, Mapping):
        return
    for key in labels:
        if not isinstance(key, str) or key.startswith(KILN_PREFIX):
            continue  # parse says why
        prefix = key.split("/", 1)[0] if "/" in key else ""
        restricted = any(prefix == ns or prefix.endswith("." + ns) for ns in KUBELET_RESTRICTED_NAMESPACES)
        if restricted and not key.startswith(KUBELET_ALLOWED_PREFIXES):
            yield f"{base}.labels.{key}", (f"is in the {prefix} namespace, which kubelet refuses in --node-labels "
                                           f"(only {', '.join(KUBELET_ALLOWED_PREFIXES)} are allowed): nodes would "
                                           "not register")
            continue
        problem = _key_problem(key, "label")
        if problem:
            yield f"{base}.labels.{key}", problem


def _taints(base: str, group: Mapping[str, Any]) -> Iterator[Problem]:
    taints = _decoded(group.get("taints", []))
    if not isinstance(taints, list):
        return
    seen: dict[tuple[str, str], int] = {}
    for j, taint in enumerate(taints):
        m = _TAINT_RE.fullmatch(taint) if isinstance(taint, str) else None
        if not m:
            continue  # parse: must look like key=value:Effect
        problem = _key_problem(m["key"], "taint")
        if problem:
            yield f"{base}.taints[{j}]", f"({taint!r}) key {problem}"
        if (m["key"], m["effect"]) in seen:
            yield f"{base}.taints[{j}]", (f"({taint!r}) has the same key and effect as taints[{seen[m['key'], m['effect']]}]"
                                          "; Kubernetes refuses a node with both")
        seen.setdefault((m["key"], m["effect"]), j)
