"""Engine events built with the Automation API's own classes, as ``on_event`` receives them.

``preview_of_program`` runs the real ``__main__.py`` under the Pulumi mocks for
the deployed config and for the new one, and turns the difference into the
steps the engine would report for a ``pulumi preview --diff`` of that change:
``same`` for an unchanged resource, ``update`` with a ``detailedDiff`` (Pulumi
property paths, the way ``PropertyPath.String()`` writes them) for a changed
one, and ``create-replacement``/``replace``/``delete-replaced`` for a
Kubernetes object whose name changed (its provider replaces on
``metadata.name``). Old and new inputs ride on the step as the engine sends
them; ``retainOnDelete`` is set from the registration. What the mocks cannot
know — that an ASG's launch-template ``version`` is unknown until the new
template version exists — is added as the engine shows it (the unknown
sentinel). Then the ``SummaryEvent`` counts the logical steps.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections import Counter
from typing import Any, Iterable, Optional

from pulumi.automation.events import (DiffKind, EngineEvent, OpType, PolicyEvent, PropertyDiff, ResOpFailedEvent,
                                      ResourcePreEvent, ResOutputsEvent, StepEventMetadata, StepEventStateMetadata,
                                      SummaryEvent)

from automation.gate import UNKNOWN

_seq = itertools.count(1)
# Steps whose deploy.Step.Logical() is false in the engine (pkg/resource/deploy/step.go): the parts of a
# replace and refreshes. The engine's summary counts only logical steps. Written out here, not imported
# from the gate, so a gate that counts differently fails the tests.
ENGINE_NON_LOGICAL = frozenset({OpType.CREATE_REPLACEMENT, OpType.DELETE_REPLACED, OpType.READ_REPLACEMENT,
                                OpType.IMPORT_REPLACEMENT, OpType.REFRESH, OpType.DISCARD_REPLACED,
                                OpType.REMOVE_PENDING_REPLACE})
STACK_URN = "urn:pulumi:prod::kiln::pulumi:pulumi:Stack::kiln-prod"
_MOCK_ID = re.compile(r"\b[a-z0-9]+-0{8}[0-9a-f]{9}\b")   # KilnMocks ids: a prefix and a 17-digit counter
_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def urn_of(type_: str, name: str, parent: str = "kiln:infra:NodeGroup") -> str:
    return f"urn:pulumi:prod::kiln::{parent}${type_}::{name}"


def state(type_: str, urn: str, inputs: Optional[dict], *, retain: bool = False, custom: bool = True
          ) -> StepEventStateMetadata:
    return StepEventStateMetadata(type=type_, urn=urn, id="id-" + urn.rsplit("::", 1)[-1], parent=STACK_URN,
                                  provider="urn:pulumi:prod::kiln::pulumi:providers:aws::default::1", custom=custom,
                                  retain_on_delete=True if retain else None, inputs=inputs, outputs=inputs)


def step(op: OpType, type_: str, name: str, *, old: Optional[dict] = None, new: Optional[dict] = None,
         detailed: Optional[dict[str, DiffKind]] = None, keys: Optional[list[str]] = None,
         diffs: Optional[list[str]] = None, retain: bool = False, retain_old: Optional[bool] = None,
         urn: Optional[str] = None, logical: Optional[bool] = None) -> EngineEvent:
    urn = urn or urn_of(type_, name)
    old_state = state(type_, urn, old, retain=retain if retain_old is None else retain_old) if old is not None else None
    new_state = state(type_, urn, new, retain=retain) if new is not None else None
    meta = StepEventMetadata(op=op, urn=urn, type=type_, provider="", old=old_state, new=new_state, keys=keys,
                             diffs=diffs if diffs is not None else sorted({_top(k) for k in (detailed or {})}),
                             detailed_diff={k: PropertyDiff(v, True) for k, v in (detailed or {}).items()},
                             logical=logical)
    return EngineEvent(sequence=next(_seq), timestamp=0, resource_pre_event=ResourcePreEvent(meta, planning=True))


def summary(events: Iterable[EngineEvent], *, policy_packs: Optional[dict] = None, **override: int) -> EngineEvent:
    """The engine's SummaryEvent for these steps: logical steps counted by op."""
    counts: Counter[str] = Counter()
    for e in events:
        pre = e.resource_pre_event
        if pre is None:
            continue
        op = pre.metadata.op
        logical = pre.metadata.logical if pre.metadata.logical is not None else op not in ENGINE_NON_LOGICAL
        if logical:
            counts[op.value] += 1
    counts.update(override)
    return EngineEvent(sequence=next(_seq), timestamp=0, summary_event=SummaryEvent(
        maybe_corrupt=False, duration_seconds=1, resource_changes=dict(counts),
        policy_packs=policy_packs if policy_packs is not None else {"kiln": "0.1.0"}))


def outputs_of(event: EngineEvent) -> EngineEvent:
    return EngineEvent(sequence=next(_seq), timestamp=0,
                       res_outputs_event=ResOutputsEvent(event.resource_pre_event.metadata, planning=True))


def policy_violation(level: str, urn: str = "") -> EngineEvent:
    return EngineEvent(sequence=next(_seq), timestamp=0, policy_event=PolicyEvent(
        message="launch templates must require IMDSv2", color="never", policy_name="imdsv2-required",
        policy_pack_name="kiln", policy_pack_version="0.1.0", policy_pack_version_tag="v0.1.0",
        enforcement_level=level, resource_urn=urn or None))


def op_failed(urn: str) -> EngineEvent:
    meta = StepEventMetadata(op=OpType.UPDATE, urn=urn, type="aws:ec2/launchTemplate:LaunchTemplate", provider="")
    return EngineEvent(sequence=next(_seq), timestamp=0, res_op_failed_event=ResOpFailedEvent(meta, status=1, steps=1))


def path_string(path: tuple) -> str:
    """How the engine writes a property path (``PropertyPath.String()``)."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif _IDENT.match(seg):
            out += ("." if out else "") + seg
        else:
            out += '["' + seg.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return out


def _top(key: str) -> str:
    return re.split(r"[.\[]", key, maxsplit=1)[0] or key


def _normalise(value: Any) -> Any:
    """Mock ids are counters that depend on registration order; they are not a change."""
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, str):
        return _MOCK_ID.sub("<id>", value)
    return value


def leaf_diff(old: Any, new: Any, path: tuple = ()) -> dict[tuple, DiffKind]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: dict[tuple, DiffKind] = {}
        for k in sorted(set(old) | set(new)):
            if k not in new:
                out[path + (k,)] = DiffKind.DELETE
            elif k not in old:
                out[path + (k,)] = DiffKind.ADD
            else:
                out.update(leaf_diff(old[k], new[k], path + (k,)))
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = {}
        for i in range(max(len(old), len(new))):
            if i >= len(new):
                out[path + (i,)] = DiffKind.DELETE
            elif i >= len(old):
                out[path + (i,)] = DiffKind.ADD
            else:
                out.update(leaf_diff(old[i], new[i], path + (i,)))
        return out
    return {} if old == new else {path: DiffKind.UPDATE}


def preview_of_program(old_config: dict, new_config: dict, *, policy_packs: Optional[dict] = None,
                       with_summary: bool = True) -> list[EngineEvent]:
    """The engine events of ``pulumi preview`` from ``old_config`` (deployed) to ``new_config``."""
    from _program_helpers import run

    old_run, new_run = run(old_config), run(new_config)
    old_by_urn = {r.urn: r for r in old_run.resources}
    events: list[EngineEvent] = []
    changed_lts: set[str] = set()
    for reg in new_run.resources:
        before = old_by_urn.get(reg.urn)
        if before is None:
            events.append(step(OpType.CREATE, reg.type, reg.name, new=reg.inputs, urn=reg.urn,
                               retain=reg.retain_on_delete))
            continue
        old_in, new_in = _normalise(copy.deepcopy(before.inputs)), _normalise(copy.deepcopy(reg.inputs))
        diff = leaf_diff(old_in, new_in)
        if reg.type == "aws:autoscaling/group:Group" and reg.parent in changed_lts:
            # The group pins its template's latestVersion, unknown until the new version exists.
            spec = ("launchTemplate", "version") if "launchTemplate" in new_in else \
                ("mixedInstancesPolicy", "launchTemplate", "launchTemplateSpecification", "version")
            diff[spec] = DiffKind.UPDATE
            _set(new_in, spec, UNKNOWN)
        if not diff:
            events.append(step(OpType.SAME, reg.type, reg.name, old=old_in, new=new_in, urn=reg.urn,
                               retain=reg.retain_on_delete, diffs=[]))
            continue
        detailed = {path_string(p): k for p, k in diff.items()}
        if reg.type.startswith("kubernetes:") and ("metadata", "name") in diff:
            kinds = {k: (DiffKind.UPDATE_REPLACE if k == "metadata.name" else v) for k, v in detailed.items()}
            for op in (OpType.CREATE_REPLACEMENT, OpType.REPLACE):
                events.append(step(op, reg.type, reg.name, old=old_in, new=new_in, detailed=kinds,
                                   keys=["metadata"], urn=reg.urn, retain=reg.retain_on_delete))
            events.append(step(OpType.DELETE_REPLACED, reg.type, reg.name, old=old_in, urn=reg.urn,
                               retain=reg.retain_on_delete, diffs=[]))
            continue
        events.append(step(OpType.UPDATE, reg.type, reg.name, old=old_in, new=new_in, detailed=detailed, urn=reg.urn,
                           retain=reg.retain_on_delete))
        if reg.type == "aws:ec2/launchTemplate:LaunchTemplate":
            changed_lts.add(reg.parent)
    if with_summary:
        events.append(summary(events, policy_packs=policy_packs))
    return events


def _set(obj: dict, path: tuple, value: Any) -> None:
    for seg in path[:-1]:
        obj = obj[seg]
    obj[path[-1]] = value
