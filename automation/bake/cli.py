"""``python -m automation bake``: bake a node AMI (or reuse one with the same recipe)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from automation.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

from .baker import DEFAULT_BUILDER_MAX_AGE, IMAGE_EXPANSION, ROOT_HEADROOM_GIB, UNKNOWN_IMAGE_GIB, AwsClients, bake
from .recipe import BakeInputError
from infra.config import default as config_default
from infra.labels import BAKE_LOG_GROUP
MIN_SWEEP_AFTER = 3600   # seconds; no bake is shorter than its own sweep bound


def configure(parser: argparse.ArgumentParser) -> None:
    from automation.rollout.cli import parse_duration

    parser.description = (
        "Bake the model and prefetch images into an EKS-optimized AL2023 node AMI. A builder instance in a private "
        "subnet is driven through SSM Run Command (no SSH, no inbound rules) and terminated on every path, SIGTERM "
        "included; builders an earlier run left behind are swept first. An AMI with the same recipe hash (every "
        "input) is reused, not rebuilt. With --stack the region, Kubernetes version, images, subnet and builder "
        "instance profile come from the stack. Exit codes: 0 baked or reused, 1 the bake failed or was "
        "interrupted, 2 bad input.")
    parser.add_argument("--model-version", required=True, help="model version, e.g. v6 (tag kiln:model-version)")
    parser.add_argument("--model-uri", required=True,
                        help="s3://bucket/prefix/ holding the model files and MANIFEST.sha256 (sha256sum format)")
    parser.add_argument("--base-ami", help="base AMI (default: the EKS-optimized AL2023 AMI from AWS's public SSM parameter)")
    parser.add_argument("--subnet-id", help="private subnet for the builder (default with --stack: the stack's first private subnet)")
    parser.add_argument("--instance-profile",
                        help="builder instance profile: SSM core and read access to the model bucket (default with "
                             "--stack: the stack output builderInstanceProfile)")
    parser.add_argument("--region", help="AWS region (default: the stack's aws:region with --stack, else the standard "
                                         "AWS configuration)")
    parser.add_argument("--stack", help="stack (plain or org/project/stack) whose config and outputs fill region, "
                                        "Kubernetes version, images, volume layout, subnet and builder profile")
    parser.add_argument("--kubernetes-version", help="Kubernetes version of the base AMI (default from the stack, else 1.33)")
    parser.add_argument("--ami-family", choices=("standard", "nvidia"), default="standard",
                        help="EKS AMI variant: standard or nvidia (GPU) (default standard); tag kiln:ami-family")
    parser.add_argument("--prefetch-image", action="append", default=None, metavar="IMAGE",
                        help="image to pre-pull (repeatable; default: kiln:prefetchImages of the stack)")
    parser.add_argument("--instance-type", default="m6i.2xlarge", help="builder instance type (default m6i.2xlarge)")
    parser.add_argument("--root-volume-gib", type=int, metavar="GIB",
                        help="builder (and AMI) root volume size (default: the base AMI's root + "
                             f"{IMAGE_EXPANSION}x each image's compressed size from ECR, {UNKNOWN_IMAGE_GIB} GiB per "
                             f"image of unknown size, + {ROOT_HEADROOM_GIB} GiB)")
    parser.add_argument("--kms-key", metavar="KEY",
                        help="customer-managed KMS key (id, ARN or alias) for the builder's volumes and so the "
                             "AMI's snapshots; required with --share-with")
    parser.add_argument("--share-with", action="append", default=[], metavar="ACCOUNT",
                        help="share the AMI and its snapshots with this account and grant it the --kms-key "
                             "(repeatable)")
    parser.add_argument("--copy-to-region", action="append", default=[], metavar="REGION",
                        help="copy the AMI to this region (repeatable)")
    parser.add_argument("--log-group", default=BAKE_LOG_GROUP, metavar="GROUP",
                        help=f"CloudWatch Logs group for the builder's command output: {BAKE_LOG_GROUP} (default) or "
                             f"a group below it, e.g. {BAKE_LOG_GROUP}/prod; the builder's role writes only there")
    parser.add_argument("--keep", type=int, metavar="N",
                        help="afterwards, deregister kiln AMIs beyond the newest N (and their snapshots), never one "
                             "in use by a launch-template version or instance, a rollback target (the image each "
                             "launch template booted before its current one came in), one shared with another account, "
                             "or one younger than --sweep-after (a running rotation's target)")
    parser.add_argument("--sweep-after", type=parse_duration, default=DEFAULT_BUILDER_MAX_AGE, metavar="DURATION",
                        help="terminate builders (and their security groups) left by earlier runs once they are "
                             "this old (default 6h; at least 1h, since a younger one may be another bake still "
                             "running; 90m, 2h, 21600)")
    parser.add_argument("--no-agent-wait", action="store_true",
                        help="do not wait for the SSM agent to register (for emulators without DescribeInstanceInformation)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _stack_inputs(stack_name: str, project_dir: Path) -> dict[str, Any]:
    """Config and outputs of the stack that a bake needs; errors name --stack."""
    from pulumi.automation import StackNotFoundError

    from automation.stack import ConfigReadError, kiln_config, open_stack, stack_file, stack_region, valid_stack_name
    from infra.config import ConfigError

    if not valid_stack_name(stack_name):
        raise BakeInputError(f"--stack ({stack_name!r}) is not a stack name")
    try:
        stack = open_stack(stack_name, project_dir)
        config = stack.all_config()
        outputs = stack.outputs()
    except StackNotFoundError:
        raise BakeInputError(f"--stack {stack_name}: no such Pulumi stack for the project in {project_dir}") from None
    except FileNotFoundError:
        raise BakeInputError(f"--stack {stack_name}: {stack_file(project_dir, stack_name)} does not exist") from None
    except ConfigReadError as e:
        raise BakeInputError(f"--stack {stack_name}: {e}") from None
    try:
        cfg = kiln_config(config)
    except ConfigError as e:
        raise BakeInputError(f"--stack {stack_name}: " + "; ".join(e.problems)) from None
    subnets = outputs.get("privateSubnetIds") or list(cfg.private_subnet_ids)
    return {"kubernetes_version": cfg.kubernetes_version, "prefetch_images": cfg.prefetch_images,
            "model_path": cfg.model_path, "model_device": cfg.model_volume_device,
            "model_volume_size_gib": cfg.model_volume_size_gib, "region": stack_region(config),
            "subnet_id": subnets[0] if subnets else None,
            "instance_profile": outputs.get("builderInstanceProfile"), "stack": stack_name,
            "model_bucket": cfg.model_bucket}


def request_from_args(args: argparse.Namespace, project_dir: Optional[Path] = None) -> tuple[Any, Optional[str]]:
    """The bake request and its region."""
    from .recipe import BakeRequest

    fill: dict[str, Any] = {}
    if args.stack:
        fill = _stack_inputs(args.stack, project_dir or Path.cwd())
        if not args.instance_profile and not fill.get("instance_profile"):
            raise BakeInputError(
                f"--stack {args.stack}: the stack has no output builderInstanceProfile (the builder's instance "
                "profile, with read access to the model bucket only); deploy the program version that exports it "
                "(kiln:modelBucket), or pass --instance-profile")
        model_bucket = fill.get("model_bucket")
        if model_bucket and not args.instance_profile:
            from .recipe import split_s3_uri

            bucket = split_s3_uri(args.model_uri)[0]
            if bucket != model_bucket:
                raise BakeInputError(
                    f"--model-uri {args.model_uri}: bucket {bucket} is not the stack's kiln:modelBucket "
                    f"({model_bucket}), the only bucket its builder profile may read (or pass --instance-profile)")
        if args.region and fill.get("region") and args.region != fill["region"]:
            raise BakeInputError(f"--region {args.region} is not the stack's aws:region ({fill['region']})")
    region = args.region or fill.get("region")
    request = BakeRequest(
        model_version=args.model_version, model_uri=args.model_uri,
        subnet_id=args.subnet_id or fill.get("subnet_id") or "",
        instance_profile=args.instance_profile or fill.get("instance_profile") or "",
        kubernetes_version=args.kubernetes_version or fill.get("kubernetes_version") or "1.33",
        base_ami=args.base_ami, ami_family=args.ami_family,
        prefetch_images=tuple(args.prefetch_image if args.prefetch_image is not None else fill.get("prefetch_images", ())),
        model_path=fill.get("model_path", config_default("modelPath")),
        model_device=fill.get("model_device", config_default("modelVolumeDevice")),
        model_volume_size_gib=fill.get("model_volume_size_gib", config_default("modelVolumeSizeGiB")), instance_type=args.instance_type,
        share_with_accounts=tuple(args.share_with), copy_to_regions=tuple(args.copy_to_region),
        log_group=args.log_group, root_volume_gib=args.root_volume_gib, kms_key_id=args.kms_key,
    )
    return request, region


def say(line: str) -> None:
    """One plain line on stderr: no markup interpretation, no wrapping."""
    print(line, file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    from automation.signals import Interrupted, sigterm_raises

    from .keep import prune
    from .ssm import CommandFailed, SsmRunner

    try:
        request, region = request_from_args(args)
        if args.keep is not None and args.keep < 1:
            raise BakeInputError(f"--keep ({args.keep}) must be >= 1")
        if args.sweep_after < MIN_SWEEP_AFTER:
            # The sweep tells a dead run's builder from a live bake's only by its age: below this bound it would
            # terminate another bake still copying its model or waiting for its image.
            raise BakeInputError(f"--sweep-after ({args.sweep_after:.0f}s) must be at least {MIN_SWEEP_AFTER // 3600:.0f}h: "
                                 "a younger builder may be another bake still running")
    except BakeInputError as e:
        say(f"bad input: {_one_line(e)}")
        return EXIT_BAD_INPUT
    clients = AwsClients.create(region=region)
    runner = SsmRunner(clients.ssm, log_group=request.log_group, wait_for_agent=not args.no_agent_wait)
    try:
        with sigterm_raises():
            result = bake(request, clients, runner=runner, progress=lambda m: say(f"bake: {m}"),
                          sweep_after_seconds=args.sweep_after)
            deleted = prune(clients.ec2, clients.autoscaling, args.keep, protect=[result.ami_id],
                            min_age_seconds=args.sweep_after) if args.keep else []
    except Interrupted:
        say("bake interrupted (SIGTERM): the builder was told to terminate; its security group, if still attached, "
            "is swept by the next bake. Rerun to bake again (a finished AMI with the same recipe is reused)")
        return EXIT_FAILED
    except BakeInputError as e:
        say(f"bad input: {_one_line(e)}")
        return EXIT_BAD_INPUT
    except CommandFailed as e:
        say("bake failed (builder terminated):")
        for line in str(e).splitlines():
            say(f"  {line}")
        return EXIT_FAILED
    except Exception as e:  # boto errors, waiter timeouts, sharing refused: report, never a traceback
        say(f"bake failed: {_one_line(e)}")
        return EXIT_FAILED
    out = result.to_dict() | {"deregistered": deleted}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        verb = "reused" if result.reused else "baked"
        print(f"{verb} {result.ami_id} (model {result.model_version}, {result.ami_family}, recipe {result.recipe}, "
              f"root {result.root_volume_gib} GiB)")
        for ami in deleted:
            print(f"deregistered {ami}")
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, BakeInputError) else f"{type(exc).__name__}: {text}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(argparse.ArgumentParser().parse_args()))
