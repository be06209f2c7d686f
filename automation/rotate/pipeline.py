"""The rotation pipeline: validate -> bake -> set config -> gated preview -> up -> replace -> converge -> persist -> report.

Every step is level-triggered: it looks at the world (the stack's config,
outputs and preview, the AMIs, the fleet, the model volumes) and does only what
is still missing, so running the same command again after an interruption at
*any* point continues. The only thing kept is the rotation's intent
(:class:`RotationIntent`, in the cluster: see ``state.py``).

Three ways a run ends without finishing:

- **interrupted** (SIGTERM, Ctrl-C, the node replacement stopped short of
  completing or rolling back — blocked by a PodDisruptionBudget, another
  rollout holding the lock, an API error — a failure to persist):
  nothing is undone; both intents (this one and the rollout's) stay, exit 1,
  "rerun to continue";
- **failed** (the gate blocked, ``up`` failed, the replacement rolled back, not
  confirmed): what was changed is put back. Before anything was
  applied that is only the config; after, it is a *gated* restore — a preview
  of the way back that the gate must allow (the previous AMIs and model, and
  the retained model objects adopted), then ``up`` with that preview's plan;
  a restore the gate blocks stops and says so, keeping the intent;
- **bad input** found mid-way: as failed, and exit 2 when everything was put back.

Every ``up`` applies the update plan of the gated preview just before it (where
the stack supports plans), and every preview runs the policy pack.

The world is injected (:class:`RotationSeams`): the stack seam, the bake, the node
replacement and the model volumes are objects/functions, so tests run the real
pipeline with a strict fake stack and the simulator as the fleet, and
``make demo`` runs it against moto.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping, Optional

from automation.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput
from automation.gate import EventRecorder, Expected, GateResult, classify
from automation.signals import Interrupted
from automation.stack import ConfigReadError, StackSeam, desired_amis, is_family_map, setting_of
from infra.config import default as config_default

from .state import IntentStore, RotationIntent

# The step table: the pipeline runs these in order, each as the Rotation method named by step_method().
STEPS = ("validate", "bake", "set-config", "preview", "up", "replace", "converge", "persist", "report")
KEY_AMI, KEY_MODEL = "kiln:nodeAmi", "kiln:modelVersion"
RERUN = "rerun the same command to continue"

__all__ = ["BadInput", "Interrupted", "IntentStore", "RotationIntent", "Rotation", "RotationReport", "RotationSeams",
           "rollout_disposition", "step_method", "STEPS"]


def rollout_disposition(report: Mapping[str, Any]) -> str:
    """``completed``, ``rolled_back`` (the rollout judged the new nodes bad and put the old ones back: the one
    replacement outcome that undoes the rotation) or ``interrupted``: everything else — SIGTERM, the lock held
    elsewhere or lost, a PDB blocking at the deadline, an API error, not done after the deadline, an outcome this
    code does not know. Then the rollout's own intent stays on its Lease and part of the fleet may already run the
    new image: restoring the stack under it would leave a mixed fleet and a rollout intent aimed at a launch
    template that moved, so nothing is undone; a rerun continues, `rollback` goes back."""
    outcome = report.get("outcome")
    if outcome == "completed":
        return "completed"
    if outcome == "rolled_back":
        return "rolled_back"
    return "interrupted"


@dataclass
class RotationSeams:
    """The pipeline's ways of touching the world."""

    stack: StackSeam
    # (intent, family, base AMI or None) -> AMI id. The base is resolved once (resolve_base) and recorded.
    bake: Callable[[RotationIntent, str, Optional[str]], str]
    replace: Callable[[dict[str, Any]], dict[str, Any]]  # stack outputs -> rollout report dict (outcome ...)
    resolve_base: Callable[[RotationIntent, str], Optional[str]] = lambda intent, family: None
    validate: Callable[[RotationIntent], None] = lambda intent: None          # raises BadInput before any change
    check_amis: Callable[[Mapping[str, str]], None] = lambda amis: None       # raises BadInput: exist, available
    volumes: Optional[Any] = None    # ModelVolumes-like: prepare(version, dry_run=) -> Decision (adopt, notes)
    persist: Optional[Callable[[Any, str], str]] = None   # (stack file, commit message) -> what was done
    predict: Optional[Callable[[dict[str, Any]], dict[str, Any]]] = None  # dry run: simulated replacement
    confirm: Callable[[GateResult], bool] = lambda result: True
    log: Callable[[str], None] = lambda msg: None
    checkpoint: Callable[[str], None] = lambda step: None  # called after each step (progress; tests interrupt here)
    clock: Callable[[], float] = time.time
    jobs_namespace: str = config_default("jobsNamespace")


@dataclass
class RotationReport:
    exit_code: int
    outcome: str      # done | dry_run | blocked | failed | rolled_back | not_confirmed | interrupted | bad_input
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
    restore: Optional[dict[str, Any]] = None   # {"config": restored|failed: ..., "applied": ..., "gate": ...}
    persisted: Optional[str] = None
    message: str = ""
    config_restored: bool = False             # everything put back (config and, if applied, the stack)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def step_method(step: str) -> str:
    """The :class:`Rotation` method that runs ``step`` of the step table (``set-config`` -> ``_step_set_config``)."""
    return "_step_" + step.replace("-", "_")


@dataclass
class _Run:
    """One pass through the step table: the intent as the steps update it, the report, and what a step hands
    the next (the preview's plan and gate to the up, the up's outputs to the replacement)."""

    intent: RotationIntent
    report: RotationReport
    dry_run: bool
    scope: ExitStack                  # holds the gated preview's plan file until the up has applied it
    plan: Optional[Any] = None        # Rotation._Plan
    gate: Optional[GateResult] = None
    outputs: Optional[dict[str, Any]] = None


def _config_for(previous: Optional[str], amis: dict[str, str]) -> str:
    """The new ``kiln:nodeAmi`` (config text) in the shape of the previous one (id or family map)."""
    import json

    if is_family_map(previous) or set(amis) != {"standard"}:
        return json.dumps(amis, sort_keys=True)
    return amis["standard"]


def families_for(previous_ami: Optional[str], config: Mapping[str, str]) -> list[str]:
    """The AMI families a stack needs: those in its ``kiln:nodeAmi`` map, ``nvidia`` for GPU groups."""
    import json

    families = set(desired_amis(previous_ami)) or {"standard"}
    try:
        groups = json.loads(config.get("kiln:nodeGroups") or "[]")
    except (TypeError, ValueError):
        groups = []
    for g in groups if isinstance(groups, list) else []:
        if isinstance(g, Mapping) and str(g.get("gpu")).lower() == "true":
            families.add("nvidia")
    families.add("standard")   # a family map needs its standard entry (the fallback of every group)
    return sorted(families)


class Rotation:
    def __init__(self, world: RotationSeams, store: IntentStore):
        self.w = world
        self.store = store

    # ------------------------------------------------------------------ entry points
    def rotate(self, stack: str, model_version: str, model_uri: Optional[str], *, dry_run: bool = False) -> RotationReport:
        deployed_ami, deployed_model = self._deployed(stack)
        requested = RotationIntent(kind="rotate", stack=stack, model_version=model_version, model_uri=model_uri,
                                   previous_ami=deployed_ami, previous_model_version=deployed_model,
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
        deployed_ami, deployed_model = self._deployed(stack, in_flight)
        requested = RotationIntent(kind="rollback", stack=stack, model_version=model_version, model_uri=None,
                                   previous_ami=deployed_ami, previous_model_version=deployed_model,
                                   target_ami=ami, started_at=self.w.clock())
        if in_flight is not None:
            # Abandon the rotation in flight (its intent): roll back to what it would have restored. Only once the
            # rollback's own input is known good: its intent is the only record of where to go back to.
            self.w.validate(requested)
            self.w.log(f"abandoning the {in_flight.kind} to model {in_flight.model_version} in flight")
            self.store.clear(stack)
        return self._run(requested, dry_run=dry_run)

    def _deployed(self, stack: str, in_flight: Optional[RotationIntent] = None) -> tuple[Optional[str], Optional[str]]:
        """What the stack runs: its outputs (``nodeAmi``/``modelVersion``) when it has them, else its config.
        A new rotation from a stack file that does not match what runs would record the wrong "previous"."""
        config = self.w.stack.all_config()
        have_ami, have_model = config.get(KEY_AMI), config.get(KEY_MODEL)
        outputs = self.w.stack.outputs()
        out_ami, out_model = outputs.get("nodeAmi"), outputs.get("modelVersion")
        if out_ami is None or out_model is None:
            return have_ami, have_model
        out_text = _config_for(have_ami, desired_amis(out_ami))
        if in_flight is None and self.store.load(stack) is None and (
                desired_amis(out_ami) != desired_amis(have_ami) or str(out_model) != have_model):
            raise BadInput(f"the stack file says {KEY_AMI}={have_ami} {KEY_MODEL}={have_model} but stack {stack} runs "
                           f"{out_text} / {out_model}: update the stack file from git (the last rotation's commit) "
                           "before rotating")
        return out_text, str(out_model)

    # ------------------------------------------------------------------ the pipeline
    def _run(self, requested: RotationIntent, *, dry_run: bool) -> RotationReport:
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
            self.w.log(f"continuing the {intent.kind} to model {intent.model_version} "
                       f"(previous AMI {intent.previous_ami}, {intent.phase})")
        else:
            self.store.save(intent)
        report = RotationReport(EXIT_FAILED, "failed", stack=intent.stack, kind=intent.kind,
                                model_version=intent.model_version, previous_ami=intent.previous_ami,
                                target_ami=intent.target_ami)
        if intent.phase == "restoring":
            return self._restore(intent, report, intent.failure or "failed", "continuing the restore")
        try:
            return self._steps(intent, report, dry_run=dry_run)
        except BadInput as exc:
            # Found mid-way (no AMI for the model, a bad --model-uri, no kubeconfig): put back what changed and
            # keep no intent that would refuse the corrected command as "other arguments".
            current = self.store.load(intent.stack) or intent
            done = self._fail(current, report, "bad_input", str(exc))
            if done.config_restored or not current.applied:
                raise
            return done
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:
            if dry_run:  # a dry run never leaves the stack's config changed
                self._fail(self.store.load(intent.stack) or intent, report, "failed", str(exc))
            raise

    def _steps(self, intent: RotationIntent, report: RotationReport, *, dry_run: bool) -> RotationReport:
        """Run the step table (``STEPS``) in order: each step is the method ``_step_<name>``; one that ends the
        run early (blocked, failed, dry run, interrupted) returns its report, else the step is recorded and the
        checkpoint called (where progress shows and where tests interrupt)."""
        with ExitStack() as scope:   # closes the gated preview's plan file however the run ends
            run = _Run(intent=intent, report=report, dry_run=dry_run, scope=scope)
            for step in STEPS:
                ended = getattr(self, step_method(step))(run)
                if ended is not None:
                    return ended
                self._done(report, step)
        return report

    def _step_validate(self, run: "_Run") -> Optional[RotationReport]:
        """Bad input is found before anything changes."""
        self.w.validate(run.intent)
        return None

    def _step_bake(self, run: "_Run") -> Optional[RotationReport]:
        """Bake, or reuse: the bake reuses an AMI with the same recipe; the base AMI is resolved once and kept in
        the intent, so a rerun bakes on the same base. A rollback's target is already in its intent."""
        intent = run.intent
        if intent.kind == "rotate" and intent.previous_model_version == intent.model_version:
            # The stack already runs this model: its AMIs are the target (no bake on a newer base AMI; a new
            # model needs a new --model-version). The rest still runs: nodes not on them are replaced.
            if intent.target_ami is None:
                self.w.log(f"model {intent.model_version} is already deployed ({intent.previous_ami}): no bake")
                run.intent = self._save(replace(intent, target_ami=intent.previous_ami))
        elif intent.kind == "rotate":
            self._bake_families(run)
        run.report.target_ami = run.intent.target_ami
        self.w.check_amis(desired_amis(run.intent.target_ami))
        return None

    def _bake_families(self, run: "_Run") -> None:
        """One AMI per family the stack needs; each base AMI is recorded before its bake starts."""
        w, intent = self.w, run.intent
        amis = {}
        for family in families_for(intent.previous_ami, w.stack.all_config()):
            base = intent.base_amis.get(family)
            if base is None:
                base = w.resolve_base(intent, family)
                if base is not None:
                    intent = self._save(replace(intent, base_amis={**intent.base_amis, family: base}))
            amis[family] = w.bake(intent, family, base)
        target = _config_for(intent.previous_ami, amis)
        if intent.target_ami != target:
            intent = self._save(replace(intent, target_ami=target))
        run.intent = intent

    def _step_set_config(self, run: "_Run") -> Optional[RotationReport]:
        """Point the stack's config at the target AMIs and model (idempotent)."""
        self._set_config(run.intent.target_ami, run.intent.model_version)
        return None

    def _step_preview(self, run: "_Run") -> Optional[RotationReport]:
        """Preview behind the gate. Its plan file stays open for the up step, which applies exactly that plan."""
        w, intent, report = self.w, run.intent, run.report
        deployed_model = self._deployed_model(intent)
        run.plan = plan = run.scope.enter_context(self._plan())
        run.gate = gate = self._gated_preview(Expected(
            to_model=intent.model_version, to_amis=frozenset(desired_amis(intent.target_ami).values()),
            from_model=deployed_model, jobs_namespace=w.jobs_namespace,
            required_policy_packs=tuple(w.stack.policy_packs)), plan=plan, dry_run=run.dry_run)
        report.gate = gate.to_dict()
        w.log(gate.render())
        if not gate.allowed:
            return self._fail(intent, report, "blocked", "the preview gate blocked the change:\n" + gate.render())
        if run.dry_run:
            if w.predict is not None:
                report.prediction = w.predict(w.stack.outputs())
            return self._fail(intent, report, "dry_run", "dry run: nothing applied", exit_code=EXIT_OK)
        if not w.confirm(gate):
            if intent.applied:   # undoing an earlier run's up needs an up too: leave it to the operator
                report.outcome, report.exit_code = "not_confirmed", EXIT_FAILED
                report.message = f"not confirmed; nothing applied (an earlier run already applied it: {RERUN}, " \
                                 "or run rollback)"
                return report
            return self._fail(intent, report, "not_confirmed", "not confirmed; nothing applied")
        return None

    def _step_up(self, run: "_Run") -> Optional[RotationReport]:
        """Up, bound to the gated preview by its plan. ``applied`` is recorded first: from then on a failure
        needs a gated restore, not just the config put back."""
        assert run.plan is not None and run.gate is not None, "the up step runs after the preview step"
        if not run.intent.applied:
            run.intent = self._save(replace(run.intent, applied=True))
        try:
            # Nothing to apply (a rerun after the up): the stack's outputs are what up would return.
            run.outputs = self.w.stack.up(plan=run.plan.path, adopt_model_volume=run.plan.adopt) \
                if run.gate.has_changes else self.w.stack.outputs()
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of up restores the previous AMI
            return self._fail(run.intent, run.report, "failed", f"stack update failed: {_one_line(exc)}")
        run.scope.close()   # the plan is applied: its file goes
        return None

    def _step_replace(self, run: "_Run") -> Optional[RotationReport]:
        """The drain-aware replacement on the groups in the stack outputs. Only a rollback by the rollout undoes
        the rotation; anything short of completion keeps both intents (see :func:`rollout_disposition`)."""
        rollout = self.w.replace(run.outputs)
        run.report.rollout = rollout
        disposition = rollout_disposition(rollout)
        if disposition == "interrupted":
            return self._interrupted(run.report, f"node replacement {rollout.get('outcome')}: "
                                                 f"{rollout.get('reason', '')} (`rollback` goes back instead)")
        if disposition != "completed":
            return self._fail(run.intent, run.report, disposition,
                              f"node replacement {rollout.get('outcome')}: {rollout.get('reason', '')}")
        return None

    def _step_converge(self, run: "_Run") -> Optional[RotationReport]:
        """A gated refreshed preview (only what the replacement changed may come back), its up, then a refreshed
        preview that must show no changes."""
        w, intent, report = self.w, run.intent, run.report
        converge = Expected(to_model=intent.model_version, to_amis=frozenset(desired_amis(intent.target_ami).values()),
                            from_model=intent.model_version, converge=True, jobs_namespace=w.jobs_namespace,
                            required_policy_packs=tuple(w.stack.policy_packs))
        with self._plan(refresh=True) as plan:
            before = self._gated_preview(converge, plan=plan, refresh=True)
            report.converge = before.to_dict()
            if not before.allowed:
                return self._stopped(report, "failed", "the refreshed preview holds changes a rotation does not make; "
                                                       "nothing applied (review them, then " + RERUN + "):\n"
                                     + before.render())
            if before.has_changes:
                w.stack.up(refresh=True, plan=plan.path)
        after = self._gated_preview(converge, refresh=True)
        report.converge = after.to_dict()
        if after.has_changes or not after.allowed:
            return self._stopped(report, "failed", f"the stack did not converge; {RERUN}:\n" + after.render())
        return None

    def _step_persist(self, run: "_Run") -> Optional[RotationReport]:
        """The stack file reaches git before the intent goes."""
        intent = run.intent
        self._persist(intent, run.report, f"kiln: {intent.kind} {intent.stack} to model {intent.model_version}")
        return run.report if run.report.outcome == "interrupted" else None

    def _step_report(self, run: "_Run") -> Optional[RotationReport]:
        """Done: remember what to roll back to (a real change only), drop the intent, say so."""
        intent, report = run.intent, run.report
        if intent.previous_ami != intent.target_ami or intent.previous_model_version != intent.model_version:
            self.store.record_last(intent)
        self.store.clear(intent.stack)
        report.outcome, report.exit_code = "done", EXIT_OK
        report.message = f"{intent.kind} of {intent.stack} to model {intent.model_version} ({intent.target_ami}) done"
        return None

    # ------------------------------------------------------------------ helpers
    def _save(self, intent: RotationIntent) -> RotationIntent:
        self.store.save(intent)
        return intent

    def _done(self, report: RotationReport, step: str) -> None:
        report.steps.append(step)
        self.w.checkpoint(step)

    def _set_config(self, node_ami: Optional[str], model: Optional[str]) -> bool:
        wanted: dict[str, Any] = {}
        config = self.w.stack.all_config()
        if node_ami is not None and (desired_amis(config.get(KEY_AMI)) != desired_amis(node_ami)
                                     or is_family_map(config.get(KEY_AMI)) != is_family_map(node_ami)):
            wanted[KEY_AMI] = setting_of(node_ami)
        if model is not None and config.get(KEY_MODEL) != model:
            wanted[KEY_MODEL] = model
        if wanted:
            self.w.stack.set_config(wanted)
            self.w.log(f"stack {self.w.stack.name}: {KEY_AMI}={node_ami} {KEY_MODEL}={model}")
        return bool(wanted)

    def _deployed_model(self, intent: RotationIntent) -> Optional[str]:
        model = self.w.stack.outputs().get("modelVersion")
        if model is not None:
            return str(model)
        return intent.model_version if intent.applied else intent.previous_model_version

    @dataclass
    class _Plan:
        path: Optional[str] = None
        adopt: bool = False

    @contextmanager
    def _plan(self, refresh: bool = False) -> Iterator["Rotation._Plan"]:
        """A temporary file for the update plan of one gated preview (when the stack supports plans)."""
        if not self.w.stack.supports_plans:
            yield Rotation._Plan()
            return
        with tempfile.TemporaryDirectory(prefix="kiln-plan-") as tmp:
            yield Rotation._Plan(path=os.path.join(tmp, "plan.json"))

    def _gated_preview(self, expected: Expected, *, plan: Optional["Rotation._Plan"] = None,
                       refresh: bool = False, dry_run: bool = False) -> GateResult:
        adopt = False
        if expected.model_changes and self.w.volumes is not None:
            decision = self.w.volumes.prepare(expected.to_model, dry_run=dry_run)
            for note in decision.notes:
                self.w.log(note)
            adopt = decision.adopt
        recorder = self._preview_once(expected, refresh, plan, adopt=False)
        if adopt and _creates_model_objects(recorder, expected.to_model):
            # The apply would create objects that exist (retained): preview again, adopting them. Only then:
            # a preview that creates nothing (the objects are already in the state) needs no adoption.
            recorder = self._preview_once(expected, refresh, plan, adopt=True)
        else:
            adopt = False
        return classify(recorder.events, replace(expected, adopt_model_volume=adopt), dropped=recorder.dropped)

    def _preview_once(self, expected: Expected, refresh: bool, plan: Optional["Rotation._Plan"], *,
                      adopt: bool) -> EventRecorder:
        if plan is not None:
            plan.adopt = adopt
        recorder = EventRecorder()
        recorder.dropped.extend(self.w.stack.preview(recorder, refresh=refresh, plan=plan.path if plan else None,
                                                     adopt_model_volume=adopt) or ())
        return recorder

    def _persist(self, intent: RotationIntent, report: RotationReport, message: str) -> None:
        if self.w.persist is None:
            return
        try:
            report.persisted = self.w.persist(self.w.stack.stack_file, message)
            self.w.log(report.persisted)
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the stack file is not in git yet: keep the intent
            self._interrupted(report, f"the stack file could not be persisted: {_one_line(exc)}")

    def _interrupted(self, report: RotationReport, why: str) -> RotationReport:
        return self._stopped(report, "interrupted", f"{why}; nothing was undone and the intent is kept: {RERUN}")

    @staticmethod
    def _stopped(report: RotationReport, outcome: str, message: str) -> RotationReport:
        report.outcome, report.exit_code, report.message = outcome, EXIT_FAILED, message
        return report

    def _fail(self, intent: RotationIntent, report: RotationReport, outcome: str, message: str, *,
              exit_code: int = EXIT_FAILED) -> RotationReport:
        """A real failure (or a dry run's end): put back what this rotation changed."""
        if not intent.applied:
            # Nothing was applied: the config on this runner is all there is to put back.
            report.restore = {"config": self._restore_config(intent), "applied": "nothing was applied"}
            report.config_restored = report.restore["config"] == "restored"
            if report.config_restored:
                self.store.clear(intent.stack)
                report.outcome, report.exit_code, report.message = outcome, exit_code, message
            else:
                report.outcome, report.exit_code = outcome, EXIT_FAILED
                report.message = f"{message}\nthe config could NOT be restored ({report.restore['config']}); " \
                                 f"the intent is kept: {RERUN}"
            return report
        intent = self._save(replace(intent, phase="restoring", failure=outcome))
        return self._restore(intent, report, outcome, message)

    def _restore_config(self, intent: RotationIntent) -> str:
        try:
            changed = self._set_config(intent.previous_ami, intent.previous_model_version)
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - say exactly what was not put back
            return f"failed: {_one_line(exc)}"
        if changed:
            self.w.log(f"config restored: {KEY_AMI}={intent.previous_ami} {KEY_MODEL}={intent.previous_model_version}")
        return "restored"

    def _restore(self, intent: RotationIntent, report: RotationReport, outcome: str, message: str) -> RotationReport:
        """Gated restore of an applied rotation: the previous AMIs and model, previewed, checked, applied."""
        report.outcome, report.exit_code = outcome, EXIT_FAILED
        report.restore = {"config": self._restore_config(intent), "applied": "no"}
        if report.restore["config"] != "restored":
            report.message = f"{message}\nRESTORE INCOMPLETE: the config could not be put back " \
                             f"({report.restore['config']}); nothing was applied; the intent is kept: {RERUN}"
            return report
        back = Expected(to_model=intent.previous_model_version or "",
                        to_amis=frozenset(desired_amis(intent.previous_ami).values()),
                        # The way back starts from the target, whatever part of it an interrupted up applied.
                        from_model=intent.model_version, jobs_namespace=self.w.jobs_namespace,
                        required_policy_packs=tuple(self.w.stack.policy_packs))
        try:
            with self._plan() as plan:
                gate = self._gated_preview(back, plan=plan)
                report.restore["gate"] = gate.to_dict()
                if not gate.allowed:
                    report.restore["applied"] = "blocked by the gate"
                    report.message = (f"{message}\nRESTORE BLOCKED: the way back to {intent.previous_ami} / model "
                                      f"{intent.previous_model_version} would change more than a rotation; the config "
                                      f"is back but nothing was applied, so the stack still runs {intent.target_ami} / "
                                      f"model {intent.model_version}; the intent is kept:\n{gate.render()}")
                    return report
                if gate.has_changes:
                    self.w.stack.up(plan=plan.path, adopt_model_volume=plan.adopt)
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - report the partial restore, keep the intent
            report.restore["applied"] = f"failed: {_one_line(exc)}"
            report.message = f"{message}\nRESTORE INCOMPLETE: the config is back but applying it failed " \
                             f"({_one_line(exc)}); the intent is kept: {RERUN}"
            return report
        report.restore["applied"] = "applied"
        self._persist(intent, report, f"kiln: restore {intent.stack} to model {intent.previous_model_version} "
                                      f"after a {outcome} {intent.kind}")
        if report.outcome == "interrupted":
            report.message = f"{message}\nthe restore was applied, but {report.message}"
            return report
        self.store.clear(intent.stack)
        report.config_restored = True
        report.outcome, report.exit_code = outcome, EXIT_FAILED
        report.message = f"{message}\nrestored: config and stack are back to {intent.previous_ami} / model " \
                         f"{intent.previous_model_version}"
        return report


def _creates_model_objects(recorder: EventRecorder, version: str) -> bool:
    """Does the preview create the model volume or claim of ``version`` (create or create-replacement)?"""
    from pulumi.automation.events import OpType

    from automation.gate import PERSISTENT_VOLUME, PERSISTENT_VOLUME_CLAIM, claim_name, volume_name

    wanted = {PERSISTENT_VOLUME: volume_name(version), PERSISTENT_VOLUME_CLAIM: claim_name(version)}
    for event in recorder.events:
        pre = event.resource_pre_event
        if pre is None or pre.metadata.type not in wanted:
            continue
        meta = pre.metadata
        name = ((meta.new.inputs or {}).get("metadata") or {}).get("name") if meta.new is not None else None
        if meta.op in (OpType.CREATE, OpType.CREATE_REPLACEMENT) and name == wanted[meta.type]:
            return True
    return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__


__all__ += ["ConfigReadError"]
