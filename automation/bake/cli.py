"""``python -m automation bake``: bake a node AMI (or reuse one with the same recipe)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Bake the model and prefetch images into an EKS-optimized AL2023 node AMI. A builder instance in a private "
        "subnet is driven through SSM Run Command (no SSH, no inbound rules) and terminated on every path. An AMI "
        "with the same recipe hash (every input) is reused, not rebuilt. Honours AWS profiles, AWS_REGION and "
        "AWS_ENDPOINT_URL. Exit codes: 0 baked or reused, 1 the bake failed, 2 bad input.")
    parser.add_argument("--model-version", required=True, help="model version, e.g. v6 (tag kiln:model-version)")
    parser.add_argument("--model-uri", required=True,
                        help="s3://bucket/prefix/ holding the model files and MANIFEST.sha256 (sha256sum format)")
    parser.add_argument("--base-ami", help="base AMI (default: the EKS-optimized AL2023 AMI from AWS's public SSM parameter)")
    parser.add_argument("--subnet-id", help="private subnet for the builder (default with --stack: the stack's first private subnet)")
    parser.add_argument("--instance-profile", help="builder instance profile with SSM and S3 read (default with --stack: the node profile)")
    parser.add_argument("--region", help="AWS region (default: the standard AWS configuration)")
    parser.add_argument("--stack", help="stack whose config and outputs fill Kubernetes version, images, subnet and profile")
    parser.add_argument("--kubernetes-version", help="Kubernetes version of the base AMI (default from the stack, else 1.33)")
    parser.add_argument("--ami-family", choices=("standard", "nvidia"), default="standard",
                        help="EKS AMI variant: standard or nvidia (GPU) (default standard)")
    parser.add_argument("--prefetch-image", action="append", default=None, metavar="IMAGE",
                        help="image to pre-pull (repeatable; default: kiln:prefetchImages of the stack)")
    parser.add_argument("--instance-type", default="m6i.2xlarge", help="builder instance type (default m6i.2xlarge)")
    parser.add_argument("--share-with", action="append", default=[], metavar="ACCOUNT",
                        help="share the AMI and its snapshots with this account (repeatable)")
    parser.add_argument("--copy-to-region", action="append", default=[], metavar="REGION",
                        help="copy the AMI to this region (repeatable)")
    parser.add_argument("--log-group", help="CloudWatch Logs group for the builder's command output")
    parser.add_argument("--keep", type=int, metavar="N",
                        help="afterwards, deregister kiln AMIs beyond the newest N (and their snapshots), "
                             "never one a launch-template version in use references")
    parser.add_argument("--no-agent-wait", action="store_true",
                        help="do not wait for the SSM agent to register (for emulators without DescribeInstanceInformation)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _stack_inputs(stack_name: str, project_dir: Path) -> dict[str, Any]:
    """Config (Pulumi.<stack>.yaml) and outputs of the stack that a bake needs."""
    from infra.config import load_stack_file
    from automation.stack import open_stack

    cfg = load_stack_file(str(project_dir / f"Pulumi.{stack_name}.yaml"))
    outputs = open_stack(stack_name, project_dir).outputs()
    subnets = outputs.get("privateSubnetIds") or list(cfg.private_subnet_ids)
    profile = outputs.get("nodeInstanceProfile") or outputs.get("nodeInstanceProfileName")
    return {"kubernetes_version": cfg.kubernetes_version, "prefetch_images": cfg.prefetch_images,
            "model_path": cfg.model_path, "model_device": cfg.model_volume_device,
            "model_volume_size_gib": cfg.model_volume_size_gib,
            "subnet_id": subnets[0] if subnets else None, "instance_profile": profile}


def request_from_args(args: argparse.Namespace, project_dir: Optional[Path] = None):
    from .recipe import BakeRequest

    fill: dict[str, Any] = {}
    if args.stack:
        fill = _stack_inputs(args.stack, project_dir or Path.cwd())
    return BakeRequest(
        model_version=args.model_version, model_uri=args.model_uri,
        subnet_id=args.subnet_id or fill.get("subnet_id") or "",
        instance_profile=args.instance_profile or fill.get("instance_profile") or "",
        kubernetes_version=args.kubernetes_version or fill.get("kubernetes_version") or "1.33",
        base_ami=args.base_ami, ami_family=args.ami_family,
        prefetch_images=tuple(args.prefetch_image if args.prefetch_image is not None else fill.get("prefetch_images", ())),
        model_path=fill.get("model_path", "/opt/models"), model_device=fill.get("model_device", "/dev/xvdb"),
        model_volume_size_gib=fill.get("model_volume_size_gib", 100), instance_type=args.instance_type,
        share_with_accounts=tuple(args.share_with), copy_to_regions=tuple(args.copy_to_region),
        log_group=args.log_group,
    )


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from infra.config import ConfigError
    from .baker import AwsClients, bake
    from .keep import prune
    from .recipe import BakeInputError
    from .ssm import CommandFailed, SsmRunner

    err = Console(stderr=True, log_path=False)
    try:
        request = request_from_args(args)
        if args.keep is not None and args.keep < 1:
            raise BakeInputError(f"--keep ({args.keep}) must be >= 1")
    except (BakeInputError, ConfigError, FileNotFoundError) as e:
        err.print(f"[red]bad input:[/red] {e}")
        return EXIT_BAD_INPUT
    clients = AwsClients.create(region=args.region)
    runner = SsmRunner(clients.ssm, log_group=request.log_group, wait_for_agent=not args.no_agent_wait)
    try:
        with err.status("baking…") as status:
            result = bake(request, clients, runner=runner, progress=lambda m: (status.update(m), err.log(m)))
        deleted = prune(clients.ec2, clients.autoscaling, args.keep, protect=[result.ami_id]) if args.keep else []
    except BakeInputError as e:
        err.print(f"[red]bad input:[/red] {e}")
        return EXIT_BAD_INPUT
    except CommandFailed as e:
        err.print(f"[red]bake failed[/red] (builder terminated)\n{e}")
        return EXIT_FAILED
    except Exception as e:  # boto errors, waiter timeouts: report, never a traceback
        err.print(f"[red]bake failed:[/red] {type(e).__name__}: {e}")
        return EXIT_FAILED
    out = result.to_dict() | {"deregistered": deleted}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        verb = "reused" if result.reused else "baked"
        print(f"{verb} {result.ami_id} (model {result.model_version}, recipe {result.recipe})")
        for ami in deleted:
            print(f"deregistered {ami}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(argparse.ArgumentParser().parse_args()))
