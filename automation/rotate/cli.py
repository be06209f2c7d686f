"""``python -m automation rotate``: a new model version onto the nodes, safely and resumably."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from .pipeline import EXIT_BAD_INPUT, EXIT_FAILED, BadInput, Rotation, RotationReport

_MODEL_VERSION_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,40}[a-z0-9])?$")
_GIT_PUSH_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+$")

EPILOG = """steps: validate -> bake (or reuse) -> set kiln:nodeAmi/kiln:modelVersion -> preview behind the change
gate (policy pack, update plan) -> up (that plan) -> drain-aware node replacement -> converge (a gated refreshed
preview, its up, then a preview that must show no changes) -> persist (commit/push the stack file) -> report.

Interrupted at any step (SIGTERM, Ctrl-C, the replacement stopping short of completed or rolled back: a
PodDisruptionBudget blocking it, another rollout holding the lock, an API error; a failed push), rerun the same
command to continue (or run rollback): nothing is undone and the intent stays, in the
cluster (ConfigMap kube-system/kiln-rotation-<stack>), next to the rollout's own Lease.

exit codes: 0 done (or dry run); 1 failed (gate blocked, up failed, replacement rolled back, not
confirmed: what was applied is restored behind the same gate, and a restore the gate blocks stops and says so),
interrupted, or did not converge (rerun to continue); 2 bad input (nothing left changed)."""


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True,
                        help="Pulumi stack of this project to rotate (plain or fully qualified org/project/stack)")
    parser.add_argument("--yes", action="store_true",
                        help="apply without asking after the gate passes (required without a terminal)")
    parser.add_argument("--dry-run", action="store_true",
                        help="stop after the gated preview, print the predicted replacement; config is restored")
    parser.add_argument("--json", action="store_true", help="print the final report as JSON on stdout")
    parser.add_argument("--strategy", default="default", help="rollout strategy: default or double-and-drain")
    from automation.rollout.cli import parse_duration

    parser.add_argument("--deadline", type=parse_duration, default=7200.0, metavar="DURATION",
                        help="how long a running Job may keep its old node before it is evicted: "
                             "7200, 90m, 2h or 1h30m (default 2h)")
    parser.add_argument("--ready-timeout", type=parse_duration, default=1800.0, metavar="DURATION",
                        help="a new node registered but not Ready and warm by then is bad: the replacement "
                             "rolls back (default 30m)")
    parser.add_argument("--boot-timeout", type=parse_duration, default=600.0, metavar="DURATION",
                        help="a new instance whose node has not registered by then is bad (default 10m)")
    parser.add_argument("--launch-failure-timeout", type=parse_duration, default=900.0, metavar="DURATION",
                        help="launches failing (no capacity, a bad launch template) this long stop the "
                             "replacement with old capacity given back; a rerun continues (default 15m)")
    parser.add_argument("--git-push", metavar="REMOTE/BRANCH",
                        help="when done (or restored), commit Pulumi.<stack>.yaml and push it to this branch, e.g. "
                             "origin/main, before the intent is cleared; a branch that moved on is rebased onto")
    parser.add_argument("--git-commit", action="store_true",
                        help="commit Pulumi.<stack>.yaml when done, without pushing")
    parser.add_argument("--no-update-plan", action="store_true",
                        help="do not bind each up to its gated preview with an update plan (pulumi preview "
                             "--save-plan / up --plan); only if your pulumi CLI rejects plans. The gate still runs")
    parser.add_argument("--state-dir", default=None,
                        help="stand-in only (no cluster): where the intent is kept (default .kiln/rotations)")
    from automation.rollout.cli import add_job_kind_flags

    add_job_kind_flags(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = ("Bake (or reuse) node AMIs for a model version, put them on the stack behind a\n"
                          "fail-closed change gate, replace the nodes without killing running Jobs, converge,\n"
                          "and commit the stack file (--git-push).")
    parser.epilog = EPILOG
    add_common(parser)
    parser.add_argument("--model-version", required=True, help="model version to roll out, e.g. v6")
    parser.add_argument("--model-uri", help="s3://bucket/prefix/ of the model (checked: bucket reachable, "
                                            "MANIFEST.sha256 present); without it an AMI baked for --model-version "
                                            "(each family the stack needs) must already exist")


def validate(args: argparse.Namespace) -> None:
    from automation.stack import valid_stack_name

    if not valid_stack_name(args.stack):
        raise BadInput(f"--stack ({args.stack!r}) is not a stack name (name or org/project/name)")
    mv = getattr(args, "model_version", None)
    if mv is not None and not _MODEL_VERSION_RE.fullmatch(mv):
        raise BadInput(f"--model-version ({mv!r}) must be lower-case letters, digits, '.' and '-'")
    uri = getattr(args, "model_uri", None)
    if uri is not None:
        from automation.bake.recipe import BakeInputError, split_s3_uri

        try:
            split_s3_uri(uri)
        except BakeInputError as e:
            raise BadInput(str(e)) from None
    ami = getattr(args, "ami", None)
    if ami is not None and not _is_node_ami(ami):
        raise BadInput(f"--ami ({ami!r}) must be an AMI id such as ami-0123456789abcdef0, or a JSON map of "
                       "family to AMI id as kiln:nodeAmi holds it")
    if args.deadline <= 0:
        raise BadInput("--deadline must be positive")
    if args.git_push is not None and not _GIT_PUSH_RE.fullmatch(args.git_push):
        raise BadInput(f"--git-push ({args.git_push!r}) must be REMOTE/BRANCH, e.g. origin/main")
    from automation.rollout.strategies import get_strategy

    try:
        get_strategy(args.strategy)  # before anything changes, not after the stack update
    except (KeyError, ValueError) as e:
        raise BadInput(str(e)) from None


def _is_node_ami(text: str) -> bool:
    """An AMI id, or kiln:nodeAmi's family map (what `rollback` records as the previous AMI)."""
    from infra.config import AMI_FAMILIES, _AMI_RE

    if text.strip().startswith("{"):
        try:
            amis = json.loads(text)
        except json.JSONDecodeError:
            return False
        return isinstance(amis, dict) and "standard" in amis and set(amis) <= set(AMI_FAMILIES) and all(
            isinstance(v, str) and _AMI_RE.fullmatch(v) for v in amis.values())
    return bool(_AMI_RE.fullmatch(text))


def rollout_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RolloutOptions fields rotate/rollback set from their flags."""
    from automation.rollout.cli import job_kinds_from_flags

    return {"strategy": args.strategy, "deadline_seconds": args.deadline,
            "ready_timeout_seconds": args.ready_timeout, "boot_timeout_seconds": args.boot_timeout,
            "launch_failure_timeout_seconds": args.launch_failure_timeout,
            "job_owner_kinds": job_kinds_from_flags(getattr(args, "job_kinds", None),
                                                    getattr(args, "also_job_kinds", None))}


def say(line: str = "") -> None:
    """Plain lines on stderr: no markup interpretation (``[...]`` stays), no wrapping at 80 columns."""
    for part in str(line).splitlines() or [""]:
        print(part, file=sys.stderr, flush=True)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def print_report(report: RotationReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return
    say(f"{report.kind} {report.outcome}: {report.message}")
    if report.rollout:
        r = report.rollout
        say(f"  nodes: {r.get('old_nodes_at_start', 0)} old -> {r.get('old_nodes_remaining', 0)} remaining, "
            f"{r.get('nodes_terminated', 0)} terminated, {r.get('pods_evicted', 0)} pods evicted, "
            f"{r.get('jobs_force_evicted', 0)} Jobs force-evicted after the deadline, "
            f"makespan {r.get('makespan_seconds', 0):.0f}s")
    if report.prediction:
        from .predict import describe

        say(f"  predicted replacement (simulated): {describe(report.prediction)}")
        say(f"    {json.dumps(report.prediction, default=str)}")
    if report.restore:
        say(f"  restore: config {report.restore.get('config')}, stack {report.restore.get('applied')}")
    if report.persisted:
        say(f"  git: {report.persisted}")


def plain_log(console: Any = None) -> Any:
    """Log lines verbatim: engine output and diffs contain brackets ("[diff: ~imageId]") that rich would
    read as markup, dropping them or raising MarkupError inside the engine's output callback."""
    if console is None:
        return say
    return lambda message: console.log(message, markup=False, highlight=False)


def run(args: argparse.Namespace, action: str) -> int:
    from automation.rollout.progress import LiveProgress, json_lines
    from automation.signals import Interrupted, sigterm_raises
    from automation.stack import ConfigReadError

    from .state import StateStoreError
    from .wiring import needs_terminal, real_world

    try:
        validate(args)
        needs_terminal(args.yes, args.dry_run)
    except BadInput as e:
        say(f"bad input: {one_line(e)}")
        return EXIT_BAD_INPUT
    try:
        with sigterm_raises():
            from rich.console import Console

            err = Console(stderr=True, log_path=False, soft_wrap=True)
            # stdout carries only the final report with --json; progress and notices go to stderr.
            live = json_lines(sys.stderr) if args.json else LiveProgress(err, label="replacing nodes")
            real = real_world(args.stack, yes=args.yes, log=say, rollout_event=live,
                              rollout_options=rollout_options(args),
                              state_dir=Path(args.state_dir) if args.state_dir else None,
                              git_commit=args.git_commit, git_push=args.git_push,
                              update_plans=not args.no_update_plan)
            rotation = Rotation(real.world, real.store)
            if action == "rotate":
                report = rotation.rotate(args.stack, args.model_version, args.model_uri, dry_run=args.dry_run)
            else:
                report = rotation.rollback(args.stack, ami=args.ami, model_version=args.model_version,
                                           dry_run=args.dry_run)
    except BadInput as e:
        say(f"bad input: {one_line(e)}")
        return EXIT_BAD_INPUT
    except (Interrupted, KeyboardInterrupt) as e:
        say(f"{action} interrupted ({one_line(e) or 'Ctrl-C'}): nothing was undone and the intent is kept; "
            "rerun the same command to continue")
        return EXIT_FAILED
    except (ConfigReadError, StateStoreError) as e:
        say(f"{action} stopped: {one_line(e)}")
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - report, never a traceback; the intent allows a rerun
        say(f"{action} failed: {type(e).__name__}: {one_line(e)[:1000]}; the intent is kept: rerun the same "
            "command to continue")
        return EXIT_FAILED
    print_report(report, args.json)
    return report.exit_code


def main(args: argparse.Namespace) -> int:
    return run(args, "rotate")
