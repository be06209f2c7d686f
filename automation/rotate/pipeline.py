"""The rotation pipeline: bake -> set config -> gated preview -> up -> replace -> converge -> report.

Every step is level-triggered: it looks at the world (the stack's config and
preview, the AMIs, the fleet) and does only what is still missing, so running
the same command again after an interruption at *any* point continues. The
only thing persisted is the rotation's intent (:class:`RotationIntent`: what
was asked and what to restore — the previous ``kiln:nodeAmi`` and
``kiln:modelVersion``), in a small JSON file per stack.

The world is injected (:class:`World`): the stack seam, the bake and the node
replacement are functions, so tests run the real pipeline with a fake stack and
the simulator as the fleet, and ``make demo`` runs it against moto.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from automation.gate import DEFAULT_RULES, EventRecorder, GateResult, GateRules, classify
from automation.stack import StackSeam, desired_amis

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
STEPS = ("bake", "set-config", "preview", "up", "replace", "converge", "report")
KEY_AMI, KEY_MODEL = "kiln:nodeAmi", "kiln:modelVersion"


class BadInput(ValueError):
    """Arguments that cannot run (exit 2); the message names the flag."""


@dataclass(frozen=True)
class RotationIntent:
    """What a rotation was asked to do and what to restore if it fails."""

    kind: str                           # rotate | rollback
    stack: str
    model_version: str
    model_uri: Optional[str]
    previous_ami: Optional[str]         # kiln:nodeAmi before the rotation (raw config text)
    previous_model_version: Optional[str]
    target_ami: Optional[str] = None    # rollback: given; rotate: known after the bake
    started_at: float = 0.0
    dry_run: bool = False               # a dry run only ever changes config, and restores it

    def same_request(self, other: "RotationIntent") -> bool:
        return (self.kind, self.stack, self.model_version, self.model_uri) == \
               (other.kind, other.stack, other.model_version, other.model_uri)


class IntentStore:
    """``<dir>/<stack>.json`` holds the intent of the rotation in flight; ``<stack>.last.json`` the last done."""

    def __init__(self, directory: Path | str):
        self.dir = Path(directory)

    def _path(self, stack: str, suffix: str = "") -> Path:
        return self.dir / f"{stack}{suffix}.json"

    def _read(self, path: Path) -> Optional[RotationIntent]:
        if not path.exists():
            return None
        return RotationIntent(**json.loads(path.read_text(encoding="utf-8")))

    def _write(self, path: Path, intent: RotationIntent) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(intent), indent=2), encoding="utf-8")
        tmp.replace(path)  # atomic: an interruption never leaves half a file

    def load(self, stack: str) -> Optional[RotationIntent]:
        return self._read(self._path(stack))

    def save(self, intent: RotationIntent) -> None:
        self._write(self._path(intent.stack), intent)

    def clear(self, stack: str) -> None:
        self._path(stack).unlink(missing_ok=True)

    def last(self, stack: str) -> Optional[RotationIntent]:
        return self._read(self._path(stack, ".last"))

    def record_last(self, intent: RotationIntent) -> None:
        self._write(self._path(intent.stack, ".last"), intent)


@dataclass
class World:
    """The pipeline's ways of touching the world."""

    stack: StackSeam
    bake: Callable[[RotationIntent, str], str]            # (intent, ami family) -> AMI id
    replace: Callable[[dict[str, Any]], dict[str, Any]]  # stack outputs -> rollout report dict (outcome ...)
    predict: Optional[Callable[[dict[str, Any]], dict[str, Any]]] = None  # dry run: simulated replacement
    confirm: Callable[[GateResult], bool] = lambda result: True
    log: Callable[[str], None] = lambda msg: None
    checkpoint: Callable[[str], None] = lambda step: None  # called after each step (progress; tests interrupt here)
    rules: GateRules = DEFAULT_RULES
    clock: Callable[[], float] = time.time


@dataclass
class RotationReport:
    exit_code: int
    outcome: str                      # done | dry_run | blocked | failed | rolled_back | not_confirmed | bad_input
    stack: str = ""
    kind: str = "rotate"
    model_version: str = ""
    previous_ami: Optional[str] = None
    target_ami: Optional[str] = None
    steps: list[str] = field(default_factory=list)
    gate: Optional[dict[str, Any]] = None
    rollout: Optional[dict[str, Any]] = None
    prediction: Optional[dict[str, Any]] = None
    converge: Optional[dict[str, Any]] = None
    message: str = ""
    config_restored: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _config_for(previous: Optional[str], amis: dict[str, str]) -> str:
    """The new ``kiln:nodeAmi`` in the shape of the previous one (plain id or family map)."""
    if previous and previous.strip().startswith("{"):
        return json.dumps(amis, sort_keys=True)
    return amis["standard"]


class Rotation:
    def __init__(self, world: World, store: IntentStore):
        self.w = world
        self.store = store

    # ------------------------------------------------------------------ entry points
    def rotate(self, stack: str, model_version: str, model_uri: Optional[str], *, dry_run: bool = False) -> RotationReport:
        stack_obj = self.w.stack
        requested = RotationIntent(kind="rotate", stack=stack, model_version=model_version, model_uri=model_uri,
                                   previous_ami=stack_obj.get_config(KEY_AMI),
                                   previous_model_version=stack_obj.get_config(KEY_MODEL),
                                   started_at=self.w.clock())
        return self._run(requested, dry_run=dry_run)

    def rollback(self, stack: str, *, ami: Optional[str] = None, model_version: Optional[str] = None,
                 dry_run: bool = False) -> RotationReport:
        in_flight = self.store.load(stack)
        if in_flight is not None and in_flight.kind == "rollback":
            if ami is not None and ami != in_flight.target_ami:
                raise BadInput(f"--ami {ami}: a rollback of stack {stack} to {in_flight.target_ami} is in progress; "
                               "rerun it without --ami (or with the same one) to continue")
            return self._run(in_flight, dry_run=dry_run)
        source = in_flight or self.store.last(stack)
        if ami is None:
            if source is None or not source.previous_ami:
                raise BadInput("no previous AMI is recorded for this stack; pass --ami and --model-version")
            ami, model_version = source.previous_ami, model_version or source.previous_model_version
        if not model_version:
            raise BadInput("--model-version is required with --ami")
        requested = RotationIntent(kind="rollback", stack=stack, model_version=model_version, model_uri=None,
                                   previous_ami=self.w.stack.get_config(KEY_AMI),
                                   previous_model_version=self.w.stack.get_config(KEY_MODEL),
                                   target_ami=ami, started_at=self.w.clock())
        if in_flight is not None:
            # Abandon the rotation in flight: roll back to what it would have restored.
            self.store.clear(stack)
        return self._run(requested, dry_run=dry_run)

    # ------------------------------------------------------------------ the pipeline
    def _run(self, requested: RotationIntent, *, dry_run: bool) -> RotationReport:
        w, log = self.w, self.w.log
        existing = self.store.load(requested.stack)
        if existing is not None and not existing.same_request(requested):
            raise BadInput(
                f"a {existing.kind} of stack {existing.stack} to model {existing.model_version} is in progress "
                f"(started {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(existing.started_at))} UTC); rerun it "
                f"with the same arguments to continue, or run `rollback --stack {existing.stack}`")
        if existing is not None and dry_run and not existing.dry_run:
            raise BadInput(f"a {existing.kind} of stack {existing.stack} is in progress; --dry-run only previews a "
                           "new one (rerun without --dry-run to continue it)")
        if existing is not None and existing.dry_run != dry_run:
            # An interrupted dry run left only config behind; its intent knows what to restore.
            existing = replace(existing, dry_run=dry_run)
            self.store.save(existing)
        intent = existing or replace(requested, dry_run=dry_run)
        if existing is not None:
            log(f"continuing the {intent.kind} to model {intent.model_version} (previous AMI {intent.previous_ami})")
        else:
            self.store.save(intent)
        report = RotationReport(EXIT_FAILED, "failed", stack=intent.stack, kind=intent.kind,
                                model_version=intent.model_version, previous_ami=intent.previous_ami)
        try:
            return self._steps(intent, report, dry_run=dry_run)
        except BadInput as exc:
            # Found mid-way (no AMI for the model, --yes needed, no kubeconfig): exit 2 must leave nothing
            # half-done, and no intent that would refuse the corrected command as "other arguments".
            self._abort(intent, report, "bad_input", str(exc), run_up="up" in report.steps)
            raise
        except Exception as exc:
            if dry_run:  # a dry run never leaves the stack's config changed
                self._abort(intent, report, "failed", str(exc), run_up=False)
            raise

    def _steps(self, intent: RotationIntent, report: RotationReport, *, dry_run: bool) -> RotationReport:
        w, log = self.w, self.w.log

        # 1. bake, or reuse (the bake itself reuses an AMI with the same recipe)
        if intent.kind == "rotate":
            families = list(desired_amis(intent.previous_ami)) or ["standard"]
            amis = {family: w.bake(intent, family) for family in families}
            target = _config_for(intent.previous_ami, amis)
            if intent.target_ami != target:
                intent = replace(intent, target_ami=target)
                self.store.save(intent)
        report.target_ami = intent.target_ami
        self._done(report, "bake")

        # 2. set config (idempotent)
        wanted = {KEY_AMI: intent.target_ami, KEY_MODEL: intent.model_version}
        if any(w.stack.get_config(k) != v for k, v in wanted.items()):
            w.stack.set_config(wanted)
            log(f"stack {intent.stack}: {KEY_AMI}={intent.target_ami} {KEY_MODEL}={intent.model_version}")
        self._done(report, "set-config")

        # 3. preview behind the gate
        gate = self._preview()
        report.gate = gate.to_dict()
        log(gate.render())
        if not gate.allowed:
            return self._abort(intent, report, "blocked", "the preview gate blocked the change:\n" + gate.render(),
                               run_up=False)
        if dry_run:
            if w.predict is not None:
                report.prediction = w.predict(w.stack.outputs())
            return self._abort(intent, report, "dry_run", "dry run: nothing applied", run_up=False, exit_code=EXIT_OK)
        if gate.has_changes and not w.confirm(gate):
            return self._abort(intent, report, "not_confirmed", "not confirmed; nothing applied", run_up=False)
        self._done(report, "preview")

        # 4. up
        try:
            outputs = w.stack.up()
        except Exception as exc:  # noqa: BLE001 - any failure of up restores the previous AMI
            return self._abort(intent, report, "failed", f"stack update failed: {exc}", run_up=True)
        self._done(report, "up")

        # 5. the drain-aware replacement on the groups in the stack outputs
        rollout = w.replace(outputs)
        report.rollout = rollout
        if rollout.get("outcome") != "completed":
            outcome = "rolled_back" if rollout.get("outcome") == "rolled_back" else "failed"
            return self._abort(intent, report, outcome,
                               f"node replacement {rollout.get('outcome')}: {rollout.get('reason', '')}", run_up=True)
        self._done(report, "replace")

        # 6. converge: up again, then a preview that must show no changes. Both refresh first: without
        # it the engine compares the program with its own state and never sees what the replacement changed.
        w.stack.up(refresh=True)
        after = self._preview(refresh=True)
        report.converge = after.to_dict()
        if after.has_changes:
            report.outcome, report.exit_code = "failed", EXIT_FAILED
            report.message = "the stack did not converge; rerun to continue:\n" + after.render()
            return report  # intent kept: a rerun converges again
        self._done(report, "converge")

        # 7. report
        if intent.previous_ami != intent.target_ami:
            self.store.record_last(intent)
        self.store.clear(intent.stack)
        report.outcome, report.exit_code = "done", EXIT_OK
        report.message = f"{intent.kind} of {intent.stack} to model {intent.model_version} ({intent.target_ami}) done"
        self._done(report, "report")
        return report

    # ------------------------------------------------------------------ helpers
    def _done(self, report: RotationReport, step: str) -> None:
        report.steps.append(step)
        self.w.checkpoint(step)

    def _preview(self, *, refresh: bool = False) -> GateResult:
        recorder = EventRecorder()
        self.w.stack.preview(recorder, refresh=refresh)
        return classify(recorder.events, self.w.rules)

    def _abort(self, intent: RotationIntent, report: RotationReport, outcome: str, message: str, *, run_up: bool,
               exit_code: int = EXIT_FAILED) -> RotationReport:
        """Put the previous AMI and model version back (and apply them if anything was applied)."""
        restore = {KEY_AMI: intent.previous_ami, KEY_MODEL: intent.previous_model_version}
        restore = {k: v for k, v in restore.items() if v is not None}
        if restore and any(self.w.stack.get_config(k) != v for k, v in restore.items()):
            self.w.stack.set_config(restore)
            report.config_restored = True
            self.w.log(f"config restored: {KEY_AMI}={intent.previous_ami}")
        if run_up and report.config_restored:
            try:
                self.w.stack.up()
            except Exception as exc:  # noqa: BLE001
                message += f"\nrestoring the previous AMI with up also failed: {exc}"
        self.store.clear(intent.stack)
        report.outcome, report.exit_code, report.message = outcome, exit_code, message
        return report
