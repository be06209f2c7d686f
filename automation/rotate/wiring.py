"""The real world for ``rotate``/``rollback``: stack seam, bake over boto3, the rollout over AWS + Kubernetes,
the intent and the model volumes in the cluster, the stack file into git.

Kept apart from the pipeline so the pipeline stays testable with fakes. Every
AWS client is made in the stack's region (``aws:region``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from automation.gate import GateResult
from automation.stack import PROJECT_DIR, StackSeam

from .pipeline import BadInput, RotationSeams
from .state import RotationIntent


def find_ami_for_model(ec2: Any, model_version: str, family: str) -> Optional[str]:
    """The newest available AMI baked for this model *and family* (``kiln:ami-family``)."""
    from automation.bake.recipe import TAG_FAMILY, TAG_MODEL_VERSION

    images = ec2.describe_images(Owners=["self"], Filters=[
        {"Name": f"tag:{TAG_MODEL_VERSION}", "Values": [model_version]},
        {"Name": f"tag:{TAG_FAMILY}", "Values": [family]},
        {"Name": "state", "Values": ["available"]}])["Images"]
    images.sort(key=lambda i: i.get("CreationDate", ""), reverse=True)
    return images[0]["ImageId"] if images else None


def kube_api_client(outputs: Mapping[str, Any]) -> Any:
    """An official-client ApiClient from the stack's ``kubeconfig`` output."""
    import yaml
    from kubernetes import config as kube_config

    kubeconfig = outputs.get("kubeconfig")
    if not kubeconfig:
        raise BadInput("the stack has no kubeconfig output")
    doc = yaml.safe_load(kubeconfig) if isinstance(kubeconfig, str) else kubeconfig
    return kube_config.new_client_from_config_dict(doc)


@dataclass
class AwsChecks:
    """Bad input found before any change: the model URI, the target AMIs and their volume sizes."""

    session: Any
    cfg: Any    # infra.config.KilnConfig of the stack

    def model_uri(self, uri: str) -> None:
        from botocore.exceptions import ClientError

        from automation.bake.recipe import MANIFEST_NAME, BakeInputError, split_s3_uri

        try:
            bucket, prefix = split_s3_uri(uri)
        except BakeInputError as e:
            raise BadInput(str(e)) from None
        model_bucket = getattr(self.cfg, "model_bucket", None)
        if model_bucket and bucket != model_bucket:
            # The builder's profile (stack output builderInstanceProfile) may read only kiln:modelBucket.
            raise BadInput(f"--model-uri {uri}: bucket {bucket} is not kiln:modelBucket ({model_bucket}), the only "
                           "bucket the bake builder may read") from None
        # One GetObject of the manifest's first byte: the only S3 permission the bake has (s3:GetObject on
        # */MANIFEST.sha256), and its error code tells a missing bucket from a missing manifest.
        try:
            self.session.client("s3").get_object(Bucket=bucket, Key=prefix + MANIFEST_NAME, Range="bytes=0-0")
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code == "NoSuchBucket":
                raise BadInput(f"--model-uri {uri}: bucket {bucket} does not exist in this account's view") from None
            if code in ("NoSuchKey", "404"):
                raise BadInput(f"--model-uri {uri}: s3://{bucket}/{prefix}{MANIFEST_NAME} is missing; the model "
                               "needs a checksum manifest") from None
            raise BadInput(f"--model-uri {uri}: s3://{bucket}/{prefix}{MANIFEST_NAME} is not readable ({code})") from None

    def amis(self, amis: Mapping[str, str], flag: str = "--ami") -> None:
        """Each AMI exists and is available in the stack's region, and fits the volumes the program gives it."""
        from botocore.exceptions import ClientError

        ec2 = self.session.client("ec2")
        region = self.session.region_name
        wanted = sorted(set(amis.values()))
        if not wanted:
            return
        try:
            found = {i["ImageId"]: i for i in ec2.describe_images(ImageIds=wanted)["Images"]}
        except ClientError as e:
            raise BadInput(f"{flag}: {', '.join(wanted)} not found in {region} "
                           f"({e.response.get('Error', {}).get('Code')})") from None
        for family, ami in sorted(amis.items()):
            image = found.get(ami)
            if image is None:
                raise BadInput(f"{flag}: {ami} ({family}) does not exist in {region}")
            if image.get("State") != "available":
                raise BadInput(f"{flag}: {ami} ({family}) is {image.get('State')}, not available, in {region}")
        for g in self.cfg.node_groups:   # the AMI each group boots must fit the volumes the program gives it
            ami = amis.get(g.ami_family) or amis.get("standard")
            if ami in found:
                self._fits(ami, found[ami], g, flag)

    def _fits(self, ami: str, image: Mapping[str, Any], group: Any, flag: str) -> None:
        sizes = {m.get("DeviceName"): (m.get("Ebs") or {}).get("VolumeSize") for m in image.get("BlockDeviceMappings", [])}
        root = sizes.get(image.get("RootDeviceName"))
        if root and group.volume_size_gib < root:
            raise BadInput(f"{flag}: {ami} has a {root} GiB root volume, larger than kiln:nodeGroups "
                           f"({group.name}).volumeSizeGiB = {group.volume_size_gib}: its nodes could not launch")
        model = sizes.get(self.cfg.model_volume_device)
        if model and self.cfg.model_volume_size_gib < model:
            raise BadInput(f"{flag}: {ami} carries a {model} GiB model volume, larger than kiln:modelVolumeSizeGiB = "
                           f"{self.cfg.model_volume_size_gib}")


def make_bake(stack: StackSeam, cfg: Any, session: Any, progress: Callable[[str], None], *,
              wait_for_agent: bool = True, sweep_after_seconds: Optional[float] = None
              ) -> Callable[[RotationIntent, str, Optional[str]], str]:
    """Bake from the stack's config and outputs; without --model-uri, reuse the model's newest AMI of the family."""

    def bake_step(intent: RotationIntent, family: str, base_ami: Optional[str]) -> str:
        from automation.bake.baker import DEFAULT_BUILDER_MAX_AGE, AwsClients, bake
        from automation.bake.recipe import BakeInputError, BakeRequest
        from automation.bake.ssm import SsmRunner

        clients = AwsClients.create(session=session)
        if not intent.model_uri:
            ami = find_ami_for_model(clients.ec2, intent.model_version, family)
            if ami is None:
                raise BadInput(f"--model-uri is required: no {family} AMI for model {intent.model_version} exists yet "
                               "(AMIs baked before kiln tagged kiln:ami-family are not used)")
            progress(f"reusing {ami} ({family}, model {intent.model_version})")
            return ami
        outputs = stack.outputs()
        subnets = outputs.get("privateSubnetIds") or list(cfg.private_subnet_ids)
        profile = outputs.get("builderInstanceProfile")
        if not subnets:
            raise BadInput("the stack outputs name no private subnet (privateSubnetIds) for the builder")
        if not profile:
            raise BadInput("the stack has no output builderInstanceProfile (the builder's instance profile, with read "
                           "access to the model bucket only): deploy the program version that exports it "
                           "(kiln:modelBucket) before rotating with --model-uri")
        try:
            request = BakeRequest(
                model_version=intent.model_version, model_uri=intent.model_uri, subnet_id=subnets[0],
                instance_profile=profile, kubernetes_version=cfg.kubernetes_version, ami_family=family,
                base_ami=base_ami, prefetch_images=cfg.prefetch_images, model_path=cfg.model_path,
                model_device=cfg.model_volume_device, model_volume_size_gib=cfg.model_volume_size_gib)
        except BakeInputError as e:
            raise BadInput(str(e)) from None
        runner = SsmRunner(clients.ssm, wait_for_agent=wait_for_agent)
        try:
            return bake(request, clients, runner=runner, progress=progress,
                        sweep_after_seconds=sweep_after_seconds or DEFAULT_BUILDER_MAX_AGE).ami_id
        except BakeInputError as e:
            raise BadInput(str(e)) from None

    return bake_step


def make_resolve_base(session: Any, cfg: Any) -> Callable[[RotationIntent, str], Optional[str]]:
    """The EKS-optimized base AMI for a family, read once per rotation (the intent records it)."""

    def resolve(intent: RotationIntent, family: str) -> Optional[str]:
        from automation.bake.baker import AwsClients, resolve_base_ami
        from automation.bake.recipe import BakeInputError, BakeRequest

        if not intent.model_uri:
            return None
        request = BakeRequest(model_version=intent.model_version, model_uri=intent.model_uri,
                              subnet_id="subnet-00000000", instance_profile="-",
                              kubernetes_version=cfg.kubernetes_version, ami_family=family)
        try:
            return resolve_base_ami(AwsClients.create(session=session), request)
        except BakeInputError as e:
            raise BadInput(str(e)) from None

    return resolve


def make_replace(on_event: Callable[[dict], None], options: dict[str, Any], region: Optional[str]
                 ) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The drain-aware replacement over the real AWS and Kubernetes adapters."""

    def replace_step(outputs: dict[str, Any]) -> dict[str, Any]:
        from contextlib import nullcontext

        from automation.rollout.aws import AwsCloud
        from automation.rollout.clock import SystemClock
        from automation.rollout.kube import KubeCluster
        from automation.rollout.runner import RolloutOptions, run_rollout

        cluster_name = outputs.get("clusterName")
        if not cluster_name:
            raise BadInput("the stack has no clusterName output")
        # A live display (rich) is shown only while the replacement runs.
        live = on_event if hasattr(on_event, "__enter__") else nullcontext()
        with live:
            report = run_rollout(AwsCloud(region=region), KubeCluster(kube_api_client(outputs)), SystemClock(),
                                 RolloutOptions(cluster_name=cluster_name, **options), on_event=on_event)
        return report.to_dict()

    return replace_step


def make_predict(deadline_seconds: float, strategy: str, job_owner_kinds: Optional[frozenset[str]] = None,
                 region: Optional[str] = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """--dry-run: the simulator over a snapshot of the live fleet, read through the real adapters.

    The groups named in the stack outputs, and the Job pods on their nodes, as
    ``automation.rotate.predict`` explains (remaining run times are assumed).
    """

    def predict_step(outputs: dict[str, Any]) -> dict[str, Any]:
        from automation.rollout.aws import AwsCloud
        from automation.rollout.kube import KubeCluster

        from .predict import predict

        cluster_name = outputs.get("clusterName")
        if not cluster_name:
            raise BadInput("the stack has no clusterName output")
        asg_names = [g["asgName"] for groups in (outputs.get("nodeGroups") or {}).values() for g in groups]
        return predict(AwsCloud(region=region), KubeCluster(kube_api_client(outputs)), cluster_name,
                       deadline_seconds=deadline_seconds, strategy=strategy, job_owner_kinds=job_owner_kinds,
                       asg_names=asg_names or None)

    return predict_step


def confirm_on_terminal(result: GateResult) -> bool:
    answer = input("apply these changes and replace the nodes? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def needs_terminal(yes: bool, dry_run: bool) -> None:
    """Confirmation is asked before `up`; without a terminal, say so before anything changes."""
    if not yes and not dry_run and not sys.stdin.isatty():
        raise BadInput("--yes is required when stdin is not a terminal (nothing was changed)")


@dataclass
class RealWorld:
    world: RotationSeams
    store: Any
    stack: StackSeam


def real_world(stack_name: str, *, yes: bool, log: Callable[[str], None], rollout_event: Callable[[dict], None],
               rollout_options: dict[str, Any], project_dir: Path = PROJECT_DIR, state_dir: Optional[Path] = None,
               git_commit: bool = False, git_push: Optional[str] = None, update_plans: bool = True,
               stack: Optional[StackSeam] = None) -> RealWorld:
    import boto3
    from pulumi.automation import StackNotFoundError

    from automation.stack import ConfigReadError, kiln_config, open_stack, stack_region
    from infra.config import ConfigError

    from .persist import GitPersist, PersistError
    from .state import ClusterIntentStore, FileIntentStore
    from .volumes import ModelVolumes

    if stack is None:
        try:
            stack = open_stack(stack_name, project_dir, on_output=log)
        except StackNotFoundError:
            raise BadInput(f"--stack {stack_name!r}: no such Pulumi stack for the project in {project_dir}") from None
    if getattr(stack, "notice", None):
        log(stack.notice)
    if not update_plans and stack.supports_plans:
        stack.supports_plans = False
        log("--no-update-plan: each up runs right after its gated preview, but is not bound to it by a plan")
    if stack.kind == "stand-in" and not stack.stack_file.exists():
        raise BadInput(f"--stack {stack_name!r}: {stack.stack_file} does not exist (the stand-in keeps the stack's "
                       "config there)")
    config = stack.all_config()          # ConfigReadError: the CLI stops, naming it
    try:
        cfg = kiln_config(config)
    except ConfigError as e:
        raise BadInput(f"--stack {stack_name}: " + "; ".join(e.problems)) from None
    region = stack_region(config)
    if not region:
        raise BadInput(f"--stack {stack_name}: aws:region is not set and no AWS region is configured")
    session = getattr(stack, "session", None) or boto3.Session(region_name=region)
    outputs = stack.outputs()
    if outputs.get("kubeconfig"):
        api = kube_api_client(outputs)
        store: Any = ClusterIntentStore(api)
        volumes = ModelVolumes(api, namespace=cfg.jobs_namespace, model_path=cfg.model_path)
    else:
        if stack.kind != "stand-in":
            raise BadInput(f"--stack {stack_name}: the stack has no kubeconfig output; deploy it first")
        store, volumes = FileIntentStore(state_dir or project_dir / ".kiln" / "rotations"), None
        log(f"stand-in: the rotation's intent is kept in {store.where}")
    persist = None
    if git_commit or git_push:
        remote, branch = (git_push.split("/", 1) + [None])[:2] if git_push else (None, None)
        persist = GitPersist(project_dir, remote=remote, branch=branch, log=log)
        try:   # found at the end, after the whole rotation, it would leave a rotation that cannot finish
            persist.check(stack.stack_file)
        except PersistError as e:
            raise BadInput(f"{'--git-push ' + git_push if git_push else '--git-commit'}: {e}") from None
    checks = AwsChecks(session, cfg)

    def validate(intent: RotationIntent) -> None:
        if intent.model_uri:
            checks.model_uri(intent.model_uri)
        if intent.kind == "rollback":
            from automation.stack import desired_amis

            checks.amis(desired_amis(intent.target_ami), "--ami")
        if not outputs.get("kubeconfig"):
            # Found after the bake and the `up`, this would apply the rotation and then restore it.
            raise BadInput(f"--stack {stack_name}: the stack has no kubeconfig output, so there is no cluster to "
                           "replace the nodes in (or to predict a dry run for)"
                           + ("; the stand-in has none: `python -m automation demo` runs a whole rotation on moto "
                              "with a simulated cluster" if stack.kind == "stand-in" else ""))

    def check_targets(amis: Mapping[str, str]) -> None:
        checks.amis(amis, "target AMI")

    world = RotationSeams(
        stack=stack, bake=make_bake(stack, cfg, session, log), resolve_base=make_resolve_base(session, cfg),
        replace=make_replace(rollout_event, rollout_options, region),
        predict=make_predict(rollout_options.get("deadline_seconds", 7200), rollout_options.get("strategy", "default"),
                             rollout_options.get("job_owner_kinds"), region),
        validate=validate, check_amis=check_targets, volumes=volumes, persist=persist,
        confirm=(lambda result: True) if yes else confirm_on_terminal, log=log, jobs_namespace=cfg.jobs_namespace)
    _ = ConfigReadError   # the caller reports it
    return RealWorld(world, store, stack)
