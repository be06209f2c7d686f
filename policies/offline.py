"""``python -m policies check``: the kiln policy pack without the Pulumi CLI.

Runs the program under the SDK's mocks (:func:`policies.program.run_program`)
with a ``Pulumi.<stack>.yaml`` config, then hands every registered resource to
the pack through pulumi_policy's own analyzer servicer — the object whose
``Analyze``/``AnalyzeStack`` the engine calls over gRPC during
``pulumi preview --policy-pack policies`` — built from the same wire-format
requests the engine sends. Enforcement levels, policy config, the unknown-value
proxy ("can't run policy ... during preview", advisory) and not-applicable
handling are therefore the SDK's, not a re-implementation.

Exit status: 0 when no mandatory policy fails, 1 when one does, 2 on bad input
(missing or unreadable file, invalid kiln config, unknown policy in
``--policy-config``, or a program that fails under mocks).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from google.protobuf import json_format, struct_pb2
from jsonschema import Draft7Validator
from pulumi.runtime import proto
from pulumi.runtime.rpc import UNKNOWN
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.version import VERSION

from automation.errors import EXIT_BAD_INPUT, EXIT_OK, BadInput
from automation.errors import EXIT_FAILED as EXIT_MANDATORY
from infra.config import ConfigError, parse, read_stack_yaml, stack_region
from policies.pack import PACK_NAME, config_defaults, level_of, policies, settings_problems
from policies.program import PROJECT_DIR, ProgramRun, Registration, run_program


# Wire signatures (pulumi/sdk/go/common/resource/sig).
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"

_LEVELS = {level.value: level for level in EnforcementLevel}
_PROTO_LEVELS = {
    EnforcementLevel.ADVISORY: proto.ADVISORY,
    EnforcementLevel.MANDATORY: proto.MANDATORY,
    EnforcementLevel.REMEDIATE: proto.REMEDIATE,
    EnforcementLevel.DISABLED: proto.DISABLED,
}
_LEVEL_NAMES = {v: k.value for k, v in _PROTO_LEVELS.items()}


@dataclass
class Violation:
    policy: str
    level: str
    urn: str
    type: str
    name: str
    message: str


@dataclass
class Report:
    stack: str
    resources: int
    violations: list[Violation] = field(default_factory=list)
    not_applicable: list[dict[str, str]] = field(default_factory=list)

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "mandatory"]

    @property
    def exit_code(self) -> int:
        return EXIT_MANDATORY if self.mandatory else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "resources": self.resources,
            "violations": [asdict(v) for v in self.violations],
            "mandatory": len(self.mandatory),
            "advisory": len(self.violations) - len(self.mandatory),
            "notApplicable": self.not_applicable,
            "exitCode": self.exit_code,
        }


# --------------------------------------------------------------------------- inputs


def load_stack_config(path: Path) -> dict[str, Any]:
    """The ``config:`` mapping of a ``Pulumi.<stack>.yaml`` file, validated for the kiln namespace."""
    if not path.is_file():
        raise BadInput(f"{path}: no such stack config file")
    try:
        doc = read_stack_yaml(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML: {exc}") from exc
    config = doc.get("config", {}) if isinstance(doc, Mapping) else None
    if not isinstance(config, Mapping):
        raise BadInput(f"{path}: 'config' must be a mapping")
    # Pulumi reads a key without a namespace as the project's (kiln:): one key, however it is spelled.
    normalised: dict[str, Any] = {}
    for key, value in config.items():
        full = str(key) if ":" in str(key) else f"kiln:{key}"
        if full in normalised:
            raise BadInput(f"{path}: {full} is given twice (as {full} and as {full.split(':', 1)[1]})")
        normalised[full] = value
    config = normalised
    try:
        parse({k: v for k, v in config.items() if str(k).startswith("kiln:")}, region=stack_region(config))
    except ConfigError as exc:
        raise BadInput(*exc.problems) from exc
    return dict(config)


def load_policy_config(path: Optional[Path]) -> dict[str, Any]:
    """A ``--policy-pack-config`` style JSON file: ``{"all"|policy: level | {enforcementLevel, ...}}``."""
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BadInput(f"{path}: no such policy config file") from exc
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not UTF-8
        raise BadInput(f"{path}: cannot read: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: must be a JSON object of policy name to level or settings")
    known = {p.name: p for p in policies()}
    problems = []
    for name, value in doc.items():
        if name != "all" and name not in known:
            problems.append(f"{path}: {name!r} is not a policy of the {PACK_NAME} pack")
            continue
        level = value if isinstance(value, str) else value.get("enforcementLevel") if isinstance(value, dict) else None
        if level is not None and (not isinstance(level, str) or level not in _LEVELS):
            problems.append(f"{path}: {name}.enforcementLevel {level!r} must be one of {', '.join(_LEVELS)}")
        if isinstance(value, dict) and name in known:
            # Validated against the policy's config schema, as the CLI does before starting the pack.
            properties = known[name].config_schema.properties if known[name].config_schema else {}
            schema = {"type": "object", "properties": properties, "additionalProperties": False}
            settings = {k: v for k, v in value.items() if k != "enforcementLevel"}
            errors = sorted(Draft7Validator(schema).iter_errors(settings), key=str)
            for error in errors:
                where = ".".join(map(str, [name, *error.absolute_path]))
                problems.append(f"{path}: {where}: {error.message} (settings: {', '.join(sorted(properties)) or 'none'})")
            if not errors:
                problems.extend(f"{path}: {problem}" for problem in settings_problems(name, settings))
        elif not isinstance(value, (str, dict)):
            problems.append(f"{path}: {name} must be a level or an object")
    if problems:
        raise BadInput(*problems)
    return doc


# --------------------------------------------------------------------------- the engine's view


def _engine_value(value: Any, ids: Mapping[str, str]) -> Any:
    """A wire value as the engine forwards it to analyzers (KeepUnknowns, KeepSecrets, no resources).

    Resource references are downgraded to the resource's id (custom) or URN (component), as
    the engine does for plugins that do not accept references.
    """
    if isinstance(value, list):
        return [_engine_value(v, ids) for v in value]
    if isinstance(value, dict):
        sig = value.get(_SIG_KEY)
        if sig == _RESOURCE_SIG:
            urn = value.get("urn", "")
            return value.get("id") or ids.get(urn) or urn
        if sig == _OUTPUT_SIG:
            if "value" not in value:
                return UNKNOWN
            inner = _engine_value(value["value"], ids)
            return {_SIG_KEY: _SECRET_SIG, "value": inner} if value.get("secret") else inner
        return {k: _engine_value(v, ids) for k, v in value.items()}
    return value


def _jsonable(value: Any) -> Any:
    """Mock outputs (Python values) as wire JSON: unknowns become the UNKNOWN sentinel."""
    from pulumi.output import Unknown

    if isinstance(value, Unknown):
        return UNKNOWN
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    # The engine skips internal keys (``__*``) when marshalling for analyzers.
    return json_format.ParseDict({k: v for k, v in props.items() if not k.startswith("__")}, struct_pb2.Struct())


def _options(r: Registration) -> proto.AnalyzerResourceOptions:
    return proto.AnalyzerResourceOptions(
        protect=r.protect,
        ignoreChanges=list(r.ignore_changes),
        deleteBeforeReplace=r.delete_before_replace,
        deleteBeforeReplaceDefined=r.delete_before_replace,
        additionalSecretOutputs=list(r.additional_secret_outputs),
        parent=r.parent,
    )


def _provider(r: Registration, by_urn: Mapping[str, Registration], ids: Mapping[str, str]) -> Optional[proto.AnalyzerProviderResource]:
    if not r.provider:
        return None
    urn = r.provider.rsplit("::", 1)[0]
    registered = by_urn.get(urn)
    parts = urn.split("::")
    typ = registered.type if registered else (parts[2] if len(parts) > 3 else "")
    name = registered.name if registered else parts[-1]
    props = _engine_value(registered.wire_inputs, ids) if registered else {}
    return proto.AnalyzerProviderResource(type=typ, properties=_struct(props), urn=urn, name=name)


def analyze_requests(run: ProgramRun) -> list[tuple[Registration, proto.AnalyzeRequest]]:
    by_urn = {r.urn: r for r in run.resources}
    ids = {r.urn: r.id for r in run.resources if r.custom and r.id}
    out = []
    for r in run.resources:
        request = proto.AnalyzeRequest(
            type=r.type, properties=_struct(_engine_value(r.wire_inputs, ids)), urn=r.urn, name=r.name,
            options=_options(r),
        )
        provider = _provider(r, by_urn, ids)
        if provider is not None:
            request.provider.CopyFrom(provider)
        out.append((r, request))
    return out


def analyze_stack_request(run: ProgramRun) -> proto.AnalyzeStackRequest:
    by_urn = {r.urn: r for r in run.resources}
    ids = {r.urn: r.id for r in run.resources if r.custom and r.id}
    request = proto.AnalyzeStackRequest()
    for r in run.resources:
        resource = proto.AnalyzerResource(
            type=r.type, properties=_struct(_jsonable(r.outputs)), urn=r.urn, name=r.name,
            options=_options(r), parent=r.parent, dependencies=list(r.dependencies),
        )
        for prop, urns in r.property_dependencies.items():
            resource.propertyDependencies[prop].urns.extend(urns)
        provider = _provider(r, by_urn, ids)
        if provider is not None:
            resource.provider.CopyFrom(provider)
        request.resources.append(resource)
    return request


def analyzer(policy_config: Optional[Mapping[str, Any]] = None) -> _PolicyAnalyzerServicer:
    """pulumi_policy's analyzer for the kiln pack, configured as the CLI would configure it.

    Constructing the servicer starts no server (``PolicyPack`` does that).
    """
    policy_config = policy_config or {}
    pack = policies()
    servicer = _PolicyAnalyzerServicer(PACK_NAME, VERSION, pack, EnforcementLevel.MANDATORY)
    request = proto.ConfigureAnalyzerRequest()
    for policy in pack:
        level, props = level_of(policy), config_defaults(policy)
        for key in ("all", policy.name):
            value = policy_config.get(key)
            if isinstance(value, str):
                level = _LEVELS[value]
            elif isinstance(value, dict):
                level = _LEVELS[value.get("enforcementLevel", level.value)]
                if key == policy.name:
                    props.update({k: v for k, v in value.items() if k != "enforcementLevel"})
        settings = proto.PolicyConfig(enforcementLevel=_PROTO_LEVELS[level])
        settings.properties.update(props)
        request.policyConfig[policy.name].CopyFrom(settings)
    servicer.Configure(request, None)
    return servicer


def _message(diagnostic) -> str:
    # The SDK prefixes the policy description; the description is in the policy list already.
    prefix = diagnostic.description + "\n"
    return diagnostic.message[len(prefix):] if diagnostic.message.startswith(prefix) else diagnostic.message


def evaluate(run: ProgramRun, stack: str = "offline", policy_config: Optional[Mapping[str, Any]] = None) -> Report:
    """Every policy of the pack against one program run."""
    servicer = analyzer(policy_config)
    report = Report(stack=stack, resources=len(run.resources))
    by_urn = {r.urn: r for r in run.resources}

    def add(response, default: Optional[Registration]) -> None:
        for d in response.diagnostics:
            r = by_urn.get(d.urn) or default
            report.violations.append(Violation(
                policy=d.policyName, level=_LEVEL_NAMES[d.enforcementLevel],
                urn=d.urn or (r.urn if r else ""), type=r.type if r else "", name=r.name if r else "",
                message=_message(d),
            ))
        for na in response.not_applicable:
            report.not_applicable.append({"policy": na.policy_name, "reason": na.reason,
                                          "urn": default.urn if default else ""})

    for registration, request in analyze_requests(run):
        add(servicer.Analyze(request, None), registration)
    add(servicer.AnalyzeStack(analyze_stack_request(run), None), None)
    return report


def check(config: Mapping[str, Any], *, stack: str = "offline", program: Path = PROJECT_DIR / "__main__.py",
          preview: bool = False, policy_config: Optional[Mapping[str, Any]] = None, mocks=None) -> Report:
    """Run ``program`` under mocks with ``config`` and evaluate the pack on what it registered."""
    try:
        run = run_program(config, program=program, stack=stack, preview=preview, mocks=mocks)
    except ConfigError as exc:
        raise BadInput(*exc.problems) from exc
    except Exception as exc:  # noqa: BLE001 - any program failure means there is nothing to judge
        raise BadInput(f"the program failed under mocks: {type(exc).__name__}: {exc}") from exc
    return evaluate(run, stack=stack, policy_config=policy_config)


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m policies check",
        description="Run the kiln CrossGuard policy pack without the Pulumi CLI: the program runs under "
                    "Pulumi's mocks with the given stack config, and every registered resource goes through "
                    "the pack's own analyzer. Exit 0: no mandatory violation; 1: a mandatory policy failed; "
                    "2: bad input.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--stack", metavar="NAME", help="use Pulumi.NAME.yaml in the project directory")
    src.add_argument("--config", metavar="FILE", type=Path, help="use this Pulumi.<stack>.yaml-format file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--preview", action="store_true",
                   help="run the program as a preview (unknown values stay unknown, as in `pulumi preview`)")
    p.add_argument("--policy-config", metavar="FILE", type=Path,
                   help="policy settings in `pulumi --policy-pack-config` JSON format")
    p.add_argument("--program", metavar="FILE", type=Path, default=PROJECT_DIR / "__main__.py",
                   help="the Pulumi program to run (default: the project's __main__.py)")
    return p


def _print_text(report: Report, out) -> None:
    for v in report.violations:
        print(f"[{v.level}] {v.policy}: {v.type} {v.name!r}" if v.type else f"[{v.level}] {v.policy}: stack", file=out)
        for line in v.message.splitlines():
            print(f"    {line}", file=out)
    advisory = len(report.violations) - len(report.mandatory)
    verdict = "FAIL" if report.mandatory else "PASS"
    print(f"{verdict}: {len(report.mandatory)} mandatory and {advisory} advisory violation(s) "
          f"across {report.resources} resources (stack {report.stack})", file=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        path = PROJECT_DIR / f"Pulumi.{args.stack}.yaml" if args.stack else args.config
        stack = args.stack or (path.name[len("Pulumi."):-len(".yaml")]
                               if path.name.startswith("Pulumi.") and path.name.endswith(".yaml") else "offline")
        config = load_stack_config(path)
        policy_config = load_policy_config(args.policy_config)
        if not args.program.is_file():
            raise BadInput(f"{args.program}: no such program")
        report = check(config, stack=stack, program=args.program.resolve(), preview=args.preview,
                       policy_config=policy_config)
    except BadInput as exc:
        if args.json:
            print(json.dumps({"error": exc.lines, "exitCode": EXIT_BAD_INPUT}))
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        _print_text(report, sys.stdout)
    return report.exit_code
