"""Scenario files: a simulated fleet, its Jobs, services and faults.

The schema is the frozen dataclasses below, validated by pydantic (strict
types, finite numbers, no unknown key) plus the cross-field rules pydantic
cannot know (min ≤ nodes ≤ max, Jobs fit their slots, faults name real
groups). Every error is one line that names the offending key
(``node_groups[1].max_size: ...``). Scenarios are also built in code, e.g. from
a snapshot of a live fleet for a dry-run prediction: they are validated the same
way.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Union

import yaml
from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic import model_validator
from pydantic.dataclasses import dataclass


class ScenarioError(ValueError):
    """A scenario that cannot be simulated; the message names the key."""


_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)
_OWNER_KIND = r"^[A-Z][A-Za-z0-9]*$"
MAX_NODES_PER_GROUP = 10_000
MAX_SECONDS = 7 * 24 * 3600.0        # a simulated week is more than any rollout needs

Seconds = Annotated[StrictFloat, Field(ge=0, le=MAX_SECONDS)]
PositiveSeconds = Annotated[StrictFloat, Field(gt=0, le=MAX_SECONDS)]
Count = Annotated[StrictInt, Field(ge=0)]

DEFAULT_LAUNCH_FAILURE = ("InsufficientInstanceCapacity: We currently do not have sufficient capacity in the "
                          "Availability Zone you requested. Launching EC2 instance failed.")


def _set(obj: Any, **values: Any) -> None:
    """Fill a computed default on a frozen dataclass during its own validation."""
    for key, value in values.items():
        object.__setattr__(obj, key, value)


@dataclass(frozen=True, config=_CONFIG)
class GroupSpec:
    name: Annotated[StrictStr, Field(min_length=1)]
    nodes: Annotated[StrictInt, Field(ge=0, le=MAX_NODES_PER_GROUP)]
    zone: StrictStr = "us-east-2a"
    max_size: Optional[Annotated[StrictInt, Field(ge=0, le=2 * MAX_NODES_PER_GROUP)]] = None  # default: 2 x nodes
    min_size: Count = 0
    pods_per_node: Annotated[StrictInt, Field(ge=1, le=64)] = 1      # Job slots per node (GPUs)
    capacity_type: Literal["on-demand", "spot"] = "on-demand"

    @model_validator(mode="after")
    def _sizes(self) -> "GroupSpec":
        if self.max_size is not None and self.max_size < self.nodes:
            raise ValueError(f"max_size: must be at least nodes ({self.nodes}), got {self.max_size}")
        if self.min_size > self.nodes:
            raise ValueError(f"min_size: must be at most nodes ({self.nodes}), got {self.min_size}")
        if self.min_size > self.max:
            raise ValueError(f"min_size: must be at most max_size ({self.max}), got {self.min_size}")
        return self

    @property
    def max(self) -> int:
        return self.max_size if self.max_size is not None else max(2 * self.nodes, 1)


@dataclass(frozen=True, config=_CONFIG)
class JobsSpec:
    running: Count = 0
    remaining_seconds: tuple[Seconds, Seconds] = (60.0, 3600.0)
    arrivals_per_hour: Annotated[StrictFloat, Field(ge=0, le=100_000)] = 0.0
    duration_seconds: tuple[Seconds, Seconds] = (600.0, 3600.0)
    remaining_list: Optional[tuple[Seconds, ...]] = None       # exact remaining times (overrides running/remaining)
    deadline_extension_seconds: Seconds = 0.0                  # annotated on every running Job pod
    selector_group: StrictBool = False                         # new Jobs target one random group by its node-group label
    owner_kind: Annotated[StrictStr, Field(pattern=_OWNER_KIND)] = "Job"   # e.g. PyTorchJob or RayCluster
    # Per running Job (aligned with remaining_list, or with running): the group and the index of the node
    # within that group it runs on (a snapshot of a live fleet); None places Jobs on random slots.
    placement: Optional[tuple[tuple[StrictStr, Count], ...]] = None
    deadline_extension_list: Optional[tuple[Seconds, ...]] = None   # per running Job; overrides the above

    @model_validator(mode="after")
    def _consistent(self) -> "JobsSpec":
        for key in ("remaining_seconds", "duration_seconds"):
            low, high = getattr(self, key)
            if high < low:
                raise ValueError(f"{key}: expected [low, high] with low <= high, got [{low:g}, {high:g}]")
        if self.remaining_list is not None:
            _set(self, running=len(self.remaining_list))
        if self.deadline_extension_list is not None and len(self.deadline_extension_list) != self.running:
            raise ValueError(f"deadline_extension_list: expected {self.running} non-negative seconds, "
                             f"one per running Job")
        if self.placement is not None and len(self.placement) != self.running:
            raise ValueError(f"placement: expected {self.running} [group, node index] pairs, one per running Job")
        return self


@dataclass(frozen=True, config=_CONFIG)
class ServiceSpec:
    name: Annotated[StrictStr, Field(min_length=1)]
    replicas: Annotated[StrictInt, Field(ge=1, le=100_000)]
    min_available: Count
    start_seconds: Seconds = 5.0

    @model_validator(mode="after")
    def _budget(self) -> "ServiceSpec":
        if self.min_available > self.replicas:
            raise ValueError(f"min_available: must be at most replicas ({self.replicas}), got {self.min_available}")
        return self


FAULT_KEYS = {
    "crash": {"after_actions"},
    "bad_ami": {"mode", "group"},
    "throttle": {"rate"},
    "node_loss": {"at_seconds", "group", "target"},
    "launch_failure": {"group", "at_seconds", "for_seconds", "reason", "version"},
    "publish": {"at_seconds"},
}


@dataclass(frozen=True, config=_CONFIG)
class FaultSpec:
    """One fault. ``crash``: the rollout process dies after its ``after_actions``-th mutating
    call overall and is started again. ``bad_ami``: new nodes of ``group`` (default: every
    group) are bad — ``mode`` not_ready (register, never Ready), no_join (never register) or
    warmup_fails (Ready, but the warm-up pod fails and the warming taint stays). ``throttle``:
    that share of API calls is answered as throttled. ``node_loss``: at ``at_seconds`` one node
    disappears (``target`` any, new — the newest new node, e.g. the canary — or old).
    ``launch_failure``: from ``at_seconds`` for ``for_seconds`` (default: for good) launches in
    ``group`` fail with ``reason`` (AWS's message, e.g. InsufficientInstanceCapacity or
    InvalidAMIID.NotFound), on every version or only the new one (``version``). ``publish``: at
    ``at_seconds`` a newer launch template version is published and every group set to it (a
    ``pulumi up`` landing mid-rollout); it is a good one (``bad_ami`` makes the first new version bad)."""
    kind: Literal["crash", "bad_ami", "throttle", "node_loss", "launch_failure", "publish"]
    after_actions: Optional[Annotated[StrictInt, Field(ge=1)]] = None
    rate: Optional[Annotated[StrictFloat, Field(ge=0, le=0.9)]] = None
    at_seconds: Optional[Seconds] = None
    for_seconds: Optional[PositiveSeconds] = None
    group: Optional[Annotated[StrictStr, Field(min_length=1)]] = None
    reason: Optional[Annotated[StrictStr, Field(min_length=1, max_length=1024)]] = None
    mode: Optional[Literal["not_ready", "no_join", "warmup_fails"]] = None
    target: Optional[Literal["any", "new", "old"]] = None
    version: Optional[Literal["any", "new"]] = None

    @model_validator(mode="after")
    def _keys_of_kind(self) -> "FaultSpec":
        allowed = FAULT_KEYS[self.kind]
        for f in fields(self):
            if f.name != "kind" and getattr(self, f.name) is not None and f.name not in allowed:
                raise ValueError(f"{f.name}: not a key of a {self.kind} fault; expected "
                                 f"{', '.join(sorted(allowed | {'kind'}))}")
        if self.kind == "crash" and self.after_actions is None:
            _set(self, after_actions=1)
        if self.kind == "throttle" and self.rate is None:
            _set(self, rate=0.1)
        if self.kind in ("node_loss", "launch_failure", "publish") and self.at_seconds is None:
            _set(self, at_seconds=0.0)
        if self.kind == "bad_ami" and self.mode is None:
            _set(self, mode="not_ready")
        if self.kind == "node_loss" and self.target is None:
            _set(self, target="any")
        if self.kind == "launch_failure":
            if self.reason is None:
                _set(self, reason=DEFAULT_LAUNCH_FAILURE)
            if self.version is None:
                _set(self, version="any")
        return self


@dataclass(frozen=True, config=_CONFIG)
class Scenario:
    node_groups: tuple[GroupSpec, ...] = ()
    jobs: JobsSpec = JobsSpec()
    services: tuple[ServiceSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    seed: StrictInt = 0
    boot_seconds: Seconds = 240.0
    warm_seconds: Seconds = 60.0
    deadline_seconds: PositiveSeconds = 7200.0
    ready_timeout_seconds: Optional[PositiveSeconds] = None      # default: max(1800, 2 x (boot + warm))
    boot_timeout_seconds: Optional[PositiveSeconds] = None       # default: max(600, 2 x boot)
    launch_failure_timeout_seconds: PositiveSeconds = 900.0
    autoscaler: StrictBool = False
    pause_autoscaler: StrictBool = False
    surge: Optional[Union[StrictStr, StrictInt]] = None
    poll_seconds: Annotated[StrictFloat, Field(ge=1, le=3600)] = 30.0
    daemonsets: StrictBool = False                # one DaemonSet pod per node
    sample_seconds: Annotated[StrictFloat, Field(ge=1, le=MAX_SECONDS)] = 60.0   # timeline resolution
    name: StrictStr = ""

    @model_validator(mode="after")
    def _whole(self) -> "Scenario":
        names = [g.name for g in self.node_groups]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise _KeyedError(("node_groups", i, "name"), f"duplicate group name {n!r}")
        slots = sum(g.nodes * g.pods_per_node for g in self.node_groups)
        if self.jobs.running > slots:
            raise _KeyedError(("jobs", "running"), f"{self.jobs.running} Jobs do not fit in {slots} slots "
                                                   f"(nodes x pods_per_node)")
        if self.jobs.placement is not None:
            by_name = {g.name: g for g in self.node_groups}
            used: dict[tuple[str, int], int] = {}
            for i, (group, index) in enumerate(self.jobs.placement):
                if group not in by_name:
                    raise _KeyedError(("jobs", "placement", i), f"no node group {group!r}")
                if index >= by_name[group].nodes:
                    raise _KeyedError(("jobs", "placement", i),
                                      f"group {group!r} has {by_name[group].nodes} nodes, no node {index}")
                used[group, index] = used.get((group, index), 0) + 1
                if used[group, index] > by_name[group].pods_per_node:
                    raise _KeyedError(("jobs", "placement", i), f"more Jobs on node {index} of {group!r} than its "
                                                                f"pods_per_node ({by_name[group].pods_per_node})")
        for i, fault in enumerate(self.faults):
            if fault.group is not None and fault.group not in names:
                raise _KeyedError(("faults", i, "group"), f"no node group {fault.group!r}; expected one of "
                                                          f"{', '.join(names) or '(none)'}")
        if self.surge is not None:
            from ..strategies import parse_surge
            try:
                parse_surge(str(self.surge))
            except ValueError as exc:
                raise _KeyedError(("surge",), str(exc).removeprefix("--surge: ")) from None
            _set(self, surge=str(self.surge))
        if self.ready_timeout_seconds is None:
            _set(self, ready_timeout_seconds=max(1800.0, 2 * (self.boot_seconds + self.warm_seconds)))
        if self.boot_timeout_seconds is None:
            _set(self, boot_timeout_seconds=max(600.0, 2 * self.boot_seconds))
        return self

    @property
    def total_nodes(self) -> int:
        return sum(g.nodes for g in self.node_groups)


class _KeyedError(ValueError):
    """A cross-field error that names its key by path."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(f"@{_key(loc)}: {message}")


_ADAPTER = TypeAdapter(Scenario)


def load_scenario(source: Union[str, Path, Mapping[str, Any], Scenario]) -> Scenario:
    """A scenario from a YAML file path or an already-parsed mapping; ScenarioError names the key."""
    if isinstance(source, Scenario):
        return source
    name = ""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ScenarioError(f"--scenario: cannot read {path}: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScenarioError(f"--scenario: {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                                f"{exc.start})") from None
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
        except _DuplicateKey as exc:
            raise ScenarioError(str(exc)) from None
        except yaml.YAMLError as exc:
            raise ScenarioError(f"--scenario: {path} is not valid YAML: {' '.join(str(exc).split())}") from None
        name = path.stem
    else:
        data = source
    if not isinstance(data, Mapping):
        raise ScenarioError("scenario: expected a mapping at the top level")
    if "node_groups" not in data:
        raise ScenarioError("node_groups: required: a list of node groups (it may be empty: [])")
    data = {k: v for k, v in data.items() if not (k in ("jobs", "services", "faults") and v is None)}
    try:
        scenario = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ScenarioError(_first_error(exc)) from None
    if not scenario.name and name:
        from dataclasses import replace
        scenario = replace(scenario, name=name)
    return scenario


class _DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last
    one silently: a second ``node_groups:`` would replace the first without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue             # "<<: *defaults": explicit keys override merged ones, as YAML says
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise _DuplicateKey(f"{key}: given twice in one mapping (lines {seen[key] + 1} and "
                                        f"{key_node.start_mark.line + 1}); keep one")
                seen[key] = key_node.start_mark.line
            except TypeError:     # an unhashable key: the base loader says what is wrong with it
                break
        return super().construct_mapping(node, deep=deep)


def _key(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _first_error(exc: ValidationError) -> str:
    """pydantic's first error as one line: ``key.path: what is wrong, got value``."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    message = err["msg"]
    if err["type"] == "value_error":
        message = str(err.get("ctx", {}).get("error", message)).removeprefix("Value error, ")
        if message.startswith("@"):
            return message[1:]
        field, sep, rest = message.partition(": ")
        if sep and re.fullmatch(r"[a-z_]+", field):
            return f"{_key(loc + (field,))}: {rest}"
        return f"{_key(loc) or 'scenario'}: {message}"
    if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        allowed = _keys_at(loc[:-1])
        return f"{_key(loc)}: unknown key; expected one of {', '.join(sorted(allowed))}"
    if err["type"] == "missing_argument" or err["type"] == "missing":
        return f"{_key(loc)}: required"
    message = re.sub(r"a valid tuple", "a list", message)
    message = re.sub(r"a dictionary or an instance of \w+", "a mapping", message)
    value = err.get("input")
    shown = repr(value) if not isinstance(value, Mapping) else "a mapping"
    if isinstance(value, float) and not math.isfinite(value):
        shown = str(value)
    if len(shown) > 80:                  # one line a person reads, whatever was pasted into the file
        shown = shown[:60] + f"… ({len(shown)} characters)"
    return f"{_key(loc) or 'scenario'}: {message[0].lower() + message[1:]}, got {shown}"


def _keys_at(loc: tuple) -> set[str]:
    """The keys a mapping at ``loc`` may have (for "unknown key" errors)."""
    cls: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        hints = typing.get_type_hints(cls, include_extras=True)
        cls = _dataclass_in(hints.get(part))
        if cls is None:
            return set()
    if cls is FaultSpec:
        return {f.name for f in fields(FaultSpec)}
    return {f.name for f in fields(cls)} if is_dataclass(cls) else set()


def _dataclass_in(hint: Any) -> Any:
    if hint is None:
        return None
    if is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None
