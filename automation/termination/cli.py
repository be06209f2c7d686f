"""``python -m automation termination-handler`` (also ``python -m automation.termination``, the image's entrypoint).

Every flag has an environment variable (the Deployment in ``infra/termination.py``
sets them); a flag given on the command line wins. A bad value exits 2 naming
the flag. SIGTERM makes the leader step down (its Lease is released, so the
standby replica takes over at once) and the process exit 0.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
from typing import Optional, Sequence

from automation.errors import EXIT_BAD_INPUT, BadInput

from .decisions import AFTER_GRACE_SECONDS, COMPLETE_MARGIN_SECONDS, HOOK_NAME, Settings
from .rules import DEFAULT_JOB_OWNER_KINDS, NEVER_EVICTED_OWNER_KINDS

_KIND = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_QUEUE_URL = re.compile(r"^https?://\S+/\d{12}/[A-Za-z0-9_-]{1,80}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOOK_NAME = re.compile(r"^[A-Za-z0-9_/-]{1,255}$")       # Auto Scaling's LifecycleHookName pattern

# flag -> (environment variable, help)
FLAGS = {
    "--cluster-name": ("KILN_CLUSTER_NAME", "the EKS cluster; its ASGs carry kiln.dev/cluster=<name>"),
    "--queue-url": ("KILN_QUEUE_URL", "URL of the termination queue (SQS) the EventBridge rules deliver to"),
    "--hook-name": ("KILN_HOOK_NAME", f"the termination lifecycle hook on every ASG (default {HOOK_NAME})"),
    "--job-grace-seconds": ("KILN_JOB_GRACE_SECONDS", "how long a terminating instance is held for its Job pods "
                                                      "(kiln:terminationJobGraceSeconds; default 7200)"),
    "--heartbeat-timeout-seconds": ("KILN_HEARTBEAT_TIMEOUT_SECONDS", "the hook's heartbeat timeout "
                                                                      "(kiln:terminationHeartbeatSeconds; default 300)"),
    "--job-kinds": ("KILN_JOB_KINDS", "comma-separated owner kinds whose pods are Jobs "
                                      f"(default: {','.join(sorted(DEFAULT_JOB_OWNER_KINDS))})"),
    "--lease-namespace": ("KILN_LEASE_NAMESPACE", "namespace of the leader-election Lease (default kube-system)"),
    "--lease-name": ("KILN_LEASE_NAME", "name of the leader-election Lease (default kiln-termination-handler)"),
    "--identity": ("POD_NAME", "this replica's name in the Lease (default: the host name)"),
    "--poll-seconds": ("KILN_POLL_SECONDS", "SQS long-poll wait, 1-20 (default 5)"),
    "--liveness-file": ("KILN_LIVENESS_FILE", "a file touched every cycle, for a liveness probe"),
    "--kubeconfig": ("KUBECONFIG", "outside the cluster: the kubeconfig to use"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Hold a terminating node's instance in Terminating:Wait while its Jobs run, evict its other pods, "
        "cordon nodes on spot interruption, rebalance, stop and scheduled-change notices. Runs in the cluster "
        "as a Deployment with leader election; every flag also reads the environment variable shown.")
    for flag, (env, text) in FLAGS.items():
        parser.add_argument(flag, default=None, help=f"{text} [${env}]")
    parser.add_argument("--context", default=None, help="outside the cluster: the kubeconfig context")
    parser.add_argument("--once", action="store_true", help="run one real cycle (it marks, evicts, heartbeats and completes as a long run would) and exit")


def _value(args: argparse.Namespace, flag: str, default: Optional[str] = None) -> Optional[str]:
    given = getattr(args, flag.lstrip("-").replace("-", "_"))
    if given is not None:
        return given
    return os.environ.get(FLAGS[flag][0]) or default


def _number(args: argparse.Namespace, flag: str, default: float, low: float, high: float) -> float:
    raw = _value(args, flag, str(default))
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadInput(f"{flag}: {raw!r} is not a number") from None
    if not low <= value <= high:
        raise BadInput(f"{flag}: {raw} must be between {low:g} and {high:g}")
    return value


def options_from(args: argparse.Namespace):
    from .handler import HandlerOptions

    cluster = _value(args, "--cluster-name")
    if not cluster:
        raise BadInput("--cluster-name (or $KILN_CLUSTER_NAME) is required")
    queue = _value(args, "--queue-url")
    if not queue or not _QUEUE_URL.fullmatch(queue):
        raise BadInput(f"--queue-url (or $KILN_QUEUE_URL): {queue!r} is not an SQS queue URL "
                       "(https://sqs.<region>.amazonaws.com/<account>/<name>)")
    heartbeat = _number(args, "--heartbeat-timeout-seconds", 300, 30, 7200)
    grace = _number(args, "--job-grace-seconds", 7200, 0, 48 * 3600)
    limit = (Settings(heartbeat_timeout_seconds=heartbeat).global_timeout_seconds - AFTER_GRACE_SECONDS
             - COMPLETE_MARGIN_SECONDS)
    if grace > limit:
        # As kiln:terminationJobGraceSeconds is checked: a grace past the hook's global timeout is never honoured.
        raise BadInput(f"--job-grace-seconds: {grace:g} must be <= {limit:g}: the hook's global timeout "
                       f"min(48 h, 100 x --heartbeat-timeout-seconds ({heartbeat:g})) less "
                       f"{AFTER_GRACE_SECONDS + COMPLETE_MARGIN_SECONDS:g} s for evicted Jobs to stop")
    hook_name = _value(args, "--hook-name", HOOK_NAME)
    if not _HOOK_NAME.fullmatch(hook_name or ""):
        raise BadInput(f"--hook-name (or $KILN_HOOK_NAME): {hook_name!r} is not a lifecycle hook name "
                       "(1-255 of A-Z a-z 0-9 _ - /)")
    identity = _value(args, "--identity", socket.gethostname())
    if not identity or not identity.strip():
        raise BadInput("--identity (or $POD_NAME): must not be empty (the Lease's holder names this replica)")
    kinds_raw = _value(args, "--job-kinds")
    kinds = frozenset(k.strip() for k in kinds_raw.split(",") if k.strip()) if kinds_raw else DEFAULT_JOB_OWNER_KINDS
    for kind in sorted(kinds):
        if not _KIND.fullmatch(kind) or kind in NEVER_EVICTED_OWNER_KINDS:
            raise BadInput(f"--job-kinds: {kind!r} is not a kind whose pods can be Jobs (CamelCase, not DaemonSet/Node)")
    if not kinds:
        raise BadInput("--job-kinds: must name at least one owner kind")
    lease_namespace = _value(args, "--lease-namespace", "kube-system")
    lease_name = _value(args, "--lease-name", "kiln-termination-handler")
    for flag, value in (("--lease-namespace", lease_namespace), ("--lease-name", lease_name)):
        if not _DNS_LABEL.fullmatch(value or ""):
            raise BadInput(f"{flag}: {value!r} is not a DNS-1123 label")
    return HandlerOptions(
        cluster_name=cluster, queue_url=queue, identity=identity,
        hook_name=hook_name, job_grace_seconds=grace, heartbeat_timeout_seconds=heartbeat,
        job_kinds=kinds, lease_namespace=lease_namespace, lease_name=lease_name,
        poll_seconds=_number(args, "--poll-seconds", 5, 1, 20), liveness_file=_value(args, "--liveness-file"))


def main(args: argparse.Namespace) -> int:
    import sys

    from .aws import LifecycleActions, Queue
    from .handler import Handler, configure_logging
    from .kube import KubeTermination, LeaseElector, api_client_from_environment

    try:
        options = options_from(args)
    except BadInput as problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # $KUBECONFIG (possibly several paths) is read by the client itself when no flag is given.
    from kubernetes.config import ConfigException
    try:
        api = api_client_from_environment(args.kubeconfig, args.context)
    except (ConfigException, OSError) as problem:
        print(f"error: --kubeconfig/--context (or $KUBECONFIG): no cluster to talk to: "
              f"{' '.join(str(problem).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    configure_logging()
    handler = Handler(
        options=options,
        queue=Queue(options.queue_url, wait_seconds=int(options.poll_seconds)),
        lifecycle=LifecycleActions(options.cluster_name),
        kube=KubeTermination(api, identity=options.identity),
        elector=LeaseElector(api, namespace=options.lease_namespace, name=options.lease_name,
                             identity=options.identity),
    )

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        handler.stopping = True
    signal.signal(signal.SIGTERM, stop)
    return handler.run(max_cycles=1 if args.once else None)
