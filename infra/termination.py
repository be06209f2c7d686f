"""The termination handler: a lifecycle hook on every ASG, the notices' queue, and the in-cluster handler.

Every way a node leaves reaches one encrypted SQS queue through EventBridge:

* ``aws.autoscaling`` *EC2 Instance-terminate Lifecycle Action* of kiln's hook on
  this cluster's ASGs (scale-in by cluster-autoscaler or by hand, capacity
  rebalancing, health replacement, kiln's own rollout);
* ``aws.ec2`` *Spot Instance Interruption Warning*, *Instance Rebalance
  Recommendation*, *Instance State-change Notification* (``stopping``,
  ``shutting-down``);
* ``aws.health`` *AWS Health Event* for EC2 scheduled changes.

The queue only accepts messages from those rules (``aws:SourceArn``) over TLS;
a message the handler cannot process goes to a dead-letter queue after
``MAX_RECEIVES`` receives. The hook (``autoscaling:EC2_INSTANCE_TERMINATING``,
default result CONTINUE) keeps a terminating instance in ``Terminating:Wait``
while the handler heartbeats.

The handler (``automation/termination``) runs as a Deployment of two replicas
in ``kube-system`` with leader election, a PodDisruptionBudget, its own service
account with an IRSA role (receive/delete on this queue; heartbeat/complete on
ASGs tagged for this cluster; describe ASGs) and RBAC for exactly the calls it
makes. The hooks are declared after the Deployment: a hook without a running
handler would only delay every termination by the heartbeat timeout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import irsa, lifecycle
from infra import policydocs as pd
from infra.config import TerminationConfig
from infra.labels import TAG_CLUSTER, TAINT_WARMING, TAINT_WARMING_EFFECT

NAMESPACE = "kube-system"
NAME = "kiln-termination-handler"
LEASE_NAME = NAME                      # automation/termination/cli.py default --lease-name
REPLICAS = 2
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
LIVENESS_FILE = "/tmp/kiln-alive"
LIVENESS_SECONDS = 120
# The queue. Notices matter for minutes (a spot warning for two); an hour covers a handler
# outage, and lifecycle actions are found through Auto Scaling anyway. Visibility: one
# cycle of the handler, with margin; a message it leaves comes back after that.
RETENTION_SECONDS = 3600
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
VISIBILITY_SECONDS = 60
MAX_RECEIVES = 5

QUEUE_ACTIONS = ("sqs:DeleteMessage", "sqs:ReceiveMessage")
LIFECYCLE_ACTIONS = ("autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat")
DESCRIBE_ACTIONS = ("autoscaling:DescribeAutoScalingGroups",)

# Every Kubernetes call automation/termination/kube.py makes: (api group, resource, verbs).
CLUSTER_RULES = (
    ("", "nodes", ("get", "list", "patch")),
    ("", "pods", ("list",)),
    ("", "pods/eviction", ("create",)),
    ("batch", "jobs", ("get",)),
    ("policy", "poddisruptionbudgets", ("list",)),
    ("events.k8s.io", "events", ("create",)),
)
# In NAMESPACE: (api group, resource, verbs, resource names).
LEASE_RULES = (
    ("coordination.k8s.io", "leases", ("get", "patch"), (LEASE_NAME,)),
    ("coordination.k8s.io", "leases", ("create",), ()),   # create cannot be limited by name
)


# ---- EventBridge patterns (pure) ------------------------------------------------------------------------


def event_patterns(asg_names: Sequence[str], hook_name: str = lifecycle.HOOK_NAME) -> dict[str, dict[str, Any]]:
    """Rule suffix -> event pattern. Only the lifecycle rule can be narrowed to this cluster (its ASGs);
    EC2 and Health events carry an instance id only, and the handler drops other clusters' instances."""
    return {
        "lifecycle": {"source": ["aws.autoscaling"], "detail-type": ["EC2 Instance-terminate Lifecycle Action"],
                      "detail": {"AutoScalingGroupName": sorted(asg_names), "LifecycleHookName": [hook_name],
                                 "LifecycleTransition": [lifecycle.TRANSITION]}},
        "spot": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
        "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
        "state": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"],
                  "detail": {"state": ["stopping", "shutting-down"]}},
        "scheduled": {"source": ["aws.health"], "detail-type": ["AWS Health Event"],
                      "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]}},
    }


def queue_policy(queue_arn: str, rule_arns: Sequence[str]) -> str:
    """Only these EventBridge rules may send, and nobody may use the queue without TLS."""
    return pd.document(
        {"Sid": "OnlyTheseRules", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
         "Action": "sqs:SendMessage", "Resource": queue_arn,
         "Condition": {"ArnEquals": {"aws:SourceArn": sorted(rule_arns)}}},
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": queue_arn,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    )


def handler_policy(partition: str, region: str, account: str, cluster_name: str, queue_arn: str) -> str:
    """The handler's permissions: exactly the calls automation/termination/aws.py makes."""
    return pd.document(
        pd.statement("ReceiveAndDeleteNotices", QUEUE_ACTIONS, [queue_arn]),
        pd.statement("HoldOnlyThisClustersInstances", LIFECYCLE_ACTIONS, [pd.asg_arn(partition, region, account)],
                     {"StringEquals": {f"autoscaling:ResourceTag/{TAG_CLUSTER}": cluster_name}}),
        pd.statement("DescribeReadOnly", DESCRIBE_ACTIONS, "*"),
    )


def redrive_policy(dlq_arn: str) -> str:
    return json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES}, sort_keys=True)


def liveness_command() -> list[str]:
    return ["python", "-c", f"import os, sys, time; sys.exit(time.time() - os.path.getmtime('{LIVENESS_FILE}') > "
                            f"{LIVENESS_SECONDS})"]


# ---- the component --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TerminationArgs:
    cluster_name: pulumi.Input[str]
    # Every ASG of the cluster, keyed by a stable name for its hook ("<group>-<zone>").
    asg_names: Mapping[str, pulumi.Input[str]]
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]
    k8s_provider: k8s.Provider
    termination: TerminationConfig
    tags: dict[str, str] = field(default_factory=dict)


class TerminationHandler(pulumi.ComponentResource):
    """Queue + DLQ, EventBridge rules, IRSA role, RBAC, the handler Deployment and PDB, and the hooks."""

    def __init__(self, name: str, args: TerminationArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:TerminationHandler", name, None, opts)
        if not args.termination.handler_image:
            raise ValueError("TerminationArgs.termination.handler_image is required")
        child = pulumi.ResourceOptions(parent=self)
        partition = aws.get_partition_output().partition
        region = aws.get_region_output().region
        account = aws.get_caller_identity_output().account_id
        cluster = pulumi.Output.from_input(args.cluster_name)
        self._queues(name, cluster, args, child)
        self._rules(name, cluster, args, child)
        grant = self._identity(name, args, child, pulumi.Output.all(partition, region, account, cluster, self.queue.arn))
        on_cluster = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "kiln"}
        meta = k8s.meta.v1.ObjectMetaArgs(name=NAME, namespace=NAMESPACE, labels=labels)
        rbac = self._rbac(name, labels, meta, on_cluster)
        self._deployment(name, args, labels, meta, _handler_env(cluster, self.queue.id, region, args.termination),
                         depends_on=[grant, *rbac])
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb", metadata=meta,
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                min_available=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels)),
            opts=on_cluster)
        self._hooks(name, args)
        self.register_outputs({"queueUrl": self.queue.id, "deadLetterQueueUrl": self.dead_letters.id,
                               "roleArn": self.role.arn})

    def _queues(self, name: str, cluster: pulumi.Output, args: TerminationArgs, child: pulumi.ResourceOptions) -> None:
        """The notices' queue and its dead-letter queue, both encrypted. A message the handler cannot process moves
        to the DLQ after ``MAX_RECEIVES`` receives instead of coming back forever; only this queue may redrive
        into the DLQ. Named for the cluster, within SQS's 80 characters."""
        self.dead_letters = aws.sqs.Queue(
            f"{name}-dlq", name=cluster.apply(lambda c: f"{c[:60]}-termination-dlq"), message_retention_seconds=DLQ_RETENTION_SECONDS, sqs_managed_sse_enabled=True,
            tags=args.tags, opts=child)
        self.queue = aws.sqs.Queue(
            name, name=cluster.apply(lambda c: f"{c[:60]}-termination"), message_retention_seconds=RETENTION_SECONDS, visibility_timeout_seconds=VISIBILITY_SECONDS,
            sqs_managed_sse_enabled=True, redrive_policy=self.dead_letters.arn.apply(redrive_policy),
            tags=args.tags, opts=child)
        aws.sqs.RedriveAllowPolicy(
            f"{name}-dlq", queue_url=self.dead_letters.id,
            redrive_allow_policy=self.queue.arn.apply(
                lambda arn: json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [arn]})),
            opts=child)

    def _rules(self, name: str, cluster: pulumi.Output, args: TerminationArgs, child: pulumi.ResourceOptions) -> None:
        """One EventBridge rule per way a node leaves (:func:`event_patterns`), each targeting the queue, and the
        queue policy that lets only these rules send (over TLS). Rule names fit EventBridge's 64 characters."""
        patterns = pulumi.Output.all(*args.asg_names.values()).apply(lambda names: event_patterns(names))
        self.rules: dict[str, aws.cloudwatch.EventRule] = {}
        for suffix in event_patterns([]):
            rule = aws.cloudwatch.EventRule(
                f"{name}-{suffix}",
                name=cluster.apply(lambda c, s=suffix: f"{c[:40]}-termination-{s}"),
                description=f"kiln: {suffix} notices for the termination handler",
                event_pattern=patterns.apply(lambda p, s=suffix: json.dumps(p[s], sort_keys=True)),
                tags=args.tags, opts=child)
            aws.cloudwatch.EventTarget(f"{name}-{suffix}", rule=rule.name, arn=self.queue.arn, opts=child)
            self.rules[suffix] = rule
        aws.sqs.QueuePolicy(
            name, queue_url=self.queue.id,
            policy=pulumi.Output.all(self.queue.arn, *[r.arn for r in self.rules.values()]).apply(
                lambda a: queue_policy(a[0], a[1:])),
            opts=child)

    def _identity(self, name: str, args: TerminationArgs, child: pulumi.ResourceOptions,
                  where: pulumi.Output) -> aws.iam.RolePolicy:
        """The handler's AWS identity: an IRSA role only its service account can assume, allowed exactly the calls
        it makes (:func:`handler_policy`; ``where`` is partition, region, account, cluster and queue ARN). Returns
        the policy, which the Deployment waits for: a handler without it would fail its first cycles."""
        self.role = aws.iam.Role(
            f"{name}-irsa", description=f"kiln termination handler ({NAMESPACE}/{NAME})",
            assume_role_policy=irsa.trust_policy(args.oidc_provider_arn, args.oidc_provider_url, NAMESPACE, NAME),
            tags=args.tags, opts=child)
        return aws.iam.RolePolicy(
            f"{name}-irsa", role=self.role.id, policy=where.apply(lambda a: handler_policy(*a)), opts=child)

    def _rbac(self, name: str, labels: dict[str, str], meta: k8s.meta.v1.ObjectMetaArgs,
              on_cluster: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        """The service account (annotated with the IRSA role) and RBAC for exactly the Kubernetes calls the handler
        makes: :data:`CLUSTER_RULES` cluster-wide, :data:`LEASE_RULES` in its namespace. Returns what the
        Deployment must wait for: the account and the bindings."""
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=k8s.meta.v1.ObjectMetaArgs(
                name=NAME, namespace=NAMESPACE, labels=labels, annotations={IRSA_ANNOTATION: self.role.arn}),
            opts=on_cluster)
        subject = [k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=NAME, namespace=NAMESPACE)]
        cluster_role = k8s.rbac.v1.ClusterRole(
            f"{name}-rbac", metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME, labels=labels),
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=[g], resources=[r], verbs=list(v)) for g, r, v in CLUSTER_RULES],
            opts=on_cluster)
        cluster_binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-rbac", metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME, labels=labels), subjects=subject,
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                             name=cluster_role.metadata.name),
            opts=on_cluster)
        lease_role = k8s.rbac.v1.Role(
            f"{name}-lease", metadata=meta,
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=[g], resources=[r], verbs=list(v), resource_names=list(n) or None)
                   for g, r, v, n in LEASE_RULES],
            opts=on_cluster)
        lease_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-lease", metadata=meta, subjects=subject,
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role",
                                             name=lease_role.metadata.name),
            opts=on_cluster)
        return [account, cluster_binding, lease_binding]

    def _deployment(self, name: str, args: TerminationArgs, labels: dict[str, str], meta: k8s.meta.v1.ObjectMetaArgs,
                    env: dict[str, Any], depends_on: list[pulumi.Resource]) -> None:
        """Two replicas (one leads, :data:`LEASE_NAME`) rolled one at a time with no replica down, spread over
        hosts and zones; created only once its identity and RBAC exist."""
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deploy", metadata=meta,
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=REPLICAS,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1)),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=_pod_spec(labels, env, args.termination.handler_image),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=depends_on),
        )

    def _hooks(self, name: str, args: TerminationArgs) -> None:
        """A terminate lifecycle hook on every ASG, declared after the Deployment and the rules: a hook without a
        running handler fed by its rule would only delay every termination by the heartbeat timeout."""
        self.hooks: dict[str, aws.autoscaling.LifecycleHook] = {}
        for key, asg_name in sorted(args.asg_names.items()):
            self.hooks[key] = aws.autoscaling.LifecycleHook(
                f"{name}-{key}",
                name=lifecycle.HOOK_NAME,
                autoscaling_group_name=asg_name,
                lifecycle_transition=lifecycle.TRANSITION,
                heartbeat_timeout=args.termination.heartbeat_seconds,
                default_result=lifecycle.DEFAULT_RESULT,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.deployment, *self.rules.values()]),
            )


def _handler_env(cluster: pulumi.Output, queue_url: pulumi.Output, region: pulumi.Output,
                 t: TerminationConfig) -> dict[str, Any]:
    """The handler's settings, as the environment ``automation/termination/cli.py`` reads: one source (the stack
    config) for the hook's name and timeouts on both sides."""
    return {
        "KILN_CLUSTER_NAME": cluster, "KILN_QUEUE_URL": queue_url, "KILN_HOOK_NAME": lifecycle.HOOK_NAME,
        "KILN_JOB_GRACE_SECONDS": str(t.job_grace_seconds), "KILN_HEARTBEAT_TIMEOUT_SECONDS": str(t.heartbeat_seconds),
        "KILN_LEASE_NAMESPACE": NAMESPACE, "KILN_LEASE_NAME": LEASE_NAME, "KILN_LIVENESS_FILE": LIVENESS_FILE,
        "AWS_REGION": region, "AWS_STS_REGIONAL_ENDPOINTS": "regional",
    }


def _pod_spec(labels: dict[str, str], env: dict[str, Any], image: str) -> k8s.core.v1.PodSpecArgs:
    """The handler's pod: critical priority, up while nodes are still warming, restricted (non-root, read-only
    root, no capabilities) with a small writable /tmp for its liveness file."""
    restricted = k8s.core.v1.SecurityContextArgs(
        allow_privilege_escalation=False, read_only_root_filesystem=True, run_as_non_root=True,
        run_as_user=65534, run_as_group=65534, capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"))
    return k8s.core.v1.PodSpecArgs(
        service_account_name=NAME,
        # Critical: last to be stopped by the kubelet's graceful shutdown, never preempted.
        priority_class_name="system-cluster-critical",
        # AWS endpoints through the VPC resolver: on a new cluster every node is still
        # warming and CoreDNS does not tolerate that taint (as for cluster-autoscaler).
        dns_policy="Default",
        termination_grace_period_seconds=30,
        tolerations=[k8s.core.v1.TolerationArgs(key=TAINT_WARMING, operator="Exists",
                                                effect=TAINT_WARMING_EFFECT)],
        affinity=k8s.core.v1.AffinityArgs(pod_anti_affinity=k8s.core.v1.PodAntiAffinityArgs(
            preferred_during_scheduling_ignored_during_execution=[
                k8s.core.v1.WeightedPodAffinityTermArgs(weight=100, pod_affinity_term=(
                    k8s.core.v1.PodAffinityTermArgs(
                        topology_key="kubernetes.io/hostname",
                        label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels))))])),
        topology_spread_constraints=[k8s.core.v1.TopologySpreadConstraintArgs(
            max_skew=1, topology_key="topology.kubernetes.io/zone", when_unsatisfiable="ScheduleAnyway",
            label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels))],
        security_context=k8s.core.v1.PodSecurityContextArgs(
            run_as_non_root=True, seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")),
        containers=[k8s.core.v1.ContainerArgs(
            name="handler",
            image=image,
            env=[k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in env.items()] + [
                k8s.core.v1.EnvVarArgs(name="POD_NAME", value_from=k8s.core.v1.EnvVarSourceArgs(
                    field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path="metadata.name")))],
            security_context=restricted,
            resources=k8s.core.v1.ResourceRequirementsArgs(
                requests={"cpu": "50m", "memory": "128Mi"}, limits={"memory": "256Mi"}),
            liveness_probe=k8s.core.v1.ProbeArgs(
                exec_=k8s.core.v1.ExecActionArgs(command=liveness_command()),
                initial_delay_seconds=30, period_seconds=30, timeout_seconds=10),
            volume_mounts=[k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")],
        )],
        volumes=[k8s.core.v1.VolumeArgs(name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
            size_limit="16Mi"))],
    )
