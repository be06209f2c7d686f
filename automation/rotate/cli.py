"""``python -m automation rotate``: a new model version onto the nodes, safely and resumably."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from .pipeline import EXIT_BAD_INPUT, EXIT_FAILED, BadInput, IntentStore, Rotation, RotationReport

DEFAULT_STATE_DIR = ".kiln/rotations"
_MODEL_VERSION_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,40}[a-z0-9])?$")
_STACK_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")

EPILOG = """steps: bake (or reuse) -> set kiln:nodeAmi/kiln:modelVersion -> preview behind the change gate -> up
-> drain-aware node replacement -> converge (up, then a preview that must show no changes) -> report.
Interrupted at any step, rerun with the same arguments to continue.
exit codes: 0 done (or dry run), 1 failed, blocked or rolled back (config restored to the previous AMI; not when
the stack did not converge or a step raised: rerun to continue), 2 bad input (nothing left changed)."""


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, help="Pulumi stack to rotate (this project directory)")
    parser.add_argument("--yes", action="store_true", help="apply without asking after the gate passes")
    parser.add_argument("--dry-run", action="store_true",
                        help="stop after the gated preview, print the predicted replacement; config is restored")
    parser.add_argument("--json", action="store_true", help="print the final report as JSON")
    parser.add_argument("--strategy", default="default", help="rollout strategy: default or double-and-drain")
    from automation.rollout.cli import parse_duration

    parser.add_argument("--deadline", type=parse_duration, default=7200.0, metavar="DURATION",
                        help="how long a running Job may keep its old node before it is evicted: "
                             "7200, 90m, 2h or 1h30m (default 2h)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help=f"where the rotation's intent is kept between runs (default {DEFAULT_STATE_DIR})")
    from automation.rollout.cli import add_job_kind_flags

    add_job_kind_flags(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add_common(parser)
    parser.add_argument("--model-version", required=True, help="model version to roll out, e.g. v6")
    parser.add_argument("--model-uri", help="s3://bucket/prefix/ of the model; without it an AMI baked for "
                                            "--model-version must already exist")


def validate(args: argparse.Namespace) -> None:
    if not _STACK_RE.fullmatch(args.stack):
        raise BadInput(f"--stack ({args.stack!r}) is not a stack name")
    mv = getattr(args, "model_version", None)
    if mv is not None and not _MODEL_VERSION_RE.fullmatch(mv):
        raise BadInput(f"--model-version ({mv!r}) must be lower-case letters, digits, '.' and '-'")
    uri = getattr(args, "model_uri", None)
    if uri is not None and not uri.startswith("s3://"):
        raise BadInput(f"--model-uri ({uri!r}) must look like s3://bucket/prefix/")
    ami = getattr(args, "ami", None)
    if ami is not None and not _is_node_ami(ami):
        raise BadInput(f"--ami ({ami!r}) must be an AMI id such as ami-0123456789abcdef0, or a JSON map of "
                       "family to AMI id as kiln:nodeAmi holds it")
    if args.deadline <= 0:
        raise BadInput("--deadline must be positive")
    from automation.rollout.strategies import get_strategy

    try:
        get_strategy(args.strategy)  # before anything changes, not after the stack update
    except (KeyError, ValueError) as e:
        raise BadInput(str(e)) from None


def _is_node_ami(text: str) -> bool:
    """An AMI id, or kiln:nodeAmi's family map (what `rollback` records as the previous AMI)."""
    from infra.config import _AMI_RE

    if text.strip().startswith("{"):
        try:
            amis = json.loads(text)
        except json.JSONDecodeError:
            return False
        return isinstance(amis, dict) and "standard" in amis and all(
            isinstance(v, str) and _AMI_RE.fullmatch(v) for v in amis.values())
    return bool(_AMI_RE.fullmatch(text))


def rollout_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RolloutOptions fields rotate/rollback set from their flags."""
    from automation.rollout.cli import job_kinds_from_flags

    return {"strategy": args.strategy, "deadline_seconds": args.deadline,
            "job_owner_kinds": job_kinds_from_flags(getattr(args, "job_kinds", None),
                                                    getattr(args, "also_job_kinds", None))}


def print_report(report: RotationReport, as_json: bool, console: Any) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return
    style = "green" if report.exit_code == 0 else "red"
    console.print(f"[bold {style}]{report.kind} {report.outcome}[/]: {report.message}")
    if report.rollout:
        r = report.rollout
        console.print(f"  nodes: {r.get('old_nodes_at_start', 0)} old -> {r.get('old_nodes_remaining', 0)} remaining, "
                      f"{r.get('nodes_terminated', 0)} terminated, {r.get('pods_evicted', 0)} pods evicted, "
                      f"{r.get('jobs_force_evicted', 0)} Jobs force-evicted after the deadline, "
                      f"makespan {r.get('makespan_seconds', 0):.0f}s")
    if report.prediction:
        from .predict import describe

        console.print(f"  predicted replacement (simulated): {describe(report.prediction)}", markup=False)
        console.print(f"    {json.dumps(report.prediction, default=str)}", markup=False)
    if report.config_restored:
        console.print(f"  config restored to the previous AMI {report.previous_ami}")


def plain_log(console: Any) -> Any:
    """Log lines verbatim: engine output and diffs contain brackets ("[diff: ~imageId]") that rich would
    read as markup, dropping them or raising MarkupError inside the engine's output callback."""
    return lambda message: console.log(message, markup=False, highlight=False)


def run(args: argparse.Namespace, action: str) -> int:
    from rich.console import Console

    from automation.rollout.progress import LiveProgress, json_lines

    from .wiring import real_world

    err = Console(stderr=True, log_path=False)
    try:
        validate(args)
        # stdout carries only the final report with --json; progress and notices go to stderr.
        live = json_lines(sys.stderr) if args.json else LiveProgress(err, label="replacing nodes")
        world = real_world(args.stack, yes=args.yes, log=plain_log(err),
                           rollout_event=live, rollout_options=rollout_options(args))
        rotation = Rotation(world, IntentStore(Path(args.state_dir)))
        if action == "rotate":
            report = rotation.rotate(args.stack, args.model_version, args.model_uri, dry_run=args.dry_run)
        else:
            report = rotation.rollback(args.stack, ami=args.ami, model_version=args.model_version, dry_run=args.dry_run)
    except BadInput as e:
        err.print(f"[red]bad input:[/red] {e}")
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 - report, never a traceback; the intent file allows a rerun
        err.print(f"[red]{action} failed:[/red] {type(e).__name__}: {e}\nrerun the same command to continue")
        return EXIT_FAILED
    print_report(report, args.json, err)
    return report.exit_code


def main(args: argparse.Namespace) -> int:
    return run(args, "rotate")
