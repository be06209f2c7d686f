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

from infra.lifecycle import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_JOB_GRACE_SECONDS,
    MAX_HEARTBEAT_SECONDS,
    MIN_HEARTBEAT_SECONDS,
    STOP_ALLOWANCE_SECONDS,
    max_job_grace,
)


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
    # The Job controller recreates a failed pod (evicted, gone with its node, killed at the end of its grace
    # period) this many times; then the Job has failed (batch/v1's default is 6).
    backoff_limit: Annotated[StrictInt, Field(ge=0, le=1000)] = 6
    # How long a Job pod runs on after SIGTERM (an eviction or a deletion) before it exits as failed — a
    # training loop writing a checkpoint, say; unset: it ignores SIGTERM and is killed when its grace period
    # (termination_grace_seconds) ends. Either way a pod whose work ends first succeeds instead.
    sigterm_exit_seconds: Optional[Seconds] = None

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
    """A Deployment's ReplicaSet under one PodDisruptionBudget: ``min_available`` or ``max_unavailable``
    (integers; exactly one), as the budget's spec says. ``start_seconds``: from Running to Ready;
    ``stop_seconds``: how long a pod takes to exit after SIGTERM (at most its grace period)."""
    name: Annotated[StrictStr, Field(min_length=1)]
    replicas: Annotated[StrictInt, Field(ge=1, le=100_000)]
    min_available: Optional[Count] = None
    max_unavailable: Optional[Count] = None
    start_seconds: Seconds = 5.0
    stop_seconds: Seconds = 5.0

    @model_validator(mode="after")
    def _budget(self) -> "ServiceSpec":
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError("min_available: give exactly one of min_available and max_unavailable "
                             "(a PodDisruptionBudget has one or the other)")
        if self.min_available is not None and self.min_available > self.replicas:
            raise ValueError(f"min_available: must be at most replicas ({self.replicas}), got {self.min_available}")
        if self.max_unavailable is not None and self.max_unavailable > self.replicas:
            raise ValueError(f"max_unavailable: must be at most replicas ({self.replicas}), "
                             f"got {self.max_unavailable}")
        return self

    @property
    def desired_healthy(self) -> int:
        """The budget's ``status.desiredHealthy``: the healthy pods it keeps."""
        if self.min_available is not None:
            return self.min_available
        return self.replicas - self.max_unavailable


FAULT_KEYS = {
    "crash": {"after_actions"},
    "bad_ami": {"mode", "group"},
    "throttle": {"rate"},
    "node_loss": {"at_seconds", "group", "target"},
    "launch_failure": {"group", "at_seconds", "for_seconds", "reason", "version"},
    "publish": {"at_seconds"},
    "asg_terminate": {"group", "count", "at_seconds", "replace"},
    "spot_interruption": {"group", "count", "at_seconds"},
    "handler_restart": {"at_seconds"},
}
# Faults that need the termination handler's lifecycle hook to be survivable (they turn it on by default).
HANDLER_FAULTS = frozenset({"asg_terminate", "spot_interruption", "handler_restart"})


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
    ``pulumi up`` landing mid-rollout); it is a good one (``bad_ami`` makes the first new version bad).
    ``asg_terminate``: at ``at_seconds`` Auto Scaling terminates ``count`` InService instances of
    ``group`` on its own — a scale-in (desired drops by ``count``; scale-in-protected instances are
    spared) or, with ``replace: true``, a capacity rebalance or health replacement (desired stays, a
    replacement launches at once); with the termination hook they wait in ``Terminating:Wait``.
    ``spot_interruption``: ``count`` instances of a spot ``group`` get the two-minute warning and are
    reclaimed 120 s later, whatever runs there (Jobs then count in ``jobs_lost_to_faults``).
    ``handler_restart``: the termination handler restarts (10 s down, its memory of lifecycle actions
    and heartbeats lost; the queue keeps its messages)."""
    kind: Literal["crash", "bad_ami", "throttle", "node_loss", "launch_failure", "publish", "asg_terminate",
                  "spot_interruption", "handler_restart"]
    after_actions: Optional[Annotated[StrictInt, Field(ge=1)]] = None
    rate: Optional[Annotated[StrictFloat, Field(ge=0, le=0.9)]] = None
    at_seconds: Optional[Seconds] = None
    for_seconds: Optional[PositiveSeconds] = None
    group: Optional[Annotated[StrictStr, Field(min_length=1)]] = None
    reason: Optional[Annotated[StrictStr, Field(min_length=1, max_length=1024)]] = None
    mode: Optional[Literal["not_ready", "no_join", "warmup_fails"]] = None
    target: Optional[Literal["any", "new", "old"]] = None
    version: Optional[Literal["any", "new"]] = None
    count: Optional[Annotated[StrictInt, Field(ge=1, le=MAX_NODES_PER_GROUP)]] = None
    replace: Optional[StrictBool] = None

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
        if self.kind in ("node_loss", "launch_failure", "publish", *HANDLER_FAULTS) and self.at_seconds is None:
            _set(self, at_seconds=0.0)
        if self.kind in ("asg_terminate", "spot_interruption"):
            if self.group is None:
                raise ValueError(f"group: required for a {self.kind} fault (the node group it hits)")
            if self.count is None:
                _set(self, count=1)
        if self.kind == "asg_terminate" and self.replace is None:
            _set(self, replace=False)
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
class TerminationSpec:
    """The termination handler (automation/termination) and its lifecycle hook on every group, as
    ``kiln:terminationHandlerImage``, ``kiln:terminationJobGraceSeconds`` and
    ``kiln:terminationHeartbeatSeconds`` declare them. ``handler`` unset: on when a fault needs it
    (asg_terminate, spot_interruption, handler_restart); off, no hook (as without the image)."""
    handler: Optional[StrictBool] = None
    job_grace_seconds: Annotated[StrictInt, Field(ge=0)] = DEFAULT_JOB_GRACE_SECONDS
    heartbeat_seconds: Annotated[StrictInt, Field(ge=MIN_HEARTBEAT_SECONDS, le=MAX_HEARTBEAT_SECONDS)] = \
        DEFAULT_HEARTBEAT_SECONDS

    @model_validator(mode="after")
    def _within_the_hook(self) -> "TerminationSpec":
        limit = max_job_grace(self.heartbeat_seconds)
        if self.job_grace_seconds > limit:
            raise ValueError(f"job_grace_seconds: must be <= {limit} (the hook's global timeout min(48 h, 100 x "
                             f"heartbeat_seconds ({self.heartbeat_seconds})) minus {STOP_ALLOWANCE_SECONDS} s), "
                             f"got {self.job_grace_seconds}")
        return self


@dataclass(frozen=True, config=_CONFIG)
class Scenario:
    node_groups: tuple[GroupSpec, ...] = ()
    jobs: JobsSpec = JobsSpec()
    services: tuple[ServiceSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    termination: TerminationSpec = TerminationSpec()
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
    # The pod lifecycle: a pod bound to a node is Pending this long (pulling — from the AMI's own cache
    # — and starting) before it runs; a deleted or evicted pod keeps its node, terminating, for up to its
    # grace period (spec.terminationGracePeriodSeconds; the API server's default is 30 s).
    pod_start_seconds: Annotated[StrictFloat, Field(ge=0, le=3600)] = 10.0
    termination_grace_seconds: Annotated[StrictFloat, Field(ge=0, le=24 * 3600)] = 30.0
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
        by_group = {g.name: g for g in self.node_groups}
        for i, fault in enumerate(self.faults):
            if fault.group is not None and fault.group not in names:
                raise _KeyedError(("faults", i, "group"), f"no node group {fault.group!r}; expected one of "
                                                          f"{', '.join(names) or '(none)'}")
            if fault.kind in ("asg_terminate", "spot_interruption"):
                spec = by_group[fault.group]
                if fault.count > spec.nodes:
                    raise _KeyedError(("faults", i, "count"), f"group {fault.group!r} has {spec.nodes} nodes, "
                                                              f"cannot terminate {fault.count}")
                if fault.kind == "asg_terminate" and not fault.replace and fault.count > spec.nodes - spec.min_size:
                    raise _KeyedError(("faults", i, "count"), f"a scale-in of {fault.count} would take group "
                                                              f"{fault.group!r} below its min_size ({spec.min_size}); "
                                                              f"at most {spec.nodes - spec.min_size}")
                if fault.kind == "spot_interruption" and spec.capacity_type != "spot":
                    raise _KeyedError(("faults", i, "group"), f"group {fault.group!r} is {spec.capacity_type}: "
                                                              "only spot instances get interruption warnings "
                                                              "(capacity_type: spot)")
        if self.termination.handler is None:
            _set(self, termination=TerminationSpec(
                handler=any(f.kind in HANDLER_FAULTS for f in self.faults),
                job_grace_seconds=self.termination.job_grace_seconds,
                heartbeat_seconds=self.termination.heartbeat_seconds))
        elif not self.termination.handler:
            for i, fault in enumerate(self.faults):
                if fault.kind == "handler_restart":
                    raise _KeyedError(("faults", i, "kind"), "handler_restart needs the termination handler "
                                                             "(termination.handler is false)")
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
