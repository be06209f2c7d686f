"""Warm nodes between bakes: pull images into containerd before any pod asks for them.

Two paths, both SSM ``AWS-RunShellScript`` on the instances tagged
``kiln.dev/cluster=<cluster>``, both with the node's own ECR credentials
(its instance role, through ``aws ecr get-login-password``):

* **on push** — an EventBridge rule matches a successful push to one of kiln's
  repositories and runs ``ctr -n k8s.io images pull`` of exactly that image on
  every node; an input transformer builds the reference from the event.
* **on join** — a State Manager association pulls ``kiln:prefetchImages`` on
  every node as it registers with SSM, and again on a schedule (kubelet's image
  garbage collection may have removed one since).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws

from infra import policydocs as pd
from infra.labels import TAG_CLUSTER

DOCUMENT = "AWS-RunShellScript"
CONTAINERD_NAMESPACE = "k8s.io"  # the namespace kubelet's CRI uses; images elsewhere are invisible to pods
DEFAULT_SCHEDULE = "rate(1 hour)"
EXECUTION_TIMEOUT_SECONDS = 3600  # a 32 GB image over a node's ECR bandwidth

# EventBridge input transformer: placeholder -> JSON path in the ECR push event.
EVENT_INPUT_PATHS = {
    "repo": "$.detail.repository-name",
    "tag": "$.detail.image-tag",
    "account": "$.account",
    "region": "$.region",
}

_ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


def push_event_pattern(repository_names: Sequence[str]) -> dict:
    """Successful pushes of a *tagged* image to one of ``repository_names``.

    Pushes by digest only carry no ``image-tag``; they are skipped because the
    command pulls by tag (ECR tags are immutable here, so a tag names one image).
    """
    return {
        "source": ["aws.ecr"],
        "detail-type": ["ECR Image Action"],
        "detail": {
            "action-type": ["PUSH"],
            "result": ["SUCCESS"],
            "repository-name": sorted(repository_names),
            "image-tag": [{"exists": True}],
        },
    }


def push_pull_commands(dns_suffix: str = "amazonaws.com") -> list[str]:
    """The shell lines run on each node for one push; ``<repo>`` etc. are filled in by EventBridge.

    The event's values land inside single quotes and are checked against ECR's
    own name and tag alphabet before use, so a surprising value fails the
    command instead of becoming shell. No double quotes: the template stays
    plain JSON without escapes.
    """
    return [
        "set -eu",
        "repo='<repo>'",
        "tag='<tag>'",
        "region='<region>'",
        "account='<account>'",
        "case $repo:$tag:$region:$account in *[!A-Za-z0-9._/:-]*) echo kiln: unexpected characters in the event >&2; exit 1;; esac",
        f"image=$account.dkr.ecr.$region.{dns_suffix}/$repo:$tag",
        "password=$(aws ecr get-login-password --region $region)",
        f"ctr --namespace {CONTAINERD_NAMESPACE} images pull --user AWS:$password $image >/dev/null",
        "echo kiln: pulled $image",
    ]


def push_input_template(dns_suffix: str = "amazonaws.com") -> str:
    """The Run Command parameters EventBridge sends (``AWS-RunShellScript``'s ``commands``)."""
    return json.dumps({"commands": push_pull_commands(dns_suffix)})


def join_pull_script(images: Sequence[str]) -> str:
    """A script that pulls every image not yet in containerd's k8s.io namespace.

    ECR images authenticate with the node's instance role for the registry's
    region; other registries are pulled anonymously.
    """
    lines = ["set -eu"]
    for image in images:
        host = image.split("/", 1)[0]
        m = _ECR_HOST.match(host)
        auth = f' --user "AWS:$(aws ecr get-login-password --region {m["region"]})"' if m else ""
        ref = shlex.quote(image)
        lines.append(
            f"ctr --namespace {CONTAINERD_NAMESPACE} images ls -q | grep -qxF {ref} "
            f"|| ctr --namespace {CONTAINERD_NAMESPACE} images pull{auth} {ref} >/dev/null")
    lines.append(f"echo kiln: {len(images)} prefetch images present")
    return "\n".join(lines)


def send_command_policy(partition: str, region: str, account: str, cluster_name: str) -> str:
    """What EventBridge may do: run only ``AWS-RunShellScript``, only on this cluster's instances.

    SendCommand is authorised once per resource: the document and each target
    instance. The tag condition sits on the instance statement only (a document
    has no such tag, so a combined statement would deny everything).
    """
    return pd.document(
        pd.statement("RunShellScriptDocumentOnly", ["ssm:SendCommand"],
                     [pd.ssm_document_arn(partition, region, DOCUMENT)]),
        pd.statement("ThisClustersInstancesOnly", ["ssm:SendCommand"],
                     [pd.ec2_arn(partition, region, account, "instance/*")],
                     {"StringEquals": {f"ssm:resourceTag/{TAG_CLUSTER}": cluster_name}}),
    )


@dataclass(frozen=True)
class PrefetchArgs:
    cluster_name: pulumi.Input[str]
    # One entry per repository (each may be an Output); the count must be known up front.
    repository_names: Sequence[pulumi.Input[str]] = ()
    images: tuple[str, ...] = ()
    schedule: str = DEFAULT_SCHEDULE
    tags: dict[str, str] = field(default_factory=dict)


class ImagePrefetch(pulumi.ComponentResource):
    """EventBridge push -> Run Command pull, and a State Manager association for joining nodes."""

    def __init__(self, name: str, args: PrefetchArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("kiln:infra:ImagePrefetch", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster = pulumi.Output.from_input(args.cluster_name)
        targets_key = f"tag:{TAG_CLUSTER}"
        self.rule: Optional[aws.cloudwatch.EventRule] = None
        self.role: Optional[aws.iam.Role] = None
        self.association: Optional[aws.ssm.Association] = None

        if args.repository_names:
            partition = aws.get_partition_output()
            region = aws.get_region_output().region
            account = aws.get_caller_identity_output().account_id
            self.rule = aws.cloudwatch.EventRule(
                f"{name}-on-push",
                name=cluster.apply(lambda c: f"{c}-image-pushed"),
                description="kiln: successful image pushes to the cluster's ECR repositories",
                event_pattern=pulumi.Output.all(*args.repository_names).apply(
                    lambda names: json.dumps(push_event_pattern(names), sort_keys=True)),
                tags=args.tags,
                opts=child,
            )
            self.role = aws.iam.Role(
                f"{name}-on-push",
                description="EventBridge: run the image pull on this cluster's nodes",
                # Only EventBridge, only for this rule: no other rule can borrow the role.
                assume_role_policy=pulumi.Output.all(account, self.rule.arn).apply(
                    lambda a: pd.trust({"Service": "events.amazonaws.com"}, conditions={
                        "StringEquals": {"aws:SourceAccount": a[0]},
                        "ArnEquals": {"aws:SourceArn": a[1]},
                    })),
                tags=args.tags,
                opts=child,
            )
            policy = aws.iam.RolePolicy(
                f"{name}-on-push",
                role=self.role.id,
                policy=pulumi.Output.all(partition.partition, region, account, cluster).apply(
                    lambda a: send_command_policy(*a)),
                opts=child,
            )
            self.target = aws.cloudwatch.EventTarget(
                f"{name}-on-push",
                rule=self.rule.name,
                arn=pulumi.Output.all(partition.partition, region).apply(
                    lambda a: pd.ssm_document_arn(a[0], a[1], DOCUMENT)),
                role_arn=self.role.arn,
                run_command_targets=[aws.cloudwatch.EventTargetRunCommandTargetArgs(
                    key=targets_key, values=[cluster])],
                input_transformer=aws.cloudwatch.EventTargetInputTransformerArgs(
                    input_paths=dict(EVENT_INPUT_PATHS),
                    input_template=partition.dns_suffix.apply(push_input_template),
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
            )

        if args.images:
            self.association = aws.ssm.Association(
                f"{name}-on-join",
                association_name=cluster.apply(lambda c: f"{c}-prefetch-images"),
                name=DOCUMENT,
                targets=[aws.ssm.AssociationTargetArgs(key=targets_key, values=[cluster])],
                # State Manager applies an association to every instance that starts matching the
                # target (a joining node) right away, then again on this schedule.
                schedule_expression=args.schedule,
                apply_only_at_cron_interval=False,
                parameters={
                    "commands": join_pull_script(args.images),
                    "executionTimeout": str(EXECUTION_TIMEOUT_SECONDS),
                },
                max_concurrency="100%",  # each node pulls for itself; none waits for another
                max_errors="100%",       # one node failing must not stop the others
                compliance_severity="MEDIUM",
                tags=args.tags,
                opts=child,
            )

        self.register_outputs({
            "ruleArn": self.rule.arn if self.rule else None,
            "associationId": self.association.association_id if self.association else None,
        })
