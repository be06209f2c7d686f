"""Scenario files: a simulated fleet, its Jobs, services and faults.

Parsed into frozen dataclasses; every error names the offending key
(``node_groups[1].max_size: ...``). Scenarios are also built in code, e.g.
from a snapshot of a live fleet for a dry-run prediction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import yaml


class ScenarioError(ValueError):
    """A scenario that cannot be simulated; the message names the key."""


@dataclass(frozen=True)
class GroupSpec:
    name: str
    nodes: int
    zone: str = "us-east-2a"
    max_size: Optional[int] = None       # default: 2 x nodes (room for double-and-drain)
    min_size: int = 0
    pods_per_node: int = 1               # Job slots per node (GPUs)
    capacity_type: str = "on-demand"     # or "spot"

    @property
    def max(self) -> int:
        return self.max_size if self.max_size is not None else max(2 * self.nodes, 1)


@dataclass(frozen=True)
class JobsSpec:
    running: int = 0
    remaining_seconds: tuple[float, float] = (60.0, 3600.0)
    arrivals_per_hour: float = 0.0
    duration_seconds: tuple[float, float] = (600.0, 3600.0)
    remaining_list: Optional[tuple[float, ...]] = None   # exact remaining times (overrides running/remaining)
    deadline_extension_seconds: float = 0.0   # annotated on every running Job pod
    selector_group: bool = False              # new Jobs target one random group by its node-group label
    owner_kind: str = "Job"                   # owner kind of every Job pod, e.g. PyTorchJob or RayCluster
    # Per running Job (aligned with remaining_list, or with running): the group and the index of the node
    # within that group it runs on (a snapshot of a live fleet); None places Jobs on random slots.
    placement: Optional[tuple[tuple[str, int], ...]] = None
    deadline_extension_list: Optional[tuple[float, ...]] = None   # per running Job; overrides deadline_extension_seconds


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    replicas: int
    min_available: int
    start_seconds: float = 5.0


@dataclass(frozen=True)
class FaultSpec:
    kind: str                              # crash | bad_ami | throttle | node_loss
    after_actions: Optional[int] = None    # crash
    rate: Optional[float] = None           # throttle
    at_seconds: Optional[float] = None     # node_loss


@dataclass(frozen=True)
class Scenario:
    node_groups: tuple[GroupSpec, ...] = ()
    jobs: JobsSpec = field(default_factory=JobsSpec)
    services: tuple[ServiceSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    seed: int = 0
    boot_seconds: float = 240.0
    warm_seconds: float = 60.0
    deadline_seconds: float = 7200.0
    ready_timeout_seconds: float = 1800.0
    autoscaler: bool = False
    pause_autoscaler: bool = False
    surge: Optional[str] = None
    poll_seconds: float = 30.0
    daemonsets: bool = False                # one DaemonSet pod per node
    sample_seconds: float = 60.0            # timeline resolution
    name: str = ""

    @property
    def total_nodes(self) -> int:
        return sum(g.nodes for g in self.node_groups)


_TOP_KEYS = {"seed", "boot_seconds", "warm_seconds", "deadline_seconds", "ready_timeout_seconds", "autoscaler",
             "pause_autoscaler", "surge", "poll_seconds", "daemonsets", "sample_seconds", "name", "node_groups",
             "jobs", "services", "faults"}
_GROUP_KEYS = {"name", "zone", "nodes", "max_size", "min_size", "pods_per_node", "capacity_type"}
_JOB_KEYS = {"running", "remaining_seconds", "arrivals_per_hour", "duration_seconds", "remaining_list",
             "deadline_extension_seconds", "selector_group", "owner_kind", "placement", "deadline_extension_list"}
_OWNER_KIND = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_SERVICE_KEYS = {"name", "replicas", "min_available", "start_seconds"}
_FAULT_KEYS = {"crash": {"kind", "after_actions"}, "bad_ami": {"kind"}, "throttle": {"kind", "rate"},
               "node_loss": {"kind", "at_seconds"}}


def load_scenario(source: Union[str, Path, Mapping[str, Any]]) -> Scenario:
    """A scenario from a YAML file path or an already-parsed mapping."""
    if isinstance(source, Scenario):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ScenarioError(f"--scenario: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ScenarioError(f"--scenario: {path} is not valid YAML: {exc}") from None
        name = path.stem
    else:
        data, name = source, ""
    if not isinstance(data, Mapping):
        raise ScenarioError("scenario: expected a mapping at the top level")
    scenario = _parse(data)
    if not scenario.name and name:
        scenario = Scenario(**{**scenario.__dict__, "name": name})
    return scenario


def _parse(data: Mapping[str, Any]) -> Scenario:
    _unknown(data, _TOP_KEYS, "")
    groups_raw = data.get("node_groups")
    if not isinstance(groups_raw, list):
        raise ScenarioError("node_groups: expected a list of node groups (it may be empty: [])")
    groups = tuple(_group(g, f"node_groups[{i}]") for i, g in enumerate(groups_raw))
    names = [g.name for g in groups]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise ScenarioError(f"node_groups[{i}].name: duplicate group name {n!r}")
    jobs = _jobs(data.get("jobs", {}) or {}, groups)
    services = tuple(_service(s, f"services[{i}]") for i, s in enumerate(_list(data, "services")))
    faults = tuple(_fault(f, f"faults[{i}]") for i, f in enumerate(_list(data, "faults")))
    surge = data.get("surge")
    if surge is not None:
        from ..strategies import parse_surge
        try:
            parse_surge(str(surge))
        except ValueError as exc:
            raise ScenarioError(f"surge: {exc}".replace("--surge: ", "")) from None
        surge = str(surge)
    boot = _num(data, "boot_seconds", 240.0, "", minimum=0)
    warm = _num(data, "warm_seconds", 60.0, "", minimum=0)
    return Scenario(
        node_groups=groups, jobs=jobs, services=services, faults=faults,
        seed=int(_num(data, "seed", 0, "", integer=True)), boot_seconds=boot, warm_seconds=warm,
        deadline_seconds=_num(data, "deadline_seconds", 7200.0, "", minimum=1),
        ready_timeout_seconds=_num(data, "ready_timeout_seconds", max(1800.0, 2 * (boot + warm)), "", minimum=1),
        autoscaler=_bool(data, "autoscaler", False, ""), pause_autoscaler=_bool(data, "pause_autoscaler", False, ""),
        surge=surge, poll_seconds=_num(data, "poll_seconds", 30.0, "", minimum=1),
        daemonsets=_bool(data, "daemonsets", False, ""),
        sample_seconds=_num(data, "sample_seconds", 60.0, "", minimum=1),
        name=str(data.get("name", "")),
    )


def _unknown(data: Mapping, allowed: set, where: str) -> None:
    for key in data:
        if key not in allowed:
            raise ScenarioError(f"{where}{'.' if where else ''}{key}: unknown key; expected one of "
                                f"{', '.join(sorted(allowed))}")


def _list(data: Mapping, key: str) -> list:
    value = data.get(key, []) or []
    if not isinstance(value, list):
        raise ScenarioError(f"{key}: expected a list")
    return value


def _num(data: Mapping, key: str, default, where: str, *, minimum: Optional[float] = None, integer: bool = False,
         maximum: Optional[float] = None):
    label = f"{where}.{key}" if where else key
    value = data.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{label}: expected a number, got {value!r}")
    if integer and int(value) != value:
        raise ScenarioError(f"{label}: expected a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ScenarioError(f"{label}: must be at least {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ScenarioError(f"{label}: must be at most {maximum:g}, got {value!r}")
    return int(value) if integer else float(value)


def _bool(data: Mapping, key: str, default: bool, where: str) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ScenarioError(f"{where + '.' if where else ''}{key}: expected true or false, got {value!r}")
    return value


def _range(data: Mapping, key: str, default: tuple[float, float], where: str) -> tuple[float, float]:
    label = f"{where}.{key}"
    value = data.get(key, list(default))
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
        raise ScenarioError(f"{label}: expected [low, high] in seconds, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low < 0 or high < low:
        raise ScenarioError(f"{label}: expected 0 <= low <= high, got {value!r}")
    return low, high


def _group(raw: Any, where: str) -> GroupSpec:
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: expected a mapping with name and nodes")
    _unknown(raw, _GROUP_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"{where}.name: expected a non-empty string")
    nodes = _num(raw, "nodes", None, where, minimum=0, integer=True)
    max_size = raw.get("max_size")
    if max_size is not None:
        max_size = _num(raw, "max_size", None, where, minimum=0, integer=True)
        if max_size < nodes:
            raise ScenarioError(f"{where}.max_size: must be at least nodes ({nodes}), got {max_size}")
    capacity_type = raw.get("capacity_type", "on-demand")
    if capacity_type not in ("on-demand", "spot"):
        raise ScenarioError(f"{where}.capacity_type: expected on-demand or spot, got {capacity_type!r}")
    return GroupSpec(name=name, nodes=nodes, zone=str(raw.get("zone", "us-east-2a")), max_size=max_size,
                     min_size=_num(raw, "min_size", 0, where, minimum=0, integer=True),
                     pods_per_node=_num(raw, "pods_per_node", 1, where, minimum=1, integer=True),
                     capacity_type=capacity_type)


def _jobs(raw: Any, groups: tuple[GroupSpec, ...]) -> JobsSpec:
    if not isinstance(raw, Mapping):
        raise ScenarioError("jobs: expected a mapping")
    _unknown(raw, _JOB_KEYS, "jobs")
    slots = sum(g.nodes * g.pods_per_node for g in groups)
    running = _num(raw, "running", 0, "jobs", minimum=0, integer=True)
    remaining_list = raw.get("remaining_list")
    if remaining_list is not None:
        if not isinstance(remaining_list, (list, tuple)) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in remaining_list):
            raise ScenarioError("jobs.remaining_list: expected a list of non-negative seconds")
        remaining_list = tuple(float(v) for v in remaining_list)
        running = len(remaining_list)
    if running > slots:
        raise ScenarioError(f"jobs.running: {running} Jobs do not fit in {slots} slots (nodes x pods_per_node)")
    placement = _placement(raw.get("placement"), running, groups)
    extensions = raw.get("deadline_extension_list")
    if extensions is not None:
        if (not isinstance(extensions, (list, tuple)) or len(extensions) != running or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in extensions)):
            raise ScenarioError(f"jobs.deadline_extension_list: expected {running} non-negative seconds, "
                                f"one per running Job")
        extensions = tuple(float(v) for v in extensions)
    owner_kind = raw.get("owner_kind", "Job")
    if not isinstance(owner_kind, str) or not _OWNER_KIND.fullmatch(owner_kind):
        raise ScenarioError(f"jobs.owner_kind: expected a Kubernetes kind such as Job or PyTorchJob, "
                            f"got {owner_kind!r}")
    return JobsSpec(
        running=running, remaining_seconds=_range(raw, "remaining_seconds", (60.0, 3600.0), "jobs"),
        arrivals_per_hour=_num(raw, "arrivals_per_hour", 0.0, "jobs", minimum=0),
        duration_seconds=_range(raw, "duration_seconds", (600.0, 3600.0), "jobs"),
        remaining_list=remaining_list,
        deadline_extension_seconds=_num(raw, "deadline_extension_seconds", 0.0, "jobs", minimum=0),
        selector_group=_bool(raw, "selector_group", False, "jobs"),
        owner_kind=owner_kind, placement=placement, deadline_extension_list=extensions,
    )


def _placement(raw: Any, running: int, groups: tuple[GroupSpec, ...]) -> Optional[tuple[tuple[str, int], ...]]:
    """jobs.placement: one [group, node index] per running Job, each node holding at most pods_per_node."""
    if raw is None:
        return None
    if not isinstance(raw, (list, tuple)) or len(raw) != running:
        raise ScenarioError(f"jobs.placement: expected {running} [group, node index] pairs, one per running Job")
    by_name = {g.name: g for g in groups}
    used: dict[tuple[str, int], int] = {}
    out = []
    for i, item in enumerate(raw):
        where = f"jobs.placement[{i}]"
        if (not isinstance(item, (list, tuple)) or len(item) != 2 or item[0] not in by_name
                or isinstance(item[1], bool) or not isinstance(item[1], int)):
            raise ScenarioError(f"{where}: expected [group name, node index], got {item!r}")
        group = by_name[item[0]]
        if not 0 <= item[1] < group.nodes:
            raise ScenarioError(f"{where}: group {group.name!r} has {group.nodes} nodes, no node {item[1]}")
        used[item[0], item[1]] = used.get((item[0], item[1]), 0) + 1
        if used[item[0], item[1]] > group.pods_per_node:
            raise ScenarioError(f"{where}: more Jobs on node {item[1]} of {group.name!r} than its "
                                f"pods_per_node ({group.pods_per_node})")
        out.append((item[0], item[1]))
    return tuple(out)


def _service(raw: Any, where: str) -> ServiceSpec:
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: expected a mapping with name, replicas, min_available")
    _unknown(raw, _SERVICE_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"{where}.name: expected a non-empty string")
    replicas = _num(raw, "replicas", None, where, minimum=1, integer=True)
    min_available = _num(raw, "min_available", None, where, minimum=0,
                         integer=True, maximum=replicas)
    return ServiceSpec(name=name, replicas=replicas, min_available=min_available,
                       start_seconds=_num(raw, "start_seconds", 5.0, where, minimum=0))


def _fault(raw: Any, where: str) -> FaultSpec:
    if not isinstance(raw, Mapping) or "kind" not in raw:
        raise ScenarioError(f"{where}.kind: expected one of {', '.join(_FAULT_KEYS)}")
    kind = raw["kind"]
    if kind not in _FAULT_KEYS:
        raise ScenarioError(f"{where}.kind: unknown fault {kind!r}; expected one of {', '.join(_FAULT_KEYS)}")
    _unknown(raw, _FAULT_KEYS[kind], where)
    if kind == "crash":
        return FaultSpec(kind, after_actions=_num(raw, "after_actions", None if "after_actions" in raw else 1, where,
                                                  minimum=1, integer=True))
    if kind == "throttle":
        return FaultSpec(kind, rate=_num(raw, "rate", None if "rate" in raw else 0.1, where, minimum=0,
                                         maximum=0.9))
    if kind == "node_loss":
        return FaultSpec(kind, at_seconds=_num(raw, "at_seconds", None if "at_seconds" in raw else 0, where,
                                               minimum=0))
    return FaultSpec(kind)
