"""``make bench``: the rollout's targets, measured on the simulator.

Runs the reference scenario (200 nodes in 4 groups) with both strategies, the
same fleet under each fault, the reference shape at about 50 and 1000 nodes,
and prints one row per target with the measured value, the limit, their
ratio and PASS/FAIL. Exit 1 when a target fails.

    python -m automation.bench [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from rich.console import Console
from rich.table import Table

from automation.rollout.sim import FaultSpec, load_scenario, simulate

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
FAULTS = (
    FaultSpec("crash", after_actions=25),
    FaultSpec("crash", after_actions=400),
    FaultSpec("bad_ami"),
    FaultSpec("throttle", rate=0.2),
    FaultSpec("node_loss", at_seconds=900),
)


def measure(console: Console) -> dict:
    runs: dict[str, dict] = {}

    def run(label: str, scenario, strategy: str = "default") -> dict:
        started = time.perf_counter()
        report = simulate(scenario, strategy).report
        report["wall_seconds"] = round(time.perf_counter() - started, 3)
        runs[label] = report
        console.log(f"{label}: {report['outcome']}, makespan {report['makespan_seconds']:.0f}s, "
                    f"interrupted {report['jobs_interrupted']}, wall {report['wall_seconds']:.1f}s")
        return report

    reference = load_scenario(SCENARIOS / "reference-200.yaml")
    run("reference/default", reference)
    run("reference/double-and-drain", reference, "double-and-drain")
    for fault in FAULTS:
        tag = f"{fault.kind}" + (f"@{fault.after_actions}" if fault.after_actions else "")
        run(f"reference+{tag}/default", replace(reference, faults=(fault,)))
    run("fleet-50/default", load_scenario(SCENARIOS / "fleet-50.yaml"))
    fleet = load_scenario(SCENARIOS / "fleet-1000.yaml")
    run("fleet-1000/default", fleet)
    run("fleet-1000/double-and-drain", fleet, "double-and-drain")
    return runs


def targets(runs: dict) -> list[dict]:
    boot = load_scenario(SCENARIOS / "reference-200.yaml").boot_seconds
    rows = []

    def row(name: str, measured: float, limit: float, ok: bool, note: str = "") -> None:
        ratio = (measured / limit) if limit else (0.0 if measured == 0 else float("inf"))
        rows.append({"target": name, "measured": measured, "limit": limit, "ratio": round(ratio, 3),
                     "result": "PASS" if ok else "FAIL", "note": note})

    interrupted = sum(r["jobs_interrupted"] for r in runs.values())
    runs_of_default = [r for label, r in runs.items() if label.endswith("/default")]
    row("Jobs interrupted before the deadline (all runs, all faults)", interrupted, 0, interrupted == 0,
        f"{len(runs)} runs")
    for label in ("reference/default", "fleet-1000/default"):
        r = runs[label]
        row(f"makespan <= 1.05 x lower bound ({label.split('/')[0]})", r["makespan_seconds"],
            1.05 * r["lower_bound_seconds"], r["makespan_seconds"] <= 1.05 * r["lower_bound_seconds"],
            f"lower bound {r['lower_bound_seconds']:.0f}s")
    for fleet in ("reference", "fleet-1000"):
        ours, dd = runs[f"{fleet}/default"], runs[f"{fleet}/double-and-drain"]
        row(f"surge node-seconds <= 50% of double-and-drain ({fleet})", ours["surge_node_seconds"],
            0.5 * dd["surge_node_seconds"], ours["surge_node_seconds"] <= 0.5 * dd["surge_node_seconds"],
            f"double-and-drain {dd['surge_node_seconds']:.0f}")
        limit = dd["pending_p95_seconds"] + boot
        row(f"p95 pending of new Jobs <= double-and-drain p95 + one boot ({fleet})", ours["pending_p95_seconds"],
            limit, ours["pending_p95_seconds"] <= limit, f"double-and-drain p95 {dd['pending_p95_seconds']:.0f}s")
    per_cycle = {label.split("/")[0]: runs[label]["max_reads_per_cycle"]
                 for label in ("fleet-50/default", "reference/default", "fleet-1000/default")}
    reads = max(per_cycle.values())
    row("reads per reconcile independent of node count (max at ~50/200/1000 nodes)", reads,
        min(per_cycle.values()), len(set(per_cycle.values())) == 1,
        ", ".join(f"{runs[k + '/default']['nodes']} nodes: {v}" for k, v in per_cycle.items()))
    wall = runs["fleet-1000/default"]["wall_seconds"]
    row("1000-node rollout simulated end to end, wall seconds", wall, 60.0, wall < 60.0)
    bad = [r for r in runs.values() if r["pdb_violations"] or not r["autoscaler_restored"]
           or not r["max_size_restored"] or r["outcome"] not in ("completed", "rolled_back")]
    row("every run completed or rolled back; no PDB violated; autoscaler and max sizes restored",
        len(bad), 0, not bad, f"{len(runs_of_default)} default runs, {len(runs) - len(runs_of_default)} baseline")
    return rows


def print_tables(runs: dict, rows: list[dict], console: Console) -> None:
    detail = Table(title="runs")
    for col in ("run", "outcome", "nodes", "makespan s", "lower bound s", "interrupted", "force-evicted",
                "surge node-s", "p95 pending s", "reads/cycle", "reads", "writes", "restarts", "wall s"):
        detail.add_column(col, justify="right" if col != "run" else "left")
    for label, r in runs.items():
        detail.add_row(label, r["outcome"], str(r["nodes"]), f"{r['makespan_seconds']:.0f}",
                       f"{r['lower_bound_seconds']:.0f}", str(r["jobs_interrupted"]), str(r["jobs_force_evicted"]),
                       f"{r['surge_node_seconds']:.0f}", f"{r['pending_p95_seconds']:.0f}",
                       str(r["max_reads_per_cycle"]), str(r["api_reads"]), str(r["api_writes"]), str(r["restarts"]),
                       f"{r['wall_seconds']:.1f}")
    console.print(detail)
    table = Table(title="targets")
    for col in ("target", "measured", "limit", "ratio", "result", "note"):
        table.add_column(col, justify="left" if col in ("target", "note") else "right")
    for r in rows:
        style = "green" if r["result"] == "PASS" else "bold red"
        table.add_row(r["target"], _num(r["measured"]), _num(r["limit"]), f"{r['ratio']:.3f}",
                      f"[{style}]{r['result']}[/{style}]", r["note"])
    console.print(table)


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m automation.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="also write every run's report and the targets as JSON")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 200))
    runs = measure(console)
    rows = targets(runs)
    print_tables(runs, rows, console)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "targets": rows}, indent=2))
    return 0 if all(r["result"] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
