"""``python -m automation simulate``: the real rollout engine against a simulated fleet.

Exit 0 when the outcome is ``completed`` (or the ``--no-rollout`` baseline ran),
1 for rolled_back, blocked or failed, 2 on a bad scenario or flag (the error
names the key). With ``--json``, events are JSON lines and the last line of
stdout is the report as one JSON object. Nothing ends in a traceback: an
error is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from automation.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cli import parse_duration
    parser.description = (
        "Run the rollout engine and runner, unchanged, against a simulated fleet on a virtual clock: "
        "ASGs, nodes, Jobs (retried when evicted), services under PodDisruptionBudgets, cluster-autoscaler "
        "and faults (crash, bad_ami, throttle, node_loss, launch_failure, publish, asg_terminate, spot_interruption, "
        "handler_restart); with the termination handler on (scenario key termination.handler, on by default with "
        "the last three) its decide() runs in the cluster every 5 s and every ASG termination waits on kiln's "
        "lifecycle hook. Outcomes: completed (exit 0), rolled_back, blocked or failed (exit 1); a bad scenario "
        "exits 2 naming the key.")
    parser.add_argument("--scenario", required=True, metavar="FILE",
                        help="scenario YAML: node_groups, jobs, services, faults (see scenarios/*.yaml)")
    parser.add_argument("--strategy", default="default", choices=("default", "double-and-drain"),
                        help="default: prove a canary per group, then replace on demand; double-and-drain: the "
                             "copied script, as a baseline (default: %(default)s)")
    parser.add_argument("--no-rollout", action="store_true",
                        help="run the same world with no rollout (launch template unchanged), for --horizon: the "
                             "reference for pending times, or the faults and the termination handler alone; "
                             "same report fields, outcome no_rollout")
    parser.add_argument("--horizon", type=parse_duration, default=None, metavar="DURATION",
                        help="with --no-rollout: how long to run (default: the scenario's lower bound, "
                             "max(longest running Job, boot + warm), and at least until the last fault; the "
                             "termination handler's holds then run to their end)")
    parser.add_argument("--json", action="store_true",
                        help="print events as JSON lines; the last line of stdout is the report")
    parser.add_argument("--timeline", metavar="FILE", help="also write the timeline samples as JSON to FILE")


def main(args: argparse.Namespace) -> int:
    from . import ScenarioError, SimulationStuck, load_scenario, simulate
    from ..progress import LiveProgress, json_lines
    from ..runner import StopRequested, one_line

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"python -m automation simulate: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.horizon is not None and not args.no_rollout:
        print("python -m automation simulate: error: --horizon: only with --no-rollout", file=sys.stderr)
        return EXIT_BAD_INPUT
    from .scenario import MAX_SECONDS
    if args.horizon is not None and args.horizon > MAX_SECONDS:
        # A virtual clock still runs every event: ten thousand simulated years would never end.
        print(f"python -m automation simulate: error: --horizon: at most {MAX_SECONDS / 86400:.0f} days, "
              f"got {args.horizon / 86400:,.0f} days", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.timeline:
        import os
        folder = os.path.dirname(os.path.abspath(args.timeline))
        if not os.path.isdir(folder) or os.path.isdir(args.timeline) or not os.access(folder, os.W_OK):
            # Said before a long simulation, not after it.
            print(f"python -m automation simulate: error: --timeline: cannot write {args.timeline}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        if args.json:
            result = simulate(scenario, args.strategy, on_event=_quiet(json_lines(sys.stdout)),
                              no_rollout=args.no_rollout, horizon_seconds=args.horizon)
            print(json.dumps(result.report, sort_keys=True))
        else:
            console = Console(stderr=True)
            label = f"simulate {scenario.name or 'scenario'} ({'no rollout' if args.no_rollout else args.strategy})"
            with LiveProgress(console, label=label) as live:
                result = simulate(scenario, args.strategy, on_event=live, no_rollout=args.no_rollout,
                                  horizon_seconds=args.horizon)
            Console().print(report_table(result.report))
        if args.timeline:
            with open(args.timeline, "w") as fh:
                json.dump(result.timeline, fh)
    except (KeyboardInterrupt, StopRequested):
        if args.json:
            print(json.dumps({"outcome": "failed", "reason": "interrupted"}))
        print("python -m automation simulate: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except (SimulationStuck, OSError, RuntimeError, ValueError) as exc:
        print(f"python -m automation simulate: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if result.report["outcome"] in ("completed", "no_rollout") else EXIT_FAILED


def _quiet(emit):
    """Every event but the per-cycle ones, which would flood a terminal."""
    def on_event(event: dict) -> None:
        if event.get("event") != "cycle":
            emit(event)
    return on_event


def report_table(report: dict) -> Table:
    table = Table(title=f"simulated rollout: {report.get('scenario') or 'scenario'} ({report['strategy']})")
    table.add_column("field")
    table.add_column("value", justify="right")
    for key, value in report.items():
        table.add_row(key, str(value))
    return table
