"""``make bench``: the rollout's targets, measured on the simulator.

Every scenario runs with the default strategy, beside the same world with no
rollout at all (``--no-rollout``, over the same span: the reference for
pending times) and, where the issue compares, beside double-and-drain:

* the reference fleet (200 nodes in 4 groups) healthy and under each fault;
* a bad AMI on a mostly idle 20-node group with Jobs arriving, in each of its
  three modes (never joins, never Ready, warm-up fails);
* launch failures: no capacity for good, an invalid AMI, no capacity for 12
  minutes then recovery;
* an arrival storm without cluster-autoscaler;
* a PodDisruptionBudget that never yields;
* the canary lost right after its proof, then no capacity (the proof lost mid-drain);
* a bad AMI whose fix is published mid-rollout (a ``pulumi up`` while the group is pinned);
* the reference shape at about 50 and 1000 nodes.

It prints one row per target with the measured value, the limit, their ratio
and PASS/FAIL, and exits 1 when a target fails.

    python -m automation.bench [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

from rich.console import Console
from rich.table import Table

from automation.rollout.sim import FaultSpec, Scenario, load_scenario, simulate

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
FAULTS = (
    FaultSpec("crash", after_actions=25),
    FaultSpec("crash", after_actions=400),
    FaultSpec("bad_ami"),
    FaultSpec("throttle", rate=0.2),
    FaultSpec("throttle", rate=0.9),
    FaultSpec("node_loss", at_seconds=900),
)
ICE = ("InsufficientInstanceCapacity: We currently do not have sufficient g5.2xlarge capacity in the "
       "Availability Zone you requested (us-east-2a). Launching EC2 instance failed.")
INVALID_AMI = "InvalidAMIID.NotFound: The image id '[ami-0bad0bad0bad0bad0]' does not exist. Launching EC2 instance failed."


@dataclass(frozen=True)
class Run:
    label: str
    scenario: Scenario
    expect: str                           # the outcome this run must end with
    strategy: str = "default"
    baseline_of: Optional[str] = None     # a no-rollout run over the span of this run


def fault_tag(fault: FaultSpec) -> str:
    return fault.kind + (f"@{fault.after_actions}" if fault.after_actions else "") + (
        f"@{fault.rate:g}" if fault.rate else "")


def plan() -> list[Run]:
    reference = load_scenario(SCENARIOS / "reference-200.yaml")
    bad = load_scenario(SCENARIOS / "bad-ami-idle.yaml")
    launch = load_scenario(SCENARIOS / "launch-failure.yaml")
    storm = load_scenario(SCENARIOS / "storm-no-autoscaler.yaml")
    pdb = load_scenario(SCENARIOS / "pdb-blocked.yaml")
    fleet = load_scenario(SCENARIOS / "fleet-1000.yaml")
    lost = load_scenario(SCENARIOS / "canary-lost-then-no-capacity.yaml")
    publish = load_scenario(SCENARIOS / "publish-fix-mid-rollout.yaml")
    runs = [Run("reference/default", reference, "completed"),
            Run("reference/double-and-drain", reference, "completed", "double-and-drain"),
            Run("reference/no-rollout", reference, "no_rollout", baseline_of="reference/default")]
    for fault in FAULTS:
        runs.append(Run(f"reference+{fault_tag(fault)}/default", replace(reference, faults=(fault,)),
                        "rolled_back" if fault.kind == "bad_ami" else "completed"))
    for mode in ("no_join", "not_ready", "warmup_fails"):
        s = replace(bad, faults=(FaultSpec("bad_ami", mode=mode),), name=f"bad-ami-{mode}")
        runs += [Run(f"bad-ami-{mode}/default", s, "rolled_back"),
                 Run(f"bad-ami-{mode}/no-rollout", s, "no_rollout", baseline_of=f"bad-ami-{mode}/default")]
    runs.append(Run("bad-ami-no_join/double-and-drain", replace(bad, faults=(FaultSpec("bad_ami", mode="no_join"),)),
                    "completed", "double-and-drain"))
    forever = replace(launch, faults=(FaultSpec("launch_failure", group="gpu-a", reason=ICE),))
    invalid = replace(launch, faults=(FaultSpec("launch_failure", group="gpu-a", reason=INVALID_AMI, version="new"),))
    runs += [Run("launch-failure-forever/default", forever, "failed"),
             Run("launch-failure-forever/no-rollout", forever, "no_rollout",
                 baseline_of="launch-failure-forever/default"),
             Run("launch-failure-invalid-ami/default", invalid, "rolled_back"),
             Run("launch-failure-invalid-ami/no-rollout", invalid, "no_rollout",
                 baseline_of="launch-failure-invalid-ami/default"),
             Run("launch-failure-12m/default", launch, "completed"),
             Run("launch-failure-12m/no-rollout", launch, "no_rollout", baseline_of="launch-failure-12m/default"),
             Run("storm-no-autoscaler/default", storm, "completed"),
             Run("storm-no-autoscaler/double-and-drain", storm, "completed", "double-and-drain"),
             Run("storm-no-autoscaler/no-rollout", storm, "no_rollout", baseline_of="storm-no-autoscaler/default"),
             Run("pdb-blocked/default", pdb, "blocked"),
             Run("pdb-blocked/double-and-drain", pdb, "blocked", "double-and-drain"),
             Run("pdb-blocked/no-rollout", pdb, "no_rollout", baseline_of="pdb-blocked/default"),
             Run("canary-lost-then-ice/default", lost, "failed"),
             Run("canary-lost-then-ice/no-rollout", lost, "no_rollout", baseline_of="canary-lost-then-ice/default"),
             Run("publish-fix/default", publish, "completed"),
             Run("publish-fix/no-rollout", publish, "no_rollout", baseline_of="publish-fix/default"),
             Run("fleet-50/default", load_scenario(SCENARIOS / "fleet-50.yaml"), "completed"),
             Run("fleet-1000/default", fleet, "completed"),
             Run("fleet-1000/double-and-drain", fleet, "completed", "double-and-drain"),
             Run("fleet-1000/no-rollout", fleet, "no_rollout", baseline_of="fleet-1000/default")]
    return runs


def measure(console: Console, runs: Optional[list[Run]] = None) -> dict:
    out: dict[str, dict] = {}
    for run in runs or plan():
        started = time.perf_counter()
        if run.baseline_of:
            report = simulate(run.scenario, no_rollout=True,
                              horizon_seconds=out[run.baseline_of]["makespan_seconds"]).report
        else:
            report = simulate(run.scenario, run.strategy).report
        report["wall_seconds"] = round(time.perf_counter() - started, 3)
        report["expected_outcome"] = run.expect
        out[run.label] = report
        console.log(f"{run.label}: {report['outcome']}, makespan {report['makespan_seconds']:.0f}s, "
                    f"p95 pending {report['pending_p95_seconds']:.0f}s, interrupted {report['jobs_interrupted']}, "
                    f"wall {report['wall_seconds']:.1f}s")
    return out


def targets(runs: dict) -> list[dict]:
    reference = load_scenario(SCENARIOS / "reference-200.yaml")
    boot_warm = reference.boot_seconds + reference.warm_seconds
    rows = []

    def row(name: str, measured: float, limit: float, ok: bool, note: str = "") -> None:
        ratio = (measured / limit) if limit else (0.0 if measured == 0 else float("inf"))
        rows.append({"target": name, "measured": measured, "limit": limit, "ratio": round(ratio, 3),
                     "result": "PASS" if ok else "FAIL", "note": note})

    def pending_row(label: str) -> None:
        ours, base = runs[f"{label}/default"], runs[f"{label}/no-rollout"]
        limit = base["pending_p95_seconds"] + boot_warm
        row(f"p95 pending <= no-rollout p95 + boot + warm ({label})", ours["pending_p95_seconds"], limit,
            ours["pending_p95_seconds"] <= limit, f"no-rollout p95 {base['pending_p95_seconds']:.0f}s")

    rollouts = {k: r for k, r in runs.items() if not k.endswith("/no-rollout")}
    interrupted = sum(r["jobs_interrupted"] for r in rollouts.values())
    row("Jobs interrupted before their deadline (every run, every fault)", interrupted, 0, interrupted == 0,
        f"{len(rollouts)} runs")
    violations = sum(r["proof_violations"] for k, r in rollouts.items() if k.endswith("/default"))
    row("old nodes removed before a replacement in their group was proven (default runs)", violations, 0,
        violations == 0)

    # Healthy reference runs.
    for label in ("reference", "fleet-1000"):
        r = runs[f"{label}/default"]
        row(f"makespan <= 1.05 x lower bound ({label})", r["makespan_seconds"], 1.05 * r["lower_bound_seconds"],
            r["makespan_seconds"] <= 1.05 * r["lower_bound_seconds"], f"lower bound {r['lower_bound_seconds']:.0f}s")
        pending_row(label)
        ours, dd = r, runs[f"{label}/double-and-drain"]
        row(f"surge node-seconds <= 50% of double-and-drain ({label})", ours["surge_node_seconds"],
            0.5 * dd["surge_node_seconds"], ours["surge_node_seconds"] <= 0.5 * dd["surge_node_seconds"],
            f"double-and-drain {dd['surge_node_seconds']:.0f}")

    # A bad AMI and launch failures cost nothing.
    limits = {"no_join": ("boot timeout", 600.0), "not_ready": ("ready timeout", 1800.0),
              "warmup_fails": ("boot + warm", boot_warm)}
    for mode, (what, timeout) in limits.items():
        label = f"bad-ami-{mode}"
        r = runs[f"{label}/default"]
        row(f"original nodes removed ({label})", r["original_nodes_removed"], 0, r["original_nodes_removed"] == 0)
        row(f"final fleet = original ({label})", r["final_nodes"], r["original_nodes"],
            r["final_nodes"] == r["final_desired"] == r["original_nodes"])
        pending_row(label)
        poll = load_scenario(SCENARIOS / "bad-ami-idle.yaml").poll_seconds
        decided = r["rollback_at_seconds"] if r["rollback_at_seconds"] is not None else float("inf")
        row(f"rollback decided within {what} + one poll ({label})", decided, timeout + poll, decided <= timeout + poll)
    for label, decided_key, limit, what in (
            ("launch-failure-forever", "makespan_seconds", 900.0 + 30, "launch-failure timeout + one poll"),
            ("launch-failure-invalid-ami", "rollback_at_seconds", 600.0 + 30, "boot timeout + one poll")):
        r = runs[f"{label}/default"]
        row(f"original nodes removed ({label})", r["original_nodes_removed"], 0, r["original_nodes_removed"] == 0)
        row(f"final fleet = original ({label})", r["final_nodes"], r["original_nodes"],
            r["final_nodes"] == r["final_desired"] == r["original_nodes"])
        pending_row(label)
        decided = r[decided_key] if r[decided_key] is not None else float("inf")
        row(f"stopped/rolled back within {what} ({label})", decided, limit, decided <= limit, r["reason"][:60])
    pending_row("launch-failure-12m")

    # Without cluster-autoscaler: sizes given back, surge below double-and-drain.
    ours, dd = runs["storm-no-autoscaler/default"], runs["storm-no-autoscaler/double-and-drain"]
    row("final fleet = original (storm, no autoscaler)", ours["final_nodes"], ours["original_nodes"],
        ours["final_nodes"] == ours["final_desired"] == ours["original_nodes"])
    row("surge node-seconds <= double-and-drain (storm, no autoscaler)", ours["surge_node_seconds"],
        dd["surge_node_seconds"], ours["surge_node_seconds"] <= dd["surge_node_seconds"],
        f"double-and-drain {dd['surge_node_seconds']:.0f}")

    # A PodDisruptionBudget that never yields: blocked, named, no Job forced off the nodes it holds.
    # The proof lost mid-drain, and no capacity: old capacity goes back to Jobs, the size is never given up.
    r = runs["canary-lost-then-ice/default"]
    row("final desired >= original (canary lost, then no capacity)", r["final_desired"], r["original_nodes"],
        r["final_desired"] >= r["original_nodes"], r["reason"][:60])
    pending_row("canary-lost-then-ice")
    # A fix published mid-rollout: followed, never undone.
    r = runs["publish-fix/default"]
    latest = sorted(set(r["final_versions"].values()))
    row("every group ends on the version published mid-rollout (publish-fix)", int(latest == ["3"]), 1,
        latest == ["3"], f"final versions {r['final_versions']}")
    pending_row("publish-fix")

    r = runs["pdb-blocked/default"]
    named = "PodDisruptionBudget default/api-pdb" in r["reason"] and " holds ip-" in r["reason"]
    row("pdb-blocked ends blocked, naming the budget and its nodes", int(r["outcome"] == "blocked" and named), 1,
        r["outcome"] == "blocked" and named, r["reason"][:60])
    row("Jobs force-evicted from nodes a PDB holds (pdb-blocked)", r["jobs_forced_off_pdb_held_nodes"], 0,
        r["jobs_forced_off_pdb_held_nodes"] == 0, f"{r['jobs_force_evicted']} forced from nodes that could drain")

    # Scale.
    per_cycle = {label: runs[f"{label}/default"]["max_reads_per_cycle"]
                 for label in ("fleet-50", "reference", "fleet-1000")}
    row("reads per reconcile independent of node count (max at ~50/200/1000 nodes)", max(per_cycle.values()),
        min(per_cycle.values()), len(set(per_cycle.values())) == 1,
        ", ".join(f"{runs[k + '/default']['nodes']} nodes: {v}" for k, v in per_cycle.items()))
    big = runs["fleet-1000/default"]
    row("1000-node rollout simulated end to end, wall seconds", big["wall_seconds"], 60.0, big["wall_seconds"] < 60.0)
    writes = big["events_created"] + big["events_updated"]
    bound = 2 * big["nodes"] + big["jobs_completed"]
    row("Kubernetes Events at 1000 nodes <= 2 per node + 1 per Job (no flood)", writes, bound, writes <= bound,
        f"{big['events_created']} created, {big['events_updated']} series updates, {big['cycles']} cycles")
    bad = [k for k, r in runs.items() if r["outcome"] != r["expected_outcome"] or r["pdb_violations"]
           or not r["autoscaler_restored"] or (r["outcome"] != "blocked" and not r["max_size_restored"])]
    row("every run ends as expected; no PDB violated; autoscaler and max sizes restored", len(bad), 0, not bad,
        ", ".join(bad)[:60] or f"{len(runs)} runs")
    return rows


def print_tables(runs: dict, rows: list[dict], console: Console) -> None:
    detail = Table(title="runs")
    for col in ("run", "outcome", "nodes", "makespan s", "lower bound s", "interrupted", "force-evicted",
                "orig removed", "final", "surge node-s", "p95 pending s", "reads/cycle", "events", "restarts", "wall s"):
        detail.add_column(col, justify="right" if col != "run" else "left")
    for label, r in runs.items():
        detail.add_row(label, r["outcome"], str(r["nodes"]), f"{r['makespan_seconds']:.0f}",
                       f"{r['lower_bound_seconds']:.0f}", str(r["jobs_interrupted"]), str(r["jobs_force_evicted"]),
                       str(r["original_nodes_removed"]), str(r["final_nodes"]), f"{r['surge_node_seconds']:.0f}",
                       f"{r['pending_p95_seconds']:.0f}", str(r["max_reads_per_cycle"]),
                       str(r["events_created"] + r["events_updated"]), str(r["restarts"]), f"{r['wall_seconds']:.1f}")
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
