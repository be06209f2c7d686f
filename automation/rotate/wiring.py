"""The real world for ``rotate``/``rollback``: stack seam, bake over boto3, the rollout over AWS + Kubernetes.

Kept apart from the pipeline so the pipeline stays testable with fakes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional

from automation.gate import GateResult
from automation.stack import PROJECT_DIR, StackSeam

from .pipeline import BadInput, RotationIntent, World


def find_ami_for_model(ec2: Any, model_version: str, family: str) -> Optional[str]:
    from automation.bake.recipe import TAG_MODEL_VERSION

    images = ec2.describe_images(Owners=["self"], Filters=[
        {"Name": f"tag:{TAG_MODEL_VERSION}", "Values": [model_version]},
        {"Name": "state", "Values": ["available"]}])["Images"]
    images.sort(key=lambda i: i.get("CreationDate", ""), reverse=True)
    return images[0]["ImageId"] if images else None


def make_bake(stack: StackSeam, project_dir: Path, progress: Callable[[str], None], *,
              wait_for_agent: bool = True, session: Any = None) -> Callable[[RotationIntent, str], str]:
    """Bake from the stack's config and outputs; without --model-uri, reuse the model's newest AMI."""

    def bake_step(intent: RotationIntent, family: str) -> str:
        from automation.bake.baker import AwsClients, bake
        from automation.bake.recipe import BakeRequest
        from automation.bake.ssm import SsmRunner
        from infra.config import load_stack_file

        clients = AwsClients.create(session=session)
        if not intent.model_uri:
            ami = find_ami_for_model(clients.ec2, intent.model_version, family)
            if ami is None:
                raise BadInput(f"--model-uri is required: no AMI for model {intent.model_version} exists yet")
            progress(f"reusing {ami} (model {intent.model_version})")
            return ami
        cfg = load_stack_file(str(project_dir / f"Pulumi.{intent.stack}.yaml"))
        outputs = stack.outputs()
        subnets = outputs.get("privateSubnetIds") or list(cfg.private_subnet_ids)
        profile = outputs.get("nodeInstanceProfile") or outputs.get("nodeInstanceProfileName")
        if not subnets or not profile:
            raise BadInput("the stack outputs name no private subnet (privateSubnetIds) or instance profile "
                           "(nodeInstanceProfile) for the builder")
        request = BakeRequest(
            model_version=intent.model_version, model_uri=intent.model_uri, subnet_id=subnets[0],
            instance_profile=profile, kubernetes_version=cfg.kubernetes_version, ami_family=family,
            prefetch_images=cfg.prefetch_images, model_path=cfg.model_path, model_device=cfg.model_volume_device,
            model_volume_size_gib=cfg.model_volume_size_gib)
        runner = SsmRunner(clients.ssm, wait_for_agent=wait_for_agent)
        return bake(request, clients, runner=runner, progress=progress).ami_id

    return bake_step


def make_replace(cluster_name_hint: Optional[str], on_event: Callable[[dict], None],
                 options: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The drain-aware replacement over the real AWS and Kubernetes adapters."""

    def replace_step(outputs: dict[str, Any]) -> dict[str, Any]:
        from automation.rollout.aws import AwsCloud
        from automation.rollout.clock import SystemClock
        from automation.rollout.runner import RolloutOptions, run_rollout

        cluster_name = outputs.get("clusterName") or cluster_name_hint
        from contextlib import nullcontext

        # A live display (rich) is shown only while the replacement runs.
        live = on_event if hasattr(on_event, "__enter__") else nullcontext()
        with live:
            report = run_rollout(AwsCloud(), _kube_cluster(outputs), SystemClock(),
                                 RolloutOptions(cluster_name=cluster_name, **options), on_event=on_event)
        return report.to_dict()

    return replace_step


def _kube_cluster(outputs: dict[str, Any]) -> Any:
    import yaml
    from kubernetes import config as kube_config

    from automation.rollout.kube import KubeCluster

    kubeconfig = outputs.get("kubeconfig")
    if not kubeconfig:
        raise BadInput("the stack has no kubeconfig output")
    doc = yaml.safe_load(kubeconfig) if isinstance(kubeconfig, str) else kubeconfig
    return KubeCluster(kube_config.new_client_from_config_dict(doc))


def make_predict(deadline_seconds: float, strategy: str,
                 job_owner_kinds: Optional[frozenset[str]] = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """--dry-run: the simulator over a snapshot of the live fleet, read through the real adapters.

    The groups named in the stack outputs, and the Job pods on their nodes, as
    ``automation.rotate.predict`` explains (remaining run times are assumed).
    """

    def predict_step(outputs: dict[str, Any]) -> dict[str, Any]:
        from automation.rollout.aws import AwsCloud

        from .predict import predict

        cluster_name = outputs.get("clusterName")
        if not cluster_name:
            raise BadInput("the stack has no clusterName output")
        asg_names = [g["asgName"] for groups in (outputs.get("nodeGroups") or {}).values() for g in groups]
        return predict(AwsCloud(), _kube_cluster(outputs), cluster_name, deadline_seconds=deadline_seconds,
                       strategy=strategy, job_owner_kinds=job_owner_kinds, asg_names=asg_names or None)

    return predict_step


def confirm_on_terminal(result: GateResult) -> bool:
    if not sys.stdin.isatty():
        raise BadInput("--yes is required when stdin is not a terminal")
    answer = input("apply these changes and replace the nodes? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def real_world(stack_name: str, *, yes: bool, log: Callable[[str], None], rollout_event: Callable[[dict], None],
               rollout_options: dict[str, Any], project_dir: Path = PROJECT_DIR) -> World:
    from pulumi.automation import StackNotFoundError

    from automation.stack import open_stack

    try:
        stack = open_stack(stack_name, project_dir, on_output=log)
    except StackNotFoundError:
        raise BadInput(f"--stack {stack_name!r}: no such Pulumi stack for the project in {project_dir}") from None
    if getattr(stack, "notice", None):
        log(stack.notice)
    stack_file = getattr(stack, "path", None)
    if stack.kind == "stand-in" and stack_file is not None and not stack_file.exists():
        raise BadInput(f"--stack {stack_name!r}: {stack_file} does not exist (the stand-in keeps the stack's config there)")
    return World(
        stack=stack, bake=make_bake(stack, project_dir, log),
        replace=make_replace(None, rollout_event, rollout_options),
        predict=make_predict(rollout_options.get("deadline_seconds", 7200), rollout_options.get("strategy", "default"),
                             rollout_options.get("job_owner_kinds")),
        confirm=(lambda result: True) if yes else confirm_on_terminal, log=log)
