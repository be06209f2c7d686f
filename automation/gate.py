"""The preview gate: is this stack change exactly the one a model rotation makes? Fail closed.

A rotation changes ``kiln:nodeAmi`` and ``kiln:modelVersion``. Run under the
Pulumi mocks, the program turns that into exactly these changes (a test keeps
this list and the program in step):

- each launch template is *updated* (a new version): ``imageId`` to a target
  AMI, and ``userData`` and ``description``, which may differ from the old
  value only by the model version;
- each ASG is updated: its launch-template ``version`` (unknown until the new
  version exists) and the one tag that carries the model version (the
  cluster-autoscaler node-template label ``kiln.dev/model-version``);
- the model PersistentVolume and claim are replaced: the old version's objects
  by the new version's, by exact name (``kiln-model-<v>`` and ``<ns>/model-<v>``),
  and only when both old and new are ``retainOnDelete`` (so the "delete" leaves
  the old objects for the Jobs still using them);
- when the rotation adopts retained objects of a version used before
  (``PULUMI_K8S_UPSERT_EXISTING_OBJECTS``), the Kubernetes provider's
  ``upsertExistingObjects`` input; turning it off again is always allowed.

Everything else blocks: any other type, op or property path, a value that is
not the expected one, a value the event does not carry (it cannot be checked),
an op the SDK does not know. After the node replacement (``converge``) the
refreshed preview may also put back an ASG's ``maxSize``/``minSize``.

The gate also checks the engine's own accounting: the change summary
(``SummaryEvent.resourceChanges``, which counts every *logical* step) must
equal the gate's count of the steps it judged, op by op. The SDK drops an
event it cannot parse with only a warning; such a drop shows up as a mismatch
(and, where the seam captured the warning, as a dropped event) and blocks.
A preview without a summary, a failed resource operation, a mandatory policy
violation, or a policy pack that should have run but is not in the summary,
block too.

This module is pure: it reads ``pulumi.automation`` engine events (the objects
the Automation API hands to ``on_event``) and returns verdicts with a readable
diff. It never calls the engine.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from pulumi.automation import events as ev

from infra.config import default as config_default
from infra.labels import LABEL_MODEL_VERSION

# Ops that change nothing in the world (reads of external resources, refreshes, state bookkeeping).
NO_CHANGE_OPS = frozenset({
    ev.OpType.SAME, ev.OpType.READ, ev.OpType.REFRESH, ev.OpType.DISCARD, ev.OpType.DISCARD_REPLACED,
    ev.OpType.REMOVE_PENDING_REPLACE,
})
REPLACE_OPS = frozenset({ev.OpType.REPLACE, ev.OpType.CREATE_REPLACEMENT, ev.OpType.DELETE_REPLACED,
                         ev.OpType.READ_REPLACEMENT, ev.OpType.IMPORT_REPLACEMENT})
# Steps the engine does not count in its summary (Step.Logical() is false), when an event does not say.
NON_LOGICAL_OPS = frozenset({ev.OpType.CREATE_REPLACEMENT, ev.OpType.DELETE_REPLACED, ev.OpType.READ_REPLACEMENT,
                             ev.OpType.IMPORT_REPLACEMENT, ev.OpType.REFRESH, ev.OpType.DISCARD_REPLACED,
                             ev.OpType.REMOVE_PENDING_REPLACE})
KNOWN_OPS = frozenset(op.value for op in ev.OpType)

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
AUTOSCALING_GROUP = "aws:autoscaling/group:Group"
PERSISTENT_VOLUME = "kubernetes:core/v1:PersistentVolume"
PERSISTENT_VOLUME_CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"
KUBERNETES_PROVIDER = "pulumi:providers:kubernetes"
UPSERT_INPUT = "upsertExistingObjects"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"   # how the engine spells an unknown value in previews
MODEL_VERSION_LABEL = LABEL_MODEL_VERSION

Path = tuple  # of str (object keys) and int (list indices); "*" in a pattern matches one segment


# --------------------------------------------------------------------------- property paths


class PathError(ValueError):
    pass


_SIMPLE_KEY = re.compile(r"[^.\[\]\"]+")


def parse_path(text: str) -> Path:
    """A Pulumi property path (``a.b[0]["c.d"]``, as in ``detailedDiff``) as segments."""
    segments: list[Any] = []
    i, n = 0, len(text)
    if not text:
        raise PathError("empty property path")
    while i < n:
        if text[i] == "[":
            if text.startswith('["', i):
                j, key = i + 2, []
                while j < n and text[j] != '"':
                    if text[j] == "\\" and j + 1 < n:
                        j += 1
                    key.append(text[j])
                    j += 1
                if not text.startswith('"]', j):
                    raise PathError(f"unterminated key in property path {text!r}")
                segments.append("".join(key))
                i = j + 2
            else:
                j = text.find("]", i)
                inner = text[i + 1:j] if j > i else ""
                if inner == "*":
                    segments.append("*")
                elif inner.isdigit():
                    segments.append(int(inner))
                else:
                    raise PathError(f"bad index in property path {text!r}")
                i = j + 1
        else:
            m = _SIMPLE_KEY.match(text, i)
            if not m:
                raise PathError(f"bad property path {text!r}")
            segments.append(m.group(0))
            i = m.end()
        if i < n:
            if text[i] == ".":
                i += 1
                if i >= n:
                    raise PathError(f"property path {text!r} ends with '.'")
            elif text[i] != "[":
                raise PathError(f"bad property path {text!r}")
    return tuple(segments)


def format_path(path: Path) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif _SIMPLE_KEY.fullmatch(seg) and "." not in seg and "/" not in seg:
            out += ("." if out else "") + seg
        else:
            out += '["' + seg.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return out


def matches(pattern: Path, path: Path) -> bool:
    return len(pattern) == len(path) and all(p == "*" or p == s for p, s in zip(pattern, path))


_MISSING = object()


def value_at(obj: Any, path: Path) -> Any:
    for seg in path:
        if isinstance(seg, int) and isinstance(obj, list) and 0 <= seg < len(obj):
            obj = obj[seg]
        elif isinstance(seg, str) and isinstance(obj, Mapping) and seg in obj:
            obj = obj[seg]
        else:
            return _MISSING
    return obj


# --------------------------------------------------------------------------- what is expected


@dataclass(frozen=True)
class Expected:
    """What one apply of a rotation may change: the stack goes from one model/AMIs to another."""

    to_model: str
    to_amis: frozenset[str]
    from_model: Optional[str] = None
    jobs_namespace: str = config_default("jobsNamespace")
    adopt_model_volume: bool = False     # the target version's retained PV/PVC exist and are adopted
    converge: bool = False               # the refreshed preview after the replacement
    required_policy_packs: tuple[str, ...] = ()

    @property
    def model_changes(self) -> bool:
        return self.from_model is not None and self.from_model != self.to_model


def volume_name(model_version: str) -> str:
    return f"kiln-model-{model_version}"


def claim_name(model_version: str) -> str:
    return f"model-{model_version}"


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class PathChange:
    path: str
    kind: str          # add | delete | update (| *-replace)
    old: Any = None
    new: Any = None

    def describe(self) -> str:
        if self.kind.startswith("add"):
            return f"{self.path}: + {_short(self.new)}"
        if self.kind.startswith("delete"):
            return f"{self.path}: - {_short(self.old)}"
        return f"{self.path}: {_short(self.old)} -> {_short(self.new)}"


@dataclass(frozen=True)
class Change:
    """One resource step from the engine, reduced to what a reviewer reads."""

    op: str
    type: str
    name: str
    urn: str
    replace_keys: tuple[str, ...] = ()
    paths: tuple[PathChange, ...] = ()
    object_names: tuple[str, ...] = ()

    @property
    def diff_keys(self) -> tuple[str, ...]:
        return tuple(p.path for p in self.paths)

    def describe(self) -> str:
        line = f"{self.op:<8} {self.type}  {self.name}"
        if self.object_names:
            line += f"  ({' -> '.join(dict.fromkeys(self.object_names))})"
        if self.replace_keys:
            line += f"  replaced because of: {', '.join(self.replace_keys)}"
        return line


@dataclass(frozen=True)
class Verdict:
    change: Change
    allowed: bool
    reason: str


@dataclass(frozen=True)
class GateResult:
    verdicts: tuple[Verdict, ...] = ()
    problems: tuple[str, ...] = ()       # gate-level: summary mismatch, dropped events, failures
    warnings: tuple[str, ...] = ()       # advisory policy violations
    summary: Optional[dict[str, int]] = None

    @property
    def changes(self) -> tuple[Change, ...]:
        return tuple(v.change for v in self.verdicts)

    @property
    def blocked(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.allowed)

    @property
    def allowed(self) -> bool:
        return not self.blocked and not self.problems

    @property
    def has_changes(self) -> bool:
        if self.verdicts:
            return True
        return any(n for op, n in (self.summary or {}).items() if op != ev.OpType.SAME.value)

    def render(self) -> str:
        if self.allowed and not self.verdicts:
            return "preview: no changes" + "".join(f"\n  warning: {w}" for w in self.warnings)
        lines = []
        for v in self.verdicts:
            mark = "ok     " if v.allowed else "BLOCKED"
            lines.append(f"  {mark} {v.change.describe()}")
            lines.extend(f"            {p.describe()}" for p in v.change.paths)
            lines.append(f"          {v.reason}")
        lines.extend(f"  BLOCKED {p}" for p in self.problems)
        lines.extend(f"  warning: {w}" for w in self.warnings)
        if self.allowed:
            head = "preview gate: every change is part of the rotation"
        else:
            n = len(self.blocked) + len(self.problems)
            head = f"preview gate: BLOCKED ({n} finding(s) are not part of the rotation or could not be checked)"
        return head + "\n" + "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "allowed": self.allowed,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "summary": dict(self.summary or {}),
            "changes": [
                {"op": v.change.op, "type": v.change.type, "name": v.change.name, "urn": v.change.urn,
                 "replaceKeys": list(v.change.replace_keys), "diffKeys": list(v.change.diff_keys),
                 "objectNames": list(v.change.object_names), "allowed": v.allowed, "reason": v.reason}
                for v in self.verdicts
            ],
        }


def _short(value: Any, limit: int = 80) -> str:
    if value is _MISSING or value is None:
        return "(none)"
    if value == UNKNOWN:
        return "(known after apply)"
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit - 20]}... ({len(text)} chars)"


def name_from_urn(urn: str) -> str:
    return urn.rsplit("::", 1)[-1] if "::" in urn else urn


def _inputs(state: Optional[ev.StepEventStateMetadata]) -> Optional[Mapping[str, Any]]:
    if state is None or state.inputs is None:
        return None
    return state.inputs


def _object_name(state: Optional[ev.StepEventStateMetadata]) -> Optional[str]:
    for props in ((state.inputs if state else None), (state.outputs if state else None)):
        name = value_at(props or {}, ("metadata", "name"))
        if isinstance(name, str):
            return name
    return None


def _object_namespace(state: Optional[ev.StepEventStateMetadata]) -> Optional[str]:
    for props in ((state.inputs if state else None), (state.outputs if state else None)):
        ns = value_at(props or {}, ("metadata", "namespace"))
        if isinstance(ns, str):
            return ns
    return None


def _kind(diff: ev.PropertyDiff) -> str:
    kind = diff.diff_kind
    return kind.value if isinstance(kind, ev.DiffKind) else str(kind)


def change_from_metadata(meta: ev.StepEventMetadata) -> Change:
    op = meta.op.value if isinstance(meta.op, ev.OpType) else str(meta.op)
    old_inputs, new_inputs = _inputs(meta.old) or {}, _inputs(meta.new) or {}
    paths: list[PathChange] = []
    detailed = meta.detailed_diff or {}
    for key in sorted(detailed):
        try:
            parsed = parse_path(key)
        except PathError:
            parsed = None
        old = value_at(old_inputs, parsed) if parsed is not None else _MISSING
        new = value_at(new_inputs, parsed) if parsed is not None else _MISSING
        paths.append(PathChange(key, _kind(detailed[key]), old, new))
    for key in meta.diffs or ():   # top-level keys the detailed diff did not break down
        if not any(p.path == key or p.path.startswith(key + ".") or p.path.startswith(key + "[") for p in paths):
            paths.append(PathChange(key, "update", old_inputs.get(key, _MISSING), new_inputs.get(key, _MISSING)))
    replace_keys = tuple(meta.keys or ()) or tuple(p.path for p in paths if p.kind.endswith("-replace"))
    names = tuple(n for n in (_object_name(meta.old), _object_name(meta.new)) if n)
    return Change(op=op, type=meta.type, name=name_from_urn(meta.urn), urn=meta.urn, replace_keys=replace_keys,
                  paths=tuple(paths), object_names=names)


# --------------------------------------------------------------------------- rules per resource type

_MODEL_TOKEN = r"(?<![A-Za-z0-9_.]){}(?![A-Za-z0-9_.])"


def differs_only_by_model(old: str, new: str, from_model: Optional[str], to_model: str) -> bool:
    """``new`` is ``old`` with the model version (as a whole token) swapped, and nothing else."""
    if not from_model or from_model == to_model:
        return old == new
    return re.sub(_MODEL_TOKEN.format(re.escape(from_model)), lambda _: to_model, old) == new


def _b64_text(value: Any) -> Optional[str]:
    if not isinstance(value, str) or value == UNKNOWN:
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _blocked(change: Change, reason: str) -> Verdict:
    return Verdict(change, False, reason)


def _paths_outside(change: Change, allowed: Sequence[Path]) -> list[str]:
    bad = []
    for p in change.paths:
        try:
            parsed = parse_path(p.path)
        except PathError:
            bad.append(p.path)
            continue
        if not any(matches(pattern, parsed) for pattern in allowed):
            bad.append(p.path)
    return bad


LT_PATHS: tuple[Path, ...] = (("imageId",), ("userData",), ("description",))


def _judge_launch_template(change: Change, meta: ev.StepEventMetadata, x: Expected) -> Verdict:
    if change.op != ev.OpType.UPDATE.value:
        return _blocked(change, f"a rotation only updates a launch template (a new version); {change.op} is not allowed")
    if change.replace_keys:
        return _blocked(change, f"the diff forces a replacement ({', '.join(change.replace_keys)})")
    if not change.paths:
        return _blocked(change, "the update names no changed property, so it cannot be checked")
    outside = _paths_outside(change, LT_PATHS)
    if outside:
        return _blocked(change, f"a rotation changes only imageId, userData and description; this also changes "
                                f"{', '.join(outside)}")
    if _inputs(meta.old) is None or _inputs(meta.new) is None:
        return _blocked(change, "the event carries no old/new inputs, so the new values cannot be checked")
    for p in change.paths:
        if p.kind != ev.DiffKind.UPDATE.value:
            return _blocked(change, f"{p.path} is {p.kind}d, not updated")
        if p.path == "imageId":
            if p.new not in x.to_amis:
                return _blocked(change, f"imageId {_short(p.new)} is not a target AMI ({', '.join(sorted(x.to_amis))})")
        elif p.path == "userData":
            old, new = _b64_text(p.old), _b64_text(p.new)
            if old is None or new is None:
                return _blocked(change, "userData is unknown or not base64 text, so it cannot be checked")
            if not differs_only_by_model(old, new, x.from_model, x.to_model):
                return _blocked(change, f"userData changes beyond the model version ({x.from_model} -> {x.to_model})")
        elif p.path == "description":
            if not (isinstance(p.old, str) and isinstance(p.new, str)
                    and differs_only_by_model(p.old, p.new, x.from_model, x.to_model)):
                return _blocked(change, f"description changes beyond the model version ({x.from_model} -> {x.to_model})")
    return Verdict(change, True, "a new launch-template version with the target AMI and model version")


ASG_VERSION_PATHS: tuple[Path, ...] = (
    ("launchTemplate", "version"),
    ("mixedInstancesPolicy", "launchTemplate", "launchTemplateSpecification", "version"),
)
ASG_TAG_VALUE: Path = ("tags", "*", "value")
ASG_CONVERGE_PATHS: tuple[Path, ...] = (("maxSize",), ("minSize",))


def _judge_asg(change: Change, meta: ev.StepEventMetadata, x: Expected) -> Verdict:
    if change.op != ev.OpType.UPDATE.value:
        return _blocked(change, f"a rotation only updates an Auto Scaling group; {change.op} is not allowed")
    if change.replace_keys:
        return _blocked(change, f"the diff forces a replacement ({', '.join(change.replace_keys)})")
    if not change.paths:
        return _blocked(change, "the update names no changed property, so it cannot be checked")
    allowed = ASG_VERSION_PATHS + (ASG_TAG_VALUE,) + (ASG_CONVERGE_PATHS if x.converge else ())
    outside = _paths_outside(change, allowed)
    if outside:
        what = "its launch-template version and the model-version tag"
        if x.converge:
            what += ", and (after the replacement) maxSize and minSize"
        return _blocked(change, f"a rotation changes only {what}; this also changes {', '.join(outside)}")
    old_inputs, new_inputs = _inputs(meta.old), _inputs(meta.new)
    for p in change.paths:
        parsed = parse_path(p.path)
        if p.kind != ev.DiffKind.UPDATE.value:
            return _blocked(change, f"{p.path} is {p.kind}d, not updated")
        if any(matches(pattern, parsed) for pattern in ASG_VERSION_PATHS) and not (
                p.new == UNKNOWN or (isinstance(p.new, (str, int)) and not isinstance(p.new, bool)
                                     and str(p.new).isdigit())):
            # The program pins the template's latestVersion: a number, unknown until a new version exists.
            return _blocked(change, f"{p.path} becomes {_short(p.new)}, not a launch-template version number")
        if matches(ASG_TAG_VALUE, parsed):
            if old_inputs is None or new_inputs is None:
                return _blocked(change, "the event carries no old/new inputs, so the tag cannot be checked")
            old_key = value_at(old_inputs, parsed[:2] + ("key",))
            new_key = value_at(new_inputs, parsed[:2] + ("key",))
            if old_key != new_key or not isinstance(new_key, str) or not new_key.endswith(MODEL_VERSION_LABEL):
                return _blocked(change, f"{p.path} is the value of tag {_short(new_key)}, not the model-version tag")
            if (p.old, p.new) != (x.from_model, x.to_model):
                return _blocked(change, f"tag {new_key} goes {_short(p.old)} -> {_short(p.new)}, "
                                        f"not {x.from_model} -> {x.to_model}")
    return Verdict(change, True, "the group points at the new launch-template version"
                   + (" and gets its declared size back" if any(p.path in ("maxSize", "minSize") for p in change.paths)
                      else ""))


PV_PATHS: tuple[Path, ...] = (
    ("metadata", "name"), ("metadata", "labels", MODEL_VERSION_LABEL), ("spec", "claimRef", "name"),
    ("spec", "nodeAffinity", "required", "nodeSelectorTerms", "*", "matchExpressions", "*", "values", "*"),
)
PVC_PATHS: tuple[Path, ...] = (
    ("metadata", "name"), ("metadata", "labels", MODEL_VERSION_LABEL), ("spec", "volumeName"),
)


def _judge_model_volume(change: Change, meta: ev.StepEventMetadata, x: Expected) -> Verdict:
    claim = change.type == PERSISTENT_VOLUME_CLAIM
    expected = claim_name if claim else volume_name
    what = "model claim" if claim else "model volume"
    op = ev.OpType(change.op)
    if not x.model_changes:
        return _blocked(change, f"the model version does not change in this apply, so the {what} must not change")
    if op not in (ev.OpType.REPLACE, ev.OpType.CREATE_REPLACEMENT, ev.OpType.DELETE_REPLACED, ev.OpType.DELETE):
        # A plain create carries no diff against the previous version's object, so nothing of it could be checked
        # (a hostPath of "/" would pass); a rotation always replaces the previous version's object.
        return _blocked(change, f"only the replacement of the {what} by the new version's is expected, not {op.value}")
    old_name, new_name = _object_name(meta.old), _object_name(meta.new)
    has_old = True
    has_new = op in (ev.OpType.REPLACE, ev.OpType.CREATE_REPLACEMENT)
    if has_old:
        if old_name != expected(x.from_model):
            return _blocked(change, f"the {what} being replaced is {_short(old_name)}, not {expected(x.from_model)}")
        if not (meta.old and meta.old.retain_on_delete):
            return _blocked(change, f"{old_name} is not retainOnDelete: replacing it would delete it under running Jobs")
    if has_new:
        if new_name != expected(x.to_model):
            return _blocked(change, f"the new {what} is {_short(new_name)}, not {expected(x.to_model)}")
        if not (meta.new and meta.new.retain_on_delete):
            return _blocked(change, f"{new_name} is not retainOnDelete")
    if claim:
        for state in ((meta.old if has_old else None), (meta.new if has_new else None)):
            if state is not None and _object_namespace(state) != x.jobs_namespace:
                return _blocked(change, f"the claim is in namespace {_short(_object_namespace(state))}, "
                                        f"not {x.jobs_namespace}")
    outside = _paths_outside(change, PVC_PATHS if claim else PV_PATHS)
    if outside:
        return _blocked(change, f"the {what} also changes {', '.join(outside)}")
    for p in change.paths:   # each allowed path may only take the new version's value
        parsed = parse_path(p.path)
        if parsed == ("metadata", "name"):
            continue   # the object names are checked above
        want = {("spec", "claimRef", "name"): claim_name(x.to_model),
                ("spec", "volumeName"): volume_name(x.to_model)}.get(parsed, x.to_model)
        allowed_values = (want, UNKNOWN) if parsed == ("spec", "volumeName") else (want,)
        if p.kind not in (ev.DiffKind.UPDATE.value, ev.DiffKind.UPDATE_REPLACE.value) or not _hashable(p.new) \
                or p.new not in allowed_values:
            return _blocked(change, f"{p.path} of the {what} becomes {_short(p.new)} ({p.kind}), not {want}")
    return Verdict(change, True, f"the {what} of model {x.to_model} replaces {x.from_model}'s "
                                 f"(retained: the old objects stay for Jobs still using them)"
                   + (" - adopting the retained objects" if x.adopt_model_volume and has_new else ""))


# How the provider reads the switch (strconv.ParseBool); anything else cannot be classified.
_TRUE, _FALSE = frozenset({True, "true", "True", "TRUE", "1", "t", "T"}), frozenset({False, "false", "False", "FALSE",
                                                                                    "0", "f", "F"})


def _judge_kubernetes_provider(change: Change, meta: ev.StepEventMetadata, x: Expected) -> Verdict:
    if change.op != ev.OpType.UPDATE.value or change.replace_keys:
        return _blocked(change, f"a rotation must not {change.op} the Kubernetes provider")
    if [p.path for p in change.paths] != [UPSERT_INPUT]:
        return _blocked(change, f"only {UPSERT_INPUT} may change on the Kubernetes provider")
    (p,) = change.paths
    if p.kind == ev.DiffKind.DELETE.value and p.new is _MISSING:
        turning_on = False
    elif _hashable(p.new) and p.new in _TRUE:
        turning_on = True
    elif _hashable(p.new) and p.new in _FALSE:
        turning_on = False
    else:   # a secret ("[secret]"), an unknown, anything the provider might read as true
        return _blocked(change, f"{UPSERT_INPUT} becomes {_short(p.new)}, which the gate cannot read as on or off")
    if turning_on and not x.adopt_model_volume:
        return _blocked(change, f"{UPSERT_INPUT} is turned on, but there are no retained model objects to adopt")
    if turning_on:
        return Verdict(change, True, "adopts the retained PersistentVolume/claim of a model version used before")
    return Verdict(change, True, f"turns {UPSERT_INPUT} off again")


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_RULES = {
    LAUNCH_TEMPLATE: _judge_launch_template,
    AUTOSCALING_GROUP: _judge_asg,
    PERSISTENT_VOLUME: _judge_model_volume,
    PERSISTENT_VOLUME_CLAIM: _judge_model_volume,
    KUBERNETES_PROVIDER: _judge_kubernetes_provider,
}


def judge(meta: ev.StepEventMetadata, expected: Expected) -> Verdict:
    """Decide one step. Pure."""
    change = change_from_metadata(meta)
    rule = _RULES.get(meta.type)
    if rule is None:
        return _blocked(change, f"a model rotation must not {change.op} {meta.type}")
    try:
        return rule(change, meta, expected)
    except (PathError, ValueError) as exc:   # an op or a path the rules cannot read
        return _blocked(change, f"cannot classify this step ({exc})")


# --------------------------------------------------------------------------- the whole preview


def _op_of(meta: ev.StepEventMetadata) -> Optional[ev.OpType]:
    if isinstance(meta.op, ev.OpType):
        return meta.op
    try:
        return ev.OpType(meta.op)
    except ValueError:
        return None


def _is_logical(meta: ev.StepEventMetadata, op: ev.OpType) -> bool:
    return bool(meta.logical) if meta.logical is not None else op not in NON_LOGICAL_OPS


def classify(events: Iterable[ev.EngineEvent], expected: Expected, *, dropped: Sequence[str] = ()) -> GateResult:
    """Judge a preview: every resource step, the engine's summary against the gate's count, the rest.

    ``dropped`` lists events the SDK reported it could not parse (warnings the seam captured).
    """
    verdicts: dict[str, Verdict] = {}
    problems: list[str] = [f"the SDK dropped an engine event it could not parse: {_short(d, 160)}" for d in dropped]
    warnings: list[str] = []
    counted: Counter[str] = Counter()
    pre_urns: set[str] = set()
    summary: Optional[ev.SummaryEvent] = None
    for event in events:
        if event.summary_event is not None:
            summary = event.summary_event
        if event.res_op_failed_event is not None:
            problems.append(f"a resource operation failed: {event.res_op_failed_event.metadata.urn}")
        if event.diagnostic_event is not None and event.diagnostic_event.severity == "error":
            problems.append(f"the engine reported an error: {_short(event.diagnostic_event.message, 160)}")
        if event.policy_event is not None:
            p = event.policy_event
            text = f"policy {p.policy_pack_name}/{p.policy_name}: {_short(p.message, 160)} ({p.resource_urn or 'stack'})"
            if p.enforcement_level == "advisory":
                warnings.append(text)
            else:   # mandatory, remediate (it rewrites inputs), or a level the gate does not know
                problems.append(f"{text} [{p.enforcement_level or 'no enforcement level'}]")
        if event.res_outputs_event is not None:
            urn = event.res_outputs_event.metadata.urn
            if urn not in pre_urns:
                problems.append(f"outputs of a step the gate never saw: {urn}")
        pre = event.resource_pre_event
        if pre is None:
            continue
        meta = pre.metadata
        pre_urns.add(meta.urn)
        op = _op_of(meta)
        if op is None:
            problems.append(f"unknown op {meta.op!r} on {meta.urn}")
            continue
        if _is_logical(meta, op):
            counted[op.value] += 1
        if op in NO_CHANGE_OPS:
            if op != ev.OpType.REFRESH and (meta.keys or meta.diffs or meta.detailed_diff):
                # The engine never sends a diff with these steps; one that does cannot be classified.
                change = change_from_metadata(meta)
                verdicts[meta.urn] = _blocked(change, f"a {op.value} step carrying a diff "
                                                      f"({', '.join(change.diff_keys) or ', '.join(meta.keys or [])}) "
                                                      "cannot be classified")
            continue
        verdict = judge(meta, expected)
        previous = verdicts.get(meta.urn)
        if previous is not None:
            # A replace is several steps; one verdict per resource: the strictest, with every step's paths.
            base = verdict if (previous.allowed and not verdict.allowed) else previous
            merged = Change(op=base.change.op, type=base.change.type, name=base.change.name, urn=base.change.urn,
                            replace_keys=_union(previous.change.replace_keys, verdict.change.replace_keys),
                            paths=_union(previous.change.paths, verdict.change.paths),
                            object_names=_union(previous.change.object_names, verdict.change.object_names))
            verdict = Verdict(merged, base.allowed, base.reason)
        verdicts[meta.urn] = verdict

    engine_counts: Optional[dict[str, int]] = None
    if summary is None:
        problems.append("the engine sent no change summary, so the preview cannot be checked as complete")
    else:
        engine_counts = {str(k.value if isinstance(k, ev.OpType) else k): v
                         for k, v in (summary.resource_changes or {}).items()}
        if summary.maybe_corrupt:
            problems.append("the engine's summary says the stack may be corrupt (maybeCorrupt)")
        for op_name in sorted(set(engine_counts) - KNOWN_OPS):
            problems.append(f"the engine's summary counts an op the gate does not know: {op_name}")
        for op_name, n in sorted(engine_counts.items()):
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                problems.append(f"the engine's summary counts {n!r} {op_name} step(s), not a number")
                engine_counts[op_name] = -1
        for op_name in sorted(set(engine_counts) | set(counted)):
            if engine_counts.get(op_name, 0) != counted.get(op_name, 0):
                problems.append(f"the engine counts {engine_counts.get(op_name, 0)} {op_name} step(s), the gate saw "
                                f"{counted.get(op_name, 0)}: an event was lost")
        ran = set(summary.policy_packs or {})
        for pack in expected.required_policy_packs:
            if pack not in ran:
                problems.append(f"policy pack {pack} did not run in this preview (ran: {', '.join(sorted(ran)) or 'none'})")
    return GateResult(tuple(verdicts.values()), tuple(problems), tuple(warnings), engine_counts)


def _union(first: tuple, second: tuple) -> tuple:
    return first + tuple(k for k in second if k not in first)


@dataclass
class EventRecorder:
    """An ``on_event`` callback that keeps the events for :func:`classify`. It never raises: the SDK
    would only log an exception from the callback and drop the event."""

    events: list[ev.EngineEvent] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)   # filled by the stack seam from the SDK's warnings

    def __call__(self, event: ev.EngineEvent) -> None:
        self.events.append(event)

    def result(self, expected: Expected) -> GateResult:
        return classify(self.events, expected, dropped=self.dropped)
