"""``python -m automation simulate``: the real rollout engine against a simulated fleet.

Exit 0 when the outcome is ``completed``, 1 otherwise, 2 on a bad scenario
(the error names the key). With ``--json``, events are JSON lines and the last
line of stdout is the report as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", required=True, metavar="FILE",
                        help="scenario YAML: node_groups, jobs, services, faults (see scenarios/*.yaml)")
    parser.add_argument("--strategy", default="default", choices=("default", "double-and-drain"),
                        help="default: replacement capacity on demand; double-and-drain: the copied script, "
                             "as a baseline (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print events as JSON lines; the last line of stdout is the report")
    parser.add_argument("--timeline", metavar="FILE", help="also write the timeline samples as JSON to FILE")


def main(args: argparse.Namespace) -> int:
    from . import ScenarioError, load_scenario, simulate
    from ..progress import LiveProgress, json_lines

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        result = simulate(scenario, args.strategy, on_event=_quiet(json_lines(sys.stdout)))
        print(json.dumps(result.report, sort_keys=True))
    else:
        console = Console(stderr=True)
        with LiveProgress(console, label=f"simulate {scenario.name or 'scenario'} ({args.strategy})") as live:
            result = simulate(scenario, args.strategy, on_event=live)
        Console().print(report_table(result.report))
    if args.timeline:
        with open(args.timeline, "w") as fh:
            json.dump(result.timeline, fh)
    return EXIT_OK if result.report["outcome"] == "completed" else EXIT_FAILED


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
