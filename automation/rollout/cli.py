"""``python -m automation replace``: the drain-aware rollout against real AWS and Kubernetes.

Builds the real adapters (boto3 Auto Scaling/EC2, the official kubernetes
client, the system clock), hands them to the runner and turns its report into
an exit code: 0 completed (or a dry run); 1 rolled_back, blocked or failed;
2 bad input. Nothing ends in a traceback: any error is one line on stderr (and
the report, with ``--json``) and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys

from automation.errors import EXIT_BAD_INPUT, EXIT_FAILED, BadInput

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def parse_duration(text: str) -> float:
    """``7200``, ``7200s``, ``90m``, ``2h``, ``1h30m`` -> seconds (positive)."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"expected a duration like 7200, 90m, 2h or 1h30m, got {text!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than zero, got {text!r}")
    return float(total)


def parse_surge_flag(text: str) -> str:
    from .strategies import parse_surge
    try:
        parse_surge(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--surge: ")) from None
    return text.strip()


_OWNER_KIND = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def parse_kinds_flag(text: str) -> list[str]:
    """``PyTorchJob,TFJob`` -> ["PyTorchJob", "TFJob"]: non-empty CamelCase Kubernetes kinds."""
    kinds = [part.strip() for part in text.split(",")]
    if not any(kinds):
        raise argparse.ArgumentTypeError("expected one or more owner kinds, e.g. Job,PyTorchJob")
    for kind in kinds:
        if not kind:
            raise argparse.ArgumentTypeError(f"empty owner kind in {text!r}")
        if not _OWNER_KIND.fullmatch(kind):
            raise argparse.ArgumentTypeError(f"{kind!r} is not a Kubernetes kind (CamelCase, e.g. PyTorchJob)")
        if kind in ("DaemonSet", "Node"):
            raise argparse.ArgumentTypeError(f"{kind} pods are never evicted; they cannot be Jobs")
    return kinds


def job_kinds_from_flags(replace: list[str] | None, also: list[str] | None) -> frozenset[str]:
    """--job-kinds replaces the default set; --also-job-kinds adds to it (or to --job-kinds)."""
    from .engine import DEFAULT_JOB_OWNER_KINDS
    base = frozenset(replace) if replace else DEFAULT_JOB_OWNER_KINDS
    return base | frozenset(also or ())


def add_job_kind_flags(group) -> None:
    """--job-kinds / --also-job-kinds, shared by ``replace`` and ``rotate``."""
    from .engine import DEFAULT_JOB_OWNER_KINDS
    default = ",".join(sorted(DEFAULT_JOB_OWNER_KINDS))
    group.add_argument("--job-kinds", type=parse_kinds_flag, default=None, metavar="KIND[,KIND...]",
                       help="owner kinds whose pods are Jobs: never interrupted before the deadline, evicted after "
                            f"it; replaces the default ({default})")
    group.add_argument("--also-job-kinds", type=parse_kinds_flag, action="extend", default=None,
                       metavar="KIND[,KIND...]",
                       help="owner kinds to treat as Jobs on top of the default (or of --job-kinds), e.g. RayCluster "
                            "when your Ray clusters run training; repeatable")


def _strategy_names() -> list[str]:
    from .strategies import STRATEGIES
    return list(STRATEGIES)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Replace every node whose instance runs a launch-template version other than its Auto Scaling\n"
        "group's current one, without interrupting a running Job before its deadline. Groups are the ASGs\n"
        "tagged kiln.dev/cluster=<cluster>. In each group a replacement is proven first (Ready, labelled\n"
        "with a model version, warm): until then no old node is cordoned, drained or terminated and Jobs\n"
        "keep starting on the old nodes. Safe to rerun: the rollout resumes from its intent, stored in\n"
        "the Lease kube-system/kiln-rollout and as tags on the groups.\n\n"
        "outcomes (exit code):\n"
        "  completed (0)    every old node replaced; sizes, autoscaler and tags restored\n"
        "  dry_run (0)      --dry-run: the plan, nothing changed\n"
        "  rolled_back (1)  a new node was bad (--boot-timeout, --ready-timeout, warm-up failed) or the\n"
        "                   launch template cannot launch: every original node kept, the previous\n"
        "                   version restored; a rerun reports rolled_back until the version changes\n"
        "  blocked (1)      past the deadline a PodDisruptionBudget keeps nodes from draining (named,\n"
        "                   with the nodes it holds); no Job was force-evicted there; rerun to continue\n"
        "  failed (1)       launches failed longer than --launch-failure-timeout (AWS's message), the\n"
        "                   lock is held elsewhere, or an API error (one line); rerun to continue\n"
        "  bad input (2)    a flag is wrong; the error names it")
    target = parser.add_argument_group("target")
    target.add_argument("--cluster", required=True, help="cluster name: the value of the kiln.dev/cluster tag on its ASGs")
    target.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / the profile's)")
    target.add_argument("--profile", help="AWS profile (default: AWS_PROFILE or the default chain)")
    target.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
    target.add_argument("--context", help="kubeconfig context (default: the current context)")

    knobs = parser.add_argument_group("rollout")
    knobs.add_argument("--strategy", default="default", choices=_strategy_names(),
                       help="default: surge on demand, drain as Jobs finish; double-and-drain: the widely copied script, "
                            "as a baseline (default: default)")
    knobs.add_argument("--surge", type=parse_surge_flag, default=None,
                       help="extra nodes per group at once: a count (3) or a share of its old nodes (25%%); "
                            "default: as replacement capacity is needed")
    knobs.add_argument("--deadline", type=parse_duration, default=7200.0, metavar="DURATION",
                       help="after this, remaining Job pods on old nodes are evicted; per run (default 2h; 7200, 90m, 2h)")
    knobs.add_argument("--ready-timeout", type=parse_duration, default=1800.0, metavar="DURATION",
                       help="a new node registered but not Ready, labelled and warm within this of its launch is "
                            "bad: the rollout rolls back before anything was proven (default 30m)")
    knobs.add_argument("--boot-timeout", type=parse_duration, default=600.0, metavar="DURATION",
                       help="a new instance whose node has not registered within this of its launch is bad: "
                            "roll back (default 10m)")
    knobs.add_argument("--launch-failure-timeout", type=parse_duration, default=900.0, metavar="DURATION",
                       help="launches failing this long (InsufficientInstanceCapacity, no spot capacity, quotas; "
                            "shown as they happen with AWS's message) stop the rollout as failed; nothing is "
                            "cordoned or terminated meanwhile. An invalid template or AMI rolls back at once "
                            "(default 15m)")
    knobs.add_argument("--poll", type=parse_duration, default=30.0, metavar="DURATION",
                       help="longest wait between looks at the world; pod changes wake it sooner (default 30s)")
    knobs.add_argument("--pause-autoscaler", action="store_true",
                       help="scale cluster-autoscaler to 0 for the rollout (restored on every exit path)")
    add_job_kind_flags(knobs)

    cluster = parser.add_argument_group("cluster objects")
    cluster.add_argument("--lease-namespace", default="kube-system", help="namespace of the rollout Lease (default kube-system)")
    cluster.add_argument("--lease-name", default="kiln-rollout", help="name of the rollout Lease, lock and intent (default kiln-rollout)")
    cluster.add_argument("--autoscaler-namespace", default="kube-system", help="namespace of cluster-autoscaler (default kube-system)")
    cluster.add_argument("--autoscaler-name", default="cluster-autoscaler", help="its Deployment (default cluster-autoscaler)")
    cluster.add_argument("--holder", default=None,
                         help="lock holder identity (default: kiln-rollout/<host>/<pid>, unique per process)")

    output = parser.add_argument_group("output")
    output.add_argument("--dry-run", action="store_true", help="read the world, print the plan, change nothing")
    output.add_argument("--json", action="store_true",
                        help="JSON lines events on stdout; the last line is the report")


def _bad_input(flag: str, message: str) -> int:
    print(f"python -m automation replace: error: {flag}: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def build_cloud(args: argparse.Namespace):
    """The AWS adapter; errors name the flag to fix."""
    import botocore.exceptions
    from .aws import AwsCloud
    try:
        return AwsCloud(profile=args.profile, region=args.region)
    except botocore.exceptions.ProfileNotFound as error:
        raise BadInput(str(error), flag="--profile") from None
    except botocore.exceptions.NoRegionError:
        raise BadInput("no AWS region configured (set --region or AWS_REGION)", flag="--region") from None


def build_cluster(args: argparse.Namespace):
    """The Kubernetes adapter; errors name the flag to fix."""
    from kubernetes.config import ConfigException
    from .kube import KubeCluster
    if args.kubeconfig and not os.path.exists(args.kubeconfig):
        raise BadInput(f"no such file: {args.kubeconfig}", flag="--kubeconfig")
    try:
        return KubeCluster.from_kubeconfig(
            args.kubeconfig, args.context,
            lease_namespace=args.lease_namespace, lease_name=args.lease_name,
            autoscaler_namespace=args.autoscaler_namespace, autoscaler_name=args.autoscaler_name)
    except ConfigException as error:
        flag = "--context" if args.context else "--kubeconfig"
        raise BadInput(f"cannot load Kubernetes configuration: {error}", flag=flag) from None
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as error:
        # A kubeconfig that is a directory, binary junk, or YAML of the wrong shape.
        raise BadInput(f"cannot read the kubeconfig: {' '.join(str(error).split())}", flag="--kubeconfig") from None
    except Exception as error:  # noqa: BLE001 - e.g. yaml.YAMLError: still the kubeconfig's fault
        raise BadInput(f"cannot read the kubeconfig: {type(error).__name__}: {' '.join(str(error).split())}",
                       flag="--kubeconfig") from None


def options_from_args(args: argparse.Namespace):
    from .runner import RolloutOptions
    holder = args.holder or f"kiln-rollout/{socket.gethostname()}/{os.getpid()}"
    return RolloutOptions(
        cluster_name=args.cluster, strategy=args.strategy, surge=args.surge,
        deadline_seconds=args.deadline, ready_timeout_seconds=args.ready_timeout,
        boot_timeout_seconds=args.boot_timeout, launch_failure_timeout_seconds=args.launch_failure_timeout,
        pause_autoscaler=args.pause_autoscaler, dry_run=args.dry_run, poll_seconds=args.poll, holder=holder,
        job_owner_kinds=job_kinds_from_flags(args.job_kinds, args.also_job_kinds))


def main(args: argparse.Namespace) -> int:
    from .clock import SystemClock
    from .progress import LiveProgress, json_lines
    from .runner import StopRequested, run_rollout

    if not args.cluster.strip():
        return _bad_input("--cluster", "must not be empty")
    options = options_from_args(args)
    try:
        options.validate()
    except ValueError as error:
        flag, _, message = str(error).partition(": ")
        return _bad_input(flag if flag.startswith("--") else "input", message or str(error))
    try:
        cloud = build_cloud(args)
        cluster = build_cluster(args)
    except BadInput as error:
        return _bad_input(error.flag, error.message)

    clock = SystemClock()
    try:
        if args.json:
            report = run_rollout(cloud, cluster, clock, options, on_event=json_lines(sys.stdout))
            print(json.dumps(report.to_dict(), sort_keys=True, default=str))
        else:
            with LiveProgress(label=f"replace {args.cluster}") as progress:
                report = run_rollout(cloud, cluster, clock, options, on_event=progress)
            print(report.to_text())
    except (KeyboardInterrupt, StopRequested):
        # Forced (a second Ctrl-C while the run was stopping): no report from the runner; say so.
        if args.json:
            print(json.dumps({"outcome": "failed", "reason": "interrupted; rerun the same command to resume"}))
        print("python -m automation replace: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_FAILED
    except Exception as error:  # noqa: BLE001 - the runner reports its own failures; this is the last guard
        from .runner import one_line
        print(f"python -m automation replace: error: {one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    if report.outcome not in ("completed", "dry_run") and report.reason and not args.json:
        print(f"python -m automation replace: {report.outcome}: {report.reason}", file=sys.stderr)
    return report.exit_code
