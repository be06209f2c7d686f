"""ECR: bounded storage (lifecycle), immutable tags, scan on push, KMS encryption.

A repository without a lifecycle policy quietly brings the storage bill back
(50 images of 32 GB cost $160 a month), so the lifecycle rule is mandatory and
its threshold, ``maxImages``, is part of the pack's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy

from infra.registry import lifecycle_rule_problems
from policies.rules._props import (MANDATORY, Deferred, as_list, as_number, config, get, iter_mappings, json_document,
                                   plain, schema)

REPOSITORY = "aws:ecr/repository:Repository"
LIFECYCLE_POLICY = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
# ECR creates repositories on its own for pull-through cache rules and replication; what they get (lifecycle,
# tag mutability, encryption) comes from the repository creation template whose prefix matches.
CREATION_TEMPLATE = "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate"
PULL_THROUGH_CACHE_RULE = "aws:ecr/pullThroughCacheRule:PullThroughCacheRule"
REPLICATION = "aws:ecr/replicationConfiguration:ReplicationConfiguration"
DEFAULT_MAX_IMAGES = 20
UNREADABLE = ("is not one readable JSON document (a key given twice, or NaN/Infinity): which of its values ECR "
              "acts on cannot be checked")


def lifecycle_problems(document: Any, max_images: int) -> list[str]:
    """Everything wrong with an ECR lifecycle policy document, given the image cap.

    ECR's own rules come from the registry's validator (``infra.registry``, the
    same check the program runs before declaring the policy); kiln's rule on top:
    some expiring ``imageCountMoreThan`` rule must cover every tagged image
    (``tagStatus: any``, or ``tagged`` with ``tagPatternList: ["*"]``) and keep
    at most ``max_images`` of them.
    """
    doc = json_document(document)
    if doc is None and isinstance(document, str):
        # Text that is not one readable JSON document: invalid (the validator says where), or valid to a parser
        # that keeps the last of a key given twice, or with NaN/Infinity. Which one ECR acts on is not ours to guess.
        return lifecycle_rule_problems(document) or [UNREADABLE]
    doc = plain(doc) if doc is not None else document
    problems = lifecycle_rule_problems(doc)
    if not (isinstance(doc, Mapping) and isinstance(doc.get("rules"), list) and doc["rules"]):
        return problems  # not a policy at all: the validator said why
    # ECR evaluates rules by rulePriority, and an image that matches the tags of an earlier rule
    # cannot be expired by a later one: every earlier rule over tagged images must itself be an
    # image-count rule (their counts add up), or the images it keeps escape the cap.
    rules = sorted((r for r in doc["rules"] if isinstance(r, Mapping) and as_number(get(r, "rulePriority")) is not None),
                   key=lambda r: as_number(get(r, "rulePriority")))
    if not any(_covers_all_tagged(r) and _count(r) is not None for r in rules):
        problems.append(f"no rule caps the number of tagged images (need an imageCountMoreThan rule over "
                        f"all tagged images with countNumber <= {max_images})")
        return problems
    kept = 0
    for rule in rules:
        if get(rule, "selection", "tagStatus") not in ("tagged", "any"):
            continue
        if _count(rule) is None:
            problems.append(f"the rule with rulePriority {int(as_number(get(rule, 'rulePriority')))} selects tagged "
                            "images before the image-count cap, so the images it keeps escape the cap")
            return problems
        kept += _count(rule)
        if _covers_all_tagged(rule):
            break
    if kept > max_images:
        problems.append(f"keeps up to {kept} tagged images; at most {max_images} allowed")
    return problems


def _count(rule: Any) -> Optional[int]:
    """The number of images an expiring ``imageCountMoreThan`` rule keeps, else None."""
    selection = get(rule, "selection", default={})
    count = as_number(get(selection, "countNumber"))
    if get(selection, "countType") != "imageCountMoreThan" or count is None or get(rule, "action", "type") != "expire":
        return None
    return int(count)


def _covers_all_tagged(rule: Any) -> bool:
    selection = get(rule, "selection", default={})
    status = get(selection, "tagStatus")
    return status == "any" or (status == "tagged" and "*" in as_list(get(selection, "tagPatternList")))


def validate_lifecycle(args, report_violation) -> None:
    key = {LIFECYCLE_POLICY: "policy", CREATION_TEMPLATE: "lifecyclePolicy"}.get(args.resource_type)
    if key is None:
        return
    max_images = int(config(args, "maxImages", DEFAULT_MAX_IMAGES))
    document = get(args.props, key)
    if document is None:
        report_violation(f"{key} is not set: the repositories ECR creates from this template keep every image", None)
        return
    for problem in lifecycle_problems(document, max_images):
        report_violation(problem if key == "policy" else f"{key}: {problem}", None)


def _auto_created(resources, deferred) -> list[tuple[Any, str, str, str]]:
    """``(resource, where, applied-for, repository prefix)`` for repositories ECR creates on its own: a pull-through
    cache rule's (under its prefix) and replication's (under each filter's prefix, or every name)."""
    out = []

    def of(r) -> None:
        if r.resource_type == PULL_THROUGH_CACHE_RULE:
            out.append((r, "ecrRepositoryPrefix", "PULL_THROUGH_CACHE", str(get(r.props, "ecrRepositoryPrefix"))))
        elif r.resource_type == REPLICATION:
            for i, rule in enumerate(iter_mappings(get(r.props, "replicationConfiguration", "rules"))):
                filters = [f for f in iter_mappings(get(rule, "repositoryFilters"))
                           if get(f, "filterType") == "PREFIX_MATCH"]
                for prefix in [str(get(f, "filter")) for f in filters] or [""]:
                    out.append((r, f"replicationConfiguration.rules[{i}]", "REPLICATION", prefix))
    for r in resources:
        deferred.attempt(of, r)
    return out


def _template_matches(template_prefix: Any, prefix: str) -> bool:
    """ECR applies a template to the repositories whose names start with its prefix as a namespace (prefix ``prod``:
    ``prod/…``, not ``production/…``); ``ROOT`` is every repository."""
    if template_prefix == "ROOT":
        return True
    return isinstance(template_prefix, str) and bool(prefix) and (
        prefix == template_prefix or prefix.startswith(template_prefix.rstrip("/") + "/"))


def validate_repositories_have_lifecycle(args, report_violation) -> None:
    """Every repository is the target of a lifecycle policy: its ``repository`` is the repository's name.

    Only the name counts. A policy that merely depends on, or is parented to, a repository may
    target another one entirely (ECR keeps one lifecycle policy per repository, by name). Repositories
    that ECR creates itself (pull-through cache, replication) need a creation template, for that use and
    a matching prefix, that carries a lifecycle policy.
    """
    deferred = Deferred()
    repos = [r for r in args.resources if r.resource_type == REPOSITORY]
    covered = {deferred.attempt(get, p.props, "repository") for p in args.resources if p.resource_type == LIFECYCLE_POLICY}
    for repo in repos:
        name = deferred.attempt(get, repo.props, "name", default=UNSET)
        if name is UNSET:
            continue
        if name is None or name not in covered:
            report_violation(f"repository {name or repo.name!r} has no lifecycle policy (none names it as its "
                             "repository)", repo.urn)
    templates = []
    for t in args.resources:
        if t.resource_type == CREATION_TEMPLATE:
            found = deferred.attempt(lambda t=t: (get(t.props, "prefix"), as_list(get(t.props, "appliedFors")),
                                                  get(t.props, "lifecyclePolicy")))
            if found is not None:
                templates.append(found)
    for r, where, use, prefix in _auto_created(args.resources, deferred):
        if not any(_template_matches(tp, prefix) and use in applied and policy for tp, applied, policy in templates):
            report_violation(f"{r.resource_type} {r.name!r}: {where} makes ECR create repositories "
                             f"({prefix + '/…' if prefix else 'any name'}) that no repository creation template "
                             f"(appliedFor {use}, a matching prefix) gives a lifecycle policy, so they keep every "
                             "image", r.urn)
    deferred.finish()


UNSET = object()


def validate_immutable_tags(args, report_violation) -> None:
    if args.resource_type not in (REPOSITORY, CREATION_TEMPLATE):
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
    if args.resource_type not in (REPOSITORY, CREATION_TEMPLATE):
        return
    key = "encryptionConfigurations"
    configs = as_list(get(args.props, key))
    if not any(get(c, "encryptionType") == "KMS" for c in configs):
        report_violation(f"{key} must use encryptionType KMS", None)


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
