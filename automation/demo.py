"""``make demo``: the whole rotation on a local moto server, with the simulator as the cluster.

What is real here: kiln's bake (EC2, SSM Run Command, S3, AMI tags and waiters
over HTTP to a moto server), the preview gate, the rotation pipeline, the
stack change (through the boto3 stand-in when the pulumi CLI is missing) and
the rollout engine and runner. What is simulated: the Kubernetes cluster —
nodes booting and joining, Jobs running and finishing, drains — on a virtual
clock, seeded from the moto ASGs and their launch-template versions. moto runs
no commands, so the builder's SSM steps "succeed" without copying anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

CLUSTER = "kiln-demo"
STACK = "demo"
K8S = "1.33"
IMAGE = "123456789012.dkr.ecr.us-east-2.amazonaws.com/trainer:1.4"
GPU_GROUP, GPU_TYPE = "gpu", "g5.2xlarge"
SYSTEM_GROUP, SYSTEM_TYPE = "system", "m7i.large"
WHAT_IS_SIMULATED = (
    "AWS is a local moto server (EC2, SSM, S3, IAM, Auto Scaling over HTTP); moto runs no commands, so the "
    "builder's SSM steps succeed without copying a model. The Kubernetes cluster is SIMULATED (virtual clock): "
    "nodes, Jobs and drains come from the rollout simulator, seeded from the moto ASGs and launch-template versions."
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = ("The whole rotation of a small fleet from model v5 to v6: bake on a local moto server, "
                          "gated stack change, drain-aware replacement on a simulated cluster, convergence; "
                          "writes the report and a PNG timeline to --out. " + WHAT_IS_SIMULATED)
    parser.add_argument("--out", default="out", help="output directory (default out/)")
    parser.add_argument("--nodes-per-zone", type=int, default=3, help="GPU nodes per zone, two zones (default 3); the system group has one node per zone")
    parser.add_argument("--deadline", type=float, default=7200, metavar="SECONDS",
                        help="rollout deadline for running Jobs (default 7200)")
    parser.add_argument("--json", action="store_true", help="print the final report as JSON")


def write_stack_config(project: Path, fleet: Any, nodes_per_zone: int) -> Path:
    import yaml

    from infra.config import load_stack_file

    project.mkdir(parents=True, exist_ok=True)
    path = project / f"Pulumi.{STACK}.yaml"
    path.write_text(yaml.safe_dump({"config": {
        "aws:region": fleet.zones[0][:-1], "kiln:clusterName": CLUSTER, "kiln:kubernetesVersion": K8S,
        "kiln:availabilityZones": fleet.zones, "kiln:vpcId": fleet.vpc_id, "kiln:privateSubnetIds": fleet.subnet_ids,
        "kiln:nodeAmi": {"standard": fleet.base_ami, "nvidia": fleet.base_ami}, "kiln:modelVersion": "v5",
        "kiln:prefetchImages": [IMAGE],
        # A small untainted system group (CoreDNS and cluster-autoscaler tolerate no GPU taint) beside the GPU one;
        # both boot kiln AMIs with the model, of their own family, and both are rotated.
        "kiln:nodeGroups": [
            {"name": SYSTEM_GROUP, "instanceTypes": [SYSTEM_TYPE], "minSize": 1, "maxSize": 4, "desiredSize": 1},
            {"name": GPU_GROUP, "instanceTypes": [GPU_TYPE], "minSize": 0, "maxSize": nodes_per_zone * 2 + 2,
             "desiredSize": nodes_per_zone, "gpu": True}],
    }}, sort_keys=False), encoding="utf-8")
    load_stack_file(str(path))  # the demo's stack file is a valid kiln config
    return path


def demo_jobs(nodes: int, deadline: float) -> dict[str, Any]:
    """Running Jobs with a spread of remaining times; one outlives the deadline."""
    fractions = (0.1, 0.3, 0.5, 0.8, 0.2, 0.6, 0.4, 0.9)[: max(0, nodes - 2)] + (1.3,)
    remaining = [round(deadline * f) for f in fractions]
    return {"remaining_list": remaining, "arrivals_per_hour": 2.0, "duration_seconds": [1200, 3600]}


class SimulatedReplacement:
    """The replacement step of the demo: seed the simulator from moto, run it, make moto match."""

    def __init__(self, session: Any, deadline: float, on_event: Any, log: Any):
        self.autoscaling = session.client("autoscaling")
        self.ec2 = session.client("ec2")
        self.deadline, self.on_event, self.log = deadline, on_event, log
        self.result: Any = None

    def __call__(self, outputs: dict[str, Any]) -> dict[str, Any]:
        from automation.rotate.fleet import old_nodes_by_group, replace_with_simulator, report_of, scenario_for_groups

        groups = old_nodes_by_group(self.autoscaling, self.ec2, outputs["clusterName"])
        self.groups = groups
        old = sum(g["nodes"] for g in groups)
        self.log(f"seeding the SIMULATED cluster from moto: {old} old node(s) in "
                 + ", ".join(f"{g['name']} ({g['nodes']} not on LT version {g['target_version']})" for g in groups))
        scenario = scenario_for_groups(
            [{"name": g["name"], "zone": g["zone"], "nodes": g["nodes"], "max_size": g["max_size"]} for g in groups],
            jobs=demo_jobs(old, self.deadline), deadline_seconds=self.deadline, name="demo", sample_seconds=60.0)
        self.result = replace_with_simulator(scenario, on_event=self.on_event)
        report = report_of(self.result)
        if report["outcome"] == "completed":
            self._make_moto_match(groups)
        return report

    def _make_moto_match(self, groups: list[dict[str, Any]]) -> None:
        """The simulator replaced the nodes; replace the moto instances too, so AWS state agrees."""
        for g in groups:
            for instance_id in g["old_instance_ids"]:
                self.autoscaling.terminate_instance_in_auto_scaling_group(
                    InstanceId=instance_id, ShouldDecrementDesiredCapacity=False)


def fleet_images(session: Any) -> dict[str, dict[str, int]]:
    """Per moto ASG: how many instances run each image."""
    from collections import Counter

    from automation.rollout.model import TAG_CLUSTER

    ec2, out = session.client("ec2"), {}
    for g in session.client("autoscaling").describe_auto_scaling_groups(
            Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [CLUSTER]}])["AutoScalingGroups"]:
        ids = [i["InstanceId"] for i in g["Instances"]]
        reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"] if ids else []
        out[g["AutoScalingGroupName"]] = dict(Counter(i["ImageId"] for r in reservations for i in r["Instances"]))
    return out


def run_demo(out: Path, *, nodes_per_zone: int = 3, deadline: float = 7200, console: Any = None,
             live: bool = True) -> dict[str, Any]:
    """The demo without the CLI around it; returns the final report (also written to ``out``)."""
    from rich.console import Console
    from rich.panel import Panel

    from automation.localaws import LocalAws
    from automation.rollout.progress import LiveProgress

    console = console or Console(stderr=True, log_path=False)
    started = time.monotonic()
    console.print(Panel(WHAT_IS_SIMULATED, title="kiln demo: what is real, what is simulated", border_style="cyan"))
    project = out / "demo-stack"
    _forget_earlier_intent(project)
    with LocalAws() as aws:
        session = aws.session()
        fleet, model_uri = _seed_moto(aws, session, nodes_per_zone, console)
        stack = _stand_in_stack(project, fleet, nodes_per_zone, session, console)
        progress = LiveProgress(console, label="replacing nodes (simulated cluster)") if live else (lambda e: None)
        replacement = SimulatedReplacement(session, deadline, progress, console.log)
        rotation = _rotation(project, stack, session, replacement, console)
        if live:
            with progress:
                report = rotation.rotate(STACK, "v6", model_uri)
        else:
            report = rotation.rotate(STACK, "v6", model_uri)
        versions, booted, ami = _fleet_after(session, report)
    chart = _timeline(out, replacement, versions)
    summary = _summary(report, versions, booted, ami, chart, started)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rotation-report.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary


def _forget_earlier_intent(project: Path) -> None:
    """Each demo starts a new, empty moto: intent left by an earlier (interrupted) demo means nothing here, and
    resuming it would point the rotation at AMIs that no longer exist."""
    import shutil

    shutil.rmtree(project / ".kiln", ignore_errors=True)


def _seed_moto(aws: Any, session: Any, nodes_per_zone: int, console: Any) -> tuple[Any, str]:
    """The world a real rotation starts from: a GPU and a system group on the base AMI, the public EKS AMI
    parameters the bake resolves (one per family: each group bakes its family's variant), and model v6 in S3
    with its checksum manifest. Returns the fleet and the model's URI."""
    from automation.localaws import add_group, create_fleet, put_model

    fleet = create_fleet(session, CLUSTER, group=GPU_GROUP, nodes_per_zone=nodes_per_zone, ami_family="nvidia")
    add_group(session, fleet, SYSTEM_GROUP, nodes_per_zone=1, min_size=1, instance_type=SYSTEM_TYPE,
              ami_family="standard")
    console.log(f"moto: VPC {fleet.vpc_id}, launch templates {', '.join(fleet.launch_templates.values())}, "
                f"ASGs {', '.join(fleet.asgs)} ({nodes_per_zone} GPU nodes and 1 system node per zone, on base AMI "
                f"{fleet.base_ami})")
    for family in ("standard", "nvidia"):
        aws.seed_public_parameter(
            f"/aws/service/eks/optimized-ami/{K8S}/amazon-linux-2023/x86_64/{family}/recommended/image_id",
            fleet.base_ami)
    model_uri = put_model(session, "kiln-demo-models", "llm/v6",
                          {"config.json": b'{"layers": 32}', "weights-00001.safetensors": b"\x00" * 4096})
    console.log(f"model v6 uploaded to {model_uri} with MANIFEST.sha256")
    return fleet, model_uri


def _stand_in_stack(project: Path, fleet: Any, nodes_per_zone: int, session: Any, console: Any) -> Any:
    """The stack config for the seeded fleet, behind the boto3 stand-in. The demo never touches a real Pulumi
    stack: with the CLI present it would need one, so the demo always uses the stand-in against moto (and says
    so)."""
    from rich.panel import Panel

    from automation.stack import StandInStack, pulumi_cli_available

    write_stack_config(project, fleet, nodes_per_zone)
    stack = StandInStack(STACK, project, session=session)
    console.print(Panel(stack.notice + ("" if not pulumi_cli_available() else
                                        "\n(the pulumi CLI is present, but the demo stack exists only on moto)"),
                        title="STAND-IN STACK", border_style="yellow"))
    return stack


def _rotation(project: Path, stack: Any, session: Any, replacement: "SimulatedReplacement", console: Any) -> Any:
    """The rotation ``python -m automation rotate`` runs, wired to moto and the simulated replacement: the same
    bake, checks and pipeline, so what the demo shows is what users get. Each finished step is logged with its
    time."""
    from automation.rotate.pipeline import Rotation, RotationSeams
    from automation.rotate.state import FileIntentStore
    from automation.rotate.wiring import AwsChecks, make_bake, make_resolve_base
    from automation.stack import kiln_config

    step_started = [time.monotonic()]

    def checkpoint(step: str) -> None:
        console.log(f"[green]done[/green] {step} ({time.monotonic() - step_started[0]:.1f}s)")
        step_started[0] = time.monotonic()

    cfg = kiln_config(stack.all_config())
    checks = AwsChecks(session, cfg)
    log = lambda message: console.log(message, markup=False, highlight=False)  # noqa: E731 - engine text verbatim
    world = RotationSeams(stack=stack, bake=make_bake(stack, cfg, session, log, wait_for_agent=False),
                          resolve_base=make_resolve_base(session, cfg), replace=replacement, log=log,
                          validate=lambda intent: checks.model_uri(intent.model_uri) if intent.model_uri else None,
                          check_amis=lambda amis: checks.amis(amis, "target AMI"), checkpoint=checkpoint,
                          jobs_namespace=cfg.jobs_namespace)
    return Rotation(world, FileIntentStore(project / ".kiln"))


def _fleet_after(session: Any, report: Any) -> tuple[dict[str, dict[str, int]], Optional[str], dict[str, Any]]:
    """What the fleet boots after the rotation, read back from moto (not from the report): instances per image,
    and the AMI the GPU fleet boots (the nvidia entry of the family map) with its description."""
    from automation.stack import desired_amis

    versions = fleet_images(session)
    ec2 = session.client("ec2")
    booted = desired_amis(report.target_ami).get("nvidia") if report.target_ami else None
    ami = ec2.describe_images(ImageIds=[booted])["Images"][0] if booted else {}
    return versions, booted, ami


def _timeline(out: Path, replacement: "SimulatedReplacement", versions: dict[str, dict[str, int]]) -> Optional[Path]:
    """The replacement's timeline as a PNG, when there was a replacement to draw."""
    from automation.timeline import render_timeline

    if replacement.result is None or not replacement.result.timeline:
        return None
    return render_timeline(replacement.result.timeline, out / "rotation-timeline.png",
                           title=f"kiln demo: {sum(sum(v.values()) for v in versions.values())} nodes, model v5 -> v6 "
                                 "(simulated cluster)")


def _summary(report: Any, versions: dict[str, dict[str, int]], booted: Optional[str], ami: dict[str, Any],
             chart: Optional[Path], started: float) -> dict[str, Any]:
    """The demo's report: the rotation's outcome beside what moto shows afterwards, so a reader can check one
    against the other."""
    from automation.stack import desired_amis

    return {
        "outcome": report.outcome, "exitCode": report.exit_code, "message": report.message,
        "previousAmi": desired_amis(report.previous_ami).get("nvidia"), "newAmi": booted,
        "previousAmis": desired_amis(report.previous_ami), "newAmis": desired_amis(report.target_ami),
        "amiTags": {t["Key"]: t["Value"] for t in ami.get("Tags", [])}, "steps": report.steps,
        "gate": report.gate, "rollout": report.rollout, "converged": report.converge is not None
        and not report.converge["changes"], "moto_instances_by_image": versions,
        "timeline": str(chart) if chart else None, "wall_seconds": round(time.monotonic() - started, 1),
        "simulated": WHAT_IS_SIMULATED,
    }


def gate_row(gate: Optional[dict[str, Any]]) -> str:
    """The gate's real verdict: allowed or BLOCKED, and each change with its own verdict."""
    if not gate:
        return "not reached"
    changes = ", ".join(f"{c['op']} {c['name']}" + ("" if c["allowed"] else " (BLOCKED)") for c in gate["changes"])
    verdict = "allowed" if gate["allowed"] else "BLOCKED"
    problems = "; ".join(gate.get("problems") or [])
    return f"{verdict}: {changes or 'no changes'}" + (f"; {problems}" if problems else "")


def print_summary(summary: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    r = summary.get("rollout") or {}
    table = Table(title="kiln demo: final report", show_header=False)
    table.add_row("outcome", f"{summary['outcome']} (exit {summary['exitCode']})")
    before, after = summary.get("previousAmis") or {}, summary.get("newAmis") or {}
    table.add_row("AMIs", "; ".join(f"{family}: {before.get(family)} -> {after.get(family)}"
                                    for family in sorted(set(before) | set(after)))
                  or f"{summary['previousAmi']} -> {summary['newAmi']}")
    table.add_row("AMI tags (nvidia)", ", ".join(f"{k}={v}" for k, v in summary["amiTags"].items() if k.startswith("kiln:")))
    table.add_row("preview gate", gate_row(summary["gate"]))
    table.add_row("nodes replaced (simulated)", f"{r.get('nodes_terminated', 0)} of {r.get('old_nodes_at_start', 0)}; "
                                                f"{r.get('old_nodes_remaining', 0)} old left")
    table.add_row("Jobs", f"{r.get('jobs_completed', 0)} completed, {r.get('jobs_interrupted', 0)} interrupted, "
                          f"{r.get('jobs_force_evicted', 0)} evicted at the deadline")
    table.add_row("rollout time (simulated)", f"{(r.get('makespan_seconds') or 0) / 60:.0f} min")
    table.add_row("converged", "yes: preview shows no changes" if summary["converged"] else "NO")
    table.add_row("moto instances by image", json.dumps(summary["moto_instances_by_image"]))
    table.add_row("timeline", str(summary["timeline"]))
    table.add_row("wall time", f"{summary['wall_seconds']}s")
    console.print(table)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.nodes_per_zone < 1 or args.nodes_per_zone > 20:
        Console(stderr=True).print("[red]bad input:[/red] --nodes-per-zone must be between 1 and 20")
        return 2
    console = Console(stderr=True, log_path=False)
    try:
        summary = run_demo(Path(args.out), nodes_per_zone=args.nodes_per_zone, deadline=args.deadline, console=console)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"demo failed: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary, console)
    return summary["exitCode"]
