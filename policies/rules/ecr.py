"""ECR: bounded storage (lifecycle), immutable tags, scan on push, KMS encryption.

A repository without a lifecycle policy quietly brings the storage bill back
(50 images of 32 GB cost $160 a month), so the lifecycle rule is mandatory and
its threshold, ``maxImages``, is part of the pack's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

from infra.registry import lifecycle_rule_problems
from policies.rules._props import MANDATORY, as_list, as_number, config, get, json_document, plain, schema

REPOSITORY = "aws:ecr/repository:Repository"
LIFECYCLE_POLICY = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
DEFAULT_MAX_IMAGES = 20


def lifecycle_problems(document: Any, max_images: int) -> list[str]:
    """Everything wrong with an ECR lifecycle policy document, given the image cap.

    ECR's own rules come from the registry's validator (``infra.registry``, the
    same check the program runs before declaring the policy); kiln's rule on top:
    some expiring ``imageCountMoreThan`` rule must cover every tagged image
    (``tagStatus: any``, or ``tagged`` with ``tagPatternList: ["*"]``) and keep
    at most ``max_images`` of them.
    """
    doc = json_document(document)
    doc = plain(doc) if doc is not None else document
    problems = lifecycle_rule_problems(doc)
    if not (isinstance(doc, Mapping) and isinstance(doc.get("rules"), list) and doc["rules"]):
        return problems  # not a policy at all: the validator said why
    bounded: list[int] = []
    for rule in doc["rules"]:
        selection = get(rule, "selection", default={})
        status = get(selection, "tagStatus")
        covers_all_tagged = status == "any" or (status == "tagged" and "*" in as_list(get(selection, "tagPatternList")))
        count = as_number(get(selection, "countNumber"))
        if (covers_all_tagged and get(selection, "countType") == "imageCountMoreThan" and count is not None
                and get(rule, "action", "type") == "expire"):
            bounded.append(int(count))
    if not bounded:
        problems.append(f"no rule caps the number of tagged images (need an imageCountMoreThan rule over "
                        f"all tagged images with countNumber <= {max_images})")
    elif min(bounded) > max_images:
        problems.append(f"keeps up to {min(bounded)} tagged images; at most {max_images} allowed")
    return problems


def validate_lifecycle(args, report_violation) -> None:
    if args.resource_type != LIFECYCLE_POLICY:
        return
    max_images = int(config(args, "maxImages", DEFAULT_MAX_IMAGES))
    for problem in lifecycle_problems(get(args.props, "policy"), max_images):
        report_violation(problem, None)


def validate_repositories_have_lifecycle(args, report_violation) -> None:
    """Every repository is the target of some lifecycle policy (by name or dependency)."""
    repos = [r for r in args.resources if r.resource_type == REPOSITORY]
    policies = [r for r in args.resources if r.resource_type == LIFECYCLE_POLICY]
    covered_names = {get(p.props, "repository") for p in policies}
    covered_urns = {d.urn for p in policies for d in p.dependencies}
    covered_urns |= {p.parent.urn for p in policies if p.parent is not None}
    for repo in repos:
        name = get(repo.props, "name")
        if repo.urn not in covered_urns and (name is None or name not in covered_names):
            report_violation(f"repository {name or repo.name!r} has no lifecycle policy", repo.urn)


def validate_immutable_tags(args, report_violation) -> None:
    if args.resource_type != REPOSITORY:
        return
    mutability = get(args.props, "imageTagMutability", default="MUTABLE")
    if mutability != "IMMUTABLE":
        report_violation(f"imageTagMutability is {mutability}; set IMMUTABLE so a tag always names one image", None)


def validate_scan_on_push(args, report_violation) -> None:
    if args.resource_type != REPOSITORY:
        return
    if get(args.props, "imageScanningConfiguration", "scanOnPush") is not True:
        report_violation("imageScanningConfiguration.scanOnPush must be true", None)


def validate_kms(args, report_violation) -> None:
    if args.resource_type != REPOSITORY:
        return
    configs = as_list(get(args.props, "encryptionConfigurations"))
    if not any(get(c, "encryptionType") == "KMS" for c in configs):
        report_violation("encryptionConfigurations must use encryptionType KMS", None)


POLICIES = [
    ResourceValidationPolicy(
        name="ecr-lifecycle-policy",
        description="ECR lifecycle policies are valid and keep at most maxImages tagged images.",
        validate=validate_lifecycle,
        enforcement_level=MANDATORY,
        config_schema=schema(maxImages={"type": "integer", "minimum": 1, "default": DEFAULT_MAX_IMAGES}),
    ),
    StackValidationPolicy(
        name="ecr-repository-has-lifecycle-policy",
        description="Every ECR repository has a lifecycle policy.",
        validate=validate_repositories_have_lifecycle,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="ecr-immutable-tags",
        description="ECR repositories have immutable tags.",
        validate=validate_immutable_tags,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="ecr-scan-on-push",
        description="ECR repositories scan images on push.",
        validate=validate_scan_on_push,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="ecr-kms-encryption",
        description="ECR repositories are encrypted with KMS.",
        validate=validate_kms,
        enforcement_level=MANDATORY,
    ),
]
