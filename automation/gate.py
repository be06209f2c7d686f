"""The preview gate: is this stack change only the one a rotation intends?

A rotation changes ``kiln:nodeAmi`` and ``kiln:modelVersion``. The expected
consequences are updates to launch templates (a new launch-template version is
an *update* of the ``LaunchTemplate`` resource, never a replace), updates of an
Auto Scaling group's launch-template version and tags, and the new model's
volume objects (a PersistentVolume/PersistentVolumeClaim named after the model
version is created and the old one deleted, or replaced).

Everything else that destroys something — any other ``replace`` or ``delete``,
including a replace of a launch template or an ASG, and an ASG update that
touches anything besides its launch template and tags — blocks the rotation.
Creates and other updates are allowed: they destroy nothing.

This module is pure: it reads ``pulumi.automation`` engine events (the objects
the Automation API hands to ``on_event``) and returns a verdict per change with
a readable diff. It never calls the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Optional

from pulumi.automation import events as ev

# Ops that change nothing in the world.
NO_CHANGE_OPS = frozenset({
    ev.OpType.SAME, ev.OpType.READ, ev.OpType.REFRESH, ev.OpType.DISCARD, ev.OpType.DISCARD_REPLACED,
    ev.OpType.REMOVE_PENDING_REPLACE,
})
REPLACE_OPS = frozenset({ev.OpType.REPLACE, ev.OpType.CREATE_REPLACEMENT, ev.OpType.DELETE_REPLACED,
                         ev.OpType.READ_REPLACEMENT, ev.OpType.IMPORT_REPLACEMENT})

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
AUTOSCALING_GROUP = "aws:autoscaling/group:Group"
PERSISTENT_VOLUME = "kubernetes:core/v1:PersistentVolume"
PERSISTENT_VOLUME_CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"


@dataclass(frozen=True)
class GateRules:
    """What a rotation may change. Defaults are the documented rules."""

    # Types whose in-place updates are expected (any keys).
    updatable_types: frozenset[str] = frozenset({LAUNCH_TEMPLATE})
    # Types whose in-place updates are expected only on these top-level keys.
    updatable_keys: tuple[tuple[str, frozenset[str]], ...] = (
        (AUTOSCALING_GROUP, frozenset({"launchTemplate", "mixedInstancesPolicy", "tags", "tagsCollection"})),
    )
    # Model volume objects: these types whose logical name or Kubernetes name starts
    # with one of the prefixes may be created, deleted and replaced (the model
    # version is in the Kubernetes name, so a new version replaces them).
    model_volume_types: frozenset[str] = frozenset({PERSISTENT_VOLUME, PERSISTENT_VOLUME_CLAIM})
    model_volume_prefixes: tuple[str, ...] = ("model", "kiln-model")
    # Extra "type::name" entries whose replace/delete the operator explicitly allows.
    allowed_replacements: frozenset[str] = frozenset()


DEFAULT_RULES = GateRules()


@dataclass(frozen=True)
class Change:
    """One resource step from the engine, reduced to what a reviewer reads."""

    op: str
    type: str
    name: str
    urn: str
    replace_keys: tuple[str, ...] = ()   # the keys that force a replacement
    diff_keys: tuple[str, ...] = ()      # every key that differs
    object_names: tuple[str, ...] = ()   # Kubernetes metadata.name, old and new

    def describe(self) -> str:
        line = f"{self.op:<8} {self.type}  {self.name}"
        if self.replace_keys:
            line += f"  (replaced because of: {', '.join(self.replace_keys)})"
        elif self.diff_keys:
            line += f"  (changes: {', '.join(self.diff_keys)})"
        return line


@dataclass(frozen=True)
class Verdict:
    change: Change
    allowed: bool
    reason: str


@dataclass(frozen=True)
class GateResult:
    verdicts: tuple[Verdict, ...] = ()

    @property
    def changes(self) -> tuple[Change, ...]:
        return tuple(v.change for v in self.verdicts)

    @property
    def blocked(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.allowed)

    @property
    def allowed(self) -> bool:
        return not self.blocked

    @property
    def has_changes(self) -> bool:
        return bool(self.verdicts)

    def render(self) -> str:
        if not self.verdicts:
            return "preview: no changes"
        lines = []
        for v in self.verdicts:
            mark = "ok     " if v.allowed else "BLOCKED"
            lines.append(f"  {mark} {v.change.describe()}\n          {v.reason}")
        head = ("preview gate: all changes are expected" if self.allowed else
                f"preview gate: {len(self.blocked)} change(s) are not part of a rotation; nothing was applied")
        return head + "\n" + "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "allowed": self.allowed,
            "changes": [
                {"op": v.change.op, "type": v.change.type, "name": v.change.name, "urn": v.change.urn,
                 "replaceKeys": list(v.change.replace_keys), "diffKeys": list(v.change.diff_keys),
                 "allowed": v.allowed, "reason": v.reason}
                for v in self.verdicts
            ],
        }


def name_from_urn(urn: str) -> str:
    return urn.rsplit("::", 1)[-1] if "::" in urn else urn


def change_from_metadata(meta: ev.StepEventMetadata) -> Change:
    op = meta.op.value if isinstance(meta.op, ev.OpType) else str(meta.op)
    replace_keys = tuple(meta.keys or ())
    diff_keys = tuple(meta.diffs or ()) or tuple(sorted((meta.detailed_diff or {}).keys()))
    if not replace_keys and meta.detailed_diff:
        replace_keys = tuple(sorted(
            k for k, d in meta.detailed_diff.items()
            if d.diff_kind in (ev.DiffKind.ADD_REPLACE, ev.DiffKind.DELETE_REPLACE, ev.DiffKind.UPDATE_REPLACE)
        ))
    object_names = []
    for state in (meta.old, meta.new):
        metadata = ((state.inputs or {}).get("metadata") if state is not None else None) or {}
        if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
            object_names.append(metadata["name"])
    return Change(op=op, type=meta.type, name=name_from_urn(meta.urn), urn=meta.urn,
                  replace_keys=replace_keys, diff_keys=diff_keys, object_names=tuple(object_names))


def _top_level(key: str) -> str:
    for sep in (".", "["):
        key = key.split(sep, 1)[0]
    return key


def judge(change: Change, op: ev.OpType, rules: GateRules = DEFAULT_RULES) -> Verdict:
    """Decide one change. Pure."""
    is_model_volume = change.type in rules.model_volume_types and any(
        n.startswith(rules.model_volume_prefixes) for n in (change.name, *change.object_names))
    explicitly_allowed = f"{change.type}::{change.name}" in rules.allowed_replacements
    if op == ev.OpType.CREATE or op == ev.OpType.IMPORT:
        if is_model_volume:
            return Verdict(change, True, "the new model's volume objects are expected")
        return Verdict(change, True, "creates destroy nothing")
    if op == ev.OpType.UPDATE:
        if change.replace_keys:
            # The engine turns a diff that forces replacement into a replace; an "update" that still
            # carries replace keys is not the new launch-template version a rotation expects.
            return Verdict(change, False, f"the engine marks {', '.join(change.replace_keys)} as forcing a "
                                          f"replacement of {change.type}")
        if change.type in rules.updatable_types:
            return Verdict(change, True, "a launch-template update makes a new version; nodes roll onto it")
        limited = dict(rules.updatable_keys).get(change.type)
        if limited is not None:
            if not change.diff_keys:
                return Verdict(change, False, f"the engine named no changed keys, so this update of {change.type} "
                                              f"cannot be checked against {', '.join(sorted(limited))}")
            extra = sorted({_top_level(k) for k in change.diff_keys} - limited)
            if extra:
                return Verdict(change, False, f"only {', '.join(sorted(limited))} may change on {change.type}; "
                                              f"this update also changes {', '.join(extra)}")
            return Verdict(change, True, "the group points at the new launch-template version")
        if is_model_volume:
            return Verdict(change, True, "the new model's volume objects are expected")
        return Verdict(change, True, "in-place update destroys nothing")
    if op in REPLACE_OPS or op == ev.OpType.DELETE:
        verb = "delete" if op == ev.OpType.DELETE else "replace"
        if is_model_volume:
            return Verdict(change, True, "the new model's volume objects are expected (the old model's go)")
        if explicitly_allowed:
            return Verdict(change, True, f"{verb} explicitly allowed")
        return Verdict(change, False, f"a rotation must not {verb} {change.type}")
    return Verdict(change, False, f"unknown operation {op!r}")


def classify(events: Iterable[ev.EngineEvent], rules: GateRules = DEFAULT_RULES) -> GateResult:
    """Judge every resource step in a preview's engine events (one verdict per URN)."""
    verdicts: dict[str, Verdict] = {}
    for event in events:
        pre = event.resource_pre_event
        if pre is None or pre.metadata is None:
            continue
        meta = pre.metadata
        op = meta.op if isinstance(meta.op, ev.OpType) else ev.OpType(meta.op)
        if op in NO_CHANGE_OPS:
            continue
        verdict = judge(change_from_metadata(meta), op, rules)
        previous = verdicts.get(meta.urn)
        if previous is not None:
            # A replace shows up as several steps; keep the strictest verdict and every step's keys
            # (with delete-before-replace the first step, delete-replaced, names no keys).
            base = verdict if (previous.allowed and not verdict.allowed) else previous
            verdict = Verdict(replace(base.change,
                                      replace_keys=_union(previous.change.replace_keys, verdict.change.replace_keys),
                                      diff_keys=_union(previous.change.diff_keys, verdict.change.diff_keys)),
                              base.allowed, base.reason)
        verdicts[meta.urn] = verdict
    return GateResult(tuple(verdicts.values()))


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(k for k in second if k not in first)


@dataclass
class EventRecorder:
    """An ``on_event`` callback that keeps the events for :func:`classify`."""

    events: list[ev.EngineEvent] = field(default_factory=list)

    def __call__(self, event: ev.EngineEvent) -> None:
        self.events.append(event)

    def result(self, rules: Optional[GateRules] = None) -> GateResult:
        return classify(self.events, rules or DEFAULT_RULES)
